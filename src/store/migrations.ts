// Migrations are written once with kysely's schema builder, so the same code creates the
// tables on SQLite and on PostgreSQL.
import { type Kysely, type Migration, type MigrationProvider, Migrator, SqliteAdapter, sql } from 'kysely';

/** On SQLite, INTEGER PRIMARY KEY is the rowid itself: one b-tree fewer per journal insert. */
const seqType = (db: Kysely<any>) => (db.getExecutor().adapter instanceof SqliteAdapter ? 'integer' : 'bigint');

const migrations: Record<string, Migration> = {
  '0001_spine': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('identities')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('groups', 'text', (c) => c.notNull())
        .addColumn('connections', 'text', (c) => c.notNull())
        .addColumn('key_hash', 'text', (c) => c.notNull())
        .addColumn('scram_verifier', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text')
        .addColumn('revoked_at', 'text')
        .execute();
      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('identity_name', 'text', (c) => c.notNull())
        .addColumn('identity_kind', 'text', (c) => c.notNull())
        .addColumn('connection', 'text', (c) => c.notNull())
        .addColumn('protocol', 'text', (c) => c.notNull())
        .addColumn('client_addr', 'text')
        .addColumn('started_at', 'text', (c) => c.notNull())
        .addColumn('ended_at', 'text')
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('close_reason', 'text')
        .execute();
      await db.schema.createIndex('sessions_started').on('sessions').column('started_at').execute();
      await db.schema
        .createTable('events')
        .addColumn('seq', seqType(db), (c) => c.primaryKey())
        .addColumn('ts', 'text', (c) => c.notNull())
        .addColumn('session_id', 'text', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('prev', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('events_session').on('events').columns(['session_id', 'seq']).execute();
      await db.schema
        .createTable('checkpoints')
        .addColumn('size', 'bigint', (c) => c.primaryKey())
        .addColumn('root', 'text', (c) => c.notNull())
        .addColumn('ts', 'text', (c) => c.notNull())
        .addColumn('key_id', 'text', (c) => c.notNull())
        .addColumn('signature', 'text', (c) => c.notNull())
        .execute();
      void sql;
    },
  },
  '0002_reviews': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('reviews')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('binding_hash', 'text', (c) => c.notNull())
        .addColumn('session_id', 'text', (c) => c.notNull())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('identity_name', 'text', (c) => c.notNull())
        .addColumn('identity_kind', 'text', (c) => c.notNull())
        .addColumn('connection', 'text', (c) => c.notNull())
        .addColumn('text', 'text', (c) => c.notNull())
        .addColumn('params', 'text')
        .addColumn('rule', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('approvers', 'text', (c) => c.notNull())
        .addColumn('min_approvals', 'integer', (c) => c.notNull())
        .addColumn('mode', 'text', (c) => c.notNull())
        .addColumn('decisions', 'text', (c) => c.notNull())
        .addColumn('preview', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('decided_at', 'text')
        .execute();
      await db.schema.createIndex('reviews_binding').on('reviews').columns(['binding_hash', 'status']).execute();
      await db.schema.createIndex('reviews_status').on('reviews').columns(['status', 'created_at']).execute();
    },
  },
  '0003_mysql_auth': {
    // MySQL clients prove a password against these hashes (SHA1(SHA1(key)) for
    // mysql_native_password, SHA256(SHA256(key)) for caching_sha2_password's fast path);
    // like the SCRAM verifier, they cannot be turned back into the key.
    async up(db: Kysely<any>) {
      await db.schema.alterTable('identities').addColumn('mysql_native', 'text').execute();
      await db.schema.alterTable('identities').addColumn('mysql_sha2', 'text').execute();
    },
  },
  '0004_ssh_keys': {
    // SSH public keys registered to identities (`gatehouse keys add-ssh`). Looked up by the
    // fingerprint of the key a client offers; a key belongs to at most one identity.
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('ssh_keys')
        .addColumn('fingerprint', 'text', (c) => c.primaryKey())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('algo', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('comment', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ssh_keys_identity').on('ssh_keys').column('identity_id').execute();
    },
  },
  '0005_llm_usage': {
    // Tokens an identity spent on `type: llm` connections, per UTC day, for the daily budget
    // (src/store/llm-usage.ts). One row per identity and day, updated in place by an upsert.
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('llm_usage')
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('day', 'text', (c) => c.notNull())
        .addColumn('tokens', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('llm_usage_pk', ['identity_id', 'day'])
        .execute();
    },
  },
};

class StaticProvider implements MigrationProvider {
  async getMigrations() {
    return migrations;
  }
}

export async function migrate(db: Kysely<any>): Promise<void> {
  const migrator = new Migrator({ db, provider: new StaticProvider(), migrationTableName: 'gatehouse_migrations', migrationLockTableName: 'gatehouse_migrations_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`store migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`);
  }
}
