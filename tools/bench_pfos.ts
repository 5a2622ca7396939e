// deno-lint-ignore-file no-console -- a bench script: its figures are its output
/**
 * `deno task bench:pfos`: a Console with many single PFOs in its settings
 * file (10,000 by default), spawned as `deno task console` runs it (its
 * flags, `--session 127.0.0.1:0`, `--headless`). It measures:
 *
 * - start-up: spawn to the "console ready" line, and the Console's VmRSS;
 * - a series of `pfo add`: each call's round trip over the control API
 *   (made in this process, as the CLI makes it, without Deno's start-up),
 *   the wall time of one `pfo add` through the CLI, and VmRSS after;
 * - a hand edit of one entry: the file rewritten, until "Settings reloaded".
 *
 * Each figure is checked against its target (start-up ≤ 2 s, RSS ≤ 150 MiB,
 * each `pfo add` ≤ 150 ms, a hand edit ≤ 500 ms). `tools/bench.ts` runs
 * this case too (the `pfos` workload), with 200 PFOs in `--smoke` mode.
 *
 * VmRSS and the load average come from `cat /proc/...` in a child process:
 * Deno lets a script read `/proc` only with `--allow-all`.
 *
 * ```sh
 * deno task bench:pfos [--count N] [--adds N] [--json FILE] [--cpu-prof DIR]
 * ```
 *
 * @module
 */

import { callControl } from "../lib/app/control.ts";
import { settingsPaths } from "../lib/settings/paths.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/** The Deno that runs the Console: this one when `--allow-run` covers it, else PATH's. */
const DENO = Deno.permissions.querySync({ name: "run", command: Deno.execPath() }).state ===
    "granted"
  ? Deno.execPath()
  : "deno";

/** What one run of the PFO bench does. */
export interface PfoBenchOptions {
  /** Single PFOs in the settings file. */
  readonly count: number;
  /** `pfo add` calls made on the running Console. */
  readonly adds: number;
  /** Where the Console writes a CPU profile (`--cpu-prof`), or null. */
  readonly cpuProf: string | null;
  /** Progress lines go here. */
  readonly log: (line: string) => void;
}

/** One figure and whether it meets its target. */
export interface PfoBenchTarget {
  readonly what: string;
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean;
}

/** What one run measured. */
export interface PfoBenchResult {
  readonly count: number;
  /** Spawn to "console ready". */
  readonly startupMs: number;
  /** VmRSS once ready. */
  readonly startupRssMiB: number;
  /** CPU seconds (user + system) the Console used to get ready: less sensitive to load than wall time. */
  readonly startupCpuS: number;
  /** Each `pfo add` over the control API. */
  readonly addMs: readonly number[];
  /** One `pfo add` through the CLI, process start included. */
  readonly cliAddMs: number;
  /** VmRSS after the adds. */
  readonly addRssMiB: number;
  /** File rewritten to "Settings reloaded". */
  readonly handEditMs: number;
  /** VmRSS at the end. */
  readonly endRssMiB: number;
  /** CPU seconds the Console used in all. */
  readonly endCpuS: number;
  /** `/proc/loadavg` before and after. */
  readonly loadBefore: string;
  readonly loadAfter: string;
  readonly targets: readonly PfoBenchTarget[];
}

async function consoleFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks.console.split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.findIndex((w) => w.endsWith(".ts")));
}

async function cat(path: string): Promise<string> {
  const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" })
    .output();
  return decoder.decode(out.stdout);
}

async function rssMiB(pid: number): Promise<number> {
  const m = (await cat(`/proc/${pid}/status`)).match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** User plus system CPU seconds the process has used (`/proc/PID/stat`, in clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await cat(`/proc/${pid}/stat`);
  // Fields after the command name, which sits in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function loadavg(): Promise<string> {
  return (await cat("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
}

/** A run of `n` free ports on 127.0.0.1 below the ephemeral range. */
function freeRange(n: number): number {
  for (let i = 0; i < 20; i++) {
    const base = 10_000 + Math.floor(Math.random() * (32_768 - 10_000 - n));
    const held: Deno.Listener[] = [];
    try {
      for (let p = base; p < base + n; p++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: p }));
      }
      return base;
    } catch {
      // Taken: try another run.
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`Cannot find ${n} free consecutive ports on 127.0.0.1`);
}

function settingsText(count: number, base: number): string {
  const lines = ["# bench: single PFOs", "pfos:"];
  for (let i = 0; i < count; i++) {
    lines.push(
      `  - name: p${i}`,
      `    listen: "127.0.0.1:${base + i}"`,
      `    target: "127.0.0.1:9"`,
    );
  }
  return lines.join("\n") + "\n";
}

/** Reads a growing log file from where the last read stopped, counting lines that match. */
class LogTail {
  #path: string;
  #offset = 0;
  #partial = "";
  #tail: string[] = [];
  constructor(path: string) {
    this.#path = path;
  }

  /** New complete lines since the last call. */
  async lines(): Promise<string[]> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.#path);
    } catch {
      return []; // Not created yet.
    }
    try {
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(1 << 20);
      let text = "";
      while (true) {
        const n = await file.read(buf);
        if (n === null || n === 0) break;
        this.#offset += n;
        text += decoder.decode(buf.subarray(0, n), { stream: true });
      }
      const parts = (this.#partial + text).split("\n");
      this.#partial = parts.pop()!;
      this.#tail = [...this.#tail, ...parts].slice(-15);
      return parts;
    } finally {
      file.close();
    }
  }

  /** The last lines read, for an error message. */
  get tail(): string {
    return [...this.#tail, this.#partial].join("\n");
  }

  /** Wait for a line matching `re`, ignoring lines read before. */
  async waitFor(re: RegExp, child: Deno.ChildProcess, ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    let exited = false;
    child.status.then(() => (exited = true));
    while (true) {
      const hit = (await this.lines()).find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (exited || Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for ${re} in ${this.#path}${
            exited ? " (the Console exited)" : ""
          }:\n${this.tail}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

function spawnConsole(flags: string[], settings: string, log: string, prof: string | null) {
  const profFlags = prof
    ? ["--cpu-prof", `--cpu-prof-dir=${prof}`, "--cpu-prof-name=console-pfos.cpuprofile"]
    : [];
  return new Deno.Command("sh", {
    args: [
      "-c",
      'exec "$@" >"$PF_BENCH_LOG" 2>&1',
      "sh",
      DENO,
      "run",
      ...profFlags,
      ...flags,
      "console.ts",
      "--config",
      settings,
      "--session",
      "127.0.0.1:0",
      "--headless",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env: { NO_COLOR: "1", PF_BENCH_LOG: log },
  }).spawn();
}

async function cliAdd(flags: string[], settings: string, name: string, port: number) {
  const t0 = performance.now();
  const r = await new Deno.Command(DENO, {
    args: [
      "run",
      ...flags,
      "console.ts",
      "--config",
      settings,
      "pfo",
      "add",
      name,
      "--listen",
      `127.0.0.1:${port}`,
      "--target",
      "127.0.0.1:9",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!r.success) {
    throw new Error(`pfo add ${name} failed (${r.code}): ${decoder.decode(r.stderr)}`);
  }
  return performance.now() - t0;
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Exited already.
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited already.
    }
  }, 10_000);
  await child.status;
  clearTimeout(timer);
}

function judge(r: Omit<PfoBenchResult, "targets">): PfoBenchTarget[] {
  const maxAdd = Math.max(...r.addMs);
  const maxRss = Math.max(r.startupRssMiB, r.addRssMiB, r.endRssMiB);
  return [
    {
      what: `Console start-up with ${r.count} single PFOs`,
      goal: "≤ 2 s",
      measured: `${(r.startupMs / 1000).toFixed(2)} s (CPU ${r.startupCpuS.toFixed(2)} s)`,
      met: r.startupMs <= 2000,
    },
    {
      what: "Console RSS (start-up, after the adds, at the end)",
      goal: "≤ 150 MiB",
      measured: `${r.startupRssMiB.toFixed(0)} / ${r.addRssMiB.toFixed(0)} / ${
        r.endRssMiB.toFixed(0)
      } MiB`,
      met: maxRss <= 150,
    },
    {
      what: `pfo add (control API round trip, ${r.addMs.length} calls)`,
      goal: "≤ 150 ms each",
      measured: `${r.addMs.map((ms) => ms.toFixed(0)).join(", ")} ms (CLI wall time ${
        r.cliAddMs.toFixed(0)
      } ms)`,
      met: maxAdd <= 150,
    },
    {
      what: "hand edit of one entry applied",
      goal: "≤ 500 ms",
      measured: `${r.handEditMs.toFixed(0)} ms`,
      met: r.handEditMs <= 500,
    },
  ];
}

/** Measures start-up, `pfo add` and a hand edit with `count` single PFOs. */
export async function benchPfos(options: PfoBenchOptions): Promise<PfoBenchResult> {
  const { count, adds, log } = options;
  const loadBefore = await loadavg();
  const dir = await Deno.makeTempDir({ prefix: "portferry-bench-pfos-" });
  const settings = `${dir}/conf/portferry-console.yaml`;
  // Beside, not in, the settings folder: the Console watches that folder.
  const logFile = `${dir}/console.log`;
  await Deno.mkdir(`${dir}/conf`, { mode: 0o700 });
  const base = freeRange(count + adds + 1);
  await Deno.writeTextFile(settings, settingsText(count, base), { mode: 0o600 });
  const flags = await consoleFlags();
  const t0 = performance.now();
  const child = spawnConsole(flags, settings, logFile, options.cpuProf);
  try {
    const tail = new LogTail(logFile);
    await tail.waitFor(/console ready/, child, 120_000);
    const startupMs = performance.now() - t0;
    const startupRssMiB = await rssMiB(child.pid);
    const startupCpuS = await cpuSeconds(child.pid);
    log(
      `${count} PFOs: ready in ${startupMs.toFixed(0)} ms (CPU ${startupCpuS.toFixed(2)} s), RSS ${
        startupRssMiB.toFixed(1)
      } MiB`,
    );
    const control = settingsPaths(settings).control;
    const addMs: number[] = [];
    for (let i = 0; i < adds; i++) {
      const body = {
        name: `added${i}`,
        listen: `127.0.0.1:${base + count + i}`,
        target: "127.0.0.1:9",
      };
      const t = performance.now();
      await callControl(control, "pfo/add", body, "Console");
      addMs.push(performance.now() - t);
    }
    const cliAddMs = await cliAdd(flags, settings, "added-cli", base + count + adds);
    const addRssMiB = await rssMiB(child.pid);
    log(
      `pfo add: ${addMs.map((ms) => ms.toFixed(0)).join(", ")} ms; CLI ${cliAddMs.toFixed(0)} ms`,
    );
    const text = await Deno.readTextFile(settings);
    await tail.lines(); // Skip what the adds logged.
    const edited = text.replace(/target: "?127\.0\.0\.1:9"?\n/, `target: "127.0.0.1:7"\n`);
    if (edited === text) throw new Error("Cannot edit the settings file: no target to change");
    const t1 = performance.now();
    await Deno.writeTextFile(settings, edited);
    await tail.waitFor(/Settings reloaded/, child, 30_000);
    const handEditMs = performance.now() - t1;
    const endRssMiB = await rssMiB(child.pid);
    const endCpuS = await cpuSeconds(child.pid);
    log(
      `hand edit applied in ${handEditMs.toFixed(0)} ms; RSS ${endRssMiB.toFixed(1)} MiB; CPU ${
        endCpuS.toFixed(2)
      } s in all`,
    );
    const r = {
      count,
      startupMs,
      startupRssMiB,
      startupCpuS,
      addMs,
      cliAddMs,
      addRssMiB,
      handEditMs,
      endRssMiB,
      endCpuS,
      loadBefore,
      loadAfter: await loadavg(),
    };
    return { ...r, targets: judge(r) };
  } finally {
    await stop(child);
    await Deno.remove(dir, { recursive: true });
  }
}

/** The targets as a Markdown table. */
export function pfoTargetTable(r: PfoBenchResult): string {
  const rows = r.targets.map((t) =>
    `| ${t.what} | ${t.goal} | ${t.measured} | ${t.met ? "met" : "missed"} |`
  );
  return ["| target | goal | measured | |", "|---|---|---|---|", ...rows].join("\n");
}

async function main(): Promise<number> {
  let count = 10_000;
  let adds = 5;
  let json: string | null = null;
  let cpuProf: string | null = null;
  const args = [...Deno.args];
  while (args.length > 0) {
    const a = args.shift()!;
    const value = () => {
      const v = args.shift();
      if (v === undefined) throw new Error(`Cannot parse arguments: ${a} needs a value`);
      return v;
    };
    if (a === "--count") count = Number(value());
    else if (a === "--adds") adds = Number(value());
    else if (a === "--json") json = value();
    else if (a === "--cpu-prof") cpuProf = value();
    else throw new Error(`Cannot parse arguments: unknown option "${a}"`);
  }
  const r = await benchPfos({ count, adds, cpuProf, log: (s) => console.error(`[bench] ${s}`) });
  console.log(pfoTargetTable(r));
  console.log(`\nLoad average (1, 5, 15 min): ${r.loadBefore} before, ${r.loadAfter} after`);
  if (json) await Deno.writeTextFile(json, JSON.stringify(r, null, 2) + "\n");
  return r.targets.every((t) => t.met) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
