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
 * `Deno.listenDatagram` received 196,070, and its cost starved TCP streams.
 * Nor does it enlarge the kernel's receive buffer: under Deno 2.9.6 its
 * `recvBufferSize` and `setRecvBufferSize` make no system call, the socket
 * keeps 212,992 bytes whatever `getRecvBufferSize` reports, and the number
 * only sizes the buffer it allocates for each datagram: with 8 MiB asked it
 * received about 400 datagrams/s.)
 * Sends are serialized per socket: unawaited sends were seen to leave out of
 * order.
 *
 * @module
 */

import type { Session } from "./session.ts";
import { MAX_DATAGRAM_BYTES } from "./protocol.ts";

/**
 * Datagrams queued per socket before new ones are dropped, and their bytes.
 * The Daemon gets DATAGRAM frames in bursts (a link read), then sends them one
 * by one: at 300 Mbit/s under load a 1 MiB queue overflowed (578 of 134,000
 * dropped in one run); 4 MiB is 110 ms of 300 Mbit/s.
 */
const SEND_QUEUE_DATAGRAMS = 4096;
/** See {@linkcode SEND_QUEUE_DATAGRAMS}. */
const SEND_QUEUE_BYTES = 4 * 1024 * 1024;
/** Bytes all the send queues sharing one {@linkcode SendBudget} may hold together. */
export const SEND_BUDGET_BYTES = 32 * 1024 * 1024;

/** Bytes queued by several senders together (one per process), against a cap. */
export interface SendBudget {
  used: number;
  readonly max: number;
}

/** A budget of {@linkcode SEND_BUDGET_BYTES}, for the senders of one process. */
export function sendBudget(max = SEND_BUDGET_BYTES): SendBudget {
  return { used: 0, max };
}
/**
 * Datagrams a new flow holds while its open is in flight, and their bytes.
 * An open took 1 to 40 ms here under load; 40 ms at 100 Mbit/s of 1,400-byte
 * datagrams is 360 of them (500 KB).
 */
export const OPENING_HOLD_DATAGRAMS = 1024;
/** See {@linkcode OPENING_HOLD_DATAGRAMS}. */
export const OPENING_HOLD_BYTES = 1024 * 1024;
/** Bytes all the opening flows of one listening socket may hold together. */
export const OPENING_HOLD_BYTES_PER_SOCKET = 4 * 1024 * 1024;

/** Where a datagram was dropped. */
export type DropReason =
  | "opening"
  | "openFailed"
  | "linkBusy"
  | "tcpBusy"
  | "sendQueue"
  | "sendFailed"
  | "flowLimit";

/**
 * Datagrams dropped, by where:
 * - `opening`: a new flow's hold was full while the Daemon opened it;
 * - `openFailed`: held by a flow that ended before it opened (the Daemon could not open it, or the PFO closed);
 * - `linkBusy`: the session's send queue was long (the link is slower than the datagrams);
 * - `tcpBusy`: TCP streams were busy and UDP had used its share of the link;
 * - `sendQueue`: the socket's own send queue (toward client or target) was full;
 * - `sendFailed`: the system refused the send (e.g. ICMP port unreachable);
 * - `flowLimit`: a new client while the PFO had its maximum of flows.
 *
 * What the kernel drops before we read (a full receive buffer) is not here:
 * Linux tells it only in /proc/net/udp, which Deno lets a program read only
 * with --allow-all.
 */
export type UdpDrops = Record<DropReason, number>;

/** A fresh set of drop counters. */
export function udpDrops(): UdpDrops {
  return {
    opening: 0,
    openFailed: 0,
    linkBusy: 0,
    tcpBusy: 0,
    sendQueue: 0,
    sendFailed: 0,
    flowLimit: 0,
  };
}

/** Drops by where, with their sum, as `status --json` shows them. */
export type UdpDropTotals = Readonly<UdpDrops> & { readonly total: number };

/**
 * `drops` with their sum.
 * @example
 * ```ts
 * import { dropTotals, udpDrops } from "./datagram.ts";
 * const d = udpDrops();
 * d.opening = 2;
 * d.linkBusy = 1;
 * if (dropTotals(d).total !== 3) throw new Error("bad sum");
 * ```
 */
export function dropTotals(drops: Readonly<UdpDrops>): UdpDropTotals {
  let total = 0;
  for (const n of Object.values(drops)) total += n;
  return { total, ...drops };
}

/** Add `from` into `into`. */
export function addDrops(into: UdpDrops, from: Readonly<UdpDrops>): void {
  for (const key of Object.keys(into) as DropReason[]) into[key] += from[key];
}

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
  #queue: { data: Uint8Array; to: Deno.NetAddr; failed?: () => void }[] = [];
  #head = 0;
  #bytes = 0;
  #sending = false;
  #closed = false;
  /** Datagrams dropped because the queue was full or the send failed. */
  dropped = 0;

  #budget: SendBudget;

  /** A sender that queues datagrams for `socket`, within `budget` if shared. */
  constructor(socket: Deno.DatagramConn, budget: SendBudget = sendBudget()) {
    this.#socket = socket;
    this.#budget = budget;
  }

  /**
   * Queue one datagram to `to`; false when the queue is full. `failed` is
   * called if the system later refuses the send.
   */
  send(data: Uint8Array, to: Deno.NetAddr, failed?: () => void): boolean {
    if (
      this.#closed || this.#queue.length - this.#head >= SEND_QUEUE_DATAGRAMS ||
      this.#bytes + data.length > SEND_QUEUE_BYTES ||
      this.#budget.used + data.length > this.#budget.max
    ) {
      this.dropped++;
      return false;
    }
    this.#queue.push({ data, to, failed });
    this.#bytes += data.length;
    this.#budget.used += data.length;
    if (!this.#sending) this.#pump();
    return true;
  }

  /** Stop sending; queued datagrams are dropped. */
  close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#head = 0;
    this.#budget.used -= this.#bytes;
    this.#bytes = 0;
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
        item.failed?.();
      }
      if (this.#closed) break; // close() gave the bytes back already
      this.#bytes -= item.data.length;
      this.#budget.used -= item.data.length;
    }
    this.#queue = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#sending = false;
  }
}

/**
 * Receive datagrams on `socket` until it closes, handing each to `onDatagram`
 * as a view of one reused buffer: copy it to keep it. (One receive at a time:
 * receives issued together on one Deno socket complete newest first.)
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
    if (!onDatagram(data, from as Deno.NetAddr)) await pause();
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
  /** Datagrams dropped: the sum of `dropped`. */
  drops: number;
  /** Datagrams dropped, by where. */
  dropped: UdpDrops;
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
    dropped: udpDrops(),
    refused: 0,
    denied: 0,
  };
}
