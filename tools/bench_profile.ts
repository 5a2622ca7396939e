// deno-lint-ignore-file no-console -- a bench script: its summary is its output
/**
 * Summarise V8 CPU profiles (`deno run --cpu-prof`, or `deno task bench
 * --cpu-prof DIR`): self time by function, and the share spent idle, in GC
 * and in native code.
 *
 * ```sh
 * deno run --allow-read tools/bench_profile.ts DIR_OR_FILE... [--top N]
 * ```
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time per function in one profile, in µs, and the total. */
export function selfTimes(profile: Profile): { total: number; byFunction: Map<string, number> } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const byFunction = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const node = byId.get(profile.samples[i]);
    if (!node) continue;
    const f = node.callFrame;
    const where = f.url
      ? `${f.url.replace(/^.*\/(lib|ext:|node:)/, "$1")}:${f.lineNumber + 1}`
      : "";
    const key = `${f.functionName || "(anonymous)"} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
    total += dt;
  }
  return { total, byFunction };
}

async function files(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const info = await Deno.stat(p);
    if (info.isDirectory) {
      for await (const e of Deno.readDir(p)) if (e.isFile) out.push(`${p}/${e.name}`);
    } else {
      out.push(p);
    }
  }
  return out.sort();
}

if (import.meta.main) {
  const args = [...Deno.args];
  let top = 25;
  const at = args.indexOf("--top");
  if (at >= 0) {
    top = Number(args[at + 1]);
    args.splice(at, 2);
  }
  for (const file of await files(args)) {
    const profile = JSON.parse(await Deno.readTextFile(file)) as Profile;
    const { total, byFunction } = selfTimes(profile);
    const idle = byFunction.get("(idle)") ?? 0;
    const busy = total - idle;
    console.log(
      `\n${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (${
        ((busy / total) * 100).toFixed(0)
      }%)`,
    );
    const rows = [...byFunction].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]);
    for (const [name, us] of rows.slice(0, top)) {
      console.log(
        `  ${((us / busy) * 100).toFixed(1).padStart(5)}% of busy  ${
          (us / 1e3).toFixed(0).padStart(6)
        } ms  ${name}`,
      );
    }
  }
}
