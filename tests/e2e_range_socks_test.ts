// deno-lint-ignore-file no-console -- says why the private-hosts test cannot run here
/**
 * End-to-end tests of port ranges, SOCKS5 PFOs and the Daemon's allow-list:
 * real `console.ts` and `daemon.ts` processes, targets and clients in this
 * process (and curl), all on loopback. Every wait is bounded in count and
 * time; nothing sleeps to synchronize.
 *
 * @module
 */

import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import {
  closeQuietly,
  type ConsoleProc,
  hostPort,
  runCli,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  tempDir,
  within as deadline,
} from "./_harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// --- helpers -----------------------------------------------------------------

/** Read until EOF (at most `max` bytes). */
async function readToEnd(conn: Deno.Conn, max = 64 * 1024): Promise<Uint8Array> {
  const buf = new Uint8Array(max + 1);
  let got = 0;
  while (true) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) return buf.subarray(0, got);
    got += n;
    if (got > max) throw new Error(`more than ${max} bytes arrived`);
  }
}

/** Read exactly `n` bytes. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return buf;
}

/**
 * A TCP target on `port` (0: any) that says who it is: it reads one line
 * and answers "PORT:LINE", then closes.
 */
function namedTarget(port = 0): { port: number; accepted: () => number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const own = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  let accepted = 0;
  const handle = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(256);
    let line = "";
    let n: number | null;
    while (!line.includes("\n") && (n = await conn.read(buf)) !== null) {
      line += decoder.decode(buf.subarray(0, n));
    }
    await conn.write(encoder.encode(`${own}:${line}`));
  };
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        accepted++;
        conns.add(conn);
        handle(conn).catch(() => {}).finally(() => {
          conns.delete(conn);
          closeQuietly(conn);
        });
      }
    } catch {
      // Listener closed.
    }
  })();
  return {
    port: own,
    accepted: () => accepted,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await loop;
      for (const conn of conns) closeQuietly(conn);
    },
  };
}

/** An echo target on 127.0.0.1:0. */
function echoTarget(): { port: number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        (async () => {
          const buf = new Uint8Array(16 * 1024);
          let n: number | null;
          while ((n = await conn.read(buf)) !== null) await conn.write(buf.subarray(0, n));
          await conn.closeWrite();
        })().catch(() => {}).finally(() => {
          conns.delete(conn);
          closeQuietly(conn);
        });
      }
    } catch {
      // Listener closed.
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await loop;
      for (const conn of conns) closeQuietly(conn);
    },
  };
}

/** A port on 127.0.0.1 that nothing listens on, and no other test can be given meanwhile. */
const deadPort = spareTcpPort;

/**
 * `count` contiguous TCP ports on 127.0.0.1 that were free a moment ago, from
 * 10000-32000 (below this machine's ephemeral range, 32768-60999, so port-0
 * binds elsewhere cannot take them). Tries at most 50 random starts.
 */
function freeRange(count: number): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    const start = 10_000 + Math.floor(Math.random() * (22_000 - count));
    const held: Deno.Listener[] = [];
    try {
      for (let p = start; p < start + count; p++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: p }));
      }
      return start;
    } catch {
      // One was taken: try elsewhere.
    } finally {
      for (const l of held) closeQuietly(l);
    }
  }
  throw new Error(`Cannot find ${count} contiguous free ports in 50 tries`);
}

/** Send "LINE\n" through 127.0.0.1:port and return the whole answer. */
async function ask(port: number, line: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encoder.encode(`${line}\n`));
    return decoder.decode(await deadline(readToEnd(conn), 10_000, `answer through port ${port}`));
  } finally {
    closeQuietly(conn);
  }
}

/** Run `fn` over `items`, at most `limit` at a time. */
async function inBatches<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>) {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += limit) {
    out.push(...await Promise.all(items.slice(i, i + limit).map(fn)));
  }
  return out;
}

/** Whether a TCP connect to 127.0.0.1:port is refused (nothing listens). */
async function refused(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    closeQuietly(conn);
    return false;
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return true;
    throw err;
  }
}

interface PfoJson {
  name: string;
  proto: string;
  listen: string;
  state: string;
  error: string | null;
  bound: string[];
  listeners: number;
  connectionsFailed: number;
}

async function pfoList(consoleProc: ConsoleProc): Promise<PfoJson[]> {
  const r = await consoleProc.cli("pfo", "list", "--json");
  assert.equal(r.code, 0, `pfo list --json failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function pfoStatus(consoleProc: ConsoleProc, name: string): Promise<PfoJson> {
  const r = await consoleProc.cli("status", "--json");
  assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
  const pfo = (JSON.parse(r.stdout).pfos as PfoJson[]).find((p) => p.name === name);
  assert.ok(pfo, `PFO "${name}" missing from status --json`);
  return pfo;
}

async function cliOk(consoleProc: ConsoleProc, ...args: string[]): Promise<string> {
  const r = await consoleProc.cli(...args);
  assert.equal(r.code, 0, `${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** What a SOCKS5 server answered. */
interface SocksResult {
  /** The method the server chose (0xff: none acceptable). */
  readonly method: number;
  /** Username/password status (0 ok), when that method ran. */
  readonly authStatus?: number;
  /** The reply code (0 succeeded), when the request was sent. */
  readonly reply?: number;
  /** The connection, still open after reply 0. */
  readonly conn: Deno.TcpConn;
}

/**
 * A tiny SOCKS5 client (RFC 1928/1929): greeting, optional
 * username/password, CONNECT to `host` (an IPv4 address or a name, sent
 * unresolved) and `port`. Stops early when the server refuses a step.
 */
async function socks(
  proxyPort: number,
  target: { host: string; port: number },
  auth?: { username: string; password: string },
): Promise<SocksResult> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    return await deadline(
      (async () => {
        await conn.write(new Uint8Array([5, 1, auth ? 2 : 0]));
        const [version, method] = await readExactly(conn, 2);
        assert.equal(version, 5);
        if (method === 0xff) return { method, conn };
        let authStatus: number | undefined;
        if (auth) {
          const u = encoder.encode(auth.username);
          const p = encoder.encode(auth.password);
          await conn.write(new Uint8Array([1, u.length, ...u, p.length, ...p]));
          authStatus = (await readExactly(conn, 2))[1];
          if (authStatus !== 0) return { method, authStatus, conn };
        }
        const v4 = target.host.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
        const addr = v4
          ? [1, ...v4.slice(1).map(Number)]
          : [3, encoder.encode(target.host).length, ...encoder.encode(target.host)];
        await conn.write(
          new Uint8Array([5, 1, 0, ...addr, target.port >> 8, target.port & 0xff]),
        );
        const [v, reply, , atyp] = await readExactly(conn, 4);
        assert.equal(v, 5);
        const rest = atyp === 1 ? 6 : atyp === 4 ? 18 : (await readExactly(conn, 1))[0] + 2;
        await readExactly(conn, rest);
        return { method, authStatus, reply, conn };
      })(),
      15_000,
      `SOCKS5 exchange with 127.0.0.1:${proxyPort}`,
    );
  } catch (err) {
    closeQuietly(conn);
    throw err;
  }
}

/** One "ping" round trip on an open connection to an echo target. */
async function echoOnce(conn: Deno.Conn, text: string): Promise<string> {
  await conn.write(encoder.encode(text));
  await conn.closeWrite();
  return decoder.decode(await deadline(readToEnd(conn), 10_000, "echo through SOCKS"));
}

/** Add a SOCKS PFO on 127.0.0.1:0 and return its port. */
async function addSocks(consoleProc: ConsoleProc, name: string): Promise<number> {
  await cliOk(consoleProc, "pfo", "add", name, "--socks", "--listen", "127.0.0.1:0");
  const pfo = await pfoStatus(consoleProc, name);
  assert.equal(pfo.proto, "socks");
  return hostPort(pfo.bound[0]).port;
}

/** Run curl (bounded by --max-time). */
async function curl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("curl", {
    args: ["--silent", "--show-error", "--max-time", "10", "--noproxy", "", ...args],
    env: { ALL_PROXY: "", HTTP_PROXY: "", http_proxy: "", all_proxy: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

/** An HTTP server on 127.0.0.1:0 answering `body`. */
function httpTarget(body: string): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(body),
  );
}

// --- port ranges ---------------------------------------------------------------

Deno.test("a range PFO of 500 ports forwards every port to its one target and lists as one PFO", async () => {
  const SIZE = 500;
  await using pair = await startPair();
  await using target = namedTarget();
  const start = freeRange(SIZE);
  const end = start + SIZE - 1;
  const out = await cliOk(
    pair.console,
    "pfo",
    "add",
    "wide",
    "--listen",
    `127.0.0.1:${start}-${end}`,
    "--target",
    `127.0.0.1:${target.port}`,
  );
  assert.match(out, /listening\(500\)/);

  const ports = Array.from({ length: SIZE }, (_, i) => start + i);
  const answers = await inBatches(ports, 50, (p) => ask(p, `via ${p}`));
  const wrong = ports.filter((p, i) => answers[i] !== `${target.port}:via ${p}\n`);
  assert.deepEqual(wrong, [], `ports that did not reach the target: ${wrong.slice(0, 10)}`);
  assert.equal(target.accepted(), SIZE);

  const list = await pfoList(pair.console);
  assert.equal(list.length, 1, "a range must be one PFO");
  assert.equal(list[0].listeners, SIZE);
  assert.equal(list[0].state, "listening");
  assert.equal(list[0].listen, `127.0.0.1:${start}-${end}`);
  const text = await cliOk(pair.console, "pfo", "list");
  const rows = text.trim().split("\n").slice(1);
  assert.equal(rows.length, 1, text);
  assert.match(rows[0], /^wide\s+tcp\s+.*listening\(500\)/);
});

Deno.test("a range PFO maps its ports in order onto a target range of the same size", async () => {
  const SIZE = 5;
  await using pair = await startPair();
  // Five contiguous target ports, each saying which it is.
  const targetStart = freeRange(SIZE);
  const targets = Array.from({ length: SIZE }, (_, i) => namedTarget(targetStart + i));
  try {
    const start = freeRange(SIZE);
    await cliOk(
      pair.console,
      "pfo",
      "add",
      "mapped",
      "--listen",
      `${start}-${start + SIZE - 1}`,
      "--target",
      `127.0.0.1:${targetStart}-${targetStart + SIZE - 1}`,
    );
    const answers = await inBatches(
      Array.from({ length: SIZE }, (_, i) => start + i),
      SIZE,
      (p) => ask(p, "who"),
    );
    assert.deepEqual(
      answers,
      Array.from({ length: SIZE }, (_, i) => `${targetStart + i}:who\n`),
    );
    assert.deepEqual(targets.map((t) => t.accepted()), Array(SIZE).fill(1));
  } finally {
    for (const t of targets) await t[Symbol.asyncDispose]();
  }
});

Deno.test("a range with taken ports: `pfo add` exits 1 naming exactly those ports and binds none; from the file, the rest serve", async () => {
  const SIZE = 10;
  await using pair = await startPair();
  await using target = namedTarget();
  const start = freeRange(SIZE);
  const taken = [start + 2, start + 7, start + 8];
  const holders = taken.map((port) => Deno.listen({ hostname: "127.0.0.1", port }));
  const free = Array.from({ length: SIZE }, (_, i) => start + i).filter((p) => !taken.includes(p));
  try {
    const r = await pair.console.cli(
      "pfo",
      "add",
      "holey",
      "--listen",
      `${start}-${start + SIZE - 1}`,
      "--target",
      `127.0.0.1:${target.port}`,
    );
    assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.stderr}${r.stdout}`);
    const why = `ports ${start + 2}, ${start + 7}-${start + 8}: address already in use`;
    assert.ok(r.stderr.includes(why), `stderr does not say "${why}":\n${r.stderr}`);
    assert.match(r.stderr, /nothing was saved/);
    // No other port of the range is named.
    const named = [...r.stderr.matchAll(/\b(\d{5})\b/g)].map((m) => Number(m[1]))
      .filter((p) => p >= start && p < start + SIZE);
    assert.deepEqual([...new Set(named)].sort(), [start + 2, start + 7, start + 8]);
    // All or nothing: not one port of the range was left listening.
    const list = JSON.parse((await pair.console.cli("pfo", "list", "--json")).stdout);
    assert.deepEqual(list, []);
    for (const p of free) {
      await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: p }), `port ${p}`);
    }

    // The same range written into the settings file: it serves every port it can.
    const mark = pair.console.out.mark;
    await Deno.writeTextFile(
      pair.console.settingsPath,
      `pfos:\n  - name: holey\n    listen: "${start}-${
        start + SIZE - 1
      }"\n    target: "127.0.0.1:${target.port}"\n`,
    );
    await pair.console.out.waitFor(/Settings reloaded from .*: 1 PFO changed/, { from: mark });
    const pfo = await pfoStatus(pair.console, "holey");
    assert.equal(pfo.state, "partial");
    assert.equal(pfo.listeners, SIZE - taken.length);
    assert.ok(pfo.error?.includes(why), `status error: ${pfo.error}`);
    const answers = await inBatches(free, SIZE, (p) => ask(p, `via ${p}`));
    assert.deepEqual(answers, free.map((p) => `${target.port}:via ${p}\n`));
    await pair.console.out.waitFor(/PFO ports failed .*pfo=holey/);
  } finally {
    for (const h of holders) closeQuietly(h);
  }
});

Deno.test("disable, enable, edit and rm act on every port of a range", async () => {
  const SIZE = 20;
  await using pair = await startPair();
  await using first = namedTarget();
  await using second = namedTarget();
  const start = freeRange(SIZE);
  const ports = Array.from({ length: SIZE }, (_, i) => start + i);
  const allAnswer = async (portList: number[], targetPort: number) => {
    const answers = await inBatches(portList, SIZE, (p) => ask(p, "hi"));
    assert.deepEqual(answers, portList.map(() => `${targetPort}:hi\n`));
  };
  const allRefused = async (portList: number[]) => {
    const results = await inBatches(portList, SIZE, refused);
    assert.deepEqual(
      portList.filter((_, i) => !results[i]),
      [],
      "ports still listening",
    );
  };
  await cliOk(
    pair.console,
    "pfo",
    "add",
    "span",
    "--listen",
    `${start}-${start + SIZE - 1}`,
    "--target",
    `127.0.0.1:${first.port}`,
  );
  await allAnswer(ports, first.port);

  await cliOk(pair.console, "pfo", "disable", "span");
  await allRefused(ports);
  const disabled = await pfoStatus(pair.console, "span");
  assert.equal(disabled.state, "disabled");
  assert.equal(disabled.listeners, 0);

  await cliOk(pair.console, "pfo", "enable", "span");
  await allAnswer(ports, first.port);
  assert.equal((await pfoStatus(pair.console, "span")).listeners, SIZE);

  await cliOk(pair.console, "pfo", "edit", "span", "--target", `127.0.0.1:${second.port}`);
  await allAnswer(ports, second.port);

  const moved = freeRange(SIZE);
  const movedPorts = Array.from({ length: SIZE }, (_, i) => moved + i);
  await cliOk(pair.console, "pfo", "edit", "span", "--listen", `${moved}-${moved + SIZE - 1}`);
  await allAnswer(movedPorts, second.port);
  await allRefused(ports.filter((p) => !movedPorts.includes(p)));

  await cliOk(pair.console, "pfo", "rm", "span");
  await allRefused(movedPorts);
  assert.deepEqual(await pfoList(pair.console), []);
});

// --- SOCKS5 --------------------------------------------------------------------

Deno.test("a SOCKS PFO connects by IPv4 address and by domain name", async () => {
  await using pair = await startPair();
  await using echo = echoTarget();
  const port = await addSocks(pair.console, "proxy");

  const byIp = await socks(port, { host: "127.0.0.1", port: echo.port });
  try {
    assert.equal(byIp.method, 0);
    assert.equal(byIp.reply, 0, `reply ${byIp.reply} to CONNECT 127.0.0.1:${echo.port}`);
    assert.equal(await echoOnce(byIp.conn, "by address"), "by address");
  } finally {
    closeQuietly(byIp.conn);
  }
  const byName = await socks(port, { host: "localhost", port: echo.port });
  try {
    assert.equal(byName.reply, 0, `reply ${byName.reply} to CONNECT localhost:${echo.port}`);
    assert.equal(await echoOnce(byName.conn, "by name"), "by name");
  } finally {
    closeQuietly(byName.conn);
  }
  // The name travelled to the Daemon as a name.
  await pair.daemon.out.waitFor(
    new RegExp(`connection opened .*target=localhost:${echo.port} .*via=127\\.0\\.0\\.1:`),
  );
  await pair.console.out.waitFor(new RegExp(`connection opened .*target=localhost:${echo.port}`));

  // And a real client: curl through the proxy by address.
  await using http = httpTarget("hello over socks");
  const r = await curl("--socks5", `127.0.0.1:${port}`, `http://127.0.0.1:${http.addr.port}/`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "hello over socks");
});

const HIDDEN_NAME = "only-at-home.test";

/** Why the Daemon cannot get a private /etc/hosts here, or null if it can. */
async function privateHostsBlocker(): Promise<string | null> {
  try {
    const probe = await new Deno.Command("unshare", {
      args: ["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts && echo ok"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (probe.code === 0 && decoder.decode(probe.stdout).trim() === "ok") return null;
    return `unshare -m + mount --bind failed (exit ${probe.code}): ${
      decoder.decode(probe.stderr).trim()
    }`;
  } catch (err) {
    return `cannot run unshare: ${err instanceof Error ? err.message : err}`;
  }
}

const hostsBlocker = await privateHostsBlocker();
if (hostsBlocker) {
  console.error(
    `NOT RUN: "a SOCKS domain name resolves only on the Daemon's side" needs the Daemon in its own ` +
      `mount namespace with a private /etc/hosts, and here ${hostsBlocker}`,
  );
}

Deno.test({
  name: "a SOCKS domain name resolves only on the Daemon's side (private /etc/hosts)",
  ignore: hostsBlocker !== null,
  fn: async () => {
    // The Console's side, this process included, cannot resolve the name...
    const here = await deadline(
      lookup(HIDDEN_NAME).then((a) => `resolved to ${a.address}`, (err) => `failed: ${err.code}`),
      15_000,
      `lookup of ${HIDDEN_NAME} in the test process`,
    );
    assert.match(here, /^failed/, `${HIDDEN_NAME} must not resolve on the Console's side`);

    // ...while the Daemon, in its own mount namespace, has it in /etc/hosts.
    const hostsDir = await tempDir("pf-hosts-");
    const hostsFile = `${hostsDir}/hosts`;
    await Deno.writeTextFile(hostsFile, `127.0.0.1 localhost\n127.0.0.1 ${HIDDEN_NAME}\n`);
    await using consoleProc = await startConsole({ args: ["--auto-accept"] });
    await using daemon = await startDaemon(consoleProc, {
      prefix: [
        "unshare",
        "-m",
        "sh",
        "-c",
        `mount --bind '${hostsFile}' /etc/hosts && exec "$0" "$@"`,
      ],
    });
    await daemon.out.waitFor(/Session established/);
    await consoleProc.out.waitFor(/Session established/);
    await using http = httpTarget("hello from home");
    await using echo = echoTarget();
    const port = await addSocks(consoleProc, "home");

    // curl hands the name to the proxy unresolved...
    const remote = await curl(
      "--socks5-hostname",
      `127.0.0.1:${port}`,
      `http://${HIDDEN_NAME}:${http.addr.port}/`,
    );
    assert.equal(remote.code, 0, `curl --socks5-hostname failed: ${remote.stderr}`);
    assert.equal(remote.stdout, "hello from home");
    // ...which curl itself, resolving locally, cannot do.
    const local = await curl(
      "--socks5",
      `127.0.0.1:${port}`,
      `http://${HIDDEN_NAME}:${http.addr.port}/`,
    );
    assert.notEqual(local.code, 0, "curl resolved the hidden name on the Console's side");

    const mine = await socks(port, { host: HIDDEN_NAME, port: echo.port });
    try {
      assert.equal(mine.reply, 0, `reply ${mine.reply} to CONNECT ${HIDDEN_NAME}:${echo.port}`);
      assert.equal(await echoOnce(mine.conn, "home sweet home"), "home sweet home");
    } finally {
      closeQuietly(mine.conn);
    }
    await daemon.out.waitFor(
      new RegExp(`connection opened .*target=${HIDDEN_NAME}:${echo.port} .*via=127\\.0\\.0\\.1:`),
    );
    // The Console's `resolve` asks the Daemon, so it knows the name too.
    const resolved = await consoleProc.cli("resolve", HIDDEN_NAME, "--json");
    assert.equal(resolved.code, 0, resolved.stderr);
    assert.deepEqual(JSON.parse(resolved.stdout).addresses, ["127.0.0.1"]);
    await Deno.remove(hostsDir, { recursive: true });
  },
});

Deno.test("a SOCKS CONNECT to a port nobody listens on gets reply 0x05 (connection refused)", async () => {
  await using pair = await startPair();
  const port = await addSocks(pair.console, "proxy");
  const dead = deadPort();
  const r = await socks(port, { host: "127.0.0.1", port: dead });
  try {
    assert.equal(r.reply, 0x05);
    // The Console closes the client after the reply.
    assert.equal((await deadline(readToEnd(r.conn), 5_000, "close after the reply")).length, 0);
  } finally {
    closeQuietly(r.conn);
  }
  await pair.console.out.waitFor(new RegExp(`target=127\\.0\\.0\\.1:${dead} .*code=refused`));
});

Deno.test("a SOCKS CONNECT the Daemon's allow-list denies gets reply 0x02 (not allowed)", async () => {
  await using echo = echoTarget();
  await using other = echoTarget();
  await using pair = await startPair({
    daemon: { args: ["--allow", `127.0.0.1:${echo.port}`] },
  });
  const port = await addSocks(pair.console, "proxy");

  const denied = await socks(port, { host: "127.0.0.1", port: other.port });
  closeQuietly(denied.conn);
  assert.equal(denied.reply, 0x02);
  const deniedName = await socks(port, { host: "localhost", port: other.port });
  closeQuietly(deniedName.conn);
  assert.equal(deniedName.reply, 0x02, "a name on a port no rule allows");
  // A name no rule names is allowed when it resolves (on the Daemon's side)
  // to an address a rule allows.
  const allowedName = await socks(port, { host: "localhost", port: echo.port });
  closeQuietly(allowedName.conn);
  assert.equal(allowedName.reply, 0, "localhost resolves to the allowed 127.0.0.1");

  const allowed = await socks(port, { host: "127.0.0.1", port: echo.port });
  try {
    assert.equal(allowed.reply, 0);
    assert.equal(await echoOnce(allowed.conn, "allowed"), "allowed");
  } finally {
    closeQuietly(allowed.conn);
  }
  await pair.daemon.out.waitFor(
    new RegExp(`connection refused by the allow-list .*target=127\\.0\\.0\\.1:${other.port}`),
  );
});

Deno.test("SOCKS username/password from the settings lets the right client in and refuses others", async () => {
  await using pair = await startPair({
    console: { settings: 'socksUsername: alice\nsocksPassword: "s3cret pass"\n' },
  });
  await using echo = echoTarget();
  const port = await addSocks(pair.console, "locked");
  const target = { host: "127.0.0.1", port: echo.port };

  const right = await socks(port, target, { username: "alice", password: "s3cret pass" });
  try {
    assert.equal(right.method, 2);
    assert.equal(right.authStatus, 0);
    assert.equal(right.reply, 0);
    assert.equal(await echoOnce(right.conn, "let me in"), "let me in");
  } finally {
    closeQuietly(right.conn);
  }

  const wrong = await socks(port, target, { username: "alice", password: "guess" });
  try {
    assert.equal(wrong.method, 2);
    assert.notEqual(wrong.authStatus, 0, "a wrong password was accepted");
    assert.equal(wrong.reply, undefined);
    assert.equal((await deadline(readToEnd(wrong.conn), 5_000, "close after auth")).length, 0);
  } finally {
    closeQuietly(wrong.conn);
  }

  const anonymous = await socks(port, target);
  closeQuietly(anonymous.conn);
  assert.equal(anonymous.method, 0xff, "a client without credentials was let in");

  await using http = httpTarget("authenticated");
  const url = `http://127.0.0.1:${http.addr.port}/`;
  const ok = await curl("--proxy", `socks5h://alice:s3cret%20pass@127.0.0.1:${port}`, url);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, "authenticated");
  const bad = await curl("--proxy", `socks5h://alice:nope@127.0.0.1:${port}`, url);
  assert.notEqual(bad.code, 0, "curl with a wrong password got through");
  await pair.console.out.waitFor(/SOCKS request refused .*wrong SOCKS username or password/);
});

// --- the Daemon's allow-list -----------------------------------------------------

Deno.test("the Daemon's --allow list forwards an allowed target, closes a denied one promptly, and both sides say why", async () => {
  await using allowed = echoTarget();
  await using denied = echoTarget();
  await using pair = await startPair({
    daemon: { args: ["--allow", `127.0.0.1:${allowed.port}`, "--allow", "10.0.0.0/8:22"] },
  });
  await pair.daemon.out.waitFor(
    new RegExp(
      `Allow-list: the Console may reach 127\\.0\\.0\\.1:${allowed.port}, 10\\.0\\.0\\.0/8:22`,
    ),
  );
  for (const [name, port] of [["ok", allowed.port], ["no", denied.port]] as const) {
    await cliOk(
      pair.console,
      "pfo",
      "add",
      name,
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${port}`,
    );
  }
  const okPort = hostPort((await pfoStatus(pair.console, "ok")).bound[0]).port;
  const noPort = hostPort((await pfoStatus(pair.console, "no")).bound[0]).port;

  const conn = await Deno.connect({ hostname: "127.0.0.1", port: okPort });
  try {
    assert.equal(await echoOnce(conn, "through"), "through");
  } finally {
    closeQuietly(conn);
  }

  const refusedConn = await Deno.connect({ hostname: "127.0.0.1", port: noPort });
  try {
    const started = Date.now();
    const got = await deadline(
      readToEnd(refusedConn).catch(() => new Uint8Array()),
      5_000,
      "the denied client was not closed",
    );
    assert.equal(got.length, 0);
    assert.ok(Date.now() - started < 5_000);
  } finally {
    closeQuietly(refusedConn);
  }
  const { input: consoleLine } = await pair.console.out.waitFor(
    new RegExp(`connection failed.*pfo=no .*code=not-allowed`),
  );
  assert.match(consoleLine ?? "", /not allowed by the Daemon/);
  const { input: daemonLine } = await pair.daemon.out.waitFor(
    new RegExp(`connection refused by the allow-list .*target=127\\.0\\.0\\.1:${denied.port}`),
  );
  assert.match(daemonLine ?? "", /not allowed by the Daemon/);
  assert.equal((await pfoStatus(pair.console, "no")).connectionsFailed, 1);
});

Deno.test("`allow:` in the Daemon's settings is in force and shown at start", async () => {
  await using allowed = echoTarget();
  await using denied = echoTarget();
  await using pair = await startPair({
    daemon: { settings: `# only the echo\nallow:\n  - "127.0.0.1:${allowed.port}"\n` },
  });
  await pair.daemon.out.waitFor(
    new RegExp(`Allow-list: the Console may reach 127\\.0\\.0\\.1:${allowed.port}$`),
  );
  const port = await addSocks(pair.console, "proxy");
  const no = await socks(port, { host: "127.0.0.1", port: denied.port });
  closeQuietly(no.conn);
  assert.equal(no.reply, 0x02);
  const yes = await socks(port, { host: "127.0.0.1", port: allowed.port });
  try {
    assert.equal(yes.reply, 0);
  } finally {
    closeQuietly(yes.conn);
  }
});

Deno.test("a Daemon without allow rules says it allows everything", async () => {
  await using pair = await startPair();
  await pair.daemon.out.waitFor(/Allow-list: the Console may reach everything/);
});

Deno.test("a bad allow rule is refused: exit 1 with file:line:col from the settings, exit 2 from --allow", async () => {
  const dir = await tempDir("pf-allow-");
  const settingsPath = `${dir}/portferry-daemon.yaml`;
  await Deno.writeTextFile(settingsPath, 'allow:\n  - "127.0.0.1:80"\n  - "10.0.0.0/33"\n');
  const fingerprint = `SHA256:${"A".repeat(43)}`;
  const fromFile = await runCli("daemon.ts", [
    "127.0.0.1:1",
    "--fingerprint",
    fingerprint,
    "--config",
    settingsPath,
    "--no-reconnect",
  ]);
  assert.equal(fromFile.code, 1, fromFile.stderr);
  assert.ok(
    fromFile.stderr.includes(`${settingsPath}:3:5`),
    `stderr does not point at ${settingsPath}:3:5:\n${fromFile.stderr}`,
  );
  assert.match(fromFile.stderr, /10\.0\.0\.0\/33/);

  const fromFlag = await runCli("daemon.ts", [
    "127.0.0.1:1",
    "--fingerprint",
    fingerprint,
    "--config",
    `${dir}/none.yaml`,
    "--no-reconnect",
    "--allow",
    "db01:99999",
  ]);
  assert.equal(fromFlag.code, 2, fromFlag.stderr);
  assert.match(fromFlag.stderr, /--allow: .*db01:99999/);
  assert.match(fromFlag.stderr, /Usage:/);
  await Deno.remove(dir, { recursive: true });
});
