/**
 * The public module: importing `mod.ts` sets no global and starts nothing,
 * and it exports the program classes an embedder needs.
 *
 * @module
 */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const PROBE = new URL("testdata/mod_import_probe.ts", import.meta.url);

/** The classes and functions an embedder builds on. */
const PROGRAM_EXPORTS = ["Console", "Daemon", "EventHub", "CommandError", "DaemonCommands"];

interface ProbeReport {
  added: Record<string, string[]>;
  removed: Record<string, string[]>;
  calls: string[];
  exports: Record<string, string>;
}

Deno.test("importing mod.ts sets no global, starts no timer and needs no permission", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    // No permission flags: an import that reads the environment or files fails here.
    args: ["run", "--no-prompt", "--config", "deno.json", PROBE.pathname, ...PROGRAM_EXPORTS],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `the probe failed: ${stderr}`);
  const report = JSON.parse(new TextDecoder().decode(out.stdout)) as ProbeReport;
  // Deno itself defines `nodeBootstrap` once any npm package is in the graph
  // (before the first line of a program that imports one statically).
  const added = {
    ...report.added,
    globalThis: report.added.globalThis.filter((name) => name !== "nodeBootstrap"),
  };
  const none = { globalThis: [], Reflect: [], Deno: [] };
  assert.deepEqual(added, none, "properties the import added");
  assert.deepEqual(report.removed, none, "properties the import removed");
  assert.deepEqual(report.calls, [], "timers or listeners set up by the import");
  assert.deepEqual(
    report.exports,
    Object.fromEntries(PROGRAM_EXPORTS.map((name) => [name, "function"])),
  );
});

Deno.test("mod.ts does not reach lib/app/scrub_env.ts, which changes the environment", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--config", "deno.json", "mod.ts"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string }[];
  };
  const local = info.modules.map((m) => m.specifier).filter((s) => s.startsWith("file:"));
  assert.ok(local.some((s) => s.endsWith("/lib/console/console.ts")), "graph looks wrong");
  assert.deepEqual(local.filter((s) => s.endsWith("/lib/app/scrub_env.ts")), []);
});
