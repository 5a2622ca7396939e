/**
 * One session over one link: the handshake on each side, then typed messages,
 * heartbeats, streams and a close with a reason.
 *
 * The Console and the Daemon both use {@linkcode Session}; its `role` decides
 * which messages it may send and accept (see `SENDERS` in `protocol.ts`).
 *
 * @module
 */

import { encodeMessage, FrameDecoder, tagName } from "./codec.ts";
import {
  errorMessage,
  HandshakeError,
  OpenError,
  ProtocolError,
  SessionClosedError,
} from "./errors.ts";
import type { Logger } from "./log.ts";
import { type Channel, Stream, type StreamHost, type StreamOptions } from "./mux.ts";
import type { ByteConn } from "./mux.ts";
import { escapeControls } from "./text.ts";
import {
  authTranscript,
  CAPABILITIES,
  type ChallengeMessage,
  type CloseCode,
  DEAD_PEER_MS,
  HALF_CLOSED_IDLE_MS,
  HEARTBEAT_MS,
  INITIAL_WINDOW_BYTES,
  MAX_FRAME_BYTES,
  MAX_HANDSHAKE_FRAME_BYTES,
  MAX_HELD_BYTES,
  MAX_STREAMS,
  type Message,
  type OpenMessage,
  pendingBudget,
  PROTOCOL_VERSION,
  type RejectCode,
  type ResolveMessage,
  type Role,
  SENDERS,
  Tag,
} from "./protocol.ts";

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
/** Send-queue size above which UDP datagrams are dropped instead of queued. */
const DATAGRAM_HIGH_WATER = 1024 * 1024;
/** TCP counts as active for this long after its last DATA frame. */
const TCP_ACTIVE_MS = 100;
/** Datagrams UDP may send in a burst while TCP is active. */
const UDP_TOKENS_MAX = 32;
/** Frames up to this size are joined with the small frames queued after them into one write. */
const JOIN_FRAME_BYTES = 16 * 1024;
/** The most bytes one joined write carries. */
const BATCH_BYTES = 64 * 1024;
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

/**
 * Reads messages from a link, keeping any that arrive beyond the one asked
 * for. The handshake and the session loop share one reader, so no byte is
 * lost between them.
 */
export class MessageReader {
  #link: ByteConn;
  #maxFrameBytes = MAX_HANDSHAKE_FRAME_BYTES;
  #decoder = new FrameDecoder({ maxFrameBytes: MAX_HANDSHAKE_FRAME_BYTES });
  #queue: Message[] = [];
  /** Read buffer; bytes [0, #held) are an unfinished frame kept from the last read. */
  #buf = new Uint8Array(256 * 1024);
  #held = 0;
  #bytesRead = 0;

  constructor(link: ByteConn) {
    this.#link = link;
  }

  /** Bytes read from the link so far. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Raise the frame cap once the peer is authenticated. */
  trust(): void {
    this.#maxFrameBytes = MAX_FRAME_BYTES;
    this.#decoder.maxFrameBytes = MAX_FRAME_BYTES;
  }

  /** Every message now available, reading the link once if none is queued; null at end of link. */
  async batch(): Promise<Message[] | null> {
    while (this.#queue.length === 0) {
      const n = await this.#link.read(this.#buf.subarray(this.#held));
      if (n === null) return null;
      this.#bytesRead += n;
      this.#queue = this.#decode(this.#held + n);
    }
    const out = this.#queue;
    this.#queue = [];
    return out;
  }

  /**
   * Decode the whole frames among the first `end` bytes of the buffer and
   * keep the unfinished one at its start. The decoder only ever sees whole
   * frames, so it never copies a read to join it with the next one.
   */
  #decode(end: number): Message[] {
    const buf = this.#buf;
    const view = new DataView(buf.buffer, buf.byteOffset, end);
    let whole = 0;
    while (end - whole >= 4) {
      const length = view.getUint32(whole);
      // A bad length: let the decoder reject it now, with its own error.
      if (length < 5 || length > this.#maxFrameBytes) this.#decoder.push(buf.subarray(whole, end));
      if (end - whole < 4 + length) break;
      whole += 4 + length;
    }
    const messages = whole > 0 ? this.#decoder.push(buf.subarray(0, whole)) : [];
    // Deno's TLS reads return one record (16 KiB) at a time, so most reads end
    // inside a 64 KiB frame and decode nothing: leave those bytes where they are.
    if (whole > 0 && whole < end) buf.copyWithin(0, whole, end);
    this.#held = end - whole;
    return messages;
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
  #failed: unknown = null;
  #drainWaiters: (() => void)[] = [];
  /** Waiting for the control frames queued to fall back under the high-water mark. */
  #controlWaiters: (() => void)[] = [];
  #idleWaiters: (() => void)[] = [];
  #onError: (err: unknown) => void;

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
    if (!this.#running) this.#run();
  }

  /**
   * Queue a heartbeat answer. One still waiting in the queue is replaced, so
   * a peer that pings and never reads costs one answer, not one per ping.
   */
  pushPong(frame: Uint8Array): void {
    if (this.#failed) return;
    if (this.#pongAt >= this.#head && this.#pongAt < this.#queue.length) {
      this.#queued += frame.length - this.#queue[this.#pongAt].length;
      this.#queue[this.#pongAt] = frame;
      return;
    }
    this.#pongAt = this.#queue.length;
    this.push(frame);
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
        let done = this.#written[this.#head];
        let dataBytes = this.#isData[this.#head] ? this.#queue[this.#head].length : 0;
        let chunk = this.#queue[this.#head++];
        // Join small frames (control messages, short DATA); a large DATA frame
        // goes on its own, as copying it would cost more than the write saved.
        if (chunk.length <= JOIN_FRAME_BYTES && this.#head < this.#queue.length) {
          let total = chunk.length;
          let end = this.#head;
          while (
            end < this.#queue.length && this.#queue[end].length <= JOIN_FRAME_BYTES &&
            total + this.#queue[end].length <= BATCH_BYTES
          ) {
            total += this.#queue[end++].length;
          }
          if (end > this.#head) {
            const joined = new Uint8Array(total);
            joined.set(chunk);
            done?.(chunk);
            let at = chunk.length;
            for (; this.#head < end; this.#head++) {
              const frame = this.#queue[this.#head];
              if (this.#isData[this.#head]) dataBytes += frame.length;
              joined.set(frame, at);
              this.#written[this.#head]?.(frame);
              at += frame.length;
            }
            chunk = joined;
            done = undefined;
          }
        }
        if (this.#head === this.#queue.length) this.#clearQueue();
        let off = 0;
        while (off < chunk.length) {
          off += await this.#link.write(off === 0 ? chunk : chunk.subarray(off));
        }
        this.#queued -= chunk.length;
        this.#queuedData -= dataBytes;
        done?.(chunk);
        if (this.#queued < SEND_HIGH_WATER / 2 && this.#drainWaiters.length > 0) {
          for (const wake of this.#drainWaiters.splice(0)) wake();
        }
        if (this.queuedControl < SEND_HIGH_WATER / 2 && this.#controlWaiters.length > 0) {
          for (const wake of this.#controlWaiters.splice(0)) wake();
        }
      }
    } catch (err) {
      this.#failed = err ?? new Error("write failed");
      this.#clearQueue();
      this.#queued = 0;
      this.#queuedData = 0;
      for (const wake of this.#drainWaiters.splice(0)) wake();
      for (const wake of this.#controlWaiters.splice(0)) wake();
      this.#onError(err);
    } finally {
      this.#running = false;
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
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
  const bytes = encodeMessage(msg);
  let off = 0;
  while (off < bytes.length) off += await link.write(bytes.subarray(off));
}

function expectTag<T extends Message["tag"]>(
  msg: Message,
  tag: T,
  during: string,
): Extract<Message, { tag: T }> {
  if (msg.tag !== tag) {
    throw new ProtocolError(`Cannot ${during}: expected ${tagName(tag)}, got ${tagName(msg.tag)}`);
  }
  return msg as Extract<Message, { tag: T }>;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/=+$/, "");
}

/** What the Console learns from a Daemon's hello and auth. */
export interface DaemonClaim {
  readonly host: string;
  readonly user: string;
  readonly os: string;
  /** Base64 certificate DER. */
  readonly cert: string;
  readonly signature: string;
  readonly token: string | null;
  /** The nonce the signature must cover. */
  readonly nonce: string;
  /** What the Daemon offered in its hello. */
  readonly capabilities: readonly string[];
}

/**
 * Console side of the handshake, after TLS: read hello, check the version,
 * send the challenge, read auth. The caller verifies the signature and
 * decides to accept, hold pending or reject.
 *
 * @example
 * ```ts ignore
 * const reader = new MessageReader(tlsConn);
 * const claim = await consoleHandshake(tlsConn, reader);
 * ```
 */
export async function consoleHandshake(
  link: ByteConn,
  reader: MessageReader,
  onHello?: () => void,
): Promise<DaemonClaim> {
  const hello = expectTag(await reader.next(), Tag.HELLO, "start session");
  onHello?.();
  if (hello.version !== PROTOCOL_VERSION) {
    const reason = hello.version > PROTOCOL_VERSION
      ? `the Daemon speaks protocol v${hello.version}, this Console speaks v${PROTOCOL_VERSION}: upgrade the Console`
      : `the Daemon speaks protocol v${hello.version}, this Console speaks v${PROTOCOL_VERSION}: upgrade the Daemon`;
    await sendNow(link, { tag: Tag.REJECT, code: "version", reason });
    throw new HandshakeError("version", `Cannot start session: ${reason}`);
  }
  const nonce = base64(crypto.getRandomValues(new Uint8Array(32)));
  await sendNow(link, {
    tag: Tag.CHALLENGE,
    version: PROTOCOL_VERSION,
    capabilities: CAPABILITIES,
    nonce,
  });
  const auth = expectTag(await reader.next(), Tag.AUTH, "authenticate Daemon");
  return { ...auth, nonce, capabilities: hello.capabilities };
}

/** Options for {@linkcode daemonHandshake}. */
export interface DaemonHandshakeOptions {
  /** The pinned Console fingerprint; it has been checked by the TLS layer. */
  readonly consoleFingerprint: string;
  /** Base64 of this Daemon's certificate DER. */
  readonly cert: string;
  /** Signs the auth transcript with this Daemon's identity key. */
  readonly sign: (data: Uint8Array) => Promise<string>;
  readonly token: string | null;
  readonly host: string;
  readonly user: string;
  readonly os: string;
  /** Called when the Console holds the session for the operator. */
  readonly onPending: () => void;
}

/**
 * Daemon side of the handshake, after TLS and the pin check: hello, sign the
 * challenge, then wait for accept or reject. Answers heartbeats while it waits.
 * Returns the session id the Console gave.
 *
 * @example
 * ```ts ignore
 * const id = await daemonHandshake(link, reader, { consoleFingerprint, cert, sign, token: null, host, user, os, onPending });
 * ```
 */
export async function daemonHandshake(
  link: ByteConn,
  reader: MessageReader,
  options: DaemonHandshakeOptions,
): Promise<string> {
  await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: CAPABILITIES });
  const first = await reader.next();
  if (first.tag === Tag.REJECT) {
    throw new HandshakeError(
      first.code,
      `Console refused the session: ${escapeControls(first.reason)}`,
    );
  }
  const challenge: ChallengeMessage = expectTag(first, Tag.CHALLENGE, "start session");
  if (challenge.version !== PROTOCOL_VERSION) {
    throw new HandshakeError(
      "version",
      `Cannot start session: the Console speaks protocol v${challenge.version}, this Daemon speaks v${PROTOCOL_VERSION}: upgrade the ${
        challenge.version > PROTOCOL_VERSION ? "Daemon" : "Console"
      }`,
    );
  }
  const signature = await options.sign(authTranscript(challenge.nonce, options.consoleFingerprint));
  await sendNow(link, {
    tag: Tag.AUTH,
    host: options.host,
    user: options.user,
    os: options.os,
    cert: options.cert,
    signature,
    token: options.token,
  });
  while (true) {
    const msg = await reader.next();
    switch (msg.tag) {
      case Tag.PENDING:
        options.onPending();
        break;
      case Tag.PING:
        await sendNow(link, { tag: Tag.PONG, seq: msg.seq });
        break;
      case Tag.ACCEPT:
        reader.trust();
        return msg.session;
      case Tag.REJECT:
        throw new HandshakeError(
          msg.code,
          `Console refused the session: ${escapeControls(msg.reason)}`,
        );
      case Tag.CLOSE:
        throw new HandshakeError(
          "closed",
          `Console closed the session: ${escapeControls(msg.reason)}`,
        );
      default:
        throw new ProtocolError(`Cannot wait for acceptance: unexpected ${tagName(msg.tag)}`);
    }
  }
}

/** Why a session ended. */
export interface SessionEnd {
  readonly code: CloseCode;
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
  onChat(text: string): void;
  /** Once, when the session has ended and every stream is closed. */
  onEnd(end: SessionEnd): void;
}

/** Options for {@linkcode Session}. */
export interface SessionOptions {
  readonly role: Role;
  readonly id: string;
  readonly log: Logger;
  readonly handlers: SessionHandlers;
  /** Defaults from protocol.ts; tests shorten them. */
  readonly heartbeatMs?: number;
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
   * Console: the Daemon waits for the operator. Until this side sends
   * ACCEPT, the Daemon may send only {@linkcode pendingBudget} of
   * `timeoutMs`, and after `timeoutMs` it is rejected.
   */
  readonly pending?: { readonly timeoutMs: number };
}

/** Where to open a stream to, on the Daemon's side. */
export interface OpenTarget {
  readonly proto: "tcp" | "udp";
  readonly host: string;
  readonly port: number;
  readonly pfo: string;
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
  readonly id: string;
  readonly role: Role;
  readonly startedAt = Date.now();
  #peer: Role;
  #link: ByteConn;
  #reader: MessageReader;
  #writer: FrameWriter;
  #log: Logger;
  #handlers: SessionHandlers;
  #streams = new Map<number, Channel>();
  #pendingOpens = new Map<number, PendingOpen>();
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
  #udpTokens = UDP_TOKENS_MAX;
  #pingSeq = 0;
  #ticks = 0;
  #ticksPerPing: number;
  #heartbeat: ReturnType<typeof setInterval>;
  #deadPeerMs: number;
  #maxStreams: number;
  /** Liveness ticks a half-closed stream may stay quiet. */
  #halfClosedTicks: number;
  #halfClosedIdleMs: number;
  /** Per limit: refusals since it was last logged, and when that was. */
  #limits: Record<Limit, { refused: number; loggedAt: number }> = {
    streams: { refused: 0, loggedAt: -Infinity },
    held: { refused: 0, loggedAt: -Infinity },
  };
  #ended: SessionEnd | null = null;
  #endWaiters: (() => void)[] = [];

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

  // StreamHost
  sendFrame(frame: Uint8Array, written?: (frame: Uint8Array) => void): void {
    if (this.#ended) return;
    this.#tcpFrame();
    this.#writer.push(frame, written, true);
    this.#checkQueueCap();
  }

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
    else this.#writer.push(encodeMessage(msg));
    this.#checkQueueCap();
  }

  backpressure(): Promise<void> | null {
    return this.#writer.backpressure();
  }

  release(channel: Channel): void {
    if (this.#streams.get(channel.id) === channel) this.#streams.delete(channel.id);
  }

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
    const state = this.#limits[limit];
    state.refused++;
    const now = performance.now();
    if (now - state.loggedAt < 10_000) return;
    if (limit === "streams") {
      this.#log.warn("stream limit reached, refusing open", {
        limit: this.#maxStreams,
        refused: state.refused,
      });
    } else {
      this.#log.warn("held-bytes limit reached, refusing open", {
        limit: this.#maxHeldBytes,
        held: this.#held,
        refused: state.refused,
      });
    }
    state.loggedAt = now;
    state.refused = 0;
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
      case Tag.DATA: {
        this.#tcpFrame();
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
        const pending = this.#pendingOpens.get(msg.stream);
        if (pending) {
          this.#settleOpen(msg.stream, new OpenError("error", msg.reason));
          return;
        }
        this.#dropEarly(msg.stream);
        this.#streams.get(msg.stream)?.onReset(msg.reason);
        return;
      }
      case Tag.PING:
        this.send({ tag: Tag.PONG, seq: msg.seq });
        return;
      case Tag.PONG:
        return;
      case Tag.CHAT:
        this.#handlers.onChat(msg.text);
        return;
      case Tag.CLOSE:
        this.#finish(msg.code, msg.reason, true, msg.final);
        return;
      case Tag.OPEN:
        if (this.#streams.has(msg.stream) || this.#early.has(msg.stream)) {
          throw new ProtocolError(`Cannot open stream ${msg.stream}: already open`);
        }
        // Opens still reaching their target (TCP or UDP) count as streams.
        if (this.#streams.size + this.#early.size >= this.#maxStreams) {
          this.#limitHit("streams");
          this.send({
            tag: Tag.OPEN_ERR,
            stream: msg.stream,
            code: "limit",
            reason: `the Daemon holds ${this.#maxStreams} streams already`,
          });
          return;
        }
        if (this.#held >= this.#maxHeldBytes) {
          this.#limitHit("held");
          this.send({
            tag: Tag.OPEN_ERR,
            stream: msg.stream,
            code: "limit",
            reason: `the Daemon holds ${this.#heldText()} for the Console already`,
          });
          return;
        }
        this.#early.set(msg.stream, { udp: msg.proto === "udp", frames: [], bytes: 0 });
        this.#handlers.onOpen?.(msg);
        return;
      case Tag.OPEN_OK: {
        if (!this.#pendingOpens.has(msg.stream)) {
          // We gave up on this open (timeout); the Daemon connected anyway.
          this.send({
            tag: Tag.RESET,
            stream: msg.stream,
            reason: "open abandoned by the Console",
          });
          return;
        }
        this.#settleOpen(msg.stream, msg.address);
        return;
      }
      case Tag.OPEN_ERR: {
        this.#settleOpen(msg.stream, new OpenError(msg.code, msg.reason));
        return;
      }
      case Tag.RESOLVE:
        this.#handlers.onResolve?.(msg);
        return;
      case Tag.RESOLVE_RESULT: {
        const waiter = this.#resolves.get(msg.id);
        if (!waiter) return;
        this.#resolves.delete(msg.id);
        clearTimeout(waiter.timer);
        if (msg.error !== null) waiter.reject(new OpenError("unresolvable", msg.error));
        else waiter.resolve([...msg.addresses]);
        return;
      }
      default:
        throw new ProtocolError(
          `Cannot accept ${tagName(msg.tag)}: not valid in an established session`,
        );
    }
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
        this.#limitHit("held");
        this.send({
          tag: Tag.OPEN_ERR,
          stream: id,
          code: "limit",
          reason: `the Daemon holds ${this.#heldText()} for the Console already`,
        });
        this.#abandoned.add(id);
        return;
      }
    }
    held.frames.push(data);
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
      this.send({ tag: Tag.OPEN, stream: id, ...target });
      if (early && this.#earlyData && channel instanceof Stream) channel.start();
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
   * Queue one UDP datagram. Returns false, dropping it, when the link's send
   * queue is already long: UDP never holds up the session's TCP streams.
   */
  sendDatagram(id: number, data: Uint8Array): boolean {
    if (this.#ended || this.#writer.queued > DATAGRAM_HIGH_WATER) return false;
    if (Date.now() - this.#lastTcpAt < TCP_ACTIVE_MS) {
      // TCP is busy: UDP gets one datagram per TCP frame, so a UDP flood
      // cannot take the processes' time from TCP streams. The caller stops
      // receiving for a moment, and the kernel drops the excess.
      if (this.#udpTokens <= 0) return false;
      this.#udpTokens--;
    }
    this.#writer.push(encodeMessage({ tag: Tag.DATAGRAM, stream: id, data }), undefined, true);
    return true;
  }

  /** A TCP DATA frame went or came: TCP is active, and UDP earns a token. */
  #tcpFrame(): void {
    this.#lastTcpAt = Date.now();
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
    if (++this.#ticks % this.#ticksPerPing === 0) {
      this.send({ tag: Tag.PING, seq: ++this.#pingSeq });
    }
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
    try {
      this.#link.close();
    } catch {
      // Already closed.
    }
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
    this.#early.clear();
    this.#abandoned.clear();
    for (const stream of [...this.#streams.values()]) stream.abort(`session ended: ${reason}`);
    this.#streams.clear();
    this.#held = 0;
    this.#handlers.onEnd(this.#ended);
    for (const wake of this.#endWaiters.splice(0)) wake();
  }
}
