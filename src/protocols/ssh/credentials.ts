// How an SSH client proves it holds a Gatehouse key: the password (or the keyboard-interactive
// answer) is `NAME.KEY`, as in GATEHOUSE_KEY. The SSH user name is the connection, not the key.
import { findIdentity, keyMatches, type Identity } from '../../identity/keys.ts';
import type { Store } from '../../store/db.ts';

/** Longer answers are refused before any work: keys are ~50 characters, names at most 63. */
const MAX_SECRET = 512;
/** Stands in for an unknown identity so that the comparison costs the same. */
const DUMMY: Pick<Identity, 'keyHash'> = { keyHash: '0'.repeat(64) };

export type KeyCheck = { ok: true; identity: Identity } | { ok: false; why: string };

export async function checkKey(store: Store, presented: string): Promise<KeyCheck> {
  const secret = presented.trim();
  if (secret.length === 0 || secret.length > MAX_SECRET) return { ok: false, why: 'no key given' };
  // A key is base64url (no '.'), a name may contain '.': split at the last one.
  const dot = secret.lastIndexOf('.');
  if (dot <= 0) {
    keyMatches(DUMMY as Identity, secret);
    return { ok: false, why: 'the password must be NAME.KEY (the key name, a dot, the key)' };
  }
  const name = secret.slice(0, dot);
  const key = secret.slice(dot + 1);
  const identity = await findIdentity(store.db, name);
  const ok = keyMatches((identity ?? DUMMY) as Identity, key);
  if (!ok || !identity) return { ok: false, why: 'wrong key' };
  return { ok: true, identity };
}
