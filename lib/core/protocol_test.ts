import assert from "node:assert/strict";
import {
  type DaemonFacts,
  daemonFactsProblem,
  sanitizeDaemonFacts,
  SESSION_ID_PATTERN,
} from "./protocol.ts";

const OK: DaemonFacts = { host: "db01", user: "ann", os: "linux" };

Deno.test("daemonFactsProblem() accepts the host names, users and OS names real machines have", () => {
  const cases: Partial<DaemonFacts>[] = [
    { host: "db01.corp.example" },
    { host: "Johns-MacBook-Pro.local" },
    { host: "DESKTOP_7Q2" },
    { host: "a".repeat(253) },
    { user: "root" },
    { user: "CORP\\ann" },
    { user: "ann@corp.example" },
    { user: "DESKTOP-7Q2$" },
    { user: "o'brien" },
    { user: "José Díaz" },
    { user: "日本語ユーザー" },
    { user: "u".repeat(128) },
    { os: "windows" },
    { os: "darwin" },
    { os: "freebsd" },
  ];
  for (const change of cases) {
    assert.equal(daemonFactsProblem({ ...OK, ...change }), null, JSON.stringify(change));
  }
});

Deno.test("daemonFactsProblem() names the fact that breaks the rules, never its value", () => {
  const cases: [Partial<DaemonFacts>, string][] = [
    [{ host: "" }, "host"],
    [{ host: "db01\x1b[2J" }, "host"],
    [{ host: "db 01" }, "host"],
    [{ host: "a".repeat(254) }, "host"],
    [{ host: "db01\u202e" }, "host"],
    [{ user: "" }, "user"],
    [{ user: " ann" }, "user"],
    [{ user: "ann " }, "user"],
    [{ user: "ann\nSession established" }, "user"],
    [{ user: "ann\u2028" }, "user"],
    [{ user: "ann\u200f" }, "user"],
    [{ user: "ann\x9b2J" }, "user"],
    [{ user: "ann;rm" }, "user"],
    [{ user: "u".repeat(129) }, "user"],
    [{ os: "Linux" }, "os"],
    [{ os: "linux\u2066" }, "os"],
    [{ os: "" }, "os"],
    [{ os: "o".repeat(33) }, "os"],
  ];
  for (const [change, key] of cases) {
    const problem = daemonFactsProblem({ ...OK, ...change }) ?? "";
    assert.ok(
      problem?.startsWith(`the Daemon's ${key} must be`),
      `${JSON.stringify(change)}: ${problem}`,
    );
    assert.ok(!problem.includes(Object.values(change)[0] || "\0"), problem);
  }
});

Deno.test("sanitizeDaemonFacts() makes any host, user and OS fit the rules", () => {
  const cases: [DaemonFacts, DaemonFacts][] = [
    [OK, OK],
    [{ host: "café.lan", user: "CORP\\ann", os: "Linux" }, {
      host: "caf-.lan",
      user: "CORP\\ann",
      os: "linux",
    }],
    [{ host: "db01\x1b[2J\n", user: " ann\u202e ", os: "windows\u2028" }, {
      host: "db01--2J-",
      user: "ann_",
      os: "windows",
    }],
    [{ host: "", user: "   ", os: "???" }, { host: "unknown", user: "unknown", os: "unknown" }],
    [{ host: "h".repeat(400), user: "u".repeat(400), os: "o".repeat(40) }, {
      host: "h".repeat(253),
      user: "u".repeat(128),
      os: "o".repeat(32),
    }],
  ];
  for (const [given, want] of cases) {
    const got = sanitizeDaemonFacts(given);
    assert.deepEqual(got, want, JSON.stringify(given));
    assert.equal(daemonFactsProblem(got), null, JSON.stringify(got));
  }
});

Deno.test("SESSION_ID_PATTERN takes the Console's 8 hex digits and nothing else", () => {
  assert.ok(SESSION_ID_PATTERN.test("0123abcd"));
  for (
    const id of ["", "0123abc", "0123abcde", "0123ABCD", "fake0001", "0123abc\n", "\x1b[2Jabcd"]
  ) {
    assert.equal(SESSION_ID_PATTERN.test(id), false, JSON.stringify(id));
  }
});
