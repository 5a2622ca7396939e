import assert from "node:assert/strict";
import { type MemoryConn, memoryConnPair } from "./_memory_conn.ts";
import { encodeMessage } from "./codec.ts";
import { HandshakeError, OpenError } from "./errors.ts";
import { createLogger } from "./log.ts";
import { INITIAL_WINDOW_BYTES, type OpenMessage, PROTOCOL_VERSION, Tag } from "./protocol.ts";
import {
  consoleHandshake,
  daemonHandshake,
  MessageReader,
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
    /** Timing for both sides. */
    timing?: { heartbeatMs?: number; halfClosedIdleMs?: number };
    /** The Console sends early data (the Daemon offered it). */
    earlyData?: boolean;
    /** Log lines of both sides, when given. */
    lines?: string[];
  } = {},
): Pair {
  const lines = options.lines;
  const pairLog = lines ? createLogger({ sink: (line) => lines.push(line) }) : log;
  const [consoleLink, daemonLink] = memoryConnPair(options.linkCapacity ?? 4096);
  const targets = new Map<number, MemoryConn>();
  const waiting: ((c: MemoryConn) => void)[] = [];
  const ends: Pair["ends"] = {};
  const chats = { console: [] as string[], daemon: [] as string[] };
  const consoleSession = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log: pairLog.child({ side: "console" }),
    maxStreams: options.maxStreams?.console,
    earlyData: options.earlyData,
    ...options.timing,
    handlers: { onChat: (t) => chats.console.push(t), onEnd: (e) => (ends.console = e) },
  });
  const daemon: Session = new Session(daemonLink, new MessageReader(daemonLink), {
    role: "daemon",
    id: "t",
    log: pairLog.child({ side: "daemon" }),
    maxStreams: options.maxStreams?.daemon,
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
  while (!stream.ended) await new Promise((r) => setTimeout(r, 1));
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
    while (!stream.ended) await new Promise((r) => setTimeout(r, 1));
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
