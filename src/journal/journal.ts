// The journal writer: assigns each event its place in the hash chain synchronously, then
// commits events in groups (one transaction per event-loop turn) so that many busy
// sessions cost one store round trip per turn instead of one per statement.
import { CompiledQuery } from 'kysely';
import type { Store } from '../store/db.ts';
import { chainHash, eventBody, sha256hex } from './chain.ts';
import type { Signer } from './signer.ts';
import { type Checkpoint, GENESIS, type JournalEvent, type NewEvent } from './types.ts';

export interface JournalOptions {
  /** sign a checkpoint after this many committed events (default 1000) */
  checkpointEvery?: number;
  /** and at least this often while events keep arriving (default 10000 ms) */
  checkpointIntervalMs?: number;
}

/** An event could not be committed; the caller's command must not proceed unrecorded. */
export class JournalWriteError extends Error {
  override name = 'JournalWriteError';
}

// 400 rows x 7 columns stays far below SQLite's and PostgreSQL's bound-parameter limits
// while keeping statement count per batch low.
const ROWS_PER_INSERT = 400;
const COLUMNS = 7;

interface Waiter {
  event: JournalEvent;
  resolve(e: JournalEvent): void;
  reject(err: Error): void;
}

class Batch {
  readonly events: JournalEvent[] = [];
  readonly bodies: string[] = [];
  readonly waiters: Waiter[] = [];
  records = 0;
  settle!: () => void;
  /** resolves once the batch is committed or rejected; never rejects */
  readonly settled = new Promise<void>((r) => (this.settle = r));
}

export class Journal {
  onError: (err: Error) => void = (err) => console.error(`gatehouse journal: ${err.message}`);

  // Assigned head: includes events not yet committed.
  private seq: number;
  private hash: string;
  private committedSeq: number;
  private committedHash: string;
  private lastCheckpoint: number;
  private open_: Batch | null = null;
  private writing: Batch | null = null;
  private scheduled = false;
  // After a failed write the store's head is not trusted until re-read (a commit whose
  // acknowledgement was lost may still have landed).
  private resync = false;
  private cpChain: Promise<unknown> = Promise.resolve();
  private cpBusy = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly every: number;
  private readonly insertSql = new Map<number, string>();

  private constructor(
    private readonly store: Store,
    private readonly signer: Signer,
    head: { seq: number; hash: string },
    lastCheckpoint: number,
    opts: JournalOptions,
  ) {
    this.seq = this.committedSeq = head.seq;
    this.hash = this.committedHash = head.hash;
    this.lastCheckpoint = lastCheckpoint;
    this.every = Math.max(1, opts.checkpointEvery ?? 1000);
    const interval = opts.checkpointIntervalMs ?? 10_000;
    if (interval > 0) {
      this.timer = setInterval(() => this.autoCheckpoint(), interval);
      this.timer.unref();
    }
  }

  static async open(store: Store, signer: Signer, opts: JournalOptions = {}): Promise<Journal> {
    const head = await readHead(store);
    const cp = await store.db.selectFrom('checkpoints').select('size').orderBy('size', 'desc').limit(1).executeTakeFirst();
    return new Journal(store, signer, head, cp ? Number(cp.size) : 0, opts);
  }

  /** The last assigned event (possibly not yet committed). */
  get head(): { seq: number; hash: string } {
    return { seq: this.seq, hash: this.hash };
  }

  /** Resolves once the event is committed; rejects with JournalWriteError if it never will be. */
  append(e: NewEvent): Promise<JournalEvent> {
    return new Promise<JournalEvent>((resolve, reject) => {
      const event = this.enqueue(e);
      this.open_!.waiters.push({ event, resolve, reject });
    });
  }

  /** Fire-and-forget append for events nobody waits on (results); failures go to onError. */
  record(e: NewEvent): JournalEvent {
    const event = this.enqueue(e);
    this.open_!.records++;
    return event;
  }

  /** Waits until every event appended so far is committed or rejected. Never rejects. */
  flush(): Promise<void> {
    const last = this.open_ ?? this.writing;
    return last ? last.settled : Promise.resolve();
  }

  /** Signs the committed head once everything appended so far has settled; null if nothing new. */
  async checkpoint(): Promise<Checkpoint | null> {
    await this.flush();
    return this.writeCheckpoint();
  }

  /**
   * Stops the timer, commits and signs everything so far. The journal stays usable: a
   * straggler event during shutdown (a session closing late) is still written rather than
   * thrown back at a socket handler, and is signed by the next checkpoint, at the latest
   * on the next start.
   */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    await this.checkpoint();
  }

  private enqueue(e: NewEvent): JournalEvent {
    const event: JournalEvent = {
      seq: this.seq + 1,
      ts: isoNow(),
      session: e.session,
      type: e.type,
      identity: e.identity,
      connection: e.connection,
      data: e.data,
      prev: this.hash,
      hash: '',
    };
    // Computed before the head moves, so an unencodable event leaves the chain untouched.
    const body = eventBody(event);
    event.hash = chainHash(event.prev, sha256hex(body));
    this.seq = event.seq;
    this.hash = event.hash;
    const batch = (this.open_ ??= new Batch());
    batch.events.push(event);
    batch.bodies.push(body);
    if (!this.scheduled && !this.writing) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
    return event;
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    if (this.writing || !this.open_) return;
    const batch = this.open_;
    this.open_ = null;
    this.writing = batch;
    this.write(batch).then(
      () => this.committed(batch),
      (err) => this.failed(batch, err),
    );
  };

  private async write(batch: Batch): Promise<void> {
    if (this.resync) await this.resyncHead();
    const n = batch.events.length;
    if (this.sqliteInsert === undefined) this.sqliteInsert = this.prepareSqlite();
    if (this.sqliteInsert) {
      // Synchronous and prepared once: the batch commits in one transaction without
      // kysely compiling or the driver re-preparing anything.
      this.sqliteInsert(batch);
      return;
    }
    if (n <= ROWS_PER_INSERT) {
      await this.store.db.executeQuery(this.insertQuery(batch, 0, n));
      return;
    }
    await this.store.db.transaction().execute(async (trx) => {
      for (let i = 0; i < n; i += ROWS_PER_INSERT) {
        await trx.executeQuery(this.insertQuery(batch, i, Math.min(n, i + ROWS_PER_INSERT)));
      }
    });
  }

  private async resyncHead(): Promise<void> {
    const head = await readHead(this.store);
    this.resync = false;
    if (head.seq !== this.committedSeq || head.hash !== this.committedHash) {
      this.committedSeq = head.seq;
      this.committedHash = head.hash;
      throw new Error(`the store's chain head moved to event ${head.seq} while the journal was failing`);
    }
  }

  private committed(batch: Batch): void {
    const last = batch.events[batch.events.length - 1];
    this.committedSeq = last.seq;
    this.committedHash = last.hash;
    this.writing = null;
    for (const w of batch.waiters) w.resolve(w.event);
    batch.settle();
    if (this.open_ && !this.scheduled) {
      // A turn later rather than now, so appends made by the callers just resolved join it.
      this.scheduled = true;
      setImmediate(this.drain);
    }
    if (this.committedSeq - this.lastCheckpoint >= this.every) this.autoCheckpoint();
  }

  private failed(batch: Batch, cause: unknown): void {
    // Everything queued behind the failed batch is chained off it, so it goes too; the head
    // returns to the last committed event and the stored chain stays unbroken.
    const victims = this.open_ ? [batch, this.open_] : [batch];
    this.open_ = null;
    this.writing = null;
    this.seq = this.committedSeq;
    this.hash = this.committedHash;
    this.resync = true;
    const first = batch.events[0].seq;
    const last = victims[victims.length - 1].events.at(-1)!.seq;
    const reason = cause instanceof Error ? cause.message : String(cause);
    const err = new JournalWriteError(
      `journal store unavailable: events ${first}..${last} were not recorded (${reason})`,
      { cause },
    );
    let unwatched = 0;
    for (const b of victims) {
      for (const w of b.waiters) w.reject(err);
      unwatched += b.records;
      b.settle();
    }
    if (unwatched > 0) this.onError(err);
  }

  /** undefined until first use; null when the store is not SQLite */
  private sqliteInsert: ((batch: Batch) => void) | null | undefined;

  private prepareSqlite(): ((batch: Batch) => void) | null {
    const raw = this.store.sqlite;
    if (!raw) return null;
    const stmt = raw.prepare('INSERT INTO events (seq, ts, session_id, type, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?)');
    return raw.transaction((batch: Batch) => {
      const { events, bodies } = batch;
      for (let i = 0; i < events.length; i++) {
        const e = events[i];
        stmt.run(e.seq, e.ts, e.session, e.type, bodies[i], e.prev, e.hash);
      }
    });
  }

  private insertQuery(batch: Batch, from: number, to: number): CompiledQuery {
    const rows = to - from;
    let text = this.insertSql.get(rows);
    if (text === undefined) {
      text = insertText(rows, this.store.kind);
      this.insertSql.set(rows, text);
    }
    const params: unknown[] = new Array(rows * COLUMNS);
    let p = 0;
    for (let i = from; i < to; i++) {
      const e = batch.events[i];
      params[p++] = e.seq;
      params[p++] = e.ts;
      params[p++] = e.session;
      params[p++] = e.type;
      params[p++] = batch.bodies[i];
      params[p++] = e.prev;
      params[p++] = e.hash;
    }
    return CompiledQuery.raw(text, params);
  }

  private autoCheckpoint(): void {
    if (this.cpBusy || this.committedSeq <= this.lastCheckpoint) return;
    this.cpBusy = true;
    this.writeCheckpoint()
      .catch((err) => this.onError(err))
      .finally(() => (this.cpBusy = false));
  }

  // Serialized, and signs only the committed head: a checkpoint must never vouch for an
  // event that a failed batch could still take back.
  private writeCheckpoint(): Promise<Checkpoint | null> {
    const run = async (): Promise<Checkpoint | null> => {
      const size = this.committedSeq;
      const root = this.committedHash;
      if (size <= this.lastCheckpoint) return null;
      const cp: Checkpoint = { size, root, ts: new Date().toISOString(), keyId: this.signer.keyId, signature: this.signer.sign(size, root) };
      try {
        await this.store.db
          .insertInto('checkpoints')
          .values({ size, root, ts: cp.ts, key_id: cp.keyId, signature: cp.signature })
          .execute();
      } catch (cause) {
        const reason = cause instanceof Error ? cause.message : String(cause);
        throw new JournalWriteError(`journal store unavailable: checkpoint at ${size} was not written (${reason})`, { cause });
      }
      this.lastCheckpoint = size;
      return cp;
    };
    const p = this.cpChain.then(run, run);
    this.cpChain = p.catch(() => undefined);
    return p;
  }
}

// Formatting a Date costs about as much as hashing the event; under load many events
// share a millisecond, so the string is reused until the clock moves.
let lastMs = -1;
let lastIso = '';
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

async function readHead(store: Store): Promise<{ seq: number; hash: string }> {
  const row = await store.db.selectFrom('events').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
  return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS };
}

function insertText(rows: number, kind: Store['kind']): string {
  const tuples: string[] = [];
  let n = 0;
  for (let r = 0; r < rows; r++) {
    const ph: string[] = [];
    for (let c = 0; c < COLUMNS; c++) ph.push(kind === 'postgres' ? `$${++n}` : '?');
    tuples.push(`(${ph.join(',')})`);
  }
  return `insert into "events" ("seq","ts","session_id","type","body","prev","hash") values ${tuples.join(',')}`;
}
