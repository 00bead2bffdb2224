// PostgreSQL statements via libpg-query (the server's own parser, compiled to WASM).
// Results are cached by text: pgbench and ORMs repeat the same few statements.
import pgQuery from 'libpg-query';

export interface PgStatement {
  text: string;
  /** top-level node type, e.g. SelectStmt; "unknown" when the text does not parse */
  type: string;
}

let loaded: Promise<void> | null = null;
/** Loads the WASM parser once; call before the first split. */
export function loadPostgresParser(): Promise<void> {
  loaded ??= pgQuery.loadModule();
  return loaded;
}

const CACHE_MAX = 5000;
const cache = new Map<string, PgStatement[]>();

/**
 * Splits a simple-query string into its statements, as the server will run them. A string
 * that does not parse is returned whole: the server rejects it whole too, before running any part.
 */
export function splitPostgres(text: string): PgStatement[] {
  const hit = cache.get(text);
  if (hit) return hit;
  let out: PgStatement[];
  try {
    const res = pgQuery.parseSync(text) as { stmts?: { stmt: Record<string, unknown>; stmt_location?: number; stmt_len?: number }[] };
    const stmts = res.stmts ?? [];
    if (stmts.length <= 1) {
      out = [{ text: text.trim(), type: stmts[0] ? Object.keys(stmts[0].stmt)[0]! : 'EmptyQuery' }];
    } else {
      // Locations are byte offsets into the UTF-8 text.
      const bytes = Buffer.from(text, 'utf8');
      out = stmts.map((s) => {
        const start = s.stmt_location ?? 0;
        const end = s.stmt_len ? start + s.stmt_len : bytes.length;
        return { text: bytes.toString('utf8', start, end).trim(), type: Object.keys(s.stmt)[0]! };
      });
    }
  } catch {
    out = [{ text: text.trim(), type: 'unknown' }];
  }
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(text, out);
  return out;
}
