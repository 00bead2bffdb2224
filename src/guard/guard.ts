// The guard turns a Command into a Verdict. At this stage it enforces connection access;
// statement rules plug in here (issue "Guard") without any adapter change.
import type { Identity } from '../identity/keys.ts';
import { mayUseConnection } from '../identity/keys.ts';
import type { Command, Denial, Verdict } from './types.ts';

export interface GuardContext {
  identity: Identity;
  connection: string;
}

export class Guard {
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

  check(ctx: GuardContext, _command: Command): Verdict {
    // Re-checked per command so that a grant removed mid-session takes effect at once.
    const denial = this.authorizeConnection(ctx.identity, ctx.connection);
    if (denial) return { action: 'block', rule: denial.rule, denial };
    return { action: 'allow', rule: 'default' };
  }
}
