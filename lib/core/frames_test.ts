import assert from "node:assert/strict";
import { FrameWriter } from "./frames.ts";
import type { ByteConn } from "./mux.ts";

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
