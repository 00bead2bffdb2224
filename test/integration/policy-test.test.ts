/**
 * `gatehouse policy test` end to end: statements run through a gateway under an allow-all
 * policy, then replayed against a candidate that blocks drops and holds deletes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { connectionConfig, skipUnlessAvailable, startPostgres, type PgServer } from '../helpers/postgres.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';

const run = promisify(execFile);
let pgs: PgServer | undefined;
let gw: GatewayUnderTest | undefined;
let sessionId = '';

const CANDIDATE = `
# the policy: section's content at the top level
default:
  action: allow
rules:
  - name: no-drops
    match: { types: [DROP_TABLE] }
    action: block
  - name: hold-deletes
    match: { types: [DELETE] }
    action: review
    approvers: [dba]
`;

before(async () => {
  if (skipUnlessAvailable({ skip() {} }, 'initdb', 'postgres', 'psql')) return;
  pgs = await startPostgres({ ssl: true });
  const admin = new pg.Client(connectionConfig(pgs, { ssl: { rejectUnauthorized: false } }));
  await admin.connect();
  await admin.query('create table scratch (id int primary key, v text); insert into scratch select g, g::text from generate_series(1, 5) g');
  await admin.end();
  gw = await startGateway({ target: pgs });
  const key = await gw.createKey('agent');
  await run('psql', [
    gw.dsn('agent', key),
    '-v', 'ON_ERROR_STOP=1',
    '-c', 'select count(*) from scratch',
    '-c', "update scratch set v = 'x' where id = 1",
    '-c', 'delete from scratch where id = 2',
    '-c', 'drop table scratch',
  ]);
  const sessions = await gw.cli(['sessions', 'list', '--json']);
  assert.equal(sessions.code, 0, sessions.stderr);
  sessionId = (JSON.parse(sessions.stdout) as { id: string; identity_name: string }[]).find((s) => s.identity_name === 'agent')!.id;
});

after(async () => {
  await gw?.stop();
  await pgs?.stop();
});

test('policy test --json: what the candidate would block, hold and leave alone', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const file = path.join(gw.dir, 'candidate.yaml');
  fs.writeFileSync(file, CANDIDATE);
  const r = await gw.cli(['policy', 'test', '--policy', file, '--session', sessionId, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.valid, true);
  assert.equal(report.session, sessionId);
  assert.equal(report.replayed, 4);
  assert.equal(report.changed, 2);
  assert.deepEqual(report.byRule['no-drops'], { ...report.byRule['no-drops'], block: 1, review: 0, allow: 0 });
  assert.deepEqual(report.byRule['hold-deletes'], { ...report.byRule['hold-deletes'], block: 0, review: 1, allow: 0 });
  const drop = report.byRule['no-drops'].examples[0];
  assert.equal(drop.text, 'drop table scratch');
  assert.equal(drop.session, sessionId);
  assert.equal(drop.identity.name, 'agent');
  assert.deepEqual(drop.before, { action: 'allow', rule: 'default' });
  assert.equal(report.byRule['hold-deletes'].examples[0].text, 'delete from scratch where id = 2');
  // The select and the update are unchanged.
  assert.deepEqual(report.changes.map((c: any) => c.text).sort(), ['delete from scratch where id = 2', 'drop table scratch']);
  assert.equal(report.byRule.default.block + report.byRule.default.review + report.byRule.default.allow, 0);

  // The same, for people; a full config with a policy: key is accepted too.
  const full = path.join(gw.dir, 'full.yaml');
  fs.writeFileSync(full, `store: sqlite\npolicy:\n${CANDIDATE.replace(/^/gm, '  ')}`);
  const text = await gw.cli(['policy', 'test', '--policy', full, '--session', sessionId]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /rule no-drops \(block\):\n  1 would now be blocked\n    #\d+ session \S+ agent \(agent\): drop table scratch  \[was allow by default\]/);
  assert.match(text.stdout, /rule hold-deletes \(review\):\n  1 would now be held for review/);
  assert.match(text.stdout, /4 commands replayed, 2 changed/);

  // The default window (7d) covers this session too.
  const since = await gw.cli(['policy', 'test', '--policy', file, '--json']);
  assert.equal(since.code, 0, since.stderr);
  assert.ok(JSON.parse(since.stdout).replayed >= 4);
});

test('policy test: an invalid candidate exits 2 naming the field; an unknown session exits 1', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const bad = path.join(gw.dir, 'bad.yaml');
  fs.writeFileSync(bad, 'rules:\n  - name: no-drops\n    match: { classes: [drops] }\n    action: block\n');
  const r = await gw.cli(['policy', 'test', '--policy', bad, '--session', sessionId]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /invalid policy .*bad\.yaml: policy\.rules\[0\]\.match\.classes\[0\]: invalid option "drops"/);

  const none = await gw.cli(['policy', 'test', '--policy', path.join(gw.dir, 'missing.yaml')]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /cannot read .*missing\.yaml: ENOENT/);

  const good = path.join(gw.dir, 'candidate.yaml');
  fs.writeFileSync(good, CANDIDATE);
  const unknown = await gw.cli(['policy', 'test', '--policy', good, '--session', '00000000-0000-0000-0000-000000000000']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no session/);
});
