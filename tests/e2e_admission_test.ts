/**
 * End-to-end tests of who may hold the Console's one session: a Daemon the
 * Console admits without asking takes the place of a pending unknown one,
 * an established session is never displaced by another Daemon, and the
 * operator's close or reject withdraws acceptance.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startConsole, startDaemon, statusOf, tempDir, within } from "./_harness.ts";
import { handDaemon, type HandSession } from "./_hostile.ts";
import { loadOrCreateIdentity } from "../lib/core/identity.ts";
import { type Message, Tag } from "../lib/core/protocol.ts";
import { settingsPaths } from "../lib/settings/paths.ts";

/** The tag name and, for REJECT and CLOSE, the code: "PENDING", "REJECT busy". */
function said(msg: Message | null): string {
  if (msg === null) return "end";
  const name = Object.entries(Tag).find(([, v]) => v === msg.tag)?.[0] ?? String(msg.tag);
  return "code" in msg ? `${name} ${msg.code}` : name;
}

/** Waits for the Console's status to show `state` (bounded). */
async function sessionState(
  con: Parameters<typeof statusOf>[0],
  state: string,
): Promise<Awaited<ReturnType<typeof statusOf>>> {
  let last = await statusOf(con);
  for (let i = 0; i < 50 && last.session.state !== state; i++) {
    await new Promise((r) => setTimeout(r, 100));
    last = await statusOf(con);
  }
  assert.equal(last.session.state, state);
  return last;
}

Deno.test("a trusted Daemon takes the slot from a pending unknown Daemon, which is told busy and why", async () => {
  const trustedDir = await tempDir("pf-daemon-");
  const paths = settingsPaths(`${trustedDir}/portferry-daemon.yaml`);
  const { fingerprint } = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  await using con = await startConsole({ settings: `trusted:\n  - ${fingerprint}\n` });
  await using unknown = await startDaemon(con, { args: ["--no-reconnect"] });
  await con.out.waitFor(/asks for a session/);
  await unknown.out.waitFor(/Waiting for the Console operator to accept/);

  const mark = con.out.mark;
  await using trusted = await startDaemon(con, { dir: trustedDir });
  await trusted.out.waitFor(/Session established/);
  await con.out.waitFor(/Session established .*trusted fingerprint/, { from: mark });
  await con.out.waitFor(
    /WARN .*a pending session gives its place to a Daemon admitted without asking/,
    { from: mark },
  );
  const exit = await within(unknown.status, 15_000, "the displaced Daemon to exit");
  assert.equal(exit.code, 1);
  assert.match(
    unknown.out.text(),
    /^error: .*the Console is busy: a Daemon it admits without asking took the place/m,
  );
  const now = await statusOf(con);
  assert.equal(now.session.state, "established");
  assert.equal(now.session.peer?.fingerprint, fingerprint);
});

Deno.test("a Daemon accepted earlier in this run, or holding the token, takes the slot from a pending unknown one", async () => {
  await using con = await startConsole();
  const known = await handDaemon(con);
  const stranger = await handDaemon(con);

  // Accepted by the operator, then it leaves of its own accord.
  {
    using first = await known.connect();
    assert.equal(said(first.first), "PENDING");
    assert.equal((await con.cli("session", "accept")).code, 0);
    assert.equal(said(await first.next()), "ACCEPT");
  }
  await sessionState(con, "none");

  using pending = await stranger.connect();
  assert.equal(said(pending.first), "PENDING");
  using back = await known.connect();
  assert.equal(said(back.first), "ACCEPT");
  assert.equal(said(await pending.next()), "REJECT busy");
  const now = await sessionState(con, "established");
  assert.equal(now.session.peer?.fingerprint, known.fingerprint);
  await con.out.waitFor(/Session established .*accepted earlier in this run/);

  // A token set while a Daemon waits: the first Daemon holding it takes the slot.
  back[Symbol.dispose]();
  await sessionState(con, "none");
  using waiting = await stranger.connect();
  assert.equal(said(waiting.first), "PENDING");
  const dir = await tempDir("pf-token-");
  await Deno.writeTextFile(`${dir}/token`, "s3cret-token\n", { mode: 0o600 });
  const mark = con.out.mark;
  await Deno.writeTextFile(con.settingsPath, `tokenFile: ${dir}/token\n`, { mode: 0o600 });
  await con.out.waitFor(/settings reloaded/, { from: mark });
  const holder = await handDaemon(con);
  using withToken = await holder.connect("s3cret-token");
  assert.equal(said(withToken.first), "ACCEPT");
  assert.equal(said(await waiting.next()), "REJECT busy");
  assert.equal((await statusOf(con)).session.peer?.fingerprint, holder.fingerprint);
});

Deno.test("another unknown Daemon is told busy while one is pending, and even a trusted one is told busy by an established session", async () => {
  const dir = await tempDir("pf-daemon-");
  const paths = settingsPaths(`${dir}/portferry-daemon.yaml`);
  const trustedId = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "daemon",
  });
  await using con = await startConsole({ settings: `trusted:\n  - ${trustedId.fingerprint}\n` });
  const first = await handDaemon(con);
  const second = await handDaemon(con);

  using pending = await first.connect();
  assert.equal(said(pending.first), "PENDING");
  using other = await second.connect();
  assert.equal(said(other.first), "REJECT busy");
  assert.match((other.first as { reason: string }).reason, /already has a pending session/);
  const still = await statusOf(con);
  assert.equal(still.session.state, "pending");
  assert.equal(still.session.peer?.fingerprint, first.fingerprint);

  assert.equal((await con.cli("session", "accept")).code, 0);
  assert.equal(said(await pending.next()), "ACCEPT");
  const mark = con.out.mark;
  await using trusted = await startDaemon(con, { dir, args: ["--no-reconnect"] });
  const exit = await within(trusted.status, 15_000, "the trusted Daemon to be refused");
  assert.equal(exit.code, 1);
  assert.match(trusted.out.text(), /^error: .*busy.*already has an established session/m);
  await con.out.waitFor(/WARN .*session refused: busy/, { from: mark });
  const held = await statusOf(con);
  assert.equal(held.session.state, "established");
  assert.equal(held.session.peer?.fingerprint, first.fingerprint);
});

Deno.test("`session close` withdraws acceptance: the same Daemon reconnecting anyway waits for the operator again", async () => {
  await using con = await startConsole();
  const daemon = await handDaemon(con);
  let session: HandSession = await daemon.connect();
  try {
    assert.equal(said(session.first), "PENDING");
    assert.equal((await con.cli("session", "accept")).code, 0);
    assert.equal(said(await session.next()), "ACCEPT");
    assert.equal((await con.cli("session", "close")).code, 0);
    const close = await session.next();
    assert.equal(said(close), "CLOSE closed");
    assert.equal((close as { final: boolean }).final, true, "told not to reconnect");
    session[Symbol.dispose]();
    await sessionState(con, "none");

    // It reconnects anyway, with the same identity.
    session = await daemon.connect();
    assert.equal(said(session.first), "PENDING");
    assert.equal((await statusOf(con)).session.state, "pending");

    // Rejected by the operator: still asked the next time.
    assert.equal((await con.cli("session", "reject")).code, 0);
    assert.equal(said(await session.next()), "REJECT rejected");
    session[Symbol.dispose]();
    await sessionState(con, "none");
    session = await daemon.connect();
    assert.equal(said(session.first), "PENDING");
  } finally {
    session[Symbol.dispose]();
  }
});
