import assert from "node:assert/strict";
import { clientAddress, TrustedProxies } from "./forwarded.ts";

Deno.test("clientAddress() walks X-Forwarded-For from the right, skipping trusted hops", () => {
  const trusted = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]);
  const cases: [string, string | undefined, string, string | null][] = [
    // peer, header, shown address, via
    ["127.0.0.1", "203.0.113.5", "203.0.113.5", "127.0.0.1"],
    ["127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5", "127.0.0.1"],
    ["127.0.0.1", "198.51.100.1, 203.0.113.5, 10.0.0.2", "203.0.113.5", "127.0.0.1"],
    ["127.0.0.1", "10.9.9.9, 10.0.0.2", "10.9.9.9", "127.0.0.1"],
    // A peer that is not trusted: its header is ignored.
    ["192.0.2.4", "203.0.113.5", "192.0.2.4", null],
    // No header, or an empty one.
    ["127.0.0.1", undefined, "127.0.0.1", null],
    ["127.0.0.1", " , ", "127.0.0.1", null],
    // A malformed hop stops the walk at the last good one.
    ["127.0.0.1", "203.0.113.5, bogus", "127.0.0.1", null],
    ["127.0.0.1", "bogus, 10.0.0.3", "10.0.0.3", "127.0.0.1"],
    ["127.0.0.1", "<script>, 203.0.113.9", "203.0.113.9", "127.0.0.1"],
    // Ports and brackets, IPv6 and mapped IPv4.
    ["127.0.0.1", "203.0.113.5:4711", "203.0.113.5", "127.0.0.1"],
    ["127.0.0.1", "[2001:DB9::1]:80", "2001:db9::1", "127.0.0.1"],
    ["::ffff:127.0.0.1", "::ffff:203.0.113.5", "203.0.113.5", "::ffff:127.0.0.1"],
    ["2001:db8::7", "198.51.100.2", "198.51.100.2", "2001:db8::7"],
  ];
  for (const [peer, header, address, via] of cases) {
    assert.deepEqual(clientAddress(peer, header, trusted), { address, via }, `${peer} ${header}`);
  }
});

Deno.test("clientAddress() believes nothing when no proxy is trusted", () => {
  const none = TrustedProxies.parse([]);
  assert.ok(none.empty);
  assert.deepEqual(clientAddress("127.0.0.1", "203.0.113.5", none), {
    address: "127.0.0.1",
    via: null,
  });
});

Deno.test("TrustedProxies.parse() refuses what is not an address or CIDR, naming it", () => {
  for (
    const bad of [
      "",
      "localhost",
      "10.0.0.0/33",
      "10.0.0.0/8/1",
      "::1/129",
      "10.0.0.0/x",
      "10.0.0.0/",
    ]
  ) {
    assert.throws(() => TrustedProxies.parse([bad]), (err: Error) => {
      assert.ok(err instanceof TypeError);
      assert.ok(err.message.includes(`"${bad}"`), err.message);
      return true;
    });
  }
  const t = TrustedProxies.parse(["0.0.0.0/0"]);
  assert.ok(t.has("198.51.100.7") && !t.has("::1"));
});
