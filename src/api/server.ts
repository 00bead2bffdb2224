// The HTTP API: health for probes, read-only session data for admins, and approvals.
// Callers authenticate with a Gatehouse key (Bearer "<name>.<key>"): session data needs a key
// in the "admin" group; approvals take any active key, and the review service decides who
// may decide what.
import { serve, type ServerType } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import type { Journal } from '../journal/journal.ts';
import type { Signer } from '../journal/signer.ts';
import type { SessionRegistry } from '../session/registry.ts';
import type { Store } from '../store/db.ts';
import { findIdentity, keyMatches, standing, type Identity } from '../identity/keys.ts';
import { listSessions, sessionTimeline } from '../journal/read.ts';
import { REVIEW_STATUSES, ReviewError, type ReviewService } from '../approval/reviews.ts';

export interface ApiDeps {
  store: Store;
  journal: Journal;
  signer: Signer;
  registry: SessionRegistry;
  reviews?: ReviewService;
}

type ApiEnv = { Variables: { identity: Identity } };

const REVIEW_ERROR_STATUS = { not_found: 404, self_approval: 403, not_approver: 403, not_pending: 409, already_decided_by_you: 409, expired: 410 } as const;

export function buildApi(deps: ApiDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  app.notFound((c) => c.json({ code: 'not_found', reason: `no endpoint ${c.req.method} ${c.req.path}`, hint: 'see the API documentation' }, 404));
  app.get('/healthz', (c) => c.json({ ok: true, liveSessions: deps.registry.size, journal: deps.journal.head }));
  app.use('/api/*', async (c, next) => {
    const approvals = c.req.path === '/api/approvals' || c.req.path.startsWith('/api/approvals/');
    const h = c.req.header('authorization') ?? '';
    const m = /^Bearer ([^.\s]+)\.(.+)$/.exec(h);
    // The bearer token is "<key name>.<key>", so the lookup needs no scan of all keys.
    const id = m ? await findIdentity(deps.store.db, m[1]!) : null;
    if (!m || !id || !keyMatches(id, m[2]!) || !standing(id).ok || (!approvals && !id.groups.includes('admin'))) {
      return approvals
        ? c.json({ code: 'unauthorized', reason: 'a valid, unrevoked key is required', hint: 'send Authorization: Bearer <name>.<key> (on the CLI: --key NAME.KEY or GATEHOUSE_KEY)' }, 401)
        : c.json({ code: 'unauthorized', reason: 'an admin key is required', hint: 'send Authorization: Bearer <name>.<key> for a key in group "admin"' }, 401);
    }
    c.set('identity', id);
    await next();
  });
  app.get('/api/sessions', async (c) => c.json(await listSessions(deps.store, 100)));
  app.get('/api/sessions/:id', async (c) => {
    const t = await sessionTimeline(deps.store, c.req.param('id'));
    return t ? c.json(t) : c.json({ code: 'not_found', reason: 'no such session' }, 404);
  });

  // Approvals. There is deliberately no route that creates a review: only a held statement does.
  const reviews = deps.reviews;
  if (reviews) {
    const failed = (c: Context<ApiEnv>, e: unknown) => {
      if (e instanceof ReviewError) return c.json({ code: e.code, reason: e.message, hint: e.hint }, REVIEW_ERROR_STATUS[e.code]);
      throw e;
    };
    app.get('/api/approvals', async (c) => {
      const status = c.req.query('status');
      if (status && !REVIEW_STATUSES.includes(status as never)) {
        return c.json({ code: 'bad_request', reason: `unknown status "${status}"`, hint: `use one of ${REVIEW_STATUSES.join(', ')}` }, 400);
      }
      const limit = Number(c.req.query('limit') ?? 100);
      if (!Number.isInteger(limit) || limit < 1) return c.json({ code: 'bad_request', reason: 'limit must be a positive integer', hint: 'e.g. ?limit=50' }, 400);
      return c.json(await reviews.list({ status, limit }));
    });
    app.get('/api/approvals/:id', async (c) => {
      const r = await reviews.get(c.req.param('id'));
      if (!r) return c.json({ code: 'not_found', reason: `no review "${c.req.param('id')}"`, hint: 'see `gatehouse approvals list`' }, 404);
      return c.json({ ...r, url: reviews.approvalUrl(r.id) });
    });
    app.post('/api/approvals/:id/approve', async (c) => {
      const body = await jsonBody(c);
      if (body === undefined) return badJson(c);
      const comment = typeof body.comment === 'string' ? body.comment : undefined;
      try {
        return c.json(await reviews.decide(c.req.param('id'), c.get('identity'), 'approve', comment));
      } catch (e) {
        return failed(c, e);
      }
    });
    app.post('/api/approvals/:id/deny', async (c) => {
      const body = await jsonBody(c);
      if (body === undefined) return badJson(c);
      const reason = typeof body.reason === 'string' ? body.reason.trim() : '';
      if (!reason) return c.json({ code: 'bad_request', reason: 'a denial needs a reason', hint: 'send {"reason": "..."}; on the CLI: --reason TEXT' }, 400);
      try {
        return c.json(await reviews.decide(c.req.param('id'), c.get('identity'), 'deny', reason));
      } catch (e) {
        return failed(c, e);
      }
    });
  } else {
    const unavailable = (c: Context<ApiEnv>) => c.json({ code: 'unavailable', reason: 'approvals are not enabled in this gateway', hint: 'restart the gateway with a current version' }, 503);
    app.all('/api/approvals', unavailable);
    app.all('/api/approvals/*', unavailable);
  }
  return app;
}

/** The request's JSON object; {} for an empty body; undefined when it is not a JSON object. */
async function jsonBody(c: Context<ApiEnv>): Promise<Record<string, unknown> | undefined> {
  const text = await c.req.text();
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function badJson(c: Context<ApiEnv>) {
  return c.json({ code: 'bad_request', reason: 'the body must be a JSON object', hint: 'e.g. {"comment": "looks right"}' }, 400);
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
