// One `exec` request: guard and journal first, then the command on the target's own channel,
// stdin/stdout/stderr streamed both ways with backpressure, and the exit status (or signal)
// handed to the client before its channel ends.
//
// The ordering matters. ssh2 writes an exit-status request straight to the transport, while
// channel data that does not fit the client's window waits in the channel's write buffer; sent
// at once, the status could overtake output, and a client that sees EOF/close first reports
// 255 or loses the tail. So the status is sent only when the target's stdout and stderr have
// ended, everything has been handed to the client's channel, and its buffers have drained.
import { StringDecoder } from 'node:string_decoder';
import type { Writable } from 'node:stream';
import type ssh2 from 'ssh2';
import type { Denial } from '../../guard/types.ts';
import type { Masker } from '../../mask/masker.ts';
import type { StreamMasker } from '../../mask/stream.ts';
import { newCounts, mergeCounts, hasCounts, type Counts } from '../../mask/counts.ts';
import type { Execution, Session } from '../../session/session.ts';
import { connectInput, exitResultStatus, finishChannel } from './streams.ts';

/** The shared denial shape as stderr text. */
export function denialText(d: Denial): string {
  return `gatehouse: ${d.reason}\n  rule: ${d.rule}${d.reviewId ? `\n  review: ${d.reviewId}` : ''}\n  hint: ${d.hint}\n`;
}

/** Exit status of a refused command, as a shell reports "found but cannot execute". */
export const DENIED_STATUS = 126;
/** Exit status when the gateway itself fails (as the OpenSSH client reports its own errors). */
export const GATEWAY_FAILURE_STATUS = 255;

export interface ExecContext {
  session: Session;
  upstream: ssh2.Client;
  /** set when the connection masks; `unmasked`: this identity sees raw output (the journal never does) */
  masker: Masker | null;
  unmasked: boolean;
  /** characters of stdout and of stderr kept in the result event */
  sampleChars: number;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface ExecRequest {
  command: string;
  pty?: { term?: string; rows?: number; cols?: number; width?: number; height?: number; modes?: Record<string, number> } | null;
  env: Record<string, string>;
  /** told the target's channel once it is open, so signals and window changes can follow */
  onUpstream?: (up: ssh2.ClientChannel) => void;
}

/** Bytes of raw output kept past the sample, so a secret cut by the sample's end is still masked whole. */
const SAMPLE_MARGIN = 16 * 1024;

class OutputSide {
  readonly decoder = new StringDecoder('utf8');
  readonly stream: StreamMasker | null;
  bytes = 0;
  private head = '';
  private headFull = false;

  constructor(
    private readonly ctx: ExecContext,
    private readonly to: Writable,
  ) {
    this.stream = ctx.masker && !ctx.unmasked ? ctx.masker.stream() : null;
  }

  /** Forwards a chunk; returns false when the client's channel is full. */
  push(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    const limit = this.ctx.sampleChars + SAMPLE_MARGIN;
    if (!this.headFull) {
      this.head += chunk.toString('utf8', 0, Math.min(chunk.length, limit - this.head.length + 4));
      if (this.head.length >= limit) {
        this.head = this.head.slice(0, limit);
        this.headFull = true;
      }
    }
    if (!this.stream) return this.to.write(chunk);
    const text = this.stream.push(this.decoder.write(chunk));
    return text.length ? this.to.write(text) : true;
  }

  /** The masked stream's held tail. */
  finish(): void {
    if (!this.stream) return;
    const text = this.stream.push(this.decoder.end()) + this.stream.end();
    if (text.length) this.to.write(text);
  }

  /** A bounded sample for the journal, always masked when the connection masks. */
  sample(counts: Counts): { text: string; truncated: boolean } {
    let text = this.head;
    if (this.ctx.masker) text = this.ctx.masker.maskText(text, counts);
    const truncated = this.headFull || text.length > this.ctx.sampleChars || this.bytes > Buffer.byteLength(this.head);
    return { text: text.slice(0, this.ctx.sampleChars), truncated };
  }
}


export async function refuse(ch: ssh2.ServerChannel, message: string, status: number): Promise<void> {
  ch.stderr.write(message.endsWith('\n') ? message : message + '\n');
  await finishChannel(ch, { code: status });
}

export async function runExec(ctx: ExecContext, ch: ssh2.ServerChannel, req: ExecRequest): Promise<void> {
  const { session } = ctx;
  let exec: Execution;
  try {
    exec = await session.run({ kind: 'shell', dialect: 'sh', text: req.command, meta: { channel: 'exec', pty: req.pty ? true : undefined } });
  } catch (e) {
    ctx.log('ssh exec not recorded; refused', { session: session.id, error: (e as Error).message });
    return refuse(ch, 'gatehouse: the command was refused because the gateway could not record it; try again later', DENIED_STATUS);
  }
  if (exec.verdict.action !== 'allow') {
    let outcome;
    try {
      outcome = await session.hold(exec, { onHeld: (notice) => ch.stderr.write(`gatehouse: ${notice}\n`) });
    } catch (e) {
      exec.finish({ status: 'not_run', error: { message: 'review failed' } });
      return refuse(ch, `gatehouse: the command is held for review, but the review could not be created (${(e as Error).message}); try again later`, DENIED_STATUS);
    }
    if (outcome.action === 'deny') {
      exec.finish({ status: 'denied', error: { code: outcome.denial.code, message: outcome.denial.reason }, meta: { exitStatus: DENIED_STATUS } });
      return refuse(ch, denialText(outcome.denial), DENIED_STATUS);
    }
  }

  let up: ssh2.ClientChannel;
  try {
    up = await new Promise<ssh2.ClientChannel>((resolve, reject) => {
      const opts: ssh2.ExecOptions = { env: req.env };
      if (req.pty) opts.pty = { term: req.pty.term, rows: req.pty.rows, cols: req.pty.cols, width: req.pty.width, height: req.pty.height, modes: req.pty.modes as ssh2.TerminalModes };
      ctx.upstream.exec(req.command, opts, (err, stream) => (err ? reject(err) : resolve(stream)));
    });
  } catch (e) {
    exec.finish({ status: 'error', error: { message: `the target refused the exec: ${(e as Error).message}` } });
    return refuse(ch, `gatehouse: the target refused to run the command (${(e as Error).message})`, GATEWAY_FAILURE_STATUS);
  }

  const stdout = new OutputSide(ctx, ch);
  const stderr = new OutputSide(ctx, ch.stderr);
  // target → client, pausing the target's side while the client's window is full
  const relay = (from: NodeJS.ReadableStream, side: OutputSide, to: Writable) => {
    from.on('data', (d: Buffer) => {
      if (!side.push(d)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
  };
  relay(up, stdout, ch);
  relay(up.stderr, stderr, ch.stderr);

  // client → target (stdin), likewise
  const target = connectInput(ch, up);
  req.onUpstream?.(up);

  await target.done;
  stdout.finish();
  stderr.finish();

  // What was masked in the output: the client-facing streams' counts, or (for an unmasked
  // identity) what masking the samples found.
  const sampleCounts = newCounts();
  const out = stdout.sample(sampleCounts);
  const err = stderr.sample(sampleCounts);
  const counts = stdout.stream && stderr.stream ? mergeCounts(mergeCounts(newCounts(), stdout.stream.counts), stderr.stream.counts) : sampleCounts;
  const final = target.exit();
  exec.finish({
    status: exitResultStatus(target),
    bytesIn: target.bytesIn(),
    bytesOut: stdout.bytes + stderr.bytes,
    truncated: out.truncated || err.truncated || undefined,
    masked: hasCounts(counts) ? counts : undefined,
    meta: {
      exitStatus: final && 'code' in final ? final.code : null,
      exitSignal: final && 'signal' in final ? final.signal : undefined,
      stdout: out.text,
      stderr: err.text,
    },
  });
  if (target.clientGone()) return;
  if (!final) return refuse(ch, 'gatehouse: the target closed the command without an exit status', GATEWAY_FAILURE_STATUS);
  await finishChannel(ch, final);
}
