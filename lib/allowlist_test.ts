import assert from "node:assert/strict";
import { AllowList, parseAllowRule, parseIp } from "./allowlist.ts";
import { ConfigError } from "./errors.ts";

Deno.test("parseAllowRule() reads hosts, wildcards, addresses, CIDRs and port ranges", () => {
  const table: [string, string, number, number][] = [
    ["db01", "name", 1, 65535],
    ["db01:5432", "name", 5432, 5432],
    ["DB01.corp.example:1-1024", "name", 1, 1024],
    ["*.corp.example:443", "suffix", 443, 443],
    ["*", "any", 1, 65535],
    ["*:80-90", "any", 80, 90],
    ["10.1.2.3", "ip", 1, 65535],
    ["10.0.0.0/8:22", "ip", 22, 22],
    ["fd00::/8", "ip", 1, 65535],
    ["::1", "ip", 1, 65535],
    ["[fd00::1]:443", "ip", 443, 443],
    ["[fd00::/16]:1-2", "ip", 1, 2],
    ["[::ffff:10.0.0.0/104]", "ip", 1, 65535],
  ];
  for (const [text, kind, lo, hi] of table) {
    const r = parseAllowRule(text);
    assert.deepEqual([r.kind, r.portMin, r.portMax], [kind, lo, hi], text);
  }
});

Deno.test("parseAllowRule() refuses bad rules with a message naming them", () => {
  for (
    const text of [
      "",
      "db01:0",
      "db01:70000",
      "db01:9-3",
      "db01:http",
      "10.0.0.0/33",
      "[fd00::/129]",
      "db_01",
      "host/8",
      "[fd00::1",
      "[fd00::1]x",
      "*.",
    ]
  ) {
    assert.throws(
      () => parseAllowRule(text),
      (e) => e instanceof ConfigError && e.message.includes(`"${text.trim()}"`),
      text,
    );
  }
});

Deno.test("parseIp() reads IPv4 and IPv6 forms", () => {
  assert.equal(parseIp("1.2.3.4")?.bits, 0x01020304n);
  assert.equal(parseIp("::1")?.bits, 1n);
  assert.equal(parseIp("::ffff:1.2.3.4")?.bits, 0xffff01020304n);
  assert.equal(parseIp("fe80::1:2")?.family, 6);
  for (const bad of ["1.2.3", "256.1.1.1", "1::2::3", "db01", "1:2:3:4:5:6:7:8:9"]) {
    assert.equal(parseIp(bad), null, bad);
  }
});

Deno.test("AllowList.check() allows by name, address, CIDR and port, and resolves only for address rules", async () => {
  const list = AllowList.parse([
    "db01:5432",
    "*.corp.example:443",
    "10.0.0.0/8:1-1024",
    "[fd00::/8]",
  ]);
  const resolved: string[] = [];
  const resolve = (host: string) => {
    resolved.push(host);
    return Promise.resolve(host === "web" ? ["192.168.0.9", "10.1.1.1"] : ["192.168.0.9"]);
  };
  const cases: [string, number, string | false][] = [
    ["db01", 5432, "db01"],
    ["DB01", 5432, "DB01"],
    ["db01", 22, false],
    ["app.corp.example", 443, "app.corp.example"],
    ["corp.example", 443, false],
    ["10.9.9.9", 80, "10.9.9.9"],
    ["10.9.9.9", 8080, false],
    ["::ffff:10.0.0.1", 80, "::ffff:10.0.0.1"],
    ["fd00::5", 9999, "fd00::5"],
    ["fe80::1", 80, false],
    ["web", 80, "10.1.1.1"],
    ["other", 80, false],
  ];
  for (const [host, port, expect] of cases) {
    const d = await list.check(host, port, resolve);
    if (expect === false) {
      assert.equal(d.allowed, false, `${host}:${port}`);
      if (!d.allowed) assert.match(d.reason, /not allowed by the Daemon/);
    } else {
      assert.deepEqual(d, { allowed: true, connectHost: expect }, `${host}:${port}`);
    }
  }
  // Names no name rule allows are resolved, because address rules might allow them.
  assert.deepEqual(resolved, ["db01", "corp.example", "web", "other"]);
});

Deno.test("AllowList.check() allows everything when there are no rules", async () => {
  const d = await AllowList.parse([]).check("anything", 1, () => Promise.reject(new Error("no")));
  assert.deepEqual(d, { allowed: true, connectHost: "anything" });
});
