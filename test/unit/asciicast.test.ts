import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CastFormatError, decodeCast, encodeCast, encodeHeader, parseResize, replayDelays, type CastEvent } from '../../src/session/asciicast.ts';
import { LineTracker } from '../../src/protocols/ssh/command-lines.ts';

test('asciicast: encode then decode gives the same header and events', () => {
  const events: CastEvent[] = [
    [0.1, 'o', 'gh> '],
    [0.5, 'i', 'ls\r'],
    [0.5000004, 'o', '\x1b[1mbold\x1b[0m\r\n'],
    [1.25, 'r', '120x40'],
    [2, 'o', 'ünïcödé 🎉'],
  ];
  const text = encodeCast({ version: 2, width: 80, height: 24, timestamp: 1700000000, env: { TERM: 'xterm' } }, events);
  const lines = text.split('\n');
  assert.equal(lines.at(-1), '');
  assert.deepEqual(JSON.parse(lines[0]!), { version: 2, width: 80, height: 24, timestamp: 1700000000, env: { TERM: 'xterm' } });
  assert.equal(lines[3], '[0.5,"o","\\u001b[1mbold\\u001b[0m\\r\\n"]', 'times are rounded to microseconds');
  const back = decodeCast(text);
  assert.equal(back.header.width, 80);
  assert.deepEqual(back.events.map((e) => e[2]), events.map((e) => e[2]));
  assert.deepEqual(parseResize('120x40'), { cols: 120, rows: 40 });
  assert.equal(parseResize('120 40'), null);
  assert.equal(encodeHeader({ version: 2, width: 1, height: 1 }), '{"version":2,"width":1,"height":1}');
});

test('asciicast: malformed files are refused with the line', () => {
  assert.throws(() => decodeCast(''), CastFormatError);
  assert.throws(() => decodeCast('{"version":1,"width":80,"height":24}\n'), /version/);
  assert.throws(() => decodeCast('{"version":2,"width":0,"height":24}\n'), /width/);
  assert.throws(() => decodeCast('{"version":2,"width":80,"height":24}\n[1,"x","a"]\n'), /line 2/);
  assert.throws(() => decodeCast('{"version":2,"width":80,"height":24}\n[2,"o","a"]\n[1,"o","b"]\n'), /line 3: time goes back/);
  assert.throws(() => decodeCast('{"version":2,"width":80,"height":24}\n[1,"r","big"]\n'), /COLSxROWS/);
});

test('asciicast: replay delays follow --speed and are capped by --max-wait', () => {
  const ev: CastEvent[] = [
    [1, 'o', 'a'],
    [1.5, 'o', 'b'],
    [11.5, 'o', 'c'],
  ];
  assert.deepEqual(replayDelays(ev), [1, 0.5, 10]);
  assert.deepEqual(replayDelays(ev, { speed: 2 }), [0.5, 0.25, 5]);
  assert.deepEqual(replayDelays(ev, { maxWait: 2 }), [1, 0.5, 2]);
  assert.deepEqual(replayDelays(ev, { maxWait: 0 }), [0, 0, 0]);
});

test('command lines: typed text with editing keys becomes the line the shell runs', () => {
  const t = new LineTracker();
  assert.deepEqual(t.feed('echo hi'), []);
  assert.deepEqual(t.feed('\r'), [{ text: 'echo hi', uncertain: false, reasons: [] }]);
  // backspace, Ctrl-U, Ctrl-W, arrows, Home/End, Delete
  assert.equal(t.feed('lss\x7f -l\r')[0]!.text, 'ls -l');
  assert.equal(t.feed('rm -rf /\x15echo safe\r')[0]!.text, 'echo safe');
  assert.equal(t.feed('git push origin\x17main\r')[0]!.text, 'git push main');
  assert.equal(t.feed('echo wrld\x1b[D\x1b[D\x1b[Do\r')[0]!.text, 'echo world');
  assert.equal(t.feed('xcho x\x1b[H\x1b[3~e\x1b[F!\r')[0]!.text, 'echo x!');
  assert.equal(t.feed('ho\x01ec\x05 ok\r')[0]!.text, 'echo ok');
  // Ctrl-C abandons the line; several lines in one chunk
  assert.deepEqual(t.feed('sleep 1\x03').length, 0);
  assert.deepEqual(t.feed('\recho a\recho b\r').map((l) => l.text), ['echo a', 'echo b']);
  // bracketed paste keeps its newlines until Enter
  assert.equal(t.feed('\x1b[200~echo 1\recho 2\x1b[201~\r')[0]!.text, 'echo 1\necho 2');
});

test('command lines: history and completion are flagged as uncertain', () => {
  const t = new LineTracker();
  const up = t.feed('\x1b[A\r')[0]!;
  assert.equal(up.uncertain, true);
  assert.deepEqual(up.reasons, ['history']);
  const tab = t.feed('cat /etc/pas\t\r')[0]!;
  assert.deepEqual([tab.text, tab.uncertain, tab.reasons], ['cat /etc/pas', true, ['tab completion']]);
  assert.deepEqual(t.feed('echo fine\r')[0]!.uncertain, false, 'uncertainty does not carry over');
  assert.deepEqual(t.feed('   \r'), [], 'blank lines are not commands');
});
