/**
 * The Daemon's reconnect loop: run a session attempt (connect, handshake,
 * session), and when it ends or fails, wait with jittered, doubling
 * back-off and try again; give up on failures retrying cannot fix. Each step
 * is published through the state model.
 *
 * @module
 */

import { errorMessage, HandshakeError } from "../core/errors.ts";
import { RetryReport } from "./retry_report.ts";
import type { DaemonState, SessionEndInfo } from "./state.ts";

/** Failures that retrying cannot fix. */
export const PERMANENT: ReadonlySet<string> = new Set([
  "fingerprint",
  "version",
  "token",
  "rejected",
  "identity",
  "untrusted",
]);

/** How one established session ended. */
export interface SessionOutcome {
  readonly session: string;
  /** Null when the session never told why. */
  readonly end: (SessionEndInfo & { readonly final: boolean }) | null;
}

/** Options for {@linkcode reconnectLoop}. */
export interface ReconnectOptions {
  /** Retry after a session ends or an attempt fails. */
  readonly reconnect: boolean;
  readonly backoffMaxMs: number;
  /** One attempt: resolves when an established session has ended, throws when none could be set up. */
  readonly attempt: (first: boolean) => Promise<SessionOutcome>;
  readonly state: DaemonState;
  /** Exit: stop at once. */
  readonly signal: AbortSignal;
  /** The user closed the session: stop waiting, and do not retry. */
  readonly stop: AbortSignal;
}

/**
 * Run attempts until one ends for good, `signal` aborts or `stop` does.
 * Throws the failure when it gives up.
 *
 * @example
 * ```ts ignore
 * await reconnectLoop({ reconnect: true, backoffMaxMs: 15_000, attempt, state, signal, stop });
 * ```
 */
export async function reconnectLoop(options: ReconnectOptions): Promise<void> {
  const { signal, stop, state } = options;
  const over = () => signal.aborted || stop.aborted;
  // The first retry waits up to 500 ms, or less when the cap is lower.
  const firstDelay = Math.min(500, options.backoffMaxMs);
  let delay = firstDelay;
  const report = new RetryReport();
  for (let first = true; !over(); first = false) {
    let outcome: SessionOutcome | null = null;
    let failure: unknown = null;
    try {
      outcome = await options.attempt(first);
      delay = firstDelay;
      report.reset();
    } catch (err) {
      if (signal.aborted) break;
      failure = err;
    }
    const code = failure instanceof HandshakeError ? failure.code : "error";
    const giveUp = failure !== null && (PERMANENT.has(code) || !options.reconnect);
    const retry = !(outcome?.end?.final ?? false) && options.reconnect && !over() && !giveUp;
    const wait = retry ? Math.round(delay / 2 + Math.random() * delay / 2) : null;
    if (outcome) tellEnded(state, outcome, wait);
    if (failure !== null) {
      const reason = errorMessage(failure);
      const text = giveUp ? "" : report.failed(failure, wait);
      const attempts = report.attempts;
      state.change({
        type: "failed",
        code,
        reason,
        text,
        attempts,
        retryInMs: wait,
        final: giveUp,
      });
      if (giveUp) throw failure;
    }
    if (wait === null) break;
    state.change({ type: "waiting", retryInMs: wait });
    await sleep(wait, [signal, stop]);
    delay = Math.min(delay * 2, options.backoffMaxMs);
  }
}

/** The session ended: one step, with the next try when there is one. */
function tellEnded(state: DaemonState, outcome: SessionOutcome, retryInMs: number | null): void {
  const end = outcome.end;
  state.change({
    type: "ended",
    session: outcome.session,
    end: { code: end?.code, reason: end?.reason ?? "the session ended", by: end?.by },
    retryInMs,
  });
}

/** Wait `ms`, or until one of `signals` aborts. */
function sleep(ms: number, signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) {
      if (s.aborted) return done();
      s.addEventListener("abort", done, { once: true });
    }
  });
}
