import { ConfigError } from '../config/secrets.ts';

export function splitHostPort(s: string, field: string): [string, number] {
  const i = s.lastIndexOf(':');
  const host = s.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(s.slice(i + 1));
  if (!host || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(field, `expected HOST:PORT, got "${s}"`);
  return [host, port];
}
