/**
 * Throwaway OpenSSH servers for tests: the real /usr/sbin/sshd on a free loopback port, with its
 * own config, host key, pid file and authorized key in a temp dir. The target user is the one
 * running the tests (root in CI): only public-key login, only from loopback, and the key that may
 * log in is generated per server, so nothing else can use it.
 *
 * sshd needs its privilege-separation directory (/run/sshd); as root it is created if absent,
 * as the distribution's service unit does at boot.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from './net.ts';
import { registerEmergencyCleanup, terminate } from './postgres.ts';
import { unavailable } from './requirements.ts';

export const SSHD = '/usr/sbin/sshd';

export interface SshServer {
  host: '127.0.0.1';
  port: number;
  user: string;
  /** private key (OpenSSH format) that may log in as `user` */
  clientKey: string;
  clientKeyFile: string;
  /** SHA256:… of the server's host key, as ssh-keygen -lf prints it */
  hostKeyFingerprint: string;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

/** Why the SSH tests cannot run here (sshd, ssh, ssh-keygen or extraBins missing), or null; throws in CI. */
export function sshdMissing(...extraBins: string[]): string | null {
  const missing: string[] = [];
  if (!isExecutable(SSHD)) missing.push(SSHD);
  for (const b of ['ssh', 'ssh-keygen', ...extraBins]) if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) missing.push(b);
  return unavailable(missing);
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function keygen(file: string, comment: string): void {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
}

export function fingerprint(pubFile: string): string {
  const r = spawnSync('ssh-keygen', ['-lf', pubFile], { encoding: 'utf8' });
  const m = /SHA256:[A-Za-z0-9+/]{43}/.exec(r.stdout);
  if (!m) throw new Error(`ssh-keygen -lf ${pubFile}: ${r.stderr || r.stdout}`);
  return m[0];
}

export interface StartSshdOptions {
  /** let clients forward local ports through this server (ssh -L); off by default */
  allowTcpForwarding?: boolean;
}

export async function startSshd(opts: StartSshdOptions = {}): Promise<SshServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-sshd-'));
  const user = os.userInfo().username;
  keygen(path.join(dir, 'host_ed25519'), 'test-host');
  keygen(path.join(dir, 'client_ed25519'), 'gatehouse-test-client');
  const authorized = path.join(dir, 'authorized_keys');
  fs.copyFileSync(path.join(dir, 'client_ed25519.pub'), authorized);
  fs.chmodSync(authorized, 0o600);
  if (process.getuid?.() === 0 && !fs.existsSync('/run/sshd')) fs.mkdirSync('/run/sshd', { mode: 0o755, recursive: true });
  const logFile = path.join(dir, 'sshd.log');

  let lastError = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const config = [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host_ed25519')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'StrictModes no',
      'UsePAM no',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      `AllowUsers ${user}`,
      `AllowTcpForwarding ${opts.allowTcpForwarding ? 'local' : 'no'}`,
      'X11Forwarding no',
      'PrintMotd no',
      'PrintLastLog no',
      'MaxStartups 200:30:400',
      'MaxSessions 64',
      'LogLevel ERROR',
      'Subsystem sftp internal-sftp',
      'AcceptEnv LANG LC_*',
    ].join('\n');
    const configFile = path.join(dir, 'sshd_config');
    fs.writeFileSync(configFile, config + '\n');
    const out = fs.openSync(logFile, 'a');
    // -D: stay in the foreground (so the child is sshd itself); -e: log to stderr (our log file).
    const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const unregister = registerEmergencyCleanup(() => child.kill('SIGKILL'));
    try {
      await Promise.race([
        waitForPort(port, 10_000),
        new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`)))),
      ]);
    } catch (e) {
      lastError = (e as Error).message;
      await terminate(child, [['SIGTERM', 2000]]);
      unregister();
      continue;
    }
    const clientKeyFile = path.join(dir, 'client_ed25519');
    return {
      host: '127.0.0.1',
      port,
      user,
      clientKey: fs.readFileSync(clientKeyFile, 'utf8'),
      clientKeyFile,
      hostKeyFingerprint: fingerprint(path.join(dir, 'host_ed25519.pub')),
      dir,
      log: () => fs.readFileSync(logFile, 'utf8'),
      async stop() {
        await terminate(child, [['SIGTERM', 5000]]);
        unregister();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`sshd did not start in 3 attempts: ${lastError}`);
}

/** A gateway connection (`type: ssh`) to this server, logging in with its client key; add a name. */
export function sshTarget(s: SshServer): { type: 'ssh'; host: string; port: number; user: string; privateKey: string; hostKey: string } {
  return { type: 'ssh', host: s.host, port: s.port, user: s.user, privateKey: `file:${s.clientKeyFile}`, hostKey: s.hostKeyFingerprint };
}
