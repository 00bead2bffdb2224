// Live sessions, and the watcher that ends those whose key was revoked or expired.
// The CLI revokes keys in another process, so the gateway polls the store.
import type { Kysely } from 'kysely';
import type { DB } from '../store/schema.ts';
import type { Session } from './session.ts';

export class SessionRegistry {
  private readonly live = new Set<Session>();
  private timer: NodeJS.Timeout | null = null;
  private polling = false;

  add(s: Session): void {
    this.live.add(s);
  }
  delete(s: Session): void {
    this.live.delete(s);
  }
  get size(): number {
    return this.live.size;
  }
  all(): Session[] {
    return [...this.live];
  }

  /** Polls every `intervalMs` (1 s by default), well within the promised 5 s. */
  watchRevocations(db: Kysely<DB>, intervalMs = 1000): void {
    this.timer = setInterval(() => void this.poll(db), intervalMs);
    this.timer.unref();
  }

  async poll(db: Kysely<DB>): Promise<void> {
    if (this.polling || this.live.size === 0) return;
    this.polling = true;
    try {
      const ids = [...new Set([...this.live].map((s) => s.identity.id))];
      const rows = await db.selectFrom('identities').select(['id', 'revoked_at', 'expires_at']).where('id', 'in', ids).execute();
      const now = Date.now();
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const s of this.live) {
        const r = byId.get(s.identity.id);
        if (!r) s.kill('key deleted');
        else if (r.revoked_at) s.kill(`key "${s.identity.name}" was revoked`);
        else if (r.expires_at && Date.parse(r.expires_at) <= now) s.kill(`key "${s.identity.name}" expired`);
      }
    } catch {
      // A transient store error: try again at the next tick.
    } finally {
      this.polling = false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
