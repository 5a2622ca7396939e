/**
 * Hand edits of the Console's settings file, applied live: a valid file
 * replaces the running settings, an invalid one is refused and the Console
 * keeps what runs.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { ResolvedPfo } from "../settings/pfo.ts";
import { type ConsoleSettings, parseConsoleSettings } from "../settings/schema.ts";
import { watchSettings } from "../settings/watch.ts";

/** Options for {@linkcode watchConsoleSettings}. */
export interface ConsoleSettingsWatchOptions {
  readonly settingsPath: string;
  /** The text the running settings came from. */
  readonly knownText: string | null;
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** Operator display. */
  readonly out: (text: string) => void;
  /** The running settings. */
  readonly current: () => ConsoleSettings;
  /** Run the new settings. */
  readonly reloaded: (next: ConsoleSettings) => Promise<void>;
  /** The file on disk is invalid: why. */
  readonly refused: (message: string) => void;
}

/** Watch the settings file until `signal` aborts; failures of the watch are logged. */
export function watchConsoleSettings(options: ConsoleSettingsWatchOptions): void {
  const { log, settingsPath } = options;
  watchSettings(settingsPath, {
    parse: parseConsoleSettings,
    knownText: options.knownText,
    signal: options.signal,
    onChange: async (next) => {
      const changed = pfosChanged(options.current().pfos, next.pfos);
      await options.reloaded(next);
      log.info("settings reloaded", { pfos: next.pfos.length });
      options.out(
        `Settings reloaded from ${settingsPath}: ${
          changed === 0 ? "no PFO" : changed === 1 ? "1 PFO" : `${changed} PFOs`
        } changed`,
      );
    },
    onError: (err) => {
      options.refused(err.message);
      log.error("settings file is invalid, keeping the running settings", { error: err.message });
    },
  }).catch((err) => log.error("settings watch stopped", { error: errorMessage(err) }));
}

/**
 * How many PFOs a reload adds, removes or changes. One pass over each list.
 *
 * @example
 * ```ts
 * import { pfosChanged } from "./settings_reload.ts";
 * import { resolvePfo } from "../settings/pfo.ts";
 * const web = resolvePfo({ name: "web", proto: "tcp", listen: "8080", target: "h:80", enabled: true, clients: [] });
 * if (pfosChanged([web], [{ ...web, enabled: false }]) !== 1) throw new Error("bad");
 * ```
 */
export function pfosChanged(
  before: readonly ResolvedPfo[],
  after: readonly ResolvedPfo[],
): number {
  const key = (p: ResolvedPfo) =>
    JSON.stringify([p.proto, p.listen, p.target, p.enabled, p.clients]);
  const old = new Map(before.map((p) => [p.name, key(p)]));
  let changed = 0;
  for (const p of after) {
    const was = old.get(p.name);
    if (was !== key(p)) changed++;
    old.delete(p.name);
  }
  return changed + old.size;
}
