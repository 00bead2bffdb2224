/**
 * Gateway overhead benchmark: `npm run bench` (= node --import tsx bench/run.ts).
 *
 * Starts a throwaway PostgreSQL (TLS and plaintext on loopback), a pgbouncer in front of
 * it (transaction pooling), and the real gateway (child process, SQLite store, recording
 * every statement). Then:
 *   1. pgbench -i, directly;
 *   2. pgbench -S -M extended against each target for each client count, printing TPS,
 *      average latency, the ratios gateway/direct and gateway/pgbouncer, and the latency
 *      the gateway adds at 1 client;
 *   3. a 5,000,000-row result streamed through the gateway with psql, sampling the
 *      gateway's VmRSS every 100 ms: once on the fresh gateway, and again (SELECT and COPY)
 *      after the pgbench runs, next to the same directly for comparison.
 * Everything it starts is stopped at the end, also on error and on Ctrl-C.
 *
 * Environment:
 *   BENCH_SECONDS   duration of each pgbench run (default 15)
 *   BENCH_CLIENTS   comma-separated client counts (default "1,8")
 *   BENCH_SCALE     pgbench -i scale (default 10)
 *   BENCH_ROWS      rows of the streaming test (default 5000000; 0 skips it)
 *   BENCH_CPU_PROF  a directory: run the gateway under `node --cpu-prof` and print its
 *                   hottest functions at the end (the .cpuprofile stays there for DevTools)
 *   BENCH_MYSQL     "1" (default): afterwards, the MySQL benchmark (bench/mysql.ts, sysbench);
 *                   "0": skip it; "only": only the MySQL benchmark
 *   BENCH_SSH       "1" (default): then the SSH benchmark (bench/ssh.ts: cat throughput, concurrent
 *                   execs); "0": skip it; "only": only the SSH benchmark
 *   BENCH_HTTP      "1" (default): then the HTTP benchmark (bench/http.ts: autocannon GET 1 KB,
 *                   curl of 1 GiB); "0": skip it; "only": only the HTTP benchmark
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { connectionConfig, findBinary, startPostgres, type PgServer } from '../test/helpers/postgres.ts';
import { startPgbouncer, type Pgbouncer } from '../test/helpers/pgbouncer.ts';
import { startGateway, type GatewayUnderTest } from '../test/helpers/gateway.ts';
import { mysqlBench } from './mysql.ts';
import { sshBench } from './ssh.ts';
import { httpBench } from './http.ts';
import { cpuSeconds, machineCpu, run, summarizeProfile, vmRssKb } from './proc.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const CLIENTS = (process.env.BENCH_CLIENTS ?? '1,8').split(',').map((s) => Number(s.trim())).filter((n) => n > 0);
const SCALE = Number(process.env.BENCH_SCALE ?? 10);
const ROWS = Number(process.env.BENCH_ROWS ?? 5_000_000);
const CPU_PROF = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : null;
const MYSQL = process.env.BENCH_MYSQL ?? '1';
const SSH = process.env.BENCH_SSH ?? '1';
const HTTP = process.env.BENCH_HTTP ?? '1';

interface Target {
  name: string;
  /** libpq conninfo without the password */
  conninfo: string;
  password: string;
  note: string;
}

interface PgbenchResult {
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  /** gateway CPU time during the run, as a fraction of one core (gateway targets only) */
  gatewayCpu?: number;
  /** gateway CPU microseconds per transaction (gateway targets only) */
  gatewayUsPerTx?: number;
  /** share of all CPUs busy during the run (everything on the machine) */
  machineBusy: number;
  error?: string;
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

function need(name: string): string {
  const b = findBinary(name);
  if (!b) throw new Error(`${name} not found: install PostgreSQL (server, client, pgbench) and pgbouncer`);
  return b;
}


const loadavg = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');

/** Samples VmRSS of pid every `ms` until stopped; returns peak and samples. */
function sampleRss(pid: number, ms = 100): { stop(): { peakKb: number; samples: number } } {
  let peak = vmRssKb(pid);
  let samples = 1;
  const t = setInterval(() => {
    try {
      peak = Math.max(peak, vmRssKb(pid));
      samples++;
    } catch {
      // process gone: the caller notices
    }
  }, ms);
  return {
    stop() {
      clearInterval(t);
      try {
        peak = Math.max(peak, vmRssKb(pid));
      } catch {
        // ignore
      }
      return { peakKb: peak, samples };
    },
  };
}

/** pgbench with a custom script selecting a wide, realistic 1,000-row result, masked and not. */
async function maskingBench(env: Record<string, string>, pgs: PgServer, gw: GatewayUnderTest, key: string, gwPid: number) {
  const c = new pg.Client(connectionConfig(pgs));
  await c.connect();
  try {
    await c.query(`drop table if exists bench_wide; create table bench_wide as
      select g as id, 'Customer ' || g as name, 'user' || g || '@example.com' as email, '+1415555' || lpad(g::text, 4, '0') as phone,
             (array['Berlin','Paris','Lisbon','Oslo'])[1 + g % 4] as city, 'note about order ' || g || ' shipped on time' as note,
             (g * 37 % 1000)::int as amount, now() - (g || ' minutes')::interval as created,
             'tok_' || md5(g::text) as api_token, (array['new','paid','shipped'])[1 + g % 3] as status
        from generate_series(1, 1000) g`);
  } finally {
    await c.end();
  }
  const script = path.join(os.tmpdir(), `gatehouse-bench-wide-${process.pid}.sql`);
  fs.writeFileSync(script, 'select * from bench_wide;\n');
  const out: { name: string; clients: number; r: PgbenchResult }[] = [];
  try {
    for (const clients of [1, 4]) {
      for (const [name, db] of [['unmasked', 'main'], ['masked', 'main-masked']] as const) {
        const t: Target = { name, conninfo: `host=127.0.0.1 port=${gw.pgPort} dbname=${db} user=bench sslmode=require`, password: key, note: '' };
        out.push({ name, clients, r: await pgbench(env, t, clients, SECONDS, gwPid, ['-f', script]) });
      }
    }
  } finally {
    fs.rmSync(script, { force: true });
  }
  return out;
}

/** Twenty rules of the kind a production policy has; none matches pgbench's SELECT. */
const REALISTIC_POLICY = {
  default: { action: 'allow' },
  rules: [
    { name: 'no-admin', match: { classes: ['admin'] }, action: 'block' },
    { name: 'no-procedural', match: { classes: ['procedural'] }, action: 'block' },
    { name: 'no-dcl', match: { classes: ['dcl'] }, action: 'block' },
    { name: 'no-drops', match: { types: ['DROP_TABLE', 'DROP_SCHEMA', 'DROP_DATABASE', 'TRUNCATE'] }, action: 'block' },
    { name: 'no-unbounded-deletes', match: { types: ['DELETE', 'UPDATE'], flags: ['without_where'] }, action: 'block' },
    { name: 'billing-writes', match: { tables: { write: ['billing.*'] } }, action: 'review', approvers: ['dba'] },
    { name: 'users-reads-by-agents', match: { kinds: ['agent'], tables: { read: ['public.users', 'auth.*'] } }, action: 'review', approvers: ['security'] },
    { name: 'secrets-schema', match: { schemas: { read: ['vault'], write: ['vault'] } }, action: 'block' },
    { name: 'prod-ddl', match: { connections: ['prod-*'], classes: ['ddl'] }, action: 'review', approvers: ['dba'], minApprovals: 2 },
    { name: 'contractors-no-writes', match: { groups: ['contractors'], classes: ['write', 'ddl', 'copy'] }, action: 'block' },
    { name: 'copy-out-large', match: { classes: ['copy'], identities: ['etl-*'] }, action: 'allow' },
    { name: 'copy-review', match: { classes: ['copy'] }, action: 'review', approvers: ['dba'] },
    { name: 'long-statements', match: { when: 'command.text.size() > 20000' }, action: 'review', approvers: ['dba'] },
    { name: 'agent-night-writes', match: { kinds: ['agent'], classes: ['write'], when: 'identity.name.startsWith("nightly-")' }, action: 'allow' },
    { name: 'agent-writes', match: { kinds: ['agent'], classes: ['write'] }, action: 'review', approvers: ['dba'], mode: 'defer' },
    { name: 'explain-analyze', match: { flags: ['analyze'] }, action: 'review', approvers: ['dba'] },
    { name: 'for-update-agents', match: { kinds: ['agent'], flags: ['for_update'] }, action: 'review', approvers: ['dba'] },
    { name: 'audit-table', match: { tables: { write: ['audit_log', 'public.audit_log'] } }, action: 'block' },
    { name: 'staging-free', match: { connections: ['staging-*'] }, action: 'allow' },
    { name: 'multi-statement-agents', match: { kinds: ['agent'], flags: ['multiple_statements'], classes: ['write'] }, action: 'review', approvers: ['dba'] },
  ],
};

const mb = (kb: number) => (kb / 1024).toFixed(1);
const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');

function table(rows: string[][], align: ('l' | 'r')[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r, ri) => {
      const line = r.map((c, i) => (align[i] === 'l' ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
      return ri === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

/** The helper's TLS cluster accepts only hostssl; allow plaintext too, so both can be measured. */
async function allowPlaintext(pgs: PgServer): Promise<void> {
  fs.appendFileSync(path.join(pgs.dataDir, 'pg_hba.conf'), 'hostnossl all all 127.0.0.1/32 scram-sha-256\n');
  const c = new pg.Client(connectionConfig(pgs));
  await c.connect();
  try {
    await c.query('select pg_reload_conf()');
  } finally {
    await c.end();
  }
  // The reload is asynchronous in the postmaster; wait until a plaintext login works.
  for (let i = 0; ; i++) {
    const p = new pg.Client(connectionConfig(pgs, { ssl: false }));
    try {
      await p.connect();
      await p.end();
      return;
    } catch (e) {
      await p.end().catch(() => {});
      if (i > 50) throw new Error(`plaintext login still refused after reload: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function pgbench(psqlEnv: Record<string, string>, t: Target, clients: number, seconds: number, gwPid?: number, script?: string[]): Promise<PgbenchResult> {
  const args = [...(script ?? ['-S']), '-M', 'extended', '-n', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(seconds), t.conninfo];
  const cpu0 = gwPid ? cpuSeconds(gwPid) : 0;
  const m0 = machineCpu();
  const r = await run(need('pgbench'), args, { env: { ...psqlEnv, PGPASSWORD: t.password } });
  const m1 = machineCpu();
  const machineBusy = (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total);
  const cpuSec = gwPid ? cpuSeconds(gwPid) - cpu0 : 0;
  const cpu = gwPid ? cpuSec / (r.ms / 1000) : undefined;
  const tps = /^tps = ([\d.]+) \(without initial connection time\)/m.exec(r.stdout);
  const lat = /^latency average = ([\d.]+) ms/m.exec(r.stdout);
  const tx = /^number of transactions actually processed: (\d+)/m.exec(r.stdout);
  const failed = /^number of failed transactions: (\d+)/m.exec(r.stdout);
  if (r.code !== 0 || !tps || !lat) {
    return { tps: NaN, latencyMs: NaN, transactions: 0, failed: 0, gatewayCpu: cpu, machineBusy, error: `exit ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}` };
  }
  const transactions = Number(tx?.[1] ?? 0);
  const gatewayUsPerTx = gwPid && transactions ? (cpuSec * 1e6) / transactions : undefined;
  return { tps: Number(tps[1]), latencyMs: Number(lat[1]), transactions, failed: Number(failed?.[1] ?? 0), gatewayCpu: cpu, gatewayUsPerTx, machineBusy };
}

interface StreamRun {
  label: string;
  ms: number;
  peakKb?: number;
  baseKb?: number;
  error?: string;
}

/** psql runs `sql` against t with its output to /dev/null; the gateway's VmRSS is sampled if gwPid is given. */
async function streamThrough(env: Record<string, string>, t: Target, label: string, sql: string, gwPid?: number): Promise<StreamRun> {
  const base = gwPid ? vmRssKb(gwPid) : undefined;
  const sampler = gwPid ? sampleRss(gwPid, 100) : null;
  const r = await run(need('psql'), [t.conninfo, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], { env: { ...env, PGPASSWORD: t.password }, stdoutToNull: true });
  const peak = sampler?.stop();
  const s: StreamRun = { label, ms: r.ms, peakKb: peak?.peakKb, baseKb: base, error: r.code === 0 ? undefined : r.stderr.trim().split('\n').slice(-2).join(' | ') };
  console.log(`  ${s.label}: ${(r.ms / 1000).toFixed(2)} s${peak ? `, gateway VmRSS peak ${mb(peak.peakKb)} MB (before ${mb(base!)} MB, ${peak.samples} samples)` : ''}${s.error ? ` FAILED ${s.error}` : ''}`);
  return s;
}

// ---------------------------------------------------------------------------
// CPU profile summary
// ---------------------------------------------------------------------------

/**
 * A module preloaded into the gateway that records a CPU profile (like `node --cpu-prof`)
 * and writes it to dir/gateway-<pid>.cpuprofile when the process exits.
 */
function writeProfilerPreload(dir: string): string {
  const file = path.join(dir, 'gatehouse-cpu-prof-preload.mjs');
  fs.writeFileSync(
    file,
    `import inspector from 'node:inspector';
import fs from 'node:fs';
const session = new inspector.Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 200 });
session.post('Profiler.start');
process.once('exit', () => {
  // Same-thread inspector sessions answer synchronously, so this completes before exit.
  session.post('Profiler.stop', (err, res) => {
    if (!err) fs.writeFileSync(${JSON.stringify(dir)} + '/gateway-' + process.pid + '.cpuprofile', JSON.stringify(res.profile));
  });
});
`,
  );
  return file;
}


// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

let gwPidForProfile = 0;

async function main(): Promise<void> {
  if (SSH === 'only') {
    await sshBench();
    return;
  }
  if (MYSQL === 'only') {
    await mysqlBench();
    return;
  }
  if (HTTP === 'only') {
    await httpBench();
    return;
  }
  for (const b of ['initdb', 'postgres', 'psql', 'pgbench', 'pgbouncer']) need(b);
  const started = Date.now();
  const versions = (await run(need('pgbench'), ['--version'])).stdout.trim();
  const pgbVersion = (await run(need('pgbouncer'), ['--version'])).stdout.split('\n')[0]!.trim();
  console.log(`# gatehouse bench: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, ${versions}, ${pgbVersion}`);
  console.log(`# pgbench -S -M extended -T ${SECONDS}, clients ${CLIENTS.join(',')}, scale ${SCALE}; streaming ${ROWS} rows`);
  console.log(`# load average at start: ${loadavg()}`);
  if (os.loadavg()[0]! > os.cpus().length * 0.5) console.log('# WARNING: the machine is already busy; absolute numbers and ratios will be noisy');
  console.log('');

  let pgs: PgServer | undefined;
  let pgb: Pgbouncer | undefined;
  let gw: GatewayUnderTest | undefined;
  let gwPolicy: GatewayUnderTest | undefined;
  const savedNodeOptions = process.env.NODE_OPTIONS;
  try {
    pgs = await startPostgres({ ssl: true });
    await allowPlaintext(pgs);
    // pgbouncer and the gateway reach the target in plaintext: pgbouncer's clients are
    // plaintext too (the helper configures no client TLS), the gateway's must use TLS.
    pgb = await startPgbouncer({ ...pgs, caCertPem: undefined }, { poolMode: 'transaction', poolSize: 10 });
    if (CPU_PROF) {
      fs.mkdirSync(CPU_PROF, { recursive: true });
      // --cpu-prof is not allowed in NODE_OPTIONS, so a preload drives the inspector's
      // profiler instead. Inherited by the gateway child only: restored right after the spawn.
      process.env.NODE_OPTIONS = `${savedNodeOptions ?? ''} --import=${writeProfilerPreload(CPU_PROF)}`.trim();
    }
    try {
      gw = await startGateway({
        target: pgs,
        extra: {
          connections: [
            { name: 'main', type: 'postgres', host: pgs.host, port: pgs.port, database: pgs.database, user: pgs.user, password: 'file:target-password', tls: 'disable' },
            { name: 'main-tls', type: 'postgres', host: pgs.host, port: pgs.port, database: pgs.database, user: pgs.user, password: 'file:target-password', tls: 'require' },
            // Same target, every detector and the default column rules on.
            { name: 'main-masked', type: 'postgres', host: pgs.host, port: pgs.port, database: pgs.database, user: pgs.user, password: 'file:target-password', tls: 'disable', mask: {} },
          ],
        },
      });
    } finally {
      if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = savedNodeOptions;
    }
    // The same gateway with a realistic 20-rule policy that a pgbench SELECT walks in full
    // (no rule matches a read of pgbench_accounts), to measure the guard's cost on the wire.
    gwPolicy = await startGateway({
      target: pgs,
      extra: {
        connections: [{ name: 'main', type: 'postgres', host: pgs.host, port: pgs.port, database: pgs.database, user: pgs.user, password: 'file:target-password', tls: 'disable' }],
        policy: REALISTIC_POLICY,
      },
    });
    const gwPid = gw.pid()!;
    gwPidForProfile = gwPid;
    await new Promise((r) => setTimeout(r, 1000));
    const rssIdle = vmRssKb(gwPid);
    const key = await gw.createKey('bench', { connections: 'main,main-tls,main-masked' });
    const policyKey = await gwPolicy.createKey('bench', { connections: 'main' });

    const direct = `host=${pgs.host} port=${pgs.port} dbname=${pgs.database} user=${pgs.user}`;
    const targets: Target[] = [
      { name: 'direct', conninfo: `${direct} sslmode=disable`, password: pgs.password, note: 'plaintext' },
      { name: 'direct-tls', conninfo: `${direct} sslmode=require`, password: pgs.password, note: 'TLS' },
      { name: 'pgbouncer', conninfo: `host=127.0.0.1 port=${pgb.port} dbname=${pgs.database} user=${pgs.user} sslmode=disable`, password: pgs.password, note: 'plaintext client + upstream, transaction pool 10' },
      { name: 'gateway', conninfo: `host=127.0.0.1 port=${gw.pgPort} dbname=main user=bench sslmode=require`, password: key, note: 'TLS client, plaintext upstream, recording' },
      { name: 'gateway-tls-up', conninfo: `host=127.0.0.1 port=${gw.pgPort} dbname=main-tls user=bench sslmode=require`, password: key, note: 'TLS client, TLS upstream, recording' },
      { name: 'gateway-policy', conninfo: `host=127.0.0.1 port=${gwPolicy.pgPort} dbname=main user=bench sslmode=require`, password: policyKey, note: 'as gateway, with a 20-rule policy' },
    ];
    const env = { PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'gatehouse-bench' };

    // 1. Initialize directly.
    const t0 = performance.now();
    const init = await run(need('pgbench'), ['-i', '-q', '-s', String(SCALE), targets[0]!.conninfo], { env: { ...env, PGPASSWORD: pgs.password } });
    if (init.code !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
    console.log(`pgbench -i -s ${SCALE}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const selectSql = `select g, md5(g::text) from generate_series(1,${ROWS}) g`;
    const copySql = `copy (${selectSql}) to stdout`;
    const stream: StreamRun[] = [];
    // The streaming RSS once on the fresh gateway, before pgbench has grown its heap.
    if (ROWS > 0) stream.push(await streamThrough(env, targets[3]!, `psql select ${ROWS} rows via gateway (fresh)`, selectSql, gwPid));

    // Warm caches and the gateway's JIT a little, so the first measured target is not penalized.
    for (const t of [targets[0]!, targets[3]!]) await pgbench(env, t, 2, 2);

    // 2. pgbench -S on every target, client counts interleaved so drift affects all alike.
    const results = new Map<string, PgbenchResult>();
    for (const c of CLIENTS) {
      for (const t of targets) {
        const isGw = t.name.startsWith('gateway');
        const r = await pgbench(env, t, c, SECONDS, isGw ? (t.name === 'gateway-policy' ? gwPolicy.pid()! : gwPid) : undefined);
        results.set(`${t.name}/${c}`, r);
        const cpu = r.gatewayCpu !== undefined ? `, gateway CPU ${(r.gatewayCpu * 100).toFixed(0)}% of a core (${fmt(r.gatewayUsPerTx ?? NaN)} µs/tx)` : '';
        console.log(`  ${t.name.padEnd(15)} c=${String(c).padEnd(2)} ${r.error ? `FAILED ${r.error}` : `tps ${fmt(r.tps)}  latency ${fmt(r.latencyMs, 3)} ms${r.failed ? `  failed ${r.failed}` : ''}${cpu}`}`);
      }
    }
    const rssAfterPgbench = vmRssKb(gwPid);

    // 3. Stream a big result through the gateway (now warm) and directly.
    if (ROWS > 0) {
      for (const [kind, sql] of [['select', selectSql], ['copy', copySql]] as const) {
        for (const t of [targets[3]!, targets[1]!, targets[0]!]) {
          const isGw = t.name === 'gateway';
          stream.push(await streamThrough(env, t, `psql ${kind} ${ROWS} rows via ${t.name}${isGw ? ' (after pgbench)' : ''}`, sql, isGw ? gwPid : undefined));
        }
      }
    }

    // 4. Masking: a 1,000-row, 10-column result, masked vs not, through the same gateway.
    const maskRows = await maskingBench(env, pgs, gw, key, gwPid);

    // ---- report ----
    console.log('\n=== pgbench -S -M extended (select-only, extended protocol) ===');
    const rows: string[][] = [['target', 'clients', 'tps', 'latency ms', 'gw CPU', 'gw µs/tx', 'box busy', 'setup']];
    for (const c of CLIENTS) {
      for (const t of targets) {
        const r = results.get(`${t.name}/${c}`)!;
        rows.push([
          t.name,
          String(c),
          r.error ? 'FAILED' : fmt(r.tps),
          r.error ? '-' : fmt(r.latencyMs, 3),
          r.gatewayCpu !== undefined ? `${(r.gatewayCpu * 100).toFixed(0)}%` : '',
          r.gatewayUsPerTx !== undefined ? fmt(r.gatewayUsPerTx) : '',
          `${(r.machineBusy * 100).toFixed(0)}%`,
          t.note,
        ]);
      }
    }
    console.log(table(rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'l']));
    console.log('gw CPU: the gateway process\'s CPU time over the run, in % of one core; box busy: all CPUs of the machine, everything included.');

    console.log('\n=== ratios (TPS) and added latency ===');
    const ratioRows: string[][] = [['clients', 'gw/direct', 'gw/direct-tls', 'gw/pgbouncer', 'gw-tls-up/direct-tls', 'gw-tls-up/pgbouncer']];
    const get = (n: string, c: number) => results.get(`${n}/${c}`)!;
    for (const c of CLIENTS) {
      const g = get('gateway', c).tps;
      const gt = get('gateway-tls-up', c).tps;
      ratioRows.push([String(c), fmt(g / get('direct', c).tps, 3), fmt(g / get('direct-tls', c).tps, 3), fmt(g / get('pgbouncer', c).tps, 3), fmt(gt / get('direct-tls', c).tps, 3), fmt(gt / get('pgbouncer', c).tps, 3)]);
    }
    console.log(table(ratioRows, ['r', 'r', 'r', 'r', 'r', 'r']));
    if (CLIENTS.includes(1)) {
      const l = (n: string) => get(n, 1).latencyMs;
      console.log(`added latency at 1 client: gateway − direct = ${fmt(l('gateway') - l('direct'), 3)} ms; gateway − direct-tls = ${fmt(l('gateway') - l('direct-tls'), 3)} ms; gateway − pgbouncer = ${fmt(l('gateway') - l('pgbouncer'), 3)} ms; gateway-tls-up − direct-tls = ${fmt(l('gateway-tls-up') - l('direct-tls'), 3)} ms`);
    }
    console.log(`gateway VmRSS: ${mb(rssIdle)} MB idle after start, ${mb(rssAfterPgbench)} MB after the pgbench runs`);
    for (const c of CLIENTS) console.log(`guard policy cost at ${c} client(s): gateway-policy/gateway TPS = ${fmt(get('gateway-policy', c).tps / get('gateway', c).tps, 3)} (goal ≥ 0.95)`);

    if (maskRows.length) {
      console.log('\n=== masking: select of 1,000 rows x 10 columns (emails, phones, tokens, text) ===');
      const mrows: string[][] = [['connection', 'clients', 'tps', 'rows/s', 'gw µs/tx']];
      for (const m of maskRows) mrows.push([m.name, String(m.clients), fmt(m.r.tps), fmt(m.r.tps * 1000), m.r.gatewayUsPerTx !== undefined ? fmt(m.r.gatewayUsPerTx) : '']);
      console.log(table(mrows, ['l', 'r', 'r', 'r', 'r']));
      for (const c of [...new Set(maskRows.map((m) => m.clients))]) {
        const on = maskRows.find((m) => m.clients === c && m.name === 'masked')!.r.tps;
        const off = maskRows.find((m) => m.clients === c && m.name === 'unmasked')!.r.tps;
        console.log(`masking cost at ${c} client(s): masked/unmasked TPS = ${fmt(on / off, 3)} (goal ≥ 0.9)`);
      }
    }

    if (stream.length) {
      console.log(`\n=== ${ROWS} rows streamed with psql (output to /dev/null) ===`);
      const srows: string[][] = [['run', 'elapsed s', 'gateway RSS before MB', 'gateway RSS peak MB']];
      for (const s of stream) srows.push([s.label + (s.error ? ' (FAILED)' : ''), (s.ms / 1000).toFixed(2), s.baseKb !== undefined ? mb(s.baseKb) : '', s.peakKb !== undefined ? mb(s.peakKb) : '']);
      console.log(table(srows, ['l', 'r', 'r', 'r']));
    }

    console.log('\n=== goals ===');
    const c8 = CLIENTS.includes(8) ? get('gateway', 8).tps / get('pgbouncer', 8).tps : NaN;
    const add1 = CLIENTS.includes(1) ? get('gateway', 1).latencyMs - get('direct', 1).latencyMs : NaN;
    const peakAll = Math.max(...stream.filter((s) => s.peakKb !== undefined).map((s) => s.peakKb!));
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    console.log(`gateway/pgbouncer TPS at 8 clients >= 0.9: ${fmt(c8, 3)} (${verdict(c8 >= 0.9)})`);
    console.log(`added latency at 1 client <= 0.1 ms: ${fmt(add1, 3)} ms (${verdict(add1 <= 0.1)})`);

    if (stream.length) {
      const fresh = stream.find((x) => x.label.includes('(fresh)'))?.peakKb ?? NaN;
      console.log(`gateway RSS while ${ROWS} rows stream < 150 MB: peak ${mb(peakAll)} MB over all runs (${verdict(peakAll / 1024 < 150)}); ${mb(fresh)} MB on the fresh gateway (${verdict(fresh / 1024 < 150)})`);
    }
    console.log(`\nload average at end: ${loadavg()}; total bench time ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    await gw?.stop().catch((e) => console.error(`stopping the gateway: ${e.message}`));
    await gwPolicy?.stop().catch((e) => console.error(`stopping the policy gateway: ${e.message}`));
    await pgb?.stop().catch((e) => console.error(`stopping pgbouncer: ${e.message}`));
    await pgs?.stop().catch((e) => console.error(`stopping postgres: ${e.message}`));
  }
  if (CPU_PROF) {
    const files = fs.readdirSync(CPU_PROF).filter((f) => f.startsWith(`gateway-${gwPidForProfile}.`)).map((f) => path.join(CPU_PROF, f));
    const newest = files.map((f) => ({ f, size: fs.statSync(f).size })).sort((a, b) => b.size - a.size)[0];
    if (newest) {
      console.log(`\n=== gateway CPU profile (${newest.f}) ===`);
      console.log(summarizeProfile(newest.f));
    } else console.log(`\nno CPU profile found in ${CPU_PROF}`);
  }
  // After the PostgreSQL part has stopped everything it started, so the two do not compete.
  if (MYSQL !== '0') await mysqlBench();
  if (SSH !== '0') await sshBench();
  if (HTTP !== '0') await httpBench();
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench failed: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
