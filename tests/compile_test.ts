// deno-lint-ignore-file no-console -- a build script / test output, not library code
/**
 * `deno task compile` builds both binaries; they start with the permissions
 * baked in and keep their settings beside themselves.
 *
 * `deno compile` downloads its runtime base (denort) from dl.deno.land. Where
 * that download is blocked (as on our build machines), the binaries cannot be
 * built: the test that runs them is ignored, and says why. The build's summary
 * and its clean-up are tested either way, a blocked download being one of the
 * cases the summary must explain.
 */
import assert from "node:assert/strict";
import { Output, tempDir } from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);

const build = await new Deno.Command(Deno.execPath(), {
  args: ["task", "compile"],
  cwd: ROOT,
  stdout: "piped",
  stderr: "piped",
  env: { NO_COLOR: "1" },
}).output();
const stdout = new TextDecoder().decode(build.stdout);
const stderr = new TextDecoder().decode(build.stderr);
const blocked = /Not built: .*cannot download its runtime base/.test(stderr);
if (blocked) {
  console.log(
    "NOT RUN: the compiled binaries, because deno compile cannot download its runtime base here",
  );
}

Deno.test("compile prints one summary: what was built, what was not and why, once each, and leaves no empty folder", () => {
  const summary = [...stdout.split("\n"), ...stderr.split("\n")].filter((l) =>
    /^(Built|Not built): /.test(l)
  );
  assert.equal(summary.filter((l) => l.startsWith("Built: ")).length, 1, stdout);
  const notBuilt = summary.filter((l) => l.startsWith("Not built: "));
  if (build.code === 0) {
    assert.match(stdout, /^Built: dist\/portferry-console, dist\/portferry-daemon\.$/m);
    assert.deepEqual(notBuilt, []);
  } else {
    assert.ok(notBuilt.length >= 1, stderr);
    // Each reason once, naming every output it stopped; no reason repeated per target.
    const reasons = notBuilt.map((l) => l.replace(/^Not built: [^:]*: /, ""));
    assert.equal(new Set(reasons).size, reasons.length, stderr);
    if (blocked) {
      assert.equal(notBuilt.length, 1, stderr);
      assert.match(notBuilt[0], /dist\/portferry-console, dist\/portferry-daemon: /);
      assert.equal(stdout.match(/^Built: nothing\.$/m)?.length, 1, stdout);
    }
  }
  // Every folder under dist/ holds something; dist/ itself only when something was built.
  const empty: string[] = [];
  const walk = (dir: URL) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return; // No dist/ at all.
    }
    if (entries.length === 0) empty.push(dir.pathname);
    for (const e of entries) if (e.isDirectory) walk(new URL(`${e.name}/`, dir));
  };
  walk(new URL("dist/", ROOT));
  assert.deepEqual(empty, []);
});

Deno.test({
  name: "compiled portferry-console starts and keeps its settings beside itself",
  // The download of deno compile's runtime base is blocked here: nothing was built to run.
  ignore: build.code !== 0,
  fn: async () => {
    const dir = await tempDir("pf-compiled-");
    for (const name of ["portferry-console", "portferry-daemon"]) {
      await Deno.copyFile(new URL(`dist/${name}`, ROOT), `${dir}/${name}`);
      await Deno.chmod(`${dir}/${name}`, 0o755);
    }
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
      await out.waitFor(/^ {4}portferry-daemon \S+ --fingerprint/);
      assert.ok(fingerprint.length > 10);
      const key = await Deno.stat(`${dir}/portferry-console.key.pem`);
      assert.equal(key.mode! & 0o777, 0o600);
    } finally {
      child.kill("SIGKILL");
      await child.status;
    }
  },
});
