/**
 * Run-time changes to the settings files (PFOs added, edited, removed;
 * Daemons trusted; a Console remembered): each edits the YAML document in
 * place, so the user's comments and key order survive, refuses to write an
 * invalid result, and replaces the file atomically. Changes to one file run
 * one after another.
 *
 * @module
 */

import { type Document, isMap, isScalar, isSeq, YAMLSeq } from "yaml";
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
import {
  _consoleFrom,
  type ConsoleSettings,
  type DaemonSettings,
  FINGERPRINT,
  parseConsoleSettings,
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

function _applyEdit(
  doc: Document,
  current: ConsoleSettings,
  edit: ConsoleEdit,
  path: string,
): void {
  const fail = (message: string, cause?: unknown): never => {
    throw new ConfigError(message, { path, cause });
  };
  const find = (name: string, verb: string): { map: YamlMap; pfo: ResolvedPfo } => {
    const { seq, index } = _pfoItems(doc);
    const i = index(name);
    const pfo = current.pfos.find((p) => p.name === name);
    if (seq === null || i < 0 || pfo === undefined) {
      fail(`Cannot ${verb} PFO "${name}": no PFO has that name`);
    }
    return { map: seq!.items[i] as YamlMap, pfo: pfo! };
  };
  const check = (spec: PfoSpec, verb: string, was = spec.name): void => {
    let pfo: ResolvedPfo;
    try {
      pfo = resolvePfo(spec);
    } catch (err) {
      return fail(`Cannot ${verb} PFO "${spec.name}": ${errorMessage(err)}`, err);
    }
    // A renamed PFO does not clash with its old self.
    const others = was === spec.name ? current.pfos : current.pfos.filter((p) => p.name !== was);
    const holder = findListenClash(pfo, others);
    if (holder !== undefined) fail(listenClashMessage(verb, pfo, holder));
  };
  switch (edit.op) {
    case "addPfo": {
      const spec = edit.pfo;
      check(spec, "add");
      if (current.pfos.some((p) => p.name === spec.name)) {
        fail(`Cannot add PFO "${spec.name}": a PFO with that name exists; choose another name`);
      }
      const fields: Record<string, unknown> = {
        name: spec.name,
        proto: spec.proto,
        listen: spec.listen,
      };
      if (spec.target !== null) fields.target = spec.target;
      fields.enabled = spec.enabled;
      if (spec.clients && spec.clients.length > 0) fields.clients = [...spec.clients];
      _ensureSeq(doc, "pfos").items.push(doc.createNode(fields));
      return;
    }
    case "editPfo":
    case "setPfoEnabled": {
      const changes: Partial<PfoSpec> = edit.op === "editPfo"
        ? edit.changes
        : { enabled: edit.enabled };
      const { map, pfo } = find(edit.name, "edit");
      const next: PfoSpec = { ..._specOf(pfo), ...changes };
      check(next, edit.op === "editPfo" ? "edit" : edit.enabled ? "enable" : "disable", pfo.name);
      if (next.name !== pfo.name && current.pfos.some((p) => p.name === next.name)) {
        fail(`Cannot rename PFO "${pfo.name}" to "${next.name}": a PFO with that name exists`);
      }
      for (const key of PFO_KEYS) {
        const value = changes[key];
        if (key === "clients") {
          const list = value as readonly string[] | undefined;
          if (list !== undefined && list.join() !== pfo.clients.join()) {
            _setField(map, key, list.length === 0 ? null : [...list]);
          }
        } else if (value !== undefined && value !== _specOf(pfo)[key]) _setField(map, key, value);
      }
      return;
    }
    case "removePfo": {
      find(edit.name, "remove");
      const { seq, index } = _pfoItems(doc);
      seq!.items.splice(index(edit.name), 1);
      return;
    }
    case "addTrusted":
    case "removeTrusted": {
      if (!FINGERPRINT.test(edit.fingerprint)) {
        fail(
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
      return;
    }
  }
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
  const src = _parse(text ?? "", path);
  let current = _consoleFrom(src);
  const doc = src.doc as Document;
  if (text === null) doc.commentBefore = NEW_FILE_COMMENT;
  for (const edit of Array.isArray(edits) ? edits : [edits as ConsoleEdit]) {
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
    return parseConsoleSettings(text, path);
  } catch (err) {
    throw new ConfigError(
      `Cannot save settings: the change would make them invalid (${
        errorMessage(err)
      }); nothing was written`,
      { path, cause: err },
    );
  }
}

/** Texts this process last wrote, by absolute path, so watchers can skip them. */
export const _written = new Map<string, string>();

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
    _written.set(key, out.text);
    try {
      await writeFileAtomic(path, out.text);
    } catch (err) {
      _written.delete(key);
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
    _written.set(key, next);
    try {
      await writeFileAtomic(path, next);
    } catch (err) {
      _written.delete(key);
      throw new ConfigError(`Cannot save settings: ${errorMessage(err)}`, { path, cause: err });
    }
    return settings;
  });
}
