// The MySQL relay after authentication. Client → target: each command is read whole (bounded),
// turned into recorded Commands, and forwarded only once the session has recorded them and the
// verdicts allow it. One command is in flight at a time (the protocol is request/response; a
// pipelining client just waits), so a gateway-made reply can never land inside a target's.
// Commands the target does not answer (COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE) are forwarded
// without waiting. Target → client: see server-stream.ts (framing, pass/drop/replace) and
// response.ts (what the answers are read as and recorded).
import type { Duplex } from 'node:stream';
import type { Execution, Session } from '../../session/session.ts';
import type { Denial } from '../../guard/types.ts';
import { unknownClassification, type Classification } from '../../guard/classification.ts';
import { classifyMysql, type MysqlServer } from '../../guard/classify-mysql.ts';
import { PacketScanner, ProtocolError, encodePacket } from './codec.ts';
import { ServerStream } from './server-stream.ts';
import { ResponseTracker, type Expect, type ResponseOptions } from './response.ts';
import { KILL_FORMS_HINT, type MysqlThreads } from './kill.ts';
import { involvesKill, runKill } from './control.ts';
import { StatementTable, renderExecuteParams } from './statements.ts';
import {
  CLIENT_LOCAL_FILES,
  COMMAND_NAMES,
  COM_CHANGE_USER,
  COM_FIELD_LIST,
  COM_INIT_DB,
  COM_PING,
  COM_PROCESS_KILL,
  COM_QUERY,
  COM_QUIT,
  COM_RESET_CONNECTION,
  COM_SET_OPTION,
  COM_STATISTICS,
  COM_STMT_CLOSE,
  COM_STMT_EXECUTE,
  COM_STMT_FETCH,
  COM_STMT_PREPARE,
  COM_STMT_RESET,
  COM_STMT_SEND_LONG_DATA,
  CURSOR_TYPE_READ_ONLY,
  SERVER_STATUS_NO_BACKSLASH_ESCAPES,
  decodeComInitDb,
  decodeComProcessKill,
  decodeComChangeUser,
  encodeCommand,
  type ComChangeUser,
  decodeComQuery,
  decodeStmtExecute,
  decodeStmtFetch,
  decodeStmtId,
  decodeStmtPrepare,
  decodeStmtSendLongData,
  encodeErr,
  hasCap,
} from './packets.ts';

export interface MysqlRelayOptions {
  maxMessageBytes: number;
  sampleRows: number;
  maxValueBytes: number;
  /** CLIENT_DEPRECATE_EOF is in effect on both sides */
  deprecateEof: boolean;
  /** the upstream connection's capabilities (for OK packet layout; CLIENT_LOCAL_FILES) */
  capabilities: number;
  /** the target, so executable comments are read as it reads them */
  server?: MysqlServer;
  /** status flags of the login OK */
  status: number;
  /** the capabilities the client negotiated with the gateway (how its packets are laid out) */
  clientCapabilities?: number;
  /** masking of results and errors (see ResponseOptions.mask) */
  mask?: ResponseOptions['mask'];
  /** live sessions, for KILL (never forwarded as sent; see kill.ts) */
  threads?: MysqlThreads;
  /** re-authenticates a COM_CHANGE_USER and opens the new identity's session (change-user.ts) */
  changeUser?: (req: ComChangeUser) => Promise<{ ok: true; session: Session; mask: ResponseOptions['mask'] } | { ok: false; code: number; sqlState: string; message: string }>;
}

const ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227;
const ER_UNKNOWN_COM_ERROR = 1047;
const ER_NOT_SUPPORTED_YET = 1235;
const ER_CONNECTION_KILLED = 1927;
const MAX_STATEMENTS = 10_000;
/** parameters recorded per execute (the count is always exact), as for PostgreSQL */
const MAX_PARAMS_RECORDED = 100;

/** The shared denial shape as a MySQL error. */
export function denialMessage(d: Denial): string {
  return `${d.reason} (rule: ${d.rule}${d.reviewId ? `; review: ${d.reviewId}` : ''}; hint: ${d.hint})`;
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
  private readonly fromServer: ServerStream;
  private readonly tracker: ResponseTracker;
  /** protocol-level prepared statements, by the target's statement id */
  readonly statements = new StatementTable();
  private readonly queue: Queued[] = [];
  private completed = false;
  private pumping = false;
  private ended = false;
  private upstreamFull = false;
  private noBackslashEscapes: boolean;
  onEnd: ((reason: string) => void) | null = null;

  constructor(
    /** replaced when the client changes user (COM_CHANGE_USER) */
    private session: Session,
    private readonly client: Duplex,
    private readonly server: Duplex,
    private readonly opts: MysqlRelayOptions,
  ) {
    this.noBackslashEscapes = (opts.status & SERVER_STATUS_NO_BACKSLASH_ESCAPES) !== 0;
    this.fromClient = new PacketScanner((seq, payload, firstSeq) => this.clientPacket(seq, payload, firstSeq), opts.maxMessageBytes);
    this.tracker = new ResponseTracker(
      { sampleRows: opts.sampleRows, maxValueBytes: opts.maxValueBytes, deprecateEof: opts.deprecateEof, capabilities: opts.capabilities, mask: opts.mask },
      this.statements,
      {
        done: () => {
          this.completed = true;
        },
        status: (flags) => {
          this.noBackslashEscapes = (flags & SERVER_STATUS_NO_BACKSLASH_ESCAPES) !== 0;
        },
        // Only a statement in flight was forwarded, so the guard let it run (an allow rule that
        // names the flag, or an approved review). It must be a LOAD DATA LOCAL, and the client
        // must have offered files: only then does the target's request reach the client.
        mayLoadLocal: (exec) =>
          hasCap(opts.capabilities, CLIENT_LOCAL_FILES) && exec !== undefined && exec.verdict.action !== 'block' && (exec.verdict.classification?.flags.includes('load_data_local') ?? false),
        toServer: (b) => {
          if (!this.server.write(b)) this.upstreamFull = true;
        },
      },
    );
    // The target is trusted more than a client, but a bound keeps a broken one from exhausting memory.
    this.fromServer = new ServerStream(this.tracker, 1 << 30);
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
    const seq = this.tracker.busy ? (this.tracker.lastSeq + 1) & 0xff : 1;
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
    if (this.tracker.awaitingFile) {
      // A LOCAL INFILE file the guard allowed: forwarded as it comes, counted, never kept.
      this.tracker.fileData(payload.length);
      if (!this.server.write(encodePacket(firstSeq, payload))) this.upstreamFull = true;
      return;
    }
    if (firstSeq !== 0) throw new ProtocolError(`packets out of order: a command must start at sequence id 0, got ${firstSeq}`, 1156, '08S01');
    this.queue.push({ payload: Buffer.from(payload), lastSeq: seq });
  }

  /** Stops reading the client while a command is in flight or queued, or the target is full; a LOCAL INFILE file flows. */
  private flow(): void {
    if (this.ended) return;
    if (this.upstreamFull) this.client.pause();
    else if (this.tracker.awaitingFile) this.client.resume();
    else if (this.tracker.busy || this.queue.length || this.pumping) this.client.pause();
    else this.client.resume();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    this.client.pause();
    try {
      while (!this.ended && !this.tracker.busy && this.queue.length) {
        const q = this.queue.shift()!;
        try {
          await this.dispatch(q);
        } catch (e) {
          if (e instanceof ProtocolError) {
            // A command the target never answers must not get an answer either: the client
            // would take it for the answer to its next command. Such a malformed one ends the session.
            if (q.payload[0] === COM_STMT_SEND_LONG_DATA || q.payload[0] === COM_STMT_CLOSE) {
              this.kill(`malformed ${COMMAND_NAMES[q.payload[0]!]}: ${e.message}; session closed`);
              return;
            }
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

  /** Sends the command to the target; `expect` says what its answer is read as (none: no answer comes). */
  private forward(q: Queued, expect: Expect | null): void {
    if (expect) this.tracker.begin(expect);
    if (!this.server.write(encodePacket(0, q.payload))) this.upstreamFull = true;
  }

  /** Refuses recorded commands with the denial: the first denied one is `denied`, the others did not run. */
  private deny(errSeq: number, execs: Execution[], denied: { index: number; denial: Denial }): void {
    this.replyErr(errSeq, ER_SPECIFIC_ACCESS_DENIED_ERROR, '42000', denialMessage(denied.denial));
    execs.forEach((e, i) => e.finish(i === denied.index ? { status: 'denied', error: { code: '42000', message: denied.denial.reason } } : { status: 'not_run' }));
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
        // A KILL names a connection id that only the gateway can map (kill.ts): never forwarded.
        if (involvesKill(whole) && pieces.length === 1) return this.killCommand(errSeq, text, this.session.prepared.resolve(whole));
        const batch = pieces.length > 1 ? { batch: pieces.length } : {};
        const execs = await Promise.all(
          pieces.map((s, i) => {
            const c = this.session.prepared.resolve(pieces.length === 1 ? whole : classifyMysql(s, opts));
            return this.session.run({ kind: 'sql', dialect: 'mysql', text: s, meta: { ...batch, ...(pieces.length > 1 ? { index: i } : {}) } }, c);
          }),
        );
        const killAt = execs.findIndex((e) => e.verdict.classification !== undefined && involvesKill(e.verdict.classification));
        if (killAt >= 0) return this.deny(errSeq, execs, { index: killAt, denial: killInBatch() });
        const denial = await this.verdicts(execs);
        if (denial) return this.deny(errSeq, execs, denial);
        if (this.ended) return;
        this.forward(q, { kind: 'query', execs });
        return;
      }
      case COM_STMT_PREPARE:
        return this.prepare(q, errSeq);
      case COM_PROCESS_KILL: {
        // The deprecated command form of KILL CONNECTION, mapped like the statement.
        const text = `KILL CONNECTION ${decodeComProcessKill(p)}`;
        return this.killCommand(errSeq, text, classifyMysql(text), { protocol: 'COM_PROCESS_KILL' });
      }
      case COM_STMT_EXECUTE:
        return this.execute(q, errSeq);
      case COM_STMT_SEND_LONG_DATA: {
        // No answer: the data accumulates on the target until the next execute or reset. Here
        // only its size, hash and first bytes are kept, for the execute's record.
        const ld = decodeStmtSendLongData(p);
        const st = this.statements.get(ld.statementId);
        if (st && !this.statements.addLongData(st, ld.paramId, ld.data)) {
          this.kill('too many parameters with long data (COM_STMT_SEND_LONG_DATA) in this session; session closed');
          return;
        }
        this.forward(q, null);
        return;
      }
      case COM_STMT_CLOSE: {
        // No answer. The statement's open cursor, if any, is recorded now.
        this.statements.close(this.statements.resolveId(decodeStmtId(p)));
        this.forward(q, null);
        return;
      }
      case COM_STMT_RESET: {
        const st = this.statements.get(decodeStmtId(p));
        if (st) this.statements.reset(st);
        this.forward(q, { kind: 'simple' });
        return;
      }
      case COM_STMT_FETCH: {
        // Not a new command: it delivers rows of the execute that opened the cursor, which was
        // recorded and judged; they are recorded on it (see docs/mysql.md).
        const { statementId } = decodeStmtFetch(p);
        this.forward(q, { kind: 'fetch', statement: this.statements.get(statementId) });
        return;
      }
      case COM_INIT_DB: {
        const db = decodeComInitDb(p);
        const text = `USE \`${db.replace(/`/g, '``')}\``;
        const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text, meta: { protocol: 'COM_INIT_DB' } });
        const denial = await this.verdicts([exec]);
        if (denial) return this.deny(errSeq, [exec], denial);
        if (this.ended) return;
        this.forward(q, { kind: 'simple', exec });
        return;
      }
      case COM_FIELD_LIST: {
        const nul = p.indexOf(0, 1);
        const table = p.subarray(1, nul < 0 ? p.length : nul).toString('utf8');
        const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text: `SHOW COLUMNS FROM \`${table.replace(/`/g, '``')}\``, meta: { protocol: 'COM_FIELD_LIST' } });
        const denial = await this.verdicts([exec]);
        if (denial) return this.deny(errSeq, [exec], denial);
        if (this.ended) return;
        this.forward(q, { kind: 'fieldList', exec });
        return;
      }
      case COM_PING:
      case COM_STATISTICS:
      case COM_SET_OPTION:
        this.forward(q, { kind: 'simple' });
        return;
      case COM_RESET_CONNECTION: {
        // Recorded: it rolls back an open transaction and resets session variables, which matters
        // when reading a session back. Classed with SET, which it undoes.
        const c: Classification = { class: 'read', classes: ['read'], types: ['RESET_CONNECTION'], reads: [], writes: [], flags: [], functions: [], reason: 'resets the session (rolls back an open transaction)' };
        const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text: 'RESET CONNECTION', meta: { protocol: 'COM_RESET_CONNECTION' } }, c);
        const denial = await this.verdicts([exec]);
        if (denial) return this.deny(errSeq, [exec], denial);
        if (this.ended) return;
        // The target drops its prepared statements (both kinds) and session state; so does the gateway.
        this.session.prepared.clear();
        this.statements.clear('dropped by COM_RESET_CONNECTION');
        this.forward(q, { kind: 'simple', exec });
        return;
      }
      case COM_QUIT:
        this.server.write(encodePacket(0, p));
        this.end('client quit');
        return;
      case COM_CHANGE_USER:
        return this.changeUser(q, errSeq);
      default:
        this.replyErr(errSeq, ER_UNKNOWN_COM_ERROR, '08S01', `command not supported by the gateway yet: ${COMMAND_NAMES[cmd] ?? `0x${cmd.toString(16)}`}`);
        return;
    }
  }

  /**
   * COM_STMT_PREPARE: classified and checked now, so a forbidden statement never reaches the
   * target's parser (as PostgreSQL's Parse). Reviews wait for the execute, where the parameters
   * are known. Only a denied prepare is recorded; an allowed one is recorded at each execute.
   */
  private async prepare(q: Queued, errSeq: number): Promise<void> {
    const text = decodeStmtPrepare(q.payload);
    const classification = this.session.prepared.resolve(classifyMysql(text, { server: this.opts.server, noBackslashEscapes: this.noBackslashEscapes }));
    const cmd = { kind: 'sql' as const, dialect: 'mysql' as const, text, meta: { protocol: 'COM_STMT_PREPARE' } };
    const v = this.session.check(cmd, classification);
    if (involvesKill(classification)) {
      // A prepared KILL would run with the target's thread ids, which the gateway cannot map.
      const exec = await this.session.run(cmd, classification);
      return this.deny(errSeq, [exec], { index: 0, denial: killInBatch() });
    }
    if (v.action === 'block') {
      const exec = await this.session.run(cmd, classification);
      if (exec.verdict.action === 'block') return this.deny(errSeq, [exec], { index: 0, denial: exec.verdict.denial });
      exec.finish({ status: 'not_run', meta: { protocol: 'COM_STMT_PREPARE' } });
    }
    if (this.ended) return;
    this.forward(q, { kind: 'prepare', text, classification });
  }

  /**
   * COM_STMT_EXECUTE: one recorded command, with the prepared text and the bound parameters,
   * judged by what was prepared (checked again: the policy or the grant may have changed).
   */
  private async execute(q: Queued, errSeq: number): Promise<void> {
    const p = q.payload;
    if (p.length < 10) throw new ProtocolError('malformed packet: COM_STMT_EXECUTE too short');
    const id = this.statements.resolveId(p.readUInt32LE(1));
    const cursor = (p[5]! & CURSOR_TYPE_READ_ONLY) !== 0;
    const st = this.statements.get(id);
    const meta = { protocol: 'COM_STMT_EXECUTE', statement: id, ...(cursor ? { cursor: 'read_only' } : {}) };
    let exec: Execution;
    if (!st) {
      // Never prepared through the gateway, or forgotten: the guard decides about an unknown.
      const c = unknownClassification(`prepared statement ${id} is not known to the gateway`);
      exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text: `-- COM_STMT_EXECUTE of statement ${id}`, meta }, c);
    } else {
      // Parameters sent as long data are not in the packet: the decoder must know which.
      const x = decodeStmtExecute(p, st.numParams, st.types, { longData: new Set(st.longData.keys()) });
      if (x.newParamsBound) st.types = x.types;
      const params = renderExecuteParams(st, x, this.opts.maxValueBytes, MAX_PARAMS_RECORDED);
      exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text: st.text, params, meta }, this.session.prepared.resolve(st.classification));
    }
    const denial = await this.verdicts([exec]);
    if (denial) return this.deny(errSeq, [exec], denial);
    if (this.ended) return;
    if (st) {
      // The target clears long data at execute, and a new execute closes the previous cursor.
      this.statements.clearLongData(st);
      this.statements.endCursor(st, 'cursor closed by a new execute');
    }
    this.forward(q, { kind: 'execute', exec, statement: st });
  }

  /**
   * COM_CHANGE_USER: only with a valid key for the new user (change-user.ts). The target's
   * session is reset (COM_RESET_CONNECTION, as a change of user resets it) and its OK is the
   * client's answer; from then on commands are recorded in the new identity's session.
   */
  private async changeUser(q: Queued, errSeq: number): Promise<void> {
    const r = this.opts.changeUser ? await this.opts.changeUser(decodeComChangeUser(q.payload, this.opts.clientCapabilities ?? this.opts.capabilities)) : null;
    if (!r || !r.ok) {
      const e = r ?? { code: ER_NOT_SUPPORTED_YET, sqlState: '42000', message: 'COM_CHANGE_USER is not supported on this connection: reconnect as another key' };
      this.replyErr(errSeq, e.code, e.sqlState, e.message);
      this.end('change of user refused');
      return;
    }
    this.session = r.session;
    this.tracker.useMask(r.mask);
    this.statements.clear('dropped by COM_CHANGE_USER');
    if (this.ended) return;
    this.forward({ payload: encodeCommand(COM_RESET_CONNECTION), lastSeq: 0 }, { kind: 'simple' });
  }

  /** KILL, carried out by the gateway on the caller's own session (kill.ts); the reply is the gateway's. */
  private async killCommand(errSeq: number, text: string, c: Classification, meta: Record<string, unknown> = {}): Promise<void> {
    const threads = this.opts.threads;
    if (!threads) {
      const exec = await this.session.run({ kind: 'sql', dialect: 'mysql', text, meta }, c);
      return this.deny(errSeq, [exec], { index: 0, denial: killInBatch() });
    }
    const reply = await runKill(this.session, text, c, threads, meta);
    if (!this.ended) this.client.write(encodePacket(errSeq, reply));
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
    let out: Buffer[];
    try {
      out = this.fromServer.push(chunk);
    } catch (e) {
      this.kill(`the target sent an invalid packet (${(e as Error).message}); session closed`);
      return;
    }
    let ok = true;
    if (out.length === 1) ok = this.client.write(out[0]!);
    else if (out.length > 1) {
      this.client.cork();
      for (const b of out) ok = this.client.write(b) && ok;
      this.client.uncork();
    }
    if (!ok) this.server.pause();
    if (this.tracker.awaitingFile) this.flow();
    if (this.completed) {
      this.completed = false;
      void this.pump();
    }
  }

  private end(reason: string): void {
    const first = !this.ended;
    this.ended = true;
    this.tracker.abandon();
    this.statements.clear('open when the session ended');
    if (!this.client.destroyed) this.client.end();
    if (!this.server.destroyed) this.server.end();
    setTimeout(() => {
      this.client.destroy();
      this.server.destroy();
    }, 1000).unref();
    if (first) this.onEnd?.(reason);
  }
}

/** The refusal of a KILL the gateway cannot carry out (in a batch, prepared, or an unmapped form). */
function killInBatch(): Denial {
  return { code: 'kill_form', rule: 'gateway.kill', reason: 'KILL is carried out by the gateway and must be sent on its own, as a plain statement', hint: KILL_FORMS_HINT };
}
