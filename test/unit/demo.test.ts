import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import pg from 'pg';
import { startDemoTarget, type DemoTarget } from '../../src/demo/pglite.ts';

// PGlite serialises everything onto one backend; a hang there would otherwise only show
// up as the test runner's global timeout with no hint of which step stuck.
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function client(t: DemoTarget): pg.Client {
  // A wrong user/database/password on purpose: the target ignores them.
  return new pg.Client({
    host: t.host,
    port: t.port,
    user: 'someone-else',
    database: 'whatever',
    password: 'not-checked',
    ssl: false,
    connectionTimeoutMillis: 5000,
  });
}

async function withClient<T>(t: DemoTarget, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = client(t);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function customerCount(c: pg.Client): Promise<number> {
  const r = await c.query<{ n: number }>('select count(*)::int as n from customers');
  return r.rows[0].n;
}

test('demo target: seeded, serves pg clients, survives restart', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-demo-'));
  let target: DemoTarget | undefined;
  try {
    target = await startDemoTarget(dir);
    const t = target;
    assert.equal(t.host, '127.0.0.1');
    assert.ok(t.port > 0);
    await assert.rejects(startDemoTarget(dir), /in use by process/);

    let seeded = 0;
    await within(10_000, 'first client', withClient(t, async (c) => {
      seeded = await customerCount(c);
      assert.ok(seeded >= 5, `expected at least 5 customers, got ${seeded}`);
      const who = await c.query('select current_user as u, current_database() as d');
      assert.deepEqual(who.rows[0], { u: t.user, d: t.database });
      const cols = await c.query(
        `select column_name from information_schema.columns where table_name = 'customers' order by ordinal_position`,
      );
      const names = cols.rows.map((r) => r.column_name);
      for (const col of ['id', 'name', 'email', 'api_token', 'plan', 'created_at']) assert.ok(names.includes(col), col);
      const ada = await c.query(`select email, api_token from customers where email = 'ada@example.com'`);
      assert.equal(ada.rowCount, 1);
      assert.match(ada.rows[0].api_token, /^(sk_live_[A-Za-z0-9]{24}|ghp_[A-Za-z0-9]{36})$/);
      const orders = await c.query<{ n: number }>('select count(*)::int as n from orders');
      assert.ok(orders.rows[0].n > 0);
    }));

    // Sequential clients: the first one's Terminate must not leave the shared backend unusable.
    for (let i = 0; i < 2; i++) {
      assert.equal(await within(10_000, `sequential client ${i}`, withClient(t, customerCount)), seeded);
    }

    // Concurrent clients are multiplexed onto the single backend, not refused or queued forever.
    const a = client(t);
    const b = client(t);
    await within(10_000, 'two concurrent connects', Promise.all([a.connect(), b.connect()]));
    try {
      const counts = await within(
        10_000,
        'concurrent queries',
        Promise.all([a, b].map(async (c, i) => {
          let last = 0;
          for (let k = 0; k < 20; k++) {
            const r = await c.query<{ s: number }>('select $1::int + $2::int as s', [k, i]);
            assert.equal(r.rows[0].s, k + i);
            last = await customerCount(c);
          }
          return last;
        })),
      );
      assert.deepEqual(counts, [seeded, seeded]);

      // An open transaction holds everyone else off until it ends: b waits, then proceeds.
      await a.query('begin');
      await a.query(`insert into orders (customer_id, amount_cents, status) values (1, 1, 'test')`);
      let bDone = false;
      const bQuery = b.query('select 1').then(() => {
        bDone = true;
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(bDone, false, 'expected the other connection to wait for the open transaction');
      await a.query('rollback');
      await within(5_000, 'query queued behind a transaction', bQuery);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }

    // The raw handshake the gateway's upstream client will see.
    const handshake = await within(5_000, 'raw handshake', rawHandshake(t.port));
    assert.equal(handshake.sslReply, 'N');
    assert.equal(handshake.firstMessage, 'R');
    assert.equal(handshake.authCode, 0);

    await t.stop();
    await t.stop(); // idempotent
    target = undefined;

    target = await startDemoTarget(dir);
    const again = await within(10_000, 'client after restart', withClient(target, customerCount));
    assert.equal(again, seeded, 'restart must not seed a second time');
    await target.stop();
    target = undefined;
  } finally {
    await target?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** SSLRequest, then a startup packet; returns the SSL answer byte and the first reply. */
function rawHandshake(port: number): Promise<{ sslReply: string; firstMessage: string; authCode: number }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let sslReply: string | undefined;
    sock.on('error', reject);
    sock.on('connect', () => {
      const ssl = Buffer.alloc(8);
      ssl.writeInt32BE(8, 0);
      ssl.writeInt32BE(80877103, 4);
      sock.write(ssl);
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (sslReply === undefined) {
        sslReply = String.fromCharCode(buf[0]);
        buf = buf.subarray(1);
        const params = Buffer.from('user\0nobody\0database\0nowhere\0\0');
        const head = Buffer.alloc(8);
        head.writeInt32BE(8 + params.length, 0);
        head.writeInt32BE(196608, 4);
        sock.write(Buffer.concat([head, params]));
        return;
      }
      if (buf.length >= 9) {
        const result = { sslReply, firstMessage: String.fromCharCode(buf[0]), authCode: buf.readInt32BE(5) };
        sock.destroy();
        resolve(result);
      }
    });
  });
}
