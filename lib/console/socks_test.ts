import assert from "node:assert/strict";
import { memoryConnPair } from "../core/_memory_conn.ts";
import { writeAll } from "../core/mux.ts";
import { socksAccept, SocksError } from "./socks.ts";

const encoder = new TextEncoder();

async function readExactly(conn: { read(p: Uint8Array): Promise<number | null> }, n: number) {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`the server closed after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

/**
 * A client that offers username/password, sends `user` and `pass` (with
 * sub-negotiation version `subVersion`), and, when let in, a CONNECT to
 * 10.0.0.1:80. Returns the auth status and what socksAccept() gave back.
 */
async function authenticate(
  auth: { username: string; password: string },
  user: string,
  pass: string,
  subVersion = 1,
): Promise<{ status: number; accepted: boolean }> {
  const [client, server] = memoryConnPair(64);
  const accepting = socksAccept(server, auth);
  await writeAll(client, new Uint8Array([5, 1, 2]));
  assert.deepEqual([...await readExactly(client, 2)], [5, 2]);
  const u = encoder.encode(user);
  const p = encoder.encode(pass);
  await writeAll(client, new Uint8Array([subVersion, u.length, ...u, p.length, ...p]));
  const [version, status] = await readExactly(client, 2);
  assert.equal(version, 1);
  if (status === 0) await writeAll(client, new Uint8Array([5, 1, 0, 1, 10, 0, 0, 1, 0, 80]));
  try {
    const request = await accepting;
    assert.equal(`${request.host}:${request.port}`, "10.0.0.1:80");
    return { status, accepted: true };
  } catch (err) {
    assert.ok(err instanceof SocksError, String(err));
    assert.match(err.message, /wrong SOCKS username or password/);
    return { status, accepted: false };
  }
}

Deno.test("socksAccept() lets in only the right username and password together", async () => {
  const auth = { username: "alice", password: "s3cret pass" };
  const cases: [string, string, boolean][] = [
    ["alice", "s3cret pass", true],
    ["alice", "guess", false],
    ["mallory", "s3cret pass", false],
    ["mallory", "guess", false],
    ["alic", "s3cret pass", false],
    ["alice", "s3cret pass!", false],
    ["", "", false],
    // The fields are compared together, not as one joined string.
    ["alices3cret", " pass", false],
    ["alice", "", false],
  ];
  for (const [user, pass, ok] of cases) {
    const got = await authenticate(auth, user, pass);
    assert.deepEqual(got, { status: ok ? 0 : 1, accepted: ok }, `${user}/${pass}`);
  }
  const badVersion = await authenticate(auth, "alice", "s3cret pass", 2);
  assert.deepEqual(badVersion, { status: 1, accepted: false }, "sub-negotiation version 2");
});

Deno.test("socksAccept() compares the password even when the username is already wrong", async () => {
  // A comparison that stops at a wrong user name answers sooner than one
  // that goes on to the password, telling an attacker the name was wrong.
  let passwordReads = 0;
  const auth = {
    username: "alice",
    get password() {
      passwordReads++;
      return "s3cret pass";
    },
  };
  const got = await authenticate(auth, "mallory", "guess");
  assert.deepEqual(got, { status: 1, accepted: false });
  assert.equal(passwordReads, 1, "the password was not compared for a wrong user name");
});
