// The review service over a real (temp) SQLite store and a real signed journal.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { bindingHash, normalizeStatement } from '../../src/approval/binding.ts';
import { ReviewError, ReviewService, type ReviewRequest, type ReviewServiceOptions } from '../../src/approval/reviews.ts';
import type { ReviewTerms } from '../../src/guard/policy.ts';
import type { Identity } from '../../src/identity/keys.ts';
import { Journal } from '../../src/journal/journal.ts';
import { loadOrCreateSigner } from '../../src/journal/signer.ts';
import { verifyStore } from '../../src/journal/verify.ts';
import { openStore, type Store } from '../../src/store/db.ts';

interface Ctx {
  store: Store;
  journal: Journal;
  reviews: ReviewService;
  publicKeyPem: string;
}

async function withService(fn: (ctx: Ctx) => Promise<void>, opts: ReviewServiceOptions = {}): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-reviews-'));
  const store = await openStore({ store: 'sqlite', sqlitePath: path.join(dir, 'gatehouse.db') });
  const signer = loadOrCreateSigner(dir);
  const journal = await Journal.open(store, signer, { checkpointIntervalMs: 0 });
  const reviews = new ReviewService(store, journal, { onError: () => {}, ...opts });
  try {
    await fn({ store, journal, reviews, publicKeyPem: signer.publicKeyPem });
  } finally {
    await reviews.close();
    await journal.close();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function identity(name: string, groups: string[], kind: 'agent' | 'human' = 'human'): Identity {
  return {
    id: `id-${name}`,
    name,
    kind,
    groups,
    connections: ['*'],
    createdAt: new Date().toISOString(),
    expiresAt: null,
    revokedAt: null,
    scramVerifier: '',
    keyHash: '',
    mysqlNative: null,
    mysqlSha2: null,
  };
}

const agent = identity('agent-1', [], 'agent');
const alice = identity('alice', ['admin']);
const bob = identity('bob', ['dba']);
const carol = identity('carol', ['dba']);
const mallory = identity('mallory', ['support']);

const terms = (t: Partial<ReviewTerms> = {}): ReviewTerms => ({ approvers: ['admin'], minApprovals: 1, expiresInMs: 3600_000, mode: 'wait', holdForMs: 60_000, ...t });

function req(over: Partial<ReviewRequest> = {}): ReviewRequest {
  return {
    sessionId: 'sess-1',
    identity: { id: agent.id, name: agent.name, kind: 'agent' },
    connection: 'main',
    text: 'DELETE FROM orders WHERE id = $1',
    params: ['42'],
    rule: 'writes-need-review',
    reason: 'writes by agents need review',
    terms: terms(),
    ...over,
  };
}

async function refused(p: Promise<unknown>, code: string): Promise<ReviewError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ReviewError, `expected a ReviewError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.length > 0 && e.hint.length > 0);
    return e;
  }
  assert.fail(`expected ReviewError ${code}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function journalEvents(store: Store): Promise<{ type: string; session: string; identity: { name: string }; data: Record<string, any> }[]> {
  const rows = await store.db.selectFrom('events').select(['body']).orderBy('seq').execute();
  return rows.map((r) => JSON.parse(r.body));
}

describe('binding', () => {
  test('normalizing ignores layout and one trailing semicolon', () => {
    assert.equal(normalizeStatement('  SELECT *\n\tFROM   t\r\n WHERE a = 1 ;  '), 'SELECT * FROM t WHERE a = 1');
    assert.equal(normalizeStatement('select 1;'), 'select 1');
    assert.equal(normalizeStatement('select 1;;'), 'select 1;');
  });

  test('normalizing never touches literals, quoted names, comments or case', () => {
    const same = (a: string, b: string) => assert.equal(normalizeStatement(a), normalizeStatement(b), `${a} vs ${b}`);
    const differ = (a: string, b: string) => assert.notEqual(normalizeStatement(a), normalizeStatement(b), `${a} vs ${b}`);
    same('SELECT  1', 'SELECT 1');
    differ("SELECT 'a  b'", "SELECT 'a b'");
    differ("SELECT 'A'", "SELECT 'a'");
    differ('SELECT * FROM "My  Table"', 'SELECT * FROM "My Table"');
    differ('select 1', 'SELECT 1');
    differ("SELECT 'it''s  x'", "SELECT 'it''s x'");
    differ("SELECT E'it\\'s  x'", "SELECT E'it\\'s x'");
    differ('SELECT $$a  b$$', 'SELECT $$a b$$');
    differ('SELECT $tag$ a  $ b $tag$', 'SELECT $tag$ a $ b $tag$');
    differ('SELECT 1 /* a  b */', 'SELECT 1 /* a b */');
    // A line comment must keep its line break, or the next line would become comment text.
    differ('SELECT 1 -- note\nFROM t', 'SELECT 1 -- note FROM t');
    same('SELECT 1 -- note\n   FROM t', 'SELECT 1 -- note\nFROM t');
    // A ";" inside a trailing comment is comment text.
    assert.equal(normalizeStatement('SELECT 1 -- x;'), 'SELECT 1 -- x;');
    // With standard_conforming_strings off, 'a\' ...' ends elsewhere: the rest stays as it is.
    differ("SELECT 'a\\' ,  'b  c'", "SELECT 'a\\' , 'b  c'");
    differ("SELECT '\\' || '  x  '", "SELECT '\\' || ' x '");
    // Unterminated quotes: nothing after the quote is touched.
    differ("SELECT 'a  ", "SELECT 'a ");
  });

  test('the hash is stable and changes with identity, connection, text or params', () => {
    const base = { identityId: 'id-1', connection: 'main', text: 'UPDATE t SET a = $1', params: ['x'] };
    const h = bindingHash(base);
    assert.match(h, /^[0-9a-f]{64}$/);
    assert.equal(bindingHash({ ...base }), h);
    assert.equal(bindingHash({ ...base, text: '  UPDATE t\n SET a = $1;' }), h);
    assert.notEqual(bindingHash({ ...base, identityId: 'id-2' }), h);
    assert.notEqual(bindingHash({ ...base, connection: 'other' }), h);
    assert.notEqual(bindingHash({ ...base, text: 'UPDATE t SET b = $1' }), h);
    assert.notEqual(bindingHash({ ...base, params: ['y'] }), h);
    assert.notEqual(bindingHash({ ...base, params: [] }), h);
    assert.notEqual(bindingHash({ ...base, params: [1] }), bindingHash({ ...base, params: ['1'] }));
    assert.equal(bindingHash({ ...base, params: undefined }), bindingHash({ ...base, params: [] }));
  });
});

describe('ReviewService', () => {
  test('request, approve, find the usable approval, consume it exactly once', () =>
    withService(async ({ reviews, store }) => {
      const r = await reviews.request(req());
      assert.match(r.id, /^r-[a-z2-7]{10}$/);
      assert.equal(r.status, 'pending');
      assert.equal(r.bindingHash, bindingHash({ identityId: agent.id, connection: 'main', text: req().text, params: ['42'] }));
      assert.deepEqual(await reviews.get(r.id), r);
      assert.equal(await reviews.findUsableApproval(r.bindingHash), null, 'pending is not usable');
      assert.equal(await reviews.consume(r.id), false, 'pending cannot be consumed');

      const approved = await reviews.decide(r.id, alice, 'approve', 'fine');
      assert.equal(approved.status, 'approved');
      assert.ok(approved.decidedAt);
      assert.deepEqual(
        approved.decisions.map((d) => [d.by, d.byId, d.decision, d.comment]),
        [['alice', alice.id, 'approve', 'fine']],
      );
      const usable = await reviews.findUsableApproval(r.bindingHash);
      assert.equal(usable?.id, r.id);

      const results = await Promise.all([reviews.consume(r.id), reviews.consume(r.id), reviews.consume(r.id)]);
      assert.deepEqual(results.filter(Boolean).length, 1, 'exactly one consumer wins');
      assert.equal(await reviews.consume(r.id), false);
      assert.equal((await reviews.get(r.id))?.status, 'consumed');
      assert.equal(await reviews.findUsableApproval(r.bindingHash), null);
      await refused(reviews.decide(r.id, identity('dave', ['admin']), 'approve'), 'not_pending');

      assert.deepEqual((await reviews.list()).map((x) => x.id), [r.id]);
      assert.deepEqual(await reviews.list({ status: 'pending' }), []);
      assert.equal(await reviews.get('r-nonexistent'), null);
      void store;
    }));

  test('no one approves their own statement, not even an admin', () =>
    withService(async ({ reviews }) => {
      const boss = identity('boss', ['admin']);
      const r = await reviews.request(req({ identity: { id: boss.id, name: boss.name, kind: 'human' } }));
      const e = await refused(reviews.decide(r.id, boss, 'approve'), 'self_approval');
      assert.match(e.message, /own statement/);
      assert.equal((await reviews.get(r.id))?.status, 'pending');
    }));

  test('only members of the listed groups decide; "admin" is no bypass', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req({ terms: terms({ approvers: ['dba'] }) }));
      const e = await refused(reviews.decide(r.id, alice, 'approve'), 'not_approver');
      assert.match(e.message, /group "dba"/);
      await refused(reviews.decide(r.id, mallory, 'deny', 'no'), 'not_approver');
      const revoked = { ...carol, revokedAt: new Date().toISOString() };
      await refused(reviews.decide(r.id, revoked, 'approve'), 'not_approver');
      assert.equal((await reviews.decide(r.id, bob, 'approve')).status, 'approved');
      await refused(reviews.decide('r-aaaaaaaaaa', bob, 'approve'), 'not_found');
    }));

  test('minApprovals 2 needs two distinct approvers', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req({ terms: terms({ approvers: ['dba', 'admin'], minApprovals: 2 }) }));
      const first = await reviews.decide(r.id, bob, 'approve');
      assert.equal(first.status, 'pending');
      assert.equal(first.decidedAt, null);
      assert.equal(await reviews.findUsableApproval(r.bindingHash), null);
      await refused(reviews.decide(r.id, bob, 'approve'), 'already_decided_by_you');
      await refused(reviews.decide(r.id, bob, 'deny', 'changed my mind'), 'already_decided_by_you');
      const second = await reviews.decide(r.id, alice, 'approve');
      assert.equal(second.status, 'approved');
      assert.deepEqual(second.decisions.map((d) => d.by), ['bob', 'alice']);
      assert.equal((await reviews.findUsableApproval(r.bindingHash))?.id, r.id);
    }));

  test('concurrent approvals by different approvers are both recorded', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req({ terms: terms({ approvers: ['dba'], minApprovals: 2 }) }));
      const [a, b] = await Promise.all([reviews.decide(r.id, bob, 'approve'), reviews.decide(r.id, carol, 'approve')]);
      assert.deepEqual([a.status, b.status], ['pending', 'approved']);
      assert.equal((await reviews.get(r.id))?.decisions.length, 2);
    }));

  test('a deny decides at once and carries its reason', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req({ terms: terms({ approvers: ['dba'], minApprovals: 2 }) }));
      await reviews.decide(r.id, bob, 'approve');
      const denied = await reviews.decide(r.id, carol, 'deny', '  touches the wrong table  ');
      assert.equal(denied.status, 'denied');
      assert.equal(denied.decisions.at(-1)?.comment, 'touches the wrong table');
      assert.equal(await reviews.findUsableApproval(r.bindingHash), null);
      await refused(reviews.decide(r.id, alice, 'approve'), 'not_approver');
      await refused(reviews.decide(r.id, identity('erin', ['dba']), 'approve'), 'not_pending');
    }));

  test('an expired review cannot be approved, and is marked expired', () =>
    withService(async ({ reviews, store }) => {
      const r = await reviews.request(req({ terms: terms({ expiresInMs: 20 }) }));
      await sleep(40);
      await refused(reviews.decide(r.id, alice, 'approve'), 'expired');
      assert.equal((await reviews.get(r.id))?.status, 'expired');
      await refused(reviews.decide(r.id, alice, 'approve'), 'expired');
      const events = await journalEvents(store);
      assert.deepEqual(
        events.map((e) => [e.type, e.data.decision, e.data.by]),
        [
          ['review.requested', undefined, undefined],
          ['review.decided', 'expired', 'gatehouse'],
        ],
      );
    }));

  test('an approval past its expiry is neither usable nor consumable', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req({ terms: terms({ expiresInMs: 400 }) }));
      await reviews.decide(r.id, alice, 'approve');
      await sleep(450);
      assert.equal(await reviews.findUsableApproval(r.bindingHash), null);
      assert.equal(await reviews.consume(r.id), false);
    }));

  test('waitForDecision resolves on a decision, and at its timeout', () =>
    withService(async ({ reviews }) => {
      const r = await reviews.request(req());
      const t0 = Date.now();
      const waiting = reviews.waitForDecision(r.id, 5000);
      setTimeout(() => void reviews.decide(r.id, alice, 'approve'), 30);
      const decided = await waiting;
      assert.equal(decided.status, 'approved');
      assert.ok(Date.now() - t0 < 2000);
      // Already decided: at once.
      assert.equal((await reviews.waitForDecision(r.id, 5000)).status, 'approved');

      const r2 = await reviews.request(req({ text: 'DELETE FROM orders' }));
      const t1 = Date.now();
      const timedOut = await reviews.waitForDecision(r2.id, 60);
      assert.equal(timedOut.status, 'pending');
      assert.ok(Date.now() - t1 >= 50);

      // A partial approval is no decision.
      const r3 = await reviews.request(req({ text: 'DELETE FROM items', terms: terms({ approvers: ['dba'], minApprovals: 2 }) }));
      setTimeout(() => void reviews.decide(r3.id, bob, 'approve'), 10);
      assert.equal((await reviews.waitForDecision(r3.id, 150)).decisions.length, 1);
      setTimeout(() => void reviews.decide(r3.id, carol, 'deny', 'no'), 10);
      assert.equal((await reviews.waitForDecision(r3.id, 5000)).status, 'denied');

      await refused(reviews.waitForDecision('r-missing000', 10), 'not_found');
    }));

  test('expireStale expires waiting reviews of dead sessions, and any past its expiry', () =>
    withService(async ({ reviews, store }) => {
      const live = await reviews.request(req({ sessionId: 'live' }));
      const dead = await reviews.request(req({ sessionId: 'dead' }));
      const old = await reviews.request(req({ sessionId: 'live', terms: terms({ expiresInMs: 10 }) }));
      const decided = await reviews.request(req({ sessionId: 'dead' }));
      await reviews.decide(decided.id, alice, 'approve');
      // A deferred review outlives its session (the client comes back later), not its expiry.
      const deferred = await reviews.request(req({ sessionId: 'dead', terms: terms({ mode: 'defer' }) }));
      const deferredOld = await reviews.request(req({ sessionId: 'dead', terms: terms({ mode: 'defer', expiresInMs: 10 }) }));
      await sleep(30);
      const waiting = reviews.waitForDecision(dead.id, 5000);
      assert.equal(await reviews.expireStale(new Set(['live'])), 3);
      assert.equal((await waiting).status, 'expired');
      assert.equal((await reviews.get(live.id))?.status, 'pending');
      assert.equal((await reviews.get(dead.id))?.status, 'expired');
      assert.equal((await reviews.get(old.id))?.status, 'expired');
      assert.equal((await reviews.get(decided.id))?.status, 'approved');
      assert.equal((await reviews.get(deferred.id))?.status, 'pending');
      assert.equal((await reviews.get(deferredOld.id))?.status, 'expired');
      // As at startup: nothing is live.
      assert.equal(await reviews.expireStale(new Set()), 1);
      assert.equal((await reviews.get(live.id))?.status, 'expired');
      assert.equal((await reviews.get(deferred.id))?.status, 'pending');
      assert.equal(await reviews.expireStale(new Set()), 0);
      const expiries = (await journalEvents(store)).filter((e) => e.data.decision === 'expired');
      assert.equal(expiries.length, 4);
      assert.ok(expiries.every((e) => e.data.by === 'gatehouse' && e.data.status === 'expired'));
    }));

  test('journal: requested then decided, in the requester\'s timeline, and the chain verifies', () =>
    withService(async ({ reviews, store, journal, publicKeyPem }) => {
      const r = await reviews.request(req({ terms: terms({ approvers: ['dba'], minApprovals: 2 }) }));
      await reviews.decide(r.id, bob, 'approve', 'ok by me');
      await reviews.decide(r.id, carol, 'approve');
      await reviews.consume(r.id);
      const events = await journalEvents(store);
      assert.deepEqual(events.map((e) => e.type), ['review.requested', 'review.decided', 'review.decided']);
      for (const e of events) {
        assert.equal(e.session, 'sess-1');
        assert.equal(e.identity.name, 'agent-1');
      }
      const [requested, first, second] = events;
      assert.deepEqual(requested!.data, {
        id: r.id,
        text: r.text,
        params: ['42'],
        rule: 'writes-need-review',
        reason: 'writes by agents need review',
        approvers: ['dba'],
        minApprovals: 2,
        expiresAt: r.expiresAt,
        mode: 'wait',
      });
      assert.deepEqual([first!.data.by, first!.data.decision, first!.data.comment, first!.data.status], ['bob', 'approve', 'ok by me', 'pending']);
      assert.deepEqual([second!.data.by, second!.data.decision, second!.data.comment, second!.data.status], ['carol', 'approve', null, 'approved']);
      await journal.checkpoint();
      const report = await verifyStore(store, publicKeyPem);
      assert.equal(report.ok, true, JSON.stringify(report.firstBad));
      assert.equal(report.events, 3);
    }));

  test('the preview runs in the background, bounded, errors captured', () =>
    withService(
      async ({ reviews }) => {
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        const ok = await reviews.request(
          req({
            preview: async () => {
              await gate;
              return { plan: 'Delete on orders\n  -> Index Scan', estimatedRows: 1, affectedRows: 1 };
            },
          }),
        );
        assert.equal(ok.preview, null, 'the request did not wait for the preview');
        release();
        const failing = await reviews.request(req({ text: 'DELETE FROM a', preview: async () => Promise.reject(new Error('relation "a" does not exist')) }));
        const slow = await reviews.request(req({ text: 'DELETE FROM b', preview: () => new Promise(() => {}) }));
        const none = await reviews.request(req({ text: 'DELETE FROM c', preview: async () => null }));
        await reviews.idle();
        assert.deepEqual((await reviews.get(ok.id))?.preview, { plan: 'Delete on orders\n  -> Index Scan', estimatedRows: 1, affectedRows: 1 });
        assert.deepEqual((await reviews.get(failing.id))?.preview, { error: 'relation "a" does not exist' });
        assert.match((await reviews.get(slow.id))?.preview?.error ?? '', /did not finish within/);
        assert.equal((await reviews.get(none.id))?.preview, null);
      },
      { previewTimeoutMs: 100 },
    ));

  test('approval links need publicUrl', () =>
    withService(
      async ({ reviews }) => {
        assert.equal(reviews.approvalUrl('r-abc'), 'https://gate.example.com/approvals/r-abc');
        assert.equal(new ReviewService(null as never, null as never).approvalUrl('r-abc'), null);
      },
      { publicUrl: 'https://gate.example.com/' },
    ));

  test('the webhook is signed, and its failures are reported, never thrown', async () => {
    const secret = 'hook-secret';
    const received: { body: string; signature: string | undefined }[] = [];
    let status = 204;
    const server = http.createServer((rq, rs) => {
      let body = '';
      rq.on('data', (d) => (body += d));
      rq.on('end', () => {
        received.push({ body, signature: rq.headers['x-gatehouse-signature'] as string | undefined });
        rs.writeHead(status).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const errors: Error[] = [];
    try {
      await withService(
        async ({ reviews }) => {
          const r = await reviews.request(req());
          await reviews.idle();
          assert.equal(received.length, 1);
          const { body, signature } = received[0]!;
          assert.equal(signature, 'sha256=' + createHmac('sha256', secret).update(body).digest('hex'));
          const payload = JSON.parse(body);
          assert.equal(payload.type, 'review.requested');
          assert.equal(payload.review.id, r.id);
          assert.equal(payload.url, `http://console.test/approvals/${r.id}`);
          assert.equal(errors.length, 0);

          status = 500;
          await reviews.request(req({ text: 'DELETE FROM x' }));
          await reviews.idle();
          assert.equal(errors.length, 1);
          assert.match(errors[0]!.message, /HTTP 500/);
        },
        { publicUrl: 'http://console.test', webhook: { url: `http://127.0.0.1:${port}/hook?token=abc`, secret }, onError: (e) => errors.push(e) },
      );
      // An unreachable receiver: the request still succeeds.
      await new Promise<void>((r) => server.close(() => r()));
      await withService(
        async ({ reviews }) => {
          const r = await reviews.request(req());
          assert.equal(r.status, 'pending');
          await reviews.idle();
          assert.equal(errors.length, 2);
          assert.match(errors[1]!.message, /webhook for review .* failed/);
          assert.doesNotMatch(errors[1]!.message, /token=abc/);
        },
        { webhook: { url: `http://127.0.0.1:${port}/hook?token=abc`, secret }, onError: (e) => errors.push(e) },
      );
    } finally {
      server.close();
    }
  });
});
