/**
 * Per-connection info logs in a burst (issue 13): 20 parallel connections
 * write a few lines each side and one summary with the rest counted. (The
 * JSON shape of a summary is lib/core/log_batch_test.ts's business.)
 */
import assert from "node:assert/strict";
import { addPfo, echoRoundTrip, echoServer, startPair } from "./_harness.ts";

const BURST = 20;

/** The lines of `pfo`'s connection records and summaries in `lines`. */
function records(lines: readonly string[], pfo: string) {
  const mine = lines.filter((l) => l.includes(pfo));
  return {
    single: mine.filter((l) => /connection (opened|closed)/.test(l)),
    summaries: mine.filter((l) => l.includes("connections summarised")),
  };
}

Deno.test("20 parallel connections write at most 8 connection lines per side and one summary that counts the rest", async () => {
  using echo = echoServer();
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "burst", `127.0.0.1:${echo.port}`);
  const marks = { console: pair.console.out.mark, daemon: pair.daemon.out.mark };
  const replies = await Promise.all(
    Array.from({ length: BURST }, (_, i) => echoRoundTrip(listen, `hello ${i}`)),
  );
  assert.deepEqual(replies, Array.from({ length: BURST }, (_, i) => `hello ${i}`));
  for (const side of ["console", "daemon"] as const) {
    const out = pair[side].out;
    await out.waitFor(/connections summarised .*pfo=burst/, { from: marks[side], ms: 15_000 });
    // Every close is in: each side writes it before the summary covering it.
    const { single, summaries } = records(out.lines.slice(marks[side]), "pfo=burst");
    assert.ok(single.length <= 8, `${side}: ${single.length} single lines\n${single.join("\n")}`);
    let counted = single.length;
    for (const s of summaries) {
      const opened = Number(s.match(/ opened=(\d+)/)?.[1] ?? 0);
      const closed = Number(s.match(/ closed=(\d+)/)?.[1] ?? 0);
      assert.match(s, / periodMs=\d+/);
      counted += opened + closed;
    }
    // A summary can come before the last closes: wait for the count to be whole.
    for (let i = 0; counted < 2 * BURST && i < 3; i++) {
      const from = out.mark;
      const line =
        (await out.waitFor(/connections summarised .*pfo=burst.*/, { from, ms: 15_000 }))[0];
      counted += Number(line.match(/ opened=(\d+)/)?.[1] ?? 0) +
        Number(line.match(/ closed=(\d+)/)?.[1] ?? 0);
    }
    assert.equal(counted, 2 * BURST, `${side}: opened and closed records lost or doubled`);
  }
});
