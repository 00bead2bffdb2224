// Per-session memory of prepared statements, so that `EXECUTE p` is judged by what p does.
//
// An EXECUTE's text says nothing about what it runs: the classifier returns it as `unknown` with
// its name. The statement it runs was classified when it was prepared, by SQL (PREPARE p AS …)
// or by the extended protocol (Parse with a statement name). Both share one namespace on the
// server, and so here.
import {
  type Classification,
  mergeClassifications,
  mostDangerous,
  unionClassifications,
  unknownClassification,
} from './classification.ts';

const DEFAULT_MAX = 10_000;

export class PreparedStatements {
  private readonly byName = new Map<string, Classification>();

  /**
   * @param max names remembered; beyond it the oldest is forgotten, and executing it is then
   * `unknown` (never guessed). Bounds memory against a client preparing endless names.
   */
  constructor(private readonly max = DEFAULT_MAX) {}

  get size(): number {
    return this.byName.size;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The stored classification of `name` as prepared, or undefined. */
  get(name: string): Classification | undefined {
    return this.byName.get(name);
  }

  /**
   * What running prepared statement `name` does (extended-protocol Bind/Execute, or the target
   * of an EXECUTE): its classification, resolved against this session in case it is itself an
   * EXECUTE; `unknown` if the name is not known.
   */
  lookup(name: string): Classification {
    const c = this.byName.get(name);
    if (c === undefined) return unknownClassification(`prepared statement "${name}" is not known to this session`);
    return this.resolve(c);
  }

  /**
   * Remembers that `name` runs a query classified as `c`: the extended protocol's Parse (name ''
   * is the unnamed statement, which every Parse replaces) or SQL PREPARE (via record()).
   *
   * The server refuses to redefine an existing named statement. If we are asked to anyway, our
   * view is out of step with the server's (a refused PREPARE was recorded), so we keep the union:
   * whichever of the two the server holds, EXECUTE is judged at least as strictly.
   */
  define(name: string, c: Classification): void {
    const existing = this.byName.get(name);
    if (existing !== undefined && name !== '') {
      const merged = unionClassifications([existing, c]);
      this.byName.delete(name);
      this.byName.set(name, merged);
      return;
    }
    if (existing !== undefined) this.byName.delete(name);
    while (this.byName.size >= this.max) this.byName.delete(this.byName.keys().next().value as string);
    this.byName.set(name, c);
  }

  /** Forgets `name` (DEALLOCATE name, or the extended protocol's Close of a statement). */
  remove(name: string): void {
    this.byName.delete(name);
  }

  /** Forgets every name (DEALLOCATE ALL, DISCARD ALL, or a new server session). */
  clear(): void {
    this.byName.clear();
  }

  /**
   * Applies the session effects of a classified simple-query text, statement by statement:
   * PREPARE defines, DEALLOCATE removes, DEALLOCATE ALL / DISCARD ALL clear.
   *
   * Call it once the server has reported the statement done (CommandComplete), not when it is
   * sent: a PREPARE the server refused (name taken, aborted transaction) must not replace what
   * the server still holds, and a refused DEALLOCATE must not forget what it still holds.
   */
  record(c: Classification): void {
    for (const s of c.statements ?? [c]) {
      if (s.flags.includes('deallocate_all')) this.clear();
      if (s.deallocateName !== undefined) this.remove(s.deallocateName);
      if (s.prepareName !== undefined) this.define(s.prepareName, preparedQuery(s));
    }
  }

  /**
   * Replaces the `unknown` of each EXECUTE in `c` by what the named statement does (keeping
   * what the EXECUTE itself does, e.g. functions in its parameters, or an enclosing EXPLAIN
   * ANALYZE). An EXECUTE of a name not known stays `unknown`. Returns `c` itself when there is
   * nothing to resolve.
   */
  resolve(c: Classification): Classification {
    if (c.statements) {
      if (!c.statements.some((s) => this.resolvable(s))) return c;
      const merged = mergeClassifications(c.statements.map((s) => this.resolveOne(s)));
      if (c.flags.includes('multiple_statements') && !merged.flags.includes('multiple_statements')) merged.flags.push('multiple_statements');
      return merged;
    }
    return this.resolveOne(c);
  }

  private resolvable(s: Classification): boolean {
    return s.executeName !== undefined && !s.flags.includes('execute_resolved') && this.byName.has(s.executeName);
  }

  private resolveOne(s: Classification): Classification {
    if (!this.resolvable(s)) return s;
    const name = s.executeName!;
    const stored = this.byName.get(name)!;
    // The EXECUTE's own `unknown` stands for "whatever p does", now known. An unknown from an
    // unrecognised statement is a different matter and stays.
    const keepUnknown = s.flags.includes('unrecognized_statement');
    const ownClasses = s.classes.filter((k) => k !== 'unknown' || keepUnknown);
    const own: Classification = { ...s, classes: ownClasses, class: ownClasses.length ? mostDangerous(ownClasses) : stored.class };
    const out = unionClassifications([own, stored]);
    out.executeName = name;
    if (!out.flags.includes('execute_resolved')) out.flags.push('execute_resolved');
    const fromStored = stored.class === out.class || !ownClasses.includes(out.class);
    const why = fromStored ? stored.reason : s.reason;
    out.reason = fromStored ? `prepared statement "${name}": ${why ?? out.class}` : why ?? out.class;
    return out;
  }
}

/** A PREPARE's classification reduced to the query it prepares (what EXECUTE will run). */
function preparedQuery(s: Classification): Classification {
  const out: Classification = { ...s, types: s.types[0] === 'PREPARE' ? s.types.slice(1) : [...s.types] };
  delete out.prepareName;
  delete out.statements;
  return out;
}
