// The usage-only chunk the gateway asked for is dropped on the way to the client; nothing else is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseUsageFilter } from '../../src/protocols/http/sse-usage-filter.ts';

async function run(chunks: Buffer[]): Promise<string> {
  const f = new SseUsageFilter();
  const out: Buffer[] = [];
  f.on('data', (b: Buffer) => out.push(b));
  const done = new Promise((r) => f.once('end', r));
  for (const c of chunks) f.write(c);
  f.end();
  await done;
  return Buffer.concat(out).toString();
}

const delta = (t: string) => `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"${t}"}}]}\n\n`;
const usage = 'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n';

test('drops only the usage-only event, at every split position; LF and CRLF', async () => {
  for (const eol of ['\n', '\r\n']) {
    const conv = (s: string) => s.replace(/\n/g, eol);
    const whole = conv(delta('Hel') + delta('lo') + usage + 'data: [DONE]\n\n');
    const expected = conv(delta('Hel') + delta('lo') + 'data: [DONE]\n\n');
    const b = Buffer.from(whole);
    for (let cut = 0; cut <= b.length; cut++) assert.equal(await run([b.subarray(0, cut), b.subarray(cut)]), expected, `cut at ${cut}`);
  }
});

test('everything else passes unchanged: a usage with choices, unparsable data, comments, a huge event', async () => {
  const withChoices = 'data: {"choices":[{"delta":{}}],"usage":{"total_tokens":5}}\n\n';
  const odd = 'data: {"choices":[],"usage":\n\n: keep-alive\n\n';
  const big = `data: {"choices":[],"usage":{"x":"${'a'.repeat(300 * 1024)}"}}\n\n`;
  const text = withChoices + odd + big + usage;
  const out = await run([Buffer.from(text)]);
  assert.equal(out, withChoices + odd + big);
});
