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
 * deadline, or at once when the handshake slots are full or the peer's
 * address already holds its share of them. Closing the relay's
 * inner socket too lets Deno's TLS side see the end and free its own.
 *
 * @module
 */

import { isIP } from "node:net";
import { closeQuietly, errorMessage, permissionHint } from "../core/errors.ts";
import { writeAll } from "../core/io.ts";
import { type Logger, LogThrottle } from "../core/log.ts";
import type { ByteConn } from "../core/mux.ts";
import { formatHostPort } from "../net/hostport.ts";
import { MAX_PENDING_HANDSHAKES_PER_SOURCE } from "../core/protocol.ts";
import { listenSessions } from "../core/tls.ts";
import { readHttpHead, WebSocketStream } from "../core/websocket.ts";
import { answerUpgrade, sniffFirstBytes } from "../core/websocket_upgrade.ts";
import { clientAddress, type TrustedProxies } from "../net/forwarded.ts";

/** First read size of the relay: a connection still proving itself holds little. */
const RELAY_START_BYTES = 16 * 1024;
/** How long an inner accept waits for its relay to register. */
const ADOPT_WAIT_MS = 2_000;
/** How long a relay may still pass on bytes after its TLS side closed. */
const RELEASE_GRACE_MS = 2_000;
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
  /**
   * Most of those one source may hold (see {@linkcode handshakeSource});
   * more from it are closed on accept. Default
   * {@linkcode MAX_PENDING_HANDSHAKES_PER_SOURCE}.
   */
  readonly maxPendingPerSource?: number;
  /** Time a connection has, from its TCP accept, to call `settle()`. */
  readonly deadlineMs: number;
  /**
   * The path on which an HTTP/1.1 WebSocket upgrade is taken (its binary
   * messages then carry the same TLS stream); null or absent takes none.
   * Any other HTTP request gets a 404.
   */
  readonly websocketPath?: string | null;
  /** Reverse proxies whose `X-Forwarded-For` names the peer (WebSocket peers only). */
  readonly trustedProxies?: TrustedProxies;
  /** Called with the TLS side of each relayed connection. */
  readonly onLink: (link: FrontLink) => void;
  readonly log: Logger;
}

/** The TLS side of one relayed connection, as the session code uses it. */
export interface FrontConn extends ByteConn {
  /** Run the TLS handshake; call before reading. */
  handshake(): Promise<unknown>;
}

/** One connection that reached the TLS side. */
export interface FrontLink {
  /**
   * The TLS connection. Its `close()` also lets the public socket go: at once
   * when the relay has passed everything on, else after a short grace (a
   * peer that stopped reading cannot hold the socket).
   */
  readonly conn: FrontConn;
  /** The peer's public address, as "host:port". */
  readonly remote: string;
  /** The peer has authenticated: the deadline no longer applies and its slot frees. */
  settle(): void;
}

interface Entry {
  readonly outer: Deno.TcpConn;
  /** What the relay reads and writes: the public socket, or a WebSocket over it. */
  readonly peer: ByteConn;
  readonly inner: Deno.TcpConn;
  /** The inner client's local port, which the TLS side sees as its peer's. */
  readonly port: number;
  readonly remote: string;
  /** The public peer's source, as {@linkcode handshakeSource} names it. */
  readonly source: string;
  /** The handshake deadline, then the grace after the TLS side closed. */
  timer: ReturnType<typeof setTimeout> | undefined;
  settled: boolean;
  adopted: boolean;
  closed: boolean;
}

/** A peer the front relays: what to read and write, what to send first, how to name it. */
interface Opened {
  readonly peer: ByteConn;
  readonly first: Uint8Array;
  readonly remote: string;
  /** The source its handshake slot counts against, when not the TCP peer's (X-Forwarded-For). */
  readonly source?: string;
}

function peerText(conn: Deno.TcpConn): string {
  const peer = conn.remoteAddr as Deno.NetAddr;
  return formatHostPort(peer.hostname, peer.port);
}

interface Waiter {
  readonly resolve: (entry: Entry | undefined) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/**
 * Plain TCP on the public port, TLS behind it; see the module doc.
 *
 * @example
 * ```ts
 * import { loadOrCreateIdentity } from "../core/identity.ts";
 * import { createLogger } from "../core/log.ts";
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
  /** Live relays by the inner client's local port. */
  readonly #byPort = new Map<number, Entry>();
  /** Inner accepts that arrived before their relay registered, by port. */
  readonly #waiting = new Map<number, Waiter>();
  #pending = 0;
  /** Connections still proving themselves, by source. */
  readonly #pendingBySource = new Map<string, number>();
  #shed = 0;
  readonly #shedLog = new LogThrottle();
  #shedPerSource = 0;
  readonly #shedPerSourceLog = new LogThrottle();
  readonly #acceptLog = new LogThrottle();
  #closed = false;
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
          permissionHint(err, `--allow-net=${formatHostPort(options.hostname, options.port)}`),
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

  /** Connections closed on accept because their source held its share of the slots. */
  get shedPerSource(): number {
    return this.#shedPerSource;
  }

  /** Relays alive (public socket open). */
  get relays(): number {
    return this.#byPort.size;
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
    for (const waiter of this.#waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.resolve(undefined);
    }
    this.#waiting.clear();
    await this.#loops;
  }

  /** The next connection, or null once the listener is closed. */
  async #accept<C extends Deno.Conn>(
    listener: Deno.Listener<C>,
    which: string,
  ): Promise<C | null> {
    while (!this.#closed) {
      try {
        return await listener.accept();
      } catch (err) {
        if (
          this.#closed || err instanceof Deno.errors.BadResource ||
          err instanceof Deno.errors.Interrupted
        ) return null;
        // Out of file descriptors: give the process a moment rather than spin.
        // Anything else (a peer that reset before we took it) costs nothing.
        const starved = /too many open files|os error 2[34]\b/i.test(errorMessage(err));
        if (starved && this.#acceptLog.hit()) {
          this.#options.log.warn(`${which} cannot accept: out of file descriptors`, {
            error: errorMessage(err),
          });
        } else if (!starved) {
          this.#options.log.debug(`${which} accept failed`, { error: errorMessage(err) });
        }
        if (starved) await new Promise((r) => setTimeout(r, 100));
      }
    }
    return null;
  }

  async #outerLoop(): Promise<void> {
    const { log, maxPending } = this.#options;
    const perSource = this.#options.maxPendingPerSource ?? MAX_PENDING_HANDSHAKES_PER_SOURCE;
    let outer: Deno.TcpConn | null;
    while ((outer = await this.#accept(this.#outer, "session port")) !== null) {
      // The public peer's own address: the relay's inner side is always 127.0.0.1.
      const source = handshakeSource((outer.remoteAddr as Deno.NetAddr).hostname);
      const fromSource = this.#pendingBySource.get(source) ?? 0;
      if (fromSource >= perSource) {
        this.#shedPerSource++;
        closeQuietly(outer);
        if (this.#shedPerSourceLog.hit()) {
          log.warn(
            "pending handshake limit per source reached; its new connections closed at once",
            {
              source,
              limit: perSource,
              closedSoFar: this.#shedPerSource,
            },
          );
        }
        continue;
      }
      if (this.#pending >= maxPending) {
        this.#shed++;
        closeQuietly(outer);
        if (this.#shedLog.hit()) {
          log.warn("pending handshake cap reached; new connections closed at once", {
            limit: maxPending,
            closedSoFar: this.#shed,
          });
        }
        continue;
      }
      this.#pending++;
      this.#pendingBySource.set(source, fromSource + 1);
      this.#relay(outer, source).catch((err) => {
        log.warn("session relay failed", { error: errorMessage(err) });
      });
    }
  }

  async #relay(outer: Deno.TcpConn, tcpSource: string): Promise<void> {
    let source = tcpSource;
    const started = Date.now();
    const { deadlineMs, log } = this.#options;
    // Until the entry's own deadline exists, the public socket closes on this one.
    const early = setTimeout(() => {
      log.warn("handshake deadline passed", { remote: peerText(outer), ms: deadlineMs });
      closeQuietly(outer);
    }, deadlineMs);
    let opened: Opened | null;
    try {
      opened = await this.#open(outer);
    } catch (err) {
      opened = null;
      log.warn("session port: closed a peer that is neither TLS nor a WebSocket", {
        remote: peerText(outer),
        error: errorMessage(err),
      });
    } finally {
      clearTimeout(early);
    }
    if (opened === null) {
      this.#free(source);
      closeQuietly(outer);
      return;
    }
    if (opened.source !== undefined && opened.source !== source) {
      // Behind a trusted reverse proxy, the slot counts against the client it names.
      if (!this.#moveSlot(source, opened.source)) return closeQuietly(outer);
      source = opened.source;
    }
    const remote = opened.remote;
    let inner: Deno.TcpConn;
    try {
      inner = await Deno.connect({ hostname: "127.0.0.1", port: this.#innerPort });
    } catch (err) {
      this.#free(source);
      closeQuietly(outer);
      throw new Error(`cannot reach the internal TLS listener for ${remote}`, { cause: err });
    }
    const entry: Entry = {
      outer,
      peer: opened.peer,
      inner,
      port: (inner.localAddr as Deno.NetAddr).port,
      remote,
      source,
      timer: undefined,
      settled: false,
      adopted: false,
      closed: false,
    };
    if (this.#closed) return this.#end(entry);
    entry.timer = setTimeout(() => {
      if (entry.settled || entry.closed) return;
      log.warn("handshake deadline passed", { remote, ms: deadlineMs });
      this.#end(entry);
    }, Math.max(0, deadlineMs - (Date.now() - started)));
    try {
      // Best effort: a socket the peer already reset may refuse options (BSDs).
      outer.setNoDelay(true);
      inner.setNoDelay(true);
    } catch {
      // The pumps below find out and end the entry.
    }
    this.#register(entry);
    try {
      await writeAll(inner, opened.first);
      // The peer's end only half-closes toward TLS (the TLS side then ends the
      // session). The TLS side's end is final: nobody reads the peer after it.
      await Promise.all([
        pump(opened.peer, inner),
        pump(inner, opened.peer).then(() => this.#end(entry)),
      ]);
    } finally {
      if (this.#byPort.get(entry.port) === entry) this.#byPort.delete(entry.port);
      this.#end(entry);
    }
  }

  #register(entry: Entry): void {
    this.#byPort.set(entry.port, entry);
    const waiter = this.#waiting.get(entry.port);
    if (waiter) {
      this.#waiting.delete(entry.port);
      clearTimeout(waiter.timer);
      waiter.resolve(entry);
    }
  }

  /**
   * Look at the first bytes: TLS goes on as it is; an HTTP request is answered
   * (a WebSocket upgrade on the path, else a 404). Null: nothing to relay.
   */
  async #open(outer: Deno.TcpConn): Promise<Opened | null> {
    const own = peerText(outer);
    let buf = new Uint8Array(0);
    let kind = sniffFirstBytes(buf);
    while (kind === "more") {
      const chunk = new Uint8Array(RELAY_START_BYTES);
      const n = await outer.read(chunk);
      if (n === null) return null;
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      buf = joined;
      kind = sniffFirstBytes(buf);
    }
    if (kind === "tls") return { peer: outer, first: buf, remote: own };
    if (kind === "junk") {
      this.#options.log.warn("session port: closed a peer that is neither TLS nor HTTP", {
        remote: own,
      });
      return null;
    }
    const { head, rest } = await readHttpHead(outer, buf);
    const answer = await answerUpgrade(head, this.#options.websocketPath ?? null);
    await writeAll(outer, new TextEncoder().encode(answer.response));
    if (answer.kind === "refuse") {
      this.#options.log.warn(
        "session port: answered an HTTP request that is no WebSocket upgrade",
        {
          remote: own,
          status: answer.response.slice(9, 12),
        },
      );
      return null;
    }
    const peerHost = (outer.remoteAddr as Deno.NetAddr).hostname;
    const trusted = this.#options.trustedProxies;
    const client = trusted
      ? clientAddress(peerHost, head.headers.get("x-forwarded-for"), trusted)
      : { address: peerHost, via: null };
    const remote = client.via === null
      ? `${own} (WebSocket)`
      : `${client.address} (X-Forwarded-For via ${own})`;
    return {
      peer: new WebSocketStream(outer, { role: "server", initial: rest }),
      first: new Uint8Array(0),
      remote,
      source: client.via === null ? undefined : handshakeSource(client.address),
    };
  }

  async #innerLoop(): Promise<void> {
    let conn: Deno.TlsConn | null;
    while ((conn = await this.#accept(this.#inner, "internal TLS listener")) !== null) {
      this.#adopt(conn);
    }
  }

  /** Match a TLS connection to its relay; the relay may register a moment later. */
  async #adopt(conn: Deno.TlsConn): Promise<void> {
    const from = conn.remoteAddr as Deno.NetAddr;
    const fromText = formatHostPort(from.hostname, from.port);
    let entry: Entry | undefined;
    // Relays connect from 127.0.0.1 only; anything else is a local process.
    if (from.hostname === "127.0.0.1") {
      entry = this.#byPort.get(from.port);
      if (!entry && !this.#waiting.has(from.port) && !this.#closed) {
        entry = await new Promise<Entry | undefined>((resolve) => {
          const timer = setTimeout(() => {
            this.#waiting.delete(from.port);
            resolve(undefined);
          }, ADOPT_WAIT_MS);
          this.#waiting.set(from.port, { resolve, timer });
        });
      }
    }
    if (!entry || entry.adopted) {
      this.#options.log.warn(
        "internal TLS listener: closed a connection no relay claims (a local process?)",
        { from: fromText },
      );
      closeQuietly(conn);
      return;
    }
    entry.adopted = true;
    if (entry.closed) {
      this.#options.log.debug("the peer left before TLS began", { remote: entry.remote });
      closeQuietly(conn);
      return;
    }
    const e = entry;
    this.#options.onLink({
      conn: {
        handshake: () => conn.handshake(),
        read: (p) => conn.read(p),
        write: (p) => conn.write(p),
        closeWrite: () => conn.closeWrite(),
        close: () => {
          closeQuietly(conn);
          this.#release(e);
        },
      },
      remote: e.remote,
      settle: () => this.#settle(e),
    });
  }

  #settle(entry: Entry): void {
    if (entry.settled || entry.closed) return;
    entry.settled = true;
    clearTimeout(entry.timer);
    this.#free(entry.source);
  }

  /**
   * Count a pending connection against `to` rather than `from`; false (and
   * the slot freed) when `to` already holds its share.
   */
  #moveSlot(from: string, to: string): boolean {
    const perSource = this.#options.maxPendingPerSource ?? MAX_PENDING_HANDSHAKES_PER_SOURCE;
    const held = this.#pendingBySource.get(to) ?? 0;
    if (held >= perSource) {
      this.#free(from);
      this.#shedPerSource++;
      if (this.#shedPerSourceLog.hit()) {
        this.#options.log.warn(
          "pending handshake limit per source reached; its new connections closed at once",
          { source: to, limit: perSource, closedSoFar: this.#shedPerSource },
        );
      }
      return false;
    }
    const left = (this.#pendingBySource.get(from) ?? 1) - 1;
    if (left > 0) this.#pendingBySource.set(from, left);
    else this.#pendingBySource.delete(from);
    this.#pendingBySource.set(to, held + 1);
    return true;
  }

  /** A connection from `source` no longer holds a handshake slot. */
  #free(source: string): void {
    this.#pending--;
    const left = (this.#pendingBySource.get(source) ?? 1) - 1;
    if (left > 0) this.#pendingBySource.set(source, left);
    else this.#pendingBySource.delete(source);
  }

  /** The TLS side closed: the relay passes on what is left, or is cut after a grace. */
  #release(entry: Entry): void {
    if (entry.closed) return;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => this.#end(entry), RELEASE_GRACE_MS);
  }

  #end(entry: Entry): void {
    if (entry.closed) return;
    entry.closed = true;
    clearTimeout(entry.timer);
    if (!entry.settled) this.#free(entry.source);
    closeQuietly(entry.outer);
    closeQuietly(entry.inner);
  }
}

/**
 * Copy `from` to `to` until `from` ends, then half-close `to`. An error on
 * either side closes both (the caller's `finally` does it).
 */
async function pump(from: ByteConn, to: ByteConn): Promise<void> {
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
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  } catch {
    closeQuietly(from);
    closeQuietly(to);
  }
}

/**
 * The source a connection's handshake slot counts against: the peer's IPv4
 * address, or the /64 of its IPv6 address (one host is commonly given a
 * whole /64). An IPv4-mapped IPv6 address (a dual-stack listener) counts as
 * its IPv4 address.
 *
 * @example
 * ```ts
 * import { handshakeSource } from "./front.ts";
 * if (handshakeSource("::ffff:192.0.2.7") !== "192.0.2.7") throw new Error("mapped");
 * if (handshakeSource("2001:db8::1") !== "2001:db8:0:0::/64") throw new Error("v6");
 * ```
 */
export function handshakeSource(hostname: string): string {
  const host = hostname.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  if (mapped) return mapped[1];
  if (isIP(host) !== 6) return host;
  const groupsOf = (part: string) =>
    part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g]));
  const [head, tail] = host.split("::");
  const first = groupsOf(head);
  const last = tail === undefined ? [] : groupsOf(tail);
  const all = [...first, ...Array(8 - first.length - last.length).fill("0"), ...last];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(":")}::/64`;
}
