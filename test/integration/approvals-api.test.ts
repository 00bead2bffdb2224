// The approvals API and CLI against a real gateway process. Nothing can hold a statement
// yet from here, and there is (deliberately) no endpoint that creates a review, so the
// decision paths are driven by one review seeded straight into the gateway's store.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { skipUnlessAvailable, startPostgres, type PgServer } from '../helpers/postgres.ts';
import { runCli, startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { openStore } from '../../src/store/db.ts';
import { bindingHash } from '../../src/approval/binding.ts';
import { findIdentity } from '../../src/identity/keys.ts';

interface Env {
  pgs: PgServer;
  gw: GatewayUnderTest;
  base: string;
  /** "<name>.<key>" bearer tokens */
  approver: string;
  agent: string;
  revoked: string;
}

let env: Env | null = null;
let unavailable: string | null = null;

before(async () => {
  skipUnlessAvailable({ skip: (m) => (unavailable = m ?? 'PostgreSQL binaries not installed') }, 'initdb', 'postgres');
  if (unavailable) return;
  const pgs = await startPostgres();
  let gw: GatewayUnderTest;
  try {
    gw = await startGateway({ target: pgs });
  } catch (e) {
    await pgs.stop();
    throw e;
  }
  const [approverKey, agentKey, revokedKey] = await Promise.all([
    gw.createKey('approver', { kind: 'human', groups: 'admin' }),
    gw.createKey('agent'),
    gw.createKey('revoked', { kind: 'human', groups: 'admin' }),
  ]);
  const r = await gw.cli(['keys', 'revoke', 'revoked']);
  assert.equal(r.code, 0, r.stderr);
  env = {
    pgs,
    gw,
    base: `http://127.0.0.1:${gw.apiPort}`,
    approver: `approver.${approverKey}`,
    agent: `agent.${agentKey}`,
    revoked: `revoked.${revokedKey}`,
  };
});

after(async () => {
  if (env) {
    await env.gw.stop();
    await env.pgs.stop();
  }
});

function ready(t: TestContext): Env | null {
  if (!env) {
    t.skip(unavailable ?? 'fixture did not start');
    return null;
  }
  return env;
}

async function api(e: Env, method: string, p: string, token?: string, body?: unknown): Promise<{ status: number; data: any }> {
  const res = await fetch(e.base + p, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, data: await res.json() };
}

test('API: approvals take any valid key; sessions stay admin-only', async (t) => {
  const e = ready(t);
  if (!e) return;
  const none = await api(e, 'GET', '/api/approvals');
  assert.equal(none.status, 401);
  assert.equal(none.data.code, 'unauthorized');
  assert.match(none.data.hint, /Bearer/);
  assert.equal((await api(e, 'GET', '/api/approvals', 'agent.not-the-key')).status, 401);
  assert.equal((await api(e, 'GET', '/api/approvals', 'nobody.x')).status, 401);
  assert.equal((await api(e, 'GET', '/api/approvals', e.revoked)).status, 401, 'a revoked key is refused');

  const list = await api(e, 'GET', '/api/approvals?status=pending', e.agent);
  assert.equal(list.status, 200);
  assert.deepEqual(list.data, []);
  assert.equal((await api(e, 'GET', '/api/approvals?status=bogus', e.agent)).status, 400);
  assert.equal((await api(e, 'GET', '/api/sessions', e.agent)).status, 401, 'a non-admin key does not read sessions');
  assert.equal((await api(e, 'GET', '/api/sessions', e.approver)).status, 200);
});

test('API: unknown reviews are 404 with the denial shape; a denial needs a reason', async (t) => {
  const e = ready(t);
  if (!e) return;
  for (const [method, p, body] of [
    ['GET', '/api/approvals/r-unknown00', undefined],
    ['POST', '/api/approvals/r-unknown00/approve', { comment: 'x' }],
    ['POST', '/api/approvals/r-unknown00/deny', { reason: 'x' }],
  ] as const) {
    const r = await api(e, method, p, e.approver, body);
    assert.equal(r.status, 404, `${method} ${p}`);
    assert.equal(r.data.code, 'not_found');
    assert.match(r.data.reason, /r-unknown00/);
    assert.ok(r.data.hint);
  }
  const noReason = await api(e, 'POST', '/api/approvals/r-unknown00/deny', e.approver, {});
  assert.equal(noReason.status, 400);
  assert.match(noReason.data.reason, /reason/);
  assert.equal((await api(e, 'POST', '/api/approvals', e.approver, {})).status, 404, 'there is no create endpoint');
});

test('CLI: list, missing and wrong keys, unknown review, unreachable gateway', async (t) => {
  const e = ready(t);
  if (!e) return;
  const port = await freePort();
  const cfg = YAML.parse(fs.readFileSync(e.gw.configPath, 'utf8'));
  cfg.listen.api = `127.0.0.1:${port}`;
  const deadConfig = path.join(e.gw.dir, 'dead.yaml');
  fs.writeFileSync(deadConfig, YAML.stringify(cfg));

  const [list, json, viaEnv, noKey, wrongKey, unknown, dead] = await Promise.all([
    e.gw.cli(['approvals', 'list', '--key', e.approver]),
    e.gw.cli(['approvals', 'list', '--status', 'pending', '--json', '--key', e.agent]),
    e.gw.cli(['approvals', 'list'], { GATEHOUSE_KEY: e.agent }),
    e.gw.cli(['approvals', 'list'], { GATEHOUSE_KEY: '' }),
    e.gw.cli(['approvals', 'list', '--key', 'agent.wrong']),
    e.gw.cli(['approvals', 'show', 'r-unknown00', '--key', e.approver]),
    runCli(deadConfig, ['approvals', 'list', '--key', e.approver]),
  ]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /no reviews/);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), []);
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /--key NAME\.KEY or set GATEHOUSE_KEY/);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stderr, /refused the key.*--key/);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no review "r-unknown00"/);
  assert.equal(dead.code, 1);
  assert.match(dead.stderr, new RegExp(`cannot reach the gateway API at http://127\\.0\\.0\\.1:${port} \\(connection refused\\)`));
});

test('CLI: show, refusals with their reasons, approve, and the journal records the decision', async (t) => {
  const e = ready(t);
  if (!e) return;
  // Seeded as a held statement would leave it (see the file comment).
  const now = Date.now();
  const id = 'r-seeded0000';
  const text = 'DELETE FROM orders WHERE id = $1';
  const store = await openStore({ store: 'sqlite', sqlitePath: path.join(e.gw.dir, 'data', 'gatehouse.db') });
  try {
    const agentId = (await findIdentity(store.db, 'agent'))!.id;
    await store.db
      .insertInto('reviews')
      .values({
        id,
        status: 'pending',
        binding_hash: bindingHash({ identityId: agentId, connection: 'main', text, params: ['42'] }),
        session_id: 'sess-seeded',
        identity_id: agentId,
        identity_name: 'agent',
        identity_kind: 'agent',
        connection: 'main',
        text,
        params: JSON.stringify(['42']),
        rule: 'default.review-agent-writes',
        reason: 'statements other than reads by agents require review',
        approvers: JSON.stringify(['admin']),
        min_approvals: 1,
        mode: 'defer', // a 'wait' review without a live session would be expired by the gateway's sweep
        decisions: '[]',
        preview: JSON.stringify({ plan: 'Delete on orders\n  ->  Index Scan using orders_pkey on orders', estimatedRows: 1 }),
        created_at: new Date(now).toISOString(),
        expires_at: new Date(now + 3600_000).toISOString(),
        decided_at: null,
      })
      .execute();
  } finally {
    await store.close();
  }

  const [show, self, badDeny] = await Promise.all([
    e.gw.cli(['approvals', 'show', id, '--key', e.approver]),
    e.gw.cli(['approvals', 'approve', id, '--key', e.agent]),
    e.gw.cli(['approvals', 'deny', id, '--key', e.approver]),
  ]);
  assert.equal(show.code, 0, show.stderr);
  for (const s of [text, 'asked by agent (agent) on connection main', 'rule: default.review-agent-writes', '0 of 1 approvals', 'estimated rows: 1', 'Index Scan using orders_pkey', `approvals approve ${id}`]) {
    assert.ok(show.stdout.includes(s), `show output lacks ${JSON.stringify(s)}:\n${show.stdout}`);
  }
  assert.equal(self.code, 1);
  assert.match(self.stderr, /not allowed: .*own statement/);
  assert.equal(badDeny.code, 2);
  assert.match(badDeny.stderr, /--reason TEXT/);

  const approve = await e.gw.cli(['approvals', 'approve', id, '--comment', 'checked the id', '--key', e.approver]);
  assert.equal(approve.code, 0, approve.stderr);
  assert.match(approve.stdout, new RegExp(`approved ${id}`));
  const again = await api(e, 'POST', `/api/approvals/${id}/deny`, e.approver, { reason: 'too late' });
  assert.equal(again.status, 409);
  assert.equal(again.data.code, 'not_pending');

  // The gateway journaled the decision in the requester's timeline, naming the approver.
  const check = await openStore({ store: 'sqlite', sqlitePath: path.join(e.gw.dir, 'data', 'gatehouse.db') });
  try {
    const rows = await check.db.selectFrom('events').select(['body']).where('type', '=', 'review.decided').execute();
    const decided = rows.map((r) => JSON.parse(r.body));
    assert.equal(decided.length, 1);
    assert.equal(decided[0].session, 'sess-seeded');
    assert.equal(decided[0].identity.name, 'agent');
    assert.deepEqual([decided[0].data.id, decided[0].data.decision, decided[0].data.by, decided[0].data.comment, decided[0].data.status], [id, 'approve', 'approver', 'checked the id', 'approved']);
  } finally {
    await check.close();
  }
  const verify = await e.gw.cli(['verify', '--json']);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  const approved = await api(e, 'GET', `/api/approvals/${id}`, e.agent);
  assert.equal(approved.data.status, 'approved');
  assert.deepEqual(approved.data.decisions.map((d: { by: string; comment: string }) => [d.by, d.comment]), [['approver', 'checked the id']]);
});
