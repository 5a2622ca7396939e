/**
 * The input line both programs share: a typed line is chat, a line that
 * starts with `/` is a command. A plain line that looks like a command
 * (`status`, `quit`, `pfo add …`) is not sent: the user is asked whether
 * they meant the `/` form, so a command never leaks to the peer as chat.
 *
 * Each program gives its own command table (lib/console/prompt.ts,
 * lib/daemon/prompt.ts); this module knows neither side.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";

/** One `/command` of the input line. */
export interface PromptCommand {
  /** The word after the slash, e.g. "kill". */
  readonly name: string;
  /** How its arguments read in `/help`, e.g. "ID"; empty for none. */
  readonly args: string;
  /** One line for `/help`. */
  readonly help: string;
  /** Run it with the words after the command and the raw text after it. */
  run(words: readonly string[], rest: string): Promise<void> | void;
}

/** Options for {@linkcode handlePromptLine}. */
export interface PromptOptions {
  /** The program's commands; `/help` is added. */
  readonly commands: readonly PromptCommand[];
  /** Send a chat line to the peer; rejects when it cannot. */
  readonly chat: (text: string) => Promise<unknown>;
  /** Write one line to the user. */
  readonly print: (text: string) => void;
}

/** Words that are refused as chat when typed alone, besides the program's own command names. */
const COMMAND_LIKE = ["status", "clear", "quit", "exit", "help", "accept"] as const;

/** Commands whose words, when a plain line starts with them, make it a command (`pfo add …`). */
const COMMAND_PREFIXES = ["pfo"] as const;

/**
 * The `/` form of `line` when it looks like a command typed without the
 * slash, else null.
 *
 * @example
 * ```ts
 * import { mistypedCommand } from "./prompt.ts";
 * if (mistypedCommand("status", ["status"]) !== "status") throw new Error("status");
 * if (mistypedCommand("pfo add web --listen 8080", []) !== "pfo") throw new Error("pfo");
 * if (mistypedCommand("status is fine here", ["status"]) !== null) throw new Error("chat");
 * ```
 */
export function mistypedCommand(line: string, names: readonly string[]): string | null {
  const words = line.trim().split(/\s+/);
  const first = words[0].toLowerCase();
  if ((COMMAND_PREFIXES as readonly string[]).includes(first)) return first;
  if (words.length !== 1) return null;
  if ((COMMAND_LIKE as readonly string[]).includes(first) || names.includes(first)) return first;
  return null;
}

/**
 * The `/help` lines for `commands`.
 *
 * @example
 * ```ts
 * import { promptHelp } from "./prompt.ts";
 * const lines = promptHelp([{ name: "kill", args: "ID", help: "cut one connection", run() {} }]);
 * if (!lines.some((l) => l.includes("/kill ID") && l.includes("cut one connection"))) throw new Error(lines.join("\n"));
 * ```
 */
export function promptHelp(commands: readonly PromptCommand[]): string[] {
  const rows = [
    ...commands.map((c) => [`/${c.name}${c.args ? " " + c.args : ""}`, c.help]),
    ["/help", "this list"],
  ];
  const width = Math.max(...rows.map((r) => r[0].length));
  return [
    "Type a line to chat; commands start with /:",
    ...rows.map(([usage, help]) => `  ${usage.padEnd(width)}  ${help}`),
  ];
}

/**
 * Handle one typed line: chat (echoed as `you> TEXT` once sent), a
 * `/command`, or a refusal. Errors are printed as `error: …`, never thrown.
 *
 * @example
 * ```ts
 * import { handlePromptLine } from "./prompt.ts";
 * const printed: string[] = [];
 * const options = { commands: [], chat: () => Promise.resolve(), print: (t: string) => printed.push(t) };
 * await handlePromptLine("hello there", options);
 * await handlePromptLine("/nope", options);
 * if (printed[0] !== "you> hello there") throw new Error(printed[0]);
 * if (printed[1] !== "Unknown command /nope; /help lists them") throw new Error(printed[1]);
 * ```
 */
export async function handlePromptLine(line: string, options: PromptOptions): Promise<void> {
  const text = line.trim();
  if (text === "") return;
  const { commands, print } = options;
  try {
    if (!text.startsWith("/")) {
      const meant = mistypedCommand(text, commands.map((c) => c.name));
      if (meant !== null) return print(`Did you mean /${meant}?`);
      await options.chat(text);
      print(`you> ${text}`);
      return;
    }
    const match = text.slice(1).match(/^(\S*)\s*(.*)$/s)!;
    const name = match[1];
    const rest = match[2];
    if (name === "help") {
      for (const l of promptHelp(commands)) print(l);
      return;
    }
    const command = commands.find((c) => c.name === name);
    if (!command) return print(`Unknown command /${name}; /help lists them`);
    await command.run(rest === "" ? [] : rest.split(/\s+/), rest);
  } catch (err) {
    print(`error: ${errorMessage(err)}`);
  }
}

/**
 * A command that takes exactly `count` arguments; other counts print
 * `usage: /NAME ARGS`.
 *
 * @example
 * ```ts
 * import { withArgs } from "./prompt.ts";
 * const printed: string[] = [];
 * const kill = withArgs({ name: "kill", args: "ID", help: "cut", run() {} }, 1, (t) => printed.push(t));
 * await kill.run([], "");
 * if (printed[0] !== "usage: /kill ID") throw new Error(printed[0]);
 * ```
 */
export function withArgs(
  command: PromptCommand,
  count: number,
  print: (text: string) => void,
): PromptCommand {
  return {
    ...command,
    run: (words, rest) => {
      if (words.length !== count) {
        return print(`usage: /${command.name}${command.args ? " " + command.args : ""}`);
      }
      return command.run(words, rest);
    },
  };
}

/** What a program's `/commands` act through. */
export interface ProgramPromptOptions {
  /** Run a CLI subcommand in this process, e.g. `["connections", "list"]`. */
  readonly cli: (words: readonly string[]) => Promise<void>;
  /** Send a chat line to the peer. */
  readonly chat: (text: string) => Promise<unknown>;
  /** Exit the program (drain, then stop). */
  readonly quit: () => void;
  /** Write one line to the user. */
  readonly print: (text: string) => void;
}

/**
 * `/chat TEXT` to `peer` (e.g. "the Daemon's user"), echoed as `you> TEXT` once sent.
 *
 * @example
 * ```ts
 * import { chatCommand } from "./prompt.ts";
 * const printed: string[] = [];
 * const chat = chatCommand({ cli: async () => {}, chat: async () => {}, quit() {}, print: (t) => printed.push(t) }, "the peer");
 * await chat.run(["hi"], "hi");
 * if (printed[0] !== "you> hi") throw new Error(printed[0]);
 * ```
 */
export function chatCommand(options: ProgramPromptOptions, peer: string): PromptCommand {
  return {
    name: "chat",
    args: "TEXT",
    help: `send TEXT to ${peer} (a line without / does the same)`,
    run: async (_words, rest) => {
      if (rest === "") return options.print("usage: /chat TEXT");
      await options.chat(rest);
      options.print(`you> ${rest}`);
    },
  };
}

/** `/clear`, `/quit` and `/exit`, which both programs end their list with. */
export function endCommands(options: ProgramPromptOptions, program: string): PromptCommand[] {
  const { print } = options;
  return [
    withArgs(
      {
        name: "clear",
        args: "",
        help: "clear the screen",
        run: () => print("\x1b[2J\x1b[H"),
      },
      0,
      print,
    ),
    withArgs(
      { name: "quit", args: "", help: `exit ${program}`, run: () => options.quit() },
      0,
      print,
    ),
    withArgs(
      { name: "exit", args: "", help: "the same as /quit", run: () => options.quit() },
      0,
      print,
    ),
  ];
}
