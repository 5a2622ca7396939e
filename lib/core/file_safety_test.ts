import assert from "node:assert/strict";
import { join } from "node:path";
import { callControl } from "../app/control.ts";
import { ConfigError } from "./errors.ts";
import { checkFileSafety, readOwnTextFile, UnsafeFileError } from "./file_safety.ts";
import { loadOrCreateIdentity, TrustStore } from "./identity.ts";
import {
  loadConsoleSettings,
  loadDaemonSettings,
  parseConsoleSettings,
} from "../settings/schema.ts";
import { readTokenFile, settingsPaths } from "../settings/paths.ts";
import { watchSettings } from "../settings/watch.ts";
import { writeFileAtomic } from "./io.ts";

const IS_WINDOWS = Deno.build.os === "windows";
const IS_ROOT = !IS_WINDOWS && Deno.uid() === 0;
/** `nobody` on Linux: a user other than us that root can give a file to. */
const OTHER_UID = 65534;

/** Fails with `what` when `promise` has not settled after 10 s. */
async function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after 10 s: ${what}`)), 10_000);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pf-safety-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("checkFileSafety() accepts files of this user or root that only the owner can write", () => {
  const ok: [string, { uid: number; mode: number }, number][] = [
    ["own, 0600", { uid: 1000, mode: 0o100600 }, 1000],
    ["own, 0644 (others may read)", { uid: 1000, mode: 0o100644 }, 1000],
    ["own, 0400", { uid: 1000, mode: 0o100400 }, 1000],
    ["root's, read by a user", { uid: 0, mode: 0o100644 }, 1000],
    ["root's, read by root", { uid: 0, mode: 0o100600 }, 0],
  ];
  for (const [what, info, uid] of ok) {
    assert.doesNotThrow(() => checkFileSafety("/d/f", info, uid), what);
  }
  assert.doesNotThrow(() => checkFileSafety("/d/f", { uid: null, mode: null }, 1000), "Windows");
});

Deno.test("checkFileSafety() refuses a file of another user, or one group or others can write, saying how to fix it", () => {
  const bad: [string, { uid: number; mode: number }, number, string][] = [
    [
      "another user's",
      { uid: 1001, mode: 0o100600 },
      1000,
      'Cannot load "/d/f": it belongs to user 1001, not you (1000); if you did not put it there, ' +
      'remove it, otherwise run as root: chown 1000 "/d/f"',
    ],
    [
      "another user's, read by root",
      { uid: 1001, mode: 0o100600 },
      0,
      'Cannot load "/d/f": it belongs to user 1001, not you (0); if you did not put it there, ' +
      'remove it, otherwise run as root: chown 0 "/d/f"',
    ],
    [
      "world-writable",
      { uid: 1000, mode: 0o100666 },
      1000,
      'Cannot load "/d/f": it is writable by group/others (mode 0666); check its content, ' +
      'then run: chmod 600 "/d/f"',
    ],
    [
      "group-writable",
      { uid: 1000, mode: 0o100620 },
      1000,
      'Cannot load "/d/f": it is writable by group/others (mode 0620); check its content, ' +
      'then run: chmod 600 "/d/f"',
    ],
    [
      "writable by others only, owned by root",
      { uid: 0, mode: 0o100602 },
      1000,
      'Cannot load "/d/f": it is writable by group/others (mode 0602); check its content, ' +
      'then run: chmod 600 "/d/f"',
    ],
  ];
  for (const [what, info, uid, message] of bad) {
    assert.throws(
      () => checkFileSafety("/d/f", info, uid),
      (err) => err instanceof UnsafeFileError && err.message === message && err.path === "/d/f",
      what,
    );
  }
});

Deno.test({
  name: "readOwnTextFile() reads an own file and refuses a real file that others can write",
  ignore: IS_WINDOWS,
  fn: async () => {
    await using dir = await tempDir();
    const path = join(dir.path, "f.yaml");
    await Deno.writeTextFile(path, "pfos: []\n", { mode: 0o600 });
    assert.equal(await readOwnTextFile(path), "pfos: []\n");
    await Deno.chmod(path, 0o666);
    await assert.rejects(
      readOwnTextFile(path),
      UnsafeFileError,
      `Cannot load "${path}": it is writable by group/others (mode 0666)`,
    );
    await assert.rejects(readOwnTextFile(join(dir.path, "none")), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "readOwnTextFile() refuses a real file that belongs to another user (run as root)",
  ignore: !IS_ROOT,
  fn: async () => {
    await using dir = await tempDir();
    const path = join(dir.path, "f.yaml");
    await Deno.writeTextFile(path, "pfos: []\n", { mode: 0o600 });
    await Deno.chown(path, OTHER_UID, null);
    await assert.rejects(
      readOwnTextFile(path),
      UnsafeFileError,
      `Cannot load "${path}": it belongs to user ${OTHER_UID}, not you (0)`,
    );
  },
});

/** Every file beside the settings, and the reader that must refuse it. */
function readers(dir: string): [string, string, () => Promise<unknown>][] {
  const console = settingsPaths(join(dir, "portferry-console.yaml"));
  const daemon = settingsPaths(join(dir, "portferry-daemon.yaml"));
  const token = join(dir, "token");
  return [
    ["Console settings", console.settings, () => loadConsoleSettings(console.settings)],
    ["Daemon settings", daemon.settings, () => loadDaemonSettings(daemon.settings)],
    [
      "key",
      daemon.key,
      () => loadOrCreateIdentity({ key: daemon.key, cert: daemon.cert }, { role: "daemon" }),
    ],
    [
      "certificate",
      daemon.cert,
      () => loadOrCreateIdentity({ key: daemon.key, cert: daemon.cert }, { role: "daemon" }),
    ],
    ["trust store", console.trust, () => TrustStore.load(console.trust)],
    ["token file", token, () => readTokenFile(token)],
    ["control file", console.control, () => callControl(console.control, "status", {}, "Console")],
  ];
}

/** Valid files for {@linkcode readers}: each fails only the safety check. */
async function writeValidFiles(dir: string): Promise<void> {
  const daemon = settingsPaths(join(dir, "portferry-daemon.yaml"));
  await loadOrCreateIdentity({ key: daemon.key, cert: daemon.cert }, { role: "daemon" });
  const console = settingsPaths(join(dir, "portferry-console.yaml"));
  const store = await TrustStore.load(console.trust);
  await store.add({ fingerprint: "SHA256:" + "A".repeat(43), host: "db01", user: "ops" });
  await writeFileAtomic(console.settings, "pfos: []\n");
  await writeFileAtomic(daemon.settings, "reconnect: true\n");
  await writeFileAtomic(join(dir, "token"), "s3cret\n");
  await writeFileAtomic(console.control, JSON.stringify({ pid: 1, port: 1, secret: "x" }));
}

Deno.test({
  name:
    "the settings, key, certificate, trust store, token and control file are refused when others can write them",
  ignore: IS_WINDOWS,
  fn: async () => {
    await using dir = await tempDir();
    await writeValidFiles(dir.path);
    const list = readers(dir.path);
    assert.equal(list.length, 7);
    for (const [what, path, read] of list) {
      await Deno.chmod(path, 0o666);
      await assert.rejects(read(), (err: Error) => {
        assert.ok(err instanceof Error, what);
        assert.ok(
          err.message.startsWith(
            `Cannot load "${path}": it is writable by group/others (mode 0666); ` +
              `check its content, then run: chmod 600 "${path}"`,
          ),
          `${what}: ${err.message}`,
        );
        return true;
      }, what);
      await Deno.chmod(path, 0o600);
    }
    // Fixed, each reads again (the control file's port is closed: a different error).
    for (const [what, path, read] of list.slice(0, -1)) {
      await assert.doesNotReject(read(), `${what} ${path}`);
    }
  },
});

Deno.test({
  name:
    "the settings, key, certificate, trust store, token and control file are refused when they belong to another user (run as root)",
  ignore: !IS_ROOT,
  fn: async () => {
    await using dir = await tempDir();
    await writeValidFiles(dir.path);
    const list = readers(dir.path);
    assert.equal(list.length, 7);
    for (const [what, path, read] of list) {
      await Deno.chown(path, OTHER_UID, null);
      await assert.rejects(read(), (err: Error) => {
        assert.ok(
          err.message.startsWith(
            `Cannot load "${path}": it belongs to user ${OTHER_UID}, not you (0)`,
          ),
          `${what}: ${err.message}`,
        );
        return true;
      }, what);
      await Deno.chown(path, 0, null);
    }
  },
});

Deno.test({
  name: "loadConsoleSettings() and readTokenFile() report an unsafe file as ConfigError",
  ignore: IS_WINDOWS,
  fn: async () => {
    await using dir = await tempDir();
    const path = join(dir.path, "portferry-console.yaml");
    await Deno.writeTextFile(path, "pfos: []\n");
    await Deno.chmod(path, 0o620);
    await assert.rejects(loadConsoleSettings(path), ConfigError, "(mode 0620)");
    await assert.rejects(readTokenFile(path), ConfigError, "(mode 0620)");
  },
});

Deno.test({
  name:
    "watchSettings() does not reload a settings file that became writable by others, and says why",
  ignore: IS_WINDOWS,
  fn: async () => {
    await using dir = await tempDir();
    const path = join(dir.path, "portferry-console.yaml");
    await Deno.writeTextFile(path, "pfos: []\n", { mode: 0o600 });
    const ac = new AbortController();
    const changes: number[] = [];
    let refused!: (err: ConfigError) => void;
    const error = new Promise<ConfigError>((resolve) => refused = resolve);
    let applied!: () => void;
    const reloaded = new Promise<void>((resolve) => applied = resolve);
    const done = watchSettings(path, {
      parse: parseConsoleSettings,
      knownText: "pfos: []\n",
      signal: ac.signal,
      debounceMs: 10,
      onChange: (s) => {
        changes.push(s.pfos.length);
        applied();
      },
      onError: (err) => refused(err),
    });
    try {
      // Another user's edit: a world-writable file with a PFO in it, renamed into place.
      const planted = `${path}.planted`;
      await Deno.writeTextFile(
        planted,
        "pfos:\n  - name: evil\n    listen: 0.0.0.0:1\n    target: x:1\n",
      );
      await Deno.chmod(planted, 0o666);
      await Deno.rename(planted, path);
      const err = await bounded(error, "the watch reports the unsafe file");
      assert.match(
        err.message,
        /^Cannot reload settings: Cannot load ".*": it is writable by group\/others \(mode 0666\)/,
      );
      assert.deepEqual(changes, []);
      // Once the owner fixes the mode, the watch reads it again.
      await Deno.chmod(path, 0o600);
      await bounded(reloaded, "the watch reloads the fixed file");
      assert.deepEqual(changes, [1]);
    } finally {
      ac.abort();
      await done;
    }
  },
});

Deno.test("writeFileAtomic() refuses a mode that lets group or others write", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "f.json");
  for (const mode of [0o666, 0o620, 0o602]) {
    await assert.rejects(writeFileAtomic(path, "{}", { mode }), TypeError, "lets group or others");
  }
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});
