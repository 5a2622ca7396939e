/**
 * Hostile or hand-written peers for tests, one section per area.
 *
 * @module
 */

import { fakeDaemonLink, within } from "./_harness.ts";
import { encodeMessage } from "../lib/codec.ts";
import { signChallenge } from "../lib/identity.ts";
import { authTranscript, type Message, PROTOCOL_VERSION, Tag } from "../lib/protocol.ts";
import { MessageReader, sendNow } from "../lib/session.ts";
import type { SessionLink } from "../lib/tls.ts";

// --- memory limits: a Daemon waiting for acceptance that pings and never reads ---

/** A hand-written Daemon with a fresh identity, authenticated and told to wait (PENDING read). */
export interface PendingDaemon extends Disposable {
  readonly link: SessionLink;
  /** The Console's answer to AUTH. */
  readonly first: Message;
}

/**
 * Connect to `con` as a new Daemon, authenticate, and read the Console's
 * first answer; throws unless it is PENDING (start the Console without
 * auto-accept, trust or token).
 */
export async function pendingDaemon(
  con: { address: string; fingerprint: string },
): Promise<PendingDaemon> {
  const { identity, cert, link } = await fakeDaemonLink(con);
  try {
    const reader = new MessageReader(link);
    await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: [] });
    const challenge = await within(reader.next(), 10_000, "the CHALLENGE");
    if (challenge.tag !== Tag.CHALLENGE) {
      throw new Error(`Cannot authenticate: got tag ${challenge.tag}, not CHALLENGE`);
    }
    await sendNow(link, {
      tag: Tag.AUTH,
      host: "flood",
      user: "mallory",
      os: "linux",
      cert,
      signature: await signChallenge(
        identity,
        authTranscript(challenge.nonce, con.fingerprint),
      ),
      token: null,
    });
    const first = await within(reader.next(), 10_000, "the answer to AUTH");
    if (first.tag !== Tag.PENDING) {
      throw new Error(`Cannot wait for acceptance: got tag ${first.tag}, not PENDING`);
    }
    return {
      link,
      first,
      [Symbol.dispose]() {
        try {
          link.close();
        } catch {
          // Closed already.
        }
      },
    };
  } catch (err) {
    link.close();
    throw err;
  }
}

/** What {@linkcode floodPings} did. */
export interface FloodResult {
  /** Bytes of PING frames the link took. */
  readonly bytes: number;
  /** True when a write failed (the peer closed the link), false when `maxBytes` were sent. */
  readonly cut: boolean;
}

/**
 * Write PINGs on `link` as fast as it takes them and never read, until
 * `maxBytes` are sent or a write fails. Each write carries many PINGs.
 */
export async function floodPings(
  link: Pick<SessionLink, "write">,
  maxBytes: number,
): Promise<FloodResult> {
  let seq = 0;
  const batch = (): Uint8Array => {
    const frames = Array.from({ length: 2048 }, () => encodeMessage({ tag: Tag.PING, seq: ++seq }));
    const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      out.set(f, at);
      at += f.length;
    }
    return out;
  };
  let bytes = 0;
  try {
    while (bytes < maxBytes) {
      const chunk = batch();
      for (let off = 0; off < chunk.length;) off += await link.write(chunk.subarray(off));
      bytes += chunk.length;
    }
  } catch {
    return { bytes, cut: true };
  }
  return { bytes, cut: false };
}
