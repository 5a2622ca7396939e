/**
 * Streams multiplexed over one session link, with credit-based flow control
 * and half-close carried one direction at a time.
 *
 * A {@linkcode Stream} joins one local TCP connection (the client's on the
 * Console, the target's on the Daemon) to one stream id on the session. It
 * reads the local socket only while it holds credit from the peer, so a peer
 * that stops reading stalls only its own stream, and it grants credit back
 * only after bytes reached the local socket, so memory per stream is bounded
 * by its receive window: {@linkcode INITIAL_WINDOW_BYTES}, or more once the
 * window grew (see {@linkcode WindowHost}).
 *
 * @module
 */

import { writeFrameHeader } from "./codec.ts";
import { closeQuietly, errorMessage, ProtocolError } from "./errors.ts";
import { writeAll } from "./io.ts";
import type { Logger } from "./log.ts";
import {
  FRAME_HEADER_BYTES,
  INITIAL_WINDOW_BYTES,
  MAX_DATA_BYTES,
  type Message,
  STREAM_WINDOW_LIMIT_BYTES,
  Tag,
} from "./protocol.ts";

/** The byte-stream side of a link or socket, as Deno's `Conn` has it. */
export interface ByteConn {
  /** Read into `p`; resolves with the count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Write some of `p`; resolves with how many bytes were taken. */
  write(p: Uint8Array): Promise<number>;
  /** Half-close: send end of stream, keep reading. */
  closeWrite(): Promise<void>;
  /** Close both directions. */
  close(): void;
}

/**
 * Anything a session multiplexes under a stream id: a TCP {@linkcode Stream}
 * or a UDP flow.
 */
export interface Channel {
  /** Its stream id on the session. */
  readonly id: number;
  /** True once it is finished, either way. */
  readonly ended: boolean;
  /** The peer dropped it. */
  onReset(reason: string): void;
  /** Close it locally without telling the peer (the session is gone). */
  abort(reason: string): void;
  /** UDP flows only: one datagram from the peer. */
  onDatagram?(data: Uint8Array): void;
}

/**
 * What a stream needs from its session to grow its receive window, when both
 * sides tune windows. A stream that receives data fast grows: when it took
 * half its window (its local socket took the bytes) in less than two round
 * trips' worth of time per window, the window doubles, up to `max` and
 * within the session's budget for the sum of all windows.
 */
export interface WindowHost {
  /** Largest window a stream grows to. */
  readonly max: number;
  /** The session's round-trip time in milliseconds, or 0 while unknown (it then measures it). */
  rttMs(): number;
  /** Take up to `bytes` more of the session's window budget; returns how many were taken. */
  reserve(bytes: number): number;
  /** Give `bytes` of the budget back (a stream that grew has ended). */
  unreserve(bytes: number): void;
}

/**
 * Full-size read buffers (header and the largest DATA body) shared by a
 * session's streams: a busy stream takes one for each read and gives it back
 * once the link took its frame, so a fast transfer allocates no buffer per
 * read (garbage at the link's rate grows a process by tens of MiB before the
 * garbage collector frees it).
 */
export interface BufferPool {
  /** A spare full-size buffer, or undefined if none is spare. */
  take(): Uint8Array | undefined;
  /** A full-size buffer whose frame the link took; the pool keeps it, or drops it when full. */
  give(buffer: Uint8Array): void;
}

/** What a stream needs from its session. */
export interface StreamHost {
  /**
   * Queue one encoded frame for the link. `written`, if given, is called once
   * the link has taken the frame's bytes, so its buffer may be reused; never
   * if the frame is dropped.
   */
  sendFrame(frame: Uint8Array, written?: (frame: Uint8Array) => void): void;
  /** Queue one message for the link. */
  send(msg: Message): void;
  /** A promise while the link's send queue is over its high-water mark, else null. */
  backpressure(): Promise<void> | null;
  /** The channel is finished; forget it. */
  release(channel: Channel): void;
  /**
   * Bytes from the peer this stream holds until its local socket takes them
   * grew (positive) or shrank (negative) by `delta`; the session keeps the total.
   */
  held?(delta: number): void;
  /** Set when both sides tune windows: a stream's receive window may grow. */
  readonly windows?: WindowHost | null;
  /** Spare read buffers shared by the streams; without it each stream keeps a few. */
  readonly buffers?: BufferPool;
  /**
   * A DATA body `onData` was given is no longer read: written to the local
   * socket, or copied. The session may then reuse the buffer it is a view of.
   */
  returnData?(data: Uint8Array): void;
}

/** Final figures of a stream, for logs and status. */
export interface StreamSummary {
  /** The stream id. */
  readonly id: number;
  /** Bytes read from the local socket and sent to the peer. */
  readonly bytesSent: number;
  /** Bytes received from the peer and written to the local socket. */
  readonly bytesReceived: number;
  /** From open to end, in milliseconds. */
  readonly durationMs: number;
  /** Why it ended: "done" after a clean close both ways, else the reset reason. */
  readonly reason: string;
}

/** Options for {@linkcode Stream}. */
export interface StreamOptions {
  /** Logger for the stream's records, scoped with its id. */
  readonly log: Logger;
  /** Called once when the stream is finished. */
  readonly onEnd?: (summary: StreamSummary) => void;
}

const SMALL_READ = 4 * 1024;
/** A full-size read buffer: header and the largest DATA body. */
export const FULL_BUFFER = FRAME_HEADER_BYTES + MAX_DATA_BYTES;
/** Full-size buffers a busy stream keeps for reuse once the link took their frame. */
const SPARE_BUFFERS = 2;
const GRANT_THRESHOLD = INITIAL_WINDOW_BYTES / 4;

// Kept here too, for the modules that import it from mux.ts.
export { writeAll };

/**
 * One forwarded connection on a session.
 *
 * @example
 * ```ts ignore
 * const stream = new Stream(7, conn, host, { log });
 * stream.start(); // after the open succeeded
 * ```
 */
export class Stream implements Channel {
  /** The stream id on the session. */
  readonly id: number;
  /** The local socket the stream relays. */
  readonly conn: ByteConn;
  /** When the stream was made (epoch milliseconds). */
  readonly openedAt: number = Date.now();
  /** Bytes read from the local socket and sent to the peer so far. */
  bytesSent = 0;
  /** Bytes received from the peer and written to the local socket so far. */
  bytesReceived = 0;

  #host: StreamHost;
  #log: Logger;
  #onEnd?: (summary: StreamSummary) => void;

  #sendCredit = INITIAL_WINDOW_BYTES;
  /** Full-size read buffers whose frames were written: a busy stream allocates none per read. */
  #spare: Uint8Array[] = [];
  /** True while reads fill whole full-size buffers: only then are spares worth keeping. */
  #streaming = false;
  #recycle = (frame: Uint8Array): void => {
    if (!this.#streaming || frame.buffer.byteLength !== FULL_BUFFER || frame.byteOffset !== 0) {
      return;
    }
    const full = new Uint8Array(frame.buffer as ArrayBuffer);
    if (this.#host.buffers) this.#host.buffers.give(full);
    else if (this.#spare.length < SPARE_BUFFERS) this.#spare.push(full);
  };
  #creditWaiter: (() => void) | null = null;

  #recvQueue: Uint8Array[] = [];
  #recvHead = 0;
  /** Bytes received and not yet written to the local socket (the chunk being written included). */
  #recvBytes = 0;
  /** Bytes the peer may still send before it needs more credit from us. */
  #recvWindow = INITIAL_WINDOW_BYTES;
  /** The receive window: the most bytes the peer may have in flight or held here. */
  #window = INITIAL_WINDOW_BYTES;
  /** When the current window-tuning epoch began (performance.now()), and bytesReceived then. */
  #epochAt = performance.now();
  #epochBytes = 0;
  /** The most credit the peer may give: twice the largest window it may grow to. */
  #creditCap: number;
  #ungranted = 0;
  #writing = false;

  #started = false;
  #finSent = false;
  #finReceived = false;
  /** Liveness ticks in a row a half-closed stream moved no byte, and its byte count then. */
  #quietTicks = 0;
  #quietBytes = -1;
  #writeClosed = false;
  #ended = false;

  /** A stream `id` relaying `conn` over `host`; it moves no byte before `start()`. */
  constructor(id: number, conn: ByteConn, host: StreamHost, options: StreamOptions) {
    this.id = id;
    this.conn = conn;
    this.#host = host;
    this.#log = options.log;
    this.#onEnd = options.onEnd;
    this.#creditCap = 2 * (host.windows ? STREAM_WINDOW_LIMIT_BYTES : INITIAL_WINDOW_BYTES);
  }

  /** The receive window now: {@linkcode INITIAL_WINDOW_BYTES}, or more once it grew. */
  get window(): number {
    return this.#window;
  }

  /** True once the stream has ended and released its socket. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Called on each liveness tick: true once the stream has been half-closed
   * (one direction finished) and has moved no byte either way for `ticks`
   * calls in a row. A peer that never closes its side then holds nothing.
   */
  quietWhileHalfClosed(ticks: number): boolean {
    if (this.#ended || !(this.#finSent || this.#finReceived)) return false;
    const bytes = this.bytesSent + this.bytesReceived;
    if (bytes !== this.#quietBytes) {
      this.#quietBytes = bytes;
      this.#quietTicks = 0;
      return false;
    }
    return ++this.#quietTicks >= ticks;
  }

  /**
   * Start relaying: read the local socket, and write to it what the peer
   * sent. Called once the open succeeded (after a SOCKS reply), or with OPEN
   * (early data). Until then bytes from the peer are held (within the
   * window), so nothing reaches the local socket before its owner's own
   * reply. Idempotent.
   */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#pump().catch((err) => this.reset(`internal error: ${errorMessage(err)}`));
    if (!this.#writing && (this.#recvQueue.length > 0 || this.#finReceived)) this.#drain();
  }

  /**
   * The open failed: stop reading, tell nobody. The caller closes the socket
   * and reports the failure itself; the peer has nothing for this stream.
   */
  discard(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#dropReceived();
    this.#spare = [];
    const wake = this.#creditWaiter;
    this.#creditWaiter = null;
    wake?.();
  }

  async #pump(): Promise<void> {
    let size = SMALL_READ;
    while (!this.#ended) {
      while (this.#sendCredit === 0 && !this.#ended) {
        await new Promise<void>((resolve) => (this.#creditWaiter = resolve));
      }
      if (this.#ended) return;
      const want = Math.min(size, this.#sendCredit);
      const spare = want === MAX_DATA_BYTES
        ? (this.#host.buffers?.take() ?? this.#spare.pop())
        : undefined;
      const buf = spare ?? new Uint8Array(FRAME_HEADER_BYTES + want);
      let n: number | null;
      try {
        n = await this.conn.read(buf.subarray(FRAME_HEADER_BYTES));
      } catch (err) {
        if (!this.#ended) this.reset(`read failed: ${errorMessage(err)}`);
        return;
      }
      if (this.#ended) return;
      if (n === null) {
        this.#finSent = true;
        this.#host.send({ tag: Tag.FIN, stream: this.id });
        this.#maybeDone();
        return;
      }
      // A burst that ends drops its spare buffers: an idle stream holds only its read buffer.
      this.#streaming = n === MAX_DATA_BYTES;
      if (!this.#streaming) this.#spare = [];
      this.#sendCredit -= n;
      this.bytesSent += n;
      writeFrameHeader(buf, Tag.DATA, this.id, n);
      this.#host.sendFrame(buf.subarray(0, FRAME_HEADER_BYTES + n), this.#recycle);
      // A busy socket earns a large buffer; an idle one keeps a small one.
      if (n === want && size < MAX_DATA_BYTES) size = Math.min(size * 4, MAX_DATA_BYTES);
      else if (n < size / 8 && size > SMALL_READ) size = Math.max(size / 4, SMALL_READ);
      const wait = this.#host.backpressure();
      if (wait) await wait;
    }
  }

  /** Bytes from the peer. Throws ProtocolError when the peer overran its credit. */
  onData(data: Uint8Array): void {
    if (this.#ended) return;
    if (this.#finReceived) {
      throw new ProtocolError(`Cannot accept DATA on stream ${this.id}: after FIN`);
    }
    if (data.length > this.#recvWindow) {
      throw new ProtocolError(
        `Cannot accept DATA on stream ${this.id}: ${data.length} bytes exceeds the remaining credit of ${this.#recvWindow}`,
      );
    }
    this.#recvWindow -= data.length;
    // `data` may be a view of the session's read buffer. It is kept as it is
    // only when it is the next to be written, else copied: a reader that
    // stalls pins at most two frames of the session's read buffers.
    const waits = !this.#started || this.#recvHead < this.#recvQueue.length;
    this.#recvQueue.push(waits ? data.slice() : data);
    if (waits) this.#host.returnData?.(data);
    this.#recvBytes += data.length;
    this.#host.held?.(data.length);
    if (this.#started && !this.#writing) this.#drain();
  }

  /** More credit from the peer. */
  onWindow(credit: number): void {
    if (this.#ended) return;
    this.#sendCredit += credit;
    if (this.#sendCredit > this.#creditCap) {
      throw new ProtocolError(
        `Cannot accept WINDOW on stream ${this.id}: credit ${this.#sendCredit} overflows`,
      );
    }
    const wake = this.#creditWaiter;
    this.#creditWaiter = null;
    wake?.();
  }

  /** The peer will send no more bytes. */
  onFin(): void {
    if (this.#ended) return;
    if (this.#finReceived) {
      throw new ProtocolError(`Cannot accept FIN on stream ${this.id}: sent twice`);
    }
    this.#finReceived = true;
    if (this.#started && !this.#writing) this.#drain();
  }

  /** The peer dropped the stream. */
  onReset(reason: string): void {
    this.#end(`reset by peer: ${reason}`);
  }

  /** Drop the stream now and tell the peer why. */
  reset(reason: string): void {
    if (this.#ended) return;
    this.#host.send({ tag: Tag.RESET, stream: this.id, reason });
    this.#end(reason);
  }

  /** Close the local socket without telling the peer (the session is gone). */
  abort(reason: string): void {
    this.#end(reason);
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#recvHead < this.#recvQueue.length && !this.#ended) {
        const chunk = this.#recvQueue[this.#recvHead++];
        await writeAll(this.conn, chunk);
        this.#host.returnData?.(chunk);
        // An ended stream let go of everything it held, this chunk included.
        if (!this.#ended) {
          this.#recvBytes -= chunk.length;
          this.#host.held?.(-chunk.length);
        }
        this.bytesReceived += chunk.length;
        this.#ungranted += chunk.length;
        const empty = this.#recvHead === this.#recvQueue.length;
        if (empty) {
          this.#recvQueue = [];
          this.#recvHead = 0;
        }
        // Grant in batches only: a WINDOW after every small chunk made each
        // request/response round trip wait ~40 ms behind Nagle's algorithm
        // (the peer delays its ACK of that WINDOW) on the Console's link,
        // which cannot set TCP_NODELAY. Below the threshold the peer still
        // holds at least 3/4 of its window, so it never waits on us.
        if (!this.#ended && this.#ungranted >= GRANT_THRESHOLD) {
          const credit = this.#ungranted + this.#grow();
          this.#recvWindow += credit;
          this.#host.send({ tag: Tag.WINDOW, stream: this.id, credit });
          this.#ungranted = 0;
        }
      }
      if (this.#finReceived && !this.#writeClosed && !this.#ended) {
        this.#writeClosed = true;
        await this.conn.closeWrite();
        this.#maybeDone();
      }
    } catch (err) {
      if (!this.#ended) this.reset(`write failed: ${errorMessage(err)}`);
    } finally {
      this.#writing = false;
    }
  }

  /**
   * Window tuning, at each grant: once the local socket took half the window
   * since the epoch began, end the epoch, and if that took less than two
   * round trips per window (the peer is held back by its credit, not by the
   * link or our reader) double the window, within the session's budget.
   * Returns the extra credit to grant. A reader that takes nothing never
   * reaches a grant, so its stream never grows.
   */
  #grow(): number {
    const windows = this.#host.windows;
    if (!windows || this.#window >= windows.max) return 0;
    const taken = this.bytesReceived - this.#epochBytes;
    if (taken < this.#window / 2) return 0;
    const now = performance.now();
    const rtt = windows.rttMs();
    const fast = rtt > 0 && now - this.#epochAt < (4 * rtt * taken) / this.#window;
    this.#epochAt = now;
    this.#epochBytes = this.bytesReceived;
    if (!fast) return 0;
    const extra = windows.reserve(Math.min(this.#window, windows.max - this.#window));
    this.#window += extra;
    return extra;
  }

  #maybeDone(): void {
    if (this.#finSent && this.#writeClosed) this.#end("done");
  }

  /** Forget what the peer sent and the local socket has not taken. */
  #dropReceived(): void {
    this.#recvQueue = [];
    this.#recvHead = 0;
    if (this.#recvBytes > 0) this.#host.held?.(-this.#recvBytes);
    this.#recvBytes = 0;
  }

  #end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#streaming = false;
    this.#dropReceived();
    this.#spare = [];
    if (this.#window > INITIAL_WINDOW_BYTES) {
      this.#host.windows?.unreserve(this.#window - INITIAL_WINDOW_BYTES);
    }
    closeQuietly(this.conn); // the other direction may have closed it already
    const wake = this.#creditWaiter;
    this.#creditWaiter = null;
    wake?.();
    this.#host.release(this);
    const summary: StreamSummary = {
      id: this.id,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
      durationMs: Date.now() - this.openedAt,
      reason,
    };
    if (reason !== "done") this.#log.debug("stream reset", { reason });
    this.#onEnd?.(summary);
  }
}
