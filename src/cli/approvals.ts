// `gatehouse approvals`: list, inspect and decide held statements. Unlike the admin commands
// this talks to the running gateway's HTTP API (listen.api): the gateway is the journal's
// only writer and wakes the session waiting on a decision, so decisions must go through it.
import type { Review } from '../approval/reviews.ts';
import { UsageError, type CliContext } from './main.ts';

const STATUSES = ['pending', 'approved', 'denied', 'expired', 'consumed'];

export async function approvalsCommand(ctx: CliContext): Promise<number> {
  const [sub, id, ...rest] = ctx.positionals;
  const v = ctx.values;
  if (rest.length) throw new UsageError(`unexpected argument "${rest[0]}"`);
  const api = new GatewayApi(ctx);
  switch (sub) {
    case 'list': {
      const status = v.status as string | undefined;
      if (status !== undefined && !STATUSES.includes(status)) throw new UsageError(`--status must be one of ${STATUSES.join(', ')}, not "${status}"`);
      const query = new URLSearchParams();
      if (status) query.set('status', status);
      if (v.limit !== undefined) {
        const limit = Number(v.limit);
        if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive integer');
        query.set('limit', String(limit));
      }
      const q = query.toString();
      const reviews = (await api.call('GET', `/api/approvals${q ? `?${q}` : ''}`)) as Review[];
      if (ctx.json) ctx.out(JSON.stringify(reviews));
      else if (reviews.length === 0) ctx.out(status ? `no ${status} reviews` : 'no reviews');
      else {
        ctx.out(row(['ID', 'STATUS', 'IDENTITY', 'CONNECTION', 'APPROVALS', 'EXPIRES', 'STATEMENT']));
        for (const r of reviews) {
          ctx.out(row([r.id, r.status, r.identityName, r.connection, `${approvalCount(r)}/${r.minApprovals}`, r.expiresAt.slice(0, 19), oneLine(r.text, 60)]));
        }
      }
      return 0;
    }
    case 'show': {
      if (!id) throw new UsageError('approvals show needs a review ID');
      const r = (await api.call('GET', `/api/approvals/${encodeURIComponent(id)}`)) as Review & { url?: string | null };
      if (ctx.json) ctx.out(JSON.stringify(r));
      else for (const line of renderReview(r)) ctx.out(line);
      return 0;
    }
    case 'approve': {
      if (!id) throw new UsageError('approvals approve needs a review ID');
      if (v.reason !== undefined) throw new UsageError('approvals approve takes --comment, not --reason');
      const body = typeof v.comment === 'string' ? { comment: v.comment } : {};
      const r = (await api.call('POST', `/api/approvals/${encodeURIComponent(id)}/approve`, body)) as Review;
      if (ctx.json) ctx.out(JSON.stringify(r));
      else if (r.status === 'approved') ctx.out(`approved ${r.id}: the statement of "${r.identityName}" may now run once`);
      else ctx.out(`recorded your approval of ${r.id}: ${approvalCount(r)} of ${r.minApprovals} approvals so far; still ${r.status}`);
      return 0;
    }
    case 'deny': {
      if (!id) throw new UsageError('approvals deny needs a review ID');
      const reason = typeof v.reason === 'string' ? v.reason.trim() : '';
      if (!reason) throw new UsageError('approvals deny needs --reason TEXT (the requester is told why)');
      const r = (await api.call('POST', `/api/approvals/${encodeURIComponent(id)}/deny`, { reason })) as Review;
      if (ctx.json) ctx.out(JSON.stringify(r));
      else ctx.out(`denied ${r.id}: "${r.identityName}" is told: ${reason}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown approvals subcommand "${sub ?? ''}"; use list, show, approve or deny`);
  }
}

/** A refusal from the gateway, printed as it explains itself. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

class GatewayApi {
  private readonly base: string;
  private readonly key: string | undefined;

  constructor(ctx: CliContext) {
    const listen = ctx.config.listen.api;
    if (!listen) throw new Error('listen.api is not set in the config: `gatehouse approvals` talks to the running gateway through its API');
    this.base = `http://${connectAddress(listen)}`;
    const key = (ctx.values.key as string | undefined) ?? process.env.GATEHOUSE_KEY;
    this.key = key?.trim() || undefined;
  }

  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    if (!this.key) throw new UsageError('approvals needs your key: pass --key NAME.KEY or set GATEHOUSE_KEY');
    if (!/^[^.\s]+\..+$/.test(this.key)) throw new UsageError('--key must be NAME.KEY: the key name, a dot, then the key as `keys create` printed it');
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: { authorization: `Bearer ${this.key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(15_000),
      });
    } catch (e) {
      throw new Error(`cannot reach the gateway API at ${this.base} (${networkReason(e)}); is \`gatehouse serve\` running with this config? (listen.api)`);
    }
    const text = await res.text();
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (res.ok) return data;
    const d = (data ?? {}) as { code?: string; reason?: string; hint?: string };
    const explain = [d.reason, d.hint].filter(Boolean).join('; ');
    switch (res.status) {
      case 401:
        throw new ApiError(401, `the gateway refused the key (${d.reason ?? 'unauthorized'}): pass a valid, unrevoked key with --key NAME.KEY or GATEHOUSE_KEY`);
      case 403:
        throw new ApiError(403, `not allowed: ${explain || 'forbidden'}`);
      case 404:
        throw new ApiError(404, explain || `not found at ${this.base}${path}: is this a Gatehouse gateway with approvals?`);
      default:
        throw new ApiError(res.status, `${explain || `the gateway answered HTTP ${res.status}`}${d.code ? ` [${d.code}]` : ''}`);
    }
  }
}

/** A listen address is where the gateway binds; the CLI connects to it (a wildcard means this host). */
function connectAddress(listen: string): string {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i);
  const port = listen.slice(i + 1);
  if (host === '0.0.0.0') return `127.0.0.1:${port}`;
  if (host === '[::]' || host === '::') return `[::1]:${port}`;
  return listen;
}

function networkReason(e: unknown): string {
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError') return 'no answer within 15 s';
  const code = err.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND') return 'host not found';
  return err.cause?.message ?? err.message ?? String(e);
}

function approvalCount(r: Review): number {
  return new Set(r.decisions.filter((d) => d.decision === 'approve').map((d) => d.byId)).size;
}

function renderReview(r: Review & { url?: string | null }): string[] {
  const lines: string[] = [];
  lines.push(`review ${r.id}  ${r.status.toUpperCase()}`);
  lines.push('  statement:');
  for (const l of r.text.trim().split('\n')) lines.push(`    ${l}`);
  if (r.params?.length) lines.push(`  params: ${JSON.stringify(r.params)}`);
  lines.push(`  asked by ${r.identityName} (${r.identityKind}) on connection ${r.connection} at ${r.createdAt}  session ${r.sessionId}`);
  lines.push(`  rule: ${r.rule}`);
  lines.push(`  reason: ${r.reason}`);
  lines.push(`  approvers: ${r.approvers.map((g) => `group "${g}"`).join(' or ')}; ${approvalCount(r)} of ${r.minApprovals} approvals so far`);
  for (const d of r.decisions) lines.push(`    ${d.at.slice(0, 19)}  ${d.decision === 'approve' ? 'approved' : 'denied'} by ${d.by}${d.comment ? `: ${d.comment}` : ''}`);
  if (r.status === 'pending') lines.push(`  expires: ${r.expiresAt} (${untilText(r.expiresAt)})`);
  else lines.push(`  expires: ${r.expiresAt}${r.decidedAt ? `   decided: ${r.decidedAt}` : ''}`);
  const p = r.preview;
  if (p) {
    lines.push('  preview:');
    if (p.estimatedRows !== undefined) lines.push(`    estimated rows: ${p.estimatedRows}`);
    if (p.affectedRows !== undefined) lines.push(`    affected rows (dry run): ${p.affectedRows}`);
    if (p.plan) for (const l of p.plan.split('\n')) lines.push(`    | ${l}`);
    if (p.error) lines.push(`    (no preview: ${p.error})`);
  }
  if (r.url) lines.push(`  link: ${r.url}`);
  if (r.status === 'pending') lines.push(`  decide: gatehouse approvals approve ${r.id} [--comment TEXT]  |  gatehouse approvals deny ${r.id} --reason TEXT`);
  return lines;
}

function untilText(iso: string): string {
  const ms = Date.parse(iso) - Date.now();
  if (ms <= 0) return 'past: it can no longer be approved';
  const min = Math.round(ms / 60_000);
  if (min < 1) return 'in less than a minute';
  if (min < 120) return `in ${min} min`;
  return `in ${Math.round(min / 60)} h`;
}

function oneLine(s: string, max: number): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

function row(cols: string[]): string {
  const widths = [13, 9, 16, 14, 10, 20];
  return cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i] ?? 12))).join(' ');
}
