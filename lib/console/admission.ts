/**
 * Who may hold the Console's one session: the admission decision on its own,
 * with no sockets, so every case reads as a row of a table.
 *
 * A Daemon without the Console's token is refused. The same Daemon identity
 * replaces its own stale session. A Daemon the Console admits without asking
 * (the token, auto-accept, a trusted fingerprint, accepted earlier in this
 * run) takes the place of a pending Daemon nobody has accepted; any other
 * Daemon is told "busy" while a session is pending or established.
 *
 * @module
 */

/** The session the Console holds now. */
export interface Holder {
  /** The holding Daemon's identity fingerprint. */
  readonly fingerprint: string;
  readonly state: "pending" | "established" | "closing";
}

/** What the Console knows about a Daemon that just proved its identity. */
export interface Newcomer {
  readonly fingerprint: string;
  /** "none" when the Console has no token; else how the Daemon's token compares. */
  readonly token: "none" | "right" | "missing" | "wrong";
  /** Auto-accept is on (settings or `--auto-accept`). */
  readonly autoAccept: boolean;
  /** The fingerprint is in the trust store or the settings' `trusted` list. */
  readonly trusted: boolean;
  /** The operator (or a rule) accepted this identity earlier in this run, not withdrawn since. */
  readonly acceptedBefore: boolean;
}

/** How a Daemon is accepted without the operator. */
export type AcceptedAs =
  | "token"
  | "took over its stale session"
  | "auto-accept"
  | "trusted fingerprint"
  | "accepted earlier in this run";

/** The outcome for one newcomer. */
export type Admission =
  | {
    readonly verdict: "refuse";
    readonly code: "token" | "busy";
    /** Sent to the Daemon. */
    readonly reason: string;
  }
  | {
    readonly verdict: "admit";
    /**
     * What becomes of the holder: nothing (there is none), its own stale
     * session is replaced ("own"), or a pending other Daemon gives up its
     * place ("pending").
     */
    readonly displace: "none" | "own" | "pending";
    /** How the session is accepted without the operator, or null: it waits for the operator. */
    readonly acceptedAs: AcceptedAs | null;
  };

/**
 * Decide what to do with a Daemon that has proved its identity, given the
 * session the Console holds now (or null).
 *
 * @example
 * ```ts
 * import { decideAdmission } from "./admission.ts";
 * const newcomer = {
 *   fingerprint: "SHA256:b", token: "none", autoAccept: false, trusted: true, acceptedBefore: false,
 * } as const;
 * const d = decideAdmission({ fingerprint: "SHA256:a", state: "pending" }, newcomer);
 * if (d.verdict !== "admit" || d.displace !== "pending") throw new Error(JSON.stringify(d));
 * ```
 */
export function decideAdmission(holder: Holder | null, newcomer: Newcomer): Admission {
  // The token first: a Daemon without it learns nothing, and cannot displace a session.
  if (newcomer.token === "missing") {
    return {
      verdict: "refuse",
      code: "token",
      reason: "this Console requires a token (--token-file)",
    };
  }
  if (newcomer.token === "wrong") {
    return { verdict: "refuse", code: "token", reason: "wrong token" };
  }
  const unasked = acceptedUnasked(newcomer);
  if (holder === null) return { verdict: "admit", displace: "none", acceptedAs: unasked };
  if (holder.fingerprint === newcomer.fingerprint) {
    const acceptedAs = newcomer.token === "right"
      ? "token"
      : holder.state === "established"
      ? "took over its stale session"
      : unasked;
    return { verdict: "admit", displace: "own", acceptedAs };
  }
  if (holder.state === "pending" && unasked !== null) {
    return { verdict: "admit", displace: "pending", acceptedAs: unasked };
  }
  return {
    verdict: "refuse",
    code: "busy",
    reason: `the Console is busy: it already has ${
      holder.state === "established" ? "an" : "a"
    } ${holder.state} session with another Daemon`,
  };
}

function acceptedUnasked(newcomer: Newcomer): AcceptedAs | null {
  if (newcomer.token === "right") return "token";
  if (newcomer.autoAccept) return "auto-accept";
  if (newcomer.trusted) return "trusted fingerprint";
  if (newcomer.acceptedBefore) return "accepted earlier in this run";
  return null;
}
