/**
 * The one wire definition of portferry: version, frame layout, message tags,
 * message shapes, limits, and which side may send what.
 *
 * A session is one TLS connection from the Daemon to the Console. On it,
 * every frame is
 *
 * ```
 * u32 length (of tag + stream + body, big-endian) | u8 tag | u32 stream | body
 * ```
 *
 * Hot-path frames (`DATA`, `WINDOW`, `FIN`) carry a raw or fixed binary body;
 * every other frame carries a UTF-8 JSON object body. The codec
 * (`codec.ts`) is the only code that turns these into bytes and back.
 *
 * @module
 */

/** Wire version. A peer with another version is refused with a clear message. */
export const PROTOCOL_VERSION = 1;

/** Bytes before the body: u32 length + u8 tag + u32 stream. */
export const FRAME_HEADER_BYTES = 9;

/** Largest DATA body a sender may put in one frame. */
export const MAX_DATA_BYTES = 64 * 1024;

/** Largest frame (tag + stream + body) accepted after authentication. */
export const MAX_FRAME_BYTES: number = MAX_DATA_BYTES + 5;

/** Largest frame accepted before the peer has been authenticated. */
export const MAX_HANDSHAKE_FRAME_BYTES = 16 * 1024;

/** Largest JSON control body, in bytes, at any time. */
export const MAX_CONTROL_BYTES = 16 * 1024;

/** Deadline for TLS + hello + auth, counted from the TCP accept. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Most TLS handshakes the Console runs at once before it sheds new ones. */
export const MAX_PENDING_HANDSHAKES = 64;

/**
 * Most of those handshakes one source may hold, so one address cannot fill
 * them all. A source is an IPv4 address, or an IPv6 /64 (one host's usual share).
 */
export const MAX_PENDING_HANDSHAKES_PER_SOURCE = 8;

/** Interval between heartbeats when the link is otherwise quiet. */
export const HEARTBEAT_MS = 4_000;

/** A peer silent for this long is declared dead. */
export const DEAD_PEER_MS = 12_000;

/** Credit a stream starts with, each way, in bytes. */
export const INITIAL_WINDOW_BYTES = 512 * 1024;

/**
 * Default of the largest receive window one stream grows to (settings
 * `streamWindowMax`), when both sides offer `window-tuning`.
 */
export const STREAM_WINDOW_MAX_BYTES = 16 * 1024 * 1024;

/**
 * The largest `streamWindowMax` accepted. A sender refuses credit beyond
 * twice this, as a peer that grants so much is broken.
 */
export const STREAM_WINDOW_LIMIT_BYTES = 1024 * 1024 * 1024;

/** Largest UDP datagram carried (the IPv4 UDP payload limit). */
export const MAX_DATAGRAM_BYTES = 65_507;

/** Most UDP flows one UDP PFO keeps at once. */
export const MAX_UDP_FLOWS_PER_PFO = 1024;

/** A UDP flow with no datagram either way for this long is closed. */
export const UDP_IDLE_MS = 60_000;

/**
 * A forwarded connection with one direction finished (a FIN passed) and no
 * byte either way for this long is reset on both sides, so a target or
 * client that never closes its side leaves no socket in CLOSE_WAIT.
 */
export const HALF_CLOSED_IDLE_MS = 120_000;

/** Most streams open at once in one session. */
export const MAX_STREAMS = 16_384;

/**
 * Default of the most bytes one session holds for its peer: early data for
 * streams whose target is still being reached, and bytes received on
 * streams and not yet taken by their local socket. Over it, new opens are
 * refused with code `limit`; open streams carry on.
 */
export const MAX_HELD_BYTES = 64 * 1024 * 1024;

/** How long a Daemon may wait for the Console operator's answer (`pendingTimeoutMs`). */
export const PENDING_TIMEOUT_MS = 600_000;

/**
 * What a Daemon still waiting for acceptance may send the Console, for a
 * pending timeout of `timeoutMs`: room for a heartbeat each way every
 * {@linkcode HEARTBEAT_MS} (a waiting Daemon only answers pings) and a few
 * other messages. Over it, the Console drops the Daemon.
 *
 * @example
 * ```ts
 * import { pendingBudget } from "./protocol.ts";
 * const { messages, bytes } = pendingBudget(600_000);
 * if (messages !== 364 || bytes !== 35_584) throw new Error(`${messages} ${bytes}`);
 * ```
 */
export function pendingBudget(timeoutMs: number): { messages: number; bytes: number } {
  const beats = Math.ceil(timeoutMs / HEARTBEAT_MS);
  return { messages: 64 + 2 * beats, bytes: 16 * 1024 + 2 * beats * 64 };
}

/** Longest chat message, in characters. */
export const MAX_CHAT_CHARS = 4096;

/** Longest host name accepted in an open or a resolve request. */
export const MAX_HOST_CHARS = 253;

/**
 * A session id, as the Console makes it (4 random bytes in hex) and a
 * Daemon accepts it: both sides log it, so nothing else is taken.
 */
export const SESSION_ID_PATTERN: RegExp = /^[0-9a-f]{8}$/;

/** What a Daemon says about itself in AUTH; the Console operator sees it. */
export interface DaemonFacts {
  /** Host name of the Daemon's computer. */
  readonly host: string;
  /** User the Daemon runs as. */
  readonly user: string;
  /** Operating system of the Daemon's computer. */
  readonly os: string;
}

/** Characters a user name may hold: letters of any script, digits, and these. */
const USER_PUNCT = "._@\\\\$'-";

/**
 * The character set and length of each AUTH fact. A Console refuses a
 * Daemon whose facts break them (REJECT `protocol`); a Daemon sends only
 * values that fit ({@linkcode sanitizeDaemonFacts}).
 * - `host`: a host name: ASCII letters, digits, `.`, `_`, `-`; 1..253.
 * - `user`: letters (any script), digits, `. _ @ \ $ ' -` and inner spaces,
 *   so `ann`, `CORP\ann`, `ann@corp.example`, `DESKTOP-1$`, `José Díaz` fit; 1..128.
 * - `os`: lower-case ASCII letters and digits (`Deno.build.os`); 1..32.
 */
export const DAEMON_FACT_RULES: Readonly<
  Record<
    keyof DaemonFacts,
    { readonly pattern: RegExp; readonly maxChars: number; readonly what: string }
  >
> = {
  host: {
    pattern: /^[A-Za-z0-9._-]+$/,
    maxChars: MAX_HOST_CHARS,
    what: 'a host name: letters, digits, ".", "_" and "-"',
  },
  user: {
    pattern: new RegExp(
      `^[\\p{L}\\p{Nd}${USER_PUNCT}](?:[\\p{L}\\p{Nd} ${USER_PUNCT}]*[\\p{L}\\p{Nd}${USER_PUNCT}])?$`,
      "u",
    ),
    maxChars: 128,
    what: "a user name: letters, digits, spaces inside, and . _ @ \\ $ ' -",
  },
  os: { pattern: /^[a-z0-9]+$/, maxChars: 32, what: "lower-case letters and digits" },
};

/**
 * What is wrong with a Daemon's AUTH facts, or null when they fit
 * {@linkcode DAEMON_FACT_RULES}. The answer never quotes the value.
 *
 * @example
 * ```ts
 * import { daemonFactsProblem } from "./protocol.ts";
 * if (daemonFactsProblem({ host: "db01", user: "CORP\\ann", os: "windows" }) !== null) throw new Error("fits");
 * if (daemonFactsProblem({ host: "db01\x1b[2J", user: "ann", os: "linux" }) === null) throw new Error("breaks");
 * ```
 */
export function daemonFactsProblem(facts: DaemonFacts): string | null {
  for (const key of ["host", "user", "os"] as const) {
    const rule = DAEMON_FACT_RULES[key];
    const value = facts[key];
    if (value.length === 0 || value.length > rule.maxChars || !rule.pattern.test(value)) {
      return `the Daemon's ${key} must be 1..${rule.maxChars} characters of ${rule.what}`;
    }
  }
  return null;
}

/**
 * A Daemon's own facts made to fit {@linkcode DAEMON_FACT_RULES}: other
 * characters become `-` (host) or `_` (user), or are dropped (os); an
 * empty result becomes `unknown`.
 *
 * @example
 * ```ts
 * import { sanitizeDaemonFacts } from "./protocol.ts";
 * const facts = sanitizeDaemonFacts({ host: "café.lan", user: " ann\n", os: "Linux" });
 * if (facts.host !== "caf-.lan" || facts.user !== "ann_" || facts.os !== "linux") throw new Error(JSON.stringify(facts));
 * ```
 */
export function sanitizeDaemonFacts(facts: DaemonFacts): DaemonFacts {
  const fit = (value: string, key: keyof DaemonFacts, allowed: RegExp, by: string) => {
    const kept = Array.from(value, (ch) => (allowed.test(ch) ? ch : by)).join("")
      .trim().slice(0, DAEMON_FACT_RULES[key].maxChars).trim();
    return kept === "" ? "unknown" : kept;
  };
  return {
    host: fit(facts.host, "host", /[A-Za-z0-9._-]/, "-"),
    user: fit(facts.user, "user", new RegExp(`[\\p{L}\\p{Nd} ${USER_PUNCT}]`, "u"), "_"),
    os: fit(facts.os.toLowerCase(), "os", /[a-z0-9]/, ""),
  };
}

/** Frame tags. The numbers are the wire; never reuse one. */
export const Tag = {
  /** Daemon → Console, first frame: version and capabilities. */
  HELLO: 1,
  /** Console → Daemon: version, capabilities and the challenge to sign. */
  CHALLENGE: 2,
  /** Daemon → Console: who it is, its certificate, the signed challenge, the token. */
  AUTH: 3,
  /** Console → Daemon: authenticated, now waiting for the operator. */
  PENDING: 4,
  /** Console → Daemon: the session is established. */
  ACCEPT: 5,
  /** Console → Daemon: refused, with a code and a reason; the link closes after it. */
  REJECT: 6,
  /** Console → Daemon: open a stream to a target. */
  OPEN: 7,
  /** Daemon → Console: the stream's target is connected. */
  OPEN_OK: 8,
  /** Daemon → Console: the stream's target could not be reached. */
  OPEN_ERR: 9,
  /** Either way: stream bytes (raw body). */
  DATA: 10,
  /** Either way: more credit for a stream (u32 body). */
  WINDOW: 11,
  /** Either way: no more bytes on this stream in this direction (empty body). */
  FIN: 12,
  /** Either way: the stream is gone, drop it now. */
  RESET: 13,
  /** Either way: a chat message. */
  CHAT: 14,
  /** Console → Daemon: resolve a host name with the Daemon's resolver. */
  RESOLVE: 15,
  /** Daemon → Console: the answer to a resolve. */
  RESOLVE_RESULT: 16,
  /** Either way: heartbeat request. */
  PING: 17,
  /** Either way: heartbeat answer. */
  PONG: 18,
  /** Either way: the session ends, with a reason. */
  CLOSE: 19,
  /** Either way: one whole UDP datagram of a UDP flow (raw body, may be empty). */
  DATAGRAM: 20,
} as const;

/** A frame tag value. */
export type TagValue = typeof Tag[keyof typeof Tag];

/** Coded reasons a Console gives when it refuses a Daemon. */
export const REJECT_CODES = [
  "version",
  "token",
  "rejected",
  "busy",
  "identity",
  "protocol",
  "untrusted",
] as const;

/** A coded reason a Console gives when it refuses a Daemon. */
export type RejectCode = typeof REJECT_CODES[number];

/** Coded reasons a Daemon gives when a stream's target cannot be reached. */
export const OPEN_ERROR_CODES = [
  "refused",
  "timeout",
  "unresolvable",
  "unreachable",
  "not-allowed",
  "limit",
  "error",
] as const;

/** A coded reason a Daemon gives when a stream's target cannot be reached. */
export type OpenErrorCode = typeof OPEN_ERROR_CODES[number];

/** Coded reasons for the end of a session. */
export const CLOSE_CODES = [
  "closed",
  "exit",
  "replaced",
  "protocol",
  "dead-peer",
  "untrusted",
] as const;

/** A coded reason for the end of a session. */
export type CloseCode = typeof CLOSE_CODES[number];

/** Stream protocols an OPEN may ask for. */
export const STREAM_PROTOS = ["tcp", "udp"] as const;

/** Daemon → Console, first frame. */
export interface HelloMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.HELLO;
  /** The protocol version the sender speaks. */
  readonly version: number;
  /** Optional features the sender supports (see `CAPABILITIES`). */
  readonly capabilities: readonly string[];
}

/** Console → Daemon, answer to hello. */
export interface ChallengeMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.CHALLENGE;
  /** The protocol version the sender speaks. */
  readonly version: number;
  /** Optional features the sender supports (see `CAPABILITIES`). */
  readonly capabilities: readonly string[];
  /** Base64 of 32 random bytes the Daemon signs. */
  readonly nonce: string;
}

/** Daemon → Console: identity proof and the facts the operator sees. */
export interface AuthMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.AUTH;
  /** Host name of the Daemon's computer. */
  readonly host: string;
  /** User the Daemon runs as. */
  readonly user: string;
  /** Operating system of the Daemon's computer. */
  readonly os: string;
  /** Base64 of the Daemon's certificate DER. */
  readonly cert: string;
  /** Base64 signature over `authTranscript(nonce, consoleFingerprint)`. */
  readonly signature: string;
  /** The shared token, or null. Sent only after the Console's pin was checked. */
  readonly token: string | null;
}

/** Console → Daemon: waiting for the operator. */
export interface PendingMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.PENDING;
}

/** Console → Daemon: established. */
export interface AcceptMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.ACCEPT;
  /** Short id for logs on both sides. */
  readonly session: string;
}

/** Console → Daemon: refused. */
export interface RejectMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.REJECT;
  /** Why the session was refused, for exit codes and display. */
  readonly code: RejectCode;
  /** The reason in words, for the operator. */
  readonly reason: string;
}

/** Console → Daemon: open a stream to `host:port` with the Daemon's resolver. */
export interface OpenMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.OPEN;
  /** The new stream's id, chosen by the Console. */
  readonly stream: number;
  /** A TCP stream or a UDP flow. */
  readonly proto: typeof STREAM_PROTOS[number];
  /** Target host name or address, resolved on the Daemon's side. */
  readonly host: string;
  /** Target port. */
  readonly port: number;
  /** PFO name, for the Daemon's display. */
  readonly pfo: string;
  /** Console-side client address, for the Daemon's display. */
  readonly client: string;
}

/** Daemon → Console: the target is connected. */
export interface OpenOkMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.OPEN_OK;
  /** The stream this is for. */
  readonly stream: number;
  /** The address the Daemon actually connected to. */
  readonly address: string;
}

/** Daemon → Console: the target could not be reached. */
export interface OpenErrMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.OPEN_ERR;
  /** The stream this is for. */
  readonly stream: number;
  /** Why the target could not be reached. */
  readonly code: OpenErrorCode;
  /** The reason in words, for the operator. */
  readonly reason: string;
}

/** Either way: stream bytes. */
export interface DataMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.DATA;
  /** The stream this is for. */
  readonly stream: number;
  /** Stream bytes, at most `MAX_DATA_BYTES`. */
  readonly data: Uint8Array;
}

/** Either way: more credit. */
export interface WindowMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.WINDOW;
  /** The stream this is for. */
  readonly stream: number;
  /** Bytes the receiver may now send beyond its earlier credit. */
  readonly credit: number;
}

/** Either way: half-close of one direction. */
export interface FinMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.FIN;
  /** The stream this is for. */
  readonly stream: number;
}

/** Either way: the stream is aborted. */
export interface ResetMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.RESET;
  /** The stream this is for. */
  readonly stream: number;
  /** Why the stream was aborted, for logs. */
  readonly reason: string;
}

/** Either way: chat. */
export interface ChatMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.CHAT;
  /** The text as typed; escape it before it reaches a terminal or log. */
  readonly text: string;
}

/** Console → Daemon: resolve a host name. */
export interface ResolveMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.RESOLVE;
  /** Request id, to match the answer. */
  readonly id: number;
  /** The host name to resolve. */
  readonly host: string;
}

/** Daemon → Console: the resolved addresses, or an error. */
export interface ResolveResultMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.RESOLVE_RESULT;
  /** The id of the RESOLVE this answers. */
  readonly id: number;
  /** The addresses the name resolved to; empty on error. */
  readonly addresses: readonly string[];
  /** Why the name could not be resolved, or null. */
  readonly error: string | null;
}

/** Either way: one UDP datagram of flow `stream`. */
export interface DatagramMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.DATAGRAM;
  /** The UDP flow's stream id. */
  readonly stream: number;
  /** The datagram's payload. */
  readonly data: Uint8Array;
}

/** Either way: heartbeat. */
export interface PingMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.PING;
  /** Sequence number, echoed by the PONG. */
  readonly seq: number;
}

/** Either way: heartbeat answer. */
export interface PongMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.PONG;
  /** The sequence number of the PING this answers. */
  readonly seq: number;
}

/** Either way: the session ends. */
export interface CloseMessage {
  /** Which message this is. */
  readonly tag: typeof Tag.CLOSE;
  /** Why the session ends. */
  readonly code: CloseCode;
  /** The reason in words, for the operator. */
  readonly reason: string;
  /** True when the Daemon should not reconnect (the Console operator closed it on purpose). */
  readonly final: boolean;
}

/** Every message that can cross the wire. */
export type Message =
  | HelloMessage
  | ChallengeMessage
  | AuthMessage
  | PendingMessage
  | AcceptMessage
  | RejectMessage
  | OpenMessage
  | OpenOkMessage
  | OpenErrMessage
  | DataMessage
  | WindowMessage
  | FinMessage
  | ResetMessage
  | ChatMessage
  | ResolveMessage
  | ResolveResultMessage
  | PingMessage
  | PongMessage
  | CloseMessage
  | DatagramMessage;

/** Which program: the side that sends a message, or whose identity it is. */
export type Role = "console" | "daemon";

/**
 * What each side may send. A receiver closes the session when a peer sends a
 * tag its role may not: this table is how the promise "no remote control, no
 * command execution, no file access" is kept on the wire.
 */
export const SENDERS: Readonly<Record<TagValue, readonly Role[]>> = {
  [Tag.HELLO]: ["daemon"],
  [Tag.CHALLENGE]: ["console"],
  [Tag.AUTH]: ["daemon"],
  [Tag.PENDING]: ["console"],
  [Tag.ACCEPT]: ["console"],
  [Tag.REJECT]: ["console"],
  [Tag.OPEN]: ["console"],
  [Tag.OPEN_OK]: ["daemon"],
  [Tag.OPEN_ERR]: ["daemon"],
  [Tag.DATA]: ["console", "daemon"],
  [Tag.WINDOW]: ["console", "daemon"],
  [Tag.FIN]: ["console", "daemon"],
  [Tag.RESET]: ["console", "daemon"],
  [Tag.CHAT]: ["console", "daemon"],
  [Tag.RESOLVE]: ["console"],
  [Tag.RESOLVE_RESULT]: ["daemon"],
  [Tag.PING]: ["console", "daemon"],
  [Tag.PONG]: ["console", "daemon"],
  [Tag.CLOSE]: ["console", "daemon"],
  [Tag.DATAGRAM]: ["console", "daemon"],
};

/**
 * Capabilities this build offers in hello/challenge.
 * - `early-data`: a Daemon that offers it holds DATA and FIN that follow an
 *   OPEN before its OPEN_OK (up to the stream's initial window) and passes
 *   them on once the target is reached, or drops them with OPEN_ERR. A
 *   Console sends early only to a Daemon that offers it: a client that
 *   speaks first then waits one round trip less.
 * - `window-tuning`: this side may grow a stream's receive window beyond
 *   {@linkcode INITIAL_WINDOW_BYTES} (by granting extra credit) when the
 *   stream uses its credit up in about a round trip. Only when both sides
 *   offer it; with an older peer every window stays fixed.
 */
export const CAPABILITIES: readonly string[] = ["tcp", "udp", "early-data", "window-tuning"];

/**
 * The bytes a Daemon signs to prove its identity key: a fixed context, the
 * Console's fingerprint (so a proof cannot be replayed to another Console)
 * and the Console's fresh nonce.
 *
 * @example
 * ```ts
 * import { authTranscript } from "./protocol.ts";
 * const bytes = authTranscript("bm9uY2U", "SHA256:abc");
 * if (bytes.length === 0) throw new Error("empty transcript");
 * ```
 */
export function authTranscript(nonce: string, consoleFingerprint: string): Uint8Array {
  return new TextEncoder().encode(
    `portferry-auth-v${PROTOCOL_VERSION}\n${consoleFingerprint}\n${nonce}`,
  );
}
