/**
 * `deno task test` leaves nothing in the temp folder: every test makes its
 * temp folders through the harness's `tempDir()` (named `portferry-test-…`),
 * which removes them when the test process ends.
 *
 * @module
 */
import assert from "node:assert/strict";
import { TEMP_PREFIX, tempDir } from "./_harness.ts";

const TESTS = new URL("./", import.meta.url);

async function* sources(dir: URL): AsyncGenerator<URL> {
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory) yield* sources(new URL(`${entry.name}/`, dir));
    else if (entry.name.endsWith(".ts")) yield new URL(entry.name, dir);
  }
}

Deno.test("tests make temp folders and files only through the harness's tempDir()", async () => {
  const own = ["_harness.ts", "netns/firewall.ts"].map((f) => new URL(f, TESTS).href);
  let read = 0;
  const offenders: string[] = [];
  for await (const file of sources(TESTS)) {
    if (own.includes(file.href)) continue;
    read++;
    const text = await Deno.readTextFile(file);
    text.split("\n").forEach((line, i) => {
      if (/Deno\.makeTemp(Dir|File)(Sync)?\(/.test(line)) {
        offenders.push(`${file.pathname.slice(TESTS.pathname.length)}:${i + 1}: ${line.trim()}`);
      }
    });
  }
  assert.ok(read >= 10, `read only ${read} test files`);
  assert.deepEqual(offenders, []);
});

Deno.test("a test file using the harness leaves nothing in the temp folder once it ends", async () => {
  const tmp = await tempDir("leftovers-");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--no-prompt",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "--allow-sys",
      "tests/testdata/temp_probe.ts",
    ],
    cwd: new URL("../", import.meta.url),
    env: { TMPDIR: tmp, TMP: tmp, TEMP: tmp, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, log);
  assert.match(log, /1 passed/);
  const left = [...Deno.readDirSync(tmp)].map((e) => e.name);
  assert.deepEqual(left, [], `left behind in ${tmp} (prefix ${TEMP_PREFIX})`);
});
