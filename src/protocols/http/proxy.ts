// One request through the gateway: guard and journal first, then the upstream request with the
// connection's credentials, bodies streamed both ways with backpressure (pipe), the response
// masked on its way to the client where the connection masks, and a result event with status,
// duration, bytes and bounded, masked body samples.
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import type { HttpConnection } from '../../config/schema.ts';
import type { Classification } from '../../guard/classification.ts';
import type { Masker } from '../../mask/masker.ts';
import { hasCounts, mergeCounts, newCounts, type Counts } from '../../mask/counts.ts';
import type { Execution, HoldOutcome, Session } from '../../session/session.ts';
import { bodyKind, createBodyMasker } from './body-mask.ts';
import { denialRefusal, dialectOf, sendRefusal, type Dialect, type Refusal } from './errors.ts';
import { describeKubeRequest, kubeHeaders } from './kubernetes.ts';
import { BodySample, SAMPLE_BYTES, classifyHttp, clientHeaders, isTextual, upstreamHeaders, type Route } from './request.ts';
import type { LlmHooks } from './llm-proxy.ts';

export type Log = (msg: string, fields?: Record<string, unknown>) => void;

/** A body held for review is bound to the approval by its hash, so it is read whole first; up to this much. */
export const REVIEW_BODY_MAX = 1 << 20;

/** Upstream agents, one per connection, keeping connections alive between requests. */
export class Upstreams {
  private readonly agents = new Map<string, http.Agent>();
  agent(c: HttpConnection): http.Agent {
    let a = this.agents.get(c.name);
    if (!a) {
      a = c.url.startsWith('https:')
        ? new https.Agent({ keepAlive: true, ca: c.ca, cert: c.clientCert?.cert, key: c.clientCert?.key })
        : new http.Agent({ keepAlive: true });
      this.agents.set(c.name, a);
    }
    return a;
  }
  close(): void {
    for (const a of this.agents.values()) a.destroy();
  }
}

/**
 * Reads up to SAMPLE_BYTES of the request body (or until it ends, or `waitMs` passes) so the command
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
  llm?: LlmHooks;
}

/** What the guard and the journal see of a request. */
export interface Described {
  text: string;
  classification: Classification;
  meta: Record<string, unknown>;
}

export function describe(c: HttpConnection, method: string, r: Route, contentType: string | undefined): Described {
  const http = { method, path: r.path, query: r.query || undefined, contentType };
  if (c.type === 'kubernetes') return describeKubeRequest(method, r, http);
  return { text: `${method} ${r.rest}`, classification: classifyHttp(method, r.path), meta: { http } };
}

/** A URL part as a person reads it (escapes decoded), so the detectors see `a@b.c`, not `a%40b.c`. */
export function readableUrlText(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * Masks what a described request carries into the journal beyond its text (the session masks
 * that): the query, and the command of a kubectl exec. Binding and forwarding use the original.
 */
export function maskDescribed(d: Described, masker: Masker | null): void {
  if (!masker) return;
  const http = d.meta.http as { query?: string } | undefined;
  if (http?.query) http.query = masker.maskText(readableUrlText(http.query));
  const exec = d.meta.exec as { command?: string[] } | undefined;
  if (exec?.command) exec.command = exec.command.map((a) => masker.maskText(a));
}

/** The upstream URL for a route: the connection's base path, then the request's path and query. */
export function upstreamUrl(c: HttpConnection, r: Route): URL {
  const target = new URL(c.url);
  target.pathname = target.pathname.replace(/\/+$/, '') + r.rest.split('?')[0];
  target.search = r.query ? `?${r.query}` : '';
  return target;
}

/** Headers to the upstream: the client's minus credentials and hop-by-hop, plus the connection's own. */
export function outgoingHeaders(ctx: ProxyContext, req: http.IncomingMessage, maskOut: boolean): http.OutgoingHttpHeaders {
  const h = upstreamHeaders(req.headers, ctx.connection);
  if (ctx.connection.type === 'kubernetes') Object.assign(h, kubeHeaders(ctx.connection, ctx.session.identity));
  // A masked body, and a completion assembled for the journal, must be readable: ask for them
  // uncompressed (a compressed body that must be masked is refused below).
  if (maskOut || ctx.connection.type === 'llm') h['accept-encoding'] = 'identity';
  return h;
}

export function masksFor(ctx: ProxyContext): boolean {
  return !!ctx.masker && !ctx.masker.isUnmasked(ctx.session.identity.groups);
}

/** The bytes of a body whole, up to `max`; null when it is larger. */
function readWhole(req: http.IncomingMessage, max: number): Promise<Buffer | null> {
  let size = 0;
  const chunks: Buffer[] = [];
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve) => {
    const onData = (d: Buffer) => {
      size += d.length;
      if (size > max) {
        cleanup();
        resolve(null);
      } else chunks.push(d);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onEnd);
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onEnd);
    req.resume();
  });
}

export async function proxyRequest(ctx: ProxyContext, req: http.IncomingMessage, res: http.ServerResponse, r: Route): Promise<void> {
  const { session, connection: c, masker } = ctx;
  const dialect = dialectOf(c);
  const method = req.method ?? 'GET';
  const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  const textBody = hasBody && isTextual(req.headers['content-type'], req.headers['content-encoding']);

  const llm = ctx.llm?.match(method, r) ? ctx.llm : undefined;
  let head: Buffer[] = [];
  let whole: Buffer | null = null;
  let d = describe(c, method, r, req.headers['content-type']);
  let params: string[] | undefined;
  if (llm) {
    // Prompts are checked (and masked) whole before anything reaches the model.
    const max = c.type === 'llm' ? c.maxRequestBytes : REVIEW_BODY_MAX;
    whole = await readWhole(req, max);
    if (!whole) return refuse(req, res, dialect, 413, { error: 'request_too_large', reason: `the request body is over ${max} bytes`, hint: 'send a smaller prompt, or raise maxRequestBytes on the connection' });
    const planned = await llm.plan(r, whole, d);
    if ('refusal' in planned) {
      // Refused before the guard (model, max tokens, budget): recorded all the same, as a block.
      session.refused({ kind: 'http', text: d.text, meta: d.meta }, `llm.${planned.refusal.error}`, planned.refusal.reason);
      return refuse(req, res, dialect, planned.status, planned.refusal, planned.headers);
    }
    whole = planned.body;
    d = planned.described;
    params = planned.params;
  } else if (hasBody && session.check({ kind: 'http', text: d.text, meta: d.meta }, d.classification).action === 'review') {
    // An approval must bind the body too, or approving `POST /transfers` would let any body through.
    whole = await readWhole(req, REVIEW_BODY_MAX);
    if (!whole) return refuse(req, res, dialect, 413, { error: 'request_too_large', reason: `a request held for review may have a body of at most ${REVIEW_BODY_MAX} bytes`, hint: 'send a smaller body' });
    params = [`body sha256:${createHash('sha256').update(whole).digest('hex')} (${whole.length} bytes)`];
  } else if (textBody) {
    head = await peekBody(req, 200);
  }

  maskDescribed(d, masker);
  const reqSample = new BodySample(textBody);
  for (const ch of whole ? [whole] : head) reqSample.push(ch);
  const reqCounts = newCounts();
  const sampleIn = reqSample.text(masker, reqCounts, bodyKind(req.headers['content-type']) === 'json');
  const httpMeta = d.meta.http as Record<string, unknown>;
  httpMeta.requestBody = sampleIn?.text;
  httpMeta.requestTruncated = sampleIn && (sampleIn.truncated || (!whole && !req.readableEnded)) ? true : undefined;
  httpMeta.requestMasked = hasCounts(reqCounts) ? reqCounts : undefined;

  let exec: Execution;
  try {
    exec = await session.run({ kind: 'http', text: d.text, params, meta: d.meta }, d.classification);
  } catch (e) {
    ctx.log('http request not recorded; refused', { session: session.id, error: (e as Error).message });
    llm?.abandon();
    return refuse(req, res, dialect, 503, { error: 'not_recorded', reason: 'the request was refused because the gateway could not record it', hint: 'try again later' });
  }
  const denied = await settleVerdict(session, exec);
  if (denied) {
    llm?.abandon();
    return refuse(req, res, dialect, 403, denied);
  }

  const maskOut = masksFor(ctx);
  const target = upstreamUrl(c, r);
  const headers = outgoingHeaders(ctx, req, maskOut);
  if (whole) {
    delete headers['transfer-encoding'];
    headers['content-length'] = String(whole.length);
  }
  const mod = target.protocol === 'https:' ? https : http;
  const up = mod.request(target, { method, headers, agent: ctx.upstreams.agent(c) });
  up.on('socket', (s) => s.setNoDelay(true));

  let bytesIn = 0;
  let bytesOut = 0;
  let done = false;
  let status = 0;
  let resSample: BodySample | null = null;
  let resJson = false;
  let sampleMasker: Masker | null = masker;
  let streamCounts: Counts | null = null;
  const observer = llm?.observe();
  const finish = (outcome: 'ok' | 'error' | 'unknown', error?: string) => {
    if (done) return;
    done = true;
    const counts = newCounts();
    const out = resSample?.text(sampleMasker, counts, resJson);
    if (streamCounts) mergeCounts(counts, streamCounts);
    const extra = observer?.finish(status) ?? {};
    exec.finish({
      status: outcome,
      error: error ? { message: error } : undefined,
      bytesIn,
      bytesOut,
      truncated: out?.truncated || undefined,
      masked: hasCounts(counts) ? counts : undefined,
      meta: { status: status || undefined, responseBody: out?.text, ...extra },
    });
  };

  if (whole) {
    bytesIn = whole.length;
    up.end(whole);
  } else {
    for (const ch of head) {
      bytesIn += ch.length;
      up.write(ch);
    }
    req.on('data', (b: Buffer) => (bytesIn += b.length));
    // No body: end now, so the request head goes out in one write instead of waiting for 'end'.
    if (req.readableEnded || !hasBody) up.end();
    else req.pipe(up);
    req.resume();
  }

  up.on('response', (ur) => {
    status = ur.statusCode ?? 502;
    const kind = bodyKind(ur.headers['content-type']);
    resJson = kind === 'json';
    const encoded = ur.headers['content-encoding'] !== undefined && ur.headers['content-encoding'] !== 'identity';
    const bodyless = method === 'HEAD' || status === 204 || status === 304;
    const masking = maskOut && kind !== 'binary' && !bodyless;
    if (masking && encoded) {
      // Fail closed: a compressed body cannot be masked in flight, and it was asked for uncompressed.
      ur.resume();
      finish('error', `upstream sent a ${String(ur.headers['content-encoding'])}-encoded body that must be masked`);
      return refuse(req, res, dialect, 502, { error: 'unmaskable_response', reason: `the upstream sent a compressed (${String(ur.headers['content-encoding']).slice(0, 32)}) body, which cannot be masked`, hint: 'configure the upstream to honour Accept-Encoding: identity' });
    }
    const outHeaders = clientHeaders(ur.headers);
    if (masking) delete outHeaders['content-length'];
    res.writeHead(status, ur.statusMessage, outHeaders);
    // A body of known length follows at once, and goes out with the head in one write. A stream
    // (SSE, a watch, chunked) may be silent for long: its head is sent now.
    if (outHeaders['content-length'] === undefined) res.flushHeaders();
    let src: Readable = ur;
    const filter = status < 300 ? llm?.clientFilter(ur.headers['content-type']) : null;
    if (filter) src = ur.pipe(filter);
    if (masking) {
      const t = createBodyMasker(ctx.masker!, kind as 'json' | 'text');
      src.pipe(t);
      src = t;
      sampleMasker = null; // the sample is taken after masking
      streamCounts = t.counts;
      t.once('error', (e) => {
        finish('error', `masking failed: ${e.message}`);
        res.destroy();
      });
    }
    resSample = new BodySample(!encoded && kind !== 'binary');
    const sample = resSample;
    src.on('data', (b: Buffer) => {
      bytesOut += b.length;
      sample.push(b);
    });
    if (observer) ur.on('data', (b: Buffer) => observer.push(b));
    src.pipe(res);
    src.once('end', () => finish(status < 500 ? 'ok' : 'error'));
    ur.once('error', (e) => {
      finish('error', `upstream response failed: ${e.message}`);
      res.destroy();
    });
  });
  up.on('error', (e) => {
    ctx.log('http upstream failed', { connection: c.name, error: e.message });
    finish('error', `upstream unreachable: ${e.message}`);
    if (!res.headersSent) sendRefusal(res, dialect, 502, { error: 'bad_gateway', reason: `connection "${c.name}": the upstream failed (${(e as NodeJS.ErrnoException).code ?? e.message})`, hint: 'check the upstream and the connection url' });
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

/**
 * Blocks, or holds for review, a request whose verdict is not allow. Returns the refusal to send
 * (the result is recorded as denied), or null when the request may go on.
 */
export async function settleVerdict(session: Session, exec: Execution): Promise<Refusal | null> {
  if (exec.verdict.action === 'allow') return null;
  const outcome: HoldOutcome = await session.hold(exec).catch((e: Error) => ({
    action: 'deny' as const,
    denial: { code: 'review_failed', rule: exec.verdict.rule, reason: `the review could not be created (${e.message})`, hint: 'try again later' },
  }));
  if (outcome.action === 'allow') return null;
  exec.finish({ status: 'denied', error: { code: outcome.denial.code, message: outcome.denial.reason }, meta: { status: 403 } });
  return denialRefusal(outcome.denial);
}

export function refuse(req: http.IncomingMessage, res: http.ServerResponse, dialect: Dialect, status: number, body: Parameters<typeof sendRefusal>[3], headers: Record<string, string> = {}): void {
  // The body is not wanted; read and drop it so the connection stays usable.
  req.resume();
  sendRefusal(res, dialect, status, body, headers);
}
