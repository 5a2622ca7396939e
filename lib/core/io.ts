/**
 * Small I/O helpers every layer uses: write all of a buffer, replace a file
 * atomically.
 *
 * @module
 */

import { errorMessage } from "./errors.ts";

/** Anything bytes can be written to, taking some of them at a time: a socket, a file, a stream. */
export interface Writer {
  /** Writes some of `p` and resolves with how many bytes it took. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * Write all of `p`, looping over partial writes.
 *
 * @example
 * ```ts
 * import { writeAll } from "./io.ts";
 * const got: number[] = [];
 * const conn = { write: (p: Uint8Array) => { got.push(p[0]); return Promise.resolve(1); } };
 * await writeAll(conn, new Uint8Array([1, 2, 3]));
 * if (got.join() !== "1,2,3") throw new Error(got.join());
 * ```
 */
export async function writeAll(writer: Writer, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) off += await writer.write(off === 0 ? p : p.subarray(off));
}

/** Options for {@linkcode writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /**
   * Permission bits the file is created with (ignored on Windows); the umask
   * may take bits away, never add any. Must not let group or others write.
   * Default 0o600.
   */
  mode?: number;
}

/**
 * Replaces a file atomically: creates `<path>.tmp-<random>` (never an
 * existing file or link) with `mode`, checks on the open handle that group
 * and others cannot write it, flushes it to disk, and renames it over `path`.
 * Readers see the old file or the new one, never a part.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./io.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/a.json`, "{}");
 * if (await Deno.readTextFile(`${dir}/a.json`) !== "{}") throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const mode = options.mode ?? 0o600;
  if ((mode & 0o022) !== 0) {
    throw new TypeError(
      `Cannot write "${path}": mode ${mode.toString(8)} lets group or others write it`,
    );
  }
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const suffix = crypto.getRandomValues(new Uint8Array(6)).toHex();
  const tmp = `${path}.tmp-${suffix}`;
  try {
    const file = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      // The mode applies at creation, and the umask can only take bits away;
      // check the handle (not the path, which another process could swap).
      const info = await file.stat();
      if (info.mode !== null && (info.mode & 0o777 & ~mode) !== 0) {
        throw new Error(
          `the new file has mode ${(info.mode & 0o777).toString(8)}, not ${mode.toString(8)}`,
        );
      }
      await writeAll(file, bytes);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot write "${path}": ${errorMessage(err)}`, { cause: err });
  }
  await removeStaleTemps(path);
}

/** A temporary file older than this was left by a writer that died (kill -9, power loss). */
const STALE_TEMP_MS = 60_000;

/**
 * Remove `<path>.tmp-<hex>` files older than a minute: what a writer killed
 * between its write and its rename leaves. Younger ones may belong to a
 * writer still at work. Best effort: a failure here never fails the write.
 */
async function removeStaleTemps(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : path.slice(0, slash) || "/";
  const prefix = `${path.slice(slash + 1)}.tmp-`;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !entry.name.startsWith(prefix)) continue;
      if (!/^[0-9a-f]{12}$/.test(entry.name.slice(prefix.length))) continue;
      const full = `${dir}/${entry.name}`;
      const info = await Deno.stat(full);
      if (info.mtime && Date.now() - info.mtime.getTime() > STALE_TEMP_MS) {
        await Deno.remove(full);
      }
    }
  } catch {
    // Unreadable folder or a race with another writer: the leftovers wait for the next write.
  }
}
