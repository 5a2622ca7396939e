/**
 * What `service install|uninstall|status` do, as plans: the files to write
 * or remove and the system commands to run, computed from the request and
 * a picture of this machine ({@linkcode HostInfo}) without touching either.
 * `run.ts` carries a plan out, prints it (`--dry-run`), or, under `--root`,
 * writes its files there and runs nothing.
 *
 * @module
 */

import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { isCompiled, type ProgramName, RUNTIME_FLAGS, SYSTEM_PROGRAMS } from "../permissions.ts";
import { launchdPlist } from "./launchd.ts";
import {
  ACCOUNT_SIDS,
  type Platform,
  type Scope,
  type ServiceSpec,
  type WindowsAccount,
} from "./spec.ts";
import { systemdUnit } from "./systemd.ts";
import { taskXml } from "./windows.ts";

/** This machine, as far as a service definition depends on it. */
export interface HostInfo {
  /** This machine's platform. */
  readonly os: Platform;
  /** `Deno.execPath()`: the compiled binary, or the Deno runtime. */
  readonly execPath: string;
  /** `Deno.mainModule`: the entry file when run from source. */
  readonly mainModule: string;
  /** The user's home folder. */
  readonly homedir: string;
  /** The user's name. */
  readonly username: string;
  /** The user's id (launchd's `gui/UID` domain), or -1 on Windows. */
  readonly uid: number;
}

/** What the user asked for. */
export interface ServiceRequest {
  /** Which program. */
  readonly program: ProgramName;
  /** The service's name (already checked). */
  readonly name: string;
  /** `--user` or `--system`. */
  readonly scope: Scope;
  /** `--platform`, or this machine's. */
  readonly platform: Platform;
  /** The settings file, absolute, on this machine (under `root` when given). */
  readonly settingsFile: string;
  /** `--root DIR`, or null for the real system folders. */
  readonly root: string | null;
  /** `--log-format` for the service: json unless text was asked for. */
  readonly logFormat: "json" | "text";
  /** Windows `--system`: the account the task runs as. */
  readonly account: WindowsAccount;
}

/** A file a plan writes. */
export interface PlannedFile {
  /** Where, on this machine (under `--root` when given). */
  readonly path: string;
  /** Its text. */
  readonly content: string;
  /** Permission bits. */
  readonly mode: number;
  /** Written UTF-16LE with a byte order mark (Task Scheduler's XML), else UTF-8. */
  readonly utf16: boolean;
}

/** A plan: files to write or remove, and commands to run, in order. */
export interface ServicePlan {
  /** Files to write (install). */
  readonly write: readonly PlannedFile[];
  /** Files to remove (uninstall). */
  readonly remove: readonly string[];
  /** Commands to run after writing (install) or before removing (uninstall). */
  readonly commands: readonly (readonly string[])[];
  /** Commands after removing (uninstall). */
  readonly after: readonly (readonly string[])[];
}

/** Where a service's definition and logs are. */
export interface ServiceLocation {
  /** The definition file as the system sees it. */
  readonly view: string;
  /** The definition file on this machine (under `--root` when given). */
  readonly path: string;
  /** Where the logs are, in words the user can act on. */
  readonly logs: string;
  /** The folder a `--system` service's settings must be in, or null when any will do. */
  readonly settingsHome: string | null;
}

/** The home folder on `platform`: this user's when it is this machine, else a likely one. */
function homeOn(platform: Platform, host: HostInfo): string {
  if (platform === host.os) return host.homedir;
  if (platform === "windows") return `C:\\Users\\${host.username}`;
  return platform === "macos" ? `/Users/${host.username}` : `/home/${host.username}`;
}

/**
 * A path as the system sees it, placed under `root` on this machine:
 * `C:\ProgramData\x` becomes `ROOT/C/ProgramData/x`.
 */
export function underRoot(root: string | null, view: string): string {
  if (root === null) return view;
  const posix = view.replace(/^([A-Za-z]):/, "/$1").replaceAll("\\", "/");
  return root.replace(/[\\/]+$/, "") + posix;
}

/** The path as the system sees it of a file on this machine: `root` taken off. */
export function systemView(root: string | null, path: string): string {
  if (root === null) return path;
  const base = root.replace(/[\\/]+$/, "");
  return path.startsWith(base + "/") ? path.slice(base.length) : path;
}

/**
 * Where the definition of `request`'s service lives, and its logs.
 *
 * @example
 * ```ts
 * import { serviceLocation } from "./plan.ts";
 * const at = serviceLocation(
 *   { program: "daemon", name: "pfd", scope: "user", platform: "linux", settingsFile: "/h/a/d.yaml",
 *     root: "/tmp/r", logFormat: "json", account: "LocalService" },
 *   { os: "linux", execPath: "/usr/bin/deno", mainModule: "file:///src/daemon.ts",
 *     homedir: "/h/a", username: "a", uid: 1000 },
 * );
 * if (at.path !== "/tmp/r/h/a/.config/systemd/user/pfd.service") throw new Error(at.path);
 * ```
 */
export function serviceLocation(request: ServiceRequest, host: HostInfo): ServiceLocation {
  const { name, scope, platform } = request;
  const home = homeOn(platform, host);
  const user = scope === "user";
  let view: string;
  let logs: string;
  let settingsHome: string | null = null;
  if (platform === "linux") {
    view = user
      ? `${home}/.config/systemd/user/${name}.service`
      : `/etc/systemd/system/${name}.service`;
    logs = `journalctl ${user ? "--user " : ""}-u ${name}.service`;
    if (!user) settingsHome = `/var/lib/${name}`;
  } else if (platform === "macos") {
    view = user
      ? `${home}/Library/LaunchAgents/${name}.plist`
      : `/Library/LaunchDaemons/${name}.plist`;
    if (!user) settingsHome = `/Library/Application Support/${name}`;
    const [out, err] = launchdLogs(request, host);
    logs = `${out} (output) and ${err} (errors)`;
  } else {
    view = user
      ? `${home}\\AppData\\Local\\portferry\\${name}.xml`
      : `C:\\ProgramData\\portferry\\${name}.xml`;
    logs = "Event Viewer: Applications and Services Logs > Microsoft > Windows > " +
      `TaskScheduler > Operational (the task "${name}"'s starts, exits and restarts)`;
  }
  return { view, path: underRoot(request.root, view), logs, settingsHome };
}

function launchdLogs(request: ServiceRequest, host: HostInfo): [string, string] {
  const folder = request.scope === "user"
    ? `${homeOn("macos", host)}/Library/Logs`
    : `/Library/Application Support/${request.name}`;
  return [`${folder}/${request.name}.log`, `${folder}/${request.name}.err.log`];
}

/** The platform's path separator rules: the folder of a path. */
function folderOf(platform: Platform, path: string): string {
  if (platform !== "windows") return dirname(path);
  const at = Math.max(path.lastIndexOf("\\"), path.lastIndexOf("/"));
  return at <= 0 ? path : path.slice(0, at);
}

/**
 * The command the service runs: the compiled binary itself, or `deno run`
 * with the task's permission flags (never `-A`), the project's deno.json
 * and the entry file, all by absolute path; then `--headless`, the log
 * format and the settings file.
 *
 * @example
 * ```ts
 * import { serviceCommand } from "./plan.ts";
 * const argv = serviceCommand("daemon", "/etc/pf/d.yaml", "json", {
 *   os: "linux", execPath: "/opt/pf/portferry-daemon", mainModule: "file:///tmp/x/daemon.ts",
 *   homedir: "/root", username: "root", uid: 0,
 * });
 * if (argv.join(" ") !== "/opt/pf/portferry-daemon --headless --log-format json --config /etc/pf/d.yaml") {
 *   throw new Error(argv.join(" "));
 * }
 * ```
 */
export function serviceCommand(
  program: ProgramName,
  settingsFile: string,
  logFormat: "json" | "text",
  host: HostInfo,
): string[] {
  const args = ["--headless", "--log-format", logFormat, "--config", settingsFile];
  if (isCompiled(host.execPath)) return [host.execPath, ...args];
  const entry = fileURLToPath(host.mainModule);
  const denoJson = `${dirname(entry)}${host.os === "windows" ? "\\" : "/"}deno.json`;
  return [host.execPath, "run", ...RUNTIME_FLAGS[program], "--config", denoJson, entry, ...args];
}

/** Deno's cache folder for a service run from source (its npm packages live there). */
function denoDir(host: HostInfo): string {
  if (host.os === "windows") return `${host.homedir}\\AppData\\Local\\deno`;
  return host.os === "macos"
    ? `${host.homedir}/Library/Caches/deno`
    : `${host.homedir}/.cache/deno`;
}

/** The spec the generators work from. */
export function serviceSpec(
  request: ServiceRequest,
  host: HostInfo,
  options: { lowPorts: boolean },
): ServiceSpec {
  const settingsFile = systemView(request.root, request.settingsFile);
  const command = serviceCommand(request.program, settingsFile, request.logFormat, host);
  const compiled = isCompiled(host.execPath);
  return {
    program: request.program,
    name: request.name,
    scope: request.scope,
    command,
    settingsFile,
    settingsDir: folderOf(request.platform, settingsFile),
    lowPorts: options.lowPorts,
    readPaths: compiled
      ? [host.execPath]
      : [host.execPath, fileURLToPath(host.mainModule), denoDir(host)],
    denoDir: compiled ? null : denoDir(host),
    logFiles: launchdLogs(request, host),
    account: request.account,
    userName: host.username,
  };
}

/** The definition file's text for `spec` on `platform`. */
export function definitionText(platform: Platform, spec: ServiceSpec): string {
  if (platform === "linux") return systemdUnit(spec);
  return platform === "macos" ? launchdPlist(spec) : taskXml(spec);
}

/** The plan of `service install`. */
export function installPlan(
  request: ServiceRequest,
  host: HostInfo,
  options: { lowPorts: boolean },
): ServicePlan {
  const at = serviceLocation(request, host);
  const spec = serviceSpec(request, host, options);
  const file: PlannedFile = {
    path: at.path,
    content: definitionText(request.platform, spec),
    mode: 0o644,
    utf16: request.platform === "windows",
  };
  const { name } = request;
  const user = request.scope === "user";
  const commands: string[][] = [];
  if (request.platform === "linux") {
    const ctl = user ? [SYSTEM_PROGRAMS.systemctl, "--user"] : [SYSTEM_PROGRAMS.systemctl];
    commands.push([...ctl, "daemon-reload"], [...ctl, "enable", "--now", `${name}.service`]);
  } else if (request.platform === "macos") {
    if (!user) commands.push([SYSTEM_PROGRAMS.chown, "-R", "nobody:nobody", spec.settingsDir]);
    commands.push([SYSTEM_PROGRAMS.launchctl, "bootstrap", launchdDomain(request, host), at.view]);
  } else {
    if (!user) {
      const sid = ACCOUNT_SIDS[request.account];
      commands.push([SYSTEM_PROGRAMS.icacls, spec.settingsDir, "/grant", `*${sid}:(OI)(CI)M`]);
    }
    commands.push(
      [SYSTEM_PROGRAMS.schtasks, "/Create", "/TN", name, "/XML", at.view],
      [SYSTEM_PROGRAMS.schtasks, "/Run", "/TN", name],
    );
  }
  return { write: [file], remove: [], commands, after: [] };
}

/** launchd's domain: `gui/UID` for a user agent, `system` for a daemon. */
function launchdDomain(request: ServiceRequest, host: HostInfo): string {
  return request.scope === "user" ? `gui/${host.uid}` : "system";
}

/** The plan of `service uninstall`: stop and unregister, remove the file, reload. */
export function uninstallPlan(request: ServiceRequest, host: HostInfo): ServicePlan {
  const at = serviceLocation(request, host);
  const { name } = request;
  if (request.platform === "linux") {
    const ctl = request.scope === "user"
      ? [SYSTEM_PROGRAMS.systemctl, "--user"]
      : [SYSTEM_PROGRAMS.systemctl];
    return {
      write: [],
      remove: [at.path],
      commands: [[...ctl, "disable", "--now", `${name}.service`]],
      after: [[...ctl, "daemon-reload"]],
    };
  }
  if (request.platform === "macos") {
    return {
      write: [],
      remove: [at.path],
      commands: [[SYSTEM_PROGRAMS.launchctl, "bootout", `${launchdDomain(request, host)}/${name}`]],
      after: [],
    };
  }
  return {
    write: [],
    remove: [at.path],
    commands: [
      [SYSTEM_PROGRAMS.schtasks, "/End", "/TN", name],
      [SYSTEM_PROGRAMS.schtasks, "/Delete", "/TN", name, "/F"],
    ],
    after: [],
  };
}

/** The commands `service status` asks the system with. */
export function statusCommands(request: ServiceRequest, host: HostInfo): string[][] {
  const { name } = request;
  if (request.platform === "linux") {
    const ctl = request.scope === "user"
      ? [SYSTEM_PROGRAMS.systemctl, "--user"]
      : [SYSTEM_PROGRAMS.systemctl];
    return [
      [...ctl, "is-active", `${name}.service`],
      [
        ...ctl,
        "show",
        `${name}.service`,
        "--property=LoadState,ActiveState,SubState,MainPID,ExecMainStatus,NRestarts",
      ],
    ];
  }
  if (request.platform === "macos") {
    return [[SYSTEM_PROGRAMS.launchctl, "print", `${launchdDomain(request, host)}/${name}`]];
  }
  return [[SYSTEM_PROGRAMS.schtasks, "/Query", "/TN", name, "/V", "/FO", "LIST"]];
}
