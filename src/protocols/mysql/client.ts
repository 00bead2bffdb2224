// One MySQL/MariaDB client connection: greeting, optional TLS (SSLRequest), authentication as a
// Gatehouse identity (user = key name, password = key, database = connection name), access
// checks, the upstream login with held credentials, then the relay.
import type net from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { MysqlConnection } from '../../config/schema.ts';
import type { Guard } from '../../guard/guard.ts';
import { mysqlServerFromVersion } from '../../guard/classify-mysql.ts';
import { findIdentity, keyMatches, standing, type Identity } from '../../identity/keys.ts';
import type { Journal } from '../../journal/journal.ts';
import { Session } from '../../session/session.ts';
import type { SessionRegistry } from '../../session/registry.ts';
import type { Store } from '../../store/db.ts';
import type { ReviewService } from '../../approval/reviews.ts';
import { ProtocolError, encodePacket } from './codec.ts';
import {
  CACHING_SHA2_FAST_AUTH_SUCCESS,
  CACHING_SHA2_PASSWORD,
  CACHING_SHA2_PERFORM_FULL_AUTH,
  CLEAR_PASSWORD,
  NATIVE_PASSWORD,
  decodeCleartextPassword,
  generateScramble,
  verifyCachingSha2Fast,
  verifyNativePassword,
} from './auth.ts';
import {
  CHARSET_UTF8MB4_GENERAL_CI,
  CLIENT_CONNECT_ATTRS,
  CLIENT_CONNECT_WITH_DB,
  CLIENT_DEPRECATE_EOF,
  CLIENT_FOUND_ROWS,
  CLIENT_INTERACTIVE,
  CLIENT_LONG_FLAG,
  CLIENT_LOCAL_FILES,
  CLIENT_LONG_PASSWORD,
  CLIENT_MULTI_RESULTS,
  CLIENT_MULTI_STATEMENTS,
  CLIENT_PLUGIN_AUTH,
  CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
  CLIENT_PROTOCOL_41,
  CLIENT_PS_MULTI_RESULTS,
  CLIENT_SECURE_CONNECTION,
  CLIENT_SSL,
  CLIENT_TRANSACTIONS,
  SERVER_STATUS_AUTOCOMMIT,
  UNSUPPORTED_CAPABILITIES,
  decodeHandshakeResponse41,
  encodeAuthMoreData,
  encodeAuthSwitchRequest,
  encodeErr,
  encodeHandshakeV10,
  encodeOk,
  hasCap,
  isSslRequest,
} from './packets.ts';
import { PacketReader, startServerTls } from './io.ts';
import { MysqlRelay } from './relay.ts';
import { MysqlThreads } from './kill.ts';
import type { Masker } from '../../mask/masker.ts';
import { serveControl } from './control.ts';
import { verifyChangeUser } from './change-user.ts';
import { UpstreamError, connectUpstream } from './upstream.ts';

export interface MysqlGatewayContext {
  store: Store;
  journal: Journal;
  guard: Guard;
  registry: SessionRegistry;
  tlsContext: tls.SecureContext;
  allowPlaintext: boolean;
  connections: Map<string, MysqlConnection>;
  reviews?: ReviewService;
  limits: { maxMessageBytes: number; authTimeoutMs: number; sampleRows: number; maxValueBytes: number };
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** maskers by connection name, for connections with a `mask:` section */
  maskers?: Map<string, Masker>;
  /** live sessions by announced connection id, for KILL (created by the listener) */
  threads?: MysqlThreads;
}

/**
 * What the gateway announces. Never UNSUPPORTED_CAPABILITIES, SESSION_TRACK or IGNORE_SPACE.
 * LOCAL_FILES is passed on when the client offers it: the relay gives the target's file request
 * to the client only for a statement the policy allowed to load a client file (docs/mysql.md).
 */
export const GATEWAY_CAPABILITIES =
  (CLIENT_LONG_PASSWORD |
    CLIENT_FOUND_ROWS |
    CLIENT_LOCAL_FILES |
    CLIENT_LONG_FLAG |
    CLIENT_CONNECT_WITH_DB |
    CLIENT_PROTOCOL_41 |
    CLIENT_INTERACTIVE |
    CLIENT_SSL |
    CLIENT_TRANSACTIONS |
    CLIENT_SECURE_CONNECTION |
    CLIENT_MULTI_STATEMENTS |
    CLIENT_MULTI_RESULTS |
    CLIENT_PS_MULTI_RESULTS |
    CLIENT_PLUGIN_AUTH |
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA |
    CLIENT_CONNECT_ATTRS |
    CLIENT_DEPRECATE_EOF) &
  ~UNSUPPORTED_CAPABILITIES;

/** Negotiated capabilities the upstream must share, because the relay passes packets through unchanged. */
const PASS_CAPABILITIES = (CLIENT_FOUND_ROWS | CLIENT_LOCAL_FILES | CLIENT_LONG_FLAG | CLIENT_INTERACTIVE | CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS | CLIENT_DEPRECATE_EOF) >>> 0;

const SERVER_VERSION = '5.5.5-10.11.0-MariaDB-Gatehouse';

const ER_DBACCESS_DENIED_ERROR = 1044;
const ER_ACCESS_DENIED_ERROR = 1045;
const ER_BAD_DB_ERROR = 1049;
const ER_SECURE_TRANSPORT_REQUIRED = 3159;
const ER_NOT_SUPPORTED_AUTH_MODE = 1251;
const ER_CON_COUNT_ERROR = 1040;

class ClientFatal extends Error {
  constructor(public readonly code: number, public readonly sqlState: string, message: string) {
    super(message);
  }
}

const authTimeout = () => new ProtocolError('authentication timed out', 1158, '08S01');

export async function handleClient(raw: net.Socket, ctx: MysqlGatewayContext): Promise<void> {
  raw.setNoDelay(true);
  raw.setKeepAlive(true, 60_000);
  raw.on('error', () => {});
  const peer = `${raw.remoteAddress}:${raw.remotePort}`;
  let sock: Duplex = raw;
  let isTls = false;
  let seq = 0;
  const deadline = Date.now() + ctx.limits.authTimeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const hardStop = setTimeout(() => raw.destroy(), ctx.limits.authTimeoutMs + 1000);
  let reader: PacketReader | null = null;
  // Handshake packets are small: bound them tightly, whatever maxMessageBytes allows later.
  const HANDSHAKE_MAX = 128 * 1024;
  const send = (payload: Buffer) => {
    sock.write(encodePacket(seq, payload));
    seq = (seq + 1) & 0xff;
  };
  const fail = (code: number, sqlState: string, message: string) => {
    try {
      if (!sock.destroyed) sock.end(encodePacket(seq, encodeErr({ code, sqlState, message: message.slice(0, 4000) })));
    } catch {
      sock.destroy();
    }
    setTimeout(() => raw.destroy(), 500).unref();
  };

  try {
    const scramble = generateScramble();
    const threads = (ctx.threads ??= new MysqlThreads());
    const connectionId = threads.allocateId();
    raw.write(
      encodePacket(
        0,
        encodeHandshakeV10({
          serverVersion: SERVER_VERSION,
          connectionId,
          scramble,
          capabilities: GATEWAY_CAPABILITIES,
          charset: CHARSET_UTF8MB4_GENERAL_CI,
          status: SERVER_STATUS_AUTOCOMMIT,
          authPlugin: NATIVE_PASSWORD,
        }),
      ),
    );
    seq = 1;
    reader = new PacketReader(raw, HANDSHAKE_MAX);
    // The client's packets continue the greeting's sequence: 1 (SSLRequest or login), then 2
    // (the login after TLS). Anything else is refused, as the server does (1156).
    const inOrder = (p: { seq: number }, want: number) => {
      if (p.seq !== want) throw new ProtocolError(`packets out of order: got sequence id ${p.seq}, expected ${want}`, 1156, '08S01');
    };
    let pkt = await reader.next(remaining(), authTimeout);
    inOrder(pkt, 1);
    seq = 2;
    if (isSslRequest(pkt.payload)) {
      // The client starts TLS without waiting for an answer: what follows the SSLRequest is its
      // ClientHello and goes to the TLS layer (which takes the socket's buffered bytes first).
      // Nothing is read as a packet until the TLS handshake is done.
      for (const b of reader.detach()) raw.unshift(b);
      sock = await startServerTls(raw, ctx.tlsContext, remaining());
      isTls = true;
      reader = new PacketReader(sock, HANDSHAKE_MAX);
      pkt = await reader.next(remaining(), authTimeout);
      inOrder(pkt, 2);
      seq = 3;
    }
    if (!isTls && !ctx.allowPlaintext) {
      throw new ClientFatal(ER_SECURE_TRANSPORT_REQUIRED, 'HY000', 'this gateway accepts only TLS connections; connect with --ssl (ssl-mode=REQUIRED)');
    }
    const hr = decodeHandshakeResponse41(pkt.payload);
    const clientCaps = hr.capabilities >>> 0;
    const negotiated = (clientCaps & GATEWAY_CAPABILITIES) >>> 0;
    const user = hr.user;
    if (!user) throw new ClientFatal(ER_ACCESS_DENIED_ERROR, '28000', 'no user name given: the user is your Gatehouse key name');
    const database = hr.database ?? '';

    const identity = await authenticate(ctx, reader, hr.authPlugin ?? '', hr.authResponse, user, isTls, scramble, remaining, (p) => send(p), () => seq, (s) => (seq = s), peer);

    const st = standing(identity);
    if (!st.ok) throw new ClientFatal(ER_ACCESS_DENIED_ERROR, '28000', `Access denied for user '${user}': ${st.message}${st.reason === 'expired' ? '; ask an operator for a new key' : ''}`);
    /**
     * Reaches the target of Gatehouse connection `database` for this identity and opens the
     * recorded session; the relay starts with start(). At login, and when a control session
     * (no database) selects one with USE, as mariadb-dump does.
     */
    const establish = async (database: string) => {
      const conn = ctx.connections.get(database);
      if (!conn) throw new ClientFatal(ER_BAD_DB_ERROR, '42000', `Unknown database '${database}': the database name selects a Gatehouse MySQL connection; yours: ${identity.connections.join(', ') || 'none'}`);
      const denial = ctx.guard.authorizeConnection(identity, conn.name);
      if (denial) throw new ClientFatal(ER_DBACCESS_DENIED_ERROR, '42000', `Access denied for user '${user}' to database '${database}': ${denial.reason}; hint: ${denial.hint}`);

      const up = await connectUpstream(conn, { passCapabilities: negotiated & PASS_CAPABILITIES, charset: hr.charset }).catch((e) => {
        if (e instanceof UpstreamError) throw new ClientFatal(2003, 'HY000', `connection "${conn.name}": ${e.message}`);
        throw e;
      });

      const masker = ctx.maskers?.get(conn.name);
      /** Opens the recorded session of `who` on this connection (at login, and after COM_CHANGE_USER). */
      const openSession = async (who: Identity, extra: Record<string, unknown> = {}) => {
        const unmasked = !!masker && masker.isUnmasked(who.groups);
        const maskOn = !!masker && !unmasked;
        const s = await Session.open(ctx, {
          identity: who,
          connection: conn.name,
          protocol: 'mysql',
          clientAddr: peer,
          meta: {
            tls: isTls,
            application: hr.attrs?.program_name?.slice(0, 128) ?? null,
            targetVersion: up.handshake.serverVersion.slice(0, 128),
            targetTls: up.tls,
            masking: maskOn ? 'on' : unmasked ? 'off: identity is in an unmasked group' : 'off',
            ...extra,
          },
        });
        // What the journal keeps of statements is masked too, for exempt identities as well: a literal
        // secret in a WHERE clause must not reach the recording. The target gets it as sent.
        if (masker) s.redact = (text) => masker.maskText(text);
        return { session: s, mask: masker ? { masker, client: maskOn } : undefined };
      };
      let session: Session;
      let mask: { masker: Masker; client: boolean } | undefined;
      try {
        ({ session, mask } = await openSession(identity));
      } catch (e) {
        up.socket.destroy();
        throw new ClientFatal(1105, 'HY000', `session refused: the gateway could not record it (${(e as Error).message})`);
      }

      const relay = new MysqlRelay(session, sock, up.socket, {
        maxMessageBytes: ctx.limits.maxMessageBytes,
        sampleRows: ctx.limits.sampleRows,
        maxValueBytes: ctx.limits.maxValueBytes,
        deprecateEof: hasCap(negotiated, CLIENT_DEPRECATE_EOF),
        capabilities: up.capabilities,
        server: mysqlServerFromVersion(up.handshake.serverVersion),
        status: up.status,
        clientCapabilities: negotiated,
        mask,
        threads,
        changeUser: async (req) => {
          const v = await verifyChangeUser(ctx, scramble, req, conn.name);
          if (!v.ok) return v;
          const next = await openSession(v.identity, { changedFrom: session.id });
          const previous = session;
          ctx.registry.delete(previous);
          void previous.close(`the client changed user to ${v.identity.name}`);
          session = next.session;
          ctx.registry.add(session);
          session.onKill = (reason) => relay.kill(`${reason}; session closed by the gateway`);
          entry.identityId = v.identity.id;
          entry.sessionId = session.id;
          return { ok: true, session, mask: next.mask };
        },
      });
      ctx.registry.add(session);
      session.onKill = (reason) => relay.kill(`${reason}; session closed by the gateway`);
      const entry = {
        gatewayId: connectionId,
        targetThreadId: up.handshake.connectionId,
        identityId: identity.id,
        connection: conn,
        sessionId: session.id,
        charset: hr.charset,
        end: (reason: string) => relay.kill(reason),
      };
      threads.register(entry);
      relay.onEnd = (reason) => {
        threads.unregister(connectionId);
        ctx.registry.delete(session);
        void session.close(reason);
      };
      return {
        status: up.status,
        start: (early: Buffer[]) => relay.start(up.leftover, early),
        abort: (reason: string) => {
          up.socket.destroy();
          threads.unregister(connectionId);
          ctx.registry.delete(session);
          void session.close(reason);
        },
      };
    };
    if (!database) {
      // No connection chosen: a control session. It serves KILL (the CLI's Ctrl-C path) and
      // becomes a full session when the client selects a connection (USE / COM_INIT_DB).
      if (!reader.empty) throw new ProtocolError('unexpected data during authentication', 1835, '08S01');
      const early = reader.detach();
      clearTimeout(hardStop);
      send(encodeOk({ status: SERVER_STATUS_AUTOCOMMIT }));
      serveControl(sock, early, {
        deps: ctx,
        threads,
        identity,
        peer,
        status: SERVER_STATUS_AUTOCOMMIT,
        log: ctx.log,
        usable: [...ctx.connections.keys()].filter((n) => !ctx.guard.authorizeConnection(identity, n)),
        useConnection: async (name) => {
          try {
            return { ok: true, ...(await establish(name)) };
          } catch (e) {
            if (e instanceof ClientFatal) return { ok: false, code: e.code, sqlState: e.sqlState, message: e.message };
            throw e;
          }
        },
      });
      return;
    }
    const established = await establish(database);
    if (!reader.empty) {
      established.abort('protocol error');
      throw new ProtocolError('unexpected data during authentication', 1835, '08S01');
    }
    const early = reader.detach();
    clearTimeout(hardStop);
    send(encodeOk({ status: established.status }));
    established.start(early);
  } catch (e) {
    clearTimeout(hardStop);
    try {
      reader?.detach();
    } catch {
      // a partial packet: closing anyway
    }
    if (e instanceof ClientFatal) fail(e.code, e.sqlState, e.message);
    else if (e instanceof ProtocolError) fail(e.code, e.sqlState, e.message);
    else {
      ctx.log('mysql connection failed', { peer, error: (e as Error).message });
      fail(1105, 'HY000', 'internal gateway error; see the gateway log');
    }
  }
}

/** Refuses a client beyond maxClientConnections, as the server does (1040). */
export function refuseTooMany(sock: net.Socket): void {
  sock.on('error', () => {});
  sock.end(encodePacket(0, encodeErr({ code: ER_CON_COUNT_ERROR, sqlState: '08004', message: 'Too many connections' })));
  setTimeout(() => sock.destroy(), 500).unref();
}

/** Never equal to a real hash; keeps the work (and timing) of an unknown user like a known one. */
const DUMMY_NATIVE = Buffer.alloc(20, 0x5a);
const DUMMY_SHA2 = Buffer.alloc(32, 0x5a);

async function authenticate(
  ctx: MysqlGatewayContext,
  reader: PacketReader,
  announced: string,
  firstResponse: Buffer,
  user: string,
  isTls: boolean,
  scramble: Buffer,
  remaining: () => number,
  send: (p: Buffer) => void,
  getSeq: () => number,
  setSeq: (s: number) => void,
  peer: string,
): Promise<Identity> {
  const identity = await findIdentity(ctx.store.db, user);
  const host = peer.replace(/:\d+$/, '').replace(/^::ffff:/, '');
  const denied = (why?: string) =>
    new ClientFatal(ER_ACCESS_DENIED_ERROR, '28000', `Access denied for user '${user}'@'${host}' (using password: YES)${why ? `: ${why}` : ''}; the password is the Gatehouse key printed by \`gatehouse keys create\``);
  const oldKey = () =>
    new ClientFatal(ER_ACCESS_DENIED_ERROR, '28000', `Access denied for user '${user}': key "${user}" was created before MySQL support and has no MySQL password hashes; create a new key with \`gatehouse keys create\``);
  const next = async (): Promise<Buffer> => {
    const pkt = await reader.next(remaining(), authTimeout);
    if (pkt.seq !== getSeq()) throw new ProtocolError(`packets out of order: got sequence id ${pkt.seq}, expected ${getSeq()}`, 1156, '08S01');
    setSeq((pkt.seq + 1) & 0xff);
    return pkt.payload;
  };
  const cleartext = async (): Promise<Identity> => {
    if (!isTls) throw new ClientFatal(ER_NOT_SUPPORTED_AUTH_MODE, '08004', 'cleartext authentication requires TLS; connect with --ssl');
    const pw = decodeCleartextPassword(await next());
    if (pw.length > 1024) throw denied();
    const ok = !!identity && keyMatches(identity, pw.toString('utf8'));
    if (!ok || !identity) throw denied();
    return identity;
  };

  if (announced === CACHING_SHA2_PASSWORD) {
    if (identity && !identity.mysqlSha2) {
      // An older key: only the cleartext key can be checked, over TLS.
      if (!isTls) throw oldKey();
      send(encodeAuthMoreData(Buffer.from([CACHING_SHA2_PERFORM_FULL_AUTH])));
      return cleartext();
    }
    const ok = verifyCachingSha2Fast(scramble, firstResponse, identity?.mysqlSha2 ?? DUMMY_SHA2);
    if (!ok || !identity) throw denied();
    send(encodeAuthMoreData(Buffer.from([CACHING_SHA2_FAST_AUTH_SUCCESS])));
    return identity;
  }

  let response = firstResponse;
  if (announced === CLEAR_PASSWORD) {
    if (!isTls) throw new ClientFatal(ER_NOT_SUPPORTED_AUTH_MODE, '08004', 'mysql_clear_password requires TLS; connect with --ssl');
    send(encodeAuthSwitchRequest(CLEAR_PASSWORD, Buffer.alloc(0), false));
    return cleartext();
  }
  if (announced !== NATIVE_PASSWORD) {
    // A plugin the gateway does not verify (or none): ask for mysql_native_password with the same scramble.
    send(encodeAuthSwitchRequest(NATIVE_PASSWORD, scramble));
    response = await next();
  }
  if (identity && !identity.mysqlNative) {
    if (!isTls) throw oldKey();
    send(encodeAuthSwitchRequest(CLEAR_PASSWORD, Buffer.alloc(0), false));
    return cleartext();
  }
  const ok = verifyNativePassword(scramble, response, identity?.mysqlNative ?? DUMMY_NATIVE);
  if (!ok || !identity) throw denied();
  return identity;
}
