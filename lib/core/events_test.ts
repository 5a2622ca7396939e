import assert from "node:assert/strict";
import { EventHub } from "./events.ts";

type Ev = { type: string; id: number; n?: number };

async function collect(sub: AsyncIterable<Ev>, until: (e: Ev) => boolean): Promise<Ev[]> {
  const got: Ev[] = [];
  for await (const e of sub) {
    got.push(e);
    if (until(e)) break;
  }
  return got;
}

Deno.test("EventHub.subscribe() counts from the call: events before the first read are kept, in order", async () => {
  const hub = new EventHub<Ev>();
  const sub = hub.subscribe();
  for (let i = 0; i < 5; i++) hub.emit({ type: "state", id: i });
  hub.emit({ type: "end", id: 5 });
  const got = await collect(sub, (e) => e.type === "end");
  assert.deepEqual(got.map((e) => e.id), [0, 1, 2, 3, 4, 5]);
  assert.equal(hub.subscribers, 0, "breaking out of the loop ends the subscription");
});

Deno.test("EventHub.progress() coalesces to the newest value per key; a slow reader never loses a state change", async () => {
  const hub = new EventHub<Ev>();
  const sub = hub.subscribe();
  hub.emit({ type: "opened", id: 1 });
  hub.emit({ type: "opened", id: 2 });
  for (let n = 1; n <= 10_000; n++) {
    hub.progress("c1", { type: "progress", id: 1, n });
    hub.progress("c2", { type: "progress", id: 2, n: n * 2 });
  }
  hub.emit({ type: "closed", id: 2 }, "c2");
  hub.emit({ type: "last", id: 0 });
  const got = await collect(sub, (e) => e.type === "progress");
  assert.deepEqual(got.map((e) => `${e.type}:${e.id}:${e.n ?? ""}`), [
    "opened:1:",
    "opened:2:",
    "closed:2:",
    "last:0:",
    "progress:1:10000",
  ]);
});

Deno.test("EventHub cuts off a subscriber that falls more than maxQueued state events behind, and only it", async () => {
  const hub = new EventHub<Ev>({ maxQueued: 3 });
  const stalled = hub.subscribe();
  const reader = hub.subscribe();
  const reading = collect(reader, (e) => e.id === 9);
  for (let i = 0; i < 10; i++) {
    hub.emit({ type: "state", id: i });
    await Promise.resolve(); // let the reading view keep up
    await Promise.resolve();
  }
  assert.deepEqual((await reading).map((e) => e.id), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(await collect(stalled, () => false), [], "the stalled view's queue was dropped");
});

Deno.test("EventHub.subscribe() ends when its signal aborts or it is disposed", async () => {
  const hub = new EventHub<Ev>();
  const abort = new AbortController();
  const a = hub.subscribe({ signal: abort.signal });
  const b = hub.subscribe();
  assert.equal(hub.subscribers, 2);
  const ending = collect(a, () => false);
  abort.abort();
  assert.deepEqual(await ending, []);
  b[Symbol.dispose]();
  assert.equal(hub.subscribers, 0);
  hub.emit({ type: "after", id: 1 });
  assert.deepEqual(await collect(b, () => false), []);
});
