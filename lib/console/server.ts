/**
 * The Console: accepts Daemon sessions on the session port, decides who may
 * hold the one session, runs the PFO listeners and the local control API.
 *
 * @module
 */

import { ControlError, type ControlHandler, serveControl } from "../app/control.ts";
import { ChatView } from "../ui/chat_view.ts";
import { secretEquals } from "../core/secret.ts";
import { closeQuietly, errorMessage, SessionClosedError } from "../core/errors.ts";
import { fileSafetyNote } from "../core/file_safety.ts";
import { loadOrCreateIdentity, TrustStore, verifyChallenge } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import { formatAddress, formatHostPort, parseHostPort } from "../net/hostport.ts";
import { type ResolvedPfo } from "../settings/pfo.ts";
import {
  authTranscript,
  daemonFactsProblem,
  HANDSHAKE_TIMEOUT_MS,
  MAX_CHAT_CHARS,
  MAX_PENDING_HANDSHAKES,
  MAX_PENDING_HANDSHAKES_PER_SOURCE,
  type RejectCode,
  Tag,
} from "../core/protocol.ts";
import {
  consoleHandshake,
  type DaemonClaim,
  MessageReader,
  sendNow,
  Session,
} from "../core/session.ts";
import {
  type ConsoleSettings,
  loadConsoleSettings,
  parseConsoleSettings,
} from "../settings/schema.ts";
import { readTokenFile, settingsPaths } from "../settings/paths.ts";
import { updateConsoleSettings } from "../settings/edit.ts";
import { watchSettings } from "../settings/watch.ts";
import { escapeControls } from "../core/text.ts";
import { decideAdmission } from "./admission.ts";
import { type FrontConn, type FrontLink, SessionFront } from "./front.ts";
import { type PfoChange, type PfoCommand, planPfoChange } from "./pfo_changes.ts";
import { PfoBindError, PfoManager, type PfoStatus } from "./pfos.ts";

/** Session states as `status` shows them. */
export type SessionState = "none" | "pending" | "established" | "closing";

/** Who is on the other end. */
export interface PeerInfo {
  readonly address: string;
  readonly host: string;
  readonly user: string;
  readonly os: string;
  readonly fingerprint: string;
}

/** What `status --json` prints. */
export interface ConsoleStatus {
  readonly session: {
    readonly state: SessionState;
    readonly id: string | null;
    readonly since: string | null;
    readonly peer: PeerInfo | null;
    readonly streams: number;
  };
  readonly fingerprint: string;
  readonly listen: string;
  readonly settings: string;
  /**
   * Why the settings file on disk was refused (`file:line:column: message`),
   * while the Console keeps its running settings; null when the file is fine.
   */
  readonly settingsError: string | null;
  readonly pfos: readonly PfoStatus[];
}

/** The operator's answer to a pending session. */
export type Decision = "accept" | "reject" | "trust";

/** Options for {@linkcode runConsole}. */
export interface ConsoleOptions {
  readonly settingsPath: string;
  /** `--session [HOST:]PORT`, overriding the settings. */
  readonly session?: string;
  /** `--auto-accept`, overriding the settings. */
  readonly autoAccept?: boolean;
  /** `--token-file F`, overriding the settings. */
  readonly tokenFile?: string;
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
  /** Aborted on exit (SIGINT/SIGTERM): drain, then stop. */
  readonly signal: AbortSignal;
  /** Aborted on force exit: stop now. */
  readonly forceSignal?: AbortSignal;
  /**
   * Called once the Console serves, with its bound session address and a way
   * to run control commands in-process (the interactive screen uses it).
   */
  readonly onReady?: (
    address: string,
    command: (name: string, body?: Record<string, unknown>) => Promise<unknown>,
  ) => void;
}

interface Current {
  session: Session;
  state: Exclude<SessionState, "none">;
  peer: PeerInfo;
  since: Date;
  /** Abort an open operator prompt. */
  prompt: AbortController;
}

/**
 * Run the Console until `signal` aborts.
 *
 * @example
 * ```ts ignore
 * await runConsole({ settingsPath, log, out: console.log, daemonCommand, signal });
 * ```
 */
export async function runConsole(options: ConsoleOptions): Promise<void> {
  const { log, out } = options;
  const controlCommand = options.controlCommand ??
    ((args: readonly string[]) => ["deno task console", ...args].join(" "));
  const paths = settingsPaths(options.settingsPath);
  const loaded = await loadConsoleSettings(options.settingsPath);
  let settings = loaded.settings;
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "console",
  });
  for (const warning of identity.warnings ?? []) log.warn(warning);
  const safetyNote = fileSafetyNote();
  if (safetyNote !== null) log.warn(safetyNote);
  const trust = await TrustStore.load(paths.trust);
  let token = await loadToken(settings);

  async function loadToken(s: ConsoleSettings): Promise<string | null> {
    const file = options.tokenFile ?? s.tokenFile;
    return file ? await readTokenFile(file) : null;
  }
  function autoAccept(): boolean {
    return options.autoAccept ?? settings.autoAccept;
  }

  let current: Current | null = null;
  /** Why the settings file on disk was refused by the watcher; null while it is fine. */
  let settingsError: string | null = null;
  /** Daemons accepted during this run: a reconnect takes its session back without a prompt. */
  const acceptedBefore = new Set<string>();

  const pfos = new PfoManager({
    log,
    session: () => (current?.state === "established" ? current.session : null),
    udpIdleMs: () => settings.udpIdleMs,
    socksAuth: () => settings.socksAuth,
  });

  // --- session port ---------------------------------------------------------
  const sessionAddr = options.session === undefined
    ? settings.session
    : parseHostPort(options.session, { defaultHost: "0.0.0.0", allowPortZero: true });
  let front: SessionFront;
  try {
    front = SessionFront.listen({
      hostname: sessionAddr.host,
      port: sessionAddr.port,
      identity,
      maxPending: MAX_PENDING_HANDSHAKES,
      maxPendingPerSource: MAX_PENDING_HANDSHAKES_PER_SOURCE,
      deadlineMs: HANDSHAKE_TIMEOUT_MS,
      onLink: (link) => handleLink(link),
      log,
    });
  } catch (cause) {
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : errorMessage(cause);
    throw new Error(
      `Cannot listen for Daemons on ${
        formatHostPort(sessionAddr.host, sessionAddr.port)
      }: ${reason}`,
      { cause },
    );
  }
  const bound = front.addr;
  const boundText = formatHostPort(bound.hostname, bound.port);

  // --- PFOs start listening now, whatever the session state -----------------
  await pfos.apply(settings.pfos);

  // --- status ---------------------------------------------------------------
  function status(): ConsoleStatus {
    return {
      session: {
        state: current?.state ?? "none",
        id: current?.session.id ?? null,
        since: current?.since.toISOString() ?? null,
        peer: current?.peer ?? null,
        streams: current?.session.streamCount ?? 0,
      },
      fingerprint: identity.fingerprint,
      listen: boundText,
      settings: options.settingsPath,
      settingsError,
      pfos: pfos.list(),
    };
  }

  // --- deciding who holds the session ---------------------------------------
  function accept(c: Current, how: string): void {
    c.state = "established";
    c.since = new Date();
    c.session.send({ tag: Tag.ACCEPT, session: c.session.id });
    acceptedBefore.add(c.peer.fingerprint);
    log.info("session established", { session: c.session.id, how, ...peerFields(c.peer) });
    out(`Session established with ${describe(c.peer)} (${how})`);
  }

  async function rejectCurrent(c: Current, code: RejectCode, reason: string): Promise<void> {
    c.prompt.abort();
    log.info("session rejected", { session: c.session.id, code, reason, ...peerFields(c.peer) });
    await c.session.reject(code, reason);
  }

  function trusted(fingerprint: string): boolean {
    return trust.has(fingerprint) || settings.trusted.includes(fingerprint);
  }

  async function onAuthenticated(
    conn: FrontConn,
    remote: string,
    reader: MessageReader,
    claim: DaemonClaim,
    fingerprint: string,
  ) {
    const peer: PeerInfo = {
      address: remote,
      host: claim.host,
      user: claim.user,
      os: claim.os,
      fingerprint,
    };
    const holder = current;
    const decision = decideAdmission(
      holder && { fingerprint: holder.peer.fingerprint, state: holder.state },
      {
        fingerprint,
        token: token === null
          ? "none"
          : claim.token === null
          ? "missing"
          : secretEquals(claim.token, token)
          ? "right"
          : "wrong",
        autoAccept: autoAccept(),
        trusted: trusted(fingerprint),
        acceptedBefore: acceptedBefore.has(fingerprint),
      },
    );
    if (decision.verdict === "refuse") {
      if (decision.code === "token") log.warn("session refused: bad token", peerFields(peer));
      else {
        log.warn("session refused: busy", {
          ...peerFields(peer),
          holder: holder?.peer.fingerprint ?? "",
        });
      }
      await refuse(conn, decision.code, decision.reason);
      return;
    }
    const id = Array.from(
      crypto.getRandomValues(new Uint8Array(4)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const slog = log.child({ session: id });
    const chat = new ChatView({ label: `${peer.user}@${peer.host}`, out, log: slog });
    let unshownChats = 0;
    let unshownLogged = -Infinity;
    const c: Current = {
      peer,
      state: "pending",
      since: new Date(),
      prompt: new AbortController(),
      session: new Session(conn, reader, {
        role: "console",
        id,
        log: slog,
        earlyData: claim.capabilities.includes("early-data"),
        // Until it is accepted, the Daemon gets a small budget and pendingTimeoutMs.
        pending: { timeoutMs: settings.pendingTimeoutMs },
        handlers: {
          onChat: (text) => {
            // Until the operator accepts it, a Daemon has no say on the operator's screen
            // (nor floods the log: counted, logged once a second at most).
            if (c.state !== "established") {
              unshownChats++;
              if (Date.now() - unshownLogged < 1000) return;
              slog.warn("chat from a Daemon not yet accepted, dropped", {
                ...peerFields(peer),
                dropped: unshownChats,
              });
              unshownChats = 0;
              unshownLogged = Date.now();
              return;
            }
            chat.show(text);
          },
          onEnd: (end) => {
            c.prompt.abort();
            chat.close();
            if (current === c) current = null;
            slog.info("session ended", {
              code: end.code,
              reason: end.reason,
              by: end.remote ? "daemon" : "console",
            });
            out(`Session with ${describe(peer)} ended: ${escapeControls(end.reason)}`);
          },
        },
      }),
    };
    // The slot is ours from now on: a Daemon arriving while the holder closes sees this one.
    current = c;
    if (holder && decision.displace === "own") {
      log.info("the same Daemon connected again, replacing its stale session", {
        session: holder.session.id,
      });
      holder.prompt.abort();
      await holder.session.close("replaced", "the same Daemon connected again");
    } else if (holder && decision.displace === "pending") {
      log.warn("a pending session gives its place to a Daemon admitted without asking", {
        session: holder.session.id,
        fingerprint: holder.peer.fingerprint,
        by: fingerprint,
        how: decision.acceptedAs ?? "",
      });
      await rejectCurrent(
        holder,
        "busy",
        "the Console is busy: a Daemon it admits without asking took the place of this pending one",
      );
    }
    if (current !== c) {
      // Displaced in turn while the holder was closing.
      await c.session.close("replaced", "another Daemon took the session");
      return;
    }
    c.session.run();
    if (decision.acceptedAs !== null) return accept(c, decision.acceptedAs);
    c.session.send({ tag: Tag.PENDING });
    slog.info("session pending: waiting for the operator", peerFields(peer));
    out(
      `Daemon ${describe(peer)} asks for a session.\n  fingerprint: ${peer.fingerprint}\n` +
        (options.ask
          ? ""
          : `  accept: ${controlCommand(["session", "accept"])}    reject: ${
            controlCommand(["session", "reject"])
          }`),
    );
    if (options.ask) {
      options.ask(peer, c.prompt.signal).then(async (decision) => {
        if (current !== c || c.state !== "pending") return;
        if (decision === "reject") {
          acceptedBefore.delete(fingerprint);
          return await rejectCurrent(c, "rejected", "the Console operator rejected the session");
        }
        if (decision === "trust") {
          await trust.add({ fingerprint, host: peer.host, user: peer.user });
        }
        accept(c, decision === "trust" ? "operator, remembered as trusted" : "operator");
      }, () => {});
    }
  }

  async function refuse(conn: FrontConn, code: RejectCode, reason: string): Promise<void> {
    try {
      await sendNow(conn, { tag: Tag.REJECT, code, reason });
    } catch {
      // The peer is gone already.
    }
    closeQuietly(conn);
  }

  async function handleLink(link: FrontLink): Promise<void> {
    const { conn, remote } = link;
    let reader: MessageReader;
    let claim: DaemonClaim;
    let fingerprint: string;
    let helloSeen = false;
    try {
      // The front cuts the public socket at the deadline; every await here then fails.
      await conn.handshake();
      reader = new MessageReader(conn);
      claim = await consoleHandshake(conn, reader, () => (helloSeen = true));
      fingerprint = await verifyChallenge(
        claim.cert,
        claim.signature,
        authTranscript(claim.nonce, identity.fingerprint),
      );
    } catch (err) {
      // Lets the public socket go once what we sent (a REJECT saying why) has left.
      closeQuietly(conn);
      if (
        !helloSeen &&
        (err instanceof SessionClosedError ||
          err instanceof Deno.errors.ConnectionReset ||
          /close_notify|unexpected ?eof|connection reset/i.test(errorMessage(err)))
      ) {
        // A Daemon fetching our certificate to check its pin closes right after TLS.
        log.debug("connection closed after TLS without a hello (a Daemon's pin probe)", { remote });
      } else {
        log.warn("session attempt failed", { remote, error: errorMessage(err) });
      }
      return;
    }
    link.settle();
    const problem = daemonFactsProblem(claim);
    if (problem !== null) {
      // What the operator would see must be plain text; the log line escapes the values.
      log.warn("session refused: the Daemon's host, user or OS breaks the protocol", {
        remote,
        fingerprint,
        problem,
        host: claim.host,
        user: claim.user,
        os: claim.os,
      });
      await refuse(conn, "protocol", `${problem}: upgrade the Daemon`);
      return;
    }
    try {
      await onAuthenticated(conn, remote, reader, claim, fingerprint);
    } catch (err) {
      log.error("session setup failed", { remote, error: errorMessage(err) });
      closeQuietly(conn);
    }
  }

  // --- control --------------------------------------------------------------
  function requireSession(what: string): Session {
    if (current?.state !== "established") {
      throw new ControlError(
        `Cannot ${what}: no session is established (state: ${current?.state ?? "none"})`,
        {
          status: 409,
        },
      );
    }
    return current.session;
  }

  /** PFO changes run one at a time: each binds, saves and applies before the next. */
  let pfoQueue: Promise<unknown> = Promise.resolve();

  function changePfo(command: PfoCommand, body: Record<string, unknown>): Promise<unknown> {
    const run = pfoQueue.then(() => applyPfoChange(command, body));
    pfoQueue = run.catch(() => {});
    return run;
  }

  /**
   * All or nothing: check, bind what the change needs, save, then serve.
   * A refusal leaves the running PFOs and the file as they were.
   */
  async function applyPfoChange(command: PfoCommand, body: Record<string, unknown>) {
    if (settingsError !== null) {
      throw new ControlError(
        `Cannot change PFOs: the settings file is invalid (${settingsError}); fix it first, the Console keeps its running settings`,
        { status: 409 },
      );
    }
    const change = planPfoChange(command, body, settings.pfos);
    const save = async () => {
      try {
        settings = await updateConsoleSettings(options.settingsPath, change.edit);
      } catch (err) {
        throw new ControlError(errorMessage(err), { status: 409, cause: err });
      }
    };
    try {
      if (change.next === null) {
        await save();
        pfos.remove(change.name);
      } else {
        await pfos.change(change.next, save);
      }
    } catch (err) {
      if (!(err instanceof PfoBindError)) throw err;
      const kept = change.before === null
        ? ""
        : change.before.enabled
        ? `it keeps listening on ${listenText(change.before)}; `
        : "it stays disabled; ";
      throw new ControlError(
        `Cannot ${change.verb} PFO "${change.name}": ${err.message}; ${kept}nothing was saved` +
          (command === "pfo/add" ? " (add --disabled to save it without listening)" : ""),
        { status: 409, cause: err },
      );
    }
    // The file may hold hand edits not yet reloaded: run what it says now.
    await pfos.apply(settings.pfos);
    out(describeChange(change));
    return change.next === null ? { removed: change.name } : pfos.status(change.name) ?? null;
  }

  /** Where a PFO listens, with the port the system chose for port 0. */
  function listenText(pfo: ResolvedPfo): string {
    const s = pfos.status(pfo.name);
    return s && s.bound.length === 1 && s.listeners === 1
      ? s.bound[0]
      : formatAddress(pfo.listenAddr);
  }

  /** One line on the Console's screen for a change made through the control API. */
  function describeChange(change: PfoChange): string {
    const { name, next, before } = change;
    if (next === null) return `PFO "${name}" removed`;
    if (!next.enabled) {
      return change.verb === "add" ? `PFO "${name}" added, disabled` : `PFO "${name}" disabled`;
    }
    if (change.verb === "add") return `PFO "${name}" added, listening on ${listenText(next)}`;
    if (change.verb === "enable") return `PFO "${name}" enabled, listening on ${listenText(next)}`;
    const parts: string[] = [];
    if (before?.listen !== next.listen) parts.push(`listens on ${listenText(next)}`);
    if (before?.target !== next.target) parts.push(`forwards to ${next.target}`);
    return `PFO "${name}" now ${parts.length > 0 ? parts.join(" and ") : "is unchanged"}`;
  }

  const handlers: Record<string, ControlHandler> = {
    status: () => status(),
    "session/accept": async (body) => {
      const c = current;
      if (!c || c.state !== "pending") {
        throw new ControlError(
          `Cannot accept: no session is pending (state: ${c?.state ?? "none"})`,
          { status: 409 },
        );
      }
      c.prompt.abort();
      if (body.remember === true) {
        await trust.add({ fingerprint: c.peer.fingerprint, host: c.peer.host, user: c.peer.user });
      }
      accept(c, body.remember === true ? "operator, remembered as trusted" : "operator");
      return status().session;
    },
    "session/reject": async () => {
      const c = current;
      if (!c || c.state !== "pending") {
        throw new ControlError(
          `Cannot reject: no session is pending (state: ${c?.state ?? "none"})`,
          { status: 409 },
        );
      }
      // The operator said no: this identity asks again next time.
      acceptedBefore.delete(c.peer.fingerprint);
      await rejectCurrent(c, "rejected", "the Console operator rejected the session");
      return { state: "none" };
    },
    "session/close": async () => {
      const c = current;
      if (!c) throw new ControlError("Cannot close: there is no session", { status: 409 });
      // Acceptance ends with the session: a Daemon that reconnects anyway must be asked again.
      acceptedBefore.delete(c.peer.fingerprint);
      c.state = "closing";
      if (c.session.ended === null) {
        await c.session.close("closed", "the Console operator closed the session", { final: true });
      }
      return { state: "none" };
    },
    "pfo/add": (body) => changePfo("pfo/add", body),
    "pfo/edit": (body) => changePfo("pfo/edit", body),
    "pfo/enable": (body) => changePfo("pfo/enable", body),
    "pfo/disable": (body) => changePfo("pfo/disable", body),
    "pfo/rm": (body) => changePfo("pfo/rm", body),
    "pfo/list": () => pfos.list(),
    "connections/list": () => pfos.connections(),
    "connections/kill": (body) => {
      const id = Number(body.id);
      if (!pfos.kill(id)) {
        throw new ControlError(
          `Cannot kill connection ${body.id}: no such connection (see \`connections list\`)`,
          {
            status: 404,
          },
        );
      }
      return { killed: id };
    },
    chat: (body) => {
      const text = String(body.text ?? "");
      if (text.length === 0 || text.length > MAX_CHAT_CHARS) {
        throw new ControlError(`Cannot chat: the message must be 1..${MAX_CHAT_CHARS} characters`, {
          status: 400,
        });
      }
      requireSession("chat").chat(text);
      return { sent: text };
    },
    resolve: async (body) => {
      const host = String(body.host ?? "");
      const session = requireSession(`resolve "${host}"`);
      try {
        return { host, addresses: await session.resolve(host) };
      } catch (err) {
        // The Daemon's reason says what failed already ("Cannot resolve ... on the Daemon's side").
        const reason = errorMessage(err);
        throw new ControlError(
          /^Cannot resolve /.test(reason)
            ? escapeControls(reason)
            : `Cannot resolve "${escapeControls(host)}" on the Daemon's side: ${
              escapeControls(reason)
            }`,
          {
            status: 502,
            result: { host, addresses: [], error: errorMessage(err) },
          },
        );
      }
    },
    "trust/list": () => [
      ...trust.list().map((t) => ({ ...t, source: "trust store" })),
      ...settings.trusted.map((fingerprint) => ({ fingerprint, source: "settings" })),
    ],
    "trust/rm": async (body) => {
      const fingerprint = String(body.fingerprint ?? "");
      const fromStore = await trust.remove(fingerprint);
      const inSettings = settings.trusted.includes(fingerprint);
      if (inSettings) {
        settings = await updateConsoleSettings(options.settingsPath, {
          op: "removeTrusted",
          fingerprint,
        });
      }
      if (!fromStore && !inSettings) {
        throw new ControlError(
          `Cannot remove "${fingerprint}": it is not trusted (see \`trust list\`)`,
          { status: 404 },
        );
      }
      acceptedBefore.delete(fingerprint);
      if (current?.peer.fingerprint === fingerprint && !autoAccept() && token === null) {
        log.info("trust removed for the live session's Daemon, closing it", {
          session: current.session.id,
        });
        await current.session.close(
          "untrusted",
          "the Console operator removed this Daemon's trust",
          { final: true },
        );
      }
      return { removed: fingerprint };
    },
  };
  const control = await serveControl({ path: paths.control, log, handlers });

  // --- settings file edits are picked up live -------------------------------
  const watchAbort = new AbortController();
  watchSettings(options.settingsPath, {
    parse: parseConsoleSettings,
    knownText: loaded.text,
    signal: watchAbort.signal,
    onChange: async (next) => {
      const changed = pfosChanged(settings.pfos, next.pfos);
      settings = next;
      settingsError = null;
      try {
        token = await loadToken(next);
      } catch (err) {
        log.error("token file unreadable, keeping the previous token", {
          error: errorMessage(err),
        });
      }
      await pfos.apply(next.pfos);
      log.info("settings reloaded", { pfos: next.pfos.length });
      out(
        `Settings reloaded from ${options.settingsPath}: ${
          changed === 0 ? "no PFO" : changed === 1 ? "1 PFO" : `${changed} PFOs`
        } changed`,
      );
    },
    onError: (err) => {
      settingsError = err.message;
      log.error("settings file is invalid, keeping the running settings", { error: err.message });
    },
  }).catch((err) => log.error("settings watch stopped", { error: errorMessage(err) }));

  // --- ready ----------------------------------------------------------------
  out(`portferry Console`);
  out(`  settings:    ${options.settingsPath}`);
  out(`  fingerprint: ${identity.fingerprint}`);
  out(`  Daemon command (run it on the machine behind the firewall):`);
  out(
    `    ${
      options.daemonCommand.replace("{address}", daemonAddress(bound)).replace(
        "{fingerprint}",
        identity.fingerprint,
      )
    }${token !== null ? " --token-file TOKEN_FILE" : ""}`,
  );
  out(`Console listening for Daemons on ${boundText}`);
  log.info("console ready", {
    listen: boundText,
    fingerprint: identity.fingerprint,
    control: control.port,
  });
  options.onReady?.(boundText, async (command, body) => await handlers[command](body ?? {}));

  // --- exit -----------------------------------------------------------------
  await new Promise<void>((resolve) => {
    if (options.signal.aborted) resolve();
    options.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  const force = options.forceSignal;
  log.info("exiting", { graceMs: force?.aborted ? 0 : settings.graceMs });
  watchAbort.abort();
  await front.close();
  pfos.closeAll();
  const c = current as Current | null;
  if (c && c.session.ended === null) {
    c.prompt.abort();
    if (!force?.aborted && c.state === "established" && c.session.streamCount > 0) {
      out(`Draining ${c.session.streamCount} open connection(s) for up to ${settings.graceMs} ms`);
      const forced = new Promise<void>((r) =>
        force?.addEventListener("abort", () => r(), { once: true })
      );
      await Promise.race([c.session.drain(settings.graceMs), forced]);
    }
    await c.session.close("exit", "the Console is exiting");
  }
  await control.close();
}

function daemonAddress(bound: Deno.NetAddr): string {
  if (bound.hostname !== "0.0.0.0" && bound.hostname !== "::") {
    return formatHostPort(bound.hostname, bound.port);
  }
  let host = "CONSOLE_HOST";
  try {
    host = Deno.hostname();
  } catch {
    // --allow-sys=hostname not granted: leave the placeholder.
  }
  return formatHostPort(host, bound.port);
}

/** How many PFOs a reload adds, removes or changes. One pass over each list. */
function pfosChanged(before: readonly ResolvedPfo[], after: readonly ResolvedPfo[]): number {
  const key = (p: ResolvedPfo) =>
    JSON.stringify([p.proto, p.listen, p.target, p.enabled, p.clients]);
  const old = new Map(before.map((p) => [p.name, key(p)]));
  let changed = 0;
  for (const p of after) {
    const was = old.get(p.name);
    if (was !== key(p)) changed++;
    old.delete(p.name);
  }
  return changed + old.size;
}

function peerFields(peer: PeerInfo) {
  return { remote: peer.address, host: peer.host, user: peer.user, fingerprint: peer.fingerprint };
}

/** The peer in one line; its facts fit the AUTH rules, escaped all the same. */
function describe(peer: PeerInfo): string {
  return escapeControls(`${peer.user}@${peer.host} (${peer.os}) from ${peer.address}`);
}
