/**
 * What a `pfo add|edit|enable|disable|rm` command changes, checked against
 * the PFOs there are: the same checks whether the Console runs (its command
 * set) or not (the offline commands then edit the settings file itself).
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import { errorMessage } from "../core/errors.ts";
import {
  findListenClash,
  listenClashMessage,
  type PfoSpec,
  type Proto,
  type ResolvedPfo,
  resolvePfo,
} from "../settings/pfo.ts";
import type { ConsoleEdit } from "../settings/edit.ts";

/** A PFO command that changes something, as the control API names it. */
export type PfoCommand = "pfo/add" | "pfo/edit" | "pfo/enable" | "pfo/disable" | "pfo/rm";

/** `pfo add`: the whole new PFO. */
export interface PfoAddRequest {
  /** Unique name, 1–64 chars of `A-Za-z0-9._-`. */
  readonly name: string;
  /** `tcp`, `udp` or `socks`. */
  readonly proto: Proto;
  /** `[HOST:]PORT` or `[HOST:]PORT-PORT` on the Console. */
  readonly listen: string;
  /** `HOST:PORT` or `HOST:PORT-PORT` on the Daemon's network; null for `socks`. */
  readonly target: string | null;
  /** Whether the Console listens for it at once. */
  readonly enabled: boolean;
  /** Client addresses allowed (IPs or CIDRs); empty allows everyone. */
  readonly clients: readonly string[];
}

/** `pfo edit`: a new listen address, a new target, or both. */
export interface PfoEditRequest {
  /** The PFO to change. */
  readonly name: string;
  /** The new `[HOST:]PORT[-PORT]`; absent keeps the old one. */
  readonly listen?: string;
  /** The new `HOST:PORT[-PORT]`; absent keeps the old one. */
  readonly target?: string;
}

/** `pfo enable|disable|rm`: the PFO's name. */
export interface PfoNameRequest {
  /** The PFO's name. */
  readonly name: string;
}

/** A PFO command with its request, checked by the command set's request readers. */
export type PfoRequest =
  | { readonly command: "pfo/add"; readonly request: PfoAddRequest }
  | { readonly command: "pfo/edit"; readonly request: PfoEditRequest }
  | {
    readonly command: "pfo/enable" | "pfo/disable" | "pfo/rm";
    readonly request: PfoNameRequest;
  };

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

/**
 * Check a PFO command against `pfos` (the PFOs there are) and say what it
 * changes. One pass over `pfos`: 10,000 PFOs cost little.
 *
 * @throws {CommandError} "bad-request" for a bad value, "not-found" for an
 * unknown NAME, "conflict" for a NAME taken or a listen address another PFO holds.
 *
 * @example
 * ```ts
 * import { planPfoChange } from "./pfo_changes.ts";
 * const change = planPfoChange({
 *   command: "pfo/add",
 *   request: { name: "web", proto: "tcp", listen: "8080", target: "h:80", enabled: true, clients: [] },
 * }, []);
 * if (change.edit.op !== "addPfo" || change.next?.listenAddr.port !== 8080) throw new Error("bad");
 * ```
 */
export function planPfoChange(change: PfoRequest, pfos: readonly ResolvedPfo[]): PfoChange {
  if (change.command === "pfo/add") return planAdd(change.request, pfos);
  const name = change.request.name;
  const before = pfos.find((p) => p.name === name);
  if (before === undefined) {
    throw new CommandError("not-found", `Cannot find PFO "${name}": see \`pfo list\``);
  }
  if (change.command === "pfo/rm") {
    return { verb: "remove", name, edit: { op: "removePfo", name }, next: null, before };
  }
  if (change.command === "pfo/edit") {
    const changes: { listen?: string; target?: string } = {};
    if (change.request.listen !== undefined) changes.listen = change.request.listen;
    if (change.request.target !== undefined) changes.target = change.request.target;
    const next = checked("edit", { ...before, ...changes }, pfos);
    return { verb: "edit", name, edit: { op: "editPfo", name, changes }, next, before };
  }
  const enabled = change.command === "pfo/enable";
  const verb = enabled ? "enable" : "disable";
  const next = checked(verb, { ...before, enabled }, pfos);
  return { verb, name, edit: { op: "setPfoEnabled", name, enabled }, next, before };
}

function planAdd(request: PfoAddRequest, pfos: readonly ResolvedPfo[]): PfoChange {
  const { name } = request;
  if (pfos.some((p) => p.name === name)) {
    throw new CommandError(
      "conflict",
      `Cannot add PFO "${name}": the name is taken; pick another or use \`pfo edit\``,
    );
  }
  const spec: PfoSpec = { ...request, clients: [...request.clients] };
  const next = checked("add", spec, pfos);
  return { verb: "add", name, edit: { op: "addPfo", pfo: spec }, next, before: null };
}

function checked(verb: string, spec: PfoSpec, pfos: readonly ResolvedPfo[]): ResolvedPfo {
  let pfo: ResolvedPfo;
  try {
    pfo = resolvePfo(spec);
  } catch (err) {
    throw new CommandError("bad-request", errorMessage(err), { cause: err });
  }
  const holder = findListenClash(pfo, pfos);
  if (holder !== undefined) {
    throw new CommandError("conflict", listenClashMessage(verb, pfo, holder));
  }
  return pfo;
}
