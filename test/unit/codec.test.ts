import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FrameScanner,
  ProtocolError,
  decodeBind,
  decodeDataRow,
  decodeFields,
  decodeParse,
  decodeStartupPacket,
  encodeStartup,
  errorResponse,
  frame,
  tagRows,
} from '../../src/protocols/postgres/codec.ts';

function collect(maxLength = 1 << 20, want: (t: number, len: number) => boolean = () => true) {
  const frames: [string, Buffer][] = [];
  const bytes: Buffer[] = [];
  const skipped: [string, number][] = [];
  const s = new FrameScanner(
    {
      want,
      onFrame: (t, f) => frames.push([String.fromCharCode(t), Buffer.from(f)]),
      onBytes: (b) => bytes.push(Buffer.from(b)),
      onSkipped: (t, n) => skipped.push([String.fromCharCode(t), n]),
    },
    maxLength,
  );
  return { s, frames, bytes, skipped };
}

test('scanner: frames survive any split into chunks, byte by byte included', () => {
  const msgs = [frame('Q', Buffer.from('select 1\0')), frame('S'), frame('D', Buffer.alloc(300, 7)), frame('X')];
  const all = Buffer.concat(msgs);
  for (const size of [1, 2, 3, 5, 7, 64, all.length]) {
    const { s, frames } = collect();
    for (let i = 0; i < all.length; i += size) s.push(all.subarray(i, i + size));
    assert.deepEqual(frames.map((f) => f[1]), msgs, `chunk size ${size}`);
    assert.ok(s.idle);
  }
});

test('scanner: unwanted messages stream through without being assembled', () => {
  const big = frame('d', Buffer.alloc(100_000, 1));
  const { s, frames, bytes, skipped } = collect(1 << 20, (t) => t !== 0x64);
  for (let i = 0; i < big.length; i += 4096) s.push(big.subarray(i, i + 4096));
  s.push(frame('c'));
  assert.equal(Buffer.concat(bytes).length, big.length);
  assert.deepEqual(skipped, [['d', 100_000]]);
  assert.deepEqual(frames.map((f) => f[0]), ['c']);
});

test('scanner: hostile lengths are protocol errors, never allocations', () => {
  for (const len of [0, 3, -1, 2 ** 31 - 1, 0x7fffff00]) {
    const { s } = collect(1 << 20);
    const b = Buffer.alloc(5);
    b[0] = 0x51;
    b.writeInt32BE(len | 0, 1);
    assert.throws(() => s.push(b), ProtocolError, `length ${len}`);
  }
});

test('startup packets: params, limits, and special requests', () => {
  const p = decodeStartupPacket(encodeStartup({ user: 'alice', database: 'orders', application_name: 'psql' }));
  assert.equal(p.kind, 'startup');
  assert.equal(p.kind === 'startup' && p.params.get('database'), 'orders');
  const many: Record<string, string> = {};
  for (let i = 0; i < 10_000; i++) many[`k${i}`] = 'v';
  assert.throws(() => decodeStartupPacket(encodeStartup(many)), /too many startup parameters/);
  const v2 = Buffer.alloc(8);
  v2.writeInt32BE(8);
  v2.writeInt32BE(2 << 16, 4);
  assert.throws(() => decodeStartupPacket(v2), /unsupported frontend protocol 2\.0/);
  const ssl = Buffer.alloc(8);
  ssl.writeInt32BE(8);
  ssl.writeInt32BE(80877103, 4);
  assert.deepEqual(decodeStartupPacket(ssl), { kind: 'ssl' });
  const unterminated = encodeStartup({ user: 'x' }).subarray(0, -1);
  unterminated.writeInt32BE(unterminated.length);
  assert.throws(() => decodeStartupPacket(unterminated), ProtocolError);
});

test('Parse, Bind and DataRow decode; truncated bodies are protocol errors', () => {
  const parse = frame('P', Buffer.concat([Buffer.from('s1\0select $1\0'), Buffer.from([0, 1, 0, 0, 0, 23])]));
  assert.deepEqual(decodeParse(parse), { name: 's1', text: 'select $1', paramTypes: [23] });
  const bindBody = Buffer.concat([Buffer.from('\0s1\0'), Buffer.from([0, 0, 0, 2, 0, 0, 0, 2]), Buffer.from('42'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0])]);
  const b = decodeBind(frame('B', bindBody));
  assert.equal(b.statement, 's1');
  assert.deepEqual(b.params.map((x) => x?.toString() ?? null), ['42', null]);
  assert.throws(() => decodeBind(frame('B', bindBody.subarray(0, 12))), ProtocolError);
  const lying = Buffer.concat([Buffer.from('\0s1\0'), Buffer.from([0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff])]);
  assert.throws(() => decodeBind(frame('B', lying)), ProtocolError);
  const row = frame('D', Buffer.from([0, 2, 0, 0, 0, 1, 0x61, 0xff, 0xff, 0xff, 0xff]));
  assert.deepEqual(decodeDataRow(row).map((x) => x?.toString() ?? null), ['a', null]);
});

test('ErrorResponse round-trips; tags yield row counts', () => {
  const f = decodeFields(errorResponse({ severity: 'ERROR', code: '42501', message: 'blocked', detail: 'rule x', hint: 'ask' }));
  assert.deepEqual([f.severity, f.code, f.message, f.detail, f.hint], ['ERROR', '42501', 'blocked', 'rule x', 'ask']);
  assert.equal(tagRows('INSERT 0 5'), 5);
  assert.equal(tagRows('SELECT 12'), 12);
  assert.equal(tagRows('BEGIN'), null);
});
