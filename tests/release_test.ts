/**
 * The release artifacts `deno task compile:all` writes, from fake binaries
 * (the real ones cannot be built here): archives the system's own tools
 * read back, and a SHA256SUMS that `sha256sum -c` checks.
 */
import assert from "node:assert/strict";
import { tempDir } from "./_harness.ts";
import { SAMPLE_SETTINGS, writeRelease } from "../tools/release.ts";

const TARGETS = ["x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"];

async function tool(cmd: string, args: string[], cwd: string, pkg: string) {
  try {
    const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { code: out.code, text };
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd} is missing: install the Debian package ${pkg}`);
    }
    throw err;
  }
}

Deno.test("writeRelease() writes one archive per target and a SHA256SUMS that sha256sum -c accepts", async () => {
  const dist = await tempDir("pf-release-");
  for (const target of TARGETS) {
    const exe = target.includes("windows") ? ".exe" : "";
    await Deno.mkdir(`${dist}/${target}`);
    for (const p of ["console", "daemon"]) {
      await Deno.writeTextFile(`${dist}/${target}/portferry-${p}${exe}`, `fake ${p} ${target}\n`);
    }
  }
  const readme = new TextEncoder().encode("# portferry\n");
  const archives = await writeRelease(dist, { targets: TARGETS, readme });
  assert.deepEqual(archives, [
    "portferry-x86_64-unknown-linux-gnu.tar.gz",
    "portferry-x86_64-pc-windows-msvc.zip",
  ]);
  const check = await tool("sha256sum", ["-c", "SHA256SUMS"], dist, "coreutils");
  assert.equal(check.code, 0, check.text);
  assert.equal(check.text.match(/: OK$/gm)?.length, 2, check.text);

  const samples = Object.keys(SAMPLE_SETTINGS).sort();
  const linux = "portferry-x86_64-unknown-linux-gnu";
  const tar = await tool("tar", ["-tvzf", `${linux}.tar.gz`], dist, "tar");
  assert.equal(tar.code, 0, tar.text);
  const listed = tar.text.trim().split("\n");
  assert.deepEqual(
    listed.map((l) => l.split(/\s+/).pop()).sort(),
    [
      `${linux}/README.md`,
      `${linux}/portferry-console`,
      `${linux}/portferry-daemon`,
      ...samples.map((s) => `${linux}/${s}`),
    ].sort(),
  );
  assert.ok(listed.filter((l) => l.startsWith("-rwxr-xr-x")).length === 2, tar.text);
  const extracted = await tool("tar", ["-xzf", `${linux}.tar.gz`], dist, "tar");
  assert.equal(extracted.code, 0, extracted.text);
  assert.equal(
    await Deno.readTextFile(`${dist}/${linux}/portferry-daemon`),
    `fake daemon x86_64-unknown-linux-gnu\n`,
  );

  const win = "portferry-x86_64-pc-windows-msvc";
  const zip = await tool("python3", ["-m", "zipfile", "-t", `${win}.zip`], dist, "python3");
  assert.equal(zip.code, 0, zip.text); // CRCs checked
  const names = await tool("python3", ["-m", "zipfile", "-l", `${win}.zip`], dist, "python3");
  for (const name of ["portferry-console.exe", "portferry-daemon.exe", "README.md", ...samples]) {
    assert.ok(names.text.includes(`${win}/${name}`), names.text);
  }
  // A changed archive fails the check.
  await Deno.writeTextFile(`${dist}/${win}.zip`, "tampered");
  assert.notEqual((await tool("sha256sum", ["-c", "SHA256SUMS"], dist, "coreutils")).code, 0);
});
