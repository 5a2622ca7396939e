// deno-lint-ignore-file no-console -- the flood test prints its measurements
/**
 * End-to-end tests of UDP PFOs: real `console.ts` and `daemon.ts` processes,
 * PFOs on port 0, `node:dgram` clients and echo targets, all on loopback.
 * Every wait is bounded in count and time; nothing sleeps to synchronize.
 *
 * @module
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  closeQuietly,
  type ConsoleProc,
  hostPort,
  json,
  runCli,
  startPair,
  tcpServer,
  tempDir,
} from "./_harness.ts";

const MiB = 1024 * 1024;

// --- helpers -----------------------------------------------------------------

interface Datagram {
  readonly data: Uint8Array;
  readonly address: string;
  readonly port: number;
}

/**
 * A UDP socket on 127.0.0.1:0 with in-order sends (each send waits for the
 * previous one: unawaited `node:dgram` sends can leave out of order) and a
 * queue of what arrived.
 */
class UdpPeer implements Disposable {
  readonly socket: dgram.Socket;
  readonly port: number;
  #inbox: Datagram[] = [];
  #waiter: (() => void) | null = null;
  #chain: Promise<void> = Promise.resolve();
  received = 0;

  private constructor(socket: dgram.Socket, onMessage?: (d: Datagram, peer: UdpPeer) => void) {
    this.socket = socket;
    this.port = socket.address().port;
    socket.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
      this.received++;
      const d = { data: new Uint8Array(msg), address: rinfo.address, port: rinfo.port };
      if (onMessage) return onMessage(d, this);
      this.#inbox.push(d);
      this.#waiter?.();
    });
  }

  /** Bind 127.0.0.1:0; `onMessage` replaces the inbox (for echo targets). */
  static bind(onMessage?: (d: Datagram, peer: UdpPeer) => void): Promise<UdpPeer> {
    const socket = dgram.createSocket("udp4");
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => {
        socket.removeListener("error", reject);
        socket.on("error", () => {}); // ICMP unreachable and the like: UDP carries on.
        resolve(new UdpPeer(socket, onMessage));
      });
    });
  }

  /** An echo target: every datagram goes back to its sender, in order. */
  static echo(): Promise<UdpPeer> {
    return UdpPeer.bind((d, peer) => void peer.send(d.data, d.port, d.address));
  }

  /** Send one datagram after every earlier one has left. */
  send(data: Uint8Array, port: number, address = "127.0.0.1"): Promise<void> {
    this.#chain = this.#chain.then(() =>
      new Promise<void>((resolve, reject) => {
        this.socket.send(data, port, address, (err) => err ? reject(err) : resolve());
      })
    );
    return this.#chain;
  }

  /** The next datagram that arrived, failing after `ms`. */
  async recv(ms = 5_000): Promise<Datagram> {
    const until = Date.now() + ms;
    while (this.#inbox.length === 0) {
      const left = until - Date.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms waiting for a datagram`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#waiter = null;
    }
    return this.#inbox.shift()!;
  }

  /** Datagrams that arrived and were not taken yet. */
  get pending(): number {
    return this.#inbox.length;
  }

  [Symbol.dispose](): void {
    try {
      this.socket.close();
    } catch {
      // Closed already.
    }
  }
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65_536)));
  }
  return out;
}

interface UdpJson {
  flows: number;
  flowsTotal: number;
  datagramsIn: number;
  datagramsOut: number;
  drops: number;
  dropped: Record<string, number>;
}

interface PfoJson {
  name: string;
  proto: string;
  state: string;
  bound: string[];
  bytesIn: number;
  bytesOut: number;
  udp?: UdpJson;
}

async function pfoStatus(consoleProc: ConsoleProc, name: string): Promise<PfoJson> {
  const r = await consoleProc.cli("status", "--json");
  assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
  const pfo = (JSON.parse(r.stdout).pfos as PfoJson[]).find((p) => p.name === name);
  assert.ok(pfo, `PFO "${name}" missing from status --json`);
  return pfo;
}

/** `pfo add NAME --udp --listen 127.0.0.1:0 --target 127.0.0.1:PORT`; returns the bound port. */
async function addUdpPfo(consoleProc: ConsoleProc, name: string, targetPort: number) {
  const r = await consoleProc.cli(
    "pfo",
    "add",
    name,
    "--udp",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${targetPort}`,
  );
  assert.equal(r.code, 0, `pfo add --udp failed: ${r.stderr}${r.stdout}`);
  const pfo = await pfoStatus(consoleProc, name);
  assert.equal(pfo.proto, "udp");
  assert.equal(pfo.state, "listening");
  return hostPort(pfo.bound[0]).port;
}

/** Send `data` through the PFO and return the one datagram that comes back. */
async function roundTrip(client: UdpPeer, port: number, data: Uint8Array): Promise<Uint8Array> {
  await client.send(data, port);
  return (await client.recv()).data;
}

// --- tests -------------------------------------------------------------------

Deno.test("a UDP PFO echoes 1 B, 1,400 B, 9,000 B and 65,507 B datagrams whole, and status counts them", async () => {
  await using pair = await startPair();
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "dns", echo.port);

  const sizes = [1, 1_400, 9_000, 65_507];
  for (const size of sizes) {
    const data = randomBytes(size);
    const back = await roundTrip(client, port, data);
    // One datagram of the same length: a split or truncation would show here.
    assert.equal(back.length, size, `a ${size} B datagram came back as ${back.length} B`);
    assert.deepEqual(back, data, `a ${size} B datagram came back changed`);
  }
  assert.equal(client.pending, 0, "more datagrams came back than were sent");
  assert.equal(echo.received, sizes.length, "the target got more datagrams than were sent");

  const total = sizes.reduce((a, b) => a + b, 0);
  const pfo = await pfoStatus(pair.console, "dns");
  assert.deepEqual(
    {
      flows: pfo.udp?.flows,
      datagramsOut: pfo.udp?.datagramsOut,
      datagramsIn: pfo.udp?.datagramsIn,
      drops: pfo.udp?.drops,
      bytesOut: pfo.bytesOut,
      bytesIn: pfo.bytesIn,
    },
    {
      flows: 1,
      datagramsOut: 4,
      datagramsIn: 4,
      drops: 0,
      bytesOut: total,
      bytesIn: total,
    },
  );
  await pair.daemon.out.waitFor(/UDP flow opened .*target=127\.0\.0\.1:\d+/);
});

Deno.test("a UDP PFO keeps a burst of 200 numbered datagrams in order", async () => {
  const COUNT = 200;
  await using pair = await startPair();
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "burst", echo.port);
  // Open the flow first: the burst then measures the path, not the open.
  assert.deepEqual(await roundTrip(client, port, new Uint8Array([0xff])), new Uint8Array([0xff]));

  const sends: Promise<void>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const data = new Uint8Array(100);
    new DataView(data.buffer).setUint32(0, i);
    sends.push(client.send(data, port));
  }
  await Promise.all(sends);
  const order: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    const { data } = await client.recv();
    order.push(new DataView(data.buffer, data.byteOffset).getUint32(0));
  }
  assert.deepEqual(order, Array.from({ length: COUNT }, (_, i) => i));
  // The echo answers in arrival order, so this order is the target's too.
  const pfo = await pfoStatus(pair.console, "burst");
  assert.equal(pfo.udp?.drops, 0);
  assert.equal(pfo.udp?.datagramsOut, COUNT + 1);
});

Deno.test("a UDP PFO gives each of two clients only its own replies", async () => {
  const ROUNDS = 50;
  await using pair = await startPair();
  using echo = await UdpPeer.echo();
  using a = await UdpPeer.bind();
  using b = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "two", echo.port);

  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  for (let i = 0; i < ROUNDS; i++) {
    await Promise.all([
      a.send(encoder.encode(`a-${i}`), port),
      b.send(encoder.encode(`b-${i}`), port),
    ]);
  }
  for (const [peer, tag] of [[a, "a"], [b, "b"]] as const) {
    const got: string[] = [];
    for (let i = 0; i < ROUNDS; i++) got.push(decoder.decode((await peer.recv()).data));
    assert.deepEqual(got, Array.from({ length: ROUNDS }, (_, i) => `${tag}-${i}`));
  }
  assert.equal(a.pending + b.pending, 0, "a client got more replies than it asked for");
  const pfo = await pfoStatus(pair.console, "two");
  assert.equal(pfo.udp?.flows, 2);
  assert.equal(pfo.udp?.flowsTotal, 2);
});

Deno.test("a UDP flow idle for udpIdleMs closes on both sides and status drops to 0 flows", async () => {
  const IDLE_MS = 300;
  await using pair = await startPair({ console: { settings: `udpIdleMs: ${IDLE_MS}\n` } });
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "idle", echo.port);

  const consoleMark = pair.console.out.mark;
  const daemonMark = pair.daemon.out.mark;
  assert.deepEqual(
    await roundTrip(client, port, new Uint8Array([1, 2, 3])),
    new Uint8Array([1, 2, 3]),
  );
  const lastActive = Date.now();
  const during = await pfoStatus(pair.console, "idle");
  // The status call takes a few hundred ms itself, so the flow may already be gone.
  assert.ok((during.udp?.flows ?? -1) <= 1);

  await pair.console.out.waitFor(/UDP flow closed .*pfo=idle.* reason=idle/, {
    from: consoleMark,
    ms: 10_000,
  });
  const closedAfter = Date.now() - lastActive;
  assert.ok(closedAfter >= IDLE_MS - 50, `the flow closed after only ${closedAfter} ms`);
  await pair.daemon.out.waitFor(/UDP flow closed .*pfo=idle/, { from: daemonMark, ms: 10_000 });
  const after = await pfoStatus(pair.console, "idle");
  assert.equal(after.udp?.flows, 0);
  assert.equal(after.udp?.flowsTotal, 1);

  // A new datagram from the same client opens a new flow.
  assert.deepEqual(await roundTrip(client, port, new Uint8Array([4])), new Uint8Array([4]));
  assert.equal((await pfoStatus(pair.console, "idle")).udp?.flowsTotal, 2);
});

/** Where tools/_udp_flood.ts is, and the folder to run it from. */
const ROOT = new URL("../", import.meta.url);

/** The flood process: `command()` sends a line, `line(re)` waits for one printed. */
function startFlood(rate: number, maxCount: number, maxMs: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-net=127.0.0.1",
      "tools/_udp_flood.ts",
      String(rate),
      String(maxCount),
      String(maxMs),
    ],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  let out = "";
  return {
    async command(text: string): Promise<void> {
      await writer.write(new TextEncoder().encode(text + "\n"));
    },
    /** The first capture of the next line matching `re` (earlier lines are consumed). */
    async line(re: RegExp, ms = 15_000): Promise<string> {
      const until = Date.now() + ms;
      for (let reads = 0; reads < 1_000 && Date.now() < until; reads++) {
        let nl: number;
        while ((nl = out.indexOf("\n")) >= 0) {
          const line = out.slice(0, nl);
          out = out.slice(nl + 1);
          const m = line.match(re);
          if (m) return m[1];
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const next = await Promise.race([
          reader.read(),
          new Promise<null>((r) => (timer = setTimeout(() => r(null), until - Date.now()))),
        ]).finally(() => clearTimeout(timer));
        if (next === null || next.done) break;
        out += next.value;
      }
      throw new Error(`the flood process did not print ${re} within ${ms} ms; left: ${out}`);
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await writer.close().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await reader.cancel().catch(() => {});
      await child.status;
    },
  };
}

/** Seconds one TCP upload of `size` bytes through `listen` takes, until the sink acknowledges it. */
async function tcpUpload(listen: string, size: number): Promise<number> {
  const chunk = randomBytes(256 * 1024);
  const conn = await Deno.connect(hostPort(listen));
  // A stalled transfer fails after 60 s: closing the socket ends its writes and reads.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, 60_000);
  try {
    const started = performance.now();
    const reading = (async () => {
      const buf = new Uint8Array(8);
      let got = 0;
      while (got < 8) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) throw new Error(`the sink closed after ${got} of 8 ack bytes`);
        got += n;
      }
      return Number(new DataView(buf.buffer).getBigUint64(0));
    })();
    reading.catch(() => {}); // awaited below; a write failure must not leave it unhandled
    for (let sent = 0; sent < size;) {
      sent += await conn.write(chunk.subarray(0, Math.min(chunk.length, size - sent)));
    }
    await conn.closeWrite();
    const acked = await reading;
    assert.equal(acked, size, "the sink got a different byte count");
    return (performance.now() - started) / 1000;
  } catch (err) {
    if (timedOut) throw new Error(`the ${size} B upload did not finish within 60 s`);
    throw err;
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

Deno.test("a TCP transfer on one PFO completes under a UDP flood on another, and the Console counts the flood", async () => {
  // How fast TCP goes under the flood is a bench figure (`deno task bench
  // --workloads udp-flood`), not a unit test's: here, only that it completes.
  const SIZE = 16 * MiB;
  await using pair = await startPair();
  // TCP sink: counts bytes until EOF, answers with the count.
  using sink = tcpServer(async (conn) => {
    const buf = new Uint8Array(256 * 1024);
    let total = 0;
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) total += n;
    const ack = new Uint8Array(8);
    new DataView(ack.buffer).setBigUint64(0, BigInt(total));
    await conn.write(ack);
  });
  const r = await pair.console.cli(
    "pfo",
    "add",
    "bulk",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${sink.port}`,
  );
  assert.equal(r.code, 0, r.stderr);
  const listen = (await pfoStatus(pair.console, "bulk")).bound[0];

  // Bounded: at most 3 million datagrams and 120 s.
  await using flood = startFlood(20_000, 3_000_000, 120_000);
  const udpPort = await addUdpPfo(pair.console, "flood", Number(await flood.line(/^echo (\d+)$/)));
  await flood.command(`port ${udpPort}`);
  const before = (await pfoStatus(pair.console, "flood")).udp!;
  await flood.command("on");
  await flood.line(/^(on)$/);
  await tcpUpload(listen, SIZE); // fails after 60 s, or on a short count
  const after = (await pfoStatus(pair.console, "flood")).udp!;
  await flood.command("off");
  const sent = Number(await flood.line(/^off (\d+)$/));
  const counted = after.datagramsOut + after.drops - before.datagramsOut - before.drops;
  console.log(`the flood sent ${sent} datagrams; the Console counted ${counted} of them`);
  // The flood was real: the flood process announces "on" once 500 have left,
  // and the Console counted datagrams forwarded or dropped while TCP ran.
  assert.ok(sent >= 500, `the flood sent only ${sent} datagrams`);
  assert.ok(counted >= 100, `only ${counted} flood datagrams reached the Console`);
  assert.ok(after.flowsTotal >= 1, JSON.stringify(after));
});

Deno.test("`pfo add --udp` without --target is bad usage (exit 2)", async () => {
  const dir = await tempDir("pf-udp-usage-");
  const r = await runCli("console.ts", [
    "--config",
    `${dir}/portferry-console.yaml`,
    "pfo",
    "add",
    "u",
    "--udp",
    "--listen",
    "5353",
  ]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--target/);
});

// --- counters: the Daemon's bytes and the Console's connections list ----------

interface ConnectionJson {
  id: number;
  pfo: string;
  proto: string;
  bytesIn: number;
  bytesOut: number;
}

Deno.test("a UDP flow counts its bytes on the Daemon and both sides list it under the same id", async () => {
  await using pair = await startPair();
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "count", echo.port);
  const SIZE = 1_000;
  const COUNT = 60;
  for (let i = 0; i < COUNT; i++) {
    assert.equal((await roundTrip(client, port, randomBytes(SIZE))).length, SIZE);
  }
  const daemonRows = json<ConnectionJson[]>(await pair.daemon.cli("connections", "list", "--json"));
  const consoleRows = json<ConnectionJson[]>(
    await pair.console.cli("connections", "list", "--json"),
  );
  assert.equal(daemonRows.length, 1, JSON.stringify(daemonRows));
  assert.deepEqual(
    { proto: daemonRows[0].proto, bytesIn: daemonRows[0].bytesIn, out: daemonRows[0].bytesOut },
    { proto: "udp", bytesIn: SIZE * COUNT, out: SIZE * COUNT },
  );
  assert.deepEqual(
    consoleRows.map((r) => [r.id, r.pfo, r.proto, r.bytesOut, r.bytesIn]),
    [[daemonRows[0].id, "count", "udp", SIZE * COUNT, SIZE * COUNT]],
  );
  // The id works for `connections kill` on the Console, and the Daemon logs the flow's bytes.
  const mark = pair.daemon.out.mark;
  assert.equal((await pair.console.cli("connections", "kill", String(consoleRows[0].id))).code, 0);
  await pair.daemon.out.waitFor(
    new RegExp(`UDP flow closed .*bytesIn=${SIZE * COUNT} bytesOut=${SIZE * COUNT}`),
    { from: mark },
  );
});

// --- drop counters (issue 13) -------------------------------------------------

Deno.test("status --json counts datagrams a refused flow held as openFailed drops, per PFO and in total, on the Console", async () => {
  // The Daemon allows only 127.0.0.10: a flow to 127.0.0.1 is refused, and
  // what the Console held for it while it opened is dropped and counted.
  await using pair = await startPair({ daemon: { args: ["--allow", "127.0.0.10"] } });
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "refused", echo.port);
  const SENT = 5;
  for (let i = 0; i < SENT; i++) await client.send(new Uint8Array([i]), port);
  let status: { udpDrops: Record<string, number>; pfos: PfoJson[] } | undefined;
  for (let i = 0; i < 100; i++) {
    const r = await pair.console.cli("status", "--json");
    status = JSON.parse(r.stdout);
    if (status?.udpDrops.total === SENT) break;
  }
  assert.ok(status);
  const pfo = status.pfos.find((p) => p.name === "refused");
  assert.equal(pfo?.udp?.drops, SENT, JSON.stringify(pfo?.udp));
  assert.equal(pfo?.udp?.dropped.openFailed, SENT, JSON.stringify(pfo?.udp));
  assert.equal(status.udpDrops.total, SENT, JSON.stringify(status.udpDrops));
  assert.equal(status.udpDrops.openFailed, SENT);
  assert.equal(echo.received, 0, "a datagram reached the refused target");
  const daemon = JSON.parse((await pair.daemon.cli("status", "--json")).stdout);
  assert.deepEqual(
    Object.keys(daemon.udpDrops).sort(),
    [
      "flowLimit",
      "linkBusy",
      "openFailed",
      "opening",
      "sendFailed",
      "sendQueue",
      "tcpBusy",
      "total",
    ],
  );
  assert.equal(daemon.udpDrops.total, 0, "the Daemon never had the flow");
});

Deno.test("a burst of 200 numbered datagrams to a fresh flow all arrive in order: the Console holds them while the Daemon opens", async () => {
  const COUNT = 200;
  await using pair = await startPair();
  using echo = await UdpPeer.echo();
  using client = await UdpPeer.bind();
  const port = await addUdpPfo(pair.console, "fresh", echo.port);
  const mark = pair.console.out.mark;
  const sends: Promise<void>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const data = new Uint8Array(100);
    new DataView(data.buffer).setUint32(0, i);
    sends.push(client.send(data, port));
  }
  await Promise.all(sends);
  const order: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    const { data } = await client.recv();
    order.push(new DataView(data.buffer, data.byteOffset).getUint32(0));
  }
  assert.deepEqual(order, Array.from({ length: COUNT }, (_, i) => i));
  const [line] = await pair.console.out.waitFor(/UDP flow opened .*pfo=fresh.* held=(\d+)/, {
    from: mark,
  });
  assert.match(line, / openMs=\d+ held=\d+/);
  const pfo = await pfoStatus(pair.console, "fresh");
  assert.equal(pfo.udp?.drops, 0, JSON.stringify(pfo.udp));
  assert.equal(pfo.udp?.datagramsOut, COUNT);
  assert.equal(echo.received, COUNT);
});
