// Streaming text masker, for byte streams the gateway relays (shell output, HTTP bodies, LLM
// completions). Adapters decode UTF-8 with a streaming decoder and push strings.
//
// Guarantee: for any split of a text into chunks, the concatenated output of push()…end() is
// exactly maskText(text), and the counts are equal. Output is never re-ordered.
//
// How: each detector keeps scanning where it left off, as if over the whole text (see the scan
// contract in detectors.ts). Text is emitted up to the point before which every hit is known
// and no hit straddles; the rest is held back. What is held is bounded:
//   - single-line detectors settle at each '\n'; inside a very long line at most their
//     maxLength (~11 KiB for JWT) is held;
//   - a PEM block is held from its BEGIN marker until its END (or the first character that
//     cannot be in a block), but never more than PEM_CAP (8 KiB): past that the label
//     `[MASKED:pem]` is emitted and the rest of the block is swallowed as it arrives, so a key
//     longer than the cap is still never emitted, not even in part;
//   - plus a few KiB of already-emitted left context for look-behinds.
//
// flush() emits everything held, as if the stream ended, and goes on: adapters of interactive
// sessions may call it after a quiet period (a line without '\n', a prompt, is otherwise held
// until the line ends). A secret that straddles a flush point may be missed.
//
// onError: if a detector throws, the text not yet emitted is replaced by `[MASKED:error]`
// (closed) or passed as is (open), counted as `error`, and masking resumes after it.
import { addCount, newCounts, type Counts } from './counts.ts';
import { DETECTOR_CONTEXT } from './detectors.ts';
import type { Hit, Masker } from './masker.ts';

/** Drain only once this much arrived without a line break (nothing settles earlier anyway). */
const DRAIN_EVERY = 4096;
/** Drop emitted text only in pieces at least this large (cheaper than slicing on every push). */
const TRIM_EVERY = 8192;

interface Open {
  /** where to look for the block's end next (absolute) */
  scan: number;
  /** the block's end is known */
  done: boolean;
  /** the masked span ends at least here (absolute) */
  end: number;
}

export class StreamMasker {
  /** masked values emitted so far, per detector (and `error`) */
  readonly counts: Counts = newCounts();
  private buf = '';
  /** absolute offset of buf[0] */
  private base = 0;
  /** absolute: everything before has been emitted (or swallowed into a masked span) */
  private pos = 0;
  /** absolute, per slot: where its next scan starts; every hit before it is known */
  private readonly next: number[];
  /** known hits not yet emitted, absolute */
  private pending: Hit[] = [];
  /** a long PEM block being swallowed */
  private open: Open | null = null;
  /** a long PEM block the pem detector reported, not yet entered (absolute start, marker end) */
  private waitOpen = -1;
  private waitMarker = -1;
  private undrained = 0;
  private ended = false;
  private emitted = '';
  private readonly tmp: number[] = [];
  private readonly openSlot: number;

  constructor(private readonly m: Masker) {
    this.next = m.slots.map(() => 0);
    this.openSlot = m.slots.length > 0 && m.slots[0].det.extend ? 0 : -1;
  }

  /** Masks a chunk; returns what can be emitted so far (possibly ''). */
  push(chunk: string): string {
    if (this.ended) throw new Error('StreamMasker: push after end');
    if (chunk.length === 0) return '';
    this.buf += chunk;
    this.undrained += chunk.length;
    if (this.undrained < DRAIN_EVERY && chunk.indexOf('\n') < 0) return '';
    return this.drain(false);
  }

  /** Emits everything held back, as if the stream ended here, and goes on (see above). */
  flush(): string {
    if (this.ended) return '';
    return this.drain(true);
  }

  /** Ends the stream: returns the rest. */
  end(): string {
    if (this.ended) return '';
    const out = this.drain(true);
    this.ended = true;
    this.buf = '';
    return out;
  }

  /** Characters received but not yet emitted or swallowed. */
  get held(): number {
    const from = this.open ? (this.open.done ? this.open.end : this.open.scan) : this.pos;
    return Math.max(0, this.base + this.buf.length - from);
  }

  private drain(eof: boolean): string {
    this.undrained = 0;
    this.emitted = '';
    if (this.m.slots.length === 0) {
      const s = this.buf.slice(this.pos - this.base);
      this.pos = this.base + this.buf.length;
      this.trim();
      return s;
    }
    try {
      this.run(eof);
    } catch (err) {
      const o = this.open;
      const from = o ? (o.done ? o.end : o.scan) : this.pos;
      this.emitted += this.m.failed(this.buf.slice(Math.max(0, from - this.base)), err, this.counts);
      const end = this.base + this.buf.length;
      this.pos = end;
      this.next.fill(end);
      this.pending = [];
      this.open = null;
      this.waitOpen = -1;
    }
    this.trim();
    const out = this.emitted;
    this.emitted = '';
    return out;
  }

  private run(eof: boolean): void {
    const text = this.buf;
    const base = this.base;
    const slots = this.m.slots;
    for (;;) {
      const o = this.open;
      if (o !== null) {
        if (!o.done) {
          const r = slots[this.openSlot].det.extend!(text, o.scan - base, eof);
          if (r.done) {
            o.done = true;
            o.end = Math.max(o.end, r.end + base);
            this.next[this.openSlot] = r.end + base;
          } else o.scan = r.end + base;
        }
        this.scanAll(text, eof);
        // every hit overlapping the span joins it (and may extend it)
        let chained = false;
        for (let changed = true; changed; ) {
          changed = false;
          const bound = o.done ? o.end : Math.max(o.end, o.scan);
          let w = 0;
          for (const h of this.pending) {
            if (h.s < bound) {
              if (h.e > o.end) o.end = h.e;
              changed = true;
            } else this.pending[w++] = h;
          }
          this.pending.length = w;
          if (o.done && this.waitOpen >= 0 && this.waitOpen < o.end) {
            // another long block starts inside the span: one span, one label
            o.done = false;
            o.scan = this.waitMarker;
            this.waitOpen = -1;
            chained = true;
            break;
          }
        }
        if (chained) continue;
        if (!o.done || this.minNext() < o.end) return;
        this.pos = o.end;
        this.open = null;
        continue;
      }

      this.scanAll(text, eof);
      const c0 = this.minNext();
      let c = c0;
      for (let moved = true; moved; ) {
        moved = false;
        for (const h of this.pending) {
          if (h.s < c && h.e > c) {
            c = h.s;
            moved = true;
          }
        }
      }
      if (c > this.pos) {
        const batch: Hit[] = [];
        let w = 0;
        for (const h of this.pending) {
          if (h.s < c) batch.push({ s: h.s - base, e: h.e - base, slot: h.slot });
          else this.pending[w++] = h;
        }
        this.pending.length = w;
        this.emitted += this.m.apply(text, this.pos - base, c - base, batch, this.counts);
        this.pos = c;
      }
      if (this.waitOpen >= 0 && c0 >= this.waitOpen) {
        // everything before the long block is known: its span starts at c (hits overlapping
        // its start pulled c back), and every pending hit is part of it
        const open: Open = { scan: this.waitMarker, done: false, end: this.waitOpen };
        for (const h of this.pending) if (h.e > open.end) open.end = h.e;
        this.pending.length = 0;
        const slot = slots[this.openSlot];
        this.emitted += slot.redacted;
        addCount(this.counts, slot.label);
        this.open = open;
        this.waitOpen = -1;
        continue;
      }
      return;
    }
  }

  /** Runs every detector from where it stopped, over what is settled. */
  private scanAll(text: string, eof: boolean): void {
    const len = text.length;
    const base = this.base;
    const lastNL = text.lastIndexOf('\n');
    const slots = this.m.slots;
    const tmp = this.tmp;
    for (let i = 0; i < slots.length; i++) {
      if (i === this.openSlot && this.open !== null && !this.open.done) continue;
      const det = slots[i].det;
      const from = this.next[i] - base;
      const limit = eof ? len : det.multiline ? Math.max(from, len - det.maxLength) : Math.max(lastNL + 1, len - det.maxLength);
      if (!eof && !det.multiline && limit <= from) continue;
      if (i === this.openSlot) this.waitOpen = -1;
      tmp.length = 0;
      this.next[i] = det.scan(text, from, limit, eof, tmp) + base;
      for (let k = 0; k < tmp.length; k += 2) {
        const s = tmp[k];
        const e = tmp[k + 1];
        if (e >= 0) this.pending.push({ s: s + base, e: e + base, slot: i });
        else if (i === this.openSlot) {
          this.waitOpen = s + base;
          this.waitMarker = ~e + base;
        } else throw new Error(`detector ${det.name} reported an open span`);
      }
    }
  }

  private minNext(): number {
    let c = Infinity;
    for (const n of this.next) if (n < c) c = n;
    return c;
  }

  /** Drops text no longer needed: all but some left context before the earliest position in use. */
  private trim(): void {
    const o = this.open;
    let keep = o ? (o.done ? Infinity : o.scan) : this.pos;
    for (let i = 0; i < this.next.length; i++) {
      if (i === this.openSlot && o !== null && !o.done) continue;
      if (this.next[i] < keep) keep = this.next[i];
    }
    if (keep === Infinity) keep = this.base + this.buf.length;
    keep -= DETECTOR_CONTEXT;
    if (keep - this.base >= TRIM_EVERY) {
      this.buf = this.buf.slice(keep - this.base);
      this.base = keep;
    }
  }
}
