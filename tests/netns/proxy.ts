/**
 * The firewall suite's HTTP proxy scenarios, with a real `tinyproxy`.
 *
 * Three more namespaces, joined by veth pairs:
 *
 * ```text
 *  pxoffice 198.18.2.1 ──── 198.18.2.2 pxproxy 198.18.2.5 ──── 198.18.2.6 pxhome
 *  Console                  tinyproxy (no forwarding)            Daemon, HTTP on 127.0.0.1
 * ```
 *
 * The Daemon's host has no route but to the proxy host, and the proxy host
 * forwards nothing, so the only way to the Console is `CONNECT` through
 * tinyproxy (Basic authentication, CONNECT to port 7470 only). A second
 * tinyproxy allows CONNECT to port 443 only. Checks: the session comes up
 * through the proxy and a PFO carries 20 MB intact; wrong credentials give
 * the 407 message; the refusing proxy gives the refusal message;
 * `HTTPS_PROXY` from the environment works; a `ws://` address goes through
 * tinyproxy too (the Console's session port takes the upgrade itself).
 *
 * Called from `firewall.ts`, which passes its helpers in ({@linkcode ProxyKit}).
 *
 * @module
 */

import type { Output } from "../_harness.ts";

/** What `firewall.ts` lends these scenarios. */
export interface ProxyKit {
  /** Namespace prefix of this run (`pfns<pid>`). */
  readonly run: string;
  /** This run's temp folder. */
  readonly dir: string;
  /** Every service started, for the suite's teardown and leftover check. */
  readonly services: ServiceLike[];
  readonly exec: (
    cmd: readonly string[],
    options?: { ns?: string; timeoutMs?: number },
  ) => Promise<{ code: number; stdout: string; stderr: string }>;
  readonly must: (cmd: readonly string[], options?: { ns?: string }) => Promise<string>;
  readonly start: (name: string, ns: string, cmd: readonly string[]) => ServiceLike;
  readonly check: (name: string, fn: () => Promise<string | void>) => Promise<boolean>;
  readonly flags: (task: "console" | "daemon") => Promise<string[]>;
}

/** A long-running process in a namespace (`firewall.ts`'s `Service`). */
export interface ServiceLike {
  readonly name: string;
  readonly out: Output;
  readonly status: Promise<Deno.CommandStatus>;
  waitFor(re: RegExp, options?: { from?: number; ms?: number }): Promise<RegExpMatchArray>;
  stop(graceMs?: number): Promise<void>;
  tail(n?: number): string;
}

/** The Debian package and the tool it brings. */
export const PROXY_PACKAGES = "tinyproxy";
/** The tools these scenarios run. */
export const PROXY_TOOLS = ["tinyproxy", "ss"];

const ADDR = {
  office: "198.18.2.1",
  proxyOffice: "198.18.2.2",
  proxyHome: "198.18.2.5",
  home: "198.18.2.6",
} as const;
const SESSION_PORT = 7470;
const PROXY_PORT = 3128;
const REFUSING_PORT = 3129;
const WEB_PORT = 8100;
const USER = "ann";
const PASSWORD = `pw-${crypto.randomUUID().slice(0, 8)}`;
const BIG_BYTES = 20 * 1024 * 1024;

function assert(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Error(message);
}

/** Run the proxy scenarios; their namespaces are removed before it returns. */
export async function proxyScenarios(kit: ProxyKit): Promise<void> {
  const ns = {
    office: `${kit.run}-pxoffice`,
    proxy: `${kit.run}-pxproxy`,
    home: `${kit.run}-pxhome`,
  };
  const dir = `${kit.dir}/proxy`;
  const mine: ServiceLike[] = [];
  const start = (name: string, where: string, cmd: readonly string[]) => {
    const s = kit.start(name, where, cmd);
    kit.services.push(s);
    mine.push(s);
    return s;
  };
  try {
    const ready = await kit.check(
      "proxy setup: three namespaces, tinyproxy twice, a 20 MB file",
      async () => {
        await Deno.mkdir(dir, { recursive: true });
        await buildTopology(kit, ns);
        await startProxies(kit, ns, dir, start);
        return await startConsoleAndWeb(kit, ns, dir, start);
      },
    );
    if (!ready) return;
    const scenario = new Scenario(kit, ns, dir, start);
    const check = (name: string, fn: () => Promise<string>) =>
      kit.check(name, () =>
        fn().catch((err) => {
          const tails = mine.filter((s) => /daemon|console|tinyproxy/.test(s.name)).slice(-3);
          throw new Error(`${(err as Error).message}\n${tails.map((s) => s.tail(15)).join("\n")}`);
        }));
    await check(
      "proxy: the Daemon's host reaches the Console only through the proxy",
      () => scenario.isolated(),
    );
    await check(
      "proxy: through tinyproxy with Basic auth, a PFO carries 20 MB intact",
      () => scenario.throughProxy(),
    );
    await check("proxy: wrong credentials give the 407 message", () => scenario.wrongCredentials());
    await check(
      "proxy: a proxy refusing the Console's port gives the refusal message",
      () => scenario.refused(),
    );
    await check("proxy: HTTPS_PROXY from the environment works", () => scenario.fromEnv());
    await check(
      "proxy: ws:// through tinyproxy (CONNECT, then the upgrade)",
      () => scenario.websocket(),
    );
  } finally {
    for (const s of mine.reverse()) await s.stop();
    for (const name of Object.values(ns)) {
      await kit.exec(["ip", "netns", "delete", name]).catch(() => {});
    }
  }
}

async function buildTopology(
  kit: ProxyKit,
  ns: { office: string; proxy: string; home: string },
): Promise<void> {
  for (const name of Object.values(ns)) {
    await kit.must(["ip", "netns", "add", name]);
    await kit.must(["ip", "-n", name, "link", "set", "lo", "up"]);
  }
  const pairs: [string, string, string, string][] = [
    [ns.office, "to-proxy", ns.proxy, "to-office"],
    [ns.proxy, "to-home", ns.home, "to-proxy"],
  ];
  for (const [a, devA, b, devB] of pairs) {
    await kit.must([
      "ip",
      "-n",
      a,
      "link",
      "add",
      devA,
      "type",
      "veth",
      "peer",
      "name",
      devB,
      "netns",
      b,
    ]);
  }
  const links: [string, string, string][] = [
    [ns.office, "to-proxy", ADDR.office],
    [ns.proxy, "to-office", ADDR.proxyOffice],
    [ns.proxy, "to-home", ADDR.proxyHome],
    [ns.home, "to-proxy", ADDR.home],
  ];
  for (const [name, dev, addr] of links) {
    await kit.must(["ip", "-n", name, "addr", "add", `${addr}/30`, "dev", dev]);
    await kit.must(["ip", "-n", name, "link", "set", dev, "up"]);
  }
  // The proxy host forwards nothing: only tinyproxy joins the two sides.
  await kit.must(["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"], { ns: ns.proxy });
  await kit.must(["iptables", "-P", "FORWARD", "DROP"], { ns: ns.proxy });
}

async function startProxies(
  kit: ProxyKit,
  ns: { proxy: string },
  dir: string,
  start: (name: string, ns: string, cmd: readonly string[]) => ServiceLike,
): Promise<void> {
  const conf = (port: number, extra: string[]) =>
    [
      "User nobody",
      "Group nogroup",
      `Port ${port}`,
      `Listen ${ADDR.proxyHome}`,
      "Timeout 60",
      "MaxClients 20",
      "LogLevel Info",
      `Allow ${ADDR.home}`,
      ...extra,
      "",
    ].join("\n");
  await Deno.writeTextFile(
    `${dir}/tinyproxy.conf`,
    conf(PROXY_PORT, [`BasicAuth ${USER} ${PASSWORD}`, `ConnectPort ${SESSION_PORT}`]),
  );
  await Deno.writeTextFile(`${dir}/tinyproxy-443.conf`, conf(REFUSING_PORT, ["ConnectPort 443"]));
  for (
    const [name, file, port] of [["tinyproxy", "tinyproxy.conf", PROXY_PORT], [
      "tinyproxy-443",
      "tinyproxy-443.conf",
      REFUSING_PORT,
    ]] as const
  ) {
    const s = start(name, ns.proxy, ["tinyproxy", "-d", "-c", `${dir}/${file}`]);
    await waitForPort(kit, ns.proxy, ADDR.proxyHome, port, s);
  }
}

/** Poll until something listens on `host:port` in `ns` (bounded). */
async function waitForPort(
  kit: ProxyKit,
  ns: string,
  host: string,
  port: number,
  s: ServiceLike,
): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await kit.exec(["ss", "-Hltn", `sport = :${port}`], { ns });
    if (r.stdout.includes(`${host}:${port}`)) return;
    const exited = await Promise.race([s.status.then(() => true), delay(100).then(() => false)]);
    if (exited) throw new Error(`${s.name} exited before listening:\n${s.tail()}`);
  }
  throw new Error(`${s.name} is not listening on ${host}:${port} after 10 s:\n${s.tail()}`);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function startConsoleAndWeb(
  kit: ProxyKit,
  ns: { office: string; home: string },
  dir: string,
  start: (name: string, ns: string, cmd: readonly string[]) => ServiceLike,
): Promise<string> {
  await Deno.mkdir(`${dir}/www`);
  const big = await Deno.open(`${dir}/www/big.bin`, { write: true, create: true });
  const chunk = new Uint8Array(65536);
  for (let i = 0; i < BIG_BYTES / chunk.length; i++) {
    crypto.getRandomValues(chunk);
    for (let off = 0; off < chunk.length;) off += await big.write(chunk.subarray(off));
  }
  big.close();
  const web = start("px-http", ns.home, [
    "python3",
    "-u",
    "-m",
    "http.server",
    String(WEB_PORT),
    "--bind",
    "127.0.0.1",
    "--directory",
    `${dir}/www`,
  ]);
  await web.waitFor(/Serving HTTP on/);
  await Deno.mkdir(`${dir}/console`);
  const consoleProc = start("px-console", ns.office, [
    Deno.execPath(),
    "run",
    ...await kit.flags("console"),
    "console.ts",
    "--config",
    `${dir}/console/portferry-console.yaml`,
    "--session",
    `0.0.0.0:${SESSION_PORT}`,
    "--headless",
    "--auto-accept",
  ]);
  const [, fingerprint] = await consoleProc.waitFor(/fingerprint: (SHA256:\S+)/, { ms: 30_000 });
  await consoleProc.waitFor(/Console listening for Daemons/);
  await Deno.writeTextFile(`${dir}/fingerprint`, fingerprint);
  const added = await kit.exec([
    Deno.execPath(),
    "run",
    ...await kit.flags("console"),
    "console.ts",
    "--config",
    `${dir}/console/portferry-console.yaml`,
    "pfo",
    "add",
    "big",
    "--listen",
    String(WEB_PORT),
    "--target",
    `127.0.0.1:${WEB_PORT}`,
  ], { ns: ns.office });
  assert(added.code === 0, `pfo add failed (${added.code}): ${added.stderr}${added.stdout}`);
  return `tinyproxy on ${ADDR.proxyHome}:${PROXY_PORT} (Basic auth, CONNECT ${SESSION_PORT} only) and :${REFUSING_PORT} (CONNECT 443 only)`;
}

/** The scenarios, each with a Daemon of its own in pxhome. */
class Scenario {
  readonly #kit: ProxyKit;
  readonly #ns: { office: string; proxy: string; home: string };
  readonly #dir: string;
  readonly #start: (name: string, ns: string, cmd: readonly string[]) => ServiceLike;
  #count = 0;

  constructor(
    kit: ProxyKit,
    ns: { office: string; proxy: string; home: string },
    dir: string,
    start: (name: string, ns: string, cmd: readonly string[]) => ServiceLike,
  ) {
    this.#kit = kit;
    this.#ns = ns;
    this.#dir = dir;
    this.#start = start;
  }

  /** A Daemon in pxhome with `args` (and `env` through `env(1)`); its settings file. */
  async #daemon(
    args: string[],
    env: string[] = [],
    consoleAddr = `${ADDR.office}:${SESSION_PORT}`,
  ): Promise<{ s: ServiceLike; settings: string }> {
    const home = `${this.#dir}/daemon-${++this.#count}`;
    await Deno.mkdir(home);
    const settings = `${home}/portferry-daemon.yaml`;
    const fingerprint = await Deno.readTextFile(`${this.#dir}/fingerprint`);
    const s = this.#start(`px-daemon-${this.#count}`, this.#ns.home, [
      "env",
      ...env,
      Deno.execPath(),
      "run",
      ...await this.#kit.flags("daemon"),
      "daemon.ts",
      consoleAddr,
      "--fingerprint",
      fingerprint,
      "--config",
      settings,
      "--headless",
      ...args,
    ]);
    return { s, settings };
  }

  #proxyUrl(password = PASSWORD): string {
    return `http://${USER}:${password}@${ADDR.proxyHome}:${PROXY_PORT}`;
  }

  async isolated(): Promise<string> {
    const r = await this.#kit.exec(
      [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "--connect-timeout",
        "2",
        `telnet://${ADDR.office}:${SESSION_PORT}`,
      ],
      { ns: this.#ns.home },
    );
    assert(
      r.code === 7,
      `pxhome → Console should have no route (curl exit 7), got ${r.code}: ${r.stderr}`,
    );
    return "curl from the Daemon's host to the Console: no route";
  }

  async throughProxy(): Promise<string> {
    const { s, settings } = await this.#daemon(["--proxy", this.#proxyUrl()]);
    await s.waitFor(/Session established/, { ms: 30_000 });
    const out = `${this.#dir}/got.bin`;
    const got = await this.#kit.exec(
      ["curl", "-sS", "--fail", "-m", "120", "-o", out, `http://127.0.0.1:${WEB_PORT}/big.bin`],
      { ns: this.#ns.office, timeoutMs: 130_000 },
    );
    assert(got.code === 0, `curl through the PFO: exit ${got.code}: ${got.stderr}`);
    const [want, have] = await Promise.all([
      this.#kit.must(["sha256sum", `${this.#dir}/www/big.bin`]),
      this.#kit.must(["sha256sum", out]),
    ]);
    assert(
      want.split(" ")[0] === have.split(" ")[0],
      `20 MB changed on the way: ${want} vs ${have}`,
    );
    const status = await this.#kit.exec([
      Deno.execPath(),
      "run",
      ...await this.#kit.flags("daemon"),
      "daemon.ts",
      "--config",
      settings,
      "status",
      "--json",
    ], { ns: this.#ns.home });
    const proxy = (JSON.parse(status.stdout) as { proxy: string }).proxy;
    const masked = `http://${USER}:***@${ADDR.proxyHome}:${PROXY_PORT}`;
    assert(proxy === masked, `status shows the proxy as ${proxy}, expected ${masked}`);
    const tiny = this.#kit.services.find((x) => x.name === "tinyproxy")!;
    const leaked = [...s.out.lines, status.stdout, status.stderr].filter((l) =>
      l.includes(PASSWORD)
    );
    assert(leaked.length === 0, `the password reached the Daemon's output: ${leaked[0]}`);
    await s.stop();
    return `sha256 ${
      have.slice(0, 12)
    }… intact; status: ${proxy}; tinyproxy log lines ${tiny.out.lines.length}`;
  }

  async wrongCredentials(): Promise<string> {
    const { s } = await this.#daemon(["--proxy", this.#proxyUrl("wrong"), "--no-reconnect"]);
    const [line] = await s.waitFor(/.*the proxy wants credentials.*/, { ms: 30_000 });
    assert(
      line.includes(
        "the proxy wants credentials: --proxy http://USER:PASS@HOST:PORT or --proxy-auth-file",
      ),
      line,
    );
    assert(line.includes(`"http://${USER}:***@${ADDR.proxyHome}:${PROXY_PORT}"`), line);
    await s.stop();
    return line.replace(/^error: /, "");
  }

  async refused(): Promise<string> {
    const { s } = await this.#daemon([
      "--proxy",
      `http://${ADDR.proxyHome}:${REFUSING_PORT}`,
      "--no-reconnect",
    ]);
    const [line] = await s.waitFor(
      new RegExp(
        `.*the proxy refused CONNECT to ${
          ADDR.office.replaceAll(".", "\\.")
        }:${SESSION_PORT} \\(403 [^)]+\\).*`,
      ),
      { ms: 30_000 },
    );
    await s.stop();
    return line.replace(/^error: /, "");
  }

  /** The Console's session port takes WebSocket upgrades itself: ws:// straight to it, through tinyproxy. */
  async websocket(): Promise<string> {
    const url = `ws://${ADDR.office}:${SESSION_PORT}/portferry`;
    const { s } = await this.#daemon(["--proxy", this.#proxyUrl()], [], url);
    await s.waitFor(/Session established/, { ms: 30_000 });
    const r = await this.#kit.exec(
      [
        "curl",
        "-sS",
        "--fail",
        "-m",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        `http://127.0.0.1:${WEB_PORT}/big.bin`,
      ],
      { ns: this.#ns.office, timeoutMs: 70_000 },
    );
    assert(
      r.code === 0 && r.stdout === String(BIG_BYTES),
      `curl through the PFO: exit ${r.code}: ${r.stdout}${r.stderr}`,
    );
    await s.stop();
    return `${url} through ${ADDR.proxyHome}:${PROXY_PORT}; ${r.stdout} bytes through the PFO`;
  }

  async fromEnv(): Promise<string> {
    const { s, settings } = await this.#daemon([], [
      `HTTPS_PROXY=${this.#proxyUrl()}`,
      "NO_PROXY=localhost",
    ]);
    await s.waitFor(/Session established/, { ms: 30_000 });
    const [line] = await s.waitFor(/Connecting to the Console at .* through the proxy \S+/);
    const r = await this.#kit.exec(
      [
        "curl",
        "-sS",
        "--fail",
        "-m",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        `http://127.0.0.1:${WEB_PORT}/big.bin`,
      ],
      { ns: this.#ns.office, timeoutMs: 70_000 },
    );
    assert(
      r.code === 0 && r.stdout === String(BIG_BYTES),
      `curl through the PFO: exit ${r.code}: ${r.stdout}${r.stderr}`,
    );
    const tunnelled = await this.#kit.exec(["ss", "-Htn", "state", "established"], {
      ns: this.#ns.home,
    });
    assert(
      tunnelled.stdout.includes(`${ADDR.proxyHome}:${PROXY_PORT}`),
      `the Daemon's session does not run over a connection to the proxy:\n${tunnelled.stdout}`,
    );
    await s.stop();
    return `${line}; ${r.stdout} bytes through the PFO (settings ${
      settings.split("/").slice(-2).join("/")
    })`;
  }
}
