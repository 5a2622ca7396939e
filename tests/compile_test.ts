// deno-lint-ignore-file no-console -- a build script / test output, not library code
/**
 * `deno task compile` builds both binaries; they start with the permissions
 * baked in and keep their settings beside themselves.
 *
 * `deno compile` downloads its runtime base (denort) from dl.deno.land. Where
 * that download is blocked (as on our build machines), this test says so and
 * why, and checks nothing else; wherever the download works it runs fully.
 */
import assert from "node:assert/strict";
import { Output, tempDir } from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("compile builds portferry-console and portferry-daemon, which start and keep settings beside themselves", async (t) => {
  const build = await new Deno.Command(Deno.execPath(), {
    args: ["task", "compile"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const log = new TextDecoder().decode(build.stdout) + new TextDecoder().decode(build.stderr);
  if (build.code !== 0) {
    const blocked = log.match(
      /error sending request for url \((https:\/\/dl\.deno\.land\/[^)]+)\)[^\n]*/,
    );
    if (blocked) {
      console.log(
        `NOT RUN: deno compile cannot download its runtime base here (${blocked[1]}: ${
          blocked[0].split(": ").slice(-1)[0]
        }). The binaries were not built and not tested on this machine.`,
      );
      return;
    }
    assert.fail(`deno task compile failed:\n${log}`);
  }
  const dir = await tempDir("pf-compiled-");
  for (const name of ["portferry-console", "portferry-daemon"]) {
    await Deno.copyFile(new URL(`dist/${name}`, ROOT), `${dir}/${name}`);
    await Deno.chmod(`${dir}/${name}`, 0o755);
  }
  await t.step("the Console binary starts and keeps its settings beside itself", async () => {
    const child = new Deno.Command(`${dir}/portferry-console`, {
      args: ["--session", "127.0.0.1:0", "--headless"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new Output();
    out.pump(child.stdout);
    out.pump(child.stderr);
    try {
      const [, fingerprint] = await out.waitFor(/fingerprint: (SHA256:\S+)/);
      await out.waitFor(/Console listening for Daemons on (\S+)/);
      await out.waitFor(/portferry-daemon \S+ --fingerprint/);
      assert.ok(fingerprint.length > 10);
      const key = await Deno.stat(`${dir}/portferry-console.key.pem`);
      assert.equal(key.mode! & 0o777, 0o600);
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
  });
});
