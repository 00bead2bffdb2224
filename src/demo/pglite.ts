// An embedded PostgreSQL (PGlite, served over TCP by pglite-socket) so that `npm start`
// has a target to proxy to on a machine with no database installed.
//
// What the upstream client talking to this target has to cope with (observed with
// pglite 0.5.14 / pglite-socket 0.2.17, see test/unit/demo.test.ts):
//
// - SSLRequest is answered with a single 'N'; the client must continue in plaintext.
//   CancelRequest is swallowed without a reply (there is no backend to signal).
// - Authentication: the startup packet goes straight to PGlite, which answers
//   AuthenticationOk (R, code 0) at once. No password is ever asked for, so
//   `password` below is a placeholder that is never checked.
// - The startup packet's user, database and other parameters (application_name...) are
//   ignored: every connection is `postgres` on database `postgres`.
// - ParameterStatus messages may also arrive after a query's CommandComplete and before
//   ReadyForQuery (PGlite re-reports its GUCs after the first query); legal, but a
//   client that only expects them during startup will trip.
// - BackendKeyData is the same (pid 42) for every connection.
//
// Concurrency: PGlite is a single backend. pglite-socket multiplexes connections onto
// it per protocol message, so:
// - Connections beyond `maxConnections` (default 1!) are not queued but dropped, which a
//   client sees as "Connection terminated unexpectedly". We raise the limit.
// - All connections share ONE session: SET, PREPARE / named statements, temp tables are
//   visible across connections and survive a client's disconnect.
// - While one connection is inside BEGIN...COMMIT, every other connection's messages
//   (including its startup packet) wait, without a timeout, until that transaction
//   ends. A connection that closes mid-transaction is rolled back.
// - Messages are queued one at a time, so an extended-protocol batch that reaches the
//   server in more than one TCP read (e.g. Parse, wait, then Bind/Execute/Sync) can be
//   interleaved with another connection's messages and lose its unnamed statement.
//   A batch written in one go is in practice processed without interleaving.
import { mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface DemoTarget {
  host: '127.0.0.1';
  port: number;
  database: string;
  user: string;
  /** Never checked by the target (it sends AuthenticationOk straight away). */
  password: string;
  stop(): Promise<void>;
}

// Past the default of 1 a second client is dropped rather than queued, which would make
// the demo fail as soon as two agent sessions overlap.
const MAX_CONNECTIONS = 64;

export async function startDemoTarget(dataDir: string): Promise<DemoTarget> {
  const dir = join(dataDir, 'demo-pglite');
  mkdirSync(dir, { recursive: true });
  const unlock = lockDataDir(`${dir}.lock`, dir);
  let db: PGlite | undefined;
  let server: PGLiteSocketServer | undefined;
  try {
    db = await PGlite.create({ dataDir: dir });
    await seed(db);
    server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: MAX_CONNECTIONS });
    await server.start();
  } catch (err) {
    await db?.close().catch(() => {});
    unlock();
    throw err;
  }
  const database = db;
  const running = server;
  // The server exposes the OS-assigned port only through its "host:port" string.
  const port = Number(running.getServerConn().split(':').pop());

  let stopping: Promise<void> | undefined;
  return {
    host: '127.0.0.1',
    port,
    database: 'postgres',
    user: 'postgres',
    password: 'postgres',
    stop() {
      // server.stop() resolves only once every client socket is gone, and any ROLLBACK it
      // issues for an abandoned transaction is already queued on PGlite's mutex, which
      // close() waits for; so closing the database afterwards cannot cut a query short.
      stopping ??= running
        .stop()
        .then(() => database.close())
        .finally(unlock);
      return stopping;
    },
  };
}

// PGlite takes no lock of its own: a second gateway started on the same directory would
// open the same files and both would write to them, corrupting the demo database.
// The lock sits beside the directory, not in it, so that PGlite's initdb finds the
// directory empty on first start.
function lockDataDir(lockPath: string, dir: string): () => void {
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      const owner = Number(readFileSync(lockPath, 'utf8').trim());
      if (owner && isAlive(owner)) {
        throw new Error(`demo database ${dir} is in use by process ${owner}; stop that gateway or use another data directory`);
      }
      // Left behind by a process that died without stop(); PGlite recovers the data itself.
      rmSync(lockPath, { force: true });
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface SeedCustomer {
  name: string;
  email: string;
  plan: 'free' | 'pro' | 'team' | 'enterprise';
  tokenKind: 'stripe' | 'github';
  daysAgo: number;
}

const CUSTOMERS: SeedCustomer[] = [
  { name: 'Ada Lovelace', email: 'ada@example.com', plan: 'enterprise', tokenKind: 'stripe', daysAgo: 412 },
  { name: 'Alan Turing', email: 'alan@example.com', plan: 'pro', tokenKind: 'github', daysAgo: 380 },
  { name: 'Grace Hopper', email: 'grace@example.com', plan: 'team', tokenKind: 'stripe', daysAgo: 301 },
  { name: 'Edsger Dijkstra', email: 'edsger@example.com', plan: 'free', tokenKind: 'github', daysAgo: 254 },
  { name: 'Barbara Liskov', email: 'barbara@example.com', plan: 'enterprise', tokenKind: 'stripe', daysAgo: 199 },
  { name: 'Donald Knuth', email: 'don@example.com', plan: 'pro', tokenKind: 'stripe', daysAgo: 143 },
  { name: 'Margaret Hamilton', email: 'margaret@example.com', plan: 'team', tokenKind: 'github', daysAgo: 97 },
  { name: 'Ken Thompson', email: 'ken@example.com', plan: 'free', tokenKind: 'stripe', daysAgo: 61 },
  { name: 'Radia Perlman', email: 'radia@example.com', plan: 'pro', tokenKind: 'github', daysAgo: 23 },
  { name: 'Linus Torvalds', email: 'linus@example.com', plan: 'free', tokenKind: 'stripe', daysAgo: 4 },
];

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

// Tokens are derived rather than written out so that the repository holds no literal
// that secret scanners (push protection) mistake for a leaked key, while every install
// still gets the same, realistic-looking values for the masking demo.
function fakeToken(seed: string, length: number): string {
  let out = '';
  for (let round = 0; out.length < length; round++) {
    for (const byte of createHash('sha256').update(`gatehouse-demo:${seed}:${round}`).digest()) {
      out += BASE62[byte % 62];
    }
  }
  return out.slice(0, length);
}

function tokenFor(c: SeedCustomer): string {
  return c.tokenKind === 'stripe' ? 'sk_live_' + fakeToken(c.email, 24) : 'ghp_' + fakeToken(c.email, 36);
}

const ORDER_STATUSES = ['paid', 'paid', 'paid', 'refunded', 'pending'] as const;

async function seed(db: PGlite): Promise<void> {
  // One transaction, so a crash mid-seed leaves nothing behind and the next start
  // seeds again instead of finding a half-filled, non-empty table.
  await db.transaction(async (tx) => {
    await tx.exec(`
      CREATE TABLE IF NOT EXISTS customers (
        id serial PRIMARY KEY,
        name text,
        email text,
        api_token text,
        plan text,
        created_at timestamptz DEFAULT now()
      );
      CREATE TABLE IF NOT EXISTS orders (
        id serial PRIMARY KEY,
        customer_id integer REFERENCES customers(id),
        amount_cents integer NOT NULL,
        status text NOT NULL
      );
    `);
    const existing = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM customers');
    if (existing.rows[0].n > 0) return;

    const ids: number[] = [];
    for (const c of CUSTOMERS) {
      const res = await tx.query<{ id: number }>(
        `INSERT INTO customers (name, email, api_token, plan, created_at)
         VALUES ($1, $2, $3, $4, now() - make_interval(days => $5))
         RETURNING id`,
        [c.name, c.email, tokenFor(c), c.plan, c.daysAgo],
      );
      ids.push(res.rows[0].id);
    }

    // Fixed arithmetic instead of Math.random() so every install shows the same numbers.
    for (let i = 0; i < 18; i++) {
      const customerId = ids[(i * 7) % ids.length];
      const amount = 900 + ((i * 4973) % 48000);
      await tx.query('INSERT INTO orders (customer_id, amount_cents, status) VALUES ($1, $2, $3)', [
        customerId,
        amount,
        ORDER_STATUSES[i % ORDER_STATUSES.length],
      ]);
    }
  });
}
