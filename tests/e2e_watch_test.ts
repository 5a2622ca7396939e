/**
 * `--watch` on both programs' CLI, and the control API's event stream
 * (`GET /events`) that feeds it.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  cliCommand,
  closeQuietly,
  echoServer,
  hostPort,
  Output,
  startConsole,
  startPair,
  within,
} from "./_harness.ts";
import { settingsPaths } from "../lib/settings/paths.ts";

const encoder = new TextEncoder();

/** A `--watch` CLI run, read line by line until the test stops it. */
async function watcher(entry: "console.ts" | "daemon.ts", args: string[]) {
  const child = (await cliCommand(entry, args)).spawn();
  const out = new Output();
  const err = new Output();
  const pumps = Promise.all([out.pump(child.stdout), err.pump(child.stderr)]);
  const status = child.status.then(async (s) => (await pumps, s));
  return {
    out,
    err,
    status,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await status;
    },
  };
}

/** The JSON lines a watcher printed, parsed. */
function jsonLines<T>(out: Output): T[] {
  return out.lines.filter((l) => l.startsWith("{") || l.startsWith("[")).map((l) => JSON.parse(l));
}

Deno.test("console status --watch --json prints one JSON object per line each second and follows a new PFO", async () => {
  await using con = await startConsole();
  await using watch = await watcher("console.ts", [
    "--config",
    con.settingsPath,
    "status",
    "--watch",
    "--json",
  ]);
  await watch.out.waitFor(/^\{"session":/);
  const first = jsonLines<{ pfos: unknown[] }>(watch.out)[0];
  assert.equal(first.pfos.length, 0);
  const mark = watch.out.mark;
  await addPfo(con, "web", "127.0.0.1:9");
  await watch.out.waitFor(/"name":"web"/, { from: mark });
  const lines = jsonLines<{ session: { state: string }; pfos: { name: string }[] }>(watch.out);
  assert.ok(lines.length >= 2, "one line per refresh");
  assert.ok(lines.every((l) => l.session.state === "none"));
  assert.deepEqual(lines.at(-1)!.pfos.map((p) => p.name), ["web"]);
  // Every line a JSON object of its own: no table, no blank line.
  assert.ok(watch.out.lines.every((l) => l.startsWith("{")), watch.out.text());
});

Deno.test("console pfo list --watch prints a fresh table each second and ends when the Console stops", async () => {
  await using con = await startConsole();
  await addPfo(con, "one", "127.0.0.1:9");
  await using watch = await watcher("console.ts", [
    "--config",
    con.settingsPath,
    "pfo",
    "list",
    "--watch",
  ]);
  await watch.out.waitFor(/^one\s+tcp\s+127\.0\.0\.1:\d+\s+127\.0\.0\.1:9\s+listening/);
  const mark = watch.out.mark;
  await addPfo(con, "two", "127.0.0.1:9");
  await watch.out.waitFor(/^two\s+tcp/, { from: mark });
  // Tables, each under its own time line.
  assert.ok(watch.out.lines.filter((l) => /^NAME\s+PROTO/.test(l)).length >= 2, watch.out.text());
  await con.stop();
  const status = await within(watch.status, 15_000, "the watcher to end with the Console");
  assert.equal(status.code, 1);
  assert.match(watch.err.text(), /The Console stopped/);
});

Deno.test("daemon connections list --watch --json and console connections list --watch follow connections through a PFO", async () => {
  await using pair = await startPair();
  using echo = echoServer();
  const listen = await addPfo(pair.console, "web", `127.0.0.1:${echo.port}`);
  await using daemonWatch = await watcher("daemon.ts", [
    "--config",
    pair.daemon.settingsPath,
    "connections",
    "list",
    "--watch",
    "--json",
  ]);
  await using consoleWatch = await watcher("console.ts", [
    "--config",
    pair.console.settingsPath,
    "connections",
    "list",
    "--watch",
  ]);
  await daemonWatch.out.waitFor(/^\[\]$/);
  await consoleWatch.out.waitFor(/^no open connections$/);
  const conn = await Deno.connect(hostPort(listen));
  await conn.write(encoder.encode("ping"));
  await within(conn.read(new Uint8Array(8)), 10_000, "echo");
  const [line] = await daemonWatch.out.waitFor(/^\[\{.*"pfo":"web".*\}\]$/);
  const rows = JSON.parse(line) as { pfo: string; target: string }[];
  assert.equal(rows.length, 1);
  assert.equal(rows[0].target, `127.0.0.1:${echo.port}`);
  await consoleWatch.out.waitFor(/^\d+\s+web\s+tcp\s+127\.0\.0\.1:\d+/);
  const mark = daemonWatch.out.mark;
  closeQuietly(conn);
  await daemonWatch.out.waitFor(/^\[\]$/, { from: mark });
});

Deno.test("GET /events streams the Console's events as JSON lines and refuses a bad query or a missing secret", async () => {
  await using con = await startConsole();
  const file = JSON.parse(await Deno.readTextFile(settingsPaths(con.settingsPath).control));
  const url = `http://127.0.0.1:${file.port}/events`;
  const auth = { authorization: `Bearer ${file.secret}` };
  const noSecret = await fetch(url);
  await noSecret.body?.cancel();
  assert.equal(noSecret.status, 401);
  const bad = await fetch(`${url}?watch=trust/rm`, { headers: auth });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error, /Cannot watch "trust\/rm": use one of "status"/);

  const abort = new AbortController();
  const res = await fetch(`${url}?watch=pfo/list&every=250`, {
    headers: auth,
    signal: abort.signal,
  });
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const lines: { type: string; event?: { type: string; name?: string } }[] = [];
  const reading = (async () => {
    let rest = "";
    for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      for (let nl = rest.indexOf("\n"); nl >= 0; nl = rest.indexOf("\n")) {
        lines.push(JSON.parse(rest.slice(0, nl)));
        rest = rest.slice(nl + 1);
        if (lines.some((l) => l.type === "event" && l.event?.name === "web")) return;
      }
    }
  })();
  await addPfo(con, "web", "127.0.0.1:9");
  await within(reading, 15_000, "the PFO event on the stream");
  abort.abort();
  assert.equal(lines[0].type, "result");
  assert.ok(lines.some((l) => l.type === "event" && l.event?.type === "pfo"));
});
