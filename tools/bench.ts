/**
 * `deno task bench`: the loopback bench (tools/bench_loopback.ts), or with
 * `--wan` the same paths on emulated long links (tools/bench_wan.ts). Run it
 * with `--help` for the options of each.
 *
 * @module
 */

import { main as loopback } from "./bench_loopback.ts";
import { wanMain } from "./bench_wan.ts";

if (import.meta.main) {
  Deno.exit(Deno.args.includes("--wan") ? await wanMain(Deno.args) : await loopback());
}
