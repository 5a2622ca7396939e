/**
 * What a `pfo add|edit|enable|disable|rm` command changes, checked against
 * the PFOs there are: the same checks whether the Console runs (its control
 * handlers) or not (the CLI then edits the settings file itself).
 *
 * @module
 */

import { ControlError } from "../app/control.ts";
import { errorMessage } from "../core/errors.ts";
import {
  findListenClash,
  listenClashMessage,
  type PfoSpec,
  type ResolvedPfo,
  resolvePfo,
  validatePfoName,
} from "../settings/pfo.ts";
import type { ConsoleEdit } from "../settings/edit.ts";

/** A PFO command, as the control API names it. */
export type PfoCommand = "pfo/add" | "pfo/edit" | "pfo/enable" | "pfo/disable" | "pfo/rm";

/** A checked change, ready to save and apply. */
export interface PfoChange {
  /** The verb for messages: add, edit, enable, disable, remove. */
  readonly verb: string;
  readonly name: string;
  /** The settings edit that makes it. */
  readonly edit: ConsoleEdit;
  /** The PFO after the change; null when it is removed. */
  readonly next: ResolvedPfo | null;
  /** The PFO before the change; null when it is new. */
  readonly before: ResolvedPfo | null;
}

/** Whether `command` is one of the PFO commands that change something. */
export function isPfoCommand(command: string): command is PfoCommand {
  return ["pfo/add", "pfo/edit", "pfo/enable", "pfo/disable", "pfo/rm"].includes(command);
}

/**
 * Check a PFO command's `body` against `pfos` (the PFOs there are) and say
 * what it changes. One pass over `pfos`: 10,000 PFOs cost little.
 *
 * @throws {ControlError} 400 for a bad value, 404 for an unknown NAME, 409
 * for a NAME taken or a listen address another PFO holds.
 *
 * @example
 * ```ts
 * import { planPfoChange } from "./pfo_changes.ts";
 * const change = planPfoChange("pfo/add", { name: "web", listen: "8080", target: "h:80" }, []);
 * if (change.edit.op !== "addPfo" || change.next?.listenAddr.port !== 8080) throw new Error("bad");
 * ```
 */
export function planPfoChange(
  command: PfoCommand,
  body: Record<string, unknown>,
  pfos: readonly ResolvedPfo[],
): PfoChange {
  const name = String(body.name ?? "");
  if (command === "pfo/add") return planAdd(name, body, pfos);
  const before = pfos.find((p) => p.name === name);
  if (before === undefined) {
    throw new ControlError(`Cannot find PFO "${name}": see \`pfo list\``, { status: 404 });
  }
  if (command === "pfo/rm") {
    return { verb: "remove", name, edit: { op: "removePfo", name }, next: null, before };
  }
  if (command === "pfo/edit") {
    const changes: { listen?: string; target?: string } = {};
    if (body.listen !== undefined) changes.listen = String(body.listen);
    if (body.target !== undefined) changes.target = String(body.target);
    if (Object.keys(changes).length === 0) {
      throw new ControlError(`Cannot edit PFO "${name}": give --listen and/or --target`, {
        status: 400,
      });
    }
    const next = checked("edit", { ...before, ...changes }, pfos);
    return { verb: "edit", name, edit: { op: "editPfo", name, changes }, next, before };
  }
  const enabled = command === "pfo/enable";
  const verb = enabled ? "enable" : "disable";
  const next = checked(verb, { ...before, enabled }, pfos);
  return { verb, name, edit: { op: "setPfoEnabled", name, enabled }, next, before };
}

function planAdd(
  name: string,
  body: Record<string, unknown>,
  pfos: readonly ResolvedPfo[],
): PfoChange {
  const spec: PfoSpec = {
    name,
    proto: body.proto === undefined ? "tcp" : String(body.proto) as PfoSpec["proto"],
    listen: String(body.listen),
    target: body.target === undefined || body.target === null ? null : String(body.target),
    enabled: body.enabled !== false,
    clients: Array.isArray(body.clients) ? body.clients.map(String) : [],
  };
  try {
    validatePfoName(name);
  } catch (err) {
    throw new ControlError(errorMessage(err), { status: 400 });
  }
  if (pfos.some((p) => p.name === name)) {
    throw new ControlError(
      `Cannot add PFO "${name}": the name is taken; pick another or use \`pfo edit\``,
      { status: 409 },
    );
  }
  const next = checked("add", spec, pfos);
  return { verb: "add", name, edit: { op: "addPfo", pfo: spec }, next, before: null };
}

function checked(verb: string, spec: PfoSpec, pfos: readonly ResolvedPfo[]): ResolvedPfo {
  let pfo: ResolvedPfo;
  try {
    pfo = resolvePfo(spec);
  } catch (err) {
    throw new ControlError(errorMessage(err), { status: 400 });
  }
  const holder = findListenClash(pfo, pfos);
  if (holder !== undefined) {
    throw new ControlError(listenClashMessage(verb, pfo, holder), { status: 409 });
  }
  return pfo;
}
