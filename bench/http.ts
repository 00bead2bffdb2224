/**
 * HTTP part of `npm run bench`: autocannon and curl against a node:http upstream, directly and
 * through the gateway, in the same run. Also runs on its own: `node --import tsx bench/http.ts`.
 *
 * The upstream (a child process, so its CPU is not the bench's) serves GET /1k (a fixed 1 KiB
 * JSON body) and GET /1g (BENCH_HTTP_MB MiB of application/octet-stream in 64 KiB writes,
 * waiting for 'drain'), over plain HTTP and over HTTPS (an EC P-256 certificate made by the
 * gateway's own generator, so its TLS costs what the gateway's does).
 *
 *   1. Load: autocannon (in a child process) GET /1k for BENCH_SECONDS, for each connection count
 *      (BENCH_HTTP_CONNECTIONS, default "1,64"), against
 *        direct-http   autocannon → upstream, plain HTTP
 *        direct-https  autocannon → upstream, HTTPS (TLS cost without the gateway)
 *        gateway       autocannon → gateway (HTTPS) → upstream (plain HTTP), recording every request
 *      Prints RPS, p50/p99 latency (exact, from every response's own time: autocannon's histogram
 *      has 1 ms steps, too coarse for the target), non-2xx and errors, the CPU µs per request of
 *      the gateway, the upstream and autocannon, the ratios gateway/direct and the added p50.
 *   2. Stream: curl GET /1g > /dev/null directly (HTTP and HTTPS) and through the gateway: MiB/s,
 *      the ratio, and the gateway's VmRSS sampled every 200 ms during its stream.
 *
 * Targets (issue 7): at 64 connections gateway/direct RPS ≥ 0.5 and added p50 ≤ 0.5 ms; gateway
 * RSS < 150 MB while 1 GiB streams. No assertion on speed; a run that errors (non-2xx, socket
 * errors, a wrong size) fails the bench after the report is printed.
 *
 * Environment: BENCH_SECONDS (each autocannon run, default 15), BENCH_HTTP_CONNECTIONS
 * (default "1,64"), BENCH_HTTP_MB (stream size in MiB, default 1024). GATEHOUSE_CPU_PROF=DIR
 * profiles the gateway (test/helpers/gateway.ts) and prints its hottest functions at the end.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadTlsMaterial } from '../src/util/tls-material.ts';
import { ROOT, startGateway, type GatewayUnderTest } from '../test/helpers/gateway.ts';
import { freePort } from '../test/helpers/net.ts';
import { cpuSeconds, machineCpu, run, summarizeProfile, vmRssKb } from './proc.ts';

const SELF = fileURLToPath(import.meta.url);
const BODY_BYTES = 1024;
const CHUNK_BYTES = 64 << 10;
const GOAL_RATIO = 0.5;
const GOAL_ADDED_P50_MS = 0.5;
const GOAL_RSS_MB = 150;
const GOAL_CONNECTIONS = 64;

// ---------------------------------------------------------------------------
// Child process: the upstream
// ---------------------------------------------------------------------------

interface UpstreamSpec {
  certFile: string;
  keyFile: string;
  streamBytes: number;
}

/** A 1 KiB JSON document, the size of a typical small API response. */
function body1k(): Buffer {
  const head = '{"id":"ord_1","status":"paid","items":[{"sku":"A-1","qty":2}],"note":"';
  const tail = '"}\n';
  return Buffer.from(head + 'x'.repeat(BODY_BYTES - head.length - tail.length) + tail);
}

async function upstreamChild(spec: UpstreamSpec): Promise<void> {
  const small = body1k();
  const chunk = randomBytes(CHUNK_BYTES);
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    req.resume();
    if (req.method === 'GET' && req.url === '/1k') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': small.length });
      res.end(small);
      return;
    }
    if (req.method === 'GET' && req.url === '/1g') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': spec.streamBytes });
      let left = spec.streamBytes;
      const pump = () => {
        while (left > 0 && !res.destroyed) {
          const n = Math.min(CHUNK_BYTES, left);
          left -= n;
          if (!res.write(n === CHUNK_BYTES ? chunk : chunk.subarray(0, n))) {
            res.once('drain', pump);
            return;
          }
        }
        if (!res.destroyed) res.end();
      };
      pump();
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  };
  const plain = http.createServer({ noDelay: true }, handler);
  const secure = https.createServer({ cert: fs.readFileSync(spec.certFile), key: fs.readFileSync(spec.keyFile), noDelay: true }, handler);
  const listen = (s: net.Server) => new Promise<number>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port));
  });
  const ports = { plain: await listen(plain), tls: await listen(secure) };
  process.stdout.write(JSON.stringify(ports) + '\n');
  // The parent holds our stdin: when it goes (also when it dies), so do we.
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0));
}

// ---------------------------------------------------------------------------
// Child process: the load generator (autocannon)
// ---------------------------------------------------------------------------

interface LoadSpec {
  url: string;
  connections: number;
  seconds: number;
  headers: Record<string, string>;
}

interface LoadResult {
  /** 2xx responses per second */
  rps: number;
  ok: number;
  non2xx: number;
  /** socket errors, timeouts included */
  errors: number;
  timeouts: number;
  /**
   * requests sent that got no response, beyond the ones in flight when the run stopped: autocannon
   * reconnects silently when the server closes a connection, without counting an error
   */
  unanswered: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  seconds: number;
  /** bytes (head and body) of the last 2xx response, to check the body came whole */
  responseBytes: number;
  /** the load generator's own CPU time over the run */
  cpuSeconds: number;
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  requests: { sent: number };
}
type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, result: AutocannonResult) => void) => {
  on(event: 'response', fn: (client: unknown, status: number, resBytes: number, responseTimeMs: number) => void): void;
};

async function loadChild(spec: LoadSpec): Promise<void> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  // Every 2xx response's own time (ms, from hrtime): autocannon's histogram rounds to whole ms.
  let lat = new Float64Array(1 << 16);
  let n = 0;
  let responseBytes = 0;
  const cpu0 = process.cpuUsage();
  const result = await new Promise<AutocannonResult>((resolve, reject) => {
    const inst = autocannon({ url: spec.url, connections: spec.connections, duration: spec.seconds, headers: spec.headers, timeout: 10 }, (err, r) => (err ? reject(err) : resolve(r)));
    inst.on('response', (_c, status, resBytes, ms) => {
      if (status < 200 || status > 299) return;
      if (n === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[n++] = ms;
      responseBytes = resBytes;
    });
  });
  const cpu = process.cpuUsage(cpu0);
  const sorted = lat.subarray(0, n).sort();
  const q = (p: number) => (n ? sorted[Math.min(n - 1, Math.floor(p * n))]! : NaN);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  const out: LoadResult = {
    rps: result['2xx'] / result.duration,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    unanswered: Math.max(0, result.requests.sent - result['2xx'] - result.non2xx - spec.connections),
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    meanMs: n ? sum / n : NaN,
    seconds: result.duration,
    responseBytes,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

// ---------------------------------------------------------------------------
// Parent helpers
// ---------------------------------------------------------------------------


const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r, ri) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ') + (ri === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('  ')}` : '')).join('\n');
}

interface Upstream {
  pid: number;
  plain: number;
  tls: number;
  stop(): Promise<void>;
}

function startUpstream(spec: UpstreamSpec): Promise<Upstream> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', SELF, 'upstream'], {
      cwd: ROOT,
      env: { ...process.env, BENCH_HTTP_ROLE_SPEC: JSON.stringify(spec) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`the upstream did not start within 30 s: ${err}`));
    }, 30_000);
    p.stderr!.on('data', (d) => (err += d));
    p.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`the upstream exited with ${code} before listening: ${err}`));
    });
    p.stdout!.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(t);
      p.removeAllListeners('exit');
      const ports = JSON.parse(out.slice(0, nl)) as { plain: number; tls: number };
      resolve({
        pid: p.pid!,
        ...ports,
        stop: () =>
          new Promise<void>((done) => {
            if (p.exitCode !== null || p.signalCode !== null) return done();
            const kill = setTimeout(() => p.kill('SIGKILL'), 5000);
            p.once('exit', () => {
              clearTimeout(kill);
              done();
            });
            p.stdin!.end();
          }),
      });
    });
  });
}

interface Measured extends LoadResult {
  /** CPU µs per 2xx response, per process */
  gwUs?: number;
  upstreamUs: number;
  loadUs: number;
  /** share of all CPUs busy during the run */
  machineBusy: number;
}

/** One autocannon run in a child process, with the CPU each process spent on it. */
async function load(spec: LoadSpec, upstreamPid: number, gwPid?: number): Promise<Measured> {
  const gw0 = gwPid ? cpuSeconds(gwPid) : 0;
  const up0 = cpuSeconds(upstreamPid);
  const m0 = machineCpu();
  const r = await run(process.execPath, ['--import', 'tsx', SELF, 'load'], { cwd: ROOT, env: { BENCH_HTTP_ROLE_SPEC: JSON.stringify(spec) } });
  const m1 = machineCpu();
  const up = cpuSeconds(upstreamPid) - up0;
  const gw = gwPid ? cpuSeconds(gwPid) - gw0 : 0;
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  if (r.code !== 0 || !line.startsWith('{')) throw new Error(`autocannon against ${spec.url} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}`);
  // JSON has no NaN: a run without a 2xx response sends null latencies.
  const res = JSON.parse(line, (_k, v) => (v === null ? NaN : v)) as LoadResult;
  const per = (s: number) => (res.ok ? (s * 1e6) / res.ok : NaN);
  return { ...res, gwUs: gwPid ? per(gw) : undefined, upstreamUs: per(up), loadUs: per(res.cpuSeconds), machineBusy: (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total) };
}

interface Stream {
  name: string;
  mibs: number;
  seconds: number;
  bytes: number;
  status: string;
  gwCpu?: number;
  rssBeforeKb?: number;
  rssPeakKb?: number;
  samples?: number;
  error?: string;
}

async function curlStream(name: string, url: string, expectBytes: number, curlArgs: string[], gwPid?: number): Promise<Stream> {
  const rssBeforeKb = gwPid ? vmRssKb(gwPid) : undefined;
  let peak = rssBeforeKb ?? 0;
  let samples = 0;
  const sampler = gwPid
    ? setInterval(() => {
        try {
          peak = Math.max(peak, vmRssKb(gwPid));
          samples++;
        } catch {
          // the gateway is gone: curl fails and says so
        }
      }, 200)
    : null;
  const cpu0 = gwPid ? cpuSeconds(gwPid) : 0;
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download}', ...curlArgs, url], { cwd: ROOT });
  if (sampler) clearInterval(sampler);
  const cpu = gwPid ? cpuSeconds(gwPid) - cpu0 : 0;
  const [status = '?', size = '0', speed = '0'] = r.stdout.trim().split(' ');
  const bytes = Number(size);
  const error = r.code !== 0 ? `curl exit ${r.code}: ${r.stderr.trim()}` : status !== '200' ? `HTTP ${status}` : bytes !== expectBytes ? `${bytes} bytes, expected ${expectBytes}` : undefined;
  const s: Stream = { name, mibs: Number(speed) / (1 << 20), seconds: r.ms / 1000, bytes, status, gwCpu: gwPid ? cpu / (r.ms / 1000) : undefined, rssBeforeKb, rssPeakKb: gwPid ? peak : undefined, samples: gwPid ? samples : undefined, error };
  const rss = gwPid ? `, gateway CPU ${fmt(s.gwCpu! * 100)}% of a core, VmRSS ${fmt(rssBeforeKb! / 1024, 1)} MB before, peak ${fmt(peak / 1024, 1)} MB (${samples} samples)` : '';
  console.log(`  ${name.padEnd(13)} ${error ? `FAILED ${error}` : `${fmt(s.mibs)} MiB/s (${fmt(s.seconds, 2)} s)${rss}`}`);
  return s;
}


// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

/** Runs the HTTP benchmark and prints its report. Returns false when it could not run (no curl). */
export async function httpBench(): Promise<boolean> {
  const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
  const CONNECTIONS = (process.env.BENCH_HTTP_CONNECTIONS ?? `1,${GOAL_CONNECTIONS}`).split(',').map((s) => Number(s.trim())).filter((n) => n > 0);
  const MB = Number(process.env.BENCH_HTTP_MB ?? 1024);
  const streamBytes = MB * (1 << 20);
  if (spawnSync('sh', ['-c', 'command -v curl']).status !== 0) {
    console.log('\n=== HTTP: skipped (curl not installed) ===');
    return false;
  }
  const acVersion = (JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/autocannon/package.json'), 'utf8')) as { version: string }).version;
  const curlVersion = spawnSync('curl', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]!.split(' ').slice(0, 2).join(' ');
  console.log(`\n# HTTP: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, autocannon ${acVersion}, ${curlVersion}`);
  console.log(`# GET of ${BODY_BYTES} B, ${CONNECTIONS.join(',')} connections, ${SECONDS} s each; GET of ${MB} MiB with curl; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (os.loadavg()[0]! > os.cpus().length * 0.5) console.log('# WARNING: the machine is already busy; absolute numbers and ratios will be noisy');

  let upstream: Upstream | undefined;
  let gw: GatewayUnderTest | undefined;
  let gwPid = 0;
  const failures: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-bench-http-'));
  try {
    // The upstream's certificate comes from the gateway's own generator (EC P-256), so direct
    // HTTPS and the gateway's HTTPS cost the same per handshake and per record.
    await loadTlsMaterial(dir);
    const upstreamCa = path.join(dir, 'tls', 'gateway.crt');
    upstream = await startUpstream({ certFile: upstreamCa, keyFile: path.join(dir, 'tls', 'gateway.key'), streamBytes });
    const httpPort = await freePort();
    gw = await startGateway({
      extra: {
        listen: { api: `127.0.0.1:${await freePort()}`, http: `127.0.0.1:${httpPort}` },
        connections: [{ name: 'up', type: 'http', url: `http://127.0.0.1:${upstream.plain}` }],
      },
    });
    gwPid = gw.pid()!;
    const gwCa = path.join(gw.dir, 'data', 'tls', 'gateway.crt');
    const auth = `Bearer bench.${await gw.createKey('bench', { connections: 'up' })}`;

    const targets = [
      { name: 'direct-http', base: `http://127.0.0.1:${upstream.plain}`, headers: {} as Record<string, string>, curl: [] as string[], gateway: false, note: 'plain HTTP' },
      { name: 'direct-https', base: `https://127.0.0.1:${upstream.tls}`, headers: {}, curl: ['--cacert', upstreamCa], gateway: false, note: 'HTTPS, no gateway' },
      { name: 'gateway', base: `https://127.0.0.1:${httpPort}/c/up`, headers: { authorization: auth }, curl: ['--cacert', gwCa, '-H', `Authorization: ${auth}`], gateway: true, note: 'HTTPS client, HTTP upstream, recording' },
    ];

    // Each target answers 200 with the whole body before anything is timed.
    for (const t of targets) {
      const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', ...t.curl, `${t.base}/1k`], { cwd: ROOT });
      if (r.code !== 0 || r.stdout.trim() !== `200 ${BODY_BYTES}`) throw new Error(`${t.name}: GET /1k answered "${r.stdout.trim()}" (curl exit ${r.code}: ${r.stderr.trim()}); expected "200 ${BODY_BYTES}"`);
    }
    const rssIdleKb = vmRssKb(gwPid);

    // Warm up: the gateway's JIT, both servers' session caches, the page cache of autocannon.
    for (const t of targets) await load({ url: `${t.base}/1k`, connections: Math.max(...CONNECTIONS), seconds: 2, headers: t.headers }, upstream.pid, t.gateway ? gwPid : undefined);

    console.log(`\nautocannon GET /1k, ${SECONDS} s per run:`);
    const results = new Map<string, Measured>();
    for (const c of CONNECTIONS) {
      for (const t of targets) {
        const r = await load({ url: `${t.base}/1k`, connections: c, seconds: SECONDS, headers: t.headers }, upstream.pid, t.gateway ? gwPid : undefined);
        results.set(`${t.name}/${c}`, r);
        const bad = r.non2xx || r.errors || r.unanswered || r.ok === 0 || r.responseBytes < BODY_BYTES;
        if (bad) failures.push(`${t.name} c=${c}: ${r.ok} ok, ${r.non2xx} non-2xx, ${r.errors} errors (${r.timeouts} timeouts), ${r.unanswered} unanswered, last response ${r.responseBytes} B`);
        const gwCpu = r.gwUs !== undefined ? `, gateway ${fmt(r.gwUs)} µs/req` : '';
        console.log(`  ${t.name.padEnd(12)} c=${String(c).padEnd(3)} ${fmt(r.rps)} req/s  p50 ${fmt(r.p50Ms, 3)} ms  p99 ${fmt(r.p99Ms, 3)} ms  non-2xx ${r.non2xx}  errors ${r.errors}${r.unanswered ? `  unanswered ${r.unanswered}` : ''}${gwCpu}${bad ? '  FAILED' : ''}`);
      }
    }
    const rssAfterLoadKb = vmRssKb(gwPid);

    console.log(`\ncurl GET /1g (${MB} MiB) > /dev/null:`);
    const streams: Stream[] = [];
    for (const t of targets) streams.push(await curlStream(t.name, `${t.base}/1g`, streamBytes, t.curl, t.gateway ? gwPid : undefined));
    for (const s of streams) if (s.error) failures.push(`stream ${s.name}: ${s.error}`);

    // ---- report ----
    console.log(`\n=== HTTP: autocannon GET of ${BODY_BYTES} B (${SECONDS} s per run) ===`);
    const rows = [['target', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'mean ms', 'non-2xx', 'errors', 'unanswered', 'gw µs/req', 'upstream µs/req', 'autocannon µs/req', 'box busy', 'setup']];
    for (const c of CONNECTIONS) {
      for (const t of targets) {
        const r = results.get(`${t.name}/${c}`)!;
        rows.push([t.name, String(c), fmt(r.rps), fmt(r.p50Ms, 3), fmt(r.p99Ms, 3), fmt(r.meanMs, 3), String(r.non2xx), String(r.errors), String(r.unanswered), r.gwUs !== undefined ? fmt(r.gwUs) : '', fmt(r.upstreamUs), fmt(r.loadUs), `${fmt(r.machineBusy * 100)}%`, t.note]);
      }
    }
    console.log(table(rows));
    console.log('µs/req: CPU time of that process over the run per 2xx response; box busy: all CPUs of the machine, everything included.');
    console.log('\nratios and added latency:');
    const ratioRows = [['conns', 'gw/direct-http req/s', 'gw/direct-https req/s', 'added p50 vs http ms', 'added p50 vs https ms', 'added p99 vs https ms']];
    const get = (n: string, c: number) => results.get(`${n}/${c}`)!;
    for (const c of CONNECTIONS) {
      const g = get('gateway', c);
      const d = get('direct-http', c);
      const s = get('direct-https', c);
      ratioRows.push([String(c), fmt(g.rps / d.rps, 3), fmt(g.rps / s.rps, 3), fmt(g.p50Ms - d.p50Ms, 3), fmt(g.p50Ms - s.p50Ms, 3), fmt(g.p99Ms - s.p99Ms, 3)]);
    }
    console.log(table(ratioRows));

    console.log(`\n=== HTTP: curl GET of ${MB} MiB > /dev/null ===`);
    const srows = [['target', 'MiB/s', 'seconds', 'gw CPU %', 'gw RSS before MB', 'gw RSS peak MB']];
    for (const s of streams) srows.push([s.name + (s.error ? ' (FAILED)' : ''), fmt(s.mibs), fmt(s.seconds, 2), s.gwCpu !== undefined ? fmt(s.gwCpu * 100) : '', s.rssBeforeKb !== undefined ? fmt(s.rssBeforeKb / 1024, 1) : '', s.rssPeakKb !== undefined ? fmt(s.rssPeakKb / 1024, 1) : '']);
    console.log(table(srows));
    const sGw = streams.find((s) => s.name === 'gateway')!;
    const sHttp = streams.find((s) => s.name === 'direct-http')!;
    const sHttps = streams.find((s) => s.name === 'direct-https')!;
    console.log(`gateway/direct throughput: ${fmt(sGw.mibs / sHttp.mibs, 3)} vs direct-http, ${fmt(sGw.mibs / sHttps.mibs, 3)} vs direct-https`);
    console.log(`gateway VmRSS: ${fmt(rssIdleKb / 1024, 1)} MB idle after start, ${fmt(rssAfterLoadKb / 1024, 1)} MB after the autocannon runs`);

    console.log('\n=== HTTP: goals (issue 7) ===');
    if (CONNECTIONS.includes(GOAL_CONNECTIONS)) {
      const g = get('gateway', GOAL_CONNECTIONS);
      const d = get('direct-http', GOAL_CONNECTIONS);
      const s = get('direct-https', GOAL_CONNECTIONS);
      console.log(`gateway/direct req/s at ${GOAL_CONNECTIONS} connections ≥ ${GOAL_RATIO}: ${fmt(g.rps / d.rps, 3)} vs direct-http (${verdict(g.rps / d.rps >= GOAL_RATIO)}); ${fmt(g.rps / s.rps, 3)} vs direct-https (${verdict(g.rps / s.rps >= GOAL_RATIO)})`);
      console.log(`added p50 at ${GOAL_CONNECTIONS} connections ≤ ${GOAL_ADDED_P50_MS} ms: ${fmt(g.p50Ms - d.p50Ms, 3)} ms vs direct-http (${verdict(g.p50Ms - d.p50Ms <= GOAL_ADDED_P50_MS)}); ${fmt(g.p50Ms - s.p50Ms, 3)} ms vs direct-https (${verdict(g.p50Ms - s.p50Ms <= GOAL_ADDED_P50_MS)})`);
    } else console.log(`(no run at ${GOAL_CONNECTIONS} connections: BENCH_HTTP_CONNECTIONS=${CONNECTIONS.join(',')})`);
    const peakMb = (sGw.rssPeakKb ?? NaN) / 1024;
    console.log(`gateway RSS while ${MB} MiB stream < ${GOAL_RSS_MB} MB: peak ${fmt(peakMb, 1)} MB (${verdict(!sGw.error && peakMb < GOAL_RSS_MB)})`);
    const sum = (f: (r: Measured) => number) => [...results.values()].reduce((a, r) => a + f(r), 0);
    console.log(`non-2xx / errors / unanswered over all runs: ${sum((r) => r.non2xx)} / ${sum((r) => r.errors)} / ${sum((r) => r.unanswered)}`);
  } finally {
    await gw?.stop().catch((e) => console.error(`stopping the gateway: ${e.message}`));
    await upstream?.stop().catch((e) => console.error(`stopping the upstream: ${e.message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const profDir = process.env.GATEHOUSE_CPU_PROF;
  if (profDir && gwPid) {
    // node --cpu-prof names its file CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile.
    const file = fs.existsSync(profDir) ? fs.readdirSync(profDir).find((f) => f.includes(`.${gwPid}.`) && f.endsWith('.cpuprofile')) : undefined;
    if (file) console.log(`\n=== HTTP: gateway CPU profile (${path.join(profDir, file)}) ===\n${summarizeProfile(path.join(profDir, file))}`);
    else console.log(`\nno CPU profile of gateway pid ${gwPid} in ${profDir}`);
  }
  if (failures.length) throw new Error(`HTTP bench: ${failures.length} run(s) failed:\n  ${failures.join('\n  ')}`);
  return true;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const role = process.argv[2];
  const spec = process.env.BENCH_HTTP_ROLE_SPEC;
  const main = role === 'upstream' ? upstreamChild(JSON.parse(spec!) as UpstreamSpec) : role === 'load' ? loadChild(JSON.parse(spec!) as LoadSpec) : httpBench();
  main.then(
    () => {
      if (role !== 'upstream') process.exit(0);
    },
    (e) => {
      console.error(`HTTP bench${role ? ` (${role})` : ''} failed: ${(e as Error).stack ?? e}`);
      process.exit(1);
    },
  );
}
