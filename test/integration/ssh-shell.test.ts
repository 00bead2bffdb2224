// Interactive shells through the gateway: the real OpenSSH client (`ssh -tt`) in tmux, through
// the gateway, to a real sshd. Resize, Ctrl-C, exit status, the asciicast recording replayed
// from the journal to the same screen, masking, exec-only connections, and idle memory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';
import { BIN, startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { findBinary } from '../helpers/postgres.ts';
import { sshTarget, startSshd, sshdMissing, type SshServer } from '../helpers/sshd.ts';
import { TmuxTerminal } from '../helpers/tmux.ts';

let sshd: SshServer | null = null;
let gw: GatewayUnderTest | null = null;
let sshPort = 0;
let askpass = '';
let scratch = '';
let key = '';
let skipped: string | null = null;
const terms: TmuxTerminal[] = [];

before(async () => {
  skipped = sshdMissing('tmux');
  if (skipped) return;
  sshd = await startSshd();
  sshPort = await freePort();
  const apiPort = await freePort();
  const target = sshTarget(sshd);
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${apiPort}`, ssh: `127.0.0.1:${sshPort}` },
      connections: [
        { name: 'box', ...target },
        { name: 'box-masked', ...target, mask: {} },
        { name: 'box-execonly', ...target, shell: false },
      ],
      policy: {
        default: { action: 'allow' },
        rules: [{ name: 'no-touch', match: { types: ['touch'] }, action: 'block', reason: 'touch is not allowed here' }],
      },
    },
  });
  scratch = fs.mkdtempSync(path.join(gw.dir, 'scratch-'));
  askpass = path.join(gw.dir, 'askpass.sh');
  fs.writeFileSync(askpass, '#!/bin/sh\nprintf "%s\\n" "$GH_TEST_SECRET"\n', { mode: 0o755 });
  key = await gw.createKey('person', { connections: 'box,box-masked,box-execonly', kind: 'human' });
});

after(async () => {
  for (const t of terms) await t.kill();
  await gw?.stop();
  await sshd?.stop();
});

const secret = () => `person.${key}`;

function sshArgs(user: string, extra: string[] = []): string[] {
  return [
    '-p', String(sshPort),
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
    '-o', 'PubkeyAuthentication=no',
    '-o', 'PreferredAuthentications=password',
    '-o', 'NumberOfPasswordPrompts=1',
    '-o', 'ConnectTimeout=10',
    '-q',
    ...extra,
    `${user}@127.0.0.1`,
  ];
}

const sshEnv = () => ({ SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none', GH_TEST_SECRET: secret() });

/**
 * Runs argv in a fresh tmux; its exit status goes to a file and the pane stays as the program
 * left it (tmux's own "Pane is dead" line would scroll some screens and not others).
 */
async function startKept(argv: string[], opts: { env?: Record<string, string>; width: number; height: number }): Promise<{ term: TmuxTerminal; status: (ms?: number) => Promise<number> }> {
  const file = path.join(scratch, `status-${Math.random().toString(36).slice(2)}`);
  const term = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', file, ...argv], opts);
  terms.push(term);
  const status = async (ms = 15_000) => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const s = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (s.endsWith('\n')) return Number(s.trim());
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the program in tmux did not exit within ${ms} ms; screen:\n${await term.capture()}`);
  };
  return { term, status };
}

/** `ssh -tt user@gateway` in a fresh tmux of the given size, with a known prompt. */
async function shellIn(user: string, width: number, height: number): Promise<{ term: TmuxTerminal; status: (ms?: number) => Promise<number> }> {
  const kept = await startKept(['ssh', ...sshArgs(user, ['-tt'])], { env: sshEnv(), width, height });
  const term = kept.term;
  // Any prompt first (the login shell's), then one the test knows; `clear` so screens start clean.
  await term.waitFor(/[$#>] ?$/m, 20_000);
  await term.line("PS1='gh> '; clear");
  await term.waitFor(/^gh> $/m);
  return kept;
}

function tmux(term: TmuxTerminal, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(findBinary('tmux')!, ['-L', term.socket, ...args], { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`tmux ${args[0]}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

/** The visible screen only (no scrollback), trailing whitespace removed. */
async function screen(term: TmuxTerminal): Promise<string> {
  const raw = await tmux(term, ['capture-pane', '-p', '-t', term.target]);
  const lines = raw.split('\n').map((l) => l.replace(/\s+$/, ''));
  while (lines.length && lines.at(-1) === '') lines.pop();
  return lines.join('\n');
}

type Ev = { type: string; seq: number; data: any };

/** The newest closed session whose detected commands include `typed`; bounded wait. */
async function shellSession(typed: string): Promise<{ id: string; events: Ev[] }> {
  for (let i = 0; i < 30; i++) {
    const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json', '--limit', '8'])).stdout) as { id: string }[];
    for (const s of list) {
      const events = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      if (!events.some((e) => e.type === 'command' && e.data.detected && e.data.text === typed)) continue;
      if (events.some((e) => e.type === 'session.close')) return { id: s.id, events };
      break;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`no closed session with a typed ${JSON.stringify(typed)}`);
}

function castOf(events: Ev[]): [number, string, string][] {
  return events.filter((e) => e.type === 'output').flatMap((e) => e.data.cast);
}

test('shell: echo, stty size follows a resize, Ctrl-C interrupts sleep 100, exit 7 ends ssh with 7; all recorded', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const { term, status } = await shellIn('box', 100, 30);
  await term.line('echo hello-$((6*7))');
  await term.waitFor(/^hello-42$/m);

  await term.line('stty size');
  await term.waitFor(/^30 100$/m);
  await tmux(term, ['resize-window', '-t', term.target, '-x', '120', '-y', '40']);
  await new Promise((r) => setTimeout(r, 300));
  await term.line('stty size');
  await term.waitFor(/^40 120$/m);

  await term.line('sleep 100');
  await new Promise((r) => setTimeout(r, 500));
  const sent = Date.now();
  await term.keys('C-c');
  await term.waitFor(/\^C\s*\ngh> $/m, 5000);
  const interruptMs = Date.now() - sent;
  await term.line('echo after-$((1+1))');
  await term.waitFor(/^after-2$/m);
  t.diagnostic(`Ctrl-C ended sleep 100 and the prompt returned in ${interruptMs} ms`);

  // A typed command the guard would block is observed (recorded with that verdict), not enforced.
  const file = path.join(scratch, 'typed-touch');
  await term.line(`touch ${file}`);
  await term.waitFor(/^gh> $/m, 5000, (await term.capture()).lastIndexOf('typed-touch'));
  await term.line('exit 7');
  assert.equal(await status(), 7, 'ssh exits with the shell status');
  assert.equal(fs.existsSync(file), true, 'typed commands are observed, not blocked');

  const { events } = await shellSession('stty size');
  const shell = events.find((e) => e.type === 'command' && e.data.text === '<interactive shell>')!;
  assert.ok(shell, 'the shell is a command event');
  assert.equal(shell.data.channel, 'shell');
  assert.deepEqual([shell.data.cast.version, shell.data.cast.width, shell.data.cast.height], [2, 100, 30]);
  assert.equal(shell.data.verdict.action, 'allow');
  const res = events.find((e) => e.type === 'result' && e.data.command === shell.seq)!;
  assert.equal(res.data.status, 'error');
  assert.equal(res.data.meta.exitStatus, 7);
  assert.ok(res.data.bytesOut > 0 && res.data.bytesIn > 0);
  assert.ok(res.seq > events.filter((e) => e.type === 'output').at(-1)!.seq, 'the result comes after the recording');

  const typed = events.filter((e) => e.type === 'command' && e.data.detected);
  assert.deepEqual(
    typed.map((e) => e.data.text),
    ["PS1='gh> '; clear", 'echo hello-$((6*7))', 'stty size', 'stty size', 'sleep 100', 'echo after-$((1+1))', `touch ${file}`, 'exit 7'],
  );
  for (const e of typed) {
    assert.equal(e.data.bestEffort, true);
    assert.equal(e.data.shell, shell.seq);
    assert.equal(e.data.verdict.enforced, false);
  }
  const touch = typed.find((e) => e.data.text.startsWith('touch'))!;
  assert.deepEqual([touch.data.verdict.action, touch.data.verdict.rule], ['block', 'no-touch']);

  const cast = castOf(events);
  assert.ok(cast.some((c) => c[1] === 'r' && c[2] === '120x40'), 'the resize is recorded');
  assert.ok(cast.some((c) => c[1] === 'i' && c[2].includes('\x03')), 'Ctrl-C is recorded as input');
  assert.ok(cast.filter((c) => c[1] === 'o').map((c) => c[2]).join('').includes('hello-42'));
  for (let i = 1; i < cast.length; i++) assert.ok(cast[i]![0] >= cast[i - 1]![0], 'times never go back');
  for (const e of events.filter((x) => x.type === 'output')) assert.ok(JSON.stringify(e.data.cast).length < 40_000, 'chunks are bounded');
});

test('replay: the recording plays to the same final screen, and exports as valid asciicast v2', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const { term, status } = await shellIn('box', 80, 24);
  await term.line("printf '\\033[1mbold\\033[0m and \\033[31mred\\033[0m\\n'; seq 1 30");
  await term.waitFor(/^30$/m);
  await term.line('echo replay-$((2*3))');
  await term.waitFor(/^replay-6$/m);
  await term.line('exit');
  assert.equal(await status(), 0);
  const live = await screen(term);
  assert.match(live, /replay-6/);

  const { id, events } = await shellSession('echo replay-$((2*3))');
  const { term: replay, status: replayStatus } = await startKept([process.execPath, BIN, 'sessions', 'replay', id, '--max-wait', '0', '--config', gw.configPath], { width: 80, height: 24 });
  assert.equal(await replayStatus(), 0);
  const replayed = await screen(replay);
  assert.equal(replayed, live, 'the replayed screen equals the live one');

  // --speed plays with the recorded rhythm, sped up: far quicker than the session took.
  const started = Date.now();
  const fast = await gw.cli(['sessions', 'replay', id, '--speed', '1000']);
  assert.equal(fast.code, 0, fast.stderr);
  assert.ok(fast.stdout.includes('replay-6'));
  assert.ok(Date.now() - started < 15_000);

  const file = path.join(gw.dir, 'shell.cast');
  const ex = await gw.cli(['sessions', 'export', id, '--format', 'asciicast', '-o', file]);
  assert.equal(ex.code, 0, ex.stderr);
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  assert.equal(lines.pop(), '', 'ends with a newline');
  const header = JSON.parse(lines[0]!);
  assert.equal(header.version, 2);
  assert.deepEqual([header.width, header.height], [80, 24]);
  assert.ok(Number.isInteger(header.timestamp) && Math.abs(header.timestamp - Date.now() / 1000) < 600);
  let last = 0;
  const codes = new Set<string>();
  let out = '';
  for (const l of lines.slice(1)) {
    const e = JSON.parse(l);
    assert.ok(Array.isArray(e) && e.length === 3, l);
    assert.equal(typeof e[0], 'number');
    assert.ok(e[0] >= last, 'times never go back');
    last = e[0];
    assert.ok(['o', 'i', 'r'].includes(e[1]), l);
    assert.equal(typeof e[2], 'string');
    codes.add(e[1]);
    if (e[1] === 'o') out += e[2];
  }
  assert.ok(codes.has('o') && codes.has('i'));
  assert.ok(out.includes('replay-6') && out.includes('\x1b[31mred'));
  assert.equal(lines.length - 1, castOf(events).length);
  // Without -o it goes to stdout, identical.
  const stdout = await gw.cli(['sessions', 'export', id, '--format', 'asciicast']);
  assert.equal(stdout.stdout, fs.readFileSync(file, 'utf8'));
  const noShell = await gw.cli(['sessions', 'replay', '00000000-0000-0000-0000-000000000000']);
  assert.notEqual(noShell.code, 0);
});

test('masking: a secret printed by cat in a shell never reaches the screen or the journal', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const file = path.join(scratch, 'contacts.txt');
  fs.writeFileSync(file, 'owner: alice@example.com\nbackup: bob.smith@example.org\n');
  const { term, status } = await shellIn('box-masked', 100, 30);
  await term.line(`cat ${file}`);
  await term.waitFor(/^backup: \[MASKED:email\]$/m);
  await term.waitFor(/^gh> $/m);
  await term.line('echo typed-mail carol@example.net');
  await term.waitFor(/^typed-mail \[MASKED:email\]$/m);
  await term.line('exit');
  assert.equal(await status(), 0);
  const seen = await term.capture();
  assert.match(seen, /^owner: \[MASKED:email\]$/m);
  assert.ok(!seen.includes('alice@example.com') && !seen.includes('bob.smith@example.org'), seen);

  const { events } = await shellSession(`cat ${file}`);
  const all = JSON.stringify(events);
  for (const s of ['alice@example.com', 'bob.smith@example.org', 'carol@example.net']) assert.ok(!all.includes(s), `the journal must not hold ${s}`);
  const out = castOf(events).filter((c) => c[1] === 'o').map((c) => c[2]).join('');
  assert.ok(out.includes('owner: [MASKED:email]'));
  const res = events.find((e) => e.type === 'result')!;
  assert.ok(res.data.masked.email >= 3, JSON.stringify(res.data.masked));
});

test('exec-only connection: a shell is refused with a message and a non-zero exit; exec works', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const run = (extra: string[], cmd?: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn('ssh', [...sshArgs('box-execonly', extra), ...(cmd ? [cmd] : [])], { env: { ...process.env, ...sshEnv() }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      p.once('error', reject);
      p.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  for (const mode of [['-tt'], ['-T']]) {
    const r = await run(mode);
    assert.notEqual(r.code, 0, `${mode}: ${r.stdout} ${r.stderr}`);
    assert.equal(r.code, 126);
    assert.match(r.stderr, /connection "box-execonly" allows commands only \(exec\), not interactive shells/);
  }
  const ok = await run([], 'echo exec-ok');
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'exec-ok\n');
});

/** Median of 5 samples, 300 ms apart: RSS moves with the V8 heap's own growth and shrinking. */
async function rssMedianKb(pid: number): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(rssKb(pid));
    await new Promise((r) => setTimeout(r, 300));
  }
  return xs.sort((a, b) => a - b)[2]!;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error('no VmRSS');
  return Number(m[1]);
}

test('memory: 50 idle shells cost the gateway at most 1 MB of RSS each', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const pid = gw.pid()!;
  const N = 50;
  const open = async () => {
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve()).once('error', reject);
      client.connect({ host: '127.0.0.1', port: sshPort, username: 'box', password: secret(), readyTimeout: 20_000, hostVerifier: () => true });
    });
    const stream = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.shell({ rows: 24, cols: 80, term: 'xterm' }, (err, s) => (err ? reject(err) : resolve(s))));
    // idle at its prompt
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    stream.on('data', () => {});
    return client;
  };
  const clients: ssh2.Client[] = [];
  try {
    const openAll = async () => {
      for (let i = 0; i < N; i += 10) clients.push(...(await Promise.all(Array.from({ length: 10 }, open))));
      await new Promise((r) => setTimeout(r, 2000));
    };
    const closeAll = async () => {
      for (const c of clients.splice(0)) c.end();
      await new Promise((r) => setTimeout(r, 3000));
    };
    // Warm-up round: code loaded and the heap grown, so the second round's difference is what
    // live idle shells hold (the V8 heap does not shrink back between rounds; RSS is noisy).
    const cold = await rssMedianKb(pid);
    await openAll();
    const first = await rssMedianKb(pid);
    await closeAll();
    const base = await rssMedianKb(pid);
    await openAll();
    const loaded = await rssMedianKb(pid);
    // The worse of the two rounds is asserted: the first includes loading the code paths.
    const per = Math.max(loaded - base, first - cold) / N;
    t.diagnostic(`gateway RSS: cold ${cold} kB, first ${N} shells ${first} kB; then 0 shells ${base} kB, ${N} idle shells ${loaded} kB; per idle shell session: ${((first - cold) / N).toFixed(0)} kB (first round, incl. warm-up), ${((loaded - base) / N).toFixed(0)} kB (second round)`);
    assert.ok(per <= 1024, `${per} kB per idle shell`);
  } finally {
    for (const c of clients) c.end();
  }
});
