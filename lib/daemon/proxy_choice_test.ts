import assert from "node:assert/strict";
import { HandshakeError } from "../core/errors.ts";
import { ConfigError } from "../core/errors.ts";
import { parseProxyUrl } from "../net/proxy.ts";
import { inspectingProxyHint } from "./dialer.ts";
import { chooseProxy, type ProxyChoiceOptions } from "./proxy_choice.ts";

const CONSOLE = { host: "console.example", port: 443 };

function options(over: Partial<ProxyChoiceOptions>, env: Record<string, string> = {}) {
  return {
    settings: { proxy: null, proxyAuthFile: null },
    env: (name: string) => env[name],
    console: CONSOLE,
    ...over,
  };
}

Deno.test("chooseProxy() takes --proxy, then proxy: in the settings, then the environment", async () => {
  const env = { HTTPS_PROXY: "http://env:3128" };
  const fromSettings = parseProxyUrl("http://settings:3128");
  const table: [Partial<ProxyChoiceOptions>, string | null, string | null][] = [
    [
      { flag: "http://flag:3128", settings: { proxy: fromSettings, proxyAuthFile: null } },
      "flag",
      "--proxy",
    ],
    [{ settings: { proxy: fromSettings, proxyAuthFile: null } }, "settings", "settings"],
    [{}, "env", "HTTPS_PROXY"],
    [{ flag: "none" }, null, null],
    [{ settings: { proxy: "none", proxyAuthFile: null } }, null, null],
    [
      { flag: "http://flag:3128", settings: { proxy: "none", proxyAuthFile: null } },
      "flag",
      "--proxy",
    ],
  ];
  for (const [over, host, source] of table) {
    const choice = await chooseProxy(options(over, env));
    assert.equal(choice.proxy?.host ?? null, host, JSON.stringify(over));
    assert.equal(choice.source, source, JSON.stringify(over));
  }
  assert.equal((await chooseProxy(options({}))).proxy, null, "no proxy anywhere: direct");
});

Deno.test("chooseProxy() takes credentials from the auth file, and refuses an unsafe one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "portferry-proxy-choice-" });
  try {
    const file = `${dir}/auth`;
    await Deno.writeTextFile(file, "bob:p@ss:word\n", { mode: 0o600 });
    await Deno.chmod(file, 0o600);
    const choice = await chooseProxy(
      options({ flag: "http://ann:old@proxy:3128", authFile: file }),
    );
    assert.deepEqual(choice.proxy, {
      host: "proxy",
      port: 3128,
      username: "bob",
      password: "p@ss:word",
    });
    const viaSettings = await chooseProxy(
      options({ settings: { proxy: parseProxyUrl("proxy:3128"), proxyAuthFile: file } }),
    );
    assert.equal(viaSettings.proxy?.username, "bob");
    await Deno.writeTextFile(`${dir}/bad`, "no colon here\n", { mode: 0o600 });
    await assert.rejects(
      chooseProxy(options({ flag: "proxy:3128", authFile: `${dir}/bad` })),
      (err: Error) => err instanceof ConfigError && /expected one line USER:PASS/.test(err.message),
    );
    if (Deno.build.os !== "windows") {
      await Deno.chmod(file, 0o666);
      await assert.rejects(
        chooseProxy(options({ flag: "proxy:3128", authFile: file })),
        (err: Error) =>
          /writable by group\/others/.test(err.message) && !err.message.includes("p@ss"),
      );
    }
    assert.equal((await chooseProxy(options({ flag: "none", authFile: file }))).proxy, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chooseProxy() refuses a bad --proxy with a message without the password", async () => {
  await assert.rejects(
    chooseProxy(options({ flag: "ftp://ann:hunter2@proxy:21" })),
    (err: Error) => err instanceof TypeError && !err.message.includes("hunter2"),
  );
});

Deno.test("inspectingProxyHint() adds the TLS-inspection hint to a fingerprint mismatch through a proxy only", () => {
  const proxy = parseProxyUrl("http://ann:hunter2@proxy:3128");
  const mismatch = new HandshakeError(
    "fingerprint",
    'Cannot trust Console at "c:443": fingerprint mismatch',
  );
  const hinted = inspectingProxyHint(mismatch, proxy) as HandshakeError;
  assert.equal(hinted.code, "fingerprint");
  assert.match(
    hinted.message,
    /a proxy on the way \(http:\/\/ann:\*\*\*@proxy:3128\) may be inspecting TLS/,
  );
  assert.ok(!hinted.message.includes("hunter2"));
  assert.equal(inspectingProxyHint(mismatch, null), mismatch);
  const other = new HandshakeError("tls", "Cannot connect");
  assert.equal(inspectingProxyHint(other, proxy), other);
});
