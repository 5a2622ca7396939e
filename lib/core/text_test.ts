import assert from "node:assert/strict";
import { escapeControls, hasControls, printable } from "./text.ts";

/** Every character the escaping must catch, with how it shows. */
const MUST_ESCAPE: readonly [string, string][] = [
  ...Array.from({ length: 0x20 }, (_, i) =>
    [
      String.fromCharCode(i),
      `\\x${i.toString(16).padStart(2, "0")}`,
    ] as [string, string]),
  ...Array.from({ length: 0x21 }, (_, i) => {
    const code = 0x7f + i; // DEL and the C1 controls U+0080..U+009F
    return [String.fromCharCode(code), `\\u00${code.toString(16)}`] as [string, string];
  }),
  ...[0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e].map((c) =>
    [String.fromCharCode(c), `\\u${c.toString(16).padStart(4, "0")}`] as [string, string]
  ),
  ...[0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029].map((c) =>
    [String.fromCharCode(c), `\\u${c.toString(16)}`] as [string, string]
  ),
];

Deno.test("escapeControls() escapes C0, DEL, C1, bidi controls and line and paragraph separators", () => {
  assert.equal(MUST_ESCAPE.length, 32 + 33 + 8 + 6);
  for (const [ch, shown] of MUST_ESCAPE) {
    assert.equal(escapeControls(`a${ch}b`), `a${shown}b`, shown);
    assert.ok(hasControls(`a${ch}b`), shown);
  }
});

Deno.test("escapeControls() leaves ordinary text, other scripts and emoji as they are", () => {
  for (
    const text of [
      "plain text",
      "CORP\\ann@db01 (linux)",
      "José Díaz — ünïcode ✓",
      "שלום עולם",
      "日本語",
      "🚀 rocket",
      '"quoted" = {json}',
      "\u00a0nbsp\u00a0",
    ]
  ) {
    assert.equal(escapeControls(text), text);
    assert.equal(printable(text), text);
    assert.equal(hasControls(text), false, text);
  }
});

Deno.test("escapeControls() output is one line with no raw control left, and escaping twice changes nothing", () => {
  const all = MUST_ESCAPE.map(([ch]) => ch).join("");
  const once = escapeControls(`x${all}y`);
  assert.equal(hasControls(once), false);
  assert.equal(escapeControls(once), once);
});

Deno.test("printable() keeps tab and line feed and escapes the rest", () => {
  assert.equal(
    printable("a\tb\nc\r\x1b[2J\x9b\u202e\u2028"),
    "a\tb\nc\\x0d\\x1b[2J\\u009b\\u202e\\u2028",
  );
});
