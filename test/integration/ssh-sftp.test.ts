// sftp and scp through the gateway: the real OpenSSH sftp and scp clients (scp speaks sftp by
// default since OpenSSH 9) through the gateway to a real sshd's sftp subsystem, with the guard
// and the journal; and a raw ssh2 client sending malformed SFTP packets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import ssh2 from 'ssh2';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { sshTarget, startSshd, sshdMissing, type SshServer } from '../helpers/sshd.ts';

let sshd: SshServer | null = null;
let gw: GatewayUnderTest | null = null;
let sshPort = 0;
let scratch = '';
let key = '';
let callerKey = '';
let skipped: string | null = null;

before(async () => {
  skipped = sshdMissing('sftp', 'scp');
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
      ],
      policy: {
        default: { action: 'allow' },
        rules: [
          { name: 'keep-files', match: { types: ['sftp.remove', 'sftp.rename'], tables: { write: ['*/keep/*'] } }, action: 'block', reason: 'files under keep/ may not be removed or renamed', hint: 'ask the test to allow it' },
        ],
      },
    },
  });
  scratch = fs.mkdtempSync(path.join(gw.dir, 'scratch-'));
  key = await gw.createKey('runner', { connections: 'box,box-masked', kind: 'agent' });
  // sftp -b implies BatchMode (no password prompts): the caller logs in with a registered SSH key.
  callerKey = path.join(gw.dir, 'caller_ed25519');
  const k = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'caller', '-f', callerKey]);
  assert.equal(k.status, 0);
  const added = await gw.cli(['keys', 'add-ssh', 'runner', '--pubkey', `${callerKey}.pub`]);
  assert.equal(added.code, 0, added.stderr);
});

after(async () => {
  await gw?.stop();
  await sshd?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(cmd: string, args: string[], timeoutMs = 300_000): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const common = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10'];
/** options for scp/sftp through the gateway, as user `conn` */
const viaGateway = () => ['-P', String(sshPort), '-i', callerKey, ...common];
const direct = () => ['-P', String(sshd!.port), '-i', sshd!.clientKeyFile, ...common];

type Ev = { type: string; seq: number; data: any };

/** Waits (bounded) for the newest closed session holding a command that `pred` accepts. */
async function sessionWith(pred: (e: Ev) => boolean): Promise<Ev[]> {
  for (let i = 0; i < 25; i++) {
    const list = JSON.parse((await gw!.cli(['sessions', 'list', '--json', '--limit', '5'])).stdout) as { id: string }[];
    for (const s of list) {
      const events = JSON.parse((await gw!.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[];
      if (!events.some((e) => e.type === 'command' && pred(e))) continue;
      if (events.some((e) => e.type === 'session.close')) return events;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('no closed session with the expected command');
}

const resultOf = (events: Ev[], cmd: Ev) => events.find((e) => e.type === 'result' && e.data.command === cmd.seq);
const commandsText = (events: Ev[]) => events.filter((e) => e.type === 'command').map((e) => e.data.text as string);

/** A pseudo-random file of `bytes` (AES-CTR over zeros: fast), and its sha256. */
async function makeFile(file: string, bytes: number): Promise<string> {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const hash = createHash('sha256');
  const out = fs.createWriteStream(file);
  const zeros = Buffer.alloc(1 << 20);
  for (let left = bytes; left > 0; ) {
    const n = Math.min(left, zeros.length);
    const chunk = cipher.update(zeros.subarray(0, n));
    hash.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    left -= n;
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  return hash.digest('hex');
}

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    fs.createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

test('scp (sftp protocol): a 200 MB file goes up and down through the gateway with the same sha256; compared with scp direct', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const size = 200 * 1024 * 1024;
  const src = path.join(scratch, 'big.bin');
  const up = path.join(scratch, 'big-up.bin');
  const down = path.join(scratch, 'big-down.bin');
  try {
    const want = await makeFile(src, size);
    const u = await run('scp', [...viaGateway(), src, `box@127.0.0.1:${up}`]);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(fs.statSync(up).size, size);
    assert.equal(await sha256File(up), want);
    const d = await run('scp', [...viaGateway(), `box@127.0.0.1:${up}`, down]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(await sha256File(down), want);
    fs.rmSync(up);
    fs.rmSync(down);

    const du = await run('scp', [...direct(), src, `${sshd!.user}@127.0.0.1:${up}`]);
    assert.equal(du.code, 0, du.stderr);
    const dd = await run('scp', [...direct(), `${sshd!.user}@127.0.0.1:${up}`, down]);
    assert.equal(dd.code, 0, dd.stderr);
    assert.equal(await sha256File(down), want);
    const mbps = (ms: number) => (size / 1048576 / (ms / 1000)).toFixed(0);
    t.diagnostic(`200 MB scp up: gateway ${u.ms} ms (${mbps(u.ms)} MB/s), direct ${du.ms} ms (${mbps(du.ms)} MB/s)`);
    t.diagnostic(`200 MB scp down: gateway ${d.ms} ms (${mbps(d.ms)} MB/s), direct ${dd.ms} ms (${mbps(dd.ms)} MB/s)`);

    // The journal: the upload's open carries the byte count at close.
    const ev = await sessionWith((e) => e.data.kind === 'sftp' && e.data.text.startsWith(`open ${up} (write`));
    const open = ev.find((e) => e.type === 'command' && e.data.text.startsWith(`open ${up} (write`))!;
    assert.equal(open.data.classification.class, 'write');
    assert.deepEqual(open.data.classification.types, ['sftp.write']);
    const res = resultOf(ev, open)!;
    assert.equal(res.data.status, 'ok');
    assert.equal(res.data.meta.bytesWritten, size);
    assert.equal(res.data.bytesIn, size);
  } finally {
    for (const f of [src, up, down]) fs.rmSync(f, { force: true });
  }
});

test('sftp -b: put, get, rename, rm, mkdir all recorded with results and byte counts; the journal verifies', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const dir = path.join(scratch, 'batch');
  fs.mkdirSync(dir);
  const local = path.join(scratch, 'local.txt');
  const fetched = path.join(scratch, 'fetched.txt');
  const body = randomBytes(100_000);
  fs.writeFileSync(local, body);
  const batch = path.join(scratch, 'batch.txt');
  fs.writeFileSync(
    batch,
    [`mkdir ${dir}/sub`, `put ${local} ${dir}/sub/a.bin`, `get ${dir}/sub/a.bin ${fetched}`, `rename ${dir}/sub/a.bin ${dir}/sub/b.bin`, `ls ${dir}/sub`, `rm ${dir}/sub/b.bin`, `rmdir ${dir}/sub`].join('\n') + '\n',
  );
  const r = await run('sftp', [...viaGateway(), '-b', batch, 'box@127.0.0.1']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.deepEqual(fs.readFileSync(fetched), body);
  assert.equal(fs.existsSync(path.join(dir, 'sub')), false, 'rmdir ran');

  const ev = await sessionWith((e) => e.data.text === `remove ${dir}/sub/b.bin`);
  const texts = commandsText(ev);
  const find = (prefix: string) => {
    const c = ev.find((e) => e.type === 'command' && (e.data.text as string).startsWith(prefix));
    assert.ok(c, `a command starting ${prefix} in ${JSON.stringify(texts)}`);
    return { cmd: c, res: resultOf(ev, c)! };
  };
  const sub = find(`mkdir ${dir}/sub`);
  assert.equal(sub.res.data.status, 'ok');
  assert.deepEqual(sub.cmd.data.classification.types, ['sftp.mkdir']);
  const put = find(`open ${dir}/sub/a.bin (write,create,truncate)`);
  assert.equal(put.res.data.status, 'ok');
  assert.equal(put.res.data.meta.bytesWritten, body.length);
  assert.equal(put.res.data.meta.bytesRead, 0);
  assert.ok(typeof put.res.data.durationMs === 'number');
  const get = find(`open ${dir}/sub/a.bin (read)`);
  assert.equal(get.cmd.data.classification.class, 'read');
  assert.equal(get.res.data.meta.bytesRead, body.length);
  assert.equal(get.res.data.bytesOut, body.length);
  const ren = find(`rename ${dir}/sub/a.bin ${dir}/sub/b.bin`);
  assert.equal(ren.res.data.status, 'ok');
  assert.deepEqual(ren.cmd.data.classification.types, ['sftp.rename']);
  const ls = find(`opendir ${dir}/sub`);
  assert.equal(ls.res.data.meta.entries, 3, 'b.bin, . and ..');
  const rm = find(`remove ${dir}/sub/b.bin`);
  assert.equal(rm.res.data.status, 'ok');
  assert.equal(rm.cmd.data.classification.class, 'write');
  const rd = find(`rmdir ${dir}/sub`);
  assert.equal(rd.res.data.status, 'ok');
  // Each mutating command is recorded before its result, in the order the client sent them.
  const order = [sub, put, get, ren, rm, rd].map((x) => x.cmd.seq);
  assert.deepEqual([...order].sort((a, b) => a - b), order);
  for (const x of [sub, put, get, ren, rm, rd]) assert.ok(x.cmd.seq < x.res.seq);
  // The subsystem itself: a command with counts of lookups at the end.
  const chan = find('sftp');
  assert.equal(chan.res.data.status, 'ok');
  assert.equal(chan.res.data.meta.version, 3);
  assert.ok(chan.res.data.meta.lookups.realpath >= 1);
  assert.equal(chan.res.data.meta.bytesWritten, body.length);
  assert.equal(chan.res.data.meta.bytesRead, body.length);
  t.diagnostic(`recorded: ${JSON.stringify(texts)}`);

  const v = await gw!.cli(['verify']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
});

test('legacy scp -O (scp -t / scp -f as exec): a file goes up and down, recorded as shell commands', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const src = path.join(scratch, 'legacy.bin');
  const up = path.join(scratch, 'legacy-up.bin');
  const down = path.join(scratch, 'legacy-down.bin');
  const want = await makeFile(src, 4 * 1024 * 1024);
  const u = await run('scp', ['-O', ...viaGateway(), src, `box@127.0.0.1:${up}`]);
  assert.equal(u.code, 0, u.stderr);
  assert.equal(await sha256File(up), want);
  const d = await run('scp', ['-O', ...viaGateway(), `box@127.0.0.1:${up}`, down]);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(await sha256File(down), want);
  const ev = await sessionWith((e) => e.data.kind === 'shell' && /^scp .*-f /.test(e.data.text));
  const cmd = ev.find((e) => e.type === 'command' && /^scp .*-f /.test(e.data.text))!;
  assert.equal(resultOf(ev, cmd)!.data.meta.exitStatus, 0);
  for (const f of [src, up, down]) fs.rmSync(f, { force: true });
});

async function rawClient(): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve()).once('error', reject);
    client.connect({ host: '127.0.0.1', port: sshPort, username: 'box', password: `runner.${key}`, readyTimeout: 10_000, hostVerifier: () => true });
  });
  return client;
}

test('guard: a blocked remove is refused with the reason, the file stays, and the sftp session goes on', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const keep = path.join(scratch, 'keep');
  fs.mkdirSync(keep);
  const file = path.join(keep, 'precious.txt');
  fs.writeFileSync(file, 'precious\n');

  // OpenSSH sftp: `-rm` goes on after an error; the next command runs.
  const batch = path.join(scratch, 'blocked-batch.txt');
  const after1 = path.join(scratch, 'after-block.txt');
  fs.writeFileSync(path.join(scratch, 'local-after.txt'), 'after\n');
  fs.writeFileSync(batch, `-rm ${file}\nput ${path.join(scratch, 'local-after.txt')} ${after1}\n`);
  const r = await run('sftp', [...viaGateway(), '-b', batch, 'box@127.0.0.1']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stderr, /Permission denied/);
  assert.equal(fs.readFileSync(file, 'utf8'), 'precious\n', 'the file still exists');
  assert.equal(fs.readFileSync(after1, 'utf8'), 'after\n', 'the session went on');

  // A client that shows the status message (ssh2's) sees the reason.
  const client = await rawClient();
  try {
    const sftp = await new Promise<ssh2.SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
    const err = await new Promise<(Error & { code?: number }) | null | undefined>((resolve) => sftp.unlink(file, resolve));
    assert.ok(err, 'the remove must fail');
    assert.equal(err.code, 3, 'SSH_FX_PERMISSION_DENIED');
    assert.match(err.message, /files under keep\/ may not be removed or renamed/);
    assert.match(err.message, /rule keep-files/);
    const renameErr = await new Promise<Error | null | undefined>((resolve) => sftp.rename(file, path.join(scratch, 'moved.txt'), resolve));
    assert.match(String(renameErr?.message), /may not be removed or renamed/);
    assert.equal(fs.existsSync(file), true);
    // …and the same session goes on.
    const list = await new Promise<ssh2.FileEntry[]>((resolve, reject) => sftp.readdir(keep, (e, l) => (e ? reject(e) : resolve(l))));
    assert.deepEqual(
      list.map((e) => e.filename),
      ['precious.txt'],
    );
    await new Promise<void>((resolve, reject) => sftp.writeFile(path.join(scratch, 'after-raw.txt'), 'ok', (e) => (e ? reject(e) : resolve())));
    assert.equal(fs.readFileSync(path.join(scratch, 'after-raw.txt'), 'utf8'), 'ok');
  } finally {
    client.end();
  }

  const ev = await sessionWith((e) => e.data.text === `remove ${file}` && e.data.verdict.action === 'block');
  const cmd = ev.find((e) => e.type === 'command' && e.data.text === `remove ${file}`)!;
  assert.equal(cmd.data.verdict.rule, 'keep-files');
  assert.deepEqual(cmd.data.classification.types, ['sftp.remove']);
  assert.equal(resultOf(ev, cmd)!.data.status, 'denied');
});

test('masking connection: sftp is refused (file contents cannot be masked)', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const batch = path.join(scratch, 'masked-batch.txt');
  fs.writeFileSync(batch, 'ls\n');
  const r = await run('sftp', [...viaGateway(), '-b', batch, 'box-masked@127.0.0.1']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /file contents cannot be masked/);
});

/** Opens a raw sftp subsystem channel on the gateway. */
async function rawSubsystem(client: ssh2.Client): Promise<ssh2.ClientChannel> {
  return new Promise((resolve, reject) => client.subsys('sftp', (err, s) => (err ? reject(err) : resolve(s))));
}

function packet(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length + 1, 0);
  head[4] = type;
  return Buffer.concat([head, body]);
}
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** Collects what the gateway sends back until `done(bytes)` or the channel closes, bounded in time. */
function collect(ch: ssh2.ClientChannel, done: (b: Buffer) => boolean, ms = 10_000): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      ch.off('data', onData);
      resolve({ data, closed });
    };
    const onData = (d: Buffer) => {
      data = Buffer.concat([data, d]);
      if (done(data)) finish();
    };
    const timer = setTimeout(finish, ms);
    ch.on('data', onData);
    ch.once('close', () => {
      closed = true;
      finish();
    });
    ch.stderr.on('data', () => {});
  });
}

test('hostile input: garbage, huge lengths and malformed SFTP packets do not crash the gateway', async (t) => {
  if (!gw) return t.skip(skipped ?? 'no sshd');
  const client = await rawClient();
  try {
    // 1. An absurd length: the channel is closed.
    const a = await rawSubsystem(client);
    const wait1 = collect(a, () => false);
    a.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]));
    const r1 = await wait1;
    assert.equal(r1.closed, true, 'a 4 GiB length closes the channel');

    // 2. Random garbage: closed too (its first four bytes are a length out of bounds, or a bad packet).
    const b = await rawSubsystem(client);
    const wait2 = collect(b, () => false, 5000);
    b.write(Buffer.concat([Buffer.from([0x7f, 0, 0, 0]), randomBytes(4096)]));
    assert.equal((await wait2).closed, true);

    // 3. Well framed but malformed requests are answered, not forwarded, and the session goes on.
    const c = await rawSubsystem(client);
    const init = packet(1, u32(3));
    const truncatedOpen = packet(3, Buffer.concat([u32(7), u32(1000), Buffer.from('/etc')])); // path length beyond the packet
    const unknownType = packet(99, u32(8));
    const realpath = packet(16, Buffer.concat([u32(9), u32(1), Buffer.from('.')]));
    const statusOf = (buf: Buffer, id: number) => {
      for (let off = 0; off + 9 <= buf.length; ) {
        const len = buf.readUInt32BE(off);
        if (off + 4 + len > buf.length) break;
        if (buf[off + 4] === 101 && buf.readUInt32BE(off + 5) === id) return buf.readUInt32BE(off + 9);
        if (buf[off + 4] === 104 && buf.readUInt32BE(off + 5) === id) return 'name';
        off += 4 + len;
      }
      return undefined;
    };
    const wait3 = collect(c, (d) => statusOf(d, 9) !== undefined);
    c.write(Buffer.concat([init, truncatedOpen, unknownType, realpath]));
    const r3 = await wait3;
    assert.equal(r3.closed, false);
    assert.equal(statusOf(r3.data, 7), 5, 'SSH_FX_BAD_MESSAGE for the truncated open');
    assert.equal(statusOf(r3.data, 8), 8, 'SSH_FX_OP_UNSUPPORTED for the unknown type');
    assert.equal(statusOf(r3.data, 9), 'name', 'the realpath after them is answered by the target');
    c.close();

    // 4. A zero length.
    const z = await rawSubsystem(client);
    const wait4 = collect(z, () => false, 5000);
    z.write(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]));
    assert.equal((await wait4).closed, true);
  } finally {
    client.end();
  }
  // The gateway is up and serves sftp.
  const batch = path.join(scratch, 'alive-batch.txt');
  fs.writeFileSync(batch, `ls ${scratch}\n`);
  const r = await run('sftp', [...viaGateway(), '-b', batch, 'box@127.0.0.1']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(gw!.output().stderr + gw!.output().stdout, /sftp channel closed: protocol error/);
});
