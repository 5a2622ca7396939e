/**
 * The Task Scheduler task for a portferry service on Windows. A compiled
 * Deno program cannot answer the Service Control Manager (it would have to
 * call StartServiceCtrlDispatcher and report its state), so the service is a
 * task started at boot (`--system`) or at the user's logon (`--user`),
 * registered with `schtasks /Create /XML`. The one wrapper on the registries
 * we reach, npm's `node-windows`, runs a Node.js script under a bundled,
 * prebuilt `winsw.exe` (Node.js on the machine, a native binary to trust);
 * a task needs nothing beyond what every Windows machine has.
 *
 * @module
 */

import { xmlText } from "./launchd.ts";
import { ACCOUNT_SIDS, programTitle, type ServiceSpec } from "./spec.ts";

/**
 * A word of a Windows command line as `CommandLineToArgvW` reads it back:
 * quoted when empty or holding a space, tab or quote; backslashes doubled
 * before a quote and at the end of a quoted word.
 *
 * @example
 * ```ts
 * import { windowsArg } from "./windows.ts";
 * if (windowsArg("C:\\a b\\") !== '"C:\\a b\\\\"' || windowsArg("x") !== "x") throw new Error("bad");
 * ```
 */
export function windowsArg(word: string): string {
  if (word !== "" && !/[\s"]/.test(word)) return word;
  let out = '"';
  let slashes = 0;
  for (const ch of word) {
    if (ch === "\\") {
      slashes++;
      continue;
    }
    out += "\\".repeat(ch === '"' ? slashes * 2 + 1 : slashes) + ch;
    slashes = 0;
  }
  return out + "\\".repeat(slashes * 2) + '"';
}

function principal(spec: ServiceSpec): string[] {
  if (spec.scope === "user") {
    return [
      `      <UserId>${xmlText(spec.userName)}</UserId>`,
      "      <LogonType>InteractiveToken</LogonType>",
    ];
  }
  // A service account is named by its well-known SID alone: the schema's logonType has no
  // value for it, and no password is stored.
  return [`      <UserId>${ACCOUNT_SIDS[spec.account]}</UserId>`];
}

function trigger(spec: ServiceSpec): string[] {
  // Every 5 minutes after the start: with IgnoreNew, this starts the program again
  // only when it is not running (Task Scheduler's RestartOnFailure covers failed starts).
  const repeat = [
    "      <Repetition>",
    "        <Interval>PT5M</Interval>",
    "        <StopAtDurationEnd>false</StopAtDurationEnd>",
    "      </Repetition>",
  ];
  if (spec.scope === "user") {
    return [
      "    <LogonTrigger>",
      ...repeat,
      "      <Enabled>true</Enabled>",
      `      <UserId>${xmlText(spec.userName)}</UserId>`,
      "    </LogonTrigger>",
    ];
  }
  return ["    <BootTrigger>", ...repeat, "      <Enabled>true</Enabled>", "    </BootTrigger>"];
}

/**
 * The task's XML (written UTF-16 with a byte order mark, as Task Scheduler
 * exports it). `--system` runs at boot whether or not anyone logs on, as
 * LocalService unless another account is asked for; `--user` at the user's
 * logon, as that user, without admin rights.
 *
 * @example
 * ```ts
 * import { taskXml } from "./windows.ts";
 * const xml = taskXml({
 *   program: "daemon", name: "pfd", scope: "system", command: ["C:\\pf\\pfd.exe", "--headless"],
 *   settingsFile: "C:\\pf\\pfd.yaml", settingsDir: "C:\\pf", lowPorts: false, readPaths: [],
 *   denoDir: null, logFiles: ["", ""], account: "LocalService", userName: "",
 * });
 * if (!xml.includes("<UserId>S-1-5-19</UserId>") || !xml.includes("<BootTrigger>")) throw new Error(xml);
 * ```
 */
export function taskXml(spec: ServiceSpec): string {
  const [program, ...args] = spec.command;
  const lines = [
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">',
    "  <RegistrationInfo>",
    `    <Description>portferry ${programTitle(spec.program)} (${
      xmlText(spec.name)
    }), written by service install</Description>`,
    `    <URI>\\${xmlText(spec.name)}</URI>`,
    "  </RegistrationInfo>",
    "  <Triggers>",
    ...trigger(spec),
    "  </Triggers>",
    "  <Principals>",
    '    <Principal id="Author">',
    ...principal(spec),
    "      <RunLevel>LeastPrivilege</RunLevel>",
    "    </Principal>",
    "  </Principals>",
    "  <Settings>",
    "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>",
    "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
    "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>",
    "    <StartWhenAvailable>true</StartWhenAvailable>",
    "    <AllowStartOnDemand>true</AllowStartOnDemand>",
    "    <Enabled>true</Enabled>",
    "    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
    "    <RestartOnFailure>",
    "      <Interval>PT1M</Interval>",
    "      <Count>999</Count>",
    "    </RestartOnFailure>",
    "  </Settings>",
    '  <Actions Context="Author">',
    "    <Exec>",
    `      <Command>${xmlText(program)}</Command>`,
    `      <Arguments>${xmlText(args.map(windowsArg).join(" "))}</Arguments>`,
    `      <WorkingDirectory>${xmlText(spec.settingsDir)}</WorkingDirectory>`,
    "    </Exec>",
    "  </Actions>",
    "</Task>",
  ];
  return lines.join("\r\n") + "\r\n";
}
