/**
 * The commands portferry prints for the user to run (the banner's Daemon
 * command, "accept with …", the demo's hints), in the form the user runs
 * portferry here, so that they work as printed:
 *
 * - a compiled binary (the runtime's file name is not `deno`):
 *   `portferry-console …` / `portferry-daemon …`;
 * - Deno fetched by npx (the runtime lives in npm's `_npx` cache folder):
 *   `npx --yes deno@VERSION task console …`;
 * - otherwise `deno task console …`.
 *
 * The runtime's path is what tells them apart: it needs no extra permission,
 * unlike npm's environment variables, and it cannot be wrong about which
 * runtime runs.
 *
 * @module
 */

/** Options for {@linkcode programCommand}; both default to the running process's. */
export interface ProgramCommandOptions {
  /** The settings file given with `--config`, if one was: added to the command. */
  readonly config?: string | null;
  /** Default `Deno.execPath()`. */
  readonly execPath?: string;
  /** Default `Deno.version.deno`. */
  readonly denoVersion?: string;
}

/**
 * The command that runs `program` with `args`, as the user runs it here.
 *
 * @example
 * ```ts
 * import { programCommand } from "./invocation.ts";
 * const npx = programCommand("console", ["status"], {
 *   execPath: "/home/a/.npm/_npx/1f2e/node_modules/deno/deno",
 *   denoVersion: "2.9.6",
 *   config: "/tmp/my settings.yaml",
 * });
 * if (npx !== "npx --yes deno@2.9.6 task console status --config '/tmp/my settings.yaml'") {
 *   throw new Error(npx);
 * }
 * const bin = programCommand("daemon", ["status"], { execPath: "/opt/pf/portferry-console" });
 * if (bin !== "portferry-daemon status") throw new Error(bin);
 * ```
 */
export function programCommand(
  program: "console" | "daemon",
  args: readonly string[],
  options: ProgramCommandOptions = {},
): string {
  let execPath = options.execPath;
  if (execPath === undefined) {
    try {
      execPath = Deno.execPath();
    } catch {
      execPath = "deno"; // No read permission: the common form.
    }
  }
  const base = execPath.split(/[\\/]/).pop()!.replace(/\.exe$/i, "");
  let prefix: string[];
  if (base !== "deno") {
    // A compiled binary: its own name, or its sibling's.
    const other = program === "console" ? "daemon" : "console";
    prefix = [
      base.includes(program)
        ? base
        : base.includes(other)
        ? base.replace(other, program)
        : `portferry-${program}`,
    ];
  } else if (/[\\/]_npx[\\/]/.test(execPath)) {
    prefix = ["npx", "--yes", `deno@${options.denoVersion ?? Deno.version.deno}`, "task", program];
  } else {
    prefix = ["deno", "task", program];
  }
  const config = options.config ? ["--config", options.config] : [];
  return [...prefix, ...args, ...config].map(shellWord).join(" ");
}

/**
 * A word as a POSIX shell reads it back: as is when plain, else in single
 * quotes. `{placeholders}` stay plain.
 *
 * @example
 * ```ts
 * import { shellWord } from "./invocation.ts";
 * if (shellWord("it's") !== "'it'\\''s'" || shellWord("a/b.yaml") !== "a/b.yaml") throw new Error("bad");
 * ```
 */
export function shellWord(word: string): string {
  if (/^[A-Za-z0-9_./:@%+=,{}-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
