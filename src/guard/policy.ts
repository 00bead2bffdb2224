// The policy engine: facts about one command in, one decision out. It knows no dialect and
// no wire format; the classifier has already reduced the statement to classes, types, tables
// and flags, and the adapter maps the decision onto its protocol.
//
// Everything that can be done once is done in the constructor (globs to RegExps, classes to
// bit masks, CEL parsed, decisions pre-built and frozen), so that `decide` on the common path
// allocates nothing: it runs on every statement, inside the client's latency.
import type { Classification, CommandClass, KubernetesFacts } from './classification.ts';
import { COMMAND_CLASSES, REVIEW_DEFAULTS, compileCondition, type CelProgram, type Policy, type PolicyDefault, type ReadOnlyGrant, type Rule, type RuleMatch } from './policy-schema.ts';
import { parseDuration } from '../util/duration.ts';

export interface Facts {
  identity: { id: string; name: string; kind: 'agent' | 'human'; groups: string[] };
  connection: string;
  command: { kind: string; text: string; dialect?: string };
  classification: Classification;
}

export interface ReviewTerms {
  readonly approvers: readonly string[];
  readonly minApprovals: number;
  readonly expiresInMs: number;
  readonly mode: 'wait' | 'defer';
  readonly holdForMs: number;
}

/**
 * Decisions are shared and frozen (most are built once at construction), hence readonly:
 * copy one before changing it.
 */
export type Decision = {
  readonly action: 'allow' | 'block' | 'review';
  readonly rule: string;
  readonly reason: string;
  readonly hint: string;
  readonly review?: ReviewTerms;
};

/** The zero-config review: any admin may approve an agent's write within the hour. */
export const DEFAULT_REVIEW: ReviewTerms = Object.freeze({
  approvers: Object.freeze(['admin']),
  minApprovals: 1,
  expiresInMs: 3600_000,
  mode: 'wait',
  holdForMs: 60_000,
});

// --- class bit masks -----------------------------------------------------------------------

const BIT: Record<string, number> = Object.create(null);
COMMAND_CLASSES.forEach((c, i) => (BIT[c] = 1 << i));
const READ = BIT.read!;
const UNKNOWN = BIT.unknown!;
/**
 * Everything but reads is barred on a read-only grant. `copy` alone is let through because the
 * classifier adds `write` (and a written table) to COPY FROM, so what is left is COPY TO. The
 * classifier puts session chatter (SET, SHOW, BEGIN) under `read`, so barring `admin` here
 * breaks no client; admin is what can escape a read-only session (ALTER SYSTEM, COPY PROGRAM).
 */
const NOT_READ_ONLY = ~(READ | BIT.copy!);

function classMask(c: Classification): number {
  // Unrecognised strings from a newer classifier count as unknown: never quietly allowed.
  let m = BIT[c.class] ?? UNKNOWN;
  const cs = c.classes;
  for (let i = 0; i < cs.length; i++) m |= BIT[cs[i]!] ?? UNKNOWN;
  return m;
}

// --- globs -----------------------------------------------------------------------------------

/**
 * Same syntax as util/glob.ts (`*` any run, `?` one character). With `part`, the wildcards
 * stay within one dotted name part.
 */
function globSource(pattern: string, part = false): string {
  let out = '';
  for (const ch of pattern) {
    if (ch === '*') out += part ? '[^.]*' : '.*';
    else if (ch === '?') out += part ? '[^.]' : '.';
    else out += /[.+^${}()|[\]\\*?]/.test(ch) ? '\\' + ch : ch;
  }
  return out;
}
function anyGlob(patterns: readonly string[]): RegExp {
  return new RegExp(`^(?:${patterns.map((p) => globSource(p)).join('|')})$`);
}

/**
 * Table globs are tried on the name as written and on its schema.table form: for a bare name
 * `public.` is added, so `public.users` and `*.users` both catch `users`; for a catalog-qualified
 * name the catalog is dropped, so `mydb.public.users` cannot slip past a rule on `public.users`.
 */
function tableMatches(re: RegExp, names: readonly string[]): boolean {
  for (let i = 0; i < names.length; i++) {
    const n = names[i]!;
    if (re.test(n)) return true;
    const dot = n.indexOf('.');
    if (dot < 0) {
      if (re.test('public.' + n)) return true;
    } else if (n.indexOf('.', dot + 1) >= 0 && re.test(n.slice(dot + 1))) return true;
  }
  return false;
}

/**
 * Schema globs are compiled twice: `bare` for the implied schema of an unqualified name
 * ("public"), and `qualified` to test the schema part in place within "[catalog.]schema.table",
 * which saves cutting a substring per name. In `qualified`, `*` stays within one name part.
 */
interface SchemaMatcher {
  bare: boolean;
  qualified: RegExp;
}
function schemaMatcher(patterns: readonly string[]): SchemaMatcher {
  const bare = anyGlob(patterns);
  const alts = patterns.map((p) => globSource(p, true)).join('|');
  return { bare: bare.test('public'), qualified: new RegExp(`^(?:[^.]*\\.)?(?:${alts})\\.[^.]*$`) };
}
function schemaMatches(m: SchemaMatcher, names: readonly string[]): boolean {
  for (let i = 0; i < names.length; i++) {
    const n = names[i]!;
    if (n.indexOf('.') < 0 ? m.bare : m.qualified.test(n)) return true;
  }
  return false;
}

/**
 * A rule's `kubernetes:` block: each listed fact must match one of its globs; unlisted facts
 * match anything. Exact sets for apiGroups and subresources, where '' (core group, no
 * subresource) must be writable.
 */
interface KubeMatcher {
  verbs: RegExp | null;
  apiGroups: Set<string> | null;
  resources: RegExp | null;
  subresources: Set<string> | null;
  namespaces: RegExp | null;
  names: RegExp | null;
}

function kubeMatcher(k: NonNullable<RuleMatch['kubernetes']>): KubeMatcher {
  return {
    verbs: k.verbs ? anyGlob(k.verbs) : null,
    apiGroups: k.apiGroups ? new Set(k.apiGroups) : null,
    resources: k.resources ? anyGlob(k.resources) : null,
    subresources: k.subresources ? new Set(k.subresources) : null,
    namespaces: k.namespaces ? anyGlob(k.namespaces) : null,
    names: k.names ? anyGlob(k.names) : null,
  };
}

function kubeMatches(m: KubeMatcher, f: KubernetesFacts | undefined): boolean {
  if (!f) return false;
  return (
    (m.verbs === null || m.verbs.test(f.verb)) &&
    (m.apiGroups === null || m.apiGroups.has(f.apiGroup)) &&
    (m.resources === null || m.resources.test(f.resource)) &&
    (m.subresources === null || m.subresources.has(f.subresource)) &&
    (m.namespaces === null || m.namespaces.test(f.namespace)) &&
    (m.names === null || m.names.test(f.name))
  );
}

// --- compiled rules -----------------------------------------------------------------------------

interface CompiledRule {
  name: string;
  action: 'allow' | 'block' | 'review';
  kinds: number; // bit 1 agent, bit 2 human; 0 = any
  classes: number; // 0 = any
  connections: RegExp | null;
  identities: RegExp | null;
  groups: Set<string> | null;
  types: Set<string> | null;
  flags: readonly string[] | null;
  tablesRead: RegExp | null;
  tablesWrite: RegExp | null;
  hasTables: boolean;
  schemasRead: SchemaMatcher | null;
  schemasWrite: SchemaMatcher | null;
  hasSchemas: boolean;
  kubernetes: KubeMatcher | null;
  when: CelProgram | null;
  /** An allow rule decides an unknown-class command only when it names `unknown` itself. */
  allowsUnknown: boolean;
  /** An allow rule decides a LOAD DATA LOCAL INFILE only when it names the flag itself. */
  allowsLocalFile: boolean;
  /** An allow rule decides an SSH port forward only when it names the flag itself. */
  allowsForward: boolean;
  decision: Decision;
  /** whether `decision.reason` is the generated one, to which the classifier's reason is added */
  defaultReason: boolean;
}

const KIND_BIT = { agent: 1, human: 2 } as const;

function kindsMask(kinds: readonly ('agent' | 'human')[] | undefined): number {
  let m = 0;
  for (const k of kinds ?? []) m |= KIND_BIT[k];
  return m;
}

function classesMask(classes: readonly CommandClass[] | undefined): number {
  let m = 0;
  for (const c of classes ?? []) m |= BIT[c]!;
  return m;
}

function durationMs(s: string, what: string): number {
  const ms = parseDuration(s);
  if (ms === null) throw new Error(`policy: ${what}: invalid duration "${s}"`);
  return ms;
}

/** Builds the frozen decision for a rule (or the configured default) once. */
function buildDecision(name: string, o: Rule | PolicyDefault): { decision: Decision; defaultReason: boolean } {
  let review: ReviewTerms | undefined;
  if (o.action === 'review') {
    if (!o.approvers?.length) throw new Error(`policy: rule "${name}": action review requires approvers`);
    review = Object.freeze({
      approvers: Object.freeze([...o.approvers]),
      minApprovals: o.minApprovals ?? REVIEW_DEFAULTS.minApprovals,
      expiresInMs: durationMs(o.expiresIn ?? REVIEW_DEFAULTS.expiresIn, `rule "${name}" expiresIn`),
      mode: o.mode ?? REVIEW_DEFAULTS.mode,
      holdForMs: durationMs(o.holdFor ?? REVIEW_DEFAULTS.holdFor, `rule "${name}" holdFor`),
    });
  }
  const reason =
    o.reason ??
    (o.action === 'block' ? `statement blocked by rule "${name}"` : o.action === 'review' ? `statement requires review under rule "${name}"` : '');
  const hint =
    o.hint ??
    (o.action === 'block'
      ? `ask an administrator to change policy rule "${name}"`
      : o.action === 'review'
        ? `a member of ${groupList(review!.approvers)} must approve it`
        : '');
  const decision: Decision = Object.freeze(review ? { action: o.action, rule: name, reason, hint, review } : { action: o.action, rule: name, reason, hint });
  return { decision, defaultReason: o.reason === undefined && o.action !== 'allow' };
}

function groupList(groups: readonly string[]): string {
  return groups.length === 1 ? `group "${groups[0]}"` : `groups ${groups.map((g) => `"${g}"`).join(', ')}`;
}

function compileRule(rule: Rule): CompiledRule {
  const m = rule.match ?? {};
  let when: CelProgram | null = null;
  if (m.when !== undefined) {
    const c = compileCondition(m.when);
    // Normally caught by the schema; repeated for a Policy built in code.
    if ('problem' in c) throw new Error(`policy: rule "${rule.name}": when ${c.problem}`);
    when = c.program;
  }
  const classes = classesMask(m.classes);
  return {
    name: rule.name,
    action: rule.action,
    kinds: kindsMask(m.kinds),
    classes,
    connections: m.connections ? anyGlob(m.connections) : null,
    identities: m.identities ? anyGlob(m.identities) : null,
    groups: m.groups ? new Set(m.groups) : null,
    types: m.types ? new Set(m.types) : null,
    flags: m.flags ? [...m.flags] : null,
    tablesRead: m.tables?.read ? anyGlob(m.tables.read) : null,
    tablesWrite: m.tables?.write ? anyGlob(m.tables.write) : null,
    hasTables: m.tables !== undefined,
    schemasRead: m.schemas?.read ? schemaMatcher(m.schemas.read) : null,
    schemasWrite: m.schemas?.write ? schemaMatcher(m.schemas.write) : null,
    hasSchemas: m.schemas !== undefined,
    kubernetes: m.kubernetes ? kubeMatcher(m.kubernetes) : null,
    when,
    allowsUnknown: (classes & UNKNOWN) !== 0,
    allowsLocalFile: m.flags?.includes(LOCAL_FILE_FLAG) ?? false,
    allowsForward: m.flags?.includes(FORWARD_FLAG) ?? false,
    ...buildDecision(rule.name, rule),
  };
}

interface CompiledReadOnly {
  connections: RegExp;
  identities: RegExp | null;
  kinds: number;
  groups: Set<string> | null;
  decision: Decision;
}

// --- zero-config decisions ------------------------------------------------------------------------

const ALLOW_READS: Decision = Object.freeze({ action: 'allow', rule: 'default.allow-reads', reason: '', hint: '' });
const ALLOW_HUMANS: Decision = Object.freeze({ action: 'allow', rule: 'default.allow-humans', reason: '', hint: '' });
const REVIEW_AGENT_WRITES: Decision = Object.freeze({
  action: 'review',
  rule: 'default.review-agent-writes',
  reason: 'statements other than reads by agents require review (no policy rule matched)',
  hint: `a member of group "admin" must approve it; policy rules can allow it instead`,
  review: DEFAULT_REVIEW,
});
const REVIEW_UNKNOWN: Decision = Object.freeze({
  action: 'review',
  rule: 'default.unknown',
  reason: 'statement could not be classified, so it is never allowed without review',
  hint: `a member of group "admin" must approve it; a policy rule matching class "unknown" can decide it instead`,
  review: DEFAULT_REVIEW,
});

/**
 * LOAD DATA LOCAL INFILE makes the client send one of its files to the target, which the target
 * names. Only an allow rule that lists this flag in `flags` lets it run; without one it is
 * blocked, whatever the default.
 */
const LOCAL_FILE_FLAG = 'load_data_local';
const BLOCK_LOCAL_FILE: Decision = Object.freeze({
  action: 'block',
  rule: 'default.load-data-local',
  reason: 'LOAD DATA LOCAL INFILE is blocked unless a policy rule allows it',
  hint: `ask an administrator for a policy rule with match.flags: [${LOCAL_FILE_FLAG}] and action: allow`,
});

/**
 * An SSH port forward (`ssh -L`, direct-tcpip) opens a TCP tunnel from the target's side that the
 * gateway cannot see into. Likewise only an allow rule that lists this flag lets it open; without
 * one it is blocked, whatever the default.
 */
const FORWARD_FLAG = 'direct_tcpip';
const BLOCK_FORWARD: Decision = Object.freeze({
  action: 'block',
  rule: 'default.direct-tcpip',
  reason: 'port forwarding is blocked unless a policy rule allows it',
  hint: `ask an administrator for a policy rule with match.flags: [${FORWARD_FLAG}] and action: allow`,
});

/** `base` with the classifier's explanation appended, e.g. the parse error of an unknown statement. */
function withReason(base: Decision, extra: string | undefined): Decision {
  if (!extra) return base;
  return { ...base, reason: `${base.reason}: ${extra}` };
}

// --- the engine -----------------------------------------------------------------------------------------

export class PolicyEngine {
  private readonly rules: CompiledRule[];
  private readonly readOnly: CompiledReadOnly[];
  private readonly fallback: { decision: Decision; defaultReason: boolean } | null;

  constructor(policy: Policy | undefined) {
    if (policy?.include?.length) {
      // Building from an unresolved policy would silently drop the included rules.
      throw new Error('policy: include files are not resolved; build the policy with loadPolicy()');
    }
    const rules = policy?.rules ?? [];
    const seen = new Set<string>();
    for (const r of rules) {
      if (seen.has(r.name)) throw new Error(`policy: duplicate rule name "${r.name}"`);
      seen.add(r.name);
    }
    this.rules = rules.map(compileRule);
    this.readOnly = (policy?.readOnly ?? []).map((g: ReadOnlyGrant, i): CompiledReadOnly => ({
      connections: anyGlob(g.connections),
      identities: g.identities ? anyGlob(g.identities) : null,
      kinds: kindsMask(g.kinds),
      groups: g.groups ? new Set(g.groups) : null,
      decision: Object.freeze({
        action: 'block',
        rule: `readOnly[${i}]`,
        reason: 'this connection is read-only for this identity: only reads are allowed',
        hint: 'run only reads here, or ask an administrator to change policy.readOnly',
      }),
    }));
    this.fallback = policy?.default ? buildDecision('default', policy.default) : null;
  }

  /** Whether a read-only grant covers this identity on this connection (for session-level enforcement too). */
  readOnlyFor(identity: Pick<Facts['identity'], 'name' | 'kind' | 'groups'>, connection: string): boolean {
    return this.readOnlyGrant(identity, connection) !== null;
  }

  decide(facts: Facts): Decision {
    const c = facts.classification;
    const mask = classMask(c);
    const unknown = (mask & UNKNOWN) !== 0;
    const localFile = c.flags.includes(LOCAL_FILE_FLAG);
    const forward = c.flags.includes(FORWARD_FLAG);
    const identity = facts.identity;

    // A read-only grant is not a rule: no allow rule can lift it, so it is checked first.
    // It blocks rather than asks for review: the grant says this identity only reads here.
    if (this.readOnly.length && ((mask & NOT_READ_ONLY) !== 0 || c.writes.length > 0 || c.flags.includes('read_write'))) {
      const g = this.readOnlyGrant(identity, facts.connection);
      if (g) return withReason(g.decision, c.reason);
    }

    const kind = KIND_BIT[identity.kind] ?? 0;
    let celContext: Record<string, unknown> | null = null;
    const rules = this.rules;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i]!;
      // Cheapest tests first; CEL last, so it runs only when everything else already matched.
      if (r.kinds !== 0 && (r.kinds & kind) === 0) continue;
      if (r.classes !== 0 && (r.classes & mask) === 0) continue;
      if (unknown && r.action === 'allow' && !r.allowsUnknown) continue;
      if (localFile && r.action === 'allow' && !r.allowsLocalFile) continue;
      if (forward && r.action === 'allow' && !r.allowsForward) continue;
      if (r.connections !== null && !r.connections.test(facts.connection)) continue;
      if (r.identities !== null && !r.identities.test(identity.name)) continue;
      if (r.groups !== null && !anyIn(identity.groups, r.groups)) continue;
      if (r.types !== null && !anyIn(c.types, r.types)) continue;
      if (r.flags !== null && !allOf(r.flags, c.flags)) continue;
      if (r.hasTables && !((r.tablesRead !== null && tableMatches(r.tablesRead, c.reads)) || (r.tablesWrite !== null && tableMatches(r.tablesWrite, c.writes)))) continue;
      if (r.kubernetes !== null && !kubeMatches(r.kubernetes, c.kubernetes)) continue;
      if (r.hasSchemas && !((r.schemasRead !== null && schemaMatches(r.schemasRead, c.reads)) || (r.schemasWrite !== null && schemaMatches(r.schemasWrite, c.writes)))) continue;
      if (r.when !== null) {
        celContext ??= celFacts(facts);
        let result: unknown;
        try {
          result = r.when(celContext);
        } catch (e) {
          return conditionFailed(r.name, celError(e));
        }
        if (result === false) continue;
        // Anything but a bool (a Promise, a string, null) is a broken condition, not a "no".
        if (result !== true) return conditionFailed(r.name, `it yielded ${describe(result)}, not a bool`);
      }
      return r.defaultReason ? withReason(r.decision, c.reason) : r.decision;
    }

    if (localFile) return BLOCK_LOCAL_FILE;
    if (forward) return BLOCK_FORWARD;
    const f = this.fallback;
    if (unknown) {
      // A configured default may be stricter than the zero-config review, never laxer.
      if (f && f.decision.action !== 'allow') return f.defaultReason ? withReason(f.decision, c.reason) : f.decision;
      return withReason(REVIEW_UNKNOWN, c.reason);
    }
    if (f) return f.defaultReason ? withReason(f.decision, c.reason) : f.decision;
    if (mask === READ) return ALLOW_READS;
    return identity.kind === 'human' ? ALLOW_HUMANS : REVIEW_AGENT_WRITES;
  }

  private readOnlyGrant(identity: Pick<Facts['identity'], 'name' | 'kind' | 'groups'>, connection: string): CompiledReadOnly | null {
    const kind = KIND_BIT[identity.kind] ?? 0;
    for (const g of this.readOnly) {
      if (!g.connections.test(connection)) continue;
      if (g.kinds !== 0 && (g.kinds & kind) === 0) continue;
      if (g.identities !== null && !g.identities.test(identity.name)) continue;
      if (g.groups !== null && !anyIn(identity.groups, g.groups)) continue;
      return g;
    }
    return null;
  }
}

function anyIn(values: readonly string[], set: Set<string>): boolean {
  for (let i = 0; i < values.length; i++) if (set.has(values[i]!)) return true;
  return false;
}

function allOf(required: readonly string[], present: readonly string[]): boolean {
  for (let i = 0; i < required.length; i++) if (!present.includes(required[i]!)) return false;
  return true;
}

/**
 * The CEL view of the facts: only the documented fields (a caller may pass a full Identity
 * with its key hash), and optional strings as "" so that comparing one never errors.
 */
function celFacts(f: Facts): Record<string, unknown> {
  const c = f.classification;
  return {
    identity: { id: f.identity.id, name: f.identity.name, kind: f.identity.kind, groups: f.identity.groups },
    connection: f.connection,
    command: { kind: f.command.kind, text: f.command.text, dialect: f.command.dialect ?? '' },
    classification: {
      class: c.class,
      classes: c.classes,
      types: c.types,
      reads: c.reads,
      writes: c.writes,
      flags: c.flags,
      functions: c.functions,
      prepareName: c.prepareName ?? '',
      executeName: c.executeName ?? '',
      reason: c.reason ?? '',
    },
  };
}

function conditionFailed(rule: string, why: string): Decision {
  return {
    action: 'block',
    rule,
    reason: `policy condition failed: rule "${rule}": ${why}`,
    hint: `the statement is blocked because the condition could not be evaluated; ask an administrator to fix policy rule "${rule}"`,
  };
}

function celError(e: unknown): string {
  const err = e as { summary?: string; message?: string } | undefined;
  return err?.summary ?? String(err?.message ?? e).split('\n')[0]!;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'bigint') return `the int ${v}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)}`;
  if (typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function') return 'a promise';
  return `a ${typeof v}`;
}
