/**
 * The Daemon's allow-list: what the Console may reach through it.
 *
 * A rule is `HOST[:PORT[-PORT]]`, where HOST is a host name (`db01`), a
 * wildcard of subdomains (`*.corp.example`), an IPv4 or IPv6 address, a CIDR
 * (`10.0.0.0/8`, `[fd00::/8]`), or `*` for any host. IPv6 takes brackets when
 * a port follows. No rules means everything is allowed.
 *
 * A name rule allows that name as the Console sent it. A target name that no
 * name rule allows is resolved here, and allowed only if one of its addresses
 * falls under an address rule; the Daemon then connects to that very address,
 * so what was checked is what is reached.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import { isValidHost } from "./pfo.ts";

/** One parsed rule. */
export interface AllowRule {
  readonly text: string;
  readonly kind: "any" | "name" | "suffix" | "ip";
  /** Lower-case name, or the suffix (with its leading dot) of a wildcard. */
  readonly name?: string;
  /** Address rules: family, network bits and prefix length. */
  readonly family?: 4 | 6;
  readonly bits?: bigint;
  readonly prefix?: number;
  readonly portMin: number;
  readonly portMax: number;
}

/** What {@linkcode AllowList.check} decided. */
export type AllowDecision =
  | { readonly allowed: true; readonly connectHost: string }
  | { readonly allowed: false; readonly reason: string };

/** Parse an IPv4 or IPv6 literal into family and bits; null if it is not one. */
export function parseIp(text: string): { family: 4 | 6; bits: bigint } | null {
  const v4 = text.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p) => p > 255)) return null;
    return { family: 4, bits: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (!text.includes(":") || !/^[0-9a-fA-F:.]+$/.test(text)) return null;
  let head = text;
  let tailV4: bigint | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    const v4tail = parseIp(text.slice(lastColon + 1));
    if (!v4tail || v4tail.family !== 4) return null;
    tailV4 = v4tail.bits;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const left = halves[0] ? halves[0].split(":") : [];
  const right = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - left.length - right.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) return null;
  const groups = [...left, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...right];
  if (groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  let bits = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tailV4 !== null) bits = (bits & ~0xffff_ffffn) | tailV4;
  return { family: 6, bits };
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) as IPv4; other addresses unchanged. */
function normalize(ip: { family: 4 | 6; bits: bigint }): { family: 4 | 6; bits: bigint } {
  if (ip.family === 6 && ip.bits >> 32n === 0xffffn) {
    return { family: 4, bits: ip.bits & 0xffff_ffffn };
  }
  return ip;
}

function parsePorts(text: string, rule: string): [number, number] {
  const m = text.match(/^(\d{1,5})(?:-(\d{1,5}))?$/);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || lo < 1 || hi > 65535 || lo > hi) {
    throw new ConfigError(
      `Cannot parse allow rule "${rule}": "${text}" is not a port 1-65535 or a range PORT-PORT`,
    );
  }
  return [lo, hi];
}

/**
 * Parse one allow rule.
 *
 * @example
 * ```ts
 * import { parseAllowRule } from "./allowlist.ts";
 * const r = parseAllowRule("10.0.0.0/8:1-1024");
 * if (r.kind !== "ip" || r.portMin !== 1 || r.portMax !== 1024) throw new Error("bad");
 * ```
 */
export function parseAllowRule(text: string): AllowRule {
  const rule = text.trim();
  if (rule === "") {
    throw new ConfigError('Cannot parse allow rule "": it is empty; write HOST[:PORT[-PORT]]');
  }
  let host: string;
  let ports = "";
  if (rule.startsWith("[")) {
    const end = rule.indexOf("]");
    if (end < 0) throw new ConfigError(`Cannot parse allow rule "${rule}": missing "]"`);
    host = rule.slice(1, end);
    const rest = rule.slice(end + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) {
        throw new ConfigError(`Cannot parse allow rule "${rule}": expected ":PORT" after "]"`);
      }
      ports = rest.slice(1);
    }
  } else if ((rule.match(/:/g) ?? []).length > 1) {
    host = rule; // bare IPv6, no port
  } else {
    const colon = rule.indexOf(":");
    host = colon < 0 ? rule : rule.slice(0, colon);
    ports = colon < 0 ? "" : rule.slice(colon + 1);
  }
  const [portMin, portMax] = ports === "" ? [1, 65535] : parsePorts(ports, rule);
  if (host === "*") return { text: rule, kind: "any", portMin, portMax };
  const slash = host.indexOf("/");
  const ip = parseIp(slash < 0 ? host : host.slice(0, slash));
  if (ip) {
    const width = ip.family === 4 ? 32 : 128;
    const prefixText = slash < 0 ? String(width) : host.slice(slash + 1);
    const prefix = Number(prefixText);
    if (!/^\d{1,3}$/.test(prefixText) || prefix > width) {
      throw new ConfigError(`Cannot parse allow rule "${rule}": prefix must be 0-${width}`);
    }
    let { family, bits } = ip;
    let bitsPrefix = prefix;
    if (family === 6 && prefix >= 96 && bits >> 32n === 0xffffn) {
      // An IPv4-mapped network is an IPv4 network.
      family = 4;
      bits &= 0xffff_ffffn;
      bitsPrefix = prefix - 96;
    }
    const shift = BigInt((family === 4 ? 32 : 128) - bitsPrefix);
    return {
      text: rule,
      kind: "ip",
      family,
      bits: (bits >> shift) << shift,
      prefix: bitsPrefix,
      portMin,
      portMax,
    };
  }
  if (slash >= 0) {
    throw new ConfigError(`Cannot parse allow rule "${rule}": "${host}" is not a network address`);
  }
  if (host.startsWith("*.")) {
    const suffix = host.slice(2);
    if (!isValidHost(suffix)) {
      throw new ConfigError(`Cannot parse allow rule "${rule}": "${suffix}" is not a host name`);
    }
    return { text: rule, kind: "suffix", name: "." + suffix.toLowerCase(), portMin, portMax };
  }
  if (!isValidHost(host)) {
    throw new ConfigError(
      `Cannot parse allow rule "${rule}": "${host}" is not a host name, address or CIDR (IPv6 goes in brackets before a port)`,
    );
  }
  return {
    text: rule,
    kind: "name",
    name: host.toLowerCase().replace(/\.$/, ""),
    portMin,
    portMax,
  };
}

function ipMatches(rule: AllowRule, ip: { family: 4 | 6; bits: bigint }): boolean {
  if (rule.kind === "any") return true;
  if (rule.kind !== "ip") return false;
  const n = normalize(ip);
  if (n.family !== rule.family) return false;
  const shift = BigInt((n.family === 4 ? 32 : 128) - rule.prefix!);
  return (n.bits >> shift) << shift === rule.bits;
}

function nameMatches(rule: AllowRule, name: string): boolean {
  if (rule.kind === "any") return true;
  const n = name.toLowerCase().replace(/\.$/, "");
  if (rule.kind === "name") return n === rule.name;
  if (rule.kind === "suffix") return n.endsWith(rule.name!);
  return false;
}

/**
 * A parsed allow-list.
 *
 * @example
 * ```ts
 * import { AllowList } from "./allowlist.ts";
 * const list = AllowList.parse(["db01:5432", "10.0.0.0/8"]);
 * const ok = await list.check("db01", 5432, () => Promise.resolve([]));
 * const no = await list.check("db01", 22, () => Promise.resolve(["192.168.1.5"]));
 * if (!ok.allowed || no.allowed) throw new Error("bad");
 * ```
 */
export class AllowList {
  readonly rules: readonly AllowRule[];

  constructor(rules: readonly AllowRule[]) {
    this.rules = rules;
  }

  /** Parse every rule; the first bad one throws ConfigError. */
  static parse(texts: readonly string[]): AllowList {
    return new AllowList(texts.map(parseAllowRule));
  }

  /** True when there are no rules (everything is allowed). */
  get open(): boolean {
    return this.rules.length === 0;
  }

  /** How the list reads at start. */
  describe(): string {
    return this.open ? "everything (no --allow rules)" : this.rules.map((r) => r.text).join(", ");
  }

  /** Whether an address (not a name) is allowed by some rule, whatever the port. */
  allowsAddress(address: string): boolean {
    if (this.open) return true;
    const ip = parseIp(address);
    return ip !== null && this.rules.some((r) => ipMatches(r, ip));
  }

  /**
   * May the Console reach `host:port`? `resolve` looks a name up with this
   * machine's resolver, and is called only when address rules must decide.
   */
  async check(
    host: string,
    port: number,
    resolve: (host: string) => Promise<string[]>,
  ): Promise<AllowDecision> {
    if (this.open) return { allowed: true, connectHost: host };
    const rules = this.rules.filter((r) => port >= r.portMin && port <= r.portMax);
    const denied = {
      allowed: false as const,
      reason:
        `not allowed by the Daemon: "${host}:${port}" matches no --allow rule (${this.describe()})`,
    };
    if (rules.length === 0) return denied;
    const literal = parseIp(host);
    if (literal) {
      return rules.some((r) => ipMatches(r, literal))
        ? { allowed: true, connectHost: host }
        : denied;
    }
    if (rules.some((r) => nameMatches(r, host))) return { allowed: true, connectHost: host };
    const ipRules = rules.filter((r) => r.kind === "ip");
    if (ipRules.length === 0) return denied;
    let addresses: string[];
    try {
      addresses = await resolve(host);
    } catch {
      return denied;
    }
    for (const address of addresses) {
      const ip = parseIp(address);
      if (ip && ipRules.some((r) => ipMatches(r, ip))) {
        return { allowed: true, connectHost: address };
      }
    }
    return denied;
  }
}
