// Tokens each identity spent on LLM connections per UTC day, for `maxTokensPerDay`. One row
// per identity and day (table llm_usage, migration 0005), changed only by single-statement
// upserts and updates, so concurrent requests never lose an increment, on SQLite or PostgreSQL.
//
// Budget semantics. The gateway cannot know a request's cost before the model answers: the
// prompt's tokens are counted by the upstream, the completion's are known only at the end.
// What it does know is the output cap it forwards (LlmRequest.maxTokens). Two ways to use that:
//
// - check, then add (simple): before forwarding, refuse unless
//     usedToday + (maxTokens ?? 0) ≤ limit   (and usedToday < limit)
//   and after the response, addUsage(actual total_tokens). Concurrent requests may all pass
//   the check, so a day can overshoot by what they use together.
//
// - reserve, then settle (what the proxy should use): reserveTokens(id, day, maxTokens ?? 0,
//   limit) does the same check and adds the reservation in one statement, so concurrent
//   requests cannot pass together what the budget cannot cover. After the response,
//   addUsage(actual - reserved) on the same `day`. When the upstream reports no usage (cut
//   off, error), keep the reservation as the charge: the model may have worked anyway.
//
// Either way the prompt's tokens are counted only after the fact: a request is let through
// while used < limit, and its prompt may carry the day past the limit; the next one is refused.
import type { Kysely } from 'kysely';
import type { DB } from './schema.ts';

export class LlmUsageError extends Error {}

/** 'YYYY-MM-DD' of `at` in UTC: the day the budget counts against. */
export function utcDay(at: Date = new Date()): string {
  return at.toISOString().slice(0, 10);
}

function check(identityId: string, day: string, tokens: number): void {
  if (typeof identityId !== 'string' || identityId.length === 0) throw new LlmUsageError('llm usage: an identity id is required');
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new LlmUsageError(`llm usage: day must be YYYY-MM-DD (UTC), got "${day}"; use utcDay()`);
  if (!Number.isSafeInteger(tokens)) throw new LlmUsageError(`llm usage: tokens must be an integer, got ${tokens}`);
}

/** Tokens `identityId` has used (and reserved) on `day`; 0 when none. */
export async function usedToday(db: Kysely<DB>, identityId: string, day: string): Promise<number> {
  check(identityId, day, 0);
  const row = await db.selectFrom('llm_usage').select('tokens').where('identity_id', '=', identityId).where('day', '=', day).executeTakeFirst();
  return row ? Number(row.tokens) : 0;
}

/**
 * Adds `tokens` to the identity's count for `day` and returns the new count. Negative values
 * settle a reservation that was larger than the actual usage; the count never goes below 0.
 */
export async function addUsage(db: Kysely<DB>, identityId: string, day: string, tokens: number): Promise<number> {
  check(identityId, day, tokens);
  const now = new Date().toISOString();
  const row = await db
    .insertInto('llm_usage')
    .values({ identity_id: identityId, day, tokens: Math.max(0, tokens), updated_at: now })
    .onConflict((oc) =>
      oc.columns(['identity_id', 'day']).doUpdateSet((eb) => ({
        // CASE rather than max()/greatest(): the one spelling both engines share.
        tokens: eb
          .case()
          .when(eb('llm_usage.tokens', '+', tokens), '<', 0)
          .then(0)
          .else(eb('llm_usage.tokens', '+', tokens))
          .end(),
        updated_at: now,
      })),
    )
    .returning('tokens')
    .executeTakeFirstOrThrow();
  return Number(row.tokens);
}

/**
 * Reserves `tokens` of the identity's `limit` for `day`, atomically: succeeds only while
 * used + tokens ≤ limit and used < limit. On success the count includes the reservation;
 * settle it with addUsage(actual - tokens) once the response has ended.
 */
export async function reserveTokens(
  db: Kysely<DB>,
  identityId: string,
  day: string,
  tokens: number,
  limit: number,
): Promise<{ ok: boolean; used: number }> {
  check(identityId, day, tokens);
  if (tokens < 0) throw new LlmUsageError('llm usage: a reservation cannot be negative');
  if (!Number.isSafeInteger(limit) || limit < 0) throw new LlmUsageError(`llm usage: the daily limit must be a non-negative integer, got ${limit}`);
  const now = new Date().toISOString();
  await db
    .insertInto('llm_usage')
    .values({ identity_id: identityId, day, tokens: 0, updated_at: now })
    .onConflict((oc) => oc.columns(['identity_id', 'day']).doNothing())
    .execute();
  const row = await db
    .updateTable('llm_usage')
    .set((eb) => ({ tokens: eb('tokens', '+', tokens), updated_at: now }))
    .where('identity_id', '=', identityId)
    .where('day', '=', day)
    .where('tokens', '<', limit)
    .where((eb) => eb(eb('tokens', '+', tokens), '<=', limit))
    .returning('tokens')
    .executeTakeFirst();
  if (row) return { ok: true, used: Number(row.tokens) };
  return { ok: false, used: await usedToday(db, identityId, day) };
}
