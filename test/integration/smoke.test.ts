import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startPostgres, skipUnlessAvailable } from '../helpers/postgres.ts';
import { startGateway } from '../helpers/gateway.ts';

test('psql through the gateway to a TLS PostgreSQL, recorded and verifiable', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'psql')) return;
  const pgs = await startPostgres({ ssl: true });
  t.after(() => pgs.stop());
  const gw = await startGateway({ target: pgs });
  t.after(() => gw.stop());
  const key = await gw.createKey('agent-1');
  const out = execFileSync('psql', [gw.dsn('agent-1', key), '-Atc', "select 40+2; select 'x' || 'y'"], { encoding: 'utf8' });
  assert.equal(out.trim(), '42\nxy');
  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout);
  assert.equal(list.length, 1);
  const show = JSON.parse((await gw.cli(['sessions', 'show', list[0].id, '--json'])).stdout);
  const commands = show.events.filter((e: any) => e.type === 'command').map((e: any) => e.data.text);
  assert.deepEqual(commands, ['select 40+2', "select 'x' || 'y'"]);
  const results = show.events.filter((e: any) => e.type === 'result');
  assert.deepEqual(results.map((r: any) => [r.data.status, r.data.tag, r.data.sample]), [['ok', 'SELECT 1', [['42']]], ['ok', 'SELECT 1', [['xy']]]]);
});
