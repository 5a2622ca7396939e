/**
 * Carrying out a service plan: the settings check, atomic writes, the system
 * commands, `--dry-run` (print everything, change nothing) and `--root`
 * (write under a folder, run nothing), and `status`.
 *
 * @module
 */

import os from "node:os";
import { dirname, isAbsolute } from "node:path";
import { writeFileAtomic } from "../../core/io.ts";
import { errorMessage } from "../../core/errors.ts";
import { loadConsoleSettings, loadDaemonSettings } from "../../settings/schema.ts";
import { shellWord } from "../invocation.ts";
import type { ProgramName } from "../permissions.ts";
import {
  type HostInfo,
  type PlannedFile,
  serviceLocation,
  type ServicePlan,
  type ServiceRequest,
  statusCommands,
  systemView,
} from "./plan.ts";
import type { Platform } from "./spec.ts";
import { windowsArg } from "./windows.ts";

/** This machine's platform. */
export function thisPlatform(): Platform {
  const os = Deno.build.os;
  return os === "darwin" ? "macos" : os === "windows" ? "windows" : "linux";
}

/** This machine and user, as service definitions need them. */
export function hostInfo(): HostInfo {
  const info = os.userInfo();
  return {
    os: thisPlatform(),
    execPath: Deno.execPath(),
    mainModule: Deno.mainModule,
    homedir: info.homedir,
    username: info.username,
    uid: Deno.build.os === "windows" ? -1 : info.uid,
  };
}

/** A command as the user would type it on `platform`. */
export function commandText(platform: Platform, argv: readonly string[]): string {
  return argv.map(platform === "windows" ? windowsArg : shellWord).join(" ");
}

/** True when `path` is absolute on `platform` (`C:\…` on Windows, `/…` elsewhere). */
export function isAbsoluteOn(platform: Platform, path: string): boolean {
  if (platform === "windows") return /^[A-Za-z]:[\\/]/.test(path) || isAbsolute(path);
  return isAbsolute(path);
}

/**
 * Checks the settings file a service will run with, now rather than at boot:
 * absolute, existing, valid for the program's schema, and for the Daemon
 * naming its Console and fingerprint (a headless Daemon needs both).
 * Returns whether the Console listens below port 1024.
 */
export async function checkSettingsFile(
  program: ProgramName,
  file: string,
): Promise<{ lowPorts: boolean }> {
  if (!isAbsolute(file)) {
    throw new TypeError(`Cannot use "${file}" as the service's settings: give an absolute path`);
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(file);
  } catch (err) {
    throw new Error(
      `Cannot use "${file}" as the service's settings: ${errorMessage(err)}; ` +
        `create it first (a service needs settings that exist now)`,
      { cause: err },
    );
  }
  if (!info.isFile) throw new Error(`Cannot use "${file}" as the service's settings: not a file`);
  if (program === "daemon") {
    const { settings } = await loadDaemonSettings(file);
    if (settings.console === null || settings.fingerprint === null) {
      throw new Error(
        `Cannot use "${file}" as the Daemon service's settings: it must name the Console ` +
          `(console: HOST:PORT) and its fingerprint (fingerprint: SHA256:...), as a service cannot ask`,
      );
    }
    return { lowPorts: false };
  }
  const { settings } = await loadConsoleSettings(file);
  const ports = [settings.session.port, ...settings.pfos.map((p) => p.listenAddr.port)];
  return { lowPorts: ports.some((port) => port > 0 && port < 1024) };
}

/** Checks that a `--system` service's settings are in the folder its own account owns. */
export function checkSettingsHome(request: ServiceRequest, host: HostInfo): void {
  const home = serviceLocation(request, host).settingsHome;
  if (home === null || request.scope !== "system") return;
  const folder = dirname(systemView(request.root, request.settingsFile));
  if (folder === home) return;
  const why = request.platform === "linux"
    ? "systemd gives it to the service's own user (DynamicUser=yes, StateDirectory=)"
    : "install gives it to the account the daemon runs as (nobody)";
  throw new Error(
    `Cannot install a system service with settings in "${folder}": it keeps them in "${home}", ` +
      `which ${why}; copy the settings folder there (sudo mkdir -p "${home}" && ` +
      `sudo cp -a "${folder}/." "${home}/"), then give --config "${home}/SETTINGS.yaml"`,
  );
}

/** Where `run` sends its lines, and what it runs commands with. */
export interface RunOptions {
  /** Print every file and command, change nothing. */
  readonly dryRun: boolean;
  /** `--root`: write there, run nothing. */
  readonly root: string | null;
  /** The platform the plan is for (how commands are shown). */
  readonly platform: Platform;
  /** Where lines go. */
  readonly print: (line: string) => void;
  /** Runs one command; default {@linkcode runCommand}. */
  readonly exec?: (argv: readonly string[]) => Promise<CommandOutput>;
}

/** What a command printed, and how it ended. */
export interface CommandOutput {
  /** Exit code. */
  readonly code: number;
  /** Standard output and error, together. */
  readonly text: string;
}

/** Run `argv` and collect its output. */
export async function runCommand(argv: readonly string[]): Promise<CommandOutput> {
  const [program, ...args] = argv;
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { code: out.code, text: (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim() };
}

function fileBytes(file: PlannedFile): Uint8Array {
  if (!file.utf16) return new TextEncoder().encode(file.content);
  const bytes = new Uint8Array(2 + file.content.length * 2);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, 0xfeff, true);
  for (let i = 0; i < file.content.length; i++) {
    view.setUint16(2 + i * 2, file.content.charCodeAt(i), true);
  }
  return bytes;
}

/**
 * Carry `plan` out: write its files atomically (folders made as needed),
 * run its commands (none under `--root`), remove its files. With
 * `--dry-run`, print each file's path and full text and each command, and
 * change nothing. A command that fails stops the plan with its output;
 * `schtasks /End` and `disable`/`bootout` may fail when the service is not
 * running, which uninstall tolerates.
 */
export async function carryOut(plan: ServicePlan, options: RunOptions): Promise<void> {
  const { print } = options;
  const exec = options.exec ?? runCommand;
  const show = (argv: readonly string[]) => commandText(options.platform, argv);
  const runAll = async (commands: readonly (readonly string[])[], tolerant: boolean) => {
    for (const argv of commands) {
      if (options.dryRun || options.root !== null) {
        print(`${options.dryRun ? "Would run" : "Not run (--root)"}: ${show(argv)}`);
        continue;
      }
      print(`Running: ${show(argv)}`);
      const out = await exec(argv);
      if (out.text) print(out.text);
      if (out.code !== 0 && !tolerant) {
        throw new Error(`Cannot run \`${show(argv)}\`: it exited ${out.code}`);
      }
    }
  };
  for (const file of plan.write) {
    if (options.dryRun) {
      print(
        `Would write ${file.path} (mode ${file.mode.toString(8).padStart(4, "0")}${
          file.utf16 ? ", UTF-16LE with a byte order mark" : ""
        }):`,
      );
      print(file.content.replaceAll("\r\n", "\n").replace(/\n$/, ""));
      continue;
    }
    await Deno.mkdir(dirname(file.path), { recursive: true, mode: 0o755 });
    await writeFileAtomic(file.path, fileBytes(file), { mode: file.mode });
    print(`Wrote ${file.path}`);
  }
  await runAll(plan.commands, plan.write.length === 0);
  for (const path of plan.remove) {
    if (options.dryRun) {
      print(`Would remove ${path}`);
      continue;
    }
    await Deno.remove(path);
    print(`Removed ${path}`);
  }
  await runAll(plan.after, false);
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * `service status`: whether the definition is installed, the system's own
 * report (none under `--root`: files only), and where the logs are. Returns
 * the exit code: 0 installed, 1 not.
 */
export async function serviceStatus(
  request: ServiceRequest,
  host: HostInfo,
  options: RunOptions,
): Promise<number> {
  const { print } = options;
  const at = serviceLocation(request, host);
  const installed = await exists(at.path);
  print(`service: ${request.name} (${request.platform}, ${request.scope})`);
  print(`definition: ${at.path} (${installed ? "installed" : "not installed"})`);
  if (installed && request.platform === "macos") {
    const plist = await Deno.readTextFile(at.path);
    const paths = [...plist.matchAll(/<key>Standard(?:Out|Error)Path<\/key>\s*<string>([^<]*)/g)]
      .map((m) => m[1].replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&"));
    print(`logs: ${paths.join(" (output) and ")} (errors)`);
  } else {
    print(`logs: ${at.logs}`);
  }
  const commands = statusCommands(request, host);
  if (options.root !== null || options.dryRun) {
    for (const argv of commands) {
      print(
        `Not run (${options.root !== null ? "--root" : "--dry-run"}): ${
          commandText(request.platform, argv)
        }`,
      );
    }
    return installed ? 0 : 1;
  }
  const exec = options.exec ?? runCommand;
  for (const argv of commands) {
    print(`$ ${commandText(request.platform, argv)}`);
    try {
      const out = await exec(argv);
      print(out.text || `(no output; exit code ${out.code})`);
    } catch (err) {
      print(`(cannot run it: ${errorMessage(err)})`);
    }
  }
  return installed ? 0 : 1;
}
