/**
 * Hostile clients against the gateway's MySQL port (the real gateway as a child process, a real
 * MariaDB behind it), over raw loopback sockets. The client side is written here from the
 * protocol documentation, not with the gateway's own codec, so a shared misreading cannot hide.
 *
 * Every act gets either an ERR packet (the code asserted) and then a close, or just a close,
 * within a bounded time; afterwards the gateway still serves a normal client, and its memory
 * and file descriptors stay bounded. test/integration/mysql.test.ts already covers a login
 * packet cut short in its fixed part (ERR 1835) and the commands the relay does not support;
 * these are not repeated here. test/integration/hostile.test.ts is the PostgreSQL equivalent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import mysql from 'mysql2/promise';
import { mariadbMissing } from '../helpers/mariadb.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { startMariadbBounded } from '../helpers/mysql-suite.ts';
import { prng } from '../helpers/random.ts';

const AUTH_TIMEOUT_S = 3;
/** How long the gateway may take to answer and close once the hostile act is done. */
const CLOSE_WITHIN_MS = 5000;
/** Stalled handshakes wait for the auth timeout first. */
const STALL_CLOSE_WITHIN_MS = AUTH_TIMEOUT_S * 1000 + CLOSE_WITHIN_MS;

// Capability flags (MySQL protocol documentation, "Capabilities Flags").
const CLIENT_LONG_PASSWORD = 0x1;
const CLIENT_CONNECT_WITH_DB = 0x8;
const CLIENT_PROTOCOL_41 = 0x200;
const CLIENT_SSL = 0x800;
const CLIENT_TRANSACTIONS = 0x2000;
const CLIENT_SECURE_CONNECTION = 0x8000;
const CLIENT_MULTI_RESULTS = 0x20000;
const CLIENT_PLUGIN_AUTH = 0x80000;
const CLIENT_CONNECT_ATTRS = 0x100000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000;
const CAPS =
  CLIENT_LONG_PASSWORD | CLIENT_CONNECT_WITH_DB | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_RESULTS | CLIENT_PLUGIN_AUTH | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

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

/** One physical packet: int<3> length, int<1> sequence id, payload. */
function packet(seq: number, payload: Buffer, length = payload.length): Buffer {
  const h = Buffer.alloc(4);
  h.writeUIntLE(length, 0, 3);
  h[3] = seq & 0xff;
  return Buffer.concat([h, payload]);
}

function le32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** SSLRequest: the first 32 bytes of a HandshakeResponse41. */
function sslRequest(): Buffer {
  return Buffer.concat([le32(CAPS), le32(1 << 24), Buffer.from([45]), Buffer.alloc(23)]);
}

function nativeScramble(password: string, scramble: Buffer): Buffer {
  const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();
  const s1 = sha1(Buffer.from(password));
  const s2 = sha1(Buffer.concat([scramble, sha1(s1)]));
  return Buffer.from(s1.map((x, i) => x ^ s2[i]!));
}

function handshakeResponse(user: string, authResponse: Buffer, database: string): Buffer {
  return Buffer.concat([
    le32(CAPS),
    le32(1 << 24),
    Buffer.from([45]),
    Buffer.alloc(23),
    Buffer.from(`${user}\0`),
    Buffer.from([authResponse.length]),
    authResponse,
    Buffer.from(`${database}\0`),
    Buffer.from('mysql_native_password\0'),
  ]);
}

/** The 20-byte scramble of a HandshakeV10 payload. */
function greetingScramble(p: Buffer): Buffer {
  assert.equal(p[0], 10, 'protocol version 10');
  let off = p.indexOf(0, 1) + 1; // server version
  off += 4; // connection id
  const part1 = p.subarray(off, off + 8);
  off += 8 + 1; // filler
  off += 2 + 1 + 2 + 2; // capabilities (low), charset, status, capabilities (high)
  off += 1 + 10; // auth data length, reserved
  const part2 = p.subarray(off, off + 12);
  return Buffer.concat([part1, part2]);
}

interface Pkt {
  seq: number;
  payload: Buffer;
}

/** Splits bytes into packets; a trailing partial packet is reported as `rest` bytes. */
function parsePackets(bytes: Buffer): { packets: Pkt[]; rest: number } {
  const packets: Pkt[] = [];
  let off = 0;
  while (bytes.length - off >= 4) {
    const len = bytes.readUIntLE(off, 3);
    if (bytes.length - off - 4 < len) break;
    packets.push({ seq: bytes[off + 3]!, payload: bytes.subarray(off + 4, off + 4 + len) });
    off += 4 + len;
  }
  return { packets, rest: bytes.length - off };
}

function errOf(p: Buffer): { code: number; sqlState: string; message: string } | null {
  if (p[0] !== 0xff || p.length < 3) return null;
  const code = p.readUInt16LE(1);
  if (p[3] === 0x23) return { code, sqlState: p.toString('latin1', 4, 9), message: p.toString('utf8', 9) };
  return { code, sqlState: '', message: p.toString('utf8', 3) };
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
// A raw client connection that records what it receives and when it closed
// ---------------------------------------------------------------------------

class RawConn {
  private readonly chunks: Buffer[] = [];
  closedAt: number | null = null;
  readonly closed: Promise<void>;
  private listeners: (() => void)[] = [];
  private stream: net.Socket | tls.TLSSocket;

  private constructor(readonly sock: net.Socket) {
    this.stream = sock;
    sock.on('data', this.onData);
    sock.on('error', () => {}); // a reset is an accepted way for the gateway to close
    this.closed = new Promise((resolve) =>
      sock.once('close', () => {
        this.closedAt = Date.now();
        resolve();
        for (const l of this.listeners) l();
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

  /** Bytes received (decrypted once TLS is on) and not yet consumed by next(). */
  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Writes, ignoring errors (the gateway may already have hung up). */
  write(b: Buffer): Promise<void> {
    return new Promise((resolve) => {
      const s = this.stream;
      if (s.destroyed || !s.writable) return resolve();
      s.write(b, () => resolve());
    });
  }

  /** Waits until `pred` holds for the bytes received, the connection closed, or ms passed. */
  waitFor(pred: (b: Buffer) => boolean, ms: number): Promise<Buffer> {
    return new Promise((resolve) => {
      const check = () => {
        if (pred(this.received) || this.closedAt !== null) finish();
      };
      const finish = () => {
        clearTimeout(t);
        this.listeners = this.listeners.filter((l) => l !== check);
        resolve(this.received);
      };
      const t = setTimeout(finish, ms);
      this.listeners.push(check);
      check();
    });
  }

  /** The next whole packet (consumed), or null if none arrived within ms. */
  async next(ms: number): Promise<Pkt | null> {
    const b = await this.waitFor((x) => parsePackets(x).packets.length > 0, ms);
    const { packets } = parsePackets(b);
    if (!packets.length) return null;
    const p = packets[0]!;
    const rest = b.subarray(4 + p.payload.length);
    this.chunks.length = 0;
    if (rest.length) this.chunks.push(Buffer.from(rest));
    return { seq: p.seq, payload: Buffer.from(p.payload) };
  }

  /** True if the gateway closed the connection within ms; otherwise destroys it and returns false. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
    clearTimeout(timer);
    if (!ok) this.destroy();
    return ok;
  }

  /** SSLRequest (with `seq`), then the TLS handshake over this socket; later reads are decrypted. */
  async startTls(seq = 1): Promise<void> {
    await this.write(packet(seq, sslRequest()));
    this.sock.off('data', this.onData);
    const t = tls.connect({ socket: this.sock, rejectUnauthorized: false });
    t.on('data', this.onData);
    t.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
      this.closed.then(() => reject(new Error('closed during the TLS handshake')));
    });
    this.stream = t;
  }

  destroy(): void {
    this.stream.destroy();
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------
// The hostile acts
// ---------------------------------------------------------------------------

interface Ctx {
  port: number;
  user: string;
  key: string;
}

type Expect =
  /** an ERR with one of `codes` must arrive, then the gateway closes */
  | 'err'
  /** nothing, or only ERR packets with one of `codes`; then the gateway closes */
  | 'err-or-close'
  /** the gateway keeps waiting for the rest of a packet: nothing arrives, and it holds the
   *  connection until the client goes (the client closes after a while) */
  | 'waits'
  /** one ERR with one of `codes`, and the session goes on (not closed) */
  | 'answered'
  /** the client hung up itself: only the gateway's survival and its resources are checked */
  | 'client-gone';

interface Outcome {
  kind: string;
  expect: Expect;
  codes?: number[];
  /** bytes received after the greeting (or after the login OK) */
  reply: Buffer;
  closed: boolean;
  closeMs: number;
}

/** Connects and reads the greeting; returns the connection and the greeting's scramble. */
async function greeted(ctx: Ctx): Promise<{ c: RawConn; scramble: Buffer }> {
  const c = await RawConn.open(ctx.port);
  const g = await c.next(CLOSE_WITHIN_MS);
  assert.ok(g, 'the gateway should greet');
  assert.equal(g.seq, 0);
  return { c, scramble: greetingScramble(g.payload) };
}

/** A complete, correct login over TLS; returns the connection after the OK. */
async function loggedIn(ctx: Ctx): Promise<RawConn> {
  const { c, scramble } = await greeted(ctx);
  await c.startTls(1);
  await c.write(packet(2, handshakeResponse(ctx.user, nativeScramble(ctx.key, scramble), 'maria')));
  const ok = await c.next(15_000);
  assert.ok(ok, 'login answer');
  assert.equal(ok.payload[0], 0x00, `login should succeed, got ${JSON.stringify(errOf(ok.payload))}`);
  assert.equal(ok.seq, 3);
  return c;
}

async function finish(c: RawConn, kind: string, expect: Expect, within: number, codes?: number[]): Promise<Outcome> {
  const t0 = Date.now();
  if (expect === 'waits') {
    // Nothing may come back while the gateway waits for the rest of the packet.
    await sleep(1000);
    const reply = c.received;
    const closed = c.closedAt !== null;
    c.destroy();
    return { kind, expect, codes, reply, closed, closeMs: Date.now() - t0 };
  }
  const closed = await c.closedWithin(within);
  return { kind, expect, codes, reply: c.received, closed, closeMs: (c.closedAt ?? Date.now()) - t0 };
}

/** Random bytes instead of a login: whatever they look like, ERR or close, bounded by the auth timeout. */
const garbageBeforeLogin = async (ctx: Ctx, seed: number): Promise<Outcome> => {
  const sizes = [1, 3, 4, 5, 36, 100, 1000, 4096, 70_000, 200_000];
  const n = sizes[seed % sizes.length]!;
  const { c } = await greeted(ctx);
  await c.write(randomBytesSeeded(seed, n));
  // 1153 too large, 1835 malformed, 3159 not TLS, 1158 auth timeout (fewer bytes than the
  // announced length), 1156 out of order, 1045 access denied (a parse that happens to work).
  return finish(c, `garbage-before-login-${n}`, 'err-or-close', STALL_CLOSE_WITHIN_MS, [1153, 1835, 3159, 1158, 1156, 1045, 2013]);
};

/** A header announcing 2^24-1 bytes (which also means "more packets follow"), then close or garbage. */
const hugeHeaderBeforeLogin =
  (then: 'close' | 'garbage') =>
  async (ctx: Ctx, seed: number): Promise<Outcome> => {
    const { c } = await greeted(ctx);
    const bytes = [packet(1, Buffer.alloc(0), 0xffffff)];
    if (then === 'garbage') bytes.push(randomBytesSeeded(seed, 64 * 1024));
    await c.write(Buffer.concat(bytes));
    if (then === 'close') c.sock.end(); // half-close: the gateway may still answer
    // The handshake packet bound is far below 16 MiB: refused from the header alone.
    return finish(c, `huge-header-before-login+${then}`, 'err', CLOSE_WITHIN_MS, [1153]);
  };

/** SSLRequest with a wrong sequence id (must be 1). */
const wrongSeqSslRequest = async (ctx: Ctx): Promise<Outcome> => {
  const { c } = await greeted(ctx);
  await c.write(packet(7, sslRequest()));
  return finish(c, 'wrong-seq-ssl-request', 'err', CLOSE_WITHIN_MS, [1156]);
};

/** After TLS, a correct HandshakeResponse41 with a wrong sequence id (must be 2). */
const wrongSeqLogin = async (ctx: Ctx): Promise<Outcome> => {
  const { c, scramble } = await greeted(ctx);
  await c.startTls(1);
  await c.write(packet(9, handshakeResponse(ctx.user, nativeScramble(ctx.key, scramble), 'maria')));
  return finish(c, 'wrong-seq-login', 'err', CLOSE_WITHIN_MS, [1156]);
};

/** After TLS, login packets whose variable part announces absurd lengths. */
const absurdLogin =
  (variant: number) =>
  async (ctx: Ctx): Promise<Outcome> => {
    const { c } = await greeted(ctx);
    await c.startTls(1);
    const fixed = Buffer.concat([le32(CAPS | CLIENT_CONNECT_ATTRS), le32(1 << 24), Buffer.from([45]), Buffer.alloc(23)]);
    const user = Buffer.from(`${ctx.user}\0`);
    const variants: Buffer[] = [
      // auth response: lenenc 0xfe + 8-byte length 2^63, nothing behind it
      Buffer.concat([fixed, user, Buffer.from([0xfe, 0, 0, 0, 0, 0, 0, 0, 0x80])]),
      // auth response: lenenc 0xfc 0xffff (65535 bytes), 3 bytes present
      Buffer.concat([fixed, user, Buffer.from([0xfc, 0xff, 0xff, 1, 2, 3])]),
      // user name without its terminating NUL, 60 KB long
      Buffer.concat([fixed, Buffer.alloc(60_000, 0x61)]),
      // valid up to the plugin, then connection attributes announcing 2^32 bytes
      Buffer.concat([fixed, user, Buffer.from([0]), Buffer.from('maria\0mysql_native_password\0'), Buffer.from([0xfe, 0, 0, 0, 0, 1, 0, 0, 0])]),
      // connection attributes whose inner key length overruns the attribute block
      Buffer.concat([fixed, user, Buffer.from([0]), Buffer.from('maria\0mysql_native_password\0'), Buffer.from([4, 0xfc, 0xff, 0x7f, 0x61])]),
    ];
    await c.write(packet(2, variants[variant]!));
    // 1835 malformed; 1045 if a decoder reads the packet as a (wrong) login instead
    return finish(c, `absurd-login-${variant}`, 'err', CLOSE_WITHIN_MS, [1835, 1045]);
  };

/** Half a login packet, then silence: the auth timeout ends it with an ERR. */
const stalledLogin = async (ctx: Ctx): Promise<Outcome> => {
  const { c } = await greeted(ctx);
  const p = packet(1, handshakeResponse(ctx.user, Buffer.alloc(20), 'maria'));
  await c.write(p.subarray(0, p.length >> 1));
  return finish(c, 'stalled-login', 'err', STALL_CLOSE_WITHIN_MS, [1158, 2013]);
};

/** A command with a sequence id other than 0. */
const wrongSeqAfterLogin = async (ctx: Ctx): Promise<Outcome> => {
  const c = await loggedIn(ctx);
  await c.write(packet(3, Buffer.from('\x03select 1', 'latin1')));
  return finish(c, 'wrong-seq-after-login', 'err', CLOSE_WITHIN_MS, [1156]);
};

/** After login, a header announcing 2^24-1 bytes and no body, then the client closes. */
const hugeHeaderAfterLoginClose = async (ctx: Ctx): Promise<Outcome> => {
  const c = await loggedIn(ctx);
  await c.write(packet(0, Buffer.alloc(0), 0xffffff));
  // The message bound (limits.maxMessageBytes, 64 MiB by default) allows it: the gateway waits
  // for the body and sends nothing; the client then goes away.
  return finish(c, 'huge-header-after-login+close', 'waits', CLOSE_WITHIN_MS);
};

/**
 * After login, a whole 2^24-1-byte packet of garbage (which says "more follows"), then a
 * continuation header with the wrong sequence id: ERR 1156 and close.
 */
const hugeHeaderAfterLoginGarbage = async (ctx: Ctx, seed: number): Promise<Outcome> => {
  const c = await loggedIn(ctx);
  const body = Buffer.alloc(0xffffff, 0xee);
  randomBytesSeeded(seed, 4096).copy(body, 1);
  await c.write(Buffer.concat([packet(0, body), packet(5, Buffer.from('junk'))]));
  return finish(c, 'huge-header-after-login+garbage', 'err', CLOSE_WITHIN_MS, [1156]);
};

/**
 * After login, random bytes, in three shapes (by seed): wholly random (the first three bytes
 * announce more than is sent, so the gateway waits for the rest and says nothing); a correct
 * length with a random sequence id other than 0 (ERR 1156, close); or a correct length, id 0
 * and a random command (COM_QUERY, COM_STMT_PREPARE or an unknown command byte) with random
 * contents: one ERR answer (refused by the guard as an unknown statement 1227, a syntax error
 * from the target 1064, unknown command 1047, malformed 1835), and the session goes on.
 */
const garbageAfterLogin = async (ctx: Ctx, seed: number): Promise<Outcome> => {
  const c = await loggedIn(ctx);
  const shape = seed % 3;
  const n = [16, 200, 5000][Math.floor(seed / 3) % 3]!;
  const bytes = randomBytesSeeded(seed, n);
  if (shape === 0) {
    bytes.writeUIntLE(Math.max(n, bytes.readUIntLE(0, 3)), 0, 3);
    await c.write(bytes);
    return finish(c, `garbage-after-login-${n}`, 'waits', CLOSE_WITHIN_MS);
  }
  bytes.writeUIntLE(n - 4, 0, 3);
  if (shape === 1) {
    bytes[3] = 1 + (bytes[3]! % 255);
    await c.write(bytes);
    return finish(c, `garbage-after-login-${n}-seq`, 'err', CLOSE_WITHIN_MS, [1156]);
  }
  bytes[3] = 0;
  bytes[4] = [0x03, 0x16, 0xee][seed % 9 < 3 ? 0 : seed % 9 < 6 ? 1 : 2]!;
  await c.write(bytes);
  const reply = await c.waitFor((b) => parsePackets(b).packets.length > 0, CLOSE_WITHIN_MS);
  await sleep(200); // nothing more may follow
  const o: Outcome = { kind: `garbage-after-login-${n}-cmd-0x${bytes[4]!.toString(16)}`, expect: 'answered', codes: [1227, 1064, 1047, 1835], reply: c.received, closed: c.closedAt !== null, closeMs: 0 };
  void reply;
  c.destroy();
  return o;
};

/** Half a login, then the client hangs up. */
const halfLoginThenDestroy = async (ctx: Ctx): Promise<Outcome> => {
  const { c } = await greeted(ctx);
  const p = packet(1, handshakeResponse(ctx.user, Buffer.alloc(20), 'maria'));
  await c.write(p.subarray(0, 20));
  c.destroy();
  return { kind: 'half-login+destroy', expect: 'client-gone', reply: Buffer.alloc(0), closed: true, closeMs: 0 };
};

/** What is wrong with an outcome, or null. */
function judge(o: Outcome): string | null {
  const { packets, rest } = parsePackets(o.reply);
  const errs = packets.map((p) => errOf(p.payload));
  const codes = errs.filter((e) => e !== null).map((e) => e!.code);
  switch (o.expect) {
    case 'client-gone':
      if (rest) return `${o.kind}: ${rest} bytes that are not whole packets`;
      return null;
    case 'waits':
      if (o.reply.length) return `${o.kind}: expected no answer while the gateway waits for the packet body, got ${o.reply.length} bytes ${JSON.stringify(codes)}`;
      if (o.closed) return `${o.kind}: the gateway closed instead of waiting for the packet body`;
      return null;
    case 'answered':
      if (o.closed) return `${o.kind}: the gateway closed the session after answering`;
      if (rest) return `${o.kind}: ${rest} bytes that are not whole packets`;
      if (packets.length !== 1 || !errs[0]) return `${o.kind}: expected one ERR packet, got ${packets.length} packets (${packets.map((p) => p.payload[0]).join(',')})`;
      if (!o.codes!.includes(errs[0].code)) return `${o.kind}: ERR ${errs[0].code} (${errs[0].message}), expected one of ${o.codes!.join(',')}`;
      return null;
    case 'err':
      if (!o.closed) return `${o.kind}: not closed within the bound`;
      if (rest) return `${o.kind}: ${rest} bytes that are not whole packets`;
      if (packets.length !== 1 || !errs[0]) return `${o.kind}: expected one ERR packet, got ${packets.length} packets (${packets.map((p) => p.payload[0]).join(',')})`;
      if (!o.codes!.includes(errs[0].code)) return `${o.kind}: ERR ${errs[0].code} (${errs[0].message}), expected one of ${o.codes!.join(',')}`;
      return null;
    case 'err-or-close':
      if (!o.closed) return `${o.kind}: not closed within the bound`;
      if (rest) return `${o.kind}: ${rest} bytes that are not whole packets`;
      if (errs.some((e) => e === null)) return `${o.kind}: a packet that is not an ERR`;
      if (!codes.every((c) => o.codes!.includes(c))) return `${o.kind}: unexpected ERR code(s) ${codes.join(',')}`;
      return null;
  }
}

function describe(o: Outcome): string {
  const { packets } = parsePackets(o.reply);
  const errs = packets.map((p) => errOf(p.payload)).filter((e) => e !== null);
  const what = errs.length ? `ERR ${errs.map((e) => `${e!.code} "${e!.message.slice(0, 80)}"`).join(', ')}` : packets.length ? `${packets.length} packets` : 'nothing';
  return `${o.kind}: ${what}; ${o.expect === 'waits' ? 'held open (waiting for the body)' : o.closed ? `closed after ${o.closeMs} ms` : 'NOT closed'}`;
}

async function checkStillServes(gw: GatewayUnderTest, user: string, key: string): Promise<void> {
  const pid = gw.pid();
  assert.ok(pid && alive(pid), 'gateway process should still be running');
  const c = await mysql.createConnection({ host: '127.0.0.1', port: gw.mysqlPort, user, password: key, database: 'maria', ssl: { rejectUnauthorized: false }, connectTimeout: 10_000 });
  try {
    const [rows] = await c.query('select 40 + 2 as n');
    assert.deepEqual(rows, [{ n: 42 }]);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

test('MySQL hostile clients: ERR or close, bounded time, the gateway keeps serving, memory and fds bounded', { timeout: 10 * 60_000 }, async (t) => {
  const missing = mariadbMissing();
  if (missing) return t.skip(missing);
  const maria = await startMariadbBounded({});
  t.after(() => maria.stop());
  const gw = await startGateway({
    mysql: true,
    extra: {
      limits: { authTimeoutSeconds: AUTH_TIMEOUT_S },
      connections: [{ name: 'maria', type: 'mysql', host: maria.host, port: maria.port, database: 'test', user: 'root', password: maria.password, tls: 'disable' }],
      // Random bytes that read as a statement are refused at once instead of held for review.
      policy: { default: { action: 'allow' }, rules: [{ name: 'no-unknown', match: { classes: ['unknown'] }, action: 'block' }] },
    },
  });
  t.after(() => gw.stop());
  const key = await gw.createKey('agent-hostile', { connections: 'maria' });
  const ctx: Ctx = { port: gw.mysqlPort!, user: 'agent-hostile', key };
  const pid = gw.pid()!;
  await checkStillServes(gw, ctx.user, key);

  await t.test('each hostile kind on its own', async () => {
    const cases: (() => Promise<Outcome>)[] = [
      ...[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((seed) => () => garbageBeforeLogin(ctx, seed)),
      () => hugeHeaderBeforeLogin('close')(ctx, 11),
      () => hugeHeaderBeforeLogin('garbage')(ctx, 12),
      () => wrongSeqSslRequest(ctx),
      () => wrongSeqLogin(ctx),
      ...[0, 1, 2, 3, 4].map((v) => () => absurdLogin(v)(ctx)),
      () => stalledLogin(ctx),
      () => wrongSeqAfterLogin(ctx),
      () => hugeHeaderAfterLoginClose(ctx),
      () => hugeHeaderAfterLoginGarbage(ctx, 13),
      ...[21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32].map((seed) => () => garbageAfterLogin(ctx, seed)),
      () => halfLoginThenDestroy(ctx),
    ];
    const results = await Promise.all(cases.map((c) => c()));
    const problems: string[] = [];
    for (const o of results) {
      t.diagnostic(describe(o));
      const p = judge(o);
      if (p) problems.push(p);
    }
    assert.deepEqual(problems, []);
    await checkStillServes(gw, ctx.user, key);
  });

  await t.test('1,000 hostile connections, at most 50 at a time; then 500 half-open ones', async () => {
    // Warm up once so the baseline is not the cold process.
    await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map((s) => garbageBeforeLogin(ctx, 100 + s)));
    await Promise.all([wrongSeqAfterLogin(ctx), garbageAfterLogin(ctx, 31), halfLoginThenDestroy(ctx)]);
    await sleep(2000);
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
    sampler.unref();
    const conns: RawConn[] = [];
    try {
      const mix: [(c: Ctx, seed: number) => Promise<Outcome>, number][] = [
        [garbageBeforeLogin, 8],
        [(c, s) => hugeHeaderBeforeLogin('close')(c, s), 2],
        [(c, s) => hugeHeaderBeforeLogin('garbage')(c, s), 2],
        [(c) => wrongSeqSslRequest(c), 1],
        [(c) => wrongSeqLogin(c), 1],
        [(c, s) => absurdLogin(s % 5)(c), 3],
        [(c) => wrongSeqAfterLogin(c), 1],
        [garbageAfterLogin, 2],
        [(c) => hugeHeaderAfterLoginClose(c), 1],
        [(c) => halfLoginThenDestroy(c), 4],
      ];
      const bag = mix.flatMap(([act, w]) => Array.from({ length: w }, () => act));
      const TOTAL = 1000;
      const CONCURRENCY = 50;
      const pick = rng(1000);
      const problems: string[] = [];
      let next = 0;
      const started = Date.now();
      const worker = async () => {
        for (;;) {
          const i = next++;
          if (i >= TOTAL) return;
          const act = bag[Math.floor(pick() * bag.length)]!;
          try {
            const p = judge(await act(ctx, 1000 + i));
            if (p) problems.push(`#${i}: ${p}`);
          } catch (e) {
            problems.push(`#${i}: ${(e as Error).message}`);
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const mixMs = Date.now() - started;
      assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problem(s)`);
      assert.ok(alive(pid), 'gateway process died during the run');

      // 500 half-open connections: greeted, then silent (half of them send half a login).
      const HALF_OPEN = 500;
      for (let i = 0; i < HALF_OPEN; i += 50) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(50, HALF_OPEN - i) }, async (_, j) => {
            const { c } = await greeted(ctx);
            if ((i + j) % 2) await c.write(packet(1, handshakeResponse(ctx.user, Buffer.alloc(20), 'maria')).subarray(0, 30));
            return c;
          }),
        );
        conns.push(...batch);
      }
      const fdsHalfOpen = openFds(pid);
      // While they are all open, a normal client is still served.
      await checkStillServes(gw, ctx.user, key);
      // The first half: the client closes (half of those with a FIN only: really half-open).
      const mine = conns.slice(0, HALF_OPEN / 2);
      mine.forEach((c, i) => (i % 2 ? c.destroy() : c.sock.end()));
      // The other half: left alone, the auth timeout must end every one with ERR 1158.
      const left = conns.slice(HALF_OPEN / 2);
      const outcomes = await Promise.all(left.map((c) => finish(c, 'half-open+timeout', 'err', STALL_CLOSE_WITHIN_MS, [1158])));
      const timeoutProblems = outcomes.map(judge).filter((p) => p !== null);
      assert.deepEqual(timeoutProblems.slice(0, 10), [], `${timeoutProblems.length} of ${left.length} half-open connections not ended by the auth timeout with ERR 1158`);
      // The ones the client half-closed must be closed by the gateway too.
      const halfClosed = mine.filter((_, i) => i % 2 === 0);
      const closedFlags = await Promise.all(halfClosed.map((c) => c.closedWithin(CLOSE_WITHIN_MS)));
      assert.equal(closedFlags.filter((x) => !x).length, 0, 'half-closed connections the gateway did not close');

      clearInterval(sampler);
      await sleep(1500);
      const rssAfter = vmRssKb(pid);
      const fdsAfter = openFds(pid);
      const mb = (kb: number) => (kb / 1024).toFixed(1);
      const summary =
        `${TOTAL} hostile connections in ${(mixMs / 1000).toFixed(1)} s; ${HALF_OPEN} half-open (gateway fds ${fdsHalfOpen} while open); ` +
        `VmRSS before ${mb(rssBefore)} MB, peak ${mb(rssPeak)} MB, after ${mb(rssAfter)} MB; fds before ${fdsBefore}, after ${fdsAfter}`;
      t.diagnostic(summary);
      console.log(`# mysql-hostile: ${summary}`);
      assert.ok(fdsHalfOpen >= fdsBefore + HALF_OPEN * 0.9, `the half-open connections should each hold an fd while open (${fdsHalfOpen} vs ${fdsBefore})`);
      assert.ok(rssAfter - rssBefore < 100 * 1024, `RSS grew by ${mb(rssAfter - rssBefore)} MB (limit 100 MB)`);
      // Every connection has been released (a little slack for the store, timers, and the
      // upstream connection of checkStillServes's session winding down).
      assert.ok(fdsAfter <= fdsBefore + 5, `gateway holds ${fdsAfter - fdsBefore} more fds than before the run`);
      await checkStillServes(gw, ctx.user, key);
    } finally {
      clearInterval(sampler);
      for (const c of conns) c.destroy();
    }
  });
});
