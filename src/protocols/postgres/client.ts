// One client connection: TLS, authentication as a Gatehouse identity, access checks, the
// upstream connection with held credentials, then the relay.
import { randomInt, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { PostgresConnection } from '../../config/schema.ts';
import type { Guard } from '../../guard/guard.ts';
import { findIdentity, keyMatches, standing, type Identity } from '../../identity/keys.ts';
import type { Journal } from '../../journal/journal.ts';
import { Session } from '../../session/session.ts';
import type { SessionRegistry } from '../../session/registry.ts';
import type { Store } from '../../store/db.ts';
import {
  BodyReader,
  ProtocolError,
  authCleartext,
  authOk,
  authSasl,
  authSaslContinue,
  authSaslFinal,
  backendKeyData,
  decodeStartupPacket,
  errorResponse,
  parameterStatus,
  readyForQuery,
} from './codec.ts';
import { FrameQueue } from './frame-queue.ts';
import { Relay } from './relay.ts';
import { previewFor } from './preview.ts';
import type { ReviewService } from '../../approval/reviews.ts';
import type { Masker } from '../../mask/masker.ts';
import { PgRowMasking } from './pg-masking.ts';
import { ScramError, ScramServerSession } from './scram.ts';
import { readStartupPacket } from './startup.ts';
import { UpstreamError, connectUpstream, sendCancel } from './upstream.ts';

export interface PgGatewayContext {
  store: Store;
  journal: Journal;
  guard: Guard;
  registry: SessionRegistry;
  tlsContext: tls.SecureContext;
  allowPlaintext: boolean;
  clientAuth: 'scram-sha-256' | 'password';
  connections: Map<string, PostgresConnection>;
  cancels: CancelMap;
  reviews?: ReviewService;
  /** per connection with a `mask:` section */
  maskers: Map<string, Masker>;
  limits: { maxMessageBytes: number; authTimeoutMs: number; sampleRows: number; maxValueBytes: number };
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

interface CancelTarget {
  connection: PostgresConnection;
  pid: number;
  secret: number;
}

/** Gateway-issued BackendKeyData → the target's, so a CancelRequest reaches the right backend. */
export class CancelMap {
  private readonly m = new Map<number, { secret: number; target: CancelTarget }>();
  issue(target: CancelTarget): { pid: number; secret: number } {
    let pid: number;
    do pid = randomInt(1, 2 ** 31 - 1);
    while (this.m.has(pid));
    const secret = randomInt(-(2 ** 31), 2 ** 31 - 1);
    this.m.set(pid, { secret, target });
    return { pid, secret };
  }
  release(pid: number): void {
    this.m.delete(pid);
  }
  /** Constant-time on the secret, so a guessed pid reveals nothing. */
  lookup(pid: number, secret: number): CancelTarget | null {
    const e = this.m.get(pid);
    const a = Buffer.alloc(4);
    const b = Buffer.alloc(4);
    a.writeInt32BE(secret);
    b.writeInt32BE(e?.secret ?? 0);
    return e && timingSafeEqual(a, b) ? e.target : null;
  }
}

class ClientFatal extends Error {
  constructor(public readonly code: string, message: string, public readonly hint?: string) {
    super(message);
  }
}

/** Params a client may pass on to the target. Others (e.g. replication) are refused or dropped. */
const PASS_PARAMS = new Set(['application_name', 'client_encoding', 'DateStyle', 'datestyle', 'TimeZone', 'timezone', 'extra_float_digits', 'search_path', 'options', 'IntervalStyle', 'intervalstyle', 'lc_messages', 'standard_conforming_strings']);

export async function handleClient(raw: net.Socket, ctx: PgGatewayContext): Promise<void> {
  raw.setNoDelay(true);
  raw.setKeepAlive(true, 60_000);
  const peer = `${raw.remoteAddress}:${raw.remotePort}`;
  let sock: Duplex = raw;
  let isTls = false;
  const deadline = Date.now() + ctx.limits.authTimeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const hardStop = setTimeout(() => raw.destroy(), ctx.limits.authTimeoutMs + 1000);
  raw.on('error', () => {});

  const fail = (code: string, message: string, hint?: string) => {
    if (!sock.destroyed) sock.end(errorResponse({ severity: 'FATAL', code, message, hint }));
    setTimeout(() => raw.destroy(), 500).unref();
  };

  try {
    let rest: Buffer;
    let params: Map<string, string>;
    // Bounded: SSLRequest and GSSENCRequest may each come once before the startup message.
    for (let attempt = 0; ; attempt++) {
      if (attempt > 2) throw new ProtocolError('too many negotiation requests');
      const r = await readStartupPacket(sock, remaining());
      const pkt = decodeStartupPacket(r.packet);
      if (pkt.kind === 'cancel') {
        clearTimeout(hardStop);
        const target = ctx.cancels.lookup(pkt.pid, pkt.secret);
        if (target) await sendCancel(target.connection, target.pid, target.secret).catch(() => {});
        // Close as PostgreSQL does: after the cancel was passed on, and cleanly (close_notify
        // under TLS). libpq waits for this EOF; a reset instead reads as a failed cancel.
        sock.resume();
        sock.end();
        setTimeout(() => raw.destroy(), 1000).unref();
        return;
      }
      if (pkt.kind === 'gssenc') {
        if (r.rest.length) throw new ProtocolError('unexpected data after GSSENCRequest');
        sock.write('N');
        continue;
      }
      if (pkt.kind === 'ssl') {
        // Bytes sent before the TLS handshake would be trusted as if encrypted (CVE-2021-23214).
        if (r.rest.length) throw new ProtocolError('unexpected data after SSLRequest');
        if (isTls) throw new ProtocolError('SSLRequest inside TLS');
        sock.write('S');
        sock = await startTls(raw, ctx.tlsContext, remaining());
        isTls = true;
        continue;
      }
      rest = r.rest;
      params = pkt.params;
      break;
    }

    if (!isTls && !ctx.allowPlaintext) {
      throw new ClientFatal('28000', 'this gateway accepts only TLS connections', 'connect with sslmode=require');
    }
    if (params.has('replication')) throw new ClientFatal('0A000', 'replication connections are not supported through the gateway');
    const user = params.get('user');
    if (!user) throw new ClientFatal('28000', 'no user name given', 'the user is your Gatehouse key name');
    const database = params.get('database') ?? user;

    if (rest.length) sock.unshift(rest);
    const q = new FrameQueue(sock, 8192);
    const identity = await authenticate(sock, q, ctx, user, isTls, remaining);
    const st = standing(identity);
    if (!st.ok) throw new ClientFatal('28000', st.message, st.reason === 'expired' ? 'ask an operator for a new key' : undefined);

    const conn = ctx.connections.get(database);
    if (!conn) throw new ClientFatal('3D000', `connection "${database}" does not exist`, `the database name selects a Gatehouse connection; yours: ${identity.connections.join(', ') || 'none'}`);
    const denial = ctx.guard.authorizeConnection(identity, conn.name);
    if (denial) throw new ClientFatal('28000', denial.reason, denial.hint);

    const forward = new Map<string, string>();
    for (const [k, v] of params) if (PASS_PARAMS.has(k) && v.length <= 1024) forward.set(k, v);
    const readOnly = ctx.guard.readOnlyFor(identity, conn.name);
    if (readOnly) {
      // The database enforces it too, so a write the parser cannot see (inside a function) fails.
      // Last in `options`, so it wins over anything the client put there.
      forward.set('options', `${forward.get('options') ?? ''} -c default_transaction_read_only=on`.trim());
    }
    const masker = ctx.maskers.get(conn.name);
    const unmasked = !!masker && masker.isUnmasked(identity.groups);
    const maskOn = !!masker && !unmasked;
    // Table-qualified column rules need table names, which the wire only gives as oids.
    const needCatalog = !!masker && !!conn.mask?.columns.some((c) => c.match !== undefined);
    const up = await connectUpstream(conn, forward, { catalog: needCatalog }).catch((e) => {
      if (e instanceof UpstreamError) throw new ClientFatal(e.sqlstate.startsWith('28') ? '08001' : e.sqlstate, `connection "${conn.name}": ${e.message}`);
      throw e;
    });

    let session: Session;
    try {
      session = await Session.open(ctx, { identity, connection: conn.name, protocol: 'postgres', clientAddr: peer, meta: { tls: isTls, application: params.get('application_name') ?? null, readOnly, masking: maskOn ? 'on' : unmasked ? 'off: identity is in an unmasked group' : 'off' } });
    } catch (e) {
      up.socket.destroy();
      throw new ClientFatal('58030', `session refused: the gateway could not record it (${(e as Error).message})`);
    }
    if (q.pending) {
      up.socket.destroy();
      throw new ProtocolError('unexpected data during authentication');
    }
    const early = q.detach();
    clearTimeout(hardStop);

    const key = ctx.cancels.issue({ connection: conn, pid: up.pid, secret: up.secret });
    sock.cork();
    for (const [k, v] of up.params) sock.write(parameterStatus(k, v));
    sock.write(backendKeyData(key.pid, key.secret));
    sock.write(readyForQuery('I'));
    sock.uncork();
    // ReadyForQuery of the target's startup was consumed by the upstream client; relay the rest.
    const recordMasking = masker ? new PgRowMasking(masker, up.catalog) : undefined;
    const masking = maskOn ? recordMasking : undefined;
    // What the journal keeps of statements is masked too, for exempt identities as well: a
    // literal secret in a WHERE clause must not reach the recording. The target gets it as sent.
    if (recordMasking) session.redact = (text) => recordMasking.text(text, {});
    const relay = new Relay(session, sock, up.socket, { maxMessageBytes: ctx.limits.maxMessageBytes, sampleRows: ctx.limits.sampleRows, maxValueBytes: ctx.limits.maxValueBytes, maxParams: 100 }, previewFor(conn), masking, unmasked ? recordMasking : undefined);
    ctx.registry.add(session);
    session.onKill = (reason) => relay.kill('57P01', `${reason}; session closed by the gateway`);
    relay.onEnd = (reason) => {
      ctx.registry.delete(session);
      ctx.cancels.release(key.pid);
      void session.close(reason);
    };
    relay.start(up.leftover);
    for (const b of early) sock.emit('data', b);
  } catch (e) {
    clearTimeout(hardStop);
    if (e instanceof ClientFatal) fail(e.code, e.message, e.hint);
    else if (e instanceof ProtocolError) fail(e.sqlstate, e.message);
    else if (e instanceof ScramError) fail('08P01', e.message);
    else {
      ctx.log('postgres connection failed', { peer, error: (e as Error).message });
      fail('XX000', 'internal gateway error; see the gateway log');
    }
  }
}

function startTls(raw: net.Socket, context: tls.SecureContext, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: context });
    // Destroyed on timeout: after 'S' nothing may be sent in plaintext, and the socket must go.
    const t = setTimeout(() => {
      s.destroy();
      reject(new ProtocolError('TLS handshake timed out'));
    }, timeoutMs);
    s.once('secure', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(new ProtocolError(`TLS handshake failed: ${e.message}`));
    });
    s.on('error', () => {});
  });
}

const authTimeout = () => new ProtocolError('authentication timed out');

async function authenticate(
  sock: Duplex,
  q: FrameQueue,
  ctx: PgGatewayContext,
  user: string,
  isTls: boolean,
  remaining: () => number,
): Promise<Identity> {
  const identity = await findIdentity(ctx.store.db, user);
  const wrong = () => new ClientFatal('28P01', `password authentication failed for user "${user}"`, 'the password is the Gatehouse key printed by `gatehouse keys create`');
  if (ctx.clientAuth === 'password') {
    if (!isTls) throw new ClientFatal('28000', 'cleartext password authentication requires TLS', 'connect with sslmode=require');
    sock.write(authCleartext());
    const { type, frame } = await q.next(remaining(), authTimeout);
    if (type !== 0x70) throw new ProtocolError('expected a password message');
    const pw = new BodyReader(frame).cstring();
    if (!identity || !keyMatches(identity, pw)) throw wrong();
    sock.write(authOk());
    return identity;
  }
  sock.write(authSasl(['SCRAM-SHA-256']));
  const scram = new ScramServerSession(identity?.scramVerifier ?? null, { mockSeed: user });
  let { type, frame } = await q.next(remaining(), authTimeout);
  if (type !== 0x70) throw new ProtocolError('expected a SASLInitialResponse message');
  const r = new BodyReader(frame);
  const mech = r.cstring();
  if (mech !== 'SCRAM-SHA-256') throw new ClientFatal('28000', `SASL mechanism "${mech.slice(0, 32)}" is not supported; use SCRAM-SHA-256`);
  const len = r.int32();
  if (len < 0 || len > r.left) throw new ProtocolError('invalid SASLInitialResponse length');
  const first = r.bytes(len).toString('utf8');
  sock.write(authSaslContinue(scram.clientFirst(first)));
  ({ type, frame } = await q.next(remaining(), authTimeout));
  if (type !== 0x70) throw new ProtocolError('expected a SASLResponse message');
  const res = scram.clientFinal(frame.subarray(5).toString('utf8'));
  if (!res.ok || !identity) throw wrong();
  sock.write(authSaslFinal(res.serverFinal));
  sock.write(authOk());
  return identity;
}
