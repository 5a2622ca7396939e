/**
 * End-to-end: the `yaml` package's debug variables (`LOG_TOKENS`,
 * `LOG_STREAM`) in the environment neither print the settings nor stop the
 * Console.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Output, taskFlags, tempDir, within } from "./_harness.ts";

const decoder = new TextDecoder();
const ROOT = new URL("../", import.meta.url);
const YAML_DEBUG = { LOG_TOKENS: "1", LOG_STREAM: "1" };

Deno.test("LOG_TOKENS and LOG_STREAM in the environment do not print the settings (socksPassword) and the Console still starts", async () => {
  const dir = await tempDir("pf-env-");
  const settingsPath = `${dir}/portferry-console.yaml`;
  const password = `pw-${crypto.randomUUID()}`;
  await Deno.writeTextFile(
    settingsPath,
    `socksUsername: alice\nsocksPassword: "${password}"\n`,
    { mode: 0o600 },
  );
  const flags = await taskFlags("console");
  const env = { NO_COLOR: "1", ...YAML_DEBUG };
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "console.ts", "--config", settingsPath, "--session", "127.0.0.1:0"]
      .concat(["--headless"]),
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  try {
    await out.waitFor(/Console listening for Daemons on/);
    // A subcommand (its own process, same environment), and a settings write-back in the
    // running Console, both parse the settings again.
    const add = await within(
      new Deno.Command(Deno.execPath(), {
        args: ["run", ...flags, "console.ts", "--config", settingsPath, "pfo", "add", "web"]
          .concat(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"]),
        cwd: ROOT,
        env,
        stdin: "null",
      }).output(),
      30_000,
      "console pfo add",
    );
    const addText = decoder.decode(add.stdout) + decoder.decode(add.stderr);
    assert.equal(add.code, 0, addText);
    assert.ok(!addText.includes(password), `pfo add printed the password:\n${addText}`);
    assert.match(await Deno.readTextFile(settingsPath), /name: web/);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await pumps;
  }
  const text = out.text();
  assert.ok(!text.includes(password), `the Console printed the password:\n${text}`);
  assert.doesNotMatch(text, /^\| /m, "yaml printed its tokens");
});
