/**
 * Domain errors that callers catch by class. Everything else uses the
 * built-in classes by meaning. Every error carries a `cause` where one exists.
 *
 * @module
 */

import type { CloseCode, OpenErrorCode, RejectCode } from "./protocol.ts";

/**
 * The peer broke the wire protocol: a bad frame, an unknown tag, a message its
 * role may not send. The session that saw it closes; nothing else is harmed.
 *
 * @example
 * ```ts
 * import { ProtocolError } from "./errors.ts";
 * const err = new ProtocolError("Cannot decode frame: unknown tag 99");
 * if (err.name !== "ProtocolError") throw err;
 * ```
 */
export class ProtocolError extends Error {
  /** An error with `message` ("Cannot X: detail") and an optional `cause`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/**
 * A session could not be set up: the pin did not match, the Console refused,
 * the versions differ. `code` says which, for exit codes and display.
 *
 * @example
 * ```ts
 * import { HandshakeError } from "./errors.ts";
 * const err = new HandshakeError("fingerprint", "Cannot trust Console: fingerprint mismatch");
 * if (err.code !== "fingerprint") throw err;
 * ```
 */
export class HandshakeError extends Error {
  /** What went wrong: the Console's reject code, or a failure on this side. */
  readonly code: RejectCode | "fingerprint" | "timeout" | "refused" | "tls" | "closed" | "proxy";
  /** An error with its `code`, a `message` ("Cannot X: detail") and an optional `cause`. */
  constructor(code: HandshakeError["code"], message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HandshakeError";
    this.code = code;
  }
}

/**
 * The session ended while something still waited on it.
 *
 * @example
 * ```ts
 * import { SessionClosedError } from "./errors.ts";
 * const err = new SessionClosedError("closed", "Cannot send: session closed");
 * if (err.code !== "closed") throw err;
 * ```
 */
export class SessionClosedError extends Error {
  /** Why the session ended. */
  readonly code: CloseCode;
  /** An error with the session's close `code`, a `message` and an optional `cause`. */
  constructor(code: CloseCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SessionClosedError";
    this.code = code;
  }
}

/**
 * The Daemon could not reach a stream's target.
 *
 * @example
 * ```ts
 * import { OpenError } from "./errors.ts";
 * const err = new OpenError("refused", "Cannot connect to \"db:5432\": connection refused");
 * if (err.code !== "refused") throw err;
 * ```
 */
export class OpenError extends Error {
  /** Why the target could not be reached, as the wire codes it. */
  readonly code: OpenErrorCode;
  /** An error with its `code`, a `message` and an optional `cause`. */
  constructor(code: OpenErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OpenError";
    this.code = code;
  }
}

/**
 * A settings file or a command-line value is wrong. `path`, `line` and
 * `column` point at it when known (1-based).
 *
 * @example
 * ```ts
 * import { ConfigError } from "./errors.ts";
 * const err = new ConfigError("Cannot read settings: unknown key \"colour\"", { path: "a.yaml", line: 3, column: 1 });
 * if (!err.message.startsWith("a.yaml:3:1: ")) throw err;
 * ```
 */
export class ConfigError extends SyntaxError {
  /** The file the wrong value is in, when it came from a file. */
  readonly path?: string;
  /** The line of the wrong value, 1-based, when known. */
  readonly line?: number;
  /** The column of the wrong value, 1-based, when known. */
  readonly column?: number;
  /** An error whose message starts with `path:line:column: ` when `where` gives them. */
  constructor(
    message: string,
    where: { path?: string; line?: number; column?: number; cause?: unknown } = {},
  ) {
    const prefix = where.path === undefined
      ? ""
      : where.line === undefined
      ? `${where.path}: `
      : `${where.path}:${where.line}:${where.column ?? 1}: `;
    super(prefix + message, { cause: where.cause });
    this.name = "ConfigError";
    this.path = where.path;
    this.line = where.line;
    this.column = where.column;
  }
}

/**
 * A permission flag is missing. The message names the flag to add.
 *
 * @example
 * ```ts
 * import { permissionHint } from "./errors.ts";
 * const msg = permissionHint(new Deno.errors.NotCapable("Requires net access to \"a:1\""), "--allow-net");
 * if (!msg.includes("--allow-net")) throw new Error(msg);
 * ```
 */
export function permissionHint(err: unknown, flag: string): string {
  const detail = err instanceof Error ? err.message : String(err);
  return `${detail} (run with ${flag})`;
}

/**
 * The message of an unknown thrown value, for logs.
 *
 * @example
 * ```ts
 * import { errorMessage } from "./errors.ts";
 * if (errorMessage(new Error("x")) !== "x") throw new Error("bad");
 * ```
 */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Close a socket, listener or file, ignoring that it may be closed already.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./errors.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * closeQuietly(listener);
 * closeQuietly(listener); // a second close throws nothing
 * ```
 */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}
