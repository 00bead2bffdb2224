/**
 * The kubelet's side of `kubectl port-forward` for the test API server: a SPDY/3.1 session
 * (https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/) carrying Kubernetes'
 * portforward.k8s.io protocol. For each local connection kubectl opens two streams with the
 * headers streamType (error | data), port and requestID; the data stream is joined to the
 * target's TCP port and a failure is written, as text, on the error stream. The session runs on
 * any byte stream: the raw socket of a `Upgrade: SPDY/3.1` request, or the Duplex of a WebSocket
 * whose binary messages carry the SPDY frames (kubectl's default "tunneling" mode).
 *
 * Only what kubectl uses: SYN_STREAM (answered by SYN_REPLY), DATA with FIN, RST_STREAM, PING
 * (echoed); SETTINGS, WINDOW_UPDATE, HEADERS, NOOP and GOAWAY are read and ignored. No flow
 * control is enforced (spdystream, kubectl's SPDY library, does not enforce it either).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import zlib from 'node:zlib';

/** kubectl sends DATA frames of at most 32 KiB (io.Copy's buffer); anything far larger is hostile. */
const MAX_FRAME = 1 << 20;
/** Compressed header bytes a session may send in all; each connection costs ~100. */
const MAX_HEADER_STREAM = 256 * 1024;
const MAX_HEADERS_INFLATED = 4 << 20;
const MAX_STREAMS = 1000;
/** the largest DATA frame sent: what kubectl itself sends */
const DATA_CHUNK = 32 * 1024;

const TYPE = { SYN_STREAM: 1, SYN_REPLY: 2, RST_STREAM: 3, SETTINGS: 4, NOOP: 5, PING: 6, GOAWAY: 7, HEADERS: 8, WINDOW_UPDATE: 9 } as const;
const FLAG_FIN = 0x01;
const RST_PROTOCOL_ERROR = 1;
const RST_REFUSED_STREAM = 3;

export const PORTFORWARD_PROTOCOL = 'portforward.k8s.io';
/** The WebSocket subprotocol of kubectl's SPDY-over-WebSocket tunnel. */
export const TUNNEL_SUBPROTOCOL = `SPDY/3.1+${PORTFORWARD_PROTOCOL}`;

/** The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1). */
export const SPDY3_DICTIONARY: Buffer = (() => {
  const words = [
    'options', 'head', 'post', 'put', 'delete', 'trace', 'accept', 'accept-charset', 'accept-encoding', 'accept-language',
    'accept-ranges', 'age', 'allow', 'authorization', 'cache-control', 'connection', 'content-base', 'content-encoding',
    'content-language', 'content-length', 'content-location', 'content-md5', 'content-range', 'content-type', 'date', 'etag',
    'expect', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since',
    'last-modified', 'location', 'max-forwards', 'pragma', 'proxy-authenticate', 'proxy-authorization', 'range', 'referer',
    'retry-after', 'server', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via', 'warning',
    'www-authenticate', 'method', 'get', 'status', '200 OK', 'version', 'HTTP/1.1', 'url', 'public', 'set-cookie', 'keep-alive',
    'origin',
  ];
  const tail =
    '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505' +
    '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized' +
    '403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable' +
    'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT' +
    'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,' +
    'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';
  const parts: Buffer[] = [];
  for (const w of words) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(w.length);
    parts.push(len, Buffer.from(w, 'latin1'));
  }
  parts.push(Buffer.from(tail, 'latin1'));
  return Buffer.concat(parts);
})();

export class SpdyProtocolError extends Error {
  constructor(message: string) {
    super(`SPDY protocol error: ${message}`);
    this.name = 'SpdyProtocolError';
  }
}

function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  for (const byte of buf) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/**
 * The server's header compressor. SPDY keeps one zlib stream per direction for the whole
 * session, which node:zlib's one-shot calls cannot continue; stored (uncompressed) deflate
 * blocks are valid zlib output that any inflater accepts, so header blocks are framed by hand.
 */
class HeaderWriter {
  private started = false;

  block(headers: Record<string, string>): Buffer {
    const pairs = Object.entries(headers);
    const parts: Buffer[] = [u32(pairs.length)];
    for (const [k, v] of pairs) {
      const name = Buffer.from(k.toLowerCase(), 'utf8');
      const value = Buffer.from(v, 'utf8');
      parts.push(u32(name.length), name, u32(value.length), value);
    }
    const raw = Buffer.concat(parts);
    if (raw.length > 0xffff) throw new SpdyProtocolError('a reply header block over 64 KiB');
    const out: Buffer[] = [];
    if (!this.started) {
      this.started = true;
      // zlib header: deflate, 32 KiB window, FDICT set, then the dictionary's Adler-32.
      out.push(Buffer.from([0x78, 0xbb]), u32(adler32(SPDY3_DICTIONARY)));
    }
    const stored = Buffer.alloc(5);
    stored[0] = 0x00; // BFINAL=0, BTYPE=00 (stored), padded to the byte boundary
    stored.writeUInt16LE(raw.length, 1);
    stored.writeUInt16LE(~raw.length & 0xffff, 3);
    // Then an empty stored block, as zlib's Z_SYNC_FLUSH writes: Go's inflater hands out what
    // it has only at a block boundary it can see, and would otherwise read past the frame.
    out.push(stored, raw, Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]));
    return Buffer.concat(out);
  }
}

/**
 * The client's header decompressor. The whole compressed stream so far is inflated again each
 * time (bounded by MAX_HEADER_STREAM) and the new output is what this block added: simple, and
 * synchronous, so frames are handled strictly in order.
 */
class HeaderReader {
  private compressed: Buffer[] = [];
  private compressedBytes = 0;
  private inflatedBytes = 0;

  read(block: Buffer): Map<string, string> {
    this.compressedBytes += block.length;
    if (this.compressedBytes > MAX_HEADER_STREAM) throw new SpdyProtocolError(`more than ${MAX_HEADER_STREAM} bytes of compressed headers in one session; open a new session`);
    this.compressed.push(block);
    let all: Buffer;
    try {
      all = zlib.inflateSync(Buffer.concat(this.compressed), { dictionary: SPDY3_DICTIONARY, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: MAX_HEADERS_INFLATED });
    } catch (err) {
      throw new SpdyProtocolError(`a header block does not decompress: ${(err as Error).message}`);
    }
    const fresh = all.subarray(this.inflatedBytes);
    this.inflatedBytes = all.length;
    return parseHeaderBlock(fresh);
  }
}

function parseHeaderBlock(b: Buffer): Map<string, string> {
  const headers = new Map<string, string>();
  let at = 0;
  const take = (): Buffer => {
    if (at + 4 > b.length) throw new SpdyProtocolError('a header block ends early');
    const len = b.readUInt32BE(at);
    at += 4;
    if (len > b.length - at) throw new SpdyProtocolError('a header length runs past its block');
    const v = b.subarray(at, at + len);
    at += len;
    return v;
  };
  if (b.length < 4) throw new SpdyProtocolError('a header block without its count');
  const count = b.readUInt32BE(0);
  at = 4;
  // Each pair takes at least 8 bytes: a count beyond that is a lie, not an allocation.
  if (count > (b.length - 4) / 8) throw new SpdyProtocolError(`a header block claims ${count} pairs in ${b.length} bytes`);
  for (let i = 0; i < count; i++) {
    const name = take().toString('utf8').toLowerCase();
    const value = take().toString('utf8');
    headers.set(name, value);
  }
  return headers;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function controlFrame(type: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(0x8000 | 3, 0);
  h.writeUInt16BE(type, 2);
  h[4] = flags;
  h.writeUIntBE(payload.length, 5, 3);
  return Buffer.concat([h, payload]);
}

function dataFrame(streamId: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(streamId & 0x7fffffff, 0);
  h[4] = flags;
  h.writeUIntBE(payload.length, 5, 3);
  return Buffer.concat([h, payload]);
}

/** What a session did, for tests to assert on. */
export interface PortForwardRecord {
  namespace: string;
  pod: string;
  /** "websocket" (SPDY tunneled in WebSocket) or "spdy" (a plain SPDY upgrade) */
  transport: 'websocket' | 'spdy';
  /** pod ports of the connections forwarded, in order */
  ports: number[];
  /** bytes from kubectl to the pod and back, over all connections */
  bytesIn: number;
  bytesOut: number;
  /** messages written on error streams */
  errors: string[];
  closed: boolean;
}

export interface PortForwardOptions {
  record: PortForwardRecord;
  /** the loopback port a pod port reaches, or null when nothing listens there */
  target(port: number): number | null;
  uid: string;
}

export interface PortForwardSession {
  /** ends the session and every forwarded connection at once */
  kill(): void;
}

interface Stream {
  id: number;
  kind: 'error' | 'data';
  requestId: string;
  port: number;
  /** kubectl sent FIN */
  remoteDone: boolean;
  /** we sent FIN */
  localDone: boolean;
  target: net.Socket | null;
}

/** Runs the portforward.k8s.io protocol over a SPDY/3.1 session on `conn` until either side ends. */
export function servePortForward(conn: Duplex, opts: PortForwardOptions): PortForwardSession {
  const rec = opts.record;
  const streams = new Map<number, Stream>();
  const byRequest = new Map<string, { error?: Stream; data?: Stream }>();
  const headerReader = new HeaderReader();
  const headerWriter = new HeaderWriter();
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let lastStreamId = 0;
  let dead = false;

  const write = (frame: Buffer): boolean => (dead || conn.destroyed ? false : conn.write(frame));

  const kill = () => {
    if (dead) return;
    dead = true;
    rec.closed = true;
    for (const s of streams.values()) s.target?.destroy();
    streams.clear();
    byRequest.clear();
    conn.destroy();
  };

  const fail = (err: Error) => {
    // GOAWAY (last good stream, PROTOCOL_ERROR) tells kubectl why before the session ends.
    const payload = Buffer.concat([u32(lastStreamId), u32(1)]);
    write(controlFrame(TYPE.GOAWAY, 0, payload));
    rec.errors.push(err.message);
    conn.end();
    setTimeout(kill, 100).unref();
  };

  const reset = (id: number, status: number) => write(controlFrame(TYPE.RST_STREAM, 0, Buffer.concat([u32(id), u32(status)])));

  const finish = (s: Stream) => {
    if (s.localDone) return;
    s.localDone = true;
    write(dataFrame(s.id, FLAG_FIN, Buffer.alloc(0)));
    forget(s);
  };

  const forget = (s: Stream) => {
    if (!s.localDone || !s.remoteDone) return;
    streams.delete(s.id);
    const pair = byRequest.get(s.requestId);
    if (pair && pair[s.kind] === s) delete pair[s.kind];
    if (pair && !pair.error && !pair.data) byRequest.delete(s.requestId);
  };

  /** Both streams of a connection are here: join the data stream to the target port. */
  const connect = (error: Stream, data: Stream) => {
    rec.ports.push(data.port);
    const port = opts.target(data.port);
    const failWith = (why: string) => {
      // The kubelet's wording, which kubectl prints after "an error occurred forwarding".
      const msg = `error forwarding port ${data.port} to pod ${rec.pod}, uid ${opts.uid}: ${why}`;
      rec.errors.push(msg);
      if (!error.localDone) write(dataFrame(error.id, 0, Buffer.from(msg)));
      finish(data);
      finish(error);
    };
    if (port === null) return failWith(`failed to connect to localhost:${data.port} inside namespace "${rec.namespace}": connection refused`);
    const sock = net.connect({ host: '127.0.0.1', port });
    data.target = sock;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => {
      rec.bytesOut += chunk.length;
      let ok = true;
      for (let i = 0; i < chunk.length; i += DATA_CHUNK) ok = write(dataFrame(data.id, 0, chunk.subarray(i, i + DATA_CHUNK)));
      if (!ok && !dead) {
        // kubectl reads slower than the target writes: stop reading the target until it drains.
        sock.pause();
        conn.once('drain', () => sock.resume());
      }
    });
    sock.on('end', () => {
      finish(data);
      finish(error);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (data.localDone) return;
      failWith(err.code === 'ECONNREFUSED' ? `failed to connect to localhost:${data.port} inside namespace "${rec.namespace}": connection refused` : err.message);
    });
    sock.on('close', () => {
      data.target = null;
      finish(data);
      finish(error);
    });
    if (data.remoteDone) sock.end();
  };

  const onSynStream = (payload: Buffer, flags: number) => {
    if (payload.length < 10) throw new SpdyProtocolError('a SYN_STREAM shorter than 10 bytes');
    const id = payload.readUInt32BE(0) & 0x7fffffff;
    const headers = headerReader.read(payload.subarray(10));
    // Client streams are odd and increase; anything else is refused, not trusted.
    if (id % 2 !== 1 || id <= lastStreamId) return void reset(id, RST_PROTOCOL_ERROR);
    lastStreamId = id;
    if (streams.size >= MAX_STREAMS) return void reset(id, RST_REFUSED_STREAM);
    const kind = headers.get('streamtype');
    const port = Number(headers.get('port'));
    const requestId = headers.get('requestid') ?? '';
    if ((kind !== 'error' && kind !== 'data') || !Number.isInteger(port) || port < 1 || port > 65535 || requestId.length > 64) {
      return void reset(id, RST_PROTOCOL_ERROR);
    }
    const s: Stream = { id, kind, requestId, port, remoteDone: (flags & FLAG_FIN) !== 0, localDone: false, target: null };
    const pair = byRequest.get(requestId) ?? {};
    if (pair[kind]) return void reset(id, RST_PROTOCOL_ERROR);
    streams.set(id, s);
    pair[kind] = s;
    byRequest.set(requestId, pair);
    write(controlFrame(TYPE.SYN_REPLY, 0, Buffer.concat([u32(id), headerWriter.block({})])));
    if (pair.error && pair.data) connect(pair.error, pair.data);
  };

  const onData = (id: number, flags: number, payload: Buffer) => {
    const s = streams.get(id);
    if (!s || s.remoteDone) return; // a stream already reset or finished: late bytes are dropped
    // kubectl opens the error stream first, so a data stream has its target before its first
    // byte; bytes for an unpaired data stream (a client that skips the error stream) are dropped.
    if (payload.length > 0 && s.kind === 'data') {
      rec.bytesIn += payload.length;
      if (s.target && !s.target.write(payload)) {
        // The target reads slower than kubectl writes: stop reading the session until it drains.
        conn.pause();
        s.target.once('drain', () => conn.resume());
      }
    }
    if (flags & FLAG_FIN) {
      s.remoteDone = true;
      s.target?.end();
      forget(s);
    }
  };

  const onRstStream = (payload: Buffer) => {
    if (payload.length < 8) throw new SpdyProtocolError('a RST_STREAM shorter than 8 bytes');
    const s = streams.get(payload.readUInt32BE(0) & 0x7fffffff);
    if (!s) return;
    s.target?.destroy();
    s.remoteDone = true;
    s.localDone = true;
    forget(s);
  };

  const onFrame = (frame: Buffer) => {
    const flags = frame[4];
    const payload = frame.subarray(8);
    if ((frame[0] & 0x80) === 0) return onData(frame.readUInt32BE(0) & 0x7fffffff, flags, payload);
    const version = frame.readUInt16BE(0) & 0x7fff;
    if (version !== 3) throw new SpdyProtocolError(`version ${version} (this server speaks SPDY/3.1)`);
    switch (frame.readUInt16BE(2)) {
      case TYPE.SYN_STREAM:
        return onSynStream(payload, flags);
      case TYPE.RST_STREAM:
        return onRstStream(payload);
      case TYPE.PING:
        if (payload.length !== 4) throw new SpdyProtocolError('a PING that is not 4 bytes');
        return void write(frame);
      case TYPE.HEADERS:
        // Never sent by kubectl, but its header block still advances the shared zlib stream.
        if (payload.length < 4) throw new SpdyProtocolError('a HEADERS frame shorter than 4 bytes');
        headerReader.read(payload.subarray(4));
        return;
      case TYPE.SYN_REPLY:
        throw new SpdyProtocolError('a SYN_REPLY for a stream this server never opened');
      default:
        // SETTINGS, NOOP, GOAWAY, WINDOW_UPDATE and unknown types: nothing to do.
        return;
    }
  };

  conn.on('data', (chunk: Buffer) => {
    if (dead) return;
    pending.push(chunk);
    pendingBytes += chunk.length;
    try {
      while (pendingBytes >= 8) {
        const head = pending.length === 1 ? pending[0] : Buffer.concat(pending);
        pending = [head];
        const length = head.readUIntBE(5, 3);
        if (length > MAX_FRAME) throw new SpdyProtocolError(`a ${length}-byte frame (at most ${MAX_FRAME})`);
        if (head.length < 8 + length) break;
        const frame = head.subarray(0, 8 + length);
        const rest = head.subarray(8 + length);
        pending = rest.length ? [rest] : [];
        pendingBytes = rest.length;
        onFrame(frame);
        if (dead) return;
      }
    } catch (err) {
      if (err instanceof SpdyProtocolError) return fail(err);
      throw err;
    }
  });
  conn.on('error', () => kill());
  conn.on('close', () => kill());
  conn.on('end', () => kill());

  return { kill };
}

// ---------------------------------------------------------------------------
// The "container" behind a forwarded port, and a client for it (tests only)
// ---------------------------------------------------------------------------

const MAX_ECHO_BODY = 8 << 20;

export interface HttpEcho {
  port: number;
  /** requests answered so far */
  served: number;
  close(): Promise<void>;
}

/**
 * An HTTP server on a loopback port that answers every request with its body, sent back as it
 * came, plus X-Echo-Bytes and X-Echo-Sha256 of what arrived; a request without a body gets
 * "echo METHOD URL". One connection per request (Connection: close), so each request is a new
 * forwarded connection.
 */
export async function startHttpEcho(): Promise<HttpEcho> {
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => {
      bytes += d.length;
      if (bytes > MAX_ECHO_BODY) return void req.destroy();
      hash.update(d);
      chunks.push(d);
    });
    req.on('end', () => {
      echo.served++;
      const body = bytes > 0 ? Buffer.concat(chunks) : Buffer.from(`echo ${req.method} ${req.url}\n`);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length, 'X-Echo-Bytes': String(bytes), 'X-Echo-Sha256': hash.digest('hex'), Connection: 'close' });
      res.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const echo: HttpEcho = {
    port: (server.address() as net.AddressInfo).port,
    served: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return echo;
}

export interface EchoAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request on its own connection to 127.0.0.1:port, bounded in time and size. */
export function httpExchange(port: number, urlPath: string, body?: Buffer, timeoutMs = 15_000): Promise<EchoAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: body ? 'POST' : 'GET', agent: false, timeout: timeoutMs, headers: body ? { 'Content-Length': body.length } : {} }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_ECHO_BODY) return void req.destroy(new Error(`an answer over ${MAX_ECHO_BODY} bytes`));
        chunks.push(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${urlPath} through 127.0.0.1:${port} took over ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Through a forwarded port to the echo server: a GET answered with `echo GET /hello-<tag>`, then a
 * POST of `body` that the echo server received whole (length and sha256) and sent back whole.
 */
export async function checkEchoRoundTrip(port: number, tag: string, body: Buffer): Promise<void> {
  const small = await httpExchange(port, `/hello-${tag}`);
  assert.equal(small.status, 200);
  assert.equal(small.body.toString(), `echo GET /hello-${tag}\n`);
  const sha = createHash('sha256').update(body).digest('hex');
  const r = await httpExchange(port, `/upload-${tag}`, body);
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-echo-bytes'], String(body.length));
  assert.equal(r.headers['x-echo-sha256'], sha, 'the pod got the body whole');
  assert.equal(createHash('sha256').update(r.body).digest('hex'), sha, 'and the answer came back whole');
}
