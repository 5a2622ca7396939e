/**
 * The client address behind trusted reverse proxies: `trustedProxies` CIDRs
 * and the `X-Forwarded-For` walk from the right.
 *
 * @module
 */

import { formatIp, parseIp, unmapIp } from "./address.ts";

/** One trusted network. */
interface Cidr {
  readonly family: 4 | 6;
  readonly bits: bigint;
  readonly prefix: number;
}

/** Reverse proxies whose `X-Forwarded-For` the Console believes. */
export class TrustedProxies {
  readonly #cidrs: readonly Cidr[];

  private constructor(cidrs: readonly Cidr[]) {
    this.#cidrs = cidrs;
  }

  /**
   * Parse `ADDRESS` or `ADDRESS/PREFIX` entries. Throws `TypeError` naming
   * the bad entry.
   *
   * @example
   * ```ts
   * import { TrustedProxies } from "./forwarded.ts";
   * const t = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "::1/128"]);
   * if (!t.has("10.2.3.4") || t.has("192.0.2.1")) throw new Error("bad");
   * ```
   */
  static parse(entries: readonly string[]): TrustedProxies {
    return new TrustedProxies(entries.map(parseCidr));
  }

  /** No proxy is trusted. */
  get empty(): boolean {
    return this.#cidrs.length === 0;
  }

  /** True when `address` is inside one of the networks. */
  has(address: string): boolean {
    const parsed = parseIp(address.replace(/^\[|\]$/g, ""));
    if (!parsed) return false;
    const ip = unmapIp(parsed);
    return this.#cidrs.some((c) => {
      if (c.family !== ip.family) return false;
      const width = c.family === 4 ? 32 : 128;
      const shift = BigInt(width - c.prefix);
      return (ip.bits >> shift) === (c.bits >> shift);
    });
  }
}

function parseCidr(entry: string): Cidr {
  const [host, prefixText, extra] = entry.split("/");
  const ip = parseIp(host ?? "");
  const width = ip?.family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? width : Number(prefixText);
  if (
    !ip || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > width ||
    (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText))
  ) {
    throw new TypeError(
      `Cannot use trusted proxy "${entry}": expected an IP address or a CIDR such as "10.0.0.0/8"`,
    );
  }
  return { family: ip.family, bits: ip.bits, prefix };
}

/** The address the Console shows for a peer. */
export interface ClientAddress {
  /** The client's address: from `X-Forwarded-For`, or the peer's own. */
  readonly address: string;
  /** The trusted proxy it came through, or null when it is the peer's own address. */
  readonly via: string | null;
}

/**
 * The client address for a peer at `peer` that sent `forwardedFor` (the
 * `X-Forwarded-For` value, or undefined). Only a trusted peer is believed;
 * the list is walked from the right, skipping trusted hops, and the first
 * untrusted address is the client. A malformed entry stops the walk at the
 * last hop known good.
 *
 * @example
 * ```ts
 * import { clientAddress, TrustedProxies } from "./forwarded.ts";
 * const trusted = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8"]);
 * const c = clientAddress("127.0.0.1", "198.51.100.9, 203.0.113.5, 10.1.1.1", trusted);
 * if (c.address !== "203.0.113.5" || c.via !== "127.0.0.1") throw new Error(c.address);
 * if (clientAddress("192.0.2.4", "203.0.113.5", trusted).via !== null) throw new Error("believed");
 * ```
 */
export function clientAddress(
  peer: string,
  forwardedFor: string | undefined,
  trusted: TrustedProxies,
): ClientAddress {
  const own: ClientAddress = { address: peer, via: null };
  if (forwardedFor === undefined || !trusted.has(peer)) return own;
  const hops = forwardedFor.split(",").map((h) => h.trim()).filter((h) => h !== "");
  let last: string | null = null;
  for (let i = hops.length - 1; i >= 0; i--) {
    const ip = parseIp(stripPort(hops[i]));
    if (!ip) break;
    last = formatIp(unmapIp(ip));
    if (!trusted.has(last)) break;
  }
  return last === null ? own : { address: last, via: peer };
}

/** "[::1]:80" → "::1", "1.2.3.4:80" → "1.2.3.4"; anything else as is. */
function stripPort(hop: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (bracketed) return bracketed[1];
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return v4 ? v4[1] : hop;
}
