import assert from "node:assert/strict";
import { ConfigError } from "../core/errors.ts";
import { isValidHost, parseHostPort, parseListen } from "./hostport.ts";

/** Each host, and whether isValidHost() takes it. */
const HOSTS: [string, boolean][] = [
  ["db01", true],
  ["db01.corp.example", true],
  ["a-b.c", true],
  ["-a.b", false],
  ["a_b", false],
  ["", false],
  ["1.2.3", false],
  ["10.0.0.1", true],
  ["255.255.255.255", true],
  ["256.0.0.1", false],
  ["010.0.0.1", false],
  ["1.2.3.4.5", false],
  ["::", true],
  ["::1", true],
  ["1:2:3:4:5:6:7:8", true],
  ["1::2:3:4:5:6:7:8", false],
  ["1:2:3:4:5:6:7", false],
  ["::ffff:10.0.0.1", true],
  ["::ffff:10.0.0.010", false],
  ["1::2::3", false],
  ["fe80::1%eth0", false],
  ["12345::", false],
];

Deno.test("isValidHost() takes names, canonical IPv4 and IPv6 without a zone, and nothing else", () => {
  for (const [host, valid] of HOSTS) assert.equal(isValidHost(host), valid, JSON.stringify(host));
});

/** Asserts that `fn` throws a ConfigError whose message matches `pattern`. */
function throwsConfig(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err) => err instanceof ConfigError && pattern.test(err.message));
}

Deno.test("parseListen() and parseHostPort() take IPv6 only in brackets and without a zone", () => {
  assert.deepEqual(parseListen("[::ffff:10.0.0.1]:80"), {
    host: "::ffff:10.0.0.1",
    port: 80,
    portEnd: 80,
  });
  assert.deepEqual(parseHostPort("[::1]:22"), { host: "::1", port: 22 });
  throwsConfig(() => parseListen("[fe80::1%eth0]:80"), /is not an IPv6 address/);
  throwsConfig(() => parseListen("[10.0.0.1]:80"), /is not an IPv6 address/);
  throwsConfig(() => parseHostPort("::1:22"), /in brackets/);
  throwsConfig(() => parseHostPort("300.1.1.1:22"), /not a host name or IP address/);
});
