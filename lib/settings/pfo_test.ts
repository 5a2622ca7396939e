import assert from "node:assert/strict";
import { ConfigError } from "../core/errors.ts";
import {
  formatAddress,
  formatHostPort,
  isValidHost,
  type ListenAddress,
  parseHostPort,
  type ParseHostPortOptions,
  parseListen,
  parseTarget,
  type TargetAddress,
} from "../net/hostport.ts";
import { type PfoSpec, resolvePfo, targetPortFor, validatePfoName } from "./pfo.ts";

function addr(host: string, port: number, portEnd = port): ListenAddress & TargetAddress {
  return { host, port, portEnd };
}

const LISTEN_VALID: [string, ListenAddress][] = [
  ["8080", addr("127.0.0.1", 8080)],
  ["0", addr("127.0.0.1", 0)],
  ["1", addr("127.0.0.1", 1)],
  ["65535", addr("127.0.0.1", 65535)],
  ["8080-8081", addr("127.0.0.1", 8080, 8081)],
  ["8080-8080", addr("127.0.0.1", 8080)],
  ["1-65535", addr("127.0.0.1", 1, 65535)],
  ["0.0.0.0:80", addr("0.0.0.0", 80)],
  ["127.0.0.1:0", addr("127.0.0.1", 0)],
  ["192.168.1.10:3000-3009", addr("192.168.1.10", 3000, 3009)],
  ["localhost:8080", addr("localhost", 8080)],
  ["my-host.example.com:22", addr("my-host.example.com", 22)],
  ["[::1]:8080", addr("::1", 8080)],
  ["[::]:8080-8090", addr("::", 8080, 8090)],
  ["[fe80::1:2:3]:443", addr("fe80::1:2:3", 443)],
  ["[2001:db8:0:0:0:0:0:1]:53", addr("2001:db8:0:0:0:0:0:1", 53)],
  ["[::ffff:10.0.0.1]:80", addr("::ffff:10.0.0.1", 80)],
];

const LISTEN_INVALID: [string, string][] = [
  ["", "expected [HOST:]PORT or [HOST:]PORT-PORT"],
  ["abc", `Cannot parse listen address "abc": expected [HOST:]PORT or [HOST:]PORT-PORT`],
  ["65536", "port 65536 is above 65535"],
  ["99999999", "above 65535"],
  ["-1", "expected"],
  ["+80", "expected"],
  [" 80", "expected"],
  ["80 ", "expected"],
  ["0x50", "expected"],
  ["80.0", "expected"],
  ["1e3", "expected"],
  ["080", `port "080" has a leading zero; write 80`],
  ["0-10", "port 0 cannot be part of a range"],
  ["10-0", "port 0 cannot be part of a range"],
  ["8081-8080", "ends before it starts; write it as 8080-8081"],
  ["8080-", "expected"],
  ["-8080", "expected"],
  ["8080-8081-8082", "expected"],
  ["host:", "expected"],
  [":80", `"" is not a host name or IP address`],
  ["::1:80", "write an IPv6 address in brackets"],
  ["[::1]", "expected"],
  ["[::1]80", "expected"],
  ["[::1:80", `missing "]"`],
  ["[zz::1]:80", `"zz::1" is not an IPv6 address`],
  ["[1.2.3.4]:80", "is not an IPv6 address"],
  ["[1:2:3:4:5:6:7:8:9]:80", "is not an IPv6 address"],
  ["[1::2::3]:80", "is not an IPv6 address"],
  ["300.1.1.1:80", "is not a host name or IP address"],
  ["1.2.3:80", "is not a host name or IP address"],
  ["-bad.host:80", "is not a host name or IP address"],
  ["bad-.host:80", "is not a host name or IP address"],
  ["under_score:80", "is not a host name or IP address"],
  ["a..b:80", "is not a host name or IP address"],
  [`${"a".repeat(64)}:80`, "is not a host name or IP address"],
  ["host:80:90", "brackets"],
];

Deno.test("parseListen() parses every listen form", () => {
  for (const [text, want] of LISTEN_VALID) {
    assert.deepEqual({ ...parseListen(text) }, want, text);
  }
});

Deno.test("parseListen() rejects malformed text with a message naming it", () => {
  for (const [text, want] of LISTEN_INVALID) {
    assert.throws(
      () => parseListen(text),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `${text}: ${err}`);
        assert.ok(err.message.includes(want), `${JSON.stringify(text)}: ${err.message}`);
        assert.ok(err.message.includes(`"${text}"`), `${JSON.stringify(text)}: ${err.message}`);
        return true;
      },
    );
  }
});

Deno.test("parseListen() rejects a value that is not a string", () => {
  assert.throws(() => parseListen(8080 as unknown as string), TypeError);
});

const TARGET_VALID: [string, TargetAddress][] = [
  ["localhost:80", addr("localhost", 80)],
  ["db01:5432", addr("db01", 5432)],
  ["10.0.0.5:1", addr("10.0.0.5", 1)],
  ["10.0.0.5:65535", addr("10.0.0.5", 65535)],
  ["web.internal:8000-8009", addr("web.internal", 8000, 8009)],
  ["[::1]:22", addr("::1", 22)],
  ["[2001:db8::1]:443-444", addr("2001:db8::1", 443, 444)],
  ["xn--bcher-kva.example:80", addr("xn--bcher-kva.example", 80)],
  ["a:1", addr("a", 1)],
  ["1host:80", addr("1host", 80)],
];

const TARGET_INVALID: [string, string][] = [
  ["80", `the host is missing; expected HOST:PORT or HOST:PORT-PORT, e.g. "localhost:80"`],
  ["80-90", "the host is missing"],
  ["host", `the port is missing; expected HOST:PORT or HOST:PORT-PORT, e.g. "host:PORT"`],
  ["db01", "the port is missing"],
  ["host:0", "port 0 is not allowed here"],
  ["host:0-5", "port 0 cannot be part of a range"],
  ["host:65536", "above 65535"],
  ["host:", "expected HOST:PORT"],
  ["host:http", "expected HOST:PORT"],
  ["[::1]", "expected HOST:PORT"],
  ["::1:22", "brackets"],
  ["ho st:80", "is not a host name"],
  ["host:90-80", "ends before it starts"],
  ["", "the host is missing"],
  ["1.2.3.4.5:80", "is not a host name"],
  ["256.0.0.1:80", "is not a host name"],
];

Deno.test("parseTarget() parses every target form", () => {
  for (const [text, want] of TARGET_VALID) {
    assert.deepEqual({ ...parseTarget(text) }, want, text);
  }
});

Deno.test("parseTarget() rejects malformed text with a message naming it", () => {
  for (const [text, want] of TARGET_INVALID) {
    assert.throws(
      () => parseTarget(text),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `${text}: ${err}`);
        assert.ok(err.message.includes(want), `${JSON.stringify(text)}: ${err.message}`);
        assert.ok(err.message.includes(`"${text}"`), `${JSON.stringify(text)}: ${err.message}`);
        return true;
      },
    );
  }
});

const HOSTPORT_VALID: [string, ParseHostPortOptions, string, number][] = [
  ["console.example.com", {}, "console.example.com", 7470],
  ["console.example.com:9000", {}, "console.example.com", 9000],
  ["10.1.1.1", {}, "10.1.1.1", 7470],
  ["[::1]", {}, "::1", 7470],
  ["[::1]:7000", {}, "::1", 7000],
  ["7470", { defaultHost: "0.0.0.0" }, "0.0.0.0", 7470],
  ["127.0.0.1:0", { defaultHost: "0.0.0.0", allowPortZero: true }, "127.0.0.1", 0],
  ["0", { defaultHost: "0.0.0.0", allowPortZero: true }, "0.0.0.0", 0],
  ["host", { defaultPort: 1234 }, "host", 1234],
  ["host:5", { defaultPort: null }, "host", 5],
];

const HOSTPORT_INVALID: [string, ParseHostPortOptions, string][] = [
  ["7470", {}, "the host is missing; expected HOST[:PORT]"],
  ["host:", {}, "expected HOST[:PORT]"],
  ["host:0", {}, "port 0 is not allowed here"],
  ["host:70000", {}, "above 65535"],
  ["host:x", {}, "expected HOST[:PORT]"],
  ["host", { defaultPort: null }, "the port is missing; expected HOST:PORT"],
  ["no way", {}, "expected HOST[:PORT]"],
  ["::1", {}, "brackets"],
  ["", {}, "expected HOST[:PORT]"],
  ["0", { defaultHost: "0.0.0.0" }, "port 0 is not allowed here"],
];

Deno.test("parseHostPort() parses HOST[:PORT] and [HOST:]PORT", () => {
  for (const [text, options, host, port] of HOSTPORT_VALID) {
    assert.deepEqual({ ...parseHostPort(text, options) }, { host, port }, text);
  }
});

Deno.test("parseHostPort() rejects malformed text with a message naming it", () => {
  for (const [text, options, want] of HOSTPORT_INVALID) {
    assert.throws(
      () => parseHostPort(text, options),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `${text}: ${err}`);
        assert.ok(err.message.includes(want), `${JSON.stringify(text)}: ${err.message}`);
        assert.ok(err.message.includes(`"${text}"`), `${JSON.stringify(text)}: ${err.message}`);
        return true;
      },
    );
  }
});

Deno.test("formatHostPort() brackets IPv6 addresses only", () => {
  assert.equal(formatHostPort("::1", 80), "[::1]:80");
  assert.equal(formatHostPort("10.0.0.1", 80), "10.0.0.1:80");
  assert.equal(formatHostPort("db", "1-2"), "db:1-2");
});

Deno.test("formatAddress() round-trips through parseListen() and parseTarget()", () => {
  for (const [text] of LISTEN_VALID) {
    const parsed = parseListen(text);
    assert.deepEqual(parseListen(formatAddress(parsed)), parsed, text);
  }
  for (const [text] of TARGET_VALID) {
    assert.equal(formatAddress(parseTarget(text)), text);
  }
});

Deno.test("isValidHost() accepts names and addresses and rejects the rest", () => {
  for (
    const host of ["a", "a-b.c", "1.2.3.4", "::", "::1", "1::", "1:2:3:4:5:6:7:8", "::1.2.3.4"]
  ) {
    assert.ok(isValidHost(host), host);
  }
  for (const host of ["", "-a", "a_b", "1.2.3", "1:2:3:4:5:6:7:8:9", ":::", "a b", "1.2.3.4."]) {
    assert.ok(!isValidHost(host), host);
  }
});

Deno.test("validatePfoName() accepts 1-64 safe characters and rejects the rest", () => {
  for (const name of ["a", "web", "web-1", "db_primary.eu", "A.B-C_d", "x".repeat(64)]) {
    assert.equal(validatePfoName(name), name);
  }
  const invalid: [string, string][] = [
    ["", "give the PFO a name"],
    ["x".repeat(65), "use at most 64"],
    ["my web", `"my web": use only letters`],
    ["web/1", "use only letters"],
    ["wéb", "use only letters"],
    ["a\nb", "use only letters"],
  ];
  for (const [name, want] of invalid) {
    assert.throws(() => validatePfoName(name), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.ok(err.message.includes(want), err.message);
      return true;
    });
  }
});

function spec(over: Partial<PfoSpec>): PfoSpec {
  return { name: "p", proto: "tcp", listen: "8080", target: "h:80", enabled: true, ...over };
}

Deno.test("resolvePfo() accepts valid PFOs and parses their addresses", () => {
  const rows: [Partial<PfoSpec>, ListenAddress, TargetAddress | null][] = [
    [{}, addr("127.0.0.1", 8080), addr("h", 80)],
    [
      { proto: "udp", listen: "0.0.0.0:53", target: "dns:53" },
      addr("0.0.0.0", 53),
      addr("dns", 53),
    ],
    [
      { listen: "8000-8009", target: "h:9000-9009" },
      addr("127.0.0.1", 8000, 8009),
      addr("h", 9000, 9009),
    ],
    [{ listen: "8000-8009", target: "h:80" }, addr("127.0.0.1", 8000, 8009), addr("h", 80)],
    [{ proto: "socks", listen: "1080", target: null }, addr("127.0.0.1", 1080), null],
    [{ enabled: false, listen: "0" }, addr("127.0.0.1", 0), addr("h", 80)],
  ];
  for (const [over, listenAddr, targetAddr] of rows) {
    const pfo = resolvePfo(spec(over));
    assert.deepEqual({ ...pfo.listenAddr }, listenAddr);
    assert.deepEqual(pfo.targetAddr === null ? null : { ...pfo.targetAddr }, targetAddr);
    assert.ok(Object.isFrozen(pfo));
  }
});

Deno.test("resolvePfo() rejects invalid PFOs naming the PFO and the field", () => {
  const rows: [Partial<PfoSpec>, string][] = [
    [{ name: "bad name" }, `Cannot use PFO name "bad name"`],
    [
      { proto: "sctp" as never },
      `Cannot use PFO "p": protocol "sctp" is unknown; use tcp, udp, socks`,
    ],
    [{ listen: "abc" }, `Cannot use PFO "p": Cannot parse listen address "abc"`],
    [{ target: "80" }, `Cannot use PFO "p": Cannot parse target "80": the host is missing`],
    [{ target: null }, `Cannot use PFO "p": a tcp PFO needs a target`],
    [{ proto: "udp", target: null }, "a udp PFO needs a target"],
    [{ proto: "socks", target: "h:1" }, "a socks PFO takes no target"],
    [{ proto: "socks", target: null, listen: "1-2" }, "a socks PFO listens on one port"],
    [
      { listen: "8000-8002", target: "h:80-81" },
      `target "h:80-81" has 2 ports but listen "8000-8002" has 3; use a target range of 3 ports or a single target port`,
    ],
    [{ listen: "8000", target: "h:80-81" }, "has 2 ports but listen"],
  ];
  for (const [over, want] of rows) {
    assert.throws(() => resolvePfo(spec(over)), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(err.message.includes(want), err.message);
      return true;
    });
  }
  assert.throws(() => resolvePfo(spec({ enabled: "yes" as never })), TypeError);
});

Deno.test("resolvePfo() does not change its input", () => {
  const input = Object.freeze(spec({ listen: "8000-8001", target: "h:1-2" }));
  const copy = { ...input };
  resolvePfo(input);
  assert.deepEqual({ ...input }, copy);
});

Deno.test("targetPortFor() maps ranges in order and single targets to one port", () => {
  const ranged = resolvePfo(spec({ listen: "8000-8009", target: "h:9000-9009" }));
  assert.equal(targetPortFor(ranged, 8000), 9000);
  assert.equal(targetPortFor(ranged, 8005), 9005);
  assert.equal(targetPortFor(ranged, 8009), 9009);
  const single = resolvePfo(spec({ listen: "8000-8009", target: "h:80" }));
  assert.equal(targetPortFor(single, 8000), 80);
  assert.equal(targetPortFor(single, 8009), 80);
  assert.throws(() => targetPortFor(ranged, 7999), RangeError);
  assert.throws(() => targetPortFor(ranged, 8010), RangeError);
  assert.throws(() => targetPortFor(ranged, 8000.5), RangeError);
  const socks = resolvePfo(spec({ proto: "socks", listen: "1080", target: null }));
  assert.throws(() => targetPortFor(socks, 1080), TypeError);
});
