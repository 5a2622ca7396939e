/**
 * The Console's one session slot: who holds it (admission), the pending
 * question to the operator, accept, reject, close, and the drain on exit.
 *
 * @module
 */

import { CommandError } from "../app/command_error.ts";
import { escapeControls } from "../core/text.ts";
import type { TrustStore } from "../core/identity.ts";
import type { Logger } from "../core/log.ts";
import { type RejectCode, Tag } from "../core/protocol.ts";
import { secretEquals } from "../core/secret.ts";
import { Session } from "../core/session.ts";
import { ChatView } from "../ui/chat_view.ts";
import { type Admission, decideAdmission } from "./admission.ts";
import { type AuthenticatedLink, refuse } from "./handshake.ts";
import type { PeerInfo, SessionSnapshot, SessionState } from "./state.ts";

/** The operator's answer to a pending session. */
export type Decision = "accept" | "reject" | "trust";

/** Options for {@linkcode SessionDesk}. */
export interface SessionDeskOptions {
  readonly log: Logger;
  /** Operator display. */
  readonly out: (text: string) => void;
  readonly trust: TrustStore;
  /** Fingerprints the settings file trusts. */
  readonly trusted: () => readonly string[];
  /** The shared token in force, or null. */
  readonly token: () => string | null;
  readonly autoAccept: () => boolean;
  /** How long a pending Daemon may wait, in milliseconds. */
  readonly pendingTimeoutMs: () => number;
  /** Largest receive window one stream grows to (settings `streamWindowMax`). */
  readonly streamWindowMax?: () => number;
  /** Ask the operator about a pending session; absent in headless mode. */
  readonly ask?: (peer: PeerInfo, signal: AbortSignal) => Promise<Decision>;
  /** How the operator runs a subcommand, for the hints. */
  readonly controlCommand: (args: readonly string[]) => string;
  /** Called after every change of the session's state. */
  readonly onChange: () => void;
  /** A chat message from the established Daemon (already shown). */
  readonly onChat: (text: string) => void;
}

interface Current {
  session: Session;
  state: Exclude<SessionState, "none">;
  peer: PeerInfo;
  since: Date;
  /** Abort an open operator prompt. */
  prompt: AbortController;
}

/**
 * Holds the one session and decides who may have it.
 *
 * @example
 * ```ts ignore
 * const desk = new SessionDesk({ log, out, trust, trusted, token, autoAccept, ... });
 * front.onLink = async (link) => desk.admit(await authenticateLink(link, opts));
 * ```
 */
export class SessionDesk {
  readonly #o: SessionDeskOptions;
  #current: Current | null = null;
  /** Daemons accepted during this run: a reconnect takes its session back without a prompt. */
  readonly #acceptedBefore = new Set<string>();

  constructor(options: SessionDeskOptions) {
    this.#o = options;
  }

  /** The session as `status` shows it. */
  snapshot(): SessionSnapshot {
    const c = this.#current;
    return {
      state: c?.state ?? "none",
      id: c?.session.id ?? null,
      since: c?.since.toISOString() ?? null,
      peer: c?.peer ?? null,
      streams: c?.session.streamCount ?? 0,
    };
  }

  /** The established session, or null. */
  established(): Session | null {
    return this.#current?.state === "established" ? this.#current.session : null;
  }

  /** The established session, or a "no-session" error saying what could not be done. */
  require(what: string): Session {
    const session = this.established();
    if (session === null) {
      throw new CommandError(
        "no-session",
        `Cannot ${what}: no session is established (state: ${this.#current?.state ?? "none"})`,
      );
    }
    return session;
  }

  /** Admit, queue for the operator, or refuse a Daemon that proved its identity. */
  async admit(daemon: AuthenticatedLink): Promise<void> {
    const peer = peerOf(daemon);
    const holder = this.#current;
    const decision = this.#decide(daemon, holder);
    if (decision.verdict === "refuse") {
      if (decision.code === "token") {
        this.#o.log.warn("session refused: bad token", peerFields(peer));
      } else {
        this.#o.log.warn("session refused: busy", {
          ...peerFields(peer),
          holder: holder?.peer.fingerprint ?? "",
        });
      }
      return await refuse(daemon.conn, decision.code, decision.reason);
    }
    const c = this.#open(daemon, peer);
    // The slot is ours from now on: a Daemon arriving while the holder closes sees this one.
    this.#current = c;
    if (holder) await this.#displace(holder, decision, peer.fingerprint);
    if (this.#current !== c) {
      // Displaced in turn while the holder was closing.
      return await c.session.close("replaced", "another Daemon took the session");
    }
    c.session.run();
    if (decision.acceptedAs !== null) return this.#accept(c, decision.acceptedAs);
    this.#pending(c);
  }

  /** `session accept`: accept the pending session, and trust its Daemon when `remember`. */
  async accept(remember: boolean): Promise<SessionSnapshot> {
    const c = this.#pendingOr("accept");
    c.prompt.abort();
    if (remember) await this.#remember(c.peer);
    this.#accept(c, remember ? "operator, remembered as trusted" : "operator");
    return this.snapshot();
  }

  /** `session reject`: reject the pending session. */
  async reject(): Promise<void> {
    const c = this.#pendingOr("reject");
    // The operator said no: this identity asks again next time.
    this.#acceptedBefore.delete(c.peer.fingerprint);
    await this.#reject(c, "rejected", "the Console operator rejected the session");
  }

  /** `session close`: end the session; the Daemon does not reconnect. */
  async close(): Promise<void> {
    const c = this.#current;
    if (!c) throw new CommandError("conflict", "Cannot close: there is no session");
    // Acceptance ends with the session: a Daemon that reconnects anyway must be asked again.
    this.#acceptedBefore.delete(c.peer.fingerprint);
    c.state = "closing";
    this.#o.onChange();
    if (c.session.ended === null) {
      await c.session.close("closed", "the Console operator closed the session", { final: true });
    }
  }

  /** After `trust rm`: forget the acceptance, and close the session it alone let in. */
  async untrusted(fingerprint: string): Promise<void> {
    this.#acceptedBefore.delete(fingerprint);
    const c = this.#current;
    if (c?.peer.fingerprint !== fingerprint || this.#o.autoAccept() || this.#o.token() !== null) {
      return;
    }
    this.#o.log.info("trust removed for the live session's Daemon, closing it", {
      session: c.session.id,
    });
    await c.session.close("untrusted", "the Console operator removed this Daemon's trust", {
      final: true,
    });
  }

  /**
   * On exit: drain the established session's streams for up to `graceMs`
   * (cut short when `force` aborts), then close it.
   */
  async exit(graceMs: number, force?: AbortSignal): Promise<void> {
    const c = this.#current;
    if (!c || c.session.ended !== null) return;
    c.prompt.abort();
    if (!force?.aborted && c.state === "established" && c.session.streamCount > 0) {
      this.#o.out(`Draining ${c.session.streamCount} open connection(s) for up to ${graceMs} ms`);
      const forced = new Promise<void>((r) =>
        force?.addEventListener("abort", () => r(), { once: true })
      );
      await Promise.race([c.session.drain(graceMs), forced]);
    }
    await c.session.close("exit", "the Console is exiting");
  }

  #decide(daemon: AuthenticatedLink, holder: Current | null): Admission {
    const { fingerprint, claim } = daemon;
    const token = this.#o.token();
    return decideAdmission(
      holder && { fingerprint: holder.peer.fingerprint, state: holder.state },
      {
        fingerprint,
        token: token === null
          ? "none"
          : claim.token === null
          ? "missing"
          : secretEquals(claim.token, token)
          ? "right"
          : "wrong",
        autoAccept: this.#o.autoAccept(),
        trusted: this.#o.trust.has(fingerprint) || this.#o.trusted().includes(fingerprint),
        acceptedBefore: this.#acceptedBefore.has(fingerprint),
      },
    );
  }

  /** A new session for an admitted Daemon, not yet running. */
  #open(daemon: AuthenticatedLink, peer: PeerInfo): Current {
    const id = crypto.getRandomValues(new Uint8Array(4)).toHex();
    const slog = this.#o.log.child({ session: id });
    const chat = new ChatView({ label: `${peer.user}@${peer.host}`, out: this.#o.out, log: slog });
    const dropped = droppedChatCounter(slog, peer);
    const c: Current = {
      peer,
      state: "pending",
      since: new Date(),
      prompt: new AbortController(),
      session: new Session(daemon.conn, daemon.reader, {
        role: "console",
        id,
        log: slog,
        earlyData: daemon.claim.capabilities.includes("early-data"),
        windowTuning: daemon.claim.capabilities.includes("window-tuning"),
        streamWindowMax: this.#o.streamWindowMax?.(),
        // Until it is accepted, the Daemon gets a small budget and pendingTimeoutMs.
        pending: { timeoutMs: this.#o.pendingTimeoutMs() },
        handlers: {
          onChat: (text) => {
            // Until the operator accepts it, a Daemon has no say on the operator's screen.
            if (c.state !== "established") return dropped();
            chat.show(text);
            this.#o.onChat(text);
          },
          onEnd: (end) => {
            c.prompt.abort();
            chat.close();
            if (this.#current === c) this.#current = null;
            slog.info("session ended", {
              code: end.code,
              reason: end.reason,
              by: end.remote ? "daemon" : "console",
            });
            this.#o.out(`Session with ${describe(peer)} ended: ${escapeControls(end.reason)}`);
            this.#o.onChange();
          },
        },
      }),
    };
    return c;
  }

  /** The holder gives its place to the newcomer, as admission decided. */
  async #displace(holder: Current, decision: Admission, by: string): Promise<void> {
    if (decision.verdict !== "admit") return;
    if (decision.displace === "own") {
      this.#o.log.info("the same Daemon connected again, replacing its stale session", {
        session: holder.session.id,
      });
      holder.prompt.abort();
      await holder.session.close("replaced", "the same Daemon connected again");
    } else if (decision.displace === "pending") {
      this.#o.log.warn("a pending session gives its place to a Daemon admitted without asking", {
        session: holder.session.id,
        fingerprint: holder.peer.fingerprint,
        by,
        how: decision.acceptedAs ?? "",
      });
      await this.#reject(
        holder,
        "busy",
        "the Console is busy: a Daemon it admits without asking took the place of this pending one",
      );
    }
  }

  /** Tell the Daemon it waits for the operator, and ask the operator. */
  #pending(c: Current): void {
    const { peer } = c;
    const { ask, controlCommand } = this.#o;
    c.session.send({ tag: Tag.PENDING });
    this.#o.log.child({ session: c.session.id }).info(
      "session pending: waiting for the operator",
      peerFields(peer),
    );
    this.#o.onChange();
    this.#o.out(
      `Daemon ${describe(peer)} asks for a session.\n  fingerprint: ${peer.fingerprint}\n` +
        (ask
          ? ""
          : `  accept: ${controlCommand(["session", "accept"])}    reject: ${
            controlCommand(["session", "reject"])
          }`),
    );
    ask?.(peer, c.prompt.signal).then((decision) => this.#answer(c, decision), () => {});
  }

  async #answer(c: Current, decision: Decision): Promise<void> {
    if (this.#current !== c || c.state !== "pending") return;
    if (decision === "reject") {
      this.#acceptedBefore.delete(c.peer.fingerprint);
      return await this.#reject(c, "rejected", "the Console operator rejected the session");
    }
    if (decision === "trust") await this.#remember(c.peer);
    this.#accept(c, decision === "trust" ? "operator, remembered as trusted" : "operator");
  }

  #accept(c: Current, how: string): void {
    c.state = "established";
    c.since = new Date();
    c.session.send({ tag: Tag.ACCEPT, session: c.session.id });
    this.#acceptedBefore.add(c.peer.fingerprint);
    this.#o.log.info("session established", { session: c.session.id, how, ...peerFields(c.peer) });
    this.#o.out(`Session established with ${describe(c.peer)} (${how})`);
    this.#o.onChange();
  }

  async #reject(c: Current, code: RejectCode, reason: string): Promise<void> {
    c.prompt.abort();
    this.#o.log.info("session rejected", {
      session: c.session.id,
      code,
      reason,
      ...peerFields(c.peer),
    });
    await c.session.reject(code, reason);
  }

  async #remember(peer: PeerInfo): Promise<void> {
    await this.#o.trust.add({ fingerprint: peer.fingerprint, host: peer.host, user: peer.user });
  }

  #pendingOr(verb: string): Current {
    const c = this.#current;
    if (!c || c.state !== "pending") {
      throw new CommandError(
        "conflict",
        `Cannot ${verb}: no session is pending (state: ${c?.state ?? "none"})`,
      );
    }
    return c;
  }
}

function peerOf(daemon: AuthenticatedLink): PeerInfo {
  const { claim } = daemon;
  return {
    address: daemon.remote,
    host: claim.host,
    user: claim.user,
    os: claim.os,
    fingerprint: daemon.fingerprint,
  };
}

/**
 * Chat from a Daemon not yet accepted is dropped: counted, and logged once
 * a second at most (so it cannot flood the log either).
 */
function droppedChatCounter(log: Logger, peer: PeerInfo): () => void {
  let unshown = 0;
  let logged = -Infinity;
  return () => {
    unshown++;
    if (Date.now() - logged < 1000) return;
    log.warn("chat from a Daemon not yet accepted, dropped", {
      ...peerFields(peer),
      dropped: unshown,
    });
    unshown = 0;
    logged = Date.now();
  };
}

function peerFields(peer: PeerInfo) {
  return { remote: peer.address, host: peer.host, user: peer.user, fingerprint: peer.fingerprint };
}

/** The peer in one line; its facts fit the AUTH rules, escaped all the same. */
function describe(peer: PeerInfo): string {
  return escapeControls(`${peer.user}@${peer.host} (${peer.os}) from ${peer.address}`);
}
