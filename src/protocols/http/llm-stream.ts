// What an LLM endpoint answered, assembled for the journal from the response bytes as they pass:
// the completion text, tool calls, model, finish reason and token usage. The assembler only
// observes: the caller forwards every chunk unchanged and at once (streams pass token by token),
// and calls push() with the same chunk.
//
// SSE (stream: true): `data:` lines are parsed across chunk boundaries (LF, CRLF or CR line ends,
// multi-line data, `data: [DONE]`), as chat-completion chunks or Responses API events.
// JSON (stream: false, or a stream request the upstream answered with JSON, e.g. an error): the
// body is buffered up to maxBody and parsed at end().
//
// Memory is bounded whatever the upstream sends: a line (or JSON body) over its cap is not
// buffered; only its first bytes (to name it) and its last 64 KiB (where "usage" sits in OpenAI's
// serialisation) are kept, so a huge final event or embeddings body still yields the usage.
// The completion is kept up to maxChars characters, then `truncated` is set.
//
// The result is NOT masked: mask `completion` and `toolCalls` before they go to the journal.
// The bytes must be what the model sent: ask the upstream for `accept-encoding: identity`.
import type { LlmEndpoint } from './llm.ts';

export interface LlmUsage {
  /** prompt_tokens (chat, embeddings) or input_tokens (responses) */
  promptTokens: number;
  /** completion_tokens or output_tokens; 0 for embeddings */
  completionTokens: number;
  /** total_tokens, never less than prompt + completion */
  totalTokens: number;
}

export interface AssembledCompletion {
  model?: string;
  /** the completion text (all choices / output items, in order), at most maxChars */
  completion: string;
  /** the completion or the tool calls were cut at maxChars, or part of the response was too large to read */
  truncated: boolean;
  usage?: LlmUsage;
  /** chat: finish_reason; responses: incomplete_details.reason or the status */
  finishReason?: string;
  /** one `name(arguments)` per line */
  toolCalls?: string;
  /** an error the upstream reported in the body or the stream */
  error?: string;
  /** embeddings: how many vectors came back, when the body was small enough to count them */
  vectors?: number;
  /** SSE lines or JSON bodies over the cap, skipped */
  skipped: number;
}

export interface AssemblerOptions {
  /** the request asked for a stream; a response that starts with '{' is read as JSON anyway */
  stream: boolean;
  /** characters of completion (and, separately, of tool calls) kept; default 64 KiB */
  maxChars?: number;
  /** longest SSE line / event kept; default 1 MiB */
  maxLine?: number;
  /** largest JSON body kept; default 4 MiB */
  maxBody?: number;
}

const DEFAULT_MAX_CHARS = 64 * 1024;
const DEFAULT_MAX_LINE = 1024 * 1024;
const DEFAULT_MAX_BODY = 4 * 1024 * 1024;
const TAIL = 64 * 1024;
const HEAD = 512;
const MAX_CHOICES = 16;
const MAX_TOOL_CALLS = 64;
const MAX_NAME = 256;
const MAX_ERROR = 1000;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown, max: number): string | undefined => (typeof v === 'string' ? v.slice(0, max) : undefined);

function count(v: unknown): number | undefined {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return undefined;
  return Math.min(Math.floor(v), Number.MAX_SAFE_INTEGER);
}

/** Usage in either API's names; undefined when none of the counts is there. */
export function normalizeUsage(u: unknown): LlmUsage | undefined {
  if (!isObject(u)) return undefined;
  const p = count(u.prompt_tokens ?? u.input_tokens);
  const c = count(u.completion_tokens ?? u.output_tokens);
  const t = count(u.total_tokens);
  if (p === undefined && c === undefined && t === undefined) return undefined;
  const sum = Math.min((p ?? 0) + (c ?? 0), Number.MAX_SAFE_INTEGER);
  return { promptTokens: p ?? 0, completionTokens: c ?? 0, totalTokens: Math.max(t ?? 0, sum) };
}

/**
 * The last parseable `"usage": {…}` object in a piece of JSON text (the tail of a body or line
 * too large to keep). Looks at no more than a few candidates.
 */
export function salvageUsage(text: string): LlmUsage | undefined {
  let from = text.length;
  for (let tries = 0; tries < 4; tries++) {
    const at = text.lastIndexOf('"usage"', from);
    if (at < 0) return undefined;
    from = at - 1;
    let i = at + 7;
    while (i < text.length && (text[i] === ' ' || text[i] === ':' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
    if (text[i] !== '{') continue;
    const end = objectEnd(text, i);
    if (end < 0) continue;
    try {
      const u = normalizeUsage(JSON.parse(text.slice(i, end)));
      if (u) return u;
    } catch {
      // not a complete object after all; try an earlier one
    }
  }
  return undefined;
}

/** Index after the `}` closing the object that opens at `start`, or -1. */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++;
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) inString = true;
    else if (ch === 0x7b || ch === 0x5b) depth++;
    else if (ch === 0x7d || ch === 0x5d) {
      if (--depth === 0) return i + 1;
    }
  }
  return -1;
}

/** The last `n` bytes seen, for salvaging what sits at the end of something too large to keep. */
class Tail {
  private buf = Buffer.alloc(0);
  constructor(private readonly n: number) {}
  push(b: Buffer): void {
    if (b.length >= this.n) this.buf = Buffer.from(b.subarray(b.length - this.n));
    else {
      const keep = Math.min(this.buf.length, this.n - b.length);
      this.buf = Buffer.concat([this.buf.subarray(this.buf.length - keep), b]);
    }
  }
  text(): string {
    return this.buf.toString('utf8');
  }
  clear(): void {
    this.buf = Buffer.alloc(0);
  }
}

/** Bytes of something being collected up to a cap; past it, only a head and a tail. */
class Capped {
  private parts: Buffer[] = [];
  length = 0;
  over = false;
  head = '';
  readonly tail = new Tail(TAIL);
  constructor(private readonly cap: number) {}
  push(b: Buffer): void {
    if (b.length === 0) return;
    if (!this.over && this.length + b.length > this.cap) {
      this.over = true;
      const all = Buffer.concat(this.parts);
      this.head = all.subarray(0, HEAD).toString('utf8');
      this.tail.push(all);
      this.parts = [];
    }
    this.length += b.length;
    if (this.over) {
      if (this.head.length < HEAD && this.length - b.length < HEAD) this.head += b.subarray(0, HEAD).toString('utf8');
      this.tail.push(b);
    } else this.parts.push(Buffer.from(b)); // a copy: the caller may reuse its buffer
  }
  text(): string {
    return Buffer.concat(this.parts).toString('utf8');
  }
  reset(): void {
    this.parts = [];
    this.length = 0;
    this.over = false;
    this.head = '';
    this.tail.clear();
  }
}

interface ToolCall {
  name: string;
  args: string;
}

export class CompletionAssembler {
  private readonly maxChars: number;
  private readonly maxLine: number;
  private mode: 'sse' | 'json' | 'undecided';
  private ended = false;

  // SSE parsing state
  private line: Capped;
  private lastWasCR = false;
  private data: string[] = [];
  private dataLength = 0;
  private dataOver = false;
  private done = false;
  // JSON body
  private body: Capped;

  // What has been assembled
  private model?: string;
  private texts = new Map<number, string>();
  private textChars = 0;
  private tools = new Map<string, ToolCall>();
  private toolChars = 0;
  private truncated = false;
  private usage?: LlmUsage;
  private finishReason?: string;
  private error?: string;
  private vectors?: number;
  private skipped = 0;

  constructor(
    private readonly endpoint: LlmEndpoint,
    opts: AssemblerOptions,
  ) {
    this.maxChars = opts.maxChars ?? DEFAULT_MAX_CHARS;
    this.maxLine = opts.maxLine ?? DEFAULT_MAX_LINE;
    this.mode = opts.stream && endpoint !== 'embeddings' ? 'undecided' : 'json';
    this.line = new Capped(this.maxLine);
    this.body = new Capped(opts.maxBody ?? DEFAULT_MAX_BODY);
  }

  /** Observes one chunk of the response body (not modified, not retained beyond the caps). */
  push(chunk: Buffer): void {
    if (this.ended || chunk.length === 0) return;
    if (this.mode === 'undecided') {
      let i = 0;
      while (i < chunk.length && (chunk[i] === 0x20 || chunk[i] === 0x0a || chunk[i] === 0x0d || chunk[i] === 0x09)) i++;
      if (i < chunk.length) this.mode = chunk[i] === 0x7b ? 'json' : 'sse';
    }
    if (this.mode === 'json') this.body.push(chunk);
    else this.pushSse(chunk);
  }

  /** The response ended (or was cut off): whatever is pending is read. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.mode === 'json') this.endJson();
    else {
      if (this.line.length > 0 || this.line.over) this.endLine();
      this.dispatch();
    }
  }

  result(): AssembledCompletion {
    const r: AssembledCompletion = { completion: this.completionText(), truncated: this.truncated, skipped: this.skipped };
    if (this.model !== undefined) r.model = this.model;
    if (this.usage) r.usage = this.usage;
    if (this.finishReason !== undefined) r.finishReason = this.finishReason;
    if (this.tools.size) r.toolCalls = [...this.tools.values()].map((t) => `${t.name}(${t.args})`).join('\n');
    if (this.error !== undefined) r.error = this.error;
    if (this.vectors !== undefined) r.vectors = this.vectors;
    return r;
  }

  private completionText(): string {
    if (this.texts.size <= 1) return this.texts.values().next().value ?? '';
    const keys = [...this.texts.keys()].sort((a, b) => a - b);
    return keys.map((k, n) => (n === 0 && k === 0 ? '' : `[choice ${k}]\n`) + this.texts.get(k)).join('\n');
  }

  // ---- SSE ----------------------------------------------------------------------------------

  private pushSse(chunk: Buffer): void {
    let start = 0;
    let lf = chunk.indexOf(0x0a);
    let cr = chunk.indexOf(0x0d);
    for (;;) {
      if (lf >= 0 && lf < start) lf = chunk.indexOf(0x0a, start);
      if (cr >= 0 && cr < start) cr = chunk.indexOf(0x0d, start);
      const i = lf < 0 ? cr : cr < 0 ? lf : Math.min(lf, cr);
      if (i < 0) break;
      const b = chunk[i];
      // CRLF split across chunks (or inside one): the LF after a CR ends no second line.
      if (b === 0x0a && i === start && this.lastWasCR) {
        this.lastWasCR = false;
        start = i + 1;
        continue;
      }
      this.line.push(chunk.subarray(start, i));
      this.endLine();
      this.lastWasCR = b === 0x0d;
      start = i + 1;
    }
    if (start < chunk.length) {
      this.line.push(chunk.subarray(start));
      this.lastWasCR = false;
    }
  }

  private endLine(): void {
    const line = this.line;
    if (line.over) {
      this.skipped++;
      this.overLine(line.head, line.tail.text());
    } else this.onLine(line.text());
    line.reset();
  }

  /** A line too long to keep: salvage the usage of a final event; anything else is lost. */
  private overLine(head: string, tail: string): void {
    const terminal = /"type"\s*:\s*"response\.(completed|incomplete|failed)"/.test(head);
    if (!terminal) this.truncated = true;
    const u = salvageUsage(tail);
    if (u) this.usage = u;
    // The event it belonged to is incomplete: drop what came before, ignore the rest.
    this.data = [];
    this.dataOver = true;
  }

  private onLine(line: string): void {
    if (line === '') return this.dispatch();
    if (line.charCodeAt(0) === 0x3a) return; // ':' comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field !== 'data') return; // `event:` names are repeated as "type" inside the data
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (this.dataOver) return;
    this.dataLength += value.length + 1;
    if (this.dataLength > this.maxLine) {
      this.dataOver = true;
      this.truncated = true;
      this.skipped++;
      this.data = [];
      return;
    }
    this.data.push(value);
  }

  private dispatch(): void {
    const data = this.data.join('\n');
    const had = this.data.length > 0;
    this.data = [];
    this.dataLength = 0;
    this.dataOver = false;
    if (!had || this.done) return;
    if (data === '[DONE]') {
      this.done = true;
      return;
    }
    let ev: unknown;
    try {
      ev = JSON.parse(data);
    } catch {
      this.skipped++;
      return;
    }
    if (!isObject(ev)) return;
    if (isObject(ev.error)) this.error = str(ev.error.message, MAX_ERROR) ?? 'error';
    if (this.endpoint === 'responses' && typeof ev.type === 'string') this.responseEvent(ev);
    else this.chatChunk(ev, 'delta');
  }

  // ---- JSON ---------------------------------------------------------------------------------

  private endJson(): void {
    const body = this.body;
    if (body.over) {
      this.skipped++;
      if (this.endpoint !== 'embeddings') this.truncated = true;
      const u = salvageUsage(body.tail.text());
      if (u) this.usage = u;
      const m = /"model"\s*:\s*"([^"\\]{1,256})"/.exec(body.tail.text());
      if (m) this.model = m[1];
      return;
    }
    if (body.length === 0) return;
    let o: unknown;
    try {
      o = JSON.parse(body.text());
    } catch {
      this.skipped++;
      return;
    }
    if (!isObject(o)) return;
    if (isObject(o.error)) this.error = str(o.error.message, MAX_ERROR) ?? 'error';
    if (this.endpoint === 'chat') this.chatChunk(o, 'message');
    else if (this.endpoint === 'responses') this.responseObject(o);
    else {
      this.setModel(o.model);
      if (Array.isArray(o.data)) this.vectors = o.data.length;
      this.usage = normalizeUsage(o.usage) ?? this.usage;
    }
  }

  // ---- what the endpoints send ---------------------------------------------------------------

  private setModel(v: unknown): void {
    const m = str(v, MAX_NAME);
    if (m) this.model = m;
  }

  private appendText(index: number, s: string): void {
    if (!s) return;
    if (!this.texts.has(index) && this.texts.size >= MAX_CHOICES) {
      this.truncated = true;
      return;
    }
    const room = this.maxChars - this.textChars;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const piece = s.length > room ? s.slice(0, room) : s;
    if (piece.length < s.length) this.truncated = true;
    this.texts.set(index, (this.texts.get(index) ?? '') + piece);
    this.textChars += piece.length;
  }

  private tool(key: string, name: unknown, args: unknown, replaceArgs: boolean): void {
    let t = this.tools.get(key);
    if (!t) {
      if (this.tools.size >= MAX_TOOL_CALLS) {
        this.truncated = true;
        return;
      }
      t = { name: '?', args: '' };
      this.tools.set(key, t);
    }
    const n = str(name, MAX_NAME);
    if (n) t.name = n;
    if (typeof args !== 'string') return;
    if (replaceArgs) {
      this.toolChars -= t.args.length;
      t.args = '';
    }
    const room = this.maxChars - this.toolChars;
    const piece = args.length > room ? args.slice(0, Math.max(0, room)) : args;
    if (piece.length < args.length) this.truncated = true;
    t.args += piece;
    this.toolChars += piece.length;
  }

  /** A chat.completion.chunk (`delta`) or a chat.completion (`message`). */
  private chatChunk(o: Json, key: 'delta' | 'message'): void {
    this.setModel(o.model);
    const u = normalizeUsage(o.usage);
    if (u) this.usage = u;
    if (!Array.isArray(o.choices)) return;
    for (const c of o.choices) {
      if (!isObject(c)) continue;
      const index = count(c.index) ?? 0;
      const d = c[key];
      if (isObject(d)) {
        if (typeof d.content === 'string') this.appendText(index, d.content);
        if (typeof d.refusal === 'string') this.appendText(index, d.refusal);
        if (Array.isArray(d.tool_calls)) {
          for (let j = 0; j < d.tool_calls.length; j++) {
            const tc = d.tool_calls[j];
            if (!isObject(tc)) continue;
            const f = isObject(tc.function) ? tc.function : {};
            // Stream deltas name the call by its index; a whole message by its position.
            this.tool(`${index}:${key === 'delta' ? (count(tc.index) ?? j) : j}`, f.name, f.arguments, false);
          }
        }
        if (isObject(d.function_call)) this.tool(`${index}:fn`, d.function_call.name, d.function_call.arguments, false);
      }
      const fr = str(c.finish_reason, MAX_NAME);
      if (fr && (index === 0 || this.finishReason === undefined)) this.finishReason = fr;
    }
  }

  /** One Responses API stream event. */
  private responseEvent(ev: Json): void {
    switch (ev.type) {
      case 'response.created':
      case 'response.in_progress':
        if (isObject(ev.response)) this.setModel(ev.response.model);
        break;
      case 'response.output_text.delta':
      case 'response.refusal.delta':
        if (typeof ev.delta === 'string') this.appendText(0, ev.delta);
        break;
      case 'response.output_item.added':
      case 'response.output_item.done':
        if (isObject(ev.item) && isToolItem(ev.item)) {
          this.tool(`o:${count(ev.output_index) ?? 0}`, ev.item.name, toolArgs(ev.item), ev.type === 'response.output_item.done');
        }
        break;
      case 'response.function_call_arguments.delta':
      case 'response.custom_tool_call_input.delta':
        this.tool(`o:${count(ev.output_index) ?? 0}`, undefined, ev.delta, false);
        break;
      case 'response.completed':
      case 'response.incomplete':
      case 'response.failed':
        if (isObject(ev.response)) this.responseObject(ev.response);
        break;
      case 'error':
        this.error = str(ev.message, MAX_ERROR) ?? (isObject(ev.error) ? str(ev.error.message, MAX_ERROR) : undefined) ?? 'error';
        break;
    }
  }

  /**
   * A whole Response (the non-stream body, or the one a final event carries). Its text and tool
   * calls are used only when no deltas brought them, so a stream is not counted twice.
   */
  private responseObject(r: Json): void {
    this.setModel(r.model);
    const u = normalizeUsage(r.usage);
    if (u) this.usage = u;
    const reason = isObject(r.incomplete_details) ? str(r.incomplete_details.reason, MAX_NAME) : undefined;
    const status = str(r.status, MAX_NAME);
    if (reason ?? status) this.finishReason = reason ?? status;
    if (isObject(r.error)) this.error = str(r.error.message, MAX_ERROR) ?? 'error';
    const haveText = this.textChars > 0;
    const haveTools = this.tools.size > 0;
    const output = Array.isArray(r.output) ? r.output : [];
    for (let i = 0; i < output.length; i++) {
      const item = output[i];
      if (!isObject(item)) continue;
      if (!haveText && item.type === 'message' && Array.isArray(item.content)) {
        for (const part of item.content) {
          if (!isObject(part)) continue;
          if (typeof part.text === 'string') this.appendText(0, part.text);
          else if (typeof part.refusal === 'string') this.appendText(0, part.refusal);
        }
      } else if (!haveTools && isToolItem(item)) this.tool(`o:${i}`, item.name, toolArgs(item), true);
    }
    // The SDKs' convenience field, in case a server sends it without the items.
    if (!haveText && this.textChars === 0 && typeof r.output_text === 'string') this.appendText(0, r.output_text);
  }
}

function isToolItem(item: Json): boolean {
  return item.type === 'function_call' || item.type === 'custom_tool_call';
}

function toolArgs(item: Json): unknown {
  return item.type === 'custom_tool_call' ? item.input : item.arguments;
}
