/**
 * Run-time changes to the settings files (PFOs added, edited, removed;
 * Daemons trusted; a Console remembered): each edits the YAML document in
 * place, so the user's comments and key order survive, refuses to write an
 * invalid result, and replaces the file atomically. Changes to one file run
 * one after another.
 *
 * @module
 */

import { Document, isMap, isScalar, isSeq, YAMLSeq } from "yaml";
import { resolve } from "node:path";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { writeFileAtomic } from "../core/io.ts";
import {
  findListenClash,
  listenClashMessage,
  type PfoSpec,
  type ResolvedPfo,
  resolvePfo,
} from "./pfo.ts";
import { _parse, type YamlMap } from "./_yaml.ts";
import { readSettingsText } from "./paths.ts";
import { dedentEntry, indentEntry, resized } from "./_layout.ts";
import {
  _consoleFrom,
  type _ConsoleParse,
  _parseConsole,
  _readEntry,
  _rememberParse,
  _withPfo,
  type ConsoleSettings,
  type DaemonSettings,
  FINGERPRINT,
  parseDaemonSettings,
  PFO_KEYS,
} from "./schema.ts";

/** A change to the Console settings file, applied by {@linkcode updateConsoleSettings}. */
export type ConsoleEdit =
  /** Append a PFO at the end of `pfos`. Its name must be new. */
  | { readonly op: "addPfo"; readonly pfo: PfoSpec }
  /** Change some fields of the PFO called `name` (a `name` change renames it). */
  | { readonly op: "editPfo"; readonly name: string; readonly changes: Partial<PfoSpec> }
  /** Delete the PFO called `name`. */
  | { readonly op: "removePfo"; readonly name: string }
  /** Enable or disable the PFO called `name`. */
  | { readonly op: "setPfoEnabled"; readonly name: string; readonly enabled: boolean }
  /** Trust a Daemon fingerprint (no change when already trusted). */
  | { readonly op: "addTrusted"; readonly fingerprint: string }
  /** Stop trusting a Daemon fingerprint (no change when not trusted). */
  | { readonly op: "removeTrusted"; readonly fingerprint: string };

/** Options for {@linkcode applyConsoleEdits}. */
export interface ApplyConsoleEditsOptions {
  /** The settings file, for error messages and a relative `tokenFile`. */
  path: string;
}

/** The outcome of {@linkcode applyConsoleEdits}. */
export interface EditedSettings {
  /** Settings parsed from `text`. */
  readonly settings: ConsoleSettings;
  /** The new file text. */
  readonly text: string;
  /** False when the edits changed nothing. */
  readonly changed: boolean;
}

const NEW_FILE_COMMENT =
  " portferry Console settings. portferry keeps your comments and key order when it edits this file.";

function _pfoItems(doc: Document): { seq: YAMLSeq | null; index: (name: string) => number } {
  const node = doc.get("pfos", true);
  const seq = isSeq(node) ? node : null;
  return {
    seq,
    index: (name) =>
      seq === null ? -1 : seq.items.findIndex((item) => isMap(item) && item.get("name") === name),
  };
}

function _ensureSeq(doc: Document, key: string): YAMLSeq {
  if (!isMap(doc.contents)) doc.contents = doc.createNode({}) as typeof doc.contents;
  const node = doc.get(key, true);
  if (isSeq(node)) {
    if (node.flow && node.items.length === 0) node.flow = false;
    return node;
  }
  const seq = new YAMLSeq();
  doc.set(key, seq);
  return seq;
}

function _setField(map: YamlMap, key: string, value: unknown): void {
  const node = map.get(key, true);
  if (value === null) {
    map.delete(key);
  } else if (isScalar(node)) {
    // Keep the node, and with it any comment on its line.
    node.value = value;
  } else {
    map.set(key, value);
  }
}

function _specOf(pfo: ResolvedPfo): PfoSpec {
  return {
    name: pfo.name,
    proto: pfo.proto,
    listen: pfo.listen,
    target: pfo.target,
    enabled: pfo.enabled,
    clients: pfo.clients,
  };
}

function _fail(path: string, message: string, cause?: unknown): never {
  throw new ConfigError(message, { path, cause });
}

/** The index of the PFO called `name`; refuses a name no PFO has. */
function _indexOf(current: ConsoleSettings, name: string, verb: string, path: string): number {
  const i = current.pfos.findIndex((p) => p.name === name);
  if (i < 0) _fail(path, `Cannot ${verb} PFO "${name}": no PFO has that name`);
  return i;
}

/** Refuses a PFO that is invalid or listens where another PFO does. */
function _check(
  current: ConsoleSettings,
  spec: PfoSpec,
  verb: string,
  path: string,
  was = spec.name,
): void {
  let pfo: ResolvedPfo;
  try {
    pfo = resolvePfo(spec);
  } catch (err) {
    return _fail(path, `Cannot ${verb} PFO "${spec.name}": ${errorMessage(err)}`, err);
  }
  // A renamed PFO does not clash with its old self.
  const others = was === spec.name ? current.pfos : current.pfos.filter((p) => p.name !== was);
  const holder = findListenClash(pfo, others);
  if (holder !== undefined) _fail(path, listenClashMessage(verb, pfo, holder));
}

/** Checks an `addPfo` edit; returns the new entry's fields in file order. */
function _checkAdd(current: ConsoleSettings, spec: PfoSpec, path: string) {
  _check(current, spec, "add", path);
  if (current.pfos.some((p) => p.name === spec.name)) {
    _fail(path, `Cannot add PFO "${spec.name}": a PFO with that name exists; choose another name`);
  }
  const fields: Record<string, unknown> = {
    name: spec.name,
    proto: spec.proto,
    listen: spec.listen,
  };
  if (spec.target !== null) fields.target = spec.target;
  fields.enabled = spec.enabled;
  if (spec.clients && spec.clients.length > 0) fields.clients = [...spec.clients];
  return fields;
}

/** Checks an `editPfo` or `setPfoEnabled` edit; returns the PFO's index and the changes. */
function _checkChange(
  current: ConsoleSettings,
  edit: Extract<ConsoleEdit, { op: "editPfo" | "setPfoEnabled" }>,
  path: string,
): { index: number; changes: Partial<PfoSpec> } {
  const changes: Partial<PfoSpec> = edit.op === "editPfo"
    ? edit.changes
    : { enabled: edit.enabled };
  const index = _indexOf(current, edit.name, "edit", path);
  const pfo = current.pfos[index];
  const next: PfoSpec = { ..._specOf(pfo), ...changes };
  const verb = edit.op === "editPfo" ? "edit" : edit.enabled ? "enable" : "disable";
  _check(current, next, verb, path, pfo.name);
  if (next.name !== pfo.name && current.pfos.some((p) => p.name === next.name)) {
    _fail(path, `Cannot rename PFO "${pfo.name}" to "${next.name}": a PFO with that name exists`);
  }
  return { index, changes };
}

/** Writes `changes` into a PFO's mapping, touching only the keys that change. */
function _setFields(map: YamlMap, pfo: ResolvedPfo, changes: Partial<PfoSpec>): void {
  const spec = _specOf(pfo);
  for (const key of PFO_KEYS) {
    const value = changes[key];
    if (key === "clients") {
      const list = value as readonly string[] | undefined;
      if (list !== undefined && list.join() !== pfo.clients.join()) {
        _setField(map, key, list.length === 0 ? null : [...list]);
      }
    } else if (value !== undefined && value !== spec[key]) _setField(map, key, value);
  }
}

function _applyTrust(
  doc: Document,
  current: ConsoleSettings,
  edit: Extract<ConsoleEdit, { op: "addTrusted" | "removeTrusted" }>,
  path: string,
): void {
  if (!FINGERPRINT.test(edit.fingerprint)) {
    _fail(
      path,
      `Cannot trust ${
        JSON.stringify(edit.fingerprint)
      }: it is not a fingerprint; expected "SHA256:" and 43 base64 characters`,
    );
  }
  const has = current.trusted.includes(edit.fingerprint);
  if (edit.op === "addTrusted") {
    if (!has) _ensureSeq(doc, "trusted").items.push(doc.createNode(edit.fingerprint));
    return;
  }
  if (!has) return;
  const seq = doc.get("trusted", true) as YAMLSeq;
  const i = seq.items.findIndex((item) => isScalar(item) && item.value === edit.fingerprint);
  seq.items.splice(i, 1);
}

function _applyEdit(
  doc: Document,
  current: ConsoleSettings,
  edit: ConsoleEdit,
  path: string,
): void {
  switch (edit.op) {
    case "addPfo":
      _ensureSeq(doc, "pfos").items.push(doc.createNode(_checkAdd(current, edit.pfo, path)));
      return;
    case "editPfo":
    case "setPfoEnabled": {
      const { index, changes } = _checkChange(current, edit, path);
      const { seq, index: find } = _pfoItems(doc);
      const map = seq!.items[find(current.pfos[index].name)] as YamlMap;
      _setFields(map, current.pfos[index], changes);
      return;
    }
    case "removePfo": {
      _indexOf(current, edit.name, "remove", path);
      const { seq, index } = _pfoItems(doc);
      seq!.items.splice(index(edit.name), 1);
      return;
    }
    case "addTrusted":
    case "removeTrusted":
      return _applyTrust(doc, current, edit, path);
  }
}

// ---------------------------------------------------------------------------
// One entry at a time: with a plain layout, an edit reads and writes only the
// entry it changes (see _layout.ts); anything else takes the whole-file path.

/** `current` after one edit made on its entry alone, or undefined when that is not possible. */
function _fastEdit(current: _ConsoleParse, edit: ConsoleEdit, path: string) {
  const { layout, settings, text } = current;
  if (layout === null) return undefined;
  let index: number;
  let entry: string;
  if (edit.op === "addPfo") {
    index = settings.pfos.length;
    entry = new Document([_checkAdd(settings, edit.pfo, path)]).toString({ lineWidth: 0 });
  } else if (edit.op === "editPfo" || edit.op === "setPfoEnabled") {
    const checked = _checkChange(settings, edit, path);
    index = checked.index;
    const plain = dedentEntry(text.slice(layout.starts[index], layout.ends[index]), layout.indent);
    if (plain === null) return undefined;
    const doc = _parse(plain, path).doc as Document;
    const seq = doc.contents;
    if (!isSeq(seq) || seq.items.length !== 1 || !isMap(seq.items[0])) return undefined;
    _setFields(seq.items[0] as YamlMap, settings.pfos[index], checked.changes);
    entry = doc.toString({ lineWidth: 0 });
  } else {
    return undefined;
  }
  return _spliceEntry(current, index, indentEntry(entry, layout.indent), path);
}

/** `current` with entry `index` replaced by (or, one past the last, appended as) `entry`. */
function _spliceEntry(
  current: _ConsoleParse,
  index: number,
  entry: string,
  path: string,
): _ConsoleParse | undefined {
  const layout = current.layout!;
  const pfo = _readEntry(entry, layout.indent, path, index);
  const settings = pfo && _withPfo(current.settings, index, pfo);
  if (settings === undefined) return undefined;
  const last = layout.ends.length - 1;
  const from = index > last ? layout.ends[last] : layout.starts[index];
  const to = index > last ? from : layout.ends[index];
  const text = current.text.slice(0, from) + entry + current.text.slice(to);
  return { text, settings, layout: resized(layout, index, from, entry.length) };
}

/** Edits made entry by entry, or undefined when one of them needs the whole-file path. */
function _applyFast(
  text: string | null,
  edits: readonly ConsoleEdit[],
  path: string,
): EditedSettings | undefined {
  if (text === null) return undefined;
  let current = _parseConsole(text, path);
  for (const edit of edits) {
    const next = _fastEdit(current, edit, path);
    if (next === undefined) return undefined;
    current = next;
  }
  _rememberParse(path, current);
  return { settings: current.settings, text: current.text, changed: current.text !== text };
}

/**
 * Applies edits to Console settings text, keeping comments and key order:
 * only the changed PFO entry or key is touched, new PFOs go at the end of
 * `pfos`. Pure; {@linkcode updateConsoleSettings} does the file part.
 * `text` null means no file yet.
 *
 * @throws {ConfigError} when the text is invalid now, an edit names a PFO
 * that does not exist or one that does, or the result would be invalid.
 *
 * @example
 * ```ts
 * import { applyConsoleEdits } from "./edit.ts";
 * const text = "# my PFOs\npfos:\n  - name: web # public site\n    listen: 8080\n    target: localhost:80\n";
 * const out = applyConsoleEdits(text, [
 *   { op: "setPfoEnabled", name: "web", enabled: false },
 *   { op: "addPfo", pfo: { name: "db", proto: "tcp", listen: "5432", target: "db:5432", enabled: true } },
 * ], { path: "c.yaml" });
 * if (!out.text.includes("# public site") || out.settings.pfos.length !== 2) throw new Error(out.text);
 * if (out.settings.pfos[0].enabled) throw new Error("still enabled");
 * ```
 */
export function applyConsoleEdits(
  text: string | null,
  edits: ConsoleEdit | readonly ConsoleEdit[],
  options: ApplyConsoleEditsOptions,
): EditedSettings {
  const { path } = options;
  const list = Array.isArray(edits) ? edits : [edits as ConsoleEdit];
  const fast = _applyFast(text, list, path);
  if (fast !== undefined) return fast;
  const src = _parse(text ?? "", path);
  let current = _consoleFrom(src);
  const doc = src.doc as Document;
  if (text === null) doc.commentBefore = NEW_FILE_COMMENT;
  for (const edit of list) {
    _applyEdit(doc, current, edit, path);
    // Re-read after each edit so the next one sees its effect.
    current = _reparse(doc, path);
  }
  const next = doc.toString({ lineWidth: 0 });
  return { settings: current, text: next, changed: text === null || next !== text };
}

function _reparse(doc: Document, path: string): ConsoleSettings {
  const text = doc.toString({ lineWidth: 0 });
  try {
    return _parseConsole(text, path).settings;
  } catch (err) {
    throw new ConfigError(
      `Cannot save settings: the change would make them invalid (${
        errorMessage(err)
      }); nothing was written`,
      { path, cause: err },
    );
  }
}

/**
 * Texts this process wrote lately, by absolute path, newest last, so a watcher
 * skips them: two quick edits can land before the watcher reads the first.
 */
const _written = new Map<string, string[]>();

/** How many of our own recent writes per file a watcher recognises. */
const OWN_WRITES_KEPT = 8;

function _markWritten(key: string, text: string): void {
  const list = _written.get(key) ?? [];
  list.push(text);
  if (list.length > OWN_WRITES_KEPT) list.shift();
  _written.set(key, list);
}

function _unmarkWritten(key: string, text: string): void {
  const list = _written.get(key);
  const at = list?.lastIndexOf(text) ?? -1;
  if (list && at >= 0) list.splice(at, 1);
}

/**
 * Whether `text`, just read from `key`, is one of this process's own recent
 * writes. Text that is not means someone else wrote the file: our older marks
 * no longer tell our writes apart, so they are dropped.
 */
export function _isOwnWrite(key: string, text: string): boolean {
  const list = _written.get(key);
  if (list === undefined) return false;
  if (list.includes(text)) return true;
  _written.delete(key);
  return false;
}

/** In-process updates of one file run one after another. */
const _queues = new Map<string, Promise<unknown>>();

function _serialize<T>(key: string, task: () => Promise<T>): Promise<T> {
  const before = _queues.get(key) ?? Promise.resolve();
  const run = before.then(task, task);
  const tail = run.then(() => {}, () => {});
  _queues.set(key, tail);
  tail.then(() => {
    if (_queues.get(key) === tail) _queues.delete(key);
  });
  return run;
}

/**
 * Changes the Console settings file. It re-reads the file right before
 * writing, applies the edits with {@linkcode applyConsoleEdits} (comments and
 * order are kept), refuses an invalid result, and replaces the file
 * atomically with mode 0600. A missing file is created. Returns the
 * settings now in the file.
 *
 * @throws {ConfigError} when the file on disk is invalid (it is left as it
 * is), an edit does not apply, or the result would be invalid.
 *
 * @example
 * ```ts
 * import { updateConsoleSettings } from "./edit.ts";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/portferry-console.yaml`;
 * const s = await updateConsoleSettings(path, {
 *   op: "addPfo",
 *   pfo: { name: "web", proto: "tcp", listen: "8080", target: "localhost:80", enabled: true },
 * });
 * if (s.pfos[0].name !== "web") throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function updateConsoleSettings(
  path: string,
  edits: ConsoleEdit | readonly ConsoleEdit[],
): Promise<ConsoleSettings> {
  const key = resolve(path);
  return _serialize(key, async () => {
    const text = await readSettingsText(path);
    const out = applyConsoleEdits(text, edits, { path });
    if (!out.changed) return out.settings;
    _markWritten(key, out.text);
    try {
      await writeFileAtomic(path, out.text);
    } catch (err) {
      _unmarkWritten(key, out.text);
      throw new ConfigError(`Cannot save settings: ${errorMessage(err)}`, { path, cause: err });
    }
    return out.settings;
  });
}

/**
 * Remember the Console a Daemon's user confirmed on first use: sets
 * `console` and `fingerprint` in the Daemon settings file, keeping the
 * user's comments, atomically and owner-only. A missing file is created.
 *
 * @example
 * ```ts
 * import { rememberConsole } from "./edit.ts";
 * import { loadDaemonSettings } from "./schema.ts";
 * const dir = await Deno.makeTempDir();
 * const fp = "SHA256:q0D4erMQtTzzpxlCYmy0wuHJBtGpsD4w8R+LV9gIjXQ";
 * await rememberConsole(`${dir}/d.yaml`, { console: "office:7470", fingerprint: fp });
 * const { settings } = await loadDaemonSettings(`${dir}/d.yaml`);
 * if (settings.fingerprint !== fp || settings.console?.host !== "office") throw new Error("bad");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function rememberConsole(
  path: string,
  where: { readonly console: string; readonly fingerprint: string },
): Promise<DaemonSettings> {
  const key = resolve(path);
  return _serialize(key, async () => {
    const text = await readSettingsText(path);
    const doc = _parse(text ?? "", path).doc as Document;
    if (text === null) {
      doc.commentBefore =
        " portferry Daemon settings. portferry keeps your comments and key order.";
    }
    if (doc.contents === null) doc.contents = doc.createNode({}) as unknown as typeof doc.contents;
    doc.set("console", where.console);
    doc.set("fingerprint", where.fingerprint);
    const next = doc.toString({ lineWidth: 0 });
    const settings = parseDaemonSettings(next, path);
    _markWritten(key, next);
    try {
      await writeFileAtomic(path, next);
    } catch (err) {
      _unmarkWritten(key, next);
      throw new ConfigError(`Cannot save settings: ${errorMessage(err)}`, { path, cause: err });
    }
    return settings;
  });
}
