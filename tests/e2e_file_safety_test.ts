/**
 * End-to-end tests of the file owner and mode check: the files beside the
 * settings decide what the Console listens on and whom it trusts, so one that
 * another user owns or that group or others can write is refused at start,
 * on a live reload, and by the CLI (the control file).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type CliResult,
  json,
  startConsole,
  type StatusJson,
  taskFlags,
  tempDir,
} from "./_harness.ts";
import { settingsPaths } from "../lib/settings/paths.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();
const IS_WINDOWS = Deno.build.os === "windows";
const IS_ROOT = !IS_WINDOWS && Deno.uid() === 0;
/** `nobody` on Linux: a user other than us that root can give a file to. */
const OTHER_UID = 65534;

/** Start a Console on `settingsPath` that must exit by itself; killed (and failed) after 20 s. */
async function consoleMustExit(settingsPath: string): Promise<CliResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...await taskFlags("console"),
      "console.ts",
      "--config",
      settingsPath,
      "--session",
      "127.0.0.1:0",
      "--headless",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  try {
    const out = await child.output();
    assert.equal(out.signal, null, `the Console still ran after 20 s`);
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

function show(r: CliResult): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

Deno.test({
  name:
    "a Console whose settings file group or others can write, or another user owns, exits 1 saying how to fix it",
  ignore: IS_WINDOWS,
  fn: async () => {
    const cases: { what: string; mode: number; uid?: number; says: string }[] = [
      { what: "group-writable", mode: 0o620, says: "it is writable by group/others (mode 0620)" },
      { what: "world-writable", mode: 0o666, says: "it is writable by group/others (mode 0666)" },
      ...(IS_ROOT
        ? [{
          what: "another user's",
          mode: 0o600,
          uid: OTHER_UID,
          says: `it belongs to user ${OTHER_UID}, not you (0)`,
        }]
        : []),
    ];
    for (const c of cases) {
      const dir = await tempDir("pf-unsafe-");
      const path = `${dir}/portferry-console.yaml`;
      // What another user planted (on loopback here; 0.0.0.0 in the real attack).
      await Deno.writeTextFile(
        path,
        "pfos:\n  - name: evil\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:1\n",
      );
      await Deno.chmod(path, c.mode);
      if (c.uid !== undefined) await Deno.chown(path, c.uid, null);
      const r = await consoleMustExit(path);
      assert.equal(r.code, 1, `${c.what}\n${show(r)}`);
      assert.match(r.stderr, new RegExp(`^error: Cannot load "${path}": `), c.what);
      assert.ok(r.stderr.includes(c.says), `${c.what}\n${show(r)}`);
      assert.doesNotMatch(r.stdout, /listening/, c.what);
      // Refused before anything was written beside it.
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["portferry-console.yaml"]);
    }
  },
});

Deno.test({
  name: "a Console whose trust store others can write exits 1, and `trust list` refuses it too",
  ignore: IS_WINDOWS,
  fn: async () => {
    const dir = await tempDir("pf-unsafe-");
    const paths = settingsPaths(`${dir}/portferry-console.yaml`);
    const planted = {
      daemons: [{
        fingerprint: "SHA256:" + "A".repeat(43),
        host: "evil",
        user: "mallory",
        addedAt: new Date().toISOString(),
      }],
    };
    await Deno.writeTextFile(paths.trust, JSON.stringify(planted));
    await Deno.chmod(paths.trust, 0o666);
    const says = `Cannot load "${paths.trust}": it is writable by group/others (mode 0666)`;
    const r = await consoleMustExit(paths.settings);
    assert.equal(r.code, 1, show(r));
    assert.ok(r.stderr.includes(says), show(r));
    assert.doesNotMatch(r.stdout, /listening/);

    const list = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...await taskFlags("console"),
        "console.ts",
        "--config",
        paths.settings,
        "trust",
        "list",
      ],
      cwd: ROOT,
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = decoder.decode(list.stderr);
    assert.equal(list.code, 1, stderr);
    assert.ok(stderr.includes(says), stderr);
    assert.doesNotMatch(decoder.decode(list.stdout), /mallory/);
  },
});

Deno.test({
  name:
    "a settings file made world-writable while the Console runs is not reloaded, and the CLI refuses a control file others can write",
  ignore: IS_WINDOWS,
  fn: async () => {
    await using con = await startConsole({ settings: "pfos: []\n" });
    const mark = con.out.mark;
    // Another user's edit, saved the way editors do, world-writable.
    const planted = `${con.settingsPath}.planted`;
    await Deno.writeTextFile(
      planted,
      "pfos:\n  - name: evil\n    listen: 127.0.0.1:0\n    target: 127.0.0.1:1\n",
    );
    await Deno.chmod(planted, 0o666);
    await Deno.rename(planted, con.settingsPath);
    const [line] = await con.out.waitFor(/Cannot reload settings.*/, { from: mark });
    // The log escapes the quotes around the path.
    assert.ok(
      line.includes(
        `Cannot load \\"${con.settingsPath}\\": it is writable by group/others (mode 0666)`,
      ),
      line,
    );
    const status = json<StatusJson>(await con.cli("status", "--json"));
    assert.deepEqual(status.pfos, [], "the planted PFO was started");
    assert.doesNotMatch(con.out.text(), /settings reloaded/);

    // The control file names the port the CLI sends its secret to.
    const control = settingsPaths(con.settingsPath).control;
    await Deno.chmod(control, 0o666);
    const r = await con.cli("status");
    assert.equal(r.code, 1, show(r));
    assert.ok(
      r.stderr.includes(`Cannot load "${control}": it is writable by group/others (mode 0666)`),
      show(r),
    );
  },
});
