// Deterministic JSON: the bytes that get hashed into the journal. Two encoders that
// disagree on one character would break every chain, so the rules are fixed here:
// keys sorted by UTF-16 code units, no whitespace, JSON.stringify's string escaping.
// Hand-written because it runs for every journal event on the hot path; a generic
// JSON.stringify replacer would copy and sort every object twice.

// Deep enough for any real payload; shallow enough to stop a cycle or a hostile bundle
// before the JS stack overflows.
const MAX_DEPTH = 512;

// Most strings in events need no escaping; skipping the JSON.stringify call for them
// halves the encoder's cost. Lone surrogates are included so they get JSON's \u escapes.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

function str(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : '"' + s + '"';
}

// Event objects have a handful of keys, where insertion sort beats Array#sort's setup
// cost. `>` on strings compares UTF-16 code units, the same order as the default sort.
function sortKeys(keys: string[]): void {
  if (keys.length > 16) {
    keys.sort();
    return;
  }
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i];
    let j = i - 1;
    while (j >= 0 && keys[j] > k) {
      keys[j + 1] = keys[j];
      j--;
    }
    keys[j + 1] = k;
  }
}

export function canonical(value: unknown): string {
  return encode(value, 0) ?? 'null';
}

// Returns undefined for values JSON omits in objects (undefined, functions, symbols).
function encode(v: unknown, depth: number): string | undefined {
  switch (typeof v) {
    case 'string':
      return str(v);
    case 'number':
      // String() matches JSON.stringify for finite numbers, including -0 -> "0".
      return Number.isFinite(v) ? String(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      // As a string: JSON numbers beyond 2^53 do not survive a parse on the verifier side.
      return '"' + v.toString() + '"';
    case 'object':
      if (v === null) return 'null';
      if (depth >= MAX_DEPTH) throw new TypeError('canonical: value is nested too deeply (or circular)');
      if (Array.isArray(v)) return encodeArray(v, depth + 1);
      if (v instanceof Uint8Array) return '"' + Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') + '"';
      if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'null' : '"' + v.toISOString() + '"';
      if (typeof (v as { toJSON?: unknown }).toJSON === 'function') {
        return encode((v as { toJSON(): unknown }).toJSON(), depth + 1);
      }
      return encodeObject(v as Record<string, unknown>, depth + 1);
    default:
      return undefined;
  }
}

function encodeArray(a: readonly unknown[], depth: number): string {
  let out = '[';
  for (let i = 0; i < a.length; i++) {
    if (i > 0) out += ',';
    out += encode(a[i], depth) ?? 'null';
  }
  return out + ']';
}

function encodeObject(o: Record<string, unknown>, depth: number): string {
  const keys = Object.keys(o);
  sortKeys(keys);
  let out = '{';
  let first = true;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const s = encode(o[k], depth);
    if (s === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += str(k) + ':' + s;
  }
  return out + '}';
}
