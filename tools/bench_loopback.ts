// deno-lint-ignore-file no-console -- a bench script: its table is its output
/**
 * `deno task bench`: the same workloads, on loopback, through
 *
 * - direct (no tunnel),
 * - portferry (a Console and a Daemon as real processes, TLS on, auto-accept,
 *   with the permission flags of the `console` / `daemon` tasks),
 * - `socat` (a forking relay), `ssh -L` with aes128-gcm and with the default
 *   cipher, and `ssh -R` (its own sshd on a high port, its own config, host
 *   key and throwaway client key in a temp folder), when installed.
 *
 * Workloads: single-stream and 4-stream throughput both ways, RTT p50/p99 of
 * a 64-byte ping-pong, new connections per second with 32 workers (connect,
 * 1-byte echo, close), memory per idle forwarded connection, and for
 * portferry the time and Console RSS to enable a 10,000-port range PFO, and
 * (`pfos`, from tools/bench_pfos.ts) start-up, `pfo add` and a hand edit with
 * 10,000 single PFOs in the settings file (200 in `--smoke` mode).
 * Two portferry-only cases that are ratios (tools/bench_fairness.ts):
 * `fairness` (a stalled reader must not slow a second stream) and `udp-flood`
 * (a UDP flood must not halve a TCP transfer on another PFO). With only those
 * in `--workloads`, the bench runs just them (no load generator needed).
 * `udp` (tools/bench_udp.ts): UDP loss and jitter with iperf3 through
 * portferry beside direct at 100 Mbit/s, 300 Mbit/s and 1 Gbit/s; run alone
 * (`--workloads udp`) it rewrites only the UDP section of bench/RESULTS.md.
 * `--wan` runs the bench on emulated long paths instead (tools/bench_wan.ts,
 * with the link emulator tools/wan_link.ts): its own options follow it.
 *
 * The bench runs with the `bench` task's explicit permission flags. Deno lets
 * a script read `/proc` only with `--allow-all`, so VmRSS, Pss, CPU ticks, the
 * process tree and the machine's details come from `ls /proc` and
 * `cat /proc/...` in child processes, as in tools/stress_ports.ts.
 * `--allow-run` names every program the bench starts: `deno` (the Console,
 * the Daemon and their CLI), `sh` (it sends a tunnel's output to a log file,
 * so this process drains no pipe; `sh` can start anything, so the list says
 * what runs rather than fencing it), `cat` and `ls`, `cc` or `gcc` and the
 * load generator they build (`./dist/bench-loadgen`: a fixed path, relative to
 * the project folder where `deno task` runs), `socat`, `ssh`, `sshd`,
 * `ssh-keygen` and `id`. `--allow-run=deno` names the `deno` on PATH: the bench
 * spawns its own executable when the flag covers it, else that `deno`. The
 * Console and Daemon it spawns keep their tasks' flags.
 *
 * The load generator and target server are a small C program
 * (`bench/loadgen.c`), compiled at bench time with the system's C compiler
 * into `dist/bench-loadgen`: a Deno client on the same two cores would cost
 * the tunnel CPU.
 *
 * Prints a table (each figure and its ratio to the best other tool in the
 * same run), writes JSON (`bench/results/latest.json` unless `--json`), and
 * after a full run `bench/RESULTS.md`. `--smoke` runs every workload tiny.
 *
 * ```sh
 * deno task bench [--smoke] [--seconds S] [--repeat N] [--idle N] [--idle-10k]
 *                 [--ports N] [--tools direct,portferry,socat,ssh-L-aes,ssh-L,ssh-R]
 *                 [--workloads up1,down1,up4,down4,rtt,connrate,idle,ports,pfos,fairness,udp-flood]
 *                 [--json FILE] [--markdown FILE | --no-markdown] [--cpu-prof DIR]
 * ```
 *
 * @module
 */

import { benchPfos, type PfoBenchResult } from "./bench_pfos.ts";
import { caseLine, CASES, runCases } from "./bench_fairness.ts";
import { benchUdp, markedUdpSection, udpSection, writeUdpSection } from "./bench_udp.ts";
import { keepWanSection } from "./_bench_sections.ts";

const ROOT = new URL("../", import.meta.url);
export const ROOT_PATH = ROOT.pathname;
const decoder = new TextDecoder();

/**
 * The Deno that runs the Console and Daemon: this one when `--allow-run` covers
 * its path, else the `deno` on PATH that `--allow-run=deno` names (PATH's
 * `deno` may be a symlink to this one, as an npm install makes it).
 */
export const DENO = Deno.permissions.querySync({ name: "run", command: Deno.execPath() }).state ===
    "granted"
  ? Deno.execPath()
  : "deno";

/** Where the load generator is built: a fixed path, which the task's `--allow-run` names. */
const LOADGEN = `${ROOT_PATH}dist/bench-loadgen`;

// ------------------------------------------------------------------ options

/** What one run measures. */
interface BenchOptions {
  smoke: boolean;
  /** Seconds per throughput / RTT / connection-rate measurement. */
  seconds: number;
  /** Runs per measurement; the median is kept. */
  repeat: number;
  /** Idle connections held for the memory figure. */
  idle: number[];
  /** Ports in the PFO range for the enable-time figure. */
  ports: number;
  /** First port of that range, when free (else a random free run is used). */
  portBase: number | null;
  tools: string[] | null;
  /** Only these workloads (up1, down1, up4, down4, rtt, connrate, idle, ports, pfos); null: all. */
  workloads: string[] | null;
  json: string;
  markdown: string | null;
  cpuProf: string | null;
}

const ALL_TOOLS = ["direct", "portferry", "portferry-ws", "socat", "ssh-L-aes", "ssh-L", "ssh-R"];

function parseArgs(args: string[]): BenchOptions {
  const o: BenchOptions = {
    smoke: false,
    seconds: 3,
    repeat: 3,
    idle: [1000],
    ports: 10_000,
    portBase: null,
    tools: null,
    workloads: null,
    json: `${ROOT_PATH}bench/results/latest.json`,
    markdown: `${ROOT_PATH}bench/RESULTS.md`,
    cpuProf: null,
  };
  let jsonSet = false;
  let markdownSet = false;
  const value = (i: number) => {
    if (i >= args.length) throw new Error(`Cannot parse arguments: ${args[i - 1]} needs a value`);
    return args[i];
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    switch (a) {
      case "--smoke":
        o.smoke = true;
        break;
      case "--seconds":
        o.seconds = Number(value(++i));
        break;
      case "--repeat":
        o.repeat = Number(value(++i));
        break;
      case "--idle":
        o.idle = value(++i).split(",").map(Number);
        break;
      case "--idle-10k":
        o.idle = [...new Set([...o.idle, 10_000])];
        break;
      case "--ports":
        o.ports = Number(value(++i));
        break;
      case "--port-base":
        o.portBase = Number(value(++i));
        break;
      case "--tools":
        o.tools = value(++i).split(",");
        break;
      case "--workloads":
        o.workloads = value(++i).split(",");
        break;
      case "--json":
        o.json = value(++i);
        jsonSet = true;
        break;
      case "--markdown":
        o.markdown = value(++i);
        markdownSet = true;
        break;
      case "--no-markdown":
        o.markdown = null;
        markdownSet = true;
        break;
      case "--cpu-prof":
        o.cpuProf = value(++i);
        break;
      case "--help":
      case "-h":
        console.log(
          "usage: deno task bench [--smoke] [--seconds S] [--repeat N] [--idle N[,N]] [--idle-10k]\n" +
            "         [--ports N] [--port-base P] [--tools " + ALL_TOOLS.join(",") + "]\n" +
            "         [--workloads up1,down1,up4,down4,rtt,connrate,idle,ports,pfos,fairness,udp-flood]\n" +
            "         [--json FILE] [--markdown FILE | --no-markdown] [--cpu-prof DIR]\n" +
            "       deno task bench --wan [--profile 1g-20ms,100m-100ms,10g-1ms,ceiling] [--smoke]\n" +
            "         [--tools direct,portferry,ssh-L-aes,ssh-R] [--workloads up1,down1,up4,down4,conn]",
        );
        Deno.exit(0);
        break;
      default:
        throw new Error(`Cannot parse arguments: unknown "${a}" (see --help)`);
    }
  }
  if (o.smoke) {
    o.seconds = Math.min(o.seconds, 0.3);
    o.repeat = 1;
    o.idle = [20];
    o.ports = Math.min(o.ports, 200);
    if (!jsonSet) o.json = `${ROOT_PATH}bench/results/smoke.json`;
    if (!markdownSet) o.markdown = null;
  }
  for (const t of o.tools ?? []) {
    if (!ALL_TOOLS.includes(t)) throw new Error(`Cannot parse arguments: unknown tool "${t}"`);
  }
  if (!(o.seconds > 0 && o.seconds <= 60)) throw new Error("--seconds must be in (0, 60]");
  if (!(o.repeat >= 1 && o.repeat <= 9)) throw new Error("--repeat must be 1..9");
  if (o.idle.some((n) => !(n >= 1 && n <= 10_000))) throw new Error("--idle must be 1..10000");
  if (!(o.ports >= 1 && o.ports <= 10_000)) throw new Error("--ports must be 1..10000");
  return o;
}

// ---------------------------------------------------------------- processes

/** Every process this bench started, so it can stop them (by pid) on any exit. */
export const children = new Set<Deno.ChildProcess>();

export function kill(child: Deno.ChildProcess, signal: Deno.Signal = "SIGKILL"): void {
  try {
    child.kill(signal);
  } catch {
    // Exited already.
  }
}

export async function stopChild(child: Deno.ChildProcess, graceMs = 3000): Promise<void> {
  kill(child, "SIGTERM");
  const timer = setTimeout(() => kill(child), graceMs);
  try {
    await child.status;
  } finally {
    clearTimeout(timer);
    children.delete(child);
  }
}

/** Spawn `cmd` with stdout and stderr going to `log` (a file: no pipe for this process to drain). */
export function spawnLogged(
  cmd: string,
  args: string[],
  log: string,
  options: { env?: Record<string, string>; stdin?: "piped" | "null" } = {},
): Deno.ChildProcess {
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" >"$PF_BENCH_LOG" 2>&1', "sh", cmd, ...args],
    cwd: ROOT,
    stdin: options.stdin ?? "null",
    stdout: "null",
    stderr: "null",
    env: { NO_COLOR: "1", PF_BENCH_LOG: log, ...options.env },
  }).spawn();
  children.add(child);
  return child;
}

export async function waitForLine(
  log: string,
  re: RegExp,
  ms: number,
  child?: Deno.ChildProcess,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  let exited = false;
  child?.status.then(() => (exited = true));
  while (true) {
    let text = "";
    try {
      text = await Deno.readTextFile(log);
    } catch {
      // Not created yet.
    }
    const m = text.match(re);
    if (m) return m;
    if (exited || Date.now() > deadline) {
      throw new Error(
        `Timed out waiting for ${re} in ${log}${exited ? " (the process exited)" : ""}:\n${
          text.split("\n").slice(-15).join("\n")
        }`,
      );
    }
    await delay(20);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function which(cmd: string): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      const path = `${dir}/${cmd}`;
      const info = await Deno.stat(path);
      if (info.isFile && (info.mode ?? 0o111) & 0o111) return path;
    } catch {
      // Not there.
    }
  }
  return null;
}

async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim();
  } catch {
    return "";
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Connect, send 'E', expect it back: proves a tunnel carries bytes end to end. */
async function echoOnce(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new Uint8Array([0x45]));
    const buf = new Uint8Array(1);
    const timer = setTimeout(() => conn?.close(), 2000);
    const n = await conn.read(buf);
    clearTimeout(timer);
    return n === 1 && buf[0] === 0x45;
  } catch {
    return false;
  } finally {
    try {
      conn?.close();
    } catch {
      // Closed by the timer.
    }
  }
}

async function waitForEcho(port: number, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await echoOnce(port)) return;
    await delay(50);
  }
  throw new Error(`Cannot reach the target through ${what} on port ${port} within ${ms} ms`);
}

// ------------------------------------------------------------------- memory

/**
 * The text of `paths` (/proc files) through `cat`: Deno reads `/proc` only
 * with `--allow-all`. A file that is gone (its process exited) is left out.
 */
export async function catProc(paths: string[]): Promise<string> {
  if (paths.length === 0) return "";
  const out = await new Deno.Command("cat", {
    args: paths,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  return decoder.decode(out.stdout);
}

/** Parent and CPU ticks of a process, from /proc/PID/stat. */
interface ProcStat {
  readonly ppid: number;
  /** utime, stime, and the same for children already reaped (socat's forks). */
  readonly ticks: number;
}

/** /proc/PID/stat of every process now running. */
async function procStats(): Promise<Map<number, ProcStat>> {
  const ls = await new Deno.Command("ls", {
    args: ["/proc"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pids = decoder.decode(ls.stdout).split("\n").filter((n) => /^\d+$/.test(n));
  const out = new Map<number, ProcStat>();
  for (const line of (await catProc(pids.map((pid) => `/proc/${pid}/stat`))).split("\n")) {
    const close = line.lastIndexOf(")");
    const pid = Number(line.slice(0, line.indexOf(" ")));
    if (close < 0 || !Number.isInteger(pid)) continue;
    const fields = line.slice(close + 2).split(" ");
    out.set(pid, {
      ppid: Number(fields[1]),
      ticks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]),
    });
  }
  return out;
}

/** `pids` and all their descendants. */
function processTree(stats: Map<number, ProcStat>, pids: number[]): number[] {
  const out = new Set(pids);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, { ppid }] of stats) {
      if (!out.has(pid) && out.has(ppid)) {
        out.add(pid);
        grew = true;
      }
    }
  }
  return [...out];
}

/** KiB of VmRSS and of Pss summed over a process tree. */
async function treeMemory(
  pids: number[],
): Promise<{ rssKiB: number; pssKiB: number; processes: number }> {
  const tree = processTree(await procStats(), pids);
  // One `cat` for the lot (socat forks one process per connection): each
  // status (first line "Name:") is followed by its smaps_rollup (first line
  // "… [rollup]") unless that process has exited in between.
  const text = await catProc(
    tree.flatMap((pid) => [`/proc/${pid}/status`, `/proc/${pid}/smaps_rollup`]),
  );
  const procs: { rss?: number; pss?: number }[] = [];
  let rollup = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("Name:")) {
      procs.push({});
      rollup = false;
      continue;
    }
    if (line.endsWith("[rollup]")) {
      rollup = true;
      continue;
    }
    const current = procs.at(-1);
    const m = line.match(/^(VmRSS|Pss):\s+(\d+) kB/);
    if (!current || !m) continue;
    if (m[1] === "VmRSS" && !rollup) current.rss = Number(m[2]);
    if (m[1] === "Pss" && rollup) current.pss ??= Number(m[2]);
  }
  let rssKiB = 0;
  let pssKiB = 0;
  let processes = 0;
  for (const { rss, pss } of procs) {
    if (rss === undefined) continue; // A kernel thread.
    processes++;
    rssKiB += rss;
    pssKiB += pss ?? rss;
  }
  return { rssKiB, pssKiB, processes };
}

/** CPU seconds (user + system) used so far by a process tree, reaped children included. */
async function treeCpuSeconds(pids: number[]): Promise<number> {
  const stats = await procStats();
  let ticks = 0;
  for (const pid of processTree(stats, pids)) ticks += stats.get(pid)?.ticks ?? 0;
  return ticks / 100; // USER_HZ
}

async function rssKiB(pid: number): Promise<number> {
  const m = (await catProc([`/proc/${pid}/status`])).match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) : NaN;
}

// ----------------------------------------------------------------- loadgen

/**
 * Build `bench/loadgen.c` into {@linkcode LOADGEN}. The compiler writes it:
 * Deno lets no script write a program its `--allow-run` names. The linker
 * unlinks the old file first, so a loadgen another bench runs is undisturbed.
 */
export async function buildLoadgen(): Promise<string> {
  const cc = (await which("cc")) ?? (await which("gcc"));
  if (!cc) {
    throw new Error("Cannot build the load generator: no C compiler (cc or gcc); install gcc");
  }
  await Deno.mkdir(LOADGEN.slice(0, LOADGEN.lastIndexOf("/")), { recursive: true });
  const r = await new Deno.Command(cc, {
    args: ["-O2", "-pthread", "-o", LOADGEN, `${ROOT_PATH}bench/loadgen.c`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(`Cannot build the load generator with ${cc}:\n${decoder.decode(r.stderr)}`);
  }
  return LOADGEN;
}

export class Loadgen {
  constructor(readonly path: string) {}

  async run(args: string[], budgetMs: number): Promise<Record<string, number>> {
    const child = new Deno.Command(this.path, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    children.add(child);
    const timer = setTimeout(() => kill(child), budgetMs);
    const r = await child.output();
    clearTimeout(timer);
    children.delete(child);
    const text = decoder.decode(r.stdout).trim();
    const line = text.split("\n").pop() ?? "";
    if (!line.startsWith("{")) {
      throw new Error(
        `loadgen ${args.join(" ")} failed (${r.code}): ${text} ${decoder.decode(r.stderr)}`,
      );
    }
    return JSON.parse(line);
  }

  /** Start the target server; resolves with its port. */
  async serve(dir: string): Promise<{ port: number; stop: () => Promise<void> }> {
    const log = `${dir}/target.log`;
    const child = spawnLogged(this.path, ["serve"], log, { stdin: "piped" });
    const [, port] = await waitForLine(log, /^port (\d+)$/m, 10_000, child);
    return {
      port: Number(port),
      stop: async () => {
        await child.stdin.close().catch(() => {});
        await stopChild(child, 1000);
      },
    };
  }

  /** Hold `count` echo-checked connections; `during` runs while they are held. */
  async hold<T>(
    port: number,
    count: number,
    budgetS: number,
    during: () => Promise<T>,
  ): Promise<{ held: number; errors: number; alive: number; during: T }> {
    const child = new Deno.Command(this.path, {
      args: ["hold", String(port), String(count), String(budgetS)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    children.add(child);
    const timer = setTimeout(() => kill(child), (2 * budgetS + 70) * 1000);
    const reader = child.stdout.getReader();
    let text = "";
    try {
      while (!/held \d+ errors \d+\n/.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`loadgen hold ended early: ${text}`);
        text += decoder.decode(value);
      }
      const result = await during();
      const writer = child.stdin.getWriter();
      await writer.write(new Uint8Array([10]));
      await writer.close();
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value);
      }
      const json = JSON.parse(text.trim().split("\n").pop()!);
      return { ...json, during: result };
    } finally {
      clearTimeout(timer);
      kill(child);
      await child.status;
      await child.stderr.cancel().catch(() => {});
      children.delete(child);
    }
  }
}

// -------------------------------------------------------------------- paths

/** A running path from the load generator to the target. */
export interface Running {
  /** Where clients connect. */
  readonly port: number;
  /** Processes whose memory the idle figure counts (and their children). */
  readonly pids: number[];
  readonly stop: () => Promise<void>;
}

export interface PathDef {
  readonly name: string;
  readonly label: string;
  /** "rss": VmRSS summed; "pss": Pss summed (forking tools share pages). */
  readonly memory: "rss" | "pss" | null;
  start(target: number, dir: string): Promise<Running>;
}

async function taskFlags(task: "console" | "daemon"): Promise<string[]> {
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

/** Profiles written so far (`--cpu-prof`): names them apart. */
let profiles = 0;

/** A Console on a temp settings file, spawned as `deno task console` would run it. */
async function spawnConsole(
  dir: string,
  args: string[],
  profDir: string | null,
): Promise<{ child: Deno.ChildProcess; log: string; settings: string }> {
  const settings = `${dir}/portferry-console.yaml`;
  // Logs go beside, not into, the settings folder: the Console watches that
  // folder, and a log line there would wake its settings watcher every time.
  const log = `${dir}.console.log`;
  const prof = profDir
    ? [
      "--cpu-prof",
      `--cpu-prof-dir=${profDir}`,
      `--cpu-prof-name=console-${++profiles}.cpuprofile`,
    ]
    : [];
  const child = spawnLogged(DENO, [
    "run",
    ...prof,
    ...await taskFlags("console"),
    "console.ts",
    "--config",
    settings,
    "--session",
    "127.0.0.1:0",
    "--headless",
    ...args,
  ], log);
  return { child, log, settings };
}

async function consoleCli(settings: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(DENO, {
    args: ["run", ...await taskFlags("console"), "console.ts", "--config", settings, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!r.success) {
    throw new Error(
      `console ${args.join(" ")} failed (${r.code}): ${decoder.decode(r.stderr)}${
        decoder.decode(r.stdout)
      }`,
    );
  }
  return decoder.decode(r.stdout);
}

/**
 * Where a path's long-lived link goes through a link emulator (the WAN mode,
 * tools/bench_wan.ts): given the port its far end listens on, the port to dial.
 */
export type Via = (port: number) => Promise<number>;

export function portferryPath(
  profDir: string | null,
  via?: Via,
  consoleAddress: (address: string) => string = (address) => address,
): PathDef {
  return {
    name: "portferry",
    label: "portferry (TLS)",
    memory: "rss",
    async start(target, dir) {
      const con = await spawnConsole(dir, ["--auto-accept"], profDir);
      let daemon: Deno.ChildProcess | undefined;
      try {
        const [, fingerprint] = await waitForLine(
          con.log,
          /fingerprint: (SHA256:\S+)/,
          20_000,
          con.child,
        );
        const [, address] = await waitForLine(
          con.log,
          /Console listening for Daemons on (\S+)/,
          20_000,
          con.child,
        );
        const dlog = `${dir}.daemon.log`;
        const prof = profDir
          ? [
            "--cpu-prof",
            `--cpu-prof-dir=${profDir}`,
            `--cpu-prof-name=daemon-${profiles}.cpuprofile`,
          ]
          : [];
        const dial = via
          ? `127.0.0.1:${await via(Number(address.slice(address.lastIndexOf(":") + 1)))}`
          : address;
        daemon = spawnLogged(
          DENO,
          [
            "run",
            ...prof,
            ...await taskFlags("daemon"),
            "daemon.ts",
            consoleAddress(dial),
            "--fingerprint",
            fingerprint,
            "--config",
            `${dir}/portferry-daemon.yaml`,
            "--headless",
          ],
          dlog,
          { env: { USER: Deno.env.get("USER") ?? "bench" } },
        );
        await waitForLine(dlog, /Session established|session established/, 20_000, daemon);
        await waitForLine(con.log, /session established/i, 20_000, con.child);
        await consoleCli(con.settings, [
          "pfo",
          "add",
          "bench",
          "--listen",
          "127.0.0.1:0",
          "--target",
          `127.0.0.1:${target}`,
        ]);
        const status = JSON.parse(await consoleCli(con.settings, ["status", "--json"]));
        const bound: string = status.pfos.find((p: { name: string }) => p.name === "bench")
          .bound[0];
        const port = Number(bound.slice(bound.lastIndexOf(":") + 1));
        await waitForEcho(port, 10_000, "portferry");
        const d = daemon;
        return {
          port,
          pids: [con.child.pid, d.pid],
          stop: async () => {
            await stopChild(d, 8000);
            await stopChild(con.child, 8000);
          },
        };
      } catch (err) {
        if (daemon) await stopChild(daemon, 500);
        await stopChild(con.child, 500);
        throw err;
      }
    },
  };
}

// --- portferry over WebSocket -----------------------------------------------------

/** portferry with the Daemon dialing `ws://` straight to the session port (no web server). */
function portferryWsPath(profDir: string | null): PathDef {
  const base = portferryPath(profDir, undefined, (address) => `ws://${address}/portferry`);
  return { ...base, name: "portferry-ws", label: "portferry over ws" };
}

/** The WebSocket layer's cost: portferry over ws against plain TLS, in the same run. */
function websocketCostLines(results: PathResult[]): string[] {
  const tls = results.find((r) => r.name === "portferry");
  const ws = results.find((r) => r.name === "portferry-ws");
  if (!tls || !ws || ws.skipped) return [];
  const lines = ["portferry over ws / portferry (TLS), same run:", ""];
  for (const key of ["up1", "down1", "connRate", "rttP50"]) {
    const col = COLUMNS.find((c) => c.key === key);
    const a = ws.figures[key]?.value;
    const b = tls.figures[key]?.value;
    if (!col || a === undefined || b === undefined) continue;
    lines.push(
      `- ${col.title}: ${fmt(a, col.digits)} vs ${fmt(b, col.digits)} ${col.unit} (${
        (a / b).toFixed(2)
      }×)`,
    );
  }
  return lines;
}

function directPath(): PathDef {
  return {
    name: "direct",
    label: "direct loopback",
    memory: null,
    start: (target) => Promise.resolve({ port: target, pids: [], stop: () => Promise.resolve() }),
  };
}

function socatPath(socat: string): PathDef {
  return {
    name: "socat",
    label: "socat relay",
    memory: "pss",
    async start(target, dir) {
      const port = freePort();
      const child = spawnLogged(socat, [
        `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,backlog=4096`,
        `TCP:127.0.0.1:${target}`,
      ], `${dir}/socat.log`);
      try {
        await waitForEcho(port, 10_000, "socat");
      } catch (err) {
        await stopChild(child, 500);
        throw err;
      }
      return { port, pids: [child.pid], stop: () => stopChild(child, 2000) };
    },
  };
}

/** An sshd of our own: high port, own config, host key and client key, in `dir`. */
export interface Sshd {
  readonly port: number;
  readonly pid: number;
  readonly key: string;
  readonly user: string;
  stop(): Promise<void>;
}

export async function startSshd(sshd: string, keygen: string, dir: string): Promise<Sshd> {
  const hostKey = `${dir}/host_ed25519`;
  const clientKey = `${dir}/client_ed25519`;
  for (const key of [hostKey, clientKey]) {
    const r = await new Deno.Command(keygen, {
      args: ["-q", "-t", "ed25519", "-N", "", "-C", "portferry-bench", "-f", key],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!r.success) throw new Error(`ssh-keygen failed: ${decoder.decode(r.stderr)}`);
  }
  await Deno.copyFile(`${clientKey}.pub`, `${dir}/authorized_keys`);
  const port = freePort();
  const config = `${dir}/sshd_config`;
  await Deno.writeTextFile(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${dir}/sshd.pid`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "StrictModes no",
      "UsePAM no",
      "AllowTcpForwarding yes",
      "GatewayPorts no",
      "PermitOpen any",
      "PermitListen any",
      "MaxStartups 100:30:200",
      "ClientAliveInterval 0",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  if (Deno.uid() === 0) await Deno.mkdir("/run/sshd", { recursive: true }).catch(() => {});
  const log = `${dir}/sshd.log`;
  const child = spawnLogged(sshd, ["-D", "-e", "-f", config], log);
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      const buf = new Uint8Array(64);
      const n = await c.read(buf);
      c.close();
      if (n && decoder.decode(buf.subarray(0, n)).startsWith("SSH-")) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stopChild(child, 500);
      throw new Error(`sshd did not start: ${await Deno.readTextFile(log).catch(() => "")}`);
    }
    await delay(50);
  }
  const user = (await output("id", ["-un"])) || "root";
  return { port, pid: child.pid, key: clientKey, user, stop: () => stopChild(child, 2000) };
}

export function sshPath(
  ssh: string,
  sshd: () => Promise<Sshd>,
  name: string,
  label: string,
  mode: "L" | "R",
  cipher: string | null,
  via?: Via,
): PathDef {
  return {
    name,
    label,
    memory: "rss",
    async start(target, dir) {
      const server = await sshd();
      const port = freePort();
      const forward = mode === "L"
        ? ["-L", `127.0.0.1:${port}:127.0.0.1:${target}`]
        : ["-R", `127.0.0.1:${port}:127.0.0.1:${target}`];
      const child = spawnLogged(ssh, [
        "-N",
        "-F",
        "/dev/null",
        "-i",
        server.key,
        "-p",
        String(via ? await via(server.port) : server.port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "LogLevel=ERROR",
        ...(cipher ? ["-o", `Ciphers=${cipher}`] : []),
        ...forward,
        `${server.user}@127.0.0.1`,
      ], `${dir}/ssh-${name}.log`);
      try {
        await waitForEcho(port, 15_000, `ssh -${mode}`);
      } catch (err) {
        await stopChild(child, 500);
        throw new Error(
          `${errorText(err)}\nssh: ${await Deno.readTextFile(`${dir}/ssh-${name}.log`)}`,
        );
      }
      return { port, pids: [child.pid, server.pid], stop: () => stopChild(child, 2000) };
    },
  };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------- workloads

interface Figure {
  readonly value: number;
  readonly runs: number[];
  readonly extra?: Record<string, unknown>;
}

interface Column {
  readonly key: string;
  readonly title: string;
  readonly unit: string;
  readonly higherIsBetter: boolean;
  readonly digits: number;
}

const COLUMNS: Column[] = [
  { key: "up1", title: "1-stream up", unit: "Gbit/s", higherIsBetter: true, digits: 2 },
  { key: "down1", title: "1-stream down", unit: "Gbit/s", higherIsBetter: true, digits: 2 },
  { key: "up4", title: "4-stream up", unit: "Gbit/s", higherIsBetter: true, digits: 2 },
  { key: "down4", title: "4-stream down", unit: "Gbit/s", higherIsBetter: true, digits: 2 },
  { key: "rttP50", title: "RTT p50", unit: "µs", higherIsBetter: false, digits: 0 },
  { key: "rttP99", title: "RTT p99", unit: "µs", higherIsBetter: false, digits: 0 },
  { key: "connRate", title: "conn/s (32)", unit: "conn/s", higherIsBetter: true, digits: 0 },
  { key: "idle", title: "KiB/idle conn", unit: "KiB", higherIsBetter: false, digits: 1 },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The traffic workloads, in the order they run. */
const TRAFFIC = ["up1", "down1", "up4", "down4", "rtt", "connrate"] as const;
type Traffic = typeof TRAFFIC[number];

/** One run of one traffic workload through `running`: its figure and the tunnel's CPU cost. */
async function trafficOnce(
  lg: Loadgen,
  running: Running,
  workload: Traffic,
  o: BenchOptions,
): Promise<{ value: number; p99?: number; extra: Record<string, number> }> {
  const port = String(running.port);
  const budget = (o.seconds + 30) * 1000;
  const cpu0 = await treeCpuSeconds(running.pids);
  const cpu = async () => (await treeCpuSeconds(running.pids)) - cpu0;
  const seconds = String(o.seconds);
  if (workload === "rtt") {
    const r = await lg.run(["rtt", port, "200000", seconds], budget);
    return {
      value: r.p50_us,
      p99: r.p99_us,
      extra: { cpuUsPerRoundTrip: ((await cpu()) / r.count) * 1e6 },
    };
  }
  if (workload === "connrate") {
    const r = await lg.run(["connrate", port, "32", seconds], budget);
    return {
      value: r.per_second,
      extra: { errors: r.errors, cpuUsPerConnection: ((await cpu()) / r.connections) * 1e6 },
    };
  }
  const dir = workload.startsWith("up") ? "up" : "down";
  const streams = workload.endsWith("4") ? "4" : "1";
  const r = await lg.run(["tput", dir, port, streams, seconds], budget);
  if (r.errors) throw new Error(`throughput ${workload}: ${r.errors} stream(s) failed`);
  // The tunnel's CPU per GB carried: steadier than Gbit/s on a shared machine.
  return { value: r.gbps, extra: { cpuSecondsPerGB: (await cpu()) / (r.bytes / 1e9) } };
}

/** Median figure of several runs, with the median of each CPU figure. */
function summarise(
  runs: { value: number; extra: Record<string, number> }[],
): Figure {
  const extra: Record<string, number> = {};
  for (const key of Object.keys(runs[0]?.extra ?? {})) {
    extra[key] = median(runs.map((r) => r.extra[key]));
  }
  return { value: median(runs.map((r) => r.value)), runs: runs.map((r) => r.value), extra };
}

async function idleMemory(
  lg: Loadgen,
  path: PathDef,
  target: number,
  count: number,
  dir: string,
  log: (s: string) => void,
): Promise<Figure> {
  const running = await path.start(target, dir);
  try {
    // Warm up: a few connections through, so one-time allocations are in the baseline.
    for (let i = 0; i < 5; i++) await echoOnce(running.port);
    await delay(300);
    const before = await treeMemory(running.pids);
    const budgetS = Math.max(30, count / 100);
    const held = await lg.hold(running.port, count, budgetS, async () => {
      // Let the tunnel settle (lazy frees, GC) but keep it bounded.
      let last = await treeMemory(running.pids);
      for (let i = 0; i < 10; i++) {
        await delay(200);
        const now = await treeMemory(running.pids);
        if (Math.abs(now.rssKiB - last.rssKiB) < 64) return now;
        last = now;
      }
      return last;
    });
    if (held.held === 0) {
      throw new Error(`no idle connection could be held (${held.errors} failed)`);
    }
    const shortfall = held.held < count || held.alive < held.held
      ? `only ${held.held} of ${count} idle connections held, ${held.alive} still alive at the end`
      : null;
    const during = held.during;
    const pick = (m: { rssKiB: number; pssKiB: number }) =>
      path.memory === "pss" ? m.pssKiB : m.rssKiB;
    const perConn = (pick(during) - pick(before)) / Math.max(1, held.held);
    log(
      `idle ${held.held}/${count} held (${held.alive} alive at the end), ` +
        `${(pick(before) / 1024).toFixed(1)} → ${(pick(during) / 1024).toFixed(1)} MiB ` +
        `${path.memory?.toUpperCase()} in ${during.processes} process(es): ${
          perConn.toFixed(1)
        } KiB each`,
    );
    return {
      value: perConn,
      runs: [perConn],
      extra: {
        count,
        held: held.held,
        errors: held.errors,
        alive: held.alive,
        metric: path.memory,
        shortfall,
        beforeKiB: pick(before),
        duringKiB: pick(during),
        processes: during.processes,
      },
    };
  } finally {
    await running.stop();
  }
}

interface PortsResult {
  ports: number;
  /** Console spawn → ready and "PFO listening", with the settings file holding the range. */
  startupMs: number;
  /** Console spawn → ready, with no PFO (the baseline start-up). */
  baselineStartupMs: number;
  /** `pfo add` of the range on a running Console, until the CLI returns. */
  addMs: number;
  /** Console VmRSS with the range listening (the larger of the two ways), and without. */
  rssMiB: number;
  baselineRssMiB: number;
  listeners: number;
}

/** A run of `n` free ports on 127.0.0.1 below the ephemeral range: `preferred` if free, else a random one. */
function freeRange(n: number, preferred: number | null): number {
  const free = (base: number) => {
    const held: Deno.Listener[] = [];
    try {
      for (let p = base; p < base + n; p++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: p }));
      }
      return true;
    } catch {
      return false;
    } finally {
      for (const l of held) l.close();
    }
  };
  if (preferred !== null && free(preferred)) return preferred;
  for (let i = 0; i < 20; i++) {
    const base = 10_000 + Math.floor(Math.random() * (32_768 - 10_000 - n));
    if (free(base)) return base;
  }
  throw new Error(`Cannot find ${n} free consecutive ports on 127.0.0.1`);
}

async function enablePorts(o: BenchOptions, target: number, dir: string): Promise<PortsResult> {
  const settle = async (pid: number) => {
    await delay(300);
    return (await rssKiB(pid)) / 1024;
  };
  const listening = async (settings: string) => {
    const status = JSON.parse(await consoleCli(settings, ["status", "--json"]));
    return status.pfos.find((p: { name: string }) => p.name === "range").listeners as number;
  };

  // A Console with no PFO, then `pfo add` of the range while it runs.
  let base = freeRange(o.ports, o.portBase);
  let range = `${base}-${base + o.ports - 1}`;
  const baseDir = await Deno.makeTempDir({ dir, prefix: "ports-base-" });
  let t0 = performance.now();
  const running = await spawnConsole(baseDir, [], null);
  let baselineStartupMs: number, baselineRssMiB: number, addMs: number, addRssMiB: number;
  let listeners: number;
  try {
    await waitForLine(running.log, /console ready/, 30_000, running.child);
    baselineStartupMs = performance.now() - t0;
    baselineRssMiB = await settle(running.child.pid);
    t0 = performance.now();
    await consoleCli(running.settings, [
      "pfo",
      "add",
      "range",
      "--listen",
      `127.0.0.1:${range}`,
      "--target",
      `127.0.0.1:${target}`,
    ]);
    addMs = performance.now() - t0;
    addRssMiB = await settle(running.child.pid);
    listeners = await listening(running.settings);
  } finally {
    await stopChild(running.child, 8000);
  }

  // A Console started with the range in its settings file.
  base = freeRange(o.ports, base);
  range = `${base}-${base + o.ports - 1}`;
  const fileDir = await Deno.makeTempDir({ dir, prefix: "ports-file-" });
  await Deno.writeTextFile(
    `${fileDir}/portferry-console.yaml`,
    [
      "pfos:",
      "  - name: range",
      `    listen: "127.0.0.1:${range}"`,
      `    target: "127.0.0.1:${target}"`,
      "    enabled: true",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  t0 = performance.now();
  const withFile = await spawnConsole(fileDir, [], null);
  let startupMs: number, rssMiB: number;
  try {
    const [line] = await waitForLine(
      withFile.log,
      /PFO listening|PFO ports failed.*/,
      60_000,
      withFile.child,
    );
    if (line.startsWith("PFO ports failed")) throw new Error(line);
    await waitForLine(withFile.log, /console ready/, 30_000, withFile.child);
    startupMs = performance.now() - t0;
    rssMiB = await settle(withFile.child.pid);
    listeners = Math.min(listeners, await listening(withFile.settings));
  } finally {
    await stopChild(withFile.child, 8000);
  }
  return {
    ports: o.ports,
    startupMs,
    baselineStartupMs,
    addMs,
    rssMiB: Math.max(rssMiB, addRssMiB),
    baselineRssMiB,
    listeners,
  };
}

// ------------------------------------------------------------------- report

interface PathResult {
  readonly name: string;
  readonly label: string;
  readonly figures: Record<string, Figure>;
  readonly skipped?: string;
  readonly errors: string[];
}

function fmt(value: number, digits: number): string {
  if (!Number.isFinite(value)) return "—";
  if (digits === 0) return Math.round(value).toLocaleString("en-US");
  return value.toFixed(digits);
}

/** The best figure of any tool other than `self` and "direct" (the baseline, not a tool). */
function bestOther(results: PathResult[], self: string, col: Column): number | null {
  let best: number | null = null;
  for (const r of results) {
    if (r.name === self || r.name === "direct") continue;
    // portferry over ws is portferry too: each is compared with the other tools.
    if (r.name.startsWith("portferry") && self.startsWith("portferry")) continue;
    const v = r.figures[col.key]?.value;
    if (v === undefined || !Number.isFinite(v)) continue;
    if (best === null || (col.higherIsBetter ? v > best : v < best)) best = v;
  }
  return best;
}

/** What each tunnel's processes spent: CPU per GB, per round trip, per connection. */
function cpuTable(results: PathResult[]): string {
  const cols: [string, string, string][] = [
    ["up1", "cpuSecondsPerGB", "CPU s/GB 1-stream up"],
    ["down1", "cpuSecondsPerGB", "CPU s/GB 1-stream down"],
    ["up4", "cpuSecondsPerGB", "CPU s/GB 4-stream up"],
    ["down4", "cpuSecondsPerGB", "CPU s/GB 4-stream down"],
    ["rttP50", "cpuUsPerRoundTrip", "CPU µs/round trip"],
    ["connRate", "cpuUsPerConnection", "CPU µs/connection"],
  ];
  const rows = results.filter((r) => !r.skipped && r.name !== "direct").map((r) => [
    r.label,
    ...cols.map(([key, field]) => {
      const v = r.figures[key]?.extra?.[field];
      return typeof v === "number"
        ? v.toFixed(key === "rttP50" || key === "connRate" ? 0 : 2)
        : "—";
    }),
  ]);
  const head = ["path", ...cols.map((c) => c[2])];
  return [head, head.map(() => "---"), ...rows].map((c) => `| ${c.join(" | ")} |`).join("\n");
}

function table(results: PathResult[]): string {
  const head = ["path", ...COLUMNS.map((c) => `${c.title} (${c.unit})`)];
  const rows = results.filter((r) => !r.skipped).map((r) => [
    r.label,
    ...COLUMNS.map((c) => {
      const f = r.figures[c.key];
      if (!f) return "—";
      const best = r.name === "direct" ? null : bestOther(results, r.name, c);
      const ratio = best ? ` (${(f.value / best).toFixed(2)}×)` : "";
      const short = f.extra?.shortfall ? ` [${f.extra.held} held of ${f.extra.count}]` : "";
      return fmt(f.value, c.digits) + ratio + short;
    }),
  ]);
  const lines = [head, head.map(() => "---"), ...rows].map((cells) => `| ${cells.join(" | ")} |`);
  return lines.join("\n");
}

interface Target {
  readonly what: string;
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean | null;
}

function targets(results: PathResult[], ports: PortsResult | null): Target[] {
  const get = (name: string, key: string) =>
    results.find((r) => r.name === name)?.figures[key]?.value;
  const pf = (key: string) => get("portferry", key);
  const out: Target[] = [];
  const ratio = (
    what: string,
    key: string,
    other: string,
    goal: number,
    higher: boolean,
  ) => {
    const a = pf(key);
    const b = get(other, key);
    if (a === undefined || b === undefined) {
      out.push({
        what,
        goal: `${higher ? "≥" : "≤"} ${goal}×`,
        measured: "not measured",
        met: null,
      });
      return;
    }
    const r = a / b;
    out.push({
      what,
      goal: `${higher ? "≥" : "≤"} ${goal}×`,
      measured: `${r.toFixed(2)}× (${fmt(a, 2)} vs ${fmt(b, 2)})`,
      met: higher ? r >= goal : r <= goal,
    });
  };
  ratio("1-stream throughput vs ssh -L aes128-gcm (up)", "up1", "ssh-L-aes", 1.2, true);
  ratio("1-stream throughput vs ssh -L aes128-gcm (down)", "down1", "ssh-L-aes", 1.2, true);
  ratio("RTT p50 vs ssh -L (default cipher)", "rttP50", "ssh-L", 0.85, false);
  ratio("RTT p50 vs ssh -L aes128-gcm", "rttP50", "ssh-L-aes", 0.85, false);
  ratio("new connections/s vs ssh -L (default cipher)", "connRate", "ssh-L", 1.2, true);
  ratio("new connections/s vs ssh -R", "connRate", "ssh-R", 10, true);
  const idle = pf("idle");
  out.push({
    what: "memory per idle forwarded connection (Console + Daemon RSS)",
    goal: "≤ 40 KiB",
    measured: idle === undefined ? "not measured" : `${idle.toFixed(1)} KiB`,
    met: idle === undefined ? null : idle <= 40,
  });
  if (ports) {
    const s = Math.max(ports.addMs, ports.startupMs) / 1000;
    out.push({
      what: `${ports.ports.toLocaleString("en-US")} PFO ports enabled`,
      goal: "≤ 3 s, Console RSS ≤ 150 MiB",
      measured: `pfo add ${(ports.addMs / 1000).toFixed(2)} s, start-up with the file ${
        (ports.startupMs / 1000).toFixed(2)
      } s, RSS ${ports.rssMiB.toFixed(0)} MiB (${ports.listeners} listening)`,
      met: s <= 3 && ports.rssMiB <= 150 && ports.listeners === ports.ports,
    });
  }
  return out;
}

function targetTable(ts: Target[]): string {
  const rows = ts.map((t) =>
    `| ${t.what} | ${t.goal} | ${t.measured} | ${t.met === null ? "—" : t.met ? "met" : "missed"} |`
  );
  return ["| target | goal | measured | |", "|---|---|---|---|", ...rows].join("\n");
}

/** The 1-minute load average, as /proc/loadavg has it. */
export async function loadAverage(): Promise<string> {
  return (await catProc(["/proc/loadavg"])).split(" ")[0] || "?";
}

export async function machine(): Promise<Record<string, string | number>> {
  const cpuinfo = await catProc(["/proc/cpuinfo"]);
  const model = cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? "unknown";
  const mem = (await catProc(["/proc/meminfo"])).match(/^MemTotal:\s+(\d+) kB/m)?.[1];
  // "Linux 6.8.0-…", as `uname -sr` prints it.
  const kernel = (await catProc(["/proc/sys/kernel/ostype", "/proc/sys/kernel/osrelease"]))
    .trim().split("\n").join(" ");
  return {
    cpus: navigator.hardwareConcurrency,
    cpuModel: model,
    kernel: kernel || Deno.build.os,
    memoryGiB: mem ? Math.round(Number(mem) / 1024 / 1024) : 0,
    deno: Deno.version.deno,
    ssh: (await output("ssh", ["-V"])) || "not installed",
    socat: (await output("socat", ["-V"])).match(/socat version (\S+)/)?.[1] ?? "not installed",
  };
}

// --------------------------------------------------------------------- main

/** The loopback bench (everything but `--wan`): the `bench` task's entry, tools/bench.ts, calls it. */
export async function main(): Promise<number> {
  const o = parseArgs(Deno.args);
  const started = Date.now();
  const work = await Deno.makeTempDir({ prefix: "portferry-bench-" });
  const log = (s: string) => console.error(`[bench] ${s}`);
  const onSignal = () => {
    for (const c of children) kill(c);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    if (o.workloads?.every((w) => [...CASES, "udp"].includes(w))) {
      const only = await runCases(o.workloads, o.smoke, log);
      console.log(only.map(caseLine).join("\n"));
      const udp = o.workloads.includes("udp") ? await udpWorkload(o, log) : "";
      if (udp && o.markdown && !o.smoke) await writeUdpSection(o.markdown, udp);
      return only.every((c) => c.passed) ? 0 : 1;
    }
    const lg = new Loadgen(await buildLoadgen());
    const target = await lg.serve(work);
    log(`target server on 127.0.0.1:${target.port}`);
    const m = await machine();
    const loadBefore = await loadAverage();
    log(`machine: ${m.cpus} × ${m.cpuModel}, ${m.kernel}, Deno ${m.deno}`);

    const socat = await which("socat");
    const ssh = await which("ssh");
    const sshdBin = await which("sshd");
    const keygen = await which("ssh-keygen");
    let sshd: Promise<Sshd> | null = null;
    const getSshd = () => {
      sshd ??= Deno.makeTempDir({ dir: work, prefix: "sshd-" }).then((d) =>
        startSshd(sshdBin!, keygen!, d)
      );
      return sshd;
    };
    const sshMissing = !ssh
      ? "ssh not installed (apt-get install openssh-client)"
      : !sshdBin || !keygen
      ? "sshd not installed (apt-get install openssh-server)"
      : null;
    const paths: { def: PathDef | null; name: string; label: string; missing: string | null }[] = [
      { def: directPath(), name: "direct", label: "direct loopback", missing: null },
      {
        def: portferryPath(o.cpuProf),
        name: "portferry",
        label: "portferry (TLS)",
        missing: null,
      },
      {
        def: portferryWsPath(o.cpuProf),
        name: "portferry-ws",
        label: "portferry over ws",
        missing: null,
      },
      {
        def: socat ? socatPath(socat) : null,
        name: "socat",
        label: "socat relay",
        missing: socat ? null : "socat not installed (apt-get install socat)",
      },
      ...([
        ["ssh-L-aes", "ssh -L (aes128-gcm)", "L", "aes128-gcm@openssh.com"],
        ["ssh-L", "ssh -L (default cipher)", "L", null],
        ["ssh-R", "ssh -R (default cipher)", "R", null],
      ] as const).map(([name, label, mode, cipher]) => ({
        def: sshMissing ? null : sshPath(ssh!, getSshd, name, label, mode, cipher),
        name,
        label,
        missing: sshMissing,
      })),
    ];

    const results: PathResult[] = [];
    const active: { def: PathDef; result: PathResult; running: Running | null }[] = [];
    for (const p of paths) {
      if (o.tools && !o.tools.includes(p.name)) continue;
      if (!p.def) {
        log(`${p.label}: skipped, ${p.missing}`);
        results.push({
          name: p.name,
          label: p.label,
          figures: {},
          skipped: p.missing!,
          errors: [],
        });
        continue;
      }
      const result: PathResult = { name: p.name, label: p.label, figures: {}, errors: [] };
      results.push(result);
      active.push({ def: p.def, result, running: null });
    }
    const plog = (def: PathDef, s: string) => log(`${def.label}: ${s}`);

    // Every path is up at once, and each workload's runs go round the paths
    // in turn: load from elsewhere on the machine then falls on all of them.
    const traffic = TRAFFIC.filter((w) => !o.workloads || o.workloads.includes(w));
    if (traffic.length > 0) {
      for (const a of active) {
        try {
          const dir = await Deno.makeTempDir({ dir: work, prefix: `${a.def.name}-` });
          a.running = await a.def.start(target.port, dir);
        } catch (err) {
          a.result.errors.push(errorText(err));
          plog(a.def, `failed to start: ${errorText(err)}`);
        }
      }
      try {
        for (const workload of traffic) {
          const runs = new Map<PathDef, Awaited<ReturnType<typeof trafficOnce>>[]>();
          for (let i = 0; i < o.repeat; i++) {
            for (const a of active) {
              if (!a.running || a.result.errors.some((e) => e.startsWith(`${workload}:`))) continue;
              try {
                const r = await trafficOnce(lg, a.running, workload, o);
                runs.set(a.def, [...(runs.get(a.def) ?? []), r]);
              } catch (err) {
                a.result.errors.push(`${workload}: ${errorText(err)}`);
                plog(a.def, `${workload} failed: ${errorText(err)}`);
              }
            }
          }
          for (const a of active) {
            const got = runs.get(a.def);
            if (!got?.length) continue;
            const f = summarise(got);
            const cpu = Object.entries(f.extra ?? {}).filter(([k]) => k.startsWith("cpu"))
              .map(([k, v]) => `${(v as number).toFixed(2)} ${k}`).join(", ");
            if (workload === "rtt") {
              const p99 = got.map((r) => r.p99!);
              a.result.figures.rttP50 = f;
              a.result.figures.rttP99 = { value: median(p99), runs: p99 };
              plog(
                a.def,
                `rtt p50 ${f.value.toFixed(0)} µs, p99 ${median(p99).toFixed(0)} µs; ${cpu}`,
              );
            } else {
              a.result.figures[workload === "connrate" ? "connRate" : workload] = f;
              plog(a.def, `${workload} ${f.value.toFixed(2)}; ${cpu}`);
            }
          }
        }
      } finally {
        for (const a of active) await a.running?.stop().catch(() => {});
      }
    }

    if (!o.workloads || o.workloads.includes("idle")) {
      for (const a of active) {
        if (!a.def.memory) continue;
        for (const count of o.idle) {
          try {
            const idleDir = await Deno.makeTempDir({ dir: work, prefix: `${a.def.name}-idle-` });
            const f = await idleMemory(
              lg,
              a.def,
              target.port,
              count,
              idleDir,
              (s) => plog(a.def, s),
            );
            a.result.figures[count === o.idle[0] ? "idle" : `idle${count}`] = f;
            if (f.extra?.shortfall) a.result.errors.push(`idle ${count}: ${f.extra.shortfall}`);
          } catch (err) {
            a.result.errors.push(`idle ${count}: ${errorText(err)}`);
            plog(a.def, `idle ${count} failed: ${errorText(err)}`);
          }
        }
      }
    }

    let ports: PortsResult | null = null;
    let caseReport: string[] = [];
    let udpReport = "";
    if (
      (!o.tools || o.tools.includes("portferry")) && (!o.workloads || o.workloads.includes("ports"))
    ) {
      try {
        ports = await enablePorts(o, target.port, work);
        log(
          `${ports.ports} ports: pfo add ${ports.addMs.toFixed(0)} ms, start-up with them ${
            ports.startupMs.toFixed(0)
          } ms (baseline ${ports.baselineStartupMs.toFixed(0)} ms), Console RSS ${
            ports.rssMiB.toFixed(1)
          } MiB (baseline ${ports.baselineRssMiB.toFixed(1)} MiB)`,
        );
      } catch (err) {
        log(`ports: failed: ${errorText(err)}`);
        results.find((r) => r.name === "portferry")?.errors.push(`ports: ${errorText(err)}`);
      }
    }

    let pfos: PfoBenchResult | null = null;
    if (
      (!o.tools || o.tools.includes("portferry")) && (!o.workloads || o.workloads.includes("pfos"))
    ) {
      try {
        pfos = await benchPfos({
          count: o.smoke ? 200 : 10_000,
          adds: o.smoke ? 2 : 5,
          cpuProf: o.cpuProf,
          log: (line) => log(`pfos: ${line}`),
        });
      } catch (err) {
        log(`pfos: failed: ${errorText(err)}`);
        results.find((r) => r.name === "portferry")?.errors.push(`pfos: ${errorText(err)}`);
      }
    }

    if (!o.tools || o.tools.includes("portferry")) {
      const cases = await runCases(o.workloads, o.smoke, log);
      const portferry = results.find((r) => r.name === "portferry");
      for (const c of cases) {
        if (portferry) {
          portferry.figures[c.name] = { value: c.ratio, runs: [c.ratio], extra: { ...c } };
        }
        // A missed ratio in smoke mode means nothing: only a case that broke fails it.
        if (Number.isNaN(c.ratio) || (!c.passed && !o.smoke)) {
          portferry?.errors.push(`${c.name}: ${caseLine(c)}`);
        }
      }
      caseReport = cases.map(caseLine);
      if (!o.workloads || o.workloads.includes("udp")) {
        udpReport = await udpWorkload(o, log);
        const failed = udpReport.match(/^FAILED: (.*)$/m);
        if (failed) results.find((r) => r.name === "portferry")?.errors.push(`udp: ${failed[1]}`);
      }
    }

    if (sshd) await (await (sshd as Promise<Sshd>)).stop().catch(() => {});
    await target.stop();

    const ts = [...targets(results, ports), ...(pfos?.targets ?? [])];
    const extraIdle = o.idle.slice(1).map((n) =>
      results.filter((r) => r.figures[`idle${n}`]).map((r) =>
        `- ${r.label}: ${
          r.figures[`idle${n}`].value.toFixed(1)
        } KiB per idle connection with ${n} asked (${r.figures[`idle${n}`].extra?.held} held, ${
          r.figures[`idle${n}`].extra?.errors
        } failed)`
      ).join("\n")
    ).join("\n");
    const skipped = results.filter((r) => r.skipped).map((r) => `- ${r.label}: ${r.skipped}`);
    const failed = results.flatMap((r) => r.errors.map((e) => `- ${r.label}: ${e}`));
    const portsText = ports
      ? `Enabling a ${ports.ports.toLocaleString("en-US")}-port range PFO (portferry only): ` +
        `\`pfo add\` on a running Console ${(ports.addMs / 1000).toFixed(2)} s ` +
        `(CLI start-up included); Console start-up with the range in its settings file ` +
        `${(ports.startupMs / 1000).toFixed(2)} s (${
          (ports.baselineStartupMs / 1000).toFixed(2)
        } s with no PFO); ${ports.listeners} listening; Console RSS ${
          ports.rssMiB.toFixed(1)
        } MiB (${ports.baselineRssMiB.toFixed(1)} MiB with no PFO).`
      : "";
    const loadAfter = await loadAverage();
    const report = [
      `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.kernel}; Deno ${m.deno}; ${m.ssh}; socat ${m.socat}.`,
      "",
      `Run: ${
        new Date(started).toISOString()
      }, ${o.seconds} s per measurement, median of ${o.repeat}${
        o.smoke ? " (smoke: figures are not meaningful)" : ""
      }; idle figure with ${
        o.idle[0]
      } connections held; load average ${loadBefore} at the start, ${loadAfter} at the end (other work on the machine skews every figure).`,
      "",
      table(results),
      "",
      "Ratios: this figure / the best other tool's (direct is the baseline, not a tool). " +
      "Higher is better for Gbit/s and conn/s, lower for µs and KiB. " +
      "Memory: Console + Daemon VmRSS for portferry; ssh + sshd tree VmRSS for ssh; " +
      "Pss summed over socat's forked processes.",
      "",
      "CPU the tunnel's own processes spent (user + system; Console + Daemon, ssh + sshd, socat and its forks):",
      "",
      cpuTable(results),
      ...(websocketCostLines(results).length ? ["", ...websocketCostLines(results)] : []),
      ...(extraIdle ? ["", extraIdle] : []),
      ...(portsText ? ["", portsText] : []),
      ...(caseReport.length ? ["", "Ratios (tools/bench_fairness.ts):", "", ...caseReport] : []),
      ...(udpReport ? ["", markedUdpSection(udpReport)] : []),
      "",
      "Targets (issue 5):",
      "",
      targetTable(ts),
      ...(skipped.length ? ["", "Skipped:", ...skipped] : []),
      ...(failed.length ? ["", "Failed:", ...failed] : []),
    ].join("\n");
    console.log(report);

    const json = {
      date: new Date(started).toISOString(),
      smoke: o.smoke,
      options: { seconds: o.seconds, repeat: o.repeat, idle: o.idle, ports: o.ports },
      machine: m,
      columns: COLUMNS,
      results,
      ports,
      pfos,
      targets: ts,
      elapsedMs: Date.now() - started,
      loadAverage: { start: loadBefore, end: loadAfter },
    };
    await Deno.mkdir(o.json.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(o.json, JSON.stringify(json, null, 2) + "\n");
    log(`JSON written to ${o.json}`);
    if (o.markdown) {
      await Deno.writeTextFile(
        o.markdown,
        [
          "# portferry bench: latest results",
          "",
          "Written by `deno task bench` (tools/bench.ts); loopback, load from `bench/loadgen.c`.",
          "",
          report,
          "",
          ...await keepWanSection(o.markdown),
        ].join("\n"),
      );
      // Formatted as `deno task check` wants it (it aligns the tables).
      await new Deno.Command(DENO, {
        args: ["fmt", "--quiet", o.markdown],
        cwd: ROOT,
        stdout: "null",
        stderr: "null",
      }).output();
      log(`table written to ${o.markdown}`);
    }
    log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return failed.some((f) => f.startsWith("- portferry")) ? 1 : 0;
  } finally {
    for (const c of children) kill(c);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** The `udp` workload's section of the report (printed here), or a line saying why it failed. */
async function udpWorkload(o: BenchOptions, log: (s: string) => void): Promise<string> {
  try {
    const result = await benchUdp({ seconds: o.smoke ? 1 : 5, repeat: o.smoke ? 1 : 3, log });
    const section = udpSection(result);
    console.log(section);
    return section;
  } catch (err) {
    log(`udp: failed: ${errorText(err)}`);
    return `## UDP\n\nFAILED: ${errorText(err)}`;
  }
}
