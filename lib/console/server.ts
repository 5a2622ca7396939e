/**
 * Run the Console until a signal: a thin wrapper over {@linkcode Console}
 * for the entry points (console.ts, demo.ts).
 *
 * @module
 */

import { Console, type ConsoleOptions } from "./console.ts";

export { Console, type ConsoleOptions, type Decision } from "./console.ts";
export type { ConsoleStatus, PeerInfo, SessionState } from "./state.ts";

/** Options for {@linkcode runConsole}. */
export interface RunConsoleOptions extends ConsoleOptions {
  /** Aborted on exit (SIGINT/SIGTERM): drain, then stop. */
  readonly signal: AbortSignal;
  /** Aborted on force exit: stop now. */
  readonly forceSignal?: AbortSignal;
  /** Called once the Console serves, with its bound session address and the Console. */
  readonly onReady?: (address: string, console: Console) => void;
}

/**
 * Run the Console until `signal` aborts, then exit (drain; stop at once
 * when `forceSignal` aborts).
 *
 * @example
 * ```ts ignore
 * await runConsole({ settingsPath, log, out: console.log, daemonCommand, signal });
 * ```
 */
export async function runConsole(options: RunConsoleOptions): Promise<void> {
  const con = new Console(options);
  const address = await con.start();
  const force = options.forceSignal;
  const onForce = () => con.forceClose();
  force?.addEventListener("abort", onForce, { once: true });
  try {
    options.onReady?.(address, con);
    await new Promise<void>((resolve) => {
      if (options.signal.aborted) resolve();
      options.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  } finally {
    await con.close({ force: force?.aborted });
    force?.removeEventListener("abort", onForce);
  }
}
