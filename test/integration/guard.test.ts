/**
 * The guard on the PostgreSQL wire, end to end: blocks with the exact transaction state,
 * statements held in a live psql session until a person decides, approvals bound to the
 * statement and used once, read-only enforced by the database too, and held statements
 * that never run after a crash.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { connectionConfig, skipUnlessAvailable, startPostgres, type PgServer } from '../helpers/postgres.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';

const run = promisify(execFile);
let pgs: PgServer | undefined;
let gw: GatewayUnderTest | undefined;
const keys: Record<string, string> = {};

const policy = {
  default: { action: 'allow' },
  rules: [
    { name: 'no-drops', match: { types: ['DROP_TABLE'] }, action: 'block', reason: 'dropping tables is not allowed', hint: 'ask a DBA' },
    { name: 'fast-hold', match: { tables: { write: ['t_fast'] } }, action: 'review', approvers: ['dba'], holdFor: '1s' },
    { name: 'hold-deletes', match: { types: ['DELETE'] }, action: 'review', approvers: ['dba'], holdFor: '20s' },
    { name: 'no-unknown', match: { classes: ['unknown'] }, action: 'block', reason: 'cannot tell what this does' },
    { name: 'two-for-truncate', match: { types: ['TRUNCATE'] }, action: 'review', approvers: ['dba'], minApprovals: 2, mode: 'defer' },
  ],
  readOnly: [{ connections: ['main'], identities: ['reader'] }],
};

before(async () => {
  if (skipUnlessAvailable({ skip() {} }, 'initdb', 'postgres', 'psql')) return;
  pgs = await startPostgres({ ssl: true });
  const admin = new pg.Client(connectionConfig(pgs, { ssl: { rejectUnauthorized: false } }));
  await admin.connect();
  await admin.query('create table t (id int primary key, v text); insert into t select g, g::text from generate_series(1, 20) g');
  await admin.query('create table t_fast (id int primary key); insert into t_fast select generate_series(1, 5)');
  await admin.query('create table t2 (id int); insert into t2 values (1), (2)');
  await admin.query(`create function sneaky() returns int language sql as $$ insert into t values (99, 'x') returning 1 $$`);
  await admin.end();
  const conn = (name: string, preview: string) => ({ name, type: 'postgres', host: '127.0.0.1', port: pgs!.port, database: 'postgres', user: 'postgres', password: pgs!.password, tls: 'require', preview });
  gw = await startGateway({ target: pgs, extra: { policy, connections: [conn('main', 'none'), conn('previewed', 'dryRun')] } });
  keys.agent = await gw.createKey('agent', { connections: 'main,previewed' });
  keys.dba1 = await gw.createKey('dba1', { kind: 'human', groups: 'dba' });
  keys.dba2 = await gw.createKey('dba2', { kind: 'human', groups: 'dba' });
  keys.dbagent = await gw.createKey('dbagent', { groups: 'dba' });
  keys.reader = await gw.createKey('reader');
});

after(async () => {
  await gw?.stop();
  await pgs?.stop();
});

async function target(sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(connectionConfig(pgs!, { ssl: { rejectUnauthorized: false } }));
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

async function api(method: string, path: string, who: string, body?: unknown): Promise<{ status: number; json: any }> {
  const r = await fetch(`http://127.0.0.1:${gw!.apiPort}${path}`, {
    method,
    headers: { authorization: `Bearer ${who}.${keys[who]}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, json: await r.json() };
}

/** Waits for a pending review of `text` and returns its id. */
async function pendingReview(fragment: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const { json } = await api('GET', '/api/approvals?status=pending', 'dba1');
    const r = (json as any[]).find((x) => String(x.text).includes(fragment));
    if (r) return r.id;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`no pending review for ${fragment}`);
}

function psql(user: string, args: string[]): { done: Promise<{ code: number; stdout: string; stderr: string }> } {
  const p = spawn('psql', [gw!.dsn(user, keys[user]!), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
  return { done: new Promise((resolve) => p.on('close', (code) => (clearTimeout(t), resolve({ code: code ?? -1, stdout, stderr })))) };
}

test('block: 42501 with reason, rule and hint; the session goes on; the transaction state is exact', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const r = await psql('agent', ['-c', 'drop table t', '-c', 'select 40 + 2']).done;
  assert.match(r.stderr, /ERROR:\s+dropping tables is not allowed/);
  assert.match(r.stderr, /DETAIL:\s+rule: no-drops/);
  assert.match(r.stderr, /HINT:\s+ask a DBA/);
  assert.match(r.stdout, /42/);

  const c = new pg.Client(gw.pgConfig('agent', keys.agent!));
  await c.connect();
  try {
    await assert.rejects(c.query('drop table t'), (e: any) => e.code === '42501' && e.detail === 'rule: no-drops' && e.hint === 'ask a DBA');
    // Extended protocol: refused at Parse.
    await assert.rejects(c.query({ text: 'drop table t2', values: [] }), (e: any) => e.code === '42501');
    assert.equal((await c.query('select 1 as x')).rows[0].x, 1);
    // Inside a transaction the block aborts it, exactly as an error from PostgreSQL would.
    await c.query('begin');
    await assert.rejects(c.query('drop table t'), (e: any) => e.code === '42501');
    await assert.rejects(c.query('select 1'), (e: any) => e.code === '25P02');
    await c.query('rollback');
    // Hidden by comments and dollar quotes, in a multi-statement string: still refused whole.
    await assert.rejects(c.query("select 1 /* ; */; select $$;$$; drop /**/ table t"), (e: any) => e.code === '42501');
    assert.equal((await c.query('select count(*)::int as n from t')).rows[0].n, 20);
  } finally {
    await c.end();
  }
  assert.equal((await target("select to_regclass('t') is not null as ok")).rows[0].ok, true);
});

test('held in psql, approved from another process: it runs, and the journal shows requested, decided, result', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const p = psql('agent', ['-c', 'delete from t where id = 1']);
  const id = await pendingReview('where id = 1');
  assert.equal((await target('select count(*)::int as n from t where id = 1')).rows[0].n, 1, 'a held statement must not have reached the target');
  const cli = await gw.cli(['approvals', 'approve', id, '--comment', 'looks fine', '--key', `dba1.${keys.dba1}`]);
  assert.equal(cli.code, 0, cli.stderr);
  const r = await p.done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`held for approval: review ${id}, approve with \`gatehouse approvals approve ${id}\``));
  assert.match(r.stdout, /DELETE 1/);
  const sessions = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout) as { id: string }[];
  let found = false;
  for (const s of sessions) {
    const ev = JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout).events as { type: string; data: any; seq: number }[];
    const cmd = ev.find((e) => e.type === 'command' && e.data.text === 'delete from t where id = 1');
    if (!cmd) continue;
    found = true;
    const types = ev.filter((e) => e.seq > cmd.seq).map((e) => e.type);
    assert.deepEqual(types.slice(0, 3), ['review.requested', 'review.decided', 'result']);
    const result = ev.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
    assert.equal(result.data.status, 'ok');
    assert.equal(result.data.tag, 'DELETE 1');
  }
  assert.ok(found, 'the held command is in the journal');
});

test('denied: psql shows the approver\'s reason and the session goes on', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const p = psql('agent', ['-c', 'delete from t where id = 2', '-c', 'select 7 * 6']);
  const id = await pendingReview('where id = 2');
  const d = await api('POST', `/api/approvals/${id}/deny`, 'dba2', { reason: 'not during the freeze' });
  assert.equal(d.status, 200, JSON.stringify(d.json));
  const r = await p.done;
  assert.match(r.stderr, new RegExp(`ERROR:\\s+review ${id} was denied by dba2: not during the freeze`));
  assert.match(r.stdout, /42/);
  assert.equal((await target('select count(*)::int as n from t where id = 2')).rows[0].n, 1);
});

test('timed out: the error carries the review id; after approval a retry runs once, a second retry is held again', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = new pg.Client(gw.pgConfig('agent', keys.agent!));
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  await c.connect();
  try {
    const err: any = await c.query('delete from t_fast where id = 1').then(
      () => null,
      (e) => e,
    );
    assert.ok(err, 'the held statement must fail after holdFor');
    assert.equal(err.code, '42501');
    const id = /review (r-[a-z0-9]+)/.exec(err.message)?.[1];
    assert.ok(id, err.message);
    assert.match(err.detail, new RegExp(`review: ${id}`));
    assert.ok(notices.some((n) => n.includes(`held for approval: review ${id}`)));
    // Self-approval is refused, even for a member of the approving group.
    const self = await api('POST', `/api/approvals/${id}/approve`, 'agent', {});
    assert.equal(self.status, 403);
    const ok = await api('POST', `/api/approvals/${id}/approve`, 'dba1', { comment: 'ok once' });
    assert.equal(ok.status, 200, JSON.stringify(ok.json));
    const r = await c.query('delete from t_fast where id = 1');
    assert.equal(r.rowCount, 1);
    // The approval is used up: the same statement is held again (and times out again).
    await assert.rejects(c.query('delete from t_fast where id = 1'), (e: any) => e.code === '42501' && /review r-/.test(e.message) && !e.message.includes(id!));
    // A different statement is not covered by the approval.
    await assert.rejects(c.query('delete from t_fast where id = 2'), (e: any) => e.code === '42501');
  } finally {
    await c.end();
  }
});

test('refusals: no self-approval; minApprovals 2 needs two different approvers', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = new pg.Client(gw.pgConfig('dbagent', keys.dbagent!));
  await c.connect();
  try {
    const err: any = await c.query('truncate t2').then(() => null, (e) => e);
    assert.equal(err?.code, '42501');
    const id = /review (r-[a-z0-9]+)/.exec(err.message)?.[1]!;
    assert.ok(id, err.message);
    const self = await api('POST', `/api/approvals/${id}/approve`, 'dbagent', {});
    assert.equal(self.status, 403);
    assert.equal(self.json.code, 'self_approval');
    assert.equal((await api('POST', `/api/approvals/${id}/approve`, 'dba1', {})).status, 200);
    await assert.rejects(c.query('truncate t2'), (e: any) => e.code === '42501', 'one approval of two is not enough');
    const twice = await api('POST', `/api/approvals/${id}/approve`, 'dba1', {});
    assert.equal(twice.status, 409);
    assert.equal((await api('POST', `/api/approvals/${id}/approve`, 'dba2', {})).status, 200);
    await c.query('truncate t2');
  } finally {
    await c.end();
  }
  assert.equal((await target('select count(*)::int as n from t2')).rows[0].n, 0);
});

test('read-only: the guard blocks writes, and a write hidden in a function fails in the database', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = new pg.Client(gw.pgConfig('reader', keys.reader!));
  await c.connect();
  try {
    assert.equal((await c.query('select count(*)::int as n from t')).rows[0].n > 0, true);
    await assert.rejects(c.query("insert into t values (100, 'x')"), (e: any) => e.code === '42501' && /readOnly/.test(e.detail));
    await assert.rejects(c.query('set default_transaction_read_only = off'), (e: any) => e.code === '42501');
    await assert.rejects(c.query('begin read write'), (e: any) => e.code === '42501');
    await assert.rejects(c.query('select sneaky()'), (e: any) => e.code === '25006');
  } finally {
    await c.end();
  }
  assert.equal((await target('select count(*)::int as n from t where id = 99')).rows[0].n, 0);
});

test('kill -9 while a statement is held: after restart the review is expired and the target never ran it', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const p = psql('agent', ['-c', 'delete from t where id = 3']);
  const id = await pendingReview('where id = 3');
  await gw.kill9();
  await p.done;
  await gw.restart();
  const r = await api('GET', `/api/approvals/${id}`, 'dba1');
  assert.equal(r.json.status, 'expired');
  assert.equal((await api('POST', `/api/approvals/${id}/approve`, 'dba1', {})).status >= 400, true);
  assert.equal((await target('select count(*)::int as n from t where id = 3')).rows[0].n, 1);
  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout);
});

test('preview: a held DELETE carries its EXPLAIN plan and, with dryRun, the rows it would affect', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = new pg.Client({ ...gw.pgConfig('agent', keys.agent!), database: 'previewed' });
  await c.connect();
  try {
    const pending = c.query('delete from t where id between 10 and 12').catch((e) => e);
    const id = await pendingReview('between 10 and 12');
    let review: any;
    for (let i = 0; i < 50 && !review?.preview; i++) {
      review = (await api('GET', `/api/approvals/${id}`, 'dba1')).json;
      if (!review.preview) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(review.preview, 'preview attached');
    assert.match(review.preview.plan, /Delete on t/);
    assert.equal(typeof review.preview.estimatedRows, 'number');
    assert.equal(review.preview.affectedRows, 3);
    // The dry run was rolled back, and nothing ran before approval.
    assert.equal((await target('select count(*)::int as n from t where id between 10 and 12')).rows[0].n, 3);
    const show = await gw.cli(['approvals', 'show', id, '--key', `dba1.${keys.dba1}`]);
    assert.match(show.stdout, /Delete on t/);
    await api('POST', `/api/approvals/${id}/deny`, 'dba1', { reason: 'no' });
    const err = await pending;
    assert.equal(err.code, '42501');
  } finally {
    await c.end();
  }
});

test('a fastpath function call (psql \\lo_import) cannot be classified: it is refused, and the session goes on', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const before = (await target('select count(*)::int as n from pg_largeobject_metadata')).rows[0].n;
  const r = await psql('agent', ['-c', `\\lo_import ${pgs!.dataDir}/PG_VERSION`, '-c', 'select 6 * 7']).done;
  assert.match(r.stderr, /cannot tell what this does/);
  assert.match(r.stdout, /42/);
  assert.equal((await target('select count(*)::int as n from pg_largeobject_metadata')).rows[0].n, before);
});
