/**
 * The systemd unit allows the system calls of `@system-service` and `@pkey`
 * only (SystemCallFilter=). This runs a real Console and Daemon under
 * strace through a session and one forwarded connection, and checks that
 * every system call they made is in those sets, as systemd itself lists
 * them (`systemd-analyze syscall-filter`); and that they write nowhere but
 * the settings folder (the unit's ReadWritePaths=) and Deno's caches.
 */
import assert from "node:assert/strict";
import {
  addPfo,
  type ConsoleProc,
  echoRoundTrip,
  echoServer,
  Output,
  runCli,
  tempDir,
  within,
} from "./_harness.ts";
import { RUNTIME_FLAGS } from "../lib/app/permissions.ts";

const ROOT = new URL("../", import.meta.url);

async function tool(cmd: string, args: string[], pkg: string): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) throw new Error(`${cmd} ${args.join(" ")} exited ${out.code}`);
    return new TextDecoder().decode(out.stdout);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd} is missing: install the Debian package ${pkg}`);
    }
    throw err;
  }
}

/** The calls a filter of `groups` allows, expanding nested groups as systemd lists them. */
async function allowedCalls(groups: string[]): Promise<Set<string>> {
  const listing = await tool("systemd-analyze", ["syscall-filter"], "systemd");
  const members = new Map<string, string[]>();
  let group: string[] = [];
  for (const line of listing.split("\n")) {
    const head = line.match(/^(@\S+)$/);
    if (head) members.set(head[1], group = []);
    const item = line.match(/^\s+(@?[a-z0-9_-]+)\s*$/);
    if (item) group.push(item[1]);
  }
  const out = new Set<string>();
  const add = (name: string, depth: number) => {
    if (depth > 10) throw new Error(`nested too deep at ${name}`);
    for (const m of members.get(name) ?? []) m.startsWith("@") ? add(m, depth + 1) : out.add(m);
  };
  for (const g of groups) add(g, 0);
  assert.ok(out.size > 100, `systemd-analyze listed only ${out.size} calls in ${groups}`);
  return out;
}

/** Start `entry` under strace; returns the tracee's output and a way to stop it by its PID. */
function traced(entry: "console.ts" | "daemon.ts", trace: string, args: string[]) {
  const program = entry === "console.ts" ? "console" : "daemon";
  const child = new Deno.Command("strace", {
    args: [
      "-f",
      "-qq",
      "-o",
      trace,
      "--",
      Deno.execPath(),
      "run",
      ...RUNTIME_FLAGS[program],
      entry,
      ...args,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output();
  out.pump(child.stdout);
  out.pump(child.stderr);
  const stop = async (signal: Deno.Signal) => {
    // The traced program (the first PID in the trace), not strace (which ignores SIGTERM).
    const pid = Number((await Deno.readTextFile(trace)).match(/^(\d+) /)?.[1]);
    assert.ok(pid > 0, "no PID in the trace");
    Deno.kill(pid, signal);
    // strace slows the program down many times over: a generous bound, not the behaviour under test.
    return await within(child.status, 120_000, `${entry} under strace to exit`);
  };
  return { out, stop, child };
}

function callsIn(trace: string): Set<string> {
  const calls = new Set<string>();
  for (const line of trace.split("\n")) {
    const m = line.match(/^\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]/);
    if (m) calls.add(m[1]);
  }
  return calls;
}

/** Paths opened for writing, created, renamed or removed (absolute, as traced). */
function writtenPaths(trace: string): string[] {
  const out: string[] = [];
  for (const line of trace.split("\n")) {
    const open = line.match(/^\d+ +open(?:at)?\((?:[A-Z_0-9]+, )?"([^"]*)", ([A-Z_|]+)/);
    if (open && /O_WRONLY|O_RDWR|O_CREAT/.test(open[2])) out.push(open[1]);
    const other = line.match(
      /^\d+ +(?:mkdir(?:at)?|rename(?:at2?)?|unlink(?:at)?)\((?:[A-Z_0-9]+, )?"([^"]*)"/,
    );
    if (other) out.push(other[1]);
  }
  return out;
}

Deno.test("Console and Daemon make no system call outside the unit's SystemCallFilter and write only in their settings folder", async () => {
  await tool("strace", ["-V"], "strace");
  const allowed = await allowedCalls(["@system-service", "@pkey"]);
  const dir = await tempDir("pf-syscalls-");
  const consoleSettings = `${dir}/portferry-console.yaml`;
  const con = traced("console.ts", `${dir}/console.trace`, [
    "--config",
    consoleSettings,
    "--session",
    "127.0.0.1:0",
    "--headless",
    "--auto-accept",
  ]);
  const echo = echoServer();
  try {
    const [, fingerprint] = await con.out.waitFor(/fingerprint: (SHA256:\S+)/, { ms: 60_000 });
    const [, address] = await con.out.waitFor(/Console listening for Daemons on (\S+)/);
    const daemon = traced("daemon.ts", `${dir}/daemon.trace`, [
      address,
      "--fingerprint",
      fingerprint,
      "--headless",
      "--config",
      `${dir}/portferry-daemon.yaml`,
    ]);
    try {
      await daemon.out.waitFor(/Session established/, { ms: 60_000 });
      const cli = (...args: string[]) =>
        runCli("console.ts", ["--config", consoleSettings, ...args]);
      const listen = await addPfo(
        { cli } as unknown as ConsoleProc,
        "echo",
        `127.0.0.1:${echo.port}`,
      );
      assert.equal(
        await echoRoundTrip(listen, "through the unit's filter"),
        "through the unit's filter",
      );
    } finally {
      await daemon.stop("SIGTERM"); // Its graceful exit is traced too.
    }
  } finally {
    // Under strace the Console has been seen to take minutes over its graceful exit on a
    // loaded machine: it is killed, after everything the test traces.
    await con.stop("SIGKILL");
    echo.close();
  }
  const used = new Set([
    ...callsIn(await Deno.readTextFile(`${dir}/console.trace`)),
    ...callsIn(await Deno.readTextFile(`${dir}/daemon.trace`)),
  ]);
  assert.ok(used.has("connect") && used.has("accept4") || used.has("accept"), [...used].join(" "));
  const writes = [
    ...writtenPaths(await Deno.readTextFile(`${dir}/console.trace`)),
    ...writtenPaths(await Deno.readTextFile(`${dir}/daemon.trace`)),
  ];
  // ReadWritePaths= the settings folder only: nothing else is written but Deno's own caches
  // (which Deno uses read-only when it must, as under ProtectHome=read-only).
  const info = JSON.parse(await tool(Deno.execPath(), ["info", "--json"], "deno"));
  const strays = writes.filter((p) =>
    !p.startsWith(`${dir}/`) && !p.startsWith(`${info.denoDir}/`)
  );
  assert.ok(writes.some((p) => p.startsWith(`${dir}/`)), writes.join("\n"));
  assert.deepEqual(strays, [], "written outside the settings folder");
  const outside = [...used].filter((c) => !allowed.has(c)).sort();
  assert.deepEqual(outside, [], `calls outside @system-service @pkey: ${outside.join(" ")}`);
});
