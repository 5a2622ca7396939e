/// <reference lib="dom" />
/**
 * The Daemon's dashboard page, in the browser: the session with the Console
 * (and Close session), the connections and flows made through this Daemon
 * (with Kill), the allow-list in force, and chat. It draws the snapshot the
 * feed pushes and acts only through the Daemon's commands. Bundled into
 * `dashboard_script.ts` by `deno task bundle:dashboard`.
 *
 * @module
 */

import {
  act,
  age,
  button,
  bytes,
  chatView,
  connectFeed,
  facts,
  h,
  KeyedTable,
  post,
  rate,
  say,
  section,
  ThroughputChart,
} from "./dashboard_client.ts";
import type { DaemonConnection, DaemonSnapshot } from "../lib/daemon/state.ts";

function sessionView() {
  const phase = h("dd", {});
  const consoleAt = h("dd", { class: "mono" });
  const pinned = h("dd", { class: "mono" });
  const own = h("dd", { class: "mono" });
  const since = h("dd", {});
  const lastError = h("dd", { class: "error" });
  const error = h("p", { class: "error", role: "alert" });
  const close = button("Close session", async () => {
    const answer = await post("close", {});
    say(error, answer.ok ? "Session closed: the Daemon stops." : answer.error);
  });
  const el = section(
    "Session",
    facts([
      ["State", phase],
      ["Console", consoleAt],
      ["Pinned fingerprint", pinned],
      ["This Daemon", own],
      ["Since", since],
      ["Last error", lastError],
    ]),
    close,
    error,
  );
  return {
    el,
    update(s: DaemonSnapshot) {
      say(phase, s.session.phase);
      phase.className = `state-${s.session.phase}`;
      say(consoleAt, s.session.console);
      say(pinned, s.session.fingerprint);
      say(own, s.fingerprint);
      say(since, s.session.since ? `${age(s.session.since)} ago` : "");
      say(lastError, s.session.lastError ?? "");
      close.disabled = s.session.phase === "stopped";
    },
  };
}

function connectionView() {
  const error = h("p", { class: "error", role: "alert" });
  const chart = new ThroughputChart();
  const count = h("p", { class: "hint" });
  const table = new KeyedTable<DaemonConnection>(
    "Connections",
    [
      { title: "Stream", text: (c) => String(c.stream), num: true },
      { title: "PFO", text: (c) => c.pfo },
      { title: "Proto", text: (c) => c.proto },
      { title: "Client", text: (c) => c.client },
      { title: "Target", text: (c) => c.target },
      { title: "Address", text: (c) => c.address },
      { title: "Age", text: (c) => age(c.since) },
      { title: "Rate in", text: (c) => rate(c.rateIn), num: true },
      { title: "Rate out", text: (c) => rate(c.rateOut), num: true },
      { title: "Bytes in", text: (c) => bytes(c.bytesIn), num: true },
      { title: "Bytes out", text: (c) => bytes(c.bytesOut), num: true },
    ],
    (c) => String(c.stream),
    (c) => [
      button("Kill", act(error, "connections/kill", { id: c.stream })),
    ],
    "No open connections.",
  );
  return {
    el: section("Connections and flows", chart.element, count, table.element, error),
    update(s: DaemonSnapshot) {
      const sum = (pick: (c: DaemonConnection) => number) =>
        s.connections.reduce((t, c) => t + pick(c), 0);
      chart.add(sum((c) => c.rateIn), sum((c) => c.rateOut));
      say(count, `${s.connections.length} open`);
      table.update([...s.connections].sort((a, b) => b.stream - a.stream));
    },
  };
}

function main() {
  const app = document.getElementById("app")!;
  const session = sessionView();
  const connections = connectionView();
  const allow = h("p", { class: "mono" });
  const chat = chatView();
  const banner = connectFeed("Daemon", "daemon dashboard", (data) => {
    const s = data as DaemonSnapshot;
    session.update(s);
    connections.update(s);
    say(allow, `The Console may reach: ${s.allow}`);
    chat.update(s.chat);
  });
  app.append(
    h("h1", {}, "portferry Daemon"),
    banner,
    session.el,
    connections.el,
    section("Allow-list in force", allow),
    chat.el,
  );
}

main();
