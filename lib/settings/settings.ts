/**
 * Settings files of the Console and the Daemon: load, validate, resolve,
 * and write back.
 *
 * Loading is a pure pipeline: parse the YAML, check every key and value
 * (unknown keys are errors, nothing is silently fixed), and produce a fully
 * resolved, frozen object. Every error is a {@linkcode ConfigError} that
 * points at `file:line:column`.
 *
 * Run-time changes (PFOs added, edited, removed; Daemons trusted) are
 * written back with {@linkcode updateConsoleSettings}, which edits the YAML
 * document in place so the user's comments and key order survive, refuses
 * to write an invalid result, and replaces the file atomically.
 *
 * The file sits beside the program and shares its name
 * (`portferry-console.yaml`); the identity key, certificate, control secret
 * and trust store sit beside it (see {@linkcode settingsPaths}).
 *
 * No environment variable overrides any setting.
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
  YAMLSeq,
} from "yaml";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllowRule } from "../net/allowlist.ts";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { writeFileAtomic } from "../core/io.ts";
import { readOwnTextFile, UnsafeFileError } from "../core/file_safety.ts";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "../core/log.ts";
import { INITIAL_WINDOW_BYTES, MAX_HELD_BYTES, PENDING_TIMEOUT_MS } from "../core/protocol.ts";
import {
  DEFAULT_SESSION_PORT,
  type HostPort,
  parseHostPort,
  parseListen,
  parseTarget,
} from "../net/hostport.ts";
import {
  findListenClash,
  findListenClashes,
  isProto,
  listenClashMessage,
  type PfoSpec,
  type Proto,
  PROTOS,
  type ResolvedPfo,
  resolvePfo,
  validatePfoName,
} from "./pfo.ts";

/** Longest delay `setTimeout` honours; larger millisecond settings are refused. */
export const MAX_DELAY_MS = 2_147_483_647;

/** Resolved Console settings. Every field has its default filled in. */
export interface ConsoleSettings {
  /** Where the Console listens for Daemons. Default 0.0.0.0:7470. */
  readonly session: HostPort;
  /** Accept every Daemon without asking. Default false. */
  readonly autoAccept: boolean;
  /** File holding the shared token, resolved against the settings file's folder; or null. */
  readonly tokenFile: string | null;
  /** Daemon fingerprints accepted with no prompt (`SHA256:<base64>`). */
  readonly trusted: readonly string[];
  /** Drain time on exit, in milliseconds. Default 5000. */
  readonly graceMs: number;
  /** A UDP flow idle this long is closed, in milliseconds. Default 60000. */
  readonly udpIdleMs: number;
  /** A Daemon left waiting for the operator this long is rejected, in milliseconds. Default 600000. */
  readonly pendingTimeoutMs: number;
  /** Username and password SOCKS PFOs require, or null for no authentication. */
  readonly socksAuth: { readonly username: string; readonly password: string } | null;
  /** Default "info". */
  readonly logLevel: LogLevel;
  /** Default "text". */
  readonly logFormat: LogFormat;
  /** Port forwarding operations, in file order. */
  readonly pfos: readonly ResolvedPfo[];
}

/** Resolved Daemon settings. Every field has its default filled in. */
export interface DaemonSettings {
  /** The Console's session address, or null when it must come from the command line. */
  readonly console: HostPort | null;
  /** The Console's pinned fingerprint (`SHA256:<base64>`), or null. */
  readonly fingerprint: string | null;
  /** File holding the shared token, resolved against the settings file's folder; or null. */
  readonly tokenFile: string | null;
  /** Reconnect with back-off after a session ends. Default true. */
  readonly reconnect: boolean;
  /** Longest wait between reconnect attempts, in milliseconds. Default 15000. */
  readonly backoffMaxMs: number;
  /** Deadline to connect and finish the handshake, in milliseconds. Default 10000. */
  readonly connectTimeoutMs: number;
  /**
   * Most bytes a session holds for the Console (early data of connections
   * still being made, and bytes their target has not taken yet). Over it,
   * new connections are refused. Default 67108864 (64 MiB).
   */
  readonly maxHeldBytes: number;
  /** Default "info". */
  readonly logLevel: LogLevel;
  /** Default "text". */
  readonly logFormat: LogFormat;
  /** Target allow-list entries, checked by the allow-list module. Empty allows all. */
  readonly allow: readonly string[];
}

/** Console settings when the file is missing or empty. */
export const DEFAULT_CONSOLE_SETTINGS: ConsoleSettings = Object.freeze({
  session: Object.freeze({ host: "0.0.0.0", port: DEFAULT_SESSION_PORT }),
  autoAccept: false,
  tokenFile: null,
  trusted: Object.freeze([]),
  graceMs: 5000,
  udpIdleMs: 60_000,
  pendingTimeoutMs: PENDING_TIMEOUT_MS,
  socksAuth: null,
  logLevel: "info",
  logFormat: "text",
  pfos: Object.freeze([]),
});

/** Daemon settings when the file is missing or empty. */
export const DEFAULT_DAEMON_SETTINGS: DaemonSettings = Object.freeze({
  console: null,
  fingerprint: null,
  tokenFile: null,
  reconnect: true,
  backoffMaxMs: 15_000,
  connectTimeoutMs: 10_000,
  maxHeldBytes: MAX_HELD_BYTES,
  logLevel: "info",
  logFormat: "text",
  allow: Object.freeze([]),
});

/** Files that live beside a settings file. */
export interface SettingsPaths {
  /** The settings file itself. */
  readonly settings: string;
  /** Identity private key (PEM, owner-only). */
  readonly key: string;
  /** Identity certificate (PEM). */
  readonly cert: string;
  /** Local control endpoint and secret (JSON, owner-only). */
  readonly control: string;
  /** Remembered fingerprints (JSON). */
  readonly trust: string;
}

/**
 * The files beside a settings file: `/d/portferry-console.yaml` gives
 * `/d/portferry-console.key.pem`, `.cert.pem`, `.control.json` and
 * `.trust.json`. A `.yaml` or `.yml` extension is dropped first.
 *
 * @example
 * ```ts
 * import { settingsPaths } from "./settings.ts";
 * const p = settingsPaths("/d/portferry-console.yaml");
 * if (p.key !== "/d/portferry-console.key.pem" || p.trust !== "/d/portferry-console.trust.json") {
 *   throw new Error(JSON.stringify(p));
 * }
 * ```
 */
export function settingsPaths(settingsFile: string): SettingsPaths {
  const stem = settingsFile.replace(/\.ya?ml$/i, "");
  return Object.freeze({
    settings: settingsFile,
    key: `${stem}.key.pem`,
    cert: `${stem}.cert.pem`,
    control: `${stem}.control.json`,
    trust: `${stem}.trust.json`,
  });
}

/** Options for {@linkcode defaultSettingsFile}; both default to the running process's. */
export interface DefaultSettingsFileOptions {
  /** Default `Deno.mainModule`. */
  mainModule?: string;
  /** Default `Deno.execPath()`. */
  execPath?: string;
}

/**
 * Where the settings file is when none is named. Run from source, it sits
 * beside the entry file as `portferry-<program>.yaml`. Compiled, it sits
 * beside the executable with the executable's name: `portferry-console`
 * (or `portferry-console.exe`) reads `portferry-console.yaml`.
 *
 * @example
 * ```ts
 * import { defaultSettingsFile } from "./settings.ts";
 * const fromSource = defaultSettingsFile("console", {
 *   mainModule: "file:///src/portferry/console.ts",
 *   execPath: "/usr/bin/deno",
 * });
 * if (fromSource !== "/src/portferry/portferry-console.yaml") throw new Error(fromSource);
 * const compiled = defaultSettingsFile("daemon", {
 *   mainModule: "file:///tmp/deno-compile-pfd/daemon.ts",
 *   execPath: "/opt/pf/pfd",
 * });
 * if (compiled !== "/opt/pf/pfd.yaml") throw new Error(compiled);
 * ```
 */
export function defaultSettingsFile(
  program: "console" | "daemon",
  options: DefaultSettingsFileOptions = {},
): string {
  const mainModule = options.mainModule ?? Deno.mainModule;
  const fromSource = mainModule.startsWith("file:") &&
    /\.[cm]?[jt]sx?$/.test(mainModule) &&
    !mainModule.includes("/deno-compile-");
  if (fromSource) {
    return join(dirname(fileURLToPath(mainModule)), `portferry-${program}.yaml`);
  }
  const execPath = options.execPath ?? Deno.execPath();
  const name = basename(execPath).replace(/\.exe$/i, "");
  return join(dirname(execPath), `${name}.yaml`);
}

// ---------------------------------------------------------------------------
// Validation

const CONSOLE_KEYS = [
  "session",
  "autoAccept",
  "tokenFile",
  "trusted",
  "graceMs",
  "udpIdleMs",
  "pendingTimeoutMs",
  "socksUsername",
  "socksPassword",
  "logLevel",
  "logFormat",
  "pfos",
] as const;

const DAEMON_KEYS = [
  "console",
  "fingerprint",
  "tokenFile",
  "reconnect",
  "backoffMaxMs",
  "connectTimeoutMs",
  "maxHeldBytes",
  "logLevel",
  "logFormat",
  "allow",
] as const;

const PFO_KEYS = ["name", "proto", "listen", "target", "enabled", "clients"] as const;

const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** `SHA256:` and the unpadded base64 of 32 bytes (43 characters). */
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/;

/** One parse: the text, its document and where its lines start. */
interface _Source {
  readonly path: string;
  readonly text: string;
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
}

/** A key and its value, as found in a mapping. */
interface _Entry {
  readonly key: Scalar;
  readonly value: YamlNode | null;
}

function _where(src: _Source, node: YamlNode | null | undefined) {
  const offset = node?.range?.[0];
  if (offset === undefined) return { path: src.path };
  const { line, col } = src.lines.linePos(offset);
  return { path: src.path, line, column: col };
}

function _fail(
  src: _Source,
  node: YamlNode | null | undefined,
  message: string,
  cause?: unknown,
): never {
  throw new ConfigError(message, { ..._where(src, node), cause });
}

function _parse(text: string, path: string): _Source {
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

function _deref(src: _Source, node: unknown): YamlNode | null {
  if (node === null || node === undefined) return null;
  if (isAlias(node)) return (node.resolve(src.doc) ?? null) as YamlNode | null;
  return node as YamlNode;
}

function _describe(node: YamlNode | null): string {
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
function _label(name: string): string {
  return name.includes('"') ? name : `"${name}"`;
}

function _isNull(node: YamlNode | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

/** The entries of a mapping, refusing keys not in `known`. */
function _entries(
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

type YamlMap = YAMLMap<unknown, unknown>;

function _at(e: _Entry): YamlNode {
  return e.value ?? e.key;
}

function _bool(src: _Source, name: string, e: _Entry | undefined, fallback: boolean): boolean {
  if (e === undefined) return fallback;
  if (isScalar(e.value) && typeof e.value.value === "boolean") return e.value.value;
  _fail(
    src,
    _at(e),
    `Cannot use ${_label(name)}: expected true or false, got ${_describe(e.value)}`,
  );
}

function _int(
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

function _string(src: _Source, name: string, e: _Entry): string {
  if (isScalar(e.value) && typeof e.value.value === "string") return e.value.value;
  _fail(src, _at(e), `Cannot use ${_label(name)}: expected a string, got ${_describe(e.value)}`);
}

/** A string, or the source text of an integer (`listen: 8080`, `session: 7470`). */
function _stringOrPort(src: _Source, name: string, e: _Entry): string {
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

function _nullableString(src: _Source, name: string, e: _Entry | undefined): string | null {
  if (e === undefined || _isNull(e.value)) return null;
  return _string(src, name, e);
}

function _choice<T extends string>(
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
function _list(src: _Source, name: string, e: _Entry | undefined): (YamlNode | null)[] {
  if (e === undefined || _isNull(e.value)) return [];
  if (!isSeq(e.value)) {
    _fail(src, _at(e), `Cannot use ${_label(name)}: expected a list, got ${_describe(e.value)}`);
  }
  return e.value.items.map((item) => _deref(src, item));
}

function _stringList(src: _Source, name: string, e: _Entry | undefined): string[] {
  return _list(src, name, e).map((item) => {
    if (isScalar(item) && typeof item.value === "string" && item.value !== "") return item.value;
    _fail(
      src,
      item ?? _at(e!),
      `Cannot use ${_label(name)}: expected a non-empty string, got ${_describe(item)}`,
    );
  });
}

function _allowRules(src: _Source, e: _Entry | undefined): string[] {
  const items = _list(src, "allow", e);
  const rules = _stringList(src, "allow", e);
  rules.forEach((rule, i) => {
    try {
      parseAllowRule(rule);
    } catch (err) {
      _fail(src, items[i], errorMessage(err));
    }
  });
  return rules;
}

function _fingerprint(src: _Source, name: string, node: YamlNode, value: string): string {
  if (FINGERPRINT.test(value)) return value;
  _fail(
    src,
    node,
    `Cannot use ${_label(name)}: ${
      JSON.stringify(value)
    } is not a fingerprint; expected "SHA256:" and 43 base64 characters, as the other side prints it`,
  );
}

function _tokenFile(src: _Source, e: _Entry | undefined): string | null {
  const file = _nullableString(src, "tokenFile", e);
  if (file === null) return null;
  if (file === "") {
    _fail(src, _at(e!), `Cannot use "tokenFile": the path is empty; remove the key or name a file`);
  }
  return isAbsolute(file) ? file : join(dirname(src.path), file);
}

function _hostPort(
  src: _Source,
  name: string,
  e: _Entry,
  options: Parameters<typeof parseHostPort>[1],
): HostPort {
  const text = _stringOrPort(src, name, e);
  try {
    return parseHostPort(text, options);
  } catch (err) {
    _fail(src, _at(e), `Cannot use ${_label(name)}: ${errorMessage(err)}`, err);
  }
}

function _rootEntries(src: _Source, known: readonly string[]): Map<string, _Entry> {
  const root = _deref(src, src.doc.contents);
  if (_isNull(root)) return new Map();
  if (!isMap(root)) {
    _fail(
      src,
      root,
      `Cannot read settings: expected keys such as "${known[0]}:", got ${_describe(root)}`,
    );
  }
  return _entries(src, root, known, "settings");
}

function _pfo(
  src: _Source,
  node: YamlNode | null,
  index: number,
): { pfo: ResolvedPfo; nameNode: YamlNode } {
  const what = `PFO #${index + 1}`;
  if (!isMap(node)) {
    _fail(
      src,
      node,
      `Cannot read ${what}: expected a mapping with name, listen and target, got ${
        _describe(node)
      }`,
    );
  }
  const entries = _entries(src, node, PFO_KEYS, what);
  const nameEntry = entries.get("name");
  if (nameEntry === undefined) {
    _fail(src, node, `Cannot read ${what}: "name" is missing; give it a name`);
  }
  const name = _string(src, `"name" of ${what}`, nameEntry);
  // Messages from pfo.ts that already name the PFO are used as they are.
  const check = <T>(at: YamlNode, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      const message = errorMessage(err);
      const named = message.startsWith(`Cannot use PFO "${name}"`) ||
        message.startsWith("Cannot use PFO name");
      _fail(src, at, named ? message : `Cannot use PFO "${name}": ${message}`, err);
    }
  };
  check(_at(nameEntry), () => validatePfoName(name));
  const protoEntry = entries.get("proto");
  let proto: Proto = "tcp";
  if (protoEntry !== undefined) {
    const v = isScalar(protoEntry.value) ? protoEntry.value.value : undefined;
    if (!isProto(v)) {
      _fail(
        src,
        _at(protoEntry),
        `Cannot use PFO "${name}": "proto" must be one of ${PROTOS.join(", ")}, got ${
          _describe(protoEntry.value)
        }`,
      );
    }
    proto = v;
  }
  const listenEntry = entries.get("listen");
  if (listenEntry === undefined) {
    _fail(src, node, `Cannot use PFO "${name}": "listen" is missing; add listen: "[HOST:]PORT"`);
  }
  const listen = _stringOrPort(src, `"listen" of PFO "${name}"`, listenEntry);
  check(_at(listenEntry), () => parseListen(listen));
  const targetEntry = entries.get("target");
  const target = targetEntry === undefined || _isNull(targetEntry.value)
    ? null
    : _stringOrPort(src, `"target" of PFO "${name}"`, targetEntry);
  if (target !== null) check(_at(targetEntry!), () => parseTarget(target));
  const enabled = _bool(src, `"enabled" of PFO "${name}"`, entries.get("enabled"), true);
  const clientsEntry = entries.get("clients");
  const clients = _stringList(src, `"clients" of PFO "${name}"`, clientsEntry);
  if (clientsEntry !== undefined) {
    const items = _list(src, `"clients" of PFO "${name}"`, clientsEntry);
    clients.forEach((rule, i) =>
      check(
        items[i]!,
        () =>
          resolvePfo({ name, proto: "tcp", listen: "1", target: "h:1", enabled, clients: [rule] }),
      )
    );
  }
  const spec: PfoSpec = { name, proto, listen, target, enabled, clients };
  const pfo = check(targetEntry === undefined ? node : _at(targetEntry), () => resolvePfo(spec));
  return { pfo, nameNode: _at(nameEntry) };
}

function _pfos(src: _Source, e: _Entry | undefined): ResolvedPfo[] {
  const seen = new Map<string, YamlNode>();
  const pfos = _list(src, "pfos", e).map((node, index) => {
    const { pfo, nameNode } = _pfo(src, node, index);
    const first = seen.get(pfo.name);
    if (first !== undefined) {
      const { line } = _where(src, first);
      _fail(
        src,
        nameNode,
        `Cannot use PFO name "${pfo.name}" twice: line ${line} already uses it; rename one of them`,
      );
    }
    seen.set(pfo.name, nameNode);
    return pfo;
  });
  const clash = findListenClashes(pfos);
  if (clash !== undefined) {
    const [holder, later] = clash;
    const { line } = _where(src, seen.get(holder.name)!);
    _fail(
      src,
      seen.get(later.name)!,
      `${listenClashMessage("use", later, holder)} (line ${line})`,
    );
  }
  return pfos;
}

function _trusted(src: _Source, e: _Entry | undefined): string[] {
  const items = _list(src, "trusted", e);
  const out: string[] = [];
  for (const item of items) {
    if (!isScalar(item) || typeof item.value !== "string") {
      _fail(
        src,
        item ?? _at(e!),
        `Cannot use "trusted": expected fingerprint strings, got ${_describe(item)}`,
      );
    }
    const fp = _fingerprint(src, "trusted", item, item.value);
    if (out.includes(fp)) _fail(src, item, `Cannot use "trusted": ${fp} is listed twice; keep one`);
    out.push(fp);
  }
  return out;
}

function _socksAuth(
  src: _Source,
  user: _Entry | undefined,
  pass: _Entry | undefined,
): ConsoleSettings["socksAuth"] {
  const username = _nullableString(src, "socksUsername", user);
  const password = _nullableString(src, "socksPassword", pass);
  if (username === null && password === null) return null;
  if (username === null || password === null) {
    _fail(
      src,
      _at((user ?? pass)!),
      "Cannot use SOCKS authentication: set both socksUsername and socksPassword",
    );
  }
  for (
    const [name, value, e] of [["socksUsername", username, user], [
      "socksPassword",
      password,
      pass,
    ]] as const
  ) {
    if (value.length < 1 || new TextEncoder().encode(value).length > 255) {
      _fail(src, _at(e!), `Cannot use ${_label(name)}: SOCKS5 allows 1 to 255 bytes`);
    }
  }
  return Object.freeze({ username, password });
}

function _consoleFrom(src: _Source): ConsoleSettings {
  const e = _rootEntries(src, CONSOLE_KEYS);
  const d = DEFAULT_CONSOLE_SETTINGS;
  const sessionEntry = e.get("session");
  return Object.freeze({
    session: sessionEntry === undefined ? d.session : _hostPort(src, "session", sessionEntry, {
      defaultHost: d.session.host,
      allowPortZero: true,
    }),
    autoAccept: _bool(src, "autoAccept", e.get("autoAccept"), d.autoAccept),
    tokenFile: _tokenFile(src, e.get("tokenFile")),
    trusted: Object.freeze(_trusted(src, e.get("trusted"))),
    graceMs: _int(src, "graceMs", e.get("graceMs"), d.graceMs, 0),
    udpIdleMs: _int(src, "udpIdleMs", e.get("udpIdleMs"), d.udpIdleMs, 100),
    pendingTimeoutMs: _int(
      src,
      "pendingTimeoutMs",
      e.get("pendingTimeoutMs"),
      d.pendingTimeoutMs,
      1000,
    ),
    socksAuth: _socksAuth(src, e.get("socksUsername"), e.get("socksPassword")),
    logLevel: _choice(src, "logLevel", e.get("logLevel"), LOG_LEVELS, d.logLevel),
    logFormat: _choice(src, "logFormat", e.get("logFormat"), LOG_FORMATS, d.logFormat),
    pfos: Object.freeze(_pfos(src, e.get("pfos"))),
  });
}

function _daemonFrom(src: _Source): DaemonSettings {
  const e = _rootEntries(src, DAEMON_KEYS);
  const d = DEFAULT_DAEMON_SETTINGS;
  const consoleEntry = e.get("console");
  const fpEntry = e.get("fingerprint");
  const fp = _nullableString(src, "fingerprint", fpEntry);
  return Object.freeze({
    console: consoleEntry === undefined || _isNull(consoleEntry.value)
      ? null
      : _hostPort(src, "console", consoleEntry, { defaultPort: DEFAULT_SESSION_PORT }),
    fingerprint: fp === null ? null : _fingerprint(src, "fingerprint", _at(fpEntry!), fp),
    tokenFile: _tokenFile(src, e.get("tokenFile")),
    reconnect: _bool(src, "reconnect", e.get("reconnect"), d.reconnect),
    backoffMaxMs: _int(src, "backoffMaxMs", e.get("backoffMaxMs"), d.backoffMaxMs, 1),
    connectTimeoutMs: _int(
      src,
      "connectTimeoutMs",
      e.get("connectTimeoutMs"),
      d.connectTimeoutMs,
      1,
    ),
    maxHeldBytes: _int(
      src,
      "maxHeldBytes",
      e.get("maxHeldBytes"),
      d.maxHeldBytes,
      INITIAL_WINDOW_BYTES,
    ),
    logLevel: _choice(src, "logLevel", e.get("logLevel"), LOG_LEVELS, d.logLevel),
    logFormat: _choice(src, "logFormat", e.get("logFormat"), LOG_FORMATS, d.logFormat),
    allow: Object.freeze(_allowRules(src, e.get("allow"))),
  });
}

/**
 * Parses and checks Console settings text. `path` names the file in errors
 * and anchors a relative `tokenFile`. Empty text gives the defaults.
 *
 * @throws {ConfigError} at `path:line:column` for malformed YAML, an unknown
 * key, a wrong type, a bad PFO or a PFO name used twice.
 *
 * @example
 * ```ts
 * import { parseConsoleSettings } from "./settings.ts";
 * const s = parseConsoleSettings("pfos:\n  - name: web\n    listen: 8080\n    target: localhost:80\n", "/etc/pf.yaml");
 * if (s.pfos[0].listenAddr.port !== 8080 || s.session.port !== 7470) throw new Error("bad");
 * try {
 *   parseConsoleSettings("colour: blue\n", "/etc/pf.yaml");
 *   throw new Error("accepted an unknown key");
 * } catch (err) {
 *   if (!(err instanceof Error) || !err.message.startsWith("/etc/pf.yaml:1:1: ")) throw err;
 * }
 * ```
 */
export function parseConsoleSettings(text: string, path: string): ConsoleSettings {
  return _consoleFrom(_parse(text, path));
}

/**
 * Parses and checks Daemon settings text. `path` names the file in errors
 * and anchors a relative `tokenFile`. Empty text gives the defaults.
 *
 * @throws {ConfigError} at `path:line:column` for malformed YAML, an unknown key or a wrong type.
 *
 * @example
 * ```ts
 * import { parseDaemonSettings } from "./settings.ts";
 * const s = parseDaemonSettings("console: office.example.com\nreconnect: false\n", "d.yaml");
 * if (s.console?.port !== 7470 || s.reconnect !== false) throw new Error("bad");
 * ```
 */
export function parseDaemonSettings(text: string, path: string): DaemonSettings {
  return _daemonFrom(_parse(text, path));
}

// ---------------------------------------------------------------------------
// Files

/** A loaded settings file: the resolved settings and the text they came from (null: no file). */
export interface LoadedSettings<T> {
  /** Resolved settings. */
  readonly settings: T;
  /** The file's text, or null when the file does not exist. */
  readonly text: string | null;
}

async function _readOrNull(path: string): Promise<string | null> {
  try {
    return await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    if (err instanceof UnsafeFileError) throw new ConfigError(err.message, { cause: err });
    throw new ConfigError(`Cannot read settings file: ${errorMessage(err)}`, { path, cause: err });
  }
}

/**
 * Loads the Console settings file. A missing file gives the defaults.
 *
 * @throws {ConfigError} when the file cannot be read, is invalid, belongs to
 * another user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { loadConsoleSettings } from "./settings.ts";
 * const { settings, text } = await loadConsoleSettings("/no/such/dir/portferry-console.yaml");
 * if (text !== null || settings.pfos.length !== 0) throw new Error("bad");
 * ```
 */
export async function loadConsoleSettings(path: string): Promise<LoadedSettings<ConsoleSettings>> {
  const text = await _readOrNull(path);
  const settings = text === null ? DEFAULT_CONSOLE_SETTINGS : parseConsoleSettings(text, path);
  return { settings, text };
}

/**
 * Loads the Daemon settings file. A missing file gives the defaults.
 *
 * @throws {ConfigError} when the file cannot be read, is invalid, belongs to
 * another user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { loadDaemonSettings } from "./settings.ts";
 * const { settings } = await loadDaemonSettings("/no/such/dir/portferry-daemon.yaml");
 * if (!settings.reconnect || settings.console !== null) throw new Error("bad");
 * ```
 */
export async function loadDaemonSettings(path: string): Promise<LoadedSettings<DaemonSettings>> {
  const text = await _readOrNull(path);
  const settings = text === null ? DEFAULT_DAEMON_SETTINGS : parseDaemonSettings(text, path);
  return { settings, text };
}

/**
 * Reads a shared token file, trimming white space around the token.
 *
 * @throws {ConfigError} naming the file when it cannot be read, holds no
 * token, belongs to another user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { readTokenFile } from "./settings.ts";
 * const file = await Deno.makeTempFile();
 * await Deno.writeTextFile(file, "  s3cret\n");
 * if (await readTokenFile(file) !== "s3cret") throw new Error("bad");
 * await Deno.remove(file);
 * ```
 */
export async function readTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof UnsafeFileError) throw new ConfigError(err.message, { cause: err });
    throw new ConfigError(`Cannot read token file "${path}": ${errorMessage(err)}`, { cause: err });
  }
  const token = text.trim();
  if (token === "") {
    throw new ConfigError(
      `Cannot use token file "${path}": it is empty; put the shared token in it`,
    );
  }
  return token;
}

// ---------------------------------------------------------------------------
// Write-back

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
 * import { applyConsoleEdits } from "./settings.ts";
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
const _written = new Map<string, string>();

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
 * import { updateConsoleSettings } from "./settings.ts";
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
    const text = await _readOrNull(path);
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
 * import { loadDaemonSettings, rememberConsole } from "./settings.ts";
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
    const text = await _readOrNull(path);
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

// ---------------------------------------------------------------------------
// Watching

/** Options for {@linkcode watchSettings}. */
export interface WatchSettingsOptions<T> {
  /** Turns file text into settings, e.g. {@linkcode parseConsoleSettings}. */
  parse: (text: string, path: string) => T;
  /** Called with the new settings after the file changed. */
  onChange: (settings: T, text: string) => void;
  /** Called when the changed file is invalid or unreadable; keep the old settings. */
  onError: (err: ConfigError) => void;
  /** Stops watching. */
  signal: AbortSignal;
  /** The text the caller's settings came from (from a load); no event fires for it. */
  knownText?: string | null;
  /** Quiet time before a change is read. Default 100 ms. */
  debounceMs?: number;
}

/**
 * Watches a settings file and reports each change once it settles. It
 * watches the folder (an editor's atomic rename replaces the file), skips
 * changes this process made with {@linkcode updateConsoleSettings} (by
 * comparing the text), and reports through `onError` an invalid file, or one
 * that belongs to another user (not root) or that group or others can write.
 *
 * The watch is in place when the function returns. The promise settles when
 * `signal` aborts; it rejects if a callback throws, which also stops the watch,
 * and with a {@linkcode ConfigError} when the folder cannot be watched.
 *
 * @example
 * ```ts
 * import { parseConsoleSettings, watchSettings } from "./settings.ts";
 * const dir = await Deno.makeTempDir();
 * const ac = new AbortController();
 * const done = watchSettings(`${dir}/portferry-console.yaml`, {
 *   parse: parseConsoleSettings,
 *   onChange: () => {},
 *   onError: () => {},
 *   signal: ac.signal,
 * });
 * ac.abort();
 * await done;
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function watchSettings<T>(path: string, options: WatchSettingsOptions<T>): Promise<void> {
  const { parse, onChange, onError, signal } = options;
  const debounceMs = options.debounceMs ?? 100;
  if (signal.aborted) return Promise.resolve();
  const abs = resolve(path);
  const name = basename(abs);
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(dirname(abs), { recursive: false });
  } catch (err) {
    return Promise.reject(
      new ConfigError(`Cannot watch the settings folder: ${errorMessage(err)}`, {
        path,
        cause: err,
      }),
    );
  }
  let lastSeen = options.knownText;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: Promise<void> = Promise.resolve();
  let failure: { err: unknown } | undefined;
  let closed = false;

  const close = () => {
    clearTimeout(timer);
    if (closed) return;
    closed = true;
    try {
      watcher.close();
    } catch {
      // Already closed.
    }
  };

  const check = async (): Promise<void> => {
    if (signal.aborted || failure) return;
    let text: string;
    try {
      text = await readOwnTextFile(abs);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof UnsafeFileError) {
        // Not reloaded; once fixed, the next change event reads it again.
        onError(
          new ConfigError(
            `Cannot reload settings: ${err.message}; keeping the current settings`,
            { cause: err },
          ),
        );
        return;
      }
      if (err instanceof Deno.errors.NotFound) {
        if (lastSeen === null) return;
        lastSeen = null;
        onError(
          new ConfigError(
            "Cannot reload settings: the file is gone; keeping the current settings",
            {
              path,
              cause: err,
            },
          ),
        );
        return;
      }
      onError(
        new ConfigError(`Cannot reload settings: ${errorMessage(err)}`, { path, cause: err }),
      );
      return;
    }
    if (signal.aborted || text === lastSeen) return;
    lastSeen = text;
    const ours = _written.get(abs);
    if (ours !== undefined) {
      if (ours === text) return;
      // Someone else has written since; our text no longer marks our own write.
      _written.delete(abs);
    }
    let settings: T;
    try {
      settings = parse(text, path);
    } catch (err) {
      onError(
        err instanceof ConfigError
          ? err
          : new ConfigError(`Cannot reload settings: ${errorMessage(err)}`, { path, cause: err }),
      );
      return;
    }
    onChange(settings, text);
  };

  signal.addEventListener("abort", close, { once: true });
  return (async () => {
    try {
      for await (const event of watcher) {
        if (!event.paths.some((p) => basename(p) === name)) continue;
        clearTimeout(timer);
        timer = setTimeout(() => {
          pending = pending.then(check).catch((err) => {
            failure ??= { err };
            close();
          });
        }, debounceMs);
      }
    } finally {
      close();
      signal.removeEventListener("abort", close);
      await pending;
    }
    if (failure) throw failure.err;
  })();
}
