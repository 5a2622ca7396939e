/**
 * Hostile peers for tests: programs written by hand that speak (or break)
 * the wire protocol to a real Console or Daemon. Each area keeps its own
 * section; append new sections, do not reorganise.
 *
 * @module
 */

import { closeQuietly, tempDir, within } from "./_harness.ts";
import { loadOrCreateIdentity } from "../lib/identity.ts";
import { type Message, Tag } from "../lib/protocol.ts";
import { consoleHandshake, MessageReader, sendNow } from "../lib/session.ts";
import { settingsPaths } from "../lib/settings.ts";
import { listenSessions } from "../lib/tls.ts";

// --- the Daemon's allow-list and resolver: a Console that sends raw OPENs and RESOLVEs ---

/** One accepted session of a {@linkcode rawConsole}, driven message by message. */
export interface RawConsoleSession extends Disposable {
  readonly conn: Deno.TlsConn;
  /** Send one message as is. */
  send(msg: Message): Promise<void>;
  /**
   * The next message `match` accepts, answering PINGs and dropping other
   * messages meanwhile; fails with `what` after `ms`.
   */
  expect<T extends Message>(
    match: (msg: Message) => msg is T,
    what: string,
    ms?: number,
  ): Promise<T>;
}

/** A Console written by hand: it accepts every Daemon and lets the test send anything. */
export interface RawConsole extends Disposable {
  /** Where the Daemon dials, "127.0.0.1:PORT". */
  readonly address: string;
  readonly fingerprint: string;
  /** The next Daemon, past hello and auth, accepted (the Daemon's pin probe is skipped). */
  next(): Promise<RawConsoleSession>;
}

/** Start a {@linkcode RawConsole} on 127.0.0.1 port 0. */
export async function rawConsole(): Promise<RawConsole> {
  const dir = await tempDir("pf-raw-console-");
  const paths = settingsPaths(`${dir}/portferry-console.yaml`);
  const identity = await loadOrCreateIdentity({ key: paths.key, cert: paths.cert }, {
    role: "console",
  });
  const listener = listenSessions({ hostname: "127.0.0.1", port: 0, identity });
  async function next(): Promise<RawConsoleSession> {
    for (let i = 0; i < 10; i++) {
      const conn = await within(listener.accept(), 15_000, "a Daemon to connect");
      const reader = new MessageReader(conn);
      try {
        await conn.handshake();
        await consoleHandshake(conn, reader);
      } catch {
        closeQuietly(conn); // The pin probe: TLS, then nothing.
        continue;
      }
      await sendNow(conn, { tag: Tag.ACCEPT, session: "rawcon01" });
      reader.trust();
      return rawSession(conn, reader);
    }
    throw new Error("Cannot get a Daemon session: only probes arrived");
  }
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    fingerprint: identity.fingerprint,
    next,
    [Symbol.dispose]: () => closeQuietly(listener),
  };
}

function rawSession(conn: Deno.TlsConn, reader: MessageReader): RawConsoleSession {
  const send = (msg: Message) => sendNow(conn, msg);
  async function expect<T extends Message>(
    match: (msg: Message) => msg is T,
    what: string,
    ms = 15_000,
  ): Promise<T> {
    return await within(
      (async () => {
        for (let i = 0; i < 100_000; i++) {
          const msg = await reader.next();
          if (match(msg)) return msg;
          if (msg.tag === Tag.PING) await send({ tag: Tag.PONG, seq: msg.seq });
        }
        throw new Error(`Cannot find ${what}: too many other messages`);
      })(),
      ms,
      what,
    );
  }
  return { conn, send, expect, [Symbol.dispose]: () => closeQuietly(conn) };
}
