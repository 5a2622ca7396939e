import assert from "node:assert/strict";
import { HandshakeError } from "./errors.ts";
import { type Identity, loadOrCreateIdentity } from "./identity.ts";
import { connectPinned, listenSessions, type SessionLink } from "./tls.ts";

async function withIdentity(fn: (identity: Identity) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const identity = await loadOrCreateIdentity(
      { key: `${dir}/c.key`, cert: `${dir}/c.crt` },
      { role: "console" },
    );
    await fn(identity);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function readAll(link: SessionLink): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const n = await link.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

async function writeAll(link: SessionLink, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await link.write(data.subarray(offset));
}

/** Accept connections; each is handshaken (probes fail here) and read to its end. */
function serve(listener: Deno.TlsListener, onConn: (conn: Deno.TlsConn) => Promise<void>) {
  return (async () => {
    const pending: Promise<void>[] = [];
    for await (const conn of listener) {
      pending.push((async () => {
        try {
          await conn.handshake();
          await onConn(conn);
        } catch {
          // A probe closes without sending anything.
        } finally {
          try {
            conn.close();
          } catch {
            // Already closed.
          }
        }
      })());
    }
    await Promise.all(pending);
  })();
}

Deno.test("connectPinned() reaches a Console with the pinned certificate and bytes flow both ways", async () => {
  await withIdentity(async (identity) => {
    const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
    const fromDaemon: Uint8Array[] = [];
    const big = crypto.getRandomValues(new Uint8Array(60_000));
    const served = serve(listener, async (conn) => {
      const got = await readAll(conn);
      if (got.length === 0) return; // the probe
      fromDaemon.push(got);
      await writeAll(conn, big);
      await conn.closeWrite();
    });
    const cache = new Map<string, string>();
    const link = await connectPinned({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      fingerprint: identity.fingerprint,
      timeoutMs: 5_000,
      cache,
    });
    assert.equal(link.remoteAddr.port, listener.addr.port);
    await writeAll(link, new TextEncoder().encode("hello console"));
    await link.closeWrite();
    assert.deepEqual(await readAll(link), big);
    link.close();
    assert.equal(cache.size, 1);

    // A second dial uses the cached certificate and skips the probe.
    const again = await connectPinned({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      fingerprint: identity.fingerprint,
      timeoutMs: 5_000,
      cache,
    });
    await writeAll(again, new TextEncoder().encode("again"));
    await again.closeWrite();
    assert.deepEqual(await readAll(again), big);
    again.close();

    listener.close();
    await served;
    assert.deepEqual(fromDaemon.map((b) => new TextDecoder().decode(b)), [
      "hello console",
      "again",
    ]);
  });
});

Deno.test('connectPinned() fails with code "fingerprint" and sends no application byte to another Console', async () => {
  await withIdentity(async (identity) => {
    const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
    let received = 0;
    let connections = 0;
    const served = serve(listener, async (conn) => {
      connections++;
      received += (await readAll(conn)).length;
    });
    const wrong = "SHA256:" + "A".repeat(43);
    const err = await connectPinned({
      hostname: "127.0.0.1",
      port: listener.addr.port,
      fingerprint: wrong,
      timeoutMs: 5_000,
    }).then(() => null, (e) => e);
    assert.ok(err instanceof HandshakeError, String(err));
    assert.equal(err.code, "fingerprint");
    assert.ok(err.message.includes(wrong), err.message);
    assert.ok(err.message.includes(identity.fingerprint), err.message);
    listener.close();
    await served;
    assert.equal(connections, 1);
    assert.equal(received, 0);
  });
});

Deno.test('connectPinned() fails with code "fingerprint" when a cached certificate no longer matches', async () => {
  await withIdentity(async (identity) => {
    await withIdentity(async (other) => {
      const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
      let received = 0;
      const served = serve(listener, async (conn) => {
        received += (await readAll(conn)).length;
      });
      const cache = new Map([[other.fingerprint, other.certPem]]);
      const err = await connectPinned({
        hostname: "127.0.0.1",
        port: listener.addr.port,
        fingerprint: other.fingerprint,
        timeoutMs: 5_000,
        cache,
      }).then(() => null, (e) => e);
      assert.ok(err instanceof HandshakeError, String(err));
      assert.equal(err.code, "fingerprint");
      assert.ok(err.message.includes(identity.fingerprint), err.message);
      assert.equal(cache.size, 0);
      listener.close();
      await served;
      assert.equal(received, 0);
    });
  });
});

Deno.test('connectPinned() fails with code "refused" on a closed port', async () => {
  // A port outside the ephemeral range: no other test binding port 0 can be given it.
  let port = 0;
  for (let i = 0; i < 500 && port === 0; i++) {
    const candidate = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port: candidate }).close();
      port = candidate;
    } catch {
      // Taken: try another.
    }
  }
  const err = await connectPinned({
    hostname: "127.0.0.1",
    port,
    fingerprint: "SHA256:" + "A".repeat(43),
    timeoutMs: 5_000,
  }).then(() => null, (e) => e);
  assert.ok(err instanceof HandshakeError, String(err));
  assert.equal(err.code, "refused");
  assert.ok(err.cause !== undefined);
});

Deno.test('connectPinned() fails with code "timeout" when the peer never answers the handshake', async () => {
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) accepted.push(conn);
  })();
  const err = await connectPinned({
    hostname: "127.0.0.1",
    port: silent.addr.port,
    fingerprint: "SHA256:" + "A".repeat(43),
    timeoutMs: 200,
  }).then(() => null, (e) => e);
  assert.ok(err instanceof HandshakeError, String(err));
  assert.equal(err.code, "timeout");
  silent.close();
  await accepting;
  for (const conn of accepted) conn.close();
});

Deno.test('connectPinned() fails with code "tls" when the peer does not speak TLS', async () => {
  const plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const answering = (async () => {
    const conn = await plain.accept();
    await conn.write(new TextEncoder().encode("HTTP/1.0 400 Bad Request\r\n\r\n"));
    conn.close();
  })();
  const err = await connectPinned({
    hostname: "127.0.0.1",
    port: plain.addr.port,
    fingerprint: "SHA256:" + "A".repeat(43),
    timeoutMs: 5_000,
  }).then(() => null, (e) => e);
  await answering;
  plain.close();
  assert.ok(err instanceof HandshakeError, String(err));
  assert.equal(err.code, "tls");
});

Deno.test("connectPinned() rejects with the signal's reason when aborted", async () => {
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  const err = await connectPinned({
    hostname: "127.0.0.1",
    port: 1,
    fingerprint: "SHA256:" + "A".repeat(43),
    timeoutMs: 5_000,
    signal: controller.signal,
  }).then(() => null, (e) => e);
  assert.equal((err as Error).message, "stop");
});
