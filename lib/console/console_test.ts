import assert from "node:assert/strict";
import { createLogger } from "../core/log.ts";
import { CommandError, inProcessClient } from "./commands.ts";
import { Console } from "./console.ts";
import type { ConsoleEvent } from "./state.ts";

const log = createLogger({ level: "error" });

/** A Console on 127.0.0.1 port 0 in this process, with a temp settings folder. */
async function startConsole(settings = "") {
  const dir = await Deno.makeTempDir({ prefix: "pf-console-obj-" });
  const settingsPath = `${dir}/portferry-console.yaml`;
  await Deno.writeTextFile(settingsPath, settings);
  const out: string[] = [];
  const con = new Console({
    settingsPath,
    session: "127.0.0.1:0",
    log,
    out: (text) => out.push(text),
    daemonCommand: "daemon {address} --fingerprint {fingerprint}",
  });
  const address = await con.start();
  return {
    con,
    address,
    out,
    settingsPath,
    async [Symbol.asyncDispose]() {
      await con.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The code of the CommandError `promise` rejects with. */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(() => null, (e) => e);
  if (!(err instanceof CommandError)) throw new Error(`not a CommandError: ${err}`);
  return err.code;
}

Deno.test("Console.start() serves on its bound address and prints the banner; status() reads the model", async () => {
  await using c = await startConsole();
  assert.match(c.address, /^127\.0\.0\.1:[1-9]\d*$/);
  assert.equal(c.con.address, c.address);
  const status = c.con.status();
  assert.deepEqual(status.session, {
    state: "none",
    id: null,
    since: null,
    peer: null,
    streams: 0,
  });
  assert.equal(status.listen, c.address);
  assert.equal(status.settings, c.settingsPath);
  assert.equal(status.settingsError, null);
  assert.match(status.fingerprint, /^SHA256:/);
  assert.ok(c.out.includes(`Console listening for Daemons on ${c.address}`), c.out.join("\n"));
  assert.ok(c.out.includes(`    daemon ${c.address} --fingerprint ${status.fingerprint}`));
});

Deno.test("Console commands refuse with a coded error when the session or the thing is missing", async () => {
  await using c = await startConsole(
    "pfos:\n  - name: web\n    listen: 127.0.0.1:0\n    target: h:80\n",
  );
  const run = inProcessClient(c.con.commands);
  const k = c.con.commands;
  assert.equal(await codeOf(k["session/accept"]({ remember: false })), "conflict");
  assert.equal(await codeOf(k["session/reject"]({})), "conflict");
  assert.equal(await codeOf(k["session/close"]({})), "conflict");
  assert.equal(await codeOf(k.chat({ text: "hi" })), "no-session");
  assert.equal(await codeOf(k.resolve({ host: "db" })), "no-session");
  assert.equal(await codeOf(k["connections/kill"]({ id: 999 })), "not-found");
  assert.equal(await codeOf(k["trust/rm"]({ fingerprint: "SHA256:nope" })), "not-found");
  assert.equal(await codeOf(k["pfo/enable"]({ name: "nope" })), "not-found");
  assert.equal(await codeOf(k["pfo/rm"]({ name: "nope" })), "not-found");
  const clash = { proto: "tcp", target: "h:81", enabled: true, clients: [] } as const;
  assert.equal(
    await codeOf(k["pfo/add"]({ ...clash, name: "web", listen: "127.0.0.1:0" })),
    "conflict",
  );
  assert.deepEqual(await run("trust/list", {}), []);
  assert.deepEqual(await run("connections/list", {}), []);
  assert.deepEqual((await run("pfo/list", {})).map((p) => [p.name, p.state]), [
    ["web", "listening"],
  ]);
  // Nothing changed the file.
  assert.equal(
    await Deno.readTextFile(c.settingsPath),
    "pfos:\n  - name: web\n    listen: 127.0.0.1:0\n    target: h:80\n",
  );
});

Deno.test("Console: a PFO added through the commands is saved, in the snapshot, and emitted as a change", async () => {
  await using c = await startConsole();
  const events = c.con.events.subscribe();
  const reader = events[Symbol.asyncIterator]();
  const added = await c.con.commands["pfo/add"]({
    name: "web",
    proto: "tcp",
    listen: "127.0.0.1:0",
    target: "h:80",
    enabled: true,
    clients: ["10.0.0.0/8"],
  });
  assert.equal(added.state, "listening");
  assert.match(added.bound[0], /^127\.0\.0\.1:[1-9]\d*$/);
  const first = await reader.next();
  assert.equal(first.done, false);
  const event: ConsoleEvent = first.value;
  assert.equal(event.type, "pfo");
  assert.ok(event.type === "pfo" && event.name === "web" && event.pfo?.state === "listening");
  const snapshot = c.con.snapshot();
  assert.deepEqual(snapshot.pfos.map((p) => p.name), ["web"]);
  assert.deepEqual(snapshot.allowList, [{ pfo: "web", clients: ["10.0.0.0/8"] }]);
  assert.deepEqual(snapshot.pfos[0].rates, {
    bytesInPerSecond: 0,
    bytesOutPerSecond: 0,
    connectionsPerSecond: 0,
  });
  assert.match(await Deno.readTextFile(c.settingsPath), /name: web/);
  assert.ok(c.out.includes(`PFO "web" added, listening on ${added.bound[0]}`), c.out.join("\n"));

  await c.con.commands["pfo/rm"]({ name: "web" });
  const removed = await reader.next();
  assert.deepEqual(removed.value, { type: "pfo", name: "web", pfo: null });
  events[Symbol.dispose]();
});

Deno.test("Console events: 1,000 connection progress updates reach a slow subscriber coalesced, state changes all", async () => {
  await using c = await startConsole();
  const events = c.con.events.subscribe();
  const connection = {
    id: 7,
    pfo: "web",
    proto: "tcp",
    client: "127.0.0.1:5000",
    target: "h:80",
    since: new Date(0).toISOString(),
    stream: 7,
    bytesOut: 0,
    bytesIn: 0,
  };
  // The subscriber reads nothing while the Console publishes.
  c.con.events.emit({ type: "connection-opened", connection });
  for (let i = 1; i <= 1000; i++) {
    c.con.events.progress("connection:7", {
      type: "connection-progress",
      connection: { ...connection, bytesIn: i },
    });
  }
  c.con.events.emit({ type: "warning", message: "still here" });
  const seen: ConsoleEvent[] = [];
  const reader = events[Symbol.asyncIterator]();
  for (let i = 0; i < 3; i++) seen.push((await reader.next()).value);
  assert.deepEqual(seen.map((e) => e.type), [
    "connection-opened",
    "warning",
    "connection-progress",
  ]);
  const last = seen[2];
  assert.ok(last.type === "connection-progress" && last.connection.bytesIn === 1000);
  events[Symbol.dispose]();
  assert.equal((await reader.next()).done, true);
});

Deno.test("Console.close() ends every subscription and is safe to call twice", async () => {
  const c = await startConsole();
  const events = c.con.events.subscribe();
  const reader = events[Symbol.asyncIterator]();
  const next = reader.next();
  await c[Symbol.asyncDispose]();
  await c.con.close();
  assert.equal((await next).done, true);
  assert.equal(c.con.events.subscribers, 0);
});
