import assert from "node:assert/strict";
import { dashboardPage } from "../lib/app/dashboard.ts";
import { DASHBOARD_CSS } from "../lib/app/dashboard_style.ts";
import { CONSOLE_DASHBOARD_SCRIPT } from "../lib/console/dashboard_script.ts";
import { DAEMON_DASHBOARD_SCRIPT } from "../lib/daemon/dashboard_script.ts";
import { bundleScript, DASHBOARD_BUNDLES, scriptModule } from "../tools/bundle_dashboard.ts";

Deno.test("bundle_dashboard: the checked-in page scripts are what the page sources bundle to", async () => {
  assert.equal(DASHBOARD_BUNDLES.length, 2);
  for (const bundle of DASHBOARD_BUNDLES) {
    const fresh = scriptModule(bundle, await bundleScript(bundle.entry));
    const checkedIn = await Deno.readTextFile(new URL(`../${bundle.output}`, import.meta.url));
    assert.ok(
      checkedIn === fresh,
      `${bundle.output} is out of date: run \`deno task bundle:dashboard\``,
    );
  }
});

Deno.test("dashboard: each program's whole page (HTML, CSS, script with its chart) is under 150 KB", () => {
  for (
    const [program, script] of [
      ["Console", CONSOLE_DASHBOARD_SCRIPT],
      ["Daemon", DAEMON_DASHBOARD_SCRIPT],
    ] as const
  ) {
    const size = new TextEncoder().encode(dashboardPage(program) + DASHBOARD_CSS + script).length;
    assert.ok(size > 2_000, `${program} page is only ${size} bytes: not the real page`);
    assert.ok(size < 150 * 1024, `${program} page is ${size} bytes, over 150 KB`);
  }
});
