/**
 * The Daemon: dials out to the Console, pins its fingerprint, proves its own
 * identity, and then does only what the wire allows a Console to ask for:
 * connect to targets, resolve names, chat. It shows its user every
 * connection made through it, and reconnects with back-off unless told not to.
 *
 * Its state lives in one model ({@linkcode DaemonState}): a snapshot and an
 * event stream that the screen, the logs and the commands read.
 *
 * @module
 */

import { ControlError, serveControl } from "../app/control.ts";
import { type DashboardServer, serveDashboard } from "../app/dashboard.ts";
import { DAEMON_DASHBOARD_SCRIPT } from "./dashboard_script.ts";
import { closeQuietly } from "../core/errors.ts";
import { fileSafetyNote } from "../core/file_safety.ts";
import { type Identity, loadOrCreateIdentity } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import { Stream } from "../core/mux.ts";
import { Session } from "../core/session.ts";
import type { SubscribeOptions, Subscription } from "../core/events.ts";
import { AllowList } from "../net/allowlist.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../net/hostport.ts";
import { describeProxy, type ProxyConfig } from "../net/proxy.ts";
import { isWebSocketUrl, parseWebSocketUrl, type WebSocketUrl } from "../net/console_url.ts";
import { readTokenFile, settingsPaths } from "../settings/paths.ts";
import { controlHandlers, DaemonCommands } from "./commands.ts";
import { connectTarget, resolveHost } from "./connector.ts";
import { dialConsole } from "./dialer.ts";
import { answerResolve, Lookups } from "./lookups.ts";
import { handleOpen, type OpenContext } from "./opens.ts";
import { reconnectLoop, type SessionOutcome } from "./reconnect.ts";
import { type DaemonEvent, type DaemonSnapshot, DaemonState } from "./state.ts";
import { DaemonFlow } from "./udp.ts";
import { sendBudget } from "../core/datagram.ts";
import { DaemonView } from "./view.ts";

/** Options for {@linkcode Daemon}. */
export interface DaemonOptions {
  /** The settings file; the identity key, certificate and control file live beside it. */
  readonly settingsPath: string;
  /** The Console's `HOST[:PORT]`. */
  readonly console: string;
  /** The pinned Console fingerprint. */
  readonly fingerprint: string;
  /** File holding the shared token the Console asks for; null sends none. */
  readonly tokenFile: string | null;
  /** Reconnect with back-off (and jitter) when the session ends or a dial fails. */
  readonly reconnect: boolean;
  /** Longest wait between reconnect attempts, in ms. */
  readonly backoffMaxMs: number;
  /** Deadline to connect and finish the handshake, in ms. */
  readonly connectTimeoutMs: number;
  /** Allow-list rules (`--allow`, `allow:`); empty allows everything. */
  readonly allow: readonly string[];
  /** Where log records go. */
  readonly log: Logger;
  /** The Daemon user's display (stdout). */
  readonly out: (text: string) => void;
  /**
   * How the session's steps (connecting, established, failed, ended) are
   * told: as readable lines through `out` ("out", the default) or as log
   * records ("log", for `--log-format json`). Never both.
   */
  readonly steps?: "out" | "log";
  /**
   * Called once the control commands are served, before the first dial,
   * with the commands to run in this process (the Daemon's input line).
   */
  readonly onReady?: (commands: DaemonCommands) => void;
  /** Exit gracefully (drain, then close) when it aborts; {@linkcode Daemon.close} does the same. */
  readonly signal?: AbortSignal;
  /** Exit at once when it aborts. */
  readonly forceSignal?: AbortSignal;
  /** Drain time on exit, in ms. */
  readonly graceMs?: number;
  /** Most bytes a session holds for the Console (settings `maxHeldBytes`). */
  readonly maxHeldBytes?: number;
  /** Dial through this HTTP proxy (`CONNECT`), resolved from `--proxy`, settings or environment; null or absent dials directly. */
  readonly proxy?: ProxyConfig | null;
  /** PEM certificates a `wss://` web server must chain to (`--ca`); absent: the public roots. */
  readonly caCerts?: readonly string[];
  /** Where the web dashboard listens (settings `dashboard`); null or absent: no dashboard. */
  readonly dashboard?: HostPort | null;
  /** How the user gets a new dashboard URL, for the page that asks for one. Default `deno task daemon dashboard`. */
  readonly dashboardCommand?: string;
  /** Largest receive window one stream grows to (settings `streamWindowMax`). */
  readonly streamWindowMax?: number;
}

/**
 * The Console closes idle UDP flows (udpIdleMs); this is the Daemon's own
 * backstop so a forgotten flow can never hold a socket for long.
 */
const DAEMON_UDP_IDLE_MS = 10 * 60_000;

/** How often connection counters are sampled (rates, progress events). */
const SAMPLE_EVERY_MS = 1_000;

/**
 * The Daemon program: `start()` it, then `done()` resolves when it has
 * stopped for good (or rejects with {@linkcode HandshakeError} when it
 * cannot get a session and will not retry); `close()` stops it.
 *
 * @example
 * ```ts ignore
 * const daemon = new Daemon({ settingsPath, console: "office:7470", fingerprint, tokenFile: null, reconnect: true, backoffMaxMs: 15000, connectTimeoutMs: 10000, allow: [], log, out: console.log });
 * await daemon.start();
 * console.log(daemon.snapshot().session.phase);
 * await daemon.close();
 * ```
 */
export class Daemon {
  /** The commands (status, chat, connections list, kill, close), run in this process. */
  readonly commands: DaemonCommands;
  readonly #options: DaemonOptions;
  readonly #console: HostPort;
  /** The Console's `ws://` or `wss://` address, when it is one. */
  readonly #websocket: WebSocketUrl | null;
  readonly #allow: AllowList;
  readonly #state: DaemonState;
  readonly #exit = new AbortController();
  readonly #force = new AbortController();
  /** The user closed the session: no retry. */
  readonly #stop = new AbortController();
  readonly #flows = new Set<DaemonFlow>();
  readonly #udpBudget = sendBudget();
  #session: Session | null = null;
  #done: Promise<void> | null = null;

  /** A Daemon not yet started; throws when the Console address or an allow rule is bad. */
  constructor(options: DaemonOptions) {
    this.#options = options;
    this.#websocket = isWebSocketUrl(options.console) ? parseWebSocketUrl(options.console) : null;
    this.#console = this.#websocket ?? parseHostPort(options.console);
    this.#allow = AllowList.parse(options.allow);
    this.#state = new DaemonState({
      console: this.#websocket?.text ?? formatHostPort(this.#console.host, this.#console.port),
      fingerprint: options.fingerprint,
      allow: this.#allow.describe(),
      proxy: options.proxy ? describeProxy(options.proxy) : null,
    });
    const view = new DaemonView({ log: options.log, out: options.out, steps: options.steps });
    this.#state.listen((event) => view.show(event));
    this.commands = new DaemonCommands(this);
    follow(options.signal, this.#exit);
    follow(options.forceSignal, this.#force);
  }

  /** The settings file this Daemon runs with. */
  get settingsPath(): string {
    return this.#options.settingsPath;
  }

  /** Everything the Daemon's user can see, now. */
  snapshot(): DaemonSnapshot {
    return this.#state.snapshot();
  }

  /** The Daemon's events, read at the reader's pace. */
  subscribe(options: SubscribeOptions = {}): Subscription<DaemonEvent> {
    return this.#state.subscribe(options);
  }

  /** Load the identity, serve the control commands, and start dialing. */
  async start(): Promise<void> {
    if (this.#done) throw new Error("Cannot start the Daemon: it is started already");
    const { log, out } = this.#options;
    const paths = settingsPaths(this.#options.settingsPath);
    const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
      role: "daemon",
    });
    for (const warning of identity.warnings) log.warn(warning);
    const safetyNote = fileSafetyNote();
    if (safetyNote !== null) log.warn(safetyNote);
    const tokenFile = this.#options.tokenFile;
    const token = tokenFile ? await readTokenFile(tokenFile) : null;
    this.#state.fingerprint = identity.fingerprint;
    out(`Allow-list: the Console may reach ${this.#state.snapshot().allow}`);
    const dashboard = this.#dashboard();
    const handlers = {
      ...controlHandlers(this.commands),
      dashboard: () => dashboardUrl(dashboard),
    };
    const control = await serveControl({
      path: paths.control,
      log,
      handlers,
      // GET /events: the Daemon's events, and the commands `--watch` repeats.
      events: {
        subscribe: (signal) => this.subscribe({ signal }),
        results: {
          status: () => this.commands.run("status", {}),
          "connections/list": () => this.commands.run("connections/list", {}),
        },
      },
    });
    if (dashboard) {
      out(`Dashboard: ${dashboard.loginUrl()}`);
      out(`  (one login; \`${this.#dashboardCommand()}\` prints a new URL)`);
    }
    this.#options.onReady?.(this.commands);
    this.#done = this.#run(identity, token).finally(async () => {
      await control.close();
      await dashboard?.close();
    });
  }

  #dashboardCommand(): string {
    return this.#options.dashboardCommand ?? "deno task daemon dashboard";
  }

  /** Serve the dashboard where the settings say, unless they turn it off. */
  #dashboard(): DashboardServer | null {
    const address = this.#options.dashboard ?? null;
    if (address === null) return null;
    return serveDashboard({
      address,
      program: "Daemon",
      urlCommand: this.#dashboardCommand(),
      script: DAEMON_DASHBOARD_SCRIPT,
      snapshot: () => this.snapshot(),
      subscribe: (signal) => this.subscribe({ signal }),
      handlers: controlHandlers(this.commands),
      log: this.#options.log,
    });
  }

  /** Resolves when the Daemon has stopped for good; rejects with why it gave up. */
  done(): Promise<void> {
    return this.#done ?? Promise.resolve();
  }

  /** Stop: drain open connections for the grace period first, unless `force`. */
  async close(options: { force?: boolean } = {}): Promise<void> {
    if (options.force) this.#force.abort();
    this.#exit.abort();
    await this.done().catch(() => {});
  }

  /** Send chat to the Console; false when no session is established. */
  chat(text: string): boolean {
    const s = this.#live();
    if (!s) return false;
    s.chat(text);
    this.#state.chat("daemon", text);
    return true;
  }

  /** Cut one connection or UDP flow; false when there is no such one. */
  kill(stream: number): boolean {
    const channel = this.#live()?.channel(stream);
    if (!channel) return false;
    this.#options.log.info("connection killed by the Daemon's user", { stream });
    if (channel instanceof DaemonFlow) channel.close("killed by the Daemon's user");
    else if (channel instanceof Stream) channel.reset("killed by the Daemon's user");
    return true;
  }

  /** Close the session for good (the Console is told not to expect a reconnect) and stop. */
  async endSession(): Promise<void> {
    this.#stop.abort();
    const s = this.#live();
    if (s) await s.close("closed", "the Daemon's user closed the session", { final: true });
  }

  #live(): Session | null {
    const s = this.#session;
    return s && s.ended === null ? s : null;
  }

  async #run(identity: Identity, token: string | null): Promise<void> {
    const log = this.#options.log;
    const ctx: OpenContext = {
      allow: this.#allow,
      connector: { connect: connectTarget, resolve: resolveHost },
      connectTimeoutMs: this.#options.connectTimeoutMs,
      log,
      state: this.#state,
      flows: this.#flows,
      udpBudget: this.#udpBudget,
    };
    const lookups = new Lookups({ allow: this.#allow, resolve: resolveHost, log });
    const timers = this.#startTimers();
    try {
      await reconnectLoop({
        reconnect: this.#options.reconnect,
        backoffMaxMs: this.#options.backoffMaxMs,
        attempt: (first) => this.#attempt(first, { identity, token, ctx, lookups }),
        state: this.#state,
        signal: this.#exit.signal,
        stop: this.#stop.signal,
      });
    } finally {
      const s = this.#session;
      if (s) await this.#closeSession(s);
      for (const timer of timers) clearInterval(timer);
      for (const flow of this.#flows) flow.abort("the Daemon is exiting");
      this.#state.change({ type: "stopped" });
      this.#state.close();
    }
  }

  /** Sample counters every second; sweep idle UDP flows. */
  #startTimers(): ReturnType<typeof setInterval>[] {
    const sample = setInterval(() => this.#state.sample(), SAMPLE_EVERY_MS);
    const sweep = setInterval(() => {
      const cutoff = Date.now() - DAEMON_UDP_IDLE_MS;
      for (const flow of this.#flows) {
        if (flow.ended) this.#flows.delete(flow);
        else if (flow.lastActive < cutoff) flow.close("idle on the Daemon's side");
      }
    }, 5_000);
    return [sample, sweep];
  }

  /** One connect → handshake → session run; throws when no session could be set up. */
  async #attempt(first: boolean, with_: AttemptContext): Promise<SessionOutcome> {
    const state = this.#state;
    const consoleText = state.session.console;
    const proxy = state.session.proxy;
    state.change({ type: "connecting", console: consoleText, first, proxy });
    const { link, reader, id, capabilities } = await dialConsole({
      host: this.#console.host,
      port: this.#console.port,
      fingerprint: this.#options.fingerprint,
      connectTimeoutMs: this.#options.connectTimeoutMs,
      proxy: this.#options.proxy ?? null,
      identity: with_.identity,
      token: with_.token,
      onHandshake: () => state.change({ type: "pending", asked: false }),
      onPending: () => state.change({ type: "pending", asked: true }),
      signal: this.#exit.signal,
      websocket: this.#websocket === null ? undefined : {
        url: this.#websocket,
        caCerts: this.#options.caCerts,
        log: this.#options.log,
      },
    });
    const log = this.#options.log.child({ session: id });
    const s: Session = new Session(link, reader, {
      role: "daemon",
      id,
      log,
      maxHeldBytes: this.#options.maxHeldBytes,
      windowTuning: capabilities.includes("window-tuning"),
      streamWindowMax: this.#options.streamWindowMax,
      handlers: {
        onOpen: (msg) => void handleOpen(with_.ctx, s, msg),
        onResolve: (msg) => answerResolve(with_.lookups, s, msg, this.#options.log),
        onChat: (text) => state.chat("console", text),
        onEnd: () => {},
      },
    });
    this.#session = s;
    state.change({ type: "established", session: id, console: consoleText });
    // From now on, exit means: drain, then tell the Console. Force exit skips the drain (see
    // #closeSession) and cuts the link if the Console has not taken the CLOSE within a second:
    // cutting first made the session end on its own failed write ("Bad resource ID").
    const exitGracefully = () => void this.#closeSession(s);
    const cut = () => {
      const timer = setTimeout(() => closeQuietly(link), FORCE_CUT_MS);
      Deno.unrefTimer(timer);
      void s.done().then(() => clearTimeout(timer));
    };
    this.#exit.signal.addEventListener("abort", exitGracefully, { once: true });
    this.#force.signal.addEventListener("abort", cut, { once: true });
    s.run();
    await s.done();
    this.#exit.signal.removeEventListener("abort", exitGracefully);
    this.#force.signal.removeEventListener("abort", cut);
    const end = s.ended;
    return { session: id, end: end && { ...end, by: end.remote ? "console" : "daemon" } };
  }

  /** Drain open connections for the grace period (unless forced), then close. */
  async #closeSession(s: Session): Promise<void> {
    if (s.ended !== null) return;
    const graceMs = this.#options.graceMs ?? 5000;
    if (!this.#force.signal.aborted && s.streamCount > 0) {
      this.#state.change({ type: "draining", connections: s.streamCount, graceMs });
      const forced = new Promise<void>((r) =>
        this.#force.signal.addEventListener("abort", () => r(), { once: true })
      );
      await Promise.race([s.drain(graceMs), forced]);
    }
    await s.close("exit", "the Daemon is exiting");
  }
}

/** How long a forced exit waits for the Console to take the CLOSE before it cuts the link. */
const FORCE_CUT_MS = 1000;

/** What each attempt works with. */
interface AttemptContext {
  readonly identity: Identity;
  readonly token: string | null;
  readonly ctx: OpenContext;
  readonly lookups: Lookups;
}

/** `daemon dashboard`: a login URL with a fresh token. */
function dashboardUrl(dashboard: DashboardServer | null): { url: string } {
  if (dashboard === null) {
    throw new ControlError(
      'Cannot open the dashboard: it is off (`dashboard: null` in the settings); set `dashboard: "127.0.0.1:0"` and restart the Daemon',
      { status: 409 },
    );
  }
  return { url: dashboard.loginUrl() };
}

/** Abort `controller` when `signal` does. */
function follow(signal: AbortSignal | undefined, controller: AbortController): void {
  if (!signal) return;
  if (signal.aborted) controller.abort();
  else signal.addEventListener("abort", () => controller.abort(), { once: true });
}

/**
 * Run the Daemon until the session ends for good or `signal` aborts. Throws
 * {@linkcode HandshakeError} when it cannot get (or keep) a session and
 * will not retry.
 *
 * @example
 * ```ts ignore
 * await runDaemon({ settingsPath, console: "office:7470", fingerprint, tokenFile: null, reconnect: true, backoffMaxMs: 15000, connectTimeoutMs: 10000, allow: [], log, out: console.log, signal });
 * ```
 */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const daemon = new Daemon(options);
  await daemon.start();
  await daemon.done();
}
