// kubectl through the gateway (`type: kubernetes`): the real kubectl, a kubeconfig written by
// `gatehouse kubeconfig`, the test Kubernetes API server behind (test/helpers/kube-apiserver.ts)
// reached with a held token and a client certificate. Checks get, get -w and logs -f streaming,
// a blocked `get secrets` printed by kubectl, a held delete approved from another process, the
// impersonation headers the cluster receives, and exec (plain and -it in tmux) recorded as a
// terminal session and replayed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TmuxTerminal } from '../helpers/tmux.ts';
import { checkEchoRoundTrip, startHttpEcho } from '../helpers/kube-portforward.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { KUBECTL, generateClientCertificate, kubectlEnv, runKubectl, startKubeApiServer, startPortForward, kubeToolsMissing, type KubeApiServer } from '../helpers/kube-apiserver.ts';

const TOKEN = 'cluster-token-held-by-gatehouse';
let skipped: string | null = null;
let kube: KubeApiServer | null = null;
let gw: GatewayUnderTest;
let home = '';
let kubeconfig = '';
let botKey = '';
const children: ChildProcess[] = [];
const terms: TmuxTerminal[] = [];

before(async () => {
  skipped = kubeToolsMissing();
  if (skipped) return;
  const client = await generateClientCertificate('gatehouse');
  kube = await startKubeApiServer({ token: TOKEN, clientCa: client.caPem, namespaces: ['default', 'prod', 'kube-system'] });
  kube.addPod('default', 'web-1', { labels: { app: 'web' } });
  kube.addPod('prod', 'api-1');
  kube.addPod('kube-system', 'dns-1');
  kube.addSecret('default', 'db-creds', { username: 'app', password: 'hunter2' });
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-kube-'));
  const f = (name: string, text: string) => {
    const p = path.join(home, name);
    fs.writeFileSync(p, text, { mode: 0o600 });
    return `file:${p}`;
  };
  const httpPort = await freePort();
  const upstream = {
    type: 'kubernetes',
    url: kube.url,
    auth: { bearer: f('token', TOKEN) },
    ca: f('ca.pem', kube.caPem),
    clientCert: { cert: f('client.crt', client.certPem), key: f('client.key', client.keyPem) },
  };
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${await freePort()}`, http: `127.0.0.1:${httpPort}` },
      connections: [
        { name: 'cluster', ...upstream, impersonate: true },
        { name: 'cluster-masked', ...upstream, mask: { unmaskedGroups: ['breakglass'] } },
      ],
      policy: {
        default: { action: 'allow' },
        rules: [
          { name: 'no-secrets', match: { kinds: ['agent'], kubernetes: { verbs: ['get', 'list', 'watch'], resources: ['secrets'] } }, action: 'block', reason: 'agents may not read secrets', hint: 'ask a human' },
          { name: 'prod-deletes', match: { kubernetes: { verbs: ['delete', 'deletecollection'], namespaces: ['prod'] } }, action: 'review', approvers: ['ops'], mode: 'wait', holdFor: '60s' },
          { name: 'system-deletes', match: { kubernetes: { verbs: ['delete'], namespaces: ['kube-system'] } }, action: 'review', approvers: ['ops'], mode: 'defer' },
        ],
      },
    },
  });
  botKey = `bot.${await gw.createKey('bot', { kind: 'agent', groups: 'dev,system:masters', connections: 'cluster,cluster-masked' })}`;
  kubeconfig = path.join(home, 'kubeconfig');
  const r = await gw.cli(['kubeconfig', 'cluster', '--key', botKey, '-o', kubeconfig]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.statSync(kubeconfig).mode & 0o777, 0o600);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const t of terms) await t.kill();
  await gw?.stop();
  await kube?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

const kubectl = (args: string[], input?: string) => runKubectl(kubeconfig, home, args, { input, timeoutMs: 60_000 });

function startKubectl(args: string[]): { child: ChildProcess; waitFor: (re: RegExp, ms?: number) => Promise<string> } {
  const child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { env: kubectlEnv(home), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const waitFor = async (re: RegExp, ms = 15_000) => {
    const deadline = Date.now() + ms;
    while (!re.test(stdout)) {
      if (Date.now() >= deadline || child.exitCode !== null) throw new Error(`kubectl ${args.join(' ')}: no ${String(re)} within ${ms} ms; stdout:\n${stdout}\nstderr:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return stdout;
  };
  return { child, waitFor };
}

type Ev = { type: string; seq: number; data: any };

async function allEvents(): Promise<{ id: string; events: Ev[] }[]> {
  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json', '--limit', '50'])).stdout) as { id: string }[];
  const out = [];
  for (const s of list) out.push({ id: s.id, events: JSON.parse((await gw.cli(['sessions', 'show', s.id, '--json'])).stdout).events as Ev[] });
  return out;
}

test('kubectl get pods through the gateway: rows print; the cluster sees the held token, the client certificate and the caller impersonated', async (t) => {
  if (skipped) return t.skip(skipped);
  const before = kube!.requests.length;
  const r = await kubectl(['get', 'pods']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^NAME\s+READY\s+STATUS/m);
  assert.match(r.stdout, /^web-1\s/m);
  const seen = kube!.requests.slice(before).filter((q) => q.url.includes('/pods'));
  assert.ok(seen.length > 0);
  for (const q of seen) {
    assert.equal(q.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(q.headers['impersonate-user'], 'bot');
    assert.deepEqual(q.impersonateGroups, ['dev'], 'groups with ":" (system:masters) are never passed on');
    assert.equal(q.clientCn, 'gatehouse');
  }
  const secretPart = botKey.slice(botKey.lastIndexOf('.') + 1);
  assert.ok(!JSON.stringify(kube!.requests).includes(secretPart), "the client's key reached the cluster");
});

test('get -w and logs -f stream through the gateway', async (t) => {
  if (skipped) return t.skip(skipped);
  const w = startKubectl(['get', 'pods', '-w']);
  await w.waitFor(/^web-1\s/m);
  kube!.addPod('default', 'web-9');
  await w.waitFor(/^web-9\s/m);
  w.child.kill('SIGTERM');

  kube!.appendLog('default', 'web-1', 'line one');
  const l = startKubectl(['logs', '-f', 'web-1']);
  await l.waitFor(/line one/);
  kube!.appendLog('default', 'web-1', 'line two');
  await l.waitFor(/line two/);
  l.child.kill('SIGTERM');
  const all = (await allEvents()).flatMap((s) => s.events);
  const watch = all.find((e) => e.type === 'command' && e.data.kubernetes?.verb === 'watch' && e.data.kubernetes.resource === 'pods');
  assert.ok(watch, 'the watch is recorded with its Kubernetes facts');
  assert.ok(all.some((e) => e.type === 'command' && e.data.kubernetes?.subresource === 'log' && e.data.kubernetes.name === 'web-1'));
});

test('get secrets is blocked for agents: kubectl prints the reason from the Status; the cluster never sees it', async (t) => {
  if (skipped) return t.skip(skipped);
  const before = kube!.requests.length;
  const r = await kubectl(['get', 'secrets']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Error from server \(Forbidden\): gatehouse: agents may not read secrets \(rule: no-secrets; hint: ask a human\)/);
  assert.ok(!kube!.requests.slice(before).some((q) => q.url.includes('secrets')));
  const g = await kubectl(['get', 'secret', 'db-creds', '-o', 'json']);
  assert.notEqual(g.code, 0);
  assert.doesNotMatch(g.stdout, /hunter2|aHVudGVyMg/);
});

test('delete pod in prod is held; approved from another process, it runs once', async (t) => {
  if (skipped) return t.skip(skipped);
  const human = `ops-1.${await gw.createKey('ops-1', { kind: 'human', groups: 'ops', connections: 'cluster' })}`;
  const del = startKubectl(['delete', 'pod', 'api-1', '-n', 'prod', '--wait=false']);
  let reviewId = '';
  for (let i = 0; i < 100 && !reviewId; i++) {
    const list = JSON.parse((await gw.cli(['approvals', 'list', '--json', '--status', 'pending', '--key', human])).stdout) as { id: string; text: string }[];
    reviewId = list.find((x) => x.text.includes('/namespaces/prod/pods/api-1'))?.id ?? '';
    if (!reviewId) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(reviewId, 'a review was requested');
  assert.ok(kube!.getPod('prod', 'api-1'), 'not deleted while held');
  const a = await gw.cli(['approvals', 'approve', reviewId, '--key', human]);
  assert.equal(a.code, 0, a.stderr);
  await del.waitFor(/pod "api-1" deleted/, 20_000);
  assert.equal(kube!.getPod('prod', 'api-1'), undefined);
});

test('exec: the exit status comes back and the run is recorded; exec -it in tmux is recorded and replays', async (t) => {
  if (skipped) return t.skip(skipped);
  const e = await kubectl(['exec', 'web-1', '--', 'sh', '-c', 'echo hi; exit 3']);
  assert.equal(e.code, 3, e.stderr);
  assert.equal(e.stdout.trim(), 'hi');

  const status = path.join(home, 'exec-it.status');
  const argv = [KUBECTL, '--kubeconfig', kubeconfig, 'exec', '-it', 'web-1', '--', 'sh'];
  const term = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', status, ...argv], { env: { HOME: home }, width: 100, height: 30 });
  terms.push(term);
  await term.waitFor(/[$#] $/m, 20_000);
  await term.line('echo $((6*7))');
  await term.waitFor(/^42\s*$/m);
  await term.line('exit 0');
  for (let i = 0; i < 200 && !(fs.existsSync(status) && fs.readFileSync(status, 'utf8').endsWith('\n')); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(fs.readFileSync(status, 'utf8').trim(), '0');

  type Found = { id: string; command: Ev; result: Ev | undefined; output: Ev[] };
  let found = null as Found | null;
  for (let i = 0; i < 30 && !found?.result; i++) {
    for (const s of await allEvents()) {
      const command = s.events.filter((ev) => ev.type === 'command' && ev.data.kubernetes?.subresource === 'exec' && ev.data.exec?.tty).at(-1);
      if (command) found = { id: s.id, command, result: s.events.find((ev) => ev.type === 'result' && ev.data.command === command.seq), output: s.events.filter((ev) => ev.type === 'output' && ev.data.command === command.seq) };
    }
    if (!found?.result) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(found?.result, 'the exec -it has a command and a result');
  found = found as Found & { result: Ev };
  assert.deepEqual(found.command.data.exec.command, ['sh']);
  assert.equal(found.result!.data.meta.exitCode, 0);
  const cast = found.output.flatMap((o) => o.data.cast as [number, string, string][]);
  assert.ok(cast.some(([, code, d]) => code === 'o' && d.includes('42')), 'output recorded');
  assert.ok(cast.some(([, code, d]) => code === 'i' && d.includes('echo $((6*7))'.slice(0, 4))), 'stdin recorded');
  assert.ok(cast.some(([, code, d]) => code === 'r' && d === '100x30'), 'the terminal size recorded');
  const plain = found.command;
  const noTty = (await allEvents()).flatMap((s) => s.events).find((ev) => ev.type === 'result' && ev.data.meta?.exitCode === 3);
  assert.ok(noTty, `the plain exec's exit status 3 is recorded (${plain.seq})`);

  const exported = await gw.cli(['sessions', 'export', found.id, '--format', 'asciicast']);
  assert.equal(exported.code, 0, exported.stderr);
  const header = JSON.parse(exported.stdout.split('\n')[0]!);
  assert.equal(header.width, 100);
  assert.equal(header.height, 30);
  const replay = await gw.cli(['sessions', 'replay', found.id, '--max-wait', '0']);
  assert.equal(replay.code, 0, replay.stderr);
  assert.match(replay.stdout, /42/);
});

test('kubeconfig: a wrong key or a non-kubernetes connection is refused with a clear message', async (t) => {
  if (skipped) return t.skip(skipped);
  const bad = await gw.cli(['kubeconfig', 'cluster', '--key', 'bot.wrong']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /the key was refused/);
  const none = await gw.cli(['kubeconfig', 'nope', '--key', botKey]);
  assert.match(none.stderr, /unknown connection "nope"/);
});

test('attach -it through the gateway: typed input reaches the main process; recorded as a terminal session and exported', async (t) => {
  if (skipped) return t.skip(skipped);
  kube!.addPod('default', 'console', { command: ['sh'], stdin: true, tty: true });
  const status = path.join(home, 'attach-it.status');
  const argv = [KUBECTL, '--kubeconfig', kubeconfig, 'attach', '-it', 'console'];
  const term = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', status, ...argv], { env: { HOME: home }, width: 90, height: 25 });
  terms.push(term);
  await term.waitFor(/If you don't see a command prompt/, 20_000);
  for (let i = 0; i < 200 && !kube!.mainProcess('default', 'console')?.pid; i++) await new Promise((r) => setTimeout(r, 50));
  await term.line('echo attached-$((6*7))');
  await term.waitFor(/^attached-42\s*$/m);
  await term.line('exit');
  for (let i = 0; i < 200 && !(fs.existsSync(status) && fs.readFileSync(status, 'utf8').endsWith('\n')); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(fs.readFileSync(status, 'utf8').trim(), '0');
  const upstream = kube!.requests.find((q) => q.url.startsWith('/api/v1/namespaces/default/pods/console/attach?'));
  assert.equal(upstream?.status, 101, 'the cluster saw the attach');
  assert.equal(upstream?.headers['impersonate-user'], 'bot');

  type Found = { id: string; command: Ev; output: Ev[] };
  let found = null as Found | null;
  const journaled = () => !!found?.output.some((o) => JSON.stringify(o.data.cast).includes('attached-42'));
  for (let i = 0; i < 30 && !journaled(); i++) {
    for (const s of await allEvents()) {
      const command = s.events.filter((ev) => ev.type === 'command' && ev.data.kubernetes?.subresource === 'attach').at(-1);
      if (command) found = { id: s.id, command, output: s.events.filter((ev) => ev.type === 'output' && ev.data.command === command.seq) };
    }
    if (!journaled()) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(found, 'the attach is recorded as a command');
  assert.equal(found.command.data.kubernetes.name, 'console');
  const cast = found.output.flatMap((o) => o.data.cast as [number, string, string][]);
  assert.ok(cast.some(([, code, d]) => code === 'o' && d.includes('attached-42')), 'output recorded');
  assert.ok(cast.some(([, code, d]) => code === 'i' && d.includes('ech')), 'stdin recorded');
  // kubectl attach sends the size plus one, then the real size (to force a redraw on re-attach).
  assert.equal(cast.filter(([, code]) => code === 'r').at(-1)?.[2], '90x25', 'the terminal size recorded');

  const exported = await gw.cli(['sessions', 'export', found.id, '--format', 'asciicast']);
  assert.equal(exported.code, 0, exported.stderr);
  const [header, ...frames] = exported.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(header.version, 2);
  assert.deepEqual([header.width, header.height], [90, 25], 'the size kubectl settled on before the first output');
  assert.ok(frames.some((f: [number, string, string]) => f[1] === 'o' && f[2].includes('attached-42')), 'the export carries the output');
  kube!.deletePod('default', 'console');
});

test('a masking connection: exec output is masked in flight for masked identities; a break-glass identity sees it as sent; the recording is masked', async (t) => {
  if (skipped) return t.skip(skipped);
  const masked = path.join(home, 'kubeconfig-masked');
  assert.equal((await gw.cli(['kubeconfig', 'cluster-masked', '--key', botKey, '-o', masked])).code, 0);
  const m = await runKubectl(masked, home, ['exec', 'web-1', '--', 'sh', '-c', 'echo mail ann.lee@example.com; echo key AKIAIOSFODNN7EXAMPLE >&2; exit 4'], { timeoutMs: 60_000 });
  assert.equal(m.code, 4, m.stderr);
  assert.equal(m.stdout.trim(), 'mail [MASKED:email]');
  assert.match(m.stderr, /key \[MASKED:aws\]/);
  assert.doesNotMatch(m.stderr, /AKIAIOSFODNN7EXAMPLE/);
  // Interactive: the prompt still appears (held output is let through when the shell goes quiet).
  const status = path.join(home, 'exec-masked.status');
  const term = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', status, KUBECTL, '--kubeconfig', masked, 'exec', '-it', 'web-1', '--', 'sh'], { env: { HOME: home }, width: 100, height: 30 });
  terms.push(term);
  await term.waitFor(/[$#] $/m, 20_000);
  await term.line('echo $((6*7)) ann.lee@example.com');
  await term.waitFor(/^42 \[MASKED:email\]\s*$/m);
  await term.line('exit 0');
  for (let i = 0; i < 200 && !(fs.existsSync(status) && fs.readFileSync(status, 'utf8').endsWith('\n')); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(fs.readFileSync(status, 'utf8').trim(), '0');
  // A large output passes whole through the re-framing, with backpressure.
  const big = await runKubectl(masked, home, ['exec', 'web-1', '--', 'sh', '-c', 'seq 1 200000'], { timeoutMs: 60_000 });
  assert.equal(big.code, 0, big.stderr);
  const lines = big.stdout.trim().split('\n');
  assert.equal(lines.length, 200000);
  assert.equal(lines.at(-1), '200000');

  const bg = `bg.${await gw.createKey('bg', { kind: 'human', groups: 'breakglass', connections: 'cluster-masked' })}`;
  const bgConfig = path.join(home, 'kubeconfig-bg');
  assert.equal((await gw.cli(['kubeconfig', 'cluster-masked', '--key', bg, '-o', bgConfig])).code, 0);
  const r = await runKubectl(bgConfig, home, ['exec', 'web-1', '--', 'sh', '-c', 'echo mail ann.lee@example.com; echo key AKIAIOSFODNN7EXAMPLE >&2'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /mail ann\.lee@example\.com/);
  assert.match(r.stderr, /AKIAIOSFODNN7EXAMPLE/);
  let journal = '';
  for (let i = 0; i < 30 && !journal.includes('[MASKED:email]'); i++) {
    journal = JSON.stringify(await allEvents());
    if (!journal.includes('[MASKED:email]')) await new Promise((res) => setTimeout(res, 200));
  }
  assert.match(journal, /mail \[MASKED:email\]/, 'the output is recorded, masked');
  for (const secret of ['ann.lee@example.com', 'AKIAIOSFODNN7EXAMPLE']) {
    const at = journal.indexOf(secret);
    assert.equal(at, -1, `the journal holds ${secret}: …${journal.slice(Math.max(0, at - 300), at + 50)}`);
  }
});

test('defer mode: kubectl gets 403 with the review id in the Status; once approved, the same delete runs once', async (t) => {
  if (skipped) return t.skip(skipped);
  const first = await kubectl(['delete', 'pod', 'dns-1', '-n', 'kube-system', '--wait=false']);
  assert.notEqual(first.code, 0);
  const m = /Error from server \(Forbidden\): gatehouse: .*held for approval as review (\S+?)[;: )]/.exec(first.stderr);
  assert.ok(m, first.stderr);
  const reviewId = m[1]!;
  assert.ok(kube!.getPod('kube-system', 'dns-1'), 'not deleted while held');
  const raw = await kubectl(['delete', 'pod', 'dns-1', '-n', 'kube-system', '--wait=false', '-v=8']);
  assert.match(raw.stderr, /GatehouseReview/, 'the review id is a Status cause a machine can read');
  const human = `ops-2.${await gw.createKey('ops-2', { kind: 'human', groups: 'ops', connections: 'cluster' })}`;
  assert.equal((await gw.cli(['approvals', 'approve', reviewId, '--key', human])).code, 0);
  const again = await kubectl(['delete', 'pod', 'dns-1', '-n', 'kube-system', '--wait=false']);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /pod "dns-1" deleted/);
  assert.equal(kube!.getPod('kube-system', 'dns-1'), undefined);
});

test('port-forward through the gateway (SPDY in WebSocket, and plain SPDY): 1 MB round trips; each session is recorded as a portforward command with bytes both ways', async (t) => {
  if (skipped) return t.skip(skipped);
  const echo = await startHttpEcho();
  const running: ChildProcess[] = [];
  try {
    kube!.addPod('default', 'web-fwd', { ports: { 80: echo.port } });
    const big = randomBytes(1 << 20);
    for (const mode of ['websocket', 'spdy'] as const) {
      const before = kube!.requests.length;
      const { child, local } = await startPortForward(kubeconfig, home, 'pod/web-fwd', 80, mode === 'spdy' ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {});
      children.push(child);
      running.push(child);
      for (let i = 0; i < 2; i++) {
        await checkEchoRoundTrip(local, `${mode}-${i}`, big);
      }
      const upstream = kube!.requests.slice(before).filter((q) => q.url === '/api/v1/namespaces/default/pods/web-fwd/portforward');
      assert.deepEqual(upstream.map((q) => [q.method, String(q.headers.upgrade).toLowerCase(), q.status]), [mode === 'websocket' ? ['GET', 'websocket', 101] : ['POST', 'spdy/3.1', 101]], 'one upgrade reached the cluster');
      assert.equal(upstream[0]!.headers['impersonate-user'], 'bot');
      assert.equal(upstream[0]!.headers.authorization, `Bearer ${TOKEN}`);
      const rec = kube!.portForwards.at(-1)!;
      assert.equal(rec.transport, mode);
      assert.deepEqual(rec.ports, [80, 80, 80, 80]);
      assert.ok(rec.bytesIn > 2 * big.length && rec.bytesOut > 2 * big.length, `bytes both ways: ${rec.bytesIn} in, ${rec.bytesOut} out`);

      child.kill('SIGTERM');
      for (let i = 0; i < 200 && !rec.closed; i++) await new Promise((r) => setTimeout(r, 25));
      assert.ok(rec.closed, 'the session ended with kubectl');
      let command: Ev | undefined;
      let result: Ev | undefined;
      for (let i = 0; i < 30 && !result; i++) {
        const events = (await allEvents()).flatMap((s) => s.events);
        command = events.filter((e) => e.type === 'command' && e.data.kubernetes?.subresource === 'portforward' && String(e.data.http?.upgrade).toLowerCase() === (mode === 'websocket' ? 'websocket' : 'spdy/3.1')).at(-1);
        result = command ? events.find((e) => e.type === 'result' && e.data.command === command!.seq) : undefined;
        if (!result) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(command, `the ${mode} port-forward is recorded as a command`);
      assert.equal(command.data.kubernetes.name, 'web-fwd');
      assert.ok(result, `the ${mode} port-forward has a result: ${JSON.stringify(command.data)}`);
      assert.equal(result.data.meta?.status, 101);
      assert.ok(result.data.bytesIn > 2 * big.length, `bytes in recorded: ${JSON.stringify(result.data)}`);
      assert.ok(result.data.bytesOut > 2 * big.length, `bytes out recorded: ${JSON.stringify(result.data)}`);
    }
    assert.equal(echo.served, 8);
  } finally {
    for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    kube!.deletePod('default', 'web-fwd');
    await echo.close();
  }
});
