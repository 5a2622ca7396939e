/**
 * The web dashboards in a real browser: Debian's Chromium driven by
 * `playwright-core`, against real Console and Daemon processes. Buttons,
 * fields and tables are found by their accessible names, as a screen reader
 * finds them.
 *
 * With `PF_DASHBOARD_SCREENSHOTS=1` (`deno task screenshots:dashboard`) the
 * first and third tests also save docs/console-dashboard.png and
 * docs/daemon-dashboard.png.
 *
 * @module
 */

import assert from "node:assert/strict";
import fs from "node:fs";
import type { Browser, Page } from "playwright-core";
import {
  addPfo,
  type ConsoleProc,
  echoServer,
  spareTcpPort,
  startConsole,
  startDaemon,
  startPair,
  within,
} from "./_harness.ts";
import { handDaemon, hostileDaemon } from "./_hostile.ts";

const CHROMIUM = "/usr/bin/chromium";

// playwright-core asks at load whether it runs under WSL by probing /proc/sys/fs/binfmt_misc,
// which Deno lets only --allow-all read (it throws rather than answering false). The suite runs
// with explicit permissions, so that one probe answers "no" here instead.
const existsSync = fs.existsSync;
fs.existsSync = (path: fs.PathLike) => {
  try {
    return existsSync(path);
  } catch {
    return false;
  }
};
const { chromium } = await import("playwright-core");
const SCREENSHOTS = Deno.env.get("PF_DASHBOARD_SCREENSHOTS") === "1";
const DOCS = new URL("../docs/", import.meta.url);

/** Chromium, headless, closed on dispose; fails naming the Debian package when it is missing. */
async function launchBrowser(): Promise<Browser & AsyncDisposable> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `Cannot run the dashboard's browser tests: no "${CHROMIUM}"; install the Debian package "chromium"`,
    );
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  return Object.assign(browser, { [Symbol.asyncDispose]: () => browser.close() });
}

/** A new page that records every URL it requests. */
async function newPage(browser: Browser): Promise<{ page: Page; requests: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const requests: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  return { page, requests };
}

/** The dashboard URL a program's banner printed. */
async function bannerUrl(out: ConsoleProc["out"]): Promise<URL> {
  const [, url] = await out.waitFor(/Dashboard: (http:\/\/\S+)/);
  return new URL(url);
}

/** Open `url`, and check the token is gone from the address bar and nothing else was fetched. */
async function logIn(page: Page, url: URL): Promise<void> {
  await page.goto(url.href);
  assert.equal(page.url(), `${url.origin}/`, "the login token stayed in the address bar");
  await page.getByRole("heading", { level: 1 }).waitFor();
}

/** A TCP client through `address` that has had its first echo back. */
async function echoClient(address: string): Promise<Deno.TcpConn> {
  const [hostname, port] = [address.slice(0, address.lastIndexOf(":")), address.split(":").pop()];
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(new TextEncoder().encode("ping"));
  const buf = new Uint8Array(16);
  assert.equal(await within(conn.read(buf), 15_000, "the echo through the PFO"), 4);
  return conn;
}

/** Resolves once the peer closed `conn` (a read ends or fails). */
async function closedByPeer(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64);
  try {
    while ((await conn.read(buf)) !== null) { /* drain */ }
  } catch {
    // Reset: closed too.
  }
}

Deno.test("dashboard: the Console's operator logs in, accepts the session, adds a PFO, kills a live connection, chats, resolves and uses the row actions", async () => {
  using echo = echoServer();
  await using browser = await launchBrowser();
  await using con = await startConsole();
  const url = await bannerUrl(con.out);
  await using daemon = await startDaemon(con);
  const { page, requests } = await newPage(browser);
  await logIn(page, url);
  const session = page.getByRole("region", { name: "Session" });
  await session.getByRole("button", { name: "Accept", exact: true }).click();
  await daemon.out.waitFor(/Session established/);
  await session.getByRole("button", { name: "Close session" }).waitFor();

  // The form's errors are the CLI's, beside the field.
  const cli = await con.cli("pfo", "add", "bad", "--listen", "99999", "--target", "127.0.0.1:1");
  assert.notEqual(cli.code, 0);
  await page.getByLabel("Name", { exact: true }).fill("bad");
  await page.getByLabel("Listen", { exact: true }).fill("99999");
  await page.getByLabel("Target", { exact: true }).fill("127.0.0.1:1");
  await page.getByRole("button", { name: "Add PFO" }).click();
  const listenError = page.locator("#pfo-listen-error");
  await listenError.filter({ hasText: "Cannot" }).waitFor();
  const shown = (await listenError.textContent())!;
  assert.ok(cli.stderr.includes(shown), `page says ${shown}, the CLI said ${cli.stderr}`);

  await page.getByLabel("Name", { exact: true }).fill("web");
  await page.getByLabel("Protocol", { exact: true }).selectOption("tcp");
  await page.getByLabel("Listen", { exact: true }).fill("127.0.0.1:0");
  await page.getByLabel("Target", { exact: true }).fill(`127.0.0.1:${echo.port}`);
  await page.getByRole("button", { name: "Add PFO" }).click();
  const pfos = page.getByRole("table", { name: "PFOs" });
  await pfos.getByRole("row").filter({ hasText: "web" }).filter({ hasText: "listening" }).waitFor();
  const status = JSON.parse((await con.cli("status", "--json")).stdout);
  const bound: string = status.pfos.find((p: { name: string }) => p.name === "web").bound[0];

  // A connection appears without a reload, and Kill cuts it.
  const client = await echoClient(bound);
  const closed = closedByPeer(client);
  const connections = page.getByRole("table", { name: "Connections" });
  const row = connections.getByRole("row").filter({ hasText: `127.0.0.1:${echo.port}` });
  await row.waitFor();
  await pfos.getByRole("row").filter({ hasText: "web" }).getByRole("cell", {
    name: "1",
    exact: true,
  })
    .first().waitFor();
  if (SCREENSHOTS) {
    await withTraffic(bound, connections, () => screenshot(page, "console-dashboard.png"));
  }
  await row.getByRole("button", { name: "Kill" }).click();
  await within(closed, 15_000, "the killed connection to close");
  client.close();
  await row.waitFor({ state: "detached" });

  // Chat both ways; the Daemon's HTML is shown as text.
  await page.getByLabel("Message", { exact: true }).fill("hello from the page");
  await page.getByRole("button", { name: "Send" }).click();
  await daemon.out.waitFor(/hello from the page/);
  const html = `<img src=x onerror="document.title='pwned'"><b>bold</b>`;
  assert.equal((await daemon.cli("chat", html)).code, 0);
  const chat = page.getByRole("log", { name: "Chat history" });
  await chat.getByText(html).waitFor();
  assert.equal(await chat.locator("img, b").count(), 0);
  assert.notEqual(await page.title(), "pwned");

  const resolve = page.getByRole("region", { name: "Resolve" });
  await resolve.getByLabel("Host name").fill("localhost");
  await resolve.getByRole("button", { name: "Resolve" }).click();
  await resolve.getByRole("status").filter({ hasText: /127\.0\.0\.1|::1/ }).waitFor();

  // Row actions: Disable, Enable, Edit (the form, filled in), Remove.
  const web = pfos.getByRole("row").filter({ hasText: "web" });
  await web.getByRole("button", { name: "Disable" }).click();
  await web.filter({ hasText: "disabled" }).getByRole("button", { name: "Enable" }).click();
  await web.filter({ hasText: "listening" }).getByRole("button", { name: "Disable" }).waitFor();
  await web.getByRole("button", { name: "Edit" }).click();
  assert.equal(await page.getByLabel("Name", { exact: true }).inputValue(), "web");
  await page.getByLabel("Target", { exact: true }).fill(`localhost:${echo.port}`);
  await page.getByRole("button", { name: "Save changes" }).click();
  await web.filter({ hasText: `localhost:${echo.port}` }).waitFor();
  await web.getByRole("button", { name: "Remove" }).click();
  await web.waitFor({ state: "detached" });
  assert.equal(JSON.parse((await con.cli("status", "--json")).stdout).pfos.length, 0);

  assert.deepEqual(requests.filter((r) => !r.startsWith(url.origin)), [], "an outside request");
  // The Console exits: the page says so.
  await con.stop();
  await page.getByRole("status").filter({ hasText: "Console stopped or restarted" }).waitFor();
});

Deno.test("dashboard: a hostile Daemon's identity is shown as text on the pending session", async () => {
  await using browser = await launchBrowser();
  await using con = await startConsole();
  const url = await bannerUrl(con.out);
  // Host names cannot carry markup (the protocol refuses them); user names may carry quotes.
  const facts = {
    host: "evil-host_.example",
    user: "x' onfocus'alert' $HOME\\x",
    os: "linux",
  };
  const hostile = await hostileDaemon(con, facts);
  try {
    const { page } = await newPage(browser);
    await logIn(page, url);
    const session = page.getByRole("region", { name: "Session" });
    await session.getByRole("button", { name: "Trust always" }).waitFor();
    const peer = session.getByText(`${facts.user}@${facts.host} (linux) from `);
    await peer.waitFor();
    assert.equal(await session.locator("[onfocus], [autofocus]").count(), 0);
    await session.getByRole("button", { name: "Reject" }).click();
    await session.getByRole("button", { name: "Reject" }).waitFor({ state: "detached" });
  } finally {
    hostile.link.close();
  }
});

Deno.test("dashboard: Trust always remembers the Daemon, and the trust list's Remove forgets it", async () => {
  await using browser = await launchBrowser();
  await using con = await startConsole();
  const url = await bannerUrl(con.out);
  const hand = await handDaemon(con);
  using _session = await hand.connect();
  const { page } = await newPage(browser);
  await logIn(page, url);
  const session = page.getByRole("region", { name: "Session" });
  await session.getByRole("button", { name: "Trust always" }).click();
  await session.getByRole("button", { name: "Close session" }).waitFor();
  const trusted = page.getByRole("table", { name: "Trusted Daemons" }).getByRole("row").filter({
    hasText: hand.fingerprint,
  });
  await trusted.filter({ hasText: "trust store" }).waitFor();
  await trusted.getByRole("button", { name: "Remove" }).click();
  await trusted.waitFor({ state: "detached" });
  const list = await con.cli("trust", "list");
  assert.equal(list.code, 0, list.stderr);
  assert.ok(!list.stdout.includes(hand.fingerprint), list.stdout);
});

Deno.test("dashboard: the Daemon's user kills a connection from the Daemon's dashboard", async () => {
  using echo = echoServer();
  await using browser = await launchBrowser();
  await using pair = await startPair();
  const banner = await bannerUrl(pair.daemon.out);
  // `daemon dashboard` prints a fresh URL for the same dashboard.
  const printed = await pair.daemon.cli("dashboard");
  assert.equal(printed.code, 0, printed.stderr);
  const url = new URL(printed.stdout.trim());
  assert.equal(url.origin, banner.origin);
  assert.notEqual(url.searchParams.get("token"), banner.searchParams.get("token"));
  const { page, requests } = await newPage(browser);
  await logIn(page, url);
  const add = await pair.console.cli(
    "pfo",
    "add",
    "db",
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${echo.port}`,
  );
  assert.equal(add.code, 0, add.stderr);
  const status = JSON.parse((await pair.console.cli("status", "--json")).stdout);
  const client = await echoClient(status.pfos[0].bound[0]);
  const closed = closedByPeer(client);
  const row = page.getByRole("table", { name: "Connections" }).getByRole("row").filter({
    hasText: `127.0.0.1:${echo.port}`,
  });
  await row.waitFor();
  await page.getByRole("region", { name: "Allow-list in force" }).getByText("everything").waitFor();
  await page.getByRole("button", { name: "Close session" }).waitFor();
  if (SCREENSHOTS) {
    await pair.console.cli("chat", "the backup runs tonight: keep the link up");
    await page.getByText("keep the link up").waitFor();
    await withTraffic(
      status.pfos[0].bound[0],
      page.getByRole("table", { name: "Connections" }),
      () => screenshot(page, "daemon-dashboard.png"),
    );
  }
  await row.getByRole("button", { name: "Kill" }).click();
  await within(closed, 15_000, "the killed connection to close");
  client.close();
  await row.waitFor({ state: "detached" });
  assert.deepEqual(requests.filter((r) => !r.startsWith(url.origin)), [], "an outside request");
});

Deno.test("dashboard: a page whose Console restarts on the same port says how to log in again", async () => {
  await using browser = await launchBrowser();
  const port = spareTcpPort();
  const settings = `dashboard: "127.0.0.1:${port}"\n`;
  const first = await startConsole({ settings });
  const url = await bannerUrl(first.out);
  assert.equal(url.port, String(port));
  const { page } = await newPage(browser);
  await logIn(page, url);
  await page.getByRole("region", { name: "Session" }).getByText("none").first().waitFor();
  await first.stop();
  await page.getByRole("status").filter({ hasText: "Console stopped or restarted" }).waitFor();
  await using _second = await startConsole({ settings, dir: first.dir });
  await page.getByRole("status").filter({ hasText: "Run `" }).filter({
    hasText: "console dashboard",
  }).waitFor();
});

Deno.test("dashboard: a wrong or missing token, a foreign Host and a foreign Origin are refused", async () => {
  await using con = await startConsole();
  const url = await bannerUrl(con.out);
  const none = await fetch(`${url.origin}/`);
  assert.equal(none.status, 401);
  assert.match(await none.text(), /console dashboard/);
  const wrong = await fetch(`${url.origin}/?token=${"ab".repeat(24)}`, { redirect: "manual" });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  const host = await rawStatusLine(url, `Host: evil.example:${url.port}`);
  assert.match(host, /^HTTP\/1\.1 421/);
  // A fresh URL from `console dashboard` logs in once.
  const printed = await con.cli("dashboard");
  assert.equal(printed.code, 0, printed.stderr);
  const login = await fetch(printed.stdout.trim(), { redirect: "manual" });
  await login.body?.cancel();
  assert.equal(login.status, 303);
  const cookie = login.headers.get("set-cookie")!.split(";")[0];
  const api = `${url.origin}/api/chat`;
  for (const origin of ["http://evil.example", "null"]) {
    const res = await fetch(api, {
      method: "POST",
      headers: { cookie, origin, "content-type": "application/json" },
      body: JSON.stringify({ text: "from a web page" }),
    });
    assert.equal(res.status, 403, `Origin ${origin} was let in`);
    await res.body?.cancel();
  }
  const ws = await fetch(`${url.origin}/ws`, {
    headers: { cookie, origin: "http://evil.example", upgrade: "websocket" },
  });
  assert.equal(ws.status, 403);
  await ws.body?.cancel();
  const own = await fetch(`${url.origin}/api/status`, {
    method: "POST",
    headers: { cookie, origin: url.origin },
    body: "{}",
  });
  assert.equal(own.status, 200);
  assert.equal((await own.json()).result.session.state, "none");
});

Deno.test("dashboard: `dashboard: null` turns it off, and `console dashboard` says so", async () => {
  await using con = await startConsole({ settings: "dashboard: null\n" });
  await con.out.waitFor(/console ready/);
  assert.ok(!con.out.text().includes("Dashboard:"));
  const printed = await con.cli("dashboard");
  assert.notEqual(printed.code, 0);
  assert.match(printed.stderr, /Cannot open the dashboard: it is off \(`dashboard: null`/);
});

/** The status line of a GET of `url` sent by hand with the header line `hostLine`. */
async function rawStatusLine(url: URL, hostLine: string): Promise<string> {
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
  try {
    const head =
      `GET ${url.pathname}${url.search} HTTP/1.1\r\n${hostLine}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(head));
    const buf = new Uint8Array(512);
    const n = await conn.read(buf);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/**
 * Run `action` after 12 s of traffic through a second connection to `address`,
 * so the chart and the rates have something to show; then close it and wait
 * for its row in `table` to go.
 */
async function withTraffic(
  address: string,
  table: ReturnType<Page["getByRole"]>,
  action: () => Promise<void>,
): Promise<void> {
  const rows = await table.getByRole("row").count();
  const busy = await echoClient(address);
  await table.getByRole("row").nth(rows).waitFor();
  await traffic(busy, 12_000);
  await action();
  busy.close();
  await table.getByRole("row").nth(rows).waitFor({ state: "detached" });
}

/** Send and read back bursts through an echo `conn` for `ms`. */
async function traffic(conn: Deno.TcpConn, ms: number): Promise<void> {
  const chunk = new Uint8Array(256 * 1024);
  const buf = new Uint8Array(64 * 1024);
  const end = Date.now() + ms;
  for (let i = 0; Date.now() < end; i++) {
    const size = chunk.length * (1 + (i % 4));
    const reading = (async () => {
      for (let got = 0; got < size;) got += (await conn.read(buf)) ?? size;
    })();
    for (let sent = 0; sent < size; sent += chunk.length) await conn.write(chunk);
    await reading;
  }
}

async function screenshot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(DOCS, { recursive: true });
  await page.screenshot({ path: new URL(name, DOCS).pathname, fullPage: true });
}

Deno.test("dashboard: the Console's page keeps a connection's rate over a window, not between two pushes, so a burst does not read 0 B/s a second later", async () => {
  using echo = echoServer();
  await using browser = await launchBrowser();
  await using pair = await startPair();
  const url = await bannerUrl(pair.console.out);
  const bound = await addPfo(pair.console, "burst", `127.0.0.1:${echo.port}`);
  const { page } = await newPage(browser);
  await logIn(page, url);
  const [hostname, port] = [bound.slice(0, bound.lastIndexOf(":")), bound.split(":").pop()];
  using client = await Deno.connect({ hostname, port: Number(port) });
  const burst = new Uint8Array(256 * 1024);
  const write = client.write(burst).then(async (n) => {
    for (let off = n; off < burst.length;) off += await client.write(burst.subarray(off));
  });
  let got = 0;
  const buf = new Uint8Array(64 * 1024);
  while (got < burst.length) {
    const n = await within(client.read(buf), 15_000, "the echo through the PFO");
    assert.ok(n !== null, "the echo ended early");
    got += n;
  }
  await write;
  // The first push a second or more after the burst, with no byte moving since: the page's
  // rate must still show the burst (the Console's own PFO rates look back 5 s too).
  const row = page.getByRole("table", { name: "Connections" }).getByRole("row").filter({
    hasText: `127.0.0.1:${echo.port}`,
  });
  await row.getByRole("cell", { name: /^[1-9]\d*s$/ }).waitFor();
  const cells = await row.getByRole("cell").allInnerTexts();
  const [age, rateIn] = [cells[5], cells[6]];
  assert.ok(Number.parseInt(age) <= 4, `the page updated only ${age} after the burst`);
  assert.notEqual(rateIn, "0 B/s", `a connection ${age} after a 256 KiB burst shows ${rateIn}`);
});
