/**
 * SSH part of `npm run bench`: the OpenSSH client through the gateway and directly to the same
 * throwaway sshd, in the same run. Also runs on its own: `node --import tsx bench/ssh.ts`.
 *
 *   1. Throughput: `ssh … 'cat FILE' > /dev/null` of a BENCH_SSH_MB file (default 1024), directly
 *      and through the gateway, with each side's default cipher and with aes128-gcm on the client
 *      hop. Prints MB/s, the ratio gateway/direct (goal ≥ 0.8), the gateway's CPU, and the cipher
 *      negotiated on each hop (client → gateway and client → sshd from `ssh -v`; gateway → sshd
 *      from ssh2's handshake with the gateway's own defaults).
 *   2. Concurrency: BENCH_SSH_CONCURRENT (default 200) OpenSSH processes at once, each
 *      `ssh box@gateway 'echo ok'` with a registered public key: how many succeed, the wall time,
 *      and the gateway's peak RSS.
 *
 * Environment: BENCH_SSH_MB (file size in MiB, default 1024), BENCH_SSH_CONCURRENT (default 200).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ssh2 from 'ssh2';
import { startGateway, type GatewayUnderTest } from '../test/helpers/gateway.ts';
import { freePort } from '../test/helpers/net.ts';
import { sshTarget, SSHD, startSshd, type SshServer } from '../test/helpers/sshd.ts';
import { cpuSeconds, run, vmRssKb } from './proc.ts';

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : '-');

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r, ri) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ') + (ri === 0 ? `\n${w.map((x) => '-'.repeat(x)).join('  ')}` : '')).join('\n');
}

const COMMON = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'ControlMaster=no', '-o', 'ControlPath=none', '-o', 'ConnectTimeout=120'];

/** The cipher OpenSSH negotiated server → client, from `ssh -v`. */
async function opensshCipher(args: string[]): Promise<string> {
  const r = await run('ssh', ['-v', ...args, 'true']);
  return /kex: server->client cipher: (\S+)/.exec(r.stderr)?.[1] ?? `? (exit ${r.code}: ${r.stderr.trim().split('\n').at(-1)})`;
}

/** The cipher ssh2 (the gateway's upstream library, with its defaults) negotiates with sshd. */
function ssh2Cipher(s: SshServer): Promise<string> {
  return new Promise((resolve) => {
    let cipher = '?';
    const c = new ssh2.Client();
    c.on('ready', () => {
      c.end();
      resolve(cipher);
    });
    c.on('error', (e) => resolve(`? (${e.message})`));
    c.connect({
      host: s.host,
      port: s.port,
      username: s.user,
      privateKey: s.clientKey,
      hostVerifier: () => true,
      debug: (m: string) => {
        const x = /Handshake: S->C cipher: (\S+)/.exec(m);
        if (x) cipher = x[1]!;
      },
    });
  });
}

/** Runs the SSH benchmark and prints its report. Returns false when it could not run (missing binaries). */
export async function sshBench(): Promise<boolean> {
  const MB = Number(process.env.BENCH_SSH_MB ?? 1024);
  const CONCURRENT = Number(process.env.BENCH_SSH_CONCURRENT ?? 200);
  const missing = [SSHD, 'ssh', 'ssh-keygen'].filter((b) => (b.startsWith('/') ? !fs.existsSync(b) : spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0));
  if (missing.length) {
    console.log(`\n=== SSH: skipped (${missing.join(', ')} not installed) ===`);
    return false;
  }
  const version = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr.trim();
  console.log(`\n# SSH: ${version}; cat of a ${MB} MiB file > /dev/null; ${CONCURRENT} concurrent execs; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  let sshd: SshServer | undefined;
  let gw: GatewayUnderTest | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-bench-ssh-'));
  try {
    sshd = await startSshd();
    const sshPort = await freePort();
    gw = await startGateway({
      extra: {
        listen: { api: `127.0.0.1:${await freePort()}`, ssh: `127.0.0.1:${sshPort}` },
        // 200 OpenSSH clients plus 200 sshd children on a small box take longer than the default
        // 15 s login deadline (up to ~30 s even directly to sshd): the bench asks whether every
        // session succeeds, not how fast the box's CPUs are. The client's ConnectTimeout matches.
        limits: { authTimeoutSeconds: 120 },
        connections: [{ name: 'box', ...sshTarget(sshd) }],
      },
    });
    const gwPid = gw.pid()!;
    await gw.createKey('bench', { connections: 'box', kind: 'human' });
    const callerKey = path.join(dir, 'caller_ed25519');
    const kg = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench', '-f', callerKey], { encoding: 'utf8' });
    if (kg.status !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
    const added = await gw.cli(['keys', 'add-ssh', 'bench', '--pubkey', `${callerKey}.pub`]);
    if (added.code !== 0) throw new Error(`keys add-ssh: ${added.stderr}`);

    const viaGw = [...COMMON, '-i', callerKey, '-p', String(sshPort), 'box@127.0.0.1'];
    const direct = [...COMMON, '-i', sshd.clientKeyFile, '-p', String(sshd.port), `${sshd.user}@127.0.0.1`];

    // The file: 16 MiB of random bytes repeated (no compression is negotiated, so repeats cost the same).
    const file = path.join(dir, 'big.bin');
    const block = randomBytes(16 << 20);
    const fd = fs.openSync(file, 'w');
    for (let left = MB << 20; left > 0; left -= block.length) fs.writeSync(fd, block, 0, Math.min(block.length, left));
    fs.closeSync(fd);
    const bytes = fs.statSync(file).size;

    const ciphers = {
      clientGw: await opensshCipher(viaGw),
      gwTarget: await ssh2Cipher(sshd),
      clientDirect: await opensshCipher(direct),
    };
    console.log(`ciphers: client → gateway ${ciphers.clientGw}; gateway → sshd ${ciphers.gwTarget} (ssh2 defaults); client → sshd directly ${ciphers.clientDirect}`);

    // Warm up: page cache, the gateway's JIT and its first upstream login.
    for (const a of [viaGw, direct]) await run('ssh', [...a, `head -c 67108864 ${file}`], { stdoutToNull: true });

    const GCM = ['-c', 'aes128-gcm@openssh.com'];
    const targets: { name: string; args: string[]; gateway: boolean }[] = [
      { name: 'direct', args: direct, gateway: false },
      { name: 'gateway', args: viaGw, gateway: true },
      { name: 'direct aes128-gcm', args: [...GCM, ...direct], gateway: false },
      { name: 'gateway aes128-gcm', args: [...GCM, ...viaGw], gateway: true },
    ];
    const results = new Map<string, { mbs: number; s: number; gwCpu?: number; error?: string }>();
    for (const t of targets) {
      const cpu0 = cpuSeconds(gwPid);
      const r = await run('ssh', [...t.args, `cat ${file}`], { stdoutToNull: true });
      const cpu = cpuSeconds(gwPid) - cpu0;
      const s = r.ms / 1000;
      const res = { mbs: bytes / (1 << 20) / s, s, gwCpu: t.gateway ? cpu / s : undefined, error: r.code === 0 ? undefined : `exit ${r.code}: ${r.stderr.trim().split('\n').at(-1)}` };
      results.set(t.name, res);
      console.log(`  ${t.name.padEnd(19)} ${res.error ? `FAILED ${res.error}` : `${fmt(res.mbs)} MB/s (${fmt(s, 2)} s)${res.gwCpu !== undefined ? `, gateway CPU ${fmt(res.gwCpu * 100)}% of a core` : ''}`}`);
    }

    // 200 OpenSSH clients at once, each a full login and one exec: directly to sshd first, so the
    // box's own limit (200 ssh processes and sshd children on these cores) is on the record too.
    const d0 = performance.now();
    const directRuns = await Promise.all(Array.from({ length: CONCURRENT }, () => run('ssh', [...direct, 'echo ok'])));
    const directWallMs = performance.now() - d0;
    const directOk = directRuns.filter((r) => r.code === 0 && r.stdout === 'ok\n').length;
    let peakKb = vmRssKb(gwPid);
    const rssBefore = peakKb;
    const sampler = setInterval(() => {
      try {
        peakKb = Math.max(peakKb, vmRssKb(gwPid));
      } catch {
        // gone
      }
    }, 100);
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: CONCURRENT }, () => run('ssh', [...viaGw, 'echo ok'])));
    const wallMs = performance.now() - t0;
    clearInterval(sampler);
    const ok = runs.filter((r) => r.code === 0 && r.stdout === 'ok\n').length;
    const failures = [...new Set(runs.filter((r) => !(r.code === 0 && r.stdout === 'ok\n')).map((r) => `exit ${r.code}: ${r.stderr.trim().split('\n').at(-1)}`))].slice(0, 3);
    const slowest = Math.max(...runs.map((r) => r.ms));

    console.log(`\n=== SSH: cat of ${MB} MiB > /dev/null ===`);
    const rows = [['target', 'MB/s', 'seconds', 'gateway CPU %']];
    for (const t of targets) {
      const r = results.get(t.name)!;
      rows.push([t.name, r.error ? 'FAILED' : fmt(r.mbs), fmt(r.s, 2), r.gwCpu !== undefined ? fmt(r.gwCpu * 100) : '']);
    }
    console.log(table(rows));
    const ratio = results.get('gateway')!.mbs / results.get('direct')!.mbs;
    const ratioGcm = results.get('gateway aes128-gcm')!.mbs / results.get('direct aes128-gcm')!.mbs;
    console.log(`gateway/direct throughput: ${fmt(ratio, 3)} with default ciphers, ${fmt(ratioGcm, 3)} with aes128-gcm on the client hop (goal ≥ 0.8: ${ratio >= 0.8 ? 'met' : 'NOT met'})`);
    console.log(`\n=== SSH: ${CONCURRENT} concurrent OpenSSH execs ('echo ok', public-key login) ===`);
    console.log(`${ok}/${CONCURRENT} succeeded (${ok === CONCURRENT ? 'met' : 'NOT met'}); wall time ${fmt(wallMs / 1000, 2)} s, slowest client ${fmt(slowest / 1000, 2)} s; gateway RSS ${fmt(rssBefore / 1024, 1)} MB before, peak ${fmt(peakKb / 1024, 1)} MB`);
    if (failures.length) console.log(`failures: ${failures.join(' | ')}`);
    console.log(`directly to sshd: ${directOk}/${CONCURRENT} succeeded; wall time ${fmt(directWallMs / 1000, 2)} s, slowest client ${fmt(Math.max(...directRuns.map((r) => r.ms)) / 1000, 2)} s`);
    return true;
  } finally {
    await gw?.stop().catch((e) => console.error(`stopping the gateway: ${e.message}`));
    await sshd?.stop().catch((e) => console.error(`stopping sshd: ${e.message}`));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  sshBench().then(
    () => process.exit(0),
    (e) => {
      console.error(`SSH bench failed: ${(e as Error).stack ?? e}`);
      process.exit(1);
    },
  );
}
