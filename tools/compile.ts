// deno-lint-ignore-file no-console -- a build script / test output, not library code
/**
 * Build the single-file binaries with `deno compile`, with the same
 * permission flags as the `console` and `daemon` tasks baked in.
 *
 *   deno task compile                 # both, for this machine
 *   deno task compile:all             # both, for every supported target
 *   deno task compile console         # one program
 *
 * Output: dist/portferry-console, dist/portferry-daemon (host), or
 * dist/<target>/portferry-{console,daemon}[.exe] (--all), with --all also
 * dist/portferry-<target>.tar.gz (.zip for Windows) and dist/SHA256SUMS.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { RUNTIME_FLAGS } from "../lib/app/permissions.ts";
import { writeRelease } from "./release.ts";

const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const root = new URL("../", import.meta.url);

/** The runtime flags of a program: the one definition the tasks and `--version` share. */
function runtimeFlags(task: "console" | "daemon"): string[] {
  return RUNTIME_FLAGS[task].filter((w) => w !== "--no-prompt");
}

const all = Deno.args.includes("--all");
const programs = Deno.args.filter((a) =>
  a === "console" || a === "daemon"
) as ("console" | "daemon")[];
const which = programs.length > 0 ? programs : ["console", "daemon"] as const;
const targets: (string | null)[] = all ? [...TARGETS] : [null];

/** One `deno compile` run: its output file, and why it failed (null when built). */
interface Build {
  readonly output: string;
  readonly failure: string | null;
}

/**
 * Why `deno compile` failed, in one phrase. A runtime base that cannot be
 * downloaded is named without its target, so that it is said once for all.
 */
function whyFailed(log: string, code: number): string {
  const download = log.match(/error sending request for url \((https?:\/\/[^/)]+)[^)]*\)/);
  if (download) {
    return `deno compile cannot download its runtime base from ${
      download[1]
    } (no network access or a proxy in the way?)`;
  }
  // deno-lint-ignore no-control-regex -- colour codes in deno's own output
  const line = log.split("\n").map((l) => l.replace(/\x1b\[[0-9;]*m/g, "").trim())
    .find((l) => /^error/i.test(l));
  return line ?? `deno compile exited ${code}`;
}

async function build(program: "console" | "daemon", target: string | null): Promise<Build> {
  const exe = target?.includes("windows") ? ".exe" : "";
  const output = target ? `dist/${target}/portferry-${program}${exe}` : `dist/portferry-${program}`;
  const args = [
    "compile",
    ...runtimeFlags(program),
    ...(target ? ["--target", target] : []),
    "--output",
    output,
    `${program}.ts`,
  ];
  console.log(`deno ${args.join(" ")}`);
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  return { output, failure: code === 0 ? null : whyFailed(log, code) };
}

/** Remove the folders under dist/ (and dist/ itself) that a failed build left empty. */
async function removeEmptyFolders(dir: URL): Promise<void> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) await removeEmptyFolders(new URL(`${entry.name}/`, dir));
    }
    await Deno.remove(dir); // Fails, as it should, when not empty.
  } catch {
    // Not empty, or gone.
  }
}

const builds: Build[] = [];
for (const target of targets) {
  for (const program of which) builds.push(await build(program, target));
}
await removeEmptyFolders(new URL("dist/", root));

// One summary, one sentence for what was built and one for each reason a build failed.
const built = builds.filter((b) => b.failure === null).map((b) => b.output);
const reasons = new Map<string, string[]>();
for (const b of builds) {
  if (b.failure !== null) reasons.set(b.failure, [...(reasons.get(b.failure) ?? []), b.output]);
}
// --all, every target built: one archive per target and SHA256SUMS (tools/release.ts).
if (all && reasons.size === 0) {
  const readme = await Deno.readFile(new URL("README.md", root));
  const archives = await writeRelease(fileURLToPath(new URL("dist", root)), {
    targets: TARGETS,
    readme,
  });
  built.push(...archives.map((a) => `dist/${a}`), "dist/SHA256SUMS");
}
console.log("");
console.log(built.length > 0 ? `Built: ${built.join(", ")}.` : "Built: nothing.");
for (const [reason, outputs] of reasons) {
  console.error(`Not built: ${outputs.join(", ")}: ${reason}.`);
}
Deno.exit(reasons.size === 0 ? 0 : 1);
