/**
 * Authentication modes on both sides of the gateway: cleartext keys over TLS from the
 * client, and verify-full TLS, MD5 and cleartext passwords towards the target.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { generate } from 'selfsigned';
import { connectionConfig, skipUnlessAvailable, startPostgres, type PgServer } from '../helpers/postgres.ts';
import { startGateway, type GatewayUnderTest } from '../helpers/gateway.ts';

const run = promisify(execFile);
let pgs: PgServer | undefined;
let gw: GatewayUnderTest | undefined;
let key = '';

function conn(name: string, over: Record<string, unknown>) {
  return { name, type: 'postgres', host: '127.0.0.1', port: pgs!.port, database: 'postgres', user: 'postgres', password: pgs!.password, tls: 'require', ...over };
}

before(async () => {
  if (skipUnlessAvailable({ skip() {} }, 'initdb', 'postgres', 'psql')) return;
  pgs = await startPostgres({ ssl: true });
  // Roles whose logins the target checks with md5 and with cleartext passwords.
  const admin = new pg.Client(connectionConfig(pgs, { ssl: { rejectUnauthorized: false } }));
  await admin.connect();
  await admin.query(`set password_encryption = 'md5'`);
  await admin.query(`create role md5user login password 'md5-secret'`);
  await admin.query(`reset password_encryption`);
  await admin.query(`create role pwuser login password 'pw-secret'`);
  const hba = path.join(pgs.dataDir, 'pg_hba.conf');
  const rules = 'hostssl all md5user 127.0.0.1/32 md5\nhostssl all pwuser 127.0.0.1/32 password\n';
  fs.writeFileSync(hba, rules + fs.readFileSync(hba, 'utf8'));
  await admin.query('select pg_reload_conf()');
  await admin.end();
  const caFile = path.join(pgs.dataDir, '..', 'gh-ca.pem');
  fs.writeFileSync(caFile, pgs.caCertPem!);
  const wrongCa = path.join(pgs.dataDir, '..', 'gh-wrong-ca.pem');
  // Any other self-signed certificate is not the target's CA.
  fs.writeFileSync(wrongCa, (await generate([{ name: 'commonName', value: 'not-the-ca' }], { keyType: 'ec', curve: 'P-256' } as any)).cert);
  gw = await startGateway({
    target: pgs,
    extra: {
      postgres: { clientAuth: 'password' },
      connections: [
        conn('main', {}),
        conn('verified', { tls: 'verify-full', ca: `file:${caFile}` }),
        conn('wrongca', { tls: 'verify-full', ca: `file:${wrongCa}` }),
        conn('md5', { user: 'md5user', password: 'md5-secret' }),
        conn('cleartext', { user: 'pwuser', password: 'pw-secret' }),
      ],
    },
  });
  key = await gw.createKey('auth-agent', { connections: '*' });
});

after(async () => {
  await gw?.stop();
  await pgs?.stop();
});

async function psql(db: string, sql: string, extra = '') {
  return run('psql', [gw!.dsn('auth-agent', key, db, extra), '-Atc', sql], { timeout: 20_000 });
}

test('cleartext key over TLS (postgres.clientAuth: password) logs in; a wrong key does not', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const { stdout } = await psql('main', 'select current_user');
  assert.equal(stdout.trim(), 'postgres');
  const c = new pg.Client({ ...gw.pgConfig('auth-agent', 'gh_wrong'), database: 'main' });
  await assert.rejects(c.connect(), (e: any) => e.code === '28P01');
});

test('cleartext key is refused without TLS even where plaintext is otherwise off', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  await assert.rejects(psql('main', 'select 1', 'sslmode=disable'), (e: any) => /only TLS connections|requires TLS/.test(e.stderr));
});

test('upstream verify-full checks the target certificate against the configured CA', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  const { stdout } = await psql('verified', 'select ssl from pg_stat_ssl where pid = pg_backend_pid()');
  assert.equal(stdout.trim(), 't');
  await assert.rejects(psql('wrongca', 'select 1'), (e: any) => /connection "wrongca": TLS to 127\.0\.0\.1:\d+ failed/.test(e.stderr) && !e.stderr.includes(pgs!.password));
});

test('upstream md5 and cleartext password authentication with held credentials', async (t) => {
  if (!gw) return t.skip('postgres binaries not installed');
  assert.equal((await psql('md5', 'select current_user')).stdout.trim(), 'md5user');
  assert.equal((await psql('cleartext', 'select current_user')).stdout.trim(), 'pwuser');
  // The held passwords never reach the client or the journal.
  const list = JSON.parse((await gw.cli(['sessions', 'list', '--json'])).stdout) as { id: string }[];
  for (const s of list) {
    const show = (await gw.cli(['sessions', 'show', s.id, '--json'])).stdout;
    assert.ok(!show.includes('md5-secret') && !show.includes('pw-secret') && !show.includes(pgs!.password));
  }
});
