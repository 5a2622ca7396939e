import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../core/errors.ts";
import { defaultSettingsFile, readTokenFile, settingsPaths } from "./paths.ts";

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "portferry-settings-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("settingsPaths() puts identity, control and trust files beside the settings", () => {
  assert.deepEqual({ ...settingsPaths("/d/portferry-console.yaml") }, {
    settings: "/d/portferry-console.yaml",
    key: "/d/portferry-console.key.pem",
    cert: "/d/portferry-console.cert.pem",
    control: "/d/portferry-console.control.json",
    trust: "/d/portferry-console.trust.json",
  });
  assert.equal(settingsPaths("/d/pfd.yml").cert, "/d/pfd.cert.pem");
  assert.equal(settingsPaths("C:\\pf\\pfd.YAML").key, "C:\\pf\\pfd.key.pem");
  assert.equal(settingsPaths("/d/settings").trust, "/d/settings.trust.json");
});

Deno.test("defaultSettingsFile() sits beside the entry file or the executable", () => {
  assert.equal(
    defaultSettingsFile("console", {
      mainModule: "file:///src/pf/console.ts",
      execPath: "/bin/deno",
    }),
    "/src/pf/portferry-console.yaml",
  );
  assert.equal(
    defaultSettingsFile("daemon", {
      mainModule: "file:///tmp/deno-compile-portferry-daemon/daemon.ts",
      execPath: "/opt/pf/portferry-daemon",
    }),
    "/opt/pf/portferry-daemon.yaml",
  );
  assert.equal(
    defaultSettingsFile("daemon", { mainModule: "data:,x", execPath: "/opt/pf/pfd.exe" }),
    "/opt/pf/pfd.yaml",
  );
  // This test runs from source.
  assert.equal(
    defaultSettingsFile("console"),
    join(dirname(fileURLToPath(Deno.mainModule)), "portferry-console.yaml"),
  );
});

Deno.test("readTokenFile() trims the token and refuses an empty or missing file", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "token");
  await Deno.writeTextFile(path, "\n  t0ken \r\n");
  assert.equal(await readTokenFile(path), "t0ken");
  await Deno.writeTextFile(path, " \n");
  await assert.rejects(() => readTokenFile(path), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.ok(err.message.includes(`"${path}": it is empty`), err.message);
    return true;
  });
  await assert.rejects(() => readTokenFile(join(dir.path, "missing")), ConfigError);
});
