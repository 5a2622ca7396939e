/**
 * The Daemon's live screen at work: it draws {@linkcode daemonScreen} from
 * the running Daemon's `snapshot()` whenever its events say something
 * changed (and once a second, for ages and rates); the input line's lines
 * go to the Daemon's prompt.
 *
 * @module
 */

import type { SubscribeOptions, Subscription } from "../core/events.ts";
import type { LiveScreenOptions } from "../ui/screen.ts";
import { LiveView, type ScreenView } from "../ui/live_view.ts";
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

/** The Daemon's live screen. */
export class DaemonLive extends LiveView<DaemonEvent> {
  #daemon: DaemonLiveTarget | null = null;
  /** Bytes of the connections that closed, for the header's totals. */
  #closed = { bytesIn: 0, bytesOut: 0 };

  /** A screen not yet shown; {@linkcode DaemonLive.attach} shows it. */
  constructor(options: { screen?: Partial<LiveScreenOptions> } = {}) {
    super(options.screen ?? {});
  }

  /** Show the screen for `daemon` and keep it current until {@linkcode LiveView.stop}. */
  attach(daemon: DaemonLiveTarget): void {
    this.#daemon = daemon;
    this.follow((signal) => daemon.subscribe({ signal }));
  }

  protected override onEvent(event: DaemonEvent): void {
    if (event.type !== "closed") return;
    this.#closed = {
      bytesIn: this.#closed.bytesIn + event.connection.bytesIn,
      bytesOut: this.#closed.bytesOut + event.connection.bytesOut,
    };
  }

  protected override render(view: ScreenView): ScreenLine[] {
    const daemon = this.#daemon;
    if (!daemon) return [{ text: "portferry Daemon: starting", style: "title" }, ...view.events];
    return daemonScreen(daemon.snapshot(), view, {
      now: Date.now(),
      startedAt: this.startedAt,
      closed: this.#closed,
      exiting: this.exitingText,
    });
  }
}
