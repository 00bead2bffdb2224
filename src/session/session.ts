// The pipeline every adapter drives: open → run(command) → finish(result) → close.
// Adapters never talk to the guard or the journal directly.
import { randomUUID } from 'node:crypto';
import type { Guard } from '../guard/guard.ts';
import type { Command, Verdict } from '../guard/types.ts';
import type { Identity } from '../identity/keys.ts';
import type { Journal } from '../journal/journal.ts';
import type { IdentityRef, NewEvent } from '../journal/types.ts';
import type { Store } from '../store/db.ts';

export interface SessionDeps {
  store: Store;
  journal: Journal;
  guard: Guard;
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
  /** bytes moved, e.g. COPY volume */
  bytesIn?: number;
  bytesOut?: number;
  meta?: Record<string, unknown>;
}

export class Execution {
  private readonly started = process.hrtime.bigint();
  private done = false;
  constructor(private readonly session: Session, readonly seq: number, readonly verdict: Verdict) {}

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
  async run(command: Command): Promise<Execution> {
    const verdict = this.deps.guard.check({ identity: this.identity, connection: this.connection }, command);
    const ev = await this.deps.journal.append(
      this.event('command', {
        kind: command.kind,
        dialect: command.dialect,
        text: command.text,
        params: command.params,
        ...command.meta,
        verdict: verdict.action === 'allow' ? { action: 'allow', rule: verdict.rule } : { action: verdict.action, rule: verdict.rule, reason: verdict.denial.reason },
      }),
    );
    return new Execution(this, ev.seq, verdict);
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
