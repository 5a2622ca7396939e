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
 * Addresses, in rules and in targets, must be canonical (see `address.ts`):
 * `010.0.0.1` or `127.1` is neither an address nor a name and is refused, and
 * an allowed address is connected to as the text rebuilt from its bits.
 *
 * @module
 */

import { formatIp, type IpBits, parseIp, parseTarget, unmapIp } from "./address.ts";
import { ConfigError } from "../core/errors.ts";
import { formatHostPort, isValidHost } from "./hostport.ts";

/** One parsed rule. */
export interface AllowRule {
  /** The rule as written, for messages. */
  readonly text: string;
  /** What it matches: everything, one name, names under a suffix, or an address range. */
  readonly kind: "any" | "name" | "suffix" | "ip";
  /** Lower-case name, or the suffix (with its leading dot) of a wildcard. */
  readonly name?: string;
  /** Address rules: family, network bits and prefix length. */
  readonly family?: 4 | 6;
  /** Address rules: the network's bits. */
  readonly bits?: bigint;
  /** Address rules: the prefix length. */
  readonly prefix?: number;
  /** The lowest port it allows. */
  readonly portMin: number;
  /** The highest port it allows, inclusive. */
  readonly portMax: number;
}

/** A refusal: `not-allowed` by the rules, or `unresolvable` (not an address and not a name). */
export interface AllowDenied {
  /** Always false: this is a refusal. */
  readonly allowed: false;
  /** Why: refused by the rules, or not an address and not a name. */
  readonly code: "not-allowed" | "unresolvable";
  /** The refusal in words, for the Console. */
  readonly reason: string;
}

/** What {@linkcode AllowList.check} decided: allowed with the host to connect to, or not. */
export type AllowDecision =
  | { readonly allowed: true; readonly connectHost: string }
  | AllowDenied;

/** What {@linkcode AllowList.lookup} answers: the addresses to disclose, or a refusal. */
export type AllowLookup =
  | { readonly allowed: true; readonly addresses: readonly string[] }
  | AllowDenied;

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

function ipMatches(rule: AllowRule, ip: IpBits): boolean {
  if (rule.kind === "any") return true;
  if (rule.kind !== "ip") return false;
  const n = unmapIp(ip);
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

/** Canonical text of each address a resolver gave that parses (zoned ones do not). */
function canonical(addresses: readonly string[]): IpBits[] {
  const out: IpBits[] = [];
  for (const address of addresses) {
    const ip = parseIp(address);
    if (ip) out.push(unmapIp(ip));
  }
  return out;
}

/**
 * A parsed allow-list.
 *
 * Every target goes through {@linkcode parseTarget} first, rules or not: a
 * host shaped like an address that is not one in canonical form is refused,
 * and an allowed address is connected to as its canonical text.
 *
 * @example
 * ```ts
 * import { AllowList } from "./allowlist.ts";
 * const list = AllowList.parse(["db01:5432", "10.0.0.0/8"]);
 * const ok = await list.check("db01", 5432, () => Promise.resolve([]));
 * const no = await list.check("db01", 22, () => Promise.resolve(["192.168.1.5"]));
 * const odd = await list.check("010.0.0.1", 22, () => Promise.resolve([]));
 * if (!ok.allowed || no.allowed || odd.allowed) throw new Error("bad");
 * ```
 */
export class AllowList {
  /** The rules in force, in the order written. */
  readonly rules: readonly AllowRule[];

  /** A list of parsed `rules`; an empty list allows nothing. */
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

  #denied(what: string): AllowDenied {
    return {
      allowed: false,
      code: "not-allowed",
      reason: `not allowed by the Daemon: "${what}" matches no --allow rule (${this.describe()})`,
    };
  }

  /**
   * May the Console reach `host:port`, and at what address? `resolve` looks a
   * name up with this machine's resolver, and is called only when address
   * rules must decide.
   */
  async check(
    host: string,
    port: number,
    resolve: (host: string) => Promise<string[]>,
  ): Promise<AllowDecision> {
    const target = parseTarget(host);
    if (target.kind === "invalid") {
      return { allowed: false, code: "unresolvable", reason: target.reason };
    }
    const text = target.kind === "address" ? target.text : target.name;
    if (this.open) return { allowed: true, connectHost: text };
    // Built only for a refusal: an allowed open (every connection) skips the rule text.
    const denied = () => this.#denied(formatHostPort(text, port));
    const rules = this.rules.filter((r) => port >= r.portMin && port <= r.portMax);
    if (target.kind === "address") {
      return rules.some((r) => ipMatches(r, target))
        ? { allowed: true, connectHost: text }
        : denied();
    }
    if (rules.some((r) => nameMatches(r, text))) return { allowed: true, connectHost: text };
    const ipRules = rules.filter((r) => r.kind === "ip");
    if (ipRules.length === 0) return denied();
    let addresses: IpBits[];
    try {
      addresses = canonical(await resolve(text));
    } catch {
      return denied();
    }
    const ip = addresses.find((a) => ipRules.some((r) => ipMatches(r, a)));
    return ip ? { allowed: true, connectHost: formatIp(ip) } : denied();
  }

  /**
   * Answer a name lookup the Console asked for, within the rules: an address
   * is answered as itself (canonical); a name is resolved with `resolve`.
   * With rules in force only a name that a name rule allows, or that resolves
   * to an address an address rule allows (whatever the port), is answered, and
   * only with allowed addresses; any other name is refused alike, resolvable
   * or not, so the Console learns nothing it could not reach.
   *
   * @example
   * ```ts
   * import { AllowList } from "./allowlist.ts";
   * const list = AllowList.parse(["10.0.0.0/8"]);
   * const web = await list.lookup("web", () => Promise.resolve(["192.168.0.9", "10.1.1.1"]));
   * if (!web.allowed || web.addresses.join() !== "10.1.1.1") throw new Error("bad");
   * ```
   */
  async lookup(
    host: string,
    resolve: (host: string) => Promise<string[]>,
  ): Promise<AllowLookup> {
    const target = parseTarget(host);
    if (target.kind === "invalid") {
      return { allowed: false, code: "unresolvable", reason: target.reason };
    }
    if (target.kind === "address") {
      return this.open || this.rules.some((r) => ipMatches(r, target))
        ? { allowed: true, addresses: [target.text] }
        : this.#denied(target.text);
    }
    const named = this.open || this.rules.some((r) => nameMatches(r, target.name));
    const ipRules = this.rules.filter((r) => r.kind === "ip");
    if (!named && ipRules.length === 0) return this.#denied(target.name);
    let addresses: IpBits[];
    try {
      addresses = canonical(await resolve(target.name));
    } catch (err) {
      if (named) throw err;
      return this.#denied(target.name);
    }
    if (!named) addresses = addresses.filter((a) => ipRules.some((r) => ipMatches(r, a)));
    if (addresses.length === 0 && !named) return this.#denied(target.name);
    return { allowed: true, addresses: [...new Set(addresses.map(formatIp))] };
  }
}
