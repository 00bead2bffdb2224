/**
 * Shared by the MySQL acceptance tests: a bounded MariaDB start, the mariadb client programs
 * run against the gateway, and the journal read back through the gatehouse CLI.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { startMariadb, type MariaServer, type StartMariadbOptions } from './mariadb.ts';
import type { GatewayUnderTest } from './gateway.ts';
import { findBinary } from './postgres.ts';

/**
 * startMariadb, each attempt bounded: a start that stalls (seen once in ~20 runs under a loaded
 * CI box) is retried instead of hanging the suite; a stalled server is killed at exit by the
 * helper's emergency cleanup.
 */
export async function startMariadbBounded(opts: StartMariadbOptions): Promise<MariaServer> {
  let last: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        startMariadb(opts),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`MariaDB${opts.ssl ? ' (TLS)' : ''} did not start within 90 s (attempt ${attempt})`)), 90_000);
          timer.unref();
        }),
      ]);
    } catch (e) {
      last = e;
    } finally {
      clearTimeout(timer);
    }
  }
  throw last;
}

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

/** Runs a program with stdin from a buffer or file; killed after timeoutMs. Output as bytes. */
export function runProgram(
  bin: string,
  args: string[],
  opts: { env?: Record<string, string>; input?: Buffer | string; stdinFile?: string; stdoutFile?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<ProcResult> {
  const exe = findBinary(bin) ?? bin;
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const stdinFd = opts.stdinFile ? fs.openSync(opts.stdinFile, 'r') : null;
    const stdoutFd = opts.stdoutFile ? fs.openSync(opts.stdoutFile, 'w') : null;
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: os.tmpdir(), MYSQL_HISTFILE: '/dev/null', ...opts.env };
    for (const k of ['MYSQL_HOST', 'MYSQL_TCP_PORT', 'MYSQL_UNIX_PORT']) delete env[k];
    const p = spawn(exe, args, { cwd: opts.cwd ?? os.tmpdir(), env, stdio: [stdinFd ?? 'pipe', stdoutFd ?? 'pipe', 'pipe'] });
    if (stdinFd !== null) fs.closeSync(stdinFd);
    if (stdoutFd !== null) fs.closeSync(stdoutFd);
    const out: Buffer[] = [];
    let stderr = '';
    p.stdout?.on('data', (d: Buffer) => out.push(d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.stdin?.on('error', () => {});
    if (p.stdin) p.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr, ms: Date.now() - t0 });
    });
  });
}

/** Options of a mariadb client program (mariadb, mariadb-dump) for a login through the gateway over TLS. */
export function gatewayClientArgs(gw: GatewayUnderTest, user: string, opts: { verifyCert?: boolean } = {}): string[] {
  const args = ['--no-defaults', '--protocol=TCP', '-h127.0.0.1', `-P${gw.mysqlPort}`, `-u${user}`, '--ssl'];
  if (opts.verifyCert) args.push(`--ssl-ca=${gatewayCertFile(gw)}`, '--ssl-verify-server-cert');
  return args;
}

/** The certificate the gateway generated into its data dir (self-signed; its own trust anchor). */
export function gatewayCertFile(gw: GatewayUnderTest): string {
  return `${gw.dir}/data/tls/gateway.crt`;
}

export interface JournalEvent {
  type: string;
  seq: number;
  data: any;
}

export interface JournalSession {
  id: string;
  identity_name: string;
  connection: string;
  status: string;
  events: JournalEvent[];
}

/** Every session of `identity` (most recent first) with its events, read with the gatehouse CLI. */
export async function sessionsOf(gw: GatewayUnderTest, identity: string): Promise<JournalSession[]> {
  const r = await gw.cli(['sessions', 'list', '--json', '--limit', '1000']);
  if (r.code !== 0) throw new Error(`sessions list failed: ${r.stderr}`);
  const list = (JSON.parse(r.stdout) as Omit<JournalSession, 'events'>[]).filter((s) => s.identity_name === identity);
  // Four CLI processes at a time: each is a node start-up, the main cost for small sessions.
  const out: JournalSession[] = new Array(list.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < list.length; i = next++) {
      const s = list[i]!;
      const show = await gw.cli(['sessions', 'show', s.id, '--json']);
      if (show.code !== 0) throw new Error(`sessions show failed: ${show.stderr}`);
      out[i] = { ...s, events: (JSON.parse(show.stdout) as { events: JournalEvent[] }).events };
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, list.length) }, worker));
  return out;
}

/** Polls until every session of `identity` is closed (and at least `count` exist); returns them. */
export async function closedSessionsOf(gw: GatewayUnderTest, identity: string, count = 1, timeoutMs = 20_000): Promise<JournalSession[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await gw.cli(['sessions', 'list', '--json', '--limit', '1000']);
    const list = (JSON.parse(r.stdout) as { identity_name: string; status: string }[]).filter((s) => s.identity_name === identity);
    if (list.length >= count && list.every((s) => s.status !== 'open')) return sessionsOf(gw, identity);
    if (Date.now() >= deadline) throw new Error(`sessions of ${identity} not closed after ${timeoutMs} ms: ${JSON.stringify(list.map((s) => s.status))}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** The command events of a session with their result events. */
export function commandsWithResults(s: JournalSession): { command: JournalEvent; result: JournalEvent | undefined }[] {
  const results = new Map<number, JournalEvent>();
  for (const e of s.events) if (e.type === 'result') results.set(e.data.command, e);
  return s.events.filter((e) => e.type === 'command').map((command) => ({ command, result: results.get(command.seq) }));
}
