import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, OP, closePayload } from '../../src/protocols/http/ws-codec.ts';
import {
  EXEC_SUBPROTOCOLS,
  exitFromStatus,
  KubeExecObserver,
  KubePortForwardObserver,
  parseExecQuery,
  parsePortForwardQuery,
  parseResize,
  type KubeStreamEvent,
} from '../../src/protocols/http/kube-stream.ts';

let maskSeed = 0;
/** Client frames are masked, each with a different key, as a browser or client-go does. */
function nextMask(): Buffer {
  maskSeed = (maskSeed * 1103515245 + 12345 + 7) >>> 0;
  const m = Buffer.alloc(4);
  m.writeUInt32BE(maskSeed);
  return m;
}

const msg = (channel: number, data: Buffer | string) => Buffer.concat([Buffer.from([channel]), Buffer.from(data)]);
const client = (channel: number, data: Buffer | string, opcode: number = OP.BINARY) => encodeFrame(opcode, msg(channel, data), { mask: nextMask() });
const server = (channel: number, data: Buffer | string, opcode: number = OP.BINARY) => encodeFrame(opcode, msg(channel, data));
const clientClose = (code = 1000) => encodeFrame(OP.CLOSE, closePayload(code, 'bye'), { mask: nextMask() });
const serverClose = (code = 1000) => encodeFrame(OP.CLOSE, closePayload(code, ''));

const EXIT3 = JSON.stringify({
  metadata: {},
  status: 'Failure',
  message: 'command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3',
  reason: 'NonZeroExitCode',
  details: { causes: [{ reason: 'ExitCode', message: '3' }] },
});

/** Data events of one type joined (pieces may split them), and the others in order. */
function summarize(events: KubeStreamEvent[]): { stdin: string; stdout: string; stderr: string; other: KubeStreamEvent[] } {
  const s = { stdin: '', stdout: '', stderr: '', other: [] as KubeStreamEvent[] };
  for (const e of events) {
    if (e.type === 'stdin' || e.type === 'stdout' || e.type === 'stderr') s[e.type] += e.data.toString('latin1');
    else s.other.push(e);
  }
  return s;
}

/** Feeds both directions, client first, each split into two at `cut` (clamped). */
function run(protocol: string, up: Buffer, down: Buffer, cut = Infinity) {
  const o = new KubeExecObserver(protocol);
  const events: KubeStreamEvent[] = [];
  for (const [wire, side] of [[up, 'client'], [down, 'server']] as const) {
    const c = Math.min(cut, wire.length);
    for (const part of [wire.subarray(0, c), wire.subarray(c)]) events.push(...(side === 'client' ? o.fromClient(part) : o.fromServer(part)));
  }
  events.push(...o.end());
  return { o, events };
}

test('kube-stream: a v5 exec session, split at every byte, gives the same events', () => {
  const up = Buffer.concat([client(0, 'ls -l\n'), client(4, '{"Width":120,"Height":40}'), client(0, 'exit 3\n'), encodeFrame(OP.BINARY, Buffer.from([255, 0]), { mask: nextMask() }), clientClose()]);
  const down = Buffer.concat([server(1, 'total 0\n'), server(2, 'warning: x\n'), server(1, 'done\n'), server(3, EXIT3), encodeFrame(OP.BINARY, Buffer.from([255, 3])), serverClose()]);
  const upCopy = Buffer.from(up);
  const downCopy = Buffer.from(down);
  const want = {
    stdin: 'ls -l\nexit 3\n',
    stdout: 'total 0\ndone\n',
    stderr: 'warning: x\n',
    other: [
      { type: 'resize', cols: 120, rows: 40 },
      { type: 'close-channel', channel: 0, from: 'client' },
      { type: 'closed', from: 'client', code: 1000, reason: 'bye' },
      { type: 'exit', code: 3, status: 'Failure', message: 'command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3' },
      { type: 'close-channel', channel: 3, from: 'server' },
      { type: 'closed', from: 'server', code: 1000 },
    ],
  };
  for (let cut = 0; cut <= Math.max(up.length, down.length); cut++) {
    const { o, events } = run('v5.channel.k8s.io', up, down, cut);
    assert.deepEqual(summarize(events), want, `cut ${cut}`);
    assert.ok(o.done);
  }
  // Byte by byte as well.
  const o = new KubeExecObserver('v5.channel.k8s.io');
  const events: KubeStreamEvent[] = [];
  for (let i = 0; i < up.length; i++) events.push(...o.fromClient(up.subarray(i, i + 1)));
  for (let i = 0; i < down.length; i++) events.push(...o.fromServer(down.subarray(i, i + 1)));
  assert.deepEqual(summarize(events), want);
  assert.ok(up.equals(upCopy) && down.equals(downCopy), 'the observer never alters the bytes it is shown');
  assert.equal(o.channelBytes('client').get(0), 'ls -l\nexit 3\n'.length);
  assert.equal(o.channelBytes('server').get(1), 'total 0\ndone\n'.length);
});

test('kube-stream: large and fragmented messages stream through in pieces', () => {
  const big = Buffer.alloc(300_000, 'y');
  const frag = Buffer.concat([
    encodeFrame(OP.BINARY, Buffer.from([1]), { fin: false }),
    encodeFrame(OP.CONTINUATION, 'part one, ', { fin: false }),
    encodeFrame(OP.PING, 'hb'),
    encodeFrame(OP.CONTINUATION, 'part two'),
  ]);
  const down = Buffer.concat([server(1, big), frag, server(2, 'e')]);
  const o = new KubeExecObserver('v4.channel.k8s.io');
  const events: KubeStreamEvent[] = [];
  let largest = 0;
  for (let i = 0; i < down.length; i += 16 * 1024) {
    const ev = o.fromServer(down.subarray(i, i + 16 * 1024));
    for (const e of ev) if (e.type === 'stdout') largest = Math.max(largest, e.data.length);
    events.push(...ev);
  }
  const s = summarize(events);
  assert.equal(s.stdout, big.toString('latin1') + 'part one, part two');
  assert.equal(s.stderr, 'e');
  assert.ok(largest <= 16 * 1024, `no event carries more than a pushed chunk (largest ${largest})`);
  assert.ok(events.filter((e) => e.type === 'stdout').length > 10, 'delivered in pieces, not held back');
});

test('kube-stream: exit status as client-go reads it', () => {
  assert.deepEqual(exitFromStatus('{"metadata":{},"status":"Success"}'), { code: 0, status: 'Success' });
  assert.deepEqual(exitFromStatus(EXIT3)?.code, 3);
  assert.deepEqual(exitFromStatus(EXIT3.replace('"3"', '"255"'))?.code, 255);
  assert.deepEqual(exitFromStatus(EXIT3.replace('"3"', '"256"'))?.code, null, 'exit codes are 8-bit');
  assert.deepEqual(exitFromStatus(EXIT3.replace('"3"', '"-1"'))?.code, null);
  assert.deepEqual(exitFromStatus(EXIT3.replace('NonZeroExitCode', 'InternalError'))?.code, null);
  assert.deepEqual(exitFromStatus('{"status":"Failure","reason":"InternalError","message":"container not found (\\"app\\")"}'), { code: null, status: 'Failure', message: 'container not found ("app")' });
  assert.equal(exitFromStatus('{"status":'), null);
  assert.equal(exitFromStatus('[1]'), null);
  assert.equal(exitFromStatus('null'), null);

  // v4: success arrives on the error channel; a Status split over two messages is waited for.
  let r = run('v4.channel.k8s.io', Buffer.alloc(0), Buffer.concat([server(1, 'hi\n'), server(3, '{"metadata":{},"status":"Succ'), server(3, 'ess"}'), serverClose()]));
  assert.deepEqual(summarize(r.events).other, [{ type: 'exit', code: 0, status: 'Success' }, { type: 'closed', from: 'server', code: 1000 }]);
  // v4: a Status cut off by the end of the stream is still reported, without a code.
  r = run('v4.channel.k8s.io', Buffer.alloc(0), server(3, '{"status":"Fail'));
  assert.deepEqual(summarize(r.events).other, [{ type: 'exit', code: null, status: 'Failure', message: '{"status":"Fail' }]);
});

test('kube-stream: before v4 the error channel is text and success is silence', () => {
  for (const p of ['channel.k8s.io', 'v2.channel.k8s.io', 'v3.channel.k8s.io', '']) {
    let r = run(p, client(0, 'x'), Buffer.concat([server(1, 'out'), server(3, 'command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2'), serverClose()]));
    assert.deepEqual(summarize(r.events).other[0], { type: 'exit', code: 2, status: 'Failure', message: 'command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2' }, p);
    r = run(p, client(0, 'x'), Buffer.concat([server(1, 'out'), serverClose()]));
    assert.deepEqual(summarize(r.events).other, [{ type: 'exit', code: 0 }, { type: 'closed', from: 'server', code: 1000 }], p);
    // v5's close message means nothing here: channel 255 is ignored.
    r = run(p, encodeFrame(OP.BINARY, Buffer.from([255, 0]), { mask: nextMask() }), Buffer.alloc(0));
    assert.deepEqual(r.events, [], p);
  }
});

test('kube-stream: base64 variants decode text frames cut anywhere', () => {
  const b64 = (channel: number, data: string, mask?: Buffer) => encodeFrame(OP.TEXT, String(channel) + Buffer.from(data).toString('base64'), mask ? { mask } : {});
  const up = Buffer.concat([b64(0, 'echo héllo\n', nextMask()), b64(4, '{"Width":80,"Height":24}', nextMask())]);
  const down = Buffer.concat([b64(1, 'héllo\n'), b64(2, 'ab'), b64(3, '{"metadata":{},"status":"Success"}')]);
  for (let cut = 0; cut <= down.length; cut++) {
    const { events } = run('v4.base64.channel.k8s.io', up, down, cut);
    assert.deepEqual(summarize(events), {
      stdin: Buffer.from('echo héllo\n').toString('latin1'),
      stdout: Buffer.from('héllo\n').toString('latin1'),
      stderr: 'ab',
      other: [{ type: 'resize', cols: 80, rows: 24 }, { type: 'exit', code: 0, status: 'Success' }],
    }, `cut ${cut}`);
  }
  // Invalid base64 skips that message only, and says so.
  const bad = run('base64.channel.k8s.io', encodeFrame(OP.TEXT, '0!!!!' , { mask: nextMask() }), Buffer.concat([encodeFrame(OP.TEXT, '1QQ==QQ=='), b64(1, 'ok')]));
  assert.deepEqual(summarize(bad.events).stdout, 'ok');
  assert.deepEqual(bad.events.filter((e) => e.type === 'error').map((e) => e.type === 'error' && [e.from, e.fatal]), [['client', false], ['server', false]]);
});

test('kube-stream: a framing error is reported once, stops observing, and never throws', () => {
  const o = new KubeExecObserver('v5.channel.k8s.io');
  assert.deepEqual(o.fromClient(client(0, 'a')).map((e) => e.type), ['stdin']);
  const unmasked = server(0, 'sneaky');
  const ev = o.fromClient(unmasked);
  assert.equal(ev.length, 1);
  assert.equal(ev[0]!.type, 'error');
  assert.ok(ev[0]!.type === 'error' && ev[0]!.fatal && /not masked/.test(ev[0]!.message) && ev[0]!.from === 'client');
  assert.deepEqual(o.fromClient(client(0, 'b')), [], 'nothing more is read');
  assert.deepEqual(o.fromServer(server(1, 'c')), []);
  assert.ok(o.done);

  // A masked server frame, an over-long control frame, garbage: all events, never exceptions.
  for (const wire of [encodeFrame(OP.BINARY, 'x', { mask: nextMask() }), encodeFrame(OP.PING, Buffer.alloc(200)), Buffer.from('HTTP/1.1 200 OK\r\n\r\n')]) {
    const p = new KubeExecObserver('v4.channel.k8s.io');
    const e = p.fromServer(wire);
    assert.equal(e.length, 1);
    assert.ok(e[0]!.type === 'error' && e[0]!.fatal);
  }
  // An exit seen before the error is not lost.
  const q = new KubeExecObserver('v4.channel.k8s.io');
  q.fromServer(server(3, '{"status":"Fail'));
  assert.deepEqual(q.fromServer(Buffer.from([0xff, 0xff])).map((e) => e.type), ['exit', 'error']);
});

test('kube-stream: an unknown subprotocol is said once and then relayed unobserved', () => {
  for (const p of ['SPDY/3.1+portforward.k8s.io', 'v6.channel.k8s.io', 'v3.base64.channel.k8s.io', 'chat']) {
    const o = new KubeExecObserver(p);
    const ev = o.fromClient(client(0, 'a'));
    assert.equal(ev.length, 1, p);
    assert.ok(ev[0]!.type === 'error' && ev[0]!.fatal && ev[0]!.message.includes(p));
    assert.deepEqual(o.fromServer(server(1, 'b')), []);
    assert.equal(o.version, null);
  }
  for (const p of EXEC_SUBPROTOCOLS) assert.notEqual(new KubeExecObserver(p).version, null, p);
  assert.equal(new KubeExecObserver('v5.channel.k8s.io').version, 5);
});

test('kube-stream: resize and close messages are checked and bounded', () => {
  assert.deepEqual(parseResize('{"Width":1,"Height":2}'), { cols: 1, rows: 2 });
  assert.equal(parseResize('{"Width":-1,"Height":2}'), null);
  assert.equal(parseResize('{"Width":1.5,"Height":2}'), null);
  assert.equal(parseResize('{"Width":70000,"Height":2}'), null);
  assert.equal(parseResize('{"width":1,"height":2}'), null);
  const up = Buffer.concat([client(4, 'not json'), client(4, '{"Width":1,"Height":1,"pad":"' + 'x'.repeat(5000) + '"}'), client(4, '{"Width":3,"Height":4}'), encodeFrame(OP.BINARY, Buffer.from([255, 0, 1]), { mask: nextMask() }), encodeFrame(OP.BINARY, Buffer.from([255]), { mask: nextMask() })]);
  const { events } = run('v5.channel.k8s.io', up, Buffer.alloc(0));
  assert.deepEqual(events.map((e) => (e.type === 'error' ? `error:${e.fatal}` : e.type)), ['error:false', 'error:false', 'resize', 'error:false', 'error:false']);
  assert.deepEqual(events[2], { type: 'resize', cols: 3, rows: 4 });
  // Channels a side does not write are ignored, as the API server ignores them.
  const r = run('v5.channel.k8s.io', Buffer.concat([client(1, 'fake stdout'), client(3, 'fake status'), client(9, 'x')]), Buffer.concat([server(0, 'fake stdin'), server(4, '{"Width":1,"Height":1}'), server(7, 'x')]));
  assert.deepEqual(r.events, []);
  // A message with no channel byte says nothing.
  assert.deepEqual(run('v5.channel.k8s.io', encodeFrame(OP.BINARY, Buffer.alloc(0), { mask: nextMask() }), encodeFrame(OP.BINARY, Buffer.alloc(0))).events, []);
});

test('kube-stream: port-forward counts bytes per port from the channel pairs', () => {
  const le = (port: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(port);
    return b;
  };
  const down = Buffer.concat([
    server(0, le(8080)),
    server(1, le(8080)),
    // the port prefix and data in one message, and a prefix split across two
    server(2, Buffer.concat([le(9090), Buffer.from('hello')])),
    server(3, le(9090).subarray(0, 1)),
    server(3, Buffer.concat([le(9090).subarray(1), Buffer.from('connection refused')])),
    server(0, Buffer.alloc(1000, 1)),
    serverClose(),
  ]);
  const up = Buffer.concat([client(0, Buffer.alloc(300, 2)), client(2, Buffer.alloc(50, 3)), client(1, 'ignored: the server reads no error channel from the client')]);
  for (let cut = 0; cut <= down.length; cut += 7) {
    const o = new KubePortForwardObserver('v4.channel.k8s.io', [8080, 9090]);
    const ev: KubeStreamEvent[] = [...o.fromClient(up), ...o.fromServer(down.subarray(0, cut)), ...o.fromServer(down.subarray(cut)), ...o.end()];
    assert.deepEqual(ev, [
      { type: 'port', port: 8080, channel: 0 },
      { type: 'port', port: 9090, channel: 2 },
      { type: 'port-error', port: 9090, message: 'connection refused' },
      { type: 'closed', from: 'server', code: 1000 },
    ], `cut ${cut}`);
    assert.deepEqual(o.stats(), [
      { index: 0, port: 8080, sent: 300, received: 1000, errors: 0 },
      { index: 1, port: 9090, sent: 50, received: 5, errors: 1 },
    ]);
  }
  // Without the request's ports, the server's announcement names them; a mismatch is reported.
  const o = new KubePortForwardObserver('portforward.k8s.io');
  o.fromServer(server(2, le(5432)));
  assert.equal(o.stats()[1]!.port, 5432);
  const m = new KubePortForwardObserver('v4.channel.k8s.io', [1111]);
  assert.deepEqual(m.fromServer(server(0, le(2222))).map((e) => e.type), ['error', 'port']);
  // Channel numbers past the bound are not tracked (no unbounded table from a hostile peer).
  const h = new KubePortForwardObserver('v4.channel.k8s.io');
  h.fromServer(server(250, le(1)));
  assert.equal(h.stats().length, 0);
});

test('parseExecQuery and parsePortForwardQuery read the query as the API server does', () => {
  assert.deepEqual(parseExecQuery(new URLSearchParams('command=sh&command=-c&command=echo%20a%26b&container=app&stdin=true&stdout=true&stderr=true&tty=true')), {
    command: ['sh', '-c', 'echo a&b'],
    container: 'app',
    stdin: true,
    stdout: true,
    stderr: true,
    tty: true,
  });
  assert.deepEqual(parseExecQuery(new URLSearchParams('command=id&stdout=1&stderr=false&tty=0&stdin=')), { command: ['id'], stdin: true, stdout: true, stderr: false, tty: false });
  assert.deepEqual(parseExecQuery(new URLSearchParams('')), { command: [], stdin: false, stdout: false, stderr: false, tty: false });
  assert.deepEqual(parseExecQuery(new URLSearchParams('stdout=FALSE&container=')), { command: [], stdin: false, stdout: false, stderr: false, tty: false });
  assert.deepEqual(parsePortForwardQuery(new URLSearchParams('ports=8080,9090&ports=5432')), [8080, 9090, 5432]);
  assert.deepEqual(parsePortForwardQuery(new URLSearchParams('ports=0,65536,abc,80')), [80]);
  assert.equal(parsePortForwardQuery(new URLSearchParams('ports=' + '1,'.repeat(10_000))).length, 64);
});
