import { udpDrops } from "../core/datagram.ts";
import assert from "node:assert/strict";
import { daemonScreen } from "./screen.ts";
import type { DaemonConnection, DaemonSnapshot } from "./state.ts";

const NOW = Date.parse("2026-12-01T04:00:00Z");

function connection(stream: number): DaemonConnection {
  return {
    stream,
    pfo: "web",
    proto: "tcp",
    client: "127.0.0.1:40001",
    target: "db01:80",
    address: "10.1.2.3:80",
    since: new Date(NOW - 3000).toISOString(),
    bytesIn: 5000,
    bytesOut: 200,
    rateIn: 1000,
    rateOut: 0,
  };
}

const snapshot: DaemonSnapshot = {
  session: {
    phase: "established",
    id: "abcd0123",
    since: null,
    console: "office:7470",
    fingerprint: "SHA256:console",
    lastError: null,
    proxy: null,
  },
  fingerprint: "SHA256:me",
  connections: [connection(1), connection(3)],
  allow: "10.1.0.0/16 port 80",
  chat: [],
  udpDrops: udpDrops(),
};

const extras = { now: NOW, startedAt: NOW - 10_000, closed: { bytesIn: 1000, bytesOut: 0 } };

Deno.test("daemonScreen() shows the Console and its pinned fingerprint, the allow-list and every connection with its target and rates", () => {
  const lines = daemonScreen(snapshot, { size: { columns: 140, rows: 30 }, events: [] }, extras);
  const text = lines.map((l) => l.text).join("\n");
  assert.match(text, /Console office:7470 {2}pinned SHA256:console/);
  assert.match(text, /allow-list: the Console may reach 10\.1\.0\.0\/16 port 80/);
  assert.match(text, /in 11 KB \(2\.0 KB\/s\) {2}out 400 B \(-\) {2}open 2/);
  const rows = lines.filter((l) => /^\s*\d+\s+web\s+tcp/.test(l.text)).map((l) => l.text);
  assert.equal(rows.length, 2);
  assert.match(
    rows[0],
    /^\s*3\s+web\s+tcp\s+127\.0\.0\.1:40001\s+db01:80\s+10\.1\.2\.3:80\s+3s\s+5\.0 KB\s+200 B\s+1\.0 KB\/s\s+-$/,
  );
});

Deno.test("daemonScreen() under 60x15 shows the compact summary, and a failure's reason while not established", () => {
  const failing: DaemonSnapshot = {
    ...snapshot,
    session: { ...snapshot.session, phase: "waiting", lastError: "refused\x1b[2J" },
  };
  const compact = daemonScreen(failing, { size: { columns: 40, rows: 10 }, events: [] }, extras);
  assert.match(compact.map((l) => l.text).join("\n"), /session: waiting[^]*open 2/);
  const full = daemonScreen(failing, { size: { columns: 100, rows: 30 }, events: [] }, extras);
  const warn = full.find((l) => l.style === "warn");
  assert.equal(warn?.text, "last error: refused\\x1b[2J");
});
