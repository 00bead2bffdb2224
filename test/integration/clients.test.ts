// Real clients through the gateway: psql, node-postgres and psycopg2 against a throwaway
// TLS PostgreSQL with SCRAM. One cluster and one gateway for the whole file.
//
// The CLI costs a tsx start-up per call, so scenarios that need the journal register a
// check (expectJournal) and the "journal records ..." test near the end fetches each
// session once (one `sessions list`, then one `sessions show` per session) and runs each
// check as a named subtest. The node-pg scenarios share one session for the same reason.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import pg from 'pg';
import { connectionConfig, findBinary, skipUnlessAvailable, startPostgres, type PgServer } from '../helpers/postgres.ts';
import { startGateway, type CliResult, type GatewayUnderTest } from '../helpers/gateway.ts';

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

interface Env {
  pgs: PgServer;
  gw: GatewayUnderTest;
  keys: Record<KeyName, string>;
  /** when the expiring key was created (it lives 1 s) */
  expiringCreatedAt: number;
}
type KeyName = 'agent' | 'psql' | 'expiring' | 'other' | 'live';

let env: Env | null = null;
let unavailable: string | null = null;
const openClients = new Set<pg.Client>();

before(async () => {
  // Outside CI a missing binary skips every test; in CI it throws here and fails them all.
  skipUnlessAvailable({ skip: (m) => (unavailable = m ?? 'PostgreSQL binaries not installed') }, 'initdb', 'postgres', 'psql');
  if (unavailable) return;
  const pgs = await startPostgres({ ssl: true });
  let gw: GatewayUnderTest;
  try {
    gw = await startGateway({ target: pgs });
  } catch (e) {
    await pgs.stop();
    throw e;
  }
  env = { pgs, gw, keys: {} as Env['keys'], expiringCreatedAt: 0 };
  // In parallel: each CLI call is a process start-up.
  const [agent, psql, other, live, expiring] = await Promise.all([
    gw.createKey('agent'),
    gw.createKey('psql'),
    gw.createKey('other', { connections: 'other' }),
    gw.createKey('live'),
    gw.createKey('expiring', { expires: '1s' }),
  ]);
  env.keys = { agent, psql, other, live, expiring };
  env.expiringCreatedAt = Date.now(); // at or after the key's creation
  // Tables the scenarios use, created directly on the target.
  const admin = new pg.Client(connectionConfig(pgs));
  await admin.connect();
  await admin.query('create table items (id int primary key, v text)');
  await admin.query('create table copy_t (id int, name text)');
  await admin.end();
});

after(async () => {
  for (const c of openClients) await c.end().catch(() => {});
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

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

interface ConnectedClient {
  client: pg.Client;
  /** the client's address as the gateway records it in sessions.client_addr */
  addr: string;
}

async function connect(e: Env, user: KeyName | string, key: string, db = 'main', ssl = true): Promise<ConnectedClient> {
  const cfg = { ...e.gw.pgConfig(user, key, db), ssl: ssl ? { rejectUnauthorized: false } : false, connectionTimeoutMillis: 10_000 };
  const client = new pg.Client(cfg);
  // The raw TCP socket, before node-pg wraps it in TLS: its local port identifies the session.
  const raw = (client as any).connection.stream as net.Socket;
  client.on('error', () => {});
  openClients.add(client);
  try {
    await client.connect();
  } catch (err) {
    openClients.delete(client);
    throw err;
  }
  return { client, addr: `127.0.0.1:${raw.localPort}` };
}

async function close(c: ConnectedClient): Promise<void> {
  openClients.delete(c.client);
  await c.client.end().catch(() => {});
}

// The node-pg scenarios that check the journal share one session, so one `sessions show`
// covers them all. Each scenario leaves the session idle and outside a transaction.
let sharedClient: Promise<ConnectedClient> | null = null;
function shared(e: Env): Promise<ConnectedClient> {
  return (sharedClient ??= connect(e, 'agent', e.keys.agent));
}

/** Connects and expects the gateway to refuse; returns the error. */
async function refused(e: Env, user: string, key: string, db = 'main', ssl = true): Promise<Error & { code?: string; severity?: string }> {
  const cfg = { ...e.gw.pgConfig(user, key, db), ssl: ssl ? { rejectUnauthorized: false } : false, connectionTimeoutMillis: 10_000 };
  const client = new pg.Client(cfg);
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    return err as Error & { code?: string };
  } finally {
    await client.end().catch(() => {});
  }
  throw new Error(`connection as "${user}" to "${db}" was accepted but should have been refused`);
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(bin: string, args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number; onSpawn?: (p: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    p.stdin.on('error', () => {});
    p.stdin.end(opts.input ?? '');
    opts.onSpawn?.(p);
  });
}

// psql sessions of key "psql" are told apart by their order: every successful run with
// that key is counted here, in the order the runs happened (the tests run one at a time).
let psqlRuns = 0;

/** psql with the "psql" key; returns the run and the index of its session among that key's sessions. */
async function psql(e: Env, args: string[], opts: { input?: string; onSpawn?: (p: ReturnType<typeof spawn>) => void } = {}): Promise<Run & { index: number }> {
  const r = await psqlAs(e.gw.dsn('psql', e.keys.psql), args, opts);
  return { ...r, index: psqlRuns++ };
}

function psqlAs(dsn: string, args: string[], opts: { input?: string; onSpawn?: (p: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return run(findBinary('psql') ?? 'psql', ['-X', '-v', 'ON_ERROR_STOP=1', '-d', dsn, ...args], {
    ...opts,
    // No password file or service file of the host may interfere.
    env: { PGCONNECT_TIMEOUT: '10', PGPASSFILE: '/dev/null', PGSERVICEFILE: '/dev/null' },
  });
}

/**
 * A cancel as libpq 17's PQcancelBlocking sends it: SSLRequest, TLS, the CancelRequest
 * inside TLS, then it waits for the server to close the connection, which means the cancel
 * was passed on. A reset or an unclean TLS close reads to libpq as a failed cancel.
 */
async function cancelOverTls(port: number, pid: number, secret: number): Promise<void> {
  const raw = net.connect(port, '127.0.0.1');
  await once(raw, 'connect');
  const sslRequest = Buffer.alloc(8);
  sslRequest.writeInt32BE(8, 0);
  sslRequest.writeInt32BE(80877103, 4);
  raw.write(sslRequest);
  const [answer] = (await once(raw, 'data')) as [Buffer];
  assert.equal(answer.toString(), 'S', 'the gateway answers SSLRequest with S');
  const s = tls.connect({ socket: raw, rejectUnauthorized: false });
  await once(s, 'secureConnect');
  const req = Buffer.alloc(16);
  req.writeInt32BE(16, 0);
  req.writeInt32BE(80877102, 4);
  req.writeInt32BE(pid, 8);
  req.writeInt32BE(secret, 12);
  const closed = new Promise<void>((resolve, reject) => {
    s.on('data', (d: Buffer) => reject(new Error(`unexpected answer to a CancelRequest: ${d.toString('hex')}`)));
    s.once('end', () => resolve()); // EOF after the server's close_notify
    s.once('error', (err) => reject(new Error(`the gateway did not close the cancel connection cleanly: ${err.message}`)));
    setTimeout(() => reject(new Error('the gateway did not close the cancel connection within 5 s')), 5000).unref();
  });
  s.write(req);
  try {
    await closed;
  } finally {
    s.destroy();
  }
}

function gatewayAlive(e: Env): boolean {
  const pid = e.gw.pid();
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Deferred journal checks
// ---------------------------------------------------------------------------

interface Ev {
  seq: number;
  type: string;
  data: any;
}
interface SessionRow {
  id: string;
  identity_name: string;
  client_addr: string;
  started_at: string;
  status: string;
  close_reason: string | null;
}
type Selector = { addr: string } | { psqlIndex: number } | { sharedClient: true };
interface JournalCheck {
  name: string;
  session: Selector;
  /** false: the `sessions list` row is enough, no `sessions show` needed */
  events: boolean;
  check: (events: Ev[], row: SessionRow) => void;
}
const journalChecks: JournalCheck[] = [];

function expectJournal(name: string, session: Selector, check: (events: Ev[], row: SessionRow) => void, opts: { events?: boolean } = {}): void {
  journalChecks.push({ name, session, check, events: opts.events ?? true });
}

const commands = (evs: Ev[]) => evs.filter((x) => x.type === 'command');
const results = (evs: Ev[]) => evs.filter((x) => x.type === 'result');
/** The result event for a command event. */
function resultOf(evs: Ev[], cmd: Ev): Ev {
  const r = evs.find((x) => x.type === 'result' && x.data.command === cmd.seq);
  assert.ok(r, `no result event for command #${cmd.seq} (${cmd.data.text})`);
  return r;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// 1. psql and connection refusals
// ---------------------------------------------------------------------------

test('psql: a query over TLS with SCRAM works', async (t) => {
  const e = ready(t);
  if (!e) return;
  const r = await psql(e, ['-Atc', "select 6*7, current_user = 'postgres', ssl from pg_stat_ssl where pid = pg_backend_pid()"]);
  assert.equal(r.code, 0, r.stderr);
  // The gateway reached the target as its held user, and over TLS.
  assert.equal(r.stdout.trim(), '42|t|t');
});

test('refusals: each gets its SQLSTATE and a clear message, and the gateway stays up', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { gw, keys } = e;
  const wait = e.expiringCreatedAt + 1500 - Date.now();
  if (wait > 0) await sleep(wait);

  const cases: { name: string; user: string; key: string; db?: string; code: string; text: RegExp }[] = [
    { name: 'wrong key', user: 'agent', key: keys.agent + 'x', code: '28P01', text: /password authentication failed for user "agent"/ },
    { name: 'unknown key name', user: 'nobody', key: keys.agent, code: '28P01', text: /password authentication failed for user "nobody"/ },
    { name: 'expired key', user: 'expiring', key: keys.expiring, code: '28000', text: /key "expiring" expired/ },
    { name: 'connection not granted', user: 'other', key: keys.other, code: '28000', text: /key "other" is not granted connection "main"/ },
    { name: 'unknown connection', user: 'agent', key: keys.agent, db: 'nope', code: '3D000', text: /connection "nope" does not exist/ },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const err = await refused(e, c.user, c.key, c.db);
      assert.equal(err.code, c.code, `${c.name}: ${err.message}`);
      assert.match(err.message, c.text);
      const p = await psqlAs(gw.dsn(c.user, c.key, c.db), ['-Atc', 'select 1']);
      assert.equal(p.code, 2, `psql should fail to connect (${c.name}); stdout: ${p.stdout}`);
      assert.match(p.stderr, c.text);
      assert.equal(p.stdout, '');
    });
  }

  await t.test('plaintext is refused: TLS is required', async () => {
    const err = await refused(e, 'agent', keys.agent, 'main', false);
    assert.equal(err.code, '28000');
    assert.match(err.message, /only TLS connections/);
    const p = await psqlAs(gw.dsn('agent', keys.agent, 'main', 'sslmode=disable'), ['-Atc', 'select 1']);
    assert.equal(p.code, 2);
    assert.match(p.stderr, /only TLS connections/);
    assert.match(p.stderr, /sslmode=require/, 'the hint tells the user what to do');
  });

  await t.test('the gateway is still up and serving', async () => {
    assert.ok(gatewayAlive(e), 'gateway process is alive');
    const c = await connect(e, 'agent', keys.agent);
    const r = await c.client.query('select 1 as one');
    assert.deepEqual(r.rows, [{ one: 1 }]);
    await close(c);
  });
});

// ---------------------------------------------------------------------------
// 2. Revocation of a live session
// ---------------------------------------------------------------------------

test('revoking a key ends its live session within 5 s and refuses new ones', async (t) => {
  const e = ready(t);
  if (!e) return;
  const c = await connect(e, 'live', e.keys.live);
  assert.equal((await c.client.query('select 1 as x')).rows[0].x, 1);
  const seen: { endedAt: number; error: (Error & { code?: string }) | null } = { endedAt: 0, error: null };
  const ended = new Promise<void>((resolve) => {
    c.client.on('error', (err) => {
      seen.error ??= err;
      seen.endedAt ||= Date.now();
    });
    c.client.on('end', () => {
      seen.endedAt ||= Date.now();
      resolve();
    });
  });
  const r = await e.gw.cli(['keys', 'revoke', 'live', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const revokedAt = Date.parse(JSON.parse(r.stdout).revokedAt);
  assert.ok(Number.isFinite(revokedAt), 'revoke reports revokedAt');
  const outcome = await Promise.race([ended.then(() => 'ended'), sleep(7000).then(() => 'timeout')]);
  assert.equal(outcome, 'ended', 'the client connection was not ended');
  const took = seen.endedAt - revokedAt;
  t.diagnostic(`session ended ${took} ms after revocation`);
  assert.ok(took < 5000, `ended ${took} ms after revocation (limit 5000)`);
  assert.ok(seen.error, 'the client was told why');
  assert.equal(seen.error.code, '57P01');
  assert.match(seen.error.message, /revoked/);
  openClients.delete(c.client);

  const err = await refused(e, 'live', e.keys.live);
  assert.equal(err.code, '28000');
  assert.match(err.message, /key "live" was revoked/);
  const p = await psqlAs(e.gw.dsn('live', e.keys.live), ['-Atc', 'select 1']);
  assert.equal(p.code, 2);
  assert.match(p.stderr, /key "live" was revoked/);

  expectJournal(
    'revoked session is closed with the reason',
    { addr: c.addr },
    (_evs, row) => {
      assert.equal(row.status, 'closed');
      assert.match(row.close_reason ?? '', /revoked/);
    },
    { events: false },
  );
});

// ---------------------------------------------------------------------------
// 3. node-postgres
// ---------------------------------------------------------------------------

test('node-pg: parameterized query with text, int, null and bytea', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { client } = await shared(e);
  const text = 'select $1::text as t, $2::int as i, $3::text as n, $4::bytea as b, $2::int + 1 as next';
  const bytes = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]);
  const r = await client.query(text, ['héllo, wörld', 41, null, bytes]);
  assert.deepEqual(r.rows, [{ t: 'héllo, wörld', i: 41, n: null, b: bytes, next: 42 }]);
  expectJournal('bound parameters', { sharedClient: true }, (evs) => {
    const cmd = commands(evs).find((x) => x.data.text === text);
    assert.ok(cmd, 'command event with the statement text');
    assert.equal(cmd.data.protocol, 'extended');
    // node-pg sends a Buffer in binary format: recorded as hex.
    assert.deepEqual(cmd.data.params, ['héllo, wörld', '41', null, '\\xdeadbeef0001']);
    const res = resultOf(evs, cmd);
    assert.equal(res.data.status, 'ok');
    assert.equal(res.data.rows, 1);
    assert.deepEqual(res.data.columns, ['t', 'i', 'n', 'b', 'next']);
    assert.deepEqual(res.data.sample, [['héllo, wörld', '41', null, '\\xdeadbeef0001', '42']]);
  });
});

test('node-pg: transactions, ROLLBACK, and errors inside and outside a transaction', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { client } = await shared(e);
  const q = (s: string, v?: unknown[]) => client.query(s, v);

  await t.test('ROLLBACK leaves no row behind', async () => {
    await q('begin');
    await q('insert into items values ($1, $2)', [1, 'rolled back']);
    assert.equal((await q('select count(*)::int as n from items where id = 1')).rows[0].n, 1, 'visible inside the transaction');
    await q('rollback');
    assert.equal((await q('select count(*)::int as n from items where id = 1')).rows[0].n, 0);
  });

  await t.test('COMMIT keeps the row', async () => {
    await q('begin');
    await q('insert into items values ($1, $2)', [2, 'kept']);
    await q('commit');
    assert.deepEqual((await q('select v from items where id = 2')).rows, [{ v: 'kept' }]);
  });

  await t.test('an error inside a transaction, ROLLBACK, then the session goes on', async () => {
    await q('begin');
    await assert.rejects(q('select 1/0'), (err: any) => err.code === '22012');
    await assert.rejects(q('select 1'), (err: any) => err.code === '25P02', 'the aborted transaction refuses statements');
    await q('rollback');
    assert.equal((await q('select 7 as x')).rows[0].x, 7);
  });

  await t.test('errors outside a transaction (execute, bind, parse), then the next query works', async () => {
    await assert.rejects(q('select * from no_such_table'), (err: any) => err.code === '42P01');
    await assert.rejects(q('select $1::int', ['not a number']), (err: any) => err.code === '22P02');
    await assert.rejects(q('selec $1', [1]), (err: any) => err.code === '42601');
    assert.equal((await q('select $1::int + 1 as x', [1])).rows[0].x, 2);
  });

  expectJournal('transaction statements and their outcomes', { sharedClient: true }, (evs) => {
    const byText = (s: string) => commands(evs).filter((x) => x.data.text === s);
    const div = byText('select 1/0');
    assert.equal(div.length, 1);
    const divRes = resultOf(evs, div[0]!);
    assert.equal(divRes.data.status, 'error');
    assert.equal(divRes.data.error.code, '22012');
    assert.equal(resultOf(evs, byText('select 1')[0]!).data.error?.code, '25P02');
    assert.equal(byText('rollback').length, 2);
    assert.equal(resultOf(evs, byText('rollback')[0]!).data.tag, 'ROLLBACK');
    assert.equal(resultOf(evs, byText('commit')[0]!).data.tag, 'COMMIT');
    const ins = byText('insert into items values ($1, $2)');
    assert.deepEqual(ins.map((x) => x.data.params), [['1', 'rolled back'], ['2', 'kept']]);
    assert.equal(resultOf(evs, byText('select * from no_such_table')[0]!).data.error?.code, '42P01');
    const last = byText('select $1::int + 1 as x')[0]!;
    assert.deepEqual(resultOf(evs, last).data.sample, [['2']]);
  });
  expectJournal('errors raised by Bind and Parse are recorded against their statement', { sharedClient: true }, (evs) => {
    const bad = commands(evs).find((x) => x.data.text === 'select $1::int')!;
    assert.ok(bad);
    assert.deepEqual(bad.data.params, ['not a number']);
    const badRes = resultOf(evs, bad).data;
    assert.equal(badRes.status, 'error');
    assert.equal(badRes.error?.code, '22P02');
    const typo = commands(evs).find((x) => x.data.text === 'selec $1')!;
    assert.ok(typo);
    const typoRes = resultOf(evs, typo).data;
    assert.equal(typoRes.status, 'error');
    assert.equal(typoRes.error?.code, '42601');
  });
});

test('node-pg: a named prepared statement run several times records each execution', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { client } = await shared(e);
  const text = 'select $1::int * 2 as doubled, $2::text as label';
  const got: unknown[] = [];
  for (const n of [1, 2, 3]) {
    const r = await client.query({ name: 'q1', text, values: [n, `run ${n}`] });
    got.push(r.rows[0]);
  }
  assert.deepEqual(got, [
    { doubled: 2, label: 'run 1' },
    { doubled: 4, label: 'run 2' },
    { doubled: 6, label: 'run 3' },
  ]);
  expectJournal('named prepared statement: one command event per execution, each with its params', { sharedClient: true }, (evs) => {
    const cmds = commands(evs).filter((x) => x.data.text === text);
    assert.deepEqual(
      cmds.map((x) => x.data.params),
      [
        ['1', 'run 1'],
        ['2', 'run 2'],
        ['3', 'run 3'],
      ],
    );
    assert.deepEqual(
      cmds.map((x) => resultOf(evs, x).data.sample),
      [[['2', 'run 1']], [['4', 'run 2']], [['6', 'run 3']]],
    );
  });
});

test('node-pg: a large result arrives complete and is recorded with a bounded sample', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { client } = await shared(e);
  const text = "select g, repeat('x', 100) as pad from generate_series(1, 200000) g";
  const started = Date.now();
  const r = await client.query(text);
  t.diagnostic(`200000 rows in ${Date.now() - started} ms`);
  assert.equal(r.rowCount, 200000);
  assert.equal(r.rows.length, 200000);
  assert.deepEqual(r.rows[0], { g: 1, pad: 'x'.repeat(100) });
  assert.equal(r.rows[199999].g, 200000);
  // The same through the extended protocol.
  const r2 = await client.query('select g from generate_series(1, $1::int) g', [150000]);
  assert.equal(r2.rows.length, 150000);
  expectJournal('large result: rows counted, sample bounded', { sharedClient: true }, (evs) => {
    const res = resultOf(evs, commands(evs).find((x) => x.data.text === text)!);
    assert.equal(res.data.status, 'ok');
    assert.equal(res.data.tag, 'SELECT 200000');
    assert.equal(res.data.rows, 200000);
    assert.equal(res.data.truncated, true);
    assert.equal(res.data.sample.length, 10, 'journal.resultRows defaults to 10');
    assert.deepEqual(res.data.sample[0], ['1', 'x'.repeat(100)]);
    const res2 = resultOf(evs, commands(evs).find((x) => x.data.text === 'select g from generate_series(1, $1::int) g')!);
    assert.equal(res2.data.rows, 150000);
    assert.equal(res2.data.truncated, true);
    assert.ok(res2.data.sample.length <= 10);
  });
});

test('node-pg: cancelling a running query (libpq-style cancel over TLS)', async (t) => {
  const e = ready(t);
  if (!e) return;
  const { client } = await shared(e);
  const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
  assert.ok(processID, 'the gateway issued BackendKeyData');
  const outcome = client.query('select pg_sleep(10)').then(
    () => ({ err: null as (Error & { code?: string }) | null, at: Date.now() }),
    (err) => ({ err, at: Date.now() }),
  );
  await sleep(300);
  const cancelAt = Date.now();
  await cancelOverTls(e.gw.pgPort, processID, secretKey);
  const { err, at } = await outcome;
  assert.ok(err, 'the query was not cancelled');
  assert.equal(err.code, '57014', err.message);
  t.diagnostic(`rejected ${at - cancelAt} ms after the cancel request`);
  assert.ok(at - cancelAt < 1000, `rejected ${at - cancelAt} ms after the cancel`);
  assert.equal((await client.query('select 1 as x')).rows[0].x, 1, 'the session goes on');
  expectJournal('cancelled query: result error 57014', { sharedClient: true }, (evs) => {
    const cmd = commands(evs).find((x) => x.data.text === 'select pg_sleep(10)');
    assert.ok(cmd);
    const res = resultOf(evs, cmd);
    assert.equal(res.data.status, 'error');
    assert.equal(res.data.error.code, '57014');
    assert.ok(res.data.durationMs < 5000, `recorded duration ${res.data.durationMs} ms`);
  });
});

test('node-pg: cancel through pg.Client#cancel (plain CancelRequest, no TLS)', async (t) => {
  const e = ready(t);
  if (!e) return;
  const c = await connect(e, 'agent', e.keys.agent);
  const outcome = c.client.query('select pg_sleep(10)').then(
    () => null,
    (err) => ({ err, at: Date.now() }),
  );
  await sleep(300);
  // pg.Client#cancel(client, query) opens its own connection and sends the CancelRequest.
  const canceller = new pg.Client(e.gw.pgConfig('agent', e.keys.agent));
  canceller.on('error', () => {});
  const cancelAt = Date.now();
  (canceller as any).cancel(c.client, (c.client as any).activeQuery);
  const r = await outcome;
  assert.ok(r, 'the query was not cancelled');
  assert.equal(r.err.code, '57014');
  assert.ok(r.at - cancelAt < 1000, `rejected ${r.at - cancelAt} ms after the cancel`);
  assert.equal((await c.client.query('select 2 as x')).rows[0].x, 2, 'the session goes on');
  await close(c);
});

test('psql: Ctrl-C cancels the running statement', async (t) => {
  const e = ready(t);
  if (!e) return;
  let sentAt = 0;
  const r = await psql(e, ['-Atc', 'select pg_sleep(10)'], {
    onSpawn: (p) =>
      setTimeout(() => {
        sentAt = Date.now();
        p.kill('SIGINT');
      }, 1000),
  });
  const took = Date.now() - sentAt;
  assert.ok(sentAt > 0, 'psql ended before it was interrupted');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /canceling statement due to user request/);
  assert.ok(took < 2000, `psql exited ${took} ms after SIGINT`);
});

test('node-pg: LISTEN/NOTIFY between two gateway clients delivers the payload', async (t) => {
  const e = ready(t);
  if (!e) return;
  const listener = await connect(e, 'agent', e.keys.agent);
  const notifier = await connect(e, 'agent', e.keys.agent);
  const received: pg.Notification[] = [];
  const got = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => received.length >= n && resolve();
      listener.client.on('notification', (m) => {
        received.push(m);
        check();
      });
      check();
    });
  await listener.client.query('listen gh_events');
  const two = got(2);
  await notifier.client.query("notify gh_events, 'payload: ✓ 42'");
  await notifier.client.query('select pg_notify($1, $2)', ['gh_events', 'via pg_notify']);
  assert.equal(await Promise.race([two.then(() => 'ok'), sleep(5000).then(() => 'timeout')]), 'ok', `notifications: ${JSON.stringify(received)}`);
  assert.deepEqual(
    received.map((n) => [n.channel, n.payload]),
    [
      ['gh_events', 'payload: ✓ 42'],
      ['gh_events', 'via pg_notify'],
    ],
  );
  // The listener's session still works after receiving asynchronous messages.
  assert.equal((await listener.client.query('select 1 as x')).rows[0].x, 1);
  await close(listener);
  await close(notifier);
});

// ---------------------------------------------------------------------------
// COPY and multi-statement strings through psql
// ---------------------------------------------------------------------------

test('psql: COPY FROM STDIN and COPY TO STDOUT', async (t) => {
  const e = ready(t);
  if (!e) return;
  const rows = Array.from({ length: 5000 }, (_, i) => `${i + 1}\tname ${i + 1}`);
  const input = rows.join('\n') + '\n';
  // One psql session: the first COPY reads psql's stdin, the second writes its stdout.
  const r = await psql(e, ['-q', '-c', 'COPY copy_t FROM STDIN', '-c', 'COPY (select * from copy_t order by id) TO STDOUT'], { input });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, input, 'COPY TO STDOUT returns every row intact');

  const admin = new pg.Client(connectionConfig(e.pgs));
  await admin.connect();
  try {
    const n = (await admin.query('select count(*)::int as n, max(id) as m from copy_t')).rows[0];
    assert.deepEqual(n, { n: 5000, m: 5000 }, 'all rows reached the server');

    // \copy is psql's client-side COPY ... FROM STDIN.
    const bs = await psql(e, ['-c', '\\copy copy_t from stdin'], { input: '9001\tvia backslash copy\n' });
    assert.equal(bs.code, 0, bs.stderr);
    assert.equal(bs.stdout.trim(), 'COPY 1');
    assert.deepEqual((await admin.query('select name from copy_t where id = 9001')).rows, [{ name: 'via backslash copy' }]);
  } finally {
    await admin.end();
  }

  expectJournal('COPY FROM STDIN and TO STDOUT: tags and bytes', { psqlIndex: r.index }, (evs) => {
    const cmds = commands(evs);
    assert.deepEqual(cmds.map((x) => x.data.text), ['COPY copy_t FROM STDIN', 'COPY (select * from copy_t order by id) TO STDOUT']);
    const [copyIn, copyOut] = cmds.map((x) => resultOf(evs, x).data);
    assert.equal(copyIn.status, 'ok');
    assert.equal(copyIn.tag, 'COPY 5000');
    assert.equal(copyIn.rows, 5000);
    assert.ok(copyIn.bytesIn >= Buffer.byteLength(input), `bytesIn ${copyIn.bytesIn} < ${Buffer.byteLength(input)}`);
    assert.equal(copyOut.status, 'ok');
    assert.equal(copyOut.tag, 'COPY 5000');
    assert.ok(copyOut.bytesOut >= Buffer.byteLength(input), `bytesOut ${copyOut.bytesOut} < ${Buffer.byteLength(input)}`);
  });
});

test('psql: a multi-statement string is three commands and three results, in order', async (t) => {
  const e = ready(t);
  if (!e) return;
  const r = await psql(e, ['-Atc', 'select 1; select 2; select 3']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '1\n2\n3');
  expectJournal('multi-statement: 3 commands, 3 results in order', { psqlIndex: r.index }, (evs) => {
    const cmds = commands(evs);
    assert.deepEqual(cmds.map((x) => x.data.text), ['select 1', 'select 2', 'select 3']);
    assert.ok(cmds.every((x) => x.data.batch === 3));
    const res = results(evs);
    assert.deepEqual(res.map((x) => x.data.command), cmds.map((x) => x.seq), 'each result answers its command, in order');
    assert.deepEqual(res.map((x) => [x.data.status, x.data.tag, x.data.sample]), [
      ['ok', 'SELECT 1', [['1']]],
      ['ok', 'SELECT 1', [['2']]],
      ['ok', 'SELECT 1', [['3']]],
    ]);
    // All three commands are recorded before the string is forwarded, so before any result.
    assert.ok(Math.max(...cmds.map((x) => x.seq)) < Math.min(...res.map((x) => x.seq)));
  });
});

test('psql: an error inside a multi-statement string: ok, error, not_run', async (t) => {
  const e = ready(t);
  if (!e) return;
  const r = await psql(e, ['-Atc', 'select 1; select 1/0; select 3']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /division by zero/);
  assert.doesNotMatch(r.stdout, /^3$/m, 'the third statement did not run');
  expectJournal('multi-statement error: ok, error 22012, not_run', { psqlIndex: r.index }, (evs) => {
    const cmds = commands(evs);
    assert.deepEqual(cmds.map((x) => x.data.text), ['select 1', 'select 1/0', 'select 3']);
    const res = cmds.map((x) => resultOf(evs, x).data);
    assert.deepEqual(res.map((x) => x.status), ['ok', 'error', 'not_run']);
    assert.equal(res[1].error.code, '22012');
    assert.match(res[1].error.message, /division by zero/);
  });
});

// ---------------------------------------------------------------------------
// 4. psycopg2
// ---------------------------------------------------------------------------

test('psycopg2 (Debian python3) through the gateway', async (t) => {
  const e = ready(t);
  if (!e) return;
  const py = '/usr/bin/python3';
  const probe = spawnSync(py, ['-c', 'import psycopg2'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    const msg = `${py} with psycopg2 not available: ${(probe.stderr || String(probe.error)).trim()}`;
    if (process.env.CI === 'true') throw new Error(`${msg} (required in CI)`);
    t.skip(msg);
    return;
  }
  const script = `
import os, psycopg2
conn = psycopg2.connect(os.environ['GH_DSN'])
cur = conn.cursor()
cur.execute("select %s::int + 1, %s::text, version() like 'PostgreSQL%%'", (41, 'from psycopg2'))
print(repr(cur.fetchone()))
conn.rollback()
conn.close()
`;
  const r = await run(py, ['-c', script], { env: { GH_DSN: e.gw.dsn('agent', e.keys.agent, 'main', 'application_name=psycopg2-test') } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "(42, 'from psycopg2', True)");
});

// ---------------------------------------------------------------------------
// Journal checks, then integrity
// ---------------------------------------------------------------------------

test('journal records what each client did (sessions show)', async (t) => {
  const e = ready(t);
  if (!e) return;
  assert.ok(journalChecks.length > 0, 'scenarios registered journal checks');
  const sharedAddr = sharedClient ? (await sharedClient).addr : null;
  if (sharedClient) await close(await sharedClient);
  // Result and close events are written asynchronously; give the last ones a moment.
  await sleep(300);
  const list = await e.gw.cli(['sessions', 'list', '--json', '--limit', '1000']);
  assert.equal(list.code, 0, list.stderr);
  const sessions = (JSON.parse(list.stdout) as SessionRow[]).reverse();
  const psqlSessions = sessions.filter((s) => s.identity_name === 'psql');
  assert.equal(psqlSessions.length, psqlRuns, 'one session per psql run with the "psql" key');

  const rows = journalChecks.map((c): SessionRow | undefined => {
    const sel = c.session;
    if ('psqlIndex' in sel) return psqlSessions[sel.psqlIndex];
    const addr = 'addr' in sel ? sel.addr : sharedAddr;
    return sessions.find((x) => x.client_addr === addr);
  });
  // One `sessions show` per session, two at a time (each is a process start-up).
  const shown = new Map<string, Ev[]>();
  const todo = [...new Set(journalChecks.flatMap((c, i) => (c.events && rows[i] ? [rows[i]!.id] : [])))];
  t.diagnostic(`${todo.length} sessions to show`);
  const worker = async () => {
    for (let id = todo.shift(); id; id = todo.shift()) {
      const out: CliResult = await e.gw.cli(['sessions', 'show', id, '--json']);
      assert.equal(out.code, 0, out.stderr);
      shown.set(id, JSON.parse(out.stdout).events);
    }
  };
  await Promise.all([worker(), worker()]);

  for (const [i, c] of journalChecks.entries()) {
    await t.test(c.name, () => {
      const row = rows[i];
      assert.ok(row, `no session found for ${JSON.stringify(c.session)}`);
      const evs = shown.get(row.id) ?? [];
      if (c.events) {
        assert.equal(evs[0]?.type, 'session.open');
        // Every result comes after its command.
        for (const r of results(evs)) assert.ok(r.data.command < r.seq);
      }
      c.check(evs, row);
    });
  }
});

test('journal integrity: gatehouse verify exits 0 after all of the above', async (t) => {
  const e = ready(t);
  if (!e) return;
  const v = await e.gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /journal intact: \d+ events/);
  assert.ok(gatewayAlive(e), 'the gateway survived every scenario');
});
