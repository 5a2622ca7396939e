import assert from "node:assert/strict";
import { RateMeter } from "./rates.ts";

const idle = { bytesIn: 0, bytesOut: 0, connectionsTotal: 0 };

Deno.test("RateMeter.rates() measures over the window and falls to zero once nothing moved in it", () => {
  const meter = new RateMeter<"bytesIn" | "bytesOut" | "connectionsTotal">({ windowMs: 5000 });
  meter.sample("web", idle, 0);
  meter.sample("web", { bytesIn: 4000, bytesOut: 1000, connectionsTotal: 2 }, 2000);
  assert.deepEqual(meter.rates("web", 2000), { bytesIn: 2000, bytesOut: 500, connectionsTotal: 1 });
  // Idle since 2000: the rate spreads over the time that passed, then drops to zero.
  assert.equal(meter.rates("web", 4000)?.bytesIn, 1000);
  assert.equal(meter.rates("web", 7000), null);
  assert.deepEqual(meter.moving(4000), ["web"]);
  assert.deepEqual(meter.moving(7000), []);
});

Deno.test("RateMeter.sample() stores nothing for a key whose counters did not move", () => {
  const meter = new RateMeter<"bytesIn" | "bytesOut" | "connectionsTotal">({ windowMs: 5000 });
  for (let at = 0; at < 100_000; at += 1000) {
    assert.equal(meter.sample("quiet", idle, at), at === 0, "stored only when it moved");
  }
  assert.deepEqual(meter.moving(100_000), []);
  assert.equal(meter.rates("quiet", 100_000), null);
  // It starts moving: measured from the last idle sample.
  meter.sample("quiet", { bytesIn: 3000, bytesOut: 0, connectionsTotal: 1 }, 101_000);
  assert.equal(meter.rates("quiet", 101_000)?.bytesIn, 3000 / 5);
  assert.deepEqual(meter.moving(101_000), ["quiet"]);
});
