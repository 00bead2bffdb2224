// Connects to the target PostgreSQL with the credentials the gateway holds. The caller
// never sees them: failures are reported without the password or the server's own words
// about it.
import { connectTcp, startClientTls } from '../upstream-socket.ts';
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { createRequire } from 'node:module';
import type { PostgresConnection } from '../../config/schema.ts';
import { FrameQueue } from './frame-queue.ts';
import {
  BodyReader,
  ProtocolError,
  decodeBackendKeyData,
  decodeDataRow,
  decodeFields,
  decodeParameterStatus,
  encodeCancelRequest,
  encodeSslRequest,
  encodeStartup,
  frame,
} from './codec.ts';

const require = createRequire(import.meta.url);
const sasl = require('pg/lib/crypto/sasl.js') as {
  startSession(mechanisms: string[], stream?: unknown): { mechanism: string; response: string };
  continueSession(session: unknown, password: string, serverData: string, stream?: unknown): Promise<void>;
  finalizeSession(session: unknown, serverData: string): void;
};

export class UpstreamError extends Error {
  constructor(message: string, public readonly sqlstate = '08001') {
    super(message);
    this.name = 'UpstreamError';
  }
}

/** table oid → its schema, name and column names by attnum, for `schema.table.column` rules */
export type Catalog = Map<number, { schema: string; table: string; columns: Map<number, string> }>;

/** Bounded: a schema with more columns than this is masked by column-name rules and detectors only. */
const CATALOG_SQL = `select a.attrelid::int8, n.nspname, c.relname, a.attnum::int4, a.attname
  from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
  join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where a.attnum > 0 and not a.attisdropped and c.relkind in ('r','v','m','p','f')
   and n.nspname not in ('pg_catalog','information_schema') and n.nspname not like 'pg_toast%'
 limit 200000`;

export interface Upstream {
  socket: net.Socket;
  /** loaded when asked for: what the gateway needs to apply table-qualified column rules */
  catalog?: Catalog;
  /** ParameterStatus values the server sent during startup, in order */
  params: [string, string][];
  pid: number;
  secret: number;
  /** bytes received after the startup's ReadyForQuery */
  leftover: Buffer[];
}

const CONNECT_TIMEOUT_MS = 10_000;

const rawConnect = (host: string, port: number) => connectTcp(host, port, CONNECT_TIMEOUT_MS, (m) => new UpstreamError(m));

function readByte(s: net.Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    const onData = (b: Buffer) => {
      cleanup();
      if (b.length !== 1) reject(new UpstreamError('unexpected data after SSL response'));
      else resolve(b[0]!);
    };
    const onErr = () => {
      cleanup();
      reject(new UpstreamError('connection closed during TLS negotiation'));
    };
    const cleanup = () => {
      s.off('data', onData);
      s.off('error', onErr);
      s.off('close', onErr);
    };
    s.on('data', onData);
    s.once('error', onErr);
    s.once('close', onErr);
  });
}

/** Opens a socket to the target with TLS as configured (libpq's sslmode semantics). */
export async function openTransport(c: PostgresConnection): Promise<net.Socket> {
  const raw = await rawConnect(c.host, c.port);
  if (c.tls === 'disable') return raw;
  raw.write(encodeSslRequest());
  const answer = await readByte(raw).catch((e) => {
    raw.destroy();
    throw e;
  });
  raw.pause();
  if (answer === 0x4e /* N */) {
    if (c.tls === 'prefer') return raw;
    raw.destroy();
    throw new UpstreamError(`target ${c.host}:${c.port} does not support TLS, but connection "${c.name}" requires it (tls: ${c.tls})`);
  }
  if (answer !== 0x53 /* S */) {
    raw.destroy();
    throw new UpstreamError(`target ${c.host}:${c.port} answered the TLS request with an unexpected byte`);
  }
  return startClientTls(raw, c, (m) => new UpstreamError(m));
}

/**
 * Connects and authenticates. `clientParams` are the client's startup parameters that the
 * gateway passes on (application_name, client_encoding, ...).
 */
export async function connectUpstream(c: PostgresConnection, clientParams: Map<string, string>, opts: { catalog?: boolean } = {}): Promise<Upstream> {
  const socket = await openTransport(c);
  const q = new FrameQueue(socket, 1 << 20, () => new UpstreamError('target closed the connection during startup'));
  try {
    const params: Record<string, string> = {};
    for (const [k, v] of clientParams) params[k] = v;
    params.user = c.user;
    params.database = c.database;
    socket.write(encodeStartup(params));
    await authenticate(c, socket, q);
    const serverParams: [string, string][] = [];
    let pid = 0;
    let secret = 0;
    for (let i = 0; i < 1000; i++) {
      const { type, frame: f } = await q.next(CONNECT_TIMEOUT_MS, timedOut);
      if (type === 0x53 /* S */) serverParams.push(decodeParameterStatus(f));
      else if (type === 0x4b /* K */) ({ pid, secret } = decodeBackendKeyData(f));
      else if (type === 0x5a /* Z */) {
        const catalog = opts.catalog ? await loadCatalog(socket, q) : undefined;
        const leftover = q.detach();
        return { socket, params: serverParams, pid, secret, leftover, catalog };
      } else if (type === 0x45 /* E */) throw targetError(c, f);
      // NoticeResponse during startup: nothing to relay yet.
    }
    throw new UpstreamError('target sent too many startup messages');
  } catch (e) {
    socket.destroy();
    throw e instanceof UpstreamError ? e : new UpstreamError(`connection to target failed: ${(e as Error).message}`);
  }
}

/** Runs the catalog query on the fresh session, before the client's first byte reaches it. */
async function loadCatalog(socket: net.Socket, q: FrameQueue): Promise<Catalog> {
  socket.write(frame('Q', Buffer.from(CATALOG_SQL + '\0')));
  const catalog: Catalog = new Map();
  for (let i = 0; i < 250_000; i++) {
    const { type, frame: f } = await q.next(CONNECT_TIMEOUT_MS, timedOut);
    if (type === 0x44 /* D */) {
      const [oid, schema, table, attnum, name] = decodeDataRow(f).map((v) => v?.toString('utf8') ?? '');
      let t = catalog.get(Number(oid));
      if (!t) catalog.set(Number(oid), (t = { schema: schema!, table: table!, columns: new Map() }));
      t.columns.set(Number(attnum), name!);
    } else if (type === 0x45 /* E */) {
      // A target that hides its catalog: table-qualified rules cannot apply; the others still do.
      const { message } = decodeFields(f);
      throw new UpstreamError(`cannot read the target's catalog for column masking rules: ${message ?? 'error'}`);
    } else if (type === 0x5a /* Z */) return catalog;
  }
  throw new UpstreamError('catalog query did not finish');
}

const timedOut = () => new UpstreamError('timed out waiting for the target during startup');

function targetError(c: PostgresConnection, f: Buffer): UpstreamError {
  const fields = decodeFields(f);
  // 28P01/28000 from the target are the gateway's misconfiguration, not the caller's fault;
  // say so without echoing anything about the held credentials.
  if (fields.code === '28000') {
    // pg_hba rejections name the host, user and database, never a password: safe to pass on.
    return new UpstreamError(`the target refused the gateway's login for connection "${c.name}": ${fields.message ?? 'no reason given'} (28000); ask an operator to check the target's pg_hba.conf and the connection's tls setting`);
  }
  if (fields.code?.startsWith('28')) {
    return new UpstreamError(`the target rejected the gateway's credentials for connection "${c.name}" (${fields.code}); ask an operator to check the connection's user and password`);
  }
  return new UpstreamError(`target refused the connection: ${fields.message ?? 'unknown error'}`, fields.code ?? '08001');
}

async function authenticate(c: PostgresConnection, socket: net.Socket, q: FrameQueue): Promise<void> {
  const password = c.password ?? '';
  let saslSession: any = null;
  for (let i = 0; i < 10; i++) {
    const { type, frame: f } = await q.next(CONNECT_TIMEOUT_MS, timedOut);
    if (type === 0x45) throw targetError(c, f);
    if (type !== 0x52 /* R */) throw new ProtocolError(`unexpected message "${String.fromCharCode(type)}" during authentication`);
    const r = new BodyReader(f);
    const code = r.int32();
    switch (code) {
      case 0:
        return;
      case 3:
        socket.write(frame('p', Buffer.from(password + '\0')));
        break;
      case 5: {
        const salt = r.bytes(4);
        const inner = createHash('md5').update(password + c.user).digest('hex');
        const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
        socket.write(frame('p', Buffer.from('md5' + outer + '\0')));
        break;
      }
      case 10: {
        const mechs: string[] = [];
        for (let s = r.cstring(); s; s = r.cstring()) mechs.push(s);
        const stream = socket instanceof tls.TLSSocket ? socket : undefined;
        saslSession = sasl.startSession(mechs, stream);
        const resp = Buffer.from(saslSession.response);
        const body = Buffer.alloc(saslSession.mechanism.length + 1 + 4 + resp.length);
        body.write(saslSession.mechanism + '\0');
        body.writeInt32BE(resp.length, saslSession.mechanism.length + 1);
        resp.copy(body, saslSession.mechanism.length + 5);
        socket.write(frame('p', body));
        break;
      }
      case 11: {
        if (!saslSession) throw new ProtocolError('SASL continue without a SASL exchange');
        await sasl.continueSession(saslSession, password, f.subarray(9).toString('utf8'), socket instanceof tls.TLSSocket ? socket : undefined);
        socket.write(frame('p', Buffer.from(saslSession.response)));
        break;
      }
      case 12:
        if (!saslSession) throw new ProtocolError('SASL final without a SASL exchange');
        sasl.finalizeSession(saslSession, f.subarray(9).toString('utf8'));
        break;
      default:
        throw new UpstreamError(`target asks for an authentication method the gateway does not support (code ${code}); use scram-sha-256, md5 or password for the gateway's user`);
    }
  }
  throw new UpstreamError('authentication with the target did not finish');
}

/** Sends a CancelRequest to the target on a fresh connection, as libpq does. */
export async function sendCancel(c: PostgresConnection, pid: number, secret: number): Promise<void> {
  const s = await openTransport(c);
  await new Promise<void>((resolve) => {
    s.once('close', () => resolve());
    s.once('error', () => resolve());
    s.end(encodeCancelRequest(pid, secret));
    setTimeout(() => {
      s.destroy();
      resolve();
    }, 5000).unref();
  });
}
