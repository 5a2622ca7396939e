import assert from "node:assert/strict";
import * as nodeCrypto from "node:crypto";
import {
  fingerprintFromHex,
  fingerprintOf,
  isFingerprint,
  loadOrCreateIdentity,
  signChallenge,
  TrustStore,
  verifyChallenge,
} from "./identity.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

const isPosix = Deno.build.os !== "windows";

Deno.test("loadOrCreateIdentity() creates an owner-only key that reloads to the same fingerprint", async () => {
  await withDir(async (dir) => {
    const paths = { key: `${dir}/portferry-daemon.key`, cert: `${dir}/portferry-daemon.crt` };
    const first = await loadOrCreateIdentity(paths, { role: "daemon" });
    assert.equal(first.created, true);
    assert.deepEqual(first.warnings, []);
    assert.ok(isFingerprint(first.fingerprint), first.fingerprint);
    assert.equal(first.fingerprint, await fingerprintOf(first.certDer));
    if (isPosix) assert.equal((await Deno.stat(paths.key)).mode! & 0o777, 0o600);
    if (isPosix) assert.equal((await Deno.stat(paths.cert)).mode! & 0o777, 0o600);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort(), [
      "portferry-daemon.crt",
      "portferry-daemon.key",
    ]);

    const again = await loadOrCreateIdentity(paths, { role: "daemon" });
    assert.equal(again.created, false);
    assert.equal(again.fingerprint, first.fingerprint);
    assert.equal(again.keyPem, first.keyPem);
  });
});

Deno.test("loadOrCreateIdentity() makes a CA:FALSE certificate named for its role", async () => {
  await withDir(async (dir) => {
    const id = await loadOrCreateIdentity({ key: `${dir}/k`, cert: `${dir}/c` }, {
      role: "console",
    });
    const cert = new nodeCrypto.X509Certificate(id.certPem);
    assert.equal(cert.ca, false);
    assert.equal(cert.subjectAltName, "DNS:portferry-console.invalid");
    assert.equal(cert.checkHost("portferry-console.invalid"), "portferry-console.invalid");
    assert.ok(new Date(cert.validTo).getTime() > Date.now() + 19 * 365 * 24 * 3600 * 1000);
    assert.equal(
      fingerprintFromHex(cert.fingerprint256),
      id.fingerprint,
      "node's fingerprint256 and ours agree",
    );
  });
});

Deno.test("loadOrCreateIdentity() warns when others can read the key", {
  ignore: !isPosix,
}, async () => {
  await withDir(async (dir) => {
    const paths = { key: `${dir}/k`, cert: `${dir}/c` };
    await loadOrCreateIdentity(paths, { role: "daemon" });
    await Deno.chmod(paths.key, 0o644);
    const id = await loadOrCreateIdentity(paths, { role: "daemon" });
    assert.equal(id.warnings.length, 1);
    assert.match(id.warnings[0], /chmod 600/);
  });
});

Deno.test("loadOrCreateIdentity() refuses a key without its certificate and never replaces it", async () => {
  await withDir(async (dir) => {
    const paths = { key: `${dir}/k`, cert: `${dir}/c` };
    await loadOrCreateIdentity(paths, { role: "daemon" });
    const keyBefore = await Deno.readTextFile(paths.key);
    await Deno.remove(paths.cert);
    await assert.rejects(
      () => loadOrCreateIdentity(paths, { role: "daemon" }),
      (err: Error) => err.message.includes(`"${paths.cert}" is missing`),
    );
    assert.equal(await Deno.readTextFile(paths.key), keyBefore);
  });
});

Deno.test("loadOrCreateIdentity() refuses a certificate without its key", async () => {
  await withDir(async (dir) => {
    const paths = { key: `${dir}/k`, cert: `${dir}/c` };
    await loadOrCreateIdentity(paths, { role: "daemon" });
    await Deno.remove(paths.key);
    await assert.rejects(
      () => loadOrCreateIdentity(paths, { role: "daemon" }),
      (err: Error) => err.message.includes(`"${paths.key}" is missing`),
    );
  });
});

Deno.test("loadOrCreateIdentity() names the file that does not parse or does not match", async () => {
  await withDir(async (dir) => {
    const a = { key: `${dir}/a.key`, cert: `${dir}/a.crt` };
    const b = { key: `${dir}/b.key`, cert: `${dir}/b.crt` };
    await loadOrCreateIdentity(a, { role: "daemon" });
    await loadOrCreateIdentity(b, { role: "daemon" });
    await assert.rejects(
      () => loadOrCreateIdentity({ key: a.key, cert: b.cert }, { role: "daemon" }),
      (err: Error) => err.message.includes("does not belong to key"),
    );
    await Deno.writeTextFile(b.cert, "not a certificate");
    await assert.rejects(
      () => loadOrCreateIdentity(b, { role: "daemon" }),
      (err: Error) => err.message.includes(`certificate "${b.cert}" is not a PEM certificate`),
    );
    await Deno.writeTextFile(
      a.key,
      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    await assert.rejects(
      () => loadOrCreateIdentity(a, { role: "daemon" }),
      (err: Error) => err.message.includes(`key "${a.key}" is not`),
    );
  });
});

Deno.test("fingerprintOf() is SHA256: plus unpadded base64 of the digest", async () => {
  // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
  const fp = await fingerprintOf(new TextEncoder().encode("abc"));
  assert.equal(fp, "SHA256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0");
  assert.ok(isFingerprint(fp));
  assert.equal(
    fingerprintFromHex(
      "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD",
    ),
    fp,
  );
});

Deno.test("isFingerprint() accepts only the canonical form", () => {
  const body = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0";
  assert.equal(isFingerprint(`SHA256:${body}`), true);
  for (
    const bad of [
      body,
      `sha256:${body}`,
      `SHA256:${body}=`,
      `SHA256:${body.slice(1)}`,
      `SHA256:${body.slice(0, -1)}1`, // non-zero padding bits
      `SHA256:${body.slice(0, -1)}-`,
      ` SHA256:${body}`,
    ]
  ) {
    assert.equal(isFingerprint(bad), false, bad);
  }
});

Deno.test("fingerprintFromHex() rejects anything but 32 colon-separated hex bytes", () => {
  assert.throws(() => fingerprintFromHex("AB:CD"), SyntaxError);
  assert.throws(() => fingerprintFromHex(Array(32).fill("zz").join(":")), SyntaxError);
});

Deno.test("signChallenge() output verifies with verifyChallenge() and only for that data and cert", async () => {
  await withDir(async (dir) => {
    const id = await loadOrCreateIdentity({ key: `${dir}/a.key`, cert: `${dir}/a.crt` }, {
      role: "daemon",
    });
    const other = await loadOrCreateIdentity({ key: `${dir}/b.key`, cert: `${dir}/b.crt` }, {
      role: "daemon",
    });
    const nonce = crypto.getRandomValues(new Uint8Array(32));
    const signature = await signChallenge(id, nonce);
    assert.equal(await verifyChallenge(b64(id.certDer), signature, nonce), id.fingerprint);

    const wrongNonce = nonce.slice();
    wrongNonce[0] ^= 1;
    await assert.rejects(
      () => verifyChallenge(b64(id.certDer), signature, wrongNonce),
      /^Error: Cannot verify Daemon identity: signature does not match certificate$/,
    );
    await assert.rejects(
      () => verifyChallenge(b64(other.certDer), signature, nonce),
      /Cannot verify Daemon identity: signature does not match/,
    );
    await assert.rejects(
      () => verifyChallenge(b64(new Uint8Array([48, 3, 2, 1, 1])), signature, nonce),
      /Cannot verify Daemon identity: certificate is not/,
    );
    await assert.rejects(
      () => verifyChallenge("!!not base64!!", signature, nonce),
      /Cannot verify Daemon identity: certificate or signature is not base64/,
    );
    await assert.rejects(
      () => verifyChallenge("A".repeat(100_000), signature, nonce),
      /Cannot verify Daemon identity: certificate too large/,
    );
  });
});

Deno.test("TrustStore adds, replaces, removes and persists trusted Daemons", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/portferry-console.trust.json`;
    const store = await TrustStore.load(path);
    assert.deepEqual(store.list(), []);
    const a = "SHA256:" + "A".repeat(43);
    const b = "SHA256:" + "B".repeat(42) + "A";
    await store.add({
      fingerprint: a,
      host: "db01",
      user: "ops",
      addedAt: "2026-01-01T00:00:00.000Z",
    });
    await store.add({ fingerprint: b, host: "web", user: "root" });
    await store.add({ fingerprint: a, host: "db01-renamed", user: "ops" });
    if (isPosix) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);

    const loaded = await TrustStore.load(path);
    assert.deepEqual(loaded.list().map((e) => [e.fingerprint, e.host]), [[b, "web"], [
      a,
      "db01-renamed",
    ]]);
    assert.ok(loaded.has(a) && loaded.has(b));
    assert.equal(await loaded.remove(a), true);
    assert.equal(await loaded.remove(a), false);
    assert.deepEqual((await TrustStore.load(path)).list().map((e) => e.fingerprint), [b]);
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), [
      "portferry-console.trust.json",
    ]);
    await assert.rejects(() => store.add({ fingerprint: "nope", host: "x", user: "y" }), TypeError);
  });
});

Deno.test("TrustStore.load() names a malformed file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/t.json`;
    await Deno.writeTextFile(path, "{");
    await assert.rejects(
      () => TrustStore.load(path),
      (err: Error) => err.name === "ConfigError" && err.message.startsWith(`${path}: `),
    );
    await Deno.writeTextFile(path, JSON.stringify({ daemons: [{ fingerprint: "x" }] }));
    await assert.rejects(() => TrustStore.load(path), /daemons\[0\] needs string fields/);
  });
});
