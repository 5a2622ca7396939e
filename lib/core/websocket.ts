/**
 * WebSocket (RFC 6455) as a byte pipe: the session's TLS bytes ride in binary
 * messages when a web server stands in front of the Console. Both sides'
 * handshakes and the framing live here; nothing else of HTTP.
 *
 * - Client frames are masked, server frames are not; a frame breaking that
 *   rule ends the stream.
 * - Message boundaries carry no meaning: each binary frame's payload is
 *   handed on as it comes, so fragmented messages read as one stream.
 * - Frames and messages are capped ({@linkcode MAX_WS_MESSAGE_BYTES}); a
 *   bigger one ends the stream with close code 1009.
 * - A ping is answered with a pong; a close is answered and reads as the end.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import type { ByteConn } from "./mux.ts";

/** The GUID RFC 6455 appends to the client's key. */
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Longest HTTP head (request or response) read before the upgrade. */
export const MAX_HTTP_HEAD_BYTES = 8 * 1024;
/** Longest WebSocket message (all its fragments) either side accepts. */
export const MAX_WS_MESSAGE_BYTES = 1024 * 1024;
/** Largest payload this side puts in one frame. */
const WRITE_FRAME_BYTES = 256 * 1024;
const READ_BYTES = 64 * 1024;

/** Frame opcodes. */
export const Op = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/**
 * The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
 *
 * @example
 * ```ts
 * import { websocketAccept } from "./websocket.ts";
 * // The example from RFC 6455, section 1.3.
 * const accept = await websocketAccept("dGhlIHNhbXBsZSBub25jZQ==");
 * if (accept !== "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") throw new Error(accept);
 * ```
 */
export async function websocketAccept(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + WS_GUID));
  return new Uint8Array(digest).toBase64();
}

/** Options for {@linkcode encodeFrame}. */
export interface EncodeFrameOptions {
  /** Frame opcode (see {@linkcode Op}). */
  readonly op: number;
  /** Final fragment. Default true. */
  readonly fin?: boolean;
  /** Mask the payload with this key (client frames). */
  readonly mask?: Uint8Array;
}

/**
 * One frame: header, then the payload (masked into a copy when a key is given).
 *
 * @example
 * ```ts
 * import { encodeFrame, Op } from "./websocket.ts";
 * const frame = encodeFrame(new Uint8Array(70_000), { op: Op.binary });
 * if (frame[1] !== 127 || frame.length !== 10 + 70_000) throw new Error("64-bit length");
 * ```
 */
export function encodeFrame(payload: Uint8Array, options: EncodeFrameOptions): Uint8Array {
  const n = payload.length;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const maskBytes = options.mask ? 4 : 0;
  const head = 2 + lengthBytes + maskBytes;
  const out = new Uint8Array(head + n);
  out[0] = (options.fin === false ? 0 : 0x80) | options.op;
  const maskBit = options.mask ? 0x80 : 0;
  const view = new DataView(out.buffer);
  if (lengthBytes === 0) out[1] = maskBit | n;
  else if (lengthBytes === 2) {
    out[1] = maskBit | 126;
    view.setUint16(2, n);
  } else {
    out[1] = maskBit | 127;
    view.setBigUint64(2, BigInt(n));
  }
  out.set(payload, head);
  if (options.mask) {
    out.set(options.mask, 2 + lengthBytes);
    applyMask(out.subarray(head), options.mask, 0);
  }
  return out;
}

/** XOR `data` in place with `mask`, starting at mask position `offset`. */
function applyMask(data: Uint8Array, mask: Uint8Array, offset: number): void {
  let i = 0;
  // Byte by byte to a 4-aligned address, then 32 bits at a time.
  while (i < data.length && ((data.byteOffset + i) & 3) !== 0) {
    data[i] ^= mask[(offset + i) & 3];
    i++;
  }
  const words = (data.length - i) >>> 2;
  if (words > 0) {
    const m = new Uint8Array(4);
    for (let k = 0; k < 4; k++) m[k] = mask[(offset + i + k) & 3];
    const key = new Uint32Array(m.buffer)[0];
    const w = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let k = 0; k < words; k++) w[k] ^= key;
    i += words * 4;
  }
  for (; i < data.length; i++) data[i] ^= mask[(offset + i) & 3];
}

/** One parsed frame header. */
interface FrameHead {
  readonly fin: boolean;
  readonly op: number;
  readonly mask: Uint8Array | null;
  readonly length: number;
  /** Header size in bytes. */
  readonly size: number;
}

/** The header at the start of `buf`, or null when more bytes are needed. */
function parseHead(buf: Uint8Array, maxLength: number): FrameHead | null {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  if ((buf[0] & 0x70) !== 0) throw new ProtocolError("Cannot read WebSocket frame: RSV bits set");
  const op = buf[0] & 0x0f;
  const masked = (buf[1] & 0x80) !== 0;
  let length = buf[1] & 0x7f;
  let size = 2;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (length === 126) {
    if (buf.length < 4) return null;
    length = view.getUint16(2);
    size = 4;
  } else if (length === 127) {
    if (buf.length < 10) return null;
    const big = view.getBigUint64(2);
    length = big > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(big);
    size = 10;
  }
  if (length > maxLength) {
    throw new WebSocketLimitError(
      `Cannot read WebSocket frame: ${length} bytes is over the limit of ${maxLength}`,
    );
  }
  if (masked && buf.length < size + 4) return null;
  const mask = masked ? buf.slice(size, size + 4) : null;
  return { fin, op, mask, length, size: size + (masked ? 4 : 0) };
}

/** A frame or message over the size limit (close code 1009). */
export class WebSocketLimitError extends ProtocolError {
  /** An error saying which limit was passed. */
  constructor(message: string) {
    super(message);
    this.name = "WebSocketLimitError";
  }
}

/** Options for {@linkcode WebSocketStream}. */
export interface WebSocketStreamOptions {
  /** "client" masks what it sends and refuses masked frames; "server" the reverse. */
  readonly role: "client" | "server";
  /** Bytes already read past the HTTP head. */
  readonly initial?: Uint8Array;
  /** Longest message accepted; default {@linkcode MAX_WS_MESSAGE_BYTES}. */
  readonly maxMessageBytes?: number;
}

/**
 * A byte stream over a WebSocket: `write()` sends one binary message (split
 * into frames of at most 256 KiB), `read()` returns the payload of binary
 * frames as it arrives. `closeWrite()` sends a close frame.
 *
 * @example
 * ```ts
 * import { memoryConnPair } from "./_memory_conn.ts";
 * import { WebSocketStream } from "./websocket.ts";
 * const [a, b] = memoryConnPair(1024);
 * const client = new WebSocketStream(a, { role: "client" });
 * const server = new WebSocketStream(b, { role: "server" });
 * await client.write(new TextEncoder().encode("hi"));
 * const buf = new Uint8Array(8);
 * const n = await server.read(buf);
 * if (new TextDecoder().decode(buf.subarray(0, n ?? 0)) !== "hi") throw new Error("lost");
 * ```
 */
export class WebSocketStream implements ByteConn {
  readonly #conn: ByteConn;
  readonly #client: boolean;
  readonly #max: number;
  #buf: Uint8Array;
  /** Reused for reads when nothing is buffered; `#buf` may point into it. */
  readonly #readBuf = new Uint8Array(READ_BYTES);
  /** Payload left in the current data frame. */
  #left = 0;
  #mask: Uint8Array | null = null;
  #maskOffset = 0;
  /** Bytes of the current message so far (for the message cap). */
  #message = 0;
  #inMessage = false;
  #ended = false;
  #closeSent = false;
  #writing: Promise<unknown> = Promise.resolve();

  /** Wrap `conn`, whose HTTP upgrade is already done. */
  constructor(conn: ByteConn, options: WebSocketStreamOptions) {
    this.#conn = conn;
    this.#client = options.role === "client";
    this.#max = options.maxMessageBytes ?? MAX_WS_MESSAGE_BYTES;
    this.#buf = options.initial ?? new Uint8Array(0);
  }

  /** Read payload bytes; null after a close frame or the end of the connection. */
  async read(p: Uint8Array): Promise<number | null> {
    while (!this.#ended) {
      if (this.#left > 0) {
        let n: number;
        if (this.#buf.length === 0) {
          // Nothing buffered: read the payload straight into the caller's buffer.
          const got = await this.#conn.read(p.subarray(0, Math.min(p.length, this.#left)));
          if (got === null) return this.#eof();
          n = got;
        } else {
          n = Math.min(p.length, this.#left, this.#buf.length);
          p.set(this.#buf.subarray(0, n));
          this.#buf = this.#buf.subarray(n);
        }
        if (this.#mask) {
          applyMask(p.subarray(0, n), this.#mask, this.#maskOffset);
          this.#maskOffset += n;
        }
        this.#left -= n;
        return n;
      }
      await this.#nextFrame();
    }
    return null;
  }

  /** The connection ended without a close frame. */
  #eof(): null {
    this.#ended = true;
    return null;
  }

  /** Read more bytes into the buffer; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#buf.length === 0) {
      // The usual case (a frame header): read into the one reused buffer.
      const n = await this.#conn.read(this.#readBuf);
      if (n === null) return false;
      this.#buf = this.#readBuf.subarray(0, n);
      return true;
    }
    const chunk = new Uint8Array(READ_BYTES);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    const joined = new Uint8Array(this.#buf.length + n);
    joined.set(this.#buf);
    joined.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = joined;
    return true;
  }

  /** Take the next frame's header; handle control frames whole. */
  async #nextFrame(): Promise<void> {
    let head: FrameHead | null;
    try {
      while ((head = parseHead(this.#buf, this.#max)) === null) {
        if (!(await this.#fill())) return void this.#eof();
      }
    } catch (err) {
      if (err instanceof WebSocketLimitError) await this.#fail(1009, err);
      throw err;
    }
    if ((head.mask !== null) !== !this.#client) {
      await this.#fail(
        1002,
        new ProtocolError(
          this.#client
            ? "Cannot read WebSocket frame: the server masked it"
            : "Cannot read WebSocket frame: the client did not mask it",
        ),
      );
    }
    this.#buf = this.#buf.subarray(head.size);
    if (head.op >= 0x8) return await this.#control(head);
    await this.#dataFrame(head);
  }

  async #dataFrame(head: FrameHead): Promise<void> {
    const continuing = head.op === Op.continuation;
    if (head.op !== Op.binary && !continuing) {
      await this.#fail(
        1003,
        new ProtocolError("Cannot read WebSocket frame: only binary messages carry data"),
      );
    }
    if (continuing !== this.#inMessage) {
      await this.#fail(
        1002,
        new ProtocolError("Cannot read WebSocket frame: fragments out of order"),
      );
    }
    this.#message = (continuing ? this.#message : 0) + head.length;
    if (this.#message > this.#max) {
      await this.#fail(
        1009,
        new WebSocketLimitError(
          `Cannot read WebSocket message: over the limit of ${this.#max} bytes`,
        ),
      );
    }
    this.#inMessage = !head.fin;
    this.#left = head.length;
    this.#mask = head.mask;
    this.#maskOffset = 0;
  }

  async #control(head: FrameHead): Promise<void> {
    if (!head.fin || head.length > 125) {
      await this.#fail(1002, new ProtocolError("Cannot read WebSocket frame: bad control frame"));
    }
    while (this.#buf.length < head.length) {
      if (!(await this.#fill())) return void this.#eof();
    }
    const payload = this.#buf.slice(0, head.length);
    this.#buf = this.#buf.subarray(head.length);
    if (head.mask) applyMask(payload, head.mask, 0);
    if (head.op === Op.ping) await this.#send(payload, Op.pong);
    else if (head.op === Op.close) {
      this.#ended = true;
      await this.#sendClose(payload.length >= 2 ? payload.subarray(0, 2) : new Uint8Array(0));
    } else if (head.op !== Op.pong) {
      await this.#fail(
        1002,
        new ProtocolError(`Cannot read WebSocket frame: unknown opcode ${head.op}`),
      );
    }
  }

  /** Send a close with `code`, then throw `err`. */
  async #fail(code: number, err: Error): Promise<never> {
    this.#ended = true;
    const payload = new Uint8Array(2);
    new DataView(payload.buffer).setUint16(0, code);
    await this.#sendClose(payload).catch(() => {});
    throw err;
  }

  async #sendClose(payload: Uint8Array): Promise<void> {
    if (this.#closeSent) return;
    this.#closeSent = true;
    await this.#send(payload, Op.close);
  }

  /** Send a ping (keeps idle intermediaries from timing the link out). */
  ping(payload: Uint8Array = new Uint8Array(0)): Promise<void> {
    return this.#send(payload, Op.ping);
  }

  /** Send all of `p` as one binary message; resolves with `p.length`. */
  async write(p: Uint8Array): Promise<number> {
    if (this.#closeSent) throw new Deno.errors.BrokenPipe("Cannot write: WebSocket closed");
    for (let at = 0; at < p.length || at === 0; at += WRITE_FRAME_BYTES) {
      const part = p.subarray(at, at + WRITE_FRAME_BYTES);
      const fin = at + WRITE_FRAME_BYTES >= p.length;
      await this.#send(part, at === 0 ? Op.binary : Op.continuation, fin);
      if (p.length === 0) break;
    }
    return p.length;
  }

  /** Write one frame, after any frame already being written. */
  #send(payload: Uint8Array, op: number, fin = true): Promise<void> {
    const mask = this.#client ? crypto.getRandomValues(new Uint8Array(4)) : undefined;
    const frame = encodeFrame(payload, { op, fin, mask });
    const done = this.#writing.then(() => writeFully(this.#conn, frame));
    this.#writing = done.catch(() => {});
    return done;
  }

  /** Send a close frame (normal closure); reading goes on until the peer's close. */
  async closeWrite(): Promise<void> {
    const payload = new Uint8Array([0x03, 0xe8]);
    await this.#sendClose(payload);
  }

  /** Close the connection under the stream now. */
  close(): void {
    this.#ended = true;
    this.#conn.close();
  }
}

async function writeFully(conn: ByteConn, p: Uint8Array): Promise<void> {
  let at = 0;
  while (at < p.length) at += await conn.write(p.subarray(at));
}

/** An HTTP/1.1 head: request or status line, then headers (names lower-cased). */
export interface HttpHead {
  /** The first line, e.g. "GET /portferry HTTP/1.1". */
  readonly start: string;
  /** Header values by lower-cased name; repeated headers joined with ", ". */
  readonly headers: ReadonlyMap<string, string>;
}

/**
 * Read an HTTP head (up to the blank line) from `conn`, after the bytes in
 * `initial`. Resolves with the head and the bytes read past it. Throws
 * `ProtocolError` past `maxBytes` (default {@linkcode MAX_HTTP_HEAD_BYTES})
 * or when the stream ends first.
 *
 * @example
 * ```ts
 * import { memoryConnPair } from "./_memory_conn.ts";
 * import { readHttpHead } from "./websocket.ts";
 * const [a, b] = memoryConnPair(1024);
 * const writing = a.write(new TextEncoder().encode("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\nxy"));
 * const { head, rest } = await readHttpHead(b);
 * await writing;
 * if (head.headers.get("upgrade") !== "websocket" || rest.length > 2) throw new Error("bad");
 * ```
 */
export async function readHttpHead(
  conn: Pick<ByteConn, "read">,
  initial: Uint8Array = new Uint8Array(0),
  maxBytes = MAX_HTTP_HEAD_BYTES,
): Promise<{ head: HttpHead; rest: Uint8Array }> {
  let buf = initial;
  let searchFrom = 0;
  while (true) {
    const end = indexOfBlankLine(buf, searchFrom);
    if (end >= 0) {
      if (end > maxBytes) break;
      const head = parseHttpHead(new TextDecoder().decode(buf.subarray(0, end)));
      return { head, rest: buf.slice(end + 4) };
    }
    if (buf.length > maxBytes) break;
    searchFrom = Math.max(0, buf.length - 3);
    const chunk = new Uint8Array(4096);
    const n = await conn.read(chunk);
    if (n === null) {
      throw new ProtocolError("Cannot read HTTP head: the connection ended before it did");
    }
    const joined = new Uint8Array(buf.length + n);
    joined.set(buf);
    joined.set(chunk.subarray(0, n), buf.length);
    buf = joined;
  }
  throw new ProtocolError(`Cannot read HTTP head: longer than ${maxBytes} bytes`);
}

function indexOfBlankLine(buf: Uint8Array, from: number): number {
  for (let i = from; i + 3 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

function parseHttpHead(text: string): HttpHead {
  const [start, ...lines] = text.split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ProtocolError("Cannot read HTTP head: a header line has no name");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  return { start, headers };
}

/** True when the comma-separated header value holds `token` (any case). */
export function headerHasToken(value: string | undefined, token: string): boolean {
  if (value === undefined) return false;
  return value.split(",").some((t) => t.trim().toLowerCase() === token);
}
