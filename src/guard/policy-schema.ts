// The `policy:` section of the config: statement rules, the fallback, and read-only grants.
// Everything that can be checked before the first command is checked here (CEL syntax and
// types, durations, review settings, duplicate names), so a bad policy stops startup rather
// than misfiring on live traffic.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { Environment } from '@marcbachmann/cel-js';
import { ConfigError } from '../config/secrets.ts';
import { parseDuration } from '../util/duration.ts';
import type { CommandClass } from './classification.ts';

export const COMMAND_CLASSES = ['read', 'write', 'ddl', 'dcl', 'admin', 'copy', 'procedural', 'unknown'] as const satisfies readonly CommandClass[];
export const ACTIONS = ['allow', 'block', 'review'] as const;

/** Defaults for a review whose rule leaves a setting out. */
export const REVIEW_DEFAULTS = { minApprovals: 1, expiresIn: '1h', mode: 'wait', holdFor: '60s' } as const;

// --- CEL ---------------------------------------------------------------------------------

/**
 * The variables a `when` condition sees. Declared with schemas so that a misspelt field
 * (`identity.knd`) or a type mistake is a startup error, not a runtime fail-closed block.
 * Optional fields are always present in the evaluation context (as ""), because a missing
 * key is an evaluation error in CEL and would block every command that lacks it.
 */
export const celEnvironment = new Environment()
  .registerVariable({ name: 'identity', schema: { id: 'string', name: 'string', kind: 'string', groups: 'list<string>' } })
  .registerVariable('connection', 'string')
  .registerVariable({ name: 'command', schema: { kind: 'string', text: 'string', dialect: 'string' } })
  .registerVariable({
    name: 'classification',
    schema: {
      class: 'string',
      classes: 'list<string>',
      types: 'list<string>',
      reads: 'list<string>',
      writes: 'list<string>',
      flags: 'list<string>',
      functions: 'list<string>',
      prepareName: 'string',
      executeName: 'string',
      reason: 'string',
    },
  });

export type CelProgram = (context: Record<string, unknown>) => unknown;

/** Parses and type-checks a condition; returns the program or a one-line problem. */
export function compileCondition(expr: string): { program: CelProgram } | { problem: string } {
  let parsed: ReturnType<Environment['parse']>;
  try {
    parsed = celEnvironment.parse(expr);
  } catch (e) {
    return { problem: `is not valid CEL: ${celSummary(e)}` };
  }
  const checked = parsed.check();
  if (!checked.valid) return { problem: `is not valid CEL: ${celSummary(checked.error)}` };
  // dyn is let through: its value is only known at run time, where a non-bool fails closed.
  if (checked.type !== 'bool' && checked.type !== 'dyn') return { problem: `must be a bool condition, but it yields ${checked.type}` };
  return { program: parsed as CelProgram };
}

function celSummary(e: unknown): string {
  const err = e as { summary?: string; message?: string } | undefined;
  return err?.summary ?? String(err?.message ?? e).split('\n')[0]!;
}

// --- schema ------------------------------------------------------------------------------

/** A z.enum whose message shows the rejected value and the choices in plain words. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, {
    error: (iss) =>
      iss.input === undefined ? `required: one of ${values.join(', ')}` : `invalid option ${JSON.stringify(iss.input)}: expected one of ${values.join(', ')}`,
  });
}

/** "required" rather than zod's "expected array, received undefined" for a missing key. */
const missing = (expected: string) => (iss: { input?: unknown }) => (iss.input === undefined ? `required: ${expected}` : `expected ${expected}`);

const globs = z.array(z.string().min(1, 'expected a non-empty glob'), { error: missing('a list of globs') }).min(1, 'expected at least one entry');
const names = z.array(z.string().min(1, 'expected a non-empty name')).min(1, 'expected at least one entry');
const duration = z.string().refine((s) => parseDuration(s) !== null, 'expected a duration such as "30s", "15m", "1h" or "7d"');

const readWrite = z
  .strictObject({ read: globs.optional(), write: globs.optional() })
  .refine((o) => o.read !== undefined || o.write !== undefined, 'expected "read", "write" or both');

export const matchSchema = z.strictObject({
  connections: globs.optional(),
  identities: globs.optional(),
  kinds: z.array(oneOf(['agent', 'human'])).min(1, 'expected at least one entry').optional(),
  groups: names.optional(),
  classes: z.array(oneOf(COMMAND_CLASSES)).min(1, 'expected at least one entry').optional(),
  types: names.optional(),
  tables: readWrite.optional(),
  schemas: readWrite.optional(),
  flags: names.optional(),
  /** Kubernetes API requests: globs on the request's facts (a rule with this block matches nothing else) */
  kubernetes: z
    .strictObject({
      verbs: globs.optional(),
      apiGroups: z.array(z.string()).min(1, 'expected at least one entry').optional(),
      resources: globs.optional(),
      subresources: z.array(z.string()).min(1, 'expected at least one entry').optional(),
      namespaces: globs.optional(),
      names: globs.optional(),
    })
    .optional(),
  when: z.string().min(1, 'expected a CEL condition').optional(),
});

/** The review settings, shared by rules and the default. */
const outcomeShape = {
  action: oneOf(ACTIONS),
  reason: z.string().min(1).optional(),
  hint: z.string().min(1).optional(),
  approvers: names.optional(),
  minApprovals: z.number().int().min(1).max(100).optional(),
  expiresIn: duration.optional(),
  mode: oneOf(['wait', 'defer']).optional(),
  holdFor: duration.optional(),
};

type Outcome = { action: string; approvers?: string[]; minApprovals?: number; expiresIn?: string; mode?: string; holdFor?: string };

/** Review settings only make sense on a review; elsewhere they are a sign of a mistake. */
function checkOutcome(o: Outcome, ctx: z.RefinementCtx, label: string): void {
  if (o.action === 'review') {
    if (!o.approvers) ctx.addIssue({ code: 'custom', path: ['approvers'], message: `${label}: action review requires approvers (one or more groups)` });
    const exp = parseDuration(o.expiresIn ?? REVIEW_DEFAULTS.expiresIn);
    const hold = parseDuration(o.holdFor ?? REVIEW_DEFAULTS.holdFor);
    if (exp !== null && hold !== null && hold > exp) {
      ctx.addIssue({ code: 'custom', path: ['holdFor'], message: `${label}: holdFor (${o.holdFor ?? REVIEW_DEFAULTS.holdFor}) is longer than expiresIn (${o.expiresIn ?? REVIEW_DEFAULTS.expiresIn})` });
    }
    return;
  }
  for (const k of ['approvers', 'minApprovals', 'expiresIn', 'mode', 'holdFor'] as const) {
    if (o[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: `${label}: ${k} only applies to action review, not ${o.action}` });
  }
}

const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/;

export const ruleSchema = z
  .strictObject({
    name: z
      .string({ error: missing('a rule name') })
      .regex(RULE_NAME, 'expected 1-63 letters, digits, "_", ".", ":" or "-"')
      // The engine's own decisions are named "default.*" and "readOnly[i]"; a rule may not pass for one.
      .refine((n) => n !== 'default' && !n.startsWith('default.') && !n.startsWith('readOnly'), 'names "default", "default.*" and "readOnly*" are reserved'),
    match: matchSchema.optional(),
    ...outcomeShape,
  })
  .superRefine((rule, ctx) => {
    checkOutcome(rule, ctx, `rule "${rule.name}"`);
    if (rule.match?.when !== undefined) {
      const c = compileCondition(rule.match.when);
      if ('problem' in c) ctx.addIssue({ code: 'custom', path: ['match', 'when'], message: `rule "${rule.name}": when ${c.problem}` });
    }
  });

export const defaultSchema = z.strictObject(outcomeShape).superRefine((d, ctx) => checkOutcome(d, ctx, 'default'));

export const readOnlySchema = z.strictObject({
  connections: globs,
  identities: globs.optional(),
  kinds: z.array(oneOf(['agent', 'human'])).min(1, 'expected at least one entry').optional(),
  groups: names.optional(),
});

function uniqueNames(rules: { name: string }[], ctx: z.RefinementCtx, path: PropertyKey[] = ['rules']): void {
  const seen = new Set<string>();
  rules.forEach((r, i) => {
    if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [...path, i, 'name'], message: `duplicate rule name "${r.name}"` });
    seen.add(r.name);
  });
}

export const policySchema = z
  .strictObject({
    default: defaultSchema.optional(),
    include: z.array(z.string().min(1)).optional(),
    rules: z.array(ruleSchema).optional(),
    readOnly: z.array(readOnlySchema).optional(),
  })
  .superRefine((p, ctx) => uniqueNames(p.rules ?? [], ctx));

/** An included file: a `rules:` list, or a bare list of rules. */
const includeFileSchema = z
  .strictObject({ rules: z.array(ruleSchema) })
  .superRefine((p, ctx) => uniqueNames(p.rules, ctx));

export type Policy = z.output<typeof policySchema>;
export type Rule = z.output<typeof ruleSchema>;
export type RuleMatch = z.output<typeof matchSchema>;
export type PolicyDefault = z.output<typeof defaultSchema>;
export type ReadOnlyGrant = z.output<typeof readOnlySchema>;

// --- loading -----------------------------------------------------------------------------

/**
 * Validates the `policy:` section and appends the rules of its include files, in order.
 * `raw` is the section's value (not the whole config); include paths are relative to `baseDir`.
 * The result has no `include`: its rules are already in `rules`, so nothing downstream can
 * forget to resolve them. Throws ConfigError naming the field, e.g. `policy.rules[2].action`.
 */
export function loadPolicy(raw: unknown, baseDir: string): Policy {
  if (raw === undefined || raw === null) return {};
  const main = parseOrThrow(policySchema, raw, 'policy');
  const rules = [...(main.rules ?? [])];
  const origin = new Map<string, string>(rules.map((r, i) => [r.name, `policy.rules[${i}]`]));
  (main.include ?? []).forEach((file, i) => {
    const field = `policy.include[${i}]`;
    const full = resolve(baseDir, file);
    let text: string;
    try {
      text = readFileSync(full, 'utf8');
    } catch (e) {
      throw new ConfigError(field, `cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    let doc: unknown;
    try {
      doc = YAML.parse(text);
    } catch (e) {
      throw new ConfigError(field, `${full} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    if (Array.isArray(doc)) doc = { rules: doc };
    // The file's own path, so that the error points at the line a user has to edit.
    const parsed = parseOrThrow(includeFileSchema, doc ?? {}, `${file}:`);
    parsed.rules.forEach((r, j) => {
      const here = `${file}: rules[${j}]`;
      const prior = origin.get(r.name);
      if (prior) throw new ConfigError(`${here}.name`, `duplicate rule name "${r.name}" (also ${prior})`);
      origin.set(r.name, here);
      rules.push(r);
    });
  });
  const out: Policy = { ...main, rules };
  delete out.include;
  return out;
}

function parseOrThrow<S extends z.ZodType>(schema: S, raw: unknown, prefix: string): z.output<S> {
  const res = schema.safeParse(raw);
  if (res.success) return res.data;
  const issue = res.error.issues[0]!;
  throw new ConfigError(formatPath(prefix, issue.path), issue.message);
}

/**
 * policy.rules[2].match.classes[0] rather than policy.rules.2.match.classes.0; a prefix ending
 * in ":" (an include file) is followed by a space: `extra.yaml: rules[1].action`.
 */
function formatPath(prefix: string, path: PropertyKey[]): string {
  let out = prefix;
  let first = true;
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += first && prefix.endsWith(':') ? ` ${String(p)}` : `.${String(p)}`;
    first = false;
  }
  return out.endsWith(':') ? out.slice(0, -1) : out;
}
