/**
 * The Console's side of UDP PFOs: a socket per listen port that turns each
 * client address into a flow on the session (see `core/datagram.ts`).
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { type LogFields, type Logger, LogThrottle } from "../core/log.ts";
import type { LogBatcher } from "../core/log_batch.ts";
import type { Channel } from "../core/mux.ts";
import { formatHostPort } from "../net/hostport.ts";
import { MAX_UDP_FLOWS_PER_PFO, Tag } from "../core/protocol.ts";
import type { Session } from "../core/session.ts";
import {
  DatagramSender,
  type DropReason,
  OPENING_HOLD_BYTES,
  OPENING_HOLD_BYTES_PER_SOCKET,
  OPENING_HOLD_DATAGRAMS,
  receiveLoop,
  type SendBudget,
  sessionPause,
  type UdpCounters,
} from "../core/datagram.ts";

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
  /** Where flows' open and close records go; default: straight to `log`. */
  readonly batch?: LogBatcher;
  /** The bytes all the Console's UDP sockets may queue toward clients together. */
  readonly budget?: SendBudget;
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
  readonly #limitLog = new LogThrottle();
  #closed = false;
  /** Bytes held by this socket's flows while their opens are in flight. */
  heldBytes = 0;

  private constructor(options: UdpListenerOptions, socket: Deno.DatagramConn) {
    this.options = options;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket, options.budget);
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

  /** Write a flow's open or close record, summarised in bursts. */
  info(kind: "opened" | "closed", msg: string, fields: LogFields): void {
    const o = this.options;
    if (o.batch) o.batch.info({ key: o.pfo, kind, log: o.log, summaryLog: o.log, msg, fields });
    else o.log.info(msg, fields);
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
    if (this.#sender.send(data, flow.client, () => this.drop("sendFailed", flow))) {
      c.datagramsIn++;
      c.bytesIn += data.length;
      return true;
    }
    this.drop("sendQueue", flow);
    return false;
  }

  /** Count `n` datagrams dropped for `reason`, on the PFO and on `flow`. */
  drop(reason: DropReason, flow?: ConsoleFlow, n = 1): void {
    const c = this.options.counters;
    c.drops += n;
    c.dropped[reason] += n;
    if (flow) flow.drops += n;
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
        this.drop("flowLimit");
        if (this.#limitLog.hit()) {
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
  /** Datagrams of this flow dropped, either way. */
  drops = 0;
  #listener: UdpListener;
  #state: "opening" | "open" | "closed" = "opening";
  /** Datagrams held while the open is in flight, and their bytes. */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

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
    const started = Date.now();
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
      const held = this.#unhold();
      // How long the open took and what it held: what the hold's bounds are sized from.
      this.#listener.info("opened", "UDP flow opened", {
        stream: this.id,
        client: this.key,
        target,
        via: address,
        openMs: Date.now() - started,
        held: held.length,
      });
      for (const data of held) this.#forward(data);
    }, (err) => {
      o.log.warn("UDP flow failed: the Daemon could not reach the target", {
        client: this.key,
        target,
        reason: errorMessage(err),
      });
      this.#finish();
    });
  }

  /**
   * A datagram from the client (a view: copied when held). Returns false
   * when it was dropped because the session is backed up.
   */
  fromClient(data: Uint8Array): boolean {
    this.lastActive = Date.now();
    if (this.#state === "open") return this.#forward(data);
    if (this.#state === "opening" && this.#canHold(data.length)) {
      this.#pending.push(data.slice());
      this.#pendingBytes += data.length;
      this.#listener.heldBytes += data.length;
      return true;
    }
    this.#listener.drop("opening", this);
    return true;
  }

  /** Within the flow's hold, and the socket's for all its opening flows. */
  #canHold(bytes: number): boolean {
    return this.#pending.length < OPENING_HOLD_DATAGRAMS &&
      this.#pendingBytes + bytes <= OPENING_HOLD_BYTES &&
      this.#listener.heldBytes + bytes <= OPENING_HOLD_BYTES_PER_SOCKET;
  }

  /** Release what the flow held, returning it in arrival order. */
  #unhold(): Uint8Array[] {
    const held = this.#pending;
    this.#listener.heldBytes -= this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    return held;
  }

  #forward(data: Uint8Array): boolean {
    const c = this.#listener.options.counters;
    const verdict = this.session.sendDatagram(this.id, data);
    if (verdict === "sent") {
      c.datagramsOut++;
      c.bytesOut += data.length;
      this.bytesOut += data.length;
      return true;
    }
    this.#listener.drop(verdict, this);
    return false;
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#listener.toClient(this, data)) this.bytesIn += data.length;
  }

  onReset(reason: string): void {
    this.#listener.info("closed", "UDP flow closed by the Daemon", {
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
      this.#listener.info("closed", "UDP flow closed", {
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
    const held = this.#unhold().length;
    if (held > 0) this.#listener.drop("openFailed", this, held);
    if (!wasOpening) this.session.release(this);
    this.#listener.forget(this);
  }
}
