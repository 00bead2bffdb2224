// Opens the store named by the config: an embedded SQLite file (the default) or PostgreSQL.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { migrate } from './migrations.ts';
import type { DB } from './schema.ts';

export interface Store {
  db: Kysely<DB>;
  kind: 'sqlite' | 'postgres';
  /** the raw SQLite handle, for the journal's hot path (prepared statements, no async hop) */
  sqlite?: Database.Database;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** 'sqlite' or a postgres:// URL */
  store: string;
  /** SQLite file path, used when store is 'sqlite' */
  sqlitePath: string;
  /** fsync every journal commit (SQLite synchronous=FULL). Off: survives a process crash, not power loss. */
  fsync?: boolean;
}

export async function openStore(opts: StoreOptions): Promise<Store> {
  let db: Kysely<DB>;
  let kind: Store['kind'];
  let sqliteHandle: Database.Database | undefined;
  if (opts.store === 'sqlite') {
    mkdirSync(dirname(opts.sqlitePath), { recursive: true });
    const sqlite = new Database(opts.sqlitePath);
    // WAL lets readers (the CLI) run while the gateway writes; a committed transaction
    // survives kill -9 because it has reached the OS before commit returns.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma(`synchronous = ${opts.fsync ? 'FULL' : 'NORMAL'}`);
    sqlite.pragma('busy_timeout = 5000');
    sqliteHandle = sqlite;
    db = new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) });
    kind = 'sqlite';
  } else if (/^postgres(ql)?:\/\//.test(opts.store)) {
    // int8 columns (seq, size) come back as numbers; a journal will not pass 2^53 events.
    const types = {
      getTypeParser: (oid: number, format?: any) =>
        oid === 20 ? (v: string) => Number(v) : (pg.types.getTypeParser as any)(oid, format),
    };
    const pool = new pg.Pool({ connectionString: opts.store, max: 4, types });
    pool.on('error', () => {}); // an idle client's error must not crash the gateway; the next query reports it
    db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
    kind = 'postgres';
  } else {
    throw new Error(`store: expected "sqlite" or a postgres:// URL, got "${opts.store}"`);
  }
  await migrate(db);
  return { db, kind, sqlite: sqliteHandle, close: () => db.destroy() };
}
