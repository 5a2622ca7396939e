/**
 * The web dashboard's server, shared by both programs: one `Deno.serve` on
 * its own port (loopback unless the settings say otherwise), a login token
 * exchanged once for an HttpOnly, SameSite=Strict cookie, `Host` checked on
 * every request (DNS rebinding) and `Origin` on the WebSocket and every POST,
 * a strict Content-Security-Policy, and assets served from the program
 * itself. The page gets the program's snapshot over one WebSocket, pushed
 * again whenever the program's events say something changed, and acts
 * through the program's control handlers (its command set) only.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { type Logger, LogThrottle } from "../core/log.ts";
import { secretEquals } from "../core/secret.ts";
import { parseIp, unmapIp } from "../net/address.ts";
import { formatHostPort, type HostPort } from "../net/hostport.ts";
import { ControlError, type ControlHandler } from "./control.ts";
import { DASHBOARD_CSS } from "./dashboard_style.ts";

/** Options for {@linkcode serveDashboard}. */
export interface DashboardOptions {
  /** Where to listen (`dashboard:` in the settings). */
  readonly address: HostPort;
  /** `Console` or `Daemon`: named on the page and in its messages. */
  readonly program: "Console" | "Daemon";
  /** The command that prints a fresh login URL, for the 401 page (`console dashboard`). */
  readonly urlCommand: string;
  /** The page's bundled script. */
  readonly script: string;
  /** The program's snapshot, sent to the page whole. */
  readonly snapshot: () => unknown;
  /** The program's events: each one means the snapshot changed. */
  readonly subscribe: (signal: AbortSignal) => AsyncIterable<unknown>;
  /** The program's commands, by name: `POST /api/<name>` runs one. */
  readonly handlers: Readonly<Record<string, ControlHandler>>;
  /** Logger for refused requests. */
  readonly log: Logger;
  /** Least time between two snapshots pushed to one page, in ms. Default 250. */
  readonly pushEveryMs?: number;
  /**
   * Most time between two snapshots, in ms, so that ages, falling rates and
   * the chart move on a page while nothing else changes. Default 2000.
   */
  readonly refreshMs?: number;
  /**
   * How long a login URL works, in ms. Default 10 minutes: the URL printed at
   * start may sit in a log (a service's journal) that others can read.
   */
  readonly loginTokenMs?: number;
  /** The clock, in ms (tests). Default `Date.now`. */
  readonly now?: () => number;
}

/** A running dashboard. */
export interface DashboardServer extends AsyncDisposable {
  /** The bound port. */
  readonly port: number;
  /** A login URL with a fresh one-time token. */
  loginUrl(): string;
  /** Stop serving and close every page's WebSocket. */
  close(): Promise<void>;
}

/** Login tokens waiting to be used; the oldest goes when there are more. */
const MAX_LOGIN_TOKENS = 32;
/** How long a login URL works unless the options say otherwise: 10 minutes. */
const LOGIN_TOKEN_MS = 10 * 60 * 1000;
/** Logged-in browsers; the oldest is logged out when there are more. */
const MAX_COOKIES = 64;
/** A page that does not read its WebSocket gets no more snapshots past this many bytes queued. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Open pages (WebSockets) per dashboard; each may hold up to MAX_BUFFERED_BYTES queued. */
export const MAX_DASHBOARD_PAGES = 16;
/** Longest command body a page may POST; the page's own are a few hundred bytes. */
export const MAX_COMMAND_BYTES = 64 * 1024;

/** The strict policy every answer carries: nothing but this server's own files. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

function randomToken(): string {
  return crypto.getRandomValues(new Uint8Array(24)).toHex();
}

/**
 * Whether `host` is a loopback address (or `localhost`). A name that merely
 * starts with "127." (`127.0.0.1.example.net`) may resolve anywhere: not loopback.
 */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === "localhost") return true;
  const ip = parseIp(host);
  if (ip === null) return false;
  const plain = unmapIp(ip);
  return plain.family === 4 ? plain.bits >> 24n === 127n : plain.bits === 1n;
}

/** Whether `host` means every address of this computer. */
function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/** What one dashboard checks requests against. */
class Gate {
  readonly #tokens: { token: string; expires: number }[] = [];
  readonly #tokenMs: number;
  readonly #now: () => number;
  readonly #cookies: string[] = [];
  readonly cookieName: string;
  readonly hosts: readonly string[];
  /** Refusals any web page can cause: logged at most every 10 s each, with counts. */
  readonly refusedLog = new LogThrottle();
  readonly loginLog = new LogThrottle();
  readonly pagesLog = new LogThrottle();

  constructor(
    address: HostPort,
    port: number,
    program: string,
    clock: { tokenMs?: number; now?: () => number } = {},
  ) {
    this.#tokenMs = clock.tokenMs ?? LOGIN_TOKEN_MS;
    this.#now = clock.now ?? Date.now;
    this.cookieName = `portferry-${program.toLowerCase()}-${port}`;
    const names = new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`]);
    if (!isWildcard(address.host)) names.add(formatHostPort(address.host, port).toLowerCase());
    this.hosts = [...names];
  }

  newToken(): string {
    const token = randomToken();
    this.#tokens.push({ token, expires: this.#now() + this.#tokenMs });
    if (this.#tokens.length > MAX_LOGIN_TOKENS) this.#tokens.shift();
    return token;
  }

  /** Use up `token`: true when it was a valid login token. */
  redeem(token: string): boolean {
    const i = this.#tokens.findIndex((t) => secretEquals(t.token, token));
    if (i < 0) return false;
    const [used] = this.#tokens.splice(i, 1);
    return this.#now() < used.expires;
  }

  newCookie(): string {
    const value = randomToken();
    this.#cookies.push(value);
    if (this.#cookies.length > MAX_COOKIES) this.#cookies.shift();
    return value;
  }

  loggedIn(headers: Headers): boolean {
    // Another site on this host (any port) may have set a cookie of the same
    // name; any one of the values sent may be ours.
    const values = readCookies(headers.get("cookie") ?? "", this.cookieName);
    return values.some((value) => this.#cookies.some((c) => secretEquals(c, value)));
  }

  /** Why the request's `Host` (and for `checkOrigin`, its `Origin`) is foreign, or null. */
  refusal(req: Request, checkOrigin: boolean): { status: number; text: string } | null {
    const host = (req.headers.get("host") ?? "").toLowerCase();
    if (!this.hosts.includes(host)) {
      return {
        status: 421,
        text: `Host ${JSON.stringify(host.slice(0, 100))} is not this dashboard`,
      };
    }
    if (!checkOrigin) return null;
    const origin = (req.headers.get("origin") ?? "").toLowerCase();
    if (!this.hosts.some((h) => origin === `http://${h}`)) {
      return {
        status: 403,
        text: `Origin ${JSON.stringify(origin.slice(0, 100))} is not this dashboard`,
      };
    }
    return null;
  }
}

function readCookies(header: string, name: string): string[] {
  const values: string[] = [];
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) values.push(part.slice(eq + 1).trim());
  }
  return values.slice(0, 8);
}

function securityHeaders(type: string): Headers {
  return new Headers({
    "content-type": type,
    "content-security-policy": DASHBOARD_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
  });
}

function textAnswer(status: number, text: string): Response {
  return new Response(text + "\n", {
    status,
    headers: securityHeaders("text/plain; charset=utf-8"),
  });
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The 401 page: how to get a login URL. */
function loginPage(program: string, command: string): Response {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<title>portferry ${program}: log in</title></head><body>` +
    `<h1>portferry ${program} dashboard</h1>` +
    `<p>This address needs a login URL. Run <code>${escapeHtml(command)}</code> ` +
    `on the computer where the ${program} runs, and open the URL it prints.</p></body></html>`;
  return new Response(html, { status: 401, headers: securityHeaders("text/html; charset=utf-8") });
}

/** The page's HTML: static markup; the script fills it in. */
export function dashboardPage(program: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>portferry ${program}</title><link rel="stylesheet" href="/app.css"></head>` +
    `<body><main id="app" data-program="${program.toLowerCase()}"></main>` +
    `<script src="/app.js"></script></body></html>`;
}

/**
 * Serve the dashboard. Binding anything but loopback is the caller's
 * explicit choice (the settings); it logs a warning here.
 *
 * @example
 * ```ts ignore
 * await using dash = await serveDashboard({ address, program: "Console", ... });
 * console.log(dash.loginUrl());
 * ```
 */
export function serveDashboard(options: DashboardOptions): DashboardServer {
  const { address, log } = options;
  if (!isLoopbackHost(address.host)) {
    log.warn("the dashboard listens beyond this computer: anyone who gets a login URL can use it", {
      address: formatHostPort(address.host, address.port),
    });
  }
  const pages = new Set<AbortController>();
  let gate: Gate | null = null;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: address.host, port: address.port, onListen: () => {} },
      (req) => answer(req, gate!, options, pages),
    );
  } catch (cause) {
    throw new Error(
      `Cannot serve the dashboard on "${formatHostPort(address.host, address.port)}": ${
        errorMessage(cause)
      }; change \`dashboard:\` in the settings, or set it to null`,
      { cause },
    );
  }
  const port = server.addr.port;
  gate = new Gate(address, port, options.program, {
    tokenMs: options.loginTokenMs,
    now: options.now,
  });
  const shown = isWildcard(address.host) ? "127.0.0.1" : address.host;
  let closed: Promise<void> | null = null;
  const close = () => {
    closed ??= (async () => {
      for (const page of pages) page.abort();
      await server.shutdown();
    })();
    return closed;
  };
  return {
    port,
    loginUrl: () => `http://${formatHostPort(shown, port)}/?token=${gate!.newToken()}`,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Route one request, after the checks every request gets. */
function answer(
  req: Request,
  gate: Gate,
  options: DashboardOptions,
  pages: Set<AbortController>,
): Response | Promise<Response> {
  const url = new URL(req.url);
  const isWebSocket = url.pathname === "/ws";
  const refused = gate.refusal(req, req.method !== "GET" || isWebSocket);
  if (refused) {
    const times = gate.refusedLog.hit();
    if (times) options.log.warn("dashboard request refused", { reason: refused.text, times });
    return textAnswer(refused.status, `Cannot use the dashboard: ${refused.text}`);
  }
  const token = url.searchParams.get("token");
  if (req.method === "GET" && url.pathname === "/" && token !== null) {
    return login(gate, token, options);
  }
  if (!gate.loggedIn(req.headers)) return loginPage(options.program, options.urlCommand);
  if (req.method === "POST" && url.pathname.startsWith("/api/")) {
    return runCommand(url.pathname.slice(5), req, options);
  }
  if (req.method !== "GET") return textAnswer(405, "Cannot use the dashboard: method not allowed");
  switch (url.pathname) {
    case "/":
      return new Response(dashboardPage(options.program), {
        headers: securityHeaders("text/html; charset=utf-8"),
      });
    case "/app.js":
      return new Response(options.script, { headers: securityHeaders("text/javascript") });
    case "/app.css":
      return new Response(DASHBOARD_CSS, { headers: securityHeaders("text/css") });
    case "/ws":
      return openFeed(req, gate, options, pages);
  }
  return textAnswer(404, "Cannot find that page on the dashboard");
}

/** Trade a login token for the cookie, and take the token out of the address bar. */
function login(gate: Gate, token: string, options: DashboardOptions): Response {
  if (!gate.redeem(token)) {
    const times = gate.loginLog.hit();
    if (times) {
      options.log.warn("dashboard login refused: unknown, used or expired token", { times });
    }
    return loginPage(options.program, options.urlCommand);
  }
  const headers = securityHeaders("text/plain; charset=utf-8");
  headers.set("location", "/");
  headers.set(
    "set-cookie",
    `${gate.cookieName}=${gate.newCookie()}; Path=/; HttpOnly; SameSite=Strict`,
  );
  return new Response(null, { status: 303, headers });
}

/** Run one command from the page: its result, or its error and status. */
async function runCommand(
  name: string,
  req: Request,
  options: DashboardOptions,
): Promise<Response> {
  const handler = Object.hasOwn(options.handlers, name) ? options.handlers[name] : undefined;
  if (!handler) {
    return pageAnswer({ error: `Cannot run "${name}": no such command` }, { status: 404 });
  }
  let body: Record<string, unknown>;
  try {
    const text = await readBody(req, MAX_COMMAND_BYTES);
    if (text === null) {
      return pageAnswer({
        error: `Cannot run "${name}": the request is over ${MAX_COMMAND_BYTES} bytes`,
      }, { status: 413 });
    }
    body = JSON.parse(text);
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new TypeError("not an object");
    }
  } catch (cause) {
    return pageAnswer({
      error: `Cannot run "${name}": body is not a JSON object (${errorMessage(cause)})`,
    }, { status: 400 });
  }
  try {
    return pageAnswer({ result: (await handler(body)) ?? null });
  } catch (err) {
    const status = err instanceof ControlError ? err.status : 500;
    if (status === 500) {
      options.log.error("dashboard command failed", { command: name, error: errorMessage(err) });
    }
    return pageAnswer({ error: errorMessage(err) }, { status });
  }
}

/**
 * In `JSON.stringify`'s text: an escaped backslash (kept), the escapes it
 * writes for C0 controls other than tab and line feed, and the characters
 * it leaves raw that `printable` escapes (DEL, C1, bidi, line separators).
 */
const PAGE_ESCAPES =
  /\\(?:\\|[bfr]|u00(?:0[0-8bcef]|1[0-9a-f]))|[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
const SHORT_ESCAPES: Record<string, number> = { b: 0x08, f: 0x0c, r: 0x0d };

function pageEscape(m: string): string {
  if (m === "\\\\") return m;
  if (m.length === 1) return `\\\\u${m.charCodeAt(0).toString(16).padStart(4, "0")}`;
  const code = m.length === 2 ? SHORT_ESCAPES[m[1]] : parseInt(m.slice(4), 16);
  return `\\\\x${code.toString(16).padStart(2, "0")}`;
}

/**
 * JSON for the page in which every string reads as `printable` (lib/core/text.ts)
 * makes it: the snapshot and command answers carry peer strings (host, user,
 * chat, reasons) and the page shows them as they come. One pass over the
 * JSON text, so a large snapshot costs little more than `JSON.stringify`.
 *
 * @example
 * ```ts
 * import { pageJson } from "./dashboard.ts";
 * if (JSON.parse(pageJson(["a\u202eb\x1b"]))[0] !== "a\\u202eb\\x1b") throw new Error("raw");
 * ```
 */
export function pageJson(value: unknown): string {
  return JSON.stringify(value).replace(PAGE_ESCAPES, pageEscape);
}

function pageAnswer(value: unknown, init: ResponseInit = {}): Response {
  return new Response(pageJson(value), { ...init, headers: securityHeaders("application/json") });
}

/** The request's body as text, or null (and the rest left unread) past `max` bytes. */
async function readBody(req: Request, max: number): Promise<string | null> {
  if (Number(req.headers.get("content-length") ?? 0) > max) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body ?? []) {
    size += chunk.length;
    if (size > max) return null;
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(all);
}

/** One page's WebSocket: the snapshot now, then again (at most every `pushEveryMs`) after each change. */
function openFeed(
  req: Request,
  gate: Gate,
  options: DashboardOptions,
  pages: Set<AbortController>,
): Response {
  if ((req.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
    return textAnswer(400, "Cannot open the feed: expected a WebSocket");
  }
  if (pages.size >= MAX_DASHBOARD_PAGES) {
    const times = gate.pagesLog.hit();
    if (times) {
      options.log.warn("dashboard page refused: too many pages open", {
        limit: MAX_DASHBOARD_PAGES,
        times,
      });
    }
    return textAnswer(
      503,
      `Cannot open the feed: ${MAX_DASHBOARD_PAGES} dashboard pages are open already; close one`,
    );
  }
  const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 30 });
  const stop = new AbortController();
  pages.add(stop);
  const every = options.pushEveryMs ?? 250;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let lastPush = 0;
  const push = () => {
    timer = null;
    if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > MAX_BUFFERED_BYTES) return;
    lastPush = Date.now();
    socket.send(pageJson({ program: options.program, snapshot: options.snapshot() }));
  };
  const refreshMs = options.refreshMs ?? 2000;
  let refresh: ReturnType<typeof setInterval> | undefined;
  socket.onopen = async () => {
    push();
    refresh = setInterval(() => {
      if (timer === null && Date.now() - lastPush >= refreshMs) push();
    }, refreshMs / 2);
    try {
      for await (const _ of options.subscribe(stop.signal)) timer ??= setTimeout(push, every);
    } catch (err) {
      options.log.warn("dashboard feed ended", { error: errorMessage(err) });
    }
    if (socket.readyState === WebSocket.OPEN) socket.close(1001, `${options.program} stopping`);
  };
  socket.onclose = () => {
    stop.abort();
    pages.delete(stop);
    if (timer !== null) clearTimeout(timer);
    clearInterval(refresh);
  };
  stop.signal.addEventListener("abort", () => {
    if (socket.readyState === WebSocket.OPEN) socket.close(1001, `${options.program} stopping`);
  });
  return response;
}
