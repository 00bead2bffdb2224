// Offline evidence for one session: its events in full, every interleaved event of other
// sessions as a bare digest (stub), and the signed checkpoint that seals the range. The
// recipient can recompute the chain end to end without learning anything about the
// other sessions.
import type { Store } from '../store/db.ts';
import { bodyDigest, chainHash, eventDigest } from './chain.ts';
import { keyIdOf, publicKeyObject } from './signer.ts';
import { type Checkpoint, GENESIS, type JournalEvent } from './types.ts';
import { checkCheckpoint, type VerifyReport } from './verify.ts';

export const BUNDLE_FORMAT = 'gatehouse-bundle/1';

export interface BundleStub {
  seq: number;
  /** digest of another session's event */
  stub: string;
}

export type BundleEntry = JournalEvent | BundleStub;

export interface Bundle {
  format: typeof BUNDLE_FORMAT;
  keyId: string;
  publicKey: string;
  session: string;
  /** the event just before the first entry, or {0, GENESIS} */
  anchor: { seq: number; hash: string };
  entries: BundleEntry[];
  checkpoints: Checkpoint[];
  /** false when no checkpoint covers the session's last event yet (a live session) */
  complete: boolean;
}

export class UnknownSessionError extends Error {
  override name = 'UnknownSessionError';
  constructor(readonly sessionId: string) {
    super(`no journal events for session "${sessionId}"`);
  }
}

const PAGE = 5000;

export async function exportSessionBundle(store: Store, sessionId: string, publicKeyPem: string, keyId: string): Promise<Bundle> {
  const db = store.db;
  const span = await db
    .selectFrom('events')
    .select((eb) => [eb.fn.min('seq').as('first'), eb.fn.max('seq').as('last')])
    .where('session_id', '=', sessionId)
    .executeTakeFirst();
  if (!span || span.first === null || span.first === undefined) throw new UnknownSessionError(sessionId);
  const first = Number(span.first);
  const last = Number(span.last);

  const toCp = (r: { size: number; root: string; ts: string; key_id: string; signature: string }): Checkpoint => ({
    size: Number(r.size),
    root: r.root,
    ts: r.ts,
    keyId: r.key_id,
    signature: r.signature,
  });
  let seal = await db.selectFrom('checkpoints').selectAll().where('size', '>=', last).orderBy('size', 'asc').limit(1).executeTakeFirst();
  const complete = seal !== undefined;
  // A live session: seal what is signed so far; the caller can checkpoint first to get more.
  seal ??= await db.selectFrom('checkpoints').selectAll().orderBy('size', 'desc').limit(1).executeTakeFirst();
  const end = seal ? Number(seal.size) : 0;

  let anchor = { seq: 0, hash: GENESIS };
  if (first > 1) {
    const row = await db.selectFrom('events').select('hash').where('seq', '=', first - 1).executeTakeFirst();
    if (!row) throw new Error(`journal is damaged: event ${first - 1} is missing; run a full verify`);
    anchor = { seq: first - 1, hash: row.hash };
  }

  const entries: BundleEntry[] = [];
  const checkpoints: Checkpoint[] = [];
  if (end >= first) {
    for (let from = first; from <= end; ) {
      const rows = await db
        .selectFrom('events')
        .selectAll()
        .where('seq', '>=', from)
        .where('seq', '<=', end)
        .orderBy('seq', 'asc')
        .limit(PAGE)
        .execute();
      if (rows.length === 0) break;
      for (const r of rows) {
        if (r.session_id === sessionId) entries.push({ ...(JSON.parse(r.body) as JournalEvent), prev: r.prev, hash: r.hash });
        else entries.push({ seq: Number(r.seq), stub: bodyDigest(r.body) });
      }
      from = Number(rows[rows.length - 1].seq) + 1;
    }
    const cps = await db.selectFrom('checkpoints').selectAll().where('size', '>=', first).where('size', '<=', end).orderBy('size', 'asc').execute();
    checkpoints.push(...cps.map(toCp));
  }
  return { format: BUNDLE_FORMAT, keyId, publicKey: publicKeyPem, session: sessionId, anchor, entries, checkpoints, complete };
}

// ---- verification: the input is untrusted, so every field is checked before use ----

const HEX64 = /^[0-9a-f]{64}$/;
const EVENT_KEYS = new Set(['seq', 'ts', 'session', 'type', 'identity', 'connection', 'data', 'prev', 'hash']);

class BundleProblem extends Error {
  constructor(readonly seq: number, reason: string) {
    super(reason);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export function verifyBundle(bundle: unknown, trustedPublicKeyPem?: string): VerifyReport {
  const counts = { events: 0, checkpoints: 0 };
  try {
    verifyInto(bundle, trustedPublicKeyPem, counts);
    return { ok: true, ...counts };
  } catch (err) {
    const seq = err instanceof BundleProblem ? err.seq : 0;
    const reason = err instanceof BundleProblem ? err.message : `malformed bundle: ${(err as Error)?.message ?? String(err)}`;
    return { ok: false, ...counts, firstBad: { seq, reason } };
  }
}

function verifyInto(b: unknown, trustedPem: string | undefined, counts: { events: number; checkpoints: number }): void {
  const fail = (seq: number, reason: string): never => {
    throw new BundleProblem(seq, reason);
  };
  if (!isObject(b)) return fail(0, 'malformed bundle: not an object');
  if (b.format !== BUNDLE_FORMAT) return fail(0, `malformed bundle: format is not ${BUNDLE_FORMAT}`);
  if (typeof b.session !== 'string' || typeof b.publicKey !== 'string' || typeof b.keyId !== 'string') {
    return fail(0, 'malformed bundle: session, publicKey and keyId must be strings');
  }
  if (!Array.isArray(b.entries) || !Array.isArray(b.checkpoints) || typeof b.complete !== 'boolean') {
    return fail(0, 'malformed bundle: entries, checkpoints or complete missing');
  }
  const anchor = b.anchor;
  if (!isObject(anchor) || !isSeq(anchor.seq) || typeof anchor.hash !== 'string' || !HEX64.test(anchor.hash)) {
    return fail(0, 'malformed bundle: anchor must be {seq, hash}');
  }

  let keyPem: string;
  try {
    const key = publicKeyObject(b.publicKey);
    if (key.asymmetricKeyType !== 'ed25519') return fail(0, 'bundle public key is not an Ed25519 key');
    keyPem = b.publicKey;
  } catch (err) {
    if (err instanceof BundleProblem) throw err;
    return fail(0, 'malformed bundle: publicKey is not a PEM public key');
  }
  const bundleKeyId = keyIdOf(keyPem);
  if (trustedPem !== undefined) {
    // Compared as key material, not PEM text, so line endings cannot cause a false alarm.
    let trustedId: string;
    try {
      trustedId = keyIdOf(publicKeyObject(trustedPem));
    } catch {
      return fail(0, 'the trusted public key is not a valid PEM public key');
    }
    if (trustedId !== bundleKeyId) return fail(0, `bundle is signed by key ${bundleKeyId}, not by the trusted key ${trustedId}`);
  }
  if (b.keyId !== bundleKeyId) return fail(0, `bundle keyId ${b.keyId} does not match its public key (${bundleKeyId})`);

  // Recompute the chain, remembering each hash only where a checkpoint needs it.
  const cps = b.checkpoints as unknown[];
  const wanted = new Map<number, string>();
  for (const c of cps) {
    if (!isObject(c) || !isSeq(c.size)) return fail(0, 'malformed bundle: checkpoint without a valid size');
    wanted.set(c.size, '');
  }
  let seq = anchor.seq;
  let prev = anchor.hash;
  for (const entry of b.entries as unknown[]) {
    seq++;
    if (!isObject(entry)) return fail(seq, `entry for event ${seq} is not an object`);
    if (entry.seq !== seq) return fail(seq, `event ${seq} is missing (entry has seq ${String(entry.seq)})`);
    let hash: string;
    if ('stub' in entry) {
      if (typeof entry.stub !== 'string' || !HEX64.test(entry.stub) || Object.keys(entry).length !== 2) {
        return fail(seq, `stub for event ${seq} is malformed`);
      }
      hash = chainHash(prev, entry.stub);
    } else {
      checkEventShape(entry, seq, b.session, fail);
      if (entry.prev !== prev) return fail(seq, `event ${seq} was altered: prev does not link to event ${seq - 1}`);
      let digest: string;
      try {
        digest = eventDigest(entry as unknown as JournalEvent);
      } catch (err) {
        return fail(seq, `event ${seq} cannot be encoded: ${(err as Error).message}`);
      }
      hash = chainHash(prev, digest);
      if (entry.hash !== hash) return fail(seq, `event ${seq} was altered: hash mismatch`);
      counts.events++;
    }
    if (wanted.has(seq)) wanted.set(seq, hash);
    prev = hash;
  }
  if (cps.length === 0) return fail(anchor.seq + 1, 'bundle has no signed checkpoint: nothing in it can be trusted');

  let lastSize = anchor.seq;
  for (const c of cps as Record<string, unknown>[]) {
    const size = c.size as number;
    if (size <= anchor.seq) return fail(size, `checkpoint at ${size} lies before the bundle's first entry`);
    if (size <= lastSize) return fail(size, 'malformed bundle: checkpoints must be in increasing order');
    if (size > seq) return fail(seq + 1, `event ${seq + 1} is missing (checkpoint at ${size} covers it)`);
    if (typeof c.root !== 'string' || typeof c.signature !== 'string' || typeof c.ts !== 'string' || typeof c.keyId !== 'string') {
      return fail(size, `checkpoint at ${size} is malformed`);
    }
    const cp: Checkpoint = { size, root: c.root, ts: c.ts, keyId: c.keyId, signature: c.signature };
    const problem = checkCheckpoint(cp, wanted.get(size)!, keyPem);
    if (problem) return fail(size, problem);
    counts.checkpoints++;
    lastSize = size;
  }
  // Entries past the last checkpoint would be unsigned, so anyone could have appended them.
  if (lastSize !== seq) return fail(lastSize + 1, `events ${lastSize + 1}..${seq} are not covered by a signed checkpoint`);
}

function checkEventShape(e: Record<string, unknown>, seq: number, session: string, fail: (seq: number, reason: string) => never): void {
  for (const k of Object.keys(e)) if (!EVENT_KEYS.has(k)) fail(seq, `event ${seq} has an unexpected field "${k}"`);
  if (typeof e.ts !== 'string' || typeof e.type !== 'string' || typeof e.connection !== 'string') fail(seq, `event ${seq} is malformed`);
  if (!isObject(e.identity) || !isObject(e.data)) fail(seq, `event ${seq} is malformed`);
  if (typeof e.prev !== 'string' || typeof e.hash !== 'string') fail(seq, `event ${seq} is malformed`);
  // Full events must be the bundle's own session; others travel only as stubs.
  if (e.session !== session) fail(seq, `event ${seq} belongs to another session`);
}
