/**
 * How a peer's chat reaches the screen, on either side: every line escaped
 * and prefixed (`[chat root@vm] ...`, continuation rows `[chat root@vm] | ...`),
 * cut to the screen width so the terminal never wraps a row that starts
 * with the peer's text, and at most a screenful a second; what a flood
 * leaves out is counted and logged.
 *
 * @module
 */

import type { Logger } from "../core/log.ts";
import { escapeControls, printable } from "../core/text.ts";

/** Rows of a peer's chat shown per second (and at once): one screenful. */
export const CHAT_LINES_PER_SECOND = 24;

/** Columns a code point may take: wide (CJK, emoji) ones are counted as 2, to be safe. */
function columnsOf(ch: string): number {
  return ch.codePointAt(0)! >= 0x1100 ? 2 : 1;
}

/** Options for {@linkcode chatLines}. */
export interface ChatLinesOptions {
  /** Screen width; rows are cut to fit it. Default: no limit. */
  readonly columns?: number;
}

/**
 * The screen rows a chat message from `label` shows as: each line escaped
 * and prefixed, later lines (and rows cut to fit the screen) marked `|`.
 *
 * @example
 * ```ts
 * import { chatLines } from "./chat_view.ts";
 * const rows = chatLines("ann@vm", "hi\nSession ended: fake");
 * if (rows.join("/") !== "[chat ann@vm] hi/[chat ann@vm] | Session ended: fake") {
 *   throw new Error(rows.join("/"));
 * }
 * ```
 */
export function chatLines(label: string, text: string, options: ChatLinesOptions = {}): string[] {
  const first = `[chat ${escapeControls(label)}] `;
  const next = `${first}| `;
  const rows: string[] = [];
  const lines = printable(text.replace(/\r\n/g, "\n")).split("\n");
  for (const [i, line] of lines.entries()) {
    let prefix = i === 0 ? first : next;
    // Tabs would let the terminal move past our width; a space keeps the count true.
    let row = "";
    let width = prefix.length;
    for (const ch of line.replaceAll("\t", " ")) {
      const w = columnsOf(ch);
      if (options.columns !== undefined && row !== "" && width + w > options.columns) {
        rows.push(prefix + row);
        prefix = next;
        row = "";
        width = prefix.length;
      }
      row += ch;
      width += w;
    }
    rows.push(prefix + row);
  }
  return rows;
}

/** Options for {@linkcode ChatView}. */
export interface ChatViewOptions {
  /** Who speaks: `root@vm`, `console`. */
  readonly label: string;
  /** Writes one screen row. */
  readonly out: (row: string) => void;
  /** Where dropped rows are counted. */
  readonly log: Logger;
  /** Screen width now, or undefined when the output is not a terminal. Default: stdout's. */
  readonly columns?: () => number | undefined;
  /** Rows per second, and the burst. Default {@linkcode CHAT_LINES_PER_SECOND}. */
  readonly linesPerSecond?: number;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** The screen's width, or undefined when stdout is not a terminal. */
function stdoutColumns(): number | undefined {
  try {
    return Deno.stdout.isTerminal() ? Deno.consoleSize().columns : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A peer's chat on this side's screen: rows from {@linkcode chatLines},
 * rate-limited by a token bucket; dropped rows are logged as a count at
 * most once a second. Call `close()` when the session ends.
 *
 * @example
 * ```ts
 * import { ChatView } from "./chat_view.ts";
 * import { createLogger } from "../core/log.ts";
 * const rows: string[] = [];
 * const view = new ChatView({ label: "console", out: (r) => rows.push(r), log: createLogger() });
 * view.show("hello");
 * view.close();
 * if (rows[0] !== "[chat console] hello") throw new Error(rows[0]);
 * ```
 */
export class ChatView {
  #options: ChatViewOptions;
  #rate: number;
  #now: () => number;
  #tokens: number;
  #filled: number;
  #dropped = 0;
  #reported = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** A view that writes through `options`; nothing is shown until a message comes. */
  constructor(options: ChatViewOptions) {
    this.#options = options;
    this.#rate = options.linesPerSecond ?? CHAT_LINES_PER_SECOND;
    this.#now = options.now ?? Date.now;
    this.#tokens = this.#rate;
    this.#filled = this.#now();
  }

  /** Show one chat message, or as much of it as the rate allows. */
  show(text: string): void {
    const now = this.#now();
    this.#tokens = Math.min(this.#rate, this.#tokens + (now - this.#filled) * this.#rate / 1000);
    this.#filled = now;
    const columns = (this.#options.columns ?? stdoutColumns)();
    for (const row of chatLines(this.#options.label, text, { columns })) {
      if (this.#tokens >= 1) {
        this.#tokens--;
        this.#options.out(row);
      } else {
        this.#dropped++;
      }
    }
    if (this.#dropped > 0) this.#report();
  }

  /** Rows dropped and not yet logged. */
  get pending(): number {
    return this.#dropped;
  }

  /** Log what is still uncounted and stop. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flush();
  }

  #report(): void {
    const wait = this.#reported + 1000 - this.#now();
    if (wait <= 0) return this.#flush();
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, wait);
  }

  #flush(): void {
    if (this.#dropped === 0) return;
    this.#options.log.warn("chat from the peer came too fast: rows not shown", {
      from: this.#options.label,
      dropped: this.#dropped,
      limit: `${this.#rate}/s`,
    });
    this.#dropped = 0;
    this.#reported = this.#now();
  }
}
