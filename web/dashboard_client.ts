/// <reference lib="dom" />
/**
 * What both dashboard pages share, in the browser: building elements (peer
 * strings always as text, never as HTML), keyed tables updated in place,
 * the throughput chart, commands sent to the program, and the one
 * WebSocket feed that reconnects when the program restarts. Bundled into
 * each program's page script by `deno task bundle:dashboard`.
 *
 * @module
 */

/** Children an element may get: elements, or strings set as text. */
export type Child = Node | string | null;

/**
 * A new element `tag` with attributes `attrs` and children, strings added
 * as text nodes (so `<b>` in a peer string shows as `<b>`).
 */
export function h(
  tag: string,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) {
    if (c !== null) el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

/** A button named `label` that runs `action` when clicked. */
export function button(label: string, action: () => void | Promise<void>): HTMLButtonElement {
  const b = h("button", { type: "button" }, label) as HTMLButtonElement;
  b.addEventListener("click", () => void action());
  return b;
}

/** A section with a heading. */
export function section(title: string, ...children: Child[]): HTMLElement {
  return h("section", { "aria-label": title }, h("h2", {}, title), ...children);
}

/** A column of a keyed table. */
export interface Column<T> {
  /** The header text. */
  readonly title: string;
  /** The cell's text for a row. */
  readonly text: (row: T) => string;
  /** Right-aligned numbers. */
  readonly num?: boolean;
  /** A class for the cell, from the row. */
  readonly className?: (row: T) => string;
}

/** A definition list of labelled values: `[label, value element]` pairs, in order. */
export function facts(pairs: readonly (readonly [string, HTMLElement])[]): HTMLElement {
  return h("dl", {}, ...pairs.flatMap(([label, value]) => [h("dt", {}, label), value]));
}

/** A table whose rows are kept by key and updated in place. */
export class KeyedTable<T> {
  readonly element: HTMLTableElement;
  readonly #body: HTMLTableSectionElement;
  readonly #rows = new Map<string, { tr: HTMLTableRowElement; actionsKey: string }>();
  readonly #columns: readonly Column<T>[];
  readonly #key: (row: T) => string;
  readonly #actions: (row: T) => HTMLButtonElement[];
  readonly #empty: string;

  constructor(
    label: string,
    columns: readonly Column<T>[],
    key: (row: T) => string,
    actions: (row: T) => HTMLButtonElement[],
    empty: string,
  ) {
    this.#columns = columns;
    this.#key = key;
    this.#actions = actions;
    this.#empty = empty;
    const head = h(
      "tr",
      {},
      ...columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : "" }, c.title)),
    );
    head.append(h("th", { scope: "col" }, "Actions"));
    this.#body = h("tbody") as HTMLTableSectionElement;
    this.element = h(
      "table",
      { "aria-label": label },
      h("thead", {}, head),
      this.#body,
    ) as HTMLTableElement;
  }

  /** Show `rows`: new rows added, gone rows removed, the others' cells updated. */
  update(rows: readonly T[]): void {
    const seen = new Set<string>();
    let before: ChildNode | null = this.#body.firstChild;
    for (const row of rows) {
      const key = this.#key(row);
      seen.add(key);
      let entry = this.#rows.get(key);
      if (!entry) {
        const tr = h("tr", { "data-key": key }) as HTMLTableRowElement;
        for (const _ of this.#columns) tr.append(h("td"));
        tr.append(h("td"));
        entry = { tr, actionsKey: "" };
        this.#rows.set(key, entry);
      }
      this.#fill(entry, row);
      if (entry.tr !== before) this.#body.insertBefore(entry.tr, before);
      else before = before.nextSibling;
      before = entry.tr.nextSibling;
    }
    for (const [key, entry] of this.#rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        this.#rows.delete(key);
      }
    }
    this.#body.querySelector("tr.empty")?.remove();
    if (rows.length === 0) {
      this.#body.append(
        h(
          "tr",
          { class: "empty" },
          h("td", { colspan: String(this.#columns.length + 1), class: "hint" }, this.#empty),
        ),
      );
    }
  }

  #fill(entry: { tr: HTMLTableRowElement; actionsKey: string }, row: T): void {
    const cells = entry.tr.cells;
    this.#columns.forEach((c, i) => {
      const cell = cells[i];
      const text = c.text(row);
      if (cell.textContent !== text) cell.textContent = text;
      cell.className = `${c.num ? "num " : ""}${c.className?.(row) ?? ""}`.trim();
    });
    const actions = this.#actions(row);
    const actionsKey = actions.map((b) => b.textContent).join("|");
    if (actionsKey !== entry.actionsKey) {
      cells[this.#columns.length].replaceChildren(...actions);
      entry.actionsKey = actionsKey;
    }
  }
}

/** `1.5 KiB`-style sizes. */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A rate in bytes per second. */
export function rate(n: number): string {
  return `${bytes(Math.round(n))}/s`;
}

/** How long ago an ISO time was, as `1h02m`, `3m05s` or `12s`. */
export function age(iso: string | null): string {
  if (iso === null) return "";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

const SVG = "http://www.w3.org/2000/svg";

/** Total throughput over the last minutes: two lines (in, out) in an inline SVG. */
export class ThroughputChart {
  readonly element: HTMLElement;
  readonly #svg: SVGSVGElement;
  readonly #in: SVGPolylineElement;
  readonly #out: SVGPolylineElement;
  readonly #label: HTMLElement;
  readonly #samples: { in: number; out: number }[] = [];
  #lastAt = 0;
  static readonly SAMPLES = 180; // one a second: three minutes

  constructor() {
    this.#svg = document.createElementNS(SVG, "svg") as SVGSVGElement;
    this.#svg.setAttribute("class", "chart");
    this.#svg.setAttribute("viewBox", `0 0 ${ThroughputChart.SAMPLES} 100`);
    this.#svg.setAttribute("preserveAspectRatio", "none");
    this.#svg.setAttribute("role", "img");
    this.#in = document.createElementNS(SVG, "polyline") as SVGPolylineElement;
    this.#out = document.createElementNS(SVG, "polyline") as SVGPolylineElement;
    this.#in.setAttribute("class", "in");
    this.#out.setAttribute("class", "out");
    this.#svg.append(this.#in, this.#out);
    this.#label = h("p", { class: "hint" }, "");
    this.element = h("div", {}, this.#svg, this.#label);
  }

  /** Add the current total rates (at most one sample a second is kept). */
  add(inRate: number, outRate: number): void {
    const now = Date.now();
    if (now - this.#lastAt < 1000 && this.#samples.length > 0) {
      this.#samples[this.#samples.length - 1] = { in: inRate, out: outRate };
    } else {
      this.#samples.push({ in: inRate, out: outRate });
      this.#lastAt = now;
      if (this.#samples.length > ThroughputChart.SAMPLES) this.#samples.shift();
    }
    this.#draw(inRate, outRate);
  }

  #draw(inRate: number, outRate: number): void {
    const max = Math.max(1024, ...this.#samples.map((s) => Math.max(s.in, s.out)));
    const offset = ThroughputChart.SAMPLES - this.#samples.length;
    const points = (pick: (s: { in: number; out: number }) => number) =>
      this.#samples.map((s, i) => `${offset + i},${(100 - (pick(s) / max) * 96).toFixed(1)}`).join(
        " ",
      );
    this.#in.setAttribute("points", points((s) => s.in));
    this.#out.setAttribute("points", points((s) => s.out));
    this.#svg.setAttribute("aria-label", `Throughput: in ${rate(inRate)}, out ${rate(outRate)}`);
    this.#label.textContent = `Last 3 minutes, peak ${rate(max)}. Now: in ${
      rate(inRate)
    } (blue), out ${rate(outRate)} (orange, dashed)`;
  }
}

/** What a command answered: its result, or its error message. */
export type Answer = { ok: true; result: unknown } | { ok: false; error: string };

/** Run the program's command `name` with `body`. */
export async function post(name: string, body: Record<string, unknown>): Promise<Answer> {
  try {
    const res = await fetch(`/api/${name}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const reply = await res.json();
    return res.ok
      ? { ok: true, result: reply.result }
      : { ok: false, error: String(reply.error ?? res.status) };
  } catch (err) {
    return {
      ok: false,
      error: `Cannot reach the program: ${err instanceof Error ? err.message : String(err)}`,
    };
  }
}

/**
 * Keep one WebSocket to the program open: each message is a snapshot for
 * `render`. When it closes, the banner says so and it reconnects; a
 * restarted program no longer knows this page's login, and the banner says
 * how to get a new one.
 */
export function connectFeed(
  program: string,
  urlCommand: string,
  render: (snapshot: unknown) => void,
): HTMLElement {
  const banner = h("div", { id: "banner", role: "status" });
  let delay = 500;
  const show = (text: string) => {
    banner.textContent = text;
    banner.className = text === "" ? "" : "shown";
  };
  const open = () => {
    const ws = new WebSocket(
      `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    );
    ws.onopen = () => {
      delay = 500;
      show("");
    };
    ws.onmessage = (m) => render(JSON.parse(String(m.data)).snapshot);
    ws.onclose = async () => {
      const loggedIn = await fetch("/", { credentials: "same-origin" }).then(
        (r) => r.status !== 401,
        () => null,
      );
      if (loggedIn === false) {
        show(
          `The ${program} restarted: this page's login is gone. Run \`${urlCommand}\` for a new URL.`,
        );
      } else {
        show(`The ${program} stopped or restarted: reconnecting…`);
      }
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 5000);
    };
  };
  open();
  return banner;
}

let lastId = 0;

/**
 * A `<label>` naming `control` (by `for`, so the control's accessible name
 * is exactly `label`); the control gets an id when it has none.
 */
export function labelFor(label: string, control: HTMLElement): HTMLElement {
  if (control.id === "") control.id = `field-${++lastId}`;
  return h("label", { for: control.id }, label);
}

/** A labelled field: its label, a space, the control. */
export function field(label: string, input: HTMLElement): HTMLElement {
  return h("div", {}, labelFor(label, input), " ", input);
}

/** Put `text` in `el` as text, never as HTML. */
export function say(el: HTMLElement, text: string): void {
  el.textContent = text;
}

/**
 * A button action: run the program's `command` with `body`, then show its
 * error in `error`, or clear it when the command succeeded.
 */
export function act(
  error: HTMLElement,
  command: string,
  body: Record<string, unknown> = {},
): () => Promise<void> {
  return async () => {
    const answer = await post(command, body);
    say(error, answer.ok ? "" : answer.error);
  };
}

/** Chat: the history (peer text as text), and a line to send. */
export function chatView() {
  const list = h("ul", { class: "chat", role: "log", "aria-label": "Chat history" });
  const input = h("input", {
    type: "text",
    maxlength: "1000",
    autocomplete: "off",
  }) as HTMLInputElement;
  const error = h("p", { class: "error", role: "alert" });
  const send = async () => {
    const answer = await post("chat", { text: input.value });
    if (answer.ok) input.value = "";
    say(error, answer.ok ? "" : answer.error);
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") void send();
  });
  let shown = "";
  return {
    el: section("Chat", list, field("Message", input), button("Send", send), error),
    update(chat: readonly { at: string; from: string; text: string }[]) {
      const last = chat.at(-1);
      const key = last === undefined ? "" : `${chat.length}:${last.at}:${last.text}`;
      if (key === shown) return;
      shown = key;
      list.replaceChildren(
        ...chat.map((l) =>
          h("li", {}, `${new Date(l.at).toLocaleTimeString()} ${l.from}: `, l.text)
        ),
      );
      list.scrollTop = list.scrollHeight;
    },
  };
}
