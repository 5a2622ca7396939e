/**
 * The handshake on each side, after TLS: the Daemon's hello, the Console's
 * challenge, the Daemon's signed auth, then accept or reject.
 *
 * @module
 */

import { tagName } from "./codec.ts";
import { HandshakeError, ProtocolError } from "./errors.ts";
import { type MessageReader, sendNow } from "./frames.ts";
import type { ByteConn } from "./mux.ts";
import {
  authTranscript,
  CAPABILITIES,
  type ChallengeMessage,
  type Message,
  PROTOCOL_VERSION,
  Tag,
} from "./protocol.ts";
import { escapeControls } from "./text.ts";

/** The message `msg` as a `tag`, or a ProtocolError saying what came instead. */
function expectTag<T extends Message["tag"]>(
  msg: Message,
  tag: T,
  during: string,
): Extract<Message, { tag: T }> {
  if (msg.tag !== tag) {
    throw new ProtocolError(`Cannot ${during}: expected ${tagName(tag)}, got ${tagName(msg.tag)}`);
  }
  return msg as Extract<Message, { tag: T }>;
}

/** What the Console learns from a Daemon's hello and auth. */
export interface DaemonClaim {
  /** Host name of the Daemon's computer, as it claims. */
  readonly host: string;
  /** User the Daemon runs as, as it claims. */
  readonly user: string;
  /** Operating system of the Daemon's computer, as it claims. */
  readonly os: string;
  /** Base64 certificate DER. */
  readonly cert: string;
  /** Base64 signature the Daemon made over the auth transcript. */
  readonly signature: string;
  /** The shared token the Daemon sent, or null. */
  readonly token: string | null;
  /** The nonce the signature must cover. */
  readonly nonce: string;
  /** What the Daemon offered in its hello. */
  readonly capabilities: readonly string[];
}

/**
 * Console side of the handshake, after TLS: read hello, check the version,
 * send the challenge, read auth. The caller verifies the signature and
 * decides to accept, hold pending or reject.
 *
 * @example
 * ```ts ignore
 * const reader = new MessageReader(tlsConn);
 * const claim = await consoleHandshake(tlsConn, reader);
 * ```
 */
export async function consoleHandshake(
  link: ByteConn,
  reader: MessageReader,
  onHello?: () => void,
): Promise<DaemonClaim> {
  const hello = expectTag(await reader.next(), Tag.HELLO, "start session");
  onHello?.();
  if (hello.version !== PROTOCOL_VERSION) {
    const reason = hello.version > PROTOCOL_VERSION
      ? `the Daemon speaks protocol v${hello.version}, this Console speaks v${PROTOCOL_VERSION}: upgrade the Console`
      : `the Daemon speaks protocol v${hello.version}, this Console speaks v${PROTOCOL_VERSION}: upgrade the Daemon`;
    await sendNow(link, { tag: Tag.REJECT, code: "version", reason });
    throw new HandshakeError("version", `Cannot start session: ${reason}`);
  }
  const nonce = crypto.getRandomValues(new Uint8Array(32)).toBase64({ omitPadding: true });
  await sendNow(link, {
    tag: Tag.CHALLENGE,
    version: PROTOCOL_VERSION,
    capabilities: CAPABILITIES,
    nonce,
  });
  const auth = expectTag(await reader.next(), Tag.AUTH, "authenticate Daemon");
  return { ...auth, nonce, capabilities: hello.capabilities };
}

/** Options for {@linkcode daemonHandshake}. */
export interface DaemonHandshakeOptions {
  /** The pinned Console fingerprint; it has been checked by the TLS layer. */
  readonly consoleFingerprint: string;
  /** Base64 of this Daemon's certificate DER. */
  readonly cert: string;
  /** Signs the auth transcript with this Daemon's identity key. */
  readonly sign: (data: Uint8Array) => Promise<string>;
  /** The shared token to send, or null. */
  readonly token: string | null;
  /** Host name of this computer, for the Console operator. */
  readonly host: string;
  /** User this Daemon runs as, for the Console operator. */
  readonly user: string;
  /** Operating system of this computer, for the Console operator. */
  readonly os: string;
  /** Called when the Console holds the session for the operator. */
  readonly onPending: () => void;
  /** Called with what the Console offered in its challenge. */
  readonly onCapabilities?: (capabilities: readonly string[]) => void;
}

/**
 * Daemon side of the handshake, after TLS and the pin check: hello, sign the
 * challenge, then wait for accept or reject. Answers heartbeats while it waits.
 * Returns the session id the Console gave.
 *
 * @example
 * ```ts ignore
 * const id = await daemonHandshake(link, reader, { consoleFingerprint, cert, sign, token: null, host, user, os, onPending });
 * ```
 */
export async function daemonHandshake(
  link: ByteConn,
  reader: MessageReader,
  options: DaemonHandshakeOptions,
): Promise<string> {
  await sendNow(link, { tag: Tag.HELLO, version: PROTOCOL_VERSION, capabilities: CAPABILITIES });
  const first = await reader.next();
  if (first.tag === Tag.REJECT) {
    throw new HandshakeError(
      first.code,
      `Console refused the session: ${escapeControls(first.reason)}`,
    );
  }
  const challenge: ChallengeMessage = expectTag(first, Tag.CHALLENGE, "start session");
  if (challenge.version !== PROTOCOL_VERSION) {
    throw new HandshakeError(
      "version",
      `Cannot start session: the Console speaks protocol v${challenge.version}, this Daemon speaks v${PROTOCOL_VERSION}: upgrade the ${
        challenge.version > PROTOCOL_VERSION ? "Daemon" : "Console"
      }`,
    );
  }
  options.onCapabilities?.(challenge.capabilities);
  const signature = await options.sign(authTranscript(challenge.nonce, options.consoleFingerprint));
  await sendNow(link, {
    tag: Tag.AUTH,
    host: options.host,
    user: options.user,
    os: options.os,
    cert: options.cert,
    signature,
    token: options.token,
  });
  return await _awaitAcceptance(link, reader, () => options.onPending());
}

/**
 * Daemon: after AUTH, wait for the Console's ACCEPT (the session id), saying
 * so when it holds the session for its operator and answering heartbeats.
 */
async function _awaitAcceptance(
  link: ByteConn,
  reader: MessageReader,
  onPending: () => void,
): Promise<string> {
  while (true) {
    const msg = await reader.next();
    switch (msg.tag) {
      case Tag.PENDING:
        onPending();
        break;
      case Tag.PING:
        await sendNow(link, { tag: Tag.PONG, seq: msg.seq });
        break;
      case Tag.ACCEPT:
        reader.trust();
        return msg.session;
      case Tag.REJECT:
        throw new HandshakeError(
          msg.code,
          `Console refused the session: ${escapeControls(msg.reason)}`,
        );
      case Tag.CLOSE:
        throw new HandshakeError(
          "closed",
          `Console closed the session: ${escapeControls(msg.reason)}`,
        );
      default:
        throw new ProtocolError(`Cannot wait for acceptance: unexpected ${tagName(msg.tag)}`);
    }
  }
}
