/**
 * The layering of ARCHITECTURE.md, checked over the module graphs that
 * `deno info --json` prints: the Daemon's graph holds no Console file and the
 * other way round, there are no import cycles among the repository's own
 * files, nothing in `lib/` reaches `tests/` or `tools/`, `tools/` never reaches
 * `tests/`, and each folder of `lib/` imports only the layers below it.
 *
 * @module
 */

import assert from "node:assert/strict";
import { tempDir } from "./_harness.ts";

const ROOT = new URL("../", import.meta.url);

/** Who may import whom in `lib/` (test files aside): each folder and the folders it may import. */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
  core: ["core"],
  net: ["core", "net"],
  settings: ["core", "net", "settings"],
  app: ["core", "net", "settings", "app"],
  ui: ["core", "net", "ui"],
  console: ["core", "net", "settings", "app", "ui", "console"],
  daemon: ["core", "net", "settings", "app", "ui", "daemon"],
};

/** The repository's own modules and what each imports (code and type imports), by path. */
type Graph = Map<string, Set<string>>;

interface InfoJson {
  modules: {
    specifier: string;
    error?: string;
    dependencies?: {
      specifier: string;
      code?: { specifier: string };
      type?: { specifier: string };
    }[];
  }[];
}

/** `deno info --json` of `entry` (a path or file: URL), reduced to the repository's own files. */
async function moduleGraph(entry: string): Promise<Graph> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--config", "deno.json", entry],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `deno info ${entry} failed: ${stderr}`);
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as InfoJson;
  const graph: Graph = new Map();
  for (const module of info.modules) {
    const from = localPath(module.specifier);
    if (from === null) continue;
    assert.equal(module.error, undefined, `deno info cannot load ${from}: ${module.error}`);
    const deps = new Set<string>();
    for (const dep of module.dependencies ?? []) {
      for (const to of [dep.code?.specifier, dep.type?.specifier]) {
        const path = to === undefined ? null : localPath(to);
        if (path !== null) deps.add(path);
      }
    }
    graph.set(from, deps);
  }
  assert.ok(graph.size > 0, `deno info ${entry} listed none of the repository's files`);
  return graph;
}

/** `lib/core/mux.ts` for a file: URL inside the repository, else null. */
function localPath(specifier: string): string | null {
  return specifier.startsWith(ROOT.href) ? specifier.slice(ROOT.href.length) : null;
}

/** Every `.ts` file under `dir` (a repository path), recursively. */
async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await tsFiles(path));
    else if (entry.isFile && entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

let whole: Promise<Graph> | undefined;

/**
 * The graph of every TypeScript file of the repository: one `deno info` over
 * a root module (in a temp folder) that imports them all. Built once per run.
 */
function wholeGraph(): Promise<Graph> {
  whole ??= buildWholeGraph();
  return whole;
}

async function buildWholeGraph(): Promise<Graph> {
  const files = [
    "console.ts",
    "daemon.ts",
    "mod.ts",
    "demo.ts",
    ...await tsFiles("lib"),
    ...await tsFiles("tools"),
    ...await tsFiles("tests"),
  ];
  const dir = await tempDir("pf-layering-");
  try {
    const root = `${dir}/all.ts`;
    await Deno.writeTextFile(
      root,
      files.map((f) => `import ${JSON.stringify(new URL(f, ROOT).href)};\n`).join(""),
    );
    const graph = await moduleGraph(root);
    for (const f of files) assert.ok(graph.has(f), `deno info did not list ${f}`);
    return graph;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Each import `from → to` in `graph` that breaks `rule` (a message, or null when allowed). */
function breaches(graph: Graph, rule: (from: string, to: string) => string | null): string[] {
  const out: string[] = [];
  for (const [from, deps] of graph) {
    for (const to of deps) {
      const why = rule(from, to);
      if (why !== null) out.push(`${from} → ${to}: ${why}`);
    }
  }
  return out.sort();
}

/** The strongly connected components of `graph` with more than one file, or a file importing itself. */
function cycles(graph: Graph): string[][] {
  // Tarjan's algorithm, iterative so a deep graph cannot overflow the stack.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const found: string[][] = [];
  let next = 0;
  for (const start of graph.keys()) {
    if (index.has(start)) continue;
    const work: { node: string; deps: string[]; at: number }[] = [];
    const visit = (node: string) => {
      index.set(node, next);
      low.set(node, next++);
      stack.push(node);
      onStack.add(node);
      work.push({ node, deps: [...(graph.get(node) ?? [])], at: 0 });
    };
    visit(start);
    while (work.length > 0) {
      const top = work[work.length - 1];
      if (top.at < top.deps.length) {
        const dep = top.deps[top.at++];
        if (!index.has(dep)) visit(dep);
        else if (onStack.has(dep)) low.set(top.node, Math.min(low.get(top.node)!, index.get(dep)!));
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1].node;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.node)!));
      }
      if (low.get(top.node) !== index.get(top.node)) continue;
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== top.node);
      if (component.length > 1 || graph.get(top.node)?.has(top.node)) found.push(component.sort());
    }
  }
  return found;
}

/** The `lib/` folder of a path (`core` for `lib/core/mux.ts`), else null. */
function layerOf(path: string): string | null {
  return path.match(/^lib\/([^/]+)\//)?.[1] ?? null;
}

/** The import rules for every file of the repository, as ARCHITECTURE.md states them. */
function layerRule(from: string, to: string): string | null {
  if (from.startsWith("lib/") && !to.startsWith("lib/")) {
    return "lib/ imports only lib/ (never tests/, tools/ or an entry file)";
  }
  if (from.startsWith("tools/") && to.startsWith("tests/")) {
    return "tools/ never imports the test harness";
  }
  const layer = layerOf(from);
  // A test beside its source may reach across layers to build its fixtures.
  if (layer === null || from.endsWith("_test.ts")) return null;
  const allowed = LAYERS[layer];
  if (allowed === undefined) return `lib/${layer}/ is no layer of ARCHITECTURE.md`;
  const target = layerOf(to);
  if (target !== null && !allowed.includes(target)) {
    return `lib/${layer}/ may import only ${allowed.map((l) => `lib/${l}/`).join(", ")}`;
  }
  return null;
}

Deno.test("the Daemon's module graph (deno info daemon.ts) holds no lib/console/ file", async () => {
  const graph = await moduleGraph("daemon.ts");
  assert.ok(graph.has("lib/daemon/daemon.ts"), [...graph.keys()].join("\n"));
  assert.deepEqual([...graph.keys()].filter((f) => f.startsWith("lib/console/")), []);
});

Deno.test("the Console's module graph (deno info console.ts) holds no lib/daemon/ file", async () => {
  const graph = await moduleGraph("console.ts");
  assert.ok([...graph.keys()].some((f) => f.startsWith("lib/console/")), [...graph.keys()].join());
  assert.deepEqual([...graph.keys()].filter((f) => f.startsWith("lib/daemon/")), []);
});

Deno.test("the entry points' graphs (console.ts, daemon.ts, mod.ts, demo.ts) have no import cycle and keep the layers", async () => {
  for (const entry of ["console.ts", "daemon.ts", "mod.ts", "demo.ts"]) {
    const graph = await moduleGraph(entry);
    assert.deepEqual(cycles(graph), [], `import cycles in the graph of ${entry}`);
    assert.deepEqual(breaches(graph, layerRule), [], `layer breaches in the graph of ${entry}`);
  }
});

Deno.test("the repository's own files have no import cycle", async () => {
  const graph = await wholeGraph();
  assert.deepEqual(cycles(graph), []);
});

Deno.test("lib/ imports only lib/, tools/ never imports tests/, and each lib/ folder imports only the layers below it", async () => {
  const graph = await wholeGraph();
  assert.deepEqual(breaches(graph, layerRule), []);
});

Deno.test("cycles() and layerRule() find what they look for", () => {
  const graph: Graph = new Map([
    ["a.ts", new Set(["b.ts"])],
    ["b.ts", new Set(["c.ts"])],
    ["c.ts", new Set(["a.ts", "d.ts"])],
    ["d.ts", new Set(["d.ts"])],
    ["e.ts", new Set(["a.ts"])],
  ]);
  assert.deepEqual(cycles(graph).sort(), [["a.ts", "b.ts", "c.ts"], ["d.ts"]]);
  const imports: [string, string, boolean][] = [
    ["lib/core/mux.ts", "lib/core/codec.ts", true],
    ["lib/core/mux.ts", "lib/net/address.ts", false],
    ["lib/net/allowlist.ts", "lib/settings/pfo.ts", false],
    ["lib/settings/pfo.ts", "lib/net/hostport.ts", true],
    ["lib/settings/pfo.ts", "lib/app/cli.ts", false],
    ["lib/app/cli.ts", "lib/settings/schema.ts", true],
    ["lib/app/cli.ts", "lib/console/server.ts", false],
    ["lib/ui/prompt.ts", "lib/settings/schema.ts", false],
    ["lib/daemon/daemon.ts", "lib/console/server.ts", false],
    ["lib/console/server.ts", "lib/daemon/udp.ts", false],
    ["lib/console/server.ts", "lib/app/control.ts", true],
    ["lib/core/log.ts", "tests/_harness.ts", false],
    ["lib/core/log_test.ts", "tools/bench.ts", false],
    ["lib/ui/prompt_test.ts", "lib/console/prompt.ts", true],
    ["tools/bench.ts", "tests/_harness.ts", false],
    ["tools/bench.ts", "lib/core/log.ts", true],
    ["tests/e2e_tcp_test.ts", "tests/_harness.ts", true],
    ["console.ts", "lib/console/server.ts", true],
  ];
  for (const [from, to, allowed] of imports) {
    assert.equal(layerRule(from, to) === null, allowed, `${from} → ${to}`);
  }
});
