/**
 * The HTTP/1.1 upgrade to WebSocket, both sides: the Daemon's request and
 * its check of the answer, the Console's check of a request and its answer.
 *
 * @module
 */

import { HandshakeError } from "./errors.ts";
import type { ByteConn } from "./mux.ts";
import { escapeControls } from "./text.ts";
import {
  headerHasToken,
  type HttpHead,
  readHttpHead,
  websocketAccept,
  WebSocketStream,
} from "./websocket.ts";

/** Options for {@linkcode upgradeClient}. */
export interface UpgradeClientOptions {
  /** The `Host` header: "host" or "host:port" as the URL named it. */
  readonly host: string;
  /** The request path, e.g. "/portferry". */
  readonly path: string;
  /** How errors name the far end, e.g. `"ws://office/portferry"`. */
  readonly label: string;
}

/**
 * Send the upgrade request on `conn` and check the answer. Resolves with the
 * WebSocket byte stream. Throws `HandshakeError` ("refused" for an HTTP
 * answer other than 101, "tls" for a broken answer).
 *
 * @example
 * ```ts ignore
 * const ws = await upgradeClient(conn, { host: "office", path: "/portferry", label: "ws://office/portferry" });
 * ```
 */
export async function upgradeClient(
  conn: ByteConn,
  options: UpgradeClientOptions,
): Promise<WebSocketStream> {
  const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
  const request = [
    `GET ${options.path} HTTP/1.1`,
    `Host: ${options.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    "User-Agent: portferry",
    "",
    "",
  ].join("\r\n");
  const bytes = new TextEncoder().encode(request);
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
  let head: HttpHead;
  let rest: Uint8Array;
  try {
    ({ head, rest } = await readHttpHead(conn));
  } catch (err) {
    throw new HandshakeError(
      "tls",
      `Cannot open WebSocket to ${options.label}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head.start);
  if (!status) {
    throw new HandshakeError(
      "tls",
      `Cannot open WebSocket to ${options.label}: the answer is not HTTP ("${
        escapeControls(head.start.slice(0, 60))
      }")`,
    );
  }
  if (status[1] !== "101") {
    const reason = escapeControls(`${status[1]} ${status[2] ?? ""}`.trim().slice(0, 80));
    throw new HandshakeError(
      "refused",
      `Cannot open WebSocket to ${options.label}: the server answered "${reason}" (is the path right, and does the web server pass the upgrade on?)`,
    );
  }
  const expected = await websocketAccept(key);
  if (
    !headerHasToken(head.headers.get("upgrade"), "websocket") ||
    head.headers.get("sec-websocket-accept") !== expected
  ) {
    throw new HandshakeError(
      "tls",
      `Cannot open WebSocket to ${options.label}: the server's 101 answer lacks a valid Upgrade or Sec-WebSocket-Accept`,
    );
  }
  return new WebSocketStream(conn, { role: "client", initial: rest });
}

/** What the Console does with an HTTP request on its session port. */
export type UpgradeAnswer =
  | { readonly kind: "upgrade"; readonly response: string }
  | { readonly kind: "refuse"; readonly response: string };

/**
 * Check a request head against the WebSocket path; the answer to send.
 * Only `GET <path> HTTP/1.1` with `Upgrade: websocket` upgrades; a wrong
 * path or method is a 404, a bad upgrade on the right path a 400.
 *
 * @example
 * ```ts
 * import { answerUpgrade } from "./websocket_upgrade.ts";
 * const headers = new Map([["upgrade", "websocket"], ["connection", "Upgrade"],
 *   ["sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="], ["sec-websocket-version", "13"]]);
 * const ok = await answerUpgrade({ start: "GET /portferry HTTP/1.1", headers }, "/portferry");
 * if (ok.kind !== "upgrade" || !ok.response.includes("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) throw new Error("no");
 * const other = await answerUpgrade({ start: "GET / HTTP/1.1", headers }, "/portferry");
 * if (!other.response.startsWith("HTTP/1.1 404")) throw new Error("no 404");
 * ```
 */
export async function answerUpgrade(head: HttpHead, path: string | null): Promise<UpgradeAnswer> {
  const line = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(head.start);
  const target = line?.[2].replace(/\?.*$/, "");
  const upgrade = headerHasToken(head.headers.get("upgrade"), "websocket");
  if (!line || line[1] !== "GET" || path === null || target !== path || !upgrade) {
    return { kind: "refuse", response: shortAnswer(404, "Not Found") };
  }
  const key = head.headers.get("sec-websocket-key") ?? "";
  let keyBytes = 0;
  try {
    keyBytes = Uint8Array.fromBase64(key).length;
  } catch {
    // Not base64: refused below.
  }
  if (!headerHasToken(head.headers.get("connection"), "upgrade") || keyBytes !== 16) {
    return { kind: "refuse", response: shortAnswer(400, "Bad Request") };
  }
  if (head.headers.get("sec-websocket-version") !== "13") {
    return {
      kind: "refuse",
      response: shortAnswer(426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n"),
    };
  }
  const accept = await websocketAccept(key);
  return {
    kind: "upgrade",
    response: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  };
}

function shortAnswer(code: number, text: string, extra = ""): string {
  const body = `${code} ${text}\n`;
  return `HTTP/1.1 ${code} ${text}\r\n${extra}Content-Type: text/plain\r\n` +
    `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
}

/** What the first bytes on the session port look like. */
export type FirstBytes = "tls" | "http" | "more" | "junk";

const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"];

/**
 * Classify the first bytes a peer sent: a TLS handshake record, the start of
 * an HTTP request, too few bytes to tell, or anything else.
 *
 * @example
 * ```ts
 * import { sniffFirstBytes } from "./websocket_upgrade.ts";
 * if (sniffFirstBytes(new Uint8Array([0x16, 0x03, 0x01])) !== "tls") throw new Error("tls");
 * if (sniffFirstBytes(new TextEncoder().encode("GE")) !== "more") throw new Error("more");
 * if (sniffFirstBytes(new TextEncoder().encode("GET /")) !== "http") throw new Error("http");
 * if (sniffFirstBytes(new TextEncoder().encode("SSH-2.0")) !== "junk") throw new Error("junk");
 * ```
 */
export function sniffFirstBytes(bytes: Uint8Array): FirstBytes {
  if (bytes.length === 0) return "more";
  if (bytes[0] === 0x16) {
    if (bytes.length < 2) return "more";
    return bytes[1] === 0x03 ? "tls" : "junk";
  }
  const text = new TextDecoder("latin1").decode(bytes.subarray(0, 8));
  for (const method of METHODS) {
    const word = `${method} `;
    if (text.startsWith(word)) return "http";
    if (word.startsWith(text)) return "more";
  }
  return "junk";
}
