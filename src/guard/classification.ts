// The guard's statement vocabulary. Every dialect's classifier produces a Classification, so
// rules ("block admin", "review writes to billing.*") are written once, whatever the database.
// Nothing here imports a parser.

/** What a command does, from harmless to opaque. `unknown` means "could not tell": treat as worst. */
export type CommandClass = 'read' | 'write' | 'ddl' | 'dcl' | 'admin' | 'copy' | 'procedural' | 'unknown';

/**
 * Least to most dangerous. `copy` sits above `write` because it moves whole tables in one command;
 * `procedural` above `dcl` because code can do anything its owner can; `unknown` on top because a
 * command we cannot see into must never slip under a rule written for something milder.
 */
export const CLASS_ORDER: readonly CommandClass[] = ['read', 'write', 'copy', 'ddl', 'dcl', 'procedural', 'admin', 'unknown'];

const RANK: Record<CommandClass, number> = {
  read: 0,
  write: 1,
  copy: 2,
  ddl: 3,
  dcl: 4,
  procedural: 5,
  admin: 6,
  unknown: 7,
};

export function classRank(c: CommandClass): number {
  return RANK[c];
}

/** The most dangerous of `classes`; `read` for none. */
export function mostDangerous(classes: Iterable<CommandClass>): CommandClass {
  let best: CommandClass = 'read';
  for (const c of classes) if (RANK[c] > RANK[best]) best = c;
  return best;
}

/** `classes` de-duplicated and in CLASS_ORDER, so equal classifications compare equal. */
export function sortClasses(classes: Iterable<CommandClass>): CommandClass[] {
  return [...new Set(classes)].sort((a, b) => RANK[a] - RANK[b]);
}

export interface Classification {
  /** the most dangerous class present (order: unknown > admin > procedural > dcl > ddl > copy > write > read) */
  class: CommandClass;
  /** every class found, in CLASS_ORDER (e.g. a SELECT with a data-modifying CTE: ['read','write']) */
  classes: CommandClass[];
  /**
   * Statement types, upper snake, de-duplicated in order of appearance: the statement itself, then
   * nested statements that run (EXPLAIN ANALYZE DELETE → ['EXPLAIN','DELETE']; INSERT … SELECT →
   * ['INSERT','SELECT']). Statements that only get planned or defined (plain EXPLAIN, a view's
   * query, a function body) are not listed: they do not run now.
   */
  types: string[];
  /** relations read, as written in the SQL: "orders", "public.orders", "db.public.orders" */
  reads: string[];
  /** relations written or redefined: DML targets, TRUNCATE, CREATE/ALTER/DROP targets, COPY FROM, GRANT ON */
  writes: string[];
  /**
   * without_where (UPDATE/DELETE lacking WHERE; TRUNCATE too), analyze (EXPLAIN ANALYZE),
   * dangerous_function, program_copy, server_file_copy, multiple_statements, parse_error,
   * data_modifying_cte, for_update, for_share, cascade, deallocate_all, execute_resolved,
   * unrecognized_statement, empty
   */
  flags: string[];
  /** functions called (lower-case, schema stripped), for rules and audit */
  functions: string[];
  /** PREPARE: the name being defined (the class is the prepared query's) */
  prepareName?: string;
  /** EXECUTE: the name referenced; class `unknown` until PreparedStatements.resolve() */
  executeName?: string;
  /** DEALLOCATE name (DEALLOCATE ALL and DISCARD ALL carry the flag deallocate_all instead) */
  deallocateName?: string;
  /** human-readable reason for the class (e.g. "calls pg_read_file") */
  reason?: string;
  /**
   * The per-statement classifications of a multi-statement text, in order. Kept so that session
   * effects (PREPARE, DEALLOCATE) and EXECUTE resolution apply per statement, not to the blend.
   */
  statements?: Classification[];
  /** Kubernetes API requests only: the request's facts, matched by a rule's `kubernetes:` block. */
  kubernetes?: KubernetesFacts;
}

/**
 * What a Kubernetes API request does, as the API server's own authorizer sees it
 * (k8s.io/apiserver RequestInfo). Wire-free: the HTTP adapter derives it from method and path.
 */
export interface KubernetesFacts {
  /** get, list, watch, create, update, patch, delete, deletecollection; for non-resource URLs the lower-case HTTP method */
  verb: string;
  /** '' for the core group */
  apiGroup: string;
  apiVersion: string;
  /** '' for non-resource requests (/version, /apis, /healthz) */
  resource: string;
  /** exec, attach, portforward, log, status, scale, … or '' */
  subresource: string;
  /** '' for cluster-scoped resources and all-namespace lists */
  namespace: string;
  name: string;
}

/** A classification that admits it cannot see what the command does. */
export function unknownClassification(reason: string, flags: string[] = []): Classification {
  return { class: 'unknown', classes: ['unknown'], types: [], reads: [], writes: [], flags, functions: [], reason };
}

function pushAll(into: string[], seen: Set<string>, from: readonly string[]): void {
  for (const x of from) {
    if (!seen.has(x)) {
      seen.add(x);
      into.push(x);
    }
  }
}

/**
 * Unions classifications into one, without recording them as separate statements. Lists keep
 * first-appearance order; the reason is that of the first part holding the winning class.
 */
export function unionClassifications(list: readonly Classification[]): Classification {
  const classes = new Set<CommandClass>();
  const types: string[] = [];
  const reads: string[] = [];
  const writes: string[] = [];
  const flags: string[] = [];
  const functions: string[] = [];
  const seen = [new Set<string>(), new Set<string>(), new Set<string>(), new Set<string>(), new Set<string>()];
  let prepareName: string | undefined;
  let executeName: string | undefined;
  let deallocateName: string | undefined;
  for (const c of list) {
    for (const k of c.classes) classes.add(k);
    classes.add(c.class);
    pushAll(types, seen[0]!, c.types);
    pushAll(reads, seen[1]!, c.reads);
    pushAll(writes, seen[2]!, c.writes);
    pushAll(flags, seen[3]!, c.flags);
    pushAll(functions, seen[4]!, c.functions);
    prepareName ??= c.prepareName;
    executeName ??= c.executeName;
    deallocateName ??= c.deallocateName;
  }
  const cls = list.length ? mostDangerous(classes) : 'read';
  const out: Classification = {
    class: cls,
    classes: list.length ? sortClasses(classes) : ['read'],
    types,
    reads,
    writes,
    flags,
    functions,
  };
  if (prepareName !== undefined) out.prepareName = prepareName;
  if (executeName !== undefined) out.executeName = executeName;
  if (deallocateName !== undefined) out.deallocateName = deallocateName;
  const reason = list.find((c) => c.class === cls)?.reason;
  if (reason !== undefined) out.reason = reason;
  return out;
}

/**
 * Merges the classifications of several statements (e.g. a multi-statement simple query) into
 * one whose class is the most dangerous present. An empty list is a harmless no-op: `read`.
 * The parts are kept, flattened, in `statements`.
 */
export function mergeClassifications(list: Classification[]): Classification {
  if (list.length === 1) return list[0]!;
  const out = unionClassifications(list);
  if (list.length > 0) out.statements = list.flatMap((c) => c.statements ?? [c]);
  return out;
}

/**
 * Collects what a classifier finds while walking one statement, then freezes it into a
 * Classification. Shared by the dialect classifiers so they cannot drift apart.
 */
export class ClassificationAccumulator {
  classes = new Set<CommandClass>();
  reasons = new Map<CommandClass, string>();
  types: string[] = [];
  reads = new Set<string>();
  writes = new Set<string>();
  flags = new Set<string>();
  functions = new Set<string>();
  prepareName?: string;
  executeName?: string;
  deallocateName?: string;

  add(cls: CommandClass, reason: string): void {
    this.classes.add(cls);
    if (!this.reasons.has(cls)) this.reasons.set(cls, reason);
  }

  type(t: string): void {
    if (!this.types.includes(t)) this.types.push(t);
  }

  /** A statement that added no class is a read of its first type. */
  finish(): Classification {
    if (this.classes.size === 0) this.add('read', this.types[0] ?? 'statement');
    const cls = mostDangerous(this.classes);
    const out: Classification = {
      class: cls,
      classes: sortClasses(this.classes),
      types: this.types,
      reads: [...this.reads],
      writes: [...this.writes],
      flags: [...this.flags],
      functions: [...this.functions],
    };
    if (this.prepareName !== undefined) out.prepareName = this.prepareName;
    if (this.executeName !== undefined) out.executeName = this.executeName;
    if (this.deallocateName !== undefined) out.deallocateName = this.deallocateName;
    const reason = this.reasons.get(cls);
    if (reason !== undefined) out.reason = reason;
    return out;
  }
}
