/**
 * An event stream for a program's views: state changes reach every
 * subscriber in order, and progress (counters of busy connections) is
 * coalesced to the newest value per key, so 10,000 busy connections cannot
 * flood a subscriber and a slow one drops intermediate progress, never a
 * state change.
 *
 * @module
 */

/** Anything with a `type`: the events a program publishes. */
export interface EventLike {
  /** What kind of event it is. */
  readonly type: string;
}

/** Options for {@linkcode EventHub}. */
export interface EventHubOptions {
  /**
   * State events one subscriber may have waiting before it is cut off (its
   * iterator ends): a view that stopped reading must not hold memory
   * without bound. Default 10,000.
   */
  readonly maxQueued?: number;
}

/** Options for {@linkcode EventHub.subscribe}. */
export interface SubscribeOptions {
  /** Ends the subscription. */
  readonly signal?: AbortSignal;
}

/** One view's subscription: iterate it for events; dispose it to stop. */
export interface Subscription<E> extends AsyncIterable<E>, Disposable {}

/** One subscriber's queue: state events in order, progress newest per key. */
class Subscriber<E extends EventLike> {
  readonly states: E[] = [];
  readonly progress = new Map<string, E>();
  wake: (() => void) | null = null;
  ended = false;

  notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

/**
 * Publishes events to subscribers that read at their own pace.
 *
 * @example
 * ```ts
 * import { EventHub } from "./events.ts";
 * const hub = new EventHub<{ type: string; id: number; bytes?: number }>();
 * const seen: string[] = [];
 * const abort = new AbortController();
 * const reading = (async () => {
 *   for await (const e of hub.subscribe({ signal: abort.signal })) {
 *     seen.push(`${e.type}:${e.bytes ?? ""}`);
 *     if (e.type === "closed") abort.abort();
 *   }
 * })();
 * hub.emit({ type: "opened", id: 1 });
 * for (let i = 1; i <= 1000; i++) hub.progress("conn-1", { type: "progress", id: 1, bytes: i });
 * hub.emit({ type: "closed", id: 1 }, "conn-1");
 * await reading;
 * // The closed connection's pending progress is dropped: it is no longer news.
 * if (seen.join(" ") !== "opened: closed:") throw new Error(seen.join(" "));
 * ```
 */
export class EventHub<E extends EventLike> {
  #subscribers = new Set<Subscriber<E>>();
  #maxQueued: number;

  /** A hub with no subscribers yet. */
  constructor(options: EventHubOptions = {}) {
    this.#maxQueued = options.maxQueued ?? 10_000;
  }

  /** How many views are subscribed. */
  get subscribers(): number {
    return this.#subscribers.size;
  }

  /**
   * Publish a state change. Every subscriber gets it, in order. `key`, when
   * given, drops that key's pending progress (the change supersedes it).
   */
  emit(event: E, key?: string): void {
    for (const sub of this.#subscribers) {
      if (key !== undefined) sub.progress.delete(key);
      if (sub.states.length >= this.#maxQueued) {
        this.#end(sub);
        continue;
      }
      sub.states.push(event);
      sub.notify();
    }
  }

  /** Publish progress for `key`: a subscriber that has not read the last one gets only the newest. */
  progress(key: string, event: E): void {
    for (const sub of this.#subscribers) {
      sub.progress.delete(key); // re-insert: the newest goes to the back of the line
      sub.progress.set(key, event);
      sub.notify();
    }
  }

  /**
   * Start reading events: the subscription counts from this call (not from
   * the first read) until `signal` aborts, it is disposed, or it falls more
   * than `maxQueued` state events behind. State events come first, in order;
   * progress comes when no state event waits.
   */
  subscribe(options: SubscribeOptions = {}): Subscription<E> {
    const sub = new Subscriber<E>();
    this.#subscribers.add(sub);
    const end = () => this.#end(sub);
    options.signal?.addEventListener("abort", end, { once: true });
    if (options.signal?.aborted) end();
    const take = () => sub.states.shift() ?? this.#takeProgress(sub);
    async function* read(): AsyncGenerator<E, void, undefined> {
      try {
        while (!sub.ended) {
          const next = take();
          if (next !== undefined) yield next;
          else await new Promise<void>((resolve) => (sub.wake = resolve));
        }
      } finally {
        options.signal?.removeEventListener("abort", end);
        end();
      }
    }
    const events = read();
    return {
      [Symbol.asyncIterator]: () => events,
      [Symbol.dispose]: end,
    };
  }

  /** End every subscription. */
  close(): void {
    for (const sub of [...this.#subscribers]) this.#end(sub);
  }

  #takeProgress(sub: Subscriber<E>): E | undefined {
    const first = sub.progress.entries().next();
    if (first.done) return undefined;
    sub.progress.delete(first.value[0]);
    return first.value[1];
  }

  #end(sub: Subscriber<E>): void {
    sub.ended = true;
    this.#subscribers.delete(sub);
    sub.states.length = 0;
    sub.progress.clear();
    sub.notify();
  }
}
