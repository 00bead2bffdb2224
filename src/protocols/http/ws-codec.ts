// RFC 6455 WebSocket framing, pure and incremental, for a gateway that watches a stream it relays:
// frames may arrive split at any byte, payloads are unmasked into copies (the relayed bytes are
// never touched), and a streaming parser hands data frames on in pieces so that observing a
// gigabyte costs no more memory than one TCP chunk. Malformed input raises WsProtocolError, and
// keeps raising it: after a framing error nothing later in the stream can be trusted.
import { createHash } from 'node:crypto';

export const OP = { CONTINUATION: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const;

/** Close codes a peer sends when refusing a stream (RFC 6455 §7.4.1). */
export const CLOSE_CODE = { NORMAL: 1000, GOING_AWAY: 1001, PROTOCOL_ERROR: 1002, UNSUPPORTED: 1003, INVALID_DATA: 1007, POLICY: 1008, TOO_BIG: 1009, INTERNAL: 1011 } as const;

/** Largest payload length JavaScript holds exactly: 2^53 - 1. */
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** Control frames carry at most 125 bytes and are never fragmented (§5.5). */
const MAX_CONTROL = 125;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A framing violation. `closeCode` is what a WebSocket endpoint would close with (1002, or 1009 when too big). */
export class WsProtocolError extends Error {
  constructor(
    message: string,
    readonly closeCode: number = CLOSE_CODE.PROTOCOL_ERROR,
  ) {
    super(message);
    this.name = 'WsProtocolError';
  }
}

/** One whole frame, payload unmasked. */
export interface WsFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/**
 * Part of one frame's payload, unmasked. Control frames always come as one piece (first and
 * last). An empty data frame comes as one empty piece. `length` is the whole frame's payload
 * length. An unmasked piece may share memory with the chunk it came from.
 */
export interface WsPiece {
  opcode: number;
  fin: boolean;
  masked: boolean;
  piece: Buffer;
  /** first piece of this frame */
  first: boolean;
  /** last piece of this frame (with `fin`, the end of a message) */
  last: boolean;
  length: number;
}

export interface WsParserOptions {
  /** largest frame payload accepted; larger is an error (1009). Default: 2^53 - 1 streaming, 1 MiB whole. */
  maxPayload?: number;
  /**
   * true: every frame must be masked (what a server requires of a client, §5.1); false: no frame
   * may be (what a client requires of a server); undefined: either.
   */
  requireMask?: boolean;
}

export function isControl(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

function checkLimit(n: number | undefined, fallback: number, what: string): number {
  if (n === undefined) return fallback;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a non-negative safe integer, got ${n}`);
  return n;
}

/**
 * Streaming frame parser: push() returns the pieces of payload the chunk completes. Holds at most
 * one frame header (14 bytes) and one control payload (125 bytes) between calls, whatever the
 * frame sizes. Validates what any endpoint must (RFC 6455 §5.2–5.5): reserved bits clear (no
 * extension is negotiated through Gatehouse), known opcodes, control frames short and whole,
 * continuation only inside a fragmented message, lengths within maxPayload and 2^53, masking
 * per `requireMask`.
 */
export class WsStreamParser {
  private readonly maxPayload: number;
  private readonly requireMask: boolean | undefined;
  private failed: WsProtocolError | null = null;
  private readonly head = Buffer.alloc(14);
  private headLen = 0;
  /** bytes of payload still to come for the current frame; -1 while reading a header */
  private remaining = -1;
  private length = 0;
  private opcode = 0;
  private fin = false;
  private masked = false;
  private readonly mask = Buffer.alloc(4);
  /** payload bytes of the current frame already delivered (the mask's phase) */
  private offset = 0;
  private control: Buffer[] = [];
  /** a fragmented data message is open: the next data frame must be a continuation */
  private inMessage = false;

  constructor(opts: WsParserOptions = {}) {
    this.maxPayload = checkLimit(opts.maxPayload, MAX_SAFE, 'maxPayload');
    this.requireMask = opts.requireMask;
  }

  /** bytes held between calls (a partial header or control payload) */
  get buffered(): number {
    return this.headLen + this.control.reduce((n, b) => n + b.length, 0);
  }

  /** inside a fragmented message (its final frame not yet seen) */
  get midMessage(): boolean {
    return this.inMessage;
  }

  push(chunk: Buffer): WsPiece[] {
    if (this.failed) throw this.failed;
    try {
      return this.parse(chunk);
    } catch (e) {
      this.failed = e instanceof WsProtocolError ? e : new WsProtocolError(`WebSocket parser failed: ${(e as Error).message}`);
      throw this.failed;
    }
  }

  private parse(chunk: Buffer): WsPiece[] {
    const out: WsPiece[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.remaining < 0) {
        off = this.readHeader(chunk, off, out);
        continue;
      }
      const n = Math.min(this.remaining, chunk.length - off);
      const piece = this.unmask(chunk.subarray(off, off + n));
      off += n;
      const first = this.offset === 0;
      this.offset += n;
      this.remaining -= n;
      const last = this.remaining === 0;
      if (isControl(this.opcode)) {
        this.control.push(piece);
        if (last) {
          out.push(this.pieceOf(Buffer.concat(this.control), true, true));
          this.control = [];
        }
      } else {
        out.push(this.pieceOf(piece, first, last));
      }
      if (last) this.remaining = -1;
    }
    return out;
  }

  private pieceOf(piece: Buffer, first: boolean, last: boolean): WsPiece {
    return { opcode: this.opcode, fin: this.fin, masked: this.masked, piece, first, last, length: this.length };
  }

  /** Copies header bytes into `head` until the header is whole; then validates and starts the payload. */
  private readHeader(chunk: Buffer, off: number, out: WsPiece[]): number {
    const need = (n: number): boolean => {
      const take = Math.min(n - this.headLen, chunk.length - off);
      if (take > 0) {
        chunk.copy(this.head, this.headLen, off, off + take);
        this.headLen += take;
        off += take;
      }
      return this.headLen >= n;
    };
    if (!need(2)) return off;
    const b0 = this.head[0]!;
    const b1 = this.head[1]!;
    const len7 = b1 & 0x7f;
    const masked = (b1 & 0x80) !== 0;
    const total = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
    // headLen is exactly 2 the first time need(2) succeeds: the check runs before more is read.
    if (this.headLen === 2) this.checkFirstBytes(b0, masked, len7);
    if (!need(total)) return off;

    let length = len7;
    let p = 2;
    if (len7 === 126) {
      length = this.head.readUInt16BE(2);
      p = 4;
    } else if (len7 === 127) {
      const hi = this.head.readUInt32BE(2);
      const lo = this.head.readUInt32BE(6);
      if (hi & 0x80000000) throw new WsProtocolError('WebSocket frame length has its most significant bit set (RFC 6455 §5.2 forbids it)');
      // 2^53 and above cannot be counted exactly; no real peer sends such a frame.
      if (hi >= 0x200000) throw new WsProtocolError(`WebSocket frame length ${BigInt(hi) * 2n ** 32n + BigInt(lo)} exceeds 2^53 - 1 bytes`, CLOSE_CODE.TOO_BIG);
      length = hi * 0x100000000 + lo;
      p = 10;
    }
    if (length > this.maxPayload) throw new WsProtocolError(`WebSocket frame payload of ${length} bytes exceeds the limit of ${this.maxPayload} bytes`, CLOSE_CODE.TOO_BIG);
    if (masked) this.head.copy(this.mask, 0, p, p + 4);

    this.fin = (b0 & 0x80) !== 0;
    this.opcode = b0 & 0x0f;
    this.masked = masked;
    this.length = length;
    this.offset = 0;
    this.headLen = 0;
    if (!isControl(this.opcode)) this.inMessage = !this.fin;
    if (length === 0) {
      out.push(this.pieceOf(Buffer.alloc(0), true, true));
      this.remaining = -1;
    } else {
      this.remaining = length;
    }
    return off;
  }

  /** Everything decidable from the first two bytes, checked before waiting for the rest. */
  private checkFirstBytes(b0: number, masked: boolean, len7: number): void {
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    if (b0 & 0x70) throw new WsProtocolError(`WebSocket frame has reserved bits set (0x${(b0 & 0x70).toString(16)}) but no extension was negotiated`);
    if ((opcode > 0x2 && opcode < 0x8) || opcode > 0xa) throw new WsProtocolError(`WebSocket frame has reserved opcode 0x${opcode.toString(16)}`);
    if (isControl(opcode)) {
      if (!fin) throw new WsProtocolError(`WebSocket control frame (opcode 0x${opcode.toString(16)}) is fragmented`);
      if (len7 > MAX_CONTROL) throw new WsProtocolError(`WebSocket control frame (opcode 0x${opcode.toString(16)}) is longer than ${MAX_CONTROL} bytes`);
    } else if (opcode === OP.CONTINUATION && !this.inMessage) {
      throw new WsProtocolError('WebSocket continuation frame without a fragmented message to continue');
    } else if (opcode !== OP.CONTINUATION && this.inMessage) {
      throw new WsProtocolError('WebSocket data frame starts a new message before the fragmented one ended');
    }
    if (this.requireMask === true && !masked) throw new WsProtocolError('WebSocket frame from the client is not masked (RFC 6455 §5.1 requires it)');
    if (this.requireMask === false && masked) throw new WsProtocolError('WebSocket frame from the server is masked (RFC 6455 §5.1 forbids it)');
  }

  private unmask(src: Buffer): Buffer {
    if (!this.masked) return src;
    const out = Buffer.allocUnsafe(src.length);
    const m = this.mask;
    const phase = this.offset & 3;
    for (let i = 0; i < src.length; i++) out[i] = src[i]! ^ m[(phase + i) & 3]!;
    return out;
  }
}

/**
 * Whole-frame parser: push() returns the frames the chunk completes. Holds at most one frame
 * (bounded by maxPayload, default 1 MiB) between calls; use WsStreamParser where frames may be
 * larger than what may be held.
 */
export class WsFrameParser {
  private readonly stream: WsStreamParser;
  private parts: Buffer[] = [];
  private held = 0;

  constructor(opts: WsParserOptions = {}) {
    this.stream = new WsStreamParser({ ...opts, maxPayload: checkLimit(opts.maxPayload, 1024 * 1024, 'maxPayload') });
  }

  get buffered(): number {
    return this.stream.buffered + this.held;
  }

  push(chunk: Buffer): WsFrame[] {
    const out: WsFrame[] = [];
    for (const p of this.stream.push(chunk)) {
      if (p.first && p.last) {
        out.push({ fin: p.fin, opcode: p.opcode, masked: p.masked, payload: p.piece });
        continue;
      }
      this.parts.push(p.piece);
      this.held += p.piece.length;
      if (p.last) {
        out.push({ fin: p.fin, opcode: p.opcode, masked: p.masked, payload: Buffer.concat(this.parts, this.held) });
        this.parts = [];
        this.held = 0;
      }
    }
    return out;
  }
}

/** A whole message: a data message (TEXT or BINARY, fragments joined) or a control frame. */
export interface WsMessage {
  opcode: number;
  data: Buffer;
}

/**
 * Joins fragmented data messages, up to maxMessage bytes (default 1 MiB; more is an error, 1009).
 * Control frames, which may come between fragments, pass through at once.
 */
export class WsMessageAssembler {
  private readonly maxMessage: number;
  private opcode = -1;
  private parts: Buffer[] = [];
  private held = 0;
  private failed: WsProtocolError | null = null;

  constructor(opts: { maxMessage?: number } = {}) {
    this.maxMessage = checkLimit(opts.maxMessage, 1024 * 1024, 'maxMessage');
  }

  get buffered(): number {
    return this.held;
  }

  /** The message `frame` completes, or null. */
  push(frame: WsFrame): WsMessage | null {
    if (this.failed) throw this.failed;
    if (isControl(frame.opcode)) return { opcode: frame.opcode, data: frame.payload };
    if (frame.opcode === OP.CONTINUATION) {
      if (this.opcode < 0) return this.fail(new WsProtocolError('WebSocket continuation frame without a fragmented message to continue'));
    } else {
      if (this.opcode >= 0) return this.fail(new WsProtocolError('WebSocket data frame starts a new message before the fragmented one ended'));
      this.opcode = frame.opcode;
    }
    if (this.held + frame.payload.length > this.maxMessage) {
      return this.fail(new WsProtocolError(`WebSocket message of more than ${this.maxMessage} bytes exceeds the limit`, CLOSE_CODE.TOO_BIG));
    }
    this.parts.push(frame.payload);
    this.held += frame.payload.length;
    if (!frame.fin) return null;
    const msg = { opcode: this.opcode, data: this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.held) };
    this.opcode = -1;
    this.parts = [];
    this.held = 0;
    return msg;
  }

  private fail(e: WsProtocolError): never {
    this.failed = e;
    throw e;
  }
}

export interface EncodeOptions {
  /** 4-byte masking key: a client's frames must be masked (§5.3) */
  mask?: Buffer;
  /** default true */
  fin?: boolean;
  /** reserved bits RSV1..RSV3 as a 3-bit number; for tests of peers' validation */
  rsv?: number;
}

/**
 * One frame, with the shortest length encoding. Encodes what it is told (any opcode, long
 * control payloads): validation is the parser's job, and tests need invalid frames too.
 */
export function encodeFrame(opcode: number, payload: Buffer | string, opts: EncodeOptions = {}): Buffer {
  if (!Number.isInteger(opcode) || opcode < 0 || opcode > 0xf) throw new RangeError(`WebSocket opcode must be 0..15, got ${opcode}`);
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const mask = opts.mask;
  if (mask !== undefined && mask.length !== 4) throw new RangeError(`WebSocket masking key must be 4 bytes, got ${mask.length}`);
  const rsv = opts.rsv ?? 0;
  if (!Number.isInteger(rsv) || rsv < 0 || rsv > 7) throw new RangeError(`rsv must be 0..7, got ${rsv}`);
  const len = data.length;
  const ext = len < 126 ? 0 : len < 0x10000 ? 2 : 8;
  const headLen = 2 + ext + (mask ? 4 : 0);
  const out = Buffer.allocUnsafe(headLen + len);
  out[0] = (opts.fin === false ? 0 : 0x80) | (rsv << 4) | opcode;
  out[1] = (mask ? 0x80 : 0) | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) out.writeUInt16BE(len, 2);
  else if (ext === 8) {
    out.writeUInt32BE(Math.floor(len / 0x100000000), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  if (mask) {
    mask.copy(out, 2 + ext);
    for (let i = 0; i < len; i++) out[headLen + i] = data[i]! ^ mask[i & 3]!;
  } else {
    data.copy(out, headLen);
  }
  return out;
}

/** A close frame's payload: the code and a reason cut to fit the 125-byte control limit. */
export function closePayload(code: number, reason = ''): Buffer {
  let r = Buffer.from(reason);
  if (r.length > MAX_CONTROL - 2) r = Buffer.from(r.subarray(0, MAX_CONTROL - 2).toString().replace(/\uFFFD+$/, ''));
  const out = Buffer.alloc(2 + r.length);
  out.writeUInt16BE(code, 0);
  r.copy(out, 2);
  return out;
}

/** Reads a close frame's payload: empty (no code), or a code and a UTF-8 reason; one byte is malformed. */
export function parseClose(payload: Buffer): { code?: number; reason: string } {
  if (payload.length === 0) return { reason: '' };
  if (payload.length === 1) throw new WsProtocolError('WebSocket close frame with a 1-byte payload (a close code takes 2)');
  return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') };
}

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (§4.2.2). */
export function acceptKey(secWebSocketKey: string): string {
  return createHash('sha1').update(secWebSocketKey + GUID).digest('base64');
}
