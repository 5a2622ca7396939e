/**
 * The Console's PFO listeners: one listener per port (TCP, UDP or SOCKS),
 * opened from the moment the Console runs, whatever the session's state. A
 * TCP connection that arrives while no session is established is accepted
 * and closed at once, and counted; a UDP datagram is dropped and counted. One
 * PFO's failure (a port taken) never stops another, and a range serves every
 * port it could bind.
 *
 * @module
 */

import { closeQuietly, errorMessage, OpenError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import { LogBatcher } from "../core/log_batch.ts";
import { formatHostPort } from "../net/hostport.ts";
import {
  listensClash,
  type PfoSpec,
  type ResolvedPfo,
  resolvePfo,
  targetPortFor,
} from "../settings/pfo.ts";
import { AllowList } from "../net/allowlist.ts";
import type { Stream } from "../core/mux.ts";
import type { Session } from "../core/session.ts";
import { type ConsoleFlow, UdpListener } from "./udp.ts";
import { sendBudget, type UdpCounters, udpCounters, type UdpDrops } from "../core/datagram.ts";
import { reply, socksAccept, SocksError, SocksReply, socksReplyFor } from "./socks.ts";

/** Live state of one PFO. */
export type PfoState = "listening" | "disabled" | "error" | "partial";

/** One PFO as `status` and `pfo list` show it. */
export interface PfoStatus {
  /** The PFO's name, unique on this Console. */
  readonly name: string;
  /** `tcp`, `udp` or `socks`. */
  readonly proto: string;
  /** The listen address as written in the settings (`[HOST:]PORT[-PORT]`). */
  readonly listen: string;
  /** The target as written (`HOST:PORT[-PORT]`); null for a SOCKS5 PFO. */
  readonly target: string | null;
  /** Whether the settings enable it; a disabled PFO does not listen. */
  readonly enabled: boolean;
  /** `listening`, `disabled`, `error` (no port bound) or `partial` (some bound). */
  readonly state: PfoState;
  /**
   * Whether a session is established: without one, connections to a
   * listening PFO are accepted and closed at once.
   */
  readonly session: boolean;
  /** Why some or all of its ports could not be bound; null when all are. */
  readonly error: string | null;
  /** Addresses actually bound (first 16; a port 0 shows the port the system chose). */
  readonly bound: readonly string[];
  /** Sockets listening now (one per port, TCP or UDP). */
  readonly listeners: number;
  /** Connections (TCP, SOCKS) or flows (UDP) open now. */
  readonly connections: number;
  /** Connections forwarded since the Console started. */
  readonly connectionsTotal: number;
  /** Connections closed at once (or datagrams dropped) because no session was established. */
  readonly connectionsRefused: number;
  /** Connections whose target the Daemon could not reach. */
  readonly connectionsFailed: number;
  /** Connections (or datagrams) refused because the client is not in `clients`. */
  readonly connectionsDenied: number;
  /** Allowed client addresses; empty means everyone. */
  readonly clients: readonly string[];
  /** Bytes from the targets to the clients. */
  readonly bytesIn: number;
  /** Bytes from the clients to the targets. */
  readonly bytesOut: number;
  /** UDP PFOs: flows, datagrams each way, drops. */
  readonly udp?: {
    /** Flows (client address and port pairs) open now. */
    readonly flows: number;
    /** Flows opened since the PFO started. */
    readonly flowsTotal: number;
    /** Datagrams from the targets to the clients. */
    readonly datagramsIn: number;
    /** Datagrams from the clients to the targets. */
    readonly datagramsOut: number;
    /** Datagrams dropped: a full queue, a busy session, or a flow over its limit. */
    readonly drops: number;
    /** The same drops, by where (see `UdpDrops`). */
    readonly dropped: Readonly<UdpDrops>;
  };
}

/** One forwarded connection, as `connections list` shows it. */
export interface ConnectionInfo {
  /** The Console's number for it, for `connections kill`. */
  readonly id: number;
  /** The PFO it came in on. */
  readonly pfo: string;
  /** `tcp`, `udp` or `socks`. */
  readonly proto: string;
  /** The client's `host:port`. */
  readonly client: string;
  /** The target's `host:port`; null until known (a SOCKS5 request not yet read). */
  readonly target: string | null;
  /** ISO 8601: when the client connected. */
  readonly since: string;
  /** The session stream that carries it; null before the Daemon is asked to open one. */
  readonly stream: number | null;
  /** Bytes from the client to the target. */
  readonly bytesOut: number;
  /** Bytes from the target to the client. */
  readonly bytesIn: number;
  /** UDP flows only: datagrams of this flow dropped, either way. */
  readonly drops?: number;
}

interface ConnectionRecord {
  readonly id: number;
  readonly pfo: string;
  readonly proto: string;
  readonly client: string;
  target: string | null;
  readonly since: Date;
  readonly conn: Deno.Conn;
  stream: Stream | null;
}

interface PfoRuntime {
  pfo: ResolvedPfo;
  tcp: Map<number, Deno.Listener>;
  udp: Map<number, UdpListener>;
  errors: Map<number, string>;
  open: Map<Deno.Conn, ConnectionRecord>;
  /** Allowed client addresses; null lets everyone in. */
  clients: AllowList | null;
  connectionsTotal: number;
  connectionsRefused: number;
  connectionsFailed: number;
  /** Connections refused because the client is not in the PFO's clients list. */
  connectionsDenied: number;
  bytesIn: number;
  bytesOut: number;
  udpCounters: UdpCounters;
  /** Bumped on every (re)start, so late async binds of an old start close themselves. */
  generation: number;
}

/** Options for {@linkcode PfoManager}. */
export interface PfoManagerOptions {
  readonly log: Logger;
  /** The established session, or null. */
  readonly session: () => Session | null;
  /** Idle time after which a UDP flow closes. */
  readonly udpIdleMs: () => number;
  /** Credentials SOCKS PFOs require, or null. */
  readonly socksAuth: () => { readonly username: string; readonly password: string } | null;
  /** Told when a forwarded connection opens (its stream runs) and when it closes. */
  readonly onConnection?: (change: "opened" | "closed", connection: ConnectionInfo) => void;
}

/**
 * A TCP PFO's bytes: those of its closed connections plus what its open ones
 * have carried so far, so counters and rates move while a transfer runs.
 */
function tcpBytes(rt: PfoRuntime): { bytesIn: number; bytesOut: number } {
  let bytesIn = rt.bytesIn;
  let bytesOut = rt.bytesOut;
  for (const record of rt.open.values()) {
    if (!record.stream) continue;
    bytesIn += record.stream.bytesReceived;
    bytesOut += record.stream.bytesSent;
  }
  return { bytesIn, bytesOut };
}

/** A PFO's running totals, cheap to read for every PFO at once (rates). */
export interface PfoCounters {
  readonly name: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly connectionsTotal: number;
}

/** PFOs {@linkcode PfoManager.apply} starts at once. */
const APPLY_BATCH = 256;

/** How long a SOCKS client has to send its request. */
const SOCKS_HANDSHAKE_MS = 10_000;

/**
 * Holds every PFO's listeners and counters.
 *
 * @example
 * ```ts ignore
 * const pfos = new PfoManager({ log, session: () => current, udpIdleMs: () => 60_000, socksAuth: () => null });
 * await pfos.apply(settings.pfos);
 * ```
 */
export class PfoManager {
  #log: Logger;
  #options: PfoManagerOptions;
  #pfos = new Map<string, PfoRuntime>();
  #connections = new Map<number, ConnectionRecord>();
  #nextConnection = 1;
  /** Per-connection info records, summarised per PFO in bursts. */
  readonly #batch = new LogBatcher();
  /** The bytes all UDP PFOs may queue toward their clients together. */
  readonly #udpBudget = sendBudget();

  constructor(options: PfoManagerOptions) {
    this.#log = options.log;
    this.#options = options;
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
  async apply(specs: readonly (PfoSpec | ResolvedPfo)[]): Promise<void> {
    const wanted = new Map(specs.map((s) => [s.name, "listenAddr" in s ? s : resolvePfo(s)]));
    for (const name of [...this.#pfos.keys()]) {
      if (!wanted.has(name)) this.remove(name);
    }
    // Diff by name and value: only what changed is touched, so 10,000 PFOs and one edit cost one set().
    // In batches: what one start holds while it binds dies young instead of growing the heap.
    const changed: Promise<PfoStatus>[] = [];
    for (const [name, pfo] of wanted) {
      const rt = this.#pfos.get(name);
      if (rt !== undefined && samePfo(rt.pfo, pfo)) rt.pfo = pfo;
      else changed.push(this.set(name, pfo));
      if (changed.length >= APPLY_BATCH) await Promise.all(changed.splice(0));
    }
    await Promise.all(changed);
  }

  /** Create or replace one PFO. Resolves with its status (state "error" if no port could be bound). */
  async set(name: string, pfo: ResolvedPfo): Promise<PfoStatus> {
    const old = this.#pfos.get(name);
    if (old && sameListen(old.pfo, pfo) && old.pfo.enabled === pfo.enabled) {
      old.pfo = pfo; // a target or clients change applies to the next connection
      old.clients = pfo.clients.length > 0 ? AllowList.parse(pfo.clients) : null;
      return this.status(name)!;
    }
    if (old) this.#close(old);
    const rt: PfoRuntime = old ?? newRuntime(pfo);
    rt.pfo = pfo;
    rt.clients = pfo.clients.length > 0 ? AllowList.parse(pfo.clients) : null;
    rt.errors = new Map();
    rt.generation++;
    this.#pfos.set(name, rt);
    if (pfo.enabled) await this.#listen(rt);
    return this.status(name)!;
  }

  /**
   * Change one PFO all or nothing (`pfo add`, `edit`, `enable`): bind every
   * port the new `pfo` needs while the old listeners keep serving, then run
   * `save`, then serve on the new ports and close the old ones. When a port
   * cannot be bound (a {@linkcode PfoBindError}) or `save` throws, the new
   * ports are closed, the old ones serve on, and the error is thrown.
   * Changes that bind nothing new just `save` and apply.
   */
  async change(pfo: ResolvedPfo, save: () => Promise<void>): Promise<PfoStatus> {
    const name = pfo.name;
    const old = this.#pfos.get(name);
    if (!pfo.enabled || (old?.pfo.enabled && sameListen(old.pfo, pfo))) {
      await save();
      return await this.set(name, pfo);
    }
    const rt = old ?? newRuntime(pfo);
    // Ports the old listeners hold and the new ones need: let them go first, take them back on failure.
    const overlapping = old !== undefined && listensClash(old.pfo, pfo);
    if (overlapping) this.#close(old);
    const bound = await this.#bind(rt, pfo);
    const undo = async () => {
      releaseBound(bound);
      if (overlapping) {
        old.generation++;
        old.errors = new Map();
        await this.#listen(old);
      }
    };
    if (bound.errors.size > 0) {
      await undo();
      throw new PfoBindError(describeErrors(bound.errors, pfo.listenAddr.host)!);
    }
    try {
      await save();
    } catch (err) {
      await undo();
      throw err;
    }
    if (old && !overlapping) this.#close(old);
    rt.pfo = pfo;
    rt.clients = pfo.clients.length > 0 ? AllowList.parse(pfo.clients) : null;
    rt.generation++;
    this.#pfos.set(name, rt);
    this.#install(rt, bound);
    return this.status(name)!;
  }

  /** Stop and forget one PFO. Its open connections are closed. */
  remove(name: string): boolean {
    const rt = this.#pfos.get(name);
    if (!rt) return false;
    this.#close(rt);
    for (const conn of [...rt.open.keys()]) {
      closeQuietly(conn);
      this.#untrack(rt, conn);
    }
    this.#pfos.delete(name);
    this.#log.info("PFO removed", { pfo: name });
    return true;
  }

  /** Close every listener (on exit). */
  closeAll(): void {
    for (const rt of this.#pfos.values()) this.#close(rt);
    this.#batch.flush();
  }

  /** Status of one PFO. */
  status(name: string): PfoStatus | undefined {
    const rt = this.#pfos.get(name);
    if (!rt) return undefined;
    const { pfo } = rt;
    const size = pfo.listenAddr.portEnd - pfo.listenAddr.port + 1;
    let state: PfoState = "listening";
    if (!pfo.enabled) state = "disabled";
    else if (rt.errors.size === size) state = "error";
    else if (rt.errors.size > 0) state = "partial";
    const bound: string[] = [];
    for (const l of rt.tcp.values()) {
      if (bound.length >= 16) break;
      const a = l.addr as Deno.NetAddr;
      bound.push(formatHostPort(a.hostname, a.port));
    }
    for (const l of rt.udp.values()) {
      if (bound.length >= 16) break;
      bound.push(formatHostPort(l.address.hostname, l.address.port));
    }
    const u = rt.udpCounters;
    const isUdp = pfo.proto === "udp";
    return {
      name,
      proto: pfo.proto,
      listen: pfo.listen,
      target: pfo.target,
      enabled: pfo.enabled,
      state,
      session: this.#options.session() !== null,
      error: describeErrors(rt.errors, rt.pfo.listenAddr.host),
      bound,
      listeners: rt.tcp.size + rt.udp.size,
      connections: isUdp ? u.flows : rt.open.size,
      connectionsTotal: isUdp ? u.flowsTotal : rt.connectionsTotal,
      connectionsRefused: isUdp ? u.refused : rt.connectionsRefused,
      connectionsFailed: rt.connectionsFailed,
      connectionsDenied: rt.connectionsDenied + rt.udpCounters.denied,
      clients: rt.pfo.clients,
      ...(isUdp ? { bytesIn: u.bytesIn, bytesOut: u.bytesOut } : tcpBytes(rt)),
      ...(isUdp
        ? {
          udp: {
            flows: u.flows,
            flowsTotal: u.flowsTotal,
            datagramsIn: u.datagramsIn,
            datagramsOut: u.datagramsOut,
            drops: u.drops,
            dropped: { ...u.dropped },
          },
        }
        : {}),
    };
  }

  /** Every PFO's totals, without building its whole status. */
  counters(): PfoCounters[] {
    return [...this.#pfos.values()].map((rt) => {
      const u = rt.udpCounters;
      const udp = rt.pfo.proto === "udp";
      return {
        name: rt.pfo.name,
        ...(udp ? { bytesIn: u.bytesIn, bytesOut: u.bytesOut } : tcpBytes(rt)),
        connectionsTotal: udp ? u.flowsTotal : rt.connectionsTotal,
      };
    });
  }

  /** Status of every PFO. */
  list(): PfoStatus[] {
    return this.names().map((n) => this.status(n)!);
  }

  async #listen(rt: PfoRuntime): Promise<void> {
    const generation = rt.generation;
    const bound = await this.#bind(rt, rt.pfo);
    // Replaced or removed while UDP ports were being bound: this start is stale.
    if (rt.generation !== generation || this.#pfos.get(rt.pfo.name) !== rt) {
      return releaseBound(bound);
    }
    this.#install(rt, bound);
  }

  /** Bind every port of `pfo`'s listen range; nothing accepts yet. */
  async #bind(rt: PfoRuntime, pfo: ResolvedPfo): Promise<Bound> {
    const { listenAddr, proto } = pfo;
    const bound: Bound = { tcp: new Map(), udp: new Map(), errors: new Map() };
    const binds: Promise<void>[] = [];
    const log = proto === "udp" ? this.#log.child({ pfo: pfo.name }) : this.#log;
    for (let port = listenAddr.port; port <= listenAddr.portEnd; port++) {
      if (proto === "udp") {
        binds.push(
          this.#bindUdp(rt, pfo, port, log).then(
            (listener) => void bound.udp.set(port, listener),
            (err) => void bound.errors.set(port, bindError(err)),
          ),
        );
        continue;
      }
      try {
        bound.tcp.set(port, Deno.listen({ hostname: listenAddr.host, port, transport: "tcp" }));
      } catch (err) {
        bound.errors.set(port, bindError(err));
      }
    }
    await Promise.all(binds);
    return bound;
  }

  /**
   * Serve on what {@linkcode #bind} bound, and say so. Cheap per PFO (no
   * status, no child logger): a start-up installs thousands at once.
   */
  #install(rt: PfoRuntime, bound: Bound): void {
    rt.tcp = bound.tcp;
    rt.udp = bound.udp;
    rt.errors = bound.errors;
    for (const [port, listener] of rt.tcp) this.#acceptLoop(rt, listener, port);
    const count = rt.tcp.size + rt.udp.size;
    const name = rt.pfo.name;
    if (count > 0) {
      this.#log.info("PFO listening", {
        pfo: name,
        proto: rt.pfo.proto,
        listen: count === 1 ? firstBound(rt) : rt.pfo.listen,
        target: rt.pfo.target ?? "(per connection, SOCKS5)",
        ports: count > 1 ? count : undefined,
      });
    }
    if (rt.errors.size > 0) {
      this.#log.error("PFO ports failed", {
        pfo: name,
        listen: rt.pfo.listen,
        error: describeErrors(rt.errors, rt.pfo.listenAddr.host),
      });
    }
  }

  #bindUdp(rt: PfoRuntime, pfo: ResolvedPfo, port: number, log: Logger): Promise<UdpListener> {
    return UdpListener.bind({
      host: pfo.listenAddr.host,
      port,
      targetHost: pfo.targetAddr!.host,
      targetPort: targetPortFor(pfo, port),
      pfo: pfo.name,
      log,
      session: this.#options.session,
      counters: rt.udpCounters,
      idleMs: this.#options.udpIdleMs,
      allowClient: (address) => rt.clients === null || rt.clients.allowsAddress(address),
      batch: this.#batch,
      budget: this.#udpBudget,
    });
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
      if (rt.tcp.get(port) !== listener) {
        closeQuietly(conn);
        return;
      }
      this.#handle(rt, conn, port);
    }
  }

  #handle(rt: PfoRuntime, conn: Deno.Conn, port: number): void {
    const session = this.#options.session();
    const remote = conn.remoteAddr as Deno.NetAddr;
    const client = formatHostPort(remote.hostname, remote.port);
    const log = this.#log.child({ pfo: rt.pfo.name });
    if (rt.clients && !rt.clients.allowsAddress(remote.hostname)) {
      rt.connectionsDenied++;
      closeQuietly(conn);
      log.warn("connection refused: client not in the PFO's clients list", { client });
      return;
    }
    if (!session) {
      rt.connectionsRefused++;
      closeQuietly(conn);
      this.#batch.info({
        key: rt.pfo.name,
        kind: "refused",
        log,
        summaryLog: log,
        msg: "connection closed: no established session",
        fields: { client },
      });
      return;
    }
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // Not a TCP socket; nothing to tune.
    }
    const record: ConnectionRecord = {
      id: this.#nextConnection++,
      pfo: rt.pfo.name,
      proto: rt.pfo.proto,
      client,
      target: null,
      since: new Date(),
      conn,
      stream: null,
    };
    rt.open.set(conn, record);
    this.#connections.set(record.id, record);
    if (rt.pfo.proto === "socks") {
      this.#socks(rt, conn, session, client, log);
      return;
    }
    const target = rt.pfo.targetAddr!;
    this.#forward(
      rt,
      conn,
      session,
      { host: target.host, port: targetPortFor(rt.pfo, port) },
      client,
      log,
    );
  }

  async #socks(
    rt: PfoRuntime,
    conn: Deno.Conn,
    session: Session,
    client: string,
    log: Logger,
  ): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      timer = setTimeout(() => closeQuietly(conn), SOCKS_HANDSHAKE_MS);
      const request = await socksAccept(conn, this.#options.socksAuth());
      clearTimeout(timer);
      if (request.early.length > 0) {
        await reply(conn, SocksReply.GENERAL_FAILURE);
        throw new SocksError("the client sent data before the SOCKS reply");
      }
      this.#forward(rt, conn, session, request, client, log, true);
    } catch (err) {
      clearTimeout(timer);
      this.#untrack(rt, conn);
      rt.connectionsFailed++;
      closeQuietly(conn);
      log.warn("SOCKS request refused", { client, reason: errorMessage(err) });
    }
  }

  #forward(
    rt: PfoRuntime,
    conn: Deno.Conn,
    session: Session,
    target: { host: string; port: number },
    client: string,
    log: Logger,
    socks = false,
  ): void {
    const targetText = formatHostPort(target.host, target.port);
    const record = rt.open.get(conn);
    if (record) record.target = targetText;
    rt.connectionsTotal++;
    const started = Date.now();
    session.openStream(conn, { host: target.host, port: target.port, pfo: rt.pfo.name, client }, {
      log,
      // A SOCKS client may send only after our reply; anyone else may speak first.
      early: !socks,
      onEnd: (s) => {
        this.#untrack(rt, conn);
        rt.bytesOut += s.bytesSent;
        rt.bytesIn += s.bytesReceived;
        if (record?.stream) this.#options.onConnection?.("closed", connectionInfo(record));
        this.#batch.info({
          key: rt.pfo.name,
          kind: "closed",
          log,
          summaryLog: log,
          msg: "connection closed",
          fields: {
            stream: s.id,
            client,
            target: targetText,
            bytesOut: s.bytesSent,
            bytesIn: s.bytesReceived,
            durationMs: s.durationMs,
            reason: s.reason === "done" ? undefined : s.reason,
          },
          sums: { bytesOut: s.bytesSent, bytesIn: s.bytesReceived },
        });
      },
    }).then(
      async ({ stream, address }) => {
        // Sent early, and its client left before the Daemon answered: already logged.
        if (stream.ended) return;
        if (socks) {
          try {
            await reply(conn, SocksReply.SUCCEEDED, address);
          } catch (err) {
            stream.reset(`SOCKS reply failed: ${errorMessage(err)}`);
            return;
          }
        }
        if (record) record.stream = stream;
        stream.start();
        if (record) this.#options.onConnection?.("opened", connectionInfo(record));
        this.#batch.info({
          key: rt.pfo.name,
          kind: "opened",
          log,
          summaryLog: log,
          msg: "connection opened",
          fields: { stream: stream.id, client, target: targetText, via: address },
        });
      },
      async (err) => {
        const code = err instanceof OpenError ? err.code : "error";
        if (socks) await reply(conn, socksReplyFor(code)).catch(() => {});
        this.#untrack(rt, conn);
        rt.connectionsFailed++;
        closeQuietly(conn);
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

  #untrack(rt: PfoRuntime, conn: Deno.Conn): void {
    const record = rt.open.get(conn);
    rt.open.delete(conn);
    if (record) this.#connections.delete(record.id);
  }

  /**
   * Every forwarded connection and UDP flow open now. The id is the stream
   * id, the one the Daemon shows for the same connection.
   */
  connections(): ConnectionInfo[] {
    const tcp = [...this.#connections.values()].filter((r) => r.stream !== null).map(
      connectionInfo,
    );
    const udp = this.#udpFlows().map((f) => ({
      id: f.id,
      pfo: f.pfo,
      proto: "udp",
      client: f.key,
      target: f.target,
      since: f.since.toISOString(),
      stream: f.id,
      bytesOut: f.bytesOut,
      bytesIn: f.bytesIn,
      drops: f.drops,
    }));
    return [...tcp, ...udp].sort((a, b) => a.id - b.id);
  }

  #udpFlows(): ConsoleFlow[] {
    return [...this.#pfos.values()].flatMap((rt) => [...rt.udp.values()].flatMap((l) => l.flows()));
  }

  /** Cut one connection. Returns false when no connection has that id. */
  kill(id: number): boolean {
    const flow = this.#udpFlows().find((f) => f.id === id);
    if (flow) {
      this.#log.info("UDP flow killed by the operator", { pfo: flow.pfo, client: flow.key, id });
      flow.close("killed by the Console operator");
      return true;
    }
    const record = [...this.#connections.values()].find((r) => r.stream?.id === id);
    if (!record) return false;
    this.#log.info("connection killed by the operator", {
      pfo: record.pfo,
      client: record.client,
      id,
    });
    if (record.stream) record.stream.reset("killed by the Console operator");
    else closeQuietly(record.conn);
    return true;
  }

  #close(rt: PfoRuntime): void {
    for (const listener of rt.tcp.values()) closeQuietly(listener);
    for (const listener of rt.udp.values()) listener.close();
    rt.tcp.clear();
    rt.udp.clear();
  }
}

/** A connection whose stream runs, as `connections list` shows it. */
function connectionInfo(r: ConnectionRecord): ConnectionInfo {
  return {
    id: r.stream!.id,
    pfo: r.pfo,
    proto: r.proto,
    client: r.client,
    target: r.target,
    since: r.since.toISOString(),
    stream: r.stream!.id,
    bytesOut: r.stream!.bytesSent,
    bytesIn: r.stream!.bytesReceived,
  };
}

/** Listeners bound for a PFO, before they serve. */
interface Bound {
  tcp: Map<number, Deno.Listener>;
  udp: Map<number, UdpListener>;
  errors: Map<number, string>;
}

/** The address of a PFO's first listener, as `status().bound[0]` shows it. */
function firstBound(rt: PfoRuntime): string | undefined {
  for (const l of rt.tcp.values()) {
    const a = l.addr as Deno.NetAddr;
    return formatHostPort(a.hostname, a.port);
  }
  for (const l of rt.udp.values()) return formatHostPort(l.address.hostname, l.address.port);
  return undefined;
}

function releaseBound(bound: Bound): void {
  for (const listener of bound.tcp.values()) closeQuietly(listener);
  for (const listener of bound.udp.values()) listener.close();
}

function newRuntime(pfo: ResolvedPfo): PfoRuntime {
  return {
    pfo,
    tcp: new Map(),
    udp: new Map(),
    errors: new Map(),
    open: new Map(),
    clients: null,
    connectionsTotal: 0,
    connectionsRefused: 0,
    connectionsFailed: 0,
    connectionsDenied: 0,
    bytesIn: 0,
    bytesOut: 0,
    udpCounters: udpCounters(),
    generation: 0,
  };
}

/**
 * A PFO change was refused because some of its ports could not be bound;
 * the message says which and why. Nothing changed.
 *
 * @example
 * ```ts
 * import { PfoBindError } from "./pfos.ts";
 * const err = new PfoBindError("cannot listen on 127.0.0.1 port 80: address already in use");
 * if (err.name !== "PfoBindError") throw err;
 * ```
 */
export class PfoBindError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PfoBindError";
  }
}

function bindError(err: unknown): string {
  const code = (err as { code?: string }).code;
  if (err instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") {
    return "address already in use";
  }
  if (err instanceof Deno.errors.NotCapable) return `${errorMessage(err)} (run with --allow-net)`;
  if (err instanceof Deno.errors.PermissionDenied || code === "EACCES") {
    return "permission denied (ports below 1024 need privileges)";
  }
  if (err instanceof Deno.errors.AddrNotAvailable || code === "EADDRNOTAVAIL") {
    return "address not available on this machine";
  }
  return errorMessage(err);
}

/**
 * Port failures grouped by reason, with runs of ports as ranges:
 * "cannot listen on 127.0.0.1 ports 20001, 20005-20007: address already in use".
 *
 * @example
 * ```ts
 * import { describeErrors } from "./pfos.ts";
 * const e = new Map([[5, "in use"], [6, "in use"], [7, "in use"], [9, "in use"]]);
 * const text = describeErrors(e, "127.0.0.1");
 * if (text !== "cannot listen on 127.0.0.1 ports 5-7, 9: in use") throw new Error(text!);
 * ```
 */
export function describeErrors(errors: ReadonlyMap<number, string>, host: string): string | null {
  if (errors.size === 0) return null;
  const byReason = new Map<string, number[]>();
  for (const [port, reason] of errors) {
    byReason.set(reason, [...(byReason.get(reason) ?? []), port]);
  }
  const where = host.includes(":") ? `[${host}]` : host;
  const parts: string[] = [];
  for (const [reason, ports] of byReason) {
    ports.sort((a, b) => a - b);
    const runs: string[] = [];
    for (let i = 0; i < ports.length;) {
      let j = i;
      while (j + 1 < ports.length && ports[j + 1] === ports[j] + 1) j++;
      runs.push(i === j ? `${ports[i]}` : `${ports[i]}-${ports[j]}`);
      i = j + 1;
    }
    parts.push(
      `cannot listen on ${where} port${ports.length > 1 ? "s" : ""} ${runs.join(", ")}: ${reason}`,
    );
  }
  return parts.join("; ");
}

function sameListen(a: ResolvedPfo, b: ResolvedPfo): boolean {
  return a.listenAddr.host === b.listenAddr.host && a.listenAddr.port === b.listenAddr.port &&
    a.listenAddr.portEnd === b.listenAddr.portEnd && a.proto === b.proto;
}

/** Whether two PFOs of one name mean the same: same protocol, addresses, state and clients. */
export function samePfo(a: ResolvedPfo, b: ResolvedPfo): boolean {
  return a === b || (a.proto === b.proto && a.listen === b.listen && a.target === b.target &&
    a.enabled === b.enabled && a.clients.length === b.clients.length &&
    a.clients.every((c, i) => c === b.clients[i]));
}
