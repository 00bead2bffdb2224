// Masking of response bodies on their way to the client. A Transform between the upstream
// response and the client, so the body still streams with backpressure: text is masked as it
// arrives (StreamMasker holds back only what a detector may still need), JSON additionally by
// key name (JsonStreamMasker), so `"password": "…"` is masked whatever its value looks like.
import { Transform, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Masker } from '../../mask/masker.ts';
import type { StreamMasker } from '../../mask/stream.ts';
import { JsonStreamMasker } from '../../mask/json-stream.ts';
import type { Counts } from '../../mask/counts.ts';

export type BodyKind = 'json' | 'text' | 'binary';

/** How a body of this media type is masked: JSON by key and detectors, text by detectors, binary not at all. */
export function bodyKind(contentType: string | undefined): BodyKind {
  const t = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (/^application\/([\w.-]+\+)?json$/.test(t) || t === 'application/x-ndjson' || t === 'application/jsonl' || t === 'application/json-seq') return 'json';
  // No declared type: scanned as text rather than trusted to be harmless.
  if (t === '' || /^text\//.test(t) || /^application\/([\w.-]+\+)?(xml|x-www-form-urlencoded|javascript|graphql|yaml|x-yaml)$/.test(t)) return 'text';
  return 'binary';
}

/** A transform that masks a body; `counts` holds what was masked once it has ended. */
export interface BodyMasker extends Transform {
  readonly counts: Counts;
}

export function createBodyMasker(masker: Masker, kind: Exclude<BodyKind, 'binary'>): BodyMasker {
  return kind === 'json' ? new JsonBodyMasker(new JsonStreamMasker(masker)) : new TextBodyMasker(masker.stream());
}

class TextBodyMasker extends Transform implements BodyMasker {
  private readonly decoder = new StringDecoder('utf8');
  constructor(private readonly s: StreamMasker) {
    super();
  }
  get counts(): Counts {
    return this.s.counts;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const out = this.s.push(this.decoder.write(chunk));
    cb(null, out.length ? Buffer.from(out, 'utf8') : undefined);
  }
  override _flush(cb: TransformCallback): void {
    const out = this.s.push(this.decoder.end()) + this.s.end();
    cb(null, out.length ? Buffer.from(out, 'utf8') : undefined);
  }
}

class JsonBodyMasker extends Transform implements BodyMasker {
  constructor(private readonly s: JsonStreamMasker) {
    super();
  }
  get counts(): Counts {
    return this.s.counts;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const out = this.s.push(chunk);
    cb(null, out.length ? out : undefined);
  }
  override _flush(cb: TransformCallback): void {
    const out = this.s.end();
    cb(null, out.length ? out : undefined);
  }
}
