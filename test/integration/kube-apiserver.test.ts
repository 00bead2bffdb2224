// The test Kubernetes API server, driven directly by the real kubectl: listing with server-side
// Tables, JSON output, watches and followed logs that stream while kubectl runs, delete, secrets,
// exec over WebSocket (exit codes, piped stdin, an interactive TTY in tmux with resizes), attach
// to a main process that outlives a detach, and the server's auth: bearer token, client
// certificates and recorded impersonation headers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { findBinary } from '../helpers/postgres.ts';
import { TmuxTerminal } from '../helpers/tmux.ts';
import { checkEchoRoundTrip, httpExchange, startHttpEcho } from '../helpers/kube-portforward.ts';
import {
  KUBECTL,
  generateClientCertificate,
  kubectlEnv,
  runKubectl,
  startKubeApiServer,
  startPortForward,
  kubeToolsMissing,
  writeKubeconfig,
  type KubeApiServer,
} from '../helpers/kube-apiserver.ts';

const TOKEN = 'test-token-0123456789';
let skipped: string | null = null;
let kube: KubeApiServer | null = null;
let home = '';
let kubeconfig = '';
const children: ChildProcess[] = [];
const terms: TmuxTerminal[] = [];

before(async () => {
  skipped = kubeToolsMissing();
  if (skipped) return;
  kube = await startKubeApiServer({ token: TOKEN });
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-kubectl-'));
  kubeconfig = writeKubeconfig(home, { server: kube.url, caPem: kube.caPem, token: TOKEN });
  kube.addPod('default', 'web-1', { labels: { app: 'web' } });
  kube.addPod('default', 'web-2', { labels: { app: 'web' } });
  kube.addPod('kube-system', 'dns-1');
  kube.addSecret('default', 'db-creds', { username: 'app', password: 'hunter2' });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const t of terms) await t.kill();
  await kube?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

const kubectl = (args: string[], input?: string) => runKubectl(kubeconfig, home, args, { input });

/** kubectl left running (watch, follow); its output so far and a bounded wait for more. */
function startKubectl(args: string[]): { child: ChildProcess; out: () => string; waitFor: (re: RegExp, ms?: number) => Promise<string>; exited: Promise<number | null> } {
  const child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { env: kubectlEnv(home), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const waitFor = async (re: RegExp, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!re.test(stdout)) {
      if (Date.now() >= deadline || child.exitCode !== null) {
        throw new Error(`kubectl ${args.join(' ')}: no ${String(re)} within ${ms} ms (exit ${child.exitCode}); stdout:\n${stdout}\nstderr:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return stdout;
  };
  return { child, out: () => stdout, waitFor, exited };
}

async function waitUntil(what: string, pred: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function rowOf(stdout: string, name: string): string[] | undefined {
  return stdout.split('\n').map((l) => l.trim().split(/\s+/)).find((cells) => cells[0] === name);
}

test('kubectl get pods prints the server-side Table rows', async (t) => {
  if (skipped) return t.skip(skipped);
  const before = kube!.requests.length;
  const r = await kubectl(['get', 'pods']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.deepEqual(lines[0].split(/\s+/), ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE']);
  assert.deepEqual(rowOf(r.stdout, 'web-1')?.slice(0, 4), ['web-1', '1/1', 'Running', '0']);
  assert.deepEqual(rowOf(r.stdout, 'web-2')?.slice(0, 4), ['web-2', '1/1', 'Running', '0']);
  assert.equal(rowOf(r.stdout, 'dns-1'), undefined, 'another namespace does not leak into the list');
  const list = kube!.requests.slice(before).find((q) => q.method === 'GET' && q.url.startsWith('/api/v1/namespaces/default/pods?'));
  assert.ok(list, 'kubectl listed pods in its namespace');
  assert.match(String(list.headers.accept), /as=Table;v=v1;g=meta\.k8s\.io/);
  assert.equal(list.headers.authorization, `Bearer ${TOKEN}`);

  const wide = await kubectl(['get', 'pods', '-n', 'kube-system', '-o', 'wide']);
  assert.equal(wide.code, 0, wide.stderr);
  assert.deepEqual(wide.stdout.split('\n')[0].trim().split(/\s+/), ['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'IP', 'NODE']);
  assert.equal(rowOf(wide.stdout, 'dns-1')?.[6], 'node-1');
});

test('kubectl get pods -o json and -o name', async (t) => {
  if (skipped) return t.skip(skipped);
  const r = await kubectl(['get', 'pods', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const list = JSON.parse(r.stdout) as { kind: string; items: Array<{ kind: string; metadata: { name: string; labels?: Record<string, string> }; status: { phase: string } }> };
  assert.equal(list.kind, 'List');
  const web1 = list.items.find((i) => i.metadata.name === 'web-1');
  assert.equal(web1?.kind, 'Pod');
  assert.equal(web1?.status.phase, 'Running');
  assert.deepEqual(web1?.metadata.labels, { app: 'web' });

  const names = await kubectl(['get', 'pods', '-o', 'name', '-l', 'app=web']);
  assert.equal(names.code, 0, names.stderr);
  assert.deepEqual(names.stdout.trim().split('\n').sort(), ['pod/web-1', 'pod/web-2']);

  const missing = await kubectl(['get', 'pod', 'no-such-pod']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Error from server \(NotFound\): pods "no-such-pod" not found/);
});

test('kubectl get pods -w shows a pod added while it runs', async (t) => {
  if (skipped) return t.skip(skipped);
  const w = startKubectl(['get', 'pods', '-w']);
  await w.waitFor(/^web-2\s+1\/1\s+Running/m);
  assert.doesNotMatch(w.out(), /late-pod/);
  await waitUntil('kubectl is watching', () => kube!.activeStreams().watches === 1);
  const watchReq = kube!.requests.find((q) => q.url.includes('watch=true'));
  assert.match(String(watchReq?.headers.accept), /as=Table/);
  kube!.addPod('default', 'late-pod');
  await w.waitFor(/^late-pod\s+1\/1\s+Running/m);
  assert.equal(w.child.exitCode, null, 'kubectl is still watching');
  kube!.setPodPhase('default', 'late-pod', 'Succeeded');
  await w.waitFor(/^late-pod\s+0\/1\s+Succeeded/m);
  assert.equal((w.out().match(/^NAME\s+READY/gm) ?? []).length, 1, 'one header, then one line per event');
  w.child.kill('SIGTERM');
  await w.exited;
  await waitUntil('the server dropped the watch', () => kube!.activeStreams().watches === 0);
  kube!.deletePod('default', 'late-pod');
});

test('kubectl logs -f streams appended lines as they come', async (t) => {
  if (skipped) return t.skip(skipped);
  kube!.addPod('default', 'logger');
  kube!.appendLog('default', 'logger', 'line 0 (before kubectl)');
  const f = startKubectl(['logs', '-f', 'logger']);
  await f.waitFor(/^line 0 \(before kubectl\)$/m);
  await waitUntil('kubectl follows the log', () => kube!.activeStreams().follows === 1);
  kube!.appendLog('default', 'logger', 'line 1');
  await f.waitFor(/^line 1$/m);
  assert.doesNotMatch(f.out(), /line 2/, 'line 1 arrived before line 2 was appended');
  kube!.appendLog('default', 'logger', 'line 2');
  await f.waitFor(/^line 2$/m);
  assert.equal(f.out(), 'line 0 (before kubectl)\nline 1\nline 2\n');
  assert.equal(f.child.exitCode, null, 'kubectl is still following');
  // The pod goes away: the log stream ends and kubectl exits by itself.
  kube!.deletePod('default', 'logger');
  assert.equal(await f.exited, 0);

  kube!.addPod('default', 'tail-me');
  for (let i = 1; i <= 5; i++) kube!.appendLog('default', 'tail-me', `t${i}`);
  const tail = await kubectl(['logs', 'tail-me', '--tail=2']);
  assert.equal(tail.code, 0, tail.stderr);
  assert.equal(tail.stdout, 't4\nt5\n');
});

test('kubectl delete pod removes it', async (t) => {
  if (skipped) return t.skip(skipped);
  kube!.addPod('default', 'doomed');
  const r = await kubectl(['delete', 'pod', 'doomed']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /pod "doomed" deleted/);
  assert.equal(kube!.getPod('default', 'doomed'), undefined);
  const after = await kubectl(['get', 'pods']);
  assert.equal(rowOf(after.stdout, 'doomed'), undefined);
  assert.ok(rowOf(after.stdout, 'web-1'));
  const again = await kubectl(['delete', 'pod', 'doomed']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /NotFound/);
});

test('kubectl run and create POST new pods', async (t) => {
  if (skipped) return t.skip(skipped);
  const run = await kubectl(['run', 'runner', '--image=alpine:3', '--labels=made=by-run']);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /pod\/runner created/);
  assert.equal(kube!.getPod('default', 'runner')?.metadata.labels?.made, 'by-run');
  // Client-side validation would need /openapi, which this server does not serve.
  const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'from-file' }, spec: { containers: [{ name: 'c', image: 'nginx:1' }] } });
  const create = await kubectl(['create', '--validate=false', '-f', '-'], manifest);
  assert.equal(create.code, 0, create.stderr);
  const image = await kubectl(['get', 'pod', 'from-file', '-o', 'jsonpath={.spec.containers[0].image}']);
  assert.equal(image.stdout, 'nginx:1');
  const dup = await kubectl(['create', '--validate=false', '-f', '-'], manifest);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /AlreadyExists/);
  for (const name of ['runner', 'from-file']) kube!.deletePod('default', name);
});

test('kubectl get secrets', async (t) => {
  if (skipped) return t.skip(skipped);
  const r = await kubectl(['get', 'secrets']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.split('\n')[0].trim().split(/\s+/), ['NAME', 'TYPE', 'DATA', 'AGE']);
  assert.deepEqual(rowOf(r.stdout, 'db-creds')?.slice(0, 3), ['db-creds', 'Opaque', '2']);
  const pw = await kubectl(['get', 'secret', 'db-creds', '-o', 'jsonpath={.data.password}']);
  assert.equal(pw.code, 0, pw.stderr);
  assert.equal(Buffer.from(pw.stdout, 'base64').toString(), 'hunter2');
});

test('kubectl exec runs the command over WebSocket and returns its exit status', async (t) => {
  if (skipped) return t.skip(skipped);
  const before = kube!.requests.length;
  const r = await kubectl(['exec', 'web-1', '--', 'sh', '-c', 'echo hi; echo oops >&2; exit 3']);
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, 'hi\n');
  assert.match(r.stderr, /^oops$/m);
  assert.match(r.stderr, /command terminated with exit code 3/);

  const seen = kube!.requests.slice(before);
  const ex = seen.find((q) => q.url.startsWith('/api/v1/namespaces/default/pods/web-1/exec?'));
  assert.ok(ex, 'kubectl asked for exec');
  assert.equal(ex.method, 'GET');
  assert.equal(ex.upgrade, true);
  assert.equal(String(ex.headers.upgrade).toLowerCase(), 'websocket');
  assert.match(String(ex.headers['sec-websocket-protocol']), /v5\.channel\.k8s\.io/);
  assert.equal(ex.status, 101);
  assert.ok(!seen.some((q) => q.method === 'POST' || /spdy/i.test(String(q.headers.upgrade ?? ''))), 'no SPDY fallback');
  const rec = kube!.execs.at(-1)!;
  assert.deepEqual(rec.command, ['sh', '-c', 'echo hi; echo oops >&2; exit 3']);
  assert.equal(rec.protocol, 'v5.channel.k8s.io');
  assert.equal(rec.exitCode, 3);

  const ok = await kubectl(['exec', 'web-1', '--', 'true']);
  assert.equal(ok.code, 0, ok.stderr);
  const nope = await kubectl(['exec', 'web-1', '--', 'no-such-binary-here']);
  assert.notEqual(nope.code, 0);
  assert.match(nope.stderr, /executable file not found/);
});

test('kubectl exec -i pipes stdin to the command and ends it at EOF', async (t) => {
  if (skipped) return t.skip(skipped);
  const input = 'first line\nsecond line\n' + 'x'.repeat(200_000) + '\n';
  const r = await kubectl(['exec', '-i', 'web-1', '--', 'cat'], input);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, input.length);
  assert.equal(r.stdout, input);
  const wc = await kubectl(['exec', '-i', 'web-1', '--', 'wc', '-l'], 'a\nb\nc\n');
  assert.equal(wc.stdout.trim(), '3');
});

test('kubectl exec -it gives an interactive shell on a pseudo-terminal that follows resizes', async (t) => {
  if (skipped) return t.skip(skipped);
  const status = path.join(home, 'exec-it.status');
  const argv = [KUBECTL, '--kubeconfig', kubeconfig, 'exec', '-it', 'web-1', '--', 'sh'];
  const term = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', status, ...argv], { env: { HOME: home }, width: 100, height: 30 });
  terms.push(term);
  await term.waitFor(/[$#] $/m, 15_000);
  await term.line('echo $((6*7))');
  await term.waitFor(/^42\s*$/m);
  await term.line('stty size; tty');
  await term.waitFor(/^30 100\s*$/m);
  assert.match(await term.capture(), /^\/dev\/pts\/\d+\s*$/m);
  assert.ok(kube!.resizes.some((s) => s.pod === 'web-1' && s.width === 100 && s.height === 30));

  await tmux(term, ['resize-window', '-t', term.target, '-x', '120', '-y', '40']);
  await waitUntil('kubectl sent the new size', () => kube!.resizes.some((s) => s.width === 120 && s.height === 40), 5000);
  // The size is applied from outside the pty, asynchronously: ask until the shell sees it
  // (nothing on the screen said "40 120" before the resize).
  const deadline = Date.now() + 5000;
  for (;;) {
    await term.line('stty size');
    try {
      await term.waitFor(/^40 120\s*$/m, 1000);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
  }
  await term.line('exit 0');
  await waitUntil('kubectl exited', () => fs.existsSync(status) && fs.readFileSync(status, 'utf8').endsWith('\n'), 10_000);
  assert.equal(fs.readFileSync(status, 'utf8').trim(), '0');
  const rec = kube!.execs.at(-1)!;
  assert.equal(rec.tty, true);
  assert.equal(rec.stdin, true);
  assert.equal(rec.exitCode, 0);
  assert.equal(kube!.activeStreams().execs, 0);
});

test('kubectl attach -it reaches the main process, which outlives a detach and ends with exit', async (t) => {
  if (skipped) return t.skip(skipped);
  kube!.addPod('default', 'console', { command: ['sh'], stdin: true, tty: true });
  const pod = await kubectl(['get', 'pod', 'console', '-o', 'jsonpath={.spec.containers[0].stdin}/{.spec.containers[0].tty}']);
  assert.equal(pod.stdout, 'true/true', 'kubectl attach -it sees a container that allocated stdin and a TTY');
  const attach = [KUBECTL, '--kubeconfig', kubeconfig, 'attach', '-it', 'console'];

  const first = await TmuxTerminal.start(attach, { env: { HOME: home }, width: 100, height: 30 });
  terms.push(first);
  await first.waitFor(/If you don't see a command prompt/, 15_000);
  await waitUntil('the main process started', () => !!kube!.mainProcess('default', 'console')?.pid, 10_000);
  await first.line('X=kept; echo $((6*7))');
  await first.waitFor(/^42\s*$/m);
  assert.ok(kube!.resizes.some((s) => s.pod === 'console' && s.width === 100 && s.height === 30));
  const pid = kube!.mainProcess('default', 'console')!.pid!;
  assert.equal(kube!.attaches.at(-1)?.pid, pid);

  // Detach by killing kubectl (its terminal goes away): the main process keeps running.
  await first.kill();
  await waitUntil('the server saw the client go', () => kube!.mainProcess('default', 'console')?.attached === 0, 5000);
  assert.ok(processGroupAlive(pid), 'detaching did not kill the main process');
  assert.equal(kube!.mainProcess('default', 'console')?.pid, pid);

  const status = path.join(home, 'attach-it.status');
  const second = await TmuxTerminal.start(['sh', '-c', '"$@"; echo $? > "$0"; exec sleep 600', status, ...attach], { env: { HOME: home }, width: 100, height: 30 });
  terms.push(second);
  await second.waitFor(/If you don't see a command prompt/, 15_000);
  await waitUntil('re-attached', () => kube!.mainProcess('default', 'console')?.attached === 1, 10_000);
  await second.line('echo "$X again"');
  await second.waitFor(/^kept again\s*$/m);
  assert.doesNotMatch(await second.capture(), /^42\s*$/m, 'output from before the attach is not replayed');
  assert.equal(kube!.attaches.at(-1)?.pid, pid, 'the same process');

  await second.line('exit');
  await waitUntil('kubectl exited', () => fs.existsSync(status) && fs.readFileSync(status, 'utf8').endsWith('\n'), 10_000);
  assert.equal(fs.readFileSync(status, 'utf8').trim(), '0');
  await second.waitFor(/Session ended, resume using 'kubectl attach console -c main -i -t'/);
  assert.equal(kube!.mainProcess('default', 'console'), undefined);
  await waitUntil('the main process is gone', () => !processGroupAlive(pid), 5000);
  assert.equal(kube!.activeStreams().execs, 0);
  const restarts = await kubectl(['get', 'pod', 'console', '-o', 'jsonpath={.status.containerStatuses[0].restartCount}']);
  assert.equal(restarts.stdout, '1', 'restartPolicy Always: the exit counts as a restart');

  // A container without stdin cannot be attached to with -i; the reason reaches kubectl.
  const refused = await kubectl(['attach', '-i', 'web-2']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /container main of pod web-2 does not read stdin/);
  kube!.deletePod('default', 'console');
});

test('auth: a wrong token is refused; impersonation headers are recorded', async (t) => {
  if (skipped) return t.skip(skipped);
  const badHome = fs.mkdtempSync(path.join(home, 'bad-'));
  const bad = writeKubeconfig(badHome, { server: kube!.url, caPem: kube!.caPem, token: 'wrong-token' });
  const r = await runKubectl(bad, badHome, ['get', 'pods']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /You must be logged in to the server/);
  assert.ok(kube!.requests.some((q) => q.headers.authorization === 'Bearer wrong-token' && q.status === 401));

  const before = kube!.requests.length;
  const as = await kubectl(['get', 'pods', '--as=alice@example.com', '--as-group=devs', '--as-group=oncall']);
  assert.equal(as.code, 0, as.stderr);
  const list = kube!.requests.slice(before).find((q) => q.url.startsWith('/api/v1/namespaces/default/pods?'));
  assert.equal(list?.headers['impersonate-user'], 'alice@example.com');
  assert.deepEqual(list?.impersonateGroups, ['devs', 'oncall']);
});

test('mTLS: the verified client certificate CN is recorded; no certificate, no access; close() ends watches', async (t) => {
  if (skipped) return t.skip(skipped);
  const client = await generateClientCertificate('gatehouse-gw');
  const other = await generateClientCertificate('intruder');
  const mtls = await startKubeApiServer({ clientCa: client.caPem, token: TOKEN });
  try {
    mtls.addPod('default', 'secure-1');
    const dir = fs.mkdtempSync(path.join(home, 'mtls-'));
    const good = writeKubeconfig(dir, { server: mtls.url, caPem: mtls.caPem, token: TOKEN, clientCertPem: client.certPem, clientKeyPem: client.keyPem });
    const r = await runKubectl(good, dir, ['get', 'pods', '-o', 'name']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'pod/secure-1');
    assert.ok(mtls.requests.length > 0 && mtls.requests.every((q) => q.clientCn === 'gatehouse-gw'));

    const noCertDir = fs.mkdtempSync(path.join(home, 'mtls-none-'));
    const noCert = writeKubeconfig(noCertDir, { server: mtls.url, caPem: mtls.caPem, token: TOKEN });
    const denied = await runKubectl(noCert, noCertDir, ['get', 'pods']);
    assert.equal(denied.code, 1, denied.stdout);
    assert.match(denied.stderr, /You must be logged in to the server/);
    // A certificate from another CA (asked directly: kubectl backs off for seconds on this 401).
    const wrong = await httpsGet(mtls, '/api/v1/namespaces/default/pods', { cert: other.certPem, key: other.keyPem });
    assert.equal(wrong.status, 401);
    assert.equal((JSON.parse(wrong.body) as { reason: string }).reason, 'Unauthorized');
    assert.equal(mtls.requests.at(-1)?.clientCn, null);
    const right = await httpsGet(mtls, '/api/v1/namespaces/default/pods', { cert: client.certPem, key: client.keyPem });
    assert.equal(right.status, 200);
    assert.equal((JSON.parse(right.body) as { kind: string }).kind, 'PodList');

    // Closing the server ends an open watch and a running exec (its whole process group):
    // kubectl sees the streams end and exits.
    const execChild = spawn(KUBECTL, ['--kubeconfig', good, 'exec', 'secure-1', '--', 'sh', '-c', 'echo started; sleep 30; echo not-killed'], { env: kubectlEnv(dir), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(execChild);
    let execOut = '';
    execChild.stdout!.setEncoding('utf8').on('data', (d: string) => (execOut += d));
    const execExited = new Promise<void>((resolve) => execChild.on('close', () => resolve()));
    await waitUntil('the exec started', () => execOut.includes('started'), 10_000);
    const pid = mtls.execs.at(-1)?.pid;
    assert.ok(pid, 'the exec has a process');
    const child = spawn(KUBECTL, ['--kubeconfig', good, 'get', 'pods', '-w'], { env: kubectlEnv(dir), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    await waitUntil('kubectl watches the mTLS server', () => mtls.activeStreams().watches === 1, 10_000);
    await mtls.close();
    assert.deepEqual(mtls.activeStreams(), { watches: 0, follows: 0, execs: 0 });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('kubectl -w and kubectl exec did not exit after the server closed')), 10_000)));
    await Promise.race([Promise.all([exited, execExited]), timeout]).finally(() => clearTimeout(timer));
    assert.doesNotMatch(execOut, /not-killed/);
    await waitUntil('the exec process group is gone', () => !processGroupAlive(pid), 5000);
  } finally {
    await mtls.close();
  }
});

test('hostile requests get clean Status errors and the server keeps serving', async (t) => {
  if (skipped) return t.skip(skipped);
  const call = (method: string, urlPath: string, headers: Record<string, string> = {}, body?: Buffer) =>
    rawRequest(kube!, method, urlPath, { authorization: `Bearer ${TOKEN}`, ...headers }, body);
  const reasonOf = (r: { body: string }) => (JSON.parse(r.body) as { reason: string }).reason;

  const badPath = await call('GET', '/api/v1/namespaces/%zz/pods');
  assert.equal(badPath.status, 400);
  assert.equal(reasonOf(badPath), 'BadRequest');
  const notJson = await call('POST', '/api/v1/namespaces/default/pods', { 'content-type': 'application/json' }, Buffer.from('{"kind":'));
  assert.equal(notJson.status, 400);
  const huge = await call('POST', '/api/v1/namespaces/default/pods', { 'content-type': 'application/json' }, Buffer.alloc(2 << 20, 0x20));
  assert.equal(huge.status, 413);
  const selector = await call('GET', '/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dx');
  assert.equal(selector.status, 400);
  const spdy = await call('POST', '/api/v1/namespaces/default/pods/web-1/exec?command=true&stdout=true', { connection: 'Upgrade', upgrade: 'SPDY/3.1' });
  assert.equal(spdy.status, 400);
  assert.match(spdy.body, /WebSocket/);
  const oldProto = await call('GET', '/api/v1/namespaces/default/pods/web-1/exec?command=true&stdout=true', {
    connection: 'Upgrade',
    upgrade: 'websocket',
    'sec-websocket-version': '13',
    'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
    'sec-websocket-protocol': 'channel.k8s.io',
  });
  assert.equal(oldProto.status, 400);
  const noToken = await rawRequest(kube!, 'GET', '/api/v1/namespaces/default/pods/web-1/exec?command=true&stdout=true', { connection: 'Upgrade', upgrade: 'websocket' });
  assert.equal(noToken.status, 401);
  assert.equal(kube!.getPod('default', 'web-1')?.metadata.name, 'web-1');
  const r = await kubectl(['get', 'pods', '-o', 'name']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^pod\/web-1$/m);
});

/** One request with exactly these headers and body (Upgrade included), on its own connection. */
function rawRequest(server: KubeApiServer, method: string, urlPath: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${server.url}${urlPath}`, { method, ca: server.caPem, headers, timeout: 5000, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d.slice(0, 65536)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, body: '' });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
    // The server may answer (413) and close before reading the whole body.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    req.end(body);
  });
}

/** A plain SPDY port-forward upgrade that sends `frames` and returns all it gets until the server closes (bounded). */
function rawSpdySession(server: KubeApiServer, urlPath: string, frames: Buffer): Promise<{ head: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${server.url}${urlPath}`, {
      method: 'POST',
      ca: server.caPem,
      agent: false,
      timeout: 5000,
      headers: { authorization: `Bearer ${TOKEN}`, connection: 'Upgrade', upgrade: 'SPDY/3.1', 'x-stream-protocol-version': 'portforward.k8s.io' },
    });
    req.on('upgrade', (res, socket, head) => {
      const chunks: Buffer[] = [head];
      const timer = setTimeout(() => socket.destroy(new Error('the server did not close the SPDY session within 5 s')), 5000);
      socket.on('data', (d: Buffer) => chunks.push(d));
      socket.on('error', (err) => (clearTimeout(timer), reject(err)));
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ head: `HTTP/1.1 ${res.statusCode} ${res.statusMessage}`, body: Buffer.concat(chunks) });
      });
      socket.write(frames);
    });
    req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
    req.on('timeout', () => req.destroy(new Error('the SPDY upgrade timed out')));
    req.on('error', reject);
    req.end();
  });
}

function processGroupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function httpsGet(server: KubeApiServer, urlPath: string, tlsOpts: { cert: string; key: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      `${server.url}${urlPath}`,
      { ca: server.caPem, ...tlsOpts, headers: { authorization: `Bearer ${TOKEN}` }, timeout: 5000, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d.slice(0, 65536)));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

function tmux(term: TmuxTerminal, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(findBinary('tmux')!, ['-L', term.socket, ...args], { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(new Error(`tmux ${args[0]}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

test('kubectl port-forward reaches a pod port over SPDY in WebSocket, and over plain SPDY when WebSockets are off', async (t) => {
  if (skipped) return t.skip(skipped);
  const echo = await startHttpEcho();
  const running: ChildProcess[] = [];
  try {
    kube!.addPod('default', 'web-fwd', { ports: { 80: echo.port } });
    const big = randomBytes(1 << 20);
    for (const mode of ['websocket', 'spdy'] as const) {
      const before = kube!.requests.length;
      const pf = await startPortForward(kubeconfig, home, 'pod/web-fwd', 80, mode === 'spdy' ? { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' } : {});
      const { child, local } = pf;
      children.push(child);
      running.push(child);

      await checkEchoRoundTrip(local, mode, big);

      const seen = kube!.requests.slice(before).filter((q) => q.url === '/api/v1/namespaces/default/pods/web-fwd/portforward');
      if (mode === 'websocket') {
        assert.deepEqual(seen.map((q) => [q.method, String(q.headers.upgrade).toLowerCase(), q.status]), [['GET', 'websocket', 101]], 'one tunneled upgrade, no SPDY fallback');
        assert.match(String(seen[0]!.headers['sec-websocket-protocol']), /SPDY\/3\.1\+portforward\.k8s\.io/);
      } else {
        assert.deepEqual(seen.map((q) => [q.method, q.headers.upgrade, q.status]), [['POST', 'SPDY/3.1', 101]]);
        assert.equal(seen[0]!.headers['x-stream-protocol-version'], 'portforward.k8s.io');
      }
      const rec = kube!.portForwards.at(-1)!;
      assert.equal(rec.transport, mode);
      assert.equal(rec.pod, 'web-fwd');
      assert.deepEqual(rec.ports, [80, 80], 'one SPDY stream pair per connection, in one session');
      assert.ok(rec.bytesIn > big.length && rec.bytesOut > big.length, `bytes both ways: ${rec.bytesIn} in, ${rec.bytesOut} out`);
      assert.deepEqual(rec.errors, []);
      assert.match(pf.stdout(), /Handling connection for \d+\n[^]*Handling connection for \d+/);

      child.kill('SIGTERM');
      await waitUntil(`the ${mode} session ended with kubectl`, () => rec.closed, 10_000);
    }
    assert.equal(echo.served, 4);

    // A pod port where nothing listens: the error comes back on the error stream and kubectl says so.
    const pf81 = await startPortForward(kubeconfig, home, 'pod/web-fwd', 81);
    children.push(pf81.child);
    running.push(pf81.child);
    await assert.rejects(httpExchange(pf81.local, '/nobody-home', undefined, 5000));
    await waitUntil(`kubectl printed the pod's error; stderr: ${pf81.stderr()}`, () => /error forwarding port 81 to pod web-fwd, uid [-0-9a-f]+: .*connection refused/.test(pf81.stderr()), 5000);
    assert.deepEqual(kube!.portForwards.at(-1)!.ports, [81]);

    // Hostile SPDY: a frame claiming 16 MB, and a header block that is not zlib. Each session
    // ends with GOAWAY (PROTOCOL_ERROR); the server keeps serving.
    const huge = Buffer.from([0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]);
    const garbage = Buffer.concat([Buffer.from([0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.alloc(16, 0xab)]);
    for (const frame of [huge, garbage]) {
      const answer = await rawSpdySession(kube!, '/api/v1/namespaces/default/pods/web-fwd/portforward', frame);
      assert.match(answer.head, /^HTTP\/1\.1 101 /);
      const goaway = answer.body.indexOf(Buffer.from([0x80, 0x03, 0x00, 0x07]));
      assert.ok(goaway >= 0, `a GOAWAY frame: ${answer.body.toString('hex')}`);
      assert.equal(answer.body.readUInt32BE(goaway + 12), 1, 'status PROTOCOL_ERROR');
    }
    const hostile = kube!.portForwards.slice(-2);
    await waitUntil(`both hostile sessions ended: ${JSON.stringify(hostile)}`, () => hostile.every((r) => r.closed));
    assert.match(hostile[0]!.errors[0] ?? '', /SPDY protocol error: a 16777215-byte frame/);
    assert.match(hostile[1]!.errors[0] ?? '', /SPDY protocol error: a header block does not decompress/);
    const still = await kubectl(['get', 'pod', 'web-fwd', '-o', 'name']);
    assert.equal(still.stdout.trim(), 'pod/web-fwd');
  } finally {
    for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    kube!.deletePod('default', 'web-fwd');
    await echo.close();
  }
});
