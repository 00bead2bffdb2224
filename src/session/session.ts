// The pipeline every adapter drives: open → run(command) → finish(result) → close.
// Adapters never talk to the guard or the journal directly.
import { randomUUID } from 'node:crypto';
import type { Guard } from '../guard/guard.ts';
import type { Classification } from '../guard/classification.ts';
import { PreparedStatements } from '../guard/prepared.ts';
import type { Command, Denial, Verdict } from '../guard/types.ts';
import { bindingHash } from '../approval/binding.ts';
import type { ReviewPreview, ReviewService } from '../approval/reviews.ts';
import type { Identity } from '../identity/keys.ts';
import type { Journal } from '../journal/journal.ts';
import type { IdentityRef, NewEvent } from '../journal/types.ts';
import type { Store } from '../store/db.ts';

export interface SessionDeps {
  store: Store;
  journal: Journal;
  guard: Guard;
  /** absent: review verdicts fail closed, as blocks */
  reviews?: ReviewService;
}

/** What a held command came to. */
export type HoldOutcome = { action: 'allow'; reviewId: string } | { action: 'deny'; denial: Denial };

export interface HoldOptions {
  /** called once the review exists and the command waits: the adapter tells the client */
  onHeld?: (notice: string, reviewId: string) => void;
  preview?: () => Promise<ReviewPreview | null>;
}

export interface ResultRecord {
  /** unknown: the connection ended before the target answered */
  status: 'ok' | 'error' | 'denied' | 'not_run' | 'unknown';
  tag?: string;
  rows?: number | null;
  error?: { code?: string; message?: string; detail?: string };
  columns?: string[];
  sample?: unknown[][];
  truncated?: boolean;
  /** values masked in this result, per detector or column rule */
  masked?: Record<string, number>;
  /** bytes moved, e.g. COPY volume */
  bytesIn?: number;
  bytesOut?: number;
  meta?: Record<string, unknown>;
}

export class Execution {
  private readonly started = process.hrtime.bigint();
  private done = false;
  constructor(
    private readonly session: Session,
    readonly seq: number,
    readonly verdict: Verdict,
    readonly command: Command,
  ) {}

  /** Records the result after the target answered. Never throws, never waits. */
  finish(result: ResultRecord): void {
    if (this.done) return;
    this.done = true;
    const durationMs = Number(process.hrtime.bigint() - this.started) / 1e6;
    this.session.emit('result', { command: this.seq, durationMs: Math.round(durationMs * 1000) / 1000, ...result });
  }
}

export interface OpenInput {
  identity: Identity;
  connection: string;
  protocol: string;
  clientAddr?: string;
  meta?: Record<string, unknown>;
}

export class Session {
  readonly id = randomUUID();
  readonly identityRef: IdentityRef;
  closed = false;
  /** set by the adapter: how to end the client connection from outside (revocation, shutdown) */
  onKill: ((reason: string) => void) | null = null;
  /** masks what the journal keeps of commands (text, parameters), when the session masks */
  redact: ((text: string) => string) | null = null;
  /** prepared statements of this session, so EXECUTE is judged by what it runs */
  readonly prepared = new PreparedStatements();

  private constructor(private readonly deps: SessionDeps, readonly identity: Identity, readonly connection: string, readonly protocol: string) {
    this.identityRef = { id: identity.id, kind: identity.kind, name: identity.name };
  }

  static async open(deps: SessionDeps, input: OpenInput): Promise<Session> {
    const s = new Session(deps, input.identity, input.connection, input.protocol);
    await deps.store.db
      .insertInto('sessions')
      .values({
        id: s.id,
        identity_id: input.identity.id,
        identity_name: input.identity.name,
        identity_kind: input.identity.kind,
        connection: input.connection,
        protocol: input.protocol,
        client_addr: input.clientAddr ?? null,
        started_at: new Date().toISOString(),
        ended_at: null,
        status: 'open',
        close_reason: null,
      })
      .execute();
    await deps.journal.append(s.event('session.open', { protocol: input.protocol, client: input.clientAddr ?? null, ...input.meta }));
    return s;
  }

  /**
   * Decides and records a command. The command event is durable when this resolves, so the
   * adapter may forward the command only afterwards. Rejects (JournalWriteError) when the
   * record cannot be written: the adapter must then refuse the command.
   */
  async run(command: Command, classification?: Classification): Promise<Execution> {
    let verdict = this.check(command, classification);
    // PREPARE / DEALLOCATE take effect now, synchronously, so a later statement of the same
    // string is judged against them; a denied one never reaches the server, so it is not kept.
    if (verdict.action !== 'block' && verdict.classification) this.prepared.record(verdict.classification);
    if (verdict.action === 'review') verdict = await this.useApproval(command, verdict);
    const c = verdict.classification;
    const ev = await this.deps.journal.append(
      this.event('command', {
        kind: command.kind,
        dialect: command.dialect,
        text: this.redact ? this.redact(command.text) : command.text,
        params: this.redact && command.params ? command.params.map((p) => (typeof p === 'string' ? this.redact!(p) : p)) : command.params,
        ...command.meta,
        classification: c ? { class: c.class, types: c.types, flags: c.flags.length ? c.flags : undefined, reason: c.class === 'read' ? undefined : c.reason } : undefined,
        verdict:
          verdict.action === 'allow'
            ? { action: 'allow', rule: verdict.rule, reviewId: verdict.reviewId }
            : { action: verdict.action, rule: verdict.rule, reason: verdict.denial.reason },
      }),
    );
    return new Execution(this, ev.seq, verdict, command);
  }

  /** The guard's verdict, without recording anything (e.g. at Parse, where nothing runs yet). */
  check(command: Command, classification?: Classification): Verdict {
    return this.deps.guard.check({ identity: this.identity, connection: this.connection, prepared: this.prepared }, command, classification);
  }

  /** A command that was approved earlier runs once: the approval is consumed here. */
  private async useApproval(command: Command, verdict: Verdict & { action: 'review' }): Promise<Verdict> {
    const reviews = this.deps.reviews;
    if (!reviews) return verdict;
    const hash = bindingHash({ identityId: this.identity.id, connection: this.connection, text: command.text, params: command.params });
    const approved = await reviews.findUsableApproval(hash);
    if (approved && (await reviews.consume(approved.id))) {
      return { action: 'allow', rule: verdict.rule, classification: verdict.classification, reviewId: approved.id };
    }
    return verdict;
  }

  /**
   * Holds a command whose verdict is review: creates the review, and in wait mode waits up
   * to holdFor for the decision. The command must not reach the target unless this returns allow.
   */
  async hold(exec: Execution, opts: HoldOptions = {}): Promise<HoldOutcome> {
    const v = exec.verdict;
    if (v.action === 'allow') return { action: 'allow', reviewId: v.reviewId ?? '' };
    if (v.action === 'block') return { action: 'deny', denial: v.denial };
    const reviews = this.deps.reviews;
    if (!reviews) return { action: 'deny', denial: { ...v.denial, reason: `${v.denial.reason}; approvals are not available on this gateway` } };
    const review = await reviews.request({
      sessionId: this.id,
      identity: this.identityRef,
      connection: this.connection,
      text: exec.command.text,
      params: exec.command.params,
      classification: v.classification,
      rule: v.rule,
      reason: v.denial.reason,
      terms: v.terms,
      preview: opts.preview,
    });
    const url = reviews.approvalUrl(review.id);
    const how = `approve with \`gatehouse approvals approve ${review.id}\`${url ? `, or at ${url}` : ''}`;
    const resend = `re-send the same statement once review ${review.id} is approved; it then runs once`;
    if (v.terms.mode === 'defer') {
      return { action: 'deny', denial: { ...v.denial, reviewId: review.id, reason: `${v.denial.reason}: held for approval as review ${review.id}`, hint: `${how}; ${resend}` } };
    }
    opts.onHeld?.(`held for approval: review ${review.id}, ${how}`, review.id);
    const decided = await reviews.waitForDecision(review.id, v.terms.holdForMs);
    if (decided.status === 'approved' && (await reviews.consume(review.id))) return { action: 'allow', reviewId: review.id };
    if (decided.status === 'denied') {
      const last = decided.decisions.filter((d) => d.decision === 'deny').at(-1);
      return {
        action: 'deny',
        denial: { ...v.denial, code: 'review_denied', reviewId: review.id, reason: `review ${review.id} was denied by ${last?.by ?? 'an approver'}${last?.comment ? `: ${last.comment}` : ''}`, hint: 'change the statement or ask the approver' },
      };
    }
    return {
      action: 'deny',
      denial: { ...v.denial, code: 'review_pending', reviewId: review.id, retryAfter: 0, reason: `review ${review.id} was not decided within ${Math.round(v.terms.holdForMs / 1000)} s`, hint: `${how}; ${resend}` },
    };
  }

  /**
   * Records a command the adapter refused before the guard saw it (a profile's limit, a stream
   * that cannot be masked): a `command` event with a block verdict, its text redacted like any
   * other. Nothing reached the target, so there is no result.
   */
  refused(command: Command, rule: string, reason: string): void {
    this.emit('command', { kind: command.kind, text: this.redact ? this.redact(command.text) : command.text, ...command.meta, verdict: { action: 'block', rule, reason } });
  }

  /** Records an event that needs no ordering guarantee against the target (e.g. a result). */
  emit(type: NewEvent['type'], data: Record<string, unknown>): void {
    if (this.closed && type !== 'session.close') return;
    this.deps.journal.record(this.event(type, data));
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deps.journal.record(this.event('session.close', { reason }));
    try {
      await this.deps.store.db
        .updateTable('sessions')
        .set({ status: 'closed', ended_at: new Date().toISOString(), close_reason: reason })
        .where('id', '=', this.id)
        .execute();
      await this.deps.journal.checkpoint();
    } catch {
      // The close event is already queued; a store outage is reported by the journal's onError.
    }
  }

  kill(reason: string): void {
    this.onKill?.(reason);
  }

  private event(type: NewEvent['type'], data: Record<string, unknown>): NewEvent {
    return { session: this.id, type, identity: this.identityRef, connection: this.connection, data };
  }
}
