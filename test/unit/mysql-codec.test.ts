import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  DEFAULT_MAX_MESSAGE, MAX_PACKET_PAYLOAD, PacketScanner, ProtocolError, Reader, Writer, encodePacket, lenEncIntSize,
  nextSeq, packetCount, readLenEncInt, writeLenEncInt,
} from '../../src/protocols/mysql/codec.ts';
import * as P from '../../src/protocols/mysql/packets.ts';
import * as A from '../../src/protocols/mysql/auth.ts';

// ---------- helpers ----------

type Got = { seq: number; payload: Buffer; firstSeq: number };

function scanner(max?: number): { s: PacketScanner; got: Got[] } {
  const got: Got[] = [];
  const s = new PacketScanner((seq, payload, firstSeq) => got.push({ seq, payload: Buffer.from(payload), firstSeq }), max);
  return { s, got };
}

/** Deterministic PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

function throwsProtocol(fn: () => unknown, code?: number): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected ProtocolError, got ${String(e)}`);
    if (code !== undefined) assert.equal(e.code, code);
    assert.equal(typeof e.sqlState, 'string');
    return true;
  });
}

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
/** Hand-built length-prefixed string (all test strings < 251 bytes), independent of the codec's writer. */
const lp = (s: string | Buffer): Buffer => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([Buffer.from([b.length]), b]);
};
const cz = (s: string): Buffer => Buffer.from(s + '\0');

// ---------- framing ----------

test('framing: packets survive any chunking, byte by byte and random splits', () => {
  const payloads = [Buffer.from([P.COM_PING]), Buffer.alloc(0), Buffer.from('\x03SELECT 1'), Buffer.alloc(300, 7), Buffer.alloc(70000, 9)];
  const stream = Buffer.concat(payloads.map((p, i) => encodePacket(i, p)));
  const expect = payloads.map((p, i) => ({ seq: i, payload: p, firstSeq: i }));

  const whole = scanner();
  whole.s.push(stream);
  assert.deepEqual(whole.got, expect);
  assert.ok(whole.s.idle);

  const bytewise = scanner();
  for (let i = 0; i < stream.length; i++) bytewise.s.push(stream.subarray(i, i + 1));
  assert.deepEqual(bytewise.got, expect);
  assert.ok(bytewise.s.idle);

  const rand = rng(42);
  for (let round = 0; round < 50; round++) {
    const r = scanner();
    let off = 0;
    while (off < stream.length) {
      const n = 1 + Math.floor(rand() * 2000);
      r.s.push(stream.subarray(off, off + n));
      off += n;
    }
    assert.deepEqual(r.got, expect);
  }
});

test('framing: a packet inside one chunk is a zero-copy view; a split one is copied', () => {
  const chunk = encodePacket(0, Buffer.from('\x03SELECT 1'));
  let view: Buffer | undefined;
  new PacketScanner((_s, p) => (view = p)).push(chunk);
  assert.ok(view);
  assert.equal(view.buffer, chunk.buffer);
  assert.equal(view.byteOffset, chunk.byteOffset + 4);

  let copied: Buffer | undefined;
  const s = new PacketScanner((_s, p) => (copied = p));
  s.push(chunk.subarray(0, 6));
  assert.equal(s.idle, false);
  s.push(chunk.subarray(6));
  assert.equal(copied!.toString('latin1'), '\x03SELECT 1');
  // Copied: the emitted payload no longer depends on the caller's chunk.
  chunk[5] = 0x58;
  assert.equal(copied!.toString('latin1'), '\x03SELECT 1');
  assert.equal(view.toString('latin1'), '\x03XELECT 1');
});

test('framing: payloads of 16 MiB and more are split and reassembled (exact multiples included)', () => {
  for (const len of [MAX_PACKET_PAYLOAD - 1, MAX_PACKET_PAYLOAD, MAX_PACKET_PAYLOAD + 100, 2 * MAX_PACKET_PAYLOAD]) {
    const payload = Buffer.allocUnsafe(len);
    for (let i = 0; i < len; i += 4093) payload[i] = i & 0xff;
    payload[len - 1] = 0xab;
    const wire = encodePacket(254, payload);
    const count = packetCount(len);
    assert.equal(wire.length, len + 4 * count);
    assert.equal(count, Math.floor(len / MAX_PACKET_PAYLOAD) + 1);
    // Walk the physical headers: full packets then a short (possibly empty) last one, ids wrap mod 256.
    let off = 0;
    for (let i = 0; i < count; i++) {
      const plen = wire.readUIntLE(off, 3);
      assert.equal(wire[off + 3], (254 + i) & 0xff);
      assert.equal(plen, i < count - 1 ? MAX_PACKET_PAYLOAD : len - (count - 1) * MAX_PACKET_PAYLOAD);
      off += 4 + plen;
    }
    assert.equal(off, wire.length);
    assert.equal(nextSeq(254, len), (254 + count) & 0xff);

    const r = scanner();
    // 3 × 5592407 = 4 + 0xffffff + 2: a chunk boundary falls inside the first continuation header.
    const step = 5592407;
    for (let o = 0; o < wire.length; o += step) r.s.push(wire.subarray(o, o + step));
    assert.equal(r.got.length, 1);
    assert.equal(r.got[0]!.firstSeq, 254);
    assert.equal(r.got[0]!.seq, (254 + count - 1) & 0xff);
    assert.ok(r.got[0]!.payload.equals(payload));
    assert.ok(r.s.idle);
  }
});

test('framing: hostile lengths, sequence breaks and the message bound raise ProtocolError', () => {
  assert.equal(DEFAULT_MAX_MESSAGE, 64 * 1024 * 1024);
  // A header announcing more than the bound fails at the header, before any body is buffered.
  const small = scanner(100);
  throwsProtocol(() => small.s.push(hex('e80300 00')), 1153);
  // The scanner stays failed: the stream has no recoverable boundary.
  throwsProtocol(() => small.s.push(encodePacket(0, Buffer.from([1]))), 1153);

  // A full-length packet followed by a continuation that crosses the bound.
  const big = scanner(MAX_PACKET_PAYLOAD + 10);
  const first = encodePacket(0, Buffer.alloc(MAX_PACKET_PAYLOAD + 5)).subarray(0, 4 + MAX_PACKET_PAYLOAD);
  big.s.push(first);
  assert.equal(big.got.length, 0);
  throwsProtocol(() => big.s.push(hex('140000 01')), 1153);

  // A continuation with the wrong sequence id.
  const order = scanner();
  order.s.push(first);
  throwsProtocol(() => order.s.push(hex('010000 05 00')), 1156);

  // Truncated input is simply pending, never emitted.
  const trunc = scanner();
  trunc.s.push(encodePacket(0, Buffer.from('\x03SELECT 1')).subarray(0, 8));
  assert.equal(trunc.got.length, 0);
  assert.equal(trunc.s.idle, false);
  assert.throws(() => new PacketScanner(() => {}, -1), RangeError);
});

// ---------- primitive fields ----------

test('length-encoded integers: every width, NULL marker, invalid and truncated prefixes', () => {
  const cases: [number, string][] = [
    [0, '00'], [250, 'fa'], [251, 'fcfb00'], [0xffff, 'fcffff'], [0x10000, 'fd000001'], [0xffffff, 'fdffffff'],
    [0x1000000, 'fe0000000100000000'], [Number.MAX_SAFE_INTEGER, 'feffffffffffff1f00'],
  ];
  for (const [n, h] of cases) {
    assert.equal(writeLenEncInt(n).toString('hex'), h, `encode ${n}`);
    assert.equal(lenEncIntSize(n), h.length / 2);
    assert.deepEqual(readLenEncInt(hex(h), 0), { value: n, next: h.length / 2 });
  }
  assert.deepEqual(readLenEncInt(hex('fb'), 0), { value: null, next: 1 });
  throwsProtocol(() => new Reader(hex('fb')).lenEncInt());
  throwsProtocol(() => readLenEncInt(hex('ff'), 0));
  throwsProtocol(() => readLenEncInt(hex('fc01'), 0));
  throwsProtocol(() => readLenEncInt(hex('fe01020304'), 0));
  // Beyond 2^53 as a length: refused; as an id: exact.
  throwsProtocol(() => readLenEncInt(hex('feffffffffffffffff'), 0));
  assert.equal(new Reader(hex('feffffffffffffffff')).lenEncBigInt(), 0xffffffffffffffffn);
  assert.equal(writeLenEncInt(0xffffffffffffffffn).toString('hex'), 'feffffffffffffffff');
  assert.throws(() => writeLenEncInt(-1), RangeError);
  // A length-encoded string longer than what is left.
  throwsProtocol(() => new Reader(hex('05616263')).lenEncBytes());
  throwsProtocol(() => new Reader(hex('03616263')).lenEncBytes(2));
});

test('Reader: NUL-terminated fields are bounded in length and in search', () => {
  assert.equal(new Reader(Buffer.from('root\0x')).cstring(256), 'root');
  throwsProtocol(() => new Reader(Buffer.from('root')).cstring(256));
  throwsProtocol(() => new Reader(Buffer.from('a'.repeat(300) + '\0')).cstring(256));
  assert.equal(new Reader(Buffer.from('a'.repeat(256) + '\0')).cstring(256).length, 256);
  throwsProtocol(() => new Reader(Buffer.alloc(3)).u32());
  const w = new Writer().u8(1).u16(0x203).u24(0x40506).u32(0xffffffff).u64(5n).lenEncBytes('hi').cstring('x');
  assert.equal(w.finish().toString('hex'), '01' + '0302' + '060504' + 'ffffffff' + '0500000000000000' + '026869' + '7800');
  assert.throws(() => new Writer().cstring('a\0b'), RangeError);
});

// ---------- connection phase ----------

test('HandshakeV10: encode/decode round trip and byte layout', () => {
  const scramble = A.generateScramble();
  const caps = (P.CLIENT_PROTOCOL_41 | P.CLIENT_SECURE_CONNECTION | P.CLIENT_PLUGIN_AUTH | P.CLIENT_DEPRECATE_EOF | P.CLIENT_SSL
    | P.CLIENT_LONG_PASSWORD | P.CLIENT_CONNECT_ATTRS | P.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | P.CLIENT_REMEMBER_OPTIONS) >>> 0;
  const h = {
    serverVersion: '8.0.36-gatehouse', connectionId: 0xdeadbeef, scramble, capabilities: caps,
    charset: P.CHARSET_UTF8MB4_0900_AI_CI, status: P.SERVER_STATUS_AUTOCOMMIT, authPlugin: A.CACHING_SHA2_PASSWORD,
  };
  const b = P.encodeHandshakeV10(h);
  assert.equal(b[0], 10);
  const afterVersion = 1 + h.serverVersion.length + 1;
  assert.equal(b.readUInt32LE(afterVersion), 0xdeadbeef);
  assert.equal(b[afterVersion + 4 + 8], 0); // filler
  assert.equal(b[afterVersion + 4 + 8 + 1 + 2 + 1 + 2 + 2], 21); // auth-plugin-data length
  assert.ok(b.subarray(-(A.CACHING_SHA2_PASSWORD.length + 1)).equals(cz(A.CACHING_SHA2_PASSWORD)));
  const d = P.decodeHandshakeV10(b);
  assert.deepEqual(d, { protocolVersion: 10, ...h });
  assert.ok(d.capabilities & P.CLIENT_REMEMBER_OPTIONS);
  assert.ok(d.capabilities > 0);
  assert.throws(() => P.encodeHandshakeV10({ ...h, scramble: Buffer.alloc(20) }), RangeError);
  assert.throws(() => P.encodeHandshakeV10({ ...h, scramble: Buffer.alloc(8, 1) }), RangeError);
});

test('HandshakeV10: decodes a hand-built MySQL 8 greeting', () => {
  const part1 = Buffer.from('ABCDEFGH');
  const part2 = Buffer.from('IJKLMNOPQRST');
  const greeting = Buffer.concat([
    hex('0a'), cz('8.0.36'), hex('0b000000'), part1, hex('00'), hex('ffff'), hex('ff'), hex('0200'), hex('ffdf'), hex('15'),
    Buffer.alloc(10), part2, hex('00'), cz('caching_sha2_password'),
  ]);
  const d = P.decodeHandshakeV10(greeting);
  assert.equal(d.serverVersion, '8.0.36');
  assert.equal(d.connectionId, 11);
  assert.equal(d.capabilities, 0xdfffffff);
  assert.equal(d.charset, 255);
  assert.equal(d.status, 2);
  assert.equal(d.scramble.toString(), 'ABCDEFGHIJKLMNOPQRST');
  assert.equal(d.authPlugin, 'caching_sha2_password');
  assert.equal(d.mariadbCapabilities, undefined);
  throwsProtocol(() => P.decodeHandshakeV10(hex('09')));
  // Every truncation either fails cleanly or decodes (a pre-4.1 greeting may end early).
  for (let i = 0; i < greeting.length; i++) {
    try {
      P.decodeHandshakeV10(greeting.subarray(0, i));
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `prefix ${i}: ${String(e)}`);
    }
  }
});

/** A login packet laid out byte by byte as libmysqlclient 8.0 (the `mysql` CLI) sends it. */
function realWorldLogin(): { payload: Buffer; authResponse: Buffer } {
  const authResponse = Buffer.from([171, 201, 138, 146, 89, 159, 11, 170, 0, 67, 165, 49, 175, 94, 218, 68, 177, 109, 110, 86,
    34, 33, 44, 190, 67, 240, 70, 110, 40, 139, 124, 41]);
  const attrs = Buffer.concat([
    lp('_pid'), lp('12345'), lp('_platform'), lp('x86_64'), lp('_os'), lp('Linux'), lp('_client_name'), lp('libmysql'),
    lp('os_user'), lp('alice'), lp('_client_version'), lp('8.0.36'), lp('program_name'), lp('mysql'),
  ]);
  const payload = Buffer.concat([
    hex('85a6ff01'), // CLIENT_LONG_PASSWORD|LONG_FLAG|LOCAL_FILES|PROTOCOL_41|INTERACTIVE|TRANSACTIONS|SECURE_CONNECTION + bits 16..24
    hex('00000001'), // max packet 16 MiB
    hex('ff'), // utf8mb4_0900_ai_ci
    Buffer.alloc(23),
    cz('root'),
    lp(authResponse), // CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    cz('caching_sha2_password'),
    lp(attrs),
  ]);
  return { payload, authResponse };
}

test('HandshakeResponse41: decodes a real-world libmysqlclient login', () => {
  const { payload, authResponse } = realWorldLogin();
  const d = P.decodeHandshakeResponse41(payload);
  assert.equal(d.capabilities, 0x01ffa685);
  assert.ok(P.hasCap(d.capabilities, P.CLIENT_DEPRECATE_EOF));
  assert.ok(!P.hasCap(d.capabilities, P.CLIENT_CONNECT_WITH_DB));
  assert.equal(d.maxPacket, 16 * 1024 * 1024);
  assert.equal(d.charset, 255);
  assert.equal(d.user, 'root');
  assert.ok(d.authResponse.equals(authResponse));
  assert.equal(d.database, undefined);
  assert.equal(d.authPlugin, 'caching_sha2_password');
  assert.deepEqual({ ...d.attrs }, {
    _pid: '12345', _platform: 'x86_64', _os: 'Linux', _client_name: 'libmysql', os_user: 'alice', _client_version: '8.0.36',
    program_name: 'mysql',
  });
  assert.ok(!P.isSslRequest(payload));
  // Every truncation either fails cleanly or (for the optional trailing fields) decodes.
  for (let i = 0; i < payload.length; i++) {
    try {
      P.decodeHandshakeResponse41(payload.subarray(0, i));
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `prefix ${i}: ${String(e)}`);
    }
  }
});

test('HandshakeResponse41: bounds, proto-safe attributes, legacy layouts, encoder round trip', () => {
  const base = (caps: number): Buffer => {
    const b = Buffer.alloc(4 + 4 + 1 + 23);
    b.writeUInt32LE(caps >>> 0, 0);
    b.writeUInt32LE(1 << 24, 4);
    b[8] = 45;
    return b;
  };
  const caps41 = P.CLIENT_PROTOCOL_41 | P.CLIENT_SECURE_CONNECTION | P.CLIENT_LONG_PASSWORD;
  // user longer than 256 bytes
  throwsProtocol(() => P.decodeHandshakeResponse41(Buffer.concat([base(caps41), cz('u'.repeat(257)), hex('00')])));
  // attributes over 64 KiB
  const attrCaps = caps41 | P.CLIENT_CONNECT_ATTRS | P.CLIENT_PLUGIN_AUTH;
  const bigAttrs = Buffer.concat([base(attrCaps), cz('u'), hex('00'), cz('mysql_native_password'), hex('fd010001')]);
  throwsProtocol(() => P.decodeHandshakeResponse41(Buffer.concat([bigAttrs, Buffer.alloc(0x10001)])));
  // attribute length overrunning its region
  throwsProtocol(() => P.decodeHandshakeResponse41(Buffer.concat([base(attrCaps), cz('u'), hex('00'), cz('p'), hex('03'), lp('abc')])));
  // "__proto__" stays data
  const evil = P.decodeHandshakeResponse41(Buffer.concat([base(attrCaps), cz('u'), hex('00'), cz('p'), lp(Buffer.concat([lp('__proto__'), lp('x')]))]));
  assert.equal(Object.getPrototypeOf(evil.attrs), null);
  assert.equal(evil.attrs!['__proto__'], 'x');
  // pre-4.1 clients are refused
  throwsProtocol(() => P.decodeHandshakeResponse41(Buffer.concat([base(P.CLIENT_LONG_PASSWORD), cz('u'), hex('00')])), 1251);
  // 1-byte auth length (CLIENT_SECURE_CONNECTION without LENENC), database present, plugin name unterminated at the end
  const legacy = Buffer.concat([base(caps41 | P.CLIENT_CONNECT_WITH_DB | P.CLIENT_PLUGIN_AUTH), cz('bob'), lp(Buffer.alloc(20, 1)), cz('shop'), Buffer.from('mysql_native_password')]);
  const dl = P.decodeHandshakeResponse41(legacy);
  assert.deepEqual([dl.user, dl.authResponse.length, dl.database, dl.authPlugin], ['bob', 20, 'shop', 'mysql_native_password']);
  // CONNECT_WITH_DB set but the driver left the field out
  assert.equal(P.decodeHandshakeResponse41(Buffer.concat([base(caps41 | P.CLIENT_CONNECT_WITH_DB), cz('bob'), hex('00')])).database, undefined);
  // MariaDB extended capabilities in the filler when CLIENT_MYSQL is clear
  const maria = Buffer.concat([base(P.CLIENT_PROTOCOL_41 | P.CLIENT_SECURE_CONNECTION), cz('m'), hex('00')]);
  maria.writeUInt32LE(0x1c, 9 + 19);
  assert.equal(P.decodeHandshakeResponse41(maria).mariadbCapabilities, 0x1c);

  const input = {
    capabilities: attrCaps | P.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | P.CLIENT_CONNECT_WITH_DB | P.CLIENT_DEPRECATE_EOF,
    maxPacket: 1 << 24, charset: 45, user: 'agent-7', authResponse: Buffer.alloc(300, 3), database: 'shop',
    authPlugin: 'caching_sha2_password', attrs: { _client_name: 'gatehouse', note: 'ünïcode' },
  };
  const rt = P.decodeHandshakeResponse41(P.encodeHandshakeResponse41(input));
  assert.deepEqual({ ...rt, attrs: { ...rt.attrs } }, { ...input, capabilities: input.capabilities >>> 0 });
  assert.throws(() => P.encodeHandshakeResponse41({ ...input, capabilities: caps41 }), RangeError);
  assert.throws(() => P.encodeHandshakeResponse41({ ...input, capabilities: caps41 | P.CLIENT_CONNECT_WITH_DB | P.CLIENT_PLUGIN_AUTH | P.CLIENT_CONNECT_ATTRS }), RangeError);
});

test('SSLRequest', () => {
  const ssl = P.encodeSslRequest(P.CLIENT_PROTOCOL_41 | P.CLIENT_PLUGIN_AUTH, 255);
  assert.equal(ssl.length, 32);
  assert.ok(P.isSslRequest(ssl));
  assert.ok(P.hasCap(ssl.readUInt32LE(0), P.CLIENT_SSL));
  assert.ok(!P.isSslRequest(Buffer.alloc(32)));
  assert.ok(!P.isSslRequest(Buffer.concat([ssl, hex('00')])));
});

// ---------- generic responses ----------

test('OK/ERR/EOF round trips, incl. DEPRECATE_EOF and session tracking', () => {
  // Real bytes from a server (go-sql-driver fixture): OK, 0 rows, autocommit.
  const r = scanner();
  r.s.push(Buffer.from([7, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 2, 1, 3]));
  assert.equal(r.got[0]!.seq, 2);
  assert.deepEqual(P.decodeOk(r.got[0]!.payload), { affectedRows: 0, lastInsertId: 0n, status: 2, warnings: 0, info: '', eof: false });
  assert.deepEqual(P.decodeAuthMoreData(r.got[1]!.payload), Buffer.from([A.CACHING_SHA2_FAST_AUTH_SUCCESS]));

  const ok = { affectedRows: 3, lastInsertId: 0xffffffffffffffffn, status: P.SERVER_STATUS_AUTOCOMMIT | P.SERVER_STATUS_IN_TRANS, warnings: 1, info: 'Rows matched: 3  Changed: 3  Warnings: 1' };
  assert.deepEqual(P.decodeOk(P.encodeOk(ok)), { ...ok, eof: false });
  const tracked = { ...ok, status: ok.status | P.SERVER_SESSION_STATE_CHANGED, sessionState: hex('0005046b65797301') };
  assert.deepEqual(P.decodeOk(P.encodeOk(tracked, P.CLIENT_SESSION_TRACK), P.CLIENT_SESSION_TRACK), { ...tracked, eof: false });
  // Session tracking with nothing to say omits info entirely.
  const bare = P.encodeOk({ status: 2 }, P.CLIENT_SESSION_TRACK);
  assert.equal(bare.length, 7);
  assert.equal(P.decodeOk(bare, P.CLIENT_SESSION_TRACK).info, '');

  const eofOk = P.encodeOk({ status: 2, warnings: 0, eof: true });
  assert.equal(eofOk[0], 0xfe);
  assert.equal(P.decodeOk(eofOk).eof, true);
  assert.ok(P.isOk(eofOk, true));
  assert.ok(!P.isOk(eofOk, false));
  assert.ok(P.isResultsetEnd(eofOk, true));

  const eof = P.encodeEof(P.SERVER_MORE_RESULTS_EXISTS, 2);
  assert.equal(eof.toString('hex'), 'fe02000800');
  assert.ok(P.isEof(eof));
  assert.ok(P.isResultsetEnd(eof, false));
  assert.deepEqual(P.decodeEof(eof), { warnings: 2, status: 8 });
  assert.ok(!P.isOk(eof, false));
  // A text row whose first value carries an 8-byte length prefix also starts with 0xfe, but is never < 9 bytes.
  const rowish = Buffer.concat([hex('fe'), Buffer.alloc(8), Buffer.alloc(4)]);
  assert.ok(!P.isEof(rowish));
  assert.ok(!P.isResultsetEnd(rowish, false));
  assert.ok(!P.isOk(Buffer.from([0, 0]), false));

  const err = { code: 1045, sqlState: '28000', message: "Access denied for user 'x'@'h' (using password: YES)" };
  const eb = P.encodeErr(err);
  assert.ok(P.isErr(eb));
  assert.equal(eb.subarray(0, 9).toString('hex'), 'ff1504' + '23' + Buffer.from('28000').toString('hex'));
  assert.deepEqual(P.decodeErr(eb), err);
  // Without the '#' marker (errors sent before capabilities are known).
  assert.deepEqual(P.decodeErr(Buffer.concat([hex('ff1304'), Buffer.from('Host blocked')])), { code: 1043, sqlState: 'HY000', message: 'Host blocked' });
  assert.throws(() => P.encodeErr({ ...err, sqlState: '28' }), RangeError);
  throwsProtocol(() => P.decodeOk(eb));
  throwsProtocol(() => P.decodeErr(hex('ff15')));
  throwsProtocol(() => P.decodeOk(hex('00fc01')));
});

test('auth switch and more-data packets', () => {
  const scramble = A.generateScramble();
  const sw = P.encodeAuthSwitchRequest(A.NATIVE_PASSWORD, scramble);
  assert.equal(sw.length, 1 + A.NATIVE_PASSWORD.length + 1 + 21);
  const d = P.decodeAuthSwitchRequest(sw);
  assert.equal(d.plugin, A.NATIVE_PASSWORD);
  assert.equal(d.data.length, 21);
  // The NUL-terminated 21-byte form is accepted by the scramble functions as is.
  assert.ok(A.scrambleNativePassword('pw', d.data).equals(A.scrambleNativePassword('pw', scramble)));
  assert.deepEqual(P.decodeAuthSwitchRequest(hex('fe')), { plugin: 'mysql_old_password', data: Buffer.alloc(0) });
  assert.ok(P.encodeAuthMoreData(Buffer.from([A.CACHING_SHA2_PERFORM_FULL_AUTH])).equals(hex('0104')));
  assert.ok(P.isAuthMoreData(hex('0103')));
  throwsProtocol(() => P.decodeAuthMoreData(hex('00')));
  throwsProtocol(() => P.decodeAuthSwitchRequest(Buffer.concat([hex('fe'), Buffer.alloc(200, 0x61)])));
});

// ---------- result sets ----------

test('column definitions and column count', () => {
  const col = {
    catalog: 'def', schema: 'shop', table: 'c', orgTable: 'customers', name: 'email', orgName: 'email',
    charset: P.CHARSET_UTF8MB4_0900_AI_CI, length: 1020, type: P.MYSQL_TYPE_VAR_STRING, flags: P.NOT_NULL_FLAG, decimals: 0,
  };
  const b = P.encodeColumnDefinition41(col);
  assert.deepEqual(P.decodeColumnDefinition41(b), col);
  // Hand-built: the fixed part begins with 0x0c and ends with two filler bytes.
  const hand = Buffer.concat([lp('def'), lp('shop'), lp('c'), lp('customers'), lp('email'), lp('email'), hex('0c ff00 fc030000 fd 0100 00 0000')]);
  assert.ok(hand.equals(b));
  const withDefault = P.decodeColumnDefinition41(P.encodeColumnDefinition41({ ...col, defaultValue: Buffer.from('x') }));
  assert.equal(withDefault.defaultValue?.toString(), 'x');
  throwsProtocol(() => P.decodeColumnDefinition41(b.subarray(0, b.length - 3)));
  assert.equal(P.decodeColumnCount(P.encodeColumnCount(300)), 300);
  throwsProtocol(() => P.decodeColumnCount(hex('00')));
  throwsProtocol(() => P.decodeColumnCount(hex('0200')));
  assert.ok(P.isStringType(P.MYSQL_TYPE_VARCHAR) && P.isStringType(P.MYSQL_TYPE_BLOB) && P.isStringType(P.MYSQL_TYPE_JSON));
  assert.ok(!P.isStringType(P.MYSQL_TYPE_LONG) && !P.isStringType(P.MYSQL_TYPE_DATETIME));
  assert.ok(P.isBinaryColumn({ type: P.MYSQL_TYPE_BLOB, charset: P.CHARSET_BINARY }));
  assert.ok(!P.isBinaryColumn({ type: P.MYSQL_TYPE_BLOB, charset: P.CHARSET_UTF8MB4_GENERAL_CI }));
});

test('text rows round trip with NULLs, empty and long values', () => {
  const values = [Buffer.from('1'), null, Buffer.alloc(0), Buffer.from('héllo'), Buffer.alloc(70000, 0x61), null];
  const b = P.encodeTextRow(values);
  assert.ok(b.subarray(0, 4).equals(hex('01 31 fb 00')));
  assert.deepEqual(P.decodeTextRow(b, values.length), values);
  throwsProtocol(() => P.decodeTextRow(b, values.length + 1));
  throwsProtocol(() => P.decodeTextRow(b, values.length - 1)); // trailing bytes
  throwsProtocol(() => P.decodeTextRow(hex('ff'), 1));
  throwsProtocol(() => P.decodeTextRow(b.subarray(0, 20), values.length));
});

test('binary rows round trip with NULLs across the bitmap byte boundaries', () => {
  const i64 = Buffer.alloc(8);
  i64.writeBigInt64LE(-5n);
  const dbl = Buffer.alloc(8);
  dbl.writeDoubleLE(3.25);
  const cols = [
    { type: P.MYSQL_TYPE_LONGLONG }, { type: P.MYSQL_TYPE_VAR_STRING }, { type: P.MYSQL_TYPE_DOUBLE }, { type: P.MYSQL_TYPE_DATETIME },
    { type: P.MYSQL_TYPE_TIME }, { type: P.MYSQL_TYPE_TINY }, { type: P.MYSQL_TYPE_BLOB }, { type: P.MYSQL_TYPE_NEWDECIMAL },
    { type: P.MYSQL_TYPE_DATE }, { type: P.MYSQL_TYPE_SHORT },
  ];
  const values = [i64, Buffer.from('x'), dbl, hex('e8070c1f173b3b'), hex('01 02000000 03 04 05'), hex('ff'), null, Buffer.from('12.50'), Buffer.alloc(0), null];
  const b = P.encodeBinaryRow(values, cols);
  // 10 columns + 2 offset bits → 2 bitmap bytes; column 6 → bit 8, column 9 → bit 11.
  assert.equal(b[0], 0);
  assert.equal(b.readUInt16LE(1), (1 << 8) | (1 << 11));
  assert.deepEqual(P.decodeBinaryRow(b, cols), values);
  for (let n = 1; n <= 17; n++) {
    const c = Array.from({ length: n }, () => ({ type: P.MYSQL_TYPE_TINY }));
    const v = Array.from({ length: n }, (_, i) => (i % 3 === 1 ? null : Buffer.from([i])));
    assert.deepEqual(P.decodeBinaryRow(P.encodeBinaryRow(v, c), c), v);
  }
  throwsProtocol(() => P.decodeBinaryRow(b.subarray(0, b.length - 1), cols));
  throwsProtocol(() => P.decodeBinaryRow(Buffer.concat([b, hex('00')]), cols));
  throwsProtocol(() => P.decodeBinaryRow(hex('00 00 05'), [{ type: P.MYSQL_TYPE_DATE }])); // bad temporal length
  throwsProtocol(() => P.decodeBinaryRow(hex('00 00 00'), [{ type: 99 }]));
  assert.throws(() => P.encodeBinaryRow([Buffer.alloc(3)], [{ type: P.MYSQL_TYPE_LONG }]), RangeError);
});

// ---------- prepared statements ----------

test('COM_STMT_PREPARE OK', () => {
  const hand = hex('00 07000000 0300 0200 00 0100');
  assert.deepEqual(P.decodeStmtPrepareOk(hand), { statementId: 7, numColumns: 3, numParams: 2, warnings: 1 });
  assert.ok(P.encodeStmtPrepareOk({ statementId: 7, numColumns: 3, numParams: 2, warnings: 1 }).equals(hand));
  throwsProtocol(() => P.decodeStmtPrepareOk(hex('00 0700')));
  assert.equal(P.decodeStmtPrepare(Buffer.from('\x16SELECT ?')), 'SELECT ?');
});

test('COM_STMT_EXECUTE: hand-built packet, new-params-bound 1 then 0, NULLs, long data', () => {
  // id 1, no cursor, 1 iteration, 2 params, param 1 NULL, bound types LONGLONG and VAR_STRING, value 42.
  const hand = hex('17 01000000 00 01000000 02 01 0800 fd00 2a00000000000000');
  const d = P.decodeStmtExecute(hand, 2);
  assert.equal(d.statementId, 1);
  assert.equal(d.newParamsBound, true);
  assert.deepEqual(d.params.map((p) => [p.type, p.unsigned, p.value && P.renderParam(p.type, p.value)]), [
    [P.MYSQL_TYPE_LONGLONG, false, '42'], [P.MYSQL_TYPE_VAR_STRING, false, null],
  ]);

  const u8 = Buffer.from([0xff]);
  const i64 = Buffer.alloc(8);
  i64.writeBigInt64LE(-9007199254740993n);
  const dbl = Buffer.alloc(8);
  dbl.writeDoubleLE(-0.5);
  const params = [
    { type: P.MYSQL_TYPE_TINY, unsigned: true, value: u8 },
    { type: P.MYSQL_TYPE_LONGLONG, unsigned: false, value: i64 },
    { type: P.MYSQL_TYPE_DOUBLE, unsigned: false, value: dbl },
    { type: P.MYSQL_TYPE_VAR_STRING, unsigned: false, value: Buffer.from('héllo') },
    { type: P.MYSQL_TYPE_NULL, unsigned: false, value: null },
    { type: P.MYSQL_TYPE_DATETIME, unsigned: false, value: hex('e8070c1f173b3b a0860100') },
    { type: P.MYSQL_TYPE_BLOB, unsigned: false, value: hex('00ff10') },
    { type: P.MYSQL_TYPE_LONG, unsigned: false, value: null },
    { type: P.MYSQL_TYPE_TIME, unsigned: false, value: hex('01 01000000 02 03 04') },
  ];
  const bound = P.decodeStmtExecute(P.encodeStmtExecute({ statementId: 9, newParamsBound: true, params }), params.length);
  assert.deepEqual(bound.params, params.map((p) => ({ ...p, longData: false })));
  assert.deepEqual(bound.params.map((p) => P.renderParam(p.type, p.value, { unsigned: p.unsigned })), [
    '255', '-9007199254740993', '-0.5', 'héllo', null, '2024-12-31 23:59:59.100000', '\\x00ff10', null, '-26:03:04',
  ]);
  // The next execution may omit types: they carry over from the previous one.
  const again = P.encodeStmtExecute({ statementId: 9, newParamsBound: false, params });
  const d2 = P.decodeStmtExecute(again, params.length, bound.types);
  assert.equal(d2.newParamsBound, false);
  assert.deepEqual(d2.params, bound.params);
  assert.deepEqual(d2.types, bound.types);
  throwsProtocol(() => P.decodeStmtExecute(again, params.length), 1210);
  throwsProtocol(() => P.decodeStmtExecute(again, params.length, bound.types.slice(1)), 1210);

  // Parameter 1 was streamed with COM_STMT_SEND_LONG_DATA: the client leaves it out of the packet.
  const ld = [
    { type: P.MYSQL_TYPE_LONG, unsigned: false, value: hex('05000000') },
    { type: P.MYSQL_TYPE_BLOB, unsigned: false, value: null, longData: true },
    { type: P.MYSQL_TYPE_VAR_STRING, unsigned: false, value: Buffer.from('z') },
  ];
  const ldPacket = P.encodeStmtExecute({ statementId: 3, newParamsBound: true, params: ld });
  const dl = P.decodeStmtExecute(ldPacket, 3, undefined, { longData: new Set([1]) });
  assert.deepEqual(dl.params.map((p) => [p.longData, p.value?.toString('hex') ?? null]), [[false, '05000000'], [true, null], [false, '7a']]);
  // Without knowing about the long data the decoder misreads and must fail rather than guess.
  throwsProtocol(() => P.decodeStmtExecute(ldPacket, 3));
  assert.deepEqual(P.decodeStmtSendLongData(Buffer.concat([hex('18 03000000 0100'), Buffer.from('chunk')])), { statementId: 3, paramId: 1, data: Buffer.from('chunk') });

  // Hostile shapes.
  throwsProtocol(() => P.decodeStmtExecute(Buffer.concat([hand, hex('00')]), 2));
  throwsProtocol(() => P.decodeStmtExecute(hand.subarray(0, hand.length - 1), 2));
  throwsProtocol(() => P.decodeStmtExecute(hex('17 01000000 00 01000000 00 01 6300'), 1)); // unknown type 99
  throwsProtocol(() => P.decodeStmtExecute(hex('03 01000000 00 01000000'), 0));
  assert.deepEqual(P.decodeStmtExecute(hex('17 01000000 01 01000000'), 0).params, []);
  assert.deepEqual(P.decodeStmtFetch(hex('1c 01000000 64000000')), { statementId: 1, numRows: 100 });
  assert.equal(P.decodeStmtId(hex('19 05000000')), 5);
  assert.equal(P.decodeStmtId(hex('1a 06000000')), 6);
  throwsProtocol(() => P.decodeStmtId(hex('19 0500')));
  assert.equal(P.decodeComSetOption(hex('1b 0000')), P.MYSQL_OPTION_MULTI_STATEMENTS_ON);
  assert.equal(P.decodeComProcessKill(hex('0c 2a000000')), 42);
  assert.equal(P.decodeComQuery(P.encodeCommand(P.COM_QUERY, 'SELECT "ü"')), 'SELECT "ü"');
  assert.equal(P.decodeComInitDb(P.encodeCommand(P.COM_INIT_DB, 'shop')), 'shop');
});

test('renderParam: numbers, temporal values, text vs hex, bounded output', () => {
  const le = (n: number, size: number, signed = true): Buffer => {
    const b = Buffer.alloc(size);
    signed ? b.writeIntLE(n, 0, size) : b.writeUIntLE(n, 0, size);
    return b;
  };
  assert.equal(P.renderParam(P.MYSQL_TYPE_TINY, le(-1, 1)), '-1');
  assert.equal(P.renderParam(P.MYSQL_TYPE_TINY, le(-1, 1), { unsigned: true }), '255');
  assert.equal(P.renderParam(P.MYSQL_TYPE_SHORT, le(-300, 2)), '-300');
  assert.equal(P.renderParam(P.MYSQL_TYPE_YEAR, le(2024, 2, false)), '2024');
  assert.equal(P.renderParam(P.MYSQL_TYPE_LONG, le(-2, 4), { unsigned: true }), '4294967294');
  assert.equal(P.renderParam(P.MYSQL_TYPE_LONGLONG, Buffer.alloc(8, 0xff), { unsigned: true }), '18446744073709551615');
  const f = Buffer.alloc(4);
  f.writeFloatLE(1.1);
  assert.equal(P.renderParam(P.MYSQL_TYPE_FLOAT, f), '1.1');
  assert.equal(P.renderParam(P.MYSQL_TYPE_DATE, hex('e807021d')), '2024-02-29');
  assert.equal(P.renderParam(P.MYSQL_TYPE_DATE, Buffer.alloc(0)), '0000-00-00');
  assert.equal(P.renderParam(P.MYSQL_TYPE_DATETIME, hex('e807021d')), '2024-02-29 00:00:00');
  assert.equal(P.renderParam(P.MYSQL_TYPE_TIMESTAMP, hex('e807021d 010203 07000000')), '2024-02-29 01:02:03.000007');
  assert.equal(P.renderParam(P.MYSQL_TYPE_TIME, hex('00 00000000 0c 22 38 40e20100')), '12:34:56.123456');
  assert.equal(P.renderParam(P.MYSQL_TYPE_TIME, Buffer.alloc(0)), '00:00:00');
  assert.equal(P.renderParam(P.MYSQL_TYPE_NEWDECIMAL, Buffer.from('-12.345')), '-12.345');
  assert.equal(P.renderParam(P.MYSQL_TYPE_VAR_STRING, hex('c328')), '\\xc328'); // invalid UTF-8 → hex
  assert.equal(P.renderParam(P.MYSQL_TYPE_BLOB, Buffer.from('abc')), '\\x616263');
  assert.equal(P.renderParam(P.MYSQL_TYPE_BLOB, Buffer.alloc(10, 0xaa), { maxBytes: 4 }), '\\xaaaaaaaa…(+6 bytes)');
  // A cut never splits a multi-byte character.
  assert.equal(P.renderParam(P.MYSQL_TYPE_STRING, Buffer.from('aé€'), { maxBytes: 3 }), 'aé…(+3 bytes)');
  assert.equal(P.renderParam(P.MYSQL_TYPE_STRING, Buffer.from('aé€'), { maxBytes: 2 }), 'a…(+5 bytes)');
  assert.equal(P.renderParam(P.MYSQL_TYPE_VAR_STRING, Buffer.alloc(100_000, 0x61))?.length, 4096 + '…(+95904 bytes)'.length);
  assert.equal(P.renderParam(P.MYSQL_TYPE_LONG, hex('0102')), '\\x0102'); // wrong width: shown, not misread
  assert.equal(P.renderParam(P.MYSQL_TYPE_LONG, null), null);
});

// ---------- authentication ----------

// External oracle: go-sql-driver/mysql's auth_test.go vectors (outputs of a driver known to log in
// to real servers), not values re-derived with our own formula.
const GO_NATIVE_SCRAMBLE = Buffer.from([70, 114, 92, 94, 1, 38, 11, 116, 63, 114, 23, 101, 126, 103, 26, 95, 81, 17, 24, 21]);
const GO_NATIVE_SECRET = Buffer.from([53, 177, 140, 159, 251, 189, 127, 53, 109, 252, 172, 50, 211, 192, 240, 164, 26, 48, 207, 45]);
const GO_SHA2_SCRAMBLE = Buffer.from([10, 47, 74, 111, 75, 73, 34, 48, 88, 76, 114, 74, 37, 13, 3, 80, 82, 2, 23, 21]);
const GO_SHA2_SCRAMBLE_2 = Buffer.from([6, 81, 96, 114, 14, 42, 50, 30, 76, 47, 1, 95, 126, 81, 62, 94, 83, 80, 52, 85]);

test('auth: client-side scrambles match known driver vectors', () => {
  assert.ok(A.scrambleNativePassword('secret', GO_NATIVE_SCRAMBLE).equals(GO_NATIVE_SECRET));
  assert.equal(A.scrambleCachingSha2('secret', GO_SHA2_SCRAMBLE).toString('hex'), 'f490e76f66d9d86665ce54d98c78d0acfe2fb0b08b423da807144873d30b312c');
  assert.equal(A.scrambleCachingSha2('secret2', GO_SHA2_SCRAMBLE).toString('hex'), 'abc3934a012cf342e876071c8ee202de51785b430258a7a0138bc79c4d800bc6');
  assert.ok(A.scrambleCachingSha2('secret', GO_SHA2_SCRAMBLE_2).equals(realWorldLogin().authResponse));
  assert.equal(A.scrambleNativePassword('', GO_NATIVE_SCRAMBLE).length, 0);
  assert.equal(A.scrambleCachingSha2('', GO_SHA2_SCRAMBLE).length, 0);
  // Full auth over TLS: password + NUL (go-sql-driver writes exactly these bytes).
  assert.ok(A.cleartextPasswordPayload('secret').equals(Buffer.from([115, 101, 99, 114, 101, 116, 0])));
  assert.throws(() => A.cleartextPasswordPayload('a\0b'), RangeError);
  assert.throws(() => A.scrambleNativePassword('x', Buffer.alloc(8)), RangeError);
  // mysql_native_password's stored form is MySQL's "*<HEX>" of the same double SHA1.
  assert.equal(A.nativePasswordHash('secret').toString('hex').toUpperCase(), '14E65567ABDB5135D0CFD9A70B3032C179A49EE7');
});

test('auth: server-side verification accepts the right password only', () => {
  const stored1 = A.nativePasswordHash('secret');
  assert.equal(stored1.length, 20);
  assert.ok(A.verifyNativePassword(GO_NATIVE_SCRAMBLE, GO_NATIVE_SECRET, stored1));
  const stored2 = A.sha2FastHash('secret');
  assert.equal(stored2.length, 32);
  assert.ok(A.verifyCachingSha2Fast(GO_SHA2_SCRAMBLE_2, realWorldLogin().authResponse, stored2));

  for (let i = 0; i < 20; i++) {
    const scramble = A.generateScramble();
    assert.equal(scramble.length, 20);
    assert.ok(scramble.every((b) => b > 0 && b < 0x80 && b !== 0x24));
    const pw = `key-${i}-ünï`;
    const n = A.scrambleNativePassword(pw, scramble);
    const s = A.scrambleCachingSha2(pw, scramble);
    assert.ok(A.verifyNativePassword(scramble, n, A.nativePasswordHash(pw)));
    assert.ok(A.verifyCachingSha2Fast(scramble, s, A.sha2FastHash(pw)));
    // NUL-terminated nonce as taken from an AuthSwitchRequest.
    assert.ok(A.verifyCachingSha2Fast(Buffer.concat([scramble, hex('00')]), s, A.sha2FastHash(pw)));
    assert.ok(!A.verifyNativePassword(scramble, n, A.nativePasswordHash(pw + 'x')));
    assert.ok(!A.verifyCachingSha2Fast(scramble, s, A.sha2FastHash(pw + 'x')));
    // A response made for another nonce (replay) fails.
    assert.ok(!A.verifyNativePassword(A.generateScramble(), n, A.nativePasswordHash(pw)));
    // Flipping the first or the last byte fails alike.
    for (const at of [0, n.length - 1]) {
      const bad = Buffer.from(n);
      bad[at] ^= 1;
      assert.ok(!A.verifyNativePassword(scramble, bad, A.nativePasswordHash(pw)));
    }
  }
  // Wrong-length and empty responses are refusals, not errors.
  assert.ok(!A.verifyNativePassword(GO_NATIVE_SCRAMBLE, Buffer.alloc(0), stored1));
  assert.ok(!A.verifyNativePassword(GO_NATIVE_SCRAMBLE, Buffer.alloc(32), stored1));
  assert.ok(!A.verifyCachingSha2Fast(GO_SHA2_SCRAMBLE, Buffer.alloc(20), stored2));
  assert.throws(() => A.verifyNativePassword(GO_NATIVE_SCRAMBLE, GO_NATIVE_SECRET, Buffer.alloc(32)), RangeError);

  // Full-auth fallback: cleartext over TLS checked against the same stored hash.
  const clear = A.decodeCleartextPassword(A.cleartextPasswordPayload('secret'));
  assert.equal(clear.toString(), 'secret');
  assert.ok(A.verifyCleartextSha2(clear, stored2));
  assert.ok(!A.verifyCleartextSha2(Buffer.from('secreT'), stored2));
  assert.ok(!A.verifyCleartextSha2(Buffer.alloc(0), A.sha2FastHash('')));
});

test('auth: secret comparisons are constant-time', () => {
  // Timing cannot be measured reliably in a unit test; pin the mechanism instead: every comparison
  // of secret-derived bytes goes through crypto.timingSafeEqual, none through short-circuiting ones.
  const src = readFileSync(new URL('../../src/protocols/mysql/auth.ts', import.meta.url), 'utf8');
  const code = src.replace(/\/\/.*$/gm, '');
  assert.equal((code.match(/timingSafeEqual\(/g) ?? []).length, 3);
  assert.doesNotMatch(code, /\.equals\(|Buffer\.compare|\.compare\(|===\s*stored|stored\w*\s*===/);
});
