/**
 * The Daemon: dials out to the Console, pins its fingerprint, proves its own
 * identity, and then does only what the wire allows a Console to ask for:
 * connect to targets, resolve names, chat. It shows its user every
 * connection made through it, and reconnects with back-off unless told not to.
 *
 * @module
 */

import { userInfo } from "node:os";
import { ControlError, type ControlHandler, serveControl } from "../app/control.ts";
import { ChatView } from "../ui/chat_view.ts";
import { errorMessage, HandshakeError, OpenError, ProtocolError } from "../core/errors.ts";
import { fileSafetyNote } from "../core/file_safety.ts";
import { loadOrCreateIdentity, signChallenge } from "../core/identity.ts";
import type { LogFields, Logger } from "../core/log.ts";
import { formatHostPort, parseHostPort } from "../net/hostport.ts";
import {
  MAX_CHAT_CHARS,
  type OpenMessage,
  type ResolveMessage,
  sanitizeDaemonFacts,
  SESSION_ID_PATTERN,
  Tag,
} from "../core/protocol.ts";
import { daemonHandshake, MessageReader, Session } from "../core/session.ts";
import { readTokenFile, settingsPaths } from "../settings/settings.ts";
import { connectPinned } from "../core/tls.ts";
import { escapeControls } from "../core/text.ts";
import { AllowList } from "../net/allowlist.ts";
import { parseIp } from "../net/address.ts";
import { DaemonFlow } from "./udp.ts";
import { Stream } from "../core/mux.ts";
import { classifyError, connectTarget, resolveHost } from "./connector.ts";
import { Lookups } from "./lookups.ts";
import { RetryReport, seconds } from "./retry_report.ts";

/** What the Daemon is doing now. */
export type DaemonPhase = "connecting" | "pending" | "established" | "waiting" | "stopped";

/** One connection made through the Daemon, as `status` shows it. */
export interface DaemonConnection {
  readonly stream: number;
  readonly pfo: string;
  readonly proto: "tcp" | "udp";
  readonly client: string;
  readonly target: string;
  readonly address: string;
  readonly since: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** What `daemon status --json` prints: the Console's shape where it applies. */
export interface DaemonStatus {
  readonly session: {
    readonly state: "none" | "pending" | "established" | "closing";
    readonly phase: DaemonPhase;
    readonly id: string | null;
    readonly since: string | null;
    readonly peer: {
      readonly address: string;
      readonly host: null;
      readonly user: null;
      readonly fingerprint: string;
    } | null;
    readonly streams: number;
    readonly lastError: string | null;
  };
  readonly fingerprint: string;
  readonly console: string;
  readonly settings: string;
  readonly pfos: readonly never[];
  readonly connections: readonly DaemonConnection[];
}

/** Options for {@linkcode runDaemon}. */
export interface DaemonOptions {
  readonly settingsPath: string;
  /** The Console's `HOST[:PORT]`. */
  readonly console: string;
  /** The pinned Console fingerprint. */
  readonly fingerprint: string;
  readonly tokenFile: string | null;
  readonly reconnect: boolean;
  readonly backoffMaxMs: number;
  readonly connectTimeoutMs: number;
  /** Allow-list rules (`--allow`, `allow:`); empty allows everything. */
  readonly allow: readonly string[];
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
   * Called once the control commands are served, with a way to run them in
   * this process (the Daemon's input line).
   */
  readonly onReady?: (
    command: (name: string, body?: Record<string, unknown>) => Promise<unknown>,
  ) => void;
  readonly signal: AbortSignal;
  readonly forceSignal?: AbortSignal;
  /** Drain time on exit. */
  readonly graceMs?: number;
  /** Most bytes a session holds for the Console (settings `maxHeldBytes`). */
  readonly maxHeldBytes?: number;
}

/**
 * The Console closes idle UDP flows (udpIdleMs); this is the Daemon's own
 * backstop so a forgotten flow can never hold a socket for long.
 */
const DAEMON_UDP_IDLE_MS = 10 * 60_000;

/** Failures that retrying cannot fix. */
const PERMANENT = new Set(["fingerprint", "version", "token", "rejected", "identity", "untrusted"]);

/**
 * Run the Daemon until the session ends for good or `signal` aborts. Throws
 * {@linkcode HandshakeError} when it cannot get (or keep) a session and
 * will not retry.
 *
 * @example
 * ```ts ignore
 * await runDaemon({ settingsPath, console: "office:7470", fingerprint, tokenFile: null, reconnect: true, backoffMaxMs: 15000, connectTimeoutMs: 10000, log, out: console.log, signal });
 * ```
 */
export async function runDaemon(options: DaemonOptions): Promise<void> {
  const { log, out, signal } = options;
  const paths = settingsPaths(options.settingsPath);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  for (const warning of identity.warnings) log.warn(warning);
  const safetyNote = fileSafetyNote();
  if (safetyNote !== null) log.warn(safetyNote);
  const token = options.tokenFile ? await readTokenFile(options.tokenFile) : null;
  const consoleAddr = parseHostPort(options.console);
  const consoleText = formatHostPort(consoleAddr.host, consoleAddr.port);
  const certB64 = identity.certDer.toBase64();
  const facts = whoAmI();
  const allow = AllowList.parse(options.allow);
  out(`Allow-list: the Console may reach ${allow.describe()}`);
  const lookups = new Lookups({ allow, resolve: resolveHost, log });
  const udpFlows = new Set<DaemonFlow>();
  const udpSweep = setInterval(() => {
    const cutoff = Date.now() - DAEMON_UDP_IDLE_MS;
    for (const flow of udpFlows) {
      if (flow.ended) udpFlows.delete(flow);
      else if (flow.lastActive < cutoff) flow.close("idle on the Daemon's side");
    }
  }, 5_000);

  let phase: DaemonPhase = "connecting";
  let session: Session | null = null;
  let sessionSince: Date | null = null;
  let lastError: string | null = null;
  const connections = new Map<number, Omit<DaemonConnection, "bytesIn" | "bytesOut">>();
  let stopRequested = false;
  const wake = new AbortController();

  function status(): DaemonStatus {
    const live = session && session.ended === null ? session : null;
    /** Bytes in (from the target) and out (to it) of one connection or UDP flow. */
    const bytes = (id: number) => {
      const channel = live?.channel(id);
      if (channel instanceof Stream) {
        return { bytesIn: channel.bytesSent, bytesOut: channel.bytesReceived };
      }
      if (channel instanceof DaemonFlow) {
        return { bytesIn: channel.bytesIn, bytesOut: channel.bytesOut };
      }
      return { bytesIn: 0, bytesOut: 0 };
    };
    return {
      session: {
        state: phase === "pending" ? "pending" : phase === "established" ? "established" : "none",
        phase,
        id: live?.id ?? null,
        since: sessionSince?.toISOString() ?? null,
        peer: { address: consoleText, host: null, user: null, fingerprint: options.fingerprint },
        streams: live?.streamCount ?? 0,
        lastError,
      },
      fingerprint: identity.fingerprint,
      console: consoleText,
      settings: options.settingsPath,
      pfos: [],
      connections: [...connections.values()].map((c) => ({ ...c, ...bytes(c.stream) })),
    };
  }

  function requireSession(what: string): Session {
    if (phase !== "established" || !session || session.ended) {
      throw new ControlError(`Cannot ${what}: no session is established (now: ${phase})`, {
        status: 409,
      });
    }
    return session;
  }

  /** One step of the session, told once: a readable line, or a log record. */
  function step(
    text: string,
    level: "info" | "error",
    msg: string,
    fields: LogFields = {},
    logger: Logger = log,
  ): void {
    if (options.steps === "log") logger[level](msg, fields);
    else out(escapeControls(text)); // the text may carry a peer's reason
  }

  const handlers: Record<string, ControlHandler> = {
    status: () => status(),
    chat: (body) => {
      const text = String(body.text ?? "");
      if (text.length === 0 || text.length > MAX_CHAT_CHARS) {
        throw new ControlError(
          `Cannot chat: the message must be 1..${MAX_CHAT_CHARS} characters`,
          { status: 400 },
        );
      }
      requireSession("chat").chat(text);
      return { sent: text };
    },
    "connections/list": () => status().connections,
    "connections/kill": (body) => {
      const id = Number(body.id);
      const channel = session?.ended === null ? session.channel(id) : undefined;
      if (!channel) {
        throw new ControlError(
          `Cannot kill connection ${body.id}: no such connection (see \`connections list\`)`,
          {
            status: 404,
          },
        );
      }
      log.info("connection killed by the Daemon's user", { stream: id });
      if (channel instanceof DaemonFlow) channel.close("killed by the Daemon's user");
      else if (channel instanceof Stream) channel.reset("killed by the Daemon's user");
      return { killed: id };
    },
    close: async () => {
      stopRequested = true;
      const s = session;
      if (s && s.ended === null) {
        await s.close("closed", "the Daemon's user closed the session", { final: true });
      }
      wake.abort();
      return { state: "none" };
    },
  };
  const control = await serveControl({ path: paths.control, log, handlers });
  options.onReady?.(async (name, body) => await handlers[name](body ?? {}));

  function onOpen(s: Session, msg: OpenMessage): void {
    const target = formatHostPort(msg.host, msg.port);
    const slog = log.child({ session: s.id, pfo: msg.pfo, stream: msg.stream });
    const since = new Date();
    const opened = (address: string) => {
      connections.set(msg.stream, {
        stream: msg.stream,
        pfo: msg.pfo,
        proto: msg.proto,
        client: msg.client,
        target,
        address,
        since: since.toISOString(),
      });
      slog.info(msg.proto === "udp" ? "UDP flow opened" : "connection opened", {
        client: msg.client,
        target,
        via: address,
      });
    };
    const closed = (summary: { bytesIn: number; bytesOut: number; reason: string }) => {
      connections.delete(msg.stream);
      slog.info(msg.proto === "udp" ? "UDP flow closed" : "connection closed", {
        client: msg.client,
        target,
        bytesIn: summary.bytesIn,
        bytesOut: summary.bytesOut,
        durationMs: Date.now() - since.getTime(),
        reason: summary.reason === "done" ? undefined : summary.reason,
      });
    };
    // Which check refused a "not-allowed" open: the rules, or Deno's --allow-net on connect.
    let refusedBy: "allow-list" | "permission" = "permission";
    (async () => {
      const decision = await allow.check(msg.host, msg.port, resolveHost);
      if (!decision.allowed) {
        refusedBy = "allow-list";
        throw new OpenError(decision.code, decision.reason);
      }
      // connectHost is the checked address (canonical) or a name the rules allow.
      if (msg.proto === "udp") {
        const [address] = parseIp(decision.connectHost)
          ? [decision.connectHost]
          : await resolveHost(decision.connectHost);
        const flow = await DaemonFlow.connect(
          msg.stream,
          s,
          address,
          msg.port,
          (reason) => closed({ bytesIn: flow.bytesIn, bytesOut: flow.bytesOut, reason }),
        );
        const reached = formatHostPort(address, msg.port);
        if (!s.accept(msg.stream, flow, reached)) return flow.abort("session ended");
        udpFlows.add(flow);
        opened(reached);
        return;
      }
      const { conn, address } = await connectTarget(decision.connectHost, msg.port, {
        timeoutMs: options.connectTimeoutMs,
        label: target,
      });
      const stream = s.acceptStream(msg.stream, conn, address, {
        log: slog,
        onEnd: (summary) =>
          closed({
            bytesIn: summary.bytesSent,
            bytesOut: summary.bytesReceived,
            reason: summary.reason,
          }),
      });
      if (stream) opened(address);
    })().catch((err) => {
      const { code, reason } = err instanceof OpenError
        ? { code: err.code, reason: err.message }
        : classifyError(err, target);
      const what = code !== "not-allowed"
        ? "connection failed"
        : refusedBy === "allow-list"
        ? "connection refused by the allow-list"
        : "connection refused by the Daemon's --allow-net permission";
      slog.warn(what, { client: msg.client, target, code, reason });
      if (s.ended === null) s.send({ tag: Tag.OPEN_ERR, stream: msg.stream, code, reason });
    });
  }

  function onResolve(s: Session, msg: ResolveMessage): void {
    lookups.answer(msg.host, () => s.ended === null).then(
      (addresses) => {
        log.info("resolved for the Console", {
          session: s.id,
          host: msg.host,
          addresses: addresses.join(","),
        });
        if (s.ended === null) {
          s.send({
            tag: Tag.RESOLVE_RESULT,
            id: msg.id,
            addresses: addresses.slice(0, 64),
            error: null,
          });
        }
      },
      (err) => {
        log.info("resolve failed for the Console", {
          session: s.id,
          host: msg.host,
          error: errorMessage(err),
        });
        if (s.ended === null) {
          s.send({ tag: Tag.RESOLVE_RESULT, id: msg.id, addresses: [], error: errorMessage(err) });
        }
      },
    );
  }

  /** One connect → handshake → session run. Returns whether to retry. */
  async function attempt(announce: boolean): Promise<Attempt> {
    phase = "connecting";
    if (announce) {
      step(`Connecting to the Console at ${consoleText}`, "info", "connecting", {
        console: consoleText,
      });
    }
    const link = await connectPinned({
      hostname: consoleAddr.host,
      port: consoleAddr.port,
      fingerprint: options.fingerprint,
      timeoutMs: options.connectTimeoutMs,
      signal,
    });
    const reader = new MessageReader(link);
    const abortLink = () => {
      try {
        link.close();
      } catch {
        // Closed already.
      }
    };
    signal.addEventListener("abort", abortLink, { once: true });
    let id: string;
    try {
      phase = "pending";
      id = await daemonHandshake(link, reader, {
        consoleFingerprint: options.fingerprint,
        cert: certB64,
        sign: (data) => signChallenge(identity, data),
        token,
        ...facts,
        onPending: () =>
          step(
            "Waiting for the Console operator to accept (its fingerprint is verified)",
            "info",
            "waiting for acceptance",
          ),
      });
    } catch (err) {
      signal.removeEventListener("abort", abortLink);
      abortLink();
      throw err;
    }
    if (!SESSION_ID_PATTERN.test(id)) {
      signal.removeEventListener("abort", abortLink);
      abortLink();
      throw new ProtocolError(
        `Cannot start session: the Console's session id "${
          escapeControls(id.slice(0, 16))
        }" is not 8 hex digits`,
      );
    }
    phase = "established";
    lastError = null;
    sessionSince = new Date();
    const slog = log.child({ session: id });
    let ended: SessionEnded | null = null;
    const chat = new ChatView({ label: "console", out, log: slog });
    const s: Session = new Session(link, reader, {
      role: "daemon",
      id,
      log: slog,
      maxHeldBytes: options.maxHeldBytes,
      handlers: {
        onOpen: (msg) => onOpen(s, msg),
        onResolve: (msg) => onResolve(s, msg),
        onChat: (text) => chat.show(text),
        onEnd: (end) => {
          ended = end;
          chat.close();
          connections.clear();
        },
      },
    });
    session = s;
    step(
      `Session established (id ${id}). Every connection made through this Daemon is shown here.`,
      "info",
      "session established",
      { console: consoleText },
      slog,
    );
    // From now on, exit means: drain, then tell the Console; force exit cuts the link.
    signal.removeEventListener("abort", abortLink);
    const exitGracefully = () => void closeSession(s);
    signal.addEventListener("abort", exitGracefully, { once: true });
    options.forceSignal?.addEventListener("abort", abortLink, { once: true });
    s.run();
    await s.done();
    signal.removeEventListener("abort", exitGracefully);
    options.forceSignal?.removeEventListener("abort", abortLink);
    sessionSince = null;
    const end = ended as SessionEnded | null;
    lastError = end?.reason ?? null;
    return { retry: !(end?.final ?? false) && !stopRequested, ended: end, log: slog };
  }

  /** The session ended: one line, with the next try when there is one. */
  function tellEnded(result: Attempt, waitMs: number | null): void {
    const end = result.ended;
    const reason = end?.reason ?? "the session ended";
    step(
      `Session ended: ${reason}${waitMs === null ? "" : `; reconnecting in ${seconds(waitMs)}`}`,
      "info",
      "session ended",
      {
        code: end?.code,
        reason,
        by: end ? (end.remote ? "console" : "daemon") : undefined,
        retryInMs: waitMs ?? undefined,
      },
      result.log,
    );
  }

  // The first retry waits up to 500 ms, or less when the cap is lower.
  const firstDelay = Math.min(500, options.backoffMaxMs);
  let delay = firstDelay;
  const report = new RetryReport();
  let announce = true;
  try {
    while (!signal.aborted && !stopRequested) {
      let result: Attempt | null = null;
      let failure: unknown = null;
      try {
        result = await attempt(announce);
        delay = firstDelay;
        report.reset();
      } catch (err) {
        if (signal.aborted) break;
        failure = err;
      }
      announce = false;
      const retry = (result?.retry ?? true) && options.reconnect && !signal.aborted &&
        !stopRequested;
      const code = failure instanceof HandshakeError ? failure.code : "error";
      const giveUp = failure !== null && (PERMANENT.has(code) || !options.reconnect);
      const wait = retry && !giveUp ? Math.round(delay / 2 + Math.random() * delay / 2) : null;
      if (result) tellEnded(result, wait);
      if (failure !== null) {
        lastError = errorMessage(failure);
        if (giveUp) {
          // The caller reports it (the command line prints it once, as the exit reason).
          if (options.steps === "log") log.error("session failed", { code, reason: lastError });
          throw failure;
        }
        step(report.failed(failure, wait), "error", "session failed", {
          code,
          reason: lastError,
          attempts: report.attempts,
          retryInMs: wait ?? undefined,
        });
      }
      if (wait === null) break;
      phase = "waiting";
      await sleep(wait, [signal, wake.signal]);
      delay = Math.min(delay * 2, options.backoffMaxMs);
    }
  } finally {
    phase = "stopped";
    const s = session as Session | null;
    if (s) await closeSession(s);
    clearInterval(udpSweep);
    for (const flow of udpFlows) flow.abort("the Daemon is exiting");
    await control.close();
  }

  /** Drain open connections for the grace period (unless forced), then close. */
  async function closeSession(s: Session): Promise<void> {
    if (s.ended !== null) return;
    const grace = options.graceMs ?? 5000;
    if (!options.forceSignal?.aborted && s.streamCount > 0) {
      out(`Draining ${s.streamCount} open connection(s) for up to ${grace} ms`);
      const forced = new Promise<void>((r) =>
        options.forceSignal?.addEventListener("abort", () => r(), { once: true })
      );
      await Promise.race([s.drain(grace), forced]);
    }
    await s.close("exit", "the Daemon is exiting");
  }
}

/** How a session ended, as the Daemon tells it. */
interface SessionEnded {
  readonly code: string;
  readonly final: boolean;
  readonly reason: string;
  readonly remote: boolean;
}

/** One established session's run, once it is over. */
interface Attempt {
  readonly retry: boolean;
  readonly ended: SessionEnded | null;
  readonly log: Logger;
}

function whoAmI(): { host: string; user: string; os: string } {
  let host = "unknown";
  try {
    host = Deno.hostname();
  } catch {
    // --allow-sys=hostname not granted.
  }
  let user = "unknown";
  try {
    user = userInfo().username;
  } catch {
    // --allow-sys=uid,gid,userInfo not granted.
  }
  // The Console refuses facts outside the AUTH rules: send what fits.
  return sanitizeDaemonFacts({ host, user, os: Deno.build.os });
}

function sleep(ms: number, signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) return done();
      s.addEventListener("abort", done, { once: true });
    }
  });
}
