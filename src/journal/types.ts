// Journal events: protocol-neutral, canonical JSON, hash-chained.
export type EventType =
  | 'session.open'
  | 'session.close'
  | 'command'
  | 'verdict'
  | 'review.requested'
  | 'review.decided'
  | 'result'
  | 'output'
  | 'access';

export interface IdentityRef {
  id: string;
  kind: 'agent' | 'human';
  name: string;
  onBehalfOf?: string;
}

/** What callers hand to the journal; seq, ts, prev and hash are assigned by it. */
export interface NewEvent {
  session: string;
  type: EventType;
  identity: IdentityRef;
  connection: string;
  data: Record<string, unknown>;
}

export interface JournalEvent extends NewEvent {
  seq: number;
  ts: string; // ISO-8601 UTC with milliseconds
  prev: string; // hex sha256 of the previous event's hash; GENESIS for seq 1
  hash: string; // hex sha256(prev || sha256(canonical(event without prev and hash)))
}

export interface Checkpoint {
  size: number;
  root: string;
  ts: string;
  keyId: string;
  signature: string;
}

/** 64 zeros: the `prev` of the first event. */
export const GENESIS = '0'.repeat(64);
