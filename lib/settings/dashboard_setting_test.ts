import assert from "node:assert/strict";
import { ConfigError } from "../core/errors.ts";
import { parseConsoleSettings, parseDaemonSettings } from "./schema.ts";

Deno.test("parseConsoleSettings() and parseDaemonSettings() read `dashboard`: loopback port 0 by default, null turns it off", () => {
  for (const parse of [parseConsoleSettings, parseDaemonSettings]) {
    assert.deepEqual(parse("", "s.yaml").dashboard, { host: "127.0.0.1", port: 0 });
    assert.equal(parse("dashboard: null\n", "s.yaml").dashboard, null);
    assert.deepEqual(parse("dashboard: 8090\n", "s.yaml").dashboard, {
      host: "127.0.0.1",
      port: 8090,
    });
    assert.deepEqual(parse('dashboard: "0.0.0.0:8090"\n', "s.yaml").dashboard, {
      host: "0.0.0.0",
      port: 8090,
    });
    assert.throws(
      () => parse('dashboard: "127.0.0.1:99999"\n', "s.yaml"),
      (err) =>
        err instanceof ConfigError && /^s\.yaml:1:\d+: Cannot use "dashboard"/.test(err.message),
    );
  }
});
