import assert from "node:assert/strict";
import { credentialsEqual, secretEquals } from "./secret.ts";

Deno.test("secretEquals() is true only for equal secrets, whatever their lengths", () => {
  assert.ok(secretEquals("Bearer abc", "Bearer abc"));
  assert.ok(secretEquals("", ""));
  assert.ok(secretEquals("pässwörd", "pässwörd"));
  assert.ok(!secretEquals("Bearer abc", "Bearer abd"));
  assert.ok(!secretEquals("Bearer ab", "Bearer abc"));
  assert.ok(!secretEquals("", "x"));
  assert.ok(!secretEquals("a\u0000", "a"));
});

Deno.test("credentialsEqual() needs both the username and the password to match", () => {
  const expected = { username: "alice", password: "pw" };
  assert.ok(credentialsEqual({ username: "alice", password: "pw" }, expected));
  assert.ok(!credentialsEqual({ username: "alice", password: "px" }, expected));
  assert.ok(!credentialsEqual({ username: "bob", password: "pw" }, expected));
  assert.ok(!credentialsEqual({ username: "bob", password: "px" }, expected));
  assert.ok(!credentialsEqual({ username: "alicep", password: "w" }, expected));
  assert.ok(!credentialsEqual({ username: "", password: "alicepw" }, expected));
});
