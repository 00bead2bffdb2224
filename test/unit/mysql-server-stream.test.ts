// The target → client framer: bytes pass unchanged however the socket cuts them; held messages
// can be dropped or replaced; streamed ones leave before they are whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodePacket, MAX_PACKET_PAYLOAD } from '../../src/protocols/mysql/codec.ts';
import { ServerStream, type Disposition } from '../../src/protocols/mysql/server-stream.ts';

function feed(stream: ServerStream, bytes: Buffer, cuts: number[]): Buffer {
  const out: Buffer[] = [];
  let off = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(...stream.push(bytes.subarray(off, c)));
    off = c;
  }
  return Buffer.concat(out);
}

test('unchanged bytes come out identical, for any chunking, with messages whole for the reader', () => {
  const msgs = [Buffer.from([0, 1, 2]), randomBytes(70_000), Buffer.alloc(0), randomBytes(MAX_PACKET_PAYLOAD + 10), Buffer.from('x')];
  const wire = Buffer.concat(msgs.map((m, i) => encodePacket(i, m)));
  for (const hold of [false, true]) {
    for (let trial = 0; trial < 20; trial++) {
      const seen: Buffer[] = [];
      const s = new ServerStream({ hold: () => hold, message: (_seq, p) => (seen.push(Buffer.from(p)), 'pass') }, 1 << 26);
      const cuts = [...new Set(Array.from({ length: 1 + (trial % 7) }, () => Math.floor(Math.random() * wire.length)))].sort((a, b) => a - b);
      if (trial === 0) cuts.splice(0, cuts.length, 1, 2, 3, 5, 6); // headers cut byte by byte
      assert.ok(feed(s, wire, cuts).equals(wire));
      assert.deepEqual(seen.map((b) => b.length), msgs.map((m) => m.length));
      assert.ok(seen[3]!.equals(msgs[3]!));
      assert.ok(s.idle);
    }
  }
});

test('an unchanged chunk leaves as one write', () => {
  const wire = Buffer.concat([encodePacket(1, Buffer.from('a')), encodePacket(2, Buffer.from('bc')), encodePacket(3, Buffer.from('def'))]);
  const s = new ServerStream({ hold: () => true, message: () => 'pass' }, 1 << 20);
  const out = s.push(wire);
  assert.equal(out.length, 1);
  assert.ok(out[0]!.equals(wire));
});

test('held messages can be dropped or replaced; streamed ones leave before they are whole', () => {
  const decide: Disposition[] = ['pass', 'drop', Buffer.from('REPLACED'), 'pass'];
  let i = 0;
  const s = new ServerStream({ hold: () => i !== 3, message: () => decide[i++]! }, 1 << 20);
  const a = encodePacket(1, Buffer.from('keep'));
  const b = encodePacket(2, Buffer.from('drop me'));
  const c = encodePacket(3, Buffer.from('swap me'));
  const d = encodePacket(4, Buffer.alloc(1000, 7));
  const out1 = Buffer.concat(s.push(Buffer.concat([a, b, c, d.subarray(0, 500)])));
  // the streamed message's first 500 bytes are out already
  assert.ok(out1.equals(Buffer.concat([a, Buffer.from('REPLACED'), d.subarray(0, 500)])));
  const out2 = Buffer.concat(s.push(d.subarray(500)));
  assert.ok(out2.equals(d.subarray(500)));
});

test('a held message split across chunks leaves only when whole', () => {
  const s = new ServerStream({ hold: () => true, message: () => 'pass' }, 1 << 20);
  const m = encodePacket(1, Buffer.alloc(100, 1));
  assert.equal(s.push(m.subarray(0, 2)).length, 0);
  assert.equal(s.push(m.subarray(2, 50)).length, 0);
  assert.ok(Buffer.concat(s.push(m.subarray(50))).equals(m));
});

test('a message over the bound is refused before it is buffered', () => {
  const s = new ServerStream({ hold: () => true, message: () => 'pass' }, 1000);
  assert.throws(() => s.push(encodePacket(0, Buffer.alloc(1001))), /exceeds the 1000-byte limit/);
  assert.throws(() => s.push(Buffer.alloc(1)), /exceeds/); // stays failed
});
