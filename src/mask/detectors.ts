// Value detectors: find secrets and personal data inside text. No wire formats here; the
// PostgreSQL, MySQL, SSH and HTTP adapters all reach them through `Masker`.
//
// A detector scans like a global RegExp `exec` loop: from a position, it reports the spans to
// mask in order, never overlapping each other, and says where the next scan resumes. That
// contract is what lets `StreamMasker` feed the same detectors one chunk at a time and still
// produce exactly the output of masking the whole text at once:
//
//   scan(text, from, limit, eof, out) → next
//     reports (start, end) pairs into `out` for every hit whose candidate starts before `limit`
//     (it may report more), and returns `next` such that every hit starting before `next` has
//     been reported and scanning again from `next` reproduces the rest. With `eof` false the text
//     may continue: `limit` is chosen by the caller so that every candidate starting before it
//     is complete (at most `maxLength` characters examined, or — for single-line detectors — its
//     line already ended), and a detector never reports a hit that more text could change.
//
// Single-line detectors (all but `pem`) never match across '\n' (no `\s`, no negated classes
// without '\n'), so a finished line settles them. Each detector has a bounded `maxLength`;
// the longest (JWT, GCP key string) is a little over 11 KiB, which bounds what a stream holds
// back inside one very long line.
//
// PEM private keys are the exception: they span lines and may be long. A block runs from
// `-----BEGIN … PRIVATE KEY-----` to its END marker, or to the first character that cannot be
// in a PEM body. Blocks longer than `PEM_CAP` (8 KiB) are always redacted whatever the
// strategy; a stream that has seen 8 KiB of a block without its end emits the redaction label
// and then swallows the rest of the block as it arrives (`extend`), so no part of a key is
// ever emitted and the hold-back stays bounded.
import net from 'node:net';

export interface Detector {
  /** the config key and the label of `[MASKED:<name>]` */
  readonly name: string;
  /** the most characters one candidate can depend on (itself plus look-ahead) */
  readonly maxLength: number;
  /** true when a hit may contain '\n' (pem only) */
  readonly multiline?: boolean;
  /** RegExp source that matches somewhere in every text this detector can hit (a cheap prefilter); absent = always scan */
  readonly anchor?: string;
  /** a necessary condition on a short value's character counts (checked before `anchor`) */
  readonly quick?: (f: Features) => boolean;
  /** hits longer than this are always redacted (pem) */
  readonly longAfter?: number;
  scan(text: string, from: number, limit: number, eof: boolean, out: number[]): number;
  /**
   * pem only. `scan` with eof false reports a block that is already longer than `longAfter` and
   * not yet ended as the pair (start, ~markerEnd) — an "open" hit. `extend` then finds its end:
   * done with the end index, or not done with the index before which the text is block body.
   */
  extend?(text: string, from: number, eof: boolean): { end: number; done: boolean };
}

/** Character counts of a short value, for the detectors' `quick` tests. */
export class Features {
  len = 0;
  digits = 0;
  upper = 0;
  dots = 0;
  colons = 0;
  dashes = 0;
  spaces = 0;
  /** longest run of digits */
  maxDigits = 0;
  /** a run of exactly three digits followed by '-' or ' ' (an SSN's start) */
  d3sep = false;
  /** longest run of token characters [A-Za-z0-9+/=_.-] */
  maxTok = 0;
  /** letters present, case-insensitive: bit 0 = a … bit 25 = z */
  letters = 0;
  /** '::' seen */
  dcolon = false;
  at = false;
  eq = false;
  plus = false;
  quote = false;
  underscore = false;
  slash = false;

  measure(v: string): this {
    let digits = 0, upper = 0, dots = 0, colons = 0, dashes = 0, spaces = 0, letters = 0;
    let run = 0, maxDigits = 0, tok = 0, maxTok = 0;
    let dcolon = false, at = false, eq = false, plus = false, quote = false, underscore = false, slash = false, d3sep = false;
    let prev = 0;
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c >= 48 && c <= 57) {
        digits++;
        if (++run > maxDigits) maxDigits = run;
        if (++tok > maxTok) maxTok = tok;
        prev = c;
        continue;
      }
      if (run === 3 && (c === 45 || c === 32)) d3sep = true;
      run = 0;
      if (c >= 97 && c <= 122) {
        letters |= 1 << (c - 97);
        if (++tok > maxTok) maxTok = tok;
      } else if (c >= 65 && c <= 90) {
        upper++;
        letters |= 1 << (c - 65);
        if (++tok > maxTok) maxTok = tok;
      } else {
        if (c === 46 || c === 45 || c === 95 || c === 43 || c === 47 || c === 61) {
          if (++tok > maxTok) maxTok = tok;
        } else tok = 0;
        if (c === 32) spaces++;
        else if (c === 46) dots++;
        else if (c === 58) {
          colons++;
          if (prev === 58) dcolon = true;
        } else if (c === 45) dashes++;
        else if (c === 64) at = true;
        else if (c === 61) eq = true;
        else if (c === 43) plus = true;
        else if (c === 34) quote = true;
        else if (c === 95) underscore = true;
        else if (c === 47) slash = true;
      }
      prev = c;
    }
    this.len = v.length;
    this.digits = digits;
    this.upper = upper;
    this.dots = dots;
    this.colons = colons;
    this.dashes = dashes;
    this.spaces = spaces;
    this.maxDigits = maxDigits;
    this.d3sep = d3sep;
    this.maxTok = maxTok;
    this.letters = letters;
    this.dcolon = dcolon;
    this.at = at;
    this.eq = eq;
    this.plus = plus;
    this.quote = quote;
    this.underscore = underscore;
    this.slash = slash;
    return this;
  }
}

/** Bit mask of letters, for Features.letters. */
function L(word: string): number {
  let m = 0;
  for (const ch of word.toLowerCase()) m |= 1 << (ch.charCodeAt(0) - 97);
  return m;
}
const has = (f: Features, mask: number) => (f.letters & mask) === mask;
const K_AWS = L('aws'), K_SECRET = L('secret'), K_GH = L('gh'), K_GL = L('gl'), K_X = L('x'), K_SLACK = L('slack');
const K_EYJ = L('eyj'), K_A = L('a'), K_PWD = L('pwd'), K_PAS = L('pas'), K_KEY = L('key'), K_TOKEN = L('token');
const K_PASSW = L('passw'), K_CRED = L('cred'), K_AUTH = L('auth'), K_K = L('k'), K_W = L('w');

// Necessary conditions for each built-in detector on a value's Features (see `quick`).
function qPem(f: Features) { return f.dashes >= 10; }
function qGcp(f: Features) { return f.quote && f.len >= 17; }
function qJwt(f: Features) { return f.dots >= 2 && f.maxTok >= 9 && has(f, K_EYJ); }
function qAwsId(f: Features) { return f.upper >= 4 && f.maxTok >= 20 && has(f, K_A); }
function qAwsSecret(f: Features) { return f.maxTok >= 40 && (has(f, K_AWS) || has(f, K_SECRET)); }
function qGithub(f: Features) { return f.underscore && f.maxTok >= 40 && has(f, K_GH); }
function qGitlab(f: Features) { return f.dashes > 0 && f.maxTok >= 25 && has(f, K_GL); }
function qSlack(f: Features) { return (f.dashes > 0 && f.maxTok >= 15 && has(f, K_X)) || (f.slash && has(f, K_SLACK)); }
function qStripe(f: Features) { return f.underscore && f.maxTok >= 30 && (has(f, K_K) || has(f, K_W)); }
function qUrl(f: Features) { return f.colons >= 2 && f.at && f.slash; }
function qDsn(f: Features) { return f.eq && (has(f, K_PWD) || has(f, K_PAS)); }
function qAssign(f: Features) {
  return (f.colons > 0 || f.eq) && f.len >= 20 &&
    (has(f, K_KEY) || has(f, K_SECRET) || has(f, K_TOKEN) || has(f, K_PASSW) || has(f, K_PWD) || has(f, K_CRED) || has(f, K_AUTH));
}
function qEmail(f: Features) { return f.at; }
function qPhone(f: Features) { return f.plus && f.maxDigits >= 8; }
function qIban(f: Features) { return f.upper >= 2 && f.digits >= 2 && f.len >= 15; }
function qCard(f: Features) {
  return f.maxDigits >= 13 || (f.maxDigits >= 6 && (f.spaces >= 2 || f.dashes >= 2)) || (f.maxDigits >= 4 && (f.spaces >= 3 || f.dashes >= 3));
}
function qSsn(f: Features) { return f.d3sep && f.maxDigits >= 4 && f.digits >= 9 && (f.dashes >= 2 || f.spaces >= 2); }
function qIpv4(f: Features) { return f.dots >= 3 && f.digits >= 4; }
function qIpv6(f: Features) { return f.dcolon || f.colons >= 6; }

/**
 * The built-in detectors whose quick test passes, as bits in BUILTIN_LIST order (one inlined
 * function instead of a call per detector: this runs for every short value).
 */
export function builtinQuickMask(f: Features): number {
  return (
    (qPem(f) ? 1 : 0) | (qGcp(f) ? 2 : 0) | (qJwt(f) ? 4 : 0) | (qAwsId(f) ? 8 : 0) | (qAwsSecret(f) ? 16 : 0) |
    (qGithub(f) ? 32 : 0) | (qGitlab(f) ? 64 : 0) | (qSlack(f) ? 128 : 0) | (qStripe(f) ? 256 : 0) | (qUrl(f) ? 512 : 0) |
    (qDsn(f) ? 1024 : 0) | (qAssign(f) ? 2048 : 0) | (qEmail(f) ? 4096 : 0) | (qPhone(f) ? 8192 : 0) | (qIban(f) ? 16384 : 0) |
    (qCard(f) ? 32768 : 0) | (qSsn(f) ? 65536 : 0) | (qIpv4(f) ? 131072 : 0) | (qIpv6(f) ? 262144 : 0)
  );
}

type Quick = (f: Features) => boolean;

// --- validators --------------------------------------------------------------------------------

/** Luhn checksum over a string of digits. */
export function luhn(digits: string): boolean {
  let sum = 0;
  let dbl = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** Whether a card number (digits only) starts with a known issuer prefix and has a length that issuer uses. */
export function knownIIN(d: string): boolean {
  const L = d.length;
  if (L < 13 || L > 19) return false;
  const n2 = +d.slice(0, 2);
  const n3 = +d.slice(0, 3);
  const n4 = +d.slice(0, 4);
  const n6 = +d.slice(0, 6);
  if (d[0] === '4') return L === 13 || L === 16 || L === 19; // Visa
  if ((n2 >= 51 && n2 <= 55) || (n4 >= 2221 && n4 <= 2720)) return L === 16; // Mastercard
  if (n2 === 34 || n2 === 37) return L === 15; // American Express
  if (n4 >= 2200 && n4 <= 2204) return L >= 16; // Mir
  if (n4 === 6011 || n2 === 65 || (n3 >= 644 && n3 <= 649) || (n6 >= 622126 && n6 <= 622925)) return L >= 16; // Discover
  if (n4 >= 3528 && n4 <= 3589) return L >= 16; // JCB
  if ((n3 >= 300 && n3 <= 305) || n4 === 3095 || n2 === 36 || n2 === 38 || n2 === 39) return L >= 14; // Diners Club
  if (n2 === 62 || n2 === 81) return L >= 16; // UnionPay
  if (n2 === 50 || (n2 >= 56 && n2 <= 69)) return true; // Maestro and other 5x/6x
  return false;
}

/** IBAN lengths by country (ISO 13616 registry). */
export const IBAN_LENGTHS: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28,
  CH: 21, CR: 22, CY: 28, CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18,
  FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HR: 21, HU: 28, IE: 22,
  IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20,
  LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28, NL: 18,
  NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31,
  SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26, UA: 29,
  VA: 22, VG: 24, XK: 20, YE: 30,
};

/** IBAN check: known country, its length, and the ISO 7064 mod-97 checksum. `iban` without spaces. */
export function ibanValid(iban: string): boolean {
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(iban)) return false;
  if (IBAN_LENGTHS[iban.slice(0, 2)] !== iban.length) return false;
  const s = iban.slice(4) + iban.slice(0, 4);
  let r = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 57) r = (r * 10 + (c - 48)) % 97;
    else r = (r * 100 + (c - 55)) % 97;
  }
  return r === 1;
}

/** US SSN rules: area not 000, 666 or 900-999; group not 00; serial not 0000. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  const a = +area;
  return a !== 0 && a !== 666 && a < 900 && group !== '00' && serial !== '0000';
}

/** Shannon entropy in bits per character. */
export function shannonEntropy(s: string): number {
  if (s.length === 0) return 0;
  const freq = new Map<number, number>();
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    freq.set(c, (freq.get(c) ?? 0) + 1);
  }
  let h = 0;
  for (const n of freq.values()) {
    const p = n / s.length;
    h -= p * Math.log2(p);
  }
  return h;
}

/** Whether `seg` is the base64url of a JSON object with a string "alg" (a JWT/JWS/JWE header). */
export function isJwtHeader(seg: string): boolean {
  try {
    const h = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8')) as unknown;
    return typeof h === 'object' && h !== null && typeof (h as { alg?: unknown }).alg === 'string';
  } catch {
    return false;
  }
}

function charClasses(s: string): number {
  let lower = 0;
  let upper = 0;
  let digit = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 97 && c <= 122) lower = 1;
    else if (c >= 65 && c <= 90) upper = 1;
    else if (c >= 48 && c <= 57) digit = 1;
  }
  return lower + upper + digit;
}

/** The generic assignment rule's test for a value: long, random-looking, not a URL. */
export function highEntropySecret(v: string): boolean {
  return v.length >= 16 && charClasses(v) >= 2 && !v.includes('://') && shannonEntropy(v) >= 3.5;
}

// --- RegExp-based detectors ------------------------------------------------------------------------

/**
 * Decides on one RegExp match: false/null rejects it, true masks the whole match, a pair
 * [start, end] masks that span, a triple [start, end, resume] also sets where scanning resumes.
 */
type Check = (m: RegExpExecArray, text: string) => boolean | null | readonly number[];

export function regexDetector(
  name: string,
  re: RegExp,
  opts: { maxLength: number; anchor?: string; quick?: Quick; check?: Check },
): Detector {
  if (!re.global) throw new Error(`detector ${name}: RegExp needs the g flag`);
  const check = opts.check;
  return {
    name,
    maxLength: opts.maxLength,
    anchor: opts.anchor,
    quick: opts.quick,
    scan(text, from, limit, _eof, out) {
      let cur = from;
      re.lastIndex = from;
      for (;;) {
        const m = re.exec(text);
        if (m === null || m.index >= limit) break;
        const end = m.index + m[0].length;
        cur = end > m.index ? end : m.index + 1;
        const r = check ? check(m, text) : true;
        if (r === true) out.push(m.index, end);
        else if (r) {
          out.push(r[0], r[1]);
          if (r.length > 2) cur = r[2];
        }
        re.lastIndex = cur;
      }
      return cur > limit ? cur : limit;
    },
  };
}

/**
 * Like regexDetector, for patterns that can only start with one of a few literals: the
 * literals are found with indexOf (far faster than a RegExp search when they are rare) and the
 * sticky RegExp `re` (flag y; look-behinds allowed) is tried at each. Same semantics as the
 * global RegExp: a failed try moves on by one character, a match resumes after itself.
 * A literal may be given as [text, back]: found `back` characters into the match (indexOf is
 * much faster on a literal whose first character is rare, e.g. "_live_" rather than "sk_live_").
 */
export function literalDetector(
  name: string,
  literals: readonly (string | readonly [string, number])[],
  re: RegExp,
  opts: { maxLength: number; anchor?: string; quick?: Quick; check?: Check },
): Detector {
  if (!re.sticky) throw new Error(`detector ${name}: RegExp needs the y flag`);
  const check = opts.check;
  const n = literals.length;
  const lit = literals.map((l) => (typeof l === 'string' ? l : l[0]));
  const back = literals.map((l) => (typeof l === 'string' ? 0 : l[1]));
  const at: number[] = new Array(n).fill(-1);
  const find = (text: string, k: number, from: number) => {
    const i = text.indexOf(lit[k], from + back[k]);
    return i < 0 ? -1 : i - back[k];
  };
  return {
    name,
    maxLength: opts.maxLength,
    anchor: opts.anchor ?? lit.map(escapeRe).join('|'),
    quick: opts.quick,
    scan(text, from, limit, _eof, out) {
      let cur = from;
      for (let k = 0; k < n; k++) at[k] = find(text, k, from);
      for (;;) {
        let p = -1;
        for (let k = 0; k < n; k++) {
          if (at[k] >= 0 && at[k] < cur) at[k] = find(text, k, cur);
          if (at[k] >= 0 && (p < 0 || at[k] < p)) p = at[k];
        }
        if (p < 0 || p >= limit) break;
        cur = tryAt(re, check, text, p, out);
      }
      return cur > limit ? cur : limit;
    },
  };
}

/**
 * Like regexDetector, where a cheap global `finder` (no look-behind) matches at every position
 * the sticky `re` could match (its literal-ish prefix): V8 searches the short finder much faster
 * than the full pattern. Same semantics as the global RegExp.
 */
export function finderDetector(
  name: string,
  finder: RegExp,
  re: RegExp,
  opts: { maxLength: number; anchor?: string; quick?: Quick; check?: Check },
): Detector {
  if (!re.sticky || !finder.global) throw new Error(`detector ${name}: needs a global finder and a sticky RegExp`);
  const check = opts.check;
  return {
    name,
    maxLength: opts.maxLength,
    anchor: opts.anchor ?? finder.source,
    quick: opts.quick,
    scan(text, from, limit, _eof, out) {
      let cur = from;
      finder.lastIndex = from;
      for (;;) {
        const f = finder.exec(text);
        if (f === null || f.index >= limit) break;
        cur = tryAt(re, check, text, f.index, out);
        finder.lastIndex = cur;
      }
      return cur > limit ? cur : limit;
    },
  };
}

/**
 * For patterns that start at the first digit of a run of digits (their look-behind rules out a
 * digit before). `finder`, a global RegExp without look-behind that matches wherever such a
 * pattern can start (and maybe inside runs too), skips quickly over everything else; from a
 * finder match, the run's first digit is the candidate. `pre` (a necessary condition on the
 * run's length and the character after it) rules most out before the sticky `re` is tried.
 */
export function digitRunDetector(
  name: string,
  finder: RegExp,
  re: RegExp,
  pre: (digits: number, after: number) => boolean,
  opts: { maxLength: number; anchor?: string; quick?: Quick; check?: Check },
): Detector {
  if (!re.sticky || !finder.global) throw new Error(`detector ${name}: needs a global finder and a sticky RegExp`);
  const check = opts.check;
  return {
    name,
    maxLength: opts.maxLength,
    anchor: opts.anchor ?? finder.source,
    quick: opts.quick,
    scan(text, from, limit, _eof, out) {
      const len = text.length;
      let cur = from;
      finder.lastIndex = from;
      for (;;) {
        const f = finder.exec(text);
        if (f === null) break;
        let s = f.index;
        while (s > 0 && isDigit(text.charCodeAt(s - 1))) s--;
        if (s >= limit) break;
        let e = f.index + 1;
        while (e < len && isDigit(text.charCodeAt(e))) e++;
        if (s >= cur && pre(e - s, text.charCodeAt(e))) {
          const next = tryAt(re, check, text, s, out);
          cur = next;
          if (next > e) e = next;
        }
        finder.lastIndex = e;
      }
      return cur > limit ? cur : limit;
    },
  };
}

const isDigit = (c: number) => c >= 48 && c <= 57;

/** Tries the sticky `re` at p; reports a hit; returns where scanning goes on. */
function tryAt(re: RegExp, check: Check | undefined, text: string, p: number, out: number[]): number {
  re.lastIndex = p;
  const m = re.exec(text);
  if (m === null) return p + 1;
  const end = p + m[0].length;
  let cur = end > p ? end : p + 1;
  const r = check ? check(m, text) : true;
  if (r === true) out.push(p, end);
  else if (r) {
    out.push(r[0], r[1]);
    if (r.length > 2) cur = r[2];
  }
  return cur;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** The span of the first capture group that took part in the match ('d' flag required). */
function firstGroup(m: RegExpExecArray): readonly number[] | null {
  const ind = m.indices;
  if (!ind) return null;
  for (let i = 1; i < ind.length; i++) {
    const g = ind[i];
    if (g && g[1] > g[0]) return g;
  }
  return null;
}

// Case-insensitive literal as a RegExp source, for anchors (no 'i' flag in a combined prefilter).
function ci(word: string): string {
  return word.replace(/[a-z]/gi, (c) => `[${c.toLowerCase()}${c.toUpperCase()}]`);
}

// --- the built-in detectors ------------------------------------------------------------------------

const card = digitRunDetector(
  'card',
  /\d\d\d\d[ -]?\d\d\d\d/g,
  /(?<![0-9A-Za-z_]|[0-9]\.)(?:\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5}|\d{13,19})(?![0-9A-Za-z_]|\.[0-9])/y,
  (n, after) => (n >= 13 && n <= 19) || (n === 4 && (after === 32 || after === 45)),
  {
    maxLength: 32,
    anchor: String.raw`\d{13}|\d{4} \d{4} \d{4}|\d{4}-\d{4}-\d{4}|\d{4}[ -]\d{6}[ -]\d{4}`,
    quick: qCard,
    check: (m) => {
      const d = m[0].replace(/[ -]/g, '');
      return knownIIN(d) && luhn(d);
    },
  },
);

const iban = finderDetector('iban', /[A-Z][A-Z][0-9][0-9]/g, /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}/y, {
  maxLength: 72,
  anchor: String.raw`[A-Z]{2}\d\d ?[A-Z0-9]{4}`,
  quick: qIban,
  check: (m, text) => {
    const L = IBAN_LENGTHS[m[0].slice(0, 2)];
    if (L === undefined) return false;
    // take exactly the country's length of alphanumerics, single spaces allowed between them
    const s = m[0];
    let compact = s.slice(0, 4);
    let i = 4;
    while (compact.length < L && i < s.length) {
      if (s[i] !== ' ') compact += s[i];
      i++;
    }
    if (compact.length < L) return false;
    const end = m.index + i;
    const next = text.charCodeAt(end);
    if ((next >= 48 && next <= 57) || (next >= 65 && next <= 90) || (next >= 97 && next <= 122)) return false;
    return ibanValid(compact) ? [m.index, end, end] : false;
  },
});

// Dashed or spaced only: bare 9-digit numbers are too often something else (ids, amounts).
const ssn = digitRunDetector(
  'ssn',
  /\d\d\d[- ]\d\d[- ]\d\d\d\d/g,
  /(?<![0-9A-Za-z]|[0-9A-Za-z]-)(\d{3})([- ])(\d{2})\2(\d{4})(?![0-9A-Za-z]|-[0-9A-Za-z])/y,
  (n, after) => n === 3 && (after === 45 || after === 32),
  {
    maxLength: 16,
    anchor: String.raw`\d{3}[- ]\d\d[- ]\d{4}`,
    quick: qSsn,
    check: (m) => ssnValid(m[1], m[3], m[4]),
  },
);

// E.164: '+', then 8 to 15 digits, the first 1-9.
const phone = literalDetector('phone', ['+'], /(?<![0-9A-Za-z+])\+[1-9]\d{7,14}(?![0-9A-Za-z])/y, {
  maxLength: 20,
  anchor: String.raw`\+[1-9]\d{7}`,
  quick: qPhone,
});

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const ipv4 = digitRunDetector('ip', /\d\.\d{1,3}\.\d{1,3}\.\d/g, new RegExp(`(?<![0-9A-Za-z.]|[0-9]\\.)(?:${OCTET}\\.){3}${OCTET}(?![0-9A-Za-z]|\\.[0-9])`, 'y'), (n, after) => n <= 3 && after === 46, {
  maxLength: 20,
  anchor: String.raw`\d\.\d{1,3}\.\d{1,3}\.\d`,
  quick: qIpv4,
});

// IPv6: a run of hex digits, ':' and '.' (3-45 long), with no letter or digit either side,
// that node:net accepts, with at least one decimal digit (keeps "dead::beef" and C++ "a::b"
// out). Every valid address has "::" or seven colons, so a RegExp for "::" or ":h:h:h:" finds
// the runs worth looking at (not times like 12:30:07).
const V6 = new Uint8Array(128);
for (const ch of '0123456789abcdefABCDEF:.') V6[ch.charCodeAt(0)] = 1;
const isV6 = (c: number) => c < 128 && V6[c] === 1;
const isAlnum = (c: number) => (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
const V6_MAX = 45;
const V6_FINDER = /::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:/g;
const V6_FINDER_MAX = 16;
const ipv6: Detector = {
  name: 'ip',
  maxLength: 2 * V6_MAX + V6_FINDER_MAX + 4,
  anchor: String.raw`::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:`,
  quick: qIpv6,
  scan(text, from, limit, eof, out) {
    const len = text.length;
    let cur = from;
    let u = -1; // the first finder match not looked at
    V6_FINDER.lastIndex = from;
    for (;;) {
      const f = V6_FINDER.exec(text);
      if (f === null) break;
      const p = f.index;
      if (p >= limit && !eof) {
        u = p;
        break;
      }
      let s = p;
      while (s > 0 && p - s <= V6_MAX && isV6(text.charCodeAt(s - 1))) s--;
      let e = p + 1;
      while (e < len && e - s <= V6_MAX && isV6(text.charCodeAt(e))) e++;
      if (e - s >= 3 && e - s <= V6_MAX && s >= cur && !(s > 0 && isAlnumOrV6(text.charCodeAt(s - 1))) && !(e < len && isAlnumOrV6(text.charCodeAt(e)))) {
        let ce = e;
        if (text.charCodeAt(ce - 1) === 46) ce--;
        const c = text.slice(s, ce);
        if (/[0-9]/.test(c) && net.isIPv6(c)) {
          out.push(s, ce);
          cur = e;
        }
      }
      // the rest of this run gives the same run again; skip it (and runs too long to be one)
      while (e < len && isV6(text.charCodeAt(e))) e++;
      V6_FINDER.lastIndex = e > p + 1 ? e : p + 1;
    }
    if (eof) return len;
    // later hits are runs (never across a line break) around a finder match at or after u, or
    // one not complete yet (within the last V6_FINDER_MAX characters)
    const runStart = (p: number) => Math.max(p - V6_MAX - 1, text.lastIndexOf('\n', p - 1) + 1);
    const later = runStart(Math.max(0, len - V6_FINDER_MAX, text.lastIndexOf('\n') + 1));
    return Math.max(cur, from, u >= 0 ? Math.min(runStart(u), later) : later);
  },
};
function isAlnumOrV6(c: number): boolean {
  return isAlnum(c) || c === 58 || c === 46;
}

// JWT, JWS and JWE: base64url header starting with '{"' ("eyJ"), 3 or 5 parts.
const jwt = literalDetector(
  'jwt',
  [['yJ', 1]],
  /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,1024}\.[A-Za-z0-9_-]{0,8192}(?:\.[A-Za-z0-9_-]{0,1024}){1,3}(?![A-Za-z0-9_-])/y,
  {
    maxLength: 1028 + 8193 + 3 * 1025 + 1,
    anchor: 'eyJ',
    quick: qJwt,
    check: (m) => {
      if (!isJwtHeader(m[0].slice(0, m[0].indexOf('.')))) return false;
      let e = m.index + m[0].length;
      while (m.input.charCodeAt(e - 1) === 46) e--; // a full stop after the token is not part of it
      return [m.index, e];
    },
  },
);

const awsKeyId = literalDetector(
  'aws',
  ['AKIA', 'ASIA', 'AGPA', 'AIDA', 'AROA', 'ANPA', 'ANVA', 'AIPA'],
  /(?<![A-Za-z0-9])A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[A-Z0-9]{16}(?![A-Za-z0-9])/y,
  { maxLength: 21, quick: qAwsId },
);

// 40 characters of base64 after an "aws" or "secret" keyword on the same line (within 64
// characters), e.g. `aws_secret_access_key = …`, `"SecretAccessKey": "…"`.
const awsSecret = finderDetector('aws', /aws|secret/gi, /(?:aws|secret)[^\n]{0,64}?(?<![A-Za-z0-9/+])([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])/dyi, {
  maxLength: 6 + 64 + 40 + 1,
  anchor: '[A-Za-z0-9/+]{40}',
  quick: qAwsSecret,
  check: (m) => {
    const v = m[1];
    return charClasses(v) === 3 && shannonEntropy(v) >= 3.5 ? firstGroup(m) : false;
  },
});

/** Look-back for the GCP detector: `"type": "service_account"` this close before "private_key". */
export const GCP_LOOKBACK = 1024;
const GCP_TYPE = /"type"[ \t\r\n]*:[ \t\r\n]*"service_account"/;
const gcp = literalDetector('gcp', [['rivate_key"', 2]], /"private_key"[ \t]{0,16}:[ \t]{0,16}"((?:[^"\\\n]|\\.){1,4096})"/dy, {
  maxLength: 13 + 16 + 1 + 16 + 1 + 2 * 4096 + 1,
  anchor: '"private_key"',
  quick: qGcp,
  check: (m, text) => {
    const before = text.slice(Math.max(0, m.index - GCP_LOOKBACK), m.index);
    return GCP_TYPE.test(before) ? firstGroup(m) : false;
  },
});

const github = literalDetector(
  'github',
  ['gh', 'github_pat_'],
  /(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{82,244})(?![A-Za-z0-9_])/y,
  { maxLength: 256, anchor: 'gh[pousr]_|github_pat_', quick: qGithub },
);

const gitlab = literalDetector(
  'gitlab',
  ['gl'],
  /(?<![A-Za-z0-9_-])(?:glpat|gldt|glrt|glptt|glft|glsoat)-[A-Za-z0-9_.-]{20,250}(?![A-Za-z0-9_.-])/y,
  { maxLength: 258, anchor: 'gl(?:pat|dt|rt|ptt|ft|soat)-', quick: qGitlab },
);

const slack = literalDetector(
  'slack',
  ['xox', 'xapp-', ['.slack.com/', 5]],
  /(?<![A-Za-z0-9_-])(?:xox[baprs]|xapp)-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9_-])|hooks\.slack\.com\/(?:services|workflows|triggers)\/([A-Za-z0-9_\/+-]{20,250})/dy,
  { maxLength: 300, anchor: String.raw`xox[baprs]-|xapp-|hooks\.slack\.com/`, quick: qSlack, check: (m) => firstGroup(m) ?? true },
);

const stripe = literalDetector(
  'stripe',
  [['_live_', 2], ['_test_', 2], 'whsec_'],
  /(?<![A-Za-z0-9_])(?:(?:sk|rk)_(?:live|test)_|pk_live_|whsec_)[A-Za-z0-9]{24,247}(?![A-Za-z0-9_])/y,
  { maxLength: 256, anchor: '(?:sk|rk)_(?:live|test)_|pk_live_|whsec_', quick: qStripe },
);

// Passwords in URLs: scheme://user:PASSWORD@host, only the password masked. Driven by "://".
const SCHEME = new Uint8Array(128);
for (const ch of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-') SCHEME[ch.charCodeAt(0)] = 1;
const isScheme = (c: number) => c < 128 && SCHEME[c] === 1;
const USERINFO = /[^\s\/?#@:]{0,128}:([^\s\/@]{1,256})@/y;
const urlPassword: Detector = {
  name: 'url_password',
  maxLength: 3 + 128 + 1 + 256 + 1 + 1,
  anchor: String.raw`://[^\s/?#@:]{0,128}:`,
  quick: qUrl,
  scan(text, from, limit, _eof, out) {
    let cur = from;
    let p = text.indexOf('://', from);
    while (p !== -1 && p < limit) {
      let s = p;
      while (s > 0 && p - s <= 31 && isScheme(text.charCodeAt(s - 1))) s--;
      if (p - s >= 2 && p - s <= 31 && !(s > 0 && isScheme(text.charCodeAt(s - 1))) && isAlpha(text.charCodeAt(s))) {
        USERINFO.lastIndex = p + 3;
        const m = USERINFO.exec(text);
        if (m !== null) {
          const at = p + 3 + m[0].length - 1;
          out.push(at - m[1].length, at);
          cur = at + 1;
          p = text.indexOf('://', cur);
          continue;
        }
      }
      cur = p + 1;
      p = text.indexOf('://', cur);
    }
    return cur > limit ? cur : limit;
  },
};

// Passwords in DSN settings: password=…, PWD={…}; (also FOO_PASSWORD=… in environments). Any
// value, no entropy test; quotes and braces are kept.
const dsnPassword = regexDetector(
  'url_password',
  /(?:passw(?:or)?d|pwd|passphrase)=(?:'((?:[^'\\\n]|\\.){1,256})'|"((?:[^"\\\n]|\\.){1,256})"|\{([^}\n]{1,256})\}|([^\s;&'"]{1,256}))/dgi,
  {
    maxLength: 12 + 2 * 256 + 4,
    anchor: `(?:${ci('passw')}(?:${ci('or')})?${ci('d')}|${ci('pwd')}|${ci('passphrase')})=`,
    quick: qDsn,
    check: firstGroup,
  },
);

// key/secret/token/password = <high-entropy value>: only the value is masked.
const ASSIGN_KEYWORDS = ['key', 'secret', 'token', 'passw', 'pwd', 'credential', 'auth'];
const assignment = regexDetector(
  'assignment',
  /(?:key|secret|token|passw(?:or)?d|pwd|credential|auth(?:orization|(?!or)))[A-Za-z0-9_.-]{0,32}["']?[ \t]{0,16}(?::=|=>|=|:)[ \t]{0,16}(?:["'](?:(?:bearer|basic|token)[ \t]{1,16})?|(?:bearer|basic|token)[ \t]{1,16})?([^\s"'`,;<>()[\]{}]{16,1024})/dgi,
  {
    maxLength: 13 + 32 + 1 + 16 + 2 + 16 + 1 + 6 + 16 + 1024,
    anchor: `(?:${ASSIGN_KEYWORDS.map(ci).join('|')})[A-Za-z0-9_.-]{0,40}["']?[ \\t]*[:=]`,
    quick: qAssign,
    check: (m) => (highEntropySecret(m[1]) ? firstGroup(m) : false),
  },
);

// --- email: driven by '@' (much faster than a RegExp tried at every word character) -------------------

const LOCAL = new Uint8Array(128);
const DOMAIN = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  if (/[A-Za-z0-9._%+-]/.test(ch)) LOCAL[c] = 1;
  if (/[A-Za-z0-9.-]/.test(ch)) DOMAIN[c] = 1;
}
const isLocal = (c: number) => c < 128 && LOCAL[c] === 1;
const isDomain = (c: number) => c < 128 && DOMAIN[c] === 1;
const isAlpha = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

/** End of the longest valid domain (2+ labels, alphabetic TLD of 2-24) starting at p, or -1. */
function domainEnd(text: string, p: number): number {
  const max = Math.min(text.length, p + 255);
  let q = p;
  while (q < max && isDomain(text.charCodeAt(q))) q++;
  let best = -1;
  let labels = 0;
  let ls = p;
  for (let i = p; i <= q; i++) {
    if (i < q && text.charCodeAt(i) !== 46) continue;
    const L = i - ls;
    if (L < 1 || L > 63 || text.charCodeAt(ls) === 45 || text.charCodeAt(i - 1) === 45) break;
    labels++;
    if (labels >= 2 && L >= 2 && L <= 24) {
      let alpha = true;
      for (let k = ls; k < i && alpha; k++) alpha = isAlpha(text.charCodeAt(k));
      if (alpha) best = i;
    }
    ls = i + 1;
  }
  return best;
}

/** Whether the local part at s is the user:password of a URL (`scheme://user:` right before it). */
function afterUrlUserinfo(text: string, s: number): boolean {
  if (text.charCodeAt(s - 1) !== 58) return false; // ':'
  let k = s - 2;
  while (k >= 0 && s - 2 - k < 128) {
    const c = text.charCodeAt(k);
    if (c === 47) return k > 0 && text.charCodeAt(k - 1) === 47; // "//"
    if (c === 64 || c === 58 || c <= 32) return false;
    k--;
  }
  return false;
}

const EMAIL_LOCAL_MAX = 64;
const email: Detector = {
  name: 'email',
  maxLength: EMAIL_LOCAL_MAX + 1 + 255 + 1,
  anchor: '@',
  quick: qEmail,
  scan(text, from, limit, eof, out) {
    const len = text.length;
    let cur = from; // hits start at or after cur (they never overlap)
    let at = text.indexOf('@', from);
    let u = len; // the first '@' not looked at
    while (at !== -1) {
      if (at >= limit && !eof) {
        u = at;
        break;
      }
      let s = at;
      while (s > 0 && at - s <= EMAIL_LOCAL_MAX && isLocal(text.charCodeAt(s - 1))) s--;
      if (s < at && at - s <= EMAIL_LOCAL_MAX && s >= cur && !afterUrlUserinfo(text, s)) {
        const e = domainEnd(text, at + 1);
        if (e > 0) {
          out.push(s, e);
          cur = e;
        }
      }
      at = text.indexOf('@', at + 1);
    }
    if (eof) return len;
    // a later hit's local part starts at most 64 before its '@', and after the last line break
    return Math.max(cur, u - EMAIL_LOCAL_MAX - 1, text.lastIndexOf('\n', u - 1) + 1, from);
  },
};

// --- PEM private keys ------------------------------------------------------------------------------

/** Blocks longer than this are always redacted; a stream holds at most this much of a block. */
export const PEM_CAP = 8192;
const PEM_BEGIN = /-----BEGIN (?:[A-Z0-9]{1,20} ){0,4}PRIVATE KEY(?: BLOCK)?-----/y;
// the END marker, or the first character that cannot be in a PEM body (base64, headers such as
// "Proc-Type: 4,ENCRYPTED", line breaks — also escaped "\n" inside JSON strings)
const PEM_TERM = /-----END[ A-Z0-9]{0,64}-----|[^A-Za-z0-9+/=\s:,.\\-]/g;
const PEM_TERM_MAX = 8 + 64 + 5;

function pemTerminator(text: string, from: number): number {
  PEM_TERM.lastIndex = from;
  const m = PEM_TERM.exec(text);
  if (m === null) return -1;
  return m[0].length > 1 ? m.index + m[0].length : m.index;
}

/** The length of the longest proper prefix of `word` that `text` ends with. */
function partialSuffix(text: string, word: string): number {
  for (let k = Math.min(word.length - 1, text.length); k > 0; k--) if (text.endsWith(word.slice(0, k))) return k;
  return 0;
}

const pem: Detector = {
  name: 'pem',
  maxLength: PEM_CAP,
  multiline: true,
  anchor: '-----BEGIN',
  quick: qPem,
  longAfter: PEM_CAP,
  scan(text, from, _limit, eof, out) {
    const len = text.length;
    let i = from;
    for (;;) {
      const b = text.indexOf('-----BEGIN', i);
      if (b < 0) return eof ? len : Math.max(i, len - partialSuffix(text, '-----BEGIN'));
      PEM_BEGIN.lastIndex = b;
      if (!PEM_BEGIN.test(text)) {
        if (!eof && len - b < 128 && text.indexOf('\n', b) < 0) return b; // the marker may still complete
        i = b + 1;
        continue;
      }
      const m = PEM_BEGIN.lastIndex;
      const t = pemTerminator(text, m);
      if (t >= 0) {
        out.push(b, t);
        i = t;
        continue;
      }
      if (eof) {
        out.push(b, len);
        return len;
      }
      if (len - b > PEM_CAP) out.push(b, ~m); // open: longer than the cap, end not seen yet
      return b;
    }
  },
  extend(text, from, eof) {
    const t = pemTerminator(text, from);
    if (t >= 0) return { end: t, done: true };
    if (eof) return { end: text.length, done: true };
    return { end: Math.max(from, text.length - PEM_TERM_MAX - 1), done: false };
  },
};

// --- registry ----------------------------------------------------------------------------------------

export const DETECTOR_NAMES = [
  'pem', 'gcp', 'jwt', 'aws', 'github', 'gitlab', 'slack', 'stripe', 'url_password', 'assignment',
  'email', 'phone', 'iban', 'card', 'ssn', 'ip',
] as const;
export type DetectorName = (typeof DETECTOR_NAMES)[number];

/** The built-in detectors in builtinQuickMask's bit order. */
export const BUILTIN_LIST: readonly Detector[] = [
  pem, gcp, jwt, awsKeyId, awsSecret, github, gitlab, slack, stripe, urlPassword, dsnPassword, assignment,
  email, phone, iban, card, ssn, ipv4, ipv6,
];

/**
 * The built-in detectors, in priority order (DETECTOR_NAMES): where hits overlap, the masked
 * span is their union and the highest-priority detector names it and picks the strategy.
 * Specific secrets come first, then the generic assignment rule, then personal data.
 */
export const BUILTIN_DETECTORS: Readonly<Record<DetectorName, readonly Detector[]>> = {
  pem: [pem],
  gcp: [gcp],
  jwt: [jwt],
  aws: [awsKeyId, awsSecret],
  github: [github],
  gitlab: [gitlab],
  slack: [slack],
  stripe: [stripe],
  url_password: [urlPassword, dsnPassword],
  assignment: [assignment],
  email: [email],
  phone: [phone],
  iban: [iban],
  card: [card],
  ssn: [ssn],
  ip: [ipv4, ipv6],
};

/**
 * A custom detector from the config: a RegExp applied line by line (it never sees a '\n'),
 * whose matches are expected to be at most `maxLength` characters long (streams rely on it).
 */
export function customDetector(name: string, pattern: string, flags = '', maxLength = 256): Detector {
  const re = new RegExp(pattern, flags.replace(/[gyd]/g, '') + 'g');
  const scanLine = (line: string, offset: number, from: number, limit: number, out: number[]): number => {
    let cur = from;
    re.lastIndex = from - offset;
    for (;;) {
      const m = re.exec(line);
      if (m === null || m.index + offset >= limit) break;
      const s = m.index + offset;
      const e = s + m[0].length;
      if (e > s) {
        out.push(s, e);
        cur = e;
      } else cur = s + 1;
      re.lastIndex = cur - offset;
    }
    return cur;
  };
  return {
    name,
    maxLength,
    scan(text, from, limit, _eof, out) {
      let cur = from;
      let ls = from === 0 ? 0 : text.lastIndexOf('\n', from - 1) + 1;
      while (ls < limit && ls <= text.length) {
        let le = text.indexOf('\n', ls);
        if (le < 0) le = text.length;
        const start = Math.max(cur, ls);
        if (start <= le) {
          const line = ls === 0 && le === text.length ? text : text.slice(ls, le);
          cur = Math.max(cur, scanLine(line, ls, start, limit, out));
        }
        if (le === text.length) break;
        ls = le + 1;
      }
      return cur > limit ? cur : limit;
    },
  };
}

/** The left context a stream keeps before its scan positions (look-behinds, the GCP look-back). */
export const DETECTOR_CONTEXT = GCP_LOOKBACK + 256;
