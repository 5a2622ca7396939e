/**
 * Dialing through an HTTP proxy with `CONNECT`, for Daemons on networks
 * whose only way out is a proxy.
 *
 * - {@linkcode parseProxyUrl}: `http://[USER:PASS@]HOST[:PORT]` into a
 *   {@linkcode ProxyConfig}; {@linkcode describeProxy} shows it with the
 *   password masked, the only form that may reach a log, a status or an error.
 * - {@linkcode proxyFromEnv}: the proxy the environment asks for, as curl reads
 *   it (`https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`), unless
 *   `no_proxy`/`NO_PROXY` exempts the host ({@linkcode noProxyMatches}).
 * - {@linkcode connectThroughProxy}: a TCP connection to the proxy, a
 *   `CONNECT`, and the proxy's reply read within a size cap
 *   ({@linkcode ProxyReplyParser}); after a 2xx the raw connection is the
 *   tunnel, and whatever runs on it (the pinned TLS, a WebSocket) is
 *   end to end.
 *
 * @module
 */

import { errorMessage, HandshakeError, permissionHint } from "../core/errors.ts";
import { escapeControls } from "../core/text.ts";
import { parseIp, unmapIp } from "./address.ts";
import { formatHostPort, type HostPort, isValidHost } from "./hostport.ts";

/** A proxy to dial through: where it is and, for Basic authentication, who to be. */
export interface ProxyConfig {
  /** Host name or address (IPv6 without brackets). */
  readonly host: string;
  /** The proxy's port. */
  readonly port: number;
  /** Null: send no `Proxy-Authorization`. */
  readonly username: string | null;
  /** Never shown; see {@linkcode describeProxy}. */
  readonly password: string | null;
}

/** The port curl assumes when a proxy URL names none. */
export const DEFAULT_PROXY_PORT = 1080;

/** Most bytes of the proxy's reply to `CONNECT` (status line and headers) read. */
export const MAX_PROXY_REPLY_BYTES = 16 * 1024;

/** The environment variables the Daemon reads for its proxy, in curl's order. */
export const PROXY_ENV_NAMES = [
  "https_proxy",
  "HTTPS_PROXY",
  "all_proxy",
  "ALL_PROXY",
  "no_proxy",
  "NO_PROXY",
] as const;

/** The form a proxy takes, for messages. */
export const PROXY_FORM = "http://[USER:PASS@]HOST:PORT";

/** The exact message when the proxy asks for (other) credentials. */
export const PROXY_CREDENTIALS_MESSAGE =
  "the proxy wants credentials: --proxy http://USER:PASS@HOST:PORT or --proxy-auth-file";

/**
 * A proxy URL with any password replaced by `***`, for messages about text
 * that may not parse.
 *
 * @example
 * ```ts
 * import { redactProxyText } from "./proxy.ts";
 * if (redactProxyText("http://ann:s3cret@proxy:3128") !== "http://ann:***@proxy:3128") throw new Error("bad");
 * ```
 */
export function redactProxyText(text: string): string {
  // Everything from the first ':' after any scheme to the last '@' goes: a
  // password may hold '/', '@', '?' or '#', and curl takes a URL without a scheme.
  return escapeControls(
    text.replace(/^((?:[A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^:@]*):.*@/s, "$1:***@"),
  );
}

/**
 * Parse `http://[USER:PASS@]HOST[:PORT]`. A URL without a scheme is taken as
 * `http://`, one without a port as port 1080 (both as curl does). User and
 * password may be percent-encoded.
 *
 * @throws {TypeError} saying what is wrong, with the password masked.
 *
 * @example
 * ```ts
 * import { parseProxyUrl } from "./proxy.ts";
 * const p = parseProxyUrl("http://ann:s%40cret@proxy.example:3128");
 * if (p.host !== "proxy.example" || p.port !== 3128 || p.password !== "s@cret") throw new Error("bad");
 * ```
 */
export function parseProxyUrl(text: string): ProxyConfig {
  const shown = `"${redactProxyText(text)}"`;
  const fail = (why: string): never => {
    throw new TypeError(`Cannot use proxy ${shown}: ${why}; write ${PROXY_FORM}`);
  };
  const full = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(full);
  } catch {
    return fail("it is not a URL");
  }
  if (url.protocol !== "http:") {
    fail(`only http:// proxies are supported, not "${escapeControls(url.protocol)}//"`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    fail("a proxy URL has no path, query or fragment");
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "" || (!isValidHost(host) && parseIp(host) === null)) fail("the host is not valid");
  const explicitPort = /^[^/]*\/\/(?:[^@/]*@)?(?:\[[^\]]*\]|[^:/]*):(\d+)\/?$/.exec(full);
  const port = url.port !== "" ? Number(url.port) : explicitPort ? 80 : DEFAULT_PROXY_PORT;
  if (port === 0) fail("the port must be 1-65535");
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return fail("the user name or password has a bad %-escape");
    }
  };
  const username = url.username === "" && url.password === "" ? null : decode(url.username);
  const password = username === null ? null : decode(url.password);
  return Object.freeze({ host, port, username, password });
}

/**
 * How a proxy is shown: `http://USER:***@HOST:PORT`, or without user info.
 *
 * @example
 * ```ts
 * import { describeProxy } from "./proxy.ts";
 * const p = { host: "proxy", port: 3128, username: "ann", password: "s3cret" };
 * if (describeProxy(p) !== "http://ann:***@proxy:3128") throw new Error("bad");
 * ```
 */
export function describeProxy(proxy: ProxyConfig): string {
  const who = proxy.username === null
    ? ""
    : `${escapeControls(encodeURIComponent(proxy.username))}:***@`;
  return `http://${who}${formatHostPort(proxy.host, proxy.port)}`;
}

/** The proxy the environment asks for, and the variable it came from. */
export interface EnvProxy {
  readonly proxy: ProxyConfig;
  /** e.g. `HTTPS_PROXY`. */
  readonly source: string;
}

/**
 * The proxy the environment asks for to reach `host:port`, as curl reads it
 * for an https URL: `https_proxy`, then `HTTPS_PROXY`, then `all_proxy`, then
 * `ALL_PROXY` (the first that is set and not empty); null when none is set or
 * `no_proxy` (or else `NO_PROXY`) exempts the host. `get` reads one variable.
 *
 * @throws {TypeError} when the chosen variable holds no usable proxy URL.
 *
 * @example
 * ```ts
 * import { proxyFromEnv } from "./proxy.ts";
 * const env: Record<string, string> = { HTTPS_PROXY: "proxy:3128", NO_PROXY: ".corp" };
 * const get = (name: string) => env[name];
 * if (proxyFromEnv(get, "console.example", 443)?.source !== "HTTPS_PROXY") throw new Error("bad");
 * if (proxyFromEnv(get, "console.corp", 443) !== null) throw new Error("bad");
 * ```
 */
export function proxyFromEnv(
  get: (name: string) => string | undefined,
  host: string,
  port: number,
): EnvProxy | null {
  const first = (names: string[]) => {
    for (const name of names) {
      const value = get(name)?.trim();
      if (value) return { name, value };
    }
    return null;
  };
  const chosen = first(["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]);
  if (chosen === null) return null;
  const noProxy = first(["no_proxy", "NO_PROXY"]);
  if (noProxy !== null && noProxyMatches(noProxy.value, host, port)) return null;
  try {
    return { proxy: parseProxyUrl(chosen.value), source: chosen.name };
  } catch (err) {
    throw new TypeError(
      `${
        errorMessage(err)
      } (from the environment variable ${chosen.name}; --proxy none ignores it)`,
      { cause: err },
    );
  }
}

/**
 * Whether a `NO_PROXY` list exempts `host:port`, as curl matches it: entries
 * split by commas or spaces, case-insensitive; `*` matches everything; a
 * name matches itself and its subdomains, with or without a leading dot
 * (`example.com` and `.example.com` both match `www.example.com`); an IP
 * address matches that address, a CIDR (`10.0.0.0/8`, `fd00::/8`) the
 * addresses in it. Beyond curl, an entry may end in `:PORT` to match that
 * port only (`[::1]:7470` for IPv6).
 *
 * @example
 * ```ts
 * import { noProxyMatches } from "./proxy.ts";
 * if (!noProxyMatches("localhost, .corp.example", "db.corp.example", 443)) throw new Error("bad");
 * if (!noProxyMatches("10.0.0.0/8", "10.1.2.3", 7470)) throw new Error("bad");
 * if (noProxyMatches("example.com:8443", "example.com", 443)) throw new Error("bad");
 * ```
 */
export function noProxyMatches(list: string, host: string, port: number): boolean {
  const name = host.toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.$/, "");
  const ip = parseIp(name);
  for (const raw of list.split(/[\s,]+/)) {
    const entry = _splitEntry(raw.toLowerCase());
    if (entry === null || (entry.port !== null && entry.port !== port)) continue;
    if (entry.host === "*") return true;
    if (ip !== null ? _ipMatches(entry.host, ip) : _nameMatches(entry.host, name)) return true;
  }
  return false;
}

/** An entry's host and port (null: any port); null for an empty entry. */
function _splitEntry(entry: string): { host: string; port: number | null } | null {
  if (entry === "") return null;
  const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(entry);
  if (bracketed) return { host: bracketed[1], port: bracketed[2] ? Number(bracketed[2]) : null };
  const hostPort = /^([^:]*):(\d+)$/.exec(entry);
  if (hostPort) return { host: hostPort[1], port: Number(hostPort[2]) };
  return { host: entry, port: null };
}

function _nameMatches(entry: string, name: string): boolean {
  const suffix = entry.replace(/^\*?\./, "");
  if (suffix === "") return false;
  return name === suffix || name.endsWith(`.${suffix}`);
}

function _ipMatches(entry: string, ip: { family: 4 | 6; bits: bigint }): boolean {
  const slash = entry.indexOf("/");
  const net = parseIp(slash < 0 ? entry : entry.slice(0, slash));
  if (net === null) return false;
  const a = unmapIp(net);
  const b = unmapIp(ip);
  if (a.family !== b.family) return false;
  const width = a.family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(width) : entry.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > width) return false;
  const shift = BigInt(width - Number(prefixText));
  return a.bits >> shift === b.bits >> shift;
}

/** The proxy's reply to `CONNECT`: its status and reason. */
export interface ProxyReply {
  readonly status: number;
  /** The reason phrase as sent (escape before showing). */
  readonly reason: string;
  /** Bytes that came after the headers (a tunnel must carry none yet). */
  readonly extra: number;
}

/** Thrown by {@linkcode ProxyReplyParser} for a reply that is not HTTP or is too long. */
export class ProxyReplyError extends Error {
  /** An error saying what the proxy sent instead. */
  constructor(message: string) {
    super(message);
    this.name = "ProxyReplyError";
  }
}

/**
 * Collects the proxy's reply, chunk by chunk, up to the blank line that ends
 * its headers, and keeps at most `maxBytes` (the status line and headers).
 *
 * @example
 * ```ts
 * import { ProxyReplyParser } from "./proxy.ts";
 * const parser = new ProxyReplyParser();
 * const bytes = new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n");
 * if (parser.push(bytes.subarray(0, 9)) !== null) throw new Error("early");
 * if (parser.push(bytes.subarray(9))?.status !== 200) throw new Error("bad");
 * ```
 */
export class ProxyReplyParser {
  readonly #maxBytes: number;
  #buffer = new Uint8Array(0);

  /** A parser that refuses replies longer than `maxBytes`. */
  constructor(maxBytes = MAX_PROXY_REPLY_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Add a chunk; the reply once its headers are complete, else null.
   *
   * @throws {ProxyReplyError} when the bytes are not an HTTP reply or exceed the cap.
   */
  push(chunk: Uint8Array): ProxyReply | null {
    const joined = new Uint8Array(this.#buffer.length + chunk.length);
    joined.set(this.#buffer);
    joined.set(chunk, this.#buffer.length);
    this.#buffer = joined;
    const head = new TextDecoder("latin1").decode(joined.subarray(0, this.#maxBytes + 4));
    if (!"HTTP/".startsWith(head.slice(0, 5))) {
      throw new ProxyReplyError(
        `the proxy does not speak HTTP (its reply began "${escapeControls(head.slice(0, 40))}")`,
      );
    }
    const end = head.indexOf("\r\n\r\n");
    if (end < 0 || end + 4 > this.#maxBytes) {
      if (joined.length > this.#maxBytes) {
        throw new ProxyReplyError(`the proxy's reply headers exceed ${this.#maxBytes} bytes`);
      }
      return null;
    }
    const line = head.slice(0, head.indexOf("\r\n"));
    const status = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(line);
    if (!status) {
      throw new ProxyReplyError(
        `the proxy does not speak HTTP (its status line is "${escapeControls(line.slice(0, 80))}")`,
      );
    }
    return {
      status: Number(status[1]),
      reason: (status[2] ?? "").slice(0, 80),
      extra: joined.length - (end + 4),
    };
  }
}

/** Options for {@linkcode connectThroughProxy}. */
export interface ConnectThroughProxyOptions {
  /** What the connection is for, in messages, e.g. `Console`. */
  readonly what?: string;
  /** Deadline for the connection to the proxy and its reply, in ms. */
  readonly timeoutMs: number;
  /** Abort the dial; the promise then rejects with `signal.reason`. */
  readonly signal?: AbortSignal;
}

/**
 * Connect to `to` (the Console's host and port) through `proxy`: a TCP connection to the proxy, a
 * `CONNECT` (with Basic authentication when the proxy has a user), and a 2xx
 * reply. Resolves to the connection, which is then the tunnel.
 *
 * Fails with `HandshakeError` naming the proxy (password masked): code
 * `"refused"` when the proxy cannot be reached, `"timeout"` when it does
 * not answer in time, `"proxy"` when it asks for credentials, refuses, or
 * does not speak HTTP. A missing net permission throws `Deno.errors.NotCapable`.
 *
 * @example
 * ```ts ignore
 * const proxy = parseProxyUrl("http://proxy.corp:3128");
 * const target = { host: "console.example", port: 443 };
 * const conn = await connectThroughProxy(proxy, target, { timeoutMs: 10_000 });
 * ```
 */
export async function connectThroughProxy(
  proxy: ProxyConfig,
  to: HostPort,
  options: ConnectThroughProxyOptions,
): Promise<Deno.TcpConn> {
  const { host, port } = to;
  const target = formatHostPort(host, port);
  const shown = `"${describeProxy(proxy)}"`;
  const prefix = `Cannot connect to ${
    options.what ?? "Console"
  } at "${target}" through proxy ${shown}`;
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  const timedOut = () =>
    deadline.aborted ||
    (options.signal?.reason instanceof HandshakeError && options.signal.reason.code === "timeout");
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: proxy.host, port: proxy.port, signal });
  } catch (err) {
    if (timedOut()) {
      throw new HandshakeError(
        "timeout",
        `${prefix}: no connection to the proxy within ${options.timeoutMs} ms`,
      );
    }
    if (options.signal?.aborted) throw options.signal.reason;
    if (err instanceof Deno.errors.NotCapable) {
      throw new Deno.errors.NotCapable(
        permissionHint(err, `--allow-net=${formatHostPort(proxy.host, proxy.port)}`),
        { cause: err },
      );
    }
    throw new HandshakeError(
      "refused",
      `${prefix}: cannot reach the proxy (${errorMessage(err)})`,
      {
        cause: err,
      },
    );
  }
  const close = () => {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  };
  signal.addEventListener("abort", close, { once: true });
  try {
    conn.setNoDelay(true);
    await _writeAll(conn, new TextEncoder().encode(connectRequest(proxy, host, port)));
    const reply = await _readReply(conn);
    _checkReply(reply, prefix, target);
    return conn;
  } catch (err) {
    close();
    if (timedOut()) {
      throw new HandshakeError(
        "timeout",
        `${prefix}: no reply from the proxy within ${options.timeoutMs} ms`,
      );
    }
    if (options.signal?.aborted) throw options.signal.reason;
    if (err instanceof HandshakeError) throw err;
    const detail = err instanceof ProxyReplyError
      ? err.message
      : `the proxy closed the connection (${errorMessage(err)})`;
    throw new HandshakeError("proxy", `${prefix}: ${detail}`, { cause: err });
  } finally {
    signal.removeEventListener("abort", close);
  }
}

/**
 * The `CONNECT` request for `host:port`, with Basic authentication when the
 * proxy has a user.
 *
 * @example
 * ```ts
 * import { connectRequest } from "./proxy.ts";
 * const text = connectRequest({ host: "p", port: 3128, username: "a", password: "b" }, "::1", 443);
 * if (!text.startsWith("CONNECT [::1]:443 HTTP/1.1\r\n") || !text.includes("Basic YTpi")) throw new Error("bad");
 * ```
 */
export function connectRequest(proxy: ProxyConfig, host: string, port: number): string {
  const target = formatHostPort(host, port);
  const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
  if (proxy.username !== null) {
    const token = new TextEncoder().encode(`${proxy.username}:${proxy.password ?? ""}`).toBase64();
    lines.push(`Proxy-Authorization: Basic ${token}`);
  }
  return `${lines.join("\r\n")}\r\n\r\n`;
}

function _checkReply(reply: ProxyReply, prefix: string, target: string): void {
  if (reply.status === 407 || reply.status === 401) {
    throw new HandshakeError("proxy", `${prefix}: ${PROXY_CREDENTIALS_MESSAGE}`);
  }
  if (reply.status < 200 || reply.status > 299) {
    const reason = escapeControls(reply.reason);
    throw new HandshakeError(
      "proxy",
      `${prefix}: the proxy refused CONNECT to ${target} (${reply.status}${
        reason ? ` ${reason}` : ""
      })`,
    );
  }
  if (reply.extra > 0) {
    throw new HandshakeError("proxy", `${prefix}: the proxy sent data before the tunnel was used`);
  }
}

async function _readReply(conn: Deno.Conn): Promise<ProxyReply> {
  const parser = new ProxyReplyParser();
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new ProxyReplyError("the proxy closed the connection without a reply");
    const reply = parser.push(buf.subarray(0, n));
    if (reply) return reply;
  }
}

async function _writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
