/**
 * UDP over a session. Each client address on the Console's side is a *flow*:
 * one stream id on the session and, on the Daemon's side, one socket toward
 * the target, so replies go back to the right client. Datagrams travel whole
 * (up to 65,507 bytes), in order; when a queue is full they are dropped and
 * counted, as a router would, and never hold up the session.
 *
 * `node:dgram` is used because it needs no `--unstable-net` flag. Its sends
 * are serialized per socket here: unawaited sends were seen to leave out of
 * order.
 *
 * @module
 */

import dgram from "node:dgram";
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
 * sender.send(bytes, 53, "10.0.0.1");
 * ```
 */
export class DatagramSender {
  #socket: dgram.Socket;
  #queue: { data: Uint8Array; port?: number; address?: string }[] = [];
  #head = 0;
  #sending = false;
  #closed = false;
  dropped = 0;

  constructor(socket: dgram.Socket) {
    this.#socket = socket;
  }

  /** Queue one datagram (to `port`/`address`, or to the connected peer). */
  send(data: Uint8Array, port?: number, address?: string): boolean {
    if (this.#closed || this.#queue.length - this.#head >= SEND_QUEUE_DATAGRAMS) {
      this.dropped++;
      return false;
    }
    this.#queue.push({ data, port, address });
    if (!this.#sending) this.#next();
    return true;
  }

  /** Stop sending; queued datagrams are dropped. */
  close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#head = 0;
  }

  #next(): void {
    if (this.#closed || this.#head >= this.#queue.length) {
      this.#sending = false;
      this.#queue = [];
      this.#head = 0;
      return;
    }
    this.#sending = true;
    const item = this.#queue[this.#head++];
    const done = (err: Error | null) => {
      if (err) this.dropped++;
      this.#next();
    };
    try {
      if (item.port === undefined) this.#socket.send(item.data, done);
      else this.#socket.send(item.data, item.port, item.address, done);
    } catch {
      done(new Error("send failed"));
    }
  }
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
  #socket: dgram.Socket;
  #sender: DatagramSender;
  #flows = new Map<string, ConsoleFlow>();
  #sweep: ReturnType<typeof setInterval> | undefined;
  #limitLoggedAt = 0;
  #closed = false;

  private constructor(options: UdpListenerOptions, socket: dgram.Socket) {
    this.options = options;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket);
  }

  /** Bind the port. Rejects with the bind error (e.g. EADDRINUSE). */
  static bind(options: UdpListenerOptions): Promise<UdpListener> {
    const socket = dgram.createSocket({ type: options.host.includes(":") ? "udp6" : "udp4" });
    return new Promise((resolve, reject) => {
      socket.once("error", (err) => {
        try {
          socket.close();
        } catch {
          // Never bound.
        }
        reject(err);
      });
      socket.bind(options.port, options.host, () => {
        socket.removeAllListeners("error");
        const listener = new UdpListener(options, socket);
        socket.on(
          "error",
          (err) => options.log.warn("UDP socket error", { error: errorMessage(err) }),
        );
        socket.on("message", (msg, rinfo) => listener.#onClientDatagram(msg, rinfo));
        listener.#sweep = setInterval(() => listener.#expire(), Math.min(1000, options.idleMs()));
        resolve(listener);
      });
    });
  }

  /** The bound address. */
  get address(): { hostname: string; port: number } {
    const a = this.#socket.address();
    return { hostname: a.address, port: a.port };
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

  /** A reply from the target, to the client of `flow`. */
  toClient(flow: ConsoleFlow, data: Uint8Array): void {
    const c = this.options.counters;
    if (this.#sender.send(data, flow.clientPort, flow.clientAddress)) {
      c.datagramsIn++;
      c.bytesIn += data.length;
    } else {
      c.drops++;
    }
  }

  #onClientDatagram(msg: Uint8Array, rinfo: { address: string; port: number }): void {
    const c = this.options.counters;
    if (!this.options.allowClient(rinfo.address)) {
      c.denied++;
      return;
    }
    const session = this.options.session();
    if (!session) {
      c.refused++;
      return;
    }
    const key = formatHostPort(rinfo.address, rinfo.port);
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
        return;
      }
      flow = new ConsoleFlow(this, session, key, rinfo.address, rinfo.port);
      this.#flows.set(key, flow);
      c.flows++;
      c.flowsTotal++;
      flow.open();
    }
    flow.fromClient(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
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
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly session: Session;
  lastActive = Date.now();
  #listener: UdpListener;
  #state: "opening" | "open" | "closed" = "opening";
  #pending: Uint8Array[] = [];

  constructor(listener: UdpListener, session: Session, key: string, address: string, port: number) {
    this.#listener = listener;
    this.session = session;
    this.key = key;
    this.clientAddress = address;
    this.clientPort = port;
  }

  get ended(): boolean {
    return this.#state === "closed";
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

  fromClient(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#state === "open") return this.#forward(data);
    if (this.#state === "opening" && this.#pending.length < OPENING_QUEUE_DATAGRAMS) {
      this.#pending.push(data.slice());
      return;
    }
    this.#listener.options.counters.drops++;
  }

  #forward(data: Uint8Array): void {
    const c = this.#listener.options.counters;
    if (this.session.sendDatagram(this.id, data)) {
      c.datagramsOut++;
      c.bytesOut += data.length;
    } else {
      c.drops++;
    }
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    this.#listener.toClient(this, data);
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

/** Daemon side of one UDP flow: a connected socket toward the target. */
export class DaemonFlow implements Channel {
  readonly id: number;
  readonly target: string;
  lastActive = Date.now();
  datagramsIn = 0;
  datagramsOut = 0;
  drops = 0;
  #socket: dgram.Socket;
  #sender: DatagramSender;
  #session: Session;
  #ended = false;
  #onEnd: (reason: string) => void;

  private constructor(
    id: number,
    session: Session,
    socket: dgram.Socket,
    target: string,
    onEnd: (reason: string) => void,
  ) {
    this.id = id;
    this.#session = session;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket);
    this.target = target;
    this.#onEnd = onEnd;
    socket.on("message", (msg) => {
      this.lastActive = Date.now();
      const data = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
      if (data.length <= MAX_DATAGRAM_BYTES && this.#session.sendDatagram(this.id, data)) {
        this.datagramsIn++;
      } else this.drops++;
    });
    socket.on("error", () => {
      // ICMP port unreachable and the like: UDP carries on, as it would without us.
      this.drops++;
    });
  }

  /**
   * Make a socket connected to `address:port` (an IP the caller resolved).
   * Rejects with the socket error.
   */
  static connect(
    id: number,
    session: Session,
    address: string,
    port: number,
    onEnd: (reason: string) => void,
  ): Promise<DaemonFlow> {
    const socket = dgram.createSocket({ type: address.includes(":") ? "udp6" : "udp4" });
    return new Promise((resolve, reject) => {
      socket.once("error", (err) => {
        try {
          socket.close();
        } catch {
          // Never connected.
        }
        reject(err);
      });
      socket.connect(port, address, () => {
        socket.removeAllListeners("error");
        resolve(new DaemonFlow(id, session, socket, formatHostPort(address, port), onEnd));
      });
    });
  }

  get ended(): boolean {
    return this.#ended;
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#sender.send(data)) this.datagramsOut++;
    else this.drops++;
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
