// What the PostgreSQL adapter needs from masking, in wire-neutral terms: a plan per result
// shape, row values in and out, and free text (errors, notices, notifications, COPY rows).
import type { Counts } from '../../mask/counts.ts';
import type { PgColumn } from './codec.ts';

export type RowPlan = { readonly __plan: unique symbol } | object;

export interface RowMasking {
  plan(cols: readonly PgColumn[]): RowPlan;
  /** new values when any changed, else null; `formats` per column (0 text, 1 binary) */
  row(plan: RowPlan, values: (Buffer | null)[], formats: readonly number[], counts: Counts): (Buffer | null)[] | null;
  text(s: string, counts: Counts): string;
}
