import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maskConfigSchema, parseMaskConfig, detectorSettings, isUnmaskedFor, DEFAULT_DETECTOR_STRATEGY, type MaskConfigInput } from '../../src/mask/config.ts';
import { newCounts, mergeCounts, countsTotal } from '../../src/mask/counts.ts';
import {
  BUILTIN_DETECTORS,
  BUILTIN_LIST,
  DETECTOR_NAMES,
  Features,
  builtinQuickMask,
  ibanValid,
  isJwtHeader,
  knownIIN,
  luhn,
  shannonEntropy,
  ssnValid,
  type Detector,
} from '../../src/mask/detectors.ts';
import { ERROR_TEXT, Masker, partial } from '../../src/mask/masker.ts';

const SECRET = Buffer.from('gateway-secret-for-tests');
const masker = (cfg: MaskConfigInput = {}, secret: Buffer | string = SECRET, opts = {}) => new Masker(parseMaskConfig(cfg), secret, opts);
/** every detector on, every strategy redact: the output names what was found */
const all = masker({ detectors: { default: 'redact' } });

const b64 = (n: number, seed = 7) => {
  const a = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += a[(x >>> 16) % a.length];
  }
  return s;
};
const JWT = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c';
const PEM = `-----BEGIN RSA PRIVATE KEY-----\n${[b64(64, 1), b64(64, 2), b64(20, 3) + '=='].join('\n')}\n-----END RSA PRIVATE KEY-----`;

// --- positives ------------------------------------------------------------------------------------

/** [detector, text, the secret part that must disappear] */
const POSITIVES: [string, string, string][] = [
  ['email', 'contact john.doe@example.com today', 'john.doe@example.com'],
  ['email', 'From: "Ann" <ann+tag@mail.sub.example.co.uk>', 'ann+tag@mail.sub.example.co.uk'],
  ['email', 'x_y%z@ex-ample.org.', 'x_y%z@ex-ample.org'],
  ['card', 'paid with 4111 1111 1111 1111 yesterday', '4111 1111 1111 1111'],
  ['card', 'card=4111111111111111;', '4111111111111111'],
  ['card', 'mc 5500-0000-0000-0004', '5500-0000-0000-0004'],
  ['card', 'amex 378282246310005', '378282246310005'],
  ['card', 'amex 3782 822463 10005', '3782 822463 10005'],
  ['card', 'discover 6011000990139424', '6011000990139424'],
  ['card', 'jcb 3530111333300000', '3530111333300000'],
  ['iban', 'IBAN DE89 3704 0044 0532 0130 00 (EUR)', 'DE89 3704 0044 0532 0130 00'],
  ['iban', 'to GB82WEST12345698765432.', 'GB82WEST12345698765432'],
  ['iban', 'FR1420041010050500013M02606', 'FR1420041010050500013M02606'],
  ['ssn', 'SSN: 123-45-6789', '123-45-6789'],
  ['ssn', 'ssn 078 05 1120', '078 05 1120'],
  ['phone', 'call +14155552671 now', '+14155552671'],
  ['phone', '"+447911123456"', '+447911123456'],
  ['ip', 'from 192.168.1.20 port 22', '192.168.1.20'],
  ['ip', 'host 10.0.0.1:5432', '10.0.0.1'],
  ['ip', 'addr fe80::1ff:fe23:4567:890a%eth0', 'fe80::1ff:fe23:4567:890a'],
  ['ip', '[2001:db8::8a2e:370:7334]:443', '2001:db8::8a2e:370:7334'],
  ['ip', 'full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.', '2001:0db8:85a3:0000:0000:8a2e:0370:7334'],
  ['ip', 'mapped ::ffff:192.0.2.128', '::ffff:192.0.2.128'],
  ['ip', '::1', '::1'],
  ['jwt', `Authorization: Bearer ${JWT}`, JWT],
  ['jwt', `token ${JWT}.`, JWT],
  ['jwt', 'alg none eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0'],
  ['pem', `key:\n${PEM}\nafter`, b64(64, 1)],
  ['pem', `-----BEGIN PRIVATE KEY-----\r\n${b64(64, 4)}\r\n-----END PRIVATE KEY-----`, b64(64, 4)],
  ['pem', `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64(70, 5)}`, b64(70, 5)], // cut off: masked to the end
  ['pem', `-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n${b64(64, 22)}\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----`, b64(64, 22)],
  ['gcp', `{"type": "service_account", "private_key_id": "1", "private_key": "${b64(200, 20)}\\n"}`, b64(200, 20)],
  ['aws', 'AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPLE'],
  ['aws', 'role ASIAY34FZKBOKMUTVV7A used', 'ASIAY34FZKBOKMUTVV7A'],
  ['aws', 'aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
  ['aws', '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
  ['github', `GITHUB_TOKEN=ghp_${b64(36, 6)}`, `ghp_${b64(36, 6)}`],
  ['github', `git clone https://x:gho_${b64(36, 8)}@github.com/o/r`, `gho_${b64(36, 8)}`],
  ['github', `github_pat_${b64(22, 9)}_${b64(59, 10)}`, `github_pat_${b64(22, 9)}_${b64(59, 10)}`],
  ['gitlab', `PRIVATE-TOKEN: glpat-${b64(20, 11)}`, `glpat-${b64(20, 11)}`],
  ['slack', 'SLACK_BOT_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx', 'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx'],
  ['slack', 'xapp-1-A0123456789-1234567890123-abcdef0123456789', 'xapp-1-A0123456789-1234567890123-abcdef0123456789'],
  ['slack', 'https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX', 'T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX'],
  ['stripe', `stripe.api_key = "sk_live_${b64(24, 12)}"`, `sk_live_${b64(24, 12)}`],
  ['stripe', `rk_test_${b64(30, 13)}`, `rk_test_${b64(30, 13)}`],
  ['stripe', `whsec_${b64(32, 14)}`, `whsec_${b64(32, 14)}`],
  ['url_password', 'DATABASE_URL=postgres://app:Sup3r-S3cret@db.internal:5432/app', 'Sup3r-S3cret'],
  ['url_password', 'redis://:hunter2@cache:6379/0', 'hunter2'],
  ['url_password', 'host=db port=5432 user=app password=hunter2 dbname=app', 'hunter2'],
  ['url_password', "host=db password='with space' sslmode=require", 'with space'],
  ['url_password', 'Driver={PostgreSQL};Server=db;Uid=app;Pwd={p;w;d};', 'p;w;d'],
  ['url_password', 'jdbc:postgresql://db/app?user=app&password=s3cr3t&ssl=true', 's3cr3t'],
  ['url_password', 'MYSQL_ROOT_PASSWORD=example', 'example'],
  ['assignment', `api_key = "${b64(32, 15)}"`, b64(32, 15)],
  ['assignment', `export SECRET_TOKEN=${b64(24, 16)}`, b64(24, 16)],
  ['assignment', `{"client_secret": "${b64(36, 17)}"}`, b64(36, 17)],
  ['assignment', `auth: Bearer ${b64(30, 18)}`, b64(30, 18)],
  ['assignment', `> Authorization: Bearer ${b64(40, 21)}`, b64(40, 21)],
  ['assignment', 'Authorization: Basic dXNlcjpwYXNzd29yZA==', 'dXNlcjpwYXNzd29yZA=='],
  ['assignment', `db_password: ${b64(20, 19)}`, b64(20, 19)],
];

test('each detector masks what it should', () => {
  for (const [name, text, secret] of POSITIVES) {
    const counts = newCounts();
    const out = all.maskText(text, counts);
    assert.ok(out.includes(`[MASKED:${name}]`), `${name}: ${JSON.stringify(text)} → ${JSON.stringify(out)}`);
    assert.ok(!out.includes(secret), `${name}: the secret survived in ${JSON.stringify(out)}`);
    assert.equal(counts[name], 1, `${name}: counts ${JSON.stringify(counts)} for ${JSON.stringify(text)}`);
  }
  // every built-in detector has positives
  for (const n of DETECTOR_NAMES) assert.ok(POSITIVES.some(([d]) => d === n), `no positive example for ${n}`);
});

test('only the secret part is replaced, the context stays', () => {
  assert.equal(all.maskText('postgres://app:s3cr3t@db.example.com:5432/x'), 'postgres://app:[MASKED:url_password]@db.example.com:5432/x');
  assert.equal(all.maskText('host=db password=hunter2 dbname=x'), 'host=db password=[MASKED:url_password] dbname=x');
  assert.equal(all.maskText("password='a b c'"), "password='[MASKED:url_password]'");
  assert.equal(all.maskText(`api_key = "${b64(24)}"`), 'api_key = "[MASKED:assignment]"');
  assert.equal(all.maskText(`token ${JWT}.`), 'token [MASKED:jwt].');
  assert.equal(all.maskText(`${PEM}\n$ `), '[MASKED:pem]\n$ ');
  assert.equal(all.maskText('a 4111 1111 1111 1111 22'), 'a [MASKED:card] 22');
});

test('GCP service-account keys: the private_key value is masked', () => {
  const key = `-----BEGIN PRIVATE KEY-----\\n${b64(64)}\\n${b64(40)}==\\n-----END PRIVATE KEY-----\\n`;
  const json = `{\n  "type": "service_account",\n  "project_id": "p",\n  "private_key_id": "0123abcd",\n  "private_key": "${key}",\n  "client_email": "svc@p.iam.gserviceaccount.com"\n}`;
  // the PEM inside is found by pem (higher priority), the rest of the string by gcp: one span, named pem
  const out = all.maskText(json);
  assert.ok(!out.includes(b64(64)), out);
  assert.match(out, /"private_key": "\[MASKED:pem\]",/);
  // with pem off, gcp alone masks the whole value
  const gcpOnly = masker({ detectors: { default: 'off', gcp: 'redact' } });
  assert.match(gcpOnly.maskText(json), /"private_key": "\[MASKED:gcp\]",/);
  // a private_key that is not in a service-account file is left to the other detectors
  assert.equal(gcpOnly.maskText('{"private_key": "abc"}'), '{"private_key": "abc"}');
});

// --- false positives -----------------------------------------------------------------------------

const FALSE_POSITIVES: string[] = [
  'order 4111111111111112 shipped', // Luhn-invalid 16 digits
  '1234567812345678', // Luhn-invalid
  'ref 4111-1111-1111-1112', // Luhn-invalid, grouped
  '9111111111111111', // Luhn-valid but no known issuer (9…)
  'ts 1700000000000000', // microsecond timestamp
  'pi 3.14159265358979323846', // digits after a decimal point
  'id 41111111111111111111111', // too long for a card
  'order 000-12-3456', // SSN area 000
  'order 666-12-3456', // SSN area 666
  'order 912-34-5678', // SSN area 9xx
  'order 123-00-4567', // SSN group 00
  'order 123-45-0000', // SSN serial 0000
  'zip+4 123456789', // bare 9 digits: not an SSN (documented)
  'part 123-45-6789-01', // longer dashed number
  'phone-ish +1234567', // too short for E.164
  'math 1+23456789', // not a phone
  '+0123456789', // E.164 never starts with 0
  'version 1.2.3.4.5', // version string, not an IP
  'v1.2.3.4', // prefixed version
  'bad ip 256.1.1.1 and 1.2.3', // octet > 255, too few octets
  'at 12:30:07 and 2024-05-01T12:30:07.123Z', // times
  'std::vector<int> and Foo::Bar::baz', // C++ paths
  'dead::beef', // hex words without a digit
  'mac 00:1a:2b:3c:4d:5e', // MAC address
  '550e8400-e29b-41d4-a716-446655440000', // UUID
  'commit da39a3ee5e6b4b0d3255bfef95601890afd80709', // git SHA (40 hex) without context
  'sha: da39a3ee5e6b4b0d3255bfef95601890afd80709', // git SHA with a colon but no aws/secret keyword
  'a@b', // not an email
  'user@localhost', // no TLD
  'email me at name @ example.com', // spaced
  'x@y.c0m', // TLD with a digit
  'the quick brown fox jumps over the lazy dog', // words
  'password: ********', // placeholder, low entropy
  `token = ${'A'.repeat(32)}`, // low-entropy base64
  'primary_key: idx_user_email_address', // lowercase identifier
  'key = value', // short
  'author: Jane_Austen_1775_Hampshire', // "author" is not "auth"
  'token_count: 1234567890123', // digits only: low entropy
  'https://example.com:8080/path?q=1', // URL without credentials
  'ghp_short and glpat-short and sk_live_short', // truncated token prefixes
  'eyJub3RoaW5nIjp0cnVlfQ.eyJ4IjoxfQ.c2ln', // JWT-shaped, header without alg
  '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUE\n-----END CERTIFICATE-----', // a certificate is public
  'AKIAIOSFODNN7EXAMPL', // 19 characters
  'DE89 3704 0044 0532 0130 01', // IBAN with a bad checksum
  'XX89370400440532013000', // unknown country
  'ORD-12345678 and INV-2024-000123', // business ids (no custom detector)
  'price 1,234,567.89 EUR', // amounts
  'Hello, İstanbul — naïve café 😀', // non-ASCII text
  '', // empty
];

test('false-positive table: left alone, the very same string returned', () => {
  assert.ok(FALSE_POSITIVES.length >= 30);
  const m = masker(); // defaults
  for (const text of FALSE_POSITIVES) {
    const counts = newCounts();
    for (const mm of [all, m]) {
      const out = mm.maskText(text, counts);
      assert.equal(out, text, `masked: ${JSON.stringify(text)} → ${JSON.stringify(out)}`);
      assert.ok(Object.is(out, text));
    }
    assert.deepEqual({ ...counts }, {}, `counted for ${JSON.stringify(text)}`);
  }
  // …and as column values
  const [scan] = all.forColumns([{ name: 'note' }]);
  for (const text of FALSE_POSITIVES) assert.ok(Object.is(all.maskValue(text, scan), text), text);
});

test('a git SHA is masked only in a secret’s context', () => {
  const sha = 'da39a3ee5e6b4b0d3255bfef95601890afd80709';
  assert.equal(all.maskText(`commit ${sha}`), `commit ${sha}`);
  assert.equal(all.maskText(`aws ${sha}`), `aws ${sha}`); // not base64-like: not an AWS secret
  assert.equal(all.maskText(`aws_secret_access_key = ${sha}`), 'aws_secret_access_key = [MASKED:assignment]'); // assigned to a secret
  const key = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  assert.equal(all.maskText(`checksum ${key}`), `checksum ${key}`); // no aws/secret keyword
  assert.equal(all.maskText(`aws ${key}`), 'aws [MASKED:aws]');
});

// --- validators ----------------------------------------------------------------------------------

test('validators: Luhn, issuer prefixes, IBAN mod-97, SSN rules, entropy, JWT header', () => {
  for (const n of ['4111111111111111', '5500000000000004', '378282246310005', '6011000990139424', '79927398713']) assert.ok(luhn(n), n);
  for (const n of ['4111111111111112', '1234567812345678', '79927398710', '', '12a4']) assert.ok(!luhn(n), n);
  for (const n of ['4111111111111111', '5500000000000004', '2221000000000009', '378282246310005', '6011000990139424', '3530111333300000', '30569309025904', '6200000000000005']) assert.ok(knownIIN(n), n);
  for (const n of ['1111111111111111', '9111111111111111', '7111111111111111', '41111111111', '411111111111111']) assert.ok(!knownIIN(n), n);
  for (const i of ['DE89370400440532013000', 'GB82WEST12345698765432', 'FR1420041010050500013M02606', 'NL91ABNA0417164300', 'CH9300762011623852957']) assert.ok(ibanValid(i), i);
  for (const i of ['DE89370400440532013001', 'DE8937040044053201300', 'XX89370400440532013000', 'de89370400440532013000']) assert.ok(!ibanValid(i), i);
  assert.ok(ssnValid('123', '45', '6789'));
  assert.ok(ssnValid('078', '05', '1120'));
  for (const [a, g, s] of [['000', '12', '3456'], ['666', '12', '3456'], ['900', '12', '3456'], ['999', '12', '3456'], ['123', '00', '4567'], ['123', '45', '0000']]) assert.ok(!ssnValid(a, g, s), `${a}-${g}-${s}`);
  assert.equal(shannonEntropy('aaaa'), 0);
  assert.equal(shannonEntropy('abcd'), 2);
  assert.ok(shannonEntropy(b64(32)) > 4);
  assert.ok(isJwtHeader('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9'));
  assert.ok(!isJwtHeader('eyJ0eXAiOiJKV1QifQ')); // {"typ":"JWT"}: no alg
  assert.ok(!isJwtHeader('eyJub3Q'));
});

// --- strategies ---------------------------------------------------------------------------------------

test('strategies: redact label, partial keeps the last N, hash is deterministic per secret, null', () => {
  const cols = (strategy: string, extra = {}) => masker({ columns: [{ name: 'v', strategy, ...extra }] as never });
  const value = '4111 1111 1111 1111';
  let m = cols('redact');
  let [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue(value, e), '[MASKED:v]');
  m = cols('redact', { label: 'card_number' });
  [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue(value, e), '[MASKED:card_number]');
  m = cols('partial');
  [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue(value, e), '****1111');
  m = cols('partial', { keep: 6 });
  [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue('ACCT-1234-5678-9012-3456', e), '****123456');
  assert.equal(m.maskValue('ORD-2024-1234', e), '****234'); // never more than a third
  m = cols('null');
  [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue(value, e), null);
  m = masker({ columns: [{ name: 'v', strategy: null }] }); // YAML's unquoted null
  [e] = m.forColumns([{ name: 'v' }]);
  assert.equal(m.maskValue(value, e), null);

  // partial: at most a third of the value, separators not kept, always four stars
  assert.equal(partial('4111-1111-1111-1111', 4), '****1111');
  assert.equal(partial('+14155552671', 4), '****2671');
  assert.equal(partial('abcdef', 4), '****ef');
  assert.equal(partial('ab', 4), '****');
  assert.equal(partial('abc😀😀😀😀😀😀', 4), '****😀😀'); // surrogate pairs stay whole

  // hash: h: + 16 hex; equal across instances with the same secret, different with another
  m = cols('hash');
  [e] = m.forColumns([{ name: 'v' }]);
  const h1 = m.maskValue('alice@example.com', e)!;
  assert.match(h1, /^h:[0-9a-f]{16}$/);
  const m2 = cols('hash');
  assert.equal(m2.maskValue('alice@example.com', m2.forColumns([{ name: 'v' }])[0]), h1);
  assert.equal(m.hash('alice@example.com'), h1);
  assert.notEqual(m.maskValue('bob@example.com', e), h1);
  const other = new Masker(parseMaskConfig({ columns: [{ name: 'v', strategy: 'hash' }] }), Buffer.from('another-secret'));
  assert.notEqual(other.maskValue('alice@example.com', other.forColumns([{ name: 'v' }])[0]), h1);
  // the same token from a detector inside text, so a hashed column joins with hashed emails in text
  const hm = masker({ detectors: { email: 'hash' } });
  assert.equal(hm.maskText('to alice@example.com.'), `to ${h1}.`);

  // detectors: partial and hash inside text; null inside text = redact
  const dm = masker({ detectors: { card: 'partial', email: 'null', ip: { strategy: 'partial', keep: 2 } } });
  assert.equal(dm.maskText('card 4111 1111 1111 1111, mail a@example.com, ip 10.0.0.77'), 'card ****1111, mail [MASKED:email], ip ****77');
});

test('defaults: all detectors on with their default strategies, default column rules', () => {
  const cfg = parseMaskConfig({});
  assert.equal(cfg.onError, 'closed');
  const s = detectorSettings(cfg);
  for (const n of DETECTOR_NAMES) assert.equal(s[n]?.strategy, DEFAULT_DETECTOR_STRATEGY[n]);
  const m = new Masker(cfg, SECRET);
  const plan = m.forColumns(['password', 'password_hash', 'passwd', 'client_secret', 'api_token', 'stripe_api_key', 'email', 'name'].map((name) => ({ name })));
  assert.deepEqual(plan.map((e) => e.kind), ['rule', 'rule', 'rule', 'rule', 'rule', 'rule', 'scan', 'scan']);
  assert.equal(m.maskText('card 4111 1111 1111 1111 from 10.1.2.3'), `card ****1111 from ${m.hash('10.1.2.3')}`);
  // off, default off, a default strategy for all
  assert.deepEqual(Object.keys(detectorSettings(parseMaskConfig({ detectors: { default: 'off', email: 'hash' } }))), ['email']);
  assert.ok(!('ip' in detectorSettings(parseMaskConfig({ detectors: { ip: 'off' } }))));
  assert.ok(!('ip' in detectorSettings(parseMaskConfig({ detectors: { ip: false } }))));
  assert.ok(Object.values(detectorSettings(parseMaskConfig({ detectors: { default: 'hash' } }))).every((x) => x!.strategy === 'hash'));
  const off = masker({ detectors: { default: 'off' }, defaultColumns: false });
  assert.equal(off.maskText('a@example.com 4111111111111111'), 'a@example.com 4111111111111111');
});

test('config errors name the field', () => {
  const bad: [unknown, RegExp][] = [
    [{ detectors: { emial: 'redact' } }, /emial/],
    [{ detectors: { email: 'scramble' } }, /detectors\.email|expected off, redact/],
    [{ onError: 'maybe' }, /onError/],
    [{ columns: [{ name: 'x', match: 'a.b.c', strategy: 'hash' }] }, /exactly one of match/],
    [{ columns: [{ strategy: 'hash' }] }, /exactly one of match/],
    [{ custom: [{ name: 'x', pattern: '(' }] }, /invalid RegExp/],
    [{ custom: [{ name: 'x', pattern: 'a*' }] }, /empty string/],
    [{ custom: [{ name: 'email', pattern: 'abc' }] }, /duplicate detector name "email"/],
    [{ custom: [{ name: 'Bad Name', pattern: 'abc' }] }, /lowercase name/],
    [{ unknownKey: 1 }, /unknownKey|Unrecognized/i],
  ];
  for (const [raw, re] of bad) {
    const r = maskConfigSchema.safeParse(raw);
    assert.ok(!r.success, `accepted ${JSON.stringify(raw)}`);
    const msg = r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    assert.match(msg, re, `${JSON.stringify(raw)} → ${msg}`);
  }
});

// --- columns ------------------------------------------------------------------------------------------

test('column rules: schema.table.column globs and name patterns; first match wins; rules beat detectors', () => {
  const m = masker({
    columns: [
      { match: 'public.customers.email', strategy: 'hash' },
      { match: 'billing.*.card*', strategy: 'partial' },
      { match: 'orders.note', strategy: 'redact', label: 'note' }, // two parts: any schema
      { name: 'tokens_used', strategy: 'scan' }, // overrides the default *token* rule
      { name: 'ssn', strategy: null },
    ],
  });
  const plan = m.forColumns([
    { schema: 'public', table: 'customers', name: 'email' },
    { schema: 'public', table: 'leads', name: 'email' },
    { schema: 'billing', table: 'payments', name: 'card_number' },
    { schema: 'sales', table: 'orders', name: 'note' },
    { schema: 'public', table: 'usage', name: 'tokens_used' },
    { schema: 'public', table: 'users', name: 'api_token' },
    { name: 'SSN' }, // an expression column, upper case
    { schema: 'PUBLIC', table: 'Customers', name: 'Email' }, // case-insensitive
  ]);
  assert.deepEqual(
    plan.map((e) => (e.kind === 'rule' ? `${e.strategy}:${e.label}` : 'scan')),
    ['hash:email', 'scan', 'partial:card_number', 'redact:note', 'scan', 'redact:api_token', 'null:SSN', 'hash:Email'],
  );
  const counts = newCounts();
  const row = ['alice@example.com', 'bob@example.com', '4111 1111 1111 1111', 'call me: +14155552671', '1234', 'tok', '123-45-6789', 'x'];
  const out = row.map((v, i) => m.maskValue(v, plan[i], counts));
  assert.deepEqual(out, [m.hash('alice@example.com'), '[MASKED:email]', '****1111', '[MASKED:note]', '1234', '[MASKED:api_token]', null, m.hash('x')]);
  // a rule replaces the whole value even where a detector would have masked a part
  assert.notEqual(out[0], '[MASKED:email]');
  assert.deepEqual({ ...counts }, {
    'column:email': 1,
    email: 1,
    'column:card_number': 1,
    'column:note': 1,
    'column:api_token': 1,
    'column:SSN': 1,
    'column:Email': 1,
  });
  // without default rules
  const bare = masker({ defaultColumns: false });
  assert.equal(bare.forColumns([{ name: 'password' }])[0].kind, 'scan');
});

test('maskValue: scan columns go through the detectors; unchanged values are the same string', () => {
  const m = masker();
  const [scan] = m.forColumns([{ name: 'body' }]);
  const v = 'no secrets here, just 42 words';
  assert.ok(Object.is(m.maskValue(v, scan), v));
  const counts = newCounts();
  assert.equal(m.maskValue('mail a@example.com', scan, counts), 'mail [MASKED:email]');
  assert.equal(m.maskValue('ssn 123-45-6789', scan, counts), 'ssn [MASKED:ssn]');
  assert.deepEqual({ ...counts }, { email: 1, ssn: 1 });
});

// --- counts, overlaps, custom -------------------------------------------------------------------------

test('counts per detector, merged across calls', () => {
  const c = newCounts();
  all.maskText('a@example.com b@example.com 4111111111111111', c);
  all.maskText('c@example.com', c);
  assert.deepEqual({ ...c }, { email: 3, card: 1 });
  const total = mergeCounts(newCounts(), c);
  mergeCounts(total, { card: 2, error: 1 });
  assert.deepEqual({ ...total }, { email: 3, card: 3, error: 1 });
  assert.equal(countsTotal(total), 6);
});

test('overlapping hits: one span, named by the higher-priority detector', () => {
  // a JWT as an assignment's value: jwt names it
  const c = newCounts();
  assert.equal(all.maskText(`token=${JWT}`, c), 'token=[MASKED:jwt]');
  assert.deepEqual({ ...c }, { jwt: 1 });
  // an AWS key id as an assignment's value
  assert.equal(all.maskText('aws_access_key_id = AKIAIOSFODNN7EXAMPLE'), 'aws_access_key_id = [MASKED:aws]');
  // the password of a URL is not an email
  assert.equal(all.maskText('smtp://mailer:pw@mail.example.com'), 'smtp://mailer:[MASKED:url_password]@mail.example.com');
});

test('custom detectors: a name, a pattern, a strategy; matched line by line', () => {
  const m = masker({ custom: [{ name: 'order_ref', pattern: 'ORD-[0-9]{8}', strategy: 'partial' }, { name: 'codename', pattern: 'project (falcon|osprey)', flags: 'i' }] });
  const c = newCounts();
  assert.equal(m.maskText('ref ORD-12345678, ORD-1234567; Project Falcon', c), 'ref ****678, ORD-1234567; [MASKED:codename]');
  assert.deepEqual({ ...c }, { order_ref: 1, codename: 1 });
  const ml = masker({ custom: [{ name: 'pair', pattern: 'a\\s+b' }] });
  assert.equal(ml.maskText('a b\na\nb'), '[MASKED:pair]\na\nb'); // never across a line break
});

// --- onError, visibility -------------------------------------------------------------------------------

const thrower: Detector = {
  name: 'boom',
  maxLength: 16,
  scan(text, from) {
    if (text.indexOf('boom', from) >= 0) throw new Error('detector bug');
    return text.length;
  },
};

test('onError closed withholds the value; open passes it; both count an error', () => {
  const seen: unknown[] = [];
  const closed = masker({}, SECRET, { detectors: [{ detector: thrower }], onError: (e: unknown) => seen.push(e) });
  const c = newCounts();
  assert.equal(closed.maskText('fine a@example.com', c), 'fine [MASKED:email]');
  assert.equal(closed.maskText('boom a@example.com', c), ERROR_TEXT);
  const [scan] = closed.forColumns([{ name: 'x' }]);
  assert.equal(closed.maskValue('boom', scan, c), ERROR_TEXT);
  assert.deepEqual({ ...c }, { email: 1, error: 2 });
  assert.equal(seen.length, 2);
  assert.equal(closed.errors, 2);

  const open = masker({ onError: 'open' }, SECRET, { detectors: [{ detector: thrower }] });
  const c2 = newCounts();
  assert.equal(open.maskText('boom a@example.com', c2), 'boom a@example.com');
  assert.deepEqual({ ...c2 }, { error: 1 });

  // streams too: the text not yet emitted is withheld, then masking goes on
  const s = closed.stream();
  let out = s.push('ok a@example.com\n');
  out += s.push('then boom\n');
  out += s.push('b@example.com\n');
  out += s.end();
  assert.equal(out, `ok [MASKED:email]\n${ERROR_TEXT}[MASKED:email]\n`);
  assert.deepEqual({ ...s.counts }, { email: 2, error: 1 });
  const so = open.stream();
  assert.equal(so.push('then boom\n') + so.end(), 'then boom\n');
});

test('visibility: unmasked groups', () => {
  const m = masker({ unmaskedGroups: ['breakglass', 'dba-oncall'] });
  assert.ok(m.isUnmasked(['dev', 'dba-oncall']));
  assert.ok(!m.isUnmasked(['dev']));
  assert.ok(!m.isUnmasked([]));
  assert.ok(!masker().isUnmasked(['breakglass']));
  assert.ok(isUnmaskedFor(parseMaskConfig({ unmaskedGroups: ['breakglass'] }), ['breakglass']));
  assert.ok(!isUnmaskedFor(parseMaskConfig({}), ['breakglass']));
});

test('the masking secret must not be empty', () => {
  assert.throws(() => masker({}, Buffer.alloc(0)), /secret/);
});

// --- the short-value prefilter is exact ------------------------------------------------------------

test('quick tests and anchors never skip a value a detector would hit', () => {
  const samples = [...POSITIVES.map(([, t]) => t), ...POSITIVES.map(([, , s]) => s), ...FALSE_POSITIVES];
  // plus variations: each sample cut at many places, and padded
  const values = new Set<string>();
  for (const s of samples) {
    values.add(s);
    for (let i = 1; i < s.length; i += Math.max(1, Math.floor(s.length / 7))) {
      values.add(s.slice(i));
      values.add(s.slice(0, i));
      values.add(`x ${s.slice(i)} y`);
    }
  }
  const f = new Features();
  const out: number[] = [];
  let checked = 0;
  for (const v of values) {
    if (v.length > 512) continue;
    const mask = builtinQuickMask(f.measure(v));
    BUILTIN_LIST.forEach((det, i) => {
      out.length = 0;
      det.scan(v, 0, v.length, true, out);
      if (out.length === 0) return;
      checked++;
      assert.ok(mask & (1 << i), `${det.name}: quick test fails on ${JSON.stringify(v)}`);
      assert.ok(det.quick!(f), `${det.name}: quick fails on ${JSON.stringify(v)}`);
      assert.ok(new RegExp(det.anchor!).test(v), `${det.name}: anchor fails on ${JSON.stringify(v)}`);
    });
  }
  assert.ok(checked > 100);
  // every built-in detector object is in BUILTIN_LIST
  for (const n of DETECTOR_NAMES) for (const d of BUILTIN_DETECTORS[n]) assert.ok(BUILTIN_LIST.includes(d));
});
