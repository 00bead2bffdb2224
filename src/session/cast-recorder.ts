// Terminal recordings in the journal: asciicast events buffered and written as `output` events
// in bounded chunks, so a chatty terminal costs a journal write per 16 KiB or 100 ms, not per
// keystroke. Used by SSH shells and Kubernetes exec/attach.
import { castTime, type CastEvent } from './asciicast.ts';

/** Characters of cast data per journal event (events are bounded like every other record). */
const CHUNK_CHARS = 16 * 1024;
/** At most this long between an event and its journal write. */
const CHUNK_MS = 100;

/** Buffers cast events and writes them to the journal in bounded chunks. */
export class CastRecorder {
  private events: CastEvent[] = [];
  private chars = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = process.hrtime.bigint();
  chunks = 0;

  constructor(private readonly emit: (cast: CastEvent[]) => void) {}

  add(code: CastEvent[1], data: string): void {
    if (!data) return;
    const t = castTime(Number(process.hrtime.bigint() - this.t0) / 1e9);
    for (let i = 0; i < data.length; ) {
      let end = Math.min(data.length, i + (CHUNK_CHARS - this.chars));
      // never split a surrogate pair
      if (end < data.length && end > i + 1 && /[\udc00-\udfff]/.test(data[end]!)) end--;
      const piece = i === 0 && end === data.length ? data : data.slice(i, end);
      this.events.push([t, code, piece]);
      this.chars += piece.length + 16;
      i = end;
      if (this.chars >= CHUNK_CHARS) this.flush();
    }
    if (this.events.length && !this.timer) this.timer = setTimeout(() => this.flush(), CHUNK_MS);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.events.length) return;
    const cast = this.events;
    this.events = [];
    this.chars = 0;
    this.chunks++;
    this.emit(cast);
  }
}


