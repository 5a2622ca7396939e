import assert from "node:assert/strict";
import { callControl, type ControlFile, serveControl } from "./control.ts";
import { createLogger } from "../core/log.ts";

const log = createLogger({ level: "error" });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A control server with one `status` command, and its control file. */
async function control() {
  const dir = await Deno.makeTempDir({ prefix: "pf-control-" });
  const path = `${dir}/test.control.json`;
  let runs = 0;
  const server = await serveControl({
    path,
    log,
    handlers: { status: () => ({ runs: ++runs }) },
  });
  const file = JSON.parse(await Deno.readTextFile(path)) as ControlFile;
  return {
    path,
    file,
    get runs() {
      return runs;
    },
    async [Symbol.asyncDispose]() {
      await server.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** One raw HTTP/1.1 request with exactly `headers`; the status and the body's error. */
async function raw(
  port: number,
  headers: Record<string, string>,
): Promise<{ status: number; error?: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    await conn.write(
      encoder.encode(
        `POST /status HTTP/1.1\r\n${lines}content-type: application/json\r\n` +
          `content-length: 2\r\nconnection: close\r\n\r\n{}`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(4096);
    for (let i = 0; i < 100; i++) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n));
    }
    const status = Number(text.match(/^HTTP\/1\.1 (\d+)/)?.[1]);
    const body = text.slice(text.indexOf("\r\n\r\n") + 4);
    return { status, error: body.startsWith("{") ? JSON.parse(body).error : undefined };
  } finally {
    conn.close();
  }
}

Deno.test("serveControl() refuses a Host header other than its own 127.0.0.1:PORT or localhost:PORT (DNS rebinding)", async () => {
  await using c = await control();
  const { port, secret } = c.file;
  const auth = `Bearer ${secret}`;
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`]) {
    assert.equal((await raw(port, { host, authorization: auth })).status, 200, host);
  }
  assert.equal(c.runs, 3);
  for (
    const host of [
      `evil.example:${port}`,
      "evil.example",
      "127.0.0.1",
      "localhost",
      `127.0.0.1:${port + 1}`,
      `[::1]:${port}`,
      `127.0.0.1.evil.example:${port}`,
    ]
  ) {
    const got = await raw(port, { host, authorization: auth });
    assert.equal(got.status, 421, host);
    assert.equal(
      got.error,
      `Cannot run command: Host "${host}" is not this control server (send Host "127.0.0.1:${port}" or "localhost:${port}")`,
    );
  }
  assert.equal(c.runs, 3, "a refused request ran its command");
});

Deno.test("serveControl() refuses a request carrying an Origin other than its own; none, or its own, is fine", async () => {
  await using c = await control();
  const { port, secret } = c.file;
  const headers = { host: `127.0.0.1:${port}`, authorization: `Bearer ${secret}` };
  for (
    const origin of [
      "http://evil.example",
      `http://evil.example:${port}`,
      "null",
      `http://127.0.0.1:${port + 1}`,
      `https://127.0.0.1:${port}`,
      "http://127.0.0.1",
      "",
    ]
  ) {
    const got = await raw(port, { ...headers, origin });
    assert.equal(got.status, 403, `Origin ${origin}`);
    assert.match(
      got.error!,
      /^Cannot run command: requests from web pages are refused \(Origin ".*"\); use the command line$/,
    );
  }
  assert.equal(c.runs, 0, "a refused request ran its command");
  for (const origin of [`http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
    assert.equal((await raw(port, { ...headers, origin })).status, 200, origin);
  }
  assert.equal((await raw(port, headers)).status, 200, "no Origin");
  // fetch() as a browser page would send it, and as the CLI does (no Origin).
  const res = await fetch(`http://127.0.0.1:${port}/status`, {
    method: "POST",
    headers: { authorization: `Bearer ${secret}`, origin: "http://evil.example" },
    body: "{}",
  });
  assert.equal(res.status, 403);
  await res.body?.cancel();
  assert.deepEqual(await callControl(c.path, "status", {}, "Console"), { runs: 4 });
});
