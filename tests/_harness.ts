// deno-lint-ignore-file no-console -- a build script / test output, not library code
/**
 * End-to-end harness: spawns the real `console.ts` and `daemon.ts` with the
 * same permission flags as the `deno task` entries, on port 0, and waits for
 * their ready lines. Everything is an AsyncDisposable: `await using`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Identity, loadOrCreateIdentity } from "../lib/core/identity.ts";
import { settingsPaths } from "../lib/settings/paths.ts";
import { connectPinned, type SessionLink } from "../lib/core/tls.ts";

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The permission flags of a deno.json task, e.g. `taskFlags("console")`. */
export async function taskFlags(task: "console" | "daemon"): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks[task].split(/\s+/);
  const run = words.indexOf("run");
  const entry = words.findIndex((w) => w.endsWith(".ts"));
  if (run < 0 || entry < 0) {
    throw new Error(`Cannot read flags of task "${task}": ${config.tasks[task]}`);
  }
  return words.slice(run + 1, entry);
}

/** Collects a process's output lines and lets tests wait for one. */
export class Output {
  readonly lines: string[] = [];
  #waiters: { re: RegExp; from: number; resolve: (m: RegExpMatchArray) => void }[] = [];

  async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        this.#add(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
    if (rest) this.#add(rest);
  }

  #add(line: string): void {
    this.lines.push(line);
    if (Deno.env.get("PF_TEST_VERBOSE")) console.error(line);
    for (const w of [...this.#waiters]) {
      const m = line.match(w.re);
      if (m) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }

  /** Number of lines so far; pass it as `from` to wait only for later lines. */
  get mark(): number {
    return this.lines.length;
  }

  /** Wait for a line matching `re` (from line index `from`), failing after `ms`. */
  waitFor(re: RegExp, options: { from?: number; ms?: number } = {}): Promise<RegExpMatchArray> {
    const from = options.from ?? 0;
    for (let i = from; i < this.lines.length; i++) {
      const m = this.lines[i].match(re);
      if (m) return Promise.resolve(m);
    }
    const ms = options.ms ?? 15_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(
          new Error(
            `Timed out after ${ms} ms waiting for ${re}; output:\n${
              this.lines.slice(-30).join("\n")
            }`,
          ),
        );
      }, ms);
      const waiter = {
        re,
        from,
        resolve: (m: RegExpMatchArray) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.#waiters.push(waiter);
    });
  }

  text(): string {
    return this.lines.join("\n");
  }
}

/** A spawned portferry process. */
export interface Proc extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly out: Output;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Send SIGTERM (graceful exit) and wait. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

function spawn(
  entry: string,
  flags: string[],
  args: string[],
  env: Record<string, string> = {},
  prefix: readonly string[] = [],
): Proc {
  // A prefix runs the program through another command, e.g. `unshare -m sh -c '...' deno run ...`.
  const command = [...prefix, Deno.execPath(), "run", ...flags, entry, ...args];
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  const status = child.status.then(async (s) => {
    await pumps;
    return s;
  });
  let stopped = false;
  async function stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    if (!stopped) {
      stopped = true;
      try {
        child.kill(signal);
      } catch {
        // Exited already.
      }
    }
    return await status;
  }
  return {
    child,
    out,
    status,
    stop,
    [Symbol.asyncDispose]: async () => void await stop("SIGKILL"),
  };
}

/** A Console process. */
export interface ConsoleProc extends Proc {
  readonly dir: string;
  readonly settingsPath: string;
  /** Where Daemons connect, e.g. "127.0.0.1:41234". */
  readonly address: string;
  readonly fingerprint: string;
  /** Run a console subcommand against this Console. */
  cli(...args: string[]): Promise<CliResult>;
}

/** What a finished CLI call printed. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options for {@linkcode startConsole}. */
export interface StartConsoleOptions {
  /** Settings file text to start with. */
  readonly settings?: string;
  /** Extra command-line arguments. */
  readonly args?: readonly string[];
  /** Use this folder (default: a new temp folder). */
  readonly dir?: string;
}

/** A program's `deno run` arguments: its task's permission flags, the entry file, then `args`. */
export async function entryArgs(
  entry: "console.ts" | "daemon.ts",
  args: readonly string[],
): Promise<string[]> {
  return ["run", ...await taskFlags(entry === "console.ts" ? "console" : "daemon"), entry, ...args];
}

/** `word` quoted for `sh`. */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A command line run of `entry`: from the repository, no stdin, output piped, no colour. */
export async function cliCommand(
  entry: "console.ts" | "daemon.ts",
  args: readonly string[],
): Promise<Deno.Command> {
  return new Deno.Command(Deno.execPath(), {
    args: await entryArgs(entry, args),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
}

/** Run a CLI entry to completion. */
export async function runCli(
  entry: "console.ts" | "daemon.ts",
  args: readonly string[],
): Promise<CliResult> {
  const out = await (await cliCommand(entry, args)).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Folders the harness made; removed when the test process ends (tests may reuse one across restarts). */
const tempDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Gone already.
    }
  }
});

/** What every temp folder the tests make is named after, so that leftovers are easy to find. */
export const TEMP_PREFIX = "portferry-test-";

/** A new temp folder named `portferry-test-<prefix>…`, removed when the test process ends. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: TEMP_PREFIX + prefix });
  tempDirs.push(dir);
  return dir;
}

/** Start a Console on 127.0.0.1 port 0 in headless mode; resolves once it is ready. */
export async function startConsole(options: StartConsoleOptions = {}): Promise<ConsoleProc> {
  const dir = options.dir ?? await tempDir("pf-console-");
  const settingsPath = `${dir}/portferry-console.yaml`;
  if (options.settings !== undefined) {
    await Deno.writeTextFile(settingsPath, options.settings, { mode: 0o600 });
  }
  const proc = spawn("console.ts", await taskFlags("console"), [
    "--config",
    settingsPath,
    "--session",
    "127.0.0.1:0",
    "--headless",
    ...(options.args ?? []),
  ]);
  try {
    const [, fingerprint] = await proc.out.waitFor(/fingerprint: (SHA256:\S+)/);
    const [, address] = await proc.out.waitFor(/Console listening for Daemons on (\S+)/);
    return {
      ...proc,
      dir,
      settingsPath,
      address,
      fingerprint,
      cli: (...args) => runCli("console.ts", ["--config", settingsPath, ...args]),
    };
  } catch (err) {
    await proc.stop("SIGKILL");
    throw err;
  }
}

/** A Daemon process. */
export interface DaemonProc extends Proc {
  readonly dir: string;
  readonly settingsPath: string;
  cli(...args: string[]): Promise<CliResult>;
}

/** Options for {@linkcode startDaemon}. */
export interface StartDaemonOptions {
  readonly fingerprint?: string;
  readonly args?: readonly string[];
  readonly settings?: string;
  readonly dir?: string;
  /** Run the Daemon through this command prefix (it must exec `"$0" "$@"`), e.g. `unshare`. */
  readonly prefix?: readonly string[];
  /** Deno permission flags instead of the `daemon` task's (see {@linkcode taskFlags}). */
  readonly flags?: readonly string[];
  /** More environment variables for the Daemon. */
  readonly env?: Readonly<Record<string, string>>;
}

/** Start a Daemon dialing `console`. Resolves once spawned (not once established). */
export async function startDaemon(
  target: { address: string; fingerprint: string },
  options: StartDaemonOptions = {},
): Promise<DaemonProc> {
  const dir = options.dir ?? await tempDir("pf-daemon-");
  const settingsPath = `${dir}/portferry-daemon.yaml`;
  if (options.settings !== undefined) {
    await Deno.writeTextFile(settingsPath, options.settings, { mode: 0o600 });
  }
  const proc = spawn(
    "daemon.ts",
    options.flags ? [...options.flags] : await taskFlags("daemon"),
    [
      target.address,
      "--fingerprint",
      options.fingerprint ?? target.fingerprint,
      "--config",
      settingsPath,
      ...(options.args ?? []),
    ],
    { USER: "tester", ...options.env },
    options.prefix,
  );
  return {
    ...proc,
    dir,
    settingsPath,
    cli: (...args) => runCli("daemon.ts", ["--config", settingsPath, ...args]),
  };
}

/** A Console with `--auto-accept` and a Daemon with an established session. */
export async function startPair(
  options: { console?: StartConsoleOptions; daemon?: StartDaemonOptions } = {},
): Promise<{ console: ConsoleProc; daemon: DaemonProc } & AsyncDisposable> {
  const consoleProc = await startConsole({
    ...options.console,
    args: ["--auto-accept", ...(options.console?.args ?? [])],
  });
  let daemon: DaemonProc | undefined;
  try {
    daemon = await startDaemon(consoleProc, options.daemon);
    await daemon.out.waitFor(/Session established/);
    await consoleProc.out.waitFor(/Session established/);
  } catch (err) {
    await daemon?.stop("SIGKILL");
    await consoleProc.stop("SIGKILL");
    throw err;
  }
  return {
    console: consoleProc,
    daemon,
    async [Symbol.asyncDispose]() {
      await daemon!.stop("SIGKILL");
      await consoleProc.stop("SIGKILL");
    },
  };
}

/** Add a PFO on a running Console with listen port 0; returns the bound address. */
export async function addPfo(
  consoleProc: ConsoleProc,
  name: string,
  target: string,
): Promise<string> {
  const r = await consoleProc.cli(
    "pfo",
    "add",
    name,
    "--listen",
    "127.0.0.1:0",
    "--target",
    target,
  );
  if (r.code !== 0) throw new Error(`pfo add failed (${r.code}): ${r.stderr}${r.stdout}`);
  const status = JSON.parse((await consoleProc.cli("status", "--json")).stdout);
  const pfo = status.pfos.find((p: { name: string }) => p.name === name);
  return pfo.bound[0];
}

/** A TCP server on 127.0.0.1:0 running `handler` per connection. */
export function tcpServer(
  handler: (conn: Deno.TcpConn) => Promise<void>,
): Deno.TcpListener & { port: number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      handler(conn).catch(() => {}).finally(() => closeQuietly(conn));
    }
  })().catch(() => {});
  return Object.assign(listener, { port: (listener.addr as Deno.NetAddr).port });
}

/** An echo server: writes back everything, half-closes after the client does. */
export function echoServer(): Deno.TcpListener & { port: number } {
  return tcpServer(async (conn) => {
    const buf = new Uint8Array(64 * 1024);
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) {
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
    await conn.closeWrite();
  });
}

/** Close, ignoring "already closed". */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

/** Parse `host:port` / `[v6]:port` into connect options. */
export function hostPort(text: string): { hostname: string; port: number } {
  const m = text.match(/^\[?([^\]]+?)\]?:(\d+)$/);
  if (!m) throw new Error(`bad address ${text}`);
  return { hostname: m[1], port: Number(m[2]) };
}

/** One echo round trip through `listen`; resolves to what came back. */
export async function echoRoundTrip(listen: string, text: string): Promise<string> {
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(encoder.encode(text));
    await conn.closeWrite();
    let got = "";
    const buf = new Uint8Array(1024);
    let n: number | null;
    while ((n = await within(conn.read(buf), 10_000, "echo reply")) !== null) {
      got += decoder.decode(buf.subarray(0, n));
    }
    return got;
  } finally {
    conn.close();
  }
}

// --- `status --json` -----------------------------------------------------------

/** Parses a CLI result that must be exit 0 with only JSON on stdout. */
export function json<T = Record<string, unknown>>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** One PFO as `status --json` and `pfo list --json` print it. */
export interface PfoJson {
  name: string;
  proto: string;
  listen: string;
  target: string | null;
  enabled: boolean;
  state: string;
  error: string | null;
  connections: number;
  connectionsTotal: number;
  connectionsRefused: number;
  bytesIn: number;
  bytesOut: number;
  bound: string[];
}

/** What `status --json` prints on the Console (the Daemon prints the same `session` and `fingerprint`). */
export interface StatusJson {
  session: {
    state: string;
    peer: { address: string; host: string | null; user: string | null; fingerprint: string } | null;
  };
  fingerprint: string;
  pfos: PfoJson[];
}

/** Runs `status --json` on a running Console or Daemon; it must exit 0 with only JSON. */
export async function statusOf(proc: ConsoleProc | DaemonProc): Promise<StatusJson> {
  return json<StatusJson>(await proc.cli("status", "--json"));
}

// --- a Daemon written by hand ----------------------------------------------------

/** A hand-written Daemon's identity and its TLS link to a Console, before any message. */
export interface FakeDaemonLink {
  /** A fresh Daemon identity in a new temp folder. */
  readonly identity: Identity;
  /** The identity's certificate as AUTH carries it (base64 DER). */
  readonly cert: string;
  /** TLS to the Console, pinned to its fingerprint; the test sends the wire protocol itself. */
  readonly link: SessionLink;
}

/**
 * The start of a Daemon written in a test: its own identity and a TLS link
 * pinned to `con`, so the test can speak the wire protocol (or break it) by hand.
 */
export async function fakeDaemonLink(
  con: { address: string; fingerprint: string },
): Promise<FakeDaemonLink> {
  const dir = await tempDir("pf-fake-daemon-");
  const paths = settingsPaths(`${dir}/portferry-daemon.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  const { hostname, port } = hostPort(con.address);
  const link = await connectPinned({
    hostname,
    port,
    fingerprint: con.fingerprint,
    timeoutMs: 10_000,
  });
  return { identity, cert: btoa(String.fromCharCode(...identity.certDer)), link };
}

/** Reads `link` until the peer closes it (EOF or a failed read); fails with `what` after `ms`. */
export async function peerHangsUp(
  link: Pick<SessionLink, "read">,
  ms: number,
  what: string,
): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  await within(
    (async () => {
      for (let i = 0; i < 100_000; i++) {
        if ((await link.read(buf).catch(() => null)) === null) return;
      }
    })(),
    ms,
    what,
  );
}

// --- /proc probes and a cuttable link (reliability tests, tools/soak_reconnect.ts) ---

/** What /proc says about a process (Linux only). */
export interface ProcStats {
  /** Open file descriptors. */
  readonly fds: number;
  /** Open file descriptors that are sockets. */
  readonly sockets: number;
  /** Resident set size, KiB. */
  readonly rssKiB: number;
  readonly threads: number;
  /** Context switches of the main (JavaScript) thread: each timer firing is one or more. */
  readonly mainThreadSwitches: number;
}

/**
 * Read /proc through `ls` and `cat`: Deno 2 lets only --allow-all read /proc
 * itself, and the test task has --allow-run, not --allow-all.
 */
async function procText(program: "ls" | "cat", args: string[]): Promise<string> {
  const out = await new Deno.Command(program, {
    args,
    env: { LC_ALL: "C" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success && program === "cat") {
    throw new Error(`Cannot read ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

/** Where each open file descriptor of `pid` points ("socket:[123]", "/dev/null", ...). */
async function fdLinks(pid: number): Promise<string[]> {
  const text = await procText("ls", ["-l", `/proc/${pid}/fd`]);
  return text.split("\n").map((l) => l.match(/ -> (.*)$/)?.[1]).filter((l) => l !== undefined);
}

/** Read /proc/<pid>/fd and /proc/<pid>/status. */
export async function procStats(pid: number): Promise<ProcStats> {
  const links = await fdLinks(pid);
  const status = await procText("cat", [`/proc/${pid}/status`]);
  const field = (name: string) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+)`, "m"))?.[1]);
  return {
    fds: links.length,
    sockets: links.filter((l) => l.startsWith("socket:")).length,
    rssKiB: field("VmRSS"),
    threads: field("Threads"),
    mainThreadSwitches: field("voluntary_ctxt_switches") + field("nonvoluntary_ctxt_switches"),
  };
}

/** TCP states as /proc/net/tcp numbers them. */
const TCP_STATES: Record<string, string> = {
  "01": "ESTABLISHED",
  "02": "SYN_SENT",
  "03": "SYN_RECV",
  "04": "FIN_WAIT1",
  "05": "FIN_WAIT2",
  "06": "TIME_WAIT",
  "07": "CLOSE",
  "08": "CLOSE_WAIT",
  "09": "LAST_ACK",
  "0A": "LISTEN",
  "0B": "CLOSING",
};

/** One TCP socket a process holds open. */
export interface TcpSocket {
  readonly local: string;
  readonly remote: string;
  readonly state: string;
}

function procAddress(hex: string): string {
  const [ip, port] = hex.split(":");
  const words = ip.match(/.{8}/g)!.map((w) => w.match(/../g)!.reverse().join(""));
  const p = parseInt(port, 16);
  if (words.length === 1) {
    return `${words[0].match(/../g)!.map((b) => parseInt(b, 16)).join(".")}:${p}`;
  }
  const all = words.join("");
  if (all.startsWith("00000000000000000000FFFF")) {
    return `${all.slice(24).match(/../g)!.map((b) => parseInt(b, 16)).join(".")}:${p}`;
  }
  const groups = all.match(/.{4}/g)!.map((g) => parseInt(g, 16).toString(16));
  return `[${groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::")}]:${p}`;
}

/** The TCP sockets `pid` holds open, from /proc/<pid>/fd and /proc/net/tcp{,6}. */
export async function tcpSockets(pid: number): Promise<TcpSocket[]> {
  const inodes = new Set(
    (await fdLinks(pid)).map((l) => l.match(/^socket:\[(\d+)\]$/)?.[1]).filter((i) => i),
  );
  const out: TcpSocket[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = await procText("cat", [table]);
    } catch {
      continue; // No IPv6 here.
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      out.push({
        local: procAddress(f[1]),
        remote: procAddress(f[2]),
        state: TCP_STATES[f[3]] ?? f[3],
      });
    }
  }
  return out;
}

/**
 * A TCP relay on 127.0.0.1:0 in front of `target`: the Daemon dials it, and a
 * test cuts or freezes the link as a network would, without touching either
 * program.
 */
export interface LinkCutter extends AsyncDisposable {
  /** Where to dial instead of the target. */
  readonly address: string;
  /** Connections relayed so far. */
  readonly accepted: number;
  /** Connections relayed now. */
  readonly open: number;
  /** Close every relayed connection now (both ends see the link end); returns how many. */
  cut(): number;
  /** Stop moving bytes, closing nothing: the peers see silence, as on a pulled cable. */
  freeze(): void;
  /** Cut the connections frozen so far and relay again. */
  thaw(): void;
  /**
   * Resolves once the next chunk has been relayed `toTarget` (Daemon → Console)
   * or back (`fromTarget`): a way to act at a known point of the heartbeat.
   */
  nextChunk(direction: "toTarget" | "fromTarget"): Promise<void>;
}

/** Options for {@linkcode linkCutter}. */
export interface LinkCutterOptions {
  /** Hold every chunk this long before relaying it (one way), as a slow network would. */
  readonly latencyMs?: number;
}

/** Start a {@linkcode LinkCutter} in front of `target` (`host:port`). */
export function linkCutter(target: string, options: LinkCutterOptions = {}): LinkCutter {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pairs = new Set<[Deno.TcpConn, Deno.TcpConn]>();
  let accepted = 0;
  const state = { frozen: null as PromiseWithResolvers<void> | null };
  const waiters = { toTarget: [] as (() => void)[], fromTarget: [] as (() => void)[] };
  const thawed = async () => {
    while (state.frozen) await state.frozen.promise;
  };
  const close = (pair: [Deno.TcpConn, Deno.TcpConn]) => {
    if (!pairs.delete(pair)) return;
    closeQuietly(pair[0]);
    closeQuietly(pair[1]);
  };
  const pump = async (
    from: Deno.TcpConn,
    to: Deno.TcpConn,
    pair: [Deno.TcpConn, Deno.TcpConn],
    direction: "toTarget" | "fromTarget",
  ) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (pairs.has(pair)) {
        await thawed();
        const n = await from.read(buf);
        if (options.latencyMs) await new Promise((r) => setTimeout(r, options.latencyMs));
        await thawed();
        if (n === null || !pairs.has(pair)) break;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
        for (const wake of waiters[direction].splice(0)) wake();
      }
      await to.closeWrite().catch(() => {});
    } catch {
      close(pair);
    }
  };
  const loop = (async () => {
    for await (const client of listener) {
      accepted++;
      let upstream: Deno.TcpConn;
      try {
        upstream = await Deno.connect(hostPort(target));
      } catch {
        closeQuietly(client);
        continue;
      }
      const pair: [Deno.TcpConn, Deno.TcpConn] = [client, upstream];
      pairs.add(pair);
      let ended = 0;
      const done = () => ++ended === 2 && close(pair);
      pump(client, upstream, pair, "toTarget").finally(done);
      pump(upstream, client, pair, "fromTarget").finally(done);
    }
  })().catch(() => {});
  const cutAll = () => {
    const n = pairs.size;
    for (const pair of [...pairs]) close(pair);
    return n;
  };
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    cut: cutAll,
    freeze() {
      state.frozen ??= Promise.withResolvers<void>();
    },
    thaw() {
      cutAll();
      const f = state.frozen;
      state.frozen = null;
      f?.resolve();
    },
    nextChunk(direction) {
      return new Promise((resolve) => waiters[direction].push(resolve));
    },
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      cutAll();
      const f = state.frozen;
      state.frozen = null;
      f?.resolve();
      await loop;
    },
  };
}

/** Fails with `what` when `promise` is not settled within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A loopback TCP port that is free now and outside Linux's ephemeral range
 * (32768-60999), so no process binding port 0 (every other test) can be given
 * it meanwhile: for a port a test binds later, or one where nothing must listen.
 */
export function spareTcpPort(): number {
  for (let i = 0; i < 500; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // Taken: try another.
    }
  }
  throw new Error("Cannot find a free TCP port in 20000-31999 on 127.0.0.1");
}
