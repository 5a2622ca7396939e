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
 * dist/<target>/portferry-{console,daemon}[.exe] (--all).
 *
 * @module
 */

const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const root = new URL("../", import.meta.url);
const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root))) as {
  tasks: Record<string, string>;
};

/** The runtime flags of a task: everything between `run` and the entry file. */
function runtimeFlags(task: "console" | "daemon"): string[] {
  const words = config.tasks[task].split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.findIndex((w) => w.endsWith(".ts")))
    .filter((w) => w !== "--no-prompt");
}

const all = Deno.args.includes("--all");
const programs = Deno.args.filter((a) =>
  a === "console" || a === "daemon"
) as ("console" | "daemon")[];
const which = programs.length > 0 ? programs : ["console", "daemon"] as const;
const targets: (string | null)[] = all ? [...TARGETS] : [null];

let failed = 0;
for (const target of targets) {
  for (const program of which) {
    const exe = target?.includes("windows") ? ".exe" : "";
    const output = target
      ? `dist/${target}/portferry-${program}${exe}`
      : `dist/portferry-${program}`;
    const args = [
      "compile",
      ...runtimeFlags(program),
      ...(target ? ["--target", target] : []),
      "--output",
      output,
      `${program}.ts`,
    ];
    console.log(`deno ${args.join(" ")}`);
    const { code } = await new Deno.Command(Deno.execPath(), { args, cwd: root }).spawn().status;
    if (code !== 0) {
      failed++;
      console.error(`Cannot build ${output}: deno compile exited ${code} (see above)`);
    }
  }
}
Deno.exit(failed === 0 ? 0 : 1);
