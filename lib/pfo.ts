/**
 * Port forwarding operations (PFOs) and the address grammars they use.
 *
 * A PFO is a name, a protocol, a listen address on the Console side and a
 * target on the Daemon's side:
 *
 * ```
 * listen  = PORT | PORT-PORT | HOST:PORT | HOST:PORT-PORT      (HOST default 127.0.0.1)
 * target  = HOST:PORT | HOST:PORT-PORT                         (none for socks)
 * HOST    = hostname (RFC 1123) | IPv4 | [IPv6]
 * ```
 *
 * A listen range pairs with a target range of the same size, port by port,
 * or with a single target port that every listen port forwards to.
 *
 * Everything here is pure: no I/O, no name resolution.
 *
 * @module
 */

import { parseAllowRule } from "./allowlist.ts";
import { ConfigError } from "./errors.ts";

/** Protocol of a PFO. `socks` has no fixed target: the client names it. */
export type Proto = "tcp" | "udp" | "socks";

/** Every protocol, in display order. */
export const PROTOS: readonly Proto[] = ["tcp", "udp", "socks"];

/** Host a listen address binds to when it names none. */
export const DEFAULT_LISTEN_HOST = "127.0.0.1";

/** Port of the Console's session listener when none is named. */
export const DEFAULT_SESSION_PORT = 7470;

/** Longest PFO name. */
export const MAX_PFO_NAME_CHARS = 64;

/** A parsed listen address. `portEnd === port` for a single port. */
export interface ListenAddress {
  /** Host to bind, without brackets for IPv6. */
  readonly host: string;
  /** First port; 0 (single port only) asks the system for a free one. */
  readonly port: number;
  /** Last port, inclusive. */
  readonly portEnd: number;
}

/** A parsed target address. `portEnd === port` for a single port. */
export interface TargetAddress {
  /** Host name or address, without brackets for IPv6; resolved on the Daemon's side. */
  readonly host: string;
  /** First port, 1..65535. */
  readonly port: number;
  /** Last port, inclusive. */
  readonly portEnd: number;
}

/** A host and one port. */
export interface HostPort {
  /** Host name or address, without brackets for IPv6. */
  readonly host: string;
  /** Port number. */
  readonly port: number;
}

/** A PFO as written by a user: in the settings file, on the CLI, on screen. */
export interface PfoSpec {
  /** Unique name, 1–64 chars of `A-Za-z0-9._-`. */
  readonly name: string;
  /** Protocol. */
  readonly proto: Proto;
  /** `[HOST:]PORT` or `[HOST:]PORT-PORT`. */
  readonly listen: string;
  /** `HOST:PORT` or `HOST:PORT-PORT`; `null` for socks. */
  readonly target: string | null;
  /** Whether the Console listens for it. */
  readonly enabled: boolean;
  /**
   * Console-side client addresses allowed to use it (IPs or CIDRs, `*` for
   * anyone). Absent or empty: anyone who can reach the listen address.
   */
  readonly clients?: readonly string[];
}

/** A PFO with its addresses parsed and checked. */
export interface ResolvedPfo extends PfoSpec {
  /** Allowed client addresses; empty allows everyone. */
  readonly clients: readonly string[];
  /** Parsed {@linkcode PfoSpec.listen}. */
  readonly listenAddr: ListenAddress;
  /** Parsed {@linkcode PfoSpec.target}; `null` for socks. */
  readonly targetAddr: TargetAddress | null;
}

/** Options for {@linkcode parseHostPort}. */
export interface ParseHostPortOptions {
  /** Port used when the text names none. Default 7470; `null` makes the port required. */
  defaultPort?: number | null;
  /** Host used when the text is only a port. Default: none, the host is required. */
  defaultHost?: string;
  /** Accept port 0 (an ephemeral port, for listeners). Default false. */
  allowPortZero?: boolean;
}

const LISTEN_FORMS = "[HOST:]PORT or [HOST:]PORT-PORT";
const TARGET_FORMS = "HOST:PORT or HOST:PORT-PORT";

function _assertString(value: unknown, what: string): asserts value is string {
  if (typeof value !== "string") {
    throw new TypeError(`Cannot parse ${what}: expected a string, got ${typeof value}`);
  }
}

/** Parses a decimal port, or returns undefined when `text` is not digits in range. */
function _port(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function _isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 &&
    parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

function _isIPv6(text: string): boolean {
  let rest = text;
  let groupsWanted = 8;
  const lastColon = rest.lastIndexOf(":");
  if (lastColon >= 0 && rest.includes(".", lastColon)) {
    if (!_isIPv4(rest.slice(lastColon + 1))) return false;
    rest = rest.slice(0, lastColon + 1) + "0:0";
    groupsWanted = 8;
  }
  const halves = rest.split("::");
  if (halves.length > 2) return false;
  const group = /^[0-9A-Fa-f]{1,4}$/;
  const split = (s: string) => (s === "" ? [] : s.split(":"));
  const head = split(halves[0]);
  const tail = halves.length === 2 ? split(halves[1]) : [];
  if (![...head, ...tail].every((g) => group.test(g))) return false;
  const count = head.length + tail.length;
  return halves.length === 2 ? count < groupsWanted : count === groupsWanted;
}

function _isHostname(text: string): boolean {
  if (text.length === 0 || text.length > 253) return false;
  const labels = text.split(".");
  const label = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  if (!labels.every((l) => label.test(l))) return false;
  // All-numeric dotted names are IPv4 addresses or mistakes, never host names.
  return !/^[0-9]+$/.test(labels[labels.length - 1]);
}

/**
 * Whether `host` is a host name (RFC 1123), an IPv4 address, or an IPv6
 * address (without brackets).
 *
 * @example
 * ```ts
 * import { isValidHost } from "./pfo.ts";
 * if (!isValidHost("db01.lan") || !isValidHost("::1") || isValidHost("300.1.1.1")) throw new Error("bad");
 * ```
 */
export function isValidHost(host: string): boolean {
  return _isIPv4(host) || _isHostname(host) || _isIPv6(host);
}

/**
 * Splits `HOST:REST`, `[IPv6]:REST`, `[IPv6]` or a bare word. `host` is
 * undefined for a bare word (then `rest` is the word); `rest` is undefined
 * when there is a host and no `:` after it.
 */
function _splitHost(
  text: string,
  forms: string,
  what: string,
): { host: string | undefined; rest: string | undefined } {
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) {
      throw new ConfigError(`Cannot parse ${what} "${text}": missing "]" after the IPv6 address`);
    }
    const host = text.slice(1, close);
    if (!_isIPv6(host)) {
      throw new ConfigError(`Cannot parse ${what} "${text}": "${host}" is not an IPv6 address`);
    }
    const after = text.slice(close + 1);
    if (after === "") return { host, rest: undefined };
    if (!after.startsWith(":")) {
      throw new ConfigError(`Cannot parse ${what} "${text}": expected ${forms}`);
    }
    return { host, rest: after.slice(1) };
  }
  const colons = text.split(":").length - 1;
  if (colons > 1) {
    throw new ConfigError(
      `Cannot parse ${what} "${text}": write an IPv6 address in brackets, as "[::1]:PORT"`,
    );
  }
  if (colons === 0) return { host: undefined, rest: text };
  const colon = text.indexOf(":");
  const host = text.slice(0, colon);
  if (!isValidHost(host)) {
    throw new ConfigError(
      `Cannot parse ${what} "${text}": ${JSON.stringify(host)} is not a host name or IP address`,
    );
  }
  return { host, rest: text.slice(colon + 1) };
}

/** Explains why `text` is not a port. */
function _badPort(text: string | undefined, original: string, what: string, forms: string): never {
  const t = text ?? "";
  if (/^[0-9]+$/.test(t)) {
    if (/^0[0-9]/.test(t)) {
      throw new ConfigError(
        `Cannot parse ${what} "${original}": port "${t}" has a leading zero; write ${Number(t)}`,
      );
    }
    throw new ConfigError(
      `Cannot parse ${what} "${original}": port ${t} is above 65535; ports run 1-65535`,
    );
  }
  throw new ConfigError(`Cannot parse ${what} "${original}": expected ${forms}`);
}

/** Parses `PORT` or `PORT-PORT`. */
function _ports(
  rest: string,
  original: string,
  what: string,
  forms: string,
  min: number,
): { port: number; portEnd: number } {
  const dash = rest.indexOf("-");
  const startText = dash < 0 ? rest : rest.slice(0, dash);
  const endText = dash < 0 ? undefined : rest.slice(dash + 1);
  const port = _port(startText);
  const portEnd = endText === undefined ? port : _port(endText);
  if (port === undefined) _badPort(startText, original, what, forms);
  if (portEnd === undefined) _badPort(endText, original, what, forms);
  const isRange = endText !== undefined;
  const lowest = isRange ? Math.max(min, 1) : min;
  if (port < lowest || portEnd < lowest) {
    throw new ConfigError(
      isRange
        ? `Cannot parse ${what} "${original}": port 0 cannot be part of a range; ports run 1-65535`
        : `Cannot parse ${what} "${original}": port 0 is not allowed here; ports run 1-65535`,
    );
  }
  if (portEnd < port) {
    throw new ConfigError(
      `Cannot parse ${what} "${original}": range ${port}-${portEnd} ends before it starts; write it as ${portEnd}-${port}`,
    );
  }
  return { port, portEnd };
}

/**
 * Parses a PFO listen address: `PORT`, `HOST:PORT`, `[IPv6]:PORT`, or the
 * same with `PORT-PORT`. With no host it binds 127.0.0.1. Port 0 (a single
 * port only) asks the system for a free port.
 *
 * @throws {ConfigError} when the text does not follow the grammar or a port is out of range.
 *
 * @example
 * ```ts
 * import { parseListen } from "./pfo.ts";
 * const addr = parseListen("[::1]:8080-8081");
 * if (addr.host !== "::1" || addr.port !== 8080 || addr.portEnd !== 8081) throw new Error("bad");
 * if (parseListen("8080").host !== "127.0.0.1") throw new Error("bad");
 * ```
 */
export function parseListen(text: string): ListenAddress {
  _assertString(text, "listen address");
  const what = "listen address";
  const { host, rest } = _splitHost(text, LISTEN_FORMS, what);
  if (rest === undefined || rest === "") {
    throw new ConfigError(`Cannot parse ${what} "${text}": expected ${LISTEN_FORMS}`);
  }
  const { port, portEnd } = _ports(rest, text, what, LISTEN_FORMS, 0);
  return Object.freeze({ host: host ?? DEFAULT_LISTEN_HOST, port, portEnd });
}

/**
 * Parses a PFO target: `HOST:PORT`, `[IPv6]:PORT` or `HOST:PORT-PORT`. The
 * host is required; ports run 1..65535.
 *
 * @throws {ConfigError} when the text does not follow the grammar or a port is out of range.
 *
 * @example
 * ```ts
 * import { parseTarget } from "./pfo.ts";
 * const t = parseTarget("db01:5432");
 * if (t.host !== "db01" || t.port !== 5432 || t.portEnd !== 5432) throw new Error("bad");
 * ```
 */
export function parseTarget(text: string): TargetAddress {
  _assertString(text, "target");
  const what = "target";
  const { host, rest } = _splitHost(text, TARGET_FORMS, what);
  if (host === undefined) {
    if (!/^[0-9]+(-[0-9]+)?$/.test(text) && isValidHost(text)) {
      throw new ConfigError(
        `Cannot parse ${what} "${text}": the port is missing; expected ${TARGET_FORMS}, e.g. "${text}:PORT"`,
      );
    }
    const hint = /^[0-9]+(-[0-9]+)?$/.test(text) ? `, e.g. "localhost:${text}"` : "";
    throw new ConfigError(
      `Cannot parse ${what} "${text}": the host is missing; expected ${TARGET_FORMS}${hint}`,
    );
  }
  if (rest === undefined || rest === "") {
    throw new ConfigError(`Cannot parse ${what} "${text}": expected ${TARGET_FORMS}`);
  }
  const { port, portEnd } = _ports(rest, text, what, TARGET_FORMS, 1);
  return Object.freeze({ host, port, portEnd });
}

/**
 * Parses `HOST[:PORT]`, `[IPv6][:PORT]` or `PORT`: the Daemon's Console
 * address (`HOST[:PORT]`, default port 7470) and the Console's session
 * address (`[HOST:]PORT`, pass `defaultHost: "0.0.0.0"`).
 *
 * A bare word of digits is a port; any other bare word is a host.
 *
 * @throws {ConfigError} when a required part is missing or malformed.
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./pfo.ts";
 * const a = parseHostPort("console.example.com");
 * if (a.host !== "console.example.com" || a.port !== 7470) throw new Error("bad");
 * const b = parseHostPort("9000", { defaultHost: "0.0.0.0" });
 * if (b.host !== "0.0.0.0" || b.port !== 9000) throw new Error("bad");
 * ```
 */
export function parseHostPort(text: string, options: ParseHostPortOptions = {}): HostPort {
  _assertString(text, "address");
  const defaultPort = options.defaultPort === undefined
    ? DEFAULT_SESSION_PORT
    : options.defaultPort;
  const forms = options.defaultHost === undefined
    ? (defaultPort === null ? "HOST:PORT" : "HOST[:PORT]")
    : (defaultPort === null ? "[HOST:]PORT" : "[HOST:][PORT]");
  const what = "address";
  const split = _splitHost(text, forms, what);
  let host = split.host;
  let rest = split.rest;
  if (host === undefined) {
    if (/^[0-9]+$/.test(text)) {
      // A bare port.
    } else if (isValidHost(text)) {
      host = text;
      rest = undefined;
    } else {
      throw new ConfigError(`Cannot parse ${what} "${text}": expected ${forms}`);
    }
  }
  if (host === undefined) {
    if (options.defaultHost === undefined) {
      throw new ConfigError(
        `Cannot parse ${what} "${text}": the host is missing; expected ${forms}`,
      );
    }
    host = options.defaultHost;
  }
  let port: number;
  if (rest === undefined) {
    if (defaultPort === null) {
      throw new ConfigError(
        `Cannot parse ${what} "${text}": the port is missing; expected ${forms}`,
      );
    }
    port = defaultPort;
  } else {
    const parsed = _port(rest);
    if (parsed === undefined) _badPort(rest, text, what, forms);
    if (parsed === 0 && !options.allowPortZero) {
      throw new ConfigError(
        `Cannot parse ${what} "${text}": port 0 is not allowed here; ports run 1-65535`,
      );
    }
    port = parsed;
  }
  return Object.freeze({ host, port });
}

/**
 * Formats a host and a port (or a port range), bracketing IPv6 addresses.
 *
 * @example
 * ```ts
 * import { formatHostPort } from "./pfo.ts";
 * if (formatHostPort("::1", 80) !== "[::1]:80") throw new Error("bad");
 * if (formatHostPort("db", "5432-5433") !== "db:5432-5433") throw new Error("bad");
 * ```
 */
export function formatHostPort(host: string, port: number | string): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Formats a listen or target address, with its range when it has one.
 *
 * @example
 * ```ts
 * import { formatAddress, parseListen } from "./pfo.ts";
 * if (formatAddress(parseListen("8080-8081")) !== "127.0.0.1:8080-8081") throw new Error("bad");
 * ```
 */
export function formatAddress(addr: ListenAddress | TargetAddress): string {
  const ports = addr.port === addr.portEnd ? `${addr.port}` : `${addr.port}-${addr.portEnd}`;
  return formatHostPort(addr.host, ports);
}

/**
 * Checks a PFO name: 1–64 characters of `A-Za-z0-9._-`. Returns it.
 *
 * @throws {ConfigError} naming the value when it is not a valid name.
 *
 * @example
 * ```ts
 * import { validatePfoName } from "./pfo.ts";
 * validatePfoName("web-1");
 * try {
 *   validatePfoName("my web");
 *   throw new Error("accepted a space");
 * } catch (err) {
 *   if (!(err instanceof SyntaxError)) throw err;
 * }
 * ```
 */
export function validatePfoName(name: string): string {
  _assertString(name, "PFO name");
  if (name.length === 0) {
    throw new ConfigError(`Cannot use PFO name "": give the PFO a name of 1-64 characters`);
  }
  if (name.length > MAX_PFO_NAME_CHARS) {
    throw new ConfigError(
      `Cannot use PFO name "${name}": it has ${name.length} characters; use at most ${MAX_PFO_NAME_CHARS}`,
    );
  }
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new ConfigError(
      `Cannot use PFO name ${JSON.stringify(name)}: use only letters, digits, ".", "_" and "-"`,
    );
  }
  return name;
}

/**
 * Whether `value` is a protocol name.
 *
 * @example
 * ```ts
 * import { isProto } from "./pfo.ts";
 * if (!isProto("udp") || isProto("sctp")) throw new Error("bad");
 * ```
 */
export function isProto(value: unknown): value is Proto {
  return typeof value === "string" && (PROTOS as readonly string[]).includes(value);
}

/**
 * Number of ports in an address's range.
 *
 * @example
 * ```ts
 * import { parseListen, portCount } from "./pfo.ts";
 * if (portCount(parseListen("8000-8009")) !== 10) throw new Error("bad");
 * ```
 */
export function portCount(addr: ListenAddress | TargetAddress): number {
  return addr.portEnd - addr.port + 1;
}

/**
 * Checks a PFO and parses its addresses. A listen range needs a target
 * range of the same size, or a single target port; socks takes no target
 * and tcp/udp need one.
 *
 * @throws {ConfigError} naming the PFO and the field that is wrong.
 *
 * @example
 * ```ts
 * import { resolvePfo } from "./pfo.ts";
 * const pfo = resolvePfo({ name: "web", proto: "tcp", listen: "8080-8081", target: "web:80-81", enabled: true });
 * if (pfo.listenAddr.portEnd !== 8081 || pfo.targetAddr?.port !== 80) throw new Error("bad");
 * ```
 */
export function resolvePfo(spec: PfoSpec): ResolvedPfo {
  validatePfoName(spec.name);
  const where = `Cannot use PFO "${spec.name}"`;
  if (!isProto(spec.proto)) {
    throw new ConfigError(
      `${where}: protocol ${JSON.stringify(spec.proto)} is unknown; use ${PROTOS.join(", ")}`,
    );
  }
  if (typeof spec.enabled !== "boolean") {
    throw new TypeError(`${where}: enabled must be true or false`);
  }
  let listenAddr: ListenAddress;
  try {
    listenAddr = parseListen(spec.listen);
  } catch (err) {
    throw new ConfigError(`${where}: ${_detail(err)}`, { cause: err });
  }
  let targetAddr: TargetAddress | null = null;
  if (spec.proto === "socks") {
    if (spec.target !== null) {
      throw new ConfigError(
        `${where}: a socks PFO takes no target (got "${spec.target}"); the client names each target, so remove it`,
      );
    }
    if (listenAddr.port !== listenAddr.portEnd) {
      throw new ConfigError(
        `${where}: a socks PFO listens on one port, not the range "${spec.listen}"`,
      );
    }
  } else {
    if (spec.target === null) {
      throw new ConfigError(
        `${where}: a ${spec.proto} PFO needs a target; add one as ${TARGET_FORMS}`,
      );
    }
    try {
      targetAddr = parseTarget(spec.target);
    } catch (err) {
      throw new ConfigError(`${where}: ${_detail(err)}`, { cause: err });
    }
    const listenSize = portCount(listenAddr);
    const targetSize = portCount(targetAddr);
    if (targetSize !== 1 && targetSize !== listenSize) {
      throw new ConfigError(
        `${where}: target "${spec.target}" has ${targetSize} ports but listen "${spec.listen}" has ${listenSize}; use a target range of ${listenSize} ports or a single target port`,
      );
    }
  }
  const clients = Object.freeze([...(spec.clients ?? [])]);
  for (const rule of clients) {
    let parsed;
    try {
      parsed = parseAllowRule(rule);
    } catch (err) {
      throw new ConfigError(`${where}: clients: ${_detail(err)}`, { cause: err });
    }
    if (
      (parsed.kind !== "ip" && parsed.kind !== "any") || parsed.portMin !== 1 ||
      parsed.portMax !== 65535
    ) {
      throw new ConfigError(
        `${where}: clients: "${rule}" is not an address or CIDR; list client IPs or networks such as 10.0.0.0/8`,
      );
    }
  }
  return Object.freeze({
    name: spec.name,
    proto: spec.proto,
    listen: spec.listen,
    target: spec.target,
    enabled: spec.enabled,
    clients,
    listenAddr,
    targetAddr,
  });
}

function _detail(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The target port a connection on `listenPort` goes to: the same offset into
 * the target range, or the one target port.
 *
 * @throws {RangeError} when `listenPort` is outside the PFO's listen range.
 * @throws {TypeError} for a socks PFO, which has no target.
 *
 * @example
 * ```ts
 * import { resolvePfo, targetPortFor } from "./pfo.ts";
 * const pfo = resolvePfo({ name: "r", proto: "tcp", listen: "8000-8009", target: "h:9000-9009", enabled: true });
 * if (targetPortFor(pfo, 8003) !== 9003) throw new Error("bad");
 * ```
 */
export function targetPortFor(pfo: ResolvedPfo, listenPort: number): number {
  const { listenAddr, targetAddr } = pfo;
  if (targetAddr === null) {
    throw new TypeError(`Cannot map port for PFO "${pfo.name}": a ${pfo.proto} PFO has no target`);
  }
  if (
    !Number.isInteger(listenPort) || listenPort < listenAddr.port || listenPort > listenAddr.portEnd
  ) {
    throw new RangeError(
      `Cannot map port ${listenPort} for PFO "${pfo.name}": it listens on ${
        formatAddress(listenAddr)
      }`,
    );
  }
  if (targetAddr.port === targetAddr.portEnd) return targetAddr.port;
  return targetAddr.port + (listenPort - listenAddr.port);
}

/** The socket kind a PFO binds: `socks` listens on TCP too. */
function _transport(proto: Proto): "tcp" | "udp" {
  return proto === "udp" ? "udp" : "tcp";
}

/** Whether binding both hosts on one port would clash: the same host, or a wildcard over it. */
function _hostsClash(a: string, b: string): boolean {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  if (x === y || x === "::" || y === "::") return true; // "::" is dual-stack: it takes IPv4 too
  return (x === "0.0.0.0" && !y.includes(":")) || (y === "0.0.0.0" && !x.includes(":"));
}

/**
 * Whether two enabled PFOs would need the same socket: the same transport
 * (`tcp` and `socks` both listen on TCP), overlapping ports, and hosts that
 * clash (the same host, or `0.0.0.0` with an IPv4 host, or `::` with any).
 * A TCP and a UDP PFO may share a port; port 0 (any free port) never clashes,
 * and a disabled PFO holds nothing.
 *
 * @example
 * ```ts
 * import { listensClash, resolvePfo } from "./pfo.ts";
 * const pfo = (name: string, proto: "tcp" | "udp", listen: string) =>
 *   resolvePfo({ name, proto, listen, target: "h:53", enabled: true });
 * if (!listensClash(pfo("a", "tcp", "0.0.0.0:53"), pfo("b", "tcp", "127.0.0.1:53"))) throw new Error("bad");
 * if (listensClash(pfo("a", "tcp", "53"), pfo("b", "udp", "53"))) throw new Error("bad");
 * ```
 */
export function listensClash(a: ResolvedPfo, b: ResolvedPfo): boolean {
  const x = a.listenAddr;
  const y = b.listenAddr;
  return a.enabled && b.enabled && _transport(a.proto) === _transport(b.proto) &&
    x.port !== 0 && y.port !== 0 && x.port <= y.portEnd && y.port <= x.portEnd &&
    _hostsClash(x.host, y.host);
}

/**
 * The first of `others` (other than a PFO of the same name) whose listen
 * address clashes with `pfo`'s, or undefined. One pass over `others`.
 *
 * @example
 * ```ts
 * import { findListenClash, resolvePfo } from "./pfo.ts";
 * const a = resolvePfo({ name: "a", proto: "tcp", listen: "8000-8009", target: "h:80", enabled: true });
 * const b = resolvePfo({ name: "b", proto: "tcp", listen: "8005", target: "h:80", enabled: true });
 * if (findListenClash(b, [a])?.name !== "a") throw new Error("bad");
 * ```
 */
export function findListenClash(
  pfo: ResolvedPfo,
  others: Iterable<ResolvedPfo>,
): ResolvedPfo | undefined {
  if (!pfo.enabled || pfo.listenAddr.port === 0) return undefined;
  for (const other of others) {
    if (other.name !== pfo.name && listensClash(pfo, other)) return other;
  }
  return undefined;
}

/**
 * The first clashing pair in a list of PFOs, as `[holder, later]` in list
 * order, or undefined. Sorts once and compares only PFOs whose port ranges
 * overlap, so 10,000 PFOs cost milliseconds.
 *
 * @example
 * ```ts
 * import { findListenClashes, resolvePfo } from "./pfo.ts";
 * const pfo = (name: string, listen: string) =>
 *   resolvePfo({ name, proto: "tcp", listen, target: "h:80", enabled: true });
 * const pair = findListenClashes([pfo("a", "8080"), pfo("b", "8081"), pfo("c", "0.0.0.0:8080")]);
 * if (pair?.[0].name !== "a" || pair[1].name !== "c") throw new Error("bad");
 * ```
 */
export function findListenClashes(
  pfos: readonly ResolvedPfo[],
): [ResolvedPfo, ResolvedPfo] | undefined {
  const order = pfos.map((_, i) => i)
    .filter((i) => pfos[i].enabled && pfos[i].listenAddr.port !== 0)
    .sort((i, j) => pfos[i].listenAddr.port - pfos[j].listenAddr.port || i - j);
  let active: number[] = [];
  let found: [number, number] | undefined;
  for (const i of order) {
    const start = pfos[i].listenAddr.port;
    active = active.filter((j) => pfos[j].listenAddr.portEnd >= start);
    for (const j of active) {
      if (!listensClash(pfos[i], pfos[j])) continue;
      const pair: [number, number] = j < i ? [j, i] : [i, j];
      if (found === undefined || pair[1] < found[1]) found = pair;
    }
    active.push(i);
  }
  return found && [pfos[found[0]], pfos[found[1]]];
}

/**
 * Why `pfo` cannot listen where it asks: `holder` listens there already.
 *
 * @example
 * ```ts
 * import { listenClashMessage, resolvePfo } from "./pfo.ts";
 * const a = resolvePfo({ name: "a", proto: "tcp", listen: "8080", target: "h:80", enabled: true });
 * const b = resolvePfo({ name: "b", proto: "tcp", listen: "0.0.0.0:8080", target: "h:80", enabled: true });
 * if (!listenClashMessage("add", b, a).includes('PFO "a" already listens')) throw new Error("bad");
 * ```
 */
export function listenClashMessage(verb: string, pfo: ResolvedPfo, holder: ResolvedPfo): string {
  const kind = _transport(pfo.proto).toUpperCase();
  return `Cannot ${verb} PFO "${pfo.name}": PFO "${holder.name}" already listens on ${kind} ${
    formatAddress(holder.listenAddr)
  }, which overlaps ${
    formatAddress(pfo.listenAddr)
  }; pick another port, or disable or remove "${holder.name}"`;
}
