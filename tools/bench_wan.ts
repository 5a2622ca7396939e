// deno-lint-ignore-file no-console -- a bench script: its table is its output
/**
 * `deno task bench --wan`: the bench on emulated long paths. A link emulator
 * (tools/wan_link.ts, one process per link) sits where the internet would,
 * for every path alike:
 *
 * - direct: between the client and the server;
 * - portferry: between the Daemon and the Console (the session link);
 * - `ssh -L` (aes128-gcm) and `ssh -R`: between `ssh` and `sshd`.
 *
 * The emulator also gives new connections the TCP handshake's round trip, so
 * a direct connection costs what it costs on a real path (one round trip to
 * connect, one for the request); a tunnel's own link is connected already.
 *
 * Profiles: `1g-20ms` (1 Gbit/s, 20 ms each way), `100m-100ms` and `10g-1ms`.
 * Figures per profile and path: 1-stream upload and download, 4 streams each
 * way, the time for a new connection with a 1-byte request and reply, and
 * the peak Console and Daemon RSS during the transfers. `ceiling` measures
 * the emulator itself (no delay, no rate limit): the most any profile can show.
 *
 * ```sh
 * deno task bench --wan [--profile 1g-20ms,100m-100ms,10g-1ms,ceiling]
 *                       [--tools direct,portferry,ssh-L-aes,ssh-R]
 *                       [--workloads up1,down1,up4,down4,conn] [--smoke]
 *                       [--json FILE] [--markdown FILE | --no-markdown]
 * ```
 *
 * Writes `bench/results/wan.json` and, after a run that is not `--smoke`, the
 * measured profiles' sections of `bench/RESULTS.md` (a full loopback run
 * keeps them).
 *
 * @module
 */

import {
  buildLoadgen,
  catProc,
  children,
  DENO,
  errorText,
  kill,
  loadAverage,
  Loadgen,
  machine,
  type PathDef,
  portferryPath,
  ROOT_PATH,
  type Running,
  spawnLogged,
  type Sshd,
  sshPath,
  startSshd,
  stopChild,
  type Via,
  waitForLine,
  which,
} from "./bench_loopback.ts";
import { WAN_HEADING } from "./_bench_sections.ts";

/** One emulated link. */
export interface WanProfile {
  readonly name: string;
  readonly label: string;
  readonly rateMbit: number;
  readonly delayMs: number;
  /** Seconds per throughput run: enough round trips for windows to open. */
  readonly seconds: number;
  /** Seconds of back-to-back new connections. */
  readonly connSeconds: number;
}

/** The profiles, by the name `--profile` takes. */
export const WAN_PROFILES: readonly WanProfile[] = [
  {
    name: "1g-20ms",
    label: "1 Gbit/s, 20 ms each way",
    rateMbit: 1000,
    delayMs: 20,
    seconds: 4,
    connSeconds: 2,
  },
  {
    name: "100m-100ms",
    label: "100 Mbit/s, 100 ms each way",
    rateMbit: 100,
    delayMs: 100,
    seconds: 6,
    connSeconds: 3,
  },
  {
    name: "10g-1ms",
    label: "10 Gbit/s, 1 ms each way",
    rateMbit: 10_000,
    delayMs: 1,
    seconds: 2,
    connSeconds: 1,
  },
  {
    name: "ceiling",
    label: "the emulator's own ceiling: no delay, no rate limit",
    rateMbit: 0,
    delayMs: 0,
    seconds: 2,
    connSeconds: 1,
  },
];

const WAN_TOOLS = ["direct", "portferry", "ssh-L-aes", "ssh-R"];
const WAN_WORKLOADS = ["up1", "down1", "up4", "down4", "conn"] as const;
type WanWorkload = typeof WAN_WORKLOADS[number];

interface WanOptions {
  profiles: WanProfile[];
  tools: string[];
  workloads: WanWorkload[];
  smoke: boolean;
  json: string;
  markdown: string | null;
}

function parseWanArgs(args: string[]): WanOptions {
  const o: WanOptions = {
    profiles: WAN_PROFILES.filter((p) => p.name !== "ceiling"),
    tools: WAN_TOOLS,
    workloads: [...WAN_WORKLOADS],
    smoke: false,
    json: `${ROOT_PATH}bench/results/wan.json`,
    markdown: `${ROOT_PATH}bench/RESULTS.md`,
  };
  let profilesSet = false;
  let jsonSet = false;
  const list = (i: number, known: readonly string[], what: string): string[] => {
    const v = args[i];
    if (v === undefined) throw new Error(`Cannot parse arguments: ${args[i - 1]} needs a value`);
    const names = v.split(",");
    for (const n of names) {
      if (!known.includes(n)) {
        throw new Error(
          `Cannot parse arguments: unknown ${what} "${n}" (one of ${known.join(", ")})`,
        );
      }
    }
    return names;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--wan") continue;
    else if (a === "--smoke") o.smoke = true;
    else if (a === "--profile") {
      const names = list(++i, WAN_PROFILES.map((p) => p.name), "profile");
      o.profiles = WAN_PROFILES.filter((p) => names.includes(p.name));
      profilesSet = true;
    } else if (a === "--tools") o.tools = list(++i, WAN_TOOLS, "tool");
    else if (a === "--workloads") {
      o.workloads = list(++i, WAN_WORKLOADS, "workload") as WanWorkload[];
    } else if (a === "--json") {
      o.json = args[++i];
      jsonSet = true;
    } else if (a === "--markdown") o.markdown = args[++i];
    else if (a === "--no-markdown") o.markdown = null;
    else {throw new Error(
        `Cannot parse arguments: "${a}" is not a --wan option (see tools/bench_wan.ts)`,
      );}
  }
  if (!profilesSet && !o.smoke) o.profiles = [...WAN_PROFILES];
  if (o.smoke) {
    if (!profilesSet) o.profiles = [WAN_PROFILES[0]];
    if (!jsonSet) o.json = `${ROOT_PATH}bench/results/wan-smoke.json`;
    o.markdown = null;
  }
  return o;
}

// -------------------------------------------------------------------- links

/** The emulator processes of one profile, started as paths ask for them. */
class Links {
  readonly #stops: (() => Promise<void>)[] = [];
  constructor(readonly profile: WanProfile, readonly dir: string) {}

  /** A link in front of 127.0.0.1:`port`; resolves to the port to dial. */
  readonly via: Via = async (port) => {
    const log = `${this.dir}/wan-link-${this.#stops.length}.log`;
    const child = spawnLogged(DENO, [
      "run",
      "--no-prompt",
      "--allow-net=127.0.0.1",
      `${ROOT_PATH}tools/wan_link.ts`,
      "--listen",
      "127.0.0.1:0",
      "--to",
      `127.0.0.1:${port}`,
      "--delay-ms",
      String(this.profile.delayMs),
      "--rate-mbit",
      String(this.profile.rateMbit),
      "--handshake",
    ], log);
    this.#stops.push(() => stopChild(child, 2000));
    const [, bound] = await waitForLine(log, /listening on 127\.0\.0\.1:(\d+)/, 20_000, child);
    return Number(bound);
  };

  async stop(): Promise<void> {
    for (const stop of this.#stops.splice(0)) await stop().catch(() => {});
  }
}

function wanPaths(links: Links, ssh: string | null, sshd: (() => Promise<Sshd>) | null): PathDef[] {
  const direct: PathDef = {
    name: "direct",
    label: "direct TCP",
    memory: null,
    start: async (target) => ({
      port: await links.via(target),
      pids: [],
      stop: () => Promise.resolve(),
    }),
  };
  const out = [direct, portferryPath(null, links.via)];
  if (ssh && sshd) {
    out.push(
      sshPath(
        ssh,
        sshd,
        "ssh-L-aes",
        "ssh -L (aes128-gcm)",
        "L",
        "aes128-gcm@openssh.com",
        links.via,
      ),
      sshPath(ssh, sshd, "ssh-R", "ssh -R", "R", null, links.via),
    );
  }
  return out;
}

// ---------------------------------------------------------------- measuring

/** Peak VmRSS (KiB) of each of `pids` while `work` runs, sampled every 200 ms. */
async function peakRss<T>(
  pids: number[],
  work: Promise<T>,
): Promise<{ value: T; peaks: number[] }> {
  const peaks = pids.map(() => 0);
  let done = false;
  const sampling = (async () => {
    while (!done) {
      const text = await catProc(pids.map((pid) => `/proc/${pid}/status`));
      const rss = [...text.matchAll(/^VmRSS:\s+(\d+) kB/gm)].map((m) => Number(m[1]));
      rss.forEach((kib, i) => (peaks[i] = Math.max(peaks[i], kib)));
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  try {
    return { value: await work, peaks };
  } finally {
    done = true;
    await sampling;
  }
}

/** One workload on one path: Mbit/s, or ms for `conn`; peak RSS of the path's processes. */
async function wanOnce(
  lg: Loadgen,
  running: Running,
  workload: WanWorkload,
  p: WanProfile,
  smoke: boolean,
): Promise<{ value: number; peaks: number[]; extra: Record<string, number> }> {
  const port = String(running.port);
  const seconds = smoke ? 0.5 : workload === "conn" ? p.connSeconds : p.seconds;
  const budget = (seconds + 60) * 1000;
  if (workload === "conn") {
    const r = await lg.run(["connrate", port, "1", String(seconds)], budget);
    if (!r.connections) throw new Error(`no connection completed (${r.errors} failed)`);
    return { value: 1000 / r.per_second, peaks: [], extra: { connections: r.connections } };
  }
  const dir = workload.startsWith("up") ? "up" : "down";
  const streams = workload.endsWith("4") ? "4" : "1";
  const { value: r, peaks } = await peakRss(
    running.pids,
    lg.run(["tput", dir, port, streams, String(seconds)], budget),
  );
  if (r.errors) throw new Error(`${r.errors} stream(s) failed`);
  return { value: r.gbps * 1000, peaks, extra: { bytes: r.bytes, seconds: r.seconds } };
}

/** What one path measured on one profile. */
interface WanPathResult {
  readonly name: string;
  readonly label: string;
  /** Mbit/s for transfers, ms for `conn`. */
  readonly figures: Partial<Record<WanWorkload, number>>;
  /** Peak VmRSS in MiB of the path's processes (Console, Daemon) over 1-stream and 4-stream runs. */
  readonly peakRssMiB: { streams1: number[]; streams4: number[] };
  readonly errors: string[];
}

/** Every path of one profile: each workload goes round the paths in turn. */
async function runProfile(
  lg: Loadgen,
  target: number,
  p: WanProfile,
  o: WanOptions,
  work: string,
  log: (s: string) => void,
): Promise<WanPathResult[]> {
  const dir = await Deno.makeTempDir({ dir: work, prefix: `wan-${p.name}-` });
  const links = new Links(p, dir);
  const ssh = await which("ssh");
  const sshdBin = await which("sshd");
  const keygen = await which("ssh-keygen");
  let sshd: Promise<Sshd> | null = null;
  const getSshd = sshdBin && keygen
    ? () => (sshd ??= Deno.makeTempDir({ dir, prefix: "sshd-" }).then((d) =>
      startSshd(sshdBin, keygen, d)
    ))
    : null;
  if (!ssh || !getSshd) log("ssh paths skipped: install openssh-client and openssh-server");
  // The ceiling is the emulator's own: the direct path through it says it all.
  const active = wanPaths(links, ssh, getSshd).filter((d) =>
    o.tools.includes(d.name) && (p.name !== "ceiling" || d.name === "direct")
  );
  const results = new Map<PathDef, WanPathResult>();
  const running = new Map<PathDef, Running>();
  try {
    for (const def of active) {
      const result: WanPathResult = {
        name: def.name,
        label: def.label,
        figures: {},
        peakRssMiB: { streams1: [], streams4: [] },
        errors: [],
      };
      results.set(def, result);
      try {
        const pdir = await Deno.makeTempDir({ dir, prefix: `${def.name}-` });
        running.set(def, await def.start(target, pdir));
      } catch (err) {
        result.errors.push(`start: ${errorText(err)}`);
        log(`${p.name} ${def.label}: failed to start: ${errorText(err)}`);
      }
    }
    for (const w of o.workloads) {
      for (const def of active) {
        const r = running.get(def);
        const result = results.get(def)!;
        if (!r) continue;
        try {
          // Let the link drain what the last run left queued (2 × BDP) and in flight.
          await new Promise((resolve) => setTimeout(resolve, 8 * p.delayMs + 100));
          const got = await wanOnce(lg, r, w, p, o.smoke);
          result.figures[w] = got.value;
          const key = w.endsWith("4") ? "streams4" : "streams1";
          got.peaks.forEach((kib, i) => {
            const list = result.peakRssMiB[key];
            list[i] = Math.max(list[i] ?? 0, kib / 1024);
          });
          log(`${p.name} ${def.label}: ${w} ${got.value.toFixed(w === "conn" ? 1 : 0)}`);
        } catch (err) {
          result.errors.push(`${w}: ${errorText(err)}`);
          log(`${p.name} ${def.label}: ${w} failed: ${errorText(err)}`);
        }
      }
    }
  } finally {
    for (const r of running.values()) await r.stop().catch(() => {});
    if (sshd) await (await (sshd as Promise<Sshd>)).stop().catch(() => {});
    await links.stop();
  }
  return [...results.values()];
}

// ---------------------------------------------------------------- reporting

const COLUMNS: { key: WanWorkload; title: string; higher: boolean }[] = [
  { key: "up1", title: "1-stream up (Mbit/s)", higher: true },
  { key: "down1", title: "1-stream down (Mbit/s)", higher: true },
  { key: "up4", title: "4 streams up (Mbit/s)", higher: true },
  { key: "down4", title: "4 streams down (Mbit/s)", higher: true },
  { key: "conn", title: "new connection + 1-byte reply (ms)", higher: false },
];

/** The best ssh figure of a column, for the ratio to ssh. */
function bestSsh(rows: WanPathResult[], key: WanWorkload, higher: boolean): number | null {
  const vs = rows.filter((r) => r.name.startsWith("ssh")).map((r) => r.figures[key])
    .filter((v): v is number => v !== undefined);
  if (vs.length === 0) return null;
  return higher ? Math.max(...vs) : Math.min(...vs);
}

function cell(rows: WanPathResult[], r: WanPathResult, key: WanWorkload, higher: boolean): string {
  const v = r.figures[key];
  if (v === undefined) return "—";
  const text = key === "conn" ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
  if (r.name === "direct") return text;
  const ratios: string[] = [];
  const direct = rows.find((d) => d.name === "direct")?.figures[key];
  if (direct) ratios.push(`${(v / direct).toFixed(2)}× direct`);
  const ssh = r.name === "portferry" ? bestSsh(rows, key, higher) : null;
  if (ssh) ratios.push(`${(v / ssh).toFixed(2)}× ssh`);
  return ratios.length ? `${text} (${ratios.join(", ")})` : text;
}

/** The table of one profile. */
export function wanTable(rows: WanPathResult[]): string {
  const head = ["path", ...COLUMNS.map((c) => c.title), "peak RSS, 1 stream / 4 streams (MiB)"];
  const body = rows.map((r) => {
    const rss = (xs: number[]) => xs.length ? xs.map((x) => x.toFixed(0)).join(" + ") : "";
    const mem = r.name === "portferry" && r.peakRssMiB.streams1.length
      ? `Console + Daemon ${rss(r.peakRssMiB.streams1)} / ${rss(r.peakRssMiB.streams4) || "—"}`
      : "—";
    return [r.label, ...COLUMNS.map((c) => cell(rows, r, c.key, c.higher)), mem];
  });
  return [head, head.map(() => "---"), ...body].map((c) => `| ${c.join(" | ")} |`).join("\n");
}

/** Issue 13's targets for one profile, as table rows; none for profiles it sets none for. */
export function wanTargets(p: WanProfile, rows: WanPathResult[]): string[] {
  const fig = (name: string, key: WanWorkload) => rows.find((r) => r.name === name)?.figures[key];
  const out: string[] = [];
  const row = (
    what: string,
    goal: string,
    a: number | undefined,
    b: number | undefined,
    ok: (r: number) => boolean,
  ) => {
    const measured = a === undefined || b === undefined ? "not measured" : `${(a / b).toFixed(2)}×`;
    const met = a === undefined || b === undefined ? "—" : ok(a / b) ? "met" : "missed";
    out.push(`| ${what} | ${goal} | ${measured} | ${met} |`);
  };
  const streams: [WanWorkload, string, number][] = p.name === "1g-20ms"
    ? [
      ["up1", "1-stream up", 0.9],
      ["down1", "1-stream down", 0.9],
      ["up4", "4 streams up", 0.95],
      [
        "down4",
        "4 streams down",
        0.95,
      ],
    ]
    : p.name === "100m-100ms"
    ? [["up1", "1-stream up", 0.9], ["down1", "1-stream down", 0.9]]
    : [];
  for (const [key, what, goal] of streams) {
    row(
      `portferry ${what} vs direct`,
      `≥ ${goal}×`,
      fig("portferry", key),
      fig("direct", key),
      (r) => r >= goal,
    );
  }
  if (p.name === "1g-20ms") {
    for (const key of ["up1", "down1"] as const) {
      row(
        `portferry ${key === "up1" ? "1-stream up" : "1-stream down"} vs ssh -R`,
        "≥ 2.4×",
        fig("portferry", key),
        fig("ssh-R", key),
        (r) => r >= 2.4,
      );
    }
  }
  if (p.name === "ceiling") return out;
  // Direct TCP pays two round trips (handshake, request); one round trip is half of it.
  const direct = fig("direct", "conn");
  row(
    "portferry new connection + reply vs one direct round trip",
    "≤ 1.1×",
    fig("portferry", "conn"),
    direct === undefined ? undefined : direct / 2,
    (r) => r <= 1.1,
  );
  const pf = rows.find((r) => r.name === "portferry");
  if (pf?.peakRssMiB.streams1.length) {
    const peak = Math.max(...pf.peakRssMiB.streams1);
    out.push(
      `| peak RSS of the Console or the Daemon, 1 stream | ≤ 150 MiB | ${peak.toFixed(0)} MiB | ${
        peak <= 150 ? "met" : "missed"
      } |`,
    );
  }
  return out;
}

function targetLines(ts: string[]): string[] {
  if (ts.length === 0) return [];
  return [
    "",
    "Targets (issue 13):",
    "",
    "| target | goal | measured | |",
    "|---|---|---|---|",
    ...ts,
  ];
}

/** The commit the worktree is on, read from .git (the bench may not run `git`). */
async function commitOf(): Promise<string> {
  try {
    let gitDir = `${ROOT_PATH}.git`;
    const dotGit = await Deno.stat(gitDir);
    if (dotGit.isFile) {
      gitDir = (await Deno.readTextFile(gitDir)).replace(/^gitdir:\s*/, "").trim();
    }
    const head = (await Deno.readTextFile(`${gitDir}/HEAD`)).trim();
    if (!head.startsWith("ref: ")) return head.slice(0, 12);
    const ref = head.slice(5);
    const common = await Deno.readTextFile(`${gitDir}/commondir`)
      .then((c) => c.trim().startsWith("/") ? c.trim() : `${gitDir}/${c.trim()}`)
      .catch(() => gitDir);
    for (const d of [gitDir, common]) {
      const hash = await Deno.readTextFile(`${d}/${ref}`).catch(() => "");
      if (hash.trim()) return `${hash.trim().slice(0, 12)} (${ref.replace("refs/heads/", "")})`;
    }
    const packed = await Deno.readTextFile(`${common}/packed-refs`).catch(() => "");
    const line = packed.split("\n").find((l) => l.endsWith(` ${ref}`));
    return line ? line.slice(0, 12) : "unknown";
  } catch {
    return "unknown";
  }
}

const BEGIN = (name: string) => `<!-- wan:${name} -->`;
const END = (name: string) => `<!-- /wan:${name} -->`;

/** Put each profile's section into `file` in place of its last one, in profile order. */
async function writeWanSections(file: string, sections: Map<string, string>): Promise<void> {
  const text = await Deno.readTextFile(file).catch(() => "");
  const start = text.indexOf(WAN_HEADING);
  const before = start < 0 ? text.trimEnd() : text.slice(0, start).trimEnd();
  const old = start < 0 ? "" : text.slice(start);
  // Other marked sections (a loopback comparison written by hand) stay, after the profiles.
  const others = [...old.matchAll(/<!-- wan:([\w-]+) -->/g)].map((m) => m[1])
    .filter((name) => !WAN_PROFILES.some((p) => p.name === name));
  const parts = [...WAN_PROFILES.map((p) => p.name), ...others].map((name) => {
    if (sections.has(name)) return sections.get(name)!;
    const a = old.indexOf(BEGIN(name));
    const b = old.indexOf(END(name));
    return a >= 0 && b > a ? old.slice(a, b + END(name).length) : null;
  }).filter((s): s is string => s !== null);
  const intro = [
    WAN_HEADING,
    "",
    "A link emulator (tools/wan_link.ts: fixed one-way delay, rate limit, a queue of 2× the",
    "bandwidth-delay product with backpressure, no loss) sits where the internet would: between",
    "client and server (direct), between the Daemon and the Console, between `ssh` and `sshd`. It",
    "gives new connections the TCP handshake's round trip too, so direct TCP pays one round trip to",
    "connect and one for the request; a tunnel's own link is up already. Ratios: to direct, and for",
    "portferry to the best ssh path. One run per figure.",
  ].join("\n");
  const out = [before, "", intro, "", ...parts.flatMap((s) => [s, ""])].join("\n");
  const tmp = `${file}.tmp`;
  await Deno.writeTextFile(tmp, out);
  await Deno.rename(tmp, file);
  await new Deno.Command(DENO, {
    args: ["fmt", "--quiet", file],
    cwd: ROOT_PATH,
    stdout: "null",
    stderr: "null",
  })
    .output();
}

// --------------------------------------------------------------------- main

/** The WAN mode's entry: tools/bench.ts runs it when `--wan` is given. */
export async function wanMain(args: string[]): Promise<number> {
  const o = parseWanArgs(args);
  const started = Date.now();
  const work = await Deno.makeTempDir({ prefix: "portferry-bench-wan-" });
  const log = (s: string) => console.error(`[bench --wan] ${s}`);
  const onSignal = () => {
    for (const c of children) kill(c);
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const lg = new Loadgen(await buildLoadgen());
    const target = await lg.serve(work);
    const m = await machine();
    const commit = await commitOf();
    const report: string[] = [];
    const sections = new Map<string, string>();
    const json: Record<string, unknown> = {
      date: new Date(started).toISOString(),
      commit,
      machine: m,
    };
    let failed = false;
    try {
      for (const p of o.profiles) {
        const loadBefore = await loadAverage();
        const t0 = Date.now();
        const rows = await runProfile(lg, target.port, p, o, work, log);
        const loadAfter = await loadAverage();
        const errors = rows.flatMap((r) => r.errors.map((e) => `- ${r.label}: ${e}`));
        failed ||= rows.some((r) => r.name === "portferry" && r.errors.length > 0);
        const text = [
          `### ${p.label} (\`${p.name}\`)`,
          "",
          `Commit ${commit}; ${new Date(t0).toISOString()}; ${
            o.smoke ? 0.5 : p.seconds
          } s per transfer, ${
            o.smoke ? 0.5 : p.connSeconds
          } s of back-to-back connections; load average ${loadBefore} at the start, ${loadAfter} at the end${
            o.smoke ? " (smoke: figures are not meaningful)" : ""
          }.`,
          "",
          wanTable(rows),
          ...targetLines(wanTargets(p, rows)),
          ...(errors.length ? ["", "Failed:", ...errors] : []),
        ].join("\n");
        console.log(`${text}\n`);
        report.push(text);
        sections.set(p.name, `${BEGIN(p.name)}\n\n${text}\n\n${END(p.name)}`);
        json[p.name] = { profile: p, rows, loadAverage: { start: loadBefore, end: loadAfter } };
      }
    } finally {
      await target.stop();
    }
    json.elapsedMs = Date.now() - started;
    await Deno.mkdir(o.json.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(o.json, JSON.stringify(json, null, 2) + "\n");
    log(`JSON written to ${o.json}`);
    if (o.markdown) {
      await writeWanSections(o.markdown, sections);
      log(`tables written to ${o.markdown}`);
    }
    log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return failed ? 1 : 0;
  } finally {
    for (const c of children) kill(c);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
