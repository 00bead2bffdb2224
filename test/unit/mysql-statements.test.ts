// Prepared-statement bookkeeping (bounds, long data, cursors) and the response tracker's
// handling of LOCAL INFILE requests and cursors, on synthetic packets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { encodePacket } from '../../src/protocols/mysql/codec.ts';
import * as P from '../../src/protocols/mysql/packets.ts';
import { StatementTable, renderExecuteParams, LAST_PREPARED_ID } from '../../src/protocols/mysql/statements.ts';
import { ResponseTracker } from '../../src/protocols/mysql/response.ts';
import { unknownClassification } from '../../src/guard/classification.ts';
import type { Execution, ResultRecord } from '../../src/session/session.ts';

const cls = unknownClassification('test');
const stmt = (id: number, text = `select ${id}`, numParams = 0) => ({ id, text, numParams, numColumns: 0, columns: [], classification: cls });

/** Just enough of an Execution for the tracker: it records what finish() got. */
function fakeExec(flags: string[] = []): Execution & { results: ResultRecord[] } {
  const results: ResultRecord[] = [];
  return { results, finish: (r: ResultRecord) => void results.push(r), verdict: { action: 'allow', rule: 'r', classification: { ...cls, flags } } } as unknown as Execution & { results: ResultRecord[] };
}

test('the table is bounded by count and by text bytes, oldest first; -1 is the statement prepared last', () => {
  const t = new StatementTable({ maxStatements: 3, maxTextBytes: 100, prefixBytes: 8, maxLongDataParams: 10 });
  for (let i = 1; i <= 4; i++) t.add(stmt(i));
  assert.equal(t.size, 3);
  assert.equal(t.get(1), undefined);
  assert.equal(t.get(LAST_PREPARED_ID)!.id, 4);
  t.add(stmt(5, 'x'.repeat(90)));
  assert.deepEqual([t.get(2), t.get(3)], [undefined, undefined], 'evicted for bytes');
  assert.ok(t.get(4) && t.get(5));
  t.close(5);
  assert.equal(t.resolveId(LAST_PREPARED_ID), LAST_PREPARED_ID, 'no last statement after it is closed');
  t.clear('reset');
  assert.equal(t.size, 0);
});

test('long data: counted, hashed, a bounded prefix; rendered in place of the parameter', () => {
  const t = new StatementTable({ maxStatements: 10, maxTextBytes: 1000, prefixBytes: 4, maxLongDataParams: 2 });
  const st = t.add(stmt(1, 'insert into t values (?, ?)', 2));
  t.addLongData(st, 1, Buffer.from([1, 2, 3]));
  t.addLongData(st, 1, Buffer.from([4, 5, 6]));
  t.addLongData(st, 7, Buffer.from('ignored: no such parameter'));
  assert.deepEqual([...st.longData.keys()], [1]);
  const x = P.decodeStmtExecute(
    P.encodeStmtExecute({ statementId: 1, newParamsBound: true, params: [{ type: P.MYSQL_TYPE_LONG, unsigned: false, value: Buffer.from([42, 0, 0, 0]) }, { type: P.MYSQL_TYPE_BLOB, unsigned: false, value: null, longData: true }] }),
    2,
    undefined,
    { longData: new Set(st.longData.keys()) },
  );
  const h = createHash('sha256').update(Buffer.from([1, 2, 3, 4, 5, 6])).digest('hex');
  assert.deepEqual(renderExecuteParams(st, x, 100, 100), ['42', `<long data: 6 bytes, sha256 ${h}> \\x01020304…`]);
  assert.deepEqual(renderExecuteParams(st, x, 100, 1), ['42', '… 1 more']);
  t.reset(st);
  assert.equal(st.longData.size, 0);
  // bounded over the session: a third parameter with long data is refused
  const st2 = t.add(stmt(2, 'insert into t values (?, ?, ?)', 3));
  assert.ok(t.addLongData(st2, 0, Buffer.from('a')) && t.addLongData(st2, 1, Buffer.from('b')));
  assert.equal(t.addLongData(st2, 2, Buffer.from('c')), false);
  assert.ok(t.addLongData(st2, 1, Buffer.from('more for a parameter already counted')));
  t.close(2);
  assert.ok(t.addLongData(st, 0, Buffer.from('room again after the close')));
});

const opts = { sampleRows: 10, maxValueBytes: 100, deprecateEof: false, capabilities: 0 };

test('a file request for a statement not allowed to load one: no file is sent, the client gets an ERR in its place', () => {
  const toServer: Buffer[] = [];
  let done = 0;
  const tr = new ResponseTracker(opts, new StatementTable(), { done: () => void done++, status: () => {}, mayLoadLocal: () => false, toServer: (b) => void toServer.push(b) });
  const exec = fakeExec();
  tr.begin({ kind: 'query', execs: [exec] });
  assert.ok(tr.hold());
  assert.equal(tr.message(1, Buffer.from('\xfb/etc/passwd', 'latin1')), 'drop');
  assert.deepEqual(toServer, [encodePacket(2, Buffer.alloc(0))], 'an empty packet: no file');
  assert.equal(exec.results[0]!.status, 'denied');
  assert.match(exec.results[0]!.error!.message!, /client file "\/etc\/passwd".*none was sent/);
  const out = tr.message(3, P.encodeOk({ status: 2 }));
  assert.ok(Buffer.isBuffer(out));
  const [seq, payload] = [(out as Buffer)[3], (out as Buffer).subarray(4)];
  assert.equal(seq, 1, 'the ERR takes the place of the request');
  assert.equal(P.decodeErr(payload).code, 1227);
  assert.equal(done, 1);
  assert.equal(tr.busy, false);
});

test('an allowed file request passes; the file is counted and the OK records bytesIn', () => {
  const tr = new ResponseTracker(opts, new StatementTable(), { done: () => {}, status: () => {}, mayLoadLocal: (e) => e?.verdict.classification?.flags.includes('load_data_local') ?? false, toServer: () => assert.fail('nothing from the gateway') });
  const exec = fakeExec(['load_data_local']);
  tr.begin({ kind: 'query', execs: [exec] });
  assert.equal(tr.message(1, Buffer.from('\xfbdata.csv', 'latin1')), 'pass');
  assert.ok(tr.awaitingFile);
  tr.fileData(1000);
  tr.fileData(234);
  tr.fileData(0);
  assert.ok(!tr.awaitingFile);
  assert.equal(tr.message(5, P.encodeOk({ affectedRows: 10, status: 2 })), 'pass');
  assert.deepEqual([exec.results[0]!.status, exec.results[0]!.rows, exec.results[0]!.bytesIn], ['ok', 10, 1234]);
});

test('a cursor: the execute is recorded when the fetches reach the last row, with every fetched row counted', () => {
  const table = new StatementTable();
  const st = table.add({ ...stmt(9, 'select id from t'), numColumns: 1 });
  const tr = new ResponseTracker(opts, table, { done: () => {}, status: () => {}, mayLoadLocal: () => false, toServer: () => {} });
  const exec = fakeExec();
  tr.begin({ kind: 'execute', exec, statement: st });
  tr.message(1, P.encodeColumnCount(1));
  tr.message(2, P.encodeColumnDefinition41({ name: 'id', type: P.MYSQL_TYPE_LONG, schema: 's', table: 't', orgTable: 't', orgName: 'id' }));
  tr.message(3, P.encodeEof(2 | P.SERVER_STATUS_CURSOR_EXISTS));
  assert.equal(tr.busy, false);
  assert.equal(exec.results.length, 0, 'not yet: the rows come with FETCH');
  assert.deepEqual(st.cursor!.columns.map((c) => [c.name, c.orgTable]), [['id', 't']]);
  const row = (n: number) => P.encodeBinaryRow([Buffer.from(Uint32Array.of(n).buffer)], [{ type: P.MYSQL_TYPE_LONG }]);
  for (const [rows, status] of [[[1, 2], P.SERVER_STATUS_CURSOR_EXISTS], [[3], P.SERVER_STATUS_LAST_ROW_SENT]] as const) {
    tr.begin({ kind: 'fetch', statement: st });
    let seq = 1;
    for (const n of rows) tr.message(seq++, row(n));
    tr.message(seq, P.encodeEof(2 | status));
    assert.equal(tr.busy, false);
  }
  assert.equal(exec.results.length, 1);
  const r = exec.results[0]!;
  assert.deepEqual([r.status, r.rows, r.sample, r.meta], ['ok', 3, [['1'], ['2'], ['3']], { cursor: true, fetches: 2 }]);
  assert.equal(st.cursor, null);
});
