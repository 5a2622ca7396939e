/**
 * Run by tests/temp_leftovers_test.ts with TMPDIR pointing at an empty
 * folder: a Console, a CLI call and a harness temp folder, all of which must
 * be gone once this test process ends. Not a `_test.ts` file, so `deno test`
 * runs it only when named.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startConsole, tempDir } from "../_harness.ts";

Deno.test("a Console, a CLI call and a harness temp folder", async () => {
  const dir = await tempDir("probe-");
  await Deno.writeTextFile(`${dir}/note.txt`, "left here on purpose\n");
  await using con = await startConsole();
  const r = await con.cli("status", "--json");
  assert.equal(r.code, 0, r.stderr);
});
