/**
 * Masking on the PostgreSQL wire against a seeded real PostgreSQL: column rules and detectors
 * in text and binary results, hashed values that still join, error DETAILs, COPY, notices and
 * notifications, an exempt group, and a journal (and bundle) without a single seeded secret.
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
const keys: Record<string, string> = {};

// Seeded secrets: none of these may appear in anything the gateway records.
const S = {
  email: 'ada.lovelace@example.com',
  email2: 'alan.turing@example.org',
  card: '4111 1111 1111 1111',
  iban: 'GB82WEST12345698765432',
  ssn: '123-45-6789',
  phone: '+14155552671',
  jwt: 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c',
  aws: 'AKIAIOSFODNN7EXAMPLE',
  github: 'ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5',
  stripe: 'sk_live_4eC39HqLyjWDarjtT1zdp7dc',
  apiToken: 'tok_9f8e7d6c5b4a3928170605ab',
  password: 'hunter2-correct-horse',
  dsn: 'postgres://app:s3cr3t-pw-42@db.internal:5432/app',
};

// Values that look a little like secrets and must be left alone.
const FALSE_POSITIVES = [
  '4111 1111 1111 1112', // Luhn-invalid
  '1234 5678 9012 3456', // Luhn-invalid
  '000-12-3456', // SSN area 000
  '666-12-3456', // SSN area 666
  '912-34-5678', // SSN area 9xx
  '123-00-4567', // SSN group 00
  '123-45-0000', // SSN serial 0000
  'order 2026-11-21', // a date
  'version 1.2.3.4.5',
  'hello world',
  'a@b',
  'deadbeefdeadbeefdeadbeefdeadbeefdeadbeef', // a git SHA
  '550e8400-e29b-41d4-a716-446655440000', // a UUID
  'tokens are counted per request', // "token" in prose
];

before(async () => {
  if (skipUnlessAvailable({ skip() {} }, 'initdb', 'postgres', 'psql')) return;
  pgs = await startPostgres({ ssl: true });
  const admin = new pg.Client(connectionConfig(pgs, { ssl: { rejectUnauthorized: false } }));
  await admin.connect();
  await admin.query(`create table customers (id int primary key, name text, email text unique, api_token text, password text, notes text, card varchar(32))`);
  await admin.query(`create table orders (id int primary key, customer_email text, amount int)`);
  await admin.query(`create table fp (id serial primary key, v text)`);
  await admin.query('insert into customers values ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)', [
    1, 'Ada', S.email, S.apiToken, S.password, `iban ${S.iban} ssn ${S.ssn} phone ${S.phone} jwt ${S.jwt}`, S.card,
    2, 'Alan', S.email2, 'tok_other_value_1234567890', 'pw-two-long-enough', `aws ${S.aws} gh ${S.github} stripe ${S.stripe} dsn ${S.dsn}`, '5500 0000 0000 0004',
  ]);
  await admin.query(`insert into orders values (10, $1, 100), (11, $1, 200), (12, $2, 300)`, [S.email, S.email2]);
  for (const v of FALSE_POSITIVES) await admin.query('insert into fp (v) values ($1)', [v]);
  await admin.end();
  const conn = {
    name: 'main', type: 'postgres', host: '127.0.0.1', port: pgs.port, database: 'postgres', user: 'postgres', password: pgs.password, tls: 'require',
    mask: {
      unmaskedGroups: ['breakglass'],
      detectors: { ip: 'off' },
      columns: [
        { match: 'public.customers.email', strategy: 'hash' },
        { match: 'public.orders.customer_email', strategy: 'hash' },
        { name: '*password*', strategy: 'null' },
        { name: 'card', strategy: 'partial', keep: 4 },
      ],
    },
  };
  gw = await startGateway({ target: pgs, extra: { connections: [conn] } });
  keys.agent = await gw.createKey('agent');
  keys.other = await gw.createKey('other', { kind: 'human' });
  keys.dba = await gw.createKey('dba', { kind: 'human', groups: 'breakglass' });
});

after(async () => {
  await gw?.stop();
  await pgs?.stop();
});

async function client(who: string): Promise<pg.Client> {
  const c = new pg.Client(gw!.pgConfig(who, keys[who]!));
  c.on('error', () => {});
  await c.connect();
  return c;
}

function assertNoSecrets(text: string, where: string): void {
  for (const [name, v] of Object.entries(S)) assert.ok(!text.includes(v), `${where} contains the seeded ${name}`);
}

test('column rules and detectors mask text-format results', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('agent');
  try {
    const { rows } = await c.query('select id, name, email, api_token, password, notes, card from customers order by id');
    assert.equal(rows[0].name, 'Ada');
    assert.match(rows[0].email, /^h:[0-9a-f]{16}$/);
    assert.equal(rows[0].api_token, '[MASKED:api_token]'); // default column rule *token*
    assert.equal(rows[0].password, null);
    assert.equal(rows[0].card, '****1111');
    for (const label of ['ssn', 'jwt']) assert.match(rows[0].notes, new RegExp(`\\[MASKED:${label}\\]`));
    assert.match(rows[0].notes, /iban \*+5432 /); // partial by default
    assert.match(rows[0].notes, /phone \*+2671/);
    for (const label of ['aws', 'github', 'stripe']) assert.match(rows[1].notes, new RegExp(`\\[MASKED:${label}\\]`), rows[1].notes);
    assert.ok(!rows[1].notes.includes('s3cr3t-pw-42'), rows[1].notes);
    assert.ok(rows[1].notes.includes('db.internal'), 'only the password of a DSN is masked');
    assertNoSecrets(JSON.stringify(rows), 'text result');
  } finally {
    await c.end();
  }
});

test('binary-format results are masked too (extended protocol, binary result columns)', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('agent');
  try {
    const r = await c.query({ text: 'select email, notes, password, card, id from customers where id = $1', values: [1], binary: true } as any);
    const row = r.rows[0];
    assert.match(String(row.email), /^h:[0-9a-f]{16}$/);
    assert.equal(row.password, null);
    assert.match(String(row.notes), /\[MASKED:ssn\]/);
    assertNoSecrets(JSON.stringify(r.rows), 'binary result');
  } finally {
    await c.end();
  }
});

test('false positives are left alone', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('agent');
  try {
    const { rows } = await c.query('select v from fp order by id');
    assert.deepEqual(rows.map((r) => r.v), FALSE_POSITIVES);
  } finally {
    await c.end();
  }
});

test('hashed values are equal across sessions and identities, and a join on them still matches', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const a = await client('agent');
  const b = await client('other');
  try {
    const ha = (await a.query('select email from customers where id = 1')).rows[0].email;
    const hb = (await b.query('select email from customers where id = 1')).rows[0].email;
    assert.equal(ha, hb);
    const joined = await a.query('select c.email, o.customer_email, o.amount from customers c join orders o on o.customer_email = c.email order by o.id');
    assert.equal(joined.rows.length, 3);
    for (const r of joined.rows) assert.equal(r.email, r.customer_email);
    const grouped = await a.query('select customer_email, sum(amount)::int as total from orders group by customer_email order by total');
    assert.deepEqual(grouped.rows.map((r) => r.total), [300, 300]);
    assert.equal(grouped.rows.find((r) => r.customer_email === ha)?.total, 300);
  } finally {
    await a.end();
    await b.end();
  }
});

test("a unique violation's DETAIL is masked; notices and notifications too", async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('agent');
  const l = await client('other');
  try {
    const err: any = await c.query('insert into customers (id, email) values (3, $1)', [S.email]).then(() => null, (e) => e);
    assert.equal(err?.code, '23505');
    assert.ok(!err.detail.includes(S.email), err.detail);
    assert.match(err.detail, /MASKED:email/);
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    await c.query(`do $$ begin raise notice 'contact %', '${S.email2}'; end $$`);
    assert.equal(notices.length, 1);
    assert.ok(!notices[0]!.includes(S.email2) && notices[0]!.includes('[MASKED:email]'), notices[0]);
    await l.query('listen chan');
    const got = new Promise<string>((resolve) => l.on('notification', (n) => resolve(n.payload ?? '')));
    await c.query(`select pg_notify('chan', 'key ${S.github}')`);
    const payload = await got;
    assert.ok(!payload.includes(S.github) && payload.includes('[MASKED:github]'), payload);
  } finally {
    await c.end();
    await l.end();
  }
});

test('COPY TO STDOUT output is masked', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const { stdout } = await run('psql', [gw.dsn('agent', keys.agent!), '-c', 'copy (select id, notes from customers order by id) to stdout']);
  assertNoSecrets(stdout, 'COPY output');
  assert.match(stdout, /\[MASKED:jwt\]/);
  assert.match(stdout, /^1\t/m);
});

test('an unmasked group sees values, and that choice is in the session record', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('dba');
  try {
    const { rows } = await c.query('select email from customers where id = 1');
    assert.equal(rows[0].email, S.email);
  } finally {
    await c.end();
  }
  const sessions = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout) as { id: string; identity_name: string }[];
  const s = sessions.find((x) => x.identity_name === 'dba')!;
  const show = JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout);
  assert.match(show.events[0].data.masking, /unmasked group/);
});

test('the journal and an exported bundle hold no seeded secret, and results count what was masked', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const c = await client('agent');
  try {
    // A secret in the statement itself is masked in the record, though the target gets it.
    const r = await c.query(`select count(*)::int as n from customers where api_token = '${S.apiToken}' or notes like '%${S.aws}%'`);
    assert.equal(r.rows[0].n, 2);
  } finally {
    await c.end();
  }
  const sessions = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout) as { id: string; identity_name: string }[];
  const agentSessions = sessions.filter((s) => s.identity_name === 'agent');
  let counted = false;
  for (const s of agentSessions) {
    const show = JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout);
    for (const e of show.events) if (e.type === 'result' && e.data.masked && Object.keys(e.data.masked).length) counted = true;
  }
  assert.ok(counted, 'result events count masked values');
  const bundle = path.join(gw.dir, 'bundle.json');
  const ex = await gw.cli(['sessions', 'export', agentSessions[0]!.id, '--out', bundle]);
  assert.equal(ex.code, 0, ex.stderr);
  assertNoSecrets(fs.readFileSync(bundle, 'utf8'), 'bundle');
  // Every file of the SQLite store, WAL included, byte for byte.
  for (const f of fs.readdirSync(path.join(gw.dir, 'data'))) {
    if (!f.startsWith('gatehouse.db')) continue;
    const bytes = fs.readFileSync(path.join(gw.dir, 'data', f)).toString('latin1');
    assertNoSecrets(bytes, f);
  }
  assert.equal((await gw.cli(['verify'])).code, 0);
});
