// Assembles a running gateway from a validated config: store, signer, journal, guard,
// session registry, and the listeners. `close()` stops all of it.
import { isHttpConnection, type Config, type Connection, type MysqlConnection, type PostgresConnection, type SshConnection } from './config/schema.ts';
import { Guard } from './guard/guard.ts';
import { loadPostgresParser } from './guard/sql-postgres.ts';
import { Journal } from './journal/journal.ts';
import { loadOrCreateSigner, type Signer } from './journal/signer.ts';
import { CancelMap, type PgGatewayContext } from './protocols/postgres/client.ts';
import { startPostgresListener, type Listener } from './protocols/postgres/listener.ts';
import type { MysqlGatewayContext } from './protocols/mysql/client.ts';
import { SessionRegistry } from './session/registry.ts';
import { openStore, type Store } from './store/db.ts';
import { storeOptions } from './store/options.ts';
import { loadTlsMaterial } from './util/tls-material.ts';
import { startApi } from './api/server.ts';
import { ReviewService } from './approval/reviews.ts';
import { splitHostPort } from './util/hostport.ts';
import { loadOrCreateSecret } from './util/secret-file.ts';
import { Masker } from './mask/masker.ts';

export interface Gateway {
  config: Config;
  store: Store;
  journal: Journal;
  signer: Signer;
  registry: SessionRegistry;
  reviews: ReviewService;
  ports: { postgres?: number; mysql?: number; ssh?: number; http?: number; api?: number };
  /** SHA256 fingerprint of the gateway's SSH host key, when listen.ssh is set */
  sshHostKey?: string;
  close(): Promise<void>;
}

export type Log = (msg: string, fields?: Record<string, unknown>) => void;

export async function startGateway(config: Config, log: Log): Promise<Gateway> {
  const store = await openStore(storeOptions(config));
  const closers: (() => Promise<void>)[] = [];
  try {
    const signer = loadOrCreateSigner(config.dataDir);
    const journal = await Journal.open(store, signer, {
      checkpointEvery: config.journal.checkpointEvery,
      checkpointIntervalMs: config.journal.checkpointIntervalSeconds * 1000,
    });
    journal.onError = (err) => log('journal write failed', { error: err.message });
    closers.push(() => journal.close());
    const registry = new SessionRegistry();
    registry.watchRevocations(store.db);
    closers.push(async () => registry.stop());
    const reviews = new ReviewService(store, journal, {
      publicUrl: config.publicUrl,
      webhook: config.notify ? { url: config.notify.webhook, secret: config.notify.secret } : undefined,
      onError: (err) => log('review notification failed', { error: err.message }),
    });
    // No session of a previous process waits on its reviews any more; deferred ones live on until they expire.
    const stale = await reviews.expireStale(new Set());
    if (stale) log('expired pending reviews of the previous run', { count: stale });
    const expiry = setInterval(() => {
      reviews.expireStale(new Set(registry.all().map((s) => s.id))).catch((e) => log('review expiry failed', { error: (e as Error).message }));
    }, 15_000);
    expiry.unref();
    closers.push(async () => {
      clearInterval(expiry);
      await reviews.close();
    });
    const guard = new Guard(config.policy);
    // The PostgreSQL parser (WASM) costs memory; a gateway without PostgreSQL need not load it.
    if (config.listen.postgres || config.connections.some((c) => c.type === 'postgres')) await loadPostgresParser();
    const ports: Gateway['ports'] = {};

    const maskSecret = config.maskSecret ? Buffer.from(config.maskSecret, 'utf8') : loadOrCreateSecret(config.dataDir, 'mask.key');
    const maskers = new Map<string, Masker>();
    for (const c of config.connections) {
      if (c.mask) maskers.set(c.name, new Masker(c.mask, maskSecret, { onError: (e) => log('masking failed; value withheld or passed per onError', { connection: c.name, error: e instanceof Error ? e.name : 'error' }) }));
    }

    const tlsMat = config.listen.postgres || config.listen.mysql ? await loadTlsMaterial(config.dataDir, config.tls.cert, config.tls.key) : null;
    const limits = {
      maxMessageBytes: config.limits.maxMessageBytes,
      authTimeoutMs: config.limits.authTimeoutSeconds * 1000,
      sampleRows: config.journal.resultRows,
      maxValueBytes: config.journal.maxValueBytes,
    };

    // What every listener's context shares; each adds its own connections and settings.
    const shared = { store, journal, guard, registry, reviews, maskers, log };
    const connectionsWhere = <C extends Connection>(is: (c: Connection) => c is C): Map<string, C> => new Map(config.connections.filter(is).map((c) => [c.name, c]));

    if (config.listen.postgres && tlsMat) {
      const ctx: PgGatewayContext = {
        ...shared,
        tlsContext: tlsMat.context,
        allowPlaintext: config.tls.allowPlaintext,
        clientAuth: config.postgres.clientAuth,
        connections: connectionsWhere((c): c is PostgresConnection => c.type === 'postgres'),
        cancels: new CancelMap(),
        limits,
      };
      const [host, port] = splitHostPort(config.listen.postgres, 'listen.postgres');
      const l: Listener = await startPostgresListener(ctx, host, port, config.limits.maxClientConnections);
      ports.postgres = l.port;
      closers.push(() => l.close());
    }
    if (config.listen.mysql && tlsMat) {
      const ctx: MysqlGatewayContext = {
        ...shared,
        tlsContext: tlsMat.context,
        allowPlaintext: config.tls.allowPlaintext,
        connections: connectionsWhere((c): c is MysqlConnection => c.type === 'mysql'),
        limits,
      };
      // Loaded only when used: node-sql-parser alone adds tens of MB to every gateway's RSS.
      const { startMysqlListener } = await import('./protocols/mysql/listener.ts');
      const { classifyMysql } = await import('./guard/classify-mysql.ts');
      guard.registerClassifier('mysql', (text) => classifyMysql(text));
      const [host, port] = splitHostPort(config.listen.mysql, 'listen.mysql');
      const l: Listener = await startMysqlListener(ctx, host, port, config.limits.maxClientConnections);
      ports.mysql = l.port;
      closers.push(() => l.close());
    }
    let sshHostKey: string | undefined;
    if (config.listen.ssh) {
      // Loaded only when used, like MySQL: ssh2 and the shell parser's WASM cost memory.
      const { startSshListener } = await import('./protocols/ssh/listener.ts');
      const { classifyShell } = await import('./guard/classify-shell.ts');
      guard.registerClassifier('sh', (text) => classifyShell(text));
      const [host, port] = splitHostPort(config.listen.ssh, 'listen.ssh');
      const l = await startSshListener(
        {
          ...shared,
          dataDir: config.dataDir,
          connections: connectionsWhere((c): c is SshConnection => c.type === 'ssh'),
          limits: { authTimeoutMs: limits.authTimeoutMs, maxValueBytes: limits.maxValueBytes },
        },
        host,
        port,
        config.limits.maxClientConnections,
      );
      ports.ssh = l.port;
      sshHostKey = l.hostKeyFingerprint;
      closers.push(() => l.close());
    }
    if (config.listen.http) {
      const { startHttpListener } = await import('./protocols/http/listener.ts');
      const mat = tlsMat ?? (await loadTlsMaterial(config.dataDir, config.tls.cert, config.tls.key));
      const [host, port] = splitHostPort(config.listen.http, 'listen.http');
      const l = await startHttpListener(
        {
          ...shared,
          connections: connectionsWhere(isHttpConnection),
          tls: { cert: mat.cert, key: mat.key },
          limits: { headersTimeoutMs: limits.authTimeoutMs, requestTimeoutMs: 300_000 },
        },
        host,
        port,
        config.limits.maxClientConnections,
      );
      ports.http = l.port;
      closers.push(() => l.close());
    }
    if (config.listen.api) {
      const [host, port] = splitHostPort(config.listen.api, 'listen.api');
      const api = await startApi({ store, journal, signer, registry, reviews }, host, port);
      ports.api = api.port;
      closers.push(() => api.close());
    }

    let closed = false;
    return {
      config,
      store,
      journal,
      signer,
      registry,
      reviews,
      ports,
      sshHostKey,
      async close() {
        if (closed) return;
        closed = true;
        for (const s of registry.all()) s.kill('gateway shutting down');
        // Listeners first, the journal last, so that the final events are recorded.
        for (const c of closers.reverse()) await c().catch((e) => log('shutdown step failed', { error: (e as Error).message }));
        await store.close();
      },
    };
  } catch (e) {
    for (const c of closers.reverse()) await c().catch(() => {});
    await store.close();
    throw e;
  }
}
