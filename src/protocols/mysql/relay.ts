// The MySQL relay after authentication. Client → target: each command is read whole (bounded),
// turned into recorded Commands, and forwarded only once the session has recorded them and the
// verdicts allow it. One command is in flight at a time (the protocol is request/response; a
// pipelining client just waits), so a gateway-made reply can never land inside a target's.
// Target → client: bytes pass through unchanged and unbuffered while a tracker reads the
// packets to record results (OK, ERR, result sets, multi-results).
import type { Duplex } from 'node:stream';
import type { Execution, ResultRecord, Session } from '../../session/session.ts';
import type { Denial } from '../../guard/types.ts';
import { classifyMysql, type MysqlServer } from '../../guard/classify-mysql.ts';
import { PacketScanner, ProtocolError, encodePacket } from './codec.ts';
import {
  COMMAND_NAMES,
  COM_CHANGE_USER,
  COM_FIELD_LIST,
  COM_INIT_DB,
  COM_PING,
  COM_QUERY,
  COM_QUIT,
  COM_RESET_CONNECTION,
  COM_SET_OPTION,
  COM_STATISTICS,
  ERR_HEADER,
  LOCAL_INFILE_HEADER,
  OK_HEADER,
  SERVER_MORE_RESULTS_EXISTS,
  SERVER_STATUS_NO_BACKSLASH_ESCAPES,
  decodeColumnCount,
  decodeColumnDefinition41,
  decodeComInitDb,
  decodeComQuery,
  decodeEof,
  decodeErr,
  decodeOk,
  decodeTextRow,
  encodeErr,
  isEof,
  isErr,
  isResultsetEnd,
  CHARSET_BINARY,
} from './packets.ts';

export interface MysqlRelayOptions {
  maxMessageBytes: number;
  sampleRows: number;
  maxValueBytes: number;
  /** CLIENT_DEPRECATE_EOF is in effect on both sides */
  deprecateEof: boolean;
  /** the upstream connection's capabilities (for OK packet layout) */
  capabilities: number;
  /** the target, so executable comments are read as it reads them */
  server?: MysqlServer;
  /** status flags of the login OK */
  status: number;
}

const ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227;
const ER_UNKNOWN_COM_ERROR = 1047;
const ER_NOT_SUPPORTED_YET = 1235;
const ER_CONNECTION_KILLED = 1927;
const MAX_STATEMENTS = 10_000;
/** column names kept per result (the count is always exact) */
const MAX_COLUMNS_RECORDED = 1000;

/** The shared denial shape as a MySQL error. */
export function denialMessage(d: Denial): string {
  return `${d.reason} (rule: ${d.rule}${d.reviewId ? `; review: ${d.reviewId}` : ''}; hint: ${d.hint})`;
}

interface Column {
  name: string;
  type: number;
  charset: number;
}

/** What the target's answer to the command in flight is being read as. */
type Phase = 'first' | 'columns' | 'columnsEof' | 'rows' | 'fieldList';

interface InFlight {
  /** the executions the answer's results belong to, in order (may be empty: nothing to record) */
  execs: Execution[];
  idx: number;
  /** single-packet answers (PING, INIT_DB, RESET_CONNECTION, ...) */
  simple: boolean;
  phase: Phase;
  colsLeft: number;
  columns: Column[];
  columnCount: number;
  rows: number;
  sample: unknown[][];
  bytesOut: number;
}

/**
 * Splits a COM_QUERY text at the `;` that end statements, the way the server's lexer sees them:
 * quotes ('…', "…", `…`, backslash escapes unless NO_BACKSLASH_ESCAPES), comments (`#`, `-- `,
 * `/* *\/`). A `;` inside any `/* … *\/` does not split (an executable comment is kept whole, and
 * classified whole). Pieces that are only whitespace and comments are dropped. The guard checks
 * the pieces against its own reading (see MysqlRelay), so a disagreement is never unsafe.
 */
export function splitMysqlStatements(text: string, noBackslashEscapes = false): string[] {
  const out: string[] = [];
  let start = 0;
  let content = false;
  const n = text.length;
  let i = 0;
  const push = (end: number) => {
    if (content) out.push(text.slice(start, end).trim());
    content = false;
  };
  while (i < n) {
    const c = text[i]!;
    if (c === "'" || c === '"' || c === '`') {
      content = true;
      i++;
      while (i < n) {
        const d = text[i]!;
        if (d === '\\' && c !== '`' && !noBackslashEscapes) {
          i += 2;
          continue;
        }
        if (d === c) {
          if (text[i + 1] === c) {
            i += 2;
            continue;
          }
          break;
        }
        i++;
      }
      i++;
      continue;
    }
    if (c === '#' || (c === '-' && text[i + 1] === '-' && (i + 2 >= n || /[\s\x00-\x1f]/.test(text[i + 2]!)))) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? n : nl + 1;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const executable = text[i + 2] === '!' || (text[i + 2] === 'M' && text[i + 3] === '!');
      if (executable) content = true;
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      continue;
    }
    if (c === ';') {
      push(i);
      i++;
      start = i;
      continue;
    }
    if (!/\s/.test(c)) content = true;
    i++;
  }
  push(n);
  return out;
}

interface Queued {
  payload: Buffer;
  lastSeq: number;
}

export class MysqlRelay {
  private readonly fromClient: PacketScanner;
  private readonly fromServer: PacketScanner;
  private readonly queue: Queued[] = [];
  private current: InFlight | null = null;
  private completed = false;
  private pumping = false;
  private ended = false;
  private upstreamFull = false;
  private noBackslashEscapes: boolean;
  /** sequence id of the last packet the target sent (for an unsolicited ERR from the gateway) */
  private lastServerSeq = 0;
  onEnd: ((reason: string) => void) | null = null;

  constructor(
    private readonly session: Session,
    private readonly client: Duplex,
    private readonly server: Duplex,
    private readonly opts: MysqlRelayOptions,
  ) {
    this.noBackslashEscapes = (opts.status & SERVER_STATUS_NO_BACKSLASH_ESCAPES) !== 0;
    this.fromClient = new PacketScanner((seq, payload, firstSeq) => this.clientPacket(seq, payload, firstSeq), opts.maxMessageBytes);
    // The target is trusted more than a client, but a bound keeps a broken one from exhausting memory.
    this.fromServer = new PacketScanner((seq, payload) => this.serverPacket(seq, payload), 1 << 30);
  }

  start(fromServer: Buffer[], fromClient: Buffer[]): void {
    const { client, server } = this;
    client.on('data', (chunk: Buffer) => this.clientData(chunk));
    server.on('data', (chunk: Buffer) => this.serverData(chunk));
    client.on('drain', () => server.resume());
    server.on('drain', () => {
      this.upstreamFull = false;
      this.flow();
    });
    client.on('close', () => this.end('client disconnected'));
    server.on('close', () => this.end('target closed the connection'));
    client.on('error', () => this.end('client connection error'));
    server.on('error', () => this.end('target connection error'));
    for (const b of fromServer) this.serverData(b);
    for (const b of fromClient) this.clientData(b);
    client.resume();
    server.resume();
  }

  /** Ends the session from outside (revocation, shutdown) with an ERR to the client. */
  kill(message: string): void {
    if (this.ended) return;
    const seq = this.current ? (this.lastServerSeq + 1) & 0xff : 1;
    try {
      this.client.write(encodePacket(seq, encodeErr({ code: ER_CONNECTION_KILLED, sqlState: '70100', message: message.slice(0, 2000) })));
    } catch {
      // closing anyway
    }
    this.end(message);
  }

  // ---------- client → target ----------

  private clientData(chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.fromClient.push(chunk);
    } catch (e) {
      const pe = e instanceof ProtocolError ? e : new ProtocolError('invalid packet');
      this.replyErr(1, pe.code, pe.sqlState, pe.message);
      this.end(`client protocol error: ${pe.message}`);
      return;
    }
    void this.pump();
  }

  private clientPacket(seq: number, payload: Buffer, firstSeq: number): void {
    if (firstSeq !== 0) throw new ProtocolError(`packets out of order: a command must start at sequence id 0, got ${firstSeq}`, 1156, '08S01');
    this.queue.push({ payload: Buffer.from(payload), lastSeq: seq });
  }

  /** Stops reading the client while a command is in flight or queued, or the target is full. */
  private flow(): void {
    if (this.ended) return;
    if (this.current || this.queue.length || this.upstreamFull || this.pumping) this.client.pause();
    else this.client.resume();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    this.client.pause();
    try {
      while (!this.ended && !this.current && this.queue.length) {
        const q = this.queue.shift()!;
        try {
          await this.dispatch(q);
        } catch (e) {
          if (e instanceof ProtocolError) {
            this.replyErr((q.lastSeq + 1) & 0xff, e.code, e.sqlState, e.message);
            continue;
          }
          // The journal could not record the command: refuse it and end the session,
          // because nothing after it could be recorded either (fail closed).
          this.kill(`statement refused: the gateway could not record it (${(e as Error).message}); retry when the journal store is back`);
          return;
        }
      }
    } finally {
      this.pumping = false;
      this.flow();
    }
  }

  private replyErr(seq: number, code: number, sqlState: string, message: string): void {
    if (this.ended) return;
    this.client.write(encodePacket(seq, encodeErr({ code, sqlState, message: message.slice(0, 8000) })));
  }

  private forward(q: Queued, inflight: Omit<InFlight, 'idx' | 'phase' | 'colsLeft' | 'columns' | 'columnCount' | 'rows' | 'sample' | 'bytesOut'> & { phase?: Phase }): void {
    this.current = { idx: 0, colsLeft: 0, columns: [], columnCount: 0, rows: 0, sample: [], bytesOut: 0, ...inflight, phase: inflight.phase ?? 'first' };
    if (!this.server.write(encodePacket(0, q.payload))) this.upstreamFull = true;
  }

  private async dispatch(q: Queued): Promise<void> {
    const p = q.payload;
    if (p.length === 0) throw new ProtocolError('empty command packet', 1835, '08S01');
    const cmd = p[0]!;
    const errSeq = (q.lastSeq + 1) & 0xff;
    switch (cmd) {
      case COM_QUERY: {
        const text = decodeComQuery(p);
        const opts = { server: this.opts.server, noBackslashEscapes: this.noBackslashEscapes };
        let pieces = splitMysqlStatements(text, this.noBackslashEscapes);
        // Our split must agree with the classifier's reading, else the text is one command.
        const whole = classifyMysql(text, opts);
        if (pieces.length !== (whole.statements?.length ?? 1) || pieces.length > MAX_STATEMENTS) pieces = [text];
        if (pieces.length === 0) pieces = [text];
        const batch = pieces.length > 1 ? { batch: pieces.length } : {};
        const recorded = Promise.all(
          pieces.map((s, i) => {
            const c = this.session.prepared.resolve(pieces.length === 1 ? whole : classifyMysql(s, opts));
            return this.session.run({ kind: 'sql', dialect: 'mysql', text: s, meta: { ...batch, ...(pieces.length > 1 ? { index: i } : {}) } }, c);
          }),
        );
        const execs = await recorded;
        const denial = await this.verdicts(execs);
        if (denial) {
          this.replyErr(errSeq, ER_SPECIFIC_ACCESS_DENIED_ERROR, '42000', denialMessage(denial.denial));
          execs.forEach((e, i) => e.finish(i === denial.index ? { status: 'denied', error: { code: '42000', message: denial.denial.reason } } : { status: 'not_run' }));
          return;
        }
        if (this.ended) return;
        this.forward(q, { execs, simple: false });
        return;
      }
      case COM_INIT_DB: {
        const db = decodeComInitDb(p);
        const text = `USE \`${db.replace(/`/g, '``')}\``;
        const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text, meta: { protocol: 'COM_INIT_DB' } });
        const denial = await this.verdicts([exec]);
        if (denial) {
          this.replyErr(errSeq, ER_SPECIFIC_ACCESS_DENIED_ERROR, '42000', denialMessage(denial.denial));
          exec.finish({ status: 'denied', error: { code: '42000', message: denial.denial.reason } });
          return;
        }
        if (this.ended) return;
        this.forward(q, { execs: [exec], simple: true });
        return;
      }
      case COM_FIELD_LIST: {
        const nul = p.indexOf(0, 1);
        const table = p.subarray(1, nul < 0 ? p.length : nul).toString('utf8');
        const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text: `SHOW COLUMNS FROM \`${table.replace(/`/g, '``')}\``, meta: { protocol: 'COM_FIELD_LIST' } });
        const denial = await this.verdicts([exec]);
        if (denial) {
          this.replyErr(errSeq, ER_SPECIFIC_ACCESS_DENIED_ERROR, '42000', denialMessage(denial.denial));
          exec.finish({ status: 'denied', error: { code: '42000', message: denial.denial.reason } });
          return;
        }
        if (this.ended) return;
        this.forward(q, { execs: [exec], simple: false, phase: 'fieldList' });
        return;
      }
      case COM_PING:
      case COM_STATISTICS:
      case COM_SET_OPTION:
        this.forward(q, { execs: [], simple: true });
        return;
      case COM_RESET_CONNECTION:
        // The target drops its prepared statements and session state; so does the guard.
        this.session.prepared.clear();
        this.forward(q, { execs: [], simple: true });
        return;
      case COM_QUIT:
        this.server.write(encodePacket(0, p));
        this.end('client quit');
        return;
      case COM_CHANGE_USER:
        this.replyErr(errSeq, ER_NOT_SUPPORTED_YET, '42000', 'COM_CHANGE_USER is not supported through the gateway: reconnect as another key');
        return;
      default:
        this.replyErr(errSeq, ER_UNKNOWN_COM_ERROR, '08S01', `command not supported by the gateway yet: ${COMMAND_NAMES[cmd] ?? `0x${cmd.toString(16)}`}`);
        return;
    }
  }

  /** null when all may run; otherwise the first denial. Held commands wait here for their reviews. */
  private async verdicts(execs: Execution[]): Promise<{ index: number; denial: Denial } | null> {
    const blocked = execs.findIndex((e) => e.verdict.action === 'block');
    if (blocked >= 0) return { index: blocked, denial: (execs[blocked]!.verdict as { denial: Denial }).denial };
    const held = execs.map((e, i) => [e, i] as const).filter(([e]) => e.verdict.action === 'review');
    if (held.length === 0) return null;
    // MySQL has no asynchronous notice: the client just waits; the error carries the review id.
    const outcomes = await Promise.all(held.map(([e]) => this.session.hold(e)));
    const denied = outcomes.findIndex((o) => o.action === 'deny');
    if (denied < 0) return null;
    return { index: held[denied]![1], denial: (outcomes[denied] as { denial: Denial }).denial };
  }

  // ---------- target → client ----------

  private serverData(chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.fromServer.push(chunk);
    } catch (e) {
      this.kill(`the target sent an invalid packet (${(e as Error).message}); session closed`);
      return;
    }
    if (!this.client.write(chunk)) this.server.pause();
    if (this.completed) {
      this.completed = false;
      void this.pump();
    }
  }

  private serverPacket(seq: number, p: Buffer): void {
    this.lastServerSeq = seq;
    const f = this.current;
    if (!f) return; // unsolicited (e.g. the target's own "connection killed"): passed on
    f.bytesOut += p.length + 4;
    if (f.simple) {
      if (isErr(p)) this.finishCurrent(this.errRecord(p, f));
      else {
        if (p[0] === OK_HEADER && p.length >= 7) this.noteStatus(decodeOk(p, this.opts.capabilities).status);
        else if (isEof(p)) this.noteStatus(decodeEof(p).status);
        this.finishCurrent({ status: 'ok', tag: p[0] === OK_HEADER ? 'OK' : undefined });
      }
      this.done();
      return;
    }
    switch (f.phase) {
      case 'fieldList':
        if (isErr(p)) {
          this.finishCurrent(this.errRecord(p, f));
          this.done();
        } else if (isResultsetEnd(p, this.opts.deprecateEof)) {
          this.finishCurrent({ status: 'ok', tag: 'SHOW', rows: f.rows, columns: ['Field'], sample: f.sample, truncated: f.rows > f.sample.length });
          this.done();
        } else {
          const col = decodeColumnDefinition41(p);
          if (f.sample.length < this.opts.sampleRows) f.sample.push([col.name]);
          f.rows++;
        }
        return;
      case 'first': {
        if (isErr(p)) {
          this.finishCurrent(this.errRecord(p, f));
          this.done();
          return;
        }
        if (p[0] === OK_HEADER) {
          const ok = decodeOk(p, this.opts.capabilities);
          this.noteStatus(ok.status);
          this.finishCurrent({ status: 'ok', tag: 'OK', rows: ok.affectedRows, meta: { lastInsertId: ok.lastInsertId.toString(), warnings: ok.warnings, ...(ok.info ? { info: ok.info.slice(0, 256) } : {}) } });
          this.nextResult(ok.status);
          return;
        }
        if (p[0] === LOCAL_INFILE_HEADER) {
          // Never advertised (CLIENT_LOCAL_FILES): a target asking for a client file is refused.
          this.kill('the target asked for LOAD DATA LOCAL INFILE, which the gateway does not allow; session closed');
          return;
        }
        f.columnCount = decodeColumnCount(p);
        f.colsLeft = f.columnCount;
        f.columns = [];
        f.rows = 0;
        f.sample = [];
        f.phase = 'columns';
        return;
      }
      case 'columns': {
        if (f.columns.length < MAX_COLUMNS_RECORDED) {
          const c = decodeColumnDefinition41(p);
          f.columns.push({ name: c.name, type: c.type, charset: c.charset });
        }
        if (--f.colsLeft === 0) f.phase = this.opts.deprecateEof ? 'rows' : 'columnsEof';
        return;
      }
      case 'columnsEof':
        if (isErr(p)) {
          this.finishCurrent(this.errRecord(p, f));
          this.done();
          return;
        }
        if (!isEof(p)) throw new ProtocolError('expected EOF after column definitions');
        f.phase = 'rows';
        return;
      case 'rows': {
        if (p.length > 0 && p[0] === ERR_HEADER) {
          this.finishCurrent(this.errRecord(p, f));
          this.done();
          return;
        }
        if (isResultsetEnd(p, this.opts.deprecateEof)) {
          const status = this.opts.deprecateEof ? decodeOk(p, this.opts.capabilities).status : decodeEof(p).status;
          this.noteStatus(status);
          this.finishCurrent({
            status: 'ok',
            tag: 'SELECT',
            rows: f.rows,
            columns: f.columns.map((c) => c.name),
            sample: f.sample,
            truncated: f.rows > f.sample.length,
            bytesOut: f.bytesOut,
          });
          this.nextResult(status);
          return;
        }
        f.rows++;
        if (f.sample.length < this.opts.sampleRows && f.columns.length === f.columnCount) {
          const vals = decodeTextRow(p, f.columnCount);
          f.sample.push(vals.map((v, i) => this.render(v, f.columns[i]!)));
        }
        return;
      }
    }
  }

  private render(v: Buffer | null, c: Column): unknown {
    if (v === null) return null;
    const max = this.opts.maxValueBytes;
    if (c.charset === CHARSET_BINARY && !isNumericType(c.type)) {
      const half = max >> 1;
      return '\\x' + v.subarray(0, half).toString('hex') + (v.length > half ? '…' : '');
    }
    return v.length > max ? v.toString('utf8', 0, max) + '…' : v.toString('utf8');
  }

  private errRecord(p: Buffer, f: InFlight): ResultRecord {
    const e = decodeErr(p);
    return { status: 'error', error: { code: e.sqlState, message: e.message.slice(0, 2000), detail: `MySQL error ${e.code}` }, rows: f.phase === 'rows' ? f.rows : undefined };
  }

  private noteStatus(status: number): void {
    this.noBackslashEscapes = (status & SERVER_STATUS_NO_BACKSLASH_ESCAPES) !== 0;
  }

  /** Records the current result on the execution it belongs to (extra results, e.g. of CALL, are not recorded separately). */
  private finishCurrent(r: ResultRecord): void {
    const f = this.current!;
    const e = f.execs[f.idx];
    if (e) e.finish(r);
  }

  private nextResult(status: number): void {
    const f = this.current!;
    if ((status & SERVER_MORE_RESULTS_EXISTS) === 0) {
      this.done();
      return;
    }
    if (f.idx < f.execs.length - 1) f.idx++;
    else f.idx = f.execs.length; // results beyond the statements (CALL): not recorded
    f.phase = 'first';
    f.columns = [];
    f.rows = 0;
    f.sample = [];
    f.bytesOut = 0;
  }

  /** The answer is complete: statements that got no result did not run (an error stops a batch). */
  private done(): void {
    const f = this.current!;
    for (let i = f.idx + 1; i < f.execs.length; i++) f.execs[i]!.finish({ status: 'not_run' });
    this.current = null;
    this.completed = true;
  }

  private end(reason: string): void {
    const first = !this.ended;
    this.ended = true;
    if (this.current) for (const e of this.current.execs) e.finish({ status: 'unknown' });
    this.current = null;
    if (!this.client.destroyed) this.client.end();
    if (!this.server.destroyed) this.server.end();
    setTimeout(() => {
      this.client.destroy();
      this.server.destroy();
    }, 1000).unref();
    if (first) this.onEnd?.(reason);
  }
}

function isNumericType(t: number): boolean {
  return t <= 5 || t === 8 || t === 9 || t === 13 || t === 246;
}
