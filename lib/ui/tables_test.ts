import assert from "node:assert/strict";
import { hasControls } from "../core/text.ts";
import { fit, formatAge, formatBytes, formatRate, limitRows, table, textWidth } from "./tables.ts";

Deno.test("formatBytes(), formatRate() and formatAge() read as people read them", () => {
  const cases: [number, string][] = [[0, "0 B"], [999, "999 B"], [1000, "1.0 KB"], [
    12_345_678,
    "12 MB",
  ], [2e12, "2.0 TB"]];
  for (const [n, text] of cases) assert.equal(formatBytes(n), text);
  assert.equal(formatRate(0.2), "-");
  assert.equal(formatRate(1_500_000), "1.5 MB/s");
  assert.equal(formatAge(59_999), "59s");
  assert.equal(formatAge(3_600_000 + 5 * 60_000), "1h05m");
  assert.equal(formatAge(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
});

Deno.test("fit() never returns more cells than asked, escapes controls and counts wide characters", () => {
  for (const text of ["plain text here", "日本語のテキスト", "a\x1b[2Jb\u202ec", "🙂🙂🙂🙂"]) {
    for (const width of [1, 3, 5, 8]) {
      const out = fit(text, width, { pad: true });
      assert.equal(textWidth(out), width, `${JSON.stringify(text)} at ${width}: ${out}`);
      assert.ok(!hasControls(out), out);
    }
  }
});

Deno.test("table() shrinks the shrinkable columns to the width and keeps numbers right-aligned", () => {
  const lines = table(
    [{ head: "NAME", shrink: 1, min: 4 }, { head: "N", right: true }],
    [["a-very-long-name-indeed", "7"], ["b", "12"]],
    12,
  );
  assert.ok(lines.every((l) => textWidth(l.text) <= 12), lines.map((l) => l.text).join("\n"));
  assert.equal(lines[0].style, "head");
  assert.match(lines[1].text, /^a-very-… {3}7$/);
  assert.match(lines[2].text, /^b {9}12$/);
});

Deno.test("limitRows() ends with `… and N more` only when rows are left out", () => {
  assert.deepEqual(limitRows([1, 2], 2, (n) => [String(n)]), { rows: [["1"], ["2"]], more: null });
  const cut = limitRows([1, 2, 3, 4, 5], 3, (n) => [String(n)]);
  assert.deepEqual(cut.rows, [["1"], ["2"]]);
  assert.equal(cut.more, "… and 3 more");
});

Deno.test("table() leaves out the droppable columns, highest first, when the table is too wide", () => {
  const columns = [
    { head: "NAME", shrink: 1, min: 4 },
    { head: "BYTES", right: true, drop: 1 },
    { head: "DETAIL", drop: 2 },
    { head: "N", right: true },
  ];
  const rows = [["web", "10 KB", "something long", "3"]];
  assert.equal(table(columns, rows, 80)[0].text, "NAME  BYTES  DETAIL          N");
  assert.equal(table(columns, rows, 20)[0].text, "NAME  BYTES  N");
  assert.equal(table(columns, rows, 10)[1].text, "web   3");
});
