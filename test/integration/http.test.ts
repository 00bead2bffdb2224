// The HTTP adapter end to end: the real gateway (child process) in front of a real node:http
// server on loopback, driven by curl, node's fetch (undici, in a child process that trusts the
// gateway's generated certificate) and raw TLS sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import type net from 'node:net';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { curl as runCurl } from '../helpers/curl.ts';

const UPSTREAM_TOKEN = 'upstream-secret-token-123';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let upstream: http.Server;
let upstreamPort = 0;
const seen: Seen[] = [];
/** SSE: resolved by the test once the client has event 1; the upstream then sends event 2. */
let releaseSecond: () => void = () => {};
let secondSent = false;

let gw: GatewayUnderTest;
let httpPort = 0;
let key = '';
let caFile = '';
let dir = '';
let apiPort = 0;

before(async () => {
  upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (req.url === '/base/sse') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write('data: one\n\n');
        const gate = new Promise<void>((r) => (releaseSecond = r));
        const timer = setTimeout(() => releaseSecond(), 20_000);
        void gate.then(() => {
          clearTimeout(timer);
          secondSent = true;
          res.end('data: two\n\n');
        });
        return;
      }
      if (req.url?.startsWith('/base/echo')) {
        res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
        res.end(Buffer.concat(chunks));
        return;
      }
      if (req.url?.startsWith('/base/chunked')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        for (let i = 0; i < 100; i++) res.write(`line ${i}\n`);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', connection: 'x-private', 'x-private': 'hop' });
      res.end(JSON.stringify({ hello: 'world', path: req.url }));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  upstreamPort = (upstream.address() as net.AddressInfo).port;

  httpPort = await freePort();
  apiPort = await freePort();
  dir = fs.mkdtempSync('/tmp/gh-http-');
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, UPSTREAM_TOKEN + '\n', { mode: 0o600 });
  const base = `http://127.0.0.1:${upstreamPort}/base`;
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${apiPort}`, http: `127.0.0.1:${httpPort}` },
      connections: [
        { name: 'api', type: 'http', url: base, auth: { bearer: `file:${tokenFile}` } },
        { name: 'api-masked', type: 'http', url: base, auth: { header: { name: 'X-Api-Key', value: 'hdr-secret' } }, mask: {} },
        { name: 'api-other', type: 'http', url: base },
      ],
      policy: {
        default: { action: 'allow' },
        rules: [
          { name: 'hold-put', match: { types: ['http.put'] }, action: 'review', approvers: ['ops'], mode: 'defer' },
          { name: 'hold-patch', match: { types: ['http.patch'] }, action: 'review', approvers: ['ops'], mode: 'wait', holdFor: '30s' },
          { name: 'no-delete', match: { types: ['http.delete'] }, action: 'block', reason: 'deleting through the gateway is not allowed', hint: 'ask the test' },
        ],
      },
    },
  });
  caFile = path.join(gw.dir, 'data', 'tls', 'gateway.crt');
  key = `runner.${await gw.createKey('runner', { connections: 'api,api-masked', kind: 'agent' })}`;
});

after(async () => {
  await gw?.stop();
  upstream?.closeAllConnections();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const curl = (args: string[], timeoutMs = 30_000) => runCurl(caFile, args, timeoutMs);

/** curl output with `-w '\n%{http_code}'`: the body and the status. */
function split(out: string): { body: string; status: string } {
  const i = out.lastIndexOf('\n');
  return { body: out.slice(0, i), status: out.slice(i + 1) };
}

const url = (p: string) => `https://127.0.0.1:${httpPort}${p}`;

type Ev = { type: string; seq: number; data: any };

/** Polls (bounded) the newest sessions for a command with `text` and its result. */
async function eventsOf(text: string, connection?: string): Promise<{ command: Ev; result: Ev }> {
  for (let i = 0; i < 30; i++) {
    const list = JSON.parse((await gw.cli(['sessions', 'list', '--json', '--limit', '10'])).stdout) as { id: string; connection: string }[];
    for (const s of list) {
      if (connection && s.connection !== connection) continue;
      const events = JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      const command = events.filter((e) => e.type === 'command' && e.data.text === text).at(-1);
      if (!command) continue;
      const result = events.find((e) => e.type === 'result' && e.data.command === command.seq);
      if (result) return { command, result };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no command+result for ${JSON.stringify(text)}`);
}

test('curl GET: the upstream gets the injected bearer, never the client key; journal has command and result', async () => {
  seen.length = 0;
  const r = await curl(['-H', `Authorization: Bearer ${key}`, '-H', 'Cookie: sid=client-cookie', '-D', '-', url('/c/api/hello?x=1')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^HTTP\/1\.1 200/);
  assert.match(r.stdout, /\{"hello":"world","path":"\/base\/hello\?x=1"\}/);
  assert.doesNotMatch(r.stdout, /x-private/i, 'a header named in Connection is hop-by-hop');
  assert.equal(seen.length, 1);
  const h = seen[0]!.headers;
  assert.equal(h.authorization, `Bearer ${UPSTREAM_TOKEN}`);
  assert.equal(h.cookie, undefined);
  assert.equal(h.host, `127.0.0.1:${upstreamPort}`);
  assert.ok(!JSON.stringify(h).includes(key.split('.')[1]!), 'the client key reached the upstream');
  const { command, result } = await eventsOf('GET /hello?x=1');
  assert.equal(command.data.kind, 'http');
  assert.equal(command.data.verdict.action, 'allow');
  assert.equal(result.data.status, 'ok');
  assert.equal(result.data.meta.status, 200);
  assert.match(result.data.meta.responseBody, /"hello":"world"/);
  assert.ok(result.data.bytesOut > 0);
});

test('POST JSON with an email: the upstream gets it as sent; the client\'s copy and the journal sample are masked with mask: {}', async () => {
  seen.length = 0;
  const body = JSON.stringify({ user: 'alice', email: 'alice.smith@example.com' });
  const r = await curl(['-H', `Authorization: Bearer ${key}`, '-H', 'Content-Type: application/json', '--data-binary', body, url('/c/api-masked/echo')]);
  assert.equal(r.code, 0, r.stderr);
  const echoed = JSON.parse(r.stdout);
  assert.equal(echoed.user, 'alice');
  assert.ok(!r.stdout.includes('alice.smith@example.com'), r.stdout);
  assert.equal(seen[0]!.body, body);
  assert.equal(seen[0]!.headers['x-api-key'], 'hdr-secret');
  assert.equal(seen[0]!.headers.authorization, undefined);
  const { command, result } = await eventsOf('POST /echo', 'api-masked');
  assert.ok(typeof command.data.http.requestBody === 'string' && command.data.http.requestBody.includes('alice'), JSON.stringify(command.data));
  assert.ok(!command.data.http.requestBody.includes('alice.smith@example.com'), 'request sample not masked');
  assert.ok(!result.data.meta.responseBody.includes('alice.smith@example.com'), 'response sample not masked');
  // Unmasked connection: the sample is as sent.
  const r2 = await curl(['-H', `Authorization: Bearer ${key}`, '-H', 'Content-Type: application/json', '--data-binary', body, url('/c/api/echo?plain=1')]);
  assert.equal(r2.stdout, body);
  const plain = await eventsOf('POST /echo?plain=1', 'api');
  assert.equal(plain.command.data.http.requestBody, body);
});

test('chunked upload and chunked response stream through', async () => {
  seen.length = 0;
  const big = 'x'.repeat(300_000);
  const file = path.join(gw.dir, 'big.txt');
  fs.writeFileSync(file, big);
  const r = await curl(['-H', `Authorization: Bearer ${key}`, '-H', 'Content-Type: text/plain', '-H', 'Transfer-Encoding: chunked', '--data-binary', `@${file}`, url('/c/api/echo?chunked=1')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, big.length);
  assert.equal(seen[0]!.body.length, big.length);
  const c = await curl(['-H', `Authorization: Bearer ${key}`, url('/c/api/chunked')]);
  assert.equal(c.stdout.split('\n').length, 101);
  const { command, result } = await eventsOf('POST /echo?chunked=1');
  assert.equal(command.data.http.requestBody.length, 4096);
  assert.equal(command.data.http.requestTruncated, true);
  assert.equal(result.data.bytesIn, big.length);
  assert.equal(result.data.bytesOut, big.length);
});

/** Streams `client`'s stdout; once event 1 is there, checks event 2 was not sent yet, then releases it. */
async function sseThrough(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  secondSent = false;
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  let firstBeforeSecond: boolean | null = null;
  const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
  p.stderr.on('data', (d) => (err += d));
  p.stdout.on('data', (d) => {
    out += d;
    if (firstBeforeSecond === null && out.includes('data: one')) {
      firstBeforeSecond = !secondSent && !out.includes('data: two');
      releaseSecond();
    }
  });
  const code = await new Promise<number | null>((r) => p.once('close', r));
  clearTimeout(t);
  assert.equal(code, 0, err);
  assert.equal(firstBeforeSecond, true, `event 1 did not arrive before event 2 was sent: ${out}`);
  assert.match(out, /data: one[\s\S]*data: two/);
}

test('SSE arrives incrementally: curl -N and fetch see event 1 before event 2 is sent', async () => {
  await sseThrough('curl', ['-sS', '-N', '--cacert', caFile, '-H', `Authorization: Bearer ${key}`, url('/c/api/sse')]);
  const script = `const r = await fetch(${JSON.stringify(url('/c/api/sse'))}, { headers: { authorization: process.env.GH_KEY } });
if (r.status !== 200) process.exit(2);
const dec = new TextDecoder();
for await (const chunk of r.body) process.stdout.write(dec.decode(chunk, { stream: true }));`;
  await sseThrough(process.execPath, ['--input-type=module', '-e', script], { ...process.env, NODE_EXTRA_CA_CERTS: caFile, GH_KEY: `Bearer ${key}` });
});

test('refusals: blocked DELETE → 403 with the reason; wrong key → 401; unknown connection → 404; not granted → 403', async () => {
  seen.length = 0;
  const del = await curl(['-X', 'DELETE', '-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/api/items/1')]);
  const { body: delBody, status: delStatus } = split(del.stdout);
  assert.equal(delStatus, '403');
  const d = JSON.parse(delBody);
  assert.equal(d.error, 'blocked');
  assert.equal(d.rule, 'no-delete');
  assert.match(d.reason, /deleting through the gateway is not allowed/);
  assert.equal(d.hint, 'ask the test');
  assert.equal(seen.length, 0, 'a blocked request reached the upstream');
  const ev = await eventsOf('DELETE /items/1');
  assert.equal(ev.command.data.verdict.action, 'block');
  assert.equal(ev.result.data.status, 'denied');

  const wrong = await curl(['-H', `Authorization: Bearer runner.not-the-key`, '-w', '\n%{http_code}', url('/c/api/hello')]);
  assert.equal(split(wrong.stdout).status, '401');
  assert.equal(JSON.parse(split(wrong.stdout).body).error, 'unauthorized');
  const none = await curl(['-w', '\n%{http_code}', url('/c/api/hello')]);
  assert.equal(split(none.stdout).status, '401');
  const unknown = await curl(['-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/nope/hello')]);
  assert.equal(split(unknown.stdout).status, '404');
  const other = await curl(['-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/api-other/hello')]);
  assert.equal(split(other.stdout).status, '403');
  assert.equal(JSON.parse(split(other.stdout).body).error, 'connection_not_granted');
  const dots = await curl(['--path-as-is', '-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/api/a/../b')]);
  assert.equal(split(dots.stdout).status, '400');
  assert.equal(seen.length, 0);
});

test('review: defer mode → 403 with the review id, not forwarded; wait mode holds, then forwards once approved', async () => {
  seen.length = 0;
  const put = await curl(['-X', 'PUT', '-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/api/things/1')]);
  assert.equal(split(put.stdout).status, '403');
  const d = JSON.parse(split(put.stdout).body);
  assert.equal(d.rule, 'hold-put');
  assert.match(d.reviewId, /\S/);
  assert.equal(seen.length, 0);

  const ops = await gw.createKey('ops1', { kind: 'human', groups: 'ops', connections: 'api' });
  const patch = curl(['-X', 'PATCH', '-H', `Authorization: Bearer ${key}`, '-H', 'Content-Type: application/json', '--data-binary', '{"a":1}', '-w', '\n%{http_code}', url('/c/api/echo?held=1')], 60_000);
  let reviewId = '';
  for (let i = 0; i < 50 && !reviewId; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const res = await fetch(`http://127.0.0.1:${apiPort}/api/approvals?status=pending`, { headers: { authorization: `Bearer ops1.${ops}` } });
    const list = (await res.json()) as { id: string; text: string }[];
    reviewId = list.find((x) => x.text === 'PATCH /echo?held=1')?.id ?? '';
  }
  assert.ok(reviewId, 'no pending review for the PATCH');
  assert.equal(seen.length, 0, 'the held request reached the upstream before approval');
  const ap = await gw.cli(['approvals', 'approve', reviewId, '--comment', 'ok', '--key', `ops1.${ops}`]);
  assert.equal(ap.code, 0, ap.stderr);
  const r = await patch;
  assert.equal(split(r.stdout).status, '200', r.stdout + r.stderr);
  assert.equal(split(r.stdout).body, '{"a":1}');
  assert.equal(seen.length, 1);
});

/** Sends raw bytes over TLS and returns what came back until the gateway closed (bounded). */
function raw(payload: string | Buffer, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: httpPort, rejectUnauthorized: false }, () => s.write(payload));
    let out = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve(out);
    }, timeoutMs);
    s.on('data', (d) => (out += d));
    s.on('error', (e) => {
      clearTimeout(t);
      if (out) resolve(out);
      else reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
}

test('hostile input: CL+TE, duplicate Content-Length, obs-fold → 400; 64 KiB+ headers → 431; the gateway stays up', async () => {
  seen.length = 0;
  const auth = `Authorization: Bearer ${key}\r\n`;
  const clte = await raw(`POST /c/api/echo HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /c/api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.match(clte, /^HTTP\/1\.1 400/, clte);
  const dup = await raw(`POST /c/api/echo HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello`);
  assert.match(dup, /^HTTP\/1\.1 400/, dup);
  const fold = await raw(`GET /c/api/hello HTTP/1.1\r\nHost: x\r\n${auth}X-Folded: a\r\n b\r\n\r\n`);
  assert.match(fold, /^HTTP\/1\.1 400/, fold);
  const huge = await raw(`GET /c/api/hello HTTP/1.1\r\nHost: x\r\n${auth}X-Big: ${'a'.repeat(70 * 1024)}\r\n\r\n`);
  assert.match(huge, /^HTTP\/1\.1 431/, huge);
  assert.equal(seen.length, 0, `something reached the upstream: ${seen.map((s) => s.url).join(', ')}`);
  const ok = await curl(['-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', url('/c/api/hello?after=hostile')]);
  assert.equal(split(ok.stdout).status, '200');
});
