/**
 * A local OpenAI-compatible server for tests (plain HTTP on 127.0.0.1): POST /v1/chat/completions,
 * /v1/responses (each streamed or not) and /v1/embeddings, with the same routes also without /v1.
 * Deterministic: the completion is "You said: <the last user text>", streamed one word per SSE
 * event; token counts are word counts; an embedding is a function of its input. It records
 * every request so a test can check what the model received, and answers a wrong key with
 * OpenAI's 401.
 *
 *   const srv = await startOpenAiServer({ apiKey: 'sk-upstream' });
 *   const gate = srv.gate();          // the next stream sends its first word, then waits
 *   … await gate.firstSent; read the first token; assert the rest is not sent yet …
 *   gate.release();
 *   await srv.close();
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** the parsed JSON body; null when there was none or it did not parse */
  body: any;
  raw: string;
}

export interface StreamGate {
  /** resolves once the first word of the gated stream has been written */
  firstSent: Promise<void>;
  /** lets the gated stream send the rest */
  release(): void;
  /** words of the gated stream written so far */
  readonly sent: number;
  /** words the gated stream will send in all (known once it started) */
  readonly total: number;
}

export interface OpenAiServer {
  /** http://127.0.0.1:<port> */
  url: string;
  /** url + '/v1', for OpenAI clients' baseURL */
  baseURL: string;
  port: number;
  requests: RecordedRequest[];
  /** holds the next streamed response after its first word until release() (or 10 s) */
  gate(): StreamGate;
  close(): Promise<void>;
}

export interface OpenAiServerOptions {
  /** the key clients must send as `Authorization: Bearer <key>` */
  apiKey: string;
  /** embedding dimensions when the request does not say (default 8) */
  dimensions?: number;
}

const MAX_BODY = 8 * 1024 * 1024;
const GATE_TIMEOUT_MS = 10_000;

/** What the deterministic model answers to a prompt. */
export function completionFor(lastUserText: string): string {
  return `You said: ${lastUserText}`;
}

/** The fake tokenizer: one token per whitespace-separated word. */
export function countTokens(text: string): number {
  return text.split(/\s+/).filter(Boolean).length;
}

/** The fake embedding of a text: `dims` floats in [-1, 1) from its SHA-256 (float32-exact). */
export function embeddingFor(text: string, dims: number): number[] {
  const out: number[] = [];
  for (let i = 0; out.length < dims; i++) {
    const h = createHash('sha256').update(`${i}:${text}`).digest();
    for (let j = 0; j + 1 < h.length && out.length < dims; j += 2) out.push((h.readUInt16BE(j) - 32768) / 32768);
  }
  return out;
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (p && typeof p.text === 'string' ? p.text : '')).filter(Boolean).join(' ');
  return '';
}

/** All the text the model read, for the prompt token count. */
function promptTexts(body: any, kind: 'chat' | 'responses'): string[] {
  if (kind === 'chat') return (Array.isArray(body.messages) ? body.messages : []).map((m: any) => textOf(m?.content));
  const texts = typeof body.instructions === 'string' ? [body.instructions] : [];
  if (typeof body.input === 'string') texts.push(body.input);
  else if (Array.isArray(body.input)) for (const it of body.input) texts.push(textOf(it?.content ?? it?.output));
  return texts;
}

function lastUserText(body: any, kind: 'chat' | 'responses'): string {
  if (kind === 'chat') {
    const msgs = Array.isArray(body.messages) ? body.messages : [];
    for (let i = msgs.length - 1; i >= 0; i--) if (msgs[i]?.role === 'user') return textOf(msgs[i].content);
    return '';
  }
  if (typeof body.input === 'string') return body.input;
  const items = Array.isArray(body.input) ? body.input : [];
  for (let i = items.length - 1; i >= 0; i--) if (items[i]?.role === 'user') return textOf(items[i].content);
  return '';
}

/** The words of the answer, each after its space (as tokenizers split); cut at `max` words (finish: length). */
function answerWords(body: any, kind: 'chat' | 'responses', max: number | undefined): { words: string[]; cut: boolean } {
  const words = completionFor(lastUserText(body, kind)).split(' ').map((w, i) => (i > 0 ? ' ' + w : w));
  if (max !== undefined && words.length > max) return { words: words.slice(0, max), cut: true };
  return { words, cut: false };
}

function maxOf(...vs: unknown[]): number | undefined {
  const ns = vs.filter((v): v is number => typeof v === 'number');
  return ns.length ? Math.min(...ns) : undefined;
}

function sendError(res: http.ServerResponse, status: number, message: string, type: string, code: string | null, param: string | null = null): void {
  const text = JSON.stringify({ error: { message, type, param, code } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendJson(res: http.ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startOpenAiServer(opts: OpenAiServerOptions): Promise<OpenAiServer> {
  const requests: RecordedRequest[] = [];
  let pendingGate: (StreamGate & { opened: Promise<void>; started(total: number): void; wrote(): void }) | null = null;
  let seq = 0;
  const id = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, '0')}`;

  function takeGate() {
    const g = pendingGate;
    pendingGate = null;
    return g;
  }

  /** Writes the words as SSE, one event per word, pausing after the first when gated. */
  async function streamWords(res: http.ServerResponse, words: string[], event: (word: string) => string): Promise<void> {
    const gate = takeGate();
    gate?.started(words.length);
    for (let i = 0; i < words.length; i++) {
      if (res.destroyed) return;
      res.write(event(words[i]!));
      gate?.wrote();
      if (i === 0 && gate) await gate.opened;
    }
  }

  async function chat(req: RecordedRequest, res: http.ServerResponse): Promise<void> {
    const b = req.body;
    if (!Array.isArray(b.messages)) return sendError(res, 400, "Missing required parameter: 'messages'.", 'invalid_request_error', 'missing_required_parameter', 'messages');
    const model = String(b.model);
    const { words, cut } = answerWords(b, 'chat', maxOf(b.max_tokens, b.max_completion_tokens));
    const usage = {
      prompt_tokens: countTokens(promptTexts(b, 'chat').join(' ')),
      completion_tokens: words.length,
      total_tokens: 0,
    };
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    const finish = cut ? 'length' : 'stop';
    const cid = id('chatcmpl');
    const created = Math.floor(Date.now() / 1000);
    if (!b.stream) {
      return sendJson(res, {
        id: cid,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: words.join(''), refusal: null }, logprobs: null, finish_reason: finish }],
        usage,
      });
    }
    const withUsage = b.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({ id: cid, object: 'chat.completion.chunk', created, model, choices, ...(withUsage ? { usage: null } : {}), ...extra })}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]));
    await streamWords(res, words, (w) => chunk([{ index: 0, delta: { content: w }, finish_reason: null }]));
    if (res.destroyed) return;
    res.write(chunk([{ index: 0, delta: {}, finish_reason: finish }]));
    if (withUsage) res.write(chunk([], { usage }));
    res.end('data: [DONE]\n\n');
  }

  async function responses(req: RecordedRequest, res: http.ServerResponse): Promise<void> {
    const b = req.body;
    if (b.input === undefined) return sendError(res, 400, "Missing required parameter: 'input'.", 'invalid_request_error', 'missing_required_parameter', 'input');
    const model = String(b.model);
    const { words, cut } = answerWords(b, 'responses', maxOf(b.max_output_tokens));
    const text = words.join('');
    const inputTokens = countTokens(promptTexts(b, 'responses').join(' '));
    const usage = {
      input_tokens: inputTokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: words.length,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: inputTokens + words.length,
    };
    const rid = id('resp');
    const mid = id('msg');
    const base = {
      id: rid,
      object: 'response',
      created_at: Math.floor(Date.now() / 1000),
      status: 'in_progress',
      error: null,
      incomplete_details: null,
      instructions: b.instructions ?? null,
      max_output_tokens: b.max_output_tokens ?? null,
      model,
      output: [] as unknown[],
      parallel_tool_calls: true,
      previous_response_id: null,
      temperature: 1,
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      usage: null as unknown,
      metadata: {},
    };
    const part = (t: string) => ({ type: 'output_text', text: t, annotations: [] });
    const message = (t: string, status: string) => ({ id: mid, type: 'message', status, role: 'assistant', content: [part(t)] });
    const final = {
      ...base,
      status: cut ? 'incomplete' : 'completed',
      incomplete_details: cut ? { reason: 'max_output_tokens' } : null,
      output: [message(text, cut ? 'incomplete' : 'completed')],
      usage,
    };
    if (!b.stream) return sendJson(res, final);

    let n = 0;
    const ev = (type: string, data: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: n++, ...data })}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(ev('response.created', { response: base }));
    res.write(ev('response.in_progress', { response: base }));
    res.write(ev('response.output_item.added', { output_index: 0, item: { id: mid, type: 'message', status: 'in_progress', role: 'assistant', content: [] } }));
    res.write(ev('response.content_part.added', { item_id: mid, output_index: 0, content_index: 0, part: part('') }));
    await streamWords(res, words, (w) => ev('response.output_text.delta', { item_id: mid, output_index: 0, content_index: 0, delta: w, logprobs: [] }));
    if (res.destroyed) return;
    res.write(ev('response.output_text.done', { item_id: mid, output_index: 0, content_index: 0, text, logprobs: [] }));
    res.write(ev('response.content_part.done', { item_id: mid, output_index: 0, content_index: 0, part: part(text) }));
    res.write(ev('response.output_item.done', { output_index: 0, item: message(text, 'completed') }));
    res.end(ev(cut ? 'response.incomplete' : 'response.completed', { response: final }));
  }

  function embeddings(req: RecordedRequest, res: http.ServerResponse): void {
    const b = req.body;
    const inputs: unknown[] = typeof b.input === 'string' ? [b.input] : Array.isArray(b.input) ? b.input : [];
    if (inputs.length === 0 || !inputs.every((s) => typeof s === 'string')) {
      return sendError(res, 400, "'input' must be a string or an array of strings.", 'invalid_request_error', null, 'input');
    }
    const dims = typeof b.dimensions === 'number' ? b.dimensions : (opts.dimensions ?? 8);
    const base64 = b.encoding_format === 'base64';
    const data = (inputs as string[]).map((text, index) => {
      const v = embeddingFor(text, dims);
      return { object: 'embedding', index, embedding: base64 ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v };
    });
    const tokens = countTokens((inputs as string[]).join(' '));
    sendJson(res, { object: 'list', data, model: String(b.model), usage: { prompt_tokens: tokens, total_tokens: tokens } });
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      let body: any = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = null;
      }
      const rec: RecordedRequest = { method: req.method ?? '', path: url.pathname, headers: req.headers, body, raw };
      requests.push(rec);
      if (req.headers.authorization !== `Bearer ${opts.apiKey}`) {
        return sendError(res, 401, 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.', 'invalid_request_error', 'invalid_api_key');
      }
      if (size > MAX_BODY) return sendError(res, 413, 'Request too large.', 'invalid_request_error', null);
      const path = url.pathname.replace(/^\/v1(?=\/)/, '');
      const known = ['/chat/completions', '/responses', '/embeddings'];
      if (!known.includes(path)) return sendError(res, 404, `Invalid URL (${req.method} ${url.pathname})`, 'invalid_request_error', null);
      if (req.method !== 'POST') return sendError(res, 405, `Method ${req.method} not allowed.`, 'invalid_request_error', null);
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        return sendError(res, 400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null);
      }
      if (typeof body.model !== 'string') return sendError(res, 400, 'you must provide a model parameter', 'invalid_request_error', null, 'model');
      const run = path === '/chat/completions' ? chat(rec, res) : path === '/responses' ? responses(rec, res) : (embeddings(rec, res), Promise.resolve());
      run.catch(() => res.destroy());
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const gates = new Set<StreamGate>();

  return {
    url,
    baseURL: `${url}/v1`,
    port,
    requests,
    gate(): StreamGate {
      let release!: () => void;
      let firstSent!: () => void;
      const opened = new Promise<void>((r) => (release = r));
      const first = new Promise<void>((r) => (firstSent = r));
      // Bounded: a test that forgets to release does not hang the server.
      const timer = setTimeout(() => release(), GATE_TIMEOUT_MS);
      timer.unref();
      const g = {
        firstSent: first,
        opened: opened.then(() => {
          clearTimeout(timer);
          gates.delete(g);
        }),
        sent: 0,
        total: 0,
        release: () => release(),
        started(total: number) {
          g.total = total;
        },
        wrote() {
          g.sent++;
          if (g.sent === 1) firstSent();
        },
      };
      gates.add(g);
      pendingGate = g;
      return g;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const g of gates) g.release(); // a stream still held ends with the connection
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
