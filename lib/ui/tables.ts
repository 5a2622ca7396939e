/**
 * What both programs' live screens share: readable numbers (bytes, rates,
 * ages), text fitted to a terminal width, and tables whose columns give way
 * when the screen is narrow. Pure functions: text in, text out.
 *
 * @module
 */

import { escapeControls } from "../core/text.ts";

/** How a screen line is drawn; the screen maps it to colours (none under `NO_COLOR`). */
export type LineStyle = "title" | "head" | "dim" | "warn" | "overlay" | "input";

/** One line of a screen: its text (no control characters) and how to draw it. */
export interface ScreenLine {
  /** What the line says; fitted to the width by the screen. */
  readonly text: string;
  /** How to draw it; plain when absent. */
  readonly style?: LineStyle;
}

/** A terminal's size in character cells. */
export interface ScreenSize {
  /** Columns. */
  readonly columns: number;
  /** Rows. */
  readonly rows: number;
}

/** Below this width or height a screen shows its compact summary. */
export const COMPACT_BELOW: ScreenSize = Object.freeze({ columns: 60, rows: 15 });

/** Whether `size` is too small for the full screen. */
export function isCompact(size: ScreenSize): boolean {
  return size.columns < COMPACT_BELOW.columns || size.rows < COMPACT_BELOW.rows;
}

const UNITS = ["B", "KB", "MB", "GB", "TB"] as const;

/**
 * A byte count as people read it (1000-based, one decimal under 10).
 *
 * @example
 * ```ts
 * import { formatBytes } from "./tables.ts";
 * if (formatBytes(999) !== "999 B" || formatBytes(1_500_000) !== "1.5 MB") throw new Error("bad");
 * ```
 */
export function formatBytes(bytes: number): string {
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  const text = unit === 0 || value >= 10 ? Math.round(value).toString() : value.toFixed(1);
  return `${text} ${UNITS[unit]}`;
}

/**
 * A rate in bytes per second; `-` when nothing moves.
 *
 * @example
 * ```ts
 * import { formatRate } from "./tables.ts";
 * if (formatRate(0) !== "-" || formatRate(2500) !== "2.5 KB/s") throw new Error("bad");
 * ```
 */
export function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond < 0.5 ? "-" : `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * A duration as its two largest units (`45s`, `3m07s`, `2h05m`, `3d04h`).
 *
 * @example
 * ```ts
 * import { formatAge } from "./tables.ts";
 * if (formatAge(187_000) !== "3m07s" || formatAge(5_000) !== "5s") throw new Error("bad");
 * ```
 */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor(s / 60) % 60)}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor(s / 3600) % 24)}h`;
}

/** Cells a code point takes: 0 for combining marks, 2 for wide East Asian and emoji. */
function cells(code: number): number {
  if (
    (code >= 0x300 && code <= 0x36f) || (code >= 0x200b && code <= 0x200d) || code === 0xfeff
  ) return 0;
  if (
    (code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) || (code >= 0x1f300 && code <= 0x1faff) ||
    (code >= 0x20000 && code <= 0x3fffd)
  ) return 2;
  return 1;
}

/**
 * How many terminal cells `text` takes.
 *
 * @example
 * ```ts
 * import { textWidth } from "./tables.ts";
 * if (textWidth("abc") !== 3 || textWidth("日本") !== 4) throw new Error("bad");
 * ```
 */
export function textWidth(text: string): number {
  let width = 0;
  for (const ch of text) width += cells(ch.codePointAt(0)!);
  return width;
}

/**
 * `text` cut to `width` cells (ending in `…` when cut), never wider. With
 * `pad`, filled with spaces to exactly `width`. Control characters are
 * escaped first, so nothing in `text` can drive the terminal.
 *
 * @example
 * ```ts
 * import { fit } from "./tables.ts";
 * if (fit("abcdef", 4) !== "abc…" || fit("ab", 4, { pad: true }) !== "ab  ") throw new Error("bad");
 * if (fit("a\x1b[2Jb", 20) !== "a\\x1b[2Jb") throw new Error("not escaped");
 * ```
 */
export function fit(text: string, width: number, options: { pad?: boolean } = {}): string {
  const safe = escapeControls(text);
  if (width <= 0) return "";
  let used = 0;
  let out = "";
  if (textWidth(safe) > width) {
    for (const ch of safe) {
      const w = cells(ch.codePointAt(0)!);
      if (used + w > width - 1) break;
      out += ch;
      used += w;
    }
    out += "…";
    used += 1;
  } else {
    out = safe;
    used = textWidth(safe);
  }
  return options.pad ? out + " ".repeat(Math.max(0, width - used)) : out;
}

/** One column of a {@linkcode table}. */
export interface Column {
  /** The header text. */
  readonly head: string;
  /** Right-aligned (numbers). */
  readonly right?: boolean;
  /** The narrowest it may become when the screen is narrow. Default the header's width. */
  readonly min?: number;
  /** Which column gives up width first (higher gives first). Default 0. */
  readonly shrink?: number;
  /**
   * When the table is too wide, which columns are left out (higher first)
   * before the others shrink. Default: never left out.
   */
  readonly drop?: number;
}

/**
 * A table as screen lines: a header row, then `rows`, columns two spaces
 * apart, fitted to `width` by shrinking the columns that may shrink.
 *
 * @example
 * ```ts
 * import { table } from "./tables.ts";
 * const lines = table([{ head: "NAME" }, { head: "CONNS", right: true }], [["web", "3"]], 40);
 * if (lines[0].text !== "NAME  CONNS" || lines[1].text !== "web       3") throw new Error(lines[1].text);
 * ```
 */
export function table(
  allColumns: readonly Column[],
  allRows: readonly (readonly string[])[],
  width: number,
): ScreenLine[] {
  const keep = keptColumns(allColumns, allRows, width);
  const columns = keep.map((i) => allColumns[i]);
  const rows = allRows.map((row) => keep.map((i) => row[i] ?? ""));
  const safe = rows.map((row) => row.map((cell) => escapeControls(cell)));
  const widths = columns.map((c, i) =>
    Math.max(textWidth(c.head), ...safe.map((r) => textWidth(r[i] ?? "")))
  );
  shrinkToFit(columns, widths, width);
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => {
      const text = fit(cell, widths[i]);
      const gap = " ".repeat(Math.max(0, widths[i] - textWidth(text)));
      return columns[i].right ? gap + text : text + gap;
    }).join("  ").trimEnd();
  return [
    { text: line(columns.map((c) => c.head)), style: "head" },
    ...safe.map((r) => ({ text: line(r) })),
  ];
}

/**
 * The columns shown at `width`: while the table at its natural width is
 * too wide, the droppable ones go, highest `drop` first (the rest then shrink).
 */
function keptColumns(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
  width: number,
): number[] {
  const natural = columns.map((c, i) =>
    Math.max(textWidth(c.head), ...rows.map((r) => textWidth(escapeControls(r[i] ?? ""))))
  );
  const keep = columns.map((_c, i) => i);
  const order = keep.filter((i) => (columns[i].drop ?? 0) > 0)
    .sort((a, b) => (columns[b].drop ?? 0) - (columns[a].drop ?? 0));
  const need = () => keep.reduce((sum, i) => sum + natural[i], 0) + 2 * (keep.length - 1);
  for (const i of order) {
    if (need() <= width) break;
    keep.splice(keep.indexOf(i), 1);
  }
  return keep;
}

/** Narrow the widest shrinkable columns, in `shrink` order, until the row fits `width`. */
function shrinkToFit(columns: readonly Column[], widths: number[], width: number): void {
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
  const order = columns.map((_c, i) => i).filter((i) => (columns[i].shrink ?? 0) > 0)
    .sort((a, b) => (columns[b].shrink ?? 0) - (columns[a].shrink ?? 0));
  for (const i of order) {
    const over = total() - width;
    if (over <= 0) return;
    const floor = columns[i].min ?? textWidth(columns[i].head);
    widths[i] = Math.max(floor, widths[i] - over);
  }
}

/**
 * Up to `max` rows of `items` as table rows; when they do not all fit, the
 * last row says how many more there are (`… and N more`).
 *
 * @example
 * ```ts
 * import { limitRows } from "./tables.ts";
 * const { rows, more } = limitRows([1, 2, 3, 4], 3, (n) => [String(n)]);
 * if (rows.length !== 2 || more !== "… and 2 more") throw new Error(String(more));
 * ```
 */
export function limitRows<T>(
  items: readonly T[],
  max: number,
  row: (item: T) => string[],
): { rows: string[][]; more: string | null } {
  if (items.length <= max) return { rows: items.map(row), more: null };
  const shown = Math.max(0, max - 1);
  return {
    rows: items.slice(0, shown).map(row),
    more: `… and ${items.length - shown} more`,
  };
}

/** A wall-clock time as `HH:MM:SS` (local time), for event lines. */
export function clock(date: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}
