/**
 * The Console's live screen at work: it draws {@linkcode consoleScreen}
 * from the running Console's `snapshot()` whenever its `events` say
 * something changed (and once a second, for ages and rates), and takes the
 * operator's keys: lines for the input line, y/n/t for a pending session.
 *
 * @module
 */

import { RateMeter } from "../core/rates.ts";
import type { LiveScreenOptions } from "../ui/screen.ts";
import { LiveView, type ScreenView } from "../ui/live_view.ts";
import type { ScreenLine } from "../ui/tables.ts";
import type { Console } from "./console.ts";
import { consoleScreen } from "./screen.ts";
import type { ConsoleEvent } from "./state.ts";

/** Options for {@linkcode ConsoleLive}. */
export interface ConsoleLiveOptions {
  /** Whether the operator is being asked about a pending session now. */
  readonly asking: () => boolean;
  /** Give a key to the open question; true when it was an answer. */
  readonly answer: (key: string) => boolean;
  /** Overrides for the terminal plumbing (tests). */
  readonly screen?: Partial<LiveScreenOptions>;
}

/** The Console's live screen. */
export class ConsoleLive extends LiveView<ConsoleEvent> {
  readonly #asking: () => boolean;
  readonly #rates = new RateMeter<"in" | "out">({ windowMs: 3000 });
  #console: Console | null = null;

  /** A screen not yet shown; {@linkcode ConsoleLive.attach} shows it. */
  constructor(options: ConsoleLiveOptions) {
    super({
      // y, n or t answers the pending-session question; other keys are typed.
      onKey: (key) => /^[ynt]$/i.test(key) && options.asking() && options.answer(key),
      ...options.screen,
    });
    this.#asking = options.asking;
  }

  /** Show the screen for `con` and keep it current until {@linkcode LiveView.stop}. */
  attach(con: Console): void {
    this.#console = con;
    this.follow((signal) => con.events.subscribe({ signal }));
  }

  protected override render(view: ScreenView): ScreenLine[] {
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
      startedAt: this.startedAt,
      rates: (id) => this.#rates.rates(String(id), now),
      asking: this.#asking(),
      exiting: this.exitingText,
    });
  }
}
