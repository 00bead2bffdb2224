// The HTTP listener: HTTPS with the gateway's certificate. A client reaches connection C under
// `/c/C/…` with `Authorization: Bearer NAME.KEY`; the gateway strips the client's credentials,
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
import { proxyRequest, sendJson, Upstreams, type Log } from './proxy.ts';
import { route } from './request.ts';

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
  /** the last Authorization header that checked out on this socket, and whose it is */
  auth: { header: string; identity: Identity } | null;
  sessions: Map<string, Promise<Session>>;
}

const AUTH_HINT = 'send `Authorization: Bearer NAME.KEY` with a Gatehouse key';

export async function startHttpListener(ctx: HttpGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  const upstreams = new Upstreams();
  const states = new WeakMap<net.Socket, SocketState>();
  const server = https.createServer(
    {
      cert: ctx.tls.cert,
      key: ctx.tls.key,
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: ctx.limits.headersTimeoutMs,
      requestTimeout: ctx.limits.requestTimeoutMs,
      keepAliveTimeout: 5000,
      noDelay: true,
    },
    (req, res) => {
      handle(ctx, upstreams, states, req, res).catch((e) => {
        ctx.log('http request failed', { error: (e as Error).message });
        sendJson(res, 500, { error: 'internal', reason: 'internal gateway error; see the gateway log', hint: 'try again later' });
      });
    },
  );
  server.maxConnections = maxConnections;
  server.on('secureConnection', (sock: net.Socket) => {
    sock.setNoDelay(true);
    const st: SocketState = { auth: null, sessions: new Map() };
    states.set(sock, st);
    sock.once('close', () => {
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

async function handle(ctx: HttpGatewayContext, upstreams: Upstreams, states: WeakMap<net.Socket, SocketState>, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const r = route(req.url);
  if (r === 'bad') return refuse(req, res, 400, { error: 'bad_path', reason: 'the path has dot segments or invalid escapes', hint: 'send a normalised path' });
  if (!r) return refuse(req, res, 404, { error: 'not_found', reason: 'the gateway serves connections under /c/<connection>/', hint: 'use /c/<connection>/<path>' });

  const st = states.get(req.socket) ?? { auth: null, sessions: new Map() };
  const header = req.headers.authorization ?? '';
  let identity: Identity;
  if (st.auth && st.auth.header === header) identity = st.auth.identity;
  else {
    const m = /^Bearer +(\S+)\s*$/i.exec(header);
    const check = m ? await checkKey(ctx.store, m[1]!) : null;
    if (!check || !check.ok) {
      return refuse(req, res, 401, { error: 'unauthorized', reason: check ? 'wrong key' : 'no key given', hint: AUTH_HINT }, { 'www-authenticate': 'Bearer realm="gatehouse"' });
    }
    identity = check.identity;
    st.auth = { header, identity };
  }
  const standingNow = standing(identity);
  if (!standingNow.ok) return refuse(req, res, 401, { error: 'unauthorized', reason: standingNow.message, hint: 'ask an operator for a new key' }, { 'www-authenticate': 'Bearer realm="gatehouse"' });

  const c = ctx.connections.get(r.connection);
  if (!c) return refuse(req, res, 404, { error: 'unknown_connection', reason: `unknown HTTP connection "${r.connection.slice(0, 64)}"`, hint: 'use a connection of type http you are granted' });
  const denial = ctx.guard.authorizeConnection(identity, c.name);
  if (denial) return refuse(req, res, 403, { error: denial.code, reason: denial.reason, rule: denial.rule, hint: denial.hint });

  const masker = ctx.maskers.get(c.name) ?? null;
  const key = `${identity.id}\0${c.name}`;
  let sp = st.sessions.get(key);
  if (!sp) {
    sp = Session.open(ctx, {
      identity,
      connection: c.name,
      protocol: 'http',
      clientAddr: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      meta: { masking: masker ? 'on (journal samples)' : undefined },
    }).then((s) => {
      ctx.registry.add(s);
      s.onKill = (reason) => {
        ctx.log('http session closed by the gateway', { session: s.id, reason });
        req.socket.destroy();
      };
      if (masker) s.redact = (text) => masker.maskText(text);
      return s;
    });
    st.sessions.set(key, sp);
    sp.catch(() => st.sessions.delete(key));
  }
  let session: Session;
  try {
    session = await sp;
  } catch (e) {
    ctx.log('http session not recorded; refused', { error: (e as Error).message });
    return refuse(req, res, 503, { error: 'not_recorded', reason: 'session refused: the gateway could not record it', hint: 'try again later' });
  }
  await proxyRequest({ session, connection: c, masker, upstreams, log: ctx.log }, req, res, r);
}

function refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
  // The body is not wanted; read and drop it so the connection stays usable.
  req.resume();
  sendJson(res, status, body, headers);
}
