/**
 * End-to-end tests of what each program shows on a terminal: the input
 * line of the Console and the Daemon (driven through a pseudo-terminal made
 * by `script`), one line per Daemon step, and stdout with `--log-format json`.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  entryArgs,
  Output,
  type Proc,
  runCli,
  shellQuote,
  spareTcpPort,
  startConsole,
  startDaemon,
  taskFlags,
  tempDir,
  within,
} from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();

/** A program running at a terminal, with a way to type lines into it. */
interface TerminalProc extends Proc {
  type(line: string): Promise<void>;
}

/** Run `entry` at a pseudo-terminal (util-linux `script`), so it is interactive. */
async function atTerminal(
  entry: "console.ts" | "daemon.ts",
  args: string[],
): Promise<TerminalProc> {
  const command = [Deno.execPath(), ...await entryArgs(entry, args)].map(shellQuote).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qfec", command, "/dev/null"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    // TERM=dumb: the line output these tests read, not the live screen (tests/e2e_screen_test.ts).
    env: { NO_COLOR: "1", USER: "tester", TERM: "dumb" },
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  const status = child.status.then(async (s) => {
    await pumps;
    return s;
  });
  const writer = child.stdin.getWriter();
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    try {
      child.kill(signal);
    } catch {
      // Exited already.
    }
    await writer.close().catch(() => {});
    return await status;
  };
  return {
    child,
    out,
    status,
    stop,
    type: (line) => writer.write(encoder.encode(line + "\n")),
    [Symbol.asyncDispose]: async () => void await stop("SIGKILL"),
  };
}

/** Type `line`, then wait for a line matching `re` printed after it. */
async function typeAndSee(proc: TerminalProc, line: string, re: RegExp): Promise<RegExpMatchArray> {
  const mark = proc.out.mark;
  await proc.type(line);
  return await proc.out.waitFor(re, { from: mark });
}

Deno.test("the Console's input line refuses commands typed as chat, runs /commands with the CLI grammar, and echoes chat", async () => {
  const dir = await tempDir("pf-console-tty-");
  const settingsPath = `${dir}/portferry-console.yaml`;
  await using con = await atTerminal("console.ts", [
    "--config",
    settingsPath,
    "--session",
    "127.0.0.1:0",
    "--auto-accept",
  ]);
  const [, fingerprint] = await con.out.waitFor(/fingerprint: (SHA256:\S+)/);
  const [, address] = await con.out.waitFor(/Console listening for Daemons on (\S+)/);
  await con.out.waitFor(/\/help lists the commands/);
  await using daemon = await startDaemon({ address, fingerprint });
  await daemon.out.waitFor(/Session established/);

  for (const word of ["status", "quit", "accept"]) {
    await typeAndSee(con, word, new RegExp(`^Did you mean /${word}\\?`));
  }
  await typeAndSee(con, "pfo list", /^Did you mean \/pfo\?/);
  await typeAndSee(con, "/pfo-list", /^Unknown command \/pfo-list; \/help lists them/);
  await typeAndSee(con, "/resolve", /^usage: \/resolve HOST/);
  await typeAndSee(con, "/help", /\/kill ID/);
  await typeAndSee(
    con,
    "/pfo add web --listen 127.0.0.1:0 --target 127.0.0.1:9",
    /^web\s+tcp\s+127\.0\.0\.1:\d+\s+127\.0\.0\.1:9\s+listening/,
  );
  // The CLI grammar's own checks apply at the prompt too.
  await typeAndSee(con, "/pfo add bad --listen 127.0.0.1:0", /--target/);
  const listed = await runCli("console.ts", ["--config", settingsPath, "pfo", "list", "--json"]);
  assert.deepEqual(JSON.parse(listed.stdout).map((p: { name: string }) => p.name), ["web"]);
  await typeAndSee(con, "/connections", /^no open connections/);

  const dmark = daemon.out.mark;
  await typeAndSee(con, "hello daemon", /^you> hello daemon/);
  await daemon.out.waitFor(/hello daemon/, { from: dmark });
  // Nothing that was refused reached the Daemon as chat.
  assert.doesNotMatch(daemon.out.text(), /chat[^\n]*(status|quit|accept|pfo)/);

  await con.type("/quit");
  const status = await within(con.status, 15_000, "the Console to exit on /quit");
  assert.equal(status.code, 0);
});

Deno.test("the Daemon's input line chats with the Console and runs /status, /help and /quit", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const dir = await tempDir("pf-daemon-tty-");
  await using daemon = await atTerminal("daemon.ts", [
    con.address,
    "--fingerprint",
    con.fingerprint,
    "--config",
    `${dir}/portferry-daemon.yaml`,
  ]);
  await daemon.out.waitFor(/\/help lists the commands/);
  await daemon.out.waitFor(/Session established/);

  const cmark = con.out.mark;
  await typeAndSee(daemon, "hi console", /^you> hi console/);
  await con.out.waitFor(/hi console/, { from: cmark });
  await typeAndSee(daemon, "status", /^Did you mean \/status\?/);
  await typeAndSee(daemon, "/status", /^session: established/);
  await typeAndSee(daemon, "/connections", /^no open connections/);
  await typeAndSee(daemon, "/kill 99", /^error: Cannot kill connection 99: no such connection/);
  await typeAndSee(daemon, "/nope", /^Unknown command \/nope; \/help lists them/);
  await typeAndSee(daemon, "/help", /\/close\s+close the session/);
  await daemon.type("/quit");
  const status = await within(daemon.status, 15_000, "the Daemon to exit on /quit");
  assert.equal(status.code, 0);
});

Deno.test("a Daemon that cannot reach the Console prints one line per attempt and folds repeats", async () => {
  const address = `127.0.0.1:${spareTcpPort()}`;
  const fingerprint = `SHA256:${"A".repeat(43)}`;
  await using daemon = await startDaemon({ address, fingerprint }, {
    settings: "backoffMaxMs: 200\n",
  });
  await daemon.out.waitFor(
    /^still failing \(4 attempts\): connection refused; next try in \d+(\.\d)? s$/,
  );
  const lines = daemon.out.lines.slice();
  const failures = lines.filter((l) => /^(Session failed|still failing)/.test(l));
  assert.match(failures[0], /^Session failed: .*ECONNREFUSED.*; next try in [\d.]+ s$/);
  assert.deepEqual(
    failures.slice(1, 4).map((l) => l.replace(/; next try in [\d.]+ s$/, "")),
    [2, 3, 4].map((n) => `still failing (${n} attempts): connection refused`),
  );
  // Nothing else per attempt: one "Connecting" line in all, and no log line repeating a step.
  assert.equal(lines.filter((l) => /Connecting to the Console/.test(l)).length, 1);
  assert.deepEqual(lines.filter((l) => / (INFO|ERROR) /.test(l)), []);
});

/** Spawn an entry with stdout and stderr apart. */
function spawnApart(entry: string, flags: string[], args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, entry, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", USER: "tester" },
  }).spawn();
  const stdout = new Output();
  const stderr = new Output();
  const done = Promise.all([stdout.pump(child.stdout), stderr.pump(child.stderr), child.status]);
  return {
    stdout,
    stderr,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await done;
    },
  };
}

Deno.test("with --log-format json every line either program writes to stdout is JSON", async () => {
  const dir = await tempDir("pf-json-");
  const consoleConfig = `${dir}/portferry-console.yaml`;
  const json = ["--log-format", "json"];
  await using con = spawnApart("console.ts", await taskFlags("console"), [
    "--config",
    consoleConfig,
    "--session",
    "127.0.0.1:0",
    "--headless",
    "--auto-accept",
    ...json,
  ]);
  const [, fingerprint] = await con.stderr.waitFor(/fingerprint: (SHA256:\S+)/);
  const [, address] = await con.stderr.waitFor(/Console listening for Daemons on (\S+)/);
  {
    await using daemon = spawnApart("daemon.ts", await taskFlags("daemon"), [
      address,
      "--fingerprint",
      fingerprint,
      "--config",
      `${dir}/portferry-daemon.yaml`,
      ...json,
    ]);
    await daemon.stdout.waitFor(/"msg":"session established"/);
    const chat = await runCli("console.ts", ["--config", consoleConfig, "chat", "hello"]);
    assert.equal(chat.code, 0, chat.stderr);
    await daemon.stderr.waitFor(/hello/);
    await daemon[Symbol.asyncDispose]();
    await con.stdout.waitFor(/"msg":"session ended"/);
    for (const line of daemon.stdout.lines) JSON.parse(line);
    assert.ok(daemon.stdout.lines.length >= 3, daemon.stdout.text());
  }
  await con[Symbol.asyncDispose]();
  for (const line of con.stdout.lines) JSON.parse(line);
  assert.ok(con.stdout.lines.length >= 3, con.stdout.text());
});
