import assert from "node:assert/strict";
import { createLogger } from "../core/log.ts";
import type { PfoSpec, ResolvedPfo } from "../settings/pfo.ts";
import { type ConsoleSettings, loadConsoleSettings } from "../settings/schema.ts";
import { PfoEditor } from "./pfo_editor.ts";
import { PfoManager } from "./pfos.ts";

/** A PfoManager that counts its full applies. */
class CountingManager extends PfoManager {
  applies = 0;
  override apply(specs: readonly (PfoSpec | ResolvedPfo)[]): Promise<void> {
    this.applies++;
    return super.apply(specs);
  }
}

Deno.test("PfoEditor.change() skips the pass over every PFO when the file held only the change, and runs a pending hand edit", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/portferry-console.yaml`;
  const pfos = new CountingManager({
    log: createLogger({ sink: () => {} }),
    session: () => null,
    udpIdleMs: () => 60_000,
    socksAuth: () => null,
  });
  try {
    await Deno.writeTextFile(
      path,
      'pfos:\n  - name: a\n    listen: "127.0.0.1:0"\n    target: "h:1"\n',
      { mode: 0o600 },
    );
    let settings: ConsoleSettings = (await loadConsoleSettings(path)).settings;
    await pfos.apply(settings.pfos);
    const editor = new PfoEditor({
      settingsPath: path,
      pfos,
      settings: () => settings,
      saved: (next) => (settings = next),
      settingsError: () => null,
      out: () => {},
    });
    const add = (name: string) =>
      editor.change({
        command: "pfo/add",
        request: {
          name,
          proto: "tcp",
          listen: "127.0.0.1:0",
          target: "h:2",
          enabled: true,
          clients: [],
        },
      });
    const applies = pfos.applies;
    const b = await add("b");
    assert.equal(b?.state, "listening");
    assert.equal(pfos.applies, applies, "an add that only appended re-applied every PFO");
    assert.deepEqual(settings.pfos.map((p) => p.name), ["a", "b"]);

    // A hand edit the watcher has not reloaded yet: the next change runs it.
    const text = await Deno.readTextFile(path);
    await Deno.writeTextFile(path, text.replace('target: "h:1"', 'target: "h:9"'));
    await add("c");
    assert.equal(pfos.applies, applies + 1);
    assert.equal(pfos.status("a")?.target, "h:9");
    assert.deepEqual(pfos.names(), ["a", "b", "c"]);

    await editor.change({ command: "pfo/disable", request: { name: "c" } });
    assert.equal(pfos.status("c")?.state, "disabled");
    assert.equal(pfos.applies, applies + 1, "a disable that only changed its PFO re-applied");
  } finally {
    pfos.closeAll();
    await Deno.remove(dir, { recursive: true });
  }
});
