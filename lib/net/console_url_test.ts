import assert from "node:assert/strict";
import { isWebSocketUrl, parseWebSocketUrl } from "./console_url.ts";

Deno.test("parseWebSocketUrl() reads ws:// and wss:// with default ports, IPv6 and paths", () => {
  const cases: [string, boolean, string, number, string, string][] = [
    [
      "ws://console.example/portferry",
      false,
      "console.example",
      80,
      "/portferry",
      "console.example",
    ],
    [
      "wss://console.example/portferry",
      true,
      "console.example",
      443,
      "/portferry",
      "console.example",
    ],
    [
      "WSS://Console.Example:8443/a/b?x=1",
      true,
      "console.example",
      8443,
      "/a/b?x=1",
      "console.example:8443",
    ],
    ["ws://127.0.0.1:7470/portferry", false, "127.0.0.1", 7470, "/portferry", "127.0.0.1:7470"],
    ["ws://[::1]:8080/pf", false, "::1", 8080, "/pf", "[::1]:8080"],
    ["ws://[::1]/pf", false, "::1", 80, "/pf", "[::1]"],
    ["ws://host", false, "host", 80, "/", "host"],
  ];
  for (const [text, secure, host, port, path, hostHeader] of cases) {
    const u = parseWebSocketUrl(text);
    assert.deepEqual(
      { secure: u.secure, host: u.host, port: u.port, path: u.path, hostHeader: u.hostHeader },
      { secure, host, port, path, hostHeader },
      text,
    );
    assert.ok(isWebSocketUrl(text));
  }
});

Deno.test("parseWebSocketUrl() refuses other schemes, credentials, fragments and bad hosts, naming the form", () => {
  for (
    const bad of [
      "http://x/pf",
      "ws://user:pw@x/pf",
      "ws://x/pf#frag",
      "ws:///pf",
      "ws://x:99999/pf",
      "ws://a b/pf",
    ]
  ) {
    assert.throws(() => parseWebSocketUrl(bad), (err: Error) => {
      assert.ok(err instanceof TypeError, bad);
      assert.match(err.message, /^Cannot use Console address /);
      assert.match(err.message, /ws:\/\/HOST\[:PORT\]\/PATH or wss:\/\/HOST\[:PORT\]\/PATH/);
      return true;
    });
  }
  assert.ok(!isWebSocketUrl("office:7470"));
});
