/**
 * The first steps of a Daemon's connection on the session port: TLS, the
 * HELLO/AUTH exchange, the proof of identity, and the check of what the
 * Daemon says about itself. What passes goes on to admission.
 *
 * @module
 */

import { closeQuietly, errorMessage, SessionClosedError } from "../core/errors.ts";
import { verifyChallenge } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import { authTranscript, daemonFactsProblem, type RejectCode, Tag } from "../core/protocol.ts";
import { consoleHandshake, type DaemonClaim, MessageReader, sendNow } from "../core/session.ts";
import type { FrontConn, FrontLink } from "./front.ts";

/** A Daemon that proved its identity. */
export interface AuthenticatedLink {
  readonly conn: FrontConn;
  readonly remote: string;
  readonly reader: MessageReader;
  readonly claim: DaemonClaim;
  /** The Daemon's identity fingerprint, proven. */
  readonly fingerprint: string;
}

/** Options for {@linkcode authenticateLink}. */
export interface AuthenticateOptions {
  /** This Console's fingerprint, which the Daemon's proof names. */
  readonly fingerprint: string;
  readonly log: Logger;
}

/**
 * Take a link through TLS and the handshake. Resolves with the
 * authenticated Daemon, or null when the link failed or was refused (logged
 * and closed here).
 *
 * @example
 * ```ts ignore
 * const daemon = await authenticateLink(link, { fingerprint, log });
 * ```
 */
export async function authenticateLink(
  link: FrontLink,
  options: AuthenticateOptions,
): Promise<AuthenticatedLink | null> {
  const { conn, remote } = link;
  const { log } = options;
  let helloSeen = false;
  let reader: MessageReader;
  let claim: DaemonClaim;
  let fingerprint: string;
  try {
    // The front cuts the public socket at the deadline; every await here then fails.
    await conn.handshake();
    reader = new MessageReader(conn);
    claim = await consoleHandshake(conn, reader, () => (helloSeen = true));
    fingerprint = await verifyChallenge(
      claim.cert,
      claim.signature,
      authTranscript(claim.nonce, options.fingerprint),
    );
  } catch (err) {
    // Lets the public socket go once what we sent (a REJECT saying why) has left.
    closeQuietly(conn);
    logFailedAttempt(log, remote, err, helloSeen);
    return null;
  }
  link.settle();
  const problem = daemonFactsProblem(claim);
  if (problem !== null) {
    // What the operator would see must be plain text; the log line escapes the values.
    log.warn("session refused: the Daemon's host, user or OS breaks the protocol", {
      remote,
      fingerprint,
      problem,
      host: claim.host,
      user: claim.user,
      os: claim.os,
    });
    await refuse(conn, "protocol", `${problem}: upgrade the Daemon`);
    return null;
  }
  return { conn, remote, reader, claim, fingerprint };
}

function logFailedAttempt(log: Logger, remote: string, err: unknown, helloSeen: boolean): void {
  if (
    !helloSeen &&
    (err instanceof SessionClosedError ||
      err instanceof Deno.errors.ConnectionReset ||
      /close_notify|unexpected ?eof|connection reset/i.test(errorMessage(err)))
  ) {
    // A Daemon fetching our certificate to check its pin closes right after TLS.
    log.debug("connection closed after TLS without a hello (a Daemon's pin probe)", { remote });
  } else {
    log.warn("session attempt failed", { remote, error: errorMessage(err) });
  }
}

/** Tell a Daemon no (best effort), then let its connection go. */
export async function refuse(conn: FrontConn, code: RejectCode, reason: string): Promise<void> {
  try {
    await sendNow(conn, { tag: Tag.REJECT, code, reason });
  } catch {
    // The peer is gone already.
  }
  closeQuietly(conn);
}
