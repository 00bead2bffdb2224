// Removes the usage-only chunk the gateway asked for on a client's behalf. For chat streams the
// gateway sets `stream_options.include_usage` so the journal gets the token counts; the model
// then ends the stream with a chunk whose `choices` is empty. A client that did not ask for it
// may read `choices[0]` of every chunk and fail, so that one event is dropped on the way out.
//
// Events are cut at blank lines (SSE); each is passed on as soon as it is complete. Only an event
// whose data is a JSON object with `"choices": []` and a `usage` is dropped; anything else,
// including what cannot be parsed, passes unchanged. An event over MAX_EVENT is passed unread.
import { Transform, type TransformCallback } from 'node:stream';

const MAX_EVENT = 256 * 1024;

export class SseUsageFilter extends Transform {
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** an event too large to inspect: passed through until its end */
  private passing = false;
  /** the current line has nothing but '\r' so far (a blank line ends an event) */
  private blank = false;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let start = 0;
    for (;;) {
      const end = this.eventEnd(chunk, start);
      if (end < 0) break;
      this.emitEvent(chunk.subarray(start, end));
      start = end;
    }
    const rest = chunk.subarray(start);
    if (rest.length) {
      if (this.passing || this.heldBytes + rest.length > MAX_EVENT) {
        this.passing = true;
        this.flushHeld();
        this.push(rest);
      } else {
        this.held.push(rest);
        this.heldBytes += rest.length;
      }
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.flushHeld();
    cb();
  }

  /** The index just after the next blank line at or after `from` (LF or CRLF lines), or -1. */
  private eventEnd(b: Buffer, from: number): number {
    for (let i = from; i < b.length; i++) {
      const c = b[i];
      if (c === 0x0a) {
        if (this.blank) {
          this.blank = true;
          return i + 1;
        }
        this.blank = true;
      } else if (c !== 0x0d) this.blank = false;
    }
    return -1;
  }

  private emitEvent(tail: Buffer): void {
    if (this.passing) {
      this.passing = false;
      this.push(tail);
      return;
    }
    const event = this.held.length ? Buffer.concat([...this.held, tail]) : tail;
    this.held = [];
    this.heldBytes = 0;
    if (event.length > MAX_EVENT || !isUsageOnly(event)) this.push(event);
  }

  private flushHeld(): void {
    if (this.held.length) this.push(Buffer.concat(this.held));
    this.held = [];
    this.heldBytes = 0;
  }
}

function isUsageOnly(event: Buffer): boolean {
  const text = event.toString('utf8');
  const data = text
    .split(/\r?\n/)
    .filter((l) => l.startsWith('data:'))
    .map((l) => l.slice(5).trimStart())
    .join('\n');
  if (!data.startsWith('{') || !data.includes('"usage"')) return false;
  try {
    const j = JSON.parse(data) as { choices?: unknown; usage?: unknown };
    return Array.isArray(j.choices) && j.choices.length === 0 && typeof j.usage === 'object' && j.usage !== null;
  } catch {
    return false;
  }
}
