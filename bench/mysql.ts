/**
 * MySQL part of `npm run bench`: sysbench oltp_point_select against a throwaway MariaDB,
 * directly and through the gateway, in the same run. Also runs on its own:
 * `node --import tsx bench/mysql.ts`.
 *
 * Targets:
 *   direct         sysbench → MariaDB, plaintext
 *   gateway-plain  sysbench → gateway (plaintext, tls.allowPlaintext) → MariaDB (plaintext):
 *                  like for like with direct, the gateway's own cost
 *   gateway        sysbench → gateway (TLS) → MariaDB (plaintext), recording every statement
 *
 * There is no direct TLS target: sysbench 1.0 always presents a client certificate with
 * --mysql-ssl=on (client-cert.pem in its working directory), and the test helper's TLS MariaDB
 * verifies client certificates against a CA whose key it does not keep.
 *
 * Each run is `sysbench oltp_point_select --point-selects=1` (one primary-key SELECT per event,
 * so an event's latency is one query's), for each client count, targets interleaved so drift
 * affects all alike. Printed: QPS, p50 latency (sysbench --percentile=50), average latency, the
 * gateway's CPU per query, the ratio gateway/direct QPS and the p50 the gateway adds.
 *
 * Environment: BENCH_SECONDS (duration of each run, default 15), BENCH_MYSQL_CLIENTS (default
 * "1,8"), BENCH_MYSQL_TABLE_SIZE (default 100000), BENCH_MYSQL_PS_MODE (sysbench --db-ps-mode,
 * default MYSQL_PS_MODE_DEFAULT).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { generate } from 'selfsigned';
import { findBinary } from '../test/helpers/postgres.ts';
import { startMariadb, type MariaServer } from '../test/helpers/mariadb.ts';
import { startGateway, type GatewayUnderTest } from '../test/helpers/gateway.ts';
import { cpuSeconds, run } from './proc.ts';

/**
 * How sysbench sends statements: 'disable' = COM_QUERY text; 'auto' = prepared statements
 * (COM_STMT_PREPARE once per connection, then COM_STMT_EXECUTE), sysbench's own default and so
 * what its users get.
 */
export const MYSQL_PS_MODE_DEFAULT: 'disable' | 'auto' = 'auto';
const MYSQL_PS_MODE = process.env.BENCH_MYSQL_PS_MODE ?? MYSQL_PS_MODE_DEFAULT;

interface Result {
  qps: number;
  p50Ms: number;
  avgMs: number;
  queries: number;
  errors: number;
  gwUsPerQuery?: number;
  error?: string;
}

const num = (out: string, re: RegExp) => {
  const m = re.exec(out);
  return m ? Number(m[1]) : NaN;
};
const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r, ri) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ') + (ri === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('  ')}` : '')).join('\n');
}

/** Runs the MySQL benchmark and prints its report. Returns false when it could not run (missing binaries). */
export async function mysqlBench(): Promise<boolean> {
  const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
  const CLIENTS = (process.env.BENCH_MYSQL_CLIENTS ?? '1,8').split(',').map((s) => Number(s.trim())).filter((n) => n > 0);
  const TABLE_SIZE = Number(process.env.BENCH_MYSQL_TABLE_SIZE ?? 100_000);
  const missing = ['mariadbd', 'mariadb-install-db', 'mariadb', 'sysbench'].filter((b) => !findBinary(b));
  if (missing.length) {
    console.log(`\n=== MySQL: skipped (${missing.join(', ')} not installed) ===`);
    return false;
  }
  const sysbench = findBinary('sysbench')!;
  const version = (await run(sysbench, ['--version'])).stdout.trim();
  console.log(`\n# MySQL: ${version}, oltp_point_select --point-selects=1, ${SECONDS} s per run, clients ${CLIENTS.join(',')}, table size ${TABLE_SIZE}, --db-ps-mode=${MYSQL_PS_MODE}`);

  let maria: MariaServer | undefined;
  let gw: GatewayUnderTest | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-bench-mysql-'));
  try {
    maria = await startMariadb({});
    const admin = await run(findBinary('mariadb')!, ['--no-defaults', '-uroot', `--socket=${maria.socket}`, '-e', 'CREATE DATABASE sbtest'], {
      env: { MYSQL_PWD: maria.password },
    });
    if (admin.code !== 0) throw new Error(`MariaDB setup failed: ${admin.stderr}`);
    gw = await startGateway({
      mysql: true,
      extra: {
        tls: { allowPlaintext: true },
        connections: [{ name: 'sbtest', type: 'mysql', host: maria.host, port: maria.port, database: 'sbtest', user: 'root', password: maria.password, tls: 'disable' }],
      },
    });
    const key = await gw.createKey('bench', { connections: 'sbtest' });
    const gwPid = gw.pid()!;

    // sysbench 1.0's --mysql-ssl=on reads client-key.pem, client-cert.pem and cacert.pem from
    // its working directory (and verifies the server against cacert.pem).
    const cert = await generate([{ name: 'commonName', value: 'sysbench' }], { keyType: 'rsa', keySize: 2048, algorithm: 'sha256', notAfterDate: new Date(Date.now() + 86400e3) } as any);
    fs.writeFileSync(path.join(dir, 'client-key.pem'), cert.private, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'client-cert.pem'), cert.cert);
    fs.copyFileSync(path.join(gw.dir, 'data/tls/gateway.crt'), path.join(dir, 'cacert.pem'));

    const common = ['oltp_point_select', '--db-driver=mysql', '--tables=1', `--table-size=${TABLE_SIZE}`, '--mysql-db=sbtest'];
    const t0 = performance.now();
    const prep = await run(sysbench, [...common, `--mysql-socket=${maria.socket}`, '--mysql-user=root', `--mysql-password=${maria.password}`, 'prepare'], { cwd: dir });
    if (prep.code !== 0) throw new Error(`sysbench prepare failed: ${prep.stderr}${prep.stdout}`);
    console.log(`sysbench prepare: ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const viaGw = ['--mysql-host=127.0.0.1', `--mysql-port=${gw.mysqlPort}`, '--mysql-user=bench', `--mysql-password=${key}`];
    const targets: { name: string; args: string[]; note: string; gateway?: boolean }[] = [
      { name: 'direct', args: ['--mysql-host=127.0.0.1', `--mysql-port=${maria.port}`, '--mysql-user=root', `--mysql-password=${maria.password}`, '--mysql-ssl=off'], note: 'plaintext' },
      { name: 'gateway-plain', args: [...viaGw, '--mysql-ssl=off'], note: 'plaintext client and upstream, recording', gateway: true },
      { name: 'gateway', args: [...viaGw, '--mysql-ssl=on'], note: 'TLS client, plaintext upstream, recording', gateway: true },
    ];

    const once = async (t: (typeof targets)[number], clients: number, seconds: number): Promise<Result> => {
      const cpu0 = t.gateway ? cpuSeconds(gwPid) : 0;
      const r = await run(
        sysbench,
        [...common, ...t.args, '--point-selects=1', `--db-ps-mode=${MYSQL_PS_MODE}`, `--threads=${clients}`, `--time=${seconds}`, '--percentile=50', 'run'],
        { cwd: dir },
      );
      const cpu = t.gateway ? cpuSeconds(gwPid) - cpu0 : 0;
      const out = r.stdout;
      const queries = num(out, /^\s*queries:\s+(\d+)/m);
      const res: Result = {
        qps: num(out, /^\s*queries:\s+\d+\s+\(([\d.]+) per sec\.\)/m),
        p50Ms: num(out, /^\s*50th percentile:\s+([\d.]+)/m),
        avgMs: num(out, /^\s*avg:\s+([\d.]+)/m),
        queries,
        errors: num(out, /^\s*ignored errors:\s+(\d+)/m),
        gwUsPerQuery: t.gateway && queries ? (cpu * 1e6) / queries : undefined,
      };
      if (r.code !== 0 || !Number.isFinite(res.qps)) res.error = `exit ${r.code}: ${(r.stderr || out).trim().split('\n').slice(-3).join(' | ')}`;
      return res;
    };

    // Warm up (buffer pool, the gateway's JIT).
    for (const t of targets) await once(t, 2, 2);

    const results = new Map<string, Result>();
    for (const c of CLIENTS) {
      for (const t of targets) {
        const r = await once(t, c, SECONDS);
        results.set(`${t.name}/${c}`, r);
        console.log(
          `  ${t.name.padEnd(13)} c=${String(c).padEnd(2)} ${r.error ? `FAILED ${r.error}` : `qps ${fmt(r.qps)}  p50 ${fmt(r.p50Ms, 2)} ms  avg ${fmt(r.avgMs, 2)} ms${r.errors ? `  errors ${r.errors}` : ''}${r.gwUsPerQuery !== undefined ? `  gateway ${fmt(r.gwUsPerQuery)} CPU µs/query` : ''}`}`,
        );
      }
    }

    console.log(`\n=== MySQL: sysbench oltp_point_select (--db-ps-mode=${MYSQL_PS_MODE}) ===`);
    const rows = [['target', 'clients', 'qps', 'p50 ms', 'avg ms', 'gw µs/query', 'setup']];
    for (const c of CLIENTS) {
      for (const t of targets) {
        const r = results.get(`${t.name}/${c}`)!;
        rows.push([t.name, String(c), r.error ? 'FAILED' : fmt(r.qps), fmt(r.p50Ms, 2), fmt(r.avgMs, 2), r.gwUsPerQuery !== undefined ? fmt(r.gwUsPerQuery) : '', t.note]);
      }
    }
    console.log(table(rows));
    const ratio = [['clients', 'gw-plain/direct qps', 'gw/direct qps', 'gw-plain − direct p50 ms', 'gw − direct p50 ms']];
    for (const c of CLIENTS) {
      const g = results.get(`gateway/${c}`)!;
      const gp = results.get(`gateway-plain/${c}`)!;
      const d = results.get(`direct/${c}`)!;
      ratio.push([String(c), fmt(gp.qps / d.qps, 3), fmt(g.qps / d.qps, 3), fmt(gp.p50Ms - d.p50Ms, 3), fmt(g.p50Ms - d.p50Ms, 3)]);
    }
    console.log(`\n${table(ratio)}`);
    console.log('p50: sysbench --percentile=50, from its latency histogram (logarithmic buckets, about 1.6% wide), printed with 2 decimals.');
    return true;
  } finally {
    await gw?.stop().catch((e) => console.error(`stopping the gateway: ${e.message}`));
    await maria?.stop().catch((e) => console.error(`stopping MariaDB: ${e.message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  mysqlBench().then(
    () => process.exit(0),
    (e) => {
      console.error(`MySQL bench failed: ${(e as Error).stack ?? e}`);
      process.exit(1);
    },
  );
}
