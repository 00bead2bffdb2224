// MySQL / MariaDB statement classification, onto the same vocabulary as classify-postgres.ts.
//
// Three layers, each doing what it can do reliably:
//
// 1. A lexer written to the server's own rules (sql_lex.cc): quoting with backslash escapes,
//    `#`, `-- ` and `/* */` comments, and EXECUTABLE comments, which the server runs as code:
//    `/*! … */`, `/*!50000 … */` (version-gated), `/*M! … */`, `/*M!100101 … */` (MariaDB only).
//    `/*!50000 DROP TABLE t */` is a DROP TABLE, and no parser sees it unless the comment is
//    opened first. Comments are removed here, so the parser below never decides what is a
//    comment (`--1` is minus minus one to the server, a comment to many parsers).
// 2. A statement-head grammar over the tokens: the statement kind (and so its class) is decided
//    by the leading keywords, for the statements MySQL 8 and MariaDB 10/11 document. A head we
//    do not know is `unknown`. Over every token, whatever the statement, a scan for dangerous
//    functions (LOAD_FILE, sys_exec), sequence writes and INTO OUTFILE/DUMPFILE, so that no
//    parser shortcoming can hide them. Statements are split at `;` here; inside a stored
//    program's or compound statement's body the pieces are over-approximated (bodyPiece).
// 3. node-sql-parser, for what needs a real grammar: which relations a SELECT/INSERT/UPDATE/
//    DELETE/REPLACE reads and writes, whether it has a WHERE, nested SELECTs, function calls. It
//    does not cover all of MySQL: when it fails on a statement whose details depend on it, the
//    statement is `unknown` (fail closed). A few tokens that cannot change what a statement does
//    (index hints, LOCK IN SHARE MODE, `LIMIT n` on UPDATE/DELETE, …) are dropped and the parse
//    retried, with the other dialect's grammar too, before giving up. A SELECT without FROM,
//    subquery or INTO (`SELECT 1`, `SELECT @@version_comment LIMIT 1`) does not need it.
//
// Version-gated comments depend on the server: MariaDB 10.11 runs `/*!40101 …*/` and
// `/*M!100100 …*/` but skips `/*!80001 …*/` (MySQL 5.7+ numbers are ignored), MySQL 8 runs
// `/*!80001 …*/` and skips every `/*M!`. Given the server (MysqlClassifyOptions.server), the
// text is read exactly as that server reads it. Without it, the text is read as each server
// that would read it differently (per flavor, one per version the comments name), and the
// classifications are united: whichever server it is, the verdict is at least as strict.
//
// Quoting assumptions: `"…"` is a string (no ANSI_QUOTES in sql_mode); backslash escapes apply
// unless noBackslashEscapes says otherwise (the server reports NO_BACKSLASH_ESCAPES in every OK
// packet's status flags, so the gateway knows it).
import { ClassificationCache, deepFreeze } from './classification-cache.ts';
import { createRequire } from 'node:module';
import {
  ClassificationAccumulator,
  type Classification,
  type CommandClass,
  mergeClassifications,
  unionClassifications,
  unknownClassification,
} from './classification.ts';
import { PreparedStatements } from './prepared.ts';

// The per-dialect builds are a tenth of the all-dialects bundle. CommonJS without named exports
// that Node can detect, hence require.
interface SqlParser {
  astify(sql: string, opt: { database: string }): unknown;
}
const require = createRequire(import.meta.url);
let mariaParser: SqlParser | undefined;
let mysqlParser: SqlParser | undefined;
function parsers(flavor: Flavor): [[SqlParser, string], [SqlParser, string]] {
  mariaParser ??= new (require('node-sql-parser/build/mariadb.js') as { Parser: new () => SqlParser }).Parser();
  mysqlParser ??= new (require('node-sql-parser/build/mysql.js') as { Parser: new () => SqlParser }).Parser();
  const maria: [SqlParser, string] = [mariaParser, 'MariaDB'];
  const my: [SqlParser, string] = [mysqlParser, 'MySQL'];
  return flavor === 'mysql' ? [my, maria] : [maria, my];
}

type Obj = Record<string, unknown>;
type Flavor = 'mariadb' | 'mysql';

/** The server a text is meant for: executable comments are opened by its rules. */
export interface MysqlServer {
  flavor: Flavor;
  /** MYSQL_VERSION_ID style: 10.11.19 → 101119, 8.0.36 → 80036 */
  version: number;
}

export interface MysqlClassifyOptions {
  /** Read version-gated comments as this server does. Unknown: read them every way, unite. */
  server?: MysqlServer;
  /** sql_mode has NO_BACKSLASH_ESCAPES (status flag 0x0200 in the server's OK packets). */
  noBackslashEscapes?: boolean;
}

/**
 * The server from its handshake version string: "10.11.19-MariaDB-0+deb12u1", "5.5.5-10.11.19-
 * MariaDB" (MariaDB before 11 prefixes 5.5.5- for old clients), "8.0.36", "8.4.0-commercial".
 */
export function mysqlServerFromVersion(versionString: string): MysqlServer | undefined {
  let s = versionString.trim();
  const maria = /mariadb/i.test(s);
  if (maria) s = s.replace(/^5\.5\.5-/, '');
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(s);
  if (!m) return undefined;
  const [maj, min, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (min > 99 || patch > 99) return undefined;
  return { flavor: maria ? 'mariadb' : 'mysql', version: maj * 10000 + min * 100 + patch };
}

// ---------------------------------------------------------------------------------------------
// Lexer

type TokKind = 'word' | 'qident' | 'string' | 'number' | 'var' | 'sysvar' | 'param' | 'op' | '(' | ')' | ',' | '.' | ';';

interface Tok {
  k: TokKind;
  /** the token's text as written (strings and identifiers with their quotes) */
  raw: string;
  /** words: upper-cased; quoted identifiers and strings: the value, unquoted */
  v: string;
  /** whitespace or a comment came before it (a token boundary the renderer must keep) */
  sp: boolean;
}

/**
 * How one reading treats version-gated comments: as the given server would. When the server is
 * not known, every server that reads the text differently gets its own reading.
 */
type Reading = MysqlServer;

interface LexResult {
  toks: Tok[];
  error?: string;
}

const OPERATORS = ['<=>', '->>', '<=', '>=', '<>', '!=', ':=', '||', '&&', '<<', '>>', '->', '=', '<', '>', '+', '-', '*', '/', '%', '^', '&', '|', '~', '!', ':', '{', '}', '[', ']'];

function isIdentStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36 || c >= 128;
}
function isIdentChar(c: number): boolean {
  return isIdentStart(c) || (c >= 48 && c <= 57);
}
function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}
function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;
}

/** Decides whether a `/*!` (maria=false) or `/*M!` (maria=true) comment with `version` runs. */
function opens(server: Reading, maria: boolean, version: number | null): boolean {
  if (server.flavor === 'mysql') return !maria && (version === null || version <= server.version);
  if (version === null) return true;
  // sql_lex.cc: MySQL 5.7+ numbers (50700-99999) are skipped unless in a MariaDB comment.
  return version <= server.version && (maria || version < 50700 || version > 99999);
}

/**
 * Tokenizes `text` as the server would, opening executable comments according to `reading`.
 * Lexical errors the server would also reject (unterminated string or comment, `;` inside an
 * executable comment) are returned as `error`.
 */
function lex(text: string, reading: Reading, noBackslashEscapes: boolean): LexResult {
  const toks: Tok[] = [];
  const n = text.length;
  let i = 0;
  let sp = false;
  /** inside an opened executable comment: its `*​/` closes it */
  let inExec = false;
  const push = (k: TokKind, raw: string, v: string) => {
    toks.push({ k, raw, v, sp });
    sp = false;
  };
  const fail = (error: string): LexResult => ({ toks, error });

  /** Skips a comment body from `j` (just after its opening), allowing `nest` levels; returns the index after `*​/` or -1. */
  const skipComment = (j: number, nest: number): number => {
    while (j < n) {
      if (nest > 0 && text.charCodeAt(j) === 47 /* / */ && text.charCodeAt(j + 1) === 42 /* * */) {
        const end = skipComment(j + 2, nest - 1);
        if (end < 0) return -1;
        j = end;
        continue;
      }
      if (text.charCodeAt(j) === 42 && text.charCodeAt(j + 1) === 47) return j + 2;
      j++;
    }
    return -1;
  };

  /** The end of a quoted run starting at `j` (the opening quote), or -1 if unterminated. */
  const skipQuoted = (j: number, q: number, escapes: boolean): number => {
    j++;
    while (j < n) {
      const c = text.charCodeAt(j);
      if (c === 92 /* \ */ && escapes) {
        j += 2;
        continue;
      }
      if (c === q) {
        if (text.charCodeAt(j + 1) === q) {
          j += 2;
          continue;
        }
        return j + 1;
      }
      j++;
    }
    return -1;
  };

  while (i < n) {
    const c = text.charCodeAt(i);
    if (isSpace(c)) {
      sp = true;
      i++;
      continue;
    }
    // '#' comment, and '-- ' (two dashes and a space or control character, or the end).
    if (c === 35 || (c === 45 && text.charCodeAt(i + 1) === 45 && (i + 2 >= n || text.charCodeAt(i + 2) <= 32))) {
      while (i < n && text.charCodeAt(i) !== 10) i++;
      sp = true;
      continue;
    }
    if (c === 47 && text.charCodeAt(i + 1) === 42) {
      // '/*': executable (`/*!`, `/*M!`) or an ordinary comment.
      const maria = (text[i + 2] === 'M' || text[i + 2] === 'm') && text.charCodeAt(i + 3) === 33;
      const bang = text.charCodeAt(i + 2) === 33;
      const mariaSyntax = maria && reading.flavor === 'mariadb';
      if (bang || mariaSyntax) {
        if (inExec) return fail('nested executable comment');
        let j = i + (maria ? 4 : 3);
        let version: number | null = null;
        let digits = 0;
        while (digits < 5 && isDigit(text.charCodeAt(j + digits))) digits++;
        if (digits === 5) {
          // Exactly 5 digits (MySQL), or 6 on MariaDB (10.x versions): MMmmpp.
          const six = isDigit(text.charCodeAt(j + 5)) && reading.flavor === 'mariadb';
          const len = six ? 6 : 5;
          version = Number(text.slice(j, j + len));
          j += len;
        }
        if (opens(reading, maria, version)) {
          inExec = true;
          sp = true;
          i = j;
          continue;
        }
        const end = skipComment(j, 1); // a skipped gated comment may hold one nested comment
        if (end < 0) return fail('unterminated comment');
        sp = true;
        i = end;
        continue;
      }
      const end = skipComment(i + 2, 0); // ordinary comments do not nest
      if (end < 0) return fail('unterminated comment');
      sp = true;
      i = end;
      continue;
    }
    if (inExec && c === 42 && text.charCodeAt(i + 1) === 47) {
      inExec = false;
      sp = true;
      i += 2;
      continue;
    }
    if (c === 39 || c === 34) {
      const end = skipQuoted(i, c, !noBackslashEscapes);
      if (end < 0) return fail('unterminated string');
      const raw = text.slice(i, end);
      push('string', noBackslashEscapes ? reescape(raw) : raw, unquote(raw, !noBackslashEscapes));
      i = end;
      continue;
    }
    if (c === 96 /* ` */) {
      const end = skipQuoted(i, 96, false);
      if (end < 0) return fail('unterminated quoted identifier');
      const raw = text.slice(i, end);
      push('qident', raw, raw.slice(1, -1).replace(/``/g, '`'));
      i = end;
      continue;
    }
    if (c === 64 /* @ */) {
      if (text.charCodeAt(i + 1) === 64) {
        // @@var, @@global.var, @@session.var
        let j = i + 2;
        while (j < n && (isIdentChar(text.charCodeAt(j)) || text.charCodeAt(j) === 46)) j++;
        push('sysvar', text.slice(i, j), text.slice(i + 2, j).toLowerCase());
        i = j;
        continue;
      }
      const q = text.charCodeAt(i + 1);
      if (q === 39 || q === 34 || q === 96) {
        const end = skipQuoted(i + 1, q, q !== 96 && !noBackslashEscapes);
        if (end < 0) return fail('unterminated variable name');
        push('var', text.slice(i, end), text.slice(i + 2, end - 1));
        i = end;
        continue;
      }
      let j = i + 1;
      while (j < n && (isIdentChar(text.charCodeAt(j)) || text.charCodeAt(j) === 46)) j++;
      push('var', text.slice(i, j), text.slice(i + 1, j));
      i = j;
      continue;
    }
    if (isDigit(c) || (c === 46 && isDigit(text.charCodeAt(i + 1)))) {
      let j = i;
      if (c === 48 && (text[i + 1] === 'x' || text[i + 1] === 'b') && isIdentChar(text.charCodeAt(i + 2))) j += 2;
      while (j < n && (isIdentChar(text.charCodeAt(j)) || text.charCodeAt(j) === 46)) {
        // exponent sign: 1e-5
        if ((text[j] === 'e' || text[j] === 'E') && (text[j + 1] === '-' || text[j + 1] === '+') && isDigit(text.charCodeAt(j + 2))) j += 2;
        else j++;
      }
      const raw = text.slice(i, j);
      // `1abc` is an identifier in MySQL; `1e5`, `1.5`, `0x1F` numbers.
      const numeric = /^(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|0x[0-9a-fA-F]+|0b[01]+)$/.test(raw);
      push(numeric ? 'number' : 'word', raw, numeric ? raw : raw.toUpperCase());
      i = j;
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentChar(text.charCodeAt(j))) j++;
      const raw = text.slice(i, j);
      // X'41', B'01', N'x': one literal to the server.
      if (j - i === 1 && /[xXbBnN]/.test(raw) && text.charCodeAt(j) === 39) {
        const end = skipQuoted(j, 39, !noBackslashEscapes && /[nN]/.test(raw));
        if (end < 0) return fail('unterminated string');
        push('string', text.slice(i, end), unquote(text.slice(j, end), true));
        i = end;
        continue;
      }
      push('word', raw, raw.toUpperCase());
      i = j;
      continue;
    }
    if (c === 59 /* ; */) {
      if (inExec) return fail('";" inside an executable comment');
      push(';', ';', ';');
      i++;
      continue;
    }
    if (c === 40 || c === 41 || c === 44 || c === 46) {
      const ch = text[i]!;
      push(ch as TokKind, ch, ch);
      i++;
      continue;
    }
    if (c === 63 /* ? */) {
      push('param', '?', '?');
      i++;
      continue;
    }
    const op = OPERATORS.find((o) => text.startsWith(o, i));
    if (op) {
      push('op', op, op);
      i += op.length;
      continue;
    }
    if (c === 0) return fail('NUL byte');
    return fail(`unexpected character ${JSON.stringify(text[i])}`);
  }
  if (inExec) return fail('unterminated executable comment');
  return { toks };
}

/** The value of a quoted string (quotes removed, doubled quotes and escapes resolved). */
function unquote(raw: string, escapes: boolean): string {
  const q = raw[0]!;
  const body = raw.slice(1, -1);
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const ch = body[i]!;
    if (ch === '\\' && escapes && i + 1 < body.length) {
      const e = body[++i]!;
      out += ({ n: '\n', t: '\t', r: '\r', '0': '\0', b: '\b', Z: '\x1a', '%': '\\%', _: '\\_' } as Record<string, string>)[e] ?? e;
    } else if (ch === q && body[i + 1] === q) {
      out += q;
      i++;
    } else {
      out += ch;
    }
  }
  return out;
}

/** A string written under NO_BACKSLASH_ESCAPES, rewritten for a parser that honours backslashes. */
function reescape(raw: string): string {
  return raw[0] + raw.slice(1, -1).replace(/\\/g, '\\\\') + raw[raw.length - 1];
}

/** Tokens back to text for the parser: comments gone, executable comments opened. */
function render(toks: readonly Tok[]): string {
  let out = '';
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!;
    // Operators are always spaced, so two of them never fuse into something else (`- -1` must
    // not become `--1`, which the parser would take for a comment).
    if (i > 0 && (t.sp || (t.k === 'op' && toks[i - 1]!.k === 'op'))) out += ' ';
    out += t.raw;
  }
  return out;
}

function splitStatements(toks: readonly Tok[]): Tok[][] {
  const out: Tok[][] = [];
  let cur: Tok[] = [];
  for (const t of toks) {
    if (t.k === ';') {
      if (cur.length) out.push(cur);
      cur = [];
    } else {
      cur.push(t);
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Functions and settings

/**
 * Functions that reach outside the data: the server's files, the OS (the lib_mysqludf_sys UDFs
 * that attackers install), other servers (Spider), or the search engine's admin commands.
 * Matched on the unqualified, lower-cased name.
 */
const DANGEROUS_FUNCTIONS = new Set([
  'load_file',
  'sys_exec', 'sys_eval', 'sys_get', 'sys_set', 'lib_mysqludf_sys_info',
  'spider_direct_sql', 'spider_bg_direct_sql', 'spider_copy_tables', 'spider_flush_table_mon_cache', 'spider_ping_table',
  'mroonga_command',
]);

/** Functions that change state although they are called from a SELECT (MariaDB sequences). */
const WRITE_FUNCTIONS = new Set(['nextval', 'setval']);

/**
 * Session settings whose change is an escalation: they hide the session from the binary log or
 * the general log (replicas and audits stop seeing it), pose as another thread or replication
 * source, or switch Galera replication off. All need SUPER or similar anyway.
 */
const SENSITIVE_SETTINGS = new Set([
  'sql_log_bin', 'sql_log_off', 'log_slow_query', 'slow_query_log', 'general_log', 'log_queries_not_using_indexes',
  'pseudo_thread_id', 'pseudo_slave_mode', 'pseudo_replica_mode', 'gtid_domain_id', 'gtid_seq_no', 'gtid_next',
  'server_id', 'skip_replication', 'sql_slave_skip_counter', 'binlog_format', 'binlog_row_image', 'binlog_annotate_row_events',
  'wsrep_on', 'wsrep_osu_method', 'wsrep_trx_fragment_size', 'read_only', 'super_read_only', 'offline_mode',
  'secure_timestamp', 'debug', 'debug_dbug', 'session_track_system_variables',
]);

/** Settings that switch integrity checks off for the session (mysqldump restores do this). */
const INTEGRITY_SETTINGS = new Set(['foreign_key_checks', 'unique_checks', 'check_constraint_checks']);

/** Storage engines whose tables live outside this server's data: other servers, arbitrary files. */
const EXTERNAL_ENGINES = new Set(['CONNECT', 'FEDERATED', 'FEDERATEDX', 'SPIDER']);

/** Words that are followed by `(` without being a function call. */
const NOT_FUNCTIONS = new Set([
  'IN', 'EXISTS', 'INTO', 'TABLE', 'ON', 'USING', 'AS', 'AND', 'OR', 'NOT', 'XOR', 'ANY', 'SOME', 'ALL', 'WHERE', 'SELECT',
  'FROM', 'JOIN', 'KEY', 'INDEX', 'PRIMARY', 'UNIQUE', 'FOREIGN', 'REFERENCES', 'CHECK', 'CONSTRAINT', 'PARTITION',
  'PARTITIONS', 'OVER', 'WINDOW', 'ROW', 'TO', 'VALUES', 'VALUE', 'SET', 'LIKE', 'REGEXP', 'RLIKE', 'BETWEEN', 'IS',
  'WITH', 'FOR', 'BY', 'ORDER', 'GROUP', 'HAVING', 'LIMIT', 'UNION', 'EXCEPT', 'INTERSECT', 'CASE', 'WHEN', 'THEN',
  'ELSE', 'END', 'DISTINCT', 'AGAINST', 'DECIMAL', 'NUMERIC', 'FLOAT', 'DOUBLE', 'INT', 'INTEGER', 'BIGINT',
  'SMALLINT', 'TINYINT', 'MEDIUMINT', 'VARCHAR', 'VARBINARY', 'BINARY', 'BIT', 'DATETIME', 'TIMESTAMP', 'TIME', 'ENUM',
  'RETURN', 'RETURNS', 'CALL', 'DO', 'IF', 'WHILE', 'UNTIL', 'LATERAL', 'RECURSIVE', 'DUAL', 'STATUS', 'LOCK',
]);
// IF is both a function and a statement; it is listed here so that `IF (…) THEN` in a body is
// not reported as a call; IF() as a function cannot reach outside the data either way.

// ---------------------------------------------------------------------------------------------
// Accumulator (as in classify-postgres.ts)

class Acc extends ClassificationAccumulator {
  statement(type: string, cls: CommandClass, reason?: string): void {
    this.type(type);
    this.add(cls, reason ?? type.replace(/_/g, ' '));
  }

  /** Folds in a nested statement: all of it if it runs now, only reads and functions if `inert`. */
  absorb(c: Classification, inert = false): void {
    for (const f of c.functions) this.functions.add(f);
    if (inert) {
      for (const r of [...c.reads, ...c.writes]) this.reads.add(r);
      // A definition that calls LOAD_FILE deserves the same scrutiny as the call.
      if (c.flags.includes('dangerous_function')) {
        this.flags.add('dangerous_function');
        this.add('admin', c.reason ?? 'dangerous function');
      }
      return;
    }
    for (const k of c.classes) this.add(k, k === c.class && c.reason ? c.reason : k);
    for (const t of c.types) this.type(t);
    for (const r of c.reads) this.reads.add(r);
    for (const w of c.writes) this.writes.add(w);
    for (const f of c.flags) this.flags.add(f);
    this.prepareName ??= c.prepareName;
    this.executeName ??= c.executeName;
    this.deallocateName ??= c.deallocateName;
  }
}

interface Ctx {
  opts: MysqlClassifyOptions;
  flavor: Flavor;
}

// ---------------------------------------------------------------------------------------------
// Token helpers

const isWord = (t: Tok | undefined, ...words: string[]): boolean => t !== undefined && t.k === 'word' && (words.length === 0 || words.includes(t.v));

/** Index after the keyword sequence `words` at `i`, or -1. */
function seq(toks: readonly Tok[], i: number, ...words: string[]): number {
  for (const w of words) {
    if (!isWord(toks[i], w)) return -1;
    i++;
  }
  return i;
}

/** Skips any of `words` (optional modifiers) at `i`. */
function skipWords(toks: readonly Tok[], i: number, words: ReadonlySet<string>): number {
  while (isWord(toks[i]) && words.has(toks[i]!.v)) i++;
  return i;
}

function isNamePart(t: Tok | undefined): boolean {
  return t !== undefined && (t.k === 'word' || t.k === 'qident' || t.k === 'string' || (t.k === 'op' && t.raw === '*'));
}

/** A possibly qualified name at `i` ("db.t", "*.*"), as written without quotes. */
function readName(toks: readonly Tok[], i: number): { name: string; next: number } | undefined {
  if (!isNamePart(toks[i])) return undefined;
  const parts = [toks[i]!.k === 'word' ? toks[i]!.raw : toks[i]!.v];
  let j = i + 1;
  while (toks[j]?.k === '.' && isNamePart(toks[j + 1])) {
    parts.push(toks[j + 1]!.k === 'word' ? toks[j + 1]!.raw : toks[j + 1]!.v);
    j += 2;
  }
  return { name: parts.join('.'), next: j };
}

/** A comma-separated list of names starting at `i`. */
function readNames(toks: readonly Tok[], i: number): { names: string[]; next: number } {
  const names: string[] = [];
  for (;;) {
    const r = readName(toks, i);
    if (!r) break;
    names.push(r.name);
    i = r.next;
    if (toks[i]?.k !== ',') break;
    i++;
  }
  return { names, next: i };
}

function skipIfExists(toks: readonly Tok[], i: number): number {
  const a = seq(toks, i, 'IF', 'NOT', 'EXISTS');
  if (a >= 0) return a;
  const b = seq(toks, i, 'IF', 'EXISTS');
  return b >= 0 ? b : i;
}

/** Index of the `)` matching the `(` at `i`, or the end. */
function closing(toks: readonly Tok[], i: number): number {
  let depth = 0;
  for (let j = i; j < toks.length; j++) {
    if (toks[j]!.k === '(') depth++;
    else if (toks[j]!.k === ')' && --depth === 0) return j;
  }
  return toks.length;
}

/** Index of the first top-level (paren depth 0) token from `i` satisfying `pred`, or -1. */
function findTop(toks: readonly Tok[], i: number, pred: (t: Tok, j: number) => boolean): number {
  let depth = 0;
  for (let j = i; j < toks.length; j++) {
    const t = toks[j]!;
    if (t.k === '(') depth++;
    else if (t.k === ')') depth--;
    else if (depth === 0 && pred(t, j)) return j;
  }
  return -1;
}

/** Removes the DEFINER = user clause tools put in CREATE statements (`root`@`localhost`, CURRENT_USER[()]). */
function skipDefiner(toks: readonly Tok[], i: number): number {
  if (!isWord(toks[i], 'DEFINER') || toks[i + 1]?.raw !== '=') return i;
  let j = i + 2;
  const u = readName(toks, j);
  if (!u) return j;
  j = u.next;
  if (toks[j]?.k === '(' && toks[j + 1]?.k === ')') j += 2; // CURRENT_USER()
  if (toks[j]?.k === 'var') j++; // 'u'@'h' lexes as a string and a variable
  return j;
}

// ---------------------------------------------------------------------------------------------
// Token-level scans: run over every statement, whatever path classifies it

/** Dangerous and state-changing functions, INTO OUTFILE/DUMPFILE, NEXT VALUE FOR. */
function dangerScan(toks: readonly Tok[], acc: Acc): void {
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!;
    if (t.k !== 'word' && t.k !== 'qident') continue;
    const next = toks[i + 1];
    if (next?.k === '(') {
      const name = t.v.toLowerCase();
      if (DANGEROUS_FUNCTIONS.has(name)) {
        acc.functions.add(name);
        acc.flags.add('dangerous_function');
        acc.add('admin', `calls ${name}`);
      } else if (WRITE_FUNCTIONS.has(name)) {
        acc.functions.add(name);
        acc.add('write', `calls ${name}`);
      }
      continue;
    }
    if (t.k !== 'word') continue;
    if (t.v === 'INTO' && isWord(next, 'OUTFILE', 'DUMPFILE')) {
      acc.flags.add('server_file_copy');
      acc.add('admin', `SELECT … INTO ${next!.v} writes a file on the database server`);
    } else if (t.v === 'NEXT' && seq(toks, i + 1, 'VALUE', 'FOR') > 0) {
      acc.functions.add('nextval');
      acc.add('write', 'NEXT VALUE FOR advances a sequence');
    }
  }
}

/** Function names called in a token range (for statements the parser does not handle). */
function collectFunctions(toks: readonly Tok[], from: number, to: number, acc: Acc): void {
  for (let i = from; i < to; i++) {
    const t = toks[i]!;
    if ((t.k === 'word' || t.k === 'qident') && toks[i + 1]?.k === '(' && !(t.k === 'word' && NOT_FUNCTIONS.has(t.v))) {
      acc.functions.add(t.v.toLowerCase());
    }
  }
}

/**
 * Expressions in statements the parser does not handle (SET, DO, SHOW … WHERE, CALL arguments):
 * their function calls, and each parenthesized subquery classified as the SELECT it is.
 */
function scanExpressions(toks: readonly Tok[], from: number, to: number, acc: Acc, ctx: Ctx): void {
  collectFunctions(toks, from, to, acc);
  for (let i = from; i < to; i++) {
    if (toks[i]!.k === '(' && isWord(toks[i + 1], 'SELECT', 'WITH', 'VALUES', 'TABLE')) {
      const end = closing(toks, i);
      acc.absorb(classifyTokens(toks.slice(i + 1, end), ctx));
      i = end;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The parser path (SELECT, INSERT, REPLACE, UPDATE, DELETE)

/**
 * The AST of one statement, or the parser's error. node-sql-parser costs about a millisecond a
 * statement (its generated parser rebuilds its tables on every call), hence astify() rather
 * than parse() (which walks again for table lists), and the cache in front of everything.
 */
function tryParse(text: string, parser: SqlParser, db: string): Obj | Error {
  try {
    const r = parser.astify(text, { database: db });
    const ast = Array.isArray(r) ? (r.length === 1 ? (r[0] as Obj) : undefined) : (r as Obj);
    return ast ?? new Error('the parser found more than one statement');
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

const SELECT_OPTIONS = new Set([
  'SQL_NO_CACHE', 'SQL_CACHE', 'SQL_CALC_FOUND_ROWS', 'SQL_BUFFER_RESULT', 'SQL_SMALL_RESULT', 'SQL_BIG_RESULT',
  'HIGH_PRIORITY', 'STRAIGHT_JOIN', 'LOW_PRIORITY', 'DELAYED', 'QUICK',
]);

/**
 * Drops tokens that do not change what a statement does but that node-sql-parser does not
 * know, and notes what they said (FOR SHARE). Only used after a first parse failed.
 */
function fixups(toks: readonly Tok[], head: string, acc: Acc): Tok[] {
  const out: Tok[] = [];
  const n = toks.length;
  for (let i = 0; i < n; i++) {
    const t = toks[i]!;
    const prev = out[out.length - 1];
    if (t.k === 'word') {
      // Modifiers: SELECT SQL_NO_CACHE …, INSERT LOW_PRIORITY …, DELETE QUICK …
      if (SELECT_OPTIONS.has(t.v) && (isWord(prev, 'SELECT', 'INSERT', 'REPLACE', 'UPDATE', 'DELETE', 'DISTINCT', 'ALL') || (prev && SELECT_OPTIONS.has(prev.v)))) continue;
      if (t.v === 'STRAIGHT_JOIN') {
        out.push({ ...t, raw: 'JOIN', v: 'JOIN' });
        continue;
      }
      // Character-set introducers: _utf8mb4'x', _binary 0x00
      if (t.v.startsWith('_') && (toks[i + 1]?.k === 'string' || toks[i + 1]?.k === 'number')) continue;
      // Index hints: USE|FORCE|IGNORE INDEX|KEY [FOR JOIN|ORDER BY|GROUP BY] (…)
      if ((t.v === 'USE' || t.v === 'FORCE' || t.v === 'IGNORE') && isWord(toks[i + 1], 'INDEX', 'KEY')) {
        let j = i + 2;
        if (isWord(toks[j], 'FOR')) j += isWord(toks[j + 1], 'JOIN') ? 2 : 3;
        if (toks[j]?.k === '(') {
          i = closing(toks, j);
          continue;
        }
      }
      // Partition selection: FROM t PARTITION (p0, p1)
      if (t.v === 'PARTITION' && toks[i + 1]?.k === '(' && prev && (prev.k === 'word' || prev.k === 'qident')) {
        i = closing(toks, i + 1);
        continue;
      }
      const lockShare = seq(toks, i, 'LOCK', 'IN', 'SHARE', 'MODE');
      if (lockShare > 0) {
        acc.flags.add('for_share');
        i = lockShare - 1;
        continue;
      }
      if (seq(toks, i, 'FOR', 'SHARE') > 0) {
        acc.flags.add('for_share');
        i++;
        continue;
      }
      if (t.v === 'NOWAIT') continue;
      if (seq(toks, i, 'SKIP', 'LOCKED') > 0) {
        i++;
        continue;
      }
      if (t.v === 'WAIT' && toks[i + 1]?.k === 'number' && isWord(prev, 'UPDATE', 'SHARE', 'MODE')) {
        i++;
        continue;
      }
      // SELECT … INTO OUTFILE 'f' [CHARACTER SET cs] [FIELDS …] [LINES …] (mysqldump --tab): the
      // file's format. The statement is admin for the OUTFILE whatever the format.
      if (out.length >= 2 && out[out.length - 1]!.k === 'string' && isWord(out[out.length - 2], 'OUTFILE', 'DUMPFILE')) {
        let j = i;
        for (;;) {
          if (seq(toks, j, 'CHARACTER', 'SET') > 0 && toks[j + 2]) j += 3;
          else if (isWord(toks[j], 'FIELDS', 'COLUMNS', 'LINES', 'OPTIONALLY')) j++;
          else if (isWord(toks[j], 'TERMINATED', 'ENCLOSED', 'ESCAPED', 'STARTING') && isWord(toks[j + 1], 'BY') && toks[j + 2]?.k === 'string') j += 3;
          else break;
        }
        if (j > i) {
          i = j - 1;
          continue;
        }
      }
      // UPDATE/DELETE … LIMIT n (the rows it may touch; not a filter that WHERE would be)
      if ((head === 'UPDATE' || head === 'DELETE') && t.v === 'LIMIT' && toks[i + 1] && (toks[i + 1]!.k === 'number' || toks[i + 1]!.k === 'param') && i + 2 === n) {
        break;
      }
      // NEXT VALUE FOR s → NEXTVAL(s); PREVIOUS VALUE FOR s → LASTVAL(s)
      if ((t.v === 'NEXT' || t.v === 'PREVIOUS') && seq(toks, i + 1, 'VALUE', 'FOR') > 0) {
        const r = readName(toks, i + 3);
        if (r) {
          const fn = t.v === 'NEXT' ? 'NEXTVAL' : 'LASTVAL';
          out.push({ k: 'word', raw: fn, v: fn, sp: t.sp }, { k: '(', raw: '(', v: '(', sp: false }, { k: 'word', raw: r.name, v: r.name.toUpperCase(), sp: false }, { k: ')', raw: ')', v: ')', sp: false });
          i = r.next - 1;
          continue;
        }
      }
    }
    out.push(t);
  }
  return out;
}

const EXPECTED_AST: Record<string, string> = { SELECT: 'select', INSERT: 'insert', REPLACE: 'replace', UPDATE: 'update', DELETE: 'delete' };

function cteNames(v: unknown, into: Set<string>): void {
  if (v === null || typeof v !== 'object') return;
  if (Array.isArray(v)) {
    for (const x of v) cteNames(x, into);
    return;
  }
  const o = v as Obj;
  if (Array.isArray(o.with)) {
    for (const w of o.with as Obj[]) {
      const name = ((w.name as Obj | undefined)?.value ?? w.name) as unknown;
      if (typeof name === 'string') into.add(name);
    }
  }
  for (const k in o) cteNames(o[k], into);
}

/** Function calls and nested SELECTs in an AST. */
function walkAst(v: unknown, acc: Acc, root: boolean): void {
  if (v === null || typeof v !== 'object') return;
  if (Array.isArray(v)) {
    for (const x of v) walkAst(x, acc, false);
    return;
  }
  const o = v as Obj;
  if (o.type === 'function') {
    const parts = ((o.name as Obj | undefined)?.name as Obj[] | undefined) ?? [];
    const last = parts[parts.length - 1]?.value;
    if (typeof last === 'string') acc.functions.add(last.toLowerCase());
  } else if (o.type === 'aggr_func' && typeof o.name === 'string') {
    acc.functions.add(o.name.toLowerCase());
  } else if (o.type === 'select' && !root) {
    acc.type('SELECT');
    acc.add('read', 'SELECT');
  }
  for (const k in o) {
    const child = o[k];
    if (child !== null && typeof child === 'object') walkAst(child, acc, false);
  }
}

interface TableRef {
  db?: string | null;
  table: string;
  as?: string | null;
}

/** A table in a FROM list or a DML target ({db, table, as}); not a column reference or a SET item. */
function isTableRef(o: Obj): boolean {
  return typeof o.table === 'string' && 'db' in o && o.type === undefined && !('column' in o);
}

function refName(r: TableRef): string {
  return r.db ? `${r.db}.${r.table}` : r.table;
}

/** Every table reference under `v`. */
function tableRefs(v: unknown, out: TableRef[]): TableRef[] {
  if (v === null || typeof v !== 'object') return out;
  if (Array.isArray(v)) {
    for (const x of v) tableRefs(x, out);
    return out;
  }
  const o = v as Obj;
  if (isTableRef(o)) out.push(o as unknown as TableRef);
  for (const k in o) {
    const child = o[k];
    if (child !== null && typeof child === 'object') tableRefs(child, out);
  }
  return out;
}

/**
 * The relations a statement writes (its DML targets) and reads (everything else), by name as
 * written. CTE names are not relations; a same-named table used outside the WITH is missed
 * (unqualified only), which affects reporting, not the class.
 */
function relations(ast: Obj, acc: Acc): void {
  const ctes = new Set<string>();
  cteNames(ast, ctes);
  const targets = new Set<TableRef>();
  const type = ast.type;
  const list = Array.isArray(ast.table) ? (ast.table as Obj[]).filter(isTableRef).map((o) => o as unknown as TableRef) : [];
  if (type === 'insert' || type === 'replace') {
    for (const r of list) targets.add(r);
  } else if (type === 'update') {
    // The tables whose columns are SET; all of them when a SET column is unqualified and there
    // are several (the server picks by column name, which we cannot see).
    const quals = ((ast.set as Obj[] | undefined) ?? []).map((x) => (typeof x.table === 'string' ? x.table : null));
    for (const r of list) {
      if (list.length === 1 || quals.includes(null) || quals.includes(r.as ?? '') || quals.includes(r.table)) targets.add(r);
    }
  } else if (type === 'delete') {
    // DELETE t1 FROM t AS t1 JOIN u …: a target may name an alias of a FROM entry.
    const from = Array.isArray(ast.from) ? (ast.from as Obj[]).filter(isTableRef).map((o) => o as unknown as TableRef) : [];
    for (const r of list) {
      const real = (!r.db ? from.find((f) => f.as === r.table) : undefined) ?? from.find((f) => refName(f) === refName(r));
      targets.add(r);
      if (real) targets.add(real);
      acc.writes.add(refName(real ?? r));
    }
  }
  if (type !== 'delete') for (const r of targets) acc.writes.add(refName(r));
  for (const r of tableRefs(ast, [])) {
    if (targets.has(r)) continue;
    if (!r.db && ctes.has(r.table)) continue;
    acc.reads.add(refName(r));
  }
}

/**
 * A statement whose details come from the parser. `head` is SELECT, INSERT, REPLACE, UPDATE or
 * DELETE; a parse failure, or an AST of another kind, makes it unknown.
 */
/** Words that make a SELECT more than a list of expressions. */
const NON_TRIVIAL = new Set(['FROM', 'INTO', 'UNION', 'EXCEPT', 'INTERSECT', 'MINUS', 'SELECT', 'WITH', 'FOR', 'LOCK', 'PROCEDURE', 'WINDOW', 'TABLE', 'VALUES']);

/**
 * `SELECT 1`, `SELECT @@version_comment LIMIT 1`, `SELECT DATABASE(), USER()`: what pools and
 * clients send most. No FROM, no subquery, no INTO: nothing but expressions, whose functions the
 * token scans see. Spares the parser (a millisecond); if such a text is not valid SQL, the
 * server refuses it and nothing runs.
 */
function trivialSelect(toks: readonly Tok[]): boolean {
  if (!isWord(toks[0], 'SELECT')) return false;
  for (let i = 1; i < toks.length; i++) {
    const t = toks[i]!;
    if (t.k === 'word' && NON_TRIVIAL.has(t.v)) return false;
  }
  return true;
}

function parsedStatement(toks: Tok[], head: string, acc: Acc, ctx: Ctx): void {
  if (head === 'SELECT' && trivialSelect(toks)) {
    acc.statement('SELECT', 'read');
    collectFunctions(toks, 1, toks.length, acc);
    return;
  }
  const [[primary, primaryDb], [secondary, secondaryDb]] = parsers(ctx.flavor);
  const text = render(toks);
  let ast = tryParse(text, primary!, primaryDb!);
  if (ast instanceof Error) {
    // Tokens that change nothing the guard cares about but that the parser does not know; then
    // the other dialect's grammar. The first error is the one reported.
    const fixed = render(fixups(toks, head, acc));
    const attempts: Array<[SqlParser, string]> = fixed !== text ? [[primary!, primaryDb!], [secondary!, secondaryDb!]] : [[secondary!, secondaryDb!]];
    for (const [p, db] of attempts) {
      const r = tryParse(fixed, p, db);
      if (!(r instanceof Error)) {
        ast = r;
        break;
      }
    }
  }
  if (ast instanceof Error) {
    acc.flags.add('parse_error');
    acc.add('unknown', `${head} the parser cannot read: ${ast.message.split('\n')[0]!.slice(0, 200)}`);
    return;
  }
  // WITH … may lead an UPDATE or DELETE (MySQL 8) as well as a SELECT.
  if (isWord(toks[0], 'WITH') && typeof ast.type === 'string' && Object.values(EXPECTED_AST).includes(ast.type)) head = ast.type.toUpperCase();
  if (ast.type !== EXPECTED_AST[head]) {
    acc.flags.add('parse_error');
    acc.add('unknown', `parser read a ${head} statement as ${String(ast.type)}`);
    return;
  }
  const before = acc.writes.size;
  relations(ast, acc);
  if (head === 'SELECT') {
    acc.statement('SELECT', 'read');
    const lock = String(ast.locking_read ?? '').toUpperCase();
    if (lock.includes('UPDATE')) acc.flags.add('for_update');
    else if (lock.includes('SHARE')) acc.flags.add('for_share');
  } else {
    const target = [...acc.writes][before] ?? '?';
    acc.statement(head, 'write', `${head} on ${target}`);
    if ((head === 'UPDATE' || head === 'DELETE') && (ast.where === null || ast.where === undefined)) acc.flags.add('without_where');
  }
  walkAst(ast, acc, true);
}

// ---------------------------------------------------------------------------------------------
// Statement heads

type Handler = (toks: Tok[], acc: Acc, ctx: Ctx) => void;

/** Statement kinds after which `;` may belong to a body (BEGIN … END): see classifyReading. */
const COMPOUND = 'compound_statement';

function unrecognized(toks: Tok[], acc: Acc): void {
  const words = toks.slice(0, 3).filter((t) => t.k === 'word').map((t) => t.v);
  acc.type(words.length ? words.join('_') : 'UNKNOWN');
  acc.flags.add('unrecognized_statement');
  acc.add('unknown', `unrecognized statement ${words.join(' ') || render(toks.slice(0, 3))}`);
}

function simple(type: string, cls: CommandClass, reason?: string): Handler {
  return (toks, acc, ctx) => {
    acc.statement(type, cls, reason);
    scanExpressions(toks, 1, toks.length, acc, ctx);
  };
}

/** Classifies the statement in `toks[from..]` and folds it in (e.g. EXPLAIN ANALYZE's statement). */
function nested(toks: Tok[], from: number, acc: Acc, ctx: Ctx, inert: boolean): void {
  if (from >= toks.length) {
    acc.flags.add('parse_error');
    acc.add('unknown', 'statement expected');
    return;
  }
  acc.absorb(classifyTokens(toks.slice(from), ctx), inert);
}

const EXPLAINABLE = new Set(['SELECT', 'INSERT', 'REPLACE', 'UPDATE', 'DELETE', 'WITH', 'TABLE', 'VALUES']);

/** EXPLAIN/DESCRIBE/DESC: a table's columns, or a statement's plan (run only with ANALYZE). */
function explain(toks: Tok[], acc: Acc, ctx: Ctx): void {
  let i = 1;
  let analyze = false;
  for (;;) {
    if (isWord(toks[i], 'ANALYZE')) {
      analyze = true;
      i++;
    } else if (isWord(toks[i], 'EXTENDED', 'PARTITIONS')) {
      i++;
    } else if (isWord(toks[i], 'FORMAT') && toks[i + 1]?.raw === '=') {
      i += 3;
    } else {
      break;
    }
  }
  if (isWord(toks[i], 'FOR') && isWord(toks[i + 1], 'CONNECTION')) {
    acc.statement('EXPLAIN', 'read');
    return;
  }
  const t = toks[i];
  if (t && (t.k === '(' || (t.k === 'word' && EXPLAINABLE.has(t.v)))) {
    acc.statement('EXPLAIN', 'read');
    if (analyze) acc.flags.add('analyze');
    nested(toks, i, acc, ctx, !analyze);
    return;
  }
  // DESCRIBE t [col]
  acc.statement('DESCRIBE', 'read');
  const r = readName(toks, i);
  if (r) acc.reads.add(r.name);
}

/** MariaDB's ANALYZE <statement> runs it; ANALYZE TABLE is maintenance. */
function analyze(toks: Tok[], acc: Acc, ctx: Ctx): void {
  let i = 1;
  if (isWord(toks[i], 'FORMAT') && toks[i + 1]?.raw === '=') i += 3;
  const t = toks[i];
  if (t && (t.k === '(' || (t.k === 'word' && EXPLAINABLE.has(t.v) && t.v !== 'TABLE'))) {
    acc.statement('ANALYZE', 'read');
    acc.flags.add('analyze');
    nested(toks, i, acc, ctx, false);
    return;
  }
  maintenance('ANALYZE_TABLE')(toks, acc, ctx);
}

/** ANALYZE/OPTIMIZE/REPAIR TABLE: rewrites or locks whole tables; the DBA's to schedule. */
function maintenance(type: string): Handler {
  return (toks, acc) => {
    acc.statement(type, 'admin', `${type.replace(/_/g, ' ')} rewrites or locks whole tables`);
    let i = skipWords(toks, 1, new Set(['NO_WRITE_TO_BINLOG', 'LOCAL']));
    if (isWord(toks[i], 'TABLE', 'TABLES')) i++;
    for (const name of readNames(toks, i).names) acc.writes.add(name);
  };
}

function checkTable(type: string): Handler {
  return (toks, acc) => {
    acc.statement(type, 'read');
    let i = 1;
    if (isWord(toks[i], 'TABLE', 'TABLES')) i++;
    for (const name of readNames(toks, i).names) acc.reads.add(name);
  };
}

function setStatement(toks: Tok[], acc: Acc, ctx: Ctx): void {
  const t1 = toks[1];
  // SET STATEMENT var = value [, …] FOR <statement> (MariaDB)
  if (isWord(t1, 'STATEMENT')) {
    const forAt = findTop(toks, 2, (t) => isWord(t, 'FOR'));
    if (forAt < 0) {
      acc.flags.add('parse_error');
      acc.add('unknown', 'SET STATEMENT without FOR');
      return;
    }
    assignments(toks.slice(2, forAt), acc, ctx, 'session');
    nested(toks, forAt + 1, acc, ctx, false);
    return;
  }
  if (isWord(t1, 'PASSWORD')) {
    acc.statement('SET_PASSWORD', 'dcl', 'SET PASSWORD changes a password');
    return;
  }
  if (isWord(t1, 'ROLE')) {
    acc.statement('SET_ROLE', 'admin', 'SET ROLE changes the privileges the session runs with');
    return;
  }
  if (isWord(t1, 'DEFAULT') && isWord(toks[2], 'ROLE')) {
    acc.statement('SET_DEFAULT_ROLE', 'dcl');
    return;
  }
  if (isWord(t1, 'RESOURCE') && isWord(toks[2], 'GROUP')) {
    acc.statement('SET_RESOURCE_GROUP', 'admin', 'SET RESOURCE GROUP moves threads between resource groups');
    return;
  }
  let i = 1;
  let scope: 'session' | 'global' = 'session';
  if (isWord(toks[i], 'GLOBAL', 'PERSIST', 'PERSIST_ONLY')) {
    scope = 'global';
    i++;
  } else if (isWord(toks[i], 'SESSION', 'LOCAL')) {
    i++;
  }
  if (isWord(toks[i], 'TRANSACTION')) {
    if (scope === 'global') acc.statement('SET_TRANSACTION', 'admin', 'SET GLOBAL TRANSACTION changes every new session');
    else acc.statement('SET_TRANSACTION', 'read');
    if (seq(toks, i + 1, 'READ', 'WRITE') > 0 || findTop(toks, i, (t, j) => isWord(t, 'READ') && isWord(toks[j + 1], 'WRITE')) >= 0) acc.flags.add('read_write');
    return;
  }
  assignments(toks.slice(1), acc, ctx, 'session');
}

/** The comma-separated assignments of a SET (scope words may start each one). */
function assignments(toks: Tok[], acc: Acc, ctx: Ctx, scope0: 'session' | 'global'): void {
  let start = 0;
  let scope = scope0;
  const parts: Tok[][] = [];
  let depth = 0;
  for (let i = 0; i <= toks.length; i++) {
    const t = toks[i];
    if (t?.k === '(') depth++;
    else if (t?.k === ')') depth--;
    if (i === toks.length || (depth === 0 && t!.k === ',')) {
      parts.push(toks.slice(start, i));
      start = i + 1;
    }
  }
  let any = false;
  for (const p of parts) {
    let i = 0;
    if (isWord(p[0], 'GLOBAL', 'PERSIST', 'PERSIST_ONLY')) {
      scope = 'global';
      i++;
    } else if (isWord(p[0], 'SESSION', 'LOCAL')) {
      scope = 'session';
      i++;
    }
    const target = p[i];
    if (!target) continue;
    any = true;
    // SET NAMES x [COLLATE y], SET CHARACTER SET x, SET CHARSET x
    if (isWord(target, 'NAMES') || isWord(target, 'CHARSET') || (isWord(target, 'CHARACTER') && isWord(p[i + 1], 'SET'))) {
      acc.statement('SET', 'read');
      continue;
    }
    let name: string;
    let varScope = scope;
    let valueAt: number;
    if (target.k === 'var') {
      name = '@' + target.v;
      valueAt = i + 1;
    } else if (target.k === 'sysvar') {
      const m = /^(global|session|local|persist|persist_only)\.(.*)$/.exec(target.v);
      if (m) {
        varScope = m[1] === 'global' || m[1] === 'persist' || m[1] === 'persist_only' ? 'global' : 'session';
        name = m[2]!;
      } else {
        name = target.v;
      }
      valueAt = i + 1;
    } else if (target.k === 'word' || target.k === 'qident') {
      const r = readName(p, i);
      name = (r?.name ?? target.v).toLowerCase();
      valueAt = r?.next ?? i + 1;
    } else {
      acc.flags.add('parse_error');
      acc.add('unknown', `SET of ${target.raw}`);
      continue;
    }
    if (p[valueAt]?.raw !== '=' && p[valueAt]?.raw !== ':=') {
      // Not an assignment this classifier knows (a newer SET form): never quietly a read.
      acc.flags.add('unrecognized_statement');
      acc.add('unknown', `unrecognized SET form near ${render(p.slice(i, i + 3))}`);
      continue;
    }
    valueAt++;
    const value = p.slice(valueAt);
    if (name.startsWith('@')) {
      acc.statement('SET', 'read');
      scanExpressions(p, valueAt, p.length, acc, ctx);
      continue;
    }
    const lower = name.replace(/^.*\./, '').toLowerCase();
    const literal = value.length === 1 ? value[0]!.v.toUpperCase() : undefined;
    if (varScope === 'global') {
      acc.statement('SET_GLOBAL', 'admin', `SET GLOBAL ${lower} changes the whole server`);
    } else if (SENSITIVE_SETTINGS.has(lower)) {
      acc.statement('SET', 'admin', `SET ${lower}`);
    } else {
      acc.statement('SET', 'read');
    }
    if (INTEGRITY_SETTINGS.has(lower)) acc.flags.add('integrity_checks');
    if (lower === 'sql_mode') acc.flags.add('sql_mode');
    if ((lower === 'transaction_read_only' || lower === 'tx_read_only') && (literal === '0' || literal === 'OFF' || literal === 'FALSE')) acc.flags.add('read_write');
    scanExpressions(p, valueAt, p.length, acc, ctx);
  }
  if (!any) {
    acc.flags.add('parse_error');
    acc.add('unknown', 'SET without assignments');
  }
}

function show(toks: Tok[], acc: Acc, ctx: Ctx): void {
  acc.statement('SHOW', 'read');
  scanExpressions(toks, 1, toks.length, acc, ctx);
}

function use(toks: Tok[], acc: Acc): void {
  acc.statement('USE', 'read');
  if (!readName(toks, 1)) {
    acc.flags.add('parse_error');
    acc.add('unknown', 'USE without a database');
  }
}

function transaction(type: string): Handler {
  return (toks, acc) => {
    acc.statement(type, 'read');
    if (findTop(toks, 1, (t, j) => isWord(t, 'READ') && isWord(toks[j + 1], 'WRITE')) >= 0) acc.flags.add('read_write');
  };
}

function begin(toks: Tok[], acc: Acc, ctx: Ctx): void {
  if (isWord(toks[1], 'NOT') && isWord(toks[2], 'ATOMIC')) {
    compoundBlock(toks, acc, ctx);
    return;
  }
  if (toks.length > 1 && !(toks.length === 2 && isWord(toks[1], 'WORK'))) {
    // BEGIN … without NOT ATOMIC is only valid inside stored programs.
    compoundBlock(toks, acc, ctx);
    return;
  }
  acc.statement('BEGIN', 'read');
}

function start(toks: Tok[], acc: Acc, ctx: Ctx): void {
  if (isWord(toks[1], 'TRANSACTION')) {
    transaction('BEGIN')(toks, acc, ctx);
    return;
  }
  if (isWord(toks[1], 'SLAVE', 'REPLICA', 'ALL', 'GROUP_REPLICATION')) {
    acc.statement('START_REPLICA', 'admin', 'START SLAVE/REPLICA controls replication');
    return;
  }
  unrecognized(toks, acc);
}

function rollback(toks: Tok[], acc: Acc): void {
  const to = findTop(toks, 1, (t) => isWord(t, 'TO'));
  acc.statement(to >= 0 ? 'ROLLBACK_TO_SAVEPOINT' : 'ROLLBACK', 'read');
}

function release(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'SAVEPOINT')) acc.statement('RELEASE_SAVEPOINT', 'read');
  else unrecognized(toks, acc);
}

/** XA COMMIT/ROLLBACK act on a prepared transaction that may be another session's, hence admin. */
function xa(toks: Tok[], acc: Acc): void {
  const verb = toks[1]?.v ?? '';
  if (verb === 'COMMIT' || verb === 'ROLLBACK') acc.statement(`XA_${verb}`, 'admin', `XA ${verb} of a prepared transaction`);
  else if (['START', 'BEGIN', 'END', 'PREPARE', 'RECOVER'].includes(verb)) acc.statement(`XA_${verb}`, 'read');
  else unrecognized(toks, acc);
}

/** LOCK TABLES: a lock other sessions wait for; write, like PostgreSQL's LOCK. */
function lock(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'INSTANCE')) {
    acc.statement('LOCK_INSTANCE', 'admin', 'LOCK INSTANCE FOR BACKUP blocks the whole server');
    return;
  }
  if (!isWord(toks[1], 'TABLE', 'TABLES')) {
    unrecognized(toks, acc);
    return;
  }
  acc.statement('LOCK_TABLES', 'write', 'LOCK TABLES makes other sessions wait');
  let allRead = true;
  let i = 2;
  while (i < toks.length) {
    const r = readName(toks, i);
    if (!r) break;
    acc.writes.add(r.name);
    i = r.next;
    if (isWord(toks[i], 'AS')) i++;
    if ((toks[i]?.k === 'word' && !['READ', 'WRITE', 'LOW_PRIORITY'].includes(toks[i]!.v)) || toks[i]?.k === 'qident') i++; // alias
    if (!isWord(toks[i], 'READ')) allRead = false;
    while (i < toks.length && toks[i]!.k !== ',') i++;
    i++;
  }
  if (allRead) acc.flags.add('read_lock');
}

function unlock(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'INSTANCE')) acc.statement('UNLOCK_INSTANCE', 'admin', 'UNLOCK INSTANCE');
  else if (isWord(toks[1], 'TABLE', 'TABLES')) acc.statement('UNLOCK_TABLES', 'read');
  else unrecognized(toks, acc);
}

/** HANDLER t OPEN / READ … / CLOSE: row-by-row reads. */
function handler(toks: Tok[], acc: Acc, ctx: Ctx): void {
  acc.statement('HANDLER', 'read');
  const r = readName(toks, 1);
  if (r) acc.reads.add(r.name);
  scanExpressions(toks, 1, toks.length, acc, ctx);
}

/** LOAD DATA|XML [LOCAL] INFILE 'f' [REPLACE|IGNORE] INTO TABLE t … */
function load(toks: Tok[], acc: Acc, ctx: Ctx): void {
  if (isWord(toks[1], 'INDEX')) {
    acc.statement('LOAD_INDEX', 'admin', 'LOAD INDEX INTO CACHE');
    return;
  }
  if (!isWord(toks[1], 'DATA', 'XML')) {
    unrecognized(toks, acc);
    return;
  }
  const type = `LOAD_${toks[1]!.v}`;
  const infile = findTop(toks, 2, (t) => isWord(t, 'INFILE'));
  const local = infile > 0 && toks.slice(2, infile).some((t) => isWord(t, 'LOCAL'));
  const file = toks[infile + 1]?.k === 'string' ? toks[infile + 1]!.v : '?';
  if (local) {
    // The client sends the file: rows arrive like an INSERT's.
    acc.statement(type, 'write', `LOAD ${toks[1]!.v} LOCAL INFILE loads a client file into a table`);
    acc.flags.add('load_data_local');
  } else {
    acc.statement(type, 'admin', `LOAD ${toks[1]!.v} INFILE reads a file on the database server (${file})`);
    acc.add('write', 'LOAD DATA');
    acc.flags.add('server_file_copy');
  }
  const into = findTop(toks, 2, (t, j) => isWord(t, 'INTO') && isWord(toks[j + 1], 'TABLE'));
  const r = into > 0 ? readName(toks, into + 2) : undefined;
  if (r) acc.writes.add(r.name);
  if (findTop(toks, 2, (t) => isWord(t, 'REPLACE')) > 0) acc.flags.add('replace');
  scanExpressions(toks, 2, toks.length, acc, ctx);
}

function call(toks: Tok[], acc: Acc, ctx: Ctx): void {
  const r = readName(toks, 1);
  const name = r ? r.name.replace(/^.*\./, '').toLowerCase() : '?';
  acc.statement('CALL', 'procedural', `CALL ${name}`);
  if (r) acc.functions.add(name);
  scanExpressions(toks, r?.next ?? 1, toks.length, acc, ctx);
}

function doStatement(toks: Tok[], acc: Acc, ctx: Ctx): void {
  acc.statement('DO', 'read');
  scanExpressions(toks, 1, toks.length, acc, ctx);
}

/** VALUES (1), (2) and TABLE t (MySQL 8) as statements. */
function valuesStatement(toks: Tok[], acc: Acc, ctx: Ctx): void {
  acc.statement('VALUES', 'read');
  scanExpressions(toks, 1, toks.length, acc, ctx);
}
function tableStatement(toks: Tok[], acc: Acc): void {
  acc.statement('SELECT', 'read');
  const r = readName(toks, 1);
  if (r) acc.reads.add(r.name);
}

/** PREPARE s FROM 'text': the class of the text, which EXECUTE will run. */
function prepare(toks: Tok[], acc: Acc, ctx: Ctx): void {
  const r = readName(toks, 1);
  if (!r || !isWord(toks[r.next], 'FROM')) {
    acc.flags.add('parse_error');
    acc.add('unknown', 'PREPARE without FROM');
    return;
  }
  acc.type('PREPARE');
  acc.prepareName = r.name.toLowerCase();
  const body = toks.slice(r.next + 1);
  if (body.length > 0 && body.every((t) => t.k === 'string')) {
    acc.absorb(classifyMysql(body.map((t) => t.v).join(''), ctx.opts));
    acc.prepareName = r.name.toLowerCase();
    return;
  }
  acc.add('unknown', `PREPARE ${r.name} from an expression: the statement it prepares is not visible`);
  scanExpressions(toks, r.next + 1, toks.length, acc, ctx);
}

function execute(toks: Tok[], acc: Acc, ctx: Ctx): void {
  if (isWord(toks[1], 'IMMEDIATE')) {
    const body = toks.slice(2);
    const using = findTop(body, 0, (t) => isWord(t, 'USING'));
    const text = using >= 0 ? body.slice(0, using) : body;
    acc.type('EXECUTE_IMMEDIATE');
    if (text.length > 0 && text.every((t) => t.k === 'string')) {
      acc.absorb(classifyMysql(text.map((t) => t.v).join(''), ctx.opts));
    } else {
      acc.add('unknown', 'EXECUTE IMMEDIATE of an expression: the statement it runs is not visible');
    }
    scanExpressions(toks, 2, toks.length, acc, ctx);
    return;
  }
  const r = readName(toks, 1);
  const name = (r?.name ?? '').toLowerCase();
  acc.statement('EXECUTE', 'unknown', `executes prepared statement "${name}", which this session has not seen prepared`);
  acc.executeName = name;
  scanExpressions(toks, 1, toks.length, acc, ctx);
}

function deallocate(toks: Tok[], acc: Acc): void {
  if (!isWord(toks[1], 'PREPARE')) {
    unrecognized(toks, acc);
    return;
  }
  acc.statement('DEALLOCATE', 'read');
  const r = readName(toks, 2);
  if (r) acc.deallocateName = r.name.toLowerCase();
}

function kill(_toks: Tok[], acc: Acc): void {
  acc.statement('KILL', 'admin', 'KILL ends another session or its query');
}

function truncate(toks: Tok[], acc: Acc): void {
  // TRUNCATE empties tables outright: DDL-strength, and flagged like a DELETE without WHERE.
  acc.statement('TRUNCATE', 'ddl');
  acc.add('write', 'TRUNCATE');
  acc.flags.add('without_where');
  const i = isWord(toks[1], 'TABLE') ? 2 : 1;
  for (const name of readNames(toks, i).names) acc.writes.add(name);
}

function rename(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'USER')) {
    acc.statement('RENAME_USER', 'dcl');
    return;
  }
  if (!isWord(toks[1], 'TABLE', 'TABLES')) {
    unrecognized(toks, acc);
    return;
  }
  acc.statement('RENAME_TABLE', 'ddl');
  let i = 2;
  if (isWord(toks[i], 'IF') && isWord(toks[i + 1], 'EXISTS')) i += 2;
  for (; i < toks.length; i++) {
    const r = readName(toks, i);
    if (r && (i === 2 || toks[i - 1]!.k === ',' || isWord(toks[i - 1], 'TO'))) {
      acc.writes.add(r.name);
      i = r.next - 1;
    }
  }
}

function grant(type: 'GRANT' | 'REVOKE'): Handler {
  return (toks, acc) => {
    acc.statement(type, 'dcl');
    // GRANT privs ON [TABLE|FUNCTION|PROCEDURE|PACKAGE] obj TO … : the ACL of obj changes.
    const on = findTop(toks, 1, (t) => isWord(t, 'ON'));
    if (on > 0) {
      const i = skipWords(toks, on + 1, new Set(['TABLE', 'FUNCTION', 'PROCEDURE', 'PACKAGE']));
      const r = readName(toks, i);
      if (r && !isWord(toks[on - 1], 'PROXY')) acc.writes.add(r.name);
    }
  };
}

const CREATE_MODIFIERS = new Set(['TEMPORARY', 'AGGREGATE', 'UNIQUE', 'FULLTEXT', 'SPATIAL', 'ONLINE', 'OFFLINE', 'UNDO', 'EXTERNAL']);

/**
 * Table options that put a table's data outside this server's data dir or on another server:
 * ENGINE=CONNECT/FEDERATED/SPIDER, CONNECTION='…', DATA/INDEX DIRECTORY='…'.
 */
function externalTable(toks: readonly Tok[], acc: Acc): void {
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!;
    if (t.k !== 'word') continue;
    if (t.v === 'ENGINE' || t.v === 'TYPE') {
      const j = toks[i + 1]?.raw === '=' ? i + 2 : i + 1;
      const engine = toks[j];
      if (engine && EXTERNAL_ENGINES.has(engine.v.toUpperCase())) {
        acc.flags.add('external_table');
        acc.add('admin', `ENGINE=${engine.v.toUpperCase()} reaches files or servers outside the database`);
      }
    } else if (t.v === 'CONNECTION' && (toks[i + 1]?.raw === '=' || toks[i + 1]?.k === 'string')) {
      acc.flags.add('external_table');
      acc.add('admin', 'CONNECTION= points a table at another server');
    } else if ((t.v === 'DATA' || t.v === 'INDEX') && isWord(toks[i + 1], 'DIRECTORY')) {
      acc.flags.add('server_file_copy');
      acc.add('admin', `${t.v} DIRECTORY places table files elsewhere on the database server`);
    }
  }
}

/** Where a CREATE TABLE's query starts (… [AS] SELECT, … (SELECT …)), or -1. */
function ctasStart(toks: readonly Tok[], from: number): number {
  let depth = 0;
  for (let j = from; j < toks.length; j++) {
    const t = toks[j]!;
    if (depth === 0 && isWord(t, 'SELECT', 'WITH', 'VALUES', 'TABLE')) return j;
    if (depth === 0 && t.k === '(' && isWord(toks[j + 1], 'SELECT', 'WITH')) return j;
    if (t.k === '(') depth++;
    else if (t.k === ')') depth--;
  }
  return -1;
}

function create(toks: Tok[], acc: Acc, ctx: Ctx): void {
  let i = 1;
  if (seq(toks, i, 'OR', 'REPLACE') > 0) i += 2;
  for (;;) {
    const j = skipDefiner(toks, skipWords(toks, i, CREATE_MODIFIERS));
    if (isWord(toks[j], 'ALGORITHM') && toks[j + 1]?.raw === '=') {
      i = j + 3;
      continue;
    }
    if (seq(toks, j, 'SQL', 'SECURITY') > 0) {
      i = j + 3;
      continue;
    }
    if (j === i) break;
    i = j;
  }
  const kind = toks[i]?.k === 'word' ? toks[i]!.v : '';
  const afterKind = skipIfExists(toks, i + 1);
  switch (kind) {
    case 'TABLE': {
      const r = readName(toks, afterKind);
      const q = ctasStart(toks, r?.next ?? afterKind);
      if (q >= 0) {
        acc.statement('CREATE_TABLE_AS', 'ddl');
        acc.add('write', 'fills a new table');
        nested(toks, q, acc, ctx, false);
      } else {
        acc.statement('CREATE_TABLE', 'ddl');
        const like = findTop(toks, r?.next ?? afterKind, (t) => isWord(t, 'LIKE'));
        const l = like >= 0 ? readName(toks, like + 1) : undefined;
        if (l) acc.reads.add(l.name);
        const paren = toks[r?.next ?? afterKind];
        if (paren?.k === '(' && isWord(toks[(r?.next ?? afterKind) + 1], 'LIKE')) {
          const l2 = readName(toks, (r?.next ?? afterKind) + 2);
          if (l2) acc.reads.add(l2.name);
        }
      }
      if (r) acc.writes.add(r.name);
      externalTable(toks, acc);
      return;
    }
    case 'INDEX': {
      acc.statement('CREATE_INDEX', 'ddl');
      const on = findTop(toks, afterKind, (t) => isWord(t, 'ON'));
      const r = on > 0 ? readName(toks, on + 1) : undefined;
      if (r) acc.writes.add(r.name);
      return;
    }
    case 'VIEW': {
      acc.statement('CREATE_VIEW', 'ddl');
      const r = readName(toks, afterKind);
      if (r) acc.writes.add(r.name);
      viewBody(toks, afterKind, acc, ctx);
      return;
    }
    case 'DATABASE':
    case 'SCHEMA':
      acc.statement('CREATE_DATABASE', 'ddl');
      return;
    case 'SEQUENCE': {
      acc.statement('CREATE_SEQUENCE', 'ddl');
      const r = readName(toks, afterKind);
      if (r) acc.writes.add(r.name);
      externalTable(toks, acc);
      return;
    }
    case 'USER':
      acc.statement('CREATE_USER', 'dcl');
      return;
    case 'ROLE':
      acc.statement('CREATE_ROLE', 'dcl');
      return;
    case 'FUNCTION':
      if (findTop(toks, afterKind, (t) => isWord(t, 'SONAME')) > 0) {
        // A UDF: a shared library loaded into the server process.
        acc.statement('CREATE_FUNCTION', 'admin', 'CREATE FUNCTION … SONAME loads a shared library into the server');
        acc.flags.add('dangerous_function');
        return;
      }
      storedProgram('CREATE_FUNCTION', acc);
      return;
    case 'PROCEDURE':
    case 'EVENT':
      storedProgram(`CREATE_${kind}`, acc);
      return;
    case 'PACKAGE':
      storedProgram(isWord(toks[i + 1], 'BODY') ? 'CREATE_PACKAGE_BODY' : 'CREATE_PACKAGE', acc);
      return;
    case 'TRIGGER': {
      storedProgram('CREATE_TRIGGER', acc);
      const on = findTop(toks, afterKind, (t) => isWord(t, 'ON'));
      const r = on > 0 ? readName(toks, on + 1) : undefined;
      if (r) acc.writes.add(r.name);
      return;
    }
    case 'SERVER':
    case 'TABLESPACE':
    case 'LOGFILE':
    case 'RESOURCE':
    case 'SPATIAL':
      acc.statement(`CREATE_${kind}`, 'admin', `CREATE ${kind} is server configuration`);
      return;
    default:
      unrecognized(toks, acc);
  }
}

/** A view's query: defined, not run. Its reads are reported; a body the parser cannot read is noted. */
function viewBody(toks: Tok[], from: number, acc: Acc, ctx: Ctx): void {
  const as = findTop(toks, from, (t) => isWord(t, 'AS'));
  if (as < 0) return;
  const body = classifyTokens(toks.slice(as + 1), ctx);
  if (body.class === 'unknown') acc.flags.add('unparsed_body');
  else acc.absorb(body, true);
  // Even unparsed, its dangerous functions count (dangerScan ran over the whole statement).
}

/**
 * Stored programs run later, with their definer's rights, whatever the caller may do. Their
 * body may hold `;` (BEGIN … END), so classifyReading treats what follows as possibly body.
 */
function storedProgram(type: string, acc: Acc): void {
  acc.statement(type, 'procedural', `${type.replace(/_/g, ' ')} defines code that runs later`);
  acc.flags.add(COMPOUND);
}

const BODY_START = new Set(['THEN', 'ELSE', 'DO', 'LOOP', 'REPEAT', 'ATOMIC', 'BEGIN']);

/**
 * A compound statement run now (BEGIN NOT ATOMIC, IF, CASE, LOOP, REPEAT, WHILE, FOR, label:).
 * Its first inner statement shares this piece of text (`IF c THEN DELETE FROM t`); it is
 * classified as running. The later ones come as pieces of their own (see bodyPiece).
 */
function compoundBlock(toks: Tok[], acc: Acc, ctx: Ctx): void {
  acc.statement('COMPOUND_STATEMENT', 'procedural', 'a compound statement (BEGIN NOT ATOMIC, IF, LOOP, …) runs code');
  acc.flags.add(COMPOUND);
  const body = findTop(toks, 0, (t, j) => isWord(t) && BODY_START.has(t.v) && !(t.v === 'BEGIN' && isWord(toks[j + 1], 'NOT')));
  scanExpressions(toks, 0, body < 0 ? toks.length : body, acc, ctx);
  if (body < 0 || body + 1 >= toks.length) return;
  const inner = toks.slice(body + 1);
  acc.absorb(bodyPiece(inner, ctx) ?? classifyTokens(inner, ctx));
}

function alter(toks: Tok[], acc: Acc, ctx: Ctx): void {
  let i = skipWords(toks, 1, new Set(['ONLINE', 'OFFLINE', 'IGNORE']));
  for (;;) {
    const j = skipDefiner(toks, i);
    if (isWord(toks[j], 'ALGORITHM') && toks[j + 1]?.raw === '=') {
      i = j + 3;
      continue;
    }
    if (seq(toks, j, 'SQL', 'SECURITY') > 0) {
      i = j + 3;
      continue;
    }
    if (j === i) break;
    i = j;
  }
  const kind = toks[i]?.k === 'word' ? toks[i]!.v : '';
  const afterKind = skipIfExists(toks, i + 1);
  switch (kind) {
    case 'TABLE': {
      acc.statement('ALTER_TABLE', 'ddl');
      const r = readName(toks, afterKind);
      if (r) acc.writes.add(r.name);
      externalTable(toks, acc);
      return;
    }
    case 'VIEW': {
      acc.statement('ALTER_VIEW', 'ddl');
      const r = readName(toks, afterKind);
      if (r) acc.writes.add(r.name);
      viewBody(toks, afterKind, acc, ctx);
      return;
    }
    case 'SEQUENCE': {
      acc.statement('ALTER_SEQUENCE', 'ddl');
      const r = readName(toks, afterKind);
      if (r) acc.writes.add(r.name);
      return;
    }
    case 'DATABASE':
    case 'SCHEMA':
      acc.statement('ALTER_DATABASE', 'ddl');
      return;
    case 'USER':
      acc.statement('ALTER_USER', 'dcl');
      return;
    case 'PROCEDURE':
    case 'FUNCTION':
      // Only characteristics (SQL SECURITY DEFINER!): who the code runs as.
      acc.statement(`ALTER_${kind}`, 'procedural', `ALTER ${kind} changes how stored code runs`);
      return;
    case 'EVENT':
      storedProgram('ALTER_EVENT', acc);
      return;
    case 'SERVER':
    case 'TABLESPACE':
    case 'LOGFILE':
    case 'INSTANCE':
    case 'RESOURCE':
      acc.statement(`ALTER_${kind}`, 'admin', `ALTER ${kind} is server configuration`);
      return;
    default:
      unrecognized(toks, acc);
  }
}

function drop(toks: Tok[], acc: Acc): void {
  const i = skipWords(toks, 1, new Set(['TEMPORARY', 'ONLINE', 'OFFLINE', 'UNDO']));
  const kind = toks[i]?.k === 'word' ? toks[i]!.v : '';
  const afterKind = skipIfExists(toks, i + 1);
  switch (kind) {
    case 'TABLE':
    case 'TABLES':
    case 'VIEW':
    case 'SEQUENCE': {
      const k = kind === 'TABLES' ? 'TABLE' : kind;
      acc.statement(`DROP_${k}`, 'ddl');
      for (const name of readNames(toks, afterKind).names) acc.writes.add(name);
      if (findTop(toks, afterKind, (t) => isWord(t, 'CASCADE')) > 0) acc.flags.add('cascade');
      return;
    }
    case 'INDEX': {
      acc.statement('DROP_INDEX', 'ddl');
      const on = findTop(toks, afterKind, (t) => isWord(t, 'ON'));
      const r = on > 0 ? readName(toks, on + 1) : undefined;
      if (r) acc.writes.add(r.name);
      return;
    }
    case 'DATABASE':
    case 'SCHEMA':
      acc.statement('DROP_DATABASE', 'ddl', 'DROP DATABASE drops every table in it');
      return;
    case 'PROCEDURE':
    case 'FUNCTION':
    case 'TRIGGER':
    case 'EVENT':
    case 'PACKAGE':
      acc.statement(`DROP_${kind}`, 'ddl');
      return;
    case 'USER':
    case 'ROLE':
      acc.statement(`DROP_${kind}`, 'dcl');
      return;
    case 'PREPARE': {
      acc.statement('DEALLOCATE', 'read');
      const r = readName(toks, i + 1);
      if (r) acc.deallocateName = r.name.toLowerCase();
      return;
    }
    case 'SERVER':
    case 'TABLESPACE':
    case 'LOGFILE':
    case 'RESOURCE':
    case 'SPATIAL':
      acc.statement(`DROP_${kind}`, 'admin', `DROP ${kind} is server configuration`);
      return;
    default:
      unrecognized(toks, acc);
  }
}

function admin(type: string, reason: string): Handler {
  return (toks, acc, ctx) => {
    acc.statement(type, 'admin', reason);
    scanExpressions(toks, 1, toks.length, acc, ctx);
  };
}

function stop(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'SLAVE', 'REPLICA', 'ALL', 'GROUP_REPLICATION')) acc.statement('STOP_REPLICA', 'admin', 'STOP SLAVE/REPLICA controls replication');
  else unrecognized(toks, acc);
}

function get(toks: Tok[], acc: Acc): void {
  if (isWord(toks[1], 'DIAGNOSTICS') || (isWord(toks[1], 'CURRENT', 'STACKED') && isWord(toks[2], 'DIAGNOSTICS'))) acc.statement('GET_DIAGNOSTICS', 'read');
  else unrecognized(toks, acc);
}

function parsed(head: string): Handler {
  return (toks, acc, ctx) => parsedStatement(toks, head, acc, ctx);
}

// Keys are upper-case first words. A null prototype, so no word resolves to an inherited member.
const HEADS: Record<string, Handler> = Object.assign(Object.create(null) as Record<string, Handler>, {
  SELECT: parsed('SELECT'),
  WITH: parsed('SELECT'),
  INSERT: parsed('INSERT'),
  REPLACE: parsed('REPLACE'),
  UPDATE: parsed('UPDATE'),
  DELETE: parsed('DELETE'),
  VALUES: valuesStatement,
  TABLE: tableStatement,
  LOAD: load,
  CALL: call,
  DO: doStatement,
  SET: setStatement,
  SHOW: show,
  DESCRIBE: explain,
  DESC: explain,
  EXPLAIN: explain,
  ANALYZE: analyze,
  OPTIMIZE: maintenance('OPTIMIZE_TABLE'),
  REPAIR: maintenance('REPAIR_TABLE'),
  CHECK: checkTable('CHECK_TABLE'),
  CHECKSUM: checkTable('CHECKSUM_TABLE'),
  USE: use,
  HELP: simple('HELP', 'read'),
  BEGIN: begin,
  START: start,
  COMMIT: transaction('COMMIT'),
  ROLLBACK: rollback,
  SAVEPOINT: simple('SAVEPOINT', 'read'),
  RELEASE: release,
  XA: xa,
  LOCK: lock,
  UNLOCK: unlock,
  HANDLER: handler,
  PREPARE: prepare,
  EXECUTE: execute,
  DEALLOCATE: deallocate,
  CREATE: create,
  ALTER: alter,
  DROP: drop,
  RENAME: rename,
  TRUNCATE: truncate,
  GRANT: grant('GRANT'),
  REVOKE: grant('REVOKE'),
  KILL: kill,
  SHUTDOWN: admin('SHUTDOWN', 'SHUTDOWN stops the server'),
  RESTART: admin('RESTART', 'RESTART restarts the server'),
  FLUSH: admin('FLUSH', 'FLUSH acts on server-wide caches, logs or locks'),
  RESET: admin('RESET', 'RESET discards server state (binary logs, replication, caches)'),
  PURGE: admin('PURGE', 'PURGE deletes binary logs'),
  INSTALL: admin('INSTALL', 'INSTALL PLUGIN/SONAME loads code into the server'),
  UNINSTALL: admin('UNINSTALL', 'UNINSTALL PLUGIN/SONAME'),
  CHANGE: admin('CHANGE_MASTER', 'CHANGE MASTER/REPLICATION points replication elsewhere'),
  STOP: stop,
  BINLOG: admin('BINLOG', 'BINLOG applies raw replication events'),
  CACHE: admin('CACHE_INDEX', 'CACHE INDEX changes key caches'),
  BACKUP: admin('BACKUP', 'BACKUP STAGE/LOCK blocks the server for a backup'),
  CLONE: admin('CLONE', 'CLONE copies or replaces a whole server'),
  IMPORT: admin('IMPORT_TABLE', 'IMPORT TABLE reads files on the database server'),
  GET: get,
  SIGNAL: simple('SIGNAL', 'read'),
  RESIGNAL: simple('RESIGNAL', 'read'),
  IF: compoundBlock,
  CASE: compoundBlock,
  LOOP: compoundBlock,
  REPEAT: compoundBlock,
  WHILE: compoundBlock,
  FOR: compoundBlock,
} satisfies Record<string, Handler>);

/** One statement's tokens (no `;`) to its classification. */
function classifyTokens(toks: Tok[], ctx: Ctx): Classification {
  const acc = new Acc();
  dangerScan(toks, acc);
  const first = toks[0];
  if (!first) {
    acc.flags.add('parse_error');
    acc.add('unknown', 'empty statement');
    return acc.finish();
  }
  if (first.k === '(') {
    parsedStatement(toks, 'SELECT', acc, ctx);
  } else if (first.k === 'word' && toks[1]?.raw === ':' && isWord(toks[2], 'BEGIN', 'LOOP', 'REPEAT', 'WHILE', 'FOR')) {
    compoundBlock(toks, acc, ctx); // label: BEGIN … END label
  } else {
    const h = first.k === 'word' ? HEADS[first.v] : undefined;
    if (h) h(toks, acc, ctx);
    else unrecognized(toks, acc);
  }
  return acc.finish();
}

// ---------------------------------------------------------------------------------------------
// Readings, multi-statement texts, cache, entry point

function empty(): Classification {
  return { class: 'read', classes: ['read'], types: [], reads: [], writes: [], flags: ['empty'], functions: [], reason: 'empty query' };
}

/** Words that start a piece of a compound statement's body, never a statement of its own. */
const BODY_ONLY = new Set(['END', 'DECLARE', 'RETURN', 'LEAVE', 'ITERATE', 'OPEN', 'FETCH', 'CLOSE', 'ELSE', 'ELSEIF', 'WHEN', 'UNTIL']);

/**
 * After CREATE PROCEDURE … BEGIN (or BEGIN NOT ATOMIC, IF …), the text's `;` no longer ends
 * statements, and we do not follow the body's grammar. Pieces are judged as if they ran (an
 * over-approximation for a definition), except those only a body has (`END IF`, `DECLARE x
 * INT`, `FETCH c INTO v`): those are skipped, but for the statement an ELSE, ELSEIF … THEN or
 * WHEN … THEN leads, and for what the token scans see. Anything else stays as classified, so
 * a statement we cannot read after a CREATE PROCEDURE is still `unknown`.
 */
function bodyPiece(toks: Tok[], ctx: Ctx): Classification | undefined {
  const head = toks[0]?.k === 'word' ? toks[0].v : '';
  if (!BODY_ONLY.has(head)) return undefined;
  const acc = new Acc();
  dangerScan(toks, acc);
  acc.flags.add(COMPOUND);
  const at = head === 'ELSE' ? 0 : head === 'ELSEIF' || head === 'WHEN' ? findTop(toks, 1, (t) => isWord(t, 'THEN')) : -1;
  if (at >= 0 && at + 1 < toks.length) acc.absorb(classifyTokens(toks.slice(at + 1), ctx));
  return acc.finish();
}

/** What a text does under one reading of its executable comments. */
function classifyReading(lexed: LexResult, ctx: Ctx): Classification {
  if (lexed.error !== undefined) return unknownClassification(`the server would reject this text: ${lexed.error}`, ['parse_error']);
  const stmts = splitStatements(lexed.toks);
  if (stmts.length === 0) return empty();
  const list: Classification[] = [];
  let inBody = false;
  for (const s of stmts) {
    const c = (inBody ? bodyPiece(s, ctx) : undefined) ?? classifyTokens(s, ctx);
    if (c.flags.includes(COMPOUND)) inBody = true;
    list.push(c);
  }
  if (list.length === 1) return list[0]!;
  // Several statements run in order; an EXECUTE of a name PREPAREd earlier in the same text runs
  // that very statement.
  const local = new PreparedStatements();
  const resolved = list.map((c) => {
    const r = local.resolve(c);
    local.record(r);
    return r;
  });
  const merged = mergeClassifications(resolved);
  if (!merged.flags.includes('multiple_statements')) merged.flags.push('multiple_statements');
  return merged;
}

/** More distinct readings than this (a text full of different version gates) is unknown. */
const MAX_READINGS = 12;

/**
 * Servers older than this are not considered: every gate below it (mysqldump's /*!40101 …) is
 * taken as open. MySQL 5.5 and MariaDB 5.5 are long out of support.
 */
const OLDEST_SERVER = 50500;

/**
 * The servers that could read `text` differently: for each flavor, one per version a gated
 * comment names, and the oldest considered. Opening is monotonic in the server's version, so
 * these stand for every server there is. 999999 is mysqldump's never-run marker (/*M!999999\-
 * enable the sandbox mode), not a version anyone runs.
 */
function candidateServers(text: string): Reading[] {
  const mysql = new Set<number>([OLDEST_SERVER]);
  const maria = new Set<number>([OLDEST_SERVER]);
  for (const m of text.matchAll(/\/\*([mM]?)!(\d{5})(\d?)/g)) {
    if (!m[1] && Number(m[2]) > OLDEST_SERVER) mysql.add(Number(m[2]));
    const v = Number(m[2]! + m[3]!);
    if (v < 999999 && v > OLDEST_SERVER) maria.add(v);
  }
  return [...[...mysql].map((version) => ({ flavor: 'mysql' as const, version })), ...[...maria].map((version) => ({ flavor: 'mariadb' as const, version }))];
}

function readingKey(r: LexResult): string {
  if (r.error !== undefined) return `error:${r.error}`;
  let key = '';
  for (const t of r.toks) key += (t.sp ? ' ' : '') + t.raw + '\u0001';
  return key;
}

function classifyUncached(text: string, opts: MysqlClassifyOptions): Classification {
  if (text.includes('\0')) return unknownClassification('statement text contains a NUL byte', ['parse_error']);
  const nbe = opts.noBackslashEscapes === true;
  const ctx: Ctx = { opts, flavor: opts.server?.flavor ?? 'mariadb' };
  if (opts.server) return classifyReading(lex(text, opts.server, nbe), ctx);
  // Without executable comments, every server reads the text alike.
  if (!/\/\*[mM]?!/.test(text)) return classifyReading(lex(text, { flavor: 'mariadb', version: 999999 }, nbe), ctx);
  const readings = new Map<string, LexResult>();
  for (const server of candidateServers(text)) {
    const r = lex(text, server, nbe);
    readings.set(readingKey(r), r);
    if (readings.size > MAX_READINGS) {
      return unknownClassification('too many version-dependent comments to judge every server', ['version_dependent']);
    }
  }
  const results = [...readings.values()].map((r) => classifyReading(r, ctx));
  if (results.length === 1) return results[0]!;
  // Which server it is decides what runs: the verdict holds for each of them.
  const parts = results.filter((c) => !c.flags.includes('empty'));
  const out = parts.length ? unionClassifications(parts) : empty();
  const withStatements = results.find((c) => c.statements);
  if (withStatements) out.statements = withStatements.statements;
  if (!out.flags.includes('version_dependent')) out.flags.push('version_dependent');
  return out;
}

const cache = new ClassificationCache();
const cached = (key: string): Classification | undefined => cache.get(key);
const remember = (key: string, c: Classification): void => cache.set(key, c);

/** Drops every cached classification (tests, or after changing the classifier's tables). */
export function clearMysqlClassificationCache(): void {
  cache.clear();
}

function cacheKey(text: string, opts: MysqlClassifyOptions): string {
  if (!opts.server && !opts.noBackslashEscapes) return text;
  const s = opts.server ? `${opts.server.flavor}${opts.server.version}` : 'any';
  return `\0${s}:${opts.noBackslashEscapes ? 1 : 0}\0${text}`; // NUL never reaches the cache otherwise
}

/**
 * Classifies a MySQL/MariaDB COM_QUERY text (one or more statements). Never throws: text that
 * cannot be read is `unknown`. Results are cached by text (and options) and frozen; do not
 * modify them. An EXECUTE comes back `unknown`; resolve it with the session's
 * PreparedStatements.
 */
export function classifyMysql(text: string, opts: MysqlClassifyOptions = {}): Classification {
  const key = cacheKey(text, opts);
  const hit = cached(key);
  if (hit !== undefined) return hit;
  let c: Classification;
  try {
    c = classifyUncached(text, opts);
  } catch (err) {
    // A bug here must not let a statement through as something milder.
    return unknownClassification(`MySQL classifier failed: ${(err as Error).message}`);
  }
  deepFreeze(c);
  remember(key, c);
  return c;
}

/**
 * The text with comments removed and executable comments opened, as the given server (by
 * default, a MariaDB newer than any) would read it; undefined when it would be rejected.
 * For audit displays and tests.
 */
export function expandMysqlComments(text: string, opts: MysqlClassifyOptions = {}): string | undefined {
  const r = lex(text, opts.server ?? { flavor: 'mariadb', version: 999998 }, opts.noBackslashEscapes === true);
  if (r.error !== undefined) return undefined;
  return splitStatements(r.toks).map(render).join('; ');
}
