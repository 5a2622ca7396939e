import assert from "node:assert/strict";
import { memoryConnPair } from "./_memory_conn.ts";
import { encodeMessage } from "./codec.ts";
import { FrameWriter, MessageReader } from "./frames.ts";
import { writeAll } from "./io.ts";
import type { ByteConn } from "./mux.ts";
import { Tag } from "./protocol.ts";

/** A link that records each write as it is called, and takes it whole at once. */
function recordingLink(): ByteConn & { writes: Uint8Array[] } {
  const writes: Uint8Array[] = [];
  return {
    writes,
    read: () => Promise.resolve(null),
    write: (p) => {
      writes.push(p.slice());
      return Promise.resolve(p.length);
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
}

Deno.test("FrameWriter writes a frame pushed on an idle queue at once, without waiting for a timer or a later turn", async () => {
  const link = recordingLink();
  const writer = new FrameWriter(link, (err) => assert.fail(`write failed: ${err}`));
  writer.push(new Uint8Array([1, 2, 3]));
  assert.deepEqual(link.writes, [new Uint8Array([1, 2, 3])], "the write began inside push()");
  await writer.idle();
});

Deno.test("FrameWriter.together(): small frames queued inside leave in one write; outside, the first leaves alone", async () => {
  const link = recordingLink();
  const writer = new FrameWriter(link, (err) => assert.fail(`write failed: ${err}`));
  writer.together(() => {
    writer.push(new Uint8Array([1, 1]));
    assert.equal(link.writes.length, 0, "nothing is written while frames are being queued");
    writer.push(new Uint8Array([2]), undefined, true);
  });
  await writer.idle();
  assert.deepEqual(link.writes, [new Uint8Array([1, 1, 2])]);
  assert.equal(writer.queued, 0);

  link.writes.length = 0;
  writer.push(new Uint8Array([3]));
  writer.push(new Uint8Array([4]));
  await writer.idle();
  assert.deepEqual(
    link.writes[0],
    new Uint8Array([3]),
    "without together(), the first goes at once",
  );
  assert.deepEqual(link.writes.flatMap((w) => [...w]), [3, 4]);
});

Deno.test("FrameWriter.together() nested: the writing starts when the outer call ends", async () => {
  const link = recordingLink();
  const writer = new FrameWriter(link, (err) => assert.fail(`write failed: ${err}`));
  writer.together(() => {
    writer.push(new Uint8Array([1]));
    writer.together(() => writer.push(new Uint8Array([2])));
    assert.equal(link.writes.length, 0, "the inner call does not start the writing");
    writer.push(new Uint8Array([3]));
  });
  await writer.idle();
  assert.deepEqual(link.writes, [new Uint8Array([1, 2, 3])]);
});

/** `count` DATA frames of `size` bytes on a fresh link, each filled with its index; the reader's end. */
async function dataLink(count: number, size: number): Promise<MessageReader> {
  const [a, b] = memoryConnPair(8 * 1024 * 1024);
  for (let i = 0; i < count; i++) {
    await writeAll(
      a,
      encodeMessage({ tag: Tag.DATA, stream: 1, data: new Uint8Array(size).fill(i) }),
    );
  }
  await a.closeWrite();
  const reader = new MessageReader(b);
  reader.trust();
  return reader;
}

Deno.test("MessageReader reuses a read buffer once every DATA view of it came back, and never one whose views are held", async () => {
  const reader = await dataLink(40, 60_000);
  const seen = new Set<ArrayBufferLike>();
  let reused = 0;
  const held: { view: Uint8Array; index: number }[] = [];
  let index = 0;
  for (let got = await reader.batch(); got !== null; got = await reader.batch()) {
    for (const m of got) {
      assert.equal(m.tag, Tag.DATA);
      if (m.tag !== Tag.DATA) continue;
      if (seen.has(m.data.buffer)) reused++;
      seen.add(m.data.buffer);
      assert.ok(m.data.every((b) => b === index), `frame ${index} arrived intact`);
      // Every third frame is kept (a stream still writing it); the rest come back at once.
      if (index % 3 === 0 && index < 12) held.push({ view: m.data, index });
      else reader.giveBack(m.data);
      index++;
    }
  }
  assert.equal(index, 40);
  assert.ok(reused > 0, "a buffer whose views all came back was read into again");
  for (const { view, index } of held) {
    assert.ok(view.every((b) => b === index), `held frame ${index} was not overwritten`);
  }
  // Views handed back twice, or arrays the reader never lent, change nothing.
  reader.giveBack(new Uint8Array(10));
});

Deno.test("MessageReader without views given back takes a fresh buffer each time, as before", async () => {
  const reader = await dataLink(20, 60_000);
  const seen = new Set<ArrayBufferLike>();
  let frames = 0;
  for (let got = await reader.batch(); got !== null; got = await reader.batch()) {
    for (const m of got) if (m.tag === Tag.DATA) (seen.add(m.data.buffer), frames++);
  }
  assert.equal(frames, 20);
  assert.ok(seen.size >= 4, `${seen.size} buffers for 1.2 MB of frames`);
});
