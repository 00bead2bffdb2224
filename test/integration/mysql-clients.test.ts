/**
 * MySQL acceptance: the real client programs, through the gateway, to a real MariaDB that
 * serves only TLS over TCP (so the gateway's upstream TLS is proven on every test):
 *
 *   - the interactive `mariadb` CLI in a terminal (tmux): auto-rehash (SHOW + COM_FIELD_LIST),
 *     tab completion, `\s`, USE of another schema, SOURCE of a file, a SELECT read off the screen;
 *   - `mariadb --batch` with statements on stdin and with -e;
 *   - a mariadb-dump file (executable comments, LOCK TABLES, a trigger with DELIMITER, a view,
 *     binary and quoted data) reloaded through the gateway, compared with CHECKSUM TABLE; and
 *     mariadb-dump itself through the gateway;
 *   - sysbench oltp_read_write, 8 threads: no errors, and every statement journaled, counted
 *     against the target's own counters;
 *   - the guard with the CLI (a DROP hidden in an executable comment) and a held DELETE
 *     approved from another process.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { generate } from 'selfsigned';
import { mariadbMissing, type MariaServer } from '../helpers/mariadb.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { TmuxTerminal } from '../helpers/tmux.ts';
import {
  closedSessionsOf,
  commandsWithResults,
  gatewayCertFile,
  gatewayClientArgs,
  runProgram,
  sessionsOf,
  startMariadbBounded,
  type JournalSession,
} from '../helpers/mysql-suite.ts';

/**
 * How sysbench sends its statements: 'auto' = prepared statements (COM_STMT_PREPARE once per
 * connection, then COM_STMT_EXECUTE), 'disable' = COM_QUERY text. The journal comparison below
 * holds for both: an execute is recorded as one command with the prepared text, and the target
 * counts it in Com_select & co. like a text statement.
 */
const SYSBENCH_PS_MODE: 'disable' | 'auto' = 'auto';
const SYSBENCH_SECONDS = 30;
const SYSBENCH_THREADS = 8;

let maria: MariaServer | null = null;
let gw: GatewayUnderTest | null = null;
let skipped: string | null = null;
let tmp = '';
const keys: Record<string, string> = {};

const policy = {
  default: { action: 'allow' },
  rules: [
    { name: 'no-drops', match: { connections: ['guarded'], types: ['DROP_TABLE'] }, action: 'block', reason: 'dropping tables is not allowed here', hint: 'ask a DBA' },
    { name: 'hold-deletes', match: { connections: ['guarded'], types: ['DELETE'] }, action: 'review', approvers: ['dba'], holdFor: '60s' },
  ],
};

/** SQL as root on the unix socket (not through the gateway), utf8mb4; tab-separated rows. */
async function admin(sql: string, database = ''): Promise<string> {
  const args = ['--no-defaults', '--batch', '--skip-column-names', '--default-character-set=utf8mb4', '-uroot', '--protocol=SOCKET', `--socket=${maria!.socket}`];
  if (database) args.push(database);
  const r = await runProgram('mariadb', args, { env: { MYSQL_PWD: maria!.password }, input: sql });
  if (r.code !== 0) throw new Error(`admin SQL failed: ${r.stderr}\n${sql.slice(0, 500)}`);
  return r.stdout.toString('utf8');
}

before(async () => {
  skipped = mariadbMissing('tmux', 'mariadb-dump', 'sysbench');
  if (skipped) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-mysql-clients-'));
  maria = await startMariadbBounded({ ssl: true });
  await admin(
    ['app', 'otherdb', 'dumpsrc', 'dumpdst', 'dumpcopy', 'sbtest', 'guarded'].map((d) => `CREATE DATABASE ${d} CHARACTER SET utf8mb4`).join(';\n') +
      ";\nCREATE TABLE app.customers (id INT PRIMARY KEY, name VARCHAR(50), city VARCHAR(40));\n" +
      "INSERT INTO app.customers VALUES (1, 'Ada', 'London'), (2, 'Grace', 'Arlington'), (3, 'Linus', 'Helsinki');\n" +
      'CREATE TABLE app.orders (id INT PRIMARY KEY, cust INT, total DECIMAL(10,2));\n' +
      'CREATE TABLE otherdb.widgets (id INT PRIMARY KEY, label VARCHAR(20));\n' +
      "CREATE TABLE guarded.g (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO guarded.g VALUES (1, 'a'), (2, 'b'), (3, 'c');\n",
  );
  const conn = (name: string) => ({ name, type: 'mysql', host: maria!.host, port: maria!.port, database: name, user: 'root', password: maria!.password, tls: 'require' });
  gw = await startGateway({
    mysql: true,
    extra: { connections: ['app', 'dumpsrc', 'dumpdst', 'dumpcopy', 'sbtest', 'guarded'].map(conn), policy },
  });
  keys['agent-cli'] = await gw.createKey('agent-cli', { connections: 'app' });
  keys['agent-batch'] = await gw.createKey('agent-batch', { connections: 'app' });
  keys['agent-dump'] = await gw.createKey('agent-dump', { connections: 'dumpsrc' });
  keys['agent-load'] = await gw.createKey('agent-load', { connections: 'dumpdst,dumpcopy' });
  keys['agent-bench'] = await gw.createKey('agent-bench', { connections: 'sbtest' });
  keys['agent-guard'] = await gw.createKey('agent-guard', { connections: 'guarded' });
  keys.dba1 = await gw.createKey('dba1', { kind: 'human', groups: 'dba', connections: 'guarded' });
});

after(async () => {
  await gw?.stop();
  await maria?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** `mariadb` through the gateway as `user`; SQL on stdin (or in args with -e). */
function client(user: string, database: string, extraArgs: string[], input?: Buffer | string) {
  return runProgram('mariadb', [...gatewayClientArgs(gw!, user), ...extraArgs, database], { env: { MYSQL_PWD: keys[user]! }, input });
}

function only<T>(xs: T[], what: string): T {
  assert.equal(xs.length, 1, `expected exactly one ${what}, got ${xs.length}`);
  return xs[0]!;
}

// ---------------------------------------------------------------------------
// 1. The interactive CLI in a terminal
// ---------------------------------------------------------------------------

test('interactive mariadb CLI (tmux) over verified TLS: auto-rehash, tab completion, USE, SOURCE, SELECT; all journaled', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const script = path.join(tmp, 'script.sql');
  fs.writeFileSync(
    script,
    [
      'CREATE TABLE sourced (id INT PRIMARY KEY, note VARCHAR(40));',
      "INSERT INTO sourced VALUES (1, 'first'), (2, 'it''s second');",
      '-- a comment line the CLI drops',
      "UPDATE sourced SET note = CONCAT(note, '!')",
      '  WHERE id = 1;',
      'INSERT INTO sourced VALUES (3, NULL);',
      '',
    ].join('\n'),
  );
  // The server certificate is verified against the gateway's own (self-signed) certificate.
  const argv = ['mariadb', ...gatewayClientArgs(gw, 'agent-cli', { verifyCert: true }), 'app'];
  const term = await TmuxTerminal.start(argv, { env: { MYSQL_PWD: keys['agent-cli']!, HOME: tmp, MYSQL_HISTFILE: '/dev/null' }, cwd: tmp });
  t.after(() => term.kill());

  const prompt = (db: string) => new RegExp(`MariaDB \\[${db}\\]>$`);
  /** Types a line, waits for the next prompt, returns what the line printed. */
  const run = async (line: string, db: string): Promise<string> => {
    const from = (await term.capture()).trimEnd().length;
    await term.line(line);
    const screen = await term.waitFor((tail) => prompt(db).test(tail.trimEnd()) && tail.trimEnd().length > line.length + 1, 20_000, from);
    return screen.slice(from).trimEnd();
  };

  // Auto-rehash is on by default: the CLI reads table and column names at start.
  const start = await term.waitFor((s) => prompt('app').test(s.trimEnd()), 20_000);
  assert.match(start, /Reading table information for completion of table and column names/);
  assert.doesNotMatch(start, /ERROR/);

  // Tab completion from the rehash: "custom" becomes "customers".
  let from = (await term.capture()).trimEnd().length;
  await term.type('SELECT name, city FROM custom');
  await term.keys('Tab');
  await term.waitFor(/FROM customers/, 10_000, from);
  from = (await term.capture()).trimEnd().length;
  await term.line(' ORDER BY id;');
  const completed = (await term.waitFor((tail) => prompt('app').test(tail.trimEnd()), 20_000, from)).slice(from);
  assert.match(completed, /\| name\s+\| city\s+\|[\s\S]*\| Ada\s+\| London\s+\|[\s\S]*\| Linus\s+\| Helsinki\s+\|[\s\S]*3 rows in set/);

  // \s (status): TLS between the CLI and the gateway.
  const status = await run('\\s', 'app');
  assert.match(status, /SSL:\s+Cipher in use is \S+/);
  assert.match(status, /Current user:\s+root@/); // the target's user: the gateway logs in with held credentials

  // USE of another schema on the same target (COM_INIT_DB), which rehashes again.
  const use = await run('USE otherdb', 'otherdb');
  assert.match(use, /Database changed/);

  // SOURCE runs the file's statements one by one.
  const sourced = await run(`SOURCE ${script}`, 'otherdb');
  assert.doesNotMatch(sourced, /ERROR/);
  assert.equal((sourced.match(/Query OK/g) ?? []).length, 4, sourced);

  const select = await run('SELECT id, note FROM sourced ORDER BY id;', 'otherdb');
  const table = select
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .map((l) => l.split('|').slice(1, -1).map((c) => c.trim()));
  assert.deepEqual(table, [['id', 'note'], ['1', 'first!'], ['2', "it's second"], ['3', 'NULL']]);
  assert.match(select, /3 rows in set/);

  await term.line('exit');
  await term.waitFor(/Bye/, 10_000);

  // The journal: one session, over TLS, with the rehash, the USE, the sourced statements in
  // order and each with its result, and the SELECT's rows.
  const s = only(await closedSessionsOf(gw, 'agent-cli'), 'session of agent-cli');
  const open = s.events.find((e) => e.type === 'session.open')!;
  assert.equal(open.data.tls, true);
  const cmds = commandsWithResults(s);
  const texts = cmds.map((c) => c.command.data.text as string);
  for (const c of cmds) assert.ok(c.result, `no result recorded for ${c.command.data.text}`);
  assert.ok(texts.includes('show tables'), 'the rehash ran SHOW TABLES');
  assert.ok(texts.includes('SHOW COLUMNS FROM `customers`'), 'the rehash listed the fields of customers (COM_FIELD_LIST)');
  assert.ok(texts.includes('SHOW COLUMNS FROM `widgets`'), 'the rehash after USE listed the fields of widgets');
  const useIdx = texts.indexOf('USE `otherdb`');
  assert.ok(useIdx >= 0, 'USE otherdb (COM_INIT_DB) recorded');
  assert.equal(cmds[useIdx]!.result!.data.status, 'ok');
  const first = texts.indexOf('CREATE TABLE sourced (id INT PRIMARY KEY, note VARCHAR(40))');
  assert.ok(first > useIdx, 'the sourced statements follow the USE');
  const sourcedCmds = cmds.slice(first, first + 4);
  assert.deepEqual(
    sourcedCmds.map((c) => [c.command.data.text, c.result!.data.status, c.result!.data.rows ?? null]),
    [
      ['CREATE TABLE sourced (id INT PRIMARY KEY, note VARCHAR(40))', 'ok', 0],
      ["INSERT INTO sourced VALUES (1, 'first'), (2, 'it''s second')", 'ok', 2],
      ["UPDATE sourced SET note = CONCAT(note, '!')\n  WHERE id = 1", 'ok', 1],
      ['INSERT INTO sourced VALUES (3, NULL)', 'ok', 1],
    ],
  );
  const sel = cmds.find((c) => c.command.data.text === 'SELECT id, note FROM sourced ORDER BY id')!;
  assert.deepEqual(sel.result!.data.sample, [['1', 'first!'], ['2', "it's second"], ['3', null]]);
  // Commands are recorded before they run, results after: every result follows its command.
  for (const c of cmds) assert.ok(c.result!.seq > c.command.seq);
  // And the rows really are in otherdb on the target.
  assert.equal((await admin('SELECT COUNT(*) FROM otherdb.sourced')).trim(), '3');
});

// ---------------------------------------------------------------------------
// 2. Batch mode
// ---------------------------------------------------------------------------

test('mariadb --batch: statements on stdin and with -e, tab-separated output', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const stdin = [
    '-- statements from stdin',
    'SELECT id, name FROM customers WHERE id <= 2 ORDER BY id;',
    "SELECT 'tab\\there' AS t, NULL AS n, 'new\\nline' AS nl, 'back\\\\slash' AS b;",
    'INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 19.5);',
    'SELECT cust,',
    '       total',
    '  FROM orders ORDER BY id;',
    '',
  ].join('\n');
  const r = await client('agent-batch', 'app', ['--batch'], stdin);
  assert.equal(r.code, 0, r.stderr);
  // Batch output escapes tab, newline and backslash inside values, and prints NULL as NULL.
  assert.equal(
    r.stdout.toString(),
    ['id\tname', '1\tAda', '2\tGrace', 't\tn\tnl\tb', 'tab\\there\tNULL\tnew\\nline\tback\\\\slash', 'cust\ttotal', '1\t9.99', '2\t19.50', ''].join('\n'),
  );

  const e = await client('agent-batch', 'app', ['--batch', '-e', 'SELECT COUNT(*) AS n FROM orders; SELECT DATABASE() AS db, 1 + 1 AS two']);
  assert.equal(e.code, 0, e.stderr);
  assert.equal(e.stdout.toString(), 'n\n2\ndb\ttwo\napp\t2\n');

  const sessions = await closedSessionsOf(gw, 'agent-batch', 2);
  const texts = sessions.flatMap((s) => commandsWithResults(s).map((c) => [c.command.data.text, c.result?.data.status]));
  for (const want of [
    'SELECT id, name FROM customers WHERE id <= 2 ORDER BY id',
    'INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 19.5)',
    'SELECT cust,\n       total\n  FROM orders ORDER BY id',
    'SELECT COUNT(*) AS n FROM orders',
    'SELECT DATABASE() AS db, 1 + 1 AS two',
  ]) {
    assert.ok(texts.some(([text, status]) => text === want && status === 'ok'), `journaled with an ok result: ${want}`);
  }
});

// ---------------------------------------------------------------------------
// 3. Dump and reload
// ---------------------------------------------------------------------------

const DUMP_SETUP = `
CREATE TABLE kinds (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  s VARCHAR(100), t TEXT, b BLOB, vb VARBINARY(16), d DECIMAL(14,4), f DOUBLE,
  dt DATETIME(6), dte DATE, tm TIME, e ENUM('red','green','blue'), st SET('x','y','z'),
  j JSON, bt BIT(8), u BIGINT UNSIGNED, n INT NULL,
  KEY (s)
) ENGINE=InnoDB;
INSERT INTO kinds (s, t, b, vb, d, f, dt, dte, tm, e, st, j, bt, u, n) VALUES
 ('plain', 'text', 'blob', 0x00ff10, 1234.5678, 3.141592653589793, '2024-02-29 12:34:56.123456', '2024-02-29', '-12:00:01', 'red', 'x,z', '{"a": [1, "two", null]}', b'10100101', 18446744073709551615, 42),
 ('it''s "quoted" \\\\ back\\\\slash', 'line1\\nline2\\ttab\\rcr', 0x000102030405fffefd27225c0a0d1a, 0x27225c00, -0.0001, -1e300, '1970-01-01 00:00:01', '1000-01-01', '838:59:59', 'blue', '', '"just a string"', b'0', 0, NULL),
 ('Zürich 東京 😀', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('; DROP TABLE kinds; --', '/*!50000 comment */ */', 0x2f2a21, '', 0, 0, '9999-12-31 23:59:59.999999', '9999-12-31', '00:00:00', 'green', 'x,y,z', '[]', b'11111111', 1, -2147483648);
INSERT INTO kinds (s, b) SELECT CONCAT('row ', seq), UNHEX(SHA2(seq, 256)) FROM seq_1_to_500;
CREATE TABLE child (id INT PRIMARY KEY, kind_id INT UNSIGNED, note VARCHAR(20) DEFAULT 'n/a',
  CONSTRAINT fk_kind FOREIGN KEY (kind_id) REFERENCES kinds (id)) ENGINE=InnoDB;
INSERT INTO child VALUES (1, 1, 'one'), (2, 2, NULL), (3, 2, DEFAULT);
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, child_id INT, at_note VARCHAR(40));
CREATE TRIGGER child_ai AFTER INSERT ON child FOR EACH ROW INSERT INTO audit (child_id, at_note) VALUES (NEW.id, CONCAT('added ', NEW.note));
INSERT INTO child VALUES (4, 3, 'four');
CREATE VIEW named_kinds AS SELECT k.id, k.s, c.note FROM kinds k JOIN child c ON c.kind_id = k.id;
`;

const DUMP_TABLES = ['kinds', 'child', 'audit'];

/** CHECKSUM TABLE of the dump tables in `db`, plus its views and triggers, for comparison. */
async function fingerprint(db: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const sums = await admin(`CHECKSUM TABLE ${DUMP_TABLES.map((t) => `${db}.${t}`).join(', ')}`);
  for (const line of sums.trim().split('\n')) {
    const [name, sum] = line.split('\t');
    out[name!.replace(`${db}.`, '')] = sum!;
  }
  out.rows = (await admin(`SELECT COUNT(*) FROM ${db}.kinds`)).trim();
  out.view = (await admin(`SELECT GROUP_CONCAT(CONCAT_WS(':', id, s, IFNULL(note, 'NULL')) ORDER BY id, note) FROM ${db}.named_kinds`)).trim();
  out.triggers = (await admin(`SELECT GROUP_CONCAT(TRIGGER_NAME, ' ', ACTION_TIMING, ' ', EVENT_MANIPULATION, ' ', ACTION_STATEMENT) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '${db}'`)).trim();
  out.tables = (await admin(`SELECT GROUP_CONCAT(TABLE_NAME, ':', TABLE_TYPE ORDER BY TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '${db}'`)).trim();
  return out;
}

let dumpSetUp: Promise<void> | null = null;
function setUpDumpSource(): Promise<void> {
  return (dumpSetUp ??= (async () => {
    await admin(DUMP_SETUP, 'dumpsrc');
  })());
}

test('a mariadb-dump file reloads through the gateway: executable comments, LOCK TABLES, trigger, view, binary data; checksums match', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  await setUpDumpSource();
  // The dump is taken directly from MariaDB here (see the next test for the dump through the gateway).
  const dumpFile = path.join(tmp, 'direct.sql');
  const d = await runProgram('mariadb-dump', ['--no-defaults', '-uroot', `--socket=${maria!.socket}`, 'dumpsrc'], { env: { MYSQL_PWD: maria!.password }, stdoutFile: dumpFile });
  assert.equal(d.code, 0, d.stderr);
  const dump = fs.readFileSync(dumpFile, 'latin1');
  for (const marker of ['/*!40101 SET', 'LOCK TABLES `kinds` WRITE', 'DELIMITER ;;', '/*!50003 TRIGGER child_ai', '/*!50001 VIEW `named_kinds`']) {
    assert.ok(dump.includes(marker), `the dump has ${marker}`);
  }

  // Reloaded through the gateway into the empty schema behind connection "dumpdst".
  const r = await runProgram('mariadb', [...gatewayClientArgs(gw, 'agent-load'), 'dumpdst'], { env: { MYSQL_PWD: keys['agent-load']! }, stdinFile: dumpFile });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await fingerprint('dumpdst'), await fingerprint('dumpsrc'));
  // The reloaded trigger works.
  await admin("INSERT INTO dumpdst.child VALUES (5, 1, 'five')");
  assert.equal((await admin('SELECT at_note FROM dumpdst.audit WHERE child_id = 5')).trim(), 'added five');

  // Every statement of the dump was recorded with its result; none was refused.
  const s = only(await closedSessionsOf(gw, 'agent-load'), 'session of agent-load');
  const cmds = commandsWithResults(s);
  for (const c of cmds) assert.equal(c.result?.data.status, 'ok', `${c.command.data.text.slice(0, 200)}: ${JSON.stringify(c.result?.data)}`);
  const texts = cmds.map((c) => c.command.data.text as string);
  assert.ok(texts.includes('/*!40101 SET NAMES utf8mb4 */'));
  assert.ok(texts.includes('LOCK TABLES `kinds` WRITE'));
  assert.ok(texts.some((x) => x.startsWith('/*!50003 CREATE*/ /*!50017 DEFINER=') && x.includes('TRIGGER child_ai')));
  assert.ok(texts.some((x) => x.startsWith('INSERT INTO `kinds` VALUES')));
  // The DROP TABLE IF EXISTS of the dump is a DROP_TABLE: recorded, allowed on this connection.
  const drop = cmds.find((c) => c.command.data.text === 'DROP TABLE IF EXISTS `kinds`')!;
  assert.equal(drop.command.data.verdict.action, 'allow');
});

// mariadb-dump logs in WITHOUT a database and selects it afterwards (COM_INIT_DB): the gateway's
// control session becomes a full session then. The connection is named like its database, as
// the dump also queries information_schema by that name.
test('mariadb-dump through the gateway dumps the same as directly, and that dump reloads through the gateway', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  await setUpDumpSource();
  const viaGw = path.join(tmp, 'via-gateway.sql');
  const d = await runProgram('mariadb-dump', [...gatewayClientArgs(gw, 'agent-dump'), 'dumpsrc'], { env: { MYSQL_PWD: keys['agent-dump']! }, stdoutFile: viaGw, timeoutMs: 60_000 });
  assert.equal(d.code, 0, d.stderr);
  const direct = path.join(tmp, 'direct-2.sql');
  const dd = await runProgram('mariadb-dump', ['--no-defaults', '-uroot', `--socket=${maria!.socket}`, 'dumpsrc'], { env: { MYSQL_PWD: maria!.password }, stdoutFile: direct });
  assert.equal(dd.code, 0, dd.stderr);
  // Equal but for the comment lines naming host, server version and date.
  const body = (f: string) => fs.readFileSync(f, 'latin1').split('\n').filter((l) => !l.startsWith('-- ')).join('\n');
  assert.equal(body(viaGw), body(direct));
  const r = await runProgram('mariadb', [...gatewayClientArgs(gw, 'agent-load'), 'dumpcopy'], { env: { MYSQL_PWD: keys['agent-load']! }, stdinFile: viaGw });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await fingerprint('dumpcopy'), await fingerprint('dumpsrc'));
});

// ---------------------------------------------------------------------------
// 4. Load: sysbench
// ---------------------------------------------------------------------------

const COUNTED = ['Com_select', 'Com_insert', 'Com_update', 'Com_delete', 'Com_begin', 'Com_commit', 'Com_rollback'] as const;

async function comCounters(): Promise<Record<string, number>> {
  const out = await admin(`SHOW GLOBAL STATUS WHERE Variable_name IN (${COUNTED.map((c) => `'${c}'`).join(', ')})`);
  const m: Record<string, number> = {};
  for (const line of out.trim().split('\n')) {
    const [k, v] = line.split('\t');
    m[k!] = Number(v);
  }
  return m;
}

function sysbenchNumber(out: string, label: string): number {
  const m = new RegExp(`^\\s*${label}:\\s+([\\d.]+)`, 'm').exec(out);
  assert.ok(m, `sysbench output has "${label}:"\n${out}`);
  return Number(m[1]);
}

test(`sysbench oltp_read_write, ${SYSBENCH_THREADS} threads, ${SYSBENCH_SECONDS} s through the gateway: no errors, every statement journaled`, { timeout: 5 * 60_000 }, async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const common = ['oltp_read_write', '--db-driver=mysql', '--tables=2', '--table-size=10000', '--rand-type=uniform'];
  // Prepared directly (through the socket) to save time: the load is what goes through the gateway.
  const prep = await runProgram('sysbench', [...common, `--mysql-socket=${maria!.socket}`, '--mysql-user=root', `--mysql-password=${maria!.password}`, '--mysql-db=sbtest', 'prepare'], { timeoutMs: 120_000 });
  assert.equal(prep.code, 0, prep.stderr + prep.stdout.toString());

  // sysbench 1.0's --mysql-ssl=on loads client-key.pem, client-cert.pem and cacert.pem from
  // its working directory (it cannot be told other paths): a throwaway client certificate, and
  // the gateway's certificate as the CA.
  const sslDir = path.join(tmp, 'sysbench-ssl');
  fs.mkdirSync(sslDir);
  const clientCert = await generate([{ name: 'commonName', value: 'sysbench' }], { keyType: 'rsa', keySize: 2048, algorithm: 'sha256', notAfterDate: new Date(Date.now() + 86400e3) } as any);
  fs.writeFileSync(path.join(sslDir, 'client-key.pem'), clientCert.private, { mode: 0o600 });
  fs.writeFileSync(path.join(sslDir, 'client-cert.pem'), clientCert.cert);
  fs.copyFileSync(gatewayCertFile(gw), path.join(sslDir, 'cacert.pem'));

  const before = await comCounters();
  const run = await runProgram(
    'sysbench',
    [
      ...common,
      '--mysql-host=127.0.0.1',
      `--mysql-port=${gw.mysqlPort}`,
      '--mysql-user=agent-bench',
      `--mysql-password=${keys['agent-bench']}`,
      '--mysql-db=sbtest',
      '--mysql-ssl=on',
      `--db-ps-mode=${SYSBENCH_PS_MODE}`,
      `--threads=${SYSBENCH_THREADS}`,
      `--time=${SYSBENCH_SECONDS}`,
      'run',
    ],
    { cwd: sslDir, timeoutMs: (SYSBENCH_SECONDS + 60) * 1000 },
  );
  const out = run.stdout.toString();
  assert.equal(run.code, 0, `sysbench failed (${run.code}):\n${run.stderr}\n${out}`);
  const after = await comCounters();
  const read = sysbenchNumber(out, 'read');
  const write = sysbenchNumber(out, 'write');
  const other = sysbenchNumber(out, 'other');
  const total = sysbenchNumber(out, 'total');
  const transactions = sysbenchNumber(out, 'transactions');
  const ignored = sysbenchNumber(out, 'ignored errors');
  const reconnects = sysbenchNumber(out, 'reconnects');
  t.diagnostic(`sysbench: ${transactions} transactions, ${total} queries (read ${read}, write ${write}, other ${other}), ignored errors ${ignored}, reconnects ${reconnects}, ps-mode ${SYSBENCH_PS_MODE}`);
  assert.ok(transactions > 0);
  assert.doesNotMatch(run.stderr + out, /FATAL/);
  assert.equal(reconnects, 0);

  // Every statement journaled. The exact comparison is with the target's own counters: between
  // the two SHOW GLOBAL STATUS (run as root on the socket; they count as Com_show_status, not
  // in these), nothing but sysbench's sessions ran statements on this server, and the server
  // increments Com_<kind> once per statement it executed, text or prepared. So per kind, the
  // number of command events in sysbench's sessions must equal the server's delta: a statement
  // that ran without being recorded, or was recorded twice, shows up as a difference. The
  // journal must also hold one result per command, all ok, and the totals must match what
  // sysbench itself reports.
  const sessions = await closedSessionsOf(gw, 'agent-bench', SYSBENCH_THREADS, 60_000);
  assert.equal(sessions.length, SYSBENCH_THREADS);
  const byKind: Record<string, number> = Object.fromEntries(COUNTED.map((c) => [c, 0]));
  let results = 0;
  const failed: string[] = [];
  for (const s of sessions) {
    for (const { command, result } of commandsWithResults(s)) {
      const verb = String(command.data.text).trim().split(/\s+/)[0]!.toLowerCase();
      const key = `Com_${verb}`;
      assert.ok(key in byKind, `unexpected statement from sysbench: ${command.data.text}`);
      byKind[key]!++;
      if (result) results++;
      if (result?.data.status !== 'ok') failed.push(`${command.data.text.slice(0, 80)} → ${JSON.stringify(result?.data.error ?? result?.data.status)}`);
    }
  }
  const delta = Object.fromEntries(COUNTED.map((c) => [c, after[c]! - before[c]!]));
  t.diagnostic(`journal ${JSON.stringify(byKind)}; server deltas ${JSON.stringify(delta)}`);
  if (failed.length) t.diagnostic(`failed statements: ${failed.slice(0, 10).join('; ')}`);
  assert.deepEqual(byKind, delta);
  const journaled = Object.values(byKind).reduce((a, b) => a + b, 0);
  assert.equal(results, journaled, 'every command has its result');

  // No errors caused by the gateway: every statement's result is ok, except InnoDB deadlocks.
  // Those are the database's (sysbench retries the transaction and counts them as "ignored
  // errors"; oltp_read_write at 8 threads gets them directly too, a few per 20,000
  // transactions with the default skewed key distribution, hence --rand-type=uniform above).
  // A deadlock is allowed only as the target's own error 1213 (SQLSTATE 40001), recorded as
  // the statement's result, one per ignored error, and rarely.
  const deadlocks = failed.filter((f) => f.includes('"40001"') && f.includes('1213'));
  assert.deepEqual(failed.filter((f) => !deadlocks.includes(f)), [], 'no statement failed except by an InnoDB deadlock');
  assert.equal(ignored, deadlocks.length, `sysbench's ignored errors are the deadlocks in the journal: ${failed.slice(0, 10).join('; ')}`);
  assert.ok(deadlocks.length <= Math.max(2, transactions / 500), `${deadlocks.length} deadlocks in ${transactions} transactions`);
  if (ignored === 0) {
    // And then the journal's totals are sysbench's own.
    assert.equal(journaled, total);
    assert.equal(byKind.Com_select, read);
    assert.equal(byKind.Com_insert! + byKind.Com_update! + byKind.Com_delete!, write);
    assert.equal(byKind.Com_begin! + byKind.Com_commit! + byKind.Com_rollback!, other);
  }
});

// ---------------------------------------------------------------------------
// 5. The guard with real clients
// ---------------------------------------------------------------------------

test('guard: a DROP inside an executable comment is refused with the denial printed by the CLI; the table stays', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const r = await client('agent-guard', 'guarded', ['--batch', '-e', '/*!50000 DROP TABLE g */']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^ERROR 1227 \(42000\) at line 1: dropping tables is not allowed here \(rule: no-drops; hint: ask a DBA\)$/m);
  assert.equal((await admin('SELECT COUNT(*) FROM guarded.g')).trim(), '3');
  // The session goes on after the refusal (--force: the CLI continues after an error).
  const f = await client('agent-guard', 'guarded', ['--batch', '--force', '--skip-column-names'], 'DROP TABLE g;\nSELECT COUNT(*) FROM g;\n');
  assert.match(f.stderr, /ERROR 1227 .*rule: no-drops/);
  assert.equal(f.stdout.toString(), '3\n');
});

test('guard: a held DELETE (mysql2) waits, runs after `gatehouse approvals approve` from another process, and the journal shows it', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await mysql.createConnection({ host: '127.0.0.1', port: gw.mysqlPort, user: 'agent-guard', password: keys['agent-guard'], database: 'guarded', ssl: { rejectUnauthorized: false } });
  t.after(() => c.destroy());
  const held = c.query('DELETE FROM g WHERE id = 2');
  held.catch(() => {}); // awaited below
  let id: string | undefined;
  for (let i = 0; i < 100 && !id; i++) {
    const res = await fetch(`http://127.0.0.1:${gw.apiPort}/api/approvals?status=pending`, { headers: { authorization: `Bearer dba1.${keys.dba1}` } });
    const list = (await res.json()) as { id: string; text: string }[];
    id = list.find((x) => x.text === 'DELETE FROM g WHERE id = 2')?.id;
    if (!id) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(id, 'a pending review for the DELETE');
  assert.equal((await admin('SELECT COUNT(*) FROM guarded.g WHERE id = 2')).trim(), '1', 'a held statement must not have reached the target');
  const approve = await gw.cli(['approvals', 'approve', id, '--comment', 'fine', '--key', `dba1.${keys.dba1}`]);
  assert.equal(approve.code, 0, approve.stderr);
  const [res] = (await held) as [mysql.ResultSetHeader, unknown];
  assert.equal(res.affectedRows, 1);
  assert.equal((await admin('SELECT COUNT(*) FROM guarded.g WHERE id = 2')).trim(), '0');
  const [rows] = await c.query('SELECT id FROM g ORDER BY id');
  assert.deepEqual(rows, [{ id: 1 }, { id: 3 }]);
  await c.end();

  const s: JournalSession = only(
    (await closedSessionsOf(gw, 'agent-guard', 1)).filter((x) => x.events.some((e) => e.type === 'command' && e.data.text === 'DELETE FROM g WHERE id = 2')),
    'session with the DELETE',
  );
  const cmd = s.events.find((e) => e.type === 'command' && e.data.text === 'DELETE FROM g WHERE id = 2')!;
  assert.equal(cmd.data.verdict.action, 'review');
  const after = s.events.filter((e) => e.seq > cmd.seq).map((e) => e.type);
  assert.deepEqual(after.slice(0, 3), ['review.requested', 'review.decided', 'result']);
  const result = s.events.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
  assert.deepEqual([result.data.status, result.data.rows], ['ok', 1]);
});
