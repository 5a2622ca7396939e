/**
 * End-to-end tests of the Daemon dialing through an HTTP proxy (`CONNECT`):
 * the real `console.ts` and `daemon.ts`, with a small loopback proxy of our
 * own (tests/_hostile.ts) that tunnels, asks for credentials, refuses, or
 * answers in something other than HTTP.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  addPfo,
  type DaemonProc,
  echoRoundTrip,
  echoServer,
  hostPort,
  type Proc,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  statusOf,
  tempDir,
  within,
} from "./_harness.ts";
import { testProxy } from "./_hostile.ts";
import { PROXY_CREDENTIALS_MESSAGE } from "../lib/net/proxy.ts";

const PASSWORD = "pa55-w0rd-xyzzy";

/** Waits for a process to exit (bounded) and returns its exit code. */
async function exitCode(proc: Proc, what: string, ms = 20_000): Promise<number> {
  try {
    return (await within(proc.status, ms, `${what} to exit`)).code;
  } catch (err) {
    throw new Error(`${(err as Error).message}; output:\n${proc.out.lines.slice(-30).join("\n")}`);
  }
}

function assertNoPassword(proc: Proc): void {
  const leaked = proc.out.lines.filter((line) => line.includes(PASSWORD));
  assert.deepEqual(leaked, [], "the proxy password reached the Daemon's output");
}

/** A Daemon that dials once (`--no-reconnect`) through `args` and exits; its output. */
async function failingDaemon(
  target: { address: string; fingerprint: string },
  args: string[],
  options: { env?: Record<string, string>; settings?: string; fingerprint?: string } = {},
): Promise<DaemonProc> {
  const daemon = await startDaemon(target, { ...options, args: ["--no-reconnect", ...args] });
  assert.notEqual(await exitCode(daemon, "the Daemon"), 0);
  return daemon;
}

Deno.test("daemon --proxy: the session runs through the proxy, a PFO carries data, status masks the password", async () => {
  await using proxy = testProxy({ credentials: { username: "ann", password: PASSWORD } });
  const proxyUrl = `http://ann:${PASSWORD}@127.0.0.1:${proxy.port}`;
  await using pair = await startPair({ daemon: { args: ["--proxy", proxyUrl] } });
  assert.deepEqual(proxy.requests.map((r) => r.target), [
    pair.console.address,
    pair.console.address,
  ], "the probe and the session both go through the proxy");
  assert.deepEqual(
    proxy.requests.map((r) => r.firstByte),
    [0x16, 0x16],
    "the proxy sees a TLS handshake open each tunnel: the TLS runs inside it",
  );
  using echo = echoServer();
  const listen = await addPfo(pair.console, "echo", `127.0.0.1:${echo.port}`);
  assert.equal(await echoRoundTrip(listen, "through the tunnel"), "through the tunnel");
  const status = await statusOf(pair.daemon) as unknown as { proxy: string };
  assert.equal(status.proxy, `http://ann:***@127.0.0.1:${proxy.port}`);
  const text = await pair.daemon.cli("status");
  assert.match(
    text.stdout,
    new RegExp(`proxy: http://ann:\\*\\*\\*@127\\.0\\.0\\.1:${proxy.port}`),
  );
  assert.ok(!text.stdout.includes(PASSWORD));
  await pair.daemon.out.waitFor(
    /Connecting to the Console at .* through the proxy http:\/\/ann:\*\*\*@/,
  );
  assertNoPassword(pair.daemon);
});

Deno.test("daemon --proxy: the session comes back through the proxy after the tunnel is cut", async () => {
  await using proxy = testProxy();
  await using pair = await startPair({ daemon: { args: ["--proxy", proxy.url] } });
  const before = proxy.requests.length;
  const from = pair.daemon.out.lines.length;
  proxy.cut();
  await pair.daemon.out.waitFor(/Session established/, { from, ms: 30_000 });
  assert.ok(proxy.requests.length > before, "the new session was dialed through the proxy");
  assert.ok(proxy.requests.every((r) => r.status === 200));
});

Deno.test("daemon --proxy: a proxy that is down at first is retried with back-off until it is up", async () => {
  const port = spareTcpPort();
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  await using daemon = await startDaemon(consoleProc, {
    args: ["--proxy", `http://127.0.0.1:${port}`],
    settings: "backoffMaxMs: 1000\n",
  });
  await daemon.out.waitFor(/Session failed: .*cannot reach the proxy.*; next try in/);
  await using proxy = testProxy({ port });
  await daemon.out.waitFor(/Session established/, { ms: 30_000 });
  assert.ok(proxy.requests.some((r) => r.target === consoleProc.address && r.status === 200));
});

Deno.test("daemon --proxy-auth-file: credentials from an owner-only file", async () => {
  await using proxy = testProxy({ credentials: { username: "ann", password: PASSWORD } });
  const dir = await tempDir("pf-proxy-auth-");
  const file = `${dir}/proxy-auth`;
  await Deno.writeTextFile(file, `ann:${PASSWORD}\n`, { mode: 0o600 });
  await using pair = await startPair({
    daemon: { args: ["--proxy", proxy.url, "--proxy-auth-file", file] },
  });
  assert.equal(proxy.requests.at(-1)?.status, 200);
  assertNoPassword(pair.daemon);
  await Deno.chmod(file, 0o666);
  await using console2 = await startConsole({ args: ["--auto-accept"] });
  const daemon = await failingDaemon(console2, ["--proxy", proxy.url, "--proxy-auth-file", file]);
  await daemon.out.waitFor(/writable by group\/others/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("daemon --proxy: wrong credentials give the 407 message, without the password", async () => {
  await using proxy = testProxy({ credentials: { username: "ann", password: "right" } });
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  const url = `http://ann:${PASSWORD}@127.0.0.1:${proxy.port}`;
  const daemon = await failingDaemon(consoleProc, ["--proxy", url]);
  const [line] = await daemon.out.waitFor(/.*the proxy wants credentials.*/);
  assert.ok(line.includes(PROXY_CREDENTIALS_MESSAGE), line);
  assert.ok(line.includes(`"http://ann:***@127.0.0.1:${proxy.port}"`), line);
  assert.equal(proxy.requests[0].status, 407);
  assertNoPassword(daemon);
});

Deno.test("daemon --proxy: a proxy that refuses the Console's port gives the refusal message", async () => {
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  const port = Number(consoleProc.address.split(":").at(-1));
  await using proxy = testProxy({ refusePorts: [port] });
  const daemon = await failingDaemon(consoleProc, ["--proxy", proxy.url]);
  await daemon.out.waitFor(
    new RegExp(`the proxy refused CONNECT to 127\\.0\\.0\\.1:${port} \\(403 Forbidden\\)`),
  );
});

Deno.test("daemon --proxy: an unreachable proxy, a silent one and one not speaking HTTP each say so", async () => {
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  const gone = spareTcpPort();
  const unreachable = await failingDaemon(consoleProc, ["--proxy", `http://127.0.0.1:${gone}`]);
  await unreachable.out.waitFor(
    new RegExp(`through proxy "http://127\\.0\\.0\\.1:${gone}": cannot reach the proxy`),
  );
  await using ssh = testProxy({ rawReply: "SSH-2.0-OpenSSH_9.6\r\n\u001b[2J" });
  const notHttp = await failingDaemon(consoleProc, ["--proxy", ssh.url]);
  const [line] = await notHttp.out.waitFor(/.*the proxy does not speak HTTP.*/);
  assert.ok(!line.includes("\u001b"), "the proxy's bytes are escaped");
  using silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })().catch(() => {});
  const slow = await failingDaemon(
    consoleProc,
    ["--proxy", `http://127.0.0.1:${silent.addr.port}`],
    {
      settings: "connectTimeoutMs: 1500\n",
    },
  );
  await slow.out.waitFor(/no reply from the proxy within 1500 ms/);
  for (const conn of held) conn.close();
  silent.close();
  await accepting;
});

Deno.test("daemon: HTTPS_PROXY from the environment is used, NO_PROXY and --proxy none bypass it", async () => {
  await using proxy = testProxy();
  // Deno itself reads HTTPS_PROXY too (e.g. for its update check): count only the Daemon's tunnels.
  const tunnels = () => proxy.requests.filter((r) => !r.target.endsWith(":443")).length;
  await using viaEnv = await startPair({
    daemon: { env: { HTTPS_PROXY: proxy.url, DENO_NO_UPDATE_CHECK: "1" } },
  });
  assert.ok(proxy.requests.some((r) => r.target === viaEnv.console.address));
  const seen = tunnels();
  await using exempt = await startPair({
    daemon: { env: { HTTPS_PROXY: proxy.url, NO_PROXY: "localhost,127.0.0.0/8" } },
  });
  await using none = await startPair({
    daemon: { env: { https_proxy: proxy.url }, args: ["--proxy", "none"] },
  });
  assert.equal(tunnels(), seen, "NO_PROXY and --proxy none dial directly");
  assert.ok(exempt.daemon.out.lines.every((l) => !l.includes("through the proxy")));
  assert.ok(none.daemon.out.lines.every((l) => !l.includes("through the proxy")));
});

Deno.test("daemon --proxy: a wrong fingerprint through a proxy says the proxy may be inspecting TLS", async () => {
  await using proxy = testProxy();
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  const other = "SHA256:" + "A".repeat(43);
  const daemon = await failingDaemon(consoleProc, ["--proxy", proxy.url], { fingerprint: other });
  await daemon.out.waitFor(
    /fingerprint mismatch.*a proxy on the way \(http:\/\/127\.0\.0\.1:\d+\) may be inspecting TLS/,
  );
});

Deno.test("daemon --proxy: a bad proxy URL is refused before anything starts, without the password", async () => {
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  const daemon = await failingDaemon(consoleProc, [
    "--proxy",
    `socks5://ann:${PASSWORD}@proxy:1080`,
  ]);
  await daemon.out.waitFor(/only http:\/\/ proxies are supported/);
  assertNoPassword(daemon);
});

/** A CA and a certificate for `localhost` under it, made with openssl; the CA's PEM file. */
async function testCa(dir: string): Promise<{ caFile: string; cert: string; key: string }> {
  const openssl = async (...args: string[]) => {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
        .output();
    } catch (err) {
      throw new Error(`Cannot run openssl (Debian package "openssl"): ${err}`);
    }
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=proxy test CA",
  );
  await openssl(
    "req",
    "-new",
    ...ec,
    "-keyout",
    "web.key",
    "-out",
    "web.csr",
    "-subj",
    "/CN=localhost",
  );
  await Deno.writeTextFile(`${dir}/ext`, "subjectAltName=DNS:localhost\n");
  await openssl(
    "x509",
    "-req",
    "-in",
    "web.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "web.pem",
    "-days",
    "2",
    "-extfile",
    "ext",
  );
  return {
    caFile: `${dir}/ca.pem`,
    cert: await Deno.readTextFile(`${dir}/web.pem`),
    key: await Deno.readTextFile(`${dir}/web.key`),
  };
}

/** A web server's TLS in front of `target`: it terminates TLS and relays the plain bytes on. */
function tlsTerminator(target: string, pem: { cert: string; key: string }) {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...pem });
  const served = (async () => {
    for await (const conn of listener) {
      void (async () => {
        const upstream = await Deno.connect(hostPort(target));
        await Promise.all([
          conn.readable.pipeTo(upstream.writable).catch(() => {}),
          upstream.readable.pipeTo(conn.writable).catch(() => {}),
        ]);
      })().catch(() => {});
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served;
    },
  };
}

Deno.test("daemon --proxy with ws:// and wss://: CONNECT first, then the upgrade, the pinned TLS inside", async () => {
  await using proxy = testProxy({ credentials: { username: "ann", password: PASSWORD } });
  const proxyUrl = `http://ann:${PASSWORD}@127.0.0.1:${proxy.port}`;
  await using consoleProc = await startConsole({ args: ["--auto-accept"] });
  using echo = echoServer();
  const listen = await addPfo(consoleProc, "echo", `127.0.0.1:${echo.port}`);

  const ws = `ws://${consoleProc.address}/portferry`;
  await using viaWs = await startDaemon({ address: ws, fingerprint: consoleProc.fingerprint }, {
    args: ["--proxy", proxyUrl],
  });
  await viaWs.out.waitFor(/Session established/, { ms: 30_000 });
  assert.ok(
    proxy.requests.some((r) =>
      r.target === consoleProc.address && r.firstByte === "G".charCodeAt(0)
    ),
    "the tunnel carries the WebSocket upgrade (GET ...)",
  );
  assert.equal(await echoRoundTrip(listen, "ws through the proxy"), "ws through the proxy");
  assertNoPassword(viaWs);
  await viaWs.stop();

  const dir = await tempDir("pf-proxy-wss-");
  const ca = await testCa(dir);
  await using web = tlsTerminator(consoleProc.address, ca);
  const wss = `wss://localhost:${web.port}/portferry`;
  await using viaWss = await startDaemon({ address: wss, fingerprint: consoleProc.fingerprint }, {
    args: ["--proxy", proxyUrl, "--ca", ca.caFile],
  });
  await viaWss.out.waitFor(/Session established/, { ms: 30_000 });
  assert.ok(
    proxy.requests.some((r) => r.target === `localhost:${web.port}` && r.firstByte === 0x16),
    "the tunnel to the web server opens with its TLS",
  );
  assert.equal(await echoRoundTrip(listen, "wss through the proxy"), "wss through the proxy");
  await Deno.remove(dir, { recursive: true });
});
