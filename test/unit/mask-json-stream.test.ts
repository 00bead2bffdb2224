import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMaskConfig, type MaskConfigInput } from '../../src/mask/config.ts';
import { newCounts, type Counts } from '../../src/mask/counts.ts';
import { JSON_TOKEN_CAP, JsonStreamMasker, type JsonStreamOptions } from '../../src/mask/json-stream.ts';
import type { Detector } from '../../src/mask/detectors.ts';
import { Masker, type ColumnPlanEntry } from '../../src/mask/masker.ts';
import { prng, bestCpu } from '../helpers/random.ts';

const SECRET = Buffer.from('json-stream-test-secret');
const masker = (cfg: MaskConfigInput = {}) => new Masker(parseMaskConfig(cfg), SECRET);
const M = masker();

interface Run {
  out: Buffer;
  counts: Counts;
  fellBack: boolean;
  /** the largest Buffer push()/end() returned */
  maxOut: number;
  /** the most held back after any push() */
  maxHeld: number;
}

/** Pushes `chunks` through a fresh JsonStreamMasker and collects everything. */
function run(m: Masker, chunks: readonly Buffer[], opts?: JsonStreamOptions): Run {
  const j = new JsonStreamMasker(m, opts);
  const parts: Buffer[] = [];
  let maxOut = 0;
  let maxHeld = 0;
  for (const c of chunks) {
    const o = j.push(c);
    parts.push(Buffer.from(o)); // a copy: the output may be a view of the chunk
    maxOut = Math.max(maxOut, o.length);
    maxHeld = Math.max(maxHeld, j.held);
  }
  const o = j.end();
  parts.push(o);
  maxOut = Math.max(maxOut, o.length);
  return { out: Buffer.concat(parts), counts: { ...j.counts }, fellBack: j.fellBack, maxOut, maxHeld };
}

const whole = (m: Masker, s: string | Buffer, opts?: JsonStreamOptions) => run(m, [Buffer.isBuffer(s) ? s : Buffer.from(s)], opts);
const maskJson = (s: string, m = M, opts?: JsonStreamOptions) => whole(m, s, opts).out.toString('utf8');

/** Random split points: single bytes, small, medium or large pieces (mid-UTF-8 included), some empty. */
function split(r: () => number, b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const mode = Math.floor(r() * 4);
  for (let i = 0; i < b.length; ) {
    const n = mode === 0 ? 1 + Math.floor(r() * 3) : mode === 1 ? 1 + Math.floor(r() * 40) : mode === 2 ? 1 + Math.floor(r() * 3000) : r() < 0.5 ? 1 : 1 + Math.floor(r() * 20000);
    out.push(b.subarray(i, i + n));
    i += n;
    if (r() < 0.05) out.push(Buffer.alloc(0));
  }
  return out;
}

// --- keys by name ------------------------------------------------------------------------------------

test('values under keys that name a secret are masked by the column rule; the rest pass byte for byte', () => {
  const input = '{"id": 7, "password":"hunter2", "user": {"name": "bob", "api_key": "abc123", "Refresh_Token": "r-1"},\n' +
    ' "items": [{"token": "t1", "n": 1}, {"token": "t2", "n": 2}], "db_secret": 12345, "client_secret": true, "passwd": null, "ok": false}';
  const r = whole(M, input);
  assert.equal(
    r.out.toString(),
    '{"id": 7, "password":"[MASKED:password]", "user": {"name": "bob", "api_key": "[MASKED:api_key]", "Refresh_Token": "[MASKED:Refresh_Token]"},\n' +
      ' "items": [{"token": "[MASKED:token]", "n": 1}, {"token": "[MASKED:token]", "n": 2}], "db_secret": "[MASKED:db_secret]", "client_secret": "[MASKED:client_secret]", "passwd": null, "ok": false}',
  );
  assert.deepEqual(r.counts, { 'column:password': 1, 'column:api_key': 1, 'column:Refresh_Token': 1, 'column:token': 2, 'column:db_secret': 1, 'column:client_secret': 1 });
  assert.equal(r.fellBack, false);
  // nothing to mask: the very same bytes
  const clean = '{ "a" : [1, -2.5e+3, true, false, null, "x\\u0041\\n\\/"], "b": {} , "c": [ ] }';
  assert.equal(maskJson(clean), clean);
});

test('an object or array under a secret key has every scalar inside masked; a deeper rule takes over', () => {
  const input = JSON.stringify({ secret: { a: 'x', b: [1, true, null, 'y', { note: 'z' }], password: 'p' }, name: 'n' });
  const r = whole(M, input);
  assert.deepEqual(JSON.parse(r.out.toString()), {
    secret: { a: '[MASKED:secret]', b: ['[MASKED:secret]', '[MASKED:secret]', null, '[MASKED:secret]', { note: '[MASKED:secret]' }], password: '[MASKED:password]' },
    name: 'n',
  });
  assert.deepEqual(r.counts, { 'column:secret': 5, 'column:password': 1 });
});

test('configured rules: strategies, labels, scan, match globs, defaultColumns off', () => {
  const m = masker({
    columns: [
      { name: 'card_*', strategy: 'partial' },
      { name: 'email', strategy: 'hash' },
      { name: 'ssn', strategy: null },
      { name: 'tokens_used', strategy: 'scan' },
      { name: 'pin', label: 'hidden' },
      { match: 'iban', strategy: 'partial', keep: 2 },
    ],
  });
  const out = JSON.parse(
    maskJson(
      JSON.stringify({ card_no: '4111111111111111', card_num: 4111111111111111, email: 'a@example.com', ssn: '123-45-6789', ssn_n: 5, tokens_used: 1234, pin: 1234, iban: 'DE89370400440532013000', list: { ssn: [1, 'x'] } }),
      m,
    ),
  );
  assert.deepEqual(out, {
    card_no: '****1111',
    card_num: '****1111',
    email: m.hash('a@example.com'),
    ssn: null,
    ssn_n: 5, // the glob is `ssn`: no match
    tokens_used: 1234, // scan: a number the detectors find nothing in stays a number
    pin: '[MASKED:hidden]',
    iban: '****00',
    list: { ssn: [null, null] },
  });
  // defaultColumns off: a password is just a string (scanned)
  assert.equal(maskJson('{"password":"hunter2"}', masker({ defaultColumns: false })), '{"password":"hunter2"}');
});

// --- detectors -----------------------------------------------------------------------------------------

test('detectors scan string values, numbers and key names; the key is context for the value', () => {
  const AWS = 'AKIAIOSFODNN7EXAMPLE';
  const JWT = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c';
  const input = JSON.stringify({
    msg: 'write to alice@example.com today',
    creds: [AWS, `Bearer ${JWT}`, 'nothing here'],
    card: 4111111111111111,
    small: 42,
    'bob@example.com': 'owner',
    auth: 'Zx9kQ2mP8rT4vW7yB3nL6hJ', // high entropy under a key the assignment detector knows
    label: 'Zx9kQ2mP8rT4vW7yB3nL6hJ', // the same value under an innocent key
    ip: '10.1.2.3',
  });
  const r = whole(M, input);
  const out = JSON.parse(r.out.toString());
  assert.deepEqual(out, {
    msg: 'write to [MASKED:email] today',
    creds: ['[MASKED:aws]', 'Bearer [MASKED:jwt]', 'nothing here'],
    card: '****1111',
    small: 42,
    '[MASKED:email]': 'owner',
    auth: '[MASKED:assignment]',
    label: 'Zx9kQ2mP8rT4vW7yB3nL6hJ',
    ip: M.hash('10.1.2.3'),
  });
  assert.deepEqual(r.counts, { email: 2, aws: 1, jwt: 1, card: 1, assignment: 1, ip: 1 });
  // a key masked by the detectors that also has a rule: the rule's label and count use the masked name
  const m = masker({ columns: [{ name: '*@*', strategy: 'redact' }] });
  const k = whole(m, '{"x@example.com": "v"}');
  assert.equal(k.out.toString(), '{"[MASKED:email]": "[MASKED:[MASKED:email]]"}');
  assert.deepEqual(k.counts, { email: 1, 'column:[MASKED:email]': 1 });
  assert.ok(!k.out.includes('x@example.com'));
});

test('escapes and unicode: decoded before scanning, re-encoded when masked, kept as they were otherwise', () => {
  // an email spelled with escapes is still an email
  assert.equal(maskJson('{"a":"mail a\\u0040example.com now"}'), '{"a":"mail [MASKED:email] now"}');
  assert.equal(maskJson('["x\\/y", "\\ud83d\\ude00 caf\\u00e9", "ünïcødé 中文 😀"]'), '["x\\/y", "\\ud83d\\ude00 caf\\u00e9", "ünïcødé 中文 😀"]');
  // masked: JSON.stringify of the result, so quotes, backslashes, control characters and pairs survive
  const v = 'q"uo\\te\n\t\u0001 😀 é a@example.com \ud800 lone';
  const out = maskJson(JSON.stringify({ v, password: v }));
  assert.deepEqual(JSON.parse(out), { v: 'q"uo\\te\n\t\u0001 😀 é [MASKED:email] \ud800 lone', password: '[MASKED:password]' });
  // hash of a value with escapes: the decoded value is hashed
  const m = masker({ columns: [{ name: 'h', strategy: 'hash' }] });
  assert.equal(maskJson('{"h":"\\u0061b"}', m), `{"h":"${m.hash('ab')}"}`);
  // partial keeps a surrogate pair whole
  const p = masker({ columns: [{ name: 'p', strategy: 'partial', keep: 2 }] });
  assert.deepEqual(JSON.parse(maskJson('{"p":"abcdef\\ud83d\\ude00"}', p)), { p: '****😀' });
});

test('a detector that throws: the value is withheld (closed) or passed (open), counted, and the output stays JSON', () => {
  const boom: Detector = {
    name: 'boom',
    maxLength: 16,
    scan(text, from, limit) {
      if (text.slice(from, limit).includes('boom')) throw new Error('detector failed');
      return limit;
    },
  };
  const closed = new Masker(parseMaskConfig({ detectors: { default: 'off' } }), SECRET, { detectors: [{ detector: boom }] });
  const r = whole(closed, '{"a":"boom","b":"ok","c":["x boom"]}');
  assert.equal(r.out.toString(), '{"a":"[MASKED:error]","b":"ok","c":["[MASKED:error]"]}');
  assert.deepEqual(r.counts, { error: 2 });
  // a long value, masked in pieces
  const long = JSON.stringify({ v: `${'x'.repeat(100)} boom ${'y'.repeat(100)}`, w: 1 });
  const p = whole(closed, long, { tokenCap: 64 });
  const out = JSON.parse(p.out.toString());
  assert.ok(out.v.includes('[MASKED:error]') && !out.v.includes('boom') && out.w === 1, p.out.toString());
  assert.equal(p.counts.error, 1);
  const open = new Masker(parseMaskConfig({ onError: 'open', detectors: { default: 'off' } }), SECRET, { detectors: [{ detector: boom }] });
  const o = whole(open, '{"a":"boom"}');
  assert.equal(o.out.toString(), '{"a":"boom"}');
  assert.deepEqual(o.counts, { error: 1 });
});

// --- chunking ------------------------------------------------------------------------------------------

const DOCS = [
  '{"password":"hunter2","user":{"api_key":"abc","name":"bøb","mail":"bob@example.com"},"items":[{"token":"t1"},{"token":2}],"n":4111111111111111,"f":-1.5e-3}',
  '[{"note":"caf\\u00e9 \\ud83d\\ude00 😀 a\\u0040example.com \\"q\\" \\\\"},true,false,null,0,-0.0,12e5]\n',
  '{"a@example.com": {"secret": [1, {"x": "y"}]}, "auth": "Zx9kQ2mP8rT4vW7yB3nL6hJ", "ip": "10.0.0.1"}\n{"k":"v"}\n[]\n"s" 1 2.5 true\n',
];

test('every split position gives the same output as one push (two pieces, and byte by byte)', () => {
  for (const doc of DOCS) {
    const b = Buffer.from(doc);
    const one = whole(M, b);
    if (!doc.includes('\n"s" 1')) JSON.parse(one.out.toString()); // valid in, valid out
    for (let k = 1; k < b.length; k++) {
      const r = run(M, [b.subarray(0, k), b.subarray(k)]);
      assert.equal(r.out.toString(), one.out.toString(), `split at ${k} of ${JSON.stringify(doc)}`);
      assert.deepEqual(r.counts, one.counts);
    }
    const bytes = run(M, Array.from(b, (x) => Buffer.from([x])));
    assert.equal(bytes.out.toString(), one.out.toString());
    assert.deepEqual(bytes.counts, one.counts);
  }
  // the same with a tiny token cap: long strings and keys go through the detector pass in pieces
  const long = JSON.stringify({ ['k'.repeat(150)]: `${'é'.repeat(40)} mail a@example.com ${'\\'.repeat(30)}\u0001😀${'x'.repeat(50)}`, password: 'p'.repeat(200), n: Number('1'.repeat(20)) });
  const b = Buffer.from(long);
  const one = whole(M, b, { tokenCap: 64 });
  assert.deepEqual(JSON.parse(one.out.toString()), {
    ['k'.repeat(150)]: `${'é'.repeat(40)} mail [MASKED:email] ${'\\'.repeat(30)}\u0001😀${'x'.repeat(50)}`,
    password: '[MASKED:password]',
    n: Number('1'.repeat(20)),
  });
  for (let k = 1; k < b.length; k++) {
    const r = run(M, [b.subarray(0, k), b.subarray(k)], { tokenCap: 64 });
    assert.equal(r.out.toString(), one.out.toString(), `split at ${k}`);
    assert.deepEqual(r.counts, one.counts);
  }
});

test('JSON lines and concatenated values: a Kubernetes watch stream', () => {
  const events = Array.from({ length: 50 }, (_, i) => ({
    type: i % 3 === 0 ? 'ADDED' : 'MODIFIED',
    object: { kind: 'Secret', metadata: { name: `s${i}`, annotations: { owner: `dev${i}@example.com` } }, data: { password: `cGFzcw${i}`, 'api_key': 'x' }, stringData: { token: 't' } },
  }));
  const text = events.map((e) => JSON.stringify(e)).join('\n') + '\n';
  const r = run(M, split(prng(5), Buffer.from(text)));
  assert.equal(r.fellBack, false);
  const lines = r.out.toString().split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, events.length);
  lines.forEach((l, i) => {
    const o = JSON.parse(l);
    assert.equal(o.object.metadata.name, `s${i}`);
    assert.equal(o.object.metadata.annotations.owner, '[MASKED:email]');
    assert.deepEqual(o.object.data, { password: '[MASKED:password]', api_key: '[MASKED:api_key]' });
    assert.deepEqual(o.object.stringData, { token: '[MASKED:token]' });
  });
  assert.deepEqual(r.counts, { email: 50, 'column:password': 50, 'column:api_key': 50, 'column:token': 50 });
  // no separators between self-delimiting values
  assert.equal(maskJson('{"password":1}{"password":2}[3]"a@example.com"'), '{"password":"[MASKED:password]"}{"password":"[MASKED:password]"}[3]"[MASKED:email]"');
});

// --- not JSON ----------------------------------------------------------------------------------------

test('invalid JSON: from the error on, the rest is masked as text, nothing leaks, nothing throws', () => {
  const cases: [string, string][] = [
    ['{"a": 1} <html>mail me a@example.com</html>', '{"a": 1} <html>mail me [MASKED:email]</html>'],
    ['<!doctype html><p>a@example.com', '<!doctype html><p>[MASKED:email]'],
    ['{"a": "x\u0001 a@example.com"}', '{"a": "x\u0001 [MASKED:email]"}'], // a raw control character
    ['{"a": tru a@example.com}', '{"a": tru [MASKED:email]}'],
    ['{"a": 01, "b": "a@example.com"}', '{"a": 01, "b": "[MASKED:email]"}'],
    ['{"a" 1, "mail": "a@example.com"}', '{"a" 1, "mail": "[MASKED:email]"}'],
    ['[1, 2} a@example.com', '[1, 2} [MASKED:email]'],
    ['{"a": "bad \\x escape a@example.com"}', '{"a": "bad \\x escape [MASKED:email]"}'],
    ['\ufeff{"a": "a@example.com"}', '\ufeff{"a": "[MASKED:email]"}'], // a BOM is not JSON
    // cut off inside a value under a rule: the rule still applies
    ['{"password": "hunter2', '{"password": [MASKED:password]'],
    ['{"password": "hunter2\u0001rest a@example.com"}', '{"password": [MASKED:password]\u0001rest [MASKED:email]"}'],
    ['{"secret": 12', '{"secret": "[MASKED:secret]"'], // a complete number at the end is a value
    ['{"secret": -', '{"secret": [MASKED:secret]'],
    ['{"note": "a@example.com', '{"note": "[MASKED:email]'],
  ];
  for (const [input, expected] of cases) {
    const one = whole(M, input);
    assert.equal(one.out.toString(), expected, input);
    for (let k = 1; k < input.length; k++) {
      const b = Buffer.from(input);
      assert.equal(run(M, [b.subarray(0, k), b.subarray(k)]).out.toString(), expected, `${input} split at ${k}`);
    }
  }
  assert.equal(whole(M, '<p>').fellBack, true);
  // too deep: treated as not JSON
  const deep = '['.repeat(600) + '"a@example.com"' + ']'.repeat(600);
  const d = whole(M, deep);
  assert.equal(d.fellBack, true);
  assert.ok(!d.out.includes('a@example.com') && d.out.includes('[MASKED:email]'));
  assert.equal(whole(M, '['.repeat(100) + ']'.repeat(100), { maxDepth: 100 }).fellBack, false);
  assert.throws(() => {
    const j = new JsonStreamMasker(M);
    j.end();
    j.push(Buffer.from('{}'));
  }, /push after end/);
});

test('property: mutated documents never leak an email, and chunking does not change the output', () => {
  const GARBAGE = ['<', '}', ']', ',', ':', '\u0001', "'", 'x', '\\', '"', '{', '\n', '01', 'tru', '-', '\ufeff', '\xff'];
  let fell = 0;
  for (let it = 0; it < 800; it++) {
    const r = prng(0xbad + it);
    const { json } = generateDoc(r, r() < 0.3 ? 64 : 1000);
    let text = json;
    const at = Math.floor(r() * (text.length + 1));
    const mut = Math.floor(r() * 3);
    if (mut === 0) text = text.slice(0, at) + GARBAGE[Math.floor(r() * GARBAGE.length)] + text.slice(at);
    else if (mut === 1) text = text.slice(0, at); // truncated
    else text = text.slice(0, at) + text.slice(at + 1 + Math.floor(r() * 5));
    text += ` trailing leak.me@example.org ${'z'.repeat(Math.floor(r() * 100))}`;
    const b = Buffer.from(text);
    const opts = { tokenCap: r() < 0.3 ? 64 : JSON_TOKEN_CAP };
    const one = whole(M, b, opts);
    if (one.fellBack) fell++;
    const out = one.out.toString();
    for (const e of text.match(/[A-Za-z0-9._%+-]+@[a-z0-9-]+\.[a-z]{2,}/g) ?? []) assert.ok(!out.includes(e), `iteration ${it}: ${e} leaked`);
    const again = run(M, split(r, b), opts);
    assert.equal(again.out.toString(), out, `iteration ${it}`);
    assert.deepEqual(again.counts, one.counts);
  }
  assert.ok(fell > 400, `only ${fell} fell back`);
  assert.equal(M.errors, 0, 'no masking call failed');
});

// --- bounded memory --------------------------------------------------------------------------------

test('a 5 MB string value is masked in pieces: what is held and returned stays bounded', () => {
  const r = prng(9);
  const parts: string[] = [];
  let len = 0;
  while (len < 5_000_000) {
    const p = r() < 0.02 ? ` mail person${parts.length}@example.com ` : r() < 0.05 ? 'é😀\\"\n' : 'lorem ipsum dolor sit amet ';
    parts.push(p);
    len += p.length;
  }
  const value = parts.join('');
  const emails = parts.filter((p) => p.includes('@')).length;
  const doc = Buffer.from(JSON.stringify({ before: 'a@example.com', big: value, after: 1 }));
  for (const size of [65536, 1000, 1 << 20]) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < doc.length; i += size) chunks.push(doc.subarray(i, i + size));
    const res = run(M, chunks);
    const out = JSON.parse(res.out.toString());
    assert.equal(out.before, '[MASKED:email]');
    assert.equal(out.big, M.maskText(value));
    assert.equal(out.after, 1);
    assert.deepEqual(res.counts, { email: emails + 1 });
    assert.ok(res.maxHeld <= JSON_TOKEN_CAP + 40 * 1024, `chunks of ${size}: held ${res.maxHeld}`);
    assert.ok(res.maxOut <= size + 2 * JSON_TOKEN_CAP + 40 * 1024, `chunks of ${size}: returned ${res.maxOut} bytes at once`);
  }
  // the same value under a secret key: swallowed as it arrives, one label at its end
  const secret = Buffer.from(JSON.stringify({ password: value, n: 2 }));
  const chunks: Buffer[] = [];
  for (let i = 0; i < secret.length; i += 65536) chunks.push(secret.subarray(i, i + 65536));
  const res = run(M, chunks);
  assert.equal(res.out.toString(), '{"password":"[MASKED:password]","n":2}');
  assert.ok(res.maxHeld <= JSON_TOKEN_CAP + 65536, `held ${res.maxHeld}`);
  // a hash rule on a value longer than the cap: redacted (hash and partial need all of it)
  const h = masker({ columns: [{ name: 'password', strategy: 'hash' }] });
  assert.equal(run(h, chunks).out.toString(), '{"password":"[MASKED:password]","n":2}');
  assert.equal(whole(h, '{"password":"x"}').out.toString(), `{"password":"${h.hash('x')}"}`);
});

// --- fuzz against a model --------------------------------------------------------------------------

const WORDS = ['the', 'quick', 'fox', 'café', '中文', '😀', 'x"y', 'back\\slash', 'tab\there', 'nl\nx', '\u0001', '/', 'ünï', '\u2028', '2024-05-01T12:30:07Z', 'v1.2.3'];
const HITS = ['alice@example.com', 'bob.smith@mail.example.org', '4111 1111 1111 1111', '10.0.0.1', 'AKIAIOSFODNN7EXAMPLE', '+14155552671', '123-45-6789', 'DE89 3704 0044 0532 0130 00'];
// Keys without a rule contain no assignment keyword (key, secret, token, passw, pwd, credential,
// auth) nor `aws`: the model scans values without their key in front.
const KEYS = ['id', 'name', 'note', 'items', 'data', 'meta', 'x', 'é', 'a b', 'q"k', 'list', '1', 'value', 'tags'];
const RULE_KEYS = ['password', 'api_key', 'client_secret', 'token', 'card_no', 'hashed', 'nulled'];

/** A random JSON document and its text, with random whitespace and random (valid) escapes. */
function generateDoc(r: () => number, longEvery: number, ruleKeys: readonly string[] = RULE_KEYS): { tree: unknown; json: string } {
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T,>(a: readonly T[]): T => a[int(a.length)];
  const str = (): string => {
    if (int(longEvery) === 0) return Array.from({ length: 20 + int(60) }, () => (r() < 0.1 ? pick(HITS) : pick(WORDS))).join(' ');
    return Array.from({ length: int(5) }, () => (r() < 0.15 ? pick(HITS) : pick(WORDS))).join(pick([' ', '', ', ']));
  };
  const num = (): number => pick([0, -1, 42, 3.5, -0.25, 1e21, 1.5e-7, 4111111111111111, 12345678, 2 ** 31]);
  const value = (depth: number): unknown => {
    const k = int(depth > 4 ? 5 : 8);
    if (k === 0) return str();
    if (k === 1) return num();
    if (k === 2) return pick([true, false, null]);
    if (k === 3) return str();
    if (k === 4) return r() < 0.5 ? str() : num();
    if (k === 5) return Array.from({ length: int(5) }, () => value(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = int(6); i > 0; i--) {
      const key = r() < 0.25 ? pick(ruleKeys) : r() < 0.05 ? pick(HITS.slice(0, 2)) : r() < 0.03 ? 'k'.repeat(100) : pick(KEYS);
      o[key] = value(depth + 1);
    }
    return o;
  };
  const tree = r() < 0.8 ? { items: Array.from({ length: 1 + int(6) }, () => value(1)) } : value(0);
  const ws = () => (r() < 0.7 ? '' : pick([' ', '\n', '\t', '\r\n', '  ']));
  const enc = (s: string): string => {
    let out = '"';
    for (const ch of s) {
      if (r() < 0.05) {
        for (let i = 0; i < ch.length; i++) out += '\\u' + ch.charCodeAt(i).toString(16).padStart(4, '0');
      } else if (ch === '/' && r() < 0.5) out += '\\/';
      else out += JSON.stringify(ch).slice(1, -1);
    }
    return out + '"';
  };
  const ser = (v: unknown): string => {
    if (typeof v === 'string') return enc(v);
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    if (Array.isArray(v)) return '[' + ws() + v.map((x) => ser(x) + ws()).join(',' + ws()) + ']';
    return '{' + ws() + Object.entries(v).map(([k, x]) => enc(k) + ws() + ':' + ws() + ser(x) + ws()).join(',' + ws()) + '}';
  };
  return { tree, json: ws() + ser(tree) + ws() };
}

type Rule = Extract<ColumnPlanEntry, { kind: 'rule' }>;

/** The model: what masking the parsed document value by value gives. */
function model(m: Masker, v: unknown, rule: Rule | null, counts: Counts): unknown {
  const byRule = (s: string) => m.maskValue(s, rule!, counts);
  if (typeof v === 'string') return rule ? byRule(v) : m.maskText(v, counts);
  if (typeof v === 'number') {
    if (rule) return byRule(String(v));
    const t = m.maskText(String(v), counts);
    return t === String(v) ? v : t;
  }
  if (typeof v === 'boolean') return rule ? byRule(String(v)) : v;
  if (v === null) return null;
  if (Array.isArray(v)) return v.map((x) => model(m, x, rule, counts));
  const o: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    const mk = m.maskText(k, counts);
    const [p] = m.forColumns([{ schema: '', table: '', name: k }]);
    let kr = p.kind === 'rule' ? p : null;
    if (kr && mk !== k) kr = { ...kr, label: kr.label === k ? mk : kr.label, key: `column:${mk}` };
    o[mk] = model(m, x, kr ?? rule, counts);
  }
  return o;
}

const FUZZ_CONFIGS: { cfg: MaskConfigInput; smallCap: boolean; ruleKeys?: string[] }[] = [
  { cfg: { columns: [{ name: 'nulled', strategy: null }] }, smallCap: true },
  { cfg: { detectors: { default: 'hash' }, columns: [{ name: 'card_no', strategy: 'partial' }, { name: 'hashed', strategy: 'hash' }, { name: 'nulled', strategy: null }] }, smallCap: false },
  {
    cfg: { detectors: { email: 'partial', ip: 'off' }, defaultColumns: false, columns: [{ name: 'tags', strategy: 'scan' }, { name: 'pass*', label: 'pw' }, { name: 'card_no', strategy: null }] },
    smallCap: true,
    ruleKeys: ['password', 'passphrase', 'tags', 'card_no'],
  },
];

test('property: valid JSON in, valid JSON out, equal to masking the parsed document, for any chunking', () => {
  const ITERATIONS = 3000;
  let bytes = 0;
  let masked = 0;
  const maskers = FUZZ_CONFIGS.map((c) => masker(c.cfg));
  for (let it = 0; it < ITERATIONS; it++) {
    const r = prng(0xf00d + it);
    const ci = it % FUZZ_CONFIGS.length;
    const m = maskers[ci];
    // a small cap (long values in pieces) only where rules are redact/null: over the cap hash and partial become redact
    const opts = FUZZ_CONFIGS[ci].smallCap && r() < 0.5 ? { tokenCap: 64 } : {};
    const { json } = generateDoc(r, opts.tokenCap ? 8 : 1000, FUZZ_CONFIGS[ci].ruleKeys);
    const b = Buffer.from(json);
    bytes += b.length;
    const expectedCounts = newCounts();
    const expected = model(m, JSON.parse(json), null, expectedCounts);
    const one = whole(m, b, opts);
    const out = one.out.toString();
    let parsed: unknown;
    try {
      parsed = JSON.parse(out);
    } catch (e) {
      assert.fail(`iteration ${it}: output is not JSON (${(e as Error).message})\ninput:  ${json.slice(0, 2000)}\noutput: ${out.slice(0, 2000)}`);
    }
    assert.deepEqual(parsed, expected, `iteration ${it}\ninput: ${json.slice(0, 2000)}`);
    assert.deepEqual(one.counts, { ...expectedCounts }, `iteration ${it}: counts`);
    assert.equal(one.fellBack, false);
    for (const k in one.counts) masked += one.counts[k];
    for (let rep = 0; rep < 2; rep++) {
      const again = run(m, split(r, b), opts);
      assert.equal(again.out.toString(), out, `iteration ${it}, split ${rep}`);
      assert.deepEqual(again.counts, one.counts);
    }
  }
  assert.ok(masked > 5000 && bytes > 500_000, `weak generator: ${masked} masked in ${bytes} bytes`);
});

// --- performance -----------------------------------------------------------------------------------

test('performance: a ~10 MB JSON array, with nothing to mask and with many emails', (t) => {
  const NAMES = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'];
  const build = (emails: boolean): Buffer => {
    const rows: string[] = [];
    let size = 0;
    for (let i = 0; size < 10_000_000; i++) {
      const o: Record<string, unknown> = {
        id: i,
        name: `${NAMES[i % 6]} smith`,
        created: `2024-05-${String(1 + (i % 28)).padStart(2, '0')}T12:00:00Z`,
        active: i % 2 === 0,
        score: (i % 1000) / 10,
        tags: ['a', 'blue', `x-${i % 7}`],
        note: 'the quick brown fox jumps over the lazy dog',
      };
      if (emails) o.email = `${NAMES[i % 6]}.${i}@example.com`;
      const s = JSON.stringify(o, null, 1);
      rows.push(s);
      size += s.length + 2;
    }
    return Buffer.from('[' + rows.join(',\n') + ']');
  };
  const m = masker();
  const report: string[] = [];
  for (const emails of [false, true]) {
    const doc = build(emails);
    let res: Run | null = null;
    const secs = bestCpu(3, () => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < doc.length; i += 65536) chunks.push(doc.subarray(i, i + 65536));
      res = run(m, chunks);
    });
    const r = res! as Run;
    if (emails) assert.ok(r.counts.email > 30_000, JSON.stringify(r.counts));
    else assert.ok(r.out.equals(doc) && Object.keys(r.counts).length === 0);
    const mbs = doc.length / 1e6 / secs;
    report.push(`${emails ? 'many emails' : 'nothing to mask'}: ${mbs.toFixed(1)} MB/s (${(doc.length / 1e6).toFixed(1)} MB, 64 KiB chunks)`);
    assert.ok(mbs >= 5, `${mbs.toFixed(1)} MB/s`);
  }
  t.diagnostic(report.join('; '));
});

test('counts under *tokens keys (LLM usage, max_tokens) stay numbers; a numeric token or password is still masked', () => {
  const m = new Masker(parseMaskConfig({}), 'k');
  const run = (s: string) => {
    const j = new JsonStreamMasker(m);
    return Buffer.concat([j.push(Buffer.from(s)), j.end()]).toString();
  };
  const usage = '{"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},"max_tokens":256}';
  assert.equal(run(usage), usage);
  assert.equal(run('{"token":123456,"password":4242}'), '{"token":"[MASKED:token]","password":"[MASKED:password]"}');
  assert.equal(run('{"refresh_tokens":"abc"}'), '{"refresh_tokens":"[MASKED:refresh_tokens]"}');
});
