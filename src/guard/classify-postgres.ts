// PostgreSQL statement classification from the server's own parser (libpg-query, WASM).
//
// Why the real parser: comments, dollar quotes, E'' strings and nested statements are resolved
// exactly as the server will resolve them, so no keyword can hide from a rule (a regex or
// tokenizer would be one quoting trick away from a bypass).
//
// Why a generic walk: the parse tree has hundreds of node types and new ones appear with each
// PostgreSQL release. We recurse into every object and array, and react only to the node types
// that matter (statements, function calls, relations). A node type we do not know is still
// walked, so a function call or statement nested inside it is still found; a *statement* type we
// do not know makes the whole command `unknown`, never quietly `read`.
//
// JSON shape notes (libpg-query's protobuf JSON): a field typed `Node` is wrapped, e.g.
// `{"RangeVar": {...}}`; a field typed with a concrete struct (InsertStmt.relation,
// SelectStmt.larg, CallStmt.funccall, IntoClause.rel) is not. RangeVars are therefore detected
// by shape (a string `relname`), which catches both. Zero values (false, 0, "") are omitted.
import { ClassificationCache, deepFreeze } from './classification-cache.ts';
import pgQuery from 'libpg-query';
import {
  ClassificationAccumulator,
  type Classification,
  type CommandClass,
  mergeClassifications,
  unknownClassification,
} from './classification.ts';
import { PreparedStatements } from './prepared.ts';

export { loadPostgresParser } from './sql-postgres.ts';

type Obj = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Functions

/**
 * Built-in (and common extension) functions that reach outside the database's data: the server's
 * files, other backends, other servers, the configuration, WAL and replication, or raw pages that
 * bypass row-level security. Matched on the unqualified, lower-cased name: a same-named function
 * in another schema is flagged too, which errs on the safe side.
 */
const DANGEROUS_FUNCTIONS = new Set([
  // other sessions
  'pg_terminate_backend', 'pg_cancel_backend', 'pg_log_backend_memory_contexts',
  // server files
  'pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'pg_ls_dir',
  'lo_import', 'lo_export', 'lo_unlink',
  // configuration and server state
  'pg_reload_conf', 'pg_rotate_logfile', 'pg_promote', 'set_config', 'pg_import_system_collations',
  // WAL, backup, recovery
  'pg_switch_wal', 'pg_switch_xlog', 'pg_create_restore_point', 'pg_start_backup', 'pg_stop_backup',
  'pg_backup_start', 'pg_backup_stop', 'pg_wal_replay_pause', 'pg_wal_replay_resume', 'pg_log_standby_snapshot',
  // replication slots (logical decoding streams every change in the database)
  'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
  'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot', 'pg_replication_slot_advance',
  'pg_sync_replication_slots',
  // planner statistics tampering (PostgreSQL 18)
  'pg_restore_relation_stats', 'pg_clear_relation_stats', 'pg_restore_attribute_stats', 'pg_clear_attribute_stats',
  // SQL hidden in a string argument: the query it runs is invisible to this classifier
  'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'cursor_to_xml', 'cursor_to_xmlschema',
  'table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema', 'ts_stat', 'ts_rewrite',
  // raw pages and buffers (pageinspect, pg_buffercache, pg_prewarm, pg_visibility, pg_walinspect)
  'get_raw_page', 'heap_page_items', 'bt_page_items', 'pg_buffercache_evict', 'pg_prewarm',
  'pg_truncate_visibility_map', 'copy_to_program',
]);

/** Whole families: every member reaches outside the data (dblink_connect, pg_ls_waldir, …). */
const DANGEROUS_PREFIXES = [
  'dblink', 'pg_ls_', 'pg_file_', 'pg_read_', 'pg_logdir_', 'pg_stat_reset', 'pg_stat_statements_reset',
  'pg_replication_origin_', 'pg_logical_', 'pg_background_', 'binary_upgrade_', 'pg_get_wal_',
  'schema_to_xml', 'database_to_xml',
];

/**
 * Functions that change state although they are called from a SELECT. PostgreSQL itself refuses
 * them in a read-only transaction (nextval, setval, large-object writes); pg_notify is NOTIFY.
 */
const WRITE_FUNCTIONS = new Set([
  'nextval', 'setval', 'lo_create', 'lo_creat', 'lo_put', 'lo_from_bytea', 'lo_truncate', 'lo_truncate64',
  'lowrite', 'pg_notify',
]);

/**
 * Settings whose change is an escalation: they switch identity, disable triggers and foreign-key
 * enforcement (session_replication_role), touch server internals, or hide activity from the
 * server log. GUC names are case-insensitive, so compare lower-cased. Leaving a read-only
 * transaction mode (SET TRANSACTION READ WRITE, default_transaction_read_only) is not listed:
 * ORMs do it routinely, and the writes that might follow are classified as writes anyway.
 */
const SENSITIVE_SETTINGS = new Set([
  'role', 'session_authorization', 'session_replication_role', 'log_statement', 'log_min_duration_statement',
  'log_min_messages', 'log_min_error_statement', 'allow_system_table_mods', 'zero_damaged_pages',
  'ignore_checksum_failure', 'ignore_system_indexes', 'dynamic_library_path', 'session_preload_libraries',
  'local_preload_libraries',
]);

/**
 * Whether a SET or BEGIN turns a read-only session writable: SET TRANSACTION / SESSION
 * CHARACTERISTICS / BEGIN … READ WRITE, or any SET of the read-only settings. Routine for ORMs,
 * so not a class of its own; flagged (`read_write`) for sessions the policy keeps read-only.
 */
function leavesReadOnly(name: string, args: unknown): boolean {
  if (name === 'default_transaction_read_only' || name === 'transaction_read_only') return true;
  if (!Array.isArray(args)) return false;
  for (const a of args) {
    const d = (a as { DefElem?: { defname?: string; arg?: { A_Const?: { ival?: { ival?: number } } } } }).DefElem;
    // READ WRITE parses as transaction_read_only = 0, whose ival protobuf leaves empty.
    if (d?.defname === 'transaction_read_only' && !d.arg?.A_Const?.ival?.ival) return true;
  }
  return false;
}

function isDangerousFunction(name: string): boolean {
  if (DANGEROUS_FUNCTIONS.has(name)) return true;
  for (const p of DANGEROUS_PREFIXES) if (name.startsWith(p)) return true;
  return false;
}

/** A string constant argument (`'role'`), or undefined for anything computed. */
function stringConst(node: unknown): string | undefined {
  const c = (node as Obj | undefined)?.A_Const as Obj | undefined;
  if (!c) return undefined;
  const s = c.sval as Obj | undefined;
  if (!s) return undefined;
  return typeof s.sval === 'string' ? s.sval : ''; // protobuf JSON omits the empty string
}

/** Last part of a qualified name list ([String schema, String name]), lower-cased. */
function lastName(list: unknown): string {
  if (!Array.isArray(list) || list.length === 0) return '';
  const s = (list[list.length - 1] as Obj).String as Obj | undefined;
  return typeof s?.sval === 'string' ? s.sval.toLowerCase() : '';
}

/** A qualified name list as written ("a.b"); `undefined` if a part is not a plain name. */
function dottedName(list: unknown): string | undefined {
  if (!Array.isArray(list)) return undefined;
  const parts: string[] = [];
  for (const item of list) {
    const s = (item as Obj).String as Obj | undefined;
    if (!s || typeof s.sval !== 'string') return undefined;
    parts.push(s.sval);
  }
  return parts.join('.');
}

// ---------------------------------------------------------------------------------------------
// The walk

/** What one statement was found to do; turned into a frozen Classification at the end. */
class Acc extends ClassificationAccumulator {}

/** CTE names visible at a point of the tree; an unqualified relation of that name is the CTE. */
interface CteScope {
  names: readonly string[];
  parent: CteScope | null;
}

interface Ctx {
  acc: Acc;
  ctes: CteScope | null;
  /** relations met are written (a DML target, TRUNCATE list, …) rather than read */
  write: boolean;
  /**
   * Statements here are planned or defined but not run now (plain EXPLAIN, a view's query, a
   * function body, a rule's actions): they add no class or type and their relations count as
   * reads. Function calls still count: the planner may evaluate them while folding constants,
   * and a definition that calls pg_read_file deserves the same scrutiny as the call.
   */
  inert: boolean;
}

function inScope(scope: CteScope | null, name: string): boolean {
  for (let s = scope; s; s = s.parent) if (s.names.includes(name)) return true;
  return false;
}

function relation(o: Obj, ctx: Ctx): void {
  const relname = o.relname as string;
  const schema = typeof o.schemaname === 'string' ? o.schemaname : undefined;
  const catalog = typeof o.catalogname === 'string' ? o.catalogname : undefined;
  const name = (catalog ? catalog + '.' : '') + (schema ? schema + '.' : '') + relname;
  if (ctx.write && !ctx.inert) {
    // A DML target is always a real table: PostgreSQL does not resolve it against CTE names.
    ctx.acc.writes.add(name);
    return;
  }
  if (!schema && !catalog && inScope(ctx.ctes, relname)) return;
  ctx.acc.reads.add(name);
}

function walk(v: unknown, ctx: Ctx): void {
  if (v === null || typeof v !== 'object') return;
  if (Array.isArray(v)) {
    for (const x of v) walk(x, ctx);
    return;
  }
  const o = v as Obj;
  if (typeof o.relname === 'string') {
    relation(o, ctx);
    return;
  }
  for (const k in o) {
    const child = o[k];
    if (child === null || typeof child !== 'object') continue;
    const h = HANDLERS[k];
    if (h !== undefined) h(child as Obj, ctx);
    else if (k.endsWith('Stmt') && k.charCodeAt(0) < 97 /* upper-case: a node type, not a field */) unrecognized(k, child as Obj, ctx);
    else walk(child, ctx);
  }
}

/** Walks every field of `o` except those in `skip`. */
function walkFields(o: Obj, ctx: Ctx, skip: ReadonlySet<string>): void {
  for (const k in o) {
    if (skip.has(k)) continue;
    const child = o[k];
    if (child !== null && typeof child === 'object') walk(child, ctx);
  }
}

function asWrite(ctx: Ctx): Ctx {
  return ctx.write ? ctx : { ...ctx, write: true };
}
function asRead(ctx: Ctx): Ctx {
  return ctx.write ? { ...ctx, write: false } : ctx;
}
function asInert(ctx: Ctx): Ctx {
  return ctx.inert ? ctx : { ...ctx, inert: true };
}

/** Records that a statement of `type` runs, with its class. No-op where nothing runs. */
function statement(ctx: Ctx, type: string, cls: CommandClass, reason?: string): void {
  if (ctx.inert) return;
  ctx.acc.type(type);
  ctx.acc.add(cls, reason ?? type.replace(/_/g, ' '));
}

function flag(ctx: Ctx, f: string): void {
  if (!ctx.inert) ctx.acc.flags.add(f);
}

function unrecognized(nodeType: string, o: Obj, ctx: Ctx): void {
  // A statement this classifier was not written for (a newer PostgreSQL): walk it for what we
  // can see, but never let it pass as something milder than unknown.
  const type = nodeType.replace(/Stmt$/, '').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
  statement(ctx, type, 'unknown', `unrecognized statement ${nodeType}`);
  flag(ctx, 'unrecognized_statement');
  walk(o, ctx);
}

const DML = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/**
 * Walks a statement that may carry a WITH clause. Each CTE's body sees the CTEs before it (all of
 * them if RECURSIVE); the main body sees all. Scoping matters: `FROM secret` outside the WITH
 * that defines a CTE named "secret" is the real table and must be reported.
 */
function withScope(wc: unknown, ctx: Ctx, body: (ctx: Ctx) => void): void {
  const w = wc as Obj | undefined;
  const ctes = (w?.ctes as Obj[] | undefined) ?? [];
  if (ctes.length === 0) {
    body(ctx);
    return;
  }
  const names = ctes.map((c) => String(((c.CommonTableExpr as Obj | undefined)?.ctename as string | undefined) ?? ''));
  const recursive = w!.recursive === true;
  ctes.forEach((c, i) => {
    const cte = (c.CommonTableExpr as Obj | undefined) ?? c;
    const visible = recursive ? names : names.slice(0, i);
    const inner: Ctx = visible.length ? { ...ctx, ctes: { names: visible, parent: ctx.ctes } } : ctx;
    const q = cte.ctequery as Obj | undefined;
    if (q) {
      const kind = Object.keys(q)[0]!;
      if (DML.has(kind) && !ctx.inert) {
        flag(ctx, 'data_modifying_cte');
        ctx.acc.add('write', `data-modifying WITH (${kind.replace('Stmt', '').toUpperCase()})`);
      }
    }
    walk(cte, asRead(inner));
  });
  body({ ...ctx, ctes: { names, parent: ctx.ctes } });
}

type Handler = (o: Obj, ctx: Ctx) => void;

const SELECT_SKIP = new Set(['withClause', 'intoClause', 'larg', 'rarg', 'lockingClause']);

function selectStmt(o: Obj, ctx: Ctx): void {
  const pureValues = o.valuesLists !== undefined && o.larg === undefined;
  if (o.intoClause) {
    // SELECT … INTO t creates and fills a table: the same as CREATE TABLE t AS SELECT.
    statement(ctx, 'SELECT_INTO', 'ddl', 'SELECT INTO creates a table');
    if (!ctx.inert) {
      ctx.acc.add('write', 'SELECT INTO fills a table');
      ctx.acc.add('read', 'SELECT');
    }
    walk(o.intoClause, asWrite(ctx));
  } else if (!pureValues) {
    // A bare VALUES list (INSERT … VALUES) reads nothing; it is not reported as a SELECT.
    statement(ctx, 'SELECT', 'read');
  }
  if (Array.isArray(o.lockingClause)) {
    for (const l of o.lockingClause as Obj[]) {
      const strength = (l.LockingClause as Obj | undefined)?.strength;
      flag(ctx, strength === 'LCS_FORUPDATE' || strength === 'LCS_FORNOKEYUPDATE' ? 'for_update' : 'for_share');
    }
    walk(o.lockingClause, asRead(ctx));
  }
  withScope(o.withClause, ctx, (c) => {
    const r = asRead(c);
    if (o.larg) selectStmt(o.larg as Obj, r);
    if (o.rarg) selectStmt(o.rarg as Obj, r);
    walkFields(o, r, SELECT_SKIP);
  });
}

const TARGET_SKIP = new Set(['withClause', 'relation']);

function dml(type: 'INSERT' | 'UPDATE' | 'DELETE' | 'MERGE'): Handler {
  return (o, ctx) => {
    const rel = o.relation as Obj | undefined;
    const target = rel ? relName(rel) : '?';
    statement(ctx, type, 'write', `${type} on ${target}`);
    // UPDATE … WHERE CURRENT OF has a whereClause (CurrentOfExpr), so it is not flagged.
    if ((type === 'UPDATE' || type === 'DELETE') && o.whereClause === undefined) flag(ctx, 'without_where');
    withScope(o.withClause, ctx, (c) => {
      walk(rel, asWrite(c));
      walkFields(o, asRead(c), TARGET_SKIP);
    });
  };
}

function relName(o: Obj): string {
  return (typeof o.catalogname === 'string' ? o.catalogname + '.' : '') + (typeof o.schemaname === 'string' ? o.schemaname + '.' : '') + String(o.relname);
}

/**
 * A statement whose listed fields hold relations it writes or redefines; all other fields are
 * walked as reads. `inert` fields hold statements that are defined, not run (a view's query).
 */
function simple(
  type: string | ((o: Obj) => string),
  cls: CommandClass | ((o: Obj) => CommandClass),
  writeFields: string[] = [],
  inertFields: string[] = [],
): Handler {
  const skip = new Set([...writeFields, ...inertFields]);
  return (o, ctx) => {
    statement(ctx, typeof type === 'function' ? type(o) : type, typeof cls === 'function' ? cls(o) : cls);
    for (const f of writeFields) if (o[f] !== undefined) walk(o[f], asWrite(ctx));
    for (const f of inertFields) if (o[f] !== undefined) walk(o[f], asInert(asRead(ctx)));
    walkFields(o, asRead(ctx), skip);
  };
}

/** EXPLAIN runs its statement only with ANALYZE; an option value we cannot read counts as on. */
function explainAnalyzes(options: unknown): boolean {
  if (!Array.isArray(options)) return false;
  for (const opt of options as Obj[]) {
    const d = opt.DefElem as Obj | undefined;
    if (!d || (d.defname !== 'analyze' && d.defname !== 'analyse')) continue;
    const arg = d.arg as Obj | undefined;
    if (!arg) return true;
    const s = (arg.String as Obj | undefined)?.sval;
    if (typeof s === 'string' && ['false', 'off', 'no', '0'].includes(s.toLowerCase())) continue;
    const i = arg.Integer as Obj | undefined;
    if (i && (i.ival === undefined || i.ival === 0)) continue;
    const b = arg.Boolean as Obj | undefined;
    if (b && b.boolval !== true) continue;
    return true; // later options win in PostgreSQL; any "on" is enough for us
  }
  return false;
}

function funcCall(o: Obj, ctx: Ctx): void {
  const name = lastName(o.funcname);
  const acc = ctx.acc;
  acc.functions.add(name);
  if (name === 'set_config') {
    // set_config('search_path', …) is routine (pg_dump, ORMs); set_config('role', …) is SET ROLE.
    const setting = stringConst((o.args as unknown[] | undefined)?.[0]);
    if (setting !== undefined && leavesReadOnly(setting.toLowerCase(), null)) acc.flags.add('read_write');
    if (setting !== undefined && !SENSITIVE_SETTINGS.has(setting.toLowerCase())) {
      walkFields(o, ctx, FUNCNAME_SKIP);
      return;
    }
  }
  if (isDangerousFunction(name)) {
    acc.add('admin', `calls ${name}`);
    acc.flags.add('dangerous_function');
  } else if (WRITE_FUNCTIONS.has(name)) {
    acc.add('write', `calls ${name}`);
  }
  walkFields(o, ctx, FUNCNAME_SKIP);
}
const FUNCNAME_SKIP = new Set(['funcname']);

const OBJECT_NAMES: Record<string, string> = {
  MATVIEW: 'MATERIALIZED_VIEW',
  FDW: 'FOREIGN_DATA_WRAPPER',
  FOREIGN_SERVER: 'SERVER',
  TSCONFIGURATION: 'TEXT_SEARCH_CONFIGURATION',
  TSDICTIONARY: 'TEXT_SEARCH_DICTIONARY',
  TSPARSER: 'TEXT_SEARCH_PARSER',
  TSTEMPLATE: 'TEXT_SEARCH_TEMPLATE',
  STATISTIC_EXT: 'STATISTICS',
  LARGEOBJECT: 'LARGE_OBJECT',
};
function objectName(objtype: unknown): string {
  const raw = typeof objtype === 'string' ? objtype.replace(/^OBJECT_/, '') : 'OBJECT';
  return OBJECT_NAMES[raw] ?? raw;
}

/** Object kinds that are relations: dropping one writes it. */
const RELATION_KINDS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_SEQUENCE', 'OBJECT_INDEX']);
/** Object kinds outside the database's schema: extensions and foreign servers run code or reach out. */
const ADMIN_KINDS = new Set(['OBJECT_EXTENSION', 'OBJECT_FDW', 'OBJECT_FOREIGN_SERVER', 'OBJECT_ACCESS_METHOD', 'OBJECT_LANGUAGE', 'OBJECT_PUBLICATION', 'OBJECT_SUBSCRIPTION', 'OBJECT_TABLESPACE', 'OBJECT_DATABASE']);
const DCL_KINDS = new Set(['OBJECT_POLICY', 'OBJECT_ROLE']);
const PROCEDURAL_KINDS = new Set(['OBJECT_EVENT_TRIGGER']);
function kindClass(objtype: unknown, fallback: CommandClass = 'ddl'): CommandClass {
  const k = objtype as string;
  if (ADMIN_KINDS.has(k)) return 'admin';
  if (DCL_KINDS.has(k)) return 'dcl';
  if (PROCEDURAL_KINDS.has(k)) return 'procedural';
  return fallback;
}

/** ALTER TABLE subcommands that are privilege matters rather than schema changes. */
const DCL_SUBCOMMANDS: Record<string, string> = {
  AT_ChangeOwner: 'OWNER TO',
  AT_EnableRowSecurity: 'ENABLE ROW LEVEL SECURITY',
  AT_DisableRowSecurity: 'DISABLE ROW LEVEL SECURITY',
  AT_ForceRowSecurity: 'FORCE ROW LEVEL SECURITY',
  AT_NoForceRowSecurity: 'NO FORCE ROW LEVEL SECURITY',
};

const TRANSACTION_TYPES: Record<string, string> = {
  TRANS_STMT_BEGIN: 'BEGIN',
  TRANS_STMT_START: 'BEGIN',
  TRANS_STMT_COMMIT: 'COMMIT',
  TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT',
  TRANS_STMT_RELEASE: 'RELEASE_SAVEPOINT',
  TRANS_STMT_ROLLBACK_TO: 'ROLLBACK_TO_SAVEPOINT',
  TRANS_STMT_PREPARE: 'PREPARE_TRANSACTION',
  TRANS_STMT_COMMIT_PREPARED: 'COMMIT_PREPARED',
  TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK_PREPARED',
};

// Keys are node type names. A null prototype, so that no field name could ever resolve to an
// inherited member such as `constructor` and be mistaken for a handler.
const HANDLERS: Record<string, Handler> = Object.assign(Object.create(null) as Record<string, Handler>, {
  SelectStmt: selectStmt,
  InsertStmt: dml('INSERT'),
  UpdateStmt: dml('UPDATE'),
  DeleteStmt: dml('DELETE'),
  MergeStmt: dml('MERGE'),
  FuncCall: funcCall,

  CopyStmt(o, ctx) {
    const from = o.is_from === true;
    if (o.is_program) {
      statement(ctx, 'COPY', 'admin', `COPY ${from ? 'FROM' : 'TO'} PROGRAM runs a shell command on the database server`);
      flag(ctx, 'program_copy');
    } else if (o.filename !== undefined) {
      statement(ctx, 'COPY', 'admin', `COPY ${from ? 'FROM' : 'TO'} a file on the database server (${String(o.filename)})`);
      flag(ctx, 'server_file_copy');
    } else {
      statement(ctx, 'COPY', 'copy', `COPY ${from ? 'FROM STDIN' : 'TO STDOUT'}`);
    }
    // The direction, as a class too, so "no writes" rules see COPY FROM.
    if (!ctx.inert) ctx.acc.add(from ? 'write' : 'read', from ? 'COPY FROM' : 'COPY TO');
    if (o.relation) walk(o.relation, from ? asWrite(ctx) : asRead(ctx));
    walkFields(o, asRead(ctx), RELATION_SKIP);
  },

  ExplainStmt(o, ctx) {
    statement(ctx, 'EXPLAIN', 'read');
    if (explainAnalyzes(o.options) && !ctx.inert) {
      flag(ctx, 'analyze');
      walk(o.query, ctx);
    } else {
      walk(o.query, asInert(ctx));
    }
  },

  PrepareStmt(o, ctx) {
    // PREPARE takes the class of the query it prepares, so a dangerous statement is stopped
    // when it is prepared; EXECUTE then inherits it through PreparedStatements.
    if (!ctx.inert) ctx.acc.type('PREPARE');
    if (typeof o.name === 'string') ctx.acc.prepareName = o.name;
    walk(o.query, ctx);
    walk(o.argtypes, ctx);
  },

  ExecuteStmt(o, ctx) {
    if (!ctx.inert) {
      const name = String(o.name ?? '');
      statement(ctx, 'EXECUTE', 'unknown', `executes prepared statement "${name}", which this session has not seen prepared`);
      ctx.acc.executeName = name;
    }
    walk(o.params, ctx); // EXECUTE p(pg_read_file('x')) runs the function now
  },

  DeallocateStmt(o, ctx) {
    statement(ctx, 'DEALLOCATE', 'read');
    if (o.isall === true) flag(ctx, 'deallocate_all');
    else if (typeof o.name === 'string' && !ctx.inert) ctx.acc.deallocateName = o.name;
  },

  DiscardStmt(o, ctx) {
    statement(ctx, 'DISCARD', 'read');
    if (o.target === 'DISCARD_ALL') flag(ctx, 'deallocate_all'); // DISCARD ALL includes DEALLOCATE ALL
  },

  VariableSetStmt(o, ctx) {
    const name = typeof o.name === 'string' ? o.name.toLowerCase() : '';
    if (leavesReadOnly(name, o.args)) ctx.acc.flags.add('read_write');
    if (o.kind === 'VAR_RESET' || o.kind === 'VAR_RESET_ALL') {
      // RESET returns to the connection's own settings (RESET ROLE: the role the gateway logged
      // in with), which cannot exceed what the gateway was configured with.
      statement(ctx, 'RESET', 'read');
    } else if (name === 'role') {
      statement(ctx, 'SET_ROLE', 'admin', 'SET ROLE changes the privileges the session runs with');
    } else if (name === 'session_authorization') {
      statement(ctx, 'SET_SESSION_AUTHORIZATION', 'admin', 'SET SESSION AUTHORIZATION changes the session user');
    } else if (SENSITIVE_SETTINGS.has(name)) {
      statement(ctx, 'SET', 'admin', `SET ${name}`);
    } else {
      statement(ctx, 'SET', 'read');
    }
  },

  VariableShowStmt: simple('SHOW', 'read'),
  AlterSystemStmt: simple('ALTER_SYSTEM', 'admin'),

  DropStmt(o, ctx) {
    const kind = o.removeType;
    statement(ctx, 'DROP_' + objectName(kind), kindClass(kind));
    if (o.behavior === 'DROP_CASCADE') flag(ctx, 'cascade');
    if (RELATION_KINDS.has(kind as string) && Array.isArray(o.objects) && !ctx.inert) {
      for (const obj of o.objects as Obj[]) {
        const name = dottedName((obj.List as Obj | undefined)?.items);
        if (name) ctx.acc.writes.add(name);
      }
    }
  },

  TruncateStmt(o, ctx) {
    // TRUNCATE empties tables outright (no WHERE, no MVCC, an exclusive lock): DDL-strength, and
    // flagged like a DELETE without WHERE so that rules on either catch both.
    statement(ctx, 'TRUNCATE', 'ddl');
    if (!ctx.inert) ctx.acc.add('write', 'TRUNCATE');
    flag(ctx, 'without_where');
    if (o.behavior === 'DROP_CASCADE') flag(ctx, 'cascade');
    walk(o.relations, asWrite(ctx));
  },

  GrantStmt(o, ctx) {
    statement(ctx, o.is_grant === true ? 'GRANT' : 'REVOKE', 'dcl');
    walk(o.objects, asWrite(ctx)); // the ACL of these relations changes
    walkFields(o, asRead(ctx), OBJECTS_SKIP);
  },
  GrantRoleStmt: simple((o) => (o.is_grant === true ? 'GRANT' : 'REVOKE'), 'dcl'),
  AlterDefaultPrivilegesStmt: simple('ALTER_DEFAULT_PRIVILEGES', 'dcl'),
  CreateRoleStmt: simple('CREATE_ROLE', 'dcl'),
  AlterRoleStmt: simple('ALTER_ROLE', 'dcl'),
  AlterRoleSetStmt: simple('ALTER_ROLE', 'dcl'),
  DropRoleStmt: simple('DROP_ROLE', 'dcl'),
  SecLabelStmt: simple('SECURITY_LABEL', 'dcl'),
  CreatePolicyStmt: simple('CREATE_POLICY', 'dcl', ['table']),
  AlterPolicyStmt: simple('ALTER_POLICY', 'dcl', ['table']),
  DropOwnedStmt(o, ctx) {
    statement(ctx, 'DROP_OWNED', 'dcl');
    if (!ctx.inert) ctx.acc.add('ddl', 'DROP OWNED drops objects');
    walk(o, asRead(ctx));
  },
  ReassignOwnedStmt: simple('REASSIGN_OWNED', 'dcl'),
  AlterOwnerStmt: simple((o) => `ALTER_${objectName(o.objectType)}_OWNER`, 'dcl', ['relation']),

  CreateStmt: simple('CREATE_TABLE', 'ddl', ['relation']),
  CreateForeignTableStmt: simple('CREATE_FOREIGN_TABLE', 'admin', ['base']),
  AlterTableStmt(o, ctx) {
    statement(ctx, 'ALTER_' + objectName(o.objtype), 'ddl');
    for (const cmd of (o.cmds as Obj[] | undefined) ?? []) {
      const sub = (cmd.AlterTableCmd as Obj | undefined)?.subtype as string | undefined;
      const what = sub === undefined ? undefined : DCL_SUBCOMMANDS[sub];
      if (what && !ctx.inert) ctx.acc.add('dcl', `ALTER ${objectName(o.objtype)} … ${what}`);
    }
    walk(o.relation, asWrite(ctx));
    walkFields(o, asRead(ctx), RELATION_SKIP);
  },
  IndexStmt: simple('CREATE_INDEX', 'ddl', ['relation']),
  CreateSeqStmt: simple('CREATE_SEQUENCE', 'ddl', ['sequence']),
  AlterSeqStmt: simple('ALTER_SEQUENCE', 'ddl', ['sequence']),
  ViewStmt: simple('CREATE_VIEW', 'ddl', ['view'], ['query']),
  CreateTableAsStmt(o, ctx) {
    // Unlike a view, CREATE TABLE AS (and a materialized view WITH DATA) runs its query now.
    statement(ctx, o.objtype === 'OBJECT_MATVIEW' ? 'CREATE_MATERIALIZED_VIEW' : 'CREATE_TABLE_AS', 'ddl');
    if (!ctx.inert) ctx.acc.add('write', 'fills a new table');
    walk(o.into, asWrite(ctx));
    walkFields(o, asRead(ctx), INTO_SKIP);
  },
  CreateSchemaStmt: simple('CREATE_SCHEMA', 'ddl'),
  RenameStmt: simple((o) => `RENAME_${objectName(o.renameType)}`, (o) => kindClass(o.renameType), ['relation']),
  AlterObjectSchemaStmt: simple((o) => `ALTER_${objectName(o.objectType)}_SET_SCHEMA`, (o) => kindClass(o.objectType), ['relation']),
  AlterObjectDependsStmt: simple('ALTER_DEPENDS_ON_EXTENSION', 'ddl', ['relation']),
  CommentStmt: simple('COMMENT', 'ddl'),
  DefineStmt: simple((o) => `CREATE_${objectName(o.kind)}`, 'ddl'),
  CreateDomainStmt: simple('CREATE_DOMAIN', 'ddl'),
  AlterDomainStmt: simple('ALTER_DOMAIN', 'ddl'),
  CompositeTypeStmt: simple('CREATE_TYPE', 'ddl', ['typevar']),
  CreateEnumStmt: simple('CREATE_TYPE', 'ddl'),
  CreateRangeStmt: simple('CREATE_TYPE', 'ddl'),
  AlterEnumStmt: simple('ALTER_TYPE', 'ddl'),
  AlterTypeStmt: simple('ALTER_TYPE', 'ddl'),
  CreateOpClassStmt: simple('CREATE_OPERATOR_CLASS', 'ddl'),
  CreateOpFamilyStmt: simple('CREATE_OPERATOR_FAMILY', 'ddl'),
  AlterOpFamilyStmt: simple('ALTER_OPERATOR_FAMILY', 'ddl'),
  AlterOperatorStmt: simple('ALTER_OPERATOR', 'ddl'),
  CreateConversionStmt: simple('CREATE_CONVERSION', 'ddl'),
  CreateCastStmt: simple('CREATE_CAST', 'ddl'),
  CreateTransformStmt: simple('CREATE_TRANSFORM', 'ddl'),
  AlterTSDictionaryStmt: simple('ALTER_TEXT_SEARCH_DICTIONARY', 'ddl'),
  AlterTSConfigurationStmt: simple('ALTER_TEXT_SEARCH_CONFIGURATION', 'ddl'),
  AlterCollationStmt: simple('ALTER_COLLATION', 'ddl'),
  CreateStatsStmt: simple('CREATE_STATISTICS', 'ddl'),
  AlterStatsStmt: simple('ALTER_STATISTICS', 'ddl'),
  ReplicaIdentityStmt: simple('REPLICA_IDENTITY', 'ddl'),

  // Code that runs now, or later on someone else's behalf.
  DoStmt: simple('DO', 'procedural'),
  CallStmt(o, ctx) {
    const name = lastName((o.funccall as Obj | undefined)?.funcname);
    statement(ctx, 'CALL', 'procedural', `CALL ${name}`);
    if (o.funccall) funcCall(o.funccall as Obj, ctx); // typed field: not wrapped in {"FuncCall": …}
  },
  CreateFunctionStmt: simple((o) => (o.is_procedure === true ? 'CREATE_PROCEDURE' : 'CREATE_FUNCTION'), 'procedural', [], ['sql_body']),
  AlterFunctionStmt: simple('ALTER_FUNCTION', 'procedural'),
  CreateTrigStmt: simple((o) => (o.isconstraint === true ? 'CREATE_CONSTRAINT_TRIGGER' : 'CREATE_TRIGGER'), 'procedural', ['relation']),
  RuleStmt: simple('CREATE_RULE', 'procedural', ['relation'], ['actions', 'whereClause']),
  CreateEventTrigStmt: simple('CREATE_EVENT_TRIGGER', 'procedural'),
  AlterEventTrigStmt: simple('ALTER_EVENT_TRIGGER', 'procedural'),

  // The server, the cluster, and anything that reaches beyond this database.
  CreateExtensionStmt: simple('CREATE_EXTENSION', 'admin'),
  AlterExtensionStmt: simple('ALTER_EXTENSION', 'admin'),
  AlterExtensionContentsStmt: simple('ALTER_EXTENSION', 'admin'),
  CreatePLangStmt: simple('CREATE_LANGUAGE', 'admin'),
  CreateFdwStmt: simple('CREATE_FOREIGN_DATA_WRAPPER', 'admin'),
  AlterFdwStmt: simple('ALTER_FOREIGN_DATA_WRAPPER', 'admin'),
  CreateForeignServerStmt: simple('CREATE_SERVER', 'admin'),
  AlterForeignServerStmt: simple('ALTER_SERVER', 'admin'),
  CreateUserMappingStmt: simple('CREATE_USER_MAPPING', 'admin'),
  AlterUserMappingStmt: simple('ALTER_USER_MAPPING', 'admin'),
  DropUserMappingStmt: simple('DROP_USER_MAPPING', 'admin'),
  ImportForeignSchemaStmt: simple('IMPORT_FOREIGN_SCHEMA', 'admin'),
  CreateAmStmt: simple('CREATE_ACCESS_METHOD', 'admin'),
  CreateTableSpaceStmt: simple('CREATE_TABLESPACE', 'admin'),
  DropTableSpaceStmt: simple('DROP_TABLESPACE', 'admin'),
  AlterTableSpaceOptionsStmt: simple('ALTER_TABLESPACE', 'admin'),
  AlterTableMoveAllStmt: simple('ALTER_TABLE_MOVE_ALL', 'admin'),
  // Databases are cluster-level objects, beyond the schema a "ddl" rule is written for.
  CreatedbStmt: simple('CREATE_DATABASE', 'admin'),
  AlterDatabaseStmt: simple('ALTER_DATABASE', 'admin'),
  AlterDatabaseSetStmt: simple('ALTER_DATABASE', 'admin'),
  AlterDatabaseRefreshCollStmt: simple('ALTER_DATABASE', 'admin'),
  DropdbStmt: simple('DROP_DATABASE', 'admin'),
  CreatePublicationStmt: simple('CREATE_PUBLICATION', 'admin'),
  AlterPublicationStmt: simple('ALTER_PUBLICATION', 'admin'),
  CreateSubscriptionStmt: simple('CREATE_SUBSCRIPTION', 'admin'),
  AlterSubscriptionStmt: simple('ALTER_SUBSCRIPTION', 'admin'),
  DropSubscriptionStmt: simple('DROP_SUBSCRIPTION', 'admin'),
  LoadStmt: simple('LOAD', 'admin'),
  CheckPointStmt: simple('CHECKPOINT', 'admin'),
  // Maintenance rewrites or locks whole tables and is the DBA's to schedule.
  VacuumStmt: simple((o) => (o.is_vacuumcmd === true ? 'VACUUM' : 'ANALYZE'), 'admin', ['rels']),
  ClusterStmt: simple('CLUSTER', 'admin', ['relation']),
  ReindexStmt: simple('REINDEX', 'admin', ['relation']),

  LockStmt: simple('LOCK', 'write', ['relations']),
  RefreshMatViewStmt: simple('REFRESH_MATERIALIZED_VIEW', 'write', ['relation']),
  // NOTIFY reaches other sessions (a side effect outside this one); LISTEN/UNLISTEN only
  // change what this session is told, so they are reads.
  NotifyStmt: simple('NOTIFY', 'write'),
  ListenStmt: simple('LISTEN', 'read'),
  UnlistenStmt: simple('UNLISTEN', 'read'),

  // Transaction control changes no data by itself. COMMIT/ROLLBACK PREPARED act on a prepared
  // transaction that may belong to another session, hence admin.
  TransactionStmt(o, ctx) {
    const type = TRANSACTION_TYPES[o.kind as string] ?? 'TRANSACTION';
    if (leavesReadOnly('transaction', o.options)) ctx.acc.flags.add('read_write');
    statement(ctx, type, type === 'COMMIT_PREPARED' || type === 'ROLLBACK_PREPARED' ? 'admin' : 'read');
  },
  DeclareCursorStmt: simple('DECLARE_CURSOR', 'read'),
  ClosePortalStmt: simple('CLOSE', 'read'),
  FetchStmt: simple((o) => (o.ismove === true ? 'MOVE' : 'FETCH'), 'read'),
  ConstraintsSetStmt: simple('SET_CONSTRAINTS', 'read'),
} satisfies Record<string, Handler>);

const RELATION_SKIP = new Set(['relation']);
const OBJECTS_SKIP = new Set(['objects']);
const INTO_SKIP = new Set(['into']);

/** One top-level statement node ({"SelectStmt": {...}}) to its classification. */
function classifyStatement(stmt: Obj): Classification {
  const acc = new Acc();
  walk(stmt, { acc, ctes: null, write: false, inert: false });
  if (acc.types.length === 0 && 'SelectStmt' in stmt) acc.type('VALUES'); // a bare VALUES statement
  return acc.finish();
}

// ---------------------------------------------------------------------------------------------
// Cache and entry point

const cache = new ClassificationCache();
const cached = (key: string): Classification | undefined => cache.get(key);
const remember = (key: string, c: Classification): void => cache.set(key, c);

/** Drops every cached classification (tests, or after changing the classifier's tables). */
export function clearPostgresClassificationCache(): void {
  cache.clear();
}

function empty(): Classification {
  return { class: 'read', classes: ['read'], types: [], reads: [], writes: [], flags: ['empty'], functions: [], reason: 'empty query' };
}

/** A classification, or an Error when the parser itself failed (not a verdict on the text). */
function classifyUncached(text: string): Classification | Error {
  if (text.includes('\0')) {
    // The parser reads a C string and would stop at the NUL, seeing less than was sent; the
    // server refuses such a message. Never classify a prefix as if it were the whole.
    return unknownClassification('statement text contains a NUL byte', ['parse_error']);
  }
  if (text.length === 0) return empty(); // libpg-query refuses "", the server runs it as an empty query
  let stmts: { stmt: Obj }[];
  try {
    stmts = (pgQuery.parseSync(text) as { stmts?: { stmt: Obj }[] }).stmts ?? [];
  } catch (err) {
    const details = (err as { sqlDetails?: { message?: string } }).sqlDetails;
    if (!details) return err instanceof Error ? err : new Error(String(err));
    // The server rejects the whole string before running any of it, but we cannot see what it
    // was meant to do, so it is never treated as harmless.
    return unknownClassification(details.message ?? (err as Error).message, ['parse_error']);
  }
  if (stmts.length === 0) return empty(); // only comments, blanks or semicolons
  if (stmts.length === 1) return classifyStatement(stmts[0]!.stmt);
  // Several statements in one simple query run in order, and an error skips the rest. An EXECUTE
  // of a name PREPAREd earlier in the same string therefore runs that very query: resolve it here.
  const local = new PreparedStatements();
  const list = stmts.map((s) => {
    const c = local.resolve(classifyStatement(s.stmt));
    local.record(c);
    return c;
  });
  const merged = mergeClassifications(list);
  if (!merged.flags.includes('multiple_statements')) merged.flags.push('multiple_statements');
  return merged;
}

/**
 * Classifies a PostgreSQL simple-query string (one or more statements). Never throws: text that
 * does not parse is `unknown` with the parser's message as reason. Results are cached by text and
 * frozen; do not modify them. Call (and await) loadPostgresParser() once before the first use.
 * An EXECUTE comes back `unknown`; resolve it with the session's PreparedStatements.
 */
export function classifyPostgres(text: string): Classification {
  const hit = cached(text);
  if (hit !== undefined) return hit;
  const c = classifyUncached(text);
  // Not cached: the next call may succeed (e.g. once loadPostgresParser() has resolved).
  if (c instanceof Error) return unknownClassification(`PostgreSQL parser failed: ${c.message}`);
  deepFreeze(c);
  remember(text, c);
  return c;
}
