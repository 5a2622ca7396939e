/**
 * The Daemon's live screen at work: it draws {@linkcode daemonScreen} from
 * the running Daemon's `snapshot()` whenever its events say something
 * changed (and once a second, for ages and rates); the input line's lines
 * go to the Daemon's prompt.
 *
 * @module
 */

import { createLogger, type Logger, type LogLevel } from "../core/log.ts";
import type { SubscribeOptions, Subscription } from "../core/events.ts";
import { LiveScreen, type LiveScreenOptions } from "../ui/screen.ts";
import type { ScreenLine } from "../ui/tables.ts";
import { daemonScreen } from "./screen.ts";
import type { DaemonEvent, DaemonSnapshot } from "./state.ts";

/** What the screen reads: the running Daemon. */
export interface DaemonLiveTarget {
  /** Everything the Daemon's user can see, now. */
  snapshot(): DaemonSnapshot;
  /** The Daemon's events, read at the reader's pace. */
  subscribe(options?: SubscribeOptions): Subscription<DaemonEvent>;
}

/** How often the screen redraws with nothing new (ages, uptime, falling rates). */
const IDLE_REDRAW_MS = 1000;

/** The Daemon's live screen. */
export class DaemonLive {
  /** The terminal plumbing: its `lines()` are the user's input lines. */
  readonly screen: LiveScreen;
  readonly #startedAt = Date.now();
  #daemon: DaemonLiveTarget | null = null;
  #exiting: string | null = null;
  #closed = { bytesIn: 0, bytesOut: 0 };
  #timer: ReturnType<typeof setInterval> | null = null;
  readonly #stop = new AbortController();

  /** A screen not yet shown; {@linkcode DaemonLive.attach} shows it. */
  constructor(options: { screen?: Partial<LiveScreenOptions> } = {}) {
    this.screen = new LiveScreen({ render: (view) => this.#render(view), ...options.screen });
  }

  /** The display for the Daemon's own lines (session steps, chat). */
  get display(): (text: string) => void {
    return this.screen.display;
  }

  /** A logger whose records become event lines. */
  logger(level: LogLevel): Logger {
    return createLogger({ level, format: "text", sink: this.screen.logSink });
  }

  /** Show the screen for `daemon` and keep it current until {@linkcode DaemonLive.stop}. */
  attach(daemon: DaemonLiveTarget): void {
    this.#daemon = daemon;
    this.screen.start();
    this.#timer = setInterval(() => this.screen.invalidate(), IDLE_REDRAW_MS);
    (async () => {
      for await (const event of daemon.subscribe({ signal: this.#stop.signal })) {
        if (event.type === "closed") {
          this.#closed = {
            bytesIn: this.#closed.bytesIn + event.connection.bytesIn,
            bytesOut: this.#closed.bytesOut + event.connection.bytesOut,
          };
        }
        this.screen.invalidate();
      }
    })();
  }

  /** Say that the Daemon is exiting (shown in the header until it stops). */
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
    const daemon = this.#daemon;
    if (!daemon) return [{ text: "portferry Daemon: starting", style: "title" }, ...view.events];
    return daemonScreen(daemon.snapshot(), view, {
      now: Date.now(),
      startedAt: this.#startedAt,
      closed: this.#closed,
      exiting: this.#exiting,
    });
  }
}
