/**
 * Reading a settings file's YAML: one parse with line positions, errors at
 * `file:line:column`, and typed readers for the values of a mapping. Shared
 * by the schema and the comment-keeping edit; private to lib/settings.
 *
 * @module
 */

import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node as YamlNode,
  parseDocument,
  type Scalar,
  type YAMLMap,
} from "yaml";
import { ConfigError } from "../core/errors.ts";

/** Longest delay `setTimeout` honours; larger millisecond settings are refused. */
export const MAX_DELAY_MS = 2_147_483_647;

/** A YAML mapping node. */
export type YamlMap = YAMLMap<unknown, unknown>;

/** One parse: the text, its document and where its lines start. */
export interface _Source {
  readonly path: string;
  readonly text: string;
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
}

/** A key and its value, as found in a mapping. */
export interface _Entry {
  readonly key: Scalar;
  readonly value: YamlNode | null;
}

export function _where(src: _Source, node: YamlNode | null | undefined) {
  const offset = node?.range?.[0];
  if (offset === undefined) return { path: src.path };
  const { line, col } = src.lines.linePos(offset);
  return { path: src.path, line, column: col };
}

export function _fail(
  src: _Source,
  node: YamlNode | null | undefined,
  message: string,
  cause?: unknown,
): never {
  throw new ConfigError(message, { ..._where(src, node), cause });
}

export function _parse(text: string, path: string): _Source {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const src: _Source = { path, text, doc, lines };
  const err = doc.errors[0];
  if (err !== undefined) {
    const { line, col } = lines.linePos(err.pos[0]);
    const detail = err.code === "MULTIPLE_DOCS"
      ? `the file holds more than one document; remove the "---" line`
      : err.message.split("\n")[0];
    const hint = err.code === "DUPLICATE_KEY" ? "; keep one of them" : "";
    throw new ConfigError(`Cannot parse YAML: ${detail}${hint}`, {
      path,
      line,
      column: col,
      cause: err,
    });
  }
  return src;
}

export function _deref(src: _Source, node: unknown): YamlNode | null {
  if (node === null || node === undefined) return null;
  if (isAlias(node)) return (node.resolve(src.doc) ?? null) as YamlNode | null;
  return node as YamlNode;
}

export function _describe(node: YamlNode | null): string {
  if (node === null) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "null";
    if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    return `a value of type ${typeof v}`;
  }
  return "an unknown node";
}

/** `"key"`, or a label that is already quoted, such as `"enabled" of PFO "web"`. */
export function _label(name: string): string {
  return name.includes('"') ? name : `"${name}"`;
}

export function _isNull(node: YamlNode | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

/** The entries of a mapping, refusing keys not in `known`. */
export function _entries(
  src: _Source,
  node: YamlMap,
  known: readonly string[],
  what: string,
): Map<string, _Entry> {
  const out = new Map<string, _Entry>();
  for (const pair of node.items) {
    const key = _deref(src, pair.key);
    if (!isScalar(key) || typeof key.value !== "string") {
      _fail(
        src,
        key ?? node,
        `Cannot read ${what}: keys must be plain names, got ${_describe(key)}`,
      );
    }
    const name = key.value;
    if (!known.includes(name)) {
      _fail(
        src,
        key,
        `Cannot read ${what}: unknown key ${JSON.stringify(name)}; known keys are ${
          known.join(", ")
        }`,
      );
    }
    out.set(name, { key, value: _deref(src, pair.value) });
  }
  return out;
}

export function _at(e: _Entry): YamlNode {
  return e.value ?? e.key;
}

export function _bool(
  src: _Source,
  name: string,
  e: _Entry | undefined,
  fallback: boolean,
): boolean {
  if (e === undefined) return fallback;
  if (isScalar(e.value) && typeof e.value.value === "boolean") return e.value.value;
  _fail(
    src,
    _at(e),
    `Cannot use ${_label(name)}: expected true or false, got ${_describe(e.value)}`,
  );
}

export function _int(
  src: _Source,
  name: string,
  e: _Entry | undefined,
  fallback: number,
  min: number,
): number {
  if (e === undefined) return fallback;
  const v = isScalar(e.value) ? e.value.value : undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    _fail(
      src,
      _at(e),
      `Cannot use ${_label(name)}: expected a whole number, got ${_describe(e.value)}`,
    );
  }
  if (v < min || v > MAX_DELAY_MS) {
    _fail(
      src,
      _at(e),
      `Cannot use ${_label(name)}: ${v} is out of range; use ${min} to ${MAX_DELAY_MS}`,
    );
  }
  return v;
}

export function _string(src: _Source, name: string, e: _Entry): string {
  if (isScalar(e.value) && typeof e.value.value === "string") return e.value.value;
  _fail(src, _at(e), `Cannot use ${_label(name)}: expected a string, got ${_describe(e.value)}`);
}

/** A string, or the source text of an integer (`listen: 8080`, `session: 7470`). */
export function _stringOrPort(src: _Source, name: string, e: _Entry): string {
  const node = e.value;
  if (isScalar(node) && typeof node.value === "number" && node.range != null) {
    return src.text.slice(node.range[0], node.range[1]);
  }
  if (isScalar(node) && typeof node.value === "string") return node.value;
  _fail(
    src,
    _at(e),
    `Cannot use ${_label(name)}: expected a string or a port, got ${_describe(node)}`,
  );
}

export function _nullableString(src: _Source, name: string, e: _Entry | undefined): string | null {
  if (e === undefined || _isNull(e.value)) return null;
  return _string(src, name, e);
}

export function _choice<T extends string>(
  src: _Source,
  name: string,
  e: _Entry | undefined,
  choices: readonly T[],
  fallback: T,
): T {
  if (e === undefined) return fallback;
  const v = isScalar(e.value) ? e.value.value : undefined;
  if (typeof v === "string" && (choices as readonly string[]).includes(v)) return v as T;
  _fail(
    src,
    _at(e),
    `Cannot use ${_label(name)}: expected one of ${choices.join(", ")}, got ${_describe(e.value)}`,
  );
}

/** A list's items; null or a missing key is an empty list. */
export function _list(src: _Source, name: string, e: _Entry | undefined): (YamlNode | null)[] {
  if (e === undefined || _isNull(e.value)) return [];
  if (!isSeq(e.value)) {
    _fail(src, _at(e), `Cannot use ${_label(name)}: expected a list, got ${_describe(e.value)}`);
  }
  return e.value.items.map((item) => _deref(src, item));
}

export function _stringList(src: _Source, name: string, e: _Entry | undefined): string[] {
  return _list(src, name, e).map((item) => {
    if (isScalar(item) && typeof item.value === "string" && item.value !== "") return item.value;
    _fail(
      src,
      item ?? _at(e!),
      `Cannot use ${_label(name)}: expected a non-empty string, got ${_describe(item)}`,
    );
  });
}
