import assert from "node:assert/strict";
import { CHAT_LINES_PER_SECOND, chatLines, ChatView } from "./chat_view.ts";
import { createLogger } from "../core/log.ts";

Deno.test("chatLines() prefixes every line and marks later ones, escaping what could drive the terminal", () => {
  assert.deepEqual(
    chatLines("root@vm", "hi\x1b[2J\r\nSession with x ended: fake\n\u2028\u202eok\rz"),
    [
      "[chat root@vm] hi\\x1b[2J",
      "[chat root@vm] | Session with x ended: fake",
      "[chat root@vm] | \\u2028\\u202eok\\x0dz",
    ],
  );
  assert.deepEqual(chatLines("console", ""), ["[chat console] "]);
  assert.deepEqual(chatLines("a\x1b@b", "x"), ["[chat a\\x1b@b] x"]);
});

Deno.test("chatLines() cuts rows to the screen width, so the terminal never wraps the peer's text to a new line", () => {
  const text = "x".repeat(30) + "Session established with trusted@db01";
  const rows = chatLines("vm", text, { columns: 40 });
  for (const row of rows) {
    assert.ok(row.length <= 40, row);
    assert.ok(row.startsWith("[chat vm] "), row);
  }
  assert.equal(rows.slice(1).every((r) => r.startsWith("[chat vm] | ")), true);
  assert.equal(rows.map((r, i) => r.slice(i === 0 ? 10 : 12)).join(""), text);
  // Wide characters count as two columns; a tab counts as the space it shows as.
  for (const row of chatLines("vm", "日本語".repeat(20), { columns: 40 })) {
    assert.ok(row.length + (row.match(/[日本語]/g)?.length ?? 0) <= 40, row);
  }
  assert.deepEqual(chatLines("vm", "a\tb"), ["[chat vm] a b"]);
});

function view(now: { t: number }) {
  const rows: string[] = [];
  const logs: string[] = [];
  const chat = new ChatView({
    label: "vm",
    out: (r) => rows.push(r),
    log: createLogger({ sink: (line) => logs.push(line) }),
    columns: () => undefined,
    now: () => now.t,
  });
  return { chat, rows, logs };
}

Deno.test("ChatView shows a screenful a second and counts the rest in one log line a second", () => {
  const now = { t: 1_000_000 };
  const { chat, rows, logs } = view(now);
  for (let i = 0; i < 100; i++) chat.show(`flood ${i}`);
  assert.equal(rows.length, CHAT_LINES_PER_SECOND);
  assert.equal(logs.length, 1, logs.join("\n"));
  assert.match(logs[0], /WARN .*chat from the peer came too fast.* dropped=1 /);
  assert.equal(chat.pending, 100 - CHAT_LINES_PER_SECOND - 1);

  // Half a second later: half a screenful more, and still one log line.
  now.t += 500;
  for (let i = 0; i < 50; i++) chat.show(`later ${i}`);
  assert.equal(rows.length, CHAT_LINES_PER_SECOND * 1.5);
  assert.equal(logs.length, 1);

  // A second after the first report, the next drop reports everything counted since.
  now.t += 500;
  chat.show("one");
  chat.show("two");
  assert.equal(logs.length, 2);
  const dropped = logs.reduce((n, l) => n + Number(l.match(/dropped=(\d+)/)![1]), 0);
  assert.equal(rows.length + dropped + chat.pending, 152);
  chat.close();
  assert.equal(chat.pending, 0);
  const all = logs.reduce((n, l) => n + Number(l.match(/dropped=(\d+)/)![1]), 0);
  assert.equal(rows.length + all, 152);
});

Deno.test("ChatView counts the rows of one long message, not messages", () => {
  const now = { t: 5_000 };
  const { chat, rows, logs } = view(now);
  chat.show(Array.from({ length: 30 }, (_, i) => `line ${i}`).join("\n"));
  assert.equal(rows.length, CHAT_LINES_PER_SECOND);
  assert.equal(rows[1], "[chat vm] | line 1");
  chat.close();
  assert.match(logs.at(-1)!, /dropped=6 /);
});

Deno.test("ChatView logs dropped rows left uncounted a second later without another message", async () => {
  const rows: string[] = [];
  const logs: string[] = [];
  let secondReport: () => void = () => {};
  const reported = new Promise<void>((resolve) => (secondReport = resolve));
  const chat = new ChatView({
    label: "vm",
    out: (r) => rows.push(r),
    log: createLogger({
      sink: (line) => {
        if (logs.push(line) === 2) secondReport();
      },
    }),
    columns: () => undefined,
    linesPerSecond: 2,
  });
  try {
    for (let i = 0; i < 5; i++) chat.show(`m ${i}`);
    assert.equal(logs.length, 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      reported,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("no second report within 5 s")), 5_000);
      }),
    ]).finally(() => clearTimeout(timer));
  } finally {
    chat.close();
  }
  assert.equal(rows.length, 2);
  assert.equal(logs.length, 2, logs.join("\n"));
  assert.match(logs[1], /dropped=2 /);
});
