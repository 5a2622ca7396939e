/**
 * The Console as a program object: it accepts Daemon sessions on the
 * session port, runs the PFO listeners and the local control API, and holds
 * the one state model (a snapshot and an event stream) and the one command
 * set that every view and every caller use.
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import { type ControlServer, serveControl } from "../app/control.ts";
import { closeQuietly, errorMessage } from "../core/errors.ts";
import { EventHub } from "../core/events.ts";
import { fileSafetyNote } from "../core/file_safety.ts";
import { type Identity, loadOrCreateIdentity, TrustStore } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import { escapeControls } from "../core/text.ts";
import { parseHostPort } from "../net/hostport.ts";
import { type ConsoleSettings, loadConsoleSettings } from "../settings/schema.ts";
import { readTokenFile, settingsPaths } from "../settings/paths.ts";
import { updateConsoleSettings } from "../settings/edit.ts";
import { bannerLines, listenFront } from "./banner.ts";
import {
  type ConsoleCommandSet,
  controlHandlers,
  type ResolveResult,
  trustEntries,
} from "./commands.ts";
import { authenticateLink } from "./handshake.ts";
import { PfoEditor } from "./pfo_editor.ts";
import type { PfoRequest } from "./pfo_changes.ts";
import { type ConnectionInfo, PfoManager } from "./pfos.ts";
import { type Decision, SessionDesk } from "./sessions.ts";
import { watchConsoleSettings } from "./settings_reload.ts";
import type { SessionFront } from "./front.ts";
import {
  type ChatLine,
  type ConsoleEvent,
  type ConsoleSnapshot,
  type ConsoleStatus,
  type PeerInfo,
  type PfoCounterName,
  pfoRates,
  type PfoSnapshot,
} from "./state.ts";
import { RateMeter } from "../core/rates.ts";

export type { Decision } from "./sessions.ts";

/** Options for {@linkcode Console}. */
export interface ConsoleOptions {
  /**
   * The settings file (PFOs, trusted Daemons...); the identity key,
   * certificate, trust store and control file live beside it.
   */
  readonly settingsPath: string;
  /** `--session [HOST:]PORT`, overriding the settings. */
  readonly session?: string;
  /** `--auto-accept`, overriding the settings. */
  readonly autoAccept?: boolean;
  /** `--token-file F`, overriding the settings. */
  readonly tokenFile?: string;
  /** Where log records go. */
  readonly log: Logger;
  /** Operator display: banner, chat, prompts (stdout). */
  readonly out: (text: string) => void;
  /** How the Daemon's user runs the Daemon, for the banner. */
  readonly daemonCommand: string;
  /**
   * How the operator runs this Console's subcommands, for the hints it
   * prints (default `deno task console ARGS`).
   */
  readonly controlCommand?: (args: readonly string[]) => string;
  /**
   * Ask the operator about a pending session (interactive mode). Absent in
   * headless mode: the session waits for `session accept|reject`.
   */
  readonly ask?: (peer: PeerInfo, signal: AbortSignal) => Promise<Decision>;
  /** How often counters are sampled for rates and progress events, in ms. Default 1000. */
  readonly tickMs?: number;
  /** Chat lines the snapshot keeps. Default 100. */
  readonly chatLines?: number;
}

/** Options for {@linkcode Console.close}. */
export interface ConsoleCloseOptions {
  /** Stop at once: no drain of open connections. */
  readonly force?: boolean;
}

/** What the Console runs once started. */
interface Running {
  readonly identity: Identity;
  readonly trust: TrustStore;
  readonly front: SessionFront;
  readonly listen: string;
  readonly pfos: PfoManager;
  readonly desk: SessionDesk;
  readonly editor: PfoEditor;
  readonly control: ControlServer;
  readonly watch: AbortController;
  readonly tick: ReturnType<typeof setInterval>;
}

/**
 * The Console program.
 *
 * @example
 * ```ts ignore
 * await using con = new Console({ settingsPath, log, out: console.log, daemonCommand });
 * const address = await con.start();
 * for await (const event of con.events.subscribe({ signal })) render(con.snapshot(), event);
 * ```
 */
export class Console implements AsyncDisposable {
  /** What changes, for views: session, PFOs, connections, chat, warnings. */
  readonly events: EventHub<ConsoleEvent> = new EventHub<ConsoleEvent>();
  /** Every operator action. */
  readonly commands: ConsoleCommandSet;
  readonly #o: ConsoleOptions;
  #settings: ConsoleSettings | null = null;
  #settingsError: string | null = null;
  #token: string | null = null;
  #run: Running | null = null;
  #closing: Promise<void> | null = null;
  readonly #force = new AbortController();
  readonly #rates = new RateMeter<PfoCounterName>();
  readonly #chat: ChatLine[] = [];
  /** Bytes each open connection had at the last tick, for progress events. */
  #lastBytes = new Map<number, number>();

  /** A Console not yet started: {@linkcode Console.start} reads the settings and binds. */
  constructor(options: ConsoleOptions) {
    this.#o = options;
    this.commands = this.#commandSet();
  }

  /** Start serving. Resolves with the bound session address (`host:port`). */
  async start(): Promise<string> {
    if (this.#run) throw new Error("Cannot start the Console: it runs already");
    const { log, settingsPath } = this.#o;
    const loaded = await loadConsoleSettings(settingsPath);
    this.#settings = loaded.settings;
    const paths = settingsPaths(settingsPath);
    const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
      role: "console",
    });
    for (const warning of [...identity.warnings ?? [], fileSafetyNote()]) {
      if (warning !== null) this.#warn(warning);
    }
    const trust = await TrustStore.load(paths.trust);
    this.#token = await this.#loadToken(loaded.settings);
    const desk = this.#desk(trust);
    const pfos = this.#pfoManager(desk);
    const front = listenFront(this.#sessionAddress(), identity, log, async (link) => {
      const daemon = await authenticateLink(link, { fingerprint: identity.fingerprint, log });
      if (daemon === null) return;
      try {
        await desk.admit(daemon);
      } catch (err) {
        log.error("session setup failed", { remote: daemon.remote, error: errorMessage(err) });
        closeQuietly(daemon.conn);
      }
    });
    const listen = front.listen;
    try {
      // PFOs start listening now, whatever the session state.
      await pfos.apply(loaded.settings.pfos);
      const control = await serveControl({
        path: paths.control,
        log,
        handlers: controlHandlers(this.commands),
      });
      this.#run = {
        identity,
        trust,
        front: front.front,
        listen,
        pfos,
        desk,
        editor: this.#editor(pfos),
        control,
        watch: this.#watch(loaded.text),
        tick: setInterval(() => this.#tick(), this.#o.tickMs ?? 1000),
      };
    } catch (err) {
      pfos.closeAll();
      await front.front.close();
      throw err;
    }
    this.#ready();
    return listen;
  }

  /** The bound session address, once started. */
  get address(): string {
    return this.#running().listen;
  }

  /** Everything an operator can see, now. */
  snapshot(): ConsoleSnapshot {
    const run = this.#running();
    const status = this.status();
    return {
      ...status,
      connections: run.pfos.connections(),
      trust: trustEntries(run.trust, this.#current().trusted),
      allowList: status.pfos.filter((p) => p.clients.length > 0).map((p) => ({
        pfo: p.name,
        clients: p.clients,
      })),
      chat: [...this.#chat],
    };
  }

  /** What `status --json` prints: the snapshot without the lists that grow. */
  status(): ConsoleStatus {
    const run = this.#running();
    return {
      session: run.desk.snapshot(),
      fingerprint: run.identity.fingerprint,
      listen: run.listen,
      settings: this.#o.settingsPath,
      settingsError: this.#settingsError,
      pfos: this.#pfoSnapshots(),
    };
  }

  /**
   * Exit: stop taking sessions and connections, drain the open ones for the
   * grace period (none with `force`, or once {@linkcode forceClose} is
   * called), close the session and the control API.
   */
  close(options: ConsoleCloseOptions = {}): Promise<void> {
    if (options.force) this.#force.abort();
    this.#closing ??= this.#exit();
    return this.#closing;
  }

  /** Cut a running drain short: stop now. */
  forceClose(): void {
    this.#force.abort();
  }

  /** The same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #exit(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    const graceMs = this.#current().graceMs;
    this.#o.log.info("exiting", { graceMs: this.#force.signal.aborted ? 0 : graceMs });
    run.watch.abort();
    clearInterval(run.tick);
    await run.front.close();
    run.pfos.closeAll();
    await run.desk.exit(graceMs, this.#force.signal);
    await run.control.close();
    this.events.close();
  }

  #running(): Running {
    if (!this.#run) throw new Error("Cannot read the Console: it is not started");
    return this.#run;
  }

  #current(): ConsoleSettings {
    if (!this.#settings) throw new Error("Cannot read the Console's settings: it is not started");
    return this.#settings;
  }

  #sessionAddress() {
    const { session } = this.#o;
    return session === undefined
      ? this.#current().session
      : parseHostPort(session, { defaultHost: "0.0.0.0", allowPortZero: true });
  }

  async #loadToken(s: ConsoleSettings): Promise<string | null> {
    const file = this.#o.tokenFile ?? s.tokenFile;
    return file ? await readTokenFile(file) : null;
  }

  #autoAccept(): boolean {
    return this.#o.autoAccept ?? this.#current().autoAccept;
  }

  #pfoManager(desk: SessionDesk): PfoManager {
    return new PfoManager({
      log: this.#o.log,
      session: () => desk.established(),
      udpIdleMs: () => this.#current().udpIdleMs,
      socksAuth: () => this.#current().socksAuth,
      onConnection: (change, connection) => this.#connectionChanged(change, connection),
    });
  }

  #desk(trust: TrustStore): SessionDesk {
    return new SessionDesk({
      log: this.#o.log,
      out: this.#o.out,
      trust,
      trusted: () => this.#current().trusted,
      token: () => this.#token,
      autoAccept: () => this.#autoAccept(),
      pendingTimeoutMs: () => this.#current().pendingTimeoutMs,
      streamWindowMax: () => this.#current().streamWindowMax,
      ask: this.#o.ask,
      controlCommand: this.#o.controlCommand ??
        ((args) => ["deno task console", ...args].join(" ")),
      onChange: () => this.#emitSession(),
      onChat: (text) => this.#chatLine("daemon", text),
    });
  }

  #editor(pfos: PfoManager): PfoEditor {
    return new PfoEditor({
      settingsPath: this.#o.settingsPath,
      pfos,
      settings: () => this.#current(),
      saved: (settings) => (this.#settings = settings),
      settingsError: () => this.#settingsError,
      out: this.#o.out,
    });
  }

  /** Settings file edits are picked up live. */
  #watch(knownText: string | null): AbortController {
    const watch = new AbortController();
    watchConsoleSettings({
      settingsPath: this.#o.settingsPath,
      knownText,
      signal: watch.signal,
      log: this.#o.log,
      out: this.#o.out,
      current: () => this.#current(),
      reloaded: async (next) => {
        this.#settings = next;
        this.#settingsError = null;
        await this.#reloadToken(next);
        await this.#running().pfos.apply(next.pfos);
        this.events.emit({ type: "settings", settingsError: null });
      },
      refused: (message) => {
        this.#settingsError = message;
        this.events.emit({ type: "settings", settingsError: message });
      },
    });
    return watch;
  }

  async #reloadToken(next: ConsoleSettings): Promise<void> {
    try {
      this.#token = await this.#loadToken(next);
    } catch (err) {
      this.#o.log.error("token file unreadable, keeping the previous token", {
        error: errorMessage(err),
      });
      this.events.emit({ type: "warning", message: "token file unreadable" });
    }
  }

  #ready(): void {
    const run = this.#running();
    const lines = bannerLines({
      settingsPath: this.#o.settingsPath,
      fingerprint: run.identity.fingerprint,
      daemonCommand: this.#o.daemonCommand,
      bound: run.front.addr,
      token: this.#token !== null,
    });
    for (const line of lines) this.#o.out(line);
    this.#o.log.info("console ready", {
      listen: run.listen,
      fingerprint: run.identity.fingerprint,
      control: run.control.port,
    });
  }

  #warn(message: string): void {
    this.#o.log.warn(message);
    this.events.emit({ type: "warning", message });
  }

  #emitSession(): void {
    if (this.#run) this.events.emit({ type: "session", session: this.#run.desk.snapshot() });
  }

  #chatLine(from: ChatLine["from"], text: string): void {
    const line: ChatLine = { at: new Date().toISOString(), from, text };
    this.#chat.push(line);
    if (this.#chat.length > (this.#o.chatLines ?? 100)) this.#chat.shift();
    this.events.emit({ type: "chat", line });
  }

  #connectionChanged(change: "opened" | "closed", connection: ConnectionInfo): void {
    const key = `connection:${connection.id}`;
    if (change === "closed") this.#lastBytes.delete(connection.id);
    this.events.emit({ type: `connection-${change}`, connection }, key);
  }

  #pfoSnapshots(): PfoSnapshot[] {
    const now = Date.now();
    return this.#running().pfos.list().map((p) => ({
      ...p,
      rates: pfoRates(this.#rates.rates(p.name, now)),
    }));
  }

  #pfoSnapshot(name: string): PfoSnapshot | null {
    const status = this.#running().pfos.status(name);
    return status ? { ...status, rates: pfoRates(this.#rates.rates(name)) } : null;
  }

  /** Sample counters for rates; tell subscribers what moved (coalesced per key). */
  #tick(): void {
    const run = this.#running();
    const now = Date.now();
    const names = new Set<string>();
    for (const { name, bytesIn, bytesOut, connectionsTotal } of run.pfos.counters()) {
      names.add(name);
      this.#rates.sample(name, { bytesIn, bytesOut, connectionsTotal }, now);
    }
    this.#rates.retain(names);
    if (this.events.subscribers === 0) return;
    const last = this.#lastBytes;
    this.#lastBytes = new Map();
    for (const connection of run.pfos.connections()) {
      const bytes = connection.bytesIn + connection.bytesOut;
      this.#lastBytes.set(connection.id, bytes);
      if (last.get(connection.id) === bytes) continue;
      this.events.progress(`connection:${connection.id}`, {
        type: "connection-progress",
        connection,
      });
    }
    for (const name of this.#rates.moving(now)) {
      const pfo = this.#pfoSnapshot(name);
      if (pfo) this.events.progress(`pfo:${name}`, { type: "pfo-progress", pfo });
    }
  }

  #pfoChanged(name: string): PfoSnapshot | null {
    const pfo = this.#pfoSnapshot(name);
    this.events.emit({ type: "pfo", name, pfo }, `pfo:${name}`);
    return pfo;
  }

  async #changePfo(change: PfoRequest): Promise<PfoSnapshot> {
    await this.#running().editor.change(change);
    const pfo = this.#pfoChanged(change.request.name);
    if (pfo === null) throw new Error(`Cannot find PFO "${change.request.name}" after the change`);
    return pfo;
  }

  async #removePfo(name: string): Promise<{ removed: string }> {
    await this.#running().editor.change({ command: "pfo/rm", request: { name } });
    this.#pfoChanged(name);
    return { removed: name };
  }

  async #resolve(host: string): Promise<ResolveResult> {
    const session = this.#running().desk.require(`resolve "${host}"`);
    try {
      return { host, addresses: await session.resolve(host) };
    } catch (err) {
      // The Daemon's reason says what failed already ("Cannot resolve ... on the Daemon's side").
      const reason = errorMessage(err);
      throw new CommandError(
        "failed",
        /^Cannot resolve /.test(reason)
          ? escapeControls(reason)
          : `Cannot resolve "${escapeControls(host)}" on the Daemon's side: ${
            escapeControls(reason)
          }`,
        { result: { host, addresses: [], error: reason }, cause: err },
      );
    }
  }

  async #untrust(fingerprint: string): Promise<{ removed: string }> {
    const run = this.#running();
    const fromStore = await run.trust.remove(fingerprint);
    const inSettings = this.#current().trusted.includes(fingerprint);
    if (inSettings) {
      this.#settings = await updateConsoleSettings(this.#o.settingsPath, {
        op: "removeTrusted",
        fingerprint,
      });
    }
    if (!fromStore && !inSettings) {
      throw new CommandError(
        "not-found",
        `Cannot remove "${fingerprint}": it is not trusted (see \`trust list\`)`,
      );
    }
    await run.desk.untrusted(fingerprint);
    return { removed: fingerprint };
  }

  #kill(id: number): { killed: number } {
    if (!this.#running().pfos.kill(id)) {
      throw new CommandError(
        "not-found",
        `Cannot kill connection ${id}: no such connection (see \`connections list\`)`,
      );
    }
    return { killed: id };
  }

  #sendChat(text: string): { sent: string } {
    this.#running().desk.require("chat").chat(text);
    this.#chatLine("console", text);
    return { sent: text };
  }

  #commandSet(): ConsoleCommandSet {
    const run = () => this.#running();
    const state = { state: "none" } as const;
    return {
      "status": () => Promise.resolve(this.status()),
      "session/accept": (r) => run().desk.accept(r.remember),
      "session/reject": () => run().desk.reject().then(() => state),
      "session/close": () => run().desk.close().then(() => state),
      "pfo/add": (request) => this.#changePfo({ command: "pfo/add", request }),
      "pfo/edit": (request) => this.#changePfo({ command: "pfo/edit", request }),
      "pfo/enable": (request) => this.#changePfo({ command: "pfo/enable", request }),
      "pfo/disable": (request) => this.#changePfo({ command: "pfo/disable", request }),
      "pfo/rm": (r) => this.#removePfo(r.name),
      "pfo/list": () => Promise.resolve(this.#pfoSnapshots()),
      "connections/list": () => Promise.resolve(run().pfos.connections()),
      "connections/kill": (r) => Promise.resolve().then(() => this.#kill(r.id)),
      "chat": (r) => Promise.resolve().then(() => this.#sendChat(r.text)),
      "resolve": (r) => this.#resolve(r.host),
      "trust/list": () => Promise.resolve(trustEntries(run().trust, this.#current().trusted)),
      "trust/rm": (r) => this.#untrust(r.fingerprint),
    };
  }
}
