/**
 * The launchd property list for a portferry service on macOS.
 *
 * @module
 */

import type { ServiceSpec } from "./spec.ts";

/** Text made safe inside an XML element or attribute. */
export function xmlText(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/**
 * The plist's text: started at load and kept alive (restarted when it exits
 * with an error, at most every 10 s), its output in `logFiles`. A
 * `--system` daemon runs as `nobody`, never as root.
 *
 * @example
 * ```ts
 * import { launchdPlist } from "./launchd.ts";
 * const plist = launchdPlist({
 *   program: "daemon", name: "pfd", scope: "user", command: ["/opt/pfd", "--headless"],
 *   settingsFile: "/Users/a/pf/d.yaml", settingsDir: "/Users/a/pf", lowPorts: false,
 *   readPaths: [], denoDir: null, logFiles: ["/Users/a/Library/Logs/pfd.log", "/Users/a/Library/Logs/pfd.err.log"],
 *   account: "LocalService", userName: "a",
 * });
 * if (!plist.includes("<key>KeepAlive</key>")) throw new Error(plist);
 * ```
 */
export function launchdPlist(spec: ServiceSpec): string {
  const str = (s: string) => `<string>${xmlText(s)}</string>`;
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" ' +
    '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    "<dict>",
    "  <key>Label</key>",
    `  ${str(spec.name)}`,
    "  <key>ProgramArguments</key>",
    "  <array>",
    ...spec.command.map((word) => `    ${str(word)}`),
    "  </array>",
    ...(spec.denoDir
      ? [
        "  <key>EnvironmentVariables</key>",
        "  <dict>",
        "    <key>DENO_DIR</key>",
        `    ${str(spec.denoDir)}`,
        "  </dict>",
      ]
      : []),
    "  <key>WorkingDirectory</key>",
    `  ${str(spec.settingsDir)}`,
    ...(spec.scope === "system"
      ? [
        "  <key>UserName</key>",
        `  ${str("nobody")}`,
        "  <key>GroupName</key>",
        `  ${str("nobody")}`,
      ]
      : []),
    "  <key>RunAtLoad</key>",
    "  <true/>",
    "  <key>KeepAlive</key>",
    "  <dict>",
    "    <key>SuccessfulExit</key>",
    "    <false/>",
    "  </dict>",
    "  <key>ThrottleInterval</key>",
    "  <integer>10</integer>",
    "  <key>ProcessType</key>",
    `  ${str("Background")}`,
    "  <key>StandardOutPath</key>",
    `  ${str(spec.logFiles[0])}`,
    "  <key>StandardErrorPath</key>",
    `  ${str(spec.logFiles[1])}`,
    "</dict>",
    "</plist>",
  ];
  return lines.join("\n") + "\n";
}
