/**
 * The Daemon's answer to the Console's OPEN: check the allow-list, then
 * connect to the TCP target or open a UDP flow, and record it in the state
 * model; or refuse with a coded OPEN_ERR.
 *
 * @module
 */

import { OpenError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { ByteConn } from "../core/mux.ts";
import { type OpenMessage, Tag } from "../core/protocol.ts";
import type { Session } from "../core/session.ts";
import type { AllowList } from "../net/allowlist.ts";
import { parseIp } from "../net/address.ts";
import { formatHostPort } from "../net/hostport.ts";
import { classifyError, type ConnectTargetOptions } from "./connector.ts";
import type { ConnectionInfo, DaemonState } from "./state.ts";
import type { SendBudget } from "../core/datagram.ts";
import { DaemonFlow } from "./udp.ts";

/** How the Daemon reaches targets: this machine's sockets, or a fake in tests. */
export interface Connector {
  /** Connect to a TCP target; throws {@linkcode OpenError} with a code. */
  connect(
    host: string,
    port: number,
    options: ConnectTargetOptions,
  ): Promise<{ conn: ByteConn; address: string }>;
  /** Resolve a name with this machine's resolver. */
  resolve(host: string): Promise<string[]>;
}

/** What the open handling works with. */
export interface OpenContext {
  readonly allow: AllowList;
  readonly connector: Connector;
  readonly connectTimeoutMs: number;
  readonly log: Logger;
  readonly state: DaemonState;
  /** Open UDP flows, for the idle sweep and exit. */
  readonly flows: Set<DaemonFlow>;
  /** The bytes all UDP flows may queue toward their targets together. */
  readonly udpBudget?: SendBudget;
}

/** One OPEN being served: what the state model and the log need about it. */
interface Open {
  readonly ctx: OpenContext;
  readonly session: Session;
  readonly msg: OpenMessage;
  readonly target: string;
  readonly log: Logger;
  readonly since: Date;
}

/**
 * Serve one OPEN: resolves once the target is reached and the stream or
 * flow registered, or the Console is told why not (never rejects).
 *
 * @example
 * ```ts ignore
 * session handlers: { onOpen: (msg) => void handleOpen(ctx, session, msg) }
 * ```
 */
export async function handleOpen(
  ctx: OpenContext,
  session: Session,
  msg: OpenMessage,
): Promise<void> {
  const target = formatHostPort(msg.host, msg.port);
  const log = ctx.log.child({ session: session.id, pfo: msg.pfo, stream: msg.stream });
  const open: Open = { ctx, session, msg, target, log, since: new Date() };
  // Which check refused a "not-allowed" open: the rules, or Deno's --allow-net on connect.
  let refusedBy: "allow-list" | "permission" = "permission";
  try {
    const decision = await ctx.allow.check(msg.host, msg.port, (h) => ctx.connector.resolve(h));
    if (!decision.allowed) {
      refusedBy = "allow-list";
      throw new OpenError(decision.code, decision.reason);
    }
    // connectHost is the checked address (canonical) or a name the rules allow.
    if (msg.proto === "udp") await openFlow(open, decision.connectHost);
    else await openStream(open, decision.connectHost);
  } catch (err) {
    refuse(open, err, refusedBy);
  }
}

/** Connect to the TCP target and join it to the stream. */
async function openStream(open: Open, host: string): Promise<void> {
  const { ctx, session, msg } = open;
  const { conn, address } = await ctx.connector.connect(host, msg.port, {
    timeoutMs: ctx.connectTimeoutMs,
    label: open.target,
  });
  const info = infoOf(open, address);
  const stream = session.acceptStream(msg.stream, conn, address, {
    log: open.log,
    onEnd: (summary) =>
      closed(open, info, {
        bytesIn: summary.bytesSent,
        bytesOut: summary.bytesReceived,
        reason: summary.reason,
      }),
  });
  if (stream) {
    ctx.state.opened(session.id, info, () => ({
      bytesIn: stream.bytesSent,
      bytesOut: stream.bytesReceived,
    }));
  }
}

/** Open a UDP socket toward the target (an address, resolved here when a name). */
async function openFlow(open: Open, host: string): Promise<void> {
  const { ctx, session, msg } = open;
  const [address] = parseIp(host) ? [host] : await ctx.connector.resolve(host);
  const reached = formatHostPort(address, msg.port);
  const info = infoOf(open, reached);
  const flow = await DaemonFlow.connect(
    msg.stream,
    session,
    address,
    msg.port,
    {
      onEnd: (reason) =>
        closed(open, info, { bytesIn: flow.bytesIn, bytesOut: flow.bytesOut, reason }),
      drops: ctx.state.udpDrops,
      budget: ctx.udpBudget,
    },
  );
  if (!session.accept(msg.stream, flow, reached)) return flow.abort("session ended");
  ctx.flows.add(flow);
  ctx.state.opened(session.id, info, () => ({
    bytesIn: flow.bytesIn,
    bytesOut: flow.bytesOut,
    drops: flow.drops,
  }));
}

function infoOf(open: Open, address: string): ConnectionInfo {
  const { msg } = open;
  return {
    stream: msg.stream,
    pfo: msg.pfo,
    proto: msg.proto,
    client: msg.client,
    target: open.target,
    address,
    since: open.since.toISOString(),
  };
}

function closed(
  open: Open,
  info: ConnectionInfo,
  summary: { bytesIn: number; bytesOut: number; reason: string },
): void {
  const durationMs = Date.now() - open.since.getTime();
  open.ctx.state.closed(open.session.id, info, { ...summary, durationMs });
}

/** Tell the Console why the open failed, and the Daemon's user what was refused. */
function refuse(open: Open, err: unknown, refusedBy: "allow-list" | "permission"): void {
  const { code, reason } = err instanceof OpenError
    ? { code: err.code, reason: err.message }
    : classifyError(err, open.target);
  const what = code !== "not-allowed"
    ? "connection failed"
    : refusedBy === "allow-list"
    ? "connection refused by the allow-list"
    : "connection refused by the Daemon's --allow-net permission";
  const { session, msg } = open;
  const scope = { session: session.id, pfo: msg.pfo, stream: msg.stream };
  open.ctx.state.warn(code, what, scope, { client: msg.client, target: open.target, code, reason });
  if (session.ended === null) {
    session.send({ tag: Tag.OPEN_ERR, stream: msg.stream, code, reason });
  }
}
