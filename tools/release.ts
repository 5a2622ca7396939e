/**
 * Release artifacts for `deno task compile:all`: one archive per target
 * (`.tar.gz`, or `.zip` for Windows) holding the two binaries, the README
 * and sample settings, and `dist/SHA256SUMS` over every archive, in the
 * format `sha256sum -c` checks. Written with our own code (ustar + gzip
 * through `CompressionStream`, and a stored zip), so no `tar` or `zip`
 * needs to be on the machine or allowed to run.
 *
 * @module
 */

import { crc32 } from "node:zlib";

/** One file in an archive. */
export interface ArchiveEntry {
  /** Path inside the archive (forward slashes). */
  readonly name: string;
  /** Contents. */
  readonly data: Uint8Array;
  /** Permission bits (executables 0o755). */
  readonly mode: number;
}

const encoder = new TextEncoder();

/** Sample settings shipped with each archive: the README's examples, commented. */
export const SAMPLE_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  "portferry-console.sample.yaml": [
    "# Copy to portferry-console.yaml beside portferry-console (or give --config FILE).",
    'session: "0.0.0.0:7470" # where Daemons connect',
    "autoAccept: false",
    "logFormat: json # for services",
    "pfos: []",
    "",
  ].join("\n"),
  "portferry-daemon.sample.yaml": [
    "# Copy to portferry-daemon.yaml beside portferry-daemon (or give --config FILE).",
    'console: "office.example.com:7470"',
    "# fingerprint: the Console's, from its banner or `portferry-console fingerprint`",
    "reconnect: true",
    'allow: [] # e.g. ["db01:5432"]; empty: everything',
    "",
  ].join("\n"),
});

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

/** A ustar archive of `entries` (uncompressed). */
export function tarBytes(entries: readonly ArchiveEntry[]): Uint8Array<ArrayBuffer> {
  const blocks: Uint8Array[] = [];
  for (const entry of entries) {
    const name = encoder.encode(entry.name);
    if (name.length > 100) throw new RangeError(`Cannot archive "${entry.name}": name too long`);
    const header = new Uint8Array(512);
    header.set(name, 0);
    header.set(encoder.encode(octal(entry.mode, 8)), 100);
    header.set(encoder.encode(octal(0, 8)), 108); // uid
    header.set(encoder.encode(octal(0, 8)), 116); // gid
    header.set(encoder.encode(octal(entry.data.length, 12)), 124);
    header.set(encoder.encode(octal(0, 12)), 136); // mtime: reproducible
    header.set(encoder.encode("        "), 148); // checksum placeholder
    header[156] = "0".charCodeAt(0);
    header.set(encoder.encode("ustar\u000000"), 257);
    const sum = header.reduce((a, b) => a + b, 0);
    header.set(encoder.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    blocks.push(header, entry.data, new Uint8Array((512 - entry.data.length % 512) % 512));
  }
  blocks.push(new Uint8Array(1024));
  return concat(blocks);
}

/** `.tar.gz` bytes of `entries`. */
export async function tarGzBytes(entries: readonly ArchiveEntry[]): Promise<Uint8Array> {
  const stream = new Blob([tarBytes(entries)]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A zip of `entries`, stored (binaries barely compress), with Unix modes. */
export function zipBytes(entries: readonly ArchiveEntry[]): Uint8Array {
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = encoder.encode(entry.name);
    const crc = crc32(entry.data) >>> 0;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(6, 0x0800, true); // UTF-8 names
    local.setUint32(14, crc, true);
    local.setUint32(18, entry.data.length, true);
    local.setUint32(22, entry.data.length, true);
    local.setUint16(26, name.length, true);
    locals.push(new Uint8Array(local.buffer), name, entry.data);
    const central = new DataView(new ArrayBuffer(46));
    central.setUint32(0, 0x02014b50, true);
    central.setUint16(4, (3 << 8) | 20, true); // made on Unix: external attributes hold the mode
    central.setUint16(6, 20, true);
    central.setUint16(8, 0x0800, true);
    central.setUint32(16, crc, true);
    central.setUint32(20, entry.data.length, true);
    central.setUint32(24, entry.data.length, true);
    central.setUint16(28, name.length, true);
    central.setUint32(38, ((0o100000 | entry.mode) << 16) >>> 0, true);
    central.setUint32(42, offset, true);
    centrals.push(new Uint8Array(central.buffer), name);
    offset += 30 + name.length + entry.data.length;
  }
  const directory = concat(centrals);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, entries.length, true);
  end.setUint16(10, entries.length, true);
  end.setUint32(12, directory.length, true);
  end.setUint32(16, offset, true);
  return concat([...locals, directory, new Uint8Array(end.buffer)]);
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** `sha256sum` lines (`HEX  NAME`) for `files` (name → bytes), sorted by name. */
export async function sha256sums(files: ReadonlyMap<string, Uint8Array>): Promise<string> {
  const lines: string[] = [];
  for (const name of [...files.keys()].sort()) {
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new Uint8Array(files.get(name)!)),
    );
    lines.push(`${digest.toHex()}  ${name}`);
  }
  return lines.map((l) => l + "\n").join("");
}

/**
 * Write one archive per target in `dist` (whose `dist/<target>/` folders
 * hold the binaries) and `dist/SHA256SUMS`. Returns the archives' names.
 */
export async function writeRelease(
  dist: string,
  options: { targets: readonly string[]; readme: Uint8Array },
): Promise<string[]> {
  const archives = new Map<string, Uint8Array>();
  for (const target of options.targets) {
    const exe = target.includes("windows") ? ".exe" : "";
    const entries: ArchiveEntry[] = [];
    const folder = `portferry-${target}`;
    for (const program of ["console", "daemon"]) {
      const data = await Deno.readFile(`${dist}/${target}/portferry-${program}${exe}`);
      entries.push({ name: `${folder}/portferry-${program}${exe}`, data, mode: 0o755 });
    }
    entries.push({ name: `${folder}/README.md`, data: options.readme, mode: 0o644 });
    for (const [name, text] of Object.entries(SAMPLE_SETTINGS)) {
      entries.push({ name: `${folder}/${name}`, data: encoder.encode(text), mode: 0o644 });
    }
    const name = exe ? `${folder}.zip` : `${folder}.tar.gz`;
    const bytes = exe ? zipBytes(entries) : await tarGzBytes(entries);
    await Deno.writeFile(`${dist}/${name}`, bytes);
    archives.set(name, bytes);
  }
  await Deno.writeTextFile(`${dist}/SHA256SUMS`, await sha256sums(archives));
  return [...archives.keys()];
}
