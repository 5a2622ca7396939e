import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { ConfigError } from "../core/errors.ts";
import { findListenClashes, resolvePfo } from "./pfo.ts";
import {
  _parseFull,
  _parsePlain,
  DEFAULT_CONSOLE_SETTINGS,
  DEFAULT_DAEMON_SETTINGS,
  loadConsoleSettings,
  loadDaemonSettings,
  parseConsoleSettings,
  parseDaemonSettings,
} from "./schema.ts";

const FIXTURES = fileURLToPath(new URL("../../tests/testdata/settings/", import.meta.url));
const FP_A = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
const FP_B = "SHA256:PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0";

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

Deno.test("parseDaemonSettings() reads proxy and proxyAuthFile, and proxy: none", async () => {
  const path = join(FIXTURES, "valid", "daemon-proxy.yaml");
  const s = parseDaemonSettings(await Deno.readTextFile(path), path);
  assert.deepEqual(s.proxy, {
    host: "proxy.corp.example",
    port: 3128,
    username: null,
    password: null,
  });
  assert.equal(s.proxyAuthFile, join(FIXTURES, "valid", "proxy-auth"));
  const none = join(FIXTURES, "valid", "daemon-proxy-none.yaml");
  assert.equal(parseDaemonSettings(await Deno.readTextFile(none), none).proxy, "none");
  assert.equal(DEFAULT_DAEMON_SETTINGS.proxy, null);
  assert.throws(
    () => parseDaemonSettings("proxy: http://ann:topsecret@h:3128/x\n", "d.yaml"),
    (err: Error) => /no path/.test(err.message) && !err.message.includes("topsecret"),
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

// The plain-list reader (_plain.ts) must read exactly what the YAML library reads.

/** Every way a plain list may be written, each read by the line reader. */
const PLAIN_TEXTS = [
  `pfos:\n  - name: web\n    listen: "127.0.0.1:8080"\n    target: "10.0.0.5:80"\n`,
  // Keys before and after, comments and blank lines anywhere, quoting styles, every key.
  [
    "# head",
    "session: 7471",
    "autoAccept: true",
    "pfos:",
    "",
    "    # first",
    "    - name: a.b-c_1",
    "      proto: udp",
    "      listen: 5353  # a port",
    "# column 0 inside the list",
    "      target: 'dns.example:53'",
    "      enabled: false",
    "",
    "    - name: 'q'",
    "      proto: socks",
    "      listen: '[::1]:1080'",
    "    - proto: tcp",
    "      target: localhost:22",
    '      listen: "0.0.0.0:2200-2202"',
    "      name: r",
    "      enabled: True",
    "    # trailing",
    "graceMs: 10",
    "logLevel: debug",
    "",
  ].join("\n"),
  `pfos:\n - name: t\n   listen: 9\n   target: h:9\n   enabled: FALSE\n`,
  `pfos: \n  - name: x\n    listen: "1"\n    target: "h:1" # why\n  - name: y\n    listen: 2\n    target: h:2\n`,
];

/** Lists the line reader leaves to the YAML library, valid and not. */
const NOT_PLAIN_TEXTS = [
  `pfos:\n  - name: c\n    listen: 1\n    target: h:1\n    clients: ["10.0.0.0/8"]\n`,
  `pfos:\n  - name: c\n    listen: 1\n    target: h:1\n    clients:\n      - 10.0.0.0/8\n`,
  `pfos:\n  - {name: f, listen: 1, target: "h:1"}\n`,
  `pfos:\n- name: z\n  listen: 1\n  target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: h:1`,
  `pfos:\r\n  - name: z\r\n    listen: 1\r\n    target: h:1\r\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: "h:\\x31"\n`,
  `pfos:\n  - name: z\n    listen: 1\n\ttarget: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    enabled: yes\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    enabled: "true"\n    target: h:1\n`,
  `pfos:\n  - name: null\n    listen: 1\n    target: h:1\n`,
  `pfos:\n  - name: 123\n    listen: 1\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: h:1\n  - name: z\n    listen: 2\n    target: h:1\n`,
  `pfos:\n  - name: y\n    listen: 1\n    target: h:1\n  - name: z\n    listen: 1\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    listen: 2\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    colour: blue\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: "99999"\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n   target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: h:1\n   - name: y\n     listen: 2\n     target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target:\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: ~\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: h:1\n    - x: y\n`,
  `trusted: &t []\npfos:\n  - name: z\n    listen: 1\n    target: h:1\n`,
  `colour: blue\npfos:\n  - name: z\n    listen: 1\n    target: h:1\n`,
  `pfos:\n  - name: z\n    listen: 1\n    target: h:1\npfos:\n  - name: y\n    listen: 2\n    target: h:1\n`,
  `tokenFile: "a\npfos:\n  - name: z\n    listen: 1\n    target: h:1\n  b"\n`,
  `pfos:\n  # nothing yet\nsession: 7471\n`,
];

Deno.test("_parsePlain() reads a plain pfos list exactly as the YAML library reads the file", () => {
  for (const text of PLAIN_TEXTS) {
    const plain = _parsePlain(text, "/etc/pf/c.yaml");
    assert.ok(plain !== null, `not read as plain:\n${text}`);
    const full = _parseFull(text, "/etc/pf/c.yaml");
    assert.deepEqual(plain.settings, full.settings, text);
    assert.deepEqual(plain.layout, full.layout, text);
    assert.ok(plain.settings.pfos.length > 0 && Object.isFrozen(plain.settings.pfos));
  }
});

Deno.test("_parsePlain() leaves every other list to the YAML library, which gives the same result or error", () => {
  for (const text of NOT_PLAIN_TEXTS) {
    assert.deepEqual(_parsePlain(text, "/etc/pf/c.yaml"), null, `read as plain:\n${text}`);
    let full: unknown;
    try {
      full = _parseFull(text, "/etc/pf/c.yaml").settings;
    } catch (err) {
      full = (err as Error).message;
    }
    let viaConsole: unknown;
    try {
      viaConsole = parseConsoleSettings(text, "/etc/pf/c.yaml");
    } catch (err) {
      viaConsole = (err as Error).message;
    }
    assert.deepEqual(viaConsole, full, text);
  }
});

Deno.test("_parsePlain() reads every valid Console fixture as the YAML library does, or leaves it", async () => {
  for (const [path, text] of await readFixtures("valid")) {
    if (!path.split("/").pop()!.startsWith("console-")) continue;
    const plain = _parsePlain(text, path);
    if (plain === null) continue;
    const full = _parseFull(text, path);
    assert.deepEqual(plain.settings, full.settings, path);
    assert.deepEqual(plain.layout, full.layout, path);
  }
});

Deno.test("parseConsoleSettings() reads 10,000 plain PFOs by lines, the same as the YAML library", () => {
  const lines = ["pfos:"];
  for (let i = 0; i < 10_000; i++) {
    lines.push(`  - name: p${i}`, `    listen: "127.0.0.1:${20_000 + i}"`, `    target: "h:9"`);
  }
  const text = lines.join("\n") + "\n";
  const plain = _parsePlain(text, "/x/c.yaml");
  assert.ok(plain !== null);
  assert.deepEqual(plain, _parseFull(text, "/x/c.yaml"));
  assert.deepEqual(parseConsoleSettings(text, "/x/c2.yaml"), plain.settings);
});

Deno.test("parseConsoleSettings() reads websocketPath and trustedProxies, with /portferry and none by default", () => {
  const d = parseConsoleSettings("", "/etc/pf.yaml");
  assert.equal(d.websocketPath, "/portferry");
  assert.deepEqual(d.trustedProxies, []);
  const off = parseConsoleSettings("websocketPath: null\n", "/etc/pf.yaml");
  assert.equal(off.websocketPath, null);
  const s = parseConsoleSettings(
    'websocketPath: "/tunnel/pf"\ntrustedProxies: ["127.0.0.1", "10.0.0.0/8"]\n',
    "/etc/pf.yaml",
  );
  assert.equal(s.websocketPath, "/tunnel/pf");
  assert.deepEqual(s.trustedProxies, ["127.0.0.1", "10.0.0.0/8"]);
  assert.throws(
    () => parseConsoleSettings('websocketPath: "portferry"\n', "/etc/pf.yaml"),
    /^ConfigError: \/etc\/pf\.yaml:1:\d+: Cannot use "websocketPath": "portferry" is not a URL path/,
  );
  assert.throws(
    () => parseConsoleSettings('trustedProxies: ["10.0.0.0/33"]\n', "/etc/pf.yaml"),
    /Cannot use trusted proxy "10\.0\.0\.0\/33"/,
  );
});

Deno.test("parseDaemonSettings() reads a ws:// or wss:// console address as a WebSocket URL", () => {
  const s = parseDaemonSettings('console: "wss://console.example.com/portferry"\n', "/etc/d.yaml");
  assert.ok(s.console && "text" in s.console);
  assert.equal(s.console.text, "wss://console.example.com:443/portferry");
  assert.equal(s.console.port, 443);
  const plain = parseDaemonSettings('console: "office:7470"\n', "/etc/d.yaml");
  assert.ok(plain.console && !("text" in plain.console));
});

Deno.test("streamWindowMax defaults to 16 MiB in both programs and is refused outside 512 KiB to 1 GiB", () => {
  assert.equal(parseConsoleSettings("", "c.yaml").streamWindowMax, 16 * 1024 * 1024);
  assert.equal(parseDaemonSettings("", "d.yaml").streamWindowMax, 16 * 1024 * 1024);
  assert.equal(
    parseDaemonSettings("streamWindowMax: 4194304\n", "d.yaml").streamWindowMax,
    4194304,
  );
  assert.throws(
    () => parseConsoleSettings("streamWindowMax: 1000\n", "c.yaml"),
    /streamWindowMax.*1000 is out of range; use 524288 to 1073741824/,
  );
  assert.throws(
    () => parseDaemonSettings("streamWindowMax: 2147483647\n", "d.yaml"),
    /streamWindowMax.*2147483647 is out of range; use 524288 to 1073741824/,
  );
});

Deno.test("parseDaemonSettings() reads ca, a PEM file resolved against the settings file's folder", () => {
  assert.equal(DEFAULT_DAEMON_SETTINGS.ca, null);
  assert.equal(parseDaemonSettings("ca: web-ca.pem\n", "/etc/pf/d.yaml").ca, "/etc/pf/web-ca.pem");
  assert.equal(parseDaemonSettings("ca: /opt/ca.pem\n", "/etc/pf/d.yaml").ca, "/opt/ca.pem");
  assert.equal(parseDaemonSettings("ca: null\n", "/etc/pf/d.yaml").ca, null);
  assert.throws(() => parseDaemonSettings("ca: 5\n", "d.yaml"), /ca/);
});
