// The hash chain. Each link hashes the previous hash with the event's *digest* rather than
// its body, so a bundle can carry another session's interleaved events as bare digests
// (stubs) and still recompute the chain without revealing what those events said.
import * as crypto from 'node:crypto';
import { canonical } from './canonical.ts';
import type { JournalEvent } from './types.ts';

export type EventBodyFields = Omit<JournalEvent, 'prev' | 'hash'>;

// crypto.hash (Node >= 20.12) skips the Hash object; it matters at two hashes per event.
const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

export const sha256hex: (data: string) => string = oneShot
  ? (data) => oneShot('sha256', data, 'hex')
  : (data) => crypto.createHash('sha256').update(data, 'utf8').digest('hex');

/** canonical(event without prev and hash): the exact text stored in `events.body`. */
export function eventBody(e: EventBodyFields | JournalEvent): string {
  // Listing the fields (instead of spreading) keeps stray properties of the caller's
  // object out of the hashed body and avoids a copy on the hot path.
  return canonical({
    seq: e.seq,
    ts: e.ts,
    session: e.session,
    type: e.type,
    identity: e.identity,
    connection: e.connection,
    data: e.data,
  });
}

export function eventDigest(e: EventBodyFields | JournalEvent): string {
  return sha256hex(eventBody(e));
}

/** Digest of an already-canonical body, e.g. a row read back from the store. */
export function bodyDigest(body: string): string {
  return sha256hex(body);
}

export function chainHash(prev: string, digest: string): string {
  return sha256hex(prev + digest);
}
