import assert from "node:assert/strict";
import { EventHub } from "../core/events.ts";
import { createLogger } from "../core/log.ts";
import { ControlError } from "./control.ts";
import { DASHBOARD_CSP, type DashboardServer, serveDashboard } from "./dashboard.ts";

const quiet = createLogger({ level: "error", sink: () => {} });

interface Fixture {
  readonly dash: DashboardServer;
  readonly hub: EventHub<{ type: string }>;
  readonly calls: Record<string, unknown>[];
  state: { n: number };
}

function start(): Fixture {
  const hub = new EventHub<{ type: string }>();
  const calls: Record<string, unknown>[] = [];
  const fixture: Omit<Fixture, "dash"> = { hub, calls, state: { n: 1 } };
  const dash = serveDashboard({
    address: { host: "127.0.0.1", port: 0 },
    program: "Console",
    urlCommand: "console dashboard",
    script: "/* page */",
    snapshot: () => ({ n: fixture.state.n }),
    subscribe: (signal) => hub.subscribe({ signal }),
    handlers: {
      echo: (body) => {
        calls.push(body);
        return { echoed: body };
      },
      refuse: () => {
        throw new ControlError('Cannot add PFO "x": bad listen', { status: 400 });
      },
    },
    log: quiet,
    pushEveryMs: 10,
    refreshMs: 100,
  });
  return { ...fixture, dash };
}

/** The status line of a request sent by hand (fetch will not send a foreign `Host`). */
async function rawStatusLine(port: number, request: string, host: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const head = `${request} HTTP/1.1\r\n${host === "" ? "" : `Host: ${host}\r\n`}` +
      "Connection: close\r\n\r\n";
    await conn.write(new TextEncoder().encode(head));
    const buf = new Uint8Array(512);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/** Log in with a fresh URL: the cookie header to send from then on. */
async function login(dash: DashboardServer): Promise<string> {
  const res = await fetch(dash.loginUrl(), { redirect: "manual" });
  await res.body?.cancel();
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/");
  const cookie = res.headers.get("set-cookie") ?? "";
  assert.match(cookie, /HttpOnly/);
  assert.match(cookie, /SameSite=Strict/);
  return cookie.split(";")[0];
}

Deno.test("serveDashboard() trades a login token once for a cookie, and answers 401 without one", async () => {
  const { dash } = start();
  await using _ = dash;
  const base = `http://127.0.0.1:${dash.port}`;
  const url = dash.loginUrl();
  const first = await fetch(url, { redirect: "manual" });
  await first.body?.cancel();
  assert.equal(first.status, 303);
  const again = await fetch(url, { redirect: "manual" });
  assert.equal(again.status, 401, "a login token worked twice");
  assert.match(await again.text(), /console dashboard/);
  const wrong = await fetch(`${base}/?token=${"0".repeat(48)}`);
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  const none = await fetch(`${base}/app.js`);
  assert.equal(none.status, 401);
  assert.match(await none.text(), /Run <code>console dashboard<\/code>/);
  const cookie = await login(dash);
  const page = await fetch(`${base}/`, { headers: { cookie } });
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-security-policy"), DASHBOARD_CSP);
  assert.match(await page.text(), /<script src="\/app.js"><\/script>/);
  const forged = await fetch(`${base}/`, { headers: { cookie: cookie.replace(/=.*/, "=abc") } });
  assert.equal(forged.status, 401);
  await forged.body?.cancel();
});

Deno.test("serveDashboard() refuses a foreign Host on any request and a foreign or missing Origin on POST", async () => {
  const { dash, calls } = start();
  await using _ = dash;
  const cookie = await login(dash);
  const api = `http://127.0.0.1:${dash.port}/api/echo`;
  const own = `http://127.0.0.1:${dash.port}`;
  for (const host of [`evil.example:${dash.port}`, `127.0.0.1:${dash.port + 1}`, ""]) {
    const line = await rawStatusLine(
      dash.port,
      `GET /?token=${dash.loginUrl().split("=")[1]}`,
      host,
    );
    assert.match(line, /^HTTP\/1\.1 421/, `Host "${host}" was let in`);
  }
  for (const origin of ["http://evil.example", `http://127.0.0.1:${dash.port + 1}`, null]) {
    const headers: Record<string, string> = { cookie };
    if (origin !== null) headers.origin = origin;
    const res = await fetch(api, { method: "POST", headers, body: "{}" });
    assert.equal(res.status, 403, `Origin ${origin} was let in`);
    await res.body?.cancel();
  }
  assert.equal(calls.length, 0);
  const ok = await fetch(api, {
    method: "POST",
    headers: { cookie, origin: own },
    body: JSON.stringify({ a: 1 }),
  });
  assert.deepEqual(await ok.json(), { result: { echoed: { a: 1 } } });
  const refused = await fetch(`${own}/api/refuse`, {
    method: "POST",
    headers: { cookie, origin: own },
    body: "{}",
  });
  assert.equal(refused.status, 400);
  assert.deepEqual(await refused.json(), { error: 'Cannot add PFO "x": bad listen' });
  const noCookie = await fetch(api, { method: "POST", headers: { origin: own }, body: "{}" });
  assert.equal(noCookie.status, 401);
  await noCookie.body?.cancel();
});

Deno.test("serveDashboard() pushes the snapshot over the WebSocket, again after an event", async () => {
  const f = start();
  await using _ = f.dash;
  const cookie = await login(f.dash);
  const port = f.dash.port;
  const foreign = await fetch(`http://127.0.0.1:${port}/ws`, {
    headers: { cookie, origin: "http://evil.example", upgrade: "websocket" },
  });
  assert.equal(foreign.status, 403);
  await foreign.body?.cancel();
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
    headers: { cookie, origin: `http://127.0.0.1:${port}` },
  });
  const messages: { program: string; snapshot: { n: number } }[] = [];
  const seen = (n: number) =>
    new Promise<void>((resolve) => {
      ws.addEventListener("message", function onMessage(m) {
        messages.push(JSON.parse(String(m.data)));
        if (messages.at(-1)!.snapshot.n === n) {
          ws.removeEventListener("message", onMessage);
          resolve();
        }
      });
    });
  await seen(1);
  assert.equal(messages[0].program, "Console");
  f.state.n = 2;
  f.hub.emit({ type: "changed" });
  await seen(2);
  // With nothing happening, the page still gets a fresh snapshot (ages, falling rates).
  f.state.n = 3;
  await seen(3);
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  f.hub.close();
  assert.match((await closed).reason, /Console stopping/);
});

Deno.test("serveDashboard() warns when it listens beyond loopback, and shows its own address", async () => {
  const warnings: string[] = [];
  const log = createLogger({ level: "warn", sink: (line) => warnings.push(line) });
  const options = {
    program: "Daemon" as const,
    urlCommand: "daemon dashboard",
    script: "",
    snapshot: () => ({}),
    subscribe: (signal: AbortSignal) => new EventHub<{ type: string }>().subscribe({ signal }),
    handlers: {},
    log,
  };
  const near = serveDashboard({ ...options, address: { host: "127.0.0.2", port: 0 } });
  await using _near = near;
  assert.match(near.loginUrl(), new RegExp(`^http://127\\.0\\.0\\.2:${near.port}/\\?token=`));
  const res = await fetch(near.loginUrl(), { redirect: "manual" });
  assert.equal(res.status, 303);
  await res.body?.cancel();
  assert.deepEqual(warnings, []);
  const wide = serveDashboard({ ...options, address: { host: "0.0.0.0", port: 0 } });
  await using _wide = wide;
  assert.match(wide.loginUrl(), new RegExp(`^http://127\\.0\\.0\\.1:${wide.port}/`));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /listens beyond this computer/);
});

Deno.test("serveDashboard() says which address it cannot listen on, and what to change", () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  assert.throws(
    () =>
      serveDashboard({
        address: { host: "127.0.0.1", port },
        program: "Console",
        urlCommand: "console dashboard",
        script: "",
        snapshot: () => ({}),
        subscribe: (signal) => new EventHub<{ type: string }>().subscribe({ signal }),
        handlers: {},
        log: quiet,
      }),
    new RegExp(
      `^Error: Cannot serve the dashboard on "127\\.0\\.0\\.1:${port}": .*change \`dashboard:\``,
    ),
  );
});
