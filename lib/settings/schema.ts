/**
 * The settings of the Console and the Daemon: their types and defaults, and
 * the pure pipeline that turns a file's text into them. Parse the YAML,
 * check every key and value (unknown keys are errors, nothing is silently
 * fixed), and produce a fully resolved, frozen object. Every error is a
 * {@linkcode ConfigError} that points at `file:line:column`.
 *
 * No environment variable overrides any setting.
 *
 * @module
 */

import { isMap, isScalar, isSeq, type Node as YamlNode } from "yaml";
import { dirname, isAbsolute, join } from "node:path";
import { parseAllowRule } from "../net/allowlist.ts";
import { errorMessage } from "../core/errors.ts";
import { LOG_LEVELS, type LogFormat, type LogLevel } from "../core/log.ts";
import { INITIAL_WINDOW_BYTES, MAX_HELD_BYTES, PENDING_TIMEOUT_MS } from "../core/protocol.ts";
import { STREAM_WINDOW_LIMIT_BYTES, STREAM_WINDOW_MAX_BYTES } from "../core/protocol.ts";
import {
  DEFAULT_SESSION_PORT,
  type HostPort,
  parseHostPort,
  parseListen,
  parseTarget,
} from "../net/hostport.ts";
import {
  findListenClashes,
  isProto,
  listenClashMessage,
  listensClash,
  type PfoSpec,
  type Proto,
  PROTOS,
  type ResolvedPfo,
  resolvePfo,
  validatePfoName,
} from "./pfo.ts";
import {
  _at,
  _bool,
  _choice,
  _deref,
  _describe,
  _entries,
  type _Entry,
  _fail,
  _int,
  _isNull,
  _label,
  _list,
  _nullableString,
  _parse,
  type _Source,
  _string,
  _stringList,
  _stringOrPort,
  _where,
  MAX_DELAY_MS,
} from "./_yaml.ts";
import { readSettingsText } from "./paths.ts";
import { parseProxyUrl, type ProxyConfig } from "../net/proxy.ts";
import { TrustedProxies } from "../net/forwarded.ts";
import { isWebSocketUrl, parseWebSocketUrl, type WebSocketUrl } from "../net/console_url.ts";
import { type PlainValue, readPlainPfos } from "./_plain.ts";
import {
  _hasAnchors,
  changedRegion,
  dedentEntry,
  entryHolding,
  layoutOf,
  type PfoLayout,
  resized,
} from "./_layout.ts";

export { MAX_DELAY_MS };

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
  /** Path of the WebSocket upgrade on the session port, or null for none. Default "/portferry". */
  readonly websocketPath: string | null;
  /** Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` the Console believes. */
  readonly trustedProxies: readonly string[];
  /** Where the web dashboard listens (default 127.0.0.1, a port the system picks); null: off. */
  readonly dashboard: HostPort | null;
  /** Largest receive window one stream grows to, in bytes. Default 16777216 (16 MiB). */
  readonly streamWindowMax: number;
}

/** Resolved Daemon settings. Every field has its default filled in. */
export interface DaemonSettings {
  /**
   * The Console's session address (a `ws://` or `wss://` address reads as a
   * {@linkcode WebSocketUrl}), or null when it must come from the command line.
   */
  readonly console: HostPort | WebSocketUrl | null;
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
  /**
   * The HTTP proxy to dial through (`proxy: http://[USER:PASS@]HOST:PORT`);
   * "none" dials directly and ignores the environment; null (the default)
   * lets `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` decide.
   */
  readonly proxy: ProxyConfig | "none" | null;
  /** File holding the proxy's `USER:PASS`, resolved against the settings file's folder; or null. */
  readonly proxyAuthFile: string | null;
  /** PEM file of the CA a `wss://` web server chains to (`--ca`), resolved like proxyAuthFile; or null. */
  readonly ca: string | null;
  /** Where the web dashboard listens (default 127.0.0.1, a port the system picks); null: off. */
  readonly dashboard: HostPort | null;
  /** Largest receive window one stream grows to, in bytes. Default 16777216 (16 MiB). */
  readonly streamWindowMax: number;
}

/** The web dashboard's address by default: loopback, a port of its own. */
export const DEFAULT_DASHBOARD: HostPort = Object.freeze({ host: "127.0.0.1", port: 0 });

/** `dashboard:` in either settings file: `[HOST:]PORT`, or null to turn the dashboard off. */
function _dashboard(src: _Source, e: _Entry | undefined): HostPort | null {
  if (e === undefined) return DEFAULT_DASHBOARD;
  if (_isNull(e.value)) return null;
  return _hostPort(src, "dashboard", e, { defaultHost: "127.0.0.1", allowPortZero: true });
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
  websocketPath: "/portferry",
  trustedProxies: Object.freeze([]),
  dashboard: DEFAULT_DASHBOARD,
  streamWindowMax: STREAM_WINDOW_MAX_BYTES,
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
  proxy: null,
  proxyAuthFile: null,
  ca: null,
  dashboard: DEFAULT_DASHBOARD,
  streamWindowMax: STREAM_WINDOW_MAX_BYTES,
});

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
  "websocketPath",
  "trustedProxies",
  "dashboard",
  "streamWindowMax",
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
  "proxy",
  "proxyAuthFile",
  "ca",
  "dashboard",
  "streamWindowMax",
] as const;

/** The keys of one PFO entry. */
export const PFO_KEYS = ["name", "proto", "listen", "target", "enabled", "clients"] as const;

const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** `SHA256:` and the unpadded base64 of 32 bytes (43 characters). */
export const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/;

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
  return _file(src, "tokenFile", e);
}

function _file(src: _Source, name: string, e: _Entry | undefined): string | null {
  const file = _nullableString(src, name, e);
  if (file === null) return null;
  if (file === "") {
    _fail(src, _at(e!), `Cannot use "${name}": the path is empty; remove the key or name a file`);
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

function _consoleAddress(src: _Source, e: _Entry): HostPort | WebSocketUrl {
  const text = _stringOrPort(src, "console", e);
  if (!isWebSocketUrl(text)) {
    return _hostPort(src, "console", e, { defaultPort: DEFAULT_SESSION_PORT });
  }
  try {
    return Object.freeze(parseWebSocketUrl(text));
  } catch (err) {
    _fail(src, _at(e), `Cannot use ${_label("console")}: ${errorMessage(err)}`, err);
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

/** Console settings from a parsed file. */
export function _consoleFrom(src: _Source): ConsoleSettings {
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
    websocketPath: _websocketPath(src, e.get("websocketPath")),
    trustedProxies: Object.freeze(_trustedProxies(src, e.get("trustedProxies"))),
    dashboard: _dashboard(src, e.get("dashboard")),
    streamWindowMax: _windowMax(src, e.get("streamWindowMax"), d.streamWindowMax),
  });
}

function _websocketPath(src: _Source, e: _Entry | undefined): string | null {
  if (e === undefined) return DEFAULT_CONSOLE_SETTINGS.websocketPath;
  const path = _nullableString(src, "websocketPath", e);
  if (path !== null && !/^\/[A-Za-z0-9._~!$&'()*+,;=:@%\/-]*$/.test(path)) {
    _fail(
      src,
      _at(e),
      `Cannot use "websocketPath": ${
        JSON.stringify(path)
      } is not a URL path; expected one starting with "/", such as "/portferry", or null for none`,
    );
  }
  return path;
}

function _trustedProxies(src: _Source, e: _Entry | undefined): string[] {
  const items = _list(src, "trustedProxies", e);
  const entries = _stringList(src, "trustedProxies", e);
  entries.forEach((entry, i) => {
    try {
      TrustedProxies.parse([entry]);
    } catch (err) {
      _fail(src, items[i], errorMessage(err));
    }
  });
  return entries;
}

/** `streamWindowMax`: from the initial window to {@linkcode STREAM_WINDOW_LIMIT_BYTES}. */
function _windowMax(src: _Source, e: _Entry | undefined, fallback: number): number {
  const v = _int(src, "streamWindowMax", e, fallback, 0);
  if (v < INITIAL_WINDOW_BYTES || v > STREAM_WINDOW_LIMIT_BYTES) {
    _fail(
      src,
      _at(e!),
      `Cannot use ${
        _label("streamWindowMax")
      }: ${v} is out of range; use ${INITIAL_WINDOW_BYTES} to ${STREAM_WINDOW_LIMIT_BYTES}`,
    );
  }
  return v;
}

/** Daemon settings from a parsed file. */
export function _daemonFrom(src: _Source): DaemonSettings {
  const e = _rootEntries(src, DAEMON_KEYS);
  const d = DEFAULT_DAEMON_SETTINGS;
  const consoleEntry = e.get("console");
  const fpEntry = e.get("fingerprint");
  const fp = _nullableString(src, "fingerprint", fpEntry);
  return Object.freeze({
    console: consoleEntry === undefined || _isNull(consoleEntry.value)
      ? null
      : _consoleAddress(src, consoleEntry),
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
    proxy: _proxy(src, e.get("proxy")),
    proxyAuthFile: _file(src, "proxyAuthFile", e.get("proxyAuthFile")),
    ca: _file(src, "ca", e.get("ca")),
    dashboard: _dashboard(src, e.get("dashboard")),
    streamWindowMax: _windowMax(src, e.get("streamWindowMax"), d.streamWindowMax),
  });
}

function _proxy(src: _Source, e: _Entry | undefined): ProxyConfig | "none" | null {
  const text = _nullableString(src, "proxy", e);
  if (text === null || text === "none") return text;
  try {
    return parseProxyUrl(text);
  } catch (err) {
    _fail(src, _at(e!), `Cannot use ${_label("proxy")}: ${errorMessage(err)}, or none`, err);
  }
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
 * import { parseConsoleSettings } from "./schema.ts";
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
  return _parseConsole(text, path).settings;
}

// ---------------------------------------------------------------------------
// Parsed once: the last parse of each file is kept, and a change inside one
// PFO entry is read from that entry alone (see _layout.ts).

/** One parse of a Console settings text. */
export interface _ConsoleParse {
  readonly text: string;
  readonly settings: ConsoleSettings;
  /** Where the PFO entries sit in `text`; null when the file is not plain enough. */
  readonly layout: PfoLayout | null;
}

/** The last parse of each settings file, by path, newest last. */
const _parses = new Map<string, _ConsoleParse>();

/** Files whose last parse is kept. */
const KEPT_PARSES = 4;

/** Keeps `parse` as the last parse of `path`. */
export function _rememberParse(path: string, parse: _ConsoleParse): void {
  _parses.delete(path);
  _parses.set(path, parse);
  if (_parses.size > KEPT_PARSES) _parses.delete(_parses.keys().next().value!);
}

/**
 * Console settings text, parsed: the kept parse when the text is the same,
 * the changed entry alone when only one entry changed, else the whole text.
 */
export function _parseConsole(text: string, path: string): _ConsoleParse {
  const last = _parses.get(path);
  if (last?.text === text) return last;
  const next = (last && _reparseEntry(last, text, path)) ?? _parseWhole(text, path);
  _rememberParse(path, next);
  return next;
}

function _parseWhole(text: string, path: string): _ConsoleParse {
  return _parsePlain(text, path) ?? _parseFull(text, path);
}

/** `text` read by the YAML library, all of it. */
export function _parseFull(text: string, path: string): _ConsoleParse {
  const src = _parse(text, path);
  return { text, settings: _consoleFrom(src), layout: layoutOf(src) };
}

/**
 * `text` read with its `pfos` list taken line by line (see _plain.ts) and the
 * rest by the YAML library; null when the list is not plain or anything is
 * wrong, so that {@linkcode _parseFull} says what and where. Gives what
 * `_parseFull` gives.
 */
export function _parsePlain(text: string, path: string): _ConsoleParse | null {
  const plain = readPlainPfos(text);
  if (plain === null) return null;
  try {
    const src = _parse(plain.rest, path);
    if (!_emptyPfosKeyAt(src, plain.keyOffset) || _hasAnchors(src)) return null;
    const pfos = plain.entries.map(_plainPfo);
    if (new Set(pfos.map((p) => p.name)).size !== pfos.length) return null;
    if (findListenClashes(pfos) !== undefined) return null;
    const settings = Object.freeze({ ..._consoleFrom(src), pfos: Object.freeze(pfos) });
    return { text, settings, layout: plain.layout };
  } catch {
    return null;
  }
}

/** Whether the root of `src` is a block mapping whose `pfos` key, at `offset`, has no value. */
function _emptyPfosKeyAt(src: _Source, offset: number): boolean {
  const root = src.doc.contents;
  if (!isMap(root) || root.flow) return false;
  const pair = root.items.find((p) => isScalar(p.key) && p.key.value === "pfos");
  return pair !== undefined && isScalar(pair.key) && pair.key.range?.[0] === offset &&
    _isNull(_deref(src, pair.value));
}

/** One plain entry, checked as {@linkcode _pfo} checks it; throws on anything `_pfo` would refuse. */
function _plainPfo(fields: ReadonlyMap<string, PlainValue>): ResolvedPfo {
  for (const key of fields.keys()) {
    if (key === "clients" || !(PFO_KEYS as readonly string[]).includes(key)) {
      throw new Error(`not plain: ${key}`);
    }
  }
  const text = (key: string, port: boolean): string | undefined => {
    const v = fields.get(key);
    if (v === undefined || typeof v === "string") return v;
    if (port && typeof v === "object") return v.port;
    throw new Error(`not plain: ${key}`);
  };
  const name = text("name", false);
  const proto = text("proto", false) ?? "tcp";
  const listen = text("listen", true);
  const enabled = fields.get("enabled") ?? true;
  if (name === undefined || listen === undefined || !isProto(proto)) throw new Error("not plain");
  if (typeof enabled !== "boolean") throw new Error("not plain: enabled");
  const target = text("target", true) ?? null;
  return resolvePfo({ name, proto, listen, target, enabled, clients: [] });
}

/** `text` read from `last` when it changed inside one entry only; else undefined. */
function _reparseEntry(last: _ConsoleParse, text: string, path: string) {
  if (last.layout === null) return undefined;
  const region = changedRegion(last.text, text);
  const i = entryHolding(last.layout, region.from, region.to);
  if (i < 0) return undefined;
  const start = last.layout.starts[i];
  const end = last.layout.ends[i] + (region.toAfter - region.to);
  const pfo = _readEntry(text.slice(start, end), last.layout.indent, path, i);
  const settings = pfo && _withPfo(last.settings, i, pfo);
  if (settings === undefined) return undefined;
  return { text, settings, layout: resized(last.layout, i, start, end - start) };
}

/**
 * One PFO entry's text (`  - name: ...`, at `indent`) read and checked alone;
 * undefined unless it is exactly one valid entry that reads the same in place.
 */
export function _readEntry(
  entry: string,
  indent: string,
  path: string,
  index: number,
): ResolvedPfo | undefined {
  const plain = dedentEntry(entry, indent);
  // A block scalar could take in the lines after the entry; read those whole.
  if (plain === null || !plain.startsWith("- ") || /[|>]/.test(plain)) return undefined;
  try {
    const src = _parse(plain, path);
    const root = src.doc.contents;
    if (!isSeq(root) || root.items.length !== 1) return undefined;
    return _pfo(src, _deref(src, root.items[0]), index).pfo;
  } catch {
    return undefined; // The whole-file parse says what is wrong, and where.
  }
}

/**
 * `settings` with PFO `i` replaced by `pfo` (or appended, `i` one past the
 * last); undefined when its name or listen address is another PFO's.
 */
export function _withPfo(
  settings: ConsoleSettings,
  i: number,
  pfo: ResolvedPfo,
): ConsoleSettings | undefined {
  const pfos = settings.pfos;
  for (let j = 0; j < pfos.length; j++) {
    if (j !== i && (pfos[j].name === pfo.name || listensClash(pfo, pfos[j]))) return undefined;
  }
  const next = [...pfos];
  next[i] = pfo;
  return Object.freeze({ ...settings, pfos: Object.freeze(next) });
}

/**
 * Parses and checks Daemon settings text. `path` names the file in errors
 * and anchors a relative `tokenFile`. Empty text gives the defaults.
 *
 * @throws {ConfigError} at `path:line:column` for malformed YAML, an unknown key or a wrong type.
 *
 * @example
 * ```ts
 * import { parseDaemonSettings } from "./schema.ts";
 * const s = parseDaemonSettings("console: office.example.com\nreconnect: false\n", "d.yaml");
 * if (s.console?.port !== 7470 || s.reconnect !== false) throw new Error("bad");
 * ```
 */
export function parseDaemonSettings(text: string, path: string): DaemonSettings {
  return _daemonFrom(_parse(text, path));
}

/** A loaded settings file: the resolved settings and the text they came from (null: no file). */
export interface LoadedSettings<T> {
  /** Resolved settings. */
  readonly settings: T;
  /** The file's text, or null when the file does not exist. */
  readonly text: string | null;
}

/**
 * Loads the Console settings file. A missing file gives the defaults.
 *
 * @throws {ConfigError} when the file cannot be read, is invalid, belongs to
 * another user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { loadConsoleSettings } from "./schema.ts";
 * const { settings, text } = await loadConsoleSettings("/no/such/dir/portferry-console.yaml");
 * if (text !== null || settings.pfos.length !== 0) throw new Error("bad");
 * ```
 */
export async function loadConsoleSettings(path: string): Promise<LoadedSettings<ConsoleSettings>> {
  const text = await readSettingsText(path);
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
 * import { loadDaemonSettings } from "./schema.ts";
 * const { settings } = await loadDaemonSettings("/no/such/dir/portferry-daemon.yaml");
 * if (!settings.reconnect || settings.console !== null) throw new Error("bad");
 * ```
 */
export async function loadDaemonSettings(path: string): Promise<LoadedSettings<DaemonSettings>> {
  const text = await readSettingsText(path);
  const settings = text === null ? DEFAULT_DAEMON_SETTINGS : parseDaemonSettings(text, path);
  return { settings, text };
}
