// Masking of kubectl exec/attach output on its way to the client. The API server's WebSocket
// messages (remotecommand channel protocol: a channel byte, then data) are parsed, stdout and
// stderr go through a streaming masker per channel, and the masked text is sent on as new
// frames; control frames and the other channels pass as they are. A server's frames are never
// masked (RFC 6455 §5.1), so re-encoding needs no key.
//
// Only the binary channel protocols are spoken here: the gateway offers the API server no
// base64 variant when it masks. A line is held until it ends, except that what is held is let
// through after QUIET_MS without more output, so a shell prompt still appears (as for SSH).
import { StringDecoder } from 'node:string_decoder';
import type { Masker } from '../../mask/masker.ts';
import type { StreamMasker } from '../../mask/stream.ts';
import { JsonStreamMasker } from '../../mask/json-stream.ts';
import { OP, WsFrameParser, WsMessageAssembler, encodeFrame } from './ws-codec.ts';

/** Held output is let through after this long without more. */
const QUIET_MS = 25;
/** Largest message re-framed; the API server sends far smaller ones (its buffers are 32 KiB). */
const MAX_MESSAGE = 4 * 1024 * 1024;

/** Subprotocols whose messages are binary with a channel byte first. */
export const MASKABLE_SUBPROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io'];

/** The client's offered subprotocols, less those the masker cannot read (base64 ones). */
export function maskableOffer(offer: string | undefined): string | null {
  const kept = (offer ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => MASKABLE_SUBPROTOCOLS.includes(p));
  return kept.length ? kept.join(', ') : null;
}

interface Channel {
  decoder: StringDecoder;
  masker: StreamMasker;
}

export class KubeOutputMasker {
  private readonly frames = new WsFrameParser({ maxPayload: MAX_MESSAGE, requireMask: false });
  private readonly messages = new WsMessageAssembler({ maxMessage: MAX_MESSAGE });
  private readonly channels = new Map<number, Channel>();
  private quiet: NodeJS.Timeout | null = null;
  private failed = false;

  constructor(
    private readonly masker: Masker,
    /** writes bytes to the client; false: it is full (the caller pauses the source) */
    private readonly send: (bytes: Buffer) => boolean,
    /** the stream cannot be read: the caller closes both sides */
    private readonly fail: (reason: string) => void,
  ) {}

  /** Bytes from the API server. Returns false when the client is full. */
  push(bytes: Buffer): boolean {
    if (this.failed) return true;
    let ok = true;
    try {
      for (const f of this.frames.push(bytes)) {
        const m = this.messages.push(f);
        if (!m) continue;
        if (m.opcode === OP.BINARY && m.data.length > 0 && (m.data[0] === 1 || m.data[0] === 2)) ok = this.output(m.data[0], m.data.subarray(1)) && ok;
        else if (m.opcode === OP.BINARY && m.data[0] === 3) {
          // The error channel's Status echoes the command line: masked as JSON, after the output.
          this.flushAll();
          const j = new JsonStreamMasker(this.masker);
          ok = this.send(encodeFrame(OP.BINARY, Buffer.concat([m.data.subarray(0, 1), j.push(m.data.subarray(1)), j.end()]))) && ok;
        } else {
          // Anything after the output (the exit status, a close) waits for what is held.
          if (m.opcode === OP.CLOSE || (m.opcode === OP.BINARY && m.data[0] !== 0)) this.flushAll();
          ok = this.send(encodeFrame(m.opcode, m.data)) && ok;
        }
      }
    } catch (e) {
      this.failed = true;
      this.fail(`the exec stream could not be read for masking (${(e as Error).message})`);
    }
    return ok;
  }

  /** The server's side ended: what is still held goes out. */
  end(): void {
    if (this.quiet) clearTimeout(this.quiet);
    if (!this.failed) this.flushAll(true);
  }

  private output(ch: number, data: Buffer): boolean {
    let c = this.channels.get(ch);
    if (!c) this.channels.set(ch, (c = { decoder: new StringDecoder('utf8'), masker: this.masker.stream() }));
    const text = c.masker.push(c.decoder.write(data));
    if (this.quiet) clearTimeout(this.quiet);
    this.quiet = setTimeout(() => this.flushAll(), QUIET_MS);
    this.quiet.unref();
    return text ? this.sendText(ch, text) : true;
  }

  private flushAll(final = false): void {
    if (this.quiet) clearTimeout(this.quiet);
    this.quiet = null;
    for (const [ch, c] of this.channels) {
      const text = final ? c.masker.push(c.decoder.end()) + c.masker.end() : c.masker.flush();
      if (text) this.sendText(ch, text);
    }
  }

  private sendText(ch: number, text: string): boolean {
    const body = Buffer.from(text, 'utf8');
    const payload = Buffer.allocUnsafe(body.length + 1);
    payload[0] = ch;
    body.copy(payload, 1);
    return this.send(encodeFrame(OP.BINARY, payload));
  }
}
