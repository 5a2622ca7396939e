/**
 * The Console's session port and what it prints once it serves: its
 * settings file, fingerprint, and the command the Daemon's user runs.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import type { Identity } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import {
  HANDSHAKE_TIMEOUT_MS,
  MAX_PENDING_HANDSHAKES,
  MAX_PENDING_HANDSHAKES_PER_SOURCE,
} from "../core/protocol.ts";
import { formatHostPort, type HostPort } from "../net/hostport.ts";
import type { TrustedProxies } from "../net/forwarded.ts";
import { type FrontLink, SessionFront } from "./front.ts";

/** The session port's WebSocket side (settings `websocketPath`, `trustedProxies`). */
export interface WebFront {
  readonly websocketPath?: string | null;
  readonly trustedProxies?: TrustedProxies;
}

/** The session port, serving. */
export interface ListeningFront {
  readonly front: SessionFront;
  /** The bound address, `host:port`. */
  readonly listen: string;
}

/**
 * Listen for Daemons on `addr`; each connection goes to `onLink`.
 *
 * @throws {Error} "Cannot listen for Daemons on ...", saying why.
 */
export function listenFront(
  addr: HostPort,
  identity: Identity,
  log: Logger,
  onLink: (link: FrontLink) => Promise<void>,
  web: WebFront = {},
): ListeningFront {
  let front: SessionFront;
  try {
    front = SessionFront.listen({
      hostname: addr.host,
      port: addr.port,
      identity,
      maxPending: MAX_PENDING_HANDSHAKES,
      maxPendingPerSource: MAX_PENDING_HANDSHAKES_PER_SOURCE,
      deadlineMs: HANDSHAKE_TIMEOUT_MS,
      onLink,
      log,
      websocketPath: web.websocketPath ?? null,
      trustedProxies: web.trustedProxies,
    });
  } catch (cause) {
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : errorMessage(cause);
    throw new Error(
      `Cannot listen for Daemons on ${formatHostPort(addr.host, addr.port)}: ${reason}`,
      { cause },
    );
  }
  return { front, listen: formatHostPort(front.addr.hostname, front.addr.port) };
}

/** What the banner shows. */
export interface BannerFacts {
  readonly settingsPath: string;
  readonly fingerprint: string;
  /** With `{address}` and `{fingerprint}` placeholders. */
  readonly daemonCommand: string;
  readonly bound: Deno.NetAddr;
  /** Whether Daemons need a token. */
  readonly token: boolean;
}

/**
 * The lines the Console prints once it serves.
 *
 * @example
 * ```ts
 * import { bannerLines } from "./banner.ts";
 * const lines = bannerLines({
 *   settingsPath: "c.yaml",
 *   fingerprint: "SHA256:x",
 *   daemonCommand: "daemon {address} --fingerprint {fingerprint}",
 *   bound: { transport: "tcp", hostname: "127.0.0.1", port: 7470 },
 *   token: false,
 * });
 * if (lines[4] !== "    daemon 127.0.0.1:7470 --fingerprint SHA256:x") throw new Error(lines[4]);
 * ```
 */
export function bannerLines(facts: BannerFacts): string[] {
  const { bound, fingerprint } = facts;
  const command = facts.daemonCommand
    .replace("{address}", daemonAddress(bound))
    .replace("{fingerprint}", fingerprint);
  return [
    `portferry Console`,
    `  settings:    ${facts.settingsPath}`,
    `  fingerprint: ${fingerprint}`,
    `  Daemon command (run it on the machine behind the firewall):`,
    `    ${command}${facts.token ? " --token-file TOKEN_FILE" : ""}`,
    `Console listening for Daemons on ${formatHostPort(bound.hostname, bound.port)}`,
  ];
}

/** Where the Daemon's user dials: this machine's name when bound to every interface. */
function daemonAddress(bound: Deno.NetAddr): string {
  if (bound.hostname !== "0.0.0.0" && bound.hostname !== "::") {
    return formatHostPort(bound.hostname, bound.port);
  }
  let host = "CONSOLE_HOST";
  try {
    host = Deno.hostname();
  } catch {
    // --allow-sys=hostname not granted: leave the placeholder.
  }
  return formatHostPort(host, bound.port);
}
