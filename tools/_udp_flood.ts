// deno-lint-ignore-file no-console -- its output lines are its interface
/**
 * A UDP flood for the bench's udp-flood case and the UDP end-to-end tests:
 * `deno run --no-prompt --allow-net=127.0.0.1 tools/_udp_flood.ts RATE MAX_COUNT MAX_MS`.
 *
 * The flood runs in its own process so it does not share an event loop with
 * the TCP client being measured. It binds a UDP echo target and prints
 * "echo PORT"; then it reads commands on stdin: "port N" (the PFO to flood),
 * "on" (flood with 1,400 B datagrams; prints "on" once 500 have left), "off"
 * (pause; prints "off SENT"). It sends at most `rate` datagrams a second: a
 * generator flat out would take a whole core of this small machine from the
 * processes being measured, and measure the machine instead of portferry.
 * It stops at stdin's end, after `maxCount` datagrams or after `maxMs`,
 * whichever comes first, and prints its totals.
 *
 * @module
 */

import dgram from "node:dgram";
const [rate, maxCount, maxMs] = Deno.args.map(Number);
const started = Date.now();
const echo = dgram.createSocket("udp4");
let echoed = 0;
echo.on("message", (m, r) => {
  echoed++;
  echo.send(m, r.port, r.address, () => {});
});
echo.on("error", () => {});
await new Promise<void>((r) => echo.bind(0, "127.0.0.1", r));
const client = dgram.createSocket("udp4");
let back = 0;
client.on("message", () => {
  back++;
});
client.on("error", () => {});
await new Promise<void>((r) => client.bind(0, "127.0.0.1", r));
console.log("echo " + echo.address().port);
let port = 0, on = false, ended = false, sent = 0, announced = true, onAt = 0, onBase = 0;
let wake = () => {};
const live = () => !ended && sent < maxCount && Date.now() - started < maxMs;
(async () => {
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let rest = "";
  for await (const chunk of lines) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const [cmd, arg] = rest.slice(0, nl).split(" ");
      rest = rest.slice(nl + 1);
      if (cmd === "port") port = Number(arg);
      if (cmd === "on") {
        on = true;
        onAt = Date.now();
        onBase = sent;
        announced = false;
        wake();
      }
      if (cmd === "off") {
        on = false;
        console.log("off " + sent);
      }
    }
  }
  ended = true;
  wake();
})();
const payload = new Uint8Array(1400);
const send = () => new Promise<void>((r) => client.send(payload, port, "127.0.0.1", () => r()));
let onSince = 0;
async function lane() {
  while (live()) {
    if (!on) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
      continue;
    }
    if (sent - onBase >= rate * (Date.now() - onAt) / 1000) {
      await new Promise<void>((r) => setTimeout(r, 1));
      continue;
    }
    sent++;
    await send();
    if (!announced && ++onSince >= 500) {
      announced = true;
      onSince = 0;
      console.log("on");
    }
  }
}
await Promise.all(Array.from({ length: 16 }, lane));
console.log(JSON.stringify({ sent, back, echoed, ms: Date.now() - started }));
client.close();
echo.close();
Deno.exit(0);
