import assert from "node:assert/strict";
import { hasControls } from "../core/text.ts";
import { HandshakeError } from "../core/errors.ts";
import {
  connectRequest,
  connectThroughProxy,
  describeProxy,
  MAX_PROXY_REPLY_BYTES,
  noProxyMatches,
  parseProxyUrl,
  proxyFromEnv,
  ProxyReplyError,
  ProxyReplyParser,
  redactProxyText,
} from "./proxy.ts";

const encoder = new TextEncoder();

Deno.test("ProxyReplyParser.push() reads a reply split at every byte", () => {
  const bytes = encoder.encode("HTTP/1.1 200 Connection established\r\nVia: squid\r\n\r\n");
  const parser = new ProxyReplyParser();
  for (let i = 0; i < bytes.length - 1; i++) {
    assert.equal(parser.push(bytes.subarray(i, i + 1)), null, `complete after ${i + 1} bytes`);
  }
  assert.deepEqual(parser.push(bytes.subarray(bytes.length - 1)), {
    status: 200,
    reason: "Connection established",
    extra: 0,
  });
});

Deno.test("ProxyReplyParser.push() reads statuses, reasons and bytes after the headers", () => {
  const table: [string, number, string, number][] = [
    ["HTTP/1.0 200 OK\r\n\r\n", 200, "OK", 0],
    [
      "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
      407,
      "Proxy Authentication Required",
      0,
    ],
    ["HTTP/1.1 403\r\n\r\n", 403, "", 0],
    ["HTTP/1.1 200 OK\r\n\r\nSSH-2.0", 200, "OK", 7],
  ];
  for (const [text, status, reason, extra] of table) {
    assert.deepEqual(
      new ProxyReplyParser().push(encoder.encode(text)),
      { status, reason, extra },
      text,
    );
  }
});

Deno.test("ProxyReplyParser.push() refuses what is not HTTP, escaping the peer's bytes", () => {
  for (
    const text of [
      "SSH-2.0-OpenSSH\r\n",
      "\u0016\u0003\u0001",
      "HTTP/2 200\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
    ]
  ) {
    assert.throws(
      () => new ProxyReplyParser().push(encoder.encode(text)),
      (err: Error) =>
        err instanceof ProxyReplyError && /does not speak HTTP/.test(err.message) &&
        !hasControls(err.message),
      JSON.stringify(text),
    );
  }
});

Deno.test("ProxyReplyParser.push() refuses headers over the cap, also when they arrive in pieces", () => {
  const parser = new ProxyReplyParser();
  assert.equal(parser.push(encoder.encode("HTTP/1.1 200 OK\r\n")), null);
  const header = encoder.encode(`X-Pad: ${"a".repeat(1000)}\r\n`);
  let thrown: unknown = null;
  for (let i = 0; i < 20 && thrown === null; i++) {
    try {
      parser.push(header);
    } catch (err) {
      thrown = err;
    }
  }
  assert.ok(thrown instanceof ProxyReplyError);
  assert.match(thrown.message, new RegExp(`exceed ${MAX_PROXY_REPLY_BYTES} bytes`));
  const small = new ProxyReplyParser(64);
  assert.throws(
    () => small.push(encoder.encode(`HTTP/1.1 200 ${"x".repeat(70)}\r\n\r\n`)),
    /exceed 64 bytes/,
  );
});

Deno.test("noProxyMatches() matches as curl does (names, dots, *, addresses, CIDR) plus ports", () => {
  const table: [string, string, number, boolean][] = [
    ["*", "anything.example", 443, true],
    ["", "example.com", 443, false],
    ["example.com", "example.com", 443, true],
    ["example.com", "www.example.com", 443, true],
    ["example.com", "badexample.com", 443, false],
    [".example.com", "example.com", 443, true],
    [".example.com", "a.b.example.com", 443, true],
    ["*.example.com", "a.example.com", 443, true],
    ["EXAMPLE.com", "www.Example.COM.", 443, true],
    ["localhost, other", "other", 443, true],
    ["localhost other", "other", 443, true],
    ["10.1.2.3", "10.1.2.3", 443, true],
    ["10.1.2.3", "10.1.2.4", 443, false],
    ["10.0.0.0/8", "10.200.0.1", 443, true],
    ["10.0.0.0/8", "11.0.0.1", 443, false],
    ["192.168.0.0/16", "example.com", 443, false],
    ["::1", "::1", 443, true],
    ["[::1]", "[::1]", 443, true],
    ["fd00::/8", "fd12::5", 443, true],
    ["fd00::/8", "fe80::1", 443, false],
    ["127.0.0.0/8", "::ffff:127.0.0.1", 443, true],
    ["example.com:8443", "example.com", 8443, true],
    ["example.com:8443", "example.com", 443, false],
    ["[::1]:7470", "::1", 7470, true],
    ["10.0.0.1:7470", "10.0.0.1", 443, false],
    ["10.0.0.0/33", "10.0.0.1", 443, false],
  ];
  for (const [list, host, port, expected] of table) {
    assert.equal(noProxyMatches(list, host, port), expected, `${list} ~ ${host}:${port}`);
  }
});

Deno.test("proxyFromEnv() takes https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY in curl's order", () => {
  const table: [Record<string, string>, string | null, string | null][] = [
    [{}, null, null],
    [{ HTTPS_PROXY: "h:1" }, "HTTPS_PROXY", "h"],
    [{ https_proxy: "l:1", HTTPS_PROXY: "u:1" }, "https_proxy", "l"],
    [{ https_proxy: "", HTTPS_PROXY: "u:1" }, "HTTPS_PROXY", "u"],
    [{ ALL_PROXY: "a:1", HTTPS_PROXY: "h:1" }, "HTTPS_PROXY", "h"],
    [{ all_proxy: "a:1", ALL_PROXY: "b:1" }, "all_proxy", "a"],
    [{ ALL_PROXY: "b:1" }, "ALL_PROXY", "b"],
    [{ HTTPS_PROXY: "h:1", NO_PROXY: "console.example" }, null, null],
    [{ HTTPS_PROXY: "h:1", no_proxy: "other", NO_PROXY: "*" }, "HTTPS_PROXY", "h"],
    [{ HTTPS_PROXY: "h:1", no_proxy: "*" }, null, null],
  ];
  for (const [env, source, host] of table) {
    const got = proxyFromEnv((name) => env[name], "console.example", 443);
    assert.equal(got?.source ?? null, source, JSON.stringify(env));
    assert.equal(got?.proxy.host ?? null, host, JSON.stringify(env));
  }
  assert.throws(
    () =>
      proxyFromEnv(
        (name) => (name === "ALL_PROXY" ? "socks5://u:secret@s:1080" : undefined),
        "c",
        443,
      ),
    (err: Error) =>
      /ALL_PROXY; --proxy none ignores it/.test(err.message) && !err.message.includes("secret"),
  );
});

Deno.test("parseProxyUrl() reads the URL forms, curl's defaults and percent-escapes", () => {
  assert.deepEqual(parseProxyUrl("http://proxy.corp:3128"), {
    host: "proxy.corp",
    port: 3128,
    username: null,
    password: null,
  });
  assert.equal(parseProxyUrl("proxy.corp:3128").port, 3128);
  assert.equal(parseProxyUrl("http://proxy.corp").port, 1080);
  assert.equal(parseProxyUrl("http://proxy.corp:80").port, 80);
  assert.equal(parseProxyUrl("http://proxy.corp:3128/").port, 3128);
  assert.equal(parseProxyUrl("http://[fd00::1]:3128").host, "fd00::1");
  const p = parseProxyUrl("http://ann%40corp:p%3Ass@10.0.0.1:8080");
  assert.equal(p.username, "ann@corp");
  assert.equal(p.password, "p:ss");
  assert.equal(parseProxyUrl("http://ann@h:1").password, "");
});

Deno.test("parseProxyUrl() refuses bad URLs with a clear message that never holds the password", () => {
  const table: [string, RegExp][] = [
    ["https://u:topsecret@h:443", /only http:\/\/ proxies are supported, not "https:\/\/"/],
    ["socks5://u:topsecret@h:1080", /only http:\/\/ proxies are supported/],
    ["http://u:topsecret@h:3128/path", /no path, query or fragment/],
    ["http://u:topsecret@h:3128?x=1", /no path, query or fragment/],
    ["http://u:topsecret@:3128", /not a URL|host is not valid/],
    ["http://u:topsecret@h:99999", /not a URL/],
    ["http://u:topsecret@h:0", /port must be 1-65535/],
    ["http://u:top%ZZsecret@h:1", /not a URL|bad %-escape/],
  ];
  for (const [text, why] of table) {
    assert.throws(() => parseProxyUrl(text), (err: Error) => {
      assert.match(err.message, why, text);
      assert.match(err.message, /^Cannot use proxy "/);
      assert.match(err.message, /write http:\/\/\[USER:PASS@\]HOST:PORT$/);
      assert.ok(
        !err.message.includes("topsecret") && !err.message.includes("top%ZZsecret"),
        err.message,
      );
      return true;
    });
  }
});

Deno.test("describeProxy() masks the password and connectRequest() carries Basic credentials", () => {
  const p = parseProxyUrl("http://ann:s3cret@proxy:3128");
  assert.equal(describeProxy(p), "http://ann:***@proxy:3128");
  assert.equal(describeProxy(parseProxyUrl("http://[::1]:3128")), "http://[::1]:3128");
  const request = connectRequest(p, "console.example", 443);
  assert.equal(
    request,
    "CONNECT console.example:443 HTTP/1.1\r\nHost: console.example:443\r\n" +
      `Proxy-Authorization: Basic ${encoder.encode("ann:s3cret").toBase64()}\r\n\r\n`,
  );
  assert.ok(!connectRequest(parseProxyUrl("proxy:3128"), "c", 1).includes("Authorization"));
});

/** A one-shot loopback "proxy" that reads the request head and answers `reply`, `step` bytes per write. */
function scriptedProxy(reply: Uint8Array, step: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let request = "";
  const served = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(1024);
    while (!request.endsWith("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      request += new TextDecoder().decode(buf.subarray(0, n));
    }
    for (let off = 0; off < reply.length; off += step) {
      await conn.write(reply.subarray(off, off + step)).catch(() => {});
    }
    return conn;
  })();
  return {
    proxy: { host: "127.0.0.1", port: listener.addr.port, username: "ann", password: "pw" },
    request: () => request,
    async close() {
      (await served).close();
      listener.close();
    },
  };
}

Deno.test("connectThroughProxy() sends CONNECT with credentials and returns the tunnel after a reply in pieces", async () => {
  const fake = scriptedProxy(encoder.encode("HTTP/1.1 200 Connection established\r\n\r\n"), 3);
  const conn = await connectThroughProxy(fake.proxy, { host: "console.example", port: 443 }, {
    timeoutMs: 10_000,
  });
  conn.close();
  assert.match(fake.request(), /^CONNECT console\.example:443 HTTP\/1\.1\r\n/);
  assert.match(fake.request(), /Proxy-Authorization: Basic YW5uOnB3\r\n/);
  await fake.close();
});

Deno.test("connectThroughProxy() refuses an oversized reply and a reply with bytes after it, naming the proxy", async () => {
  const table: [string, RegExp][] = [
    [`HTTP/1.1 200 OK\r\n${"X-Pad: y\r\n".repeat(2000)}\r\n`, /reply headers exceed 16384 bytes/],
    ["HTTP/1.1 200 OK\r\n\r\nSSH-2.0-x\r\n", /sent data before the tunnel was used/],
    ["HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", /the proxy wants credentials: --proxy/],
    [
      "HTTP/1.1 502 Bad\u001b[2J Gateway\r\n\r\n",
      /refused CONNECT to c:7470 \(502 Bad\\x1b\[2J Gateway\)/,
    ],
  ];
  for (const [reply, why] of table) {
    const fake = scriptedProxy(encoder.encode(reply), 4096);
    await assert.rejects(
      connectThroughProxy(fake.proxy, { host: "c", port: 7470 }, { timeoutMs: 10_000 }),
      (err: Error) => {
        assert.ok(err instanceof HandshakeError && err.code === "proxy", String(err));
        assert.match(err.message, why);
        assert.match(err.message, /through proxy "http:\/\/ann:\*\*\*@127\.0\.0\.1:\d+"/);
        assert.ok(!err.message.includes("pw@"));
        return true;
      },
    );
    await fake.close();
  }
});

Deno.test("parseProxyUrl() shows no part of a password in its errors, whatever breaks the URL", () => {
  const cases = [
    "ann:s3cret@proxy:99999", // no scheme
    "ann:s3cret@bad_host!:1", // no scheme, bad host
    "http://ann:s3/cret@proxy:3128", // a '/' in the password
    "http://ann:s3cret@x@proxy:99999", // an '@' in the password
    "http://an/n:s3cret@proxy:3128", // a '/' in the user name
  ];
  for (const text of cases) {
    assert.throws(() => parseProxyUrl(text), (err: Error) => {
      assert.doesNotMatch(err.message, /s3|cret/, text);
      assert.match(err.message, /\*\*\*/, text);
      return true;
    });
  }
  assert.equal(redactProxyText("http://ann:s3cret@proxy:3128"), "http://ann:***@proxy:3128");
  assert.equal(redactProxyText("proxy.example:3128"), "proxy.example:3128");
});
