// What a reviewer sees of a held statement, from the target itself: its EXPLAIN plan (never
// ANALYZE), and with `preview: dryRun` the rows it would affect, inside a transaction that is
// always rolled back. Runs on its own connection with the held credentials.
import pg from 'pg';
import type { PostgresConnection } from '../../config/schema.ts';
import type { Classification } from '../../guard/classification.ts';
import type { ReviewPreview } from '../../approval/reviews.ts';

const DML = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);

export function previewFor(conn: PostgresConnection): ((text: string, params: unknown[] | undefined, c: Classification | undefined) => Promise<ReviewPreview | null>) | undefined {
  if (conn.preview === 'none') return undefined;
  return async (text, params, c) => {
    // Only a single DML statement: EXPLAIN of anything else is either useless or not harmless.
    if (!c || c.types.length === 0 || !DML.has(c.types[0]!) || c.flags.includes('multiple_statements')) return null;
    const client = new pg.Client({
      host: conn.host,
      port: conn.port,
      user: conn.user,
      password: conn.password,
      database: conn.database,
      ssl: conn.tls === 'disable' ? false : { rejectUnauthorized: conn.tls === 'verify-full', ca: conn.ca },
      statement_timeout: 5000,
      connectionTimeoutMillis: 5000,
    });
    client.on('error', () => {});
    const values = params?.map((p) => (typeof p === 'string' && p.startsWith('\\x') ? null : p)) ?? [];
    try {
      await client.connect();
      const out: ReviewPreview = {};
      const plan = await client.query({ text: `EXPLAIN (FORMAT JSON) ${text}`, values });
      const json = (plan.rows[0] as Record<string, unknown>)['QUERY PLAN'] as { Plan: { 'Plan Rows': number } }[];
      out.estimatedRows = json[0]?.Plan['Plan Rows'];
      const textPlan = await client.query({ text: `EXPLAIN ${text}`, values });
      out.plan = textPlan.rows.map((r: Record<string, unknown>) => r['QUERY PLAN']).join('\n');
      if (conn.preview === 'dryRun') {
        await client.query('BEGIN');
        try {
          const r = await client.query({ text, values });
          out.affectedRows = r.rowCount ?? 0;
        } finally {
          await client.query('ROLLBACK');
        }
      }
      return out;
    } catch (e) {
      return { error: (e as Error).message };
    } finally {
      await client.end().catch(() => {});
    }
  };
}
