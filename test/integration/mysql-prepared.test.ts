// Prepared statements (COM_STMT_*), LOAD DATA LOCAL INFILE and packets over 16 MB through the
// gateway to a real MariaDB: mysql2 for PREPARE/EXECUTE/CLOSE, a raw client for what mysql2 never
// sends (SEND_LONG_DATA, cursors and FETCH, RESET), with the journal checked for each.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import mysql from 'mysql2/promise';
import { mariadbMissing, type MariaServer } from '../helpers/mariadb.ts';
import { startMariadbBounded } from '../helpers/mysql-suite.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { encodePacket } from '../../src/protocols/mysql/codec.ts';
import { PacketReader } from '../../src/protocols/mysql/io.ts';
import * as P from '../../src/protocols/mysql/packets.ts';
import * as A from '../../src/protocols/mysql/auth.ts';

let maria: MariaServer | null = null;
let gw: GatewayUnderTest | null = null;
let skipped: string | null = null;
const keys: Record<string, string> = {};

before(async () => {
  skipped = mariadbMissing();
  if (skipped) return;
  // 64 MB packets, for the 20 MB BLOB test (the default is 16 MB).
  maria = await startMariadbBounded({ serverArgs: ['--max-allowed-packet=64M'] });
  gw = await startGateway({
    mysql: true,
    extra: {
      connections: [{ name: 'maria', type: 'mysql', host: maria.host, port: maria.port, database: 'test', user: 'root', password: maria.password, tls: 'disable' }],
      policy: {
        default: { action: 'allow' },
        rules: [
          { name: 'no-secrets', match: { tables: { read: ['*secret*'] } }, action: 'block', reason: 'the secret table is off limits' },
          { name: 'hold-deletes', match: { types: ['DELETE'], tables: { write: ['*held*'] } }, action: 'review', approvers: ['dba'], holdFor: '60s' },
          { name: 'unknown-blocked', match: { classes: ['unknown'] }, action: 'block' },
          { name: 'loaders-load-files', match: { identities: ['loader*'], flags: ['load_data_local'] }, action: 'allow' },
        ],
      },
    },
  });
  keys.agent = await gw.createKey('agent-ps', { connections: 'maria' });
  keys.loader = await gw.createKey('loader-ps', { connections: 'maria' });
  keys.raw = await gw.createKey('agent-raw-ps', { connections: 'maria' });
  keys.dba = await gw.createKey('dba-ps', { kind: 'human', groups: 'dba', connections: 'maria' });
});

after(async () => {
  await gw?.stop();
  await maria?.stop();
});

function connect(user: string, key: string, extra: Record<string, unknown> = {}): Promise<mysql.Connection> {
  return mysql.createConnection({ host: '127.0.0.1', port: gw!.mysqlPort, user, password: key, database: 'maria', ssl: { rejectUnauthorized: false }, ...extra });
}

type Ev = { type: string; seq: number; data: any };

/** The events of the session that recorded a command matching `pred`, once the session is closed. */
async function sessionWith(pred: (e: Ev) => boolean, closed = true): Promise<Ev[]> {
  for (let i = 0; i < 100; i++) {
    const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json'])).stdout) as { id: string }[];
    for (const s of list) {
      const events = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      if (events.some((e) => e.type === 'command' && pred(e)) && (!closed || events.some((e) => e.type === 'session.close'))) return events;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('session not found');
}

const resultOf = (events: Ev[], cmd: Ev): any => events.find((e) => e.type === 'result' && e.data.command === cmd.seq)?.data;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('mysql2 execute: every common parameter type round-trips, each execute is a command with its params and result', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('agent-ps', keys.agent!, { timezone: 'Z', dateStrings: true, supportBigNumbers: true, bigNumberStrings: true });
  const blob = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80]);
  try {
    await c.query(`create table types (id int primary key, i int, bi bigint, neg int, dec_ decimal(12,3), dbl double, s varchar(100),
      n int null, b boolean, dt datetime, d date, tm time, j json, bl blob)`);
    const ins = 'insert into types values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
    const values = [1, 42, '9007199254740993', -17, '12345.678', 3.25, 'Grüße, 世界 🚀', null, true, new Date(Date.UTC(2024, 1, 29, 13, 14, 15)), '2024-02-29', '838:59:58', '{"k": [1, "zwei"]}', blob];
    const [r] = await c.execute(ins, values);
    assert.equal((r as any).affectedRows, 1);
    // reuse: the same statement again (mysql2 prepares once per text and connection)
    await c.execute(ins, [2, 7, '-9223372036854775808', -1, '-0.001', -1e-10, '', null, false, new Date(Date.UTC(1999, 11, 31, 23, 59, 59)), '1000-01-01', '-12:00:00', '[]', Buffer.alloc(0)]);
    const [rows] = await c.execute('select * from types where id = ?', [1]);
    const row = (rows as any[])[0];
    assert.deepEqual(
      { ...row, bl: undefined, j: undefined },
      { id: 1, i: 42, bi: '9007199254740993', neg: -17, dec_: '12345.678', dbl: 3.25, s: 'Grüße, 世界 🚀', n: null, b: 1, dt: '2024-02-29 13:14:15', d: '2024-02-29', tm: '838:59:58', j: undefined, bl: undefined },
    );
    assert.deepEqual(typeof row.j === 'string' ? JSON.parse(row.j) : row.j, { k: [1, 'zwei'] });
    assert.ok(Buffer.from(row.bl).equals(blob));
    const [rows2] = await c.execute('select id, bi, tm from types where id = ?', [2]);
    assert.deepEqual(rows2, [{ id: 2, bi: '-9223372036854775808', tm: '-12:00:00' }]);
    // an execute error: a duplicate key; the connection goes on
    await assert.rejects(c.execute(ins, values), (e: any) => e.errno === 1062);
    // unprepare (COM_STMT_CLOSE, which has no answer), then the same text again
    c.unprepare('select id, bi, tm from types where id = ?');
    const [rows3] = await c.execute('select id, bi, tm from types where id = ?', [2]);
    assert.equal((rows3 as any[]).length, 1);
    const [count] = await c.query('select count(*) as n from types');
    assert.deepEqual(count, [{ n: '2' }]); // bigNumberStrings
  } finally {
    await c.end();
  }

  const events = await sessionWith((e) => e.data.text === 'select * from types where id = ?');
  const execs = events.filter((e) => e.type === 'command' && e.data.protocol === 'COM_STMT_EXECUTE');
  const inserts = execs.filter((e) => e.data.text.startsWith('insert into types'));
  assert.equal(inserts.length, 3, 'one command per execute');
  for (const e of execs) {
    assert.equal(e.data.kind, 'sql');
    assert.equal(e.data.dialect, 'mysql');
    assert.equal(e.data.verdict.action, 'allow');
  }
  const p = inserts[0]!.data.params as unknown[];
  assert.equal(p.length, 14);
  assert.deepEqual(p.slice(0, 8), ['1', '42', '9007199254740993', '-17', '12345.678', '3.25', 'Grüße, 世界 🚀', null]);
  assert.equal(p[8], '1'); // boolean → TINY
  assert.equal(p[9], '2024-02-29 13:14:15');
  assert.deepEqual(p.slice(10), ['2024-02-29', '838:59:58', '{"k": [1, "zwei"]}', '\\x000102feff80']);
  assert.deepEqual([resultOf(events, inserts[0]!).status, resultOf(events, inserts[0]!).rows], ['ok', 1]);
  assert.equal(inserts[1]!.data.params[2], '-9223372036854775808');
  const dup = resultOf(events, inserts[2]!);
  assert.deepEqual([dup.status, dup.error.code, dup.error.detail], ['error', '23000', 'MySQL error 1062']);
  const sel = execs.find((e) => e.data.text === 'select * from types where id = ?')!;
  assert.deepEqual(sel.data.params, ['1']);
  const res = resultOf(events, sel);
  assert.deepEqual([res.status, res.tag, res.rows], ['ok', 'SELECT', 1]);
  assert.deepEqual(res.columns, ['id', 'i', 'bi', 'neg', 'dec_', 'dbl', 's', 'n', 'b', 'dt', 'd', 'tm', 'j', 'bl']);
  assert.deepEqual(res.sample, [['1', '42', '9007199254740993', '-17', '12345.678', '3.25', 'Grüße, 世界 🚀', null, '1', '2024-02-29 13:14:15', '2024-02-29', '838:59:58', '{"k": [1, "zwei"]}', '\\x000102feff80']]);
  // after the close, the re-prepared statement is recorded like the first
  const again = execs.filter((e) => e.data.text === 'select id, bi, tm from types where id = ?');
  assert.equal(again.length, 2);
  assert.deepEqual(resultOf(events, again[1]!).sample, [['2', '-9223372036854775808', '-12:00:00']]);
});

test('a statement blocked at prepare gets the denial and the session goes on; a held DELETE runs once approved', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const c = await connect('agent-ps', keys.agent!);
  try {
    await c.query('create table secret (id int)');
    await c.query('create table held (id int primary key)');
    await c.query('insert into held values (1), (2)');
  } catch (e) {
    await c.end();
    throw e;
  }
  await c.end();
  const c2 = await connect('agent-ps', keys.agent!);
  try {
    await assert.rejects(c2.execute('select * from secret where id = ?', [1]), (e: any) => {
      assert.equal(e.errno, 1227);
      assert.match(e.message, /the secret table is off limits \(rule: no-secrets; hint: /);
      return true;
    });
    const [one] = await c2.execute('select ? + 1 as x', [41]);
    assert.deepEqual(one, [{ x: 42 }]);

    const held = c2.execute('delete from held where id = ?', [2]);
    let id: string | undefined;
    for (let i = 0; i < 100 && !id; i++) {
      const r = await fetch(`http://127.0.0.1:${gw.apiPort}/api/approvals?status=pending`, { headers: { authorization: `Bearer dba-ps.${keys.dba}` } });
      id = ((await r.json()) as any[]).find((x) => String(x.text).includes('delete from held'))?.id;
      if (!id) await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(id, 'a pending review for the DELETE');
    const cli = await gw.cli(['approvals', 'approve', id!, '--comment', 'fine', '--key', `dba-ps.${keys.dba}`]);
    assert.equal(cli.code, 0, cli.stderr);
    const [r] = await held;
    assert.equal((r as any).affectedRows, 1);
    const [left] = await c2.query('select id from held');
    assert.deepEqual(left, [{ id: 1 }]);
  } finally {
    await c2.end();
  }
  const events = await sessionWith((e) => e.data.text === 'select * from secret where id = ?');
  const prep = events.find((e) => e.type === 'command' && e.data.text === 'select * from secret where id = ?')!;
  assert.equal(prep.data.protocol, 'COM_STMT_PREPARE');
  assert.deepEqual([prep.data.verdict.action, prep.data.verdict.rule], ['block', 'no-secrets']);
  assert.equal(resultOf(events, prep).status, 'denied');
  const del = events.find((e) => e.type === 'command' && e.data.text === 'delete from held where id = ?')!;
  assert.deepEqual(del.data.params, ['2']);
  assert.equal(del.data.verdict.action, 'review');
  assert.ok(events.some((e) => e.type === 'review.requested'));
  assert.ok(events.some((e) => e.type === 'review.decided'));
  assert.deepEqual([resultOf(events, del).status, resultOf(events, del).rows], ['ok', 1]);
});

test('LOAD DATA LOCAL INFILE: blocked by default with the denial; allowed by a rule naming the flag, with the bytes recorded', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const csv = Array.from({ length: 1000 }, (_, i) => `${i + 1},name ${i + 1}`).join('\n') + '\n';
  const factory = () => Readable.from([Buffer.from(csv)]);
  const sql = "LOAD DATA LOCAL INFILE 'people.csv' INTO TABLE people FIELDS TERMINATED BY ','";
  const agent = await connect('agent-ps', keys.agent!, { infileStreamFactory: factory });
  try {
    await agent.query('create table people (id int primary key, name varchar(50))');
    await assert.rejects(agent.query(sql), (e: any) => {
      assert.equal(e.errno, 1227);
      assert.match(e.message, /LOAD DATA LOCAL INFILE is blocked unless a policy rule allows it \(rule: default\.load-data-local;/);
      return true;
    });
    const [n] = await agent.query('select count(*) as n from people');
    assert.deepEqual(n, [{ n: 0 }], 'nothing was loaded, the session goes on');
  } finally {
    await agent.end();
  }
  const loader = await connect('loader-ps', keys.loader!, { infileStreamFactory: factory });
  try {
    const [r] = await loader.query(sql);
    assert.equal((r as any).affectedRows, 1000);
    const [n] = await loader.query('select count(*) as n, max(name) as m from people');
    assert.deepEqual(n, [{ n: 1000, m: 'name 999' }]);
    // the session goes on normally after the file
    const [x] = await loader.execute('select ? as v', ['after']);
    assert.deepEqual(x, [{ v: 'after' }]);
  } finally {
    await loader.end();
  }
  const denied = await sessionWith((e) => e.data.text === sql && e.data.verdict.action === 'block');
  const dc = denied.find((e) => e.type === 'command' && e.data.text === sql)!;
  assert.equal(dc.data.verdict.rule, 'default.load-data-local');
  assert.ok(dc.data.classification.flags.includes('load_data_local'));
  const allowed = await sessionWith((e) => e.data.text === sql && e.data.verdict.action === 'allow');
  const ac = allowed.find((e) => e.type === 'command' && e.data.text === sql)!;
  assert.equal(ac.data.verdict.rule, 'loaders-load-files');
  const res = resultOf(allowed, ac);
  assert.deepEqual([res.status, res.rows, res.bytesIn], ['ok', 1000, Buffer.byteLength(csv)]);
  const v = await gw.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('a 20 MB BLOB (packets over 16 MB) goes in and comes back equal, by execute and by query', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no mariadb');
  const big = randomBytes(20 * 1024 * 1024);
  const c = await connect('agent-ps', keys.agent!, { maxPreparedStatements: 4 });
  try {
    await c.query('create table bigblob (id int primary key, b longblob)');
    await c.execute('insert into bigblob values (?, ?)', [1, big]);
    await c.query('insert into bigblob values (2, ?)', [big]);
    const [rows] = await c.execute('select b, sha2(b, 256) as h, length(b) as n from bigblob where id = ?', [1]);
    const r = (rows as any[])[0];
    assert.equal(r.n, big.length);
    assert.equal(r.h, sha256(big));
    assert.equal(sha256(Buffer.from(r.b)), sha256(big));
    const [rows2] = await c.query('select b from bigblob where id = 2');
    assert.equal(sha256(Buffer.from((rows2 as any[])[0].b)), sha256(big));
  } finally {
    await c.end();
  }
  const events = await sessionWith((e) => e.data.text === 'insert into bigblob values (?, ?)');
  const ins = events.find((e) => e.type === 'command' && e.data.text === 'insert into bigblob values (?, ?)')!;
  assert.equal(ins.data.params[0], '1');
  assert.match(ins.data.params[1], /^\\x[0-9a-f]+…\(\+\d+ bytes\)$/, 'the recorded value is bounded');
  assert.ok(JSON.stringify(ins.data).length < 64 * 1024);
  const sel = events.find((e) => e.type === 'command' && String(e.data.text).startsWith('select b, sha2'))!;
  const res = resultOf(events, sel);
  assert.deepEqual([res.status, res.rows], ['ok', 1]);
  assert.equal(res.sample[0][1], sha256(big));
});

// ---------- a raw client, for what mysql2 does not send ----------

interface Raw {
  send(payload: Buffer): void;
  next(): Promise<{ seq: number; payload: Buffer }>;
  /** true when nothing arrives within ms */
  silent(ms: number): Promise<boolean>;
  close(): void;
}

async function rawConnect(user: string, key: string, deprecateEof: boolean): Promise<Raw> {
  const sock0 = net.connect({ host: '127.0.0.1', port: gw!.mysqlPort! });
  await new Promise((r) => sock0.once('connect', r));
  let rd = new PacketReader(sock0, 1 << 24);
  const timeout = () => new Error('timeout waiting for the gateway');
  const hs = P.decodeHandshakeV10((await rd.next(5000, timeout)).payload);
  const caps = (P.CLIENT_PROTOCOL_41 | P.CLIENT_SECURE_CONNECTION | P.CLIENT_PLUGIN_AUTH | P.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | P.CLIENT_CONNECT_WITH_DB |
    P.CLIENT_MULTI_RESULTS | P.CLIENT_PS_MULTI_RESULTS | P.CLIENT_SSL | P.CLIENT_TRANSACTIONS | P.CLIENT_LONG_PASSWORD | (deprecateEof ? P.CLIENT_DEPRECATE_EOF : 0)) >>> 0;
  sock0.write(encodePacket(1, P.encodeSslRequest(caps, 45)));
  rd.detach();
  const sock = tls.connect({ socket: sock0, rejectUnauthorized: false });
  await new Promise((r) => sock.once('secureConnect', r));
  rd = new PacketReader(sock, 1 << 24);
  sock.write(encodePacket(2, P.encodeHandshakeResponse41({ capabilities: caps, charset: 45, user, authResponse: A.scrambleCachingSha2(key, hs.scramble), database: 'maria', authPlugin: 'caching_sha2_password' })));
  await rd.next(5000, timeout); // fast auth success
  const ok = await rd.next(10_000, timeout);
  assert.ok(P.isOk(ok.payload), 'logged in');
  return {
    send: (payload) => sock.write(encodePacket(0, payload)),
    next: () => rd.next(10_000, timeout),
    silent: async (ms) => {
      await new Promise((r) => setTimeout(r, ms));
      return rd.empty;
    },
    close: () => {
      sock.write(encodePacket(0, P.encodeCommand(P.COM_QUIT)));
      sock.destroy();
    },
  };
}

for (const deprecateEof of [false, true]) {
  test(`raw client (DEPRECATE_EOF ${deprecateEof ? 'on' : 'off'}): SEND_LONG_DATA of 3 MB, a cursor with two FETCHes, RESET, CLOSE`, async (t) => {
    if (!gw) return t.skip(skipped ?? 'no mariadb');
    const c = await rawConnect('agent-raw-ps', keys.raw!, deprecateEof);
    const tag = deprecateEof ? 'd' : 'l';
    const data = randomBytes(3 * 1024 * 1024);
    /** reads a text or binary result set (after its column count) up to its end; returns rows and the final status */
    const readResultSet = async (ncols: number, binary: boolean): Promise<{ cols: P.ColumnDefinition[]; rows: (Buffer | null)[][]; status: number }> => {
      const cols: P.ColumnDefinition[] = [];
      for (let i = 0; i < ncols; i++) cols.push(P.decodeColumnDefinition41((await c.next()).payload));
      if (!deprecateEof) {
        const eof = (await c.next()).payload;
        assert.ok(P.isEof(eof));
        if (P.decodeEof(eof).status & P.SERVER_STATUS_CURSOR_EXISTS) return { cols, rows: [], status: P.decodeEof(eof).status };
      }
      return { cols, ...(await readRows(cols, binary)) };
    };
    const readRows = async (cols: { type: number }[], binary: boolean): Promise<{ rows: (Buffer | null)[][]; status: number }> => {
      const rows: (Buffer | null)[][] = [];
      for (;;) {
        const p = (await c.next()).payload;
        assert.ok(!P.isErr(p), P.isErr(p) ? P.decodeErr(p).message : '');
        if (P.isResultsetEnd(p, deprecateEof)) return { rows, status: deprecateEof ? P.decodeOk(p).status : P.decodeEof(p).status };
        rows.push(binary ? P.decodeBinaryRow(p, cols) : P.decodeTextRow(p, cols.length));
      }
    };
    const query = async (sql: string): Promise<(Buffer | null)[][]> => {
      c.send(P.encodeCommand(P.COM_QUERY, sql));
      const first = (await c.next()).payload;
      assert.ok(!P.isErr(first), P.isErr(first) ? P.decodeErr(first).message : '');
      if (P.isOk(first)) return [];
      return (await readResultSet(P.decodeColumnCount(first), false)).rows;
    };
    const prepare = async (sql: string): Promise<P.StmtPrepareOk> => {
      c.send(P.encodeCommand(P.COM_STMT_PREPARE, sql));
      const ok = P.decodeStmtPrepareOk((await c.next()).payload);
      for (const n of [ok.numParams, ok.numColumns]) {
        if (!n) continue;
        for (let i = 0; i < n; i++) await c.next();
        if (!deprecateEof) assert.ok(P.isEof((await c.next()).payload));
      }
      return ok;
    };
    try {
      await query(`create table ld_${tag} (id int primary key, b longblob)`);
      await query(`create table cur_${tag} (id int primary key, s varchar(10))`);
      await query(`insert into cur_${tag} select seq, concat('r', seq) from seq_1_to_10`);

      // SEND_LONG_DATA: 3 MB in four pieces, no answer to any of them, then EXECUTE
      const ins = await prepare(`insert into ld_${tag} (id, b) values (?, ?)`);
      assert.deepEqual([ins.numParams, ins.numColumns], [2, 0]);
      const piece = data.length / 4;
      for (let i = 0; i < 4; i++) {
        const head = Buffer.alloc(7);
        head[0] = P.COM_STMT_SEND_LONG_DATA;
        head.writeUInt32LE(ins.statementId, 1);
        head.writeUInt16LE(1, 5);
        c.send(Buffer.concat([head, data.subarray(i * piece, (i + 1) * piece)]));
      }
      assert.ok(await c.silent(300), 'no answer to SEND_LONG_DATA');
      const int = (n: number) => Buffer.from(Uint32Array.of(n).buffer);
      c.send(P.encodeStmtExecute({ statementId: ins.statementId, newParamsBound: true, params: [{ type: P.MYSQL_TYPE_LONG, unsigned: false, value: int(1) }, { type: P.MYSQL_TYPE_BLOB, unsigned: false, value: null, longData: true }] }));
      const done = (await c.next()).payload;
      assert.ok(P.isOk(done), P.isErr(done) ? P.decodeErr(done).message : 'OK');
      assert.equal(P.decodeOk(done).affectedRows, 1);
      const back = await query(`select sha2(b, 256), length(b) from ld_${tag} where id = 1`);
      assert.deepEqual(back.map((r) => r.map((v) => v!.toString())), [[sha256(data), String(data.length)]]);

      // a cursor: EXECUTE opens it (no rows), two FETCHes of 4 rows, RESET closes it
      const sel = await prepare(`select id, s from cur_${tag} order by id`);
      assert.equal(sel.numColumns, 2);
      const execCursor = async () => {
        c.send(P.encodeStmtExecute({ statementId: sel.statementId, flags: P.CURSOR_TYPE_READ_ONLY, newParamsBound: false, params: [] }));
        const first = (await c.next()).payload;
        assert.equal(P.decodeColumnCount(first), 2);
        const rs = await readResultSet(2, true);
        assert.equal(rs.rows.length, 0, 'a cursor answers with no rows');
        assert.ok(rs.status & P.SERVER_STATUS_CURSOR_EXISTS, 'cursor exists');
        return rs.cols;
      };
      const fetch = async (cols: { type: number }[], n: number) => {
        const b = Buffer.alloc(9);
        b[0] = P.COM_STMT_FETCH;
        b.writeUInt32LE(sel.statementId, 1);
        b.writeUInt32LE(n, 5);
        c.send(b);
        return readRows(cols, true);
      };
      let cols = await execCursor();
      const f1 = await fetch(cols, 4);
      const f2 = await fetch(cols, 4);
      assert.deepEqual([...f1.rows, ...f2.rows].map((r) => r[0]!.readInt32LE(0)), [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.ok(f2.status & P.SERVER_STATUS_CURSOR_EXISTS && !(f2.status & P.SERVER_STATUS_LAST_ROW_SENT));
      const reset = Buffer.alloc(5);
      reset[0] = P.COM_STMT_RESET;
      reset.writeUInt32LE(sel.statementId, 1);
      c.send(reset);
      assert.ok(P.isOk((await c.next()).payload), 'RESET answers OK');
      // again, fetched to the end this time
      cols = await execCursor();
      const all = await fetch(cols, 100);
      assert.equal(all.rows.length, 10);
      assert.equal(all.rows[9]![1]!.toString(), 'r10');
      assert.ok(all.status & P.SERVER_STATUS_LAST_ROW_SENT);

      // CLOSE has no answer; the next command is answered normally
      const close = Buffer.alloc(5);
      close[0] = P.COM_STMT_CLOSE;
      close.writeUInt32LE(sel.statementId, 1);
      c.send(close);
      c.send(P.encodeCommand(P.COM_PING));
      assert.ok(P.isOk((await c.next()).payload), 'PING after CLOSE');
      // the closed statement is unknown to the gateway: judged as unknown (blocked by the policy here)
      c.send(P.encodeStmtExecute({ statementId: sel.statementId, newParamsBound: false, params: [] }));
      const unknown = (await c.next()).payload;
      assert.ok(P.isErr(unknown));
      assert.equal(P.decodeErr(unknown).code, 1227);
      assert.match(P.decodeErr(unknown).message, /rule: unknown-blocked/);
      // COM_RESET_CONNECTION forgets prepared statements too
      const one = await prepare(`select 1 from cur_${tag} where id = ?`);
      c.send(P.encodeCommand(P.COM_RESET_CONNECTION));
      assert.ok(P.isOk((await c.next()).payload));
      c.send(P.encodeStmtExecute({ statementId: one.statementId, newParamsBound: true, params: [{ type: P.MYSQL_TYPE_LONG, unsigned: false, value: int(1) }] }));
      assert.equal(P.decodeErr((await c.next()).payload).code, 1227);
      assert.deepEqual((await query('select 7')).map((r) => r[0]!.toString()), ['7']);
    } finally {
      c.close();
    }

    const events = await sessionWith((e) => e.data.text === `insert into ld_${tag} (id, b) values (?, ?)`);
    const cmds = events.filter((e) => e.type === 'command');
    const ld = cmds.find((e) => e.data.text === `insert into ld_${tag} (id, b) values (?, ?)`)!;
    assert.equal(ld.data.params[0], '1');
    assert.match(ld.data.params[1], new RegExp(`^<long data: ${data.length} bytes, sha256 ${sha256(data)}> \\\\x${data.subarray(0, 8).toString('hex')}`));
    assert.deepEqual([resultOf(events, ld).status, resultOf(events, ld).rows], ['ok', 1]);
    const reset = cmds.find((e) => e.data.protocol === 'COM_RESET_CONNECTION');
    assert.ok(reset, 'COM_RESET_CONNECTION is recorded');
    assert.deepEqual([reset.data.text, resultOf(events, reset).status], ['RESET CONNECTION', 'ok']);
    const cursors = cmds.filter((e) => e.data.text === `select id, s from cur_${tag} order by id`);
    assert.equal(cursors.length, 2, 'each cursor execute is one command; FETCH is not a command');
    assert.equal(cursors[0]!.data.cursor, 'read_only');
    const r1 = resultOf(events, cursors[0]!);
    assert.deepEqual([r1.status, r1.rows, r1.meta.fetches, r1.meta.ended], ['ok', 8, 2, 'cursor closed by COM_STMT_RESET']);
    assert.deepEqual(r1.columns, ['id', 's']);
    assert.deepEqual(r1.sample.slice(0, 2), [['1', 'r1'], ['2', 'r2']]);
    const r2 = resultOf(events, cursors[1]!);
    assert.deepEqual([r2.status, r2.rows, r2.meta.fetches, r2.meta.ended], ['ok', 10, 1, undefined]);
    const unknowns = cmds.filter((e) => String(e.data.text).startsWith('-- COM_STMT_EXECUTE of statement'));
    assert.equal(unknowns.length, 2);
    assert.equal(unknowns[0]!.data.verdict.rule, 'unknown-blocked');
  });
}
