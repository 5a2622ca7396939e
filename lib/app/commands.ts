/**
 * What both programs' command sets share: the coded error a command
 * refuses with, which the control API answers with its HTTP status.
 *
 * @module
 */

/**
 * A command refused: `code` names why (for scripts), `status` is the HTTP
 * status the control API answers with.
 *
 * @example
 * ```ts
 * import { CommandError } from "./commands.ts";
 * const err = new CommandError("not-found", "Cannot kill connection 7: no such connection", { status: 404 });
 * if (err.code !== "not-found" || err.status !== 404) throw new Error("bad");
 * ```
 */
export class CommandError extends Error {
  /** Why, in one word: `bad-request`, `not-found`, `conflict`... */
  readonly code: string;
  /** The HTTP status the control API answers with. */
  readonly status: number;
  /** A refusal: `code` for scripts, `message` for people, `status` for the control API (default 400). */
  constructor(
    code: string,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "CommandError";
    this.code = code;
    this.status = options.status ?? 400;
  }
}
