// deno-lint-ignore-file no-console -- test output: the figures a reader of the run wants
/**
 * End-to-end reliability tests: dead peers, reconnects, leftovers and exit.
 * Real `console.ts` and `daemon.ts` processes on loopback; file descriptors,
 * sockets and memory are read from /proc (Linux). Waits are bounded; the only
 * timed waits are where the property itself is about time.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  closeQuietly,
  type ConsoleProc,
  type DaemonProc,
  echoRoundTrip,
  echoServer,
  hostPort,
  linkCutter,
  type Proc,
  type ProcStats,
  procStats,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  tcpServer,
  tcpSockets,
  within,
} from "./_harness.ts";
import { settingsPaths } from "../lib/settings/paths.ts";
import { parseConsoleSettings } from "../lib/settings/schema.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The bound for noticing a vanished peer, with the defaults. */
const NOTICE_MS = 15_000;
/** The wait the Daemon announces on each reconnect: "…; reconnecting in 0.4 s", "…; next try in 1.2 s". */
const NEXT_TRY = /(?:reconnecting|next try) in ([\d.]+) s$/;

// --- helpers -----------------------------------------------------------------

/** Resolves once `check` returns true, polling every 100 ms for at most `ms`; else fails. */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < ms / 100 + 1; i++) {
    if (await check()) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Timed out after ${ms} ms: ${what}`);
}

/** How long `re` takes to show up in `proc`'s output after `from`, failing past `ms`. */
async function timeUntil(proc: Proc, re: RegExp, from: number, ms: number): Promise<number> {
  const t0 = performance.now();
  await proc.out.waitFor(re, { from, ms });
  return performance.now() - t0;
}

/** A free loopback port no other test can be given meanwhile. */
const freePort = spareTcpPort;

/** Connects to a PFO and resolves with how long the Console took to close it (never hangs). */
async function closedWithin(listen: string, ms: number): Promise<number> {
  const t0 = performance.now();
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("hello?")).catch(() => 0);
    const n = await within(
      conn.read(new Uint8Array(64)).catch(() => null),
      ms,
      `the PFO ${listen} to close the connection`,
    );
    assert.equal(n, null, "the PFO answered although no session is established");
    return performance.now() - t0;
  } finally {
    closeQuietly(conn);
  }
}

interface StatusJson {
  session: { state: string; peer: { fingerprint: string } | null };
  pfos: {
    name: string;
    state: string;
    error: string | null;
    bound: string[];
    connections: number;
    connectionsRefused: number;
  }[];
  connections?: unknown[];
}

async function status(proc: ConsoleProc | DaemonProc): Promise<StatusJson> {
  const r = await proc.cli("status", "--json");
  assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The addresses `pid` listens on (TCP), sorted. */
async function listening(pid: number): Promise<string[]> {
  return (await tcpSockets(pid)).filter((s) => s.state === "LISTEN").map((s) => s.local).sort();
}

/** A Console that asks its operator, and a Daemon the operator accepted once (`session accept`). */
async function acceptedOnce(
  daemonOptions: { via?: string; settings?: string } = {},
): Promise<{ console: ConsoleProc; daemon: DaemonProc } & AsyncDisposable> {
  const con = await startConsole();
  let daemon: DaemonProc | undefined;
  try {
    daemon = await startDaemon(
      { address: daemonOptions.via ?? con.address, fingerprint: con.fingerprint },
      { settings: daemonOptions.settings },
    );
    await con.out.waitFor(/asks for a session/);
    const r = await con.cli("session", "accept");
    assert.equal(r.code, 0, r.stderr);
    await daemon.out.waitFor(/Session established/);
  } catch (err) {
    await daemon?.stop("SIGKILL");
    await con.stop("SIGKILL");
    throw err;
  }
  return {
    console: con,
    daemon,
    async [Symbol.asyncDispose]() {
      await daemon!.stop("SIGKILL");
      await con.stop("SIGKILL");
    },
  };
}

// --- a peer that vanishes ----------------------------------------------------------

Deno.test("a Daemon killed with SIGKILL is noticed at once, PFOs close connections meanwhile, and the restarted Daemon forwards with no operator step", async () => {
  using echo = echoServer();
  await using pair = await acceptedOnce();
  const con = pair.console;
  const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
  assert.equal(await echoRoundTrip(listen, "before"), "before");
  const listenersBefore = await listening(con.child.pid);
  assert.equal(
    listenersBefore.length,
    5,
    `session port, its internal TLS side, control, dashboard, PFO: ${listenersBefore}`,
  );

  const mark = con.out.mark;
  pair.daemon.child.kill("SIGKILL");
  const noticed = await timeUntil(con, /Session with .* ended/, mark, NOTICE_MS);
  assert.ok(noticed < NOTICE_MS, `noticed after ${noticed} ms`);
  assert.equal((await status(con)).session.state, "none");

  // No session: every connection is accepted and closed at once, never left hanging.
  for (let i = 0; i < 3; i++) {
    const ms = await closedWithin(listen, 2_000);
    assert.ok(ms < 2_000, `closed after ${ms} ms`);
  }
  assert.equal((await status(con)).pfos[0].connectionsRefused, 3);

  // The same Daemon identity comes back: accepted with no operator step, same listeners.
  await using again = await startDaemon(con, { dir: pair.daemon.dir });
  await again.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established .*accepted earlier in this run/, { from: mark });
  assert.doesNotMatch(con.out.lines.slice(mark).join("\n"), /asks for a session|in use/);
  assert.equal(await echoRoundTrip(listen, "after"), "after");
  assert.deepEqual(await listening(con.child.pid), listenersBefore, "listeners changed");
  const pfo = (await status(con)).pfos[0];
  assert.equal(pfo.state, "listening");
  assert.equal(pfo.error, null);
});

Deno.test("a peer frozen with SIGSTOP or cut off by the network is noticed within 15 s, and the session comes back by itself", async () => {
  using echo = echoServer();
  // Each scenario has its own Console and Daemon; they run side by side.
  const fast = "backoffMaxMs: 1000\nconnectTimeoutMs: 3000\n";

  async function daemonFrozen(): Promise<void> {
    await using pair = await acceptedOnce({ settings: fast });
    const { console: con, daemon } = pair;
    const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
    const listenersBefore = await listening(con.child.pid);
    const mark = con.out.mark;
    const dmark = daemon.out.mark;
    daemon.child.kill("SIGSTOP");
    const noticed = await timeUntil(con, /Session with .* ended/, mark, NOTICE_MS + 5_000);
    assert.ok(noticed < NOTICE_MS, `Daemon frozen: the Console noticed after ${noticed} ms`);
    assert.match(con.out.lines.slice(mark).join("\n"), /no word from the peer/);
    await closedWithin(listen, 2_000);
    daemon.child.kill("SIGCONT");
    await daemon.out.waitFor(/Session ended/, { from: dmark });
    await daemon.out.waitFor(/Session established/, { from: dmark, ms: 20_000 });
    await con.out.waitFor(/Session established .*accepted earlier in this run/, { from: mark });
    assert.equal(await echoRoundTrip(listen, "thawed"), "thawed");
    assert.deepEqual(await listening(con.child.pid), listenersBefore);
  }

  async function consoleFrozen(): Promise<void> {
    await using pair = await acceptedOnce({ settings: fast });
    const { console: con, daemon } = pair;
    const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
    const listenersBefore = await listening(con.child.pid);
    const mark = con.out.mark;
    const dmark = daemon.out.mark;
    con.child.kill("SIGSTOP");
    const noticed = await timeUntil(daemon, /Session ended/, dmark, NOTICE_MS + 5_000);
    assert.ok(noticed < NOTICE_MS, `Console frozen: the Daemon noticed after ${noticed} ms`);
    con.child.kill("SIGCONT");
    await daemon.out.waitFor(/Session established/, { from: dmark, ms: 20_000 });
    await con.out.waitFor(/Session established .*accepted earlier in this run/, { from: mark });
    assert.equal(await echoRoundTrip(listen, "thawed"), "thawed");
    assert.deepEqual(await listening(con.child.pid), listenersBefore);
  }

  async function linkFrozen(): Promise<void> {
    await using con = await startConsole();
    // 50 ms each way, as a long-distance link has.
    await using cutter = linkCutter(con.address, { latencyMs: 50 });
    await using daemon = await startDaemon({
      address: cutter.address,
      fingerprint: con.fingerprint,
    }, {
      settings: fast,
    });
    await con.out.waitFor(/asks for a session/);
    assert.equal((await con.cli("session", "accept")).code, 0);
    await daemon.out.waitFor(/Session established/);
    const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
    // Freeze right after the Daemon answered a Console heartbeat: the Console
    // heard its peer just after its own tick, the slowest case to notice.
    for (let i = 0; i < 10; i++) {
      await within(cutter.nextChunk("fromTarget"), 10_000, "a Console heartbeat");
      const answered = await Promise.race([
        cutter.nextChunk("toTarget").then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 150)),
      ]);
      if (answered) break;
    }
    cutter.freeze();
    const mark = con.out.mark;
    const dmark = daemon.out.mark;
    const [consoleNoticed, daemonNoticed] = await Promise.all([
      timeUntil(con, /Session with .* ended/, mark, NOTICE_MS + 5_000),
      timeUntil(daemon, /Session ended/, dmark, NOTICE_MS + 5_000),
    ]);
    assert.ok(
      consoleNoticed < NOTICE_MS,
      `link cut: the Console noticed after ${consoleNoticed} ms`,
    );
    assert.ok(daemonNoticed < NOTICE_MS, `link cut: the Daemon noticed after ${daemonNoticed} ms`);
    cutter.thaw();
    await daemon.out.waitFor(/Session established/, { from: dmark, ms: 20_000 });
    await con.out.waitFor(/Session established .*accepted earlier in this run/, { from: mark });
    assert.equal(await echoRoundTrip(listen, "healed"), "healed");
  }

  await Promise.all([daemonFrozen(), consoleFrozen(), linkFrozen()]);
});

Deno.test("a Console killed with SIGKILL is noticed, the Daemon backs off with jitter, and a Console restarted on the same port takes it back with no operator step", async () => {
  using echo = echoServer();
  const sessionPort = freePort();
  const pfoPort = freePort();
  const args = ["--session", `127.0.0.1:${sessionPort}`];
  await using first = await startConsole({ args });
  const pfo = await first.cli(
    "pfo",
    "add",
    "web",
    "--listen",
    `127.0.0.1:${pfoPort}`,
    "--target",
    `127.0.0.1:${echo.port}`,
  );
  assert.equal(pfo.code, 0, pfo.stderr);
  const cap = 1500;
  await using daemon = await startDaemon(first, { settings: `backoffMaxMs: ${cap}\n` });
  await first.out.waitFor(/asks for a session/);
  // Accepted once and remembered: the operator's choice survives a restart.
  assert.equal((await first.cli("session", "accept", "--remember")).code, 0);
  await daemon.out.waitFor(/Session established/);
  // A connection open at the crash leaves the PFO's port and the session port in TIME_WAIT.
  const held = await Deno.connect({ hostname: "127.0.0.1", port: pfoPort });
  await held.write(encoder.encode("x"));
  assert.equal(await within(held.read(new Uint8Array(8)), 10_000, "echo"), 1);

  const dmark = daemon.out.mark;
  first.child.kill("SIGKILL");
  const noticed = await timeUntil(daemon, /Session ended/, dmark, NOTICE_MS);
  assert.ok(noticed < NOTICE_MS, `noticed after ${noticed} ms`);
  assert.equal(await within(held.read(new Uint8Array(8)).catch(() => null), 5_000, "EOF"), null);
  closeQuietly(held);

  // Back-off: each wait is in [d/2, d] with d doubling from 500 ms up to the cap.
  const ATTEMPTS = 5;
  await until(
    () =>
      Promise.resolve(
        daemon.out.lines.slice(dmark).filter((l) => NEXT_TRY.test(l)).length >= ATTEMPTS,
      ),
    20_000,
    `${ATTEMPTS} reconnect attempts`,
  );
  const waits = daemon.out.lines.slice(dmark)
    .map((l) => l.match(NEXT_TRY)?.[1])
    .filter((w) => w !== undefined)
    .slice(0, ATTEMPTS)
    .map((w) => Number(w) * 1000);
  waits.forEach((wait, i) => {
    const d = Math.min(500 * 2 ** i, cap);
    assert.ok(
      wait >= d / 2 - 50 && wait <= d + 50,
      `wait ${i} is ${wait} ms, expected ${d / 2}..${d}`,
    );
  });

  // Same settings folder, same port: no "address in use", trusted without a prompt.
  await using second = await startConsole({ dir: first.dir, args });
  assert.equal(second.address, first.address);
  assert.equal(second.fingerprint, first.fingerprint);
  const back = await timeUntil(daemon, /Session established/, dmark, cap + 10_000);
  assert.ok(back < cap + 10_000, `re-established after ${back} ms`);
  await second.out.waitFor(/Session established .*trusted fingerprint/);
  assert.doesNotMatch(second.out.text(), /asks for a session|in use|WARN|ERROR/);
  const s = await status(second);
  assert.equal(s.pfos[0].state, "listening");
  assert.deepEqual(s.pfos[0].bound, [`127.0.0.1:${pfoPort}`]);
  assert.equal(await echoRoundTrip(`127.0.0.1:${pfoPort}`, "restarted"), "restarted");
  const listeners = await listening(second.child.pid);
  assert.equal(
    listeners.length,
    5,
    `session port, its internal TLS side, control, dashboard, PFO: ${listeners}`,
  );
  assert.ok(listeners.includes(`127.0.0.1:${sessionPort}`), `${listeners}`);
  assert.ok(listeners.includes(`127.0.0.1:${pfoPort}`), `${listeners}`);
});

// --- reconnect cycles and leftovers --------------------------------------------------

/** Stats once two samples 200 ms apart agree on open files (a link being set up or torn down settles). */
async function restingStats(pid: number): Promise<ProcStats> {
  let last = await procStats(pid);
  for (let i = 0; i < 25; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await procStats(pid);
    if (now.fds === last.fds && now.sockets === last.sockets) return now;
    last = now;
  }
  return last;
}

/** Main-thread wake-ups of `pid` during `ms` of idleness: a leaked timer shows up here. */
async function wakeups(pid: number, ms: number): Promise<number> {
  const a = await procStats(pid);
  await new Promise((r) => setTimeout(r, ms));
  const b = await procStats(pid);
  return b.mainThreadSwitches - a.mainThreadSwitches;
}

/** Sockets of `pid` that are neither listening nor established (half-open, closing). */
async function lingering(pid: number): Promise<string[]> {
  return (await tcpSockets(pid))
    .filter((s) => s.state !== "LISTEN" && s.state !== "ESTABLISHED")
    .map((s) => `${s.local} -> ${s.remote} ${s.state}`);
}

/** RSS is in KiB. */
const MiB_IN_KiB = 1024;

Deno.test("100 reconnect cycles leave both programs' open files, sockets, memory and timers where they started", async () => {
  const cycles = Number(Deno.env.get("PF_RECONNECT_CYCLES") ?? 100);
  const WARMUP = 10;
  using echo = echoServer();
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using cutter = linkCutter(con.address);
  const cap = 100;
  await using daemon = await startDaemon(
    { address: cutter.address, fingerprint: con.fingerprint },
    {
      settings: `backoffMaxMs: ${cap}\n`,
    },
  );
  await daemon.out.waitFor(/Session established/);
  const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
  const pids = { console: con.child.pid, daemon: daemon.child.pid };

  /** Cut the link (as a network would) and wait until both sides have a session again. */
  async function cycle(i: number): Promise<void> {
    const c = con.out.mark;
    const d = daemon.out.mark;
    assert.equal(cutter.cut(), 1, `cycle ${i}: one link to cut`);
    await daemon.out.waitFor(/Session established/, { from: d, ms: 10_000 });
    await con.out.waitFor(/Session established/, { from: c, ms: 10_000 });
  }

  for (let i = 0; i < WARMUP; i++) await cycle(i);
  assert.equal(await echoRoundTrip(listen, "warm"), "warm");
  const before = {
    console: await restingStats(pids.console),
    daemon: await restingStats(pids.daemon),
  };
  const idleBefore = await Promise.all([wakeups(pids.console, 2000), wakeups(pids.daemon, 2000)]);
  const mid: Record<string, ProcStats> = {};
  const t0 = performance.now();
  for (let i = 0; i < cycles; i++) {
    await cycle(WARMUP + i);
    if (i % 10 === 9) assert.equal(await echoRoundTrip(listen, `cycle ${i}`), `cycle ${i}`);
    if (i === Math.floor(cycles / 2) - 1) {
      mid.console = await procStats(pids.console);
      mid.daemon = await procStats(pids.daemon);
    }
  }
  const perCycle = (performance.now() - t0) / cycles;
  const after = {
    console: await restingStats(pids.console),
    daemon: await restingStats(pids.daemon),
  };
  const idleAfter = await Promise.all([wakeups(pids.console, 2000), wakeups(pids.daemon, 2000)]);
  console.error(
    `reconnect cycles: ${cycles} in ${(perCycle * cycles / 1000).toFixed(1)} s (${
      perCycle.toFixed(0)
    } ms each)\n` +
      `  console before ${JSON.stringify(before.console)}\n  console after  ${
        JSON.stringify(after.console)
      }\n` +
      `  daemon  before ${JSON.stringify(before.daemon)}\n  daemon  after  ${
        JSON.stringify(after.daemon)
      }\n` +
      `  idle wake-ups per 2 s: console ${idleBefore[0]} -> ${idleAfter[0]}, daemon ${
        idleBefore[1]
      } -> ${idleAfter[1]}`,
  );

  // Every retry waited no longer than the cap.
  for (const line of daemon.out.lines) {
    const wait = line.match(NEXT_TRY)?.[1];
    if (wait !== undefined) assert.ok(Number(wait) * 1000 <= cap + 50, line);
  }
  for (const side of ["console", "daemon"] as const) {
    const b = before[side];
    const a = after[side];
    assert.ok(a.fds <= b.fds, `${side}: open files ${b.fds} -> ${a.fds}`);
    assert.ok(a.sockets <= b.sockets, `${side}: sockets ${b.sockets} -> ${a.sockets}`);
    assert.ok(a.threads <= b.threads + 2, `${side}: threads ${b.threads} -> ${a.threads}`);
    // A leak of one read buffer (256 KiB) per session would be 25 MiB here.
    assert.ok(
      a.rssKiB <= b.rssKiB + 16 * MiB_IN_KiB,
      `${side}: RSS ${b.rssKiB} KiB -> ${a.rssKiB} KiB`,
    );
    if (cycles >= 20) {
      assert.ok(
        a.rssKiB <= mid[side].rssKiB + 8 * MiB_IN_KiB,
        `${side}: RSS still growing in the second half: ${mid[side].rssKiB} KiB -> ${a.rssKiB} KiB`,
      );
    }
    assert.deepEqual(await lingering(pids[side]), [], `${side}: half-open sockets`);
  }
  idleBefore.forEach((b, i) => {
    const side = i === 0 ? "console" : "daemon";
    assert.ok(idleAfter[i] <= 2 * b + 10, `${side}: idle wake-ups ${b} -> ${idleAfter[i]}`);
  });
  assert.equal(await echoRoundTrip(listen, "after"), "after");
});

Deno.test("forwarded connections leave no socket behind when the client closes, the target closes, or the session ends", async () => {
  const N = 20;
  const seen = { echo: 0, echoClosed: 0 };
  using echo = tcpServer(async (conn) => {
    seen.echo++;
    const buf = new Uint8Array(1024);
    try {
      let n: number | null;
      while ((n = await conn.read(buf)) !== null) await conn.write(buf.subarray(0, n));
    } catch {
      // Reset by the Daemon: closed all the same.
    }
    seen.echoClosed++;
  });
  using bye = tcpServer(async (conn) => {
    await conn.write(encoder.encode("bye"));
    // Returning closes the connection: the target ends it first.
  });
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using cutter = linkCutter(con.address);
  await using daemon = await startDaemon(
    { address: cutter.address, fingerprint: con.fingerprint },
    {
      settings: "backoffMaxMs: 200\n",
    },
  );
  await daemon.out.waitFor(/Session established/);
  const echoListen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
  const byeListen = await addPfo(con, "bye", `127.0.0.1:${bye.port}`);
  const pids = { console: con.child.pid, daemon: daemon.child.pid };
  const base = {
    console: (await restingStats(pids.console)).sockets,
    daemon: (await restingStats(pids.daemon)).sockets,
  };

  /** Both programs are back to their resting sockets, none of them half-open. */
  async function backToBase(what: string): Promise<void> {
    for (const side of ["console", "daemon"] as const) {
      await until(
        async () => (await procStats(pids[side])).sockets <= base[side],
        10_000,
        `${what}: the ${side}'s sockets back to ${base[side]} (now ${
          (await procStats(pids[side])).sockets
        }, lingering ${await lingering(pids[side])})`,
      );
      assert.deepEqual(await lingering(pids[side]), [], `${what}: ${side}`);
    }
    const s = await status(con);
    assert.ok(s.pfos.every((p) => p.connections === 0), `${what}: ${JSON.stringify(s.pfos)}`);
    assert.deepEqual((await status(daemon)).connections, [], `${what}: Daemon connections`);
  }

  async function openEchoes(): Promise<Deno.TcpConn[]> {
    const conns = await Promise.all(
      Array.from({ length: N }, () => Deno.connect(hostPort(echoListen))),
    );
    await Promise.all(conns.map(async (c) => {
      await c.write(encoder.encode("x"));
      assert.equal(await within(c.read(new Uint8Array(8)), 10_000, "echo"), 1);
    }));
    const s = await status(con);
    assert.equal(s.pfos.find((p) => p.name === "echo")!.connections, N);
    return conns;
  }

  // 1. The clients close.
  for (const c of await openEchoes()) c.close();
  await backToBase("clients closed");

  // 2. The target closes first; the clients read what it sent, then the end.
  await Promise.all(Array.from({ length: N }, async () => {
    const c = await Deno.connect(hostPort(byeListen));
    try {
      let got = "";
      const buf = new Uint8Array(16);
      let n: number | null;
      while ((n = await within(c.read(buf), 10_000, "bye")) !== null) {
        got += decoder.decode(buf.subarray(0, n));
      }
      assert.equal(got, "bye");
    } finally {
      c.close();
    }
  }));
  await backToBase("target closed");

  // 3. The session ends under open connections: each client and each target is closed.
  const conns = await openEchoes();
  const closedBefore = seen.echoClosed;
  const d = daemon.out.mark;
  cutter.cut();
  await Promise.all(conns.map(async (c) => {
    const n = await within(c.read(new Uint8Array(8)).catch(() => null), 5_000, "client closed");
    assert.equal(n, null);
    c.close();
  }));
  await until(
    () => Promise.resolve(seen.echoClosed - closedBefore === N),
    5_000,
    `the Daemon to close all ${N} target connections (closed ${seen.echoClosed - closedBefore})`,
  );
  await daemon.out.waitFor(/Session established/, { from: d, ms: 10_000 });
  await backToBase("session ended");
  assert.equal(await echoRoundTrip(echoListen, "again"), "again");
});

// --- exit and settings ---------------------------------------------------------------

async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("SIGTERM lets the Daemon finish a transfer in flight, and a second SIGTERM stops it at once", async () => {
  const SIZE = 4 * 1024 * 1024;
  const payload = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i += 65_536) crypto.getRandomValues(payload.subarray(i, i + 65_536));
  const asked = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  using target = tcpServer(async (conn) => {
    await conn.read(new Uint8Array(16));
    asked.resolve();
    await release.promise;
    for (let at = 0; at < SIZE;) at += await conn.write(payload.subarray(at));
  });
  {
    await using pair = await startPair();
    const listen = await addPfo(pair.console, "slow", `127.0.0.1:${target.port}`);
    const conn = await Deno.connect(hostPort(listen));
    try {
      await conn.write(encoder.encode("get"));
      await within(asked.promise, 10_000, "the request to reach the target");
      pair.daemon.child.kill("SIGTERM");
      await pair.daemon.out.waitFor(/Draining 1 open connection/);
      // Only now does the target answer: the whole reply still arrives.
      release.resolve();
      const got = new Uint8Array(SIZE + 1);
      let n = 0;
      while (true) {
        const r = await within(conn.read(got.subarray(n)), 10_000, `bytes after ${n}`);
        if (r === null) break;
        n += r;
      }
      assert.equal(n, SIZE);
      assert.equal(await sha256(got.slice(0, n)), await sha256(payload));
    } finally {
      closeQuietly(conn);
    }
    const exited = await within(pair.daemon.status, 10_000, "the Daemon to exit after the drain");
    assert.equal(exited.code, 0, pair.daemon.out.text());
    await pair.console.out.waitFor(/Session with .* ended/);
  }

  // Force: a connection that never ends, and a second signal.
  await using pair = await startPair();
  using echo = echoServer();
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("x"));
    assert.equal(await within(conn.read(new Uint8Array(8)), 10_000, "echo"), 1);
    pair.daemon.child.kill("SIGTERM");
    await pair.daemon.out.waitFor(/Draining 1 open connection/);
    const t0 = performance.now();
    pair.daemon.child.kill("SIGTERM");
    const exited = await within(pair.daemon.status, 3_000, "the forced exit");
    assert.equal(exited.code, 0);
    assert.ok(performance.now() - t0 < 3_000);
    const n = await within(conn.read(new Uint8Array(8)).catch(() => null), 5_000, "closed");
    assert.equal(n, null, "the client's connection is closed, not left open");
    // The Console is told why, and neither side reports the cut link as an I/O error.
    await pair.console.out.waitFor(/Session with .* ended: the Daemon is exiting/);
    assert.doesNotMatch(pair.daemon.out.text(), /Bad resource|Cannot write to the peer/);
  } finally {
    closeQuietly(conn);
  }
});

Deno.test("the Console's exit drain gives up after graceMs and closes what is still open", async () => {
  using echo = echoServer();
  const graceMs = 1500;
  await using pair = await startPair({ console: { settings: `graceMs: ${graceMs}\n` } });
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("x"));
    assert.equal(await within(conn.read(new Uint8Array(8)), 10_000, "echo"), 1);
    const t0 = performance.now();
    pair.console.child.kill("SIGTERM");
    await pair.console.out.waitFor(new RegExp(`Draining 1 open connection.* ${graceMs} ms`));
    const exited = await within(pair.console.status, graceMs + 5_000, "the exit after the grace");
    const took = performance.now() - t0;
    assert.equal(exited.code, 0);
    assert.ok(took >= graceMs - 100, `exited after ${took} ms, before the grace period`);
    const n = await within(conn.read(new Uint8Array(8)).catch(() => null), 5_000, "closed");
    assert.equal(n, null);
  } finally {
    closeQuietly(conn);
  }
  await pair.daemon.out.waitFor(/Session ended/);
});

Deno.test("kill -9 in the middle of settings write-backs never leaves a broken or empty settings file", async () => {
  const ROUNDS = Number(Deno.env.get("PF_WRITEBACK_ROUNDS") ?? 8);
  const header = "# my settings: keep this\ngraceMs: 1234 # mine\n";
  const first = await startConsole({ settings: header });
  const dir = first.dir;
  const path = first.settingsPath;
  const acknowledged: string[] = [];
  let tornWrites = 0;
  for (let round = 0; round < ROUNDS; round++) {
    await using con = round === 0 ? first : await startConsole({ dir });
    const control = JSON.parse(await Deno.readTextFile(settingsPaths(path).control));
    // Write-backs as fast as the Console takes them, each a whole-file rewrite.
    let stop = false;
    const writer = (async () => {
      for (let i = 0; i < 10_000 && !stop; i++) {
        const name = `r${round}-p${i}`;
        try {
          const res = await fetch(`http://127.0.0.1:${control.port}/pfo/add`, {
            method: "POST",
            headers: { authorization: `Bearer ${control.secret}` },
            body: JSON.stringify({
              name,
              listen: `127.0.0.1:${20000 + i}`,
              target: `t${i}.example:80`,
              enabled: false,
            }),
          });
          await res.body?.cancel();
          if (res.ok) acknowledged.push(name);
        } catch {
          return; // The Console is gone.
        }
      }
    })();
    // Let a few writes through, then kill it at a random point of the next ones.
    const target = acknowledged.length + 3;
    await until(() => Promise.resolve(acknowledged.length >= target), 10_000, "write-backs");
    await new Promise((r) => setTimeout(r, Math.random() * 50));
    con.child.kill("SIGKILL");
    await con.status;
    stop = true;
    await writer;

    const text = await Deno.readTextFile(path);
    assert.ok(text.length > 0, `round ${round}: the settings file is empty`);
    let names: string[];
    try {
      names = parseConsoleSettings(text, path).pfos.map((p) => p.name);
    } catch (err) {
      tornWrites++;
      throw new Error(`round ${round}: the settings file does not parse: ${err}\n${text}`);
    }
    assert.ok(text.startsWith(header), `round ${round}: the user's lines were lost`);
    const missing = acknowledged.filter((n) => !names.includes(n));
    assert.deepEqual(missing, [], `round ${round}: acknowledged PFOs lost`);
  }
  assert.equal(tornWrites, 0);
  assert.ok(acknowledged.length >= ROUNDS * 3, `only ${acknowledged.length} write-backs`);
  const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp-"));
  console.error(
    `write-backs: ${acknowledged.length}; temp files left by kill -9: ${leftovers.length}`,
  );
});
