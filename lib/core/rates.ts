/**
 * Rates per key over a sliding window, from counters sampled on a tick:
 * bytes per second for a PFO or a connection, on either side.
 *
 * @module
 */

/** Counters a {@linkcode RateMeter} turns into rates: named, ever-growing numbers. */
export type Counters<K extends string> = Readonly<Record<K, number>>;

/** Options for {@linkcode RateMeter}. */
export interface RateMeterOptions {
  /** How far back rates look, in ms. Default 5,000. */
  readonly windowMs?: number;
}

/**
 * Rates per key over a sliding window. Feed it each key's counters on every
 * tick; only counters that moved are stored, so an idle key costs nothing.
 * Because a change is seen at the first tick after it, the counters at the
 * window's start are those of the last sample at or before it.
 *
 * @example
 * ```ts
 * import { RateMeter } from "./rates.ts";
 * const meter = new RateMeter<"bytesIn" | "bytesOut">({ windowMs: 5000 });
 * meter.sample("web", { bytesIn: 0, bytesOut: 0 }, 0);
 * meter.sample("web", { bytesIn: 2000, bytesOut: 500 }, 2000);
 * if (meter.rates("web", 2000)?.bytesIn !== 1000) throw new Error("bad rate");
 * ```
 */
export class RateMeter<K extends string> {
  #windowMs: number;
  /** Per key: samples whose counters differ from the one before, oldest first. */
  #samples = new Map<string, { at: number; counters: Counters<K> }[]>();

  /** A meter over `windowMs` (default 5 s). */
  constructor(options: RateMeterOptions = {}) {
    this.#windowMs = options.windowMs ?? 5000;
  }

  /**
   * Record `counters` for `key` at time `at` (ms). Returns whether they moved
   * since the last sample (only then are they stored).
   */
  sample(key: string, counters: Counters<K>, at: number = Date.now()): boolean {
    let list = this.#samples.get(key);
    if (list === undefined) {
      list = [];
      this.#samples.set(key, list);
    }
    const last = list[list.length - 1];
    if (last && sameCounters(last.counters, counters)) return false;
    list.push({ at, counters });
    // Keep one sample at or before the window's start, to measure from.
    while (list.length > 2 && at - list[1].at >= this.#windowMs) list.shift();
    return true;
  }

  /**
   * Each counter's rate per second over the window ending `now`; null when
   * nothing moved within it (or before two different samples).
   */
  rates(key: string, now: number = Date.now()): Record<K, number> | null {
    const list = this.#samples.get(key);
    if (!list || list.length < 2) return null;
    const last = list[list.length - 1];
    if (now - last.at >= this.#windowMs) return null;
    const first = list[0];
    const seconds = (now - Math.max(first.at, now - this.#windowMs)) / 1000;
    if (seconds <= 0) return null;
    const rates = {} as Record<K, number>;
    for (const name of Object.keys(last.counters) as K[]) {
      rates[name] = Math.max(0, last.counters[name] - first.counters[name]) / seconds;
    }
    return rates;
  }

  /** The keys whose counters moved within the window ending `now`. */
  moving(now: number = Date.now()): string[] {
    const keys: string[] = [];
    for (const [key, list] of this.#samples) {
      if (list.length >= 2 && now - list[list.length - 1].at < this.#windowMs) keys.push(key);
    }
    return keys;
  }

  /** Forget `key` (its connection closed). */
  forget(key: string): void {
    this.#samples.delete(key);
  }

  /** Forget keys not in `keep`. */
  retain(keep: ReadonlySet<string>): void {
    for (const key of this.#samples.keys()) if (!keep.has(key)) this.#samples.delete(key);
  }
}

function sameCounters<K extends string>(a: Counters<K>, b: Counters<K>): boolean {
  for (const name of Object.keys(b) as K[]) if (a[name] !== b[name]) return false;
  return true;
}
