/**
 * The Daemon's input line: chat to the Console's operator, and `/commands`
 * that run the same subcommands as the command line, through `cli`.
 *
 * @module
 */

import { type PromptCommand, withArgs } from "../ui/prompt.ts";

/** What the Daemon's commands act through. */
export interface DaemonPromptOptions {
  /** Run a CLI subcommand in this process, e.g. `["connections", "list"]`. */
  readonly cli: (words: readonly string[]) => Promise<void>;
  /** Send a chat line to the Console's operator. */
  readonly chat: (text: string) => Promise<unknown>;
  /** Exit the Daemon (drain, then stop). */
  readonly quit: () => void;
  /** Write one line to the user. */
  readonly print: (text: string) => void;
}

/**
 * The Daemon's `/commands`, for `handlePromptLine` (lib/prompt.ts).
 *
 * @example
 * ```ts
 * import { daemonCommands } from "./prompt.ts";
 * const ran: string[][] = [];
 * const commands = daemonCommands({
 *   cli: (words) => Promise.resolve(void ran.push([...words])),
 *   chat: () => Promise.resolve(),
 *   quit: () => {},
 *   print: () => {},
 * });
 * await commands.find((c) => c.name === "kill")!.run(["7"], "7");
 * if (ran[0].join(" ") !== "connections kill 7") throw new Error(ran[0].join(" "));
 * ```
 */
export function daemonCommands(options: DaemonPromptOptions): PromptCommand[] {
  const { cli, print } = options;
  const fixed = (command: PromptCommand, count: number) => withArgs(command, count, print);
  return [
    fixed({
      name: "status",
      args: "",
      help: "the session and the connections made through this Daemon",
      run: () => cli(["status"]),
    }, 0),
    fixed({
      name: "connections",
      args: "",
      help: "list open connections",
      run: () => cli(["connections", "list"]),
    }, 0),
    fixed({
      name: "kill",
      args: "ID",
      help: "cut one connection",
      run: (words) => cli(["connections", "kill", words[0]]),
    }, 1),
    {
      name: "chat",
      args: "TEXT",
      help: "send TEXT to the Console's operator (a line without / does the same)",
      run: async (_words, rest) => {
        if (rest === "") return print("usage: /chat TEXT");
        await options.chat(rest);
        print(`you> ${rest}`);
      },
    },
    fixed({
      name: "close",
      args: "",
      help: "close the session and stop the Daemon",
      run: () => cli(["close"]),
    }, 0),
    fixed({
      name: "clear",
      args: "",
      help: "clear the screen",
      run: () => print("\x1b[2J\x1b[H"),
    }, 0),
    fixed({ name: "quit", args: "", help: "exit the Daemon", run: () => options.quit() }, 0),
    fixed({ name: "exit", args: "", help: "the same as /quit", run: () => options.quit() }, 0),
  ];
}
