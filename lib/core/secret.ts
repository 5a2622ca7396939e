/**
 * Comparing secrets (control tokens, SOCKS credentials, admission tokens) in
 * time that depends neither on where they differ nor on their lengths: each
 * side is reduced to a SHA-256 digest and the fixed-length digests are
 * compared with `node:crypto`'s `timingSafeEqual`.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text, "utf8").digest();
}

function digests(parts: readonly string[]): Uint8Array {
  const out = new Uint8Array(32 * parts.length);
  parts.forEach((part, i) => out.set(digest(part), 32 * i));
  return out;
}

/**
 * Whether two secrets are equal, in time that does not depend on where or
 * whether they differ.
 *
 * @example
 * ```ts
 * import { secretEquals } from "./secret.ts";
 * if (!secretEquals("abc", "abc") || secretEquals("abc", "abd")) throw new Error("bad");
 * ```
 */
export function secretEquals(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** A user name and password, as SOCKS username/password authentication carries them. */
export interface Credentials {
  /** The user name. */
  readonly username: string;
  /** The password; never logged. */
  readonly password: string;
}

/**
 * Whether `given` matches `expected`, both fields compared together in one
 * constant-time comparison: a wrong user name takes as long as a wrong
 * password, so neither can be guessed on its own.
 *
 * @example
 * ```ts
 * import { credentialsEqual } from "./secret.ts";
 * const expected = { username: "alice", password: "s3cret" };
 * if (!credentialsEqual({ username: "alice", password: "s3cret" }, expected)) throw new Error("bad");
 * if (credentialsEqual({ username: "bob", password: "s3cret" }, expected)) throw new Error("bad");
 * ```
 */
export function credentialsEqual(given: Credentials, expected: Credentials): boolean {
  return timingSafeEqual(
    digests([given.username, given.password]),
    digests([expected.username, expected.password]),
  );
}
