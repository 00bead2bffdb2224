/**
 * Runs the real gateway as a child process (`bin/gatehouse.mjs serve`), the way a user
 * does, with a config file in a temp dir, on free loopback ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { freePort } from './net.ts';
import { registerEmergencyCleanup, type PgServer } from './postgres.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/gatehouse.mjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface GatewayOptions {
  /** the PostgreSQL target behind connection "main"; without it there is no "main" connection */
  target?: PgServer;
  /** also listen for MySQL clients (on gw.mysqlPort) */
  mysql?: boolean;
  /** "sqlite" (default) or a postgres:// URL for the gateway's own store */
  store?: string;
  /** TLS mode the gateway uses towards the target; default "require" when the target has TLS, else "disable" */
  targetTls?: 'disable' | 'prefer' | 'require' | 'verify-full';
  /** merged over the generated config */
  extra?: Record<string, unknown>;
}

export interface GatewayUnderTest {
  dir: string;
  configPath: string;
  pgPort: number;
  apiPort: number;
  /** set when started with `mysql: true` */
  mysqlPort?: number;
  /** output of the current process so far */
  output(): { stdout: string; stderr: string };
  cli(args: string[], env?: Record<string, string>): Promise<CliResult>;
  /** creates a key granted connection "main" by default; returns the key */
  createKey(name: string, opts?: { kind?: string; groups?: string; connections?: string; expires?: string }): Promise<string>;
  /** libpq connection string for psql/pgbench */
  dsn(user: string, key: string, db?: string, extra?: string): string;
  /** pg.Client config */
  pgConfig(user: string, key: string, db?: string): { host: string; port: number; user: string; password: string; database: string; ssl: { rejectUnauthorized: false } };
  pid(): number | undefined;
  restart(): Promise<void>;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

export function runCli(configPath: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args, '--config', configPath], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export async function startGateway(opts: GatewayOptions): Promise<GatewayUnderTest> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-gw-'));
  const pgPort = await freePort();
  const apiPort = await freePort();
  const mysqlPort = opts.mysql ? await freePort() : undefined;
  const passwordFile = path.join(dir, 'target-password');
  if (opts.target) fs.writeFileSync(passwordFile, opts.target.password, { mode: 0o600 });
  const config = {
    dataDir: path.join(dir, 'data'),
    store: opts.store ?? 'sqlite',
    listen: { api: `127.0.0.1:${apiPort}`, postgres: `127.0.0.1:${pgPort}`, ...(mysqlPort ? { mysql: `127.0.0.1:${mysqlPort}` } : {}) },
    connections: !opts.target ? [] : [
      {
        name: 'main',
        type: 'postgres',
        host: opts.target.host,
        port: opts.target.port,
        database: opts.target.database,
        user: opts.target.user,
        password: `file:${passwordFile}`,
        tls: opts.targetTls ?? (opts.target.caCertPem ? 'require' : 'disable'),
      },
    ],
    // Tests of other features run under an allow-all policy; guard tests bring their own.
    policy: { default: { action: 'allow' } },
    ...opts.extra,
  };
  const configPath = path.join(dir, 'gatehouse.yaml');
  fs.writeFileSync(configPath, YAML.stringify(config));

  let proc: ChildProcess | null = null;
  let stdout = '';
  let stderr = '';
  const unregister = registerEmergencyCleanup(() => proc?.kill('SIGKILL'));

  const launch = () =>
    new Promise<void>((resolve, reject) => {
      stdout = '';
      stderr = '';
      // GATEHOUSE_CPU_PROF=DIR: a V8 CPU profile of the gateway, written to DIR when it stops (benchmarks).
      const prof = process.env.GATEHOUSE_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GATEHOUSE_CPU_PROF}`] : [];
      const p = spawn(process.execPath, [...prof, BIN, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc = p;
      const t = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`gateway did not start within 30 s\nstdout: ${stdout}\nstderr: ${stderr}`));
      }, 30_000);
      p.stdout!.on('data', (d) => {
        stdout += d;
        if (stdout.includes('gatehouse listening')) {
          clearTimeout(t);
          resolve();
        }
      });
      p.stderr!.on('data', (d) => (stderr += d));
      p.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`gateway exited with ${code} before listening\nstderr: ${stderr}`));
      });
    });

  const waitExit = (p: ChildProcess, ms: number) =>
    new Promise<void>((resolve) => {
      if (p.exitCode !== null || p.signalCode !== null) return resolve();
      const t = setTimeout(() => {
        p.kill('SIGKILL');
      }, ms);
      p.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });

  await launch();

  const gw: GatewayUnderTest = {
    dir,
    configPath,
    pgPort,
    apiPort,
    mysqlPort,
    output: () => ({ stdout, stderr }),
    cli: (args, env) => runCli(configPath, args, env),
    async createKey(name, o = {}) {
      const args = ['keys', 'create', '--name', name, '--connections', o.connections ?? 'main', '--json'];
      if (o.kind) args.push('--kind', o.kind);
      if (o.groups) args.push('--groups', o.groups);
      if (o.expires) args.push('--expires', o.expires);
      const r = await runCli(configPath, args);
      if (r.code !== 0) throw new Error(`keys create failed: ${r.stderr}`);
      return JSON.parse(r.stdout).key as string;
    },
    dsn: (user, key, db = 'main', extra = '') => `host=127.0.0.1 port=${pgPort} dbname=${db} user=${user} password=${key} sslmode=require ${extra}`.trim(),
    pgConfig: (user, key, db = 'main') => ({ host: '127.0.0.1', port: pgPort, user, password: key, database: db, ssl: { rejectUnauthorized: false } }),
    pid: () => proc?.pid,
    async restart() {
      if (proc) {
        proc.kill('SIGTERM');
        await waitExit(proc, 10_000);
      }
      await launch();
    },
    async kill9() {
      if (!proc) return;
      proc.removeAllListeners('exit');
      proc.kill('SIGKILL');
      await waitExit(proc, 5000);
    },
    async stop() {
      if (proc) {
        proc.removeAllListeners('exit');
        proc.kill('SIGTERM');
        await waitExit(proc, 10_000);
        proc = null;
      }
      unregister();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return gw;
}
