/**
 * PFO changes on the running Console, one at a time and all or nothing:
 * check, bind what the change needs, save to the settings file, then serve.
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import { errorMessage } from "../core/errors.ts";
import { formatAddress } from "../net/hostport.ts";
import type { ResolvedPfo } from "../settings/pfo.ts";
import { type ConsoleSettings } from "../settings/schema.ts";
import { updateConsoleSettings } from "../settings/edit.ts";
import { type PfoChange, type PfoRequest, planPfoChange } from "./pfo_changes.ts";
import { PfoBindError, type PfoManager, type PfoStatus, samePfo } from "./pfos.ts";

/** Options for {@linkcode PfoEditor}. */
export interface PfoEditorOptions {
  readonly settingsPath: string;
  readonly pfos: PfoManager;
  /** The running settings. */
  readonly settings: () => ConsoleSettings;
  /** Keep the settings a change saved. */
  readonly saved: (settings: ConsoleSettings) => void;
  /** Why the settings file on disk is refused, or null. */
  readonly settingsError: () => string | null;
  /** One line on the operator's screen. */
  readonly out: (text: string) => void;
}

/**
 * Runs PFO changes in order.
 *
 * @example
 * ```ts ignore
 * const editor = new PfoEditor({ settingsPath, pfos, settings, saved, settingsError, out });
 * await editor.change({ command: "pfo/rm", request: { name: "web" } });
 * ```
 */
export class PfoEditor {
  readonly #o: PfoEditorOptions;
  /** PFO changes run one at a time: each binds, saves and applies before the next. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: PfoEditorOptions) {
    this.#o = options;
  }

  /** Make one change, after those queued before it. Resolves with the PFO after it (null: removed). */
  change(change: PfoRequest): Promise<PfoStatus | null> {
    const run = this.#queue.then(() => this.#apply(change));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** A refusal leaves the running PFOs and the file as they were. */
  async #apply(request: PfoRequest): Promise<PfoStatus | null> {
    const { pfos, settingsPath } = this.#o;
    const settingsError = this.#o.settingsError();
    if (settingsError !== null) {
      throw new CommandError(
        "conflict",
        `Cannot change PFOs: the settings file is invalid (${settingsError}); fix it first, the Console keeps its running settings`,
      );
    }
    const running = this.#o.settings().pfos;
    const change = planPfoChange(request, running);
    const save = async () => {
      try {
        this.#o.saved(await updateConsoleSettings(settingsPath, change.edit));
      } catch (err) {
        throw new CommandError("conflict", errorMessage(err), { cause: err });
      }
    };
    try {
      if (change.next === null) {
        await save();
        pfos.remove(change.name);
      } else {
        await pfos.change(change.next, save);
      }
    } catch (err) {
      if (!(err instanceof PfoBindError)) throw err;
      throw this.#bindRefusal(request, change, err);
    }
    // The file may hold hand edits not yet reloaded: run what it says now. When it holds the
    // running PFOs and this change alone, all is running already: skip a pass over every PFO.
    const saved = this.#o.settings().pfos;
    if (!onlyChanged(running, saved, change)) await pfos.apply(saved);
    this.#o.out(this.#describe(change));
    return change.next === null ? null : pfos.status(change.name) ?? null;
  }

  #bindRefusal(request: PfoRequest, change: PfoChange, err: PfoBindError): CommandError {
    const kept = change.before === null
      ? ""
      : change.before.enabled
      ? `it keeps listening on ${this.#listenText(change.before)}; `
      : "it stays disabled; ";
    return new CommandError(
      "conflict",
      `Cannot ${change.verb} PFO "${change.name}": ${err.message}; ${kept}nothing was saved` +
        (request.command === "pfo/add" ? " (add --disabled to save it without listening)" : ""),
      { cause: err },
    );
  }

  /** Where a PFO listens, with the port the system chose for port 0. */
  #listenText(pfo: ResolvedPfo): string {
    const s = this.#o.pfos.status(pfo.name);
    return s && s.bound.length === 1 && s.listeners === 1
      ? s.bound[0]
      : formatAddress(pfo.listenAddr);
  }

  /** One line on the Console's screen for a change made through a command. */
  #describe(change: PfoChange): string {
    const { name, next, before } = change;
    if (next === null) return `PFO "${name}" removed`;
    if (!next.enabled) {
      return change.verb === "add" ? `PFO "${name}" added, disabled` : `PFO "${name}" disabled`;
    }
    const where = this.#listenText(next);
    if (change.verb === "add") return `PFO "${name}" added, listening on ${where}`;
    if (change.verb === "enable") return `PFO "${name}" enabled, listening on ${where}`;
    const parts: string[] = [];
    if (before?.listen !== next.listen) parts.push(`listens on ${where}`);
    if (before?.target !== next.target) parts.push(`forwards to ${next.target}`);
    return `PFO "${name}" now ${parts.length > 0 ? parts.join(" and ") : "is unchanged"}`;
  }
}

/**
 * Whether `after` holds the very PFO objects of `before` (a settings file
 * saved from the parse the running settings came from) with only `change`
 * made: the changed PFO in place, appended, or gone. Identity, not value: a
 * hand edit read from the file gives new objects, and so a full apply.
 */
function onlyChanged(
  before: readonly ResolvedPfo[],
  after: readonly ResolvedPfo[],
  change: PfoChange,
): boolean {
  const { name, next } = change;
  const expected = before.length + (next === null ? -1 : change.before === null ? 1 : 0);
  if (after.length !== expected) return false;
  let j = 0; // Index in `before` of the PFO `after[i]` must be.
  let seen = false;
  for (const pfo of after) {
    if (before[j]?.name === name && next === null) j++; // The removed PFO.
    if (pfo.name === name) {
      if (next === null || seen || !samePfo(pfo, next)) return false;
      seen = true;
      if (change.before !== null) j++;
      continue;
    }
    if (pfo !== before[j++]) return false;
  }
  return next === null || seen;
}
