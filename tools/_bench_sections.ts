/**
 * The WAN part of bench/RESULTS.md, shared by the loopback bench (which keeps
 * it when it rewrites the file) and the WAN mode (which writes it).
 *
 * @module
 */

/** The heading the WAN part of bench/RESULTS.md starts with. */
export const WAN_HEADING = "## WAN mode (`deno task bench --wan`)";

/** The WAN part of `file` as it stands (to write back unchanged), or nothing. */
export async function keepWanSection(file: string): Promise<string[]> {
  const text = await Deno.readTextFile(file).catch(() => "");
  const start = text.indexOf(WAN_HEADING);
  return start < 0 ? [] : [text.slice(start).trimEnd(), ""];
}
