/**
 * The Console's live screen at work: it draws {@linkcode consoleScreen}
 * from the running Console's `snapshot()` whenever its `events` say
 * something changed (and once a second, for ages and rates), and takes the
 * operator's keys: lines for the input line, y/n/t for a pending session.
 *
 * @module
 */

import { createLogger, type Logger, type LogLevel } from "../core/log.ts";
import { RateMeter } from "../core/rates.ts";
import { LiveScreen, type LiveScreenOptions } from "../ui/screen.ts";
import type { ScreenLine } from "../ui/tables.ts";
import type { Console } from "./console.ts";
import { consoleScreen } from "./screen.ts";

/** Options for {@linkcode ConsoleLive}. */
export interface ConsoleLiveOptions {
  /** Whether the operator is being asked about a pending session now. */
  readonly asking: () => boolean;
  /** Give a key to the open question; true when it was an answer. */
  readonly answer: (key: string) => boolean;
  /** Overrides for the terminal plumbing (tests). */
  readonly screen?: Partial<LiveScreenOptions>;
}

/** How often the screen redraws with nothing new (ages, uptime, falling rates). */
const IDLE_REDRAW_MS = 1000;

/** The Console's live screen. */
export class ConsoleLive {
  /** The terminal plumbing: its `lines()` are the operator's input lines. */
  readonly screen: LiveScreen;
  readonly #o: ConsoleLiveOptions;
  readonly #startedAt = Date.now();
  readonly #rates = new RateMeter<"in" | "out">({ windowMs: 3000 });
  #console: Console | null = null;
  #exiting: string | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  readonly #stop = new AbortController();

  /** A screen not yet shown; {@linkcode ConsoleLive.attach} shows it. */
  constructor(options: ConsoleLiveOptions) {
    this.#o = options;
    this.screen = new LiveScreen({
      render: (view) => this.#render(view),
      // y, n or t answers the pending-session question; other keys are typed.
      onKey: (key) => /^[ynt]$/i.test(key) && options.asking() && options.answer(key),
      ...options.screen,
    });
  }

  /** The display for the Console's own lines (banner, answers, chat). */
  get display(): (text: string) => void {
    return this.screen.display;
  }

  /** A logger whose records become event lines. */
  logger(level: LogLevel): Logger {
    return createLogger({ level, format: "text", sink: this.screen.logSink });
  }

  /** Show the screen for `con` and keep it current until {@linkcode ConsoleLive.stop}. */
  attach(con: Console): void {
    this.#console = con;
    this.screen.start();
    this.#timer = setInterval(() => this.screen.invalidate(), IDLE_REDRAW_MS);
    (async () => {
      for await (const _event of con.events.subscribe({ signal: this.#stop.signal })) {
        this.screen.invalidate();
      }
    })();
  }

  /** Say that the Console is exiting (shown in the header until it stops). */
  exiting(text: string): void {
    this.#exiting = text;
    this.screen.invalidate();
  }

  /** Give the terminal back; later lines are printed as before. */
  stop(): void {
    this.#stop.abort();
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.screen.stop();
  }

  #render(view: Parameters<LiveScreenOptions["render"]>[0]): ScreenLine[] {
    const con = this.#console;
    if (!con) return [{ text: "portferry Console: starting", style: "title" }, ...view.events];
    const now = Date.now();
    const snapshot = con.snapshot();
    const open = new Set<string>();
    for (const c of snapshot.connections) {
      const key = String(c.id);
      open.add(key);
      this.#rates.sample(key, { in: c.bytesIn, out: c.bytesOut }, now);
    }
    this.#rates.retain(open);
    return consoleScreen(snapshot, view, {
      now,
      startedAt: this.#startedAt,
      rates: (id) => this.#rates.rates(String(id), now),
      asking: this.#o.asking(),
      exiting: this.#exiting,
    });
  }
}
