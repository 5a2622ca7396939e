import assert from "node:assert/strict";
import { AllowList } from "../net/allowlist.ts";
import { createLogger } from "../core/log.ts";
import { LookupRefused, Lookups, MAX_RESOLVES_IN_FLIGHT, MAX_RESOLVES_QUEUED } from "./lookups.ts";

/** A resolver whose lookups finish only when the test says so. */
function heldResolver() {
  const waiting: (() => void)[] = [];
  let running = 0;
  let peak = 0;
  return {
    resolve(host: string): Promise<string[]> {
      running++;
      peak = Math.max(peak, running);
      return new Promise((resolve) =>
        waiting.push(() => {
          running--;
          resolve([`10.0.0.${host.length}`]);
        })
      );
    },
    /** Finish every lookup started so far. */
    releaseAll(): number {
      const n = waiting.length;
      for (const release of waiting.splice(0)) release();
      return n;
    },
    get peak() {
      return peak;
    },
  };
}

/** Let settled promises run their callbacks (no timers involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

Deno.test("Lookups.answer() runs at most 64 lookups at once, queues a bounded number, and refuses the rest with a logged limit", async () => {
  const lines: string[] = [];
  const dns = heldResolver();
  const lookups = new Lookups({
    allow: AllowList.parse([]),
    resolve: (host) => dns.resolve(host),
    log: createLogger({ sink: (line) => lines.push(line) }),
  });
  const total = MAX_RESOLVES_IN_FLIGHT + MAX_RESOLVES_QUEUED + 100;
  const outcomes: ("ok" | "refused")[] = [];
  const all = Array.from(
    { length: total },
    (_, i) =>
      lookups.answer(`host${i}`).then(
        () => void outcomes.push("ok"),
        (err) => {
          assert.ok(err instanceof LookupRefused, String(err));
          assert.match(err.message, /64 lookups running and 256 waiting; try again later/);
          outcomes.push("refused");
        },
      ),
  );
  await settle();
  assert.equal(lookups.inFlight, MAX_RESOLVES_IN_FLIGHT);
  assert.equal(lookups.queued, MAX_RESOLVES_QUEUED);
  assert.equal(outcomes.filter((o) => o === "refused").length, 100, "refused at once");
  assert.equal(dns.peak, MAX_RESOLVES_IN_FLIGHT);

  // Finish lookups in rounds; the queue drains without going over the limit.
  for (let round = 0; round < 20 && outcomes.length < total; round++) {
    dns.releaseAll();
    await settle();
  }
  await Promise.all(all);
  assert.equal(
    outcomes.filter((o) => o === "ok").length,
    MAX_RESOLVES_IN_FLIGHT + MAX_RESOLVES_QUEUED,
  );
  assert.equal(dns.peak, MAX_RESOLVES_IN_FLIGHT, "never more than 64 lookups at once");
  assert.equal(lookups.inFlight, 0);
  assert.equal(lookups.queued, 0);

  // Each limit is logged once (the next line would come 10 s later, with a count).
  const queued = lines.filter((l) => /resolve limit reached, queueing lookups/.test(l));
  const refused = lines.filter((l) => /resolve queue full, refusing lookups/.test(l));
  assert.equal(queued.length, 1, lines.join("\n"));
  assert.match(queued[0], /limit=64 count=1/);
  assert.equal(refused.length, 1, lines.join("\n"));
  assert.match(refused[0], /limit=256 count=1/);
});

Deno.test("Lookups.answer() skips a queued lookup that is no longer wanted", async () => {
  const dns = heldResolver();
  const lookups = new Lookups({
    allow: AllowList.parse([]),
    resolve: (host) => dns.resolve(host),
    log: createLogger({ sink: () => {} }),
    maxInFlight: 1,
  });
  let wanted = true;
  const first = lookups.answer("a", () => wanted);
  const second = lookups.answer("b", () => wanted);
  await settle();
  assert.equal(lookups.queued, 1);
  wanted = false;
  assert.equal(dns.releaseAll(), 1);
  assert.deepEqual(await first, ["10.0.0.1"]);
  await assert.rejects(second, /no longer wanted/);
  assert.equal(dns.releaseAll(), 0, "the unwanted lookup never ran");
  assert.equal(lookups.inFlight, 0);
});

Deno.test("Lookups.answer() refuses what the allow-list refuses, without a lookup", async () => {
  const lookups = new Lookups({
    allow: AllowList.parse(["10.0.0.0/8"]),
    resolve: () => Promise.resolve(["192.168.0.1"]),
    log: createLogger({ sink: () => {} }),
  });
  await assert.rejects(
    lookups.answer("secret"),
    (e) => e instanceof LookupRefused && /not allowed by the Daemon/.test(e.message),
  );
  await assert.rejects(lookups.answer("010.0.0.1"), /not an address and not a name/);
  assert.deepEqual(await lookups.answer("10.0.0.1"), ["10.0.0.1"]);
});
