/**
 * Hostile or hand-written peers for tests, one section per area.
 *
 * @module
 */

import { hostPort, tempDir, within } from "./_harness.ts";
import { type Identity, loadOrCreateIdentity, signChallenge } from "../lib/identity.ts";
import { authTranscript, type Message, PROTOCOL_VERSION, Tag } from "../lib/protocol.ts";
import { MessageReader, sendNow } from "../lib/session.ts";
import { settingsPaths } from "../lib/settings.ts";
import { connectPinned, type SessionLink } from "../lib/tls.ts";

// --- admission: a Daemon that keeps one identity and ignores "do not reconnect" ---

/** One hand-written Daemon session, past AUTH; PINGs are answered for it. */
export interface HandSession extends Disposable {
  /** The Console's first answer to AUTH: PENDING, ACCEPT or REJECT. */
  readonly first: Message;
  /** The next message other than a PING, or null once the Console closed the link. */
  next(ms?: number): Promise<Message | null>;
}

/** A Daemon identity the test speaks the wire protocol with, as often as it likes. */
export interface HandDaemon {
  readonly identity: Identity;
  readonly fingerprint: string;
  /** Connect, authenticate with this identity (and `token`), and return the session. */
  connect(token?: string | null): Promise<HandSession>;
}

/**
 * A Daemon written in the test with its own lasting identity: unlike a real
 * Daemon it reconnects whenever the test says so, whatever the Console said.
 */
export async function handDaemon(
  con: { address: string; fingerprint: string },
): Promise<HandDaemon> {
  const dir = await tempDir("pf-hand-daemon-");
  const paths = settingsPaths(`${dir}/portferry-daemon.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  const cert = btoa(String.fromCharCode(...identity.certDer));
  return {
    identity,
    fingerprint: identity.fingerprint,
    connect: async (token = null) => {
      const link = await connectPinned({
        ...hostPort(con.address),
        fingerprint: con.fingerprint,
        timeoutMs: 10_000,
      });
      try {
        return await authenticate(link, { identity, cert, token, console: con.fingerprint });
      } catch (err) {
        link.close();
        throw err;
      }
    },
  };
}

async function authenticate(
  link: SessionLink,
  a: { identity: Identity; cert: string; token: string | null; console: string },
): Promise<HandSession> {
  const reader = new MessageReader(link);
  await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
  const challenge = await within(reader.next(), 10_000, "the CHALLENGE");
  if (challenge.tag !== Tag.CHALLENGE) {
    throw new Error(`Cannot authenticate: got tag ${challenge.tag}, not CHALLENGE`);
  }
  await sendNow(link, {
    tag: Tag.AUTH,
    host: "hand-daemon",
    user: "tester",
    os: "linux",
    cert: a.cert,
    signature: await signChallenge(a.identity, authTranscript(challenge.nonce, a.console)),
    token: a.token,
  });
  const inbox: (Message | null)[] = [];
  let wake = () => {};
  const push = (m: Message | null) => {
    inbox.push(m);
    wake();
  };
  (async () => {
    try {
      while (true) {
        const msg = await reader.next();
        if (msg.tag === Tag.PING) await sendNow(link, { tag: Tag.PONG, seq: msg.seq });
        else push(msg);
      }
    } catch {
      push(null);
    }
  })();
  async function next(ms = 10_000): Promise<Message | null> {
    if (inbox.length === 0) {
      await within(new Promise<void>((r) => (wake = r)), ms, "a message from the Console");
    }
    const msg = inbox.shift()!;
    if (msg === null) inbox.unshift(null); // The end stays the end.
    return msg;
  }
  const first = await next();
  if (first === null) throw new Error("Cannot authenticate: the Console closed the link");
  return {
    first,
    next,
    [Symbol.dispose]: () => {
      try {
        link.close();
      } catch {
        // Closed already.
      }
    },
  };
}
