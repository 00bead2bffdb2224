import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { isPortOpen } from '../helpers/net.ts';
import { mariadbCli, mariadbMissing, startMariadb } from '../helpers/mariadb.ts';

test('mariadb with TLS: password auth, TLS only over TCP, clean stop', async (t) => {
  const missing = mariadbMissing();
  if (missing) return t.skip(missing);
  const t0 = Date.now();
  const server = await startMariadb({ ssl: true });
  t.diagnostic(`startMariadb({ ssl: true }) took ${Date.now() - t0} ms`);
  let stopped = false;
  t.after(() => (stopped ? undefined : server.stop()));

  assert.ok(server.caCertPem?.includes('BEGIN CERTIFICATE'));
  assert.ok(fs.existsSync(server.dataDir));
  assert.equal(server.database, 'test');

  // TLS without verifying the certificate (the CLI's 10.11 default), the way the brief's
  // `mariadb -h127.0.0.1 -P<port> -uroot -p<pw> --ssl` connects.
  const r = await mariadbCli(server, "select 1; SHOW STATUS LIKE 'Ssl_cipher'; select database()", { ssl: true });
  assert.equal(r.code, 0, r.stderr);
  const [one, cipherLine, db] = r.stdout.trim().split('\n');
  assert.equal(one, '1');
  const cipher = cipherLine!.split('\t')[1] ?? '';
  assert.ok(cipher.length > 0, `Ssl_cipher empty: ${JSON.stringify(cipherLine)}`);
  assert.equal(db, 'test');
  t.diagnostic(`cipher ${cipher}`);

  // The certificate verifies against the CA the helper reports, for 127.0.0.1.
  const verified = await mariadbCli(server, "SHOW STATUS LIKE 'Ssl_version'", { ssl: true, caFile: server.caCertFile! });
  assert.equal(verified.code, 0, verified.stderr);
  assert.match(verified.stdout, /Ssl_version\tTLSv1\.[23]/);

  // Plaintext TCP is refused (require_secure_transport), so a test relying on the server can be
  // sure TLS was really used; the socket still works, with the password. MariaDB 10.11 reports
  // the refusal as "Access denied" (MySQL says "insecure transport"), although the password is right.
  const plain = await mariadbCli(server, 'select 1', { ssl: 'off' });
  assert.notEqual(plain.code, 0);
  assert.match(plain.stderr, /Access denied|insecure transport/i);
  const viaSocket = await mariadbCli(server, 'select current_user()', { via: 'socket' });
  assert.equal(viaSocket.code, 0, viaSocket.stderr);
  assert.equal(viaSocket.stdout.trim(), 'root@localhost');

  // Real authentication: a wrong password is refused, on TCP and on the socket.
  const bad = await mariadbCli(server, 'select 1', { ssl: true, password: 'nope' });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /Access denied/);
  const badSocket = await mariadbCli(server, 'select 1', { via: 'socket', password: '' });
  assert.notEqual(badSocket.code, 0);

  // root over TCP comes from 127.0.0.1 and has every privilege, with mysql_native_password.
  const who = await mariadbCli(server, "select current_user(), plugin from mysql.user where concat(user,'@',host) = current_user()", { ssl: true });
  assert.equal(who.stdout.trim(), 'root@127.0.0.1\tmysql_native_password');

  const t1 = Date.now();
  await server.stop();
  stopped = true;
  t.diagnostic(`stop() took ${Date.now() - t1} ms`);
  assert.equal(await isPortOpen(server.port), false, 'port still open after stop()');
  assert.equal(fs.existsSync(server.dataDir), false, 'data dir still there after stop()');
  assert.equal(fs.existsSync(server.socket), false, 'socket still there after stop()');
  await server.stop(); // idempotent
});

test('mariadb without TLS accepts plaintext TCP', async (t) => {
  const missing = mariadbMissing();
  if (missing) return t.skip(missing);
  const server = await startMariadb();
  t.after(() => server.stop());
  assert.equal(server.caCertPem, undefined);
  const r = await mariadbCli(server, "SHOW STATUS LIKE 'Ssl_cipher'", { ssl: 'off' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Ssl_cipher\t\n');
});
