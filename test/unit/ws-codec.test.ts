import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { WebSocket, WebSocketServer } from 'ws';
import {
  acceptKey,
  closePayload,
  encodeFrame,
  OP,
  parseClose,
  WsFrameParser,
  WsMessageAssembler,
  WsProtocolError,
  WsStreamParser,
  type WsFrame,
  type WsPiece,
} from '../../src/protocols/http/ws-codec.ts';

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

/** A deterministic payload, so a misplaced byte shows. */
function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

interface Spec {
  opcode: number;
  payload: Buffer;
  fin?: boolean;
}

/** A stream exercising every length encoding, fragmentation and control frames between fragments. */
function sampleStream(sizes: number[], mask?: Buffer): { wire: Buffer; frames: WsFrame[] } {
  const specs: Spec[] = [];
  for (const [i, n] of sizes.entries()) specs.push({ opcode: i % 2 ? OP.TEXT : OP.BINARY, payload: bytes(n, i + 1) });
  specs.push({ opcode: OP.BINARY, payload: bytes(10, 90), fin: false });
  specs.push({ opcode: OP.PING, payload: Buffer.from('are you there') });
  specs.push({ opcode: OP.CONTINUATION, payload: bytes(200, 91), fin: false });
  specs.push({ opcode: OP.CONTINUATION, payload: Buffer.alloc(0), fin: true });
  specs.push({ opcode: OP.PONG, payload: Buffer.alloc(0) });
  specs.push({ opcode: OP.CLOSE, payload: closePayload(1000, 'bye') });
  const wire = Buffer.concat(specs.map((s) => encodeFrame(s.opcode, s.payload, { fin: s.fin ?? true, ...(mask ? { mask } : {}) })));
  const frames = specs.map((s) => ({ fin: s.fin ?? true, opcode: s.opcode, masked: !!mask, payload: s.payload }));
  return { wire, frames };
}

function parseAll(parser: WsFrameParser, chunks: Buffer[]): WsFrame[] {
  const out: WsFrame[] = [];
  for (const c of chunks) out.push(...parser.push(c));
  return out;
}

test('ws-codec: frames split at every byte position come out whole, masked or not', () => {
  for (const mask of [undefined, MASK]) {
    const { wire, frames } = sampleStream([0, 1, 125, 126, 127, 300], mask);
    const original = Buffer.from(wire);
    for (let cut = 0; cut <= wire.length; cut++) {
      const p = new WsFrameParser();
      assert.deepEqual(parseAll(p, [wire.subarray(0, cut), wire.subarray(cut)]), frames, `cut at ${cut}, masked ${!!mask}`);
      assert.equal(p.buffered, 0);
    }
    // Three pieces, every pair of cut positions in a window around the headers.
    for (let a = 0; a < 40; a++) {
      for (let b = a; b < 60; b++) {
        assert.deepEqual(parseAll(new WsFrameParser(), [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)]), frames, `cuts ${a},${b}`);
      }
    }
    // One byte at a time.
    const p = new WsFrameParser();
    const out: WsFrame[] = [];
    for (let i = 0; i < wire.length; i++) out.push(...p.push(wire.subarray(i, i + 1)));
    assert.deepEqual(out, frames);
    assert.ok(wire.equals(original), 'the parser never writes into the bytes it reads (they are relayed)');
  }
});

test('ws-codec: 16- and 64-bit lengths round-trip, in any chunking', () => {
  for (const mask of [undefined, MASK]) {
    const { wire, frames } = sampleStream([65535, 65536, 200_000], mask);
    assert.equal(wire[1]! & 0x7f, 126, '65535 uses the 16-bit length');
    const second = encodeFrame(OP.BINARY, bytes(65536));
    assert.equal(second[1], 127, '65536 needs the 64-bit length');
    assert.equal(second.readUInt32BE(2), 0);
    assert.equal(second.readUInt32BE(6), 65536);
    for (const step of [1, 7, 1000, 65536, wire.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < wire.length; i += step) chunks.push(wire.subarray(i, i + step));
      if (step === 1) {
        // Byte by byte through the streaming parser only (the whole-frame one would copy as much).
        const p = new WsStreamParser();
        const joined: Buffer[] = [];
        let n = 0;
        for (const c of chunks) for (const piece of p.push(c)) if (piece.opcode === OP.BINARY && piece.length === 200_000) joined.push(piece.piece), n++;
        assert.ok(Buffer.concat(joined).equals(frames[2]!.payload));
        assert.equal(n, 200_000, 'one piece per byte pushed');
        continue;
      }
      assert.deepEqual(parseAll(new WsFrameParser(), chunks), frames, `step ${step}, masked ${!!mask}`);
    }
  }
});

test('ws-codec: streaming mode hands a huge frame on in pieces and holds no payload', () => {
  // A frame announcing 2^40 bytes: the parser reports pieces as they come and buffers only headers.
  const head = Buffer.alloc(14);
  head[0] = 0x82;
  head[1] = 0x80 | 127;
  head.writeUInt32BE(0x100, 2);
  head.writeUInt32BE(0, 6);
  MASK.copy(head, 10);
  const p = new WsStreamParser({ requireMask: true });
  assert.deepEqual(p.push(head), []);
  let seen = 0;
  let offset = 0;
  for (let i = 0; i < 50; i++) {
    const plain = bytes(64 * 1024, i);
    const masked = Buffer.alloc(plain.length);
    for (let j = 0; j < plain.length; j++) masked[j] = plain[j]! ^ MASK[(offset + j) & 3]!;
    // Odd chunk sizes move the mask's phase.
    const cut = 1 + (i % 3);
    const pieces = [...p.push(masked.subarray(0, cut)), ...p.push(masked.subarray(cut))];
    offset += plain.length;
    assert.ok(Buffer.concat(pieces.map((x) => x.piece)).equals(plain), `chunk ${i}`);
    for (const x of pieces) {
      assert.equal(x.length, 2 ** 40);
      assert.equal(x.first, seen === 0);
      assert.equal(x.last, false);
      seen += x.piece.length;
    }
    assert.equal(p.buffered, 0);
  }
  assert.equal(seen, 50 * 64 * 1024);
});

test('ws-codec: pieces of a frame report first/last; control frames and empty frames come whole', () => {
  const wire = Buffer.concat([encodeFrame(OP.BINARY, bytes(10), { mask: MASK }), encodeFrame(OP.PING, 'x'.repeat(125), { mask: MASK }), encodeFrame(OP.TEXT, '', { mask: MASK })]);
  const p = new WsStreamParser();
  const pieces: WsPiece[] = [];
  for (let i = 0; i < wire.length; i += 5) pieces.push(...p.push(wire.subarray(i, i + 5)));
  const data = pieces.filter((x) => x.opcode === OP.BINARY);
  assert.ok(data.length > 1);
  assert.deepEqual(data.map((x) => [x.first, x.last]), data.map((_, i) => [i === 0, i === data.length - 1]));
  const ping = pieces.filter((x) => x.opcode === OP.PING);
  assert.equal(ping.length, 1, 'a control frame is one piece even when its bytes arrive in 5-byte chunks');
  assert.equal(ping[0]!.piece.toString(), 'x'.repeat(125));
  const empty = pieces.filter((x) => x.opcode === OP.TEXT);
  assert.deepEqual(empty.map((x) => [x.first, x.last, x.piece.length, x.fin]), [[true, true, 0, true]]);
});

/** The error a stream raises, wherever it is cut. */
function errorOf(wire: Buffer, opts: ConstructorParameters<typeof WsStreamParser>[0] = {}): WsProtocolError {
  let first: WsProtocolError | null = null;
  for (const step of [1, 2, 3, wire.length]) {
    const p = new WsStreamParser(opts);
    let err: unknown = null;
    try {
      for (let i = 0; i < wire.length; i += step) p.push(wire.subarray(i, i + step));
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof WsProtocolError, `step ${step}: expected a WsProtocolError, got ${String(err)}`);
    // Sticky: after a framing error nothing is parsed any more.
    assert.throws(() => p.push(encodeFrame(OP.BINARY, 'ok', { mask: MASK })), (e: unknown) => e === err);
    first ??= err;
  }
  return first!;
}

test('ws-codec: every violation is a typed error with the close code a peer would use', () => {
  const ok = encodeFrame(OP.BINARY, 'fine');
  for (const rsv of [1, 2, 4]) assert.match(errorOf(Buffer.concat([ok, encodeFrame(OP.BINARY, 'x', { rsv })])).message, /reserved bits/);
  for (const op of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) assert.match(errorOf(encodeFrame(op, 'x')).message, /reserved opcode/, `opcode ${op}`);
  assert.match(errorOf(encodeFrame(OP.PING, Buffer.alloc(126))).message, /longer than 125/);
  assert.match(errorOf(encodeFrame(OP.CLOSE, Buffer.alloc(200))).message, /longer than 125/);
  assert.match(errorOf(encodeFrame(OP.PONG, 'x', { fin: false })).message, /fragmented/);
  assert.match(errorOf(encodeFrame(OP.CONTINUATION, 'x')).message, /continuation frame without/);
  assert.match(errorOf(Buffer.concat([encodeFrame(OP.TEXT, 'a', { fin: false }), encodeFrame(OP.BINARY, 'b')])).message, /before the fragmented one ended/);
  assert.match(errorOf(encodeFrame(OP.BINARY, 'x'), { requireMask: true }).message, /not masked/);
  assert.match(errorOf(encodeFrame(OP.BINARY, 'x', { mask: MASK }), { requireMask: false }).message, /is masked/);
  const big = errorOf(encodeFrame(OP.BINARY, Buffer.alloc(1001)), { maxPayload: 1000 });
  assert.match(big.message, /1001 bytes exceeds the limit of 1000/);
  assert.equal(big.closeCode, 1009);
  assert.equal(errorOf(encodeFrame(OP.BINARY, 'x', { rsv: 1 })).closeCode, 1002);

  // 64-bit lengths: the top bit is forbidden, and 2^53 or more cannot be counted.
  const head = (hi: number, lo: number) => {
    const b = Buffer.alloc(10);
    b[0] = 0x82;
    b[1] = 127;
    b.writeUInt32BE(hi, 2);
    b.writeUInt32BE(lo, 6);
    return b;
  };
  assert.match(errorOf(head(0x80000000, 0)).message, /most significant bit/);
  assert.match(errorOf(head(0x200000, 0)).message, /exceeds 2\^53 - 1/);
  // 2^53 - 1 itself is a length the streaming parser accepts (it holds none of it).
  assert.deepEqual(new WsStreamParser().push(head(0x1fffff, 0xffffffff)), []);
  // The whole-frame parser's default limit is 1 MiB, checked from the header alone.
  assert.throws(() => new WsFrameParser().push(head(0, 1024 * 1024 + 1)), /exceeds the limit of 1048576/);
  assert.equal(new WsFrameParser({ maxPayload: 5 }).push(encodeFrame(OP.BINARY, '12345')).length, 1, 'the limit itself is allowed');
  assert.throws(() => new WsFrameParser({ maxPayload: -1 }), RangeError);
});

test('ws-codec: an error is raised as soon as the first two bytes show it, before the rest arrives', () => {
  const p = new WsStreamParser();
  assert.throws(() => p.push(Buffer.from([0x83, 0x7f])), /reserved opcode/);
  const q = new WsStreamParser({ requireMask: true });
  assert.throws(() => q.push(Buffer.from([0x82, 0x7f])), /not masked/);
});

test('ws-codec: the message assembler joins fragments around control frames, within maxMessage', () => {
  const a = new WsMessageAssembler({ maxMessage: 300 });
  const wire = Buffer.concat([
    encodeFrame(OP.TEXT, 'hel', { fin: false, mask: MASK }),
    encodeFrame(OP.PING, 'p', { mask: MASK }),
    encodeFrame(OP.CONTINUATION, 'lo', { fin: false, mask: MASK }),
    encodeFrame(OP.CONTINUATION, ' world', { mask: MASK }),
    encodeFrame(OP.BINARY, bytes(300), { mask: MASK }),
  ]);
  const msgs = new WsFrameParser().push(wire).map((f) => a.push(f)).filter((m) => m !== null);
  assert.deepEqual(msgs.map((m) => [m.opcode, m.data.length]), [[OP.PING, 1], [OP.TEXT, 11], [OP.BINARY, 300]]);
  assert.equal(msgs[1]!.data.toString(), 'hello world');
  assert.equal(a.buffered, 0);

  const small = new WsMessageAssembler({ maxMessage: 10 });
  assert.equal(small.push({ fin: false, opcode: OP.BINARY, masked: false, payload: Buffer.alloc(6) }), null);
  assert.throws(() => small.push({ fin: true, opcode: OP.CONTINUATION, masked: false, payload: Buffer.alloc(5) }), (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1009);
  assert.throws(() => small.push({ fin: true, opcode: OP.BINARY, masked: false, payload: Buffer.alloc(1) }), /exceeds the limit/, 'sticky');
  assert.throws(() => new WsMessageAssembler().push({ fin: true, opcode: OP.CONTINUATION, masked: false, payload: Buffer.alloc(1) }), /continuation frame without/);
  const two = new WsMessageAssembler();
  two.push({ fin: false, opcode: OP.TEXT, masked: false, payload: Buffer.alloc(1) });
  assert.throws(() => two.push({ fin: true, opcode: OP.TEXT, masked: false, payload: Buffer.alloc(1) }), /before the fragmented one ended/);
});

test('ws-codec: acceptKey, close payloads, encoder arguments', () => {
  // RFC 6455 §1.3's worked example.
  assert.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  assert.deepEqual(parseClose(closePayload(1001, 'going')), { code: 1001, reason: 'going' });
  assert.deepEqual(parseClose(Buffer.alloc(0)), { reason: '' });
  assert.throws(() => parseClose(Buffer.alloc(1)), WsProtocolError);
  const long = closePayload(1000, 'é'.repeat(100));
  assert.ok(long.length <= 125, 'a close reason is cut to the control-frame limit');
  assert.ok(!long.subarray(2).toString().includes('\uFFFD'), 'and not in the middle of a character');
  assert.throws(() => encodeFrame(16, 'x'), RangeError);
  assert.throws(() => encodeFrame(OP.TEXT, 'x', { mask: Buffer.alloc(3) }), RangeError);
  assert.throws(() => encodeFrame(OP.TEXT, 'x', { rsv: 8 }), RangeError);
  const masked = encodeFrame(OP.TEXT, 'abcd', { mask: MASK });
  assert.deepEqual([...masked.subarray(0, 6)], [0x81, 0x84, ...MASK]);
  assert.deepEqual([...masked.subarray(6)], [...Buffer.from('abcd')].map((c, i) => c ^ MASK[i]!));
});

/**
 * A TCP relay between a ws client and a ws server on loopback that keeps what passes each way,
 * so the parser reads bytes another implementation wrote.
 */
async function tapped(run: (ws: WebSocket) => Promise<void>): Promise<{ up: Buffer; down: Buffer }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  wss.on('connection', (s) => {
    s.on('message', (data, isBinary) => s.send(data as Buffer, { binary: isBinary }));
    s.on('ping', () => {});
  });
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const tap = net.createServer((c) => {
    const u = net.connect((wss.address() as net.AddressInfo).port, '127.0.0.1');
    c.on('data', (b) => up.push(Buffer.from(b)));
    u.on('data', (b) => down.push(Buffer.from(b)));
    c.pipe(u);
    u.pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  tap.listen(0, '127.0.0.1');
  await once(tap, 'listening');
  const ws = new WebSocket(`ws://127.0.0.1:${(tap.address() as net.AddressInfo).port}/`, { perMessageDeflate: false });
  try {
    await once(ws, 'open');
    await run(ws);
    ws.close(1000, 'done');
    await once(ws, 'close');
  } finally {
    ws.terminate();
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
    tap.close();
  }
  return { up: Buffer.concat(up), down: Buffer.concat(down) };
}

function afterHandshake(b: Buffer): Buffer {
  const i = b.indexOf('\r\n\r\n');
  assert.ok(i > 0, 'handshake seen');
  return b.subarray(i + 4);
}

test('ws-codec: reads what the ws library writes, both directions, client frames masked', { timeout: 20_000 }, async () => {
  const messages = [bytes(5), bytes(200), bytes(70_000), Buffer.from('text ✓')];
  const { up, down } = await tapped(async (ws) => {
    for (const m of messages) {
      const echoed = once(ws, 'message');
      ws.send(m, { binary: m.length !== 8 });
      await echoed;
    }
    ws.ping(Buffer.from('hb'));
    ws.send(bytes(100, 7), { fin: false });
    ws.send(bytes(100, 8), { fin: true });
    await once(ws, 'message');
  });
  const handshake = up.subarray(0, up.indexOf('\r\n\r\n')).toString();
  const key = /sec-websocket-key: (.+)/i.exec(handshake)![1]!.trim();
  assert.match(down.toString('latin1'), new RegExp(`Sec-WebSocket-Accept: ${acceptKey(key).replace(/[+/]/g, '\\$&')}`));
  assert.equal(acceptKey(key), createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64'));

  const read = (wire: Buffer, requireMask: boolean) => {
    const frames = new WsFrameParser({ requireMask }).push(wire);
    const a = new WsMessageAssembler();
    return frames.map((f) => a.push(f)).filter((m) => m !== null);
  };
  const sent = read(afterHandshake(up), true);
  const echoed = read(afterHandshake(down), false);
  const joined = Buffer.concat([bytes(100, 7), bytes(100, 8)]);
  const dataOf = (ms: { opcode: number; data: Buffer }[]) => ms.filter((m) => m.opcode === OP.BINARY || m.opcode === OP.TEXT).map((m) => m.data);
  assert.deepEqual(dataOf(sent), [...messages, joined]);
  assert.deepEqual(dataOf(echoed), [...messages, joined]);
  assert.ok(sent.some((m) => m.opcode === OP.PING && m.data.toString() === 'hb'));
  assert.ok(echoed.some((m) => m.opcode === OP.PONG && m.data.toString() === 'hb'), 'ws answers the ping');
  const close = sent.find((m) => m.opcode === OP.CLOSE)!;
  assert.deepEqual(parseClose(close.data), { code: 1000, reason: 'done' });
  // And randomly chunked, the same.
  const wire = afterHandshake(up);
  const p = new WsFrameParser({ requireMask: true });
  const frames: WsFrame[] = [];
  for (let i = 0; i < wire.length; ) {
    const n = 1 + (randomBytes(1)[0]! % 97);
    frames.push(...p.push(wire.subarray(i, i + n)));
    i += n;
  }
  assert.deepEqual(frames, new WsFrameParser({ requireMask: true }).push(wire));
});
