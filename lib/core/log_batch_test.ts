import assert from "node:assert/strict";
import { createLogger, type LogFormat } from "./log.ts";
import { BATCH_LINES, LogBatcher } from "./log_batch.ts";

function logger(format: LogFormat = "json", onLine: (line: string) => void = () => {}) {
  const lines: string[] = [];
  const log = createLogger({
    format,
    scope: { session: "s1" },
    sink: (line) => (lines.push(line), onLine(line)),
  });
  return { lines, log };
}

/** 20 connections opened and closed in a burst on `pfo`, as a PFO writes them. */
function burst(batcher: LogBatcher, log: ReturnType<typeof createLogger>, pfo: string): void {
  const summaryLog = log.child({ pfo });
  for (let i = 0; i < 20; i++) {
    const clog = summaryLog.child({ stream: 2 * i + 2 });
    batcher.info({ key: pfo, kind: "opened", log: clog, summaryLog, msg: "connection opened" });
  }
  for (let i = 0; i < 20; i++) {
    const clog = summaryLog.child({ stream: 2 * i + 2 });
    batcher.info({
      key: pfo,
      kind: "closed",
      log: clog,
      summaryLog,
      msg: "connection closed",
      fields: { bytesIn: 1000, bytesOut: 10 },
      sums: { bytesIn: 1000, bytesOut: 10 },
    });
  }
}

Deno.test("LogBatcher.info() writes the first lines of a burst and one JSON summary of the rest", () => {
  const { lines, log } = logger();
  const batcher = new LogBatcher();
  burst(batcher, log, "web");
  assert.equal(lines.length, BATCH_LINES, "more lines than the window allows before the summary");
  batcher.flush();
  assert.equal(lines.length, BATCH_LINES + 1);
  const records = lines.map((l) => JSON.parse(l));
  assert.ok(records.slice(0, BATCH_LINES).every((r) => r.msg === "connection opened"));
  const summary = records.at(-1);
  assert.equal(summary.msg, "connections summarised");
  assert.equal(summary.level, "info");
  assert.equal(summary.session, "s1");
  assert.equal(summary.pfo, "web");
  assert.equal(summary.stream, undefined, "the summary carries the PFO's scope, not a stream's");
  assert.equal(summary.opened, 20 - BATCH_LINES);
  assert.equal(summary.closed, 20);
  assert.equal(summary.bytesIn, 20 * 1000, "bytes of the summarised records only");
  assert.equal(summary.bytesOut, 20 * 10);
  assert.equal(typeof summary.periodMs, "number");
});

Deno.test("LogBatcher counts each key apart, and writes nothing more when a window had no excess", () => {
  const { lines, log } = logger("text");
  const batcher = new LogBatcher({ lines: 2 });
  burst(batcher, log, "web");
  const summaryLog = log.child({ pfo: "db" });
  batcher.info({
    key: "db",
    kind: "opened",
    log: summaryLog,
    summaryLog,
    msg: "connection opened",
  });
  batcher.flush();
  const db = lines.filter((l) => l.includes("pfo=db"));
  assert.equal(db.length, 1, "the other PFO's one line was summarised or lost");
  const summaries = lines.filter((l) => l.includes("connections summarised"));
  assert.equal(summaries.length, 1);
  assert.match(
    summaries[0],
    /INFO {2}connections summarised {2}session=s1 pfo=web opened=18 closed=20/,
  );
  batcher.flush();
  assert.equal(lines.length, 2 + 1 + 1, "a second flush wrote again");
});

Deno.test("LogBatcher writes the summary by itself when the window ends, then opens a new window", async () => {
  const summarised = Promise.withResolvers<void>();
  const { lines, log } = logger("json", (line) => {
    if (line.includes("connections summarised")) summarised.resolve();
  });
  const batcher = new LogBatcher({ lines: 1, windowMs: 20 });
  try {
    for (let i = 0; i < 3; i++) {
      batcher.info({ key: "web", kind: "opened", log, summaryLog: log, msg: "connection opened" });
    }
    assert.equal(lines.length, 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("no summary within 10 s")), 10_000);
    });
    await Promise.race([summarised.promise, late]).finally(() => clearTimeout(timer));
    assert.equal(JSON.parse(lines[1]).opened, 2);
    batcher.info({ key: "web", kind: "opened", log, summaryLog: log, msg: "connection opened" });
    assert.equal(JSON.parse(lines[2]).msg, "connection opened", "a new window writes again");
  } finally {
    batcher.flush();
  }
});

Deno.test("LogBatcher writes nothing when info records are off", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "warn", sink: (l) => lines.push(l) });
  const batcher = new LogBatcher({ lines: 1 });
  for (let i = 0; i < 5; i++) {
    batcher.info({ key: "web", kind: "opened", log, summaryLog: log, msg: "connection opened" });
  }
  batcher.flush();
  assert.deepEqual(lines, []);
});
