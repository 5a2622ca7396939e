/**
 * Which HTTP proxy the Daemon dials through: `--proxy`, else `proxy:` in
 * the settings, else the environment as curl reads it; `none` in either
 * of the first two dials directly and ignores the environment. Credentials
 * from `--proxy-auth-file` (or `proxyAuthFile:`) replace any in the URL.
 *
 * @module
 */

import { type HostPort } from "../net/hostport.ts";
import { parseProxyUrl, type ProxyConfig, proxyFromEnv } from "../net/proxy.ts";
import { readProxyAuthFile } from "../settings/paths.ts";

/** What {@linkcode chooseProxy} decides from. */
export interface ProxyChoiceOptions {
  /** `--proxy`, as typed; undefined when not given. */
  readonly flag?: string;
  /** `--proxy-auth-file`; undefined when not given. */
  readonly authFile?: string;
  /** The settings' `proxy:` and `proxyAuthFile:`. */
  readonly settings: {
    readonly proxy: ProxyConfig | "none" | null;
    readonly proxyAuthFile: string | null;
  };
  /** Reads one environment variable. */
  readonly env: (name: string) => string | undefined;
  /** The Console, for `NO_PROXY`. */
  readonly console: HostPort;
}

/** The proxy to dial through (null: directly) and where the choice came from. */
export interface ProxyChoice {
  readonly proxy: ProxyConfig | null;
  /** `--proxy`, `settings`, the environment variable's name, or null when direct. */
  readonly source: string | null;
}

/**
 * Decide the proxy. Throws `TypeError` for a bad `--proxy` or proxy
 * variable, `ConfigError` for an unusable auth file; no message holds a
 * password.
 *
 * @example
 * ```ts
 * import { chooseProxy } from "./proxy_choice.ts";
 * const choice = await chooseProxy({
 *   flag: "none",
 *   settings: { proxy: null, proxyAuthFile: null },
 *   env: () => "http://proxy:3128",
 *   console: { host: "office", port: 7470 },
 * });
 * if (choice.proxy !== null) throw new Error("bad");
 * ```
 */
export async function chooseProxy(options: ProxyChoiceOptions): Promise<ProxyChoice> {
  const chosen = pick(options);
  if (chosen.proxy === null) return chosen;
  const file = options.authFile ?? options.settings.proxyAuthFile;
  if (file === null) return chosen;
  const { username, password } = await readProxyAuthFile(file);
  return { proxy: Object.freeze({ ...chosen.proxy, username, password }), source: chosen.source };
}

function pick(options: ProxyChoiceOptions): ProxyChoice {
  if (options.flag !== undefined) {
    if (options.flag === "none") return { proxy: null, source: null };
    return { proxy: parseProxyUrl(options.flag), source: "--proxy" };
  }
  const setting = options.settings.proxy;
  if (setting === "none") return { proxy: null, source: null };
  if (setting !== null) return { proxy: setting, source: "settings" };
  const fromEnv = proxyFromEnv(options.env, options.console.host, options.console.port);
  return fromEnv ? fromEnv : { proxy: null, source: null };
}
