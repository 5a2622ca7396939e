import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

Deno.test("deno task demo --check forwards the sample page through a real session", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "demo", "--check"],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /Demo ready\. Open http:\/\/127\.0\.0\.1:\d+\//);
  assert.match(text, /demo check: OK/);
  assert.match(text, /\[daemon\] .*connection opened/);
});
