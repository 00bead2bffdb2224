// LOAD DATA LOCAL INFILE is blocked unless an allow rule names its flag, whatever the default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadPolicy } from '../../src/guard/policy-schema.ts';
import { PolicyEngine, type Facts } from '../../src/guard/policy.ts';
import { classifyMysql } from '../../src/guard/classify-mysql.ts';

const facts = (text: string, name = 'agent-bob'): Facts => ({
  identity: { id: 'id-1', name, kind: 'human', groups: [] },
  connection: 'shop',
  command: { kind: 'sql', text, dialect: 'mysql' },
  classification: classifyMysql(text),
});
const LOCAL = "LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t";

test('blocked by default, even under default allow and an allow rule on its type', () => {
  for (const policy of [{}, { default: { action: 'allow' } }, { default: { action: 'allow' }, rules: [{ name: 'loads', match: { types: ['LOAD_DATA'] }, action: 'allow' }] }]) {
    const d = new PolicyEngine(loadPolicy(policy, '/')).decide(facts(LOCAL));
    assert.deepEqual([d.action, d.rule], ['block', 'default.load-data-local'], JSON.stringify(policy));
    assert.match(d.hint, /flags: \[load_data_local\]/);
  }
});

test('an allow rule naming the flag allows it; block and review rules match as usual; other statements are unaffected', () => {
  const e = new PolicyEngine(
    loadPolicy(
      {
        default: { action: 'allow' },
        rules: [
          { name: 'review-agents', match: { kinds: ['agent'], flags: ['load_data_local'] }, action: 'review', approvers: ['dba'] },
          { name: 'loaders', match: { identities: ['loader-*'], flags: ['load_data_local'] }, action: 'allow' },
        ],
      },
      '/',
    ),
  );
  assert.equal(e.decide(facts(LOCAL, 'loader-1')).rule, 'loaders');
  assert.equal(e.decide(facts(LOCAL, 'someone')).rule, 'default.load-data-local');
  assert.equal(e.decide({ ...facts(LOCAL, 'loader-1'), identity: { id: 'a', name: 'loader-1', kind: 'agent', groups: [] } }).action, 'review');
  // server-side LOAD DATA INFILE is another matter (server_file_copy, admin): the default applies
  assert.equal(e.decide(facts("LOAD DATA INFILE '/var/lib/mysql-files/x' INTO TABLE t")).action, 'allow');
  assert.equal(e.decide(facts('INSERT INTO t VALUES (1)')).action, 'allow');
});
