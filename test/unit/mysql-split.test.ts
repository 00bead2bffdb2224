import { test } from 'node:test';
import assert from 'node:assert/strict';
import { splitMysqlStatements as split } from '../../src/protocols/mysql/relay.ts';

test('splitMysqlStatements: quotes, comments and executable comments', () => {
  assert.deepEqual(split('select 1; select 2;'), ['select 1', 'select 2']);
  assert.deepEqual(split("select ';' ; select \"a;b\"; select `c;d`"), ["select ';'", 'select "a;b"', 'select `c;d`']);
  assert.deepEqual(split("select 'it\\'s; x'; select 2"), ["select 'it\\'s; x'", 'select 2']);
  // NO_BACKSLASH_ESCAPES: the backslash ends nothing, the quote closes the string
  assert.deepEqual(split("select 'a\\'; drop table t; -- '", true), ["select 'a\\'", 'drop table t']);
  assert.deepEqual(split('select 1; -- done\n'), ['select 1']);
  assert.deepEqual(split('select 1 # x; y\n; select 2'), ['select 1 # x; y', 'select 2']);
  assert.deepEqual(split('/* a; b */ select 1'), ['/* a; b */ select 1']);
  assert.deepEqual(split('/*!50000 drop table t; drop table u */'), ['/*!50000 drop table t; drop table u */']);
  assert.deepEqual(split('/* only a comment */'), []);
  assert.deepEqual(split('select 1--1; select 2'), ['select 1--1', 'select 2']);
});
