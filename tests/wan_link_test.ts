/**
 * The WAN link emulator (tools/wan_link.ts) that the bench's WAN mode puts
 * between each path's two ends. Correctness only, with lower bounds: the
 * delay is applied, the rate is not exceeded, bytes arrive intact, and a
 * receiver that stops reading makes the emulator stop reading within its
 * bound. Its speed is measured by `deno task bench --wan`, not here.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeQuietly, echoServer, tcpServer, within } from "./_harness.ts";
import { parseWanLinkArgs, startWanLink, type WanLinkOptions } from "../tools/wan_link.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const LOOPBACK = { hostname: "127.0.0.1", port: 0 };

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n;) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`EOF after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

/** Bytes whose value depends on their offset, so a lost, doubled or swapped chunk shows. */
function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >>> 13)) & 0xff;
  return out;
}

function link(to: number, o: Partial<WanLinkOptions>) {
  return startWanLink({
    listen: LOOPBACK,
    to: { hostname: "127.0.0.1", port: to },
    delayMs: 0,
    rateMbit: 0,
    ...o,
  });
}

Deno.test("startWanLink() delays each direction: a round trip takes at least twice the delay", async () => {
  using echo = echoServer();
  const wan = await link(echo.port, { delayMs: 40, rateMbit: 1000 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: wan.port });
  try {
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await writeAll(conn, new Uint8Array([i]));
      const back = await within(readExactly(conn, 1), 5000, "the echo through the link");
      const ms = performance.now() - t0;
      assert.deepEqual(back, new Uint8Array([i]));
      assert.ok(ms >= 80, `a round trip took ${ms.toFixed(1)} ms, under 2 × 40 ms`);
    }
  } finally {
    closeQuietly(conn);
    await wan.close();
  }
});

Deno.test("startWanLink() with handshake: a new connection's first reply takes two round trips", async () => {
  using echo = echoServer();
  const wan = await link(echo.port, { delayMs: 25, rateMbit: 1000, handshake: true });
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: wan.port });
  try {
    await writeAll(conn, new Uint8Array([7]));
    assert.deepEqual(await within(readExactly(conn, 1), 5000, "the echo"), new Uint8Array([7]));
    const ms = performance.now() - t0;
    assert.ok(ms >= 100, `connect + 1-byte echo took ${ms.toFixed(1)} ms, under 4 × 25 ms`);
  } finally {
    closeQuietly(conn);
    await wan.close();
  }
});

Deno.test("startWanLink() carries bytes intact both ways and never beats its rate", async () => {
  using echo = echoServer();
  // 4 MiB each way at 200 Mbit/s: the echo's last byte cannot be back before 4 MiB × 8 / 200 Mbit/s.
  const wan = await link(echo.port, { delayMs: 5, rateMbit: 200 });
  const data = pattern(4 * MiB);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: wan.port });
  try {
    const t0 = performance.now();
    const sent = writeAll(conn, data).then(() => conn.closeWrite());
    const back = await within(readExactly(conn, data.length), 30_000, "4 MiB echoed");
    const ms = performance.now() - t0;
    await sent;
    assert.deepEqual(await conn.read(new Uint8Array(1)), null, "the EOF is passed on");
    assert.ok(back.every((b, i) => b === data[i]), "the echoed bytes differ from those sent");
    const floor = (data.length * 8) / 200e3;
    assert.ok(
      ms >= floor,
      `4 MiB took ${ms.toFixed(0)} ms, under ${floor.toFixed(0)} ms at 200 Mbit/s`,
    );
    const s = wan.stats();
    assert.deepEqual([s.up.read, s.up.written, s.down.read, s.down.written], [
      data.length,
      data.length,
      data.length,
      data.length,
    ]);
  } finally {
    closeQuietly(conn);
    await wan.close();
  }
});

Deno.test("startWanLink() stops reading from a sender whose receiver has stalled, within its bound", async () => {
  let resume!: () => void;
  const resumed = new Promise<void>((r) => (resume = r));
  const received = Promise.withResolvers<Uint8Array>();
  const size = 64 * MiB; // far more than the link's bound plus every socket buffer on the way
  using server = tcpServer(async (conn) => {
    await resumed;
    received.resolve(await readExactly(conn, size));
  });
  const paused = Promise.withResolvers<number>();
  const wan = await link(server.port, {
    delayMs: 2,
    rateMbit: 0,
    queueBytes: 256 * KiB,
    onBackpressure: (held) => paused.resolve(held),
  });
  const data = pattern(size);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: wan.port });
  try {
    let sentAll = false;
    const sent = writeAll(conn, data).then(() => (sentAll = true));
    sent.catch(() => {}); // awaited below; a failed assertion closes the socket under it
    const held = await within(paused.promise, 20_000, "the emulator to pause its reader");
    assert.ok(!sentAll, "the sender wrote everything although the receiver never read");
    const bound = wan.connectionCap + 256 * KiB; // the cap, plus the one read that crossed it
    assert.ok(held <= bound, `held ${held} bytes, over ${bound}`);
    const s = wan.stats();
    assert.ok(s.up.read < size / 2, `the emulator read ${s.up.read} of ${size} bytes`);
    assert.ok(s.up.maxHeld <= bound, `held up to ${s.up.maxHeld} bytes, over ${bound}`);
    assert.ok(s.up.pauses >= 1);

    resume();
    const got = await within(received.promise, 60_000, "the stalled receiver to catch up");
    await within(sent, 10_000, "the sender to finish");
    assert.ok(got.every((b, i) => b === data[i]), "bytes differ after the stall");
    assert.ok(wan.stats().up.maxHeld <= bound, `held up to ${wan.stats().up.maxHeld} bytes`);
  } finally {
    closeQuietly(conn);
    await wan.close();
  }
});

Deno.test("parseWanLinkArgs() reads the flags and names a bad one", () => {
  const o = parseWanLinkArgs([
    "--listen",
    "127.0.0.1:0",
    "--to",
    "127.0.0.1:9",
    "--delay-ms",
    "20",
    "--rate-mbit",
    "1000",
    "--handshake",
  ]);
  assert.deepEqual(
    [o.listen, o.to, o.delayMs, o.rateMbit, o.handshake, o.queueBytes],
    [LOOPBACK, { hostname: "127.0.0.1", port: 9 }, 20, 1000, true, undefined],
  );
  assert.throws(
    () => parseWanLinkArgs(["--to", "nowhere", "--delay-ms", "1", "--rate-mbit", "1"]),
    /Cannot parse --to: "nowhere" is not HOST:PORT/,
  );
  assert.throws(
    () => parseWanLinkArgs(["--to", "127.0.0.1:9", "--delay-ms", "-1", "--rate-mbit", "1"]),
    /Cannot parse --delay-ms: "-1"/,
  );
  assert.throws(() => parseWanLinkArgs(["--bogus"]), /unknown "--bogus"/);
});

Deno.test("tools/wan_link.ts as a process prints its port and relays", async () => {
  using echo = echoServer();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net=127.0.0.1",
      new URL("../tools/wan_link.ts", import.meta.url).pathname,
      "--listen",
      "127.0.0.1:0",
      "--to",
      `127.0.0.1:${echo.port}`,
      "--delay-ms",
      "10",
      "--rate-mbit",
      "100",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let text = "";
    const ready = (async () => {
      while (!/listening on 127\.0\.0\.1:(\d+)/.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`wan_link exited: ${text}`);
        text += value;
      }
      return Number(text.match(/listening on 127\.0\.0\.1:(\d+)/)![1]);
    })();
    const port = await within(ready, 20_000, "the ready line");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const t0 = performance.now();
      await writeAll(conn, new TextEncoder().encode("hi"));
      assert.deepEqual(new TextDecoder().decode(await readExactly(conn, 2)), "hi");
      assert.ok(performance.now() - t0 >= 20);
    } finally {
      closeQuietly(conn);
    }
  } finally {
    child.kill("SIGTERM");
    assert.deepEqual((await child.status).code, 0);
    await reader.cancel().catch(() => {});
  }
});
