// One interactive `shell` request: recorded as a `command` event (kind shell, `<interactive
// shell>`), then a shell on the target's own channel with the pty the client asked for, bytes
// streamed both ways with backpressure, and the exit status (or signal) handed to the client
// before its channel ends (the same drain rule as exec.ts).
//
// Recording (asciicast v2, asciicast.ts): output `o`, input `i` and resize `r` events with times
// relative to the start, kept in journal `output` events of at most ~16 Ki characters or 100 ms
// each, so the journal alone replays the session. The cast header is in the command event.
// When the connection masks, output goes through one StreamMasker: the client (unless its
// identity is unmasked) and the recording both get the masked text; a line without '\n' (a
// prompt) is let through after a short quiet period. Input is recorded per typed line, masked,
// and a line typed after a password-like prompt is recorded as `[MASKED:input]`.
//
// Command lines typed at the shell are detected best effort (command-lines.ts) and recorded as
// their own command events, with the verdict the guard would give. They are observed, never
// blocked: in a pty the gateway sees keystrokes, not commands, and cannot stop one reliably.
import { StringDecoder } from 'node:string_decoder';
import type ssh2 from 'ssh2';
import type { Classification } from '../../guard/classification.ts';
import { hasCounts } from '../../mask/counts.ts';
import type { StreamMasker } from '../../mask/stream.ts';
import type { Execution } from '../../session/session.ts';
import { resizeData, type CastHeader } from '../../session/asciicast.ts';
import { CastRecorder } from '../../session/cast-recorder.ts';
import { LineTracker } from './command-lines.ts';
import { DENIED_STATUS, GATEWAY_FAILURE_STATUS, denialText, refuse, type ExecContext, type ExecRequest } from './exec.ts';
import { connectInput, exitResultStatus, finishChannel } from './streams.ts';

export interface ShellContext extends ExecContext {
  /** false: the connection allows exec only (`shell: false`) */
  shellAllowed: boolean;
}

export interface ShellRequest {
  pty: ExecRequest['pty'];
  env: Record<string, string>;
  /** the client's session channel: window changes are recorded from it */
  requests: ssh2.Session;
  /** told the target's channel once it is open, so signals and window changes can follow */
  onUpstream?: (up: ssh2.ClientChannel) => void;
}

/** The text of the shell's own command event. */
export const SHELL_TEXT = '<interactive shell>';
/** A held line (a prompt) is let through after this long without output. */
const QUIET_FLUSH_MS = 25;
/** Typed input is recorded per line, or in pieces this long. */
const INPUT_PIECE = 4096;
/** Output kept to judge the prompt a line is typed at. */
const PROMPT_TAIL = 256;
const SECRET_PROMPT = /(pass(word|phrase|code)?|pin|otp|token|secret|verification code)[^\n]{0,40}[:?]\s*$/i;
const ALT_SCREEN = /\x1b\[\?(1049|1047|47)([hl])/g;

/** How the guard sees an interactive shell: it runs whatever is typed. */
export const SHELL_CLASSIFICATION: Classification = {
  class: 'procedural',
  classes: ['procedural'],
  types: ['shell'],
  reads: [],
  writes: [],
  flags: ['interactive'],
  functions: [],
  reason: 'an interactive shell runs whatever is typed into it',
};

export async function runShell(ctx: ShellContext, ch: ssh2.ServerChannel, req: ShellRequest): Promise<void> {
  const { session } = ctx;
  if (!ctx.shellAllowed) {
    const reason = `connection "${session.connection}" allows commands only (exec), not interactive shells`;
    session.refused({ kind: 'shell', text: SHELL_TEXT, meta: { channel: 'shell' } }, 'connection.shell', reason);
    return refuse(ch, `gatehouse: ${reason}; run a command instead: ssh ${session.connection}@GATEWAY 'COMMAND'`, DENIED_STATUS);
  }
  const pty = req.pty ?? null;
  const header: CastHeader = {
    version: 2,
    width: pty?.cols || 80,
    height: pty?.rows || 24,
    timestamp: Math.floor(Date.now() / 1000),
    env: { ...(pty?.term ? { TERM: pty.term } : {}), SHELL: 'target login shell' },
  };
  let exec: Execution;
  try {
    exec = await session.run({ kind: 'shell', text: SHELL_TEXT, meta: { channel: 'shell', pty: pty ? { term: pty.term, cols: pty.cols, rows: pty.rows } : undefined, cast: header } }, SHELL_CLASSIFICATION);
  } catch (e) {
    ctx.log('ssh shell not recorded; refused', { session: session.id, error: (e as Error).message });
    return refuse(ch, 'gatehouse: the shell was refused because the gateway could not record it; try again later', DENIED_STATUS);
  }
  if (exec.verdict.action !== 'allow') {
    let outcome;
    try {
      outcome = await session.hold(exec, { onHeld: (notice) => ch.stderr.write(`gatehouse: ${notice}\r\n`) });
    } catch (e) {
      exec.finish({ status: 'not_run', error: { message: 'review failed' } });
      return refuse(ch, `gatehouse: the shell is held for review, but the review could not be created (${(e as Error).message}); try again later`, DENIED_STATUS);
    }
    if (outcome.action === 'deny') {
      exec.finish({ status: 'denied', error: { code: outcome.denial.code, message: outcome.denial.reason }, meta: { exitStatus: DENIED_STATUS } });
      return refuse(ch, denialText(outcome.denial).replace(/\n/g, '\r\n'), DENIED_STATUS);
    }
  }

  let up: ssh2.ClientChannel;
  try {
    up = await new Promise<ssh2.ClientChannel>((resolve, reject) => {
      const window = pty ? { term: pty.term, rows: pty.rows, cols: pty.cols, width: pty.width, height: pty.height, modes: pty.modes as ssh2.TerminalModes } : false;
      ctx.upstream.shell(window, { env: req.env }, (err, stream) => (err ? reject(err) : resolve(stream)));
    });
  } catch (e) {
    exec.finish({ status: 'error', error: { message: `the target refused the shell: ${(e as Error).message}` } });
    return refuse(ch, `gatehouse: the target refused to start a shell (${(e as Error).message})`, GATEWAY_FAILURE_STATUS);
  }

  const rec = new CastRecorder((cast) => session.emit('output', { command: exec.seq, cast }));
  // The size may have changed while the shell was being set up.
  if (pty && (pty.cols !== header.width || pty.rows !== header.height)) rec.add('r', resizeData(pty.cols ?? 80, pty.rows ?? 24));
  const onResize = (_a: unknown, _r: unknown, w: { cols: number; rows: number }) => rec.add('r', resizeData(w.cols, w.rows));
  req.requests.on('window-change', onResize);

  const masker = ctx.masker;
  const sm: StreamMasker | null = masker ? masker.stream() : null;
  /** the client sees raw output (no masking, or an unmasked identity); the record never does */
  const rawToClient = !masker || ctx.unmasked;
  const outDecoder = new StringDecoder('utf8');
  const errDecoder = new StringDecoder('utf8');
  const inDecoder = new StringDecoder('utf8');
  const lines = new LineTracker();
  let bytesOut = 0;
  let detected = 0;
  let altScreen = false;
  let tail = '';
  let typed = '';
  let quiet: NodeJS.Timeout | null = null;

  const pauseUntilDrained = () => {
    up.pause();
    up.stderr.pause();
    ch.once('drain', () => {
      up.resume();
      up.stderr.resume();
    });
  };
  /** masked (or unmasked-connection) output: to the record, and to the client unless it sees raw */
  const emitted = (text: string) => {
    if (!text) return;
    rec.add('o', text);
    tail = (tail + text).slice(-PROMPT_TAIL);
    if (text.includes('\x1b[?')) for (const m of text.matchAll(ALT_SCREEN)) altScreen = m[2] === 'h';
    if (!rawToClient && !ch.write(text)) pauseUntilDrained();
  };
  const quietFlush = () => {
    quiet = null;
    if (sm && sm.held > 0) emitted(sm.flush());
  };
  const output = (d: Buffer, decoder: StringDecoder) => {
    bytesOut += d.length;
    if (rawToClient && !ch.write(d)) pauseUntilDrained();
    const text = decoder.write(d);
    if (!sm) return emitted(text);
    emitted(sm.push(text));
    if (sm.held > 0) {
      if (quiet) quiet.refresh();
      else quiet = setTimeout(quietFlush, QUIET_FLUSH_MS);
    }
  };
  up.on('data', (d: Buffer) => output(d, outDecoder));
  up.stderr.on('data', (d: Buffer) => output(d, errDecoder));

  /** Records typed input (masked), as a whole line when it can. */
  const recordTyped = (secretPrompt: boolean) => {
    if (!typed) return;
    let text = typed;
    typed = '';
    if (secretPrompt) text = '[MASKED:input]' + (/[\r\n]$/.test(text) ? text.at(-1) : '');
    else if (masker) text = masker.maskText(text);
    rec.add('i', text);
  };
  const input = (text: string) => {
    if (!text) return;
    typed += text;
    const secretPrompt = SECRET_PROMPT.test(tail);
    const done = lines.feed(text);
    if (done.length || /[\r\n\x03\x04]/.test(text) || typed.length >= INPUT_PIECE) recordTyped(secretPrompt);
    if (altScreen || secretPrompt) return;
    for (const l of done) {
      if (!l.text) continue;
      detected++;
      const command = { kind: 'shell' as const, dialect: 'sh' as const, text: l.text };
      const v = session.check(command);
      const c = v.classification;
      session.emit('command', {
        kind: 'shell',
        dialect: 'sh',
        text: session.redact ? session.redact(l.text) : l.text,
        channel: 'shell',
        shell: exec.seq,
        detected: true,
        bestEffort: true,
        uncertain: l.uncertain || undefined,
        uncertainBecause: l.reasons.length ? l.reasons : undefined,
        classification: c ? { class: c.class, types: c.types, flags: c.flags.length ? c.flags : undefined, reason: c.class === 'read' ? undefined : c.reason } : undefined,
        // observed only: the line already went to the target's line editor
        verdict: v.action === 'allow' ? { action: 'allow', rule: v.rule, enforced: false } : { action: v.action, rule: v.rule, reason: v.denial.reason, enforced: false },
      });
    }
  };

  const target = connectInput(ch, up, (d) => input(inDecoder.write(d)));
  req.onUpstream?.(up);

  await target.done;
  req.requests.off('window-change', onResize);
  if (quiet) clearTimeout(quiet);
  input(inDecoder.end());
  recordTyped(false);
  const rest = outDecoder.end() + errDecoder.end();
  if (sm) emitted(sm.push(rest) + sm.end());
  else emitted(rest);
  rec.flush();

  const final = target.exit();
  exec.finish({
    status: exitResultStatus(target),
    bytesIn: target.bytesIn(),
    bytesOut,
    masked: sm && hasCounts(sm.counts) ? sm.counts : undefined,
    meta: {
      exitStatus: final && 'code' in final ? final.code : null,
      exitSignal: final && 'signal' in final ? final.signal : undefined,
      detectedCommands: detected,
      recordedChunks: rec.chunks,
    },
  });
  if (target.clientGone()) return;
  if (!final) return refuse(ch, 'gatehouse: the target closed the shell without an exit status', GATEWAY_FAILURE_STATUS);
  await finishChannel(ch, final);
}
