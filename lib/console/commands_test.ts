import assert from "node:assert/strict";
import { COMMAND_ERROR_STATUS } from "../app/command_error.ts";
import { callControl, ControlCallError, serveControl } from "../app/control.ts";
import { createLogger } from "../core/log.ts";
import {
  CommandError,
  type ConsoleCommandName,
  type ConsoleCommandSet,
  controlHandlers,
  inProcessClient,
  OfflineCommands,
  readRequest,
} from "./commands.ts";
import type { PfoSnapshot } from "./state.ts";

const log = createLogger({ level: "error" });

/** Runs `read` and returns the CommandError it throws. */
function refusal(read: () => unknown): CommandError {
  try {
    read();
  } catch (err) {
    if (err instanceof CommandError) return err;
    throw err;
  }
  throw new Error("no error thrown");
}

Deno.test("readRequest() refuses every bad request body with a bad-request error naming what is wrong", () => {
  const cases: [ConsoleCommandName, unknown, RegExp][] = [
    ["status", null, /request must be an object/],
    ["status", [], /request must be an object/],
    ["pfo/add", { name: "a b", listen: "8080", target: "h:80" }, /a b/],
    ["pfo/add", { name: "x".repeat(65), listen: "8080", target: "h:80" }, /x{10}/],
    ["pfo/add", { name: "web", listen: "99999", target: "h:80" }, /99999/],
    ["pfo/add", { name: "web", listen: "8080", target: "h:0" }, /h:0|port/],
    ["pfo/add", { name: "web", listen: "8080", target: "h" }, /"h"|port/],
    ["pfo/add", { name: "web", listen: "8080", target: "h:80", proto: "sctp" }, /protocol/],
    ["pfo/add", { name: "web", listen: "8080", target: "h:80", clients: "1.2.3.4" }, /clients/],
    ["pfo/add", { name: "web", listen: "8080", target: "h:80", enabled: "yes" }, /enabled/],
    ["pfo/add", { name: "web", target: "h:80" }, /listen address must be text/],
    ["pfo/add", { name: 7, listen: "8080", target: "h:80" }, /PFO name must be text/],
    ["pfo/edit", { name: "web" }, /give --listen and\/or --target/],
    ["pfo/edit", { name: "web", listen: "http" }, /http/],
    ["pfo/edit", { name: "web", target: "nohost" }, /nohost/],
    ["pfo/enable", { name: "a/b" }, /a\/b/],
    ["pfo/rm", {}, /PFO name must be text/],
    ["chat", { text: "" }, /1\.\.\d+ characters/],
    ["chat", { text: "x".repeat(100_000) }, /1\.\.\d+ characters/],
    ["chat", { text: 5 }, /1\.\.\d+ characters/],
    ["connections/kill", { id: "7" }, /connection "7"/],
    ["connections/kill", { id: -1 }, /connection -1/],
    ["connections/kill", { id: 1.5 }, /connection 1.5/],
    ["resolve", { host: "" }, /Cannot resolve: give a host name/],
    ["resolve", {}, /host name must be text/],
    ["trust/rm", { fingerprint: "" }, /give a fingerprint/],
    ["session/accept", { remember: "yes" }, /remember must be true or false/],
  ];
  for (const [name, body, message] of cases) {
    const err = refusal(() => readRequest(name, body));
    const what = `${name} ${JSON.stringify(body)?.slice(0, 80)}`;
    assert.equal(err.code, "bad-request", what);
    assert.equal(err.status, 400, what);
    assert.match(err.message, /^Cannot /, what);
    assert.match(err.message, message, what);
  }
});

Deno.test("readRequest() returns the typed request, with defaults filled in", () => {
  assert.deepEqual(readRequest("pfo/add", { name: "web", listen: "8080", target: "h:80" }), {
    name: "web",
    proto: "tcp",
    listen: "8080",
    target: "h:80",
    enabled: true,
    clients: [],
  });
  assert.deepEqual(
    readRequest("pfo/add", { name: "s", listen: "1080", proto: "socks" }).target,
    null,
  );
  assert.deepEqual(readRequest("pfo/edit", { name: "web", target: "db:80" }), {
    name: "web",
    target: "db:80",
  });
  assert.deepEqual(readRequest("session/accept", {}), { remember: false });
  assert.deepEqual(readRequest("connections/kill", { id: 42 }), { id: 42 });
  assert.deepEqual(readRequest("status", { extra: 1 }), {});
});

Deno.test("COMMAND_ERROR_STATUS maps every code to its HTTP status", () => {
  assert.deepEqual(COMMAND_ERROR_STATUS, {
    "bad-request": 400,
    "not-found": 404,
    "conflict": 409,
    "no-session": 409,
    "failed": 502,
  });
});

/** A command set whose commands refuse as a test says, and record what they ran. */
function fakeCommands(ran: string[]): ConsoleCommandSet {
  const fail = (err: CommandError) => () => Promise.reject(err);
  const pfo: PfoSnapshot = {
    name: "web",
    proto: "tcp",
    listen: "8080",
    target: "h:80",
    enabled: true,
    state: "listening",
    session: false,
    error: null,
    bound: ["127.0.0.1:8080"],
    listeners: 1,
    connections: 0,
    connectionsTotal: 0,
    connectionsRefused: 0,
    connectionsFailed: 0,
    connectionsDenied: 0,
    clients: [],
    bytesIn: 0,
    bytesOut: 0,
    rates: { bytesInPerSecond: 0, bytesOutPerSecond: 0, connectionsPerSecond: 0 },
  };
  return {
    "status": () => Promise.reject(new Error("not used")),
    "session/accept": fail(new CommandError("conflict", "Cannot accept: no session is pending")),
    "session/reject": fail(new CommandError("conflict", "Cannot reject: no session is pending")),
    "session/close": fail(new CommandError("conflict", "Cannot close: there is no session")),
    "pfo/add": (r) => {
      ran.push(`add ${r.name} ${r.listen}`);
      return Promise.resolve({ ...pfo, name: r.name });
    },
    "pfo/edit": fail(new CommandError("not-found", 'Cannot find PFO "web": see `pfo list`')),
    "pfo/enable": () => Promise.resolve(pfo),
    "pfo/disable": () => Promise.resolve(pfo),
    "pfo/rm": (r) => Promise.resolve({ removed: r.name }),
    "pfo/list": () => Promise.resolve([pfo]),
    "connections/list": () => Promise.resolve([]),
    "connections/kill": fail(new CommandError("not-found", "Cannot kill connection 9: no such")),
    "chat": fail(new CommandError("no-session", "Cannot chat: no session is established")),
    "resolve": fail(
      new CommandError("failed", 'Cannot resolve "db" on the Daemon\'s side: NXDOMAIN', {
        result: { host: "db", addresses: [], error: "NXDOMAIN" },
      }),
    ),
    "trust/list": () => Promise.resolve([]),
    "trust/rm": fail(new CommandError("not-found", 'Cannot remove "x": it is not trusted')),
  };
}

Deno.test("controlHandlers() route the control API to the command set; coded errors answer their status", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pf-commands-" });
  const ran: string[] = [];
  const path = `${dir}/test.control.json`;
  const server = await serveControl({ path, log, handlers: controlHandlers(fakeCommands(ran)) });
  try {
    const file = JSON.parse(await Deno.readTextFile(path));
    const post = async (command: string, body: unknown) => {
      const res = await fetch(`http://127.0.0.1:${file.port}/${command}`, {
        method: "POST",
        headers: { authorization: `Bearer ${file.secret}` },
        body: JSON.stringify(body),
      });
      return { status: res.status, reply: await res.json() };
    };
    const added = await post("pfo/add", { name: "web", listen: "8080", target: "h:80" });
    assert.equal(added.status, 200);
    assert.equal(added.reply.result.name, "web");
    assert.deepEqual(ran, ["add web 8080"]);
    const expected: [string, unknown, number][] = [
      ["pfo/add", { name: "a b", listen: "8080", target: "h:80" }, 400],
      ["pfo/edit", { name: "web", target: "db:80" }, 404],
      ["session/accept", {}, 409],
      ["chat", { text: "hi" }, 409],
      ["connections/kill", { id: 9 }, 404],
      ["resolve", { host: "db" }, 502],
      ["trust/rm", { fingerprint: "x" }, 404],
      ["eval", {}, 404],
    ];
    for (const [command, body, status] of expected) {
      const got = await post(command, body);
      assert.equal(got.status, status, command);
      assert.match(got.reply.error, /^Cannot /, command);
    }
    assert.deepEqual(ran, ["add web 8080"], "a refused request ran its command");
    // The typed client gets the command's result so far with its error.
    const err = await callControl(path, "resolve", { host: "db" }, "Console").catch((e) => e);
    assert.ok(err instanceof ControlCallError);
    assert.deepEqual(err.result, { host: "db", addresses: [], error: "NXDOMAIN" });
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("inProcessClient() checks requests as the control API does, and fails as a control call would", async () => {
  const ran: string[] = [];
  const client = inProcessClient(fakeCommands(ran));
  assert.deepEqual(await client("pfo/rm", { name: "web" }), { removed: "web" });
  const bad = await client("pfo/rm", { name: "a b" }).catch((e) => e);
  assert.ok(bad instanceof ControlCallError);
  assert.match(bad.message, /a b/);
  const failed = await client("resolve", { host: "db" }).catch((e) => e);
  assert.ok(failed instanceof ControlCallError);
  assert.deepEqual(failed.result, { host: "db", addresses: [], error: "NXDOMAIN" });
  assert.ok(failed.cause instanceof CommandError);
  assert.equal(failed.cause.code, "failed");
});

Deno.test("OfflineCommands changes PFOs in the settings file with the same checks and codes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pf-offline-" });
  try {
    const path = `${dir}/portferry-console.yaml`;
    await Deno.writeTextFile(
      path,
      "# mine\npfos:\n  - name: web\n    listen: 127.0.0.1:8080\n    target: h:80\n",
    );
    const offline = new OfflineCommands(path);
    const add = readRequest("pfo/add", { name: "db", listen: "127.0.0.1:5432", target: "db:5432" });
    await offline.changePfo({ command: "pfo/add", request: add });
    assert.deepEqual((await offline.listPfos()).map((p) => [p.name, p.state]), [
      ["web", "saved"],
      ["db", "saved"],
    ]);
    assert.match(await Deno.readTextFile(path), /^# mine\n/);
    const codes: string[] = [];
    for (
      const change of [
        { command: "pfo/add", request: add },
        { command: "pfo/add", request: { ...add, name: "db2" } },
        { command: "pfo/rm", request: { name: "nope" } },
      ] as const
    ) {
      const err = await offline.changePfo(change).catch((e) => e);
      assert.ok(err instanceof CommandError, String(err));
      codes.push(err.code);
    }
    assert.deepEqual(codes, ["conflict", "conflict", "not-found"]);
    await offline.changePfo({ command: "pfo/disable", request: { name: "web" } });
    assert.deepEqual((await offline.listPfos()).map((p) => p.state), ["disabled", "saved"]);
    await Deno.writeTextFile(path, "pfos: [oops\n");
    const invalid = await offline.changePfo({ command: "pfo/rm", request: { name: "web" } })
      .catch((e) => e);
    assert.ok(invalid instanceof CommandError);
    assert.equal(invalid.code, "conflict");
    assert.match(invalid.message, /^Cannot change PFOs: the settings file is invalid/);
    assert.equal(await Deno.readTextFile(path), "pfos: [oops\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
