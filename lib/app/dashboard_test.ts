import assert from "node:assert/strict";
import { EventHub } from "../core/events.ts";
import { createLogger } from "../core/log.ts";
import { ControlError } from "./control.ts";
import {
  DASHBOARD_CSP,
  type DashboardServer,
  isLoopbackHost,
  MAX_COMMAND_BYTES,
  MAX_DASHBOARD_PAGES,
  pageJson,
  serveDashboard,
} from "./dashboard.ts";
import { printable } from "../core/text.ts";

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

/** A page's WebSocket, open once the first snapshot arrived. */
async function openPage(port: number, cookie: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, {
    headers: { cookie, origin: `http://127.0.0.1:${port}` },
  });
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = () => resolve();
    ws.onclose = (e) => reject(new Error(`page closed: ${e.code} ${e.reason}`));
  });
  ws.onclose = null;
  return ws;
}

Deno.test("serveDashboard() holds a bounded number of pages, and an abandoned upgrade frees its place", async () => {
  const { dash } = start();
  await using _ = dash;
  const cookie = await login(dash);
  const port = dash.port;
  // Upgrades whose sender leaves at once must not keep a place.
  for (let i = 0; i < MAX_DASHBOARD_PAGES + 2; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      new TextEncoder().encode(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: http://127.0.0.1:${port}\r\n` +
          `Cookie: ${cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      ),
    );
    const buf = new Uint8Array(256);
    await conn.read(buf); // the 101 (or a refusal)
    conn.close();
  }
  const open: WebSocket[] = [];
  try {
    // The server sees those closes a moment later: bounded retries.
    for (let i = 0, tries = 0; i < MAX_DASHBOARD_PAGES && tries < 200; tries++) {
      const ws = await openPage(port, cookie).catch(() => null);
      if (ws !== null) open[i++] = ws;
    }
    assert.equal(open.length, MAX_DASHBOARD_PAGES, "abandoned upgrades kept their places");
    const over = await fetch(`http://127.0.0.1:${port}/ws`, {
      headers: { cookie, origin: `http://127.0.0.1:${port}`, upgrade: "websocket" },
    });
    assert.equal(over.status, 503, "a page past the limit was let in");
    assert.match(await over.text(), /pages are open already/);
    const gone = new Promise((resolve) => (open[0].onclose = resolve));
    open.shift()!.close();
    await gone;
    // The server sees the close a moment later: bounded retries until the place is free.
    let again: WebSocket | null = null;
    for (let i = 0; i < 50 && again === null; i++) {
      again = await openPage(port, cookie).catch(() => null);
    }
    assert.ok(again, "a closed page's place was not freed");
    open.push(again);
  } finally {
    for (const ws of open) ws.close();
  }
});

Deno.test("serveDashboard() refuses a command body over its limit without reading it all", async () => {
  const { dash, calls } = start();
  await using _ = dash;
  const cookie = await login(dash);
  const own = `http://127.0.0.1:${dash.port}`;
  const big = JSON.stringify({ pad: "x".repeat(MAX_COMMAND_BYTES) });
  const res = await fetch(`${own}/api/echo`, {
    method: "POST",
    headers: { cookie, origin: own },
    body: big,
  });
  assert.equal(res.status, 413);
  assert.match((await res.json()).error, /over 65536 bytes/);
  // Without a length: the body streamed in pieces.
  const streamed = await fetch(`${own}/api/echo`, {
    method: "POST",
    headers: { cookie, origin: own },
    body: ReadableStream.from([big.slice(0, 40_000), big.slice(40_000)]).pipeThrough(
      new TextEncoderStream(),
    ),
  });
  assert.equal(streamed.status, 413);
  await streamed.body?.cancel();
  assert.equal(calls.length, 0);
});

Deno.test("serveDashboard() finds its cookie among same-named ones another site on this host set", async () => {
  const { dash } = start();
  await using _ = dash;
  const cookie = await login(dash);
  const name = cookie.split("=")[0];
  const res = await fetch(`http://127.0.0.1:${dash.port}/`, {
    headers: { cookie: `${name}=planted-by-another-port; ${cookie}` },
  });
  assert.equal(res.status, 200, "a planted cookie of the same name logged the page out");
  await res.body?.cancel();
  const planted = await fetch(`http://127.0.0.1:${dash.port}/`, {
    headers: { cookie: `${name}=planted-by-another-port` },
  });
  assert.equal(planted.status, 401);
  await planted.body?.cancel();
});

Deno.test("serveDashboard() sends peer strings to the page with control and bidi characters escaped", async () => {
  const hostile = "ann\u202egnp.exe\x1b[2J\u2028x";
  const shown = "ann\\u202egnp.exe\\x1b[2J\\u2028x";
  const dash = serveDashboard({
    address: { host: "127.0.0.1", port: 0 },
    program: "Console",
    urlCommand: "console dashboard",
    script: "",
    snapshot: () => ({ peer: { user: hostile }, chat: [{ text: `two\nlines ${hostile}` }] }),
    subscribe: (signal) => new EventHub<{ type: string }>().subscribe({ signal }),
    handlers: {
      resolve: () => ({ answer: hostile }),
      refuse: () => {
        throw new ControlError(`Cannot resolve "${hostile}"`, { status: 400 });
      },
    },
    log: quiet,
  });
  await using _ = dash;
  const cookie = await login(dash);
  const own = `http://127.0.0.1:${dash.port}`;
  const ws = new WebSocket(`ws://127.0.0.1:${dash.port}/ws`, { headers: { cookie, origin: own } });
  const first = await new Promise<string>((resolve) => (ws.onmessage = (m) => resolve(m.data)));
  const closed = new Promise((resolve) => (ws.onclose = resolve));
  ws.close();
  await closed;
  const { snapshot } = JSON.parse(first);
  assert.equal(snapshot.peer.user, shown);
  assert.equal(snapshot.chat[0].text, `two\nlines ${shown}`, "a chat line break is kept");
  const post = (name: string) =>
    fetch(`${own}/api/${name}`, { method: "POST", headers: { cookie, origin: own }, body: "{}" })
      .then((r) => r.json());
  assert.deepEqual(await post("resolve"), { result: { answer: shown } });
  assert.deepEqual(await post("refuse"), { error: `Cannot resolve "${shown}"` });
});

Deno.test("pageJson() reads back as printable() makes every string, backslashes included", () => {
  const alphabet = ["a", "\\", '"', "u", "0", "\t", "\n", "\r", "\b", "\f", "\x00", "\x1b", "\x7f"];
  alphabet.push(
    "\x9b",
    "\u202e",
    "\u2066",
    "\u2028",
    "\u2029",
    "\u061c",
    "\ud800",
    "é",
    "\u{1f600}",
  );
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < 2000; i++) {
    let text = "";
    for (let n = next() % 12; n > 0; n--) text += alphabet[next() % alphabet.length];
    const value = { [`k${i}`]: text, list: [text, 1, null] };
    assert.deepEqual(
      JSON.parse(pageJson(value)),
      { [`k${i}`]: printable(text), list: [printable(text), 1, null] },
      JSON.stringify(text),
    );
  }
});

Deno.test("serveDashboard() lets a login URL work for a limited time only", async () => {
  let now = 1_000_000;
  const dash = serveDashboard({
    address: { host: "127.0.0.1", port: 0 },
    program: "Daemon",
    urlCommand: "daemon dashboard",
    script: "",
    snapshot: () => ({}),
    subscribe: (signal) => new EventHub<{ type: string }>().subscribe({ signal }),
    handlers: {},
    log: quiet,
    loginTokenMs: 60_000,
    now: () => now,
  });
  await using _ = dash;
  const fresh = dash.loginUrl();
  const stale = dash.loginUrl();
  now += 59_999;
  const ok = await fetch(fresh, { redirect: "manual" });
  await ok.body?.cancel();
  assert.equal(ok.status, 303);
  now += 1;
  const late = await fetch(stale, { redirect: "manual" });
  assert.equal(late.status, 401, "a login URL past its time still worked");
  assert.equal(late.headers.get("set-cookie"), null);
  await late.body?.cancel();
});

Deno.test("isLoopbackHost() takes loopback addresses only, not names that look like them", () => {
  for (
    const host of [
      "localhost",
      "127.0.0.1",
      "127.8.9.10",
      "::1",
      "0:0:0:0:0:0:0:1",
      "::ffff:127.0.0.1",
    ]
  ) {
    assert.ok(isLoopbackHost(host), host);
  }
  for (const host of ["127.0.0.1.nip.io", "127.example.net", "10.0.0.1", "::", "0.0.0.0", "::2"]) {
    assert.ok(!isLoopbackHost(host), host);
  }
});

Deno.test("serveDashboard() takes the loopback Host forms a browser sends and refuses look-alikes", async () => {
  const { dash } = start();
  await using _ = dash;
  const p = dash.port;
  for (const host of [`127.0.0.1:${p}`, `LOCALHOST:${p}`, `localhost:${p}`, `[::1]:${p}`]) {
    const line = await rawStatusLine(p, "GET /", host);
    assert.match(line, /^HTTP\/1\.1 401/, `Host "${host}" was refused`);
  }
  const lookAlikes = [
    `localhost.:${p}`,
    `127.0.0.1.:${p}`,
    "127.0.0.1",
    `127.0.0.1:0${p}`,
    `0x7f.0.0.1:${p}`,
    `2130706433:${p}`,
    `[0:0:0:0:0:0:0:1]:${p}`,
    `127.0.0.1:${p}@evil.example`,
    `evil.example#127.0.0.1:${p}`,
  ];
  for (const host of lookAlikes) {
    const line = await rawStatusLine(p, "GET /", host);
    assert.match(line, /^HTTP\/1\.1 (421|400)/, `Host "${host}" was let in`);
  }
});

Deno.test("serveDashboard() logs refusals any web page can cause at a bounded rate, with counts", async () => {
  const lines: string[] = [];
  const dash = serveDashboard({
    address: { host: "127.0.0.1", port: 0 },
    program: "Console",
    urlCommand: "console dashboard",
    script: "",
    snapshot: () => ({}),
    subscribe: (signal) => new EventHub<{ type: string }>().subscribe({ signal }),
    handlers: { echo: () => null },
    log: createLogger({ level: "warn", sink: (line) => lines.push(line) }),
  });
  await using _ = dash;
  const own = `http://127.0.0.1:${dash.port}`;
  for (let i = 0; i < 20; i++) {
    const post = await fetch(`${own}/api/echo`, {
      method: "POST",
      headers: { origin: "http://evil.example" },
      body: "{}",
    });
    assert.equal(post.status, 403);
    await post.body?.cancel();
    const bad = await fetch(`${own}/?token=guess${i}`, { redirect: "manual" });
    assert.equal(bad.status, 401);
    await bad.body?.cancel();
  }
  assert.equal(
    lines.filter((l) => l.includes("dashboard request refused")).length,
    1,
    lines.join("\n"),
  );
  assert.equal(
    lines.filter((l) => l.includes("dashboard login refused")).length,
    1,
    lines.join("\n"),
  );
});
