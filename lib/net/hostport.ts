/**
 * Host and port grammars: where a PFO listens, where it forwards to, and a
 * plain `HOST[:PORT]`, each parsed once into a typed value and formatted back.
 *
 * ```
 * listen  = PORT | PORT-PORT | HOST:PORT | HOST:PORT-PORT      (HOST default 127.0.0.1)
 * target  = HOST:PORT | HOST:PORT-PORT                         (none for socks)
 * HOST    = hostname (RFC 1123) | IPv4 | [IPv6]
 * ```
 *
 * Everything here is pure: no I/O, no name resolution.
 *
 * @module
 */

import { ConfigError } from "../core/errors.ts";
import { ipFamily } from "./address.ts";

/** Host a listen address binds to when it names none. */
export const DEFAULT_LISTEN_HOST = "127.0.0.1";

/** Port of the Console's session listener when none is named. */
export const DEFAULT_SESSION_PORT = 7470;

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
/** How a target address may be written, for messages. */
export const TARGET_FORMS = "HOST:PORT or HOST:PORT-PORT";

/** Throws a ConfigError naming `what` when `value` is not a string. */
export function assertString(value: unknown, what: string): asserts value is string {
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
 * import { isValidHost } from "./hostport.ts";
 * if (!isValidHost("db01.lan") || !isValidHost("::1") || isValidHost("300.1.1.1")) throw new Error("bad");
 * ```
 */
export function isValidHost(host: string): boolean {
  return ipFamily(host) !== 0 || _isHostname(host);
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
    if (ipFamily(host) !== 6) {
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
 * import { parseListen } from "./hostport.ts";
 * const addr = parseListen("[::1]:8080-8081");
 * if (addr.host !== "::1" || addr.port !== 8080 || addr.portEnd !== 8081) throw new Error("bad");
 * if (parseListen("8080").host !== "127.0.0.1") throw new Error("bad");
 * ```
 */
export function parseListen(text: string): ListenAddress {
  assertString(text, "listen address");
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
 * import { parseTarget } from "./hostport.ts";
 * const t = parseTarget("db01:5432");
 * if (t.host !== "db01" || t.port !== 5432 || t.portEnd !== 5432) throw new Error("bad");
 * ```
 */
export function parseTarget(text: string): TargetAddress {
  assertString(text, "target");
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
 * import { parseHostPort } from "./hostport.ts";
 * const a = parseHostPort("console.example.com");
 * if (a.host !== "console.example.com" || a.port !== 7470) throw new Error("bad");
 * const b = parseHostPort("9000", { defaultHost: "0.0.0.0" });
 * if (b.host !== "0.0.0.0" || b.port !== 9000) throw new Error("bad");
 * ```
 */
export function parseHostPort(text: string, options: ParseHostPortOptions = {}): HostPort {
  assertString(text, "address");
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
 * import { formatHostPort } from "./hostport.ts";
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
 * import { formatAddress, parseListen } from "./hostport.ts";
 * if (formatAddress(parseListen("8080-8081")) !== "127.0.0.1:8080-8081") throw new Error("bad");
 * ```
 */
export function formatAddress(addr: ListenAddress | TargetAddress): string {
  const ports = addr.port === addr.portEnd ? `${addr.port}` : `${addr.port}-${addr.portEnd}`;
  return formatHostPort(addr.host, ports);
}
