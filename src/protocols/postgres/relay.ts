// The relay after authentication. Client → target: messages that run something (Query,
// Execute, FunctionCall) are turned into Commands and forwarded only once the session has
// recorded them; everything else streams through in order. Target → client: bytes pass
// through untouched and unbuffered while the tracker reads them to record results.
import type { Duplex } from 'node:stream';
import type { Execution, Session } from '../../session/session.ts';
import { splitPostgres } from '../../guard/sql-postgres.ts';
import {
  FrameScanner,
  ProtocolError,
  decodeBind,
  decodeExecute,
  decodeParse,
  decodeQuery,
  decodeTarget,
  errorResponse,
  frame,
  noticeResponse,
} from './codec.ts';
import { ResponseTracker, attachExecution, newStatement, type Pending, type StatementState } from './tracker.ts';
import type { Denial } from '../../guard/types.ts';
import { unknownClassification, type Classification } from '../../guard/classification.ts';
import type { ReviewPreview } from '../../approval/reviews.ts';
import type { RowMasking } from './masking.ts';
import type { PgColumn } from './codec.ts';

/** Sent instead of a denied Query: it fails in every transaction state, as the statement would have. */
const POISON_QUERY = frame('Q', Buffer.from('gatehouse denied\0'));
/** Sent instead of a denied Parse or Execute: the target then skips to Sync, as after any error. */
const POISON_PARSE = frame('P', Buffer.from('gatehouse_denied\0gatehouse denied\0\0\0'));

/** The shared denial shape as a PostgreSQL error: 42501, reason, rule (and review), hint. */
function denialFrame(d: Denial): Buffer {
  return errorResponse({ severity: 'ERROR', code: '42501', message: d.reason, detail: `rule: ${d.rule}${d.reviewId ? `; review: ${d.reviewId}` : ''}`, hint: d.hint });
}

const MAX_STATEMENTS = 10_000;

export type PreviewFn = (text: string, params: unknown[] | undefined, c: Classification | undefined) => Promise<ReviewPreview | null>;

export interface RelayLimits {
  maxMessageBytes: number;
  sampleRows: number;
  maxValueBytes: number;
  maxParams: number;
}

interface Portal {
  statement: string;
  cols?: PgColumn[];
  text: string;
  params: unknown[];
  resultFormats: number[];
}

/** An item of the client → target stream: bytes, or a point where forwarding waits. */
type OutItem = Buffer | (() => Promise<Buffer | null>);

export class Relay {
  private readonly tracker: ResponseTracker;
  private readonly statements = new Map<string, string>();
  private readonly portals = new Map<string, Portal>();
  private readonly out: OutItem[] = [];
  private pumping = false;
  private holding = false;
  private ended = false;
  private terminating = false;
  private skipUntilSync = false;
  /** masking needs result columns, so the gateway asks for them after each Parse */
  private readonly learnColumns: boolean;
  /** result columns of prepared statements, learned from Describe answers (bounded by the statements map) */
  private readonly statementCols = new Map<string, PgColumn[]>();
  private pieces: Buffer[] = [];
  private runSrc: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;
  /** the target's socket buffer is full: read no more from the client until it drains */
  private upstreamFull = false;
  private readonly fromClient: FrameScanner;
  private readonly fromServer: FrameScanner;
  onEnd: ((reason: string) => void) | null = null;

  constructor(
    private readonly session: Session,
    private readonly client: Duplex,
    private readonly server: Duplex,
    private readonly limits: RelayLimits,
    /** what a reviewer sees of a held statement (EXPLAIN, dry run), when the connection opts in */
    private readonly preview?: PreviewFn,
    /** masking of results, errors and notifications, when the connection has it and the identity is not exempt */
    private readonly masking?: RowMasking,
    /** for an exempt identity: what the journal keeps is still masked */
    recordMasking?: RowMasking,
  ) {
    this.learnColumns = !!(masking || recordMasking);
    this.tracker = new ResponseTracker(
      { sampleRows: limits.sampleRows, maxValueBytes: limits.maxValueBytes },
      (b) => this.emit(b),
      masking,
      (name, cols) => this.statementCols.set(name, cols),
      recordMasking,
    );
    this.fromClient = new FrameScanner(
      {
        // CopyData streams through; every other client message is small enough to read whole.
        want: (type) => type !== 0x64,
        onFrame: (type, f) => this.clientMessage(type, f),
        onBytes: (b) => this.out.push(b),
        onSkipped: (_t, len) => {
          const st = this.tracker.current();
          if (st) st.bytesIn += len;
        },
      },
      limits.maxMessageBytes,
    );
    this.fromServer = new FrameScanner(
      {
        want: (type) => (type === 0x44 ? this.tracker.wantsRow() : type !== 0x64 || this.tracker.wantsCopyData),
        onFrame: (type, f) => this.tracker.onFrame(type, f),
        onBytes: (b) => this.emit(b),
        onSkipped: (type, len) => this.tracker.onSkipped(type, len),
      },
      // The target is trusted more than a client, but a bound keeps a broken one from exhausting memory.
      1 << 30,
    );
  }

  start(initialFromServer: Buffer[]): void {
    const { client, server } = this;
    for (const b of initialFromServer) this.serverData(b);
    client.on('data', (chunk: Buffer) => this.clientData(chunk));
    server.on('data', (chunk: Buffer) => this.serverData(chunk));
    client.on('drain', () => server.resume());
    server.on('drain', () => {
      this.upstreamFull = false;
      if (!this.holding && !this.pumping) client.resume();
    });
    client.on('close', () => this.end('client disconnected'));
    server.on('close', () => this.end('target closed the connection'));
    client.on('error', () => this.end('client connection error'));
    server.on('error', () => this.end('target connection error'));
    client.resume();
    server.resume();
  }

  /** Ends the session from outside (revocation, shutdown) with a FATAL error to the client. */
  kill(code: string, message: string): void {
    if (this.ended) return;
    this.client.write(errorResponse({ severity: 'FATAL', code, message }));
    this.end(message);
  }

  private serverData(chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.fromServer.push(chunk);
    } catch {
      this.end('target sent an invalid message');
      return;
    }
    this.flushRun();
    const pieces = this.pieces;
    if (pieces.length === 0) return;
    this.pieces = [];
    let ok: boolean;
    if (pieces.length === 1) ok = this.client.write(pieces[0]!);
    else {
      this.client.cork();
      ok = true;
      for (const p of pieces) ok = this.client.write(p) && ok;
      this.client.uncork();
    }
    if (!ok) this.server.pause();
  }

  /**
   * Collects what goes to the client for the chunk being processed. Consecutive views of one
   * chunk extend a run kept as offsets, so an unchanged chunk leaves as a single write and the
   * common path allocates nothing per message.
   */
  private emit(b: Buffer): void {
    if (this.runSrc !== null && b.buffer === this.runSrc.buffer && b.byteOffset === this.runEnd) {
      this.runEnd += b.length;
      return;
    }
    this.flushRun();
    this.runSrc = b;
    this.runStart = b.byteOffset;
    this.runEnd = b.byteOffset + b.length;
  }

  private flushRun(): void {
    const src = this.runSrc;
    if (src === null) return;
    this.runSrc = null;
    const len = this.runEnd - this.runStart;
    this.pieces.push(len === src.length ? src : Buffer.from(src.buffer, this.runStart, len));
  }

  /** Sends a gateway message (a notice) once every earlier request has been answered. */
  private inject(bytes: Buffer): void {
    if (this.tracker.size === 0 && this.fromServer.idle) this.client.write(bytes);
    else this.tracker.push({ kind: 'inject', bytes });
  }

  private clientData(chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.fromClient.push(chunk);
    } catch (e) {
      const message = e instanceof ProtocolError ? e.message : 'invalid message';
      this.kill(e instanceof ProtocolError ? e.sqlstate : '08P01', message);
      return;
    }
    void this.pump();
  }

  private clientMessage(type: number, f: Buffer): void {
    // After a refused Parse, the target skips every extended-protocol message until Sync;
    // the gateway does the same, so nothing of the refused pipeline is recorded as if it ran.
    if (this.skipUntilSync) {
      if (type === 0x53 /* Sync */) this.skipUntilSync = false;
      else if (type !== 0x58 /* Terminate */ && type !== 0x48 /* Flush */) return;
    }
    switch (type) {
      case 0x51 /* Q */: {
        const text = decodeQuery(f);
        const stmts = splitPostgres(text);
        const sts = stmts.map(() => newStatement(null));
        const entry: Pending & { kind: 'query' } = { kind: 'query', sts, idx: 0 };
        this.tracker.push(entry);
        // Recording starts now, in arrival order, so pipelined commands share one commit.
        const recorded = Promise.all(stmts.map((s) => this.session.run({ kind: 'sql', dialect: 'postgres', text: s.text, meta: { statementType: s.type, ...(stmts.length > 1 ? { batch: stmts.length } : {}) } })));
        // One statement denied denies the string: the server would run it as one unit.
        this.guarded(f, recorded, entry, sts, POISON_QUERY);
        return;
      }
      case 0x50 /* P Parse */: {
        const p = decodeParse(f);
        // Bounded: a client preparing endless names must not grow the gateway without limit.
        if (this.statements.size >= MAX_STATEMENTS && !this.statements.has(p.name)) {
          const oldest = this.statements.keys().next().value as string;
          this.statements.delete(oldest);
          this.statementCols.delete(oldest);
        }
        this.statements.set(p.name, p.text);
        const entry: Pending & { kind: 'parse' } = { kind: 'parse' };
        this.tracker.push(entry);
        // Checked at Parse so a forbidden statement never reaches the target's parser and
        // planner; reviews wait for Execute, where the parameters are known.
        const cmd = { kind: 'sql' as const, dialect: 'postgres' as const, text: p.text, meta: { protocol: 'extended', phase: 'parse', statement: p.name } };
        const v = this.session.check(cmd);
        if (v.classification) this.session.prepared.define(p.name, v.classification);
        if (v.action !== 'block') {
          this.out.push(f);
          if (this.learnColumns) {
            // Learn the statement's result columns, which a client executing it later (as
            // libpq's prepared statements do) may never ask for, so rows can be masked by column.
            this.tracker.push({ kind: 'describe', statement: p.name, internal: true });
            this.out.push(frame('D', Buffer.from(`S${p.name}\0`)));
          }
          return;
        }
        const recorded = this.session.run(cmd, v.classification);
        recorded.catch(() => {});
        entry.denial = denialFrame(v.denial);
        this.skipUntilSync = true;
        this.hold(async () => {
          (await recorded).finish({ status: 'denied', error: { code: '42501', message: v.denial.reason } });
          return POISON_PARSE;
        });
        return;
      }
      case 0x42 /* B Bind */: {
        const b = decodeBind(f);
        this.portals.set(b.portal, {
          statement: b.statement,
          cols: this.statementCols.get(b.statement),
          text: this.statements.get(b.statement) ?? '',
          params: this.renderParams(b.params, b.formats),
          resultFormats: b.resultFormats,
        });
        this.tracker.push({ kind: 'bind' });
        break;
      }
      case 0x44 /* D Describe */: {
        const t = decodeTarget(f);
        this.tracker.push(t.kind === 'P' ? { kind: 'describe', portal: true } : { kind: 'describe', statement: t.name });
        break;
      }
      case 0x45 /* E Execute */: {
        const { portal } = decodeExecute(f);
        const p = this.portals.get(portal);
        const st = newStatement(null, p?.resultFormats ?? [], p?.cols);
        const entry: Pending & { kind: 'execute' } = { kind: 'execute', st };
        this.tracker.push(entry);
        // Judged by what was prepared (checked again: the policy or the grant may have changed).
        const prepared = p ? this.session.prepared.lookup(p.statement) : undefined;
        const recorded = this.session.run({ kind: 'sql', dialect: 'postgres', text: p?.text ?? '', params: p?.params, meta: { protocol: 'extended', portal } }, prepared);
        this.guarded(f, recorded.then((e) => [e]), entry, [st], POISON_PARSE);
        return;
      }
      case 0x43 /* C Close */: {
        const t = decodeTarget(f);
        if (t.kind === 'S') {
          this.statements.delete(t.name);
          this.statementCols.delete(t.name);
          this.session.prepared.remove(t.name);
        }
        else this.portals.delete(t.name);
        this.tracker.push({ kind: 'close' });
        break;
      }
      case 0x53 /* S Sync */:
        this.tracker.push({ kind: 'sync' });
        break;
      case 0x46 /* F FunctionCall */: {
        const st = newStatement(null);
        const entry: Pending & { kind: 'query' } = { kind: 'query', sts: [st], idx: 0 };
        this.tracker.push(entry);
        const oid = f.length >= 9 ? f.readInt32BE(5) : 0;
        // A call by function oid (large objects use it) cannot be classified: fail closed.
        const unknown = unknownClassification(`fastpath call of function oid ${oid}`);
        const recorded = this.session.run({ kind: 'sql', dialect: 'postgres', text: `-- fastpath function call (oid ${oid})`, meta: { protocol: 'function-call' } }, unknown);
        this.guarded(f, recorded.then((e) => [e]), entry, [st], POISON_QUERY);
        return;
      }
      case 0x58 /* X Terminate */:
        this.out.push(f);
        this.terminating = true;
        return;
      case 0x48 /* H Flush */:
      case 0x63 /* c CopyDone */:
      case 0x66 /* f CopyFail */:
        break;
      default:
        throw new ProtocolError(`unexpected message type "${String.fromCharCode(type)}" from client`);
    }
    this.out.push(f);
  }

  /** Queues a point in the stream where forwarding waits for `decide`: the bytes it returns go on. */
  private hold(decide: () => Promise<Buffer | null>): void {
    this.out.push(decide);
  }

  /**
   * Forwards `f` once its commands are recorded and allowed. A denied one goes to the target as
   * `poison`, whose error the tracker then replaces with the denial.
   */
  private guarded(f: Buffer, recorded: Promise<Execution[]>, entry: Pending & { denial?: Buffer }, sts: StatementState[], poison: Buffer): void {
    // The pump awaits it later; until then a rejection must not count as unhandled.
    recorded.catch(() => {});
    const copy = Buffer.from(f);
    this.hold(async () => {
      const execs = await recorded;
      execs.forEach((e, i) => attachExecution(sts[i]!, e));
      const denial = await this.verdicts(execs, entry, sts);
      if (!denial) return copy;
      entry.denial = denialFrame(denial);
      return poison;
    });
  }

  /**
   * Applies the verdicts of recorded commands: null when all may run; otherwise the denial to
   * send. Held commands wait here for their reviews; the client is told at once.
   */
  private async verdicts(execs: Execution[], entry: Pending, sts: StatementState[]): Promise<Denial | null> {
    const blocked = execs.findIndex((e) => e.verdict.action === 'block');
    if (blocked >= 0) {
      sts[blocked]!.denied = true;
      return (execs[blocked]!.verdict as { denial: Denial }).denial;
    }
    const held = execs.map((e, i) => [e, i] as const).filter(([e]) => e.verdict.action === 'review');
    if (held.length === 0) return null;
    const outcomes = await Promise.all(
      held.map(([e]) =>
        this.session.hold(e, {
          onHeld: (notice) => {
            const b = noticeResponse({ severity: 'NOTICE', code: '01000', message: notice });
            if (this.tracker.injectBefore(entry, b)) this.client.write(b);
          },
          preview: this.preview ? () => this.preview!(e.command.text, e.command.params, e.verdict.classification) : undefined,
        }),
      ),
    );
    const denied = outcomes.findIndex((o) => o.action === 'deny');
    if (denied < 0) return null;
    sts[held[denied]![1]]!.denied = true;
    return (outcomes[denied] as { denial: Denial }).denial;
  }

  /**
   * Writes queued items in order. Every hold queued so far is awaited first (they were
   * recorded together, so usually in one commit), then the whole run goes out in one write:
   * Parse/Bind/Describe travel with their Execute and the target answers them in one packet.
   * The client's stream stays paused while a record is pending.
   */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.out.length && !this.ended) {
        const items = this.out.splice(0, this.out.length);
        const bufs: Buffer[] = [];
        for (const item of items) {
          if (Buffer.isBuffer(item)) {
            bufs.push(item);
            continue;
          }
          if (!this.holding) {
            this.holding = true;
            this.client.pause();
          }
          let bytes: Buffer | null;
          try {
            bytes = await item();
          } catch (e) {
            // The journal could not record the command: refuse it and end the session,
            // because nothing after it could be recorded either (fail closed).
            this.kill('58030', `statement refused: the gateway could not record it (${(e as Error).message}); retry when the journal store is back`);
            return;
          }
          if (this.ended) return;
          if (bytes) bufs.push(bytes);
        }
        let ok = true;
        if (bufs.length === 1) ok = this.server.write(bufs[0]!);
        else if (bufs.length > 1) {
          this.server.cork();
          for (const b of bufs) ok = this.server.write(b) && ok;
          this.server.uncork();
        }
        if (!ok) this.upstreamFull = true;
      }
    } finally {
      this.pumping = false;
      this.holding = false;
      if (this.terminating && this.out.length === 0) this.end('client terminated');
      else if (!this.ended && !this.upstreamFull) this.client.resume();
      else if (this.upstreamFull) this.client.pause();
    }
  }

  private renderParams(params: (Buffer | null)[], formats: number[]): unknown[] {
    const max = this.limits.maxValueBytes;
    const n = Math.min(params.length, this.limits.maxParams);
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const v = params[i]!;
      if (v === null) {
        out.push(null);
        continue;
      }
      const binary = (formats.length === 1 ? formats[0] : formats[i]) === 1;
      if (binary) out.push('\\x' + v.subarray(0, max >> 1).toString('hex') + (v.length > max >> 1 ? '…' : ''));
      else out.push(v.length > max ? v.toString('utf8', 0, max) + '…' : v.toString('utf8'));
    }
    if (params.length > n) out.push(`… ${params.length - n} more`);
    return out;
  }

  private end(reason: string): void {
    const first = !this.ended;
    this.ended = true;
    this.tracker.abandon('unknown');
    if (!this.client.destroyed) this.client.end();
    if (!this.server.destroyed) this.server.end();
    setTimeout(() => {
      this.client.destroy();
      this.server.destroy();
    }, 1000).unref();
    if (first) this.onEnd?.(reason);
  }
}
