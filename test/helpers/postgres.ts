/**
 * Throwaway PostgreSQL clusters for tests: real server, real SCRAM, optional
 * TLS, on a random port, gone again after stop().
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { generate } from 'selfsigned';
import { freePort } from './net.ts';
import { unavailable } from './requirements.ts';

export interface PgServer {
  host: '127.0.0.1';
  port: number;
  user: 'postgres';
  password: string;
  database: 'postgres';
  /** No sslmode in it: node-pg treats sslmode=require as verify-full, so pass `ssl` explicitly. */
  url: string;
  dataDir: string;
  /** The server's self-signed certificate (it is its own CA); set only with ssl. */
  caCertPem?: string;
  logFile: string;
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Serve TLS and accept ONLY TLS over TCP (hostssl), so a test can prove TLS was used. */
  ssl?: boolean;
}

// ---------------------------------------------------------------------------
// Binaries and the OS user
// ---------------------------------------------------------------------------

let cachedBinDir: string | null | undefined;

/**
 * The bin dir of the newest installed PostgreSQL. Debian's /usr/bin entries
 * are wrappers that need a configured cluster, and `pg_config --bindir` can
 * belong to a different (client-only) version, so the versioned dirs win.
 */
export function pgBinDir(): string | null {
  if (cachedBinDir !== undefined) return cachedBinDir;
  cachedBinDir = null;
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base)
    ? fs.readdirSync(base).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a))
    : [];
  for (const v of versions) {
    const dir = path.join(base, v, 'bin');
    if (isExecutable(path.join(dir, 'initdb')) && isExecutable(path.join(dir, 'postgres'))) return (cachedBinDir = dir);
  }
  const r = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  if (dir && isExecutable(path.join(dir, 'initdb'))) return (cachedBinDir = dir);
  const initdb = findOnPath('initdb');
  if (initdb) cachedBinDir = path.dirname(initdb);
  return cachedBinDir;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function findOnPath(name: string): string | null {
  // sbin dirs are added because daemons like pgbouncer live there and CI's
  // PATH for a non-login shell may lack them.
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    if (d && isExecutable(path.join(d, name))) return path.join(d, name);
  }
  return null;
}

const PG_BINARIES = new Set(['initdb', 'postgres', 'pg_ctl', 'psql', 'pg_dump', 'pg_isready']);

/** Absolute path of a binary, looking in the PostgreSQL bin dir first for PostgreSQL's own tools. */
export function findBinary(name: string): string | null {
  const dir = PG_BINARIES.has(name) ? pgBinDir() : null;
  if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  return findOnPath(name);
}

export function hasBinary(name: string): boolean {
  return findBinary(name) !== null;
}

export interface RunAs {
  uid: number;
  gid: number;
}

let cachedRunAs: RunAs | null | undefined;

/**
 * PostgreSQL and pgbouncer refuse to run as root, and CI here runs as root.
 * Rather than wrapping in `runuser` (which stays as an intermediate parent
 * and swallows our signals), children are spawned with uid/gid directly;
 * libuv then also drops root's supplementary groups. Returns null when not
 * root (run as ourselves).
 */
export function serviceUser(): RunAs | null {
  if (cachedRunAs !== undefined) return cachedRunAs;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return (cachedRunAs = null);
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error('running as root but there is no "postgres" OS user to run PostgreSQL/pgbouncer as');
  }
  return (cachedRunAs = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) });
}

function hasServiceUser(): boolean {
  try {
    serviceUser();
    return true;
  } catch {
    return false;
  }
}

/** Skips the test when a binary (or the postgres OS user) is missing; fails in CI (requirements.ts). */
export function skipUnlessAvailable(t: { skip(message?: string): void }, ...bins: string[]): boolean {
  const missing = bins.filter((b) => !hasBinary(b));
  if (bins.length > 0 && !hasServiceUser()) missing.push('"postgres" OS user (needed when running as root)');
  const why = unavailable(missing);
  if (why !== null) t.skip(why);
  return why !== null;
}

// ---------------------------------------------------------------------------
// Last-resort cleanup
// ---------------------------------------------------------------------------

const emergencyCleanups = new Set<() => void>();
let hooksInstalled = false;

function runEmergencyCleanups(): void {
  for (const fn of emergencyCleanups) {
    try {
      fn();
    } catch {
      // best effort: the process is going away anyway
    }
  }
  emergencyCleanups.clear();
}

/**
 * Registers a synchronous cleanup for when a test process dies without
 * calling stop(), so no orphaned server keeps a port and a temp dir. Returns
 * the unregister function.
 */
export function registerEmergencyCleanup(fn: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.on('exit', runEmergencyCleanups);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      const handler = () => {
        runEmergencyCleanups();
        process.removeListener(sig, handler);
        // Re-raise so the default action (exit by that signal) still happens
        // unless someone else has taken responsibility for the signal.
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      };
      process.on(sig, handler);
    }
  }
  emergencyCleanups.add(fn);
  return () => {
    emergencyCleanups.delete(fn);
  };
}

// ---------------------------------------------------------------------------
// Process helpers shared with pgbouncer.ts
// ---------------------------------------------------------------------------

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves true if the child exited within timeoutMs. */
export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.removeListener('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Sends each signal in turn, escalating when the previous one is ignored for too long. */
export async function terminate(child: ChildProcess, steps: Array<[NodeJS.Signals, number]>): Promise<void> {
  for (const [sig, ms] of steps) {
    if (hasExited(child)) return;
    child.kill(sig);
    if (await waitForExit(child, ms)) return;
  }
  if (!hasExited(child)) {
    child.kill('SIGKILL');
    await waitForExit(child, 5000);
  }
}

export function tailFile(file: string, bytes = 4000): string {
  try {
    const buf = fs.readFileSync(file);
    return buf.subarray(Math.max(0, buf.length - bytes)).toString('utf8');
  } catch {
    return '(no log)';
  }
}

/** Makes a temp dir the service user can own and traverse. */
export function makeServiceTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const owner = serviceUser();
  if (owner) fs.chownSync(dir, owner.uid, owner.gid);
  return dir;
}

/** Writes a file readable only by the service user (secrets, keys). */
export function writePrivateFile(file: string, content: string): void {
  fs.writeFileSync(file, content, { mode: 0o600 });
  fs.chmodSync(file, 0o600); // mode above is masked by umask and ignored for existing files
  const owner = serviceUser();
  if (owner) fs.chownSync(file, owner.uid, owner.gid);
}

export function spawnAsService(
  bin: string,
  args: string[],
  opts: { cwd: string; stdio?: 'pipe' | ['ignore', number, number] },
): ChildProcess {
  const owner = serviceUser();
  return spawn(bin, args, {
    cwd: opts.cwd, // the caller's cwd may not be readable by the service user, and initdb/postgres chdir-check it
    stdio: opts.stdio ?? 'pipe',
    // HOME=/root would be unreadable for the service user; LC_ALL=C avoids locale failures on minimal images.
    env: { ...process.env, HOME: opts.cwd, LC_ALL: 'C', LANG: 'C', PGTZ: 'UTC' },
    ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
  });
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/** pg.ClientConfig for connecting to the server as its superuser. */
export function connectionConfig(server: PgServer, overrides: pg.ClientConfig = {}): pg.ClientConfig {
  return {
    host: server.host,
    port: server.port,
    user: server.user,
    password: server.password,
    database: server.database,
    ssl: server.caCertPem ? { ca: server.caCertPem } : false,
    connectionTimeoutMillis: 5000,
    ...overrides,
  };
}

async function runToCompletion(bin: string, args: string[], cwd: string): Promise<void> {
  const child = spawnAsService(bin, args, { cwd });
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  if (code !== 0) throw new Error(`${path.basename(bin)} failed (exit ${code}):\n${output}`);
}

async function makeCertificate(): Promise<{ cert: string; key: string }> {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec', // much faster to generate than RSA and fine for tests
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 7 * 24 * 3600 * 1000),
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

type ReadyResult = 'ready' | 'exited';

async function waitUntilReady(
  child: ChildProcess,
  cfg: pg.ClientConfig,
  logFile: string,
  timeoutMs: number,
): Promise<ReadyResult> {
  const deadline = Date.now() + timeoutMs;
  // Until our postmaster says it bound the port, whatever answers there may be
  // someone else's server that took the port after freePort().
  const marker = `listening on IPv4 address "127.0.0.1", port ${cfg.port}`;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (hasExited(child)) return 'exited';
    if (!tailFile(logFile, 64 * 1024).includes(marker)) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const client = new pg.Client({ ...cfg, connectionTimeoutMillis: 1000 });
    client.on('error', () => {}); // a failed attempt must not crash the process
    try {
      await client.connect();
      await client.query('select 1');
      return 'ready';
    } catch (err) {
      lastError = err;
      // Wrong credentials or TLS trouble will not fix themselves by waiting.
      const code = (err as { code?: string }).code;
      if (code === '28P01' || code === '28000') throw err;
    } finally {
      await client.end().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`PostgreSQL did not become ready within ${timeoutMs} ms: ${String(lastError)}`);
}

export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PgServer> {
  const binDir = pgBinDir();
  if (!binDir) throw new Error('PostgreSQL server binaries (initdb, postgres) not found');
  const root = makeServiceTempDir('gatehouse-pg-');
  try {
    return await startIn(root, binDir, opts);
  } catch (err) {
    fs.rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(root: string, binDir: string, opts: StartPostgresOptions): Promise<PgServer> {
  const dataDir = path.join(root, 'data');
  const sockDir = path.join(root, 'sock');
  const logFile = path.join(root, 'postgres.log');
  const password = randomBytes(18).toString('hex');

  fs.mkdirSync(sockDir, { mode: 0o700 });
  const owner = serviceUser();
  if (owner) fs.chownSync(sockDir, owner.uid, owner.gid);
  const pwfile = path.join(root, 'pwfile');
  writePrivateFile(pwfile, `${password}\n`);

  await runToCompletion(
    path.join(binDir, 'initdb'),
    ['-D', dataDir, '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'],
    root,
  );
  fs.rmSync(pwfile);

  let caCertPem: string | undefined;
  if (opts.ssl) {
    const { cert, key } = await makeCertificate();
    // PostgreSQL refuses a key readable by others when it owns the file.
    writePrivateFile(path.join(dataDir, 'server.crt'), cert);
    writePrivateFile(path.join(dataDir, 'server.key'), key);
    caCertPem = cert;
  }

  const tcp = opts.ssl ? 'hostssl' : 'host';
  writePrivateFile(
    path.join(dataDir, 'pg_hba.conf'),
    ['local all all scram-sha-256', `${tcp} all all 127.0.0.1/32 scram-sha-256`, ''].join('\n'),
  );
  fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), "\ninclude 'gatehouse.conf'\n");

  // freePort() can race with other test processes: retry on bind failure.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const settings: Record<string, string | number> = {
      listen_addresses: "'127.0.0.1'",
      port,
      unix_socket_directories: `'${sockDir}'`,
      // Durability is worthless for a throwaway cluster and costs seconds per test.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      max_connections: 200,
      password_encryption: "'scram-sha-256'",
      ssl: opts.ssl ? 'on' : 'off',
      logging_collector: 'off',
      log_min_messages: 'warning',
    };
    writePrivateFile(
      path.join(dataDir, 'gatehouse.conf'),
      Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n',
    );

    const logFd = fs.openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawnAsService(path.join(binDir, 'postgres'), ['-D', dataDir], { cwd: root, stdio: ['ignore', logFd, logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    const unregister = registerEmergencyCleanup(() => {
      // Immediate shutdown: we cannot wait here, and SIGQUIT makes the
      // postmaster take its backends down with it (SIGKILL would orphan them).
      if (!hasExited(child)) child.kill('SIGQUIT');
      fs.rmSync(root, { recursive: true, force: true });
    });

    const server: PgServer = {
      host: '127.0.0.1',
      port,
      user: 'postgres',
      password,
      database: 'postgres',
      url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
      dataDir,
      caCertPem,
      logFile,
      stop: makeStop(child, root, unregister),
    };

    let result: ReadyResult;
    try {
      result = await waitUntilReady(child, connectionConfig(server), logFile, 60_000);
    } catch (err) {
      await terminate(child, [['SIGQUIT', 5000]]);
      unregister();
      throw new Error(`${(err as Error).message}\n--- postgres log ---\n${tailFile(logFile)}`);
    }
    if (result === 'ready') return server;

    unregister();
    const log = tailFile(logFile);
    if (attempt < 5 && /could not bind|could not create any TCP\/IP sockets|Address already in use/i.test(log)) {
      fs.truncateSync(logFile, 0);
      continue;
    }
    throw new Error(`postgres exited during startup (code ${child.exitCode}, signal ${child.signalCode})\n--- postgres log ---\n${log}`);
  }
}

function makeStop(child: ChildProcess, root: string, unregister: () => void): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () =>
    (stopping ??= (async () => {
      // SIGINT = fast shutdown: aborts open sessions instead of waiting for them.
      await terminate(child, [
        ['SIGINT', 30_000],
        ['SIGQUIT', 5000],
      ]);
      unregister();
      fs.rmSync(root, { recursive: true, force: true });
    })());
}
