import assert from "node:assert/strict";
import { createLogger, type LogFormat, LogThrottle } from "./log.ts";

const HOSTILE = "\x1b[2J\r\n2026-01-01T00:00:00.000Z INFO  fake\u202e\x9b31m\u2028\u2029\x7f";
// deno-lint-ignore no-control-regex
const RAW = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

function record(format: LogFormat, msg: string, fields: Record<string, string>): string {
  const lines: string[] = [];
  createLogger({ format, sink: (line) => lines.push(line) }).info(msg, fields);
  assert.equal(lines.length, 1);
  return lines[0];
}

Deno.test("createLogger() text format quotes and escapes a value with controls, bidi or separators", () => {
  const line = record("text", "session ended", { reason: HOSTILE, host: "db01" });
  assert.doesNotMatch(line, RAW);
  assert.match(
    line,
    / session ended {2}reason="\\u001b\[2J\\r\\n2026-01-01T00:00:00.000Z INFO {2}fake\\u202e\\u009b31m\\u2028\\u2029\\u007f" host=db01$/,
  );
  // Each character alone is enough to get a value quoted.
  for (const ch of ["\x1b", "\x9b", "\u202e", "\u2066", "\u2028", "\x7f", "\u061c"]) {
    const one = record("text", "m", { v: `a${ch}b` });
    assert.doesNotMatch(one, RAW);
    assert.match(one, /v="a\\u[0-9a-f]{4}b"$/, JSON.stringify(ch));
  }
});

Deno.test("createLogger() text format escapes the message itself", () => {
  const line = record("text", `peer said ${HOSTILE}`, {});
  assert.doesNotMatch(line, RAW);
  assert.match(line, /INFO {2}peer said \\x1b\[2J\\x0d\\x0a2026/);
});

Deno.test("createLogger() text format keeps a plain word bare and quotes backslashes", () => {
  assert.match(record("text", "m", { user: "ann", host: "db01" }), /user=ann host=db01$/);
  assert.match(record("text", "m", { user: "CORP\\ann" }), /user="CORP\\\\ann"$/);
});

Deno.test("createLogger() JSON format escapes DEL, C1, bidi and separators that JSON.stringify leaves raw", () => {
  const line = record("json", `msg ${HOSTILE}`, { reason: HOSTILE });
  assert.doesNotMatch(line, RAW);
  const parsed = JSON.parse(line);
  assert.equal(parsed.reason, HOSTILE);
  assert.equal(parsed.msg, `msg ${HOSTILE}`);
});

Deno.test("LogThrottle.hit() opens at the first hit, then stays shut within the interval; each gate is its own", () => {
  const gate = new LogThrottle();
  assert.equal(gate.hit(), 1);
  assert.deepEqual([gate.hit(), gate.hit(), gate.hit()], [0, 0, 0]);
  assert.equal(new LogThrottle().hit(), 1);
});
