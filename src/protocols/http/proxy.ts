// One request through the gateway: guard and journal first, then the upstream request with the
// connection's credentials, bodies streamed both ways with backpressure (pipe), and a result
// event with status, duration, bytes and bounded, masked body samples.
import http from 'node:http';
import https from 'node:https';
import type { HttpConnection } from '../../config/schema.ts';
import type { Denial } from '../../guard/types.ts';
import type { Masker } from '../../mask/masker.ts';
import { hasCounts, newCounts } from '../../mask/counts.ts';
import type { Execution, HoldOutcome, Session } from '../../session/session.ts';
import { BodySample, SAMPLE_BYTES, classifyHttp, clientHeaders, isTextual, upstreamHeaders, type Route } from './request.ts';

export type Log = (msg: string, fields?: Record<string, unknown>) => void;

/** Upstream agents, one per connection, keeping connections alive between requests. */
export class Upstreams {
  private readonly agents = new Map<string, http.Agent>();
  agent(c: HttpConnection): http.Agent {
    let a = this.agents.get(c.name);
    if (!a) {
      a = c.url.startsWith('https:') ? new https.Agent({ keepAlive: true, ca: c.ca }) : new http.Agent({ keepAlive: true });
      this.agents.set(c.name, a);
    }
    return a;
  }
  close(): void {
    for (const a of this.agents.values()) a.destroy();
  }
}

export function sendJson(res: http.ServerResponse, status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** The shared denial shape as a JSON body. */
export function denialBody(d: Denial): Record<string, unknown> {
  return { error: d.code, reason: d.reason, rule: d.rule, hint: d.hint, ...(d.reviewId ? { reviewId: d.reviewId } : {}) };
}

/**
 * Reads up to SAMPLE_BYTES of the request body (or until it ends, or briefly waits) so the command
 * event can carry a sample; the chunks read are forwarded first. A client that sends its body
 * slowly is not held up longer than `waitMs`.
 */
function peekBody(req: http.IncomingMessage, waitMs: number): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  if (req.readableEnded) return Promise.resolve(chunks);
  return new Promise((resolve) => {
    let size = 0;
    const done = () => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', done);
      req.off('close', done);
      req.pause();
      resolve(chunks);
    };
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      if (size >= SAMPLE_BYTES) done();
    };
    const timer = setTimeout(done, waitMs);
    req.on('data', onData);
    req.once('end', done);
    req.once('close', done);
  });
}

export interface ProxyContext {
  session: Session;
  connection: HttpConnection;
  masker: Masker | null;
  upstreams: Upstreams;
  log: Log;
}

export async function proxyRequest(ctx: ProxyContext, req: http.IncomingMessage, res: http.ServerResponse, r: Route): Promise<void> {
  const { session, connection: c, masker } = ctx;
  const method = req.method ?? 'GET';
  const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  const reqSample = new BodySample(hasBody && isTextual(req.headers['content-type'], req.headers['content-encoding']));
  const head = reqSample.enabled ? await peekBody(req, 200) : [];
  for (const ch of head) reqSample.push(ch);
  const reqCounts = newCounts();
  const sampleIn = reqSample.text(masker, reqCounts);

  let exec: Execution;
  try {
    exec = await session.run(
      {
        kind: 'http',
        text: `${method} ${r.rest}`,
        meta: {
          http: {
            method,
            path: r.path,
            query: r.query || undefined,
            contentType: req.headers['content-type'],
            requestBody: sampleIn?.text,
            requestTruncated: sampleIn && (sampleIn.truncated || !req.readableEnded) ? true : undefined,
            requestMasked: hasCounts(reqCounts) ? reqCounts : undefined,
          },
        },
      },
      classifyHttp(method, r.path),
    );
  } catch (e) {
    ctx.log('http request not recorded; refused', { session: session.id, error: (e as Error).message });
    return sendJson(res, 503, { error: 'not_recorded', reason: 'the request was refused because the gateway could not record it', hint: 'try again later' });
  }
  if (exec.verdict.action !== 'allow') {
    const outcome: HoldOutcome = await session.hold(exec).catch((e: Error) => ({
      action: 'deny' as const,
      denial: { code: 'review_failed', rule: exec.verdict.rule, reason: `the review could not be created (${e.message})`, hint: 'try again later' },
    }));
    if (outcome.action === 'deny') {
      exec.finish({ status: 'denied', error: { code: outcome.denial.code, message: outcome.denial.reason }, meta: { status: 403 } });
      req.resume();
      return sendJson(res, 403, denialBody(outcome.denial));
    }
  }

  const base = new URL(c.url);
  const target = new URL(base.href);
  target.pathname = base.pathname.replace(/\/+$/, '') + r.rest.split('?')[0];
  target.search = r.query ? `?${r.query}` : '';
  const mod = target.protocol === 'https:' ? https : http;
  const up = mod.request(target, { method, headers: upstreamHeaders(req.headers, c), agent: ctx.upstreams.agent(c) });
  up.on('socket', (s) => s.setNoDelay(true));

  let bytesIn = 0;
  let done = false;
  const resSample = { s: null as BodySample | null };
  let status = 0;
  const finish = (outcome: 'ok' | 'error' | 'unknown', error?: string) => {
    if (done) return;
    done = true;
    const counts = newCounts();
    const out = resSample.s?.text(masker, counts);
    exec.finish({
      status: outcome,
      error: error ? { message: error } : undefined,
      bytesIn,
      bytesOut: resSample.s?.bytes ?? 0,
      truncated: out?.truncated || undefined,
      masked: hasCounts(counts) ? counts : undefined,
      meta: { status: status || undefined, responseBody: out?.text },
    });
  };

  for (const ch of head) {
    bytesIn += ch.length;
    up.write(ch);
  }
  req.on('data', (d: Buffer) => (bytesIn += d.length));
  if (req.readableEnded) up.end();
  else req.pipe(up);

  up.on('response', (ur) => {
    status = ur.statusCode ?? 502;
    resSample.s = new BodySample(isTextual(ur.headers['content-type'], ur.headers['content-encoding']));
    const sample = resSample.s;
    res.writeHead(status, ur.statusMessage, clientHeaders(ur.headers));
    res.flushHeaders();
    ur.on('data', (d: Buffer) => sample.push(d));
    ur.pipe(res);
    ur.once('end', () => {
      finish(status < 500 ? 'ok' : 'error');
    });
    ur.once('error', (e) => {
      finish('error', `upstream response failed: ${e.message}`);
      res.destroy();
    });
  });
  up.on('error', (e) => {
    ctx.log('http upstream failed', { connection: c.name, error: e.message });
    finish('error', `upstream unreachable: ${e.message}`);
    if (!res.headersSent) sendJson(res, 502, { error: 'bad_gateway', reason: `connection "${c.name}": the upstream failed (${(e as NodeJS.ErrnoException).code ?? e.message})`, hint: 'check the upstream and the connection url' });
    else res.destroy();
  });
  // The client left (or its connection broke) before the response was complete.
  res.once('close', () => {
    if (!res.writableFinished) {
      up.destroy();
      finish('unknown', 'client disconnected');
    }
  });
}
