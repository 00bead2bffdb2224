// SSH public keys registered to identities: a client that offers one (and proves it holds the
// private key) is that identity, without typing its Gatehouse key.
import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import ssh2 from 'ssh2';
import type { DB } from '../store/schema.ts';
import { KeyError, findIdentity, type Identity } from './keys.ts';

export interface SshKeyRecord {
  fingerprint: string;
  identityName: string;
  algo: string;
  comment: string | null;
  createdAt: string;
}

/** SHA256:… of a public key blob, as ssh-keygen -lf prints it. */
export function sshFingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** Parses one public key (an authorized_keys / .pub line); refuses private keys and anything else. */
export function parsePublicKey(text: string): { algo: string; blob: Buffer; comment: string | null } {
  const line = text.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
  if (!line) throw new KeyError('the public key file is empty; pass a .pub file such as ~/.ssh/id_ed25519.pub');
  if (/PRIVATE KEY/.test(text)) throw new KeyError('this is a private key; pass the public key (the .pub file), and keep the private key to yourself');
  const parsed = ssh2.utils.parseKey(line);
  if (parsed instanceof Error) throw new KeyError(`not an SSH public key: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  if (key.isPrivateKey()) throw new KeyError('this is a private key; pass the public key (the .pub file)');
  const comment = line.split(/\s+/).slice(2).join(' ') || null;
  return { algo: key.type, blob: key.getPublicSSH(), comment: comment ? comment.slice(0, 200) : null };
}

export async function addSshKey(db: Kysely<DB>, name: string, publicKeyText: string): Promise<SshKeyRecord> {
  const identity = await findIdentity(db, name);
  if (!identity) throw new KeyError(`no key named "${name}"; see \`gatehouse keys list\``);
  const { algo, blob, comment } = parsePublicKey(publicKeyText);
  const fingerprint = sshFingerprint(blob);
  const existing = await db.selectFrom('ssh_keys').select(['identity_id']).where('fingerprint', '=', fingerprint).executeTakeFirst();
  if (existing) {
    const owner = await db.selectFrom('identities').select('name').where('id', '=', existing.identity_id).executeTakeFirst();
    throw new KeyError(`SSH key ${fingerprint} is already registered${owner ? ` to "${owner.name}"` : ''}; one SSH key identifies one identity`);
  }
  const createdAt = new Date().toISOString();
  await db.insertInto('ssh_keys').values({ fingerprint, identity_id: identity.id, algo, public_key: blob.toString('base64'), comment, created_at: createdAt }).execute();
  return { fingerprint, identityName: identity.name, algo, comment, createdAt };
}

/**
 * The identity a public key blob is registered to, and the key parsed for signature checks.
 * Null when unknown (or the stored key fails to parse, which never authenticates).
 */
export async function findBySshKey(db: Kysely<DB>, blob: Buffer): Promise<{ identity: Identity; key: ssh2.ParsedKey } | null> {
  const row = await db.selectFrom('ssh_keys').selectAll().where('fingerprint', '=', sshFingerprint(blob)).executeTakeFirst();
  if (!row) return null;
  const stored = Buffer.from(row.public_key, 'base64');
  // The fingerprint is a hash: compare the blobs themselves before trusting the match.
  if (!stored.equals(blob)) return null;
  const parsed = ssh2.utils.parseKey(`${row.algo} ${row.public_key}`);
  if (parsed instanceof Error) return null;
  const owner = await db.selectFrom('identities').select('name').where('id', '=', row.identity_id).executeTakeFirst();
  const identity = owner ? await findIdentity(db, owner.name) : null;
  return identity ? { identity, key: Array.isArray(parsed) ? parsed[0]! : parsed } : null;
}
