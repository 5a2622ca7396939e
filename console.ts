/**
 * portferry Console: `deno task console [subcommand]`.
 *
 * With no subcommand it runs the Console. The subcommands talk to the running
 * Console found through its settings file (`--config`, any position).
 *
 * @module
 */

// First, before anything parses YAML: LOG_TOKENS would make it print the settings.
import "./lib/app/scrub_env.ts";
import {
  callInProcess,
  commandNames,
  type ConnectionRow,
  type ControlCall,
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
} from "./lib/app/cli.ts";
import { lockInstance } from "./lib/app/instance_lock.ts";
import { programCommand } from "./lib/app/invocation.ts";
import { callControl, ControlCallError } from "./lib/app/control.ts";
import {
  type ConsoleStatus,
  type Decision,
  type PeerInfo,
  runConsole,
} from "./lib/console/server.ts";
import type { PfoStatus } from "./lib/console/pfos.ts";
import { loadOrCreateIdentity, TrustStore } from "./lib/core/identity.ts";
import { ConfigError, errorMessage } from "./lib/core/errors.ts";
import { type PfoCommand, planPfoChange } from "./lib/console/pfo_changes.ts";
import { formatHostPort, parseHostPort, parseListen, parseTarget } from "./lib/net/hostport.ts";
import { type PfoSpec, resolvePfo, validatePfoName } from "./lib/settings/pfo.ts";
import { defaultSettingsFile, settingsPaths } from "./lib/settings/paths.ts";
import { loadConsoleSettings } from "./lib/settings/schema.ts";
import { updateConsoleSettings } from "./lib/settings/edit.ts";
import { escapeControls } from "./lib/core/text.ts";
import { handlePromptLine } from "./lib/ui/prompt.ts";
import { consoleCommands } from "./lib/console/prompt.ts";

function buildProgram(settingsPath: string, call?: ControlCall) {
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
    .allowExcessArguments(false);

  const control = (command: string, body: Record<string, unknown> = {}) =>
    call
      ? callInProcess(call, command, body)
      : callControl(settingsPaths(settingsPath).control, command, body, "Console");

  program.command("fingerprint")
    .description("print this Console's identity fingerprint (creates the identity on first use)")
    .action(async () => {
      const paths = settingsPaths(settingsPath);
      const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
        role: "console",
      });
      printOut(identity.fingerprint);
    });

  program.command("status")
    .description("show the session and every PFO")
    .option("--json", "print JSON only")
    .action(async (opts) => {
      const status = await control("status") as ConsoleStatus;
      if (opts.json) return printOut(JSON.stringify(status, null, 2));
      const s = status.session;
      printOut(`fingerprint: ${status.fingerprint}`);
      printOut(`session port: ${status.listen}`);
      if (status.settingsError !== null) {
        printOut(
          `settings error: ${status.settingsError} (the Console keeps its running settings until the file is fixed)`,
        );
      }
      printOut(
        `session: ${s.state}` +
          (s.peer
            ? `  ${
              escapeControls(`${s.peer.user}@${s.peer.host} from ${s.peer.address}`)
            }  ${s.peer.fingerprint}`
            : "") +
          (s.state === "established" ? `  streams: ${s.streams}` : ""),
      );
      printPfos(status.pfos);
    });

  const session = program.command("session").description("accept, reject or close the session");
  session.command("accept")
    .description("accept the pending session")
    .option("--remember", "trust this Daemon's fingerprint from now on")
    .action(async (opts) => {
      await control("session/accept", { remember: opts.remember === true });
      printOut("session accepted");
    });
  session.command("reject").description("reject the pending session").action(async () => {
    await control("session/reject");
    printOut("session rejected");
  });
  session.command("close").description("close the session (the Daemon will not reconnect)").action(
    async () => {
      await control("session/close");
      printOut("session closed");
    },
  );

  const pfo = program.command("pfo").description(
    "create, edit, enable, disable, list and delete PFOs",
  );
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
      const result = await pfoCall(control, "pfo/add", settingsPath, {
        name,
        proto: opts.socks ? "socks" : opts.udp ? "udp" : "tcp",
        listen: opts.listen,
        target: opts.target ?? null,
        enabled: opts.disabled !== true,
        clients: opts.allowClient,
      });
      if (result) printPfos([result]);
    });
  pfo.command("edit")
    .description("change a PFO's listen address or target")
    .argument("<name>")
    .option("--listen <[host:]port>", "new Console-side address")
    .option("--target <host:port>", "new Daemon-side target")
    .action(async (name, opts) => {
      if (opts.listen === undefined && opts.target === undefined) {
        throw new UsageError("pfo edit needs --listen and/or --target");
      }
      const result = await pfoCall(control, "pfo/edit", settingsPath, {
        name,
        listen: opts.listen,
        target: opts.target,
      });
      if (result) printPfos([result]);
    });
  for (
    const [verb, what] of [["enable", "start listening"], ["disable", "stop listening"]] as const
  ) {
    pfo.command(verb).description(`${what} (saved to the settings file)`).argument("<name>").action(
      async (name) => {
        const result = await pfoCall(control, `pfo/${verb}`, settingsPath, { name });
        if (result) printPfos([result]);
      },
    );
  }
  pfo.command("rm").description("delete a PFO (saved to the settings file)").argument("<name>")
    .action(async (name) => {
      if (await pfoCall(control, "pfo/rm", settingsPath, { name })) {
        printOut(`PFO "${name}" removed`);
      }
    });
  pfo.command("list")
    .description("list PFOs (with no Console running: as saved in the settings file)")
    .option("--json", "print JSON only")
    .action(async (opts) => {
      let list: PfoRow[];
      try {
        list = await control("pfo/list") as PfoStatus[];
      } catch (err) {
        if (!(err instanceof ControlCallError) || !err.notRunning) throw err;
        list = await savedPfos(settingsPath);
        if (!opts.json) printOut(`Console not running: PFOs as saved in ${settingsPath}`);
      }
      if (opts.json) printOut(JSON.stringify(list, null, 2));
      else printPfos(list);
    });

  const connections = program.command("connections").description(
    "list or cut forwarded connections",
  );
  connections.command("list").description("list open connections").option(
    "--json",
    "print JSON only",
  ).action(
    async (opts) => {
      printConnections(await control("connections/list") as ConnectionRow[], opts.json === true);
    },
  );
  connections.command("kill").description("cut one connection").argument("<id>").action(
    async (text) => {
      const id = parseConnectionId(text);
      await control("connections/kill", { id });
      printOut(`connection ${id} killed`);
    },
  );

  program.command("chat")
    .description("send a chat message to the Daemon's user")
    .argument("<text...>")
    .action(async (words) => {
      await control("chat", { text: words.join(" ") });
    });

  program.command("resolve")
    .description("resolve a host name on the Daemon's side")
    .argument("<host>")
    .option("--json", "print JSON only")
    .action(async (host, opts) => {
      try {
        const result = await control("resolve", { host }) as { host: string; addresses: string[] };
        if (opts.json) printOut(JSON.stringify({ ...result, error: null }));
        else printOut(`${host}: ${escapeControls(result.addresses.join(" "))}`);
      } catch (err) {
        if (opts.json && err instanceof ControlCallError && err.result) {
          printOut(JSON.stringify(err.result));
        }
        throw err;
      }
    });

  const trust = program.command("trust").description("list or remove trusted Daemon fingerprints");
  trust.command("list").option("--json", "print JSON only").action(async (opts) => {
    let list: { fingerprint: string; source: string; host?: string; user?: string }[];
    try {
      list = await control("trust/list") as typeof list;
    } catch (err) {
      if (!(err instanceof ControlCallError) || !/not running/.test(err.message)) throw err;
      // Not running: read the files directly.
      const store = await TrustStore.load(settingsPaths(settingsPath).trust);
      const { settings } = await loadConsoleSettings(settingsPath);
      list = [
        ...store.list().map((t) => ({ ...t, source: "trust store" })),
        ...settings.trusted.map((fingerprint) => ({ fingerprint, source: "settings" })),
      ];
    }
    if (opts.json) return printOut(JSON.stringify(list, null, 2));
    if (list.length === 0) return printOut("no trusted Daemons");
    for (const t of list) {
      const who = escapeControls(`${t.user ?? ""}${t.host ? "@" + t.host : ""}`);
      printOut(`${escapeControls(t.fingerprint)}  ${who}  (${t.source})`);
    }
  });
  trust.command("rm").argument("<fingerprint>").action(async (fingerprint) => {
    await control("trust/rm", { fingerprint });
    printOut(`${fingerprint} is no longer trusted`);
  });

  return program;
}

/**
 * Run a PFO change on the running Console. With none running for these
 * settings, make it in the settings file, with the same checks, say so, and
 * return null.
 */
async function pfoCall(
  control: (command: string, body: Record<string, unknown>) => Promise<unknown>,
  command: PfoCommand,
  settingsPath: string,
  body: Record<string, unknown>,
): Promise<PfoStatus | null> {
  checkPfoArguments(body);
  try {
    return await control(command, body) as PfoStatus;
  } catch (err) {
    if (!(err instanceof ControlCallError) || !err.notRunning) throw err;
  }
  const { settings } = await loadValidSettings(settingsPath);
  await updateConsoleSettings(settingsPath, planPfoChange(command, body, settings.pfos).edit);
  printOut(`Console not running: changed ${settingsPath}; it applies at the next start`);
  return null;
}

/** The settings, or why PFO commands refuse to write over the file. */
async function loadValidSettings(settingsPath: string) {
  try {
    return await loadConsoleSettings(settingsPath);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new ConfigError(
      `Cannot change PFOs: the settings file is invalid (${err.message}); fix it first`,
      { cause: err },
    );
  }
}

/** A row of `pfo list`: live from the Console, or as saved in the settings file. */
type PfoRow =
  | PfoStatus
  | Omit<PfoStatus, "state" | "session"> & { state: "saved" | "disabled"; source: "settings" };

/** The PFOs as the settings file holds them, for `pfo list` with no Console running. */
async function savedPfos(settingsPath: string): Promise<PfoRow[]> {
  const { settings } = await loadConsoleSettings(settingsPath);
  return settings.pfos.map((p) => ({
    name: p.name,
    proto: p.proto,
    listen: p.listen,
    target: p.target,
    enabled: p.enabled,
    state: p.enabled ? "saved" : "disabled",
    source: "settings",
    error: null,
    bound: [],
    listeners: 0,
    connections: 0,
    connectionsTotal: 0,
    connectionsRefused: 0,
    connectionsFailed: 0,
    connectionsDenied: 0,
    clients: p.clients,
    bytesIn: 0,
    bytesOut: 0,
  }));
}

/**
 * A bad NAME, address or port is bad usage (exit 2), whether or not a
 * Console runs: check the arguments before asking it.
 */
function checkPfoArguments(body: Record<string, unknown>): void {
  try {
    validatePfoName(String(body.name));
    if (body.proto !== undefined) {
      resolvePfo(body as unknown as PfoSpec); // pfo add: the whole PFO
    } else {
      if (body.listen !== undefined) parseListen(String(body.listen));
      if (body.target !== undefined) parseTarget(String(body.target));
    }
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
}

/** Where a PFO listens: the bound address, or else the full address it would bind. */
function listenText(p: Pick<PfoStatus, "bound" | "listen">): string {
  if (p.bound.length === 1) return p.bound[0];
  try {
    const a = parseListen(p.listen);
    return formatHostPort(a.host, a.port) + (a.portEnd === a.port ? "" : `-${a.portEnd}`);
  } catch {
    return p.listen;
  }
}

function printPfos(list: readonly PfoRow[]): void {
  if (list.length === 0) return printOut("no PFOs");
  const rows = list.map((p) => [
    p.name,
    p.proto,
    listenText(p),
    p.target ?? "-",
    p.state + (p.listeners > 1 ? `(${p.listeners})` : "") +
    ("session" in p && !p.session && p.state === "listening" ? " (no session)" : ""),
    String(p.connections),
    `${p.bytesOut}/${p.bytesIn}`,
    p.error ?? "",
  ]);
  const head = ["NAME", "PROTO", "LISTEN", "TARGET", "STATE", "CONNS", "OUT/IN BYTES", "ERROR"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  for (const row of [head, ...rows]) {
    printOut(row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  }
}

async function run(
  settingsPath: string,
  opts: { session?: string; autoAccept?: true; tokenFile?: string; headless?: true },
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
  const log = runLogger(
    (logLevel ?? settings.logLevel) as "info",
    (logFormat ?? settings.logFormat) as "text",
  );
  const isInteractive = interactive(opts.headless === true);
  // With --log-format json, stdout carries JSON lines only: the readable display goes to stderr.
  const display = (logFormat ?? settings.logFormat) === "json" ? printErr : printOut;
  const signals = exitSignals();
  // Printed for the user to run: in the form they run portferry here.
  const daemonCommand = programCommand("daemon", ["{address}", "--fingerprint", "{fingerprint}"]);
  const controlCommand = (args: readonly string[]) =>
    programCommand("console", args, { config: configGiven });

  let answer: ((line: string) => void) | null = null;
  const ask = isInteractive
    ? (peer: PeerInfo, signal: AbortSignal): Promise<Decision> => {
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
    }
    : undefined;

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
      ask,
      signal: signals.exit.signal,
      forceSignal: signals.force.signal,
      onReady: (_address, command) => {
        if (!isInteractive) return;
        display("Type a line to chat with the Daemon's user; /help lists the commands.");
        const commands = consoleCommands({
          cli: (words) => runPromptSubcommand(buildProgram(settingsPath, command), words),
          chat: (text) => command("chat", { text }),
          quit: () => signals.exit.abort(),
          print: display,
        });
        (async () => {
          for await (const line of stdinLines()) {
            // A pending y/n/t question takes plain answers; a /command still runs.
            if (answer && !line.trim().startsWith("/")) {
              answer(line);
              continue;
            }
            await handlePromptLine(line, {
              commands,
              chat: (text) => command("chat", { text }),
              print: display,
            });
          }
        })();
      },
    });
  } finally {
    signals.dispose();
  }
  return EXIT.ok;
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
