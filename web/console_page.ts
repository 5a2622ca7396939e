/// <reference lib="dom" />
/**
 * The Console's dashboard page, in the browser: the session (with Accept,
 * Reject, Trust always, Close session), the PFOs (live counters and rates,
 * the add/edit form, Enable/Disable, Edit, Remove), the connections (with
 * Kill) and a throughput chart, chat, Resolve and the trust list. It draws
 * the snapshot the feed pushes and acts only through the Console's commands.
 * Bundled into `lib/console/dashboard_script.ts` by `deno task bundle:dashboard`.
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
  field,
  h,
  KeyedTable,
  labelFor,
  post,
  rate,
  say,
  section,
  ThroughputChart,
} from "./dashboard_client.ts";
import { RateMeter } from "../lib/core/rates.ts";
import type { ConnectionInfo } from "../lib/console/pfos.ts";
import type { ConsoleSnapshot, PfoSnapshot, TrustEntry } from "../lib/console/state.ts";

/** Session: who, fingerprint, state, and the buttons the state allows. */
function sessionView() {
  const state = h("dd", {});
  const peer = h("dd", { class: "mono" });
  const fingerprint = h("dd", { class: "mono" });
  const since = h("dd", {});
  const error = h("p", { class: "error", role: "alert" });
  const buttons = h("div", {});
  const el = section(
    "Session",
    facts([["State", state], ["Peer", peer], ["Fingerprint", fingerprint], ["Since", since]]),
    buttons,
    error,
  );
  let shown = "";
  return {
    el,
    update(s: ConsoleSnapshot) {
      const { session } = s;
      say(state, session.state);
      state.className = `state-${session.state}`;
      const p = session.peer;
      say(peer, p ? `${p.user}@${p.host} (${p.os}) from ${p.address}` : "none");
      say(fingerprint, p?.fingerprint ?? "");
      say(since, session.since ? `${age(session.since)} ago` : "");
      if (shown === session.state) return;
      shown = session.state;
      if (session.state === "pending") {
        buttons.replaceChildren(
          button("Accept", act(error, "session/accept", { remember: false })),
          button("Reject", act(error, "session/reject")),
          button("Trust always", act(error, "session/accept", { remember: true })),
        );
      } else if (session.state === "established") {
        buttons.replaceChildren(button("Close session", act(error, "session/close")));
      } else buttons.replaceChildren();
    },
  };
}

/** The form's fields, and an error line beside each. */
function pfoFields() {
  const input = (attrs: Record<string, string> = {}) =>
    h("input", { type: "text", ...attrs }) as HTMLInputElement;
  const options = ["tcp", "udp", "socks"].map((p) => h("option", { value: p }, p));
  const error = (id: string) => h("span", { id: `pfo-${id}-error`, class: "error", role: "alert" });
  return {
    name: input({ autocomplete: "off" }),
    proto: h("select", {}, ...options) as HTMLSelectElement,
    listen: input({ placeholder: "[host:]port or port range" }),
    target: input({ placeholder: "host:port (none for socks)" }),
    clients: input({ placeholder: "IPs or CIDRs, comma-separated; empty allows all" }),
    disabled: h("input", { type: "checkbox" }) as HTMLInputElement,
    errors: {
      name: error("name"),
      proto: error("proto"),
      listen: error("listen"),
      target: error("target"),
      clients: error("clients"),
      form: error("form"),
    },
  };
}

/** Where the CLI's `message` goes: beside the field it names, or under the form. */
function errorPlace(errors: ReturnType<typeof pfoFields>["errors"], message: string): HTMLElement {
  const m = message.toLowerCase();
  if (/listen|port range|bind/.test(m)) return errors.listen;
  if (/target/.test(m)) return errors.target;
  if (/client|cidr/.test(m)) return errors.clients;
  if (/protocol/.test(m)) return errors.proto;
  if (/name/.test(m)) return errors.name;
  return errors.form;
}

/** The add/edit form: every option `pfo add` has, its errors beside each field. */
function pfoForm() {
  const { name, proto, listen, target, clients, disabled, errors } = pfoFields();
  let editing: string | null = null;
  const submit = button("Add PFO", () => save());
  const cancel = button("Cancel", () => reset());
  cancel.hidden = true;
  const row = (label: string, control: HTMLElement, error: HTMLElement) => {
    if (error.id !== "") control.setAttribute("aria-describedby", error.id);
    return [labelFor(label, control), control, error];
  };
  const form = h("form", { class: "pfo", "aria-label": "PFO" });
  for (
    const [label, control, error] of [
      ["Name", name, errors.name],
      ["Protocol", proto, errors.proto],
      ["Listen", listen, errors.listen],
      ["Target", target, errors.target],
      ["Clients", clients, errors.clients],
      ["Disabled", disabled, h("span")],
    ] as const
  ) form.append(...row(label, control, error));
  form.append(h("span"), h("div", {}, submit, cancel), errors.form);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void save();
  });
  function clearErrors() {
    for (const e of Object.values(errors)) say(e, "");
  }
  function reset() {
    editing = null;
    for (const i of [name, listen, target, clients]) i.value = "";
    name.readOnly = false;
    proto.disabled = clients.disabled = disabled.disabled = false;
    disabled.checked = false;
    submit.textContent = "Add PFO";
    cancel.hidden = true;
    clearErrors();
  }
  async function save() {
    clearErrors();
    const answer = editing === null
      ? await post("pfo/add", {
        name: name.value,
        proto: proto.value,
        listen: listen.value,
        target: target.value.trim() === "" ? null : target.value.trim(),
        clients: clients.value.split(/[\s,]+/).filter((c) => c !== ""),
        enabled: !disabled.checked,
      })
      : await post("pfo/edit", { name: editing, listen: listen.value, target: target.value });
    if (answer.ok) reset();
    else say(errorPlace(errors, answer.error), answer.error);
  }
  function edit(p: PfoSnapshot) {
    reset();
    editing = p.name;
    name.value = p.name;
    name.readOnly = true;
    proto.value = p.proto;
    listen.value = p.listen;
    target.value = p.target ?? "";
    clients.value = p.clients.join(", ");
    proto.disabled = clients.disabled = disabled.disabled = true;
    disabled.checked = !p.enabled;
    submit.textContent = "Save changes";
    cancel.hidden = false;
    listen.focus();
  }
  return { el: h("div", {}, h("h3", {}, "Add or edit a PFO"), form), edit };
}

/** PFOs: the table with live counters and rates, and the form. */
function pfoView() {
  const error = h("p", { class: "error", role: "alert" });
  const form = pfoForm();
  const latest = new Map<string, PfoSnapshot>();
  const table = new KeyedTable<PfoSnapshot>(
    "PFOs",
    [
      { title: "Name", text: (p) => p.name },
      { title: "Proto", text: (p) => p.proto },
      { title: "Listen", text: (p) => p.bound.length > 0 ? p.bound.join(", ") : p.listen },
      { title: "Target", text: (p) => p.target ?? "(per request)" },
      {
        title: "State",
        text: (p) => p.error ? `${p.state}: ${p.error}` : p.state,
        className: (p) => `state-${p.state}`,
      },
      { title: "Open", text: (p) => String(p.connections), num: true },
      { title: "Total", text: (p) => String(p.connectionsTotal), num: true },
      { title: "Rate in", text: (p) => rate(p.rates.bytesInPerSecond), num: true },
      { title: "Rate out", text: (p) => rate(p.rates.bytesOutPerSecond), num: true },
      { title: "Bytes in", text: (p) => bytes(p.bytesIn), num: true },
      { title: "Bytes out", text: (p) => bytes(p.bytesOut), num: true },
    ],
    (p) => p.name,
    (p) => [
      p.enabled
        ? button("Disable", act(error, "pfo/disable", { name: p.name }))
        : button("Enable", act(error, "pfo/enable", { name: p.name })),
      // The row's buttons outlive its snapshot: edit what the PFO is now.
      button("Edit", () => form.edit(latest.get(p.name) ?? p)),
      button("Remove", act(error, "pfo/rm", { name: p.name })),
    ],
    "No PFOs yet: add one below.",
  );
  const settingsError = h("p", { class: "error", role: "alert" });
  return {
    el: section("PFOs", settingsError, table.element, error, form.el),
    update(s: ConsoleSnapshot) {
      say(settingsError, s.settingsError ? `Settings file refused: ${s.settingsError}` : "");
      latest.clear();
      for (const p of s.pfos) latest.set(p.name, p);
      table.update(s.pfos);
    },
  };
}

/** Connections: live, newest first, with rates, a Kill button each, and the chart. */
function connectionView() {
  const error = h("p", { class: "error", role: "alert" });
  // Over the same 5 s window as the PFOs' rates and the Daemon's: a connection's counters move in
  // bursts (a slow reader takes a large write at once), so a rate between two pushes swings to 0.
  const rates = new RateMeter<"in" | "out">({ windowMs: 5000 });
  const chart = new ThroughputChart();
  const shownRates = new Map<number, { in: number; out: number }>();
  let known = new Set<string>();
  const table = new KeyedTable<ConnectionInfo>(
    "Connections",
    [
      { title: "ID", text: (c) => String(c.id), num: true },
      { title: "PFO", text: (c) => c.pfo },
      { title: "Proto", text: (c) => c.proto },
      { title: "Client", text: (c) => c.client },
      { title: "Target", text: (c) => c.target ?? "" },
      { title: "Age", text: (c) => age(c.since) },
      { title: "Rate in", text: (c) => rate(shownRates.get(c.id)?.in ?? 0), num: true },
      { title: "Rate out", text: (c) => rate(shownRates.get(c.id)?.out ?? 0), num: true },
      { title: "Bytes in", text: (c) => bytes(c.bytesIn), num: true },
      { title: "Bytes out", text: (c) => bytes(c.bytesOut), num: true },
    ],
    (c) => String(c.id),
    (c) => [
      button("Kill", act(error, "connections/kill", { id: c.id })),
    ],
    "No open connections.",
  );
  const count = h("p", { class: "hint" });
  return {
    el: section("Connections", chart.element, count, table.element, error),
    update(s: ConsoleSnapshot) {
      const now = Date.now();
      shownRates.clear();
      const open = new Set<string>();
      for (const c of s.connections) {
        const key = String(c.id);
        // A connection opened within the window started at 0 bytes: count what it moved before
        // this page first saw it.
        const since = Date.parse(c.since);
        if (!known.has(key) && now - since < 5000) {
          rates.sample(key, { in: 0, out: 0 }, Math.min(since, now));
        }
        open.add(key);
        rates.sample(key, { in: c.bytesIn, out: c.bytesOut }, now);
        const r = rates.rates(key, now);
        shownRates.set(c.id, { in: r?.in ?? 0, out: r?.out ?? 0 });
      }
      rates.retain(open);
      known = open;
      // The open connections' rates: a PFO's byte counters move when its connections close.
      let inRate = 0, outRate = 0;
      for (const r of shownRates.values()) {
        inRate += r.in;
        outRate += r.out;
      }
      chart.add(inRate, outRate);
      say(count, `${s.connections.length} open`);
      table.update([...s.connections].sort((a, b) => b.id - a.id));
    },
  };
}

/** Resolve: a name box and its answer. */
function resolveView() {
  const input = h("input", { type: "text", autocomplete: "off" }) as HTMLInputElement;
  const out = h("p", { role: "status", class: "mono" });
  const go = async () => {
    say(out, "…");
    const answer = await post("resolve", { host: input.value });
    say(
      out,
      answer.ok
        ? ((answer.result as { addresses: string[] }).addresses.join(", ") || "no addresses")
        : answer.error,
    );
  };
  return { el: section("Resolve", field("Host name", input), button("Resolve", go), out) };
}

/** Trust list: the entries, with remove. */
function trustView() {
  const error = h("p", { class: "error", role: "alert" });
  const table = new KeyedTable<TrustEntry>(
    "Trusted Daemons",
    [
      { title: "Fingerprint", text: (t) => t.fingerprint, className: () => "mono" },
      { title: "Source", text: (t) => t.source },
      { title: "Host", text: (t) => t.host ? `${t.user ?? ""}@${t.host}` : "" },
      { title: "Added", text: (t) => t.addedAt ?? "" },
    ],
    (t) => `${t.source}:${t.fingerprint}`,
    (t) => [
      button("Remove", act(error, "trust/rm", { fingerprint: t.fingerprint })),
    ],
    "No trusted Daemons.",
  );
  return {
    el: section("Trust list", table.element, error),
    update: (s: ConsoleSnapshot) => table.update(s.trust),
  };
}

function main() {
  const app = document.getElementById("app")!;
  const title = h("h1", {}, "portferry Console");
  const subtitle = h("p", { class: "hint mono" });
  const session = sessionView();
  const pfos = pfoView();
  const connections = connectionView();
  const chat = chatView();
  const resolve = resolveView();
  const trust = trustView();
  const banner = connectFeed("Console", "console dashboard", (data) => {
    const s = data as ConsoleSnapshot;
    say(
      subtitle,
      `Fingerprint ${s.fingerprint} · Daemons connect to ${s.listen} · settings ${s.settings}`,
    );
    session.update(s);
    pfos.update(s);
    connections.update(s);
    chat.update(s.chat);
    trust.update(s);
  });
  app.append(
    title,
    subtitle,
    banner,
    session.el,
    pfos.el,
    connections.el,
    h("div", { class: "grid2" }, chat.el, h("div", {}, resolve.el, trust.el)),
  );
}

main();
