/**
 * The terminal plumbing of both programs' live screens, in raw ANSI: the
 * alternate screen, a whole frame built as one string and written at once
 * (no flicker, no scrolling), at most four frames a second, an input line
 * edited here, resize, `NO_COLOR`, and the terminal restored on every way
 * out (a normal exit, an uncaught error, an unhandled rejection, `Deno.exit`).
 *
 * What a screen shows is the program's layout (lib/console/screen.ts,
 * lib/daemon/screen.ts): a pure function of a snapshot and a size.
 *
 * @module
 */

import type { LogLevel } from "../core/log.ts";
import { escapeControls, printable } from "../core/text.ts";
import {
  clock,
  fit,
  type LineStyle,
  type ScreenLine,
  type ScreenSize,
  textWidth,
} from "./tables.ts";

/** Enter: alternate screen, no line wrap, cursor hidden, screen cleared. */
export const ENTER_SCREEN = "\x1b[?1049h\x1b[?7l\x1b[?25l\x1b[2J";
/** Leave: attributes reset, line wrap and cursor back, the user's screen back. */
export const LEAVE_SCREEN = "\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l";

/** Fewest milliseconds between two full frames: at most four a second. */
export const FRAME_MS = 250;

/** Event lines a screen keeps. */
const EVENTS_KEPT = 200;

/** Event lines printed again once the screen is gone, so the user sees how it ended. */
const EVENTS_ON_EXIT = 8;

/** Longest input line, in characters. */
const INPUT_MAX = 2000;

const STYLES: Record<LineStyle, string> = {
  title: "\x1b[1;36m",
  head: "\x1b[1m",
  dim: "\x1b[2m",
  warn: "\x1b[33m",
  overlay: "\x1b[1;7m",
  input: "",
};

/** What a layout draws from, besides the program's snapshot. */
export interface ScreenView {
  /** The screen's size, less the input line at the bottom. */
  readonly size: ScreenSize;
  /** The latest event lines, oldest first. */
  readonly events: readonly ScreenLine[];
}

/**
 * Whether the live screen should run: stdin and stdout are terminals, the
 * user asked for neither `--plain` nor `--headless`, and `TERM` is not `dumb`.
 *
 * @example
 * ```ts
 * import { wantsScreen } from "./screen.ts";
 * if (wantsScreen({ plain: true, headless: false })) throw new Error("--plain must win");
 * ```
 */
export function wantsScreen(options: { plain: boolean; headless: boolean }): boolean {
  if (options.plain || options.headless) return false;
  try {
    const term = Deno.env.get("TERM") ?? "";
    return term !== "" && term !== "dumb" && Deno.stdin.isTerminal() &&
      Deno.stdout.isTerminal();
  } catch {
    return false;
  }
}

/** Whether colour is wanted: `NO_COLOR` set to anything non-empty turns it off. */
export function wantsColor(): boolean {
  try {
    return (Deno.env.get("NO_COLOR") ?? "") === "";
  } catch {
    return true;
  }
}

/**
 * One frame as the string written to the terminal: cursor home, every row
 * fitted to the width (padded, so no old text shows through), styles only
 * when `color`, and the cursor left on the input line.
 *
 * @example
 * ```ts
 * import { frame } from "./screen.ts";
 * const text = frame([{ text: "hello" }], "hi", { columns: 10, rows: 3 }, false);
 * if (!text.includes("hello     \r\n") || !text.endsWith("\x1b[3;5H\x1b[?25h")) throw new Error(JSON.stringify(text));
 * ```
 */
export function frame(
  lines: readonly ScreenLine[],
  input: string,
  size: ScreenSize,
  color: boolean,
): string {
  let out = "\x1b[?25l\x1b[H";
  for (let row = 0; row < size.rows - 1; row++) {
    const line = lines[row] ?? { text: "" };
    out += styled(fit(line.text, size.columns, { pad: true }), line.style, color) + "\r\n";
  }
  return out + inputRow(input, size, color);
}

/** The input line alone, cursor placed after the text: what a keystroke redraws. */
export function inputRow(input: string, size: ScreenSize, color: boolean): string {
  const prompt = "> ";
  const room = Math.max(1, size.columns - prompt.length - 1);
  let shown = escapeControls(input);
  while (textWidth(shown) > room) shown = shown.slice(1);
  const text = fit(prompt + shown, size.columns, { pad: true });
  const col = Math.min(size.columns, prompt.length + textWidth(shown) + 1);
  return `\x1b[${size.rows};1H` + styled(text, "input", color) +
    `\x1b[${size.rows};${col}H\x1b[?25h`;
}

function styled(text: string, style: LineStyle | undefined, color: boolean): string {
  if (!color || style === undefined || STYLES[style] === "") return text;
  return `${STYLES[style]}${text}\x1b[0m`;
}

/** Options for {@linkcode LiveScreen}. */
export interface LiveScreenOptions {
  /** The program's layout: the rows above the input line. */
  readonly render: (view: ScreenView) => ScreenLine[];
  /**
   * A key typed while the input line is empty; return true when it was an
   * answer (the pending-session overlay's y, n, t) and must not be typed.
   */
  readonly onKey?: (key: string) => boolean;
  /** Ctrl-C when the terminal does not turn it into a signal (Windows). */
  readonly onInterrupt?: () => void;
  /** Where frames go. Default: stdout, synchronously. */
  readonly write?: (text: string) => void;
  /** The terminal's size. Default `Deno.consoleSize()`. */
  readonly size?: () => ScreenSize;
  /** Colours. Default: unless `NO_COLOR`. */
  readonly color?: boolean;
  /** Read keys from stdin in raw mode. Default true. */
  readonly keyboard?: boolean;
}

const encoder = new TextEncoder();

function stdoutWrite(text: string): void {
  try {
    Deno.stdout.writeSync(encoder.encode(text));
  } catch {
    // The terminal is gone: nothing to draw on.
  }
}

/**
 * A live screen: call {@linkcode LiveScreen.invalidate} when something
 * changed; it redraws at most every {@linkcode FRAME_MS}. Typed lines come
 * out of {@linkcode LiveScreen.lines}.
 */
export class LiveScreen {
  readonly #o: LiveScreenOptions;
  readonly #write: (text: string) => void;
  readonly #color: boolean;
  readonly #events: ScreenLine[] = [];
  readonly #typed: string[] = [];
  #wake: (() => void) | null = null;
  #input = "";
  #timer: ReturnType<typeof setTimeout> | null = null;
  #lastFrame = -Infinity;
  #active = false;
  #started = false;
  #ended = false;
  #raw = false;
  readonly #restore = () => this.stop();
  readonly #resize = () => this.invalidate();
  /** Frames drawn so far. */
  frames = 0;

  /** A screen not yet shown: {@linkcode LiveScreen.start} takes the terminal. */
  constructor(options: LiveScreenOptions) {
    this.#o = options;
    this.#write = options.write ?? stdoutWrite;
    this.#color = options.color ?? wantsColor();
  }

  /** Take the terminal: alternate screen, raw keys, restore hooks; draw the first frame. */
  start(): void {
    if (this.#active || this.#started) return;
    this.#active = true;
    this.#started = true;
    for (const type of ["unload", "error", "unhandledrejection"]) {
      globalThis.addEventListener(type, this.#restore);
    }
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGWINCH", this.#resize);
    this.#write(ENTER_SCREEN);
    if (this.#o.keyboard !== false) this.#readKeys();
    this.paint();
  }

  /** Give the terminal back as it was. Safe to call more than once, and from a crash. */
  stop(): void {
    if (!this.#active) return;
    this.#active = false;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (const type of ["unload", "error", "unhandledrejection"]) {
      globalThis.removeEventListener(type, this.#restore);
    }
    if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGWINCH", this.#resize);
    if (this.#raw) {
      try {
        Deno.stdin.setRaw(false);
      } catch {
        // stdin gone: nothing to restore.
      }
      this.#raw = false;
    }
    const last = this.#events.slice(-EVENTS_ON_EXIT).map((l) => printable(l.text) + "\n");
    this.#write(LEAVE_SCREEN + last.join(""));
    this.#endLines();
  }

  /**
   * The program's display: a line of ours (banner, answers, chat) becomes
   * an event line; once the screen is gone, it is printed as before.
   */
  readonly display = (text: string): void => {
    if (this.#started && !this.#active) this.#write(printable(text) + "\n");
    else this.note(text);
  };

  /** A log sink: text records become event lines (warnings stand out). */
  readonly logSink = (line: string, level: LogLevel): void => {
    const m = line.match(/^(\S+T\S+Z) (.*)$/s);
    const at = m ? new Date(m[1]) : new Date();
    const text = m ? m[2] : line;
    if (this.#started && !this.#active) return this.#write(printable(line) + "\n");
    this.note(text, level === "warn" || level === "error" ? "warn" : "dim", at);
  };

  /** Add an event line (our own text or a peer's: it is escaped when drawn). */
  note(text: string, style?: LineStyle, at: Date = new Date()): void {
    if (text === "\x1b[2J\x1b[H") { // `/clear`
      this.#events.length = 0;
    } else {
      for (const part of text.split("\n")) {
        this.#events.push({ text: `${clock(at)} ${part}`, style });
      }
      if (this.#events.length > EVENTS_KEPT) {
        this.#events.splice(0, this.#events.length - EVENTS_KEPT);
      }
    }
    this.invalidate();
  }

  /** Something changed: draw a frame soon (at most one per {@linkcode FRAME_MS}). */
  invalidate(): void {
    if (!this.#active || this.#timer !== null) return;
    const wait = Math.max(0, this.#lastFrame + FRAME_MS - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.paint();
    }, wait);
  }

  /** Draw a whole frame now, in one write. */
  paint(): void {
    if (!this.#active) return;
    this.#lastFrame = performance.now();
    const size = this.#size();
    const view: ScreenView = {
      size: { columns: size.columns, rows: Math.max(0, size.rows - 1) },
      events: this.#events,
    };
    this.#write(frame(this.#o.render(view), this.#input, size, this.#color));
    this.frames++;
  }

  /** The lines typed (Enter), until the screen stops. */
  async *lines(): AsyncGenerator<string> {
    while (true) {
      const next = this.#typed.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Handle typed bytes: edit the input line, submit it, or answer a key. */
  type(text: string): void {
    for (const key of keys(text)) this.#key(key);
  }

  #key(key: string): void {
    if (key === "\r" || key === "\n") {
      const line = this.#input;
      this.#input = "";
      this.#typed.push(line);
      this.#wakeLines();
    } else if (key === "\x7f" || key === "\b") {
      this.#input = [...this.#input].slice(0, -1).join("");
    } else if (key === "\x15") {
      this.#input = "";
    } else if (key === "\x0c") {
      this.#write("\x1b[2J");
      return this.paint();
    } else if (key === "\x03") {
      return this.#o.onInterrupt?.();
    } else if (key.length === 0 || key.startsWith("\x1b") || key < " ") {
      return; // arrows, function keys and other controls: not text
    } else if (this.#input === "" && this.#o.onKey?.(key)) {
      return this.invalidate();
    } else if (this.#input.length < INPUT_MAX) {
      this.#input += key;
    }
    if (this.#active) this.#write(inputRow(this.#input, this.#size(), this.#color));
  }

  #wakeLines(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #endLines(): void {
    this.#ended = true;
    this.#wakeLines();
  }

  #size(): ScreenSize {
    try {
      const size = this.#o.size?.() ?? Deno.consoleSize();
      return { columns: Math.max(1, size.columns), rows: Math.max(2, size.rows) };
    } catch {
      return { columns: 80, rows: 24 };
    }
  }

  async #readKeys(): Promise<void> {
    try {
      // cbreak: Ctrl-C stays a signal, so it drains as it always has.
      Deno.stdin.setRaw(true, { cbreak: Deno.build.os !== "windows" });
      this.#raw = true;
    } catch {
      return; // not a terminal after all: no keys
    }
    const decoder = new TextDecoder();
    const buf = new Uint8Array(1024);
    while (this.#active) {
      let n: number | null;
      try {
        n = await Deno.stdin.read(buf);
      } catch {
        n = null;
      }
      if (n === null) break;
      this.type(decoder.decode(buf.subarray(0, n), { stream: true }));
    }
    this.#endLines();
  }
}

/**
 * Split typed text into keys: one character, or a whole escape sequence
 * (arrows, function keys), which the input line ignores.
 *
 * @example
 * ```ts
 * import { keys } from "./screen.ts";
 * if (keys("a\x1b[A\x1bOPb").join("|") !== "a|\x1b[A|\x1bOP|b") throw new Error("bad");
 * ```
 */
export function keys(text: string): string[] {
  const out: string[] = [];
  const chars = [...text];
  for (let i = 0; i < chars.length; i++) {
    if (chars[i] !== "\x1b") {
      out.push(chars[i]);
      continue;
    }
    let end = i + 1;
    if (chars[end] === "[") {
      end++;
      while (end < chars.length && !/[\x40-\x7e]/.test(chars[end])) end++;
    } else if (chars[end] === "O") end++;
    out.push(chars.slice(i, end + 1).join(""));
    i = end;
  }
  return out;
}
