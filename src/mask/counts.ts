// Masking counts: how many values each detector or column rule replaced, e.g.
// `{ email: 12, card: 1, 'column:password': 3, error: 0 }`. Result events carry them.
//
// Keys: a detector's name (`email`, `card`, a custom detector's name) for values found inside
// text; `column:<name>` for values replaced whole by a column rule; `error` for masking calls
// that failed (see `onError`). A key is present only once its count is above zero.

export type Counts = Record<string, number>;

/** A fresh, empty counts object (no prototype, so any key is safe). */
export function newCounts(): Counts {
  return Object.create(null) as Counts;
}

export function addCount(counts: Counts, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

/** Adds `from` into `into` and returns `into`. */
export function mergeCounts(into: Counts, from: Readonly<Counts>): Counts {
  for (const k of Object.keys(from)) into[k] = (into[k] ?? 0) + from[k];
  return into;
}

/** Total number of masked values (errors excluded). */
export function countsTotal(counts: Readonly<Counts>): number {
  let n = 0;
  for (const k of Object.keys(counts)) if (k !== 'error') n += counts[k];
  return n;
}

export function hasCounts(counts: Readonly<Counts>): boolean {
  for (const _ in counts) return true;
  return false;
}
