/**
 * The Daemon's screen and log lines, read from its state model's events:
 * each session step told once (a readable line, or a log record with
 * `--log-format json`), every connection opened and closed logged, and the
 * Console's chat shown through a rate-limited {@linkcode ChatView}.
 *
 * @module
 */

import type { LogFields, Logger } from "../core/log.ts";
import { LogBatcher } from "../core/log_batch.ts";
import { escapeControls } from "../core/text.ts";
import { ChatView } from "../ui/chat_view.ts";
import { seconds } from "./retry_report.ts";
import type { DaemonEvent } from "./state.ts";

/** Options for {@linkcode DaemonView}. */
export interface DaemonViewOptions {
  readonly log: Logger;
  /** The Daemon user's display. */
  readonly out: (text: string) => void;
  /** Session steps as readable lines ("out", the default) or as log records ("log"). */
  readonly steps?: "out" | "log";
}

/** A session step: its readable line, and its log record. */
interface Step {
  readonly text: string | null;
  readonly level: "info" | "error";
  readonly msg: string;
  readonly fields: LogFields;
  /** The session the record belongs to. */
  readonly session?: string;
}

/**
 * Turns the Daemon's events into its screen and log lines, in order.
 *
 * @example
 * ```ts
 * import { createLogger } from "../core/log.ts";
 * import { DaemonView } from "./view.ts";
 * const lines: string[] = [];
 * const view = new DaemonView({ log: createLogger({ sink: () => {} }), out: (t) => lines.push(t) });
 * view.show({ type: "connecting", console: "office:7470", first: true });
 * if (lines[0] !== "Connecting to the Console at office:7470") throw new Error(lines[0]);
 * ```
 */
export class DaemonView {
  readonly #options: DaemonViewOptions;
  #chat: ChatView | null = null;
  /** Per-connection info records, summarised per PFO in bursts. */
  readonly #batch = new LogBatcher();

  constructor(options: DaemonViewOptions) {
    this.#options = options;
  }

  /** Show one event. */
  show(event: DaemonEvent): void {
    const { log, out } = this.#options;
    switch (event.type) {
      case "opened":
      case "closed":
        return logConnection(log, this.#batch, event);
      case "warning":
        return log.child(event.scope).warn(event.message, event.fields);
      case "draining":
        return out(
          `Draining ${event.connections} open connection(s) for up to ${event.graceMs} ms`,
        );
      case "chat":
        if (event.entry.from === "console") this.#chat?.show(event.entry.text);
        return;
      case "established":
        this.#chat = new ChatView({ label: "console", out, log: this.#scoped(event.session) });
        break;
      case "ended":
        this.#batch.flush();
        this.#chat?.close();
        this.#chat = null;
        break;
    }
    const step = stepOf(event);
    if (step) this.#step(step);
  }

  #scoped(session: string | undefined): Logger {
    return session === undefined ? this.#options.log : this.#options.log.child({ session });
  }

  /** One step of the session, told once: a readable line, or a log record. */
  #step(step: Step): void {
    if (this.#options.steps === "log") {
      this.#scoped(step.session)[step.level](step.msg, step.fields);
    } else if (step.text !== null) {
      this.#options.out(escapeControls(step.text)); // the text may carry a peer's reason
    }
  }
}

/** The step an event tells, if any. */
function stepOf(event: DaemonEvent): Step | null {
  switch (event.type) {
    case "connecting":
      if (!event.first) return null;
      return {
        text: `Connecting to the Console at ${event.console}` +
          (event.proxy ? ` through the proxy ${event.proxy}` : ""),
        level: "info",
        msg: "connecting",
        fields: event.proxy
          ? { console: event.console, proxy: event.proxy }
          : { console: event.console },
      };
    case "pending":
      if (!event.asked) return null;
      return {
        text: "Waiting for the Console operator to accept (its fingerprint is verified)",
        level: "info",
        msg: "waiting for acceptance",
        fields: {},
      };
    case "established":
      return {
        text: `Session established (id ${event.session}). ` +
          "Every connection made through this Daemon is shown here.",
        level: "info",
        msg: "session established",
        fields: { console: event.console },
        session: event.session,
      };
    case "ended":
      return endedStep(event);
    case "failed":
      return failedStep(event);
    default:
      return null;
  }
}

function endedStep(event: Extract<DaemonEvent, { type: "ended" }>): Step {
  const { end, retryInMs } = event;
  const next = retryInMs === null ? "" : `; reconnecting in ${seconds(retryInMs)}`;
  return {
    text: `Session ended: ${end.reason}${next}`,
    level: "info",
    msg: "session ended",
    fields: { code: end.code, reason: end.reason, by: end.by, retryInMs: retryInMs ?? undefined },
    session: event.session,
  };
}

function failedStep(event: Extract<DaemonEvent, { type: "failed" }>): Step {
  // Giving up: the command line prints the reason once, as the exit reason.
  if (event.final) {
    return {
      text: null,
      level: "error",
      msg: "session failed",
      fields: { code: event.code, reason: event.reason },
    };
  }
  return {
    text: event.text,
    level: "error",
    msg: "session failed",
    fields: {
      code: event.code,
      reason: event.reason,
      attempts: event.attempts,
      retryInMs: event.retryInMs ?? undefined,
    },
  };
}

/** A connection or UDP flow opened or closed: one log record, or a count in a summary. */
function logConnection(
  log: Logger,
  batch: LogBatcher,
  event: Extract<DaemonEvent, { type: "opened" | "closed" }>,
) {
  const c = event.connection;
  const summaryLog = log.child({ session: event.session, pfo: c.pfo });
  const clog = summaryLog.child({ stream: c.stream });
  const what = c.proto === "udp" ? "UDP flow" : "connection";
  const key = `${event.session}\n${c.pfo}`;
  if (event.type === "opened") {
    batch.info({
      key,
      kind: "opened",
      log: clog,
      summaryLog,
      msg: `${what} opened`,
      fields: { client: c.client, target: c.target, via: c.address },
    });
    return;
  }
  batch.info({
    key,
    kind: "closed",
    log: clog,
    summaryLog,
    msg: `${what} closed`,
    fields: {
      client: c.client,
      target: c.target,
      bytesIn: c.bytesIn,
      bytesOut: c.bytesOut,
      durationMs: event.durationMs,
      reason: event.reason === "done" ? undefined : event.reason,
    },
    sums: { bytesIn: c.bytesIn, bytesOut: c.bytesOut },
  });
}
