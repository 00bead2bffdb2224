// HTTP adapter, second slice: what is between the gateway and the upstream (basic auth, TLS
// verified against a configured CA, a client certificate), host-name routing, responses masked
// on their way to the client, WebSocket upgrades, slowloris, and a 1 GiB stream at bounded RSS
// with curl and undici. Real node:http/https upstreams on loopback; certificates made by openssl.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { WebSocketServer, WebSocket } from 'ws';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { curl as runCurl } from '../helpers/curl.ts';

const GiB = 1024 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'x');

let dir = '';
let gw: GatewayUnderTest;
let httpPort = 0;
let key = '';
let caFile = '';
const seen: { url: string; headers: http.IncomingHttpHeaders; clientCN?: string }[] = [];
let plain: http.Server;
let secure: https.Server;
let wss: WebSocketServer;

/** A 1 GiB body in 64 KiB chunks, written with backpressure. */
function streamGiB(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(GiB) });
  let sent = 0;
  const pump = () => {
    while (sent < GiB) {
      sent += CHUNK.length;
      if (!res.write(CHUNK)) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const cert = (req.socket as tls.TLSSocket).getPeerCertificate?.();
  seen.push({ url: req.url!, headers: req.headers, clientCN: cert && 'subject' in cert ? (cert.subject?.CN as string | undefined) : undefined });
  req.resume();
  if (req.url === '/gib') return streamGiB(res);
  if (req.url === '/user.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return void res.end(JSON.stringify({ id: 7, name: 'Ann', password: 'hunter2-is-secret', contact: { email: 'ann.lee@example.com' }, note: 'plain' }));
  }
  if (req.url === '/note.txt') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return void res.end('call bob.marsh@example.org about AKIAIOSFODNN7EXAMPLE\n');
  }
  if (req.url === '/events') {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: {"to":"carol.diaz@example.net"}\n\n');
    return void setTimeout(() => res.end('data: done\n\n'), 50);
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ ok: true, url: req.url }));
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

before(async () => {
  dir = fs.mkdtempSync('/tmp/gh-httpup-');
  // A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it.
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=test-ca']);
  fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=upstream']);
  openssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.crt', '-days', '2', '-extfile', 'san.ext']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'cli.key', '-out', 'cli.csr', '-subj', '/CN=gatehouse-client']);
  openssl(['x509', '-req', '-in', 'cli.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cli.crt', '-days', '2']);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'other.key', '-out', 'other.crt', '-days', '2', '-subj', '/CN=other-ca']);
  const read = (f: string) => fs.readFileSync(path.join(dir, f), 'utf8');

  plain = http.createServer(handler);
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()));
  wss = new WebSocketServer({ server: plain });
  wss.on('connection', (ws, req) => {
    seen.push({ url: req.url!, headers: req.headers });
    ws.on('message', (m, binary) => ws.send(binary ? m : `echo:${m.toString()}`, { binary }));
  });
  secure = https.createServer({ key: read('srv.key'), cert: read('srv.crt'), ca: read('ca.crt'), requestCert: true, rejectUnauthorized: true }, handler);
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', () => r()));
  const plainUrl = `http://127.0.0.1:${(plain.address() as net.AddressInfo).port}`;
  const secureUrl = `https://127.0.0.1:${(secure.address() as net.AddressInfo).port}`;

  httpPort = await freePort();
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${await freePort()}`, http: `127.0.0.1:${httpPort}` },
      limits: { authTimeoutSeconds: 3 },
      connections: [
        { name: 'basic', type: 'http', url: plainUrl, auth: { basic: { user: 'svc', password: 'pw-secret' } }, hosts: ['basic.gatehouse.test'] },
        { name: 'mtls', type: 'http', url: secureUrl, ca: `file:${path.join(dir, 'ca.crt')}`, clientCert: { cert: `file:${path.join(dir, 'cli.crt')}`, key: `file:${path.join(dir, 'cli.key')}` } },
        { name: 'no-cert', type: 'http', url: secureUrl, ca: `file:${path.join(dir, 'ca.crt')}` },
        { name: 'wrong-ca', type: 'http', url: secureUrl, ca: `file:${path.join(dir, 'other.crt')}`, clientCert: { cert: `file:${path.join(dir, 'cli.crt')}`, key: `file:${path.join(dir, 'cli.key')}` } },
        { name: 'masked', type: 'http', url: plainUrl, mask: { unmaskedGroups: ['breakglass'] } },
      ],
      policy: { default: { action: 'allow' } },
    },
  });
  caFile = path.join(gw.dir, 'data', 'tls', 'gateway.crt');
  key = `runner.${await gw.createKey('runner', { connections: 'basic,mtls,no-cert,wrong-ca,masked', kind: 'agent' })}`;
});

after(async () => {
  await gw?.stop();
  for (const c of wss?.clients ?? []) c.terminate();
  wss?.close();
  for (const s of [plain, secure]) {
    s?.closeAllConnections();
    await new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const curl = (args: string[], timeoutMs = 60_000) => runCurl(caFile, args, timeoutMs);

const url = (p: string) => `https://127.0.0.1:${httpPort}${p}`;
const auth = () => ['-H', `Authorization: Bearer ${key}`];

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** Samples the gateway's RSS every 100 ms while `run` runs; returns its result and the peak. */
async function withRss<T>(run: () => Promise<T>): Promise<{ value: T; baseMb: number; peakMb: number }> {
  const pid = gw.pid()!;
  const base = rssKb(pid);
  let peak = base;
  const t = setInterval(() => (peak = Math.max(peak, rssKb(pid))), 100);
  try {
    const value = await run();
    return { value, baseMb: base / 1024, peakMb: Math.max(peak, rssKb(pid)) / 1024 };
  } finally {
    clearInterval(t);
  }
}

test('basic auth is injected; the client\'s Impersonate-* and credentials never reach the upstream', async () => {
  seen.length = 0;
  const r = await curl([...auth(), '-H', 'Impersonate-User: system:admin', '-H', 'Impersonate-Group: system:masters', url('/c/basic/who')]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { ok: true, url: '/who' });
  const h = seen[0]!.headers;
  assert.equal(h.authorization, `Basic ${Buffer.from('svc:pw-secret').toString('base64')}`);
  assert.equal(h['impersonate-user'], undefined);
  assert.equal(h['impersonate-group'], undefined);
});

test('host-name routing: Host basic.gatehouse.test reaches connection basic at the root path', async () => {
  seen.length = 0;
  const r = await curl([...auth(), '-H', 'Host: basic.gatehouse.test', url('/by-host?q=1')]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { ok: true, url: '/by-host?q=1' });
  // Another host name is not routed: the /c/ prefix is still required.
  const other = await curl([...auth(), '-H', 'Host: nope.gatehouse.test', '-w', '\n%{http_code}', url('/by-host')]);
  assert.match(other.stdout, /404$/);
});

test('upstream TLS: verified against the configured CA with a client certificate; a wrong CA or a missing certificate gives 502', async () => {
  seen.length = 0;
  const ok = await curl([...auth(), url('/c/mtls/hello')]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), { ok: true, url: '/hello' });
  assert.equal(seen.at(-1)!.clientCN, 'gatehouse-client', 'the upstream saw the client certificate');
  for (const name of ['wrong-ca', 'no-cert']) {
    const r = await curl([...auth(), '-w', '\n%{http_code}', url(`/c/${name}/hello`)]);
    const status = r.stdout.slice(r.stdout.lastIndexOf('\n') + 1);
    assert.equal(status, '502', `${name}: ${r.stdout}`);
    assert.match(r.stdout, /bad_gateway/);
  }
});

test('responses are masked on the way to the client: JSON by key name and detectors, text and SSE by detectors; an unmasked group sees values', async () => {
  const j = await curl([...auth(), '-D', '-', url('/c/masked/user.json')]);
  assert.equal(j.code, 0, j.stderr);
  const body = j.stdout.slice(j.stdout.indexOf('\r\n\r\n') + 4);
  const doc = JSON.parse(body);
  assert.equal(doc.name, 'Ann');
  assert.equal(doc.note, 'plain');
  assert.notEqual(doc.password, 'hunter2-is-secret');
  assert.ok(!body.includes('hunter2'), body);
  assert.ok(!body.includes('ann.lee@example.com'), body);
  assert.doesNotMatch(j.stdout, /content-length/i, 'a masked body has no stale Content-Length');
  const t = await curl([...auth(), url('/c/masked/note.txt')]);
  assert.match(t.stdout, /^call /);
  assert.ok(!t.stdout.includes('bob.marsh@example.org') && !t.stdout.includes('AKIAIOSFODNN7EXAMPLE'), t.stdout);
  const s = await curl([...auth(), '-N', url('/c/masked/events')]);
  assert.match(s.stdout, /data: done/);
  assert.ok(!s.stdout.includes('carol.diaz@example.net'), s.stdout);
  // break-glass group: values as sent, but the journal sample is still masked
  const bg = `bg.${await gw.createKey('bg', { connections: 'masked', groups: 'breakglass' })}`;
  const u = await curl(['-H', `Authorization: Bearer ${bg}`, url('/c/masked/user.json')]);
  assert.ok(u.stdout.includes('hunter2-is-secret') && u.stdout.includes('ann.lee@example.com'), u.stdout);
  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json', '--limit', '20'])).stdout) as { id: string; identity: string }[];
  let journal = '';
  for (const sess of list) journal += (await gw.cli(['sessions', 'show', sess.id, '--json'])).stdout;
  assert.ok(journal.includes('/user.json'));
  for (const secret of ['hunter2-is-secret', 'ann.lee@example.com', 'bob.marsh@example.org', 'carol.diaz@example.net']) assert.ok(!journal.includes(secret), `journal holds ${secret}`);
});

test('WebSocket upgrade: messages pass both ways through the gateway; recorded with bytes', async () => {
  seen.length = 0;
  const ws = new WebSocket(`wss://127.0.0.1:${httpPort}/c/basic/socket?room=1`, { headers: { authorization: `Bearer ${key}` }, ca: fs.readFileSync(caFile) });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const replies: string[] = [];
  ws.on('message', (m) => replies.push(m.toString()));
  for (let i = 0; i < 5; i++) ws.send(`m${i}`);
  const big = Buffer.alloc(200_000, 7);
  ws.send(big);
  for (let i = 0; i < 100 && replies.length < 6; i++) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(replies.slice(0, 5), ['echo:m0', 'echo:m1', 'echo:m2', 'echo:m3', 'echo:m4']);
  assert.equal(replies[5]!.length, 200_000);
  assert.equal(seen.at(-1)!.url, '/socket?room=1');
  assert.equal(seen.at(-1)!.headers.authorization, `Basic ${Buffer.from('svc:pw-secret').toString('base64')}`);
  ws.close();
  await new Promise((r) => ws.once('close', r));
  // Refused without a key, with a clear status.
  const bad = new WebSocket(`wss://127.0.0.1:${httpPort}/c/basic/socket`, { ca: fs.readFileSync(caFile) });
  bad.on('error', () => {});
  const status = await new Promise<number>((resolve) => bad.once('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0)));
  assert.equal(status, 401);
  bad.terminate();
});

test('slowloris: connections trickling headers are closed after the header timeout; others are served meanwhile', async () => {
  const socks: tls.TLSSocket[] = [];
  const closed: number[] = [];
  const t0 = Date.now();
  for (let i = 0; i < 40; i++) {
    const s = tls.connect({ host: '127.0.0.1', port: httpPort, ca: fs.readFileSync(caFile) });
    s.on('error', () => {});
    s.once('close', () => closed.push(Date.now() - t0));
    s.once('secureConnect', () => s.write('GET /c/basic/x HTTP/1.1\r\nHost: a\r\n'));
    socks.push(s);
  }
  const drip = setInterval(() => {
    for (const s of socks) if (!s.destroyed) s.write('X-Slow: 1\r\n');
  }, 300);
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const r = await curl([...auth(), url('/c/basic/during')]);
    assert.deepEqual(JSON.parse(r.stdout), { ok: true, url: '/during' });
    for (let i = 0; i < 100 && closed.length < socks.length; i++) await new Promise((res) => setTimeout(res, 100));
  } finally {
    clearInterval(drip);
    for (const s of socks) s.destroy();
  }
  assert.equal(closed.length, socks.length);
  assert.ok(Math.max(...closed) < 9000, `closed after ${Math.max(...closed)} ms`);
  const after = await curl([...auth(), url('/c/basic/after')]);
  assert.deepEqual(JSON.parse(after.stdout), { ok: true, url: '/after' });
});

test('1 GiB streams through with curl and with undici at bounded gateway RSS', async () => {
  const c = await withRss(() => curl([...auth(), '-o', '/dev/null', '-w', '%{size_download} %{http_code}', url('/c/basic/gib')], 300_000));
  assert.equal(c.value.stdout, `${GiB} 200`, c.value.stderr);
  const u = await withRss(async () => {
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const r = await fetch(${JSON.stringify(url('/c/basic/gib'))}, { headers: { authorization: ${JSON.stringify(`Bearer ${key}`)} } });
         let n = 0; for await (const b of r.body) n += b.length; console.log(r.status, n);`,
      ],
      { env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((r) => child.once('close', r));
    return { out: out.trim(), err, code };
  });
  assert.equal(u.value.code, 0, u.value.err);
  assert.equal(u.value.out, `200 ${GiB}`);
  const growth = Math.max(c.peakMb - c.baseMb, u.peakMb - u.baseMb);
  console.log(`# gateway RSS over 1 GiB: curl ${c.baseMb.toFixed(0)} → ${c.peakMb.toFixed(0)} MB, undici ${u.baseMb.toFixed(0)} → ${u.peakMb.toFixed(0)} MB`);
  assert.ok(growth < 64, `RSS grew by ${growth.toFixed(0)} MB while streaming 1 GiB`);
  assert.ok(Math.max(c.peakMb, u.peakMb) < 150 + 100, 'RSS far beyond the target');
});
