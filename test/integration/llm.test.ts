// `type: llm` connections end to end: the official `openai` client (v6) → the gateway (HTTPS,
// its generated certificate) → the local OpenAI-compatible test server (test/helpers/openai-server.ts).
//
// The client runs in a child process (Node 20 reads extra CA certificates only at startup, from
// NODE_EXTRA_CA_CERTS), driven over stdin/stdout with one JSON line per call; stream deltas come
// back as they arrive, so the test can check them against the server's gate. Each client counts
// the fetches it makes, so a retry of a refused call would show.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';
import { freePort } from '../helpers/net.ts';
import { completionFor, countTokens, embeddingFor, startOpenAiServer, type OpenAiServer } from '../helpers/openai-server.ts';

const UPSTREAM_KEY = 'sk-upstream-held-by-gatehouse-7f3a';
const MAX_PER_REQUEST = 256;
const MAX_PER_DAY = 1000;
const AWS_ID = 'AKIAIOSFODNN7EXAMPLE';
const AWS_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const CALL_TIMEOUT_MS = 30_000;

/** What the child sends back for one call. */
type Outcome =
  | { ok: true; value: any; fetches: number }
  | { ok: false; error: { name: string; status?: number; code?: string; type?: string; message: string; retryAfter: string | null; shouldRetry: string | null }; fetches: number };

interface Op {
  /** chat: chat.completions.create; responses.stream: the SDK's stream helper; responses.create: create({stream:true}) unless args.stream is false; embeddings; models: models.list() */
  kind: 'chat' | 'responses.stream' | 'responses.create' | 'embeddings' | 'models';
  /** the caller's Gatehouse key, NAME.KEY, as the client's apiKey */
  key: string;
  args?: Record<string, unknown>;
}

// The client side. Bare 'openai' resolves from the cwd (the repository root) for an -e module.
const DRIVER = `
import OpenAI from 'openai';
import readline from 'node:readline';
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
async function run(op, delta, c) {
  switch (op.kind) {
    case 'chat': {
      const r = await c.chat.completions.create(op.args);
      if (!op.args.stream) return { text: r.choices[0].message.content, usage: r.usage, finish: r.choices[0].finish_reason };
      let text = '', usage = null, finish = null, chunks = 0;
      for await (const ch of r) {
        chunks++;
        const d = ch.choices[0]?.delta?.content ?? '';
        if (d) { text += d; delta(d); }
        if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
        if (ch.usage) usage = ch.usage;
      }
      return { text, usage, finish, chunks };
    }
    case 'responses.stream': {
      const s = c.responses.stream(op.args);
      let text = '';
      for await (const e of s) if (e.type === 'response.output_text.delta') { text += e.delta; delta(e.delta); }
      const f = await s.finalResponse();
      return { text, outputText: f.output_text, usage: f.usage, status: f.status, model: f.model };
    }
    case 'responses.create': {
      if (op.args.stream === false) {
        const r = await c.responses.create(op.args);
        return { text: r.output_text, usage: r.usage, status: r.status };
      }
      const s = await c.responses.create({ ...op.args, stream: true });
      let text = '', usage = null, status = null;
      const types = [];
      for await (const e of s) {
        types.push(e.type);
        if (e.type === 'response.output_text.delta') { text += e.delta; delta(e.delta); }
        if (e.type === 'response.completed' || e.type === 'response.incomplete') { usage = e.response.usage; status = e.response.status; }
      }
      return { text, usage, status, types };
    }
    case 'embeddings': {
      const r = await c.embeddings.create(op.args);
      return { vectors: r.data.map((d) => d.embedding), usage: r.usage, model: r.model };
    }
    case 'models': {
      const r = await c.models.list();
      return { data: r.data };
    }
  }
  throw new Error('unknown op ' + op.kind);
}
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const op = JSON.parse(line);
  let fetches = 0;
  const counted = (...a) => { fetches++; return fetch(...a); };
  // The client's defaults (2 retries) stay on: a refusal must not be retried because the gateway says so.
  const c = new OpenAI({ apiKey: op.key, baseURL: process.env.GH_BASE_URL, timeout: 20000, fetch: counted });
  try {
    const value = await run(op, (text) => out({ id: op.id, delta: text }), c);
    out({ id: op.id, ok: true, value, fetches });
  } catch (e) {
    const h = e?.headers;
    out({ id: op.id, ok: false, fetches, error: { name: e?.constructor?.name ?? 'Error', status: e?.status, code: e?.code, type: e?.type, message: String(e?.message ?? e), retryAfter: h?.get?.('retry-after') ?? null, shouldRetry: h?.get?.('x-should-retry') ?? null } });
  }
});
`;

/** One long-lived child process running the openai client. */
class ClientProcess {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, { resolve: (o: Outcome) => void; reject: (e: Error) => void; onDelta?: (t: string) => void; timer: NodeJS.Timeout }>();
  private seq = 0;
  private buf = '';
  private stderr = '';

  constructor(baseURL: string, caFile: string) {
    this.child = spawn(process.execPath, ['--input-type=module', '-e', DRIVER], {
      cwd: ROOT,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile, GH_BASE_URL: baseURL },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        let m: any;
        try {
          m = JSON.parse(line);
        } catch {
          continue; // not one of the driver's lines
        }
        const p = this.pending.get(m?.id);
        if (!p) continue;
        if ('delta' in m) p.onDelta?.(m.delta);
        else {
          clearTimeout(p.timer);
          this.pending.delete(m.id);
          p.resolve(m as Outcome);
        }
      }
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d.slice(0, 16_384)));
    this.child.once('exit', (code) => {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`the client process exited (${code}): ${this.stderr}`));
      }
      this.pending.clear();
    });
  }

  call(op: Op, onDelta?: (text: string) => void): Promise<Outcome> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${op.kind}: no answer within ${CALL_TIMEOUT_MS} ms; client stderr: ${this.stderr}`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, onDelta, timer });
      this.child.stdin!.write(JSON.stringify({ ...op, id }) + '\n');
    });
  }

  /** The call's value; fails the test with the client's error when it was refused. */
  async ok(op: Op, onDelta?: (text: string) => void): Promise<any> {
    const o = await this.call(op, onDelta);
    if (!o.ok) assert.fail(`${op.kind} failed: ${JSON.stringify(o.error)}`);
    return o.value;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin!.end();
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

let srv: OpenAiServer;
let gw: GatewayUnderTest;
let client: ClientProcess;
let runner = '';
let limits = '';
let spender = '';
let other = '';

before(async () => {
  srv = await startOpenAiServer({ apiKey: UPSTREAM_KEY });
  const httpPort = await freePort();
  gw = await startGateway({
    extra: {
      listen: { api: `127.0.0.1:${await freePort()}`, http: `127.0.0.1:${httpPort}` },
      connections: [
        {
          name: 'llm',
          type: 'llm',
          url: srv.url,
          auth: { bearer: UPSTREAM_KEY },
          models: ['gpt-4o-mini', 'text-embedding-3-*'],
          maxTokensPerRequest: MAX_PER_REQUEST,
          maxTokensPerDay: MAX_PER_DAY,
          mask: {},
        },
      ],
    },
  });
  const key = async (name: string) => `${name}.${await gw.createKey(name, { kind: 'agent', connections: 'llm' })}`;
  runner = await key('runner');
  limits = await key('limits');
  spender = await key('spender');
  other = await key('other');
  client = new ClientProcess(`https://127.0.0.1:${httpPort}/c/llm/v1`, path.join(gw.dir, 'data', 'tls', 'gateway.crt'));
});

after(async () => {
  await client?.stop();
  await gw?.stop();
  await srv?.close();
});

type Ev = { type: string; seq: number; data: any };
interface Call {
  session: string;
  identity: string;
  command: Ev;
  result: Ev;
}

/** Every session's events, as the CLI shows them. */
async function journal(): Promise<{ session: any; events: Ev[] }[]> {
  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json', '--limit', '50'])).stdout) as { id: string }[];
  const out = [];
  for (const s of list) {
    const r = await gw.cli(['sessions', 'show', s.id, '--json']);
    assert.equal(r.code, 0, r.stderr);
    out.push(JSON.parse(r.stdout) as { session: any; events: Ev[] });
  }
  return out;
}

/** The recorded calls (a command with its result); polls, bounded, until `want` of them match. */
async function calls(match: (c: Call) => boolean, want = 1): Promise<Call[]> {
  let found: Call[] = [];
  for (let i = 0; i < 30; i++) {
    found = [];
    for (const t of await journal()) {
      for (const command of t.events.filter((e) => e.type === 'command')) {
        const result = t.events.find((e) => e.type === 'result' && e.data.command === command.seq);
        if (!result) continue;
        const c = { session: t.session.id, identity: t.session.identity_name, command, result };
        if (match(c)) found.push(c);
      }
    }
    if (found.length >= want) return found;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`expected ${want} recorded call(s), found ${found.length}`);
}

const promptIs = (text: string) => (c: Call) => typeof c.command.data.llm?.prompt === 'string' && c.command.data.llm.prompt.includes(text);

test('chat completion streams through token by token; the journal has model, prompt, stream, completion and usage', async () => {
  const before = srv.requests.length;
  const prompt = 'stream me the quick brown fox jumps over the lazy dog';
  const gate = srv.gate();
  let atFirst: { sent: number; total: number } | null = null;
  const r = await client.ok(
    { kind: 'chat', key: runner, args: { model: 'gpt-4o-mini', stream: true, max_tokens: 100, messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: prompt }] } },
    () => {
      if (atFirst) return;
      atFirst = { sent: gate.sent, total: gate.total };
      gate.release();
    },
  );
  const expected = completionFor(prompt);
  assert.ok(atFirst, 'no delta reached the client');
  const first = atFirst as { sent: number; total: number };
  assert.equal(first.sent, 1, 'when the first token reached the client the server had sent exactly one');
  assert.equal(first.total, countTokens(expected), 'and was holding the rest');
  assert.equal(r.text, expected);
  assert.equal(r.finish, 'stop');

  // What the model received: the upstream key, the client's cap, usage asked for (the budget counts it).
  assert.equal(srv.requests.length, before + 1);
  const seen = srv.requests.at(-1)!;
  assert.equal(seen.path, '/v1/chat/completions');
  assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  assert.equal(seen.body.max_tokens, 100);
  assert.equal(seen.body.stream, true);
  assert.deepEqual(seen.body.stream_options, { include_usage: true });

  const promptTokens = countTokens(`be brief ${prompt}`);
  const completionTokens = countTokens(expected);
  // The gateway asked for usage for its journal; the client did not, so it does not get the usage-only chunk.
  assert.equal(r.usage, null, 'the usage chunk the client did not ask for was passed on');

  const [call] = await calls(promptIs(prompt));
  assert.equal(call!.identity, 'runner');
  assert.equal(call!.command.data.text, 'POST /v1/chat/completions');
  const llm = call!.command.data.llm;
  assert.equal(llm.endpoint, 'chat');
  assert.equal(llm.model, 'gpt-4o-mini');
  assert.equal(llm.stream, true);
  assert.equal(llm.maxTokens, 100);
  assert.equal(llm.prompt, `system: be brief\nuser: ${prompt}`);
  assert.equal(call!.result.data.status, 'ok');
  const res = call!.result.data.meta.llm;
  assert.equal(res.completion, r.text);
  assert.equal(res.model, 'gpt-4o-mini');
  assert.equal(res.finishReason, 'stop');
  assert.equal(res.status, 200);
  assert.deepEqual(res.usage, { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens });

  // A client that asks for usage gets it.
  const asked = await client.ok({ kind: 'chat', key: runner, args: { model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'count me' }] } });
  const p2 = countTokens('count me');
  const c2 = countTokens(completionFor('count me'));
  assert.deepEqual(asked.usage, { prompt_tokens: p2, completion_tokens: c2, total_tokens: p2 + c2 });
});

test('AWS credentials in a prompt: the model gets them masked, the journal holds neither, the upstream only the upstream key', async () => {
  const before = srv.requests.length;
  const prompt = `rotate these please: aws_access_key_id = ${AWS_ID} and aws_secret_access_key = ${AWS_SECRET} thanks`;
  const r = await client.ok({ kind: 'chat', key: runner, args: { model: 'gpt-4o-mini', max_tokens: 100, messages: [{ role: 'user', content: prompt }] } });
  assert.equal(srv.requests.length, before + 1);
  const seen = srv.requests.at(-1)!;
  const received = seen.body.messages[0].content as string;
  assert.ok(!seen.raw.includes(AWS_ID) && !seen.raw.includes(AWS_SECRET), `the model received a credential: ${seen.raw}`);
  assert.match(received, /^rotate these please: aws_access_key_id = \[MASKED:aws\] and aws_secret_access_key = \[MASKED:aws\] thanks$/);
  assert.equal(r.text, completionFor(received), 'the model answered the masked prompt');

  // Credentials: the upstream saw its own key and nothing of the caller's.
  const callerSecret = runner.slice(runner.indexOf('.') + 1);
  assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  assert.ok(!JSON.stringify(seen.headers).includes(callerSecret) && !seen.raw.includes(callerSecret), 'the caller key reached the upstream');
  for (const q of srv.requests) assert.ok(!JSON.stringify(q.headers).includes(callerSecret), `the caller key reached the upstream on ${q.path}`);

  const [call] = await calls(promptIs('rotate these please'));
  assert.equal(call!.command.data.llm.prompt, `user: ${received}`);
  assert.equal(call!.command.data.llm.maskedBeforeModel, true);
  assert.ok(call!.command.data.llm.promptMasked, 'the masking counts are recorded');
  assert.equal(call!.result.data.meta.llm.completion, r.text);
  const all = JSON.stringify(await journal());
  assert.ok(!all.includes(AWS_ID), 'the AWS key id is in the journal');
  assert.ok(!all.includes(AWS_SECRET), 'the AWS secret is in the journal');
  assert.ok(!all.includes(callerSecret), 'the caller key is in the journal');
  // Nor anywhere on the gateway's disk (store, WAL, journal files) or in its log.
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.isFile()) files.push(path.join(d, e.name));
    }
  };
  walk(path.join(gw.dir, 'data'));
  for (const f of files) {
    const bytes = fs.readFileSync(f);
    assert.ok(!bytes.includes(AWS_ID) && !bytes.includes(AWS_SECRET), `a credential is stored in ${f}`);
  }
  const { stdout, stderr } = gw.output();
  assert.ok(!(stdout + stderr).includes(AWS_ID) && !(stdout + stderr).includes(AWS_SECRET), 'a credential is in the gateway log');
});

test('Responses API streams (stream helper and create({stream:true})) and embeddings pass and are recorded with usage', async () => {
  // The SDK's stream helper, gated: the first delta arrives while the server holds the rest.
  const gate = srv.gate();
  let sentAtFirst = -1;
  const input = 'summarise the moon landing';
  const s = await client.ok({ kind: 'responses.stream', key: runner, args: { model: 'gpt-4o-mini', instructions: 'one line', input: [{ role: 'user', content: input }] } }, () => {
    if (sentAtFirst >= 0) return;
    sentAtFirst = gate.sent;
    gate.release();
  });
  const expected = completionFor(input);
  assert.equal(sentAtFirst, 1);
  assert.equal(s.text, expected);
  assert.equal(s.outputText, expected);
  assert.equal(s.status, 'completed');
  const inTokens = countTokens(`one line ${input}`);
  assert.equal(s.usage.input_tokens, inTokens);
  assert.equal(s.usage.output_tokens, countTokens(expected));
  assert.equal(srv.requests.at(-1)!.body.max_output_tokens, MAX_PER_REQUEST, 'no cap asked: the gateway set the per-request limit');
  const [rs] = await calls(promptIs(input));
  assert.equal(rs!.command.data.text, 'POST /v1/responses');
  assert.equal(rs!.command.data.llm.endpoint, 'responses');
  assert.equal(rs!.command.data.llm.stream, true);
  assert.equal(rs!.command.data.llm.prompt, `instructions: one line\nuser: ${input}`);
  assert.equal(rs!.result.data.meta.llm.completion, expected);
  assert.equal(rs!.result.data.meta.llm.finishReason, 'completed');
  assert.deepEqual(rs!.result.data.meta.llm.usage, { promptTokens: inTokens, completionTokens: countTokens(expected), totalTokens: inTokens + countTokens(expected) });

  // create({ stream: true }), cut by its own max_output_tokens.
  const c = await client.ok({ kind: 'responses.create', key: runner, args: { model: 'gpt-4o-mini', input: 'alpha beta gamma delta', max_output_tokens: 3 } });
  assert.equal(c.text, 'You said: alpha');
  assert.equal(c.status, 'incomplete');
  assert.equal(c.types.at(-1), 'response.incomplete');
  assert.equal(srv.requests.at(-1)!.body.max_output_tokens, 3);
  const [rc] = await calls(promptIs('alpha beta gamma delta'));
  assert.equal(rc!.result.data.meta.llm.completion, 'You said: alpha');
  assert.equal(rc!.result.data.meta.llm.finishReason, 'max_output_tokens');
  assert.deepEqual(rc!.result.data.meta.llm.usage, { promptTokens: 4, completionTokens: 3, totalTokens: 7 });

  // Embeddings: the client's default base64 vectors arrive intact through the gateway's response masking.
  const texts = ['the first passage', 'a second one'];
  const e = await client.ok({ kind: 'embeddings', key: runner, args: { model: 'text-embedding-3-small', input: texts } });
  assert.equal(srv.requests.at(-1)!.path, '/v1/embeddings');
  assert.equal(srv.requests.at(-1)!.body.encoding_format, 'base64');
  assert.deepEqual(e.vectors, texts.map((t) => embeddingFor(t, 8)));
  const eTokens = countTokens(texts.join(' '));
  const [re] = await calls(promptIs('the first passage'));
  assert.equal(re!.command.data.text, 'POST /v1/embeddings');
  assert.equal(re!.command.data.llm.endpoint, 'embeddings');
  assert.equal(re!.command.data.llm.inputs, 2);
  assert.equal(re!.command.data.llm.prompt, `input[0]: ${texts[0]}\ninput[1]: ${texts[1]}`);
  assert.equal(re!.result.data.meta.llm.vectors, 2);
  assert.equal(re!.result.data.meta.llm.model, 'text-embedding-3-small');
  assert.deepEqual(re!.result.data.meta.llm.usage, { promptTokens: eTokens, completionTokens: 0, totalTokens: eTokens });
});

test('limits: a model not allowed → 403 model_not_allowed, a cap over the limit → 400, none reach the model; no cap → the limit is set', async () => {
  const before = srv.requests.length;
  const denied = await client.call({ kind: 'chat', key: limits, args: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] } });
  assert.equal(denied.ok, false);
  if (denied.ok) return;
  assert.equal(denied.error.name, 'PermissionDeniedError');
  assert.equal(denied.error.status, 403);
  assert.equal(denied.error.code, 'model_not_allowed');
  assert.match(denied.error.message, /^403 gatehouse: model "gpt-4o" is not allowed on this connection/);
  assert.match(denied.error.message, /gpt-4o-mini, text-embedding-3-\*/, 'the message names what is allowed');
  assert.equal(denied.fetches, 1);

  const emb = await client.call({ kind: 'embeddings', key: limits, args: { model: 'text-embedding-ada-002', input: 'x' } });
  assert.equal(emb.ok, false);
  if (!emb.ok) assert.equal(emb.error.code, 'model_not_allowed');

  const over = await client.call({ kind: 'chat', key: limits, args: { model: 'gpt-4o-mini', max_tokens: MAX_PER_REQUEST + 1, messages: [{ role: 'user', content: 'hi' }] } });
  assert.equal(over.ok, false);
  if (over.ok) return;
  assert.equal(over.error.name, 'BadRequestError');
  assert.equal(over.error.status, 400);
  assert.equal(over.error.code, 'max_tokens_exceeded');
  assert.match(over.error.message, new RegExp(`"max_tokens" is ${MAX_PER_REQUEST + 1}, more than this connection allows per request \\(${MAX_PER_REQUEST}\\)`));
  const overResp = await client.call({ kind: 'responses.create', key: limits, args: { model: 'gpt-4o-mini', input: 'hi', max_output_tokens: 100_000 } });
  assert.equal(overResp.ok, false);
  if (!overResp.ok) assert.equal(overResp.error.code, 'max_tokens_exceeded');
  assert.equal(srv.requests.length, before, 'a refused call reached the model');

  const r = await client.ok({ kind: 'chat', key: limits, args: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'no cap asked for' }] } });
  assert.equal(r.text, completionFor('no cap asked for'));
  assert.equal(srv.requests.length, before + 1);
  const seen = srv.requests.at(-1)!.body;
  assert.equal(seen.max_completion_tokens, MAX_PER_REQUEST);
  assert.equal(seen.max_tokens, undefined);
  const [call] = await calls(promptIs('no cap asked for'));
  assert.equal(call!.command.data.llm.maxTokens, MAX_PER_REQUEST);
  assert.equal(call!.command.data.llm.stream, false);
  // The refused calls are in the journal too, as blocks with the reason.
  const blocked = (await journal()).flatMap((s) => s.events).filter((e) => e.type === 'command' && e.data.verdict?.action === 'block');
  assert.ok(blocked.some((e) => e.data.verdict.rule === 'llm.model_not_allowed' && /gpt-4o/.test(e.data.verdict.reason)), 'model refusal recorded');
  assert.ok(blocked.some((e) => e.data.verdict.rule === 'llm.max_tokens_exceeded'), 'max tokens refusal recorded');
});

test('daily budget: calls pass until the identity has used its tokens, then 429 token_budget_exceeded with Retry-After, not retried; another identity still works', async () => {
  const words = Array.from({ length: 120 }, (_, i) => `w${i}`).join(' ');
  const cap = 200;
  // What the budget admits: a call reserves its cap, and is charged what the upstream reports.
  const cost = countTokens(words) + countTokens(completionFor(words));
  let expectedCalls = 0;
  for (let used = 0; used < MAX_PER_DAY && used + cap <= MAX_PER_DAY; used += cost) expectedCalls++;
  assert.ok(expectedCalls >= 2 && expectedCalls < 10);

  const before = srv.requests.length;
  let passed = 0;
  let refused: Outcome | null = null;
  for (let i = 0; i < 10 && !refused; i++) {
    const o = await client.call({ kind: 'chat', key: spender, args: { model: 'gpt-4o-mini', max_tokens: cap, messages: [{ role: 'user', content: words }] } });
    if (o.ok) {
      assert.equal(o.value.text, completionFor(words));
      passed++;
    } else refused = o;
  }
  assert.equal(passed, expectedCalls);
  assert.ok(refused && !refused.ok, 'the budget was never exhausted');
  const err = (refused as Outcome & { ok: false }).error;
  assert.equal(err.name, 'RateLimitError');
  assert.equal(err.status, 429);
  assert.equal(err.code, 'token_budget_exceeded');
  // What was used: the charges, or the last call's reservation if its charge is still being settled.
  const used = Number(new RegExp(`daily token limit reached: (\\d+) of ${MAX_PER_DAY} tokens used today`).exec(err.message)?.[1]);
  assert.ok(used === passed * cost || used === (passed - 1) * cost + cap, err.message);
  const retryAfter = Number(err.retryAfter);
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 86_400, `Retry-After: ${err.retryAfter}`);
  assert.equal(err.shouldRetry, 'false');
  assert.equal(refused!.fetches, 1, 'the client retried a refusal that cannot succeed');
  assert.equal(srv.requests.length, before + passed, 'the refused call reached the model');

  const r = await client.ok({ kind: 'chat', key: other, args: { model: 'gpt-4o-mini', max_tokens: cap, messages: [{ role: 'user', content: words }] } });
  assert.equal(r.text, completionFor(words));
  assert.equal(srv.requests.length, before + passed + 1);
});

test('other paths on the connection pass as plain HTTP: GET /v1/models → the server\'s 404, recorded', async () => {
  const before = srv.requests.length;
  const o = await client.call({ kind: 'models', key: runner });
  assert.equal(o.ok, false, 'the test server has no /v1/models');
  if (o.ok) return;
  assert.equal(o.error.name, 'NotFoundError');
  assert.equal(o.error.status, 404);
  assert.match(o.error.message, /Invalid URL \(GET \/v1\/models\)/, 'the upstream\'s own error, passed through');
  assert.equal(srv.requests.length, before + 1);
  const seen = srv.requests.at(-1)!;
  assert.equal(seen.method, 'GET');
  assert.equal(seen.path, '/v1/models');
  assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  const [call] = await calls((c) => c.command.data.text === 'GET /v1/models');
  assert.equal(call!.identity, 'runner');
  assert.equal(call!.command.data.llm, undefined);
  assert.equal(call!.command.data.http.method, 'GET');
  assert.equal(call!.result.data.meta.status, 404);
  assert.equal(call!.result.data.meta.llm, undefined);
  assert.match(call!.result.data.meta.responseBody, /Invalid URL/);
});

// GATEWAY BUG (fails until fixed): with `mask: {}` the JSON response masker applies the default
// column rule `*token*` (src/mask/config.ts DEFAULT_COLUMN_RULES) to OpenAI's usage counts, so a
// non-streamed completion, response or embedding reaches the client with
// `"prompt_tokens": "[MASKED:prompt_tokens]"` instead of a number (streams are masked as text
// and keep them). The journal's usage is read before masking and is right.
test('non-streamed JSON responses reach the client with their usage counts as numbers', async () => {
  const chat = await client.ok({ kind: 'chat', key: runner, args: { model: 'gpt-4o-mini', max_tokens: 50, messages: [{ role: 'user', content: 'count my tokens' }] } });
  const resp = await client.ok({ kind: 'responses.create', key: runner, args: { model: 'gpt-4o-mini', input: 'count these too', max_output_tokens: 50, stream: false } });
  const emb = await client.ok({ kind: 'embeddings', key: runner, args: { model: 'text-embedding-3-small', input: 'and these' } });
  assert.equal(chat.text, completionFor('count my tokens'));
  assert.equal(resp.text, completionFor('count these too'));
  const bug = 'the gateway masked the usage counts (default column rule *token* applied to LLM response JSON)';
  assert.deepEqual(chat.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 }, bug);
  assert.deepEqual(
    resp.usage,
    { input_tokens: 3, input_tokens_details: { cached_tokens: 0 }, output_tokens: 5, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 8 },
    bug,
  );
  assert.deepEqual(emb.usage, { prompt_tokens: 2, total_tokens: 2 }, bug);
});
