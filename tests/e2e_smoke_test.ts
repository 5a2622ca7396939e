import assert from "node:assert/strict";
import { addPfo, echoServer, hostPort, startPair } from "./_harness.ts";

Deno.test("a PFO forwards an echo round trip through Console and Daemon processes", async () => {
  await using pair = await startPair();
  using echo = echoServer();
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const conn = await Deno.connect(hostPort(listen));
  await conn.write(new TextEncoder().encode("ping"));
  await conn.closeWrite();
  const buf = new Uint8Array(16);
  let got = "";
  let n: number | null;
  while ((n = await conn.read(buf)) !== null) got += new TextDecoder().decode(buf.subarray(0, n));
  conn.close();
  assert.equal(got, "ping");
});
