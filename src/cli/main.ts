// `gatehouse` command line. Admin commands work directly on the store, so they run with or
// without a live gateway.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { KeyError } from '../identity/keys.ts';

export class UsageError extends Error {}

const USAGE = `usage: gatehouse <command> [options]

commands:
  serve [--config FILE] [--demo]         run the gateway (--demo adds an embedded demo target)
  keys create --name NAME [--kind agent|human] [--groups a,b] [--connections x,y] [--expires 30d]
  keys list                              list identities and their keys' state
  keys revoke NAME                       revoke a key; its live sessions close within 5 s
  keys add-ssh NAME --pubkey FILE        let an SSH public key log in as this identity (SSH listener)
  sessions list [--limit N]              recent sessions
  sessions show ID                       a session's timeline: each statement, then its result
  sessions export ID --out FILE          an offline-verifiable bundle of one session
  sessions export ID --format asciicast [-o FILE]
                                         a terminal recording (SSH shell, kubectl exec) as asciicast v2 (stdout without -o)
  sessions replay ID [--speed N] [--max-wait S]
                                         play a terminal recording (SSH shell, kubectl exec) here
  verify [--bundle FILE] [--pubkey FILE] check the journal (or a bundle); exit 0 when intact
  approvals list [--status pending]      held statements awaiting (or past) review
  approvals show ID                      a review: statement, requester, rule, approvals, expiry, preview
  approvals approve ID [--comment TEXT]  approve a held statement (needs your key: --key NAME.KEY or GATEHOUSE_KEY)
  approvals deny ID --reason TEXT        deny it; the requester is told the reason
  kubeconfig CONNECTION [--key NAME.KEY] [--server URL] [-o FILE]
                                         a kubeconfig for kubectl through the gateway (HTTP listener)
  policy test --policy FILE [--session ID | --since 7d]
                                         replay recorded commands against a candidate policy; show changed verdicts

every command takes --config FILE (or GATEHOUSE_CONFIG); --json prints data as JSON`;

export interface CliContext {
  config: Config;
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  json: boolean;
  out: (s: string) => void;
  err: (s: string) => void;
}

const options = {
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean' },
  demo: { type: 'boolean' },
  name: { type: 'string' },
  kind: { type: 'string' },
  groups: { type: 'string' },
  connections: { type: 'string' },
  expires: { type: 'string' },
  limit: { type: 'string' },
  out: { type: 'string', short: 'o' },
  format: { type: 'string' },
  speed: { type: 'string' },
  'max-wait': { type: 'string' },
  bundle: { type: 'string' },
  pubkey: { type: 'string' },
  comment: { type: 'string' },
  reason: { type: 'string' },
  key: { type: 'string' },
  status: { type: 'string' },
  policy: { type: 'string' },
  session: { type: 'string' },
  since: { type: 'string' },
  server: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

export async function main(argv: string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s + '\n');
  const err = (s: string) => process.stderr.write(s + '\n');
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    err(`gatehouse: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const [command, ...positionals] = parsed.positionals;
  if (!command || parsed.values.help) {
    (command ? out : err)(USAGE);
    return command ? 0 : 2;
  }
  try {
    const config = loadConfig(parsed.values.config as string | undefined);
    const ctx: CliContext = { config, values: parsed.values as CliContext['values'], positionals, json: !!parsed.values.json, out, err };
    switch (command) {
      // Loaded per command: `verify` should not pay for the listeners and the demo database.
      case 'serve':
        return await (await import('./serve.ts')).serveCommand(ctx);
      case 'keys':
        return await (await import('./keys.ts')).keysCommand(ctx);
      case 'sessions':
        return await (await import('./sessions.ts')).sessionsCommand(ctx);
      case 'verify':
        return await (await import('./verify.ts')).verifyCommand(ctx);
      case 'approvals':
        return await (await import('./approvals.ts')).approvalsCommand(ctx);
      case 'policy':
        return await (await import('./policy.ts')).policyCommand(ctx);
      case 'kubeconfig':
        return await (await import('./kubeconfig.ts')).kubeconfigCommand(ctx);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`gatehouse: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    if (e instanceof ConfigError || e instanceof KeyError) {
      err(`gatehouse: ${e.message}`);
      return 2;
    }
    err(`gatehouse: ${(e as Error).message}`);
    return 1;
  }
}
