import assert from "node:assert/strict";
import { ENTER_SCREEN, frame, keys, LEAVE_SCREEN, LiveScreen } from "./screen.ts";

function screen(overrides: { render?: () => { text: string }[] } = {}) {
  const written: string[] = [];
  const typed: string[] = [];
  const live = new LiveScreen({
    render: overrides.render ?? (() => [{ text: "hello" }]),
    write: (t) => written.push(t),
    size: () => ({ columns: 20, rows: 5 }),
    color: false,
    keyboard: false,
    onKey: (k) => k === "y" && typed.push("answered") > 0,
  });
  return { live, written, typed };
}

Deno.test("frame() draws every row at the width in one string, with no colour codes under NO_COLOR", () => {
  const text = frame([{ text: "x".repeat(50), style: "title" }, { text: "b" }], "typed", {
    columns: 10,
    rows: 4,
  }, false);
  const rows = text.split("\r\n");
  assert.equal(rows.length, 4);
  assert.equal(rows[0], "\x1b[?25l\x1b[Hxxxxxxxxx…");
  assert.equal(rows[1], "b         ");
  assert.doesNotMatch(text.replaceAll("\x1b", "ESC"), /ESC\[[0-9;]*m/);
  const coloured = frame([{ text: "t", style: "title" }], "", { columns: 10, rows: 2 }, true);
  assert.ok(coloured.includes("\x1b[1;36mt"));
});

Deno.test("LiveScreen draws on start, coalesces many changes into one frame, and restores the terminal on stop", async () => {
  const { live, written } = screen();
  live.start();
  assert.equal(written[0], ENTER_SCREEN);
  assert.equal(live.frames, 1);
  for (let i = 0; i < 100; i++) live.invalidate();
  await new Promise<void>((resolve) => {
    const check = () => (live.frames === 2 ? resolve() : setTimeout(check, 20));
    check();
  });
  assert.equal(live.frames, 2);
  live.note("last words");
  live.stop();
  assert.ok(written.at(-1)!.startsWith(LEAVE_SCREEN));
  assert.match(written.at(-1)!, /last words\n$/);
  live.stop(); // twice is harmless
  assert.equal(written.filter((w) => w.startsWith(LEAVE_SCREEN)).length, 1);
});

Deno.test("LiveScreen restores the terminal when an uncaught error is reported", () => {
  const { live, written } = screen();
  live.start();
  globalThis.dispatchEvent(new Event("error"));
  assert.ok(written.at(-1)!.startsWith(LEAVE_SCREEN));
  live.stop();
});

Deno.test("LiveScreen's input line edits, submits lines, ignores escape sequences and passes answer keys", async () => {
  const { live, typed } = screen();
  live.start();
  const lines = live.lines();
  live.type("y"); // an answer key on an empty line
  live.type("hi\x1b[Athere\x7f\x7f\x7f\x7f\x7f\x7fello\r");
  assert.deepEqual(typed, ["answered"]);
  assert.deepEqual(await lines.next(), { value: "hello", done: false });
  live.stop();
  assert.equal((await lines.next()).done, true);
});

Deno.test("keys() keeps an escape sequence whole", () => {
  assert.deepEqual(keys("\x1b[1;5Cx\x1b"), ["\x1b[1;5C", "x", "\x1b"]);
});
