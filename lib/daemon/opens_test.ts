import assert from "node:assert/strict";
import { type MemoryConn, memoryConnPair } from "../core/_memory_conn.ts";
import { OpenError } from "../core/errors.ts";
import { createLogger } from "../core/log.ts";
import { MessageReader, Session } from "../core/session.ts";
import { AllowList } from "../net/allowlist.ts";
import { type Connector, handleOpen } from "./opens.ts";
import { type DaemonEvent, DaemonState } from "./state.ts";
import type { DaemonFlow } from "./udp.ts";

const log = createLogger({ level: "error" });

/** A connector that reaches in-memory targets, and remembers what it was asked. */
function fakeConnector(fail?: OpenError) {
  const asked: string[] = [];
  const targets: MemoryConn[] = [];
  const connector: Connector = {
    connect: (host, port) => {
      asked.push(`${host}:${port}`);
      if (fail) return Promise.reject(fail);
      const [app, relay] = memoryConnPair(1024);
      targets.push(app);
      return Promise.resolve({ conn: relay, address: `${host}:${port}` });
    },
    resolve: () => Promise.resolve(["10.0.0.9"]),
  };
  return { connector, asked, targets };
}

/** A Console session and a Daemon session whose OPENs go through handleOpen. */
function openPair(connector: Connector) {
  const state = new DaemonState({
    console: "c:7470",
    fingerprint: "SHA256:c",
    allow: "10.0.0.0/8",
  });
  const events: DaemonEvent[] = [];
  state.listen((e) => events.push(e));
  const ctx = {
    allow: AllowList.parse(["10.0.0.0/8"]),
    connector,
    connectTimeoutMs: 1000,
    log,
    state,
    flows: new Set<DaemonFlow>(),
  };
  const [consoleLink, daemonLink] = memoryConnPair(4096);
  const console = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "0badc0de",
    log,
    handlers: { onChat: () => {}, onEnd: () => {} },
  });
  const daemon: Session = new Session(daemonLink, new MessageReader(daemonLink), {
    role: "daemon",
    id: "0badc0de",
    log,
    handlers: {
      onOpen: (msg) => void handleOpen(ctx, daemon, msg),
      onChat: () => {},
      onEnd: () => {},
    },
  });
  console.run();
  daemon.run();
  return {
    console,
    daemon,
    state,
    events,
    async [Symbol.asyncDispose]() {
      await console.close("exit", "test over");
      await daemon.done();
    },
  };
}

const client = { pfo: "db", client: "127.0.0.1:5000" };

/** Wait until `ok()` holds, for at most 2 s. */
async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 2_000;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("handleOpen() connects an allowed target and records the connection until it closes", async () => {
  const { connector, asked, targets } = fakeConnector();
  await using pair = openPair(connector);
  const [app, relay] = memoryConnPair(1024);
  const { stream, address } = await pair.console.openStream(
    relay,
    { host: "10.0.0.5", port: 5432, ...client },
    { log },
  );
  stream.start();
  assert.equal(address, "10.0.0.5:5432");
  assert.deepEqual(asked, ["10.0.0.5:5432"]);
  const [row] = pair.state.snapshot().connections;
  assert.equal(row.target, "10.0.0.5:5432");
  assert.equal(row.pfo, "db");
  assert.equal(pair.events[0].type, "opened");
  // Bytes from the client reach the target, and the row counts them.
  await app.write(new TextEncoder().encode("ping"));
  const buf = new Uint8Array(16);
  assert.equal(await targets[0].read(buf), 4);
  await until(() => pair.state.snapshot().connections[0].bytesOut === 4, "4 bytes counted out");
  app.close();
  targets[0].close();
  await until(() => pair.state.snapshot().connections.length === 0, "the connection to close");
  assert.deepEqual(pair.state.snapshot().connections, []);
  const closed = pair.events.find((e) => e.type === "closed");
  assert.ok(closed?.type === "closed");
  assert.equal(closed.connection.bytesOut, 4);
});

Deno.test("handleOpen() refuses a target outside the allow-list without connecting", async () => {
  const { connector, asked } = fakeConnector();
  await using pair = openPair(connector);
  const [, relay] = memoryConnPair(1024);
  const err = await pair.console.openStream(
    relay,
    { host: "192.168.1.1", port: 22, ...client },
    { log },
  ).then(() => null, (e) => e);
  assert.ok(err instanceof OpenError, String(err));
  assert.equal(err.code, "not-allowed");
  assert.deepEqual(asked, []);
  const warning = pair.events.find((e) => e.type === "warning");
  assert.ok(warning?.type === "warning");
  assert.equal(warning.message, "connection refused by the allow-list");
  assert.equal(warning.fields.target, "192.168.1.1:22");
  assert.deepEqual(pair.state.snapshot().connections, []);
});

Deno.test("handleOpen() passes a connect failure's code to the Console as OPEN_ERR", async () => {
  const refused = new OpenError(
    "refused",
    'Cannot connect to "10.0.0.5" port 1: connection refused',
  );
  const { connector } = fakeConnector(refused);
  await using pair = openPair(connector);
  const [, relay] = memoryConnPair(1024);
  const err = await pair.console.openStream(
    relay,
    { host: "10.0.0.5", port: 1, ...client },
    { log },
  ).then(() => null, (e) => e);
  assert.ok(err instanceof OpenError, String(err));
  assert.equal(err.code, "refused");
  assert.match(err.message, /connection refused/);
  const warning = pair.events.find((e) => e.type === "warning");
  assert.ok(warning?.type === "warning");
  assert.equal(warning.message, "connection failed");
  assert.equal(warning.code, "refused");
});
