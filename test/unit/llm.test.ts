// LLM request inspection: endpoints, masking of everything the model reads, the model allowlist,
// max-tokens limits, hostile bodies; and one rewritten request sent to the local
// OpenAI-compatible server to show the model receives the masked text and the upstream key.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { newCounts, type Counts } from '../../src/mask/counts.ts';
import { parseMaskConfig } from '../../src/mask/config.ts';
import { Masker } from '../../src/mask/masker.ts';
import {
  LLM_MAX_BODY,
  dailyBudgetRefusal,
  inspectLlmRequest,
  llmEndpoint,
  openAiError,
  refusalHeaders,
  type InspectOptions,
  type LlmEndpoint,
  type LlmRefusal,
  type LlmRequest,
} from '../../src/protocols/http/llm.ts';
import { startOpenAiServer, type OpenAiServer } from '../helpers/openai-server.ts';

const masker = new Masker(parseMaskConfig({}), 'llm-test-secret');
const maskPrompt = (t: string, c: Counts) => masker.maskText(t, c);

const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const LEAK = `deploy with ${AKID} and aws secret ${SECRET} please`;

const json = (o: unknown) => Buffer.from(JSON.stringify(o));

function ok(endpoint: LlmEndpoint, body: unknown, opts: Partial<InspectOptions> = {}): LlmRequest & { sent: any; counts: Counts } {
  const counts = newCounts();
  const r = inspectLlmRequest(endpoint, Buffer.isBuffer(body) ? body : json(body), { counts, ...opts });
  if (r.refused) assert.fail(`refused: ${r.message}`);
  return { ...r, sent: JSON.parse(r.body.toString('utf8')), counts };
}

function refused(endpoint: LlmEndpoint, body: unknown, opts: Partial<InspectOptions> = {}): LlmRefusal {
  const r = inspectLlmRequest(endpoint, Buffer.isBuffer(body) ? body : json(body), { counts: newCounts(), ...opts });
  assert.equal(r.refused, true, 'expected a refusal');
  return r as LlmRefusal;
}

function assertNoSecret(text: string): void {
  assert.ok(!text.includes(AKID), `access key id leaked: ${text.slice(0, 300)}`);
  assert.ok(!text.includes(SECRET), `secret key leaked: ${text.slice(0, 300)}`);
  assert.ok(!text.includes('AKIAIOSF'), 'part of the key id leaked');
}

describe('llmEndpoint', () => {
  test('chat, responses and embeddings, with or without /v1; nothing else', () => {
    const cases: [string, LlmEndpoint | null][] = [
      ['/v1/chat/completions', 'chat'],
      ['/chat/completions', 'chat'],
      ['/v1/chat/completions/', 'chat'],
      ['/v1/chat/completions?x=1', 'chat'],
      ['/v1/responses', 'responses'],
      ['/responses', 'responses'],
      ['/v1/embeddings', 'embeddings'],
      ['/embeddings', 'embeddings'],
      ['/v1/models', null],
      ['/v1/responses/resp_123', null],
      ['/v1/chat/completions/x', null],
      ['/V1/chat/completions', null],
      ['/v1//chat/completions', null],
      ['/constructor', null],
      ['/__proto__', null],
      ['', null],
      ['/', null],
    ];
    for (const [path, want] of cases) assert.equal(llmEndpoint(path), want, path);
  });
});

describe('masking what the model reads', () => {
  test('chat: string content, text parts, tool results and tool-call arguments are masked in the forwarded body', () => {
    const r = ok(
      'chat',
      {
        model: 'gpt-4o-mini',
        temperature: 0.2,
        messages: [
          { role: 'system', content: 'You are terse.' },
          { role: 'user', content: LEAK },
          { role: 'user', content: [{ type: 'text', text: `parts: ${AKID}` }, { type: 'image_url', image_url: { url: 'https://example.com/a.png' } }, `bare ${AKID}`] },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'deploy', arguments: JSON.stringify({ key: AKID, secret_key: SECRET }) } }] },
          { role: 'tool', tool_call_id: 'c1', content: `aws secret ${SECRET}` },
        ],
      },
      { maskPrompt },
    );
    assertNoSecret(r.body.toString());
    assertNoSecret(r.prompt);
    assert.equal(r.sent.messages[1].content, 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(r.sent.messages[2].content[0].text, 'parts: [MASKED:aws]');
    assert.deepEqual(r.sent.messages[2].content[1], { type: 'image_url', image_url: { url: 'https://example.com/a.png' } }, 'non-text parts pass as they were');
    assert.equal(r.sent.messages[2].content[2], 'bare [MASKED:aws]', 'a bare string part is masked as well');
    assert.match(r.sent.messages[3].tool_calls[0].function.arguments, /\[MASKED:aws\]/);
    assert.equal(r.sent.messages[4].content, 'aws secret [MASKED:aws]');
    assert.equal(r.sent.temperature, 0.2, 'other fields pass');
    assert.equal(r.sent.messages[0].content, 'You are terse.');
    assert.ok(r.counts.aws >= 6, `counts: ${JSON.stringify(r.counts)}`);
    assert.equal(r.model, 'gpt-4o-mini');
    assert.equal(r.stream, false);
    assert.match(r.prompt, /^system: You are terse\.\nuser: deploy with \[MASKED:aws\]/);
    assert.match(r.prompt, /\nuser: parts: \[MASKED:aws\] \[image_url\] bare \[MASKED:aws\]\n/);
    assert.match(r.prompt, /\nassistant: → deploy\(\{"key":"\[MASKED:aws\]"/);
    assert.match(r.prompt, /\ntool: aws secret \[MASKED:aws\]$/);
  });

  test('responses: instructions, string input and input items (messages, tool outputs) are masked', () => {
    const s = ok('responses', { model: 'gpt-4.1', input: LEAK, instructions: `use key ${AKID}` }, { maskPrompt });
    assert.equal(s.sent.input, 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(s.sent.instructions, 'use key [MASKED:aws]');
    assert.equal(s.prompt, 'instructions: use key [MASKED:aws]\nuser: deploy with [MASKED:aws] and aws secret [MASKED:aws] please');

    const r = ok(
      'responses',
      {
        model: 'gpt-4.1',
        input: [
          { role: 'user', content: [{ type: 'input_text', text: LEAK }] },
          { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: `noted ${AKID}` }] },
          { type: 'function_call', call_id: 'c1', name: 'lookup', arguments: `{"k":"${AKID}"}` },
          { type: 'function_call_output', call_id: 'c1', output: `aws secret ${SECRET}` },
          { role: 'user', content: `plain ${AKID}` },
        ],
      },
      { maskPrompt },
    );
    assertNoSecret(r.body.toString());
    assertNoSecret(r.prompt);
    assert.equal(r.sent.input[0].content[0].text, 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(r.sent.input[0].content[0].type, 'input_text');
    assert.equal(r.sent.input[1].content[0].text, 'noted [MASKED:aws]');
    assert.equal(r.sent.input[2].arguments, '{"k":"[MASKED:aws]"}');
    assert.equal(r.sent.input[3].output, 'aws secret [MASKED:aws]');
    assert.equal(r.sent.input[4].content, 'plain [MASKED:aws]');
    assert.match(r.prompt, /\nfunction_call lookup: \{"k":"\[MASKED:aws\]"\}\nfunction_call_output: aws secret/);
  });

  test('embeddings: a string or strings are masked; token ids are refused when masking, passed otherwise', () => {
    const one = ok('embeddings', { model: 'text-embedding-3-small', input: LEAK }, { maskPrompt });
    assert.equal(one.sent.input, 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(one.inputs, 1);
    assert.equal(one.maxTokens, null);
    const many = ok('embeddings', { model: 'text-embedding-3-small', input: ['hello', LEAK, AKID] }, { maskPrompt });
    assert.deepEqual(many.sent.input, ['hello', 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please', '[MASKED:aws]']);
    assert.equal(many.inputs, 3);
    assert.equal(many.prompt, 'input[0]: hello\ninput[1]: deploy with [MASKED:aws] and aws secret [MASKED:aws] please\ninput[2]: [MASKED:aws]');
    assertNoSecret(many.body.toString());

    const t = refused('embeddings', { model: 'm', input: [[1, 2, 3], [4]] }, { maskPrompt });
    assert.equal(t.code, 'bad_request');
    assert.equal(t.param, 'input');
    const pass = ok('embeddings', { model: 'm', input: [[1, 2, 3], [4]] });
    assert.equal(pass.inputs, 2);
    assert.deepEqual(pass.sent.input, [[1, 2, 3], [4]]);
    assert.equal(refused('embeddings', { model: 'm', input: ['a', 7] }).param, 'input[1]');
    assert.equal(refused('embeddings', { model: 'm', input: [] }).param, 'input');
  });

  test('maskTranscript alone: the model gets the text as sent, the journal a masked copy', () => {
    const r = ok('chat', { model: 'm', messages: [{ role: 'user', content: LEAK }] }, { maskTranscript: maskPrompt });
    assert.equal(r.sent.messages[0].content, LEAK);
    assert.equal(r.prompt, 'user: deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(r.counts.aws, 2);
  });

  test('the transcript is masked before it is cut, so a cut never leaves part of a secret', () => {
    // The cap falls inside the key id: cutting first would keep "AKIAIOSF…" unmasked.
    const opts = { maxPromptChars: 20 };
    for (const o of [{ ...opts, maskPrompt }, { ...opts, maskTranscript: maskPrompt }]) {
      const r = ok('chat', { model: 'm', messages: [{ role: 'user', content: `key ${AKID} more` }] }, o);
      assert.equal(r.prompt, 'user: key [MASKED:aw …[truncated]');
      assert.equal(r.promptTruncated, true);
    }
  });

  test('without masking options the body passes with the same content', () => {
    const body = { model: 'm', messages: [{ role: 'user', content: LEAK }], stream: false, n: 1 };
    const r = ok('chat', body);
    assert.deepEqual(r.sent, body);
    assert.equal(r.prompt, `user: ${LEAK}`);
  });
});

describe('allowlist and limits', () => {
  test('model globs: allowed models pass, others are refused with 403 and an OpenAI-style error', () => {
    const models = ['gpt-4o-mini', 'text-embedding-3-*', 'claude-?-haiku'];
    assert.equal(ok('chat', { model: 'gpt-4o-mini', messages: [] }, { models }).model, 'gpt-4o-mini');
    assert.equal(ok('embeddings', { model: 'text-embedding-3-large', input: 'x' }, { models }).model, 'text-embedding-3-large');
    assert.equal(ok('chat', { model: 'claude-3-haiku', messages: [] }, { models }).model, 'claude-3-haiku');
    for (const model of ['gpt-4o', 'gpt-4o-mini-2024', 'GPT-4o-mini', 'claude-35-haiku', 'text-embedding-3']) {
      const r = refused('chat', { model, messages: [] }, { models });
      assert.equal(r.status, 403, model);
      assert.equal(r.code, 'model_not_allowed');
      assert.equal(r.param, 'model');
    }
    const r = refused('chat', { model: 'gpt-5', messages: [] }, { models });
    const body = openAiError(r);
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(body.error.code, 'model_not_allowed');
    assert.equal(body.error.type, 'permission_error');
    assert.match(body.error.message, /model "gpt-5" is not allowed.*use one of: gpt-4o-mini, text-embedding-3-\*, claude-\?-haiku/);
    assert.deepEqual(refusalHeaders(r), { 'x-should-retry': 'false' });
    assert.equal(refused('chat', { model: '', messages: [] }, { models: ['*'] }).code, 'bad_request');
    assert.equal(ok('chat', { model: 'anything', messages: [] }, { models: ['*'] }).model, 'anything');
    assert.equal(refused('chat', { model: 'x', messages: [] }, { models: [] }).code, 'model_not_allowed', 'an empty allowlist allows nothing');
  });

  test('chat: more than the per-request limit is refused; less is kept; none gets the limit', () => {
    const maxTokensPerRequest = 500;
    for (const f of ['max_tokens', 'max_completion_tokens']) {
      const r = refused('chat', { model: 'm', messages: [], [f]: 501 }, { maxTokensPerRequest });
      assert.equal(r.status, 400);
      assert.equal(r.code, 'max_tokens_exceeded');
      assert.equal(r.param, f);
      assert.match(openAiError(r).error.message, /at most 500/);
      const k = ok('chat', { model: 'm', messages: [], [f]: 200 }, { maxTokensPerRequest });
      assert.equal(k.sent[f], 200);
      assert.equal(k.maxTokens, 200);
      assert.equal(k.requestedMaxTokens, 200);
      assert.equal(k.sent[f === 'max_tokens' ? 'max_completion_tokens' : 'max_tokens'], undefined, 'nothing added when the client set a cap');
    }
    const both = ok('chat', { model: 'm', messages: [], max_tokens: 300, max_completion_tokens: 100 }, { maxTokensPerRequest });
    assert.equal(both.maxTokens, 100);
    const none = ok('chat', { model: 'm', messages: [], max_tokens: null }, { maxTokensPerRequest });
    assert.equal(none.sent.max_completion_tokens, 500);
    assert.equal(none.maxTokens, 500);
    assert.equal(none.requestedMaxTokens, null);
    const free = ok('chat', { model: 'm', messages: [] });
    assert.equal(free.maxTokens, null);
    assert.equal(free.sent.max_completion_tokens, undefined);
    assert.equal(ok('chat', { model: 'm', messages: [], max_tokens: 0 }, { maxTokensPerRequest }).maxTokens, 0);
  });

  test('responses: max_output_tokens checked and set; embeddings have no output cap', () => {
    const maxTokensPerRequest = 64;
    assert.equal(refused('responses', { model: 'm', input: 'x', max_output_tokens: 65 }, { maxTokensPerRequest }).param, 'max_output_tokens');
    assert.equal(ok('responses', { model: 'm', input: 'x' }, { maxTokensPerRequest }).sent.max_output_tokens, 64);
    assert.equal(ok('responses', { model: 'm', input: 'x', max_output_tokens: 10 }, { maxTokensPerRequest }).sent.max_output_tokens, 10);
    const e = ok('embeddings', { model: 'm', input: 'x' }, { maxTokensPerRequest });
    assert.equal(e.maxTokens, null);
    assert.equal(e.sent.max_output_tokens, undefined);
  });

  test('token fields that are not non-negative integers are bad requests', () => {
    for (const v of [-1, 1.5, '100', true, {}, [], 1e300]) {
      const r = refused('chat', { model: 'm', messages: [], max_tokens: v }, { maxTokensPerRequest: 10 });
      assert.equal(r.code, 'bad_request', JSON.stringify(v));
      assert.equal(r.param, 'max_tokens');
    }
  });

  test('dailyBudgetRefusal: 429, retry after the next UTC midnight', () => {
    const now = new Date('2025-03-01T23:59:00.000Z');
    const r = dailyBudgetRefusal(9_900, 500, 10_000, now);
    assert.equal(r.status, 429);
    assert.equal(r.code, 'token_budget_exceeded');
    assert.equal(r.retryAfterSeconds, 60);
    assert.match(r.message, /9900 of 10000/);
    assert.match(r.hint, /≤ 100/);
    assert.deepEqual(refusalHeaders(r), { 'x-should-retry': 'false', 'retry-after': '60' });
    assert.equal(openAiError(r).error.type, 'rate_limit_error');
    assert.match(dailyBudgetRefusal(10_000, 0, 10_000, now).hint, /wait until 00:00 UTC/);
  });
});

describe('streams', () => {
  test('chat streams get stream_options.include_usage; what the client set is kept', () => {
    const a = ok('chat', { model: 'm', messages: [], stream: true });
    assert.equal(a.stream, true);
    assert.deepEqual(a.sent.stream_options, { include_usage: true });
    assert.equal(a.includeUsageAdded, true);
    const b = ok('chat', { model: 'm', messages: [], stream: true, stream_options: { include_usage: true, include_obfuscation: false } });
    assert.deepEqual(b.sent.stream_options, { include_usage: true, include_obfuscation: false });
    assert.equal(b.includeUsageAdded, false);
    const c = ok('chat', { model: 'm', messages: [], stream: true, stream_options: { include_usage: false } });
    assert.equal(c.sent.stream_options.include_usage, true);
    assert.equal(c.includeUsageAdded, true);
    const d = ok('chat', { model: 'm', messages: [] });
    assert.equal(d.sent.stream_options, undefined, 'not added to non-streaming requests');
    assert.equal(ok('responses', { model: 'm', input: 'x', stream: true }).sent.stream_options, undefined);
    assert.equal(refused('chat', { model: 'm', messages: [], stream: 'yes' }).param, 'stream');
    assert.equal(refused('chat', { model: 'm', messages: [], stream: true, stream_options: 'x' }).param, 'stream_options');
  });
});

describe('hostile bodies', () => {
  test('not JSON, not an object, wrong shapes: 400 bad_request, no throw', () => {
    const bodies: [LlmEndpoint, Buffer | unknown][] = [
      ['chat', Buffer.from('{"model": "m", "messages": [')],
      ['chat', Buffer.from('')],
      ['chat', Buffer.from('\ufeff{"model":"m","messages":[]}')],
      ['chat', Buffer.from([0xff, 0xfe, 0x00, 0x7b])],
      ['chat', [1, 2]],
      ['chat', 'string'],
      ['chat', null],
      ['chat', { messages: [] }],
      ['chat', { model: 42, messages: [] }],
      ['chat', { model: 'x'.repeat(257), messages: [] }],
      ['chat', { model: 'm' }],
      ['chat', { model: 'm', messages: {} }],
      ['chat', { model: 'm', messages: ['hi'] }],
      ['chat', { model: 'm', messages: [null] }],
      ['chat', { model: 'm', messages: [{ role: 'user', content: { text: 'AKIAIOSFODNN7EXAMPLE' } }] }],
      ['chat', { model: 'm', messages: [{ role: 'user', content: 42 }] }],
      ['responses', { model: 'm', input: [{ role: 'user', content: { text: 'x' } }] }],
      ['responses', { model: 'm', input: 42 }],
      ['responses', { model: 'm', input: [7] }],
      ['responses', { model: 'm', input: 'x', instructions: ['a'] }],
      ['embeddings', { model: 'm' }],
      ['embeddings', { model: 'm', input: { a: 1 } }],
    ];
    for (const [ep, b] of bodies) {
      const r = refused(ep, b);
      assert.equal(r.status, 400, JSON.stringify(b)?.slice(0, 80));
      assert.equal(r.code, 'bad_request');
      assert.ok(openAiError(r).error.message.length < 600);
    }
  });

  test('deep nesting is refused before parsing; oversize bodies with 413', () => {
    const deep = Buffer.from(`{"model":"m","messages":[{"role":"user","content":"x","extra":${'['.repeat(200_000)}${']'.repeat(200_000)}}]}`);
    const t0 = performance.now();
    const r = refused('chat', deep);
    assert.equal(r.code, 'bad_request');
    assert.match(r.message, /deeper than 128/);
    assert.ok(performance.now() - t0 < 2000);
    // Brackets inside strings are text, not nesting.
    const text = ok('chat', { model: 'm', messages: [{ role: 'user', content: '['.repeat(10_000) + '\\"{' }] });
    assert.equal(text.sent.messages[0].content.length, 10_003);
    const nested = ok('chat', { model: 'm', messages: [], response_format: { a: { b: { c: { d: [[[1]]] } } } } });
    assert.deepEqual(nested.sent.response_format, { a: { b: { c: { d: [[[1]]] } } } });

    const big = Buffer.alloc(LLM_MAX_BODY + 1, 0x20);
    const o = refused('chat', big);
    assert.equal(o.status, 413);
    assert.equal(o.code, 'request_too_large');
  });

  test('the transcript is bounded however many or long the messages', () => {
    const messages = Array.from({ length: 50_000 }, (_, i) => ({ role: 'user', content: `message ${i} ${'z'.repeat(20)}` }));
    const r = ok('chat', { model: 'm', messages }, { maskPrompt, maxPromptChars: 4096 });
    assert.ok(r.prompt.length <= 4096 + 20, String(r.prompt.length));
    assert.equal(r.promptTruncated, true);
    assert.equal(r.sent.messages.length, 50_000, 'every message is still forwarded');
    const long = ok('chat', { model: 'm', messages: [{ role: 'x'.repeat(1000), content: 'y'.repeat(3_000_000) }] });
    assert.ok(long.prompt.length <= 16 * 1024 + 20);
    assert.ok(long.prompt.startsWith('x'.repeat(32) + ': yyy'), 'roles are bounded too');
  });

  test('a duplicate key is forwarded as the value the gateway checked', () => {
    const body = Buffer.from('{"model":"gpt-4o-mini","messages":[],"model":"gpt-5-pro"}');
    const r = refused('chat', body, { models: ['gpt-4o-mini'] });
    assert.equal(r.code, 'model_not_allowed', 'JSON.parse keeps the last value, which is the one judged');
    const ok2 = ok('chat', Buffer.from('{"model":"gpt-5-pro","messages":[],"model":"gpt-4o-mini"}'), { models: ['gpt-4o-mini'] });
    assert.equal(ok2.body.toString(), '{"model":"gpt-4o-mini","messages":[]}', 'only the checked value reaches the upstream');
  });

  test('__proto__ and constructor keys are plain data', () => {
    const r = ok('chat', Buffer.from('{"model":"m","messages":[{"role":"user","content":"hi","__proto__":{"content":"x"}}],"constructor":{"prototype":1}}'), { maskPrompt });
    assert.equal(r.sent.messages[0].content, 'hi');
    assert.equal(({} as any).content, undefined);
  });
});

describe('what the model receives', () => {
  let srv: OpenAiServer;
  before(async () => {
    srv = await startOpenAiServer({ apiKey: 'sk-upstream-1' });
  });
  after(() => srv.close());

  test('the rewritten body, sent with the upstream key, is what the model reads and answers', async () => {
    const r = ok('chat', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: LEAK }] }, { maskPrompt, maxTokensPerRequest: 50 });
    const res = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-upstream-1' },
      body: new Uint8Array(r.body),
    });
    assert.equal(res.status, 200);
    const out = (await res.json()) as any;
    assert.equal(out.choices[0].message.content, 'You said: deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    const seen = srv.requests.at(-1)!;
    assert.equal(seen.headers.authorization, 'Bearer sk-upstream-1');
    assert.equal(seen.body.messages[0].content, 'deploy with [MASKED:aws] and aws secret [MASKED:aws] please');
    assert.equal(seen.body.max_completion_tokens, 50);
    assertNoSecret(seen.raw);
  });

  test('the server refuses a wrong key with OpenAI 401', async () => {
    const res = await fetch(`${srv.url}/v1/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer gh_caller_key' },
      body: JSON.stringify({ model: 'm', input: 'x' }),
    });
    assert.equal(res.status, 401);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'invalid_api_key');
  });
});
