// Read-side queries over sessions and their events, shared by the CLI and the API.
import type { Store } from '../store/db.ts';
import type { SessionTable } from '../store/schema.ts';

export interface TimelineEvent {
  seq: number;
  ts: string;
  type: string;
  data: Record<string, unknown>;
}

export async function listSessions(store: Store, limit: number): Promise<SessionTable[]> {
  return store.db.selectFrom('sessions').selectAll().orderBy('started_at', 'desc').limit(limit).execute();
}

export async function findSession(store: Store, idOrPrefix: string): Promise<SessionTable | null> {
  const exact = await store.db.selectFrom('sessions').selectAll().where('id', '=', idOrPrefix).executeTakeFirst();
  if (exact) return exact;
  if (!/^[0-9a-f-]{4,}$/.test(idOrPrefix)) return null;
  const rows = await store.db.selectFrom('sessions').selectAll().where('id', 'like', `${idOrPrefix}%`).limit(2).execute();
  return rows.length === 1 ? rows[0]! : null;
}

export async function sessionTimeline(store: Store, id: string): Promise<{ session: SessionTable; events: TimelineEvent[] } | null> {
  const session = await findSession(store, id);
  if (!session) return null;
  const rows = await store.db.selectFrom('events').select(['seq', 'ts', 'type', 'body']).where('session_id', '=', session.id).orderBy('seq').execute();
  const events = rows.map((r) => ({ seq: Number(r.seq), ts: r.ts, type: r.type, data: (JSON.parse(r.body).data ?? {}) as Record<string, unknown> }));
  return { session, events };
}
