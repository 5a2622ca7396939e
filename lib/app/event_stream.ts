/**
 * The control API's event stream, `GET /events`: newline-delimited JSON,
 * one object a line, for as long as the client reads.
 *
 * - `{"type":"event","event":E}` for each of the program's events (state
 *   changes in order; progress coalesced per connection, as its EventHub
 *   gives them to any view).
 * - With `?watch=COMMAND` (a read-only command: `status`, `pfo/list`,
 *   `connections/list`), `{"type":"result","command":C,"result":R}` at once
 *   and then every `every` ms (default 1000, 250 to 60000): what the CLI's
 *   `--watch` prints. `events=0` leaves the events out.
 *
 * @module
 */

/** What an event stream reads from. */
export interface EventStreamSource {
  /** The program's events until `signal` aborts. */
  readonly subscribe: (signal: AbortSignal) => AsyncIterable<unknown>;
  /** The commands a watcher may ask for by name, and how to run each. */
  readonly results: Readonly<Record<string, () => unknown | Promise<unknown>>>;
}

/** Default, lowest and highest `every`, in ms. */
export const WATCH_EVERY = { default: 1000, min: 250, max: 60_000 } as const;

/** The query of a `GET /events`, checked. */
export interface EventStreamQuery {
  /** The command whose result is sent every `every` ms, or null. */
  readonly watch: string | null;
  /** How often, in ms. */
  readonly every: number;
  /** Whether events are sent. */
  readonly events: boolean;
}

/**
 * Read `GET /events`'s query; throws a `RangeError` that says what is wrong.
 *
 * @example
 * ```ts
 * import { parseEventQuery } from "./event_stream.ts";
 * const q = parseEventQuery(new URLSearchParams("watch=status&events=0"), ["status"]);
 * if (q.watch !== "status" || q.every !== 1000 || q.events) throw new Error("bad");
 * ```
 */
export function parseEventQuery(
  params: URLSearchParams,
  watchable: readonly string[],
): EventStreamQuery {
  const watch = params.get("watch");
  if (watch !== null && !watchable.includes(watch)) {
    throw new RangeError(
      `Cannot watch "${watch}": use one of ${watchable.map((w) => `"${w}"`).join(", ")}`,
    );
  }
  const everyText = params.get("every");
  const every = everyText === null ? WATCH_EVERY.default : Number(everyText);
  if (!Number.isInteger(every) || every < WATCH_EVERY.min || every > WATCH_EVERY.max) {
    throw new RangeError(
      `Cannot watch every "${everyText}" ms: use a whole number from ${WATCH_EVERY.min} to ${WATCH_EVERY.max}`,
    );
  }
  const events = params.get("events");
  if (events !== null && events !== "0" && events !== "1") {
    throw new RangeError(`Cannot read events="${events}": use 0 or 1`);
  }
  return { watch, every, events: events !== "0" };
}

const encoder = new TextEncoder();

/**
 * The stream's body: lines as the query asks, until `signal` aborts (the
 * client went away) or the program's events end (it is exiting).
 */
export function eventStreamBody(
  source: EventStreamSource,
  query: EventStreamQuery,
  signal: AbortSignal,
): ReadableStream<Uint8Array> {
  const stop = new AbortController();
  const end = () => stop.abort();
  signal.addEventListener("abort", end, { once: true });
  if (signal.aborted) end();
  let timer: ReturnType<typeof setInterval> | undefined;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const send = (line: unknown) => {
        if (stop.signal.aborted) return;
        try {
          controller.enqueue(encoder.encode(JSON.stringify(line) + "\n"));
        } catch {
          end();
        }
      };
      const finish = () => {
        clearInterval(timer);
        signal.removeEventListener("abort", end);
        end();
        try {
          controller.close();
        } catch {
          // Cancelled already.
        }
      };
      if (query.watch !== null) {
        const command = query.watch;
        const run = source.results[command];
        const result = async () => send({ type: "result", command, result: await run() });
        result().catch(finish);
        timer = setInterval(() => result().catch(finish), query.every);
      }
      (async () => {
        for await (const event of source.subscribe(stop.signal)) {
          if (query.events) send({ type: "event", event });
        }
      })().catch(() => {}).finally(finish);
    },
    cancel: () => {
      clearInterval(timer);
      end();
    },
  });
}
