/**
 * UDP flows end to end in one process: a Console-side UdpListener and
 * ConsoleFlow, a Daemon-side DaemonFlow, a Console and a Daemon session over
 * an in-memory link, and real loopback UDP sockets for the client and the
 * target. No child processes.
 */
import assert from "node:assert/strict";
import { udpCounters, udpDrops } from "../core/datagram.ts";
import { createLogger } from "../core/log.ts";
import { memoryConnPair } from "../core/_memory_conn.ts";
import { Tag } from "../core/protocol.ts";
import { MessageReader, Session } from "../core/session.ts";
import { DaemonFlow } from "../daemon/udp.ts";
import { UdpListener } from "./udp.ts";
import { OPENING_HOLD_BYTES, OPENING_HOLD_BYTES_PER_SOCKET } from "../core/datagram.ts";

const log = createLogger({ sink: () => {} });

interface UdpPair extends AsyncDisposable {
  readonly console: Session;
  readonly flows: DaemonFlow[];
}

/**
 * A Console and a Daemon session; the Daemon opens real UDP flows, or refuses
 * port 1. It opens each flow once `opening` resolves.
 */
function udpSessions(opening: Promise<void> = Promise.resolve()): UdpPair {
  const [a, b] = memoryConnPair(64 * 1024);
  const flows: DaemonFlow[] = [];
  const consoleSession = new Session(a, new MessageReader(a), {
    role: "console",
    id: "udp-test",
    log,
    handlers: { onChat: () => {}, onEnd: () => {} },
  });
  const daemon: Session = new Session(b, new MessageReader(b), {
    role: "daemon",
    id: "udp-test",
    log,
    handlers: {
      onOpen: async (msg) => {
        if (msg.port === 1) {
          daemon.send({ tag: Tag.OPEN_ERR, stream: msg.stream, code: "refused", reason: "no" });
          return;
        }
        await opening;
        const flow = await DaemonFlow.connect(msg.stream, daemon, "127.0.0.1", msg.port, {
          onEnd: () => {},
          drops: udpDrops(),
        });
        flows.push(flow);
        daemon.accept(msg.stream, flow, `127.0.0.1:${msg.port}`);
      },
      onChat: () => {},
      onEnd: () => {},
    },
  });
  consoleSession.run();
  daemon.run();
  return {
    console: consoleSession,
    flows,
    async [Symbol.asyncDispose]() {
      for (const flow of flows) flow.close("test over");
      await consoleSession.close("exit", "test over");
      await daemon.done();
    },
  };
}

/** A UDP socket on loopback that closes when the test's scope ends. */
function udpSocket(): Deno.DatagramConn & Disposable {
  const socket = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  return Object.assign(socket, {
    [Symbol.dispose]: () => {
      try {
        socket.close();
      } catch {
        // Closed already.
      }
    },
  });
}

/** A UDP echo target on loopback. */
function echoTarget(): Deno.DatagramConn & Disposable & { port: number } {
  const socket = udpSocket();
  (async () => {
    try {
      for await (const [data, from] of socket) await socket.send(data, from);
    } catch {
      // Closed.
    }
  })();
  return Object.assign(socket, { port: (socket.addr as Deno.NetAddr).port });
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

function listenerFor(pair: UdpPair, targetPort: number, allow = true, lines: string[] = []) {
  return UdpListener.bind({
    host: "127.0.0.1",
    port: 0,
    targetHost: "127.0.0.1",
    targetPort,
    pfo: "dns",
    log: createLogger({ sink: (line) => lines.push(line) }),
    session: () => pair.console,
    counters: udpCounters(),
    idleMs: () => 60_000,
    allowClient: () => allow,
  });
}

Deno.test("UdpListener and DaemonFlow carry datagrams both ways in order and count bytes on both sides", async () => {
  await using pair = udpSessions();
  using target = echoTarget();
  const listener = await listenerFor(pair, target.port);
  using client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.address.port };
    const sent = Array.from({ length: 20 }, (_, i) => `datagram ${i} ${"x".repeat(i * 10)}`);
    for (const text of sent) await client.send(new TextEncoder().encode(text), to);
    const got: string[] = [];
    await within(
      (async () => {
        for await (const [data] of client) {
          got.push(new TextDecoder().decode(data));
          if (got.length === sent.length) return;
        }
      })(),
      5_000,
      `20 echoes (got ${got.length})`,
    );
    assert.deepEqual(got, sent, "every datagram came back whole and in order");
    const bytes = sent.reduce((n, t) => n + t.length, 0);
    const [flow] = listener.flows();
    assert.equal(listener.flows().length, 1, "one client address is one flow");
    assert.equal(flow.bytesOut, bytes);
    assert.equal(flow.bytesIn, bytes);
    assert.equal(listener.options.counters.datagramsOut, 20);
    assert.equal(pair.flows.length, 1);
    assert.equal(pair.flows[0].id, flow.id, "both sides know the flow by the same stream id");
    assert.equal(pair.flows[0].bytesOut, bytes, "the Daemon counts the bytes it sent the target");
    assert.equal(pair.flows[0].bytesIn, bytes, "and the bytes the target answered");
  } finally {
    listener.close();
  }
});

Deno.test("UdpListener refuses a client the PFO does not allow, and a flow the Daemon cannot open ends", async () => {
  await using pair = udpSessions();
  const denied = await listenerFor(pair, 53, false);
  const lines: string[] = [];
  const refused = await listenerFor(pair, 1, true, lines);
  using client = udpSocket();
  try {
    const hello = new TextEncoder().encode("hello");
    await client.send(hello, {
      transport: "udp",
      hostname: "127.0.0.1",
      port: denied.address.port,
    });
    await within(
      (async () => {
        while (denied.options.counters.denied === 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      5_000,
      "the denied datagram to be counted",
    );
    assert.equal(denied.flows().length, 0, "no flow for a client the PFO does not allow");
    await client.send(hello, {
      transport: "udp",
      hostname: "127.0.0.1",
      port: refused.address.port,
    });
    await within(
      (async () => {
        while (!lines.some((l) => l.includes("UDP flow failed"))) {
          await new Promise((r) => setTimeout(r, 5));
        }
      })(),
      5_000,
      "the refused flow to fail",
    );
    assert.equal(refused.flows().length, 0, "the failed flow is gone");
    assert.equal(pair.flows.length, 0, "the Daemon opened no socket for the refused target");
  } finally {
    denied.close();
    refused.close();
  }
});

/** A UDP target on loopback that records what it receives, in order. */
function recordingTarget(): Deno.DatagramConn & Disposable & { port: number; got: Uint8Array[] } {
  const socket = udpSocket();
  const got: Uint8Array[] = [];
  (async () => {
    try {
      for await (const [data] of socket) got.push(data);
    } catch {
      // Closed.
    }
  })();
  return Object.assign(socket, { port: (socket.addr as Deno.NetAddr).port, got });
}

/** Until `ok()` holds, checking as the event loop turns (a readiness wait, no fixed sleep). */
async function until(ok: () => boolean, what: string): Promise<void> {
  await within(
    (async () => {
      while (!ok()) await new Promise((r) => setTimeout(r, 2));
    })(),
    10_000,
    what,
  );
}

Deno.test("a new flow's first datagrams wait for the Daemon's open, then all arrive in order", async () => {
  const open = Promise.withResolvers<void>();
  await using pair = udpSessions(open.promise);
  using target = recordingTarget();
  const listener = await listenerFor(pair, target.port);
  using client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.address.port };
    const N = 200;
    for (let i = 0; i < N; i++) {
      const data = new Uint8Array(100);
      new DataView(data.buffer).setUint32(0, i);
      await client.send(data, to);
    }
    const c = listener.options.counters;
    await until(
      () => listener.heldBytes === N * 100,
      `${N} datagrams held (${listener.heldBytes} B)`,
    );
    assert.equal(listener.flows().length, 0, "the flow is open before the Daemon answered");
    assert.equal(target.got.length, 0);
    open.resolve();
    await until(() => target.got.length === N, `${N} datagrams at the target`);
    const order = target.got.map((d) => new DataView(d.buffer, d.byteOffset).getUint32(0));
    assert.deepEqual(order, Array.from({ length: N }, (_, i) => i), "out of order");
    assert.equal(c.drops, 0);
    assert.equal(c.datagramsOut, N);
    assert.equal(listener.heldBytes, 0, "the hold was not released");
  } finally {
    listener.close();
  }
});

Deno.test("a new flow holds at most OPENING_HOLD_BYTES while it opens and counts the rest as opening drops", async () => {
  const open = Promise.withResolvers<void>();
  await using pair = udpSessions(open.promise);
  using target = recordingTarget();
  const listener = await listenerFor(pair, target.port);
  using client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.address.port };
    const c = listener.options.counters;
    const SIZE = 60_000;
    const fit = Math.floor(OPENING_HOLD_BYTES / SIZE);
    for (let i = 0; i < fit + 3; i++) {
      await client.send(new Uint8Array(SIZE).fill(i), to);
      // One at a time, so the kernel's receive buffer never overflows.
      await until(
        () => listener.heldBytes + c.dropped.opening * SIZE === (i + 1) * SIZE,
        `datagram ${i}`,
      );
    }
    assert.equal(listener.heldBytes, fit * SIZE);
    assert.equal(c.dropped.opening, 3);
    assert.equal(c.drops, 3);
    open.resolve();
    // Sent on in order; the target's own receive buffer (~200 KB) is no business of this test.
    await until(() => c.datagramsOut === fit, `${fit} held datagrams sent on (${c.datagramsOut})`);
    await until(() => pair.flows[0]?.datagramsOut === fit, "the Daemon to send them all");
    assert.ok(target.got.every((d, i) => i === 0 || d[0] > target.got[i - 1][0]), "out of order");
    const [flow] = listener.flows();
    assert.equal(flow.drops, 3, "the flow counts its own drops");
  } finally {
    listener.close();
  }
});

Deno.test("datagrams held by a flow whose open fails are counted as openFailed drops", async () => {
  await using pair = udpSessions();
  const listener = await listenerFor(pair, 1);
  using client = udpSocket();
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.address.port };
    for (let i = 0; i < 3; i++) await client.send(new Uint8Array([i]), to);
    const c = listener.options.counters;
    await until(() => c.dropped.openFailed > 0, "the refused flow's datagrams counted");
    await until(() => c.dropped.openFailed + c.dropped.opening === 3, "every datagram counted");
    assert.equal(c.drops, 3);
    assert.equal(listener.heldBytes, 0);
  } finally {
    listener.close();
  }
});

Deno.test("the opening flows of one socket hold at most OPENING_HOLD_BYTES_PER_SOCKET together", async () => {
  const open = Promise.withResolvers<void>();
  await using pair = udpSessions(open.promise);
  using target = recordingTarget();
  const listener = await listenerFor(pair, target.port);
  const clients = Array.from({ length: 5 }, () => udpSocket());
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: listener.address.port };
    const c = listener.options.counters;
    const SIZE = 60_000;
    const perFlow = Math.floor(OPENING_HOLD_BYTES / SIZE);
    let sent = 0;
    for (const client of clients) {
      for (let i = 0; i < perFlow; i++) {
        await client.send(new Uint8Array(SIZE), to);
        sent++;
        await until(
          () => listener.heldBytes + c.dropped.opening * SIZE === sent * SIZE,
          `#${sent}`,
        );
      }
    }
    const fit = Math.floor(OPENING_HOLD_BYTES_PER_SOCKET / SIZE);
    assert.ok(5 * perFlow > fit, "the test does not reach the socket's bound");
    assert.equal(listener.heldBytes, fit * SIZE);
    assert.equal(c.dropped.opening, sent - fit);
  } finally {
    open.resolve();
    for (const client of clients) client.close();
    listener.close();
  }
});
