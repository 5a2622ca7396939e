/**
 * The Daemon's WebSocket transport: reach a Console behind a web server at
 * `ws://` or `wss://`, with the pinned portferry TLS still running inside.
 *
 * Deno's TLS client (`Deno.startTls`) runs only on a real TCP socket, so the
 * pinned TLS cannot sit on the WebSocket directly. A {@linkcode WebSocketRelay}
 * listens on 127.0.0.1 for one dial: the pin check and the TLS session
 * connect to it, and each connection it accepts is relayed, as WebSocket
 * binary messages, to the Console. The web server sees only the inner TLS's
 * ciphertext. (The Console's front does the same in reverse.)
 *
 * @module
 */

import { closeQuietly, errorMessage, HandshakeError, permissionHint } from "../core/errors.ts";
import { writeAll } from "../core/io.ts";
import type { Logger } from "../core/log.ts";
import type { ByteConn } from "../core/mux.ts";
import { upgradeClient } from "../core/websocket_upgrade.ts";
import type { WebSocketStream } from "../core/websocket.ts";
import type { WebSocketUrl } from "../net/console_url.ts";
import { formatHostPort } from "../net/hostport.ts";

/** Open a TCP connection (or a tunnel through a proxy) to `host:port`. */
export type DialTcp = (host: string, port: number, signal: AbortSignal) => Promise<Deno.TcpConn>;

/** Options for {@linkcode openWebSocket}. */
export interface OpenWebSocketOptions {
  /** PEM certificates the `wss://` server's certificate must chain to; absent: the public roots. */
  readonly caCerts?: readonly string[];
  /** How to reach the web server; default a direct `Deno.connect` (an HTTP proxy goes here). */
  readonly dial?: DialTcp;
  readonly signal: AbortSignal;
}

/**
 * Connect to the web server, run the outer TLS for `wss://`, and upgrade.
 * Throws `HandshakeError`: "refused" when nothing answers or the server
 * refuses the upgrade, "tls" when its certificate does not verify.
 *
 * @example
 * ```ts ignore
 * const ws = await openWebSocket(parseWebSocketUrl("wss://example.net/portferry"), { signal });
 * ```
 */
export async function openWebSocket(
  url: WebSocketUrl,
  options: OpenWebSocketOptions,
): Promise<WebSocketStream> {
  const { signal } = options;
  const label = `"${url.text}"`;
  let tcp: Deno.TcpConn;
  try {
    tcp = await (options.dial ?? directDial)(url.host, url.port, signal);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (err instanceof HandshakeError) throw err;
    if (err instanceof Deno.errors.NotCapable) {
      throw new Deno.errors.NotCapable(
        permissionHint(err, `--allow-net=${formatHostPort(url.host, url.port)}`),
        { cause: err },
      );
    }
    throw new HandshakeError(
      "refused",
      `Cannot connect to Console at ${label}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  tcp.setNoDelay(true);
  let conn: ByteConn = tcp;
  const cut = () => closeQuietly(conn);
  signal.addEventListener("abort", cut, { once: true });
  try {
    if (url.secure) conn = await outerTls(tcp, url, options.caCerts);
    return await upgradeClient(conn, { host: url.hostHeader, path: url.path, label });
  } catch (err) {
    closeQuietly(conn);
    if (signal.aborted) throw signal.reason;
    throw err;
  } finally {
    signal.removeEventListener("abort", cut);
  }
}

function directDial(host: string, port: number, signal: AbortSignal): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: host, port, signal });
}

/** The web server's TLS, verified against `caCerts` or the public roots. */
async function outerTls(
  tcp: Deno.TcpConn,
  url: WebSocketUrl,
  caCerts: readonly string[] | undefined,
): Promise<Deno.TlsConn> {
  const tls = await Deno.startTls(tcp, {
    hostname: url.host,
    ...(caCerts ? { caCerts: [...caCerts] } : {}),
  });
  try {
    await tls.handshake();
  } catch (err) {
    closeQuietly(tls);
    const hint = caCerts
      ? "it does not chain to the --ca certificate"
      : "it does not chain to the public roots; give the web server's CA with --ca FILE";
    throw new HandshakeError(
      "tls",
      `Cannot connect to Console at "${url.text}": the web server's certificate is not trusted (${
        errorMessage(err)
      }); ${hint}`,
      { cause: err },
    );
  }
  return tls;
}

/** Options for {@linkcode WebSocketRelay.open}. */
export interface WebSocketRelayOptions extends Omit<OpenWebSocketOptions, "signal"> {
  readonly log: Logger;
}

/**
 * A loopback listener for one dial: each accepted connection is carried over
 * a new WebSocket to the Console. `close()` stops accepting; connections
 * already relayed live on until either end closes.
 *
 * @example
 * ```ts ignore
 * const relay = WebSocketRelay.open(url, { log });
 * const link = await connectPinned({ hostname: url.host, port: url.port, via: relay.addr, fingerprint, timeoutMs });
 * relay.close();
 * ```
 */
export class WebSocketRelay {
  /** Where to connect: 127.0.0.1 and the bound port. */
  readonly addr: { readonly hostname: string; readonly port: number };
  readonly #listener: Deno.TcpListener;
  readonly #url: WebSocketUrl;
  readonly #options: WebSocketRelayOptions;
  readonly #abort = new AbortController();
  #error: unknown = null;

  private constructor(
    listener: Deno.TcpListener,
    url: WebSocketUrl,
    options: WebSocketRelayOptions,
  ) {
    this.#listener = listener;
    this.#url = url;
    this.#options = options;
    this.addr = { hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port };
    void this.#acceptLoop();
  }

  /** Bind 127.0.0.1 on a free port. */
  static open(url: WebSocketUrl, options: WebSocketRelayOptions): WebSocketRelay {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
    return new WebSocketRelay(listener, url, options);
  }

  /** Why the last WebSocket could not be opened, or null. */
  get error(): unknown {
    return this.#error;
  }

  /** Stop accepting; abort WebSockets still being opened. */
  close(): void {
    this.#abort.abort(new Deno.errors.Interrupted("the dial ended"));
    closeQuietly(this.#listener);
  }

  async #acceptLoop(): Promise<void> {
    while (true) {
      let local: Deno.TcpConn;
      try {
        local = await this.#listener.accept();
      } catch {
        return; // closed
      }
      void this.#carry(local);
    }
  }

  async #carry(local: Deno.TcpConn): Promise<void> {
    let ws: WebSocketStream;
    try {
      ws = await openWebSocket(this.#url, { ...this.#options, signal: this.#abort.signal });
    } catch (err) {
      if (!this.#abort.signal.aborted) this.#error = err;
      closeQuietly(local);
      return;
    }
    local.setNoDelay(true);
    try {
      await Promise.all([pipe(local, ws), pipe(ws, local)]);
    } finally {
      closeQuietly(ws);
      closeQuietly(local);
    }
  }
}

/** Copy until `from` ends, then half-close `to`; on an error close both. */
async function pipe(from: ByteConn, to: ByteConn): Promise<void> {
  const buf = new Uint8Array(256 * 1024);
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  } catch {
    closeQuietly(from);
    closeQuietly(to);
  }
}
