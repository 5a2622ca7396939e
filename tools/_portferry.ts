/**
 * What the tools (stress, soak, bench cases) need to run portferry as real
 * processes: a Console and a Daemon spawned with their `deno task` flags on
 * loopback port 0, their output lines to wait on, their CLI, a TCP server, a
 * cuttable relay and a look at /proc. Tools never import the test harness;
 * this is their own, smaller kit.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/**
 * The Deno that runs the programs: this one when `--allow-run` covers its
 * path, else the `deno` on PATH (a task may grant `--allow-run=deno` only).
 */
export const DENO = Deno.permissions.querySync({ name: "run", command: Deno.execPath() }).state ===
    "granted"
  ? Deno.execPath()
  : "deno";

/** PF_TEST_VERBOSE set (and readable: the bench task does not grant it): echo every line. */
const VERBOSE = Deno.permissions.querySync({ name: "env", variable: "PF_TEST_VERBOSE" }).state ===
    "granted" && Boolean(Deno.env.get("PF_TEST_VERBOSE"));

/** The permission flags of the `console` or `daemon` task in deno.json. */
export async function taskFlags(task: "console" | "daemon"): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks[task].split(/\s+/);
  const from = words.indexOf("run") + 1;
  const to = words.findIndex((w) => w.endsWith(".ts"));
  if (from === 0 || to < 0) throw new Error(`Cannot read the flags of task "${task}"`);
  return words.slice(from, to);
}

/** A process's output, line by line, with waits for a line. */
export class Lines {
  /** Every line so far (stdout and stderr interleaved). */
  readonly lines: string[] = [];
  #wake: (() => void)[] = [];

  /** Read `stream` to its end, one line at a time. */
  async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const line of parts) this.#add(line);
    }
    if (rest) this.#add(rest);
  }

  #add(line: string): void {
    this.lines.push(line);
    // deno-lint-ignore no-console -- echoes the programs' output on request
    if (VERBOSE) console.error(line);
    for (const wake of this.#wake.splice(0)) wake();
  }

  /** The number of lines so far: pass it as `from` to wait only for later lines. */
  get mark(): number {
    return this.lines.length;
  }

  /** The first line from `from` on matching `re`; fails after `ms`. */
  async waitFor(
    re: RegExp,
    options: { from?: number; ms?: number } = {},
  ): Promise<RegExpMatchArray> {
    const until = Date.now() + (options.ms ?? 20_000);
    for (let at = options.from ?? 0;;) {
      for (; at < this.lines.length; at++) {
        const m = this.lines[at].match(re);
        if (m) return m;
      }
      const left = until - Date.now();
      if (left <= 0) {
        throw new Error(`Timed out waiting for ${re}:\n${this.lines.slice(-20).join("\n")}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }
}

/** A Console or Daemon process in its own temp folder. */
export interface Program extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly out: Lines;
  readonly settingsPath: string;
  /** Run a subcommand against this program (its settings file); fails unless it exits 0. */
  cli(...args: string[]): Promise<string>;
}

/** A Console process: where Daemons connect and its fingerprint. */
export interface ConsoleProgram extends Program {
  /** E.g. "127.0.0.1:41234". */
  readonly address: string;
  readonly fingerprint: string;
}

/** Options for {@linkcode startConsole} and {@linkcode startDaemon}. */
export interface ProgramOptions {
  /** Extra command-line arguments. */
  readonly args?: readonly string[];
  /** The settings file's text to start with. */
  readonly settings?: string;
}

async function spawnProgram(
  entry: "console.ts" | "daemon.ts",
  args: readonly string[],
  options: ProgramOptions,
): Promise<Program> {
  const dir = await Deno.makeTempDir({ prefix: "portferry-tool-" });
  const settingsPath = `${dir}/portferry-${entry.replace(".ts", "")}.yaml`;
  const flags = await taskFlags(entry === "console.ts" ? "console" : "daemon");
  let child: Deno.ChildProcess;
  try {
    if (options.settings !== undefined) {
      await Deno.writeTextFile(settingsPath, options.settings, { mode: 0o600 });
    }
    child = new Deno.Command(DENO, {
      args: ["run", ...flags, entry, ...args, "--config", settingsPath, ...options.args ?? []],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", USER: "portferry-tool" },
    }).spawn();
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  const out = new Lines();
  const pumps = Promise.all([out.pump(child.stdout), out.pump(child.stderr)]);
  return {
    child,
    out,
    settingsPath,
    async cli(...cliArgs) {
      const r = await new Deno.Command(DENO, {
        args: ["run", ...flags, entry, "--config", settingsPath, ...cliArgs],
        cwd: ROOT,
        stdin: "null",
        env: { NO_COLOR: "1" },
      }).output();
      const text = decoder.decode(r.stdout);
      if (r.code !== 0) {
        throw new Error(
          `Cannot run "${cliArgs.join(" ")}" (exit ${r.code}): ${decoder.decode(r.stderr)}${text}`,
        );
      }
      return text;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await child.status;
      await pumps;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A headless Console on 127.0.0.1 port 0, once it listens for Daemons. */
export async function startConsole(options: ProgramOptions = {}): Promise<ConsoleProgram> {
  const program = await spawnProgram(
    "console.ts",
    ["--session", "127.0.0.1:0", "--headless"],
    options,
  );
  try {
    const [, fingerprint] = await program.out.waitFor(/fingerprint: (SHA256:\S+)/);
    const [, address] = await program.out.waitFor(/Console listening for Daemons on (\S+)/);
    return { ...program, address, fingerprint };
  } catch (err) {
    await program[Symbol.asyncDispose]();
    throw err;
  }
}

/** A Daemon dialing `target` (`host:port`) pinned to `fingerprint`, once spawned. */
export function startDaemon(
  target: { address: string; fingerprint: string },
  options: ProgramOptions = {},
): Promise<Program> {
  return spawnProgram("daemon.ts", [target.address, "--fingerprint", target.fingerprint], options);
}

/** A Console with `--auto-accept` and a Daemon, once both logged the session established. */
export async function startPair(): Promise<
  { console: ConsoleProgram; daemon: Program } & AsyncDisposable
> {
  const con = await startConsole({ args: ["--auto-accept"] });
  let daemon: Program | undefined;
  try {
    daemon = await startDaemon(con);
    await daemon.out.waitFor(/Session established/i);
    await con.out.waitFor(/Session established/i);
  } catch (err) {
    await daemon?.[Symbol.asyncDispose]();
    await con[Symbol.asyncDispose]();
    throw err;
  }
  const d = daemon;
  return {
    console: con,
    daemon: d,
    async [Symbol.asyncDispose]() {
      await d[Symbol.asyncDispose]();
      await con[Symbol.asyncDispose]();
    },
  };
}

/** `pfo add NAME --listen 127.0.0.1:0 --target TARGET [extra]`; resolves to the bound address. */
export async function addPfo(
  con: Program,
  name: string,
  target: string,
  extra: readonly string[] = [],
): Promise<string> {
  await con.cli("pfo", "add", name, "--listen", "127.0.0.1:0", "--target", target, ...extra);
  const status = JSON.parse(await con.cli("status", "--json")) as {
    pfos: { name: string; bound: string[] }[];
  };
  const bound = status.pfos.find((p) => p.name === name)?.bound[0];
  if (bound === undefined) throw new Error(`Cannot find PFO "${name}" bound in status --json`);
  return bound;
}

/** `host:port` or `[v6]:port` as connect options. */
export function hostPort(text: string): { hostname: string; port: number } {
  const m = text.match(/^\[?([^\]]+?)\]?:(\d+)$/);
  if (!m) throw new Error(`Cannot parse "${text}" as host:port`);
  return { hostname: m[1], port: Number(m[2]) };
}

/** A TCP server on 127.0.0.1:0 running `handler` per connection, closing each after. */
export function tcpServer(
  handler: (conn: Deno.TcpConn) => Promise<void>,
): Deno.TcpListener & { port: number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      handler(conn).catch(() => {}).finally(() => closeQuietly(conn));
    }
  })().catch(() => {});
  return Object.assign(listener, { port: (listener.addr as Deno.NetAddr).port });
}

/** Close `resource`, ignoring "already closed". */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Closed already.
  }
}

/** What /proc tells of a process (Linux). */
export interface ProcFigures {
  /** VmRSS and VmHWM (peak), KiB. */
  readonly rssKiB: number;
  readonly hwmKiB: number;
  /** Open file descriptors, and how many of them are sockets. */
  readonly fds: number;
  readonly sockets: number;
}

/**
 * /proc/PID/status and /proc/PID/fd through `cat` and `ls`: Deno reads /proc
 * itself only with --allow-all.
 */
export async function procFigures(pid: number): Promise<ProcFigures> {
  const run = async (cmd: string, args: string[]) =>
    decoder.decode((await new Deno.Command(cmd, { args, stdout: "piped" }).output()).stdout);
  const status = await run("cat", [`/proc/${pid}/status`]);
  const kib = (key: string) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+)`, "m"))?.[1]);
  const links = (await run("ls", ["-l", `/proc/${pid}/fd`])).split("\n").filter((l) =>
    l.includes(" -> ")
  );
  return {
    rssKiB: kib("VmRSS"),
    hwmKiB: kib("VmHWM"),
    fds: links.length,
    sockets: links.filter((l) => l.includes("socket:")).length,
  };
}

/** A TCP relay on 127.0.0.1:0 in front of a target, whose connections can be cut. */
export interface Relay extends AsyncDisposable {
  /** Where to dial instead of the target. */
  readonly address: string;
  /** Close every relayed connection, as a broken network would; returns how many. */
  cut(): number;
}

/** Start a {@linkcode Relay} in front of `target` (`host:port`). */
export function relay(target: string): Relay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.TcpConn[]>();
  const cutOne = (pair: Deno.TcpConn[]) => open.delete(pair) && pair.forEach(closeQuietly);
  const loop = (async () => {
    for await (const client of listener) {
      const upstream = await Deno.connect(hostPort(target)).catch(() => null);
      if (upstream === null) {
        closeQuietly(client);
        continue;
      }
      const pair = [client, upstream];
      open.add(pair);
      const pipe = (from: Deno.TcpConn, to: Deno.TcpConn) =>
        from.readable.pipeTo(to.writable, { preventClose: true }).catch(() => {});
      // Either direction's end ends both: a session has no use for half a link.
      Promise.race([pipe(client, upstream), pipe(upstream, client)]).finally(() => cutOne(pair));
    }
  })().catch(() => {});
  const cut = () => {
    const n = open.size;
    for (const pair of [...open]) cutOne(pair);
    return n;
  };
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    cut,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      cut();
      await loop;
    },
  };
}
