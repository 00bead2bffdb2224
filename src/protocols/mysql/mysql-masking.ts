// Masking of MySQL result sets and errors, at the wire level but without sockets: the relay
// plans once per result set from its column definitions, then hands every row packet (text or
// binary protocol) and every ERR packet here, and forwards what comes back.
//
//   const plan = planColumns(masker, columnDefinitions);    // once per result set
//   const out = maskTextRow(plan, payload, counts);          // COM_QUERY rows
//   const out = maskBinaryRow(plan, payload, columns, counts); // COM_STMT_EXECUTE / FETCH rows
//   const out = maskErrMessage(masker, payload, counts);     // any ERR packet
//   // out === null: forward `payload` untouched; else forward `out` (re-framed: its length changed,
//   // and past 16 MiB so may its number of physical packets, which shifts later sequence ids)
//
// Decisions (the MySQL counterpart of docs/masking.md "Where it applies (PostgreSQL)"):
//   - A column is identified like PostgreSQL's catalog lookup does it: when the definition
//     names its origin (orgTable), `schema.orgTable.orgName`, so an alias (`email AS e`) or a
//     table alias does not escape a rule; otherwise (expressions) only the alias, with schema
//     and table empty. The MySQL schema is the database.
//   - Character strings (CHAR, VARCHAR, TEXT, JSON) get the column rule or the detectors, and
//     may change length (the length prefix is rewritten; column definitions are not).
//   - Binary strings (charset 63: BINARY, VARBINARY, BLOB) are scanned when the value is valid
//     UTF-8: MySQL schemas often keep text in them (and 5.x expressions return binary strings).
//     Other byte values (images, hashes, compressed data) are opaque, as bytea is for the
//     PostgreSQL adapter: only a column rule replaces them.
//   - ENUM and SET values must be members of their type: any masking makes them NULL.
//   - Integers and DECIMAL are scanned (a card number fits in a BIGINT), in both protocols, but a
//     number cannot hold `****1111`: masking makes them NULL. Floats, dates, times, YEAR, BIT,
//     GEOMETRY and VECTOR are never scanned; a column rule makes them NULL, the one value valid
//     for every type.
//   - Fixed CHAR(n) and BINARY(n): MySQL strips CHAR padding on the wire anyway and clients do
//     not enforce the declared length, so a masked value may be longer than n. A client that
//     sizes buffers from the definition's length sees a truncation it can report.
//   - Text is decoded as UTF-8; a value that is not valid UTF-8 (latin1, cp1251, gbk clients) is
//     decoded byte for byte (latin1), so every unmasked byte goes back exactly as it came and
//     ASCII secrets are still found. UTF-16/UTF-32 results (character_set_results = NULL over
//     such columns) are not readable this way: column rules still apply, detectors miss.
//
// Every length comes from the wire and is checked before use: a malformed payload throws
// MysqlMaskError (a ProtocolError), never reads past the payload.
import { isUtf8 } from 'node:buffer';
import { addCount, type Counts } from '../../mask/counts.ts';
import type { ColumnPlanEntry, ColumnRef, Masker } from '../../mask/masker.ts';
import { ProtocolError, lenEncIntSize, writeLenEncIntInto } from './codec.ts';
import {
  CHARSET_BINARY,
  ENUM_FLAG,
  ERR_HEADER,
  MYSQL_TYPE_DATE,
  MYSQL_TYPE_DATETIME,
  MYSQL_TYPE_DECIMAL,
  MYSQL_TYPE_DOUBLE,
  MYSQL_TYPE_ENUM,
  MYSQL_TYPE_FLOAT,
  MYSQL_TYPE_INT24,
  MYSQL_TYPE_JSON,
  MYSQL_TYPE_LONG,
  MYSQL_TYPE_LONGLONG,
  MYSQL_TYPE_NEWDECIMAL,
  MYSQL_TYPE_NULL,
  MYSQL_TYPE_SET,
  MYSQL_TYPE_SHORT,
  MYSQL_TYPE_TIME,
  MYSQL_TYPE_TIMESTAMP,
  MYSQL_TYPE_TINY,
  MYSQL_TYPE_YEAR,
  OK_HEADER,
  SET_FLAG,
  UNSIGNED_FLAG,
  isStringType,
  isWireType,
} from './packets.ts';

/** A row or ERR packet this module cannot decode. The relay withholds the result (or closes). */
export class MysqlMaskError extends ProtocolError {
  constructor(message: string) {
    super(`malformed packet: ${message}`);
    this.name = 'MysqlMaskError';
  }
}

/** What planColumns reads from a column definition (packets.ts ColumnDefinition fits). */
export interface MaskColumn {
  schema: string;
  table: string;
  orgTable: string;
  name: string;
  orgName: string;
  type: number;
  charset: number;
  flags: number;
}

// What to do with a column's values, decided once per result set.
/** nothing: forward as is (still walked, to find the next value) */
const A_NONE = 0;
/** character string: rule or detectors, result re-encoded */
const A_TEXT = 1;
/** binary string: as A_TEXT when valid UTF-8, else only a rule applies */
const A_BYTES = 2;
/** ENUM/SET, integers, DECIMAL: detectors; any change makes the value NULL */
const A_SCAN_OR_NULL = 3;
/** a column rule on a type that cannot carry its output: NULL */
const A_NULLIFY = 4;

// How a value sits in a binary row.
const W_LENENC = -1;
const W_DATE = -2;
const W_TIME = -3;
const W_ABSENT = -4; // MYSQL_TYPE_NULL: no bytes, always NULL
const W_UNSUPPORTED = -5;

export interface MysqlMaskPlan {
  readonly masker: Masker;
  readonly entries: readonly ColumnPlanEntry[];
  /** A_* per column */
  readonly actions: Uint8Array;
  /** binary rows: fixed byte size (>0) or W_* per column */
  readonly wire: Int8Array;
  /** binary rows: integer columns read unsigned */
  readonly unsigned: Uint8Array;
  /** some column needs its values looked at; when false rows are only walked, never changed */
  readonly active: boolean;
}

const INTEGER_SIZE: Readonly<Record<number, number>> = {
  [MYSQL_TYPE_TINY]: 1,
  [MYSQL_TYPE_SHORT]: 2,
  [MYSQL_TYPE_LONG]: 4,
  [MYSQL_TYPE_INT24]: 4,
  [MYSQL_TYPE_LONGLONG]: 8,
};

/** The identity rules match on: the origin column when the server names it, else the alias. */
export function columnRef(c: MaskColumn): ColumnRef {
  if (c.orgTable) return { schema: c.schema, table: c.orgTable, name: c.orgName || c.name };
  return { name: c.name };
}

/** Once per result set (or per prepared statement's result columns). */
export function planColumns(masker: Masker, columns: readonly MaskColumn[]): MysqlMaskPlan {
  const entries = masker.forColumns(columns.map(columnRef));
  const n = columns.length;
  const actions = new Uint8Array(n);
  const wire = new Int8Array(n);
  const unsigned = new Uint8Array(n);
  const detectors = masker.slots.length > 0;
  let active = false;
  for (let i = 0; i < n; i++) {
    const c = columns[i]!;
    const rule = entries[i]!.kind === 'rule';
    actions[i] = action(c, rule, detectors);
    wire[i] = wireLayout(c.type);
    unsigned[i] = (c.flags & UNSIGNED_FLAG) !== 0 ? 1 : 0;
    if (actions[i] !== A_NONE) active = true;
  }
  return { masker, entries, actions, wire, unsigned, active };
}

function action(c: MaskColumn, rule: boolean, detectors: boolean): number {
  const t = c.type;
  const constrained = t === MYSQL_TYPE_ENUM || t === MYSQL_TYPE_SET || (c.flags & (ENUM_FLAG | SET_FLAG)) !== 0;
  if (constrained || t in INTEGER_SIZE || t === MYSQL_TYPE_DECIMAL || t === MYSQL_TYPE_NEWDECIMAL) {
    if (rule) return A_NULLIFY;
    return detectors ? A_SCAN_OR_NULL : A_NONE;
  }
  if (isStringType(t)) {
    if (!rule && !detectors) return A_NONE;
    // JSON is always utf8mb4 text, though MySQL labels its columns binary.
    return c.charset === CHARSET_BINARY && t !== MYSQL_TYPE_JSON ? A_BYTES : A_TEXT;
  }
  // floats, temporal types, YEAR, BIT, GEOMETRY, VECTOR, NULL
  return rule ? A_NULLIFY : A_NONE;
}

function wireLayout(t: number): number {
  const int = INTEGER_SIZE[t];
  if (int !== undefined) return int;
  if (t === MYSQL_TYPE_YEAR) return 2;
  if (t === MYSQL_TYPE_FLOAT) return 4;
  if (t === MYSQL_TYPE_DOUBLE) return 8;
  if (t === MYSQL_TYPE_DATE || t === MYSQL_TYPE_DATETIME || t === MYSQL_TYPE_TIMESTAMP) return W_DATE;
  if (t === MYSQL_TYPE_TIME) return W_TIME;
  if (t === MYSQL_TYPE_NULL) return W_ABSENT;
  return isWireType(t) ? W_LENENC : W_UNSUPPORTED;
}

// ---------- values ----------

/** A value to replace: payload[start, end) (its length prefix included) becomes `value`. */
interface Edit {
  start: number;
  end: number;
  /** null: SQL NULL */
  value: Buffer | null;
}

/** `undefined` when the value stays as it is. */
type Masked = Buffer | null | undefined;

/** Decodes text: UTF-8 when valid, else byte for byte (so re-encoding restores every byte). */
function decode(buf: Buffer, s: number, e: number): { text: string; latin1: boolean } {
  const text = buf.toString('utf8', s, e);
  // Invalid UTF-8 always decodes to U+FFFD; V8 answers this at once for one-byte (ASCII/latin1) strings.
  if (text.indexOf('\uFFFD') < 0 || isUtf8(buf.subarray(s, e))) return { text, latin1: false };
  return { text: buf.toString('latin1', s, e), latin1: true };
}

function encode(text: string, latin1: boolean): Buffer {
  if (!latin1) return Buffer.from(text, 'utf8');
  // A label (a column's name) may hold characters latin1 cannot: '?' rather than a wrong byte.
  return Buffer.from(/[^\x00-\xff]/.test(text) ? text.replace(/[^\x00-\xff]/g, '?') : text, 'latin1');
}

function maskString(plan: MysqlMaskPlan, i: number, text: string, latin1: boolean, counts: Counts): Masked {
  const m = plan.masker.maskValue(text, plan.entries[i]!, counts);
  if (m === text) return undefined;
  return m === null ? null : encode(m, latin1);
}

/** The masked form of payload[s, e), a value of column i (action not A_NONE). */
function maskCell(plan: MysqlMaskPlan, i: number, buf: Buffer, s: number, e: number, counts: Counts): Masked {
  switch (plan.actions[i]) {
    case A_TEXT: {
      const d = decode(buf, s, e);
      return maskString(plan, i, d.text, d.latin1, counts);
    }
    case A_BYTES: {
      const entry = plan.entries[i]!;
      if (isUtf8(buf.subarray(s, e))) return maskString(plan, i, buf.toString('utf8', s, e), false, counts);
      // Opaque bytes: a rule still replaces them (hash and partial see them byte for byte).
      return entry.kind === 'rule' ? maskString(plan, i, buf.toString('latin1', s, e), true, counts) : undefined;
    }
    case A_SCAN_OR_NULL:
      return scanOrNull(plan, i, buf.toString('utf8', s, e), counts);
    case A_NULLIFY:
      return nullify(plan, i, counts);
    default:
      return undefined;
  }
}

function scanOrNull(plan: MysqlMaskPlan, i: number, text: string, counts: Counts): Masked {
  return plan.masker.maskValue(text, plan.entries[i]!, counts) === text ? undefined : null;
}

function nullify(plan: MysqlMaskPlan, i: number, counts: Counts): null {
  const entry = plan.entries[i]!;
  if (entry.kind === 'rule') addCount(counts, entry.key);
  return null;
}

// ---------- text-protocol rows ----------

/**
 * Masks a text-protocol row (one length-encoded string or 0xfb per column). Returns the new
 * payload, or null when nothing changed (then nothing was copied). Throws MysqlMaskError when
 * the payload does not hold exactly one value per planned column.
 */
export function maskTextRow(plan: MysqlMaskPlan, payload: Buffer, counts: Counts): Buffer | null {
  const n = plan.actions.length;
  const len = payload.length;
  let off = 0;
  let edits: Edit[] | null = null;
  for (let i = 0; i < n; i++) {
    if (off >= len) throw new MysqlMaskError(`text row ends before column ${i + 1} of ${n}`);
    const first = payload[off]!;
    if (first === 0xfb) {
      off++;
      continue;
    }
    const start = off;
    let size: number;
    if (first < 0xfb) {
      size = first;
      off++;
    } else {
      const h = readLength(payload, off, first);
      size = h.size;
      off = h.next;
    }
    const end = off + size;
    if (end > len) throw new MysqlMaskError(`text row value of ${size} bytes overruns the packet`);
    if (plan.actions[i] !== A_NONE) {
      const m = maskCell(plan, i, payload, off, end, counts);
      if (m !== undefined) (edits ??= []).push({ start, end, value: m });
    }
    off = end;
  }
  if (off !== len) throw new MysqlMaskError(`${len - off} unexpected trailing bytes in text row`);
  return edits === null ? null : rebuild(payload, edits, null);
}

/** A 0xfc/0xfd/0xfe length prefix at off (`first` = payload[off]). */
function readLength(buf: Buffer, off: number, first: number): { size: number; next: number } {
  const width = first === 0xfc ? 2 : first === 0xfd ? 3 : first === 0xfe ? 8 : 0;
  if (width === 0) throw new MysqlMaskError(`invalid length prefix 0x${first.toString(16)}`);
  if (off + 1 + width > buf.length) throw new MysqlMaskError('length prefix overruns the packet');
  let size: number;
  if (width === 8) {
    const v = buf.readBigUInt64LE(off + 1);
    // No payload is anywhere near 2^53 bytes: this only guards the conversion.
    if (v > BigInt(buf.length)) throw new MysqlMaskError(`value of ${v} bytes overruns the packet`);
    size = Number(v);
  } else size = buf.readUIntLE(off + 1, width);
  return { size, next: off + 1 + width };
}

/**
 * Copies `payload` with the edits applied (in order, not overlapping), in one allocation. Text
 * rows (`nulls` null) write a NULL as 0xfb; binary rows drop its bytes and set the columns'
 * bits in the bitmap at `nulls.bitmapAt` (before every value, so no edit moves it).
 */
function rebuild(payload: Buffer, edits: Edit[], nulls: { bitmapAt: number; cols: number[] } | null): Buffer {
  let size = payload.length;
  for (const e of edits) {
    size -= e.end - e.start;
    if (e.value !== null) size += lenEncIntSize(e.value.length) + e.value.length;
    else if (nulls === null) size += 1;
  }
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  let p = 0;
  for (const e of edits) {
    o += payload.copy(out, o, p, e.start);
    if (e.value !== null) {
      o = writeLenEncIntInto(out, o, e.value.length);
      o += e.value.copy(out, o);
    } else if (nulls === null) out[o++] = 0xfb;
    p = e.end;
  }
  o += payload.copy(out, o, p);
  if (nulls !== null) for (const c of nulls.cols) out[nulls.bitmapAt + ((c + 2) >> 3)]! |= 1 << ((c + 2) & 7);
  return out;
}

// ---------- binary-protocol rows ----------

/**
 * Masks a binary-protocol row (COM_STMT_EXECUTE / COM_STMT_FETCH results): 0x00, a NULL bitmap
 * with a 2-bit offset, then the non-NULL values. `columns` are the result set's definitions the
 * plan was made from (their types give the layout). Returns the new payload or null when nothing
 * changed; a value masked to NULL gets its bitmap bit and loses its bytes.
 */
export function maskBinaryRow(plan: MysqlMaskPlan, payload: Buffer, columns: readonly { type: number }[], counts: Counts): Buffer | null {
  const n = plan.actions.length;
  if (columns.length !== n) throw new MysqlMaskError(`binary row of ${columns.length} columns for a plan of ${n}`);
  const len = payload.length;
  if (len === 0 || payload[0] !== OK_HEADER) throw new MysqlMaskError('not a binary row');
  const bitmapLen = (n + 9) >> 3;
  let off = 1 + bitmapLen;
  if (off > len) throw new MysqlMaskError('binary row shorter than its NULL bitmap');
  let edits: Edit[] | null = null;
  let nullCols: number[] | null = null;
  for (let i = 0; i < n; i++) {
    const bit = i + 2;
    if ((payload[1 + (bit >> 3)]! & (1 << (bit & 7))) !== 0) continue;
    const w = plan.wire[i]!;
    if (w === W_ABSENT) continue;
    const start = off;
    let s: number; // the value's bytes: payload[s, end)
    let end: number;
    if (w > 0) {
      s = off;
      end = off + w;
    } else if (w === W_LENENC) {
      if (off >= len) throw new MysqlMaskError(`binary row ends before column ${i + 1} of ${n}`);
      const first = payload[off]!;
      if (first < 0xfb) {
        s = off + 1;
        end = s + first;
      } else {
        if (first === 0xfb) throw new MysqlMaskError('NULL marker in a binary row');
        const h = readLength(payload, off, first);
        s = h.next;
        end = s + h.size;
      }
    } else if (w === W_DATE || w === W_TIME) {
      if (off >= len) throw new MysqlMaskError(`binary row ends before column ${i + 1} of ${n}`);
      const k = payload[off]!;
      if (w === W_DATE ? k !== 0 && k !== 4 && k !== 7 && k !== 11 : k !== 0 && k !== 8 && k !== 12) {
        throw new MysqlMaskError(`invalid temporal value length ${k}`);
      }
      s = off + 1;
      end = s + k;
    } else {
      throw new MysqlMaskError(`unsupported binary type ${columns[i]!.type}`);
    }
    if (end > len) throw new MysqlMaskError(`binary row value of ${end - s} bytes overruns the packet`);
    off = end;
    if (plan.actions[i] === A_NONE) continue;
    const m = w > 0 ? maskInteger(plan, i, payload, s, w, counts) : maskCell(plan, i, payload, s, end, counts);
    if (m === undefined) continue;
    (edits ??= []).push({ start, end, value: m });
    if (m === null) (nullCols ??= []).push(i);
  }
  if (off !== len) throw new MysqlMaskError(`${len - off} unexpected trailing bytes in binary row`);
  return edits === null ? null : rebuild(payload, edits, { bitmapAt: 1, cols: nullCols ?? [] });
}

/** A fixed-size binary value: integers are scanned as their decimal text; others only nullified. */
function maskInteger(plan: MysqlMaskPlan, i: number, buf: Buffer, s: number, size: number, counts: Counts): Masked {
  if (plan.actions[i] !== A_SCAN_OR_NULL) return plan.actions[i] === A_NULLIFY ? nullify(plan, i, counts) : undefined;
  const u = plan.unsigned[i] === 1;
  let text: string;
  switch (size) {
    case 1:
      text = String(u ? buf.readUInt8(s) : buf.readInt8(s));
      break;
    case 2:
      text = String(u ? buf.readUInt16LE(s) : buf.readInt16LE(s));
      break;
    case 4:
      text = String(u ? buf.readUInt32LE(s) : buf.readInt32LE(s));
      break;
    default:
      text = (u ? buf.readBigUInt64LE(s) : buf.readBigInt64LE(s)).toString();
  }
  return scanOrNull(plan, i, text, counts);
}

// ---------- ERR packets ----------

/**
 * Masks the message of an ERR packet (`Duplicate entry 'alice@example.com' for key …` echoes
 * values) with the detectors. Returns the new payload, or null when nothing changed. MariaDB
 * progress reports (code 0xffff, only sent to clients announcing progress support) are left alone.
 */
export function maskErrMessage(masker: Masker, payload: Buffer, counts?: Counts): Buffer | null {
  if (payload.length < 3 || payload[0] !== ERR_HEADER) throw new MysqlMaskError('not an ERR packet');
  if (payload.readUInt16LE(1) === 0xffff) return null;
  let at = 3;
  if (payload.length > 3 && payload[3] === 0x23) {
    if (payload.length < 9) throw new MysqlMaskError('ERR packet shorter than its SQLSTATE');
    at = 9;
  }
  if (at === payload.length) return null;
  const d = decode(payload, at, payload.length);
  const m = masker.maskText(d.text, counts);
  if (m === d.text) return null;
  return Buffer.concat([payload.subarray(0, at), encode(m, d.latin1)]);
}
