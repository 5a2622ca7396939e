/**
 * In-memory byte connections for unit tests: a pair of ends joined by two
 * bounded pipes, with half-close. Tiny capacities exercise partial reads,
 * partial writes and backpressure without sockets.
 *
 * @module
 */

import type { ByteConn } from "./mux.ts";

class Pipe {
  #chunks: Uint8Array[] = [];
  /** Per chunk: when it may be read (performance.now()), for a link with a delay. */
  #readyAt: number[] = [];
  #size = 0;
  #capacity: number;
  #delayMs: number;
  #ended = false;
  #broken = false;
  #readers: (() => void)[] = [];
  #writers: (() => void)[] = [];

  constructor(capacity: number, delayMs = 0) {
    this.#capacity = capacity;
    this.#delayMs = delayMs;
  }

  /** Wait until the first chunk's delay has passed (a delayed pipe only). */
  async #delivered(): Promise<void> {
    while (this.#delayMs > 0 && this.#readyAt.length > 0 && !this.#broken) {
      const wait = this.#readyAt[0] - performance.now();
      if (wait <= 0) return;
      await new Promise((r) => setTimeout(r, Math.ceil(wait)));
    }
  }

  #wake(list: (() => void)[]): void {
    for (const wake of list.splice(0)) wake();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#size === 0) {
      if (this.#ended || this.#broken) return null;
      await new Promise<void>((r) => this.#readers.push(r));
    }
    await this.#delivered();
    if (this.#size === 0) return null; // broken while the delay ran
    const now = performance.now();
    let n = 0;
    while (n < p.length && this.#chunks.length > 0 && this.#readyAt[0] <= now) {
      const head = this.#chunks[0];
      const take = Math.min(head.length, p.length - n);
      p.set(head.subarray(0, take), n);
      n += take;
      if (take === head.length) {
        this.#chunks.shift();
        this.#readyAt.shift();
      } else this.#chunks[0] = head.subarray(take);
    }
    this.#size -= n;
    this.#wake(this.#writers);
    return n;
  }

  async write(p: Uint8Array): Promise<number> {
    while (this.#size >= this.#capacity) {
      if (this.#broken || this.#ended) throw new Deno.errors.BrokenPipe("pipe closed");
      await new Promise<void>((r) => this.#writers.push(r));
    }
    if (this.#broken || this.#ended) throw new Deno.errors.BrokenPipe("pipe closed");
    const n = Math.min(p.length, this.#capacity - this.#size);
    this.#chunks.push(p.slice(0, n));
    this.#readyAt.push(performance.now() + this.#delayMs);
    this.#size += n;
    this.#wake(this.#readers);
    return n;
  }

  end(): void {
    this.#ended = true;
    this.#wake(this.#readers);
    this.#wake(this.#writers);
  }

  break(): void {
    this.#broken = true;
    this.#chunks = [];
    this.#readyAt = [];
    this.#size = 0;
    this.#wake(this.#readers);
    this.#wake(this.#writers);
  }

  get size(): number {
    return this.#size;
  }
}

/** One end of a memory connection. */
export interface MemoryConn extends ByteConn {
  /** True after close(). */
  readonly closed: boolean;
  /** True after closeWrite() or close(). */
  readonly writeClosed: boolean;
  /** Bytes written by the other end and not read here. */
  readonly unread: number;
}

function end(inbound: Pipe, outbound: Pipe): MemoryConn {
  let closed = false;
  let writeClosed = false;
  return {
    read: (p) => inbound.read(p),
    write: (p) => outbound.write(p),
    closeWrite: () => {
      writeClosed = true;
      outbound.end();
      return Promise.resolve();
    },
    close: () => {
      closed = true;
      writeClosed = true;
      outbound.end();
      inbound.break();
    },
    get closed() {
      return closed;
    },
    get writeClosed() {
      return writeClosed;
    },
    get unread() {
      return inbound.size;
    },
  };
}

/**
 * Two joined ends; each pipe holds at most `capacity` bytes. With `delayMs`,
 * bytes become readable that long after they were written, each way, as on
 * a long link.
 *
 * @example
 * ```ts
 * import { memoryConnPair } from "./_memory_conn.ts";
 * const [a, b] = memoryConnPair(4);
 * await a.write(new Uint8Array([1, 2, 3]));
 * const buf = new Uint8Array(8);
 * if (await b.read(buf) !== 3) throw new Error("short read");
 * ```
 */
export function memoryConnPair(
  capacity = 64 * 1024,
  delayMs = 0,
): [MemoryConn, MemoryConn] {
  const ab = new Pipe(capacity, delayMs);
  const ba = new Pipe(capacity, delayMs);
  return [end(ba, ab), end(ab, ba)];
}
