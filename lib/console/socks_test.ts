import assert from "node:assert/strict";
import { isIP } from "node:net";
import { memoryConnPair } from "../core/_memory_conn.ts";
import { writeAll } from "../core/mux.ts";
import {
  reply,
  socksAccept,
  SocksError,
  SocksReply,
  socksReplyFor,
  type SocksRequest,
} from "./socks.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Fails with `what` when `promise` is not settled within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

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

// --- greetings, requests and malformed input ------------------------------------

/** What the server wrote back, and what socksAccept() gave or threw. */
interface Exchange {
  readonly written: number[];
  readonly request?: SocksRequest;
  readonly error?: string;
}

/**
 * Feed `bytes` to socksAccept() through a pipe of `capacity` bytes, then end
 * the client's write side; collect the server's replies until it settles.
 */
async function exchange(
  bytes: number[],
  options: { auth?: { username: string; password: string }; capacity?: number } = {},
): Promise<Exchange> {
  const [client, server] = memoryConnPair(options.capacity ?? 1024);
  const accepting = socksAccept(server, options.auth ?? null).then(
    (request) => ({ request }),
    (err: unknown) => {
      assert.ok(err instanceof SocksError, `not a SocksError: ${err}`);
      return { error: err.message };
    },
  );
  // Replies are read as they come: a tiny pipe would otherwise block both ends.
  const written: number[] = [];
  const reading = (async () => {
    const buf = new Uint8Array(64);
    for (let n; (n = await client.read(buf)) !== null;) written.push(...buf.subarray(0, n));
  })();
  // What the server leaves unread fails the write once it closes.
  const writing = writeAll(client, new Uint8Array(bytes)).then(() => client.closeWrite()).catch(
    () => {},
  );
  const settled = await within(accepting, 5_000, "socksAccept() to settle");
  server.close();
  await Promise.all([writing, reading]);
  return { written, ...settled };
}

/** A CONNECT request with address type `atyp` and address bytes `addr`. */
function connect(atyp: number, addr: number[], port: number, cmd = 1): number[] {
  return [5, cmd, 0, atyp, ...addr, port >> 8, port & 0xff];
}

const NO_AUTH = [5, 1, 0];
const REPLY_NO_AUTH = [5, 0];

Deno.test("socksAccept() reads CONNECT to IPv4, IPv6 and a domain, leaving the name unresolved", async () => {
  const v4 = await exchange([...NO_AUTH, ...connect(1, [192, 168, 1, 20], 8080)]);
  assert.deepEqual(v4.written, REPLY_NO_AUTH);
  assert.deepEqual([v4.request?.host, v4.request?.port], ["192.168.1.20", 8080]);

  const v6Bytes = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd];
  const v6 = await exchange([...NO_AUTH, ...connect(4, v6Bytes, 443)]);
  assert.equal(isIP(v6.request?.host ?? ""), 6, String(v6.request?.host));
  assert.equal(new URL(`http://[${v6.request?.host}]/`).hostname, "[2001:db8::abcd]");
  assert.equal(v6.request?.port, 443);

  const name = encoder.encode("db.internal.example");
  const domain = await exchange([...NO_AUTH, ...connect(3, [name.length, ...name], 5432)]);
  assert.deepEqual([domain.request?.host, domain.request?.port], ["db.internal.example", 5432]);

  const longest = "a".repeat(63) + "." + "b".repeat(63) + "." + "c".repeat(63) + "." +
    "d".repeat(63);
  assert.equal(longest.length, 255);
  const long = await exchange([
    ...NO_AUTH,
    ...connect(3, [255, ...encoder.encode(longest)], 65535),
    0x47,
  ]);
  assert.deepEqual([long.request?.host, long.request?.port], [longest, 65535]);
  assert.deepEqual([...long.request?.early ?? []], [0x47], "the byte after the request");
});

Deno.test("socksAccept() reads a handshake that arrives one byte at a time and keeps early bytes", async () => {
  const got = await exchange(
    [5, 2, 1, 0, ...connect(1, [10, 0, 0, 1], 22), ...encoder.encode("SSH-2.0")],
    { capacity: 1 },
  );
  assert.deepEqual(got.written, REPLY_NO_AUTH);
  assert.equal(`${got.request?.host}:${got.request?.port}`, "10.0.0.1:22");
  // Early bytes are what was read past the request: at most all of them.
  assert.ok("SSH-2.0".startsWith(decoder.decode(got.request?.early)));
});

Deno.test("socksAccept() refuses a greeting with no acceptable method with 0xFF", async () => {
  const cases: [string, number[], { username: string; password: string } | undefined, RegExp][] = [
    ["no methods at all", [5, 0], undefined, /no acceptable method/],
    ["only username/password when none is set", [5, 1, 2], undefined, /no acceptable method/],
    ["only GSSAPI", [5, 1, 1], undefined, /no acceptable method/],
    [
      "only no-auth when a password is set",
      [5, 1, 0],
      { username: "u", password: "p" },
      /does not offer username/,
    ],
  ];
  for (const [what, bytes, auth, message] of cases) {
    const got = await exchange([...bytes, ...connect(1, [1, 2, 3, 4], 80)], { auth });
    assert.deepEqual(got.written, [5, 0xff], what);
    assert.match(got.error ?? "", message, what);
  }
});

Deno.test("socksAccept() rejects what is not SOCKS5 without a reply", async () => {
  for (const bytes of [[4, 1, 0, 80, 10, 0, 0, 1, 0], [0x47, 0x45, 0x54, 0x20]]) {
    const got = await exchange(bytes);
    assert.deepEqual(got.written, [], `replied to ${bytes}`);
    assert.match(got.error ?? "", /not a SOCKS5 client \(version byte \d+\)/);
  }
});

Deno.test("socksAccept() answers a bad request with the right reply code", async () => {
  const ok = REPLY_NO_AUTH;
  const failed = (code: number) => [...ok, 5, code, 0, 1, 0, 0, 0, 0, 0, 0];
  const cases: [string, number[], number[], RegExp][] = [
    ["BIND", connect(1, [1, 2, 3, 4], 80, 2), failed(0x07), /unsupported SOCKS command 2/],
    ["UDP ASSOCIATE", connect(1, [1, 2, 3, 4], 80, 3), failed(0x07), /command 3 \(only CONNECT\)/],
    ["address type 5", [5, 1, 0, 5, 1, 2, 3, 4, 0, 80], failed(0x08), /unsupported address type 5/],
    ["an empty domain", connect(3, [0], 80), failed(0x04), /empty domain name/],
    ["request version 4", [4, 1, 0, 1, 1, 2, 3, 4, 0, 80], ok, /bad SOCKS request version 4/],
  ];
  for (const [what, request, written, message] of cases) {
    const got = await exchange([...NO_AUTH, ...request]);
    assert.deepEqual(got.written, written, what);
    assert.match(got.error ?? "", message, what);
    assert.equal(got.request, undefined, what);
  }
});

Deno.test("socksAccept() fails cleanly on a handshake cut anywhere", async () => {
  const name = encoder.encode("example.org");
  const full = [...NO_AUTH, ...connect(3, [name.length, ...name], 443)];
  for (let cut = 0; cut < full.length; cut++) {
    const got = await exchange(full.slice(0, cut));
    assert.match(got.error ?? "", /closed the connection during the SOCKS handshake/, `${cut}`);
  }
  // A domain whose length byte promises more than ever comes.
  const truncated = await exchange([...NO_AUTH, 5, 1, 0, 3, 200, ...encoder.encode("short")]);
  assert.match(truncated.error ?? "", /closed the connection during the SOCKS handshake/);
  // Cut inside the username/password sub-negotiation.
  const auth = { username: "alice", password: "pw" };
  for (const bytes of [[5, 1, 2, 1], [5, 1, 2, 1, 5, 0x61], [5, 1, 2, 1, 1, 0x61, 9, 0x70]]) {
    const got = await exchange(bytes, { auth });
    assert.match(got.error ?? "", /closed the connection during the SOCKS handshake/, `${bytes}`);
  }
});

Deno.test("reply() encodes an IPv4 bound address, and zeros for none or any other", async () => {
  const cases: [string | undefined, number[]][] = [
    ["10.1.2.3:4567", [1, 10, 1, 2, 3, 0x11, 0xd7]],
    [undefined, [1, 0, 0, 0, 0, 0, 0]],
    ["[::1]:80", [1, 0, 0, 0, 0, 0, 0]],
  ];
  for (const [bound, tail] of cases) {
    const [client, server] = memoryConnPair();
    await reply(server, SocksReply.SUCCEEDED, bound);
    assert.deepEqual([...await readExactly(client, 10)], [5, 0, 0, ...tail], String(bound));
  }
});

Deno.test("socksReplyFor() maps each open failure to its SOCKS5 reply", () => {
  const table: [Parameters<typeof socksReplyFor>[0], number][] = [
    ["refused", 0x05],
    ["not-allowed", 0x02],
    ["unresolvable", 0x04],
    ["unreachable", 0x03],
    ["timeout", 0x06],
    ["error", 0x01],
  ];
  for (const [code, want] of table) assert.equal(socksReplyFor(code), want, code);
});
