import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../core/errors.ts";
import { writeFileAtomic } from "../core/io.ts";
import { applyConsoleEdits, updateConsoleSettings } from "./edit.ts";
import { loadConsoleSettings, parseConsoleSettings } from "./schema.ts";

const FP_A = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
const FP_B = "SHA256:PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0";
const IS_WINDOWS = Deno.build.os === "windows";

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "portferry-settings-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

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
