/**
 * A live screen writing to stdout that then leaves by the way named in its
 * argument: `exit` (Deno.exit), `reject` (an unhandled rejection) or `throw`
 * (an uncaught error). tests/screen_restore_test.ts reads what it wrote.
 *
 * @module
 */

import { LiveScreen } from "../../lib/ui/screen.ts";

const encoder = new TextEncoder();
const screen = new LiveScreen({
  render: () => [{ text: "drawn" }],
  write: (text) => Deno.stdout.writeSync(encoder.encode(text)),
  size: () => ({ columns: 20, rows: 4 }),
  keyboard: false,
  color: false,
});
screen.start();
screen.note("the last event");
const how = Deno.args[0];
if (how === "exit") Deno.exit(3);
if (how === "reject") Promise.reject(new Error("rejected on purpose"));
if (how === "throw") {
  setTimeout(() => {
    throw new Error("thrown on purpose");
  }, 0);
}
