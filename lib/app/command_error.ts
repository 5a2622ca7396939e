/**
 * Coded errors for a program's commands, and the one place their codes map
 * to the control API's HTTP statuses.
 *
 * @module
 */

import { ControlError } from "./control.ts";

/** Why a command failed. */
export type CommandErrorCode =
  | "bad-request"
  | "not-found"
  | "conflict"
  | "no-session"
  | "failed";

/** The HTTP status the control API answers for each code. */
export const COMMAND_ERROR_STATUS: Readonly<Record<CommandErrorCode, number>> = Object.freeze({
  "bad-request": 400,
  "not-found": 404,
  "conflict": 409,
  "no-session": 409,
  "failed": 502,
});

/** Options for {@linkcode CommandError}. */
export interface CommandErrorOptions {
  /** What the command did before it failed, for the caller (e.g. a failed resolve). */
  readonly result?: unknown;
  /** The error that caused it. */
  readonly cause?: unknown;
}

/**
 * A command refused or failed: its `code` says why; its message says what to do.
 *
 * @example
 * ```ts
 * import { CommandError } from "./command_error.ts";
 * const err = new CommandError("not-found", "Cannot find PFO \"web\": see `pfo list`");
 * if (err.status !== 404 || err.code !== "not-found") throw err;
 * ```
 */
export class CommandError extends ControlError {
  /** Why it failed. */
  readonly code: CommandErrorCode;

  /** An error with `code`, answered with that code's HTTP status. */
  constructor(code: CommandErrorCode, message: string, options: CommandErrorOptions = {}) {
    super(message, { status: COMMAND_ERROR_STATUS[code], ...options });
    this.name = "CommandError";
    this.code = code;
  }
}
