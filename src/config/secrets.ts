// Secret references keep credentials out of the config file: `env:NAME` or `file:PATH`.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export class ConfigError extends Error {
  constructor(public readonly field: string, problem: string) {
    super(`config: ${field}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** Resolves a secret reference. The error names the field and the reference, never the value. */
export function resolveSecret(value: string, field: string, baseDir: string): string {
  if (value.startsWith('env:')) {
    const name = value.slice(4);
    const v = process.env[name];
    if (v === undefined || v === '') throw new ConfigError(field, `environment variable ${name} is not set`);
    return v;
  }
  if (value.startsWith('file:')) {
    const path = resolve(baseDir, value.slice(5));
    try {
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new ConfigError(field, `cannot read secret file ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  return value;
}
