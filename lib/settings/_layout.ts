/**
 * Where each PFO entry sits in a Console settings file's text, so that a
 * change to one entry (a `pfo add`, an edit, a hand edit) is checked and
 * written by reading that entry alone, not the whole file: with 10,000 PFOs
 * a whole parse costs about half a second.
 *
 * Only plain layouts qualify: `pfos` a block list of block mappings, each
 * entry starting on its `-` line at one indentation, and no anchor or alias
 * in the file. Anything else has no layout, and callers parse the whole file.
 * Private to lib/settings.
 *
 * @module
 */

import { isMap, isSeq, visit } from "yaml";
import type { _Source } from "./_yaml.ts";

/** The spans of the PFO entries in one text, in file order. */
export interface PfoLayout {
  /** The indentation before each entry's `-`. */
  readonly indent: string;
  /** Offset of each entry's first line. */
  readonly starts: readonly number[];
  /** Offset just past each entry's last line (after its newline). */
  readonly ends: readonly number[];
}

/** The layout of a parsed Console settings file, or null when it is not plain. */
export function layoutOf(src: _Source): PfoLayout | null {
  const seq = src.doc.get("pfos", true);
  if (!isSeq(seq) || seq.flow || seq.items.length === 0 || _hasAnchors(src)) return null;
  const { text } = src;
  const starts: number[] = [];
  const ends: number[] = [];
  let indent: string | null = null;
  for (const item of seq.items) {
    if (!isMap(item) || item.flow || !item.range) return null;
    const lineStart = text.lastIndexOf("\n", item.range[0] - 1) + 1;
    const dash = /^( *)- +$/.exec(text.slice(lineStart, item.range[0]));
    if (dash === null || (indent !== null && dash[1] !== indent)) return null;
    indent = dash[1];
    const end = _lineEnd(text, item.range[1]);
    if (end < 0 || (ends.length > 0 && lineStart < ends[ends.length - 1])) return null;
    starts.push(lineStart);
    ends.push(end);
  }
  return { indent: indent!, starts, ends };
}

/** Whether the parsed file has an anchor or an alias anywhere. */
export function _hasAnchors(src: _Source): boolean {
  let found = false;
  visit(src.doc, {
    Alias: () => {
      found = true;
      return visit.BREAK;
    },
    Node: (_, node) => {
      found = node.anchor !== undefined && node.anchor !== null;
      return found ? visit.BREAK : undefined;
    },
  });
  return found;
}

/** Offset past the newline ending the line that holds `offset - 1`; -1 with no newline. */
function _lineEnd(text: string, offset: number): number {
  if (offset > 0 && text[offset - 1] === "\n") return offset;
  const nl = text.indexOf("\n", offset);
  return nl < 0 ? -1 : nl + 1;
}

/**
 * One entry's text without its indentation (`- name: ...`), or null when a
 * line is indented less than the entry's `-`.
 */
export function dedentEntry(entry: string, indent: string): string | null {
  const lines = entry.split("\n");
  const out: string[] = [];
  for (const line of lines) {
    if (line.trim() === "") out.push("");
    else if (line.startsWith(indent)) out.push(line.slice(indent.length));
    else return null;
  }
  return out.join("\n");
}

/** An entry's text at `indent`, each non-empty line prefixed. */
export function indentEntry(entry: string, indent: string): string {
  return entry.split("\n").map((line) => line === "" ? "" : indent + line).join("\n");
}

/** The part of `before` that `after` replaces: `[from, to)` in `before`, `[from, toAfter)` in `after`. */
export function changedRegion(
  before: string,
  after: string,
): { from: number; to: number; toAfter: number } {
  const max = Math.min(before.length, after.length);
  let from = 0;
  while (from < max && before.charCodeAt(from) === after.charCodeAt(from)) from++;
  let tail = 0;
  while (
    tail < max - from &&
    before.charCodeAt(before.length - 1 - tail) === after.charCodeAt(after.length - 1 - tail)
  ) tail++;
  return { from, to: before.length - tail, toAfter: after.length - tail };
}

/** The entry whose span holds `[from, to)` (an insertion may sit at its end), or -1. */
export function entryHolding(layout: PfoLayout, from: number, to: number): number {
  const { starts, ends } = layout;
  let lo = 0;
  let hi = starts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] > from) hi = mid - 1;
    else lo = mid + 1;
  }
  const i = hi;
  return i >= 0 && to <= ends[i] && from <= ends[i] ? i : -1;
}

/** The layout after entry `i` became `length` characters long (`i === starts.length`: appended at `at`). */
export function resized(layout: PfoLayout, i: number, at: number, length: number): PfoLayout {
  const starts = [...layout.starts];
  const ends = [...layout.ends];
  if (i === starts.length) {
    starts.push(at);
    ends.push(at + length);
    return { indent: layout.indent, starts, ends };
  }
  const delta = length - (ends[i] - starts[i]);
  ends[i] += delta;
  for (let j = i + 1; j < starts.length; j++) {
    starts[j] += delta;
    ends[j] += delta;
  }
  return { indent: layout.indent, starts, ends };
}
