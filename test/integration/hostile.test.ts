/**
 * Hostile clients against the real gateway (child process) with a real TLS PostgreSQL
 * behind it, over raw loopback sockets to the gateway's postgres port.
 *
 * For every kind of abuse the gateway must answer with a protocol error where it can
 * (ErrorResponse with SQLSTATE 08P01) or simply close; it must close the connection within
 * a bounded time; it must stay up and keep serving normal clients; and its memory and file
 * descriptors must stay bounded over thousands of such connections.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import pg from 'pg';
import { startPostgres, skipUnlessAvailable, findBinary } from '../helpers/postgres.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { prng } from '../helpers/random.ts';

const AUTH_TIMEOUT_S = 2;
/** How long the gateway may take to close a connection once the hostile act is done. */
const CLOSE_WITHIN_MS = 5000;
/** Stalled connections wait for the auth timeout first. */
const STALL_CLOSE_WITHIN_MS = AUTH_TIMEOUT_S * 1000 + CLOSE_WITHIN_MS;

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const PROTOCOL_3 = 196608;

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

const rng = prng;

function randomBytesSeeded(seed: number, n: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
}

/** A startup-phase packet with a correct length prefix around `body` (protocol code included by the caller). */
function untyped(body: Buffer): Buffer {
  return Buffer.concat([int32(body.length + 4), body]);
}

function startupPacket(params: [string, string][]): Buffer {
  const parts = [int32(PROTOCOL_3)];
  for (const [k, v] of params) parts.push(Buffer.from(`${k}\0${v}\0`));
  parts.push(Buffer.from([0]));
  return untyped(Buffer.concat(parts));
}

/** A typed message header claiming `length` (which counts itself) and nothing else. */
function typedHeader(type: string, length: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(length | 0, 1);
  return b;
}

interface BackendMessage {
  type: string;
  body: Buffer;
}

/** Splits backend bytes into typed messages; a trailing partial message is reported as `rest`. */
function parseMessages(bytes: Buffer): { messages: BackendMessage[]; rest: Buffer } {
  const messages: BackendMessage[] = [];
  let off = 0;
  while (bytes.length - off >= 5) {
    const len = bytes.readInt32BE(off + 1);
    if (len < 4 || bytes.length - off - 1 < len) break;
    messages.push({ type: String.fromCharCode(bytes[off]!), body: bytes.subarray(off + 5, off + 1 + len) });
    off += 1 + len;
  }
  return { messages, rest: bytes.subarray(off) };
}

/** ErrorResponse fields by their one-letter codes ('C' = SQLSTATE, 'M' = message, ...). */
function errorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const code = String.fromCharCode(body[off]!);
    const end = body.indexOf(0, off + 1);
    if (end < 0) break;
    out[code] = body.toString('utf8', off + 1, end);
    off = end + 1;
  }
  return out;
}

interface Reply {
  /** SQLSTATEs of the ErrorResponses received, in order */
  codes: string[];
  /** types of every complete message received */
  types: string[];
  /** bytes that did not parse as typed messages */
  junk: number;
}

function describeReply(bytes: Buffer): Reply {
  const { messages, rest } = parseMessages(bytes);
  return {
    codes: messages.filter((m) => m.type === 'E').map((m) => errorFields(m.body).C ?? '?'),
    types: messages.map((m) => m.type),
    junk: rest.length,
  };
}

function vmRssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// A raw client connection that records everything it receives and when it closed
// ---------------------------------------------------------------------------

class RawConn {
  readonly chunks: Buffer[] = [];
  /** decrypted bytes when the connection was upgraded to TLS */
  readonly tlsChunks: Buffer[] = [];
  closedAt: number | null = null;
  readonly closed: Promise<void>;
  private listeners: (() => void)[] = [];
  tls: tls.TLSSocket | null = null;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', this.onData);
    sock.on('error', () => {}); // resets are an accepted way for the gateway to close
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.closedAt = Date.now();
        resolve();
      }),
    );
  }

  static open(port: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host: '127.0.0.1' });
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new RawConn(sock));
      });
      sock.once('error', reject);
    });
  }

  private readonly onData = (d: Buffer) => {
    this.chunks.push(d);
    for (const l of this.listeners) l();
  };

  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get receivedTls(): Buffer {
    return Buffer.concat(this.tlsChunks);
  }

  /** Writes, ignoring errors (the gateway may already have hung up). */
  write(b: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.sock.destroyed || !this.sock.writable) return resolve();
      this.sock.write(b, () => resolve());
    });
  }

  /** Waits until at least n bytes arrived (or the connection closed, or ms passed). */
  waitBytes(n: number, ms: number): Promise<Buffer> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.received.length >= n || this.closedAt !== null) finish();
      };
      const finish = () => {
        clearTimeout(t);
        this.listeners = this.listeners.filter((l) => l !== check);
        resolve(this.received);
      };
      const t = setTimeout(finish, ms);
      this.listeners.push(check);
      void this.closed.then(check);
      check();
    });
  }

  /** True if the gateway closed the connection within ms; otherwise destroys it and returns false. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
    clearTimeout(timer);
    if (!ok) this.destroy();
    return ok;
  }

  /** Sends SSLRequest, expects 'S', and runs the TLS handshake over this socket. */
  async upgrade(): Promise<tls.TLSSocket> {
    await this.write(SSL_REQUEST);
    const b = await this.waitBytes(1, CLOSE_WITHIN_MS);
    assert.equal(b.toString('latin1'), 'S', 'gateway should accept SSLRequest');
    this.sock.off('data', this.onData);
    const t = tls.connect({ socket: this.sock, rejectUnauthorized: false });
    t.on('data', (d: Buffer) => this.tlsChunks.push(d));
    t.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    this.tls = t;
    return t;
  }

  destroy(): void {
    this.tls?.destroy();
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// The hostile acts. Each returns what the client saw; the checks are shared.
// ---------------------------------------------------------------------------

type Expect =
  /** an ErrorResponse with 08P01 must arrive, then close */
  | 'protocol-error'
  /** either nothing, or only ErrorResponses whose codes are in `codes`; then close */
  | 'error-or-close'
  /** the client hung up itself: only the gateway's survival is checked */
  | 'client-gone';

interface Outcome {
  kind: string;
  expect: Expect;
  /** bytes to parse as typed backend messages (plaintext or decrypted) */
  reply: Buffer;
  /** also acceptable besides 08P01, for fuzz inputs that may parse as something else */
  alsoAccept?: string[];
  closed: boolean;
  closeMs: number;
  /** raw bytes that are not typed messages (e.g. TLS records) are allowed */
  opaque?: boolean;
}

interface Ctx {
  port: number;
  clientHello: Buffer;
  /** pg.Client config for an authenticated client */
  pgConfig: pg.ClientConfig;
}

type Act = (ctx: Ctx, seed: number) => Promise<Outcome>;

/** Sends `bytes` on a fresh connection and waits for the gateway to close it. */
async function sendAndWait(ctx: Ctx, kind: string, bytes: Buffer, expect: Expect, within = CLOSE_WITHIN_MS, alsoAccept?: string[]): Promise<Outcome> {
  const c = await RawConn.open(ctx.port);
  await c.write(bytes);
  const t0 = Date.now();
  const closed = await c.closedWithin(within);
  return { kind, expect, reply: c.received, closed, closeMs: (c.closedAt ?? Date.now()) - t0, alsoAccept };
}

/** Random bytes: the first four decide the "length"; anything may follow. */
const randomGarbage: Act = (ctx, seed) => {
  const r = rng(seed);
  const sizes = [1, 3, 4, 5, 8, 64, 1000, 4096, 10_001, 65_536];
  const n = sizes[Math.floor(r() * sizes.length)]!;
  const bytes = randomBytesSeeded(seed, n);
  // Fewer than 4 bytes, or a plausible length with too few bytes behind it, make the
  // gateway wait for the rest until the auth timeout.
  return sendAndWait(ctx, `random-${n}`, bytes, 'error-or-close', STALL_CLOSE_WITHIN_MS, ['0A000']);
};

/** A correct length prefix and random contents: exercises the startup packet decoder. */
const randomFramedStartup: Act = (ctx, seed) => {
  const r = rng(seed);
  const n = 4 + Math.floor(r() * 2000);
  const body = randomBytesSeeded(seed, n);
  // Half the time a valid protocol code, so the parameter decoder sees the random part.
  if (r() < 0.5) body.writeInt32BE(PROTOCOL_3, 0);
  // A parse that happens to succeed is refused for lacking TLS (28000) or a user (28000).
  return sendAndWait(ctx, `random-framed-${n}`, untyped(body), 'error-or-close', CLOSE_WITHIN_MS, ['0A000', '28000']);
};

const badLength =
  (len: number): Act =>
  (ctx) =>
    sendAndWait(ctx, `startup-length-${len}`, Buffer.concat([int32(len), int32(PROTOCOL_3), Buffer.alloc(8)]), 'protocol-error');

/** Correctly framed, but far too many parameters (and so too long for a startup packet). */
const tooManyParams =
  (count: number): Act =>
  (ctx) => {
    const params: [string, string][] = [];
    for (let i = 0; i < count; i++) params.push([`p${i}`, 'v']);
    return sendAndWait(ctx, `startup-${count}-params`, startupPacket(params), 'protocol-error');
  };

/** Garbage in the same segment as the SSLRequest (bytes that would bypass TLS). */
const sslThenInlineGarbage: Act = (ctx, seed) =>
  sendAndWait(ctx, 'ssl+inline-garbage', Buffer.concat([SSL_REQUEST, randomBytesSeeded(seed, 64)]), 'protocol-error');

/** The gateway said 'S', and the client sends garbage instead of a ClientHello. */
const sslThenGarbage: Act = async (ctx, seed) => {
  const c = await RawConn.open(ctx.port);
  await c.write(SSL_REQUEST);
  const s = await c.waitBytes(1, CLOSE_WITHIN_MS);
  assert.equal(s.toString('latin1', 0, 1), 'S');
  const garbage = seed % 2 ? Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n') : randomBytesSeeded(seed, 512);
  // Some garbage is a plausible TLS record header announcing more bytes; the handshake then
  // waits for them until the auth timeout.
  await c.write(garbage);
  const t0 = Date.now();
  const closed = await c.closedWithin(STALL_CLOSE_WITHIN_MS);
  // TLS was agreed on: whatever follows 'S' may be a TLS alert, so it is opaque.
  return { kind: 'ssl+garbage-after-S', expect: 'error-or-close', reply: c.received.subarray(1), opaque: true, closed, closeMs: (c.closedAt ?? Date.now()) - t0 };
};

/** TLS is up, then random bytes instead of a startup packet. */
const tlsThenGarbage: Act = async (ctx, seed) => {
  const c = await RawConn.open(ctx.port);
  const t = await c.upgrade();
  t.write(Buffer.concat([int32(-1 - (seed % 1000)), randomBytesSeeded(seed, 100)]));
  const t0 = Date.now();
  const closed = await c.closedWithin(CLOSE_WITHIN_MS);
  return { kind: 'tls+garbage', expect: 'protocol-error', reply: c.receivedTls, closed, closeMs: (c.closedAt ?? Date.now()) - t0 };
};

/** Half a startup packet, then the client hangs up. */
const halfStartupThenDestroy: Act = async (ctx) => {
  const c = await RawConn.open(ctx.port);
  const p = startupPacket([['user', 'someone'], ['database', 'main']]);
  await c.write(p.subarray(0, p.length >> 1));
  c.destroy();
  return { kind: 'half-startup+destroy', expect: 'client-gone', reply: Buffer.alloc(0), closed: true, closeMs: 0 };
};

/** Half a startup packet, then silence: the auth timeout must end it. */
const halfStartupThenStall: Act = async (ctx) => {
  const c = await RawConn.open(ctx.port);
  const p = startupPacket([['user', 'someone'], ['database', 'main']]);
  await c.write(p.subarray(0, p.length >> 1));
  const t0 = Date.now();
  const closed = await c.closedWithin(STALL_CLOSE_WITHIN_MS);
  return { kind: 'half-startup+stall', expect: 'protocol-error', reply: c.received, closed, closeMs: (c.closedAt ?? Date.now()) - t0 };
};

/** SSLRequest accepted, half a real ClientHello, then the client hangs up. */
const halfTlsThenDestroy: Act = async (ctx) => {
  const c = await RawConn.open(ctx.port);
  await c.write(SSL_REQUEST);
  await c.waitBytes(1, CLOSE_WITHIN_MS);
  await c.write(ctx.clientHello.subarray(0, ctx.clientHello.length >> 1));
  c.destroy();
  return { kind: 'half-tls+destroy', expect: 'client-gone', reply: Buffer.alloc(0), closed: true, closeMs: 0 };
};

/** A whole ClientHello (the gateway answers with its ServerHello), then the client hangs up. */
const clientHelloThenDestroy: Act = async (ctx) => {
  const c = await RawConn.open(ctx.port);
  await c.write(SSL_REQUEST);
  await c.waitBytes(1, CLOSE_WITHIN_MS);
  await c.write(ctx.clientHello);
  await c.waitBytes(2, 1000);
  c.destroy();
  return { kind: 'client-hello+destroy', expect: 'client-gone', reply: Buffer.alloc(0), closed: true, closeMs: 0 };
};

/** Half a ClientHello, then silence: the handshake must time out. */
const halfTlsThenStall: Act = async (ctx) => {
  const c = await RawConn.open(ctx.port);
  await c.write(SSL_REQUEST);
  await c.waitBytes(1, CLOSE_WITHIN_MS);
  await c.write(ctx.clientHello.subarray(0, ctx.clientHello.length >> 1));
  const t0 = Date.now();
  const closed = await c.closedWithin(STALL_CLOSE_WITHIN_MS);
  return { kind: 'half-tls+stall', expect: 'error-or-close', reply: c.received.subarray(1), opaque: true, closed, closeMs: (c.closedAt ?? Date.now()) - t0 };
};

/** SCRAM sent in plaintext by a client that never asked for TLS: refused before auth. */
const plaintextStartup: Act = (ctx) =>
  sendAndWait(ctx, 'plaintext-startup', startupPacket([['user', 'agent'], ['database', 'main']]), 'error-or-close', CLOSE_WITHIN_MS, ['28000']);

/**
 * An authenticated pg.Client (TLS + SCRAM) writes a hostile message through its own TLS
 * stream. The decrypted bytes that arrive afterwards are parsed, and pg's own error is kept.
 */
function postAuth(kind: string, payload: (seed: number) => Buffer): Act {
  return async (ctx, seed) => {
    const client = new pg.Client({ ...ctx.pgConfig, connectionTimeoutMillis: 10_000 });
    const errors: string[] = [];
    client.on('error', (e: any) => errors.push(e.code ?? e.message));
    await client.connect();
    const stream = (client as any).connection.stream as tls.TLSSocket;
    const after: Buffer[] = [];
    stream.on('data', (d: Buffer) => after.push(d));
    const closedP = new Promise<void>((r) => stream.once('close', () => r()));
    const t0 = Date.now();
    stream.write(payload(seed));
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([closedP.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), CLOSE_WITHIN_MS)))]);
    clearTimeout(timer);
    const closeMs = Date.now() - t0;
    if (!closed) stream.destroy();
    await client.end().catch(() => {});
    const reply = Buffer.concat(after);
    // pg parsed the same ErrorResponse: its code must agree with ours.
    const ours = describeReply(reply).codes;
    if (ours.length && errors.length && !errors.includes(ours[0]!)) {
      return { kind: `${kind} (pg saw ${errors.join(',')}, bytes say ${ours.join(',')})`, expect: 'protocol-error', reply: Buffer.alloc(0), closed, closeMs };
    }
    return { kind, expect: 'protocol-error', reply, closed, closeMs };
  };
}

/** A typed message claiming 2^31-1 bytes right after authentication. */
const postAuthHugeLength = postAuth('post-auth-length-int32-max', () => Buffer.concat([typedHeader('Q', 0x7fffffff), Buffer.from('select 1')]));
/** A negative length. */
const postAuthNegativeLength = postAuth('post-auth-length-negative', () => typedHeader('Q', -5));
/** A message type the protocol does not have. */
const postAuthUnknownType = postAuth('post-auth-unknown-type', (seed) => {
  const types = 'zyw!~\x00\xff';
  const type = types[seed % types.length]!;
  return Buffer.concat([Buffer.from([type.charCodeAt(0)]), int32(4 + 5), Buffer.from('hello')]);
});

// ---------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------

/** Returns a problem description, or null when the outcome is acceptable. */
function judge(o: Outcome): string | null {
  if (o.expect === 'client-gone') return null;
  if (!o.closed) return `${o.kind}: gateway did not close the connection in time (${o.closeMs} ms)`;
  const r = describeReply(o.reply);
  const accepted = new Set(['08P01', ...(o.alsoAccept ?? [])]);
  if (o.expect === 'protocol-error') {
    if (r.codes.length === 0) return `${o.kind}: expected an ErrorResponse 08P01, got ${o.reply.length} bytes (types ${JSON.stringify(r.types)})`;
    if (!r.codes.every((c) => accepted.has(c))) return `${o.kind}: unexpected SQLSTATE(s) ${r.codes.join(',')}`;
    return null;
  }
  // error-or-close
  if (o.opaque) {
    // TLS was agreed on ('S'): from then on only TLS records (e.g. an alert, 0x15) may be
    // sent, never a plaintext message.
    if (o.reply.length && !(o.reply[0]! >= 0x14 && o.reply[0]! <= 0x17)) {
      return `${o.kind}: after 'S' the gateway sent non-TLS bytes ${JSON.stringify(o.reply.subarray(0, 40).toString('latin1'))}`;
    }
    return null;
  }
  if (r.junk) return `${o.kind}: ${r.junk} bytes that are not backend messages`;
  if (r.types.some((t) => t !== 'E')) return `${o.kind}: unexpected message types ${JSON.stringify(r.types)}`;
  if (!r.codes.every((c) => accepted.has(c))) return `${o.kind}: unexpected SQLSTATE(s) ${r.codes.join(',')}`;
  return null;
}

/** A ClientHello as Node's TLS client sends it, captured from a throwaway local listener. */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(Buffer.from(d));
        s.destroy();
        srv.close();
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'localhost' });
      c.on('error', () => {});
    });
    srv.on('error', reject);
  });
}

async function checkStillServes(gw: GatewayUnderTest, key: string, user: string): Promise<void> {
  const pid = gw.pid();
  assert.ok(pid && alive(pid), 'gateway process should still be running');
  const client = new pg.Client({ ...gw.pgConfig(user, key), connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const r = await client.query('select 40 + 2 as n');
    assert.equal(r.rows[0].n, 42);
  } finally {
    await client.end();
  }
  const psql = findBinary('psql');
  if (psql) {
    const out = execFileSync(psql, [gw.dsn(user, key), '-Atc', "select 'still ' || 'up'"], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(out.trim(), 'still up');
  }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

test('hostile clients: protocol errors or close, bounded time, gateway stays up, memory bounded', { timeout: 15 * 60_000 }, async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'psql')) return;
  const pgs = await startPostgres({ ssl: true });
  t.after(() => pgs.stop());
  const gw = await startGateway({ target: pgs, extra: { limits: { authTimeoutSeconds: AUTH_TIMEOUT_S } } });
  t.after(() => gw.stop());
  const key = await gw.createKey('agent-hostile');
  const pid = gw.pid()!;
  const ctx: Ctx = { port: gw.pgPort, clientHello: await captureClientHello(), pgConfig: gw.pgConfig('agent-hostile', key) };
  assert.equal(ctx.clientHello[0], 0x16, 'captured bytes should be a TLS handshake record');

  await checkStillServes(gw, key, 'agent-hostile');

  await t.test('each hostile kind on its own', async () => {
    const cases: [Act, number][] = [
      ...[1, 2, 3, 4, 5, 6, 7, 8].map((seed): [Act, number] => [randomGarbage, seed]),
      ...[11, 12, 13, 14, 15, 16].map((seed): [Act, number] => [randomFramedStartup, seed]),
      [badLength(2 ** 31), 0],
      [badLength(2 ** 31 - 1), 0],
      [badLength(-1), 0],
      [badLength(-(2 ** 31) + 1), 0],
      [badLength(7), 0],
      [badLength(0), 0],
      [badLength(10_001), 0],
      [tooManyParams(10_000), 0],
      // Fits in PostgreSQL's 10,000-byte startup bound, but over the parameter limit.
      [tooManyParams(1000), 0],
      [sslThenInlineGarbage, 21],
      [sslThenGarbage, 22],
      [sslThenGarbage, 23],
      [tlsThenGarbage, 24],
      [halfStartupThenDestroy, 0],
      [halfStartupThenStall, 0],
      [halfTlsThenDestroy, 0],
      [clientHelloThenDestroy, 0],
      [halfTlsThenStall, 0],
      [plaintextStartup, 0],
      [postAuthHugeLength, 0],
      [postAuthNegativeLength, 0],
      [postAuthUnknownType, 0],
      [postAuthUnknownType, 3],
    ];
    const problems: string[] = [];
    const results = await Promise.all(cases.map(([act, seed]) => act(ctx, seed)));
    for (const o of results) {
      const p = judge(o);
      if (p) problems.push(p);
      const r = describeReply(o.reply);
      const what = o.opaque ? `${o.reply.length} bytes after 'S'` : `ErrorResponse codes [${r.codes.join(',')}]`;
      t.diagnostic(`${o.kind}: ${o.closed ? `closed after ${o.closeMs} ms` : 'NOT closed'}; ${what}`);
    }
    assert.deepEqual(problems, []);
    // Kinds where the gateway can answer must answer with 08P01, not just close.
    for (const o of results.filter((x) => /^startup-|^ssl\+inline|^tls\+garbage|^post-auth|^half-startup\+stall/.test(x.kind))) {
      assert.ok(describeReply(o.reply).codes.includes('08P01'), `${o.kind} should get ErrorResponse 08P01`);
    }
    await checkStillServes(gw, key, 'agent-hostile');
  });

  await t.test('2,000 hostile connections in a row, at most 50 at a time', async () => {
    const TOTAL = 2000;
    const CONCURRENCY = 50;
    // Weighted mix; the slow kinds (stalls wait for the auth timeout, post-auth ones log in
    // for real) are rarer so the run stays in the order of a minute.
    const mix: [Act, number][] = [
      [randomGarbage, 6],
      [randomFramedStartup, 4],
      [badLength(2 ** 31), 1],
      [badLength(2 ** 31 - 1), 1],
      [badLength(-7), 1],
      [badLength(7), 1],
      [tooManyParams(10_000), 1],
      [tooManyParams(1000), 1],
      [sslThenInlineGarbage, 2],
      [sslThenGarbage, 1],
      [tlsThenGarbage, 2],
      [halfStartupThenDestroy, 3],
      [halfTlsThenDestroy, 3],
      [clientHelloThenDestroy, 2],
      [halfStartupThenStall, 1],
      [halfTlsThenStall, 1],
      [plaintextStartup, 1],
      [postAuthHugeLength, 1],
      [postAuthUnknownType, 1],
    ];
    const bag: Act[] = mix.flatMap(([act, w]) => Array.from({ length: w }, () => act));
    const pick = rng(2000);

    // Warm up once (JIT, TLS session caches, pools) so the baseline is not the cold process.
    await Promise.all(bag.map((act, i) => act(ctx, 10_000 + i)));
    await sleep(AUTH_TIMEOUT_S * 1000 + 1500);
    const rssBefore = vmRssKb(pid);
    const fdsBefore = openFds(pid);
    let rssPeak = rssBefore;
    const sampler = setInterval(() => {
      try {
        rssPeak = Math.max(rssPeak, vmRssKb(pid));
      } catch {
        // the gateway died; asserted below
      }
    }, 100);

    const started = Date.now();
    const problems: string[] = [];
    const byKind = new Map<string, number>();
    let next = 0;
    let maxInFlight = 0;
    let inFlight = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= TOTAL) return;
        const act = bag[Math.floor(pick() * bag.length)]!;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          const o = await act(ctx, i + 1);
          const kind = o.kind.replace(/-(-?\d+)$/, '');
          byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
          const p = judge(o);
          if (p) problems.push(`#${i}: ${p}`);
        } catch (e) {
          problems.push(`#${i}: ${(e as Error).message}`);
        } finally {
          inFlight--;
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const elapsed = Date.now() - started;
    clearInterval(sampler);

    assert.ok(alive(pid), 'gateway process died during the run');
    const rssAfter = vmRssKb(pid);
    // Destroyed-by-client connections and stalls are released by the gateway's timers.
    await sleep(AUTH_TIMEOUT_S * 1000 + 2000);
    const rssSettled = vmRssKb(pid);
    const fdsAfter = openFds(pid);

    const mb = (kb: number) => (kb / 1024).toFixed(1);
    const summary =
      `${TOTAL} hostile connections in ${(elapsed / 1000).toFixed(1)} s (max ${maxInFlight} in flight); ` +
      `VmRSS before ${mb(rssBefore)} MB, peak ${mb(rssPeak)} MB, after ${mb(rssAfter)} MB, settled ${mb(rssSettled)} MB ` +
      `(growth ${mb(rssAfter - rssBefore)} MB); open fds before ${fdsBefore}, after ${fdsAfter}`;
    t.diagnostic(summary);
    t.diagnostic(`mix: ${[...byKind].map(([k, n]) => `${k}=${n}`).join(' ')}`);
    console.log(`# hostile: ${summary}`);

    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problem(s)`);
    assert.ok(maxInFlight <= CONCURRENCY);
    assert.ok(rssAfter - rssBefore < 100 * 1024, `RSS grew by ${mb(rssAfter - rssBefore)} MB (limit 100 MB)`);
    // Every connection the gateway accepted has been released (a few fds of slack for the
    // store, timers and the pg connection checkStillServes may have left in TIME_WAIT).
    assert.ok(fdsAfter <= fdsBefore + 5, `gateway holds ${fdsAfter - fdsBefore} more fds than before the run`);

    await checkStillServes(gw, key, 'agent-hostile');
  });
});
