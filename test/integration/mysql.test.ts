// The MySQL/MariaDB adapter end to end: the mariadb CLI and mysql2 through the gateway to a
// real MariaDB, with the journal, verification and the guard.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import os from 'node:os';
import mysql from 'mysql2/promise';
import { mariadbMissing, type MariaServer } from '../helpers/mariadb.ts';
import { startMariadbBounded } from '../helpers/mysql-suite.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';

let maria: MariaServer | null = null;
let mariaTls: MariaServer | null = null;
let gw: GatewayUnderTest | null = null;
let skipped: string | null = null;

before(async () => {
  skipped = mariadbMissing();
  if (skipped) return;
  // One after the other, each bounded and retried (see startMariadbBounded).
  maria = await startMariadbBounded({});
  mariaTls = await startMariadbBounded({ ssl: true });
  gw = await startGateway({
    mysql: true,
    extra: {
      connections: [{ name: 'maria', type: 'mysql', host: maria.host, port: maria.port, database: 'test', user: 'root', password: maria.password, tls: 'disable' },
        { name: 'maria-tls', type: 'mysql', host: mariaTls.host, port: mariaTls.port, database: 'test', user: 'root', password: mariaTls.password, tls: 'require' },
      ],
      policy: {
        default: { action: 'allow' },
        rules: [{ name: 'no-drops', match: { types: ['DROP_TABLE'] }, action: 'block' }],
      },
    },
  });
});

after(async () => {
  await gw?.stop();
  await maria?.stop();
  await mariaTls?.stop();
});

function cli(user: string, key: string, sql: string, opts: { database?: string; ssl?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const args = ['--no-defaults', '--batch', '--skip-column-names', '--protocol=TCP', '-h127.0.0.1', `-P${gw!.mysqlPort}`, `-u${user}`];
  args.push(opts.ssl === false ? '--skip-ssl' : '--ssl');
  args.push(opts.database ?? 'maria', '-e', sql);
  return new Promise((resolve, reject) => {
    const p = spawn('mariadb', args, { env: { ...process.env, MYSQL_PWD: key, HOME: os.tmpdir() }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function sessionEvents(): Promise<{ id: string; events: { type: string; seq: number; data: any }[] }[]> {
  const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json'])).stdout) as { id: string; protocol?: string }[];
  const out = [];
  for (const s of list) {
    const show = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout);
    out.push({ id: s.id, events: show.events });
  }
  return out;
}

test('mariadb CLI over TLS: statements run, each recorded with its result, journal verifies', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-cli', { connections: 'maria' });
  const r = await cli('agent-cli', key, 'create table t(a int); insert into t values (1),(2); select * from t order by a');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '1\n2');

  // Wait for the session to be closed and recorded.
  let mine: { id: string; events: { type: string; seq: number; data: any }[] } | undefined;
  for (let i = 0; i < 50 && !mine?.events.some((e) => e.type === 'session.close'); i++) {
    await new Promise((res) => setTimeout(res, 100));
    mine = (await sessionEvents()).find((s) => s.events.some((e) => e.type === 'command' && e.data.text === 'create table t(a int)'));
  }
  assert.ok(mine, 'session recorded');
  const open = mine.events.find((e) => e.type === 'session.open')!;
  assert.equal(open.data.protocol, 'mysql');
  assert.equal(open.data.tls, true);
  const commands = mine.events.filter((e) => e.type === 'command' && e.data.dialect === 'mysql');
  const texts = commands.map((e) => e.data.text);
  // The CLI sends its own `select @@version_comment limit 1` first.
  const ours = texts.slice(texts.indexOf('create table t(a int)'));
  assert.deepEqual(ours, ['create table t(a int)', 'insert into t values (1),(2)', 'select * from t order by a']);
  const resultOf = (text: string) => {
    const c = commands.find((e) => e.data.text === text)!;
    return mine!.events.find((e) => e.type === 'result' && e.data.command === c.seq)!.data;
  };
  assert.equal(resultOf('create table t(a int)').status, 'ok');
  const ins = resultOf('insert into t values (1),(2)');
  assert.deepEqual([ins.status, ins.tag, ins.rows], ['ok', 'OK', 2]);
  const sel = resultOf('select * from t order by a');
  assert.deepEqual([sel.status, sel.tag, sel.rows, sel.columns, sel.sample], ['ok', 'SELECT', 2, ['a'], [['1'], ['2']]]);
  // Results follow their commands in order.
  const resultSeqs = ours.map((txt) => mine!.events.find((e) => e.type === 'result' && e.data.command === commands.find((c) => c.data.text === txt)!.seq)!.seq);
  assert.deepEqual([...resultSeqs].sort((a, b) => a - b), resultSeqs);

  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('a wrong key is ERROR 1045, an unknown database 1049, an ungranted one 1044, plaintext refused', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-auth', { connections: 'maria' });
  const wrong = await cli('agent-auth', key + 'x', 'select 1');
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /ERROR 1045 .*Access denied for user 'agent-auth'/);
  const nobody = await cli('nobody', key, 'select 1');
  assert.match(nobody.stderr, /ERROR 1045/);
  const unknown = await cli('agent-auth', key, 'select 1', { database: 'nope' });
  assert.match(unknown.stderr, /ERROR 1049 .*Unknown database 'nope'/);
  const other = await gw.createKey('agent-other', { connections: 'main' });
  const denied = await cli('agent-other', other, 'select 1');
  assert.match(denied.stderr, /ERROR 1044 .*not granted connection "maria"/);
  const plain = await cli('agent-auth', key, 'select 1', { ssl: false });
  assert.match(plain.stderr, /ERROR 3159 .*only TLS/);
});

test('a blocked DROP TABLE is refused with the denial, also inside an executable comment; the session goes on', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-guard', { connections: 'maria' });
  const c = await mysql.createConnection({ host: '127.0.0.1', port: gw.mysqlPort, user: 'agent-guard', password: key, database: 'maria', ssl: { rejectUnauthorized: false } });
  try {
    await c.query('create table g(a int)');
    for (const sql of ['DROP TABLE g', '/*!50000 DROP TABLE g */']) {
      await assert.rejects(c.query(sql), (e: any) => {
        assert.equal(e.errno, 1227);
        assert.equal(e.sqlState, '42000');
        assert.match(e.message, /\(rule: no-drops; hint: /);
        return true;
      });
    }
    // The table is still there and the connection still works.
    const [rows] = await c.query('select count(*) as n from g');
    assert.deepEqual(rows, [{ n: 0 }]);
  } finally {
    await c.end();
  }
  const s = (await sessionEvents()).find((x) => x.events.some((e) => e.type === 'command' && e.data.text === 'DROP TABLE g'))!;
  const drops = s.events.filter((e) => e.type === 'command' && /DROP TABLE g/.test(e.data.text));
  assert.equal(drops.length, 2);
  for (const d of drops) {
    assert.equal(d.data.verdict.action, 'block');
    const res = s.events.find((e) => e.type === 'result' && e.data.command === d.seq)!;
    assert.equal(res.data.status, 'denied');
  }
});

test('mysql2: result sets, errors, multi-statements and USE through the gateway', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-mysql2', { connections: 'maria' });
  const c = await mysql.createConnection({ host: '127.0.0.1', port: gw.mysqlPort, user: 'agent-mysql2', password: key, database: 'maria', ssl: { rejectUnauthorized: false }, multipleStatements: true });
  try {
    const [rows, fields] = await c.query("select 1 as one, 'two' as two, null as three");
    assert.deepEqual(rows, [{ one: 1, two: 'two', three: null }]);
    assert.deepEqual((fields as { name: string }[]).map((f) => f.name), ['one', 'two', 'three']);
    await assert.rejects(c.query('select * from no_such_table'), (e: any) => e.errno === 1146);
    const [multi] = await c.query('select 1 as a; select 2 as b');
    assert.deepEqual(multi, [[{ a: 1 }], [{ b: 2 }]]);
    await c.query('create table big(a int)');
    await c.query('insert into big select seq from seq_1_to_5000');
    const [many] = await c.query('select a from big');
    assert.equal((many as unknown[]).length, 5000);
    await c.query('use test');
    // Changing user to another database would switch Gatehouse connections: refused.
    await c.changeUser({ database: 'test' }).then(
      () => assert.fail('change user should be refused'),
      (e: any) => assert.match(e.message, /cannot switch the Gatehouse connection from "maria" to "test"; reconnect with database test/),
    );
  } finally {
    c.destroy();
  }
  const s = (await sessionEvents()).find((x) => x.events.some((e) => e.type === 'command' && e.data.text === 'select 1 as a'))!;
  const cmds = s.events.filter((e) => e.type === 'command');
  const results = (text: string) => {
    const cmd = cmds.find((e) => e.data.text === text)!;
    return s.events.find((e) => e.type === 'result' && e.data.command === cmd.seq)!.data;
  };
  assert.deepEqual(results('select 1 as a').sample, [['1']]);
  assert.deepEqual(results('select 2 as b').sample, [['2']]);
  assert.equal(cmds.find((e) => e.data.text === 'select 1 as a')!.data.batch, 2);
  const missing = results('select * from no_such_table');
  assert.deepEqual([missing.status, missing.error.code], ['error', '42S02']);
  const big = results('select a from big');
  assert.deepEqual([big.rows, big.truncated, big.sample.length], [5000, true, 10]);
  assert.ok(cmds.some((e) => e.data.text === 'use test'));
});

test('a target that requires TLS is reached over TLS (tls: require)', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-tls', { connections: 'maria-tls' });
  const r = await cli('agent-tls', key, "show status like 'Ssl_cipher'", { database: 'maria-tls' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Ssl_cipher\t\S+/);
});

test('revoking the key ends an open session with an error', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const key = await gw.createKey('agent-revoke', { connections: 'maria' });
  const c = await mysql.createConnection({ host: '127.0.0.1', port: gw.mysqlPort, user: 'agent-revoke', password: key, database: 'maria', ssl: { rejectUnauthorized: false } });
  const closed = new Promise<void>((resolve) => c.on('error', () => resolve()));
  await c.query('select 1');
  const r = await gw.cli(['keys', 'revoke', 'agent-revoke']);
  assert.equal(r.code, 0, r.stderr);
  await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('session not killed')), 10_000))]);
  c.destroy();
});

/** A minimal hand-rolled client: caching_sha2_password and CLIENT_DEPRECATE_EOF, which neither CLI nor mysql2 use. */
test('raw client: caching_sha2_password fast auth, DEPRECATE_EOF result sets, unsupported commands', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const net = await import('node:net');
  const tls = await import('node:tls');
  const { encodePacket } = await import('../../src/protocols/mysql/codec.ts');
  const P = await import('../../src/protocols/mysql/packets.ts');
  const A = await import('../../src/protocols/mysql/auth.ts');
  const { PacketReader } = await import('../../src/protocols/mysql/io.ts');
  const key = await gw.createKey('agent-raw', { connections: 'maria' });
  const raw = net.connect({ host: '127.0.0.1', port: gw.mysqlPort! });
  await new Promise((r) => raw.once('connect', r));
  let rd = new PacketReader(raw, 1 << 20);
  const timeout = () => new Error('timeout');
  const hs = P.decodeHandshakeV10((await rd.next(5000, timeout)).payload);
  assert.equal(hs.authPlugin, 'mysql_native_password');
  assert.ok(P.hasCap(hs.capabilities, P.CLIENT_DEPRECATE_EOF));
  assert.equal(hs.capabilities & P.UNSUPPORTED_CAPABILITIES, 0);
  const caps = (P.CLIENT_PROTOCOL_41 | P.CLIENT_SECURE_CONNECTION | P.CLIENT_PLUGIN_AUTH | P.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | P.CLIENT_CONNECT_WITH_DB | P.CLIENT_DEPRECATE_EOF | P.CLIENT_MULTI_RESULTS | P.CLIENT_MULTI_STATEMENTS | P.CLIENT_SSL | P.CLIENT_TRANSACTIONS | P.CLIENT_LONG_PASSWORD) >>> 0;
  raw.write(encodePacket(1, P.encodeSslRequest(caps, 45)));
  rd.detach();
  const sock = tls.connect({ socket: raw, rejectUnauthorized: false });
  await new Promise((r) => sock.once('secureConnect', r));
  rd = new PacketReader(sock, 1 << 20);
  sock.write(encodePacket(2, P.encodeHandshakeResponse41({ capabilities: caps, charset: 45, user: 'agent-raw', authResponse: A.scrambleCachingSha2(key, hs.scramble), database: 'maria', authPlugin: 'caching_sha2_password' })));
  let pkt = await rd.next(5000, timeout);
  assert.deepEqual([pkt.seq, [...pkt.payload]], [3, [0x01, 0x03]], 'fast auth success');
  pkt = await rd.next(10000, timeout);
  assert.ok(P.isOk(pkt.payload), 'OK after fast auth');
  assert.equal(pkt.seq, 4);

  const query = async (sql: string) => {
    sock.write(encodePacket(0, P.encodeCommand(P.COM_QUERY, sql)));
    const out: Buffer[] = [];
    for (;;) {
      const p = await rd.next(5000, timeout);
      out.push(p.payload);
      if (P.isErr(p.payload)) return out;
      if (out.length === 1 && P.isOk(p.payload)) {
        if (!(P.decodeOk(p.payload).status & P.SERVER_MORE_RESULTS_EXISTS)) return out;
        continue;
      }
      if (out.length > 2 && P.isResultsetEnd(p.payload, true) && !(P.decodeOk(p.payload).status & P.SERVER_MORE_RESULTS_EXISTS)) return out;
    }
  };
  const res = await query("select 'x' as c");
  // column count, one column definition, one row, and an OK with the 0xfe header (no EOF after the columns)
  assert.equal(res.length, 4);
  assert.equal(P.decodeColumnCount(res[0]!), 1);
  assert.equal(P.decodeColumnDefinition41(res[1]!).name, 'c');
  assert.deepEqual(P.decodeTextRow(res[2]!, 1).map((v) => v?.toString()), ['x']);
  assert.equal(res[3]![0], 0xfe);

  sock.write(encodePacket(0, P.encodeCommand(P.COM_STMT_BULK_EXECUTE, Buffer.alloc(8))));
  pkt = await rd.next(5000, timeout);
  const err = P.decodeErr(pkt.payload);
  assert.deepEqual([pkt.seq, err.code, err.sqlState], [1, 1047, '08S01']);
  assert.match(err.message, /not supported by the gateway yet: COM_STMT_BULK_EXECUTE/);

  sock.write(encodePacket(0, P.encodeCommand(P.COM_PING)));
  pkt = await rd.next(5000, timeout);
  assert.ok(P.isOk(pkt.payload));
  // still usable after all that
  const again = await query('select 2');
  assert.equal(P.decodeTextRow(again[2]!, 1)[0]!.toString(), '2');
  sock.write(encodePacket(0, P.encodeCommand(P.COM_QUIT)));
  sock.destroy();
});

test('a malformed login packet gets ERR 1835, not a crash', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const net = await import('node:net');
  const tls = await import('node:tls');
  const { encodePacket } = await import('../../src/protocols/mysql/codec.ts');
  const P = await import('../../src/protocols/mysql/packets.ts');
  const { PacketReader } = await import('../../src/protocols/mysql/io.ts');
  const raw = net.connect({ host: '127.0.0.1', port: gw.mysqlPort! });
  await new Promise((r) => raw.once('connect', r));
  let rd = new PacketReader(raw, 1 << 20);
  await rd.next(5000, () => new Error('timeout'));
  rd.detach();
  // SSLRequest and the ClientHello in one segment, as fast clients send them.
  const { Duplex } = await import('node:stream');
  let prefix: Buffer | null = encodePacket(1, P.encodeSslRequest(P.CLIENT_PROTOCOL_41, 45));
  const wrapper = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      raw.write(prefix ? Buffer.concat([prefix, chunk]) : chunk);
      prefix = null;
      cb();
    },
  });
  raw.on('data', (d) => wrapper.push(d));
  raw.resume();
  const sock = tls.connect({ socket: wrapper, rejectUnauthorized: false });
  await new Promise((r) => sock.once('secureConnect', r));
  rd = new PacketReader(sock, 1 << 20);
  // capabilities say 4.1, then the packet ends in the middle of the fixed part
  sock.write(encodePacket(2, Buffer.from([0x00, 0x02, 0x00, 0x00, 1, 2, 3])));
  const pkt = await rd.next(5000, () => new Error('timeout'));
  const err = P.decodeErr(pkt.payload);
  assert.equal(err.code, 1835);
  sock.destroy();
  // the gateway still serves
  const key = await gw.createKey('agent-after', { connections: 'maria' });
  const r = await cli('agent-after', key, 'select 7');
  assert.equal(r.stdout.trim(), '7', r.stderr);
});
