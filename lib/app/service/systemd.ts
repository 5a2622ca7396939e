/**
 * The systemd unit for a portferry service: restarted on failure with a
 * back-off, logging to the journal, and sandboxed to what a network tool
 * needs (see {@linkcode systemdUnit}).
 *
 * @module
 */

import { escapeControls } from "../../core/text.ts";
import { programTitle, type ServiceSpec } from "./spec.ts";

/** Folders `ProtectHome=` hides. */
const HOME_FOLDERS = ["/home", "/root", "/run/user"];

/** True when `path` is `folder` or inside it. */
export function isUnder(path: string, folder: string): boolean {
  return path === folder || path.startsWith(folder.endsWith("/") ? folder : folder + "/");
}

/**
 * A word of `ExecStart=` as systemd reads it back: `%` and `$` doubled (no
 * specifier or variable is expanded), quoted when it holds a space, a quote,
 * a backslash or a `;`.
 *
 * @example
 * ```ts
 * import { systemdWord } from "./systemd.ts";
 * if (systemdWord("/a b/c") !== '"/a b/c"' || systemdWord("50%") !== "50%%") throw new Error("bad");
 * ```
 */
export function systemdWord(word: string): string {
  // A line break would end the directive and start one of the word's own
  // (`ExecStartPre=...`); no path or flag of ours needs a control character.
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(word)) {
    throw new TypeError(
      `Cannot write "${
        escapeControls(word)
      }" into a systemd unit: it holds a control character such as a line break; ` +
        "move the settings file or program to a path without one",
    );
  }
  const escaped = word.replaceAll("%", "%%").replaceAll("$", "$$$$");
  if (escaped !== "" && /^[^\s"'\\;]+$/.test(escaped)) return escaped;
  return `"${escaped.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/**
 * The unit file's text. `--user` runs as the user who installed it;
 * `--system` as a user systemd makes for the service (`DynamicUser=yes`),
 * whose settings folder is its `StateDirectory` (`/var/lib/NAME`), owned by
 * that user. Home folders are hidden (`ProtectHome=yes`), or read-only when
 * the settings, the runtime or the program live in one.
 *
 * @example
 * ```ts
 * import { systemdUnit } from "./systemd.ts";
 * const unit = systemdUnit({
 *   program: "daemon", name: "pfd", scope: "system",
 *   command: ["/usr/local/bin/portferry-daemon", "--headless", "--config", "/var/lib/pfd/d.yaml"],
 *   settingsFile: "/var/lib/pfd/d.yaml", settingsDir: "/var/lib/pfd", lowPorts: false,
 *   readPaths: ["/usr/local/bin/portferry-daemon"], denoDir: null, logFiles: ["", ""],
 *   account: "LocalService", userName: "",
 * });
 * if (!unit.includes("\nDynamicUser=yes\n") || !unit.includes("\nProtectHome=yes\n")) throw new Error(unit);
 * ```
 */
export function systemdUnit(spec: ServiceSpec): string {
  const system = spec.scope === "system";
  const inHome = [spec.settingsDir, ...spec.readPaths].some((p) =>
    HOME_FOLDERS.some((h) => isUnder(p, h))
  );
  const caps = spec.lowPorts
    ? ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
    : ["CapabilityBoundingSet="];
  const lines = [
    `# portferry ${programTitle(spec.program)} as a ${spec.scope} service.`,
    `# Written by \`service install\`; \`service uninstall\` removes it.`,
    "[Unit]",
    `Description=portferry ${programTitle(spec.program)} (${spec.name})`,
    ...(system ? ["Wants=network-online.target", "After=network-online.target"] : []),
    // Back-off: 5 s between restarts, and at most 10 starts in 10 minutes.
    "StartLimitIntervalSec=600",
    "StartLimitBurst=10",
    "",
    "[Service]",
    "Type=exec",
    `ExecStart=${spec.command.map(systemdWord).join(" ")}`,
    ...(spec.denoDir ? [`Environment=${systemdWord(`DENO_DIR=${spec.denoDir}`)}`] : []),
    "Restart=on-failure",
    "RestartSec=5",
    // Output goes to the journal: journalctl -u NAME.
    "StandardOutput=journal",
    "StandardError=journal",
    `SyslogIdentifier=${spec.name}`,
    ...(system
      ? ["DynamicUser=yes", `StateDirectory=${spec.name}`, "StateDirectoryMode=0700"]
      : []),
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    `ProtectHome=${inHome ? "read-only" : "yes"}`,
    `ReadWritePaths=${systemdWord(spec.settingsDir)}`,
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    ...caps,
    "SystemCallFilter=@system-service",
    // V8 asks for memory protection keys (pkey_alloc) and does without when refused.
    "SystemCallFilter=@pkey",
    // A call outside the list fails with EPERM rather than killing the program.
    "SystemCallErrorNumber=EPERM",
    "SystemCallArchitectures=native",
    "UMask=0077",
    "",
    "[Install]",
    `WantedBy=${system ? "multi-user.target" : "default.target"}`,
  ];
  return lines.join("\n") + "\n";
}
