import assert from "node:assert/strict";
import { ProtocolError } from "./errors.ts";
import { memoryConnPair } from "./_memory_conn.ts";
import type { ByteConn } from "./mux.ts";
import {
  encodeFrame,
  MAX_WS_MESSAGE_BYTES,
  Op,
  readHttpHead,
  WebSocketLimitError,
  WebSocketStream,
} from "./websocket.ts";

const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);

/** Read everything until the end of the stream. */
async function readAll(conn: ByteConn, size = 1000): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(size);
  let n: number | null;
  while ((n = await conn.read(buf)) !== null) parts.push(buf.slice(0, n));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Frames `raw` then the end, written by a raw peer on a pipe of `capacity` bytes. */
function rawPeer(capacity: number) {
  const [raw, other] = memoryConnPair(capacity);
  const send = async (...frames: Uint8Array[]) => {
    for (const f of frames) for (let at = 0; at < f.length;) at += await raw.write(f.subarray(at));
  };
  return { raw, other, send };
}

function pattern(n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 31 + 7) & 0xff;
  return p;
}

Deno.test("WebSocketStream carries bytes both ways, client frames masked and server frames not, through tiny buffers", async () => {
  const [a, b] = memoryConnPair(7);
  const client = new WebSocketStream(a, { role: "client" });
  const server = new WebSocketStream(b, { role: "server" });
  const up = pattern(70_000); // a 64-bit length frame
  const down = pattern(300);
  const writing = (async () => {
    await client.write(up);
    await client.closeWrite();
  })();
  const serving = (async () => {
    await server.write(down);
    await server.closeWrite();
  })();
  const [gotUp, gotDown] = await Promise.all([readAll(server, 333), readAll(client, 333)]);
  await Promise.all([writing, serving]);
  assert.deepEqual(gotUp, up);
  assert.deepEqual(gotDown, down);
});

Deno.test("WebSocketStream reads a fragmented message, with a ping between fragments, as one stream and answers the ping", async () => {
  const { raw, other, send } = rawPeer(5);
  const server = new WebSocketStream(other, { role: "server" });
  const reading = readAll(server, 4);
  const answers = readAll(raw, 64);
  await send(
    encodeFrame(new TextEncoder().encode("frag"), { op: Op.binary, fin: false, mask: MASK }),
    encodeFrame(new TextEncoder().encode("hi"), { op: Op.ping, mask: MASK }),
    encodeFrame(new TextEncoder().encode("ment"), { op: Op.continuation, fin: false, mask: MASK }),
    encodeFrame(new TextEncoder().encode("ed"), { op: Op.continuation, mask: MASK }),
    encodeFrame(new Uint8Array([0x03, 0xe8]), { op: Op.close, mask: MASK }),
  );
  assert.equal(new TextDecoder().decode(await reading), "fragmented");
  await other.closeWrite();
  const back = await answers;
  // A pong with the ping's payload, unmasked, then the close echoed.
  const pong = encodeFrame(new TextEncoder().encode("hi"), { op: Op.pong });
  const close = encodeFrame(new Uint8Array([0x03, 0xe8]), { op: Op.close });
  assert.deepEqual(back, new Uint8Array([...pong, ...close]));
});

Deno.test("WebSocketStream refuses an unmasked client frame with close 1002", async () => {
  const { raw, other, send } = rawPeer(64);
  const server = new WebSocketStream(other, { role: "server" });
  await send(encodeFrame(new TextEncoder().encode("plain"), { op: Op.binary }));
  await assert.rejects(server.read(new Uint8Array(16)), (err: Error) => {
    assert.ok(err instanceof ProtocolError);
    assert.match(err.message, /did not mask/);
    return true;
  });
  const buf = new Uint8Array(8);
  const n = await raw.read(buf);
  assert.deepEqual(buf.subarray(0, n ?? 0), new Uint8Array([0x88, 2, 0x03, 0xea]));
});

Deno.test("WebSocketStream refuses a masked server frame on the client side", async () => {
  const { other, send } = rawPeer(64);
  const client = new WebSocketStream(other, { role: "client" });
  await send(encodeFrame(new TextEncoder().encode("x"), { op: Op.binary, mask: MASK }));
  await assert.rejects(client.read(new Uint8Array(16)), /the server masked it/);
});

Deno.test("WebSocketStream refuses a frame over the limit from its header alone, with close 1009", async () => {
  const { raw, other, send } = rawPeer(64);
  const server = new WebSocketStream(other, { role: "server" });
  // Only the header of a 2^40-byte frame: the refusal must not wait for the payload.
  const head = new Uint8Array([0x82, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0, ...MASK]);
  await send(head);
  await assert.rejects(server.read(new Uint8Array(16)), WebSocketLimitError);
  const buf = new Uint8Array(8);
  const n = await raw.read(buf);
  assert.deepEqual(buf.subarray(0, n ?? 0), new Uint8Array([0x88, 2, 0x03, 0xf1]));
});

Deno.test("WebSocketStream refuses a fragmented message whose fragments add up to more than the limit", async () => {
  const { other, send } = rawPeer(1 << 20);
  const server = new WebSocketStream(other, { role: "server", maxMessageBytes: 1000 });
  const reading = readAll(server, 2000);
  await send(
    encodeFrame(new Uint8Array(600), { op: Op.binary, fin: false, mask: MASK }),
    encodeFrame(new Uint8Array(600), { op: Op.continuation, mask: MASK }),
  );
  await assert.rejects(reading, /over the limit of 1000 bytes/);
  assert.ok(MAX_WS_MESSAGE_BYTES >= 256 * 1024, "our own frames fit the default limit");
});

Deno.test("WebSocketStream refuses text messages and a continuation with no message begun", async () => {
  for (
    const frame of [
      encodeFrame(new TextEncoder().encode("text"), { op: Op.text, mask: MASK }),
      encodeFrame(new TextEncoder().encode("cont"), { op: Op.continuation, mask: MASK }),
    ]
  ) {
    const { other, send } = rawPeer(64);
    const server = new WebSocketStream(other, { role: "server" });
    await send(frame);
    await assert.rejects(server.read(new Uint8Array(16)), ProtocolError);
  }
});

Deno.test("WebSocketStream splits a large write into frames of at most 256 KiB in one message", async () => {
  const { raw, other } = rawPeer(1 << 21);
  const server = new WebSocketStream(other, { role: "server" });
  const data = pattern(600 * 1024);
  await server.write(data);
  await other.closeWrite();
  const bytes = await readAll(raw, 1 << 20);
  const heads: number[] = [];
  let at = 0;
  while (at < bytes.length) {
    heads.push(bytes[at]);
    const len = Number(new DataView(bytes.buffer, at + 2, 8).getBigUint64(0));
    assert.equal(bytes[at + 1], 127);
    at += 10 + len;
  }
  assert.deepEqual(heads, [0x02, 0x00, 0x80], "binary, continuation, final continuation");
});

Deno.test("WebSocketStream reads the end of the connection without a close frame as the end", async () => {
  const { raw, other, send } = rawPeer(64);
  const server = new WebSocketStream(other, { role: "server" });
  await send(encodeFrame(new TextEncoder().encode("last"), { op: Op.binary, mask: MASK }));
  await raw.closeWrite();
  assert.equal(new TextDecoder().decode(await readAll(server)), "last");
});

Deno.test("readHttpHead() reads a head split across reads and keeps the bytes after it", async () => {
  const [a, b] = memoryConnPair(1);
  const text = new TextEncoder().encode("GET / HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\n\r\nrest");
  const writing = (async () => {
    for (let at = 0; at < text.length;) at += await a.write(text.subarray(at));
    await a.closeWrite();
  })();
  const { head, rest } = await readHttpHead(b);
  assert.equal(head.start, "GET / HTTP/1.1");
  assert.equal(head.headers.get("x-a"), "1, 2");
  const after = new Uint8Array([...rest, ...(await readAll(b))]);
  await writing;
  assert.equal(new TextDecoder().decode(after.subarray(0, 4)), "rest");
});

Deno.test("readHttpHead() refuses a head longer than its limit", async () => {
  const [a, b] = memoryConnPair(1 << 16);
  await a.write(new TextEncoder().encode("GET / HTTP/1.1\r\nX: " + "y".repeat(9000)));
  await assert.rejects(readHttpHead(b), /longer than 8192 bytes/);
});
