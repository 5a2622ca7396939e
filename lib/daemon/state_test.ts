import assert from "node:assert/strict";
import { type DaemonEvent, DaemonState } from "./state.ts";

function newState(now: () => number = () => 0) {
  return new DaemonState({
    console: "office:7470",
    fingerprint: "SHA256:c",
    allow: "everything",
    now,
  });
}

const info = {
  stream: 3,
  pfo: "db",
  proto: "tcp" as const,
  client: "127.0.0.1:5000",
  target: "db01:5432",
  address: "10.0.0.5:5432",
  since: "2025-01-01T00:00:00.000Z",
};

/** Events from a subscription, read until `last` comes (the subscription stays open). */
async function readUntil(
  events: AsyncIterator<DaemonEvent>,
  last: (e: DaemonEvent) => boolean,
): Promise<DaemonEvent[]> {
  const seen: DaemonEvent[] = [];
  for (let i = 0; i < 1000; i++) {
    const next = await events.next();
    if (next.done) break;
    seen.push(next.value);
    if (last(next.value)) break;
  }
  return seen;
}

Deno.test("DaemonState.opened() publishes the connection and shows it in the snapshot", async () => {
  const state = newState();
  const abort = new AbortController();
  const sub = state.subscribe({ signal: abort.signal })[Symbol.asyncIterator]();
  const heard: string[] = [];
  state.listen((e) => heard.push(e.type));
  state.opened("0badc0de", info, () => ({ bytesIn: 10, bytesOut: 20 }));
  const [event] = await readUntil(sub, () => true);
  abort.abort();
  assert.equal(event.type, "opened");
  assert.equal(event.type === "opened" && event.connection.target, "db01:5432");
  assert.deepEqual(heard, ["opened"]);
  const [row] = state.snapshot().connections;
  assert.equal(row.stream, 3);
  assert.equal(row.bytesIn, 10);
  assert.equal(row.bytesOut, 20);
});

Deno.test("DaemonState.sample() coalesces progress to the newest, and a close drops it", async () => {
  let now = 0;
  let bytes = 0;
  const state = newState(() => now);
  state.opened("0badc0de", info, () => ({ bytesIn: bytes, bytesOut: 0 }));
  const abort = new AbortController();
  const sub = state.subscribe({ signal: abort.signal })[Symbol.asyncIterator]();
  for (let i = 1; i <= 100; i++) {
    now = i * 1000;
    bytes = i * 1000;
    state.sample();
  }
  state.chat("console", "hello");
  const seen = await readUntil(sub, (e) => e.type === "progress");
  assert.deepEqual(seen.map((e) => e.type), ["chat", "progress"]);
  const progress = seen[1];
  assert.ok(progress.type === "progress");
  assert.equal(progress.bytesIn, 100_000);
  assert.equal(progress.rateIn, 1000, "1000 B/s over the rate window");
  // Progress pending when the connection closes is no longer news.
  now += 1000;
  bytes += 5;
  state.sample();
  state.closed("0badc0de", info, { bytesIn: bytes, bytesOut: 0, reason: "done", durationMs: 9 });
  const after = await readUntil(sub, (e) => e.type === "closed");
  assert.deepEqual(after.map((e) => e.type), ["closed"]);
  // A waiting event comes within microtasks; nothing comes before a timer.
  const next = sub.next().then((r) => (r.done ? "done" : r.value.type));
  const more = await Promise.race([next, new Promise((r) => setTimeout(() => r("nothing"), 0))]);
  assert.equal(more, "nothing", "the closed connection's progress was still delivered");
  abort.abort();
  await next;
  assert.deepEqual(state.snapshot().connections, []);
});

Deno.test("DaemonState.change() moves the session through its phases", () => {
  const state = newState();
  state.change({ type: "connecting", console: "office:7470", first: true });
  state.change({ type: "pending", asked: true });
  assert.equal(state.snapshot().session.phase, "pending");
  state.change({ type: "established", session: "0badc0de", console: "office:7470" });
  const established = state.snapshot().session;
  assert.equal(established.phase, "established");
  assert.equal(established.id, "0badc0de");
  assert.ok(established.since !== null);
  state.opened("0badc0de", info, () => ({ bytesIn: 0, bytesOut: 0 }));
  state.change({
    type: "ended",
    session: "0badc0de",
    end: { code: "closed", reason: "bye", by: "console" },
    retryInMs: 500,
  });
  const ended = state.snapshot();
  assert.equal(ended.session.phase, "waiting");
  assert.equal(ended.session.id, null);
  assert.equal(ended.session.lastError, "bye");
  assert.deepEqual(ended.connections, []);
});

Deno.test("DaemonState keeps only the last 50 chat messages", () => {
  const state = newState();
  for (let i = 0; i < 60; i++) state.chat(i % 2 ? "console" : "daemon", `m${i}`);
  const chat = state.snapshot().chat;
  assert.equal(chat.length, 50);
  assert.equal(chat[0].text, "m10");
  assert.equal(chat.at(-1)!.text, "m59");
});
