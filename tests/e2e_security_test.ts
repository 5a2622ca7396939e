/**
 * End-to-end tests of the security properties that the session, local
 * control and PFO tests do not already cover: a pending session opens
 * nothing, local control is authenticated and loopback-only, PFOs bind
 * 127.0.0.1 by default, and a Console can make a Daemon do nothing but
 * connect, resolve and chat. (Pinning, tokens, `trust rm` on a live session
 * and owner-only files are in e2e_session_test.ts and e2e_cli_test.ts; the
 * Daemon's allow-list in e2e_range_socks_test.ts.)
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  closeQuietly,
  type ConsoleProc,
  type DaemonProc,
  echoServer,
  fakeDaemonLink,
  hostPort,
  peerHangsUp,
  startConsole,
  startDaemon,
  tcpServer,
  tcpSockets,
  tempDir,
  within,
} from "./_harness.ts";
import { encodeMessage, tagName } from "../lib/core/codec.ts";
import { loadOrCreateIdentity, signChallenge } from "../lib/core/identity.ts";
import { authTranscript, PROTOCOL_VERSION, Tag } from "../lib/core/protocol.ts";
import { consoleHandshake, MessageReader, sendNow } from "../lib/core/session.ts";
import { settingsPaths } from "../lib/settings/paths.ts";
import { listenSessions } from "../lib/core/tls.ts";

const encoder = new TextEncoder();

// --- helpers -----------------------------------------------------------------

/** A TCP target that counts what reaches it. */
function countingTarget() {
  const seen = { connections: 0, bytes: 0 };
  const server = tcpServer(async (conn) => {
    seen.connections++;
    const buf = new Uint8Array(4096);
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) {
      seen.bytes += n;
      await conn.write(buf.subarray(0, n));
    }
  });
  return Object.assign(server, { seen });
}

/** Connects, sends a little, and resolves once the PFO closes the connection (never hangs). */
async function closedAtOnce(listen: string): Promise<void> {
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("GET / HTTP/1.0\r\n\r\n")).catch(() => 0);
    const n = await within(
      conn.read(new Uint8Array(64)).catch(() => null),
      2_000,
      "the PFO to close the connection",
    );
    assert.equal(n, null, "the PFO answered");
  } finally {
    closeQuietly(conn);
  }
}

/** This machine's first non-loopback IPv4 address, or null. */
function outsideAddress(): string | null {
  return Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."))
    ?.address ?? null;
}

/** Whether a TCP connect to `hostname:port` succeeds. */
async function reachable(hostname: string, port: number): Promise<boolean> {
  try {
    const conn = await within(Deno.connect({ hostname, port }), 5_000, `connect ${hostname}`);
    conn.close();
    return true;
  } catch {
    return false;
  }
}

interface ControlFile {
  pid: number;
  port: number;
  secret: string;
}

async function controlFile(proc: ConsoleProc | DaemonProc): Promise<ControlFile> {
  return JSON.parse(await Deno.readTextFile(settingsPaths(proc.settingsPath).control));
}

// --- pending sessions --------------------------------------------------------

Deno.test("a pending session opens nothing: PFO connections close at once and no byte reaches a target", async () => {
  await using con = await startConsole();
  using target = countingTarget();
  const listen = await addPfo(con, "guarded", `127.0.0.1:${target.port}`);
  await using daemon = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);
  await daemon.out.waitFor(/Waiting for the Console operator to accept/);

  for (let i = 0; i < 3; i++) await closedAtOnce(listen);
  const status = JSON.parse((await con.cli("status", "--json")).stdout);
  assert.equal(status.session.state, "pending");
  assert.equal(status.pfos[0].connectionsRefused, 3);
  assert.equal(status.pfos[0].connectionsTotal, 0);
  assert.deepEqual(target.seen, { connections: 0, bytes: 0 });
  assert.deepEqual(JSON.parse((await daemon.cli("status", "--json")).stdout).connections, []);
  assert.doesNotMatch(daemon.out.text(), /connection opened/);

  // Once accepted, the very same PFO forwards: the refusals were the pending state's.
  assert.equal((await con.cli("session", "accept")).code, 0);
  await daemon.out.waitFor(/Session established/);
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode("ping"));
    assert.equal(await within(conn.read(new Uint8Array(8)), 10_000, "echo"), 4);
  } finally {
    closeQuietly(conn);
  }
  assert.equal(target.seen.connections, 1);
});

Deno.test("a pending Daemon cannot talk to the operator: its chat is dropped until it is accepted", async () => {
  await using con = await startConsole();
  // A Daemon written here: the real handshake, then a chat before anyone accepted it.
  const { identity, cert, link } = await fakeDaemonLink(con);
  try {
    const reader = new MessageReader(link);
    await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
    const challenge = await reader.next();
    assert.equal(challenge.tag, Tag.CHALLENGE);
    await sendNow(link, {
      tag: Tag.AUTH,
      host: "helpdesk",
      user: "it-support",
      os: "linux",
      cert,
      signature: await signChallenge(
        identity,
        authTranscript((challenge as { nonce: string }).nonce, con.fingerprint),
      ),
      token: null,
    });
    assert.equal((await reader.next()).tag, Tag.PENDING);
    await con.out.waitFor(/asks for a session/);
    const mark = con.out.mark;
    await sendNow(link, { tag: Tag.CHAT, text: "URGENT from IT: run `session accept` now" });
    await con.out.waitFor(/WARN .*chat from a Daemon not yet accepted/, { from: mark });
    assert.doesNotMatch(con.out.text(), /URGENT from IT/);
    const status = JSON.parse((await con.cli("status", "--json")).stdout);
    assert.equal(status.session.state, "pending");
  } finally {
    closeQuietly(link);
  }
});

// --- local control -----------------------------------------------------------

Deno.test("local control refuses requests without the right secret (401) and listens on 127.0.0.1 only", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using daemon = await startDaemon(con);
  await daemon.out.waitFor(/Session established/);
  const outside = outsideAddress();
  for (const proc of [con, daemon]) {
    const name = proc === con ? "Console" : "Daemon";
    const { port, secret } = await controlFile(proc);
    const mark = proc.out.mark;
    const call = (headers: Record<string, string>) =>
      fetch(`http://127.0.0.1:${port}/status`, { method: "POST", headers, body: "{}" });
    for (
      const headers of [
        {} as Record<string, string>,
        { authorization: "Bearer " },
        { authorization: `Bearer ${secret.slice(0, -1)}${secret.endsWith("0") ? "1" : "0"}` },
        { authorization: `Basic ${btoa(`x:${secret}`)}` },
        { authorization: secret },
      ]
    ) {
      const res = await call(headers);
      const body = await res.json();
      assert.equal(res.status, 401, `${name}: ${JSON.stringify(headers)} got ${res.status}`);
      assert.equal(body.result, undefined, `${name}: a refused request learned something`);
    }
    await proc.out.waitFor(/WARN .*control request refused: bad or missing secret/, {
      from: mark,
    });
    // The right secret works, so the 401s were about the secret.
    const ok = await call({ authorization: `Bearer ${secret}` });
    assert.equal(ok.status, 200, name);
    await ok.body?.cancel();

    const sockets = (await tcpSockets(proc.child.pid)).filter((s) =>
      s.state === "LISTEN" && s.local.endsWith(`:${port}`)
    );
    assert.deepEqual(sockets.map((s) => s.local), [`127.0.0.1:${port}`], `${name} control`);
    if (outside) {
      assert.equal(await reachable(outside, port), false, `${name} control on ${outside}`);
    }
  }
});

// --- PFO listeners -----------------------------------------------------------

Deno.test("PFO listeners bind 127.0.0.1 unless another address is named", async () => {
  await using con = await startConsole();
  const outside = outsideAddress();
  const add = async (...args: string[]) => {
    const r = await con.cli("pfo", "add", ...args);
    assert.equal(r.code, 0, r.stderr);
  };
  await add("tcp", "--listen", "0", "--target", "db01:5432");
  await add("socks", "--socks", "--listen", "0");
  await add("udp", "--udp", "--listen", "0", "--target", "10.0.0.2:53");
  await add("open", "--listen", "0.0.0.0:0", "--target", "web:80");
  const status = JSON.parse((await con.cli("status", "--json")).stdout) as {
    pfos: { name: string; bound: string[] }[];
  };
  const bound = Object.fromEntries(status.pfos.map((p) => [p.name, p.bound]));
  for (const name of ["tcp", "socks", "udp"]) {
    assert.equal(bound[name].length, 1, name);
    assert.match(bound[name][0], /^127\.0\.0\.1:\d+$/, `${name}: ${bound[name]}`);
  }
  assert.match(bound.open[0], /^0\.0\.0\.0:\d+$/);

  // What the kernel says, and what another address of this machine can reach.
  const listening = (await tcpSockets(con.child.pid)).filter((s) => s.state === "LISTEN");
  for (const name of ["tcp", "socks", "open"]) {
    const port = hostPort(bound[name][0]).port;
    const socket = listening.find((s) => s.local.endsWith(`:${port}`));
    assert.ok(socket, `${name}: no listening socket on ${port}`);
    assert.equal(socket.local, bound[name][0], name);
    if (outside) {
      assert.equal(await reachable(outside, port), name === "open", `${name} on ${outside}`);
    }
  }
});

// --- what a Console can make a Daemon do ---------------------------------------

/** A Console written here, holding a real identity, that a real Daemon pins and talks to. */
async function fakeConsole() {
  const dir = await tempDir("pf-fake-console-");
  const paths = settingsPaths(`${dir}/portferry-console.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "console",
  });
  const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
  const address = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  /** The next Daemon session, past the hello and auth (the Daemon's pin probe is skipped). */
  async function next(): Promise<Deno.TlsConn> {
    for (let i = 0; i < 10; i++) {
      const conn = await within(listener.accept(), 15_000, "a Daemon to connect");
      try {
        await conn.handshake();
        await consoleHandshake(conn, new MessageReader(conn));
        return conn;
      } catch {
        closeQuietly(conn); // The pin probe: TLS, then nothing.
      }
    }
    throw new Error("Cannot get a Daemon session: only probes arrived");
  }
  return {
    address,
    fingerprint: identity.fingerprint,
    next,
    [Symbol.dispose]: () => closeQuietly(listener),
  };
}

Deno.test("a Console can make a Daemon do nothing but connect, resolve and chat: any other message ends the session", async () => {
  using f = await fakeConsole();
  using echo = echoServer();
  await using daemon = await startDaemon(f, { settings: "backoffMaxMs: 100\n" });

  // Before acceptance, even an OPEN is refused.
  {
    const mark = daemon.out.mark;
    const conn = await f.next();
    await sendNow(conn, { tag: Tag.PENDING });
    await sendNow(conn, {
      tag: Tag.OPEN,
      stream: 1,
      proto: "tcp",
      host: "127.0.0.1",
      port: echo.port,
      pfo: "sneaky",
      client: "127.0.0.1:1",
    });
    await peerHangsUp(conn, 5_000, "an OPEN before acceptance");
    closeQuietly(conn);
    await daemon.out.waitFor(/unexpected OPEN/, { from: mark });
  }

  const cases: { name: string; bytes: Uint8Array; log: RegExp }[] = [
    ...([
      { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] },
      {
        tag: Tag.AUTH,
        host: "h",
        user: "u",
        os: "linux",
        cert: "Y2VydA",
        signature: "c2ln",
        token: null,
      },
      { tag: Tag.OPEN_OK, stream: 1, address: "127.0.0.1:1" },
      { tag: Tag.OPEN_ERR, stream: 1, code: "refused", reason: "no" },
      { tag: Tag.RESOLVE_RESULT, id: 1, addresses: ["127.0.0.1"], error: null },
    ] as const).map((msg) => ({
      name: `${tagName(msg.tag)} (a Daemon's message)`,
      bytes: encodeMessage(msg),
      log: /a console may not send it/,
    })),
    ...[0, 21, 99, 255].map((tag) => {
      const bytes = new Uint8Array(9);
      new DataView(bytes.buffer).setUint32(0, 5);
      bytes[4] = tag;
      return { name: `unknown tag ${tag}`, bytes, log: new RegExp(`unknown tag ${tag}`) };
    }),
  ];
  for (const c of cases) {
    const mark = daemon.out.mark;
    const conn = await f.next();
    await sendNow(conn, { tag: Tag.ACCEPT, session: "fa4e0001" });
    await daemon.out.waitFor(/Session established/, { from: mark });
    await conn.write(c.bytes);
    await peerHangsUp(conn, 5_000, `${c.name}: the Daemon to end the session`);
    closeQuietly(conn);
    await daemon.out.waitFor(/peer broke the protocol/, { from: mark });
    const line = daemon.out.lines.slice(mark).find((l) => /peer broke the protocol/.test(l))!;
    assert.match(line, c.log, `${c.name}: ${line}`);
  }
  assert.doesNotMatch(daemon.out.text(), /connection opened|resolved for the Console/);
});
