// Streaming, key-aware JSON masking for bodies that arrive in chunks (HTTP responses, JSON-lines,
// Kubernetes watch streams: one JSON value after another). Bytes in, bytes out; no wire format.
//
//   const j = new JsonStreamMasker(masker);
//   out = j.push(chunk) … out = j.end();     // Buffers; j.counts
//
// What is masked:
//   - a value under a key whose name has a column rule (the `name:` globs and defaultColumns —
//     decided by `forColumns([{ schema: '', table: '', name: key }])`, so a bare `match:` glob
//     such as `email` (= `*.*.email`) applies too): a string becomes the rule's masked string,
//     a number or boolean becomes the masked value as a JSON string, or `null` for the null
//     strategy; `null` stays `null`. Under an object or array value every scalar inside is
//     masked by that rule, unless a key deeper down has a rule of its own. A `scan` rule means no
//     rule: the value is scanned (and inside a masked subtree, the outer rule still applies);
//   - every other string value, and every number (card numbers are sometimes numbers), goes
//     through the detectors as `maskText` does; a value of 16+ characters is scanned with its
//     key in front (`auth": "…`), so the `assignment` and AWS-secret detectors see the key as
//     they would in the raw text. Only the value is ever masked;
//   - key names go through the detectors too (an email used as a key).
// A value that was not masked is emitted as its original bytes (escapes kept); a masked one is
// re-encoded with JSON.stringify, so the output is valid JSON whenever the input is. Counts as
// in counts.ts: detector names, `column:<key>` (the key as masked), `error`.
//
// Streaming: bytes are emitted as soon as the token they belong to is complete (a number at
// the end of a chunk waits for the next byte: it may go on); only the current token is held.
// Whitespace and structural bytes pass through as slices of the input, so a returned Buffer may
// share memory with the chunk pushed. UTF-8 characters and escapes split across chunks are
// fine: a token is decoded only once complete. Invalid UTF-8 inside a string passes as it came
// when the string is not masked, and becomes U+FFFD when it is.
//
// Limits (memory stays bounded whatever the input):
//   - a string (or number) longer than `tokenCap` (64 KiB) of raw bytes is not held whole: it
//     is decoded in pieces of at most `tokenCap` bytes, cut where neither an escape nor a UTF-8
//     character is split, and run through a StreamMasker; its output is re-encoded (escapes
//     normalised). What is held stays under `tokenCap` plus the StreamMasker's hold-back
//     (≤ 32 KiB). Such a long value is scanned without its key in front, and a long key has no
//     rule (its value is scanned). Under a column rule a long value is swallowed as it arrives
//     and replaced by `[MASKED:<label>]` (or `null` for the null strategy) whatever the strategy:
//     hash and partial would need all of it. A number longer than the cap becomes a JSON string;
//   - nesting deeper than `maxDepth` (512) is treated as not JSON.
// The output does not depend on how the input is split into chunks (pieces are cut where the
// content says, not where a chunk ended); the property tests check this.
//
// Not JSON after all (HTML error page, truncated body, a syntax error, a UTF-8 BOM, too deep):
// from the token where the error is found, the rest of the stream goes through a StreamMasker
// as text — detectors only, never unmasked, never a throw. A token under a column rule that
// the error cuts off is replaced by the rule's label first. After an error the output is no
// longer JSON (the input was not). `fellBack` tells.
//
// Cost: about what maskText costs on the same values (a ~10 MB array of small objects runs at
// ~30-50 MB/s on the development VM, with or without many emails); clean key names and their
// rules are cached.
import { StringDecoder } from 'node:string_decoder';
import { addCount, newCounts, type Counts } from './counts.ts';
import { ERROR_TEXT, type ColumnPlanEntry, type Hit, type Masker } from './masker.ts';
import type { StreamMasker } from './stream.ts';

/**
 * The rule for a number or boolean. The built-in `*token*` rule is meant for credentials, but
 * `"total_tokens": 12` or `"max_tokens": 256` in an API response is a count (LLM APIs are full of
 * them), and masking it breaks clients: a number under a built-in rule whose key ends in
 * "tokens" is scanned by the detectors instead. A numeric `"token"` or `"password"` is masked.
 */
function scalarRule(rule: Rule | null): Rule | null {
  return rule !== null && rule.builtin && /tokens$/i.test(rule.label) ? null : rule;
}

/** Raw bytes of one string or number held at most before it is processed in pieces. */
export const JSON_TOKEN_CAP = 64 * 1024;
/** Deeper nesting is treated as not JSON (a hostile `[[[[…` must not grow a stack without bound). */
export const JSON_MAX_DEPTH = 512;

export interface JsonStreamOptions {
  /** see JSON_TOKEN_CAP (at least 64) */
  tokenCap?: number;
  /** see JSON_MAX_DEPTH */
  maxDepth?: number;
}

type Rule = Extract<ColumnPlanEntry, { kind: 'rule' }>;

// where the parser is between tokens
const VALUE = 0; // a value (top level: also the next value of a JSON-lines stream)
const ARRAY_FIRST = 1; // a value or ']'
const OBJ_FIRST = 2; // a key or '}'
const KEY = 3; // a key (after ',')
const COLON = 4;
const AFTER = 5; // ',' or the container's end
// inside a token
const STRING = 6;
const NUMBER = 7;
const LITERAL = 8;
// not JSON: the rest is text
const FALLBACK = 9;

// token kinds
const TK_KEY = 0;
const TK_STR = 1;
const TK_NUM = 2;
const TK_LIT = 3;

// how a string or number token is being processed
const HELD = 0; // bytes held until the token ends
const PIECES = 1; // longer than the cap, no rule: decoded and scanned in pieces
const SWALLOW = 2; // longer than the cap under a column rule: dropped, the label follows

const OBJ = 0;
const ARR = 1;

const EMPTY = Buffer.alloc(0);
const QUOTE = Buffer.from('"');
const NULL_JSON = 'null';
const LIT_TRUE = Buffer.from('true');
const LIT_FALSE = Buffer.from('false');
const LIT_NULL = Buffer.from('null');
/** values shorter than this cannot be an assignment (≥ 16) or AWS secret (40): no key in front */
const CONTEXT_MIN = 16;
/** characters of the key put in front of a value */
const CONTEXT_KEY = 48;
/** keys longer than this are not cached */
const CACHE_KEY = 256;
const CACHE_SIZE = 2048;

// number grammar: state × byte class → state; -1 invalid. Accepting: 2, 3, 5, 8.
//   0 start, 1 after '-', 2 after a leading 0, 3 integer digits, 4 after '.', 5 fraction digits,
//   6 after e/E, 7 after the exponent's sign, 8 exponent digits
// byte classes: 0 '0', 1 '1'-'9', 2 '-', 3 '+', 4 '.', 5 'e'/'E'
const NUM_NEXT = [
  [2, 3, 1, -1, -1, -1],
  [2, 3, -1, -1, -1, -1],
  [-1, -1, -1, -1, 4, 6],
  [3, 3, -1, -1, 4, 6],
  [5, 5, -1, -1, -1, -1],
  [5, 5, -1, -1, -1, 6],
  [8, 8, 7, 7, -1, -1],
  [8, 8, -1, -1, -1, -1],
  [8, 8, -1, -1, -1, -1],
];
const NUM_ACCEPT = [false, false, true, true, false, true, false, false, true];
/** byte → class in NUM_NEXT, -1 when the byte cannot be in a number (ends it) */
const NUM_CLASS = new Int8Array(256).fill(-1);
NUM_CLASS[0x30] = 0;
for (let b = 0x31; b <= 0x39; b++) NUM_CLASS[b] = 1;
NUM_CLASS[0x2d] = 2;
NUM_CLASS[0x2b] = 3;
NUM_CLASS[0x2e] = 4;
NUM_CLASS[0x65] = 5;
NUM_CLASS[0x45] = 5;

const HEX = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;
/** the characters allowed after a backslash, but `u` */
const SIMPLE_ESCAPE = new Uint8Array(256);
for (const c of '"\\/bfnrt') SIMPLE_ESCAPE[c.charCodeAt(0)] = 1;

export class JsonStreamMasker {
  /** masked values emitted so far: detector names, `column:<key>`, `error` (as in counts.ts) */
  readonly counts: Counts = newCounts();
  private readonly cap: number;
  private readonly maxDepth: number;

  // --- structure
  private st = VALUE;
  private depth = 0;
  private readonly kinds: Uint8Array;
  /** per depth: the rule every scalar in the container gets unless a key has its own (null: scan) */
  private readonly rules: (Rule | null)[] = [null];
  /** per depth: the key the container is the value of (detector context for values in arrays) */
  private readonly ctx: (string | null)[] = [null];
  /** the rule of the last key of the current object */
  private keyRule: Rule | null = null;
  /** the last key of the current object */
  private key: string | null = null;

  // --- the current token
  private tk = TK_STR;
  /** index of the token's first byte in the current chunk; -1 when it began in an earlier chunk */
  private tokStart = -1;
  /** index of the token's first content byte in the current chunk (after a string's quote) */
  private tokBody = 0;
  /** content bytes from earlier chunks not yet processed (a string's opening quote excluded) */
  private parts: Buffer[] = [];
  private partsLen = 0;
  /** content bytes of the token so far */
  private total = 0;
  private mode = HELD;
  /** string escape state: 0 none, 1 after '\', 2-5 hex digits of \uXXXX to come */
  private esc = 0;
  private hasEsc = false;
  private numSt = 0;
  private lit: Buffer = LIT_TRUE;
  private litIdx = 0;
  /** the column rule of the value being read (null: scan; always null for keys) */
  private tokRule: Rule | null = null;
  /** detector pass of a token longer than the cap */
  private sub: StreamMasker | null = null;
  private subSeen: Counts = newCounts();

  // --- output
  private out: Buffer[] = [];
  /** start of the pass-through run in the current chunk: bytes before it were emitted or replaced */
  private run = 0;
  /** the chunk being scanned */
  private chunk: Buffer = EMPTY;
  /** a high surrogate held back from re-encoded output until its pair arrives */
  private carry = '';

  // --- not JSON
  private fb: StreamMasker | null = null;
  private decoder: StringDecoder | null = null;
  private ended = false;
  /** keys the detectors found nothing in → their rule (keys recur: every row of an array) */
  private readonly cleanKeys = new Map<string, Rule | null>();

  constructor(
    private readonly m: Masker,
    opts: JsonStreamOptions = {},
  ) {
    this.cap = Math.max(64, opts.tokenCap ?? JSON_TOKEN_CAP);
    this.maxDepth = Math.max(1, opts.maxDepth ?? JSON_MAX_DEPTH);
    this.kinds = new Uint8Array(this.maxDepth + 1);
  }

  /** Masks a chunk; returns the bytes that can be sent now (may share memory with `chunk`). */
  push(chunk: Buffer): Buffer {
    if (this.ended) throw new Error('JsonStreamMasker: push after end');
    if (chunk.length === 0) return EMPTY;
    try {
      this.scan(chunk);
    } catch (err) {
      this.guard(chunk, err);
    }
    return this.take();
  }

  /** Ends the stream: returns the rest (a truncated document's last token, masked as text). */
  end(): Buffer {
    if (this.ended) return EMPTY;
    this.ended = true;
    this.chunk = EMPTY;
    this.run = 0;
    try {
      const st = this.st;
      if (st === NUMBER && NUM_ACCEPT[this.numSt]) this.endNumber(EMPTY, 0);
      else if (st === STRING || st === NUMBER || st === LITERAL) this.fail(EMPTY, 0);
      if (this.st === FALLBACK) this.endFallback();
    } catch (err) {
      this.guard(EMPTY, err);
      this.endFallback();
    }
    this.parts = [];
    this.partsLen = 0;
    return this.take();
  }

  /**
   * What is held back now: the current token's bytes (at most the cap) plus what a detector
   * pass holds (characters, ≤ 32 KiB).
   */
  get held(): number {
    return this.partsLen + (this.sub?.held ?? 0) + (this.fb?.held ?? 0);
  }

  /** True once the input turned out not to be JSON: the rest is masked as text. */
  get fellBack(): boolean {
    return this.st === FALLBACK;
  }

  // --- scanning ------------------------------------------------------------------------------------

  private scan(c: Buffer): void {
    const n = c.length;
    this.chunk = c;
    this.run = 0;
    let i = 0;
    while (i < n) {
      switch (this.st) {
        case STRING:
          i = this.inString(c, i);
          break;
        case NUMBER:
          i = this.inNumber(c, i);
          break;
        case LITERAL:
          i = this.inLiteral(c, i);
          break;
        case FALLBACK:
          this.fbPush(i === 0 ? c : c.subarray(i));
          i = n;
          this.run = n;
          break;
        default:
          i = this.between(c, i);
      }
    }
    this.park(c);
  }

  /** Whitespace and structural bytes, up to the next token (or the chunk's end). */
  private between(c: Buffer, i: number): number {
    const n = c.length;
    let st = this.st;
    while (i < n) {
      const b = c[i];
      if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) {
        i++;
        continue;
      }
      switch (st) {
        case VALUE:
        case ARRAY_FIRST:
          if (b === 0x22) {
            this.beginToken(TK_STR, i, i + 1, this.effRule());
            return i + 1;
          }
          if (b === 0x7b || b === 0x5b) {
            if (this.depth >= this.maxDepth) {
              this.st = st;
              return this.fail(c, i);
            }
            this.open(b === 0x7b ? OBJ : ARR);
            st = b === 0x7b ? OBJ_FIRST : ARRAY_FIRST;
            i++;
            continue;
          }
          if (NUM_CLASS[b] === 1 || NUM_CLASS[b] === 0 || b === 0x2d) {
            this.beginToken(TK_NUM, i, i, this.effRule());
            this.numSt = 0;
            return i;
          }
          if (b === 0x74 || b === 0x66 || b === 0x6e) {
            this.beginToken(TK_LIT, i, i, this.effRule());
            this.lit = b === 0x74 ? LIT_TRUE : b === 0x66 ? LIT_FALSE : LIT_NULL;
            this.litIdx = 0;
            return i;
          }
          if (b === 0x5d && st === ARRAY_FIRST) {
            st = this.close();
            i++;
            continue;
          }
          break;
        case OBJ_FIRST:
        case KEY:
          if (b === 0x22) {
            this.beginToken(TK_KEY, i, i + 1, null);
            return i + 1;
          }
          if (b === 0x7d && st === OBJ_FIRST) {
            st = this.close();
            i++;
            continue;
          }
          break;
        case COLON:
          if (b === 0x3a) {
            st = VALUE;
            i++;
            continue;
          }
          break;
        case AFTER: {
          const obj = this.kinds[this.depth] === OBJ;
          if (b === 0x2c) {
            st = obj ? KEY : VALUE;
            i++;
            continue;
          }
          if (b === (obj ? 0x7d : 0x5d)) {
            st = this.close();
            i++;
            continue;
          }
          break;
        }
      }
      this.st = st;
      return this.fail(c, i);
    }
    this.st = st;
    return i;
  }

  private beginToken(tk: number, start: number, body: number, rule: Rule | null): void {
    this.tk = tk;
    this.st = tk === TK_NUM ? NUMBER : tk === TK_LIT ? LITERAL : STRING;
    this.tokStart = start;
    this.tokBody = body;
    this.tokRule = rule;
    this.mode = HELD;
    this.total = 0;
    this.esc = 0;
    this.hasEsc = false;
  }

  private inString(c: Buffer, i: number): number {
    const n = c.length;
    let esc = this.esc;
    while (i < n) {
      const b = c[i];
      if (esc === 0) {
        if (b >= 0x20 && b !== 0x22 && b !== 0x5c) {
          i++;
          continue;
        }
        if (b === 0x22) {
          this.esc = 0;
          return this.endString(c, i);
        }
        if (b !== 0x5c) {
          this.esc = esc;
          return this.fail(c, i); // a raw control character
        }
        esc = 1;
        this.hasEsc = true;
      } else if (esc === 1) {
        if (b === 0x75) esc = 2;
        else if (SIMPLE_ESCAPE[b] === 1) esc = 0;
        else {
          this.esc = esc;
          return this.fail(c, i);
        }
      } else {
        if (HEX[b] !== 1) {
          this.esc = esc;
          return this.fail(c, i);
        }
        esc = esc === 5 ? 0 : esc + 1;
      }
      i++;
    }
    this.esc = esc;
    return n;
  }

  private inNumber(c: Buffer, i: number): number {
    const n = c.length;
    let ns = this.numSt;
    while (i < n) {
      const k = NUM_CLASS[c[i]];
      if (k < 0) {
        this.numSt = ns;
        return NUM_ACCEPT[ns] ? this.endNumber(c, i) : this.fail(c, i);
      }
      ns = NUM_NEXT[ns][k];
      if (ns < 0) {
        this.numSt = 0;
        return this.fail(c, i);
      }
      i++;
    }
    this.numSt = ns;
    return n;
  }

  private inLiteral(c: Buffer, i: number): number {
    const n = c.length;
    const lit = this.lit;
    while (i < n && this.litIdx < lit.length) {
      if (c[i] !== lit[this.litIdx]) return this.fail(c, i);
      this.litIdx++;
      i++;
    }
    if (this.litIdx === lit.length) this.endLiteral(i);
    return i;
  }

  // --- structure -----------------------------------------------------------------------------------

  /** The rule of the value about to start: its key's, else its container's. */
  private effRule(): Rule | null {
    const d = this.depth;
    if (d === 0) return null;
    return this.kinds[d] === OBJ ? (this.keyRule ?? this.rules[d]) : this.rules[d];
  }

  /** The key a value about to be scanned belongs to, for the detectors' context. */
  private valueKey(): string | null {
    const d = this.depth;
    if (d === 0) return null;
    return this.kinds[d] === OBJ ? this.key : this.ctx[d];
  }

  private open(kind: number): void {
    const rule = this.effRule();
    const key = this.valueKey();
    const d = ++this.depth;
    this.kinds[d] = kind;
    this.rules[d] = rule;
    this.ctx[d] = key;
    this.keyRule = null;
    this.key = null;
  }

  /** Closes a container; returns the state after it (it is a value of its parent). */
  private close(): number {
    this.rules[this.depth] = null;
    this.ctx[this.depth] = null;
    this.depth--;
    return this.afterValue();
  }

  private afterValue(): number {
    this.keyRule = null;
    return this.depth === 0 ? VALUE : AFTER;
  }

  // --- tokens ----------------------------------------------------------------------------------------

  /** A string token ends at the closing quote c[q]; returns the index after it. */
  private endString(c: Buffer, q: number): number {
    const isKey = this.tk === TK_KEY;
    const rule = this.tokRule;
    this.total += q - this.tokBody;
    if (this.mode === SWALLOW) this.replaced(this.overflow(rule!), q + 1);
    else if (this.mode === PIECES) {
      this.hold(c.subarray(this.tokBody, q));
      this.finishPieces(q + 1);
    } else {
      if (this.partsLen + q - this.tokBody > this.cap) {
        if (rule !== null) this.replaced(this.overflow(rule), q + 1);
        else {
          this.startPieces(this.content(c, q));
          this.finishPieces(q + 1);
        }
      } else {
        // the common case, a token within one chunk, is decoded without a Buffer view
        const s = this.partsLen === 0 ? decode(c.toString('utf8', this.tokBody, q), this.hasEsc) : decode(this.content(c, q).toString('utf8'), this.hasEsc);
        if (isKey) this.endKey(s, q);
        else if (rule !== null) {
          const v = this.m.maskValue(s, rule, this.counts);
          this.replaced(v === null ? NULL_JSON : JSON.stringify(v), q + 1);
        } else {
          const v = this.scanValue(s, this.valueKey());
          if (v === s) this.original();
          else this.replaced(JSON.stringify(v), q + 1);
        }
      }
    }
    if (isKey) {
      if (this.mode !== HELD) {
        this.keyRule = null;
        this.key = null;
      }
      this.st = COLON;
    } else this.st = this.afterValue();
    this.resetToken();
    return q + 1;
  }

  /** A key of at most the cap: scanned, its rule looked up (both cached for keys without a hit). */
  private endKey(s: string, q: number): void {
    let kr = this.cleanKeys.get(s);
    if (kr === undefined) {
      const masked = this.m.maskText(s, this.counts);
      kr = this.ruleFor(s);
      if (masked !== s) {
        this.replaced(JSON.stringify(masked), q + 1);
        // the key's name must not reach the counts or the label unmasked
        if (kr !== null) kr = { ...kr, label: kr.label === s ? masked : kr.label, key: `column:${masked}` };
      } else {
        this.original();
        if (s.length <= CACHE_KEY) {
          if (this.cleanKeys.size >= CACHE_SIZE) this.cleanKeys.clear();
          this.cleanKeys.set(s, kr);
        }
      }
    } else this.original();
    this.keyRule = kr;
    this.key = s;
  }

  /** A number token ends before c[e] (a byte that cannot be in a number); returns e. */
  private endNumber(c: Buffer, e: number): number {
    const rule = scalarRule(this.tokRule);
    this.total += e - this.tokBody;
    if (this.mode === SWALLOW) this.replaced(this.overflow(this.tokRule!), e);
    else if (this.mode === PIECES) {
      this.hold(c.subarray(this.tokBody, e));
      this.finishPieces(e);
    } else {
      if (this.partsLen + e - this.tokBody > this.cap) {
        if (rule !== null) this.replaced(this.overflow(rule), e);
        else {
          this.startPieces(this.content(c, e));
          this.finishPieces(e);
        }
      } else {
        const s = this.partsLen === 0 ? c.toString('latin1', this.tokBody, e) : this.content(c, e).toString('latin1');
        if (rule !== null) {
          const v = this.m.maskValue(s, rule, this.counts);
          this.replaced(v === null ? NULL_JSON : JSON.stringify(v), e);
        } else {
          const v = this.m.maskText(s, this.counts);
          if (v === s) this.original();
          else this.replaced(JSON.stringify(v), e);
        }
      }
    }
    this.st = this.afterValue();
    this.resetToken();
    return e;
  }

  /** A literal ends before c[e]. `null` stays `null` even under a rule: it tells nothing. */
  private endLiteral(e: number): void {
    const rule = this.tokRule;
    if (rule !== null && this.lit !== LIT_NULL) {
      const v = this.m.maskValue(this.lit === LIT_TRUE ? 'true' : 'false', rule, this.counts);
      this.replaced(v === null ? NULL_JSON : JSON.stringify(v), e);
    } else this.original();
    this.st = this.afterValue();
    this.resetToken();
  }

  private resetToken(): void {
    this.parts = [];
    this.partsLen = 0;
    this.total = 0;
    this.mode = HELD;
    this.tokRule = null;
    this.tokStart = -1;
    this.tokBody = 0;
  }

  /** The token's whole content: held bytes plus c[tokBody, e). */
  private content(c: Buffer, e: number): Buffer {
    const part = c.subarray(this.tokBody, e);
    if (this.partsLen === 0) return part;
    return Buffer.concat([...this.parts, part], this.partsLen + part.length);
  }

  private hold(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.partsLen += b.length;
  }

  /** The rule's replacement of a value too long to hold (hash and partial need all of it). */
  private overflow(rule: Rule): string {
    addCount(this.counts, rule.key);
    return rule.strategy === 'null' ? NULL_JSON : JSON.stringify(`[MASKED:${rule.label}]`);
  }

  private ruleFor(key: string): Rule | null {
    const [entry] = this.m.forColumns([{ schema: '', table: '', name: key }]);
    return entry.kind === 'rule' ? entry : null;
  }

  /** maskText of a value, with its key in front as the detectors would see it in the raw text. */
  private scanValue(v: string, key: string | null): string {
    if (key === null || v.length < CONTEXT_MIN || key.length === 0) return this.m.maskText(v, this.counts);
    const prefix = (key.length > CONTEXT_KEY ? key.slice(-CONTEXT_KEY) : key) + '": "';
    const text = prefix + v;
    const p = prefix.length;
    try {
      const hits = this.m.findAll(text);
      if (hits === null) return v;
      const mine: Hit[] = [];
      // hits inside the key are the key's (scanned on its own); one reaching into the value is cut at its start
      for (const h of hits) if (h.e > p) mine.push(h.s >= p ? h : { s: p, e: h.e, slot: h.slot });
      if (mine.length === 0) return v;
      return this.m.apply(text, p, text.length, mine, this.counts);
    } catch (err) {
      return this.m.failed(v, err, this.counts);
    }
  }

  // --- long tokens -----------------------------------------------------------------------------------

  /** Starts the detector pass of a token longer than the cap; `content` is all of it so far. */
  private startPieces(content: Buffer): void {
    this.flushRun(this.tokStart >= 0 ? this.tokStart : 0);
    this.out.push(QUOTE);
    this.mode = PIECES;
    this.sub = this.m.stream();
    this.subSeen = newCounts();
    this.parts = [content];
    this.partsLen = content.length;
    this.feedPieces();
  }

  /** Decodes and scans held content in pieces of at most the cap, while more than the cap is held. */
  private feedPieces(): void {
    if (this.partsLen <= this.cap) return;
    let buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen);
    while (buf.length > this.cap) {
      const cut = this.tk === TK_NUM ? this.cap : safeCut(buf, this.cap);
      this.subPush(this.decodePiece(buf.subarray(0, cut)));
      buf = buf.subarray(cut);
    }
    const rest = Buffer.from(buf); // not a view: the buffer it came from may be large
    this.parts = [rest];
    this.partsLen = rest.length;
  }

  /** The long token ended before c[e]: scans the rest, closes the string. */
  private finishPieces(e: number): void {
    this.feedPieces();
    if (this.partsLen > 0) this.subPush(this.decodePiece(this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen)));
    const sub = this.sub!;
    this.emitEscaped(sub.end());
    this.absorb(sub, this.subSeen);
    if (this.carry !== '') {
      this.out.push(Buffer.from(JSON.stringify(this.carry).slice(1, -1)));
      this.carry = '';
    }
    this.out.push(QUOTE);
    this.sub = null;
    this.run = e;
  }

  private decodePiece(b: Buffer): string {
    if (this.tk === TK_NUM) return b.toString('latin1');
    return decode(b.toString('utf8'), b.indexOf(0x5c) >= 0);
  }

  private subPush(text: string): void {
    const sub = this.sub!;
    this.emitEscaped(sub.push(text));
    this.absorb(sub, this.subSeen);
  }

  // --- output ----------------------------------------------------------------------------------------

  private flushRun(to: number): void {
    if (to > this.run) {
      this.out.push(this.chunk.subarray(this.run, to));
      this.run = to;
    }
  }

  /** The current token (ending before c[e]) is replaced by `text`. */
  private replaced(text: string, e: number): void {
    this.flushRun(this.tokStart >= 0 ? this.tokStart : 0);
    this.out.push(Buffer.from(text, 'utf8'));
    this.run = e;
  }

  /** The current token passes unchanged: its bytes in this chunk are part of the run; emit the held ones. */
  private original(): void {
    if (this.tokStart >= 0) return;
    // the token began in an earlier chunk: nothing of this chunk was emitted yet (run is 0)
    if (this.tk === TK_KEY || this.tk === TK_STR) this.out.push(QUOTE);
    for (const b of this.parts) this.out.push(b);
  }

  /** End of a chunk: emit the run; a token still open keeps its bytes, and long ones go on in pieces. */
  private park(c: Buffer): void {
    const st = this.st;
    if (st === STRING || st === NUMBER || st === LITERAL) {
      this.flushRun(this.tokStart >= 0 ? this.tokStart : 0);
      const n = c.length;
      if (n > this.tokBody) {
        this.total += n - this.tokBody;
        // a copy: the caller may reuse its chunk
        if (this.mode !== SWALLOW) this.hold(Buffer.from(c.subarray(this.tokBody, n)));
      }
      this.tokStart = -1;
      this.tokBody = 0;
      this.run = n;
      if (this.total > this.cap && this.tk !== TK_LIT) {
        if (this.mode === HELD) {
          if (this.tokRule !== null) {
            this.mode = SWALLOW;
            this.parts = [];
            this.partsLen = 0;
          } else {
            const content = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.partsLen);
            this.startPieces(content);
          }
        } else if (this.mode === PIECES) this.feedPieces();
      }
    } else if (st !== FALLBACK) this.flushRun(c.length);
    this.chunk = EMPTY;
  }

  private emitEscaped(s: string): void {
    s = this.takeCarry(s);
    if (s !== '') this.out.push(Buffer.from(JSON.stringify(s).slice(1, -1), 'utf8'));
  }

  private emitRaw(s: string): void {
    s = this.takeCarry(s);
    if (s !== '') this.out.push(Buffer.from(s, 'utf8'));
  }

  /** Keeps a trailing high surrogate back (encoded alone it would be corrupted); prepends the last one. */
  private takeCarry(s: string): string {
    if (this.carry !== '') {
      s = this.carry + s;
      this.carry = '';
    }
    const last = s.length > 0 ? s.charCodeAt(s.length - 1) : 0;
    if (last >= 0xd800 && last <= 0xdbff) {
      this.carry = s[s.length - 1];
      s = s.slice(0, -1);
    }
    return s;
  }

  private take(): Buffer {
    const out = this.out;
    if (out.length === 0) return EMPTY;
    this.out = [];
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }

  /** Adds what a detector pass counted since last time. */
  private absorb(s: StreamMasker, seen: Counts): void {
    for (const k in s.counts) {
      const d = s.counts[k] - (seen[k] ?? 0);
      if (d > 0) {
        addCount(this.counts, k, d);
        seen[k] = s.counts[k];
      }
    }
  }

  // --- not JSON --------------------------------------------------------------------------------------

  /**
   * Not JSON from c[i] on (or the stream ended inside a token). The token in progress goes to the
   * text pass with the rest — or, under a column rule, is replaced by the rule's label. Returns
   * where in `c` the text pass starts.
   */
  private fail(c: Buffer, i: number): number {
    const inToken = this.st === STRING || this.st === NUMBER || this.st === LITERAL;
    let from = i;
    let pre: Buffer[] = [];
    if (!inToken) this.flushRun(i);
    else if (this.mode === PIECES) {
      // the long token's detector pass goes on, over the raw text
      pre = this.parts;
      from = this.tokBody;
    } else {
      this.flushRun(this.tokStart >= 0 ? this.tokStart : 0);
      const rule = this.tokRule;
      if (rule !== null) {
        addCount(this.counts, rule.key);
        this.out.push(Buffer.from(`[MASKED:${rule.label}]`, 'utf8'));
      } else if (this.tokStart >= 0) from = this.tokStart;
      else {
        pre = this.tk === TK_KEY || this.tk === TK_STR ? [QUOTE, ...this.parts] : this.parts;
        from = 0;
      }
    }
    if (this.mode === PIECES && inToken) {
      this.fb = this.sub;
    } else {
      this.fb = this.m.stream();
      this.subSeen = newCounts();
    }
    this.sub = null;
    this.decoder = new StringDecoder('utf8');
    this.st = FALLBACK;
    this.resetToken();
    for (const b of pre) this.fbPush(b);
    this.run = from;
    return from;
  }

  private fbPush(b: Buffer): void {
    const fb = this.fb!;
    const t = this.decoder!.write(b);
    if (t !== '') this.emitRaw(fb.push(t));
    this.absorb(fb, this.subSeen);
  }

  private endFallback(): void {
    const fb = this.fb!;
    const t = this.decoder!.end();
    if (t !== '') this.emitRaw(fb.push(t));
    this.emitRaw(fb.end());
    this.absorb(fb, this.subSeen);
    if (this.carry !== '') {
      this.out.push(Buffer.from(this.carry, 'utf8'));
      this.carry = '';
    }
  }

  /** A bug in here must not leak what was not emitted yet: it is withheld (closed) or masked as text (open). */
  private guard(c: Buffer, err: unknown): void {
    const unsent = this.st === FALLBACK ? [] : [...this.parts, c.subarray(Math.min(this.run, c.length))];
    this.m.failed('', err, this.counts);
    this.sub = null;
    this.resetToken();
    this.st = FALLBACK;
    this.fb = this.m.stream();
    this.subSeen = newCounts();
    this.decoder = new StringDecoder('utf8');
    this.carry = '';
    if (this.m.onError === 'open') for (const b of unsent) this.fbPush(b);
    else this.out.push(Buffer.from(ERROR_TEXT));
  }
}

/** A string's raw content (no quotes) as text. */
function decode(raw: string, escapes: boolean): string {
  return escapes ? (JSON.parse('"' + raw + '"') as string) : raw;
}

/**
 * The largest cut ≤ cap in a string's raw content where no escape and no UTF-8 character is
 * split (a \uXXXX surrogate pair may be: the pieces are decoded to UTF-16 and rejoined).
 */
function safeCut(b: Buffer, cap: number): number {
  const head = b.subarray(0, cap);
  let cut = cap;
  for (let i = 0; ; ) {
    const k = head.indexOf(0x5c, i);
    if (k < 0) break;
    const len = b[k + 1] === 0x75 ? 6 : 2;
    if (k + len > cap) {
      cut = k;
      break;
    }
    i = k + len;
  }
  while (cut > 0 && (b[cut] & 0xc0) === 0x80) cut--;
  return cut;
}
