/**
 * Target hosts as the Daemon reads them: an IP address in canonical form, or
 * a host name, and nothing in between.
 *
 * The system resolver (getaddrinfo) reads legacy IPv4 forms: `127.1`,
 * `0x7f.0.0.1`, `2130706433`, and `010` as octal 8. An allow-list that read
 * such text one way while the resolver read it another would check one
 * address and connect to a different one. So a host that looks like an
 * address (its last label is a number, as the WHATWG URL host parser decides,
 * or it holds a `:`) must be an address in canonical form, or it is refused;
 * and the Daemon connects to the text rebuilt from the parsed bytes, never to
 * the text it was sent. IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the IPv4
 * address it maps.
 *
 * @module
 */

import { isIP } from "node:net";

/** An IP address as bits: 32 for IPv4, 128 for IPv6. */
export interface IpBits {
  /** 4 for IPv4, 6 for IPv6. */
  readonly family: 4 | 6;
  /** The address as a number: 32 bits for IPv4, 128 for IPv6. */
  readonly bits: bigint;
}

/** What {@linkcode parseTarget} made of a host. */
export type Target =
  | {
    readonly kind: "address";
    readonly family: 4 | 6;
    readonly bits: bigint;
    /** The canonical text, rebuilt from `bits`: what the Daemon connects to. */
    readonly text: string;
  }
  | { readonly kind: "name"; readonly name: string }
  | { readonly kind: "invalid"; readonly reason: string };

/** The longest host name (without a trailing dot). */
const MAX_NAME_CHARS = 253;

/** One label of a host name: letters, digits, `-` inside, `_` anywhere. */
const LABEL = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * The family of `text` as an IP address in the form {@linkcode parseIp}
 * takes: 4, 6, or 0 when it is not one (a legacy IPv4 form, a `%zone`, a
 * name). For when the bits are not needed.
 *
 * @example
 * ```ts
 * import { ipFamily } from "./address.ts";
 * if (ipFamily("10.0.0.8") !== 4 || ipFamily("::ffff:10.0.0.8") !== 6) throw new Error("bad");
 * if (ipFamily("10.0.0.010") !== 0 || ipFamily("fe80::1%eth0") !== 0) throw new Error("bad");
 * ```
 */
export function ipFamily(text: string): 0 | 4 | 6 {
  const family = isIP(text);
  if (family === 4) return 4;
  return family === 6 && !text.includes("%") ? 6 : 0;
}

/**
 * Parse an IP address in canonical form: IPv4 as four decimal numbers 0-255
 * without leading zeros, or IPv6 as RFC 4291 writes it (any case, no
 * `%zone`). Anything else, including the legacy IPv4 forms, is null.
 * IPv4-mapped IPv6 stays IPv6 here; see {@linkcode unmapIp}.
 *
 * @example
 * ```ts
 * import { parseIp } from "./address.ts";
 * if (parseIp("10.0.0.8")?.bits !== 0x0a000008n || parseIp("10.0.0.010") !== null) {
 *   throw new Error("bad");
 * }
 * ```
 */
export function parseIp(text: string): IpBits | null {
  const family = ipFamily(text);
  if (family === 4) return { family: 4, bits: _v4Bits(text) };
  if (family !== 6) return null;
  let head = text;
  let tail = 0n;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".", lastColon)) {
    tail = _v4Bits(text.slice(lastColon + 1));
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  const split = (s: string | undefined) => (s ? s.split(":") : []);
  const left = split(halves[0]);
  const right = split(halves[1]);
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const bits = groups.reduce(
    (acc: bigint, g: string) => (acc << 16n) | BigInt(parseInt(g, 16)),
    0n,
  );
  return { family: 6, bits: bits | tail };
}

function _v4Bits(text: string): bigint {
  return text.split(".").reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
}

/**
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address; others unchanged.
 *
 * @example
 * ```ts
 * import { parseIp, unmapIp } from "./address.ts";
 * if (unmapIp(parseIp("::ffff:7f00:1")!).family !== 4) throw new Error("bad");
 * ```
 */
export function unmapIp(ip: IpBits): IpBits {
  if (ip.family === 6 && ip.bits >> 32n === 0xffffn) {
    return { family: 4, bits: ip.bits & 0xffff_ffffn };
  }
  return ip;
}

/**
 * The canonical text of an address: dotted decimal for IPv4, RFC 5952 for
 * IPv6 (lower case, no leading zeros, the longest run of zero groups as `::`).
 *
 * @example
 * ```ts
 * import { formatIp } from "./address.ts";
 * if (formatIp({ family: 6, bits: 1n }) !== "::1") throw new Error("bad");
 * if (formatIp({ family: 4, bits: 0x7f000001n }) !== "127.0.0.1") throw new Error("bad");
 * ```
 */
export function formatIp(ip: IpBits): string {
  if (ip.family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((ip.bits >> s) & 0xffn)).join(".");
  }
  const groups = Array.from(
    { length: 8 },
    (_, i) => Number((ip.bits >> BigInt(112 - 16 * i)) & 0xffffn),
  );
  let best = -1;
  let bestLength = 1; // a single zero group is written out
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLength).join(":")}`;
}

/**
 * Whether `host` is shaped like an address rather than a name: it holds a
 * `:` (IPv6), or its last label (after one trailing dot) is all digits or a
 * `0x` hex number. No real DNS name ends in a numeric label.
 *
 * @example
 * ```ts
 * import { isAddressShaped } from "./address.ts";
 * if (!isAddressShaped("0x7f.1") || isAddressShaped("db01.corp")) throw new Error("bad");
 * ```
 */
export function isAddressShaped(host: string): boolean {
  if (host.includes(":")) return true;
  const labels = host.split(".");
  if (labels.length > 1 && labels.at(-1) === "") labels.pop();
  return /^([0-9]+|0[xX][0-9a-fA-F]*)$/.test(labels.at(-1) ?? "");
}

/**
 * Read a target host as an address (canonical, IPv4-mapped made IPv4) or a
 * name; anything address-shaped that is not a canonical address, and
 * anything that is not a host name, is `invalid` with a reason.
 *
 * @example
 * ```ts
 * import { parseTarget } from "./address.ts";
 * const t = parseTarget("::FFFF:10.0.0.1");
 * if (t.kind !== "address" || t.text !== "10.0.0.1") throw new Error("bad");
 * if (parseTarget("127.0.0.010").kind !== "invalid") throw new Error("bad");
 * ```
 */
export function parseTarget(host: string): Target {
  const quoted = JSON.stringify(host);
  if (isAddressShaped(host)) {
    if (host.includes("%")) {
      return {
        kind: "invalid",
        reason: `Cannot reach ${quoted}: an address with a "%" zone is not taken; ` +
          `write the address without it`,
      };
    }
    if (host.endsWith(".") && parseIp(host.slice(0, -1))) {
      return {
        kind: "invalid",
        reason: `Cannot reach ${quoted}: an address takes no trailing dot; ` +
          `write ${JSON.stringify(host.slice(0, -1))}`,
      };
    }
    const ip = parseIp(host);
    if (!ip) {
      return {
        kind: "invalid",
        reason: `Cannot reach ${quoted}: not an address and not a name; ` +
          `write IPv4 as four decimal numbers 0-255 without leading zeros, IPv6 in standard form`,
      };
    }
    const plain = unmapIp(ip);
    return { kind: "address", ...plain, text: formatIp(plain) };
  }
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (
    name.length === 0 || name.length > MAX_NAME_CHARS ||
    !name.split(".").every((l) => LABEL.test(l))
  ) {
    return {
      kind: "invalid",
      reason: `Cannot reach ${quoted}: not an address and not a name; ` +
        `a name is dot-separated labels of letters, digits, "-" and "_"`,
    };
  }
  return { kind: "name", name: host };
}
