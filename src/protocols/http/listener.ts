// The HTTP listener: HTTPS with the gateway's certificate. A client reaches connection C under
// `/c/C/…` (or at a host name the connection lists) with `Authorization: Bearer NAME.KEY`; the gateway strips the client's credentials,
// injects the connection's own, and proxies the request (proxy.ts).
//
// One gateway session per client TCP connection, identity and connection: keep-alive requests
// share it, and it closes with the socket. Hostile input is left to node's HTTP parser, which
// refuses Content-Length with Transfer-Encoding, conflicting Content-Lengths and obsolete line
// folding (400), and headers over maxHeaderSize (431).
import https from 'node:https';
import type http from 'node:http';
import type net from 'node:net';
import type { HttpConnection } from '../../config/schema.ts';
import type { Guard } from '../../guard/guard.ts';
import { standing, type Identity } from '../../identity/keys.ts';
import type { Journal } from '../../journal/journal.ts';
import type { Masker } from '../../mask/masker.ts';
import type { ReviewService } from '../../approval/reviews.ts';
import { Session } from '../../session/session.ts';
import type { SessionRegistry } from '../../session/registry.ts';
import type { Store } from '../../store/db.ts';
import type { Listener } from '../listener.ts';
import { checkKey } from '../ssh/credentials.ts';
import { denialRefusal, dialectOf, sendRefusal, type Dialect, type Refusal } from './errors.ts';
import { llmHooks } from './llm-proxy.ts';
import { proxyRequest, readableUrlText, refuse, Upstreams, type Log, type ProxyContext } from './proxy.ts';
import { route, type Route } from './request.ts';
import { proxyUpgrade, refuseRaw } from './upgrade.ts';

export interface HttpGatewayContext {
  store: Store;
  journal: Journal;
  guard: Guard;
  registry: SessionRegistry;
  reviews?: ReviewService;
  connections: Map<string, HttpConnection>;
  maskers: Map<string, Masker>;
  tls: { cert: string; key: string };
  limits: { headersTimeoutMs: number; requestTimeoutMs: number };
  log: Log;
}

export const MAX_HEADER_BYTES = 64 * 1024;

interface SocketState {
  /** closes the socket unless a request's headers arrive in time (node's headersTimeout only starts with the first byte) */
  deadline?: NodeJS.Timeout;
  /** requests in progress (pipelined ones overlap): the deadline is armed only when none is */
  inflight: number;
  /** the last Authorization header that checked out on this socket, and whose it is */
  auth: { header: string; identity: Identity } | null;
  sessions: Map<string, Promise<Session>>;
}

const AUTH_HINT = 'send `Authorization: Bearer NAME.KEY` with a Gatehouse key';

export async function startHttpListener(ctx: HttpGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  const upstreams = new Upstreams();
  const hosts = new Map<string, string>();
  for (const c of ctx.connections.values()) for (const h of c.hosts ?? []) hosts.set(h.toLowerCase(), c.name);
  const states = new WeakMap<net.Socket, SocketState>();
  const server = https.createServer(
    {
      cert: ctx.tls.cert,
      key: ctx.tls.key,
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: ctx.limits.headersTimeoutMs,
      requestTimeout: ctx.limits.requestTimeoutMs,
      // How often node checks those two timeouts: its default (30 s) lets a slowloris client
      // hold a socket far past headersTimeout.
      connectionsCheckingInterval: 1000,
      handshakeTimeout: ctx.limits.headersTimeoutMs,
      keepAliveTimeout: 5000,
      noDelay: true,
    },
    (req, res) => {
      const st = states.get(req.socket);
      if (st) {
        clearTimeout(st.deadline);
        st.inflight++;
        // The next request on this keep-alive socket has the same deadline for its headers.
        res.once('close', () => {
          if (--st.inflight === 0) armDeadline(req.socket, st);
        });
      }
      handle(ctx, upstreams, states, hosts, req, res).catch((e) => {
        ctx.log('http request failed', { error: (e as Error).message });
        sendRefusal(res, 'json', 500, { error: 'internal', reason: 'internal gateway error; see the gateway log', hint: 'try again later' });
      });
    },
  );
  // WebSocket (and SPDY, for older kubectl) upgrades: the same admission, then a byte relay.
  server.on('upgrade', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
    clearTimeout(states.get(sock)?.deadline);
    handleUpgrade(ctx, upstreams, states, hosts, req, sock, head).catch((e) => {
      ctx.log('http upgrade failed', { error: (e as Error).message });
      refuseRaw(sock, 'json', 500, { error: 'internal', reason: 'internal gateway error; see the gateway log', hint: 'try again later' });
    });
  });
  server.maxConnections = maxConnections;
  const armDeadline = (sock: net.Socket, st: SocketState) => {
    clearTimeout(st.deadline);
    st.deadline = setTimeout(() => sock.destroy(), ctx.limits.headersTimeoutMs);
    st.deadline.unref();
  };
  server.on('secureConnection', (sock: net.Socket) => {
    sock.setNoDelay(true);
    const st: SocketState = { auth: null, sessions: new Map(), inflight: 0 };
    states.set(sock, st);
    armDeadline(sock, st);
    sock.once('close', () => {
      clearTimeout(st.deadline);
      for (const p of st.sessions.values()) {
        void p.then((s) => {
          ctx.registry.delete(s);
          return s.close('client disconnected');
        }, () => {});
      }
    });
  });
  server.on('tlsClientError', (_e, sock) => sock.destroy());
  server.on('clientError', (err: NodeJS.ErrnoException, sock: net.Socket) => {
    if (!sock.writable || (err.code === 'ECONNRESET')) return sock.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    const body = JSON.stringify({ error: 'bad_request', reason: `malformed or refused HTTP request (${status.slice(4)})`, hint: 'send a well-formed HTTP/1.1 request' }) + '\n';
    sock.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        upstreams.close();
      }),
  };
}

/** Who is asking, for which connection, in which session; or why not. */
type Admission =
  | { ok: true; route: Route; connection: HttpConnection; identity: Identity; session: Session; masker: Masker | null }
  | { ok: false; dialect: Dialect; status: number; refusal: Refusal; headers?: Record<string, string> };

const unauthorized = { 'www-authenticate': 'Bearer realm="gatehouse"' };

async function admit(ctx: HttpGatewayContext, states: WeakMap<net.Socket, SocketState>, hosts: ReadonlyMap<string, string>, req: http.IncomingMessage): Promise<Admission> {
  const r = route(req.url, req.headers.host, hosts);
  const c0 = r && r !== 'bad' ? ctx.connections.get(r.connection) : undefined;
  const dialect = dialectOf(c0);
  if (r === 'bad') return { ok: false, dialect, status: 400, refusal: { error: 'bad_path', reason: 'the path has dot segments or invalid escapes', hint: 'send a normalised path' } };
  if (!r) return { ok: false, dialect, status: 404, refusal: { error: 'not_found', reason: 'the gateway serves connections under /c/<connection>/', hint: 'use /c/<connection>/<path>' } };

  const st = states.get(req.socket) ?? { auth: null, sessions: new Map(), inflight: 0 };
  const header = req.headers.authorization ?? '';
  let identity: Identity;
  if (st.auth && st.auth.header === header) identity = st.auth.identity;
  else {
    const m = /^Bearer +(\S+)\s*$/i.exec(header);
    const check = m ? await checkKey(ctx.store, m[1]!) : null;
    if (!check || !check.ok) return { ok: false, dialect, status: 401, refusal: { error: 'unauthorized', reason: check ? 'wrong key' : 'no key given', hint: AUTH_HINT }, headers: unauthorized };
    identity = check.identity;
    st.auth = { header, identity };
  }
  const standingNow = standing(identity);
  if (!standingNow.ok) return { ok: false, dialect, status: 401, refusal: { error: 'unauthorized', reason: standingNow.message, hint: 'ask an operator for a new key' }, headers: unauthorized };

  const c = c0;
  if (!c) return { ok: false, dialect, status: 404, refusal: { error: 'unknown_connection', reason: `unknown HTTP connection "${r.connection.slice(0, 64)}"`, hint: 'use a connection of type http, kubernetes or llm you are granted' } };
  const denial = ctx.guard.authorizeConnection(identity, c.name);
  if (denial) return { ok: false, dialect, status: 403, refusal: denialRefusal(denial) };

  const masker = ctx.maskers.get(c.name) ?? null;
  const key = `${identity.id}\0${c.name}`;
  let sp = st.sessions.get(key);
  if (!sp) {
    sp = Session.open(ctx, {
      identity,
      connection: c.name,
      protocol: c.type === 'http' ? 'http' : c.type,
      clientAddr: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      meta: { masking: masker ? (masker.isUnmasked(identity.groups) ? 'off: unmasked group (journal samples masked)' : 'on') : undefined },
    }).then((s) => {
      ctx.registry.add(s);
      s.onKill = (reason) => {
        ctx.log('http session closed by the gateway', { session: s.id, reason });
        req.socket.destroy();
      };
      // The text is `METHOD /path?query`: masked as read, with escapes decoded.
      if (masker) s.redact = (text) => masker.maskText(readableUrlText(text));
      return s;
    });
    st.sessions.set(key, sp);
    sp.catch(() => st.sessions.delete(key));
  }
  try {
    return { ok: true, route: r, connection: c, identity, session: await sp, masker };
  } catch (e) {
    ctx.log('http session not recorded; refused', { error: (e as Error).message });
    return { ok: false, dialect, status: 503, refusal: { error: 'not_recorded', reason: 'session refused: the gateway could not record it', hint: 'try again later' } };
  }
}

function proxyContext(ctx: HttpGatewayContext, upstreams: Upstreams, a: Admission & { ok: true }): ProxyContext {
  const p: ProxyContext = { session: a.session, connection: a.connection, masker: a.masker, upstreams, log: ctx.log };
  if (a.connection.type === 'llm') p.llm = llmHooks({ store: ctx.store, connection: a.connection, session: a.session, masker: a.masker });
  return p;
}

async function handle(ctx: HttpGatewayContext, upstreams: Upstreams, states: WeakMap<net.Socket, SocketState>, hosts: ReadonlyMap<string, string>, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const a = await admit(ctx, states, hosts, req);
  if (!a.ok) return refuse(req, res, a.dialect, a.status, a.refusal, a.headers);
  await proxyRequest(proxyContext(ctx, upstreams, a), req, res, a.route);
}

async function handleUpgrade(ctx: HttpGatewayContext, upstreams: Upstreams, states: WeakMap<net.Socket, SocketState>, hosts: ReadonlyMap<string, string>, req: http.IncomingMessage, sock: net.Socket, head: Buffer): Promise<void> {
  const a = await admit(ctx, states, hosts, req);
  if (!a.ok) return refuseRaw(sock, a.dialect, a.status, a.refusal, a.headers);
  await proxyUpgrade(proxyContext(ctx, upstreams, a), req, sock, head, a.route);
}
