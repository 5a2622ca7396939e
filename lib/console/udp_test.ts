/**
 * UDP flows end to end in one process: a Console-side UdpListener and
 * ConsoleFlow, a Daemon-side DaemonFlow, a Console and a Daemon session over
 * an in-memory link, and real loopback UDP sockets for the client and the
 * target. No child processes.
 */
import assert from "node:assert/strict";
import { udpCounters } from "../core/datagram.ts";
import { createLogger } from "../core/log.ts";
import { memoryConnPair } from "../core/_memory_conn.ts";
import { Tag } from "../core/protocol.ts";
import { MessageReader, Session } from "../core/session.ts";
import { DaemonFlow } from "../daemon/udp.ts";
import { UdpListener } from "./udp.ts";

const log = createLogger({ sink: () => {} });

interface UdpPair extends AsyncDisposable {
  readonly console: Session;
  readonly flows: DaemonFlow[];
}

/** A Console and a Daemon session; the Daemon opens real UDP flows, or refuses port 1. */
function udpSessions(): UdpPair {
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
        const flow = await DaemonFlow.connect(msg.stream, daemon, "127.0.0.1", msg.port, () => {});
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
