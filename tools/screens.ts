/**
 * The live terminal screens, measured and photographed.
 *
 * `deno task screens measure [MB]`: a Console at a pseudo-terminal
 * (util-linux `script`), once with its live screen and once with `--plain`:
 * time to the first frame (or first line), RSS, and the Console's CPU time
 * (utime+stime from /proc/PID/stat) while four streams each pull MB megabytes
 * (default 64) through one PFO from a headless Daemon.
 *
 * `deno task screens shots`: both programs' screens in tmux with a
 * session, PFOs, connections moving bytes and chat, captured with
 * `capture-pane -e`, turned into a small HTML page (escaped) and rendered by
 * `chromium --headless` to docs/console-screen.png and docs/daemon-screen.png.
 *
 * @module
 */

// deno-lint-ignore-file no-console -- a tool that reports on stdout

import { closeQuietly, DENO, hostPort, startDaemon, taskFlags, tcpServer } from "./_portferry.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();
const SIZE = { columns: 120, rows: 34 };

function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

async function output(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`Cannot run ${cmd} ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

async function consoleCli(settings: string, ...args: string[]): Promise<string> {
  const flags = await taskFlags("console");
  return await output(DENO, [
    "run",
    ...flags,
    `${ROOT.pathname}console.ts`,
    "--config",
    settings,
    ...args,
  ]);
}

/** Clock ticks (utime + stime) a process has used. */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await output("cat", [`/proc/${pid}/stat`]);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function rssKiB(pid: number): Promise<number> {
  const status = await output("cat", [`/proc/${pid}/status`]);
  return Number(status.match(/^VmRSS:\s+(\d+)/m)?.[1]);
}

/** Wait until `test` holds, polling every 50 ms, failing after `ms`. */
async function until(test: () => boolean | Promise<boolean>, ms: number, what: string) {
  const deadline = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One Console run at a pseudo-terminal: first paint, RSS and CPU under a 4-stream pull. */
async function measureOne(plain: boolean, megabytes: number) {
  const dir = await Deno.makeTempDir({ prefix: "portferry-tool-" });
  const settings = `${dir}/portferry-console.yaml`;
  const flags = await taskFlags("console");
  const program = [
    "env",
    "TERM=xterm-256color",
    "NO_COLOR=1",
    DENO,
    "run",
    ...flags,
    `${ROOT.pathname}console.ts`,
    "--config",
    settings,
    "--session",
    "127.0.0.1:0",
    "--auto-accept",
    ...(plain ? ["--plain"] : []),
  ].map(quote).join(" ");
  const started = performance.now();
  const child = new Deno.Command("script", {
    args: ["-qfec", `stty cols ${SIZE.columns} rows ${SIZE.rows}; exec ${program}`, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let seen = "";
  let firstPaintMs = 0;
  const ready = plain ? /Console listening for Daemons on/ : /portferry Console {2}session/;
  const pump = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      seen = (seen + chunk).slice(-200_000);
      if (firstPaintMs === 0 && ready.test(seen)) firstPaintMs = performance.now() - started;
    }
  })();
  const source = tcpServer(async (conn) => {
    const block = new Uint8Array(256 * 1024);
    for (let sent = 0; sent < megabytes * 1024 * 1024; sent += block.length) {
      for (let off = 0; off < block.length;) off += await conn.write(block.subarray(off));
    }
  });
  try {
    await until(() => firstPaintMs > 0, 30_000, "the first frame");
    const pid = Number(
      (await output("cat", [`/proc/${child.pid}/task/${child.pid}/children`])).trim().split(" ")[0],
    );
    const fingerprint = (await consoleCli(settings, "fingerprint")).trim();
    const address = (await until(
      () => /127\.0\.0\.1:\d+/.test(seen),
      5000,
      "address",
    ),
      JSON.parse(await consoleCli(settings, "status", "--json")).listen) as string;
    await using daemon = await startDaemon({ address, fingerprint }, { args: ["--headless"] });
    await daemon.out.waitFor(/Session established/i);
    await consoleCli(
      settings,
      "pfo",
      "add",
      "bulk",
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${source.port}`,
    );
    const status = JSON.parse(await consoleCli(settings, "status", "--json"));
    const listen = status.pfos[0].bound[0] as string;
    await new Promise((r) => setTimeout(r, 1500)); // let start-up work settle before counting
    const rssIdle = await rssKiB(pid);
    const before = await cpuTicks(pid);
    const t0 = performance.now();
    await Promise.all([0, 1, 2, 3].map(() => pull(listen)));
    const seconds = (performance.now() - t0) / 1000;
    const ticks = (await cpuTicks(pid)) - before;
    const rssAfter = await rssKiB(pid);
    return { plain, firstPaintMs, rssIdle, rssAfter, ticks, seconds, megabytes };
  } finally {
    source.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited already.
    }
    await child.status;
    await pump.catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function pull(listen: string): Promise<void> {
  const conn = await Deno.connect(hostPort(listen));
  const buf = new Uint8Array(256 * 1024);
  try {
    while ((await conn.read(buf)) !== null) { /* count nothing: the Console counts */ }
  } finally {
    closeQuietly(conn);
  }
}

async function measure(megabytes: number): Promise<void> {
  const load = (await output("cat", ["/proc/loadavg"])).trim();
  console.log(`load average before: ${load}`);
  for (const plain of [false, true, false, true]) {
    const r = await measureOne(plain, megabytes);
    const cpuSeconds = r.ticks / 100; // USER_HZ
    console.log(
      `${plain ? "--plain      " : "live screen  "} first ${plain ? "line " : "frame"} ${
        r.firstPaintMs.toFixed(0)
      } ms  RSS ${(r.rssIdle / 1024).toFixed(1)} MB idle, ${
        (r.rssAfter / 1024).toFixed(1)
      } MB after  ` +
        `4x${r.megabytes} MB in ${r.seconds.toFixed(2)} s  Console CPU ${
          cpuSeconds.toFixed(2)
        } s ` +
        `(${((cpuSeconds / r.seconds) * 100).toFixed(0)}% of a core)`,
    );
  }
  console.log(`load average after: ${(await output("cat", ["/proc/loadavg"])).trim()}`);
}

// --- shots ---------------------------------------------------------------------------

const PALETTE = [
  "#1e1e1e",
  "#cd3131",
  "#0dbc79",
  "#e5e510",
  "#2472c8",
  "#bc3fbc",
  "#11a8cd",
  "#e5e5e5",
  "#666666",
  "#f14c4c",
  "#23d18b",
  "#f5f543",
  "#3b8eea",
  "#d670d6",
  "#29b8db",
  "#ffffff",
];
const FG = "#d4d4d4";
const BG = "#1e1e1e";

function htmlEscape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** A 256-colour index as CSS. */
function color256(n: number): string {
  if (n < 16) return PALETTE[n];
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const c = n - 16;
  const step = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${step(Math.floor(c / 36))},${step(Math.floor(c / 6) % 6)},${step(c % 6)})`;
}

interface Sgr {
  fg: string | null;
  bg: string | null;
  bold: boolean;
  dim: boolean;
  underline: boolean;
  reverse: boolean;
}

function applySgr(state: Sgr, params: number[]): void {
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) {
      Object.assign(state, {
        fg: null,
        bg: null,
        bold: false,
        dim: false,
        underline: false,
        reverse: false,
      });
    } else if (p === 1) state.bold = true;
    else if (p === 2) state.dim = true;
    else if (p === 4) state.underline = true;
    else if (p === 7) state.reverse = true;
    else if (p === 22) state.bold = state.dim = false;
    else if (p === 24) state.underline = false;
    else if (p === 27) state.reverse = false;
    else if (p >= 30 && p <= 37) state.fg = PALETTE[p - 30];
    else if (p >= 90 && p <= 97) state.fg = PALETTE[p - 90 + 8];
    else if (p === 39) state.fg = null;
    else if (p >= 40 && p <= 47) state.bg = PALETTE[p - 40];
    else if (p === 49) state.bg = null;
    else if ((p === 38 || p === 48) && params[i + 1] === 5) {
      const css = color256(params[i + 2]);
      if (p === 38) state.fg = css;
      else state.bg = css;
      i += 2;
    } else if ((p === 38 || p === 48) && params[i + 1] === 2) {
      const css = `rgb(${params[i + 2]},${params[i + 3]},${params[i + 4]})`;
      if (p === 38) state.fg = css;
      else state.bg = css;
      i += 4;
    }
  }
}

function spanStyle(state: Sgr): string {
  let fg = state.fg ?? FG, bg = state.bg ?? "transparent";
  if (state.reverse) [fg, bg] = [state.bg ?? BG, state.fg ?? FG];
  return `color:${fg};background:${bg};` + (state.bold ? "font-weight:bold;" : "") +
    (state.dim ? "opacity:0.6;" : "") + (state.underline ? "text-decoration:underline;" : "");
}

/**
 * A `capture-pane -e` screen as an HTML page: SGR colours and attributes as
 * styled spans, every character HTML-escaped, any other escape dropped.
 */
export function ansiToHtml(screen: string, title: string): string {
  const state: Sgr = {
    fg: null,
    bg: null,
    bold: false,
    dim: false,
    underline: false,
    reverse: false,
  };
  let body = "";
  // deno-lint-ignore no-control-regex
  const parts = screen.split(/(\x1b\[[0-9;]*[A-Za-z])/);
  for (const part of parts) {
    // deno-lint-ignore no-control-regex
    const m = part.match(/^\x1b\[([0-9;]*)([A-Za-z])$/);
    if (m) {
      if (m[2] === "m") applySgr(state, m[1] === "" ? [0] : m[1].split(";").map(Number));
      continue;
    }
    if (part === "") continue;
    // deno-lint-ignore no-control-regex
    const text = part.replace(/[\x00-\x09\x0b-\x1f\x7f]/g, "");
    body += `<span style="${spanStyle(state)}">${htmlEscape(text)}</span>`;
  }
  return `<!doctype html><meta charset="utf-8"><title>${htmlEscape(title)}</title>
<style>body{margin:0;background:${BG}}pre{margin:0;padding:12px;font:14px/1.25 "DejaVu Sans Mono",monospace;color:${FG}}</style>
<pre>${body}</pre>`;
}

async function tmux(socket: string, ...args: string[]): Promise<string> {
  return await output("tmux", ["-L", socket, "-f", "/dev/null", ...args]);
}

async function waitScreen(socket: string, name: string, re: RegExp): Promise<RegExpMatchArray> {
  let m: RegExpMatchArray | null = null;
  await until(
    async () => (m = (await tmux(socket, "capture-pane", "-p", "-t", name)).match(re)) !== null,
    30_000,
    `${re} on ${name}`,
  );
  return m!;
}

async function startInTmux(socket: string, name: string, entry: string, args: string[]) {
  const flags = await taskFlags(entry === "console.ts" ? "console" : "daemon");
  const command = [
    "env",
    "TERM=xterm-256color",
    DENO,
    "run",
    ...flags,
    `${ROOT.pathname}${entry}`,
    ...args,
  ]
    .map(quote).join(" ");
  await tmux(
    socket,
    "new-session",
    "-d",
    "-s",
    name,
    "-x",
    String(SIZE.columns),
    "-y",
    String(SIZE.rows),
    command,
  );
}

/** A dripping source: 16 KB every 200 ms until the client goes. */
function dripServer() {
  return tcpServer(async (conn) => {
    const block = new Uint8Array(16 * 1024);
    while (true) {
      await conn.write(block);
      await new Promise((r) => setTimeout(r, 200));
    }
  });
}

async function shots(): Promise<void> {
  const socket = `portferry-shots-${Deno.pid}`;
  const dir = await Deno.makeTempDir({ prefix: "portferry-tool-" });
  const settings = `${dir}/portferry-console.yaml`;
  const drip = dripServer();
  const conns: Deno.Conn[] = [];
  try {
    await startInTmux(socket, "console", "console.ts", [
      "--config",
      settings,
      "--session",
      "127.0.0.1:0",
      "--auto-accept",
    ]);
    const [, address] = await waitScreen(socket, "console", /session port (127\.0\.0\.1:\d+)/);
    const fingerprint = (await consoleCli(settings, "fingerprint")).trim();
    await startInTmux(socket, "daemon", "daemon.ts", [
      address,
      "--fingerprint",
      fingerprint,
      "--config",
      `${dir}/portferry-daemon.yaml`,
    ]);
    await waitScreen(socket, "console", /session: established/);
    for (const [name, port] of [["web", drip.port], ["reports", drip.port]] as const) {
      await consoleCli(
        settings,
        "pfo",
        "add",
        name,
        "--listen",
        "127.0.0.1:0",
        "--target",
        `127.0.0.1:${port}`,
      );
    }
    await consoleCli(
      settings,
      "pfo",
      "add",
      "dns",
      "--udp",
      "--listen",
      "127.0.0.1:0",
      "--target",
      "127.0.0.1:53",
    );
    const status = JSON.parse(await consoleCli(settings, "status", "--json"));
    for (const [i, p] of (status.pfos as { proto: string; bound: string[] }[]).entries()) {
      if (p.proto !== "tcp") continue;
      for (let n = 0; n < 3 - i; n++) conns.push(await Deno.connect(hostPort(p.bound[0])));
    }
    await tmux(
      socket,
      "send-keys",
      "-t",
      "console",
      "-l",
      "the report server is slow today, is it busy?",
    );
    await tmux(socket, "send-keys", "-t", "console", "Enter");
    await tmux(socket, "send-keys", "-t", "daemon", "-l", "yes, backups run until 6");
    await tmux(socket, "send-keys", "-t", "daemon", "Enter");
    await new Promise((r) => setTimeout(r, 3000)); // let rates build up over a few seconds
    await Deno.mkdir(new URL("docs/", ROOT), { recursive: true });
    for (const name of ["console", "daemon"]) {
      const screen = await tmux(socket, "capture-pane", "-e", "-p", "-t", name);
      const html = `${dir}/${name}.html`;
      await Deno.writeTextFile(html, ansiToHtml(screen, `portferry ${name}`));
      const png = new URL(`docs/${name}-screen.png`, ROOT).pathname;
      await output("chromium", [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        `--screenshot=${png}`,
        "--window-size=1050,625",
        `file://${html}`,
      ]);
      console.log(`wrote ${png}`);
    }
  } finally {
    for (const c of conns) closeQuietly(c);
    drip.close();
    await tmux(socket, "kill-server").catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The screen's own cost in this process: the first frame of a busy Console, and RSS. */
async function paintCost(): Promise<void> {
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const { consoleScreen } = await import("../lib/console/screen.ts");
  const { frame } = await import("../lib/ui/screen.ts");
  const loaded = performance.now();
  const now = Date.now();
  const pfos = Array.from({ length: 20 }, (_, i) => ({
    name: `pfo-${i}`,
    proto: "tcp",
    listen: `127.0.0.1:${8000 + i}`,
    target: `db${i}:80`,
    enabled: true,
    state: "listening",
    session: true,
    error: null,
    bound: [`127.0.0.1:${8000 + i}`],
    listeners: 1,
    connections: 10,
    connectionsTotal: 10,
    connectionsRefused: 0,
    connectionsFailed: 0,
    connectionsDenied: 0,
    clients: [],
    bytesIn: 1e9,
    bytesOut: 1e6,
    rates: { bytesInPerSecond: 1e6, bytesOutPerSecond: 1e3, connectionsPerSecond: 0 },
  }));
  const connections = Array.from({ length: 200 }, (_, i) => ({
    id: i,
    pfo: `pfo-${i % 20}`,
    proto: "tcp",
    client: `127.0.0.1:${40000 + i}`,
    target: "db:80",
    since: new Date(now - i * 1000).toISOString(),
    stream: i,
    bytesIn: i * 1e5,
    bytesOut: i,
  }));
  const snapshot = {
    session: {
      state: "established" as const,
      id: "x",
      since: null,
      streams: 200,
      peer: {
        address: "10.0.0.5:1",
        host: "lab",
        user: "ana",
        os: "linux",
        fingerprint: "SHA256:p",
      },
    },
    fingerprint: "SHA256:me",
    listen: "0.0.0.0:7470",
    settings: "c.yaml",
    settingsError: null,
    pfos,
    connections,
    trust: [],
    allowList: [],
    chat: [],
  } as unknown as Parameters<typeof consoleScreen>[0];
  const view = { size: { columns: 160, rows: 49 }, events: [] };
  const extras = {
    now,
    startedAt: now - 1000,
    rates: () => ({ in: 1000, out: 10 }),
    asking: false,
  };
  const draw = () =>
    frame(consoleScreen(snapshot, view, extras), "", { columns: 160, rows: 50 }, true);
  const t1 = performance.now();
  draw();
  const first = performance.now() - t1;
  const t2 = performance.now();
  for (let i = 0; i < 100; i++) draw();
  const each = (performance.now() - t2) / 100;
  console.log(
    `screen code loaded in ${
      (loaded - t0).toFixed(1)
    } ms; first frame (160x50, 20 PFOs, 200 connections) ` +
      `${first.toFixed(1)} ms, then ${each.toFixed(2)} ms a frame; RSS +${
        ((Deno.memoryUsage().rss - rss0) / 1048576).toFixed(1)
      } MB over a process of ${(rss0 / 1048576).toFixed(1)} MB`,
  );
}

if (import.meta.main) {
  const [what, arg] = Deno.args;
  if (what === "paint") await paintCost();
  else if (what === "measure") await measure(Number(arg ?? 64));
  else if (what === "shots") await shots();
  else {
    console.error("usage: deno task screens paint | measure [MB] | shots");
    Deno.exit(2);
  }
}
