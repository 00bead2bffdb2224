// Offline verification of a whole store: walks the chain page by page (memory stays flat
// for millions of events) and checks every signed checkpoint against it.
import type { Store } from '../store/db.ts';
import { bodyDigest, chainHash } from './chain.ts';
import { verifyCheckpointSignature } from './signer.ts';
import { type Checkpoint, GENESIS } from './types.ts';

export interface VerifyReport {
  ok: boolean;
  /** events checked */
  events: number;
  /** checkpoints whose root and signature were checked */
  checkpoints: number;
  /** the problem with the lowest seq */
  firstBad?: { seq: number; reason: string };
}

const PAGE = 5000;

export async function verifyStore(store: Store, publicKeyPem: string): Promise<VerifyReport> {
  // Checkpoints are one per ~1000 events, so holding them all is cheap next to the events.
  const cps: Checkpoint[] = (
    await store.db.selectFrom('checkpoints').selectAll().orderBy('size', 'asc').execute()
  ).map((r) => ({ size: Number(r.size), root: r.root, ts: r.ts, keyId: r.key_id, signature: r.signature }));
  let cpi = 0;
  let events = 0;
  let expected = 1;
  let prevHash = GENESIS;
  const bad = (seq: number, reason: string): VerifyReport => ({ ok: false, events, checkpoints: cpi, firstBad: { seq, reason } });

  for (;;) {
    const rows = await store.db
      .selectFrom('events')
      .selectAll()
      .where('seq', '>=', expected)
      .orderBy('seq', 'asc')
      .limit(PAGE)
      .execute();
    for (const row of rows) {
      const seq = Number(row.seq);
      // A checkpoint sitting in a gap names the gap, which is the lower seq anyway.
      if (seq !== expected) return bad(expected, `event ${expected} is missing`);
      const problem = checkRow(row, seq, prevHash);
      if (problem) return bad(seq, problem);
      prevHash = row.hash;
      events++;
      expected++;
      while (cpi < cps.length && cps[cpi].size <= seq) {
        const cp = cps[cpi];
        if (cp.size !== seq) return bad(cp.size, `checkpoint at ${cp.size} does not name a valid event`);
        const cpProblem = checkCheckpoint(cp, row.hash, publicKeyPem);
        if (cpProblem) return bad(seq, cpProblem);
        cpi++;
      }
    }
    if (rows.length < PAGE) break;
  }
  if (cpi < cps.length) {
    const cp = cps[cpi];
    // Events a signed checkpoint vouched for are gone: the tail was cut.
    return bad(expected, `event ${expected} is missing (checkpoint at ${cp.size} covers it)`);
  }
  return { ok: true, events, checkpoints: cpi };
}

function checkRow(
  row: { ts: string; session_id: string; type: string; body: string; prev: string; hash: string },
  seq: number,
  prevHash: string,
): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(row.body);
  } catch {
    return `event ${seq} was altered: body is not valid JSON`;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return `event ${seq} was altered: body is not an object`;
  const b = body as Record<string, unknown>;
  // The indexed columns are what searches use; they must not disagree with the hashed body.
  if (b.seq !== seq) return `event ${seq} was altered: body seq is ${String(b.seq)}`;
  if (b.ts !== row.ts) return `event ${seq} was altered: ts column does not match the body`;
  if (b.session !== row.session_id) return `event ${seq} was altered: session_id column does not match the body`;
  if (b.type !== row.type) return `event ${seq} was altered: type column does not match the body`;
  if (row.prev !== prevHash) return `event ${seq} was altered: prev does not link to event ${seq - 1}`;
  // The stored bytes are hashed as they are, so even a change that keeps the JSON
  // equivalent (whitespace, key order) is caught.
  if (chainHash(prevHash, bodyDigest(row.body)) !== row.hash) return `event ${seq} was altered: hash mismatch`;
  return undefined;
}

export function checkCheckpoint(cp: Checkpoint, hashAtSize: string, publicKeyPem: string): string | undefined {
  if (cp.root !== hashAtSize) return `checkpoint at ${cp.size} does not match the chain: root differs from event ${cp.size}'s hash`;
  if (!verifyCheckpointSignature(publicKeyPem, cp)) return `checkpoint at ${cp.size} has an invalid signature (forged, or signed by another key)`;
  return undefined;
}
