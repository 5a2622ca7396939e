import assert from "node:assert/strict";
import { createLogger } from "../core/log.ts";
import { resolvePfo } from "../settings/pfo.ts";
import { PfoManager } from "./pfos.ts";

function manager(lines: string[]): PfoManager {
  return new PfoManager({
    log: createLogger({ sink: (line: string) => lines.push(line) }),
    session: () => null,
    udpIdleMs: () => 60_000,
    socksAuth: () => null,
  });
}

const pfo = (name: string, target: string, enabled = true) =>
  resolvePfo({ name, proto: "tcp", listen: "127.0.0.1:0", target, enabled });

Deno.test("PfoManager.apply() touches only changed PFOs: an unchanged one keeps its listener and its connections", async () => {
  const lines: string[] = [];
  const pfos = manager(lines);
  try {
    await pfos.apply([pfo("a", "h:1"), pfo("b", "h:2"), pfo("c", "h:3")]);
    const portA = pfos.status("a")!.bound[0];
    // A client connected to "a" (closed at once with no session; counted).
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(portA.split(":").pop()),
    });
    await conn.read(new Uint8Array(1)).catch(() => null);
    conn.close();
    for (let i = 0; i < 200 && pfos.status("a")!.connectionsRefused === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(pfos.status("a")!.connectionsRefused, 1);
    const logged = lines.length;

    // New objects with the same values for "a", a new target for "b", "c" disabled.
    await pfos.apply([pfo("a", "h:1"), pfo("b", "h:9"), pfo("c", "h:3", false)]);
    assert.equal(pfos.status("a")!.bound[0], portA, "a port-0 listener was re-bound");
    assert.equal(pfos.status("a")!.connectionsRefused, 1);
    assert.equal(pfos.status("b")!.target, "h:9");
    assert.equal(pfos.status("c")!.state, "disabled");
    assert.deepEqual(pfos.status("c")!.bound, []);
    // Nothing about "a" or "b" was logged: neither was re-opened.
    const after = lines.slice(logged).join("\n");
    assert.ok(!/"pfo":"[ab]"|pfo=[ab]\b/.test(after), after);
    await pfos.apply([pfo("a", "h:1"), pfo("b", "h:9"), pfo("c", "h:3")]);
    assert.equal(pfos.status("c")!.state, "listening");
    assert.equal(pfos.status("a")!.bound[0], portA);
  } finally {
    pfos.closeAll();
  }
});

Deno.test("PfoManager.apply() starts more PFOs than one batch, each listening and logged once with the port it bound", async () => {
  const lines: string[] = [];
  const pfos = manager(lines);
  try {
    const count = 600; // More than one batch of starts.
    await pfos.apply(Array.from({ length: count }, (_, i) => pfo(`p${i}`, "h:1")));
    const list = pfos.list();
    assert.equal(list.length, count);
    assert.ok(list.every((s) => s.state === "listening" && s.bound.length === 1));
    const listening = lines.filter((l) => l.includes("PFO listening"));
    assert.equal(listening.length, count);
    for (const name of ["p0", "p299", `p${count - 1}`]) {
      const line = listening.filter((l) => l.includes(`pfo=${name} `));
      assert.equal(line.length, 1, name);
      assert.ok(line[0].includes(`listen=${pfos.status(name)!.bound[0]} `), line[0]);
      assert.ok(line[0].includes("proto=tcp"), line[0]);
    }
  } finally {
    pfos.closeAll();
  }
});
