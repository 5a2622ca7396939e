/**
 * What the Console's subcommands print, as lines: `status`, the PFO table,
 * `trust list`. They read the state model's types only.
 *
 * @module
 */

import { escapeControls } from "../core/text.ts";
import { formatHostPort, parseListen } from "../net/hostport.ts";
import type { SavedPfo } from "./commands.ts";
import type { PfoStatus } from "./pfos.ts";
import type { ConsoleStatus, TrustEntry } from "./state.ts";

/** A row of `pfo list`: live from the Console, or as saved in the settings file. */
export type PfoRow = PfoStatus | SavedPfo;

/**
 * `status` without `--json`.
 *
 * @example
 * ```ts
 * import { statusLines } from "./views.ts";
 * import { udpDropsOf } from "./state.ts";
 * const lines = statusLines({
 *   session: { state: "none", id: null, since: null, peer: null, streams: 0 },
 *   fingerprint: "SHA256:x", listen: "0.0.0.0:7470", settings: "c.yaml", settingsError: null, pfos: [],
 *   udpDrops: udpDropsOf([]),
 * });
 * if (lines.join("|") !== "fingerprint: SHA256:x|session port: 0.0.0.0:7470|session: none|no PFOs") {
 *   throw new Error(lines.join("|"));
 * }
 * ```
 */
export function statusLines(status: ConsoleStatus): string[] {
  const s = status.session;
  const lines = [`fingerprint: ${status.fingerprint}`, `session port: ${status.listen}`];
  if (status.settingsError !== null) {
    lines.push(
      `settings error: ${status.settingsError} (the Console keeps its running settings until the file is fixed)`,
    );
  }
  lines.push(
    `session: ${s.state}` +
      (s.peer
        ? `  ${
          escapeControls(`${s.peer.user}@${s.peer.host} from ${s.peer.address}`)
        }  ${s.peer.fingerprint}`
        : "") +
      (s.state === "established" ? `  streams: ${s.streams}` : ""),
  );
  return [...lines, ...pfoTableLines(status.pfos)];
}

/** Where a PFO listens: the bound address, or else the full address it would bind. */
function listenText(p: Pick<PfoStatus, "bound" | "listen">): string {
  if (p.bound.length === 1) return p.bound[0];
  try {
    const a = parseListen(p.listen);
    return formatHostPort(a.host, a.port) + (a.portEnd === a.port ? "" : `-${a.portEnd}`);
  } catch {
    return p.listen;
  }
}

/** The PFO table of `status` and `pfo list`. */
export function pfoTableLines(list: readonly PfoRow[]): string[] {
  if (list.length === 0) return ["no PFOs"];
  const rows = list.map((p) => [
    p.name,
    p.proto,
    listenText(p),
    p.target ?? "-",
    p.state + (p.listeners > 1 ? `(${p.listeners})` : "") +
    ("session" in p && !p.session && p.state === "listening" ? " (no session)" : ""),
    String(p.connections),
    `${p.bytesOut}/${p.bytesIn}`,
    p.error ?? "",
  ]);
  const head = ["NAME", "PROTO", "LISTEN", "TARGET", "STATE", "CONNS", "OUT/IN BYTES", "ERROR"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((row) => row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
}

/** `trust list` without `--json`. */
export function trustLines(list: readonly TrustEntry[]): string[] {
  if (list.length === 0) return ["no trusted Daemons"];
  return list.map((t) => {
    const who = escapeControls(`${t.user ?? ""}${t.host ? "@" + t.host : ""}`);
    return `${escapeControls(t.fingerprint)}  ${who}  (${t.source})`;
  });
}
