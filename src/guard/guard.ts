// The guard turns a Command into a Verdict: it classifies the command with the dialect's
// real parser and lets the policy decide. It fails closed: what it cannot classify is
// `unknown`, which the policy never silently allows.
import type { Identity } from '../identity/keys.ts';
import { mayUseConnection } from '../identity/keys.ts';
import { unknownClassification, type Classification } from './classification.ts';
import { classifyPostgres } from './classify-postgres.ts';
import { PolicyEngine } from './policy.ts';
import type { Policy } from './policy-schema.ts';
import type { PreparedStatements } from './prepared.ts';
import type { Command, Denial, Verdict } from './types.ts';

export interface GuardContext {
  identity: Identity;
  connection: string;
  /** the session's prepared statements, so EXECUTE is judged by what it runs */
  prepared?: PreparedStatements;
}

export class Guard {
  readonly policy: PolicyEngine;
  private readonly classifiers = new Map<string, (text: string) => Classification>([['postgres', classifyPostgres]]);

  constructor(policy?: Policy) {
    this.policy = new PolicyEngine(policy);
  }

  /** Connection access, checked at session open. */
  authorizeConnection(identity: Identity, connection: string): Denial | null {
    if (mayUseConnection(identity, connection)) return null;
    return {
      code: 'connection_not_granted',
      rule: 'access.connections',
      reason: `key "${identity.name}" is not granted connection "${connection}"`,
      hint: `grant it with \`gatehouse keys create --connections ${connection} ...\` or use a granted connection`,
    };
  }

  /** Whether the target session must itself be read-only for this identity. */
  readOnlyFor(identity: Identity, connection: string): boolean {
    return this.policy.readOnlyFor(identity, connection);
  }

  classify(command: Command, prepared?: PreparedStatements): Classification {
    if (command.kind !== 'sql' && command.kind !== 'shell') return unknownClassification(`no classifier for ${command.kind} commands yet`);
    const classify = this.classifiers.get(command.dialect ?? '');
    if (!classify) return unknownClassification(`no classifier for dialect ${command.dialect ?? 'unknown'}`);
    const c = classify(command.text);
    return prepared ? prepared.resolve(c) : c;
  }

  /**
   * Adds a dialect's classifier. Adapters register theirs when they start, so a parser no
   * listener needs is never loaded (node-sql-parser alone costs tens of MB of memory).
   */
  registerClassifier(dialect: string, classify: (text: string) => Classification): void {
    this.classifiers.set(dialect, classify);
  }

  /** `classification` is given when the caller knows it already (a prepared statement's). */
  check(ctx: GuardContext, command: Command, classification?: Classification): Verdict {
    // Re-checked per command so that a grant removed mid-session takes effect at once.
    const denial = this.authorizeConnection(ctx.identity, ctx.connection);
    if (denial) return { action: 'block', rule: denial.rule, denial };
    const c = classification ?? this.classify(command, ctx.prepared);
    const d = this.policy.decide({
      identity: ctx.identity,
      connection: ctx.connection,
      command: { kind: command.kind, text: command.text, dialect: command.dialect },
      classification: c,
    });
    if (d.action === 'allow') return { action: 'allow', rule: d.rule, classification: c };
    const shape: Denial = { code: d.action === 'block' ? 'blocked' : 'review_required', rule: d.rule, reason: d.reason, hint: d.hint };
    if (d.action === 'block' || !d.review) return { action: 'block', rule: d.rule, denial: shape, classification: c };
    return { action: 'review', rule: d.rule, denial: shape, terms: d.review, classification: c };
  }
}
