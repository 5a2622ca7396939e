/**
 * One dial to the Console: a pinned TLS connection, then the Daemon's side
 * of the handshake (identity proof, token, waiting for the operator), up to
 * a session id. The link is closed on any failure, and when `signal` aborts
 * before the session starts.
 *
 * @module
 */

import { userInfo } from "node:os";
import { closeQuietly, ProtocolError } from "../core/errors.ts";
import { type Identity, signChallenge } from "../core/identity.ts";
import type { ByteConn } from "../core/mux.ts";
import { sanitizeDaemonFacts, SESSION_ID_PATTERN } from "../core/protocol.ts";
import { daemonHandshake, MessageReader } from "../core/session.ts";
import { escapeControls } from "../core/text.ts";
import { connectPinned } from "../core/tls.ts";

/** Options for {@linkcode dialConsole}. */
export interface DialOptions {
  readonly host: string;
  readonly port: number;
  /** The pinned Console fingerprint. */
  readonly fingerprint: string;
  readonly connectTimeoutMs: number;
  readonly identity: Identity;
  readonly token: string | null;
  /** Called when the Console puts this Daemon to its operator. */
  readonly onPending: () => void;
  /** Called once connected, when the handshake starts. */
  readonly onHandshake: () => void;
  readonly signal: AbortSignal;
}

/** A link on which the Console accepted this Daemon. */
export interface Dialed {
  readonly link: ByteConn;
  readonly reader: MessageReader;
  /** The session id, checked. */
  readonly id: string;
  /** What the Console offered in its challenge. */
  readonly capabilities: readonly string[];
}

/**
 * Connect, prove who this Daemon is, and wait to be accepted. Throws
 * {@linkcode HandshakeError} (coded) or a connect error.
 *
 * @example
 * ```ts ignore
 * const { link, reader, id } = await dialConsole({ host, port, fingerprint, connectTimeoutMs, identity, token: null, onPending, onHandshake, signal });
 * ```
 */
export async function dialConsole(options: DialOptions): Promise<Dialed> {
  const { signal } = options;
  const link = await connectPinned({
    hostname: options.host,
    port: options.port,
    fingerprint: options.fingerprint,
    timeoutMs: options.connectTimeoutMs,
    signal,
  });
  const reader = new MessageReader(link);
  const abortLink = () => closeQuietly(link);
  signal.addEventListener("abort", abortLink, { once: true });
  try {
    options.onHandshake();
    const identity = options.identity;
    let capabilities: readonly string[] = [];
    const id = await daemonHandshake(link, reader, {
      onCapabilities: (offered) => (capabilities = offered),
      consoleFingerprint: options.fingerprint,
      cert: identity.certDer.toBase64(),
      sign: (data) => signChallenge(identity, data),
      token: options.token,
      ...whoAmI(),
      onPending: options.onPending,
    });
    if (!SESSION_ID_PATTERN.test(id)) {
      throw new ProtocolError(
        `Cannot start session: the Console's session id "${
          escapeControls(id.slice(0, 16))
        }" is not 8 hex digits`,
      );
    }
    return { link, reader, id, capabilities };
  } catch (err) {
    abortLink();
    throw err;
  } finally {
    signal.removeEventListener("abort", abortLink);
  }
}

/** This machine's name, user and OS, as the Console's operator is shown them. */
function whoAmI(): { host: string; user: string; os: string } {
  let host = "unknown";
  try {
    host = Deno.hostname();
  } catch {
    // --allow-sys=hostname not granted.
  }
  let user = "unknown";
  try {
    user = userInfo().username;
  } catch {
    // --allow-sys=uid,gid,userInfo not granted.
  }
  // The Console refuses facts outside the AUTH rules: send what fits.
  return sanitizeDaemonFacts({ host, user, os: Deno.build.os });
}
