import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { configSchema, isHttpConnection, type Config } from './schema.ts';
import { ConfigError, resolveSecret } from './secrets.ts';
import { loadPolicy } from '../guard/policy-schema.ts';

export { ConfigError };

/** Loads and validates the config. It throws on the first problem, so the gateway never starts half-configured. */
export function loadConfig(path?: string): Config {
  const file = path ?? process.env.GATEHOUSE_CONFIG;
  let raw: unknown = {};
  let configDir = process.cwd();
  if (file) {
    const full = resolve(file);
    configDir = dirname(full);
    let text: string;
    try {
      text = readFileSync(full, 'utf8');
    } catch (e) {
      throw new ConfigError('--config', `cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    try {
      raw = YAML.parse(text) ?? {};
    } catch (e) {
      throw new ConfigError(full, `not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  return parseConfig(raw, configDir);
}

export function parseConfig(raw: unknown, configDir: string): Config {
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = formatPath(issue.path, raw) || '(top level)';
    throw new ConfigError(field, issue.message);
  }
  const cfg: Config = { ...parsed.data, configDir, policy: loadPolicy((raw as { policy?: unknown } | null)?.policy ?? {}, configDir) };
  cfg.dataDir = resolve(configDir, cfg.dataDir);
  const seen = new Set<string>();
  const hosts = new Map<string, string>();
  cfg.connections.forEach((c, i) => {
    const field = `connections[${i}]`;
    if (seen.has(c.name)) throw new ConfigError(`${field}.name`, `duplicate connection name "${c.name}"`);
    seen.add(c.name);
    for (const h of ('hosts' in c && c.hosts) || []) {
      const other = hosts.get(h.toLowerCase());
      if (other) throw new ConfigError(`${field}.hosts`, `host name "${h}" is already routed to connection "${other}"`);
      hosts.set(h.toLowerCase(), c.name);
    }
    if ('password' in c && c.password !== undefined) c.password = resolveSecret(c.password, `${field}.password`, configDir);
    if ('ca' in c && c.ca !== undefined) c.ca = resolveSecret(c.ca, `${field}.ca`, configDir);
    if ('clientCert' in c && c.clientCert !== undefined) {
      c.clientCert.cert = resolveSecret(c.clientCert.cert, `${field}.clientCert.cert`, configDir);
      c.clientCert.key = resolveSecret(c.clientCert.key, `${field}.clientCert.key`, configDir);
    }
    if (c.type === 'ssh') {
      if (c.privateKey !== undefined) c.privateKey = resolveSecret(c.privateKey, `${field}.privateKey`, configDir);
      if (c.passphrase !== undefined) c.passphrase = resolveSecret(c.passphrase, `${field}.passphrase`, configDir);
    }
    if (isHttpConnection(c) && c.auth) {
      const a = c.auth;
      if ('bearer' in a) a.bearer = resolveSecret(a.bearer, `${field}.auth.bearer`, configDir);
      else if ('basic' in a) a.basic.password = resolveSecret(a.basic.password, `${field}.auth.basic.password`, configDir);
      else a.header.value = resolveSecret(a.header.value, `${field}.auth.header.value`, configDir);
    }
  });
  if (cfg.maskSecret) cfg.maskSecret = resolveSecret(cfg.maskSecret, 'maskSecret', configDir);
  if (cfg.notify) cfg.notify.secret = resolveSecret(cfg.notify.secret, 'notify.secret', configDir);
  if (cfg.tls.cert) cfg.tls.cert = resolveSecret(cfg.tls.cert, 'tls.cert', configDir);
  if (cfg.tls.key) cfg.tls.key = resolveSecret(cfg.tls.key, 'tls.key', configDir);
  if (!!cfg.tls.cert !== !!cfg.tls.key) throw new ConfigError('tls', 'set both cert and key, or neither (a certificate is then generated)');
  return cfg;
}

/** connections[0].port rather than connections.0.port, and the connection's name where known. */
function formatPath(path: PropertyKey[], raw: unknown): string {
  let out = '';
  let node: any = raw;
  for (const p of path) {
    if (typeof p === 'number') {
      const n = node?.[p]?.name;
      out += `[${p}]` + (typeof n === 'string' && path.length > 2 ? '' : '');
    } else out += (out ? '.' : '') + String(p);
    node = node?.[p as any];
  }
  return out;
}
