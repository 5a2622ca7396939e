/**
 * Where settings live and the files read beside them: the settings file's
 * default place, the identity, control and trust files beside it, the text
 * of the settings file, and a shared token file.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { readOwnTextFile, UnsafeFileError } from "../core/file_safety.ts";

/** Files that live beside a settings file. */
export interface SettingsPaths {
  /** The settings file itself. */
  readonly settings: string;
  /** Identity private key (PEM, owner-only). */
  readonly key: string;
  /** Identity certificate (PEM). */
  readonly cert: string;
  /** Local control endpoint and secret (JSON, owner-only). */
  readonly control: string;
  /** Remembered fingerprints (JSON). */
  readonly trust: string;
}

/**
 * The files beside a settings file: `/d/portferry-console.yaml` gives
 * `/d/portferry-console.key.pem`, `.cert.pem`, `.control.json` and
 * `.trust.json`. A `.yaml` or `.yml` extension is dropped first.
 *
 * @example
 * ```ts
 * import { settingsPaths } from "./paths.ts";
 * const p = settingsPaths("/d/portferry-console.yaml");
 * if (p.key !== "/d/portferry-console.key.pem" || p.trust !== "/d/portferry-console.trust.json") {
 *   throw new Error(JSON.stringify(p));
 * }
 * ```
 */
export function settingsPaths(settingsFile: string): SettingsPaths {
  const stem = settingsFile.replace(/\.ya?ml$/i, "");
  return Object.freeze({
    settings: settingsFile,
    key: `${stem}.key.pem`,
    cert: `${stem}.cert.pem`,
    control: `${stem}.control.json`,
    trust: `${stem}.trust.json`,
  });
}

/** Options for {@linkcode defaultSettingsFile}; both default to the running process's. */
export interface DefaultSettingsFileOptions {
  /** Default `Deno.mainModule`. */
  mainModule?: string;
  /** Default `Deno.execPath()`. */
  execPath?: string;
}

/**
 * Where the settings file is when none is named. Run from source, it sits
 * beside the entry file as `portferry-<program>.yaml`. Compiled, it sits
 * beside the executable with the executable's name: `portferry-console`
 * (or `portferry-console.exe`) reads `portferry-console.yaml`.
 *
 * @example
 * ```ts
 * import { defaultSettingsFile } from "./paths.ts";
 * const fromSource = defaultSettingsFile("console", {
 *   mainModule: "file:///src/portferry/console.ts",
 *   execPath: "/usr/bin/deno",
 * });
 * if (fromSource !== "/src/portferry/portferry-console.yaml") throw new Error(fromSource);
 * const compiled = defaultSettingsFile("daemon", {
 *   mainModule: "file:///tmp/deno-compile-pfd/daemon.ts",
 *   execPath: "/opt/pf/pfd",
 * });
 * if (compiled !== "/opt/pf/pfd.yaml") throw new Error(compiled);
 * ```
 */
export function defaultSettingsFile(
  program: "console" | "daemon",
  options: DefaultSettingsFileOptions = {},
): string {
  const mainModule = options.mainModule ?? Deno.mainModule;
  const fromSource = mainModule.startsWith("file:") &&
    /\.[cm]?[jt]sx?$/.test(mainModule) &&
    !mainModule.includes("/deno-compile-");
  if (fromSource) {
    return join(dirname(fileURLToPath(mainModule)), `portferry-${program}.yaml`);
  }
  const execPath = options.execPath ?? Deno.execPath();
  const name = basename(execPath).replace(/\.exe$/i, "");
  return join(dirname(execPath), `${name}.yaml`);
}

/**
 * The text of a settings file, or null when there is no such file.
 *
 * @throws {ConfigError} when the file cannot be read, belongs to another
 * user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { readSettingsText } from "./paths.ts";
 * if (await readSettingsText("/no/such/dir/portferry-console.yaml") !== null) throw new Error("bad");
 * ```
 */
export async function readSettingsText(path: string): Promise<string | null> {
  try {
    return await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    if (err instanceof UnsafeFileError) throw new ConfigError(err.message, { cause: err });
    throw new ConfigError(`Cannot read settings file: ${errorMessage(err)}`, { path, cause: err });
  }
}

/**
 * Reads a shared token file, trimming white space around the token.
 *
 * @throws {ConfigError} naming the file when it cannot be read, holds no
 * token, belongs to another user (not root) or is writable by group or others.
 *
 * @example
 * ```ts
 * import { readTokenFile } from "./paths.ts";
 * const file = await Deno.makeTempFile();
 * await Deno.writeTextFile(file, "  s3cret\n");
 * if (await readTokenFile(file) !== "s3cret") throw new Error("bad");
 * await Deno.remove(file);
 * ```
 */
export async function readTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof UnsafeFileError) throw new ConfigError(err.message, { cause: err });
    throw new ConfigError(`Cannot read token file "${path}": ${errorMessage(err)}`, { cause: err });
  }
  const token = text.trim();
  if (token === "") {
    throw new ConfigError(
      `Cannot use token file "${path}": it is empty; put the shared token in it`,
    );
  }
  return token;
}

/**
 * Read the HTTP proxy's credentials (`USER:PASS` on the first line) from a
 * file only its owner can change, as `--proxy-auth-file` names it. The
 * password is never part of an error.
 *
 * @throws {ConfigError} when the file is unsafe, unreadable, or holds no `USER:PASS`.
 *
 * @example
 * ```ts
 * import { readProxyAuthFile } from "./paths.ts";
 * const file = await Deno.makeTempFile();
 * await Deno.writeTextFile(file, "ann:s3:cret\n", { mode: 0o600 });
 * const c = await readProxyAuthFile(file);
 * if (c.username !== "ann" || c.password !== "s3:cret") throw new Error("bad");
 * await Deno.remove(file);
 * ```
 */
export async function readProxyAuthFile(
  path: string,
): Promise<{ username: string; password: string }> {
  let text: string;
  try {
    text = await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof UnsafeFileError) throw new ConfigError(err.message, { cause: err });
    throw new ConfigError(`Cannot read proxy auth file "${path}": ${errorMessage(err)}`, {
      cause: err,
    });
  }
  const line = text.split(/\r?\n/).find((l) => l.trim() !== "")?.trim() ?? "";
  const colon = line.indexOf(":");
  if (colon <= 0) {
    throw new ConfigError(
      `Cannot use proxy auth file "${path}": expected one line USER:PASS`,
    );
  }
  return { username: line.slice(0, colon), password: line.slice(colon + 1) };
}
