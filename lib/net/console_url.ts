/**
 * The Console's address as a WebSocket URL: `ws://HOST[:PORT]/PATH` or
 * `wss://HOST[:PORT]/PATH`, for a Console behind a web server.
 *
 * @module
 */

import { formatHostPort, isValidHost } from "./hostport.ts";

/** A parsed `ws://` or `wss://` Console address. */
export interface WebSocketUrl {
  /** True for `wss://` (an outer TLS the web server terminates). */
  readonly secure: boolean;
  /** Host name or address, without brackets. */
  readonly host: string;
  /** Port: as written, else 80 for ws and 443 for wss. */
  readonly port: number;
  /** The path (and query), starting with "/". */
  readonly path: string;
  /** The `Host` header: host, and the port when one was written. */
  readonly hostHeader: string;
  /** The URL as the Daemon shows it. */
  readonly text: string;
}

/**
 * True when `text` names a WebSocket Console address (it starts with `ws://`
 * or `wss://`, any case).
 *
 * @example
 * ```ts
 * import { isWebSocketUrl } from "./console_url.ts";
 * if (!isWebSocketUrl("wss://example.net/portferry") || isWebSocketUrl("office:7470")) throw new Error("bad");
 * ```
 */
export function isWebSocketUrl(text: string): boolean {
  return /^wss?:\/\//i.test(text);
}

/**
 * Parse `ws://HOST[:PORT]/PATH` or `wss://HOST[:PORT]/PATH`. Throws
 * `TypeError` saying what is wrong and the form expected.
 *
 * @example
 * ```ts
 * import { parseWebSocketUrl } from "./console_url.ts";
 * const u = parseWebSocketUrl("wss://console.example.net/portferry");
 * if (!u.secure || u.port !== 443 || u.path !== "/portferry") throw new Error("bad");
 * const v = parseWebSocketUrl("ws://[::1]:8080/pf");
 * if (v.host !== "::1" || v.port !== 8080 || v.hostHeader !== "[::1]:8080") throw new Error("bad");
 * ```
 */
export function parseWebSocketUrl(text: string): WebSocketUrl {
  const form = "expected ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH";
  let url: URL;
  if (/^wss?:\/\/(?:[/?#]|$)/i.test(text)) {
    throw new TypeError(`Cannot use Console address "${text}": it names no host; ${form}`);
  }
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`Cannot use Console address "${text}": not a URL; ${form}`);
  }
  const scheme = url.protocol.toLowerCase();
  if (scheme !== "ws:" && scheme !== "wss:") {
    throw new TypeError(
      `Cannot use Console address "${text}": the scheme is not ws or wss; ${form}`,
    );
  }
  if (url.username !== "" || url.password !== "" || url.hash !== "") {
    throw new TypeError(
      `Cannot use Console address "${text}": no user, password or #fragment goes in it; ${form}`,
    );
  }
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (host === "" || !isValidHost(host)) {
    throw new TypeError(`Cannot use Console address "${text}": "${host}" is not a host; ${form}`);
  }
  const secure = scheme === "wss:";
  const port = url.port === "" ? (secure ? 443 : 80) : Number(url.port);
  const path = (url.pathname === "" ? "/" : url.pathname) + url.search;
  const hostHeader = url.port === "" ? formatHostPort(host, 0).replace(/:0$/, "") : url.host;
  return {
    secure,
    host,
    port,
    path,
    hostHeader,
    text: `${secure ? "wss" : "ws"}://${formatHostPort(host, port)}${path}`,
  };
}
