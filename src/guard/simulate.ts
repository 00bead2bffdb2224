// Policy simulation: replays recorded `command` events against a candidate policy and reports
// which verdicts would change. Pure: it takes the commands, the candidate policy and the
// identities' groups, and knows nothing of the store or the CLI (`gatehouse policy test`).
//
// The replay rebuilds what the guard saw live: the identity (with its groups as they are now),
// the connection and the command, classified again by the real classifier. Prepared statements
// are tracked per session as the live session does, so `EXECUTE p` is judged by what `p` runs.
// Connection grants are not part of the policy: a command blocked for lack of a grant stays
// blocked. The PostgreSQL parser must be loaded first, and the other dialects' classifiers
// registered (`simulate` does both; with `Simulation`, await `loadPostgresParser()` and
// `loadClassifiers(sim)`).
import { unknownClassification, type Classification } from './classification.ts';
import { Guard } from './guard.ts';
import type { Policy } from './policy-schema.ts';
import { PreparedStatements } from './prepared.ts';
import { loadPostgresParser } from './sql-postgres.ts';
import type { Command } from './types.ts';

export type Action = 'allow' | 'block' | 'review';

/** One recorded `command` event, as read from the journal (the event body's fields). */
export interface RecordedCommand {
  seq: number;
  ts: string;
  session: string;
  identity: { id: string; kind: 'agent' | 'human'; name: string };
  connection: string;
  /** the event's data: text, dialect, kind, verdict, and protocol details (protocol, phase, statement) */
  data: Record<string, unknown>;
}

export interface VerdictSummary {
  action: Action;
  rule: string;
  reason?: string;
}

/** A command whose verdict would change under the candidate policy. */
export interface Change {
  seq: number;
  ts: string;
  session: string;
  identity: { id: string; kind: 'agent' | 'human'; name: string };
  connection: string;
  /** the statement, whitespace collapsed and cut to EXAMPLE_TEXT_MAX characters */
  text: string;
  class: string;
  /** what was recorded; a statement that ran after an approval counts as `review` */
  before: VerdictSummary;
  /** what the candidate policy decides */
  after: VerdictSummary;
}

export interface RuleReport {
  /** commands this rule would now block / hold for review / allow that it did not before */
  block: number;
  review: number;
  allow: number;
  examples: Change[];
}

export interface SimulationReport {
  /** commands replayed (a Parse refused live and its Execute count once) */
  replayed: number;
  /** of them, how many would get a different action */
  changed: number;
  /** command events left out: not a recognisable recorded verdict */
  skipped: number;
  /** every rule of the candidate, the default rules it can produce, and any other rule that decided a change */
  byRule: Record<string, RuleReport>;
  changes: Change[];
}

export interface SimulationOptions {
  /** examples kept per rule; default 3 */
  examples?: number;
  /** the changes listed in `changes` at most; default unbounded (the counts are always complete) */
  maxChanges?: number;
}

export const EXAMPLE_TEXT_MAX = 100;
const ACTIONS: readonly Action[] = ['allow', 'block', 'review'];

/** The default rule names the engine can decide with, for this policy. */
export function defaultRuleNames(policy: Policy): string[] {
  const names = (policy.readOnly ?? []).map((_, i) => `readOnly[${i}]`);
  if (policy.default) {
    names.push('default');
    // An unknown statement is never allowed by a default: it gets the zero-config review instead.
    if (policy.default.action === 'allow') names.push('default.unknown');
  } else {
    names.push('default.allow-reads', 'default.allow-humans', 'default.review-agent-writes', 'default.unknown');
  }
  return names;
}

export function cutText(text: string, max = EXAMPLE_TEXT_MAX): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

interface PendingParse {
  cmd: RecordedCommand;
  before: VerdictSummary;
  after: VerdictSummary;
  cls: Classification;
}

/**
 * Streaming simulation: `add` commands in journal order (seq), then `report`. Builds the
 * candidate's engine at construction, so an invalid policy throws there.
 */
export class Simulation {
  private readonly guard: Guard;
  private readonly prepared = new Map<string, PreparedStatements>();
  /** a Parse refused live, per session, waiting to see whether its Execute follows */
  private readonly pendingParse = new Map<string, PendingParse>();
  private readonly byRule: Record<string, RuleReport> = Object.create(null);
  private readonly changes: Change[] = [];
  private readonly examples: number;
  private readonly maxChanges: number;
  private replayed = 0;
  private changed = 0;
  private skipped = 0;

  /**
   * @param groupsOf the identity's groups as they are now; [] for an identity that is gone
   */
  constructor(
    policy: Policy,
    private readonly groupsOf: (identityId: string) => readonly string[] | undefined,
    opts: SimulationOptions = {},
  ) {
    this.guard = new Guard(policy);
    this.examples = opts.examples ?? 3;
    this.maxChanges = opts.maxChanges ?? Infinity;
    for (const r of policy.rules ?? []) this.byRule[r.name] = emptyRule();
    for (const n of defaultRuleNames(policy)) this.byRule[n] = emptyRule();
  }

  /** As the gateway does for its listeners: the caller registers what its recordings need. */
  registerClassifier(dialect: string, classify: (text: string) => Classification): void {
    this.guard.registerClassifier(dialect, classify);
  }

  add(cmd: RecordedCommand): void {
    const before = recordedVerdict(cmd.data);
    if (!before) {
      this.skipped++;
      return;
    }
    const pending = this.pendingParse.get(cmd.session);
    const extended = cmd.data.protocol === 'extended';
    const isParse = extended && cmd.data.phase === 'parse';
    const text = typeof cmd.data.text === 'string' ? cmd.data.text : '';
    // A Parse refused live is followed by the Execute of the same statement in the same
    // pipeline (recorded with the same text): one attempt, counted once, as the Execute.
    if (pending) {
      this.pendingParse.delete(cmd.session);
      if (!(extended && !isParse && text === (pending.cmd.data.text ?? ''))) this.count(pending.cmd, pending.before, pending.after, pending.cls);
    }

    const prepared = this.preparedOf(cmd.session);
    const { after, cls } = this.decide(cmd, prepared, before);
    if (isParse) {
      // The extended protocol's Parse defines the statement whatever the verdict (as live).
      if (typeof cmd.data.statement === 'string') prepared.define(cmd.data.statement, cls);
      this.pendingParse.set(cmd.session, { cmd, before, after, cls });
      return;
    }
    // PREPARE / DEALLOCATE take effect unless the candidate would refuse the statement outright.
    if (!extended && after.action !== 'block') prepared.record(cls);
    this.count(cmd, before, after, cls);
  }

  report(): SimulationReport {
    for (const p of this.pendingParse.values()) this.count(p.cmd, p.before, p.after, p.cls);
    this.pendingParse.clear();
    return { replayed: this.replayed, changed: this.changed, skipped: this.skipped, byRule: this.byRule, changes: this.changes };
  }

  private preparedOf(session: string): PreparedStatements {
    let p = this.prepared.get(session);
    if (!p) this.prepared.set(session, (p = new PreparedStatements()));
    return p;
  }

  private decide(cmd: RecordedCommand, prepared: PreparedStatements, before: VerdictSummary): { after: VerdictSummary; cls: Classification } {
    const d = cmd.data;
    const command: Command = {
      kind: isKind(d.kind) ? d.kind : 'sql',
      text: typeof d.text === 'string' ? d.text : '',
      dialect: d.dialect === 'postgres' || d.dialect === 'mysql' || d.dialect === 'sh' ? d.dialect : undefined,
    };
    // A fastpath call is recorded with a descriptive comment as its text; live it was unknown.
    // Commands whose text is not a statement (sftp operations, forwarded connections, a shell
    // session) were classified by their adapter, not by parsing: their recorded classification
    // stands, except its table/path lists, which the record does not keep.
    const recorded = recordedClassification(d.classification, d);
    const cls =
      d.protocol === 'function-call'
        ? unknownClassification(`fastpath function call`)
        : command.dialect === undefined && command.kind !== 'sql' && recorded
          ? recorded
          : this.guard.classify(command, prepared);
    // Grants are not policy: a command refused for lack of one is refused under any policy.
    if (before.rule === 'access.connections') return { after: before, cls };
    const decision = this.guard.policy.decide({
      identity: { ...cmd.identity, groups: [...(this.groupsOf(cmd.identity.id) ?? [])] },
      connection: cmd.connection,
      command: { kind: command.kind, text: command.text, dialect: command.dialect },
      classification: cls,
    });
    // As the guard does: a review without review terms fails closed as a block.
    const action: Action = decision.action === 'review' && !decision.review ? 'block' : decision.action;
    const after: VerdictSummary = { action, rule: decision.rule };
    if (action !== 'allow' && decision.reason) after.reason = decision.reason;
    return { after, cls };
  }

  private count(cmd: RecordedCommand, before: VerdictSummary, after: VerdictSummary, cls: Classification): void {
    this.replayed++;
    if (before.action === after.action) return;
    this.changed++;
    const change: Change = {
      seq: cmd.seq,
      ts: cmd.ts,
      session: cmd.session,
      identity: cmd.identity,
      connection: cmd.connection,
      text: cutText(typeof cmd.data.text === 'string' ? cmd.data.text : ''),
      class: cls.class,
      before,
      after,
    };
    const r = (this.byRule[after.rule] ??= emptyRule());
    r[after.action]++;
    if (r.examples.length < this.examples) r.examples.push(change);
    if (this.changes.length < this.maxChanges) this.changes.push(change);
  }
}

/**
 * Registers the classifiers of every protocol the gateway may have recorded (the gateway loads
 * them per listener; a replay may meet any).
 */
export async function loadClassifiers(sim: Simulation): Promise<void> {
  const { classifyMysql } = await import('./classify-mysql.ts');
  const { classifyShell } = await import('./classify-shell.ts');
  sim.registerClassifier('mysql', (text) => classifyMysql(text));
  sim.registerClassifier('sh', (text) => classifyShell(text));
}

/** Replays `commands` (in journal order) against `policy`; see Simulation. */
export async function simulate(
  commands: Iterable<RecordedCommand>,
  policy: Policy,
  groups: ReadonlyMap<string, readonly string[]> | ((identityId: string) => readonly string[] | undefined),
  opts: SimulationOptions = {},
): Promise<SimulationReport> {
  await loadPostgresParser();
  const groupsOf = typeof groups === 'function' ? groups : (id: string) => groups.get(id);
  const sim = new Simulation(policy, groupsOf, opts);
  await loadClassifiers(sim);
  for (const c of commands) sim.add(c);
  return sim.report();
}

function emptyRule(): RuleReport {
  return { block: 0, review: 0, allow: 0, examples: [] };
}

function isKind(k: unknown): k is Command['kind'] {
  return k === 'sql' || k === 'shell' || k === 'exec' || k === 'http' || k === 'tool' || k === 'sftp' || k === 'tcpip';
}

/**
 * The recorded verdict. An `allow` with a reviewId ran on an approval: the policy held it,
 * so it counts as `review` (the candidate holding it too is no change).
 */
function recordedVerdict(d: Record<string, unknown>): VerdictSummary | null {
  const v = d.verdict as { action?: unknown; rule?: unknown; reason?: unknown; reviewId?: unknown } | undefined;
  if (!v || typeof v !== 'object' || !ACTIONS.includes(v.action as Action) || typeof v.rule !== 'string') return null;
  const action: Action = v.action === 'allow' && typeof v.reviewId === 'string' ? 'review' : (v.action as Action);
  const out: VerdictSummary = { action, rule: v.rule };
  if (typeof v.reason === 'string') out.reason = v.reason;
  return out;
}

/**
 * The classification kept in a command event (class, types, flags, reason), or null. HTTP
 * requests also get back their path (as reads, and writes for non-reads) and Kubernetes
 * requests their facts, from the event's `http` and `kubernetes` fields, so path and
 * `kubernetes:` rules are replayed too.
 */
function recordedClassification(c: unknown, d: Record<string, unknown>): Classification | null {
  if (!c || typeof c !== 'object') return null;
  const r = c as { class?: unknown; types?: unknown; flags?: unknown; reason?: unknown };
  if (typeof r.class !== 'string') return null;
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  const cls = r.class as Classification['class'];
  const out: Classification = { class: cls, classes: [cls], types: strings(r.types), reads: [], writes: [], flags: strings(r.flags), functions: [], reason: typeof r.reason === 'string' ? r.reason : cls };
  const http = d.http as { path?: unknown } | undefined;
  if (d.kind === 'http' && http && typeof http.path === 'string') {
    out.reads = [http.path];
    if (cls !== 'read') out.writes = [http.path];
  }
  const k = d.kubernetes as Record<string, unknown> | undefined;
  if (k && typeof k === 'object' && typeof k.verb === 'string') {
    const f = (x: unknown) => (typeof x === 'string' ? x : '');
    out.kubernetes = { verb: k.verb, apiGroup: f(k.apiGroup), apiVersion: f(k.apiVersion), resource: f(k.resource), subresource: f(k.subresource), namespace: f(k.namespace), name: f(k.name) };
  }
  return out;
}
