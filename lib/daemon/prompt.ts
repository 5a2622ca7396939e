/**
 * The Daemon's input line: chat to the Console's operator, and `/commands`
 * that run the same subcommands as the command line, through `cli`.
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

/** What the Daemon's commands act through. */
export type DaemonPromptOptions = ProgramPromptOptions;

/**
 * The Daemon's `/commands`, for `handlePromptLine` (lib/ui/prompt.ts).
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
    chatCommand(options, "the Console's operator"),
    fixed({
      name: "close",
      args: "",
      help: "close the session and stop the Daemon",
      run: () => cli(["close"]),
    }, 0),
    ...endCommands(options, "the Daemon"),
  ];
}
