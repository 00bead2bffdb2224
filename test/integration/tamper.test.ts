// Tampering with a real journal is caught and located: one changed byte in a stored event,
// a deleted event, one changed byte in an exported session bundle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import YAML from 'yaml';
import { findBinary, skipUnlessAvailable, startPostgres } from '../helpers/postgres.ts';
import { runCli, startGateway, type CliResult } from '../helpers/gateway.ts';

function psql(dsn: string, sql: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(findBinary('psql')!, [dsn, '-v', 'ON_ERROR_STOP=1', '-Atc', sql], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`psql failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Replaces the one byte at `at` of `s` (ASCII) and checks that exactly one byte changed. */
function flipByte(s: string, at: number, to: string): string {
  assert.ok(at >= 0 && to.length === 1 && s[at] !== to);
  const out = s.slice(0, at) + to + s.slice(at + 1);
  assert.equal(Buffer.byteLength(out), Buffer.byteLength(s));
  return out;
}

test('verify catches and locates a changed byte, a deleted event, and a changed byte in a bundle', async (t) => {
  if (skipUnlessAvailable(t, 'initdb', 'postgres', 'psql')) return;
  const cleanups: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  const pgs = await startPostgres({ ssl: true });
  cleanups.push(() => pgs.stop());
  const gw = await startGateway({ target: pgs });
  cleanups.push(() => gw.stop());
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-tamper-'));
  cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const key = await gw.createKey('auditee');
  const dsn = gw.dsn('auditee', key);

  // Two sessions one after the other: the first is exported as a bundle, the second
  // puts events after it in the chain.
  assert.equal((await psql(dsn, "select 12345; create table t (a int, b text); insert into t values (1, 'one'), (2, 'two')")).trim(), '12345\nCREATE TABLE\nINSERT 0 2');
  assert.equal((await psql(dsn, "select b from t order by a; update t set b = 'uno' where a = 1; select 67890")).trim(), 'one\ntwo\nUPDATE 1\n67890');

  const live = new Database(path.join(gw.dir, 'data', 'gatehouse.db'), { readonly: true, fileMustExist: true });
  cleanups.push(() => live.close());
  // Both sessions closed and sealed by a checkpoint.
  let head = 0;
  for (const deadline = Date.now() + 15_000; ; await sleep(100)) {
    const closes = (live.prepare("select count(*) as n from events where type = 'session.close'").get() as { n: number }).n;
    head = Number((live.prepare('select max(seq) as m from events').get() as { m: number }).m);
    const cp = Number((live.prepare('select max(size) as m from checkpoints').get() as { m: number | null }).m ?? 0);
    if (closes === 2 && cp === head) break;
    assert.ok(Date.now() < deadline, `sessions not closed and checkpointed (closes ${closes}, checkpoint ${cp}, head ${head})`);
  }
  const cmd = live.prepare("select seq, session_id, body from events where type = 'command' and body like ?");
  const target = cmd.get('%"text":"select 12345"%') as { seq: number; session_id: string; body: string };
  assert.ok(target, 'the command "select 12345" is not in the journal');
  const targetSeq = Number(target.seq);
  const sessionId = target.session_id;

  // A consistent copy of the store, and the public key beside it: each case tampers with its own copy.
  const pristine = path.join(tmp, 'pristine');
  fs.mkdirSync(pristine);
  live.exec(`vacuum into '${path.join(pristine, 'gatehouse.db').replaceAll("'", "''")}'`);
  fs.copyFileSync(path.join(gw.dir, 'data', 'signing-key.pub.pem'), path.join(pristine, 'signing-key.pub.pem'));
  const copyCase = (name: string, tamper: (db: Database.Database) => void): string => {
    const dir = path.join(tmp, name);
    fs.cpSync(pristine, dir, { recursive: true });
    const db = new Database(path.join(dir, 'gatehouse.db'), { fileMustExist: true });
    try {
      tamper(db);
    } finally {
      db.close();
    }
    const configPath = path.join(tmp, `${name}.yaml`);
    fs.writeFileSync(configPath, YAML.stringify({ dataDir: dir, store: 'sqlite' }));
    return configPath;
  };
  /** text and --json verdicts of the same verify, run side by side */
  const verify = (configPath: string, extra: string[] = []): Promise<[CliResult, CliResult]> =>
    Promise.all([runCli(configPath, ['verify', ...extra]), runCli(configPath, ['verify', '--json', ...extra])]);
  const expectBad = ([text, json]: [CliResult, CliResult], seq: number, reason: RegExp, what: string) => {
    assert.notEqual(text.code, 0, `${what}: verify passed: ${text.stdout}${text.stderr}`);
    assert.match(text.stdout, new RegExp(`first bad event ${seq}\\b`), `${what}: ${text.stdout}${text.stderr}`);
    assert.match(text.stdout, reason, what);
    assert.notEqual(json.code, 0, what);
    const report = JSON.parse(json.stdout);
    assert.equal(report.ok, false, what);
    assert.equal(report.firstBad?.seq, seq, `${what}: ${json.stdout}`);
    assert.match(report.firstBad.reason, reason, what);
  };

  // (b) one byte of one stored body: "select 12345" → "select 12445"
  const flipped = copyCase('flip', (db) => {
    const at = target.body.indexOf('select 12345') + 'select 12'.length;
    const body = flipByte(target.body, at, '4');
    assert.equal(db.prepare('update events set body = ? where seq = ?').run(body, targetSeq).changes, 1);
  });
  // (c) an event in the middle deleted
  const middle = Math.floor(head / 2);
  assert.ok(middle > 1 && middle < head);
  const deleted = copyCase('delete', (db) => {
    assert.equal(db.prepare('delete from events where seq = ?').run(middle).changes, 1);
  });
  const untouched = copyCase('untouched', () => {});

  // (d) the bundle of the first session
  const bundleFile = path.join(tmp, 'session.bundle.json');
  const exp = await gw.cli(['sessions', 'export', sessionId, '--out', bundleFile]);
  assert.equal(exp.code, 0, exp.stdout + exp.stderr);
  const bundleText = fs.readFileSync(bundleFile, 'utf8');
  const marker = '"text":"select 12345"';
  const at = bundleText.indexOf(marker);
  assert.ok(at >= 0 && bundleText.indexOf(marker, at + 1) < 0, 'the bundle should carry the command once');
  const badBundle = path.join(tmp, 'session.bad.json');
  fs.writeFileSync(badBundle, flipByte(bundleText, at + marker.length - 2, '9'));

  // Every CLI run costs a Node start-up; they run side by side.
  const [liveText, pristineJson, flipRun, deleteRun, bundleOk, bundleBad] = await Promise.all([
    gw.cli(['verify']),
    runCli(untouched, ['verify', '--json']),
    verify(flipped),
    verify(deleted),
    gw.cli(['verify', '--bundle', bundleFile]),
    verify(gw.configPath, ['--bundle', badBundle]),
  ]);

  // (a) intact, live, and as copied (so the failures below come from the tampering alone)
  assert.equal(liveText.code, 0, liveText.stdout + liveText.stderr);
  assert.match(liveText.stdout, /journal intact: \d+ events, [1-9]\d* signed checkpoints/);
  assert.equal(pristineJson.code, 0, pristineJson.stdout + pristineJson.stderr);
  const pristineReport = JSON.parse(pristineJson.stdout);
  assert.equal(pristineReport.ok, true);
  assert.equal(pristineReport.events, head);
  assert.ok(pristineReport.checkpoints > 0);
  assert.equal(pristineReport.firstBad, undefined);

  // (b), (c)
  expectBad(flipRun, targetSeq, /altered: hash mismatch/, 'one byte of a stored event');
  expectBad(deleteRun, middle, new RegExp(`event ${middle} is missing`), 'a deleted event');

  // (d) the bundle verifies as exported, and not with one byte changed
  assert.equal(bundleOk.code, 0, bundleOk.stdout + bundleOk.stderr);
  assert.match(bundleOk.stdout, /bundle .* intact: \d+ events, [1-9]\d* signed checkpoints/);
  expectBad(bundleBad, targetSeq, /altered: hash mismatch/, 'one byte of a bundle event');
});
