// kubectl exec output masked in flight: the API server's frames in, re-framed masked frames out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMaskConfig } from '../../src/mask/config.ts';
import { Masker } from '../../src/mask/masker.ts';
import { KubeOutputMasker, maskableOffer } from '../../src/protocols/http/kube-mask.ts';
import { OP, WsFrameParser, encodeFrame } from '../../src/protocols/http/ws-codec.ts';

const masker = new Masker(parseMaskConfig({}), 'k');
const msg = (ch: number, text: string) => encodeFrame(OP.BINARY, Buffer.concat([Buffer.from([ch]), Buffer.from(text)]));

/** Runs server bytes through the masker (split at `cut`), returns the client's messages as [channel, text]. */
function run(bytes: Buffer, cut = bytes.length): { out: [number, string][]; failed: string | null } {
  const sent: Buffer[] = [];
  let failed: string | null = null;
  const m = new KubeOutputMasker(masker, (b) => (sent.push(b), true), (r) => (failed = r));
  m.push(bytes.subarray(0, cut));
  m.push(bytes.subarray(cut));
  m.end();
  const p = new WsFrameParser({ requireMask: false });
  const out: [number, string][] = [];
  for (const f of p.push(Buffer.concat(sent))) out.push(f.opcode === OP.BINARY ? [f.payload[0]!, f.payload.subarray(1).toString()] : [-f.opcode, f.payload.toString()]);
  return { out, failed };
}

const joined = (out: [number, string][], ch: number) => out.filter(([c]) => c === ch).map(([, t]) => t).join('');

test('stdout and stderr are masked per channel, also when a secret spans messages and any byte split', () => {
  const bytes = Buffer.concat([msg(1, 'mail ann.lee@exa'), msg(2, 'key AKIAIOSFODNN7EXAMPLE\n'), msg(1, 'mple.com\nbye\n'), encodeFrame(OP.PING, 'p'), msg(3, '{"metadata":{},"status":"Failure","message":"error executing command [sh -c echo ann.lee@example.com]","reason":"NonZeroExitCode"}')]);
  for (let cut = 0; cut <= bytes.length; cut += 7) {
    const { out, failed } = run(bytes, cut);
    assert.equal(failed, null);
    assert.equal(joined(out, 1), 'mail [MASKED:email]\nbye\n');
    assert.equal(joined(out, 2), 'key [MASKED:aws]\n');
    assert.ok(out.some(([c, t]) => c === -OP.PING && t === 'p'), 'control frames pass');
    const status = JSON.parse(joined(out, 3));
    assert.equal(status.reason, 'NonZeroExitCode');
    assert.ok(!status.message.includes('ann.lee@example.com'), status.message);
    // The exit status comes after all output.
    assert.equal(out.at(-1)![0], 3);
  }
});

test('held output (a prompt without a newline) is let through once the stream goes quiet', async () => {
  const sent: Buffer[] = [];
  const m = new KubeOutputMasker(masker, (b) => (sent.push(b), true), () => {});
  m.push(msg(1, '$ '));
  await new Promise((r) => setTimeout(r, 60));
  const frames = new WsFrameParser({ requireMask: false }).push(Buffer.concat(sent));
  assert.equal(frames.map((f) => f.payload.subarray(1).toString()).join(''), '$ ');
  m.end();
});

test('a broken stream fails closed; only binary channel subprotocols are offered', () => {
  const { failed } = run(Buffer.from([0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
  assert.match(failed ?? '', /could not be read/);
  assert.equal(maskableOffer('v5.channel.k8s.io, v4.base64.channel.k8s.io, v4.channel.k8s.io'), 'v5.channel.k8s.io, v4.channel.k8s.io');
  assert.equal(maskableOffer('base64.channel.k8s.io'), null);
  assert.equal(maskableOffer(undefined), null);
});
