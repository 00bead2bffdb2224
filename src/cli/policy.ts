// `gatehouse policy test`: what a candidate policy would have decided for recorded commands,
// compared with what was decided. Reads the journal; changes nothing.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { ConfigError } from '../config/secrets.ts';
import { loadPolicy, type Policy } from '../guard/policy-schema.ts';
import { PolicyEngine } from '../guard/policy.ts';
import { Simulation, loadClassifiers, type Change, type RecordedCommand, type SimulationReport } from '../guard/simulate.ts';
import { loadPostgresParser } from '../guard/sql-postgres.ts';
import { findSession } from '../journal/read.ts';
import type { Store } from '../store/db.ts';
import { storeOptions } from '../store/options.ts';
import { parseDuration } from '../util/duration.ts';
import { UsageError, type CliContext } from './main.ts';
import { withStore } from './store.ts';

const PAGE = 1000;

export async function policyCommand(ctx: CliContext): Promise<number> {
  const [sub] = ctx.positionals;
  if (sub !== 'test') throw new UsageError(`unknown policy subcommand "${sub ?? ''}"; use test`);
  const file = ctx.values.policy as string | undefined;
  if (!file) throw new UsageError('policy test needs --policy FILE');
  const sessionArg = ctx.values.session as string | undefined;
  const sinceArg = ctx.values.since as string | undefined;
  if (sessionArg !== undefined && sinceArg !== undefined) throw new UsageError('policy test takes --session ID or --since DURATION, not both');
  const sinceMs = parseDuration(sinceArg ?? '7d');
  if (!sinceMs) throw new UsageError(`--since: expected a duration like 7d, 12h or 30m, not "${sinceArg}"`);

  const full = resolve(file);
  let policy: Policy;
  try {
    policy = loadCandidatePolicy(full);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const problem = e.message.replace(/^config: /, '');
    ctx.err(`gatehouse: invalid policy ${full}: ${problem}`);
    if (ctx.json) ctx.out(JSON.stringify({ valid: false, policy: full, field: e.field, error: problem }));
    return 2;
  }

  const opts = storeOptions(ctx.config);
  // Opening a SQLite store creates it: a missing journal would read as "nothing recorded".
  if (opts.store === 'sqlite' && !existsSync(opts.sqlitePath)) throw new Error(`no journal store at ${opts.sqlitePath}; is --config the gateway's config?`);
  await loadPostgresParser();

  return withStore(ctx.config, async (store) => {
    let scope: { session: string } | { since: string; from: string };
    let filter: (q: EventQuery) => EventQuery;
    if (sessionArg !== undefined) {
      const s = await findSession(store, sessionArg);
      if (!s) throw new Error(`no session "${sessionArg}"; see \`gatehouse sessions list\``);
      scope = { session: s.id };
      filter = (q) => q.where('session_id', '=', s.id);
    } else {
      const from = new Date(Date.now() - sinceMs).toISOString();
      scope = { since: sinceArg ?? '7d', from };
      filter = (q) => q.where('ts', '>=', from);
    }

    const groups = new Map<string, string[]>();
    for (const r of await store.db.selectFrom('identities').select(['id', 'groups']).execute()) groups.set(r.id, parseGroups(r.groups));
    const sim = new Simulation(policy, (id) => groups.get(id) ?? []);
    await loadClassifiers(sim);
    for await (const cmd of commandEvents(store, filter)) sim.add(cmd);
    const report = sim.report();

    if (ctx.json) ctx.out(JSON.stringify({ valid: true, policy: full, ...scope, ...report }));
    else for (const line of renderReport(report, policy, full, scope)) ctx.out(line);
    return 0;
  });
}

/**
 * A candidate policy file: the `policy:` section's content at the top level, or a full config
 * with a `policy:` key (the rest of which is ignored). Include paths are relative to the file.
 */
export function loadCandidatePolicy(full: string): Policy {
  let text: string;
  try {
    text = readFileSync(full, 'utf8');
  } catch (e) {
    throw new ConfigError('--policy', `cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new ConfigError('policy', `not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const raw = doc !== null && typeof doc === 'object' && !Array.isArray(doc) && 'policy' in doc ? (doc as { policy: unknown }).policy : doc;
  const policy = loadPolicy(raw ?? {}, dirname(full));
  try {
    // What the schema cannot see (a policy built in code would fail here); checked up front.
    new PolicyEngine(policy);
  } catch (e) {
    throw new ConfigError('policy', (e as Error).message.replace(/^policy: /, ''));
  }
  return policy;
}

type EventQuery = ReturnType<typeof baseQuery>;

function baseQuery(store: Store) {
  return store.db.selectFrom('events').select(['seq', 'body']).where('type', '=', 'command');
}

/** The command events in journal order, a page at a time. */
async function* commandEvents(store: Store, filter: (q: EventQuery) => EventQuery): AsyncGenerator<RecordedCommand> {
  let last = 0;
  for (;;) {
    const rows = await filter(baseQuery(store)).where('seq', '>', last).orderBy('seq').limit(PAGE).execute();
    for (const r of rows) {
      const b = JSON.parse(r.body) as Partial<RecordedCommand>;
      yield {
        seq: Number(r.seq),
        ts: String(b.ts ?? ''),
        session: String(b.session ?? ''),
        identity: { id: String(b.identity?.id ?? ''), kind: b.identity?.kind === 'human' ? 'human' : 'agent', name: String(b.identity?.name ?? '') },
        connection: String(b.connection ?? ''),
        data: (b.data ?? {}) as Record<string, unknown>,
      };
    }
    if (rows.length < PAGE) return;
    last = Number(rows[rows.length - 1]!.seq);
  }
}

function parseGroups(json: string): string[] {
  try {
    const g = JSON.parse(json);
    return Array.isArray(g) ? g.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

const NOW: Record<'block' | 'review' | 'allow', string> = { block: 'would now be blocked', review: 'would now be held for review', allow: 'would now be allowed' };

export function renderReport(report: SimulationReport, policy: Policy, file: string, scope: { session: string } | { since: string; from: string }): string[] {
  const lines: string[] = [];
  const where = 'session' in scope ? `session ${scope.session}` : `the last ${scope.since} (since ${scope.from.slice(0, 19)}Z)`;
  lines.push(`policy ${file} is valid; replaying the recorded commands of ${where}`);
  const actions = new Map((policy.rules ?? []).map((r) => [r.name, r.action]));
  const quiet: string[] = [];
  for (const [rule, r] of Object.entries(report.byRule)) {
    if (r.block + r.review + r.allow === 0) {
      quiet.push(rule);
      continue;
    }
    lines.push('');
    lines.push(`rule ${rule}${actions.has(rule) ? ` (${actions.get(rule)})` : ''}:`);
    for (const a of ['block', 'review', 'allow'] as const) if (r[a]) lines.push(`  ${r[a]} ${NOW[a]}`);
    for (const ex of r.examples) lines.push(`    ${example(ex)}`);
    const more = r.block + r.review + r.allow - r.examples.length;
    if (more > 0) lines.push(`    … and ${more} more (--json lists them all)`);
  }
  if (quiet.length) {
    lines.push('');
    lines.push(`no change under: ${quiet.join(', ')}`);
  }
  lines.push('');
  lines.push(`${report.replayed} command${report.replayed === 1 ? '' : 's'} replayed, ${report.changed} changed${report.skipped ? ` (${report.skipped} without a recorded verdict skipped)` : ''}`);
  return lines;
}

function example(c: Change): string {
  return `#${c.seq} session ${c.session} ${c.identity.name} (${c.identity.kind}): ${c.text}  [was ${c.before.action} by ${c.before.rule}]`;
}
