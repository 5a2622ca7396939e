import assert from "node:assert/strict";
import { AllowList, parseAllowRule } from "./allowlist.ts";
import { ConfigError } from "../core/errors.ts";

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
      "10.0.0.010",
      "010.0.0.0/8",
      "127.1",
      "[fe80::1%eth0]",
      "[::ffff:010.0.0.1]",
    ]
  ) {
    assert.throws(
      () => parseAllowRule(text),
      (e) => e instanceof ConfigError && e.message.includes(`"${text.trim()}"`),
      text,
    );
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
    ["::ffff:10.0.0.1", 80, "10.0.0.1"],
    ["fd00::5", 9999, "fd00::5"],
    ["FD00:0::5", 9999, "fd00::5"],
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

Deno.test("AllowList.check() refuses non-canonical addresses and connects to the address it checked", async () => {
  const rules = AllowList.parse(["127.0.0.10", "10.0.0.0/8", "[fd00::/8]"]);
  const open = AllowList.parse([]);
  const resolve = () => Promise.reject(new Error("no lookups for addresses"));
  const bad = "unresolvable";
  // host, then the decision without rules and with them: the connect address, "no" or "bad".
  const table: [string, string, string][] = [
    ["127.0.0.10", "127.0.0.10", "127.0.0.10"],
    ["127.0.0.010", bad, bad], // getaddrinfo reads 127.0.0.8
    ["127.0.0.8", "127.0.0.8", "no"],
    ["010.1.2.3", bad, bad], // getaddrinfo reads 8.1.2.3
    ["0177.0.0.1", bad, bad],
    ["127.1", bad, bad],
    ["0x7f.1", bad, bad],
    ["0x7f.0.0.10", bad, bad],
    ["2130706442", bad, bad], // 127.0.0.10 as one integer
    ["::ffff:127.0.0.10", "127.0.0.10", "127.0.0.10"],
    ["::ffff:7f00:a", "127.0.0.10", "127.0.0.10"],
    ["::FFFF:7F00:8", "127.0.0.8", "no"],
    ["::ffff:0a01:0203", "10.1.2.3", "10.1.2.3"],
    ["127.0.0.10.", bad, bad],
    ["FD00::0:5", "fd00::5", "fd00::5"],
    ["fd00::5%eth0", bad, bad],
    ["fe80::1", "fe80::1", "no"],
  ];
  for (const [host, withoutRules, withRules] of table) {
    for (const [list, expect] of [[open, withoutRules], [rules, withRules]] as const) {
      const d = await list.check(host, 80, resolve);
      const label = `${JSON.stringify(host)} ${list.open ? "without" : "with"} rules`;
      if (expect === bad) {
        assert.equal(d.allowed, false, label);
        if (!d.allowed) {
          assert.equal(d.code, "unresolvable", label);
          assert.match(d.reason, /^Cannot reach /, label);
        }
      } else if (expect === "no") {
        assert.equal(d.allowed, false, label);
        if (!d.allowed) assert.equal(d.code, "not-allowed", label);
      } else {
        assert.deepEqual(d, { allowed: true, connectHost: expect }, label);
      }
    }
  }
});

Deno.test("AllowList.check() connects a name allowed through its address to that address, canonical", async () => {
  const list = AllowList.parse(["10.0.0.0/8"]);
  const d = await list.check("web", 80, () => Promise.resolve(["::ffff:10.0.0.7", "fe80::1%eth0"]));
  assert.deepEqual(d, { allowed: true, connectHost: "10.0.0.7" });
});

Deno.test("AllowList.lookup() answers only names the rules allow, with only allowed addresses", async () => {
  const list = AllowList.parse(["db01:5432", "*.corp.example", "10.0.0.0/8"]);
  const dns: Record<string, string[]> = {
    db01: ["192.168.0.5", "10.0.0.5"],
    "app.corp.example": ["192.168.0.6"],
    web: ["192.168.0.9", "::ffff:10.1.1.1"],
    secret: ["192.168.0.7"],
  };
  const asked: string[] = [];
  const resolve = (host: string) => {
    asked.push(host);
    return host in dns ? Promise.resolve(dns[host]) : Promise.reject(new Error("NXDOMAIN"));
  };
  const cases: [string, string[] | null][] = [
    ["db01", ["192.168.0.5", "10.0.0.5"]], // a name rule, whatever its port
    ["app.corp.example", ["192.168.0.6"]],
    ["web", ["10.1.1.1"]], // only the allowed address
    ["secret", null], // exists, but nothing of it is allowed
    ["nowhere", null], // does not exist: refused alike
    ["10.2.3.4", ["10.2.3.4"]],
    ["::ffff:10.2.3.4", ["10.2.3.4"]],
    ["192.168.0.7", null],
    ["010.2.3.4", null],
  ];
  for (const [host, expect] of cases) {
    const got = await list.lookup(host, resolve);
    if (expect === null) {
      assert.equal(got.allowed, false, host);
      if (!got.allowed && host !== "010.2.3.4") {
        assert.match(got.reason, /not allowed by the Daemon/, host);
        assert.doesNotMatch(got.reason.replace(host, "HOST"), /192\.168|NXDOMAIN/, host);
      }
    } else {
      assert.deepEqual(got, { allowed: true, addresses: expect }, host);
    }
  }
  // Addresses are never looked up.
  assert.deepEqual(asked, ["db01", "app.corp.example", "web", "secret", "nowhere"]);

  const names = AllowList.parse(["db01"]);
  const unasked = await names.lookup("secret", () => Promise.reject(new Error("looked up")));
  assert.equal(unasked.allowed, false, "a name no rule can allow is refused without a lookup");
  const open = await AllowList.parse([]).lookup("web", resolve);
  assert.deepEqual(open, { allowed: true, addresses: ["192.168.0.9", "10.1.1.1"] });
  await assert.rejects(AllowList.parse([]).lookup("nowhere", resolve), /NXDOMAIN/);
});
