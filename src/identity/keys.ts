// API keys. A key is shown once at creation; the store keeps only its SHA-256 and a SCRAM
// verifier, so neither a leaked database nor a log can reveal it.
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DB, IdentityTable } from '../store/schema.ts';
import { createScramVerifier } from '../protocols/postgres/scram.ts';
import { nativePasswordHash, sha2FastHash } from '../protocols/mysql/auth.ts';
import { globMatch } from '../util/glob.ts';

export type IdentityKind = 'agent' | 'human';

export interface Identity {
  id: string;
  name: string;
  kind: IdentityKind;
  groups: string[];
  connections: string[];
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  scramVerifier: string;
  keyHash: string;
  /** SHA1(SHA1(key)) and SHA256(SHA256(key)), for MySQL logins; null for older keys */
  mysqlNative: Buffer | null;
  mysqlSha2: Buffer | null;
}

export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyError';
  }
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$/;

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function generateKey(): string {
  return 'gh_' + randomBytes(32).toString('base64url');
}

export interface CreateKeyInput {
  name: string;
  kind?: IdentityKind;
  groups?: string[];
  connections?: string[];
  expiresInMs?: number | null;
}

export async function createKey(db: Kysely<DB>, input: CreateKeyInput): Promise<{ identity: Identity; key: string }> {
  if (!NAME_RE.test(input.name)) {
    throw new KeyError(`invalid key name "${input.name}": use 1-63 letters, digits, "_", ".", "@" or "-", starting with a letter or digit`);
  }
  const existing = await db.selectFrom('identities').select('id').where('name', '=', input.name).executeTakeFirst();
  if (existing) throw new KeyError(`a key named "${input.name}" already exists; revoke it or choose another name`);
  const key = generateKey();
  const now = new Date();
  const row: IdentityTable = {
    id: randomUUID(),
    name: input.name,
    kind: input.kind ?? 'agent',
    groups: JSON.stringify(input.groups ?? []),
    connections: JSON.stringify(input.connections ?? []),
    key_hash: hashKey(key),
    scram_verifier: createScramVerifier(key),
    mysql_native: nativePasswordHash(key).toString('hex'),
    mysql_sha2: sha2FastHash(key).toString('hex'),
    created_at: now.toISOString(),
    expires_at: input.expiresInMs ? new Date(now.getTime() + input.expiresInMs).toISOString() : null,
    revoked_at: null,
  };
  await db.insertInto('identities').values(row).execute();
  return { identity: fromRow(row), key };
}

export async function listKeys(db: Kysely<DB>): Promise<Identity[]> {
  const rows = await db.selectFrom('identities').selectAll().orderBy('created_at').execute();
  return rows.map(fromRow);
}

export async function findIdentity(db: Kysely<DB>, name: string): Promise<Identity | null> {
  const row = await db.selectFrom('identities').selectAll().where('name', '=', name).executeTakeFirst();
  return row ? fromRow(row) : null;
}

export async function revokeKey(db: Kysely<DB>, name: string): Promise<Identity> {
  const id = await findIdentity(db, name);
  if (!id) throw new KeyError(`no key named "${name}"; see \`gatehouse keys list\``);
  if (id.revokedAt) return id;
  const revokedAt = new Date().toISOString();
  await db.updateTable('identities').set({ revoked_at: revokedAt }).where('id', '=', id.id).execute();
  return { ...id, revokedAt };
}

/** Constant-time check of a presented key against the stored hash. */
export function keyMatches(identity: Identity, presented: string): boolean {
  const a = Buffer.from(hashKey(presented), 'hex');
  const b = Buffer.from(identity.keyHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export type Standing = { ok: true } | { ok: false; reason: 'revoked' | 'expired'; message: string };

/** Whether an authenticated identity may still act now. */
export function standing(identity: Identity, now = Date.now()): Standing {
  if (identity.revokedAt) return { ok: false, reason: 'revoked', message: `key "${identity.name}" was revoked at ${identity.revokedAt}` };
  if (identity.expiresAt && Date.parse(identity.expiresAt) <= now) {
    return { ok: false, reason: 'expired', message: `key "${identity.name}" expired at ${identity.expiresAt}` };
  }
  return { ok: true };
}

export function mayUseConnection(identity: Identity, connection: string): boolean {
  return identity.connections.some((g) => globMatch(g, connection));
}

function fromRow(r: IdentityTable): Identity {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    groups: JSON.parse(r.groups),
    connections: JSON.parse(r.connections),
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    scramVerifier: r.scram_verifier,
    keyHash: r.key_hash,
    mysqlNative: r.mysql_native ? Buffer.from(r.mysql_native, 'hex') : null,
    mysqlSha2: r.mysql_sha2 ? Buffer.from(r.mysql_sha2, 'hex') : null,
  };
}
