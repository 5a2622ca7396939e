/**
 * The Daemon's reach: connect to a stream's target and resolve host names,
 * both with this machine's own resolver (hosts file and DNS, through
 * getaddrinfo), and turn every failure into a coded reason for the Console.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { errorMessage, OpenError } from "../core/errors.ts";
import { formatHostPort } from "../net/hostport.ts";
import type { OpenErrorCode } from "../core/protocol.ts";

/** Options for {@linkcode connectTarget}. */
export interface ConnectTargetOptions {
  /** Give up after this long. */
  readonly timeoutMs: number;
  /** How to name the target in errors (default `host:port`). */
  readonly label?: string;
}

/**
 * Turn a connect or lookup failure into a coded reason.
 *
 * @example
 * ```ts
 * import { classifyError } from "./connector.ts";
 * const { code } = classifyError(new Deno.errors.ConnectionRefused("Connection refused (os error 111)"), "db:5432");
 * if (code !== "refused") throw new Error(code);
 * const { reason } = classifyError(new Error("getaddrinfo ENOTFOUND nope.invalid"), "nope.invalid:80");
 * if (!reason.includes('"nope.invalid" port 80') || reason.includes("invalid:80")) throw new Error(reason);
 * ```
 */
export function classifyError(
  err: unknown,
  target: string,
): { code: OpenErrorCode; reason: string } {
  const msg = errorMessage(err);
  if (err instanceof OpenError) return { code: err.code, reason: err.message };
  const { host, named, port } = _named(target);
  if (err instanceof Deno.errors.NotCapable || /EPERM|Requires net access/.test(msg)) {
    return {
      code: "not-allowed",
      reason: `Cannot connect to ${named}: not permitted by the Daemon's --allow-net (${msg})`,
    };
  }
  if (err instanceof Deno.errors.ConnectionRefused) {
    return { code: "refused", reason: `Cannot connect to ${named}: connection refused` };
  }
  if (err instanceof Deno.errors.TimedOut) {
    return { code: "timeout", reason: `Cannot connect to ${named}: timed out` };
  }
  if (/lookup address|ENOTFOUND|Name or service not known|No address associated|EAI_/.test(msg)) {
    return {
      code: "unresolvable",
      reason: port !== null
        ? `Cannot connect to ${named}: "${host}" does not resolve on the Daemon's side (${msg})`
        : `Cannot resolve ${named} on the Daemon's side: ${msg}`,
    };
  }
  if (/unreachable/i.test(msg)) {
    return { code: "unreachable", reason: `Cannot connect to ${named}: ${msg}` };
  }
  return { code: "error", reason: `Cannot connect to ${named}: ${msg}` };
}

/**
 * A target as errors name it: `"db01" port 5432`, the host and the port
 * apart so that neither reads as part of the other; a bare host as `"db01"`.
 */
function _named(target: string): { host: string; port: string | null; named: string } {
  const split = target.match(/^(?:\[([^\]]+)\]|([^:]+)):([0-9]+)$/);
  if (!split) return { host: target, port: null, named: `"${target}"` };
  const host = split[1] ?? split[2];
  return { host, port: split[3], named: `"${host}" port ${split[3]}` };
}

/**
 * Connect to `host:port` with this machine's resolver, within a deadline.
 * Throws {@linkcode OpenError} with a code on failure.
 *
 * @example
 * ```ts ignore
 * const { conn, address } = await connectTarget("db01", 5432, { timeoutMs: 10_000 });
 * ```
 */
export async function connectTarget(
  host: string,
  port: number,
  options: ConnectTargetOptions,
): Promise<{ conn: Deno.TcpConn; address: string }> {
  const target = options.label ?? formatHostPort(host, port);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const connecting = Deno.connect({ hostname: host, port, transport: "tcp" });
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(
        new OpenError(
          "timeout",
          `Cannot connect to ${_named(target).named}: no answer within ${options.timeoutMs} ms`,
        ),
      );
    }, options.timeoutMs);
  });
  try {
    const conn = await Promise.race([connecting, deadline]);
    conn.setNoDelay(true);
    const remote = conn.remoteAddr as Deno.NetAddr;
    return { conn, address: formatHostPort(remote.hostname, remote.port) };
  } catch (err) {
    if (timedOut) connecting.then((late) => late.close(), () => {});
    const { code, reason } = classifyError(err, target);
    throw new OpenError(code, reason, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolve `host` as this machine's programs would (hosts file, then DNS).
 *
 * @example
 * ```ts ignore
 * const addresses = await resolveHost("localhost"); // ["127.0.0.1", "::1"]
 * ```
 */
export async function resolveHost(host: string): Promise<string[]> {
  try {
    const found = await lookup(host, { all: true });
    return [...new Set(found.map((a) => a.address))];
  } catch (err) {
    const { code, reason } = classifyError(err, host);
    throw new OpenError(code, reason, { cause: err });
  }
}
