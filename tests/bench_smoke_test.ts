/**
 * The bench's smoke mode (`deno task bench --smoke`) runs every workload tiny,
 * so the bench never rots: it must print a table with portferry's row filled
 * in and write its JSON. It runs with the `bench` task's own flags, which are
 * explicit: never `-A` / `--allow-all`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { tempDir } from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);

/** The flags of the `bench` task in deno.json. */
async function benchFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks.bench.split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.findIndex((w) => w.endsWith(".ts")));
}

Deno.test("deno.json's bench task names each permission (no -A or --allow-all)", async () => {
  const flags = await benchFlags();
  assert.ok(flags.includes("--no-prompt"), flags.join(" "));
  for (const flag of flags) {
    assert.ok(!/^(-A|--allow-all)(=|$)/.test(flag), `the bench task has ${flag}`);
  }
  assert.ok(flags.some((f) => f.startsWith("--allow-run=")), `--allow-run is unscoped: ${flags}`);
});

Deno.test("tools/bench.ts --smoke prints a table with portferry's figures and writes JSON", async () => {
  const dir = await tempDir("pf-bench-smoke-");
  const json = `${dir}/smoke.json`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await benchFlags(), "tools/bench.ts", "--smoke", "--json", json],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 170_000);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  try {
    assert.deepEqual(out.code, 0, `bench --smoke exited ${out.code}:\n${stdout}\n${stderr}`);
    const row = stdout.split("\n").find((l) => l.startsWith("| portferry (TLS) |"));
    assert.ok(row, `no portferry row in the table:\n${stdout}\n${stderr}`);
    const cells = row.split("|").slice(2, -1).map((c) => c.trim());
    assert.deepEqual(cells.length, 8, row);
    for (const cell of cells) {
      assert.ok(/^-?[\d,.]+/.test(cell), `a portferry figure is missing: ${row}`);
    }
    assert.ok(stdout.includes("| direct loopback |"), stdout);
    assert.ok(/PFO ports enabled \| .* \| pfo add/.test(stdout), `no PFO-range figure:\n${stdout}`);
    for (const name of ["fairness", "udp-flood"]) {
      assert.match(stdout, new RegExp(`^${name}: ratio \\d`, "m"), `no ${name} case:\n${stdout}`);
    }
    // The udp workload (iperf3, Debian package "iperf3"): a row per rate.
    assert.match(stdout, /^\| 300Mbit\/s \| \d+\.\d+% \| \d+\.\d+% \|/m, `no UDP row:\n${stdout}`);

    const report = JSON.parse(await Deno.readTextFile(json));
    assert.deepEqual(report.smoke, true);
    const pf = report.results.find((r: { name: string }) => r.name === "portferry");
    assert.deepEqual(pf.errors, []);
    for (const key of ["up1", "down1", "up4", "down4", "rttP50", "rttP99", "connRate"]) {
      assert.ok(pf.figures[key].value > 0, `portferry ${key}: ${JSON.stringify(pf.figures[key])}`);
    }
    // The WebSocket path: the same workloads, and its cost against plain TLS in the report.
    const ws = report.results.find((r: { name: string }) => r.name === "portferry-ws");
    assert.deepEqual(ws.errors, []);
    for (const key of ["up1", "down1", "connRate"]) {
      assert.ok(
        ws.figures[key].value > 0,
        `portferry-ws ${key}: ${JSON.stringify(ws.figures[key])}`,
      );
    }
    assert.match(stdout, /portferry over ws \/ portferry \(TLS\), same run:/);
    // RSS over a handful of connections is noise (it may even shrink); they must be held, though.
    const idle = pf.figures.idle.extra;
    assert.deepEqual([idle.held, idle.alive], [idle.count, idle.count], JSON.stringify(idle));
    assert.deepEqual(report.ports.listeners, report.ports.ports);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tools/bench.ts --wan --smoke puts the link emulator on every path and prints their figures", async () => {
  const dir = await tempDir("pf-bench-wan-smoke-");
  const json = `${dir}/wan.json`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await benchFlags(), "tools/bench.ts", "--wan", "--smoke", "--json", json],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 170_000);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  try {
    assert.deepEqual(out.code, 0, `bench --wan --smoke exited ${out.code}:\n${stdout}\n${stderr}`);
    assert.match(stdout, /^### 1 Gbit\/s, 20 ms each way/m, stdout);
    const row = stdout.split("\n").find((l) => l.startsWith("| portferry (TLS) |"));
    assert.ok(row, `no portferry row:\n${stdout}\n${stderr}`);
    assert.match(row, /× direct, [\d.]+× ssh\)/, `no ratios to direct and ssh: ${row}`);
    const report = JSON.parse(await Deno.readTextFile(json));
    const rows: { name: string; figures: Record<string, number>; errors: string[] }[] =
      report["1g-20ms"].rows;
    assert.deepEqual(rows.map((r) => r.name), ["direct", "portferry", "ssh-L-aes", "ssh-R"]);
    for (const r of rows) {
      assert.deepEqual(r.errors, [], r.name);
      for (const key of ["up1", "down1", "up4", "down4"]) {
        // A link of 1 Gbit/s: no path can carry more, whatever the machine's load.
        assert.ok(
          r.figures[key] > 0 && r.figures[key] <= 1000 * 1.05,
          `${r.name} ${key}: ${r.figures[key]}`,
        );
      }
      // A new connection waits for the link's round trip (20 ms each way) at least once.
      assert.ok(r.figures.conn >= 40, `${r.name} conn: ${r.figures.conn} ms`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
