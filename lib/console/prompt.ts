/**
 * The Console's input line: chat to the Daemon's user, and `/commands` that
 * run the same subcommands as the command line (`/pfo add …` is parsed by
 * the `pfo add` grammar itself, through `cli`).
 *
 * @module
 */

import {
  chatCommand,
  endCommands,
  type ProgramPromptOptions,
  type PromptCommand,
  withArgs,
} from "../ui/prompt.ts";

/** What the Console's commands act through. */
export type ConsolePromptOptions = ProgramPromptOptions;

/**
 * The Console's `/commands`, for `handlePromptLine` (lib/ui/prompt.ts).
 *
 * @example
 * ```ts
 * import { consoleCommands } from "./prompt.ts";
 * const ran: string[][] = [];
 * const commands = consoleCommands({
 *   cli: (words) => Promise.resolve(void ran.push([...words])),
 *   chat: () => Promise.resolve(),
 *   quit: () => {},
 *   print: () => {},
 * });
 * await commands.find((c) => c.name === "pfo")!.run(["list"], "list");
 * if (ran[0].join(" ") !== "pfo list") throw new Error(ran[0].join(" "));
 * ```
 */
export function consoleCommands(options: ConsolePromptOptions): PromptCommand[] {
  const { cli, print } = options;
  const fixed = (command: PromptCommand, count: number) => withArgs(command, count, print);
  return [
    fixed({
      name: "status",
      args: "",
      help: "the session and every PFO",
      run: () => cli(["status"]),
    }, 0),
    {
      name: "accept",
      args: "[--remember]",
      help: "accept the pending session (--remember: trust this Daemon from now on)",
      run: (words) => cli(["session", "accept", ...words]),
    },
    fixed({
      name: "reject",
      args: "",
      help: "reject the pending session",
      run: () => cli(["session", "reject"]),
    }, 0),
    {
      name: "pfo",
      args: "add|edit|enable|disable|rm|list ...",
      help: "as `console pfo`, e.g. /pfo add web --listen 8080 --target db01:80",
      run: (words) => {
        if (words.length === 0) return print("usage: /pfo add|edit|enable|disable|rm|list ...");
        return cli(["pfo", ...words]);
      },
    },
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
    chatCommand(options, "the Daemon's user"),
    fixed({
      name: "resolve",
      args: "HOST",
      help: "resolve HOST on the Daemon's side",
      run: (words) => cli(["resolve", words[0]]),
    }, 1),
    fixed({
      name: "close",
      args: "",
      help: "end the session (the Daemon does not reconnect)",
      run: () => cli(["session", "close"]),
    }, 0),
    ...endCommands(options, "the Console"),
  ];
}
