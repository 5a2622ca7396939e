/**
 * The live screen gives the terminal back however the process ends: a
 * real process (tests/testdata/screen_exit.ts) leaving by Deno.exit, an
 * unhandled rejection and an uncaught error.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ENTER_SCREEN, LEAVE_SCREEN } from "../lib/ui/screen.ts";

const decoder = new TextDecoder();
const SCRIPT = new URL("./testdata/screen_exit.ts", import.meta.url).pathname;

for (
  const [how, code, error] of [
    ["exit", 3, null],
    ["reject", 1, /rejected on purpose/],
    ["throw", 1, /thrown on purpose/],
  ] as const
) {
  Deno.test(`LiveScreen restores the terminal when the process ends by ${how}`, async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", SCRIPT, how],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = decoder.decode(out.stdout);
    assert.equal(out.code, code);
    assert.ok(stdout.startsWith(ENTER_SCREEN), JSON.stringify(stdout.slice(0, 40)));
    assert.ok(stdout.includes("drawn"));
    // Left once, last, followed by the last events as plain lines.
    assert.equal(stdout.split(LEAVE_SCREEN).length, 2);
    assert.match(stdout.slice(stdout.indexOf(LEAVE_SCREEN)), /the last event\n$/);
    if (error) assert.match(decoder.decode(out.stderr), error);
  });
}
