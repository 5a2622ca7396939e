/**
 * End-to-end tests of the command-line contract and the settings file:
 * exit codes and usage text, `--config` in any position, `status --json`
 * shapes, malformed settings refused at start and while running, run-time
 * changes written back with comments kept, and owner-only files.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  cliCommand,
  type CliResult,
  type ConsoleProc,
  echoRoundTrip,
  echoServer,
  json,
  Output,
  type PfoJson,
  runCli,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  type StatusJson,
  statusOf,
  taskFlags,
  tempDir,
} from "./_harness.ts";
import { VERSION } from "../lib/app/cli.ts";
import { programCommand } from "../lib/app/invocation.ts";
import { settingsPaths } from "../lib/settings/paths.ts";
import { parseConsoleSettings } from "../lib/settings/schema.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/**
 * Run an entry like {@linkcode runCli}, but kill it after `ms`: a command
 * that should fail at once must not hang the test when it does not.
 */
async function runBounded(
  entry: "console.ts" | "daemon.ts",
  args: readonly string[],
  ms = 20_000,
): Promise<CliResult> {
  const child = (await cliCommand(entry, args)).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  try {
    const out = await child.output();
    assert.ok(out.signal === null, `${entry} ${args.join(" ")} still ran after ${ms} ms`);
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

function show(r: CliResult): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

async function mode(path: string): Promise<string> {
  return ((await Deno.stat(path)).mode! & 0o777).toString(8);
}

async function tempSettings(prefix: string): Promise<string> {
  return `${await tempDir(prefix)}/portferry-console.yaml`;
}

/** Replace a file the way editors do: write a temporary file beside it, then rename. */
async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = `${path}.swp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600 });
  await Deno.rename(tmp, path);
}

/** `text` as a literal in a RegExp. */
function esc(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function pfoOf(con: ConsoleProc, name: string): Promise<PfoJson | undefined> {
  const status = await statusOf(con);
  return status.pfos.find((p) => p.name === name);
}

// --- exit codes and usage ---------------------------------------------------

Deno.test("bad arguments exit 2 with usage text on stderr", async () => {
  const config = await tempSettings("pf-usage-");
  const fp = "SHA256:" + "A".repeat(43);
  const cases: ["console.ts" | "daemon.ts", string[]][] = [
    ["console.ts", ["--bogus"]],
    ["console.ts", ["status", "--bogus"]],
    ["console.ts", ["frobnicate"]],
    ["console.ts", ["pfo", "add", "web", "--listen", "8080"]],
    ["console.ts", ["pfo", "add", "a b", "--listen", "8080", "--target", "localhost:80"]],
    ["console.ts", ["pfo", "add", "x".repeat(65), "--listen", "8080", "--target", "localhost:80"]],
    ["console.ts", ["pfo", "add", "web", "--listen", "99999", "--target", "localhost:80"]],
    ["console.ts", ["pfo", "add", "web", "--listen", "8080", "--target", "localhost:0"]],
    ["console.ts", ["pfo", "add", "web", "--listen", "8080", "--target", "localhost"]],
    ["console.ts", ["pfo", "edit", "web"]],
    ["console.ts", ["pfo", "edit", "web", "--listen", "http"]],
    ["console.ts", ["session", "maybe"]],
    ["console.ts", ["chat"]],
    ["console.ts", ["--log-level", "loud", "status"]],
    ["console.ts", ["status", "--config"]],
    ["daemon.ts", ["--bogus"]],
    ["daemon.ts", ["127.0.0.1:1"]],
    ["daemon.ts", ["127.0.0.1:1", "--fingerprint", "SHA1:abc"]],
    ["daemon.ts", ["127.0.0.1:1", "--fingerprint", fp, "extra"]],
    ["daemon.ts", ["chat"]],
  ];
  const results = await Promise.all(
    cases.map(([entry, args]) => runBounded(entry, ["--config", config, ...args])),
  );
  const wrong = results.flatMap((r, i) =>
    r.code === 2 && /^error: /m.test(r.stderr) && /Usage: /.test(r.stderr) && r.stdout === ""
      ? []
      : [`${cases[i][0]} ${cases[i][1].join(" ")}\n${show(r)}`]
  );
  assert.deepEqual(wrong, []);
  // None of them created anything.
  assert.deepEqual([...Deno.readDirSync(config.replace(/\/[^/]+$/, ""))], []);
});

Deno.test("a bad PFO NAME or port exits 2 also while a Console runs, and nothing is added", async () => {
  await using con = await startConsole();
  for (
    const args of [
      ["pfo", "add", "a b", "--listen", "127.0.0.1:0", "--target", "localhost:80"],
      ["pfo", "add", "web", "--listen", "127.0.0.1:70000", "--target", "localhost:80"],
      ["pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "localhost:65536"],
    ]
  ) {
    const r = await con.cli(...args);
    assert.equal(r.code, 2, `${args.join(" ")}\n${show(r)}`);
    assert.match(r.stderr, /Usage: /);
  }
  assert.deepEqual(json(await con.cli("pfo", "list", "--json")), []);
});

Deno.test("--help and --version exit 0 on both programs and every subcommand", async () => {
  const config = await tempSettings("pf-help-");
  const cases: ["console.ts" | "daemon.ts", string[]][] = [
    ["console.ts", ["--help"]],
    ["console.ts", ["pfo", "add", "--help"]],
    ["console.ts", ["session", "--help"]],
    ["console.ts", ["status", "--help"]],
    ["daemon.ts", ["--help"]],
    ["daemon.ts", ["status", "--help"]],
  ];
  const helps = await Promise.all(
    cases.map(([entry, args]) => runBounded(entry, [...args, "--config", config])),
  );
  helps.forEach((r, i) => {
    const what = `${cases[i][0]} ${cases[i][1].join(" ")}\n${show(r)}`;
    assert.equal(r.code, 0, what);
    assert.match(r.stdout, /Usage: /, what);
  });
  const [consoleHelp, pfoAddHelp, , , daemonHelp] = helps;
  assert.match(consoleHelp.stdout, /pfo/);
  assert.match(pfoAddHelp.stdout, /--listen/);
  assert.match(pfoAddHelp.stdout, /--target/);
  assert.match(daemonHelp.stdout, /--fingerprint/);
  assert.match(daemonHelp.stdout, /--no-reconnect/);

  for (const entry of ["console.ts", "daemon.ts"] as const) {
    for (const flag of ["--version", "-V"]) {
      const r = await runBounded(entry, [flag]);
      assert.equal(r.code, 0, show(r));
      assert.equal(r.stdout.split("\n")[0], VERSION);
      assert.match(r.stdout, /^permissions: --allow-net /m);
    }
  }
});

Deno.test("subcommands exit 1 with a clear message when the program is not running", async () => {
  const config = await tempSettings("pf-none-");
  const daemonConfig = config.replace("console", "daemon");
  const cases: ["console.ts" | "daemon.ts", string[]][] = [
    ["console.ts", ["status"]],
    ["console.ts", ["status", "--json"]],
    ["console.ts", ["session", "accept"]],
    ["console.ts", ["session", "close"]],
    ["console.ts", ["chat", "hi"]],
    ["console.ts", ["resolve", "localhost"]],
    ["console.ts", ["trust", "rm", "SHA256:" + "A".repeat(43)]],
    ["daemon.ts", ["status"]],
    ["daemon.ts", ["chat", "hi"]],
    ["daemon.ts", ["close"]],
  ];
  const results = await Promise.all(
    cases.map(([entry, args]) =>
      runBounded(entry, [...args, "--config", entry === "console.ts" ? config : daemonConfig])
    ),
  );
  results.forEach((r, i) => {
    const what = `${cases[i][0]} ${cases[i][1].join(" ")}\n${show(r)}`;
    assert.equal(r.code, 1, what);
    assert.match(r.stderr, /^error: Cannot reach the (Console|Daemon): it is not running/m, what);
    assert.doesNotMatch(r.stderr, /Usage: |\n\s+at /, what);
    assert.equal(r.stdout, "", what);
  });
  // A missing settings file means defaults; asking for nothing wrote nothing.
  assert.deepEqual([...Deno.readDirSync(config.replace(/\/[^/]+$/, ""))], []);
});

Deno.test("subcommands that need a session exit 1 while none is established", async () => {
  await using con = await startConsole();
  for (const args of [["chat", "hi"], ["resolve", "localhost"], ["session", "close"]]) {
    const r = await con.cli(...args);
    assert.equal(r.code, 1, `${args.join(" ")}\n${show(r)}`);
    assert.match(r.stderr, /^error: Cannot .*session/m);
  }
});

Deno.test("--config works in any position", async () => {
  await using con = await startConsole({
    settings: "pfos:\n  - name: web\n    listen: 127.0.0.1:0\n    target: localhost:80\n",
  });
  const file = con.settingsPath;
  const forms = [
    ["--config", file, "pfo", "list", "--json"],
    ["pfo", "--config", file, "list", "--json"],
    ["pfo", "list", "--config", file, "--json"],
    ["pfo", "list", "--json", "--config", file],
    ["pfo", "list", "--json", `--config=${file}`],
    ["--log-level", "error", "pfo", "list", "--json", "--config", file],
  ];
  for (const args of forms) {
    const list = json<PfoJson[]>(await runCli("console.ts", args));
    assert.deepEqual(list.map((p) => p.name), ["web"], args.join(" "));
  }
  const status = json<StatusJson>(
    await runCli("console.ts", ["status", "--json", "--config", file]),
  );
  assert.equal(status.fingerprint, con.fingerprint);
});

Deno.test("a duplicate `pfo add` NAME exits 1 and keeps the first", async () => {
  await using con = await startConsole();
  const first = await con.cli("pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "a:1");
  assert.equal(first.code, 0, show(first));
  const again = await con.cli("pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "b:2");
  assert.equal(again.code, 1, show(again));
  assert.match(again.stderr, /^error: .*"web".*taken/m);
  assert.doesNotMatch(again.stderr, /Usage: /);
  const list = json<PfoJson[]>(await con.cli("pfo", "list", "--json"));
  assert.deepEqual(list.map((p) => [p.name, p.target]), [["web", "a:1"]]);
  const saved = parseConsoleSettings(await Deno.readTextFile(con.settingsPath), con.settingsPath);
  assert.deepEqual(saved.pfos.map((p) => [p.name, p.target]), [["web", "a:1"]]);
});

Deno.test("`pfo add` on a port already taken exits 1 and saves nothing, unless --disabled", async () => {
  await using con = await startConsole({ settings: "# mine\npfos: []\n" });
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const listen = `127.0.0.1:${(taken.addr as Deno.NetAddr).port}`;
  const r = await con.cli("pfo", "add", "clash", "--listen", listen, "--target", "a:1");
  assert.equal(r.code, 1, show(r));
  assert.match(
    r.stderr,
    /^error: Cannot add PFO "clash": cannot listen on .*address already in use/m,
  );
  assert.match(r.stderr, /nothing was saved/);
  assert.equal(await pfoOf(con, "clash"), undefined);
  assert.equal(await Deno.readTextFile(con.settingsPath), "# mine\npfos: []\n");

  const off = await con.cli(
    "pfo",
    "add",
    "clash",
    "--listen",
    listen,
    "--target",
    "a:1",
    "--disabled",
  );
  assert.equal(off.code, 0, show(off));
  assert.equal((await pfoOf(con, "clash"))?.state, "disabled");
  const saved = parseConsoleSettings(await Deno.readTextFile(con.settingsPath), con.settingsPath);
  assert.deepEqual(saved.pfos.map((p) => [p.name, p.enabled]), [["clash", false]]);
  // Enabling it is all or nothing too: it stays disabled, in the file as well.
  const on = await con.cli("pfo", "enable", "clash");
  assert.equal(on.code, 1, show(on));
  assert.match(
    on.stderr,
    /^error: Cannot enable PFO "clash": .*in use; it stays disabled; nothing was saved/m,
  );
  assert.equal((await pfoOf(con, "clash"))?.state, "disabled");
  const still = parseConsoleSettings(await Deno.readTextFile(con.settingsPath), con.settingsPath);
  assert.deepEqual(still.pfos.map((p) => [p.name, p.enabled]), [["clash", false]]);
});

Deno.test("`pfo edit --listen` onto a busy port keeps the old listener serving, saves nothing and exits 1", async () => {
  await using pair = await startPair();
  const con = pair.console;
  using echo = echoServer();
  const first = await addPfo(con, "web", `127.0.0.1:${echo.port}`);
  assert.equal(await echoRoundTrip(first, "one"), "one");
  const before = await Deno.readTextFile(con.settingsPath);

  using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busyAt = `127.0.0.1:${(busy.addr as Deno.NetAddr).port}`;
  const r = await con.cli("pfo", "edit", "web", "--listen", busyAt);
  assert.equal(r.code, 1, show(r));
  assert.match(
    r.stderr,
    new RegExp(
      `^error: Cannot edit PFO "web": cannot listen on .*address already in use; it keeps listening on ${
        esc(first)
      }; nothing was saved`,
      "m",
    ),
  );
  assert.equal(await Deno.readTextFile(con.settingsPath), before);
  const kept = await pfoOf(con, "web");
  assert.deepEqual([kept?.state, kept?.bound[0], kept?.listen], [
    "listening",
    first,
    "127.0.0.1:0",
  ]);
  assert.equal(await echoRoundTrip(first, "two"), "two");

  // A free port: the Console's screen says where it listens now, and the old port is let go.
  const freePort = spareTcpPort();
  const mark = con.out.mark;
  const ok = await con.cli("pfo", "edit", "web", "--listen", `127.0.0.1:${freePort}`);
  assert.equal(ok.code, 0, show(ok));
  await con.out.waitFor(new RegExp(`^PFO "web" now listens on 127\\.0\\.0\\.1:${freePort}$`, "m"), {
    from: mark,
  });
  assert.equal(await echoRoundTrip(`127.0.0.1:${freePort}`, "three"), "three");
  await assert.rejects(echoRoundTrip(first, "gone"));

  const off = await con.cli("pfo", "disable", "web");
  assert.equal(off.code, 0, show(off));
  await con.out.waitFor(/^PFO "web" disabled$/m, { from: mark });
});

Deno.test("two PFOs of one protocol cannot share a listen address; a TCP and a UDP PFO can", async () => {
  await using con = await startConsole();
  const port = spareTcpPort();
  const add = (name: string, listen: string, ...more: string[]) =>
    con.cli("pfo", "add", name, "--listen", listen, "--target", "h:53", ...more);
  let r = await add("dns-tcp", `127.0.0.1:${port}`);
  assert.equal(r.code, 0, show(r));
  r = await add("dns-udp", `127.0.0.1:${port}`, "--udp");
  assert.equal(r.code, 0, show(r));
  for (
    const [name, listen, more] of [
      ["same", `127.0.0.1:${port}`, []],
      ["wildcard", `0.0.0.0:${port}`, []],
      ["range", `${port - 1}-${port + 1}`, []],
      ["socks", `${port}`, ["--socks"]],
      ["udp2", `0.0.0.0:${port}`, ["--udp"]],
    ] as const
  ) {
    const args = name === "socks"
      ? ["pfo", "add", name, "--listen", listen, "--socks"]
      : ["pfo", "add", name, "--listen", listen, "--target", "h:53", ...more];
    const clash = await con.cli(...args);
    const holder = name === "udp2" ? "dns-udp" : "dns-tcp";
    assert.equal(clash.code, 1, `${name}\n${show(clash)}`);
    assert.match(
      clash.stderr,
      new RegExp(`^error: Cannot add PFO "${name}": PFO "${holder}" already listens on`, "m"),
      name,
    );
  }
  const list = await con.cli("pfo", "list");
  assert.equal(list.code, 0, show(list));
  assert.match(list.stdout, /^dns-tcp .* listening \(no session\)/m);
  assert.match(list.stdout, /^dns-udp .* listening \(no session\)/m);
  const json_ = json<(PfoJson & { session: boolean })[]>(await con.cli("pfo", "list", "--json"));
  assert.deepEqual(json_.map((p) => [p.name, p.state, p.session]), [
    ["dns-tcp", "listening", false],
    ["dns-udp", "listening", false],
  ]);
  const saved = parseConsoleSettings(await Deno.readTextFile(con.settingsPath), con.settingsPath);
  assert.deepEqual(saved.pfos.map((p) => p.name), ["dns-tcp", "dns-udp"]);
});

Deno.test("`pfo` commands work on the settings file while no Console runs, and say so", async () => {
  const dir = await tempDir("pf-offline-");
  const path = `${dir}/portferry-console.yaml`;
  await Deno.writeTextFile(
    path,
    "# mine\npfos:\n  - name: db # keep\n    listen: 5432\n    target: db:5432\n",
  );
  const cli = (...args: string[]) => runCli("console.ts", ["--config", path, ...args]);
  const note = `Console not running: changed ${path}; it applies at the next start\n`;
  for (
    const args of [
      ["pfo", "add", "web", "--listen", "8080", "--target", "web:80"],
      ["pfo", "edit", "web", "--listen", "8081"],
      ["pfo", "disable", "db"],
      ["pfo", "add", "gone", "--listen", "9999", "--target", "g:1"],
      ["pfo", "rm", "gone"],
    ]
  ) {
    const r = await cli(...args);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, note, ""], args.join(" "));
  }
  // The same checks as a running Console: a taken NAME, a clash, an unknown NAME.
  for (
    const [args, why] of [
      [["pfo", "add", "web", "--listen", "1", "--target", "a:1"], /"web": the name is taken/],
      [["pfo", "add", "w2", "--listen", "8081", "--target", "a:1"], /PFO "web" already listens/],
      [["pfo", "enable", "nope"], /Cannot find PFO "nope"/],
    ] as const
  ) {
    const r = await cli(...args);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, why);
  }
  const text = await Deno.readTextFile(path);
  assert.ok(text.startsWith("# mine\n") && text.includes("# keep"), text);
  const list = await cli("pfo", "list");
  assert.equal(list.code, 0, show(list));
  const lines = list.stdout.split("\n");
  assert.equal(lines[0], `Console not running: PFOs as saved in ${path}`);
  assert.match(list.stdout, /^db +tcp +127\.0\.0\.1:5432 +db:5432 +disabled/m);
  assert.match(list.stdout, /^web +tcp +127\.0\.0\.1:8081 +web:80 +saved/m);
  const rows = json<{ name: string; state: string; source: string }[]>(
    await cli("pfo", "list", "--json"),
  );
  assert.deepEqual(rows.map((p) => [p.name, p.state, p.source]), [
    ["db", "disabled", "settings"],
    ["web", "saved", "settings"],
  ]);

  // A stale control file (its program is gone) means not running too.
  const port = spareTcpPort();
  await Deno.writeTextFile(
    settingsPaths(path).control,
    JSON.stringify({ pid: 1, port, secret: "x" }),
    { mode: 0o600 },
  );
  const stale = await cli("pfo", "enable", "db");
  assert.deepEqual([stale.code, stale.stdout], [0, note], show(stale));
  await Deno.remove(settingsPaths(path).control);

  // An invalid file is never written over.
  const broken = text + "colour: blue\n";
  await Deno.writeTextFile(path, broken);
  const refused = await cli("pfo", "disable", "web");
  assert.equal(refused.code, 1, show(refused));
  assert.match(
    refused.stderr,
    /^error: Cannot change PFOs: the settings file is invalid \(.*:\d+:\d+: /m,
  );
  assert.equal(await Deno.readTextFile(path), broken);
});

Deno.test("a rejected hand edit shows in `status` until the file is fixed, and `pfo` commands refuse to write over it", async () => {
  const good = "# mine\npfos:\n  - name: a\n    listen: 127.0.0.1:0\n    target: h:1\n";
  await using con = await startConsole({ settings: good });
  assert.equal(
    (await statusOf(con) as StatusJson & { settingsError: unknown }).settingsError,
    null,
  );
  let mark = con.out.mark;
  await atomicWrite(con.settingsPath, good + "colour: blue\n");
  await con.out.waitFor(/settings file is invalid/, { from: mark });
  const status = await statusOf(con) as StatusJson & { settingsError: string };
  assert.ok(status.settingsError.startsWith(`${con.settingsPath}:6:1: `), status.settingsError);
  assert.match(status.settingsError, /colour/);
  const text = await con.cli("status");
  assert.match(
    text.stdout,
    new RegExp(`^settings error: ${esc(con.settingsPath)}:6:1: .*colour`, "m"),
  );
  for (
    const args of [["pfo", "disable", "a"], [
      "pfo",
      "add",
      "b",
      "--listen",
      "127.0.0.1:0",
      "--target",
      "h:2",
    ]]
  ) {
    const r = await con.cli(...args);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /^error: Cannot change PFOs: the settings file is invalid/m);
  }
  assert.equal((await pfoOf(con, "a"))?.state, "listening");

  // Fixed by hand, with one PFO changed: one line on the Console's screen, and no error.
  mark = con.out.mark;
  await atomicWrite(con.settingsPath, good.replace("h:1", "h:2"));
  await con.out.waitFor(
    new RegExp(`^Settings reloaded from ${esc(con.settingsPath)}: 1 PFO changed$`, "m"),
    { from: mark },
  );
  assert.equal(
    (await statusOf(con) as StatusJson & { settingsError: unknown }).settingsError,
    null,
  );
  assert.doesNotMatch((await con.cli("status")).stdout, /settings error/);
});

// --- status shapes ------------------------------------------------------------

Deno.test("`status --json` prints only JSON of the documented shape, on the Console and the Daemon", async () => {
  await using pair = await startPair();
  using echo = echoServer();
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  assert.equal(await echoRoundTrip(listen, "12345"), "12345");
  const disabled = await pair.console.cli(
    "pfo",
    "add",
    "off",
    "--listen",
    "127.0.0.1:0",
    "--target",
    "localhost:9",
    "--disabled",
  );
  assert.equal(disabled.code, 0, show(disabled));

  const r = await pair.console.cli("status", "--json");
  assert.equal(r.code, 0, show(r));
  assert.equal(r.stderr, "");
  const status = JSON.parse(r.stdout) as StatusJson; // only JSON: parses whole
  assert.equal(status.session.state, "established");
  assert.deepEqual(
    Object.keys(status.session.peer!).filter((k) =>
      ["address", "host", "user", "fingerprint"].includes(k)
    )
      .sort(),
    ["address", "fingerprint", "host", "user"],
  );
  assert.match(status.session.peer!.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(typeof status.session.peer!.host, "string");
  assert.equal(typeof status.session.peer!.user, "string");
  assert.match(status.session.peer!.address, /^127\.0\.0\.1:\d+$/);
  assert.equal(status.fingerprint, pair.console.fingerprint);
  assert.deepEqual(status.pfos.map((p) => p.name), ["echo", "off"]);
  for (const p of status.pfos) {
    for (const key of ["name", "proto", "listen", "target", "state"] as const) {
      assert.equal(typeof p[key], "string", `${p.name}.${key}`);
    }
    assert.equal(typeof p.enabled, "boolean");
    assert.ok(p.error === null || typeof p.error === "string");
    for (const key of ["connections", "bytesIn", "bytesOut"] as const) {
      assert.ok(Number.isInteger(p[key]) && p[key] >= 0, `${p.name}.${key} = ${p[key]}`);
    }
  }
  const [echoPfo, off] = status.pfos;
  assert.deepEqual(
    [echoPfo.proto, echoPfo.listen, echoPfo.target, echoPfo.enabled, echoPfo.state, echoPfo.error],
    ["tcp", "127.0.0.1:0", `127.0.0.1:${echo.port}`, true, "listening", null],
  );
  assert.equal(echoPfo.bytesOut, 5);
  assert.equal(echoPfo.bytesIn, 5);
  assert.deepEqual([off.enabled, off.state], [false, "disabled"]);

  const list = await pair.console.cli("pfo", "list", "--json");
  assert.deepEqual(JSON.parse(list.stdout).map((p: PfoJson) => p.name), ["echo", "off"]);

  const d = await pair.daemon.cli("status", "--json");
  assert.equal(d.code, 0, show(d));
  assert.equal(d.stderr, "");
  const daemon = JSON.parse(d.stdout) as StatusJson;
  assert.equal(daemon.session.state, "established");
  assert.equal(daemon.session.peer?.fingerprint, pair.console.fingerprint);
  assert.equal(daemon.session.peer?.address, pair.console.address);
  assert.equal(daemon.fingerprint, status.session.peer!.fingerprint);
  assert.ok(Array.isArray(daemon.pfos));

  // With no session: state "none" and peer null.
  await using lone = await startConsole();
  const none = await statusOf(lone);
  assert.deepEqual(none.session.state, "none");
  assert.equal(none.session.peer, null);
  assert.deepEqual(none.pfos, []);
});

// --- settings file ------------------------------------------------------------

Deno.test("a malformed settings file is refused at start with file:line:column and left untouched", async () => {
  const cases: { what: string; text: string; at: string; says: RegExp }[] = [
    {
      what: "bad YAML",
      text: "# settings\nautoAccept: true: false\n",
      at: "2:13",
      says: /YAML/,
    },
    {
      what: "a wrong type",
      text: '# settings\nlogLevel: info\nautoAccept: "maybe" # not a boolean\n',
      at: "3:13",
      says: /"autoAccept".*true or false/,
    },
    {
      what: "an unknown key",
      text: "# settings\npfos: []\ncolour: blue\n",
      at: "3:1",
      says: /unknown key "colour"/,
    },
    {
      what: "a bad PFO",
      text:
        "pfos:\n  - name: web\n    listen: 8080\n    target: localhost:80\n    enabled: yes please\n",
      at: "5:14",
      says: /"enabled".*"web"/,
    },
  ];
  for (const c of cases) {
    const dir = await tempDir("pf-bad-");
    const path = `${dir}/portferry-console.yaml`;
    await Deno.writeTextFile(path, c.text);
    await Deno.chmod(path, 0o644);
    const before = await Deno.stat(path);
    const r = await runBounded("console.ts", [
      "--config",
      path,
      "--session",
      "127.0.0.1:0",
      "--headless",
    ]);
    assert.equal(r.code, 1, `${c.what}\n${show(r)}`);
    const first = r.stderr.split("\n")[0];
    assert.ok(first.startsWith(`error: ${path}:${c.at}: `), `${c.what}: ${first}`);
    assert.match(first, c.says, c.what);
    assert.doesNotMatch(r.stderr, /Usage: |\n\s+at /, c.what);
    assert.equal(await Deno.readTextFile(path), c.text, c.what);
    const after = await Deno.stat(path);
    assert.equal(after.mtime?.getTime(), before.mtime?.getTime(), c.what);
    assert.equal(await mode(path), "644", c.what);
    // Refused before anything else was written beside it.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["portferry-console.yaml"]);
  }

  const dir = await tempDir("pf-bad-");
  const path = `${dir}/portferry-daemon.yaml`;
  const text = "# daemon\nreconnect: maybe\n";
  await Deno.writeTextFile(path, text);
  const r = await runBounded("daemon.ts", [
    "127.0.0.1:1",
    "--fingerprint",
    "SHA256:" + "A".repeat(43),
    "--config",
    path,
    "--no-reconnect",
  ]);
  assert.equal(r.code, 1, show(r));
  assert.ok(r.stderr.startsWith(`error: ${path}:2:12: `), r.stderr);
  assert.equal(await Deno.readTextFile(path), text);
});

Deno.test("settings edits are picked up live: an invalid file keeps the running PFOs, an atomic rename adds one", async () => {
  using echo = echoServer();
  const a = `  - name: a\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:${echo.port}\n`;
  const b =
    `  - name: b # added by hand\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:${echo.port}\n`;
  await using pair = await startPair({ console: { settings: `# my PFOs\npfos:\n${a}` } });
  const con = pair.console;
  const listenA = (await pfoOf(con, "a"))!.bound[0];
  assert.equal(await echoRoundTrip(listenA, "one"), "one");

  // An invalid edit, written in place: logged with its position, PFO "a" keeps running.
  let mark = con.out.mark;
  const invalid = `# my PFOs\npfos:\n${a}    colour: red\n`;
  await Deno.writeTextFile(con.settingsPath, invalid);
  const [line] = await con.out.waitFor(/settings file is invalid.*/, { from: mark });
  assert.ok(line.includes(`${con.settingsPath}:6:5`), line);
  assert.match(line, /colour/);
  const stillA = await pfoOf(con, "a");
  assert.deepEqual([stillA?.state, stillA?.bound[0]], ["listening", listenA]);
  assert.equal(await echoRoundTrip(listenA, "two"), "two");
  assert.equal(await Deno.readTextFile(con.settingsPath), invalid, "the Console rewrote it");

  // A valid edit, saved the way editors do: "b" starts, "a" is untouched.
  mark = con.out.mark;
  await atomicWrite(con.settingsPath, `# my PFOs\npfos:\n${a}${b}`);
  await con.out.waitFor(/settings reloaded/, { from: mark });
  const newB = await pfoOf(con, "b");
  assert.equal(newB?.state, "listening");
  assert.equal(await echoRoundTrip(newB!.bound[0], "three"), "three");
  assert.equal((await pfoOf(con, "a"))?.bound[0], listenA);

  // The watch survives the rename: a second atomic edit removes "b".
  mark = con.out.mark;
  await atomicWrite(con.settingsPath, `# my PFOs\npfos:\n${a}`);
  await con.out.waitFor(/settings reloaded/, { from: mark });
  assert.equal(await pfoOf(con, "b"), undefined);
  assert.equal(await echoRoundTrip(listenA, "four"), "four");
});

Deno.test("run-time PFO changes are written back with the user's comments kept", async () => {
  const dir = await tempDir("pf-writeback-");
  const path = `${dir}/portferry-console.yaml`;
  const original = [
    "# portferry Console settings, kept by hand",
    "autoAccept: false # ask me",
    "",
    "pfos:",
    "  # the database, do not remove",
    "  - name: db",
    "    listen: 127.0.0.1:0",
    "    target: db01.lan:5432 # primary",
    "",
  ].join("\n");
  await Deno.writeTextFile(path, original);
  await Deno.chmod(path, 0o644);
  await using con = await startConsole({ dir });

  const comments = (text: string) => {
    for (
      const c of [
        "# portferry Console settings, kept by hand",
        "# ask me",
        "# the database, do not remove",
        "# primary",
      ]
    ) assert.ok(text.includes(c), `lost "${c}":\n${text}`);
  };
  const saved = async () => {
    const text = await Deno.readTextFile(path);
    comments(text);
    return parseConsoleSettings(text, path);
  };
  const spec = (s: Awaited<ReturnType<typeof saved>>) =>
    s.pfos.map((p) => [p.name, p.listen, p.target, p.enabled]);

  let r = await con.cli("pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "web:80");
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(spec(await saved()), [
    ["db", "127.0.0.1:0", "db01.lan:5432", true],
    ["web", "127.0.0.1:0", "web:80", true],
  ]);
  assert.equal(await mode(path), "600");

  r = await con.cli("pfo", "edit", "web", "--target", "web2:8080");
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(spec(await saved())[1], ["web", "127.0.0.1:0", "web2:8080", true]);

  r = await con.cli("pfo", "disable", "db");
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(spec(await saved())[0], ["db", "127.0.0.1:0", "db01.lan:5432", false]);
  assert.equal((await pfoOf(con, "db"))?.state, "disabled");

  r = await con.cli("pfo", "enable", "db");
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(spec(await saved())[0], ["db", "127.0.0.1:0", "db01.lan:5432", true]);

  r = await con.cli("pfo", "rm", "web");
  assert.equal(r.code, 0, show(r));
  assert.deepEqual(spec(await saved()), [["db", "127.0.0.1:0", "db01.lan:5432", true]]);
  assert.equal(await pfoOf(con, "web"), undefined);

  // Our own writes are not reported as edits by hand.
  assert.doesNotMatch(con.out.text(), /settings reloaded|settings file is invalid/);
  assert.equal(await mode(path), "600");
});

Deno.test("everything written beside the settings is owner-only, and a missing settings file is created on the first write", async () => {
  await using con = await startConsole();
  const paths = settingsPaths(con.settingsPath);
  for (const file of [paths.key, paths.cert, paths.control]) {
    assert.equal(await mode(file), "600", file);
  }
  await assert.rejects(Deno.stat(con.settingsPath), Deno.errors.NotFound);

  const r = await con.cli("pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "web:80");
  assert.equal(r.code, 0, show(r));
  assert.equal(await mode(con.settingsPath), "600");

  await using daemon = await startDaemon(con);
  await con.out.waitFor(/asks for a session/);
  const accepted = await con.cli("session", "accept", "--remember");
  assert.equal(accepted.code, 0, show(accepted));
  await daemon.out.waitFor(/Session established/);
  assert.equal(await mode(paths.trust), "600");
  const trusted = json<{ fingerprint: string; source: string }[]>(
    await con.cli("trust", "list", "--json"),
  );
  const daemonStatus = await statusOf(daemon);
  assert.deepEqual(trusted.map((t) => t.fingerprint), [daemonStatus.fingerprint]);

  const d = settingsPaths(daemon.settingsPath);
  for (const file of [d.key, d.cert, d.control]) assert.equal(await mode(file), "600", file);
});

Deno.test("a Console without --headless and no terminal on stdin never prompts", async () => {
  const dir = await tempDir("pf-noterm-");
  const config = `${dir}/portferry-console.yaml`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...await taskFlags("console"),
      "console.ts",
      "--config",
      config,
      "--session",
      "127.0.0.1:0",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  try {
    const [, fingerprint] = await out.waitFor(/fingerprint: (SHA256:\S+)/);
    const [, address] = await out.waitFor(/Console listening for Daemons on (\S+)/);
    await using daemon = await startDaemon({ address, fingerprint });
    await out.waitFor(/asks for a session/);
    assert.doesNotMatch(out.text(), /\[y\]es|Type a line to chat/);
    const r = await runCli("console.ts", ["session", "accept", "--config", config]);
    assert.equal(r.code, 0, show(r));
    await daemon.out.waitFor(/Session established/);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited already.
    }
    await child.status;
    await pumps;
  }
});

Deno.test("`pfo add` while the settings file on disk is invalid exits 1 and leaves the file untouched", async () => {
  await using con = await startConsole({ settings: "# mine\npfos: []\n" });
  const broken = "# mine\npfos: []\ncolour: blue\n";
  const mark = con.out.mark;
  await Deno.writeTextFile(con.settingsPath, broken);
  await con.out.waitFor(/settings file is invalid/, { from: mark });
  const r = await con.cli("pfo", "add", "web", "--listen", "127.0.0.1:0", "--target", "web:80");
  assert.equal(r.code, 1, show(r));
  assert.ok(r.stderr.includes(`${con.settingsPath}:3:1`), r.stderr);
  assert.equal(await Deno.readTextFile(con.settingsPath), broken);
  assert.deepEqual(json(await con.cli("pfo", "list", "--json")), []);
});

Deno.test("a write-back keeps an edit made by hand just before it", async () => {
  await using con = await startConsole({ settings: "# mine\npfos: []\n" });
  // No waiting for the reload: the write-back must re-read the file itself.
  await atomicWrite(
    con.settingsPath,
    "# mine\ngraceMs: 1234 # by hand\npfos:\n  - name: hand\n    listen: 127.0.0.1:0\n    target: h:1\n",
  );
  const r = await con.cli("pfo", "add", "cli", "--listen", "127.0.0.1:0", "--target", "c:2");
  assert.equal(r.code, 0, show(r));
  const text = await Deno.readTextFile(con.settingsPath);
  assert.match(text, /graceMs: 1234 # by hand/);
  const saved = parseConsoleSettings(text, con.settingsPath);
  assert.deepEqual(saved.pfos.map((p) => p.name), ["hand", "cli"]);
  assert.equal(saved.graceMs, 1234);
  const list = json<PfoJson[]>(await con.cli("pfo", "list", "--json"));
  assert.deepEqual(list.map((p) => [p.name, p.state]), [["hand", "listening"], [
    "cli",
    "listening",
  ]]);
});

Deno.test("a missing --token-file exits 1 naming the file", async () => {
  const dir = await tempDir("pf-token-");
  const r = await runBounded("console.ts", [
    "--config",
    `${dir}/portferry-console.yaml`,
    "--session",
    "127.0.0.1:0",
    "--headless",
    "--token-file",
    `${dir}/no-such-token`,
  ]);
  assert.equal(r.code, 1, show(r));
  assert.match(r.stderr, /^error: Cannot read token file ".*no-such-token"/m);
});

// --- one running program per settings file ----------------------------------------

Deno.test("a second Console on the same settings file exits 1 and leaves the first one's files alone", async () => {
  await using con = await startConsole();
  const paths = settingsPaths(con.settingsPath);
  const control = await Deno.readTextFile(paths.control);
  const r = await runBounded("console.ts", [
    "--config",
    con.settingsPath,
    "--session",
    "127.0.0.1:0",
    "--headless",
  ]);
  assert.equal(r.code, 1, show(r));
  assert.equal(
    r.stderr.trim(),
    `error: Cannot start: a Console is already running for ${con.settingsPath} (pid ${con.child.pid})`,
  );
  assert.doesNotMatch(r.stdout, /listening|address already in use/);
  assert.equal(await Deno.readTextFile(paths.control), control);
  const status = await statusOf(con);
  assert.equal(status.fingerprint, con.fingerprint);
});

Deno.test("a second Daemon on the same settings file exits 1, and a mistyped `daemon stauts` dials nothing", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using daemon = await startDaemon(con);
  await daemon.out.waitFor(/Session established/);
  const control = await Deno.readTextFile(settingsPaths(daemon.settingsPath).control);
  const args = ["--fingerprint", con.fingerprint, "--config", daemon.settingsPath];
  const second = await runBounded("daemon.ts", [con.address, ...args]);
  assert.equal(second.code, 1, show(second));
  assert.equal(
    second.stderr.trim(),
    `error: Cannot start: a Daemon is already running for ${daemon.settingsPath} (pid ${daemon.child.pid})`,
  );
  const typo = await runBounded("daemon.ts", ["stauts", ...args]);
  assert.equal(typo.code, 2, show(typo));
  assert.equal(
    typo.stderr.trimEnd().split("\n").at(-1),
    "error: unknown command 'stauts'. Did you mean status?",
  );
  assert.equal(await Deno.readTextFile(settingsPaths(daemon.settingsPath).control), control);
  assert.equal((await statusOf(daemon)).session.state, "established");
});

// --- the words the user types -------------------------------------------------------

Deno.test("`help`, `help COMMAND` and typos: usage of the command at fault, the error line last", async () => {
  const dir = await tempDir("pf-words-");
  const config = `${dir}/portferry-console.yaml`;
  const daemonConfig = `${dir}/portferry-daemon.yaml`;
  const run = (entry: "console.ts" | "daemon.ts", ...args: string[]) =>
    runBounded(entry, ["--config", entry === "console.ts" ? config : daemonConfig, ...args]);

  const [help, helpPfo, daemonHelp] = await Promise.all([
    run("console.ts", "help"),
    run("console.ts", "help", "pfo"),
    run("daemon.ts", "help"),
  ]);
  for (const r of [help, helpPfo, daemonHelp]) assert.equal(r.code, 0, show(r));
  assert.match(help.stdout, /^Usage: deno task console \[options\] \[command\]/);
  assert.match(helpPfo.stdout, /^Usage: deno task console pfo /);
  assert.match(daemonHelp.stdout, /^Usage: deno task daemon HOST/);
  // The first line names the ws:// and wss:// forms and that there are commands (listed below it).
  assert.match(daemonHelp.stdout, /^Usage: [^\n]*wss:\/\/HOST\[:PORT\]\/PATH [^\n]*\[command\]\n/);
  assert.match(daemonHelp.stdout, /^ {2}dashboard /m);

  const cases: [entry: "console.ts" | "daemon.ts", args: string[], usage: RegExp, last: string][] =
    [
      ["console.ts", ["stauts"], /^Usage: deno task console \[options\]/, "Did you mean status?"],
      ["console.ts", ["pfo", "lsit"], /^Usage: deno task console pfo /, "Did you mean list?"],
      [
        "console.ts",
        ["connections", "kill", "abc"],
        /^Usage: deno task console connections kill /,
        'Cannot parse connection id "abc"',
      ],
      [
        "console.ts",
        ["pfo", "add", "web", "--listen", "8080", "--target", "db01"],
        /^Usage: deno task console pfo add /,
        "the port is missing",
      ],
      ["console.ts", ["--session", "127.0.0.1:99999", "--headless"], /^Usage: /, "99999"],
      [
        "daemon.ts",
        ["connections", "kill", "abc"],
        /^Usage: deno task daemon connections kill /,
        'Cannot parse connection id "abc"',
      ],
    ];
  const results = await Promise.all(cases.map(([entry, args]) => run(entry, ...args)));
  results.forEach((r, i) => {
    const [entry, args, usage, last] = cases[i];
    const what = `${entry} ${args.join(" ")}\n${show(r)}`;
    assert.equal(r.code, 2, what);
    assert.match(r.stderr, usage, what);
    const lines = r.stderr.trimEnd().split("\n");
    assert.ok(lines.at(-1)!.startsWith("error: ") && lines.at(-1)!.includes(last), what);
    // A subcommand's usage, not the whole program's.
    if (!r.stderr.startsWith("Usage: deno task console [options]")) {
      assert.ok(lines.length < 25, `${what}: ${lines.length} lines`);
    }
  });
  assert.deepEqual([...Deno.readDirSync(dir)], []);
});

Deno.test("`connections kill` of an unknown id exits 1 with the reason, on the Console and the Daemon", async () => {
  await using pair = await startPair();
  for (const proc of [pair.console, pair.daemon]) {
    const r = await proc.cli("connections", "kill", "999");
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /^error: Cannot kill connection 999: no such connection/m);
    assert.doesNotMatch(r.stderr, /Usage: /);
  }
});

Deno.test("`status` says each fact once: a disabled PFO's full listen address, the Daemon's session state once", async () => {
  await using pair = await startPair();
  const add = await pair.console.cli(
    "pfo",
    "add",
    "off",
    "--listen",
    "18081",
    "--target",
    "localhost:9",
    "--disabled",
  );
  assert.equal(add.code, 0, show(add));
  for (const args of [["pfo", "list"], ["status"]]) {
    const r = await pair.console.cli(...args);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /^off\s+tcp\s+127\.0\.0\.1:18081\s+localhost:9\s+disabled/m, show(r));
  }
  const d = await pair.daemon.cli("status");
  assert.equal(d.code, 0, show(d));
  assert.match(d.stdout, /^session: established$/m, show(d));
});

Deno.test("the banner's Daemon command and the headless accept hint work as printed", {
  ignore: Deno.build.os === "windows",
}, async () => {
  await using con = await startConsole();
  const [, daemonCommand] = await con.out.waitFor(/^ {4}(\S.* --fingerprint SHA256:\S+)$/);
  assert.equal(
    daemonCommand,
    programCommand("daemon", [con.address, "--fingerprint", con.fingerprint]),
  );
  const dir = await tempDir("pf-as-printed-");
  const daemonSettings = `${dir}/portferry-daemon.yaml`;
  const sh = (command: string) =>
    new Deno.Command("sh", {
      args: ["-c", command],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    });
  const daemon = sh(`exec ${daemonCommand} --config ${daemonSettings} --no-reconnect`).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(daemon.stdout), out.pump(daemon.stderr)]);
  try {
    const [, accept] = await con.out.waitFor(/^ {2}accept: (.*\S)\s{4}reject: /);
    assert.equal(
      accept,
      programCommand("console", ["session", "accept"], { config: con.settingsPath }),
    );
    const accepted = await sh(accept).output();
    assert.equal(accepted.code, 0, decoder.decode(accepted.stderr));
    await out.waitFor(/Session established/);
  } finally {
    const closed = await runCli("daemon.ts", ["close", "--config", daemonSettings]);
    if (closed.code !== 0) daemon.kill("SIGKILL");
    await daemon.status;
    await pumps;
  }
});
