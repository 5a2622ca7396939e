import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { ConfigError } from "../core/errors.ts";
import { findListenClashes, resolvePfo } from "./pfo.ts";
import {
  applyConsoleEdits,
  type ConsoleSettings,
  DEFAULT_CONSOLE_SETTINGS,
  DEFAULT_DAEMON_SETTINGS,
  defaultSettingsFile,
  loadConsoleSettings,
  loadDaemonSettings,
  parseConsoleSettings,
  parseDaemonSettings,
  readTokenFile,
  settingsPaths,
  updateConsoleSettings,
  watchSettings,
} from "./settings.ts";
import { writeFileAtomic } from "../core/io.ts";

const FIXTURES = fileURLToPath(new URL("../../tests/testdata/settings/", import.meta.url));
const FP_A = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
const FP_B = "SHA256:PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0";
const IS_WINDOWS = Deno.build.os === "windows";

async function readFixtures(kind: "valid" | "invalid"): Promise<[string, string][]> {
  const dir = join(FIXTURES, kind);
  const out: [string, string][] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isFile || !entry.name.endsWith(".yaml")) continue;
    out.push([join(dir, entry.name), await Deno.readTextFile(join(dir, entry.name))]);
  }
  return out.sort(([a], [b]) => a.localeCompare(b));
}

function parseByName(path: string, text: string): unknown {
  const name = path.split(/[\\/]/).pop()!;
  if (name.startsWith("console-")) return parseConsoleSettings(text, path);
  if (name.startsWith("daemon-")) return parseDaemonSettings(text, path);
  throw new Error(`Fixture ${name} must be named console-*.yaml or daemon-*.yaml`);
}

/** Resolves with the promise, or rejects after `ms` naming what was awaited. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "portferry-settings-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("parseConsoleSettings() and parseDaemonSettings() accept every valid fixture", async () => {
  const fixtures = await readFixtures("valid");
  assert.ok(fixtures.some(([p]) => p.includes("console-")), "no console fixture read");
  assert.ok(fixtures.some(([p]) => p.includes("daemon-")), "no daemon fixture read");
  for (const [path, text] of fixtures) {
    const settings = parseByName(path, text);
    assert.ok(Object.isFrozen(settings), path);
  }
});

Deno.test("parseConsoleSettings() and parseDaemonSettings() reject every invalid fixture at file:line:col", async () => {
  const fixtures = await readFixtures("invalid");
  assert.ok(fixtures.length > 0, "no invalid fixture read");
  for (const [path, text] of fixtures) {
    const want = /^# error: (.+)$/m.exec(text.split("\n")[0])?.[1];
    assert.ok(want, `${path}: first line must be "# error: <expected message part>"`);
    assert.throws(() => parseByName(path, text), (err: unknown) => {
      assert.ok(err instanceof ConfigError, `${path}: ${err}`);
      assert.ok(err.message.startsWith(`${path}:`), `${path}: ${err.message}`);
      assert.ok(err.message.includes(want), `${path}:\n  got  ${err.message}\n  want ${want}`);
      assert.equal(err.path, path);
      assert.equal(typeof err.line, "number", err.message);
      return true;
    });
  }
});

Deno.test("parseConsoleSettings() resolves every key of a full file", async () => {
  const path = join(FIXTURES, "valid", "console-full.yaml");
  const s = parseConsoleSettings(await Deno.readTextFile(path), path);
  assert.deepEqual(s.session, { host: "0.0.0.0", port: 7470 });
  assert.equal(s.autoAccept, false);
  assert.equal(s.tokenFile, join(dirname(path), "token.txt"));
  assert.deepEqual(s.trusted, [FP_A, FP_B]);
  assert.equal(s.graceMs, 2500);
  assert.equal(s.pendingTimeoutMs, 120_000);
  assert.equal(s.logLevel, "debug");
  assert.equal(s.logFormat, "json");
  assert.deepEqual(s.pfos.map((p) => [p.name, p.proto, p.listen, p.target, p.enabled]), [
    ["web", "tcp", "8080", "localhost:80", true],
    ["db", "tcp", "5432", "db01.lan:5432", true],
    ["dns", "udp", "0.0.0.0:5353", "10.0.0.53:53", false],
  ]);
  assert.deepEqual({ ...s.pfos[2].listenAddr }, { host: "0.0.0.0", port: 5353, portEnd: 5353 });
});

Deno.test("parseConsoleSettings() gives the defaults for empty text and comments", () => {
  assert.deepEqual(parseConsoleSettings("", "c.yaml"), DEFAULT_CONSOLE_SETTINGS);
  assert.deepEqual(parseConsoleSettings("# nothing\n", "c.yaml"), DEFAULT_CONSOLE_SETTINGS);
  assert.deepEqual(parseConsoleSettings("pfos:\ntrusted:\n", "c.yaml"), DEFAULT_CONSOLE_SETTINGS);
});

Deno.test("parseConsoleSettings() reads ranges, IPv6, socks and port 0", async () => {
  const path = join(FIXTURES, "valid", "console-ranges.yaml");
  const s = parseConsoleSettings(await Deno.readTextFile(path), path);
  assert.deepEqual(s.session, { host: "0.0.0.0", port: 7471 });
  const byName = new Map(s.pfos.map((p) => [p.name, p]));
  assert.equal(byName.get("range.paired")?.targetAddr?.portEnd, 19009);
  assert.equal(byName.get("range_to_one")?.listenAddr.host, "::1");
  assert.equal(byName.get("socks-1")?.targetAddr, null);
  assert.equal(byName.get("ephemeral")?.listenAddr.port, 0);
});

Deno.test("parseDaemonSettings() resolves every key and the defaults", async () => {
  const path = join(FIXTURES, "valid", "daemon-full.yaml");
  const s = parseDaemonSettings(await Deno.readTextFile(path), path);
  assert.deepEqual(s.console, { host: "office.example.com", port: 7470 });
  assert.equal(s.fingerprint, FP_A);
  assert.equal(s.tokenFile, "/etc/portferry/token");
  assert.equal(s.reconnect, true);
  assert.equal(s.backoffMaxMs, 30000);
  assert.equal(s.connectTimeoutMs, 5000);
  assert.equal(s.maxHeldBytes, 16 * 1024 * 1024);
  assert.equal(s.logLevel, "warn");
  assert.deepEqual(s.allow, ["10.0.0.0/8", "db01:5432"]);
  assert.deepEqual(parseDaemonSettings("", "d.yaml"), DEFAULT_DAEMON_SETTINGS);
  assert.deepEqual(parseDaemonSettings("console: h\n", "d.yaml").console, {
    host: "h",
    port: 7470,
  });
});

Deno.test("settingsPaths() puts identity, control and trust files beside the settings", () => {
  assert.deepEqual({ ...settingsPaths("/d/portferry-console.yaml") }, {
    settings: "/d/portferry-console.yaml",
    key: "/d/portferry-console.key.pem",
    cert: "/d/portferry-console.cert.pem",
    control: "/d/portferry-console.control.json",
    trust: "/d/portferry-console.trust.json",
  });
  assert.equal(settingsPaths("/d/pfd.yml").cert, "/d/pfd.cert.pem");
  assert.equal(settingsPaths("C:\\pf\\pfd.YAML").key, "C:\\pf\\pfd.key.pem");
  assert.equal(settingsPaths("/d/settings").trust, "/d/settings.trust.json");
});

Deno.test("defaultSettingsFile() sits beside the entry file or the executable", () => {
  assert.equal(
    defaultSettingsFile("console", {
      mainModule: "file:///src/pf/console.ts",
      execPath: "/bin/deno",
    }),
    "/src/pf/portferry-console.yaml",
  );
  assert.equal(
    defaultSettingsFile("daemon", {
      mainModule: "file:///tmp/deno-compile-portferry-daemon/daemon.ts",
      execPath: "/opt/pf/portferry-daemon",
    }),
    "/opt/pf/portferry-daemon.yaml",
  );
  assert.equal(
    defaultSettingsFile("daemon", { mainModule: "data:,x", execPath: "/opt/pf/pfd.exe" }),
    "/opt/pf/pfd.yaml",
  );
  // This test runs from source.
  assert.equal(
    defaultSettingsFile("console"),
    join(dirname(fileURLToPath(Deno.mainModule)), "portferry-console.yaml"),
  );
});

Deno.test("loadConsoleSettings() gives the defaults for a missing file", async () => {
  await using dir = await tempDir();
  const loaded = await loadConsoleSettings(join(dir.path, "portferry-console.yaml"));
  assert.equal(loaded.text, null);
  assert.equal(loaded.settings, DEFAULT_CONSOLE_SETTINGS);
  const daemon = await loadDaemonSettings(join(dir.path, "portferry-daemon.yaml"));
  assert.equal(daemon.settings, DEFAULT_DAEMON_SETTINGS);
});

Deno.test("loadConsoleSettings() returns the settings and the text of a file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "c.yaml");
  await Deno.writeTextFile(path, "graceMs: 10\n");
  const loaded = await loadConsoleSettings(path);
  assert.equal(loaded.text, "graceMs: 10\n");
  assert.equal(loaded.settings.graceMs, 10);
  await Deno.writeTextFile(path, "graceMs: ten\n");
  await assert.rejects(() => loadConsoleSettings(path), ConfigError);
});

const COMMENTED = `# portferry Console settings
# second header line

session: "0.0.0.0:7470" # the session port
autoAccept: false

pfos:
  # The public web site.
  - name: web
    listen: 8080 # keep in sync with nginx
    target: localhost:80

  # The database, read-only replica.
  - name: db
    listen: "5432"
    target: db01:5432
    enabled: true

# Daemons we know.
trusted: []
logLevel: info # set debug when hunting bugs
`;

function assertInOrder(text: string, parts: string[]): void {
  let at = -1;
  for (const part of parts) {
    const next = text.indexOf(part, at + 1);
    assert.ok(next > at, `"${part}" missing or out of order in:\n${text}`);
    at = next;
  }
}

Deno.test("applyConsoleEdits() keeps comments and order when adding a PFO", () => {
  const out = applyConsoleEdits(COMMENTED, {
    op: "addPfo",
    pfo: { name: "ssh", proto: "tcp", listen: "2222", target: "bastion:22", enabled: true },
  }, { path: "c.yaml" });
  assertInOrder(out.text, [
    "# portferry Console settings",
    "# second header line",
    "# the session port",
    "# The public web site.",
    "name: web",
    "# keep in sync with nginx",
    "# The database, read-only replica.",
    "name: db",
    "name: ssh",
    "# Daemons we know.",
    "trusted:",
    "# set debug when hunting bugs",
  ]);
  assert.deepEqual(out.settings.pfos.map((p) => p.name), ["web", "db", "ssh"]);
  assert.ok(out.changed);
  assert.equal(COMMENTED.includes("ssh"), false, "input text is untouched");
});

Deno.test("applyConsoleEdits() edits only the named PFO and keeps its comments", () => {
  const out = applyConsoleEdits(COMMENTED, {
    op: "editPfo",
    name: "web",
    changes: { listen: "8080-8081", target: "localhost:80-81" },
  }, { path: "c.yaml" });
  assertInOrder(out.text, [
    "# The public web site.",
    "name: web",
    "listen: 8080-8081 # keep in sync with nginx",
    "target: localhost:80-81",
    "# The database, read-only replica.",
    `listen: "5432"`,
  ]);
  assert.equal(out.settings.pfos[0].listenAddr.portEnd, 8081);
  assert.equal(out.settings.pfos[1].listen, "5432");
});

Deno.test("applyConsoleEdits() removes a PFO and keeps the others' comments", () => {
  const out = applyConsoleEdits(COMMENTED, { op: "removePfo", name: "web" }, { path: "c.yaml" });
  assert.equal(out.text.includes("name: web"), false, out.text);
  assertInOrder(out.text, [
    "# second header line",
    "# The database, read-only replica.",
    "name: db",
    "# Daemons we know.",
    "# set debug when hunting bugs",
  ]);
  assert.deepEqual(out.settings.pfos.map((p) => p.name), ["db"]);
});

Deno.test("applyConsoleEdits() enables, disables, renames and switches to socks", () => {
  const path = "c.yaml";
  let text =
    applyConsoleEdits(COMMENTED, { op: "setPfoEnabled", name: "db", enabled: false }, { path })
      .text;
  assert.match(text, /enabled: false/);
  const renamed = applyConsoleEdits(text, { op: "editPfo", name: "db", changes: { name: "db2" } }, {
    path,
  });
  assert.deepEqual(renamed.settings.pfos.map((p) => p.name), ["web", "db2"]);
  text = applyConsoleEdits(renamed.text, {
    op: "editPfo",
    name: "db2",
    changes: { proto: "socks", target: null, listen: "1080" },
  }, { path }).text;
  const s = parseConsoleSettings(text, path);
  assert.equal(s.pfos[1].proto, "socks");
  assert.equal(s.pfos[1].target, null);
  assert.equal(text.includes("db01:5432"), false);
});

Deno.test("applyConsoleEdits() adds and removes trusted fingerprints", () => {
  const path = "c.yaml";
  const added = applyConsoleEdits(COMMENTED, [
    { op: "addTrusted", fingerprint: FP_A },
    { op: "addTrusted", fingerprint: FP_B },
    { op: "addTrusted", fingerprint: FP_A },
  ], { path });
  assert.deepEqual(added.settings.trusted, [FP_A, FP_B]);
  assert.match(added.text, /# Daemons we know\.\ntrusted:\n {2}- /);
  const removed = applyConsoleEdits(added.text, { op: "removeTrusted", fingerprint: FP_A }, {
    path,
  });
  assert.deepEqual(removed.settings.trusted, [FP_B]);
  const again = applyConsoleEdits(removed.text, { op: "removeTrusted", fingerprint: FP_A }, {
    path,
  });
  assert.equal(again.changed, false);
});

Deno.test("applyConsoleEdits() refuses edits that do not apply or would be invalid", () => {
  const path = "c.yaml";
  const rows: [Parameters<typeof applyConsoleEdits>[1], string][] = [
    [
      {
        op: "addPfo",
        pfo: { name: "web", proto: "tcp", listen: "1", target: "h:1", enabled: true },
      },
      `Cannot add PFO "web": a PFO with that name exists`,
    ],
    [
      {
        op: "addPfo",
        pfo: { name: "x", proto: "tcp", listen: "1-2", target: "h:1-3", enabled: true },
      },
      `Cannot add PFO "x": Cannot use PFO "x": target "h:1-3" has 3 ports`,
    ],
    [
      { op: "editPfo", name: "nope", changes: { listen: "1" } },
      `Cannot edit PFO "nope": no PFO has that name`,
    ],
    [{ op: "removePfo", name: "nope" }, `Cannot remove PFO "nope": no PFO has that name`],
    [{ op: "editPfo", name: "web", changes: { name: "db" } }, `Cannot rename PFO "web" to "db"`],
    [{ op: "editPfo", name: "web", changes: { proto: "socks" } }, "a socks PFO takes no target"],
    [{ op: "editPfo", name: "web", changes: { listen: "99999" } }, "above 65535"],
    [{ op: "addTrusted", fingerprint: "SHA256:x" }, `Cannot trust "SHA256:x"`],
  ];
  for (const [edit, want] of rows) {
    assert.throws(() => applyConsoleEdits(COMMENTED, edit, { path }), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(err.message.startsWith("c.yaml: "), err.message);
      assert.ok(err.message.includes(want), `got ${err.message}\nwant ${want}`);
      return true;
    });
  }
});

Deno.test("applyConsoleEdits() refuses to edit invalid text", () => {
  assert.throws(
    () => applyConsoleEdits("pfos: [\n", { op: "removePfo", name: "x" }, { path: "c.yaml" }),
    (err: unknown) => err instanceof ConfigError && err.message.includes("Cannot parse YAML"),
  );
});

Deno.test("updateConsoleSettings() creates a missing file with mode 0600", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "portferry-console.yaml");
  const s = await updateConsoleSettings(path, {
    op: "addPfo",
    pfo: { name: "web", proto: "tcp", listen: "8080", target: "localhost:80", enabled: true },
  });
  assert.deepEqual(s.pfos.map((p) => p.name), ["web"]);
  const text = await Deno.readTextFile(path);
  assert.match(text, /^# portferry Console settings/);
  assert.deepEqual(parseConsoleSettings(text, path), s);
  if (!IS_WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  const names = [];
  for await (const e of Deno.readDir(dir.path)) names.push(e.name);
  assert.deepEqual(names, ["portferry-console.yaml"], "no temporary file left behind");
});

Deno.test("updateConsoleSettings() keeps comments on disk and re-reads the file first", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "c.yaml");
  await Deno.writeTextFile(path, COMMENTED);
  await updateConsoleSettings(path, { op: "setPfoEnabled", name: "web", enabled: false });
  // Someone edits the file by hand between two run-time changes.
  const edited = (await Deno.readTextFile(path)).replace("graceMs", "x") +
    "graceMs: 42 # hand edit\n";
  await Deno.writeTextFile(path, edited);
  const s = await updateConsoleSettings(path, { op: "removePfo", name: "db" });
  assert.equal(s.graceMs, 42);
  const text = await Deno.readTextFile(path);
  assertInOrder(text, [
    "# second header line",
    "# The public web site.",
    "enabled: false",
    "# Daemons we know.",
    "graceMs: 42 # hand edit",
  ]);
  assert.equal(text.includes("name: db"), false);
});

Deno.test("updateConsoleSettings() runs concurrent updates one after another", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "c.yaml");
  const names = ["a", "b", "c", "d", "e"];
  await Promise.all(names.map((name, i) =>
    updateConsoleSettings(path, {
      op: "addPfo",
      pfo: { name, proto: "tcp", listen: `${9000 + i}`, target: "h:1", enabled: true },
    })
  ));
  const { settings } = await loadConsoleSettings(path);
  assert.deepEqual(settings.pfos.map((p) => p.name).sort(), names);
});

Deno.test("updateConsoleSettings() does not overwrite an invalid file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "c.yaml");
  const broken = "# half-edited\npfos:\n  - name: web\n    listen: eighty\n    target: h:80\n";
  await Deno.writeTextFile(path, broken);
  await assert.rejects(
    () => updateConsoleSettings(path, { op: "addTrusted", fingerprint: FP_A }),
    (err: unknown) => err instanceof ConfigError && err.message.startsWith(`${path}:4:13: `),
  );
  assert.equal(await Deno.readTextFile(path), broken);
});

Deno.test("updateConsoleSettings() does not write a change that would be invalid", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "c.yaml");
  await Deno.writeTextFile(path, COMMENTED);
  await assert.rejects(
    () =>
      updateConsoleSettings(path, { op: "editPfo", name: "web", changes: { target: "nohost" } }),
    ConfigError,
  );
  assert.equal(await Deno.readTextFile(path), COMMENTED);
});

Deno.test("writeFileAtomic() replaces a file with mode 0600 and leaves no temporary file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "secret.json");
  await Deno.writeTextFile(path, "old", { mode: 0o644 });
  await writeFileAtomic(path, "new");
  assert.equal(await Deno.readTextFile(path), "new");
  if (!IS_WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  await writeFileAtomic(path, new Uint8Array([104, 105]), { mode: 0o640 });
  assert.equal(await Deno.readTextFile(path), "hi");
  if (!IS_WINDOWS) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
  const names = [];
  for await (const e of Deno.readDir(dir.path)) names.push(e.name);
  assert.deepEqual(names, ["secret.json"]);
  await assert.rejects(() => writeFileAtomic(join(dir.path, "no", "such"), "x"), /Cannot write/);
});

Deno.test("writeFileAtomic() removes temporary files a killed writer left over a minute ago, and keeps younger ones and others", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "console.yaml");
  const stale = `${path}.tmp-0123456789ab`;
  const young = `${path}.tmp-ba9876543210`;
  const other = join(dir.path, "notes.yaml.tmp-0123456789ab");
  for (const f of [stale, young, other]) await Deno.writeTextFile(f, "half");
  const old = new Date(Date.now() - 5 * 60_000);
  await Deno.utime(stale, old, old);
  await Deno.utime(other, old, old);
  await writeFileAtomic(path, "pfos: []\n");
  const names = [];
  for await (const e of Deno.readDir(dir.path)) names.push(e.name);
  assert.deepEqual(names.sort(), [
    "console.yaml",
    "console.yaml.tmp-ba9876543210",
    "notes.yaml.tmp-0123456789ab",
  ]);
});

Deno.test("readTokenFile() trims the token and refuses an empty or missing file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "token");
  await Deno.writeTextFile(path, "\n  t0ken \r\n");
  assert.equal(await readTokenFile(path), "t0ken");
  await Deno.writeTextFile(path, " \n");
  await assert.rejects(() => readTokenFile(path), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.ok(err.message.includes(`"${path}": it is empty`), err.message);
    return true;
  });
  await assert.rejects(() => readTokenFile(join(dir.path, "missing")), ConfigError);
});

/** Collects watcher callbacks; `next()` resolves with the next one. */
function recorder() {
  type Event = { kind: "change"; settings: ConsoleSettings; text: string } | {
    kind: "error";
    err: ConfigError;
  };
  const events: Event[] = [];
  const waiters: ((e: Event) => void)[] = [];
  const push = (e: Event) => {
    events.push(e);
    waiters.shift()?.(e);
  };
  let read = 0;
  return {
    events,
    onChange: (settings: ConsoleSettings, text: string) => push({ kind: "change", settings, text }),
    onError: (err: ConfigError) => push({ kind: "error", err }),
    next(): Promise<Event> {
      const index = read++;
      if (index < events.length) return Promise.resolve(events[index]);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/**
 * Writes `text` to portferry-console.yaml in `dir` and watches it, the way a
 * running Console knows its own text; disposing aborts the watcher and awaits it.
 */
async function watchedConsoleFile(dir: string, text: string) {
  const path = join(dir, "portferry-console.yaml");
  await Deno.writeTextFile(path, text);
  const rec = recorder();
  const ac = new AbortController();
  const done = watchSettings(path, {
    parse: parseConsoleSettings,
    onChange: rec.onChange,
    onError: rec.onError,
    signal: ac.signal,
    knownText: text,
  });
  return {
    path,
    rec,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await done;
    },
  };
}

async function externalAtomicWrite(path: string, text: string): Promise<void> {
  // As editors do: write a sibling file, then rename it over the original.
  const tmp = `${path}.editor-swap`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

Deno.test("watchSettings() reports an external atomic rename and an invalid file", async () => {
  await using dir = await tempDir();
  await using watched = await watchedConsoleFile(dir.path, "graceMs: 1\n");
  const { path, rec } = watched;
  await externalAtomicWrite(path, "graceMs: 2\n");
  const first = await within(rec.next(), 5000, "the change event");
  assert.equal(first.kind, "change");
  assert.equal(first.kind === "change" && first.settings.graceMs, 2);

  await externalAtomicWrite(path, "graceMs: two\n");
  const second = await within(rec.next(), 5000, "the error event");
  assert.equal(second.kind, "error");
  assert.ok(second.kind === "error" && second.err.message.startsWith(`${path}:1:10: `));

  // Writes to other files in the folder are not reported.
  await Deno.writeTextFile(join(dir.path, "other.yaml"), "graceMs: 3\n");
  await externalAtomicWrite(path, "graceMs: 4\n");
  const third = await within(rec.next(), 5000, "the third event");
  assert.equal(third.kind === "change" && third.settings.graceMs, 4);
  assert.equal(rec.events.length, 3);
});

Deno.test("watchSettings() skips the file's own updateConsoleSettings() writes", async () => {
  await using dir = await tempDir();
  await using watched = await watchedConsoleFile(dir.path, COMMENTED);
  const { path, rec } = watched;
  await updateConsoleSettings(path, { op: "removePfo", name: "db" });
  // Negative case: a bounded wait, well past the 100 ms debounce, for an event that must not come.
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(rec.events, [], "own write was reported");
  // An external change after it is still reported, and it is the first event.
  await externalAtomicWrite(path, "graceMs: 7\n");
  const first = await within(rec.next(), 5000, "the external change");
  assert.equal(first.kind === "change" && first.settings.graceMs, 7);
  assert.equal(rec.events.length, 1);
});

Deno.test("watchSettings() stops when the signal aborts", async () => {
  await using dir = await tempDir();
  const ac = new AbortController();
  const done = watchSettings(join(dir.path, "c.yaml"), {
    parse: parseConsoleSettings,
    onChange: () => assert.fail("no change expected"),
    onError: () => assert.fail("no error expected"),
    signal: ac.signal,
  });
  ac.abort();
  await within(done, 2000, "the watcher to stop");
  ac.abort();
  const aborted = watchSettings(join(dir.path, "c.yaml"), {
    parse: parseConsoleSettings,
    onChange: () => {},
    onError: () => {},
    signal: ac.signal,
  });
  await within(aborted, 2000, "an already aborted watcher");
});

Deno.test("watchSettings() rejects with ConfigError when the folder cannot be watched", async () => {
  await using dir = await tempDir();
  const ac = new AbortController();
  await assert.rejects(
    () =>
      watchSettings(join(dir.path, "missing", "c.yaml"), {
        parse: parseConsoleSettings,
        onChange: () => {},
        onError: () => {},
        signal: ac.signal,
      }),
    (err: unknown) => err instanceof ConfigError && err.message.includes("Cannot watch"),
  );
});

Deno.test("parseConsoleSettings() refuses two enabled PFOs of one socket kind on one address, naming the first", () => {
  const pfo = (name: string, listen: string, more = "") =>
    `  - name: ${name}\n    listen: "${listen}"\n${
      more.includes("socks") ? "" : "    target: h:53\n"
    }${more}`;
  const refused: [string, RegExp][] = [
    [
      pfo("a", "8080") + pfo("b", "8080"),
      /c\.yaml:5:\d+: Cannot use PFO "b": PFO "a" already listens on TCP 127\.0\.0\.1:8080.*\(line 2\)/,
    ],
    [pfo("a", "8000-8009") + pfo("b", "0.0.0.0:8009"), /PFO "b": PFO "a" already listens/],
    [pfo("a", "[::]:53") + pfo("b", "127.0.0.1:53"), /PFO "b": PFO "a" already listens/],
    [
      pfo("a", "1080", "    proto: socks\n") + pfo("b", "1080"),
      /PFO "a" already/,
    ],
    [pfo("a", "53", "    proto: udp\n") + pfo("b", "0.0.0.0:53", "    proto: udp\n"), /UDP/],
  ];
  for (const [list, why] of refused) {
    assert.throws(() => parseConsoleSettings(`pfos:\n${list}`, "c.yaml"), why, list);
  }
  const accepted = [
    pfo("a", "53") + pfo("b", "53", "    proto: udp\n"), // DNS: TCP and UDP on one port
    pfo("a", "8080") + pfo("b", "8080", "    enabled: false\n"), // a disabled PFO holds nothing
    pfo("a", "127.0.0.1:8080") + pfo("b", "127.0.0.2:8080"),
    pfo("a", "0") + pfo("b", "0"), // any free port
    pfo("a", "8000-8009") + pfo("b", "8010-8019"),
  ];
  for (const list of accepted) {
    assert.equal(parseConsoleSettings(`pfos:\n${list}`, "c.yaml").pfos.length, 2, list);
  }
});

Deno.test("findListenClashes() finds the one clash among 10,000 PFOs", () => {
  const lines = ["pfos:"];
  for (let i = 0; i < 10_000; i++) {
    lines.push(`  - name: p${i}`, `    listen: ${20_000 + i}`, `    target: h:${1 + i}`);
  }
  const settings = parseConsoleSettings(lines.join("\n") + "\n", "c.yaml");
  assert.equal(settings.pfos.length, 10_000);
  const t0 = performance.now();
  assert.equal(findListenClashes(settings.pfos), undefined);
  const ms = performance.now() - t0;
  const late = resolvePfo({
    name: "late",
    proto: "tcp",
    listen: "0.0.0.0:29990-29999",
    target: "h:1",
    enabled: true,
  });
  const pair = findListenClashes([...settings.pfos, late]);
  assert.deepEqual(pair?.map((p) => p.name), ["p9990", "late"], `took ${ms} ms`);
});
