/**
 * End-to-end tests of the TCP data path: real `console.ts` and `daemon.ts`
 * processes, PFOs on port 0, targets and clients in this process, all on
 * loopback. Every wait is bounded; nothing sleeps to synchronize.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  closeQuietly,
  type ConsoleProc,
  hostPort,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  within as deadline,
} from "./_harness.ts";

const MiB = 1024 * 1024;

// --- helpers -----------------------------------------------------------------

/** Fill `n` bytes with cryptographically random (so incompressible, unpatterned) data. */
function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65_536) {
    crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65_536)));
  }
  return out;
}

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Write all of `data` in chunks. */
async function writeAll(conn: Deno.Conn, data: Uint8Array, chunk = 256 * 1024): Promise<void> {
  for (let at = 0; at < data.length;) {
    at += await conn.write(data.subarray(at, Math.min(data.length, at + chunk)));
  }
}

/** Read until EOF; fails if more than `max` bytes arrive. */
async function readToEnd(conn: Deno.Conn, max: number): Promise<Uint8Array<ArrayBuffer>> {
  const buf = new Uint8Array(max + 1);
  let got = 0;
  while (true) {
    const n = await conn.read(buf.subarray(got, Math.min(buf.length, got + 256 * 1024)));
    if (n === null) return buf.subarray(0, got);
    got += n;
    if (got > max) throw new Error(`Cannot read: more than the ${max} bytes expected arrived`);
  }
}

/** Read exactly `n` bytes (fails at an early EOF). */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array<ArrayBuffer>> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error(`Cannot read ${n} bytes: EOF after ${got}`);
    got += r;
  }
  return buf;
}

/**
 * A target server on 127.0.0.1:0 that keeps track of its connections and,
 * on dispose, closes them and waits for every handler (so no op outlives
 * the test).
 */
function targetServer(
  handler: (conn: Deno.TcpConn) => Promise<void>,
): { port: number; errors: unknown[]; accepted: () => number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const handlers = new Set<Promise<void>>();
  const errors: unknown[] = [];
  let accepted = 0;
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        conns.add(conn);
        const h: Promise<void> = handler(conn)
          .catch((err) => void errors.push(err))
          .finally(() => {
            conns.delete(conn);
            handlers.delete(h);
            closeQuietly(conn);
          });
        handlers.add(h);
      }
    } catch {
      // Listener closed.
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    errors,
    accepted: () => accepted,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await loop;
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(handlers);
    },
  };
}

interface PfoJson {
  name: string;
  state: string;
  error: string | null;
  bound: string[];
  connections: number;
  connectionsTotal: number;
  connectionsRefused: number;
  connectionsFailed: number;
  bytesIn: number;
  bytesOut: number;
}

interface StatusJson {
  session: { state: string };
  pfos: PfoJson[];
}

async function status(consoleProc: ConsoleProc): Promise<StatusJson> {
  const r = await consoleProc.cli("status", "--json");
  assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function pfoStatus(consoleProc: ConsoleProc, name: string): Promise<PfoJson> {
  const pfo = (await status(consoleProc)).pfos.find((p) => p.name === name);
  assert.ok(pfo, `PFO "${name}" missing from status --json`);
  return pfo;
}

/** One echo round trip of `size` random bytes through `listen`. */
async function echoRoundTrip(listen: string, size = 64 * 1024): Promise<void> {
  const data = randomBytes(size);
  const conn = await Deno.connect(hostPort(listen));
  try {
    const [, back] = await deadline(
      Promise.all([
        writeAll(conn, data).then(() => conn.closeWrite()),
        readToEnd(conn, size),
      ]),
      15_000,
      `echo round trip through ${listen}`,
    );
    assert.equal(back.length, size);
    assert.ok(back.every((b, i) => b === data[i]), "echoed bytes differ");
  } finally {
    closeQuietly(conn);
  }
}

/** Echo until EOF, then half-close. */
async function echo(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  let n: number | null;
  while ((n = await conn.read(buf)) !== null) await writeAll(conn, buf.subarray(0, n));
  await conn.closeWrite();
}

/** Whether a client's read ends (EOF or an error) within `ms`; returns how it ended. */
async function readEnds(conn: Deno.Conn, ms: number): Promise<"eof" | "error"> {
  const buf = new Uint8Array(1024);
  return await deadline(
    (async () => {
      try {
        const n = await conn.read(buf);
        assert.equal(n, null, `expected the connection closed, got ${n} bytes`);
        return "eof" as const;
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        return "error" as const;
      }
    })(),
    ms,
    "the client's connection was not closed",
  );
}

// --- tests -------------------------------------------------------------------

Deno.test("a PFO carries 64 MiB each way at once with equal SHA-256 on both ends", async () => {
  const SIZE = 64 * MiB;
  const fromClient = randomBytes(SIZE);
  const fromTarget = randomBytes(SIZE);
  let targetGot: Promise<Uint8Array<ArrayBuffer>> | undefined;
  await using target = targetServer((conn) => {
    // Send our own 64 MiB while reading the client's, both at once.
    const received = readToEnd(conn, SIZE);
    targetGot = received;
    return Promise.all([
      received,
      writeAll(conn, fromTarget).then(() => conn.closeWrite()),
    ]).then(() => {});
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "bulk", `127.0.0.1:${target.port}`);

  const conn = await Deno.connect(hostPort(listen));
  try {
    const started = Date.now();
    const [, clientGot] = await deadline(
      Promise.all([
        writeAll(conn, fromClient).then(() => conn.closeWrite()),
        readToEnd(conn, SIZE),
      ]),
      45_000,
      "64 MiB each way",
    );
    const ms = Date.now() - started;
    assert.ok(targetGot, "the target never saw a connection");
    const got = await deadline(targetGot, 10_000, "the target's read");
    assert.equal(clientGot.length, SIZE, "bytes the client received");
    assert.equal(got.length, SIZE, "bytes the target received");
    assert.equal(await sha256(clientGot), await sha256(fromTarget), "target → client digest");
    assert.equal(await sha256(got), await sha256(fromClient), "client → target digest");
    assert.deepEqual(target.errors, []);
    // deno-lint-ignore no-console -- the measured rate, for the record
    console.log(`128 MiB through the PFO in ${ms} ms (${(128 * 1000 / ms).toFixed(0)} MiB/s)`);
  } finally {
    closeQuietly(conn);
  }
  // Both programs account for every byte once the stream ends.
  await pair.console.out.waitFor(
    new RegExp(`connection closed .*pfo=bulk .*bytesOut=${SIZE} bytesIn=${SIZE}`),
  );
  await pair.daemon.out.waitFor(
    new RegExp(`connection closed .*pfo=bulk .*bytesIn=${SIZE} bytesOut=${SIZE}`),
  );
  const pfo = await pfoStatus(pair.console, "bulk");
  assert.equal(pfo.bytesOut, SIZE);
  assert.equal(pfo.bytesIn, SIZE);
});

Deno.test("a PFO carries 100 concurrent connections, each with its own data intact", async () => {
  const COUNT = 100;
  await using target = targetServer(echo);
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "many", `127.0.0.1:${target.port}`);

  const results = await deadline(
    Promise.all(Array.from({ length: COUNT }, async (_, i) => {
      // Different sizes, different bytes, and the index stamped in front.
      const size = 16 * 1024 + i * 1531;
      const data = randomBytes(size);
      new DataView(data.buffer).setUint32(0, i);
      const conn = await Deno.connect(hostPort(listen));
      try {
        const [, back] = await Promise.all([
          writeAll(conn, data, 8 * 1024).then(() => conn.closeWrite()),
          readToEnd(conn, size),
        ]);
        return { i, ok: back.length === size && (await sha256(back)) === (await sha256(data)) };
      } finally {
        closeQuietly(conn);
      }
    })),
    40_000,
    `${COUNT} concurrent connections`,
  );
  assert.deepEqual(results.filter((r) => !r.ok).map((r) => r.i), []);
  assert.equal(target.accepted(), COUNT);
  assert.deepEqual(target.errors, []);
  const pfo = await pfoStatus(pair.console, "many");
  assert.equal(pfo.connectionsTotal, COUNT);
  assert.equal(pfo.connectionsFailed, 0);
});

Deno.test("a PFO carries half-close: the client shuts its write side and still reads the whole reply", async () => {
  const REQUEST = 300 * 1024;
  const REPLY = 2 * MiB;
  const request = randomBytes(REQUEST);
  const reply = randomBytes(REPLY);
  await using target = targetServer(async (conn) => {
    // Reply only after the client's EOF, so the reply travels on a half-closed stream.
    const got = await readToEnd(conn, REQUEST);
    assert.equal(await sha256(got), await sha256(request), "request digest at the target");
    await writeAll(conn, reply);
    await conn.closeWrite();
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "half", `127.0.0.1:${target.port}`);

  const conn = await Deno.connect(hostPort(listen));
  try {
    await writeAll(conn, request);
    await conn.closeWrite();
    const back = await deadline(readToEnd(conn, REPLY), 20_000, "the reply after half-close");
    assert.equal(back.length, REPLY);
    assert.equal(await sha256(back), await sha256(reply));
  } finally {
    closeQuietly(conn);
  }
  assert.deepEqual(target.errors, []);
  await pair.console.out.waitFor(
    new RegExp(`connection closed .*pfo=half .*bytesOut=${REQUEST} bytesIn=${REPLY}`),
  );
});

Deno.test("a PFO carries half-close from the target: it shuts its write side first and still receives", async () => {
  const GREETING = 1 * MiB;
  const UPLOAD = 1 * MiB;
  const greeting = randomBytes(GREETING);
  const upload = randomBytes(UPLOAD);
  const targetGot = Promise.withResolvers<Uint8Array<ArrayBuffer>>();
  await using target = targetServer(async (conn) => {
    await writeAll(conn, greeting);
    await conn.closeWrite();
    targetGot.resolve(await readToEnd(conn, UPLOAD));
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "serverfirst", `127.0.0.1:${target.port}`);

  const conn = await Deno.connect(hostPort(listen));
  try {
    // The client sees the target's EOF before it sends a byte, then uploads.
    const got = await deadline(readToEnd(conn, GREETING), 15_000, "the greeting");
    assert.equal(await sha256(got), await sha256(greeting));
    await writeAll(conn, upload);
    await conn.closeWrite();
    const uploaded = await deadline(targetGot.promise, 15_000, "the upload after the target's EOF");
    assert.equal(uploaded.length, UPLOAD);
    assert.equal(await sha256(uploaded), await sha256(upload));
    assert.equal(await readEnds(conn, 5_000), "eof");
  } finally {
    closeQuietly(conn);
  }
  assert.deepEqual(target.errors, []);
});

Deno.test("a client that goes away mid-transfer ends the target's connection too", async () => {
  const chunk = randomBytes(64 * 1024);
  const targetEnded = Promise.withResolvers<number>();
  await using target = targetServer(async (conn) => {
    // Stream until the connection breaks, then report when.
    try {
      while (true) await writeAll(conn, chunk);
    } catch {
      targetEnded.resolve(performance.now());
    }
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "abandon", `127.0.0.1:${target.port}`);

  const conn = await Deno.connect(hostPort(listen));
  await deadline(readExactly(conn, 1 * MiB), 15_000, "the first MiB");
  const closedAt = performance.now();
  conn.close(); // unread bytes pending: the kernel resets the connection
  const endedAt = await deadline(targetEnded.promise, 5_000, "the target's connection ending");
  assert.ok(endedAt - closedAt < 5_000);
  // Both sides forget the connection: nothing is left half-open.
  await pair.console.out.waitFor(/connection closed .*pfo=abandon /);
  await pair.daemon.out.waitFor(/connection closed .*pfo=abandon /);
  assert.equal((await pfoStatus(pair.console, "abandon")).connections, 0);
  const daemonStatus = await pair.daemon.cli("status", "--json");
  assert.equal(daemonStatus.code, 0, daemonStatus.stderr);
  assert.deepEqual(JSON.parse(daemonStatus.stdout).connections, []);
});

Deno.test("a PFO whose target refuses closes the client promptly and both sides log why", async () => {
  // A port nothing listens on, which no other test can be given meanwhile.
  const deadPort = spareTcpPort();
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "nobody", `127.0.0.1:${deadPort}`);

  const conn = await Deno.connect(hostPort(listen));
  try {
    const started = Date.now();
    // A refused connect on loopback is immediate; 5 s is far below the
    // Console's 20 s open timeout and the Daemon's connect timeout.
    await readEnds(conn, 5_000);
    const ms = Date.now() - started;
    assert.ok(ms < 5_000, `closed after ${ms} ms`);
  } finally {
    closeQuietly(conn);
  }
  const reason = new RegExp(
    `connection failed.* target=127\\.0\\.0\\.1:${deadPort} .*code=refused`,
  );
  for (const side of [pair.console, pair.daemon]) {
    const { input } = await side.out.waitFor(reason);
    assert.match(input ?? "", /reason=.*connection refused/);
  }
  const pfo = await pfoStatus(pair.console, "nobody");
  assert.equal(pfo.connectionsFailed, 1);
  assert.equal(pfo.connections, 0);
});

Deno.test("a second stream on the same session completes while a first one's reader is stalled, and the stalled one resumes intact", async () => {
  // How fast the second stream goes beside the stalled one is a bench figure
  // (`deno task bench --workloads fairness`), not a unit test's.
  const MEASURE = 8 * MiB;
  const chunk = randomBytes(256 * 1024);
  // How long one of the flood's writes must stay blocked before we call the
  // stalled stream's whole path (client socket, Console stream queue, credit,
  // Daemon, target socket) full. A watchdog on a pending write, not a sleep.
  // Without credit flow control the Console would buffer the flood without
  // bound, the target's writes would never block, and the deadline on
  // `stalled` fails the test.
  const STALL_MS = 300;
  const stalled = Promise.withResolvers<number>();

  await using target = targetServer(async (conn) => {
    const mode = await readExactly(conn, 1);
    if (mode[0] === 0x4d /* M: measure */) {
      for (let at = 0; at < MEASURE; at += chunk.length) {
        await writeAll(conn, chunk.subarray(0, Math.min(chunk.length, MEASURE - at)));
      }
      await conn.closeWrite();
      await readToEnd(conn, 0);
      return;
    }
    // F: flood, as fast as the stream lets us, until the connection dies.
    let written = 0;
    try {
      while (true) {
        const timer = setTimeout(() => stalled.resolve(written), STALL_MS);
        try {
          written += await conn.write(chunk);
        } finally {
          clearTimeout(timer);
        }
      }
    } catch {
      // The client closed the connection.
    }
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "fair", `127.0.0.1:${target.port}`);

  const flood = await Deno.connect(hostPort(listen));
  try {
    await writeAll(flood, new Uint8Array([0x46 /* F */]));
    await deadline(stalled.promise, 10_000, "the flood stalling");
    // A session that blocks on the stalled client (head-of-line blocking)
    // never finishes this transfer: the generous deadline fails it.
    const conn = await Deno.connect(hostPort(listen));
    try {
      await writeAll(conn, new Uint8Array([0x4d]));
      await conn.closeWrite();
      const got = await deadline(readToEnd(conn, MEASURE), 60_000, "the second stream's transfer");
      assert.equal(got.length, MEASURE);
      assert.ok(got.subarray(0, chunk.length).every((b, i) => b === chunk[i]), "bytes differ");
    } finally {
      closeQuietly(conn);
    }
    // Stalled, not dead: the stream resumes, intact, when its client reads.
    const resumed = await deadline(readExactly(flood, 4 * chunk.length), 15_000, "resuming");
    for (let at = 0; at < resumed.length; at += chunk.length) {
      assert.ok(
        resumed.subarray(at, at + chunk.length).every((b, i) => b === chunk[i]),
        `the stalled stream's bytes at ${at} differ`,
      );
    }
  } finally {
    closeQuietly(flood);
  }
});

Deno.test("a PFO whose port is taken is refused with the reason while the others and the session keep working", async () => {
  await using target = targetServer(echo);
  await using pair = await startPair();
  const before = await addPfo(pair.console, "before", `127.0.0.1:${target.port}`);
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const takenPort = (taken.addr as Deno.NetAddr).port;
  const takenAddr = `127.0.0.1:${takenPort}`;
  // The reason names the port that is taken and why.
  const reason = new RegExp(`\\b${takenPort}\\b.*address already in use`);

  const r = await pair.console.cli(
    "pfo",
    "add",
    "clash",
    "--listen",
    takenAddr,
    "--target",
    `127.0.0.1:${target.port}`,
  );
  assert.equal(r.code, 1, `pfo add exit code; stderr: ${r.stderr}`);
  assert.match(r.stderr, reason);

  const s = await status(pair.console);
  assert.equal(s.session.state, "established");
  assert.equal(s.pfos.find((p) => p.name === "clash"), undefined, "the refused PFO was kept");
  assert.equal(s.pfos.find((p) => p.name === "before")?.state, "listening");

  // Nor is it in the settings file.
  assert.doesNotMatch(await Deno.readTextFile(pair.console.settingsPath), /clash/);

  // The PFO made before, and one made after, both forward.
  await echoRoundTrip(before);
  const after = await addPfo(pair.console, "after", `127.0.0.1:${target.port}`);
  await echoRoundTrip(after);
  assert.equal((await status(pair.console)).session.state, "established");
  assert.deepEqual(target.errors, []);
});

Deno.test("an enabled PFO without a session accepts connections, closes them at once and counts them", async () => {
  await using target = targetServer(echo);
  await using consoleProc = await startConsole();
  const listen = await addPfo(consoleProc, "early", `127.0.0.1:${target.port}`);
  const TRIES = 3;
  for (let i = 0; i < TRIES; i++) {
    const conn = await Deno.connect(hostPort(listen)); // accepted: no ECONNREFUSED
    try {
      await readEnds(conn, 5_000);
    } finally {
      closeQuietly(conn);
    }
  }
  const s = await status(consoleProc);
  assert.equal(s.session.state, "none");
  const pfo = s.pfos.find((p) => p.name === "early")!;
  assert.equal(pfo.state, "listening");
  assert.equal(pfo.connectionsRefused, TRIES);
  assert.equal(pfo.connectionsTotal, 0);
  assert.equal(target.accepted(), 0, "nothing reached the target");
});

Deno.test("a PFO from the settings file listens at start and forwards once the session is established", async () => {
  await using target = targetServer(echo);
  const settings = [
    "# written before the Console starts",
    "pfos:",
    "  - name: fromfile # a comment to keep",
    '    listen: "127.0.0.1:0"',
    `    target: "127.0.0.1:${target.port}"`,
    "",
  ].join("\n");
  await using consoleProc = await startConsole({ settings, args: ["--auto-accept"] });

  // Listening before any Daemon exists: accepted and closed at once.
  let pfo = await pfoStatus(consoleProc, "fromfile");
  assert.equal(pfo.state, "listening");
  assert.equal(pfo.bound.length, 1);
  const listen = pfo.bound[0];
  const early = await Deno.connect(hostPort(listen));
  try {
    await readEnds(early, 5_000);
  } finally {
    closeQuietly(early);
  }
  assert.equal((await pfoStatus(consoleProc, "fromfile")).connectionsRefused, 1);

  await using daemon = await startDaemon(consoleProc);
  await daemon.out.waitFor(/Session established/);
  await consoleProc.out.waitFor(/Session established/);
  await echoRoundTrip(listen);
  pfo = await pfoStatus(consoleProc, "fromfile");
  assert.equal(pfo.connectionsTotal, 1);
  assert.equal(target.accepted(), 1);
  assert.deepEqual(target.errors, []);
  // The user's file is untouched (no runtime change was made).
  assert.equal(await Deno.readTextFile(consoleProc.settingsPath), settings);
});

Deno.test("a PFO's byte counters count an open connection's bytes while it stays open", async () => {
  const SIZE = 200 * 1024;
  await using target = targetServer(echo);
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "live", `127.0.0.1:${target.port}`);
  const conn = await Deno.connect(hostPort(listen));
  try {
    const data = randomBytes(SIZE);
    await deadline(
      Promise.all([writeAll(conn, data), readExactly(conn, SIZE)]),
      20_000,
      "the echo round trip",
    );
    // The connection is still open: its bytes must already show in the PFO's totals.
    const pfo = await pfoStatus(pair.console, "live");
    assert.equal(pfo.connections, 1);
    assert.ok(
      pfo.bytesOut >= SIZE,
      `bytesOut ${pfo.bytesOut} counts the open connection's ${SIZE}`,
    );
    assert.ok(pfo.bytesIn >= SIZE, `bytesIn ${pfo.bytesIn} counts the open connection's ${SIZE}`);
  } finally {
    closeQuietly(conn);
  }
});
