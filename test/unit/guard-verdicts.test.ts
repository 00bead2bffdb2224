// Evasions: tricky statements through the real Guard (libpg-query + policy), each with the
// verdict a reasonable production policy must reach.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Guard } from '../../src/guard/guard.ts';
import { loadPostgresParser } from '../../src/guard/sql-postgres.ts';
import { loadPolicy } from '../../src/guard/policy-schema.ts';
import { PreparedStatements } from '../../src/guard/prepared.ts';
import type { Identity } from '../../src/identity/keys.ts';

const policy = loadPolicy(
  {
    default: { action: 'allow' },
    rules: [
      { name: 'no-admin', match: { classes: ['admin'] }, action: 'block' },
      { name: 'no-procedural', match: { classes: ['procedural'] }, action: 'block' },
      { name: 'no-dcl', match: { classes: ['dcl'] }, action: 'block' },
      { name: 'no-destroy', match: { types: ['DROP_TABLE', 'DROP_SCHEMA', 'DROP_DATABASE', 'TRUNCATE'] }, action: 'block' },
      { name: 'review-changes', match: { classes: ['write', 'ddl', 'copy'] }, action: 'review', approvers: ['dba'] },
    ],
  },
  '/',
);

const agent: Identity = { id: 'i1', name: 'agent', kind: 'agent', groups: [], connections: ['*'], createdAt: '', expiresAt: null, revokedAt: null, scramVerifier: '', keyHash: '', mysqlNative: null, mysqlSha2: null };

// [statement, expected action, expected rule (prefix)]
const cases: [string, 'allow' | 'block' | 'review', string][] = [
  ['SELECT 1', 'allow', 'default'],
  ['WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'review', 'review-changes'],
  ['WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x', 'review', 'review-changes'],
  ['EXPLAIN DELETE FROM t', 'allow', 'default'],
  ['EXPLAIN ANALYZE DELETE FROM t', 'review', 'review-changes'],
  ['EXPLAIN (ANALYZE, COSTS OFF) UPDATE t SET a = 1', 'review', 'review-changes'],
  ['EXPLAIN ANALYZE SELECT pg_terminate_backend(1)', 'block', 'no-admin'],
  ['PREPARE p AS DELETE FROM t', 'review', 'review-changes'],
  ['DO $$ BEGIN DELETE FROM t; END $$', 'block', 'no-procedural'],
  ["CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", 'block', 'no-procedural'],
  ['CALL p()', 'block', 'no-procedural'],
  ["COPY t TO PROGRAM 'cat > /tmp/x'", 'block', 'no-admin'],
  ["COPY t FROM PROGRAM 'curl x'", 'block', 'no-admin'],
  ["COPY t FROM '/etc/passwd'", 'block', 'no-admin'],
  ["COPY t TO '/tmp/out'", 'block', 'no-admin'],
  ['COPY t FROM STDIN', 'review', 'review-changes'],
  ['SET ROLE postgres', 'block', 'no-admin'],
  ["SET role TO 'postgres'", 'block', 'no-admin'],
  ['SET SESSION AUTHORIZATION postgres', 'block', 'no-admin'],
  ["ALTER SYSTEM SET work_mem = '1GB'", 'block', 'no-admin'],
  ["SELECT set_config('role', 'postgres', false)", 'block', 'no-admin'],
  ["SELECT set_config('search_path', 'public', false)", 'allow', 'default'],
  ['SELECT pg_terminate_backend(123)', 'block', 'no-admin'],
  ["SELECT * FROM t WHERE pg_read_file('/etc/passwd') IS NOT NULL", 'block', 'no-admin'],
  ["SELECT PG_CATALOG.PG_READ_FILE('x')", 'block', 'no-admin'],
  ["SELECT lo_export(1234, '/tmp/x')", 'block', 'no-admin'],
  ["SELECT dblink_exec('host=x', 'drop table t')", 'block', 'no-admin'],
  ['SELECT (SELECT pg_cancel_backend(1))', 'block', 'no-admin'],
  ['SELECT * FROM (SELECT pg_reload_conf()) s', 'block', 'no-admin'],
  ['TRUNCATE t', 'block', 'no-destroy'],
  ['DROP TABLE t', 'block', 'no-destroy'],
  ['drop table if exists "T", u cascade', 'block', 'no-destroy'],
  ['DROP SCHEMA s CASCADE', 'block', 'no-destroy'],
  ['GRANT ALL ON t TO public', 'block', 'no-dcl'],
  ['REVOKE SELECT ON t FROM bob', 'block', 'no-dcl'],
  ['CREATE ROLE r LOGIN', 'block', 'no-dcl'],
  ['SELECT 1 /* ; DROP TABLE t */', 'allow', 'default'],
  ['SELECT $$; DROP TABLE t$$', 'allow', 'default'],
  ['SELECT $tag$ DROP TABLE t $tag$ AS x', 'allow', 'default'],
  ['SELECT 1; -- trailing\nDROP TABLE t', 'block', 'no-destroy'],
  ['SELECT 1;DROP TABLE t', 'block', 'no-destroy'],
  ["SELECT 'x'';DROP TABLE t;--'", 'allow', 'default'],
  ['D/**/ROP TABLE t', 'review', 'default.unknown'],
  ['selec 1', 'review', 'default.unknown'],
  ['DELETE FROM t', 'review', 'review-changes'],
  ['UPDATE t SET a = 1 WHERE id = 1', 'review', 'review-changes'],
  ['INSERT INTO t VALUES (1)', 'review', 'review-changes'],
  ['SELECT * INTO newt FROM t', 'review', 'review-changes'],
  ['LOCK TABLE t', 'review', 'review-changes'],
  ['CREATE TABLE x (a int)', 'review', 'review-changes'],
  ['ALTER TABLE t ADD COLUMN b int', 'review', 'review-changes'],
  ['SELECT * FROM t FOR UPDATE', 'allow', 'default'],
  ['VACUUM t', 'block', 'no-admin'],
  ['CREATE EXTENSION dblink', 'block', 'no-admin'],
  ['BEGIN', 'allow', 'default'],
  ['select 1; select pg_sleep(0); vacuum', 'block', 'no-admin'],
];

before(() => loadPostgresParser());

test(`${cases.length} evasions reach the expected verdict`, () => {
  assert.ok(cases.length >= 40);
  const guard = new Guard(policy);
  const failures: string[] = [];
  for (const [text, action, rule] of cases) {
    const v = guard.check({ identity: agent, connection: 'prod' }, { kind: 'sql', dialect: 'postgres', text });
    if (v.action !== action || !v.rule.startsWith(rule)) failures.push(`${JSON.stringify(text)}: got ${v.action}/${v.rule}, want ${action}/${rule}`);
  }
  assert.deepEqual(failures, []);
});

test('EXECUTE inherits the class of what was prepared, by SQL and by the extended protocol', () => {
  const guard = new Guard(policy);
  const prepared = new PreparedStatements();
  const ctx = { identity: agent, connection: 'prod', prepared };
  const prep = guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: 'PREPARE wipe AS DELETE FROM t' });
  prepared.record(prep.classification!);
  const exec = guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: 'EXECUTE wipe' });
  assert.equal(exec.action, 'review');
  const dangerous = guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: "PREPARE rf AS SELECT pg_read_file('/etc/passwd')" });
  prepared.record(dangerous.classification!);
  assert.equal(guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: 'EXECUTE rf' }).action, 'block');
  // Unknown names are never guessed: unknown, which is not allowed silently.
  assert.equal(guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: 'EXECUTE nobody_knows' }).action, 'review');
  // Protocol-level: a Parse defines the name; the Execute is judged by it.
  const parsed = guard.classify({ kind: 'sql', dialect: 'postgres', text: 'DROP TABLE t' });
  prepared.define('s1', parsed);
  assert.equal(guard.check(ctx, { kind: 'sql', dialect: 'postgres', text: 'DROP TABLE t' }, prepared.lookup('s1')).action, 'block');
});

test('guard overhead on a cached statement stays well under 20 µs', (t) => {
  const guard = new Guard(policy);
  const cmd = { kind: 'sql' as const, dialect: 'postgres' as const, text: 'SELECT abalance FROM pgbench_accounts WHERE aid = $1' };
  const ctx = { identity: agent, connection: 'prod' };
  for (let i = 0; i < 5000; i++) guard.check(ctx, cmd);
  const n = 20000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) guard.check(ctx, cmd);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  t.diagnostic(`guard.check on a cached statement: ${us.toFixed(2)} µs`);
  assert.ok(us < 20, `${us} µs`);
});
