/**
 * The Daemon's answers to the Console's RESOLVE requests: within the
 * allow-list, and at most {@linkcode MAX_RESOLVES_IN_FLIGHT} lookups at a
 * time. Later requests wait in a bounded queue; past it they fail at once.
 * Each lookup holds a resolver thread and memory, so without a bound a
 * Console could make the Daemon run any number of them.
 *
 * @module
 */

import type { AllowList } from "../net/allowlist.ts";
import { errorMessage } from "../core/errors.ts";
import { type Logger, LogThrottle } from "../core/log.ts";
import { type ResolveMessage, Tag } from "../core/protocol.ts";
import type { Session } from "../core/session.ts";

/** Most lookups the Daemon runs at once for the Console. */
export const MAX_RESOLVES_IN_FLIGHT = 64;

/** Most lookups waiting for a slot; more are refused. */
export const MAX_RESOLVES_QUEUED = 256;

/** Options for {@linkcode Lookups}. */
export interface LookupsOptions {
  readonly allow: AllowList;
  /** This machine's resolver. */
  readonly resolve: (host: string) => Promise<string[]>;
  readonly log: Logger;
  /**
   * Told when a limit is hit (at most every 10 s, with a count); default: a
   * warning in `log`.
   */
  readonly onLimit?: (msg: string, fields: { limit: number; count: number }) => void;
  /** Default {@linkcode MAX_RESOLVES_IN_FLIGHT}. */
  readonly maxInFlight?: number;
  /** Default {@linkcode MAX_RESOLVES_QUEUED}. */
  readonly maxQueued?: number;
}

/** A lookup the Daemon will not do; its message is for the Console. */
export class LookupRefused extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LookupRefused";
  }
}

/** Logs one limit at once, then at most every 10 s with how often it was hit meanwhile. */
class LimitLog {
  readonly #gate = new LogThrottle();
  constructor(
    readonly warn: (msg: string, fields: { limit: number; count: number }) => void,
    readonly msg: string,
    readonly limit: number,
  ) {}
  hit(): void {
    const count = this.#gate.hit();
    if (count) this.warn(this.msg, { limit: this.limit, count });
  }
}

/**
 * Name lookups for the Console, bounded and within the allow-list.
 *
 * @example
 * ```ts
 * import { AllowList } from "../net/allowlist.ts";
 * import { createLogger } from "../core/log.ts";
 * import { Lookups } from "./lookups.ts";
 * const lookups = new Lookups({
 *   allow: AllowList.parse(["10.0.0.0/8"]),
 *   resolve: () => Promise.resolve(["192.168.0.9", "10.1.1.1"]),
 *   log: createLogger({ sink: () => {} }),
 * });
 * if ((await lookups.answer("web")).join() !== "10.1.1.1") throw new Error("bad");
 * ```
 */
export class Lookups {
  readonly #allow: AllowList;
  readonly #resolve: (host: string) => Promise<string[]>;
  readonly #maxInFlight: number;
  readonly #maxQueued: number;
  readonly #queue: (() => void)[] = [];
  readonly #queuedLog: LimitLog;
  readonly #refusedLog: LimitLog;
  #inFlight = 0;

  constructor(options: LookupsOptions) {
    this.#allow = options.allow;
    this.#resolve = options.resolve;
    this.#maxInFlight = options.maxInFlight ?? MAX_RESOLVES_IN_FLIGHT;
    this.#maxQueued = options.maxQueued ?? MAX_RESOLVES_QUEUED;
    const warn = options.onLimit ?? ((msg, fields) => options.log.warn(msg, fields));
    this.#queuedLog = new LimitLog(
      warn,
      "resolve limit reached, queueing lookups",
      this.#maxInFlight,
    );
    this.#refusedLog = new LimitLog(
      warn,
      "resolve queue full, refusing lookups",
      this.#maxQueued,
    );
  }

  /** Lookups running now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Lookups waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * The addresses to tell the Console for `host`. Rejects with
   * {@linkcode LookupRefused} when the rules refuse it or the queue is full,
   * or with the resolver's error. `stillWanted` is asked when a queued lookup
   * gets its slot: false (the session ended) skips it.
   */
  async answer(host: string, stillWanted: () => boolean = () => true): Promise<string[]> {
    if (this.#inFlight >= this.#maxInFlight) {
      if (this.#queue.length >= this.#maxQueued) {
        this.#refusedLog.hit();
        throw new LookupRefused(
          `Cannot resolve ${JSON.stringify(host)}: the Daemon has ${this.#maxInFlight} lookups ` +
            `running and ${this.#maxQueued} waiting; try again later`,
        );
      }
      this.#queuedLog.hit();
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else {
      this.#inFlight++;
    }
    // Here this lookup holds a slot (a finished one handed its slot over).
    try {
      if (!stillWanted()) {
        throw new LookupRefused(`Cannot resolve ${JSON.stringify(host)}: no longer wanted`);
      }
      const answer = await this.#allow.lookup(host, this.#resolve);
      if (!answer.allowed) throw new LookupRefused(answer.reason);
      return [...answer.addresses];
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#inFlight--;
    }
  }
}

/**
 * Answer the Console's RESOLVE on `session`: the addresses (at most 64), or
 * why not; logged either way. Nothing is sent once the session has ended.
 *
 * @example
 * ```ts ignore
 * session handlers: { onResolve: (msg) => answerResolve(lookups, session, msg, log) }
 * ```
 */
export function answerResolve(
  lookups: Lookups,
  session: Session,
  msg: ResolveMessage,
  log: Logger,
): void {
  const live = () => session.ended === null;
  lookups.answer(msg.host, live).then(
    (addresses) => {
      log.info("resolved for the Console", {
        session: session.id,
        host: msg.host,
        addresses: addresses.join(","),
      });
      if (live()) {
        session.send({
          tag: Tag.RESOLVE_RESULT,
          id: msg.id,
          addresses: addresses.slice(0, 64),
          error: null,
        });
      }
    },
    (err) => {
      const error = errorMessage(err);
      log.info("resolve failed for the Console", { session: session.id, host: msg.host, error });
      if (live()) session.send({ tag: Tag.RESOLVE_RESULT, id: msg.id, addresses: [], error });
    },
  );
}
