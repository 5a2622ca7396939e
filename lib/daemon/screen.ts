/**
 * The Daemon's live screen: the Console's address and the fingerprint it
 * pinned, the allow-list in force, every open connection and UDP flow with
 * its target and rates, and the last events. A pure function of the
 * Daemon's snapshot and the screen's size; lib/ui/screen.ts draws it.
 *
 * @module
 */

import { escapeControls } from "../core/text.ts";
import type { ScreenView } from "../ui/screen.ts";
import {
  type Column,
  formatAge,
  formatBytes,
  formatRate,
  isCompact,
  limitRows,
  type ScreenLine,
  table,
} from "../ui/tables.ts";
import type { DaemonConnection, DaemonSnapshot } from "./state.ts";

/** What the Daemon's screen draws besides the snapshot. */
export interface DaemonScreenExtras {
  /** Now, in ms since the epoch. */
  readonly now: number;
  /** When the Daemon started, in ms since the epoch. */
  readonly startedAt: number;
  /** Bytes of the connections closed since the Daemon started: in, out. */
  readonly closed: { readonly bytesIn: number; readonly bytesOut: number };
  /** Set while exiting: what is happening. */
  readonly exiting?: string | null;
}

const COLUMNS: readonly Column[] = [
  { head: "ID", right: true },
  { head: "PFO", shrink: 2, min: 6 },
  { head: "PROTO", drop: 2 },
  { head: "CLIENT", shrink: 3, min: 8 },
  { head: "TARGET", shrink: 5, min: 8 },
  { head: "REACHED", shrink: 4, min: 8, drop: 6 },
  { head: "AGE", right: true, drop: 1 },
  { head: "IN", right: true, drop: 4 },
  { head: "OUT", right: true, drop: 5 },
  { head: "RATE IN", right: true },
  { head: "RATE OUT", right: true, drop: 3 },
];

/**
 * The Daemon's screen rows (the input line excluded).
 *
 * @example
 * ```ts
 * import { daemonScreen } from "./screen.ts";
 * import { udpDrops } from "../core/datagram.ts";
 * const snapshot = {
 *   session: { phase: "connecting" as const, id: null, since: null, console: "office:7470", fingerprint: "SHA256:c", lastError: null, proxy: null },
 *   fingerprint: "SHA256:d", connections: [], allow: "everything", chat: [], udpDrops: udpDrops(),
 * };
 * const lines = daemonScreen(snapshot, { size: { columns: 80, rows: 23 }, events: [] }, {
 *   now: 0, startedAt: 0, closed: { bytesIn: 0, bytesOut: 0 },
 * });
 * if (!lines.some((l) => l.text.includes("Console office:7470"))) throw new Error("no Console");
 * ```
 */
export function daemonScreen(
  snapshot: DaemonSnapshot,
  view: ScreenView,
  extras: DaemonScreenExtras,
): ScreenLine[] {
  // Peer strings (targets, reasons, chat) as data: escaped here, and again when drawn.
  return (isCompact(view.size) ? compactLines : fullLines)(snapshot, view, extras)
    .slice(0, view.size.rows).map((l) => ({ ...l, text: escapeControls(l.text) }));
}

function totals(snapshot: DaemonSnapshot, extras: DaemonScreenExtras) {
  let bytesIn = extras.closed.bytesIn, bytesOut = extras.closed.bytesOut;
  let rateIn = 0, rateOut = 0;
  for (const c of snapshot.connections) {
    bytesIn += c.bytesIn;
    bytesOut += c.bytesOut;
    rateIn += c.rateIn;
    rateOut += c.rateOut;
  }
  return { bytesIn, bytesOut, rateIn, rateOut };
}

function sessionText(snapshot: DaemonSnapshot): string {
  const s = snapshot.session;
  return `session: ${s.phase}${s.id ? ` (id ${s.id})` : ""}`;
}

function headerLines(snapshot: DaemonSnapshot, extras: DaemonScreenExtras): ScreenLine[] {
  const s = snapshot.session;
  const t = totals(snapshot, extras);
  const lines: ScreenLine[] = [
    { text: `portferry Daemon  ${sessionText(snapshot)}`, style: "title" },
    { text: `Console ${s.console}  pinned ${s.fingerprint}` },
    {
      text: `up ${formatAge(extras.now - extras.startedAt)}  this Daemon ${snapshot.fingerprint}`,
    },
    {
      text: `in ${formatBytes(t.bytesIn)} (${formatRate(t.rateIn)})  ` +
        `out ${formatBytes(t.bytesOut)} (${formatRate(t.rateOut)})  ` +
        `open ${snapshot.connections.length}`,
    },
    { text: `allow-list: the Console may reach ${snapshot.allow}` },
  ];
  if (s.lastError && s.phase !== "established") {
    lines.push({ text: `last error: ${s.lastError}`, style: "warn" });
  }
  if (extras.exiting) lines.push({ text: extras.exiting, style: "warn" });
  return lines;
}

function row(c: DaemonConnection, now: number): string[] {
  return [
    String(c.stream),
    c.pfo,
    c.proto,
    c.client,
    c.target,
    c.address,
    formatAge(now - Date.parse(c.since)),
    formatBytes(c.bytesIn),
    formatBytes(c.bytesOut),
    formatRate(c.rateIn),
    formatRate(c.rateOut),
  ];
}

function fullLines(
  snapshot: DaemonSnapshot,
  view: ScreenView,
  extras: DaemonScreenExtras,
): ScreenLine[] {
  const { columns, rows } = view.size;
  const header = headerLines(snapshot, extras);
  const free = Math.max(3, rows - header.length - 6);
  const eventRoom = Math.min(Math.max(2, Math.floor(free / 3)), Math.max(2, view.events.length));
  const connRoom = Math.max(1, free - eventRoom);
  const connections = [...snapshot.connections].reverse(); // newest first
  const limited = limitRows(connections, connRoom, (c) => row(c, extras.now));
  const lines: ScreenLine[] = [
    ...header,
    { text: "" },
    {
      text: `Connections and flows (${connections.length} open, newest first)`,
      style: "title",
    },
    ...table(COLUMNS, limited.rows, columns),
  ];
  if (limited.more) lines.push({ text: limited.more, style: "dim" });
  lines.push({ text: "" }, { text: "Events", style: "title" });
  const room = Math.max(1, rows - lines.length);
  lines.push(...view.events.slice(-room));
  return lines;
}

function compactLines(
  snapshot: DaemonSnapshot,
  view: ScreenView,
  extras: DaemonScreenExtras,
): ScreenLine[] {
  const t = totals(snapshot, extras);
  const lines: ScreenLine[] = [
    { text: sessionText(snapshot), style: "title" },
    { text: `Console ${snapshot.session.console}` },
    {
      text: `open ${snapshot.connections.length}  in ${formatRate(t.rateIn)} ` +
        `out ${formatRate(t.rateOut)}`,
    },
  ];
  if (extras.exiting) lines.push({ text: extras.exiting, style: "warn" });
  const room = Math.max(0, view.size.rows - lines.length);
  if (room > 0) lines.push(...view.events.slice(-room));
  return lines;
}
