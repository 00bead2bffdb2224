// asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a header line of JSON, then
// one JSON array per event, `[time, code, data]`, time in seconds (float) from the start, code
// `o` (output), `i` (input) or `r` (resize, data "COLSxROWS").
//
// Pure: encoding and decoding only. The shell adapter records events in bounded chunks as
// journal `output` events ({ cast: [[t, code, data], …] }), with the header kept in the shell's
// command event; the CLI rebuilds the .cast from the journal alone.

export type CastCode = 'o' | 'i' | 'r' | 'm';
export type CastEvent = [number, CastCode, string];

export interface CastHeader {
  version: 2;
  width: number;
  height: number;
  /** unix seconds of the start */
  timestamp?: number;
  title?: string;
  env?: Record<string, string>;
  idle_time_limit?: number;
}

/** Seconds with microsecond precision, as asciinema writes them. */
export function castTime(seconds: number): number {
  return Math.max(0, Math.round(seconds * 1e6) / 1e6);
}

export function resizeData(cols: number, rows: number): string {
  return `${cols}x${rows}`;
}

export function parseResize(data: string): { cols: number; rows: number } | null {
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(data);
  return m ? { cols: Number(m[1]), rows: Number(m[2]) } : null;
}

export function encodeHeader(h: CastHeader): string {
  const out: Record<string, unknown> = { version: 2, width: h.width, height: h.height };
  if (h.timestamp !== undefined) out.timestamp = h.timestamp;
  if (h.idle_time_limit !== undefined) out.idle_time_limit = h.idle_time_limit;
  if (h.title !== undefined) out.title = h.title;
  if (h.env && Object.keys(h.env).length) out.env = h.env;
  return JSON.stringify(out);
}

export function encodeEvent(e: CastEvent): string {
  return JSON.stringify([castTime(e[0]), e[1], e[2]]);
}

/** A whole .cast file: the header line, then one line per event, each ending in '\n'. */
export function encodeCast(h: CastHeader, events: Iterable<CastEvent>): string {
  let s = encodeHeader(h) + '\n';
  for (const e of events) s += encodeEvent(e) + '\n';
  return s;
}

export class CastFormatError extends Error {
  override name = 'CastFormatError';
}

function isEvent(v: unknown): v is CastEvent {
  return Array.isArray(v) && v.length === 3 && typeof v[0] === 'number' && Number.isFinite(v[0]) && v[0] >= 0 && (v[1] === 'o' || v[1] === 'i' || v[1] === 'r' || v[1] === 'm') && typeof v[2] === 'string';
}

/** Checks one event as stored in the journal; throws CastFormatError. */
export function checkEvent(v: unknown): CastEvent {
  if (!isEvent(v)) throw new CastFormatError(`not an asciicast v2 event: ${JSON.stringify(v)?.slice(0, 80)}`);
  return v;
}

/** Parses a .cast text; throws CastFormatError with the line number. Events must not go back in time. */
export function decodeCast(text: string): { header: CastHeader; events: CastEvent[] } {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (lines.length === 0) throw new CastFormatError('empty file: expected a header line');
  let header: CastHeader;
  try {
    header = JSON.parse(lines[0]!) as CastHeader;
  } catch {
    throw new CastFormatError('line 1: the header is not JSON');
  }
  if (!header || typeof header !== 'object' || header.version !== 2) throw new CastFormatError('line 1: expected {"version": 2, …}');
  if (!Number.isInteger(header.width) || header.width < 1 || !Number.isInteger(header.height) || header.height < 1) throw new CastFormatError('line 1: width and height must be positive integers');
  const events: CastEvent[] = [];
  let last = 0;
  for (let i = 1; i < lines.length; i++) {
    if (lines[i] === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(lines[i]!);
    } catch {
      throw new CastFormatError(`line ${i + 1}: not JSON`);
    }
    if (!isEvent(v)) throw new CastFormatError(`line ${i + 1}: expected [time, "o"|"i"|"r"|"m", data]`);
    if (v[0] < last) throw new CastFormatError(`line ${i + 1}: time goes back (${v[0]} < ${last})`);
    if (v[1] === 'r' && !parseResize(v[2])) throw new CastFormatError(`line ${i + 1}: a resize is "COLSxROWS"`);
    last = v[0];
    events.push(v);
  }
  return { header, events };
}

/**
 * The waits of a replay: for each event, seconds to wait before it. `speed` divides the
 * recorded gaps; `maxWait` caps each gap (after the speed-up), as asciinema's idle_time_limit.
 */
export function replayDelays(events: readonly CastEvent[], opts: { speed?: number; maxWait?: number } = {}): number[] {
  const speed = opts.speed && opts.speed > 0 ? opts.speed : 1;
  const max = opts.maxWait !== undefined && opts.maxWait >= 0 ? opts.maxWait : Infinity;
  const out: number[] = [];
  let prev = 0;
  for (const e of events) {
    const gap = Math.max(0, e[0] - prev) / speed;
    out.push(Math.min(gap, max));
    prev = Math.max(prev, e[0]);
  }
  return out;
}
