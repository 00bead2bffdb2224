// Pure encoders/decoders for the MySQL/MariaDB client/server messages the gateway terminates:
// connection phase (HandshakeV10, SSLRequest, HandshakeResponse41, AuthSwitchRequest,
// AuthMoreData), generic responses (OK/ERR/EOF), result sets (column definitions, text and binary
// rows) and the commands it inspects (COM_QUERY, COM_STMT_*). No sockets, no I/O.
//
// Every payload here is one logical message as PacketScanner emits it (header stripped, split
// packets already reassembled), command byte/packet header byte included.
//
// The layouts depend on negotiated capabilities. Some change framing in ways this codec does not
// implement; the listener must clear UNSUPPORTED_CAPABILITIES from what it advertises (a client
// may only use a capability both sides announced).

import { ProtocolError, Reader, Writer, lenEncIntSize, writeLenEncIntInto } from './codec.ts';

// ---------- capability flags (Protocol::CapabilityFlags) ----------

export const CLIENT_LONG_PASSWORD = 0x1; // MariaDB calls this CLIENT_MYSQL
export const CLIENT_FOUND_ROWS = 0x2;
export const CLIENT_LONG_FLAG = 0x4;
export const CLIENT_CONNECT_WITH_DB = 0x8;
export const CLIENT_NO_SCHEMA = 0x10;
export const CLIENT_COMPRESS = 0x20;
export const CLIENT_ODBC = 0x40;
export const CLIENT_LOCAL_FILES = 0x80;
export const CLIENT_IGNORE_SPACE = 0x100;
export const CLIENT_PROTOCOL_41 = 0x200;
export const CLIENT_INTERACTIVE = 0x400;
export const CLIENT_SSL = 0x800;
export const CLIENT_IGNORE_SIGPIPE = 0x1000;
export const CLIENT_TRANSACTIONS = 0x2000;
export const CLIENT_RESERVED = 0x4000;
export const CLIENT_SECURE_CONNECTION = 0x8000;
export const CLIENT_MULTI_STATEMENTS = 0x10000;
export const CLIENT_MULTI_RESULTS = 0x20000;
export const CLIENT_PS_MULTI_RESULTS = 0x40000;
export const CLIENT_PLUGIN_AUTH = 0x80000;
export const CLIENT_CONNECT_ATTRS = 0x100000;
export const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000;
export const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 0x400000;
export const CLIENT_SESSION_TRACK = 0x800000;
export const CLIENT_DEPRECATE_EOF = 0x1000000;
export const CLIENT_OPTIONAL_RESULTSET_METADATA = 0x2000000;
export const CLIENT_ZSTD_COMPRESSION_ALGORITHM = 0x4000000;
export const CLIENT_QUERY_ATTRIBUTES = 0x8000000;
export const CLIENT_MULTI_FACTOR_AUTHENTICATION = 0x10000000;
export const CLIENT_CAPABILITY_EXTENSION = 0x20000000;
export const CLIENT_SSL_VERIFY_SERVER_CERT = 0x40000000;
// 1 << 31 is negative in JS bit arithmetic; keep every capability word unsigned with >>> 0.
export const CLIENT_REMEMBER_OPTIONS = 0x80000000;

/**
 * Capabilities whose wire layout this codec does not implement: compression wraps every packet in
 * another framing; query attributes prefix COM_QUERY/COM_STMT_EXECUTE with extra parameters;
 * optional metadata makes column definitions conditional; multi-factor auth adds auth rounds.
 * The listener must not advertise these.
 */
export const UNSUPPORTED_CAPABILITIES =
  (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM | CLIENT_QUERY_ATTRIBUTES | CLIENT_OPTIONAL_RESULTSET_METADATA | CLIENT_MULTI_FACTOR_AUTHENTICATION) >>> 0;

export const hasCap = (caps: number, flag: number): boolean => ((caps >>> 0) & flag) !== 0;

// ---------- server status flags ----------

export const SERVER_STATUS_IN_TRANS = 0x1;
export const SERVER_STATUS_AUTOCOMMIT = 0x2;
export const SERVER_MORE_RESULTS_EXISTS = 0x8;
export const SERVER_QUERY_NO_GOOD_INDEX_USED = 0x10;
export const SERVER_QUERY_NO_INDEX_USED = 0x20;
export const SERVER_STATUS_CURSOR_EXISTS = 0x40;
export const SERVER_STATUS_LAST_ROW_SENT = 0x80;
export const SERVER_STATUS_DB_DROPPED = 0x100;
export const SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x200;
export const SERVER_STATUS_METADATA_CHANGED = 0x400;
export const SERVER_QUERY_WAS_SLOW = 0x800;
export const SERVER_PS_OUT_PARAMS = 0x1000;
export const SERVER_STATUS_IN_TRANS_READONLY = 0x2000;
export const SERVER_SESSION_STATE_CHANGED = 0x4000;

// ---------- character sets (collation ids) ----------

export const CHARSET_UTF8_GENERAL_CI = 33;
export const CHARSET_UTF8MB4_GENERAL_CI = 45;
export const CHARSET_BINARY = 63;
export const CHARSET_UTF8MB4_0900_AI_CI = 255;

// ---------- column types and flags ----------

export const MYSQL_TYPE_DECIMAL = 0;
export const MYSQL_TYPE_TINY = 1;
export const MYSQL_TYPE_SHORT = 2;
export const MYSQL_TYPE_LONG = 3;
export const MYSQL_TYPE_FLOAT = 4;
export const MYSQL_TYPE_DOUBLE = 5;
export const MYSQL_TYPE_NULL = 6;
export const MYSQL_TYPE_TIMESTAMP = 7;
export const MYSQL_TYPE_LONGLONG = 8;
export const MYSQL_TYPE_INT24 = 9;
export const MYSQL_TYPE_DATE = 10;
export const MYSQL_TYPE_TIME = 11;
export const MYSQL_TYPE_DATETIME = 12;
export const MYSQL_TYPE_YEAR = 13;
export const MYSQL_TYPE_NEWDATE = 14; // server-internal, never on the wire
export const MYSQL_TYPE_VARCHAR = 15;
export const MYSQL_TYPE_BIT = 16;
export const MYSQL_TYPE_TIMESTAMP2 = 17; // server-internal
export const MYSQL_TYPE_DATETIME2 = 18; // server-internal
export const MYSQL_TYPE_TIME2 = 19; // server-internal
export const MYSQL_TYPE_VECTOR = 242; // MySQL 9
export const MYSQL_TYPE_JSON = 245;
export const MYSQL_TYPE_NEWDECIMAL = 246;
export const MYSQL_TYPE_ENUM = 247;
export const MYSQL_TYPE_SET = 248;
export const MYSQL_TYPE_TINY_BLOB = 249;
export const MYSQL_TYPE_MEDIUM_BLOB = 250;
export const MYSQL_TYPE_LONG_BLOB = 251;
export const MYSQL_TYPE_BLOB = 252;
export const MYSQL_TYPE_VAR_STRING = 253;
export const MYSQL_TYPE_STRING = 254;
export const MYSQL_TYPE_GEOMETRY = 255;

export const NOT_NULL_FLAG = 0x1;
export const PRI_KEY_FLAG = 0x2;
export const UNIQUE_KEY_FLAG = 0x4;
export const MULTIPLE_KEY_FLAG = 0x8;
export const BLOB_FLAG = 0x10;
export const UNSIGNED_FLAG = 0x20;
export const ZEROFILL_FLAG = 0x40;
export const BINARY_FLAG = 0x80;
export const ENUM_FLAG = 0x100;
export const AUTO_INCREMENT_FLAG = 0x200;
export const TIMESTAMP_FLAG = 0x400;
export const SET_FLAG = 0x800;
export const NUM_FLAG = 0x8000;

const BLOB_TYPES = new Set([MYSQL_TYPE_TINY_BLOB, MYSQL_TYPE_MEDIUM_BLOB, MYSQL_TYPE_LONG_BLOB, MYSQL_TYPE_BLOB]);
const STRING_TYPES = new Set([
  MYSQL_TYPE_VARCHAR, MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_STRING, MYSQL_TYPE_ENUM, MYSQL_TYPE_SET, MYSQL_TYPE_JSON, ...BLOB_TYPES,
]);

/**
 * Types whose values are character/byte strings that may carry free text (what masking looks at).
 * TEXT columns arrive as BLOB types with a non-binary charset; use isBinaryColumn to tell them apart.
 */
export const isStringType = (type: number): boolean => STRING_TYPES.has(type);
export const isBlobType = (type: number): boolean => BLOB_TYPES.has(type);
/** BINARY/VARBINARY/BLOB columns (and BIT/GEOMETRY) carry raw bytes, not text. */
export const isBinaryColumn = (col: { type: number; charset: number }): boolean =>
  col.type === MYSQL_TYPE_GEOMETRY || col.type === MYSQL_TYPE_BIT || (isStringType(col.type) && col.charset === CHARSET_BINARY);

export const TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'DECIMAL', 1: 'TINY', 2: 'SHORT', 3: 'LONG', 4: 'FLOAT', 5: 'DOUBLE', 6: 'NULL', 7: 'TIMESTAMP', 8: 'LONGLONG',
  9: 'INT24', 10: 'DATE', 11: 'TIME', 12: 'DATETIME', 13: 'YEAR', 14: 'NEWDATE', 15: 'VARCHAR', 16: 'BIT',
  17: 'TIMESTAMP2', 18: 'DATETIME2', 19: 'TIME2', 242: 'VECTOR', 245: 'JSON', 246: 'NEWDECIMAL', 247: 'ENUM',
  248: 'SET', 249: 'TINY_BLOB', 250: 'MEDIUM_BLOB', 251: 'LONG_BLOB', 252: 'BLOB', 253: 'VAR_STRING', 254: 'STRING',
  255: 'GEOMETRY',
};

// ---------- commands ----------

export const COM_SLEEP = 0x00;
export const COM_QUIT = 0x01;
export const COM_INIT_DB = 0x02;
export const COM_QUERY = 0x03;
export const COM_FIELD_LIST = 0x04;
export const COM_CREATE_DB = 0x05;
export const COM_DROP_DB = 0x06;
export const COM_REFRESH = 0x07;
export const COM_SHUTDOWN = 0x08;
export const COM_STATISTICS = 0x09;
export const COM_PROCESS_INFO = 0x0a;
export const COM_CONNECT = 0x0b;
export const COM_PROCESS_KILL = 0x0c;
export const COM_DEBUG = 0x0d;
export const COM_PING = 0x0e;
export const COM_TIME = 0x0f;
export const COM_DELAYED_INSERT = 0x10;
export const COM_CHANGE_USER = 0x11;
export const COM_BINLOG_DUMP = 0x12;
export const COM_TABLE_DUMP = 0x13;
export const COM_CONNECT_OUT = 0x14;
export const COM_REGISTER_SLAVE = 0x15;
export const COM_STMT_PREPARE = 0x16;
export const COM_STMT_EXECUTE = 0x17;
export const COM_STMT_SEND_LONG_DATA = 0x18;
export const COM_STMT_CLOSE = 0x19;
export const COM_STMT_RESET = 0x1a;
export const COM_SET_OPTION = 0x1b;
export const COM_STMT_FETCH = 0x1c;
export const COM_DAEMON = 0x1d;
export const COM_BINLOG_DUMP_GTID = 0x1e;
export const COM_RESET_CONNECTION = 0x1f;
export const COM_CLONE = 0x20;
/** MariaDB: array binding for a prepared statement. */
export const COM_STMT_BULK_EXECUTE = 0xfa;

export const COMMAND_NAMES: Readonly<Record<number, string>> = {
  0: 'COM_SLEEP', 1: 'COM_QUIT', 2: 'COM_INIT_DB', 3: 'COM_QUERY', 4: 'COM_FIELD_LIST', 5: 'COM_CREATE_DB',
  6: 'COM_DROP_DB', 7: 'COM_REFRESH', 8: 'COM_SHUTDOWN', 9: 'COM_STATISTICS', 10: 'COM_PROCESS_INFO',
  11: 'COM_CONNECT', 12: 'COM_PROCESS_KILL', 13: 'COM_DEBUG', 14: 'COM_PING', 15: 'COM_TIME',
  16: 'COM_DELAYED_INSERT', 17: 'COM_CHANGE_USER', 18: 'COM_BINLOG_DUMP', 19: 'COM_TABLE_DUMP',
  20: 'COM_CONNECT_OUT', 21: 'COM_REGISTER_SLAVE', 22: 'COM_STMT_PREPARE', 23: 'COM_STMT_EXECUTE',
  24: 'COM_STMT_SEND_LONG_DATA', 25: 'COM_STMT_CLOSE', 26: 'COM_STMT_RESET', 27: 'COM_SET_OPTION',
  28: 'COM_STMT_FETCH', 29: 'COM_DAEMON', 30: 'COM_BINLOG_DUMP_GTID', 31: 'COM_RESET_CONNECTION', 32: 'COM_CLONE',
  250: 'COM_STMT_BULK_EXECUTE',
};

/** COM_SET_OPTION values: multi-statements can be switched on after the handshake. */
export const MYSQL_OPTION_MULTI_STATEMENTS_ON = 0;
export const MYSQL_OPTION_MULTI_STATEMENTS_OFF = 1;

/** COM_STMT_EXECUTE flags (cursor type). */
export const CURSOR_TYPE_NO_CURSOR = 0x0;
export const CURSOR_TYPE_READ_ONLY = 0x1;
export const CURSOR_TYPE_FOR_UPDATE = 0x2;
export const CURSOR_TYPE_SCROLLABLE = 0x4;
export const PARAMETER_COUNT_AVAILABLE = 0x8;

// ---------- limits ----------

export const MAX_USER_BYTES = 256;
export const MAX_DATABASE_BYTES = 256;
export const MAX_PLUGIN_NAME_BYTES = 128;
export const MAX_AUTH_RESPONSE_BYTES = 16 * 1024;
/** MySQL itself refuses connection attributes beyond 64 KiB. */
export const MAX_CONNECT_ATTRS_BYTES = 64 * 1024;
export const MAX_SERVER_VERSION_BYTES = 256;
export const SCRAMBLE_LENGTH = 20;

const ER_WRONG_ARGUMENTS = 1210;
const ER_NOT_SUPPORTED_AUTH_MODE = 1251;

const malformed = (what: string): ProtocolError => new ProtocolError(`malformed packet: ${what}`);

function expectHeader(payload: Buffer, header: number, what: string): Reader {
  if (payload.length === 0 || payload[0] !== header) throw malformed(`not a ${what}`);
  return new Reader(payload, 1);
}

// ---------- connection phase ----------

export interface HandshakeV10 {
  protocolVersion: number;
  serverVersion: string;
  connectionId: number;
  /** auth-plugin-data parts 1 and 2 joined, without the trailing NUL (20 bytes from MySQL/MariaDB) */
  scramble: Buffer;
  capabilities: number;
  charset: number;
  status: number;
  authPlugin?: string;
  /** MariaDB's extended capabilities (sent in the reserved bytes when CLIENT_LONG_PASSWORD, a.k.a. CLIENT_MYSQL, is clear) */
  mariadbCapabilities?: number;
}

export interface HandshakeV10Input {
  serverVersion: string;
  connectionId: number;
  /** exactly 20 bytes, none of them NUL (clients read part 2 as a NUL-terminated string) */
  scramble: Buffer;
  capabilities: number;
  charset: number;
  status: number;
  authPlugin: string;
}

/** The server greeting the gateway sends to its clients. */
export function encodeHandshakeV10(h: HandshakeV10Input): Buffer {
  if (h.scramble.length !== SCRAMBLE_LENGTH || h.scramble.includes(0)) {
    throw new RangeError(`scramble must be ${SCRAMBLE_LENGTH} non-NUL bytes`);
  }
  const caps = h.capabilities >>> 0;
  const pluginAuth = hasCap(caps, CLIENT_PLUGIN_AUTH);
  const w = new Writer()
    .u8(10)
    .cstring(h.serverVersion)
    .u32(h.connectionId)
    .bytes(h.scramble.subarray(0, 8))
    .u8(0)
    .u16(caps & 0xffff)
    .u8(h.charset)
    .u16(h.status)
    .u16(caps >>> 16)
    .u8(pluginAuth ? SCRAMBLE_LENGTH + 1 : 0)
    .zeros(10)
    // Part 2 is max(13, len - 8) bytes: the remaining 12 scramble bytes and a NUL.
    .bytes(h.scramble.subarray(8))
    .u8(0);
  if (pluginAuth) w.cstring(h.authPlugin);
  return w.finish();
}

/** The upstream server's greeting, for the gateway's client side. Check isErr() first: a server refusing the host sends ERR instead. */
export function decodeHandshakeV10(payload: Buffer): HandshakeV10 {
  const r = new Reader(payload);
  const protocolVersion = r.u8();
  if (protocolVersion !== 10) {
    throw new ProtocolError(`unsupported handshake protocol version ${protocolVersion}`, ER_NOT_SUPPORTED_AUTH_MODE, '08004');
  }
  const serverVersion = r.cstring(MAX_SERVER_VERSION_BYTES, 'server version');
  const connectionId = r.u32();
  const part1 = r.bytes(8);
  r.u8(); // filler
  let capabilities = r.u16();
  const out: HandshakeV10 = { protocolVersion, serverVersion, connectionId, scramble: Buffer.from(part1), capabilities, charset: 0, status: 0 };
  // Pre-4.1 servers may end the greeting here.
  if (r.atEnd) return out;
  out.charset = r.u8();
  out.status = r.u16();
  capabilities = (capabilities | (r.u16() << 16)) >>> 0;
  out.capabilities = capabilities;
  const authDataLen = r.u8();
  const reserved = r.bytes(10);
  if (!hasCap(capabilities, CLIENT_LONG_PASSWORD)) out.mariadbCapabilities = reserved.readUInt32LE(6);
  if (hasCap(capabilities, CLIENT_SECURE_CONNECTION)) {
    const len2 = Math.max(13, authDataLen - 8);
    let part2 = r.bytes(Math.min(len2, r.left));
    // The part ends with a NUL that is not scramble data.
    if (part2.length > 0 && part2[part2.length - 1] === 0) part2 = part2.subarray(0, part2.length - 1);
    out.scramble = Buffer.concat([part1, part2]);
  }
  if (hasCap(capabilities, CLIENT_PLUGIN_AUTH) && !r.atEnd) {
    // Some 5.5 servers omitted the terminating NUL (MySQL bug #59453): take the rest then.
    const rest = r.rest();
    const nul = rest.indexOf(0);
    const name = nul < 0 ? rest : rest.subarray(0, nul);
    if (name.length > MAX_PLUGIN_NAME_BYTES) throw malformed('auth plugin name too long');
    out.authPlugin = name.toString('utf8');
  }
  return out;
}

export interface HandshakeResponse41 {
  capabilities: number;
  maxPacket: number;
  charset: number;
  user: string;
  authResponse: Buffer;
  database?: string;
  authPlugin?: string;
  /** null-prototype object: attribute keys such as "__proto__" are plain data */
  attrs?: Record<string, string>;
  mariadbCapabilities?: number;
}

/** SSLRequest: a HandshakeResponse41 truncated after the filler, with CLIENT_SSL set. */
export function isSslRequest(payload: Buffer): boolean {
  return payload.length === 32 && hasCap(payload.readUInt32LE(0), CLIENT_SSL);
}

export function encodeSslRequest(capabilities: number, charset: number, maxPacket = 16 * 1024 * 1024): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE((capabilities | CLIENT_SSL | CLIENT_PROTOCOL_41) >>> 0, 0);
  b.writeUInt32LE(maxPacket >>> 0, 4);
  b[8] = charset;
  return b;
}

/**
 * The client's login packet. Layout is governed by the capability flags the client sends in it.
 * Every variable field is bounded (MAX_* above); database and plugin name may be absent at the end
 * of the payload even when their flag is set (several drivers do that), anything after the
 * connection attributes (e.g. a zstd level) is ignored. Strings are decoded as UTF-8.
 */
export function decodeHandshakeResponse41(payload: Buffer): HandshakeResponse41 {
  const r = new Reader(payload);
  const capabilities = r.u32();
  if (!hasCap(capabilities, CLIENT_PROTOCOL_41)) {
    throw new ProtocolError('client does not support protocol 4.1', ER_NOT_SUPPORTED_AUTH_MODE, '08004');
  }
  const maxPacket = r.u32();
  const charset = r.u8();
  const filler = r.bytes(23);
  const user = r.cstring(MAX_USER_BYTES, 'user name');
  let authResponse: Buffer;
  if (hasCap(capabilities, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)) {
    authResponse = r.lenEncBytes(MAX_AUTH_RESPONSE_BYTES);
  } else if (hasCap(capabilities, CLIENT_SECURE_CONNECTION)) {
    authResponse = r.bytes(r.u8());
  } else {
    authResponse = r.nulBytes(MAX_AUTH_RESPONSE_BYTES, 'auth response');
  }
  const out: HandshakeResponse41 = { capabilities, maxPacket, charset, user, authResponse: Buffer.from(authResponse) };
  if (!hasCap(capabilities, CLIENT_LONG_PASSWORD)) out.mariadbCapabilities = filler.readUInt32LE(19);
  if (hasCap(capabilities, CLIENT_CONNECT_WITH_DB) && !r.atEnd) out.database = r.cstring(MAX_DATABASE_BYTES, 'database name');
  if (hasCap(capabilities, CLIENT_PLUGIN_AUTH) && !r.atEnd) {
    if (!hasCap(capabilities, CLIENT_CONNECT_ATTRS) && r.left <= MAX_PLUGIN_NAME_BYTES && !r.buf.subarray(r.off).includes(0)) {
      // Old libmysqlclient versions sent the plugin name unterminated as the last field.
      out.authPlugin = r.rest().toString('utf8');
    } else {
      out.authPlugin = r.cstring(MAX_PLUGIN_NAME_BYTES, 'auth plugin name');
    }
  }
  if (hasCap(capabilities, CLIENT_CONNECT_ATTRS) && !r.atEnd) {
    const total = r.lenEncInt();
    if (total > MAX_CONNECT_ATTRS_BYTES) throw malformed(`connection attributes of ${total} bytes exceed ${MAX_CONNECT_ATTRS_BYTES}`);
    const ar = new Reader(r.bytes(total));
    const attrs: Record<string, string> = Object.create(null);
    while (!ar.atEnd) {
      const k = ar.lenEncString();
      attrs[k] = ar.lenEncString();
    }
    out.attrs = attrs;
  }
  return out;
}

export interface HandshakeResponse41Input {
  capabilities: number;
  maxPacket?: number;
  charset: number;
  user: string;
  authResponse: Buffer;
  database?: string;
  authPlugin?: string;
  attrs?: Record<string, string>;
}

/**
 * The gateway's login to the upstream. Optional fields are written exactly when their capability
 * is set; giving a field without its flag is refused rather than silently dropped.
 */
export function encodeHandshakeResponse41(h: HandshakeResponse41Input): Buffer {
  const caps = (h.capabilities | CLIENT_PROTOCOL_41) >>> 0;
  const need = (present: boolean, flag: number, name: string): boolean => {
    if (present && !hasCap(caps, flag)) throw new RangeError(`${name} given but its capability flag is not set`);
    return hasCap(caps, flag);
  };
  const w = new Writer().u32(caps).u32(h.maxPacket ?? 16 * 1024 * 1024).u8(h.charset).zeros(23).cstring(h.user);
  if (hasCap(caps, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)) {
    w.lenEncBytes(h.authResponse);
  } else if (hasCap(caps, CLIENT_SECURE_CONNECTION)) {
    if (h.authResponse.length > 255) throw new RangeError('auth response longer than 255 bytes needs CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA');
    w.u8(h.authResponse.length).bytes(h.authResponse);
  } else {
    w.cstring(h.authResponse);
  }
  if (need(h.database !== undefined, CLIENT_CONNECT_WITH_DB, 'database')) w.cstring(h.database ?? '');
  if (need(h.authPlugin !== undefined, CLIENT_PLUGIN_AUTH, 'authPlugin')) w.cstring(h.authPlugin ?? '');
  if (need(h.attrs !== undefined, CLIENT_CONNECT_ATTRS, 'attrs')) {
    const aw = new Writer();
    for (const [k, v] of Object.entries(h.attrs ?? {})) aw.lenEncBytes(k).lenEncBytes(v);
    w.lenEncBytes(aw.finish());
  }
  return w.finish();
}

// ---------- generic response packets ----------

export const OK_HEADER = 0x00;
export const EOF_HEADER = 0xfe;
export const ERR_HEADER = 0xff;
export const AUTH_SWITCH_HEADER = 0xfe;
export const AUTH_MORE_DATA_HEADER = 0x01;
/** A COM_QUERY answered with this header is a LOCAL INFILE request (needs CLIENT_LOCAL_FILES). */
export const LOCAL_INFILE_HEADER = 0xfb;

export interface OkPacket {
  affectedRows: number;
  /** 64-bit: BIGINT UNSIGNED auto-increment ids exceed 2^53 */
  lastInsertId: bigint;
  status: number;
  warnings: number;
  info: string;
  /** raw session-state-change data (CLIENT_SESSION_TRACK with SERVER_SESSION_STATE_CHANGED) */
  sessionState?: Buffer;
  /** sent with the 0xfe header: the result-set terminator under CLIENT_DEPRECATE_EOF */
  eof: boolean;
}

export interface OkInput {
  affectedRows?: number | bigint;
  lastInsertId?: number | bigint;
  status: number;
  warnings?: number;
  info?: string;
  sessionState?: Buffer;
  eof?: boolean;
}

/** `capabilities` matter only for CLIENT_SESSION_TRACK, which changes how `info` is written. */
export function encodeOk(ok: OkInput, capabilities = 0): Buffer {
  const w = new Writer()
    .u8(ok.eof ? EOF_HEADER : OK_HEADER)
    .lenEncInt(ok.affectedRows ?? 0)
    .lenEncInt(ok.lastInsertId ?? 0)
    .u16(ok.status)
    .u16(ok.warnings ?? 0);
  const info = ok.info ?? '';
  if (hasCap(capabilities, CLIENT_SESSION_TRACK)) {
    const changed = (ok.status & SERVER_SESSION_STATE_CHANGED) !== 0;
    if (info || changed) w.lenEncBytes(info);
    if (changed) w.lenEncBytes(ok.sessionState ?? Buffer.alloc(0));
  } else if (info) {
    w.bytes(Buffer.from(info, 'utf8'));
  }
  return w.finish();
}

/** Decodes an OK_Packet with either header (0x00, or 0xfe as sent under CLIENT_DEPRECATE_EOF). Assumes CLIENT_PROTOCOL_41. */
export function decodeOk(payload: Buffer, capabilities = 0): OkPacket {
  const header = payload.length > 0 ? payload[0] : -1;
  if (header !== OK_HEADER && header !== EOF_HEADER) throw malformed('not an OK packet');
  const r = new Reader(payload, 1);
  const affected = r.lenEncBigInt();
  const out: OkPacket = {
    affectedRows: Number(affected),
    lastInsertId: r.lenEncBigInt(),
    status: r.u16(),
    warnings: r.u16(),
    info: '',
    eof: header === EOF_HEADER,
  };
  if (hasCap(capabilities, CLIENT_SESSION_TRACK)) {
    // With session tracking the server omits info entirely when it has nothing to say.
    if (!r.atEnd) out.info = r.lenEncString();
    if ((out.status & SERVER_SESSION_STATE_CHANGED) !== 0 && !r.atEnd) out.sessionState = r.lenEncBytes();
  } else {
    out.info = r.rest().toString('utf8');
  }
  return out;
}

export interface ErrPacket {
  code: number;
  /** 'HY000' when the server sent no SQLSTATE marker (pre-4.1 / early handshake errors) */
  sqlState: string;
  message: string;
}

export function encodeErr(e: { code: number; sqlState: string; message: string }): Buffer {
  if (!/^[0-9A-Z]{5}$/.test(e.sqlState)) throw new RangeError(`invalid SQLSTATE "${e.sqlState}"`);
  return new Writer().u8(ERR_HEADER).u16(e.code).u8(0x23).bytes(Buffer.from(e.sqlState, 'latin1')).bytes(Buffer.from(e.message, 'utf8')).finish();
}

export function decodeErr(payload: Buffer): ErrPacket {
  const r = expectHeader(payload, ERR_HEADER, 'ERR packet');
  const code = r.u16();
  let sqlState = 'HY000';
  if (!r.atEnd && r.peek() === 0x23) {
    r.skip(1);
    sqlState = r.bytes(5).toString('latin1');
  }
  return { code, sqlState, message: r.rest().toString('utf8') };
}

/** Legacy EOF_Packet (without CLIENT_DEPRECATE_EOF). */
export function encodeEof(status: number, warnings = 0): Buffer {
  const b = Buffer.alloc(5);
  b[0] = EOF_HEADER;
  b.writeUInt16LE(warnings, 1);
  b.writeUInt16LE(status, 3);
  return b;
}

export function decodeEof(payload: Buffer): { warnings: number; status: number } {
  if (!isEof(payload)) throw malformed('not an EOF packet');
  // A 1-byte EOF is pre-4.1; otherwise warnings then status.
  if (payload.length < 5) return { warnings: 0, status: 0 };
  return { warnings: payload.readUInt16LE(1), status: payload.readUInt16LE(3) };
}

export const isErr = (p: Buffer): boolean => p.length > 0 && p[0] === ERR_HEADER;

/**
 * Legacy EOF: 0xfe with fewer than 9 bytes. The length test is what tells it from a text row whose
 * first value has a 0xfe (8-byte) length prefix, which needs at least 9 bytes.
 */
export const isEof = (p: Buffer): boolean => p.length > 0 && p.length < 9 && p[0] === EOF_HEADER;

/**
 * OK_Packet. With `deprecateEof` the 0xfe-headed OK that ends a result set counts too; it is told
 * apart from a row starting with an 8-byte length prefix by size, as libmysqlclient does (such a
 * row is at least 2^24 + 9 bytes long).
 */
export function isOk(p: Buffer, deprecateEof = false): boolean {
  if (p.length < 7) return false;
  if (p[0] === OK_HEADER) return true;
  return deprecateEof && p[0] === EOF_HEADER && p.length < 0xffffff;
}

/** Whether a packet in the row phase of a result set ends it (ERR must be checked separately). */
export function isResultsetEnd(p: Buffer, deprecateEof: boolean): boolean {
  return deprecateEof ? p.length > 0 && p[0] === EOF_HEADER && p.length < 0xffffff : isEof(p);
}

// ---------- authentication exchange ----------

/**
 * AuthSwitchRequest: 0xfe, plugin name, plugin data. The built-in plugins send the 20-byte
 * scramble followed by a NUL, and libmysqlclient rejects the packet unless it is exactly 21 bytes,
 * so `nulTerminate` defaults to true.
 */
export function encodeAuthSwitchRequest(plugin: string, data: Buffer, nulTerminate = true): Buffer {
  const w = new Writer().u8(AUTH_SWITCH_HEADER).cstring(plugin).bytes(data);
  if (nulTerminate) w.u8(0);
  return w.finish();
}

/** `data` is everything after the plugin name (trailing NUL included when sent). */
export function decodeAuthSwitchRequest(payload: Buffer): { plugin: string; data: Buffer } {
  const r = expectHeader(payload, AUTH_SWITCH_HEADER, 'AuthSwitchRequest');
  // A bare 0xfe is the pre-4.1 "switch to old password" request.
  if (r.atEnd) return { plugin: 'mysql_old_password', data: Buffer.alloc(0) };
  const plugin = r.cstring(MAX_PLUGIN_NAME_BYTES, 'auth plugin name');
  return { plugin, data: r.rest() };
}

export function encodeAuthMoreData(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([AUTH_MORE_DATA_HEADER]), data]);
}

export function decodeAuthMoreData(payload: Buffer): Buffer {
  return expectHeader(payload, AUTH_MORE_DATA_HEADER, 'AuthMoreData').rest();
}

/** Only meaningful during authentication, where no other packet starts with 0x01. */
export const isAuthMoreData = (p: Buffer): boolean => p.length > 0 && p[0] === AUTH_MORE_DATA_HEADER;

// ---------- result sets ----------

/** First packet of a result set (assumes no CLIENT_OPTIONAL_RESULTSET_METADATA). */
export function decodeColumnCount(payload: Buffer): number {
  const r = new Reader(payload);
  const n = r.lenEncInt();
  r.end('column count');
  if (n === 0) throw malformed('zero column count');
  return n;
}

export function encodeColumnCount(n: number): Buffer {
  return new Writer().lenEncInt(n).finish();
}

export interface ColumnDefinition {
  catalog: string;
  schema: string;
  table: string;
  orgTable: string;
  name: string;
  orgName: string;
  /** collation id; 63 (binary) for byte strings */
  charset: number;
  /** maximum display length */
  length: number;
  type: number;
  flags: number;
  decimals: number;
  /** COM_FIELD_LIST responses only */
  defaultValue?: Buffer;
}

/** ColumnDefinition41. MariaDB extended type info is not supported (its capability is never advertised). */
export function decodeColumnDefinition41(payload: Buffer): ColumnDefinition {
  const r = new Reader(payload);
  const catalog = r.lenEncString();
  const schema = r.lenEncString();
  const table = r.lenEncString();
  const orgTable = r.lenEncString();
  const name = r.lenEncString();
  const orgName = r.lenEncString();
  const fixedLen = r.lenEncInt();
  if (fixedLen < 10) throw malformed(`column definition fixed part of ${fixedLen} bytes`);
  const fixed = new Reader(r.bytes(fixedLen));
  const col: ColumnDefinition = {
    catalog, schema, table, orgTable, name, orgName,
    charset: fixed.u16(),
    length: fixed.u32(),
    type: fixed.u8(),
    flags: fixed.u16(),
    decimals: fixed.u8(),
  };
  if (!r.atEnd) col.defaultValue = r.lenEncBytesOrNull() ?? undefined;
  return col;
}

export function encodeColumnDefinition41(c: Partial<ColumnDefinition> & { name: string; type: number }): Buffer {
  const w = new Writer()
    .lenEncBytes(c.catalog ?? 'def')
    .lenEncBytes(c.schema ?? '')
    .lenEncBytes(c.table ?? '')
    .lenEncBytes(c.orgTable ?? '')
    .lenEncBytes(c.name)
    .lenEncBytes(c.orgName ?? '')
    .lenEncInt(0x0c)
    .u16(c.charset ?? CHARSET_UTF8MB4_GENERAL_CI)
    .u32(c.length ?? 0)
    .u8(c.type)
    .u16(c.flags ?? 0)
    .u8(c.decimals ?? 0)
    .u16(0);
  if (c.defaultValue !== undefined) w.lenEncBytes(c.defaultValue);
  return w.finish();
}

/** Text-protocol row: one length-encoded string or 0xfb (NULL) per column. Values are zero-copy views. */
export function decodeTextRow(payload: Buffer, ncols: number): (Buffer | null)[] {
  const r = new Reader(payload);
  const out: (Buffer | null)[] = new Array(ncols);
  for (let i = 0; i < ncols; i++) out[i] = r.lenEncBytesOrNull();
  r.end('text row');
  return out;
}

export function encodeTextRow(values: readonly (Buffer | null)[]): Buffer {
  let len = 0;
  for (const v of values) len += v === null ? 1 : lenEncIntSize(v.length) + v.length;
  const out = Buffer.allocUnsafe(len);
  let off = 0;
  for (const v of values) {
    if (v === null) {
      out[off++] = 0xfb;
    } else {
      off = writeLenEncIntInto(out, off, v.length);
      v.copy(out, off);
      off += v.length;
    }
  }
  return out;
}

// ----- binary-protocol values (binary rows and COM_STMT_EXECUTE parameters share the encoding) -----

const FIXED_SIZE: Readonly<Record<number, number>> = {
  [MYSQL_TYPE_TINY]: 1,
  [MYSQL_TYPE_SHORT]: 2,
  [MYSQL_TYPE_YEAR]: 2,
  [MYSQL_TYPE_LONG]: 4,
  [MYSQL_TYPE_INT24]: 4,
  [MYSQL_TYPE_FLOAT]: 4,
  [MYSQL_TYPE_LONGLONG]: 8,
  [MYSQL_TYPE_DOUBLE]: 8,
};
const LENENC_TYPES = new Set([
  MYSQL_TYPE_DECIMAL, MYSQL_TYPE_NEWDECIMAL, MYSQL_TYPE_BIT, MYSQL_TYPE_GEOMETRY, MYSQL_TYPE_VECTOR, ...STRING_TYPES,
]);
const DATE_TYPES = new Set([MYSQL_TYPE_DATE, MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP]);
const DATE_LENGTHS = new Set([0, 4, 7, 11]);
const TIME_LENGTHS = new Set([0, 8, 12]);

/** Whether a type may appear in binary rows / execute parameters at all. */
export function isWireType(type: number): boolean {
  return type === MYSQL_TYPE_NULL || type === MYSQL_TYPE_TIME || type in FIXED_SIZE || LENENC_TYPES.has(type) || DATE_TYPES.has(type);
}

/**
 * Reads one binary-protocol value. The result is its payload without framing: the string bytes for
 * length-encoded types, the little-endian bytes for numbers, and for temporal types the bytes after
 * the length byte (0, 4, 7 or 11 for dates; 0, 8 or 12 for TIME).
 */
export function readBinaryValue(r: Reader, type: number): Buffer {
  const fixed = FIXED_SIZE[type];
  if (fixed !== undefined) return r.bytes(fixed);
  if (LENENC_TYPES.has(type)) return r.lenEncBytes();
  if (DATE_TYPES.has(type)) {
    const n = r.u8();
    if (!DATE_LENGTHS.has(n)) throw malformed(`invalid ${TYPE_NAMES[type]} length ${n}`);
    return r.bytes(n);
  }
  if (type === MYSQL_TYPE_TIME) {
    const n = r.u8();
    if (!TIME_LENGTHS.has(n)) throw malformed(`invalid TIME length ${n}`);
    return r.bytes(n);
  }
  if (type === MYSQL_TYPE_NULL) return r.bytes(0);
  throw malformed(`unsupported binary type ${type}`);
}

function binaryValueSize(type: number, v: Buffer): number {
  const fixed = FIXED_SIZE[type];
  if (fixed !== undefined) {
    if (v.length !== fixed) throw new RangeError(`${TYPE_NAMES[type]} value must be ${fixed} bytes, got ${v.length}`);
    return fixed;
  }
  if (LENENC_TYPES.has(type)) return lenEncIntSize(v.length) + v.length;
  if (DATE_TYPES.has(type) || type === MYSQL_TYPE_TIME) {
    if (!(type === MYSQL_TYPE_TIME ? TIME_LENGTHS : DATE_LENGTHS).has(v.length)) {
      throw new RangeError(`invalid ${TYPE_NAMES[type]} value length ${v.length}`);
    }
    return 1 + v.length;
  }
  if (type === MYSQL_TYPE_NULL) return 0;
  throw new RangeError(`unsupported binary type ${type}`);
}

function writeBinaryValue(out: Buffer, off: number, type: number, v: Buffer): number {
  if (LENENC_TYPES.has(type)) off = writeLenEncIntInto(out, off, v.length);
  else if (DATE_TYPES.has(type) || type === MYSQL_TYPE_TIME) out[off++] = v.length;
  v.copy(out, off);
  return off + v.length;
}

/** Binary-protocol row: 0x00, NULL bitmap with a 2-bit offset, then the non-NULL values. */
export function decodeBinaryRow(payload: Buffer, columns: readonly { type: number }[]): (Buffer | null)[] {
  const r = expectHeader(payload, OK_HEADER, 'binary row');
  const n = columns.length;
  const bitmap = r.bytes((n + 7 + 2) >> 3);
  const out: (Buffer | null)[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const bit = i + 2;
    const type = columns[i]!.type;
    out[i] = (bitmap[bit >> 3]! & (1 << (bit & 7))) !== 0 || type === MYSQL_TYPE_NULL ? null : readBinaryValue(r, type);
  }
  r.end('binary row');
  return out;
}

export function encodeBinaryRow(values: readonly (Buffer | null)[], columns: readonly { type: number }[]): Buffer {
  if (values.length !== columns.length) throw new RangeError(`${values.length} values for ${columns.length} columns`);
  const n = columns.length;
  const bitmapLen = (n + 7 + 2) >> 3;
  let len = 1 + bitmapLen;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (v !== null) len += binaryValueSize(columns[i]!.type, v);
  }
  const out = Buffer.alloc(len);
  let off = 1 + bitmapLen;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (v === null) {
      const bit = i + 2;
      out[1 + (bit >> 3)] |= 1 << (bit & 7);
    } else {
      off = writeBinaryValue(out, off, columns[i]!.type, v);
    }
  }
  return out;
}

// ---------- commands ----------

function commandReader(payload: Buffer, cmd: number): Reader {
  return expectHeader(payload, cmd, COMMAND_NAMES[cmd] ?? `command 0x${cmd.toString(16)}`);
}

export function encodeCommand(cmd: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const out = Buffer.allocUnsafe(1 + b.length);
  out[0] = cmd;
  b.copy(out, 1);
  return out;
}

/** COM_QUERY text (assumes no CLIENT_QUERY_ATTRIBUTES, which would prefix parameters). */
export function decodeComQuery(payload: Buffer): string {
  return commandReader(payload, COM_QUERY).rest().toString('utf8');
}

export function decodeComInitDb(payload: Buffer): string {
  return commandReader(payload, COM_INIT_DB).rest().toString('utf8');
}

export function decodeStmtPrepare(payload: Buffer): string {
  return commandReader(payload, COM_STMT_PREPARE).rest().toString('utf8');
}

export function decodeComSetOption(payload: Buffer): number {
  const r = commandReader(payload, COM_SET_OPTION);
  const v = r.u16();
  r.end('COM_SET_OPTION');
  return v;
}

export function decodeComProcessKill(payload: Buffer): number {
  const r = commandReader(payload, COM_PROCESS_KILL);
  const v = r.u32();
  r.end('COM_PROCESS_KILL');
  return v;
}

export interface ComChangeUser {
  user: string;
  authResponse: Buffer;
  database: string;
  charset: number | null;
  /** the auth plugin the response was made with; null when the client did not say */
  authPlugin: string | null;
}

/**
 * COM_CHANGE_USER: user, the auth response (made with the connection's scramble), database,
 * then optionally charset, plugin name and connect attributes (ignored). Bounded like the login.
 */
export function decodeComChangeUser(payload: Buffer, capabilities: number): ComChangeUser {
  const r = commandReader(payload, COM_CHANGE_USER);
  const user = r.cstring(MAX_USER_BYTES, 'user');
  let authResponse: Buffer;
  if (capabilities & CLIENT_SECURE_CONNECTION) authResponse = r.bytes(r.u8());
  else authResponse = r.nulBytes(MAX_AUTH_RESPONSE_BYTES, 'auth response');
  const database = r.cstring(MAX_DATABASE_BYTES, 'database');
  let charset: number | null = null;
  let authPlugin: string | null = null;
  if (r.left >= 2) charset = r.u16();
  if (r.left > 0 && capabilities & CLIENT_PLUGIN_AUTH) authPlugin = r.cstring(MAX_PLUGIN_NAME_BYTES, 'auth plugin');
  return { user, authResponse, database, charset, authPlugin };
}

/** COM_STMT_CLOSE / COM_STMT_RESET: just the statement id. */
export function decodeStmtId(payload: Buffer): number {
  if (payload.length === 0 || (payload[0] !== COM_STMT_CLOSE && payload[0] !== COM_STMT_RESET)) {
    throw malformed('not COM_STMT_CLOSE/COM_STMT_RESET');
  }
  const r = new Reader(payload, 1);
  const id = r.u32();
  r.end(COMMAND_NAMES[payload[0]!]!);
  return id;
}

export function decodeStmtFetch(payload: Buffer): { statementId: number; numRows: number } {
  const r = commandReader(payload, COM_STMT_FETCH);
  const out = { statementId: r.u32(), numRows: r.u32() };
  r.end('COM_STMT_FETCH');
  return out;
}

/** No response is sent to this command; the data accumulates server-side until execute/reset. */
export function decodeStmtSendLongData(payload: Buffer): { statementId: number; paramId: number; data: Buffer } {
  const r = commandReader(payload, COM_STMT_SEND_LONG_DATA);
  return { statementId: r.u32(), paramId: r.u16(), data: r.rest() };
}

export interface StmtPrepareOk {
  statementId: number;
  numColumns: number;
  numParams: number;
  warnings: number;
}

export function decodeStmtPrepareOk(payload: Buffer): StmtPrepareOk {
  const r = expectHeader(payload, OK_HEADER, 'COM_STMT_PREPARE OK');
  const statementId = r.u32();
  const numColumns = r.u16();
  const numParams = r.u16();
  r.skip(1); // reserved
  // Warning count is present from 4.1 on; a metadata_follows byte may follow (optional metadata, unsupported).
  const warnings = r.left >= 2 ? r.u16() : 0;
  return { statementId, numColumns, numParams, warnings };
}

export function encodeStmtPrepareOk(p: StmtPrepareOk): Buffer {
  return new Writer().u8(OK_HEADER).u32(p.statementId).u16(p.numColumns).u16(p.numParams).u8(0).u16(p.warnings).finish();
}

export interface ParamType {
  type: number;
  unsigned: boolean;
}

export interface ExecuteParam extends ParamType {
  /** binary-protocol payload (see readBinaryValue); null for SQL NULL and for long-data parameters */
  value: Buffer | null;
  /** the value was streamed by COM_STMT_SEND_LONG_DATA and is not in this packet */
  longData: boolean;
}

export interface StmtExecute {
  /** 0xffffffff on MariaDB means "the statement prepared last" (prepare+execute pipelining) */
  statementId: number;
  flags: number;
  iterationCount: number;
  newParamsBound: boolean;
  params: ExecuteParam[];
  /** the types in effect for this execution: keep them as previousTypes for the next one */
  types: ParamType[];
}

export interface StmtExecuteOptions {
  /**
   * Indexes of parameters that received COM_STMT_SEND_LONG_DATA since the last execute/reset.
   * The server skips those when reading values (their NULL bit is ignored too), so the client
   * leaves them out of the packet; the caller must track them to decode the rest correctly, and
   * supplies the accumulated data itself. Returned with longData: true and value: null.
   */
  longData?: ReadonlySet<number>;
}

/**
 * COM_STMT_EXECUTE. `numParams` comes from the statement's COM_STMT_PREPARE OK. Types travel only
 * when new-params-bound is set; otherwise `previousTypes` (the types of the previous execution of
 * this statement) apply, and their absence is an error, as on the server. Assumes no
 * CLIENT_QUERY_ATTRIBUTES. Trailing bytes are refused when there are parameters, so the gateway
 * never records a parameter list that differs from what the server will bind.
 */
export function decodeStmtExecute(
  payload: Buffer,
  numParams: number,
  previousTypes?: readonly ParamType[],
  opts: StmtExecuteOptions = {},
): StmtExecute {
  const r = commandReader(payload, COM_STMT_EXECUTE);
  const statementId = r.u32();
  const flags = r.u8();
  const iterationCount = r.u32();
  const out: StmtExecute = { statementId, flags, iterationCount, newParamsBound: false, params: [], types: [] };
  // With no parameters nothing else is read; like the server, ignore anything after.
  if (numParams === 0) return out;
  const bitmap = r.bytes((numParams + 7) >> 3);
  out.newParamsBound = r.u8() !== 0;
  let types: ParamType[];
  if (out.newParamsBound) {
    types = [];
    for (let i = 0; i < numParams; i++) {
      const t = r.u16();
      const type = t & 0xff;
      if (!isWireType(type)) throw malformed(`unsupported parameter type ${type}`);
      types.push({ type, unsigned: (t & 0x8000) !== 0 });
    }
  } else {
    if (!previousTypes || previousTypes.length !== numParams) {
      throw new ProtocolError('COM_STMT_EXECUTE without parameter types for a statement never bound', ER_WRONG_ARGUMENTS, 'HY000');
    }
    types = previousTypes.map((t) => ({ type: t.type, unsigned: t.unsigned }));
  }
  for (let i = 0; i < numParams; i++) {
    const { type, unsigned } = types[i]!;
    if (opts.longData?.has(i)) {
      out.params.push({ type, unsigned, value: null, longData: true });
      continue;
    }
    const isNull = (bitmap[i >> 3]! & (1 << (i & 7))) !== 0 || type === MYSQL_TYPE_NULL;
    out.params.push({ type, unsigned, value: isNull ? null : readBinaryValue(r, type), longData: false });
  }
  r.end('COM_STMT_EXECUTE');
  out.types = types;
  return out;
}

export interface StmtExecuteInput {
  statementId: number;
  flags?: number;
  iterationCount?: number;
  /** when false, types are not sent and the server reuses those of the previous execution */
  newParamsBound: boolean;
  params: readonly (ParamType & { value: Buffer | null; longData?: boolean })[];
}

/** For the gateway's own executions upstream (and tests). Long-data parameters are left out, as clients do. */
export function encodeStmtExecute(e: StmtExecuteInput): Buffer {
  const w = new Writer().u8(COM_STMT_EXECUTE).u32(e.statementId).u8(e.flags ?? 0).u32(e.iterationCount ?? 1);
  const n = e.params.length;
  if (n === 0) return w.finish();
  const bitmap = Buffer.alloc((n + 7) >> 3);
  e.params.forEach((p, i) => {
    if (p.value === null && !p.longData) bitmap[i >> 3] |= 1 << (i & 7);
  });
  w.bytes(bitmap).u8(e.newParamsBound ? 1 : 0);
  if (e.newParamsBound) for (const p of e.params) w.u16(p.type | (p.unsigned ? 0x8000 : 0));
  for (const p of e.params) {
    if (p.value === null || p.longData) continue;
    const b = Buffer.alloc(binaryValueSize(p.type, p.value));
    writeBinaryValue(b, 0, p.type, p.value);
    w.bytes(b);
  }
  return w.finish();
}

// ---------- rendering values for the journal ----------

export const DEFAULT_RENDER_MAX_BYTES = 4096;

export interface RenderOptions {
  unsigned?: boolean;
  /** cut point for strings and blobs, in bytes of the value (default 4096) */
  maxBytes?: number;
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function hex(v: Buffer, max: number): string {
  const cut = v.length > max;
  return '\\x' + v.subarray(0, max).toString('hex') + (cut ? `…(+${v.length - max} bytes)` : '');
}

/** UTF-8 text if the (cut) bytes are valid UTF-8, else hex: the journal must never hold mojibake. */
function text(v: Buffer, max: number): string {
  let end = Math.min(v.length, max);
  // Back up to a character boundary so a cut never splits a multi-byte sequence.
  if (end < v.length) while (end > 0 && (v[end]! & 0xc0) === 0x80) end--;
  try {
    const s = utf8Strict.decode(v.subarray(0, end));
    return end < v.length ? `${s}…(+${v.length - end} bytes)` : s;
  } catch {
    return hex(v, max);
  }
}

function renderDate(v: Buffer, withTime: boolean): string {
  if (v.length === 0) return withTime ? '0000-00-00 00:00:00' : '0000-00-00';
  let s = `${pad(v.readUInt16LE(0), 4)}-${pad(v[2]!)}-${pad(v[3]!)}`;
  if (!withTime) return s;
  s += v.length >= 7 ? ` ${pad(v[4]!)}:${pad(v[5]!)}:${pad(v[6]!)}` : ' 00:00:00';
  if (v.length === 11) {
    const us = v.readUInt32LE(7);
    if (us) s += '.' + pad(us, 6);
  }
  return s;
}

function renderTime(v: Buffer): string {
  if (v.length === 0) return '00:00:00';
  const neg = v[0] !== 0;
  const hours = v.readUInt32LE(1) * 24 + v[5]!;
  let s = `${neg ? '-' : ''}${pad(hours)}:${pad(v[6]!)}:${pad(v[7]!)}`;
  if (v.length === 12) {
    const us = v.readUInt32LE(8);
    if (us) s += '.' + pad(us, 6);
  }
  return s;
}

/**
 * Human-readable rendering of a binary-protocol value (an execute parameter or a binary-row cell)
 * for the journal: integers as decimal (signedness from `unsigned`), floats as JS numbers (FLOAT at
 * its 7 significant digits), DECIMAL as sent, dates as 'YYYY-MM-DD[ HH:MM:SS[.ffffff]]', TIME as
 * '[-]HH:MM:SS[.ffffff]' (hours may exceed 24), text types as UTF-8, blobs/BIT/GEOMETRY as '\x'
 * hex. Long values are cut at maxBytes with a '…(+N bytes)' marker. Null for SQL NULL.
 */
export function renderParam(type: number, value: Buffer | null, opts: RenderOptions = {}): string | null {
  if (value === null || type === MYSQL_TYPE_NULL) return null;
  const max = opts.maxBytes ?? DEFAULT_RENDER_MAX_BYTES;
  const u = opts.unsigned ?? false;
  const fixed = FIXED_SIZE[type];
  if (fixed !== undefined && value.length !== fixed) return hex(value, max);
  switch (type) {
    case MYSQL_TYPE_TINY:
      return String(u ? value.readUInt8(0) : value.readInt8(0));
    case MYSQL_TYPE_SHORT:
      return String(u ? value.readUInt16LE(0) : value.readInt16LE(0));
    case MYSQL_TYPE_YEAR:
      return String(value.readUInt16LE(0));
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
      return String(u ? value.readUInt32LE(0) : value.readInt32LE(0));
    case MYSQL_TYPE_LONGLONG:
      return (u ? value.readBigUInt64LE(0) : value.readBigInt64LE(0)).toString();
    case MYSQL_TYPE_FLOAT:
      return String(Number(value.readFloatLE(0).toPrecision(7)));
    case MYSQL_TYPE_DOUBLE:
      return String(value.readDoubleLE(0));
    case MYSQL_TYPE_DATE:
      return DATE_LENGTHS.has(value.length) ? renderDate(value, false) : hex(value, max);
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_TIMESTAMP:
      return DATE_LENGTHS.has(value.length) ? renderDate(value, true) : hex(value, max);
    case MYSQL_TYPE_TIME:
      return TIME_LENGTHS.has(value.length) ? renderTime(value) : hex(value, max);
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
    case MYSQL_TYPE_BLOB:
    case MYSQL_TYPE_GEOMETRY:
    case MYSQL_TYPE_BIT:
    case MYSQL_TYPE_VECTOR:
      return hex(value, max);
    default:
      // DECIMAL/NEWDECIMAL (ASCII digits), VARCHAR/VAR_STRING/STRING/ENUM/SET/JSON, and anything unknown.
      return text(value, max);
  }
}
