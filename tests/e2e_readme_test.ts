/**
 * End-to-end: commands the README documents, run as written (with this
 * test's addresses put in for the placeholders).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  echoRoundTrip,
  echoServer,
  hostPort,
  Output,
  runCli,
  startConsole,
  tempDir,
  within,
} from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);
const encoder = new TextEncoder();

/** The words of the README's shell block between `<!-- tests/e2e_readme_test.ts runs ...` markers. */
async function documentedCommand(): Promise<string[]> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const start = readme.indexOf("<!-- tests/e2e_readme_test.ts runs this command -->");
  const end = readme.indexOf("<!-- end of the command tests/e2e_readme_test.ts runs -->");
  assert.ok(start >= 0 && end > start, "the README marks the narrowed --allow-net command");
  const block = readme.slice(start, end).match(/```sh\n([\s\S]*?)```/);
  assert.ok(block, "a ```sh block between the markers");
  return block[1].replace(/\\\n/g, " ").trim().split(/\s+/);
}

/** Put `to` in place of the placeholder `from` everywhere in `words`; it must occur. */
function substitute(words: string[], from: string, to: string): string[] {
  assert.ok(words.some((w) => w.includes(from)), `the documented command names "${from}"`);
  return words.map((w) => w.replaceAll(from, to));
}

Deno.test("the README's narrowed --allow-net Daemon command forwards to its target and nothing else on loopback", async () => {
  await using allowed = echoServer();
  await using other = echoServer();
  await using con = await startConsole({ args: ["--auto-accept"] });
  const settingsPath = `${await tempDir("pf-readme-")}/portferry-daemon.yaml`;

  let words = await documentedCommand();
  assert.equal(words[0], "deno");
  words = substitute(words, "office.example.com:7470", con.address);
  words = substitute(words, "db01:5432", `127.0.0.1:${allowed.port}`);
  words = substitute(words, "SHA256:...", con.fingerprint);
  const child = new Deno.Command(Deno.execPath(), {
    args: [...words.slice(1), "--config", settingsPath],
    cwd: ROOT,
    env: { NO_COLOR: "1", USER: "tester" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  try {
    await out.waitFor(/Session established/);
    await con.out.waitFor(/Session established/);

    const listen = await addPfo(con, "db", `127.0.0.1:${allowed.port}`);
    assert.equal(
      await echoRoundTrip(listen, "through the narrowed Daemon"),
      "through the narrowed Daemon",
    );

    // Another loopback port is out of reach: the client is closed with nothing.
    const otherListen = await addPfo(con, "other", `127.0.0.1:${other.port}`);
    const conn = await Deno.connect(hostPort(otherListen));
    try {
      await conn.write(encoder.encode("hello?"));
      const got = await within(conn.read(new Uint8Array(64)).catch(() => null), 10_000, "close");
      assert.equal(got, null, "a loopback port the flags do not name was reached");
    } finally {
      conn.close();
    }
    await out.waitFor(
      new RegExp(`127\\.0\\.0\\.1:${other.port}.*not permitted by the Daemon's --allow-net`),
    );

    // Its local control, on the port the system picked, answers `daemon status` run as documented.
    const status = await runCli("daemon.ts", ["--config", settingsPath, "status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).session.state, "established");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await pumps;
  }
});
