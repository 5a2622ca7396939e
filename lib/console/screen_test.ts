import { dropTotals, udpDrops } from "../core/datagram.ts";
import assert from "node:assert/strict";
import { hasControls } from "../core/text.ts";
import type { ScreenView } from "../ui/screen.ts";
import type { ConnectionInfo } from "./pfos.ts";
import { consoleScreen, type ConsoleScreenExtras } from "./screen.ts";
import type { ConsoleSnapshot, PfoSnapshot } from "./state.ts";

const NOW = Date.parse("2026-12-01T04:00:00Z");

function pfo(name: string, connections: number, extra: Partial<PfoSnapshot> = {}): PfoSnapshot {
  return {
    name,
    proto: "tcp",
    listen: "127.0.0.1:8080",
    target: "db01:80",
    enabled: true,
    state: "listening",
    session: true,
    error: null,
    bound: ["127.0.0.1:8080"],
    listeners: 1,
    connections,
    connectionsTotal: connections,
    connectionsRefused: 0,
    connectionsFailed: 0,
    connectionsDenied: 0,
    clients: [],
    bytesIn: 2_000_000,
    bytesOut: 3000,
    rates: { bytesInPerSecond: 1_500_000, bytesOutPerSecond: 0, connectionsPerSecond: 0 },
    ...extra,
  } as PfoSnapshot;
}

function connection(id: number): ConnectionInfo {
  return {
    id,
    pfo: "web",
    proto: "tcp",
    client: `127.0.0.1:${40000 + id}`,
    target: "db01:80",
    since: new Date(NOW - id * 1000).toISOString(),
    stream: id,
    bytesIn: id * 1000,
    bytesOut: 10,
  };
}

function snapshot(extra: Partial<ConsoleSnapshot> = {}): ConsoleSnapshot {
  return {
    session: {
      state: "established",
      id: "abcd0123",
      since: null,
      peer: {
        address: "10.0.0.5:51000",
        host: "lab",
        user: "ana",
        os: "linux",
        fingerprint: "SHA256:peer",
      },
      streams: 0,
    },
    fingerprint: "SHA256:me",
    listen: "0.0.0.0:7470",
    settings: "c.yaml",
    settingsError: null,
    pfos: [pfo("web", 2)],
    connections: [connection(1), connection(2)],
    trust: [],
    allowList: [],
    chat: [],
    udpDrops: dropTotals(udpDrops()),
    ...extra,
  };
}

const extras: ConsoleScreenExtras = {
  now: NOW,
  startedAt: NOW - 65_000,
  rates: (id) => (id === 2 ? { in: 2000, out: 0 } : null),
  asking: false,
};

function view(columns: number, rows: number, events: string[] = []): ScreenView {
  return { size: { columns, rows }, events: events.map((text) => ({ text })) };
}

const texts = (lines: { text: string }[]) => lines.map((l) => l.text).join("\n");

Deno.test("consoleScreen() shows the header, the PFO row with its open connections and the connections newest first", () => {
  const lines = consoleScreen(snapshot(), view(130, 30, ["04:00:00 chat"]), extras);
  const text = texts(lines);
  assert.match(lines[0].text, /session: established {2}ana@lab \(linux\) from 10\.0\.0\.5:51000/);
  assert.match(text, /Daemon SHA256:peer/);
  assert.match(text, /up 1m05s .* in 2\.0 MB \(1\.5 MB\/s\) {2}out 3\.0 KB \(-\) {2}open 2/);
  assert.match(
    text,
    /^web\s+tcp\s+127\.0\.0\.1:8080\s+db01:80\s+listening\s+2\s+1\.5 MB\/s\s+-\s+2\.0 MB\s+3\.0 KB$/m,
  );
  const ids = lines.filter((l) => /^\s*\d+\s+web\s+127/.test(l.text)).map((l) => l.text.trim()[0]);
  assert.deepEqual(ids, ["2", "1"]);
  assert.match(
    text,
    /^\s*2\s+web\s+127\.0\.0\.1:40002\s+db01:80\s+2s\s+2\.0 KB\s+10 B\s+2\.0 KB\/s -$/m,
  );
  assert.match(text, /04:00:00 chat/);
  assert.ok(lines.length <= 30);
});

Deno.test("consoleScreen() shows as many connections as fit, then `… and N more`, and never more rows or columns than the screen", () => {
  const many = Array.from({ length: 200 }, (_, i) => connection(i + 1));
  for (const [columns, rows] of [[60, 15], [80, 24], [200, 60]]) {
    const lines = consoleScreen(snapshot({ connections: many }), view(columns, rows), extras);
    assert.ok(lines.length <= rows, `${lines.length} rows at ${columns}x${rows}`);
    const more = texts(lines).match(/… and (\d+) more/);
    assert.ok(more, `no "… and N more" at ${columns}x${rows}`);
    const shown = lines.filter((l) => /^\s*\d+\s+web\s/.test(l.text)).length;
    assert.equal(shown + Number(more[1]), 200);
  }
});

Deno.test("consoleScreen() under 60x15 shows the compact summary", () => {
  const text = texts(consoleScreen(snapshot(), view(59, 20, ["04:00:00 last"]), extras));
  assert.match(text, /PFOs 1 {2}open 2 {2}in 1\.5 MB\/s out -/);
  assert.doesNotMatch(text, /NAME\s+PROTO/);
  assert.match(text, /04:00:00 last/);
});

Deno.test("consoleScreen() draws a pending session's question on top, with the Daemon's identity", () => {
  const pending = snapshot({ session: { ...snapshot().session, state: "pending" } });
  const lines = consoleScreen(pending, view(100, 30), { ...extras, asking: true });
  const text = texts(lines);
  assert.match(text, /\| ana@lab \(linux\) from 10\.0\.0\.5:51000\s+\|/);
  assert.match(text, /\| fingerprint SHA256:peer\s+\|/);
  assert.match(text, /\[y\]es \/ \[n\]o \/ \[t\]rust always/);
  assert.equal(lines.length, 30);
  assert.ok(lines.filter((l) => l.style === "overlay").length >= 5);
  // Not asked (headless question elsewhere, or answered): no box.
  assert.doesNotMatch(texts(consoleScreen(pending, view(100, 30), extras)), /\[y\]es/);
});

Deno.test("consoleScreen() escapes a hostile Daemon's host name and PFO errors", () => {
  const session = snapshot().session;
  const hostile = snapshot({
    session: { ...session, peer: { ...session.peer!, host: "x\x1b[2J\x1b]0;t\x07\u202e" } },
    pfos: [pfo("web", 0, { state: "failed" as PfoSnapshot["state"], error: "bind\r\nfailed" })],
  });
  const text = texts(consoleScreen(hostile, view(150, 30), extras));
  assert.match(text, /x\\x1b\[2J\\x1b\]0;t\\x07\\u202e/);
  assert.match(text, /failed: bind\\x0d\\x0afailed/);
  assert.ok(text.split("\n").every((line) => !hasControls(line)), text);
});

Deno.test("consoleScreen() puts the two fingerprints on two lines when one line would cut the Console's", () => {
  const daemonFp = "SHA256:j2YGE/1suyTCAH0prOBeLw4Gu8KekMTe3qWeVkcSO4Q";
  const consoleFp = "SHA256:Z6i1nrzskr5gwqC3WXOaDhYeYPnhcZh4D+NP0ogI72A";
  const base = snapshot();
  const s = snapshot({
    fingerprint: consoleFp,
    session: { ...base.session, peer: { ...base.session.peer!, fingerprint: daemonFp } },
  });
  const narrow = consoleScreen(s, view(120, 35), extras).map((l) => l.text);
  assert.ok(narrow.includes(`Daemon ${daemonFp}`), narrow.slice(0, 4).join("\n"));
  assert.ok(narrow.includes(`this Console ${consoleFp}`), narrow.slice(0, 4).join("\n"));
  const wide = consoleScreen(s, view(140, 35), extras).map((l) => l.text);
  assert.ok(wide.includes(`Daemon ${daemonFp}   this Console ${consoleFp}`));
});
