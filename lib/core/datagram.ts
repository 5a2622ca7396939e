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

import type { Session } from "./session.ts";
import { MAX_DATAGRAM_BYTES } from "./protocol.ts";

/** Datagrams queued per socket before new ones are dropped. */
const SEND_QUEUE_DATAGRAMS = 256;
/** Datagrams a flow holds while its open is in flight. */
/** Datagrams a flow holds while its open is in flight. */
export const OPENING_QUEUE_DATAGRAMS = 64;

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
  /** Datagrams dropped because the queue was full. */
  dropped = 0;

  /** A sender that queues datagrams for `socket`. */
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
export async function receiveLoop(
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
export function sessionPause(session: () => Session | null): Promise<void> {
  return session()?.backpressure() ?? new Promise((r) => setTimeout(r, 2));
}

/** Counters of one UDP PFO, shown by `status`. */
export interface UdpCounters {
  /** Flows open now. */
  flows: number;
  /** Flows opened since the PFO started. */
  flowsTotal: number;
  /** Datagrams sent to the peer. */
  datagramsOut: number;
  /** Datagrams received from the peer. */
  datagramsIn: number;
  /** Payload bytes sent to the peer. */
  bytesOut: number;
  /** Payload bytes received from the peer. */
  bytesIn: number;
  /** Datagrams dropped: a full queue, a busy session, or a flow over its limit. */
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
