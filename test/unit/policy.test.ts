import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Classification } from '../../src/guard/classification.ts';
import { loadPolicy, policySchema } from '../../src/guard/policy-schema.ts';
import { PolicyEngine, type Facts } from '../../src/guard/policy.ts';
import { ConfigError } from '../../src/config/load.ts';

const cls = (over: Partial<Classification> = {}): Classification => ({
  class: 'read',
  classes: ['read'],
  types: ['SELECT'],
  reads: ['public.users'],
  writes: [],
  flags: [],
  functions: [],
  ...over,
});

const write = (over: Partial<Classification> = {}) =>
  cls({ class: 'write', classes: ['write'], types: ['UPDATE'], reads: [], writes: ['public.users'], ...over });

const facts = (over: { identity?: Partial<Facts['identity']>; connection?: string; command?: Partial<Facts['command']>; classification?: Classification } = {}): Facts => ({
  identity: { id: 'id-1', name: 'agent-bob', kind: 'agent', groups: ['dev'], ...over.identity },
  connection: over.connection ?? 'prod-main',
  command: { kind: 'sql', text: 'SELECT * FROM users', dialect: 'postgres', ...over.command },
  classification: over.classification ?? cls(),
});

const engine = (policy: unknown) => new PolicyEngine(loadPolicy(policy, '/'));
/** The name of the rule (or default) that decides. */
const ruleOf = (e: PolicyEngine, f: Facts) => e.decide(f).rule;

test('rules are checked in order and the first match wins', () => {
  const e = engine({
    rules: [
      { name: 'first', match: { classes: ['write'] }, action: 'block' },
      { name: 'second', match: { classes: ['write'] }, action: 'allow' },
      { name: 'reads', match: { classes: ['read'] }, action: 'allow' },
    ],
  });
  const d = e.decide(facts({ classification: write() }));
  assert.equal(d.action, 'block');
  assert.equal(d.rule, 'first');
  assert.equal(ruleOf(e, facts()), 'reads');
});

test('each match key narrows the rule; all present keys must match', () => {
  const cases: [Record<string, unknown>, Facts, boolean][] = [
    [{ connections: ['prod-*'] }, facts(), true],
    [{ connections: ['prod-*'] }, facts({ connection: 'staging' }), false],
    [{ identities: ['agent-*'] }, facts(), true],
    [{ identities: ['agent-*'] }, facts({ identity: { name: 'alice' } }), false],
    [{ kinds: ['human'] }, facts(), false],
    [{ kinds: ['human', 'agent'] }, facts(), true],
    [{ groups: ['contractors', 'dev'] }, facts(), true], // any-of
    [{ groups: ['contractors'] }, facts(), false],
    [{ groups: ['dev'] }, facts({ identity: { groups: [] } }), false],
    [{ classes: ['ddl', 'read'] }, facts(), true],
    [{ classes: ['ddl'] }, facts(), false],
    [{ classes: ['ddl'] }, facts({ classification: cls({ class: 'ddl', classes: ['read', 'ddl'] }) }), true], // against classes, not class alone
    [{ types: ['DROP_TABLE', 'SELECT'] }, facts(), true],
    [{ types: ['DROP_TABLE'] }, facts(), false],
    [{ flags: ['without_where'] }, facts({ classification: write({ flags: ['without_where', 'multi'] }) }), true],
    [{ flags: ['without_where', 'multi'] }, facts({ classification: write({ flags: ['without_where'] }) }), false], // all-of
    [{ flags: ['without_where', 'multi'] }, facts({ classification: write({ flags: ['multi', 'x', 'without_where'] }) }), true],
    [{ connections: ['prod-*'], kinds: ['agent'], classes: ['read'] }, facts(), true],
    [{ connections: ['prod-*'], kinds: ['agent'], classes: ['write'] }, facts(), false], // AND
    [{}, facts(), true], // no keys: every command
  ];
  for (const [match, f, expected] of cases) {
    const e = engine({ rules: [{ name: 'r', match, action: 'block' }] });
    assert.equal(e.decide(f).rule === 'r', expected, `match ${JSON.stringify(match)} on ${JSON.stringify(f.identity)} ${f.connection} ${JSON.stringify(f.classification)}`);
  }
});

test('tables and schemas: globs against reads and writes; unqualified names are in "public"', () => {
  const cases: [Record<string, unknown>, Classification, boolean][] = [
    [{ tables: { read: ['public.users'] } }, cls(), true],
    [{ tables: { read: ['public.users'] } }, cls({ reads: ['users'] }), true],
    [{ tables: { read: ['*.users'] } }, cls({ reads: ['users'] }), true],
    [{ tables: { read: ['users'] } }, cls({ reads: ['users'] }), true],
    [{ tables: { read: ['public.users'] } }, cls({ reads: ['other.users'] }), false],
    [{ tables: { read: ['public.users'] } }, cls({ reads: ['mydb.public.users'] }), true], // catalog dropped
    [{ tables: { read: ['mydb.public.*'] } }, cls({ reads: ['mydb.public.users'] }), true],
    [{ tables: { read: ['public.users'] } }, cls({ reads: ['mydb.other.users'] }), false],
    [{ tables: { write: ['public.users'] } }, cls(), false], // read, not written
    [{ tables: { write: ['billing.*'] } }, write({ writes: ['billing.invoices'] }), true],
    [{ tables: { write: ['billing.*'] } }, write({ writes: ['billing_x.invoices'] }), false],
    [{ tables: { read: ['nope'], write: ['billing.*'] } }, write({ writes: ['billing.invoices'] }), true], // read or write
    [{ tables: { read: ['public.users'] } }, cls({ reads: ['public.orders', 'public.users'] }), true], // any table
    [{ schemas: { read: ['public'] } }, cls({ reads: ['users'] }), true],
    [{ schemas: { read: ['public'] } }, cls({ reads: ['public.users'] }), true],
    [{ schemas: { read: ['pub*'] } }, cls({ reads: ['db.public.users'] }), true], // catalog.schema.table
    [{ schemas: { read: ['db'] } }, cls({ reads: ['db.public.users'] }), false],
    [{ schemas: { read: ['public'] } }, cls({ reads: ['audit.log'] }), false],
    [{ schemas: { write: ['audit', 'billing'] } }, write({ writes: ['billing.x'] }), true],
    [{ schemas: { write: ['audit'] } }, write({ writes: ['users'] }), false],
  ];
  for (const [match, c, expected] of cases) {
    const e = engine({ rules: [{ name: 'r', match, action: 'block' }] });
    assert.equal(e.decide(facts({ classification: c })).rule === 'r', expected, `match ${JSON.stringify(match)} on reads ${c.reads} writes ${c.writes}`);
  }
});

test('globs: * and ? wildcards; other characters are literal', () => {
  const e = engine({ rules: [{ name: 'r', match: { connections: ['prod.db?', 'a+b'] }, action: 'block' }] });
  assert.equal(ruleOf(e, facts({ connection: 'prod.db1' })), 'r');
  assert.notEqual(ruleOf(e, facts({ connection: 'prodXdb1' })), 'r'); // "." is not a wildcard
  assert.notEqual(ruleOf(e, facts({ connection: 'prod.db12' })), 'r');
  assert.equal(ruleOf(e, facts({ connection: 'a+b' })), 'r');
  assert.notEqual(ruleOf(e, facts({ connection: 'aab' })), 'r');
  const star = engine({ rules: [{ name: 'r', match: { identities: ['*'] }, action: 'block' }] });
  assert.equal(ruleOf(star, facts({ identity: { name: 'anyone' } })), 'r');
});

test('CEL when: true matches, false falls through, errors and non-bools fail closed', () => {
  const e = engine({
    rules: [
      { name: 'long-agent', match: { when: 'command.text.size() > 20 && identity.kind == "agent"' }, action: 'block' },
      { name: 'dialect', match: { kinds: ['human'], when: 'command.dialect == "mysql"' }, action: 'block' },
      { name: 'numeric', match: { connections: ['numbers'], when: 'int(command.text) > 0' }, action: 'allow' },
      { name: 'non-bool', match: { connections: ['weird'], when: 'dyn(identity.name)' }, action: 'allow' },
      { name: 'tables', match: { connections: ['t'], when: 'classification.reads.exists(t, t.startsWith("public."))' }, action: 'block' },
    ],
  });
  assert.equal(ruleOf(e, facts({ command: { text: 'SELECT * FROM users WHERE id = 1' } })), 'long-agent');
  assert.notEqual(ruleOf(e, facts()), 'long-agent');
  // An absent dialect is "" to CEL, so comparing it is false rather than an error.
  const human = { identity: { kind: 'human' as const, name: 'alice' } };
  assert.equal(e.decide(facts({ ...human, command: { dialect: undefined } })).action, 'allow');
  assert.equal(ruleOf(e, facts({ ...human, command: { dialect: 'mysql' } })), 'dialect');

  assert.equal(e.decide(facts({ connection: 'numbers', command: { text: '42' } })).action, 'allow');
  const err = e.decide(facts({ connection: 'numbers', command: { text: 'x' } }));
  assert.equal(err.action, 'block');
  assert.equal(err.rule, 'numeric');
  assert.match(err.reason, /^policy condition failed: rule "numeric": /);

  const nb = e.decide(facts({ connection: 'weird' }));
  assert.equal(nb.action, 'block');
  assert.match(nb.reason, /policy condition failed: .*string "agent-bob", not a bool/);

  assert.equal(ruleOf(e, facts({ connection: 't' })), 'tables');
  assert.notEqual(ruleOf(e, facts({ connection: 't', classification: cls({ reads: ['audit.log'] }) })), 'tables');
});

test('CEL sees only the documented identity fields', () => {
  const e = engine({ rules: [{ name: 'r', match: { when: 'identity.groups.exists(g, g == "dev") && identity.id == "id-1"' }, action: 'block' }] });
  const full = { ...facts().identity, keyHash: 'secret', scramVerifier: 'secret' };
  assert.equal(e.decide({ ...facts(), identity: full }).rule, 'r');
  // A field outside the schema is a validation error, not a runtime one.
  assert.throws(() => loadPolicy({ rules: [{ name: 'r', match: { when: 'identity.keyHash == ""' }, action: 'block' }] }, '/'), /rules\[0\]\.match\.when: rule "r": when is not valid CEL: No such key: keyHash/);
});

test('zero-config: agent reads allowed, agent writes reviewed, humans allowed, unknown reviewed', () => {
  for (const e of [new PolicyEngine(undefined), new PolicyEngine({}), engine({ rules: [{ name: 'unrelated', match: { connections: ['x'] }, action: 'block' }] })]) {
    assert.deepEqual({ ...e.decide(facts()) }, { action: 'allow', rule: 'default.allow-reads', reason: '', hint: '' });
    const w = e.decide(facts({ classification: write() }));
    assert.equal(w.action, 'review');
    assert.equal(w.rule, 'default.review-agent-writes');
    assert.deepEqual({ ...w.review, approvers: [...w.review!.approvers] }, { approvers: ['admin'], minApprovals: 1, expiresInMs: 3600_000, mode: 'wait', holdForMs: 60_000 });
    const ddl = e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'], types: ['DROP_TABLE'] }) }));
    assert.equal(ddl.action, 'review');
    const mixed = e.decide(facts({ classification: cls({ class: 'read', classes: ['read', 'write'] }) }));
    assert.equal(mixed.action, 'review', 'a read that also writes is not a read');
    const human = { identity: { kind: 'human' as const, name: 'alice' } };
    assert.equal(e.decide(facts({ ...human, classification: write() })).action, 'allow');
    for (const who of [{}, human]) {
      const u = e.decide(facts({ ...who, classification: cls({ class: 'unknown', classes: ['unknown'], types: [], reads: [], reason: 'syntax error at or near "SELEC"' }) }));
      assert.equal(u.action, 'review');
      assert.equal(u.rule, 'default.unknown');
      assert.match(u.reason, /could not be classified.*: syntax error at or near "SELEC"$/);
    }
  }
});

test('unknown is never silently allowed: allow rules must name class unknown, allow defaults do not apply', () => {
  const unknown = facts({ classification: cls({ class: 'unknown', classes: ['unknown'] }) });
  const catchAll = engine({ default: { action: 'allow' }, rules: [{ name: 'everything', action: 'allow' }] });
  assert.equal(catchAll.decide(unknown).rule, 'default.unknown');
  assert.equal(catchAll.decide(facts({ classification: write() })).rule, 'everything');

  const explicit = engine({ rules: [{ name: 'unknown-ok', match: { classes: ['unknown'] }, action: 'allow' }] });
  assert.equal(explicit.decide(unknown).action, 'allow');
  const blockAll = engine({ rules: [{ name: 'no', match: { kinds: ['agent'] }, action: 'block' }] });
  assert.equal(blockAll.decide(unknown).rule, 'no');
  const strictDefault = engine({ default: { action: 'block' } });
  assert.equal(strictDefault.decide(unknown).action, 'block');
  const reviewDefault = engine({ default: { action: 'review', approvers: ['dba'] } });
  assert.deepEqual([...reviewDefault.decide(unknown).review!.approvers], ['dba']);
  // A class string this engine does not know counts as unknown.
  assert.equal(new PolicyEngine(undefined).decide(facts({ classification: cls({ class: 'weird' as never, classes: ['weird' as never] }) })).rule, 'default.unknown');
});

test('configured default applies when no rule matches', () => {
  const e = engine({ default: { action: 'block', hint: 'use the replica' } });
  const d = e.decide(facts({ classification: cls({ reason: 'reads a large table' }) }));
  assert.equal(d.action, 'block');
  assert.equal(d.rule, 'default');
  assert.equal(d.reason, 'statement blocked by rule "default": reads a large table');
  assert.equal(d.hint, 'use the replica');
  assert.equal(engine({ default: { action: 'allow' } }).decide(facts({ classification: write() })).action, 'allow');
});

test('reasons, hints and review terms', () => {
  const e = engine({
    rules: [
      { name: 'no-drops', match: { types: ['DROP_TABLE'] }, action: 'block' },
      { name: 'custom', match: { types: ['TRUNCATE'] }, action: 'block', reason: 'truncating is not allowed', hint: 'ask a DBA' },
      { name: 'dba-review', match: { classes: ['ddl'] }, action: 'review', approvers: ['dba', 'sre'], minApprovals: 2, expiresIn: '7d', mode: 'defer', holdFor: '30s' },
    ],
  });
  const drop = e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'], types: ['DROP_TABLE'], reason: 'drops public.users' }) }));
  assert.equal(drop.reason, 'statement blocked by rule "no-drops": drops public.users');
  assert.equal(drop.hint, 'ask an administrator to change policy rule "no-drops"');
  const noReason = e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'], types: ['DROP_TABLE'] }) }));
  assert.equal(noReason.reason, 'statement blocked by rule "no-drops"');
  const trunc = e.decide(facts({ classification: cls({ class: 'write', classes: ['write'], types: ['TRUNCATE'], reason: 'x' }) }));
  assert.deepEqual([trunc.reason, trunc.hint], ['truncating is not allowed', 'ask a DBA']);
  const rev = e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'], types: ['CREATE_TABLE'] }) }));
  assert.equal(rev.action, 'review');
  assert.equal(rev.reason, 'statement requires review under rule "dba-review"');
  assert.match(rev.hint, /groups "dba", "sre"/);
  assert.deepEqual({ ...rev.review, approvers: [...rev.review!.approvers] }, { approvers: ['dba', 'sre'], minApprovals: 2, expiresInMs: 7 * 86400_000, mode: 'defer', holdForMs: 30_000 });
  // Review settings left out take the defaults.
  const d = engine({ rules: [{ name: 'r', action: 'review', approvers: ['dba'] }] }).decide(facts());
  assert.deepEqual({ ...d.review, approvers: [...d.review!.approvers] }, { approvers: ['dba'], minApprovals: 1, expiresInMs: 3600_000, mode: 'wait', holdForMs: 60_000 });
  // Decisions are shared and frozen: the common path allocates nothing.
  assert.equal(e.decide(facts()), e.decide(facts()));
  assert.ok(Object.isFrozen(e.decide(facts())));
});

test('readOnly: readOnlyFor by connection and identity; decide blocks changes there before any rule', () => {
  const e = engine({
    readOnly: [
      { connections: ['prod-*'], kinds: ['agent'] },
      { connections: ['analytics'], identities: ['*'] },
      { connections: ['billing'], groups: ['contractors'] },
    ],
    rules: [{ name: 'allow-all', action: 'allow' }],
  });
  const agent = { name: 'agent-bob', kind: 'agent' as const, groups: [] };
  const human = { name: 'alice', kind: 'human' as const, groups: ['contractors'] };
  assert.equal(e.readOnlyFor(agent, 'prod-main'), true);
  assert.equal(e.readOnlyFor(human, 'prod-main'), false);
  assert.equal(e.readOnlyFor(human, 'analytics'), true);
  assert.equal(e.readOnlyFor(human, 'billing'), true);
  assert.equal(e.readOnlyFor(agent, 'billing'), false);
  assert.equal(e.readOnlyFor(agent, 'staging'), false);
  assert.equal(new PolicyEngine(undefined).readOnlyFor(agent, 'prod-main'), false);

  const w = e.decide(facts({ classification: write() }));
  assert.equal(w.action, 'block');
  assert.equal(w.rule, 'readOnly[0]');
  assert.equal(e.decide(facts()).rule, 'allow-all'); // reads pass on to the rules
  assert.equal(e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'], writes: [] }) })).rule, 'readOnly[0]');
  assert.equal(e.decide(facts({ classification: cls({ class: 'unknown', classes: ['unknown'] }) })).rule, 'readOnly[0]');
  assert.equal(e.decide(facts({ classification: cls({ class: 'copy', classes: ['write', 'copy'], writes: ['public.users'] }) })).rule, 'readOnly[0]'); // COPY FROM
  assert.equal(e.decide(facts({ classification: cls({ class: 'copy', classes: ['read', 'copy'] }) })).rule, 'allow-all'); // COPY TO
  assert.equal(e.decide(facts({ classification: cls({ class: 'admin', classes: ['read', 'admin'], flags: ['dangerous_function'] }) })).rule, 'readOnly[0]');
  assert.equal(e.decide(facts({ connection: 'staging', classification: write() })).rule, 'allow-all');
});

test('validation errors name the path', () => {
  const rule = (over: Record<string, unknown>) => ({ name: 'r', action: 'block', ...over });
  const cases: [unknown, RegExp][] = [
    [{ rules: [rule({}), rule({ name: 'b' }), rule({ name: 'c', match: { classes: ['read', 'dml'] } })] }, /config: policy\.rules\[2\]\.match\.classes\[1\]: invalid option "dml": expected one of read, write, ddl/],
    [{ rules: [rule({ action: 'deny' })] }, /policy\.rules\[0\]\.action: invalid option "deny": expected one of allow, block, review/],
    [{ rules: [rule({ action: 'review' })] }, /policy\.rules\[0\]\.approvers: rule "r": action review requires approvers/],
    [{ rules: [rule({ action: 'review', approvers: [] })] }, /policy\.rules\[0\]\.approvers: expected at least one entry/],
    [{ rules: [rule({ action: 'review', approvers: ['dba'], expiresIn: '1 hour' })] }, /policy\.rules\[0\]\.expiresIn: expected a duration/],
    [{ rules: [rule({ action: 'review', approvers: ['dba'], holdFor: '2h' })] }, /policy\.rules\[0\]\.holdFor: rule "r": holdFor \(2h\) is longer than expiresIn \(1h\)/],
    [{ rules: [rule({ approvers: ['dba'] })] }, /policy\.rules\[0\]\.approvers: rule "r": approvers only applies to action review/],
    [{ rules: [rule({ name: 'bad-cel', match: { when: 'command.text.size( > 3' } })] }, /policy\.rules\[0\]\.match\.when: rule "bad-cel": when is not valid CEL/],
    [{ rules: [rule({ match: { when: 'nosuchvar == 1' } })] }, /policy\.rules\[0\]\.match\.when: rule "r": when is not valid CEL: Unknown variable: nosuchvar/],
    [{ rules: [rule({ match: { when: 'identity.name' } })] }, /policy\.rules\[0\]\.match\.when: rule "r": when must be a bool condition, but it yields string/],
    [{ rules: [rule({}), rule({ name: 'x' }), rule({})] }, /policy\.rules\[2\]\.name: duplicate rule name "r"/],
    [{ rules: [rule({ name: 'default.x' })] }, /policy\.rules\[0\]\.name: .*reserved/],
    [{ rules: [rule({ match: { colour: 'red' } })] }, /policy\.rules\[0\]\.match: Unrecognized key: "colour"/],
    [{ rules: [rule({ match: { kinds: ['robot'] } })] }, /policy\.rules\[0\]\.match\.kinds\[0\]: invalid option "robot"/],
    [{ rules: [rule({ match: { tables: {} } })] }, /policy\.rules\[0\]\.match\.tables: expected "read", "write" or both/],
    [{ rules: [{ action: 'block' }] }, /policy\.rules\[0\]\.name: /],
    [{ default: { action: 'review' } }, /policy\.default\.approvers: default: action review requires approvers/],
    [{ readOnly: [{ identities: ['*'] }] }, /policy\.readOnly\[0\]\.connections: /],
    [{ rules: 'nope' }, /policy\.rules: /],
  ];
  for (const [raw, re] of cases) {
    assert.throws(() => loadPolicy(raw, '/'), (e: unknown) => e instanceof ConfigError && re.test(e.message), `expected ${re} for ${JSON.stringify(raw)}`);
  }
  // The schema on its own (e.g. embedded in the config schema) carries the same paths.
  const res = policySchema.safeParse({ rules: [rule({ match: { classes: ['bogus'] } })] });
  assert.equal(res.success, false);
  assert.deepEqual(res.error!.issues[0]!.path, ['rules', 0, 'match', 'classes', 0]);
});

test('include files: rules appended in order, relative to the config, errors name the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-policy-'));
  try {
    fs.mkdirSync(path.join(dir, 'policy'));
    fs.writeFileSync(path.join(dir, 'policy', 'a.yaml'), 'rules:\n  - name: from-a\n    match: { classes: [write] }\n    action: block\n');
    fs.writeFileSync(path.join(dir, 'b.yaml'), '- name: from-b\n  match: { classes: [write, ddl] }\n  action: review\n  approvers: [dba]\n');
    const p = loadPolicy({ include: ['policy/a.yaml', 'b.yaml'], rules: [{ name: 'main', match: { identities: ['root'] }, action: 'allow' }] }, dir);
    assert.deepEqual(p.rules!.map((r) => r.name), ['main', 'from-a', 'from-b']);
    assert.equal(p.include, undefined);
    const e = new PolicyEngine(p);
    assert.equal(e.decide(facts({ classification: write() })).rule, 'from-a');
    assert.equal(e.decide(facts({ classification: cls({ class: 'ddl', classes: ['ddl'] }) })).rule, 'from-b');
    assert.equal(e.decide(facts({ identity: { name: 'root' }, classification: write() })).rule, 'main');

    fs.writeFileSync(path.join(dir, 'dup.yaml'), 'rules:\n  - { name: main, action: block }\n');
    assert.throws(() => loadPolicy({ include: ['dup.yaml'], rules: [{ name: 'main', action: 'allow' }] }, dir), /dup\.yaml: rules\[0\]\.name: duplicate rule name "main" \(also policy\.rules\[0\]\)/);
    fs.writeFileSync(path.join(dir, 'bad.yaml'), 'rules:\n  - { name: ok, action: block }\n  - { name: bad, action: maybe }\n');
    assert.throws(() => loadPolicy({ include: ['bad.yaml'] }, dir), /config: bad\.yaml: rules\[1\]\.action: invalid option "maybe"/);
    fs.writeFileSync(path.join(dir, 'nested.yaml'), 'include: [a.yaml]\nrules: []\n');
    assert.throws(() => loadPolicy({ include: ['nested.yaml'] }, dir), /nested\.yaml: Unrecognized key: "include"/);
    fs.writeFileSync(path.join(dir, 'broken.yaml'), 'rules: [\n');
    assert.throws(() => loadPolicy({ include: ['broken.yaml'] }, dir), /policy\.include\[0\]: .*broken\.yaml is not valid YAML/);
    assert.throws(() => loadPolicy({ include: ['x.yaml', 'absent.yaml'] }, dir), /policy\.include\[0\]: cannot read .*x\.yaml: ENOENT/);
    // An unresolved include must not be silently dropped.
    assert.throws(() => new PolicyEngine({ include: ['b.yaml'] }), /loadPolicy/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('performance: a 20-rule policy decides in microseconds', (t) => {
  // Rules of every kind that a typical read by an agent walks past, then a match at the end.
  const rules: unknown[] = [];
  for (let i = 0; i < 4; i++) {
    rules.push({ name: `conn-${i}`, match: { connections: [`staging-${i}-*`, `dev-${i}`] }, action: 'block' });
    rules.push({ name: `ddl-${i}`, match: { connections: ['prod-*'], classes: ['ddl', 'admin'] }, action: 'review', approvers: ['dba'] });
    rules.push({ name: `billing-${i}`, match: { identities: ['agent-*'], tables: { write: [`billing${i}.*`] } }, action: 'block' });
    rules.push({ name: `flags-${i}`, match: { groups: ['contractors', `team-${i}`], flags: ['without_where'] }, action: 'block' });
    rules.push({ name: `cel-${i}`, match: { types: ['TRUNCATE'], when: 'command.text.size() > 1000 && identity.kind == "agent"' }, action: 'block' });
  }
  rules.splice(19, 1, { name: 'reads', match: { connections: ['prod-*'], classes: ['read'], schemas: { read: ['public', 'app'] } }, action: 'allow' });
  const e = engine({ rules, readOnly: [{ connections: ['analytics'] }] });
  const f = facts({ classification: cls({ reads: ['public.users', 'orders'], types: ['SELECT'], functions: ['now'] }) });
  assert.equal(e.decide(f).rule, 'reads');

  const N = 20_000;
  for (let i = 0; i < N; i++) e.decide(f); // warm-up: let the JIT settle
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) e.decide(f);
  const avgUs = Number(process.hrtime.bigint() - t0) / N / 1000;

  // A write that passes the cheap checks of every rule and reaches CEL in the last ones.
  const fw = facts({ classification: write({ types: ['TRUNCATE'], writes: ['public.users'] }), connection: 'prod-main' });
  for (let i = 0; i < N; i++) e.decide(fw);
  t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) e.decide(fw);
  const avgCelUs = Number(process.hrtime.bigint() - t0) / N / 1000;

  t.diagnostic(`decide, 20 rules, agent read matching rule 20: ${avgUs.toFixed(2)} µs average over ${N}`);
  t.diagnostic(`decide, 20 rules, write evaluating 4 CEL conditions: ${avgCelUs.toFixed(2)} µs average over ${N}`);
  assert.ok(avgUs < 50, `average ${avgUs} µs`);
  assert.ok(avgCelUs < 50, `average ${avgCelUs} µs`);
});
