/**
 * Peer text made safe for a terminal or a log line. A peer's string may
 * carry characters that drive a terminal (ESC, CSI U+009B), reorder what is
 * shown (bidi controls) or start a new line (CR, LF, U+2028, U+2029); here
 * they become visible escapes, so the text shows as data and nothing else.
 *
 * @module
 */

/**
 * Characters never written raw: C0 controls, DEL, C1 controls, the bidi
 * controls (ALM, LRM, RLM, embeddings and overrides, isolates) and the line
 * and paragraph separators.
 */
const CONTROLS =
  // deno-lint-ignore no-control-regex
  /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

/** The same set less tab and line feed, for multi-line text laid out by the caller. */
const CONTROLS_BUT_TAB_LF =
  // deno-lint-ignore no-control-regex
  /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

function escapeOne(ch: string): string {
  const code = ch.charCodeAt(0);
  // `\xNN` for C0, `\uNNNN` for the rest: also a valid escape inside a JSON string.
  return code < 0x20
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/**
 * `text` on one line with every control, bidi and separator character
 * shown escaped (`\x1b`, `\u202e`). Use it for any peer string shown in a
 * line of ours: host names, reasons, ids.
 *
 * @example
 * ```ts
 * import { escapeControls } from "./text.ts";
 * if (escapeControls("a\nb\x1b[2J\u202e") !== "a\\x0ab\\x1b[2J\\u202e") throw new Error("bad");
 * ```
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, escapeOne);
}

/**
 * Whether `text` holds a character {@linkcode escapeControls} would escape.
 *
 * @example
 * ```ts
 * import { hasControls } from "./text.ts";
 * if (!hasControls("a\u2028b") || hasControls("plain text")) throw new Error("bad");
 * ```
 */
export function hasControls(text: string): boolean {
  CONTROLS.lastIndex = 0;
  const found = CONTROLS.test(text);
  CONTROLS.lastIndex = 0;
  return found;
}

/**
 * Like {@linkcode escapeControls}, but keeps tab and line feed: for text
 * whose lines the caller lays out itself (and for whole screens of our
 * own output, as a last line of defence).
 *
 * @example
 * ```ts
 * import { printable } from "./text.ts";
 * if (printable("hi\n\x1b[2J\x9b") !== "hi\n\\x1b[2J\\u009b") throw new Error("bad");
 * ```
 */
export function printable(text: string): string {
  return text.replace(CONTROLS_BUT_TAB_LF, escapeOne);
}
