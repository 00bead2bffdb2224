// The masker: a connection's mask config compiled once, applied to every value and every text.
//
//   const m = new Masker(parseMaskConfig(conn.mask), gatewaySecret);
//   const plan = m.forColumns(fields);              // once per RowDescription
//   const counts = newCounts();                      // once per result
//   cell = m.maskValue(cell, plan[i], counts);       // every DataRow value (string, or null for SQL NULL)
//   text = m.maskText(message, counts);              // error DETAIL, NOTICE, NOTIFY payloads, …
//   const s = m.stream(); out = s.push(chunk) … s.end();   // shell output, HTTP bodies
//
// Hits from all detectors are merged: overlapping hits become one masked span (their union),
// named by the highest-priority detector among them, whose strategy produces the replacement.
// Column rules beat detectors: a column with a rule is replaced whole and never scanned.
//
// Output formats:
//   redact   `[MASKED:<label>]` (label: the detector's name, or the column rule's label,
//            by default the column's name)
//   partial  `****` + the last N characters (N = keep, default 4, at most a third of the value;
//            spaces and dashes are neither kept nor counted: `4111 1111 1111 1111` → `****1111`);
//            always four stars, so the value's length is not revealed
//   hash     `h:` + the first 16 hex digits of HMAC-SHA256(secret, value): equal values give equal
//            tokens across sessions, identities and columns, so joins and GROUP BY still work
//   null     SQL NULL (maskValue returns null) for a column rule; inside text, as redact
//   error    `[MASKED:error]` replaces the whole value or text when masking throws and onError is
//            closed (the default); with open the value passes unmasked. Both count `error`.
//
// Cheap when nothing matches: a short value's characters are counted once (digits, '@', ':',
// '=', …), and only the detectors that could match it (an email needs '@', a card 13 digits, …)
// go on, first to a cheap anchor RegExp, then to the scan. An unchanged value is returned as the
// very same string, and nothing is allocated.
import { createHmac } from 'node:crypto';
import { globMatch } from '../util/glob.ts';
import { addCount, type Counts } from './counts.ts';
import { DEFAULT_COLUMN_RULES, DEFAULT_KEEP, detectorSettings, type ColumnRule, type MaskConfig, type Strategy } from './config.ts';
import { BUILTIN_DETECTORS, BUILTIN_LIST, builtinQuickMask, customDetector, DETECTOR_NAMES, Features, type Detector } from './detectors.ts';
import { StreamMasker } from './stream.ts';

export const ERROR_TEXT = '[MASKED:error]';
/** Values up to this length are measured first (Features): detectors that cannot match are skipped. */
const SHORT = 512;
const HASH_CACHE_SIZE = 4096;
const HASH_CACHE_VALUE = 128;

/** A detector as configured: what it finds, how it is replaced. Index in `Masker.slots` = priority. */
export interface Slot {
  readonly det: Detector;
  readonly label: string;
  readonly strategy: Strategy;
  readonly keep: number;
  /** `[MASKED:<label>]` */
  readonly redacted: string;
  readonly anchor: RegExp | null;
  /** the detector's bit in builtinQuickMask, 0 for others */
  readonly bit: number;
}

export interface ColumnRef {
  schema?: string | null;
  table?: string | null;
  name: string;
}

export type ColumnPlanEntry =
  | { readonly kind: 'scan' }
  | {
      readonly kind: 'rule';
      readonly strategy: Strategy;
      readonly keep: number;
      /** `[MASKED:<label>]` for redact */
      readonly label: string;
      /** the counts key: `column:<name>` */
      readonly key: string;
      /** one of the built-in name rules (*password*, *token*, …), not the connection's own */
      readonly builtin?: true;
    };
export type ColumnPlan = readonly ColumnPlanEntry[];

const SCAN: ColumnPlanEntry = Object.freeze({ kind: 'scan' as const });

export interface MaskerOptions {
  /** extra detectors after the configured ones (lowest priority); for adapters and tests */
  detectors?: readonly { detector: Detector; strategy?: Strategy; keep?: number }[];
  /** called with what a detector threw (the value is withheld or passed per onError) */
  onError?: (err: unknown) => void;
}

/** A span to mask, positions in the text being masked; `slot` is the detector's priority. */
export interface Hit {
  s: number;
  e: number;
  slot: number;
}

interface CompiledRule {
  match: string | null;
  name: string | null;
  rule: ColumnRule;
}

export class Masker {
  readonly slots: readonly Slot[];
  readonly onError: 'closed' | 'open';
  /** masking calls that threw, since construction */
  errors = 0;
  private readonly secret: Buffer;
  private readonly unmasked: ReadonlySet<string>;
  private readonly rules: readonly CompiledRule[];
  private readonly features = new Features();
  /** all slots are built-in detectors, so builtinMayHit may gate them all at once */
  private readonly gated: boolean;
  private readonly errorHook?: (err: unknown) => void;
  private readonly tmp: number[] = [];
  /** recent hash tokens (the same IPs, emails, … recur): HMAC costs microseconds */
  private readonly hashCache = new Map<string, string>();

  constructor(cfg: MaskConfig, secret: Buffer | string, opts: MaskerOptions = {}) {
    this.secret = Buffer.isBuffer(secret) ? secret : Buffer.from(secret, 'utf8');
    if (this.secret.length === 0) throw new Error('the masking secret is empty');
    this.onError = cfg.onError;
    this.unmasked = new Set(cfg.unmaskedGroups);
    this.errorHook = opts.onError;
    const slots: Slot[] = [];
    const add = (det: Detector, label: string, strategy: Strategy, keep: number) =>
      slots.push({
        det,
        label,
        strategy,
        keep,
        redacted: `[MASKED:${label}]`,
        anchor: det.anchor ? new RegExp(det.anchor) : null,
        bit: BUILTIN_LIST.indexOf(det) >= 0 ? 1 << BUILTIN_LIST.indexOf(det) : 0,
      });
    const settings = detectorSettings(cfg);
    for (const n of DETECTOR_NAMES) {
      const s = settings[n];
      if (s) for (const d of BUILTIN_DETECTORS[n]) add(d, n, s.strategy, s.keep);
    }
    for (const c of cfg.custom) add(customDetector(c.name, c.pattern, c.flags, c.maxLength), c.name, c.strategy, c.keep ?? DEFAULT_KEEP);
    for (const x of opts.detectors ?? []) add(x.detector, x.detector.name, x.strategy ?? 'redact', x.keep ?? DEFAULT_KEEP);
    this.slots = slots;
    this.gated = slots.every((s) => s.bit !== 0);
    const all = cfg.defaultColumns ? [...cfg.columns, ...DEFAULT_COLUMN_RULES] : cfg.columns;
    this.rules = all.map((rule) => ({
      match: rule.match === undefined ? null : padMatch(rule.match.toLowerCase()),
      name: rule.name === undefined ? null : rule.name.toLowerCase(),
      rule,
    }));
  }

  /** Whether an identity with these groups sees this connection's results unmasked. */
  isUnmasked(groups: readonly string[]): boolean {
    if (this.unmasked.size === 0) return false;
    for (const g of groups) if (this.unmasked.has(g)) return true;
    return false;
  }

  /**
   * What to do with each column of a result: its first matching rule, or scan. Matching is
   * case-insensitive; `match` globs see `schema.table.column` with unknown parts empty
   * (`..total` for an expression), `name` globs see the column's name.
   */
  forColumns(columns: readonly ColumnRef[]): ColumnPlan {
    return columns.map((c) => {
      const name = c.name.toLowerCase();
      const qualified = `${(c.schema ?? '').toLowerCase()}.${(c.table ?? '').toLowerCase()}.${name}`;
      for (const r of this.rules) {
        if (r.match !== null ? !globMatch(r.match, qualified) : !globMatch(r.name!, name)) continue;
        if (r.rule.strategy === 'scan') return SCAN;
        return {
          kind: 'rule' as const,
          strategy: r.rule.strategy,
          keep: r.rule.keep ?? DEFAULT_KEEP,
          label: r.rule.label ?? c.name,
          key: `column:${c.name}`,
          ...(DEFAULT_COLUMN_RULES.includes(r.rule) ? { builtin: true as const } : {}),
        };
      }
      return SCAN;
    });
  }

  /**
   * Masks one value of a column: the column's rule, or the detectors. Returns the same string
   * when nothing was masked, null for the null strategy. Adds to `counts` when given.
   */
  maskValue(value: string, entry: ColumnPlanEntry, counts?: Counts): string | null {
    if (entry.kind === 'scan') return this.maskText(value, counts);
    if (counts) addCount(counts, entry.key);
    switch (entry.strategy) {
      case 'null':
        return null;
      case 'hash':
        return this.hash(value);
      case 'partial':
        return partial(value, entry.keep);
      default:
        return `[MASKED:${entry.label}]`;
    }
  }

  /** Masks every detector hit in `text`. Returns the same string when nothing was masked. */
  maskText(text: string, counts?: Counts): string {
    if (text.length === 0 || this.slots.length === 0) return text;
    try {
      const hits = this.findAll(text);
      return hits === null ? text : this.apply(text, 0, text.length, hits, counts);
    } catch (err) {
      return this.failed(text, err, counts);
    }
  }

  /** A streaming masker for text arriving in chunks (see stream.ts). */
  stream(): StreamMasker {
    return new StreamMasker(this);
  }

  /** `h:` + 16 hex digits of HMAC-SHA256(secret, value). */
  hash(value: string): string {
    const short = value.length <= HASH_CACHE_VALUE;
    if (short) {
      const hit = this.hashCache.get(value);
      if (hit !== undefined) return hit;
    }
    const h = 'h:' + createHmac('sha256', this.secret).update(value, 'utf8').digest('hex').slice(0, 16);
    if (short) {
      if (this.hashCache.size >= HASH_CACHE_SIZE) this.hashCache.clear();
      this.hashCache.set(value, h);
    }
    return h;
  }

  // --- shared with StreamMasker ---------------------------------------------------------------------

  /** @internal every hit in a whole text, or null when there is none */
  findAll(text: string): Hit[] | null {
    const len = text.length;
    if (len < 3 && this.gated) return null; // the shortest built-in hit: ::1
    const f = len <= SHORT ? this.features.measure(text) : null;
    const mask = f !== null ? builtinQuickMask(f) : -1;
    if (mask === 0 && this.gated) return null;
    const tmp = this.tmp;
    let hits: Hit[] | null = null;
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i];
      if (f !== null) {
        if (slot.bit !== 0) {
          if ((mask & slot.bit) === 0) continue;
        } else if (slot.det.quick !== undefined && !slot.det.quick(f)) continue;
        if (slot.anchor !== null && !slot.anchor.test(text)) continue;
      }
      tmp.length = 0;
      slot.det.scan(text, 0, len, true, tmp);
      if (tmp.length === 0) continue;
      hits ??= [];
      for (let k = 0; k < tmp.length; k += 2) hits.push({ s: tmp[k], e: tmp[k + 1], slot: i });
    }
    return hits;
  }

  /** @internal text[from, to) with the hits (all inside it) replaced; counts the masked spans */
  apply(text: string, from: number, to: number, hits: Hit[], counts?: Counts): string {
    if (hits.length === 0) return from === 0 && to === text.length ? text : text.slice(from, to);
    hits.sort((a, b) => a.s - b.s || b.e - a.e);
    let out = '';
    let p = from;
    let i = 0;
    while (i < hits.length) {
      let { s, e, slot } = hits[i++];
      while (i < hits.length && hits[i].s < e) {
        const h = hits[i++];
        if (h.e > e) e = h.e;
        if (h.slot < slot) slot = h.slot;
      }
      out += text.slice(p, s) + this.replacement(this.slots[slot], text, s, e);
      if (counts) addCount(counts, this.slots[slot].label);
      p = e;
    }
    return out + text.slice(p, to);
  }

  /** @internal the replacement of text[s, e) named by `slot` */
  replacement(slot: Slot, text: string, s: number, e: number): string {
    if (slot.det.longAfter !== undefined && e - s > slot.det.longAfter) return slot.redacted;
    switch (slot.strategy) {
      case 'partial':
        return partial(text.slice(s, e), slot.keep);
      case 'hash':
        return this.hash(text.slice(s, e));
      default:
        return slot.redacted;
    }
  }

  /** @internal what a failed masking call yields */
  failed(text: string, err: unknown, counts?: Counts): string {
    this.errors++;
    if (counts) addCount(counts, 'error');
    try {
      this.errorHook?.(err);
    } catch {
      // a failing hook must not turn into a leak
    }
    return this.onError === 'open' ? text : ERROR_TEXT;
  }
}

/**
 * `****` + the last `keep` characters, never more than a third of the value. Spaces and dashes
 * (card, IBAN and phone groupings) are not kept nor counted: `4111 1111 1111 1111` → `****1111`.
 */
export function partial(value: string, keep: number): string {
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c !== 32 && c !== 45) n++;
  }
  let k = Math.min(keep, Math.floor(n / 3));
  let tail = '';
  for (let i = value.length - 1; i >= 0 && k > 0; i--) {
    const c = value.charCodeAt(i);
    if (c === 32 || c === 45) continue;
    // keep a surrogate pair whole, or not at all
    if (c >= 0xdc00 && c <= 0xdfff && i > 0) {
      if (k < 2) break;
      tail = value.slice(i - 1, i + 1) + tail;
      i--;
      k -= 2;
    } else {
      tail = value[i] + tail;
      k--;
    }
  }
  return '****' + tail;
}

function padMatch(glob: string): string {
  const parts = glob.split('.').length;
  return parts >= 3 ? glob : '*.'.repeat(3 - parts) + glob;
}
