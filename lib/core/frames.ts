/**
 * Frames on a link: {@linkcode MessageReader} reads and decodes them,
 * {@linkcode FrameWriter} queues and writes them for a session, and
 * {@linkcode sendNow} writes one during the handshake.
 *
 * @module
 */

import { encodeMessage, FrameDecoder } from "./codec.ts";
import { SessionClosedError } from "./errors.ts";
import { writeAll } from "./io.ts";
import type { ByteConn } from "./mux.ts";
import { MAX_FRAME_BYTES, MAX_HANDSHAKE_FRAME_BYTES, type Message, Tag } from "./protocol.ts";

/**
 * Send-queue size above which streams wait before reading more, and above
 * which the session stops reading from the peer while what it owes the peer
 * (answers and other control frames, stream data aside) exceeds it.
 */
export const SEND_HIGH_WATER = 4 * 1024 * 1024;
/**
 * Send-queue size at which the session gives up on a peer that does not
 * read: it is closed with a log line saying so.
 */
export const SEND_QUEUE_CAP = 64 * 1024 * 1024;
/** Frames up to this size are joined with the small frames queued after them into one write. */
const JOIN_FRAME_BYTES = 16 * 1024;
/** The most bytes one joined write carries. */
const BATCH_BYTES = 64 * 1024;
/** A reader's buffer. */
const READ_BUFFER_BYTES = 256 * 1024;
/** Room a read needs after the unfinished frame's start: the largest frame, length included. */
const READ_ROOM = 4 + MAX_FRAME_BYTES;
/** Read buffers whose DATA views all came back, kept for the next buffer change. */
const SPARE_READ_BUFFERS = 4;

/**
 * Reads messages from a link, keeping any that arrive beyond the one asked
 * for. The handshake and the session loop share one reader, so no byte is
 * lost between them.
 *
 * DATA bodies are handed on as views of the read buffer, not copies. Once
 * one is, the bytes before the unfinished frame are never written again:
 * reads go on after it, and when too little room is left a new buffer takes
 * over (the unfinished frame is copied there) and the old one is freed once
 * the last view of it is.
 *
 * A view's holder may hand it back ({@linkcode MessageReader.giveBack}) once
 * nothing reads it any more. A buffer whose views all came back is reused
 * rather than left to the garbage collector: a stream receiving 1 Gbit/s
 * changes buffers about 500 times a second, and V8 collected those 256 KiB
 * buffers only once about 64 MiB of them had piled up.
 */
export class MessageReader {
  #link: ByteConn;
  #maxFrameBytes = MAX_HANDSHAKE_FRAME_BYTES;
  #decoder = new FrameDecoder({ maxFrameBytes: MAX_HANDSHAKE_FRAME_BYTES, dataViews: true });
  #queue: Message[] = [];
  /** Read buffer; bytes [#start, #start + #held) are an unfinished frame kept from the last read. */
  #buf = new Uint8Array(READ_BUFFER_BYTES);
  #start = 0;
  #held = 0;
  /** True once a DATA body handed on is a view of `#buf`. */
  #lent = false;
  /** Views of each buffer handed on and not yet given back. */
  #outstanding = new WeakMap<ArrayBufferLike, number>();
  /** Earlier buffers none of whose views is held any more. */
  #spares: Uint8Array<ArrayBuffer>[] = [];
  #bytesRead = 0;
  #released = false;

  /** A reader of `link`, with the handshake's frame cap until {@linkcode MessageReader.trust}. */
  constructor(link: ByteConn) {
    this.#link = link;
  }

  /** Bytes read from the link so far. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Bytes the read buffer takes: 256 KiB, or 0 once {@linkcode MessageReader.release}d. */
  get bufferBytes(): number {
    return this.#buf.byteLength;
  }

  /**
   * Free the read buffer now: the link ended, nothing more is read (a read
   * in flight and every later one find the end of the link). Without it,
   * an ended session's 256 KiB would stay in memory until a full garbage
   * collection finds it, and a Console or Daemon that reconnects often
   * would grow by that much per session in between.
   */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    const buffer = this.#buf.buffer;
    this.#buf = new Uint8Array(0);
    this.#start = 0;
    this.#held = 0;
    this.#queue = [];
    this.#spares = [];
    // Detaching the buffer frees its memory at once; a read in flight keeps its own reference.
    // A buffer DATA views were handed out of is left to the garbage collector.
    if (!this.#lent) buffer.transfer(0);
  }

  /** Raise the frame cap once the peer is authenticated. */
  trust(): void {
    this.#maxFrameBytes = MAX_FRAME_BYTES;
    this.#decoder.maxFrameBytes = MAX_FRAME_BYTES;
  }

  /** Every message now available, reading the link once if none is queued; null at end of link. */
  async batch(): Promise<Message[] | null> {
    while (this.#queue.length === 0) {
      if (this.#released) return null;
      const n = await this.#link.read(this.#buf.subarray(this.#start + this.#held));
      if (n === null || this.#released) return null;
      this.#bytesRead += n;
      this.#queue = this.#decode(this.#start + this.#held + n);
    }
    const out = this.#queue;
    this.#queue = [];
    return out;
  }

  /**
   * Decode the whole frames in the buffer from `#start` to `end` and keep the
   * unfinished one. The decoder only ever sees whole frames, so it never
   * copies a read to join it with the next one.
   */
  #decode(end: number): Message[] {
    const buf = this.#buf;
    const view = new DataView(buf.buffer, buf.byteOffset, end);
    const from = this.#start;
    let whole = from;
    while (end - whole >= 4) {
      const length = view.getUint32(whole);
      // A bad length: let the decoder reject it now, with its own error.
      if (length < 5 || length > this.#maxFrameBytes) this.#decoder.push(buf.subarray(whole, end));
      if (end - whole < 4 + length) break;
      whole += 4 + length;
    }
    const messages = whole > from ? this.#decoder.push(buf.subarray(from, whole)) : [];
    let lent = 0;
    for (const m of messages) if (m.tag === Tag.DATA && m.data.buffer === buf.buffer) lent++;
    if (lent > 0) {
      this.#lent = true;
      this.#outstanding.set(buf.buffer, (this.#outstanding.get(buf.buffer) ?? 0) + lent);
    }
    this.#start = whole;
    this.#held = end - whole;
    this.#makeRoom();
    return messages;
  }

  /**
   * Make room for the next read. A buffer nothing was lent from is reused:
   * the unfinished frame moves to its start. Deno's TLS reads return one
   * record (16 KiB) at a time, so most reads end inside a 64 KiB frame and
   * decode nothing: those bytes stay where they are.
   */
  #makeRoom(): void {
    const start = this.#start;
    if (!this.#lent) {
      if (start > 0 && this.#held > 0) this.#buf.copyWithin(0, start, start + this.#held);
      this.#start = 0;
      return;
    }
    if (this.#buf.length - start >= READ_ROOM) return;
    const fresh = this.#spares.pop() ?? new Uint8Array(READ_BUFFER_BYTES);
    fresh.set(this.#buf.subarray(start, start + this.#held));
    this.#buf = fresh;
    this.#start = 0;
    this.#lent = false;
  }

  /**
   * A DATA body this reader handed on is no longer read by anyone (written
   * to its socket, or copied). Once every view of a buffer came back, the
   * buffer is written again: the current one in place, an earlier one when
   * the reader next needs a new buffer. Giving back a view still in use
   * would let later bytes overwrite it; one never given back only leaves
   * its buffer to the garbage collector. Other arrays are ignored.
   */
  giveBack(view: Uint8Array): void {
    const buffer = view.buffer;
    const count = this.#outstanding.get(buffer);
    if (count === undefined) return;
    if (count > 1) return void this.#outstanding.set(buffer, count - 1);
    this.#outstanding.delete(buffer);
    if (this.#released) return;
    if (buffer === this.#buf.buffer) this.#lent = false;
    else if (this.#spares.length < SPARE_READ_BUFFERS && buffer instanceof ArrayBuffer) {
      this.#spares.push(new Uint8Array(buffer));
    }
  }

  /** The next message; throws SessionClosedError at end of link. */
  async next(): Promise<Message> {
    if (this.#queue.length === 0) {
      const got = await this.batch();
      if (got === null) {
        throw new SessionClosedError("closed", "Cannot read: the peer closed the connection");
      }
      this.#queue = got;
    }
    return this.#queue.shift()!;
  }
}

/** One write {@linkcode FrameWriter} takes off its queue. */
interface Write {
  readonly chunk: Uint8Array;
  /** Bytes of stream data in `chunk`. */
  readonly dataBytes: number;
  /** Called once the link took `chunk`, when it is one frame with a callback. */
  readonly done: ((frame: Uint8Array) => void) | undefined;
}

/**
 * Serializes frames onto the link. Small frames are batched into one write;
 * large ones go as they are.
 */
export class FrameWriter {
  #link: ByteConn;
  #queue: Uint8Array[] = [];
  /** Per queued frame: called once the link took it (see `StreamHost.sendFrame`). */
  #written: (((frame: Uint8Array) => void) | undefined)[] = [];
  /** Per queued frame: true for stream data (DATA, DATAGRAM), which flow control bounds. */
  #isData: boolean[] = [];
  #head = 0;
  #queued = 0;
  /** Bytes of stream data among `#queued`. */
  #queuedData = 0;
  /** Index in `#queue` of the heartbeat answer not yet taken for writing, or -1. */
  #pongAt = -1;
  #running = false;
  /** Set while {@linkcode FrameWriter.together} queues frames that must leave in one write. */
  #corked = false;
  #failed: unknown = null;
  #drainWaiters: (() => void)[] = [];
  /** Waiting for the control frames queued to fall back under the high-water mark. */
  #controlWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];
  #onError: (err: unknown) => void;

  /** A writer onto `link`; `onError` is called once if a write fails. */
  constructor(link: ByteConn, onError: (err: unknown) => void) {
    this.#link = link;
    this.#onError = onError;
  }

  /** Bytes queued and not yet written. */
  get queued(): number {
    return this.#queued;
  }

  /** Bytes of control frames (everything but stream data) queued and not yet written. */
  get queuedControl(): number {
    return this.#queued - this.#queuedData;
  }

  /**
   * Queue a frame; `written` is called once the link has taken its bytes.
   * `data` marks stream data, which the peer's credit (TCP) or the datagram
   * high-water mark (UDP) bounds already.
   */
  push(frame: Uint8Array, written?: (frame: Uint8Array) => void, data = false): void {
    if (this.#failed) return;
    this.#queue.push(frame);
    this.#written.push(written);
    this.#isData.push(data);
    this.#queued += frame.length;
    if (data) this.#queuedData += frame.length;
    if (!this.#running && !this.#corked) this.#run();
  }

  /**
   * Queue what `queue` pushes, then start writing: small frames pushed there
   * leave in one write. Without it the first is written as soon as it is
   * pushed, and the next small one waits behind it on a link that cannot set
   * TCP_NODELAY (the Console's TLS socket) until the peer acknowledges the
   * first, which Linux delays by several milliseconds.
   */
  together(queue: () => void): void {
    const corked = this.#corked;
    this.#corked = true;
    try {
      queue();
    } finally {
      this.#corked = corked;
    }
    if (!corked && !this.#running && this.#head < this.#queue.length) this.#run();
  }

  /**
   * Queue a heartbeat answer, ahead of everything not yet being written, so
   * the peer measures the link's round trip rather than this queue. One
   * still waiting is replaced, so a peer that pings and never reads costs
   * one answer, not one per ping.
   */
  pushPong(frame: Uint8Array): void {
    if (this.#failed) return;
    if (this.#pongAt >= this.#head && this.#pongAt < this.#queue.length) {
      this.#queued += frame.length - this.#queue[this.#pongAt].length;
      this.#queue[this.#pongAt] = frame;
      return;
    }
    this.#pongAt = this.#head;
    this.#queue.splice(this.#head, 0, frame);
    this.#written.splice(this.#head, 0, undefined);
    this.#isData.splice(this.#head, 0, false);
    this.#queued += frame.length;
    if (!this.#running && !this.#corked) this.#run();
  }

  /** A promise while over the high-water mark, else null. */
  backpressure(): Promise<void> | null {
    if (this.#queued < SEND_HIGH_WATER || this.#failed) return null;
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * A promise while the control frames queued (answers to the peer, stream
   * data aside) are over the high-water mark, else null. The session stops
   * reading meanwhile: a peer that asks and never reads the answers stalls
   * itself. Stream data is left out, or two sides both sending bulk data
   * would each stop reading the other and never resume.
   */
  controlBackpressure(): Promise<void> | null {
    if (this.queuedControl < SEND_HIGH_WATER || this.#failed) return null;
    return new Promise((resolve) => this.#controlWaiters.push(resolve));
  }

  #clearQueue(): void {
    this.#queue = [];
    this.#written = [];
    this.#isData = [];
    this.#head = 0;
    this.#pongAt = -1;
  }

  /** Resolves when everything queued so far is written (or the link failed). */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#head < this.#queue.length) {
        const { chunk, dataBytes, done } = this.#take();
        if (this.#head === this.#queue.length) this.#clearQueue();
        await writeAll(this.#link, chunk);
        this.#queued -= chunk.length;
        this.#queuedData -= dataBytes;
        done?.(chunk);
        this.#wakeWriters();
      }
    } catch (err) {
      this.#fail(err);
    } finally {
      this.#running = false;
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  /**
   * Take the next write off the queue. Small frames (control messages, short
   * DATA) are joined with the small ones after them; a large DATA frame goes
   * on its own, as copying it would cost more than the write saved. `done`
   * is the frame's own callback when it goes alone; a joined frame's callback
   * is called here, once it is copied.
   */
  #take(): Write {
    const data = this.#isData[this.#head];
    const done = this.#written[this.#head];
    const chunk = this.#queue[this.#head++];
    const alone: Write = { chunk, dataBytes: data ? chunk.length : 0, done };
    if (chunk.length > JOIN_FRAME_BYTES || this.#head >= this.#queue.length) return alone;
    let total = chunk.length;
    let end = this.#head;
    while (
      end < this.#queue.length && this.#queue[end].length <= JOIN_FRAME_BYTES &&
      total + this.#queue[end].length <= BATCH_BYTES
    ) {
      total += this.#queue[end++].length;
    }
    if (end === this.#head) return alone;
    const joined = new Uint8Array(total);
    joined.set(chunk);
    done?.(chunk);
    let dataBytes = alone.dataBytes;
    let at = chunk.length;
    for (; this.#head < end; this.#head++) {
      const frame = this.#queue[this.#head];
      if (this.#isData[this.#head]) dataBytes += frame.length;
      joined.set(frame, at);
      this.#written[this.#head]?.(frame);
      at += frame.length;
    }
    return { chunk: joined, dataBytes, done: undefined };
  }

  /** Wake those waiting for the queue, or its control frames, to fall to half the high-water mark. */
  #wakeWriters(): void {
    if (this.#queued < SEND_HIGH_WATER / 2 && this.#drainWaiters.length > 0) {
      for (const wake of this.#drainWaiters.splice(0)) wake();
    }
    if (this.queuedControl < SEND_HIGH_WATER / 2 && this.#controlWaiters.length > 0) {
      for (const wake of this.#controlWaiters.splice(0)) wake();
    }
  }

  /** The link failed: drop everything queued, wake every waiter, and tell the owner. */
  #fail(err: unknown): void {
    this.#failed = err ?? new Error("write failed");
    this.#clearQueue();
    this.#queued = 0;
    this.#queuedData = 0;
    for (const wake of this.#drainWaiters.splice(0)) wake();
    for (const wake of this.#controlWaiters.splice(0)) wake();
    this.#onError(err);
  }
}

/**
 * Send one message on a link outside a session (during the handshake).
 *
 * @example
 * ```ts ignore
 * await sendNow(link, { tag: Tag.REJECT, code: "busy", reason: "another Daemon holds the session" });
 * ```
 */
export async function sendNow(link: ByteConn, msg: Message): Promise<void> {
  await writeAll(link, encodeMessage(msg));
}
