import assert from "node:assert/strict";
import { RateMeter } from "./state.ts";

const idle = { bytesIn: 0, bytesOut: 0, connectionsTotal: 0 };

Deno.test("RateMeter.rates() measures over the window and falls to zero once nothing moved in it", () => {
  const meter = new RateMeter({ windowMs: 5000 });
  meter.sample("web", idle, 0);
  meter.sample("web", { bytesIn: 4000, bytesOut: 1000, connectionsTotal: 2 }, 2000);
  assert.deepEqual(meter.rates("web", 2000), {
    bytesInPerSecond: 2000,
    bytesOutPerSecond: 500,
    connectionsPerSecond: 1,
  });
  // Idle since 2000: the rate spreads over the time that passed, then drops to zero.
  assert.equal(meter.rates("web", 4000).bytesInPerSecond, 1000);
  assert.deepEqual(meter.rates("web", 7000), {
    bytesInPerSecond: 0,
    bytesOutPerSecond: 0,
    connectionsPerSecond: 0,
  });
  assert.deepEqual(meter.moving(4000), ["web"]);
  assert.deepEqual(meter.moving(7000), []);
});

Deno.test("RateMeter.sample() stores nothing for a key whose counters did not move", () => {
  const meter = new RateMeter({ windowMs: 5000 });
  for (let at = 0; at < 100_000; at += 1000) meter.sample("quiet", idle, at);
  assert.deepEqual(meter.moving(100_000), []);
  assert.equal(meter.rates("quiet", 100_000).bytesInPerSecond, 0);
  // It starts moving: measured from the last idle sample.
  meter.sample("quiet", { bytesIn: 3000, bytesOut: 0, connectionsTotal: 1 }, 101_000);
  assert.equal(meter.rates("quiet", 101_000).bytesInPerSecond, 3000 / 5);
  assert.deepEqual(meter.moving(101_000), ["quiet"]);
});
