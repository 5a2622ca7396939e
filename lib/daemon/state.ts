/**
 * The Daemon's state model: one read-only snapshot of everything its user
 * can see (phase, session, connections with counters and rates, the
 * allow-list, recent chat), and one event stream of its changes. The screen
 * lines, the log lines, `status --json` and `connections list` all read it.
 *
 * @module
 */

import { EventHub, type SubscribeOptions, type Subscription } from "../core/events.ts";
import type { LogFields } from "../core/log.ts";
import { RateMeter } from "../core/rates.ts";
import { type UdpDrops, udpDrops } from "../core/datagram.ts";

/** What the Daemon is doing now. */
export type DaemonPhase = "connecting" | "pending" | "established" | "waiting" | "stopped";

/** One connection or UDP flow made through the Daemon. */
export interface DaemonConnection {
  /** The stream id, as the Console numbers it. */
  readonly stream: number;
  /** The Console's PFO it came through. */
  readonly pfo: string;
  /** TCP connection or UDP flow. */
  readonly proto: "tcp" | "udp";
  /** The client on the Console's side (`HOST:PORT`). */
  readonly client: string;
  /** The target the Console asked for (`HOST:PORT`). */
  readonly target: string;
  /** The address reached. */
  readonly address: string;
  /** When it opened (ISO time). */
  readonly since: string;
  /** Bytes from the target, sent to the Console. */
  readonly bytesIn: number;
  /** Bytes from the Console, sent to the target. */
  readonly bytesOut: number;
  /** Bytes per second in, over the last {@linkcode RATE_WINDOW_MS}. */
  readonly rateIn: number;
  /** Bytes per second out, over the last {@linkcode RATE_WINDOW_MS}. */
  readonly rateOut: number;
  /** UDP flows only: datagrams of this flow dropped, either way. */
  readonly drops?: number;
}

/** The session as the Daemon sees it. */
export interface DaemonSession {
  /** What the Daemon is doing now. */
  readonly phase: DaemonPhase;
  /** The session id once established. */
  readonly id: string | null;
  /** When the session was established (ISO time). */
  readonly since: string | null;
  /** The Console's `HOST:PORT`. */
  readonly console: string;
  /** The Console's pinned fingerprint. */
  readonly fingerprint: string;
  /** Why the last session ended or the last attempt failed. */
  readonly lastError: string | null;
  /** The HTTP proxy dialed through, password masked (`http://USER:***@HOST:PORT`); null when direct. */
  readonly proxy: string | null;
}

/** One chat message, either way. */
export interface ChatEntry {
  /** Who wrote it. */
  readonly from: "console" | "daemon";
  /** The message, as sent (escape it before showing it). */
  readonly text: string;
  /** When (ISO time). */
  readonly at: string;
}

/** Everything the Daemon's user can see, at one moment. */
export interface DaemonSnapshot {
  /** The session. */
  readonly session: DaemonSession;
  /** This Daemon's own identity fingerprint. */
  readonly fingerprint: string;
  /** Open connections and UDP flows. */
  readonly connections: readonly DaemonConnection[];
  /** The allow-list in force, as a sentence ("everything", or the rules). */
  readonly allow: string;
  /** The last {@linkcode CHAT_KEPT} chat messages, oldest first. */
  readonly chat: readonly ChatEntry[];
  /** UDP datagrams dropped by this Daemon since it started, by where. */
  readonly udpDrops: Readonly<UdpDrops>;
}

/** How a session ended, as the Daemon tells it. */
export interface SessionEndInfo {
  /** The close code, when the session told one. */
  readonly code: string | undefined;
  /** Why, in words. */
  readonly reason: string;
  /** Which side ended it. */
  readonly by: "console" | "daemon" | undefined;
}

/** A change the Daemon publishes. */
export type DaemonEvent =
  | {
    readonly type: "connecting";
    readonly console: string;
    readonly first: boolean;
    /** The HTTP proxy dialed through, password masked. */
    readonly proxy?: string | null;
  }
  /** `asked`: the Console put this Daemon to its operator (before: the handshake runs). */
  | { readonly type: "pending"; readonly asked: boolean }
  | { readonly type: "established"; readonly session: string; readonly console: string }
  | {
    readonly type: "ended";
    readonly session: string;
    readonly end: SessionEndInfo;
    readonly retryInMs: number | null;
  }
  | {
    readonly type: "failed";
    readonly code: string;
    readonly reason: string;
    /** The readable line ("Session failed: ...", "still failing (3 attempts): ..."). */
    readonly text: string;
    readonly attempts: number;
    readonly retryInMs: number | null;
    /** True when the Daemon gives up: nothing follows. */
    readonly final: boolean;
  }
  | { readonly type: "waiting"; readonly retryInMs: number }
  | { readonly type: "stopped" }
  | { readonly type: "draining"; readonly connections: number; readonly graceMs: number }
  | { readonly type: "opened"; readonly session: string; readonly connection: DaemonConnection }
  | {
    readonly type: "progress";
    readonly stream: number;
    readonly bytesIn: number;
    readonly bytesOut: number;
    readonly rateIn: number;
    readonly rateOut: number;
  }
  | {
    readonly type: "closed";
    readonly session: string;
    readonly connection: DaemonConnection;
    readonly durationMs: number;
    readonly reason: string;
  }
  | { readonly type: "chat"; readonly entry: ChatEntry }
  | {
    readonly type: "warning";
    readonly code: string;
    readonly message: string;
    /** Where it happened: session, pfo, stream. */
    readonly scope: LogFields;
    readonly fields: LogFields;
  };

/** Chat messages the snapshot keeps. */
export const CHAT_KEPT = 50;

/** The window rates are measured over. */
export const RATE_WINDOW_MS = 5_000;

/** A connection's counters, read live from its stream or flow. */
export type Counters = () => {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly drops?: number;
};

/** What a connection is before it has counters. */
export type ConnectionInfo = Omit<DaemonConnection, "bytesIn" | "bytesOut" | "rateIn" | "rateOut">;

interface Tracked {
  readonly info: ConnectionInfo;
  readonly session: string;
  readonly counters: Counters;
}

/** Options for {@linkcode DaemonState}. */
export interface DaemonStateOptions {
  /** The Console's `HOST:PORT`. */
  readonly console: string;
  /** The pinned Console fingerprint. */
  readonly fingerprint: string;
  /** The allow-list in force, as a sentence. */
  readonly allow: string;
  /** The HTTP proxy dialed through, password masked; null or absent when direct. */
  readonly proxy?: string | null;
  /** Clock, for tests. Default `performance.now`. */
  readonly now?: () => number;
}

/**
 * The Daemon's model: changed only through its methods, each of which
 * publishes its event. Listeners added with `listen` run synchronously (the
 * screen and log lines, in order with the rest of the output); views
 * `subscribe` to read at their own pace.
 *
 * @example
 * ```ts
 * import { DaemonState } from "./state.ts";
 * const state = new DaemonState({ console: "office:7470", fingerprint: "SHA256:x", allow: "everything" });
 * const seen: string[] = [];
 * state.listen((e) => seen.push(e.type));
 * state.change({ type: "connecting", console: "office:7470", first: true });
 * if (state.snapshot().session.phase !== "connecting" || seen[0] !== "connecting") throw new Error("bad");
 * ```
 */
export class DaemonState {
  readonly #hub = new EventHub<DaemonEvent>();
  readonly #listeners: ((event: DaemonEvent) => void)[] = [];
  readonly #connections = new Map<number, Tracked>();
  readonly #rates = new RateMeter<"bytesIn" | "bytesOut">({ windowMs: RATE_WINDOW_MS });
  readonly #chat: ChatEntry[] = [];
  readonly #now: () => number;
  #session: DaemonSession;
  #fingerprint = "";
  readonly #allow: string;
  /** UDP datagrams dropped since start, by where: the Daemon's flows add to it. */
  readonly udpDrops: UdpDrops = udpDrops();

  /** A model in the "connecting" phase, with no connections. */
  constructor(options: DaemonStateOptions) {
    this.#now = options.now ?? (() => performance.now());
    this.#allow = options.allow;
    this.#session = {
      phase: "connecting",
      id: null,
      since: null,
      console: options.console,
      fingerprint: options.fingerprint,
      lastError: null,
      proxy: options.proxy ?? null,
    };
  }

  /** Call `listener` with every event, synchronously, in order. */
  listen(listener: (event: DaemonEvent) => void): void {
    this.#listeners.push(listener);
  }

  /** Read events at the reader's pace (progress coalesced per connection). */
  subscribe(options: SubscribeOptions = {}): Subscription<DaemonEvent> {
    return this.#hub.subscribe(options);
  }

  /** This Daemon's identity fingerprint, once loaded. */
  set fingerprint(value: string) {
    this.#fingerprint = value;
  }

  /** The session now. */
  get session(): DaemonSession {
    return this.#session;
  }

  /** Record a session step and publish it. */
  change(event: DaemonEvent): void {
    this.#session = nextSession(this.#session, event, new Date().toISOString());
    if (event.type === "ended" || event.type === "stopped") {
      this.#connections.clear();
      this.#rates.retain(new Set());
    }
    this.#publish(event);
  }

  /** A connection or UDP flow was opened. */
  opened(session: string, info: ConnectionInfo, counters: Counters): void {
    const tracked: Tracked = { info, session, counters };
    this.#connections.set(info.stream, tracked);
    this.#sample(tracked);
    this.#publish({ type: "opened", session, connection: this.#row(tracked) });
  }

  /** A connection or UDP flow closed, with its final counters. */
  closed(
    session: string,
    info: ConnectionInfo,
    final: { bytesIn: number; bytesOut: number; reason: string; durationMs: number },
  ): void {
    const tracked = this.#connections.get(info.stream);
    if (tracked?.info === info) this.#connections.delete(info.stream);
    const { bytesIn, bytesOut, durationMs, reason } = final;
    const rates = tracked ? this.#row(tracked) : { rateIn: 0, rateOut: 0 };
    this.#rates.forget(rateKey(info.stream));
    const connection = { ...info, bytesIn, bytesOut, rateIn: rates.rateIn, rateOut: rates.rateOut };
    this.#publish(
      { type: "closed", session, connection, durationMs, reason },
      `conn:${info.stream}`,
    );
  }

  /** Chat, either way. */
  chat(from: ChatEntry["from"], text: string): void {
    const entry = { from, text, at: new Date().toISOString() };
    this.#chat.push(entry);
    if (this.#chat.length > CHAT_KEPT) this.#chat.shift();
    this.#publish({ type: "chat", entry });
  }

  /** Something the user should know: a limit hit, an open refused. */
  warn(code: string, message: string, scope: LogFields, fields: LogFields): void {
    this.#publish({ type: "warning", code, message, scope, fields });
  }

  /** Sample every connection's counters; publish progress for those that moved. */
  sample(): void {
    const watched = this.#hub.subscribers > 0;
    for (const tracked of this.#connections.values()) {
      // The samples feed the snapshot's rates; progress needs a view, and movement.
      if (!this.#sample(tracked) || !watched) continue;
      const { bytesIn, bytesOut, rateIn, rateOut } = this.#row(tracked);
      const event = { type: "progress" as const, stream: tracked.info.stream, bytesIn, bytesOut };
      this.#hub.progress(`conn:${tracked.info.stream}`, { ...event, rateIn, rateOut });
    }
  }

  /** Everything, now. */
  snapshot(): DaemonSnapshot {
    return {
      session: this.#session,
      fingerprint: this.#fingerprint,
      connections: [...this.#connections.values()].map((t) => this.#row(t)),
      allow: this.#allow,
      chat: [...this.#chat],
      udpDrops: { ...this.udpDrops },
    };
  }

  /** End every subscription. */
  close(): void {
    this.#hub.close();
  }

  #publish(event: DaemonEvent, key?: string): void {
    for (const listener of this.#listeners) listener(event);
    this.#hub.emit(event, key);
  }

  /** Sample one connection's counters; true when they moved. */
  #sample(tracked: Tracked): boolean {
    const { bytesIn, bytesOut } = tracked.counters();
    return this.#rates.sample(rateKey(tracked.info.stream), { bytesIn, bytesOut }, this.#now());
  }

  #row(tracked: Tracked): DaemonConnection {
    const { bytesIn, bytesOut, drops } = tracked.counters();
    const rates = this.#rates.rates(rateKey(tracked.info.stream), this.#now());
    return {
      ...tracked.info,
      bytesIn,
      bytesOut,
      rateIn: Math.round(rates?.bytesIn ?? 0),
      rateOut: Math.round(rates?.bytesOut ?? 0),
      ...(drops === undefined ? {} : { drops }),
    };
  }
}

function rateKey(stream: number): string {
  return `conn:${stream}`;
}

/** The session after `event`. */
function nextSession(s: DaemonSession, event: DaemonEvent, at: string): DaemonSession {
  switch (event.type) {
    case "connecting":
      return { ...s, phase: "connecting", id: null, since: null };
    case "pending":
      return { ...s, phase: "pending" };
    case "established":
      return { ...s, phase: "established", id: event.session, since: at, lastError: null };
    case "ended":
      return { ...s, phase: "waiting", id: null, since: null, lastError: event.end.reason };
    case "failed":
      return { ...s, lastError: event.reason };
    case "waiting":
      return { ...s, phase: "waiting" };
    case "stopped":
      return { ...s, phase: "stopped", id: null, since: null };
    default:
      return s;
  }
}
