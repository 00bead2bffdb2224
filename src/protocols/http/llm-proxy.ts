// The LLM profile of the HTTP adapter (OpenAI-compatible endpoints): prompts are read whole,
// checked (model allowlist, max tokens, the caller's daily budget) and masked before the model
// sees them; the response streams through untouched while the completion and the usage are
// assembled for the journal.
import { createHash } from 'node:crypto';
import type { LlmConnection } from '../../config/schema.ts';
import type { Masker } from '../../mask/masker.ts';
import { hasCounts, newCounts } from '../../mask/counts.ts';
import type { Session } from '../../session/session.ts';
import type { Store } from '../../store/db.ts';
import { addUsage, reserveTokens, utcDay } from '../../store/llm-usage.ts';
import type { Refusal } from './errors.ts';
import { dailyBudgetRefusal, inspectLlmRequest, llmEndpoint, refusalHeaders, type LlmEndpoint, type LlmRefusal } from './llm.ts';
import { CompletionAssembler } from './llm-stream.ts';
import { SseUsageFilter } from './sse-usage-filter.ts';
import type { Transform } from 'node:stream';
import type { Described } from './proxy.ts';
import type { Route } from './request.ts';

export interface LlmObserver {
  push(chunk: Buffer): void;
  /** the result event's extra meta (completion, usage), once the response has ended */
  finish(status: number): Record<string, unknown>;
}

export type LlmPlan = { body: Buffer; described: Described; params: string[] } | { status: number; refusal: Refusal; headers: Record<string, string> };

export interface LlmHooks {
  /** whether this request is an LLM call the profile inspects (others pass as plain HTTP) */
  match(method: string, r: Route): boolean;
  plan(r: Route, body: Buffer, d: Described): Promise<LlmPlan>;
  observe(): LlmObserver | undefined;
  /** a filter for the response on its way to the client (the usage chunk it did not ask for), or null */
  clientFilter(contentType: string | undefined): Transform | null;
  /** the call did not reach the model (denied, not recorded): its reservation is returned */
  abandon(): void;
}

export interface LlmDeps {
  store: Store;
  connection: LlmConnection;
  session: Session;
  masker: Masker | null;
}

function refusalOf(r: LlmRefusal): { status: number; refusal: Refusal; headers: Record<string, string> } {
  return { status: r.status, refusal: { error: r.code, reason: r.message, hint: r.hint }, headers: refusalHeaders(r) };
}

/** Hooks for one request on an LLM connection. */
export function llmHooks(deps: LlmDeps): LlmHooks {
  const { connection: c, masker, session } = deps;
  let endpoint: LlmEndpoint | null = null;
  let stream = false;
  let usageAdded = false;
  let reserved: number | null = null;
  const day = utcDay();
  const maskText = masker ? (t: string) => masker.maskText(t) : (t: string) => t;

  return {
    match: (method, r) => method === 'POST' && llmEndpoint(r.path) !== null,

    async plan(r, body, d) {
      endpoint = llmEndpoint(r.path)!;
      const counts = newCounts();
      const mask = masker ? (t: string, k: typeof counts) => masker.maskText(t, k) : undefined;
      const req = inspectLlmRequest(endpoint, body, {
        models: c.models,
        maxTokensPerRequest: c.maxTokensPerRequest,
        // Prompt masking protects data from the model's operator, whoever is asking; the
        // transcript in the journal is masked either way.
        maskPrompt: c.maskPrompts ? mask : undefined,
        maskTranscript: mask,
        counts,
      });
      if (req.refused) return refusalOf(req);
      stream = req.stream;
      usageAdded = req.includeUsageAdded;
      if (c.maxTokensPerDay !== undefined) {
        const want = req.maxTokens ?? 0;
        const got = await reserveTokens(deps.store.db, session.identity.id, day, want, c.maxTokensPerDay);
        if (!got.ok) return refusalOf(dailyBudgetRefusal(got.used, want, c.maxTokensPerDay));
        reserved = want;
      }
      const llm = {
        endpoint,
        model: req.model,
        stream: req.stream,
        maxTokens: req.maxTokens ?? undefined,
        prompt: req.prompt,
        promptTruncated: req.promptTruncated || undefined,
        promptMasked: hasCounts(counts) ? counts : undefined,
        maskedBeforeModel: c.maskPrompts && !!masker ? true : undefined,
        inputs: req.inputs || undefined,
      };
      const classification = { ...d.classification, types: [...d.classification.types, `llm.${endpoint}`] };
      // The approval of a held call binds the exact (masked) body it forwards.
      const params = [`body sha256:${createHash('sha256').update(req.body).digest('hex')} (${req.body.length} bytes)`];
      return { body: req.body, described: { text: d.text, classification, meta: { ...d.meta, llm } }, params };
    },

    clientFilter(contentType) {
      return stream && usageAdded && /^text\/event-stream/i.test(contentType ?? '') ? new SseUsageFilter() : null;
    },

    abandon() {
      if (reserved) void addUsage(deps.store.db, session.identity.id, day, -reserved).catch(() => {});
      reserved = null;
    },

    observe() {
      if (!endpoint) return undefined;
      const a = new CompletionAssembler(endpoint, { stream });
      return {
        push: (b) => a.push(b),
        finish: (status) => {
          a.end();
          const res = a.result();
          const total = res.usage?.totalTokens;
          if (c.maxTokensPerDay !== undefined || total !== undefined) {
            // Settle the reservation with what the upstream reports; without a report it stands.
            const delta = total === undefined ? 0 : total - (reserved ?? 0);
            if (delta !== 0) void addUsage(deps.store.db, session.identity.id, day, delta).catch(() => {});
          }
          return {
            llm: {
              model: res.model,
              completion: res.completion ? maskText(res.completion) : undefined,
              completionTruncated: res.truncated || undefined,
              toolCalls: res.toolCalls ? maskText(res.toolCalls) : undefined,
              usage: res.usage,
              finishReason: res.finishReason,
              error: res.error ? maskText(res.error) : undefined,
              vectors: res.vectors,
              status,
            },
          };
        },
      };
    },
  };
}
