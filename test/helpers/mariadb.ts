/**
 * Throwaway MariaDB servers for tests: a real mariadbd with real password authentication
 * (mysql_native_password), optional TLS, on a random port, gone again after stop().
 *
 * Never touches a system MariaDB: --no-defaults everywhere (no /etc/mysql/my.cnf), its own data
 * dir, socket, pid file and port.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generate } from 'selfsigned';
import { freePort } from './net.ts';
import { findBinary, hasExited, registerEmergencyCleanup, tailFile, terminate, type RunAs } from './postgres.ts';
import { unavailable } from './requirements.ts';

export interface MariaServer {
  host: '127.0.0.1';
  port: number;
  user: 'root';
  password: string;
  database: 'test';
  dataDir: string;
  /** The CA that signed the server certificate (PEM); set only with ssl. */
  caCertPem?: string;
  /** Path of caCertPem on disk (for `mariadb --ssl-ca=…`); set only with ssl. */
  caCertFile?: string;
  /** Unix socket; root may log in through it with the password too. */
  socket: string;
  /** mariadbd's stdout/stderr (the error log). */
  logFile: string;
  /** The only directory SELECT … INTO OUTFILE and LOAD DATA INFILE may use (secure_file_priv). */
  secureFileDir: string;
  stop(): Promise<void>;
}

export interface StartMariadbOptions {
  /** Serve TLS and refuse plaintext over TCP (require_secure_transport), so a test can prove TLS was used. */
  ssl?: boolean;
  /** Extra mariadbd options, e.g. `--max-allowed-packet=64M`. */
  serverArgs?: string[];
}

// ---------------------------------------------------------------------------
// Binaries and the OS user
// ---------------------------------------------------------------------------

const BINARIES = ['mariadb-install-db', 'mariadbd', 'mariadb'] as const;

let cachedRunAs: RunAs | null | undefined;

/**
 * mariadbd refuses to run as root (unless told --user=root, which we do not want: a test server
 * must not be able to write root's files through SELECT … INTO OUTFILE). When we are root, the
 * server and mariadb-install-db are spawned directly with the `mysql` user's uid/gid, as
 * postgres.ts does with `postgres`. Returns null when not root (run as ourselves).
 */
export function mysqlServiceUser(): RunAs | null {
  if (cachedRunAs !== undefined) return cachedRunAs;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return (cachedRunAs = null);
  const uid = spawnSync('id', ['-u', 'mysql'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'mysql'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) {
    throw new Error('running as root but there is no "mysql" OS user to run MariaDB as');
  }
  return (cachedRunAs = { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) });
}

function hasMysqlUser(): boolean {
  try {
    mysqlServiceUser();
    return true;
  } catch {
    return false;
  }
}

/** Why the MariaDB tests cannot run here (binaries or the mysql OS user missing), or null; throws in CI. */
export function mariadbMissing(...extraBins: string[]): string | null {
  const missing: string[] = [...BINARIES, ...extraBins].filter((b) => findBinary(b) === null);
  if (!hasMysqlUser()) missing.push('"mysql" OS user (needed when running as root)');
  return unavailable(missing);
}

function requireBinary(name: string): string {
  const bin = findBinary(name);
  if (!bin) throw new Error(`${name} not found (is MariaDB installed?)`);
  return bin;
}

function chownToService(file: string): void {
  const owner = mysqlServiceUser();
  if (owner) fs.chownSync(file, owner.uid, owner.gid);
}

function writeServiceFile(file: string, content: string, mode = 0o600): void {
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode); // the mode above is masked by umask
  chownToService(file);
}

function spawnAsMysql(bin: string, args: string[], opts: { cwd: string; stdio?: 'pipe' | ['ignore', number, number] }): ChildProcess {
  const owner = mysqlServiceUser();
  // HOME=/root would be unreadable for the mysql user, and a ~/.my.cnf must not leak in.
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: opts.cwd, LC_ALL: 'C', LANG: 'C', TZ: 'UTC' };
  for (const k of ['MYSQL_PWD', 'MYSQL_HOST', 'MYSQL_TCP_PORT', 'MYSQL_UNIX_PORT']) delete env[k];
  return spawn(bin, args, {
    cwd: opts.cwd, // the caller's cwd may not be readable by the mysql user
    stdio: opts.stdio ?? 'pipe',
    env,
    ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
  });
}

async function run(
  bin: string,
  args: string[],
  opts: { cwd: string; input?: string; asService?: boolean; env?: NodeJS.ProcessEnv },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = opts.asService
    ? spawnAsMysql(bin, args, { cwd: opts.cwd })
    : spawn(bin, args, { cwd: opts.cwd, stdio: 'pipe', env: opts.env ?? process.env });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  child.stdin?.on('error', () => {}); // a client that exits early must not crash us with EPIPE
  child.stdin?.end(opts.input ?? '');
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  return { code, stdout, stderr };
}

/**
 * Runs SQL with the `mariadb` CLI (batch mode, no headers). `via` picks the unix socket or TCP
 * on 127.0.0.1; `ssl` adds --ssl (no server-certificate verification unless `caFile` is given).
 * The password is passed in MYSQL_PWD, never on the command line (visible in ps).
 */
export async function mariadbCli(
  server: Pick<MariaServer, 'port' | 'socket' | 'user' | 'password' | 'database'>,
  sql: string,
  opts: { via?: 'socket' | 'tcp'; ssl?: boolean | 'off'; caFile?: string; password?: string; database?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const args = ['--no-defaults', '--batch', '--skip-column-names', `-u${server.user}`];
  if ((opts.via ?? 'tcp') === 'socket') args.push('--protocol=SOCKET', `--socket=${server.socket}`);
  else args.push('--protocol=TCP', '-h127.0.0.1', `-P${server.port}`);
  if (opts.ssl === true) args.push('--ssl');
  if (opts.ssl === 'off') args.push('--skip-ssl');
  if (opts.caFile) args.push(`--ssl-ca=${opts.caFile}`, '--ssl-verify-server-cert');
  const db = opts.database ?? server.database;
  if (db) args.push(db);
  const env = { ...process.env, MYSQL_PWD: opts.password ?? server.password, HOME: os.tmpdir() };
  return run(requireBinary('mariadb'), args, { cwd: os.tmpdir(), input: sql, env });
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/** A throwaway CA and a server certificate it signed, both RSA 2048 (what every TLS library takes). */
async function makeCertificates(): Promise<{ ca: string; cert: string; key: string }> {
  const notAfterDate = new Date(Date.now() + 7 * 24 * 3600 * 1000);
  const ca = await generate([{ name: 'commonName', value: 'gatehouse test CA' }], {
    keyType: 'rsa',
    keySize: 2048,
    algorithm: 'sha256',
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const leaf = await generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'rsa',
    keySize: 2048,
    algorithm: 'sha256',
    notAfterDate,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
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
  return { ca: ca.cert, cert: leaf.cert, key: leaf.private };
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

type ReadyResult = 'ready' | 'exited';

/** Waits until mariadbd reports it listens on our port, then until `select 1` works over the socket. */
async function waitUntilReady(child: ChildProcess, port: number, socket: string, logFile: string, timeoutMs: number): Promise<ReadyResult> {
  const deadline = Date.now() + timeoutMs;
  // "Version: '10.11…'  socket: '…'  port: 33999" follows "ready for connections". Until then,
  // whatever answers on the port may be someone else's server that took it after freePort().
  const marker = new RegExp(`ready for connections\\.[\\s\\S]*port: ${port}\\b`);
  let lastError = '';
  while (Date.now() < deadline) {
    if (hasExited(child)) return 'exited';
    if (!marker.test(tailFile(logFile, 64 * 1024))) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    // Fresh from mariadb-install-db, root@localhost has an empty password.
    const r = await mariadbCli({ port, socket, user: 'root', password: '', database: 'test' }, 'select 1', { via: 'socket', database: '' });
    if (r.code === 0 && r.stdout.trim() === '1') return 'ready';
    lastError = r.stderr.trim();
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`MariaDB did not become ready within ${timeoutMs} ms: ${lastError}`);
}

export async function startMariadb(opts: StartMariadbOptions = {}): Promise<MariaServer> {
  for (const b of BINARIES) requireBinary(b);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-maria-'));
  chownToService(root);
  try {
    return await startIn(root, opts);
  } catch (err) {
    fs.rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(root: string, opts: StartMariadbOptions): Promise<MariaServer> {
  const dataDir = path.join(root, 'data');
  const socket = path.join(root, 'mysql.sock');
  const pidFile = path.join(root, 'mariadbd.pid');
  const logFile = path.join(root, 'mariadbd.log');
  const secureFileDir = path.join(root, 'files');
  const password = randomBytes(18).toString('hex');
  fs.mkdirSync(secureFileDir, { mode: 0o700 });
  chownToService(secureFileDir);

  // The certificate is generated while mariadb-install-db runs: both take a while.
  const certs = opts.ssl ? makeCertificates() : undefined;
  certs?.catch(() => {}); // awaited below; do not let an early failure go unhandled meanwhile
  const install = await run(
    requireBinary('mariadb-install-db'),
    [
      '--no-defaults',
      `--datadir=${dataDir}`,
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
      // mariadb-install-db passes unknown options on to the bootstrap server; the redo log is
      // then created at the size the server runs with (else the first start resizes it).
      '--innodb-log-file-size=16M',
      '--innodb-buffer-pool-size=64M',
    ],
    { cwd: root, asService: true },
  );
  if (install.code !== 0) throw new Error(`mariadb-install-db failed (exit ${install.code}):\n${install.stdout}\n${install.stderr}`);

  let caCertPem: string | undefined;
  let caCertFile: string | undefined;
  const tlsArgs: string[] = [];
  if (certs) {
    const { ca, cert, key } = await certs;
    caCertFile = path.join(root, 'ca.pem');
    writeServiceFile(caCertFile, ca, 0o644);
    writeServiceFile(path.join(root, 'server-cert.pem'), cert, 0o644);
    writeServiceFile(path.join(root, 'server-key.pem'), key, 0o600);
    caCertPem = ca;
    tlsArgs.push(
      `--ssl-ca=${caCertFile}`,
      `--ssl-cert=${path.join(root, 'server-cert.pem')}`,
      `--ssl-key=${path.join(root, 'server-key.pem')}`,
      '--require-secure-transport=ON', // TCP must use TLS; the unix socket counts as secure
    );
  }

  // freePort() can race with other test processes: retry on bind failure.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args = [
      '--no-defaults',
      `--datadir=${dataDir}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      `--socket=${socket}`,
      `--pid-file=${pidFile}`,
      '--skip-name-resolve',
      '--innodb-buffer-pool-size=64M',
      '--innodb-log-file-size=16M',
      // Durability is worthless for a throwaway server and costs time per commit.
      '--innodb-flush-log-at-trx-commit=0',
      '--innodb-doublewrite=0',
      '--skip-log-bin',
      '--max-connections=200',
      `--secure-file-priv=${secureFileDir}`,
      '--character-set-server=utf8mb4',
      '--collation-server=utf8mb4_general_ci',
      '--loose-feedback=OFF',
      ...tlsArgs,
      ...(opts.serverArgs ?? []),
    ];
    const logFd = fs.openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawnAsMysql(requireBinary('mariadbd'), args, { cwd: root, stdio: ['ignore', logFd, logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    child.once('error', () => {}); // reported through hasExited() / the log
    const unregister = registerEmergencyCleanup(() => {
      // We cannot wait here. mariadbd is one process (threads, no children), so SIGKILL leaves
      // nothing behind; InnoDB would recover on a restart, but the data dir is deleted anyway.
      if (!hasExited(child)) child.kill('SIGKILL');
      fs.rmSync(root, { recursive: true, force: true });
    });

    let result: ReadyResult;
    try {
      result = await waitUntilReady(child, port, socket, logFile, 60_000);
    } catch (err) {
      await terminate(child, [['SIGTERM', 10_000]]);
      unregister();
      throw new Error(`${(err as Error).message}\n--- mariadbd log ---\n${tailFile(logFile)}`);
    }
    if (result === 'exited') {
      unregister();
      const log = tailFile(logFile);
      if (attempt < 5 && /Bind on TCP\/IP port|Address already in use|Can't start server: Bind/i.test(log)) {
        fs.truncateSync(logFile, 0);
        continue;
      }
      throw new Error(`mariadbd exited during startup (code ${child.exitCode}, signal ${child.signalCode})\n--- mariadbd log ---\n${log}`);
    }

    const server: MariaServer = {
      host: '127.0.0.1',
      port,
      user: 'root',
      password,
      database: 'test',
      dataDir,
      socket,
      logFile,
      secureFileDir,
      stop: makeStop(child, root, unregister),
    };
    if (caCertPem !== undefined) {
      server.caCertPem = caCertPem;
      server.caCertFile = caCertFile;
    }

    try {
      await setUpAccounts(server);
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }
}

/**
 * Gives root a password on every host it can come from (the socket and 127.0.0.1; '%' for
 * completeness), with mysql_native_password, which every client library speaks. MariaDB 10.11
 * has no caching_sha2_password (MySQL 8's default), so no such account is created.
 */
async function setUpAccounts(server: MariaServer): Promise<void> {
  const pw = sqlString(server.password);
  const sql = [
    // install-db also made root@::1 and root@<hostname>, with no password.
    "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ('localhost')",
    "DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host NOT IN ('localhost')",
    'FLUSH PRIVILEGES',
    ...["'127.0.0.1'", "'%'"].flatMap((h) => [
      `CREATE USER root@${h} IDENTIFIED VIA mysql_native_password USING PASSWORD(${pw})`,
      `GRANT ALL PRIVILEGES ON *.* TO root@${h} WITH GRANT OPTION`,
    ]),
    "CREATE DATABASE test CHARACTER SET utf8mb4",
    // Last: once root@localhost has a password, our own empty-password login stops working.
    `ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD(${pw})`,
    '',
  ].join(';\n');
  const r = await mariadbCli({ ...server, password: '' }, sql, { via: 'socket', database: '' });
  if (r.code !== 0) throw new Error(`setting up MariaDB accounts failed (exit ${r.code}): ${r.stderr}`);
}

function makeStop(child: ChildProcess, root: string, unregister: () => void): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () =>
    (stopping ??= (async () => {
      // SIGTERM = normal shutdown (kills sessions, flushes InnoDB); SIGKILL if it hangs.
      await terminate(child, [['SIGTERM', 30_000]]);
      unregister();
      fs.rmSync(root, { recursive: true, force: true });
    })());
}
