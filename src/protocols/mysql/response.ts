// Reads the target's answer to the command in flight, packet by packet, to record results: OK,
// ERR, text and binary result sets (with a bounded rendered sample), multi-results, prepare
// answers, cursor fetches, and LOAD DATA LOCAL INFILE requests. It also decides what becomes of
// each packet on its way to the client (see server-stream.ts): rows stream through; everything
// else is held until whole, so that a file request the gateway refuses can be dropped.
//
// The column definitions of the result being read are kept whole (name, type, charset, flags,
// decimals, schema, table, orgTable, orgName), so rows can later be decoded, changed (masked)
// and re-encoded here instead of passed through.
import type { Execution, ResultRecord } from '../../session/session.ts';
import type { Classification } from '../../guard/classification.ts';
import { encodePacket, packetCount } from './codec.ts';
import { newCounts, type Counts } from '../../mask/counts.ts';
import type { Masker } from '../../mask/masker.ts';
import { MysqlMaskError, maskBinaryRow, maskErrMessage, maskTextRow, planColumns, type MysqlMaskPlan } from './mysql-masking.ts';
import type { Disposition, ServerStreamHandler } from './server-stream.ts';
import { MAX_COLUMNS_KEPT, type PreparedStatement, type StatementTable } from './statements.ts';
import {
  CHARSET_BINARY,
  ERR_HEADER,
  LOCAL_INFILE_HEADER,
  MYSQL_TYPE_VAR_STRING,
  OK_HEADER,
  SERVER_MORE_RESULTS_EXISTS,
  SERVER_STATUS_CURSOR_EXISTS,
  SERVER_STATUS_LAST_ROW_SENT,
  UNSIGNED_FLAG,
  decodeBinaryRow,
  decodeColumnCount,
  decodeColumnDefinition41,
  decodeEof,
  decodeErr,
  decodeOk,
  decodeStmtPrepareOk,
  decodeTextRow,
  encodeErr,
  isBinaryColumn,
  isEof,
  isErr,
  isResultsetEnd,
  isStringType,
  renderParam,
  type ColumnDefinition,
} from './packets.ts';

/** What the command in flight expects back. */
export type Expect =
  /** one packet: OK, ERR (PING, INIT_DB, RESET_CONNECTION, STMT_RESET, …) */
  | { kind: 'simple'; exec?: Execution }
  /** COM_FIELD_LIST: column definitions until EOF */
  | { kind: 'fieldList'; exec: Execution }
  /** COM_QUERY: text result sets, one per statement; LOCAL INFILE requests */
  | { kind: 'query'; execs: Execution[] }
  /** COM_STMT_PREPARE: PREPARE_OK, parameter and column definitions */
  | { kind: 'prepare'; text: string; classification: Classification }
  /** COM_STMT_EXECUTE: OK, or a binary result set, or a cursor */
  | { kind: 'execute'; exec: Execution; statement: PreparedStatement | undefined }
  /** COM_STMT_FETCH: binary rows of the statement's cursor */
  | { kind: 'fetch'; statement: PreparedStatement | undefined };

type Phase =
  | 'first'
  | 'columns'
  | 'columnsEof'
  | 'rows'
  | 'fieldList'
  | 'prepParams'
  | 'prepParamsEof'
  | 'prepColumns'
  | 'prepColumnsEof'
  /** the client is sending a LOCAL INFILE file: the target says nothing until it ends */
  | 'infile';

interface InFlight {
  expect: Expect;
  execs: Execution[];
  idx: number;
  phase: Phase;
  colsLeft: number;
  columns: ColumnDefinition[];
  columnCount: number;
  rows: number;
  sample: unknown[][];
  bytesOut: number;
  bytesIn: number;
  /** prepare answer so far */
  prep?: { statementId: number; numParams: number; numColumns: number };
  /**
   * The rest of the answer is swallowed and an ERR at this sequence id replaces it: after a
   * refused file request, or a row that could not be masked (withheld, never sent unmasked).
   */
  refused?: { seq: number; code: number; message: string };
  /** masking plan of the result set being read (null: columns not all known, cannot mask) */
  plan?: MysqlMaskPlan | null;
  /** values masked in the current result */
  counts: Counts;
}

export interface ResponseOptions {
  sampleRows: number;
  maxValueBytes: number;
  deprecateEof: boolean;
  /** the upstream connection's capabilities (OK packet layout) */
  capabilities: number;
  /**
   * Masking: rows and errors reach the client masked when `client` is set; the record (samples,
   * errors) is masked either way, also for identities in an unmasked group.
   */
  mask?: { masker: Masker; client: boolean };
}

export interface ResponseHooks {
  /** the answer is complete: the next command may go */
  done(): void;
  /** server status flags seen in an OK or EOF */
  status(flags: number): void;
  /** whether this statement may receive the client's file (LOAD DATA LOCAL INFILE) */
  mayLoadLocal(exec: Execution | undefined): boolean;
  /** to the target, for the gateway's own answer to a refused file request */
  toServer(b: Buffer): void;
}

const ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227;
const ER_UNKNOWN_ERROR = 1105;

export class ResponseTracker implements ServerStreamHandler {
  private current: InFlight | null = null;
  /** sequence id of the last packet the target sent */
  lastSeq = 0;
  /** the masked payload that replaces the message being read, if any */
  private replacement: Buffer | null = null;

  constructor(
    private readonly opts: ResponseOptions,
    private readonly statements: StatementTable,
    private readonly hooks: ResponseHooks,
  ) {}

  /** Masking changes with the identity (COM_CHANGE_USER): an unmasked group may come or go. */
  useMask(mask: ResponseOptions['mask']): void {
    this.opts.mask = mask;
  }

  get busy(): boolean {
    return this.current !== null;
  }

  /** The client is sending a LOCAL INFILE file; its packets go straight to the target. */
  get awaitingFile(): boolean {
    return this.current?.phase === 'infile';
  }

  begin(expect: Expect): void {
    const execs = expect.kind === 'query' ? expect.execs : 'exec' in expect && expect.exec ? [expect.exec] : [];
    const phase: Phase = expect.kind === 'fieldList' ? 'fieldList' : 'first';
    this.current = { expect, execs, idx: 0, phase, colsLeft: 0, columns: [], columnCount: 0, rows: 0, sample: [], bytesOut: 0, bytesIn: 0, counts: newCounts() };
  }

  /** Counts a packet of the client's file; the empty one ends it, and the target's OK or ERR follows. */
  fileData(length: number): void {
    const f = this.current;
    if (!f || f.phase !== 'infile') return;
    f.bytesIn += length;
    if (length === 0) f.phase = 'first';
  }

  /** The connection ended: what is in flight has an unknown outcome. */
  abandon(): void {
    const f = this.current;
    this.current = null;
    if (f) for (const e of f.execs) e.finish({ status: 'unknown' });
  }

  hold(): boolean {
    const f = this.current;
    if (f === null) return false;
    // Rows stream; anything else is small and held until whole, so it can be dropped or replaced.
    // When the client gets masked data, everything is held: any row or error may be replaced.
    return f.phase !== 'rows' || f.refused !== undefined || this.opts.mask?.client === true;
  }

  message(seq: number, payload: Buffer, firstSeq = seq): Disposition {
    this.lastSeq = seq;
    const f = this.current;
    if (!f) return 'pass'; // unsolicited (e.g. the target's own "connection killed")
    f.bytesOut += payload.length + 4;
    const refused = f.refused;
    let p = payload;
    const mask = this.opts.mask;
    this.replacement = null;
    if (mask && isErr(p)) {
      // Errors echo values (a duplicate key names it): masked for the record, and for the client.
      const masked = maskErrMessage(mask.masker, p, f.counts);
      if (masked) {
        p = masked;
        if (mask.client) this.replacement = masked;
      }
    }
    this.step(f, seq, p, firstSeq);
    const replacement = this.replacement;
    this.replacement = null;
    if (!refused) {
      if (f.refused) return 'drop';
      return replacement ? encodePacket(firstSeq, replacement) : 'pass';
    }
    // After a refusal the client sees none of the rest of the answer, then one ERR in its place.
    if (this.current === f) return 'drop';
    return encodePacket(refused.seq, encodeErr({ code: refused.code, sqlState: refused.code === ER_SPECIFIC_ACCESS_DENIED_ERROR ? '42000' : 'HY000', message: refused.message }));
  }

  private step(f: InFlight, seq: number, p: Buffer, firstSeq: number): void {
    const { expect } = f;
    if (expect.kind === 'simple') {
      if (isErr(p)) this.finish(f, this.errRecord(p, f));
      else {
        if (p[0] === OK_HEADER && p.length >= 7) this.hooks.status(decodeOk(p, this.opts.capabilities).status);
        else if (isEof(p)) this.hooks.status(decodeEof(p).status);
        this.finish(f, { status: 'ok', tag: p[0] === OK_HEADER ? 'OK' : undefined });
      }
      this.done(f);
      return;
    }
    switch (f.phase) {
      case 'fieldList':
        if (isErr(p)) {
          this.finish(f, this.errRecord(p, f));
          this.done(f);
        } else if (isResultsetEnd(p, this.opts.deprecateEof)) {
          this.finish(f, { status: 'ok', tag: 'SHOW', rows: f.rows, columns: ['Field'], sample: f.sample, truncated: f.rows > f.sample.length });
          this.done(f);
        } else {
          const col = decodeColumnDefinition41(p);
          if (f.sample.length < this.opts.sampleRows) f.sample.push([col.name]);
          f.rows++;
        }
        return;
      case 'infile':
        // Nothing is expected from the target while the client sends its file; an ERR ends it.
        if (isErr(p)) {
          this.finish(f, this.errRecord(p, f));
          this.done(f);
        }
        return;
      case 'first':
        this.first(f, seq, p, firstSeq);
        return;
      case 'columns':
        if (f.columns.length < MAX_COLUMNS_KEPT) f.columns.push(decodeColumnDefinition41(p));
        if (--f.colsLeft === 0) {
          if (this.opts.deprecateEof) this.enterRows(f);
          else f.phase = 'columnsEof';
        }
        return;
      case 'columnsEof': {
        if (isErr(p)) {
          this.finish(f, this.errRecord(p, f));
          this.done(f);
          return;
        }
        if (!isEof(p)) throw new Error('expected EOF after column definitions');
        const status = decodeEof(p).status;
        this.hooks.status(status);
        // An execute that opened a cursor ends here: rows come with COM_STMT_FETCH.
        if (expect.kind === 'execute' && status & SERVER_STATUS_CURSOR_EXISTS) this.cursorOpened(f, expect.statement);
        else this.enterRows(f);
        return;
      }
      case 'rows':
        this.row(f, p, firstSeq);
        return;
      case 'prepParams':
        if (--f.colsLeft === 0) {
          if (!this.opts.deprecateEof) f.phase = 'prepParamsEof';
          else this.prepColumns(f);
        }
        return;
      case 'prepParamsEof':
        this.prepColumns(f);
        return;
      case 'prepColumns':
        if (f.columns.length < MAX_COLUMNS_KEPT) f.columns.push(decodeColumnDefinition41(p));
        if (--f.colsLeft === 0) {
          if (!this.opts.deprecateEof) f.phase = 'prepColumnsEof';
          else this.prepared(f);
        }
        return;
      case 'prepColumnsEof':
        this.prepared(f);
        return;
    }
  }

  private first(f: InFlight, seq: number, p: Buffer, firstSeq: number): void {
    const { expect } = f;
    if (isErr(p)) {
      this.finish(f, this.errRecord(p, f));
      if (expect.kind === 'fetch' && expect.statement) this.statements.endCursor(expect.statement, 'the fetch failed', this.errRecord(p, f).error);
      this.done(f);
      return;
    }
    if (expect.kind === 'prepare') {
      const ok = decodeStmtPrepareOk(p);
      f.prep = { statementId: ok.statementId, numParams: ok.numParams, numColumns: ok.numColumns };
      if (ok.numParams > 0) {
        f.phase = 'prepParams';
        f.colsLeft = ok.numParams;
      } else this.prepColumns(f);
      return;
    }
    if (expect.kind === 'fetch') {
      // A fetch answers with rows at once (no column count): the cursor's columns apply.
      const c = expect.statement?.cursor;
      f.columns = c?.columns ?? [];
      f.columnCount = c?.columnCount ?? 0;
      this.enterRows(f);
      this.row(f, p, firstSeq);
      return;
    }
    if (p[0] === OK_HEADER) {
      const ok = decodeOk(p, this.opts.capabilities);
      this.hooks.status(ok.status);
      this.finish(f, {
        status: 'ok',
        tag: 'OK',
        rows: ok.affectedRows,
        ...(f.bytesIn ? { bytesIn: f.bytesIn } : {}),
        meta: { lastInsertId: ok.lastInsertId.toString(), warnings: ok.warnings, ...(ok.info ? { info: ok.info.slice(0, 256) } : {}) },
      });
      this.nextResult(f, ok.status);
      return;
    }
    if (p[0] === LOCAL_INFILE_HEADER && expect.kind === 'query') {
      this.fileRequest(f, seq, p);
      return;
    }
    f.columnCount = decodeColumnCount(p);
    f.colsLeft = f.columnCount;
    f.columns = [];
    f.rows = 0;
    f.sample = [];
    f.phase = 'columns';
  }

  /**
   * The target asks for a client file. Passed to the client only for a statement the guard let
   * run as a LOAD DATA LOCAL (and a client that offered files); otherwise the gateway answers
   * "no file" itself, and the client gets an error instead of the request.
   */
  private fileRequest(f: InFlight, seq: number, p: Buffer): void {
    const exec = f.execs[f.idx];
    const file = p.subarray(1, Math.min(p.length, 1 + 512)).toString('utf8');
    if (this.hooks.mayLoadLocal(exec)) {
      f.phase = 'infile';
      f.bytesIn = 0;
      return;
    }
    this.hooks.toServer(encodePacket((seq + 1) & 0xff, Buffer.alloc(0)));
    const message = `the target asked for the client file "${file}", but this statement was not allowed to load a client file; none was sent`;
    f.refused = { seq, code: ER_SPECIFIC_ACCESS_DENIED_ERROR, message };
    exec?.finish({ status: 'denied', error: { code: '42000', message }, meta: { localInfile: file } });
  }

  /** Column definitions are complete: rows follow, masked by a plan made once for them. */
  private enterRows(f: InFlight): void {
    f.phase = 'rows';
    const mask = this.opts.mask;
    if (!mask) return;
    // Without every column's definition a value cannot be placed, so it cannot be masked.
    f.plan = f.columns.length === f.columnCount ? planColumns(mask.masker, f.columns) : null;
  }

  /**
   * The masked row payload, or null when nothing changed. A row that cannot be masked is
   * withheld: the rest of the answer is swallowed and the client gets an error instead.
   */
  private maskRow(f: InFlight, p: Buffer, firstSeq: number): Buffer | null {
    const binary = f.expect.kind === 'execute' || f.expect.kind === 'fetch';
    try {
      if (!f.plan) throw new MysqlMaskError('the result has more columns than the gateway reads');
      if (!f.plan.active) return null;
      const out = binary ? maskBinaryRow(f.plan, p, f.columns, f.counts) : maskTextRow(f.plan, p, f.counts);
      // Past 16 MiB a length change can change the number of physical packets, which would shift
      // every later sequence id of the answer: withheld rather than re-numbered.
      if (out && this.opts.mask!.client && packetCount(out.length) !== packetCount(p.length)) throw new MysqlMaskError('a masked row of over 16 MiB changed its packet count');
      return out;
    } catch (e) {
      const why = e instanceof MysqlMaskError ? e.message : 'masking failed';
      const message = `result withheld: the gateway could not mask a row (${why})`;
      if (this.opts.mask!.client) {
        f.refused = { seq: firstSeq, code: ER_UNKNOWN_ERROR, message };
        this.finish(f, { status: 'error', error: { code: 'HY000', message }, rows: f.rows });
      }
      return null;
    }
  }

  private row(f: InFlight, p: Buffer, firstSeq: number): void {
    const { expect } = f;
    if (p.length > 0 && p[0] === ERR_HEADER) {
      const err = this.errRecord(p, f);
      this.finish(f, err);
      if (expect.kind === 'fetch' && expect.statement) this.statements.endCursor(expect.statement, 'the fetch failed', err.error);
      this.done(f);
      return;
    }
    if (isResultsetEnd(p, this.opts.deprecateEof)) {
      const status = this.opts.deprecateEof ? decodeOk(p, this.opts.capabilities).status : decodeEof(p).status;
      this.hooks.status(status);
      if (expect.kind === 'fetch') {
        this.fetched(f, expect.statement, status);
        return;
      }
      if (expect.kind === 'execute' && f.rows === 0 && status & SERVER_STATUS_CURSOR_EXISTS) {
        // DEPRECATE_EOF: the metadata of a cursor ends with this OK, rows come with COM_STMT_FETCH.
        this.cursorOpened(f, expect.statement);
        return;
      }
      this.finish(f, this.resultRecord(f));
      this.nextResult(f, status);
      return;
    }
    f.rows++;
    const wantSample = f.sample.length < this.opts.sampleRows && f.columns.length === f.columnCount && f.columnCount > 0;
    let row = p;
    const mask = this.opts.mask;
    // Masked for the client: every row. Only for the record: just the sampled ones.
    if (mask && (mask.client || wantSample)) {
      const out = this.maskRow(f, p, firstSeq);
      if (f.refused) return;
      if (out) {
        row = out;
        if (mask.client) this.replacement = out;
      }
    }
    if (wantSample) f.sample.push(this.decodeRow(f, row));
  }

  private decodeRow(f: InFlight, p: Buffer): unknown[] {
    try {
      if (f.expect.kind === 'execute' || f.expect.kind === 'fetch') {
        return decodeBinaryRow(p, f.columns).map((v, i) => renderBinaryCell(f.columns[i]!, v, this.opts.maxValueBytes));
      }
      return decodeTextRow(p, f.columnCount).map((v, i) => renderTextCell(f.columns[i]!, v, this.opts.maxValueBytes));
    } catch {
      return ['<row not decoded>'];
    }
  }

  private resultRecord(f: InFlight): ResultRecord {
    return { status: 'ok', tag: 'SELECT', rows: f.rows, columns: f.columns.map((c) => c.name), sample: f.sample, truncated: f.rows > f.sample.length, bytesOut: f.bytesOut };
  }

  /** The execute opened a cursor: its result is recorded when the cursor ends (see StatementTable.endCursor). */
  private cursorOpened(f: InFlight, st: PreparedStatement | undefined): void {
    const exec = f.execs[0];
    if (st && exec) {
      this.statements.endCursor(st, 'replaced by a new cursor');
      st.cursor = { exec, columns: f.columns, columnCount: f.columnCount, rows: 0, sample: [], fetches: 0, bytesOut: f.bytesOut };
      // Recorded later: the execute's result is the cursor's rows.
      f.execs = [];
    }
    this.done(f);
  }

  private fetched(f: InFlight, st: PreparedStatement | undefined, status: number): void {
    const c = st?.cursor;
    if (st && c) {
      c.fetches++;
      c.rows += f.rows;
      c.bytesOut += f.bytesOut;
      for (const r of f.sample) if (c.sample.length < this.opts.sampleRows) c.sample.push(r);
      if (status & SERVER_STATUS_LAST_ROW_SENT || !(status & SERVER_STATUS_CURSOR_EXISTS)) this.statements.endCursor(st, null);
    }
    this.done(f);
  }

  private prepColumns(f: InFlight): void {
    const n = f.prep!.numColumns;
    if (n === 0) {
      this.prepared(f);
      return;
    }
    f.phase = 'prepColumns';
    f.colsLeft = n;
  }

  private prepared(f: InFlight): void {
    const e = f.expect as Expect & { kind: 'prepare' };
    const prep = f.prep!;
    this.statements.add({ id: prep.statementId, text: e.text, numParams: prep.numParams, numColumns: prep.numColumns, columns: f.columns, classification: e.classification });
    this.done(f);
  }

  private errRecord(p: Buffer, f: InFlight): ResultRecord {
    const e = decodeErr(p);
    return { status: 'error', error: { code: e.sqlState, message: e.message.slice(0, 2000), detail: `MySQL error ${e.code}` }, rows: f.phase === 'rows' ? f.rows : undefined };
  }

  /** Records the current result on the execution it belongs to (extra results, e.g. of CALL, are not recorded separately). */
  private finish(f: InFlight, r: ResultRecord): void {
    const e = f.execs[f.idx];
    if (!e) return;
    if (this.opts.mask && Object.keys(f.counts).length) r.masked = { ...f.counts };
    e.finish(r);
  }

  private nextResult(f: InFlight, status: number): void {
    if ((status & SERVER_MORE_RESULTS_EXISTS) === 0) {
      this.done(f);
      return;
    }
    f.idx = Math.min(f.idx + 1, f.execs.length); // results beyond the statements (CALL): not recorded
    f.phase = 'first';
    f.columns = [];
    f.columnCount = 0;
    f.rows = 0;
    f.sample = [];
    f.bytesOut = 0;
    f.bytesIn = 0;
    f.plan = undefined;
    f.counts = newCounts();
  }

  /** The answer is complete: statements that got no result did not run (an error stops a batch). */
  private done(f: InFlight): void {
    for (let i = f.idx + 1; i < f.execs.length; i++) f.execs[i]!.finish({ status: 'not_run' });
    if (this.current === f) this.current = null;
    this.hooks.done();
  }
}

const isNumericType = (t: number): boolean => t <= 5 || t === 8 || t === 9 || t === 13 || t === 246;

/** A text-protocol cell for the record: bytes of binary columns as hex, the rest as (cut) UTF-8. */
export function renderTextCell(c: { type: number; charset: number }, v: Buffer | null, max: number): unknown {
  if (v === null) return null;
  if (c.charset === CHARSET_BINARY && !isNumericType(c.type)) {
    const half = max >> 1;
    return '\\x' + v.subarray(0, half).toString('hex') + (v.length > half ? '…' : '');
  }
  return v.length > max ? v.toString('utf8', 0, max) + '…' : v.toString('utf8');
}

/** A binary-protocol cell: as renderParam, except that TEXT columns (BLOB types with a text charset) read as text. */
export function renderBinaryCell(c: { type: number; charset: number; flags: number }, v: Buffer | null, max: number): unknown {
  const type = isStringType(c.type) && !isBinaryColumn(c) ? MYSQL_TYPE_VAR_STRING : c.type;
  return renderParam(type, v, { unsigned: (c.flags & UNSIGNED_FLAG) !== 0, maxBytes: max });
}
