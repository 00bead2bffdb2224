// A synchronous front end to sh-syntax (mvdan/sh, the parser behind shfmt, compiled with TinyGo
// to WASM). The guard's classifiers are synchronous, and the package's own `parse()` is async and
// compiles a fresh WASM instance per call, so this keeps one compiled module and drives its
// `process` export directly.
//
// What it gives: whether a command line is valid bash, and where its top-level statements
// start and end. The package's JSON does not describe nodes below a statement (a command is only
// {Pos, End}), so classify-shell.ts reads the inside with its own lexer and checks its statement
// boundaries against these, failing closed when the two disagree.
//
// Instances are recycled: TinyGo's garbage collector traps ("memory access out of bounds") once
// an instance has served about a thousand parses, so one serves at most RECYCLE_PARSES parses or
// RECYCLE_BYTES of input, and any trap is retried once on a fresh instance.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import 'sh-syntax';

const RECYCLE_PARSES = 400;
const RECYCLE_BYTES = 64 * 1024;
/** Longer command lines are not parsed at all; the classifier reports them as unknown. */
export const MAX_SHELL_INPUT = 64 * 1024;
const LANG_BASH = 1;

export interface ShStatement {
  /** offsets in UTF-8 bytes of the input (converted to string offsets by the caller) */
  start: number;
  end: number;
}

export type ShParseResult = { ok: true; statements: ShStatement[] } | { ok: false; error: string };

interface Exports {
  memory: WebAssembly.Memory;
  wasmAlloc(n: number): number;
  wasmFree(p: number): void;
  process(...args: unknown[]): number;
}

let module: WebAssembly.Module | null = null;
let current: { ex: Exports; parses: number; bytes: number } | null = null;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function compiled(): WebAssembly.Module {
  if (!module) {
    const require = createRequire(import.meta.url);
    const wasm = require.resolve('sh-syntax/package.json').replace(/package\.json$/, 'main.wasm');
    module = new WebAssembly.Module(fs.readFileSync(wasm));
  }
  return module;
}

function instance(size: number): Exports {
  if (current && current.parses < RECYCLE_PARSES && current.bytes + size < RECYCLE_BYTES) return current.ex;
  // wasm_exec.cjs (imported above through 'sh-syntax') defines the TinyGo runtime glue as a global.
  const Go = (globalThis as unknown as { Go: new () => { importObject: WebAssembly.Imports; run(i: WebAssembly.Instance): Promise<unknown> } }).Go;
  const go = new Go();
  const inst = new WebAssembly.Instance(compiled(), go.importObject);
  // Runs the Go program's start synchronously; the promise only settles when it exits.
  void go.run(inst).catch(() => {});
  current = { ex: inst.exports as unknown as Exports, parses: 0, bytes: 0 };
  return current.ex;
}

function runOnce(bytes: Uint8Array): string {
  const ex = instance(bytes.byteLength);
  current!.parses++;
  current!.bytes += bytes.byteLength;
  const ptr = ex.wasmAlloc(bytes.byteLength);
  new Uint8Array(ex.memory.buffer).set(bytes, ptr);
  // Arguments as sh-syntax's processor passes them: (filepath ptr,len,cap, text ptr,len,cap,
  // print, keepComments, variant, stopAt ptr,len,cap, recoverErrors, simplify, indent,
  // binaryNextLine, switchCaseIndent, spaceRedirects, keepPadding, minify, singleLine, functionNextLine).
  const res = ex.process(0, 0, 0, ptr, bytes.byteLength, bytes.byteLength, false, false, LANG_BASH, 0, 0, 0, 0, false, 0, true, true, true, false, false, false, false);
  ex.wasmFree(ptr);
  const out = new Uint8Array(ex.memory.buffer).subarray(res);
  const end = out.indexOf(0);
  return decoder.decode(out.subarray(0, end < 0 ? 0 : end));
}

interface RawResult {
  file?: { Stmts?: { Pos: { Offset: number }; End: { Offset: number } }[] };
  parseError?: { Text?: string; Pos?: { Line: number; Col: number } } | null;
  message?: string;
}

/** Parses `text` as bash. Never throws: an internal failure is reported as an error (fail closed). */
export function parseShell(text: string): ShParseResult {
  if (text.length > MAX_SHELL_INPUT) return { ok: false, error: `command line longer than ${MAX_SHELL_INPUT} characters` };
  const bytes = encoder.encode(text);
  let json = '';
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      json = runOnce(bytes);
      break;
    } catch {
      current = null; // a trapped instance is never reused
      if (attempt === 1) return { ok: false, error: 'the shell parser failed' };
    }
  }
  let raw: RawResult;
  try {
    raw = JSON.parse(json) as RawResult;
  } catch {
    current = null;
    return { ok: false, error: 'the shell parser returned no result' };
  }
  if (raw.parseError || raw.message) {
    const pe = raw.parseError;
    return { ok: false, error: pe?.Text ? `${pe.Pos ? `${pe.Pos.Line}:${pe.Pos.Col}: ` : ''}${pe.Text}` : (raw.message ?? 'parse error') };
  }
  const stmts = raw.file?.Stmts ?? [];
  return { ok: true, statements: stmts.map((s) => ({ start: s.Pos.Offset, end: s.End.Offset })) };
}
