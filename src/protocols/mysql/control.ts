// Sessions without a database, and the KILL command they exist for.
//
// The database name selects a Gatehouse connection, so a login without one reaches no target.
// The mysql/mariadb CLI makes exactly such a login when the user presses Ctrl-C: it connects
// with no database and sends `KILL QUERY <id>`. Refusing the login would make Ctrl-C print
// "cannot connect to server to kill query" and leave the query running. So an authenticated
// login without a database gets a control session: it serves KILL (and PING, QUIT), becomes a
// full session when the client selects a connection (USE, COM_INIT_DB: mariadb-dump does this),
// and answers anything else with "No database selected" and a hint.
import type { Duplex } from 'node:stream';
import type { Identity } from '../../identity/keys.ts';
import type { Classification } from '../../guard/classification.ts';
import { classifyMysql } from '../../guard/classify-mysql.ts';
import { Session, type Execution, type SessionDeps } from '../../session/session.ts';
import { PacketScanner, ProtocolError, encodePacket } from './codec.ts';
import { KILL_FORMS_HINT, ER_NOT_SUPPORTED_YET, parseKill, type MysqlThreads } from './kill.ts';
import { COM_INIT_DB, COM_PING, COM_QUERY, COM_QUIT, decodeComInitDb, decodeComQuery, encodeErr, encodeOk } from './packets.ts';
import { denialMessage } from './relay.ts';

const ER_NO_DB_ERROR = 1046;
const ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227;
/** A control session only waits for one KILL; an idle one is closed so it holds nothing. */
const CONTROL_IDLE_MS = 60_000;
const CONTROL_MAX_COMMAND = 64 * 1024;

/** True when the statement is, or contains, a KILL: those are never forwarded as they are. */
export function involvesKill(c: Classification): boolean {
  return c.types.includes('KILL');
}

/**
 * Records and carries out a KILL in `session` (the caller's own, or one opened for it on the
 * victim's connection). Returns the payload of the reply packet (OK or ERR).
 */
export async function runKill(session: Session, text: string, classification: Classification, threads: MysqlThreads, meta: Record<string, unknown> = {}): Promise<Buffer> {
  const req = parseKill(text);
  const exec = await session.run({ kind: 'sql', dialect: 'mysql', text, meta: { ...meta, gatewayKill: true } }, classification);
  if (!req) {
    const message = `this KILL is not served through the gateway: ${KILL_FORMS_HINT}`;
    exec.finish({ status: 'denied', error: { code: '42000', message } });
    return encodeErr({ code: ER_NOT_SUPPORTED_YET, sqlState: '42000', message });
  }
  const refused = await verdictOf(session, exec);
  if (refused) return refused;
  const out = await threads.kill(req, session.identity.id);
  exec.finish(
    out.ok
      ? { status: 'ok', tag: 'KILL', meta: { killed: out.victim } }
      : { status: 'error', error: { code: out.sqlState ?? 'HY000', message: out.message ?? 'kill failed', detail: out.code ? `MySQL error ${out.code}` : undefined }, meta: out.victim ? { killed: out.victim } : undefined },
  );
  return out.reply;
}

/** An ERR payload when the guard refuses (or a review is not approved); null when it may run. */
async function verdictOf(session: Session, exec: Execution): Promise<Buffer | null> {
  if (exec.verdict.action === 'allow') return null;
  const outcome = exec.verdict.action === 'block' ? { action: 'deny' as const, denial: exec.verdict.denial } : await session.hold(exec);
  if (outcome.action === 'allow') return null;
  exec.finish({ status: 'denied', error: { code: '42000', message: outcome.denial.reason } });
  return encodeErr({ code: ER_SPECIFIC_ACCESS_DENIED_ERROR, sqlState: '42000', message: denialMessage(outcome.denial) });
}

export interface ControlContext {
  deps: SessionDeps;
  threads: MysqlThreads;
  identity: Identity;
  peer: string;
  status: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /** the MySQL connections this identity may use */
  usable?: string[];
  /** Selects a Gatehouse connection: the control session becomes a full one (client.ts establish). */
  useConnection?: (name: string) => Promise<{ ok: true; status: number; start: (early: Buffer[]) => void } | { ok: false; code: number; sqlState: string; message: string }>;
}

/** The connection a `USE name` statement selects, or null when the text is something else. */
export function useTarget(text: string): string | null {
  const m = /^\s*USE\s+(?:`((?:[^`]|``){1,256})`|([A-Za-z0-9_$-]{1,256}))\s*;?\s*$/i.exec(text);
  if (!m) return null;
  return m[1] !== undefined ? m[1].replace(/``/g, '`') : m[2]!;
}

/** Serves a logged-in client that chose no database, until it quits or idles out. */
export function serveControl(sock: Duplex, early: Buffer[], ctx: ControlContext): void {
  let busy = Promise.resolve();
  let ended = false;
  /** while a connection is being selected, later packets wait here, framed as they came */
  let held: Buffer[] | null = null;
  let handedOver = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearTimeout(idle);
    sock.end();
    setTimeout(() => sock.destroy(), 1000).unref();
  };
  let idle = setTimeout(end, CONTROL_IDLE_MS);
  const reply = (seq: number, payload: Buffer) => {
    if (!ended) sock.write(encodePacket((seq + 1) & 0xff, payload));
  };
  const scanner = new PacketScanner((seq, payload, firstSeq) => {
    if (firstSeq !== 0) throw new ProtocolError(`packets out of order: a command must start at sequence id 0, got ${firstSeq}`, 1156, '08S01');
    const p = Buffer.from(payload);
    if (held) {
      held.push(encodePacket(firstSeq, p));
      return;
    }
    busy = busy.then(() => command(seq, p)).catch((e: Error) => {
      ctx.log('mysql control session failed', { peer: ctx.peer, error: e.message });
      reply(seq, encodeErr({ code: 1105, sqlState: 'HY000', message: 'the gateway could not carry out the command; see its log' }));
    });
  }, CONTROL_MAX_COMMAND);

  const command = async (seq: number, p: Buffer): Promise<void> => {
    clearTimeout(idle);
    idle = setTimeout(end, CONTROL_IDLE_MS);
    const cmd = p[0];
    if (cmd === COM_QUIT) return end();
    if (cmd === COM_PING) return reply(seq, encodeOk({ status: ctx.status }));
    const target = cmd === COM_INIT_DB ? decodeComInitDb(p) : cmd === COM_QUERY ? useTarget(decodeComQuery(p)) : null;
    if (target !== null && ctx.useConnection) return select(seq, target);
    if (cmd === COM_QUERY) {
      const text = decodeComQuery(p);
      const c = classifyMysql(text);
      if (involvesKill(c)) return reply(seq, await killFromControl(text, c));
    }
    // Anything else needs a target. With exactly one MySQL connection to choose from, that is
    // the one (mariadb-dump sets its session up before it selects the database); otherwise the
    // client must say which.
    const usable = ctx.usable ?? [];
    if (usable.length === 1 && ctx.useConnection) return select(seq, usable[0]!, p);
    const yours = usable.join(', ') || 'none';
    reply(seq, encodeErr({ code: ER_NO_DB_ERROR, sqlState: '3D000', message: `No database selected: the database name selects a Gatehouse connection (yours: ${yours}); reconnect with one, or USE one. Without one, only KILL is served.` }));
  };

  /**
   * `USE conn` / COM_INIT_DB: the client picks its connection after login (mariadb-dump logs in
   * without a database, then selects one). On success the socket is handed to a full session;
   * packets that arrived meanwhile go with it.
   */
  const select = async (seq: number, name: string, pending?: Buffer): Promise<void> => {
    held = [];
    const r = await ctx.useConnection!(name);
    if (!r.ok || ended) {
      const waiting = held;
      held = null;
      reply(seq, encodeErr({ code: r.ok ? 1105 : r.code, sqlState: r.ok ? 'HY000' : r.sqlState, message: r.ok ? 'connection closed' : r.message }));
      // What arrived meanwhile is served here after all, in order.
      for (const b of waiting) scanner.push(b);
      return;
    }
    handedOver = true;
    clearTimeout(idle);
    sock.off('data', onData);
    sock.off('close', end);
    sock.off('error', end);
    sock.pause();
    // A USE is answered here; a command that needed a target goes on to it, as sent.
    const early = pending ? [encodePacket(0, pending), ...held] : held;
    if (!pending) sock.write(encodePacket((seq + 1) & 0xff, encodeOk({ status: r.status })));
    held = null;
    r.start(early);
  };

  /** The kill is recorded in a session on the victim's connection, attributed to the caller. */
  const killFromControl = async (text: string, c: Classification): Promise<Buffer> => {
    const req = parseKill(text);
    const found = req ? ctx.threads.find(req.id, ctx.identity.id) : null;
    if (!req || !found || 'error' in found) {
      // Nothing to record against: no connection was reached. The refusal itself says why.
      const out = req ? await ctx.threads.kill(req, ctx.identity.id) : null;
      return out?.reply ?? encodeErr({ code: ER_NOT_SUPPORTED_YET, sqlState: '42000', message: `this KILL is not served through the gateway: ${KILL_FORMS_HINT}` });
    }
    const session = await Session.open(ctx.deps, { identity: ctx.identity, connection: found.entry.connection.name, protocol: 'mysql', clientAddr: ctx.peer, meta: { control: true } });
    try {
      return await runKill(session, text, c, ctx.threads, { protocol: 'control' });
    } finally {
      await session.close('control session: kill done');
    }
  };

  const onData = (chunk: Buffer) => {
    if (ended || handedOver) return;
    try {
      scanner.push(chunk);
    } catch (e) {
      const pe = e instanceof ProtocolError ? e : new ProtocolError('invalid packet');
      reply(0, encodeErr({ code: pe.code, sqlState: pe.sqlState, message: pe.message }));
      end();
    }
  };
  sock.on('data', onData);
  sock.on('close', end);
  sock.on('error', end);
  for (const b of early) onData(b);
  sock.resume();
}
