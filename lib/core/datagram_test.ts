import assert from "node:assert/strict";
import {
  addDrops,
  DatagramSender,
  dropTotals,
  receiveLoop,
  sendBudget,
  udpCounters,
  udpDrops,
} from "./datagram.ts";
import { MAX_DATAGRAM_BYTES } from "./protocol.ts";

const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: 9 };

/** A socket whose sends finish only when the test lets them, one by one. */
class HeldSocket {
  /** First byte of each datagram whose send started, in order. */
  readonly started: number[] = [];
  #pending: PromiseWithResolvers<number>[] = [];
  inFlight = 0;
  maxInFlight = 0;
  failNext = false;

  send(data: Uint8Array, _to: Deno.Addr): Promise<number> {
    this.started.push(data[0]);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const p = Promise.withResolvers<number>();
    this.#pending.push(p);
    return p.promise.finally(() => this.inFlight--);
  }

  /** Finish the oldest send (or fail it); resolves once the sender has moved on. */
  async finishOne(): Promise<void> {
    const p = this.#pending.shift();
    assert.ok(p, "no send in flight");
    if (this.failNext) {
      this.failNext = false;
      p.reject(new Deno.errors.ConnectionRefused("ICMP port unreachable"));
    } else p.resolve(1);
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }

  get waiting(): number {
    return this.#pending.length;
  }
}

function sender(socket: HeldSocket): DatagramSender {
  return new DatagramSender(socket as unknown as Deno.DatagramConn);
}

Deno.test("DatagramSender sends one datagram at a time, in the order given", async () => {
  const socket = new HeldSocket();
  const s = sender(socket);
  for (let i = 0; i < 10; i++) assert.equal(s.send(new Uint8Array([i]), to), true);
  for (let i = 0; i < 10; i++) {
    assert.equal(socket.waiting, 1, `send ${i}: more than one in flight`);
    await socket.finishOne();
  }
  assert.deepEqual(socket.started, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(socket.maxInFlight, 1);
  assert.equal(s.dropped, 0);
  // Idle again: the next send starts at once.
  s.send(new Uint8Array([10]), to);
  assert.deepEqual(socket.started.at(-1), 10);
});

Deno.test("DatagramSender queues 4,096 behind the one in flight and drops and counts the rest", async () => {
  const socket = new HeldSocket();
  const s = sender(socket);
  const accepted: boolean[] = [];
  for (let i = 0; i < 4200; i++) accepted.push(s.send(new Uint8Array([i & 0xff, i >> 8]), to));
  assert.equal(accepted.filter(Boolean).length, 1 + 4096);
  assert.ok(accepted.slice(0, 4097).every(Boolean), "an early datagram was dropped");
  assert.equal(s.dropped, 4200 - 4097);
  while (socket.waiting > 0) await socket.finishOne();
  assert.equal(socket.started.length, 4097, "the dropped datagrams were sent after all");
  // Room again once the queue drained.
  assert.equal(s.send(new Uint8Array([1]), to), true);
});

Deno.test("DatagramSender queues at most 4 MiB and takes more once bytes were sent", async () => {
  const socket = new HeldSocket();
  const s = sender(socket);
  const big = () => new Uint8Array(60_000);
  const accepted: boolean[] = [];
  for (let i = 0; i < 72; i++) accepted.push(s.send(big(), to));
  // 69 × 60,000 B fit in 4,194,304 B, the 70th would not.
  assert.deepEqual(accepted.map(Number).join(""), "1".repeat(69) + "000");
  assert.equal(s.dropped, 3);
  await socket.finishOne();
  assert.equal(s.send(big(), to), true, "the bytes of a sent datagram are free again");
  while (socket.waiting > 0) await socket.finishOne();
});

Deno.test("DatagramSenders sharing a SendBudget queue at most its bytes together, and close() gives them back", async () => {
  const budget = sendBudget(250);
  const a = new HeldSocket();
  const b = new HeldSocket();
  const sa = new DatagramSender(a as unknown as Deno.DatagramConn, budget);
  const sb = new DatagramSender(b as unknown as Deno.DatagramConn, budget);
  assert.equal(sa.send(new Uint8Array(100), to), true);
  assert.equal(sb.send(new Uint8Array(100), to), true);
  assert.equal(sb.send(new Uint8Array(100), to), false, "over the shared budget");
  assert.equal(budget.used, 200);
  sa.close();
  assert.equal(budget.used, 100, "a closed sender still holds budget");
  assert.equal(sb.send(new Uint8Array(100), to), true);
  await a.finishOne();
  while (b.waiting > 0) await b.finishOne();
  assert.equal(budget.used, 0, "bytes sent are not given back");
});

Deno.test("DatagramSender counts a failed send as a drop, tells the sender's callback, and carries on", async () => {
  const socket = new HeldSocket();
  const s = sender(socket);
  const failed: number[] = [];
  s.send(new Uint8Array([1]), to, () => failed.push(1));
  s.send(new Uint8Array([2]), to, () => failed.push(2));
  socket.failNext = true;
  await socket.finishOne();
  await socket.finishOne();
  assert.deepEqual(socket.started, [1, 2]);
  assert.equal(s.dropped, 1);
  assert.deepEqual(failed, [1], "only the failed datagram's callback ran");
});

Deno.test("DatagramSender.close() drops what is queued and refuses later sends", async () => {
  const socket = new HeldSocket();
  const s = sender(socket);
  for (let i = 0; i < 5; i++) s.send(new Uint8Array([i]), to);
  s.close();
  assert.equal(s.send(new Uint8Array([9]), to), false);
  assert.equal(s.dropped, 1);
  await socket.finishOne();
  assert.equal(socket.waiting, 0, "a queued datagram was sent after close()");
  assert.deepEqual(socket.started, [0]);
});

/** A socket that receives the given datagrams (or throws the given errors), then is closed. */
function scriptedSocket(script: (Uint8Array | Error)[]) {
  const from: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: 5353 };
  let receives = 0;
  return {
    get receives() {
      return receives;
    },
    receive(buf?: Uint8Array): Promise<[Uint8Array, Deno.Addr]> {
      receives++;
      const next = script.shift();
      if (next === undefined) return Promise.reject(new Deno.errors.BadResource("closed"));
      if (next instanceof Error) return Promise.reject(next);
      assert.ok(buf && buf.length > MAX_DATAGRAM_BYTES, "a receive buffer too small to tell");
      buf.set(next);
      return Promise.resolve([buf.subarray(0, next.length), from]);
    },
  };
}

Deno.test("receiveLoop() hands over views of one buffer, skips over-size datagrams and receive errors, ends when closed", async () => {
  const socket = scriptedSocket([
    new Uint8Array([1, 2]),
    new Error("ICMP port unreachable"),
    new Uint8Array(MAX_DATAGRAM_BYTES + 1),
    new Uint8Array(MAX_DATAGRAM_BYTES).fill(3),
  ]);
  const got: { data: Uint8Array; copy: Uint8Array; port: number }[] = [];
  await receiveLoop(
    socket as unknown as Deno.DatagramConn,
    (data, from) => (got.push({ data, copy: data.slice(), port: from.port }), true),
    () => Promise.reject(new Error("paused with nothing dropped")),
  );
  assert.deepEqual(got.map((g) => g.data.length), [2, MAX_DATAGRAM_BYTES]);
  assert.deepEqual([...got[0].copy], [1, 2]);
  assert.equal(got[0].data.buffer, got[1].data.buffer, "a buffer per datagram: a copy too many");
  assert.equal(got[0].port, 5353);
  assert.equal(socket.receives, 5);
});

Deno.test("receiveLoop() waits for pause() after a datagram it could not pass on", async () => {
  const socket = scriptedSocket([new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])]);
  const pause = Promise.withResolvers<void>();
  let paused = 0;
  const loop = receiveLoop(
    socket as unknown as Deno.DatagramConn,
    (data) => data[0] !== 1,
    () => (paused++, pause.promise),
  );
  for (let i = 0; i < 5; i++) await Promise.resolve();
  assert.deepEqual([paused, socket.receives], [1, 1], "received again before the pause ended");
  pause.resolve();
  await loop;
  assert.deepEqual([paused, socket.receives], [1, 4]);
});

Deno.test("udpCounters() starts every counter at zero", () => {
  const { dropped, ...c } = udpCounters();
  assert.deepEqual(Object.values(c).filter((v) => v !== 0), []);
  assert.equal(Object.keys(c).length, 9);
  assert.deepEqual(dropped, udpDrops());
});

Deno.test("addDrops() and dropTotals() add drops up by where and in total", () => {
  const a = udpDrops();
  const b = udpDrops();
  a.opening = 2;
  b.opening = 1;
  b.sendQueue = 4;
  addDrops(a, b);
  const t = dropTotals(a);
  assert.equal(t.total, 7);
  assert.equal(t.opening, 3);
  assert.equal(t.sendQueue, 4);
  assert.equal(Object.values(udpDrops()).length, 7, "every reason starts at zero");
});
