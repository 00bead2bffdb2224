import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import pg from 'pg';
import { freePort, isPortOpen, waitForPort } from '../helpers/net.ts';
import { connectionConfig, hasBinary, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';
import { startPgbouncer } from '../helpers/pgbouncer.ts';

test('freePort and waitForPort', async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
  assert.equal(await isPortOpen(port), false);
  await assert.rejects(waitForPort(port, 200), /timed out/);
});

test('postgres with TLS, and pgbouncer in front of it', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres')) return;
  const server = await startPostgres({ ssl: true });
  let serverStopped = false;
  t.after(() => (serverStopped ? undefined : server.stop()));

  assert.ok(server.caCertPem?.includes('BEGIN CERTIFICATE'));
  assert.ok(fs.existsSync(server.dataDir));

  const c = new pg.Client(connectionConfig(server, { ssl: { rejectUnauthorized: false } }));
  await c.connect();
  const { rows } = await c.query('select 1 as one, ssl from pg_stat_ssl where pid = pg_backend_pid()');
  assert.deepEqual(rows, [{ one: 1, ssl: true }]);
  await c.end();

  // The cluster must refuse plaintext TCP (hostssl only), so tests relying on
  // it can be sure TLS was really used.
  const plain = new pg.Client(connectionConfig(server, { ssl: false }));
  await assert.rejects(plain.connect(), /no pg_hba\.conf entry|SSL off/);

  // The certificate verifies against the CA it reports, for 127.0.0.1.
  const verified = new pg.Client(connectionConfig(server));
  await verified.connect();
  await verified.end();

  if (hasBinary('pgbouncer') || process.env.CI === 'true') {
    const bouncer = await startPgbouncer(server, { poolMode: 'transaction', poolSize: 2 });
    let bouncerStopped = false;
    t.after(() => (bouncerStopped ? undefined : bouncer.stop()));
    const viaBouncer = new pg.Client({ ...connectionConfig(server), port: bouncer.port, ssl: false });
    await viaBouncer.connect();
    const r = await viaBouncer.query('select 2 as two, inet_server_port() as port');
    assert.deepEqual(r.rows, [{ two: 2, port: server.port }]);
    await viaBouncer.end();
    const bad = new pg.Client({ ...connectionConfig(server), port: bouncer.port, ssl: false, password: 'nope' });
    await assert.rejects(bad.connect(), /authentication failed/);

    await bouncer.stop();
    bouncerStopped = true;
    assert.equal(await isPortOpen(bouncer.port), false, 'pgbouncer port still open after stop()');
  } else {
    t.diagnostic('pgbouncer not installed: skipped the pgbouncer part');
  }

  await server.stop();
  serverStopped = true;
  assert.equal(await isPortOpen(server.port), false, 'postgres port still open after stop()');
  assert.equal(fs.existsSync(server.dataDir), false, 'data dir not removed');
});
