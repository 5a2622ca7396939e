import assert from "node:assert/strict";
import { HandshakeError } from "../core/errors.ts";
import { RetryReport, seconds, shortReason } from "./retry_report.ts";

function refused(): HandshakeError {
  const cause = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), {
    code: "ECONNREFUSED",
  });
  return new HandshakeError(
    "refused",
    'Cannot connect to Console at "127.0.0.1:1": connect ECONNREFUSED 127.0.0.1:1',
    { cause },
  );
}

Deno.test("RetryReport.failed() says the first failure in full and folds repeats into a counter", () => {
  const report = new RetryReport();
  assert.equal(
    report.failed(refused(), 400),
    'Session failed: Cannot connect to Console at "127.0.0.1:1": connect ECONNREFUSED 127.0.0.1:1; next try in 0.4 s',
  );
  for (let i = 2; i < 12; i++) report.failed(refused(), 8_000);
  assert.equal(
    report.failed(refused(), 15_000),
    "still failing (12 attempts): connection refused; next try in 15 s",
  );
  assert.equal(report.attempts, 12);
  // A different failure starts over, and so does an established session.
  const other = new HandshakeError("timeout", "Cannot connect: timed out after 10000 ms");
  assert.match(report.failed(other, 1_000), /^Session failed: Cannot connect: timed out/);
  report.reset();
  assert.match(report.failed(refused(), null), /^Session failed: .*127\.0\.0\.1:1$/);
});

Deno.test("shortReason() and seconds() word the counter line", () => {
  assert.equal(shortReason(new Deno.errors.ConnectionRefused("refused")), "connection refused");
  assert.equal(
    shortReason(new Error("Console refused the session: busy")),
    "Console refused the session: busy",
  );
  assert.equal(seconds(15_000), "15 s");
  assert.equal(seconds(1_234), "1.2 s");
});
