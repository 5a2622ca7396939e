/**
 * The Console's SOCKS5 server side (RFC 1928, RFC 1929): CONNECT only,
 * no-auth or username/password. A domain name is passed on unresolved, to be
 * resolved by the Daemon; the Console never resolves names for this.
 *
 * @module
 */

import type { OpenErrorCode } from "../core/protocol.ts";
import type { ByteConn } from "../core/mux.ts";
import { writeAll } from "../core/mux.ts";
import { type Credentials, credentialsEqual } from "../core/secret.ts";

/** SOCKS5 reply codes. */
export const SocksReply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

/** Why a SOCKS handshake failed, with the reply already sent when `replied`. */
export class SocksError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SocksError";
  }
}

/** The reply code for a Daemon-side open failure. */
export function socksReplyFor(code: OpenErrorCode | "error"): number {
  switch (code) {
    case "refused":
      return SocksReply.CONNECTION_REFUSED;
    case "not-allowed":
      return SocksReply.NOT_ALLOWED;
    case "unresolvable":
      return SocksReply.HOST_UNREACHABLE;
    case "unreachable":
      return SocksReply.NETWORK_UNREACHABLE;
    case "timeout":
      return SocksReply.TTL_EXPIRED;
    default:
      return SocksReply.GENERAL_FAILURE;
  }
}

/** Reads exactly what the handshake needs, with a small bounded buffer. */
class Reader {
  #conn: ByteConn;
  #buf = new Uint8Array(0);
  constructor(conn: ByteConn) {
    this.#conn = conn;
  }
  async take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(512);
      const got = await this.#conn.read(chunk);
      if (got === null) {
        throw new SocksError("the client closed the connection during the SOCKS handshake");
      }
      const joined = new Uint8Array(this.#buf.length + got);
      joined.set(this.#buf);
      joined.set(chunk.subarray(0, got), this.#buf.length);
      this.#buf = joined;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }
  /** Bytes read past the request (a client that sent data early). */
  rest(): Uint8Array {
    return this.#buf;
  }
}

/** What a client asked to CONNECT to. */
export interface SocksRequest {
  readonly host: string;
  readonly port: number;
  /** Bytes the client sent after its request, before our reply. */
  readonly early: Uint8Array;
}

/**
 * Run the SOCKS5 greeting, optional authentication and request on `conn`.
 * On failure the right reply has been sent and SocksError is thrown.
 *
 * @example
 * ```ts ignore
 * const { host, port } = await socksAccept(conn, null);
 * ```
 */
export async function socksAccept(
  conn: ByteConn,
  auth: Credentials | null,
): Promise<SocksRequest> {
  const r = new Reader(conn);
  const [version, nMethods] = await r.take(2);
  if (version !== 5) throw new SocksError(`not a SOCKS5 client (version byte ${version})`);
  const methods = await r.take(nMethods);
  const want = auth ? 0x02 : 0x00;
  if (!methods.includes(want)) {
    await writeAll(conn, new Uint8Array([5, 0xff]));
    throw new SocksError(
      auth
        ? "the client does not offer username/password authentication"
        : "the client offers no acceptable method",
    );
  }
  await writeAll(conn, new Uint8Array([5, want]));
  if (auth) {
    const [subVersion, uLen] = await r.take(2);
    const user = new TextDecoder().decode(await r.take(uLen));
    const [pLen] = await r.take(1);
    const pass = new TextDecoder().decode(await r.take(pLen));
    // Both fields in one comparison: a wrong user name is not told apart from a wrong password.
    const match = credentialsEqual({ username: user, password: pass }, auth);
    const ok = subVersion === 1 && match;
    await writeAll(conn, new Uint8Array([1, ok ? 0 : 1]));
    if (!ok) throw new SocksError("wrong SOCKS username or password");
  }
  const [v, cmd, , atyp] = await r.take(4);
  if (v !== 5) throw new SocksError(`bad SOCKS request version ${v}`);
  let host: string;
  if (atyp === 0x01) {
    host = Array.from(await r.take(4)).join(".");
  } else if (atyp === 0x03) {
    const [len] = await r.take(1);
    host = new TextDecoder().decode(await r.take(len));
    if (len === 0) {
      await reply(conn, SocksReply.HOST_UNREACHABLE);
      throw new SocksError("empty domain name");
    }
  } else if (atyp === 0x04) {
    const b = await r.take(16);
    const parts: string[] = [];
    for (let i = 0; i < 16; i += 2) parts.push(((b[i] << 8) | b[i + 1]).toString(16));
    host = parts.join(":");
  } else {
    await reply(conn, SocksReply.ADDRESS_TYPE_NOT_SUPPORTED);
    throw new SocksError(`unsupported address type ${atyp}`);
  }
  const portBytes = await r.take(2);
  const port = (portBytes[0] << 8) | portBytes[1];
  if (cmd !== 0x01) {
    await reply(conn, SocksReply.COMMAND_NOT_SUPPORTED);
    throw new SocksError(`unsupported SOCKS command ${cmd} (only CONNECT)`);
  }
  return { host, port, early: r.rest() };
}

/**
 * Send a SOCKS5 reply; `bound` is the address the Daemon connected from
 * when known.
 */
export async function reply(conn: ByteConn, code: number, bound?: string): Promise<void> {
  let addr: number[] = [0x01, 0, 0, 0, 0];
  let port = 0;
  const m = bound?.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/);
  if (m) {
    addr = [0x01, Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
    port = Number(m[5]);
  }
  await writeAll(conn, new Uint8Array([5, code, 0, ...addr, port >> 8, port & 0xff]));
}
