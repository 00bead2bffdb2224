// The recording of a kubectl exec/attach terminal: stdout and stderr as asciicast output, stdin
// as input, resizes. With a masker, both directions go through a streaming masker first, so the
// journal never holds an unmasked secret, even when the identity itself may see it (as for SSH
// shells). A line is held until it ends (or the stream does): the recording's timing of a
// prompt may lag, never its content.
import { StringDecoder } from 'node:string_decoder';
import type { Masker } from '../../mask/masker.ts';
import type { StreamMasker } from '../../mask/stream.ts';
import { resizeData } from '../../session/asciicast.ts';
import { CastRecorder } from '../../session/cast-recorder.ts';

export class TerminalRecord {
  private readonly decoders = new Map<string, StringDecoder>();
  private readonly out: StreamMasker | null;
  private readonly in: StreamMasker | null;
  private ended = false;

  constructor(
    private readonly rec: CastRecorder,
    masker: Masker | null,
  ) {
    this.out = masker ? masker.stream() : null;
    this.in = masker ? masker.stream() : null;
  }

  get chunks(): number {
    return this.rec.chunks;
  }

  /** bytes of stdout, stderr (output) or stdin (input) */
  data(stream: 'stdout' | 'stderr' | 'stdin', bytes: Buffer): void {
    if (this.ended) return;
    let dec = this.decoders.get(stream);
    if (!dec) this.decoders.set(stream, (dec = new StringDecoder('utf8')));
    const text = dec.write(bytes);
    if (stream === 'stdin') this.rec.add('i', this.in ? this.in.push(text) : text);
    else this.rec.add('o', this.out ? this.out.push(text) : text);
  }

  resize(cols: number, rows: number): void {
    if (!this.ended) this.rec.add('r', resizeData(cols, rows));
  }

  /** a line of the gateway's own (never masked: it holds no target data) */
  note(text: string): void {
    if (!this.ended) this.rec.add('o', text);
  }

  /** Flushes what decoders and maskers still hold, then the recorder. */
  end(): void {
    if (this.ended) return;
    for (const [stream, dec] of this.decoders) {
      const rest = dec.end();
      if (!rest) continue;
      if (stream === 'stdin') this.rec.add('i', this.in ? this.in.push(rest) : rest);
      else this.rec.add('o', this.out ? this.out.push(rest) : rest);
    }
    if (this.out) this.rec.add('o', this.out.end());
    if (this.in) this.rec.add('i', this.in.end());
    this.ended = true;
    this.rec.flush();
  }
}
