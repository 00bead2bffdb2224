// SFTP version 3 (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it) on the wire: packet framing
// and the fields of requests and responses the gateway needs to record and guard operations.
// Pure: no I/O. Every length is bounded by the packet it sits in, and the packet by
// MAX_PACKET_LENGTH; malformed input raises SftpCodecError, never anything else.
//
// Packet: uint32 length, byte type, then (except INIT and VERSION) uint32 request id, then the
// type's fields. Strings are uint32 length + bytes; uint64 is 8 bytes big-endian.

/**
 * Largest packet body accepted (the uint32 length field): OpenSSH's own limit (SFTP_MAX_MSG_LENGTH,
 * 256 KiB; its client sizes reads and writes to fit) plus 1 KiB of headroom for other
 * implementations' headers.
 */
export const MAX_PACKET_LENGTH = 256 * 1024 + 1024;
/** Paths longer than this are not recorded whole (PATH_MAX on Linux is 4096). */
export const MAX_PATH_BYTES = 4096;
/** Handles are at most 256 bytes (filexfer-02, section 6.2). */
export const MAX_HANDLE_BYTES = 256;

export const FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201,
} as const;

export const FX = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

const FX_NAMES = ['SSH_FX_OK', 'SSH_FX_EOF', 'SSH_FX_NO_SUCH_FILE', 'SSH_FX_PERMISSION_DENIED', 'SSH_FX_FAILURE', 'SSH_FX_BAD_MESSAGE', 'SSH_FX_NO_CONNECTION', 'SSH_FX_CONNECTION_LOST', 'SSH_FX_OP_UNSUPPORTED'];

export function statusName(code: number): string {
  return FX_NAMES[code] ?? `SSH_FX_${code}`;
}

/** OPEN pflags */
export const PFLAG = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

/** ATTRS flags */
const ATTR = { SIZE: 0x1, UIDGID: 0x2, PERMISSIONS: 0x4, ACMODTIME: 0x8, EXTENDED: 0x80000000 } as const;

/** Malformed SFTP input. `id` is the request id when it could be read (to answer the request). */
export class SftpCodecError extends Error {
  constructor(
    message: string,
    readonly id?: number,
  ) {
    super(message);
    this.name = 'SftpCodecError';
  }
}

/** Reassembles whole packets (length field included) from a byte stream. Holds at most one packet. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private total = 0;
  private need = -1;
  private failed: SftpCodecError | null = null;

  constructor(private readonly max = MAX_PACKET_LENGTH) {}

  /** bytes held (an incomplete packet) */
  get buffered(): number {
    return this.total;
  }

  /** Returns the packets completed by `chunk`. Throws SftpCodecError on a length out of bounds (and from then on). */
  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    const out: Buffer[] = [];
    let buf = chunk;
    // Fast path: whole packets sitting in the chunk are sliced, not copied.
    if (this.total === 0) {
      let off = 0;
      while (buf.length - off >= 4) {
        const len = this.checkLength(buf.readUInt32BE(off));
        if (buf.length - off < 4 + len) break;
        out.push(buf.subarray(off, off + 4 + len));
        off += 4 + len;
      }
      if (off === buf.length) return out;
      buf = buf.subarray(off);
    }
    this.chunks.push(buf);
    this.total += buf.length;
    for (;;) {
      if (this.need < 0) {
        if (this.total < 4) return out;
        const head = this.chunks[0]!.length >= 4 ? this.chunks[0]! : Buffer.concat(this.chunks);
        this.need = 4 + this.checkLength(head.readUInt32BE(0));
      }
      if (this.total < this.need) return out;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.total);
      out.push(all.subarray(0, this.need));
      const rest = all.subarray(this.need);
      this.chunks = rest.length ? [rest] : [];
      this.total = rest.length;
      this.need = -1;
    }
  }

  private checkLength(len: number): number {
    if (len < 1 || len > this.max) {
      this.failed = new SftpCodecError(len < 1 ? 'empty SFTP packet' : `SFTP packet length ${len} exceeds the limit of ${this.max} bytes`);
      throw this.failed;
    }
    return len;
  }
}

/** Reads fields of one packet; every read is bounds-checked. */
export class Fields {
  off: number;
  id: number | undefined;
  constructor(
    readonly buf: Buffer,
    off = 0,
  ) {
    this.off = off;
  }
  get remaining(): number {
    return this.buf.length - this.off;
  }
  private need(n: number, what: string): void {
    if (this.remaining < n) throw new SftpCodecError(`truncated SFTP packet: ${what} needs ${n} bytes, ${this.remaining} left`, this.id);
  }
  byte(what: string): number {
    this.need(1, what);
    return this.buf[this.off++]!;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }
  bytes(what: string, max = Infinity): Buffer {
    const len = this.u32(`${what} length`);
    if (len > max) throw new SftpCodecError(`${what} is ${len} bytes, more than ${max}`, this.id);
    this.need(len, what);
    const v = this.buf.subarray(this.off, this.off + len);
    this.off += len;
    return v;
  }
  /** a string's length only, skipping its bytes */
  skipString(what: string): number {
    const len = this.u32(`${what} length`);
    this.need(len, what);
    this.off += len;
    return len;
  }
  text(what: string): string {
    return this.bytes(what).toString('utf8');
  }
}

export interface Attrs {
  size?: bigint;
  uid?: number;
  gid?: number;
  permissions?: number;
  atime?: number;
  mtime?: number;
  /** number of extended attribute pairs */
  extended?: number;
}

export function readAttrs(f: Fields): Attrs {
  const flags = f.u32('attrs flags');
  const a: Attrs = {};
  if (flags & ATTR.SIZE) a.size = f.u64('attrs size');
  if (flags & ATTR.UIDGID) {
    a.uid = f.u32('attrs uid');
    a.gid = f.u32('attrs gid');
  }
  if (flags & ATTR.PERMISSIONS) a.permissions = f.u32('attrs permissions');
  if (flags & ATTR.ACMODTIME) {
    a.atime = f.u32('attrs atime');
    a.mtime = f.u32('attrs mtime');
  }
  if (flags & ATTR.EXTENDED) {
    const n = f.u32('attrs extended count');
    // each pair is at least two empty strings: 8 bytes
    if (n > f.remaining / 8) throw new SftpCodecError(`attrs extended count ${n} does not fit the packet`, f.id);
    for (let i = 0; i < n; i++) {
      f.skipString('attrs extended type');
      f.skipString('attrs extended data');
    }
    a.extended = n;
  }
  return a;
}

/** Attributes as a short text: `mode=0644 uid=0 gid=0 size=10 mtime=…`. */
export function describeAttrs(a: Attrs): string {
  const parts: string[] = [];
  if (a.permissions !== undefined) parts.push(`mode=${(a.permissions & 0o7777).toString(8).padStart(4, '0')}`);
  if (a.uid !== undefined) parts.push(`uid=${a.uid} gid=${a.gid}`);
  if (a.size !== undefined) parts.push(`size=${a.size}`);
  if (a.atime !== undefined) parts.push(`atime=${a.atime} mtime=${a.mtime}`);
  if (a.extended !== undefined) parts.push(`extended=${a.extended}`);
  return parts.join(' ');
}

export type Request =
  | { type: 'init'; version: number }
  | { type: 'open'; id: number; path: string; pflags: number; attrs: Attrs }
  | { type: 'close'; id: number; handle: Buffer }
  | { type: 'read'; id: number; handle: Buffer; length: number }
  | { type: 'write'; id: number; handle: Buffer; length: number }
  | { type: 'fstat' | 'readdir'; id: number; handle: Buffer }
  | { type: 'fsetstat'; id: number; handle: Buffer; attrs: Attrs }
  | { type: 'setstat'; id: number; path: string; attrs: Attrs }
  | { type: 'lstat' | 'stat' | 'opendir' | 'remove' | 'rmdir' | 'realpath' | 'readlink'; id: number; path: string }
  | { type: 'mkdir'; id: number; path: string; attrs: Attrs }
  | { type: 'rename'; id: number; from: string; to: string }
  /** as OpenSSH sends it: the link's target first, then the link's path */
  | { type: 'symlink'; id: number; target: string; link: string }
  | { type: 'extended'; id: number; name: string; ext: Extended };

/** The OpenSSH extensions the gateway understands; others are `other`. */
export type Extended =
  | { kind: 'posix-rename' | 'hardlink'; from: string; to: string }
  | { kind: 'lsetstat'; path: string; attrs: Attrs }
  | { kind: 'fsync' | 'fstatvfs'; handle: Buffer }
  | { kind: 'statvfs' | 'expand-path'; path: string }
  | { kind: 'copy-data'; readHandle: Buffer; length: bigint; writeHandle: Buffer }
  | { kind: 'limits' | 'home-directory' | 'users-groups-by-id' }
  | { kind: 'other' };

const path = (f: Fields, what = 'path') => f.bytes(what).toString('utf8');
const handle = (f: Fields) => f.bytes('handle', MAX_HANDLE_BYTES);

/** Decodes a client → server packet (length field included). */
export function decodeRequest(packet: Buffer): Request {
  const f = new Fields(packet, 4);
  const type = f.byte('type');
  if (type === FXP.INIT) return { type: 'init', version: f.u32('version') };
  const id = f.u32('request id');
  f.id = id;
  switch (type) {
    case FXP.OPEN: {
      const p = path(f);
      const pflags = f.u32('pflags');
      return { type: 'open', id, path: p, pflags, attrs: readAttrs(f) };
    }
    case FXP.CLOSE:
      return { type: 'close', id, handle: handle(f) };
    case FXP.READ: {
      const h = handle(f);
      f.u64('offset');
      return { type: 'read', id, handle: h, length: f.u32('length') };
    }
    case FXP.WRITE: {
      const h = handle(f);
      f.u64('offset');
      return { type: 'write', id, handle: h, length: f.skipString('data') };
    }
    case FXP.FSTAT:
      return { type: 'fstat', id, handle: handle(f) };
    case FXP.READDIR:
      return { type: 'readdir', id, handle: handle(f) };
    case FXP.FSETSTAT: {
      const h = handle(f);
      return { type: 'fsetstat', id, handle: h, attrs: readAttrs(f) };
    }
    case FXP.SETSTAT: {
      const p = path(f);
      return { type: 'setstat', id, path: p, attrs: readAttrs(f) };
    }
    case FXP.MKDIR: {
      const p = path(f);
      return { type: 'mkdir', id, path: p, attrs: readAttrs(f) };
    }
    case FXP.LSTAT:
      return { type: 'lstat', id, path: path(f) };
    case FXP.STAT:
      return { type: 'stat', id, path: path(f) };
    case FXP.OPENDIR:
      return { type: 'opendir', id, path: path(f) };
    case FXP.REMOVE:
      return { type: 'remove', id, path: path(f) };
    case FXP.RMDIR:
      return { type: 'rmdir', id, path: path(f) };
    case FXP.REALPATH:
      return { type: 'realpath', id, path: path(f) };
    case FXP.READLINK:
      return { type: 'readlink', id, path: path(f) };
    case FXP.RENAME: {
      const from = path(f, 'old path');
      return { type: 'rename', id, from, to: path(f, 'new path') };
    }
    case FXP.SYMLINK: {
      const target = path(f, 'link target');
      return { type: 'symlink', id, target, link: path(f, 'link path') };
    }
    case FXP.EXTENDED: {
      const name = f.bytes('extended request name', 256).toString('latin1');
      return { type: 'extended', id, name, ext: decodeExtended(name, f) };
    }
    default:
      throw new SftpCodecError(`unknown SFTP request type ${type}`, id);
  }
}

function decodeExtended(name: string, f: Fields): Extended {
  switch (name) {
    case 'posix-rename@openssh.com':
    case 'hardlink@openssh.com': {
      const from = path(f, 'old path');
      return { kind: name === 'hardlink@openssh.com' ? 'hardlink' : 'posix-rename', from, to: path(f, 'new path') };
    }
    case 'lsetstat@openssh.com': {
      const p = path(f);
      return { kind: 'lsetstat', path: p, attrs: readAttrs(f) };
    }
    case 'fsync@openssh.com':
      return { kind: 'fsync', handle: handle(f) };
    case 'fstatvfs@openssh.com':
      return { kind: 'fstatvfs', handle: handle(f) };
    case 'statvfs@openssh.com':
      return { kind: 'statvfs', path: path(f) };
    case 'expand-path@openssh.com':
      return { kind: 'expand-path', path: path(f) };
    case 'copy-data': {
      const readHandle = handle(f);
      f.u64('read offset');
      const length = f.u64('length');
      const writeHandle = handle(f);
      f.u64('write offset');
      return { kind: 'copy-data', readHandle, length, writeHandle };
    }
    case 'limits@openssh.com':
      return { kind: 'limits' };
    case 'home-directory':
      return { kind: 'home-directory' };
    case 'users-groups-by-id@openssh.com':
      return { kind: 'users-groups-by-id' };
    default:
      return { kind: 'other' };
  }
}

export type Response =
  | { type: 'version'; version: number; extensions: string[] }
  | { type: 'status'; id: number; code: number; message: string }
  | { type: 'handle'; id: number; handle: Buffer }
  | { type: 'data'; id: number; length: number }
  | { type: 'name'; id: number; count: number }
  | { type: 'attrs' | 'extended_reply'; id: number };

/** Decodes a server → client packet (length field included). */
export function decodeResponse(packet: Buffer): Response {
  const f = new Fields(packet, 4);
  const type = f.byte('type');
  if (type === FXP.VERSION) {
    const version = f.u32('version');
    const extensions: string[] = [];
    while (f.remaining > 0 && extensions.length < 64) {
      extensions.push(f.bytes('extension name', 256).toString('latin1'));
      f.skipString('extension data');
    }
    return { type: 'version', version, extensions };
  }
  const id = f.u32('request id');
  f.id = id;
  switch (type) {
    case FXP.STATUS: {
      const code = f.u32('status code');
      // OpenSSH before protocol 3 omitted the message; tolerate its absence.
      const message = f.remaining >= 4 ? f.bytes('status message', 64 * 1024).toString('utf8') : '';
      return { type: 'status', id, code, message };
    }
    case FXP.HANDLE:
      return { type: 'handle', id, handle: handle(f) };
    case FXP.DATA:
      return { type: 'data', id, length: f.skipString('data') };
    case FXP.NAME:
      return { type: 'name', id, count: f.u32('name count') };
    case FXP.ATTRS:
      return { type: 'attrs', id };
    case FXP.EXTENDED_REPLY:
      return { type: 'extended_reply', id };
    default:
      throw new SftpCodecError(`unknown SFTP response type ${type}`, id);
  }
}

/** An SSH_FXP_STATUS packet (length field included). */
export function encodeStatus(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 4096), 'utf8');
  const lang = Buffer.from('en', 'latin1');
  const body = 1 + 4 + 4 + 4 + msg.length + 4 + lang.length;
  const b = Buffer.alloc(4 + body);
  let o = b.writeUInt32BE(body, 0);
  o = b.writeUInt8(FXP.STATUS, o);
  o = b.writeUInt32BE(id >>> 0, o);
  o = b.writeUInt32BE(code, o);
  o = b.writeUInt32BE(msg.length, o);
  o += msg.copy(b, o);
  o = b.writeUInt32BE(lang.length, o);
  lang.copy(b, o);
  return b;
}

/** OPEN pflags as words: `read`, `write`, `append`, `create`, `truncate`, `exclusive`. */
export function describePflags(pflags: number): string[] {
  const out: string[] = [];
  if (pflags & PFLAG.READ) out.push('read');
  if (pflags & PFLAG.WRITE) out.push('write');
  if (pflags & PFLAG.APPEND) out.push('append');
  if (pflags & PFLAG.CREAT) out.push('create');
  if (pflags & PFLAG.TRUNC) out.push('truncate');
  if (pflags & PFLAG.EXCL) out.push('exclusive');
  return out;
}

/** Whether an open may change the file (write, append, create, truncate). */
export function opensForWrite(pflags: number): boolean {
  return (pflags & (PFLAG.WRITE | PFLAG.APPEND | PFLAG.CREAT | PFLAG.TRUNC | PFLAG.EXCL)) !== 0;
}
