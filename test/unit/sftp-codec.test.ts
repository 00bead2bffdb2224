import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  decodeRequest,
  decodeResponse,
  describeAttrs,
  encodeStatus,
  FrameReader,
  FX,
  FXP,
  MAX_PACKET_LENGTH,
  opensForWrite,
  PFLAG,
  SftpCodecError,
} from '../../src/protocols/ssh/sftp-codec.ts';
import { describeRequest, quotePath } from '../../src/protocols/ssh/sftp.ts';

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
const str = (s: string | Buffer) => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
};
const packet = (type: number, ...fields: Buffer[]) => {
  const body = Buffer.concat([Buffer.from([type]), ...fields]);
  return Buffer.concat([u32(body.length), body]);
};

test('FrameReader: packets split at every byte, and several in one chunk, come out whole', () => {
  const a = packet(FXP.INIT, u32(3));
  const b = packet(FXP.REMOVE, u32(1), str('/tmp/x'));
  const c = packet(FXP.WRITE, u32(2), str('h'), u64(0), str(Buffer.alloc(70_000, 7)));
  const all = Buffer.concat([a, b, c]);
  for (const step of [1, 3, 7, 4096, all.length]) {
    const r = new FrameReader();
    const out: Buffer[] = [];
    for (let i = 0; i < all.length; i += step) out.push(...r.push(all.subarray(i, i + step)));
    assert.deepEqual(out, [a, b, c], `step ${step}`);
    assert.equal(r.buffered, 0);
  }
});

test('FrameReader: a length past the limit, or zero, is a typed error, and stays one', () => {
  const r = new FrameReader();
  assert.throws(() => r.push(Buffer.from([0xff, 0xff, 0xff, 0xff])), (e: unknown) => e instanceof SftpCodecError && /exceeds the limit/.test(e.message));
  assert.throws(() => r.push(packet(FXP.INIT, u32(3))), SftpCodecError);
  assert.throws(() => new FrameReader().push(u32(0)), /empty SFTP packet/);
  // The limit itself is allowed, split or not.
  const max = Buffer.concat([u32(MAX_PACKET_LENGTH), Buffer.alloc(MAX_PACKET_LENGTH)]);
  assert.equal(new FrameReader().push(max).length, 1);
  const split = new FrameReader();
  assert.equal(split.push(max.subarray(0, 2)).length, 0);
  assert.equal(split.push(max.subarray(2, 1000)).length, 0);
  assert.equal(split.push(max.subarray(1000)).length, 1);
  assert.throws(() => new FrameReader().push(u32(MAX_PACKET_LENGTH + 1)), SftpCodecError);
});

test('decodeRequest: open, write, read, rename, setstat, symlink, extensions', () => {
  const attrs = Buffer.concat([u32(0x4 | 0x8), u32(0o100644), u32(1), u32(2)]);
  const open = decodeRequest(packet(FXP.OPEN, u32(5), str('/a b'), u32(PFLAG.WRITE | PFLAG.CREAT | PFLAG.TRUNC), attrs));
  assert.deepEqual(open, { type: 'open', id: 5, path: '/a b', pflags: 0x1a, attrs: { permissions: 0o100644, atime: 1, mtime: 2 } });
  assert.equal(describeAttrs((open as { attrs: object }).attrs), 'mode=0644 atime=1 mtime=2');
  assert.equal(opensForWrite(PFLAG.READ), false);
  assert.equal(opensForWrite(PFLAG.READ | PFLAG.APPEND), true);
  const w = decodeRequest(packet(FXP.WRITE, u32(6), str('hh'), u64(1 << 20), str(Buffer.alloc(32768))));
  assert.deepEqual({ ...w, handle: undefined }, { type: 'write', id: 6, handle: undefined, length: 32768 });
  const rd = decodeRequest(packet(FXP.READ, u32(7), str('hh'), u64(0), u32(65536)));
  assert.equal((rd as { length: number }).length, 65536);
  assert.deepEqual(decodeRequest(packet(FXP.RENAME, u32(8), str('/x'), str('/y'))), { type: 'rename', id: 8, from: '/x', to: '/y' });
  assert.deepEqual(decodeRequest(packet(FXP.SYMLINK, u32(9), str('target'), str('/link'))), { type: 'symlink', id: 9, target: 'target', link: '/link' });
  const ss = decodeRequest(packet(FXP.SETSTAT, u32(10), str('/p'), Buffer.concat([u32(0x1 | 0x2 | 0x80000000), u64(10), u32(0), u32(0), u32(1), str('k'), str('v')])));
  assert.deepEqual(ss, { type: 'setstat', id: 10, path: '/p', attrs: { size: 10n, uid: 0, gid: 0, extended: 1 } });
  const pr = decodeRequest(packet(FXP.EXTENDED, u32(11), str('posix-rename@openssh.com'), str('/a'), str('/b')));
  assert.deepEqual(pr, { type: 'extended', id: 11, name: 'posix-rename@openssh.com', ext: { kind: 'posix-rename', from: '/a', to: '/b' } });
  const other = decodeRequest(packet(FXP.EXTENDED, u32(12), str('evil@example.com'), str('x')));
  assert.deepEqual(other, { type: 'extended', id: 12, name: 'evil@example.com', ext: { kind: 'other' } });
  // Trailing bytes are tolerated, as OpenSSH's sftp-server does.
  assert.equal(decodeRequest(packet(FXP.REMOVE, u32(13), str('/r'), Buffer.from('junk'))).type, 'remove');
});

test('decodeRequest: truncated fields, oversized handles, bad attrs and unknown types are typed errors carrying the id', () => {
  const cases: [Buffer, RegExp, number | undefined][] = [
    [packet(FXP.OPEN, u32(1), u32(1000), Buffer.from('/etc')), /truncated SFTP packet: path/, 1],
    [packet(FXP.OPEN, u32(2), str('/p')), /pflags/, 2],
    [packet(FXP.CLOSE, u32(3), str(Buffer.alloc(300))), /handle is 300 bytes/, 3],
    [packet(FXP.SETSTAT, u32(4), str('/p'), u32(0x80000000), u32(0xffffffff)), /extended count/, 4],
    [packet(99, u32(5)), /unknown SFTP request type 99/, 5],
    [packet(FXP.REMOVE, Buffer.from([0, 0])), /request id/, undefined],
    [u32(0), /type/, undefined],
  ];
  for (const [p, re, id] of cases) {
    assert.throws(
      () => decodeRequest(p),
      (e: unknown) => e instanceof SftpCodecError && re.test(e.message) && e.id === id,
      re.source,
    );
  }
});

test('decodeResponse: version with extensions, status, handle, data, name', () => {
  const v = decodeResponse(packet(FXP.VERSION, u32(3), str('posix-rename@openssh.com'), str('1'), str('limits@openssh.com'), str('1')));
  assert.deepEqual(v, { type: 'version', version: 3, extensions: ['posix-rename@openssh.com', 'limits@openssh.com'] });
  assert.deepEqual(decodeResponse(encodeStatus(7, FX.PERMISSION_DENIED, 'no')), { type: 'status', id: 7, code: 3, message: 'no' });
  assert.deepEqual(decodeResponse(packet(FXP.STATUS, u32(8), u32(0))), { type: 'status', id: 8, code: 0, message: '' });
  assert.deepEqual(decodeResponse(packet(FXP.HANDLE, u32(9), str('h1'))), { type: 'handle', id: 9, handle: Buffer.from('h1') });
  assert.deepEqual(decodeResponse(packet(FXP.DATA, u32(10), str(Buffer.alloc(500)))), { type: 'data', id: 10, length: 500 });
  assert.deepEqual(decodeResponse(packet(FXP.NAME, u32(11), u32(3))), { type: 'name', id: 11, count: 3 });
  assert.throws(() => decodeResponse(packet(FXP.DATA, u32(12), u32(10))), SftpCodecError);
  assert.throws(() => decodeResponse(packet(42, u32(13))), /unknown SFTP response type/);
});

test('fuzz: random and mutated packets only ever raise SftpCodecError', () => {
  const seeds = [
    packet(FXP.OPEN, u32(1), str('/x'), u32(PFLAG.READ), u32(0xffffffff), u64(1), u32(1), u32(2), u32(3), u32(4), u32(5), u32(1), str('a'), str('b')),
    packet(FXP.EXTENDED, u32(2), str('copy-data'), str('h'), u64(0), u64(0), str('w'), u64(0)),
    packet(FXP.WRITE, u32(3), str('h'), u64(0), str('data')),
  ];
  for (let i = 0; i < 20_000; i++) {
    let p: Buffer;
    if (i % 2) {
      p = Buffer.from(seeds[i % seeds.length]!);
      for (let k = 0; k < 3; k++) p[4 + ((Math.random() * (p.length - 4)) | 0)] = (Math.random() * 256) | 0;
    } else p = Buffer.concat([u32(64), randomBytes(64)]);
    for (const decode of [decodeRequest, decodeResponse]) {
      try {
        decode(p);
      } catch (e) {
        assert.ok(e instanceof SftpCodecError, `${(e as Error).name}: ${(e as Error).message}`);
      }
    }
  }
  const r = new FrameReader();
  for (let i = 0; i < 200; i++) {
    try {
      r.push(randomBytes(1000));
    } catch (e) {
      assert.ok(e instanceof SftpCodecError);
    }
  }
});

test('describeRequest: classes, types, paths and text for the guard and the record', () => {
  const none = () => undefined;
  const open = describeRequest({ type: 'open', id: 1, path: '/srv/a', pflags: PFLAG.WRITE | PFLAG.CREAT | PFLAG.TRUNC, attrs: {} }, none)!;
  assert.equal(open.text, 'open /srv/a (write,create,truncate)');
  assert.equal(open.classification.class, 'write');
  assert.deepEqual(open.classification.types, ['sftp.write']);
  assert.deepEqual(open.classification.writes, ['/srv/a']);
  assert.deepEqual(open.classification.flags, ['create', 'truncate']);
  const read = describeRequest({ type: 'open', id: 1, path: '/srv/a', pflags: PFLAG.READ, attrs: {} }, none)!;
  assert.deepEqual([read.classification.class, read.classification.types, read.classification.reads], ['read', ['sftp.read'], ['/srv/a']]);
  const rm = describeRequest({ type: 'remove', id: 2, path: '/a b' }, none)!;
  assert.equal(rm.text, 'remove "/a b"');
  assert.deepEqual(rm.classification.types, ['sftp.remove']);
  const fset = describeRequest({ type: 'fsetstat', id: 3, handle: Buffer.from('h'), attrs: { permissions: 0o600 } }, () => '/srv/f')!;
  assert.equal(fset.text, 'setstat /srv/f (mode=0600)');
  assert.deepEqual(fset.classification.flags, ['chmod']);
  const ext = describeRequest({ type: 'extended', id: 4, name: 'x@y', ext: { kind: 'other' } }, none)!;
  assert.equal(ext.classification.class, 'unknown');
  assert.equal(describeRequest({ type: 'stat', id: 5, path: '/' }, none), null);
  assert.equal(quotePath('/a\nb'), '"/a\\nb"');
  assert.ok(quotePath('/' + 'x'.repeat(10_000)).length < 4200);
});
