/**
 * One line per reconnect attempt: the first failure says what went wrong in
 * full, and repeats of the same failure fold into a counter, e.g.
 * `still failing (12 attempts): connection refused; next try in 15 s`.
 *
 * @module
 */

import { errorMessage, HandshakeError } from "../core/errors.ts";

/** Short words for the socket errors a Console that is down or away gives. */
const SHORT: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host not found",
  ETIMEDOUT: "timed out",
};

/**
 * A short reason for `err`: "connection refused" for a refused connect,
 * else its message.
 *
 * @example
 * ```ts
 * import { HandshakeError } from "../core/errors.ts";
 * import { shortReason } from "./retry_report.ts";
 * const cause = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" });
 * const err = new HandshakeError("refused", "Cannot connect to Console at \"127.0.0.1:1\": connect ECONNREFUSED 127.0.0.1:1", { cause });
 * if (shortReason(err) !== "connection refused") throw new Error(shortReason(err));
 * ```
 */
export function shortReason(err: unknown): string {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && Object.hasOwn(SHORT, code)) return SHORT[code];
    if (e instanceof Deno.errors.ConnectionRefused) return SHORT.ECONNREFUSED;
    if (e instanceof Deno.errors.ConnectionReset) return SHORT.ECONNRESET;
    e = e.cause;
  }
  if (err instanceof HandshakeError && err.code === "timeout") return "timed out";
  return errorMessage(err);
}

/**
 * Seconds for a wait: one decimal, none when it is whole.
 *
 * @example
 * ```ts
 * import { seconds } from "./retry_report.ts";
 * if (seconds(15_000) !== "15 s" || seconds(740) !== "0.7 s") throw new Error(seconds(740));
 * ```
 */
export function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * Counts consecutive failures with the same short reason and words the
 * line for each.
 *
 * @example
 * ```ts
 * import { RetryReport } from "./retry_report.ts";
 * const report = new RetryReport();
 * const refused = Object.assign(new Error("Cannot connect: connect ECONNREFUSED"), { code: "ECONNREFUSED" });
 * report.failed(refused, 400);
 * const line = report.failed(refused, 15_000);
 * if (line !== "still failing (2 attempts): connection refused; next try in 15 s") throw new Error(line);
 * ```
 */
export class RetryReport {
  #reason: string | null = null;
  #attempts = 0;

  /** The line for a failed attempt; `waitMs` null when there is no next try. */
  failed(err: unknown, waitMs: number | null): string {
    const reason = shortReason(err);
    const next = waitMs === null ? "" : `; next try in ${seconds(waitMs)}`;
    if (reason === this.#reason) {
      this.#attempts++;
      return `still failing (${this.#attempts} attempts): ${reason}${next}`;
    }
    this.#reason = reason;
    this.#attempts = 1;
    return `Session failed: ${errorMessage(err)}${next}`;
  }

  /** A session was established: the next failure is new. */
  reset(): void {
    this.#reason = null;
    this.#attempts = 0;
  }

  /** Consecutive attempts that failed with the last reason. */
  get attempts(): number {
    return this.#attempts;
  }
}
