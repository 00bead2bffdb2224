import type { DemoTarget } from '../demo/pglite.ts';
import { createKey, listKeys } from '../identity/keys.ts';
import { startGateway } from '../gateway.ts';
import { parseMaskConfig } from '../mask/config.ts';
import type { CliContext } from './main.ts';
import { UsageError } from './main.ts';

/** Structured log lines on stderr. Callers never pass secrets here. */
function log(msg: string, fields?: Record<string, unknown>): void {
  process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), msg, ...fields }) + '\n');
}

export async function serveCommand(ctx: CliContext): Promise<number> {
  const config = ctx.config;
  if (!config.listen.postgres && !config.listen.mysql && !config.listen.ssh && !config.listen.api) throw new UsageError('nothing to listen on: set listen.postgres, listen.mysql, listen.ssh or listen.api');
  let demo: DemoTarget | null = null;
  if (ctx.values.demo) {
    // Loaded only for --demo: importing PGlite costs every gateway ~25-45 MB of RSS.
    const { startDemoTarget } = await import('../demo/pglite.ts');
    demo = await startDemoTarget(config.dataDir);
    if (!config.connections.some((c) => c.name === 'demo')) {
      config.connections.push({ name: 'demo', type: 'postgres', host: demo.host, port: demo.port, database: demo.database, user: demo.user, password: demo.password, tls: 'disable', preview: 'explain', mask: parseMaskConfig({}) });
    }
  }
  const gw = await startGateway(config, log).catch(async (e) => {
    await demo?.stop();
    throw e;
  });
  let adminKey: string | null = null;
  if (ctx.values.demo && (await listKeys(gw.store.db)).length === 0) {
    const created = await createKey(gw.store.db, { name: 'admin', kind: 'human', groups: ['admin'], connections: ['*'] });
    adminKey = created.key;
  }
  const pgPort = gw.ports.postgres;
  ctx.out(`gatehouse listening: postgres 127.0.0.1:${pgPort ?? '-'}  mysql ${gw.ports.mysql ? `127.0.0.1:${gw.ports.mysql}` : '-'}${gw.ports.ssh ? `  ssh 127.0.0.1:${gw.ports.ssh} (host key ${gw.sshHostKey})` : ''}${gw.ports.http ? `  http https://127.0.0.1:${gw.ports.http}` : ''}  api http://${config.listen.api ?? '-'}  dataDir ${config.dataDir}`);
  if (ctx.values.demo) {
    if (adminKey) {
      ctx.out(`\nadmin key (shown once, stored only as a hash): ${adminKey}`);
      ctx.out(`\nconnect to the demo database:\n  psql "host=127.0.0.1 port=${pgPort} dbname=demo user=admin password=${adminKey} sslmode=require"`);
    } else {
      ctx.out(`\nconnect to the demo database with the admin key printed at first start:\n  psql "host=127.0.0.1 port=${pgPort} dbname=demo user=admin password=<admin key> sslmode=require"`);
    }
    ctx.out(`\nthen: npx gatehouse sessions list   |   npx gatehouse verify`);
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log('shutting down');
  await gw.close();
  await demo?.stop();
  return 0;
}
