/**
 * The firewall suite's WebSocket scenarios (called from `firewall.ts`):
 * real nginx in the office, in front of the Console's session port, on
 * `ws://198.18.0.1:8080/portferry` and `wss://198.18.0.1:8443/portferry`
 * (TLS under a CA this run makes with openssl). The Daemon at home is
 * restarted with those addresses; the session must come up, a PFO must carry
 * 20 MB intact, the Console must show the Daemon's address from
 * X-Forwarded-For, and a cut link must recover through nginx.
 *
 * @module
 */

/** Debian packages these scenarios need, beyond the suite's. */
export const WEBSOCKET_PACKAGES = "nginx openssl";
/** Tools these scenarios need. */
export const WEBSOCKET_TOOLS = ["nginx", "openssl"];

const WS_PORT = 8080;
const WSS_PORT = 8443;
const TRANSFER_BYTES = 20 * 1024 * 1024;

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A process the suite started and will stop. */
export interface ServiceLike {
  readonly out: { readonly mark: number };
  waitFor(re: RegExp, options?: { from?: number; ms?: number }): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
  tail(n?: number): string;
}

/** What the suite lends these scenarios. */
export interface WebSocketKit {
  /** This run's temp folder. */
  readonly dir: string;
  /** The folder the LAN's HTTP server serves. */
  readonly www: string;
  readonly ns: { readonly office: string; readonly home: string };
  /** The office's address, where nginx listens. */
  readonly office: string;
  /** The Console's session port (all interfaces, in the office). */
  readonly sessionPort: number;
  /** The web PFO's port on the office's 127.0.0.1, to the LAN's HTTP server. */
  readonly webPort: number;
  readonly fingerprint: string;
  readonly daemonSettings: string;
  readonly console: ServiceLike;
  /** The Daemon running now (direct TCP); stopped here. */
  readonly daemon: ServiceLike;
  /** The command line of a Daemon, before its arguments. */
  readonly daemonCommand: readonly string[];
  check(name: string, fn: () => Promise<string | void>): Promise<boolean>;
  run(cmd: readonly string[], options?: { ns?: string; timeoutMs?: number }): Promise<RunResult>;
  must(cmd: readonly string[], options?: { ns?: string; timeoutMs?: number }): Promise<string>;
  /** Start a long-running process in a namespace; the suite stops it at teardown. */
  service(name: string, ns: string, cmd: readonly string[]): ServiceLike;
  sha256(path: string): Promise<string>;
}

/**
 * Console settings the scenarios need, written before the Console starts:
 * it believes X-Forwarded-For from nginx on its own loopback.
 */
export async function prepareWebSocketConsole(settingsPath: string): Promise<void> {
  await Deno.writeTextFile(settingsPath, "trustedProxies:\n  - 127.0.0.1\n", { mode: 0o600 });
}

/** Run the scenarios; each prints its own line through `kit.check`. */
export async function websocketChecks(kit: WebSocketKit): Promise<void> {
  const web = `${kit.dir}/web`;
  let transfer = "";
  const ready = await kit.check(
    "websocket: nginx in front of the Console (ws and wss, test CA)",
    async () => {
      await Deno.mkdir(`${web}/tmp`, { recursive: true });
      await makeCertificates(kit, web);
      await Deno.writeTextFile(`${web}/nginx.conf`, nginxConf(kit, web));
      await kit.must(["nginx", "-t", "-p", web, "-c", `${web}/nginx.conf`], { ns: kit.ns.office });
      kit.service("nginx", kit.ns.office, ["nginx", "-p", web, "-c", `${web}/nginx.conf`]);
      // Bounded readiness: curl retries refused connections until nginx listens.
      const probe = await kit.run([
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--retry",
        "30",
        "--retry-connrefused",
        "--retry-max-time",
        "30",
        `http://${kit.office}:${WS_PORT}/ready`,
      ], { ns: kit.ns.home, timeoutMs: 40_000 });
      assert(probe.stdout === "404", `nginx answered ${probe.stdout}: ${probe.stderr}`);
      transfer = `${kit.www}/ws20.bin`;
      await writeRandomFile(transfer, TRANSFER_BYTES);
      return `nginx on ${kit.office}:${WS_PORT} (ws) and :${WSS_PORT} (wss) → 127.0.0.1:${kit.sessionPort}`;
    },
  );
  if (!ready) return;
  const want = await kit.sha256(transfer);
  await kit.daemon.stop();

  let daemon = await sessionOver(kit, `ws://${kit.office}:${WS_PORT}/portferry`, [], "ws");
  if (daemon) await carries20MB(kit, "ws", want);
  await daemon?.stop();

  await kit.check(
    "websocket: wss:// without --ca is refused: the web server's certificate is not trusted",
    async () => {
      await Deno.mkdir(`${kit.dir}/untrusting`);
      const r = await kit.run([
        ...kit.daemonCommand,
        `wss://${kit.office}:${WSS_PORT}/portferry`,
        "--fingerprint",
        kit.fingerprint,
        "--config",
        `${kit.dir}/untrusting/portferry-daemon.yaml`,
        "--headless",
        "--no-reconnect",
      ], { ns: kit.ns.home, timeoutMs: 60_000 });
      assert(r.code !== 0, `exit ${r.code}`);
      assert(/certificate is not trusted/.test(r.stdout + r.stderr), r.stdout + r.stderr);
      return (r.stdout + r.stderr).split("\n").find((l) => /not trusted/.test(l))?.trim();
    },
  );

  daemon = await sessionOver(
    kit,
    `wss://${kit.office}:${WSS_PORT}/portferry`,
    ["--ca", `${web}/ca.pem`],
    "wss",
  );
  if (!daemon) return;
  await carries20MB(kit, "wss", want);
  await cutAndRecover(kit, daemon);
  await carries20MB(kit, "wss after recovery", want);
}

/** Start a Daemon at `url`; the session must come up and show the X-Forwarded-For address. */
async function sessionOver(
  kit: WebSocketKit,
  url: string,
  extra: readonly string[],
  label: string,
): Promise<ServiceLike | null> {
  let daemon: ServiceLike | null = null;
  const ok = await kit.check(
    `websocket: the session comes up over ${label}:// through nginx`,
    async () => {
      const mark = kit.console.out.mark;
      daemon = kit.service(`daemon-${label}`, kit.ns.home, [
        ...kit.daemonCommand,
        url,
        "--fingerprint",
        kit.fingerprint,
        "--config",
        kit.daemonSettings,
        "--headless",
        ...extra,
      ]);
      await daemon.waitFor(/Session established/, { ms: 30_000 });
      const [line] = await kit.console.waitFor(/Session established with .*/, {
        from: mark,
        ms: 10_000,
      });
      assert(
        line.includes("from 198.18.0.2 (X-Forwarded-For via 127.0.0.1:"),
        `the Console shows another address: ${line}`,
      );
      return line.replace(/.* from /, "from ");
    },
  );
  return ok ? daemon : null;
}

async function carries20MB(kit: WebSocketKit, label: string, want: string): Promise<void> {
  await kit.check(`websocket: a PFO carries 20 MB intact over ${label}`, async () => {
    const out = `${kit.dir}/web/got-${label.replace(/\W+/g, "-")}.bin`;
    const started = performance.now();
    const r = await kit.run([
      "curl",
      "-sS",
      "--fail",
      "-m",
      "120",
      "-o",
      out,
      `http://127.0.0.1:${kit.webPort}/ws20.bin`,
    ], { ns: kit.ns.office, timeoutMs: 130_000 });
    const ms = performance.now() - started;
    assert(r.code === 0, `curl exit ${r.code}: ${r.stderr}`);
    const got = await kit.sha256(out);
    await Deno.remove(out);
    assert(got === want, `sha256 ${got}, expected ${want}`);
    return `${(TRANSFER_BYTES / 1e6 / (ms / 1000)).toFixed(1)} MB/s, sha256 matches`;
  });
}

/** Cut home's uplink until both sides see the session end, then restore it. */
async function cutAndRecover(kit: WebSocketKit, daemon: ServiceLike): Promise<void> {
  const consoleMark = kit.console.out.mark;
  const daemonMark = daemon.out.mark;
  let down = false;
  try {
    await kit.check(
      "websocket: a cut link ends the session on both sides (through nginx)",
      async () => {
        await kit.must(["ip", "-n", kit.ns.home, "link", "set", "to-office", "down"]);
        down = true;
        const at = performance.now();
        await Promise.all([
          daemon.waitFor(/Session ended/, { from: daemonMark, ms: 20_000 }),
          kit.console.waitFor(/Session with .* ended/, { from: consoleMark, ms: 20_000 }),
        ]);
        return `both noticed within ${((performance.now() - at) / 1000).toFixed(1)} s`;
      },
    );
  } finally {
    if (down) await kit.must(["ip", "-n", kit.ns.home, "link", "set", "to-office", "up"]);
  }
  await kit.check(
    "websocket: the Daemon reconnects through nginx once the link is back",
    async () => {
      const at = performance.now();
      await daemon.waitFor(/Session established/, { from: daemonMark, ms: 45_000 });
      const [line] = await kit.console.waitFor(/Session established with .*/, {
        from: consoleMark,
        ms: 10_000,
      });
      assert(line.includes("X-Forwarded-For via 127.0.0.1:"), line);
      return `established ${
        ((performance.now() - at) / 1000).toFixed(1)
      } s after the link came back`;
    },
  );
}

async function makeCertificates(kit: WebSocketKit, web: string): Promise<void> {
  const ossl = (...args: string[]) => kit.must(["openssl", ...args], { timeoutMs: 60_000 });
  await ossl(
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=portferry test CA",
    "-keyout",
    `${web}/ca.key`,
    "-out",
    `${web}/ca.pem`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  );
  await ossl(
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    `/CN=${kit.office}`,
    "-keyout",
    `${web}/server.key`,
    "-out",
    `${web}/server.csr`,
  );
  await Deno.writeTextFile(
    `${web}/server.ext`,
    `subjectAltName=IP:${kit.office}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`,
  );
  await ossl(
    "x509",
    "-req",
    "-in",
    `${web}/server.csr`,
    "-CA",
    `${web}/ca.pem`,
    "-CAkey",
    `${web}/ca.key`,
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    `${web}/server.ext`,
    "-out",
    `${web}/server.pem`,
  );
}

/** The README's nginx snippet, with this run's paths and addresses. */
function nginxConf(kit: WebSocketKit, web: string): string {
  return `
daemon off;
user root;
worker_processes 1;
pid ${web}/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${web}/tmp/body;
  proxy_temp_path ${web}/tmp/proxy;
  fastcgi_temp_path ${web}/tmp/fastcgi;
  uwsgi_temp_path ${web}/tmp/uwsgi;
  scgi_temp_path ${web}/tmp/scgi;
  map $http_upgrade $connection_upgrade {
    default upgrade;
    "" close;
  }
  server {
    listen ${kit.office}:${WS_PORT};
    listen ${kit.office}:${WSS_PORT} ssl;
    ssl_certificate ${web}/server.pem;
    ssl_certificate_key ${web}/server.key;
    location /portferry {
      proxy_pass http://127.0.0.1:${kit.sessionPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_buffering off;
    }
  }
}
`;
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(65536);
    for (let done = 0; done < bytes; done += chunk.length) {
      crypto.getRandomValues(chunk);
      for (let off = 0; off < chunk.length;) off += await file.write(chunk.subarray(off));
    }
  } finally {
    file.close();
  }
}

function assert(ok: unknown, message: string): asserts ok {
  if (!ok) throw new Error(message);
}
