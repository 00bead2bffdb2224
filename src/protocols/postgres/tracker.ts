// Pairs the server's responses with the client's requests, in order, so that each
// statement's result (tag, rows, error, first rows) is recorded against its command.
// It passes every response on through `out`, in order, changing only what the gateway
// decided itself: the target's error for a poisoned (denied) request becomes the denial,
// and gateway messages (notices) are injected at the right place in the stream.
import type { Execution, ResultRecord } from '../../session/session.ts';
import {
  decodeCommandComplete,
  decodeDataRow,
  decodeFields,
  decodeNotification,
  decodeRowDescription,
  encodeDataRow,
  encodeNotification,
  frame,
  rewriteFields,
  tagRows,
  type PgColumn,
} from './codec.ts';
import type { RowMasking, RowPlan } from './masking.ts';
import { hasCounts, type Counts } from '../../mask/counts.ts';

export interface StatementState {
  exec: Execution | null;
  rows: number;
  columns?: string[];
  /** per-column format: 0 text, 1 binary */
  formats: number[];
  sample: unknown[][];
  bytesIn: number;
  bytesOut: number;
  copy: boolean;
  /** COPY in binary format: its rows cannot be masked */
  copyBinary?: boolean;
  /** the result's columns, from a RowDescription or the prepared statement's */
  cols?: PgColumn[];
  plan?: RowPlan;
  /** values masked, per detector or column */
  masked: Counts;
  /** the gateway denied this statement (block, or a review that did not pass) */
  denied?: boolean;
  /** a result that arrived before the command's record was done (see attachExecution) */
  early?: ResultRecord;
}

export type Pending =
  | { kind: 'bind' | 'close' | 'sync' }
  /** denial: sent in place of the target's error for a Parse the gateway poisoned */
  | { kind: 'parse'; denial?: Buffer }
  /** bytes the gateway itself sends once everything before them has been answered */
  | { kind: 'inject'; bytes: Buffer }
  /**
   * portal: a Describe of a portal, whose RowDescription belongs to the Execute that follows.
   * statement: a Describe of that prepared statement; internal: sent by the gateway itself
   * (to learn the columns it must mask), so its answer is not passed on.
   */
  | { kind: 'describe'; portal?: boolean; statement?: string; internal?: boolean }
  | { kind: 'execute'; st: StatementState; denial?: Buffer }
  | { kind: 'query'; sts: StatementState[]; idx: number; denial?: Buffer };

export interface TrackerLimits {
  sampleRows: number;
  maxValueBytes: number;
}

export function newStatement(exec: Execution | null, formats: number[] = [], cols?: PgColumn[]): StatementState {
  return { exec, rows: 0, formats, sample: [], bytesIn: 0, bytesOut: 0, copy: false, cols, masked: {} };
}

export class ResponseTracker {
  private readonly q: Pending[] = [];
  private head = 0;
  /** transaction status from the last ReadyForQuery: I, T or E */
  txStatus: 'I' | 'T' | 'E' = 'I';

  constructor(
    private readonly limits: TrackerLimits,
    /** where responses go, in order */
    private readonly out: (b: Buffer) => void,
    private readonly masking?: RowMasking,
    /** learns a prepared statement's result columns (from a Describe of it) */
    private readonly onStatementColumns?: (name: string, cols: PgColumn[]) => void,
    /**
     * masks what is recorded when the client sees values unmasked (an exempt group): the
     * journal keeps only masked values, whoever looked
     */
    private readonly recordMasking?: RowMasking,
  ) {}

  /** counts of values masked outside any statement (notices, notifications) */
  readonly sessionMasked: Counts = {};

  push(p: Pending): void {
    this.q.push(p);
  }

  /**
   * Places gateway bytes just before `p`'s responses. True when nothing before `p` is still
   * unanswered: the caller writes them now.
   */
  injectBefore(p: Pending, bytes: Buffer): boolean {
    const i = this.q.indexOf(p, this.head);
    if (i <= this.head) return true;
    this.q.splice(i, 0, { kind: 'inject', bytes });
    return false;
  }

  get size(): number {
    return this.q.length - this.head;
  }

  /** The statement whose responses are arriving now, if any. */
  current(): StatementState | null {
    const p = this.q[this.head];
    if (!p) return null;
    if (p.kind === 'execute') return p.st;
    if (p.kind === 'query') return p.sts[p.idx] ?? null;
    return null;
  }

  /** Whether a DataRow of this length should be decoded for the sample. */
  wantsRow(): boolean {
    if (this.masking) return true;
    const st = this.current();
    return !!st && st.sample.length < this.limits.sampleRows;
  }

  /** Server CopyData is read whole only to mask it; otherwise it streams through. */
  get wantsCopyData(): boolean {
    return !!this.masking;
  }

  /**
   * What the client gets for a response: the frame itself, a masked copy, the denial for a
   * poisoned request, or nothing (answers to the gateway's own Describe).
   */
  private transform(type: number, f: Buffer): Buffer | null {
    const p = this.q[this.head];
    if (type === 0x45 /* E */ && p && 'denial' in p && p.denial) return p.denial;
    if (p?.kind === 'describe' && p.internal && (type === 0x74 || type === 0x54 || type === 0x6e)) return null;
    const m = this.masking;
    if (!m) return f;
    switch (type) {
      case 0x44 /* D */: {
        const st = this.current();
        if (!st) return f;
        st.plan ??= m.plan(st.cols ?? []);
        const vals = m.row(st.plan, decodeDataRow(f), st.formats, st.masked);
        return vals ? encodeDataRow(vals) : f;
      }
      case 0x64 /* d CopyData */: {
        const st = this.current();
        const counts = st?.masked ?? this.sessionMasked;
        // Binary COPY cannot be read as text: withheld whole rather than passed unmasked.
        if (st?.copyBinary) return null;
        const text = f.toString('utf8', 5);
        const masked = m.text(text, counts);
        return masked === text ? f : frame('d', Buffer.from(masked, 'utf8'));
      }
      case 0x45 /* E */:
      case 0x4e /* N */: {
        const counts = this.current()?.masked ?? this.sessionMasked;
        // A unique violation's DETAIL repeats the value; MESSAGE and DETAIL are masked.
        return rewriteFields(f, (code, v) => (code === 'M' || code === 'D' ? m.text(v, counts) : v));
      }
      case 0x41 /* A */: {
        const n = decodeNotification(f);
        const payload = m.text(n.payload, this.sessionMasked);
        return payload === n.payload ? f : encodeNotification(n.pid, n.channel, payload);
      }
      default:
        return f;
    }
  }

  /** A response message the tracker asked to see whole. */
  onFrame(type: number, raw: Buffer): void {
    const f = this.transform(type, raw);
    if (f === null) {
      // Swallowed: an answer to the gateway's own Describe still advances the queue.
      if (type === 0x54 || type === 0x6e) this.describeDone(raw, type);
      return;
    }
    this.out(f);
    switch (type) {
      case 0x31 /* 1 ParseComplete */:
      case 0x32 /* 2 BindComplete */:
      case 0x33 /* 3 CloseComplete */:
        this.popIf(type === 0x31 ? 'parse' : type === 0x32 ? 'bind' : 'close');
        break;
      case 0x6e /* n NoData */:
        if (this.q[this.head]?.kind === 'describe') this.describeDone(f, type);
        break;
      case 0x54 /* T RowDescription */: {
        const p = this.q[this.head];
        if (p?.kind === 'describe') {
          this.describeDone(f, type);
          break;
        }
        const st = this.current();
        if (st) {
          const cols = decodeRowDescription(f);
          st.columns = cols.map((c) => c.name);
          st.cols = cols;
          st.plan = undefined;
          if (p?.kind === 'query') st.formats = cols.map((c) => c.format);
        }
        break;
      }
      case 0x44 /* D DataRow */: {
        const st = this.current();
        if (st) {
          st.rows++;
          st.bytesOut += f.length;
          if (st.sample.length < this.limits.sampleRows) {
            let vals = decodeDataRow(f);
            const rm = this.masking ? undefined : this.recordMasking;
            if (rm) {
              st.plan ??= rm.plan(st.cols ?? []);
              vals = rm.row(st.plan, vals, st.formats, {}) ?? vals;
            }
            st.sample.push(this.renderRow(vals, st.formats));
          }
        }
        break;
      }
      case 0x43 /* C CommandComplete */:
        this.complete(decodeCommandComplete(f));
        break;
      case 0x49 /* I EmptyQueryResponse */:
        this.complete('');
        break;
      case 0x73 /* s PortalSuspended */:
        this.complete('', true);
        break;
      case 0x56 /* V FunctionCallResponse */:
        this.complete('FUNCTION CALL');
        break;
      case 0x45 /* E ErrorResponse */:
        this.error(f);
        break;
      case 0x5a /* Z ReadyForQuery */:
        this.ready(String.fromCharCode(f[5] ?? 0x49) as 'I' | 'T' | 'E');
        break;
      case 0x47 /* G CopyInResponse */:
      case 0x48 /* H CopyOutResponse */:
      case 0x57 /* W CopyBothResponse */: {
        const st = this.current();
        if (st) {
          st.copy = true;
          st.copyBinary = f[5] === 1;
        }
        break;
      }
      case 0x64 /* d CopyData, read whole only when masking */: {
        const st = this.current();
        if (st) st.bytesOut += f.length;
        break;
      }
      default:
        break; // ParameterStatus, Notice, Notification, ParameterDescription, CopyDone
    }
  }

  /** A DataRow or CopyData the tracker did not decode: only counted. */
  onSkipped(type: number, bodyLength: number): void {
    const st = this.current();
    if (!st) return;
    if (type === 0x44) st.rows++;
    st.bytesOut += bodyLength + 5;
  }

  /** Ends everything still pending, e.g. when the connection closes. */
  abandon(status: ResultRecord['status']): void {
    for (let i = this.head; i < this.q.length; i++) {
      const p = this.q[i]!;
      if (p.kind === 'execute') finish(p.st, { status });
      else if (p.kind === 'query') for (let j = p.idx; j < p.sts.length; j++) finish(p.sts[j]!, { status });
    }
    this.q.length = 0;
    this.head = 0;
  }

  private complete(tag: string, suspended = false): void {
    const p = this.q[this.head];
    if (!p) return;
    if (p.kind === 'execute') {
      finish(p.st, { status: 'ok', tag: suspended ? 'PORTAL SUSPENDED' : tag, rows: rowsOf(p.st, tag) });
      this.shift();
    } else if (p.kind === 'query') {
      const st = p.sts[p.idx];
      if (st) finish(st, { status: 'ok', tag, rows: rowsOf(st, tag) });
      p.idx++;
    }
  }

  private error(f: Buffer): void {
    const p = this.q[this.head];
    if (!p) return;
    // A poisoned request's error is the gateway's denial, and is recorded as such.
    const denial = 'denial' in p ? p.denial : undefined;
    const fields = decodeFields(denial ?? f);
    const rm = this.masking ? undefined : this.recordMasking;
    const rec = (v: string | undefined) => (rm && v ? rm.text(v, {}) : v);
    const error = { code: fields.code, message: rec(fields.message), detail: rec(fields.detail) };
    if (p.kind === 'query' && denial) {
      for (const st of p.sts) finish(st, st.denied ? { status: 'denied', error } : { status: 'not_run' });
      p.idx = p.sts.length;
      return;
    }
    if (p.kind === 'query') {
      const st = p.sts[p.idx];
      if (st) finish(st, { status: 'error', error, rows: st.rows });
      // The rest of the string does not run; ReadyForQuery closes the entry.
      for (let j = p.idx + 1; j < p.sts.length; j++) finish(p.sts[j]!, { status: 'not_run' });
      p.idx = p.sts.length;
      return;
    }
    // An error in Parse, Bind or Describe (a syntax error, a bad parameter value) is the
    // outcome of the Execute it prepared: record it there rather than lose it.
    let unreported = p.kind !== 'execute' && p.kind !== 'sync';
    if (p.kind === 'execute') finish(p.st, denial ? { status: 'denied', error } : { status: 'error', error, rows: p.st.rows });
    if (p.kind !== 'sync') this.shift();
    // After an error the server skips every extended-protocol message until Sync.
    while (this.head < this.q.length && this.q[this.head]!.kind !== 'sync') {
      const s = this.q[this.head]!;
      if (s.kind === 'execute') {
        finish(s.st, unreported ? { status: 'error', error } : { status: 'not_run' });
        unreported = false;
      }
      this.shift();
    }
  }

  private ready(status: 'I' | 'T' | 'E'): void {
    this.txStatus = status;
    // Normally the head is the matching Sync or Query; anything before it got no answer.
    while (this.head < this.q.length) {
      const p = this.q[this.head]!;
      this.shift();
      if (p.kind === 'sync') return;
      if (p.kind === 'query') {
        for (let j = p.idx; j < p.sts.length; j++) finish(p.sts[j]!, { status: 'not_run' });
        return;
      }
      if (p.kind === 'execute') finish(p.st, { status: 'not_run' });
    }
  }

  /** A Describe is answered (RowDescription or NoData): its columns go where they belong. */
  private describeDone(f: Buffer, type: number): void {
    const p = this.q[this.head];
    if (p?.kind !== 'describe') return;
    const cols = type === 0x54 ? decodeRowDescription(f) : [];
    // Extended protocol (e.g. node-pg): Bind, Describe portal, Execute. The columns arrive
    // here, before the Execute's rows; keep them for its result.
    const next = this.q[this.head + 1];
    if (p.portal && next?.kind === 'execute') {
      next.st.columns = cols.map((c) => c.name);
      next.st.cols = cols;
      next.st.plan = undefined;
    }
    if (p.statement !== undefined) this.onStatementColumns?.(p.statement, cols);
    this.shift();
  }

  private popIf(kind: Pending['kind']): void {
    if (this.q[this.head]?.kind === kind) this.shift();
  }

  private shift(): void {
    this.head++;
    // Gateway messages queued behind the entry just answered go out now, in place.
    while (this.head < this.q.length && this.q[this.head]!.kind === 'inject') {
      this.out((this.q[this.head] as { bytes: Buffer }).bytes);
      this.head++;
    }
    // Compact occasionally so a long session's queue does not grow without bound.
    if (this.head > 1024 && this.head * 2 > this.q.length) {
      this.q.splice(0, this.head);
      this.head = 0;
    } else if (this.head === this.q.length) {
      this.q.length = 0;
      this.head = 0;
    }
  }

  private renderRow(vals: (Buffer | null)[], formats: number[]): unknown[] {
    const max = this.limits.maxValueBytes;
    return vals.map((v, i) => {
      if (v === null) return null;
      const binary = (formats.length === 1 ? formats[0] : formats[i]) === 1;
      if (binary) return '\\x' + v.subarray(0, max >> 1).toString('hex') + (v.length > max >> 1 ? '…' : '');
      return v.length > max ? v.toString('utf8', 0, max) + '…' : v.toString('utf8');
    });
  }
}

function rowsOf(st: StatementState, tag: string): number | null {
  const n = tagRows(tag);
  return n ?? (st.rows || null);
}

/**
 * Sets the statement's Execution once its command is recorded. The server can answer
 * before that: an error in Parse or Bind is sent at once, while the Execute still waits
 * for its record. Such an early result is recorded now.
 */
export function attachExecution(st: StatementState, exec: Execution): void {
  st.exec = exec;
  if (st.early) {
    const r = st.early;
    st.early = undefined;
    st.exec = null;
    exec.finish(r);
  }
}

function finish(st: StatementState, r: ResultRecord): void {
  if (st.early) return; // the first outcome stands, as Execution.finish does
  const rec: ResultRecord = { ...r };
  if (st.columns) rec.columns = st.columns;
  if (st.sample.length) {
    rec.sample = st.sample;
    rec.truncated = st.rows > st.sample.length;
  }
  if (hasCounts(st.masked)) rec.masked = st.masked;
  if (st.copy || st.bytesIn) {
    rec.bytesIn = st.bytesIn;
    rec.bytesOut = st.bytesOut;
  }
  if (!st.exec) {
    st.early = rec;
    return;
  }
  st.exec.finish(rec);
  st.exec = null;
}
