/**
 * Local control: how CLI subcommands talk to the running Console or Daemon.
 *
 * The running program serves HTTP on 127.0.0.1 at a port the system picks,
 * and writes `{ pid, port, secret }` to its control file beside its settings
 * (owner-only). A subcommand reads that file and sends the secret as a bearer
 * token. Requests from anywhere but loopback, addressed to another host name
 * (DNS rebinding), sent from a web page (an `Origin` other than the server's
 * own), or without the secret, are refused.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { readOwnTextFile, UnsafeFileError } from "../core/file_safety.ts";
import type { Logger } from "../core/log.ts";
import { secretEquals } from "../core/secret.ts";
import { writeFileAtomic } from "../core/io.ts";
import { eventStreamBody, type EventStreamSource, parseEventQuery } from "./event_stream.ts";

/** What the control file holds. */
export interface ControlFile {
  /** Process id of the program serving control. */
  readonly pid: number;
  /** Loopback port it serves control on. */
  readonly port: number;
  /** Bearer token every request must carry. */
  readonly secret: string;
}

/** A failure a handler reports to the caller, with the result so far. */
export class ControlError extends Error {
  /** HTTP status of the answer. Default 400. */
  readonly status: number;
  /** What the command did before it failed, or null. */
  readonly result: unknown;
  /** An error the caller sees with `message`, `status` and `result`. */
  constructor(
    message: string,
    options: { status?: number; result?: unknown; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ControlError";
    this.status = options.status ?? 400;
    this.result = options.result ?? null;
  }
}

/** A control command: gets the request body, returns the result. */
export type ControlHandler = (body: Record<string, unknown>) => unknown | Promise<unknown>;

/** Options for {@linkcode serveControl}. */
export interface ControlServerOptions {
  /** Path of the control file to write. */
  readonly path: string;
  /** The commands, by name: `POST /<name>` runs one. */
  readonly handlers: Readonly<Record<string, ControlHandler>>;
  /** Logger for refused requests and failed commands. */
  readonly log: Logger;
  /** What `GET /events` streams (lib/app/event_stream.ts); without it, 404. */
  readonly events?: EventStreamSource;
}

/** A running control server. */
export interface ControlServer extends AsyncDisposable {
  /** The loopback port it serves on. */
  readonly port: number;
  /** Stop serving and remove the control file, if it is still this server's. */
  close(): Promise<void>;
}

function isLoopback(host: string): boolean {
  return host === "::1" || host.startsWith("127.") || host === "::ffff:127.0.0.1";
}

/** Longest peer-sent header value quoted back in an error. */
const QUOTED_HEADER_CHARS = 100;

function quoteHeader(value: string): string {
  const cut = value.length > QUOTED_HEADER_CHARS
    ? `${value.slice(0, QUOTED_HEADER_CHARS)}...`
    : value;
  return JSON.stringify(cut);
}

/**
 * Why a request is not for the control server on `port`, or null when it is.
 * Its `Host` must name this server (`127.0.0.1:PORT` or `localhost:PORT`): a
 * web page whose name an attacker re-pointed at 127.0.0.1 (DNS rebinding)
 * sends its own name. A request from a browser page carries an `Origin`,
 * which must then be this server's own; the CLI sends none.
 *
 * @example
 * ```ts
 * import { checkSameOrigin } from "./control.ts";
 * const ok = new Headers({ host: "127.0.0.1:4000" });
 * if (checkSameOrigin(ok, 4000) !== null) throw new Error("refused its own host");
 * const evil = new Headers({ host: "127.0.0.1:4000", origin: "http://evil.example" });
 * if (checkSameOrigin(evil, 4000)?.status !== 403) throw new Error("let a web page in");
 * ```
 */
export function checkSameOrigin(
  headers: Headers,
  port: number,
): { status: number; error: string; reason: string } | null {
  const hosts = [`127.0.0.1:${port}`, `localhost:${port}`];
  const host = headers.get("host");
  if (host === null || !hosts.includes(host.toLowerCase())) {
    const what = host === null ? "no Host header" : `Host ${quoteHeader(host)}`;
    return {
      status: 421,
      reason: `${what} is not this control server`,
      error: `Cannot run command: ${what} is not this control server (send Host "${hosts[0]}" or "${
        hosts[1]
      }")`,
    };
  }
  const origin = headers.get("origin");
  if (origin !== null && !hosts.some((h) => origin.toLowerCase() === `http://${h}`)) {
    return {
      status: 403,
      reason: `Origin ${quoteHeader(origin)} is not this control server`,
      error: `Cannot run command: requests from web pages are refused (Origin ${
        quoteHeader(origin)
      }); use the command line`,
    };
  }
  return null;
}

/**
 * Serve control requests on 127.0.0.1 and write the control file.
 *
 * @example
 * ```ts ignore
 * await using control = await serveControl({ path, handlers: { status: () => ({}) }, log });
 * ```
 */
export async function serveControl(options: ControlServerOptions): Promise<ControlServer> {
  const secret = crypto.getRandomValues(new Uint8Array(32)).toHex();
  const { log, handlers } = options;
  let port = 0; // set once listening, before any request is served
  // Ends the open event streams on close: a server shuts down only once every answer is done.
  const streams = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req, info) =>
      _serveRequest(req, (info.remoteAddr as Deno.NetAddr).hostname, {
        port,
        secret,
        handlers,
        log,
        events: options.events,
        streams: streams.signal,
      }),
  );
  port = server.addr.port;
  const file: ControlFile = { pid: Deno.pid, port, secret };
  await writeFileAtomic(options.path, JSON.stringify(file) + "\n", { mode: 0o600 });
  let closed = false;
  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    try {
      // Only the file we wrote: another instance's stays where it is.
      const text = await Deno.readTextFile(options.path);
      const found = JSON.parse(text) as ControlFile;
      if (found.pid === Deno.pid && found.secret === secret) await Deno.remove(options.path);
    } catch {
      // Gone or replaced by another instance: leave it.
    }
    streams.abort();
    await server.shutdown();
  }
  return { port, close, [Symbol.asyncDispose]: close };
}

/** What a control request is checked against and run with. */
interface _RequestContext {
  readonly port: number;
  readonly secret: string;
  readonly handlers: Readonly<Record<string, ControlHandler>>;
  readonly log: Logger;
  readonly events?: EventStreamSource;
  /** Aborted when the server closes: the event streams end. */
  readonly streams: AbortSignal;
}

/** Check one control request, then run its command. */
async function _serveRequest(
  req: Request,
  remote: string,
  ctx: _RequestContext,
): Promise<Response> {
  const refused = _refuseRequest(req, remote, ctx);
  if (refused) return refused;
  const url = new URL(req.url);
  const command = url.pathname.slice(1);
  if (req.method === "GET" && command === "events" && ctx.events) {
    return _eventStream(url, ctx.events, AbortSignal.any([req.signal, ctx.streams]));
  }
  const handler = Object.hasOwn(ctx.handlers, command) ? ctx.handlers[command] : undefined;
  if (req.method !== "POST" || !handler) {
    return Response.json({ error: `Cannot run command: unknown command "${command}"` }, {
      status: 404,
    });
  }
  const body = await _readBody(req);
  if (body instanceof Response) return body;
  return await _runCommand(command, handler, body, ctx.log);
}

/**
 * The answer to a request that is not local, not addressed to this server,
 * or without the secret; null for one that may run a command.
 */
function _refuseRequest(req: Request, remote: string, ctx: _RequestContext): Response | null {
  if (!isLoopback(remote)) {
    return Response.json({ error: "Control is local only" }, {
      status: 403,
    });
  }
  const refused = checkSameOrigin(req.headers, ctx.port);
  if (refused) {
    ctx.log.warn("control request refused: not addressed to this control server", {
      remote,
      reason: refused.reason,
    });
    return Response.json({ error: refused.error }, { status: refused.status });
  }
  const auth = req.headers.get("authorization") ?? "";
  if (!secretEquals(auth, `Bearer ${ctx.secret}`)) {
    ctx.log.warn("control request refused: bad or missing secret", { remote });
    return Response.json({ error: "Cannot run command: bad or missing control secret" }, {
      status: 401,
    });
  }
  return null;
}

/** `GET /events`: newline-delimited JSON until the client goes away (lib/app/event_stream.ts). */
function _eventStream(url: URL, source: EventStreamSource, signal: AbortSignal): Response {
  let query;
  try {
    query = parseEventQuery(url.searchParams, Object.keys(source.results));
  } catch (err) {
    return Response.json({ error: errorMessage(err) }, { status: 400 });
  }
  return new Response(eventStreamBody(source, query, signal), {
    headers: { "content-type": "application/x-ndjson", "cache-control": "no-store" },
  });
}

/** The request's body as a JSON object, or the 400 answer when it is not one. */
async function _readBody(req: Request): Promise<Record<string, unknown> | Response> {
  try {
    const parsed = await req.json();
    if (
      typeof parsed !== "object" || parsed === null || Array.isArray(parsed)
    ) throw new TypeError("not an object");
    return parsed;
  } catch (cause) {
    return Response.json({
      error: `Cannot run command: body is not a JSON object (${errorMessage(cause)})`,
    }, {
      status: 400,
    });
  }
}

/** Run `command` and answer with its result, or its error. */
async function _runCommand(
  command: string,
  handler: ControlHandler,
  body: Record<string, unknown>,
  log: Logger,
): Promise<Response> {
  try {
    return Response.json({ result: (await handler(body)) ?? null });
  } catch (err) {
    if (err instanceof ControlError) {
      return Response.json({
        error: err.message,
        result: err.result,
      }, { status: err.status });
    }
    log.error("control command failed", { command, error: errorMessage(err) });
    return Response.json({ error: errorMessage(err) }, { status: 500 });
  }
}

/** Thrown by {@linkcode callControl}; `result` holds what the command returned with its error. */
export class ControlCallError extends Error {
  /** What the command returned with its error, or null. */
  readonly result: unknown;
  /**
   * True only when nothing runs for these settings: no control file, or
   * nothing answers on its port (connection refused). False for every other
   * failure, an answer with an error status included.
   */
  readonly notRunning: boolean;
  /** An error with `message` and, in `options`, the result, cause and whether nothing runs. */
  constructor(
    message: string,
    options: { result?: unknown; cause?: unknown; notRunning?: boolean } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "ControlCallError";
    this.result = options.result ?? null;
    this.notRunning = options.notRunning ?? false;
  }
}

/** Whether a failed fetch means nothing listens there (the process that wrote the control file is gone). */
function _refused(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (e instanceof Deno.errors.ConnectionRefused || /connection refused/i.test(e.message)) {
      return true;
    }
  }
  return false;
}

/**
 * Run `command` on the program whose control file is `path`. A control file
 * that belongs to another user (not root) or that group or others can write
 * is refused: it names the port the secret is sent to.
 *
 * @example
 * ```ts ignore
 * const status = await callControl("portferry-console.control.json", "status", {}, "Console");
 * ```
 */
export async function callControl<T = unknown>(
  path: string,
  command: string,
  body: object,
  program: "Console" | "Daemon",
): Promise<T> {
  const file = await _readControlFile(path, program);
  let res: Response;
  try {
    res = await fetch(`http://127.0.0.1:${file.port}/${command}`, {
      method: "POST",
      headers: { authorization: `Bearer ${file.secret}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (cause) {
    throw _unreachable(path, file, program, cause);
  }
  // The program's own answer: its command set types the result.
  const reply: { result: T; error?: string } = await res.json();
  if (!res.ok) {
    throw new ControlCallError(reply.error ?? `${program} answered ${res.status}`, {
      result: reply.result,
    });
  }
  return reply.result;
}

function _unreachable(
  path: string,
  file: ControlFile,
  program: string,
  cause: unknown,
): ControlCallError {
  return new ControlCallError(
    `Cannot reach the ${program} at 127.0.0.1:${file.port}: it is not running (stale control file "${path}")`,
    { cause, notRunning: _refused(cause) },
  );
}

/**
 * Follow the event stream (`GET /events`, lib/app/event_stream.ts) of the
 * program whose control file is `path`: one parsed JSON object per line,
 * until the program stops (then a {@linkcode ControlCallError}) or the
 * caller stops reading.
 *
 * @example
 * ```ts ignore
 * for await (const line of streamControl(path, "watch=status&events=0", "Console")) show(line);
 * ```
 */
export async function* streamControl(
  path: string,
  query: string,
  program: "Console" | "Daemon",
): AsyncGenerator<Record<string, unknown>> {
  const file = await _readControlFile(path, program);
  let res: Response;
  try {
    res = await fetch(`http://127.0.0.1:${file.port}/events?${query}`, {
      headers: { authorization: `Bearer ${file.secret}` },
    });
  } catch (cause) {
    throw _unreachable(path, file, program, cause);
  }
  if (!res.ok || res.body === null) {
    const reply = await res.json().catch(() => ({})) as { error?: string };
    throw new ControlCallError(reply.error ?? `${program} answered ${res.status}`);
  }
  let rest = "";
  try {
    for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let nl: number;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        if (line !== "") yield JSON.parse(line);
      }
    }
  } catch (cause) {
    throw new ControlCallError(`Cannot follow the ${program}'s events: ${errorMessage(cause)}`, {
      cause,
    });
  }
  throw new ControlCallError(`The ${program} stopped: its event stream ended`);
}

/** The control file at `path`, or why it cannot be used. */
async function _readControlFile(path: string, program: string): Promise<ControlFile> {
  let file: ControlFile;
  try {
    file = JSON.parse(await readOwnTextFile(path));
  } catch (cause) {
    if (cause instanceof UnsafeFileError) throw new ControlCallError(cause.message, { cause });
    if (cause instanceof Deno.errors.NotFound) {
      throw new ControlCallError(
        `Cannot reach the ${program}: it is not running for these settings (no control file "${path}"); start it first, or pass the same --config`,
        { cause, notRunning: true },
      );
    }
    throw new ControlCallError(`Cannot read control file "${path}": ${errorMessage(cause)}`, {
      cause,
    });
  }
  return file;
}
