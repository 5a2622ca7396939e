/**
 * The Console's one command set: every operator action is one typed command
 * with one request reader (its validation), returning a typed result or a
 * {@linkcode CommandError}. The control API, the CLI subcommands, the
 * interactive prompt and the offline `pfo` commands all run through here.
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import {
  callControl,
  ControlCallError,
  ControlError,
  type ControlHandler,
} from "../app/control.ts";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { TrustStore } from "../core/identity.ts";
import { MAX_CHAT_CHARS } from "../core/protocol.ts";
import { parseListen, parseTarget } from "../net/hostport.ts";
import { isProto, resolvePfo, validatePfoName } from "../settings/pfo.ts";
import { loadConsoleSettings } from "../settings/schema.ts";
import { settingsPaths } from "../settings/paths.ts";
import { updateConsoleSettings } from "../settings/edit.ts";
import type { PfoAddRequest, PfoEditRequest, PfoNameRequest, PfoRequest } from "./pfo_changes.ts";
import { planPfoChange } from "./pfo_changes.ts";
import type { ConnectionInfo, PfoStatus } from "./pfos.ts";
import type { ConsoleStatus, PfoSnapshot, SessionSnapshot, TrustEntry } from "./state.ts";

export { CommandError, type CommandErrorCode } from "../app/command_error.ts";
export type { PfoAddRequest, PfoCommand, PfoEditRequest, PfoNameRequest } from "./pfo_changes.ts";

/** A command that takes no arguments. */
export type EmptyRequest = Record<string, never>;

/** What `resolve` answers. */
export interface ResolveResult {
  /** The name as asked. */
  readonly host: string;
  /** Its IP addresses as the Daemon's resolver answered them. */
  readonly addresses: readonly string[];
}

/** Every Console command: its name (the control API path), request and result. */
export interface ConsoleCommands {
  /** The session, the fingerprint, the settings file and every PFO. */
  "status": { request: EmptyRequest; result: ConsoleStatus };
  /** Accept the pending session; `remember` also trusts the Daemon from now on. */
  "session/accept": { request: { readonly remember: boolean }; result: SessionSnapshot };
  /** Refuse the pending session. */
  "session/reject": { request: EmptyRequest; result: { readonly state: "none" } };
  /** End the session and tell the Daemon not to reconnect. */
  "session/close": { request: EmptyRequest; result: { readonly state: "none" } };
  /** Add a PFO to the settings file and start it. */
  "pfo/add": { request: PfoAddRequest; result: PfoSnapshot };
  /** Change a PFO's listen address or target. */
  "pfo/edit": { request: PfoEditRequest; result: PfoSnapshot };
  /** Enable a PFO: it listens again. */
  "pfo/enable": { request: PfoNameRequest; result: PfoSnapshot };
  /** Disable a PFO: it stops listening but stays in the settings. */
  "pfo/disable": { request: PfoNameRequest; result: PfoSnapshot };
  /** Remove a PFO from the settings and close its listeners. */
  "pfo/rm": { request: PfoNameRequest; result: { readonly removed: string } };
  /** Every PFO with its counters and rates. */
  "pfo/list": { request: EmptyRequest; result: readonly PfoSnapshot[] };
  /** The open connections and UDP flows. */
  "connections/list": { request: EmptyRequest; result: readonly ConnectionInfo[] };
  /** Close one connection, by the `id` that `connections/list` shows. */
  "connections/kill": { request: { readonly id: number }; result: { readonly killed: number } };
  /** Send a chat line to the Daemon's user (at most {@linkcode MAX_CHAT_CHARS} characters). */
  "chat": { request: { readonly text: string }; result: { readonly sent: string } };
  /** Resolve a host name on the Daemon's side. */
  "resolve": { request: { readonly host: string }; result: ResolveResult };
  /** The trusted Daemons, from the trust store and the settings. */
  "trust/list": { request: EmptyRequest; result: readonly TrustEntry[] };
  /** Stop trusting a Daemon fingerprint, wherever it is listed. */
  "trust/rm": { request: { readonly fingerprint: string }; result: { readonly removed: string } };
}

/** A command's name. */
export type ConsoleCommandName = keyof ConsoleCommands;
/** A command's request. */
export type CommandRequest<K extends ConsoleCommandName> = ConsoleCommands[K]["request"];
/** A command's result. */
export type CommandResult<K extends ConsoleCommandName> = ConsoleCommands[K]["result"];

/** What carries out the commands: the running Console, or a fake in a test. */
export type ConsoleCommandSet = {
  readonly [K in ConsoleCommandName]: (request: CommandRequest<K>) => Promise<CommandResult<K>>;
};

/** Runs a command somewhere (in this process, or over the control API) and returns its result. */
export type ConsoleClient = <K extends ConsoleCommandName>(
  name: K,
  request: CommandRequest<K>,
) => Promise<CommandResult<K>>;

type Body = Readonly<Record<string, unknown>>;
type RequestReaders = { readonly [K in ConsoleCommandName]: (body: Body) => CommandRequest<K> };

function bad(message: string, cause?: unknown): CommandError {
  return new CommandError("bad-request", message, { cause });
}

function empty(): EmptyRequest {
  return {};
}

function text(body: Body, key: string, what: string): string {
  const value = body[key];
  if (typeof value !== "string") throw bad(`Cannot run command: ${what} must be text`);
  return value;
}

function optionalText(body: Body, key: string, what: string): string | undefined {
  return body[key] === undefined ? undefined : text(body, key, what);
}

/** A PFO name, checked by the one PFO name rule. */
function pfoName(body: Body): string {
  const name = text(body, "name", "the PFO name");
  try {
    validatePfoName(name);
  } catch (err) {
    throw bad(errorMessage(err), err);
  }
  return name;
}

function readPfoAdd(body: Body): PfoAddRequest {
  const name = pfoName(body);
  const proto = body.proto ?? "tcp";
  if (!isProto(proto)) throw bad(`Cannot add PFO "${name}": protocol must be tcp, udp or socks`);
  const target = body.target ?? null;
  if (target !== null && typeof target !== "string") {
    throw bad(`Cannot add PFO "${name}": the target must be text or null`);
  }
  const clients = body.clients ?? [];
  if (!Array.isArray(clients) || !clients.every((c) => typeof c === "string")) {
    throw bad(`Cannot add PFO "${name}": clients must be a list of addresses`);
  }
  if (body.enabled !== undefined && typeof body.enabled !== "boolean") {
    throw bad(`Cannot add PFO "${name}": enabled must be true or false`);
  }
  const request: PfoAddRequest = {
    name,
    proto,
    listen: text(body, "listen", "the listen address"),
    target,
    enabled: body.enabled !== false,
    clients,
  };
  try {
    resolvePfo({ ...request, clients: [...clients] });
  } catch (err) {
    throw bad(errorMessage(err), err);
  }
  return request;
}

function readPfoEdit(body: Body): PfoEditRequest {
  const name = pfoName(body);
  const listen = optionalText(body, "listen", "the listen address");
  const target = optionalText(body, "target", "the target");
  if (listen === undefined && target === undefined) {
    throw bad(`Cannot edit PFO "${name}": give --listen and/or --target`);
  }
  try {
    if (listen !== undefined) parseListen(listen);
    if (target !== undefined) parseTarget(target);
  } catch (err) {
    throw bad(errorMessage(err), err);
  }
  return {
    name,
    ...(listen === undefined ? {} : { listen }),
    ...(target === undefined ? {} : { target }),
  };
}

function readChat(body: Body): { text: string } {
  const value = body.text;
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_CHAT_CHARS) {
    throw bad(`Cannot chat: the message must be 1..${MAX_CHAT_CHARS} characters`);
  }
  return { text: value };
}

function readKill(body: Body): { id: number } {
  const id = body.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
    throw bad(
      `Cannot kill connection ${
        JSON.stringify(id ?? null)
      }: use a number from \`connections list\``,
    );
  }
  return { id };
}

function readAccept(body: Body): { remember: boolean } {
  if (body.remember !== undefined && typeof body.remember !== "boolean") {
    throw bad("Cannot accept: remember must be true or false");
  }
  return { remember: body.remember === true };
}

function nonEmpty(body: Body, key: string, what: string, verb: string): string {
  const value = text(body, key, what);
  if (value === "") throw bad(`Cannot ${verb}: give ${what}`);
  return value;
}

/** The one validation path of every command: a request body in, a typed request out. */
const READERS: RequestReaders = {
  "status": empty,
  "session/accept": readAccept,
  "session/reject": empty,
  "session/close": empty,
  "pfo/add": readPfoAdd,
  "pfo/edit": readPfoEdit,
  "pfo/enable": (body) => ({ name: pfoName(body) }),
  "pfo/disable": (body) => ({ name: pfoName(body) }),
  "pfo/rm": (body) => ({ name: pfoName(body) }),
  "pfo/list": empty,
  "connections/list": empty,
  "connections/kill": readKill,
  "chat": readChat,
  "resolve": (body) => ({ host: nonEmpty(body, "host", "a host name", "resolve") }),
  "trust/list": empty,
  "trust/rm": (body) => ({
    fingerprint: nonEmpty(body, "fingerprint", "a fingerprint", "untrust"),
  }),
};

/** Every command name. */
export const CONSOLE_COMMAND_NAMES: readonly ConsoleCommandName[] = Object.freeze(
  Object.keys(READERS).filter(isConsoleCommand),
);

/**
 * Whether `name` names a Console command.
 *
 * @example
 * ```ts
 * import { isConsoleCommand } from "./commands.ts";
 * if (!isConsoleCommand("pfo/add") || isConsoleCommand("eval")) throw new Error("bad");
 * ```
 */
export function isConsoleCommand(name: string): name is ConsoleCommandName {
  return Object.hasOwn(READERS, name);
}

/**
 * Check a command's request body and return the typed request.
 *
 * @throws {CommandError} "bad-request", saying what is wrong.
 *
 * @example
 * ```ts
 * import { readRequest } from "./commands.ts";
 * const req = readRequest("pfo/edit", { name: "web", target: "db01:80" });
 * if (req.target !== "db01:80") throw new Error("bad");
 * ```
 */
export function readRequest<K extends ConsoleCommandName>(
  name: K,
  body: unknown,
): CommandRequest<K> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad(`Cannot run command "${name}": the request must be an object`);
  }
  const reader: (body: Body) => CommandRequest<K> = READERS[name];
  return reader({ ...body });
}

/**
 * Run command `name` on `commands`: its request is read (checked) first.
 *
 * @example
 * ```ts ignore
 * const status = await runCommand(console.commands, "status", {});
 * ```
 */
export function runCommand<K extends ConsoleCommandName>(
  commands: ConsoleCommandSet,
  name: K,
  body: unknown,
): Promise<CommandResult<K>> {
  const request = readRequest(name, body);
  const run: (request: CommandRequest<K>) => Promise<CommandResult<K>> = commands[name];
  return run(request);
}

/** The control API's handlers: one per command, each running {@linkcode runCommand}. */
export function controlHandlers(commands: ConsoleCommandSet): Record<string, ControlHandler> {
  return Object.fromEntries(
    CONSOLE_COMMAND_NAMES.map((name) => [name, (body) => runCommand(commands, name, body)]),
  );
}

/**
 * A client that runs commands in this process (the interactive prompt),
 * failing as a call over the control API would: a {@linkcode ControlCallError}
 * with the result so far, so the subcommands print the same either way.
 */
export function inProcessClient(commands: ConsoleCommandSet): ConsoleClient {
  return (name, request) => asCalled(() => runCommand(commands, name, request));
}

/**
 * Run `action` in this process, failing as a call over the control API
 * would: a command's error becomes a {@linkcode ControlCallError} with the
 * result so far, so the subcommands print the same either way.
 */
export async function asCalled<T>(action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    throw new ControlCallError(err.message, { result: err.result, cause: err });
  }
}

/** A client that runs commands on the Console whose settings file is `settingsPath`. */
export function controlClient(settingsPath: string): ConsoleClient {
  const path = settingsPaths(settingsPath).control;
  return (name, request) => callControl<CommandResult<typeof name>>(path, name, request, "Console");
}

/** A PFO as the settings file holds it, for `pfo list` with no Console running. */
export type SavedPfo =
  & Omit<PfoStatus, "state" | "session">
  & { readonly state: "saved" | "disabled"; readonly source: "settings" };

/**
 * The commands that work with no Console running, on the settings files
 * themselves: PFO changes (the same checks), `pfo list` and `trust list`.
 */
export class OfflineCommands {
  readonly #settingsPath: string;

  constructor(settingsPath: string) {
    this.#settingsPath = settingsPath;
  }

  /** Make a PFO change in the settings file; it applies at the Console's next start. */
  async changePfo(change: PfoRequest): Promise<void> {
    const { settings } = await loadValidSettings(this.#settingsPath);
    await updateConsoleSettings(this.#settingsPath, planPfoChange(change, settings.pfos).edit);
  }

  /** The PFOs as the settings file holds them. */
  async listPfos(): Promise<SavedPfo[]> {
    const { settings } = await loadConsoleSettings(this.#settingsPath);
    return settings.pfos.map((p) => ({
      name: p.name,
      proto: p.proto,
      listen: p.listen,
      target: p.target,
      enabled: p.enabled,
      state: p.enabled ? "saved" : "disabled",
      source: "settings",
      error: null,
      bound: [],
      listeners: 0,
      connections: 0,
      connectionsTotal: 0,
      connectionsRefused: 0,
      connectionsFailed: 0,
      connectionsDenied: 0,
      clients: p.clients,
      bytesIn: 0,
      bytesOut: 0,
    }));
  }

  /** The trusted Daemons, from the trust store and the settings file. */
  async listTrust(): Promise<TrustEntry[]> {
    const store = await TrustStore.load(settingsPaths(this.#settingsPath).trust);
    const { settings } = await loadConsoleSettings(this.#settingsPath);
    return trustEntries(store, settings.trusted);
  }
}

/** The trust list: the trust store's entries, then the settings file's fingerprints. */
export function trustEntries(store: TrustStore, trusted: readonly string[]): TrustEntry[] {
  return [
    ...store.list().map((t): TrustEntry => ({ ...t, source: "trust store" })),
    ...trusted.map((fingerprint): TrustEntry => ({ fingerprint, source: "settings" })),
  ];
}

/** The settings, or why PFO commands refuse to write over the file. */
async function loadValidSettings(settingsPath: string) {
  try {
    return await loadConsoleSettings(settingsPath);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new CommandError(
      "conflict",
      `Cannot change PFOs: the settings file is invalid (${errorMessage(err)}); fix it first`,
      { cause: err },
    );
  }
}
