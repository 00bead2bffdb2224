// Upgraded connections (WebSocket; SPDY for kubectl's fallback): the request is admitted, judged
// and recorded like any other, then the upstream's 101 is relayed and bytes flow both ways with
// backpressure. Kubernetes exec/attach streams are observed (never altered) and recorded as a
// terminal session (asciicast, stdin included), replayable with `gatehouse sessions replay`.
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Execution } from '../../session/session.ts';
import type { CastHeader } from '../../session/asciicast.ts';
import { CastRecorder } from '../../session/cast-recorder.ts';
import { TerminalRecord } from './terminal-record.ts';
import { dialectOf, refusalBody, type Dialect, type Refusal } from './errors.ts';
import { KubeOutputMasker, MASKABLE_SUBPROTOCOLS, maskableOffer } from './kube-mask.ts';
import { KubeExecObserver, parseExecQuery, type KubeStreamEvent } from './kube-stream.ts';
import { describe, maskDescribed, masksFor, outgoingHeaders, settleVerdict, upstreamUrl, type ProxyContext } from './proxy.ts';
import type { Route } from './request.ts';

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' };

/** A refusal written on a socket that was about to be upgraded (there is no ServerResponse). */
export function refuseRaw(sock: net.Socket, dialect: Dialect, status: number, r: Refusal, headers: Record<string, string> = {}): void {
  if (!sock.writable) return void sock.destroy();
  const body = JSON.stringify(refusalBody(dialect, status, r)) + '\n';
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  sock.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\n${extra}Connection: close\r\n\r\n${body}`);
}

/** The response head of an upgrade, as the upstream sent it (raw headers keep their case and order). */
function responseHead(res: http.IncomingMessage): string {
  let out = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`;
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) out += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
  return out + '\r\n';
}

/** A terminal stream of kubectl exec/attach: the subresource, and a WebSocket (SPDY is relayed unobserved). */
function isKubeTerminal(ctx: ProxyContext, kubeSub: string, req: http.IncomingMessage): boolean {
  return ctx.connection.type === 'kubernetes' && (kubeSub === 'exec' || kubeSub === 'attach') && /websocket/i.test(req.headers.upgrade ?? '');
}

export async function proxyUpgrade(ctx: ProxyContext, req: http.IncomingMessage, sock: net.Socket, head: Buffer, r: Route): Promise<void> {
  const { session, connection: c } = ctx;
  const dialect = dialectOf(c);
  const method = req.method ?? 'GET';
  sock.setNoDelay(true);
  const d = describe(c, method, r, req.headers['content-type']);
  const kube = d.classification.kubernetes;
  const terminal = isKubeTerminal(ctx, kube?.subresource ?? '', req);
  const exec = terminal ? parseExecQuery(new URLSearchParams(r.query)) : null;
  (d.meta.http as Record<string, unknown>).upgrade = String(req.headers.upgrade ?? '').slice(0, 64);
  if (exec) d.meta.exec = { command: exec.command, container: exec.container, tty: exec.tty, stdin: exec.stdin };
  maskDescribed(d, ctx.masker);
  // The title is the (masked) command line: the recording holds nothing the journal may not.
  const title = ((d.meta.exec as { command?: string[] } | undefined)?.command ?? []).join(' ').slice(0, 200) || kube?.subresource;
  const header: CastHeader | undefined = exec ? { version: 2, width: 80, height: 24, timestamp: Math.floor(Date.now() / 1000), title } : undefined;
  if (header) d.meta.cast = header;

  // kubectl exec/attach output is masked in flight (kube-mask.ts); other upgraded streams cannot
  // be: they are refused to identities whose results must be masked (fail closed).
  const maskOut = masksFor(ctx);
  const offer = maskOut && terminal ? maskableOffer(req.headers['sec-websocket-protocol']) : null;
  if (maskOut && !offer) {
    session.refused({ kind: 'http', text: d.text, meta: d.meta }, 'connection.mask', 'streams cannot be masked');
    return refuseRaw(sock, dialect, 403, { error: 'unmaskable_stream', reason: `connection "${c.name}" masks results, and this upgraded stream cannot be masked (only kubectl exec/attach over a binary channel protocol can)`, hint: 'ask for a group listed in the connection\'s mask.unmaskedGroups, or use requests that return JSON' });
  }

  let rec: Execution;
  try {
    rec = await session.run({ kind: 'http', text: d.text, meta: d.meta }, d.classification);
  } catch (e) {
    ctx.log('http upgrade not recorded; refused', { session: session.id, error: (e as Error).message });
    return refuseRaw(sock, dialect, 503, { error: 'not_recorded', reason: 'the request was refused because the gateway could not record it', hint: 'try again later' });
  }
  const denied = await settleVerdict(session, rec);
  if (denied) return refuseRaw(sock, dialect, 403, denied);
  if (sock.destroyed) return rec.finish({ status: 'not_run', error: { message: 'client disconnected' } });

  const target = upstreamUrl(c, r);
  const headers = outgoingHeaders(ctx, req, false);
  headers.connection = 'Upgrade';
  headers.upgrade = req.headers.upgrade;
  // An observed stream must stay readable: no permessage-deflate (the recording would be lost).
  if (terminal) delete headers['sec-websocket-extensions'];
  if (offer) headers['sec-websocket-protocol'] = offer;
  const tlsOpts = target.protocol === 'https:' ? { ca: c.ca, cert: c.clientCert?.cert, key: c.clientCert?.key } : {};
  const up = (target.protocol === 'https:' ? https : http).request(target, { method, headers, agent: false, ...tlsOpts });
  let finished = false;
  let bytesIn = head.length;
  let bytesOut = 0;
  let status = 0;
  let exitCode: number | null | undefined;
  let exitMessage: string | undefined;
  const recorder = header ? new TerminalRecord(new CastRecorder((cast) => session.emit('output', { command: rec.seq, cast })), ctx.masker) : null;
  const finish = (outcome: 'ok' | 'error' | 'unknown', error?: string) => {
    if (finished) return;
    finished = true;
    recorder?.end();
    rec.finish({
      status: outcome,
      error: error ? { message: error } : undefined,
      bytesIn,
      bytesOut,
      meta: { status: status || undefined, exitCode, exitMessage, recording: recorder ? { chunks: recorder.chunks } : undefined },
    });
  };

  up.on('upgrade', (ures, usock, uhead) => {
    status = ures.statusCode ?? 101;
    usock.setNoDelay(true);
    if (!sock.writable) {
      usock.destroy();
      return finish('unknown', 'client disconnected');
    }
    const chosen = String(ures.headers['sec-websocket-protocol'] ?? '');
    if (offer && !MASKABLE_SUBPROTOCOLS.includes(chosen)) {
      usock.destroy();
      finish('error', `the API server chose subprotocol "${chosen.slice(0, 64)}", which cannot be masked`);
      return refuseRaw(sock, dialect, 502, { error: 'unmaskable_stream', reason: 'the API server chose a stream protocol the gateway cannot mask', hint: 'use kubectl 1.30 or later' });
    }
    sock.write(responseHead(ures));
    // Masked: the server's messages are re-framed with stdout/stderr masked; else bytes pass as they are.
    const masked = offer
      ? new KubeOutputMasker(ctx.masker!, (b) => sock.write(b), (reason) => {
          ctx.log('kubernetes stream not maskable; closed', { session: session.id, error: reason });
          sock.destroy();
          usock.destroy();
        })
      : null;
    const observer = recorder ? new KubeExecObserver(String(ures.headers['sec-websocket-protocol'] ?? '')) : null;
    const onEvents = (events: KubeStreamEvent[]) => {
      for (const e of events) {
        if (e.type === 'stdout' || e.type === 'stderr' || e.type === 'stdin') recorder!.data(e.type, e.data);
        else if (e.type === 'resize') recorder!.resize(e.cols, e.rows);
        else if (e.type === 'exit') {
          exitCode = e.code;
          exitMessage = e.message && ctx.masker ? ctx.masker.maskText(e.message) : e.message;
        } else if (e.type === 'error' && e.fatal) {
          // Fail closed: a terminal the gateway can no longer read is not left running unrecorded.
          ctx.log('kubernetes stream not readable; closed', { session: session.id, error: e.message });
          recorder!.note(`\r\n[gatehouse: stream closed: ${e.message}]\r\n`);
          sock.destroy();
          usock.destroy();
        }
      }
    };
    const fromServer = (b: Buffer) => {
      bytesOut += b.length;
      if (observer) onEvents(observer.fromServer(b));
    };
    const fromClient = (b: Buffer) => {
      bytesIn += b.length;
      if (observer) onEvents(observer.fromClient(b));
    };
    if (uhead.length) {
      fromServer(uhead);
      if (masked) masked.push(uhead);
      else sock.write(uhead);
    }
    if (head.length) {
      if (observer) onEvents(observer.fromClient(head));
      usock.write(head);
    }
    usock.on('data', fromServer);
    sock.on('data', fromClient);
    if (masked) {
      usock.on('data', (b: Buffer) => {
        if (!masked.push(b)) usock.pause();
      });
      sock.on('drain', () => usock.resume());
      usock.once('end', () => {
        masked.end();
        sock.end();
      });
    } else usock.pipe(sock);
    sock.pipe(usock);
    let ended = false;
    const end = (why: string) => {
      sock.destroy();
      usock.destroy();
      if (ended) return;
      ended = true;
      if (observer) onEvents(observer.end());
      finish(why === 'closed' ? 'ok' : 'error', why === 'closed' ? undefined : why);
    };
    // The upstream closing ends the client's side gracefully, so what is still buffered for the
    // client (a large output under backpressure) is delivered, not cut; the client closing
    // ends everything at once.
    usock.once('close', () => {
      if (!sock.destroyed && !sock.writableEnded) sock.end();
      if (sock.destroyed || sock.writableFinished) end('closed');
      else sock.once('finish', () => end('closed'));
    });
    sock.once('close', () => end('closed'));
    usock.once('error', (e) => end(`upstream stream failed: ${e.message}`));
    sock.once('error', (e) => end(`client stream failed: ${e.message}`));
  });
  // No upgrade: the upstream answered with a plain response (an error, typically); relay it.
  up.on('response', (ures) => {
    status = ures.statusCode ?? 502;
    const chunks: Buffer[] = [];
    let size = 0;
    ures.on('data', (b: Buffer) => {
      if (size < 64 * 1024) chunks.push(b);
      size += b.length;
    });
    ures.once('end', () => {
      const body = Buffer.concat(chunks).subarray(0, 64 * 1024);
      bytesOut = body.length;
      let out = `HTTP/1.1 ${status} ${ures.statusMessage ?? ''}\r\n`;
      for (let i = 0; i + 1 < ures.rawHeaders.length; i += 2) {
        const k = ures.rawHeaders[i]!.toLowerCase();
        if (k === 'content-length' || k === 'transfer-encoding' || k === 'connection') continue;
        out += `${ures.rawHeaders[i]}: ${ures.rawHeaders[i + 1]}\r\n`;
      }
      sock.end(Buffer.concat([Buffer.from(`${out}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`), body]));
      finish(status < 500 ? 'ok' : 'error', status >= 400 ? `upstream refused the upgrade (${status})` : undefined);
    });
  });
  up.on('error', (e) => {
    ctx.log('http upstream failed', { connection: c.name, error: e.message });
    finish('error', `upstream unreachable: ${e.message}`);
    refuseRaw(sock, dialect, 502, { error: 'bad_gateway', reason: `connection "${c.name}": the upstream failed (${(e as NodeJS.ErrnoException).code ?? e.message})`, hint: 'check the upstream and the connection url' });
  });
  sock.once('close', () => {
    if (status === 0) up.destroy();
  });
  up.end();
}
