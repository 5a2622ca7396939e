/**
 * Hostile or hand-written peers for end-to-end tests: Daemons and Consoles
 * written by hand that speak the real wire protocol with the values an attacker
 * would pick. Each area keeps its own section; add new sections at the end.
 *
 * @module
 */

import { closeQuietly, fakeDaemonLink, hostPort, tempDir, within } from "./_harness.ts";
import { type Identity, loadOrCreateIdentity, signChallenge } from "../lib/core/identity.ts";
import {
  authTranscript,
  type DaemonFacts,
  type Message,
  PROTOCOL_VERSION,
  Tag,
} from "../lib/core/protocol.ts";
import { consoleHandshake, type DaemonClaim, MessageReader, sendNow } from "../lib/core/session.ts";
import { settingsPaths } from "../lib/settings/paths.ts";
import { connectPinned, listenSessions, type SessionLink } from "../lib/core/tls.ts";
import { encodeMessage } from "../lib/core/codec.ts";

// --- admission: a Daemon that keeps one identity and ignores "do not reconnect" ---

/** One hand-written Daemon session, past AUTH; PINGs are answered for it. */
export interface HandSession extends Disposable {
  /** The Console's first answer to AUTH: PENDING, ACCEPT or REJECT. */
  readonly first: Message;
  /** The next message other than a PING, or null once the Console closed the link. */
  next(ms?: number): Promise<Message | null>;
}

/** A Daemon identity the test speaks the wire protocol with, as often as it likes. */
export interface HandDaemon {
  readonly identity: Identity;
  readonly fingerprint: string;
  /** Connect, authenticate with this identity (and `token`), and return the session. */
  connect(token?: string | null): Promise<HandSession>;
}

/**
 * A Daemon written in the test with its own lasting identity: unlike a real
 * Daemon it reconnects whenever the test says so, whatever the Console said.
 */
export async function handDaemon(
  con: { address: string; fingerprint: string },
): Promise<HandDaemon> {
  const dir = await tempDir("pf-hand-daemon-");
  const paths = settingsPaths(`${dir}/portferry-daemon.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  const cert = btoa(String.fromCharCode(...identity.certDer));
  return {
    identity,
    fingerprint: identity.fingerprint,
    connect: async (token = null) => {
      const link = await connectPinned({
        ...hostPort(con.address),
        fingerprint: con.fingerprint,
        timeoutMs: 10_000,
      });
      try {
        return await authenticate(link, { identity, cert, token, console: con.fingerprint });
      } catch (err) {
        link.close();
        throw err;
      }
    },
  };
}

async function authenticate(
  link: SessionLink,
  a: { identity: Identity; cert: string; token: string | null; console: string },
): Promise<HandSession> {
  const reader = new MessageReader(link);
  await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
  const challenge = await within(reader.next(), 10_000, "the CHALLENGE");
  if (challenge.tag !== Tag.CHALLENGE) {
    throw new Error(`Cannot authenticate: got tag ${challenge.tag}, not CHALLENGE`);
  }
  await sendNow(link, {
    tag: Tag.AUTH,
    host: "hand-daemon",
    user: "tester",
    os: "linux",
    cert: a.cert,
    signature: await signChallenge(a.identity, authTranscript(challenge.nonce, a.console)),
    token: a.token,
  });
  const inbox: (Message | null)[] = [];
  let wake = () => {};
  const push = (m: Message | null) => {
    inbox.push(m);
    wake();
  };
  (async () => {
    try {
      while (true) {
        const msg = await reader.next();
        if (msg.tag === Tag.PING) await sendNow(link, { tag: Tag.PONG, seq: msg.seq });
        else push(msg);
      }
    } catch {
      push(null);
    }
  })();
  async function next(ms = 10_000): Promise<Message | null> {
    if (inbox.length === 0) {
      await within(new Promise<void>((r) => (wake = r)), ms, "a message from the Console");
    }
    const msg = inbox.shift()!;
    if (msg === null) inbox.unshift(null); // The end stays the end.
    return msg;
  }
  const first = await next();
  if (first === null) throw new Error("Cannot authenticate: the Console closed the link");
  return {
    first,
    next,
    [Symbol.dispose]: () => {
      try {
        link.close();
      } catch {
        // Closed already.
      }
    },
  };
}

// --- terminal and log injection: peers whose every string is hostile ---------------

/**
 * Characters no peer string may carry raw to a terminal or a log: ESC, CSI
 * (U+009B), DEL, CR, a bidi override and isolate, and the line and paragraph
 * separators.
 */
export const RAW_CONTROLS: RegExp =
  // deno-lint-ignore no-control-regex
  /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

/** A hostile string: clears the screen, starts a line of its own and reorders text. */
export function evil(forged: string): string {
  return `\x1b[2J\x1b[H\r\n${forged}\u202e\u2066\x9b31m\u2028\u2029\x07\x7f`;
}

/** A Daemon written here, past hello and AUTH with the facts it chose. */
export interface HostileDaemon {
  readonly link: SessionLink;
  readonly reader: MessageReader;
  /** The Console's first answer to AUTH (PENDING, ACCEPT or REJECT). */
  readonly answer: Awaited<ReturnType<MessageReader["next"]>>;
}

/** Authenticate to `con` as a Daemon that calls itself `facts`. */
export async function hostileDaemon(
  con: { address: string; fingerprint: string },
  facts: DaemonFacts,
): Promise<HostileDaemon> {
  const { identity, cert, link } = await fakeDaemonLink(con);
  try {
    const reader = new MessageReader(link);
    await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
    const challenge = await reader.next();
    if (challenge.tag !== Tag.CHALLENGE) {
      throw new Error(`expected CHALLENGE, got ${challenge.tag}`);
    }
    await sendNow(link, {
      tag: Tag.AUTH,
      ...facts,
      cert,
      signature: await signChallenge(
        identity,
        authTranscript(challenge.nonce, con.fingerprint),
      ),
      token: null,
    });
    const answer = await within(reader.next(), 10_000, "the Console's answer to AUTH");
    return { link, reader, answer };
  } catch (err) {
    closeQuietly(link);
    throw err;
  }
}

/** A Console written here, with a real identity, that a real Daemon pins and talks to. */
export interface HostileConsole extends Disposable {
  readonly address: string;
  readonly fingerprint: string;
  /** The next Daemon session past hello and AUTH (the Daemon's pin probes are skipped). */
  next(): Promise<{ conn: Deno.TlsConn; reader: MessageReader; claim: DaemonClaim }>;
}

/** Listen on 127.0.0.1 port 0 as a hostile Console. */
export async function hostileConsole(): Promise<HostileConsole> {
  const dir = await tempDir("pf-hostile-console-");
  const paths = settingsPaths(`${dir}/portferry-console.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "console",
  });
  const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
  async function next() {
    for (let i = 0; i < 10; i++) {
      const conn = await within(listener.accept(), 15_000, "a Daemon to connect");
      try {
        await conn.handshake();
        const reader = new MessageReader(conn);
        const claim = await consoleHandshake(conn, reader);
        return { conn, reader, claim };
      } catch {
        closeQuietly(conn); // A pin probe: TLS, then nothing.
      }
    }
    throw new Error("Cannot get a Daemon session: only probes arrived");
  }
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    fingerprint: identity.fingerprint,
    next,
    [Symbol.dispose]: () => closeQuietly(listener),
  };
}

// --- the Daemon's allow-list and resolver: a Console that sends raw OPENs and RESOLVEs ---

/** One accepted session of a {@linkcode rawConsole}, driven message by message. */
export interface RawConsoleSession extends Disposable {
  readonly conn: Deno.TlsConn;
  /** Send one message as is. */
  send(msg: Message): Promise<void>;
  /**
   * The next message `match` accepts, answering PINGs and dropping other
   * messages meanwhile; fails with `what` after `ms`.
   */
  expect<T extends Message>(
    match: (msg: Message) => msg is T,
    what: string,
    ms?: number,
  ): Promise<T>;
}

/** A Console written by hand: it accepts every Daemon and lets the test send anything. */
export interface RawConsole extends Disposable {
  /** Where the Daemon dials, "127.0.0.1:PORT". */
  readonly address: string;
  readonly fingerprint: string;
  /** The next Daemon, past hello and auth, accepted (the Daemon's pin probe is skipped). */
  next(): Promise<RawConsoleSession>;
}

/** Start a {@linkcode RawConsole} on 127.0.0.1 port 0. */
export async function rawConsole(): Promise<RawConsole> {
  const dir = await tempDir("pf-raw-console-");
  const paths = settingsPaths(`${dir}/portferry-console.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "console",
  });
  const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
  async function next(): Promise<RawConsoleSession> {
    for (let i = 0; i < 10; i++) {
      const conn = await within(listener.accept(), 15_000, "a Daemon to connect");
      const reader = new MessageReader(conn);
      try {
        await conn.handshake();
        await consoleHandshake(conn, reader);
      } catch {
        closeQuietly(conn); // The pin probe: TLS, then nothing.
        continue;
      }
      await sendNow(conn, { tag: Tag.ACCEPT, session: "ac0ffee1" });
      reader.trust();
      return rawSession(conn, reader);
    }
    throw new Error("Cannot get a Daemon session: only probes arrived");
  }
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    fingerprint: identity.fingerprint,
    next,
    [Symbol.dispose]: () => closeQuietly(listener),
  };
}

function rawSession(conn: Deno.TlsConn, reader: MessageReader): RawConsoleSession {
  const send = (msg: Message) => sendNow(conn, msg);
  async function expect<T extends Message>(
    match: (msg: Message) => msg is T,
    what: string,
    ms = 15_000,
  ): Promise<T> {
    return await within(
      (async () => {
        for (let i = 0; i < 100_000; i++) {
          const msg = await reader.next();
          if (match(msg)) return msg;
          if (msg.tag === Tag.PING) await send({ tag: Tag.PONG, seq: msg.seq });
        }
        throw new Error(`Cannot find ${what}: too many other messages`);
      })(),
      ms,
      what,
    );
  }
  return { conn, send, expect, [Symbol.dispose]: () => closeQuietly(conn) };
}

// --- memory limits: a Daemon waiting for acceptance that pings and never reads ---

/** A hand-written Daemon with a fresh identity, authenticated and told to wait (PENDING read). */
export interface PendingDaemon extends Disposable {
  readonly link: SessionLink;
  /** The Console's answer to AUTH. */
  readonly first: Message;
}

/**
 * Connect to `con` as a new Daemon, authenticate, and read the Console's
 * first answer; throws unless it is PENDING (start the Console without
 * auto-accept, trust or token).
 */
export async function pendingDaemon(
  con: { address: string; fingerprint: string },
): Promise<PendingDaemon> {
  const { identity, cert, link } = await fakeDaemonLink(con);
  try {
    const reader = new MessageReader(link);
    await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
    const challenge = await within(reader.next(), 10_000, "the CHALLENGE");
    if (challenge.tag !== Tag.CHALLENGE) {
      throw new Error(`Cannot authenticate: got tag ${challenge.tag}, not CHALLENGE`);
    }
    await sendNow(link, {
      tag: Tag.AUTH,
      host: "flood",
      user: "mallory",
      os: "linux",
      cert,
      signature: await signChallenge(
        identity,
        authTranscript(challenge.nonce, con.fingerprint),
      ),
      token: null,
    });
    const first = await within(reader.next(), 10_000, "the answer to AUTH");
    if (first.tag !== Tag.PENDING) {
      throw new Error(`Cannot wait for acceptance: got tag ${first.tag}, not PENDING`);
    }
    return {
      link,
      first,
      [Symbol.dispose]() {
        try {
          link.close();
        } catch {
          // Closed already.
        }
      },
    };
  } catch (err) {
    link.close();
    throw err;
  }
}

/** What {@linkcode floodPings} did. */
export interface FloodResult {
  /** Bytes of PING frames the link took. */
  readonly bytes: number;
  /** True when a write failed (the peer closed the link), false when `maxBytes` were sent. */
  readonly cut: boolean;
}

/**
 * Write PINGs on `link` as fast as it takes them and never read, until
 * `maxBytes` are sent or a write fails. Each write carries many PINGs.
 */
export async function floodPings(
  link: Pick<SessionLink, "write">,
  maxBytes: number,
): Promise<FloodResult> {
  let seq = 0;
  const batch = (): Uint8Array => {
    const frames = Array.from({ length: 2048 }, () => encodeMessage({ tag: Tag.PING, seq: ++seq }));
    const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      out.set(f, at);
      at += f.length;
    }
    return out;
  };
  let bytes = 0;
  try {
    while (bytes < maxBytes) {
      const chunk = batch();
      for (let off = 0; off < chunk.length;) off += await link.write(chunk.subarray(off));
      bytes += chunk.length;
    }
  } catch {
    return { bytes, cut: true };
  }
  return { bytes, cut: false };
}

// --- HTTP proxy: a small CONNECT proxy of our own, and proxies that answer badly ---

/** Options for {@linkcode testProxy}. */
export interface TestProxyOptions {
  /** Ask for Basic authentication with these credentials (407 otherwise). */
  readonly credentials?: { readonly username: string; readonly password: string };
  /** Refuse CONNECT to these ports with 403. */
  readonly refusePorts?: readonly number[];
  /** Answer every request with these raw bytes and close (a proxy that answers badly). */
  readonly rawReply?: string;
  /** Listen on this port (default: one the system picks). */
  readonly port?: number;
}

/** A running {@linkcode testProxy}. */
export interface TestProxy extends AsyncDisposable {
  readonly port: number;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /**
   * The `CONNECT` targets asked for, in order, with the status answered and,
   * for a tunnel, the first byte the client sent through it.
   */
  readonly requests: ProxyRequest[];
  /** Cut every connection through the proxy now (the proxy keeps listening). */
  cut(): void;
}

/** One `CONNECT` a {@linkcode testProxy} answered. */
export interface ProxyRequest {
  readonly target: string;
  readonly status: number;
  /** The first byte the client sent through the tunnel (0x16 opens a TLS handshake). */
  firstByte?: number;
}

/** A loopback HTTP proxy that handles `CONNECT` and relays bytes both ways. */
export function testProxy(options: TestProxyOptions = {}): TestProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
  const requests: ProxyRequest[] = [];
  const conns = new Set<Deno.Conn>();
  const serve = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      void proxyOne(conn, options, requests).catch(() => {}).finally(() => {
        conns.delete(conn);
        closeQuietly(conn);
      });
    }
  })().catch(() => {});
  const { port } = listener.addr;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    cut() {
      for (const conn of conns) closeQuietly(conn);
    },
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      for (const conn of conns) closeQuietly(conn);
      await serve;
    },
  };
}

async function proxyOne(
  conn: Deno.Conn,
  options: TestProxyOptions,
  requests: ProxyRequest[],
): Promise<void> {
  const head = await readHead(conn);
  if (head === null) return;
  const answer = (text: string) => conn.write(new TextEncoder().encode(text));
  if (options.rawReply !== undefined) return void await answer(options.rawReply);
  const target = /^CONNECT (\S+) HTTP\/1\.1\r\n/.exec(head)?.[1] ?? "";
  const status = proxyStatus(head, target, options);
  const request: ProxyRequest = { target, status };
  requests.push(request);
  if (status === 407) {
    return void await answer(
      'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n',
    );
  }
  if (status !== 200) return void await answer(`HTTP/1.1 ${status} Forbidden\r\n\r\n`);
  const upstream = await Deno.connect(hostPort(target));
  try {
    await answer("HTTP/1.1 200 Connection established\r\n\r\n");
    const first = new Uint8Array(1);
    if (await conn.read(first) !== 1) return;
    request.firstByte = first[0];
    await upstream.write(first);
    await Promise.all([
      conn.readable.pipeTo(upstream.writable).catch(() => {}),
      upstream.readable.pipeTo(conn.writable).catch(() => {}),
    ]);
  } finally {
    closeQuietly(upstream);
  }
}

function proxyStatus(head: string, target: string, options: TestProxyOptions): number {
  if (target === "") return 400;
  const creds = options.credentials;
  if (creds) {
    const expected = new TextEncoder().encode(`${creds.username}:${creds.password}`).toBase64();
    if (!head.includes(`\r\nProxy-Authorization: Basic ${expected}\r\n`)) return 407;
  }
  const port = Number(target.slice(target.lastIndexOf(":") + 1));
  return options.refusePorts?.includes(port) ? 403 : 200;
}

/** The request's head up to the blank line (at most 8 KiB), or null. */
async function readHead(conn: Deno.Conn): Promise<string | null> {
  let text = "";
  const buf = new Uint8Array(1);
  while (!text.endsWith("\r\n\r\n") && text.length < 8192) {
    const n = await conn.read(buf);
    if (n === null) return null;
    text += String.fromCharCode(buf[0]);
  }
  return text;
}
