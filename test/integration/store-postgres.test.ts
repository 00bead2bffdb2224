// The core client scenario with the gateway's own store in PostgreSQL instead of SQLite:
// keys, sessions and the journal live in a database on the throwaway (TLS-only) cluster.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { connectionConfig, findBinary, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';
import { startGateway } from '../helpers/gateway.ts';

function psql(dsn: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(findBinary('psql') ?? 'psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-d', dsn, ...args], {
      env: { ...process.env, PGCONNECT_TIMEOUT: '10', PGPASSFILE: '/dev/null', PGSERVICEFILE: '/dev/null' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test('PostgreSQL store: psql through the gateway, a wrong key, sessions show and verify', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'psql')) return;
  // Cleanups run last-in first-out: the gateway stops before the cluster holding its store.
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });
  const pgs = await startPostgres({ ssl: true });
  cleanups.push(() => pgs.stop());

  const admin = new pg.Client(connectionConfig(pgs));
  await admin.connect();
  await admin.query('create database gatehouse_store');
  await admin.end();
  // The cluster accepts only TLS over TCP; its certificate is self-signed, so the store URL
  // asks node-pg for TLS without verification (node-pg reads sslmode=require as verify-full).
  const storeUrl = `postgres://postgres:${encodeURIComponent(pgs.password)}@127.0.0.1:${pgs.port}/gatehouse_store?sslmode=no-verify`;

  const gw = await startGateway({ target: pgs, store: storeUrl });
  cleanups.push(() => gw.stop());
  const key = await gw.createKey('agent-pg');

  const out = await psql(gw.dsn('agent-pg', key), ['-Atc', "select 40+2; select 'x' || 'y'"]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), '42\nxy');

  const wrong = await psql(gw.dsn('agent-pg', key + 'x'), ['-Atc', 'select 1']);
  assert.equal(wrong.code, 2);
  assert.match(wrong.stderr, /password authentication failed for user "agent-pg"/);
  const client = new pg.Client({ ...gw.pgConfig('agent-pg', key + 'x'), connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  await assert.rejects(client.connect(), (err: any) => err.code === '28P01');
  await client.end().catch(() => {});

  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /journal intact/);

  const list = await gw.cli(['sessions', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  const sessions = JSON.parse(list.stdout);
  assert.equal(sessions.length, 1, 'one session: the refused logins opened none');
  const show = await gw.cli(['sessions', 'show', sessions[0].id, '--json']);
  assert.equal(show.code, 0, show.stderr);
  const events = JSON.parse(show.stdout).events;
  assert.deepEqual(
    events.filter((e: any) => e.type === 'command').map((e: any) => e.data.text),
    ['select 40+2', "select 'x' || 'y'"],
  );
  assert.deepEqual(
    events.filter((e: any) => e.type === 'result').map((r: any) => [r.data.status, r.data.tag, r.data.sample]),
    [
      ['ok', 'SELECT 1', [['42']]],
      ['ok', 'SELECT 1', [['xy']]],
    ],
  );

  // It really was PostgreSQL: the rows are in gatehouse_store, and there is no SQLite file.
  const store = new pg.Client(connectionConfig(pgs, { database: 'gatehouse_store' }));
  await store.connect();
  try {
    const rows = (await store.query('select (select count(*)::int from events) as events, (select count(*)::int from identities) as identities, (select count(*)::int from sessions) as sessions')).rows[0];
    assert.equal(rows.identities, 1);
    assert.equal(rows.sessions, 1);
    assert.ok(rows.events >= events.length, `events in the store: ${rows.events}`);
  } finally {
    await store.end();
  }
  assert.equal(fs.existsSync(path.join(gw.dir, 'data', 'gatehouse.db')), false, 'no SQLite store was created');
});
