// The HTTP API: health for probes, and read-only session data for admins. Callers
// authenticate with a Gatehouse key (Bearer) whose identity is in the "admin" group.
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import type { Journal } from '../journal/journal.ts';
import type { Signer } from '../journal/signer.ts';
import type { SessionRegistry } from '../session/registry.ts';
import type { Store } from '../store/db.ts';
import { findIdentity, keyMatches, standing } from '../identity/keys.ts';
import { listSessions, sessionTimeline } from '../journal/read.ts';

export interface ApiDeps {
  store: Store;
  journal: Journal;
  signer: Signer;
  registry: SessionRegistry;
}

export function buildApi(deps: ApiDeps): Hono {
  const app = new Hono();
  app.get('/healthz', (c) => c.json({ ok: true, liveSessions: deps.registry.size, journal: deps.journal.head }));
  app.use('/api/*', async (c, next) => {
    const h = c.req.header('authorization') ?? '';
    const m = /^Bearer ([^.\s]+)\.(.+)$/.exec(h);
    // The bearer token is "<key name>.<key>", so the lookup needs no scan of all keys.
    const id = m ? await findIdentity(deps.store.db, m[1]!) : null;
    if (!m || !id || !keyMatches(id, m[2]!) || !standing(id).ok || !id.groups.includes('admin')) {
      return c.json({ code: 'unauthorized', reason: 'an admin key is required', hint: 'send Authorization: Bearer <name>.<key> for a key in group "admin"' }, 401);
    }
    await next();
  });
  app.get('/api/sessions', async (c) => c.json(await listSessions(deps.store, 100)));
  app.get('/api/sessions/:id', async (c) => {
    const t = await sessionTimeline(deps.store, c.req.param('id'));
    return t ? c.json(t) : c.json({ code: 'not_found', reason: 'no such session' }, 404);
  });
  return app;
}

export async function startApi(deps: ApiDeps, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const app = buildApi(deps);
  return new Promise((resolve, reject) => {
    let server: ServerType;
    try {
      server = serve({ fetch: app.fetch, hostname: host, port }, (info) => {
        resolve({ port: info.port, close: () => new Promise<void>((r) => server.close(() => r())) });
      });
      server.once('error', reject);
    } catch (e) {
      reject(e);
    }
  });
}
