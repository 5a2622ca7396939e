/**
 * Two bench cases that are ratios, so no unit test's business:
 *
 * - `fairness`: a stream whose reader stalls must not slow a second stream on
 *   the same session. Pairs of transfers (a baseline, then one beside a fresh
 *   stalled stream) give a ratio; the median must be 1/3 or better.
 * - `udp-flood`: a UDP flood on one PFO (tools/_udp_flood.ts, 20,000
 *   datagrams of 1,400 B a second) must keep a TCP upload on another PFO at
 *   half its quiet rate or better. Quiet and flooded uploads alternate.
 *
 * Each starts its own Console and Daemon (tools/_portferry.ts). Run them with
 * `deno task bench --workloads fairness,udp-flood`; `--smoke` runs them tiny.
 *
 * @module
 */

import { addPfo, closeQuietly, DENO, hostPort, Lines, startPair, tcpServer } from "./_portferry.ts";

const MiB = 1024 * 1024;
const ROOT = new URL("../", import.meta.url);

/** What one case measured. */
export interface CaseResult {
  readonly name: string;
  /** The measured ratio (higher is better) and the least that passes. */
  readonly ratio: number;
  readonly threshold: number;
  readonly passed: boolean;
  /** The figures behind the ratio, for a person. */
  readonly detail: string;
}

/** The cases, by the name `--workloads` takes. */
export const CASES = ["fairness", "udp-flood"] as const;

/** Run the case `name`; `smoke` makes it tiny (its figures then mean nothing). */
export function runCase(name: typeof CASES[number], smoke: boolean): Promise<CaseResult> {
  return name === "fairness" ? fairness(smoke) : udpFlood(smoke);
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Write all of `data`. */
async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

/** Read until EOF (or `ms`), returning the byte count. */
async function drain(conn: Deno.Conn, ms: number): Promise<number> {
  const timer = setTimeout(() => closeQuietly(conn), ms);
  try {
    const buf = new Uint8Array(256 * 1024);
    let total = 0;
    for (let n; (n = await conn.read(buf)) !== null;) total += n;
    return total;
  } finally {
    clearTimeout(timer);
  }
}

async function fairness(smoke: boolean): Promise<CaseResult> {
  const size = smoke ? 2 * MiB : 32 * MiB;
  const cycles = smoke ? 1 : 3;
  const chunk = crypto.getRandomValues(new Uint8Array(64 * 1024));
  // A flood write blocked this long means the stalled stream's path is full.
  let stalled = Promise.withResolvers<void>();
  using target = tcpServer(async (conn) => {
    const mode = new Uint8Array(1);
    if (await conn.read(mode) !== 1) return;
    if (mode[0] === 0x4d) { // M: measure
      for (let at = 0; at < size; at += chunk.length) await writeAll(conn, chunk);
      return;
    }
    const mine = stalled; // F: flood until the client goes away
    while (true) {
      const timer = setTimeout(() => mine.resolve(), 300);
      try {
        await conn.write(chunk);
      } finally {
        clearTimeout(timer);
      }
    }
  });
  await using pair = await startPair();
  const listen = await addPfo(pair.console, "fair", `127.0.0.1:${target.port}`);
  const measure = async () => {
    const conn = await Deno.connect(hostPort(listen));
    try {
      const t0 = performance.now();
      await writeAll(conn, new Uint8Array([0x4d]));
      const got = await drain(conn, 60_000);
      if (got < size) throw new Error(`Cannot measure: ${got} of ${size} bytes arrived`);
      return size / ((performance.now() - t0) / 1000);
    } finally {
      closeQuietly(conn);
    }
  };
  await measure(); // warm-up
  const ratios: number[] = [];
  const rates: string[] = [];
  for (let cycle = 0; cycle < cycles; cycle++) {
    const baseline = await measure();
    stalled = Promise.withResolvers<void>();
    const flood = await Deno.connect(hostPort(listen));
    try {
      await writeAll(flood, new Uint8Array([0x46]));
      const timer = setTimeout(() => stalled.reject(new Error("the flood never stalled")), 10_000);
      await stalled.promise.finally(() => clearTimeout(timer));
      const during = await measure();
      ratios.push(during / baseline);
      rates.push(`${(baseline / MiB).toFixed(0)} → ${(during / MiB).toFixed(0)} MiB/s`);
    } finally {
      closeQuietly(flood);
    }
  }
  const ratio = median(ratios);
  // Why 1/3: a stalled stream holds at most one credit window and costs the
  // link nothing, so the fair ratio is ~1; had the watchdog fired early, the
  // flood would share the link (~1/2). Head-of-line blocking scores ~0.
  return {
    name: "fairness",
    ratio,
    threshold: 1 / 3,
    passed: ratio >= 1 / 3,
    detail: `second stream beside a stalled one: ${rates.join("; ")}`,
  };
}

/** The flood process: `command()` writes a line to it, `lines` holds what it printed. */
function startFlood(maxMs: number) {
  const child = new Deno.Command(DENO, {
    args: [
      "run",
      "--no-prompt",
      "--allow-net=127.0.0.1",
      "tools/_udp_flood.ts",
      "20000",
      "3000000",
      String(maxMs),
    ],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = new Lines();
  const pumping = lines.pump(child.stdout);
  const writer = child.stdin.getWriter();
  return {
    lines,
    command: (text: string) => writer.write(new TextEncoder().encode(text + "\n")),
    async [Symbol.asyncDispose]() {
      await writer.close().catch(() => {});
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await child.status;
      await pumping;
    },
  };
}

async function udpFlood(smoke: boolean): Promise<CaseResult> {
  const size = smoke ? 2 * MiB : 16 * MiB;
  const rounds = smoke ? 1 : 3;
  await using pair = await startPair();
  using sink = tcpServer(async (conn) => {
    const total = await drain(conn, 120_000);
    const ack = new Uint8Array(8);
    new DataView(ack.buffer).setBigUint64(0, BigInt(total));
    await writeAll(conn, ack);
  });
  const listen = await addPfo(pair.console, "bulk", `127.0.0.1:${sink.port}`);
  await using flood = startFlood(120_000);
  const [, echoPort] = await flood.lines.waitFor(/^echo (\d+)$/);
  const udpListen = await addPfo(pair.console, "flood", `127.0.0.1:${echoPort}`, ["--udp"]);
  await flood.command(`port ${hostPort(udpListen).port}`);
  const chunk = crypto.getRandomValues(new Uint8Array(64 * 1024));
  const upload = async (bytes: number) => {
    const conn = await Deno.connect(hostPort(listen));
    try {
      const t0 = performance.now();
      for (let sent = 0; sent < bytes;) {
        sent += await conn.write(chunk.subarray(0, Math.min(chunk.length, bytes - sent)));
      }
      await conn.closeWrite();
      // The sink answers with its 8-byte count once it has every byte.
      if (await drain(conn, 60_000) !== 8) throw new Error(`Cannot upload ${bytes} bytes: no ack`);
      return (performance.now() - t0) / 1000;
    } finally {
      closeQuietly(conn);
    }
  };
  await upload(Math.min(size, 4 * MiB)); // warm-up
  let quiet = 0;
  let flooded = 0;
  for (let round = 0; round < rounds; round++) {
    quiet += await upload(size);
    const mark = flood.lines.mark;
    await flood.command("on");
    await flood.lines.waitFor(/^on$/, { from: mark });
    flooded += await upload(size);
    await flood.command("off");
    await flood.lines.waitFor(/^off \d+$/, { from: mark });
  }
  const quietRate = rounds * size / quiet;
  const floodRate = rounds * size / flooded;
  const ratio = floodRate / quietRate;
  return {
    name: "udp-flood",
    ratio,
    threshold: 0.5,
    passed: ratio >= 0.5,
    detail: `TCP ${(quietRate / MiB).toFixed(1)} MiB/s quiet, ${
      (floodRate / MiB).toFixed(1)
    } MiB/s beside 20,000 datagrams/s on another PFO`,
  };
}

/** Run the cases among `workloads` (all when null), logging each; a case that throws fails. */
export async function runCases(
  workloads: readonly string[] | null,
  smoke: boolean,
  log: (line: string) => void,
): Promise<CaseResult[]> {
  const out: CaseResult[] = [];
  for (const name of CASES.filter((c) => !workloads || workloads.includes(c))) {
    let result: CaseResult;
    try {
      result = await runCase(name, smoke);
    } catch (err) {
      const detail = `failed: ${err instanceof Error ? err.message : String(err)}`;
      result = { name, ratio: NaN, threshold: NaN, passed: false, detail };
    }
    log(caseLine(result));
    out.push(result);
  }
  return out;
}

/** One case as a line of the report. */
export function caseLine(r: CaseResult): string {
  return Number.isNaN(r.ratio)
    ? `${r.name}: FAILED, ${r.detail}`
    : `${r.name}: ratio ${r.ratio.toFixed(2)} (pass at ${r.threshold.toFixed(2)} or more: ${
      r.passed ? "met" : "MISSED"
    }); ${r.detail}`;
}
