// deno-lint-ignore-file no-console -- a test runner: its output is the report
/**
 * End to end behind a real firewall, with real clients.
 *
 * Builds three hosts in Linux network namespaces joined by veth pairs:
 *
 * ```text
 *  office 198.18.0.1 ──── 198.18.0.2 home 198.18.1.1 ──── 198.18.1.2 lan
 *  Console                Daemon, sshd                     HTTP, Redis, DNS
 *                         (iptables: no inbound)
 * ```
 *
 * The office has no route to the LAN, and home drops every inbound
 * connection, so the only way in is the session the Daemon dials out.
 * Through PFOs on the office side, real clients (curl, ssh, redis-benchmark,
 * dig, curl through SOCKS5) reach the LAN and home. Then the home uplink is
 * cut for 20 s; the session must recover by itself and the same clients
 * must work again.
 *
 * Run as root on Linux: `deno task e2e:netns`. Prints one line per check and
 * ends with `N passed, N failed`. `PF_TEST_VERBOSE=1` echoes every line the
 * Console, the Daemon and the servers print.
 *
 * @module
 */

import { Output, taskFlags } from "../_harness.ts";
import { PROXY_PACKAGES, PROXY_TOOLS, proxyScenarios } from "./proxy.ts";
import {
  prepareWebSocketConsole,
  WEBSOCKET_PACKAGES,
  WEBSOCKET_TOOLS,
  websocketChecks,
  type WebSocketKit,
} from "./websocket.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname);
const decoder = new TextDecoder();

/** The Debian packages that bring the tools below (see `.ci/run`). */
const PACKAGES =
  `iproute2 iptables openssh-server openssh-client redis-server redis-tools dnsmasq-base dnsutils curl python3 ${PROXY_PACKAGES} ${WEBSOCKET_PACKAGES}`;
const TOOLS = [
  "ip",
  "iptables",
  "ip6tables",
  "ssh",
  "ssh-keygen",
  "redis-server",
  "redis-benchmark",
  "redis-cli",
  "dnsmasq",
  "dig",
  "curl",
  "python3",
  "sha256sum",
  "getent",
  ...PROXY_TOOLS,
  ...WEBSOCKET_TOOLS,
];

/** Namespace names: `pfns<pid>-office` etc., so leftovers of a dead run can be told apart. */
const NS_PREFIX = "pfns";
const RUN = `${NS_PREFIX}${Deno.pid}`;
const NS = { office: `${RUN}-office`, home: `${RUN}-home`, lan: `${RUN}-lan` } as const;
const ADDR = {
  office: "198.18.0.1", // office ↔ home link, 198.18.0.0/30
  homeUp: "198.18.0.2",
  homeLan: "198.18.1.1", // home ↔ lan link, 198.18.1.0/30
  lan: "198.18.1.2",
} as const;
const SESSION_PORT = 7470;
/** Only home's hosts file knows this name. */
const HOME_ONLY_NAME = "intranet.home.test";
const DNS_NAME = "printer.lan.test";
const DNS_ADDRESS = "198.18.1.77";
/** PFOs on the office side (fixed ports are safe: the namespace is new and ours). */
const PFO = {
  web: { listen: 8000, target: `${ADDR.lan}:8000` },
  ssh: { listen: 2222, target: "127.0.0.1:2222" },
  redis: { listen: 6379, target: `${ADDR.lan}:6379` },
  dns: { listen: 5353, target: `${ADDR.lan}:53` },
  socks: { listen: 1080 },
} as const;
/** Temp folders: `<TEMP_ROOT>/portferry-firewall-suite-<pid>-…` (not "pf-…", which other suites use). */
const TEMP_ROOT = Deno.env.get("TMPDIR") || "/tmp";
const TEMP_PREFIX = "portferry-firewall-suite-";
const BIG_FILE_BYTES = 100 * 1024 * 1024;
const OUTAGE_MS = 20_000;
/** The issue's promise: a peer whose network is cut is noticed within 15 s. */
const DEAD_PEER_NOTICED_MS = 15_000;

// --- processes ----------------------------------------------------------------

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

interface RunOptions {
  /** Run inside this namespace. */
  readonly ns?: string;
  /** Kill it after this long (every command is bounded). */
  readonly timeoutMs?: number;
  readonly cwd?: string;
}

/** Run a command to completion, bounded in time. */
async function run(cmd: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const argv = options.ns ? ["ip", "netns", "exec", options.ns, ...cmd] : [...cmd];
  const started = performance.now();
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: options.cwd ?? ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
  }).output();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** Run a command that must succeed; returns its stdout. */
async function must(cmd: readonly string[], options: RunOptions = {}): Promise<string> {
  const r = await run(cmd, options);
  if (r.code !== 0) {
    throw new Error(`Cannot run "${cmd.join(" ")}" (exit ${r.code}): ${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** A long-running process in a namespace, its output collected line by line. */
class Service {
  readonly name: string;
  readonly out = new Output();
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  /** Set once the process has exited and been reaped. */
  exited = false;

  constructor(name: string, ns: string, cmd: readonly string[], cwd = ROOT) {
    this.name = name;
    this.child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...cmd],
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const pumps = Promise.all([this.out.pump(this.child.stdout), this.out.pump(this.child.stderr)]);
    this.status = this.child.status.then(async (s) => {
      this.exited = true;
      await pumps;
      return s;
    });
  }

  /** Wait for a line, failing early if the process exits first. */
  async waitFor(re: RegExp, options: { from?: number; ms?: number } = {}) {
    const exited = this.status.then((s) => {
      throw new Error(
        `${this.name} exited (code ${s.code}) before printing ${re}:\n${this.tail()}`,
      );
    });
    return await Promise.race([this.out.waitFor(re, options), exited]);
  }

  tail(n = 25): string {
    return this.out.lines.slice(-n).map((l) => `    ${this.name}| ${l}`).join("\n");
  }

  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 8_000): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      return; // Exited already.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), graceMs)));
    if (await Promise.race([this.status, late]) === "late") {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
      await this.status;
    }
    clearTimeout(timer);
  }
}

// --- topology -----------------------------------------------------------------

async function namespaces(): Promise<string[]> {
  const r = await run(["ip", "netns", "list"]);
  return r.stdout.split("\n").map((l) => l.split(" ")[0]).filter((n) => n !== "");
}

/** Kill what runs in a namespace of ours (all started by this suite), then delete it. */
async function removeNamespace(ns: string): Promise<void> {
  const pids = await run(["ip", "netns", "pids", ns]);
  for (const pid of pids.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
    try {
      Deno.kill(Number(pid), "SIGKILL");
    } catch {
      // Gone already.
    }
  }
  await run(["ip", "netns", "delete", ns]);
  await Deno.remove(`/etc/netns/${ns}`, { recursive: true }).catch(() => {});
}

/** Whether process `pid` is a run of this suite. */
async function isSuiteRunning(pid: number): Promise<boolean> {
  // Deno reads /proc only under --allow-all: ask cat.
  const cmdline = await run(["cat", `/proc/${pid}/cmdline`]);
  return cmdline.code === 0 && cmdline.stdout.includes("netns/firewall");
}

/** Remove the namespaces of earlier runs whose runner is gone (crashed or killed). */
async function removeLeftovers(): Promise<string[]> {
  const removed: string[] = [];
  const names = new Set(await namespaces());
  try {
    for await (const e of Deno.readDir("/etc/netns")) names.add(e.name);
  } catch {
    // No /etc/netns.
  }
  for (const ns of names) {
    const m = ns.match(new RegExp(`^${NS_PREFIX}(\\d+)-(office|home|lan)$`));
    if (!m || Number(m[1]) === Deno.pid) continue;
    if (await isSuiteRunning(Number(m[1]))) continue;
    await removeNamespace(ns);
    removed.push(ns);
  }
  // And their temp folders (a 100 MB file each).
  for await (const e of Deno.readDir(TEMP_ROOT)) {
    const m = e.name.match(new RegExp(`^${TEMP_PREFIX}(\\d+)-`));
    if (!m || Number(m[1]) === Deno.pid || await isSuiteRunning(Number(m[1]))) continue;
    await Deno.remove(`${TEMP_ROOT}/${e.name}`, { recursive: true }).catch(() => {});
    removed.push(`${TEMP_ROOT}/${e.name}`);
  }
  return removed;
}

async function buildTopology(): Promise<void> {
  for (const ns of Object.values(NS)) {
    await must(["ip", "netns", "add", ns]);
    await must(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  // The veth ends are created straight inside their namespaces: no names in the host's.
  await must([
    "ip",
    "-n",
    NS.office,
    "link",
    "add",
    "to-home",
    "type",
    "veth",
    "peer",
    "name",
    "to-office",
    "netns",
    NS.home,
  ]);
  await must([
    "ip",
    "-n",
    NS.home,
    "link",
    "add",
    "to-lan",
    "type",
    "veth",
    "peer",
    "name",
    "to-home",
    "netns",
    NS.lan,
  ]);
  const links: [string, string, string][] = [
    [NS.office, "to-home", ADDR.office],
    [NS.home, "to-office", ADDR.homeUp],
    [NS.home, "to-lan", ADDR.homeLan],
    [NS.lan, "to-home", ADDR.lan],
  ];
  for (const [ns, dev, addr] of links) {
    await must(["ip", "-n", ns, "addr", "add", `${addr}/30`, "dev", dev]);
    await must(["ip", "-n", ns, "link", "set", dev, "up"]);
  }
  // Home is behind a firewall: nothing comes in but replies (and loopback).
  for (const tool of ["iptables", "ip6tables"]) {
    await must([tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"], { ns: NS.home });
    await must([
      tool,
      "-A",
      "INPUT",
      "-m",
      "conntrack",
      "--ctstate",
      "ESTABLISHED,RELATED",
      "-j",
      "ACCEPT",
    ], { ns: NS.home });
    await must([tool, "-P", "INPUT", "DROP"], { ns: NS.home });
    await must([tool, "-P", "FORWARD", "DROP"], { ns: NS.home });
  }
  // Home's own resolver knows a name no one else does (`ip netns exec` bind-mounts this
  // file over /etc/hosts for every process it starts in home).
  await Deno.mkdir(`/etc/netns/${NS.home}`, { recursive: true });
  await Deno.writeTextFile(
    `/etc/netns/${NS.home}/hosts`,
    `127.0.0.1 localhost\n::1 localhost\n${ADDR.lan} ${HOME_ONLY_NAME}\n`,
  );
}

// --- checks -------------------------------------------------------------------

const results: { name: string; ok: boolean }[] = [];

/** Run one check: prints `ok NAME (ms)` or `FAILED NAME` with the reason. */
async function check(name: string, fn: () => Promise<string | void>): Promise<boolean> {
  const started = performance.now();
  try {
    const note = await fn();
    const ms = Math.round(performance.now() - started);
    console.log(`ok       ${name} (${ms} ms)${note ? ` — ${note}` : ""}`);
    results.push({ name, ok: true });
    return true;
  } catch (err) {
    const ms = Math.round(performance.now() - started);
    console.log(`FAILED   ${name} (${ms} ms)`);
    let text = err instanceof Error ? err.message : String(err);
    if (text.length > 3000) text = `${text.slice(0, 1000)}\n…\n${text.slice(-2000)}`;
    console.log(`    ${text.replaceAll("\r", "\n").replaceAll("\n", "\n    ")}`);
    results.push({ name, ok: false });
    return false;
  }
}

function assert(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Error(message);
}

// --- the suite ----------------------------------------------------------------

interface Context {
  readonly dir: string;
  readonly services: Service[];
  console?: Service;
  daemon?: Service;
  consoleSettings: string;
  daemonSettings: string;
  bigSha256: string;
  helloText: string;
  sshUser: string;
  fingerprint?: string;
  daemonFingerprint?: string;
}

async function consoleCli(ctx: Context, ...args: string[]): Promise<RunResult> {
  return await run(
    [
      Deno.execPath(),
      "run",
      ...await taskFlags("console"),
      "console.ts",
      "--config",
      ctx.consoleSettings,
      ...args,
    ],
    { ns: NS.office, timeoutMs: 30_000 },
  );
}

async function consoleStatus(ctx: Context) {
  const r = await consoleCli(ctx, "status", "--json");
  assert(r.code === 0, `status --json failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as {
    session: { state: string; peer: { fingerprint: string } | null };
    pfos: { name: string; state: string; error: string | null; listeners: number }[];
  };
}

async function sha256(path: string): Promise<string> {
  return (await must(["sha256sum", path], { timeoutMs: 60_000 })).split(" ")[0];
}

async function startServers(ctx: Context): Promise<void> {
  const { dir } = ctx;
  // HTTP on the LAN: a 100 MB file of random bytes and a small page.
  await Deno.mkdir(`${dir}/www`);
  const big = await Deno.open(`${dir}/www/big.bin`, { write: true, create: true });
  const chunk = new Uint8Array(65536); // getRandomValues' limit
  for (let i = 0; i < BIG_FILE_BYTES / chunk.length; i++) {
    crypto.getRandomValues(chunk);
    for (let off = 0; off < chunk.length;) off += await big.write(chunk.subarray(off));
  }
  big.close();
  ctx.bigSha256 = await sha256(`${dir}/www/big.bin`);
  ctx.helloText = `hello from the LAN ${crypto.randomUUID()}\n`;
  await Deno.writeTextFile(`${dir}/www/hello.txt`, ctx.helloText);
  const http = new Service("http", NS.lan, [
    "python3",
    "-u",
    "-m",
    "http.server",
    "8000",
    "--bind",
    ADDR.lan,
    "--directory",
    `${dir}/www`,
  ]);
  ctx.services.push(http);

  // Redis on the LAN.
  await Deno.mkdir(`${dir}/redis`);
  const redis = new Service("redis", NS.lan, [
    "redis-server",
    "--port",
    "6379",
    "--bind",
    ADDR.lan,
    "--save",
    "",
    "--appendonly",
    "no",
    "--protected-mode",
    "no",
    "--dir",
    `${dir}/redis`,
  ]);
  ctx.services.push(redis);

  // DNS on the LAN: dnsmasq answering for a test zone only.
  const dns = new Service("dnsmasq", NS.lan, [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--bind-interfaces",
    `--listen-address=${ADDR.lan}`,
    "--port=53",
    "--user=root",
    "--pid-file",
    "--log-facility=-",
    "--log-queries",
    "--local=/lan.test/",
    `--host-record=${DNS_NAME},${DNS_ADDRESS}`,
    `--txt-record=${DNS_NAME},portferry netns suite`,
  ]);
  ctx.services.push(dns);

  // OpenSSH on home, with throwaway keys; it listens on every address, and the
  // firewall keeps the office out.
  const ssh = `${dir}/ssh`;
  await Deno.mkdir(ssh, { mode: 0o700 });
  await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${ssh}/host_key`]);
  await must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${ssh}/client_key`]);
  await Deno.copyFile(`${ssh}/client_key.pub`, `${ssh}/authorized_keys`);
  const hostPub = (await Deno.readTextFile(`${ssh}/host_key.pub`)).trim().split(" ");
  await Deno.writeTextFile(`${ssh}/known_hosts`, `portferry-home ${hostPub[0]} ${hostPub[1]}\n`);
  ctx.sshUser = (await must(["id", "-un"])).trim();
  await Deno.writeTextFile(
    `${ssh}/sshd_config`,
    [
      "Port 2222",
      "ListenAddress 0.0.0.0",
      `HostKey ${ssh}/host_key`,
      `AuthorizedKeysFile ${ssh}/authorized_keys`,
      "PidFile none",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "StrictModes no",
      "UsePAM no",
      `AllowUsers ${ctx.sshUser}`,
      "",
    ].join("\n"),
  );
  await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege separation dir
  const sshd = new Service("sshd", NS.home, [sshdPath(), "-D", "-e", "-f", `${ssh}/sshd_config`]);
  ctx.services.push(sshd);

  await http.waitFor(/Serving HTTP on/);
  await redis.waitFor(/Ready to accept connections/);
  await dns.waitFor(/started, version/);
  await sshd.waitFor(/Server listening on 0\.0\.0\.0 port 2222/);
}

function sshdPath(): string {
  for (const p of ["/usr/sbin/sshd", "/usr/bin/sshd"]) {
    try {
      Deno.statSync(p);
      return p;
    } catch {
      // Try the next.
    }
  }
  return "/usr/sbin/sshd";
}

async function startSession(ctx: Context): Promise<string> {
  await Deno.mkdir(`${ctx.dir}/console`);
  await Deno.mkdir(`${ctx.dir}/daemon`);
  await prepareWebSocketConsole(ctx.consoleSettings);
  const deno = Deno.execPath();
  const consoleProc = new Service("console", NS.office, [
    deno,
    "run",
    ...await taskFlags("console"),
    "console.ts",
    "--config",
    ctx.consoleSettings,
    "--session",
    `0.0.0.0:${SESSION_PORT}`,
    "--headless",
  ]);
  ctx.console = consoleProc;
  ctx.services.push(consoleProc);
  const [, fingerprint] = await consoleProc.waitFor(/fingerprint: (SHA256:\S+)/, { ms: 30_000 });
  await consoleProc.waitFor(/Console listening for Daemons on 0\.0\.0\.0:7470/);
  ctx.fingerprint = fingerprint;

  const daemon = new Service("daemon", NS.home, [
    deno,
    "run",
    ...await taskFlags("daemon"),
    "daemon.ts",
    `${ADDR.office}:${SESSION_PORT}`,
    "--fingerprint",
    fingerprint,
    "--config",
    ctx.daemonSettings,
    "--headless",
  ]);
  ctx.daemon = daemon;
  ctx.services.push(daemon);
  // No auto-accept: the operator accepts once; the reconnect later must need no one.
  const asked = consoleProc.out.mark;
  await consoleProc.waitFor(/asks for a session/, { from: asked, ms: 30_000 });
  const askedAt = consoleProc.out.lines.findIndex((l, i) =>
    i >= asked && /asks for a session/.test(l)
  );
  const [, daemonFingerprint] = await consoleProc.waitFor(/fingerprint: (SHA256:\S+)/, {
    from: askedAt + 1,
  });
  ctx.daemonFingerprint = daemonFingerprint;
  await daemon.waitFor(/Waiting for the Console operator to accept/);
  const accepted = await consoleCli(ctx, "session", "accept");
  assert(accepted.code === 0, `session accept failed (${accepted.code}): ${accepted.stderr}`);
  await consoleProc.waitFor(/Session established with .* \(operator\)/);
  await daemon.waitFor(/Session established/);

  for (
    const args of [
      ["web", "--listen", String(PFO.web.listen), "--target", PFO.web.target],
      ["ssh", "--listen", String(PFO.ssh.listen), "--target", PFO.ssh.target],
      ["redis", "--listen", String(PFO.redis.listen), "--target", PFO.redis.target],
      ["dns", "--udp", "--listen", String(PFO.dns.listen), "--target", PFO.dns.target],
      ["proxy", "--socks", "--listen", String(PFO.socks.listen)],
    ]
  ) {
    const r = await consoleCli(ctx, "pfo", "add", ...args);
    assert(r.code === 0, `pfo add ${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
  }
  const status = await consoleStatus(ctx);
  const notListening = status.pfos.filter((p) => p.state !== "listening");
  assert(
    status.pfos.length === 5 && notListening.length === 0,
    `PFOs not all listening: ${JSON.stringify(status.pfos)}`,
  );
  return `Daemon ${daemonFingerprint} accepted by the operator; 5 PFOs listening`;
}

/** The firewall holds: the only way from the office in is the Daemon's session. */
async function checkFirewall(ctx: Context): Promise<string> {
  const direct = await run(
    ["curl", "-sS", "-o", "/dev/null", "--connect-timeout", "2", `http://${ADDR.lan}:8000/`],
    { ns: NS.office },
  );
  assert(
    direct.code === 7,
    `office → LAN should have no route (curl exit 7), got ${direct.code}: ${direct.stderr}`,
  );
  const ssh = await run(
    ["curl", "-sS", "-o", "/dev/null", "--connect-timeout", "2", `telnet://${ADDR.homeUp}:2222`],
    { ns: NS.office },
  );
  assert(
    ssh.code === 28,
    `office → home:2222 should be dropped (curl timeout, exit 28), got ${ssh.code}: ${ssh.stderr}`,
  );
  const fromHome = await run(
    ["curl", "-sS", "--fail", "-m", "10", `http://${ADDR.lan}:8000/hello.txt`],
    { ns: NS.home },
  );
  assert(
    fromHome.code === 0 && fromHome.stdout === ctx.helloText,
    `home → LAN failed: ${fromHome.stderr}`,
  );
  const officeName = await run(["getent", "hosts", HOME_ONLY_NAME], {
    ns: NS.office,
    timeoutMs: 15_000,
  });
  assert(officeName.code !== 0, `the office resolves ${HOME_ONLY_NAME}: ${officeName.stdout}`);
  const homeName = await run(["getent", "hosts", HOME_ONLY_NAME], {
    ns: NS.home,
    timeoutMs: 15_000,
  });
  assert(
    homeName.stdout.startsWith(ADDR.lan),
    `home does not resolve ${HOME_ONLY_NAME}: ${homeName.stdout}${homeName.stderr}`,
  );
  return "office→LAN: no route; office→home:2222: dropped; home→LAN: ok; the name resolves at home only";
}

async function checkCurl(ctx: Context, round: number): Promise<string> {
  const file = `${ctx.dir}/download-${round}.bin`;
  const r = await run([
    "curl",
    "-sS",
    "--fail",
    "-m",
    "180",
    "-o",
    file,
    "-w",
    "%{size_download} %{speed_download}",
    `http://127.0.0.1:${PFO.web.listen}/big.bin`,
  ], { ns: NS.office, timeoutMs: 200_000 });
  assert(r.code === 0, `curl exit ${r.code}: ${r.stderr}`);
  const [size, speed] = r.stdout.trim().split(" ").map(Number);
  assert(size === BIG_FILE_BYTES, `downloaded ${size} bytes, expected ${BIG_FILE_BYTES}`);
  const got = await sha256(file);
  await Deno.remove(file);
  assert(got === ctx.bigSha256, `SHA-256 ${got} ≠ ${ctx.bigSha256}`);
  return `100 MiB, SHA-256 equal, ${(speed / 1024 / 1024).toFixed(1)} MiB/s`;
}

async function checkSsh(ctx: Context): Promise<string> {
  const ssh = `${ctx.dir}/ssh`;
  const r = await run([
    "ssh",
    "-F",
    "none",
    "-p",
    String(PFO.ssh.listen),
    "-i",
    `${ssh}/client_key`,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${ssh}/known_hosts`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "HostKeyAlias=portferry-home",
    "-o",
    "ConnectTimeout=15",
    `${ctx.sshUser}@127.0.0.1`,
    "ip netns identify; echo ran-on-home",
  ], { ns: NS.office, timeoutMs: 40_000 });
  assert(r.code === 0, `ssh exit ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  assert(
    lines[0] === NS.home && lines[1] === "ran-on-home",
    `ssh ran, but not in ${NS.home}: ${JSON.stringify(r.stdout)}`,
  );
  return `the command ran in ${NS.home} (host key pinned)`;
}

async function redisCommands(): Promise<number> {
  const info = await must(["redis-cli", "-h", ADDR.lan, "-p", "6379", "info", "stats"], {
    ns: NS.lan,
  });
  const m = info.match(/total_commands_processed:(\d+)/);
  assert(m, `no total_commands_processed in: ${info}`);
  return Number(m[1]);
}

async function checkRedis(): Promise<string> {
  const n = 2000;
  const tests = ["PING_INLINE", "SET", "GET", "INCR", "LPUSH"];
  const before = await redisCommands();
  const r = await run([
    "redis-benchmark",
    "-h",
    "127.0.0.1",
    "-p",
    String(PFO.redis.listen),
    "-n",
    String(n),
    "-c",
    "8",
    "-t",
    "ping,set,get,incr,lpush",
    "-q",
  ], { ns: NS.office, timeoutMs: 60_000 });
  assert(r.code === 0, `redis-benchmark exit ${r.code}: ${r.stderr}${r.stdout}`);
  const summary: string[] = [];
  for (const t of tests) {
    const m = r.stdout.match(new RegExp(`^${t}: ([\\d.]+) requests per second`, "m"));
    assert(m, `no "${t}: ... requests per second" in:\n${r.stdout}`);
    summary.push(`${t} ${Math.round(Number(m[1]))}/s`);
  }
  const after = await redisCommands();
  assert(
    after - before >= n * tests.length,
    `the LAN's Redis saw ${after - before} commands, expected ≥ ${n * tests.length}`,
  );
  return summary.join(", ");
}

async function checkDig(ctx: Context): Promise<string> {
  const from = ctx.services.find((s) => s.name === "dnsmasq")!.out.mark;
  const dig = (type: string) =>
    run([
      "dig",
      "@127.0.0.1",
      "-p",
      String(PFO.dns.listen),
      "+time=3",
      "+tries=2",
      "+short",
      DNS_NAME,
      type,
    ], { ns: NS.office, timeoutMs: 20_000 });
  const a = await dig("A");
  assert(
    a.code === 0 && a.stdout.trim() === DNS_ADDRESS,
    `dig A: exit ${a.code}: ${a.stdout}${a.stderr}`,
  );
  const txt = await dig("TXT");
  assert(
    txt.code === 0 && txt.stdout.trim() === `"portferry netns suite"`,
    `dig TXT: exit ${txt.code}: ${txt.stdout}${txt.stderr}`,
  );
  // The query reached dnsmasq from the Daemon's side of the LAN, not from the office.
  await ctx.services.find((s) => s.name === "dnsmasq")!.waitFor(
    new RegExp(
      `query\\[A\\] ${DNS_NAME.replaceAll(".", "\\.")} from ${ADDR.homeLan.replaceAll(".", "\\.")}`,
    ),
    { from, ms: 5_000 },
  );
  return `${DNS_NAME} A ${DNS_ADDRESS} and TXT over UDP; dnsmasq saw the query from ${ADDR.homeLan}`;
}

async function checkSocks(ctx: Context): Promise<string> {
  const r = await run([
    "curl",
    "-sS",
    "--fail",
    "-m",
    "30",
    "--socks5-hostname",
    `127.0.0.1:${PFO.socks.listen}`,
    `http://${HOME_ONLY_NAME}:8000/hello.txt`,
  ], { ns: NS.office, timeoutMs: 40_000 });
  assert(r.code === 0, `curl --socks5-hostname exit ${r.code}: ${r.stderr}`);
  assert(r.stdout === ctx.helloText, `wrong body: ${JSON.stringify(r.stdout)}`);
  const resolved = await consoleCli(ctx, "resolve", HOME_ONLY_NAME, "--json");
  assert(resolved.code === 0, `console resolve exit ${resolved.code}: ${resolved.stderr}`);
  const addresses = (JSON.parse(resolved.stdout) as { addresses: string[] }).addresses;
  assert(addresses.includes(ADDR.lan), `resolve ${HOME_ONLY_NAME}: ${resolved.stdout}`);
  return `${HOME_ONLY_NAME} resolved by home's hosts file (console resolve: ${
    addresses.join(" ")
  })`;
}

async function clientChecks(ctx: Context, round: number, label: string): Promise<void> {
  await check(
    `${label}: curl downloads 100 MB from the LAN's HTTP server`,
    () => checkCurl(ctx, round),
  );
  await check(`${label}: ssh runs a command on home's OpenSSH`, () => checkSsh(ctx));
  await check(`${label}: redis-benchmark against the LAN's Redis`, () => checkRedis());
  await check(`${label}: dig asks the LAN's DNS over a UDP PFO`, () => checkDig(ctx));
  await check(
    `${label}: curl --socks5-hostname reaches a name only home resolves`,
    () => checkSocks(ctx),
  );
}

/** The office's listening sockets (session port, PFOs, local control), sorted. */
async function officeListeners(): Promise<string> {
  const out = await must(["ss", "-Hlntu"], { ns: NS.office });
  return out.split("\n").map((l) =>
    l.trim().split(/\s+/).filter((_, i) => i !== 2 && i !== 3).join(" ")
  )
    .filter((l) => l !== "").sort().join("\n");
}

async function outageAndRecovery(ctx: Context): Promise<void> {
  const consoleProc = ctx.console!;
  const daemon = ctx.daemon!;
  const consoleMark = consoleProc.out.mark;
  const daemonMark = daemon.out.mark;
  const listenersBefore = await officeListeners();
  let downAt = 0;
  let up = false;
  const bringUp = async () => {
    if (up) return;
    up = true;
    await must(["ip", "-n", NS.home, "link", "set", "to-office", "up"]);
  };
  try {
    await check("outage: both sides notice the cut link within 15 s", async () => {
      await must(["ip", "-n", NS.home, "link", "set", "to-office", "down"]);
      downAt = performance.now();
      const bound = DEAD_PEER_NOTICED_MS + 3_000;
      const daemonEnd = daemon.waitFor(/Session ended/, { from: daemonMark, ms: bound })
        .then(() => performance.now() - downAt);
      const consoleEnd = consoleProc.waitFor(/Session with .* ended/, {
        from: consoleMark,
        ms: bound,
      })
        .then(() => performance.now() - downAt);
      const [d, c] = await Promise.all([daemonEnd, consoleEnd]);
      assert(
        d <= DEAD_PEER_NOTICED_MS && c <= DEAD_PEER_NOTICED_MS,
        `noticed after ${Math.round(d)} ms (Daemon) and ${Math.round(c)} ms (Console)`,
      );
      return `Daemon after ${(d / 1000).toFixed(1)} s, Console after ${(c / 1000).toFixed(1)} s`;
    });
    await check("outage: a PFO connection without a session is closed at once", async () => {
      const r = await run(
        [
          "curl",
          "-sS",
          "-m",
          "10",
          "-o",
          "/dev/null",
          `http://127.0.0.1:${PFO.web.listen}/hello.txt`,
        ],
        { ns: NS.office },
      );
      // 52 (empty reply) or 56 (reset): the listener took the connection and closed
      // it; 7 would mean the listener is gone, 28 that the connection hung.
      assert(
        r.code === 52 || r.code === 56,
        `curl exit ${r.code}, expected 52 or 56 (accepted, then closed): ${r.stderr}`,
      );
      assert(r.ms < 3_000, `took ${Math.round(r.ms)} ms`);
      return `curl exit ${r.code} after ${Math.round(r.ms)} ms: ${r.stderr.trim()}`;
    });
    // The one sleep: the outage itself.
    const left = OUTAGE_MS - (performance.now() - downAt);
    if (downAt > 0 && left > 0) await new Promise((r) => setTimeout(r, left));
  } finally {
    await bringUp();
  }
  const upAt = performance.now();
  await check("recovery: the Daemon reconnects and the Console re-accepts it unasked", async () => {
    await daemon.waitFor(/Session established/, { from: daemonMark, ms: 45_000 });
    const [line] = await consoleProc.waitFor(/Session established with .*/, {
      from: consoleMark,
      ms: 10_000,
    });
    const asked = consoleProc.out.lines.slice(consoleMark).find((l) =>
      /asks for a session/.test(l)
    );
    assert(!asked, `the operator was asked again: ${asked}`);
    assert(
      /\((accepted earlier in this run|took over its stale session)\)/.test(line),
      `accepted how? ${line}`,
    );
    const status = await consoleStatus(ctx);
    assert(status.session.state === "established", `status: ${JSON.stringify(status.session)}`);
    assert(
      status.session.peer?.fingerprint === ctx.daemonFingerprint,
      `another Daemon? ${status.session.peer?.fingerprint} ≠ ${ctx.daemonFingerprint}`,
    );
    const bad = status.pfos.filter((p) => p.state !== "listening" || p.error);
    assert(
      status.pfos.length === 5 && bad.length === 0,
      `PFOs after recovery: ${JSON.stringify(status.pfos)}`,
    );
    const inUse = [...consoleProc.out.lines, ...daemon.out.lines].find((l) => /in use/i.test(l));
    assert(!inUse, `"in use" logged: ${inUse}`);
    const listenersAfter = await officeListeners();
    assert(
      listenersAfter === listenersBefore,
      `the office's listening sockets changed:\n${listenersBefore}\n---\n${listenersAfter}`,
    );
    return `established ${
      ((performance.now() - upAt) / 1000).toFixed(1)
    } s after the link came back; ${line.replace(/.*\(/, "(")}`;
  });
}

/** What the WebSocket scenarios (./websocket.ts) borrow from this suite. */
async function websocketKit(ctx: Context): Promise<WebSocketKit> {
  return {
    dir: ctx.dir,
    www: `${ctx.dir}/www`,
    ns: NS,
    office: ADDR.office,
    sessionPort: SESSION_PORT,
    webPort: PFO.web.listen,
    fingerprint: ctx.fingerprint!,
    daemonSettings: ctx.daemonSettings,
    console: ctx.console!,
    daemon: ctx.daemon!,
    daemonCommand: [Deno.execPath(), "run", ...await taskFlags("daemon"), "daemon.ts"],
    check,
    run,
    must,
    service: (name, ns, cmd) => {
      const service = new Service(name, ns, cmd);
      ctx.services.push(service);
      return service;
    },
    sha256,
  };
}

async function main(): Promise<number> {
  const why = await prerequisites();
  if (why) {
    console.log(`cannot run the firewall suite: ${why}`);
    console.log("0 passed, 1 failed");
    return 1;
  }
  const started = performance.now();
  const removed = await removeLeftovers();
  if (removed.length > 0) console.log(`removed leftovers of an earlier run: ${removed.join(" ")}`);

  // Fill Deno's cache now: the namespaces have no route to any registry.
  const cache = await run([Deno.execPath(), "cache", "console.ts", "daemon.ts"], {
    timeoutMs: 300_000,
  });
  if (cache.code !== 0) {
    console.log(`cannot fill Deno's cache: ${cache.stderr}`);
    console.log("0 passed, 1 failed");
    return 1;
  }

  const dir = await Deno.makeTempDir({ dir: TEMP_ROOT, prefix: `${TEMP_PREFIX}${Deno.pid}-` });
  const ctx: Context = {
    dir,
    services: [],
    consoleSettings: `${dir}/console/portferry-console.yaml`,
    daemonSettings: `${dir}/daemon/portferry-daemon.yaml`,
    bigSha256: "",
    helloText: "",
    sshUser: "",
  };
  let tornDown: Promise<void> | null = null;
  const teardown = () =>
    tornDown ??= (async () => {
      // The Daemon first, so the Console does not wait for it to drain.
      for (const s of [...ctx.services].reverse()) await s.stop();
      for (const ns of Object.values(NS)) await removeNamespace(ns);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  const onSignal = async () => {
    console.log("FAILED   interrupted: tearing down");
    await teardown();
    const passed = results.filter((r) => r.ok).length;
    console.log(`${passed} passed, ${results.length - passed + 1} failed`);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let failedHard = false;
  try {
    const ready = await check("setup: namespaces, veth links, firewall, servers", async () => {
      await buildTopology();
      await startServers(ctx);
      return `${NS.office}, ${NS.home}, ${NS.lan}`;
    }) &&
      await check(
        "firewall: the office reaches neither the LAN nor home directly",
        () => checkFirewall(ctx),
      ) &&
      await check(
        "session: the Daemon dials out from home, the operator accepts, PFOs added",
        () => startSession(ctx),
      );
    if (ready) {
      await clientChecks(ctx, 1, "before outage");
      await outageAndRecovery(ctx);
      await clientChecks(ctx, 2, "after recovery");
      await websocketChecks(await websocketKit(ctx));
    }
    // The Daemon behind an HTTP proxy (tests/netns/proxy.ts): namespaces of its own.
    await proxyScenarios({
      run: RUN,
      dir,
      services: ctx.services,
      exec: run,
      must,
      start: (name, ns, cmd) => new Service(name, ns, cmd),
      check,
      flags: taskFlags,
    });
  } catch (err) {
    failedHard = true;
    console.log(`FAILED   the suite stopped: ${err instanceof Error ? err.stack : err}`);
  } finally {
    const failed = results.some((r) => !r.ok) || failedHard;
    if (failed) {
      for (const s of ctx.services) {
        if (s.name === "console" || s.name === "daemon") {
          console.log(`--- last lines of ${s.name}\n${s.tail(40)}`);
        }
      }
    }
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  await check("teardown: no namespace, hosts file or process of this run is left", async () => {
    const left = (await namespaces()).filter((n) => n.startsWith(RUN));
    for (const ns of Object.values(NS)) {
      if (await Deno.stat(`/etc/netns/${ns}`).catch(() => null)) left.push(`/etc/netns/${ns}`);
    }
    for (const s of ctx.services) {
      if (!s.exited) left.push(`${s.name} (pid ${s.child.pid})`);
    }
    assert(left.length === 0, `left behind: ${left.join(" ")}`);
  });
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed + (failedHard ? 1 : 0);
  console.log(`firewall suite took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

/** Why this machine cannot run the suite, or null. */
async function prerequisites(): Promise<string | null> {
  if (Deno.build.os !== "linux") return `needs Linux network namespaces (this is ${Deno.build.os})`;
  if (Deno.uid() !== 0) return "needs root (ip netns, iptables): run it as root, as CI does";
  const missing: string[] = [];
  for (const tool of TOOLS) {
    const r = await run(["sh", "-c", `command -v ${tool}`]).catch(() => ({ code: 1 }));
    if (r.code !== 0) missing.push(tool);
  }
  if (sshdPath() && !(await Deno.stat(sshdPath()).catch(() => null))) missing.push("sshd");
  if (missing.length > 0) {
    return `missing ${missing.join(", ")}: apt-get install ${PACKAGES}`;
  }
  const probe = `${RUN}-probe`;
  const r = await run(["ip", "netns", "add", probe]);
  await run(["ip", "netns", "delete", probe]);
  if (r.code !== 0) return `cannot create a network namespace: ${r.stderr.trim()}`;
  return null;
}

if (import.meta.main) Deno.exit(await main());
