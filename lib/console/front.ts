/**
 * The session port's front door: plain TCP in front of the Console's TLS.
 *
 * Deno cannot abort a TLS handshake in progress. Closing a `TlsConn` before
 * its handshake ends leaves the socket open until the peer sends or closes,
 * so a listener that hands peers straight to `Deno.listenTls` cannot enforce
 * a handshake deadline, and idle peers could fill every handshake slot.
 *
 * The front owns the public socket. It accepts plain TCP, relays each
 * connection to a TLS listener on 127.0.0.1 in the same process, and closes
 * the public socket itself when the peer has not proved who it is by the
 * deadline, or at once when the handshake slots are full. Closing the relay's
 * inner socket too lets Deno's TLS side see the end and free its own.
 *
 * @module
 */

import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { formatHostPort } from "../pfo.ts";
import { listenSessions } from "../tls.ts";

/** First read size of the relay: a connection still proving itself holds little. */
const RELAY_START_BYTES = 16 * 1024;
/** How long an inner accept waits for its relay to register. */
const ADOPT_WAIT_MS = 2_000;
/** Read size a busy relay grows to, so a busy session moves in few syscalls. */
const RELAY_MAX_BYTES = 256 * 1024;

/** Options for {@linkcode SessionFront.listen}. */
export interface SessionFrontOptions {
  /** Public address to bind, e.g. "0.0.0.0". */
  readonly hostname: string;
  /** Public port; 0 picks a free one. */
  readonly port: number;
  /** The Console's certificate and key. */
  readonly identity: { readonly certPem: string; readonly keyPem: string };
  /** Most connections still proving themselves at once; more are closed on accept. */
  readonly maxPending: number;
  /** Time a connection has, from its TCP accept, to call `settle()`. */
  readonly deadlineMs: number;
  /** Called with the TLS side of each relayed connection. */
  readonly onLink: (link: FrontLink) => void;
  readonly log: Logger;
}

/** One connection that reached the TLS side. */
export interface FrontLink {
  /** The TLS connection; call `handshake()` before reading. */
  readonly conn: Deno.TlsConn;
  /** The peer's public address, as "host:port". */
  readonly remote: string;
  /** The peer has authenticated: the deadline no longer applies and its slot frees. */
  settle(): void;
  /** Close the public socket now (the TLS side sees the end). */
  cut(): void;
}

interface Entry {
  readonly outer: Deno.TcpConn;
  readonly inner: Deno.TcpConn;
  readonly remote: string;
  readonly timer: ReturnType<typeof setTimeout>;
  settled: boolean;
  closed: boolean;
}

/**
 * Plain TCP on the public port, TLS behind it; see the module doc.
 *
 * @example
 * ```ts
 * import { loadOrCreateIdentity } from "../identity.ts";
 * import { createLogger } from "../log.ts";
 * import { SessionFront } from "./front.ts";
 * const dir = await Deno.makeTempDir();
 * const identity = await loadOrCreateIdentity({ key: `${dir}/c.key`, cert: `${dir}/c.crt` }, { role: "console" });
 * const front = SessionFront.listen({
 *   hostname: "127.0.0.1", port: 0, identity, maxPending: 4, deadlineMs: 1000, onLink: () => {},
 *   log: createLogger({ sink: () => {} }),
 * });
 * if (front.addr.port === 0) throw new Error("not bound");
 * await front.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SessionFront {
  /** The public address actually bound. */
  readonly addr: Deno.NetAddr;
  readonly #outer: Deno.TcpListener;
  readonly #inner: Deno.TlsListener;
  readonly #innerPort: number;
  readonly #options: SessionFrontOptions;
  /** Relayed connections by the inner client's local port. */
  readonly #byPort = new Map<number, Entry>();
  #pending = 0;
  #shed = 0;
  #shedLoggedAt = 0;
  #closed = false;
  /** Inner accepts that arrived before their relay registered, by port. */
  readonly #waiting = new Map<number, (entry: Entry) => void>();
  readonly #loops: Promise<unknown>;

  private constructor(
    outer: Deno.TcpListener,
    inner: Deno.TlsListener,
    options: SessionFrontOptions,
  ) {
    this.#outer = outer;
    this.#inner = inner;
    this.#options = options;
    this.addr = outer.addr;
    this.#innerPort = (inner.addr as Deno.NetAddr).port;
    this.#loops = Promise.all([this.#outerLoop(), this.#innerLoop()]);
  }

  /**
   * Bind the public port and the internal TLS listener. Throws
   * `Deno.errors.AddrInUse`, or `Deno.errors.NotCapable` naming the flag.
   */
  static listen(options: SessionFrontOptions): SessionFront {
    let outer: Deno.TcpListener;
    try {
      outer = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    } catch (err) {
      if (err instanceof Deno.errors.NotCapable) {
        throw new Deno.errors.NotCapable(
          `${errorMessage(err)}: run with --allow-net=${
            formatHostPort(options.hostname, options.port)
          }`,
          { cause: err },
        );
      }
      throw err;
    }
    let inner: Deno.TlsListener;
    try {
      inner = listenSessions({ hostname: "127.0.0.1", port: 0, identity: options.identity });
    } catch (err) {
      outer.close();
      throw err;
    }
    return new SessionFront(outer, inner, options);
  }

  /** Connections now proving themselves. */
  get pending(): number {
    return this.#pending;
  }

  /** Connections closed on accept because every slot was taken. */
  get shed(): number {
    return this.#shed;
  }

  /** The next connection, or null once the listener is closed. */
  async #accept<C extends Deno.Conn>(listener: Deno.Listener<C>): Promise<C | null> {
    while (!this.#closed) {
      try {
        return await listener.accept();
      } catch (err) {
        if (
          this.#closed || err instanceof Deno.errors.BadResource ||
          err instanceof Deno.errors.Interrupted
        ) return null;
        this.#options.log.warn("session accept failed", { error: errorMessage(err) });
        // EMFILE and friends: give the process a moment rather than spin.
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return null;
  }

  async #innerLoop(): Promise<void> {
    let conn: Deno.TlsConn | null;
    while ((conn = await this.#accept(this.#inner)) !== null) this.#adopt(conn);
  }

  /** Match a TLS connection to its relay; the relay may register a moment later. */
  async #adopt(conn: Deno.TlsConn): Promise<void> {
    const from = conn.remoteAddr as Deno.NetAddr;
    let entry = this.#byPort.get(from.port);
    if (!entry) {
      entry = await new Promise<Entry | undefined>((resolve) => {
        const timer = setTimeout(() => {
          this.#waiting.delete(from.port);
          resolve(undefined);
        }, ADOPT_WAIT_MS);
        this.#waiting.set(from.port, (e) => {
          clearTimeout(timer);
          resolve(e);
        });
      });
    }
    if (!entry || entry.closed) {
      // Not one of ours (a local process found the internal port), or gone already.
      this.#options.log.warn("internal session listener: a connection not from the front closed", {
        remote: formatHostPort(from.hostname, from.port),
      });
      closeQuietly(conn);
      return;
    }
    const e = entry;
    this.#options.onLink({
      conn,
      remote: e.remote,
      settle: () => this.#settle(e),
      cut: () => this.#end(e),
    });
  }

  /** Stop accepting and cut every connection not yet settled. Settled ones stay. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#outer);
    closeQuietly(this.#inner);
    for (const entry of [...this.#byPort.values()]) {
      if (!entry.settled) this.#end(entry);
    }
    await this.#loops;
  }

  async #outerLoop(): Promise<void> {
    const { log, maxPending } = this.#options;
    let outer: Deno.TcpConn | null;
    while ((outer = await this.#accept(this.#outer)) !== null) {
      if (this.#pending >= maxPending) {
        this.#shed++;
        closeQuietly(outer);
        const now = Date.now();
        if (now - this.#shedLoggedAt > 10_000) {
          this.#shedLoggedAt = now;
          log.warn("pending handshake cap reached; new connections closed at once", {
            limit: maxPending,
            closed: this.#shed,
          });
        }
        continue;
      }
      this.#pending++;
      this.#relay(outer).catch((err) => {
        log.warn("session relay failed", { error: errorMessage(err) });
      });
    }
  }

  async #relay(outer: Deno.TcpConn): Promise<void> {
    const peer = outer.remoteAddr as Deno.NetAddr;
    const remote = formatHostPort(peer.hostname, peer.port);
    let inner: Deno.TcpConn;
    try {
      inner = await Deno.connect({ hostname: "127.0.0.1", port: this.#innerPort });
    } catch (err) {
      this.#pending--;
      closeQuietly(outer);
      throw new Error(`cannot reach the internal TLS listener for ${remote}`, { cause: err });
    }
    outer.setNoDelay(true);
    inner.setNoDelay(true);
    const entry: Entry = {
      outer,
      inner,
      remote,
      settled: false,
      closed: false,
      timer: setTimeout(() => {
        if (entry.settled || entry.closed) return;
        this.#options.log.warn("handshake deadline passed", {
          remote,
          ms: this.#options.deadlineMs,
        });
        this.#end(entry);
      }, this.#options.deadlineMs),
    };
    const port = (inner.localAddr as Deno.NetAddr).port;
    this.#byPort.set(port, entry);
    this.#waiting.get(port)?.(entry);
    this.#waiting.delete(port);
    try {
      // The peer's end only half-closes toward TLS (the TLS side then ends the
      // session). The TLS side's end is final: nobody reads the peer after it.
      await Promise.all([pump(outer, inner), pump(inner, outer).then(() => this.#end(entry))]);
    } finally {
      this.#byPort.delete(port);
      this.#end(entry);
    }
  }

  #settle(entry: Entry): void {
    if (entry.settled || entry.closed) return;
    entry.settled = true;
    clearTimeout(entry.timer);
    this.#pending--;
  }

  #end(entry: Entry): void {
    if (entry.closed) return;
    entry.closed = true;
    clearTimeout(entry.timer);
    if (!entry.settled) this.#pending--;
    closeQuietly(entry.outer);
    closeQuietly(entry.inner);
  }
}

/**
 * Copy `from` to `to` until `from` ends, then half-close `to`. An error on
 * either side closes both (the caller's `finally` does it).
 */
async function pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  let buf = new Uint8Array(RELAY_START_BYTES);
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) break;
      if (n === buf.length && buf.length < RELAY_MAX_BYTES) {
        const grown = new Uint8Array(RELAY_MAX_BYTES);
        grown.set(buf);
        buf = grown;
      }
      let off = 0;
      while (off < n) off += await to.write(buf.subarray(off, n));
    }
    await to.closeWrite();
  } catch {
    closeQuietly(from);
    closeQuietly(to);
  }
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}
