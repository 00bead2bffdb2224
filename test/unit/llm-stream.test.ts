// Completion assembly from LLM responses (SSE and JSON), split at every byte, over hostile and
// oversized input; and the local OpenAI-compatible server against the official `openai` client,
// with the bytes that client received fed to the assembler.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { CompletionAssembler, normalizeUsage, salvageUsage, type AssembledCompletion, type AssemblerOptions } from '../../src/protocols/http/llm-stream.ts';
import type { LlmEndpoint } from '../../src/protocols/http/llm.ts';
import { embeddingFor, startOpenAiServer, type OpenAiServer } from '../helpers/openai-server.ts';
import { prng } from '../helpers/random.ts';

function assemble(endpoint: LlmEndpoint, chunks: Buffer[], opts: AssemblerOptions): AssembledCompletion {
  const a = new CompletionAssembler(endpoint, opts);
  for (const c of chunks) a.push(c);
  a.end();
  return a.result();
}

/** The same result for the whole body, every two-way split, single bytes and random three-way splits. */
function assertSplitInvariant(endpoint: LlmEndpoint, body: Buffer, opts: AssemblerOptions, want: AssembledCompletion): void {
  assert.deepEqual(assemble(endpoint, [body], opts), want, 'whole');
  for (let i = 0; i <= body.length; i++) {
    assert.deepEqual(assemble(endpoint, [body.subarray(0, i), body.subarray(i)], opts), want, `split at byte ${i}`);
  }
  assert.deepEqual(assemble(endpoint, [...body].map((b) => Buffer.from([b])), opts), want, 'byte by byte');
  const r = prng(7);
  for (let n = 0; n < 200; n++) {
    const [a, b] = [Math.floor(r() * body.length), Math.floor(r() * body.length)].sort((x, y) => x - y);
    assert.deepEqual(assemble(endpoint, [body.subarray(0, a), body.subarray(a, b), body.subarray(b)], opts), want, `split at ${a}, ${b}`);
  }
}

const chunk = (o: Record<string, unknown>) => JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', ...o });

// Mixed line ends (CRLF, CR, LF), a comment, a multi-line data event, multi-byte characters,
// streamed tool-call arguments, the usage chunk, and junk after [DONE].
const CHAT_SSE = Buffer.from(
  [
    ': keep-alive\r\n\r\n',
    `data: ${chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }], usage: null })}\r\n\r\n`,
    `data: ${chunk({ choices: [{ index: 0, delta: { content: 'Grüße ' }, finish_reason: null }], usage: null })}\n\n`,
    `data:${chunk({ choices: [{ index: 0, delta: { content: '🌍 world' }, finish_reason: null }] })}\r\r`,
    `data: {"choices":[{"index":0,\ndata: "delta":{"content":"!"}}]}\n\n`,
    `data: ${chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } }] } }] })}\n\n`,
    `data: ${chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] } }] })}\n\n`,
    `data: ${chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '"Zürich"}' } }] } }] })}\n\n`,
    `event: ignored\nid: 5\nretry: 1000\ndata: ${chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'tool_calls' }] })}\n\n`,
    `data: ${chunk({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 } })}\n\n`,
    'data: [DONE]\n\n',
    `data: ${chunk({ choices: [{ index: 0, delta: { content: 'after done' } }] })}\n\n`,
  ].join(''),
);
const CHAT_WANT: AssembledCompletion = {
  model: 'gpt-4o-mini',
  completion: 'Grüße 🌍 world!',
  truncated: false,
  usage: { promptTokens: 12, completionTokens: 7, totalTokens: 19 },
  finishReason: 'tool_calls',
  toolCalls: 'get_weather({"city":"Zürich"})',
  skipped: 0,
};

const ev = (type: string, o: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...o })}\n\n`;
const RESPONSE_BASE = { id: 'resp_1', object: 'response', model: 'gpt-4.1-2025', status: 'in_progress', output: [], usage: null };
const RESPONSES_SSE = Buffer.from(
  [
    ev('response.created', { sequence_number: 0, response: RESPONSE_BASE }),
    ev('response.in_progress', { sequence_number: 1, response: RESPONSE_BASE }),
    ev('response.output_item.added', { output_index: 0, item: { id: 'msg_1', type: 'message', role: 'assistant', content: [] } }),
    ev('response.content_part.added', { output_index: 0, content_index: 0, part: { type: 'output_text', text: '' } }),
    ev('response.output_text.delta', { output_index: 0, content_index: 0, delta: 'Hello' }),
    ev('response.output_text.delta', { output_index: 0, content_index: 0, delta: ' wörld ✓' }),
    ev('response.output_text.done', { output_index: 0, content_index: 0, text: 'Hello wörld ✓' }),
    ev('response.output_item.added', { output_index: 1, item: { id: 'fc_1', type: 'function_call', name: 'lookup', arguments: '', call_id: 'c1' } }),
    ev('response.function_call_arguments.delta', { output_index: 1, item_id: 'fc_1', delta: '{"q":' }),
    ev('response.function_call_arguments.delta', { output_index: 1, item_id: 'fc_1', delta: '"x"}' }),
    ev('response.function_call_arguments.done', { output_index: 1, item_id: 'fc_1', arguments: '{"q":"x"}' }),
    ev('response.output_item.done', { output_index: 1, item: { id: 'fc_1', type: 'function_call', name: 'lookup', arguments: '{"q":"x"}', call_id: 'c1' } }),
    ev('response.completed', {
      response: {
        ...RESPONSE_BASE,
        status: 'completed',
        output: [
          { id: 'msg_1', type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello wörld ✓', annotations: [] }] },
          { id: 'fc_1', type: 'function_call', name: 'lookup', arguments: '{"q":"x"}', call_id: 'c1' },
        ],
        usage: { input_tokens: 5, output_tokens: 3, total_tokens: 8, input_tokens_details: { cached_tokens: 0 } },
      },
    }),
  ].join(''),
);
const RESPONSES_WANT: AssembledCompletion = {
  model: 'gpt-4.1-2025',
  completion: 'Hello wörld ✓',
  truncated: false,
  usage: { promptTokens: 5, completionTokens: 3, totalTokens: 8 },
  finishReason: 'completed',
  toolCalls: 'lookup({"q":"x"})',
  skipped: 0,
};

describe('SSE streams', () => {
  test('chat: content, tool calls, finish reason and usage, for every split of the bytes', () => {
    assertSplitInvariant('chat', CHAT_SSE, { stream: true }, CHAT_WANT);
  });

  test('responses: text deltas, function call, completed usage, for every split of the bytes', () => {
    assertSplitInvariant('responses', RESPONSES_SSE, { stream: true }, RESPONSES_WANT);
  });

  test('a responses stream with only the final event still yields text and tool calls, once', () => {
    const body = Buffer.from(RESPONSES_SSE.toString().split('\n\n').filter((e) => /response\.(created|completed)/.test(e)).join('\n\n') + '\n\n');
    assert.deepEqual(assemble('responses', [body], { stream: true }), RESPONSES_WANT);
  });

  test('an incomplete or failed response: reason and error', () => {
    const inc = ev('response.incomplete', { response: { ...RESPONSE_BASE, status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, usage: { input_tokens: 1, output_tokens: 2 } } });
    const r = assemble('responses', [Buffer.from(inc)], { stream: true });
    assert.equal(r.finishReason, 'max_output_tokens');
    assert.deepEqual(r.usage, { promptTokens: 1, completionTokens: 2, totalTokens: 3 });
    const failed = ev('response.failed', { response: { ...RESPONSE_BASE, status: 'failed', error: { code: 'server_error', message: 'boom' } } });
    assert.equal(assemble('responses', [Buffer.from(failed)], { stream: true }).error, 'boom');
    const err = ev('error', { code: 'rate_limit_exceeded', message: 'slow down' });
    assert.equal(assemble('responses', [Buffer.from(err)], { stream: true }).error, 'slow down');
    const chatErr = 'data: {"error":{"message":"context too long","type":"invalid_request_error"}}\n\n';
    assert.equal(assemble('chat', [Buffer.from(chatErr)], { stream: true }).error, 'context too long');
  });

  test('a stream cut off mid-event keeps what arrived; an event without a final blank line is read at end', () => {
    const cut = CHAT_SSE.subarray(0, CHAT_SSE.indexOf('get_weather'));
    const r = assemble('chat', [cut], { stream: true });
    assert.equal(r.completion, 'Grüße 🌍 world!');
    assert.equal(r.usage, undefined);
    const noBlank = Buffer.from(`data: ${chunk({ choices: [{ index: 0, delta: { content: 'last' } }] })}`);
    assert.equal(assemble('chat', [noBlank], { stream: true }).completion, 'last');
  });

  test('several choices are kept apart', () => {
    const body = Buffer.from(
      [0, 1, 0, 1].map((i, n) => `data: ${chunk({ choices: [{ index: i, delta: { content: `c${i}.${n} ` } }] })}\n\n`).join(''),
    );
    assert.equal(assemble('chat', [body], { stream: true }).completion, 'c0.0 c0.2 \n[choice 1]\nc1.1 c1.3 ');
  });

  test('a stream request answered with JSON (an error) is read as JSON', () => {
    const body = Buffer.from('\n {"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}');
    assert.deepEqual(assemble('chat', [body], { stream: true }), { completion: '', truncated: false, error: 'Incorrect API key provided', skipped: 0 });
  });
});

describe('JSON bodies', () => {
  test('chat completion: content, tool calls, finish reason, usage', () => {
    const body = Buffer.from(
      JSON.stringify({
        id: 'chatcmpl-2',
        object: 'chat.completion',
        model: 'gpt-4o-mini-2024',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: 'Sure.', tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{}' } }, { id: 'b', type: 'function', function: { name: 'g', arguments: '{"x":1}' } }] },
            finish_reason: 'tool_calls',
          },
        ],
        usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
      }),
    );
    assertSplitInvariant('chat', body, { stream: false }, {
      model: 'gpt-4o-mini-2024',
      completion: 'Sure.',
      truncated: false,
      usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
      finishReason: 'tool_calls',
      toolCalls: 'f({})\ng({"x":1})',
      skipped: 0,
    });
  });

  test('response object: output items, incomplete reason; output_text alone', () => {
    const body = {
      id: 'resp_2',
      object: 'response',
      model: 'o4-mini',
      status: 'incomplete',
      incomplete_details: { reason: 'max_output_tokens' },
      output: [
        { type: 'reasoning', summary: [{ type: 'summary_text', text: 'thinking…' }] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Part one. ' }, { type: 'output_text', text: 'Part two.' }] },
        { type: 'custom_tool_call', name: 'shell', input: 'ls -la', call_id: 'x' },
      ],
      usage: { input_tokens: 10, output_tokens: 20, total_tokens: 30 },
    };
    assert.deepEqual(assemble('responses', [Buffer.from(JSON.stringify(body))], { stream: false }), {
      model: 'o4-mini',
      completion: 'Part one. Part two.',
      truncated: false,
      usage: { promptTokens: 10, completionTokens: 20, totalTokens: 30 },
      finishReason: 'max_output_tokens',
      toolCalls: 'shell(ls -la)',
      skipped: 0,
    });
    const sdk = assemble('responses', [Buffer.from(JSON.stringify({ model: 'm', output_text: 'from the SDK field', status: 'completed' }))], { stream: false });
    assert.equal(sdk.completion, 'from the SDK field');
  });

  test('embeddings: no completion, the vectors counted, usage', () => {
    const body = JSON.stringify({
      object: 'list',
      data: [0, 1, 2].map((index) => ({ object: 'embedding', index, embedding: [0.1, 0.2] })),
      model: 'text-embedding-3-small',
      usage: { prompt_tokens: 4, total_tokens: 4 },
    });
    assert.deepEqual(assemble('embeddings', [Buffer.from(body)], { stream: true }), {
      model: 'text-embedding-3-small',
      completion: '',
      truncated: false,
      usage: { promptTokens: 4, completionTokens: 0, totalTokens: 4 },
      vectors: 3,
      skipped: 0,
    });
  });

  test('bodies that are not JSON objects are skipped, not thrown', () => {
    for (const b of ['<html>502 Bad Gateway</html>', '[1,2]', 'null', '{"choices": "x", "usage": [1]}', '{"choices":[null, 1, {"message": 5}]}', '']) {
      const r = assemble('chat', [Buffer.from(b)], { stream: false });
      assert.equal(r.completion, '', b);
      assert.equal(r.usage, undefined, b);
    }
  });
});

describe('bounds', () => {
  test('the completion is cut at maxChars; usage still counted', () => {
    const body = Buffer.from(
      Array.from({ length: 100 }, (_, i) => `data: ${chunk({ choices: [{ index: 0, delta: { content: `w${i % 10}` } }] })}\n\n`).join('') +
        `data: ${chunk({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 100, total_tokens: 101 } })}\n\ndata: [DONE]\n\n`,
    );
    const r = assemble('chat', [body], { stream: true, maxChars: 15 });
    assert.equal(r.completion, 'w0w1w2w3w4w5w6w');
    assert.equal(r.truncated, true);
    assert.equal(r.usage?.totalTokens, 101);
    const args = `data: ${chunk({ choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { name: 'f', arguments: 'a'.repeat(100) } }] } }] })}\n\n`;
    const t = assemble('chat', [Buffer.from(args)], { stream: true, maxChars: 10 });
    assert.equal(t.toolCalls, `f(${'a'.repeat(10)})`);
    assert.equal(t.truncated, true);
  });

  test('an SSE line over maxLine is skipped, not buffered; the stream goes on', () => {
    const huge = `data: ${chunk({ choices: [{ index: 0, delta: { content: 'x'.repeat(100_000) } }] })}\n\n`;
    const body = Buffer.from(
      `data: ${chunk({ choices: [{ index: 0, delta: { content: 'before ' } }] })}\n\n` +
        huge +
        `data: ${chunk({ choices: [{ index: 0, delta: { content: 'after' } }] })}\n\n` +
        `data: ${chunk({ choices: [], usage: { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 } })}\n\n`,
    );
    const want = { model: 'gpt-4o-mini', completion: 'before after', truncated: true, usage: { promptTokens: 2, completionTokens: 3, totalTokens: 5 }, skipped: 1 };
    assert.deepEqual(assemble('chat', [body], { stream: true, maxLine: 4096 }), want);
    const pieces: Buffer[] = [];
    for (let i = 0; i < body.length; i += 777) pieces.push(body.subarray(i, i + 777));
    assert.deepEqual(assemble('chat', pieces, { stream: true, maxLine: 4096 }), want);
    // Many data lines of one event add up to the cap as well.
    const multi = Buffer.from(`data: ${'{"a":1,\ndata: '.repeat(1000)}"b":2}\n\n` + `data: ${chunk({ choices: [{ index: 0, delta: { content: 'ok' } }] })}\n\n`);
    const m = assemble('chat', [multi], { stream: true, maxLine: 4096 });
    assert.equal(m.completion, 'ok');
    assert.equal(m.skipped, 1);
  });

  test('a final responses event over maxLine: usage salvaged from its tail, text from the deltas', () => {
    const big = ev('response.completed', {
      // In OpenAI's order: the large fields (instructions, output, tools) before usage.
      response: {
        id: 'resp_1',
        object: 'response',
        model: 'gpt-4.1-2025',
        status: 'completed',
        instructions: 'i'.repeat(200_000),
        output: [{ type: 'message', content: [{ type: 'output_text', text: 'Hello wörld ✓' }] }],
        usage: { input_tokens: 50_000, output_tokens: 3, total_tokens: 50_003 },
        user: null,
        metadata: { k: 'v' },
      },
    });
    const body = Buffer.from(RESPONSES_SSE.toString().replace(/event: response\.completed[\s\S]*$/, '') + big);
    const r = assemble('responses', [body], { stream: true, maxLine: 64 * 1024 });
    assert.equal(r.completion, 'Hello wörld ✓');
    assert.deepEqual(r.usage, { promptTokens: 50_000, completionTokens: 3, totalTokens: 50_003 });
    assert.equal(r.truncated, false, 'a skipped final event loses nothing the deltas did not bring');
    assert.equal(r.skipped, 1);
  });

  test('a JSON body over maxBody: usage and model salvaged from the tail', () => {
    const data = Array.from({ length: 2000 }, (_, index) => ({ object: 'embedding', index, embedding: embeddingFor(String(index), 64) }));
    const body = Buffer.from(JSON.stringify({ object: 'list', data, model: 'text-embedding-3-large', usage: { prompt_tokens: 2000, total_tokens: 2000 } }));
    assert.ok(body.length > 1024 * 1024);
    const pieces: Buffer[] = [];
    for (let i = 0; i < body.length; i += 65536) pieces.push(body.subarray(i, i + 65536));
    const r = assemble('embeddings', pieces, { stream: false, maxBody: 256 * 1024 });
    assert.deepEqual(r, { model: 'text-embedding-3-large', completion: '', truncated: false, usage: { promptTokens: 2000, completionTokens: 0, totalTokens: 2000 }, skipped: 1 });
    const chat = Buffer.from(JSON.stringify({ model: 'm', choices: [{ index: 0, message: { content: 'y'.repeat(300_000) } }], usage: { prompt_tokens: 1, completion_tokens: 9, total_tokens: 10 } }));
    const c = assemble('chat', [chat], { stream: false, maxBody: 100_000 });
    assert.equal(c.truncated, true);
    assert.equal(c.completion, '');
    assert.equal(c.usage?.totalTokens, 10);
  });

  test('64 MiB without a line end, and random garbage, pass through in bounded time without throwing', () => {
    const a = new CompletionAssembler('chat', { stream: true, maxLine: 1024 * 1024 });
    const block = Buffer.alloc(64 * 1024, 0x61);
    a.push(Buffer.from('data: '));
    const t0 = performance.now();
    for (let i = 0; i < 1024; i++) a.push(block);
    a.end();
    assert.ok(performance.now() - t0 < 15_000);
    assert.equal(a.result().skipped, 1);

    const r = prng(42);
    for (let round = 0; round < 20; round++) {
      const g = new CompletionAssembler(round % 2 ? 'responses' : 'chat', { stream: round % 3 !== 0, maxLine: 512, maxBody: 2048, maxChars: 100 });
      for (let i = 0; i < 50; i++) {
        const len = Math.floor(r() * 300);
        const buf = Buffer.alloc(len);
        for (let j = 0; j < len; j++) {
          // Mostly SSE-ish bytes, so the parser's paths are all taken.
          const x = r();
          buf[j] = x < 0.1 ? 0x0a : x < 0.15 ? 0x0d : x < 0.2 ? 0x7b : x < 0.25 ? 0x22 : Math.floor(r() * 256);
        }
        if (r() < 0.2) g.push(Buffer.from(`data: {"choices":[{"delta":{"content":"${'z'.repeat(Math.floor(r() * 200))}"}}],"usage":{"total_tokens":${Math.floor(r() * 1e6)}}}\n\n`));
        g.push(buf);
      }
      g.end();
      const res = g.result();
      assert.ok(res.completion.length <= 100);
    }
  });

  test('usage: either API names, absurd values clamped, total never below the parts; salvage', () => {
    assert.deepEqual(normalizeUsage({ prompt_tokens: 3, completion_tokens: 4 }), { promptTokens: 3, completionTokens: 4, totalTokens: 7 });
    assert.deepEqual(normalizeUsage({ input_tokens: 3, output_tokens: 4, total_tokens: 1 }), { promptTokens: 3, completionTokens: 4, totalTokens: 7 });
    assert.deepEqual(normalizeUsage({ prompt_tokens: -5, completion_tokens: 'x', total_tokens: 1e300 }), { promptTokens: 0, completionTokens: 0, totalTokens: Number.MAX_SAFE_INTEGER });
    assert.equal(normalizeUsage({}), undefined);
    assert.equal(normalizeUsage(null), undefined);
    assert.deepEqual(salvageUsage('…"text":"say \\"usage\\": {"},"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3},"user":null}'), { promptTokens: 1, completionTokens: 2, totalTokens: 3 });
    assert.deepEqual(salvageUsage('"usage": {"prompt_tokens": 1, "total_tokens": 1}, "x": "usage", "usage": {"total_tok'), { promptTokens: 1, completionTokens: 0, totalTokens: 1 });
    assert.equal(salvageUsage('{"usage":'), undefined);
  });
});

describe('the test server and the official openai client', () => {
  let srv: OpenAiServer;
  before(async () => {
    srv = await startOpenAiServer({ apiKey: 'sk-upstream-2' });
  });
  after(() => srv.close());

  /** A client whose response bytes are also fed, as they arrive, to `asm`. */
  function client(asm?: CompletionAssembler, apiKey = 'sk-upstream-2'): OpenAI {
    const tee = async (input: any, init?: any) => {
      const res = await fetch(input, init);
      if (!asm || !res.body) return res;
      const body = res.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(c, ctl) {
            asm.push(Buffer.from(c));
            ctl.enqueue(c);
          },
          flush() {
            asm.end();
          },
        }),
      );
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    };
    return new OpenAI({ apiKey, baseURL: srv.baseURL, maxRetries: 0, timeout: 20_000, fetch: tee as any });
  }

  test('chat stream: the first token reaches the client before the server sends the last', async () => {
    const asm = new CompletionAssembler('chat', { stream: true });
    const gate = srv.gate();
    const stream = await client(asm).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'one two three four five' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let sawFirst = false;
    for await (const c of stream) {
      const d = c.choices[0]?.delta?.content ?? '';
      text += d;
      if (c.usage) usage = c.usage;
      if (d && !sawFirst) {
        sawFirst = true;
        assert.equal(text, 'You');
        assert.equal(gate.sent, 1, 'the server has sent one word');
        assert.ok(gate.total > 1, 'and holds the rest');
        gate.release();
      }
    }
    assert.ok(sawFirst);
    assert.equal(text, 'You said: one two three four five');
    assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 });
    assert.deepEqual(asm.result(), {
      model: 'gpt-4o-mini',
      completion: text,
      truncated: false,
      usage: { promptTokens: 5, completionTokens: 7, totalTokens: 12 },
      finishReason: 'stop',
      skipped: 0,
    });
    const seen = srv.requests.at(-1)!;
    assert.equal(seen.headers.authorization, 'Bearer sk-upstream-2');
    assert.equal(seen.body.stream, true);
  });

  test('chat, not streamed: max_completion_tokens is honoured', async () => {
    const asm = new CompletionAssembler('chat', { stream: false });
    const r = await client(asm).chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'a b c d' }], max_completion_tokens: 3 });
    assert.equal(r.choices[0]!.message.content, 'You said: a');
    assert.equal(r.choices[0]!.finish_reason, 'length');
    assert.equal(asm.result().completion, 'You said: a');
    assert.equal(asm.result().finishReason, 'length');
  });

  test('responses stream: the SDK accumulates the events into a final response', async () => {
    const asm = new CompletionAssembler('responses', { stream: true });
    const gate = srv.gate();
    const stream = client(asm).responses.stream({ model: 'gpt-4.1', instructions: 'be brief', input: [{ role: 'user', content: 'hello there' }] });
    let deltas = '';
    for await (const e of stream) {
      if (e.type === 'response.output_text.delta') {
        if (!deltas) {
          assert.equal(gate.sent, 1);
          gate.release();
        }
        deltas += e.delta;
      }
    }
    const final = await stream.finalResponse();
    assert.equal(deltas, 'You said: hello there');
    assert.equal(final.output_text, 'You said: hello there');
    assert.equal(final.status, 'completed');
    assert.equal(final.usage?.total_tokens, 8);
    assert.deepEqual(asm.result(), {
      model: 'gpt-4.1',
      completion: 'You said: hello there',
      truncated: false,
      usage: { promptTokens: 4, completionTokens: 4, totalTokens: 8 },
      finishReason: 'completed',
      skipped: 0,
    });
  });

  test('responses via create({ stream: true }) and not streamed', async () => {
    const events: string[] = [];
    for await (const e of await client().responses.create({ model: 'm', input: 'x y', stream: true, max_output_tokens: 2 })) events.push(e.type);
    assert.deepEqual(events.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
    assert.equal(events.at(-1), 'response.incomplete');
    const asm = new CompletionAssembler('responses', { stream: false });
    const r = await client(asm).responses.create({ model: 'm', input: 'plain input' });
    assert.equal(r.output_text, 'You said: plain input');
    assert.equal(asm.result().completion, 'You said: plain input');
    assert.equal(asm.result().usage?.promptTokens, 2);
  });

  test('embeddings: the client’s default base64 and explicit floats decode to the same vectors', async () => {
    const asm = new CompletionAssembler('embeddings', { stream: false });
    const r = await client(asm).embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta gamma'] });
    assert.equal(srv.requests.at(-1)!.body.encoding_format, 'base64', 'the client asked for base64');
    assert.deepEqual(r.data.map((d) => d.embedding), [embeddingFor('alpha', 8), embeddingFor('beta gamma', 8)]);
    assert.deepEqual(asm.result(), { model: 'text-embedding-3-small', completion: '', truncated: false, usage: { promptTokens: 3, completionTokens: 0, totalTokens: 3 }, vectors: 2, skipped: 0 });
    const f = await client().embeddings.create({ model: 'm', input: 'alpha', encoding_format: 'float', dimensions: 20 });
    assert.deepEqual(f.data[0]!.embedding, embeddingFor('alpha', 20));
  });

  test('a wrong key: 401 AuthenticationError, recorded with the key it carried', async () => {
    await assert.rejects(client(undefined, 'gh_caller_key').chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), (e: any) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
    assert.equal(srv.requests.at(-1)!.headers.authorization, 'Bearer gh_caller_key');
  });
});
