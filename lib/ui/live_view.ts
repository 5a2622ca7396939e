/**
 * What the Console's and the Daemon's live screens share: the terminal
 * plumbing ({@linkcode LiveScreen}), a logger whose records become event
 * lines, a redraw whenever the program's events say something changed (and
 * once a second, for ages and rates), the "exiting" note, and giving the
 * terminal back. Each program's screen adds what it draws.
 *
 * @module
 */

import { createLogger, type Logger, type LogLevel } from "../core/log.ts";
import { LiveScreen, type LiveScreenOptions } from "./screen.ts";
import type { ScreenLine } from "./tables.ts";

/** How often the screen redraws with nothing new (ages, uptime, falling rates). */
const IDLE_REDRAW_MS = 1000;

/** What a screen is given to draw: its size and the event lines. */
export type ScreenView = Parameters<LiveScreenOptions["render"]>[0];

/** A program's live screen; `E` is the program's event type. */
export abstract class LiveView<E> {
  /** The terminal plumbing: its `lines()` are the user's input lines. */
  readonly screen: LiveScreen;
  /** When the screen was made, for the uptime it shows. */
  protected readonly startedAt: number = Date.now();
  /** Set by {@linkcode LiveView.exiting}: shown in the header until the program stops. */
  protected exitingText: string | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  readonly #stop = new AbortController();

  /** A screen not yet shown; `follow` shows it. */
  constructor(options: Partial<LiveScreenOptions>) {
    this.screen = new LiveScreen({ render: (view) => this.render(view), ...options });
  }

  /** The display for the program's own lines (banner, steps, answers, chat). */
  get display(): (text: string) => void {
    return this.screen.display;
  }

  /** A logger whose records become event lines. */
  logger(level: LogLevel): Logger {
    return createLogger({ level, format: "text", sink: this.screen.logSink });
  }

  /** Say that the program is exiting (shown in the header until it stops). */
  exiting(text: string): void {
    this.exitingText = text;
    this.screen.invalidate();
  }

  /** Give the terminal back; later lines are printed as before. */
  stop(): void {
    this.#stop.abort();
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.screen.stop();
  }

  /** Show the screen and redraw it on each event until {@linkcode LiveView.stop}. */
  protected follow(subscribe: (signal: AbortSignal) => AsyncIterable<E>): void {
    this.screen.start();
    this.#timer = setInterval(() => this.screen.invalidate(), IDLE_REDRAW_MS);
    (async () => {
      for await (const event of subscribe(this.#stop.signal)) {
        this.onEvent(event);
        this.screen.invalidate();
      }
    })();
  }

  /** Told of each event before the redraw it causes. */
  protected onEvent(_event: E): void {}

  /** The screen's rows for `view`. */
  protected abstract render(view: ScreenView): ScreenLine[];
}
