// deno-lint-ignore-file no-console -- a tool run as a process: its ready line is its output
/**
 * A WAN link emulator: a TCP relay that adds what a long path has, since the
 * kernel here has no `netem`.
 *
 * - A fixed one-way delay in each direction.
 * - A rate limit per direction, shared by every connection through the link
 *   (four streams share it as they would share a real link).
 * - A bounded queue (by default 2× the bandwidth-delay product) with
 *   backpressure: when the link's queue is full the relay stops reading, so
 *   the sender's TCP stalls. Nothing is ever dropped.
 * - Optionally the TCP handshake's round trip: a new connection's first bytes
 *   leave one round trip after it was accepted, and the target is dialled one
 *   one-way delay after, as a SYN would arrive.
 *
 * Each chunk read is stamped with the time it leaves the link: it starts
 * serialising when the link is free (the link's clock moves on by its size
 * over the rate) and arrives one delay later. Deno's timers have millisecond
 * grain, so the writer sleeps to the head chunk's time (rounded up: never
 * early) and then writes every chunk that is due, as one batch.
 *
 * Bytes a connection holds (read, not yet written) are capped too, at the
 * queue bound plus one bandwidth-delay product: a receiver that stops reading
 * stops the relay reading from its sender, and does not slow the other
 * connections through the link.
 *
 * As a process:
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 tools/wan_link.ts --listen 127.0.0.1:0 \
 *   --to 127.0.0.1:8080 --delay-ms 20 --rate-mbit 1000 [--queue-bytes N] [--handshake]
 * ```
 *
 * prints `wan_link listening on 127.0.0.1:PORT` when ready and relays until
 * SIGTERM or SIGINT. `--rate-mbit 0` is no rate limit; `--delay-ms 0` no delay.
 *
 * As a module: {@linkcode startWanLink}.
 *
 * @module
 */

import { setImmediate } from "node:timers";

/** How the emulated link behaves. */
export interface WanLinkOptions {
  /** Where the relay listens; port 0 picks a free one. */
  readonly listen: { readonly hostname: string; readonly port: number };
  /** Where each accepted connection is relayed to. */
  readonly to: { readonly hostname: string; readonly port: number };
  /** One-way delay, each direction, in milliseconds (0: none). */
  readonly delayMs: number;
  /** Rate of each direction in Mbit/s (0: unlimited). */
  readonly rateMbit: number;
  /**
   * Bytes the link's queue holds in each direction before the relay stops
   * reading. Default: 2× the bandwidth-delay product (rate × round trip), at
   * least 256 KiB.
   */
  readonly queueBytes?: number;
  /** Emulate the TCP handshake's round trip for new connections (default false). */
  readonly handshake?: boolean;
  /** Called when a connection's reader pauses because it holds its cap; for tests. */
  readonly onBackpressure?: (held: number) => void;
}

/** Counters of one direction. */
export interface LaneStats {
  /** Bytes read from senders. */
  readonly read: number;
  /** Bytes written to receivers. */
  readonly written: number;
  /** Most bytes one connection held in this direction (read, not yet written). */
  readonly maxHeld: number;
  /** Times a reader paused on a full queue or a full connection. */
  readonly pauses: number;
}

/** A running link emulator. */
export interface WanLink {
  /** The port it listens on. */
  readonly port: number;
  /** Bytes one connection may hold in one direction before its reader pauses. */
  readonly connectionCap: number;
  /** Client-to-target ("up") and target-to-client ("down") counters. */
  stats(): { up: LaneStats; down: LaneStats; connections: number };
  /** Stop listening and close every connection. */
  close(): Promise<void>;
}

/** Bytes per read. */
const CHUNK = 256 * 1024;

/** Spare read buffers of CHUNK bytes: the GC frees big buffers late. */
const spare: Uint8Array[] = [];

function takeBuffer(): Uint8Array {
  return spare.pop() ?? new Uint8Array(CHUNK);
}

function giveBack(data: Uint8Array): void {
  if (data.byteOffset === 0 && data.buffer.byteLength === CHUNK && spare.length < 64) {
    spare.push(new Uint8Array(data.buffer));
  }
}

/** One direction of the link, shared by all its connections. */
class Lane {
  /** When the link is next free to start sending, in performance.now() ms. */
  free = 0;
  read = 0;
  written = 0;
  maxHeld = 0;
  pauses = 0;
  constructor(
    /** Bytes per millisecond; Infinity when unlimited. */
    readonly bytesPerMs: number,
    readonly delayMs: number,
    /** The queue bound as time: queued bytes / rate. */
    readonly queueMs: number,
  ) {}

  /** Below this wait, the writer yields to I/O rather than sleep on a timer. */
  get spinMs(): number {
    return this.delayMs < 10 ? Infinity : 0.5;
  }

  /** Stamp `n` bytes read now: when they arrive at the far end. */
  stamp(n: number, now: number): number {
    const start = Math.max(now, this.free);
    this.free = start + n / this.bytesPerMs;
    this.read += n;
    return this.free + this.delayMs;
  }

  /** Milliseconds until the queue has room again (0: it has). */
  fullFor(now: number): number {
    return Math.max(0, this.free - now - this.queueMs);
  }

  stats(): LaneStats {
    const { read, written, maxHeld, pauses } = this;
    return { read, written, maxHeld, pauses };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Yield to I/O and come back at once (a macrotask, unlike a resolved promise). */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * How late Deno's timers fire (ms past what was asked; about 1.2 ms here),
 * measured as they run: a sleep asks that much less, so it lands on time.
 */
let timerLateness = 1;

/**
 * Wait until `performance.now()` reaches `t`, never returning early. Long
 * waits sleep on a timer that is asked to fire early by its usual lateness;
 * what is left after such a sleep, or a wait shorter than `spinMs`
 * (precision for short delays, at some CPU), yields to I/O in a loop; other
 * short waits sleep 1 ms (up to about 2 ms late: chunks back to back).
 */
async function waitUntil(t: number, spinMs: number): Promise<void> {
  let slept = false;
  while (true) {
    const now = performance.now();
    const wait = t - now;
    if (wait <= 0) return;
    if (wait >= timerLateness + 1) {
      const asked = Math.floor(wait - timerLateness);
      await sleep(asked);
      const late = performance.now() - now - asked;
      timerLateness = Math.min(4, Math.max(0, timerLateness * 0.9 + late * 0.1));
      slept = true;
    } else if (slept || wait <= spinMs) {
      await yieldToIo();
    } else {
      await sleep(1);
    }
  }
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch {
    // Closed already.
  }
}

/** A chunk on its way, or the sender's EOF (data null). */
interface InFlight {
  readonly data: Uint8Array | null;
  readonly arrive: number;
}

/** One direction of one connection: reads `src`, delays, writes `dst`. */
class Pipe {
  #queue: InFlight[] = [];
  #head = 0;
  #held = 0;
  #wakeWriter: (() => void) | null = null;
  #wakeReader: (() => void) | null = null;

  constructor(
    readonly lane: Lane,
    readonly cap: number,
    readonly onBackpressure?: (held: number) => void,
  ) {}

  /** Read `src` until EOF, stamping each chunk; pauses while the queue is full. */
  async readFrom(src: Deno.Conn): Promise<void> {
    let buf = takeBuffer();
    while (true) {
      await this.#roomToRead();
      const n = await src.read(buf).catch(() => null);
      const now = performance.now();
      if (n === null) {
        this.#push({ data: null, arrive: Math.max(now, this.lane.free) + this.lane.delayMs });
        return;
      }
      let data: Uint8Array;
      if (n > CHUNK / 2) {
        data = buf.subarray(0, n);
        buf = takeBuffer();
      } else {
        data = buf.slice(0, n);
      }
      this.#held += n;
      if (this.#held > this.lane.maxHeld) this.lane.maxHeld = this.#held;
      this.#push({ data, arrive: this.lane.stamp(n, now) });
    }
  }

  async #roomToRead(): Promise<void> {
    let paused = false;
    while (true) {
      const full = this.#held >= this.cap;
      const wait = full ? 0 : this.lane.fullFor(performance.now());
      if (!full && wait <= 0) return;
      if (!paused) {
        paused = true;
        this.lane.pauses++;
        if (full) this.onBackpressure?.(this.#held);
      }
      if (full) await new Promise<void>((resolve) => (this.#wakeReader = resolve));
      else await sleep(Math.ceil(wait));
    }
  }

  #push(item: InFlight): void {
    this.#queue.push(item);
    const wake = this.#wakeWriter;
    this.#wakeWriter = null;
    wake?.();
  }

  /** Write each chunk to `dst` once its time has come; ends after the EOF. */
  async writeTo(dst: Deno.Conn): Promise<void> {
    while (true) {
      if (this.#head === this.#queue.length) {
        await new Promise<void>((resolve) => (this.#wakeWriter = resolve));
        continue;
      }
      await waitUntil(this.#queue[this.#head].arrive, this.lane.spinMs);
      const now = performance.now();
      while (this.#head < this.#queue.length && this.#queue[this.#head].arrive <= now) {
        const { data } = this.#queue[this.#head++];
        if (data === null) {
          await dst.closeWrite().catch(() => {});
          return;
        }
        for (let at = 0; at < data.length;) at += await dst.write(data.subarray(at));
        this.#held -= data.length;
        giveBack(data);
        this.lane.written += data.length;
        const wake = this.#wakeReader;
        this.#wakeReader = null;
        wake?.();
      }
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
    }
  }
}

/** What every connection through one link shares. */
interface LinkState {
  readonly o: WanLinkOptions;
  readonly up: Lane;
  readonly down: Lane;
  readonly cap: number;
  readonly open: Set<Deno.TcpConn>;
}

/** Relay one accepted connection through the link until both sides are done. */
async function relay(client: Deno.TcpConn, link: LinkState): Promise<void> {
  const { o, open } = link;
  const accepted = performance.now();
  open.add(client);
  let target: Deno.TcpConn | null = null;
  try {
    // The SYN's way out: the target hears of the connection one delay later.
    if (o.handshake && o.delayMs > 0) await waitUntil(accepted + o.delayMs, link.up.spinMs);
    target = await Deno.connect({ hostname: o.to.hostname, port: o.to.port });
    open.add(target);
    target.setNoDelay(true);
    client.setNoDelay(true);
    const upPipe = new Pipe(link.up, link.cap, o.onBackpressure);
    const downPipe = new Pipe(link.down, link.cap, o.onBackpressure);
    // The SYN-ACK's way back: the client's first bytes leave one round trip after it connected.
    const upStart = o.handshake && o.delayMs > 0
      ? waitUntil(accepted + 2 * o.delayMs, link.up.spinMs)
      : Promise.resolve();
    await Promise.all([
      upStart.then(() => upPipe.readFrom(client)),
      upPipe.writeTo(target),
      downPipe.readFrom(target),
      downPipe.writeTo(client),
    ]);
  } catch {
    // A reset on either side ends the relay; closing both passes it on.
  } finally {
    closeQuietly(client);
    open.delete(client);
    if (target) {
      closeQuietly(target);
      open.delete(target);
    }
  }
}

/** Start a link emulator; see the module docs. */
export function startWanLink(o: WanLinkOptions): Promise<WanLink> {
  return new Promise((resolve) => resolve(openLink(o)));
}

function openLink(o: WanLinkOptions): WanLink {
  if (!(o.delayMs >= 0) || !(o.rateMbit >= 0)) {
    throw new RangeError(
      `Cannot start the link emulator: delay "${o.delayMs}" and rate "${o.rateMbit}" must be numbers >= 0`,
    );
  }
  const bytesPerMs = o.rateMbit > 0 ? (o.rateMbit * 1e6) / 8 / 1000 : Infinity;
  const bdp = Number.isFinite(bytesPerMs) ? bytesPerMs * 2 * o.delayMs : 0;
  const queueBytes = o.queueBytes ?? Math.max(2 * bdp, 256 * 1024);
  const queueMs = Number.isFinite(bytesPerMs) ? queueBytes / bytesPerMs : Infinity;
  const link: LinkState = {
    o,
    up: new Lane(bytesPerMs, o.delayMs, queueMs),
    down: new Lane(bytesPerMs, o.delayMs, queueMs),
    cap: Math.max(queueBytes + bdp, CHUNK),
    open: new Set(),
  };
  const listener = Deno.listen({ hostname: o.listen.hostname, port: o.listen.port });
  const relays = new Set<Promise<void>>();
  const accepting = (async () => {
    for await (const client of listener) {
      const r = relay(client, link);
      relays.add(r);
      r.finally(() => relays.delete(r));
    }
  })().catch(() => {});

  return {
    port: (listener.addr as Deno.NetAddr).port,
    connectionCap: link.cap,
    stats: () => ({
      up: link.up.stats(),
      down: link.down.stats(),
      connections: link.open.size / 2,
    }),
    async close() {
      try {
        listener.close();
      } catch {
        // Closed already.
      }
      for (const c of link.open) closeQuietly(c);
      await accepting;
      await Promise.all(relays);
    },
  };
}

/** Parse "host:port". */
function hostPort(flag: string, v: string | undefined): { hostname: string; port: number } {
  const m = v?.match(/^(.+):(\d+)$/);
  if (!m || Number(m[2]) > 65535) {
    throw new Error(`Cannot parse ${flag}: "${v}" is not HOST:PORT`);
  }
  return { hostname: m[1].replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
}

/** Parse the command line into options. */
export function parseWanLinkArgs(args: string[]): WanLinkOptions {
  const get = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const known = ["--listen", "--to", "--delay-ms", "--rate-mbit", "--queue-bytes"];
  for (let i = 0; i < args.length; i++) {
    if (known.includes(args[i])) i++;
    else if (args[i] !== "--handshake") {
      throw new Error(`Cannot parse arguments: unknown "${args[i]}" (see tools/wan_link.ts)`);
    }
  }
  const num = (flag: string, fallback?: number): number => {
    const v = get(flag);
    const n = v === undefined ? fallback : Number(v);
    if (n === undefined || !Number.isFinite(n) || n < 0) {
      throw new Error(`Cannot parse ${flag}: "${v}" is not a number >= 0`);
    }
    return n;
  };
  const queue = get("--queue-bytes");
  return {
    listen: hostPort("--listen", get("--listen") ?? "127.0.0.1:0"),
    to: hostPort("--to", get("--to")),
    delayMs: num("--delay-ms"),
    rateMbit: num("--rate-mbit"),
    queueBytes: queue === undefined ? undefined : num("--queue-bytes"),
    handshake: args.includes("--handshake"),
  };
}

if (import.meta.main) {
  try {
    const o = parseWanLinkArgs(Deno.args);
    const link = await startWanLink(o);
    const stop = async () => {
      await link.close();
      Deno.exit(0);
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    console.log(
      `wan_link listening on ${o.listen.hostname}:${link.port} to ${o.to.hostname}:${o.to.port}` +
        `, ${o.delayMs} ms each way, ${o.rateMbit || "unlimited"} Mbit/s`,
    );
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    Deno.exit(2);
  }
}
