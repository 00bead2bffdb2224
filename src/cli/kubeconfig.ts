// `gatehouse kubeconfig CONNECTION`: a kubeconfig that points kubectl at the gateway, with the
// caller's Gatehouse key as its bearer token and the gateway's certificate as the CA. Written
// 0600 because it holds the key.
import { existsSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { checkKey } from '../protocols/ssh/credentials.ts';
import { standing } from '../identity/keys.ts';
import { UsageError, type CliContext } from './main.ts';
import { withStore } from './store.ts';

export async function kubeconfigCommand(ctx: CliContext): Promise<number> {
  const name = ctx.positionals[0];
  if (!name) throw new UsageError('kubeconfig needs a connection: gatehouse kubeconfig CONNECTION [--key NAME.KEY] [-o FILE]');
  const c = ctx.config.connections.find((x) => x.name === name);
  if (!c) throw new UsageError(`unknown connection "${name}"; see the connections in your config`);
  if (c.type !== 'kubernetes') throw new UsageError(`connection "${name}" is of type ${c.type}, not kubernetes`);
  const listen = ctx.config.listen.http;
  const server = (ctx.values.server as string | undefined) ?? (listen ? `https://${listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}` : undefined);
  if (!server) throw new UsageError('the gateway has no HTTP listener: set listen.http in the config, or pass --server https://HOST:PORT');
  const key = (ctx.values.key as string | undefined) ?? process.env.GATEHOUSE_KEY;
  if (!key) throw new UsageError('kubeconfig needs your key: pass --key NAME.KEY or set GATEHOUSE_KEY');

  // Check the key now, so a typo is found here and not at the first kubectl call.
  const who = await withStore(ctx.config, async (store) => {
    const check = await checkKey(store, key);
    if (!check.ok) throw new UsageError(`the key was refused (${check.why}); pass NAME.KEY as printed by \`gatehouse keys create\``);
    const s = standing(check.identity);
    if (!s.ok) throw new UsageError(`the key cannot be used: ${s.message}`);
    if (!check.identity.connections.includes(name) && !check.identity.connections.includes('*')) {
      ctx.err(`gatehouse: warning: key "${check.identity.name}" is not granted connection "${name}"; the gateway will refuse it`);
    }
    return check.identity.name;
  });

  const ca = ctx.config.tls.cert ?? (existsSync(join(ctx.config.dataDir, 'tls', 'gateway.crt')) ? readFileSync(join(ctx.config.dataDir, 'tls', 'gateway.crt'), 'utf8') : undefined);
  if (!ca) throw new UsageError(`no gateway certificate yet in ${join(ctx.config.dataDir, 'tls')}: start the gateway once (gatehouse serve), then run this again`);
  const ctxName = `gatehouse-${name}`;
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: ctxName, cluster: { server: `${server.replace(/\/+$/, '')}/c/${encodeURIComponent(name)}`, 'certificate-authority-data': Buffer.from(ca, 'utf8').toString('base64') } }],
    users: [{ name: `${ctxName}-${who}`, user: { token: key } }],
    contexts: [{ name: ctxName, context: { cluster: ctxName, user: `${ctxName}-${who}` } }],
    'current-context': ctxName,
  };
  const text = YAML.stringify(doc);
  const out = ctx.values.out as string | undefined;
  if (out) {
    writeFileSync(out, text, { mode: 0o600 });
    chmodSync(out, 0o600);
    ctx.out(ctx.json ? JSON.stringify({ out, connection: name, identity: who }) : `wrote ${out}: kubectl --kubeconfig ${out} get pods`);
  } else process.stdout.write(text);
  return 0;
}
