import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMaskConfig, type MaskConfigInput } from '../../src/mask/config.ts';
import { newCounts, type Counts } from '../../src/mask/counts.ts';
import type { Detector } from '../../src/mask/detectors.ts';
import { ERROR_TEXT, Masker } from '../../src/mask/masker.ts';
import { ProtocolError, lenEncIntSize } from '../../src/protocols/mysql/codec.ts';
import * as P from '../../src/protocols/mysql/packets.ts';
import {
  MysqlMaskError,
  columnRef,
  maskBinaryRow,
  maskErrMessage,
  maskTextRow,
  planColumns,
  type MaskColumn,
} from '../../src/protocols/mysql/mysql-masking.ts';

const SECRET = 'gateway-secret-for-tests';
const masker = (cfg: MaskConfigInput = {}) => new Masker(parseMaskConfig(cfg), SECRET);
/** every detector on and redacting, the default column rules: output names what was found */
const all = masker({ detectors: { default: 'redact' } });

const EMAIL = 'alice@example.com';
const AWS_ID = 'AKIAIOSFODNN7EXAMPLE';
const CARD = '4111111111111111';

/** A column as decodeColumnDefinition41 would give it; a string column of `shop.customers` by default. */
function col(name: string, o: Partial<MaskColumn> = {}): MaskColumn {
  return {
    schema: 'shop',
    table: 'customers',
    orgTable: 'customers',
    name,
    orgName: name,
    type: P.MYSQL_TYPE_VAR_STRING,
    charset: P.CHARSET_UTF8MB4_GENERAL_CI,
    flags: 0,
    ...o,
  };
}
const expr = (name: string, o: Partial<MaskColumn> = {}) => col(name, { schema: '', table: '', orgTable: '', orgName: '', ...o });

const buf = (v: string | Buffer | null): Buffer | null => (v === null ? null : typeof v === 'string' ? Buffer.from(v, 'utf8') : v);
const textRow = (...vals: (string | Buffer | null)[]) => P.encodeTextRow(vals.map(buf));
const strs = (vals: (Buffer | null)[]) => vals.map((v) => (v === null ? null : v.toString('utf8')));

/** Masks a text row made of `vals`; returns the decoded values (or 'unchanged') and the counts. */
function maskText(m: Masker, cols: MaskColumn[], vals: (string | Buffer | null)[]): { out: (string | null)[] | 'unchanged'; counts: Counts; raw: Buffer | null } {
  const counts = newCounts();
  const raw = maskTextRow(planColumns(m, cols), textRow(...vals), counts);
  return { out: raw === null ? 'unchanged' : strs(P.decodeTextRow(raw, cols.length)), counts, raw };
}

function throwsMask(fn: () => unknown, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MysqlMaskError, `expected MysqlMaskError, got ${String(e)}`);
    assert.ok(e instanceof ProtocolError, 'a MysqlMaskError is a ProtocolError');
    if (re) assert.match(e.message, re);
    return true;
  });
}

// ---------- column identity ----------

test('columnRef: the origin table and column when the server names them, else the alias', () => {
  assert.deepEqual(columnRef(col('e', { table: 'c', orgName: 'email' })), { schema: 'shop', table: 'customers', name: 'email' });
  assert.deepEqual(columnRef(expr('total')), { name: 'total' });
  // a definition decoded from the wire fits MaskColumn as is
  const wire = P.decodeColumnDefinition41(P.encodeColumnDefinition41({ schema: 'shop', table: 'c', orgTable: 'customers', name: 'e', orgName: 'email', type: 253 }));
  assert.deepEqual(columnRef(wire), { schema: 'shop', table: 'customers', name: 'email' });
});

// ---------- text rows: column rules ----------

test('text rows: column-name rules (default *password*), counted per column', () => {
  const r = maskText(all, [col('id', { type: P.MYSQL_TYPE_LONG }), col('password'), col('note')], ['7', 'hunter2', 'hello']);
  assert.deepEqual(r.out, ['7', '[MASKED:password]', 'hello']);
  assert.deepEqual({ ...r.counts }, { 'column:password': 1 });
});

test('text rows: table-qualified rules see schema.orgTable.orgName, whatever the aliases', () => {
  const m = masker({ columns: [{ match: 'shop.customers.email', strategy: 'hash' }, { match: 'orders.card', strategy: 'partial' }] });
  const aliased = col('e', { table: 'c', orgName: 'email' }); // SELECT c.email AS e FROM customers c
  const r = maskText(m, [aliased, col('card', { table: 'o', orgTable: 'orders' })], [EMAIL, '4111 1111 1111 1111']);
  assert.equal(r.out === 'unchanged' ? null : r.out[0], m.hash(EMAIL));
  assert.equal(r.out === 'unchanged' ? null : r.out[1], '****1111');
  assert.deepEqual({ ...r.counts }, { 'column:email': 1, 'column:card': 1 });

  // another database, another table, or an expression aliased `email`: not that column
  for (const c of [col('email', { schema: 'crm' }), col('email', { orgTable: 'users' }), expr('email')]) {
    const x = maskText(masker({ columns: [{ match: 'shop.customers.email', strategy: 'hash' }], detectors: { default: 'off' } }), [c], ['bob']);
    assert.equal(x.out, 'unchanged', JSON.stringify(c));
  }
  // name rules see the alias only when there is no origin column
  const n = masker({ columns: [{ name: 'secret_*', strategy: 'redact', label: 's' }] });
  assert.deepEqual(maskText(n, [expr('secret_x')], ['v']).out, ['[MASKED:s]']);
  assert.equal(maskText(n, [col('secret_x', { orgName: 'plain' })], ['v']).out, 'unchanged');
  // matching is case-insensitive, as for PostgreSQL
  assert.deepEqual(maskText(m, [col('EMAIL', { schema: 'Shop', orgTable: 'Customers' })], [EMAIL]).out, [m.hash(EMAIL)]);
});

test('text rows: the null strategy yields SQL NULL; NULL values stay NULL and are never counted', () => {
  const m = masker({ columns: [{ name: 'ssn', strategy: null }] });
  const r = maskText(m, [col('ssn'), col('note'), col('ssn')], ['078-05-1120', null, null]);
  assert.deepEqual(r.out, [null, null, null]);
  assert.deepEqual({ ...r.counts }, { 'column:ssn': 1 });
  assert.equal(r.raw!.length, 3); // three 0xfb
});

// ---------- text rows: detectors ----------

test('text rows: detectors in free-text columns (email, AWS key, card, JWT-free text untouched)', () => {
  const m = masker(); // defaults: card partial, ip hash, the rest redact
  const r = maskText(m, [col('a'), col('b'), col('c'), col('d')], [
    `contact ${EMAIL} today`,
    `AWS_ACCESS_KEY_ID=${AWS_ID}`,
    `paid with ${CARD}`,
    'nothing to see here',
  ]);
  assert.deepEqual(r.out, ['contact [MASKED:email] today', 'AWS_ACCESS_KEY_ID=[MASKED:aws]', 'paid with ****1111', 'nothing to see here']);
  assert.deepEqual({ ...r.counts }, { email: 1, aws: 1, card: 1 });
});

test('text rows: a rule beats the detectors; a scan rule lets them through', () => {
  const m = masker({ columns: [{ name: 'note', strategy: 'scan' }, { name: 'note*', strategy: 'redact' }] });
  assert.deepEqual(maskText(m, [col('note'), col('notes')], [EMAIL, EMAIL]).out, ['[MASKED:email]', '[MASKED:notes]']);
});

test('text rows: multi-byte UTF-8 around a masked span comes back byte for byte', () => {
  const v = `Zoë 日本語 🎉 ${EMAIL} ✓ €`;
  const r = maskText(all, [col('note')], [v]);
  assert.deepEqual(r.out, ['Zoë 日本語 🎉 [MASKED:email] ✓ €']);
  // partial keeps whole code points
  const p = masker({ columns: [{ name: 'name', strategy: 'partial', keep: 2 }] });
  assert.deepEqual(maskText(p, [col('name')], ['ÅsaÖÜ🎉']).out, ['****🎉']);
});

test('text rows: values in another charset (latin1, cp1251) keep every unmasked byte', () => {
  const latin1 = Buffer.concat([Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20]), Buffer.from(EMAIL), Buffer.from([0x20, 0xff])]);
  const c = col('note', { charset: 8 }); // latin1_swedish_ci
  const counts = newCounts();
  const out = maskTextRow(planColumns(all, [c]), P.encodeTextRow([latin1]), counts);
  assert.ok(out);
  assert.deepEqual(P.decodeTextRow(out, 1)[0], Buffer.concat([Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20]), Buffer.from('[MASKED:email]'), Buffer.from([0x20, 0xff])]));
  assert.deepEqual({ ...counts }, { email: 1 });
  // a label latin1 cannot carry becomes '?', never a wrong byte
  const m2 = masker({ columns: [{ name: 'x*', strategy: 'redact' }] });
  const out3 = maskTextRow(planColumns(m2, [expr('x€')]), P.encodeTextRow([latin1]), newCounts());
  assert.deepEqual(P.decodeTextRow(out3!, 1)[0], Buffer.from('[MASKED:x?]', 'latin1'));
});

test('text rows: length prefixes change width when masking crosses 251 and 65536 bytes', () => {
  const m = masker({ detectors: { default: 'off', ip: 'hash', email: 'redact' } });
  const ip = '10.1.2.3';
  const grow = m.hash(ip).length - ip.length; // 'h:' + 16 hex: longer than the address
  assert.ok(grow > 0);
  const cases: [string, number, number][] = [
    // [value, prefix width before, after]
    ['a'.repeat(250 - ip.length) + ' ' + ip, 3, 3], // 251 bytes, grows
    ['a'.repeat(249 - ip.length) + ' ' + ip, 1, 3], // 250 bytes → 260
    ['a'.repeat(65534 - ip.length) + ' ' + ip, 3, 4], // 65535 bytes → 65545 (0xfd)
    ['a'.repeat(200) + ' ' + 'x'.repeat(60) + '@example.com', 3, 1], // 273 bytes → 215
    ['a'.repeat(65500) + ' ' + 'y'.repeat(60) + '@example.com', 4, 3], // 65573 bytes → 65515
  ];
  for (const [v, before, after] of cases) {
    const expected = m.maskText(v);
    assert.deepEqual([lenEncIntSize(v.length), lenEncIntSize(expected.length)], [before, after]);
    assert.notEqual(expected, v);
    const row = textRow('x', v, null, 'tail');
    const counts = newCounts();
    const out = maskTextRow(planColumns(m, [expr('a'), expr('b'), expr('c'), expr('d')]), row, counts);
    assert.ok(out, `masked ${v.length}`);
    assert.deepEqual(strs(P.decodeTextRow(out, 4)), ['x', expected, null, 'tail']);
    assert.equal(out.length, row.length - (lenEncIntSize(v.length) + v.length) + lenEncIntSize(expected.length) + expected.length);
    assert.equal(out[2], expected.length < 251 ? expected.length : expected.length < 65536 ? 0xfc : 0xfd, `prefix of ${expected.length}`);
  }
});

test('text rows: a value of 16 MiB (8-byte prefix) masked under it (4-byte prefix)', () => {
  const v = 'b'.repeat(0x1000000 - 30) + ' ' + 'x'.repeat(60) + '@example.com';
  assert.equal(lenEncIntSize(v.length), 9);
  const out = maskTextRow(planColumns(all, [expr('v'), expr('w')]), textRow(v, 'w'), newCounts());
  assert.ok(out);
  assert.equal(out[0], 0xfd);
  const got = P.decodeTextRow(out, 2);
  assert.equal(got[0]!.length, 0x1000000 - 30 + 15);
  assert.equal(got[0]!.subarray(-15).toString(), ' [MASKED:email]');
  assert.equal(got[1]!.toString(), 'w');
});

test('text rows: integers and DECIMAL are scanned but a masked number becomes NULL; dates are not scanned', () => {
  const cols = [
    col('id', { type: P.MYSQL_TYPE_LONGLONG }),
    col('amount', { type: P.MYSQL_TYPE_NEWDECIMAL }),
    col('pan', { type: P.MYSQL_TYPE_LONGLONG, flags: P.UNSIGNED_FLAG }),
    col('at', { type: P.MYSQL_TYPE_DATETIME }),
    col('d', { type: P.MYSQL_TYPE_DOUBLE }),
  ];
  assert.equal(maskText(all, cols, ['42', '12.50', '1234', '2024-01-02 03:04:05', '1.5']).out, 'unchanged');
  const r = maskText(all, cols, ['42', CARD /* DECIMAL(16,0) */, CARD, '2024-01-02 03:04:05', '1.5']);
  assert.deepEqual(r.out, ['42', null, null, '2024-01-02 03:04:05', '1.5']);
  assert.deepEqual({ ...r.counts }, { card: 2 });
  // a rule on a number or a date cannot write its output there: NULL
  const m = masker({ columns: [{ name: 'id', strategy: 'hash' }, { name: 'at', strategy: 'partial' }] });
  const x = maskText(m, cols, ['42', '1', '2', '2024-01-02 03:04:05', '1.5']);
  assert.deepEqual(x.out, [null, '1', '2', null, '1.5']);
  assert.deepEqual({ ...x.counts }, { 'column:id': 1, 'column:at': 1 });
});

test('text rows: ENUM and SET values are never replaced by a non-member: NULL', () => {
  const cols = [
    col('status', { type: P.MYSQL_TYPE_STRING, flags: P.ENUM_FLAG }),
    col('tags', { type: P.MYSQL_TYPE_STRING, flags: P.SET_FLAG }),
    col('token_kind', { type: P.MYSQL_TYPE_STRING, flags: P.ENUM_FLAG }), // default *token* rule
    col('plain', { type: P.MYSQL_TYPE_STRING }), // CHAR(n): may grow
  ];
  const r = maskText(all, cols, ['active', `x,${EMAIL}`, 'bearer', 'ab']);
  assert.deepEqual(r.out, ['active', null, null, 'ab']);
  assert.deepEqual({ ...r.counts }, { email: 1, 'column:token_kind': 1 });
  const fixed = maskText(masker({ columns: [{ name: 'plain', strategy: 'redact' }] }), [cols[3]!], ['ab']);
  assert.deepEqual(fixed.out, ['[MASKED:plain]']);
});

test('text rows: binary columns are scanned when they hold UTF-8 text, else only rules apply', () => {
  const bin = { charset: P.CHARSET_BINARY };
  const cols = [col('a', { ...bin, type: P.MYSQL_TYPE_BLOB, flags: P.BLOB_FLAG | P.BINARY_FLAG }), col('b', { ...bin, type: P.MYSQL_TYPE_VAR_STRING }), col('doc', { ...bin, type: P.MYSQL_TYPE_JSON })];
  const image = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0xff, 0xfe]), Buffer.from(EMAIL)]);
  const r = maskText(all, cols, [image, `mail ${EMAIL}`, `{"k": "${AWS_ID}"}`]);
  assert.ok(r.raw);
  const vals = P.decodeTextRow(r.raw, 3);
  assert.deepEqual(vals[0], image); // opaque bytes: not scanned
  assert.deepEqual(strs(vals.slice(1)), ['mail [MASKED:email]', '{"k": "[MASKED:aws]"}']);
  // a rule replaces opaque bytes too; partial keeps their last bytes exactly
  const m = masker({ columns: [{ name: 'a', strategy: 'partial', keep: 2 }, { name: 'b', strategy: 'hash' }] });
  const blob = Buffer.from([0x00, 0xff, 0x80, 0x81, 0xc3, 0x28, 0xfe, 0xfa, 0xfb]);
  const x = maskText(m, cols, [blob, blob, null]);
  const xv = P.decodeTextRow(x.raw!, 3);
  assert.deepEqual(xv[0], Buffer.concat([Buffer.from('****'), Buffer.from([0xfa, 0xfb])]));
  assert.match(xv[1]!.toString(), /^h:[0-9a-f]{16}$/);
  assert.equal(xv[2], null);
});

test('text rows: nothing to mask returns null without copying, also with nothing planned', () => {
  const cols = [col('id', { type: P.MYSQL_TYPE_LONG }), col('name'), col('at', { type: P.MYSQL_TYPE_DATE }), col('n')];
  const counts = newCounts();
  assert.equal(maskTextRow(planColumns(all, cols), textRow('1', 'Ann', '2024-01-01', null), counts), null);
  assert.deepEqual({ ...counts }, {});
  // no detectors, no rules: nothing is looked at, but the row is still checked
  const none = planColumns(masker({ detectors: { default: 'off' }, defaultColumns: false }), cols);
  assert.equal(none.active, false);
  assert.equal(maskTextRow(none, textRow('1', EMAIL, '2024-01-01', null), counts), null);
  throwsMask(() => maskTextRow(none, textRow('1', EMAIL, '2024-01-01'), counts));
  assert.equal(planColumns(all, cols).active, true);
});

test('text rows: onError closed withholds a value the masker fails on', () => {
  const boom: Detector = {
    name: 'boom',
    maxLength: 10,
    scan: () => {
      throw new Error('detector bug');
    },
  };
  const m = new Masker(parseMaskConfig({ detectors: { default: 'off' } }), SECRET, { detectors: [{ detector: boom }] });
  const counts = newCounts();
  const out = maskTextRow(planColumns(m, [col('a'), col('n', { type: P.MYSQL_TYPE_LONG })]), textRow('anything', '5'), counts);
  assert.deepEqual(strs(P.decodeTextRow(out!, 2)), [ERROR_TEXT, null]);
  assert.equal(counts.error, 2);
});

// ---------- binary rows ----------

const BIN_COLS: MaskColumn[] = [
  col('id', { type: P.MYSQL_TYPE_LONG }),
  col('pan', { type: P.MYSQL_TYPE_LONGLONG }),
  col('score', { type: P.MYSQL_TYPE_DOUBLE }),
  col('created', { type: P.MYSQL_TYPE_DATETIME }),
  col('price', { type: P.MYSQL_TYPE_NEWDECIMAL }),
  col('email'),
  col('avatar', { type: P.MYSQL_TYPE_BLOB, charset: P.CHARSET_BINARY, flags: P.BLOB_FLAG | P.BINARY_FLAG }),
  col('doc', { type: P.MYSQL_TYPE_JSON, charset: P.CHARSET_BINARY }),
  col('gone', { type: P.MYSQL_TYPE_VAR_STRING }),
  col('tiny', { type: P.MYSQL_TYPE_TINY, flags: P.UNSIGNED_FLAG }),
  col('t', { type: P.MYSQL_TYPE_TIME }),
];

function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
}
function i64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(n);
  return b;
}
function f64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(n);
  return b;
}
const DATETIME = Buffer.from([0xe8, 0x07, 1, 2, 3, 4, 5]); // 2024-01-02 03:04:05
const AVATAR = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0xff]);

function binValues(over: Partial<Record<number, Buffer | null>> = {}): (Buffer | null)[] {
  const v: (Buffer | null)[] = [
    i32(-7), i64(1234567890123n), f64(4111111111111111), DATETIME, Buffer.from('19.99'), Buffer.from('Ann'), AVATAR,
    Buffer.from('{"a": 1}'), null, Buffer.from([200]), Buffer.from([0, 1, 0, 0, 0, 2, 3, 4]),
  ];
  for (const [k, x] of Object.entries(over)) v[Number(k)] = x ?? null;
  return v;
}

test('binary rows: mixed types, nothing to mask → null', () => {
  const counts = newCounts();
  assert.equal(maskBinaryRow(planColumns(all, BIN_COLS), P.encodeBinaryRow(binValues(), BIN_COLS), BIN_COLS, counts), null);
  assert.deepEqual({ ...counts }, {});
});

test('binary rows: strings re-encoded, masked numbers and rules on typed values become NULL in the bitmap', () => {
  const m = masker({ columns: [{ name: 'created', strategy: 'hash' }, { name: 'avatar', strategy: 'redact' }] });
  const vals = binValues({
    1: i64(4111111111111111n), // a card number in a BIGINT
    4: Buffer.from(CARD), // and in a DECIMAL
    5: Buffer.from(`Ann <${EMAIL}> ✓`),
    7: Buffer.from(`{"key": "${AWS_ID}", "n": "日本"}`),
  });
  const payload = P.encodeBinaryRow(vals, BIN_COLS);
  const counts = newCounts();
  const out = maskBinaryRow(planColumns(m, BIN_COLS), payload, BIN_COLS, counts);
  assert.ok(out);
  const got = P.decodeBinaryRow(out, BIN_COLS);
  const want = vals.slice();
  want[1] = null;
  want[3] = null;
  want[4] = null;
  want[5] = Buffer.from('Ann <[MASKED:email]> ✓');
  want[6] = Buffer.from('[MASKED:avatar]');
  want[7] = Buffer.from('{"key": "[MASKED:aws]", "n": "日本"}');
  assert.deepEqual(got, want);
  assert.deepEqual(P.encodeBinaryRow(want, BIN_COLS), out); // canonical bytes
  assert.deepEqual({ ...counts }, { card: 2, email: 1, aws: 1, 'column:created': 1, 'column:avatar': 1 });
});

test('binary rows: integers of every width and sign are scanned as their decimal text', () => {
  const custom = masker({ detectors: { default: 'off' }, custom: [{ name: 'neg', pattern: '^-1[0-9]{2}$' }, { name: 'big', pattern: '^18446744073709551615$' }] });
  const cols = [
    col('a', { type: P.MYSQL_TYPE_TINY }), col('b', { type: P.MYSQL_TYPE_SHORT }), col('c', { type: P.MYSQL_TYPE_INT24 }),
    col('d', { type: P.MYSQL_TYPE_LONGLONG, flags: P.UNSIGNED_FLAG }), col('e', { type: P.MYSQL_TYPE_LONGLONG }),
  ];
  const short = Buffer.alloc(2);
  short.writeInt16LE(-123);
  const vals = [Buffer.from([0x85]) /* -123 */, short, i32(-123), Buffer.alloc(8, 0xff), Buffer.alloc(8, 0xff) /* -1 */];
  const counts = newCounts();
  const out = maskBinaryRow(planColumns(custom, cols), P.encodeBinaryRow(vals, cols), cols, counts);
  assert.deepEqual(P.decodeBinaryRow(out!, cols), [null, null, null, null, vals[4]]);
  assert.deepEqual({ ...counts }, { neg: 3, big: 1 });
});

test('binary rows: NULL bitmap across bytes (offset 2), MYSQL_TYPE_NULL columns, the null strategy', () => {
  // 20 columns: the bitmap spans 3 bytes; mask every third column with the null strategy
  const cols = Array.from({ length: 20 }, (_, i) => (i === 4 ? col('k4', { type: P.MYSQL_TYPE_NULL }) : col(`c${i}`)));
  const m = masker({ detectors: { default: 'off' }, columns: [{ name: 'c*', strategy: null }], defaultColumns: false });
  const mask = masker({ detectors: { default: 'off' }, columns: [{ name: 'c1?', strategy: null }], defaultColumns: false });
  const vals = cols.map((_, i) => (i === 4 || i % 5 === 0 ? null : Buffer.from(`v${i}`)));
  const payload = P.encodeBinaryRow(vals, cols);
  const out = maskBinaryRow(planColumns(mask, cols), payload, cols, newCounts());
  const want = vals.map((v, i) => (i >= 10 ? null : v));
  assert.deepEqual(P.decodeBinaryRow(out!, cols), want);
  const all20 = maskBinaryRow(planColumns(m, cols), payload, cols, newCounts());
  assert.deepEqual(all20, P.encodeBinaryRow(cols.map(() => null), cols));
});

test('binary rows: a string crossing the 251-byte prefix boundary', () => {
  const cols = [col('id', { type: P.MYSQL_TYPE_LONG }), col('note'), col('x', { type: P.MYSQL_TYPE_DATE })];
  for (const n of [240, 251, 300, 70000]) {
    const v = 'z'.repeat(n) + ` ${EMAIL}`;
    const vals = [i32(1), Buffer.from(v), Buffer.from([0xe8, 0x07, 1, 2])];
    const out = maskBinaryRow(planColumns(all, cols), P.encodeBinaryRow(vals, cols), cols, newCounts());
    assert.deepEqual(P.decodeBinaryRow(out!, cols), [vals[0], Buffer.from('z'.repeat(n) + ' [MASKED:email]'), vals[2]]);
  }
});

// ---------- ERR packets ----------

test('ERR packets: the message is masked, code and SQLSTATE kept', () => {
  const err = P.encodeErr({ code: 1062, sqlState: '23000', message: `Duplicate entry '${EMAIL}' for key 'users.email'` });
  const counts = newCounts();
  const out = maskErrMessage(all, err, counts);
  assert.deepEqual(P.decodeErr(out!), { code: 1062, sqlState: '23000', message: "Duplicate entry '[MASKED:email]' for key 'users.email'" });
  assert.deepEqual({ ...counts }, { email: 1 });
  // nothing to mask
  assert.equal(maskErrMessage(all, P.encodeErr({ code: 1146, sqlState: '42S02', message: "Table 'shop.x' doesn't exist" })), null);
  // without SQLSTATE marker (early handshake errors)
  const bare = Buffer.concat([Buffer.from([0xff, 0x15, 0x04]), Buffer.from(`Access denied for ${EMAIL}`)]);
  assert.deepEqual(maskErrMessage(all, bare), Buffer.concat([Buffer.from([0xff, 0x15, 0x04]), Buffer.from('Access denied for [MASKED:email]')]));
  // empty message; MariaDB progress report left alone
  assert.equal(maskErrMessage(all, Buffer.from([0xff, 0x15, 0x04])), null);
  assert.equal(maskErrMessage(all, Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 1, 1, 0, 0, 0]), Buffer.from(EMAIL)])), null);
  // non-UTF-8 message bytes come back as they were
  const latin = Buffer.concat([Buffer.from([0xff, 0x26, 0x04, 0x23]), Buffer.from('23000'), Buffer.from([0xe9, 0x20]), Buffer.from(EMAIL)]);
  assert.deepEqual(maskErrMessage(all, latin), Buffer.concat([latin.subarray(0, 9), Buffer.from([0xe9, 0x20]), Buffer.from('[MASKED:email]')]));
});

// ---------- hostile payloads ----------

test('malformed text rows throw MysqlMaskError', () => {
  const plan = planColumns(all, [col('a'), col('b')]);
  const c = newCounts();
  throwsMask(() => maskTextRow(plan, Buffer.alloc(0), c), /ends before column 1/);
  throwsMask(() => maskTextRow(plan, textRow('x'), c), /ends before column 2/);
  throwsMask(() => maskTextRow(plan, textRow('x', 'y', 'z'), c), /trailing/);
  throwsMask(() => maskTextRow(plan, Buffer.from([0x05, 0x61, 0x62]), c), /overruns/);
  throwsMask(() => maskTextRow(plan, Buffer.from([0x01, 0x61, 0xff]), c), /prefix 0xff/);
  throwsMask(() => maskTextRow(plan, Buffer.from([0x01, 0x61, 0xfc, 0x01]), c), /prefix overruns/);
  throwsMask(() => maskTextRow(plan, Buffer.from([0x01, 0x61, 0xfd, 0x00, 0x00, 0x01]), c), /overruns/);
  const huge = Buffer.from([0x00, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  throwsMask(() => maskTextRow(plan, huge, c), /overruns/);
});

test('malformed binary rows and ERR packets throw MysqlMaskError', () => {
  const cols = [col('a', { type: P.MYSQL_TYPE_LONG }), col('b'), col('d', { type: P.MYSQL_TYPE_DATETIME })];
  const plan = planColumns(all, cols);
  const good = P.encodeBinaryRow([i32(1), Buffer.from('x'), DATETIME], cols);
  const c = newCounts();
  throwsMask(() => maskBinaryRow(plan, Buffer.alloc(0), cols, c), /not a binary row/);
  throwsMask(() => maskBinaryRow(plan, Buffer.from([0xfe, 0, 0]), cols, c), /not a binary row/);
  throwsMask(() => maskBinaryRow(plan, Buffer.from([0x00]), cols, c), /bitmap/);
  throwsMask(() => maskBinaryRow(plan, good.subarray(0, good.length - 1), cols, c), /overruns/);
  throwsMask(() => maskBinaryRow(plan, Buffer.concat([good, Buffer.from([0])]), cols, c), /trailing/);
  throwsMask(() => maskBinaryRow(plan, good, cols.slice(0, 2), c), /columns/);
  const badDate = Buffer.from(good);
  badDate[good.length - DATETIME.length - 1] = 5;
  throwsMask(() => maskBinaryRow(plan, badDate, cols, c), /temporal value length 5/);
  const nullMarker = Buffer.from(good);
  nullMarker[2 + 4] = 0xfb;
  throwsMask(() => maskBinaryRow(plan, nullMarker, cols, c), /NULL marker/);
  const odd = [col('x', { type: P.MYSQL_TYPE_NEWDATE })];
  throwsMask(() => maskBinaryRow(planColumns(all, odd), Buffer.from([0, 0, 1]), odd, c), /unsupported binary type 14/);
  throwsMask(() => maskErrMessage(all, Buffer.from([0xff, 0x01])), /not an ERR/);
  throwsMask(() => maskErrMessage(all, Buffer.from([0x00, 0x01, 0x02])), /not an ERR/);
  throwsMask(() => maskErrMessage(all, Buffer.from([0xff, 0x01, 0x02, 0x23, 0x34])), /SQLSTATE/);
});

test('fuzz: mutated and truncated rows either mask or throw MysqlMaskError, nothing else', () => {
  let x = 12345;
  const rnd = (n: number) => {
    x = (x * 1103515245 + 12345) >>> 0;
    return (x >>> 8) % n;
  };
  const textCols = [col('a'), col('n', { type: P.MYSQL_TYPE_LONG }), col('b', { type: P.MYSQL_TYPE_BLOB, charset: 63 }), col('password')];
  const tplan = planColumns(all, textCols);
  const tbase = textRow(`x ${EMAIL}`, '42', Buffer.from([1, 2, 3]), 'pw');
  const bplan = planColumns(all, BIN_COLS);
  const bbase = P.encodeBinaryRow(binValues({ 5: Buffer.from(EMAIL) }), BIN_COLS);
  for (let k = 0; k < 3000; k++) {
    for (const [base, run] of [
      [tbase, (p: Buffer) => maskTextRow(tplan, p, newCounts())],
      [bbase, (p: Buffer) => maskBinaryRow(bplan, p, BIN_COLS, newCounts())],
      [P.encodeErr({ code: 1062, sqlState: '23000', message: EMAIL }), (p: Buffer) => maskErrMessage(all, p)],
    ] as [Buffer, (p: Buffer) => unknown][]) {
      let p = Buffer.from(base);
      const op = rnd(3);
      if (op === 0) p[rnd(p.length)] = rnd(256);
      else if (op === 1) p = p.subarray(0, rnd(p.length + 1));
      else p = Buffer.concat([p, Buffer.from([rnd(256)])]);
      try {
        run(p);
      } catch (e) {
        assert.ok(e instanceof MysqlMaskError, `${String(e)} on ${p.toString('hex')}`);
      }
    }
  }
});
