// Pure MySQL/MariaDB client/server protocol framing and primitive field codecs. No sockets,
// no I/O. Every length read from the wire is checked against the bytes actually present (and,
// for framing, against a configured bound) before anything is allocated or sliced, so a hostile
// peer can only make us fail with a ProtocolError, never over-read or balloon memory.
//
// Wire format (Protocol::Packet): int<3> payload_length (little-endian), int<1> sequence_id,
// payload. A payload of 0xffffff bytes or more is split into 0xffffff-byte packets followed by
// a shorter one (an empty one when the length is an exact multiple), with consecutive ids.

/** Largest payload one physical packet can carry; a packet this long means "more follows". */
export const MAX_PACKET_PAYLOAD = 0xffffff;
/** Default bound for one reassembled logical message (MySQL's own max_allowed_packet ceiling is 1 GiB). */
export const DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024;

export const ER_NET_PACKET_TOO_LARGE = 1153;
export const ER_NET_PACKETS_OUT_OF_ORDER = 1156;
export const ER_MALFORMED_PACKET = 1835;

/**
 * A peer violated the wire protocol. `code`/`sqlState` are what the gateway should put in the
 * ERR_Packet it sends before closing (MySQL uses 08S01, "communication link failure", for these).
 */
export class ProtocolError extends Error {
  constructor(message: string, public readonly code = ER_MALFORMED_PACKET, public readonly sqlState = '08S01') {
    super(message);
    this.name = 'ProtocolError';
  }
}

const malformed = (what: string): ProtocolError => new ProtocolError(`malformed packet: ${what}`);

// ---------- framing ----------

/**
 * Receives one logical message. `seq` is the sequence id of its LAST physical packet (the reply
 * must use seq + 1); `firstSeq` that of its first (a client command must start at 0).
 */
export type PacketHandler = (seq: number, payload: Buffer, firstSeq: number) => void;

/**
 * Incremental framer: feed socket chunks to push(), get whole logical messages back.
 * A single-packet message lying inside one chunk is handed out as a zero-copy view of the chunk;
 * anything split across chunks or packets is copied once into a fresh buffer.
 */
export class PacketScanner {
  private readonly hdr = Buffer.alloc(4);
  private hdrFill = 0;
  private inBody = false;
  private remaining = 0;
  private pktSeq = 0;
  private pktLen = 0;
  private firstSeq = 0;
  /** The previous packet was MAX_PACKET_PAYLOAD long: the next one continues the same message. */
  private continuing = false;
  /** Payload bytes of the current message in completed packets plus the current packet's declared length. */
  private total = 0;
  private parts: Buffer[] = [];
  private failed: ProtocolError | null = null;

  constructor(private readonly onPacket: PacketHandler, public readonly maxMessage = DEFAULT_MAX_MESSAGE) {
    if (!Number.isSafeInteger(maxMessage) || maxMessage < 0) throw new RangeError('maxMessage must be a non-negative integer');
  }

  push(chunk: Buffer): void {
    // After a framing error the byte stream has no recoverable boundary: stay failed.
    if (this.failed) throw this.failed;
    try {
      this.scan(chunk);
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = e;
      throw e;
    }
  }

  /** True when no partial message is pending (a clean point to close or hand over at). */
  get idle(): boolean {
    return this.hdrFill === 0 && !this.inBody && !this.continuing;
  }

  private scan(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (!this.inBody) {
        if (this.hdrFill === 0 && n - off >= 4) {
          const len = chunk.readUIntLE(off, 3);
          const seq = chunk[off + 3]!;
          off += 4;
          this.header(len, seq);
          // Fast path: a complete single-packet message inside this chunk.
          if (!this.continuing && len < MAX_PACKET_PAYLOAD && n - off >= len) {
            this.inBody = false;
            this.total = 0;
            this.onPacket(seq, chunk.subarray(off, off + len), seq);
            off += len;
            continue;
          }
        } else {
          const take = Math.min(4 - this.hdrFill, n - off);
          chunk.copy(this.hdr, this.hdrFill, off, off + take);
          this.hdrFill += take;
          off += take;
          if (this.hdrFill < 4) return;
          this.hdrFill = 0;
          this.header(this.hdr.readUIntLE(0, 3), this.hdr[3]!);
        }
        if (this.remaining === 0) this.endPacket();
        continue;
      }
      const take = Math.min(this.remaining, n - off);
      // Copy slices rather than keep views so a small tail does not pin a large socket chunk.
      this.parts.push(take === n ? chunk : Buffer.from(chunk.subarray(off, off + take)));
      this.remaining -= take;
      off += take;
      if (this.remaining === 0) this.endPacket();
    }
  }

  private header(len: number, seq: number): void {
    if (this.continuing) {
      const want = (this.pktSeq + 1) & 0xff;
      if (seq !== want) {
        throw new ProtocolError(`packets out of order: got sequence id ${seq}, expected ${want}`, ER_NET_PACKETS_OUT_OF_ORDER);
      }
    } else {
      this.firstSeq = seq;
      this.total = 0;
    }
    // Checked before any byte of the body is buffered: the bound caps memory, not just output.
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
    const payload = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.total);
    this.total = 0;
    this.onPacket(this.pktSeq, payload, this.firstSeq);
  }
}

/** How many physical packets a payload of this length takes (always at least one). */
export function packetCount(payloadLength: number): number {
  return Math.floor(payloadLength / MAX_PACKET_PAYLOAD) + 1;
}

/** The sequence id that follows a message of this length sent starting at `seq`. */
export function nextSeq(seq: number, payloadLength: number): number {
  return (seq + packetCount(payloadLength)) & 0xff;
}

/**
 * Frames a logical payload, splitting it into 0xffffff-byte packets as needed. A payload whose
 * length is an exact multiple of 0xffffff gets a trailing empty packet, since a full-length packet
 * always tells the reader that more follows.
 */
export function encodePacket(seq: number, payload: Buffer): Buffer {
  if (!Number.isInteger(seq) || seq < 0 || seq > 255) throw new RangeError(`invalid sequence id ${seq}`);
  const n = payload.length;
  const count = packetCount(n);
  const out = Buffer.allocUnsafe(n + 4 * count);
  let o = 0;
  let p = 0;
  for (let i = 0; i < count; i++) {
    const len = Math.min(MAX_PACKET_PAYLOAD, n - p);
    out.writeUIntLE(len, o, 3);
    out[o + 3] = (seq + i) & 0xff;
    payload.copy(out, o + 4, p, p + len);
    o += 4 + len;
    p += len;
  }
  return out;
}

// ---------- length-encoded integers and strings ----------

/** First byte of a length-encoded value meaning SQL NULL (text rows only). */
export const LENENC_NULL = 0xfb;

/**
 * Reads a length-encoded integer at `off`. `value` is null for the 0xfb NULL marker (valid only in
 * text result rows: callers elsewhere must reject it). Values above 2^53 are rejected rather than
 * rounded: every use as a length would be out of bounds anyway; use Reader.lenEncBigInt for ids.
 */
export function readLenEncInt(buf: Buffer, off: number): { value: number | null; next: number } {
  const r = new Reader(buf, off);
  const value = r.lenEncIntOrNull();
  return { value, next: r.off };
}

/** Size in bytes of the length-encoded form of n. */
export function lenEncIntSize(n: number | bigint): number {
  const v = BigInt(n);
  if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`length-encoded integer out of range: ${v}`);
  if (v < 251n) return 1;
  if (v < 0x10000n) return 3;
  if (v < 0x1000000n) return 4;
  return 9;
}

/** Writes the length-encoded form of n into buf at off; returns the offset after it. */
export function writeLenEncIntInto(buf: Buffer, off: number, n: number | bigint): number {
  const size = lenEncIntSize(n);
  if (size === 1) {
    buf[off] = Number(n);
  } else if (size === 3) {
    buf[off] = 0xfc;
    buf.writeUInt16LE(Number(n), off + 1);
  } else if (size === 4) {
    buf[off] = 0xfd;
    buf.writeUIntLE(Number(n), off + 1, 3);
  } else {
    buf[off] = 0xfe;
    buf.writeBigUInt64LE(BigInt(n), off + 1);
  }
  return off + size;
}

export function writeLenEncInt(n: number | bigint): Buffer {
  const b = Buffer.allocUnsafe(lenEncIntSize(n));
  writeLenEncIntInto(b, 0, n);
  return b;
}

export function writeLenEncBytes(data: Buffer | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const out = Buffer.allocUnsafe(lenEncIntSize(b.length) + b.length);
  b.copy(out, writeLenEncIntInto(out, 0, b.length));
  return out;
}

// ---------- reader / writer ----------

/** Sequential reader over a payload; every read is bounds-checked and raises ProtocolError. */
export class Reader {
  off: number;
  constructor(public readonly buf: Buffer, start = 0) {
    this.off = start;
  }
  get left(): number {
    return this.buf.length - this.off;
  }
  get atEnd(): boolean {
    return this.off >= this.buf.length;
  }
  peek(): number {
    this.need(1);
    return this.buf[this.off]!;
  }
  u8(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16LE(this.off);
    this.off += 2;
    return v;
  }
  u24(): number {
    this.need(3);
    const v = this.buf.readUIntLE(this.off, 3);
    this.off += 3;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.off);
    this.off += 8;
    return v;
  }
  skip(n: number): void {
    this.need(n);
    this.off += n;
  }
  /** Zero-copy view of the next n bytes. */
  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  /** Zero-copy view of everything left (string<EOF>). */
  rest(): Buffer {
    const b = this.buf.subarray(this.off);
    this.off = this.buf.length;
    return b;
  }
  /**
   * NUL-terminated bytes (terminator consumed, not returned), at most `max` bytes long. The search
   * is bounded too, so an unterminated field costs at most `max` bytes of scanning.
   */
  nulBytes(max: number, what = 'string'): Buffer {
    const limit = Math.min(this.buf.length, this.off + max + 1);
    const rel = this.buf.subarray(this.off, limit).indexOf(0);
    if (rel < 0) {
      if (limit === this.buf.length && this.buf.length - this.off <= max) throw malformed(`unterminated ${what}`);
      throw malformed(`${what} longer than ${max} bytes`);
    }
    const b = this.buf.subarray(this.off, this.off + rel);
    this.off += rel + 1;
    return b;
  }
  cstring(max: number, what = 'string'): string {
    return this.nulBytes(max, what).toString('utf8');
  }
  lenEncIntOrNull(): number | null {
    const first = this.u8();
    if (first < 0xfb) return first;
    switch (first) {
      case 0xfb:
        return null;
      case 0xfc:
        return this.u16();
      case 0xfd:
        return this.u24();
      case 0xfe: {
        const v = this.u64();
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(`length-encoded integer ${v} too large`);
        return Number(v);
      }
      default:
        // 0xff is not a valid first byte: in a row it would have been an ERR_Packet.
        throw malformed('invalid length-encoded integer prefix 0xff');
    }
  }
  lenEncInt(): number {
    const v = this.lenEncIntOrNull();
    if (v === null) throw malformed('unexpected NULL marker');
    return v;
  }
  /** Full 64-bit range, for last_insert_id and other values that are not lengths. */
  lenEncBigInt(): bigint {
    const first = this.peek();
    if (first === 0xfe) {
      this.off++;
      return this.u64();
    }
    return BigInt(this.lenEncInt());
  }
  lenEncBytesOrNull(max = Number.MAX_SAFE_INTEGER): Buffer | null {
    const n = this.lenEncIntOrNull();
    if (n === null) return null;
    if (n > max) throw malformed(`field of ${n} bytes exceeds ${max}`);
    return this.bytes(n);
  }
  lenEncBytes(max = Number.MAX_SAFE_INTEGER): Buffer {
    const b = this.lenEncBytesOrNull(max);
    if (b === null) throw malformed('unexpected NULL marker');
    return b;
  }
  lenEncString(max = Number.MAX_SAFE_INTEGER): string {
    return this.lenEncBytes(max).toString('utf8');
  }
  /** Asserts the payload has been consumed exactly. */
  end(what: string): void {
    if (this.off !== this.buf.length) throw malformed(`${this.buf.length - this.off} unexpected trailing bytes in ${what}`);
  }
  private need(n: number): void {
    if (n < 0 || this.off + n > this.buf.length) throw malformed('packet shorter than its contents');
  }
}

/** Accumulates a payload from parts; finish() concatenates once. */
export class Writer {
  private parts: Buffer[] = [];
  private len = 0;
  get length(): number {
    return this.len;
  }
  bytes(b: Buffer): this {
    this.parts.push(b);
    this.len += b.length;
    return this;
  }
  u8(v: number): this {
    return this.bytes(Buffer.from([v & 0xff]));
  }
  u16(v: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE(v, 0);
    return this.bytes(b);
  }
  u24(v: number): this {
    const b = Buffer.allocUnsafe(3);
    b.writeUIntLE(v, 0, 3);
    return this.bytes(b);
  }
  u32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v >>> 0, 0);
    return this.bytes(b);
  }
  u64(v: number | bigint): this {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt(v), 0);
    return this.bytes(b);
  }
  zeros(n: number): this {
    return this.bytes(Buffer.alloc(n));
  }
  lenEncInt(v: number | bigint): this {
    return this.bytes(writeLenEncInt(v));
  }
  lenEncBytes(v: Buffer | string): this {
    return this.bytes(writeLenEncBytes(v));
  }
  /** NUL-terminated; an embedded NUL would silently truncate the field for the reader, so refuse it. */
  cstring(v: Buffer | string): this {
    const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    if (b.includes(0)) throw new RangeError('NUL byte inside a NUL-terminated field');
    this.bytes(b);
    return this.u8(0);
  }
  finish(): Buffer {
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.len);
  }
}
