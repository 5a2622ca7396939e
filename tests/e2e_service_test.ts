/**
 * `service install|uninstall|status` and `--version`, run as the user runs
 * them (real processes): `--dry-run` for every platform, install and
 * uninstall under `--root`, and the settings checks.
 */
import assert from "node:assert/strict";
import { runCli, tempDir } from "./_harness.ts";
import { child, parseUnit, parseXml, plistValue, splitExec, splitWindows } from "./_xml.ts";
import { permissionFlags, RUNTIME_FLAGS } from "../lib/app/permissions.ts";

const DAEMON_SETTINGS = 'console: "office.example.com:7470"\n' +
  'fingerprint: "SHA256:q0D4erMQtTzzpxlCYmy0wuHJBtGpsD4w8R+LV9gIjXQ"\n';

async function settingsDir(text = DAEMON_SETTINGS, name = "portferry-daemon.yaml") {
  const dir = await tempDir("pf-service-");
  await Deno.writeTextFile(`${dir}/${name}`, text, { mode: 0o600 });
  return { dir, file: `${dir}/${name}` };
}

/** Every file and folder under `dir`, relative, sorted. */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}${prefix}`)) {
    out.push(`${prefix}/${e.name}`);
    if (e.isDirectory) out.push(...await tree(dir, `${prefix}/${e.name}`));
  }
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** The dry run's files: path → content, as printed. */
function dryRunFiles(stdout: string): Map<string, string> {
  const files = new Map<string, string>();
  const parts = stdout.split(/^Would write (\S+) \(mode [0-7]+[^)]*\):\n/m);
  for (let i = 1; i < parts.length; i += 2) {
    files.set(parts[i], parts[i + 1].split(/^Would (?:run|remove)/m)[0]);
  }
  return files;
}

Deno.test("--version on both programs prints the permission flags, the same the tasks run with", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  for (const program of ["console", "daemon"] as const) {
    const words: string[] = config.tasks[program].split(/\s+/);
    const taskFlags = words.slice(words.indexOf("run") + 1, words.indexOf(`${program}.ts`));
    assert.deepEqual(taskFlags, RUNTIME_FLAGS[program], `deno.json's ${program} task`);
    const { code, stdout } = await runCli(`${program}.ts`, ["--version"]);
    assert.equal(code, 0);
    assert.equal(stdout, `0.1.0\npermissions: ${permissionFlags(program).join(" ")}\n`);
    assert.match(stdout, /^permissions: --allow-net .*--allow-read/m);
    assert.ok(!/(^| )-A( |$)|--allow-all/.test(stdout));
  }
});

Deno.test("service install --dry-run prints each platform's definition in full and changes nothing", async () => {
  const { dir, file } = await settingsDir();
  const before = await tree(dir);
  for (const platform of ["linux", "macos", "windows"] as const) {
    const { code, stdout, stderr } = await runCli("daemon.ts", [
      "service",
      "install",
      "--user",
      "--dry-run",
      "--platform",
      platform,
      "--config",
      file,
    ]);
    assert.equal(code, 0, stderr);
    const files = dryRunFiles(stdout);
    assert.equal(files.size, 1, stdout);
    const [[path, content]] = [...files];
    if (platform === "linux") assert.ok(!await exists(path), `${path} was written`);
    let argv: string[];
    if (platform === "linux") {
      assert.match(path, /\/\.config\/systemd\/user\/portferry-daemon\.service$/);
      const unit = parseUnit(content);
      argv = splitExec(unit.Service.ExecStart[0]);
      assert.deepEqual(unit.Service.ReadWritePaths, [dir]);
      assert.match(stdout, /^Would run: \/usr\/bin\/systemctl --user daemon-reload$/m);
      assert.match(stdout, /^Note: a user service starts at boot, .*loginctl enable-linger \S+$/m);
      assert.match(
        stdout,
        /^Would run: \/usr\/bin\/systemctl --user enable --now portferry-daemon\.service$/m,
      );
    } else if (platform === "macos") {
      assert.match(path, /^\/Users\/[^/]+\/Library\/LaunchAgents\/portferry-daemon\.plist$/);
      const plist = plistValue(parseXml(content)) as Record<string, unknown>;
      assert.equal(plist.Label, "portferry-daemon");
      assert.equal(plist.RunAtLoad, true);
      argv = plist.ProgramArguments as string[];
      assert.match(
        stdout,
        /^Would run: \/bin\/launchctl bootstrap gui\/[0-9]+ \/Users\/.*\.plist$/m,
      );
    } else {
      assert.match(path, /\\AppData\\Local\\portferry\\portferry-daemon\.xml$/);
      const task = parseXml(content);
      const exec = child(task, "Actions", "Exec");
      argv = [child(exec, "Command").text, ...splitWindows(child(exec, "Arguments").text)];
      assert.ok(child(task, "Triggers", "LogonTrigger"));
      assert.match(
        stdout,
        /^Would run: C:\/Windows\/System32\/schtasks\.exe \/Create \/TN portferry-daemon \/XML /m,
      );
    }
    // The command the service runs, parsed back: deno run, the task's flags, absolute paths.
    assert.equal(argv[0], Deno.execPath(), platform);
    assert.equal(argv[1], "run");
    const entry = argv.findIndex((w) => w.endsWith("/daemon.ts"));
    assert.deepEqual(argv.slice(2, entry - 2), [...RUNTIME_FLAGS.daemon]);
    assert.ok(argv[entry - 1].startsWith("/") && argv[entry].startsWith("/"), argv.join(" "));
    assert.deepEqual(argv.slice(entry + 1), [
      "--headless",
      "--log-format",
      "json",
      "--config",
      file,
    ]);
    assert.ok(!argv.includes("-A"));
  }
  assert.deepEqual(await tree(dir), before, "a dry run wrote something");
});

Deno.test("service install and uninstall --user --root write and remove exactly the definition, under DIR", async () => {
  const { dir, file } = await settingsDir();
  const root = await tempDir("pf-service-root-");
  const before = await tree(dir);
  const expected: Record<string, RegExp> = {
    linux: /^\/.*\/\.config\/systemd\/user\/pfd-test\.service$/,
    macos: /^\/Users\/[^/]+\/Library\/LaunchAgents\/pfd-test\.plist$/,
    windows: /^\/C\/Users\/[^/]+\/AppData\/Local\/portferry\/pfd-test\.xml$/,
  };
  for (const [platform, shape] of Object.entries(expected)) {
    const flags = ["--user", "--root", root, "--name", "pfd-test", "--platform", platform];
    const install = await runCli("daemon.ts", ["service", "install", ...flags, "--config", file]);
    assert.equal(install.code, 0, install.stderr);
    assert.match(install.stdout, /^Not run \(--root\): /m);
    const files = (await tree(root)).filter((p) => /\.(service|plist|xml)$/.test(p));
    assert.equal(files.length, 1, files.join("\n"));
    assert.match(files[0], shape);
    assert.ok(!await exists(files[0]), `${files[0]} was written outside --root`);
    const text = await Deno.readFile(`${root}${files[0]}`);
    if (platform === "windows") assert.deepEqual([...text.slice(0, 2)], [0xff, 0xfe]);
    assert.equal((await Deno.stat(`${root}${files[0]}`)).mode! & 0o777, 0o644);

    const again = await runCli("daemon.ts", ["service", "install", ...flags, "--config", file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /installed already/);
    const status = await runCli("daemon.ts", ["service", "status", ...flags]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /\(installed\)/);
    assert.match(status.stdout, /^logs: /m);

    const dry = await runCli("daemon.ts", ["service", "uninstall", ...flags, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.ok(dry.stdout.includes(`Would remove ${root}${files[0]}`), dry.stdout);
    assert.match(dry.stdout, /^Would run: /m);
    assert.ok(await exists(`${root}${files[0]}`), "a dry run removed the definition");
    const uninstall = await runCli("daemon.ts", ["service", "uninstall", ...flags]);
    assert.equal(uninstall.code, 0, uninstall.stderr);
    assert.deepEqual((await tree(root)).filter((p) => /\.(service|plist|xml)$/.test(p)), []);
    const gone = await runCli("daemon.ts", ["service", "status", ...flags]);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /\(not installed\)/);
  }
  assert.deepEqual(await tree(dir), before, "the settings folder changed");
});

Deno.test("service install checks its settings now: absolute, present, valid, complete", async () => {
  const { dir, file } = await settingsDir();
  const run = (args: string[]) =>
    runCli("daemon.ts", ["service", "install", "--user", "--dry-run", ...args]);
  const relative = await run(["--config", "portferry-daemon.yaml"]);
  assert.equal(relative.code, 2);
  assert.match(relative.stderr, /must be an absolute path/);
  const missing = await run(["--config", `${dir}/nope.yaml`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Cannot use ".*nope\.yaml" as the service's settings/);
  await Deno.writeTextFile(`${dir}/bad.yaml`, "console: [\n", { mode: 0o600 });
  assert.equal((await run(["--config", `${dir}/bad.yaml`])).code, 1);
  await Deno.writeTextFile(`${dir}/empty.yaml`, "reconnect: true\n", { mode: 0o600 });
  const empty = await run(["--config", `${dir}/empty.yaml`]);
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /must name the Console/);
  const badName = await run(["--config", file, "--name", "../x"]);
  assert.equal(badName.code, 2);
  assert.match(badName.stderr, /Cannot use "\.\.\/x" as a service name/);
  const system = await runCli("daemon.ts", [
    "service",
    "install",
    "--system",
    "--dry-run",
    "--platform",
    "linux",
    "--config",
    file,
  ]);
  assert.equal(system.code, 1);
  assert.match(system.stderr, /keeps them in "\/var\/lib\/portferry-daemon"/);
});

Deno.test("console service install --system: DynamicUser, its own state folder, and CAP_NET_BIND_SERVICE only below port 1024", async () => {
  const root = await tempDir("pf-service-sys-");
  await Deno.mkdir(`${root}/var/lib/pfc`, { recursive: true });
  for (const [session, caps] of [["0.0.0.0:443", "CAP_NET_BIND_SERVICE"], ["0.0.0.0:7470", ""]]) {
    const file = `${root}/var/lib/pfc/portferry-console.yaml`;
    await Deno.writeTextFile(file, `session: "${session}"\n`, { mode: 0o600 });
    const { code, stdout, stderr } = await runCli("console.ts", [
      "service",
      "install",
      "--system",
      "--dry-run",
      "--platform",
      "linux",
      "--name",
      "pfc",
      "--root",
      root,
      "--config",
      file,
      "--log-format",
      "text",
    ]);
    assert.equal(code, 0, stderr);
    const [[path, content]] = [...dryRunFiles(stdout)];
    assert.equal(path, `${root}/etc/systemd/system/pfc.service`);
    const unit = parseUnit(content).Service;
    assert.deepEqual(unit.CapabilityBoundingSet, [caps]);
    assert.deepEqual(unit.AmbientCapabilities, caps ? [caps] : undefined);
    assert.deepEqual(unit.DynamicUser, ["yes"]);
    assert.deepEqual(unit.ReadWritePaths, ["/var/lib/pfc"]);
    const argv = splitExec(unit.ExecStart[0]);
    assert.deepEqual(argv.slice(-5), [
      "--headless",
      "--log-format",
      "text",
      "--config",
      "/var/lib/pfc/portferry-console.yaml",
    ]);
    assert.match(stdout, /^Would run: \/usr\/bin\/systemctl enable --now pfc\.service$/m);
  }
});
