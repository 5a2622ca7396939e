/**
 * Bytes ⇄ messages for the wire defined in `protocol.ts`. Pure: no sockets.
 *
 * {@linkcode encodeMessage} turns any message into one frame;
 * {@linkcode FrameDecoder} takes bytes as they arrive and yields checked
 * messages, refusing frames over its size cap and any body that does not
 * match its tag's shape.
 *
 * @module
 */

import { ProtocolError } from "./errors.ts";
import {
  CLOSE_CODES,
  FRAME_HEADER_BYTES,
  MAX_CHAT_CHARS,
  MAX_CONTROL_BYTES,
  MAX_DATA_BYTES,
  MAX_DATAGRAM_BYTES,
  MAX_HOST_CHARS,
  type Message,
  OPEN_ERROR_CODES,
  REJECT_CODES,
  STREAM_PROTOS,
  Tag,
  type TagValue,
} from "./protocol.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Tags whose body is binary, not JSON. */
const BINARY_TAGS: ReadonlySet<number> = new Set([Tag.DATA, Tag.WINDOW, Tag.FIN, Tag.DATAGRAM]);

/** Tags that name a stream in the header. */
const STREAM_TAGS: ReadonlySet<number> = new Set([
  Tag.OPEN,
  Tag.OPEN_OK,
  Tag.OPEN_ERR,
  Tag.DATA,
  Tag.WINDOW,
  Tag.FIN,
  Tag.RESET,
  Tag.DATAGRAM,
]);

const TAG_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Tag).map(([name, value]) => [value, name]),
);

/**
 * The name of a tag for logs, e.g. `tagName(7) === "OPEN"`.
 *
 * @example
 * ```ts
 * import { tagName } from "./codec.ts";
 * if (tagName(7) !== "OPEN" || tagName(200) !== "UNKNOWN(200)") throw new Error("bad");
 * ```
 */
export function tagName(tag: number): string {
  return TAG_NAMES.get(tag) ?? `UNKNOWN(${tag})`;
}

/**
 * Write a frame header into `buf` at offset 0.
 *
 * The relay reads socket bytes straight into `buf` at offset
 * {@linkcode FRAME_HEADER_BYTES}, then calls this, so a DATA frame is sent
 * with one write and no copy.
 *
 * @example
 * ```ts
 * import { writeFrameHeader } from "./codec.ts";
 * const buf = new Uint8Array(12);
 * writeFrameHeader(buf, 10, 5, 3);
 * if (buf[3] !== 8 || buf[4] !== 10 || buf[8] !== 5) throw new Error("bad header");
 * ```
 */
export function writeFrameHeader(
  buf: Uint8Array,
  tag: TagValue,
  stream: number,
  bodyBytes: number,
): void {
  const view = new DataView(buf.buffer, buf.byteOffset, FRAME_HEADER_BYTES);
  view.setUint32(0, bodyBytes + 5);
  view.setUint8(4, tag);
  view.setUint32(5, stream);
}

/** The stream id in an encoded frame's header (see {@linkcode writeFrameHeader}). */
export function streamOfFrame(frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, FRAME_HEADER_BYTES).getUint32(5);
}

function frame(tag: TagValue, stream: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.length);
  writeFrameHeader(out, tag, stream, body.length);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

/**
 * Encode one message as one frame.
 *
 * @example
 * ```ts
 * import { encodeMessage, FrameDecoder } from "./codec.ts";
 * import { Tag } from "./protocol.ts";
 * const bytes = encodeMessage({ tag: Tag.CHAT, text: "hi" });
 * const [msg] = new FrameDecoder().push(bytes);
 * if (msg.tag !== Tag.CHAT || msg.text !== "hi") throw new Error("round trip failed");
 * ```
 */
export function encodeMessage(msg: Message): Uint8Array {
  switch (msg.tag) {
    case Tag.DATA:
    case Tag.DATAGRAM:
      return frame(msg.tag, msg.stream, msg.data);
    case Tag.WINDOW: {
      const body = new Uint8Array(4);
      new DataView(body.buffer).setUint32(0, msg.credit);
      return frame(msg.tag, msg.stream, body);
    }
    case Tag.FIN:
      return frame(msg.tag, msg.stream, new Uint8Array(0));
    default: {
      const { tag, ...rest } = msg;
      const stream = "stream" in rest ? rest.stream : 0;
      if ("stream" in rest) delete (rest as { stream?: number }).stream;
      return frame(tag, stream, encoder.encode(JSON.stringify(rest)));
    }
  }
}

/** Options for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest frame accepted (tag + stream + body). Default: post-auth cap. */
  maxFrameBytes?: number;
  /**
   * DATA bodies are views of the bytes pushed, not copies: the caller
   * promises never to change bytes it pushed. Default false.
   */
  dataViews?: boolean;
}

/**
 * Incremental frame decoder. Feed it bytes with {@linkcode FrameDecoder.push};
 * it returns every complete message and keeps the rest. Throws
 * {@linkcode ProtocolError} on an oversized frame, an unknown tag or a
 * malformed body; the caller then closes that peer.
 *
 * @example
 * ```ts
 * import { encodeMessage, FrameDecoder } from "./codec.ts";
 * import { Tag } from "./protocol.ts";
 * const bytes = encodeMessage({ tag: Tag.PING, seq: 1 });
 * const dec = new FrameDecoder();
 * const first = dec.push(bytes.subarray(0, 3));
 * const second = dec.push(bytes.subarray(3));
 * if (first.length !== 0 || second.length !== 1) throw new Error("bad split");
 * ```
 */
export class FrameDecoder {
  #buf = new Uint8Array(0);
  #maxFrameBytes: number;
  #copyData: boolean;

  /** A decoder with no bytes held yet. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxFrameBytes = options.maxFrameBytes ?? MAX_DATA_BYTES + 5;
    this.#copyData = !options.dataViews;
  }

  /** Change the frame size cap (raised once the peer is authenticated). */
  set maxFrameBytes(value: number) {
    this.#maxFrameBytes = value;
  }

  /** Bytes held that do not yet form a whole frame. */
  get buffered(): number {
    return this.#buf.length;
  }

  /** Add bytes; get back every message they complete. */
  push(chunk: Uint8Array): Message[] {
    let buf: Uint8Array;
    if (this.#buf.length === 0) {
      buf = chunk;
    } else {
      buf = new Uint8Array(this.#buf.length + chunk.length);
      buf.set(this.#buf);
      buf.set(chunk, this.#buf.length);
    }
    const out: Message[] = [];
    let offset = 0;
    while (buf.length - offset >= 4) {
      const view = new DataView(buf.buffer, buf.byteOffset + offset);
      const length = view.getUint32(0);
      if (length < 5) throw new ProtocolError(`Cannot decode frame: length ${length} is below 5`);
      if (length > this.#maxFrameBytes) {
        throw new ProtocolError(
          `Cannot decode frame: length ${length} exceeds the limit of ${this.#maxFrameBytes} bytes`,
        );
      }
      if (buf.length - offset < 4 + length) break;
      const tag = view.getUint8(4);
      const stream = view.getUint32(5);
      const start = buf.byteOffset + offset + FRAME_HEADER_BYTES;
      const body = new Uint8Array(buf.buffer, start, length - 5);
      out.push(decodeBody(tag, stream, body, this.#copyData));
      offset += 4 + length;
    }
    // Keep only the unfinished tail, as a copy: the caller may reuse `chunk`.
    this.#buf = offset === buf.length ? new Uint8Array(0) : buf.slice(offset);
    return out;
  }
}

/**
 * Decode one frame's body, given its tag and stream. DATA bodies are copied
 * (unless `copyData` is false: then they are views of `body`), so the caller
 * may reuse its read buffer.
 *
 * @example
 * ```ts
 * import { decodeBody } from "./codec.ts";
 * import { Tag } from "./protocol.ts";
 * const msg = decodeBody(Tag.PING, 0, new TextEncoder().encode('{"seq":3}'));
 * if (msg.tag !== Tag.PING || msg.seq !== 3) throw new Error("bad");
 * ```
 */
export function decodeBody(
  tag: number,
  stream: number,
  body: Uint8Array,
  copyData = true,
): Message {
  const name = tagName(tag);
  if (!TAG_NAMES.has(tag)) throw new ProtocolError(`Cannot decode frame: unknown tag ${tag}`);
  if (!STREAM_TAGS.has(tag) && stream !== 0) {
    throw new ProtocolError(`Cannot decode ${name}: stream must be 0, got ${stream}`);
  }
  if (STREAM_TAGS.has(tag) && stream === 0) {
    throw new ProtocolError(`Cannot decode ${name}: stream 0 is reserved`);
  }
  if (BINARY_TAGS.has(tag)) return decodeBinary(tag, stream, body, copyData);
  if (body.length > MAX_CONTROL_BYTES) {
    throw new ProtocolError(
      `Cannot decode ${name}: body of ${body.length} bytes exceeds ${MAX_CONTROL_BYTES}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(body));
  } catch (cause) {
    throw new ProtocolError(`Cannot decode ${name}: body is not UTF-8 JSON`, { cause });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`Cannot decode ${name}: body is not a JSON object`);
  }
  return decodeControl(tag as TagValue, stream, new Fields(name, value as Record<string, unknown>));
}

function decodeBinary(tag: number, stream: number, body: Uint8Array, copyData: boolean): Message {
  switch (tag) {
    case Tag.DATA:
      if (body.length === 0) throw new ProtocolError("Cannot decode DATA: empty body");
      if (body.length > MAX_DATA_BYTES) {
        throw new ProtocolError(
          `Cannot decode DATA: ${body.length} bytes exceeds ${MAX_DATA_BYTES}`,
        );
      }
      return { tag: Tag.DATA, stream, data: copyData ? body.slice() : body };
    case Tag.DATAGRAM:
      if (body.length > MAX_DATAGRAM_BYTES) {
        throw new ProtocolError(
          `Cannot decode DATAGRAM: ${body.length} bytes exceeds ${MAX_DATAGRAM_BYTES}`,
        );
      }
      return { tag: Tag.DATAGRAM, stream, data: body.slice() };
    case Tag.WINDOW: {
      if (body.length !== 4) {
        throw new ProtocolError(`Cannot decode WINDOW: body is ${body.length} bytes, expected 4`);
      }
      const credit = new DataView(body.buffer, body.byteOffset, 4).getUint32(0);
      if (credit === 0) throw new ProtocolError("Cannot decode WINDOW: credit is 0");
      return { tag: Tag.WINDOW, stream, credit };
    }
    default:
      if (body.length !== 0) {
        throw new ProtocolError(`Cannot decode FIN: body is ${body.length} bytes, expected 0`);
      }
      return { tag: Tag.FIN, stream };
  }
}

/** Typed, strict field access on a decoded JSON body. Rejects unknown keys. */
class Fields {
  #name: string;
  #obj: Record<string, unknown>;
  #seen = new Set<string>();

  constructor(name: string, obj: Record<string, unknown>) {
    this.#name = name;
    this.#obj = obj;
  }

  #get(key: string): unknown {
    this.#seen.add(key);
    if (!Object.hasOwn(this.#obj, key)) {
      throw new ProtocolError(`Cannot decode ${this.#name}: missing field "${key}"`);
    }
    return this.#obj[key];
  }

  #bad(key: string, want: string): never {
    throw new ProtocolError(`Cannot decode ${this.#name}: field "${key}" must be ${want}`);
  }

  string(key: string, maxChars = 1024): string {
    const v = this.#get(key);
    if (typeof v !== "string" || v.length > maxChars) {
      this.#bad(key, `a string of at most ${maxChars} characters`);
    }
    return v;
  }

  nullableString(key: string, maxChars = 1024): string | null {
    const v = this.#get(key);
    if (v === null) return null;
    if (typeof v !== "string" || v.length > maxChars) {
      this.#bad(key, `null or a string of at most ${maxChars} characters`);
    }
    return v;
  }

  uint(key: string, max = 0xffff_ffff): number {
    const v = this.#get(key);
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
      this.#bad(key, `an integer 0..${max}`);
    }
    return v;
  }

  bool(key: string): boolean {
    const v = this.#get(key);
    if (typeof v !== "boolean") this.#bad(key, "a boolean");
    return v;
  }

  oneOf<T extends string>(key: string, values: readonly T[]): T {
    const v = this.#get(key);
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) {
      this.#bad(key, `one of ${values.join(", ")}`);
    }
    return v as T;
  }

  strings(key: string, maxItems: number, maxChars = 256): string[] {
    const v = this.#get(key);
    if (
      !Array.isArray(v) || v.length > maxItems ||
      !v.every((s) => typeof s === "string" && s.length <= maxChars)
    ) {
      this.#bad(key, `a list of at most ${maxItems} strings`);
    }
    return v as string[];
  }

  /** Check that no key was sent that the shape does not have. */
  done<T>(msg: T): T {
    for (const key of Object.keys(this.#obj)) {
      if (!this.#seen.has(key)) {
        throw new ProtocolError(`Cannot decode ${this.#name}: unknown field "${key}"`);
      }
    }
    return msg;
  }
}

function decodeControl(tag: TagValue, stream: number, f: Fields): Message {
  switch (tag) {
    case Tag.HELLO:
      return f.done({
        tag,
        version: f.uint("version"),
        capabilities: f.strings("capabilities", 32, 64),
      });
    case Tag.CHALLENGE:
      return f.done({
        tag,
        version: f.uint("version"),
        capabilities: f.strings("capabilities", 32, 64),
        nonce: f.string("nonce", 128),
      });
    case Tag.AUTH:
      return f.done({
        tag,
        host: f.string("host", 255),
        user: f.string("user", 255),
        os: f.string("os", 64),
        cert: f.string("cert", 8192),
        signature: f.string("signature", 512),
        token: f.nullableString("token", 1024),
      });
    case Tag.PENDING:
      return f.done({ tag });
    case Tag.ACCEPT:
      return f.done({ tag, session: f.string("session", 64) });
    case Tag.REJECT:
      return f.done({ tag, code: f.oneOf("code", REJECT_CODES), reason: f.string("reason", 1024) });
    case Tag.OPEN:
      return f.done({
        tag,
        stream,
        proto: f.oneOf("proto", STREAM_PROTOS),
        host: f.string("host", MAX_HOST_CHARS + 2),
        port: f.uint("port", 65535),
        pfo: f.string("pfo", 64),
        client: f.string("client", 128),
      });
    case Tag.OPEN_OK:
      return f.done({ tag, stream, address: f.string("address", 128) });
    case Tag.OPEN_ERR:
      return f.done({
        tag,
        stream,
        code: f.oneOf("code", OPEN_ERROR_CODES),
        reason: f.string("reason", 1024),
      });
    case Tag.RESET:
      return f.done({ tag, stream, reason: f.string("reason", 1024) });
    case Tag.CHAT:
      return f.done({ tag, text: f.string("text", MAX_CHAT_CHARS) });
    case Tag.RESOLVE:
      return f.done({ tag, id: f.uint("id"), host: f.string("host", MAX_HOST_CHARS) });
    case Tag.RESOLVE_RESULT:
      return f.done({
        tag,
        id: f.uint("id"),
        addresses: f.strings("addresses", 64, 64),
        error: f.nullableString("error", 1024),
      });
    case Tag.PING:
      return f.done({ tag, seq: f.uint("seq") });
    case Tag.PONG:
      return f.done({ tag, seq: f.uint("seq") });
    case Tag.CLOSE:
      return f.done({
        tag,
        code: f.oneOf("code", CLOSE_CODES),
        reason: f.string("reason", 1024),
        final: f.bool("final"),
      });
    default:
      throw new ProtocolError(`Cannot decode frame: tag ${tag} has no JSON body`);
  }
}
