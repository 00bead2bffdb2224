import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import pg from 'pg';
import {
  ScramError,
  ScramServerSession,
  createScramVerifier,
  parseScramVerifier,
  saslprep,
  verifyPasswordAgainstVerifier,
} from '../../src/protocols/postgres/scram.ts';
import { connectionConfig, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';

// pg's client-side SCRAM, so the server is checked against an independent
// implementation rather than against itself. In pg 8.23 startSession and
// finalizeSession are sync, continueSession is async (WebCrypto).
interface PgSaslSession {
  mechanism: string;
  response: string;
}
const sasl = createRequire(import.meta.url)('pg/lib/crypto/sasl') as {
  startSession(mechanisms: string[], stream?: unknown): PgSaslSession;
  continueSession(session: PgSaslSession, password: string, serverData: string, stream?: unknown): Promise<void>;
  finalizeSession(session: PgSaslSession, serverData: string): void;
};

/** Runs a whole exchange; returns the server's verdict after pg's client verified the server signature. */
async function exchange(server: ScramServerSession, password: string, stream?: unknown): Promise<boolean> {
  const session = sasl.startSession(['SCRAM-SHA-256'], stream);
  const serverFirst = server.clientFirst(session.response);
  await sasl.continueSession(session, password, serverFirst, stream);
  const result = server.clientFinal(session.response);
  if (!result.ok) return false;
  sasl.finalizeSession(session, result.serverFinal); // throws if the server proof is wrong
  return true;
}

const VERIFIER_RE = /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/;

test('verifier has the PostgreSQL storage format', () => {
  const v = createScramVerifier('secret');
  assert.match(v, VERIFIER_RE);
  assert.equal(parseScramVerifier(v)?.salt.length, 16);
  assert.match(createScramVerifier('secret', 10), /^SCRAM-SHA-256\$10:/);
  assert.notEqual(createScramVerifier('secret'), v, 'salt must be random');
  assert.throws(() => createScramVerifier('x', 0), RangeError);
});

test('full exchange with pg client succeeds', async () => {
  const v = createScramVerifier('correct horse');
  assert.equal(await exchange(new ScramServerSession(v), 'correct horse'), true);
});

test('full exchange with gs2 flag "y" (client supports binding, server does not offer it)', async () => {
  const v = createScramVerifier('pw');
  const fakeTlsStream = {}; // pg only looks at the stream for -PLUS, which we do not offer
  const session = sasl.startSession(['SCRAM-SHA-256'], fakeTlsStream);
  assert.ok(session.response.startsWith('y,,'));
  assert.equal(await exchange(new ScramServerSession(v), 'pw', fakeTlsStream), true);
});

test('non-ASCII password goes through SASLprep consistently', async () => {
  const pw = 'pässwörd\u00A0ﬁ'; // NBSP -> space, ligature -> "fi" under NFKC
  const v = createScramVerifier(pw);
  assert.equal(await exchange(new ScramServerSession(v), pw), true);
  assert.equal(verifyPasswordAgainstVerifier(v, 'pässwörd fi'), true);
  assert.equal(saslprep('plain ascii\x01'), 'plain ascii\x01');
  assert.equal(saslprep('ü\u0007'), 'ü\u0007', 'prohibited characters fall back to the raw password');
});

test('wrong password fails', async () => {
  const v = createScramVerifier('right');
  assert.equal(await exchange(new ScramServerSession(v), 'wrong'), false);
});

test('unknown user runs a full exchange that fails and looks like a real one', async () => {
  const first = (s: ScramServerSession) => s.clientFirst('n,,n=,r=abcdefghijklmnop');
  const a = new ScramServerSession(null, { mockSeed: 'alice' });
  assert.equal(a.doomedReason, 'unknown-user');
  const sfA = first(a);
  const sfA2 = first(new ScramServerSession(null, { mockSeed: 'alice' }));
  const sfB = first(new ScramServerSession(null, { mockSeed: 'bob' }));
  const salt = (sf: string) => /,s=([^,]+),/.exec(sf)?.[1];
  assert.equal(salt(sfA), salt(sfA2), 'fake salt must be stable per user');
  assert.notEqual(salt(sfA), salt(sfB));
  assert.equal(Buffer.from(salt(sfA)!, 'base64').length, 16);
  assert.match(sfA, /,i=4096$/);
  assert.equal(await exchange(new ScramServerSession(null), 'anything'), false);
});

test('invalid stored verifier fails like a wrong password', async () => {
  const s = new ScramServerSession('md5abcdef');
  assert.equal(s.doomedReason, 'invalid-verifier');
  assert.equal(await exchange(s, 'md5abcdef'), false);
});

test('malformed client-first messages throw ScramError', () => {
  const bad = [
    '',
    'n,,',
    'n,,n=,r=' + 'a'.repeat(1100),
    'p=tls-server-end-point,,n=,r=abc',
    'n,a=bob,n=,r=abc',
    'x,,n=,r=abc',
    'n,,r=abc',
    'n,,n=,r=',
    'n,,n=,r=ab,c',
    'n,,n=,r=a\u0000b',
    'n,,n=,r=ab\u00e9',
    'n,,m=ext,n=,r=abc',
    'n,,n=bad=name,r=abc',
    'n,,n=,x=abc',
  ];
  for (const msg of bad) {
    assert.throws(() => new ScramServerSession(createScramVerifier('pw', 1)).clientFirst(msg), ScramError, JSON.stringify(msg));
  }
  const err = (() => {
    try {
      new ScramServerSession(null).clientFirst('p=tls-server-end-point,,n=,r=abc');
    } catch (e) {
      return e as ScramError;
    }
  })();
  assert.equal(err?.sqlState, '08P01');
  assert.match(err!.message, /channel binding/);
  // Extensions after the nonce are allowed by RFC 5802.
  assert.doesNotThrow(() => new ScramServerSession(null).clientFirst('n,,n=*,r=abc,x=ext'));
});

test('malformed client-final messages throw ScramError', () => {
  const v = createScramVerifier('pw', 1);
  const start = () => {
    const s = new ScramServerSession(v);
    const nonce = /^r=([^,]+),/.exec(s.clientFirst('n,,n=,r=clientnonce'))![1];
    return { s, nonce };
  };
  const proof = Buffer.alloc(32).toString('base64');
  const cases: Array<(nonce: string) => string> = [
    (n) => `c=biws,r=${n}`,
    (n) => `c=eSws,r=${n},p=${proof}`, // gs2 header changed from n to y
    (n) => `c=biws,r=${n}x,p=${proof}`,
    () => `c=biws,r=clientnonce,p=${proof}`,
    (n) => `c=biws,r=${n},p=${Buffer.alloc(31).toString('base64')}`,
    (n) => `c=biws,r=${n},p=!!!!`,
    (n) => `c=biws,r=${n},p=${proof},x=trailing`,
    (n) => `r=${n},c=biws,p=${proof}`,
    (n) => `c=biws,r=${n},p=${proof}${' '.repeat(1100)}`,
  ];
  for (const make of cases) {
    const { s, nonce } = start();
    assert.throws(() => s.clientFinal(make(nonce)), ScramError, make(nonce).slice(0, 80));
  }
  assert.throws(() => new ScramServerSession(v).clientFinal(`c=biws,r=x,p=${proof}`), ScramError, 'final before first');
  const { s } = start();
  assert.throws(() => s.clientFirst('n,,n=,r=again'), ScramError, 'first twice');
  // A well-formed but wrong proof is a plain failure, not an error.
  const { s: s2, nonce } = start();
  assert.deepEqual(s2.clientFinal(`c=biws,r=${nonce},p=${proof}`), { ok: false });
  assert.throws(() => s2.clientFinal(`c=biws,r=${nonce},p=${proof}`), ScramError, 'no second attempt on one session');
});

test('cleartext verification', () => {
  const v = createScramVerifier('hunter2');
  assert.equal(verifyPasswordAgainstVerifier(v, 'hunter2'), true);
  assert.equal(verifyPasswordAgainstVerifier(v, 'hunter3'), false);
  assert.equal(verifyPasswordAgainstVerifier(v, ''), false);
  assert.equal(verifyPasswordAgainstVerifier('garbage', 'hunter2'), false);
  assert.equal(verifyPasswordAgainstVerifier(v.replace(/:[^:]+$/, ':' + Buffer.alloc(32).toString('base64')), 'hunter2'), false);
});

test('verifiers interoperate with PostgreSQL in both directions', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres')) return;
  const server = await startPostgres();
  const admin = new pg.Client(connectionConfig(server));
  // One hook, so the client is closed before the server goes away (a server
  // shutdown under an open client is an uncaught 57P01 error).
  t.after(async () => {
    await admin.end().catch(() => {});
    await server.stop();
  });
  await admin.connect();

  for (const pw of ['s3cret-pw', 'pässwörd\u00A0ﬁ']) {
    // Ours -> PostgreSQL: a verifier we made lets a real client log in.
    await admin.query(`drop role if exists gh_ours`);
    await admin.query(`create role gh_ours login password '${createScramVerifier(pw)}'`);
    const c = new pg.Client(connectionConfig(server, { user: 'gh_ours', password: pw }));
    await c.connect();
    assert.equal((await c.query('select current_user as u')).rows[0].u, 'gh_ours');
    await c.end();
    const wrong = new pg.Client(connectionConfig(server, { user: 'gh_ours', password: pw + 'x' }));
    await assert.rejects(wrong.connect(), /password authentication failed/);

    // PostgreSQL -> ours: a verifier PostgreSQL made works for both paths here.
    await admin.query(`drop role if exists gh_theirs`);
    await admin.query(`set password_encryption = 'scram-sha-256'`);
    await admin.query(`create role gh_theirs login password '${pw}'`);
    const { rows } = await admin.query(`select rolpassword from pg_authid where rolname = 'gh_theirs'`);
    const theirs = rows[0].rolpassword as string;
    assert.match(theirs, VERIFIER_RE);
    assert.equal(verifyPasswordAgainstVerifier(theirs, pw), true);
    assert.equal(verifyPasswordAgainstVerifier(theirs, pw + 'x'), false);
    assert.equal(await exchange(new ScramServerSession(theirs), pw), true);
  }
});
