/**
 * End-to-end tests of the WebSocket transport on loopback: a Daemon given
 * `ws://` reaches the Console's session port straight (no web server), the
 * session comes up, a PFO carries data, and the pin still holds.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  echoRoundTrip,
  echoServer,
  Output,
  runCli,
  startConsole,
  startDaemon,
  taskFlags,
  tempDir,
  within,
} from "./_harness.ts";

function wsAddress(address: string, path = "/portferry"): string {
  return `ws://${address}${path}`;
}

Deno.test("a Daemon given ws:// reaches the Console's session port; the session comes up and a PFO carries data", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using daemon = await startDaemon({
    address: wsAddress(con.address),
    fingerprint: con.fingerprint,
  });
  await daemon.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established/);
  const status = JSON.parse((await con.cli("status", "--json")).stdout);
  assert.match(status.session.peer.address, /\(WebSocket\)$/, "the operator sees the transport");
  using echo = echoServer();
  const listen = await addPfo(con, "echo", `127.0.0.1:${echo.port}`);
  const text = "over a WebSocket ".repeat(4000);
  assert.equal(await echoRoundTrip(listen, text), text);
  const daemonStatus = JSON.parse((await daemon.cli("status", "--json")).stdout);
  assert.equal(daemonStatus.console, wsAddress(con.address));
});

Deno.test("a Daemon given ws:// with a wrong fingerprint is refused with a fingerprint mismatch", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const dir = await tempDir("pf-other-");
  const other = await runCli("console.ts", ["fingerprint", "--config", `${dir}/c.yaml`]);
  const wrong = other.stdout.trim();
  assert.notEqual(wrong, con.fingerprint);
  await using daemon = await startDaemon(
    { address: wsAddress(con.address), fingerprint: wrong },
    { args: ["--no-reconnect"] },
  );
  const status = await within(daemon.status, 20_000, "the Daemon to exit");
  assert.equal(status.code, 1);
  assert.match(daemon.out.text(), /fingerprint mismatch/);
  assert.doesNotMatch(daemon.out.text(), /Session established/);
  assert.doesNotMatch(con.out.text(), /Session established/);
});

Deno.test("a Daemon given a ws:// path the Console does not serve fails with the server's 404", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  await using daemon = await startDaemon(
    { address: wsAddress(con.address, "/elsewhere"), fingerprint: con.fingerprint },
    { args: ["--no-reconnect"] },
  );
  const status = await within(daemon.status, 20_000, "the Daemon to exit");
  assert.notEqual(status.code, 0);
  assert.match(daemon.out.text(), /answered "404 Not Found"/);
});

Deno.test("a Console with websocketPath: null answers an upgrade with 404", async () => {
  await using con = await startConsole({ settings: "websocketPath: null\n" });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(con.address.split(":").pop()),
  });
  try {
    const request = "GET /portferry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n";
    await conn.write(new TextEncoder().encode(request));
    let got = "";
    const buf = new Uint8Array(1024);
    let n: number | null;
    while ((n = await within(conn.read(buf), 10_000, "the answer")) !== null) {
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.match(got, /^HTTP\/1\.1 404 Not Found\r\n/);
  } finally {
    conn.close();
  }
});

Deno.test("a Daemon whose settings name the Console by a ws:// address needs no address argument", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const dir = await tempDir("pf-daemon-ws-");
  const settingsPath = `${dir}/portferry-daemon.yaml`;
  await Deno.writeTextFile(
    settingsPath,
    `console: "${wsAddress(con.address)}"\nfingerprint: "${con.fingerprint}"\n`,
    { mode: 0o600 },
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...await taskFlags("daemon"),
      "daemon.ts",
      "--config",
      settingsPath,
      "--headless",
    ],
    cwd: new URL("../", import.meta.url),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  try {
    await out.waitFor(/Session established/);
    await con.out.waitFor(/Session established with .* \(WebSocket\)/);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await pumps;
  }
});

Deno.test("the Daemon refuses a ws:// address without a host, and --ca with a ws:// address, as usage errors", async () => {
  const dir = await tempDir("pf-daemon-usage-");
  const fp = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
  const config = ["--config", `${dir}/d.yaml`, "--headless", "--fingerprint", fp];
  const noHost = await runCli("daemon.ts", ["ws:///portferry", ...config]);
  assert.equal(noHost.code, 2, noHost.stderr);
  assert.match(noHost.stderr, /Cannot use Console address "ws:\/\/\/portferry": it names no host/);
  const ca = await runCli("daemon.ts", ["ws://127.0.0.1:1/portferry", "--ca", "ca.pem", ...config]);
  assert.equal(ca.code, 2, ca.stderr);
  assert.match(ca.stderr, /--ca applies to a wss:\/\/ Console address only/);
});

Deno.test("the Daemon reads the wss:// web server's CA from `ca:` in its settings, as it reads --ca", async () => {
  const dir = await tempDir("pf-daemon-ca-");
  const fp = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
  const settings = `${dir}/d.yaml`;
  await Deno.writeTextFile(
    settings,
    `console: "wss://127.0.0.1:1/portferry"\nfingerprint: "${fp}"\nca: missing-ca.pem\n`,
    { mode: 0o600 },
  );
  const missing = await runCli("daemon.ts", ["--config", settings, "--headless", "--no-reconnect"]);
  assert.equal(missing.code, 2, missing.stderr);
  assert.ok(
    missing.stderr.includes(`"ca" in ${settings}: Cannot read "${dir}/missing-ca.pem"`),
    missing.stderr,
  );
  await Deno.writeTextFile(`${dir}/missing-ca.pem`, "not a certificate\n", { mode: 0o600 });
  const notPem = await runCli("daemon.ts", ["--config", settings, "--headless", "--no-reconnect"]);
  assert.equal(notPem.code, 2, notPem.stderr);
  assert.match(notPem.stderr, /holds no PEM certificate/);
});
