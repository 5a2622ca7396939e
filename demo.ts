/**
 * `deno task demo`: a Console and a Daemon on loopback, in one process, with
 * a built-in sample web page as the target. They accept each other, forward a
 * PFO to the page, and print what to open. `--check` fetches the page through
 * the tunnel once and exits (used by the tests).
 *
 * @module
 */

// First, before anything parses YAML: LOG_TOKENS would make it print the settings.
import "./lib/app/scrub_env.ts";
import { exitSignals, printErr, printOut } from "./lib/app/cli.ts";
import { type Console, runConsole } from "./lib/console/server.ts";
import { runDaemon } from "./lib/daemon/daemon.ts";
import { errorMessage } from "./lib/core/errors.ts";
import { programCommand } from "./lib/app/invocation.ts";
import { createLogger } from "./lib/core/log.ts";

const check = Deno.args.includes("--check");
const dir = await Deno.makeTempDir({ prefix: "portferry-demo-" });
const signals = exitSignals();
const log = (side: string) =>
  createLogger({ level: "info", sink: (line) => printOut(`[${side}] ${line}`) });

// The sample target: a page only the Daemon's side serves.
const page = `<!doctype html><title>portferry demo</title>
<h1>Hello through portferry</h1>
<p>This page is served on the Daemon's side and reached through the Console's PFO.</p>\n`;
const target = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }),
);
const targetPort = target.addr.port;

// The Console's settings: one PFO to the sample page, on 8470 when free.
let listenPort = 8470;
try {
  Deno.listen({ hostname: "127.0.0.1", port: listenPort }).close();
} catch {
  listenPort = 0;
}
await Deno.writeTextFile(
  `${dir}/portferry-console.yaml`,
  `# portferry demo settings (a temporary folder; deleted on exit)
session: "127.0.0.1:0"
autoAccept: true
graceMs: ${check ? 500 : 5000}
pfos:
  - name: demo-web
    listen: "127.0.0.1:${listenPort}"
    target: "localhost:${targetPort}"
`,
  { mode: 0o600 },
);

const daemonStop = new AbortController();
let failed = false;
const settingsPath = `${dir}/portferry-console.yaml`;
const consoleDone = runConsole({
  settingsPath,
  log: log("console"),
  out: (text) => printOut(`[console] ${text}`),
  // The demo's Daemon runs in this process; the banner shows how to run one elsewhere.
  daemonCommand: programCommand("daemon", ["{address}", "--fingerprint", "{fingerprint}"]),
  controlCommand: (args) => programCommand("console", args, { config: settingsPath }),
  signal: signals.exit.signal,
  forceSignal: signals.force.signal,
  onReady: async (address, con) => {
    const { fingerprint } = con.status();
    const daemonDone = runDaemon({
      settingsPath: `${dir}/portferry-daemon.yaml`,
      console: address,
      fingerprint,
      tokenFile: null,
      reconnect: true,
      backoffMaxMs: 15_000,
      connectTimeoutMs: 10_000,
      allow: [],
      log: log("daemon"),
      out: (text) => printOut(`[daemon] ${text}`),
      signal: daemonStop.signal,
    }).catch((err) => {
      failed = true;
      printErr(`demo: the Daemon failed: ${errorMessage(err)}`);
      signals.exit.abort();
    });
    const url = await waitForForwarding(con);
    printOut("");
    printOut(`Demo ready. Open ${url} — the page comes from the Daemon's side through the tunnel.`);
    printOut(`Try: ${programCommand("console", ["status"], { config: settingsPath })}`);
    printOut("Press Ctrl-C to stop.");
    printOut("");
    if (check) {
      const body = await (await fetch(url)).text();
      if (!body.includes("Hello through portferry")) {
        failed = true;
        printErr("demo: the page through the tunnel was not the sample page");
      } else {
        printOut("demo check: OK, the sample page arrived through the tunnel");
      }
      signals.exit.abort();
    }
    await signalled(signals.exit.signal);
    daemonStop.abort();
    await daemonDone;
  },
});

async function waitForForwarding(
  con: Console,
): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const s = con.status();
    if (s.session.state === "established" && s.pfos[0]?.bound[0]) {
      return `http://${s.pfos[0].bound[0]}/`;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("Cannot start the demo: the session was not established within 10 s");
}

function signalled(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

try {
  await consoleDone;
} catch (err) {
  failed = true;
  printErr(`demo: ${errorMessage(err)}`);
} finally {
  signals.dispose();
  await target.shutdown();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
Deno.exit(failed ? 1 : 0);
