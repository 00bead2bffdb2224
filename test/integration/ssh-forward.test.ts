// Local port forwarding (`ssh -N -L`) through the gateway, with the real OpenSSH client and sshd:
// a TCP echo server on loopback stands behind the target. Forwarding is denied by default (even
// under `default: allow`), allowed by a rule naming the flag `direct_tcpip` and the destination,
// and every forwarded connection is recorded: a command event before any byte, a result with the
// bytes moved each way at close.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort, waitForPort } from '../helpers/net.ts';
import { terminate } from '../helpers/postgres.ts';
import { sshTarget, startSshd, sshdMissing, type SshServer } from '../helpers/sshd.ts';

let sshd: SshServer | null = null;
let gw: GatewayUnderTest | null = null;
let echo: net.Server | null = null;
let sshPort = 0;
let echoPort = 0;
let closedPort = 0;
let otherPort = 0;
let askpass = '';
let plainKey = '';
let dbaKey = '';
let skipped: string | null = null;


before(async () => {
  skipped = sshdMissing();
  if (skipped) return;
  sshd = await startSshd({ allowTcpForwarding: true });
  echo = net.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo!.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  closedPort = await freePort();
  otherPort = await freePort();
  sshPort = await freePort();
  const target = sshTarget(sshd);
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${await freePort()}`, ssh: `127.0.0.1:${sshPort}` },
      connections: [{ name: 'box', ...target }],
      policy: {
        // Allow-all for commands: forwards are still denied unless a rule names them.
        default: { action: 'allow' },
        rules: [
          {
            name: 'dba-tunnel',
            match: { groups: ['dba'], flags: ['direct_tcpip'], tables: { write: [`127.0.0.1:${echoPort}`, `127.0.0.1:${closedPort}`] } },
            action: 'allow',
          },
        ],
      },
    },
  });
  askpass = path.join(gw.dir, 'askpass.sh');
  fs.writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$GH_TEST_SECRET"\n', { mode: 0o755 });
  plainKey = await gw.createKey('plain', { connections: 'box', kind: 'human' });
  dbaKey = await gw.createKey('dba-1', { connections: 'box', kind: 'human', groups: 'dba' });
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
  await new Promise<void>((r) => (echo ? echo.close(() => r()) : r()));
});

/** Whether something listens on 127.0.0.1:port, from /proc/net/tcp (connecting would open a forward). */
function listening(port: number): boolean {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .some((l) => {
      const f = l.trim().split(/\s+/);
      return f[1] === want && f[3] === '0A';
    });
}

interface Tunnel {
  localPort: number;
  proc: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

/** `ssh -N -L localPort:127.0.0.1:destPort box@gateway`, ready once the local port listens. */
async function tunnel(secret: string, destPort: number): Promise<Tunnel> {
  const localPort = await freePort();
  const args = [
    '-N',
    '-L', `127.0.0.1:${localPort}:127.0.0.1:${destPort}`,
    '-p', String(sshPort),
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    // INFO: OpenSSH logs a failed channel open ("channel N: open failed: …") at this level.
    '-o', 'LogLevel=INFO',
    '-o', 'PubkeyAuthentication=no',
    '-o', 'PreferredAuthentications=password',
    '-o', 'NumberOfPasswordPrompts=1',
    '-o', 'ConnectTimeout=10',
    '-o', 'ExitOnForwardFailure=yes',
    'box@127.0.0.1',
  ];
  const proc = spawn('ssh', args, {
    env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none', GH_TEST_SECRET: secret },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const t: Tunnel = { localPort, proc, stderr: () => stderr, stop: () => terminate(proc, [['SIGTERM', 5000]]) };
  for (let i = 0; i < 200 && !listening(localPort); i++) {
    if (proc.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!listening(localPort)) {
    await t.stop();
    await exited;
    throw new Error(`ssh -L did not listen on ${localPort}: ${stderr}`);
  }
  return t;
}

/** Connects to the tunnel, sends `data`, half-closes, and collects what comes back until close. */
function roundTrip(port: number, data: Buffer, timeoutMs = 30_000): Promise<{ got: Buffer; error?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const s = net.connect(port, '127.0.0.1', () => s.end(data));
    const timer = setTimeout(() => {
      error = 'timeout';
      s.destroy();
    }, timeoutMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (e) => (error = (e as NodeJS.ErrnoException).code ?? e.message));
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ got: Buffer.concat(chunks), error });
    });
  });
}

type Ev = { type: string; seq: number; data: any };

/** The newest session whose commands include `text` (bounded wait for its result events). */
async function eventsOf(text: string, results: number): Promise<Ev[]> {
  for (let i = 0; i < 100; i++) {
    const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json', '--limit', '5'])).stdout) as { id: string }[];
    for (const s of list) {
      const events = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      if (!events.some((e) => e.type === 'command' && e.data.text === text)) continue;
      if (events.filter((e) => e.type === 'result').length >= results) return events;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no session with ${results} result(s) for ${JSON.stringify(text)}`);
}

test('forwarding: denied by default, even under default allow; the client is told why and the journal has the denial', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const tun = await tunnel(`plain.${plainKey}`, echoPort);
  try {
    const r = await roundTrip(tun.localPort, Buffer.from('hello\n'));
    assert.equal(r.got.length, 0, 'nothing may come back through a denied forward');
    // OpenSSH reports the failed open on stderr with the gateway's reason.
    for (let i = 0; i < 50 && !/open failed/.test(tun.stderr()); i++) await new Promise((res) => setTimeout(res, 100));
    assert.match(tun.stderr(), /open failed: administratively prohibited: gatehouse: port forwarding is blocked unless a policy rule allows it \(rule: default\.direct-tcpip; hint: .*flags: \[direct_tcpip\]/);
  } finally {
    await tun.stop();
  }
  const text = `direct-tcpip 127.0.0.1:${echoPort}`;
  const ev = await eventsOf(text, 1);
  const cmd = ev.find((e) => e.type === 'command' && e.data.text === text)!;
  assert.equal(cmd.data.kind, 'tcpip');
  assert.equal(cmd.data.verdict.action, 'block');
  assert.equal(cmd.data.verdict.rule, 'default.direct-tcpip');
  assert.deepEqual(cmd.data.classification.types, ['direct_tcpip']);
  assert.match(cmd.data.originator, /^127\.0\.0\.1:\d+$/);
  assert.deepEqual(cmd.data.destination, { host: '127.0.0.1', port: echoPort });
  const res = ev.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
  assert.equal(res.data.status, 'denied');
  assert.match(res.data.error.message, /port forwarding is blocked/);
});

test('forwarding: allowed by a rule for group dba and that destination: bytes echo both ways and each connection is recorded with byte counts', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const tun = await tunnel(`dba-1.${dbaKey}`, echoPort);
  const sizes = [6, 1 << 20, 8 << 20, 3, 65_537];
  try {
    const small = await roundTrip(tun.localPort, Buffer.from('hello\n'));
    assert.equal(small.got.toString(), 'hello\n', `${small.error ?? ''} ${tun.stderr()}`);
    // Several forwarded connections at once on the same SSH connection, large ones included.
    const blobs = sizes.slice(1).map((n) => randomBytes(n));
    const rs = await Promise.all(blobs.map((b) => roundTrip(tun.localPort, b)));
    rs.forEach((r, i) => {
      assert.equal(r.got.length, blobs[i]!.length, `connection ${i}: ${r.error ?? ''}`);
      assert.ok(r.got.equals(blobs[i]!), `connection ${i}: the echo differs`);
    });
  } finally {
    await tun.stop();
  }
  assert.doesNotMatch(tun.stderr(), /open failed/);

  const text = `direct-tcpip 127.0.0.1:${echoPort}`;
  const ev = await eventsOf(text, sizes.length);
  const cmds = ev.filter((e) => e.type === 'command');
  assert.equal(cmds.length, sizes.length);
  for (const c of cmds) {
    assert.equal(c.data.kind, 'tcpip');
    assert.equal(c.data.text, text);
    assert.deepEqual([c.data.verdict.action, c.data.verdict.rule], ['allow', 'dba-tunnel']);
  }
  const results = ev.filter((e) => e.type === 'result');
  // Each result follows its command, and counts exactly what was sent and echoed.
  const counted = results.map((r) => {
    const c = cmds.find((x) => x.seq === r.data.command)!;
    assert.ok(c && c.seq < r.seq);
    assert.equal(r.data.status, 'ok');
    assert.equal(r.data.bytesIn, r.data.bytesOut);
    assert.ok(typeof r.data.durationMs === 'number' && r.data.durationMs >= 0);
    assert.equal(r.data.meta.originator, c.data.originator);
    return r.data.bytesIn as number;
  });
  assert.deepEqual(counted.sort((a, b) => a - b), [...sizes].sort((a, b) => a - b));
  const v = await gw!.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('forwarding: a rule for one destination does not open another; a destination the target cannot reach is reported', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  // dba-tunnel names echoPort and closedPort only.
  const other = await tunnel(`dba-1.${dbaKey}`, otherPort);
  try {
    const r = await roundTrip(other.localPort, Buffer.from('x'));
    assert.equal(r.got.length, 0);
    for (let i = 0; i < 50 && !/open failed/.test(other.stderr()); i++) await new Promise((res) => setTimeout(res, 100));
    assert.match(other.stderr(), /administratively prohibited: gatehouse: port forwarding is blocked/);
  } finally {
    await other.stop();
  }
  const ev = await eventsOf(`direct-tcpip 127.0.0.1:${otherPort}`, 1);
  assert.equal(ev.find((e) => e.type === 'command')!.data.verdict.rule, 'default.direct-tcpip');

  // Allowed, but nothing listens there: the target's refusal reaches the client as a connect failure.
  const closed = await tunnel(`dba-1.${dbaKey}`, closedPort);
  try {
    const r = await roundTrip(closed.localPort, Buffer.from('x'));
    assert.equal(r.got.length, 0);
    for (let i = 0; i < 50 && !/open failed/.test(closed.stderr()); i++) await new Promise((res) => setTimeout(res, 100));
    assert.match(closed.stderr(), /open failed: connect failed: gatehouse: the target could not open 127\.0\.0\.1:\d+/);
  } finally {
    await closed.stop();
  }
  const ev2 = await eventsOf(`direct-tcpip 127.0.0.1:${closedPort}`, 1);
  const cmd = ev2.find((e) => e.type === 'command')!;
  assert.equal(cmd.data.verdict.action, 'allow');
  const res = ev2.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
  assert.equal(res.data.status, 'error');
  assert.match(res.data.error.message, /the target refused the forward/);
});
