import assert from "node:assert/strict";
import { memoryConnPair } from "./_memory_conn.ts";
import { encodeMessage } from "./codec.ts";
import { createLogger } from "./log.ts";
import { writeAll } from "./mux.ts";
import { Tag } from "./protocol.ts";
import { MessageReader, Session } from "./session.ts";

const log = createLogger({ level: "error" });
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("Stream.start() holds bytes that arrive with OPEN_OK until the owner's reply is written", async () => {
  const [consoleLink, daemonLink] = memoryConnPair(4096);
  const session = new Session(consoleLink, new MessageReader(consoleLink), {
    role: "console",
    id: "t",
    log,
    handlers: { onChat: () => {}, onEnd: () => {} },
  });
  session.run();
  const daemon = new MessageReader(daemonLink);
  const [client, relay] = memoryConnPair(4096);
  // What the SOCKS PFO does: answer its client, then start the stream.
  const started = session.openStream(relay, { host: "t", port: 2, pfo: "p", client: "c" }, { log })
    .then(async ({ stream }) => {
      await writeAll(relay, encoder.encode("REPLY|"));
      stream.start();
      return stream;
    });
  const open = await daemon.next();
  assert.equal(open.tag, Tag.OPEN);
  // A target that speaks first: its banner follows OPEN_OK in the same read of the link,
  // so the Console dispatches it before any promise callback has run.
  const okAndBanner = [
    encodeMessage({ tag: Tag.OPEN_OK, stream: open.stream, address: "127.0.0.1:2" }),
    encodeMessage({ tag: Tag.DATA, stream: open.stream, data: encoder.encode("BANNER") }),
  ];
  const both = new Uint8Array(okAndBanner[0].length + okAndBanner[1].length);
  both.set(okAndBanner[0]);
  both.set(okAndBanner[1], okAndBanner[0].length);
  await writeAll(daemonLink, both);
  const stream = await started;

  let got = "";
  const buf = new Uint8Array(64);
  while (got.length < "REPLY|BANNER".length) {
    const n = await client.read(buf);
    if (n === null) break;
    got += decoder.decode(buf.subarray(0, n));
  }
  assert.equal(got, "REPLY|BANNER", "the client must see its reply before the target's bytes");
  stream.reset("test over");
  daemonLink.close();
  await session.done();
});
