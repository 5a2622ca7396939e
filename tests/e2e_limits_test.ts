/**
 * End-to-end tests of what a Daemon not yet accepted may cost the Console:
 * a small budget of messages and bytes, and `pendingTimeoutMs`. (The send
 * queue, held bytes and stream caps are unit-tested in lib/core/session_test.ts.)
 *
 * @module
 */

import assert from "node:assert/strict";
import { procStats, startConsole, startDaemon, statusOf, within } from "./_harness.ts";
import { floodPings, pendingDaemon } from "./_hostile.ts";

Deno.test("a Daemon waiting for acceptance that floods pings and never reads is rejected over its budget, logged, and the Console stays small", async () => {
  await using con = await startConsole();
  using hostile = await pendingDaemon(con);
  await con.out.waitFor(/asks for a session/);
  const before = (await procStats(con.child.pid)).rssKiB;
  const maxBytes = 64 * 1024 * 1024;
  const flood = await within(floodPings(hostile.link, maxBytes), 30_000, "the ping flood");
  assert.ok(flood.cut, `the Console took all ${flood.bytes} bytes of pings from a pending Daemon`);
  assert.ok(flood.bytes < 4 * 1024 * 1024, `the Console read ${flood.bytes} bytes before its cut`);
  await con.out.waitFor(
    /WARN +a Daemon not yet accepted sent more than its budget, rejecting it .*maxMessages=\d+/,
  );
  await con.out.waitFor(/session ended .*reason="rejected: sent \d+ messages/);
  const after = (await procStats(con.child.pid)).rssKiB;
  assert.ok(after - before < 64 * 1024, `RSS grew from ${before} KiB to ${after} KiB`);
  // The place is free again.
  assert.equal((await statusOf(con)).session.state, "none");
});

Deno.test("pendingTimeoutMs rejects a Daemon the operator does not answer in time, with the reason on both sides", async () => {
  await using con = await startConsole({ settings: "pendingTimeoutMs: 1500\n" });
  const t0 = performance.now();
  await using daemon = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);
  await daemon.out.waitFor(/Waiting for the Console operator to accept/);
  await con.out.waitFor(
    /WARN +no answer from the Console operator in time, rejecting the pending Daemon .*pendingTimeoutMs=1500/,
  );
  const ms = performance.now() - t0;
  assert.ok(ms >= 1_400, `rejected after ${Math.round(ms)} ms, before its 1500 ms`);
  await con.out.waitFor(
    /session ended .*reason="rejected: the Console operator did not answer within 1500 ms"/,
  );
  await daemon.out.waitFor(
    /Console refused the session: the Console operator did not answer within 1500 ms/,
  );
  // "rejected" is final: the Daemon stops instead of asking again.
  const status = await within(daemon.status, 15_000, "the Daemon to exit");
  assert.notEqual(status.code, 0);
  assert.equal((await statusOf(con)).session.state, "none");
});
