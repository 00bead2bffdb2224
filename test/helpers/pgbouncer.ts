/**
 * A throwaway pgbouncer in front of a test cluster, to check the gateway
 * behaves behind (or in front of) a transaction-pooling proxy.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, waitForPort } from './net.ts';
import {
  findBinary,
  hasExited,
  makeServiceTempDir,
  registerEmergencyCleanup,
  spawnAsService,
  tailFile,
  terminate,
  writePrivateFile,
  type PgServer,
} from './postgres.ts';

export interface PgbouncerOptions {
  poolMode?: 'transaction' | 'session';
  poolSize?: number;
}

export interface Pgbouncer {
  host: '127.0.0.1';
  port: number;
  stop(): Promise<void>;
}

/** Clients authenticate to pgbouncer with the same user/password as to the target. */
export async function startPgbouncer(target: PgServer, opts: PgbouncerOptions = {}): Promise<Pgbouncer> {
  const bin = findBinary('pgbouncer');
  if (!bin) throw new Error('pgbouncer not installed');
  const dir = makeServiceTempDir('gatehouse-pgb-');
  try {
    return await startIn(dir, bin, target, opts);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startIn(dir: string, bin: string, target: PgServer, opts: PgbouncerOptions): Promise<Pgbouncer> {
  const ini = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  const logFile = path.join(dir, 'pgbouncer.log');

  // A plaintext password in the userlist lets pgbouncer both verify clients
  // with SCRAM and answer the upstream's SCRAM challenge itself; a SCRAM
  // secret there would only work for pass-through of the client's own proof.
  writePrivateFile(userlist, `"${target.user}" "${target.password}"\n`);

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const lines = [
      '[databases]',
      `* = host=${target.host} port=${target.port}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      // Empty disables the unix socket, whose default (/tmp/.s.PGSQL.<port>) could collide between runs.
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${userlist}`,
      `pool_mode = ${opts.poolMode ?? 'transaction'}`,
      `default_pool_size = ${opts.poolSize ?? 5}`,
      'max_client_conn = 500',
      // JDBC and some drivers send these; pgbouncer would reject the startup otherwise.
      'ignore_startup_parameters = extra_float_digits,options',
      'log_connections = 0',
      'log_disconnections = 0',
      // The target may accept only TLS (hostssl); pgbouncer's default is plaintext.
      `server_tls_sslmode = ${target.caCertPem ? 'require' : 'disable'}`,
      '',
    ];
    writePrivateFile(ini, lines.join('\n'));

    const logFd = fs.openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawnAsService(bin, [ini], { cwd: dir, stdio: ['ignore', logFd, logFd] });
    } finally {
      fs.closeSync(logFd);
    }
    const unregister = registerEmergencyCleanup(() => {
      if (!hasExited(child)) child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    });

    let result: 'ready' | 'exited';
    try {
      result = await waitUntilListening(child, logFile, port, 15_000);
    } catch (err) {
      await terminate(child, [['SIGTERM', 5000]]);
      unregister();
      throw new Error(`${(err as Error).message}\n--- pgbouncer log ---\n${tailFile(logFile)}`);
    }

    if (result === 'ready') {
      let stopping: Promise<void> | undefined;
      return {
        host: '127.0.0.1',
        port,
        stop: () =>
          (stopping ??= (async () => {
            // SIGINT would be a "safe" shutdown that waits for clients to leave.
            await terminate(child, [['SIGTERM', 10_000]]);
            unregister();
            fs.rmSync(dir, { recursive: true, force: true });
          })()),
      };
    }

    unregister();
    const log = tailFile(logFile);
    if (attempt < 5 && /Address already in use|bind\(\) failed/i.test(log)) {
      fs.truncateSync(logFile, 0);
      continue;
    }
    throw new Error(`pgbouncer exited during startup (code ${child.exitCode})\n--- pgbouncer log ---\n${log}`);
  }
}

/**
 * Waits for pgbouncer's own "listening on" line rather than only for the port:
 * if another process grabbed the port after freePort(), the port is open yet
 * pgbouncer is about to die with "Address already in use".
 */
async function waitUntilListening(
  child: ChildProcess,
  logFile: string,
  port: number,
  timeoutMs: number,
): Promise<'ready' | 'exited'> {
  const deadline = Date.now() + timeoutMs;
  const marker = `listening on 127.0.0.1:${port}`;
  while (Date.now() < deadline) {
    if (hasExited(child)) return 'exited';
    if (tailFile(logFile, 64 * 1024).includes(marker)) {
      await waitForPort(port, Math.max(1000, deadline - Date.now()));
      return hasExited(child) ? 'exited' : 'ready';
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`pgbouncer did not start listening on port ${port} within ${timeoutMs} ms`);
}
