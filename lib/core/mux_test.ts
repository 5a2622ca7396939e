import assert from "node:assert/strict";
import { memoryConnPair } from "./_memory_conn.ts";
import { encodeMessage, tagName } from "./codec.ts";
import { ProtocolError } from "./errors.ts";
import { createLogger } from "./log.ts";
import {
  type BufferPool,
  type ByteConn,
  Stream,
  type StreamHost,
  type StreamSummary,
  type WindowHost,
  writeAll,
} from "./mux.ts";
import {
  FRAME_HEADER_BYTES,
  INITIAL_WINDOW_BYTES,
  MAX_DATA_BYTES,
  type Message,
  Tag,
} from "./protocol.ts";
import { MessageReader, Session } from "./session.ts";

const log = createLogger({ level: "error" });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("Stream.start() holds bytes that arrive with OPEN_OK until the owner's reply is written", async () => {
  const [consoleLink, daemonLink] = memoryConnPair(4096);
  const session = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log,
    handlers: { onChat: () => {}, onEnd: () => {} },
  });
  session.run();
  const daemon = new MessageReader(daemonLink);
  const [client, relay] = memoryConnPair(4096);
  // What the SOCKS PFO does: answer its client, then start the stream.
  const started = session.openStream(relay, { host: "t", port: 2, pfo: "p", client: "c" }, { log })
    .then(async ({ stream }) => {
      await writeAll(relay, encoder.encode("REPLY|"));
      stream.start();
      return stream;
    });
  const open = await daemon.next();
  assert.equal(open.tag, Tag.OPEN);
  // A target that speaks first: its banner follows OPEN_OK in the same read of the link,
  // so the Console dispatches it before any promise callback has run.
  const okAndBanner = [
    encodeMessage({ tag: Tag.OPEN_OK, stream: open.stream, address: "127.0.0.1:2" }),
    encodeMessage({ tag: Tag.DATA, stream: open.stream, data: encoder.encode("BANNER") }),
  ];
  const both = new Uint8Array(okAndBanner[0].length + okAndBanner[1].length);
  both.set(okAndBanner[0]);
  both.set(okAndBanner[1], okAndBanner[0].length);
  await writeAll(daemonLink, both);
  const stream = await started;

  let got = "";
  const buf = new Uint8Array(64);
  while (got.length < "REPLY|BANNER".length) {
    const n = await client.read(buf);
    if (n === null) break;
    got += decoder.decode(buf.subarray(0, n));
  }
  assert.equal(got, "REPLY|BANNER", "the client must see its reply before the target's bytes");
  stream.reset("test over");
  daemonLink.close();
  await session.done();
});

// --- Stream over a recording host, no session ---------------------------------

/** What a stream sent to its host (a {@linkcode StreamHost}), every frame taken at once. */
class RecordingHost {
  readonly messages: Message[] = [];
  /** DATA payloads, in order. */
  readonly data: Uint8Array[] = [];
  released = 0;
  held = 0;
  sendFrame(frame: Uint8Array, written?: (frame: Uint8Array) => void): void {
    const view = new DataView(frame.buffer, frame.byteOffset, FRAME_HEADER_BYTES);
    assert.deepEqual([view.getUint8(4), view.getUint32(5)], [Tag.DATA, 5], "not a DATA frame");
    assert.equal(view.getUint32(0), frame.length - 4, "a frame length that is not its size");
    this.data.push(frame.slice(FRAME_HEADER_BYTES));
    written?.(frame);
  }
  send(msg: Message): void {
    this.messages.push(msg);
  }
  backpressure(): Promise<void> | null {
    return null;
  }
  release(): void {
    this.released++;
  }
  heldDelta(delta: number): void {
    this.held += delta;
  }
  get dataBytes(): number {
    return this.data.reduce((n, d) => n + d.length, 0);
  }
  tags(): string[] {
    return this.messages.map((m) => tagName(m.tag));
  }
}

/** A stream on `relay` (the local socket's near end) over a recording host. */
function recordedStream(
  relay: ByteConn,
  ends: StreamSummary[] = [],
  windows: WindowHost | null = null,
  buffers?: BufferPool,
) {
  const host = new RecordingHost();
  const streamHost: StreamHost = {
    sendFrame: (f, w) => host.sendFrame(f, w),
    send: (m) => host.send(m),
    backpressure: () => host.backpressure(),
    release: () => host.release(),
    held: (d) => host.heldDelta(d),
    windows,
    buffers,
  };
  const stream = new Stream(5, relay, streamHost, { log, onEnd: (s) => ends.push(s) });
  return { host, stream };
}

/** Wait, a bounded number of event-loop turns, for `check()`; fails with `what`. */
async function turnsUntil(check: () => boolean, what: string, turns = 2_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 0));
  }
  throw new Error(`Cannot see ${what} after ${turns} event-loop turns`);
}

/** Let the event loop run `turns` times (for "nothing more happens" checks). */
async function settle(turns = 50): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setTimeout(r, 0));
}

/** Read exactly `n` bytes from `conn`. */
async function readN(conn: ByteConn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`Cannot read ${n} bytes: EOF after ${got}`);
    got += r;
  }
  return out;
}

Deno.test("Stream sends at most one credit window until the peer grants more, then exactly the grant", async () => {
  const [client, relay] = memoryConnPair(64 * 1024);
  const { host, stream } = recordedStream(relay);
  const pushing = writeAll(client, new Uint8Array(2 * INITIAL_WINDOW_BYTES).fill(7)).catch(
    () => {},
  );
  stream.start();
  await turnsUntil(() => host.dataBytes === INITIAL_WINDOW_BYTES, "one window sent");
  await settle();
  assert.equal(host.dataBytes, INITIAL_WINDOW_BYTES, "sent past its credit");
  assert.equal(stream.bytesSent, INITIAL_WINDOW_BYTES);
  assert.ok(host.data.every((d) => d.length <= MAX_DATA_BYTES), "a DATA frame over the limit");
  stream.onWindow(10_000);
  await turnsUntil(() => host.dataBytes === INITIAL_WINDOW_BYTES + 10_000, "the grant sent");
  await settle();
  assert.equal(host.dataBytes, INITIAL_WINDOW_BYTES + 10_000, "sent past the grant");
  stream.reset("test over");
  await pushing;
});

Deno.test("Stream.onWindow() throws a ProtocolError when the credit would pass two windows", () => {
  const [, relay] = memoryConnPair();
  const { stream } = recordedStream(relay);
  stream.onWindow(INITIAL_WINDOW_BYTES); // two windows: the most allowed
  assert.throws(() => stream.onWindow(1), ProtocolError);
  stream.abort("test over");
});

Deno.test("Stream.onData() throws a ProtocolError past the window or after FIN, and onFin() when sent twice", () => {
  const [, relay] = memoryConnPair();
  const { stream } = recordedStream(relay);
  stream.onData(new Uint8Array(INITIAL_WINDOW_BYTES - 1));
  assert.throws(() => stream.onData(new Uint8Array(2)), ProtocolError, "2 bytes over 1 of credit");
  stream.onData(new Uint8Array(1)); // exactly the rest of the window
  assert.throws(() => stream.onData(new Uint8Array(1)), /exceeds the remaining credit of 0/);
  stream.abort("next");

  const second = recordedStream(memoryConnPair()[1]).stream;
  second.onFin();
  assert.throws(() => second.onData(new Uint8Array(1)), /after FIN/);
  assert.throws(() => second.onFin(), /sent twice/);
  second.abort("test over");
});

Deno.test("Stream grants credit back in batches of a quarter window, once the bytes reached the local socket", async () => {
  const [client, relay] = memoryConnPair(1024 * 1024);
  const { host, stream } = recordedStream(relay);
  stream.start();
  const quarter = INITIAL_WINDOW_BYTES / 4;
  stream.onData(new Uint8Array(quarter - 1).fill(1));
  await readN(client, quarter - 1);
  await settle();
  assert.deepEqual(host.tags(), [], "a WINDOW before a quarter window was written");
  stream.onData(new Uint8Array([2]));
  await readN(client, 1);
  await turnsUntil(() => host.messages.length > 0, "a WINDOW");
  assert.deepEqual(host.messages, [{ tag: Tag.WINDOW, stream: 5, credit: quarter }]);
  // The window is whole again: a full window more is accepted.
  stream.onData(new Uint8Array(INITIAL_WINDOW_BYTES));
  stream.reset("test over");
});

Deno.test("Stream holds the peer's bytes and leaves its socket unread until start(), which is idempotent", async () => {
  const [client, relay] = memoryConnPair(4096);
  const { host, stream } = recordedStream(relay);
  stream.onData(new TextEncoder().encode("early"));
  await writeAll(client, new TextEncoder().encode("hello"));
  await settle();
  assert.equal(client.unread, 0, "bytes reached the local socket before start()");
  assert.equal(host.held, 5, "the held bytes are not counted");
  assert.equal(host.dataBytes, 0, "the local socket was read before start()");
  stream.start();
  stream.start();
  assert.equal(decoder.decode(await readN(client, 5)), "early");
  await turnsUntil(() => host.dataBytes === 5, "the local bytes sent");
  assert.equal(decoder.decode(host.data[0]), "hello");
  assert.equal(host.held, 0, "written bytes are still counted as held");
  await settle();
  assert.equal(client.unread, 0, "start() twice wrote the held bytes twice");
  stream.reset("test over");
});

Deno.test('Stream half-closes one direction at a time and ends "done" after both', async () => {
  const [client, relay] = memoryConnPair(4096);
  const ends: StreamSummary[] = [];
  const { host, stream } = recordedStream(relay, ends);
  stream.start();
  await writeAll(client, new TextEncoder().encode("up"));
  await client.closeWrite();
  await turnsUntil(() => host.tags().includes("FIN"), "a FIN after the local EOF");
  assert.equal(stream.ended, false, "ended with the peer's direction still open");
  // The peer still sends; its FIN closes the local write side after the bytes.
  stream.onData(new TextEncoder().encode("down"));
  stream.onFin();
  assert.equal(decoder.decode(await readN(client, 4)), "down");
  assert.equal(await client.read(new Uint8Array(1)), null, "no EOF after the peer's FIN");
  await turnsUntil(() => stream.ended, "the stream ended");
  assert.deepEqual(host.tags(), ["FIN"], "a RESET after a clean close");
  assert.equal(host.released, 1);
  assert.equal(ends.length, 1);
  assert.deepEqual(
    { sent: ends[0].bytesSent, received: ends[0].bytesReceived, reason: ends[0].reason },
    { sent: 2, received: 4, reason: "done" },
  );
  assert.ok(relay.closed, "the local socket is still open");
});

Deno.test("Stream.reset() tells the peer why, closes the socket, drops held bytes and ignores later frames", () => {
  const [, relay] = memoryConnPair();
  const ends: StreamSummary[] = [];
  const { host, stream } = recordedStream(relay, ends);
  stream.onData(new Uint8Array(100));
  assert.equal(host.held, 100);
  stream.reset("client gone");
  stream.reset("twice");
  assert.deepEqual(host.messages, [{ tag: Tag.RESET, stream: 5, reason: "client gone" }]);
  assert.ok(relay.closed);
  assert.equal(host.held, 0, "held bytes still counted after the reset");
  assert.equal(host.released, 1);
  assert.deepEqual(ends.map((e) => e.reason), ["client gone"]);
  stream.onData(new Uint8Array(INITIAL_WINDOW_BYTES + 1)); // ignored, no throw: the stream is gone
  stream.onFin();
  stream.onWindow(3 * INITIAL_WINDOW_BYTES);
  assert.equal(host.messages.length, 1);
});

Deno.test("Stream.onReset() and abort() end the stream without a word to the peer; discard() does not release it", () => {
  for (const [how, reason] of [["onReset", "reset by peer: refused"], ["abort", "refused"]]) {
    const [, relay] = memoryConnPair();
    const ends: StreamSummary[] = [];
    const { host, stream } = recordedStream(relay, ends);
    if (how === "onReset") stream.onReset("refused");
    else stream.abort("refused");
    assert.deepEqual(host.messages, [], how);
    assert.ok(relay.closed && stream.ended, how);
    assert.deepEqual(ends.map((e) => e.reason), [reason], how);
  }
  const [, relay] = memoryConnPair();
  const ends: StreamSummary[] = [];
  const { host, stream } = recordedStream(relay, ends);
  stream.onData(new Uint8Array(10));
  stream.discard();
  assert.ok(stream.ended);
  assert.equal(relay.closed, false, "discard() closes the socket: its caller does");
  assert.deepEqual([host.messages.length, host.released, host.held, ends.length], [0, 0, 0, 0]);
});

Deno.test('Stream resets with "write failed" when its local socket breaks', async () => {
  const [client, relay] = memoryConnPair(16);
  const ends: StreamSummary[] = [];
  const { host, stream } = recordedStream(relay, ends);
  stream.start();
  client.close();
  stream.onData(new Uint8Array(64));
  await turnsUntil(() => stream.ended, "the stream ended");
  // The closed client is also an EOF to the stream's reader: FIN, then the failed write's RESET.
  assert.deepEqual(host.tags(), ["FIN", "RESET"]);
  assert.match(ends[0].reason, /^write failed: /);
  assert.equal(host.held, 0);
});

Deno.test("Stream.quietWhileHalfClosed() counts quiet ticks only once one direction is closed", () => {
  const [, relay] = memoryConnPair();
  const { stream } = recordedStream(relay);
  assert.equal(stream.quietWhileHalfClosed(1), false, "an open stream is never quiet");
  stream.onFin();
  assert.equal(stream.quietWhileHalfClosed(2), false, "the first tick sets the mark");
  assert.equal(stream.quietWhileHalfClosed(2), false);
  assert.equal(stream.quietWhileHalfClosed(2), true);
  stream.abort("test over");
  assert.equal(stream.quietWhileHalfClosed(1), false, "an ended stream is never quiet");
});

// --- Window tuning -------------------------------------------------------------

/** A window policy with a fixed round trip and a budget for the growth of every window. */
function windowPolicy(rttMs: number, max: number, budget = Infinity) {
  const policy = {
    grown: 0,
    max,
    rttMs: () => rttMs,
    reserve(bytes: number): number {
      const granted = Math.max(0, Math.min(bytes, budget - policy.grown));
      policy.grown += granted;
      return granted;
    },
    unreserve(bytes: number): void {
      policy.grown -= bytes;
    },
  };
  return policy;
}

/**
 * Play a sender that always uses all its credit, and a local reader that
 * takes everything at once, for `total` bytes; returns the credit granted.
 */
async function sendAsCreditAllows(
  stream: Stream,
  host: RecordingHost,
  client: ByteConn,
  total: number,
): Promise<number> {
  let credit = INITIAL_WINDOW_BYTES;
  let granted = 0;
  let seen = 0;
  for (let sent = 0; sent < total;) {
    for (const m of host.messages.slice(seen)) if (m.tag === Tag.WINDOW) credit += m.credit;
    seen = host.messages.length;
    const n = Math.min(MAX_DATA_BYTES, credit, total - sent);
    assert.ok(n > 0, `the sender ran out of credit after ${sent} bytes`);
    stream.onData(new Uint8Array(n));
    credit -= n;
    sent += n;
    await readN(client, n);
    await turnsUntil(() => stream.bytesReceived === sent, "the bytes written");
  }
  for (const m of host.messages.slice(seen)) if (m.tag === Tag.WINDOW) credit += m.credit;
  for (const m of host.messages) if (m.tag === Tag.WINDOW) granted += m.credit;
  return granted;
}

Deno.test("Stream doubles its receive window, up to the most allowed, while its peer is held back by credit", async () => {
  const [client, relay] = memoryConnPair(1024 * 1024);
  const policy = windowPolicy(60_000, 4 * INITIAL_WINDOW_BYTES);
  const { host, stream } = recordedStream(relay, [], policy);
  stream.start();
  const total = 8 * INITIAL_WINDOW_BYTES;
  const granted = await sendAsCreditAllows(stream, host, client, total);
  assert.equal(stream.window, 4 * INITIAL_WINDOW_BYTES, "the window did not reach its most");
  assert.equal(policy.grown, 3 * INITIAL_WINDOW_BYTES, "the budget does not match the growth");
  // Every byte written was granted back, plus the growth of the window.
  const written = Math.floor(total / (INITIAL_WINDOW_BYTES / 4)) * (INITIAL_WINDOW_BYTES / 4);
  assert.equal(granted, written + 3 * INITIAL_WINDOW_BYTES);
  stream.reset("test over");
  assert.equal(policy.grown, 0, "an ended stream kept its share of the budget");
});

Deno.test("Stream keeps its window when the round trip is unknown or its reader is slower than the round trip", async () => {
  for (const rttMs of [0, 1e-6]) {
    const [client, relay] = memoryConnPair(1024 * 1024);
    const policy = windowPolicy(rttMs, 16 * INITIAL_WINDOW_BYTES);
    const { host, stream } = recordedStream(relay, [], policy);
    stream.start();
    await sendAsCreditAllows(stream, host, client, 4 * INITIAL_WINDOW_BYTES);
    assert.equal(
      stream.window,
      INITIAL_WINDOW_BYTES,
      `the window grew with a round trip of ${rttMs} ms`,
    );
    assert.equal(policy.grown, 0);
    stream.reset("test over");
  }
});

Deno.test("Stream does not grow past the session's budget, and keeps the window it has", async () => {
  const [client, relay] = memoryConnPair(1024 * 1024);
  const policy = windowPolicy(60_000, 16 * INITIAL_WINDOW_BYTES, INITIAL_WINDOW_BYTES + 1000);
  const { host, stream } = recordedStream(relay, [], policy);
  stream.start();
  await sendAsCreditAllows(stream, host, client, 8 * INITIAL_WINDOW_BYTES);
  assert.equal(stream.window, 2 * INITIAL_WINDOW_BYTES + 1000);
  assert.equal(policy.grown, INITIAL_WINDOW_BYTES + 1000);
  stream.reset("test over");
});

Deno.test("Stream behind a stalled reader never grows and holds at most its window", async () => {
  const [client, relay] = memoryConnPair(4096);
  const policy = windowPolicy(60_000, 16 * INITIAL_WINDOW_BYTES);
  const { host, stream } = recordedStream(relay, [], policy);
  stream.start();
  for (let sent = 0; sent < INITIAL_WINDOW_BYTES; sent += MAX_DATA_BYTES) {
    stream.onData(new Uint8Array(MAX_DATA_BYTES));
  }
  await turnsUntil(() => client.unread === 4096, "the local socket full");
  await settle();
  assert.deepEqual(host.tags(), [], "credit granted for bytes the reader did not take");
  assert.equal(stream.window, INITIAL_WINDOW_BYTES);
  assert.equal(host.held, INITIAL_WINDOW_BYTES, "held more or less than the window");
  assert.throws(() => stream.onData(new Uint8Array(1)), ProtocolError, "accepted past its window");
  stream.abort("test over");
});

Deno.test("Stream accepts credit beyond two initial windows only when its peer tunes windows", () => {
  const [, relay] = memoryConnPair();
  const { stream } = recordedStream(relay, [], windowPolicy(10, 16 * INITIAL_WINDOW_BYTES));
  stream.onWindow(15 * INITIAL_WINDOW_BYTES);
  stream.abort("test over");
  const fixed = recordedStream(memoryConnPair()[1]).stream;
  assert.throws(() => fixed.onWindow(2 * INITIAL_WINDOW_BYTES), /overflows/);
  fixed.abort("test over");
});

Deno.test("Stream copies the DATA bodies it must hold, so the buffer they were views of may change", async () => {
  const [client, relay] = memoryConnPair(1024 * 1024);
  const { stream } = recordedStream(relay);
  const shared = new Uint8Array(1000).map((_, i) => i & 0xff);
  const want = shared.slice();
  stream.onData(shared.subarray(0, 500)); // not started: both wait
  stream.onData(shared.subarray(500));
  shared.fill(0);
  stream.start();
  assert.deepEqual(await readN(client, 1000), want);
  stream.abort("test over");
});

Deno.test("busy streams read into the session's spare buffers once the link took their frames", async () => {
  const spares: Uint8Array[] = [];
  let reused = 0;
  const pool: BufferPool = {
    take: () => {
      const buffer = spares.pop();
      if (buffer) reused++;
      return buffer;
    },
    give: (buffer) => void spares.push(buffer),
  };
  const [client, relay] = memoryConnPair(1024 * 1024);
  const { host, stream } = recordedStream(relay, [], null, pool);
  stream.onWindow(INITIAL_WINDOW_BYTES); // two windows of credit
  stream.start();
  const sent = new Uint8Array(2 * INITIAL_WINDOW_BYTES).map((_, i) => (i * 13 + (i >> 16)) & 0xff);
  await writeAll(client, sent);
  await turnsUntil(() => host.dataBytes === sent.length, "every byte sent");
  const got = new Uint8Array(sent.length);
  let at = 0;
  for (const d of host.data) {
    got.set(d, at);
    at += d.length;
  }
  assert.deepEqual(got, sent, "a reused buffer changed what was sent");
  assert.ok(reused > 0, "no spare buffer was reused");
  assert.ok(spares.every((b) => b.length === FRAME_HEADER_BYTES + MAX_DATA_BYTES));
  stream.reset("test over");
});

Deno.test("Stream hands each DATA body back to its host once copied, or once written to the local socket, and not before", async () => {
  const [client, relay] = memoryConnPair(1024 * 1024);
  const returned: Uint8Array[] = [];
  const host = new RecordingHost();
  const stream = new Stream(5, relay, {
    sendFrame: (f, w) => host.sendFrame(f, w),
    send: (m) => host.send(m),
    backpressure: () => null,
    release: () => host.release(),
    returnData: (d) => void returned.push(d),
  }, { log, onEnd: () => {} });
  // Not started: the body is copied to be held, and handed back at once.
  const early = new Uint8Array(100).fill(1);
  stream.onData(early);
  assert.deepEqual(returned, [early], "a copied body comes back at once");
  stream.start();
  assert.deepEqual(await readN(client, 100), early);
  // Started and idle: the body itself is written, and comes back only once the write is done.
  await settle(5); // the drain loop ends once that write is done
  const direct = new Uint8Array(200).fill(2);
  stream.onData(direct);
  const next = new Uint8Array(300).fill(3);
  stream.onData(next); // next to be written: kept as it is
  const behind = new Uint8Array(400).fill(4);
  stream.onData(behind); // behind another: copied
  assert.ok(!returned.includes(direct), "a body being written is not handed back yet");
  assert.ok(!returned.includes(next), "a body kept to be written is not handed back yet");
  assert.ok(returned.includes(behind), "a body copied to wait is handed back at once");
  assert.deepEqual(await readN(client, 900), new Uint8Array([...direct, ...next, ...behind]));
  await turnsUntil(
    () => returned.includes(direct) && returned.includes(next),
    "written bodies back",
  );
  stream.abort("test over");
});
