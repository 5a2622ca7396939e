/**
 * `service install|uninstall|status`, the same on both programs: run the
 * program as a system service (systemd, launchd, Task Scheduler).
 *
 * @module
 */

import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { Option } from "commander";
import { UsageError } from "../cli.ts";
import { isCompiled, type ProgramName } from "../permissions.ts";
import {
  type HostInfo,
  installPlan,
  serviceLocation,
  type ServiceRequest,
  uninstallPlan,
} from "./plan.ts";
import {
  carryOut,
  checkSettingsFile,
  checkSettingsHome,
  exists,
  hostInfo,
  isAbsoluteOn,
  serviceStatus,
  thisPlatform,
} from "./run.ts";
import {
  defaultServiceName,
  type Platform,
  PLATFORMS,
  validateServiceName,
  WINDOWS_ACCOUNTS,
  type WindowsAccount,
} from "./spec.ts";

/** What the entry file knows when it adds the service commands. */
export interface ServiceCommandOptions {
  /** Which program. */
  readonly program: ProgramName;
  /** The settings file: `--config` or the default. */
  readonly settingsPath: string;
  /** `--log-format` given on the command line, or null (the service logs JSON); read when run. */
  readonly logFormat: () => "json" | "text" | null;
  /** Where lines go. */
  readonly print: (line: string) => void;
}

interface ServiceFlags {
  user?: boolean;
  system?: boolean;
  name?: string;
  dryRun?: boolean;
  platform?: string;
  root?: string;
  account?: string;
}

/** Read and check the flags into a request. */
function toRequest(flags: ServiceFlags, options: ServiceCommandOptions): ServiceRequest {
  if (flags.user && flags.system) throw new UsageError("give --user or --system, not both");
  const platform = (flags.platform ?? thisPlatform()) as Platform;
  if (!PLATFORMS.includes(platform)) {
    throw new UsageError(`--platform must be one of ${PLATFORMS.join(", ")}, got "${platform}"`);
  }
  if (platform !== thisPlatform() && !flags.dryRun && flags.root === undefined) {
    throw new UsageError(
      `Cannot act on a ${platform} service on ${thisPlatform()}: add --dry-run to print it, ` +
        `or --root DIR to write it under DIR`,
    );
  }
  let name: string;
  try {
    name = validateServiceName(flags.name ?? defaultServiceName(options.program));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const account = (flags.account ?? "LocalService") as WindowsAccount;
  if (!WINDOWS_ACCOUNTS.includes(account)) {
    throw new UsageError(`--account must be one of ${WINDOWS_ACCOUNTS.join(", ")}`);
  }
  const root = flags.root ?? null;
  if (root !== null && !isAbsoluteOn(thisPlatform(), root)) {
    throw new UsageError(`--root "${root}" must be an absolute path`);
  }
  if (!isAbsoluteOn(thisPlatform(), options.settingsPath)) {
    throw new UsageError(
      `--config "${options.settingsPath}" must be an absolute path (a service has no working folder)`,
    );
  }
  // --system where permitted: root on Linux and macOS; Windows defaults to --user.
  const system = flags.system ??
    (!flags.user && thisPlatform() !== "windows" && Deno.uid() === 0);
  return {
    program: options.program,
    name,
    scope: system ? "system" : "user",
    platform,
    settingsFile: options.settingsPath,
    root,
    logFormat: options.logFormat() ?? "json",
    account,
  };
}

/**
 * Add `service install|uninstall|status` to `program`.
 */
export function addServiceCommands(
  program: CommandUnknownOpts,
  options: ServiceCommandOptions,
): void {
  const service = program.command("service").description(
    "run this program as a service: systemd (Linux), launchd (macOS), Task Scheduler (Windows)",
  );
  const withFlags = (command: CommandUnknownOpts) =>
    command
      .option("--user", "a per-user service, no admin rights")
      .option("--system", "a service for the whole machine (the default when run as root)")
      .option(
        "--name <name>",
        `the service's name (default ${defaultServiceName(options.program)})`,
      )
      .option("--dry-run", "print every file and command, change nothing")
      .addOption(
        new Option("--platform <platform>", "the platform's definition (with --dry-run or --root)")
          .choices(PLATFORMS),
      )
      .option("--root <dir>", "write under DIR instead of the system folders; run no command")
      .addOption(
        new Option("--account <account>", "Windows --system: the account the task runs as")
          .choices(WINDOWS_ACCOUNTS).default("LocalService"),
      );
  withFlags(
    service.command("install").description(
      "write the service definition (settings checked now) and enable and start it",
    ),
  ).action(withOpts(async (flags) => {
    const request = toRequest(flags, options);
    const host = hostInfo();
    const { lowPorts } = await checkSettingsFile(options.program, request.settingsFile);
    checkSettingsHome(request, host);
    const at = serviceLocation(request, host);
    if (!flags.dryRun && await exists(at.path)) {
      throw new Error(
        `Cannot install "${request.name}": it is installed already (${at.path}); ` +
          `run \`service uninstall\` first`,
      );
    }
    await carryOut(installPlan(request, host, { lowPorts }), printing(request, flags, options));
    if (!flags.dryRun) options.print(`Installed ${request.name}. Logs: ${at.logs}`);
    for (const note of installNotes(request, host, { lowPorts })) options.print(`Note: ${note}`);
  }));
  withFlags(service.command("uninstall").description("stop the service and remove its definition"))
    .action(withOpts(async (flags) => {
      const request = toRequest(flags, options);
      const host = hostInfo();
      const at = serviceLocation(request, host);
      if (!await exists(at.path)) {
        throw new Error(`Cannot uninstall "${request.name}": it is not installed (no ${at.path})`);
      }
      await carryOut(uninstallPlan(request, host), printing(request, flags, options));
    }));
  withFlags(
    service.command("status").description(
      "whether the service is installed and running, and where its logs are",
    ),
  ).action(withOpts(async (flags) => {
    const request = toRequest(flags, options);
    const code = await serviceStatus(request, hostInfo(), printing(request, flags, options));
    if (code !== 0) {
      throw new Error(`Cannot find the service "${request.name}": it is not installed`);
    }
  }));
}

/** What the user should know after an install: what could make the service not last. */
export function installNotes(
  request: ServiceRequest,
  host: HostInfo,
  options: { lowPorts: boolean } = { lowPorts: false },
): string[] {
  const notes: string[] = [];
  if (!isCompiled(host.execPath) && /[\\/]_npx[\\/]/.test(host.execPath)) {
    notes.push(
      `the service runs Deno from npm's npx cache (${host.execPath}), which npm may clean: ` +
        `install Deno, or use the compiled binary, for a lasting service`,
    );
  }
  if (request.platform === "linux" && request.scope === "user") {
    notes.push(
      `a user service starts at boot, before you log in, only with lingering: ` +
        `loginctl enable-linger ${host.username}`,
    );
    if (options.lowPorts) {
      notes.push(
        `the settings listen below port 1024, which a user service cannot do (systemd's user ` +
          `manager cannot grant CAP_NET_BIND_SERVICE): install with --system, or use ports ` +
          `from 1024 up`,
      );
    }
  }
  return notes;
}

/** An action that reads the command's options as {@linkcode ServiceFlags}. */
function withOpts(fn: (flags: ServiceFlags) => Promise<void>) {
  return function (this: CommandUnknownOpts): Promise<void> {
    return fn(this.opts() as ServiceFlags);
  };
}

function printing(request: ServiceRequest, flags: ServiceFlags, options: ServiceCommandOptions) {
  return {
    dryRun: flags.dryRun === true,
    root: request.root,
    platform: request.platform,
    print: options.print,
  };
}
