// deno-lint-ignore-file no-console -- a report printed for a person
/**
 * Reconnect soak: `deno task soak [--cycles N] [--every K]`.
 *
 * Starts a Console and a Daemon on loopback with a TCP relay between them,
 * then N times cuts the relay's connection (as a network would) and waits
 * until both sides have a session again, with an echo round trip every 10
 * cycles. Every K cycles it prints the Console's and the Daemon's RSS, open
 * files and sockets (read from /proc, so Linux only), and at the end the
 * growth over the run and over its second half. A leak shows as steady
 * growth in the second half; V8 warms up in the first.
 *
 * @module
 */

import {
  addPfo,
  hostPort,
  type ProcFigures,
  procFigures,
  relay,
  startConsole,
  startDaemon,
  tcpServer,
} from "./_portferry.ts";

function option(name: string, fallback: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  return at < 0 ? fallback : Number(Deno.args[at + 1]);
}
const cycles = option("cycles", 1000);
const every = option("every", 1);
if (!Number.isInteger(cycles) || cycles < 1 || !Number.isInteger(every) || every < 1) {
  console.error("usage: deno task soak [--cycles N] [--every K]");
  Deno.exit(2);
}

async function echoOnce(listen: string): Promise<void> {
  const conn = await Deno.connect(hostPort(listen));
  try {
    await conn.write(new Uint8Array([42]));
    const n = await conn.read(new Uint8Array(1));
    if (n !== 1) throw new Error("Cannot echo through the PFO: no reply");
  } finally {
    conn.close();
  }
}

using echo = tcpServer(async (conn) => {
  await conn.readable.pipeTo(conn.writable, { preventClose: true });
});
await using con = await startConsole({ args: ["--auto-accept"] });
await using cutter = relay(con.address);
await using daemon = await startDaemon({ address: cutter.address, fingerprint: con.fingerprint }, {
  settings: "backoffMaxMs: 100\n",
});
await daemon.out.waitFor(/Session established/);
const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
await echoOnce(listen);

const mib = (kib: number) => (kib / 1024).toFixed(1);
const samples: { cycle: number; console: ProcFigures; daemon: ProcFigures }[] = [];
async function sample(cycle: number): Promise<void> {
  const s = {
    cycle,
    console: await procFigures(con.child.pid),
    daemon: await procFigures(daemon.child.pid),
  };
  samples.push(s);
  console.log(
    [
      String(cycle).padStart(6),
      mib(s.console.rssKiB).padStart(8),
      String(s.console.fds).padStart(4),
      String(s.console.sockets).padStart(4),
      mib(s.daemon.rssKiB).padStart(8),
      String(s.daemon.fds).padStart(4),
      String(s.daemon.sockets).padStart(4),
    ].join("  "),
  );
}

console.log(" cycle  console RSS MiB fds sock   daemon RSS MiB fds sock");
await sample(0);
const t0 = performance.now();
for (let i = 1; i <= cycles; i++) {
  const c = con.out.mark;
  const d = daemon.out.mark;
  cutter.cut();
  await daemon.out.waitFor(/Session established/, { from: d, ms: 15_000 });
  await con.out.waitFor(/Session established/, { from: c, ms: 15_000 });
  if (i % 10 === 0) await echoOnce(listen);
  if (i % every === 0 || i === cycles) await sample(i);
}
const seconds = (performance.now() - t0) / 1000;

const first = samples[0];
const mid = samples.find((s) => s.cycle >= cycles / 2) ?? first;
const last = samples[samples.length - 1];
console.log(
  `\n${cycles} reconnect cycles in ${seconds.toFixed(1)} s (${
    (seconds * 1000 / cycles).toFixed(0)
  } ms each)`,
);
for (const side of ["console", "daemon"] as const) {
  console.log(
    `${side.padEnd(7)} RSS ${mib(first[side].rssKiB)} -> ${mib(last[side].rssKiB)} MiB ` +
      `(second half ${mib(mid[side].rssKiB)} -> ${mib(last[side].rssKiB)}), ` +
      `open files ${first[side].fds} -> ${last[side].fds}, sockets ${first[side].sockets} -> ${
        last[side].sockets
      }`,
  );
}
