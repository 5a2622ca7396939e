/**
 * portferry Daemon: `deno task daemon HOST[:PORT] --fingerprint SHA256:...`.
 *
 * Dials out to the Console, so nothing opens on this side. `status`, `chat`
 * and `close` talk to the running Daemon found through its settings file.
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
  suggestCommand,
  unknownCommand,
  UsageError,
  usageTracker,
  WATCH_HELP,
  watchResults,
} from "./lib/app/cli.ts";
import { lockInstance } from "./lib/app/instance_lock.ts";
import { addServiceCommands } from "./lib/app/service/command.ts";
import { lookup } from "node:dns/promises";
import { parseAllowRule } from "./lib/net/allowlist.ts";
import { callControl, streamControl } from "./lib/app/control.ts";
import { programCommand } from "./lib/app/invocation.ts";
import { errorMessage } from "./lib/core/errors.ts";
import { Daemon } from "./lib/daemon/daemon.ts";
import {
  type DaemonCommandRunner,
  type DaemonStatus,
  remoteCommands,
} from "./lib/daemon/commands.ts";
import type { DaemonConnection } from "./lib/daemon/state.ts";
import { isFingerprint } from "./lib/core/identity.ts";
import { formatHostPort, parseHostPort } from "./lib/net/hostport.ts";
import { isWebSocketUrl, parseWebSocketUrl } from "./lib/net/console_url.ts";
import { fetchConsoleFingerprint } from "./lib/core/tls.ts";
import { defaultSettingsFile, settingsPaths } from "./lib/settings/paths.ts";
import { loadDaemonSettings } from "./lib/settings/schema.ts";
import { rememberConsole } from "./lib/settings/edit.ts";
import { escapeControls } from "./lib/core/text.ts";
import { handlePromptLine } from "./lib/ui/prompt.ts";
import { daemonCommands } from "./lib/daemon/prompt.ts";
import { proxyDial } from "./lib/daemon/dialer.ts";
import { chooseProxy } from "./lib/daemon/proxy_choice.ts";
import type { ProxyConfig } from "./lib/net/proxy.ts";
import { DaemonLive } from "./lib/daemon/live.ts";
import { wantsScreen } from "./lib/ui/screen.ts";

/**
 * The command line. Subcommands run through `commands`: the running
 * Daemon's own (its input line), or by default over its control API.
 */
function buildProgram(settingsPath: string, commands?: DaemonCommandRunner) {
  const program = rootCommand({
    name: "daemon",
    usage: "HOST[:PORT]|ws://HOST[:PORT]/PATH|wss://HOST[:PORT]/PATH --fingerprint SHA256:... " +
      "[options]  |  [command]",
    description:
      "portferry Daemon: dial out to a Console and let it reach TCP and UDP services on this network.\n" +
      "Shows every connection made through it.",
    settingsPath,
  })
    .argument(
      "[console]",
      "the Console's HOST[:PORT] (port 7470 by default), or ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH behind a web server",
    )
    .option("--ca <file>", "for wss://: trust the web server's certificate under this CA (PEM)")
    .option("--fingerprint <SHA256:...>", "the Console's fingerprint, as its banner shows it")
    .option("--token-file <file>", "send the shared token in this file")
    .option(
      "--headless",
      "never prompt (without --fingerprint, a terminal user is asked to confirm the Console's)",
    )
    .option("--plain", "at a terminal, print lines as they come instead of the live screen")
    .option("--no-reconnect", "exit when the session ends or cannot be set up")
    .option(
      "--proxy <url>",
      "dial through this HTTP proxy: http://[USER:PASS@]HOST:PORT, or none to ignore HTTPS_PROXY/ALL_PROXY",
    )
    .option("--proxy-auth-file <file>", "the proxy's USER:PASS, from this owner-only file")
    .option(
      "--allow <rule>",
      "only let the Console reach this HOST[:PORT[-PORT]], address or CIDR (repeatable; default: everything)",
      (rule: string, rules: string[]) => [...rules, rule],
      [] as string[],
    )
    .allowExcessArguments(false);

  const control = commands ??
    remoteCommands((name, body) =>
      callControl(settingsPaths(settingsPath).control, name, body, "Daemon")
    );

  program.command("status")
    .description("show the session and the connections made through this Daemon")
    .option("--json", "print JSON only")
    .option("--watch", WATCH_HELP)
    .action(async (opts) => {
      if (opts.watch) return await watch(commands, settingsPath, "status", opts.json === true);
      const status = await control.run("status", {});
      if (opts.json) return printOut(JSON.stringify(status, null, 2));
      for (const line of statusLines(status)) printOut(line);
    });
  program.command("chat")
    .description("send a chat message to the Console's operator")
    .argument("<text...>")
    .action(async (words) => {
      await control.run("chat", { text: words.join(" ") });
    });
  const connections = program.command("connections").description(
    "list or cut connections made through this Daemon",
  );
  connections.command("list").description("list open connections").option(
    "--json",
    "print JSON only",
  ).option("--watch", WATCH_HELP).action(
    async (opts) => {
      if (opts.watch) {
        return await watch(commands, settingsPath, "connections/list", opts.json === true);
      }
      printConnections(
        (await control.run("connections/list", {})).map((c) => ({ ...c, id: c.stream })),
        opts.json === true,
      );
    },
  );
  connections.command("kill").description("cut one connection").argument("<id>").action(
    async (text) => {
      const id = parseConnectionId(text);
      await control.run("connections/kill", { id });
      printOut(`connection ${id} killed`);
    },
  );
  program.command("dashboard")
    .description("print the running Daemon's dashboard URL, with a fresh login token")
    .action(async () => {
      const { url } = await callControl<{ url: string }>(
        settingsPaths(settingsPath).control,
        "dashboard",
        {},
        "Daemon",
      );
      printOut(url);
    });
  program.command("close")
    .description("close the session and stop the Daemon")
    .action(async () => {
      await control.run("close", {});
      printOut("session closed");
    });
  addServiceCommands(program, {
    program: "daemon",
    settingsPath,
    logFormat: () => extractGlobalOptions(Deno.args).options.logFormat,
    print: printOut,
  });
  return program;
}

/** Ctrl-C typed as a key: drain first, stop at once the second time, as the signal does. */
function interrupt(signals: ReturnType<typeof exitSignals>): void {
  if (signals.exit.signal.aborted) signals.force.abort();
  else signals.exit.abort();
}

/** `daemon status` without `--json`. */
function statusLines(status: DaemonStatus): string[] {
  const { state, phase } = status.session;
  return [
    `fingerprint: ${status.fingerprint}`,
    `console: ${status.console}`,
    ...(status.proxy ? [`proxy: ${status.proxy}`] : []),
    `session: ${state}${phase === state ? "" : ` (${phase})`}` +
    (status.session.lastError ? `  last error: ${escapeControls(status.session.lastError)}` : ""),
    ...status.connections.map((c) =>
      `  #${c.stream} ${escapeControls(`${c.pfo}: ${c.client} -> ${c.target} (${c.address})`)}` +
      `  in ${c.bytesIn} out ${c.bytesOut}`
    ),
  ];
}

/** `--watch`: the running Daemon's `command` every second, through its event stream. */
async function watch(
  inProcess: DaemonCommandRunner | undefined,
  settingsPath: string,
  command: "status" | "connections/list",
  json: boolean,
): Promise<void> {
  if (inProcess) throw new UsageError("--watch runs from the command line, not the input line");
  const stream = streamControl(
    settingsPaths(settingsPath).control,
    `watch=${encodeURIComponent(command)}&events=0`,
    "Daemon",
  );
  await watchResults(stream, {
    json,
    lines: command === "status"
      ? statusLines
      : (rows: DaemonConnection[]) => connectionLines(rows.map((c) => ({ ...c, id: c.stream }))),
  });
}

/**
 * Whether the Daemon's first word is a mistyped command rather than the
 * Console's host: close to a command's name, and nothing like a host (no
 * dot, no colon, and this machine cannot resolve it).
 */
async function mistypedCommand(word: string, names: readonly string[]): Promise<boolean> {
  if (names.includes(word) || /[.:]/.test(word) || suggestCommand(word, names) === null) {
    return false;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const resolves = await Promise.race([
    lookup(word).then(() => true, () => false),
    // A resolver that does not answer quickly: the word is no usable host either.
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 2000))),
  ]);
  clearTimeout(timer);
  return !resolves;
}

/** The `--ca` (or settings `ca:`) file's certificates (only with a `wss://` address), or undefined. */
async function readCaFile(
  file: string | undefined,
  consoleAddr: string,
  name = "--ca",
): Promise<string[] | undefined> {
  if (file === undefined) return undefined;
  if (!/^wss:\/\//i.test(consoleAddr)) {
    throw new UsageError(`${name} applies to a wss:// Console address only, not "${consoleAddr}"`);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    throw new UsageError(`${name}: Cannot read "${file}": ${errorMessage(err)}`);
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!pems) {
    throw new UsageError(
      `${name}: "${file}" holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
    );
  }
  return pems.map((pem) => `${pem}\n`);
}

/**
 * First use without --fingerprint, at a terminal: show the Console's
 * fingerprint, ask the user to compare it with the Console's banner, and
 * remember it in the settings when they confirm.
 */
async function confirmFirstUse(
  settingsPath: string,
  consoleAddr: string,
  timeoutMs: number,
  proxy: ProxyConfig | null,
): Promise<string> {
  if (isWebSocketUrl(consoleAddr)) {
    throw new UsageError(
      "missing --fingerprint: with a ws:// or wss:// address, copy it from the Console's banner",
    );
  }
  const { host, port } = parseHostPort(consoleAddr);
  const dial = proxyDial({ proxy, host, port, connectTimeoutMs: timeoutMs });
  const fingerprint = await fetchConsoleFingerprint({ hostname: host, port, timeoutMs, dial });
  printOut(`The Console at ${formatHostPort(host, port)} presents the fingerprint`);
  printOut(`  ${fingerprint}`);
  printOut("Compare it with the fingerprint the Console's operator sees in its banner.");
  printOut("Trust this Console and remember it? [y/N] ");
  const next = await stdinLines().next();
  const answer = next.done ? "" : next.value.trim().toLowerCase();
  if (answer !== "y" && answer !== "yes") {
    throw new Error(
      "Cannot connect: the Console's fingerprint was not confirmed; nothing was saved",
    );
  }
  await rememberConsole(settingsPath, { console: formatHostPort(host, port), fingerprint });
  printOut(`Remembered in ${settingsPath}; next time no --fingerprint is needed.`);
  return fingerprint;
}

/**
 * One of the proxy variables; one that `--allow-env` does not grant counts as
 * unset, so a narrowed `--allow-env` simply leaves the environment out.
 */
function readProxyVariable(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) return undefined;
    throw err;
  }
}

/** The Daemon's input line: chat to the Console's operator, or a /command. */
function readPromptLines(
  cli: (words: readonly string[]) => Promise<void>,
  commands: DaemonCommandRunner,
  exit: AbortController,
  print: (text: string) => void,
  lines: AsyncIterable<string>,
): void {
  print("Type a line to chat with the Console's operator; /help lists the commands.");
  const chat = (text: string) => commands.run("chat", { text });
  const slash = daemonCommands({ cli, chat, quit: () => exit.abort(), print });
  (async () => {
    for await (const line of lines) {
      await handlePromptLine(line, { commands: slash, chat, print });
    }
  })();
}

if (import.meta.main) {
  // Until the arguments are read, usage shows the default settings path.
  let usage = () => buildProgram(defaultSettingsFile("daemon")).helpInformation();
  await runMain(async () => {
    const { args, options } = extractGlobalOptions(Deno.args);
    const settingsPath = options.config ?? defaultSettingsFile("daemon");
    const program = buildProgram(settingsPath);
    usage = usageTracker(program);
    const first = firstOperand(program, args);
    if (first !== undefined && await mistypedCommand(first, commandNames(program))) {
      throw unknownCommand(first, commandNames(program));
    }
    let exitCode: number = EXIT.ok;
    program.action(async (consoleArg, opts) => {
      const { settings } = await loadDaemonSettings(settingsPath);
      const consoleAddr = consoleArg ??
        (settings.console
          ? "text" in settings.console
            ? settings.console.text
            : formatHostPort(settings.console.host, settings.console.port)
          : null);
      if (!consoleAddr) throw new UsageError("missing the Console's HOST[:PORT]");
      try {
        if (isWebSocketUrl(consoleAddr)) parseWebSocketUrl(consoleAddr);
        else parseHostPort(consoleAddr);
      } catch (err) {
        throw new UsageError(errorMessage(err));
      }
      const caCerts = opts.ca !== undefined
        ? await readCaFile(opts.ca, consoleAddr)
        : await readCaFile(settings.ca ?? undefined, consoleAddr, `"ca" in ${settingsPath}`);
      let fingerprint: string | null = (opts.fingerprint as string | undefined) ??
        settings.fingerprint;
      if (!fingerprint && !interactive(opts.headless === true)) {
        throw new UsageError(
          "missing --fingerprint: copy it from the Console's banner or `deno task console fingerprint`",
        );
      }
      if (fingerprint && !isFingerprint(fingerprint)) {
        throw new UsageError(
          `--fingerprint "${fingerprint}" is not a fingerprint: expected SHA256: and 43 base64 characters`,
        );
      }
      let proxy: ProxyConfig | null;
      try {
        ({ proxy } = await chooseProxy({
          flag: opts.proxy,
          authFile: opts.proxyAuthFile,
          settings,
          env: readProxyVariable,
          // NO_PROXY is matched against the host the Daemon connects to: the web server for ws(s)://.
          console: isWebSocketUrl(consoleAddr)
            ? parseWebSocketUrl(consoleAddr)
            : parseHostPort(consoleAddr),
        }));
      } catch (err) {
        if (err instanceof TypeError) throw new UsageError(errorMessage(err));
        throw err;
      }
      for (const rule of opts.allow) {
        try {
          parseAllowRule(rule);
        } catch (err) {
          throw new UsageError(`--allow: ${errorMessage(err)}`);
        }
      }
      // Before anything is created or written: one Daemon per settings file.
      using _lock = await lockInstance(settingsPath, "Daemon");
      if (!fingerprint) {
        fingerprint = await confirmFirstUse(
          settingsPath,
          consoleAddr,
          settings.connectTimeoutMs,
          proxy,
        );
      }
      const logFormat = options.logFormat ?? settings.logFormat;
      // With --log-format json, stdout carries JSON lines only: the session's steps are
      // log records, and the other readable lines go to stderr.
      const json = logFormat === "json";
      const isInteractive = interactive(opts.headless === true);
      const signals = exitSignals();
      // The live screen, at a terminal (not with --plain, --headless, TERM=dumb or JSON logs).
      const live = isInteractive && !json &&
          wantsScreen({ plain: opts.plain === true, headless: false })
        ? new DaemonLive({ screen: { onInterrupt: () => interrupt(signals) } })
        : null;
      const level = options.logLevel ?? settings.logLevel;
      const log = live ? live.logger(level) : runLogger(level, logFormat);
      const display = live ? live.display : json ? printErr : printOut;
      signals.exit.signal.addEventListener("abort", () => {
        live?.exiting("Exiting: draining open connections (Ctrl-C again stops at once)");
      });
      try {
        const daemon = new Daemon({
          settingsPath,
          console: consoleAddr,
          fingerprint,
          tokenFile: opts.tokenFile ?? settings.tokenFile,
          reconnect: opts.reconnect && settings.reconnect,
          backoffMaxMs: settings.backoffMaxMs,
          connectTimeoutMs: settings.connectTimeoutMs,
          maxHeldBytes: settings.maxHeldBytes,
          caCerts,
          dashboard: settings.dashboard,
          dashboardCommand: programCommand("daemon", ["dashboard"], {
            config: options.config ?? null,
          }),
          streamWindowMax: settings.streamWindowMax,
          allow: opts.allow.length > 0 ? opts.allow : settings.allow,
          proxy,
          log,
          out: display,
          steps: json ? "log" : "out",
          onReady: isInteractive
            ? (commands) =>
              readPromptLines(
                (words) => runPromptSubcommand(buildProgram(settingsPath, commands), words),
                commands,
                signals.exit,
                display,
                live ? live.screen.lines() : stdinLines(),
              )
            : undefined,
          signal: signals.exit.signal,
          forceSignal: signals.force.signal,
        });
        live?.attach(daemon);
        await daemon.start();
        await daemon.done();
      } finally {
        live?.stop();
        signals.dispose();
      }
      exitCode = EXIT.ok;
    });
    await program.parseAsync(args, { from: "user" });
    return exitCode;
  }, () => usage());
}
