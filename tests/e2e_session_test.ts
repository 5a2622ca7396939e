/**
 * End-to-end tests of the session: pinning, acceptance (manual, token,
 * trusted), chat, resolve, close and exit, busy and take-over. Every test
 * spawns the real `console.ts` and `daemon.ts` with the tasks' flags.
 *
 * @module
 */

import assert from "node:assert/strict";
import { userInfo } from "node:os";
import {
  addPfo,
  echoRoundTrip,
  echoServer,
  hostPort,
  json,
  type Proc,
  runCli,
  startConsole,
  startDaemon,
  startPair,
  statusOf,
  tcpServer,
  tempDir,
  within,
} from "./_harness.ts";
import { loadOrCreateIdentity } from "../lib/core/identity.ts";
import { settingsPaths } from "../lib/settings/paths.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Waits for a process to exit (bounded) and returns its exit code. */
async function exitCode(proc: Proc, what: string, ms = 15_000): Promise<number> {
  try {
    return (await within(proc.status, ms, `${what} to exit`)).code;
  } catch (err) {
    throw new Error(`${(err as Error).message}; output:\n${proc.out.lines.slice(-30).join("\n")}`);
  }
}

/** A fresh Console fingerprint that is not the one under test. */
async function otherFingerprint(): Promise<string> {
  const dir = await tempDir("pf-other-");
  const r = await runCli("console.ts", [
    "fingerprint",
    "--config",
    `${dir}/portferry-console.yaml`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** A TCP target that counts what reaches it. */
function countingTarget() {
  const seen = { connections: 0, bytes: 0 };
  const server = tcpServer(async (conn) => {
    seen.connections++;
    const buf = new Uint8Array(4096);
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) seen.bytes += n;
  });
  return Object.assign(server, { seen });
}

/** Connects to a PFO, sends bytes, and resolves once the Console closes the connection. */
async function closedAtOnce(listen: string): Promise<void> {
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("GET / HTTP/1.0\r\n\r\n")).catch(() => 0);
    const buf = new Uint8Array(64);
    const n = await within(conn.read(buf).catch(() => null), 5_000, "the PFO to close it");
    assert.equal(n, null, "the PFO answered although no session is established");
  } finally {
    conn.close();
  }
}

Deno.test("a Daemon pinning a wrong fingerprint exits 1 with a fingerprint mismatch before any PFO traffic", async () => {
  await using con = await startConsole({ args: ["--auto-accept", "--log-level", "debug"] });
  using target = countingTarget();
  const listen = await addPfo(con, "guarded", `127.0.0.1:${target.port}`);
  const wrong = await otherFingerprint();
  assert.notEqual(wrong, con.fingerprint);

  await using daemon = await startDaemon(con, { fingerprint: wrong, args: ["--no-reconnect"] });
  // While the Daemon tries, and after, the PFO must not reach the target.
  await closedAtOnce(listen);
  assert.equal(await exitCode(daemon, "the Daemon"), 1);
  await closedAtOnce(listen);

  const text = daemon.out.text();
  assert.match(text, /^error: .*fingerprint mismatch/m, "the Daemon gives the reason as its error");
  assert.ok(text.includes(con.fingerprint), "the reason names the fingerprint the Console has");
  assert.ok(text.includes(wrong), "the reason names the pinned fingerprint");
  assert.doesNotMatch(text, /Session established|Waiting for the Console operator/);

  // The Console saw a TLS handshake (the pin probe) and not one message of the Daemon's.
  await con.out.waitFor(/DEBUG .*without a hello/);
  assert.doesNotMatch(con.out.text(), /Session established|asks for a session|session attempt/);
  const status = await statusOf(con);
  assert.equal(status.session.state, "none");
  assert.equal(status.session.peer, null);
  const pfo = status.pfos.find((p) => p.name === "guarded")!;
  assert.equal(pfo.connectionsTotal, 0);
  assert.ok(pfo.connectionsRefused >= 2, `refused ${pfo.connectionsRefused}`);
  assert.deepEqual(target.seen, { connections: 0, bytes: 0 });
});

Deno.test("a headless Console holds a Daemon pending until `session accept`", async () => {
  await using con = await startConsole();
  await using daemon = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);
  await daemon.out.waitFor(/Waiting for the Console operator to accept/);

  const pending = await statusOf(con);
  const mine = await statusOf(daemon);
  assert.equal(pending.session.state, "pending");
  assert.equal(mine.session.state, "pending");
  assert.ok(pending.session.peer);
  assert.equal(pending.session.peer.fingerprint, mine.fingerprint);
  assert.match(pending.session.peer.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(pending.session.peer.host, Deno.hostname());
  assert.equal(pending.session.peer.user, userInfo().username);
  assert.match(pending.session.peer.address, /^127\.0\.0\.1:\d+$/);
  assert.doesNotMatch(daemon.out.text(), /Session established/);
  // The Daemon's pin probe is not reported as a failed session attempt.
  assert.doesNotMatch(con.out.text(), /WARN|session attempt failed/);

  const r = await con.cli("session", "accept");
  assert.equal(r.code, 0, r.stderr);
  await daemon.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established/);
  assert.equal((await statusOf(con)).session.state, "established");
  assert.equal((await statusOf(daemon)).session.state, "established");

  // The Daemon showed each step, in order.
  const steps = [
    /Connecting to the Console/,
    /Waiting for the Console operator/,
    /Session established/,
  ]
    .map((re) => daemon.out.lines.findIndex((l) => re.test(l)));
  assert.ok(steps.every((i, k) => i >= 0 && (k === 0 || i > steps[k - 1])), `steps ${steps}`);

  // Nothing is pending any more.
  const again = await con.cli("session", "accept");
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no session is pending/);
});

Deno.test("`session reject` makes a --no-reconnect Daemon exit 1 saying it was rejected", async () => {
  await using con = await startConsole();
  await using daemon = await startDaemon(con, { args: ["--no-reconnect"] });
  await con.out.waitFor(/asks for a session/);
  const r = await con.cli("session", "reject");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await exitCode(daemon, "the rejected Daemon"), 1);
  assert.match(daemon.out.text(), /^error: .*rejected/m);
  assert.doesNotMatch(daemon.out.text(), /Session established/);
  assert.equal((await statusOf(con)).session.state, "none");
});

Deno.test("chat goes both ways and is printed verbatim", async () => {
  await using pair = await startPair();
  const toDaemon = "hello there — ünïcode ✓  x";
  const r1 = await pair.console.cli("chat", ...toDaemon.split(" "));
  assert.equal(r1.code, 0, r1.stderr);
  const line1 = (await pair.daemon.out.waitFor(/\[chat console\]/)).input!;
  assert.equal(line1, `[chat console] ${toDaemon}`);

  const r2 = await pair.daemon.cli("chat", "hi", "from", "the", "Daemon");
  assert.equal(r2.code, 0, r2.stderr);
  const line2 = (await pair.console.out.waitFor(/^\[chat [^\]]+@[^\]]+\]/)).input!;
  assert.match(line2, /^\[chat [^\]]+@[^\]]+\] hi from the Daemon$/);
});

Deno.test("`resolve` answers with the Daemon's resolver and exits 1 for an unknown name", async () => {
  await using pair = await startPair();
  const r = await pair.console.cli("resolve", "localhost", "--json");
  const result = json<{ host: string; addresses: string[]; error: unknown }>(r);
  assert.equal(result.host, "localhost");
  assert.ok(result.addresses.includes("127.0.0.1"), r.stdout);
  assert.equal(result.error, null);
  // The Daemon did the lookup.
  await pair.daemon.out.waitFor(/resolved for the Console.*localhost/);

  const plain = await pair.console.cli("resolve", "localhost");
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /^localhost: .*127\.0\.0\.1/m);

  const bad = await pair.console.cli("resolve", "nonexistent.invalid");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /Cannot resolve "nonexistent\.invalid"/);
  assert.equal(bad.stderr.match(/on the Daemon's side/g)?.length, 1, bad.stderr);
  assert.equal(bad.stdout, "");
  await pair.daemon.out.waitFor(/resolve failed for the Console.*nonexistent\.invalid/);

  const badJson = await pair.console.cli("resolve", "nonexistent.invalid", "--json");
  assert.equal(badJson.code, 1);
  const parsed = JSON.parse(badJson.stdout);
  assert.equal(parsed.host, "nonexistent.invalid");
  assert.deepEqual(parsed.addresses, []);
  assert.equal(typeof parsed.error, "string");
});

Deno.test("`session close` ends the session on both sides and the Daemon exits 0 without reconnecting", async () => {
  await using pair = await startPair();
  const mark = pair.daemon.out.mark;
  const r = await pair.console.cli("session", "close");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await exitCode(pair.daemon, "the Daemon"), 0);
  const after = pair.daemon.out.lines.slice(mark).join("\n");
  assert.match(after, /Session ended/);
  assert.doesNotMatch(after, /Reconnecting|Connecting to the Console/);
  await pair.console.out.waitFor(/Session with .* ended/);
  assert.equal((await statusOf(pair.console)).session.state, "none");
});

Deno.test("`daemon close` ends the session from the Daemon's side", async () => {
  await using pair = await startPair();
  const r = await pair.daemon.cli("close");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await exitCode(pair.daemon, "the Daemon"), 0);
  await pair.console.out.waitFor(/Session with .* ended/);
  assert.equal((await statusOf(pair.console)).session.state, "none");
  // The Daemon's control is gone with it.
  const gone = await pair.daemon.cli("status");
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /not running/);
});

Deno.test("SIGTERM makes the Console exit 0, the Daemon notices, and a second run keeps the fingerprint", async () => {
  await using pair = await startPair({ daemon: { args: ["--no-reconnect"] } });
  const { dir, fingerprint } = pair.console;
  const status = await within(pair.console.stop("SIGTERM"), 15_000, "the Console to exit");
  assert.equal(status.code, 0, pair.console.out.text());
  await pair.daemon.out.waitFor(/Session ended/);
  await exitCode(pair.daemon, "the Daemon");
  // The Console removed its control file: subcommands say it is not running.
  const r = await pair.console.cli("status");
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not running/);

  await using again = await startConsole({ dir });
  assert.equal(again.fingerprint, fingerprint);
  assert.equal((await statusOf(again)).fingerprint, fingerprint);
});

Deno.test("a Console with --token-file rejects Daemons without the token and accepts the right one unasked", async () => {
  const dir = await tempDir("pf-token-");
  await Deno.writeTextFile(`${dir}/token`, "s3cret-token\n");
  await Deno.writeTextFile(`${dir}/wrong`, "not-the-token\n");
  await using con = await startConsole({ args: ["--token-file", `${dir}/token`] });

  await using none = await startDaemon(con, { args: ["--no-reconnect"] });
  assert.equal(await exitCode(none, "the Daemon without a token"), 1);
  assert.match(none.out.text(), /^error: .*requires a token/m);

  await using wrong = await startDaemon(con, {
    args: ["--no-reconnect", "--token-file", `${dir}/wrong`],
  });
  assert.equal(await exitCode(wrong, "the Daemon with a wrong token"), 1);
  assert.match(wrong.out.text(), /^error: .*wrong token/m);
  assert.equal((await statusOf(con)).session.state, "none");

  await using right = await startDaemon(con, { args: ["--token-file", `${dir}/token`] });
  await right.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established .*\(token\)/);
  assert.doesNotMatch(con.out.text(), /asks for a session/);
  assert.doesNotMatch(right.out.text(), /Waiting for the Console operator/);
  // The token never shows on the command line.
  assert.ok(!con.out.text().includes("s3cret-token"));
});

Deno.test("trusted fingerprints in the settings are accepted unasked and `trust rm` closes their session", async () => {
  const daemonDir = await tempDir("pf-daemon-");
  const paths = settingsPaths(`${daemonDir}/portferry-daemon.yaml`);
  const { fingerprint } = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  await using con = await startConsole({
    settings: `# Daemons we know\ntrusted:\n  - ${fingerprint} # the lab box\n`,
  });
  await using daemon = await startDaemon(con, { dir: daemonDir });
  await daemon.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established .*trusted fingerprint/);
  assert.doesNotMatch(con.out.text(), /asks for a session/);

  const list = await con.cli("trust", "list");
  assert.equal(list.code, 0, list.stderr);
  assert.ok(list.stdout.includes(fingerprint), list.stdout);
  const listed = json<{ fingerprint: string; source: string }[]>(
    await con.cli("trust", "list", "--json"),
  );
  assert.deepEqual(listed.map((t) => t.fingerprint), [fingerprint]);

  const mark = con.out.mark;
  const rm = await con.cli("trust", "rm", fingerprint);
  assert.equal(rm.code, 0, rm.stderr);
  await daemon.out.waitFor(/Session ended/);
  await con.out.waitFor(/Session with .* ended/, { from: mark });
  assert.equal(await exitCode(daemon, "the untrusted Daemon"), 0);
  assert.equal((await statusOf(con)).session.state, "none");
  const text = await Deno.readTextFile(con.settingsPath);
  assert.ok(!text.includes(fingerprint), text);
  assert.match(text, /# Daemons we know/);
  assert.deepEqual(json(await con.cli("trust", "list", "--json")), []);

  const again = await con.cli("trust", "rm", fingerprint);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /not trusted/);
});

Deno.test("another Daemon is told busy, and the same Daemon restarted after kill -9 takes its session back", async () => {
  await using con = await startConsole();
  using echo = echoServer();
  const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
  await using first = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);

  // Busy while pending.
  await using other = await startDaemon(con, { args: ["--no-reconnect"] });
  assert.equal(await exitCode(other, "the other Daemon"), 1);
  assert.match(other.out.text(), /^error: .*busy/m);

  assert.equal((await con.cli("session", "accept")).code, 0);
  await first.out.waitFor(/Session established/);
  const { fingerprint } = await statusOf(first);
  assert.equal(await echoRoundTrip(listen, "before"), "before");

  // Busy while established: same other identity, started again.
  await using otherAgain = await startDaemon(con, { dir: other.dir, args: ["--no-reconnect"] });
  assert.equal(await exitCode(otherAgain, "the other Daemon"), 1);
  assert.match(otherAgain.out.text(), /^error: .*busy/m);
  assert.match(otherAgain.out.text(), /it already has an established session/);
  const held = await statusOf(con);
  assert.equal(held.session.state, "established");
  assert.equal(held.session.peer?.fingerprint, fingerprint);

  await first.stop("SIGKILL");
  const mark = con.out.mark;
  await using second = await startDaemon(con, { dir: first.dir });
  await second.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established/, { from: mark });
  assert.doesNotMatch(con.out.lines.slice(mark).join("\n"), /asks for a session/);
  const now = await statusOf(con);
  assert.equal(now.session.state, "established");
  assert.equal(now.session.peer?.fingerprint, fingerprint);
  assert.equal(await echoRoundTrip(listen, "after"), "after");
});

Deno.test("the same Daemon replaces its stale session while the old link is still open", async () => {
  await using pair = await startPair();
  using echo = echoServer();
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const { fingerprint } = await statusOf(pair.daemon);
  // Freeze the Daemon: its TCP link stays open, it just stops answering.
  pair.daemon.child.kill("SIGSTOP");
  const mark = pair.console.out.mark;
  // The frozen Daemon still holds its settings file; the same identity comes back from another.
  const dir = await tempDir("pf-same-identity-");
  const from = settingsPaths(pair.daemon.settingsPath);
  const to = settingsPaths(`${dir}/portferry-daemon.yaml`);
  await Deno.copyFile(from.key, to.key);
  await Deno.copyFile(from.cert, to.cert);
  await using second = await startDaemon(pair.console, { dir });
  await second.out.waitFor(/Session established/);
  await pair.console.out.waitFor(/Session established .*took over/, { from: mark });
  const now = await statusOf(pair.console);
  assert.equal(now.session.state, "established");
  assert.equal(now.session.peer?.fingerprint, fingerprint);
  assert.equal(await echoRoundTrip(listen, "taken over"), "taken over");
});

Deno.test("a pending Daemon that goes away frees the Console for another Daemon", async () => {
  await using con = await startConsole();
  await using first = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);
  const mark = con.out.mark;
  await first.stop("SIGKILL");
  await con.out.waitFor(/Session with .* ended/, { from: mark });
  assert.equal((await statusOf(con)).session.state, "none");

  await using other = await startDaemon(con, { args: ["--no-reconnect"] });
  await con.out.waitFor(/asks for a session/, { from: mark });
  const pending = await statusOf(con);
  assert.equal(pending.session.state, "pending");
  assert.equal(pending.session.peer?.fingerprint, (await statusOf(other)).fingerprint);
});

Deno.test("Console exit drains an open connection until it closes, then exits 0", async () => {
  using echo = echoServer();
  await using pair = await startPair({ console: { settings: "graceMs: 60000\n" } });
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const conn = await Deno.connect(hostPort(listen));
  try {
    const buf = new Uint8Array(64);
    const echoOnce = async (text: string) => {
      await conn.write(encoder.encode(text));
      let got = "";
      while (got.length < text.length) {
        const n = await within(conn.read(buf), 10_000, `echo of "${text}"`);
        assert.notEqual(n, null, "the connection closed during the drain");
        got += decoder.decode(buf.subarray(0, n!));
      }
      return got;
    };
    assert.equal(await echoOnce("before"), "before");
    pair.console.child.kill("SIGINT");
    await pair.console.out.waitFor(/Draining 1 open connection/);
    // Still forwarding while it drains; no new connection is taken.
    assert.equal(await echoOnce("during"), "during");
    await assert.rejects(async () => {
      const late = await Deno.connect(hostPort(listen));
      late.close();
    });
    await conn.closeWrite();
    assert.equal(await within(conn.read(buf), 10_000, "EOF"), null);
  } finally {
    conn.close();
  }
  // Well inside the 60 s grace: the drain ended when the connection did.
  const status = await within(pair.console.status, 15_000, "the Console to exit after the drain");
  assert.equal(status.code, 0);
  await pair.daemon.out.waitFor(/Session ended/);
});

Deno.test("a second signal makes the Console exit at once despite open connections", async () => {
  using echo = echoServer();
  await using pair = await startPair({ console: { settings: "graceMs: 60000\n" } });
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("x"));
    assert.equal(await within(conn.read(new Uint8Array(8)), 10_000, "echo"), 1);
    pair.console.child.kill("SIGTERM");
    await pair.console.out.waitFor(/Draining 1 open connection/);
    pair.console.child.kill("SIGTERM");
    const status = await within(pair.console.status, 10_000, "the forced exit");
    assert.equal(status.code, 0);
    // The client's connection is closed, not left half-open.
    const n = await within(
      conn.read(new Uint8Array(8)).catch(() => null),
      10_000,
      "the client to be closed",
    );
    assert.equal(n, null);
  } finally {
    conn.close();
  }
  await pair.daemon.out.waitFor(/Session ended/);
});

Deno.test("SIGTERM makes the Daemon exit 0 and the Console sees the session end", async () => {
  await using pair = await startPair();
  const mark = pair.console.out.mark;
  const status = await within(pair.daemon.stop("SIGTERM"), 15_000, "the Daemon to exit");
  assert.equal(status.code, 0, pair.daemon.out.text());
  await pair.console.out.waitFor(/Session with .* ended/, { from: mark });
  assert.equal((await statusOf(pair.console)).session.state, "none");
});
