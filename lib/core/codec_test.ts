import assert from "node:assert/strict";
import { decodeBody, encodeMessage, FrameDecoder, tagName } from "./codec.ts";
import { ProtocolError } from "./errors.ts";
import { FRAME_HEADER_BYTES, MAX_DATA_BYTES, type Message, Tag } from "./protocol.ts";

const SAMPLES: readonly Message[] = [
  { tag: Tag.HELLO, version: 1, capabilities: ["tcp"] },
  { tag: Tag.CHALLENGE, version: 1, capabilities: ["tcp"], nonce: "bm9uY2U" },
  {
    tag: Tag.AUTH,
    host: "home",
    user: "ann",
    os: "linux",
    cert: "Y2VydA",
    signature: "c2ln",
    token: null,
  },
  { tag: Tag.AUTH, host: "h", user: "u", os: "darwin", cert: "Yw", signature: "cw", token: "t0k" },
  { tag: Tag.PENDING },
  { tag: Tag.ACCEPT, session: "a1b2c3" },
  { tag: Tag.REJECT, code: "busy", reason: "another Daemon holds the session" },
  {
    tag: Tag.OPEN,
    stream: 7,
    proto: "tcp",
    host: "db01",
    port: 5432,
    pfo: "db",
    client: "127.0.0.1:40000",
  },
  { tag: Tag.OPEN_OK, stream: 7, address: "10.0.0.5:5432" },
  { tag: Tag.OPEN_ERR, stream: 7, code: "refused", reason: "connection refused" },
  { tag: Tag.DATA, stream: 7, data: new Uint8Array([1, 2, 3]) },
  { tag: Tag.DATA, stream: 0xffff_ffff, data: new Uint8Array(MAX_DATA_BYTES).fill(9) },
  { tag: Tag.WINDOW, stream: 7, credit: 65536 },
  { tag: Tag.FIN, stream: 7 },
  { tag: Tag.RESET, stream: 7, reason: "client gone" },
  { tag: Tag.CHAT, text: "hello, ünïcode ✓" },
  { tag: Tag.RESOLVE, id: 1, host: "db01" },
  { tag: Tag.RESOLVE_RESULT, id: 1, addresses: ["10.0.0.5", "::1"], error: null },
  { tag: Tag.RESOLVE_RESULT, id: 2, addresses: [], error: "not found" },
  { tag: Tag.PING, seq: 5 },
  { tag: Tag.PONG, seq: 5 },
  { tag: Tag.CLOSE, code: "closed", reason: "operator closed the session", final: true },
  { tag: Tag.DATAGRAM, stream: 3, data: new Uint8Array(0) },
  { tag: Tag.DATAGRAM, stream: 3, data: new Uint8Array(65_507).fill(7) },
];

Deno.test("encodeMessage() round-trips every message type through FrameDecoder", () => {
  const covered = new Set<number>();
  for (const msg of SAMPLES) {
    const bytes = encodeMessage(msg);
    const out = new FrameDecoder().push(bytes);
    assert.equal(out.length, 1, tagName(msg.tag));
    assert.deepEqual(out[0], msg);
    covered.add(msg.tag);
  }
  assert.deepEqual([...covered].sort((a, b) => a - b), Object.values(Tag).sort((a, b) => a - b));
});

Deno.test("FrameDecoder.push() reassembles frames split at every byte", () => {
  const all = SAMPLES.slice(0, 10).map(encodeMessage);
  const joined = new Uint8Array(all.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of all) {
    joined.set(b, at);
    at += b.length;
  }
  const dec = new FrameDecoder();
  const got: Message[] = [];
  for (let i = 0; i < joined.length; i++) got.push(...dec.push(joined.subarray(i, i + 1)));
  assert.deepEqual(got, SAMPLES.slice(0, 10));
  assert.equal(dec.buffered, 0);
});

Deno.test("FrameDecoder.push() refuses a frame over its cap before reading the body", () => {
  const dec = new FrameDecoder({ maxFrameBytes: 1024 });
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, 0x7fff_ffff);
  assert.throws(
    () => dec.push(header),
    (e) => e instanceof ProtocolError && /exceeds/.test(e.message),
  );
});

Deno.test("decodeBody() rejects unknown tags, unknown fields, wrong types and bad streams", () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const cases: [number, number, Uint8Array, RegExp][] = [
    [99, 0, enc({}), /unknown tag 99/],
    [Tag.PING, 0, enc({ seq: 1, run: "rm -rf /" }), /unknown field "run"/],
    [Tag.PING, 0, enc({ seq: "1" }), /field "seq"/],
    [Tag.PING, 0, enc({}), /missing field "seq"/],
    [Tag.PING, 3, enc({ seq: 1 }), /stream must be 0/],
    [Tag.OPEN, 0, enc({}), /stream 0 is reserved/],
    [Tag.CHAT, 0, new Uint8Array([0xff, 0xfe]), /not UTF-8 JSON/],
    [Tag.CHAT, 0, enc([1]), /not a JSON object/],
    [Tag.WINDOW, 1, new Uint8Array(3), /expected 4/],
    [Tag.WINDOW, 1, new Uint8Array(4), /credit is 0/],
    [Tag.DATA, 1, new Uint8Array(0), /empty body/],
    [Tag.FIN, 1, new Uint8Array(1), /expected 0/],
    [Tag.DATAGRAM, 1, new Uint8Array(65_508), /exceeds 65507/],
    [Tag.DATAGRAM, 0, new Uint8Array(1), /stream 0 is reserved/],
    [Tag.REJECT, 0, enc({ code: "exec", reason: "x" }), /one of/],
    [Tag.OPEN, 1, enc({ proto: "exec", host: "a", port: 1, pfo: "p", client: "c" }), /one of/],
    [
      Tag.OPEN,
      1,
      enc({ proto: "tcp", host: "a", port: 70000, pfo: "p", client: "c" }),
      /0\.\.65535/,
    ],
  ];
  for (const [tag, stream, body, pattern] of cases) {
    assert.throws(
      () => decodeBody(tag, stream, body),
      (e) => e instanceof ProtocolError && pattern.test(e.message),
      `${tagName(tag)} ${pattern}`,
    );
  }
});

/** Small seeded PRNG (mulberry32), so a failing case can be replayed. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("FrameDecoder.push() survives 100,000 random and mutated frames with only ProtocolError", () => {
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? 20261126);
  const rand = prng(seed);
  const valid = SAMPLES.filter((m) => m.tag !== Tag.DATA).map(encodeMessage);
  let decoded = 0;
  let rejected = 0;
  for (let i = 0; i < 100_000; i++) {
    let bytes: Uint8Array;
    if (i % 2 === 0) {
      bytes = valid[Math.floor(rand() * valid.length)].slice();
      const flips = 1 + Math.floor(rand() * 4);
      for (let f = 0; f < flips; f++) {
        bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      }
    } else {
      bytes = new Uint8Array(FRAME_HEADER_BYTES + Math.floor(rand() * 64));
      for (let b = 0; b < bytes.length; b++) bytes[b] = Math.floor(rand() * 256);
      if (rand() < 0.7) new DataView(bytes.buffer).setUint32(0, bytes.length - 4);
    }
    try {
      decoded += new FrameDecoder({ maxFrameBytes: 16 * 1024 }).push(bytes).length;
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        throw new Error(`case ${i} (seed ${seed}) threw ${err}`, { cause: err });
      }
      rejected++;
    }
  }
  assert.ok(rejected > 10_000, `rejected only ${rejected}`);
  assert.ok(decoded > 0, "no mutated frame decoded at all");
});
