/**
 * The bench's `udp` workload: UDP loss and jitter through portferry beside
 * direct, measured with real iperf3 (`iperf3 -u -l 1400 -b RATE`) at
 * 100 Mbit/s, 300 Mbit/s and 1 Gbit/s on loopback. A TCP PFO and a UDP PFO
 * share one listen port: the TCP one carries iperf3's control connection.
 *
 * Every iperf3 run is a new client port, so a new UDP flow: the loss in the
 * server's first one-second interval shows what a new flow lost while the
 * Daemon opened it. Where datagrams went is read after each run:
 *
 * - portferry's own drops, by where (`status --json` of both programs);
 * - the kernel's drops per socket (the `drops` column of /proc/net/udp, read
 *   with `cat`: Deno lets a program read /proc only with --allow-all) for
 *   the Console's UDP port and for iperf3's server port.
 *
 * Runs alternate direct and portferry, `repeat` times per rate; the figure is
 * the median loss. The machine's load average is printed with each run: two
 * cores shared with other work make every figure noisy.
 *
 * @module
 */

import { addPfo, closeQuietly, DENO, hostPort, Lines, startPair } from "./_portferry.ts";

/** iperf3's datagram size in the issue's measurement. */
const DATAGRAM = 1400;
/** The rates measured, as iperf3's `-b` takes them, and in Mbit/s. */
const RATES = [["100M", 100], ["300M", 300], ["1G", 1000]] as const;

/** One iperf3 run. */
export interface UdpRun {
  readonly path: "direct" | "portferry";
  readonly rate: string;
  readonly sent: number;
  readonly lost: number;
  readonly lossPercent: number;
  readonly jitterMs: number;
  /** Datagrams lost in the server's first interval (about one second): a new flow's loss. */
  readonly lostFirstSecond: number;
  /** Kernel drops per socket over the run (/proc/net/udp), by role. */
  readonly kernelDrops: { readonly console: number; readonly target: number };
  /** portferry's own drops over the run, by where, Console and Daemon added up. */
  readonly ownDrops: Readonly<Record<string, number>>;
  /** The 1-minute load average after the run. */
  readonly load: string;
}

/** What the workload measured. */
export interface UdpBenchResult {
  readonly seconds: number;
  readonly runs: readonly UdpRun[];
}

/** Options for {@linkcode benchUdp}. */
export interface UdpBenchOptions {
  /** Seconds per iperf3 run. */
  readonly seconds: number;
  /** Runs per rate and path. */
  readonly repeat: number;
  readonly log: (line: string) => void;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success && !text.trim().startsWith("{")) {
    throw new Error(`Cannot run ${cmd}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return text;
}

/** The 1-minute load average. */
export async function loadAverage(): Promise<string> {
  return (await run("cat", ["/proc/loadavg"])).split(" ")[0] ?? "?";
}

/** Kernel drops per 127.0.0.1 socket (by inode) with its local port, from /proc/net/udp. */
async function kernelSockets(): Promise<Map<string, { port: number; drops: number }>> {
  const text = await run("cat", ["/proc/net/udp"]);
  const sockets = new Map<string, { port: number; drops: number }>();
  for (const line of text.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w.length < 13 || !/^\d+:$/.test(w[0])) continue;
    // Loopback sockets only (127.0.0.1, "0100007F"): the bench binds nothing else.
    if (w[1].split(":")[0] !== "0100007F") continue;
    sockets.set(w[9], { port: parseInt(w[1].split(":")[1], 16), drops: Number(w[12]) });
  }
  return sockets;
}

/**
 * Kernel drops per local port while `work` runs, sampled every 200 ms: a
 * socket that closes (iperf3's test socket) leaves /proc with its count.
 */
async function kernelDropsDuring<T>(work: Promise<T>): Promise<[T, Map<number, number>]> {
  const first = await kernelSockets();
  const last = new Map(first);
  let done = false;
  const result = work.finally(() => done = true);
  while (!done) {
    await Promise.race([result.catch(() => {}), new Promise((r) => setTimeout(r, 200))]);
    for (const [inode, s] of await kernelSockets()) last.set(inode, s);
  }
  const drops = new Map<number, number>();
  for (const [inode, s] of last) {
    const moved = s.drops - (first.get(inode)?.drops ?? 0);
    drops.set(s.port, (drops.get(s.port) ?? 0) + moved);
  }
  return [await result, drops];
}

/** The iperf3 server, on `port` (TCP and UDP). */
async function startServer(port: number): Promise<Deno.ChildProcess & AsyncDisposable> {
  const child = new Deno.Command("iperf3", {
    args: ["-s", "-B", "127.0.0.1", "-p", String(port), "--forceflush"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new Lines();
  out.pump(child.stdout).catch(() => {});
  out.pump(child.stderr).catch(() => {});
  try {
    await out.waitFor(/Server listening/, { ms: 10_000 });
  } catch (err) {
    await child[Symbol.asyncDispose](); // never leave it running
    throw err;
  }
  return child;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  closeQuietly(l);
  return port;
}

/** Drops by where, Console PFO and Daemon added up. */
async function ownDrops(
  cli: {
    console: (...a: string[]) => Promise<string>;
    daemon: (...a: string[]) => Promise<string>;
  },
): Promise<Record<string, number>> {
  const c = JSON.parse(await cli.console("status", "--json"));
  const d = JSON.parse(await cli.daemon("status", "--json"));
  const sum: Record<string, number> = {};
  for (const source of [c.udpDrops ?? {}, d.udpDrops ?? {}]) {
    for (const [k, v] of Object.entries(source)) sum[k] = (sum[k] ?? 0) + Number(v);
  }
  return sum;
}

/** One iperf3 client run against `port`; `ports` are the sockets whose kernel drops count. */
async function iperf(
  path: "direct" | "portferry",
  port: number,
  rate: string,
  seconds: number,
  ports: { console: number | null; target: number },
): Promise<Omit<UdpRun, "ownDrops" | "load">> {
  const [text, drops] = await kernelDropsDuring(run("iperf3", [
    ...["-c", "127.0.0.1", "-p", String(port), "-u", "-l", String(DATAGRAM), "-b", rate],
    ...["-t", String(seconds), "-J", "--get-server-output"],
  ]));
  const j = JSON.parse(text);
  if (!j.end?.sum) throw new Error(`Cannot measure ${path} at ${rate}: iperf3 said ${j.error}`);
  const sum = j.end.sum;
  // The server's first interval: "0.00-1.00 sec ... LOST/TOTAL (x%)" (its end may be 1.01...).
  const first = String(j.server_output_text ?? "").match(/ 0\.00-1\.\d+ .* (\d+)\/(\d+) \(/);
  const delta = (p: number | null) => p === null ? 0 : drops.get(p) ?? 0;
  return {
    path,
    rate,
    sent: sum.packets,
    lost: sum.lost_packets,
    lossPercent: sum.lost_percent,
    jitterMs: sum.jitter_ms,
    lostFirstSecond: first ? Number(first[1]) : NaN,
    kernelDrops: { console: delta(ports.console), target: delta(ports.target) },
  };
}

/**
 * Run the workload. Throws, naming the Debian package, when iperf3 is not
 * installed.
 */
export async function benchUdp(options: UdpBenchOptions): Promise<UdpBenchResult> {
  try {
    await run("iperf3", ["--version"]);
  } catch (err) {
    throw new Error(
      'Cannot run the udp workload: iperf3 is missing (install the Debian package "iperf3")',
      { cause: err },
    );
  }
  const serverPort = freePort();
  await using _server = await startServer(serverPort);
  await using pair = await startPair();
  const listen = hostPort(await addPfo(pair.console, "iperf-ctl", `127.0.0.1:${serverPort}`));
  await pair.console.cli(
    ...["pfo", "add", "iperf-udp", "--listen", `127.0.0.1:${listen.port}`],
    ...["--target", `127.0.0.1:${serverPort}`, "--udp"],
  );
  const cli = {
    console: (...a: string[]) => pair.console.cli(...a),
    daemon: (...a: string[]) => pair.daemon.cli(...a),
  };
  const runs: UdpRun[] = [];
  for (const [rate] of RATES) {
    for (let i = 0; i < options.repeat; i++) {
      for (const path of ["direct", "portferry"] as const) {
        const dropsBefore = path === "portferry" ? await ownDrops(cli) : {};
        const port = path === "direct" ? serverPort : listen.port;
        const consolePort = path === "direct" ? null : listen.port;
        const r = await iperf(path, port, rate, options.seconds, {
          console: consolePort,
          target: serverPort,
        });
        const dropsAfter = path === "portferry" ? await ownDrops(cli) : {};
        const own = Object.fromEntries(
          Object.entries(dropsAfter).map(([k, v]) => [k, v - (dropsBefore[k] ?? 0)]),
        );
        const entry = { ...r, ownDrops: own, load: await loadAverage() };
        options.log(runLine(entry));
        runs.push(entry);
      }
    }
  }
  return { seconds: options.seconds, runs };
}

/** One run as a log line. */
export function runLine(r: UdpRun): string {
  const own = Object.entries(r.ownDrops).filter(([k, v]) => k !== "total" && v > 0)
    .map(([k, v]) => `${k} ${v}`).join(", ");
  return `udp ${r.path} ${r.rate}: lost ${r.lost}/${r.sent} (${r.lossPercent.toFixed(2)}%), ` +
    `first second ${r.lostFirstSecond}, jitter ${r.jitterMs.toFixed(3)} ms; kernel drops: ` +
    `Console socket ${r.kernelDrops.console}, iperf3 server socket ${r.kernelDrops.target}` +
    `${own ? `; portferry drops: ${own}` : ""}; load ${r.load}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
}

/** The Markdown section for bench/RESULTS.md: a table per rate, targets, where the loss went. */
export function udpSection(result: UdpBenchResult): string {
  const rows = RATES.map(([rate]) => {
    const of = (path: string) => result.runs.filter((r) => r.rate === rate && r.path === path);
    const pf = of("portferry");
    const direct = of("direct");
    const loss = (rs: UdpRun[]) => `${median(rs.map((r) => r.lossPercent)).toFixed(2)}%`;
    const jitter = (rs: UdpRun[]) => `${median(rs.map((r) => r.jitterMs)).toFixed(3)} ms`;
    const first = Math.max(...pf.map((r) => r.lostFirstSecond).filter((n) => !Number.isNaN(n)));
    const kernel = median(pf.map((r) => r.kernelDrops.console));
    const own = median(pf.map((r) => r.ownDrops.total ?? 0));
    const loads = [...new Set([...pf, ...direct].map((r) => r.load))].join(", ");
    return `| ${rate}bit/s | ${loss(pf)} | ${loss(direct)} | ${jitter(pf)} | ${jitter(direct)} | ` +
      `${first} | ${kernel} | ${own} | ${loads} |`;
  });
  const pfLoss = (rate: string) =>
    median(
      result.runs.filter((r) => r.rate === rate && r.path === "portferry").map((r) =>
        r.lossPercent
      ),
    );
  const at100 = (path: string) => result.runs.filter((r) => r.rate === "100M" && r.path === path);
  const firstLost = (path: string) =>
    Math.max(...at100(path).map((r) => r.lostFirstSecond).filter((n) => !Number.isNaN(n)));
  const heldLost = Math.max(
    ...at100("portferry").map((r) => (r.ownDrops.opening ?? 0) + (r.ownDrops.openFailed ?? 0)),
  );
  const met = (ok: boolean) => ok ? "met" : "MISSED";
  return [
    "## UDP (`--workloads udp`, tools/bench_udp.ts)",
    "",
    `iperf3 -u -l ${DATAGRAM}, ${result.seconds} s per run, median of ` +
    `${result.runs.length / (RATES.length * 2)} runs; direct and portferry runs alternate.`,
    "",
    "| rate | loss portferry | loss direct | jitter portferry | jitter direct | lost in a new flow's first second (max) | kernel drops at the Console's socket | portferry's own drops | load average |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    `- loss ≤ 0.5% at 300 Mbit/s: ${pfLoss("300M").toFixed(2)}% (${met(pfLoss("300M") <= 0.5)})`,
    `- loss ≤ 2% at 1 Gbit/s: ${pfLoss("1G").toFixed(2)}% (${met(pfLoss("1G") <= 2)})`,
    `- no datagram lost when a new flow opens at 100 Mbit/s: ${heldLost} dropped by portferry ` +
    `while flows opened (${
      met(heldLost === 0)
    }); lost in the first second, kernel drops included: ` +
    `${firstLost("portferry")} through portferry, ${firstLost("direct")} direct`,
  ].join("\n");
}

const START = "<!-- udp:start -->";
const END = "<!-- udp:end -->";

/** `section` between the markers that keep it apart from the rest of a results file. */
export function markedUdpSection(section: string): string {
  return `${START}\n${section}\n${END}`;
}

/**
 * Put `section` into the Markdown file at `path` in place of its UDP
 * section (or at its end), leaving the rest as it is.
 */
export async function writeUdpSection(path: string, section: string): Promise<void> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const marked = markedUdpSection(section);
  const from = text.indexOf(START);
  const to = text.indexOf(END);
  const next = from >= 0 && to > from
    ? text.slice(0, from) + marked + text.slice(to + END.length)
    : `${text.trimEnd()}${text ? "\n\n" : ""}${marked}\n`;
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, next);
  await Deno.rename(tmp, path);
  // Formatted as `deno task check` wants it (it aligns the tables).
  await new Deno.Command(DENO, { args: ["fmt", "--quiet", path], stdout: "null", stderr: "null" })
    .output();
}
