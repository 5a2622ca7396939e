import assert from "node:assert/strict";
import { type Admission, decideAdmission, type Holder, type Newcomer } from "./admission.ts";

const A = "SHA256:aaaa";
const B = "SHA256:bbbb";

/** A newcomer with identity B and nothing that admits it unasked, plus `facts`. */
function b(facts: Partial<Newcomer> = {}): Newcomer {
  return {
    fingerprint: B,
    token: "none",
    autoAccept: false,
    trusted: false,
    acceptedBefore: false,
    ...facts,
  };
}

const pendingA: Holder = { fingerprint: A, state: "pending" };
const establishedA: Holder = { fingerprint: A, state: "established" };
const closingA: Holder = { fingerprint: A, state: "closing" };
const pendingB: Holder = { fingerprint: B, state: "pending" };
const establishedB: Holder = { fingerprint: B, state: "established" };

const admit = (
  displace: "none" | "own" | "pending",
  acceptedAs: string | null,
): Admission => ({ verdict: "admit", displace, acceptedAs } as Admission);
const busy = (state: string): Admission => ({
  verdict: "refuse",
  code: "busy",
  reason: `the Console is busy: it already has ${
    state === "established" ? "an" : "a"
  } ${state} session with another Daemon`,
});
const NEEDS_TOKEN: Admission = {
  verdict: "refuse",
  code: "token",
  reason: "this Console requires a token (--token-file)",
};
const WRONG_TOKEN: Admission = { verdict: "refuse", code: "token", reason: "wrong token" };

const table: [string, Holder | null, Newcomer, Admission][] = [
  // No session yet.
  ["an unknown Daemon waits for the operator", null, b(), admit("none", null)],
  ["auto-accept", null, b({ autoAccept: true }), admit("none", "auto-accept")],
  ["a trusted Daemon", null, b({ trusted: true }), admit("none", "trusted fingerprint")],
  [
    "a Daemon accepted earlier",
    null,
    b({ acceptedBefore: true }),
    admit("none", "accepted earlier in this run"),
  ],
  ["the right token", null, b({ token: "right" }), admit("none", "token")],
  ["the token wins over trust", null, b({ token: "right", trusted: true }), admit("none", "token")],
  ["no token", null, b({ token: "missing", trusted: true }), NEEDS_TOKEN],
  ["a wrong token", null, b({ token: "wrong", autoAccept: true }), WRONG_TOKEN],
  // Another Daemon is pending.
  ["an unknown Daemon is busy while one is pending", pendingA, b(), busy("pending")],
  [
    "a trusted Daemon takes a pending one's place",
    pendingA,
    b({ trusted: true }),
    admit("pending", "trusted fingerprint"),
  ],
  [
    "a Daemon accepted earlier takes a pending one's place",
    pendingA,
    b({ acceptedBefore: true }),
    admit("pending", "accepted earlier in this run"),
  ],
  [
    "a Daemon with the token takes a pending one's place",
    pendingA,
    b({ token: "right" }),
    admit("pending", "token"),
  ],
  [
    "with auto-accept on, a newcomer takes a pending one's place",
    pendingA,
    b({ autoAccept: true }),
    admit("pending", "auto-accept"),
  ],
  [
    "without the token nobody displaces a pending one",
    pendingA,
    b({ token: "wrong" }),
    WRONG_TOKEN,
  ],
  // Another Daemon is established or closing: nobody displaces it.
  ["an unknown Daemon is busy", establishedA, b(), busy("established")],
  ["a trusted Daemon is busy too", establishedA, b({ trusted: true }), busy("established")],
  [
    "even with the token and everything",
    establishedA,
    b({ token: "right", autoAccept: true, trusted: true, acceptedBefore: true }),
    busy("established"),
  ],
  ["a closing session is not displaced", closingA, b({ trusted: true }), busy("closing")],
  // The same Daemon comes back.
  [
    "its stale established session is taken over",
    establishedB,
    b(),
    admit("own", "took over its stale session"),
  ],
  [
    "its stale session with the token",
    establishedB,
    b({ token: "right" }),
    admit("own", "token"),
  ],
  ["its pending session is replaced, still pending", pendingB, b(), admit("own", null)],
  [
    "its pending session is replaced, trusted now",
    pendingB,
    b({ trusted: true }),
    admit("own", "trusted fingerprint"),
  ],
  ["the same Daemon without the token", establishedB, b({ token: "missing" }), NEEDS_TOKEN],
];

Deno.test("decideAdmission() refuses, admits, displaces and asks as the table says", () => {
  assert.ok(table.length > 20);
  for (const [name, holder, newcomer, want] of table) {
    assert.deepEqual(decideAdmission(holder, newcomer), want, name);
  }
});
