// Daily LLM token usage per identity in the store: on SQLite in a temp dir, and on a throwaway
// PostgreSQL cluster when its binaries are installed. The same assertions run on both.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import pg from 'pg';
import { LlmUsageError, addUsage, reserveTokens, usedToday, utcDay } from '../../src/store/llm-usage.ts';
import { openStore, type Store } from '../../src/store/db.ts';
import { connectionConfig, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';

async function exercise(store: Store): Promise<void> {
  const db = store.db;
  const day = '2025-06-01';

  // Counting: per identity and per day, starting from nothing.
  assert.equal(await usedToday(db, 'id-a', day), 0);
  assert.equal(await addUsage(db, 'id-a', day, 120), 120);
  assert.equal(await addUsage(db, 'id-a', day, 30), 150);
  assert.equal(await addUsage(db, 'id-b', day, 7), 7);
  assert.equal(await addUsage(db, 'id-a', '2025-06-02', 1), 1);
  assert.equal(await usedToday(db, 'id-a', day), 150);
  assert.equal(await usedToday(db, 'id-b', day), 7);
  assert.equal(await usedToday(db, 'id-a', '2025-06-02'), 1);
  assert.equal(await usedToday(db, 'id-c', day), 0);

  // Settling a reservation that was too large: negative deltas, never below zero.
  assert.equal(await addUsage(db, 'id-b', day, -5), 2);
  assert.equal(await addUsage(db, 'id-b', day, -50), 0);
  assert.equal(await addUsage(db, 'id-new', day, -50), 0);
  assert.equal(await addUsage(db, 'id-b', day, 0), 0);

  // Large counts survive the round trip as numbers (bigint on PostgreSQL).
  assert.equal(await addUsage(db, 'id-big', day, 3_000_000_000), 3_000_000_000);
  assert.equal(await usedToday(db, 'id-big', day), 3_000_000_000);
  assert.equal(typeof (await usedToday(db, 'id-big', day)), 'number');

  // Reservations: used + tokens ≤ limit, and used < limit.
  const limit = 1000;
  assert.deepEqual(await reserveTokens(db, 'id-r', day, 600, limit), { ok: true, used: 600 });
  assert.deepEqual(await reserveTokens(db, 'id-r', day, 401, limit), { ok: false, used: 600 });
  assert.deepEqual(await reserveTokens(db, 'id-r', day, 400, limit), { ok: true, used: 1000 });
  assert.deepEqual(await reserveTokens(db, 'id-r', day, 0, limit), { ok: false, used: 1000 }, 'nothing left: even an uncapped request is refused');
  assert.equal(await addUsage(db, 'id-r', day, -500), 500, 'settled: the model used less than reserved');
  assert.deepEqual(await reserveTokens(db, 'id-r', day, 0, limit), { ok: true, used: 500 });
  assert.deepEqual(await reserveTokens(db, 'id-zero', day, 1, 0), { ok: false, used: 0 });

  // Concurrent reservations cannot together pass what the budget cannot cover.
  const results = await Promise.all(Array.from({ length: 25 }, () => reserveTokens(db, 'id-race', day, 10, 100)));
  assert.equal(results.filter((r) => r.ok).length, 10);
  assert.equal(await usedToday(db, 'id-race', day), 100);
  // Concurrent additions all count.
  await Promise.all(Array.from({ length: 25 }, () => addUsage(db, 'id-add', day, 4)));
  assert.equal(await usedToday(db, 'id-add', day), 100);

  // Arguments the caller got wrong are errors that say what to do.
  await assert.rejects(addUsage(db, 'id-a', '2025-6-1', 1), (e: Error) => e instanceof LlmUsageError && /utcDay\(\)/.test(e.message));
  await assert.rejects(addUsage(db, 'id-a', day, 1.5), LlmUsageError);
  await assert.rejects(addUsage(db, 'id-a', day, Number.NaN), LlmUsageError);
  await assert.rejects(usedToday(db, '', day), LlmUsageError);
  await assert.rejects(reserveTokens(db, 'id-a', day, -1, 10), LlmUsageError);
  await assert.rejects(reserveTokens(db, 'id-a', day, 1, -10), LlmUsageError);
  assert.equal(await usedToday(db, 'id-a', day), 150, 'refused calls changed nothing');
}

describe('llm usage in the store', () => {
  test('utcDay is the UTC date', () => {
    assert.equal(utcDay(new Date('2025-06-01T23:59:59.999Z')), '2025-06-01');
    assert.equal(utcDay(new Date('2025-06-01T23:30:00-02:00')), '2025-06-02');
    assert.match(utcDay(), /^\d{4}-\d{2}-\d{2}$/);
  });

  test('SQLite: counts, settles, reservations, concurrency; migration reapplies cleanly', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-llm-usage-'));
    try {
      const file = path.join(dir, 'gatehouse.db');
      const store = await openStore({ store: 'sqlite', sqlitePath: file });
      try {
        await exercise(store);
      } finally {
        await store.close();
      }
      // Reopened: the migration does not run twice and the counts are still there.
      const again = await openStore({ store: 'sqlite', sqlitePath: file });
      try {
        assert.equal(await usedToday(again.db, 'id-a', '2025-06-01'), 150);
        const names = await again.db.selectFrom('gatehouse_migrations' as any).select('name' as any).execute();
        assert.equal(names.filter((n: any) => n.name === '0005_llm_usage').length, 1);
      } finally {
        await again.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PostgreSQL: the same', async (t) => {
    if (skipUnlessAvailable(t, 'initdb', 'postgres')) return;
    const pgs = await startPostgres();
    try {
      const admin = new pg.Client(connectionConfig(pgs));
      await admin.connect();
      await admin.query('create database gatehouse_llm');
      await admin.end();
      const store = await openStore({ store: pgs.url.replace(/\/postgres$/, '/gatehouse_llm'), sqlitePath: '' });
      try {
        await exercise(store);
      } finally {
        await store.close();
      }
    } finally {
      await pgs.stop();
    }
  });
});
