// Pure helpers of the HTTP adapter: routing `/c/<connection>/<rest>`, the guard's view of a
// request, header filtering (RFC 9110 §7.6.1) and bounded body samples.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Classification } from '../../guard/classification.ts';
import type { HttpConnection } from '../../config/schema.ts';
import type { Masker } from '../../mask/masker.ts';
import { mergeCounts, type Counts } from '../../mask/counts.ts';
import { JsonStreamMasker } from '../../mask/json-stream.ts';
import { bodyKind } from './body-mask.ts';

/** Bytes of a request or response body kept in the journal. */
export const SAMPLE_BYTES = 4096;

export interface Route {
  connection: string;
  /** path and query after /c/<connection>, always starting with '/' */
  rest: string;
  path: string;
  query: string;
}

/**
 * The connection a request is for: by host name where configured (`hosts:`, the whole path is
 * the upstream's), else under `/c/<connection>/`. null: neither; 'bad': a path the gateway
 * refuses to forward (dot segments, bad escapes).
 */
export function route(url: string | undefined, host?: string, hosts?: ReadonlyMap<string, string>): Route | null | 'bad' {
  if (host && hosts && hosts.size > 0) {
    const byHost = hosts.get(hostName(host));
    if (byHost !== undefined) return (url ?? '').startsWith('/') ? routeRest(byHost, url!) : 'bad';
  }
  const m = /^\/c\/([^/?#]+)([^#]*)$/.exec(url ?? '');
  if (!m) return null;
  let connection: string;
  try {
    connection = decodeURIComponent(m[1]!);
  } catch {
    return 'bad';
  }
  return routeRest(connection, m[2] || '/');
}

/** The Host header's name part, lower-case, without port or IPv6 brackets. */
export function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') < 0 ? undefined : h.indexOf(']'));
  const colon = h.indexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

function routeRest(connection: string, restIn: string): Route | 'bad' {
  if (restIn.includes('#')) return 'bad';
  let rest = restIn;
  if (rest.startsWith('?')) rest = '/' + rest;
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q + 1);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return 'bad';
  }
  // The upstream may normalise `..`; the guard judged the path as written, so refuse them.
  if (/(^|\/)\.\.?(\/|$)/.test(decoded) || decoded.includes('\\') || decoded.includes('\0')) return 'bad';
  return { connection, rest, path: decoded, query };
}

const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The guard's view of a request: reads for safe methods, writes otherwise; the method as a type. */
export function classifyHttp(method: string, path: string): Classification {
  const read = READ_METHODS.has(method);
  return {
    class: read ? 'read' : 'write',
    classes: [read ? 'read' : 'write'],
    types: [`http.${method.toLowerCase()}`],
    reads: [path],
    writes: read ? [] : [path],
    flags: [],
    functions: [],
    reason: read ? undefined : `HTTP ${method}`,
  };
}

/** Hop-by-hop headers (RFC 9110 §7.6.1), plus those the gateway replaces or must not pass on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);
const CLIENT_ONLY = new Set(['authorization', 'cookie', 'host', 'expect', 'content-length']);

function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const v = headers.connection;
  return new Set((v ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

/** The request headers sent upstream: no hop-by-hop ones, no client credentials; the connection's injected. */
export function upstreamHeaders(headers: IncomingHttpHeaders, c: HttpConnection): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    // Impersonate-*: a client must never act as someone else with the gateway's credentials.
    if (v === undefined || HOP_BY_HOP.has(k) || CLIENT_ONLY.has(k) || named.has(k) || k.startsWith('impersonate-')) continue;
    out[k] = v;
  }
  // Content-Length passes as sent (node's parser has already refused conflicting ones).
  if (headers['content-length'] !== undefined && headers['transfer-encoding'] === undefined) out['content-length'] = headers['content-length'];
  const a = c.auth;
  if (a) {
    if ('bearer' in a) out.authorization = `Bearer ${a.bearer}`;
    else if ('basic' in a) out.authorization = `Basic ${Buffer.from(`${a.basic.user}:${a.basic.password}`, 'utf8').toString('base64')}`;
    else out[a.header.name.toLowerCase()] = a.header.value;
  }
  return out;
}

/** The response headers sent to the client: no hop-by-hop ones. */
export function clientHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Whether a body of this type and encoding is text the journal can keep a sample of (as masking reads it). */
export function isTextual(contentType: string | undefined, contentEncoding: string | string[] | undefined): boolean {
  if (contentEncoding && contentEncoding !== 'identity') return false;
  return bodyKind(contentType) !== 'binary';
}

/** Collects the first SAMPLE_BYTES of a body. */
export class BodySample {
  private chunks: Buffer[] = [];
  private size = 0;
  bytes = 0;
  constructor(readonly enabled: boolean) {}

  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (!this.enabled || this.size >= SAMPLE_BYTES) return;
    const part = chunk.subarray(0, SAMPLE_BYTES - this.size);
    this.chunks.push(part);
    this.size += part.length;
  }

  /** The sample as text, masked when the connection masks (JSON by key name too); undefined for binary bodies. */
  text(masker: Masker | null, counts: Counts, json = false): { text: string; truncated: boolean } | undefined {
    if (!this.enabled || this.bytes === 0) return undefined;
    const raw = Buffer.concat(this.chunks);
    let text: string;
    if (masker && json) {
      const m = new JsonStreamMasker(masker);
      text = Buffer.concat([m.push(raw), m.end()]).toString('utf8');
      mergeCounts(counts, m.counts);
    } else {
      text = raw.toString('utf8');
      if (masker) text = masker.maskText(text, counts);
    }
    // A multi-byte character cut at the end decodes as U+FFFD; dropped rather than kept.
    return { text: text.replace(/\uFFFD+$/, ''), truncated: this.bytes > this.size };
  }
}
