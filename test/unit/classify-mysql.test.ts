import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type Classification, type CommandClass } from '../../src/guard/classification.ts';
import { classifyMysql, expandMysqlComments, mysqlServerFromVersion, type MysqlServer } from '../../src/guard/classify-mysql.ts';
import { PreparedStatements } from '../../src/guard/prepared.ts';
import { mariadbCli, mariadbMissing, startMariadb } from '../helpers/mariadb.ts';
import { findBinary } from '../helpers/postgres.ts';

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

// Each row is one text an agent or a tool might send, with what the guard must see in it. Rows
// that only give `class` still pin the class; the other fields are checked exactly when given.
const CASES: Case[] = [
  // --- reads, and relation extraction ---
  { sql: 'SELECT 1', class: 'read', classes: ['read'], types: ['SELECT'], reads: [], writes: [], flags: [] },
  { sql: 'SELECT * FROM orders WHERE id = ?', class: 'read', reads: ['orders'] },
  { sql: 'SELECT * FROM shop.orders o JOIN customers c ON c.id = o.cid', class: 'read', reads: ['shop.orders', 'customers'] },
  { sql: 'SELECT a FROM t WHERE b IN (SELECT b FROM s.u)', class: 'read', reads: ['t', 's.u'] },
  { sql: 'SELECT 1 UNION SELECT a FROM u', class: 'read', types: ['SELECT'], reads: ['u'] },
  { sql: 'WITH x AS (SELECT * FROM t) SELECT * FROM x', class: 'read', reads: ['t'] },
  { sql: 'SELECT * FROM t FOR UPDATE', class: 'read', flags: ['for_update'] },
  { sql: 'SELECT * FROM t LOCK IN SHARE MODE', class: 'read', flags: ['for_share'], noFlags: ['for_update'] },
  { sql: 'SELECT SQL_CALC_FOUND_ROWS a FROM t USE INDEX (i) WHERE x = 1', class: 'read', reads: ['t'] },
  { sql: 'SELECT a INTO @v FROM t', class: 'read', noFlags: ['server_file_copy'] },
  { sql: 'SELECT SLEEP(1), BENCHMARK(10, MD5(1))', class: 'read', functions: ['sleep', 'benchmark', 'md5'] },
  { sql: 'SELECT `DROP TABLE x` FROM t', class: 'read', reads: ['t'] },
  { sql: 'SHOW TABLES', class: 'read', types: ['SHOW'] },
  { sql: "SHOW VARIABLES LIKE 'sql_mode'", class: 'read', types: ['SHOW'] },
  { sql: 'SHOW FULL PROCESSLIST', class: 'read', types: ['SHOW'] },
  { sql: 'SHOW CREATE TABLE `t`', class: 'read', types: ['SHOW'] },
  { sql: 'DESCRIBE t', class: 'read', types: ['DESCRIBE'], reads: ['t'] },
  { sql: 'DESC db.t', class: 'read', types: ['DESCRIBE'], reads: ['db.t'] },
  { sql: 'USE shop', class: 'read', types: ['USE'] },
  { sql: 'BEGIN', class: 'read', types: ['BEGIN'] },
  { sql: 'START TRANSACTION READ ONLY', class: 'read', types: ['BEGIN'], noFlags: ['read_write'] },
  { sql: 'START TRANSACTION READ WRITE', class: 'read', flags: ['read_write'] },
  { sql: 'COMMIT', class: 'read', types: ['COMMIT'] },
  { sql: 'ROLLBACK TO SAVEPOINT sp', class: 'read', types: ['ROLLBACK_TO_SAVEPOINT'] },
  { sql: 'SAVEPOINT sp', class: 'read', types: ['SAVEPOINT'] },
  { sql: 'RELEASE SAVEPOINT sp', class: 'read', types: ['RELEASE_SAVEPOINT'] },
  { sql: 'SET NAMES utf8mb4', class: 'read', types: ['SET'] },
  { sql: "SET SESSION sql_mode = 'STRICT_ALL_TABLES'", class: 'read', flags: ['sql_mode'] },
  { sql: 'SET @a = 1, @b := 2', class: 'read', types: ['SET'] },
  { sql: 'SET autocommit = 0', class: 'read' },
  { sql: 'SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED', class: 'read', types: ['SET_TRANSACTION'] },
  { sql: 'SET foreign_key_checks = 0', class: 'read', flags: ['integrity_checks'] },
  { sql: 'EXPLAIN DELETE FROM t', class: 'read', types: ['EXPLAIN'], reads: ['t'], writes: [] },
  { sql: 'EXPLAIN FORMAT=JSON SELECT * FROM t', class: 'read', types: ['EXPLAIN'] },
  { sql: "DO SLEEP(0)", class: 'read', types: ['DO'], functions: ['sleep'] },
  { sql: 'HANDLER t OPEN', class: 'read', reads: ['t'] },
  { sql: 'CHECK TABLE t', class: 'read', types: ['CHECK_TABLE'] },
  { sql: '  -- nothing but a comment\n', class: 'read', types: [], flags: ['empty'] },
  { sql: '/* only a comment */ ;', class: 'read', flags: ['empty'] },

  // --- executable comments, and what only looks like one ---
  { sql: '/*!50000 DROP TABLE t */', class: 'ddl', types: ['DROP_TABLE'], writes: ['t'] },
  { sql: '/*!DROP TABLE t*/', class: 'ddl', types: ['DROP_TABLE'] },
  { sql: '/*M!100101 DROP TABLE t */', class: 'ddl', types: ['DROP_TABLE'], writes: ['t'], flags: ['version_dependent'] },
  { sql: '/*M!999999\\- enable the sandbox mode */ SELECT 1', class: 'read', types: ['SELECT'] },
  { sql: "SELECT '/*!50000 DROP TABLE t */'", class: 'read', types: ['SELECT'], writes: [] },
  { sql: 'SELECT "/*!50000 DROP TABLE t */"', class: 'read', types: ['SELECT'] },
  { sql: "SELECT 'it\\'s /*!50000 DROP TABLE t */'", class: 'read', types: ['SELECT'] },
  { sql: 'SELECT 1 -- /*!50000 DROP TABLE t */', class: 'read', types: ['SELECT'] },
  { sql: 'SELECT 1 # /*!50000 DROP TABLE t */', class: 'read', types: ['SELECT'] },
  { sql: 'SELECT 1 /* /*!50000 DROP TABLE t */', class: 'read', types: ['SELECT'] }, // comments do not nest
  { sql: "SELECT 1 /*!50000 UNION SELECT LOAD_FILE('/etc/passwd') */", class: 'admin', flags: ['dangerous_function'] },
  // MySQL 8 runs it, MariaDB skips 5.7+ numbers: unknown server, so judged as both.
  { sql: 'SELECT 1; /*!80000 DROP TABLE t */', class: 'ddl', types: ['SELECT', 'DROP_TABLE'], flags: ['multiple_statements', 'version_dependent'] },
  { sql: 'DELETE FROM t /*!99999 WHERE id = 1 */', class: 'write', flags: ['without_where', 'version_dependent'] },
  { sql: 'SELECT 1 /*!40101 + 1 ; DROP TABLE t */', class: 'unknown', flags: ['parse_error'] }, // the server rejects ; in there
  { sql: 'SELECT 1 /*!40101 + 1', class: 'unknown', flags: ['parse_error'] },
  { sql: 'SELECT LOAD_FILE/**/(\'/etc/passwd\')', class: 'admin', functions: ['load_file'] },

  // --- several statements in one text ---
  { sql: 'SELECT 1; DROP TABLE t', class: 'ddl', classes: ['read', 'ddl'], types: ['SELECT', 'DROP_TABLE'], flags: ['multiple_statements'] },
  { sql: 'select 1; select 2; delete from t', class: 'write', types: ['SELECT', 'DELETE'], flags: ['multiple_statements', 'without_where'] },
  { sql: "SELECT 'a\\'; DROP TABLE u; -- '", class: 'read', types: ['SELECT'], noFlags: ['multiple_statements'] }, // one string
  { sql: "SELECT 'it\\'s' FROM t; DROP TABLE u", class: 'ddl', writes: ['u'], flags: ['multiple_statements'] },

  // --- writes ---
  { sql: 'INSERT INTO t (a) VALUES (1)', class: 'write', classes: ['write'], types: ['INSERT'], writes: ['t'], reads: [] },
  { sql: 'INSERT INTO a.t SELECT * FROM b.u', class: 'write', classes: ['read', 'write'], types: ['INSERT', 'SELECT'], reads: ['b.u'], writes: ['a.t'] },
  { sql: 'INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)', class: 'write', types: ['INSERT'], writes: ['t'] },
  { sql: 'REPLACE INTO t (a) VALUES (1)', class: 'write', types: ['REPLACE'], writes: ['t'] },
  { sql: 'UPDATE t SET a = 1', class: 'write', types: ['UPDATE'], flags: ['without_where'], writes: ['t'] },
  { sql: 'UPDATE t SET a = 1 WHERE id = 2', class: 'write', noFlags: ['without_where'] },
  { sql: 'UPDATE t JOIN u ON t.id = u.id SET t.a = u.a WHERE u.b = 1', class: 'write', reads: ['u'], writes: ['t'] },
  { sql: 'UPDATE t SET a = 1 ORDER BY id LIMIT 5', class: 'write', flags: ['without_where'] },
  { sql: 'DELETE FROM t', class: 'write', types: ['DELETE'], flags: ['without_where'] },
  { sql: 'DELETE FROM t WHERE id = 1 LIMIT 1', class: 'write', noFlags: ['without_where'] },
  { sql: 'DELETE t FROM t JOIN u ON t.id = u.id WHERE u.x = 1', class: 'write', reads: ['u'], writes: ['t'] },
  { sql: 'DELETE FROM t WHERE id IN (SELECT id FROM u)', class: 'write', classes: ['read', 'write'], types: ['DELETE', 'SELECT'], reads: ['u'], writes: ['t'] },
  { sql: "LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE db.t FIELDS TERMINATED BY ','", class: 'write', types: ['LOAD_DATA'], flags: ['load_data_local'], writes: ['db.t'] },
  { sql: 'SELECT NEXTVAL(s)', class: 'write', functions: ['nextval'] },
  { sql: 'SELECT NEXT VALUE FOR s', class: 'write' },
  { sql: 'LOCK TABLES t WRITE', class: 'write', types: ['LOCK_TABLES'], writes: ['t'], noFlags: ['read_lock'] },
  { sql: 'LOCK TABLES t READ LOCAL, u AS x READ', class: 'write', writes: ['t', 'u'], flags: ['read_lock'] },
  { sql: 'UNLOCK TABLES', class: 'read', types: ['UNLOCK_TABLES'] },

  // --- ddl ---
  { sql: 'CREATE TABLE t (id int primary key)', class: 'ddl', types: ['CREATE_TABLE'], writes: ['t'] },
  { sql: 'CREATE TABLE t2 AS SELECT * FROM t', class: 'ddl', classes: ['read', 'write', 'ddl'], types: ['CREATE_TABLE_AS', 'SELECT'], reads: ['t'], writes: ['t2'] },
  { sql: 'CREATE TABLE t2 LIKE t', class: 'ddl', reads: ['t'], writes: ['t2'] },
  { sql: 'ALTER TABLE t ADD COLUMN b int', class: 'ddl', types: ['ALTER_TABLE'], writes: ['t'] },
  { sql: 'DROP TABLE IF EXISTS a.t, u', class: 'ddl', types: ['DROP_TABLE'], writes: ['a.t', 'u'] },
  { sql: 'DROP TEMPORARY TABLE t', class: 'ddl', types: ['DROP_TABLE'] },
  { sql: 'CREATE INDEX i ON t (a)', class: 'ddl', types: ['CREATE_INDEX'], writes: ['t'] },
  { sql: 'DROP INDEX i ON t', class: 'ddl', types: ['DROP_INDEX'], writes: ['t'] },
  { sql: 'CREATE OR REPLACE VIEW v AS SELECT * FROM secret', class: 'ddl', types: ['CREATE_VIEW'], reads: ['secret'], writes: ['v'] },
  { sql: 'DROP VIEW v', class: 'ddl', types: ['DROP_VIEW'] },
  { sql: 'RENAME TABLE a TO b, c TO d', class: 'ddl', types: ['RENAME_TABLE'], writes: ['a', 'b', 'c', 'd'] },
  { sql: 'TRUNCATE TABLE t', class: 'ddl', classes: ['write', 'ddl'], types: ['TRUNCATE'], flags: ['without_where'], writes: ['t'] },
  { sql: 'CREATE DATABASE shop', class: 'ddl', types: ['CREATE_DATABASE'] },
  { sql: 'DROP SCHEMA shop', class: 'ddl', types: ['DROP_DATABASE'] },
  { sql: 'DROP PROCEDURE p', class: 'ddl', types: ['DROP_PROCEDURE'] },

  // --- dcl ---
  { sql: "GRANT SELECT ON shop.* TO 'u'@'%'", class: 'dcl', types: ['GRANT'], writes: ['shop.*'] },
  { sql: 'GRANT ALL PRIVILEGES ON *.* TO u@localhost WITH GRANT OPTION', class: 'dcl', types: ['GRANT'] },
  { sql: 'REVOKE SELECT ON shop.t FROM u', class: 'dcl', types: ['REVOKE'], writes: ['shop.t'] },
  { sql: "CREATE USER 'u'@'%' IDENTIFIED BY 'pw'", class: 'dcl', types: ['CREATE_USER'] },
  { sql: 'DROP USER u', class: 'dcl', types: ['DROP_USER'] },
  { sql: "ALTER USER u IDENTIFIED BY 'x'", class: 'dcl', types: ['ALTER_USER'] },
  { sql: "SET PASSWORD FOR u = PASSWORD('x')", class: 'dcl', types: ['SET_PASSWORD'] },
  { sql: 'CREATE ROLE r', class: 'dcl', types: ['CREATE_ROLE'] },

  // --- procedural ---
  { sql: 'CALL p(1, 2)', class: 'procedural', types: ['CALL'], functions: ['p'] },
  { sql: 'CREATE PROCEDURE p() SELECT 1', class: 'procedural', types: ['CREATE_PROCEDURE'] },
  { sql: 'CREATE DEFINER=`root`@`localhost` FUNCTION f(x int) RETURNS int DETERMINISTIC RETURN x + 1', class: 'procedural', types: ['CREATE_FUNCTION'] },
  { sql: 'CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1', class: 'procedural', types: ['CREATE_TRIGGER'], writes: ['t'] },
  { sql: 'CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t', class: 'procedural', types: ['CREATE_EVENT'] },
  // The body's `;` does not end the statement; its pieces are judged as if they ran (over-approximation).
  { sql: 'CREATE PROCEDURE p() BEGIN DECLARE x INT; DELETE FROM t; END', class: 'procedural', types: ['CREATE_PROCEDURE', 'DELETE'], flags: ['compound_statement'] },
  { sql: 'BEGIN NOT ATOMIC DELETE FROM t; END', class: 'procedural', types: ['COMPOUND_STATEMENT', 'DELETE'] },
  { sql: 'IF (SELECT 1) THEN DROP TABLE t; END IF', class: 'procedural', types: ['COMPOUND_STATEMENT', 'SELECT', 'DROP_TABLE'] },

  // --- admin ---
  { sql: 'SET GLOBAL max_connections = 10', class: 'admin', types: ['SET_GLOBAL'] },
  { sql: 'SET @@global.general_log = 0', class: 'admin', types: ['SET_GLOBAL'] },
  { sql: 'SET PERSIST max_connections = 10', class: 'admin' },
  { sql: 'SET sql_log_bin = 0', class: 'admin', types: ['SET'] },
  { sql: 'SET @@session.sql_log_off = 1', class: 'admin' },
  { sql: 'SET ROLE admin_role', class: 'admin', types: ['SET_ROLE'] },
  { sql: 'SET STATEMENT sql_log_bin = 0 FOR DELETE FROM t WHERE id = 1', class: 'admin', types: ['SET', 'DELETE'] },
  { sql: 'KILL QUERY 5', class: 'admin', types: ['KILL'] },
  { sql: 'KILL 5', class: 'admin', types: ['KILL'] },
  { sql: 'SHUTDOWN', class: 'admin', types: ['SHUTDOWN'] },
  { sql: 'FLUSH PRIVILEGES', class: 'admin', types: ['FLUSH'] },
  { sql: 'FLUSH TABLES WITH READ LOCK', class: 'admin', types: ['FLUSH'] },
  { sql: 'RESET MASTER', class: 'admin', types: ['RESET'] },
  { sql: "INSTALL PLUGIN x SONAME 'x.so'", class: 'admin', types: ['INSTALL'] },
  { sql: "CHANGE MASTER TO MASTER_HOST = 'h'", class: 'admin', types: ['CHANGE_MASTER'] },
  { sql: 'STOP SLAVE', class: 'admin', types: ['STOP_REPLICA'] },
  { sql: "PURGE BINARY LOGS TO 'x'", class: 'admin', types: ['PURGE'] },
  { sql: 'OPTIMIZE TABLE t', class: 'admin', types: ['OPTIMIZE_TABLE'], writes: ['t'] },
  { sql: "SELECT LOAD_FILE('/etc/passwd')", class: 'admin', classes: ['read', 'admin'], types: ['SELECT'], flags: ['dangerous_function'], functions: ['load_file'] },
  { sql: "SELECT `load_file`('/etc/passwd')", class: 'admin', flags: ['dangerous_function'] },
  { sql: "SELECT sys_exec('id')", class: 'admin', flags: ['dangerous_function'] },
  { sql: "INSERT INTO t VALUES (LOAD_FILE('/etc/shadow'))", class: 'admin', types: ['INSERT'], writes: ['t'] },
  { sql: "SET @a := (SELECT LOAD_FILE('/etc/passwd'))", class: 'admin', types: ['SET', 'SELECT'] },
  { sql: "SHOW TABLES WHERE LOAD_FILE('/etc/passwd') IS NOT NULL", class: 'admin', types: ['SHOW'] },
  { sql: "CALL p(LOAD_FILE('/x'))", class: 'admin', classes: ['procedural', 'admin'] },
  { sql: "SELECT * FROM t INTO OUTFILE '/tmp/x'", class: 'admin', types: ['SELECT'], flags: ['server_file_copy'], reads: ['t'] },
  { sql: "SELECT a INTO DUMPFILE '/tmp/x' FROM t", class: 'admin', flags: ['server_file_copy'] },
  { sql: "SELECT * FROM t INTO OUTFILE '/tmp/x' FIELDS TERMINATED BY ','", class: 'admin', flags: ['server_file_copy'] },
  { sql: "LOAD DATA INFILE '/var/lib/mysql-files/x' INTO TABLE t", class: 'admin', classes: ['write', 'admin'], flags: ['server_file_copy'], writes: ['t'] },
  { sql: "CREATE TABLE t (a int) ENGINE=CONNECT TABLE_TYPE=CSV FILE_NAME='/etc/passwd'", class: 'admin', flags: ['external_table'] },
  { sql: "CREATE TABLE t (a int) DATA DIRECTORY = '/var/tmp'", class: 'admin', flags: ['server_file_copy'] },
  { sql: "CREATE FUNCTION sys_exec RETURNS INT SONAME 'lib_mysqludf_sys.so'", class: 'admin', types: ['CREATE_FUNCTION'] },
  { sql: 'CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST \'h\')', class: 'admin', types: ['CREATE_SERVER'] },
  { sql: "XA COMMIT 'x'", class: 'admin', types: ['XA_COMMIT'] },

  // --- prepared statements ---
  { sql: "PREPARE s FROM 'DROP TABLE t'", class: 'ddl', types: ['PREPARE', 'DROP_TABLE'] },
  { sql: 'PREPARE s FROM @sql', class: 'unknown', types: ['PREPARE'] },
  { sql: 'EXECUTE s', class: 'unknown', types: ['EXECUTE'] },
  { sql: "PREPARE s FROM 'DELETE FROM t'; EXECUTE s", class: 'write', types: ['PREPARE', 'DELETE', 'EXECUTE'], flags: ['execute_resolved'] },
  { sql: "EXECUTE IMMEDIATE 'DROP TABLE t'", class: 'ddl', types: ['EXECUTE_IMMEDIATE', 'DROP_TABLE'] },
  { sql: "EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')", class: 'unknown' },
  { sql: 'DEALLOCATE PREPARE s', class: 'read', types: ['DEALLOCATE'] },

  // --- what the mariadb CLI sends on its own (interactive startup, status, use, auto-rehash) ---
  { sql: 'select @@version_comment limit 1', class: 'read', types: ['SELECT'] },
  { sql: 'select DATABASE(), USER() limit 1', class: 'read' },
  { sql: 'select @@character_set_client, @@character_set_connection, @@character_set_server, @@character_set_database limit 1', class: 'read' },
  { sql: 'SELECT DATABASE()', class: 'read' },
  { sql: 'show databases', class: 'read' },
  { sql: 'show tables', class: 'read' },

  // --- what mysqldump (MariaDB 10.11) sends during a dump ---
  { sql: "/*!40100 SET @@SQL_MODE='' */", class: 'read', flags: ['sql_mode'] },
  { sql: "/*!40103 SET TIME_ZONE='+00:00' */", class: 'read' },
  { sql: '/*M!100100 SET @@MAX_STATEMENT_TIME=0.000000 */', class: 'read' },
  { sql: '/*M!100100 SET WAIT_TIMEOUT=DEFAULT */', class: 'read' },
  { sql: "set optimizer_switch='semijoin=off'", class: 'read' },
  { sql: 'set optimizer_switch=default', class: 'read' },
  { sql: "SELECT LOGFILE_GROUP_NAME, FILE_NAME, TOTAL_EXTENTS, INITIAL_SIZE, ENGINE, EXTRA FROM INFORMATION_SCHEMA.FILES WHERE FILE_TYPE = 'UNDO LOG' AND FILE_NAME IS NOT NULL AND LOGFILE_GROUP_NAME IS NOT NULL GROUP BY LOGFILE_GROUP_NAME, FILE_NAME, ENGINE, TOTAL_EXTENTS, INITIAL_SIZE ORDER BY LOGFILE_GROUP_NAME", class: 'read', reads: ['INFORMATION_SCHEMA.FILES'] },
  { sql: 'SHOW FULL TABLES', class: 'read' },
  { sql: 'SHOW /*!50002 FULL*/ TABLES', class: 'read' },
  { sql: 'LOCK TABLES `t` READ /*!32311 LOCAL */,`v` READ /*!32311 LOCAL */', class: 'write', writes: ['t', 'v'], flags: ['read_lock'] },
  { sql: "SELECT engine, table_type FROM INFORMATION_SCHEMA.TABLES WHERE table_schema = DATABASE() AND table_name = 't'", class: 'read' },
  { sql: 'SET SQL_QUOTE_SHOW_CREATE=1', class: 'read' },
  { sql: "SET SQL_QUOTE_SHOW_CREATE=1/*!40102 ,SQL_MODE=concat(@@sql_mode, _utf8 ',NO_KEY_OPTIONS,NO_TABLE_OPTIONS,NO_FIELD_OPTIONS') */", class: 'read', flags: ['sql_mode'] },
  { sql: "SET SESSION character_set_results = 'binary'", class: 'read' },
  { sql: 'show create table `t`', class: 'read' },
  { sql: "select column_name, extra, generation_expression, data_type from information_schema.columns where table_schema=database() and table_name='t' order by ordinal_position", class: 'read' },
  { sql: 'SELECT /*!40001 SQL_NO_CACHE */ `id`, `a`, `b` FROM `t`', class: 'read', reads: ['t'] },
  { sql: 'select @@collation_database', class: 'read' },
  { sql: 'SHOW CREATE TRIGGER `tr`', class: 'read' },
  { sql: 'SHOW FIELDS FROM `v`', class: 'read' },
  { sql: 'LOCK TABLES mysql.event READ', class: 'write', writes: ['mysql.event'] },
  { sql: 'show events', class: 'read' },
  { sql: "SHOW FUNCTION STATUS WHERE Db = 'test'", class: 'read' },
  { sql: "SHOW PACKAGE BODY STATUS WHERE Db = 'test'", class: 'read' },
  { sql: 'SHOW CREATE SEQUENCE `sq`', class: 'read' },
  { sql: 'SELECT next_not_cached_value FROM `sq`', class: 'read' },
  { sql: 'SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ', class: 'read' },
  { sql: 'START TRANSACTION /*!40100 WITH CONSISTENT SNAPSHOT */', class: 'read', types: ['BEGIN'] },
  { sql: 'SHOW CREATE DATABASE IF NOT EXISTS `test`', class: 'read' },
  { sql: "SHOW STATUS LIKE 'binlog_snapshot_%'", class: 'read' },
  { sql: "SELECT BINLOG_GTID_POS('', '0')", class: 'read' },
  { sql: 'FLUSH /*!40101 LOCAL */ TABLES', class: 'admin', types: ['FLUSH'] }, // --master-data / --lock-all-tables
  { sql: "SHOW CREATE USER 'root'@'localhost'", class: 'read' },
  { sql: "SELECT CONCAT(QUOTE(u.user), '@', QUOTE(u.Host)) AS u FROM mysql.user u  /*!80001 LEFT JOIN mysql.role_edges e ON u.user=e.from_user AND u.host=e.from_host WHERE e.from_user IS NULL */ /*M!100005 WHERE is_role='N' */", class: 'read', flags: ['version_dependent'] },
  { sql: "SELECT /*!40001 SQL_NO_CACHE */ `id` INTO OUTFILE '/var/lib/mysql-files/t.txt' /*!50138 CHARACTER SET binary */ FROM `t`", class: 'admin', flags: ['server_file_copy'] }, // --tab

  // --- what a restore of that dump sends (the mariadb CLI splits the file into statements) ---
  { sql: '/*M!999999\\- enable the sandbox mode */ \n\n/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */', class: 'read', types: ['SET'] },
  { sql: '/*!40101 SET NAMES utf8mb4 */', class: 'read' },
  { sql: '/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */', class: 'read', flags: ['integrity_checks'] },
  { sql: "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */", class: 'read' },
  { sql: 'DROP TABLE IF EXISTS `t`', class: 'ddl', types: ['DROP_TABLE'], writes: ['t'] },
  { sql: 'CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `b` datetime DEFAULT current_timestamp(),\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=3 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci', class: 'ddl', types: ['CREATE_TABLE'], writes: ['t'] },
  { sql: '/*!40000 ALTER TABLE `t` DISABLE KEYS */', class: 'ddl', types: ['ALTER_TABLE'] },
  { sql: "INSERT INTO `t` VALUES\n(1,'x','2026-01-01 00:00:00'),\n(2,'y','2026-01-01 00:00:00')", class: 'write', writes: ['t'] },
  { sql: 'DROP SEQUENCE IF EXISTS `sq`', class: 'ddl' },
  { sql: 'CREATE SEQUENCE `sq` start with 1 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB', class: 'ddl', types: ['CREATE_SEQUENCE'] },
  { sql: 'DO SETVAL(`sq`, 1, 0)', class: 'write', types: ['DO'], functions: ['setval'] },
  { sql: '/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n/*!50001 VIEW `v` AS select `t`.`id` AS `id` from `t` */', class: 'ddl', types: ['CREATE_VIEW'], reads: ['t'], writes: ['v'] },
  { sql: '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 trigger tr before insert on t for each row set new.a=upper(new.a) */', class: 'procedural', types: ['CREATE_TRIGGER'], writes: ['t'] },
  { sql: "/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `e` ON SCHEDULE EVERY 1 DAY STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE DO select 1 */", class: 'procedural', types: ['CREATE_EVENT'] },
  { sql: '/*!40101 SET SQL_MODE=@OLD_SQL_MODE */', class: 'read', flags: ['sql_mode'] },

  // --- what cannot be read is unknown, never read ---
  { sql: 'SELEC 1', class: 'unknown', flags: ['unrecognized_statement'] },
  { sql: 'SELECT FROM WHERE', class: 'unknown', flags: ['parse_error'] },
  { sql: "SELECT 'unterminated", class: 'unknown', flags: ['parse_error'] },
  { sql: 'DELETE FROM t USING t JOIN u ON t.id = u.id', class: 'unknown', flags: ['parse_error'] }, // valid, but the parser cannot read it
  { sql: 'SELECT 1\0; DROP TABLE t', class: 'unknown', flags: ['parse_error'] },
];

test('classification table', () => {
  assert.ok(CASES.length >= 50, `${CASES.length} cases`);
  const failures: string[] = [];
  for (const k of CASES) {
    const c = classifyMysql(k.sql);
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
    if (k.flags?.length === 0 && c.flags.length) problems.push(`flags: got ${JSON.stringify(c.flags)}, want none`);
    if (!c.classes.includes(c.class)) problems.push(`class ${c.class} not among classes ${JSON.stringify(c.classes)}`);
    if (c.class !== 'read' && !c.reason) problems.push('no reason');
    if (problems.length) failures.push(`${JSON.stringify(k.sql)}\n    ${problems.join('\n    ')}\n    (reason: ${c.reason})`);
  }
  assert.equal(failures.length, 0, `\n${failures.join('\n')}`);
});

test('a known server reads version-gated comments as it would', () => {
  const maria: MysqlServer = { flavor: 'mariadb', version: 101119 };
  const mariaOld: MysqlServer = { flavor: 'mariadb', version: 100000 };
  const mysql8: MysqlServer = { flavor: 'mysql', version: 80036 };
  const sql = "SELECT 1 /*!80001 , LOAD_FILE('/etc/passwd') */";
  assert.equal(classifyMysql(sql, { server: maria }).class, 'read'); // MariaDB skips MySQL 5.7+ numbers
  assert.equal(classifyMysql(sql, { server: mysql8 }).class, 'admin');
  assert.equal(classifyMysql(sql).class, 'admin'); // unknown server: both readings
  assert.ok(classifyMysql(sql).flags.includes('version_dependent'));

  const m = '/*M!100101 DROP TABLE t */';
  assert.deepEqual(classifyMysql(m, { server: maria }).types, ['DROP_TABLE']);
  assert.deepEqual(classifyMysql(m, { server: mariaOld }).flags, ['empty']); // 10.0.0 < 10.1.1
  assert.deepEqual(classifyMysql(m, { server: mysql8 }).flags, ['empty']); // MySQL: an ordinary comment

  // MariaDB reads six digits, MySQL five (then "1 DROP …" is code, and a syntax error).
  assert.equal(classifyMysql('/*!100101 DROP TABLE t */', { server: maria }).class, 'ddl');
  assert.equal(classifyMysql('/*!100101 DROP TABLE t */', { server: mysql8 }).class, 'unknown');
  // A skipped gated comment may hold one nested comment; an opened one ends at its first */.
  assert.equal(classifyMysql('SELECT 1 /*!99999 x /* y */ z */', { server: maria }).class, 'read');
  assert.deepEqual(classifyMysql('SELECT 1 /*!40101 + 1 /* c */ + 1 */ FROM t', { server: maria }).reads, ['t']);
  // '#' inside an opened comment runs to the end of the line, past a '*/' (the server does so).
  assert.equal(classifyMysql('SELECT 1 /*!40101 + 1 # */ ; DROP TABLE t\n */', { server: maria }).class, 'read');
});

test('mysqlServerFromVersion reads handshake versions', () => {
  assert.deepEqual(mysqlServerFromVersion('10.11.19-MariaDB-0+deb12u1'), { flavor: 'mariadb', version: 101119 });
  assert.deepEqual(mysqlServerFromVersion('5.5.5-10.6.4-MariaDB-log'), { flavor: 'mariadb', version: 100604 });
  assert.deepEqual(mysqlServerFromVersion('8.0.36'), { flavor: 'mysql', version: 80036 });
  assert.deepEqual(mysqlServerFromVersion('8.4.0-commercial'), { flavor: 'mysql', version: 80400 });
  assert.equal(mysqlServerFromVersion('garbage'), undefined);
});

test('expandMysqlComments shows what the server runs', () => {
  assert.equal(expandMysqlComments('/*!50000 DROP TABLE t */'), 'DROP TABLE t');
  assert.equal(expandMysqlComments("SELECT 1 -- x\n, '/*!1 2*/' /* c */ FROM t; SELECT 2"), "SELECT 1 , '/*!1 2*/' FROM t; SELECT 2");
  assert.equal(expandMysqlComments('SELECT 1 --1'), 'SELECT 1 - -1'); // minus minus one, not a comment
  assert.equal(expandMysqlComments("SELECT 'x"), undefined);
});

test('NO_BACKSLASH_ESCAPES changes where strings end', () => {
  const sql = "SELECT 'a\\'; DROP TABLE u; -- '";
  assert.equal(classifyMysql(sql).class, 'read');
  const nbe = classifyMysql(sql, { noBackslashEscapes: true });
  assert.equal(nbe.class, 'ddl');
  assert.deepEqual(nbe.types, ['SELECT', 'DROP_TABLE']);
});

test('reasons say why', () => {
  assert.match(classifyMysql("SELECT LOAD_FILE('/etc/passwd')").reason!, /load_file/);
  assert.match(classifyMysql("SELECT * FROM t INTO OUTFILE '/tmp/x'").reason!, /OUTFILE/);
  assert.match(classifyMysql('SET GLOBAL max_connections = 1').reason!, /max_connections/);
  assert.match(classifyMysql('EXECUTE s').reason!, /"s"/);
  assert.match(classifyMysql('SELECT FROM WHERE').reason!, /parser/);
});

test('results are cached by text and frozen', () => {
  const a = classifyMysql('SELECT * FROM cached_t');
  assert.equal(classifyMysql('SELECT * FROM cached_t'), a);
  assert.ok(Object.isFrozen(a) && Object.isFrozen(a.reads));
  assert.throws(() => (a.reads as string[]).push('x'));
  // Options are part of the key.
  const maria = classifyMysql('/*M!100000 DROP TABLE t */', { server: { flavor: 'mariadb', version: 101100 } });
  const mysql = classifyMysql('/*M!100000 DROP TABLE t */', { server: { flavor: 'mysql', version: 80036 } });
  assert.notEqual(maria.class, mysql.class);
});

test('PreparedStatements resolves EXECUTE to what PREPARE prepared', () => {
  const ps = new PreparedStatements();
  ps.record(classifyMysql("PREPARE del FROM 'DELETE FROM t WHERE id = ?'"));
  const c = ps.resolve(classifyMysql('EXECUTE del USING @id'));
  assert.equal(c.class, 'write');
  assert.ok(c.flags.includes('execute_resolved'));
  ps.record(classifyMysql('DEALLOCATE PREPARE del'));
  assert.equal(ps.resolve(classifyMysql('EXECUTE del USING @id')).class, 'unknown');
});

test('classification cost', (t) => {
  const sql = 'SELECT o.id, o.total FROM shop.orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ?';
  classifyMysql(sql);
  const n = 10_000;
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += classifyMysql(sql).class === 'read' ? 0 : 1;
  const perCall = Number(process.hrtime.bigint() - start) / n / 1000;

  const uncached = Array.from({ length: 600 }, (_, i) => `${sql} AND o.flag = ${i} -- ${Math.random()}`);
  for (const q of uncached.splice(0, 300)) sink += classifyMysql(q).class === 'read' ? 0 : 1;
  const s2 = process.hrtime.bigint();
  for (const q of uncached) sink += classifyMysql(q).class === 'read' ? 0 : 1;
  const perParse = Number(process.hrtime.bigint() - s2) / uncached.length / 1000;

  const dumpish = Array.from({ length: 300 }, (_, i) => `/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */ /* ${i} */`);
  const s3 = process.hrtime.bigint();
  for (const q of dumpish) sink += classifyMysql(q).class === 'read' ? 0 : 1;
  const perSet = Number(process.hrtime.bigint() - s3) / dumpish.length / 1000;

  t.diagnostic(`cached: ${perCall.toFixed(3)} µs/call; uncached SELECT (lex + parse + walk): ${perParse.toFixed(1)} µs; uncached SET (no parser): ${perSet.toFixed(1)} µs`);
  assert.equal(sink, 0);
  assert.ok(perCall < 50, `${perCall} µs per cached classification`);
});

// ---------------------------------------------------------------------------------------------
// The real thing: everything the tools send to a real MariaDB, from its general log.

test('every statement mysqldump, a restore, mariadb-admin and the mariadb CLI send is classified', async (t) => {
  const missing = mariadbMissing();
  if (missing) return t.skip(missing);
  const dump = findBinary('mariadb-dump') ?? findBinary('mysqldump');
  if (!dump) {
    if (process.env.CI === 'true') throw new Error('mariadb-dump/mysqldump not installed (required in CI)');
    t.skip('mariadb-dump not installed');
    return;
  }
  const server = await startMariadb();
  t.after(() => server.stop());
  const setup = await mariadbCli(
    server,
    `create table t (id int primary key auto_increment, a varchar(20), b datetime default now(), j json);
     insert into t (a) values ('x'), ('y');
     create table u (id int primary key, t_id int, foreign key (t_id) references t (id));
     create view v as select * from t;
     DELIMITER //
     create procedure p() begin select 1; select 2; end //
     DELIMITER ;
     create function f(x int) returns int deterministic return x + 1;
     create trigger tr before insert on t for each row set new.a = upper(new.a);
     create event e on schedule every 1 day do delete from u where id < 0;
     create sequence sq;
     SET GLOBAL log_output = 'TABLE';
     SET GLOBAL general_log = 1;`,
    { via: 'socket' },
  );
  assert.equal(setup.code, 0, setup.stderr);

  const env = { ...process.env, MYSQL_PWD: server.password };
  const base = ['--no-defaults', '--protocol=TCP', '-h127.0.0.1', `-P${server.port}`, '-uroot'];
  const run = (bin: string, args: string[], input?: string) => {
    const r = spawnSync(bin, args, { env, encoding: 'utf8', input: input ?? '', timeout: 60_000 });
    return r;
  };
  const dumps: string[][] = [
    ['test'],
    ['--single-transaction', 'test'],
    ['--routines', '--events', '--triggers', 'test'],
    ['--single-transaction', '--all-databases'],
    ['--add-drop-database', '--databases', 'test'],
    ['--no-data', 'test'],
    ['--lock-all-tables', 'test'],
    ['--complete-insert', '--skip-extended-insert', '--hex-blob', '--tz-utc', 'test'],
    ['--compact', 'test'],
    ['--xml', 'test'],
    ['--system=all'],
  ];
  let routinesDump = '';
  for (const d of dumps) {
    const r = run(dump, [...base, ...d]);
    // --all-databases warns about the log tables it skips; only stdout matters here.
    assert.ok(r.status === 0 || d.includes('--all-databases'), `${d.join(' ')}: ${r.stderr}`);
    if (d.includes('--routines')) routinesDump = r.stdout;
  }
  const tab = path.join(server.secureFileDir, 'tab');
  fs.mkdirSync(tab);
  fs.chmodSync(tab, 0o777); // the server writes the .txt files, the client the .sql ones
  const tabRun = run(dump, [...base, `--tab=${tab}`, 'test']);
  assert.equal(tabRun.status, 0, tabRun.stderr);

  // A restore: the CLI splits the dump into statements (DELIMITER ;; around triggers, routines).
  const restore = run('mariadb', [...base, 'test'], routinesDump);
  assert.equal(restore.status, 0, restore.stderr);

  // The CLI itself: interactive startup (select @@version_comment …, auto-rehash), status, use.
  const script = findBinary('script');
  if (script) {
    run(script, ['-qc', `mariadb ${base.join(' ')} test`, '/dev/null'], 'select 1;\nstatus\nuse test\nshow tables;\nquit\n');
  } else {
    run('mariadb', [...base, '-e', 'select 1; status', 'test']);
  }
  const admin = findBinary('mariadb-admin') ?? findBinary('mysqladmin');
  if (admin) for (const cmd of ['status', 'processlist', 'variables', 'extended-status', 'ping', 'flush-tables', 'flush-privileges']) run(admin, [...base, cmd]);
  const check = findBinary('mariadb-check') ?? findBinary('mysqlcheck');
  if (check) run(check, [...base, 'test']);

  const log = await mariadbCli(server, "SET GLOBAL general_log = 0; SELECT hex(argument) FROM mysql.general_log WHERE command_type IN ('Query', 'Prepare', 'Execute')", { via: 'socket' });
  assert.equal(log.code, 0, log.stderr);
  const sent = [...new Set(log.stdout.trim().split('\n').filter(Boolean).map((h) => Buffer.from(h, 'hex').toString('utf8')))];
  assert.ok(sent.length > 150, `only ${sent.length} distinct statements captured`);

  const byClass = new Map<string, number>();
  const unknown: string[] = [];
  for (const s of sent) {
    if (/^SET GLOBAL (log_output|general_log)/.test(s)) continue; // our own
    const c = classifyMysql(s);
    byClass.set(c.class, (byClass.get(c.class) ?? 0) + 1);
    if (c.class === 'unknown') unknown.push(`${JSON.stringify(s.slice(0, 200))}: ${c.reason}`);
  }
  t.diagnostic(`${sent.length} distinct statements: ${[...byClass].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  assert.deepEqual(unknown, []);

  // Spot checks on what the tools are: a plain dump reads (and locks), a restore writes DDL.
  const classOf = (re: RegExp) => sent.filter((s) => re.test(s)).map((s) => classifyMysql(s).class);
  assert.ok(classOf(/^SELECT \/\*!40001 SQL_NO_CACHE \*\/ [^']* FROM `t`$/).every((c) => c === 'read'));
  assert.ok(classOf(/INTO OUTFILE/).every((c) => c === 'admin'));
  assert.ok(classOf(/^FLUSH TABLES WITH READ LOCK$/).every((c) => c === 'admin'));
  assert.ok(classOf(/CREATE DEFINER=`root`@`localhost` (FUNCTION|PROCEDURE)/).every((c) => c === 'procedural'));
  assert.ok(classOf(/^select @@version_comment limit 1$/).length <= 1);
});
