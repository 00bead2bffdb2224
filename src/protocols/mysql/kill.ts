// KILL through the gateway: `KILL [QUERY|CONNECTION] <id>` and the client's Ctrl-C.
//
// A client only knows the connection id the *gateway* gave it in its handshake; the target knows
// its own thread ids. Forwarding a KILL unchanged would end whatever target thread has that
// number, and every identity that shares a connection shares its database user, so one caller
// could end another's work. So the gateway never forwards a KILL: it looks the id up among its
// own MySQL sessions, checks the caller owns that session, and kills the matching target thread
// over a separate short connection with the held credentials.
//
// The `mysql`/`mariadb` CLI cancels on Ctrl-C from a *new* connection, made with no database,
// that sends `KILL QUERY <id>`; client.ts serves such logins as control sessions (control.ts).
import { randomInt } from 'node:crypto';
import type { MysqlConnection } from '../../config/schema.ts';
import { encodePacket } from './codec.ts';
import { connectUpstream } from './upstream.ts';
import { PacketReader } from './io.ts';
import { COM_QUERY, COM_QUIT, encodeCommand, encodeErr, isErr } from './packets.ts';

export const ER_NO_SUCH_THREAD = 1094;
export const ER_KILL_DENIED_ERROR = 1095;
export const ER_NOT_SUPPORTED_YET = 1235;

export interface KillRequest {
  scope: 'query' | 'connection';
  id: number;
}

/**
 * Reads the one KILL form the gateway serves: `KILL [HARD|SOFT] [QUERY|CONNECTION] <id>`, with
 * an optional trailing `;`. Anything else (KILL USER, KILL QUERY ID, an expression) is null: the
 * caller refuses it, because a KILL the gateway cannot map must never reach the target.
 */
export function parseKill(text: string): KillRequest | null {
  const m = /^\s*KILL\s+(?:(?:HARD|SOFT)\s+)?(?:(QUERY|CONNECTION)\s+)?(\d{1,10})\s*;?\s*$/i.exec(text);
  if (!m) return null;
  const id = Number(m[2]);
  if (!Number.isSafeInteger(id) || id <= 0 || id > 0xffffffff) return null;
  return { scope: m[1]?.toUpperCase() === 'QUERY' ? 'query' : 'connection', id };
}

/** What a refusal says about the forms that work. */
export const KILL_FORMS_HINT = 'send `KILL QUERY <id>` or `KILL CONNECTION <id>` on its own, with the id your client got from the gateway (or the id SHOW PROCESSLIST shows for one of your own sessions)';

export interface ThreadEntry {
  /** the connection id the gateway announced to the client */
  gatewayId: number;
  /** the target's thread id for the session's upstream connection */
  targetThreadId: number;
  identityId: string;
  connection: MysqlConnection;
  sessionId: string;
  charset: number;
  /** ends the gateway session (KILL CONNECTION) */
  end(reason: string): void;
}

export interface KillOutcome {
  /** payload of the OK or ERR packet for the client */
  reply: Buffer;
  ok: boolean;
  code?: number;
  sqlState?: string;
  message?: string;
  /** the session that was killed, when found */
  victim?: { sessionId: string; connection: string };
}

const SIDE_TIMEOUT_MS = 5000;
const MAX_ID_ATTEMPTS = 64;

/** The gateway's live MySQL sessions by announced connection id. */
export class MysqlThreads {
  private readonly byId = new Map<number, ThreadEntry>();

  get size(): number {
    return this.byId.size;
  }

  /** A fresh connection id (what the handshake announces), not in use by a live session. */
  allocateId(): number {
    for (let i = 0; i < MAX_ID_ATTEMPTS; i++) {
      const id = randomInt(1, 2 ** 31 - 1);
      if (!this.byId.has(id)) return id;
    }
    // 64 collisions in a 2^31 space cannot happen by chance with a bounded number of sessions.
    throw new Error('could not allocate a MySQL connection id');
  }

  register(e: ThreadEntry): void {
    this.byId.set(e.gatewayId, e);
  }

  unregister(gatewayId: number): void {
    this.byId.delete(gatewayId);
  }

  /**
   * The caller's session with this id: the gateway's id first; failing that, a target thread id
   * of one of the caller's own sessions (what CONNECTION_ID() and SHOW PROCESSLIST show).
   * Sessions of other identities are reported as such, never acted on.
   */
  find(id: number, identityId: string): { entry: ThreadEntry } | { error: 'unknown' | 'not_owner' } {
    const direct = this.byId.get(id);
    if (direct) return direct.identityId === identityId ? { entry: direct } : { error: 'not_owner' };
    let others = false;
    for (const e of this.byId.values()) {
      if (e.targetThreadId !== id) continue;
      if (e.identityId === identityId) return { entry: e };
      others = true;
    }
    return { error: others ? 'not_owner' : 'unknown' };
  }

  /** Carries out a KILL for `identityId`. Never throws: failures are ERR replies. */
  async kill(req: KillRequest, identityId: string): Promise<KillOutcome> {
    const found = this.find(req.id, identityId);
    if ('error' in found) {
      // The server answers "not owner" for threads of other users; the gateway does the same
      // for sessions of other identities, and otherwise says it does not know the id.
      return found.error === 'not_owner'
        ? refusal(ER_KILL_DENIED_ERROR, 'HY000', `You are not owner of thread ${req.id}: it belongs to another Gatehouse identity`)
        : refusal(ER_NO_SUCH_THREAD, 'HY000', `Unknown thread id: ${req.id} (not a live session of yours on this gateway)`);
    }
    const e = found.entry;
    const victim = { sessionId: e.sessionId, connection: e.connection.name };
    const reply = await killOnTarget(e.connection, req.scope, e.targetThreadId, e.charset).catch((err: Error) => encodeErr({ code: 2013, sqlState: 'HY000', message: `could not reach the target to kill the query: ${err.message}`.slice(0, 2000) }));
    if (req.scope === 'connection') e.end('killed by KILL CONNECTION');
    if (isErr(reply)) {
      const code = reply.readUInt16LE(1);
      // The thread may have ended by itself between lookup and kill: the gateway session is still
      // what the caller meant, and it is gone or idle now.
      return { reply, ok: false, code, message: `the target refused the kill (error ${code})`, victim };
    }
    return { reply, ok: true, victim };
  }
}

function refusal(code: number, sqlState: string, message: string): KillOutcome {
  return { reply: encodeErr({ code, sqlState, message }), ok: false, code, sqlState, message };
}

/** Runs `KILL QUERY|CONNECTION n` on the target over a short connection; resolves with the reply payload. */
async function killOnTarget(c: MysqlConnection, scope: KillRequest['scope'], threadId: number, charset: number): Promise<Buffer> {
  const up = await connectUpstream(c, { passCapabilities: 0, charset, timeoutMs: SIDE_TIMEOUT_MS });
  const sock = up.socket;
  try {
    const reader = new PacketReader(sock, 64 * 1024);
    for (const b of up.leftover) sock.unshift(b);
    sock.write(encodePacket(0, encodeCommand(COM_QUERY, `KILL ${scope === 'query' ? 'QUERY' : 'CONNECTION'} ${threadId}`)));
    const pkt = await reader.next(SIDE_TIMEOUT_MS, () => new Error('timed out waiting for the target'));
    reader.detach();
    sock.write(encodePacket(0, encodeCommand(COM_QUIT)));
    return pkt.payload;
  } finally {
    sock.end();
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}
