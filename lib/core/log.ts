/**
 * Leveled, scoped logging. A logger carries the scope it belongs to
 * (session, PFO, stream); `child()` adds to it. Output is one line per
 * record, as text for people or JSON for services (`--log-format json`).
 *
 * This is the only library module that writes to the terminal. Records
 * often carry a peer's strings: the message and every value are escaped
 * (`text.ts`), so a record is always one line and drives no terminal.
 *
 * @module
 */

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Output shape. */
export type LogFormat = "text" | "json";

import { escapeControls, hasControls } from "./text.ts";

const LEVELS: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Every log level, lowest first. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** Scope and extra fields of a record. */
export type LogFields = Readonly<Record<string, string | number | boolean | null | undefined>>;

/** Where finished lines go. */
export type LogSink = (line: string, level: LogLevel) => void;

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. Default "info". */
  level?: LogLevel;
  /** Default "text". */
  format?: LogFormat;
  /** Default: the process's stderr. */
  sink?: LogSink;
  /** Scope every record carries. */
  scope?: LogFields;
}

/** A scoped logger. */
export interface Logger {
  /** Write a debug record: detail for finding a fault. */
  debug(msg: string, fields?: LogFields): void;
  /** Write an info record: what the program did. */
  info(msg: string, fields?: LogFields): void;
  /** Write a warn record: something went wrong and the program carries on. */
  warn(msg: string, fields?: LogFields): void;
  /** Write an error record: something failed. */
  error(msg: string, fields?: LogFields): void;
  /** A logger with more scope, e.g. `log.child({ stream: 7 })`. */
  child(scope: LogFields): Logger;
  /** True when records of `level` are written. */
  enabled(level: LogLevel): boolean;
}

const encoder = new TextEncoder();

function stderrSink(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // A closed stderr must never take the process down.
  }
}

/**
 * A field value in text format: bare when it is one plain word, else quoted
 * JSON-style with every control, bidi and separator character escaped.
 */
function formatValue(value: string | number | boolean | null): string {
  if (typeof value !== "string") return String(value);
  return /^[^\s"=\\]+$/.test(value) && !hasControls(value)
    ? value
    : escapeControls(JSON.stringify(value));
}

/**
 * Whether `name` is a log level.
 *
 * @example
 * ```ts
 * import { isLogLevel } from "./log.ts";
 * if (!isLogLevel("warn") || isLogLevel("loud")) throw new Error("bad");
 * ```
 */
export function isLogLevel(name: string): name is LogLevel {
  return Object.hasOwn(LEVELS, name);
}

/**
 * Make a logger.
 *
 * @example
 * ```ts
 * import { createLogger } from "./log.ts";
 * const lines: string[] = [];
 * const log = createLogger({ sink: (line) => lines.push(line), scope: { session: "s1" } });
 * log.child({ pfo: "web" }).info("listening", { port: 8080 });
 * if (!lines[0].includes("session=s1 pfo=web") || !lines[0].includes("port=8080")) throw new Error(lines[0]);
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? "info"];
  const format = options.format ?? "text";
  const sink = options.sink ?? stderrSink;
  const scope = options.scope ?? {};

  function write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LEVELS[level] < min) return;
    const all: Record<string, string | number | boolean | null> = {};
    for (const source of [scope, fields ?? {}]) {
      for (const [key, value] of Object.entries(source)) {
        if (value !== undefined) all[key] = value;
      }
    }
    const ts = new Date().toISOString();
    if (format === "json") {
      // JSON.stringify leaves DEL, C1, bidi and U+2028/U+2029 raw; their `\uNNNN` keeps it JSON.
      sink(escapeControls(JSON.stringify({ ts, level, msg, ...all })), level);
      return;
    }
    const pairs = Object.entries(all).map(([k, v]) => `${k}=${formatValue(v)}`).join(" ");
    const line = `${ts} ${level.toUpperCase().padEnd(5)} ${escapeControls(msg)}`;
    sink(`${line}${pairs ? "  " + pairs : ""}`, level);
  }

  return {
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
    child: (more) => createLogger({ ...options, scope: { ...scope, ...more } }),
    enabled: (level) => LEVELS[level] >= min,
  };
}

/** How often a repeating warning is written again, in milliseconds. */
export const REPEAT_LOG_EVERY_MS = 10_000;

/**
 * A gate for a warning that may repeat fast (a limit hit by every new
 * connection): open at the first hit, then at most once every
 * {@linkcode REPEAT_LOG_EVERY_MS}, counting the hits in between.
 *
 * @example
 * ```ts
 * import { LogThrottle } from "./log.ts";
 * const gate = new LogThrottle();
 * const counts = [gate.hit(), gate.hit(), gate.hit()];
 * if (counts.join() !== "1,0,0") throw new Error(counts.join());
 * ```
 */
export class LogThrottle {
  #count = 0;
  #loggedAt = -Infinity;

  /**
   * Count one hit. Returns 0 while the gate is shut, else how many hits there
   * were since it last opened, this one included (so at least 1): write the
   * line now.
   */
  hit(): number {
    this.#count++;
    const now = performance.now();
    if (now - this.#loggedAt < REPEAT_LOG_EVERY_MS) return 0;
    const count = this.#count;
    this.#loggedAt = now;
    this.#count = 0;
    return count;
  }
}
