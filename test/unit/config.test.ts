import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.ts';

const conn = (over: Record<string, unknown> = {}) => ({ name: 'main', type: 'postgres', host: 'db', database: 'app', user: 'gh', password: 'pw', ...over });

test('defaults: sqlite store, loopback listeners, no connections', () => {
  const c = parseConfig({}, '/etc/gh');
  assert.equal(c.store, 'sqlite');
  assert.equal(c.dataDir, '/etc/gh/.gatehouse');
  assert.equal(c.listen.postgres, '127.0.0.1:15432');
  assert.equal(c.tls.allowPlaintext, false);
  assert.equal(c.connections.length, 0);
});

test('errors name the field and say what is wrong', () => {
  const cases: [unknown, RegExp][] = [
    [{ connections: [conn({ tls: 'maybe' })] }, /connections\[0\]\.tls/],
    [{ connections: [conn({ port: 99999 })] }, /connections\[0\]\.port/],
    [{ connections: [conn(), conn()] }, /connections\[1\]\.name: duplicate connection name "main"/],
    [{ store: 'mysql://x' }, /store: expected "sqlite" or a postgres:\/\/ URL/],
    [{ listen: { postgres: 'nope' } }, /listen\.postgres: expected HOST:PORT/],
    [{ connections: [conn({ colour: 'red' })] }, /connections\[0\]/],
    [{ bogus: 1 }, /bogus|top level/],
    [{ connections: [conn({ type: 'oracle' })] }, /connections\[0\]/],
    [{ tls: { cert: 'x' } }, /tls: set both cert and key/],
  ];
  for (const [raw, re] of cases) {
    assert.throws(() => parseConfig(raw, '/'), (e: unknown) => e instanceof ConfigError && re.test((e as Error).message), `expected ${re} for ${JSON.stringify(raw)}`);
  }
});

test('secret references: env: and file:, and their errors never show a value', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-cfg-'));
  try {
    fs.writeFileSync(path.join(dir, 'pw'), 's3cret-from-file\n');
    process.env.GH_TEST_PW = 's3cret-from-env';
    const c = parseConfig({ connections: [conn({ password: 'env:GH_TEST_PW' }), conn({ name: 'b', password: 'file:pw' })] }, dir);
    assert.equal((c.connections[0] as { password?: string }).password, 's3cret-from-env');
    assert.equal((c.connections[1] as { password?: string }).password, 's3cret-from-file');
    delete process.env.GH_TEST_PW;
    assert.throws(() => parseConfig({ connections: [conn({ password: 'env:GH_TEST_PW' })] }, dir), /connections\[0\]\.password: environment variable GH_TEST_PW is not set/);
    assert.throws(() => parseConfig({ connections: [conn({ password: 'file:missing' })] }, dir), /connections\[0\]\.password: cannot read secret file .*missing: ENOENT/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('loadConfig: YAML errors and unreadable files are ConfigErrors', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-cfg-'));
  try {
    const f = path.join(dir, 'bad.yaml');
    fs.writeFileSync(f, 'connections: [\n');
    assert.throws(() => loadConfig(f), (e: unknown) => e instanceof ConfigError && /not valid YAML/.test((e as Error).message));
    assert.throws(() => loadConfig(path.join(dir, 'absent.yaml')), /cannot read .*ENOENT/);
    const good = path.join(dir, 'good.yaml');
    fs.writeFileSync(good, 'dataDir: data\nconnections:\n  - {name: x, type: postgres, host: h, database: d, user: u}\n');
    const c = loadConfig(good);
    assert.equal(c.dataDir, path.join(dir, 'data'));
    const first = c.connections[0]!;
    assert.equal(first.type === 'postgres' ? first.tls : undefined, 'prefer');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
