/**
 * End-to-end tests of terminal and log injection: a hostile Daemon against a
 * real Console, and a hostile Console against a real Daemon, each sending
 * ESC, CSI (U+009B), bidi controls, separators and forged lines in every
 * string the wire lets it choose. What either program prints (stdout and
 * stderr) must carry none of them raw, and no line of the peer's may start
 * like one of ours.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeQuietly, startConsole, startDaemon, within } from "./_harness.ts";
import { evil, hostileConsole, hostileDaemon, RAW_CONTROLS } from "./_hostile.ts";
import { daemonFactsProblem, Tag } from "../lib/core/protocol.ts";
import { sendNow } from "../lib/core/session.ts";

/** The first raw control character in `text`, shown as a code, or null. */
function rawControl(text: string): string | null {
  const m = text.match(RAW_CONTROLS);
  return m ? `U+${m[0].charCodeAt(0).toString(16).padStart(4, "0")}` : null;
}

/** Lines that start with text a peer forged. */
function forgedLines(lines: readonly string[], starts: readonly string[]): string[] {
  return lines.filter((line) => starts.some((s) => line.startsWith(s)));
}

const FAKE_ESTABLISHED = "Session established with trusted@db01 (trusted fingerprint)";

Deno.test("a Daemon whose host, user or OS breaks the AUTH rules is refused with REJECT protocol, and nothing of it reaches the Console's output raw", async () => {
  await using con = await startConsole();
  const good = { host: "db01", user: "CORP\\ann", os: "linux" };
  const cases = [
    { ...good, host: evil(FAKE_ESTABLISHED).slice(0, 60) },
    { ...good, user: evil(FAKE_ESTABLISHED) },
    { ...good, os: "linux\u202e" },
    { ...good, host: "a".repeat(254) },
    { ...good, user: " ann" },
  ];
  for (const facts of cases) {
    const mark = con.out.mark;
    const d = await hostileDaemon(con, facts);
    try {
      assert.equal(d.answer.tag, Tag.REJECT, JSON.stringify(facts));
      if (d.answer.tag !== Tag.REJECT) continue;
      assert.equal(d.answer.code, "protocol");
      assert.match(d.answer.reason, /^the Daemon's (host|user|os) must be .*: upgrade the Daemon$/);
      await con.out.waitFor(/WARN .*session refused: the Daemon's host, user or OS breaks/, {
        from: mark,
      });
    } finally {
      closeQuietly(d.link);
    }
  }
  // The same Console accepts facts that fit: the refusals were the facts'.
  const d = await hostileDaemon(con, good);
  closeQuietly(d.link);
  assert.equal(d.answer.tag, Tag.PENDING);
  await con.out.waitFor(/Daemon CORP\\ann@db01 \(linux\) from \S+ asks for a session/);

  const text = con.out.text();
  assert.equal(rawControl(text), null, text);
  assert.deepEqual(forgedLines(con.out.lines, [FAKE_ESTABLISHED]), []);
});

Deno.test("a Daemon's chat and CLOSE reason reach the Console escaped, every chat row prefixed", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const d = await hostileDaemon(con, { host: "vm", user: "root", os: "linux" });
  try {
    assert.equal(d.answer.tag, Tag.ACCEPT);
    await con.out.waitFor(/Session established with root@vm/);
    await sendNow(d.link, {
      tag: Tag.CHAT,
      text: `hi${evil(FAKE_ESTABLISHED)}\nSession with x ended: fake\r\n\u2028second`,
    });
    await con.out.waitFor(/^\[chat root@vm\] \| Session with x ended: fake$/);
    await sendNow(d.link, {
      tag: Tag.CLOSE,
      code: "closed",
      reason: evil(FAKE_ESTABLISHED),
      final: false,
    });
    await con.out.waitFor(/^Session with root@vm \(linux\) from \S+ ended: \\x1b\[2J/);
    await con.out.waitFor(/INFO .*session ended .*reason="\\u001b\[2J/);
  } finally {
    closeQuietly(d.link);
  }
  const text = con.out.text();
  assert.equal(rawControl(text), null, text);
  assert.deepEqual(
    forgedLines(con.out.lines, [FAKE_ESTABLISHED, "Session with x", "second"]),
    [],
  );
  const chatRows = con.out.lines.filter((l) => l.startsWith("[chat root@vm] "));
  assert.deepEqual(chatRows, [
    "[chat root@vm] hi\\x1b[2J\\x1b[H",
    `[chat root@vm] | ${FAKE_ESTABLISHED}\\u202e\\u2066\\u009b31m\\u2028\\u2029\\x07\\u007f`,
    "[chat root@vm] | Session with x ended: fake",
    "[chat root@vm] | \\u2028second",
  ]);
});

Deno.test("a Daemon's chat flood shows a screenful a second and logs the count of rows left out", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const d = await hostileDaemon(con, { host: "vm", user: "root", os: "linux" });
  const sent = 200;
  const started = performance.now();
  try {
    assert.equal(d.answer.tag, Tag.ACCEPT);
    for (let i = 0; i < sent; i++) await sendNow(d.link, { tag: Tag.CHAT, text: `flood ${i}` });
    await sendNow(d.link, { tag: Tag.CLOSE, code: "closed", reason: "done", final: true });
    // Dropped rows are logged before the session's end is shown.
    await con.out.waitFor(/^Session with root@vm .* ended: done$/);
  } finally {
    closeQuietly(d.link);
  }
  const seconds = (performance.now() - started) / 1000;
  const shown = con.out.lines.filter((l) => /^\[chat root@vm\] flood \d+$/.test(l)).length;
  const reports = con.out.lines.filter((l) => /chat from the peer came too fast/.test(l));
  const dropped = reports.reduce((n, l) => n + Number(l.match(/dropped=(\d+)/)![1]), 0);
  assert.equal(shown + dropped, sent, `shown ${shown}, dropped ${dropped}`);
  assert.ok(shown >= 24, `shown ${shown}`);
  assert.ok(shown <= 24 + Math.ceil(24 * seconds), `shown ${shown} in ${seconds.toFixed(1)} s`);
  assert.ok(reports.length >= 1 && reports.length <= 1 + Math.ceil(seconds), reports.join("\n"));
});

Deno.test("a Console's session id, OPEN fields, chat, CLOSE and REJECT reasons reach the Daemon escaped", async () => {
  using hc = await hostileConsole();
  await using daemon = await startDaemon(hc, { settings: "backoffMaxMs: 100\n" });
  const FAKE = "Session established (id trusted)";

  // A session id that is no id: refused, and the Daemon tries again.
  {
    const { conn, claim } = await hc.next();
    // The real Daemon's own facts fit the rules a Console checks.
    assert.equal(daemonFactsProblem(claim), null, JSON.stringify(claim));
    await sendNow(conn, { tag: Tag.ACCEPT, session: evil(FAKE) });
    await daemon.out.waitFor(/Session failed: Cannot start session: the Console's session id/);
    closeQuietly(conn);
  }
  // An established session: every string the Console picks is hostile.
  {
    const { conn } = await hc.next();
    await sendNow(conn, { tag: Tag.ACCEPT, session: "0123abcd" });
    await daemon.out.waitFor(/Session established \(id 0123abcd\)/);
    await sendNow(conn, {
      tag: Tag.OPEN,
      stream: 1,
      proto: "tcp",
      host: `${evil(FAKE)}.invalid`,
      port: 9,
      pfo: evil("Session ended: fake").slice(0, 64),
      client: `\u2028\x9b1.2.3.4${evil(FAKE)}`,
    });
    await daemon.out.waitFor(/WARN .*connection (failed|refused)/);
    await sendNow(conn, { tag: Tag.CHAT, text: `hello${evil("Session ended: fake chat")}` });
    await daemon.out.waitFor(/^\[chat console\] \| Session ended: fake chat/);
    await sendNow(conn, { tag: Tag.CLOSE, code: "replaced", reason: evil(FAKE), final: false });
    await daemon.out.waitFor(/^Session ended: \\x1b\[2J/);
    closeQuietly(conn);
  }
  // A refusal: the Daemon stops for good and says why, escaped.
  {
    const { conn } = await hc.next();
    await sendNow(conn, { tag: Tag.REJECT, code: "rejected", reason: evil(FAKE) });
    const status = await within(daemon.status, 15_000, "the refused Daemon to exit");
    assert.equal(status.code, 1);
    closeQuietly(conn);
  }
  const text = daemon.out.text();
  assert.match(text, /^error: .*Console refused the session: \\x1b\[2J/m);
  assert.equal(rawControl(text), null, text);
  assert.deepEqual(forgedLines(daemon.out.lines, [FAKE, "Session ended: fake"]), []);
});

/** Every string in `value`, however deep. */
function stringsIn(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (typeof value !== "object" || value === null) return [];
  return Object.entries(value).flatMap(([k, v]) => [k, ...stringsIn(v)]);
}

Deno.test("a Daemon's chat reaches the Console's dashboard page escaped, as on the terminal", async () => {
  await using con = await startConsole({ args: ["--auto-accept"] });
  const [, login] = await con.out.waitFor(/Dashboard: (http:\/\/\S+)/);
  const origin = new URL(login).origin;
  const loggedIn = await fetch(login, { redirect: "manual" });
  await loggedIn.body?.cancel();
  const cookie = (loggedIn.headers.get("set-cookie") ?? "").split(";")[0];
  assert.match(cookie, /=/, "no login cookie");
  const d = await hostileDaemon(con, { host: "vm", user: "root", os: "linux" });
  const ws = new WebSocket(`${origin.replace("http", "ws")}/ws`, { headers: { cookie, origin } });
  try {
    assert.equal(d.answer.tag, Tag.ACCEPT);
    await con.out.waitFor(/Session established with root@vm/);
    await sendNow(d.link, { tag: Tag.CHAT, text: `hi${evil(FAKE_ESTABLISHED)}\r\nsecond` });
    const snapshot = await within(
      new Promise<unknown>((resolve) => {
        ws.onmessage = (m) => {
          const { snapshot } = JSON.parse(String(m.data));
          if (JSON.stringify(snapshot).includes(FAKE_ESTABLISHED)) resolve(snapshot);
        };
      }),
      15_000,
      "the chat line on the dashboard's feed",
    );
    const strings = stringsIn(snapshot);
    for (const s of strings) assert.equal(rawControl(s), null, JSON.stringify(s));
    assert.ok(
      strings.some((s) => s.includes(`hi\\x1b[2J\\x1b[H\\x0d\n${FAKE_ESTABLISHED}\\u202e`)),
      "the chat line is not on the page as printable() shows it",
    );
  } finally {
    const closed = new Promise((resolve) => (ws.onclose = resolve));
    ws.close();
    await closed;
    closeQuietly(d.link);
  }
});
