import assert from "node:assert/strict";
import { type MemoryConn, memoryConnPair } from "./_memory_conn.ts";
import { encodeMessage } from "./codec.ts";
import { HandshakeError, OpenError } from "./errors.ts";
import { createLogger } from "./log.ts";
import {
  CAPABILITIES,
  INITIAL_WINDOW_BYTES,
  type OpenMessage,
  PROTOCOL_VERSION,
  Tag,
} from "./protocol.ts";
import {
  consoleHandshake,
  daemonHandshake,
  MessageReader,
  SEND_HIGH_WATER,
  SEND_QUEUE_CAP,
  sendNow,
  Session,
  type SessionEnd,
  type SessionHandlers,
} from "./session.ts";

const log = createLogger({ level: "error" });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Pair {
  console: Session;
  daemon: Session;
  /** Target-side ends of every stream the daemon accepted, by stream id. */
  targets: Map<number, MemoryConn>;
  targetArrived: () => Promise<MemoryConn>;
  ends: { console?: SessionEnd; daemon?: SessionEnd };
  chats: { console: string[]; daemon: string[] };
  [Symbol.asyncDispose](): Promise<void>;
}

/** A Console and a Daemon session over a small in-memory link. */
function sessionPair(
  options: {
    linkCapacity?: number;
    targetCapacity?: number;
    daemon?: Partial<SessionHandlers>;
    maxStreams?: { console?: number; daemon?: number };
    maxHeldBytes?: { console?: number; daemon?: number };
    /** Timing for both sides. */
    timing?: { heartbeatMs?: number; halfClosedIdleMs?: number };
    /** The Console sends early data (the Daemon offered it). */
    earlyData?: boolean;
    /** Log lines of both sides, when given. */
    lines?: string[];
    /** One-way delay of the link, in milliseconds. */
    delayMs?: number;
    /** Which sides grow windows (each saw `window-tuning` offered), and up to what. */
    windowTuning?: { console?: boolean; daemon?: boolean; max?: number };
  } = {},
): Pair {
  const lines = options.lines;
  const pairLog = lines ? createLogger({ sink: (line) => lines.push(line) }) : log;
  const [consoleLink, daemonLink] = memoryConnPair(
    options.linkCapacity ?? 4096,
    options.delayMs,
  );
  const targets = new Map<number, MemoryConn>();
  const waiting: ((c: MemoryConn) => void)[] = [];
  const ends: Pair["ends"] = {};
  const chats = { console: [] as string[], daemon: [] as string[] };
  const consoleSession = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log: pairLog.child({ side: "console" }),
    maxStreams: options.maxStreams?.console,
    maxHeldBytes: options.maxHeldBytes?.console,
    earlyData: options.earlyData,
    windowTuning: options.windowTuning?.console,
    streamWindowMax: options.windowTuning?.max,
    ...options.timing,
    handlers: { onChat: (t) => chats.console.push(t), onEnd: (e) => (ends.console = e) },
  });
  const daemon: Session = new Session(daemonLink, new MessageReader(daemonLink), {
    role: "daemon",
    id: "t",
    log: pairLog.child({ side: "daemon" }),
    maxStreams: options.maxStreams?.daemon,
    maxHeldBytes: options.maxHeldBytes?.daemon,
    windowTuning: options.windowTuning?.daemon,
    streamWindowMax: options.windowTuning?.max,
    ...options.timing,
    handlers: {
      onOpen: (msg) => {
        if (msg.port === 1) {
          daemon.send({
            tag: Tag.OPEN_ERR,
            stream: msg.stream,
            code: "refused",
            reason: "connection refused",
          });
          return;
        }
        const [app, relay] = memoryConnPair(options.targetCapacity ?? 4096);
        targets.set(msg.stream, app);
        daemon.acceptStream(msg.stream, relay, `${msg.host}:${msg.port}`, { log });
        waiting.shift()?.(app);
      },
      onResolve: (msg) =>
        daemon.send({
          tag: Tag.RESOLVE_RESULT,
          id: msg.id,
          addresses: [`10.0.0.${msg.host.length}`],
          error: null,
        }),
      onChat: (t) => chats.daemon.push(t),
      onEnd: (e) => (ends.daemon = e),
      ...options.daemon,
    },
  });
  consoleSession.run();
  daemon.run();
  return {
    console: consoleSession,
    daemon,
    targets,
    ends,
    chats,
    targetArrived: () => new Promise((resolve) => waiting.push(resolve)),
    async [Symbol.asyncDispose]() {
      await consoleSession.close("exit", "test over");
      await daemon.done();
    },
  };
}

/** Open a TCP stream from the Console side and start it. */
async function openStarted(
  session: Session,
  conn: MemoryConn,
  target: { host: string; port: number; pfo: string; client: string },
  options: { log: typeof log },
) {
  const opened = await session.openStream(conn, target, options);
  opened.stream.start();
  return opened;
}

async function readAll(conn: MemoryConn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(7000);
  let n: number | null;
  while ((n = await conn.read(buf)) !== null) parts.push(buf.slice(0, n));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function writeAll(conn: MemoryConn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off, off + 10_000));
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

Deno.test("Session.open() carries bytes both ways and half-close one direction at a time", async () => {
  await using pair = sessionPair();
  const [client, relay] = memoryConnPair(3000);
  const arrived = pair.targetArrived();
  const { stream } = await openStarted(pair.console, relay, {
    host: "db",
    port: 5432,
    pfo: "db",
    client: "c",
  }, { log });
  const target = await arrived;
  const up = pattern(1_000_000, 1);
  const down = pattern(700_000, 2);
  // Client sends everything, then shuts its write side, and still reads the reply.
  const clientDone = (async () => {
    await writeAll(client, up);
    await client.closeWrite();
    return await readAll(client);
  })();
  const gotUp = await readAll(target); // ends when the client's FIN arrives
  assert.deepEqual(gotUp, up);
  await writeAll(target, down);
  await target.closeWrite();
  assert.deepEqual(await clientDone, down);
  assert.equal(stream.bytesSent, up.length);
  assert.equal(stream.bytesReceived, down.length);
  await until(() => stream.ended, "the half-closed stream to end after both FINs");
  assert.equal(pair.console.streamCount, 0);
});

Deno.test("Stream flow control: a stalled reader holds at most one window and does not slow another stream", async () => {
  await using pair = sessionPair({ targetCapacity: 1024 });
  const [stalledClient, stalledRelay] = memoryConnPair(1024);
  let arrived = pair.targetArrived();
  await openStarted(pair.console, stalledRelay, { host: "t", port: 2, pfo: "p", client: "c" }, {
    log,
  });
  const stalledTarget = await arrived;
  // The client pushes 4 windows' worth; the target never reads.
  const pushing = writeAll(stalledClient, pattern(4 * INITIAL_WINDOW_BYTES, 3)).catch(() => {});
  arrived = pair.targetArrived();
  const [client, relay] = memoryConnPair(4096);
  await openStarted(pair.console, relay, { host: "t", port: 3, pfo: "p", client: "c" }, { log });
  const target = await arrived;
  const data = pattern(3 * INITIAL_WINDOW_BYTES, 4);
  const reading = readAll(target);
  await writeAll(client, data);
  await client.closeWrite();
  assert.deepEqual(await reading, data);
  // What the stalled stream has in flight is bounded by its window plus small socket buffers.
  const daemonStalled = [...pair.daemon.streams()].find((s) => s.id === 1)!;
  assert.ok(daemonStalled.bytesReceived + stalledTarget.unread <= INITIAL_WINDOW_BYTES + 2048);
  const consoleStalled = [...pair.console.streams()].find((s) => s.id === 1)!;
  assert.ok(consoleStalled.bytesSent <= INITIAL_WINDOW_BYTES, `sent ${consoleStalled.bytesSent}`);
  stalledClient.close();
  await pushing;
});

Deno.test("Session.open() rejects with the Daemon's coded reason", async () => {
  await using pair = sessionPair();
  const [, relay] = memoryConnPair();
  await assert.rejects(
    openStarted(pair.console, relay, { host: "t", port: 1, pfo: "p", client: "c" }, { log }),
    (e) => e instanceof OpenError && e.code === "refused",
  );
});

Deno.test("the stream cap refuses opens on either side with code limit, logs it once with a count, and frees with a closed stream", async () => {
  const lines: string[] = [];
  const target = { host: "t", port: 2, pfo: "p", client: "c" };
  // The Console's own cap.
  {
    await using pair = sessionPair({ maxStreams: { console: 2 }, lines });
    const held = [memoryConnPair(), memoryConnPair()];
    for (const [, relay] of held) await openStarted(pair.console, relay, target, { log });
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        openStarted(pair.console, memoryConnPair()[1], target, { log }),
        (e) => e instanceof OpenError && e.code === "limit" && /2 streams/.test(e.message),
      );
    }
    const logged = lines.filter((l) => /stream limit reached.*side=console/.test(l));
    assert.equal(logged.length, 1, lines.join("\n"));
    assert.match(logged[0], /side=console limit=2 refused=1/);
    // Closing one (both ends) frees a place.
    held[0][0].close();
    pair.targets.get(1)!.close();
    const stream = [...pair.console.streams()].find((s) => s.id === 1)!;
    await until(() => stream.ended, "the closed stream to end and free its place");
    await openStarted(pair.console, memoryConnPair()[1], target, { log });
  }
  // The Daemon's cap, lower than the Console's: the Daemon refuses with code limit.
  lines.length = 0;
  {
    await using pair = sessionPair({ maxStreams: { daemon: 1 }, lines });
    await openStarted(pair.console, memoryConnPair()[1], target, { log });
    await assert.rejects(
      openStarted(pair.console, memoryConnPair()[1], target, { log }),
      (e) =>
        e instanceof OpenError && e.code === "limit" && /Daemon holds 1 streams/.test(e.message),
    );
    assert.match(lines.join("\n"), /stream limit reached.*side=daemon limit=1 refused=1/);
  }
});

Deno.test("a half-closed stream that stays quiet is reset on both sides; one that still moves bytes, or is not half-closed, is kept", async () => {
  await using pair = sessionPair({ timing: { heartbeatMs: 20, halfClosedIdleMs: 300 } });
  const target = { host: "t", port: 2, pfo: "p", client: "c" };
  const open = async () => {
    const [client, relay] = memoryConnPair();
    const arrived = pair.targetArrived();
    const { stream } = await openStarted(pair.console, relay, target, { log });
    return { client, stream, app: await arrived };
  };
  const quiet = await open(); // half-closed, then nothing: reset
  const busy = await open(); // half-closed, the target keeps answering: kept
  const idle = await open(); // open both ways and silent: kept
  await quiet.client.closeWrite();
  await busy.client.closeWrite();
  const buf = new Uint8Array(64);
  assert.equal(await quiet.app.read(buf), null, "the target sees the client's FIN");
  assert.equal(await busy.app.read(buf), null);
  const t0 = performance.now();
  let beats = 0;
  while (!quiet.stream.ended && performance.now() - t0 < 3_000) {
    await busy.app.write(new Uint8Array([beats++ & 0xff]));
    await busy.client.read(buf);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ms = performance.now() - t0;
  assert.ok(quiet.stream.ended, "the quiet half-closed stream is still open after 3 s");
  assert.ok(ms >= 250, `reset after ${ms} ms, before its 300 ms`);
  assert.equal(
    await quiet.client.read(buf).catch(() => null),
    null,
    "the client's socket is closed",
  );
  // The Daemon's side went too: its stream is gone and the target's socket closed.
  while (pair.daemon.channel(quiet.stream.id) !== undefined && performance.now() - t0 < 3_000) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(pair.daemon.channel(quiet.stream.id), undefined);
  assert.ok(!busy.stream.ended, "a half-closed stream still moving bytes was reset");
  assert.ok(!idle.stream.ended, "an open, silent stream was reset");
  assert.ok(beats > 4, `the busy stream moved only ${beats} bytes`);
});

Deno.test("early data: bytes and FIN sent before OPEN_OK reach the target in order; a failed open or a client that left leaves nothing on either side", async () => {
  const opens: OpenMessage[] = [];
  let opened: () => void = () => {};
  const pair = sessionPair({
    earlyData: true,
    daemon: {
      onOpen: (msg) => {
        opens.push(msg);
        opened();
      },
    },
  });
  await using _ = pair;
  const nextOpen = () =>
    opens.length > 0 ? Promise.resolve(opens.shift()!) : new Promise<OpenMessage>((r) => {
      opened = () => r(opens.shift()!);
    });
  const target = { host: "t", port: 2, pfo: "p", client: "c" };
  const early = { log, early: true };

  // 1. The client speaks first and half-closes; the Daemon reaches its target only then.
  const [client, relay] = memoryConnPair();
  const opening = pair.console.openStream(relay, target, early);
  const request = pattern(100_000, 5);
  await writeAll(client, request);
  await client.closeWrite();
  const msg = await nextOpen();
  // Let the early frames cross the link before the target is reached.
  await until(() => pair.daemon.earlyHeld(msg.stream) === request.length, "early bytes held");
  const [app, appRelay] = memoryConnPair();
  pair.daemon.acceptStream(msg.stream, appRelay, "t:2", { log });
  const { stream } = await opening;
  assert.deepEqual(await readAll(app), request, "the target got every early byte, then EOF");
  await writeAll(app, encoder.encode("reply"));
  await app.closeWrite();
  assert.equal(decoder.decode(await readAll(client)), "reply");
  await until(() => stream.ended, "the first stream to end");

  // 2. The open fails after the client sent early: nothing stays on either side.
  const [client2, relay2] = memoryConnPair();
  const failing = pair.console.openStream(relay2, target, early);
  await writeAll(client2, pattern(10_000, 6));
  const msg2 = await nextOpen();
  pair.daemon.send({ tag: Tag.OPEN_ERR, stream: msg2.stream, code: "refused", reason: "no" });
  await assert.rejects(failing, (e) => e instanceof OpenError && e.code === "refused");
  relay2.close();

  // 3. The client's socket fails before the Daemon answers: the Console resets its
  // stream, and the Daemon's, once reached, is reset too.
  let fail: (err: Error) => void = () => {};
  const failingConn = {
    read: () => new Promise<number | null>((_, reject) => (fail = reject)),
    write: (p: Uint8Array) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  const leaving = pair.console.openStream(failingConn, target, early);
  const msg3 = await nextOpen();
  fail(new Deno.errors.ConnectionReset("reset by the client"));
  await until(
    () => pair.daemon.earlyHeld(msg3.stream) === -1,
    "the Daemon to drop the open's early state",
  );
  const [app3, appRelay3] = memoryConnPair();
  pair.daemon.acceptStream(msg3.stream, appRelay3, "t:2", { log });
  const { stream: s3 } = await leaving;
  assert.ok(s3.ended, "the Console's stream ended with its client");
  assert.equal((await readAll(app3)).length, 0, "the target's socket is closed, with nothing sent");

  // 4. The client closes at once: its early FIN is passed on, and the stream completes.
  const [client4, relay4] = memoryConnPair();
  const closing = pair.console.openStream(relay4, target, early);
  await client4.closeWrite();
  const msg4 = await nextOpen();
  await until(() => pair.daemon.earlyHeld(msg4.stream) === 0, "the early FIN");
  const [app4, appRelay4] = memoryConnPair();
  pair.daemon.acceptStream(msg4.stream, appRelay4, "t:2", { log });
  assert.equal((await readAll(app4)).length, 0, "the target sees EOF");
  await app4.closeWrite();
  assert.equal((await readAll(client4)).length, 0);
  const { stream: s4 } = await closing;
  await until(() => s4.ended, "the fourth stream to complete");
  await until(
    () => pair.daemon.streamCount === 0 && pair.console.streamCount === 0,
    "no stream left on either side",
  );
  assert.equal(pair.daemon.earlyHeld(msg2.stream), -1, "the failed open's early bytes are dropped");
});

/** Fails when `promise` is not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Wait for `check()` to hold, at most 3 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  const t0 = performance.now();
  while (!check()) {
    if (performance.now() - t0 > 3_000) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

Deno.test("a second OPEN for a stream whose target is still being reached is a protocol error", async () => {
  const pair = sessionPair({ daemon: { onOpen: () => {} } });
  const open = {
    tag: Tag.OPEN,
    stream: 9,
    proto: "tcp",
    host: "t",
    port: 2,
    pfo: "p",
    client: "c",
  } as const;
  pair.console.send(open);
  pair.console.send(open);
  await pair.daemon.done();
  assert.equal(pair.ends.daemon?.code, "protocol");
  assert.match(pair.ends.daemon!.reason, /stream 9: already open/);
  await pair.console.done();
});

Deno.test("Session chat, resolve and close reach the other side", async () => {
  const pair = sessionPair();
  pair.console.chat("hello daemon");
  pair.daemon.chat("hello console");
  assert.deepEqual(await pair.console.resolve("db01"), ["10.0.0.4"]);
  assert.deepEqual(pair.chats.daemon, ["hello daemon"]);
  assert.deepEqual(pair.chats.console, ["hello console"]);
  await pair.daemon.close("closed", "user closed", { final: true });
  await pair.console.done();
  assert.equal(pair.ends.console?.remote, true);
  assert.equal(pair.ends.console?.reason, "user closed");
  assert.equal(pair.ends.console?.final, true);
});

Deno.test("Session closes with a protocol error when the peer sends what its role may not", async () => {
  const [consoleLink, daemonLink] = memoryConnPair();
  let end: SessionEnd | undefined;
  const session = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log,
    handlers: { onChat: () => {}, onEnd: (e) => (end = e) },
  });
  session.run();
  // A Daemon that tries to open a stream on the Console.
  await daemonLink.write(
    encodeMessage({
      tag: Tag.OPEN,
      stream: 1,
      proto: "tcp",
      host: "x",
      port: 22,
      pfo: "p",
      client: "c",
    }),
  );
  await session.done();
  assert.equal(end?.code, "protocol");
  assert.match(end!.reason, /a daemon may not send it/);
});

Deno.test("Session frees its reader's read buffer as soon as it ends, whichever side ends it", async () => {
  for (const ender of ["peer", "local close", "never run"] as const) {
    const [link, peer] = memoryConnPair();
    const reader = new MessageReader(link);
    const session = new Session(link, reader, {
      role: "console",
      id: "t",
      log,
      handlers: { onChat: () => {}, onEnd: () => {} },
    });
    if (ender !== "never run") session.run();
    assert.equal(reader.bufferBytes, 256 * 1024, ender);
    if (ender === "peer") peer.close();
    else await session.close("exit", "test over");
    await session.done();
    // Not left for a full garbage collection: a Console whose Daemon reconnects often grew by it.
    assert.equal(reader.bufferBytes, 0, ender);
    assert.equal(await reader.batch(), null, ender);
  }
});

Deno.test("MessageReader.release() during a read: the read finds the end of the link", async () => {
  const [link, peer] = memoryConnPair();
  const reader = new MessageReader(link);
  const reading = reader.batch();
  reader.release();
  await peer.write(encodeMessage({ tag: Tag.CHAT, text: "late" }));
  assert.equal(await reading, null);
  assert.equal(reader.bufferBytes, 0);
  peer.close();
});

Deno.test("Session notices a silent peer", async () => {
  const [consoleLink] = memoryConnPair();
  let end: SessionEnd | undefined;
  const session = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log,
    heartbeatMs: 20,
    deadPeerMs: 100,
    handlers: { onChat: () => {}, onEnd: (e) => (end = e) },
  });
  session.run();
  await session.done();
  assert.equal(end?.code, "dead-peer");
});

Deno.test("consoleHandshake() and daemonHandshake() agree, and a version mismatch says who must upgrade", async () => {
  const [c, d] = memoryConnPair(512);
  const cr = new MessageReader(c);
  let pending = false;
  const daemonSide = daemonHandshake(d, new MessageReader(d), {
    consoleFingerprint: "SHA256:x",
    cert: "Y2VydA",
    sign: () => Promise.resolve("c2ln"),
    token: "tok",
    host: "home",
    user: "ann",
    os: "linux",
    onPending: () => (pending = true),
  });
  const claim = await consoleHandshake(c, cr);
  assert.equal(claim.host, "home");
  assert.equal(claim.token, "tok");
  await c.write(encodeMessage({ tag: Tag.PENDING }));
  await c.write(encodeMessage({ tag: Tag.ACCEPT, session: "s9" }));
  assert.equal(await daemonSide, "s9");
  assert.ok(pending);

  const [c2, d2] = memoryConnPair(512);
  const consoleSide = consoleHandshake(c2, new MessageReader(c2));
  await d2.write(
    encodeMessage({ tag: Tag.HELLO, version: PROTOCOL_VERSION + 1, capabilities: [] }),
  );
  await assert.rejects(
    consoleSide,
    (e) => e instanceof HandshakeError && /upgrade the Console/.test(e.message),
  );
  const reply = await new MessageReader(d2).next();
  assert.equal(reply.tag, Tag.REJECT);
});

// --- memory limits: the send queue, held bytes, pending opens ------------------

/** A Session on one end of a memory link; the test speaks the wire on the other end itself. */
function sessionWithRawPeer(
  role: "console" | "daemon",
  options: { capacity?: number; lines?: string[]; onOpen?: (msg: OpenMessage) => void } = {},
) {
  const lines = options.lines;
  const sessionLog = lines ? createLogger({ sink: (line) => lines.push(line) }) : log;
  const [link, peer] = memoryConnPair(options.capacity ?? 4096);
  let end: SessionEnd | undefined;
  const session = new Session(link, new MessageReader(link), {
    role,
    id: "t",
    log: sessionLog,
    handlers: { onChat: () => {}, onEnd: (e) => (end = e), onOpen: options.onOpen },
  });
  session.run();
  return {
    session,
    link,
    peer,
    get end() {
      return end;
    },
    async [Symbol.asyncDispose]() {
      peer.close();
      await session.done();
    },
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One macrotask turn. */
function turn(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

Deno.test("Session stops reading from a peer that does not read its answers, and reads again once it does", async () => {
  const capacity = 64 * 1024;
  await using raw = sessionWithRawPeer("console", { capacity });
  // Each OPEN_OK for an open the Console never made earns a RESET back, larger than the OPEN_OK.
  const chunk = concat(
    Array.from(
      { length: 2000 },
      (_, i) => encodeMessage({ tag: Tag.OPEN_OK, stream: 100_000 + i, address: "a" }),
    ),
  );
  // About 2 MiB of these earn the 4 MiB of answers at which the session stops reading.
  const target = 3 * 1024 * 1024;
  let written = 0;
  const writing = (async () => {
    while (written < target) {
      await writeAll(raw.peer, chunk);
      written += chunk.length;
    }
  })();
  writing.catch(() => {});
  let maxQueued = 0;
  let stalled = 0;
  let last = -1;
  const t0 = performance.now();
  while (written < target && stalled < 100 && performance.now() - t0 < 20_000) {
    await turn();
    maxQueued = Math.max(maxQueued, raw.session.sendQueued);
    stalled = written === last && raw.link.unread === capacity ? stalled + 1 : 0;
    last = written;
  }
  assert.ok(
    written < target,
    `the session read all ${target} bytes from a peer that reads nothing; ${maxQueued} bytes queued at most`,
  );
  assert.equal(stalled, 100, "the session should have stopped reading");
  assert.ok(
    maxQueued < SEND_HIGH_WATER + 512 * 1024,
    `${maxQueued} bytes queued for a peer that reads nothing`,
  );
  assert.equal(raw.session.ended, null, "the session should wait, not end");
  // The peer reads its answers: the session reads again, and takes the rest.
  const reading = (async () => {
    const buf = new Uint8Array(256 * 1024);
    while ((await raw.peer.read(buf)) !== null) { /* discard */ }
  })().catch(() => {});
  await writing;
  assert.ok(written >= target);
  assert.equal(raw.session.ended, null);
  raw.peer.close();
  await reading;
});

Deno.test("Session answers a flood of pings with one queued pong, the newest", async () => {
  await using raw = sessionWithRawPeer("console");
  const pings = 10_000;
  const flood = concat(
    Array.from({ length: pings }, (_, i) => encodeMessage({ tag: Tag.PING, seq: i + 1 })),
  );
  await writeAll(raw.peer, flood);
  await until(() => raw.link.unread === 0, "the session to read every ping");
  await turn();
  assert.ok(raw.session.sendQueued < 1024, `${raw.session.sendQueued} bytes queued for pings`);
  // Now read what came back: a link's worth of early pongs, then the newest one.
  const reader = new MessageReader(raw.peer);
  const seqs: number[] = [];
  while (seqs.at(-1) !== pings && seqs.length < 2 * pings) {
    const msg = await reader.next();
    if (msg.tag === Tag.PONG) seqs.push(msg.seq);
  }
  assert.equal(seqs.at(-1), pings, "the last pong answers the last ping");
  assert.ok(seqs.length < 500, `${seqs.length} pongs for ${pings} pings`);
});

Deno.test("Session closes, with a log line, when its send queue passes the hard cap", async () => {
  const lines: string[] = [];
  await using raw = sessionWithRawPeer("console", { lines });
  const text = "x".repeat(4000);
  let sent = 0;
  const most = Math.ceil(2 * SEND_QUEUE_CAP / text.length);
  while (raw.session.ended === null && sent < most) {
    raw.session.chat(text);
    sent++;
  }
  assert.ok(raw.session.ended !== null, `${sent * text.length} bytes queued and still open`);
  assert.ok(sent * text.length > SEND_QUEUE_CAP * 0.9, `closed after only ${sent} messages`);
  await raw.session.done();
  assert.equal(raw.end?.code, "dead-peer");
  assert.match(raw.end!.reason, /the peer read nothing while more than 64 MiB waited/);
  assert.match(lines.join("\n"), /ERROR the peer is not reading: send queue over its hard cap/);
});

Deno.test("the held-bytes budget refuses new opens with code limit, logs it, and lets open streams carry on", async () => {
  const lines: string[] = [];
  const opens: OpenMessage[] = [];
  const pair = sessionPair({
    earlyData: true,
    lines,
    maxHeldBytes: { daemon: INITIAL_WINDOW_BYTES + INITIAL_WINDOW_BYTES / 2 },
    // The targets hang: the Daemon answers no open until the test says so.
    daemon: { onOpen: (msg) => void opens.push(msg) },
  });
  await using _ = pair;
  const target = { host: "t", port: 2, pfo: "p", client: "c" };
  const early = { log, early: true };
  const openWithEarly = async (bytes: number, seed: number) => {
    const [client, relay] = memoryConnPair(INITIAL_WINDOW_BYTES * 2);
    const data = pattern(bytes, seed);
    const opening = pair.console.openStream(relay, target, early);
    opening.catch(() => {});
    await writeAll(client, data);
    return { client, data, opening };
  };
  // 1. The first open's early data fills a window: held, under the budget.
  const first = await openWithEarly(INITIAL_WINDOW_BYTES, 7);
  await until(() => pair.daemon.heldBytes === INITIAL_WINDOW_BYTES, "the first window held");
  // 2. The second one's early data passes the budget: that open fails with code limit.
  const second = await openWithEarly(INITIAL_WINDOW_BYTES, 8);
  await assert.rejects(
    within(second.opening, 3_000),
    (e) =>
      e instanceof OpenError && e.code === "limit" &&
      /holds 768 KiB|holds 786432 bytes/.test(e.message),
  );
  assert.equal(pair.daemon.heldBytes, INITIAL_WINDOW_BYTES, "the refused open's bytes are dropped");
  // 3. Under the budget again, a new open goes through to the target.
  const third = pair.console.openStream(memoryConnPair()[1], target, early);
  third.catch(() => {});
  await until(() => opens.length === 3, "the third open to reach the Daemon's handler");
  // 4. The Daemon reaches the second target anyway: it is refused there, with no second answer.
  const [app2, relay2] = memoryConnPair();
  assert.equal(pair.daemon.acceptStream(opens[1].stream, relay2, "t:2", { log }), null);
  assert.equal((await readAll(app2)).length, 0, "the refused open's target gets nothing");
  // 5. The first stream carries on: its target gets every early byte.
  const [app1, relay1] = memoryConnPair();
  pair.daemon.acceptStream(opens[0].stream, relay1, "t:2", { log });
  await first.opening;
  await first.client.closeWrite();
  assert.deepEqual(await readAll(app1), first.data);
  await until(() => pair.daemon.heldBytes === 0, "held bytes back to 0");
  const logged = lines.filter((l) => /held-bytes limit reached/.test(l));
  assert.equal(logged.length, 1, lines.join("\n"));
  assert.match(logged[0], /side=daemon limit=786432 held=\d+ refused=1/);
});

Deno.test("UDP opens still reaching their target count against the stream cap", async () => {
  const lines: string[] = [];
  const opens: OpenMessage[] = [];
  await using pair = sessionPair({
    lines,
    maxStreams: { daemon: 2 },
    daemon: { onOpen: (msg) => void opens.push(msg) },
  });
  const open = (stream: number) =>
    pair.console.send({
      tag: Tag.OPEN,
      stream,
      proto: "udp",
      host: "t",
      port: 53,
      pfo: "dns",
      client: "c",
    });
  for (let i = 1; i <= 5; i++) open(1000 + i);
  await until(
    () => lines.some((l) => /stream limit reached.*side=daemon/.test(l)),
    "the Daemon to refuse opens over its cap",
  );
  assert.deepEqual(opens.map((m) => m.stream), [1001, 1002]);
  assert.match(lines.join("\n"), /stream limit reached.*side=daemon limit=2 refused=1/);
});

/** Read exactly `n` bytes from `conn`. */
async function readBytes(conn: MemoryConn, n: number): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (let got = 0; got < n;) {
    const r = await conn.read(buf);
    assert.ok(r !== null, `the stream ended after ${got} of ${n} bytes`);
    got += r;
  }
}

Deno.test("Session.sendDatagram(): a few small TCP frames leave UDP alone; bulk TCP rations it", async () => {
  await using pair = sessionPair({ linkCapacity: 1024 * 1024 });
  const [client, relay] = memoryConnPair(1024 * 1024);
  const arrived = pair.targetArrived();
  await openStarted(pair.console, relay, { host: "h", port: 2, pfo: "p", client: "c" }, { log });
  const target = await arrived;
  // A control connection's few bytes (iperf3's beside its UDP test).
  for (let i = 0; i < 4; i++) {
    await writeAll(client, pattern(50, i));
    await readBytes(target, 50);
  }
  const small = Array.from({ length: 200 }, () => pair.daemon.sendDatagram(999, new Uint8Array(8)));
  assert.deepEqual(small.filter((v) => v !== "sent"), [], "UDP was rationed after 200 TCP bytes");
  // Bulk TCP: UDP gets its burst of tokens, then one per TCP frame.
  await writeAll(client, pattern(512 * 1024, 9));
  await readBytes(target, 512 * 1024);
  const bulk = Array.from({ length: 200 }, () => pair.daemon.sendDatagram(999, new Uint8Array(8)));
  assert.ok(bulk.includes("tcpBusy"), "UDP was not rationed beside bulk TCP");
  assert.ok(bulk.every((v) => v === "sent" || v === "tcpBusy"), bulk.join());
});

// --- Window tuning over a long link ----------------------------------------------

const MIB = 1024 * 1024;

/**
 * Upload `data` through a new stream from the Console; resolves with what the
 * target read. `written` is called once the client wrote it all, before its FIN.
 */
async function upload(
  pair: Pair,
  data: Uint8Array,
  port = 80,
  written = () => {},
): Promise<Uint8Array> {
  const [client, local] = memoryConnPair(MIB);
  const arrived = pair.targetArrived();
  await openStarted(pair.console, local, { host: "t", port, pfo: "p", client: "c" }, { log });
  const target = await arrived;
  const [, got] = await Promise.all([
    writeAll(client, data).then(() => {
      written();
      return client.closeWrite();
    }),
    readAll(target),
  ]);
  return got;
}

Deno.test("with window-tuning on both sides, a stream held back by its credit grows its window over a long link", async () => {
  await using pair = sessionPair({
    linkCapacity: 64 * MIB,
    targetCapacity: MIB,
    delayMs: 25,
    windowTuning: { console: true, daemon: true, max: 4 * MIB },
  });
  const windows: number[] = [];
  const data = pattern(12 * MIB, 0);
  const got = await upload(pair, data, 80, () => {
    windows.push(...pair.daemon.streams().map((s) => s.window));
  });
  assert.deepEqual(got, data, "the bytes arrived changed");
  assert.ok(pair.daemon.rttMs >= 50, `a round trip of ${pair.daemon.rttMs} ms on a 25 ms link`);
  assert.equal(windows.length, 1);
  assert.ok(windows[0] > INITIAL_WINDOW_BYTES, `the window stayed at ${windows[0]} bytes`);
  assert.ok(windows[0] <= 4 * MIB, `the window passed its most: ${windows[0]} bytes`);
});

Deno.test("with window-tuning, a stream whose target stopped reading keeps its window and holds at most it", async () => {
  await using pair = sessionPair({
    linkCapacity: 64 * MIB,
    targetCapacity: 4096,
    delayMs: 10,
    windowTuning: { console: true, daemon: true },
  });
  const [client, local] = memoryConnPair(MIB);
  const arrived = pair.targetArrived();
  const { stream } = await openStarted(
    pair.console,
    local,
    { host: "t", port: 80, pfo: "p", client: "c" },
    { log },
  );
  await arrived;
  const pushing = writeAll(client, new Uint8Array(8 * MIB)).catch(() => {});
  const sent = () => stream.bytesSent;
  for (let i = 0; i < 200 && sent() < INITIAL_WINDOW_BYTES; i++) await pair.console.resolve("x");
  // Round trips on the same link: any credit granted would have come back by now.
  for (let i = 0; i < 5; i++) await pair.console.resolve("x");
  const [far] = pair.daemon.streams();
  assert.equal(stream.bytesSent, INITIAL_WINDOW_BYTES, "sent more than one window");
  assert.equal(far.window, INITIAL_WINDOW_BYTES, "the window grew behind a stalled reader");
  assert.ok(pair.daemon.heldBytes <= INITIAL_WINDOW_BYTES, `held ${pair.daemon.heldBytes} bytes`);
  stream.reset("test over");
  await pushing;
});

Deno.test("with window-tuning, the sum of the windows stays within the session's maxHeldBytes", async () => {
  const budget = 2 * MIB;
  await using pair = sessionPair({
    linkCapacity: 64 * MIB,
    targetCapacity: MIB,
    delayMs: 25,
    maxHeldBytes: { daemon: budget },
    windowTuning: { console: true, daemon: true },
  });
  const sums: number[] = [];
  const watch = setInterval(() => {
    sums.push(pair.daemon.streams().reduce((n, s) => n + s.window, 0));
  }, 5);
  try {
    const a = pattern(8 * MIB, 1);
    const b = pattern(8 * MIB, 2);
    const [gotA, gotB] = await Promise.all([upload(pair, a, 80), upload(pair, b, 81)]);
    assert.deepEqual(gotA, a);
    assert.deepEqual(gotB, b);
  } finally {
    clearInterval(watch);
  }
  const most = Math.max(...sums);
  assert.ok(most <= budget, `the windows summed to ${most} bytes, over ${budget}`);
  assert.ok(most > 2 * INITIAL_WINDOW_BYTES, `no window grew: they summed to ${most} bytes`);
});

Deno.test("without window-tuning (an older peer), windows stay fixed and data flows both ways", async () => {
  await using pair = sessionPair({
    linkCapacity: 64 * MIB,
    targetCapacity: MIB,
    delayMs: 10,
    windowTuning: { console: false, daemon: false },
  });
  assert.equal(pair.console.windows, null);
  const [client, local] = memoryConnPair(MIB);
  const arrived = pair.targetArrived();
  const { stream } = await openStarted(
    pair.console,
    local,
    { host: "t", port: 80, pfo: "p", client: "c" },
    { log },
  );
  const target = await arrived;
  const up = pattern(3 * MIB, 3);
  const down = pattern(3 * MIB, 4);
  const [, gotUp, , gotDown] = await Promise.all([
    writeAll(client, up).then(() => client.closeWrite()),
    readAll(target),
    writeAll(target, down).then(() => target.closeWrite()),
    readAll(client),
  ]);
  assert.deepEqual(gotUp, up);
  assert.deepEqual(gotDown, down);
  assert.equal(stream.window, INITIAL_WINDOW_BYTES);
});

Deno.test("each side learns the other's capabilities in the handshake, window-tuning among them", async () => {
  assert.ok(CAPABILITIES.includes("window-tuning"));
  const [c, d] = memoryConnPair(512);
  let offered: readonly string[] = [];
  const daemonSide = daemonHandshake(d, new MessageReader(d), {
    consoleFingerprint: "SHA256:x",
    cert: "Y2VydA",
    sign: () => Promise.resolve("c2ln"),
    token: null,
    host: "home",
    user: "ann",
    os: "linux",
    onPending: () => {},
    onCapabilities: (capabilities) => (offered = capabilities),
  });
  const claim = await consoleHandshake(c, new MessageReader(c));
  assert.ok(claim.capabilities.includes("window-tuning"));
  await sendNow(c, { tag: Tag.ACCEPT, session: "00000000" });
  await daemonSide;
  assert.deepEqual(offered, CAPABILITIES);
});

// --- DATA bodies handed on as views ----------------------------------------------

Deno.test("MessageReader hands DATA bodies on as views of its read buffer, never overwritten by later reads", async () => {
  const [a, b] = memoryConnPair(8 * MIB);
  const reader = new MessageReader(b);
  reader.trust();
  const frames = 40;
  const sizes = Array.from({ length: frames }, (_, i) => 60_000 + i * 97);
  const writing = (async () => {
    for (let i = 0; i < frames; i++) {
      await writeAll(a, encodeMessage({ tag: Tag.DATA, stream: 1, data: pattern(sizes[i], i) }));
      await writeAll(a, encodeMessage({ tag: Tag.PING, seq: i + 1 }));
    }
    await a.closeWrite();
  })();
  const bodies: Uint8Array[] = [];
  for (let batch; (batch = await reader.batch()) !== null;) {
    for (const msg of batch) if (msg.tag === Tag.DATA) bodies.push(msg.data);
  }
  await writing;
  assert.equal(bodies.length, frames);
  for (let i = 0; i < frames; i++) {
    assert.deepEqual(bodies[i], pattern(sizes[i], i), `DATA body ${i} changed after it was read`);
  }
  assert.ok(
    bodies.every((body) => body.buffer.byteLength === 256 * 1024),
    "a DATA body was copied out of the read buffer",
  );
  assert.ok(new Set(bodies.map((body) => body.buffer)).size > 1, "one read buffer for 2.4 MB");
});

Deno.test("early data: an OPEN leaves in one write with the client's first bytes when they are at hand, and alone when the client says nothing", async () => {
  const [consoleLink, daemonLink] = memoryConnPair(64 * 1024);
  /** Each write the Console's session makes on its link, decoded to tags (and DATA bodies). */
  const writes: { tags: number[]; data: string }[] = [];
  let wrote: () => void = () => {};
  const recording = {
    read: (p: Uint8Array) => consoleLink.read(p),
    write: (p: Uint8Array) => {
      const tags: number[] = [];
      let data = "";
      for (let at = 0; at + 4 <= p.length;) {
        const length = new DataView(p.buffer, p.byteOffset + at).getUint32(0);
        tags.push(p[at + 4]);
        if (p[at + 4] === Tag.DATA) data += decoder.decode(p.subarray(at + 9, at + 4 + length));
        at += 4 + length;
      }
      writes.push({ tags, data });
      wrote();
      return consoleLink.write(p);
    },
    closeWrite: () => consoleLink.closeWrite(),
    close: () => consoleLink.close(),
  };
  const session = new Session(recording, new MessageReader(recording), {
    role: "console",
    id: "t",
    log,
    earlyData: true,
    handlers: { onChat: () => {}, onEnd: () => {} },
  });
  session.run();
  const peer = new MessageReader(daemonLink);
  const nextWrite = () => new Promise<void>((r) => (wrote = r));
  const target = { host: "t", port: 2, pfo: "p", client: "c" };

  // 1. The client spoke before its connection was handed on: OPEN and DATA in one write.
  const [client, relay] = memoryConnPair();
  await client.write(encoder.encode("GET /"));
  let written = nextWrite();
  const first = session.openStream(relay, target, { log, early: true });
  await written;
  assert.deepEqual(writes[0], { tags: [Tag.OPEN, Tag.DATA], data: "GET /" });
  const open1 = await peer.next();
  assert.equal(open1.tag, Tag.OPEN);
  assert.equal((await peer.next()).tag, Tag.DATA);

  // 2. A client that waits for the server: its OPEN still goes, alone.
  const [quiet, relay2] = memoryConnPair();
  written = nextWrite();
  const second = session.openStream(relay2, target, { log, early: true });
  await written;
  assert.deepEqual(writes[1], { tags: [Tag.OPEN], data: "" });
  const open2 = await peer.next();
  assert.equal(open2.tag, Tag.OPEN);

  // 3. Without early data (a SOCKS client), the OPEN goes at once, as it always did.
  const [, relay3] = memoryConnPair();
  const third = session.openStream(relay3, target, { log, early: false });
  assert.deepEqual(writes[2], { tags: [Tag.OPEN], data: "" }, "written inside openStream()");
  assert.equal((await peer.next()).tag, Tag.OPEN);

  await session.close("exit", "test over");
  for (const opening of [first, second, third]) await opening.catch(() => {});
  quiet.close();
  client.close();
});
