// deno-lint-ignore-file no-console -- a script that reports figures
/**
 * Flood: how much memory a peer that sends and never reads can cost.
 *
 * Two bounded runs on loopback, each against a real process started with
 * its `deno task` flags:
 *
 * - `pending`: a Daemon with a fresh identity authenticates to a real
 *   Console, is told to wait for the operator, then sends PINGs as fast as
 *   the link takes them and never reads;
 * - `console`: a Console written here accepts a real Daemon, then does the
 *   same to it.
 *
 * Each run stops after `--mib` MiB (default 102) or when the victim cuts
 * the link, and reports the victim's RSS before and at its peak (sampled
 * from `/proc/PID/status` every 50 ms), the bytes sent, and the victim's
 * log lines about limits. Target: the victim stays under 300 MiB; the exit
 * code is 1 when a run misses it.
 *
 * ```sh
 * deno task flood [--mib N] [--only pending|console]
 * ```
 *
 * RSS comes from `cat /proc/PID/status`: Deno asks for `--allow-all` to read
 * `/proc` itself, and this script needs `--allow-run` anyway.
 *
 * @module
 */

import { encodeMessage } from "../lib/core/codec.ts";
import { loadOrCreateIdentity, signChallenge } from "../lib/core/identity.ts";
import { writeAll } from "../lib/core/io.ts";
import { authTranscript, PROTOCOL_VERSION, Tag } from "../lib/core/protocol.ts";
import { consoleHandshake, MessageReader, sendNow } from "../lib/core/session.ts";
import { connectPinned, listenSessions } from "../lib/core/tls.ts";

const TARGET_RSS_MIB = 300;
const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

interface Options {
  mib: number;
  only: "pending" | "console" | null;
}

function parseArgs(args: string[]): Options {
  const out: Options = { mib: 102, only: null };
  for (let i = 0; i < args.length; i++) {
    const [flag, value] = [args[i], args[i + 1]];
    if (flag === "--mib" && Number(value) > 0) out.mib = Number(value);
    else if (flag === "--only" && (value === "pending" || value === "console")) out.only = value;
    else {
      throw new Error(
        `Cannot use argument "${flag}": expected --mib N or --only pending|console`,
      );
    }
    i++;
  }
  return out;
}

/** The permission flags of a deno.json task. */
async function taskFlags(task: "console" | "daemon"): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const words = String(config.tasks[task]).split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.findIndex((w) => w.endsWith(".ts")));
}

/** A spawned program and its output lines. */
interface Victim extends AsyncDisposable {
  readonly pid: number;
  readonly lines: string[];
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
}

async function spawn(entry: string, task: "console" | "daemon", args: string[]): Promise<Victim> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await taskFlags(task), entry, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      const parts = rest.split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  return {
    pid: child.pid,
    lines,
    async waitFor(re, ms = 20_000) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        for (const line of lines) {
          const m = line.match(re);
          if (m) return m;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(
        `Cannot see ${re} within ${ms} ms; last lines:\n${lines.slice(-20).join("\n")}`,
      );
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await child.status;
      await pumps;
    },
  };
}

/** Resident set size of `pid` in KiB, from /proc (null once it is gone). */
async function rssKiB(pid: number): Promise<number | null> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stderr: "null" })
    .output();
  const m = decoder.decode(out.stdout).match(/^VmRSS:\s+(\d+)/m);
  return m ? Number(m[1]) : null;
}

/** Samples `pid`'s RSS every 50 ms until stopped; `peak()` is the largest seen. */
function sampleRss(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const kib = await rssKiB(pid);
      if (kib === null) return;
      peak = Math.max(peak, kib);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** Write PINGs until `maxBytes` are sent or a write fails; never read. */
async function floodPings(link: { write(p: Uint8Array): Promise<number> }, maxBytes: number) {
  let seq = 0;
  let bytes = 0;
  try {
    while (bytes < maxBytes) {
      const frames = Array.from(
        { length: 4096 },
        () => encodeMessage({ tag: Tag.PING, seq: ++seq }),
      );
      const chunk = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
      let at = 0;
      for (const f of frames) {
        chunk.set(f, at);
        at += f.length;
      }
      await writeAll(link, chunk);
      bytes += chunk.length;
    }
  } catch {
    return { bytes, cut: true };
  }
  return { bytes, cut: false };
}

interface RunResult {
  readonly name: string;
  readonly sentMiB: number;
  readonly cut: boolean;
  readonly seconds: number;
  readonly rssBeforeMiB: number;
  readonly rssPeakMiB: number;
  readonly logged: string[];
}

const mib = (kib: number) => Math.round(kib / 102.4) / 10;
const LIMIT_LINES = /budget|limit|hard cap|reads nothing|not reading/;

/** A Daemon nobody accepted floods a real Console. */
async function runPending(dir: string, maxBytes: number): Promise<RunResult> {
  await using con = await spawn("console.ts", "console", [
    "--config",
    `${dir}/portferry-console.yaml`,
    "--session",
    "127.0.0.1:0",
    "--headless",
  ]);
  const [, fingerprint] = await con.waitFor(/fingerprint: (SHA256:\S+)/);
  const [, address] = await con.waitFor(/Console listening for Daemons on 127\.0\.0\.1:(\d+)/);
  const identity = await loadOrCreateIdentity(
    { key: `${dir}/hostile.key.pem`, cert: `${dir}/hostile.cert.pem` },
    { role: "daemon" },
  );
  const link = await connectPinned({
    hostname: "127.0.0.1",
    port: Number(address),
    fingerprint,
    timeoutMs: 10_000,
  });
  try {
    const reader = new MessageReader(link);
    await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
    const challenge = await reader.next();
    if (challenge.tag !== Tag.CHALLENGE) throw new Error("Cannot flood: no CHALLENGE");
    await sendNow(link, {
      tag: Tag.AUTH,
      host: "flood",
      user: "mallory",
      os: "linux",
      cert: identity.certDer.toBase64(),
      signature: await signChallenge(identity, authTranscript(challenge.nonce, fingerprint)),
      token: null,
    });
    if ((await reader.next()).tag !== Tag.PENDING) throw new Error("Cannot flood: not PENDING");
    await con.waitFor(/asks for a session/);
    return await measure("pending Daemon -> Console", con, () => floodPings(link, maxBytes));
  } finally {
    try {
      link.close();
    } catch {
      // Cut by the Console.
    }
  }
}

/** A Console written here accepts a real Daemon and floods it. */
async function runConsole(dir: string, maxBytes: number): Promise<RunResult> {
  const identity = await loadOrCreateIdentity(
    { key: `${dir}/fake-console.key.pem`, cert: `${dir}/fake-console.cert.pem` },
    { role: "console" },
  );
  const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    await using daemon = await spawn("daemon.ts", "daemon", [
      `127.0.0.1:${port}`,
      "--fingerprint",
      identity.fingerprint,
      "--config",
      `${dir}/portferry-daemon.yaml`,
      "--no-reconnect",
    ]);
    // The Daemon probes the certificate first (TLS, then nothing): skip such connections.
    for (let i = 0; i < 5; i++) {
      const conn = await listener.accept();
      try {
        await conn.handshake();
        await consoleHandshake(conn, new MessageReader(conn));
      } catch {
        conn.close();
        continue;
      }
      await sendNow(conn, { tag: Tag.ACCEPT, session: "flood" });
      await daemon.waitFor(/Session established/);
      try {
        return await measure("Console -> Daemon", daemon, () => floodPings(conn, maxBytes));
      } finally {
        try {
          conn.close();
        } catch {
          // Cut by the Daemon.
        }
      }
    }
    throw new Error("Cannot flood: the Daemon never finished its handshake");
  } finally {
    listener.close();
  }
}

async function measure(
  name: string,
  victim: Victim,
  flood: () => Promise<{ bytes: number; cut: boolean }>,
): Promise<RunResult> {
  const before = (await rssKiB(victim.pid)) ?? 0;
  const sampler = sampleRss(victim.pid);
  const t0 = performance.now();
  const { bytes, cut } = await flood();
  const seconds = (performance.now() - t0) / 1000;
  // Let the victim finish with what it read, then take the last samples.
  await new Promise((r) => setTimeout(r, 500));
  const peak = await sampler.stop();
  return {
    name,
    sentMiB: Math.round(bytes / 1024 / 102.4) / 10,
    cut,
    seconds: Math.round(seconds * 10) / 10,
    rssBeforeMiB: mib(before),
    rssPeakMiB: mib(peak),
    logged: victim.lines.filter((l) => LIMIT_LINES.test(l)).slice(0, 5),
  };
}

if (import.meta.main) {
  const options = parseArgs(Deno.args);
  const dir = await Deno.makeTempDir({ prefix: "pf-flood-" });
  const results: RunResult[] = [];
  try {
    const maxBytes = options.mib * 1024 * 1024;
    if (options.only !== "console") results.push(await runPending(dir, maxBytes));
    if (options.only !== "pending") results.push(await runConsole(dir, maxBytes));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  let missed = false;
  for (const r of results) {
    const ok = r.rssPeakMiB < TARGET_RSS_MIB;
    missed ||= !ok;
    console.log(
      `${r.name}: sent ${r.sentMiB} MiB in ${r.seconds} s (${
        r.cut ? "the victim cut the link" : "all of it"
      }); victim RSS ${r.rssBeforeMiB} MiB before, ${r.rssPeakMiB} MiB peak (target < ${TARGET_RSS_MIB}): ${
        ok ? "ok" : "MISSED"
      }`,
    );
    for (const line of r.logged) console.log(`  victim: ${line}`);
  }
  const load = await new Deno.Command("cat", { args: ["/proc/loadavg"] }).output();
  console.log(`load average: ${decoder.decode(load.stdout).trim()}`);
  Deno.exit(missed ? 1 : 0);
}
