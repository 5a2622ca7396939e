/**
 * UDP over a session. Each client address on the Console's side is a *flow*:
 * one stream id on the session and, on the Daemon's side, one socket toward
 * the target, so replies go back to the right client. Datagrams travel whole
 * (up to 65,507 bytes), in order; when a queue is full they are dropped and
 * counted, as a router would, and never hold up the session.
 *
 * Sockets are `Deno.listenDatagram` (hence `--unstable-net`): its receive is
 * a loop we drive, so when the session is backed up we simply stop
 * receiving and the kernel drops the excess for free. (`node:dgram` pushes
 * every datagram at us; measured here, it received 8,632 of 200,000 where
 * `Deno.listenDatagram` received 196,070, and its cost starved TCP streams.)
 * Sends are serialized per socket: unawaited sends were seen to leave out of
 * order.
 *
 * @module
 */

import { errorMessage } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { Channel } from "./mux.ts";
import { formatHostPort } from "./pfo.ts";
import { MAX_DATAGRAM_BYTES, MAX_UDP_FLOWS_PER_PFO, Tag } from "./protocol.ts";
import type { Session } from "./session.ts";

/** Datagrams queued per socket before new ones are dropped. */
const SEND_QUEUE_DATAGRAMS = 256;
/** Datagrams a flow holds while its open is in flight. */
const OPENING_QUEUE_DATAGRAMS = 64;

/**
 * Sends datagrams on one socket one at a time, in order, with a bounded
 * queue. `send()` returns false when it dropped the datagram.
 *
 * @example
 * ```ts ignore
 * const sender = new DatagramSender(socket);
 * sender.send(bytes, { transport: "udp", hostname: "10.0.0.1", port: 53 });
 * ```
 */
export class DatagramSender {
  #socket: Deno.DatagramConn;
  #queue: { data: Uint8Array; to: Deno.NetAddr }[] = [];
  #head = 0;
  #sending = false;
  #closed = false;
  dropped = 0;

  constructor(socket: Deno.DatagramConn) {
    this.#socket = socket;
  }

  /** Queue one datagram to `to`. */
  send(data: Uint8Array, to: Deno.NetAddr): boolean {
    if (this.#closed || this.#queue.length - this.#head >= SEND_QUEUE_DATAGRAMS) {
      this.dropped++;
      return false;
    }
    this.#queue.push({ data, to });
    if (!this.#sending) this.#pump();
    return true;
  }

  /** Stop sending; queued datagrams are dropped. */
  close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#head = 0;
  }

  async #pump(): Promise<void> {
    this.#sending = true;
    while (!this.#closed && this.#head < this.#queue.length) {
      const item = this.#queue[this.#head++];
      try {
        await this.#socket.send(item.data, item.to);
      } catch {
        // ICMP unreachable, a closed socket: UDP carries on, as it would without us.
        this.dropped++;
      }
    }
    this.#queue = [];
    this.#head = 0;
    this.#sending = false;
  }
}

/**
 * Receive datagrams on `socket` until it closes, handing each to `onDatagram`.
 * When `onDatagram` returns false (the session is backed up and dropped it),
 * the loop waits for `pause()` before receiving again, so excess traffic is
 * dropped by the kernel, not paid for here.
 */
async function receiveLoop(
  socket: Deno.DatagramConn,
  onDatagram: (data: Uint8Array, from: Deno.NetAddr) => boolean,
  pause: () => Promise<void>,
): Promise<void> {
  const buf = new Uint8Array(MAX_DATAGRAM_BYTES + 1);
  while (true) {
    let data: Uint8Array;
    let from: Deno.Addr;
    try {
      [data, from] = await socket.receive(buf);
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
      continue; // e.g. ICMP port unreachable surfaced on receive
    }
    if (data.length > MAX_DATAGRAM_BYTES) continue;
    if (!onDatagram(data.slice(), from as Deno.NetAddr)) await pause();
  }
}

/** Until the session's send queue drains, or a few milliseconds. */
function sessionPause(session: () => Session | null): Promise<void> {
  return session()?.backpressure() ?? new Promise((r) => setTimeout(r, 2));
}

/** Counters of one UDP PFO, shown by `status`. */
export interface UdpCounters {
  flows: number;
  flowsTotal: number;
  datagramsOut: number;
  datagramsIn: number;
  bytesOut: number;
  bytesIn: number;
  drops: number;
  /** Datagrams that arrived while no session was established. */
  refused: number;
  /** Datagrams from clients not in the PFO's clients list. */
  denied: number;
}

/** A fresh set of counters. */
export function udpCounters(): UdpCounters {
  return {
    flows: 0,
    flowsTotal: 0,
    datagramsOut: 0,
    datagramsIn: 0,
    bytesOut: 0,
    bytesIn: 0,
    drops: 0,
    refused: 0,
    denied: 0,
  };
}

/** Options for {@linkcode UdpListener}. */
export interface UdpListenerOptions {
  readonly host: string;
  readonly port: number;
  readonly targetHost: string;
  readonly targetPort: number;
  readonly pfo: string;
  readonly log: Logger;
  readonly session: () => Session | null;
  readonly counters: UdpCounters;
  readonly idleMs: () => number;
  /** Whether a client address may use the PFO. */
  readonly allowClient: (address: string) => boolean;
}

/**
 * One Console-side UDP port of a UDP PFO: a socket that turns each client
 * address into a flow on the session.
 */
export class UdpListener {
  readonly options: UdpListenerOptions;
  #socket: Deno.DatagramConn;
  #sender: DatagramSender;
  #flows = new Map<string, ConsoleFlow>();
  #sweep: ReturnType<typeof setInterval>;
  #limitLoggedAt = 0;
  #closed = false;

  private constructor(options: UdpListenerOptions, socket: Deno.DatagramConn) {
    this.options = options;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket);
    this.#sweep = setInterval(() => this.#expire(), Math.min(1000, options.idleMs()));
    receiveLoop(
      socket,
      (data, from) => this.#onClientDatagram(data, from),
      () => sessionPause(options.session),
    );
  }

  /** Bind the port. Throws the bind error (e.g. AddrInUse). */
  static bind(options: UdpListenerOptions): Promise<UdpListener> {
    const socket = Deno.listenDatagram({
      hostname: options.host,
      port: options.port,
      transport: "udp",
    });
    return Promise.resolve(new UdpListener(options, socket));
  }

  /** The bound address. */
  get address(): { hostname: string; port: number } {
    const a = this.#socket.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  /** Close the socket and every flow. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const flow of [...this.#flows.values()]) flow.close("PFO closed");
    this.#sender.close();
    try {
      this.#socket.close();
    } catch {
      // Closed already.
    }
  }

  /** Forget a flow (it closed). */
  forget(flow: ConsoleFlow): void {
    if (this.#flows.get(flow.key) === flow) {
      this.#flows.delete(flow.key);
      this.options.counters.flows--;
    }
  }

  /** A reply from the target, to the client of `flow`; false when it was dropped. */
  toClient(flow: ConsoleFlow, data: Uint8Array): boolean {
    const c = this.options.counters;
    if (this.#sender.send(data, flow.client)) {
      c.datagramsIn++;
      c.bytesIn += data.length;
      return true;
    }
    c.drops++;
    return false;
  }

  /** The flows open now. */
  flows(): ConsoleFlow[] {
    return [...this.#flows.values()].filter((f) => f.isOpen);
  }

  /** Returns false when the datagram was dropped because the session is backed up. */
  #onClientDatagram(data: Uint8Array, from: Deno.NetAddr): boolean {
    const c = this.options.counters;
    if (!this.options.allowClient(from.hostname)) {
      c.denied++;
      return true;
    }
    const session = this.options.session();
    if (!session) {
      c.refused++;
      return true;
    }
    const key = formatHostPort(from.hostname, from.port);
    let flow = this.#flows.get(key);
    if (flow && flow.session !== session) {
      flow.close("session replaced");
      flow = undefined;
    }
    if (!flow) {
      if (this.#flows.size >= MAX_UDP_FLOWS_PER_PFO) {
        c.drops++;
        if (Date.now() - this.#limitLoggedAt > 10_000) {
          this.#limitLoggedAt = Date.now();
          this.options.log.warn("UDP flow limit reached, dropping datagrams from new clients", {
            limit: MAX_UDP_FLOWS_PER_PFO,
            client: key,
          });
        }
        return true;
      }
      flow = new ConsoleFlow(this, session, key, from);
      this.#flows.set(key, flow);
      c.flows++;
      c.flowsTotal++;
      flow.open();
    }
    return flow.fromClient(data);
  }

  #expire(): void {
    const cutoff = Date.now() - this.options.idleMs();
    for (const flow of [...this.#flows.values()]) {
      if (flow.lastActive < cutoff) flow.close("idle");
    }
  }
}

/** Console side of one UDP flow. */
export class ConsoleFlow implements Channel {
  id = 0;
  readonly key: string;
  readonly client: Deno.NetAddr;
  readonly session: Session;
  readonly since = new Date();
  lastActive = Date.now();
  /** Bytes from the client, sent on to the Daemon. */
  bytesOut = 0;
  /** Bytes from the Daemon, sent on to the client. */
  bytesIn = 0;
  #listener: UdpListener;
  #state: "opening" | "open" | "closed" = "opening";
  #pending: Uint8Array[] = [];

  constructor(listener: UdpListener, session: Session, key: string, client: Deno.NetAddr) {
    this.#listener = listener;
    this.session = session;
    this.key = key;
    this.client = client;
  }

  get ended(): boolean {
    return this.#state === "closed";
  }

  /** True once the Daemon reached the target and datagrams flow. */
  get isOpen(): boolean {
    return this.#state === "open";
  }

  /** The PFO's target, as `connections list` shows it. */
  get target(): string {
    const o = this.#listener.options;
    return formatHostPort(o.targetHost, o.targetPort);
  }

  /** The PFO this flow belongs to. */
  get pfo(): string {
    return this.#listener.options.pfo;
  }

  open(): void {
    const o = this.#listener.options;
    const target = formatHostPort(o.targetHost, o.targetPort);
    this.session.open(
      { proto: "udp", host: o.targetHost, port: o.targetPort, pfo: o.pfo, client: this.key },
      (id) => {
        this.id = id;
        return this;
      },
    ).then(({ address }) => {
      if (this.#state === "closed") {
        this.session.send({ tag: Tag.RESET, stream: this.id, reason: "flow closed" });
        this.session.release(this);
        return;
      }
      this.#state = "open";
      o.log.info("UDP flow opened", { stream: this.id, client: this.key, target, via: address });
      for (const data of this.#pending) this.#forward(data);
      this.#pending = [];
    }, (err) => {
      o.log.warn("UDP flow failed: the Daemon could not reach the target", {
        client: this.key,
        target,
        reason: errorMessage(err),
      });
      this.#finish();
    });
  }

  /** Returns false when the datagram was dropped because the session is backed up. */
  fromClient(data: Uint8Array): boolean {
    this.lastActive = Date.now();
    if (this.#state === "open") return this.#forward(data);
    if (this.#state === "opening" && this.#pending.length < OPENING_QUEUE_DATAGRAMS) {
      this.#pending.push(data);
      return true;
    }
    this.#listener.options.counters.drops++;
    return true;
  }

  #forward(data: Uint8Array): boolean {
    const c = this.#listener.options.counters;
    if (this.session.sendDatagram(this.id, data)) {
      c.datagramsOut++;
      c.bytesOut += data.length;
      this.bytesOut += data.length;
      return true;
    }
    c.drops++;
    return false;
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#listener.toClient(this, data)) this.bytesIn += data.length;
  }

  onReset(reason: string): void {
    this.#listener.options.log.info("UDP flow closed by the Daemon", {
      stream: this.id,
      client: this.key,
      reason,
    });
    this.#finish();
  }

  abort(_reason: string): void {
    this.#finish();
  }

  /** Close from the Console's side (idle, PFO closed). */
  close(reason: string): void {
    if (this.#state === "open") {
      this.session.send({ tag: Tag.RESET, stream: this.id, reason });
      this.#listener.options.log.info("UDP flow closed", {
        stream: this.id,
        client: this.key,
        reason,
      });
    }
    this.#finish();
  }

  #finish(): void {
    if (this.#state === "closed") return;
    const wasOpening = this.#state === "opening";
    this.#state = "closed";
    this.#pending = [];
    if (!wasOpening) this.session.release(this);
    this.#listener.forget(this);
  }
}

/**
 * Daemon side of one UDP flow: a socket of its own toward the target, which
 * accepts replies from the target's address only.
 */
export class DaemonFlow implements Channel {
  readonly id: number;
  readonly target: string;
  lastActive = Date.now();
  /** Datagrams from the target, sent on to the Console. */
  datagramsIn = 0;
  /** Datagrams from the Console, sent on to the target. */
  datagramsOut = 0;
  /** Bytes of `datagramsIn`. */
  bytesIn = 0;
  /** Bytes of `datagramsOut`. */
  bytesOut = 0;
  drops = 0;
  #socket: Deno.DatagramConn;
  #sender: DatagramSender;
  #to: Deno.NetAddr;
  #session: Session;
  #ended = false;
  #onEnd: (reason: string) => void;

  private constructor(
    id: number,
    session: Session,
    socket: Deno.DatagramConn,
    to: Deno.NetAddr,
    onEnd: (reason: string) => void,
  ) {
    this.id = id;
    this.#session = session;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket);
    this.#to = to;
    this.target = formatHostPort(to.hostname, to.port);
    this.#onEnd = onEnd;
    receiveLoop(
      socket,
      (data, from) => this.#onReply(data, from),
      () => sessionPause(() => session),
    );
  }

  /**
   * Open a socket for a flow to `address:port` (an IP the caller resolved
   * and checked). Throws the socket error.
   */
  static connect(
    id: number,
    session: Session,
    address: string,
    port: number,
    onEnd: (reason: string) => void,
  ): Promise<DaemonFlow> {
    const socket = Deno.listenDatagram({
      hostname: address.includes(":") ? "::" : "0.0.0.0",
      port: 0,
      transport: "udp",
    });
    return Promise.resolve(
      new DaemonFlow(id, session, socket, { transport: "udp", hostname: address, port }, onEnd),
    );
  }

  get ended(): boolean {
    return this.#ended;
  }

  #onReply(data: Uint8Array, from: Deno.NetAddr): boolean {
    if (from.port !== this.#to.port || !sameAddress(from.hostname, this.#to.hostname)) return true;
    this.lastActive = Date.now();
    if (this.#session.sendDatagram(this.id, data)) {
      this.datagramsIn++;
      this.bytesIn += data.length;
      return true;
    }
    this.drops++;
    return false;
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#sender.send(data, this.#to)) {
      this.datagramsOut++;
      this.bytesOut += data.length;
    } else {
      this.drops++;
    }
  }

  onReset(reason: string): void {
    this.#end(reason);
  }

  abort(reason: string): void {
    this.#end(reason);
  }

  /** Close from the Daemon's side (idle) and tell the Console. */
  close(reason: string): void {
    if (this.#ended) return;
    this.#session.send({ tag: Tag.RESET, stream: this.id, reason });
    this.#end(reason);
  }

  #end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#sender.close();
    try {
      this.#socket.close();
    } catch {
      // Closed already.
    }
    this.#session.release(this);
    this.#onEnd(reason);
  }
}

/** Two spellings of one IP address (e.g. "::ffff:10.0.0.1" and "10.0.0.1") compare equal. */
function sameAddress(a: string, b: string): boolean {
  const strip = (x: string) => x.replace(/^::ffff:/i, "").toLowerCase();
  return strip(a) === strip(b);
}
