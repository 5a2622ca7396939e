// deno-lint-ignore-file no-console -- a script that reports figures
/**
 * Stress: one Console session with 10,000 listening ports.
 *
 * Starts a real Console and Daemon (the `deno task` flags, auto-accept, on
 * loopback), then enables 10,000 ports and reports:
 *
 * - the time to enable them, from the command to every port listening (as
 *   `status --json` tells it), and the Console's own share (its log line);
 * - the Console's RSS (VmRSS, and the peak VmHWM) before and after;
 * - a sample of ports (50 by default) actually forwarding an echo round trip.
 *
 * Modes: `range` (default) adds one PFO of a 10,000-port range with
 * `pfo add`; `singles` writes 10,000 single-port PFOs into the running
 * Console's settings file (picked up live); `both` runs one after the other,
 * each with a fresh Console. Targets on the reference machine: enabled in
 * <= 3 s, Console RSS <= 150 MiB; the exit code is 1 when one is missed.
 *
 * Bounded: every wait has a deadline, and the whole run stops after
 * `--deadline-s` (default 300).
 *
 * ```sh
 * deno task stress [--mode range|singles|both] [--ports N] [--sample N]
 * ```
 *
 * RSS comes from `cat /proc/PID/status`: Deno asks for `--allow-all` to read
 * `/proc` itself, and this script already needs `--allow-run`.
 *
 * @module
 */

import { type ConsoleProgram, procFigures, startPair, tcpServer } from "./_portferry.ts";

const TARGET_ENABLE_S = 3;
const TARGET_RSS_MIB = 150;

interface Options {
  mode: "range" | "singles" | "both";
  ports: number;
  sample: number;
  deadlineS: number;
}

function parseArgs(args: string[]): Options {
  const o: Options = { mode: "range", ports: 10_000, sample: 50, deadlineS: 300 };
  for (let i = 0; i < args.length; i++) {
    const [key, value] = [args[i], args[i + 1]];
    if (key === "--mode" && (value === "range" || value === "singles" || value === "both")) {
      o.mode = value;
    } else if (key === "--ports" && /^\d+$/.test(value ?? "")) o.ports = Number(value);
    else if (key === "--sample" && /^\d+$/.test(value ?? "")) o.sample = Number(value);
    else if (key === "--deadline-s" && /^\d+$/.test(value ?? "")) o.deadlineS = Number(value);
    else {
      console.error(
        `bad argument ${key}\nusage: deno task stress [--mode range|singles|both] [--ports N] [--sample N] [--deadline-s S]`,
      );
      Deno.exit(2);
    }
    i++;
  }
  if (o.ports < 1 || o.ports > 20_000) throw new RangeError("--ports must be 1..20000");
  return o;
}

/** Reject if `promise` has not settled within `ms`. */
async function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
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

/** VmRSS and VmHWM of a process, in MiB. */
async function memory(pid: number): Promise<{ rss: number; hwm: number }> {
  const figures = await procFigures(pid);
  return { rss: figures.rssKiB / 1024, hwm: figures.hwmKiB / 1024 };
}

/**
 * `count` contiguous TCP ports on 127.0.0.1 free a moment ago, from
 * 10000-32767 (below this machine's ephemeral range). Each is bound and
 * released in turn; at most 30 starts are tried.
 */
function freeRange(count: number): number {
  const top = 32_768 - count;
  if (top < 10_000) throw new RangeError(`Cannot fit ${count} ports below 32768`);
  for (let attempt = 0; attempt < 30; attempt++) {
    const start = 10_000 + Math.floor(Math.random() * (top - 10_000 + 1));
    let ok = true;
    for (let p = start; p < start + count && ok; p++) {
      try {
        Deno.listen({ hostname: "127.0.0.1", port: p }).close();
      } catch {
        ok = false;
      }
    }
    if (ok) return start;
  }
  throw new Error(`Cannot find ${count} contiguous free ports in 30 tries`);
}

interface PfoJson {
  name: string;
  state: string;
  listeners: number;
  error: string | null;
}

async function pfos(consoleProc: ConsoleProgram): Promise<PfoJson[]> {
  return JSON.parse(await consoleProc.cli("status", "--json")).pfos;
}

/** Poll `status --json` until `check` passes: at most `tries` calls and `ms`. */
async function until(
  consoleProc: ConsoleProgram,
  check: (list: PfoJson[]) => boolean,
  what: string,
  tries = 200,
  ms = 120_000,
): Promise<PfoJson[]> {
  const end = Date.now() + ms;
  let last: PfoJson[] = [];
  for (let i = 0; i < tries && Date.now() < end; i++) {
    last = await pfos(consoleProc);
    if (check(last)) return last;
  }
  throw new Error(
    `Cannot confirm ${what}: ${last.length} PFOs, ${
      last.reduce((n, p) => n + p.listeners, 0)
    } listeners`,
  );
}

/** An echo round trip of 1 KiB through 127.0.0.1:port; true when the bytes came back. */
async function roundTrip(port: number): Promise<boolean> {
  const data = crypto.getRandomValues(new Uint8Array(1024));
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const c = conn;
    return await deadline(
      (async () => {
        await c.write(data);
        await c.closeWrite();
        const buf = new Uint8Array(2048);
        let got = 0;
        let n: number | null;
        while ((n = await c.read(buf.subarray(got))) !== null) got += n;
        return got === data.length && buf.subarray(0, got).every((b, i) => b === data[i]);
      })(),
      10_000,
      `round trip through port ${port}`,
    );
  } catch {
    return false;
  } finally {
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }
}

/** `n` distinct random picks from `ports`. */
function pick(ports: number[], n: number): number[] {
  const copy = [...ports];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy.slice(0, Math.min(n, copy.length));
}

async function sample(ports: number[], n: number): Promise<{ tried: number; ok: number }> {
  const chosen = pick(ports, n);
  let ok = 0;
  for (let i = 0; i < chosen.length; i += 10) {
    const results = await Promise.all(chosen.slice(i, i + 10).map(roundTrip));
    ok += results.filter(Boolean).length;
  }
  return { tried: chosen.length, ok };
}

interface Report {
  mode: string;
  ports: number;
  /** Command start to every port listening per `status --json`. */
  enableS: number;
  /** Command start to the Console's "PFO listening" log line(s). */
  enableLogS: number;
  /** The enabling command's own wall time (a CLI process: Deno start-up included). */
  commandS: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  hwmMiB: number;
  sample: { tried: number; ok: number };
  disableS?: number;
  reenableS?: number;
  /** RSS after disabling and enabling every port once more. */
  rssReenabledMiB?: number;
}

async function runRange(o: Options, echoPort: number): Promise<Report> {
  await using pair = await startPair();
  const c = pair.console;
  const before = await memory(c.child.pid);
  const start = freeRange(o.ports);
  const end = start + o.ports - 1;
  const mark = c.out.mark;
  const t0 = performance.now();
  await c.cli(
    "pfo",
    "add",
    "stress",
    "--listen",
    `127.0.0.1:${start}-${end}`,
    "--target",
    `127.0.0.1:${echoPort}`,
  );
  const commandS = (performance.now() - t0) / 1000;
  await deadline(c.out.waitFor(/PFO listening .*pfo=stress/, { from: mark }), 60_000, "log");
  const enableLogS = (performance.now() - t0) / 1000;
  await until(c, (l) => l[0]?.listeners === o.ports && l[0].state === "listening", "listening");
  const enableS = (performance.now() - t0) / 1000;
  const after = await memory(c.child.pid);
  const ports = Array.from({ length: o.ports }, (_, i) => start + i);
  const sampled = await sample(ports, o.sample);

  const t1 = performance.now();
  await c.cli("pfo", "disable", "stress");
  await until(c, (l) => l[0]?.listeners === 0, "disabled");
  const disableS = (performance.now() - t1) / 1000;
  const t2 = performance.now();
  await c.cli("pfo", "enable", "stress");
  await until(c, (l) => l[0]?.listeners === o.ports, "re-enabled");
  const reenableS = (performance.now() - t2) / 1000;
  const end2 = await memory(c.child.pid);
  return {
    mode: "range",
    ports: o.ports,
    enableS,
    enableLogS,
    commandS,
    rssBeforeMiB: before.rss,
    rssAfterMiB: after.rss,
    hwmMiB: end2.hwm,
    sample: sampled,
    disableS,
    reenableS,
    rssReenabledMiB: end2.rss,
  };
}

async function runSingles(o: Options, echoPort: number): Promise<Report> {
  await using pair = await startPair();
  const c = pair.console;
  const before = await memory(c.child.pid);
  const start = freeRange(o.ports);
  const ports = Array.from({ length: o.ports }, (_, i) => start + i);
  const lines = ["# stress: single-port PFOs", "pfos:"];
  for (const p of ports) {
    lines.push(`  - name: s${p}`, `    listen: "${p}"`, `    target: "127.0.0.1:${echoPort}"`);
  }
  // Write beside, then rename: the Console sees one complete file.
  const tmp = `${c.settingsPath}.new`;
  await Deno.writeTextFile(tmp, lines.join("\n") + "\n", { mode: 0o600 });
  const mark = c.out.mark;
  const t0 = performance.now();
  await Deno.rename(tmp, c.settingsPath);
  const commandS = (performance.now() - t0) / 1000;
  // One "PFO listening" line per PFO: count them up to the last (bounded).
  let logged = 0;
  let scanned = mark;
  for (let i = 0; i < 100_000 && logged < o.ports; i++) {
    const seen = c.out.lines.length;
    for (; scanned < seen; scanned++) {
      if (c.out.lines[scanned].includes("PFO listening")) logged++;
    }
    if (logged < o.ports) {
      await c.out.waitFor(/PFO listening/, { from: seen, ms: 60_000 });
    }
  }
  const enableLogS = (performance.now() - t0) / 1000;
  await until(
    c,
    (l) => l.length === o.ports && l.every((p) => p.state === "listening"),
    "every single PFO listening",
  );
  const enableS = (performance.now() - t0) / 1000;
  const after = await memory(c.child.pid);
  const sampled = await sample(ports, o.sample);
  return {
    mode: "singles",
    ports: o.ports,
    enableS,
    enableLogS,
    commandS,
    rssBeforeMiB: before.rss,
    rssAfterMiB: after.rss,
    hwmMiB: after.hwm,
    sample: sampled,
  };
}

function print(r: Report): boolean {
  const enabledOk = r.enableS <= TARGET_ENABLE_S;
  const rssOk = r.rssAfterMiB <= TARGET_RSS_MIB;
  const f = (s: number) => `${s.toFixed(2)} s`;
  console.log(`\n== ${r.ports} ports, ${r.mode === "range" ? "one range PFO" : "single PFOs"}`);
  console.log(
    `enable: ${f(r.enableS)} to every port listening per status --json ` +
      `(target <= ${TARGET_ENABLE_S} s: ${enabledOk ? "met" : "MISSED"})`,
  );
  console.log(
    `        ${f(r.enableLogS)} to the Console's log line; the ${
      r.mode === "range" ? "`pfo add` command" : "settings rename"
    } took ${f(r.commandS)}`,
  );
  console.log(
    `Console RSS: ${r.rssBeforeMiB.toFixed(1)} MiB before, ${r.rssAfterMiB.toFixed(1)} MiB with ` +
      `${r.ports} ports (peak ${r.hwmMiB.toFixed(1)} MiB; target <= ${TARGET_RSS_MIB} MiB: ${
        rssOk ? "met" : "MISSED"
      })`,
  );
  console.log(`sample: ${r.sample.ok} of ${r.sample.tried} random ports forwarded an echo`);
  if (r.disableS !== undefined) {
    console.log(
      `disable all: ${f(r.disableS)}; enable again: ${f(r.reenableS!)}; ` +
        `Console RSS then ${r.rssReenabledMiB!.toFixed(1)} MiB`,
    );
  }
  return enabledOk && rssOk && r.sample.ok === r.sample.tried;
}

if (import.meta.main) {
  const o = parseArgs(Deno.args);
  const abort = setTimeout(() => {
    console.error(`stress: stopped after the ${o.deadlineS} s deadline`);
    Deno.exit(1);
  }, o.deadlineS * 1000);
  using echo = tcpServer(async (conn) => {
    const buf = new Uint8Array(16 * 1024);
    let n: number | null;
    while ((n = await conn.read(buf)) !== null) {
      for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
    }
    await conn.closeWrite();
  });
  console.log(
    `stress: ${o.ports} ports, mode ${o.mode}, sample ${o.sample}; Deno ${Deno.version.deno}, ` +
      `${navigator.hardwareConcurrency} CPUs, load average ${Deno.loadavg()[0].toFixed(2)}`,
  );
  let ok = true;
  if (o.mode !== "singles") ok = print(await runRange(o, echo.port)) && ok;
  if (o.mode !== "range") ok = print(await runSingles(o, echo.port)) && ok;
  clearTimeout(abort);
  Deno.exit(ok ? 0 : 1);
}
