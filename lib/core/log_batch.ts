/**
 * Per-connection info records, summarised in bursts. Twenty parallel
 * downloads used to write 40 lines within 170 ms; through a
 * {@linkcode LogBatcher} a PFO writes its first few records of each window
 * as they are and one summary line (counts and byte sums) for the rest.
 * Warnings and errors never go through it: they stay one line each.
 *
 * @module
 */

import type { LogFields, Logger } from "./log.ts";

/** Records written as they are per key and window before the rest are counted. */
export const BATCH_LINES = 8;
/** The window those lines are counted over, in milliseconds. */
export const BATCH_WINDOW_MS = 1000;

/** Options for {@linkcode LogBatcher}. */
export interface LogBatcherOptions {
  /** Records written per key and window before the rest are summarised. Default {@linkcode BATCH_LINES}. */
  readonly lines?: number;
  /** The window, in ms. Default {@linkcode BATCH_WINDOW_MS}. */
  readonly windowMs?: number;
}

/** One info record offered to a {@linkcode LogBatcher}. */
export interface BatchedRecord {
  /** What the record is counted under, e.g. the PFO's name. */
  readonly key: string;
  /** The summary's count field for it when summarised, e.g. `opened`. */
  readonly kind: string;
  /** The record's own logger (its full scope). */
  readonly log: Logger;
  /** Where the summary goes (the key's scope, without the record's own). */
  readonly summaryLog: Logger;
  readonly msg: string;
  readonly fields?: LogFields;
  /** Numbers the summary adds up (e.g. bytes), when the record is summarised. */
  readonly sums?: Readonly<Record<string, number>>;
}

interface Window {
  readonly summaryLog: Logger;
  readonly started: number;
  written: number;
  readonly counts: Record<string, number>;
  readonly timer: ReturnType<typeof setTimeout>;
}

/**
 * Writes info records, at most `lines` per key in each window; the rest of
 * the window's records become one summary line, `connections summarised`,
 * with a count per kind, the sums, and `periodMs`, written when the window
 * ends (or on {@linkcode LogBatcher.flush}).
 *
 * @example
 * ```ts
 * import { createLogger } from "./log.ts";
 * import { LogBatcher } from "./log_batch.ts";
 * const lines: string[] = [];
 * const log = createLogger({ sink: (l) => lines.push(l), format: "json" });
 * const batcher = new LogBatcher({ lines: 1 });
 * for (let i = 0; i < 3; i++) {
 *   batcher.info({ key: "web", kind: "opened", log, summaryLog: log, msg: "connection opened" });
 * }
 * batcher.flush();
 * if (lines.length !== 2 || JSON.parse(lines[1]).opened !== 2) throw new Error(lines.join("\n"));
 * ```
 */
export class LogBatcher {
  readonly #lines: number;
  readonly #windowMs: number;
  readonly #windows = new Map<string, Window>();

  /** A batcher with no window open. */
  constructor(options: LogBatcherOptions = {}) {
    this.#lines = options.lines ?? BATCH_LINES;
    this.#windowMs = options.windowMs ?? BATCH_WINDOW_MS;
  }

  /** Write `record` at info level, or count it in its key's summary. */
  info(record: BatchedRecord): void {
    if (!record.log.enabled("info")) return;
    const window = this.#windows.get(record.key) ?? this.#open(record);
    if (window.written < this.#lines) {
      window.written++;
      record.log.info(record.msg, record.fields);
      return;
    }
    window.counts[record.kind] = (window.counts[record.kind] ?? 0) + 1;
    for (const [name, n] of Object.entries(record.sums ?? {})) {
      window.counts[name] = (window.counts[name] ?? 0) + n;
    }
  }

  /** Write every pending summary now and close every window. */
  flush(): void {
    for (const key of [...this.#windows.keys()]) this.#end(key);
  }

  #open(record: BatchedRecord): Window {
    const timer = setTimeout(() => this.#end(record.key), this.#windowMs);
    Deno.unrefTimer(timer);
    const window: Window = {
      summaryLog: record.summaryLog,
      started: Date.now(),
      written: 0,
      counts: {},
      timer,
    };
    this.#windows.set(record.key, window);
    return window;
  }

  #end(key: string): void {
    const window = this.#windows.get(key);
    if (!window) return;
    this.#windows.delete(key);
    clearTimeout(window.timer);
    if (Object.keys(window.counts).length === 0) return;
    window.summaryLog.info("connections summarised", {
      ...window.counts,
      periodMs: Date.now() - window.started,
    });
  }
}
