// Masking on the MySQL wire against a seeded real MariaDB: column rules (by name and by
// schema.table.column, through aliases) and detectors in text results (COM_QUERY) and binary
// results (prepared statements), error messages, an exempt group, and a journal without a
// single seeded secret.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import os from 'node:os';
import mysql from 'mysql2/promise';
import { mariadbMissing, type MariaServer } from '../helpers/mariadb.ts';
import { startMariadbBounded } from '../helpers/mysql-suite.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';

let maria: MariaServer | null = null;
let gw: GatewayUnderTest | null = null;
let skipped: string | null = null;
const keys: Record<string, string> = {};

// Seeded secrets: none may reach a masked client or anything the gateway records.
const S = {
  email: 'ada.lovelace@example.com',
  email2: 'alan.turing@example.org',
  aws: 'AKIAIOSFODNN7EXAMPLE',
  ssn: '123-45-6789',
  password: 'hunter2-correct-horse',
  card: '4111111111111111',
  github: 'ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5',
};

before(async () => {
  skipped = mariadbMissing();
  if (skipped) return;
  maria = await startMariadbBounded({});
  const admin = await mysql.createConnection({ host: maria.host, port: maria.port, user: 'root', password: maria.password, database: 'test', multipleStatements: true });
  await admin.query(`
    CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64), email VARCHAR(128) UNIQUE, password VARCHAR(128),
      notes TEXT, card BIGINT, doc BLOB, kind ENUM('a','b'), created DATETIME);
    CREATE TABLE plain (id INT PRIMARY KEY, v VARCHAR(200));`);
  await admin.query('INSERT INTO customers VALUES (?,?,?,?,?,?,?,?,?), (?,?,?,?,?,?,?,?,?)', [
    1, 'Ada', S.email, S.password, `ssn ${S.ssn} aws ${S.aws}`, S.card, Buffer.from(`gh ${S.github}`), 'a', '2026-11-22 10:00:00',
    2, 'Alan', S.email2, 'pw-two-long-enough', 'nothing to see', 42, Buffer.from([0, 1, 2, 255]), 'b', null,
  ]);
  await admin.query(`INSERT INTO plain VALUES (1, 'hello world'), (2, '550e8400-e29b-41d4-a716-446655440000')`);
  await admin.end();
  gw = await startGateway({
    mysql: true,
    extra: {
      connections: [{
        name: 'maria', type: 'mysql', host: maria.host, port: maria.port, database: 'test', user: 'root', password: maria.password, tls: 'disable',
        mask: {
          unmaskedGroups: ['breakglass'],
          detectors: { ip: 'off' },
          columns: [
            { match: 'test.customers.email', strategy: 'hash' },
            { name: '*password*', strategy: 'null' },
          ],
        },
      }],
    },
  });
  keys.agent = await gw.createKey('agent', { connections: 'maria' });
  keys.dba = await gw.createKey('dba', { kind: 'human', groups: 'breakglass', connections: 'maria' });
});

after(async () => {
  await gw?.stop();
  await maria?.stop();
});

const connect = (who: string) => mysql.createConnection({ host: '127.0.0.1', port: gw!.mysqlPort, user: who, password: keys[who]!, database: 'maria', ssl: { rejectUnauthorized: false }, dateStrings: true, supportBigNumbers: true, bigNumberStrings: true });

function assertNoSecrets(text: string, where: string): void {
  for (const [name, v] of Object.entries(S)) assert.ok(!text.includes(v), `${where} contains the seeded ${name}`);
}

test('text results (COM_QUERY): column rules through aliases, detectors in free text, numbers, blobs; other values untouched', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('agent');
  t.after(() => c.end());
  const [rows] = (await c.query('SELECT id, name, email AS e, password, notes, card, doc, kind, created FROM customers c ORDER BY id')) as unknown as [Record<string, any>[]];
  assertNoSecrets(JSON.stringify(rows, (_k, v) => (Buffer.isBuffer(v) ? v.toString('latin1') : v)), 'client rows');
  const [ada, alan] = rows;
  assert.match(ada!.e, /^h:[0-9a-f]{16}$/, 'email hashed by the table-qualified rule, through the alias');
  assert.notEqual(ada!.e, alan!.e);
  assert.equal(ada!.password, null);
  assert.match(ada!.notes, /\[MASKED:ssn\]/);
  assert.match(ada!.notes, /\[MASKED:aws\]/);
  assert.equal(ada!.card, null, 'a card number in a BIGINT is masked to NULL');
  assert.match(ada!.doc.toString('utf8'), /\[MASKED:github\]/, 'text kept in a BLOB is scanned');
  assert.deepEqual([...alan!.doc], [0, 1, 2, 255], 'opaque bytes pass exactly');
  assert.deepEqual([ada!.id, ada!.name, ada!.kind, ada!.created], [1, 'Ada', 'a', '2026-11-22 10:00:00']);
  assert.deepEqual([alan!.notes, alan!.card], ['nothing to see', '42']);
  // Hashes are stable: equal values give equal tokens across statements.
  const [again] = (await c.query('SELECT email FROM customers WHERE id = 1')) as unknown as [{ email: string }[]];
  assert.equal(again[0]!.email, ada!.e);
  const [plain] = (await c.query('SELECT v FROM plain ORDER BY id')) as unknown as [{ v: string }[]];
  assert.deepEqual(plain.map((r) => r.v), ['hello world', '550e8400-e29b-41d4-a716-446655440000']);
});

test('binary results (prepared statements) are masked the same way', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('agent');
  t.after(() => c.end());
  const [rows] = (await c.execute('SELECT id, email, password, notes, card, doc, created FROM customers WHERE id >= ? ORDER BY id', [1])) as unknown as [Record<string, any>[]];
  assertNoSecrets(JSON.stringify(rows, (_k, v) => (Buffer.isBuffer(v) ? v.toString('latin1') : v)), 'client rows');
  assert.match(rows[0]!.email, /^h:[0-9a-f]{16}$/);
  assert.equal(rows[0]!.password, null);
  assert.match(rows[0]!.notes, /\[MASKED:ssn\]/);
  assert.equal(rows[0]!.card, null);
  assert.equal(rows[0]!.created, '2026-11-22 10:00:00');
  assert.deepEqual([...rows[1]!.doc], [0, 1, 2, 255]);
  assert.equal(rows[1]!.card, '42');
});

test('an error that repeats a value (duplicate key) is masked', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('agent');
  t.after(() => c.end());
  await assert.rejects(c.query(`INSERT INTO customers (id, email) VALUES (3, '${S.email}')`), (e: { errno?: number; message: string }) => {
    assert.equal(e.errno, 1062);
    assert.ok(!e.message.includes(S.email), e.message);
    assert.match(e.message, /\[MASKED:email\]|h:[0-9a-f]{16}/);
    return true;
  });
  const [rows] = await c.query('SELECT 1 AS ok');
  assert.deepEqual(rows, [{ ok: 1 }]);
});

test('mariadb CLI output is masked', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const p = spawn('mariadb', ['--no-defaults', '--batch', '--protocol=TCP', '-h127.0.0.1', `-P${gw!.mysqlPort}`, '-uagent', '--ssl', 'maria', '-e', 'SELECT email, notes FROM customers ORDER BY id'], {
      env: { ...process.env, MYSQL_PWD: keys.agent!, HOME: os.tmpdir() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  assert.equal(out.code, 0, out.stderr);
  assertNoSecrets(out.stdout, 'CLI output');
  assert.match(out.stdout, /\[MASKED:ssn\]/);
});

test('an unmasked group sees values; the journal still holds no seeded secret and counts what was masked', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('dba');
  t.after(() => c.end());
  const [rows] = (await c.query(`SELECT email, notes FROM customers WHERE email = '${S.email}'`)) as unknown as [{ email: string; notes: string }[]];
  assert.equal(rows[0]!.email, S.email);
  assert.match(rows[0]!.notes, new RegExp(S.aws));
  await c.end();

  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout) as { id: string }[];
  let all = '';
  let counted = false;
  let exempt = false;
  for (const s of list) {
    const show = JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout) as { events: { type: string; data: any }[] };
    all += JSON.stringify(show);
    for (const e of show.events) {
      if (e.type === 'result' && e.data.masked && Object.keys(e.data.masked).length) counted = true;
      if (e.type === 'session.open' && /unmasked group/.test(e.data.masking ?? '')) exempt = true;
    }
  }
  assertNoSecrets(all, 'the journal');
  assert.ok(counted, 'result events count masked values');
  assert.ok(exempt, 'the exempt session says so');
  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});
