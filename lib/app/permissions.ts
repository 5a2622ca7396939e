/**
 * The runtime flags each program runs with: the one definition that
 * `tools/compile.ts` bakes into the binaries, that `--version` prints and
 * that a service runs `deno run` with. The `console` and `daemon` tasks in
 * deno.json carry the same words (a test checks that they agree, as
 * deno.json cannot import them).
 *
 * `--allow-run` names the only programs `service install|uninstall|status`
 * run, by absolute path (a bare name would make Deno look each one up, and
 * complain, at every start on the systems that lack it).
 *
 * @module
 */

/** The programs. */
export type ProgramName = "console" | "daemon";

const ENV = "--allow-env=LOG_TOKENS,LOG_STREAM,NO_COLOR,FORCE_COLOR,CLICOLOR_FORCE,TERM";
/** The proxy variables the Daemon reads as curl does (`--proxy` overrides them). */
const PROXY_ENV = "HTTPS_PROXY,https_proxy,ALL_PROXY,all_proxy,NO_PROXY,no_proxy";
/** The system programs `service` subcommands run, by absolute path. */
export const SYSTEM_PROGRAMS = Object.freeze({
  systemctl: "/usr/bin/systemctl",
  launchctl: "/bin/launchctl",
  chown: "/usr/sbin/chown",
  schtasks: "C:/Windows/System32/schtasks.exe",
  icacls: "C:/Windows/System32/icacls.exe",
});

const RUN = `--allow-run=${Object.values(SYSTEM_PROGRAMS).join(",")}`;

/** `deno run` flags per program, in the tasks' order, `--no-prompt` first. */
export const RUNTIME_FLAGS: Readonly<Record<ProgramName, readonly string[]>> = Object.freeze({
  console: Object.freeze([
    "--no-prompt",
    "--v8-flags=--optimize-for-size",
    "--unstable-net",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-sys=hostname,uid,gid,userInfo",
    ENV,
    RUN,
  ]),
  daemon: Object.freeze([
    "--no-prompt",
    "--v8-flags=--max-semi-space-size=4",
    "--unstable-net",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-sys=hostname,uid,gid,userInfo",
    `${ENV},${PROXY_ENV}`,
    RUN,
  ]),
});

/**
 * The permission flags alone (`--allow-*`, `--deny-*`), as `--version`
 * prints them.
 *
 * @example
 * ```ts
 * import { permissionFlags } from "./permissions.ts";
 * if (permissionFlags("daemon")[0] !== "--allow-net") throw new Error("bad");
 * ```
 */
export function permissionFlags(program: ProgramName): string[] {
  return RUNTIME_FLAGS[program].filter((f) => /^--(allow|deny)-/.test(f));
}

/**
 * Whether the running program is a `deno compile` binary: its runtime file
 * is not named `deno` (or `deno.exe`).
 *
 * @example
 * ```ts
 * import { isCompiled } from "./permissions.ts";
 * if (!isCompiled("/opt/pf/portferry-daemon") || isCompiled("/usr/bin/deno")) throw new Error("bad");
 * ```
 */
export function isCompiled(execPath: string): boolean {
  return execPath.split(/[\\/]/).pop()!.replace(/\.exe$/i, "") !== "deno";
}
