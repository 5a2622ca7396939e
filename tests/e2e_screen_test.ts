/**
 * The live screens of the real Console and Daemon, at a real terminal
 * (tmux): counters that follow connections, the Daemon's list of them, a
 * resize, a peer's hostile chat, `/kill`, and the terminal given back on
 * exit.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeQuietly, echoServer, hostPort, runCli, tempDir, within } from "./_harness.ts";
import { EXIT_LINE, startTmux, type Tmux } from "./_tmux.ts";

const WIDE = { columns: 150, rows: 40 };
const encoder = new TextEncoder();

/** A Console and a Daemon with an established session, both at a tmux terminal. */
async function startScreens(tmux: Tmux, consoleArgs: string[] = []) {
  const dir = await tempDir("pf-screen-");
  const consoleConfig = `${dir}/portferry-console.yaml`;
  await tmux.start("console", "console.ts", [
    "--config",
    consoleConfig,
    "--session",
    "127.0.0.1:0",
    ...consoleArgs,
  ], WIDE);
  const [, address] = await tmux.waitFor("console", /session port (127\.0\.0\.1:\d+)/);
  const fingerprint = (await runCli("console.ts", ["--config", consoleConfig, "fingerprint"]))
    .stdout.trim();
  await tmux.start("daemon", "daemon.ts", [
    address,
    "--fingerprint",
    fingerprint,
    "--config",
    `${dir}/portferry-daemon.yaml`,
  ], WIDE);
  const cli = (...args: string[]) => runCli("console.ts", ["--config", consoleConfig, ...args]);
  const daemonCli = (...args: string[]) =>
    runCli("daemon.ts", ["--config", `${dir}/portferry-daemon.yaml`, ...args]);
  return { dir, address, fingerprint, cli, daemonCli };
}

/** Open a connection through `listen` and wait for its first echo: it is open end to end. */
async function openEchoed(listen: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect(hostPort(listen));
  await conn.write(encoder.encode("ping"));
  const buf = new Uint8Array(16);
  const n = await within(conn.read(buf), 10_000, "echo through the PFO");
  assert.equal(n, 4);
  return conn;
}

/** The PFO table's row for `name` with `count` open connections. */
function pfoRow(name: string, count: number): RegExp {
  return new RegExp(`^${name}\\s+tcp\\s+\\S+\\s+\\S+\\s+listening\\s+${count}\\s`, "m");
}

Deno.test("the live screens count a PFO's connections, list them on the Daemon, reflow on resize and cut one with /kill", async () => {
  await using tmux = await startTmux({ NO_COLOR: "1" });
  using echo = echoServer();
  const { cli } = await startScreens(tmux, ["--auto-accept"]);
  await tmux.waitFor("console", /session: established\s+\S+@\S+ \(\w+\) from 127\.0\.0\.1:\d+/);
  await tmux.waitFor("daemon", /session: established \(id [0-9a-f]+\)/);

  const added = await cli(
    "pfo",
    "add",
    "web",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${echo.port}`,
  );
  assert.equal(added.code, 0, added.stderr);
  const listen = added.stdout.match(/127\.0\.0\.1:\d+/)![0];
  await tmux.waitFor("console", pfoRow("web", 0));

  const conns = [await openEchoed(listen), await openEchoed(listen), await openEchoed(listen)];
  await tmux.waitFor("console", pfoRow("web", 3));
  await tmux.waitFor("console", /Connections \(3 open, newest first\)/);
  // The Daemon lists every one, with its target.
  const daemonScreen = await tmux.waitFor(
    "daemon",
    /Connections and flows \(3 open[^]*?(\n\s*\d+\s+web\s+tcp\s+127\.0\.0\.1:\d+\s+127\.0\.0\.1:\d+.*){3}/,
  );
  assert.match(daemonScreen[0], new RegExp(`127\\.0\\.0\\.1:${echo.port}`));

  closeQuietly(conns.pop()!);
  await tmux.waitFor("console", pfoRow("web", 2));
  await tmux.waitFor("daemon", /Connections and flows \(2 open/);

  // Resize: a small terminal shows the compact summary, a large one the tables again.
  await tmux.run("resize-window", "-t", "console", "-x", "50", "-y", "12");
  await tmux.waitFor("console", /PFOs 1\s+open 2/);
  assert.doesNotMatch(await tmux.capture("console"), /NAME\s+PROTO/);
  await tmux.run("resize-window", "-t", "console", "-x", "100", "-y", "30");
  await tmux.waitFor("console", pfoRow("web", 2));

  // /kill on the Daemon's input line cuts one: the Console's count follows.
  const id = (await tmux.capture("daemon")).match(/^\s*(\d+)\s+web\s+tcp/m)![1];
  await tmux.type("daemon", `/kill ${id}`);
  await tmux.waitFor("daemon", /Connections and flows \(1 open/);
  await tmux.waitFor("console", pfoRow("web", 1));
  for (const c of conns) closeQuietly(c);
  await tmux.waitFor("console", pfoRow("web", 0));
});

Deno.test("a peer's hostile chat shows as text on the live screen and cannot move the cursor or recolour it", async () => {
  await using tmux = await startTmux(); // colours on: a recolouring would show
  const { daemonCli } = await startScreens(tmux, ["--auto-accept"]);
  await tmux.waitFor("console", /session: established/);
  await tmux.waitFor("daemon", /session: established/);
  const rows = WIDE.rows;
  const hostile = "evil\x1b[2J\x1b[H\x1b[31mRED\x1b]0;pwned\x07\x9b5A\u202eend\r\nfake line";
  const sent = await daemonCli("chat", hostile);
  assert.equal(sent.code, 0, sent.stderr);
  await tmux.waitFor("console", /evil\\x1b\[2J\\x1b\[H\\x1b\[31mRED/);
  const screen = await tmux.capture("console");
  // Still the whole screen, header on top, the chat on one line of its own.
  assert.match(screen.split("\n")[0], /^portferry Console\s+session: established/);
  // The chat view lays a multi-line message out under its own marker: never a line of its own.
  assert.match(screen, /\\u202eend\n.*\[chat \S+\] \| fake line/);
  assert.doesNotMatch(screen, /^fake line/m);
  // No red anywhere, no title set, the cursor on the input line.
  const styled = await tmux.capture("console", { escapes: true });
  assert.doesNotMatch(styled.replaceAll("\x1b", "ESC"), /ESC\[(?:[0-9;]*;)?31m/);
  const title = await tmux.run("display-message", "-p", "-t", "console", "#{pane_title}");
  assert.doesNotMatch(title, /pwned/);
  const cursor = await tmux.run("display-message", "-p", "-t", "console", "#{cursor_y}");
  assert.equal(Number(cursor.trim()), rows - 1);
});

Deno.test("the Console's live screen asks about a pending session on top and Ctrl-C gives the terminal back", async () => {
  await using tmux = await startTmux({ NO_COLOR: "1" });
  await startScreens(tmux);
  await tmux.waitFor("console", /\| Accept it\?\s+\[y\]es \/ \[n\]o \/ \[t\]rust always/);
  await tmux.waitFor(
    "console",
    /A Daemon asks for a session[^]*\S+@\S+ \(\w+\) from 127\.0\.0\.1/,
  );
  await tmux.type("console", "y", { enter: false });
  await tmux.waitFor("console", /session: established/);
  assert.doesNotMatch(await tmux.capture("console"), /\| Accept it\?/);
  await tmux.run("send-keys", "-t", "console", "C-c");
  await tmux.waitFor("console", new RegExp(`${EXIT_LINE} 0`));
  // Back on the normal screen: the last events as lines, no table, the alternate screen left.
  const screen = await tmux.capture("console");
  assert.doesNotMatch(screen, /NAME\s+PROTO/);
  assert.match(screen, /exiting/);
  assert.equal(
    (await tmux.run("display-message", "-p", "-t", "console", "#{alternate_on}")).trim(),
    "0",
  );
});
