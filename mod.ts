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
 * this module exposes the library they are built from: the {@linkcode Console}
 * and {@linkcode Daemon} program classes with their options, their snapshot
 * and event types, and their command sets.
 *
 * Importing it has no side effects: it sets no global, reads no environment
 * and starts nothing until a program is started.
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
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  type LogSink,
} from "./lib/core/log.ts";
export {
  formatHostPort,
  type HostPort,
  type ListenAddress,
  parseHostPort,
  type ParseHostPortOptions,
  parseListen,
  parseTarget,
  type TargetAddress,
} from "./lib/net/hostport.ts";
export { isWebSocketUrl, parseWebSocketUrl, type WebSocketUrl } from "./lib/net/console_url.ts";
export {
  connectThroughProxy,
  type ConnectThroughProxyOptions,
  describeProxy,
  parseProxyUrl,
  type ProxyConfig,
} from "./lib/net/proxy.ts";
export {
  type PfoSpec,
  type Proto,
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
  type LoadedSettings,
  parseConsoleSettings,
  parseDaemonSettings,
} from "./lib/settings/schema.ts";
export { type SettingsPaths, settingsPaths } from "./lib/settings/paths.ts";
export { type ConsoleEdit, updateConsoleSettings } from "./lib/settings/edit.ts";
export {
  fingerprintOf,
  type Identity,
  type IdentityOptions,
  type IdentityPaths,
  isFingerprint,
  loadOrCreateIdentity,
  type TrustedDaemon,
  TrustStore,
} from "./lib/core/identity.ts";
export {
  Console,
  type ConsoleCloseOptions,
  type ConsoleOptions,
  type Decision,
} from "./lib/console/console.ts";
export { runConsole, type RunConsoleOptions } from "./lib/console/server.ts";
export type { ConnectionInfo, PfoState, PfoStatus } from "./lib/console/pfos.ts";
export type { DropReason, UdpDrops, UdpDropTotals } from "./lib/core/datagram.ts";
export type {
  ChatLine,
  ClientList,
  ConsoleEvent,
  ConsoleSnapshot,
  ConsoleStatus,
  PeerInfo,
  PfoSnapshot,
  Rates,
  SessionSnapshot,
  SessionState,
  TrustEntry,
} from "./lib/console/state.ts";
export { ControlError } from "./lib/app/control.ts";
export type { CommandErrorOptions } from "./lib/app/command_error.ts";
export {
  CommandError,
  type CommandErrorCode,
  type CommandRequest,
  type CommandResult,
  type ConsoleClient,
  type ConsoleCommandName,
  type ConsoleCommands,
  type ConsoleCommandSet,
  type EmptyRequest,
  type PfoAddRequest,
  type PfoEditRequest,
  type PfoNameRequest,
  type ResolveResult,
} from "./lib/console/commands.ts";
export { Daemon, type DaemonOptions, runDaemon } from "./lib/daemon/daemon.ts";
export type {
  ChatEntry,
  DaemonConnection,
  DaemonEvent,
  DaemonPhase,
  DaemonSession,
  DaemonSnapshot,
  SessionEndInfo,
} from "./lib/daemon/state.ts";
export {
  type DaemonCommandArgs,
  type DaemonCommandMap,
  type DaemonCommandName,
  type DaemonCommandResult,
  type DaemonCommandRunner,
  DaemonCommands,
  type DaemonStatus,
  type NoArgs,
} from "./lib/daemon/commands.ts";
