/**
 * The real programs at a real terminal: each test runs its own tmux server
 * (a socket of its own, no user configuration), starts programs in its
 * panes, types with `send-keys` and reads the screen with `capture-pane`.
 *
 * @module
 */

import { entryArgs, shellQuote } from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/** What the pane prints once the program exits, before its exit status. */
export const EXIT_LINE = "program exited with status";

/** One tmux server of a test's own; dispose it to end it and everything it runs. */
export interface Tmux extends AsyncDisposable {
  /** Run `tmux ARGS` on this server; resolves with its stdout, throws on failure. */
  run(...args: string[]): Promise<string>;
  /** Start `entry` with `args` in a new `width`×`height` session named `name`. */
  start(name: string, entry: "console.ts" | "daemon.ts", args: readonly string[], size: {
    columns: number;
    rows: number;
  }): Promise<void>;
  /** The screen of session `name` as text (with `escapes`: colours and attributes too). */
  capture(name: string, options?: { escapes?: boolean }): Promise<string>;
  /** Wait until session `name`'s screen matches `re`; fails with the screen after `ms`. */
  waitFor(name: string, re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /** Type `text` literally into session `name`, then Enter unless `enter` is false. */
  type(name: string, text: string, options?: { enter?: boolean }): Promise<void>;
}

/** tmux itself, or a clear failure naming the Debian package. */
async function requireTmux(): Promise<void> {
  try {
    await new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" }).output();
  } catch (cause) {
    throw new Error(
      'Cannot run the terminal screen tests: tmux is not installed (Debian package "tmux")',
      { cause },
    );
  }
}

/**
 * A tmux server for one test. Programs run with `env` (NO_COLOR unset unless
 * given, TERM=xterm-256color).
 */
export async function startTmux(env: Record<string, string> = {}): Promise<Tmux> {
  await requireTmux();
  const socket = `portferry-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const run = async (...args: string[]): Promise<string> => {
    const out = await new Deno.Command("tmux", {
      args: ["-L", socket, "-f", "/dev/null", ...args],
      stdout: "piped",
      stderr: "piped",
      env: { TERM: "xterm-256color" },
    }).output();
    if (!out.success) {
      throw new Error(`Cannot run tmux ${args[0]}: ${decoder.decode(out.stderr).trim()}`);
    }
    return decoder.decode(out.stdout);
  };
  const capture = (name: string, options: { escapes?: boolean } = {}) =>
    run("capture-pane", "-p", ...(options.escapes ? ["-e"] : []), "-t", name);
  return {
    run,
    capture,
    async start(name, entry, args, size) {
      const vars = Object.entries({ USER: "tester", ...env }).map(([k, v]) => `${k}=${v}`);
      const program = ["env", ...vars, Deno.execPath(), ...await entryArgs(entry, args)]
        .map(shellQuote).join(" ");
      // The shell tells how the program exited, on the screen it leaves.
      const command = `${program}; echo "${EXIT_LINE} $?"`;
      await run(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        String(size.columns),
        "-y",
        String(size.rows),
        "-c",
        new URL(ROOT).pathname,
        command,
        // Keep the pane once the program exits, to read how it left the terminal.
        ";",
        "set-option",
        "-g",
        "remain-on-exit",
        "on",
      );
    },
    async waitFor(name, re, ms = 20_000) {
      const deadline = Date.now() + ms;
      let screen = "";
      while (Date.now() < deadline) {
        screen = await capture(name);
        const m = screen.match(re);
        if (m) return m;
        await new Promise((r) => setTimeout(r, 100)); // poll the screen, bounded by the deadline
      }
      throw new Error(
        `Timed out after ${ms} ms waiting for ${re} on "${name}"; screen:\n${screen}`,
      );
    },
    async type(name, text, options = {}) {
      await run("send-keys", "-t", name, "-l", text);
      if (options.enter !== false) await run("send-keys", "-t", name, "Enter");
    },
    async [Symbol.asyncDispose]() {
      try {
        await run("kill-server");
      } catch {
        // Ended already.
      }
    },
  };
}
