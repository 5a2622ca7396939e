/**
 * The Daemon's side of UDP flows: a socket of its own toward each flow's
 * target (see `core/datagram.ts`).
 *
 * @module
 */

import type { Channel } from "../core/mux.ts";
import { formatHostPort } from "../net/hostport.ts";
import { Tag } from "../core/protocol.ts";
import type { Session } from "../core/session.ts";
import {
  DatagramSender,
  type DropReason,
  receiveLoop,
  type SendBudget,
  sessionPause,
  type UdpDrops,
} from "../core/datagram.ts";

/** Options for {@linkcode DaemonFlow.connect}. */
export interface DaemonFlowOptions {
  /** Called once when the flow ends. */
  readonly onEnd: (reason: string) => void;
  /** The Daemon's drop totals, which the flow's drops are added to. */
  readonly drops: UdpDrops;
  /** The bytes all the Daemon's flows may queue toward their targets together. */
  readonly budget?: SendBudget;
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
  /** Datagrams of this flow dropped, either way. */
  drops = 0;
  /** The Daemon's totals, by where, which this flow's drops are added to. */
  #totals: UdpDrops;
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
    options: DaemonFlowOptions,
  ) {
    this.id = id;
    this.#totals = options.drops;
    this.#session = session;
    this.#socket = socket;
    this.#sender = new DatagramSender(socket, options.budget);
    this.#to = to;
    this.target = formatHostPort(to.hostname, to.port);
    this.#onEnd = options.onEnd;
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
    options: DaemonFlowOptions,
  ): Promise<DaemonFlow> {
    const socket = Deno.listenDatagram({
      hostname: address.includes(":") ? "::" : "0.0.0.0",
      port: 0,
      transport: "udp",
    });
    return Promise.resolve(
      new DaemonFlow(id, session, socket, { transport: "udp", hostname: address, port }, options),
    );
  }

  get ended(): boolean {
    return this.#ended;
  }

  #onReply(data: Uint8Array, from: Deno.NetAddr): boolean {
    if (from.port !== this.#to.port || !sameAddress(from.hostname, this.#to.hostname)) return true;
    this.lastActive = Date.now();
    const verdict = this.#session.sendDatagram(this.id, data);
    if (verdict === "sent") {
      this.datagramsIn++;
      this.bytesIn += data.length;
      return true;
    }
    this.#drop(verdict);
    return false;
  }

  onDatagram(data: Uint8Array): void {
    this.lastActive = Date.now();
    if (this.#sender.send(data, this.#to, () => this.#drop("sendFailed"))) {
      this.datagramsOut++;
      this.bytesOut += data.length;
    } else {
      this.#drop("sendQueue");
    }
  }

  #drop(reason: DropReason): void {
    this.drops++;
    this.#totals[reason]++;
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
