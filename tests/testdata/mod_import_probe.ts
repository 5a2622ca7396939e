/**
 * Run by tests/mod_test.ts in a fresh process with no permissions: imports
 * mod.ts and prints, as one JSON line, what the import changed in the global
 * scope (property names of `globalThis` and `Reflect`, timers, listeners)
 * and the type of each export the test asks about (`typeof` names).
 *
 * @module
 */

/** Calls to global APIs that would leave something running or listening. */
const calls: string[] = [];
const g = globalThis as unknown as Record<string, unknown>;
for (const name of ["setTimeout", "setInterval", "addEventListener", "queueMicrotask"]) {
  const original = g[name] as (...args: unknown[]) => unknown;
  g[name] = (...args: unknown[]) => {
    calls.push(name);
    return original.apply(globalThis, args);
  };
}
const originalSignal = Deno.addSignalListener;
Deno.addSignalListener = (...args: Parameters<typeof Deno.addSignalListener>) => {
  calls.push("Deno.addSignalListener");
  return originalSignal(...args);
};

const keys = (o: object) => Reflect.ownKeys(o).map(String).sort();
const before = { globalThis: keys(globalThis), Reflect: keys(Reflect), Deno: keys(Deno) };
const mod: Record<string, unknown> = await import("../../mod.ts");
const after = { globalThis: keys(globalThis), Reflect: keys(Reflect), Deno: keys(Deno) };

const added: Record<string, string[]> = {};
const removed: Record<string, string[]> = {};
for (const scope of ["globalThis", "Reflect", "Deno"] as const) {
  added[scope] = after[scope].filter((k) => !before[scope].includes(k));
  removed[scope] = before[scope].filter((k) => !after[scope].includes(k));
}
const exports = Object.fromEntries(Deno.args.map((name) => [name, typeof mod[name]]));
const line = JSON.stringify({ added, removed, calls, exports }) + "\n";
await Deno.stdout.write(new TextEncoder().encode(line));
