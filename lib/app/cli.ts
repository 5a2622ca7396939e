/**
 * What the two entry files share: global options that work in any position,
 * exit codes, the logger for the command line, stdin lines, signals.
 *
 * @module
 */

import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { CommanderError } from "commander";
import { ControlCallError } from "./control.ts";
import { ConfigError, errorMessage, HandshakeError } from "../core/errors.ts";
import {
  createLogger,
  isLogLevel,
  LOG_LEVELS,
  type LogFormat,
  type Logger,
  type LogLevel,
} from "../core/log.ts";
import { escapeControls, printable } from "../core/text.ts";
import { permissionFlags } from "./permissions.ts";

/** portferry's version, shown by `--version`. */
export const VERSION = "0.1.0";

/**
 * What `--version` prints: the version, then the permission flags the
 * program runs with (compiled or not: the one definition in permissions.ts).
 *
 * @example
 * ```ts
 * import { versionText } from "./cli.ts";
 * if (!versionText("daemon").includes("\npermissions: --allow-net")) throw new Error("bad");
 * ```
 */
export function versionText(program: string): string {
  const flags = program === "console" || program === "daemon" ? permissionFlags(program) : [];
  return `${VERSION}\npermissions: ${flags.join(" ")}`;
}

/** Exit codes. */
export const EXIT = { ok: 0, runtime: 1, usage: 2 } as const;

/** Options every command takes, in any position. */
export interface GlobalOptions {
  /** `--config`: the settings file, or null for the default. */
  readonly config: string | null;
  /** `--log-level`, or null when not given. */
  readonly logLevel: LogLevel | null;
  /** `--log-format`, or null when not given. */
  readonly logFormat: LogFormat | null;
}

/** A usage error: the entry prints it with the usage text and exits 2. */
export class UsageError extends Error {
  /** A usage error with `message` ("Cannot X: detail"). */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const GLOBAL_FLAGS = ["--config", "--log-level", "--log-format"] as const;

/**
 * Take `--config FILE`, `--log-level L` and `--log-format F` out of `args`,
 * wherever they stand, so that every subcommand accepts them.
 *
 * @example
 * ```ts
 * import { extractGlobalOptions } from "./cli.ts";
 * const { args, options } = extractGlobalOptions(["pfo", "list", "--config=a.yaml", "--json"]);
 * if (options.config !== "a.yaml" || args.join(" ") !== "pfo list --json") throw new Error("bad");
 * ```
 */
export function extractGlobalOptions(
  argv: readonly string[],
): { args: string[]; options: GlobalOptions } {
  const args: string[] = [];
  const found: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const flag = GLOBAL_FLAGS.find((f) => arg === f || arg.startsWith(f + "="));
    if (!flag) {
      args.push(arg);
      continue;
    }
    let value: string | undefined;
    if (arg.length > flag.length) value = arg.slice(flag.length + 1);
    else value = argv[++i];
    if (value === undefined || value === "") {
      throw new UsageError(`option '${flag} <value>' argument missing`);
    }
    found[flag] = value;
  }
  const level = found["--log-level"];
  if (level !== undefined && !isLogLevel(level)) {
    throw new UsageError(
      `option '--log-level' must be one of ${LOG_LEVELS.join(", ")}, got "${level}"`,
    );
  }
  const format = found["--log-format"];
  if (format !== undefined && format !== "text" && format !== "json") {
    throw new UsageError(`option '--log-format' must be text or json, got "${format}"`);
  }
  return {
    args,
    options: {
      config: found["--config"] ?? null,
      logLevel: (level as LogLevel | undefined) ?? null,
      logFormat: (format as LogFormat | undefined) ?? null,
    },
  };
}

const encoder = new TextEncoder();

/**
 * Write a line to stdout, never throwing on a closed pipe. Control, bidi
 * and separator characters are shown escaped (`text.ts`): a last line of
 * defence for a peer's string that reached a display unescaped.
 */
export function printOut(text: string): void {
  try {
    Deno.stdout.writeSync(encoder.encode(printable(text) + "\n"));
  } catch {
    // stdout closed: nothing to do.
  }
}

/** Write a line to stderr, escaped as {@linkcode printOut} does. */
export function printErr(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(printable(text) + "\n"));
  } catch {
    // stderr closed: nothing to do.
  }
}

/** The run-mode logger: records go to stdout, with the program's display, in order. */
export function runLogger(level: LogLevel, format: LogFormat): Logger {
  return createLogger({ level, format, sink: (line) => printOut(line) });
}

/** True when someone can answer prompts. */
export function interactive(headless: boolean): boolean {
  if (headless) return false;
  try {
    return Deno.stdin.isTerminal();
  } catch {
    return false;
  }
}

/**
 * Lines typed on stdin, one at a time, until stdin ends.
 */
export async function* stdinLines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  const buf = new Uint8Array(4096);
  while (true) {
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    pending += decoder.decode(buf.subarray(0, n), { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, nl).replace(/\r$/, "");
      pending = pending.slice(nl + 1);
    }
  }
  if (pending) yield pending;
}

/**
 * Signals: the first SIGINT/SIGTERM aborts `exit` (drain, then stop), a
 * second aborts `force` (stop now).
 */
export function exitSignals(): { exit: AbortController; force: AbortController; dispose(): void } {
  const exit = new AbortController();
  const force = new AbortController();
  const names: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handler = () => {
    if (!exit.signal.aborted) exit.abort();
    else force.abort();
  };
  for (const name of names) Deno.addSignalListener(name, handler);
  return {
    exit,
    force,
    dispose() {
      for (const name of names) Deno.removeSignalListener(name, handler);
    },
  };
}

/**
 * Run a CLI main function and exit with portferry's codes: 0 ok, 1 runtime
 * error (reason on stderr), 2 bad usage (the usage of the command at fault
 * on stderr, then the error line last, so that it stays on screen).
 */
export async function runMain(
  main: () => Promise<number | void>,
  usage: () => string,
): Promise<never> {
  let code: number = EXIT.ok;
  try {
    code = (await main()) ?? EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === "commander.helpDisplayed" || err.code === "commander.version" ||
        err.code === "commander.help"
      ) {
        code = EXIT.ok;
      } else {
        // Commander has printed the usage of the command at fault already.
        printErr("");
        printErr(`error: ${commanderMessage(err.message)}`);
        code = EXIT.usage;
      }
    } else if (err instanceof UsageError) {
      printErr(usage());
      printErr("");
      printErr(`error: ${err.message}`);
      code = EXIT.usage;
    } else {
      printErr(`error: ${describeError(err)}`);
      code = EXIT.runtime;
    }
  }
  Deno.exit(code);
}

/** Commander's error text on one line, without its own "error: " prefix. */
function commanderMessage(message: string): string {
  return message.replace(/^error: /, "").replace(/\n\((Did you mean [^)]*)\)/, ". $1")
    .replace(/\n+/g, " ");
}

/**
 * The usage text to show with a {@linkcode UsageError}: that of the
 * subcommand being run once `program` has picked one, the program's before.
 */
export function usageTracker(program: CommandUnknownOpts): () => string {
  let running: CommandUnknownOpts = program;
  program.hook("preAction", (_self, action) => {
    running = action as typeof running;
  });
  return () => running.helpInformation().trimEnd();
}

/**
 * The closest of `names` to a mistyped `word`, when it is close enough to be
 * a typo (at most two edits, counting a swap of neighbours as one, and less
 * than half the name), else null.
 *
 * @example
 * ```ts
 * import { suggestCommand } from "./cli.ts";
 * if (suggestCommand("stauts", ["status", "chat"]) !== "status") throw new Error("bad");
 * if (suggestCommand("db01", ["status", "chat"]) !== null) throw new Error("bad");
 * ```
 */
export function suggestCommand(word: string, names: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const name of names) {
    const d = editDistance(word.toLowerCase(), name);
    if (d <= 2 && d * 2 < name.length && d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/** Edits between `a` and `b`: insert, delete, replace, or swap two neighbours. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * The first word of `args` that is not an option or an option's value, as
 * `program` reads them: the subcommand's name, or the program's argument.
 */
export function firstOperand(
  program: CommandUnknownOpts,
  args: readonly string[],
): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") return args[i + 1];
    if (!arg.startsWith("-") || arg === "-") return arg;
    if (arg.includes("=")) continue;
    const option = program.options.find((o) => o.long === arg || o.short === arg);
    if (option && (option.required || option.optional)) i++;
  }
  return undefined;
}

/** The names a program answers to as its first word, `help` included. */
export function commandNames(program: CommandUnknownOpts): string[] {
  return [...program.commands.flatMap((c) => [c.name(), ...c.aliases()]), "help"];
}

/**
 * The usage error for a first word that is no command: with a suggestion
 * when it is close to one.
 */
export function unknownCommand(word: string, names: readonly string[]): UsageError {
  const near = suggestCommand(word, names);
  return new UsageError(`unknown command '${word}'${near ? `. Did you mean ${near}?` : ""}`);
}

/** A runtime error as one or more readable lines, with its causes. */
export function describeError(err: unknown): string {
  if (err instanceof Deno.errors.NotCapable) {
    return `${err.message}: a permission flag is missing (see README, "Permissions")`;
  }
  if (
    err instanceof ConfigError || err instanceof HandshakeError || err instanceof ControlCallError
  ) return err.message;
  let text = errorMessage(err);
  let cause = err instanceof Error ? err.cause : undefined;
  for (let depth = 0; cause !== undefined && depth < 3; depth++) {
    text += `\n  caused by: ${errorMessage(cause)}`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return text;
}

/**
 * A connection id as `connections list` shows it; anything else is bad usage.
 *
 * @example
 * ```ts
 * import { parseConnectionId } from "./cli.ts";
 * if (parseConnectionId("42") !== 42) throw new Error("bad");
 * ```
 */
export function parseConnectionId(text: string): number {
  if (!/^[0-9]{1,15}$/.test(text)) {
    throw new UsageError(
      `Cannot parse connection id "${text}": use a number from \`connections list\``,
    );
  }
  return Number(text);
}

/**
 * Run one subcommand of `program` for an input line (`/pfo add …`), with
 * the command line's own grammar. Commander has printed its own errors and
 * help already; a {@linkcode UsageError} is rethrown as a plain error, for
 * the prompt to print.
 */
export async function runPromptSubcommand(
  program: { parseAsync(argv: string[], options: { from: "user" }): Promise<unknown> },
  words: readonly string[],
): Promise<void> {
  try {
    await program.parseAsync([...words], { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) return;
    if (err instanceof UsageError) throw new Error(err.message);
    throw err;
  }
}

/** One connection as both programs list it. */
export interface ConnectionRow {
  /** The stream id. */
  readonly id: number;
  /** The PFO's name. */
  readonly pfo: string;
  /** "tcp" or "udp"; absent means TCP. */
  readonly proto?: string;
  /** The client's address on the Console's side. */
  readonly client: string;
  /** The address reached on the Daemon's side, or null while opening. */
  readonly target: string | null;
  /** When it opened (ISO 8601). */
  readonly since: string;
  /** Bytes received from the peer over the session. */
  readonly bytesIn: number;
  /** Bytes sent to the peer over the session. */
  readonly bytesOut: number;
}

/** Print connections as a table, or as JSON only. */
export function printConnections(rows: readonly ConnectionRow[], json: boolean): void {
  if (json) return printOut(JSON.stringify(rows, null, 2));
  for (const line of connectionLines(rows)) printOut(line);
}

/** Connections as the lines of a table. */
export function connectionLines(rows: readonly ConnectionRow[]): string[] {
  if (rows.length === 0) return ["no open connections"];
  const table = rows.map((r) =>
    [
      String(r.id),
      r.pfo,
      r.proto ?? "tcp",
      r.client,
      r.target ?? "-",
      r.since,
      `${r.bytesOut}/${r.bytesIn}`,
    ].map(escapeControls)
  );
  const head = ["ID", "PFO", "PROTO", "CLIENT", "TARGET", "SINCE", "OUT/IN BYTES"];
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => r[i].length)));
  return [head, ...table].map((row) => row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
}

// --- --watch ---------------------------------------------------------------------------

/** The `--watch` option's help text. */
export const WATCH_HELP =
  "print it again every second until interrupted (with --json: one line each)";

/**
 * `--watch`: each result the program streams (lib/app/event_stream.ts),
 * printed as `lines` make it (at a terminal, on a cleared screen; else
 * followed by a blank line), or with `json` as one JSON line. Returns when
 * the stream ends; a stopped program throws.
 */
export async function watchResults(
  stream: AsyncIterable<Record<string, unknown>>,
  options: { readonly json: boolean; readonly lines: (result: never) => string[] },
): Promise<void> {
  const terminal = !options.json && Deno.stdout.isTerminal();
  for await (const line of stream) {
    if (line.type !== "result") continue;
    if (options.json) {
      printOut(JSON.stringify(line.result));
      continue;
    }
    if (terminal) Deno.stdout.writeSync(new TextEncoder().encode("\x1b[H\x1b[2J"));
    printOut(`${new Date().toISOString()}  (every 1s; Ctrl-C stops)`);
    for (const text of options.lines(line.result as never)) printOut(text);
    if (!terminal) printOut("");
  }
}

/**
 * The root command both programs start from: portferry's exit codes and
 * output, `--version`, and the global options (which `extractGlobalOptions`
 * takes out of the arguments first, so they work in any position; declaring
 * them here shows them in `--help`).
 */
export function rootCommand(
  options: { name: string; usage: string; description: string; settingsPath: string },
) {
  return new Command(options.name)
    .name(`deno task ${options.name}`)
    .usage(options.usage)
    .description(options.description)
    .version(versionText(options.name), "-V, --version")
    .exitOverride()
    .showHelpAfterError(true)
    .helpCommand("help [command]", "show the usage of a command")
    .configureOutput({
      writeOut: (s) => printOut(s.trimEnd()),
      writeErr: (s) => {
        if (s.trim() !== "") printErr(s.trimEnd());
      },
      // runMain prints the error line after the usage, so that it stays on screen.
      outputError: () => {},
    })
    .option("--config <file>", `settings file (default: ${options.settingsPath})`)
    .option("--log-level <level>", "debug, info, warn or error")
    .option("--log-format <format>", "text or json");
}
