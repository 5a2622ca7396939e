import assert from "node:assert/strict";
import { CommandError } from "../app/command_error.ts";
import { ControlError } from "../app/control.ts";
import { MAX_CHAT_CHARS } from "../core/protocol.ts";
import {
  controlHandlers,
  DaemonCommands,
  type DaemonCommandTarget,
  remoteCommands,
} from "./commands.ts";
import { DaemonState } from "./state.ts";

/** A target over a real state model; records what the commands did. */
function fakeDaemon() {
  const state = new DaemonState({
    console: "office:7470",
    fingerprint: "SHA256:console",
    allow: "everything",
  });
  const did: string[] = [];
  const target: DaemonCommandTarget = {
    snapshot: () => state.snapshot(),
    settingsPath: "daemon.yaml",
    chat: (text) => (did.push(`chat ${text}`), true),
    kill: (stream) => (did.push(`kill ${stream}`), stream === 7),
    endSession: () => (did.push("end"), Promise.resolve()),
  };
  return { state, did, commands: new DaemonCommands(target) };
}

async function refusal(promise: Promise<unknown>): Promise<CommandError> {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err instanceof CommandError, `expected a CommandError, got ${err}`);
  return err;
}

Deno.test("DaemonCommands chat refuses an empty or too long message, and chat without a session", async () => {
  const { state, did, commands } = fakeDaemon();
  for (const text of ["", "x".repeat(MAX_CHAT_CHARS + 1)]) {
    const err = await refusal(commands.run("chat", { text }));
    assert.equal(err.code, "bad-request");
    assert.equal(err.status, 400);
  }
  const none = await refusal(commands.run("chat", { text: "hi" }));
  assert.equal(none.code, "no-session");
  assert.equal(none.status, 409);
  assert.equal(none.message, "Cannot chat: no session is established (now: connecting)");
  state.change({ type: "established", session: "0badc0de", console: "office:7470" });
  assert.deepEqual(await commands.run("chat", { text: "hi" }), { sent: "hi" });
  assert.deepEqual(did, ["chat hi"]);
});

Deno.test("DaemonCommands connections/kill answers not-found for an unknown id", async () => {
  const { commands } = fakeDaemon();
  assert.deepEqual(await commands.run("connections/kill", { id: 7 }), { killed: 7 });
  const err = await refusal(commands.run("connections/kill", { id: 8 }));
  assert.equal(err.code, "not-found");
  assert.equal(err.status, 404);
  assert.match(err.message, /^Cannot kill connection 8: no such connection/);
});

Deno.test("DaemonCommands status keeps the shape status --json has always had", async () => {
  const { state, commands } = fakeDaemon();
  state.fingerprint = "SHA256:daemon";
  state.change({ type: "established", session: "0badc0de", console: "office:7470" });
  const status = await commands.run("status", {});
  assert.deepEqual(Object.keys(status.session).sort(), [
    "id",
    "lastError",
    "peer",
    "phase",
    "since",
    "state",
    "streams",
  ]);
  assert.equal(status.session.state, "established");
  assert.equal(status.session.id, "0badc0de");
  assert.equal(status.session.peer?.fingerprint, "SHA256:console");
  assert.equal(status.fingerprint, "SHA256:daemon");
  assert.equal(status.console, "office:7470");
  assert.equal(status.settings, "daemon.yaml");
  assert.deepEqual(status.pfos, []);
  assert.deepEqual(status.connections, []);
  assert.deepEqual(await commands.run("close", {}), { state: "none" });
});

Deno.test("controlHandlers() validates each body once and answers refusals with their status", async () => {
  const { commands } = fakeDaemon();
  const handlers = controlHandlers(commands);
  const failed = async (run: () => unknown) => {
    const err = await Promise.resolve().then(run).then(() => null, (e) => e);
    assert.ok(err instanceof ControlError, `expected a ControlError, got ${err}`);
    return err;
  };
  assert.equal((await failed(() => handlers.chat({ text: 42 }))).status, 400);
  assert.equal((await failed(() => handlers.chat({}))).status, 400);
  assert.equal((await failed(() => handlers.chat({ text: "hi" }))).status, 409);
  const badId = await failed(() => handlers["connections/kill"]({ id: "seven" }));
  assert.equal(badId.status, 400);
  assert.match(badId.message, /^Cannot kill connection "seven": the id must be a number/);
  assert.equal((await failed(() => handlers["connections/kill"]({ id: 8 }))).status, 404);
  assert.deepEqual(await handlers["connections/kill"]({ id: "7" }), { killed: 7 });
});

Deno.test("remoteCommands() refuses an answer of the wrong shape", async () => {
  const commands = remoteCommands((name) =>
    Promise.resolve(name === "connections/list" ? [{ stream: 1, pfo: "db" }] : { nope: true })
  );
  assert.equal((await commands.run("connections/list", {}))[0].stream, 1);
  await assert.rejects(
    commands.run("status", {}),
    /Cannot read the Daemon's answer to "status": it has an unexpected shape/,
  );
});
