import assert from 'node:assert/strict';
import { skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { openStore, type Store } from '../../src/store/db.ts';
import { canonical } from '../../src/journal/canonical.ts';
import { chainHash, eventBody, eventDigest } from '../../src/journal/chain.ts';
import { checkpointMessage, loadOrCreateSigner, loadPublicKey, verifyCheckpointSignature, type Signer } from '../../src/journal/signer.ts';
import { Journal, JournalWriteError } from '../../src/journal/journal.ts';
import { verifyStore } from '../../src/journal/verify.ts';
import { exportSessionBundle, UnknownSessionError, verifyBundle, type Bundle } from '../../src/journal/bundle.ts';
import { GENESIS, type NewEvent } from '../../src/journal/types.ts';

interface Ctx {
  dir: string;
  store: Store;
  signer: Signer;
  reopen(): Promise<Store>;
}

async function withStore(fn: (ctx: Ctx) => Promise<void>, storeUrl = 'sqlite'): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-journal-'));
  const sqlitePath = path.join(dir, 'gatehouse.db');
  const ctx: Ctx = {
    dir,
    store: await openStore({ store: storeUrl, sqlitePath }),
    signer: loadOrCreateSigner(dir),
    async reopen() {
      await ctx.store.close();
      ctx.store = await openStore({ store: storeUrl, sqlitePath });
      return ctx.store;
    },
  };
  try {
    await fn(ctx);
  } finally {
    await ctx.store.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const agent = { id: 'id_agent', kind: 'agent' as const, name: 'agent-1' };

function ev(session: string, i: number, extra: Record<string, unknown> = {}): NewEvent {
  return { session, type: 'command', identity: agent, connection: 'crm', data: { sql: `SELECT * FROM customers WHERE id = ${i}`, ...extra } };
}

/** n events over two interleaved sessions, checkpoints only where asked. */
async function seed(store: Store, signer: Signer, n: number, checkpointsAt: number[] = []): Promise<Journal> {
  const j = await Journal.open(store, signer, { checkpointEvery: 1e9, checkpointIntervalMs: 0 });
  for (let i = 1; i <= n; i++) {
    const p = j.append(ev(i % 2 ? 'sess-a' : 'sess-b', i));
    if (checkpointsAt.includes(i)) {
      await p;
      await j.checkpoint();
    }
  }
  await j.flush();
  return j;
}

describe('canonical', () => {
  test('sorts keys recursively and drops whitespace', () => {
    assert.equal(canonical({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: 'x' } }), '{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}');
    assert.equal(canonical([3, 1, 2]), '[3,1,2]');
    assert.equal(canonical({}), '{}');
    assert.equal(canonical([]), '[]');
  });

  test('orders keys by UTF-16 code units, not code points or locale', () => {
    // U+1F600 is stored as \ud83d\ude00, which sorts before U+FFFF by code unit.
    assert.equal(canonical({ '\uffff': 1, '😀': 2, B: 3, a: 4, '10': 5, '9': 6 }), '{"10":5,"9":6,"B":3,"a":4,"😀":2,"\uffff":1}');
  });

  test('escapes strings exactly like JSON', () => {
    const s = 'quote " backslash \\ nl \n tab \t nul \u0000 bell \u0007 é 😀';
    assert.equal(canonical(s), JSON.stringify(s));
    assert.equal(canonical({ [s]: s }), `{${JSON.stringify(s)}:${JSON.stringify(s)}}`);
    assert.equal(canonical('lone \ud800 surrogate'), '"lone \\ud800 surrogate"');
    assert.equal(canonical('</script>\u2028'), JSON.stringify('</script>\u2028'));
  });

  test('special values', () => {
    assert.equal(canonical({ a: undefined, b: () => 1, c: null }), '{"c":null}');
    assert.equal(canonical([undefined, () => 1, Symbol('x')]), '[null,null,null]');
    assert.equal(canonical([NaN, Infinity, -Infinity, -0, 1e21, 0.1, -5]), '[null,null,null,0,1e+21,0.1,-5]');
    assert.equal(canonical({ n: 12345678901234567890n }), '{"n":"12345678901234567890"}');
    assert.equal(canonical(Buffer.from('hello')), '"aGVsbG8="');
    const bytes = new Uint8Array([0, 1, 2, 250, 251, 252]).subarray(3);
    assert.equal(canonical({ b: bytes }), `{"b":"${Buffer.from([250, 251, 252]).toString('base64')}"}`);
    assert.equal(canonical(new Date(0)), '"1970-01-01T00:00:00.000Z"');
    assert.equal(canonical(undefined), 'null');
    assert.equal(canonical(true), 'true');
  });

  test('is a fixed point of JSON.parse', () => {
    const v = { z: [1, 'a', { y: null, x: 1.5e-7 }], big: 2n ** 70n, buf: Buffer.from([1, 2, 3]), s: 'é\n"' };
    const once = canonical(v);
    assert.equal(canonical(JSON.parse(once)), once);
  });

  test('rejects cycles instead of overflowing the stack', () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    assert.throws(() => canonical(a), TypeError);
  });

  test('eventBody is canonical(event without prev and hash)', () => {
    const e = { seq: 7, ts: '2024-01-01T00:00:00.000Z', ...ev('s', 7), prev: GENESIS, hash: 'h' };
    const { prev: _p, hash: _h, ...rest } = e;
    assert.equal(eventBody(e), canonical(rest));
    assert.equal(chainHash(GENESIS, eventDigest(e)).length, 64);
  });
});

describe('journal on SQLite', () => {
  test('1000 concurrent appends get contiguous seqs and verify', () =>
    withStore(async ({ store, signer }) => {
      const j = await Journal.open(store, signer, { checkpointEvery: 300 });
      const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => j.append(ev(`s${i % 8}`, i))));
      assert.deepEqual(results.map((e) => e.seq), Array.from({ length: 1000 }, (_, i) => i + 1));
      assert.equal(results[0].prev, GENESIS);
      for (let i = 1; i < results.length; i++) assert.equal(results[i].prev, results[i - 1].hash);
      assert.deepEqual(j.head, { seq: 1000, hash: results[999].hash });
      await j.close();
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.deepEqual(report, { ok: true, events: 1000, checkpoints: report.checkpoints });
      assert.ok(report.checkpoints >= 1);
      const last = await store.db.selectFrom('checkpoints').selectAll().orderBy('size', 'desc').executeTakeFirstOrThrow();
      assert.equal(Number(last.size), 1000);
    }));

  test('record() is ordered with append() and committed by flush()', () =>
    withStore(async ({ store, signer }) => {
      const j = await Journal.open(store, signer);
      const a = j.append(ev('s', 1));
      const r = j.record({ ...ev('s', 2), type: 'result' });
      assert.equal(r.seq, 2);
      assert.equal((await a).seq, 1);
      await j.flush();
      const rows = await store.db.selectFrom('events').select(['seq', 'type']).orderBy('seq').execute();
      assert.deepEqual(rows.map((x) => [Number(x.seq), x.type]), [[1, 'command'], [2, 'result']]);
      assert.equal(await j.checkpoint().then((cp) => cp?.size), 2);
      assert.equal(await j.checkpoint(), null, 'nothing new since the last checkpoint');
      await j.close();
    }));

  test('checkpoints by count and by timer', () =>
    withStore(async ({ store, signer }) => {
      const j = await Journal.open(store, signer, { checkpointEvery: 10, checkpointIntervalMs: 0 });
      for (let i = 0; i < 35; i++) await j.append(ev('s', i));
      await j.close();
      const sizes = (await store.db.selectFrom('checkpoints').select('size').orderBy('size').execute()).map((r) => Number(r.size));
      assert.ok(sizes.length >= 4, `checkpoints at ${sizes}`);
      assert.equal(sizes.at(-1), 35);

      const t = await Journal.open(store, signer, { checkpointEvery: 1e9, checkpointIntervalMs: 20 });
      await t.append(ev('s', 99));
      const signedThrough = async () =>
        Number((await store.db.selectFrom('checkpoints').select((eb) => eb.fn.max('size').as('m')).executeTakeFirstOrThrow()).m);
      for (let i = 0; i < 100 && (await signedThrough()) < 36; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await signedThrough(), 36, 'the timer signed the new event');
      assert.equal(await t.checkpoint(), null);
      await t.close();
      assert.equal((await verifyStore(store, signer.publicKeyPem)).ok, true);
    }));

  test('resumes the chain after a restart and after an unclean stop', () =>
    withStore(async (ctx) => {
      const j1 = await Journal.open(ctx.store, ctx.signer);
      for (let i = 0; i < 10; i++) await j1.append(ev('s1', i));
      await j1.close();
      const j2 = await Journal.open(await ctx.reopen(), ctx.signer, { checkpointIntervalMs: 0 });
      assert.equal(j2.head.seq, 10);
      await Promise.all(Array.from({ length: 10 }, (_, i) => j2.append(ev('s2', i))));
      // No close(): like kill -9 after the commits, so no final checkpoint either.
      const j3 = await Journal.open(await ctx.reopen(), loadOrCreateSigner(ctx.dir));
      assert.equal(j3.head.seq, 20);
      await j3.append(ev('s3', 0));
      await j3.close();
      const report = await verifyStore(ctx.store, loadPublicKey(ctx.dir));
      assert.equal(report.ok, true, report.firstBad?.reason);
      assert.equal(report.events, 21);
      assert.equal(report.checkpoints, 2);
    }));

  test('one changed byte in a stored body is reported at that seq', () =>
    withStore(async ({ store, signer }) => {
      await (await seed(store, signer, 100, [50, 100])).close();
      const row = await store.db.selectFrom('events').select('body').where('seq', '=', 42).executeTakeFirstOrThrow();
      const i = row.body.indexOf('customers');
      const altered = row.body.slice(0, i) + 'D' + row.body.slice(i + 1);
      await sql`update events set body = ${altered} where seq = 42`.execute(store.db);
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.equal(report.ok, false);
      assert.equal(report.firstBad?.seq, 42);
      assert.match(report.firstBad!.reason, /event 42 was altered: hash mismatch/);
    }));

  test('an indexed column that disagrees with the body is reported', () =>
    withStore(async ({ store, signer }) => {
      await (await seed(store, signer, 20, [20])).close();
      await sql`update events set session_id = 'someone-else' where seq = 7`.execute(store.db);
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.deepEqual(report.firstBad?.seq, 7);
      assert.match(report.firstBad!.reason, /session_id/);
    }));

  test('a deleted event in the middle is reported as missing', () =>
    withStore(async ({ store, signer }) => {
      await (await seed(store, signer, 100, [100])).close();
      await sql`delete from events where seq = 42`.execute(store.db);
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.deepEqual(report.firstBad, { seq: 42, reason: 'event 42 is missing' });
      assert.equal(report.events, 41);
    }));

  test('a deleted tail under a checkpoint is reported', () =>
    withStore(async ({ store, signer }) => {
      await (await seed(store, signer, 100, [50, 100])).close();
      await sql`delete from events where seq > 90`.execute(store.db);
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.equal(report.ok, false);
      assert.equal(report.firstBad?.seq, 91);
      assert.match(report.firstBad!.reason, /event 91 is missing.*checkpoint at 100/);
    }));

  test('a forged or foreign checkpoint signature is reported', () =>
    withStore(async ({ dir, store, signer }) => {
      await (await seed(store, signer, 60, [30, 60])).close();
      const cp = await store.db.selectFrom('checkpoints').selectAll().where('size', '=', 30).executeTakeFirstOrThrow();
      const mallory = loadOrCreateSigner(path.join(dir, 'mallory'));
      await sql`update checkpoints set signature = ${mallory.sign(30, cp.root)} where size = 30`.execute(store.db);
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.equal(report.firstBad?.seq, 30);
      assert.match(report.firstBad!.reason, /checkpoint at 30 has an invalid signature/);
      // Mallory's own key accepts her checkpoint but not the genuine one at 60.
      assert.equal((await verifyStore(store, mallory.publicKeyPem)).firstBad?.seq, 60);
    }));

  test('a rewritten chain fails at the checkpoint that covered it', () =>
    withStore(async ({ store, signer }) => {
      await (await seed(store, signer, 10, [10])).close();
      // Recompute every hash after the edit, as an attacker without the key would.
      const rows = await store.db.selectFrom('events').selectAll().orderBy('seq').execute();
      let prev = GENESIS;
      for (const r of rows) {
        const body = Number(r.seq) === 4 ? r.body.replace('customers', 'Customers') : r.body;
        const e = { ...JSON.parse(body), prev };
        const hash = chainHash(prev, eventDigest(e));
        await sql`update events set body = ${body}, prev = ${prev}, hash = ${hash} where seq = ${r.seq}`.execute(store.db);
        prev = hash;
      }
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.equal(report.firstBad?.seq, 10);
      assert.match(report.firstBad!.reason, /root differs/);
    }));

  test('signature helpers', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-signer-'));
    try {
      const s = loadOrCreateSigner(dir);
      assert.equal((fs.statSync(path.join(dir, 'signing-key.pem')).mode & 0o777).toString(8), '600');
      assert.equal(loadOrCreateSigner(dir).keyId, s.keyId, 'the key is reused, not regenerated');
      assert.match(s.keyId, /^[0-9a-f]{16}$/);
      assert.equal(checkpointMessage(5, 'ab'), 'gatehouse-checkpoint/1\n5\nab');
      const cp = { size: 5, root: 'ab'.repeat(32), ts: 'now', keyId: s.keyId, signature: s.sign(5, 'ab'.repeat(32)) };
      assert.equal(verifyCheckpointSignature(loadPublicKey(dir), cp), true);
      assert.equal(verifyCheckpointSignature(s.publicKeyPem, { ...cp, size: 6 }), false);
      assert.equal(verifyCheckpointSignature(s.publicKeyPem, { ...cp, signature: 'garbage' }), false);
      assert.equal(verifyCheckpointSignature('not a key', cp), false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('journal store failures', () => {
  test('a failed commit rejects the batch, rolls the head back, and recovers', () =>
    withStore(async ({ store, signer }) => {
      const j = await Journal.open(store, signer);
      const errors: Error[] = [];
      j.onError = (e) => errors.push(e);
      for (let i = 0; i < 5; i++) await j.append(ev('s', i));
      const head = j.head;
      await sql`create trigger no_more before insert on events begin select raise(abort, 'disk on fire'); end`.execute(store.db);
      const failing = j.append(ev('s', 6));
      j.record({ ...ev('s', 7), type: 'result' });
      await assert.rejects(failing, (err: Error) => {
        assert.ok(err instanceof JournalWriteError);
        assert.match(err.message, /journal store unavailable: events 6\.\.7 were not recorded.*disk on fire/);
        return true;
      });
      assert.deepEqual(j.head, head);
      assert.equal(errors.length, 1, 'the unwatched record() failure reaches onError');
      assert.ok(errors[0] instanceof JournalWriteError);

      await sql`drop trigger no_more`.execute(store.db);
      const next = await j.append(ev('s', 8));
      assert.equal(next.seq, 6);
      assert.equal(next.prev, head.hash);
      await j.close();
      const report = await verifyStore(store, signer.publicKeyPem);
      assert.equal(report.ok, true, report.firstBad?.reason);
      assert.equal(report.events, 6);
    }));

  test('batches queued behind a failing batch are rejected too', () =>
    withStore(async ({ store, signer }) => {
      // Failures are injected into kysely's executeQuery: the generic path, as PostgreSQL uses.
      const j = await Journal.open({ ...store, sqlite: undefined }, signer);
      await j.append(ev('s', 0));
      const db = store.db as unknown as { executeQuery: (q: unknown) => Promise<unknown> };
      const original = db.executeQuery.bind(db);
      let fail!: (err: Error) => void;
      db.executeQuery = () => new Promise((_, reject) => (fail = reject));
      const first = j.append(ev('s', 1));
      await new Promise((r) => setImmediate(r)); // first batch is now being written
      const second = j.append(ev('s', 2));
      assert.equal(j.head.seq, 3);
      fail(new Error('connection reset'));
      await assert.rejects(first, JournalWriteError);
      await assert.rejects(second, JournalWriteError);
      assert.equal(j.head.seq, 1);

      db.executeQuery = original;
      assert.equal((await j.append(ev('s', 3))).seq, 2);
      await j.close();
      assert.equal((await verifyStore(store, signer.publicKeyPem)).ok, true);
    }));

  test('a commit that landed although it reported failure is not chained over', () =>
    withStore(async ({ store, signer }) => {
      // Failures are injected into kysely's executeQuery: the generic path, as PostgreSQL uses.
      const j = await Journal.open({ ...store, sqlite: undefined }, signer);
      j.onError = () => {};
      await j.append(ev('s', 0));
      const db = store.db as unknown as { executeQuery: (q: unknown) => Promise<unknown> };
      const original = db.executeQuery.bind(db);
      // The insert succeeds, but its acknowledgement is lost.
      db.executeQuery = async (q) => {
        await original(q);
        throw new Error('connection lost during commit');
      };
      await assert.rejects(j.append(ev('s', 1)), JournalWriteError);
      db.executeQuery = original;
      // The journal re-reads the head rather than reusing seq 2.
      await assert.rejects(j.append(ev('s', 2)), /chain head moved/);
      const e = await j.append(ev('s', 3));
      assert.equal(e.seq, 3);
      await j.close();
      assert.equal((await verifyStore(store, signer.publicKeyPem)).ok, true);
    }));

  test('a closed store makes append reject with JournalWriteError', () =>
    withStore(async ({ store, signer }) => {
      const j = await Journal.open(store, signer, { checkpointIntervalMs: 0 });
      j.onError = () => {};
      await j.append(ev('s', 0));
      await store.close();
      await assert.rejects(j.append(ev('s', 1)), (err: Error) => err instanceof JournalWriteError && /store unavailable/.test(err.message));
      assert.equal(j.head.seq, 1);
      await assert.rejects(j.close(), (err: Error) => err instanceof JournalWriteError && /checkpoint at 1 was not written/.test(err.message));
    }));
});

describe('session bundles', () => {
  async function twoSessions(store: Store, signer: Signer): Promise<Journal> {
    const j = await Journal.open(store, signer, { checkpointEvery: 1e9, checkpointIntervalMs: 0 });
    await j.append(ev('beta', 0, { secret: 'TOP-SECRET-beta' })); // alpha's anchor is not genesis
    for (let i = 1; i <= 20; i++) {
      j.record(ev('alpha', i));
      j.record(ev('beta', i, { secret: 'TOP-SECRET-beta' }));
      if (i === 10) await j.checkpoint();
    }
    await j.append({ ...ev('beta', 99), type: 'session.close' });
    await j.checkpoint();
    return j;
  }

  test('exports one session that verifies offline and reveals nothing of the other', () =>
    withStore(async ({ store, signer }) => {
      await (await twoSessions(store, signer)).close();
      const bundle = await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId);
      assert.equal(bundle.complete, true);
      assert.equal(bundle.anchor.seq, 1);
      assert.equal(bundle.entries[0].seq, 2);
      assert.equal(bundle.entries.at(-1)!.seq, 42, 'runs to the checkpoint that covers the last alpha event');
      assert.deepEqual(bundle.checkpoints.map((c) => c.size), [21, 42]);
      const text = JSON.stringify(bundle);
      assert.ok(!text.includes('beta') && !text.includes('TOP-SECRET'), 'no content of the other session');
      const copy = JSON.parse(text);
      assert.deepEqual(verifyBundle(copy, signer.publicKeyPem), { ok: true, events: 20, checkpoints: 2 });
      assert.equal(verifyBundle(copy).ok, true, 'self-consistent without a trusted key');
    }));

  test('tampering with one event is reported at its seq', () =>
    withStore(async ({ store, signer }) => {
      await (await twoSessions(store, signer)).close();
      const bundle = JSON.parse(JSON.stringify(await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId)));
      const target = bundle.entries.find((e: { seq: number }) => e.seq === 12);
      target.data.sql = 'SELECT 1';
      const report = verifyBundle(bundle, signer.publicKeyPem);
      assert.equal(report.ok, false);
      assert.deepEqual(report.firstBad, { seq: 12, reason: 'event 12 was altered: hash mismatch' });

      const dropped = JSON.parse(JSON.stringify(await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId)));
      dropped.entries.splice(4, 1);
      assert.match(verifyBundle(dropped, signer.publicKeyPem).firstBad!.reason, /event 6 is missing/);

      const extra = JSON.parse(JSON.stringify(await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId)));
      extra.entries[0].note = 'injected';
      assert.match(verifyBundle(extra, signer.publicKeyPem).firstBad!.reason, /unexpected field "note"/);
    }));

  test('a bundle signed by another key fails against the trusted key', () =>
    withStore(async ({ dir, store, signer }) => {
      await (await twoSessions(store, signer)).close();
      const bundle = await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId);
      const other = loadOrCreateSigner(path.join(dir, 'other'));
      const report = verifyBundle(bundle, other.publicKeyPem);
      assert.equal(report.ok, false);
      assert.match(report.firstBad!.reason, /not by the trusted key/);
      // Swapping in the other key does not help: its signature does not match the checkpoints.
      const swapped = { ...bundle, publicKey: other.publicKeyPem, keyId: other.keyId };
      assert.match(verifyBundle(swapped, other.publicKeyPem).firstBad!.reason, /invalid signature/);
    }));

  test('a live session exports up to the latest checkpoint, marked incomplete', () =>
    withStore(async ({ store, signer }) => {
      const j = await twoSessions(store, signer);
      await j.append(ev('alpha', 100));
      const bundle = await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId);
      assert.equal(bundle.complete, false);
      assert.equal(bundle.entries.at(-1)!.seq, 42);
      assert.equal(verifyBundle(bundle, signer.publicKeyPem).ok, true);
      await j.close();
      const sealed = await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId);
      assert.equal(sealed.complete, true);
      assert.equal(sealed.entries.at(-1)!.seq, 43);
      assert.equal(verifyBundle(sealed, signer.publicKeyPem).ok, true);
    }));

  test('unknown sessions throw a typed error', () =>
    withStore(async ({ store, signer }) => {
      await assert.rejects(exportSessionBundle(store, 'nope', signer.publicKeyPem, signer.keyId), UnknownSessionError);
    }));

  test('hostile input is reported, never thrown', () =>
    withStore(async ({ store, signer }) => {
      await (await twoSessions(store, signer)).close();
      const good: Bundle = await exportSessionBundle(store, 'alpha', signer.publicKeyPem, signer.keyId);
      let deep: unknown = {};
      for (let i = 0; i < 100_000; i++) deep = { d: deep };
      const cyclic: Record<string, unknown> = { session: 'alpha' };
      cyclic.data = cyclic;
      const inputs: unknown[] = [
        null,
        undefined,
        42,
        'bundle',
        [],
        {},
        { ...good, format: 'gatehouse-bundle/2' },
        { ...good, entries: 'nope' },
        { ...good, entries: [null] },
        { ...good, entries: [{ seq: 2, stub: 'zz' }] },
        { ...good, entries: [{ ...good.entries[0], data: deep }] },
        { ...good, entries: [{ ...good.entries[0], identity: cyclic }] },
        { ...good, anchor: { seq: -1, hash: GENESIS } },
        { ...good, anchor: null },
        { ...good, publicKey: 'not a key' },
        { ...good, publicKey: 42 },
        { ...good, checkpoints: [] },
        { ...good, checkpoints: [null] },
        { ...good, checkpoints: [{ ...good.checkpoints[0], signature: 7 }] },
        { ...good, checkpoints: [{ ...good.checkpoints[1], size: 1e9 }] },
        { ...good, checkpoints: [...good.checkpoints].reverse() },
        { ...good, checkpoints: good.checkpoints.slice(0, 1) }, // entries beyond the last checkpoint
        { ...good, entries: good.entries.slice(0, -1) },
        new Proxy({}, { get: () => { throw new Error('boom'); } }),
      ];
      for (const input of inputs) {
        const report = verifyBundle(input, signer.publicKeyPem);
        assert.equal(report.ok, false);
        assert.equal(typeof report.firstBad?.reason, 'string');
      }
      assert.equal(verifyBundle(good, 'garbage key').ok, false);
    }));
});

describe('journal on PostgreSQL', () => {
  test('append and verify', async (t) => {
    // Its own throwaway cluster: skipped locally without the binaries, a failure in CI.
    if (skipUnlessAvailable(t, 'initdb', 'postgres')) return;
    const server = await startPostgres({ ssl: true });
    t.after(() => server.stop());
    const url = `${server.url}?sslmode=no-verify`;
    const schema = `gh_journal_test_${process.pid}_${Date.now()}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`create schema ${schema}`);
    try {
      const scoped = new URL(url!);
      scoped.searchParams.set('options', `-c search_path=${schema}`);
      await withStore(async ({ store, signer }) => {
        assert.equal(store.kind, 'postgres');
        const j = await Journal.open(store, signer, { checkpointEvery: 250 });
        const evs = await Promise.all(Array.from({ length: 1000 }, (_, i) => j.append(ev(`s${i % 8}`, i))));
        assert.equal(evs.at(-1)!.seq, 1000);
        await j.close();
        const report = await verifyStore(store, signer.publicKeyPem);
        assert.equal(report.ok, true, report.firstBad?.reason);
        assert.equal(report.events, 1000);
        const bundle = await exportSessionBundle(store, 's3', signer.publicKeyPem, signer.keyId);
        assert.equal(verifyBundle(JSON.parse(JSON.stringify(bundle)), signer.publicKeyPem).ok, true);
        await sql`delete from events where seq = 500`.execute(store.db);
        assert.equal((await verifyStore(store, signer.publicKeyPem)).firstBad?.seq, 500);
      }, scoped.toString());
    } finally {
      await admin.query(`drop schema ${schema} cascade`);
      await admin.end();
    }
  });
});
