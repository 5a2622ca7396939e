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

import { parseAllowRule } from "../net/allowlist.ts";
import { ConfigError } from "../core/errors.ts";
import {
  assertString,
  formatAddress,
  type ListenAddress,
  parseListen,
  parseTarget,
  TARGET_FORMS,
  type TargetAddress,
} from "../net/hostport.ts";

/** Protocol of a PFO. `socks` has no fixed target: the client names it. */
export type Proto = "tcp" | "udp" | "socks";

/** Every protocol, in display order. */
export const PROTOS: readonly Proto[] = ["tcp", "udp", "socks"];

/** Longest PFO name. */
export const MAX_PFO_NAME_CHARS = 64;

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
  assertString(name, "PFO name");
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
 * import { parseListen } from "../net/hostport.ts";
 * import { portCount } from "./pfo.ts";
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
