// Target → client framing for the relay. The bytes the target sends go on to the client, but
// each logical message can also be dropped or replaced on the way (a LOCAL INFILE request the
// gateway refuses; later, masked rows). To keep the common path cheap:
//
// - a message the handler marks as streamed leaves as its bytes arrive, without waiting for its
//   end (a 20 MB row is never held back), and is only read;
// - a message the handler marks as held leaves only once it is whole, as it came, or not at all,
//   or replaced;
// - unchanged bytes are views of the socket chunk, and runs of them are merged back by offset,
//   so an unchanged chunk leaves in a single write.
//
// The handler also gets every logical message whole (split packets reassembled), bounded by
// maxMessage, to read results from. No sockets here.
import { MAX_PACKET_PAYLOAD, ProtocolError, ER_NET_PACKET_TOO_LARGE, ER_NET_PACKETS_OUT_OF_ORDER } from './codec.ts';

/** What becomes of a held message: forwarded as it came, dropped, or replaced by these (framed) bytes. */
export type Disposition = 'pass' | 'drop' | Buffer;

export interface ServerStreamHandler {
  /** Asked when a message starts: hold it until whole (so it can be dropped or replaced), or stream it. */
  hold(): boolean;
  /**
   * One whole logical message: `seq` of its last packet, `firstSeq` of its first. For a streamed
   * message the bytes are already gone and the answer is ignored.
   */
  message(seq: number, payload: Buffer, firstSeq: number): Disposition;
}

export class ServerStream {
  private readonly hdr = Buffer.alloc(4);
  private hdrFill = 0;
  private remaining = 0;
  private inBody = false;
  private pktLen = 0;
  private pktSeq = 0;
  private firstSeq = 0;
  private continuing = false;
  private total = 0;
  private holding = false;
  /** raw bytes (headers included) of the held message so far */
  private held: Buffer[] = [];
  /** payload parts of the current message, when it spans packets or chunks */
  private parts: Buffer[] = [];
  private failed: ProtocolError | null = null;
  // output of the chunk being processed
  private pieces: Buffer[] = [];
  private runSrc: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;

  constructor(private readonly handler: ServerStreamHandler, readonly maxMessage: number) {}

  /** True when no partial message is pending. */
  get idle(): boolean {
    return this.hdrFill === 0 && !this.inBody && !this.continuing;
  }

  /** Feeds a socket chunk; returns what goes to the client for it, in order (possibly nothing). */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    try {
      this.scan(chunk);
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = e;
      throw e;
    } finally {
      this.flushRun();
    }
    const out = this.pieces;
    this.pieces = [];
    return out;
  }

  private scan(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (!this.inBody) {
        let header: Buffer;
        if (this.hdrFill === 0 && n - off >= 4) {
          header = chunk.subarray(off, off + 4);
          off += 4;
        } else {
          const take = Math.min(4 - this.hdrFill, n - off);
          chunk.copy(this.hdr, this.hdrFill, off, off + take);
          this.hdrFill += take;
          off += take;
          if (this.hdrFill < 4) return;
          this.hdrFill = 0;
          header = Buffer.from(this.hdr);
        }
        this.header(header.readUIntLE(0, 3), header[3]!);
        this.raw(header);
        // Fast path: a whole single-packet message inside this chunk is handed out as a view.
        if (!this.continuing && this.pktLen < MAX_PACKET_PAYLOAD && this.parts.length === 0 && n - off >= this.pktLen) {
          const body = chunk.subarray(off, off + this.pktLen);
          off += this.pktLen;
          this.raw(body);
          this.remaining = 0;
          this.inBody = false;
          this.complete(body);
          continue;
        }
        if (this.remaining === 0) this.endPacket();
        continue;
      }
      const take = Math.min(this.remaining, n - off);
      const body = chunk.subarray(off, off + take);
      this.raw(body);
      // A copy, so a small tail does not pin a large socket chunk until the message ends.
      this.parts.push(Buffer.from(body));
      this.remaining -= take;
      off += take;
      if (this.remaining === 0) this.endPacket();
    }
  }

  private header(len: number, seq: number): void {
    if (this.continuing) {
      const want = (this.pktSeq + 1) & 0xff;
      if (seq !== want) throw new ProtocolError(`packets out of order: got sequence id ${seq}, expected ${want}`, ER_NET_PACKETS_OUT_OF_ORDER);
    } else {
      this.firstSeq = seq;
      this.total = 0;
      this.holding = this.handler.hold();
    }
    if (this.total + len > this.maxMessage) {
      throw new ProtocolError(`packet of ${this.total + len} bytes exceeds the ${this.maxMessage}-byte limit`, ER_NET_PACKET_TOO_LARGE);
    }
    this.total += len;
    this.pktSeq = seq;
    this.pktLen = len;
    this.remaining = len;
    this.inBody = true;
  }

  private endPacket(): void {
    this.inBody = false;
    if (this.pktLen === MAX_PACKET_PAYLOAD) {
      this.continuing = true;
      return;
    }
    this.continuing = false;
    const parts = this.parts;
    this.parts = [];
    this.complete(parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.total));
  }

  private complete(payload: Buffer): void {
    this.total = 0;
    const disposition = this.handler.message(this.pktSeq, payload, this.firstSeq);
    if (!this.holding) return;
    const held = this.held;
    this.held = [];
    this.holding = false;
    if (disposition === 'pass') for (const b of held) this.emit(b);
    else if (disposition !== 'drop') {
      this.flushRun();
      this.pieces.push(disposition);
    }
  }

  /** Raw bytes of the current message: held, or out at once. */
  private raw(b: Buffer): void {
    if (b.length === 0) return;
    if (this.holding) this.held.push(b);
    else this.emit(b);
  }

  private emit(b: Buffer): void {
    if (this.runSrc !== null && b.buffer === this.runSrc.buffer && b.byteOffset === this.runEnd) {
      this.runEnd += b.length;
      return;
    }
    this.flushRun();
    this.runSrc = b;
    this.runStart = b.byteOffset;
    this.runEnd = b.byteOffset + b.length;
  }

  private flushRun(): void {
    const src = this.runSrc;
    if (src === null) return;
    this.runSrc = null;
    const len = this.runEnd - this.runStart;
    this.pieces.push(len === src.length && this.runStart === src.byteOffset ? src : Buffer.from(src.buffer, this.runStart, len));
  }
}
