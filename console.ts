/**
 * portferry Console: `deno task console [subcommand]`.
 *
 * With no subcommand it runs the Console. The subcommands talk to the running
 * Console found through its settings file (`--config`, any position); they
 * run the Console's command set (lib/console/commands.ts) there, or here on
 * the settings file when a PFO command finds no Console running.
 *
 * @module
 */

// First, before anything parses YAML: LOG_TOKENS would make it print the settings.
import "./lib/app/scrub_env.ts";
import {
  commandNames,
  connectionLines,
  EXIT,
  exitSignals,
  extractGlobalOptions,
  firstOperand,
  interactive,
  parseConnectionId,
  printConnections,
  printErr,
  printOut,
  rootCommand,
  runLogger,
  runMain,
  runPromptSubcommand,
  stdinLines,
  unknownCommand,
  UsageError,
  usageTracker,
  WATCH_HELP,
  watchResults,
} from "./lib/app/cli.ts";
import { lockInstance } from "./lib/app/instance_lock.ts";
import { addServiceCommands } from "./lib/app/service/command.ts";
import { programCommand } from "./lib/app/invocation.ts";
import { callControl, ControlCallError, streamControl } from "./lib/app/control.ts";
import { type Decision, type PeerInfo, runConsole } from "./lib/console/server.ts";
import {
  asCalled,
  CommandError,
  type ConsoleClient,
  controlClient,
  inProcessClient,
  OfflineCommands,
  readRequest,
} from "./lib/console/commands.ts";
import type { PfoRequest } from "./lib/console/pfo_changes.ts";
import type { PfoStatus } from "./lib/console/pfos.ts";
import type { TrustEntry } from "./lib/console/state.ts";
import { type PfoRow, pfoTableLines, statusLines, trustLines } from "./lib/console/views.ts";
import { loadOrCreateIdentity } from "./lib/core/identity.ts";
import { errorMessage } from "./lib/core/errors.ts";
import { parseHostPort } from "./lib/net/hostport.ts";
import { defaultSettingsFile, settingsPaths } from "./lib/settings/paths.ts";
import { loadConsoleSettings } from "./lib/settings/schema.ts";
import { escapeControls } from "./lib/core/text.ts";
import { handlePromptLine } from "./lib/ui/prompt.ts";
import { consoleCommands } from "./lib/console/prompt.ts";
import { ConsoleLive } from "./lib/console/live.ts";
import { wantsScreen } from "./lib/ui/screen.ts";

type Program = ReturnType<typeof rootCommand>;

function buildProgram(settingsPath: string, client?: ConsoleClient) {
  const program = rootCommand({
    name: "console",
    usage: "[options] [command]",
    description:
      "portferry Console: accept a Daemon's session and forward ports to its network.\n" +
      "With no command, runs the Console.",
    settingsPath,
  })
    .option("--session <[host:]port>", "where Daemons connect (default 0.0.0.0:7470)")
    .option("--auto-accept", "accept every Daemon without asking")
    .option("--token-file <file>", "accept Daemons that present this shared token, reject the rest")
    .option("--headless", "never prompt; accept pending sessions with `session accept`")
    .option("--plain", "at a terminal, print lines as they come instead of the live screen")
    .allowExcessArguments(false);
  const cli: Cli = {
    settingsPath,
    inProcess: client !== undefined,
    run: client ?? controlClient(settingsPath),
    offline: new OfflineCommands(settingsPath),
  };
  addStatusCommands(program, cli);
  addSessionCommands(program, cli);
  addPfoCommands(program, cli);
  addTalkCommands(program, cli);
  addTrustCommands(program, cli);
  addServiceCommands(program, {
    program: "console",
    settingsPath,
    logFormat: () => extractGlobalOptions(Deno.args).options.logFormat,
    print: printOut,
  });
  addDashboardCommand(program, cli);
  return program;
}

/** What the subcommands act through. */
interface Cli {
  readonly settingsPath: string;
  /** Run from the running Console's own input line (no `--watch` there). */
  readonly inProcess: boolean;
  /** The running Console's commands. */
  readonly run: ConsoleClient;
  /** The settings files, when no Console runs. */
  readonly offline: OfflineCommands;
}

/** `--watch`: the running Console's `command` every second, through its event stream. */
async function watch<R>(
  cli: Cli,
  command: "status" | "pfo/list" | "connections/list",
  json: boolean,
  lines: (result: R) => string[],
): Promise<void> {
  if (cli.inProcess) throw new UsageError("--watch runs from the command line, not the input line");
  const stream = streamControl(
    settingsPaths(cli.settingsPath).control,
    `watch=${encodeURIComponent(command)}&events=0`,
    "Console",
  );
  await watchResults(stream, { json, lines });
}

function printLines(lines: readonly string[]): void {
  for (const line of lines) printOut(line);
}

function addDashboardCommand(program: Program, cli: Cli): void {
  program.command("dashboard")
    .description("print the running Console's dashboard URL, with a fresh login token")
    .action(async () => {
      const path = settingsPaths(cli.settingsPath).control;
      const { url } = await callControl<{ url: string }>(path, "dashboard", {}, "Console");
      printOut(url);
    });
}

function addStatusCommands(program: Program, cli: Cli): void {
  program.command("fingerprint")
    .description("print this Console's identity fingerprint (creates the identity on first use)")
    .action(async () => {
      const paths = settingsPaths(cli.settingsPath);
      const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
        role: "console",
      });
      printOut(identity.fingerprint);
    });
  program.command("status")
    .description("show the session and every PFO")
    .option("--json", "print JSON only")
    .option("--watch", WATCH_HELP)
    .action(async (opts) => {
      if (opts.watch) return await watch(cli, "status", opts.json === true, statusLines);
      const status = await cli.run("status", {});
      if (opts.json) printOut(JSON.stringify(status, null, 2));
      else printLines(statusLines(status));
    });
  const connections = program.command("connections").description(
    "list or cut forwarded connections",
  );
  connections.command("list").description("list open connections").option(
    "--json",
    "print JSON only",
  ).option("--watch", WATCH_HELP).action(async (opts) => {
    if (opts.watch) {
      return await watch(cli, "connections/list", opts.json === true, connectionLines);
    }
    printConnections(await cli.run("connections/list", {}), opts.json === true);
  });
  connections.command("kill").description("cut one connection").argument("<id>").action(
    async (text) => {
      const id = parseConnectionId(text);
      await cli.run("connections/kill", { id });
      printOut(`connection ${id} killed`);
    },
  );
}

function addSessionCommands(program: Program, cli: Cli): void {
  const session = program.command("session").description("accept, reject or close the session");
  session.command("accept")
    .description("accept the pending session")
    .option("--remember", "trust this Daemon's fingerprint from now on")
    .action(async (opts) => {
      await cli.run("session/accept", { remember: opts.remember === true });
      printOut("session accepted");
    });
  session.command("reject").description("reject the pending session").action(async () => {
    await cli.run("session/reject", {});
    printOut("session rejected");
  });
  session.command("close").description("close the session (the Daemon will not reconnect)").action(
    async () => {
      await cli.run("session/close", {});
      printOut("session closed");
    },
  );
}

function addPfoCommands(program: Program, cli: Cli): void {
  const pfo = program.command("pfo").description(
    "create, edit, enable, disable, list and delete PFOs",
  );
  addPfoAdd(pfo, cli);
  pfo.command("edit")
    .description("change a PFO's listen address or target")
    .argument("<name>")
    .option("--listen <[host:]port>", "new Console-side address")
    .option("--target <host:port>", "new Daemon-side target")
    .action(async (name, opts) => {
      if (opts.listen === undefined && opts.target === undefined) {
        throw new UsageError("pfo edit needs --listen and/or --target");
      }
      const request = usage(() =>
        readRequest("pfo/edit", { name, listen: opts.listen, target: opts.target })
      );
      printPfo(await changePfo(cli, { command: "pfo/edit", request }));
    });
  for (
    const [verb, what] of [["enable", "start listening"], ["disable", "stop listening"]] as const
  ) {
    pfo.command(verb).description(`${what} (saved to the settings file)`).argument("<name>").action(
      async (name) => {
        const request = usage(() => readRequest(`pfo/${verb}`, { name }));
        printPfo(await changePfo(cli, { command: `pfo/${verb}`, request }));
      },
    );
  }
  pfo.command("rm").description("delete a PFO (saved to the settings file)").argument("<name>")
    .action(async (name) => {
      const request = usage(() => readRequest("pfo/rm", { name }));
      if (await changePfo(cli, { command: "pfo/rm", request })) {
        printOut(`PFO "${name}" removed`);
      }
    });
  pfo.command("list")
    .description("list PFOs (with no Console running: as saved in the settings file)")
    .option("--json", "print JSON only")
    .option("--watch", WATCH_HELP)
    .action(async (opts) => {
      if (opts.watch) return await watch(cli, "pfo/list", opts.json === true, pfoTableLines);
      let list: readonly PfoRow[];
      try {
        list = await cli.run("pfo/list", {});
      } catch (err) {
        if (!(err instanceof ControlCallError) || !err.notRunning) throw err;
        list = await cli.offline.listPfos();
        if (!opts.json) printOut(`Console not running: PFOs as saved in ${cli.settingsPath}`);
      }
      if (opts.json) printOut(JSON.stringify(list, null, 2));
      else printLines(pfoTableLines(list));
    });
}

function addPfoAdd(pfo: ReturnType<Program["command"]>, cli: Cli): void {
  pfo.command("add")
    .description("add a PFO (saved to the settings file)")
    .argument("<name>", "1-64 characters of A-Za-z0-9._-")
    .requiredOption(
      "--listen <[host:]port[-port]>",
      "Console-side address or port range (host defaults to 127.0.0.1)",
    )
    .option(
      "--target <host:port[-port]>",
      "Daemon-side target, resolved on the Daemon's side (not with --socks)",
    )
    .option("--udp", "forward UDP datagrams instead of TCP connections")
    .option("--socks", "a SOCKS5 proxy: each connection names its own target")
    .option("--disabled", "save it disabled")
    .option(
      "--allow-client <cidr>",
      "only let this client address or network use it (repeatable; default: anyone)",
      (rule: string, rules: string[]) => [...rules, rule],
      [] as string[],
    )
    .action(async (name, opts) => {
      if (opts.udp && opts.socks) throw new UsageError("pfo add takes --udp or --socks, not both");
      if (opts.socks && opts.target !== undefined) {
        throw new UsageError("a --socks PFO takes no --target");
      }
      if (!opts.socks && opts.target === undefined) {
        throw new UsageError("required option '--target <host:port>' not specified");
      }
      const request = usage(() =>
        readRequest("pfo/add", {
          name,
          proto: opts.socks ? "socks" : opts.udp ? "udp" : "tcp",
          listen: opts.listen,
          target: opts.target ?? null,
          enabled: opts.disabled !== true,
          clients: opts.allowClient,
        })
      );
      printPfo(await changePfo(cli, { command: "pfo/add", request }));
    });
}

/** A bad NAME, address or port is bad usage (exit 2), whether or not a Console runs. */
function usage<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof CommandError) throw new UsageError(errorMessage(err));
    throw err;
  }
}

function printPfo(result: PfoStatus | { removed: string } | null): void {
  if (result !== null && "name" in result) printLines(pfoTableLines([result]));
}

/**
 * Run a PFO change on the running Console. With none running for these
 * settings, make it in the settings file, with the same checks, say so, and
 * return null.
 */
async function changePfo(
  cli: Cli,
  change: PfoRequest,
): Promise<PfoStatus | { removed: string } | null> {
  try {
    return await runPfoCommand(cli.run, change);
  } catch (err) {
    if (!(err instanceof ControlCallError) || !err.notRunning) throw err;
  }
  await asCalled(() => cli.offline.changePfo(change));
  printOut(`Console not running: changed ${cli.settingsPath}; it applies at the next start`);
  return null;
}

function runPfoCommand(
  run: ConsoleClient,
  change: PfoRequest,
): Promise<PfoStatus | { removed: string }> {
  switch (change.command) {
    case "pfo/add":
      return run("pfo/add", change.request);
    case "pfo/edit":
      return run("pfo/edit", change.request);
    default:
      return run(change.command, change.request);
  }
}

function addTalkCommands(program: Program, cli: Cli): void {
  program.command("chat")
    .description("send a chat message to the Daemon's user")
    .argument("<text...>")
    .action(async (words) => {
      await cli.run("chat", { text: words.join(" ") });
    });
  program.command("resolve")
    .description("resolve a host name on the Daemon's side")
    .argument("<host>")
    .option("--json", "print JSON only")
    .action(async (host, opts) => {
      try {
        const result = await cli.run("resolve", { host });
        if (opts.json) printOut(JSON.stringify({ ...result, error: null }));
        else printOut(`${host}: ${escapeControls(result.addresses.join(" "))}`);
      } catch (err) {
        if (opts.json && err instanceof ControlCallError && err.result) {
          printOut(JSON.stringify(err.result));
        }
        throw err;
      }
    });
}

function addTrustCommands(program: Program, cli: Cli): void {
  const trust = program.command("trust").description("list or remove trusted Daemon fingerprints");
  trust.command("list").option("--json", "print JSON only").action(async (opts) => {
    let list: readonly TrustEntry[];
    try {
      list = await cli.run("trust/list", {});
    } catch (err) {
      if (!(err instanceof ControlCallError) || !/not running/.test(err.message)) throw err;
      // Not running: read the files directly.
      list = await cli.offline.listTrust();
    }
    if (opts.json) printOut(JSON.stringify(list, null, 2));
    else printLines(trustLines(list));
  });
  trust.command("rm").argument("<fingerprint>").action(async (fingerprint) => {
    await cli.run("trust/rm", { fingerprint });
    printOut(`${fingerprint} is no longer trusted`);
  });
}

async function run(
  settingsPath: string,
  opts: { session?: string; autoAccept?: true; tokenFile?: string; headless?: true; plain?: true },
  logLevel: string | null,
  logFormat: string | null,
  configGiven: string | null,
): Promise<number> {
  if (opts.session !== undefined) {
    try {
      parseHostPort(opts.session, { defaultHost: "0.0.0.0", allowPortZero: true });
    } catch (err) {
      throw new UsageError(`--session: ${errorMessage(err)}`);
    }
  }
  const { settings } = await loadConsoleSettings(settingsPath);
  // Before anything is created, bound or written: one Console per settings file.
  using _lock = await lockInstance(settingsPath, "Console");
  const json = (logFormat ?? settings.logFormat) === "json";
  const isInteractive = interactive(opts.headless === true);
  const question = isInteractive ? operatorQuestion() : null;
  const signals = exitSignals();
  // The live screen, at a terminal (not with --plain, --headless, TERM=dumb or JSON logs).
  const live = question && !json && wantsScreen({ plain: opts.plain === true, headless: false })
    ? new ConsoleLive({
      asking: question.isOpen,
      answer: question.answer,
      // Where Ctrl-C reaches the screen as a key (Windows): the same as the signal.
      screen: { onInterrupt: () => interrupt(signals) },
    })
    : null;
  const level = (logLevel ?? settings.logLevel) as "info";
  const log = live ? live.logger(level) : runLogger(level, json ? "json" : "text");
  // With --log-format json, stdout carries JSON lines only: the readable display goes to stderr.
  const display = live ? live.display : json ? printErr : printOut;
  question?.setDisplay(display);
  signals.exit.signal.addEventListener("abort", () => {
    live?.exiting("Exiting: draining open connections (Ctrl-C again stops at once)");
  });
  // Printed for the user to run: in the form they run portferry here.
  const daemonCommand = programCommand("daemon", ["{address}", "--fingerprint", "{fingerprint}"]);
  const controlCommand = (args: readonly string[]) =>
    programCommand("console", args, { config: configGiven });

  try {
    await runConsole({
      settingsPath,
      session: opts.session,
      autoAccept: opts.autoAccept,
      tokenFile: opts.tokenFile,
      log,
      out: display,
      daemonCommand,
      controlCommand,
      ask: question?.ask,
      signal: signals.exit.signal,
      forceSignal: signals.force.signal,
      onReady: (_address, con) => {
        if (!question) return;
        live?.attach(con);
        readInputLines(settingsPath, inProcessClient(con.commands), {
          question,
          quit: () => signals.exit.abort(),
          print: display,
          lines: live ? live.screen.lines() : stdinLines(),
        });
      },
    });
  } finally {
    live?.stop();
    signals.dispose();
  }
  return EXIT.ok;
}

/** Ctrl-C typed as a key: drain first, stop at once the second time, as the signal does. */
function interrupt(signals: ReturnType<typeof exitSignals>): void {
  if (signals.exit.signal.aborted) signals.force.abort();
  else signals.exit.abort();
}

/** The operator's y/n/t question about a pending session, answered on the input line. */
interface OperatorQuestion {
  readonly ask: (peer: PeerInfo, signal: AbortSignal) => Promise<Decision>;
  /** Give `line` to the open question; false when none is open. */
  answer(line: string): boolean;
  /** Whether a question is open. */
  isOpen(): boolean;
  /** Where the question and its reminders are shown. */
  setDisplay(display: (text: string) => void): void;
}

function operatorQuestion(): OperatorQuestion {
  let answer: ((line: string) => void) | null = null;
  let display = printOut;
  const ask = (peer: PeerInfo, signal: AbortSignal): Promise<Decision> => {
    display(
      `Accept the session from ${
        escapeControls(`${peer.user}@${peer.host}`)
      }? [y]es / [n]o / [t]rust always: `,
    );
    return new Promise((resolve, reject) => {
      answer = (line) => {
        const a = line.trim().toLowerCase();
        if (a === "y" || a === "yes") resolve("accept");
        else if (a === "n" || a === "no") resolve("reject");
        else if (a === "t" || a === "trust") resolve("trust");
        else return display("Answer y, n or t (or a /command): ");
        answer = null;
      };
      signal.addEventListener("abort", () => {
        answer = null;
        reject(signal.reason);
      }, { once: true });
    });
  };
  return {
    ask,
    answer: (line) => {
      if (!answer) return false;
      answer(line);
      return true;
    },
    isOpen: () => answer !== null,
    setDisplay: (to) => (display = to),
  };
}

/** The interactive input line: answers, chat and /commands, run in this process. */
async function readInputLines(
  settingsPath: string,
  client: ConsoleClient,
  options: {
    question: OperatorQuestion;
    quit: () => void;
    print: (text: string) => void;
    /** The typed lines: stdin's, or the live screen's input line. */
    lines: AsyncIterable<string>;
  },
): Promise<void> {
  const { print, question } = options;
  print("Type a line to chat with the Daemon's user; /help lists the commands.");
  const chat = (text: string) => client("chat", { text });
  const commands = consoleCommands({
    cli: (words) => runPromptSubcommand(buildProgram(settingsPath, client), words),
    chat,
    quit: options.quit,
    print,
  });
  for await (const line of options.lines) {
    // A pending y/n/t question takes plain answers; a /command still runs.
    if (!line.trim().startsWith("/") && question.answer(line)) continue;
    await handlePromptLine(line, { commands, chat, print });
  }
}

if (import.meta.main) {
  // Until the arguments are read, usage shows the default settings path.
  let usage = () => buildProgram(defaultSettingsFile("console")).helpInformation();
  await runMain(async () => {
    const { args, options } = extractGlobalOptions(Deno.args);
    const settingsPath = options.config ?? defaultSettingsFile("console");
    const program = buildProgram(settingsPath);
    usage = usageTracker(program);
    const first = firstOperand(program, args);
    if (first !== undefined && !commandNames(program).includes(first)) {
      throw unknownCommand(first, commandNames(program));
    }
    let exitCode: number = EXIT.ok;
    program.action(async (opts) => {
      exitCode = await run(settingsPath, opts, options.logLevel, options.logFormat, options.config);
    });
    await program.parseAsync(args, { from: "user" });
    return exitCode;
  }, () => usage());
}
