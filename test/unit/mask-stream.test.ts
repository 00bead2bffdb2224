import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMaskConfig, type MaskConfigInput } from '../../src/mask/config.ts';
import { newCounts } from '../../src/mask/counts.ts';
import { PEM_CAP } from '../../src/mask/detectors.ts';
import { Masker } from '../../src/mask/masker.ts';
import { prng, bestCpu } from '../helpers/random.ts';

const SECRET = Buffer.from('stream-test-secret');

/** What a stream may hold back at most: the longest single-line candidate (JWT), the PEM cap, one undrained block, slack. */
const HELD_BOUND = 32 * 1024;

/** Random text mixing secrets, near-misses and noise; some long lines and long PEM blocks. */
function generate(r: () => number): string {
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T,>(a: readonly T[]): T => a[int(a.length)];
  const chars = (n: number, alpha = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') => {
    let s = '';
    for (let i = 0; i < n; i++) s += alpha[int(alpha.length)];
    return s;
  };
  const pemBody = (lines: number) => Array.from({ length: lines }, () => chars(64)).join(pick(['\n', '\r\n', '\\n']));
  const pieces: (() => string)[] = [
    () => `${pick(['john.doe', 'a', 'x'.repeat(70), 'y'.repeat(64)])}@${pick(['example.com', 'b', 'sub.example.co.uk', 'x.y1', 'ex-ample.org.'])}`,
    () => pick(['4111 1111 1111 1111', '4111111111111111', '4111111111111112', '5500-0000-0000-0004', '378282246310005', '4111 1111 1111 1111 22', '0.4111111111111111', '6011000990139424']),
    () => pick(['DE89 3704 0044 0532 0130 00', 'DE89370400440532013000', 'GB82WEST12345698765432', 'DE89 3704 0044 0532 0130 01']),
    () => pick(['123-45-6789', '000-12-3456', '666-12-3456', '912-34-5678', '123-00-4567', '123-45-0000', '123 45 6789', '123456789']),
    () => pick(['+14155552671', '+1234567', '+491511234567890', '+0123456789']),
    () => pick(['10.0.0.1', '255.255.255.255', '256.1.1.1', '1.2.3.4.5', 'fe80::1', '2001:db8::8a2e:370:7334', '::1', 'dead::beef', '12:30:07', '2001:0db8:85a3:0000:0000:8a2e:0370:7334', 'std::vector', '::ffff:192.168.1.1']),
    () =>
      'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.' +
      pick(['eyJzdWIiOiIxMjM0NTY3ODkwIn0', chars(int(12000), 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_')]) +
      '.' +
      pick(['SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c', '']) +
      pick(['', '.', '.x']),
    () => pick(['eyJub3RhbGciOjF9.eyJ4IjoxfQ.sig', 'eyJ', 'eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.']),
    // PEM blocks: short, longer than the cap (700 lines ≈ 45 KiB), cut off, ended by a non-PEM character
    () =>
      `-----BEGIN ${pick(['', 'RSA ', 'EC ', 'OPENSSH ', 'ENCRYPTED '])}PRIVATE KEY-----${pick(['\n', '\r\n', '\\n'])}${pemBody(r() < 0.2 ? 700 : int(12))}` +
      pick(['\n-----END PRIVATE KEY-----', '\n-----END RSA PRIVATE KEY-----', '', '"', '\n$ ', '\n-----END PRIV']),
    () => pick(['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----', '-----BEGIN', '-----BEGIN PRIVATE', '-----END PRIVATE KEY-----']),
    () => `{"type": "service_account", "project_id": "p", "private_key_id": "abc", "private_key": "-----BEGIN PRIVATE KEY-----\\n${chars(int(3000))}\\n-----END PRIVATE KEY-----\\n", "client_email": "x@p.iam.gserviceaccount.com"}`,
    // a very long line: secrets far from any line break (exercises the hold-back inside a line and the left context)
    () => `${'y'.repeat(int(20000))} {"type": "service_account", "pad": "${'p'.repeat(int(1000))}", "private_key": "k${chars(int(2000))}"} ${'z'.repeat(int(9000))} redis://${'u'.repeat(int(120))}:pw@host.com ${'w'.repeat(int(12000))}`,
    () => pick(['AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPL', `aws_secret_access_key = ${chars(40)}`, `secret: ${chars(40)}`, `aws ${'a'.repeat(40)}`, 'da39a3ee5e6b4b0d3255bfef95601890afd80709']),
    () => pick([`ghp_${chars(36, 'abcXYZ0189')}`, `github_pat_${chars(82, 'abcXYZ0189_')}`, `glpat-${chars(20, 'abcXYZ0189')}`, `xoxb-${chars(24, 'abc0189-')}`, `sk_live_${chars(24, 'abcXYZ0189')}`, 'ghp_short', `whsec_${chars(30, 'abcXYZ0189')}`, 'https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX']),
    () => pick(['postgres://app:s3cr3t@db.example.com:5432/x', 'redis://:pw@host', 'https://example.com:8080/path', 'host=db password=hunter2 dbname=x', "password='a b c'", 'Pwd={x;y};', 'PGPASSWORD=abc', 'password=']),
    () => pick([`api_key = "${chars(24)}"`, `token: ${chars(20)}`, 'password: ********', `SECRET_TOKEN=${chars(30)}`, 'primary_key: idx_user_email_address', `Authorization: Bearer ${chars(30)}`]),
    () => pick(['ORD-12345678', 'ORD-1234567']),
    () => Array.from({ length: int(20) }, () => pick(['the', 'quick', 'fox', '2024-05-01T12:30:07Z', '550e8400-e29b-41d4-a716-446655440000', 'v1.2.3', '😀', 'İstanbul', '42', '3.14', '=', ':', '"', '@', '+', '-', '.', 'key', 'secret'])).join(pick([' ', '', '\n', ','])),
    () => 'x'.repeat(int(r() < 0.1 ? 30000 : 50)),
    () => chars(int(r() < 0.1 ? 20000 : 300)),
    () => '\n'.repeat(1 + int(3)),
  ];
  const n = 1 + int(r() < 0.1 ? 60 : 15);
  let s = '';
  for (let i = 0; i < n; i++) s += pick(pieces)() + pick(['', ' ', '\n', '\n', ', ', '"', '=', ':', '\t', '\r\n']);
  return s;
}

/** Random split points: single characters, small, medium or large chunks, some empty. */
function split(r: () => number, s: string): string[] {
  const out: string[] = [];
  const mode = Math.floor(r() * 4);
  for (let i = 0; i < s.length; ) {
    const n = mode === 0 ? 1 + Math.floor(r() * 3) : mode === 1 ? 1 + Math.floor(r() * 64) : mode === 2 ? 1 + Math.floor(r() * 5000) : r() < 0.5 ? 1 : 1 + Math.floor(r() * 20000);
    out.push(s.slice(i, i + n));
    i += n;
    if (r() < 0.05) out.push('');
  }
  return out;
}

const CONFIGS: MaskConfigInput[] = [
  {},
  { detectors: { default: 'hash' }, custom: [{ name: 'order_ref', pattern: 'ORD-[0-9]{8}', strategy: 'partial' }] },
  { detectors: { pem: 'off', email: 'partial' } },
  { detectors: { default: 'off', gcp: 'redact', email: 'redact' } }, // few detectors: little left context from the others
];

test('property: any split of a text into chunks gives exactly maskText of the whole', () => {
  const ITERATIONS = 500;
  const SPLITS = 3;
  let chars = 0;
  let hits = 0;
  let maxHeld = 0;
  for (let it = 0; it < ITERATIONS; it++) {
    const r = prng(0x5eed + it);
    const text = generate(r);
    const m = new Masker(parseMaskConfig(CONFIGS[it % CONFIGS.length]), SECRET);
    const counts = newCounts();
    const whole = m.maskText(text, counts);
    chars += text.length;
    for (const k in counts) hits += counts[k];
    for (let rep = 0; rep < SPLITS; rep++) {
      const s = m.stream();
      let out = '';
      for (const chunk of split(r, text)) {
        out += s.push(chunk);
        if (s.held > maxHeld) maxHeld = s.held;
      }
      out += s.end();
      if (out !== whole) {
        let d = 0;
        while (d < out.length && out[d] === whole[d]) d++;
        assert.fail(`iteration ${it}, split ${rep}: differs at ${d}\nwhole:  ${JSON.stringify(whole.slice(Math.max(0, d - 80), d + 120))}\nstream: ${JSON.stringify(out.slice(Math.max(0, d - 80), d + 120))}`);
      }
      assert.deepEqual({ ...s.counts }, { ...counts }, `iteration ${it}: counts`);
    }
  }
  assert.ok(maxHeld <= HELD_BOUND, `held back ${maxHeld} characters`);
  assert.ok(hits > 1000 && chars > 1_000_000, `weak generator: ${hits} hits in ${chars} characters`);
});

test('a PEM key longer than the cap is never emitted, not even in part, and the hold-back stays bounded', () => {
  const m = new Masker(parseMaskConfig({}), SECRET);
  const lines = Array.from({ length: 1000 }, (_, i) => `MII${String(i).padStart(4, '0')}${'Q'.repeat(57)}`);
  const key = `-----BEGIN RSA PRIVATE KEY-----\n${lines.join('\n')}\n-----END RSA PRIVATE KEY-----`;
  assert.ok(key.length > 4 * PEM_CAP);
  const text = `before a@example.com\n${key}\nafter`;
  const whole = m.maskText(text);
  assert.equal(whole, 'before [MASKED:email]\n[MASKED:pem]\nafter');
  for (const size of [1, 7, 100, 4096, 65536]) {
    const s = m.stream();
    let out = '';
    let maxHeld = 0;
    for (let i = 0; i < text.length; i += size) {
      const piece = s.push(text.slice(i, i + size));
      assert.ok(!/MII\d{4}/.test(piece), 'key material emitted');
      out += piece;
      maxHeld = Math.max(maxHeld, s.held);
    }
    out += s.end();
    assert.equal(out, whole, `chunks of ${size}`);
    assert.ok(maxHeld <= PEM_CAP + 8192, `chunks of ${size}: held ${maxHeld}`);
    assert.deepEqual({ ...s.counts }, { email: 1, pem: 1 });
  }
  // a key that never ends: withheld to the end of the stream (block characters only)
  const cut = `${key.slice(0, 30000)}`;
  const s = m.stream();
  let out = '';
  for (let i = 0; i < cut.length; i += 1000) out += s.push(cut.slice(i, i + 1000));
  out += s.end();
  assert.equal(out, '[MASKED:pem]');
});

test('finished lines are emitted at once; a line is held only until it ends', () => {
  const m = new Masker(parseMaskConfig({}), SECRET);
  const s = m.stream();
  assert.equal(s.push('ls -la\n'), 'ls -la\n');
  assert.equal(s.held, 0);
  assert.equal(s.push('mail a@exa'), '');
  assert.equal(s.push('mple.com and more'), '');
  assert.equal(s.push(' text\nnext'), 'mail [MASKED:email] and more text\n');
  assert.equal(s.held, 4);
  // flush: emit what is held now (an interactive prompt), and go on
  assert.equal(s.flush(), 'next');
  assert.equal(s.push('$ echo 4111111111111111\n'), '$ echo ****1111\n');
  assert.equal(s.end(), '');
  assert.throws(() => s.push('x'), /after end/);
  // property: text without a PEM marker, pushed up to a line end, is emitted whole
  for (let it = 0; it < 200; it++) {
    const r = prng(77 + it);
    let text = generate(r).replace(/-----BEGIN/g, '-----BEGlN');
    if (!text.endsWith('\n')) text += '\n';
    const st = m.stream();
    assert.equal(st.push(text), m.maskText(text), `iteration ${it}`);
    assert.equal(st.held, 0);
  }
});

// --- performance ------------------------------------------------------------------------------------

/** A realistic mixed corpus: shell output, access logs, JSON logs, prose, code, CSV, with secrets. */
function corpus(bytes: number, seed = 1): string {
  const r = prng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T,>(a: readonly T[]): T => a[int(a.length)];
  const WORDS = 'the of and to in is that for it as was with be by on not this are or from at which but have an they you were there been one all we their has would when if so no out up into do only time can will more about could what other them some may then these its like first also after new over two than such most any through our where well because even should however between very those both many must under good while last might great since against right three during without again place around home small found thought went say part once general high upon school every does got left number course until always away something fact though water less public put think almost hand enough far took head yet government system better set told nothing night end why called find going look asked later knew point next program city business give group toward young days let room side social given present several order national possible rather second face per among form important often things looking large felt became available request response server database query'.split(' ');
  const NAMES = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory', 'oscar', 'peggy', 'trent', 'victor', 'walter'];
  const words = (n: number) => Array.from({ length: n }, () => pick(WORDS)).join(' ');
  const hex = (n: number) => Array.from({ length: n }, () => '0123456789abcdef'[int(16)]).join('');
  const b64 = (n: number) => Array.from({ length: n }, () => 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'[int(62)]).join('');
  const two = (n: number) => String(n).padStart(2, '0');
  const ts = () => `2024-0${1 + int(9)}-${two(1 + int(28))}T${two(int(24))}:${two(int(60))}:${two(int(60))}.${String(int(1000)).padStart(3, '0')}Z`;
  const ip = () => `${10 + int(200)}.${int(256)}.${int(256)}.${int(256)}`;
  const secrets = [
    () => `contact ${pick(NAMES)}.${pick(NAMES)}@example.com`,
    () => 'card 4111 1111 1111 1111',
    () => 'AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    () => 'Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c',
    () => `DATABASE_URL=postgres://app:${b64(12)}@db.internal:5432/app`,
    () => `GITHUB_TOKEN=ghp_${b64(36)}`,
    () => 'ssn 123-45-6789 phone +14155552671',
    () => 'iban DE89 3704 0044 0532 0130 00',
    () => `api_key: "${b64(32)}"`,
    () => `host=db user=app password=${b64(10)} sslmode=require`,
    () => `stripe sk_live_${b64(24)}`,
    () => `-----BEGIN PRIVATE KEY-----\n${Array.from({ length: 8 }, () => b64(64)).join('\n')}\n-----END PRIVATE KEY-----`,
  ];
  const blocks = [
    () => Array.from({ length: 8 }, () => `-rw-r--r--  1 ${pick(NAMES)} staff ${String(int(1e6)).padStart(8)} May ${String(1 + int(28)).padStart(2)} 12:${two(int(60))} ${pick(WORDS)}_${pick(WORDS)}.${pick(['txt', 'log', 'json', 'ts', 'py'])}`).join('\n'),
    () => Array.from({ length: 6 }, () => `${pick(NAMES).padEnd(8)} ${String(int(99999)).padStart(6)}  ${(r() * 10).toFixed(1)}  ${(r() * 5).toFixed(1)} ${int(2e6)} ${int(2e5)} ?  Ss   May01   0:${two(int(60))} /usr/bin/${pick(WORDS)} --${pick(WORDS)}`).join('\n'),
    () => Array.from({ length: 6 }, () => `${ip()} - - [01/May/2024:12:${two(int(60))}:07 +0000] "GET /api/v1/${pick(WORDS)}/${int(1e5)}?page=${int(10)} HTTP/1.1" ${pick([200, 200, 200, 304, 404, 500])} ${int(50000)} "-" "Mozilla/5.0 (X11; Linux x86_64)"`).join('\n'),
    () => Array.from({ length: 5 }, () => JSON.stringify({ ts: ts(), level: pick(['info', 'warn', 'error', 'debug']), msg: words(6 + int(8)), reqId: `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`, durMs: +(r() * 300).toFixed(2), user: pick(NAMES) })).join('\n'),
    () => Array.from({ length: 3 + int(4) }, () => words(10 + int(20)) + '.').join(' '),
    () => `commit ${hex(40)}\nAuthor: ${pick(NAMES)} <${pick(NAMES)}@users.noreply.github.com>\nDate:   Wed May 1 12:00:00 2024 +0200\n\n    ${words(8)}`,
    () => `function ${pick(WORDS)}${pick(NAMES)}(${pick(WORDS)}, opts = {}) {\n  const res = await fetch(\`/api/\${id}\`, { method: 'POST' });\n  if (!res.ok) throw new Error('${words(4)}');\n  return res.json(); // version 1.2.3.4.5\n}`,
    () => Array.from({ length: 5 }, () => `${int(1e6)},${pick(NAMES)},${pick(WORDS)},${(r() * 1000).toFixed(2)},${ts().slice(0, 10)},${pick(['active', 'closed'])},${hex(40)}`).join('\n'),
    () => `Filesystem      Size  Used Avail Use% Mounted on\n/dev/sda1        ${int(500)}G  ${int(300)}G  ${int(200)}G  ${int(100)}% /\ntmpfs           ${int(16)}G     0  16G   0% /dev/shm`,
  ];
  let out = '';
  while (out.length < bytes) {
    out += pick(blocks)() + '\n';
    if (r() < 0.15) out += pick(secrets)() + '\n';
  }
  return out;
}

test('performance: maskText and the stream on a mixed corpus, maskValue on short values', (t) => {
  const text = corpus(4 << 20).split('').join(''); // flat, 4 MiB
  const m = new Masker(parseMaskConfig({}), SECRET);
  const counts = newCounts();
  const masked = m.maskText(text, counts);
  assert.ok(masked.length < text.length && counts.email > 100 && counts.pem > 50, JSON.stringify(counts));
  const mb = text.length / 1e6;
  const whole = mb / bestCpu(5, () => m.maskText(text));
  let streamed = '';
  const stream = mb / bestCpu(3, () => {
    const s = m.stream();
    streamed = '';
    for (let i = 0; i < text.length; i += 16384) streamed += s.push(text.slice(i, i + 16384));
    streamed += s.end();
  });
  assert.equal(streamed, masked);
  t.diagnostic(`maskText ${whole.toFixed(1)} MB/s, stream (16 KiB chunks) ${stream.toFixed(1)} MB/s, on ${mb.toFixed(1)} MB, all detectors on: ${JSON.stringify(counts)}`);
  assert.ok(whole >= 10, `maskText ${whole.toFixed(1)} MB/s`);
  assert.ok(stream >= 10, `stream ${stream.toFixed(1)} MB/s`);

  // DataRow-like values that match nothing: ints, names, floats, timestamps, UUIDs, booleans
  const r = prng(3);
  const gens = [
    () => String(Math.floor(r() * 1e9)),
    () => `${['Alice', 'Bob', 'Carol', 'Dave'][Math.floor(r() * 4)]} ${['Smith', 'Jones', 'Miller'][Math.floor(r() * 3)]}`,
    () => (r() * 1000).toFixed(2),
    () => '2024-05-01 12:00:00+00',
    () => '550e8400-e29b-41d4-a716-446655440000',
    () => (r() < 0.5 ? 't' : 'f'),
  ];
  const values = Array.from({ length: 100_000 }, (_, i) => gens[i % gens.length]());
  const [scan] = m.forColumns([{ name: 'v' }]);
  let changed = 0;
  const secs = bestCpu(5, () => {
    changed = 0;
    for (const v of values) if (m.maskValue(v, scan) !== v) changed++;
  });
  assert.equal(changed, 0);
  const ns = (secs * 1e9) / values.length;
  t.diagnostic(`maskValue ${ns.toFixed(0)} ns/value over ${values.length} non-matching short values`);
  assert.ok(ns < 20_000, `${ns} ns/value`);
});
