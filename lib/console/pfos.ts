/**
 * The Console's PFO listeners: one Deno listener per port, opened from the
 * moment the Console runs, whatever the session's state. A connection that
 * arrives while no session is established is accepted and closed at once,
 * and counted. One PFO's failure (a port taken) never stops another.
 *
 * @module
 */

import { errorMessage, OpenError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  formatHostPort,
  type PfoSpec,
  type ResolvedPfo,
  resolvePfo,
  targetPortFor,
} from "../pfo.ts";
import type { Session } from "../session.ts";

/** Live state of one PFO. */
export type PfoState = "listening" | "disabled" | "error" | "partial";

/** One PFO as `status` and `pfo list` show it. */
export interface PfoStatus {
  readonly name: string;
  readonly proto: string;
  readonly listen: string;
  readonly target: string | null;
  readonly enabled: boolean;
  readonly state: PfoState;
  readonly error: string | null;
  /** Addresses actually bound (a port 0 shows the port the system chose). */
  readonly bound: readonly string[];
  readonly listeners: number;
  /** Connections open now. */
  readonly connections: number;
  /** Connections forwarded since the Console started. */
  readonly connectionsTotal: number;
  /** Connections closed at once because no session was established. */
  readonly connectionsRefused: number;
  /** Connections whose target the Daemon could not reach. */
  readonly connectionsFailed: number;
  /** Bytes from the targets to the clients. */
  readonly bytesIn: number;
  /** Bytes from the clients to the targets. */
  readonly bytesOut: number;
}

interface PfoRuntime {
  pfo: ResolvedPfo;
  listeners: Map<number, Deno.Listener>;
  errors: Map<number, string>;
  open: Set<Deno.Conn>;
  connectionsTotal: number;
  connectionsRefused: number;
  connectionsFailed: number;
  bytesIn: number;
  bytesOut: number;
}

/** Options for {@linkcode PfoManager}. */
export interface PfoManagerOptions {
  readonly log: Logger;
  /** The established session, or null. */
  readonly session: () => Session | null;
}

/**
 * Holds every PFO's listeners and counters.
 *
 * @example
 * ```ts ignore
 * const pfos = new PfoManager({ log, session: () => current });
 * await pfos.apply(settings.pfos);
 * ```
 */
export class PfoManager {
  #log: Logger;
  #session: () => Session | null;
  #pfos = new Map<string, PfoRuntime>();

  constructor(options: PfoManagerOptions) {
    this.#log = options.log;
    this.#session = options.session;
  }

  /** Names of every PFO, in order of creation. */
  names(): string[] {
    return [...this.#pfos.keys()];
  }

  /** Whether a PFO of that name exists. */
  has(name: string): boolean {
    return this.#pfos.has(name);
  }

  /**
   * Make the running PFOs match `specs`: open what is new or changed, close
   * what is gone. Counters survive edits that keep the name.
   */
  apply(specs: readonly PfoSpec[]): void {
    const wanted = new Map(specs.map((s) => [s.name, resolvePfo(s)]));
    for (const name of [...this.#pfos.keys()]) {
      if (!wanted.has(name)) this.remove(name);
    }
    for (const [name, pfo] of wanted) this.set(name, pfo);
  }

  /** Create or replace one PFO. Returns its status (state "error" if a port could not be bound). */
  set(name: string, pfo: ResolvedPfo): PfoStatus {
    const old = this.#pfos.get(name);
    if (old && sameListen(old.pfo, pfo) && old.pfo.enabled === pfo.enabled) {
      old.pfo = pfo; // a target change applies to the next connection
      return this.status(name)!;
    }
    if (old) this.#close(old);
    const rt: PfoRuntime = old ?? {
      pfo,
      listeners: new Map(),
      errors: new Map(),
      open: new Set(),
      connectionsTotal: 0,
      connectionsRefused: 0,
      connectionsFailed: 0,
      bytesIn: 0,
      bytesOut: 0,
    };
    rt.pfo = pfo;
    rt.errors = new Map();
    rt.listeners = new Map();
    this.#pfos.set(name, rt);
    if (pfo.enabled) this.#listen(rt);
    return this.status(name)!;
  }

  /** Stop and forget one PFO. Its open connections are closed. */
  remove(name: string): boolean {
    const rt = this.#pfos.get(name);
    if (!rt) return false;
    this.#close(rt);
    for (const conn of rt.open) closeQuietly(conn);
    this.#pfos.delete(name);
    this.#log.info("PFO removed", { pfo: name });
    return true;
  }

  /** Close every listener (on exit). */
  closeAll(): void {
    for (const rt of this.#pfos.values()) this.#close(rt);
  }

  /** Status of one PFO. */
  status(name: string): PfoStatus | undefined {
    const rt = this.#pfos.get(name);
    if (!rt) return undefined;
    const { pfo } = rt;
    const size = pfo.listenAddr.portEnd - pfo.listenAddr.port + 1;
    const errors = [...rt.errors.entries()];
    let state: PfoState = "listening";
    if (!pfo.enabled) state = "disabled";
    else if (errors.length === size) state = "error";
    else if (errors.length > 0) state = "partial";
    const error = errors.length === 0
      ? null
      : errors.length === 1
      ? errors[0][1]
      : `${errors.length} ports failed: ` +
        errors.slice(0, 10).map(([p, e]) => `${p}: ${e}`).join("; ") +
        (errors.length > 10 ? "; …" : "");
    return {
      name,
      proto: pfo.proto,
      listen: pfo.listen,
      target: pfo.target,
      enabled: pfo.enabled,
      state,
      error,
      bound: [...rt.listeners.values()].slice(0, 16).map((l) => {
        const a = l.addr as Deno.NetAddr;
        return formatHostPort(a.hostname, a.port);
      }),
      listeners: rt.listeners.size,
      connections: rt.open.size,
      connectionsTotal: rt.connectionsTotal,
      connectionsRefused: rt.connectionsRefused,
      connectionsFailed: rt.connectionsFailed,
      bytesIn: rt.bytesIn,
      bytesOut: rt.bytesOut,
    };
  }

  /** Status of every PFO. */
  list(): PfoStatus[] {
    return this.names().map((n) => this.status(n)!);
  }

  #listen(rt: PfoRuntime): void {
    const { listenAddr } = rt.pfo;
    for (let port = listenAddr.port; port <= listenAddr.portEnd; port++) {
      try {
        const listener = Deno.listen({ hostname: listenAddr.host, port, transport: "tcp" });
        rt.listeners.set(port, listener);
        this.#acceptLoop(rt, listener, port);
      } catch (err) {
        const reason = err instanceof Deno.errors.AddrInUse
          ? "address already in use"
          : err instanceof Deno.errors.NotCapable
          ? `${errorMessage(err)} (run with --allow-net)`
          : errorMessage(err);
        rt.errors.set(port, `Cannot listen on ${formatHostPort(listenAddr.host, port)}: ${reason}`);
      }
    }
    const log = this.#log.child({ pfo: rt.pfo.name });
    if (rt.listeners.size > 0) {
      const first = rt.listeners.values().next().value!.addr as Deno.NetAddr;
      log.info("PFO listening", {
        listen: rt.listeners.size === 1
          ? formatHostPort(first.hostname, first.port)
          : rt.pfo.listen,
        target: rt.pfo.target,
        ports: rt.listeners.size > 1 ? rt.listeners.size : undefined,
      });
    }
    for (const message of [...rt.errors.values()].slice(0, 20)) {
      log.error("PFO port failed", { error: message });
    }
  }

  async #acceptLoop(rt: PfoRuntime, listener: Deno.Listener, port: number): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
          return;
        }
        // EMFILE and friends: log, back off a little, keep serving.
        this.#log.warn("accept failed", { pfo: rt.pfo.name, error: errorMessage(err) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (rt.listeners.get(port) !== listener) {
        closeQuietly(conn);
        return;
      }
      this.#handle(rt, conn, port);
    }
  }

  #handle(rt: PfoRuntime, conn: Deno.Conn, port: number): void {
    const session = this.#session();
    const remote = conn.remoteAddr as Deno.NetAddr;
    const client = formatHostPort(remote.hostname, remote.port);
    const log = this.#log.child({ pfo: rt.pfo.name });
    if (!session) {
      rt.connectionsRefused++;
      closeQuietly(conn);
      log.info("connection closed: no established session", { client });
      return;
    }
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // Not a TCP socket; nothing to tune.
    }
    const target = rt.pfo.targetAddr!;
    const targetPort = targetPortFor(rt.pfo, port);
    const targetText = formatHostPort(target.host, targetPort);
    rt.open.add(conn);
    rt.connectionsTotal++;
    const started = Date.now();
    session.openStream(conn, { host: target.host, port: targetPort, pfo: rt.pfo.name, client }, {
      log,
      onEnd: (s) => {
        rt.open.delete(conn);
        rt.bytesOut += s.bytesSent;
        rt.bytesIn += s.bytesReceived;
        log.info("connection closed", {
          stream: s.id,
          client,
          target: targetText,
          bytesOut: s.bytesSent,
          bytesIn: s.bytesReceived,
          durationMs: s.durationMs,
          reason: s.reason === "done" ? undefined : s.reason,
        });
      },
    }).then(
      ({ stream, address }) => {
        stream.start();
        log.info("connection opened", {
          stream: stream.id,
          client,
          target: targetText,
          via: address,
        });
      },
      (err) => {
        rt.open.delete(conn);
        rt.connectionsFailed++;
        closeQuietly(conn);
        const code = err instanceof OpenError ? err.code : "error";
        log.warn("connection failed: the Daemon could not reach the target", {
          client,
          target: targetText,
          code,
          reason: errorMessage(err),
          ms: Date.now() - started,
        });
      },
    );
  }

  #close(rt: PfoRuntime): void {
    for (const listener of rt.listeners.values()) closeQuietly(listener);
    rt.listeners.clear();
  }
}

function sameListen(a: ResolvedPfo, b: ResolvedPfo): boolean {
  return a.listenAddr.host === b.listenAddr.host && a.listenAddr.port === b.listenAddr.port &&
    a.listenAddr.portEnd === b.listenAddr.portEnd && a.proto === b.proto;
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}
