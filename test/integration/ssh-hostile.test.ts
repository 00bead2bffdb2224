// Hostile input on the SSH listener, beyond the first slice's 300 silent/garbage connections
// (ssh.test.ts): garbage before the version string, and floods of 500 half-open connections
// (silent, a partial version line, a version line and then a partial or complete-but-abandoned
// key exchange, an oversized packet). The gateway must cut each at the login deadline or sooner,
// keep serving exec meanwhile, and come back to its file-descriptor baseline with bounded memory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { sshTarget, startSshd, sshdMissing, type SshServer } from '../helpers/sshd.ts';

const AUTH_TIMEOUT_S = 5;

let sshd: SshServer | null = null;
let gw: GatewayUnderTest | null = null;
let sshPort = 0;
let askpass = '';
let key = '';
let skipped: string | null = null;

before(async () => {
  skipped = sshdMissing();
  if (skipped) return;
  sshd = await startSshd();
  sshPort = await freePort();
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${await freePort()}`, ssh: `127.0.0.1:${sshPort}` },
      limits: { authTimeoutSeconds: AUTH_TIMEOUT_S },
      connections: [{ name: 'box', ...sshTarget(sshd) }],
    },
  });
  askpass = path.join(gw.dir, 'askpass.sh');
  fs.writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$GH_TEST_SECRET"\n', { mode: 0o755 });
  key = await gw.createKey('runner', { connections: 'box', kind: 'human' });
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
});

function ssh(command: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const args = [
    '-p', String(sshPort),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    '-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1',
    '-o', 'ConnectTimeout=10',
    'box@127.0.0.1', command,
  ];
  return new Promise((resolve, reject) => {
    const p = spawn('ssh', args, {
      env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none', GH_TEST_SECRET: `runner.${key}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const vmRssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
const fdCount = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- SSH wire pieces -----------------------------------------------------------------------------

function sshString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** A binary packet (RFC 4253 §6) before any keys: length, padding length, payload, padding. */
function packet(payload: Buffer): Buffer {
  let pad = 8 - ((5 + payload.length) % 8);
  if (pad < 4) pad += 8;
  const head = Buffer.alloc(5);
  head.writeUInt32BE(1 + payload.length + pad);
  head[4] = pad;
  return Buffer.concat([head, payload, Buffer.alloc(pad)]);
}

/** A valid SSH_MSG_KEXINIT the gateway can agree to; the sender then never continues the exchange. */
function kexinit(): Buffer {
  const lists = [
    'curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256',
    'ssh-ed25519',
    'aes128-ctr,aes128-gcm@openssh.com',
    'aes128-ctr,aes128-gcm@openssh.com',
    'hmac-sha2-256',
    'hmac-sha2-256',
    'none',
    'none',
    '',
    '',
  ];
  return packet(Buffer.concat([Buffer.from([20]), randomBytes(16), ...lists.map((l) => sshString(l)), Buffer.from([0]), Buffer.alloc(4)]));
}

type Kind = 'silent' | 'partial-version' | 'garbage-line' | 'long-line' | 'version-only' | 'partial-packet' | 'kexinit-stall' | 'huge-length';
const KINDS: Kind[] = ['silent', 'partial-version', 'garbage-line', 'long-line', 'version-only', 'partial-packet', 'kexinit-stall', 'huge-length'];

function hostileBytes(kind: Kind): Buffer[] {
  const version = Buffer.from('SSH-2.0-hostile_1.0\r\n');
  switch (kind) {
    case 'silent':
      return [];
    case 'partial-version':
      return [Buffer.from('SSH-2.0-par')];
    case 'garbage-line':
      return [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')];
    case 'long-line':
      // 64 KiB without a line end: no version line may be buffered without bound.
      return [Buffer.alloc(64 * 1024, 'A')];
    case 'version-only':
      return [version];
    case 'partial-packet': {
      const k = kexinit();
      return [version, k.subarray(0, 9)];
    }
    case 'kexinit-stall':
      return [version, kexinit()];
    case 'huge-length': {
      const h = Buffer.alloc(8);
      h.writeUInt32BE(0x7ffffff0);
      h[4] = 4;
      return [version, h];
    }
  }
}

interface Flood {
  socks: net.Socket[];
  closedAt: number[];
  received: number[];
}

async function flood(n: number, started: number): Promise<Flood> {
  const f: Flood = { socks: [], closedAt: [], received: new Array(n).fill(0) };
  await Promise.all(
    Array.from(
      { length: n },
      (_, i) =>
        new Promise<void>((resolve) => {
          const s = net.connect(sshPort, '127.0.0.1', () => {
            for (const b of hostileBytes(KINDS[i % KINDS.length]!)) s.write(b);
            resolve();
          });
          s.on('error', () => resolve());
          s.on('data', (d: Buffer) => (f.received[i]! += d.length));
          s.once('close', () => f.closedAt.push(Date.now() - started));
          f.socks.push(s);
        }),
    ),
  );
  return f;
}

async function settle(pid: number, baselineFds: number): Promise<number> {
  let fds = fdCount(pid);
  for (let i = 0; i < 100 && fds > baselineFds; i++) {
    await sleep(100);
    fds = fdCount(pid);
  }
  return fds;
}

test('garbage before the version string: the gateway answers with its own version, closes the connection, and keeps serving', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  // Only a server may send lines before its version (RFC 4253 §4.2): from a client they end the
  // connection at once. A version line the gateway tolerates is cut at the login deadline.
  const cases: [string, Buffer, 'at once' | 'by the deadline'][] = [
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: gw\r\n\r\n'), 'at once'],
    ['garbage lines, then a valid version line and a KEXINIT', Buffer.concat([Buffer.from('hello\r\nnot ssh at all\r\n'), Buffer.from('SSH-2.0-late\r\n'), kexinit()]), 'at once'],
    ['binary noise', randomBytes(4096), 'at once'],
    ['an SSH-1 version', Buffer.from('SSH-1.5-old\r\n'), 'at once'],
    ['a NUL inside the version line', Buffer.from('SSH-2.0-x\x00y\r\n'), 'by the deadline'],
  ];
  for (const [label, bytes, when] of cases) {
    const started = Date.now();
    const r = await new Promise<{ got: string; ms: number }>((resolve) => {
      let got = '';
      const s = net.connect(sshPort, '127.0.0.1', () => s.write(bytes));
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('error', () => {});
      const timer = setTimeout(() => s.destroy(), (AUTH_TIMEOUT_S + 5) * 1000);
      s.once('close', () => {
        clearTimeout(timer);
        resolve({ got, ms: Date.now() - started });
      });
    });
    assert.match(r.got, /^SSH-2\.0-Gatehouse\r\n/, `${label}: the gateway's version line`);
    assert.ok(r.ms < (when === 'at once' ? 2000 : (AUTH_TIMEOUT_S + 3) * 1000), `${label}: closed after ${r.ms} ms, expected ${when}`);
    t.diagnostic(`${label}: closed after ${r.ms} ms, ${r.got.length} bytes received`);
  }
  const ok = await ssh('echo fine');
  assert.equal(ok.stdout, 'fine\n', ok.stderr);
  assert.equal(ok.code, 0);
});

test('500 half-open connections (silent, partial version, long line, partial and abandoned key exchange, oversized packet), twice: exec works throughout, every socket is cut by the deadline, fds return to baseline, memory stays bounded', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const pid = gw.pid()!;
  // Warm up (the first exec loads the shell parser and the upstream code), then measure.
  const warm = await ssh('echo warm');
  assert.equal(warm.stdout, 'warm\n', warm.stderr);
  await sleep(1000);
  const baseFds = await settle(pid, fdCount(pid));
  const baseRss = vmRssKb(pid);
  const rounds: { peakKb: number; afterKb: number; fds: number; maxCloseMs: number }[] = [];

  for (let round = 0; round < 2; round++) {
    const started = Date.now();
    let peakKb = vmRssKb(pid);
    const sampler = setInterval(() => {
      try {
        peakKb = Math.max(peakKb, vmRssKb(pid));
      } catch {
        // the gateway died: the assertions below say so
      }
    }, 100);
    let f: Flood;
    try {
      f = await flood(500, started);
      // A real client gets through while the 500 are held open.
      const during = await ssh('echo alive');
      assert.equal(during.stdout, 'alive\n', `round ${round}: ${during.stderr}`);
      assert.equal(during.code, 0);
      for (let i = 0; i < 150 && f.closedAt.length < f.socks.length; i++) await sleep(100);
    } finally {
      clearInterval(sampler);
    }
    for (const s of f.socks) s.destroy();
    assert.equal(f.closedAt.length, 500, `round ${round}: every connection was closed by the gateway`);
    const maxCloseMs = Math.max(...f.closedAt);
    assert.ok(maxCloseMs < (AUTH_TIMEOUT_S + 4) * 1000, `round ${round}: closed by ${maxCloseMs} ms`);
    // Each was answered with the gateway's version line (the oversized packet and garbage too).
    assert.ok(f.received.every((n) => n > 0), `round ${round}: some sockets got nothing at all`);

    const fds = await settle(pid, baseFds);
    assert.ok(fds <= baseFds + 2, `round ${round}: ${fds} fds open, baseline ${baseFds}`);
    await sleep(500);
    const afterKb = vmRssKb(pid);
    rounds.push({ peakKb, afterKb, fds, maxCloseMs });
    t.diagnostic(`round ${round}: closed within ${maxCloseMs} ms; fds ${fds} (baseline ${baseFds}); RSS before ${(baseRss / 1024).toFixed(1)} MB, peak ${(peakKb / 1024).toFixed(1)} MB, after ${(afterKb / 1024).toFixed(1)} MB`);
  }
  // Bounded: 500 pending logins cost well under 100 MB at their peak, and a second flood does not
  // keep what the first left (a leak of ~100 KB per connection would show as +50 MB per round).
  for (const r of rounds) assert.ok(r.peakKb - baseRss < 100 * 1024, `peak RSS grew by ${((r.peakKb - baseRss) / 1024).toFixed(1)} MB`);
  assert.ok(rounds[1]!.afterKb - rounds[0]!.afterKb < 25 * 1024, `RSS after round 2 grew by ${((rounds[1]!.afterKb - rounds[0]!.afterKb) / 1024).toFixed(1)} MB over round 1`);

  const after = await ssh('echo still up; exit 4');
  assert.equal(after.stdout, 'still up\n', after.stderr);
  assert.equal(after.code, 4);
});
