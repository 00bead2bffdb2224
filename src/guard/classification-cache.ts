// The classifiers' cache by statement text, shared by every dialect.
import type { Classification } from './classification.ts';

const MAX_ENTRIES = 10_000;
/** Total cached text, so that a few huge one-off statements cannot pin hundreds of megabytes. */
const MAX_CHARS = 16 * 1024 * 1024;
const MAX_TEXT = 256 * 1024;

/**
 * Two generations instead of a strict LRU: new entries go to `young`; when it holds half the
 * budget it becomes `old` and the previous `old` is dropped whole. A hit in `old` is promoted, so
 * statements in use survive every rotation. Every operation is O(1): evicting one entry at a time
 * from the front of a Map makes V8 skip the holes left by earlier deletions, which cost several
 * microseconds per insert once the cache was full.
 */
export class ClassificationCache {
  private young = new Map<string, Classification>();
  private old = new Map<string, Classification>();
  private youngChars = 0;

  get(key: string): Classification | undefined {
    const hit = this.young.get(key);
    if (hit !== undefined) return hit;
    const aged = this.old.get(key);
    if (aged !== undefined) {
      this.old.delete(key);
      this.set(key, aged);
    }
    return aged;
  }

  set(key: string, c: Classification): void {
    if (key.length > MAX_TEXT) return;
    if (this.young.size >= MAX_ENTRIES / 2 || this.youngChars + key.length > MAX_CHARS / 2) {
      this.old = this.young;
      this.young = new Map();
      this.youngChars = 0;
    }
    this.young.set(key, c);
    this.youngChars += key.length;
  }

  clear(): void {
    this.young = new Map();
    this.old = new Map();
    this.youngChars = 0;
  }
}

/**
 * Cached results are shared by every caller: freezing makes an accidental edit throw (in strict
 * mode) instead of silently changing the next verdict for the same text.
 */
export function deepFreeze(c: Classification): Classification {
  Object.freeze(c.classes);
  Object.freeze(c.types);
  Object.freeze(c.reads);
  Object.freeze(c.writes);
  Object.freeze(c.flags);
  Object.freeze(c.functions);
  if (c.statements) {
    for (const s of c.statements) deepFreeze(s);
    Object.freeze(c.statements);
  }
  return Object.freeze(c);
}
