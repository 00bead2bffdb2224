// Requests to `type: llm` connections (OpenAI-compatible endpoints): which endpoint a path is,
// and what the gateway does to a request body before it reaches the model — model allowlist,
// max-tokens limit, masking of every text the model would read — plus a readable, masked
// transcript of the prompt for the journal.
//
// The caller buffers the request body (at most LLM_MAX_BODY bytes; the body is JSON and small
// next to what the model sends back) and forwards `body` from the result, never the original:
// the forwarded bytes are always re-serialized from the parsed object, so the upstream cannot
// read anything the gateway did not (e.g. a duplicate "model" key that another parser takes
// first instead of last).
import type { Counts } from '../../mask/counts.ts';
import { globMatch } from '../../util/glob.ts';

export type LlmEndpoint = 'chat' | 'responses' | 'embeddings';

/** The most request-body bytes the caller should buffer; inspectLlmRequest refuses more. */
export const LLM_MAX_BODY = 4 * 1024 * 1024;
/** JSON nesting the gateway accepts: deeper bodies are refused (JSON.stringify would overflow the stack). */
export const LLM_MAX_DEPTH = 128;
/** Characters of prompt transcript kept for the journal by default. */
export const LLM_PROMPT_CHARS = 16 * 1024;
const MAX_MODEL_NAME = 256;
const MAX_ROLE = 32;

// Both with and without the /v1 prefix: a connection's base URL may or may not end in /v1
// (`https://api.openai.com` or `https://api.openai.com/v1`). Nothing else is an LLM call:
// GET /v1/models, /v1/responses/{id}, /v1/files … return null and are the caller's to decide.
const ENDPOINTS = new Map<string, LlmEndpoint>([
  ['/v1/chat/completions', 'chat'],
  ['/chat/completions', 'chat'],
  ['/v1/responses', 'responses'],
  ['/responses', 'responses'],
  ['/v1/embeddings', 'embeddings'],
  ['/embeddings', 'embeddings'],
]);

/**
 * The LLM endpoint a request path (after the connection's base; a query string is ignored)
 * calls: `/v1/chat/completions` or `/chat/completions` → 'chat', `/v1/responses` or
 * `/responses` → 'responses', `/v1/embeddings` or `/embeddings` → 'embeddings', each also with
 * one trailing '/'. Anything else → null. Case-sensitive, as OpenAI's routes are.
 */
export function llmEndpoint(path: string): LlmEndpoint | null {
  let p = path;
  const q = p.indexOf('?');
  if (q >= 0) p = p.slice(0, q);
  if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  return ENDPOINTS.get(p) ?? null;
}

export type Mask = (text: string, counts: Counts) => string;

export interface InspectOptions {
  /** model-name globs (`*`, `?`; case-sensitive); absent → any model */
  models?: readonly string[];
  /** the most output tokens one request may ask for; also set on requests that ask for none */
  maxTokensPerRequest?: number;
  /**
   * Masks what the model receives: every text in the forwarded body goes through it, and the
   * transcript is built from its output.
   */
  maskPrompt?: Mask;
  /**
   * Masks only the journal's transcript, for connections that send prompts unmasked. Ignored
   * when maskPrompt is given (the transcript is then already masked).
   */
  maskTranscript?: Mask;
  /** receives the masking counts: of the forwarded body with maskPrompt, else of the transcript */
  counts: Counts;
  /** characters of transcript kept (default LLM_PROMPT_CHARS) */
  maxPromptChars?: number;
}

export interface LlmRequest {
  refused: false;
  endpoint: LlmEndpoint;
  model: string;
  /** the response will be SSE (always false for embeddings) */
  stream: boolean;
  /**
   * The output-token cap the forwarded body carries: the smallest the client asked for, or
   * maxTokensPerRequest when it asked for none; null when there is no cap (and for embeddings).
   * Use it for the daily budget check (src/store/llm-usage.ts).
   */
  maxTokens: number | null;
  /** what the client asked for itself (smallest of max_tokens / max_completion_tokens / max_output_tokens), or null */
  requestedMaxTokens: number | null;
  /** readable transcript, e.g. "system: …\nuser: …", bounded by maxPromptChars; masked as the options say */
  prompt: string;
  promptTruncated: boolean;
  /** the JSON to forward upstream (masked, limits applied); set content-length from it */
  body: Buffer;
  /** embeddings: how many inputs (= vectors expected back); 0 otherwise */
  inputs: number;
  /**
   * chat streams: the gateway turned on stream_options.include_usage, so the upstream sends a
   * final chunk with `"choices": []` and the usage the client did not ask for.
   */
  includeUsageAdded: boolean;
}

export type LlmRefusalCode = 'model_not_allowed' | 'max_tokens_exceeded' | 'token_budget_exceeded' | 'request_too_large' | 'bad_request';

export interface LlmRefusal {
  refused: true;
  status: 400 | 403 | 413 | 429;
  code: LlmRefusalCode;
  message: string;
  hint: string;
  /** the request field at fault, OpenAI's `param` */
  param: string | null;
  /** 429 for the daily budget: seconds until the budget resets (next UTC midnight) */
  retryAfterSeconds?: number;
}

function refuse(status: LlmRefusal['status'], code: LlmRefusalCode, message: string, hint: string, param: string | null = null): LlmRefusal {
  return { refused: true, status, code, message, hint, param };
}

function badRequest(message: string, param: string | null, hint = 'send the request as the OpenAI API documents it'): LlmRefusal {
  return refuse(400, 'bad_request', message, hint, param);
}

/** The OpenAI-style error body for a refusal, as OpenAI's clients parse and show it. */
export function openAiError(r: LlmRefusal): { error: { message: string; type: string; code: string; param: string | null } } {
  const type = r.status === 403 ? 'permission_error' : r.status === 429 ? 'rate_limit_error' : 'invalid_request_error';
  return { error: { message: `${r.message}; ${r.hint}`, type, code: r.code, param: r.param } };
}

/**
 * Headers to send with a refusal. OpenAI's clients retry 429 (and others) by default;
 * `x-should-retry: false` tells them not to, since repeating the request cannot succeed.
 */
export function refusalHeaders(r: LlmRefusal): Record<string, string> {
  const h: Record<string, string> = { 'x-should-retry': 'false' };
  if (r.retryAfterSeconds !== undefined) h['retry-after'] = String(r.retryAfterSeconds);
  return h;
}

/** The refusal for a request the daily budget cannot cover (see src/store/llm-usage.ts). */
export function dailyBudgetRefusal(used: number, requested: number, limit: number, now = new Date()): LlmRefusal {
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  const r = refuse(
    429,
    'token_budget_exceeded',
    `daily token limit reached: ${used} of ${limit} tokens used today (UTC)${requested > 0 ? `, this request may use ${requested} more` : ''}`,
    requested > 0 && used < limit ? `ask for fewer tokens (max_completion_tokens / max_output_tokens ≤ ${limit - used}) or wait until 00:00 UTC` : 'wait until 00:00 UTC, or ask an administrator to raise the limit',
  );
  r.retryAfterSeconds = Math.max(1, Math.ceil((midnight - now.getTime()) / 1000));
  return r;
}

/** Nesting depth of a JSON text, counted outside strings; stops as soon as it passes `max`. */
function depthExceeds(body: Buffer, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const b = body[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: skip the escaped byte
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) return true;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return false;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The prompt as the journal shows it: one "role: text" entry per line group, bounded. */
class Transcript {
  private parts: string[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly cap: number) {}
  get full(): boolean {
    return this.size >= this.cap;
  }
  add(role: string, text: string): void {
    if (this.full) {
      if (text) this.truncated = true;
      return;
    }
    const entry = `${this.parts.length ? '\n' : ''}${role}: ${text}`;
    const room = this.cap - this.size;
    if (entry.length > room) {
      this.parts.push(entry.slice(0, room));
      this.size = this.cap;
      this.truncated = true;
    } else {
      this.parts.push(entry);
      this.size += entry.length;
    }
  }
  text(): string {
    return this.parts.join('') + (this.truncated ? ' …[truncated]' : '');
  }
}

/** Masks the texts the model reads and records them in the transcript. */
class Walker {
  readonly transcript: Transcript;
  constructor(private readonly opts: InspectOptions) {
    this.transcript = new Transcript(opts.maxPromptChars ?? LLM_PROMPT_CHARS);
  }

  /** The text to forward (masked with maskPrompt), noting its journal form in `out`. */
  text(t: string, out: string[]): string {
    const { maskPrompt, maskTranscript, counts } = this.opts;
    if (maskPrompt) {
      const m = maskPrompt(t, counts);
      out.push(m);
      return m;
    }
    // Masked whole, then cut by the transcript: cutting first could leave half a secret unmasked.
    if (!this.transcript.full) out.push(maskTranscript ? maskTranscript(t, counts) : t);
    return t;
  }

  /** A string field of `o`, masked in place. */
  field(o: Json, key: string, out: string[]): void {
    const v = o[key];
    if (typeof v === 'string') o[key] = this.text(v, out);
  }

  /** Content parts (`[{type:'text', text}, {type:'image_url', …}]`): every `text`/`refusal` masked. */
  parts(arr: unknown[], out: string[]): void {
    for (let i = 0; i < arr.length; i++) {
      const p = arr[i];
      // Not a part OpenAI accepts, but some compatible servers read bare strings: mask them too.
      if (typeof p === 'string') arr[i] = this.text(p, out);
      if (!isObject(p)) continue;
      if (typeof p.text === 'string') this.field(p, 'text', out);
      else if (typeof p.refusal === 'string') this.field(p, 'refusal', out);
      else if (typeof p.type === 'string') out.push(`[${p.type.slice(0, MAX_ROLE)}]`);
    }
  }

  /**
   * A string-or-parts value at o[key]. False when it is something else (an object, a number):
   * a lenient upstream might read text in it that was never masked, so the caller refuses it.
   */
  content(o: Json, key: string, out: string[]): boolean {
    const v = o[key];
    if (typeof v === 'string') o[key] = this.text(v, out);
    else if (Array.isArray(v)) this.parts(v, out);
    else return v === undefined || v === null;
    return true;
  }

  add(role: unknown, out: string[]): void {
    this.transcript.add(typeof role === 'string' && role ? role.slice(0, MAX_ROLE) : 'input', out.join(' '));
  }
}

/** A max-tokens field: absent/null → undefined; else a non-negative integer or a refusal. */
function tokenField(o: Json, key: string): number | undefined | LlmRefusal {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return badRequest(`"${key}" must be a non-negative integer`, key);
  return v;
}

/**
 * Checks and rewrites one request body for `endpoint` (see InspectOptions for what it does).
 * A body that is not a JSON object of the endpoint's shape, larger than LLM_MAX_BODY or nested
 * deeper than LLM_MAX_DEPTH is refused (400/413) before any of it is forwarded.
 */
export function inspectLlmRequest(endpoint: LlmEndpoint, body: Buffer, opts: InspectOptions): LlmRequest | LlmRefusal {
  if (body.length > LLM_MAX_BODY) {
    return refuse(413, 'request_too_large', `the request body is ${body.length} bytes, more than the gateway accepts (${LLM_MAX_BODY})`, 'send a shorter prompt or fewer inputs');
  }
  if (depthExceeds(body, LLM_MAX_DEPTH)) return badRequest(`the request body nests JSON deeper than ${LLM_MAX_DEPTH} levels`, null);
  let req: unknown;
  try {
    req = JSON.parse(body.toString('utf8'));
  } catch (e) {
    return badRequest(`the request body is not valid JSON (${(e as Error).message.slice(0, 200)})`, null, 'send a JSON object with content-type: application/json');
  }
  if (!isObject(req)) return badRequest('the request body must be a JSON object', null);

  const model = req.model;
  if (typeof model !== 'string' || model.length === 0) return badRequest('"model" is required and must be a string', 'model');
  if (model.length > MAX_MODEL_NAME) return badRequest(`"model" is longer than ${MAX_MODEL_NAME} characters`, 'model');
  if (opts.models && !opts.models.some((g) => globMatch(g, model))) {
    return refuse(403, 'model_not_allowed', `model "${model}" is not allowed on this connection`, `use one of: ${opts.models.join(', ')}`, 'model');
  }

  let stream = false;
  if (endpoint !== 'embeddings' && req.stream !== undefined && req.stream !== null) {
    if (typeof req.stream !== 'boolean') return badRequest('"stream" must be true or false', 'stream');
    stream = req.stream;
  }

  // Output-token limits: every field the endpoint honours is checked; the cap is the smallest.
  const fields = endpoint === 'chat' ? ['max_tokens', 'max_completion_tokens'] : endpoint === 'responses' ? ['max_output_tokens'] : [];
  let requested: number | null = null;
  for (const f of fields) {
    const v = tokenField(req, f);
    if (typeof v === 'object') return v;
    if (v === undefined) continue;
    const limit = opts.maxTokensPerRequest;
    if (limit !== undefined && v > limit) {
      return refuse(400, 'max_tokens_exceeded', `"${f}" is ${v}, more than this connection allows per request (${limit})`, `ask for at most ${limit} tokens, or leave "${f}" out and the gateway sets it`, f);
    }
    requested = requested === null ? v : Math.min(requested, v);
  }
  let maxTokens = requested;
  if (requested === null && opts.maxTokensPerRequest !== undefined && endpoint !== 'embeddings') {
    req[endpoint === 'chat' ? 'max_completion_tokens' : 'max_output_tokens'] = opts.maxTokensPerRequest;
    maxTokens = opts.maxTokensPerRequest;
  }

  let includeUsageAdded = false;
  if (endpoint === 'chat' && stream) {
    const so = req.stream_options;
    if (so !== undefined && so !== null && !isObject(so)) return badRequest('"stream_options" must be an object', 'stream_options');
    includeUsageAdded = !(isObject(so) && so.include_usage === true);
    // Without it a stream carries no usage, and the daily budget could not count it.
    req.stream_options = { ...(isObject(so) ? so : {}), include_usage: true };
  }

  const w = new Walker(opts);
  let inputs = 0;
  const shape = endpoint === 'chat' ? walkChat(req, w) : endpoint === 'responses' ? walkResponses(req, w) : walkEmbeddings(req, w, opts);
  if (typeof shape === 'object') return shape;
  if (endpoint === 'embeddings') inputs = shape;

  return {
    refused: false,
    endpoint,
    model,
    stream,
    maxTokens,
    requestedMaxTokens: requested,
    prompt: w.transcript.text(),
    promptTruncated: w.transcript.truncated,
    body: Buffer.from(JSON.stringify(req), 'utf8'),
    inputs,
    includeUsageAdded,
  };
}

/** Chat: every message's content (string or parts), refusal, tool-call arguments; predicted output. */
function walkChat(req: Json, w: Walker): number | LlmRefusal {
  const messages = req.messages;
  if (!Array.isArray(messages)) return badRequest('"messages" must be an array of messages', 'messages');
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (!isObject(m)) return badRequest(`"messages[${i}]" must be an object`, `messages[${i}]`);
    const out: string[] = [];
    if (!w.content(m, 'content', out)) return badRequest(`"messages[${i}].content" must be a string or an array of content parts`, `messages[${i}].content`);
    w.field(m, 'refusal', out);
    if (Array.isArray(m.tool_calls)) {
      for (const tc of m.tool_calls) {
        if (!isObject(tc) || !isObject(tc.function)) continue;
        const name = typeof tc.function.name === 'string' ? tc.function.name.slice(0, 128) : '?';
        const args: string[] = [];
        w.field(tc.function, 'arguments', args);
        out.push(`→ ${name}(${args.join('')})`);
      }
    }
    if (isObject(m.function_call)) w.field(m.function_call, 'arguments', out); // legacy functions API
    w.add(m.role, out);
  }
  if (isObject(req.prediction)) {
    const out: string[] = [];
    w.content(req.prediction, 'content', out);
    if (out.length) w.add('prediction', out);
  }
  return 0;
}

/** Responses: instructions, input (string or items: messages, tool calls and their outputs, reasoning summaries), prompt variables. */
function walkResponses(req: Json, w: Walker): number | LlmRefusal {
  if (req.instructions !== undefined && req.instructions !== null) {
    if (typeof req.instructions !== 'string') return badRequest('"instructions" must be a string', 'instructions');
    const out: string[] = [];
    w.field(req, 'instructions', out);
    w.add('instructions', out);
  }
  const input = req.input;
  if (typeof input === 'string') {
    const out: string[] = [];
    w.field(req, 'input', out);
    w.add('user', out);
  } else if (Array.isArray(input)) {
    for (let i = 0; i < input.length; i++) {
      const item = input[i];
      if (!isObject(item)) return badRequest(`"input[${i}]" must be an object`, `input[${i}]`);
      const out: string[] = [];
      let role: unknown = item.role;
      // Every string the model reads back, whatever the item type: message content, tool-call
      // arguments and outputs (function_call(_output), custom_tool_call(_output), …), summaries.
      if (!w.content(item, 'content', out)) return badRequest(`"input[${i}].content" must be a string or an array of content parts`, `input[${i}].content`);
      w.content(item, 'output', out); // may also be an object (a computer_call_output screenshot)
      w.field(item, 'arguments', out);
      w.field(item, 'input', out);
      w.field(item, 'text', out);
      if (Array.isArray(item.summary)) w.parts(item.summary, out);
      if (typeof item.type === 'string' && item.type !== 'message') {
        const name = typeof item.name === 'string' ? ` ${item.name.slice(0, 128)}` : '';
        role = `${item.type.slice(0, MAX_ROLE)}${name}`;
      }
      w.add(role, out);
    }
  } else if (input !== undefined && input !== null) {
    return badRequest('"input" must be a string or an array of input items', 'input');
  }
  // A stored prompt's variables are substituted into text the model reads.
  if (isObject(req.prompt) && isObject(req.prompt.variables)) {
    const vars = req.prompt.variables;
    for (const k of Object.keys(vars)) {
      const out: string[] = [];
      const v = vars[k];
      if (typeof v === 'string') w.field(vars, k, out);
      else if (isObject(v)) w.parts([v], out);
      if (out.length) w.add(`variable ${k.slice(0, MAX_ROLE)}`, out);
    }
  }
  return 0;
}

/** Embeddings: input as a string or strings. Token-id input cannot be masked, so it is refused when masking is on. */
function walkEmbeddings(req: Json, w: Walker, opts: InspectOptions): number | LlmRefusal {
  const input = req.input;
  if (typeof input === 'string') {
    const out: string[] = [];
    w.field(req, 'input', out);
    w.add('input', out);
    return 1;
  }
  if (!Array.isArray(input) || input.length === 0) return badRequest('"input" must be a string or a non-empty array', 'input');
  const tokens = input.every((v) => typeof v === 'number' || (Array.isArray(v) && v.every((x) => typeof x === 'number')));
  if (tokens) {
    if (opts.maskPrompt) return badRequest('"input" is token ids, which the gateway cannot mask', 'input', 'send the input as text');
    const arrays = Array.isArray(input[0]);
    w.transcript.add('input', arrays ? `[${input.length} token arrays]` : `[${input.length} tokens]`);
    return arrays ? input.length : 1;
  }
  for (let i = 0; i < input.length; i++) {
    if (typeof input[i] !== 'string') return badRequest(`"input[${i}]" must be a string`, `input[${i}]`);
    const out: string[] = [];
    input[i] = w.text(input[i] as string, out);
    w.add(input.length === 1 ? 'input' : `input[${i}]`, out);
  }
  return input.length;
}
