// Per-statement human approval. A held statement becomes a review; approvers decide it
// through the gateway's API; an approval is bound to the exact statement (binding.ts) and is
// consumed by the one execution it allows. The gateway process is the only writer, so
// decisions are serialized here per review and waiters are woken in-process.
import { createHmac, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ReviewTerms } from '../guard/policy.ts';
import type { Identity } from '../identity/keys.ts';
import type { Journal } from '../journal/journal.ts';
import type { IdentityRef } from '../journal/types.ts';
import type { Store } from '../store/db.ts';
import type { ReviewTable } from '../store/schema.ts';
import { bindingHash } from './binding.ts';

export interface ReviewPreview {
  plan?: string;
  estimatedRows?: number;
  affectedRows?: number;
  error?: string;
}

export interface ReviewRequest {
  sessionId: string;
  identity: { id: string; name: string; kind: 'agent' | 'human' };
  connection: string;
  text: string;
  params?: unknown[];
  classification?: unknown;
  rule: string;
  reason: string;
  terms: ReviewTerms;
  /** what the statement would do (EXPLAIN, a dry run); bounded in time, never delays the request */
  preview?: () => Promise<ReviewPreview | null>;
}

export type ReviewStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'consumed';

export interface ReviewDecision {
  by: string;
  byId: string;
  decision: 'approve' | 'deny';
  comment: string | null;
  at: string;
}

export interface Review {
  id: string;
  status: ReviewStatus;
  bindingHash: string;
  sessionId: string;
  identityId: string;
  identityName: string;
  identityKind: 'agent' | 'human';
  connection: string;
  text: string;
  params: unknown[] | null;
  rule: string;
  reason: string;
  approvers: string[];
  minApprovals: number;
  mode: 'wait' | 'defer';
  decisions: ReviewDecision[];
  createdAt: string;
  expiresAt: string;
  decidedAt: string | null;
  preview: ReviewPreview | null;
}

export const REVIEW_STATUSES: readonly ReviewStatus[] = ['pending', 'approved', 'denied', 'expired', 'consumed'];

export type ReviewErrorCode = 'self_approval' | 'not_approver' | 'expired' | 'not_pending' | 'not_found' | 'already_decided_by_you';

/** A refused decision. `message` says what happened, `hint` what the user can do about it. */
export class ReviewError extends Error {
  override name = 'ReviewError';
  constructor(
    readonly code: ReviewErrorCode,
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

export interface ReviewServiceOptions {
  /** base URL of the approval UI/API as reviewers reach it; approval links are `${publicUrl}/approvals/${id}` */
  publicUrl?: string;
  /** POSTs {type:'review.requested', review} signed with HMAC-SHA256 of the body */
  webhook?: { url: string; secret: string };
  /** webhook failures and other background errors; never thrown into the request path */
  onError?: (err: Error) => void;
  /** bound on a preview (default 5000 ms) */
  previewTimeoutMs?: number;
  /** bound on one webhook POST (default 5000 ms) */
  webhookTimeoutMs?: number;
}

/** The journal's name for the gateway itself, as decider of expiries. */
const GATEHOUSE = 'gatehouse';
const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

function newReviewId(): string {
  // 256 is a multiple of 32, so masking keeps every character equally likely.
  const bytes = randomBytes(10);
  let s = 'r-';
  for (const b of bytes) s += BASE32[b & 31];
  return s;
}

/** JSON for the store: bigints as strings (the journal's canonical form does the same). */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function groupList(groups: readonly string[]): string {
  return groups.length === 1 ? `group "${groups[0]}"` : `one of the groups ${groups.map((g) => `"${g}"`).join(', ')}`;
}

export class ReviewService {
  onError: (err: Error) => void;
  private readonly events = new EventEmitter();
  /** per-review chains, so two decisions on one review never interleave */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** previews and webhook posts still running */
  private readonly background = new Set<Promise<unknown>>();
  private readonly publicUrl: string | null;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly journal: Journal,
    private readonly opts: ReviewServiceOptions = {},
  ) {
    this.publicUrl = opts.publicUrl ? opts.publicUrl.replace(/\/+$/, '') : null;
    this.onError = opts.onError ?? ((err) => console.error(`gatehouse reviews: ${err.message}`));
    // Every held statement of a busy gateway may wait on its review.
    this.events.setMaxListeners(0);
  }

  /** Records a held statement as a pending review and tells the approvers. */
  async request(req: ReviewRequest): Promise<Review> {
    const now = Date.now();
    const terms = req.terms;
    const review: Review = {
      id: newReviewId(),
      status: 'pending',
      bindingHash: bindingHash({ identityId: req.identity.id, connection: req.connection, text: req.text, params: req.params }),
      sessionId: req.sessionId,
      identityId: req.identity.id,
      identityName: req.identity.name,
      identityKind: req.identity.kind,
      connection: req.connection,
      text: req.text,
      params: req.params ? [...req.params] : null,
      rule: req.rule,
      reason: req.reason,
      approvers: [...terms.approvers],
      minApprovals: Math.max(1, terms.minApprovals),
      mode: terms.mode,
      decisions: [],
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + terms.expiresInMs).toISOString(),
      decidedAt: null,
      preview: null,
    };
    // Journal first: a review that is not on record must not exist.
    await this.journal.append({
      session: review.sessionId,
      type: 'review.requested',
      identity: requesterRef(review),
      connection: review.connection,
      data: {
        id: review.id,
        text: review.text,
        params: review.params,
        rule: review.rule,
        reason: review.reason,
        approvers: review.approvers,
        minApprovals: review.minApprovals,
        expiresAt: review.expiresAt,
        mode: review.mode,
      },
    });
    await this.store.db.insertInto('reviews').values(toRow(review)).execute();
    if (req.preview) this.track(this.runPreview(review.id, req.preview));
    if (this.opts.webhook) this.track(this.postWebhook(this.opts.webhook, review));
    return review;
  }

  approvalUrl(id: string): string | null {
    return this.publicUrl ? `${this.publicUrl}/approvals/${encodeURIComponent(id)}` : null;
  }

  async get(id: string): Promise<Review | null> {
    const row = await this.store.db.selectFrom('reviews').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? fromRow(row) : null;
  }

  /** Newest first; `status` filters, `limit` defaults to 100. */
  async list(opts: { status?: string; limit?: number } = {}): Promise<Review[]> {
    let q = this.store.db.selectFrom('reviews').selectAll();
    if (opts.status) q = q.where('status', '=', opts.status as ReviewStatus);
    const limit = Math.max(1, Math.min(1000, Math.floor(opts.limit ?? 100)));
    const rows = await q.orderBy('created_at', 'desc').orderBy('id').limit(limit).execute();
    return rows.map(fromRow);
  }

  /**
   * Resolves when the review is decided (approved, denied or expired) or after `timeoutMs`,
   * with the review as it stands then.
   */
  async waitForDecision(id: string, timeoutMs: number): Promise<Review> {
    let onDecided: ((r: Review) => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    // Listening before reading, so a decision between the read and the wait is not missed.
    const decided = new Promise<Review | null>((resolve) => {
      onDecided = (r) => resolve(r);
      this.events.once(id, onDecided);
      timer = setTimeout(() => resolve(null), Math.max(0, timeoutMs));
    });
    try {
      const current = await this.get(id);
      if (!current) throw new ReviewError('not_found', `no review "${id}"`, 'see `gatehouse approvals list`');
      if (current.status !== 'pending') return current;
      const r = await decided;
      return r ?? (await this.get(id)) ?? current;
    } finally {
      clearTimeout(timer);
      if (onDecided) this.events.removeListener(id, onDecided);
    }
  }

  /** An approved, unexpired, unconsumed review for this binding, if any. */
  async findUsableApproval(hash: string): Promise<Review | null> {
    const row = await this.store.db
      .selectFrom('reviews')
      .selectAll()
      .where('binding_hash', '=', hash)
      .where('status', '=', 'approved')
      .where('expires_at', '>', new Date().toISOString())
      .orderBy('created_at')
      .limit(1)
      .executeTakeFirst();
    return row ? fromRow(row) : null;
  }

  /** Marks an approval used. True for exactly one caller; false if it was not (or no longer) usable. */
  async consume(id: string): Promise<boolean> {
    const r = await this.store.db
      .updateTable('reviews')
      .set({ status: 'consumed' })
      .where('id', '=', id)
      .where('status', '=', 'approved')
      .where('expires_at', '>', new Date().toISOString())
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** One approver's decision. Throws ReviewError when the approver may not make it. */
  decide(id: string, approver: Identity, decision: 'approve' | 'deny', comment?: string): Promise<Review> {
    return this.locked(id, () => this.decideLocked(id, approver, decision, comment?.trim() ? comment.trim() : null));
  }

  private async decideLocked(id: string, approver: Identity, decision: 'approve' | 'deny', comment: string | null): Promise<Review> {
    const review = await this.get(id);
    if (!review) throw new ReviewError('not_found', `no review "${id}"`, 'check the ID; see `gatehouse approvals list`');
    if (approver.id === review.identityId) {
      throw new ReviewError(
        'self_approval',
        `review ${id} is for a statement of "${review.identityName}", which is you: no one may decide their own statement`,
        `ask a member of ${groupList(review.approvers)} other than "${approver.name}" to decide it`,
      );
    }
    if (approver.revokedAt || (approver.expiresAt && Date.parse(approver.expiresAt) <= Date.now())) {
      throw new ReviewError('not_approver', `key "${approver.name}" is ${approver.revokedAt ? 'revoked' : 'expired'}`, 'use an active key');
    }
    if (!review.approvers.some((g) => approver.groups.includes(g))) {
      throw new ReviewError(
        'not_approver',
        `"${approver.name}" may not decide review ${id}: it needs a member of ${groupList(review.approvers)} (rule "${review.rule}")`,
        `ask a member of ${groupList(review.approvers)}, or an administrator to add "${approver.name}" to one`,
      );
    }
    if (review.status === 'expired') throw expiredError(review);
    if (review.status !== 'pending') {
      throw new ReviewError(
        'not_pending',
        `review ${id} is already ${review.status}${review.decidedAt ? ` (since ${review.decidedAt})` : ''}`,
        review.status === 'consumed' || review.status === 'approved'
          ? 'nothing to do: the statement was approved'
          : 'the statement has to be run again to be reviewed again',
      );
    }
    if (Date.now() > Date.parse(review.expiresAt)) {
      await this.expireLocked(review, 'expired before a decision');
      throw expiredError(review);
    }
    if (review.decisions.some((d) => d.byId === approver.id)) {
      throw new ReviewError(
        'already_decided_by_you',
        `"${approver.name}" has already decided review ${id}`,
        review.minApprovals > 1 ? `it needs ${review.minApprovals} different approvers; ask another member of ${groupList(review.approvers)}` : 'nothing more to do',
      );
    }

    const at = new Date().toISOString();
    const decisions = [...review.decisions, { by: approver.name, byId: approver.id, decision, comment, at }];
    const approvals = new Set(decisions.filter((d) => d.decision === 'approve').map((d) => d.byId)).size;
    const status: ReviewStatus = decision === 'deny' ? 'denied' : approvals >= review.minApprovals ? 'approved' : 'pending';
    const decidedAt = status === 'pending' ? null : at;

    // Journal first, as for commands: the record leads the effect. The event belongs to
    // the requester's session timeline; the approver is named in the data.
    await this.journal.append({
      session: review.sessionId,
      type: 'review.decided',
      identity: requesterRef(review),
      connection: review.connection,
      data: { id, decision, by: approver.name, byId: approver.id, comment, status, approvals, minApprovals: review.minApprovals },
    });
    const r = await this.store.db
      .updateTable('reviews')
      .set({ status, decisions: toJson(decisions), decided_at: decidedAt })
      .where('id', '=', id)
      .where('status', '=', 'pending')
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) {
      // Only another writer on the same store could get here: the gateway serializes its own.
      throw new ReviewError('not_pending', `review ${id} changed while it was being decided`, 'look at it again with `gatehouse approvals show`');
    }
    const updated: Review = { ...review, status, decisions, decidedAt };
    if (status !== 'pending') this.events.emit(id, updated);
    return updated;
  }

  /**
   * Expires pending reviews that can no longer be decided usefully: those past expiresAt,
   * and those in mode "wait" whose session is not among `liveSessionIds` (nobody is waiting
   * on them any more; at startup, with an empty set, that is every one of the previous
   * process). A "defer" review outlives its session: its client was told to come back, most
   * likely on a new connection, so it lives until expiresAt. Returns how many were expired.
   */
  async expireStale(liveSessionIds: Set<string>): Promise<number> {
    const now = new Date().toISOString();
    const rows = await this.store.db.selectFrom('reviews').selectAll().where('status', '=', 'pending').execute();
    let n = 0;
    for (const row of rows) {
      const pastExpiry = row.expires_at < now;
      const orphaned = row.mode === 'wait' && !liveSessionIds.has(row.session_id);
      if (!pastExpiry && !orphaned) continue;
      const done = await this.locked(row.id, async () => {
        const review = await this.get(row.id);
        if (!review || review.status !== 'pending') return false;
        return this.expireLocked(review, pastExpiry ? 'expired before a decision' : 'session ended before a decision');
      });
      if (done) n++;
    }
    return n;
  }

  private async expireLocked(review: Review, why: string): Promise<boolean> {
    const at = new Date().toISOString();
    await this.journal.append({
      session: review.sessionId,
      type: 'review.decided',
      identity: requesterRef(review),
      connection: review.connection,
      data: { id: review.id, decision: 'expired', by: GATEHOUSE, comment: why, status: 'expired' },
    });
    const r = await this.store.db
      .updateTable('reviews')
      .set({ status: 'expired', decided_at: at })
      .where('id', '=', review.id)
      .where('status', '=', 'pending')
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    this.events.emit(review.id, { ...review, status: 'expired', decidedAt: at });
    return true;
  }

  /** Waits for running previews and webhook posts. */
  async idle(): Promise<void> {
    while (this.background.size) await Promise.allSettled([...this.background]);
  }

  /** Stops starting background work and waits for what runs (each piece is bounded). */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle();
  }

  private track(p: Promise<unknown>): void {
    const t = p.catch((e) => this.onError(e instanceof Error ? e : new Error(String(e)))).finally(() => this.background.delete(t));
    this.background.add(t);
  }

  private locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return run;
  }

  private async runPreview(id: string, preview: () => Promise<ReviewPreview | null>): Promise<void> {
    const ms = this.opts.previewTimeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    let result: ReviewPreview | null;
    try {
      result = await Promise.race([
        Promise.resolve().then(preview),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`preview did not finish within ${ms / 1000} s`)), ms);
        }),
      ]);
    } catch (e) {
      result = { error: errorMessage(e) };
    } finally {
      clearTimeout(timer);
    }
    if (!result || this.closed) return;
    await this.store.db.updateTable('reviews').set({ preview: toJson(result) }).where('id', '=', id).execute();
  }

  private async postWebhook(hook: { url: string; secret: string }, review: Review): Promise<void> {
    const url = this.approvalUrl(review.id);
    const body = toJson(url ? { type: 'review.requested', review, url } : { type: 'review.requested', review });
    const signature = 'sha256=' + createHmac('sha256', hook.secret).update(body).digest('hex');
    let res: Response;
    try {
      res = await fetch(hook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-gatehouse-signature': signature },
        body,
        signal: AbortSignal.timeout(this.opts.webhookTimeoutMs ?? 5000),
      });
    } catch (e) {
      const cause = (e as { cause?: unknown }).cause;
      throw new Error(`webhook for review ${review.id} to ${safeUrl(hook.url)} failed: ${errorMessage(e)}${cause ? ` (${errorMessage(cause)})` : ''}`);
    }
    await res.body?.cancel().catch(() => {});
    if (!res.ok) throw new Error(`webhook for review ${review.id} to ${safeUrl(hook.url)} answered HTTP ${res.status}`);
  }
}

function expiredError(review: Review): ReviewError {
  return new ReviewError(
    'expired',
    `review ${review.id} expired at ${review.expiresAt} without a decision`,
    'the statement has to be run again to be reviewed again',
  );
}

/** A webhook URL may carry a token in its path or query; logs get the origin only. */
function safeUrl(u: string): string {
  try {
    return new URL(u).origin;
  } catch {
    return 'the configured URL';
  }
}

function requesterRef(r: Review): IdentityRef {
  return { id: r.identityId, kind: r.identityKind, name: r.identityName };
}

function toRow(r: Review): ReviewTable {
  return {
    id: r.id,
    status: r.status,
    binding_hash: r.bindingHash,
    session_id: r.sessionId,
    identity_id: r.identityId,
    identity_name: r.identityName,
    identity_kind: r.identityKind,
    connection: r.connection,
    text: r.text,
    params: r.params ? toJson(r.params) : null,
    rule: r.rule,
    reason: r.reason,
    approvers: toJson(r.approvers),
    min_approvals: r.minApprovals,
    mode: r.mode,
    decisions: toJson(r.decisions),
    preview: r.preview ? toJson(r.preview) : null,
    created_at: r.createdAt,
    expires_at: r.expiresAt,
    decided_at: r.decidedAt,
  };
}

function fromRow(row: ReviewTable): Review {
  return {
    id: row.id,
    status: row.status,
    bindingHash: row.binding_hash,
    sessionId: row.session_id,
    identityId: row.identity_id,
    identityName: row.identity_name,
    identityKind: row.identity_kind,
    connection: row.connection,
    text: row.text,
    params: row.params ? JSON.parse(row.params) : null,
    rule: row.rule,
    reason: row.reason,
    approvers: JSON.parse(row.approvers),
    minApprovals: Number(row.min_approvals),
    mode: row.mode,
    decisions: JSON.parse(row.decisions),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    decidedAt: row.decided_at,
    preview: row.preview ? JSON.parse(row.preview) : null,
  };
}
