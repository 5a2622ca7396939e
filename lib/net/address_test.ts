import assert from "node:assert/strict";
import { SocketAddress } from "node:net";
import { formatIp, isAddressShaped, parseIp, parseTarget, unmapIp } from "./address.ts";

/** Each host, and what it is: the canonical address, "name", or a reason pattern (refused). */
const TARGETS: [string, string | RegExp][] = [
  // IPv4: only four decimal numbers without leading zeros.
  ["127.0.0.1", "127.0.0.1"],
  ["10.0.0.8", "10.0.0.8"],
  ["0.0.0.0", "0.0.0.0"],
  ["255.255.255.255", "255.255.255.255"],
  ["127.0.0.010", /not an address and not a name/],
  ["010.0.0.1", /not an address and not a name/],
  ["0177.0.0.1", /not an address and not a name/],
  ["127.0.0.00", /not an address and not a name/],
  ["127.1", /not an address and not a name/],
  ["127.0.1", /not an address and not a name/],
  ["0x7f.1", /not an address and not a name/],
  ["0x7f.0.0.1", /not an address and not a name/],
  ["0x7f000001", /not an address and not a name/],
  ["2130706433", /not an address and not a name/],
  ["127.0.0.256", /not an address and not a name/],
  ["1.2.3.4.5", /not an address and not a name/],
  ["0x", /not an address and not a name/],
  ["127.0.0.1.", /no trailing dot; write "127\.0\.0\.1"/],
  ["127.0.0.010.", /not an address and not a name/],
  // IPv4-mapped IPv6 is its IPv4 address.
  ["::ffff:10.0.0.1", "10.0.0.1"],
  ["::ffff:7f00:1", "127.0.0.1"],
  ["::FFFF:7F00:1", "127.0.0.1"],
  ["0:0:0:0:0:ffff:7f00:1", "127.0.0.1"],
  ["::ffff:010.0.0.1", /not an address and not a name/],
  ["::ffff:127.1", /not an address and not a name/],
  // IPv6: any case in, canonical (RFC 5952) out; no zones, no trailing dot.
  ["::1", "::1"],
  ["0:0:0:0:0:0:0:1", "::1"],
  ["::", "::"],
  ["FE80::0:1", "fe80::1"],
  ["2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
  ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
  ["fd00:0000:0000:0000:0000:0000:0000:0005", "fd00::5"],
  ["::1.2.3.4", "::102:304"],
  ["fe80::1%eth0", /"%" zone/],
  ["fe80::1%25eth0", /"%" zone/],
  ["::1.", /no trailing dot; write "::1"/],
  ["1::2::3", /not an address and not a name/],
  ["1:2:3:4:5:6:7:8:9", /not an address and not a name/],
  ["[::1]", /not an address and not a name/],
  // Names.
  ["db01", "name"],
  ["DB01.corp.example", "name"],
  ["db01.corp.example.", "name"],
  ["_sip._tcp.example", "name"],
  ["localhost", "name"],
  ["1e3", "name"],
  ["host.123", /not an address and not a name/],
  ["", /not an address and not a name/],
  ["a..b", /not an address and not a name/],
  ["a b", /not an address and not a name/],
  ["db01\n", /not an address and not a name/],
  ["-db01", /not an address and not a name/],
  ["x".repeat(254), /not an address and not a name/],
];

function show(value: unknown): string {
  return JSON.stringify(value, (_, v) => typeof v === "bigint" ? v.toString(16) : v);
}

Deno.test("parseTarget() takes canonical addresses and names and refuses every other form", () => {
  assert.ok(TARGETS.length > 40);
  for (const [host, expected] of TARGETS) {
    const t = parseTarget(host);
    if (expected === "name") {
      assert.deepEqual(t, { kind: "name", name: host }, host);
    } else if (typeof expected === "string") {
      assert.equal(t.kind, "address", `${JSON.stringify(host)}: ${show(t)}`);
      if (t.kind === "address") assert.equal(t.text, expected, host);
    } else {
      assert.equal(t.kind, "invalid", `${JSON.stringify(host)}: ${show(t)}`);
      if (t.kind === "invalid") {
        assert.match(t.reason, expected, host);
        assert.ok(t.reason.startsWith(`Cannot reach ${JSON.stringify(host)}: `), t.reason);
      }
    }
  }
});

Deno.test("parseTarget() refuses every host the system resolver would read as an address it is not", () => {
  // The WHATWG URL parser reads legacy IPv4 as the resolver does (octal,
  // hex, fewer parts, one integer). A host it reads as an IPv4 address must
  // either be refused or be that very address.
  let compared = 0;
  for (const [host] of TARGETS) {
    if (host.includes(":") || /[\s%]/.test(host) || host === "") continue;
    let url: string;
    try {
      url = new URL(`http://${host}/`).hostname;
    } catch {
      continue;
    }
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(url)) continue;
    compared++;
    const t = parseTarget(host);
    if (t.kind === "address") assert.equal(t.text, url, host);
    else assert.equal(t.kind, "invalid", host);
  }
  assert.ok(compared >= 15, `only ${compared} hosts compared`);
});

Deno.test("formatIp() writes IPv6 as the platform does", () => {
  for (const [host, expected] of TARGETS) {
    const ip = parseIp(host);
    if (!ip || ip.family !== 6 || typeof expected !== "string") continue;
    const text = formatIp(unmapIp(ip));
    // node:net prints mapped and compatible IPv4 dotted; we print them unmapped or in hex.
    if (unmapIp(ip).family === 6 && !host.includes(".")) {
      assert.equal(text, new SocketAddress({ address: host, family: "ipv6" }).address, host);
    }
    assert.equal(parseIp(text)?.bits, unmapIp(ip).bits, `${host} round trip`);
  }
  assert.equal(
    formatIp({ family: 6, bits: 0x0001_0000_0000_0001_0000_0000_0000_0001n }),
    "1:0:0:1::1",
  );
  assert.equal(
    formatIp({ family: 6, bits: 0x0001_0000_0000_0000_0001_0000_0000_0001n }),
    "1::1:0:0:1",
  );
  assert.equal(
    formatIp({ family: 6, bits: 0x0001_0002_0003_0004_0005_0006_0007_0000n }),
    "1:2:3:4:5:6:7:0",
  );
});

Deno.test("parseIp() reads IPv4 and IPv6 forms", () => {
  assert.equal(parseIp("1.2.3.4")?.bits, 0x01020304n);
  assert.equal(parseIp("::1")?.bits, 1n);
  assert.equal(parseIp("::ffff:1.2.3.4")?.bits, 0xffff01020304n);
  assert.equal(parseIp("fe80::1:2")?.family, 6);
  for (const bad of ["1.2.3", "256.1.1.1", "1::2::3", "db01", "1:2:3:4:5:6:7:8:9", "01.2.3.4"]) {
    assert.equal(parseIp(bad), null, bad);
  }
});

Deno.test("isAddressShaped() is true for a numeric last label or a colon", () => {
  for (const host of ["1", "a.1", "a.0x1f", "a.0X", "1.2.3.4.", "::1", "a:b"]) {
    assert.equal(isAddressShaped(host), true, host);
  }
  for (const host of ["a", "a.b1", "1.a", "0xg.x", "1e3", "db01."]) {
    assert.equal(isAddressShaped(host), false, host);
  }
});
