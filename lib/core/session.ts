/**
 * One established session over one link: typed messages, heartbeats,
 * streams, chat, resolve and a close with a reason. The handshake before it
 * is in `handshake.ts`, the framing under it in `frames.ts`.
 *
 * The Console and the Daemon both use {@linkcode Session}; its `role` decides
 * which messages it may send and accept (see `SENDERS` in `protocol.ts`).
 *
 * @module
 */

import { encodeMessage, streamOfFrame, tagName } from "./codec.ts";
import {
  closeQuietly,
  errorMessage,
  OpenError,
  ProtocolError,
  SessionClosedError,
} from "./errors.ts";
import { FrameWriter, type MessageReader, SEND_QUEUE_CAP } from "./frames.ts";
import { type Logger, LogThrottle } from "./log.ts";
import {
  type BufferPool,
  type Channel,
  FULL_BUFFER,
  Stream,
  type StreamHost,
  type StreamOptions,
  type WindowHost,
} from "./mux.ts";
import type { ByteConn } from "./mux.ts";
import {
  type CloseCode,
  type DatagramMessage,
  type DataMessage,
  DEAD_PEER_MS,
  type FinMessage,
  HALF_CLOSED_IDLE_MS,
  HEARTBEAT_MS,
  INITIAL_WINDOW_BYTES,
  MAX_HELD_BYTES,
  MAX_STREAMS,
  type Message,
  type OpenMessage,
  type OpenOkMessage,
  pendingBudget,
  type RejectCode,
  type ResetMessage,
  type ResolveMessage,
  type ResolveResultMessage,
  type Role,
  SENDERS,
  STREAM_WINDOW_MAX_BYTES,
  Tag,
  type WindowMessage,
} from "./protocol.ts";

// The frame and handshake plumbing lives in frames.ts and handshake.ts; it is
// exported here too, for the modules that import it from session.ts.
export { FrameWriter, MessageReader, SEND_HIGH_WATER, SEND_QUEUE_CAP, sendNow } from "./frames.ts";
export {
  consoleHandshake,
  type DaemonClaim,
  daemonHandshake,
  type DaemonHandshakeOptions,
} from "./handshake.ts";

/** Send-queue size above which UDP datagrams are dropped instead of queued. */
const DATAGRAM_HIGH_WATER = 1024 * 1024;
/**
 * Most spare read buffers a session keeps for its streams: the send queue's
 * high-water mark in full-size frames (4 MiB). Dropped once TCP is idle.
 */
const SPARE_BUFFERS = 64;
/** Round trips kept: the least of them is the link's (4 heartbeats: 16 s). */
const RTT_SAMPLES = 4;
/** TCP idle this long lets the spare read buffers go. */
const SPARE_IDLE_MS = 1_000;
/** TCP counts as active for this long after a busy window (see `TCP_BUSY_BYTES`). */
const TCP_ACTIVE_MS = 100;
/**
 * TCP DATA bytes within one `TCP_ACTIVE_MS` window that make TCP busy. A few
 * small frames (iperf3's control connection beside its UDP test) do not: they
 * made UDP drop ~90 ms of datagrams at 100 Mbit/s.
 */
const TCP_BUSY_BYTES = 64 * 1024;
/** Datagrams UDP may send in a burst while TCP is active. */
const UDP_TOKENS_MAX = 32;
/**
 * Console: how long an early-data stream's OPEN waits for the client's first
 * bytes, so both leave in one write (see {@linkcode FrameWriter.together}).
 * A client that speaks first has sent them by the time its connection is
 * accepted; one that waits for the server pays this once per connection.
 */
export const EARLY_OPEN_WAIT_MS = 1;
/** How long the Console waits for an OPEN_OK or OPEN_ERR. */
const OPEN_TIMEOUT_MS = 20_000;
/** How long a resolve may take. */
const RESOLVE_TIMEOUT_MS = 15_000;
/**
 * How often a session checks for a silent peer. Pings go out every
 * HEARTBEAT_MS; checking only then would notice a peer up to one heartbeat
 * late (DEAD_PEER_MS + HEARTBEAT_MS = 16 s).
 */
const LIVENESS_TICK_MS = 1_000;

/** Why a session ended. */
export interface SessionEnd {
  /** Why it ended, as the wire codes it. */
  readonly code: CloseCode;
  /** Why it ended, in words. */
  readonly reason: string;
  /** True when the peer (not this side) ended it. */
  readonly remote: boolean;
  /** True when the peer asked not to reconnect. */
  readonly final: boolean;
}

/** Callbacks a session owner provides. */
export interface SessionHandlers {
  /** Daemon only: the Console asks for a stream. */
  onOpen?(msg: OpenMessage): void;
  /** Daemon only: the Console asks to resolve a name. */
  onResolve?(msg: ResolveMessage): void;
  /** The peer sent a chat message; escape it before display. */
  onChat(text: string): void;
  /** Once, when the session has ended and every stream is closed. */
  onEnd(end: SessionEnd): void;
}

/** Options for {@linkcode Session}. */
export interface SessionOptions {
  /** Which side this session is: it decides what may be sent and accepted. */
  readonly role: Role;
  /** The session id, for logs on both sides. */
  readonly id: string;
  /** Logger for the session's records. */
  readonly log: Logger;
  /** What to call when the peer asks for something or the session ends. */
  readonly handlers: SessionHandlers;
  /** Defaults from protocol.ts; tests shorten them. */
  readonly heartbeatMs?: number;
  /** Silence after which the peer is taken for dead; defaults from protocol.ts. */
  readonly deadPeerMs?: number;
  /** Most streams (TCP and UDP) this side holds at once. Default {@linkcode MAX_STREAMS}. */
  readonly maxStreams?: number;
  /** A half-closed stream quiet this long is reset. Default {@linkcode HALF_CLOSED_IDLE_MS}. */
  readonly halfClosedIdleMs?: number;
  /** Console: the Daemon offered `early-data`, so streams may send before OPEN_OK. */
  readonly earlyData?: boolean;
  /**
   * Most bytes this side holds for the peer: early data of streams whose
   * target is still being reached, and bytes received on streams that their
   * local socket has not taken yet. Over it, new opens are refused with code
   * `limit`. Default {@linkcode MAX_HELD_BYTES}.
   */
  readonly maxHeldBytes?: number;
  /**
   * The peer offered `window-tuning`: this side's stream receive windows
   * grow while a stream is window-limited, up to `streamWindowMax` each, and
   * their sum within `maxHeldBytes`. Otherwise every window stays fixed.
   */
  readonly windowTuning?: boolean;
  /** Largest receive window one stream grows to. Default {@linkcode STREAM_WINDOW_MAX_BYTES}. */
  readonly streamWindowMax?: number;
  /**
   * Console: the Daemon waits for the operator. Until this side sends
   * ACCEPT, the Daemon may send only {@linkcode pendingBudget} of
   * `timeoutMs`, and after `timeoutMs` it is rejected.
   */
  readonly pending?: { readonly timeoutMs: number };
}

/** Where to open a stream to, on the Daemon's side. */
export interface OpenTarget {
  /** A TCP stream or a UDP flow. */
  readonly proto: "tcp" | "udp";
  /** Target host name or address, resolved on the Daemon's side. */
  readonly host: string;
  /** Target port. */
  readonly port: number;
  /** The PFO's name, for the Daemon's display. */
  readonly pfo: string;
  /** The Console-side client address, for the Daemon's display. */
  readonly client: string;
}

/**
 * Daemon: an OPEN whose target is still being reached, and, for TCP, what
 * came for it before then (null = FIN).
 */
interface EarlyData {
  readonly udp: boolean;
  readonly frames: (Uint8Array | null)[];
  bytes: number;
}

/** The limits that refuse opens, each logged on its own. */
type Limit = "streams" | "held";

/** Console: what a Daemon waiting for acceptance has sent, against its budget. */
interface PendingPhase {
  readonly budget: { readonly messages: number; readonly bytes: number };
  /** `MessageReader.bytesRead` when the session started. */
  readonly bytesAtStart: number;
  messages: number;
  readonly timer: ReturnType<typeof setTimeout>;
}

interface PendingOpen {
  readonly channel: Channel;
  readonly resolve: (address: string) => void;
  readonly reject: (err: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/**
 * An established session: streams, chat, resolve, heartbeats and close.
 *
 * @example
 * ```ts ignore
 * const session = new Session(link, reader, { role: "console", id, log, handlers });
 * session.run();
 * const stream = await session.open(clientConn, { host: "db01", port: 5432, pfo: "db", client: "127.0.0.1:5000" });
 * ```
 */
export class Session implements StreamHost {
  /** The session id, for logs on both sides. */
  readonly id: string;
  /** Which side this session is. */
  readonly role: Role;
  /** When the session was established (epoch milliseconds). */
  readonly startedAt: number = Date.now();
  #peer: Role;
  #link: ByteConn;
  #reader: MessageReader;
  #writer: FrameWriter;
  #log: Logger;
  #handlers: SessionHandlers;
  #streams = new Map<number, Channel>();
  #pendingOpens = new Map<number, PendingOpen>();
  /** Console: OPEN frames held for their stream's first frame (at most EARLY_OPEN_WAIT_MS). */
  #heldOpens = new Map<number, { frame: Uint8Array; timer: ReturnType<typeof setTimeout> }>();
  /** Daemon: OPENs whose target is still being reached, with any DATA and FIN sent meanwhile. */
  #early = new Map<number, EarlyData>();
  /** Daemon: opens this session refused (held bytes) while their target was being reached. */
  #abandoned = new Set<number>();
  /** Bytes held for the peer: early data and streams' unwritten received bytes. */
  #held = 0;
  #maxHeldBytes: number;
  /** Console: set while the Daemon waits for acceptance. */
  #pending: PendingPhase | null = null;
  /** Console: streams may send before OPEN_OK. */
  #earlyData: boolean;
  #resolves = new Map<
    number,
    {
      resolve: (a: string[]) => void;
      reject: (e: Error) => void;
      timer: ReturnType<typeof setTimeout>;
    }
  >();
  #nextStream = 1;
  #nextResolve = 1;
  #lastHeard = Date.now();
  /** True while reading waits for the peer to take what it is owed. */
  #readPaused = false;
  #lastTcpAt = 0;
  /** Start of the window TCP DATA bytes are counted in, and its count. */
  #tcpWindowAt = 0;
  #tcpWindowBytes = 0;
  #udpTokens = UDP_TOKENS_MAX;
  #pingSeq = 0;
  /** When the PING `#pingSeq` went (performance.now()), or -1 once answered. */
  #pingAt = -1;
  /** The latest round trips from PING to PONG, in ms, newest last. */
  #rttSamples: number[] = [];
  /** The least of them: the link's round trip without the queues' share; 0 until measured. */
  #rtt = 0;
  /** Window tuning, when both sides offer it; else null (fixed windows). */
  readonly windows: WindowHost | null;
  /** Bytes streams' windows grew beyond their initial window, summed. */
  #windowsGrown = 0;
  #spares: Uint8Array[] = [];
  /** StreamHost: full-size read buffers the streams share, up to {@linkcode SPARE_BUFFERS}. */
  readonly buffers: BufferPool = {
    take: () => this.#spares.pop(),
    give: (buffer) => {
      if (this.#spares.length < SPARE_BUFFERS && buffer.length === FULL_BUFFER && !this.#ended) {
        this.#spares.push(buffer);
      }
    },
  };
  #ticks = 0;
  #ticksPerPing: number;
  #heartbeat: ReturnType<typeof setInterval>;
  #deadPeerMs: number;
  #maxStreams: number;
  /** Liveness ticks a half-closed stream may stay quiet. */
  #halfClosedTicks: number;
  #halfClosedIdleMs: number;
  /** Per limit: when it was last logged, and refusals since. */
  #limits: Record<Limit, LogThrottle> = {
    streams: new LogThrottle(),
    held: new LogThrottle(),
  };
  #ended: SessionEnd | null = null;
  #endWaiters: (() => void)[] = [];

  /** An established session on `link`, reading with `reader` (shared with the handshake); call {@linkcode Session.run} once. */
  constructor(link: ByteConn, reader: MessageReader, options: SessionOptions) {
    this.id = options.id;
    this.role = options.role;
    this.#peer = options.role === "console" ? "daemon" : "console";
    this.#link = link;
    this.#reader = reader;
    this.#log = options.log;
    this.#handlers = options.handlers;
    this.#deadPeerMs = options.deadPeerMs ?? DEAD_PEER_MS;
    this.#maxStreams = options.maxStreams ?? MAX_STREAMS;
    this.#maxHeldBytes = options.maxHeldBytes ?? MAX_HELD_BYTES;
    this.#earlyData = options.earlyData ?? false;
    this.windows = options.windowTuning ? this.#windowHost(options.streamWindowMax) : null;
    this.#writer = new FrameWriter(
      link,
      (err) =>
        this.#finish("dead-peer", `Cannot write to the peer: ${errorMessage(err)}`, false, false),
    );
    reader.trust();
    const heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    const tick = Math.min(heartbeatMs, LIVENESS_TICK_MS);
    this.#ticksPerPing = Math.max(1, Math.round(heartbeatMs / tick));
    this.#halfClosedIdleMs = options.halfClosedIdleMs ?? HALF_CLOSED_IDLE_MS;
    this.#halfClosedTicks = Math.max(1, Math.ceil(this.#halfClosedIdleMs / tick));
    this.#heartbeat = setInterval(() => this.#beat(), tick);
    if (options.pending) {
      const timeoutMs = options.pending.timeoutMs;
      this.#pending = {
        budget: pendingBudget(timeoutMs),
        bytesAtStart: reader.bytesRead,
        messages: 0,
        timer: setTimeout(() => this.#pendingExpired(timeoutMs), timeoutMs),
      };
    }
  }

  /** Number of open streams and UDP flows. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** The open stream or UDP flow with this id. */
  channel(id: number): Channel | undefined {
    return this.#streams.get(id);
  }

  /** Daemon: bytes held for stream `id` before its target was reached, or -1 if none are. */
  earlyHeld(id: number): number {
    return this.#early.get(id)?.bytes ?? -1;
  }

  /** Bytes held for the peer: early data, and stream bytes not yet taken by their local socket. */
  get heldBytes(): number {
    return this.#held;
  }

  /** The round-trip time measured by heartbeats, in milliseconds; 0 until measured. */
  get rttMs(): number {
    return this.#rtt;
  }

  /**
   * The window policy streams use: the round trip from heartbeats (a PING
   * goes at once when none is known yet), and a budget of `maxHeldBytes` for
   * the sum of every stream's window, so what the peer may send this side
   * before it is taken stays within it.
   */
  #windowHost(max = STREAM_WINDOW_MAX_BYTES): WindowHost {
    return {
      max,
      rttMs: () => {
        if (this.#rtt === 0 && this.#pingAt < 0) this.#ping();
        return this.#rtt;
      },
      reserve: (bytes) => {
        const used = this.#windowsGrown + INITIAL_WINDOW_BYTES * this.#streams.size;
        const granted = Math.max(0, Math.min(bytes, this.#maxHeldBytes - used));
        this.#windowsGrown += granted;
        return granted;
      },
      unreserve: (bytes) => {
        this.#windowsGrown = Math.max(0, this.#windowsGrown - bytes);
      },
    };
  }

  #ping(): void {
    this.#pingAt = performance.now();
    this.send({ tag: Tag.PING, seq: ++this.#pingSeq });
  }

  /** A PONG: if it answers the latest PING, keep its round trip among the latest. */
  #onPong(seq: number): void {
    if (seq !== this.#pingSeq || this.#pingAt < 0) return;
    const sample = Math.max(performance.now() - this.#pingAt, 0.01);
    this.#pingAt = -1;
    if (this.#rttSamples.push(sample) > RTT_SAMPLES) this.#rttSamples.shift();
    this.#rtt = Math.min(...this.#rttSamples);
  }

  /** Bytes queued for the peer and not yet written. */
  get sendQueued(): number {
    return this.#writer.queued;
  }

  /** The open TCP streams. */
  streams(): Stream[] {
    return [...this.#streams.values()].filter((c): c is Stream => c instanceof Stream);
  }

  /** The end, once it has happened. */
  get ended(): SessionEnd | null {
    return this.#ended;
  }

  /** Resolves when the session has ended. */
  done(): Promise<void> {
    if (this.#ended) return Promise.resolve();
    return new Promise((resolve) => this.#endWaiters.push(resolve));
  }

  /** StreamHost: queue one stream DATA frame (see {@linkcode StreamHost.sendFrame}). */
  sendFrame(frame: Uint8Array, written?: (frame: Uint8Array) => void): void {
    if (this.#ended) return;
    this.#tcpFrame(frame.length);
    const push = () => this.#writer.push(frame, written, true);
    if (this.#heldOpens.size === 0) push();
    else this.#withOpen(streamOfFrame(frame), push);
    this.#checkQueueCap();
  }

  /**
   * Run `push` (which queues stream `id`'s frame) after the stream's held
   * OPEN, in one write with it; or at once when no OPEN is held.
   */
  #withOpen(id: number, push: () => void): void {
    const held = this.#heldOpens.get(id);
    if (!held) return push();
    this.#heldOpens.delete(id);
    clearTimeout(held.timer);
    this.#writer.together(() => {
      this.#writer.push(held.frame);
      push();
    });
  }

  /** Queue stream `id`'s held OPEN now, if it is still held. */
  #releaseOpen(id: number): void {
    this.#withOpen(id, () => {});
  }

  /** Queue one message for the peer; throws TypeError for a message this side may not send. */
  send(msg: Message): void {
    if (!SENDERS[msg.tag].includes(this.role)) {
      throw new TypeError(`Cannot send ${tagName(msg.tag)}: a ${this.role} may not send it`);
    }
    if (msg.tag === Tag.OPEN_ERR) {
      this.#dropEarly(msg.stream);
      // This session refused the open already; the Console has its answer.
      if (this.#abandoned.delete(msg.stream)) return;
    }
    if (msg.tag === Tag.ACCEPT) this.#endPending();
    if (this.#ended) return;
    if (msg.tag === Tag.PONG) this.#writer.pushPong(encodeMessage(msg));
    else if (this.#heldOpens.size > 0 && "stream" in msg) {
      this.#withOpen(msg.stream, () => this.#writer.push(encodeMessage(msg)));
    } else this.#writer.push(encodeMessage(msg));
    this.#checkQueueCap();
  }

  /** A promise while the send queue is over its high-water mark, else null. */
  backpressure(): Promise<void> | null {
    return this.#writer.backpressure();
  }

  /** StreamHost: the channel is finished; forget it. */
  release(channel: Channel): void {
    if (this.#streams.get(channel.id) === channel) this.#streams.delete(channel.id);
  }

  /** StreamHost: a DATA body is no longer read; its read buffer may be reused. */
  returnData(data: Uint8Array): void {
    this.#reader.giveBack(data);
  }

  /** StreamHost: bytes held for the peer grew or shrank by `delta`. */
  held(delta: number): void {
    this.#held += delta;
  }

  /** A peer that lets this much pile up is not reading: give up on it. */
  #checkQueueCap(): void {
    const queued = this.#writer.queued;
    if (queued <= SEND_QUEUE_CAP || this.#ended) return;
    const mib = Math.round(SEND_QUEUE_CAP / (1024 * 1024));
    this.#log.error("the peer is not reading: send queue over its hard cap, closing the session", {
      queued,
      cap: SEND_QUEUE_CAP,
    });
    this.#finish(
      "dead-peer",
      `the peer read nothing while more than ${mib} MiB waited to be sent`,
      false,
      false,
    );
  }

  /** Console: the Daemon is accepted (or gone); its pending budget and timeout no longer apply. */
  #endPending(): void {
    if (this.#pending) clearTimeout(this.#pending.timer);
    this.#pending = null;
  }

  #pendingExpired(timeoutMs: number): void {
    this.#pending = null;
    if (this.#ended) return;
    const wait = timeoutMs % 1000 === 0 ? `${timeoutMs / 1000} s` : `${timeoutMs} ms`;
    this.#log.warn("no answer from the Console operator in time, rejecting the pending Daemon", {
      pendingTimeoutMs: timeoutMs,
    });
    void this.reject("rejected", `the Console operator did not answer within ${wait}`);
  }

  /**
   * Console: count a batch from a Daemon waiting for acceptance. Over its
   * budget it is rejected, and false says to dispatch none of the batch.
   */
  #withinPendingBudget(count: number): boolean {
    const pending = this.#pending;
    if (!pending) return true;
    pending.messages += count;
    const bytes = this.#reader.bytesRead - pending.bytesAtStart;
    const { budget } = pending;
    if (pending.messages <= budget.messages && bytes <= budget.bytes) return true;
    this.#endPending();
    this.#log.warn("a Daemon not yet accepted sent more than its budget, rejecting it", {
      messages: pending.messages,
      bytes,
      maxMessages: budget.messages,
      maxBytes: budget.bytes,
    });
    void this.reject(
      "protocol",
      `sent ${pending.messages} messages (${bytes} bytes) while waiting for acceptance; at most ${budget.messages} messages and ${budget.bytes} bytes are allowed`,
    );
    return false;
  }

  /** Read and dispatch until the link ends. Call once. */
  async run(): Promise<void> {
    try {
      while (!this.#ended) {
        const batch = await this.#reader.batch();
        if (batch === null) {
          this.#finish("dead-peer", "the peer closed the connection", true, false);
          return;
        }
        this.#lastHeard = Date.now();
        if (!this.#withinPendingBudget(batch.length)) return;
        for (const msg of batch) {
          if (this.#ended) return;
          this.#dispatch(msg);
        }
        // Owing the peer too many answers: read nothing more until it takes them.
        const owed = this.#writer.controlBackpressure();
        if (owed) {
          this.#readPaused = true;
          await Promise.race([owed, this.done()]);
          this.#readPaused = false;
        }
      }
    } catch (err) {
      if (this.#ended) return;
      if (err instanceof ProtocolError) {
        this.#log.error("peer broke the protocol, closing the session", { error: err.message });
        this.close("protocol", err.message);
      } else {
        this.#finish("dead-peer", `Cannot read from the peer: ${errorMessage(err)}`, false, false);
      }
    }
  }

  /** Log a limit when it is hit: at once, then at most every 10 s with a count. */
  #limitHit(limit: Limit): void {
    const refused = this.#limits[limit].hit();
    if (!refused) return;
    if (limit === "streams") {
      this.#log.warn("stream limit reached, refusing open", {
        limit: this.#maxStreams,
        refused,
      });
    } else {
      this.#log.warn("held-bytes limit reached, refusing open", {
        limit: this.#maxHeldBytes,
        held: this.#held,
        refused,
      });
    }
  }

  /** "64 MiB" for a byte count of whole MiB, else the bytes. */
  #heldText(): string {
    const mib = this.#maxHeldBytes / (1024 * 1024);
    return Number.isInteger(mib) ? `${mib} MiB` : `${this.#maxHeldBytes} bytes`;
  }

  /** Daemon: forget the pending open `id` and whatever was held for it. */
  #dropEarly(id: number): EarlyData | undefined {
    const entry = this.#early.get(id);
    if (!entry) return undefined;
    this.#early.delete(id);
    this.#held -= entry.bytes;
    return entry;
  }

  #dispatch(msg: Message): void {
    if (!SENDERS[msg.tag].includes(this.#peer)) {
      throw new ProtocolError(`Cannot accept ${tagName(msg.tag)}: a ${this.#peer} may not send it`);
    }
    switch (msg.tag) {
      case Tag.DATA:
      case Tag.WINDOW:
      case Tag.FIN:
      case Tag.DATAGRAM:
      case Tag.RESET:
        return this.#onStreamMessage(msg);
      case Tag.PING:
        this.send({ tag: Tag.PONG, seq: msg.seq });
        return;
      case Tag.PONG:
        return this.#onPong(msg.seq);
      case Tag.CHAT:
        this.#handlers.onChat(msg.text);
        return;
      case Tag.CLOSE:
        this.#finish(msg.code, msg.reason, true, msg.final);
        return;
      case Tag.OPEN:
        return this.#onOpen(msg);
      case Tag.OPEN_OK:
        return this.#onOpenOk(msg);
      case Tag.OPEN_ERR:
        this.#settleOpen(msg.stream, new OpenError(msg.code, msg.reason));
        return;
      case Tag.RESOLVE:
        this.#handlers.onResolve?.(msg);
        return;
      case Tag.RESOLVE_RESULT:
        return this.#onResolveResult(msg);
      default:
        throw new ProtocolError(
          `Cannot accept ${tagName(msg.tag)}: not valid in an established session`,
        );
    }
  }

  /** A message for one stream or UDP flow: data, credit, FIN, a datagram or a reset. */
  #onStreamMessage(
    msg: DataMessage | WindowMessage | FinMessage | DatagramMessage | ResetMessage,
  ): void {
    switch (msg.tag) {
      case Tag.DATA: {
        this.#tcpFrame(msg.data.length);
        const stream = this.#tcp(msg.stream, "DATA");
        if (stream) stream.onData(msg.data);
        else this.#holdEarly(msg.stream, msg.data);
        return;
      }
      case Tag.WINDOW:
        this.#tcp(msg.stream, "WINDOW")?.onWindow(msg.credit);
        return;
      case Tag.FIN: {
        const stream = this.#tcp(msg.stream, "FIN");
        if (stream) stream.onFin();
        else this.#holdEarly(msg.stream, null);
        return;
      }
      case Tag.DATAGRAM: {
        const channel = this.#streams.get(msg.stream);
        if (!channel) return; // a flow we closed; datagrams may still be in flight
        if (!channel.onDatagram) {
          throw new ProtocolError(`Cannot accept DATAGRAM: stream ${msg.stream} is TCP`);
        }
        channel.onDatagram(msg.data);
        return;
      }
      case Tag.RESET: {
        if (this.#pendingOpens.has(msg.stream)) {
          this.#settleOpen(msg.stream, new OpenError("error", msg.reason));
          return;
        }
        this.#dropEarly(msg.stream);
        this.#streams.get(msg.stream)?.onReset(msg.reason);
        return;
      }
    }
  }

  /** Daemon: the Console asks for a stream; refuse it over a limit, else hand it to the owner. */
  #onOpen(msg: OpenMessage): void {
    if (this.#streams.has(msg.stream) || this.#early.has(msg.stream)) {
      throw new ProtocolError(`Cannot open stream ${msg.stream}: already open`);
    }
    // Opens still reaching their target (TCP or UDP) count as streams.
    if (this.#streams.size + this.#early.size >= this.#maxStreams) {
      this.#refuseOpen(msg.stream, "streams");
      return;
    }
    if (this.#held >= this.#maxHeldBytes) {
      this.#refuseOpen(msg.stream, "held");
      return;
    }
    this.#early.set(msg.stream, { udp: msg.proto === "udp", frames: [], bytes: 0 });
    this.#handlers.onOpen?.(msg);
  }

  /** Daemon: answer OPEN `id` with OPEN_ERR `limit`, naming the limit it hit. */
  #refuseOpen(id: number, limit: Limit): void {
    this.#limitHit(limit);
    this.send({
      tag: Tag.OPEN_ERR,
      stream: id,
      code: "limit",
      reason: limit === "streams"
        ? `the Daemon holds ${this.#maxStreams} streams already`
        : `the Daemon holds ${this.#heldText()} for the Console already`,
    });
  }

  /** Console: the Daemon reached an open's target. */
  #onOpenOk(msg: OpenOkMessage): void {
    if (!this.#pendingOpens.has(msg.stream)) {
      // We gave up on this open (timeout); the Daemon connected anyway.
      this.send({ tag: Tag.RESET, stream: msg.stream, reason: "open abandoned by the Console" });
      return;
    }
    this.#settleOpen(msg.stream, msg.address);
  }

  /** Console: the Daemon answered a resolve; a late answer (after the timeout) is dropped. */
  #onResolveResult(msg: ResolveResultMessage): void {
    const waiter = this.#resolves.get(msg.id);
    if (!waiter) return;
    this.#resolves.delete(msg.id);
    clearTimeout(waiter.timer);
    if (msg.error !== null) waiter.reject(new OpenError("unresolvable", msg.error));
    else waiter.resolve([...msg.addresses]);
  }

  /**
   * Daemon: keep DATA (or FIN, as null) for a stream whose target is still
   * being reached. Anything else for an unknown stream is late and dropped.
   */
  #holdEarly(id: number, data: Uint8Array | null): void {
    const held = this.#early.get(id);
    if (!held) return;
    if (held.udp) {
      throw new ProtocolError(`Cannot accept ${data ? "DATA" : "FIN"}: stream ${id} is a UDP flow`);
    }
    if (held.frames.at(-1) === null) {
      throw new ProtocolError(`Cannot accept ${data ? "DATA" : "FIN"} on stream ${id}: after FIN`);
    }
    if (data !== null) {
      held.bytes += data.length;
      this.#held += data.length;
      if (held.bytes > INITIAL_WINDOW_BYTES) {
        throw new ProtocolError(
          `Cannot accept DATA on stream ${id}: ${held.bytes} bytes before OPEN_OK exceeds the window of ${INITIAL_WINDOW_BYTES}`,
        );
      }
      if (this.#held > this.#maxHeldBytes) {
        // This open is not reached yet: refuse it now, and drop what it sent.
        this.#refuseOpen(id, "held");
        this.#abandoned.add(id);
        return;
      }
    }
    // A copy: `data` may be a view of the read buffer, and this waits for the target.
    held.frames.push(data && data.slice());
  }

  /** The TCP stream `id`, or undefined if it is gone; a UDP flow here is a protocol error. */
  #tcp(id: number, what: string): Stream | undefined {
    const channel = this.#streams.get(id);
    if (channel === undefined || channel instanceof Stream) return channel;
    throw new ProtocolError(`Cannot accept ${what}: stream ${id} is a UDP flow`);
  }

  #settleOpen(id: number, result: string | Error): void {
    const pending = this.#pendingOpens.get(id);
    if (!pending) return;
    this.#pendingOpens.delete(id);
    clearTimeout(pending.timer);
    if (typeof result === "string") {
      if (pending.channel.ended) {
        // It sent early and ended (its client left) before the Daemon answered.
        this.send({ tag: Tag.RESET, stream: id, reason: "the client left before the open" });
      } else {
        this.#streams.set(id, pending.channel);
      }
      pending.resolve(result);
    } else {
      if (pending.channel instanceof Stream) pending.channel.discard();
      pending.reject(result);
    }
  }

  /**
   * Console: open a stream or UDP flow to `target` on the Daemon's side.
   * `create` makes the local side for the new stream id. Resolves once the
   * Daemon reached the target, with the channel (a TCP stream is not started
   * yet: call `start()`) and the address reached; rejects with OpenError (the
   * target failed) or SessionClosedError.
   */
  open<C extends Channel>(
    target: OpenTarget,
    create: (id: number) => C,
    early = false,
  ): Promise<{ channel: C; address: string }> {
    if (this.#ended) {
      return Promise.reject(
        new SessionClosedError(this.#ended.code, "Cannot open stream: session ended"),
      );
    }
    if (this.#streams.size + this.#pendingOpens.size >= this.#maxStreams) {
      this.#limitHit("streams");
      return Promise.reject(
        new OpenError(
          "limit",
          `Cannot open stream: ${this.#maxStreams} streams are open already`,
        ),
      );
    }
    if (this.#held >= this.#maxHeldBytes) {
      this.#limitHit("held");
      return Promise.reject(
        new OpenError(
          "limit",
          `Cannot open stream: ${this.#heldText()} received from the Daemon wait for their clients already`,
        ),
      );
    }
    const id = this.#nextStream++;
    const channel = create(id);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#settleOpen(
          id,
          new OpenError("timeout", `the Daemon did not answer within ${OPEN_TIMEOUT_MS} ms`),
        );
        this.send({ tag: Tag.RESET, stream: id, reason: "open timed out" });
      }, OPEN_TIMEOUT_MS);
      this.#pendingOpens.set(id, {
        channel,
        timer,
        resolve: (address) => resolve({ channel, address }),
        reject,
      });
      const open: OpenMessage = { tag: Tag.OPEN, stream: id, ...target };
      if (!early || !this.#earlyData || !(channel instanceof Stream)) return this.send(open);
      // The OPEN goes with the client's first bytes, or alone after a moment.
      this.#heldOpens.set(id, {
        frame: encodeMessage(open),
        timer: setTimeout(() => this.#releaseOpen(id), EARLY_OPEN_WAIT_MS),
      });
      channel.start();
    });
  }

  /**
   * Daemon: the target for OPEN `id` is reached; register `channel` and tell
   * the Console. Returns false (and registers nothing) when the session has
   * ended; the caller then closes its socket. A TCP stream is started by the
   * caller after this.
   */
  accept(id: number, channel: Channel, address: string): boolean {
    // Refused meanwhile (held bytes): the Console has its OPEN_ERR already.
    if (this.#abandoned.delete(id)) return false;
    const held = this.#dropEarly(id);
    if (this.#ended) return false;
    this.#streams.set(id, channel);
    this.send({ tag: Tag.OPEN_OK, stream: id, address });
    if (held && channel instanceof Stream) {
      for (const data of held.frames) {
        if (data === null) channel.onFin();
        else channel.onData(data);
      }
    }
    return true;
  }

  /**
   * Console: open a TCP stream to `target` joined to `conn`. The stream is
   * not started, so the caller can first answer its client (SOCKS); call
   * `start()` then.
   */
  openStream(
    conn: ByteConn,
    target: Omit<OpenTarget, "proto">,
    options: StreamOptions & { early?: boolean },
  ): Promise<{ stream: Stream; address: string }> {
    return this.open(
      { ...target, proto: "tcp" },
      (id) =>
        new Stream(id, conn, this, {
          log: options.log.child({ stream: id }),
          onEnd: options.onEnd,
        }),
      options.early,
    ).then(({ channel, address }) => ({ stream: channel, address }));
  }

  /** Daemon: join `conn` to OPEN `id` and start relaying; null (and `conn` closed) if the session ended. */
  acceptStream(id: number, conn: ByteConn, address: string, options: StreamOptions): Stream | null {
    const stream = new Stream(id, conn, this, options);
    if (!this.accept(id, stream, address)) {
      conn.close();
      return null;
    }
    stream.start();
    return stream;
  }

  /**
   * Queue one UDP datagram. Returns "sent", or why it dropped it: "linkBusy"
   * when the link's send queue is already long, "tcpBusy" when TCP streams
   * are busy and UDP has used its share. UDP never holds up TCP streams.
   */
  sendDatagram(id: number, data: Uint8Array): "sent" | "linkBusy" | "tcpBusy" {
    if (this.#ended || this.#writer.queued > DATAGRAM_HIGH_WATER) return "linkBusy";
    if (Date.now() - this.#lastTcpAt < TCP_ACTIVE_MS) {
      // TCP is busy: UDP gets one datagram per TCP frame, so a UDP flood
      // cannot take the processes' time from TCP streams. The caller stops
      // receiving for a moment, and the kernel drops the excess.
      if (this.#udpTokens <= 0) return "tcpBusy";
      this.#udpTokens--;
    }
    this.#writer.push(encodeMessage({ tag: Tag.DATAGRAM, stream: id, data }), undefined, true);
    return "sent";
  }

  /** A TCP DATA frame went or came: UDP earns a token, and TCP may count as busy. */
  #tcpFrame(bytes: number): void {
    const now = Date.now();
    if (now - this.#tcpWindowAt >= TCP_ACTIVE_MS) {
      this.#tcpWindowAt = now;
      this.#tcpWindowBytes = 0;
    }
    this.#tcpWindowBytes += bytes;
    if (this.#tcpWindowBytes >= TCP_BUSY_BYTES) this.#lastTcpAt = now;
    if (this.#udpTokens < UDP_TOKENS_MAX) this.#udpTokens++;
  }

  /** Console: resolve `host` with the Daemon's resolver. */
  resolve(host: string): Promise<string[]> {
    if (this.#ended) {
      return Promise.reject(
        new SessionClosedError(this.#ended.code, "Cannot resolve: session ended"),
      );
    }
    const id = this.#nextResolve++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#resolves.delete(id);
        reject(
          new OpenError(
            "timeout",
            `Cannot resolve "${host}": the Daemon did not answer within ${RESOLVE_TIMEOUT_MS} ms`,
          ),
        );
      }, RESOLVE_TIMEOUT_MS);
      this.#resolves.set(id, { resolve, reject, timer });
      this.send({ tag: Tag.RESOLVE, id, host });
    });
  }

  /** Send a chat message. */
  chat(text: string): void {
    this.send({ tag: Tag.CHAT, text });
  }

  /** Wait until no stream is open, or `ms` has passed. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.#streams.size > 0 && Date.now() < deadline && !this.#ended) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(50, deadline - Date.now())));
    }
  }

  /** End the session: tell the peer why, flush briefly, close everything. */
  close(code: CloseCode, reason: string, options: { final?: boolean } = {}): Promise<void> {
    if (this.#ended) return Promise.resolve();
    this.send({ tag: Tag.CLOSE, code, reason, final: options.final ?? false });
    return this.#flushAndFinish(code, reason, options.final ?? false);
  }

  /** Refuse a session still waiting for acceptance, with a coded reason. */
  reject(code: RejectCode, reason: string): Promise<void> {
    if (this.#ended) return Promise.resolve();
    this.send({ tag: Tag.REJECT, code, reason });
    return this.#flushAndFinish("closed", `rejected: ${reason}`, true);
  }

  #flushAndFinish(code: CloseCode, reason: string, final: boolean): Promise<void> {
    const flushed = this.#writer.idle();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const bounded = Promise.race([
      flushed,
      new Promise<void>((r) => (timer = setTimeout(r, 1000))),
    ]);
    return bounded.finally(() => {
      clearTimeout(timer);
      this.#finish(code, reason, false, final);
    });
  }

  #beat(): void {
    if (this.#ended) return;
    const silent = Date.now() - this.#lastHeard;
    if (silent > this.#deadPeerMs) {
      const seconds = Math.round(silent / 1000);
      if (this.#readPaused) {
        this.#log.warn("peer reads nothing we send, ending the session", {
          silentMs: silent,
          owed: this.#writer.queuedControl,
        });
      } else {
        this.#log.warn("peer is silent, ending the session", { silentMs: silent });
      }
      this.#finish(
        "dead-peer",
        this.#readPaused
          ? `the peer read none of our answers for ${seconds} s`
          : `no word from the peer for ${seconds} s`,
        false,
        false,
      );
      return;
    }
    if (++this.#ticks % this.#ticksPerPing === 0) this.#ping();
    if (this.#spares.length > 0 && Date.now() - this.#lastTcpAt > SPARE_IDLE_MS) this.#spares = [];
    for (const channel of this.#streams.values()) {
      if (channel instanceof Stream && channel.quietWhileHalfClosed(this.#halfClosedTicks)) {
        channel.reset(
          `half-closed and idle for ${Math.round(this.#halfClosedIdleMs / 1000)} s`,
        );
      }
    }
  }

  #finish(code: CloseCode, reason: string, remote: boolean, final: boolean): void {
    if (this.#ended) return;
    this.#ended = { code, reason, remote, final };
    clearInterval(this.#heartbeat);
    closeQuietly(this.#link);
    this.#reader.release();
    for (const id of [...this.#pendingOpens.keys()]) {
      this.#settleOpen(
        id,
        new SessionClosedError(code, `Cannot open stream: session ended (${reason})`),
      );
    }
    for (const [id, waiter] of this.#resolves) {
      clearTimeout(waiter.timer);
      waiter.reject(new SessionClosedError(code, `Cannot resolve: session ended (${reason})`));
      this.#resolves.delete(id);
    }
    this.#endPending();
    for (const held of this.#heldOpens.values()) clearTimeout(held.timer);
    this.#heldOpens.clear();
    this.#early.clear();
    this.#abandoned.clear();
    for (const stream of [...this.#streams.values()]) stream.abort(`session ended: ${reason}`);
    this.#streams.clear();
    this.#held = 0;
    this.#spares = [];
    this.#handlers.onEnd(this.#ended);
    for (const wake of this.#endWaiters.splice(0)) wake();
  }
}
