// The one schema shared by SQLite and PostgreSQL. Column types are kept to what both
// engines store identically: text, integers, and JSON as text.
import type { Generated } from 'kysely';

export interface IdentityTable {
  id: string;
  name: string;
  kind: 'agent' | 'human';
  groups: string; // JSON array of strings
  connections: string; // JSON array of connection-name globs; ["*"] means all
  key_hash: string; // hex sha256 of the API key; the key itself is never stored
  scram_verifier: string; // SCRAM-SHA-256$iter:salt$StoredKey:ServerKey (RFC 5803 form)
  /** hex SHA1(SHA1(key)) for mysql_native_password; null for keys made before MySQL support */
  mysql_native?: string | null;
  /** hex SHA256(SHA256(key)) for caching_sha2_password fast auth */
  mysql_sha2?: string | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

export interface SessionTable {
  id: string;
  identity_id: string;
  identity_name: string;
  identity_kind: string;
  connection: string;
  protocol: string;
  client_addr: string | null;
  started_at: string;
  ended_at: string | null;
  status: 'open' | 'closed';
  close_reason: string | null;
}

export interface EventTable {
  seq: number;
  ts: string;
  session_id: string;
  type: string;
  /** canonical JSON of the event without `prev` and `hash` */
  body: string;
  prev: string;
  hash: string;
}

export interface CheckpointTable {
  size: number; // seq of the last event covered
  root: string; // hash of event `size`: the chain head at that point
  ts: string;
  key_id: string;
  signature: string; // base64 Ed25519 over checkpointMessage(size, root)
}

/** A statement held for human approval (src/approval/reviews.ts). */
export interface ReviewTable {
  id: string; // "r-" + 10 base32 characters
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'consumed';
  binding_hash: string; // hex sha256 of identity + connection + normalized text + params
  session_id: string;
  identity_id: string;
  identity_name: string;
  identity_kind: 'agent' | 'human';
  connection: string;
  text: string;
  params: string | null; // JSON array
  rule: string;
  reason: string;
  approvers: string; // JSON array of group names
  min_approvals: number;
  mode: 'wait' | 'defer';
  decisions: string; // JSON array of { by, byId, decision, comment, at }
  preview: string | null; // JSON { plan?, estimatedRows?, affectedRows?, error? }
  created_at: string;
  expires_at: string;
  decided_at: string | null;
}

/** An SSH public key that authenticates an identity (keys add-ssh). */
export interface SshKeyTable {
  /** SHA256:… of the key blob, as ssh-keygen -lf prints it */
  fingerprint: string;
  identity_id: string;
  algo: string;
  /** base64 of the public key blob (the middle field of an authorized_keys line) */
  public_key: string;
  comment: string | null;
  created_at: string;
}

/** Tokens an identity spent on LLM connections in one UTC day (src/store/llm-usage.ts). */
export interface LlmUsageTable {
  identity_id: string;
  /** 'YYYY-MM-DD', UTC */
  day: string;
  /** total tokens (prompt + completion) as the upstream reported them, plus open reservations */
  tokens: number;
  updated_at: string;
}

export interface DB {
  identities: IdentityTable;
  ssh_keys: SshKeyTable;
  sessions: SessionTable;
  events: EventTable;
  checkpoints: CheckpointTable;
  reviews: ReviewTable;
  llm_usage: LlmUsageTable;
}

export type { Generated };
