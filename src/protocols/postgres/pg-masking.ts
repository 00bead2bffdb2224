// RowMasking for PostgreSQL results over the shared masker: text values are masked as text;
// binary values of text-like types too; other binary types follow column rules only (a rule
// turns them into NULL, the one value valid for every type).
import type { Counts } from '../../mask/counts.ts';
import { addCount } from '../../mask/counts.ts';
import type { ColumnPlan, Masker } from '../../mask/masker.ts';
import type { PgColumn } from './codec.ts';
import type { RowMasking, RowPlan } from './masking.ts';
import type { Catalog } from './upstream.ts';

/** text, varchar, bpchar, name, json, xml, unknown, citext-like domains are not known here */
const TEXT_TYPES = new Set([25, 1043, 1042, 19, 114, 142, 705]);
const JSONB = 3802;
/**
 * Types whose text form cannot hold a secret or personal datum the detectors look for: bool,
 * date, time, timetz, timestamp, timestamptz, interval, uuid, oid. Integers and numerics can
 * (a card number), so they are still scanned. Column rules still apply to these.
 */
const NO_SCAN_TYPES = new Set([16, 1082, 1083, 1266, 1114, 1184, 1186, 2950, 26]);

interface Plan {
  entries: ColumnPlan;
  types: number[];
}

export class PgRowMasking implements RowMasking {
  constructor(
    private readonly masker: Masker,
    private readonly catalog?: Catalog,
  ) {}

  plan(cols: readonly PgColumn[]): RowPlan {
    const refs = cols.map((c) => {
      const t = c.tableOid ? this.catalog?.get(c.tableOid) : undefined;
      // The catalog's column name, not the alias: `select email as e` is still customers.email.
      return t ? { schema: t.schema, table: t.table, name: t.columns.get(c.attnum) ?? c.name } : { name: c.name };
    });
    const plan: Plan = { entries: this.masker.forColumns(refs), types: cols.map((c) => c.typeOid) };
    return plan;
  }

  row(p: RowPlan, values: (Buffer | null)[], formats: readonly number[], counts: Counts): (Buffer | null)[] | null {
    const plan = p as Plan;
    let out: (Buffer | null)[] | null = null;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v === null) continue;
      const entry = plan.entries[i] ?? plan.entries[plan.entries.length - 1] ?? { kind: 'scan' as const };
      const binary = (formats.length === 1 ? formats[0] : formats[i]) === 1;
      const type = plan.types[i] ?? 0;
      if (entry.kind === 'scan' && NO_SCAN_TYPES.has(type)) continue;
      let next: Buffer | null | undefined;
      if (!binary || TEXT_TYPES.has(type) || type === JSONB) {
        // jsonb's binary form is a version byte, then the text.
        const skip = binary && type === JSONB ? 1 : 0;
        const s = v.toString('utf8', skip);
        const m = this.masker.maskValue(s, entry, counts);
        if (m === s) continue;
        next = m === null ? null : skip ? Buffer.concat([v.subarray(0, 1), Buffer.from(m, 'utf8')]) : Buffer.from(m, 'utf8');
      } else if (entry.kind === 'rule') {
        next = null;
        addCount(counts, entry.key);
      } else continue;
      out ??= values.slice();
      out[i] = next;
    }
    return out;
  }

  text(s: string, counts: Counts): string {
    return this.masker.maskText(s, counts);
  }
}
