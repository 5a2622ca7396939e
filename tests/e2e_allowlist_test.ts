/**
 * End-to-end tests that the Daemon reaches the address its allow-list
 * checked: `127.0.0.010` (which the system resolver reads as octal,
 * 127.0.0.8) is refused, never connected, whether it comes as a raw OPEN, a
 * UDP OPEN or a SOCKS5 domain; a canonical target reaches exactly its own
 * listener. Loopback 127.0.0.0/8 is all local on Linux, so listeners on
 * 127.0.0.8 and 127.0.0.10 tell the two readings apart. Also: RESOLVE
 * answers within the allow-list, and a connect refused by Deno's --allow-net
 * is logged as that.
 *
 * @module
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { closeQuietly, hostPort, startDaemon, startPair, taskFlags, within } from "./_harness.ts";
import { rawConsole, type RawConsoleSession } from "./_hostile.ts";
import { encodeMessage } from "../lib/core/codec.ts";
import {
  type Message,
  type OpenErrMessage,
  type OpenOkMessage,
  type ResolveResultMessage,
  Tag,
} from "../lib/core/protocol.ts";

const encoder = new TextEncoder();

// --- helpers -----------------------------------------------------------------

const ADDRESSES = ["127.0.0.8", "127.0.0.10"] as const;

/** A TCP and a UDP listener on one port on each of 127.0.0.8 and 127.0.0.10, counting arrivals. */
async function twinTargets() {
  const hits: Record<string, number> = { "127.0.0.8": 0, "127.0.0.10": 0 };
  const datagrams: Record<string, string[]> = { "127.0.0.8": [], "127.0.0.10": [] };
  const waiters: (() => void)[] = [];
  const arrived = () => {
    for (const wake of waiters.splice(0)) wake();
  };
  let tcp: Deno.TcpListener[] = [];
  let udp: dgram.Socket[] = [];
  for (let attempt = 0; attempt < 20 && tcp.length < 2; attempt++) {
    tcp = [];
    try {
      tcp.push(Deno.listen({ hostname: ADDRESSES[0], port: 0 }));
      tcp.push(Deno.listen({ hostname: ADDRESSES[1], port: tcp[0].addr.port }));
    } catch {
      tcp.forEach(closeQuietly);
      tcp = [];
    }
  }
  assert.equal(tcp.length, 2, "Cannot bind one port on both 127.0.0.8 and 127.0.0.10");
  for (let attempt = 0; attempt < 20 && udp.length < 2; attempt++) {
    udp = [];
    try {
      for (const address of ADDRESSES) {
        const socket = dgram.createSocket("udp4");
        udp.push(socket);
        await new Promise<void>((resolve, reject) => {
          socket.once("error", reject);
          socket.bind(udp.length === 1 ? 0 : udp[0].address().port, address, () => resolve());
        });
        socket.on("message", (data) => {
          datagrams[address].push(new TextDecoder().decode(data));
          arrived();
        });
      }
    } catch {
      udp.forEach((s) => s.close());
      udp = [];
    }
  }
  assert.equal(udp.length, 2, "Cannot bind one UDP port on both 127.0.0.8 and 127.0.0.10");
  const loops = tcp.map(async (listener, i) => {
    try {
      for await (const conn of listener) {
        hits[ADDRESSES[i]]++;
        arrived();
        closeQuietly(conn);
      }
    } catch {
      // Closed.
    }
  });
  return {
    tcpPort: tcp[0].addr.port,
    udpPort: udp[0].address().port,
    hits,
    datagrams,
    /** Resolves once `done()` holds, re-checked on every arrival. */
    async until(done: () => boolean, what: string): Promise<void> {
      await within(
        (async () => {
          for (let i = 0; i < 1000 && !done(); i++) {
            await new Promise<void>((resolve) => waiters.push(resolve));
          }
        })(),
        10_000,
        what,
      );
    },
    async [Symbol.asyncDispose]() {
      tcp.forEach(closeQuietly);
      udp.forEach((s) => s.close());
      await Promise.all(loops);
    },
  };
}

const isOpenReply = (stream: number) => (m: Message): m is OpenOkMessage | OpenErrMessage =>
  (m.tag === Tag.OPEN_OK || m.tag === Tag.OPEN_ERR) && m.stream === stream;

const isResolveResult = (id: number) => (m: Message): m is ResolveResultMessage =>
  m.tag === Tag.RESOLVE_RESULT && m.id === id;

let nextStream = 1;

/** Send an OPEN and wait for the Daemon's OPEN_OK or OPEN_ERR. */
async function open(
  s: RawConsoleSession,
  proto: "tcp" | "udp",
  host: string,
  port: number,
): Promise<OpenOkMessage | OpenErrMessage> {
  const stream = nextStream++;
  await s.send({ tag: Tag.OPEN, stream, proto, host, port, pfo: "raw", client: "127.0.0.1:1" });
  return await s.expect(isOpenReply(stream), `the answer to OPEN ${proto} ${host}:${port}`);
}

let nextId = 1;

/** Send a RESOLVE and wait for the answer. */
async function resolve(s: RawConsoleSession, host: string): Promise<ResolveResultMessage> {
  const id = nextId++;
  await s.send({ tag: Tag.RESOLVE, id, host });
  return await s.expect(isResolveResult(id), `the answer to RESOLVE ${host}`);
}

// --- tests -------------------------------------------------------------------

Deno.test("a Daemon with --allow 127.0.0.10 refuses OPENs for 127.0.0.010 (TCP and UDP) and reaches only the address it checked", async () => {
  await using targets = await twinTargets();
  using con = await rawConsole();
  await using daemon = await startDaemon(con, {
    args: ["--allow", "127.0.0.10", "--allow", "127.10.0.0/16"],
  });
  using s = await con.next();

  // Each of these is getaddrinfo's 127.0.0.8 (or 127.8.0.8) in disguise, or not an address at all.
  for (const host of ["127.0.0.010", "127.10.0.010", "0177.0.0.10", "127.10", "0x7f.0.0.10"]) {
    for (const proto of ["tcp", "udp"] as const) {
      const port = proto === "tcp" ? targets.tcpPort : targets.udpPort;
      const reply = await open(s, proto, host, port);
      assert.equal(reply.tag, Tag.OPEN_ERR, `${proto} ${host}: ${JSON.stringify(reply)}`);
      if (reply.tag === Tag.OPEN_ERR) {
        assert.equal(reply.code, "unresolvable", `${proto} ${host}`);
        assert.match(reply.reason, /not an address and not a name/);
      }
    }
  }
  const mark = daemon.out.mark;
  // A canonical allowed target reaches its own listener, and only that one.
  for (const host of ["127.0.0.10", "::ffff:127.0.0.10", "::FFFF:7F00:A"]) {
    const before = targets.hits["127.0.0.10"];
    const reply = await open(s, "tcp", host, targets.tcpPort);
    assert.equal(reply.tag, Tag.OPEN_OK, `tcp ${host}: ${JSON.stringify(reply)}`);
    if (reply.tag === Tag.OPEN_OK) assert.equal(reply.address, `127.0.0.10:${targets.tcpPort}`);
    await targets.until(() => targets.hits["127.0.0.10"] > before, `${host} to arrive`);
    await s.send({ tag: Tag.RESET, stream: reply.stream, reason: "done" });
  }
  const udp = await open(s, "udp", "::ffff:7f00:a", targets.udpPort);
  assert.equal(udp.tag, Tag.OPEN_OK, JSON.stringify(udp));
  if (udp.tag === Tag.OPEN_OK) assert.equal(udp.address, `127.0.0.10:${targets.udpPort}`);
  await s.send({ tag: Tag.DATAGRAM, stream: udp.stream, data: encoder.encode("hello") });
  await targets.until(() => targets.datagrams["127.0.0.10"].length > 0, "the datagram to arrive");
  // 127.0.0.8 is not allowed: refused, and said so.
  const eight = await open(s, "tcp", "127.0.0.8", targets.tcpPort);
  assert.equal(eight.tag === Tag.OPEN_ERR && eight.code, "not-allowed");

  assert.equal(targets.hits["127.0.0.8"], 0, "a connection reached 127.0.0.8");
  assert.deepEqual(targets.datagrams["127.0.0.8"], [], "a datagram reached 127.0.0.8");
  assert.equal(targets.hits["127.0.0.10"], 3);
  assert.deepEqual(targets.datagrams["127.0.0.10"], ["hello"]);
  const opened = daemon.out.lines.slice(mark).filter((l) => /connection opened/.test(l));
  assert.equal(opened.length, 3);
  for (const line of opened) {
    assert.match(line, new RegExp(`via=127\\.0\\.0\\.10:${targets.tcpPort}`));
  }
  assert.doesNotMatch(daemon.out.text(), /via=127\.0\.0\.8:/);
});

Deno.test("a Daemon without allow rules still refuses 127.0.0.010 and never connects it", async () => {
  await using targets = await twinTargets();
  using con = await rawConsole();
  await using _daemon = await startDaemon(con);
  using s = await con.next();
  for (const host of ["127.0.0.010", "2130706440", "127.0.0.10.", "fe80::1%lo"]) {
    const reply = await open(s, "tcp", host, targets.tcpPort);
    assert.equal(reply.tag === Tag.OPEN_ERR && reply.code, "unresolvable", host);
  }
  const reply = await open(s, "tcp", "127.0.0.8", targets.tcpPort);
  assert.equal(reply.tag, Tag.OPEN_OK);
  await targets.until(() => targets.hits["127.0.0.8"] === 1, "127.0.0.8 to be reached");
  assert.deepEqual(targets.hits, { "127.0.0.8": 1, "127.0.0.10": 0 });
});

Deno.test("a SOCKS5 request for the domain 127.0.0.010 is refused and reaches neither 127.0.0.8 nor 127.0.0.10", async () => {
  await using targets = await twinTargets();
  await using pair = await startPair({ daemon: { args: ["--allow", "127.0.0.10"] } });
  const added = await pair.console.cli(
    "pfo",
    "add",
    "proxy",
    "--socks",
    "--listen",
    "127.0.0.1:0",
  );
  assert.equal(added.code, 0, added.stderr);
  const status = JSON.parse((await pair.console.cli("status", "--json")).stdout);
  const port = hostPort(status.pfos[0].bound[0]).port;

  assert.equal(await socksDomain(port, "127.0.0.010", targets.tcpPort), 0x04, "host unreachable");
  assert.equal(await socksDomain(port, "127.0.0.8", targets.tcpPort), 0x02, "not allowed");
  assert.deepEqual(targets.hits, { "127.0.0.8": 0, "127.0.0.10": 0 });
  assert.equal(await socksDomain(port, "127.0.0.10", targets.tcpPort), 0);
  await targets.until(() => targets.hits["127.0.0.10"] === 1, "127.0.0.10 to be reached");
  assert.deepEqual(targets.hits, { "127.0.0.8": 0, "127.0.0.10": 1 });
  await pair.daemon.out.waitFor(/connection failed .*target=127\.0\.0\.010:.*code=unresolvable/);
});

/** A SOCKS5 CONNECT to a domain name (type 3); returns the reply code. */
async function socksDomain(proxyPort: number, domain: string, port: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    return await within(
      (async () => {
        await conn.write(new Uint8Array([5, 1, 0]));
        await readExactly(conn, 2);
        const name = encoder.encode(domain);
        await conn.write(
          new Uint8Array([5, 1, 0, 3, name.length, ...name, port >> 8, port & 0xff]),
        );
        const [, reply] = await readExactly(conn, 2);
        return reply;
      })(),
      15_000,
      `SOCKS5 CONNECT ${domain}`,
    );
  } finally {
    closeQuietly(conn);
  }
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return buf;
}

Deno.test("RESOLVE with allow rules answers only names the rules allow, and addresses only as themselves", async () => {
  using con = await rawConsole();
  {
    await using daemon = await startDaemon(con, { args: ["--allow", "127.0.0.10"] });
    using s = await con.next();
    const mapped = await resolve(s, "::ffff:127.0.0.10");
    assert.deepEqual([mapped.error, mapped.addresses], [null, ["127.0.0.10"]]);
    // localhost exists, but neither its name nor its address is allowed: nothing is disclosed.
    for (const host of ["localhost", "127.0.0.8"]) {
      const refused = await resolve(s, host);
      assert.deepEqual(refused.addresses, [], host);
      assert.match(refused.error ?? "", /not allowed by the Daemon/, host);
      assert.doesNotMatch(refused.error ?? "", /127\.0\.0\.1\b/, host);
    }
    const odd = await resolve(s, "127.0.0.010");
    assert.deepEqual(odd.addresses, []);
    assert.match(odd.error ?? "", /not an address and not a name/);
    assert.doesNotMatch(
      daemon.out.text(),
      /resolved for the Console .*host=(localhost|127\.0\.0\.010)/,
    );
  }
  {
    // A name rule (on any port) lets the name be resolved.
    await using _daemon = await startDaemon(con, { args: ["--allow", "localhost:1"] });
    using s = await con.next();
    const named = await resolve(s, "localhost");
    assert.equal(named.error, null);
    assert.ok(named.addresses.includes("127.0.0.1"), named.addresses.join());
  }
});

Deno.test("a connect refused by the Daemon's --allow-net is logged as that, not as the allow-list", async () => {
  using con = await rawConsole();
  using target = Deno.listen({ hostname: "127.0.0.2", port: 0 });
  // The Daemon may reach 127.0.0.1 (its Console and its local control) and nothing else.
  const flags = (await taskFlags("daemon")).map((f) =>
    f === "--allow-net" ? "--allow-net=127.0.0.1" : f
  );
  assert.ok(flags.includes("--allow-net=127.0.0.1"), flags.join(" "));
  await using daemon = await startDaemon(con, { flags });
  using s = await con.next();
  const reply = await open(s, "tcp", "127.0.0.2", target.addr.port);
  assert.equal(reply.tag === Tag.OPEN_ERR && reply.code, "not-allowed", JSON.stringify(reply));
  const { input } = await daemon.out.waitFor(
    /connection refused by the Daemon's --allow-net permission .*target=127\.0\.0\.2:/,
  );
  assert.match(input ?? "", /not permitted by the Daemon's --allow-net/);
  assert.doesNotMatch(daemon.out.text(), /refused by the allow-list/);
});

Deno.test("a Daemon sent 5,000 RESOLVEs at once answers every one, refusing those past its 64 running and 256 waiting lookups", async () => {
  using con = await rawConsole();
  await using daemon = await startDaemon(con);
  using s = await con.next();
  const total = 5_000;
  const frames = Array.from(
    { length: total },
    (_, i) => encodeMessage({ tag: Tag.RESOLVE, id: 10_000 + i, host: "localhost" }),
  );
  const burst = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((at, f) => (burst.set(f, at), at + f.length), 0);
  for (let at = 0; at < burst.length;) at += await s.conn.write(burst.subarray(at));

  const answered = new Set<number>();
  let refused = 0;
  for (let i = 0; i < total; i++) {
    const r = await s.expect(
      (m): m is ResolveResultMessage => m.tag === Tag.RESOLVE_RESULT,
      "RESOLVE_RESULT",
    );
    answered.add(r.id);
    if (r.error !== null) {
      assert.match(r.error, /the Daemon has 64 lookups running and 256 waiting; try again later/);
      refused++;
    } else {
      assert.ok(r.addresses.includes("127.0.0.1"), r.addresses.join());
    }
  }
  assert.equal(answered.size, total, "every RESOLVE is answered once");
  assert.ok(refused > 0 && refused <= total - 64 - 256, `${refused} refused`);
  await daemon.out.waitFor(/WARN +resolve limit reached, queueing lookups +limit=64 count=1/);
  await daemon.out.waitFor(/WARN +resolve queue full, refusing lookups +limit=256 count=1/);
});
