// Per-session memory of protocol-level prepared statements (COM_STMT_PREPARE … COM_STMT_CLOSE),
// so that an EXECUTE is recorded with the text it runs and its parameters, and judged by what was
// prepared. The namespace is the server's statement ids, separate from SQL `PREPARE name`.
//
// Everything here is bounded: the number of statements, the bytes of their texts, the column
// definitions kept per statement, and what is kept of long data (a count, a hash, a prefix).
// A statement forgotten to respect a bound still exists on the server; executing it is then
// recorded as `unknown`, and the guard decides.
import { createHash, type Hash } from 'node:crypto';
import type { Classification } from '../../guard/classification.ts';
import type { ResultRecord } from '../../session/session.ts';
import { renderParam, type ColumnDefinition, type ParamType, type StmtExecute } from './packets.ts';

/** MariaDB: statement id -1 in COM_STMT_EXECUTE means "the statement prepared last". */
export const LAST_PREPARED_ID = 0xffffffff;
/** Column definitions kept per statement or result; beyond it rows are not decoded for the sample. */
export const MAX_COLUMNS_KEPT = 4096;

export interface StatementLimits {
  maxStatements: number;
  /** sum of the texts' lengths */
  maxTextBytes: number;
  /** bytes of long data kept per parameter, for the record */
  prefixBytes: number;
  /** parameters with long data, over all statements (each keeps a hash and a prefix) */
  maxLongDataParams: number;
}

export const DEFAULT_STATEMENT_LIMITS: StatementLimits = { maxStatements: 10_000, maxTextBytes: 64 << 20, prefixBytes: 256, maxLongDataParams: 65_536 };

export interface LongData {
  bytes: number;
  prefix: Buffer;
  hash: Hash;
}

/** What a cursor (COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY) delivers is recorded on the execute that opened it. */
export interface Cursor {
  exec: { finish(r: ResultRecord): void };
  columns: ColumnDefinition[];
  columnCount: number;
  rows: number;
  sample: unknown[][];
  fetches: number;
  bytesOut: number;
}

export interface PreparedStatement {
  id: number;
  text: string;
  numParams: number;
  numColumns: number;
  /** the result columns announced at prepare (bounded); an execute's answer brings its own */
  columns: ColumnDefinition[];
  classification: Classification;
  /** parameter types of the last execute that sent them (new-params-bound) */
  types?: ParamType[];
  /** COM_STMT_SEND_LONG_DATA since the last execute or reset, by parameter index */
  longData: Map<number, LongData>;
  cursor: Cursor | null;
}

export class StatementTable {
  private readonly byId = new Map<number, PreparedStatement>();
  private textBytes = 0;
  private longDataParams = 0;
  private last: number | null = null;

  constructor(private readonly limits: StatementLimits = DEFAULT_STATEMENT_LIMITS) {}

  get size(): number {
    return this.byId.size;
  }

  /** The id a command refers to: -1 is the statement prepared last (MariaDB). */
  resolveId(id: number): number {
    return id === LAST_PREPARED_ID && this.last !== null ? this.last : id;
  }

  get(id: number): PreparedStatement | undefined {
    return this.byId.get(this.resolveId(id));
  }

  /** Remembers a statement the target prepared; forgets the oldest ones beyond the bounds. */
  add(s: Omit<PreparedStatement, 'longData' | 'cursor' | 'types'>): PreparedStatement {
    this.close(s.id, 'statement id reused');
    const st: PreparedStatement = { ...s, columns: s.columns.slice(0, MAX_COLUMNS_KEPT), longData: new Map(), cursor: null };
    this.byId.set(st.id, st);
    this.textBytes += st.text.length;
    this.last = st.id;
    for (const [id] of this.byId) {
      if (this.byId.size <= this.limits.maxStatements && this.textBytes <= this.limits.maxTextBytes) break;
      if (id === st.id) continue;
      this.close(id, 'forgotten by the gateway (too many prepared statements)');
    }
    return st;
  }

  /** COM_STMT_CLOSE (or eviction): the statement and its cursor are gone. */
  close(id: number, why = 'statement closed'): void {
    const st = this.byId.get(id);
    if (!st) return;
    this.clearLongData(st);
    this.endCursor(st, why);
    this.byId.delete(id);
    this.textBytes -= st.text.length;
    if (this.last === id) this.last = null;
  }

  /** COM_STMT_RESET: long data and cursor cleared, the statement stays. */
  reset(st: PreparedStatement): void {
    this.clearLongData(st);
    this.endCursor(st, 'cursor closed by COM_STMT_RESET');
  }

  /** COM_RESET_CONNECTION, or the end of the session: the server drops every statement. */
  clear(why: string): void {
    for (const id of [...this.byId.keys()]) this.close(id, why);
    this.last = null;
  }

  /**
   * Notes COM_STMT_SEND_LONG_DATA. False when the session already has too many parameters with
   * long data: the gateway could then no longer decode executes, so the caller ends the session.
   */
  addLongData(st: PreparedStatement, param: number, data: Buffer): boolean {
    // The server reports a bad index at execute; there is nothing to render for it.
    if (param >= st.numParams) return true;
    let ld = st.longData.get(param);
    if (!ld) {
      if (this.longDataParams >= this.limits.maxLongDataParams) return false;
      this.longDataParams++;
      ld = { bytes: 0, prefix: Buffer.alloc(0), hash: createHash('sha256') };
      st.longData.set(param, ld);
    }
    ld.bytes += data.length;
    ld.hash.update(data);
    const room = this.limits.prefixBytes - ld.prefix.length;
    if (room > 0 && data.length > 0) ld.prefix = Buffer.concat([ld.prefix, data.subarray(0, room)]);
    return true;
  }

  /** After an execute (the target clears long data then) or a reset. */
  clearLongData(st: PreparedStatement): void {
    this.longDataParams -= st.longData.size;
    st.longData.clear();
  }

  /** Records what the cursor delivered, on the execute that opened it, and forgets the cursor. */
  endCursor(st: PreparedStatement, why: string | null, error?: ResultRecord['error']): void {
    const c = st.cursor;
    if (!c) return;
    st.cursor = null;
    c.exec.finish({
      status: error ? 'error' : 'ok',
      tag: 'SELECT',
      rows: c.rows,
      columns: c.columns.map((col) => col.name),
      sample: c.sample,
      truncated: c.rows > c.sample.length,
      bytesOut: c.bytesOut,
      ...(error ? { error } : {}),
      meta: { cursor: true, fetches: c.fetches, ...(why ? { ended: why } : {}) },
    });
  }
}

/**
 * An execute's parameters for the record: rendered with renderParam, bounded in count and size.
 * A parameter sent as long data is `<long data: N bytes, sha256 H>` and the start of the data:
 * the hash binds an approval to the exact bytes, which a count alone would not.
 */
export function renderExecuteParams(st: PreparedStatement, x: StmtExecute, maxValueBytes: number, maxParams: number): unknown[] {
  const out: unknown[] = [];
  const n = Math.min(x.params.length, maxParams);
  for (let i = 0; i < n; i++) {
    const p = x.params[i]!;
    if (p.longData) {
      const ld = st.longData.get(i);
      if (!ld) {
        out.push('<long data: 0 bytes>');
        continue;
      }
      const head = ld.prefix.length ? ' ' + renderParam(p.type, ld.prefix, { unsigned: p.unsigned, maxBytes: Math.min(maxValueBytes, ld.prefix.length) }) + (ld.bytes > ld.prefix.length ? '…' : '') : '';
      out.push(`<long data: ${ld.bytes} bytes, sha256 ${ld.hash.copy().digest('hex')}>${head}`);
      continue;
    }
    out.push(renderParam(p.type, p.value, { unsigned: p.unsigned, maxBytes: maxValueBytes }));
  }
  if (x.params.length > n) out.push(`… ${x.params.length - n} more`);
  return out;
}
