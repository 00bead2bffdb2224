// Pure PostgreSQL v3 wire codec: framing, decoding of the messages the gateway inspects,
// and encoding of the messages it writes itself. No sockets, no I/O.

export class ProtocolError extends Error {
  constructor(message: string, public readonly sqlstate = '08P01') {
    super(message);
    this.name = 'ProtocolError';
  }
}

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;
export const PROTOCOL_3 = 196608;
/** PostgreSQL's own limit for a startup packet. */
export const MAX_STARTUP_LENGTH = 10000;
export const MAX_STARTUP_PARAMS = 64;

export interface FrameSink {
  /**
   * Called when a message header has been read. Return true to receive the whole frame
   * (header included) in onFrame; false to have its bytes streamed through onBytes as they
   * arrive, so a large message is never buffered whole.
   */
  want(type: number, bodyLength: number): boolean;
  onFrame(type: number, frame: Buffer): void;
  onBytes(bytes: Buffer): void;
  /** Called once a streamed (unwanted) message has fully passed. */
  onSkipped?(type: number, bodyLength: number): void;
}

/**
 * Incremental framer for typed messages (1-byte type, int32 length including itself).
 * Complete frames inside one chunk are handed out as zero-copy views.
 */
export class FrameScanner {
  private hdr = Buffer.alloc(5);
  private hdrFill = 0;
  private type = 0;
  private bodyLen = 0;
  private remaining = 0;
  private collecting: Buffer[] | null = null;
  private streaming = false;

  constructor(private readonly sink: FrameSink, private readonly maxLength: number) {}

  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    while (off < n) {
      if (this.remaining === 0 && !this.streaming && this.collecting === null) {
        // Fast path: a whole frame inside the chunk.
        if (this.hdrFill === 0 && n - off >= 5) {
          const type = chunk[off]!;
          const len = chunk.readInt32BE(off + 1);
          this.check(type, len);
          const body = len - 4;
          if (n - off - 5 >= body) {
            if (this.sink.want(type, body)) this.sink.onFrame(type, chunk.subarray(off, off + 5 + body));
            else {
              this.sink.onBytes(chunk.subarray(off, off + 5 + body));
              this.sink.onSkipped?.(type, body);
            }
            off += 5 + body;
            continue;
          }
          this.begin(type, body, chunk.subarray(off, off + 5));
          off += 5;
          continue;
        }
        // Header split across chunks.
        const take = Math.min(5 - this.hdrFill, n - off);
        chunk.copy(this.hdr, this.hdrFill, off, off + take);
        this.hdrFill += take;
        off += take;
        if (this.hdrFill < 5) return;
        this.hdrFill = 0;
        const type = this.hdr[0]!;
        const len = this.hdr.readInt32BE(1);
        this.check(type, len);
        this.begin(type, len - 4, Buffer.from(this.hdr));
        if (len - 4 === 0) this.finish();
        continue;
      }
      const take = Math.min(this.remaining, n - off);
      const part = chunk.subarray(off, off + take);
      if (this.streaming) this.sink.onBytes(part);
      else this.collecting!.push(take === n ? part : Buffer.from(part));
      this.remaining -= take;
      off += take;
      if (this.remaining === 0) this.finish();
    }
  }

  /** True when no partial message is pending (a clean point to close at). */
  get idle(): boolean {
    return this.hdrFill === 0 && this.remaining === 0 && this.collecting === null && !this.streaming;
  }

  private check(type: number, len: number): void {
    if (len < 4 || len - 4 > this.maxLength) {
      throw new ProtocolError(`invalid message length ${len} for message type "${printable(type)}"`);
    }
  }

  private begin(type: number, body: number, header: Buffer): void {
    this.type = type;
    this.bodyLen = body;
    this.remaining = body;
    if (this.sink.want(type, body)) {
      // Copy the header: it may be a view into a chunk that the caller reuses.
      this.collecting = [Buffer.from(header)];
      this.streaming = false;
    } else {
      this.streaming = true;
      this.sink.onBytes(header);
    }
    if (body === 0) this.finish();
  }

  private finish(): void {
    if (this.streaming) {
      this.streaming = false;
      this.sink.onSkipped?.(this.type, this.bodyLen);
    } else if (this.collecting) {
      const frame = Buffer.concat(this.collecting);
      this.collecting = null;
      this.sink.onFrame(this.type, frame);
    }
  }
}

function printable(type: number): string {
  return type >= 0x20 && type < 0x7f ? String.fromCharCode(type) : `0x${type.toString(16)}`;
}

/** Reads the fields of a message body with bounds checks that raise ProtocolError. */
export class BodyReader {
  off: number;
  constructor(private readonly buf: Buffer, start = 5) {
    this.off = start;
  }
  get left(): number {
    return this.buf.length - this.off;
  }
  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.off);
    this.off += 2;
    return v;
  }
  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.off);
    this.off += 4;
    return v;
  }
  byte(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.off);
    if (end < 0) throw new ProtocolError('unterminated string in message');
    const s = this.buf.toString('utf8', this.off, end);
    this.off = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  private need(n: number): void {
    if (n < 0 || this.off + n > this.buf.length) throw new ProtocolError('message shorter than its contents');
  }
}

// ---------- untyped startup-phase packets ----------

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'startup'; params: Map<string, string> };

/** Decodes a complete startup-phase packet (length prefix included). */
export function decodeStartupPacket(packet: Buffer): StartupPacket {
  if (packet.length < 8) throw new ProtocolError('invalid startup packet length');
  const code = packet.readInt32BE(4);
  if (code === SSL_REQUEST) return { kind: 'ssl' };
  if (code === GSSENC_REQUEST) return { kind: 'gssenc' };
  if (code === CANCEL_REQUEST) {
    if (packet.length !== 16) throw new ProtocolError('invalid cancel request length');
    return { kind: 'cancel', pid: packet.readInt32BE(8), secret: packet.readInt32BE(12) };
  }
  if (code >> 16 !== 3) {
    throw new ProtocolError(`unsupported frontend protocol ${code >> 16}.${code & 0xffff}: server supports 3.0`, '0A000');
  }
  const params = new Map<string, string>();
  const r = new BodyReader(packet, 8);
  while (r.left > 1) {
    const k = r.cstring();
    const v = r.cstring();
    if (params.size >= MAX_STARTUP_PARAMS) throw new ProtocolError(`too many startup parameters (limit ${MAX_STARTUP_PARAMS})`);
    params.set(k, v);
  }
  if (r.left !== 1 || packet[packet.length - 1] !== 0) throw new ProtocolError('invalid startup packet layout');
  return { kind: 'startup', params };
}

export function encodeStartup(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(k + '\0' + v + '\0'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const out = Buffer.alloc(8 + body.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(PROTOCOL_3, 4);
  body.copy(out, 8);
  return out;
}

export function encodeSslRequest(): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(SSL_REQUEST, 4);
  return b;
}

export function encodeCancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  return b;
}

// ---------- typed message encoding ----------

export function frame(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
}

function cstr(s: string): Buffer {
  return Buffer.from(s.replace(/\0/g, '') + '\0', 'utf8');
}

export const authOk = (): Buffer => frame('R', int32(0));
export const authCleartext = (): Buffer => frame('R', int32(3));
export function authSasl(mechanisms: string[]): Buffer {
  return frame('R', Buffer.concat([int32(10), ...mechanisms.map(cstr), Buffer.from([0])]));
}
export const authSaslContinue = (data: string): Buffer => frame('R', Buffer.concat([int32(11), Buffer.from(data)]));
export const authSaslFinal = (data: string): Buffer => frame('R', Buffer.concat([int32(12), Buffer.from(data)]));
export const parameterStatus = (k: string, v: string): Buffer => frame('S', Buffer.concat([cstr(k), cstr(v)]));
export const backendKeyData = (pid: number, secret: number): Buffer => frame('K', Buffer.concat([int32(pid), int32(secret)]));
export const readyForQuery = (status: 'I' | 'T' | 'E'): Buffer => frame('Z', Buffer.from(status));

export interface ErrorFields {
  severity: 'ERROR' | 'FATAL' | 'NOTICE' | 'WARNING' | 'INFO';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function fieldsBody(f: ErrorFields): Buffer {
  const parts = [
    Buffer.from('S'), cstr(f.severity),
    Buffer.from('V'), cstr(f.severity),
    Buffer.from('C'), cstr(f.code),
    Buffer.from('M'), cstr(f.message),
  ];
  if (f.detail) parts.push(Buffer.from('D'), cstr(f.detail));
  if (f.hint) parts.push(Buffer.from('H'), cstr(f.hint));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

export const errorResponse = (f: ErrorFields): Buffer => frame('E', fieldsBody(f));
export const noticeResponse = (f: ErrorFields): Buffer => frame('N', fieldsBody(f));

// ---------- typed message decoding (bodies the gateway inspects) ----------

export interface Fields {
  severity?: string;
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
  [k: string]: string | undefined;
}

const FIELD_NAMES: Record<string, string> = { S: 'severityLocalized', V: 'severity', C: 'code', M: 'message', D: 'detail', H: 'hint', P: 'position', W: 'where', s: 'schema', t: 'table', c: 'column', n: 'constraint' };

/** ErrorResponse / NoticeResponse. */
export function decodeFields(frameBuf: Buffer): Fields {
  const r = new BodyReader(frameBuf);
  const out: Fields = {};
  while (r.left > 0) {
    const t = r.byte();
    if (t === 0) break;
    const v = r.cstring();
    const name = FIELD_NAMES[String.fromCharCode(t)];
    if (name) out[name] = v;
  }
  if (!out.severity) out.severity = out.severityLocalized;
  return out;
}

export function decodeQuery(f: Buffer): string {
  return new BodyReader(f).cstring();
}

export interface ParseMsg { name: string; text: string; paramTypes: number[] }
export function decodeParse(f: Buffer): ParseMsg {
  const r = new BodyReader(f);
  const name = r.cstring();
  const text = r.cstring();
  const n = r.int16();
  if (n < 0) throw new ProtocolError('negative parameter type count');
  const paramTypes: number[] = [];
  for (let i = 0; i < n; i++) paramTypes.push(r.int32());
  return { name, text, paramTypes };
}

export interface BindMsg { portal: string; statement: string; formats: number[]; params: (Buffer | null)[]; resultFormats: number[] }
export function decodeBind(f: Buffer): BindMsg {
  const r = new BodyReader(f);
  const portal = r.cstring();
  const statement = r.cstring();
  const nf = r.int16();
  if (nf < 0) throw new ProtocolError('negative format count');
  const formats: number[] = [];
  for (let i = 0; i < nf; i++) formats.push(r.int16());
  const np = r.int16();
  if (np < 0) throw new ProtocolError('negative parameter count');
  const params: (Buffer | null)[] = [];
  for (let i = 0; i < np; i++) {
    const len = r.int32();
    params.push(len === -1 ? null : r.bytes(len));
  }
  const nr = r.int16();
  if (nr < 0) throw new ProtocolError('negative result format count');
  const resultFormats: number[] = [];
  for (let i = 0; i < nr; i++) resultFormats.push(r.int16());
  return { portal, statement, formats, params, resultFormats };
}

export function decodeExecute(f: Buffer): { portal: string; maxRows: number } {
  const r = new BodyReader(f);
  return { portal: r.cstring(), maxRows: r.int32() };
}

/** Close ('C' from the client) and Describe ('D' from the client) share a layout. */
export function decodeTarget(f: Buffer): { kind: 'S' | 'P'; name: string } {
  const r = new BodyReader(f);
  const k = String.fromCharCode(r.byte());
  if (k !== 'S' && k !== 'P') throw new ProtocolError(`invalid target kind "${k}"`);
  return { kind: k, name: r.cstring() };
}

export function decodeCommandComplete(f: Buffer): string {
  return new BodyReader(f).cstring();
}

export interface PgColumn {
  name: string;
  /** 0 when the column is not a plain table column (an expression) */
  tableOid: number;
  attnum: number;
  typeOid: number;
  format: number;
}

export function decodeRowDescription(f: Buffer): PgColumn[] {
  const r = new BodyReader(f);
  const n = r.int16();
  const cols: PgColumn[] = [];
  for (let i = 0; i < n; i++) {
    const name = r.cstring();
    const tableOid = r.int32() >>> 0;
    const attnum = r.int16();
    const typeOid = r.int32() >>> 0;
    r.int16(); // type size
    r.int32(); // type modifier
    cols.push({ name, tableOid, attnum, typeOid, format: r.int16() });
  }
  return cols;
}

export function encodeDataRow(values: readonly (Buffer | null)[]): Buffer {
  let len = 4 + 2;
  for (const v of values) len += 4 + (v ? v.length : 0);
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = 0x44;
  out.writeInt32BE(len, 1);
  out.writeInt16BE(values.length, 5);
  let off = 7;
  for (const v of values) {
    if (v === null) {
      out.writeInt32BE(-1, off);
      off += 4;
    } else {
      out.writeInt32BE(v.length, off);
      v.copy(out, off + 4);
      off += 4 + v.length;
    }
  }
  return out;
}

/**
 * Re-encodes an ErrorResponse/NoticeResponse with some field values changed (e.g. masked),
 * keeping every other field as the server sent it. Returns the input when nothing changed.
 */
export function rewriteFields(f: Buffer, change: (code: string, value: string) => string): Buffer {
  const r = new BodyReader(f);
  const parts: Buffer[] = [];
  let changed = false;
  while (r.left > 0) {
    const t = r.byte();
    if (t === 0) break;
    const code = String.fromCharCode(t);
    const v = r.cstring();
    const nv = change(code, v);
    if (nv !== v) changed = true;
    parts.push(Buffer.from([t]), cstr(nv));
  }
  if (!changed) return f;
  return frame(String.fromCharCode(f[0]!), Buffer.concat([...parts, Buffer.from([0])]));
}

export function encodeNotification(pid: number, channel: string, payload: string): Buffer {
  return frame('A', Buffer.concat([int32(pid), cstr(channel), cstr(payload)]));
}

export function decodeDataRow(f: Buffer): (Buffer | null)[] {
  const r = new BodyReader(f);
  const n = r.int16();
  const vals: (Buffer | null)[] = [];
  for (let i = 0; i < n; i++) {
    const len = r.int32();
    vals.push(len === -1 ? null : r.bytes(len));
  }
  return vals;
}

export function decodeNotification(f: Buffer): { pid: number; channel: string; payload: string } {
  const r = new BodyReader(f);
  return { pid: r.int32(), channel: r.cstring(), payload: r.cstring() };
}

export function decodeParameterStatus(f: Buffer): [string, string] {
  const r = new BodyReader(f);
  return [r.cstring(), r.cstring()];
}

export function decodeBackendKeyData(f: Buffer): { pid: number; secret: number } {
  const r = new BodyReader(f);
  return { pid: r.int32(), secret: r.int32() };
}

/** The row count at the end of a command tag ("INSERT 0 5" → 5), or null for tags without one. */
export function tagRows(tag: string): number | null {
  const m = /\s(\d+)$/.exec(tag);
  return m ? Number(m[1]) : null;
}
