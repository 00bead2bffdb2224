// kill -9 of the gateway under write load: the journal still verifies, every row that
// reached the target has its command recorded (commands are durable before they are
// forwarded), and the chain continues cleanly after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
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

interface Proc {
  done: Promise<Run>;
  kill(): void;
}

/** Starts pgbench with a hard time bound: SIGKILLed on timeout. */
function pgbench(args: string[], timeoutMs: number): Proc {
  const started = Date.now();
  const p = spawn(findBinary('pgbench')!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const done = new Promise<Run>((resolve, reject) => {
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
  return { done, kill: () => p.kill('SIGKILL') };
}

function psql(dsn: string, sql: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(findBinary('psql')!, [dsn, '-v', 'ON_ERROR_STOP=1', '-Atc', sql], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`psql failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const INSERT = /^\s*insert\s+into\s+pgbench_history\b/i;

test('kill -9 of the gateway under 8 pgbench writers: journal verifies, every pgbench_history row has its command', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'pgbench', 'psql')) return;
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
  direct.on('error', () => {});
  await direct.connect();
  cleanups.push(() => direct.end().catch(() => {}));

  const init = await pgbench(['-i', '-s', '1', '-q', dsn], 60_000).done;
  assert.equal(init.code, 0, `pgbench -i failed:\n${init.stdout}\n${init.stderr}`);

  const bench = pgbench(['-c', '8', '-j', '2', '-T', '20', '-M', 'prepared', dsn], 60_000);
  cleanups.push(() => bench.kill());
  // About 3 s of writing, and in any case some rows written, before the crash.
  const startedAt = Date.now();
  let before = 0;
  for (;;) {
    await sleep(250);
    before = (await direct.query('select count(*)::int as n from pgbench_history')).rows[0].n;
    if ((before > 0 && Date.now() - startedAt >= 3000) || Date.now() - startedAt > 20_000) break;
  }
  assert.ok(before > 0, 'pgbench wrote nothing within 20 s');
  await gw.kill9();
  const loadMs = Date.now() - startedAt;
  const run = await bench.done;
  const out = run.stdout + run.stderr;
  // The clients lost their connections: pgbench reports them as aborted, which is expected.
  assert.notEqual(run.code, 0, `pgbench should report the lost connections:\n${out}`);
  assert.match(out, /aborted|connection|server closed/i, out);

  await gw.restart();
  const v1 = await gw.cli(['verify']);
  assert.equal(v1.code, 0, `verify after the crash: ${v1.stdout}${v1.stderr}`);
  assert.match(v1.stdout, /intact/);

  // Every row the target holds must have been recorded before it was forwarded.
  const { rows } = await direct.query('select tid, bid, aid, delta, mtime from pgbench_history');
  assert.ok(rows.length >= before, `${rows.length} rows, fewer than the ${before} seen before the crash`);
  const journal = new Database(path.join(gw.dir, 'data', 'gatehouse.db'), { readonly: true, fileMustExist: true });
  cleanups.push(() => journal.close());
  const recorded = new Map<string, number>();
  let inserts = 0;
  for (const r of journal.prepare("select body from events where type = 'command'").iterate() as Iterable<{ body: string }>) {
    const d = JSON.parse(r.body).data;
    if (!INSERT.test(String(d.text ?? ''))) continue;
    inserts++;
    // -M prepared: `INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)`,
    // pgbench numbering each :variable in order of appearance and binding them as text.
    assert.match(d.text, /VALUES \(\$1, \$2, \$3, \$4, CURRENT_TIMESTAMP\)/);
    assert.ok(Array.isArray(d.params) && d.params.length === 4, `params: ${JSON.stringify(d.params)}`);
    const k = d.params.join(',');
    recorded.set(k, (recorded.get(k) ?? 0) + 1);
  }
  const inTable = new Map<string, number>();
  for (const r of rows) {
    assert.ok(r.mtime instanceof Date);
    const k = [r.tid, r.bid, r.aid, r.delta].map(String).join(',');
    inTable.set(k, (inTable.get(k) ?? 0) + 1);
  }
  const unrecorded = [...inTable].filter(([k, n]) => (recorded.get(k) ?? 0) < n);
  assert.deepEqual(unrecorded, [], `rows in pgbench_history without a recorded INSERT (of ${rows.length} rows, ${inserts} INSERT events)`);
  // In flight at the crash: recorded and forwarded, but the transaction never committed.
  assert.ok(inserts - rows.length <= 8, `${inserts} INSERT events for ${rows.length} rows: more than one per client in flight`);
  t.diagnostic(`crash after ${loadMs} ms of load: ${rows.length} rows, ${inserts} INSERT events; pgbench exit ${run.code}: ${out.split('\n').filter((l) => /abort|error|failed/i.test(l)).slice(0, 2).join(' | ')}`);

  // The chain continues from the crash point.
  const headBefore = Number((journal.prepare('select max(seq) as m from events').get() as { m: number }).m);
  assert.equal((await psql(dsn, "select 'after-crash'; select count(*) > 0 from pgbench_history")).trim(), 'after-crash\nt');
  let last: { seq: number; type: string; body: string } | undefined;
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    last = journal.prepare('select seq, type, body from events order by seq desc limit 1').get() as typeof last;
    if (last?.type === 'session.close') break;
  }
  assert.equal(last?.type, 'session.close');
  const texts = (journal.prepare("select body from events where seq > ? and type = 'command' order by seq").all(headBefore) as { body: string }[]).map(
    (r) => JSON.parse(r.body).data.text,
  );
  assert.deepEqual(texts, ["select 'after-crash'", 'select count(*) > 0 from pgbench_history']);
  const v2 = await gw.cli(['verify', '--json']);
  assert.equal(v2.code, 0, v2.stdout + v2.stderr);
  const report = JSON.parse(v2.stdout);
  assert.equal(report.ok, true);
  assert.ok(report.events >= Number(last!.seq), `verify checked ${report.events} events, the journal has ${last!.seq}`);
  assert.ok(report.checkpoints > 0);
});
