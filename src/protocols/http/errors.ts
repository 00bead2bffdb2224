// Gatehouse's refusals in the dialect of the client that gets them: a JSON body for plain HTTP,
// a Kubernetes `Status` (kubectl prints its message), an OpenAI-style error (SDKs raise it).
// One shape in, one place per dialect, so every refusal of every path reads the same.
import type http from 'node:http';
import type { HttpConnection } from '../../config/schema.ts';
import type { Denial } from '../../guard/types.ts';
import { denialMessage, denialStatus } from './kube-status.ts';

export interface Refusal {
  /** machine-readable, e.g. unauthorized, blocked, review_pending */
  error: string;
  reason: string;
  hint?: string;
  rule?: string;
  reviewId?: string;
}

export type Dialect = 'json' | 'kubernetes' | 'openai';

export function dialectOf(c: HttpConnection | undefined): Dialect {
  return c?.type === 'kubernetes' ? 'kubernetes' : c?.type === 'llm' ? 'openai' : 'json';
}

export function denialRefusal(d: Denial): Refusal {
  return { error: d.code, reason: d.reason, rule: d.rule, hint: d.hint, ...(d.reviewId ? { reviewId: d.reviewId } : {}) };
}

const K8S_REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  413: 'RequestEntityTooLarge',
  429: 'TooManyRequests',
  502: 'InternalError',
  503: 'ServiceUnavailable',
};

/** The refusal as a body in the dialect; the message always names Gatehouse, so no one blames the upstream. */
export function refusalBody(dialect: Dialect, status: number, r: Refusal): Record<string, unknown> {
  const d: Denial = { code: r.error, rule: r.rule ?? '', reason: r.reason, hint: r.hint ?? '', reviewId: r.reviewId };
  if (dialect === 'kubernetes') {
    const st = denialStatus(d);
    return status === 403 ? st : { ...st, code: status, reason: K8S_REASONS[status] ?? 'InternalError' };
  }
  if (dialect === 'openai') {
    const type = status === 401 ? 'authentication_error' : status === 403 ? 'permission_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'api_error' : 'invalid_request_error';
    return { error: { message: denialMessage(d), type, code: r.error, param: null, ...(r.rule ? { rule: r.rule } : {}), ...(r.reviewId ? { reviewId: r.reviewId } : {}) } };
  }
  return { ...r };
}

export function sendRefusal(res: http.ServerResponse, dialect: Dialect, status: number, r: Refusal, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(refusalBody(dialect, status, r)) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}
