/**
 * portferry: reach TCP services on a network you cannot connect into.
 *
 * A **Console** listens for a session; a **Daemon** behind a firewall dials
 * out to it over TLS, pins its fingerprint and proves its own identity. The
 * Console's operator then creates port forwarding operations (PFOs) whose
 * connections are carried as streams over the session to targets on the
 * Daemon's network.
 *
 * Most users run the programs (`deno task console`, `deno task daemon`);
 * this module exposes the library they are built from.
 *
 * @example
 * ```ts
 * import { parseListen, PROTOCOL_VERSION } from "./mod.ts";
 * const addr = parseListen("8080");
 * if (addr.host !== "127.0.0.1" || PROTOCOL_VERSION < 1) throw new Error("bad");
 * ```
 *
 * @module
 */

export * from "./lib/core/protocol.ts";
export {
  decodeBody,
  encodeMessage,
  FrameDecoder,
  tagName,
  writeFrameHeader,
} from "./lib/core/codec.ts";
export * from "./lib/core/errors.ts";
export {
  EventHub,
  type EventHubOptions,
  type EventLike,
  type SubscribeOptions,
  type Subscription,
} from "./lib/core/events.ts";
export {
  createLogger,
  isLogLevel,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
} from "./lib/core/log.ts";
export {
  formatHostPort,
  type ListenAddress,
  parseHostPort,
  parseListen,
  parseTarget,
  type TargetAddress,
} from "./lib/net/hostport.ts";
export {
  type PfoSpec,
  type ResolvedPfo,
  resolvePfo,
  targetPortFor,
  validatePfoName,
} from "./lib/settings/pfo.ts";
export {
  type ConsoleSettings,
  type DaemonSettings,
  loadConsoleSettings,
  loadDaemonSettings,
  parseConsoleSettings,
  parseDaemonSettings,
} from "./lib/settings/schema.ts";
export { settingsPaths } from "./lib/settings/paths.ts";
export { updateConsoleSettings } from "./lib/settings/edit.ts";
export {
  fingerprintOf,
  type Identity,
  isFingerprint,
  loadOrCreateIdentity,
  TrustStore,
} from "./lib/core/identity.ts";
export {
  Console,
  type ConsoleCloseOptions,
  type ConsoleOptions,
  type Decision,
} from "./lib/console/console.ts";
export { runConsole, type RunConsoleOptions } from "./lib/console/server.ts";
export type {
  ChatLine,
  ConsoleEvent,
  ConsoleSnapshot,
  ConsoleStatus,
  PeerInfo,
  PfoSnapshot,
  SessionSnapshot,
  SessionState,
  TrustEntry,
} from "./lib/console/state.ts";
export {
  CommandError,
  type CommandErrorCode,
  type CommandRequest,
  type CommandResult,
  type ConsoleCommandName,
  type ConsoleCommands,
  type ConsoleCommandSet,
} from "./lib/console/commands.ts";
export { Daemon, type DaemonOptions, runDaemon } from "./lib/daemon/daemon.ts";
export type {
  ChatEntry,
  DaemonConnection,
  DaemonEvent,
  DaemonPhase,
  DaemonSession,
  DaemonSnapshot,
} from "./lib/daemon/state.ts";
export {
  type DaemonCommandArgs,
  type DaemonCommandMap,
  type DaemonCommandName,
  type DaemonCommandResult,
  type DaemonCommandRunner,
  DaemonCommands,
  type DaemonStatus,
} from "./lib/daemon/commands.ts";
