import assert from "node:assert/strict";
import { CERT_HOSTNAMES, type Identity, loadOrCreateIdentity } from "../core/identity.ts";
import { createLogger, type LogLevel } from "../core/log.ts";
import { TrustedProxies } from "../net/forwarded.ts";
import { readHttpHead } from "../core/websocket.ts";
import { type FrontLink, handshakeSource, SessionFront } from "./front.ts";

interface Fixture {
  readonly identity: Identity;
  readonly lines: string[];
  front(
    opts: {
      maxPending: number;
      deadlineMs: number;
      maxPendingPerSource?: number;
      hostname?: string;
      onLink?: (l: FrontLink) => void;
      websocketPath?: string | null;
      trustedProxies?: TrustedProxies;
    },
  ): SessionFront;
}

async function withFront(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  const fronts: SessionFront[] = [];
  try {
    const identity = await loadOrCreateIdentity(
      { key: `${dir}/c.key`, cert: `${dir}/c.crt` },
      { role: "console" },
    );
    const lines: string[] = [];
    const log = createLogger({ sink: (line: string, _level: LogLevel) => lines.push(line) });
    await fn({
      identity,
      lines,
      front: ({ maxPending, deadlineMs, maxPendingPerSource, hostname, onLink, ...web }) => {
        const front = SessionFront.listen({
          ...web,
          hostname: hostname ?? "127.0.0.1",
          port: 0,
          identity,
          maxPending,
          maxPendingPerSource,
          deadlineMs,
          onLink: onLink ?? (() => {}),
          log,
        });
        fronts.push(front);
        return front;
      },
    });
  } finally {
    for (const front of fronts) await front.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Resolves with the ms until the peer closes `conn` (EOF or reset). */
async function closedAfter(conn: Deno.Conn, limitMs: number): Promise<number> {
  const t0 = performance.now();
  const buf = new Uint8Array(64);
  const limit = AbortSignal.timeout(limitMs);
  while (!limit.aborted) {
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"limit">((r) => limit.addEventListener("abort", () => r("limit"))),
    ]);
    if (n === "limit") break;
    if (n === null) return performance.now() - t0;
  }
  throw new Error(`the front did not close the connection within ${limitMs} ms`);
}

Deno.test("SessionFront closes connections over its pending cap at once, and counts them", async () => {
  await withFront(async ({ front: make, lines }) => {
    const front = make({ maxPending: 2, deadlineMs: 30_000 });
    const held = [
      await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port }),
      await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port }),
    ];
    const over = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    try {
      assert.ok((await closedAfter(over, 5_000)) < 5_000);
      assert.equal(front.shed, 1);
      assert.equal(front.pending, 2);
      assert.match(lines.join("\n"), /pending handshake cap reached.*limit=2 closedSoFar=1/);
    } finally {
      for (const c of [...held, over]) c.close();
    }
  });
});

Deno.test("SessionFront closes an idle connection at the deadline and frees its slot", async () => {
  await withFront(async ({ front: make, lines }) => {
    const front = make({ maxPending: 1, deadlineMs: 300 });
    const idle = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    try {
      const ms = await closedAfter(idle, 5_000);
      assert.ok(ms >= 250, `closed after ${ms} ms, before the 300 ms deadline`);
      assert.match(lines.join("\n"), /handshake deadline passed .*ms=300/);
      assert.equal(front.pending, 0);
    } finally {
      idle.close();
    }
  });
});

Deno.test("SessionFront hands the TLS side over with the peer's address; a settled link outlives the deadline and carries both directions", async () => {
  await withFront(async ({ identity, front: make }) => {
    const links = new Map<string, FrontLink>();
    const waiters = new Map<string, (link: FrontLink) => void>();
    const linkFrom = (remote: string) =>
      links.get(remote) ?? new Promise<FrontLink>((r) => waiters.set(remote, r));
    const front = make({
      maxPending: 4,
      deadlineMs: 300,
      onLink: (link) => {
        links.set(link.remote, link);
        waiters.get(link.remote)?.(link);
      },
    });
    // Opened with the session; the front closing it shows the deadline has passed.
    const idle = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    const local = tcp.localAddr as Deno.NetAddr;
    const client = await Deno.startTls(tcp, {
      hostname: CERT_HOSTNAMES.console,
      caCerts: [identity.certPem],
    });
    try {
      const link = await linkFrom(`127.0.0.1:${local.port}`);
      await Promise.all([client.handshake(), link.conn.handshake()]);
      link.settle();
      assert.equal(front.pending, 1, "the idle connection is still pending");
      await closedAfter(idle, 5_000);
      assert.equal(front.pending, 0);
      const encoder = new TextEncoder();
      const decoder = new TextDecoder();
      const buf = new Uint8Array(16);
      await client.write(encoder.encode("ping"));
      const n = await link.conn.read(buf);
      assert.equal(decoder.decode(buf.subarray(0, n ?? 0)), "ping");
      await link.conn.write(encoder.encode("pong"));
      const m = await client.read(buf);
      assert.equal(decoder.decode(buf.subarray(0, m ?? 0)), "pong");
      link.conn.close();
      assert.equal(await client.read(buf).catch(() => null), null, "the client sees the end");
    } finally {
      client.close();
      idle.close();
    }
  });
});

Deno.test("SessionFront lets the public socket go within a grace once the TLS side closes, even when the peer stopped reading", async () => {
  await withFront(async ({ identity, front: make }) => {
    let got: (link: FrontLink) => void = () => {};
    const arrived = new Promise<FrontLink>((r) => (got = r));
    const front = make({ maxPending: 4, deadlineMs: 30_000, onLink: (link) => got(link) });
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    const client = await Deno.startTls(tcp, {
      hostname: CERT_HOSTNAMES.console,
      caCerts: [identity.certPem],
    });
    try {
      const link = await arrived;
      await Promise.all([client.handshake(), link.conn.handshake()]);
      link.settle();
      // The client never reads: fill every buffer on the way, then close the TLS side.
      const chunk = new Uint8Array(256 * 1024);
      const filling = (async () => {
        for (let i = 0; i < 256; i++) await link.conn.write(chunk);
      })().catch(() => {});
      const stuck = await Promise.race([
        filling.then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), 1_000)),
      ]);
      assert.ok(stuck, "64 MiB went through a peer that does not read: nothing to test");
      link.conn.close();
      const t0 = performance.now();
      while (front.relays > 0 && performance.now() - t0 < 5_000) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(
        front.relays,
        0,
        "the relay still holds the public socket 5 s after the TLS side closed",
      );
      await filling;
    } finally {
      client.close();
    }
  });
});

/** Whether this machine has ::1 and a dual-stack listener on "::" takes IPv4 too. */
function dualStackLoopback(): boolean {
  const hasV6 = Deno.networkInterfaces().some((i) => i.family === "IPv6" && i.address === "::1");
  try {
    return hasV6 && Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() === "0";
  } catch {
    return hasV6 && Deno.build.os !== "windows";
  }
}

Deno.test({
  name:
    "SessionFront closes a 9th pending connection from one address at once while another address still gets in",
  ignore: !dualStackLoopback(),
  fn: async () => {
    await withFront(async ({ front: make, lines }) => {
      const arrived: FrontLink[] = [];
      let onArrival = () => {};
      const front = make({
        hostname: "::",
        maxPending: 64,
        deadlineMs: 30_000,
        onLink: (link) => {
          arrived.push(link);
          onArrival();
        },
      });
      /** Resolves once `n` relays have reached the TLS side. */
      const linked = (n: number) =>
        new Promise<void>((resolve) => {
          onArrival = () => arrived.length >= n && resolve();
          onArrival();
        });
      const port = front.addr.port;
      const conns: Deno.Conn[] = [];
      try {
        // Eight from 127.0.0.1 (seen as ::ffff:127.0.0.1 on the dual-stack port) hold their slots.
        for (let i = 0; i < 8; i++) conns.push(await startingTls("127.0.0.1", port));
        await linked(8);
        assert.equal(front.pending, 8);
        const ninth = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(ninth);
        assert.ok((await closedAfter(ninth, 5_000)) < 5_000);
        assert.equal(front.shedPerSource, 1);
        assert.equal(front.shed, 0, "the global cap is not what closed it");
        assert.match(
          lines.join("\n"),
          /pending handshake limit per source reached.*source=127\.0\.0\.1 limit=8 closedSoFar=1/,
        );
        // Another address is not held back by the first one's share.
        conns.push(await startingTls("::1", port));
        await linked(9);
        assert.match(arrived[8].remote, /^\[::1\]:\d+$/);
        assert.equal(front.pending, 9);
        // A freed slot is that address's again.
        arrived[0].settle();
        assert.equal(front.pending, 8);
        conns.push(await startingTls("127.0.0.1", port));
        await linked(10);
        assert.equal(front.shedPerSource, 1);
      } finally {
        for (const c of conns) c.close();
      }
    });
  },
});

/**
 * A connection that has begun a TLS record (the front passes a peer to the
 * TLS side once its first bytes show TLS) and sends no more.
 */
async function startingTls(hostname: string, port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname, port });
  await conn.write(new Uint8Array([0x16, 0x03, 0x01]));
  return conn;
}

Deno.test("handshakeSource() names an IPv4 address itself and an IPv6 address by its /64", () => {
  const cases: [string, string][] = [
    ["192.0.2.7", "192.0.2.7"],
    ["127.0.0.1", "127.0.0.1"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["::FFFF:10.1.2.3", "10.1.2.3"],
    ["::1", "0:0:0:0::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"],
    ["2001:0db8:0001:0002::", "2001:db8:1:2::/64"],
    ["2001:db8:1:2::ffff", "2001:db8:1:2::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["[2001:db8::5]", "2001:db8:0:0::/64"],
    ["64:ff9b::192.0.2.1", "64:ff9b:0:0::/64"],
  ];
  for (const [input, want] of cases) assert.equal(handshakeSource(input), want, input);
  assert.equal(handshakeSource("2001:db8:1:2::1"), handshakeSource("2001:db8:1:2:ffff::9"));
  assert.notEqual(handshakeSource("2001:db8:1:2::1"), handshakeSource("2001:db8:1:3::1"));
});

// --- WebSocket peers ------------------------------------------------------------

const UPGRADE = "GET /portferry HTTP/1.1\r\nHost: console\r\nUpgrade: websocket\r\n" +
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Sec-WebSocket-Version: 13\r\n";

/** Connect, send the upgrade (with `extra` header lines), and read the 101. */
async function upgraded(port: number, extra = ""): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(`${UPGRADE}${extra}\r\n`));
  const { head } = await readHttpHead(conn);
  assert.equal(head.start, "HTTP/1.1 101 Switching Protocols");
  return conn;
}

Deno.test("SessionFront upgrades a WebSocket on its path and names the peer by X-Forwarded-For only from a trusted proxy", async () => {
  await withFront(async ({ front: make }) => {
    const links: FrontLink[] = [];
    let arrived = () => {};
    const front = make({
      maxPending: 4,
      deadlineMs: 30_000,
      websocketPath: "/portferry",
      trustedProxies: TrustedProxies.parse(["127.0.0.1"]),
      onLink: (link) => {
        links.push(link);
        arrived();
      },
    });
    const next = () => new Promise<FrontLink>((r) => (arrived = () => r(links.at(-1)!)));
    const waiting = next();
    const conn = await upgraded(front.addr.port, "X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n");
    const local = (conn.localAddr as Deno.NetAddr).port;
    try {
      const link = await waiting;
      assert.equal(link.remote, `203.0.113.5 (X-Forwarded-For via 127.0.0.1:${local})`);
      assert.equal(front.pending, 1, "a WebSocket peer holds a handshake slot");
    } finally {
      conn.close();
    }
  });
  await withFront(async ({ front: make }) => {
    const links: FrontLink[] = [];
    let arrived = () => {};
    const front = make({
      maxPending: 4,
      deadlineMs: 30_000,
      websocketPath: "/portferry",
      onLink: (link) => {
        links.push(link);
        arrived();
      },
    });
    const waiting = new Promise<void>((r) => (arrived = r));
    const conn = await upgraded(front.addr.port, "X-Forwarded-For: 203.0.113.5\r\n");
    const local = (conn.localAddr as Deno.NetAddr).port;
    try {
      await waiting;
      assert.equal(
        links[0].remote,
        `127.0.0.1:${local} (WebSocket)`,
        "no trusted proxy: not believed",
      );
    } finally {
      conn.close();
    }
  });
});

Deno.test("SessionFront closes a WebSocket peer that never proves itself at the deadline, and frees its slot", async () => {
  await withFront(async ({ front: make, lines }) => {
    const front = make({ maxPending: 1, deadlineMs: 300, websocketPath: "/portferry" });
    const conn = await upgraded(front.addr.port);
    try {
      const ms = await closedAfter(conn, 5_000);
      assert.ok(ms >= 200, `closed after ${ms} ms`);
      assert.match(lines.join("\n"), /handshake deadline passed .*ms=300/);
      assert.equal(front.pending, 0);
      assert.equal(front.relays, 0);
    } finally {
      conn.close();
    }
  });
});

Deno.test("SessionFront closes a peer trickling an HTTP head at the deadline, and a head over 8 KiB before it", async () => {
  await withFront(async ({ front: make, lines }) => {
    const front = make({ maxPending: 4, deadlineMs: 300, websocketPath: "/portferry" });
    const patient = make({ maxPending: 4, deadlineMs: 60_000, websocketPath: "/portferry" });
    const slow = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
    const big = await Deno.connect({ hostname: "127.0.0.1", port: patient.addr.port });
    try {
      await slow.write(new TextEncoder().encode("GET /portferry HTTP/1.1\r\nHost: x\r\n"));
      await big.write(new TextEncoder().encode(`${UPGRADE}X-Pad: ${"p".repeat(9000)}\r\n\r\n`));
      // Closed for its size: the 60 s deadline is far off.
      await closedAfter(big, 30_000);
      assert.match(lines.join("\n"), /neither TLS nor a WebSocket .*longer than 8192 bytes/);
      assert.equal(patient.pending, 0);
      const slowMs = await closedAfter(slow, 5_000);
      assert.ok(slowMs >= 200, `closed after ${slowMs} ms`);
      assert.match(lines.join("\n"), /handshake deadline passed .*ms=300/);
      assert.equal(front.pending, 0);
    } finally {
      slow.close();
      big.close();
    }
  });
});

Deno.test("SessionFront counts a WebSocket peer behind a trusted proxy against its X-Forwarded-For client's share", async () => {
  await withFront(async ({ front: make, lines }) => {
    const links: FrontLink[] = [];
    let arrived = () => {};
    const front = make({
      maxPending: 8,
      maxPendingPerSource: 1,
      deadlineMs: 30_000,
      websocketPath: "/portferry",
      trustedProxies: TrustedProxies.parse(["127.0.0.1"]),
      onLink: (link) => {
        links.push(link);
        arrived();
      },
    });
    const port = front.addr.port;
    const linked = (n: number) =>
      new Promise<void>((r) => {
        arrived = () => links.length >= n && r();
        arrived();
      });
    const conns: Deno.TcpConn[] = [];
    try {
      // One pending connection per client, all through the one proxy address.
      conns.push(await upgraded(port, "X-Forwarded-For: 203.0.113.5\r\n"));
      await linked(1);
      conns.push(await upgraded(port, "X-Forwarded-For: 198.51.100.7\r\n"));
      await linked(2);
      assert.equal(front.pending, 2);
      // A second from the first client is over that client's share.
      const again = await upgraded(port, "X-Forwarded-For: 203.0.113.5\r\n");
      conns.push(again);
      await closedAfter(again, 5_000);
      assert.equal(front.shedPerSource, 1);
      assert.match(lines.join("\n"), /limit per source reached.*source=203\.0\.113\.5 limit=1/);
      assert.equal(front.pending, 2);
      links[0].settle();
      assert.equal(front.pending, 1);
    } finally {
      for (const c of conns) c.close();
    }
  });
});
