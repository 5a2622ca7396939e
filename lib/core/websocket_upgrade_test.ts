import assert from "node:assert/strict";
import { HandshakeError } from "./errors.ts";
import { memoryConnPair } from "./_memory_conn.ts";
import { encodeFrame, Op, readHttpHead } from "./websocket.ts";
import { answerUpgrade, sniffFirstBytes, upgradeClient } from "./websocket_upgrade.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("sniffFirstBytes() tells a ClientHello, an HTTP request, too little and junk apart", () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]), "tls"],
    [new Uint8Array([0x16, 0x03]), "tls"],
    [new Uint8Array([0x16]), "more"],
    [new Uint8Array([0x16, 0x99]), "junk"],
    [new Uint8Array(0), "more"],
    [enc("G"), "more"],
    [enc("GET"), "more"],
    [enc("GET "), "http"],
    [enc("GET /portferry HTTP/1.1\r\n"), "http"],
    [enc("POST / HTTP/1.1"), "http"],
    [enc("OPTIONS * HTTP/1.1"), "http"],
    [enc("GETX"), "junk"],
    [enc("get / HTTP/1.1"), "junk"],
    [enc("SSH-2.0-OpenSSH"), "junk"],
    [new Uint8Array([0x00, 0x00]), "junk"],
  ];
  for (const [bytes, want] of cases) {
    assert.equal(sniffFirstBytes(bytes), want, JSON.stringify([...bytes]));
  }
});

Deno.test("sniffFirstBytes() gives the same verdict however the bytes were split across reads", () => {
  const request = enc("GET /portferry HTTP/1.1\r\n");
  let seen = new Uint8Array(0);
  const verdicts: string[] = [];
  for (const byte of request.subarray(0, 6)) {
    seen = new Uint8Array([...seen, byte]);
    verdicts.push(sniffFirstBytes(seen));
  }
  assert.deepEqual(verdicts, ["more", "more", "more", "http", "http", "http"]);
});

function upgradeHeaders(extra: Record<string, string> = {}): Map<string, string> {
  return new Map(Object.entries({
    "host": "console.example",
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
    ...extra,
  }));
}

Deno.test("answerUpgrade() upgrades only GET on the path with a valid upgrade; 404, 400 or 426 otherwise", async () => {
  const ok = await answerUpgrade(
    { start: "GET /portferry HTTP/1.1", headers: upgradeHeaders() },
    "/portferry",
  );
  assert.equal(ok.kind, "upgrade");
  assert.match(ok.response, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(ok.response, /\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/);
  const query = await answerUpgrade(
    { start: "GET /portferry?x=1 HTTP/1.1", headers: upgradeHeaders() },
    "/portferry",
  );
  assert.equal(query.kind, "upgrade");
  const cases: [string, Map<string, string>, string | null, string][] = [
    ["GET / HTTP/1.1", upgradeHeaders(), "/portferry", "404"],
    ["GET /portferry HTTP/1.1", upgradeHeaders(), null, "404"],
    ["POST /portferry HTTP/1.1", upgradeHeaders(), "/portferry", "404"],
    ["GET /portferry HTTP/1.0", upgradeHeaders(), "/portferry", "404"],
    ["GET /portferry HTTP/1.1", new Map([["host", "x"]]), "/portferry", "404"],
    [
      "GET /portferry HTTP/1.1",
      upgradeHeaders({ "sec-websocket-key": "short" }),
      "/portferry",
      "400",
    ],
    ["GET /portferry HTTP/1.1", upgradeHeaders({ "connection": "close" }), "/portferry", "400"],
    [
      "GET /portferry HTTP/1.1",
      upgradeHeaders({ "sec-websocket-version": "8" }),
      "/portferry",
      "426",
    ],
  ];
  for (const [start, headers, path, code] of cases) {
    const answer = await answerUpgrade({ start, headers }, path);
    assert.equal(answer.kind, "refuse", start);
    assert.ok(answer.response.startsWith(`HTTP/1.1 ${code} `), `${start}: ${answer.response}`);
    assert.match(answer.response, /\r\nConnection: close\r\n/);
    assert.ok(answer.response.length < 200, "a short answer");
  }
});

Deno.test("upgradeClient() and answerUpgrade() agree; a frame sent right after the 101 is read", async () => {
  const [a, b] = memoryConnPair(1 << 16);
  const server = (async () => {
    const { head, rest } = await readHttpHead(b);
    const answer = await answerUpgrade(head, "/pf");
    assert.equal(answer.kind, "upgrade");
    await b.write(
      new Uint8Array([...enc(answer.response), ...encodeFrame(enc("early"), { op: Op.binary })]),
    );
    return rest;
  })();
  const ws = await upgradeClient(a, { host: "x", path: "/pf", label: '"ws://x/pf"' });
  assert.equal((await server).length, 0);
  const buf = new Uint8Array(16);
  const n = await ws.read(buf);
  assert.equal(new TextDecoder().decode(buf.subarray(0, n ?? 0)), "early");
});

Deno.test("upgradeClient() names the server's answer when it refuses, and refuses a wrong accept key", async () => {
  for (
    const [answer, pattern] of [
      ["HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", /answered "404 Not Found"/],
      ["HTTP/1.1 502 Bad Gateway\r\n\r\n", /answered "502 Bad Gateway"/],
      [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: nope\r\n\r\n",
        /Sec-WebSocket-Accept/,
      ],
      ["SSH-2.0-OpenSSH\r\n\r\n", /not HTTP/],
    ] as const
  ) {
    const [a, b] = memoryConnPair(1 << 16);
    const server = (async () => {
      await readHttpHead(b);
      await b.write(enc(answer));
    })();
    await assert.rejects(
      upgradeClient(a, { host: "x", path: "/pf", label: '"ws://x/pf"' }),
      (err: Error) => {
        assert.ok(err instanceof HandshakeError, String(err));
        assert.match(err.message, /^Cannot open WebSocket to "ws:\/\/x\/pf": /);
        assert.match(err.message, pattern);
        return true;
      },
    );
    await server;
  }
});
