/**
 * The Console's live screen: header (session, peer, fingerprint, uptime,
 * totals, rates), the PFO table, the open connections newest first, the
 * last events, and the pending-session question on top. A pure function of
 * the Console's snapshot and the screen's size; lib/ui/screen.ts draws it.
 *
 * @module
 */

import { escapeControls } from "../core/text.ts";
import type { ScreenView } from "../ui/screen.ts";
import {
  type Column,
  fit,
  formatAge,
  formatBytes,
  formatRate,
  isCompact,
  limitRows,
  type ScreenLine,
  table,
  textWidth,
} from "../ui/tables.ts";
import type { ConnectionInfo } from "./pfos.ts";
import type { ConsoleSnapshot, PfoSnapshot } from "./state.ts";

/** A connection's rates, bytes per second. */
export interface ConnectionRates {
  /** From the target to the client. */
  readonly in: number;
  /** From the client to the target. */
  readonly out: number;
}

/** What the Console's screen draws besides the snapshot. */
export interface ConsoleScreenExtras {
  /** Now, in ms since the epoch. */
  readonly now: number;
  /** When the Console started, in ms since the epoch. */
  readonly startedAt: number;
  /** A connection's rates, when known. */
  readonly rates: (id: number) => ConnectionRates | null;
  /** The operator is being asked about the pending session. */
  readonly asking: boolean;
  /** Set while exiting: what is happening ("draining 3 connections..."). */
  readonly exiting?: string | null;
}

const PFO_COLUMNS: readonly Column[] = [
  { head: "NAME", shrink: 2, min: 6 },
  { head: "PROTO", drop: 1 },
  { head: "LISTEN", shrink: 3, min: 9 },
  { head: "TARGET", shrink: 4, min: 8 },
  { head: "STATE", shrink: 5, min: 9 },
  { head: "CONNS", right: true },
  { head: "RATE IN", right: true },
  { head: "RATE OUT", right: true, drop: 2 },
  { head: "BYTES IN", right: true, drop: 3 },
  { head: "BYTES OUT", right: true, drop: 4 },
];

const CONNECTION_COLUMNS: readonly Column[] = [
  { head: "ID", right: true },
  { head: "PFO", shrink: 2, min: 6 },
  { head: "CLIENT", shrink: 3, min: 8 },
  { head: "TARGET", shrink: 4, min: 8 },
  { head: "AGE", right: true, drop: 1 },
  { head: "IN", right: true, drop: 2 },
  { head: "OUT", right: true, drop: 3 },
  { head: "RATE", right: true },
];

/**
 * The Console's screen rows (the input line excluded).
 *
 * @example
 * ```ts
 * import { consoleScreen } from "./screen.ts";
 * import { dropTotals, udpDrops } from "../core/datagram.ts";
 * const snapshot = {
 *   session: { state: "none" as const, id: null, since: null, peer: null, streams: 0 },
 *   fingerprint: "SHA256:me", listen: "0.0.0.0:7470", settings: "c.yaml", settingsError: null,
 *   pfos: [], connections: [], trust: [], allowList: [], chat: [], udpDrops: dropTotals(udpDrops()),
 * };
 * const lines = consoleScreen(snapshot, { size: { columns: 80, rows: 23 }, events: [] }, {
 *   now: 0, startedAt: 0, rates: () => null, asking: false,
 * });
 * if (!lines[0].text.includes("session: none")) throw new Error(lines[0].text);
 * ```
 */
export function consoleScreen(
  snapshot: ConsoleSnapshot,
  view: ScreenView,
  extras: ConsoleScreenExtras,
): ScreenLine[] {
  let lines = isCompact(view.size)
    ? compactLines(snapshot, view, extras)
    : fullLines(snapshot, view, extras);
  if (extras.asking && snapshot.session.state === "pending") {
    lines = overlay(lines, pendingBox(snapshot, view.size.columns), view.size.rows);
  }
  // Peer strings (host, user, errors, chat) as data: escaped here, and again when drawn.
  return lines.slice(0, view.size.rows).map((l) => ({ ...l, text: escapeControls(l.text) }));
}

function totals(pfos: readonly PfoSnapshot[]) {
  let bytesIn = 0, bytesOut = 0, rateIn = 0, rateOut = 0;
  for (const p of pfos) {
    bytesIn += p.bytesIn;
    bytesOut += p.bytesOut;
    rateIn += p.rates.bytesInPerSecond;
    rateOut += p.rates.bytesOutPerSecond;
  }
  return { bytesIn, bytesOut, rateIn, rateOut };
}

function sessionText(snapshot: ConsoleSnapshot): string {
  const { session } = snapshot;
  const peer = session.peer;
  const who = peer ? `  ${peer.user}@${peer.host} (${peer.os}) from ${peer.address}` : "";
  return `session: ${session.state}${who}`;
}

/** Both fingerprints on one line, or on two when one line would cut one (they are compared by eye). */
function fingerprintLines(snapshot: ConsoleSnapshot, width: number): ScreenLine[] {
  const daemon = `Daemon ${snapshot.session.peer?.fingerprint ?? "-"}`;
  const mine = `this Console ${snapshot.fingerprint}`;
  const one = `${daemon}   ${mine}`;
  return textWidth(one) <= width ? [{ text: one }] : [{ text: daemon }, { text: mine }];
}

function headerLines(
  snapshot: ConsoleSnapshot,
  extras: ConsoleScreenExtras,
  width: number,
): ScreenLine[] {
  const t = totals(snapshot.pfos);
  const lines: ScreenLine[] = [
    { text: `portferry Console  ${sessionText(snapshot)}`, style: "title" },
    ...fingerprintLines(snapshot, width),
    {
      text: `up ${formatAge(extras.now - extras.startedAt)}  session port ${snapshot.listen}  ` +
        `in ${formatBytes(t.bytesIn)} (${formatRate(t.rateIn)})  ` +
        `out ${formatBytes(t.bytesOut)} (${formatRate(t.rateOut)})  ` +
        `open ${snapshot.connections.length}`,
    },
  ];
  if (snapshot.settingsError !== null) {
    lines.push({ text: `settings error: ${snapshot.settingsError}`, style: "warn" });
  }
  if (extras.exiting) lines.push({ text: extras.exiting, style: "warn" });
  return lines;
}

function pfoRow(p: PfoSnapshot): string[] {
  const listen = p.bound.length === 1 ? p.bound[0] : p.listen;
  let state: string = p.state;
  if (p.state === "listening" && !p.session) state += " (no session)";
  if (p.error) state += `: ${p.error}`;
  return [
    p.name,
    p.proto,
    listen,
    p.target ?? "-",
    state,
    String(p.connections),
    formatRate(p.rates.bytesInPerSecond),
    formatRate(p.rates.bytesOutPerSecond),
    formatBytes(p.bytesIn),
    formatBytes(p.bytesOut),
  ];
}

function connectionRow(
  c: ConnectionInfo,
  extras: ConsoleScreenExtras,
): string[] {
  const rates = extras.rates(c.id);
  return [
    String(c.id),
    c.proto === "tcp" ? c.pfo : `${c.pfo}/${c.proto}`,
    c.client,
    c.target ?? "-",
    formatAge(extras.now - Date.parse(c.since)),
    formatBytes(c.bytesIn),
    formatBytes(c.bytesOut),
    rates ? `${formatRate(rates.in)} ${formatRate(rates.out)}` : "-",
  ];
}

/** A table section: its title, then up to `room` lines (header included). */
function section(
  title: string,
  columns: readonly Column[],
  rows: { rows: string[][]; more: string | null },
  width: number,
): ScreenLine[] {
  const lines: ScreenLine[] = [{ text: title, style: "title" }];
  lines.push(...table(columns, rows.rows, width));
  if (rows.more) lines.push({ text: rows.more, style: "dim" });
  return lines;
}

function fullLines(
  snapshot: ConsoleSnapshot,
  view: ScreenView,
  extras: ConsoleScreenExtras,
): ScreenLine[] {
  const { columns, rows } = view.size;
  const header = headerLines(snapshot, extras, columns);
  // Fixed: header, a blank and a title per section, table heads.
  const free = Math.max(3, rows - header.length - 3 * 3 - 2);
  const eventRoom = Math.min(Math.max(2, Math.floor(free / 4)), Math.max(2, view.events.length));
  const pfoRoom = Math.max(1, Math.min(snapshot.pfos.length, Math.floor((free - eventRoom) / 2)));
  const connRoom = Math.max(1, free - eventRoom - pfoRoom);
  const connections = [...snapshot.connections].reverse(); // newest first
  const lines: ScreenLine[] = [
    ...header,
    { text: "" },
    ...section(
      `PFOs (${snapshot.pfos.length})`,
      PFO_COLUMNS,
      limitRows(snapshot.pfos, pfoRoom, pfoRow),
      columns,
    ),
    { text: "" },
    ...section(
      `Connections (${connections.length} open, newest first)`,
      CONNECTION_COLUMNS,
      limitRows(connections, connRoom, (c) => connectionRow(c, extras)),
      columns,
    ),
    { text: "" },
    { text: "Events", style: "title" },
  ];
  const room = Math.max(1, rows - lines.length);
  lines.push(...view.events.slice(-room));
  return lines;
}

function compactLines(
  snapshot: ConsoleSnapshot,
  view: ScreenView,
  extras: ConsoleScreenExtras,
): ScreenLine[] {
  const t = totals(snapshot.pfos);
  const lines: ScreenLine[] = [
    { text: sessionText(snapshot), style: "title" },
    {
      text: `PFOs ${snapshot.pfos.length}  open ${snapshot.connections.length}  ` +
        `in ${formatRate(t.rateIn)} out ${formatRate(t.rateOut)}`,
    },
  ];
  if (extras.exiting) lines.push({ text: extras.exiting, style: "warn" });
  const room = Math.max(0, view.size.rows - lines.length);
  if (room > 0) lines.push(...view.events.slice(-room));
  return lines;
}

/** The pending-session question: the Daemon's identity and the three answers. */
function pendingBox(snapshot: ConsoleSnapshot, columns: number): ScreenLine[] {
  const peer = snapshot.session.peer;
  const width = Math.max(10, Math.min(columns - 4, 76));
  const row = (text: string): ScreenLine => ({
    text: `| ${fit(text, width - 4, { pad: true })} |`,
    style: "overlay",
  });
  const rule: ScreenLine = { text: `+${"-".repeat(width - 2)}+`, style: "overlay" };
  return [
    rule,
    row("A Daemon asks for a session"),
    row(peer ? `${peer.user}@${peer.host} (${peer.os}) from ${peer.address}` : "(unknown)"),
    row(peer ? `fingerprint ${peer.fingerprint}` : ""),
    row(""),
    row("Accept it?  [y]es / [n]o / [t]rust always"),
    rule,
  ];
}

/** `box` drawn over `lines`, centred, indented by two columns. */
function overlay(lines: ScreenLine[], box: ScreenLine[], rows: number): ScreenLine[] {
  const out = lines.slice(0, rows);
  while (out.length < rows) out.push({ text: "" });
  const top = Math.max(0, Math.floor((rows - box.length) / 2));
  box.forEach((line, i) => {
    if (top + i < rows) out[top + i] = { text: `  ${line.text}`, style: line.style };
  });
  return out;
}
