// pgbench through the gateway in every query mode: nothing fails, and every INSERT that
// reached pgbench_history is in the journal with a recorded result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { connectionConfig, findBinary, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';
import { startGateway } from '../helpers/gateway.ts';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs pgbench with a hard time bound: killed (and reported as such) on timeout. */
function pgbench(args: string[], timeoutMs: number): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(findBinary('pgbench')!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

interface Ev {
  seq: number;
  session: string;
  type: string;
  data: any;
}

const INSERT = /^\s*insert\s+into\s+pgbench_history\b/i;
const CLIENTS = 8;
const TX_PER_CLIENT = 100;

test('pgbench -i and TPC-B in simple, extended and prepared mode through the gateway: no failures, every INSERT journaled', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'pgbench')) return;
  // Cleanups run last-registered first: clients before the gateway before the cluster.
  const cleanups: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  const pgs = await startPostgres({ ssl: true });
  cleanups.push(() => pgs.stop());
  const gw = await startGateway({ target: pgs });
  cleanups.push(() => gw.stop());
  const key = await gw.createKey('bench');
  const dsn = gw.dsn('bench', key);

  const direct = new pg.Client(connectionConfig(pgs, { ssl: { rejectUnauthorized: false } }));
  // Should the cluster go first after all, its "terminating connection" must not become an uncaught error.
  direct.on('error', () => {});
  await direct.connect();
  cleanups.push(() => direct.end().catch(() => {}));
  const journal = new Database(path.join(gw.dir, 'data', 'gatehouse.db'), { readonly: true, fileMustExist: true });
  cleanups.push(() => journal.close());
  const eventsAfter = journal.prepare('select seq, session_id, type, body from events where seq > ? order by seq');
  const headSeq = () => Number((journal.prepare('select max(seq) as m from events').get() as { m: number | null }).m ?? 0);
  const readEvents = (after: number): Ev[] =>
    (eventsAfter.all(after) as { seq: number; session_id: string; type: string; body: string }[]).map((r) => {
      const b = JSON.parse(r.body);
      return { seq: Number(r.seq), session: r.session_id, type: r.type, data: b.data };
    });

  const init = await pgbench(['-i', '-s', '1', dsn], 60_000);
  assert.equal(init.code, 0, `pgbench -i failed (${init.signal ?? init.code}):\n${init.stdout}\n${init.stderr}`);
  assert.match(init.stderr + init.stdout, /done in/);
  const { rows: accounts } = await direct.query('select count(*)::int as n from pgbench_accounts');
  assert.equal(accounts[0].n, 100_000);

  const tps: Record<string, string> = {};
  const took: string[] = [`init ${init.ms} ms`];
  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    const before = headSeq();
    const run = await pgbench(['-c', String(CLIENTS), '-j', '2', '-t', String(TX_PER_CLIENT), '-M', mode, dsn], 60_000);
    const out = run.stdout + run.stderr;
    assert.equal(run.code, 0, `pgbench -M ${mode} failed (${run.signal ?? run.code}):\n${out}`);
    assert.match(out, /number of failed transactions: 0 \(/, `-M ${mode}:\n${out}`);
    const processed = /number of transactions actually processed: (\d+)/.exec(out);
    assert.ok(processed && Number(processed[1]) > 0, `-M ${mode}: no transactions processed:\n${out}`);
    assert.equal(Number(processed[1]), CLIENTS * TX_PER_CLIENT);
    tps[mode] = /tps = ([\d.]+)/.exec(out)?.[1] ?? '?';
    took.push(`${mode} ${run.ms} ms`);

    // pgbench truncates pgbench_history before each run (its vacuum step, also through the
    // gateway), so what is in the table now is exactly what this run added.
    const { rows } = await direct.query('select count(*)::int as n from pgbench_history');
    const added = rows[0].n as number;
    assert.equal(added, CLIENTS * TX_PER_CLIENT);

    // Results are recorded fire-and-forget after the target answers: allow them a moment.
    let events: Ev[] = [];
    let inserts: Ev[] = [];
    let missing: Ev[] = [];
    const deadline = Date.now() + 10_000;
    for (;;) {
      events = readEvents(before);
      inserts = events.filter((e) => e.type === 'command' && INSERT.test(String(e.data.text ?? '')));
      const results = new Map<number, Ev>();
      for (const e of events) if (e.type === 'result') results.set(e.data.command, e);
      missing = inserts.filter((c) => results.get(c.seq)?.data.status !== 'ok');
      if (missing.length === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(inserts.length, added, `-M ${mode}: ${inserts.length} INSERT command events for ${added} rows`);
    assert.deepEqual(missing.map((c) => c.seq), [], `-M ${mode}: INSERTs without an ok result`);

    // The shape of what was recorded per mode.
    const sample = inserts[0]!.data;
    if (mode === 'simple') {
      assert.match(sample.text, /VALUES \(\d+, \d+, \d+, -?\d+, CURRENT_TIMESTAMP\)/);
      assert.equal(sample.params, undefined);
    } else {
      assert.match(sample.text, /VALUES \(\$1, \$2, \$3, \$4, CURRENT_TIMESTAMP\)/);
      assert.equal(sample.protocol, 'extended');
      assert.equal(sample.params.length, 4);
      for (const p of sample.params) assert.match(p, /^-?\d+$/);
    }
    // One session per client, all in this run's events.
    const opened = events.filter((e) => e.type === 'session.open');
    assert.ok(opened.length >= CLIENTS, `-M ${mode}: ${opened.length} sessions opened`);
  }
  t.diagnostic(`gateway tps (${CLIENTS} clients, ${TX_PER_CLIENT} tx each): simple ${tps.simple}, extended ${tps.extended}, prepared ${tps.prepared}; pgbench ${took.join(', ')}`);

  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /intact/);
});
