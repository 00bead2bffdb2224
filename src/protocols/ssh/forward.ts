// Local port forwarding (`ssh -L`): a `direct-tcpip` channel from the client asks the gateway to
// connect to HOST:PORT. The gateway never connects itself: it asks the target (forwardOut on its
// own SSH connection), so the destination is reached from the target's side, as it would be
// without the gateway.
//
// Each forwarded connection is a command (`kind: tcpip`, text `direct-tcpip HOST:PORT`), decided
// by the guard and recorded before any byte flows, and a result at close with the bytes moved
// each way. Forwarding is denied by default: the classification carries the flag `direct_tcpip`,
// which only an allow rule naming that flag lets through (policy.ts), whatever the default.
// A refusal is a channel-open failure "administratively prohibited" with the reason as its
// description, which the OpenSSH client prints: "channel 3: open failed: administratively
// prohibited: <reason>".
import type ssh2 from 'ssh2';
import type { Classification } from '../../guard/classification.ts';
import type { Command } from '../../guard/types.ts';
import type { Execution, HoldOutcome, Session } from '../../session/session.ts';
import { flushed } from './streams.ts';

/** RFC 4254 §5.1 reason codes. */
const ADMINISTRATIVELY_PROHIBITED = 1;
const CONNECT_FAILED = 2;
/** The longest description sent with a refusal; OpenSSH prints it on one line. */
const MAX_DESCRIPTION = 512;
/** A host name as a forward may name it: a DNS name, an IPv4 address, or an IPv6 literal. */
const HOST_RE = /^[A-Za-z0-9._:%-]{1,255}$/;

export type ForwardTarget = { ok: true; upstream: { client: ssh2.Client }; session: Session } | { ok: false; message: string };

export interface ForwardContext {
  conn: ssh2.Connection;
  /** the session and upstream, once the target is ready (set at 'ready', before any channel opens) */
  target: Promise<ForwardTarget> | null;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * What the guard sees of a forward: class `admin` (a tunnel from the target's side, whose traffic
 * is not inspected), type `direct_tcpip`, the opt-in flag `direct_tcpip`, and the destination
 * `HOST:PORT` as what is read and written, so that `tables: { write: ["127.0.0.1:5432"] }`
 * (or `read`) globs name destinations.
 */
export function forwardClassification(host: string, port: number): Classification {
  const dest = `${host}:${port}`;
  return {
    class: 'admin',
    classes: ['admin'],
    types: ['direct_tcpip'],
    reads: [dest],
    writes: [dest],
    flags: ['direct_tcpip', 'network'],
    functions: [],
    reason: `opens a TCP connection from the target to ${dest}; what passes through it is not inspected`,
  };
}

/**
 * Rejects a channel open with a reason code and a description. ssh2's own reject() always sends
 * "connect failed" with no text, so its protocol writer is asked for this one packet instead; the
 * call is synchronous, and with another ssh2 this falls back to the plain rejection.
 */
function rejectWith(conn: ssh2.Connection, reject: () => void, code: number, description: string): void {
  const proto = (conn as unknown as { _protocol?: { channelOpenFail?: (remote: number, reason: number, desc: string) => void } })._protocol;
  const original = proto?.channelOpenFail;
  if (!proto || typeof original !== 'function') return reject();
  const text = description.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, MAX_DESCRIPTION);
  proto.channelOpenFail = function (this: unknown, remote: number) {
    return original.call(this, remote, code, text);
  };
  try {
    reject();
  } finally {
    proto.channelOpenFail = original;
  }
}

/** Handles one `direct-tcpip` channel open. Never throws. */
export async function forwardTcpip(ctx: ForwardContext, accept: () => ssh2.ServerChannel, reject: () => void, info: ssh2.TcpipRequestInfo): Promise<void> {
  const host = String(info.destIP ?? '');
  const port = Number(info.destPort);
  const originator = `${info.srcIP}:${info.srcPort}`;
  let exec: Execution | null = null;
  try {
    const t = ctx.target ? await ctx.target : null;
    if (!t || !t.ok) return rejectWith(ctx.conn, reject, ADMINISTRATIVELY_PROHIBITED, `gatehouse: ${t ? t.message : 'not logged in'}`);
    const { session } = t;
    if (!HOST_RE.test(host) || !Number.isInteger(port) || port < 1 || port > 65535) {
      return rejectWith(ctx.conn, reject, ADMINISTRATIVELY_PROHIBITED, 'gatehouse: invalid forwarding destination');
    }
    const command: Command = {
      // Not a shell or SQL command: the kind the journal shows for forwarded connections.
      kind: 'tcpip',
      text: `direct-tcpip ${host}:${port}`,
      meta: { channel: 'direct-tcpip', destination: { host, port }, originator },
    };
    try {
      exec = await session.run(command, forwardClassification(host, port));
    } catch (e) {
      ctx.log('ssh forward not recorded; refused', { session: session.id, error: (e as Error).message });
      return rejectWith(ctx.conn, reject, ADMINISTRATIVELY_PROHIBITED, 'gatehouse: the forward was refused because the gateway could not record it; try again later');
    }
    if (exec.verdict.action !== 'allow') {
      const outcome: HoldOutcome = await session.hold(exec, { onHeld: (notice) => ctx.log(`ssh forward ${notice}`, { session: session.id }) }).catch(
        (e: Error) => ({ action: 'deny' as const, denial: { code: 'review_failed', rule: exec!.verdict.rule, reason: `the review could not be created (${e.message})`, hint: 'try again later' } }),
      );
      if (outcome.action === 'deny') {
        const d = outcome.denial;
        exec.finish({ status: 'denied', error: { code: d.code, message: d.reason } });
        return rejectWith(ctx.conn, reject, ADMINISTRATIVELY_PROHIBITED, `gatehouse: ${d.reason} (rule: ${d.rule}${d.reviewId ? `, review: ${d.reviewId}` : ''}; hint: ${d.hint})`);
      }
    }

    let up: ssh2.ClientChannel;
    try {
      up = await new Promise<ssh2.ClientChannel>((resolve, rej) => {
        t.upstream.client.forwardOut(info.srcIP, info.srcPort, host, port, (err, ch) => (err ? rej(err) : resolve(ch)));
      });
    } catch (e) {
      const err = e as Error & { reason?: number };
      const why = err.message.replace(/^\(SSH\) Channel open failure: ?/, '') || 'no reason given';
      exec.finish({ status: 'error', error: { message: `the target refused the forward: ${why}` } });
      return rejectWith(ctx.conn, reject, typeof err.reason === 'number' && err.reason > 0 ? err.reason : CONNECT_FAILED, `gatehouse: the target could not open ${host}:${port}: ${why}`);
    }
    pipeBoth(exec, accept(), up, originator);
  } catch (e) {
    ctx.log('ssh forward failed', { error: (e as Error).message });
    exec?.finish({ status: 'error', error: { message: 'internal gateway error' } });
    try {
      rejectWith(ctx.conn, reject, CONNECT_FAILED, 'gatehouse: internal gateway error; see the gateway log');
    } catch {
      // the connection is gone
    }
  }
}

/**
 * Bytes flow both ways with backpressure (pipe pauses a side while the other's window is full);
 * EOF is passed on, so half-closed connections work; when either channel closes, so does the
 * other, and the result is recorded.
 */
function pipeBoth(exec: Execution, client: ssh2.ServerChannel, up: ssh2.ClientChannel, originator: string): void {
  let bytesIn = 0; // client → destination
  let bytesOut = 0; // destination → client
  let closed = false;
  client.on('data', (d: Buffer) => (bytesIn += d.length));
  up.on('data', (d: Buffer) => (bytesOut += d.length));
  client.pipe(up);
  up.pipe(client);
  // Nothing the target sends on stderr belongs in a TCP stream; drain it so the window moves.
  up.stderr?.resume();
  client.on('error', () => {});
  up.on('error', () => {});
  // Recorded at the first close: nothing more comes from that side. The other side is closed
  // only once what is still buffered for it has gone out (closing at once dropped the tail of
  // a large echo: 7.4 of 8 MiB arrived).
  const onClose = (which: 'client' | 'target') => {
    if (closed) return;
    closed = true;
    const other = which === 'client' ? up : client;
    void flushed(other).then(() => other.close());
    exec.finish({ status: 'ok', bytesIn, bytesOut, meta: { originator, closedBy: which } });
  };
  client.once('close', () => onClose('client'));
  up.once('close', () => onClose('target'));
}
