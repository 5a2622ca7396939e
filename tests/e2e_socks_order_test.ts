/**
 * End-to-end: a SOCKS5 client always reads its reply before any byte of a
 * target that speaks first (a banner on accept), over real processes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { addPfo, hostPort, startPair, statusOf, tcpServer, within } from "./_harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Rounds of 50 concurrent connections: the race showed in about 1 connection in 50. */
const ROUNDS = 4;
const BANNER = "220 hello from a target that speaks first\r\n";

/** Everything `conn` sends until it closes, at most `max` bytes. */
async function readToEnd(conn: Deno.Conn, max = 4096): Promise<Uint8Array> {
  const buf = new Uint8Array(max + 1);
  let got = 0;
  while (true) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) return buf.subarray(0, got);
    got += n;
    if (got > max) throw new Error(`more than ${max} bytes arrived`);
  }
}

/** Greeting and CONNECT in one write (no auth), then everything until the target closes. */
async function socksConnectAndRead(proxyPort: number, targetPort: number): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    await conn.write(
      new Uint8Array([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, targetPort >> 8, targetPort & 0xff]),
    );
    return await readToEnd(conn);
  } finally {
    conn.close();
  }
}

Deno.test("a SOCKS client reads its reply before the first bytes of a target that speaks first, on 4 rounds of 50 connections", async () => {
  await using target = tcpServer(async (conn) => {
    await conn.write(encoder.encode(BANNER));
    await conn.closeWrite();
    await conn.read(new Uint8Array(16)); // until the client closes
  });
  await using pair = await startPair();
  const added = await pair.console.cli("pfo", "add", "s", "--socks", "--listen", "127.0.0.1:0");
  assert.equal(added.code, 0, added.stderr);
  const pfo = (await statusOf(pair.console)).pfos.find((p) => p.name === "s")!;
  const proxyPort = hostPort(pfo.bound[0]).port;

  // A busy stream alongside keeps the Daemon's link writer queued, so an OPEN_OK and the
  // banner behind it often travel in one write and reach the Console in one read.
  await using source = tcpServer(async (conn) => {
    const chunk = new Uint8Array(64 * 1024);
    while (true) await conn.write(chunk); // until the client closes
  });
  const bulk = await Deno.connect(
    hostPort(await addPfo(pair.console, "bulk", `127.0.0.1:${source.port}`)),
  );
  const draining = (async () => {
    const buf = new Uint8Array(256 * 1024);
    while ((await bulk.read(buf).catch(() => null)) !== null);
  })();
  let results: Uint8Array[];
  try {
    results = [];
    for (let round = 0; round < ROUNDS; round++) {
      results.push(
        ...await within(
          Promise.all(
            Array.from({ length: 50 }, () => socksConnectAndRead(proxyPort, target.port)),
          ),
          30_000,
          "50 SOCKS connections to a target that speaks first",
        ),
      );
    }
  } finally {
    bulk.close();
    await draining;
  }
  const wrong: string[] = [];
  for (const got of results) {
    // Method choice [5, 0], then a 10-byte IPv4 reply [5, 0, 0, 1, addr, port], then the banner.
    const head = Array.from(got.subarray(0, 6));
    const rest = decoder.decode(got.subarray(12));
    if (head.join() !== "5,0,5,0,0,1" || rest !== BANNER) {
      wrong.push(JSON.stringify(decoder.decode(got)));
    }
  }
  assert.equal(results.length, ROUNDS * 50);
  assert.deepEqual(
    wrong,
    [],
    `${wrong.length} of ${results.length} clients got bytes out of order`,
  );
});
