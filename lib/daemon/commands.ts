/**
 * The Daemon's command set: status, chat, connections list, kill and close,
 * each typed, validated in one place, and answering with a typed result or
 * a coded {@linkcode CommandError}. The control API, the CLI subcommands and
 * the input line all run these.
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import { ControlError, type ControlHandler } from "../app/control.ts";
import { MAX_CHAT_CHARS } from "../core/protocol.ts";
import { dropTotals, type UdpDropTotals } from "../core/datagram.ts";
import type { DaemonConnection, DaemonPhase, DaemonSnapshot } from "./state.ts";

/** What `daemon status --json` prints: the Console's shape where it applies. */
export interface DaemonStatus {
  /** The session, in the Console's shape. */
  readonly session: {
    /** The session state, as the Console names it. */
    readonly state: "none" | "pending" | "established" | "closing";
    /** What the Daemon is doing now. */
    readonly phase: DaemonPhase;
    /** The session id, while established. */
    readonly id: string | null;
    /** When the session was established (ISO time). */
    readonly since: string | null;
    /** The Console. */
    readonly peer: {
      readonly address: string;
      readonly host: null;
      readonly user: null;
      readonly fingerprint: string;
    } | null;
    /** Open connections and UDP flows. */
    readonly streams: number;
    /** Why the last session ended or the last attempt failed. */
    readonly lastError: string | null;
  };
  /** This Daemon's identity fingerprint. */
  readonly fingerprint: string;
  /** The Console's `HOST:PORT`. */
  readonly console: string;
  /** The HTTP proxy dialed through, password masked; null when direct. */
  readonly proxy: string | null;
  /** The settings file. */
  readonly settings: string;
  /** The allow-list in force, as a sentence. */
  readonly allow: string;
  /** Always empty: PFOs live on the Console. */
  readonly pfos: readonly never[];
  /** Open connections and UDP flows. */
  readonly connections: readonly DaemonConnection[];
  /** UDP datagrams dropped since start: the total and by where (see `UdpDrops`). */
  readonly udpDrops: UdpDropTotals;
}

/** No arguments. */
export type NoArgs = Record<string, never>;

/** Every Daemon command: its arguments and its result. */
export interface DaemonCommandMap {
  /** The session and the connections. */
  status: { args: NoArgs; result: DaemonStatus };
  /** Send chat to the Console's operator. */
  chat: { args: { readonly text: string }; result: { sent: string } };
  /** The open connections and UDP flows. */
  "connections/list": { args: NoArgs; result: DaemonConnection[] };
  /** Cut one connection or UDP flow. */
  "connections/kill": { args: { readonly id: number }; result: { killed: number } };
  /** Close the session for good and stop the Daemon. */
  close: { args: NoArgs; result: { state: "none" } };
}

/** A command's name (also its control API path). */
export type DaemonCommandName = keyof DaemonCommandMap;

/** A command's arguments. */
export type DaemonCommandArgs<K extends DaemonCommandName> = DaemonCommandMap[K]["args"];

/** A command's result. */
export type DaemonCommandResult<K extends DaemonCommandName> = DaemonCommandMap[K]["result"];

/** Runs Daemon commands: in this process, or in the running Daemon over its control API. */
export interface DaemonCommandRunner {
  /** Run command `name`; rejects with a `CommandError` when it is refused. */
  run<K extends DaemonCommandName>(
    name: K,
    args: DaemonCommandArgs<K>,
  ): Promise<DaemonCommandResult<K>>;
}

/** What the commands act on: the running Daemon. */
export interface DaemonCommandTarget {
  /** Everything the Daemon's user can see, now. */
  snapshot(): DaemonSnapshot;
  /** The settings file the Daemon runs with. */
  readonly settingsPath: string;
  /** Send chat to the Console; false when no session is established. */
  chat(text: string): boolean;
  /** Cut one connection or UDP flow; false when there is no such one. */
  kill(stream: number): boolean;
  /** Close the session for good and stop the Daemon. */
  endSession(): Promise<void>;
}

type Handlers = {
  [K in DaemonCommandName]: (args: DaemonCommandArgs<K>) => Promise<DaemonCommandResult<K>>;
};

/**
 * The Daemon's commands, run in its own process.
 *
 * @example
 * ```ts
 * import { CommandError } from "../app/command_error.ts";
 * import { DaemonCommands } from "./commands.ts";
 * import { DaemonState } from "./state.ts";
 * const state = new DaemonState({ console: "office:7470", fingerprint: "SHA256:x", allow: "everything" });
 * const commands = new DaemonCommands({
 *   snapshot: () => state.snapshot(),
 *   settingsPath: "daemon.yaml",
 *   chat: () => false,
 *   kill: () => false,
 *   endSession: () => Promise.resolve(),
 * });
 * const status = await commands.run("status", {});
 * if (status.session.state !== "none") throw new Error(status.session.state);
 * const err = await commands.run("chat", { text: "hi" }).catch((e) => e);
 * if (!(err instanceof CommandError) || err.code !== "no-session") throw new Error(String(err));
 * ```
 */
export class DaemonCommands implements DaemonCommandRunner {
  readonly #handlers: Handlers;

  /** Commands acting on `target`. */
  constructor(target: DaemonCommandTarget) {
    this.#handlers = handlersFor(target);
  }

  /** Run one command; rejects with a {@linkcode CommandError} when it is refused. */
  run<K extends DaemonCommandName>(
    name: K,
    args: DaemonCommandArgs<K>,
  ): Promise<DaemonCommandResult<K>> {
    const handlers: { [P in K]: Handlers[P] } = this.#handlers;
    return handlers[name](args);
  }
}

function handlersFor(target: DaemonCommandTarget): Handlers {
  const noSession = (what: string) => {
    const { phase } = target.snapshot().session;
    return new CommandError(
      "no-session",
      `Cannot ${what}: no session is established (now: ${phase})`,
    );
  };
  return {
    status: () => Promise.resolve(statusOf(target.snapshot(), target.settingsPath)),
    // deno-lint-ignore require-await -- a refusal must reject, not throw
    chat: async ({ text }) => {
      if (text.length === 0 || text.length > MAX_CHAT_CHARS) {
        throw new CommandError(
          "bad-request",
          `Cannot chat: the message must be 1..${MAX_CHAT_CHARS} characters`,
        );
      }
      if (target.snapshot().session.phase !== "established" || !target.chat(text)) {
        throw noSession("chat");
      }
      return { sent: text };
    },
    "connections/list": () => Promise.resolve([...target.snapshot().connections]),
    // deno-lint-ignore require-await -- a refusal must reject, not throw
    "connections/kill": async ({ id }) => {
      if (!target.kill(id)) {
        throw new CommandError(
          "not-found",
          `Cannot kill connection ${id}: no such connection (see \`connections list\`)`,
        );
      }
      return { killed: id };
    },
    close: async () => {
      await target.endSession();
      return { state: "none" };
    },
  };
}

/** `status`, from the snapshot: the shape `daemon status --json` has always printed. */
export function statusOf(snapshot: DaemonSnapshot, settingsPath: string): DaemonStatus {
  const { session } = snapshot;
  const phase = session.phase;
  return {
    session: {
      state: phase === "pending" ? "pending" : phase === "established" ? "established" : "none",
      phase,
      id: session.id,
      since: session.since,
      peer: { address: session.console, host: null, user: null, fingerprint: session.fingerprint },
      streams: snapshot.connections.length,
      lastError: session.lastError,
    },
    fingerprint: snapshot.fingerprint,
    console: session.console,
    proxy: session.proxy,
    settings: settingsPath,
    allow: snapshot.allow,
    pfos: [],
    connections: snapshot.connections,
    udpDrops: dropTotals(snapshot.udpDrops),
  };
}

type Decoders = {
  [K in DaemonCommandName]: (body: Record<string, unknown>) => DaemonCommandArgs<K>;
};

/** A control request's body as a command's arguments: where untyped input becomes typed. */
const DECODERS: Decoders = {
  status: () => ({}),
  chat: (body) => {
    const text = body.text ?? "";
    if (typeof text !== "string") {
      throw new CommandError("bad-request", 'Cannot chat: "text" must be a string');
    }
    return { text };
  },
  "connections/list": () => ({}),
  "connections/kill": (body) => {
    const id = typeof body.id === "string" && /^[0-9]{1,15}$/.test(body.id)
      ? Number(body.id)
      : body.id;
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
      throw new CommandError(
        "bad-request",
        `Cannot kill connection ${
          JSON.stringify(body.id) ?? "(none)"
        }: the id must be a number from \`connections list\``,
      );
    }
    return { id };
  },
  close: () => ({}),
};

/**
 * The control API's handlers: each decodes its body and runs its command;
 * a refusal answers with its HTTP status.
 *
 * @example
 * ```ts ignore
 * await serveControl({ path, log, handlers: controlHandlers(new DaemonCommands(daemon)) });
 * ```
 */
export function controlHandlers(
  commands: DaemonCommandRunner,
): Record<DaemonCommandName, ControlHandler> {
  const handler = <K extends DaemonCommandName>(name: K): ControlHandler => async (body) => {
    const decoders: { [P in K]: Decoders[P] } = DECODERS;
    try {
      return await commands.run(name, decoders[name](body));
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      throw new ControlError(err.message, { status: err.status, cause: err });
    }
  };
  return {
    status: handler("status"),
    chat: handler("chat"),
    "connections/list": handler("connections/list"),
    "connections/kill": handler("connections/kill"),
    close: handler("close"),
  };
}

type Readers = {
  [K in DaemonCommandName]: (result: unknown) => DaemonCommandResult<K> | null;
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isStatus(value: unknown): value is DaemonStatus {
  return isRecord(value) && isRecord(value.session) && Array.isArray(value.connections) &&
    typeof value.fingerprint === "string" && typeof value.console === "string";
}

function isConnections(value: unknown): value is DaemonConnection[] {
  return Array.isArray(value) &&
    value.every((c) => isRecord(c) && typeof c.stream === "number" && typeof c.pfo === "string");
}

function isSent(value: unknown): value is { sent: string } {
  return isRecord(value) && typeof value.sent === "string";
}

function isKilled(value: unknown): value is { killed: number } {
  return isRecord(value) && typeof value.killed === "number";
}

function isClosed(value: unknown): value is { state: "none" } {
  return isRecord(value) && value.state === "none";
}

/** The running Daemon's answers, checked for their shape. */
const READERS: Readers = {
  status: (r) => isStatus(r) ? r : null,
  chat: (r) => isSent(r) ? r : null,
  "connections/list": (r) => isConnections(r) ? r : null,
  "connections/kill": (r) => isKilled(r) ? r : null,
  close: (r) => isClosed(r) ? r : null,
};

/**
 * Commands run in the running Daemon through `call` (its control API), with
 * their answers checked for shape.
 *
 * @example
 * ```ts
 * import { remoteCommands } from "./commands.ts";
 * const commands = remoteCommands((name, body) => Promise.resolve(name === "chat" ? { sent: body.text } : null));
 * const { sent } = await commands.run("chat", { text: "hi" });
 * if (sent !== "hi") throw new Error(sent);
 * ```
 */
export function remoteCommands(
  call: (name: DaemonCommandName, body: Record<string, unknown>) => Promise<unknown>,
): DaemonCommandRunner {
  return {
    async run<K extends DaemonCommandName>(
      name: K,
      args: DaemonCommandArgs<K>,
    ): Promise<DaemonCommandResult<K>> {
      const readers: { [P in K]: Readers[P] } = READERS;
      const result = readers[name](await call(name, { ...args }));
      if (result === null) {
        throw new Error(`Cannot read the Daemon's answer to "${name}": it has an unexpected shape`);
      }
      return result;
    },
  };
}
