/**
 * What a service definition is made from: the program, its name, who runs
 * it, and the exact command line. The generators (`systemd.ts`,
 * `launchd.ts`, `windows.ts`) turn a {@linkcode ServiceSpec} into file text
 * and nothing else: no file system, no clock, no environment.
 *
 * @module
 */

import type { ProgramName } from "../permissions.ts";

/** Where the service runs. */
export type Platform = "linux" | "macos" | "windows";

/** The platforms, as `--platform` takes them. */
export const PLATFORMS: readonly Platform[] = ["linux", "macos", "windows"];

/** A per-user service, or one for the whole machine. */
export type Scope = "user" | "system";

/** Everything a service definition is generated from. */
export interface ServiceSpec {
  /** Which program the service runs. */
  readonly program: ProgramName;
  /** The service's name (unit, label, task), checked by {@linkcode validateServiceName}. */
  readonly name: string;
  /** `--user` or `--system`. */
  readonly scope: Scope;
  /** The command the service runs: an absolute program path, then its arguments. */
  readonly command: readonly string[];
  /** The settings file, absolute, as the service sees it. */
  readonly settingsFile: string;
  /** The settings file's folder: the only place the service writes. */
  readonly settingsDir: string;
  /** True when the Console listens on a port below 1024 (it needs CAP_NET_BIND_SERVICE). */
  readonly lowPorts: boolean;
  /**
   * Paths the service reads that may lie under a home folder (the runtime,
   * the source files, Deno's cache): any of them there makes `ProtectHome`
   * read-only instead of hiding home folders.
   */
  readonly readPaths: readonly string[];
  /** Deno's cache folder (its npm packages) when run from source, else null. */
  readonly denoDir: string | null;
  /** Files the service's output goes to (launchd): stdout, then stderr. */
  readonly logFiles: readonly [string, string];
  /** Windows: the account a --system task runs as. */
  readonly account: WindowsAccount;
  /** Windows --user: the account (DOMAIN\user or user) the task runs as. */
  readonly userName: string;
}

/** Windows accounts a --system task may run as; SYSTEM only when asked for. */
export type WindowsAccount = "LocalService" | "NetworkService" | "SYSTEM";

/** The accounts `--account` takes. */
export const WINDOWS_ACCOUNTS: readonly WindowsAccount[] = [
  "LocalService",
  "NetworkService",
  "SYSTEM",
];

/** Each account's well-known SID, as Task Scheduler takes it. */
export const ACCOUNT_SIDS: Readonly<Record<WindowsAccount, string>> = Object.freeze({
  LocalService: "S-1-5-19",
  NetworkService: "S-1-5-20",
  SYSTEM: "S-1-5-18",
});

/**
 * Checks a service name: 1–64 characters of `A-Za-z0-9._-`, starting with a
 * letter or digit, so that it is a valid systemd unit name, launchd label and
 * Task Scheduler task name, and a safe file name everywhere. Returns it.
 *
 * @example
 * ```ts
 * import { validateServiceName } from "./spec.ts";
 * validateServiceName("portferry-daemon");
 * try {
 *   validateServiceName("../etc/passwd");
 *   throw new Error("accepted");
 * } catch (err) {
 *   if (!(err instanceof SyntaxError)) throw err;
 * }
 * ```
 */
export function validateServiceName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) || name.endsWith(".service")) {
    throw new SyntaxError(
      `Cannot use "${name}" as a service name: use 1-64 letters, digits, '.', '_' or '-', ` +
        `starting with a letter or digit (and no ".service")`,
    );
  }
  return name;
}

/** The service's default name: `portferry-console` or `portferry-daemon`. */
export function defaultServiceName(program: ProgramName): string {
  return `portferry-${program}`;
}

/** "Console" or "Daemon". */
export function programTitle(program: ProgramName): string {
  return program === "console" ? "Console" : "Daemon";
}
