// The SSH adapter end to end: the real OpenSSH client through the gateway to a real sshd, with
// the guard, masking and the journal. The target user is the test runner (root in CI), so the
// commands the guard is expected to block are harmless ones (touch in a temp dir): never rely
// on the guard to stop something destructive in a test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import ssh2 from 'ssh2';
import path from 'node:path';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { sshTarget, startSshd, sshdMissing, type SshServer } from '../helpers/sshd.ts';

let sshd: SshServer | null = null;
let gw: GatewayUnderTest | null = null;
let sshPort = 0;
let apiPort = 0;
let opsKey = '';
let askpass = '';
let scratch = '';
let key = '';
let skipped: string | null = null;

before(async () => {
  skipped = sshdMissing();
  if (skipped) return;
  sshd = await startSshd();
  sshPort = await freePort();
  apiPort = await freePort();
  const target = sshTarget(sshd);
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${apiPort}`, ssh: `127.0.0.1:${sshPort}` },
      // Short, so the hostile-input test sees silent sockets cut; an ssh login takes well under 1 s.
      limits: { authTimeoutSeconds: 5 },
      connections: [
        { name: 'box', ...target },
        { name: 'box-masked', ...target, mask: {} },
        { name: 'box-wrongkey', ...target, hostKey: 'SHA256:' + 'A'.repeat(43) },
        { name: 'box-other', ...target },
      ],
      policy: {
        default: { action: 'allow' },
        rules: [
          { name: 'no-touch', match: { types: ['touch'] }, action: 'block', reason: 'touch is not allowed here', hint: 'ask the test to allow it' },
          { name: 'no-pipe-to-shell', match: { flags: ['pipe_to_shell'] }, action: 'block', reason: 'piping into a shell is not allowed' },
          { name: 'hold-mkdir', match: { types: ['mkdir'] }, action: 'review', approvers: ['ops'], holdFor: '60s' },
          { name: 'unknown-blocked', match: { classes: ['unknown'] }, action: 'block', reason: 'cannot tell what this does' },
        ],
      },
    },
  });
  scratch = fs.mkdtempSync(path.join(gw.dir, 'scratch-'));
  askpass = path.join(gw.dir, 'askpass.sh');
  // ssh asks SSH_ASKPASS for the password (SSH_ASKPASS_REQUIRE=force): it prints GH_TEST_SECRET.
  fs.writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$GH_TEST_SECRET"\n', { mode: 0o755 });
  key = await gw.createKey('runner', { connections: 'box,box-masked,box-wrongkey', kind: 'agent' });
  opsKey = await gw.createKey('ops1', { kind: 'human', groups: 'ops', connections: 'box' });
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
});

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function ssh(user: string, secret: string, command: string, opts: { stdin?: Buffer | string; method?: 'password' | 'keyboard-interactive'; identity?: string; timeoutMs?: number } = {}): Promise<Run> {
  const auth = opts.identity
    ? ['-i', opts.identity, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'PubkeyAuthentication=yes', '-o', 'PreferredAuthentications=publickey']
    : ['-o', 'PubkeyAuthentication=no', '-o', `PreferredAuthentications=${opts.method ?? 'password'}`];
  const args = [
    '-p', String(sshPort),
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
    ...auth,
    '-o', 'NumberOfPasswordPrompts=1',
    '-o', 'ConnectTimeout=10',
    '-o', 'BatchMode=no',
    `${user}@127.0.0.1`,
    command,
  ];
  return new Promise((resolve, reject) => {
    const p = spawn('ssh', args, {
      env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none', GH_TEST_SECRET: secret },
      stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    p.stdout!.on('data', (d: Buffer) => out.push(d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
    if (opts.stdin !== undefined) p.stdin!.end(opts.stdin);
  });
}

const secret = () => `runner.${key}`;

type Ev = { type: string; seq: number; data: any };

/**
 * Waits (bounded) for the session that ran `text` to be closed and returns its events. Looks at
 * the newest sessions first and stops at the first match: each look is a CLI run.
 */
async function sessionOf(text: string): Promise<Ev[]> {
  for (let i = 0; i < 20; i++) {
    const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json', '--limit', '10'])).stdout) as { id: string }[];
    for (const s of list) {
      const events = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      if (!events.some((e) => e.type === 'command' && e.data.text === text)) continue;
      if (events.some((e) => e.type === 'session.close')) return events;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no closed session ran ${JSON.stringify(text)}`);
}

test('exec: `echo hi; exit 3` prints hi and exits 3, 50 times in a row', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const started = Date.now();
  for (let i = 0; i < 50; i++) {
    const r = await ssh('box', secret(), 'echo hi; exit 3');
    assert.equal(r.stdout.toString(), 'hi\n', `run ${i}: stdout (stderr: ${r.stderr})`);
    assert.equal(r.code, 3, `run ${i}: exit status (stderr: ${r.stderr})`);
  }
  t.diagnostic(`50 execs in ${Date.now() - started} ms`);
});

test('exec: stdin streams to the command and stdout back, byte for byte (8 MiB through cat and sha256sum)', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const small = await ssh('box', secret(), 'cat', { stdin: 'data\n' });
  assert.equal(small.code, 0, small.stderr);
  assert.equal(small.stdout.toString(), 'data\n');

  const blob = randomBytes(8 << 20);
  const want = createHash('sha256').update(blob).digest('hex');
  const echoed = await ssh('box', secret(), 'cat', { stdin: blob });
  assert.equal(echoed.code, 0, echoed.stderr);
  assert.equal(echoed.stdout.length, blob.length);
  assert.equal(createHash('sha256').update(echoed.stdout).digest('hex'), want);
  const summed = await ssh('box', secret(), 'sha256sum', { stdin: blob });
  assert.equal(summed.stdout.toString().split(' ')[0], want);
});

test('exec: stdout and stderr stay apart; a large output ends with the right status', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const r = await ssh('box', secret(), 'echo out; echo err >&2; exit 7');
  assert.equal(r.stdout.toString(), 'out\n');
  assert.equal(r.stderr, 'err\n');
  assert.equal(r.code, 7);
  // More output than any window: the status must still come after all of it.
  const big = await ssh('box', secret(), 'head -c 20000000 /dev/zero; exit 5');
  assert.equal(big.stdout.length, 20_000_000);
  assert.equal(big.code, 5);
});

test('guard: a blocked command exits 126 with the reason on stderr, never runs, and the next exec works', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const file = path.join(scratch, 'blocked');
  const r = await ssh('box', secret(), `touch ${file}`);
  assert.equal(r.code, 126, r.stderr);
  assert.match(r.stderr, /touch is not allowed here/);
  assert.match(r.stderr, /rule: no-touch/);
  assert.match(r.stderr, /hint: ask the test to allow it/);
  assert.equal(r.stdout.length, 0);
  assert.equal(fs.existsSync(file), false, 'the blocked command must not have run');

  // Hidden in a nested shell, a substitution, and a pipe into sh: each blocked.
  for (const cmd of [`bash -c 'touch ${file}'`, `echo $(touch ${file})`, `echo touch ${file} | sh`, `$(echo touch) ${file}`]) {
    const h = await ssh('box', secret(), cmd);
    assert.equal(h.code, 126, `${cmd}: ${h.stderr}`);
    assert.equal(fs.existsSync(file), false, `${cmd} must not have run`);
  }
  const next = await ssh('box', secret(), 'echo still here');
  assert.equal(next.code, 0, next.stderr);
  assert.equal(next.stdout.toString(), 'still here\n');

  const ev = await sessionOf(`touch ${file}`);
  const cmd = ev.find((e) => e.type === 'command')!;
  assert.equal(cmd.data.kind, 'shell');
  assert.equal(cmd.data.verdict.action, 'block');
  assert.equal(cmd.data.verdict.rule, 'no-touch');
  assert.deepEqual(cmd.data.classification.types, ['touch']);
  const res = ev.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
  assert.equal(res.data.status, 'denied');
});

test('journal: each exec is a command event before it runs, and a result with exit status and a sample', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const text = 'echo journaled; echo oops >&2; exit 4';
  const r = await ssh('box', secret(), text);
  assert.equal(r.code, 4);
  const ev = await sessionOf(text);
  const open = ev.find((e) => e.type === 'session.open')!;
  assert.equal(open.data.protocol, 'ssh');
  assert.equal(open.data.targetHostKey, sshd!.hostKeyFingerprint);
  const cmd = ev.find((e) => e.type === 'command')!;
  assert.deepEqual([cmd.data.kind, cmd.data.dialect, cmd.data.classification.class, cmd.data.verdict.action], ['shell', 'sh', 'read', 'allow']);
  const res = ev.find((e) => e.type === 'result' && e.data.command === cmd.seq)!;
  assert.equal(res.data.status, 'error');
  assert.equal(res.data.meta.exitStatus, 4);
  assert.equal(res.data.meta.stdout, 'journaled\n');
  assert.equal(res.data.meta.stderr, 'oops\n');
  assert.equal(res.data.bytesOut, 'journaled\n'.length + 'oops\n'.length);
  assert.ok(cmd.seq < res.seq);
  const v = await gw!.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('masking: a secret printed by the target never reaches the client or the journal', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const text = 'printf "contact: alice@example.com\\n"';
  const r = await ssh('box-masked', secret(), text);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'contact: [MASKED:email]\n');
  // The command line is recorded masked as well.
  const ev = await sessionOf('printf "contact: [MASKED:email]\\n"');
  const all = JSON.stringify(ev);
  assert.ok(!all.includes('alice@example.com'), 'the journal must not hold the address');
  const res = ev.find((e) => e.type === 'result')!;
  assert.equal(res.data.meta.stdout, 'contact: [MASKED:email]\n');
  assert.deepEqual(res.data.masked, { email: 1 });
});

test('auth: keyboard-interactive with the key works too', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const r = await ssh('box', secret(), 'echo kbd', { method: 'keyboard-interactive' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'kbd\n');
});

test('auth: an SSH public key registered with `keys add-ssh` logs in as its identity; an unregistered one is refused', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const keyFile = path.join(gw.dir, 'caller_ed25519');
  const other = path.join(gw.dir, 'stranger_ed25519');
  for (const f of [keyFile, other]) {
    const k = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'caller', '-f', f]);
    assert.equal(k.status, 0);
  }
  const refused = await gw.cli(['keys', 'add-ssh', 'runner', '--pubkey', keyFile]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /private key/);
  const added = await gw.cli(['keys', 'add-ssh', 'runner', '--pubkey', `${keyFile}.pub`]);
  assert.equal(added.code, 0, added.stderr);
  assert.match(added.stdout, /added SSH key SHA256:\S+ \(ssh-ed25519, caller\) to "runner"/);
  const again = await gw.cli(['keys', 'add-ssh', 'runner', '--pubkey', `${keyFile}.pub`]);
  assert.match(again.stderr, /already registered to "runner"/);

  const r = await ssh('box', '', 'echo by-key; exit 2', { identity: keyFile });
  assert.equal(r.stdout.toString(), 'by-key\n', r.stderr);
  assert.equal(r.code, 2);
  const ev = await sessionOf('echo by-key; exit 2');
  assert.equal(ev.find((e) => e.type === 'command')!.data.verdict.action, 'allow');

  const stranger = await ssh('box', '', 'echo no', { identity: other });
  assert.equal(stranger.code, 255);
  assert.match(stranger.stderr, /Permission denied/);
  assert.equal(stranger.stdout.length, 0);
});

test('refusals: wrong key, unknown connection, connection not granted, host-key mismatch: each a clear error', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const wrong = await ssh('box', `runner.gh_${'x'.repeat(43)}`, 'echo no');
  assert.equal(wrong.code, 255);
  assert.match(wrong.stderr, /Permission denied/);
  assert.equal(wrong.stdout.length, 0);

  const unknown = await ssh('nope', secret(), 'echo no');
  assert.equal(unknown.code, 255);
  assert.match(unknown.stderr, /unknown connection "nope".*yours: box, box-masked, box-wrongkey/);

  const notGranted = await ssh('box-other', secret(), 'echo no');
  assert.equal(notGranted.code, 255);
  assert.match(notGranted.stderr, /not granted connection "box-other"/);

  const mismatch = await ssh('box-wrongkey', secret(), 'echo no');
  assert.equal(mismatch.code, 255);
  assert.match(mismatch.stderr, /host key does not match: expected SHA256:A{43}, got SHA256:/);
  assert.ok(mismatch.stderr.includes(sshd!.hostKeyFingerprint), mismatch.stderr);
  assert.equal(mismatch.stdout.length, 0);
  // The gateway's log never holds the key.
  assert.ok(!gw!.output().stderr.includes(key));
});

test('hostile input: 300 silent or garbage connections are cut at the login deadline, and exec goes on meanwhile', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const started = Date.now();
  const closedAt: number[] = [];
  const socks: net.Socket[] = [];
  await Promise.all(
    Array.from({ length: 300 }, (_, i) =>
      new Promise<void>((resolve) => {
        const s = net.connect(sshPort, '127.0.0.1', () => {
          // a third send garbage instead of a version line, a third a version line and nothing more
          if (i % 3 === 0) s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(4096));
          else if (i % 3 === 1) s.write('SSH-2.0-half-open\r\n');
          resolve();
        });
        s.on('error', () => {});
        s.on('data', () => {});
        s.once('close', () => closedAt.push(Date.now() - started));
        socks.push(s);
      }),
    ),
  );
  const during = await ssh('box', secret(), 'echo alive');
  assert.equal(during.stdout.toString(), 'alive\n', during.stderr);
  for (let i = 0; i < 100 && closedAt.length < socks.length; i++) await new Promise((r) => setTimeout(r, 100));
  for (const s of socks) s.destroy();
  assert.equal(closedAt.length, 300, 'every connection was closed by the gateway');
  assert.ok(Math.max(...closedAt) < 9000, `closed by ${Math.max(...closedAt)} ms`);
  t.diagnostic(`300 hostile connections closed within ${Math.max(...closedAt)} ms`);
  const after = await ssh('box', secret(), 'echo still up');
  assert.equal(after.stdout.toString(), 'still up\n', after.stderr);
});

test('exec: a command killed by a signal is reported to the client as that signal (exit-signal)', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  // ssh2's client shows the exit-signal itself (the OpenSSH client only maps it to status 255).
  const client = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve()).once('error', reject);
    client.connect({ host: '127.0.0.1', port: sshPort, username: 'box', password: secret(), readyTimeout: 10_000, hostVerifier: () => true });
  });
  try {
    const result = await new Promise<{ code: number | null; signal?: string; out: string }>((resolve, reject) => {
      client.exec('echo started; kill -TERM $$; echo not reached', (err, stream) => {
        if (err) return reject(err);
        let out = '';
        let exit: { code: number | null; signal?: string } = { code: null };
        stream.on('data', (d: Buffer) => (out += d));
        stream.stderr.on('data', () => {});
        stream.on('exit', (code: number | null, signal?: string) => (exit = { code, signal }));
        stream.on('close', () => resolve({ ...exit, out }));
      });
    });
    assert.equal(result.out, 'started\n');
    assert.equal(result.code, null);
    assert.equal(result.signal, 'SIGTERM');
  } finally {
    client.end();
  }
  const ssh255 = await ssh('box', secret(), 'kill -KILL $$');
  assert.equal(ssh255.code, 255);
});

test('a held exec (review rule) waits with a notice on stderr, runs once approved from another process, and pipe-to-shell is blocked', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const dir = path.join(scratch, `held-${Date.now()}`);
  const held = ssh('box', secret(), `mkdir ${dir} && echo made`);
  let id: string | undefined;
  for (let i = 0; i < 150 && !id; i++) {
    const res = await fetch(`http://127.0.0.1:${apiPort}/api/approvals?status=pending`, { headers: { authorization: `Bearer ops1.${opsKey}` } });
    const list = (await res.json()) as { id: string; text: string }[];
    id = list.find((x) => x.text === `mkdir ${dir} && echo made`)?.id;
    if (!id) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(id, 'a pending review for the command');
  assert.ok(!fs.existsSync(dir), 'a held command must not have run');
  const approve = await gw.cli(['approvals', 'approve', id, '--comment', 'ok', '--key', `ops1.${opsKey}`]);
  assert.equal(approve.code, 0, approve.stderr);
  const r = await held;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'made\n');
  assert.match(r.stderr, new RegExp(`held for approval: review ${id}`));
  assert.ok(fs.existsSync(dir));

  const piped = await ssh('box', secret(), 'echo "echo pwned" | sh');
  assert.equal(piped.code, 126);
  assert.match(piped.stderr, /piping into a shell is not allowed/);
  assert.doesNotMatch(piped.stdout.toString(), /pwned/);
});

test('agent forwarding and X11 requests are refused; the command is not run with them', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const agentDir = fs.mkdtempSync(path.join(gw.dir, 'agent-'));
  const agentSock = path.join(agentDir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', agentSock], { stdio: 'ignore' });
  t.after(() => {
    agent.kill('SIGTERM');
    fs.rmSync(agentDir, { recursive: true, force: true });
  });
  for (let i = 0; i < 50 && !fs.existsSync(agentSock); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(fs.existsSync(agentSock), 'ssh-agent is listening');
  const connect = async (extra: Partial<ssh2.ConnectConfig>) => {
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve()).once('error', reject);
      client.connect({ host: '127.0.0.1', port: sshPort, username: 'box', password: secret(), authHandler: ['password'], readyTimeout: 10_000, hostVerifier: () => true, ...extra });
    });
    t.after(() => client.end());
    return client;
  };
  /** The exec's error (a refused request: the command never runs), or null once it ran. */
  const run = (client: ssh2.Client, opts: ssh2.ExecOptions) =>
    new Promise<Error | null>((resolve) => {
      client.exec('echo ran', opts, (err, stream) => {
        if (err) return resolve(err);
        stream.resume();
        stream.stderr.resume();
        stream.on('close', () => resolve(null));
      });
    });
  const withAgent = await connect({ agent: agentSock, agentForward: true });
  const agentErr = await run(withAgent, {});
  assert.ok(agentErr, 'agent forwarding is refused');
  assert.match(agentErr.message, /agent/i);
  const plain = await connect({});
  const x11Err = await run(plain, { x11: true });
  assert.ok(x11Err, 'X11 forwarding is refused');
  assert.match(x11Err.message, /X11/i);
  assert.equal(await run(plain, {}), null, 'a plain exec on the same connection runs');
});
