/**
 * A Console settings file's `pfos` list read line by line, without the YAML
 * library, when every entry is written the plain way `pfo add` writes it:
 *
 * ```yaml
 * pfos:
 *   - name: web
 *     listen: "127.0.0.1:8080"
 *     target: "10.0.0.5:80"
 * ```
 *
 * With 10,000 PFOs the YAML library's parse costs a second of CPU and leaves
 * the heap about 100 MiB larger; this reader costs a few milliseconds. It
 * accepts a strict subset only: each entry a `-` line at one indentation and
 * keys two spaces further in, one `key: value` per line, values double- or
 * single-quoted without escapes, plain words that YAML reads as strings,
 * digits (a port), or true/false; blank and comment lines anywhere. Anything
 * else (a `clients` list, flow style, anchors, tabs, an escape, a value that
 * YAML would read as null or a number) returns null, and the caller parses
 * the whole file, which says what is wrong and where. Private to
 * lib/settings.
 *
 * @module
 */

import type { PfoLayout } from "./_layout.ts";

/** One entry's values, as YAML reads them: a digits-only value is `{ port: "8080" }`. */
export type PlainValue = string | boolean | { readonly port: string };

/** The `pfos` list of a settings text, read without the YAML library. */
export interface PlainPfos {
  /** The text with the list's lines taken out; its `pfos:` key has no value. */
  readonly rest: string;
  /** Offset of the `pfos` key in `rest` (and in the text). */
  readonly keyOffset: number;
  /** Each entry's keys and values, in file order. */
  readonly entries: readonly ReadonlyMap<string, PlainValue>[];
  /** Where each entry sits in the text, as `layoutOf` finds it. */
  readonly layout: PfoLayout;
}

const PFOS_KEY = /^pfos: *$/m;
const BLANK_OR_COMMENT = /^ *(?:#.*)?$/;
const ENTRY_LINE = /^( +)- ([A-Za-z]+): (.*)$/;
const KEY_LINE = /^( +)([A-Za-z]+): (.*)$/;
/** A value, then nothing or a comment. */
const VALUE =
  /^ *(?:"([ !#-[\]-~]*)"|'([ -&(-~]*)'|([A-Za-z][A-Za-z0-9._/:-]*[A-Za-z0-9._/-]|[A-Za-z])|([0-9]+))(?: +#.*)? *$/;
/** Plain words YAML reads as null or a boolean (case variants included). */
const NOT_STRINGS = new Set(["null", "true", "false"]);
const BOOLEANS = new Map([
  ["true", true],
  ["True", true],
  ["TRUE", true],
  ["false", false],
  ["False", false],
  ["FALSE", false],
]);

/** The `pfos` list of `text` when it is plain (see the module doc), else null. */
export function readPlainPfos(text: string): PlainPfos | null {
  const key = PFOS_KEY.exec(text);
  if (key === null) return null;
  const keyOffset = key.index;
  const bodyStart = keyOffset + key[0].length + 1;
  if (text[bodyStart - 1] !== "\n") return null;
  const entries: Map<string, PlainValue>[] = [];
  const starts: number[] = [];
  const ends: number[] = [];
  let indent: string | null = null;
  let at = bodyStart;
  while (at < text.length) {
    const nl = text.indexOf("\n", at);
    if (nl < 0) return null; // The last line has no newline: not a plain layout.
    const line = text.slice(at, nl);
    const next = nl + 1;
    if (BLANK_OR_COMMENT.test(line)) {
      at = next;
      continue;
    }
    if (line[0] !== " ") break; // The next top-level key.
    const entry = ENTRY_LINE.exec(line);
    if (entry !== null) {
      if (indent !== null && entry[1] !== indent) return null;
      indent = entry[1];
      entries.push(new Map());
      starts.push(at);
      ends.push(next);
    } else if (entries.length === 0) {
      return null;
    }
    const kv = entry ?? KEY_LINE.exec(line);
    if (kv === null || (entry === null && kv[1] !== indent + "  ")) return null;
    const value = plainValue(kv[2], kv[3]);
    const fields = entries[entries.length - 1];
    if (value === null || fields.has(kv[2])) return null;
    fields.set(kv[2], value);
    ends[ends.length - 1] = next;
    at = next;
  }
  if (entries.length === 0) return null;
  const rest = text.slice(0, bodyStart) + text.slice(at);
  return { rest, keyOffset, entries, layout: { indent: indent!, starts, ends } };
}

/** The value of `key` on a plain line, or null when it is not plain. */
function plainValue(key: string, text: string): PlainValue | null {
  const m = VALUE.exec(text);
  if (m === null) return null;
  const [, double, single, word, digits] = m;
  if (double !== undefined) return double;
  if (single !== undefined) return single;
  if (digits !== undefined) return { port: digits };
  if (key === "enabled") return BOOLEANS.get(word) ?? null;
  return NOT_STRINGS.has(word.toLowerCase()) ? null : word;
}
