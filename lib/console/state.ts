/**
 * The Console's state model: the one read-only snapshot every view reads
 * (`status --json`, `connections list`, the screen lines), and the events a
 * view subscribes to for changes.
 *
 * @module
 */

import type { ConnectionInfo, PfoStatus } from "./pfos.ts";
import { addDrops, dropTotals, udpDrops, type UdpDropTotals } from "../core/datagram.ts";

/** Session states as `status` shows them. */
export type SessionState = "none" | "pending" | "established" | "closing";

/** Who is on the other end. */
export interface PeerInfo {
  /** The Daemon's `host:port` as the Console sees the connection. */
  readonly address: string;
  /** Host name the Daemon reports (its claim, not checked). */
  readonly host: string;
  /** User the Daemon reports running as. */
  readonly user: string;
  /** Operating system the Daemon reports (`Deno.build.os`). */
  readonly os: string;
  /** The Daemon's proven certificate fingerprint (`SHA256:` + 43 base64 characters). */
  readonly fingerprint: string;
}

/** The session as `status` shows it. */
export interface SessionSnapshot {
  /** `none`, `pending` (waiting for the operator), `established` or `closing`. */
  readonly state: SessionState;
  /** The session id (8 hex digits) both sides log; null without a session. */
  readonly id: string | null;
  /** ISO 8601: when the session entered its state. */
  readonly since: string | null;
  /** The Daemon on the other end; null without a session. */
  readonly peer: PeerInfo | null;
  /** Streams (connections, flows) the session carries now. */
  readonly streams: number;
}

/** Rates over the last few seconds, per second. */
export interface Rates {
  /** Bytes per second from the targets to the clients. */
  readonly bytesInPerSecond: number;
  /** Bytes per second from the clients to the targets. */
  readonly bytesOutPerSecond: number;
  /** New connections (or UDP flows) per second. */
  readonly connectionsPerSecond: number;
}

/** One PFO: its status and counters, and its rates over the last few seconds. */
export interface PfoSnapshot extends PfoStatus {
  /** Its rates over the last few seconds. */
  readonly rates: Rates;
}

/** One trusted Daemon fingerprint, and where the trust comes from. */
export interface TrustEntry {
  /** The Daemon's certificate fingerprint (`SHA256:` + 43 base64 characters). */
  readonly fingerprint: string;
  /** `trust store` (accepted and remembered) or `settings` (listed in `trusted:`). */
  readonly source: "trust store" | "settings";
  /** Host name the Daemon reported when it was remembered (trust store only). */
  readonly host?: string;
  /** User the Daemon reported when it was remembered (trust store only). */
  readonly user?: string;
  /** ISO 8601: when it was remembered (trust store only). */
  readonly addedAt?: string;
}

/** One chat line, either way. */
export interface ChatLine {
  /** ISO 8601 time. */
  readonly at: string;
  /** Which side wrote it. */
  readonly from: "console" | "daemon";
  /** As sent: escape it before it reaches a terminal. */
  readonly text: string;
}

/** A PFO's client allow-list in force. The Daemon's own allow-list is the Daemon's. */
export interface ClientList {
  /** The PFO's name. */
  readonly pfo: string;
  /** The client addresses it allows (IPs or CIDRs). */
  readonly clients: readonly string[];
}

/** What `status --json` prints. */
export interface ConsoleStatus {
  /** The session, or its absence. */
  readonly session: SessionSnapshot;
  /** This Console's certificate fingerprint, which Daemons pin. */
  readonly fingerprint: string;
  /** The bound session address. */
  readonly listen: string;
  /** The settings file. */
  readonly settings: string;
  /**
   * Why the settings file on disk was refused (`file:line:column: message`),
   * while the Console keeps its running settings; null when the file is fine.
   */
  readonly settingsError: string | null;
  /** Every PFO, with its counters and rates. */
  readonly pfos: readonly PfoSnapshot[];
  /** UDP datagrams dropped by the PFOs configured now: the total and by where. */
  readonly udpDrops: UdpDropTotals;
}

/** Everything an operator can see of the Console, at one moment. */
export interface ConsoleSnapshot extends ConsoleStatus {
  /** Open connections and UDP flows, each with its counters. */
  readonly connections: readonly ConnectionInfo[];
  /** The Daemons trusted without asking. */
  readonly trust: readonly TrustEntry[];
  /** The client allow-lists of the PFOs that restrict their clients. */
  readonly allowList: readonly ClientList[];
  /** The last chat lines, oldest first. */
  readonly chat: readonly ChatLine[];
}

/** What changed on the Console, for a view. */
export type ConsoleEvent =
  | { readonly type: "session"; readonly session: SessionSnapshot }
  | { readonly type: "pfo"; readonly name: string; readonly pfo: PfoSnapshot | null }
  | { readonly type: "pfo-progress"; readonly pfo: PfoSnapshot }
  | { readonly type: "connection-opened"; readonly connection: ConnectionInfo }
  | { readonly type: "connection-progress"; readonly connection: ConnectionInfo }
  | { readonly type: "connection-closed"; readonly connection: ConnectionInfo }
  | { readonly type: "chat"; readonly line: ChatLine }
  | { readonly type: "warning"; readonly message: string }
  | { readonly type: "settings"; readonly settingsError: string | null };

/**
 * The UDP drops of `pfos` added up.
 * @example
 * ```ts
 * import { udpDropsOf } from "./state.ts";
 * if (udpDropsOf([]).total !== 0) throw new Error("no PFO, no drop");
 * ```
 */
export function udpDropsOf(pfos: readonly PfoStatus[]): UdpDropTotals {
  const sum = udpDrops();
  for (const p of pfos) if (p.udp) addDrops(sum, p.udp.dropped);
  return dropTotals(sum);
}

/** The PFO counters the Console's rates are measured on. */
export type PfoCounterName = "bytesIn" | "bytesOut" | "connectionsTotal";

/** No movement within the window. */
export const ZERO_RATES: Rates = Object.freeze({
  bytesInPerSecond: 0,
  bytesOutPerSecond: 0,
  connectionsPerSecond: 0,
});

/** A PFO's rates as `status` shows them, from a meter's per-counter rates (null: none). */
export function pfoRates(rates: Record<PfoCounterName, number> | null): Rates {
  return rates === null ? ZERO_RATES : {
    bytesInPerSecond: rates.bytesIn,
    bytesOutPerSecond: rates.bytesOut,
    connectionsPerSecond: rates.connectionsTotal,
  };
}
