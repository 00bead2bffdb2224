// The SSH listener: the OpenSSH client connects as `ssh CONNECTION@gateway`, proves an identity
// (an SSH public key registered with `gatehouse keys add-ssh`, or the Gatehouse key `NAME.KEY` as
// password or keyboard-interactive answer), and the gateway logs in to the target
// with the credentials it holds. Each exec is guarded and journaled (exec.ts).
//
// Refusals after a valid key (unknown connection, not granted, target unreachable, host-key
// mismatch) are delivered on the first channel, on stderr with exit status 255, because SSH
// authentication failures carry no message the client would print. A wrong key is refused at
// authentication, like any wrong password.
import type net from 'node:net';
import ssh2 from 'ssh2';
import type { SshConnection } from '../../config/schema.ts';
import type { Guard } from '../../guard/guard.ts';
import { standing, type Identity } from '../../identity/keys.ts';
import type { Journal } from '../../journal/journal.ts';
import type { Masker } from '../../mask/masker.ts';
import type { ReviewService } from '../../approval/reviews.ts';
import { Session } from '../../session/session.ts';
import type { SessionRegistry } from '../../session/registry.ts';
import type { Store } from '../../store/db.ts';
import { startListener, type Listener } from '../listener.ts';
import { checkKey } from './credentials.ts';
import { findBySshKey } from '../../identity/ssh-keys.ts';
import { GATEWAY_FAILURE_STATUS, refuse, runExec, type ExecRequest } from './exec.ts';
import { loadOrCreateHostKey } from './host-key.ts';
import { runSftp } from './sftp.ts';
import { runShell } from './shell.ts';
import { forwardTcpip } from './forward.ts';
import { connectSshUpstream, SshUpstreamError, type SshUpstream } from './upstream.ts';

export interface SshGatewayContext {
  store: Store;
  journal: Journal;
  guard: Guard;
  registry: SessionRegistry;
  reviews?: ReviewService;
  dataDir: string;
  connections: Map<string, SshConnection>;
  maskers: Map<string, Masker>;
  limits: { authTimeoutMs: number; maxValueBytes: number };
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/** Failed key attempts before the gateway disconnects (OpenSSH's MaxAuthTries is 6). */
const MAX_AUTH_FAILURES = 3;
/** Environment a client may pass to the target: the locale and terminal, nothing that changes what runs. */
const ENV_ALLOWED = /^(LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|COLORTERM)$/;
const MAX_ENV = 32;
const ENV_VALUE_MAX = 256;
const AUTH_METHODS: ssh2.AuthenticationType[] = ['publickey', 'password', 'keyboard-interactive'];
/**
 * Ciphers offered to clients: AES-GCM only. The client's preference decides among those offered,
 * and OpenSSH prefers chacha20-poly1305, which the gateway (decrypting and re-encrypting every
 * byte) runs slower than AES-GCM through OpenSSL with AES-NI. Every OpenSSH since 6.2 and
 * PuTTY since 0.76 speak AES-GCM.
 */
const CLIENT_CIPHERS = ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com'] as ssh2.CipherAlgorithm[];

export async function startSshListener(ctx: SshGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener & { hostKeyFingerprint: string }> {
  const hostKey = loadOrCreateHostKey(ctx.dataDir);
  // Sockets that have not logged in yet, by peer address, each with its deadline. ssh2 reports a
  // client only after its version line, so a peer that sends nothing (or garbage) is cut here.
  const pending = new Map<string, NodeJS.Timeout>();
  const authenticated = (peer: string) => {
    clearTimeout(pending.get(peer));
    pending.delete(peer);
  };
  const server = new ssh2.Server({ hostKeys: [hostKey.privateKey], ident: 'Gatehouse', algorithms: { cipher: CLIENT_CIPHERS } }, (conn, info) => handleClient(ctx, conn, info, authenticated));
  const l = await startListener(host, port, maxConnections, (sock: net.Socket) => {
    sock.on('error', () => {});
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    pending.set(
      peer,
      setTimeout(() => {
        pending.delete(peer);
        sock.destroy();
      }, ctx.limits.authTimeoutMs),
    );
    sock.once('close', () => authenticated(peer));
    server.injectSocket(sock);
    sock.resume();
  });
  return { ...l, hostKeyFingerprint: hostKey.fingerprint };
}

type Target = { ok: true; upstream: SshUpstream; session: Session } | { ok: false; message: string };

function handleClient(ctx: SshGatewayContext, conn: ssh2.Connection, info: ssh2.ClientInfo, authenticated: (peer: string) => void): void {
  const peer = `${info.ip}:${info.port}`;
  let failures = 0;
  let identity: Identity | null = null;
  let connectionName = '';
  let target: Promise<Target> | null = null;
  let closed = false;
  // The listener destroys the socket at the deadline; this ends it politely just before.
  const authTimer = setTimeout(() => conn.end(), Math.max(1, ctx.limits.authTimeoutMs - 500));
  conn.on('error', () => {});

  const verify = async (username: string, secret: string): Promise<boolean> => {
    const r = await checkKey(ctx.store, secret);
    if (!r.ok) {
      failures++;
      if (failures >= MAX_AUTH_FAILURES) setImmediate(() => conn.end());
      return false;
    }
    identity = r.identity;
    connectionName = username;
    return true;
  };

  conn.on('authentication', (auth) => {
    if (identity) return auth.accept();
    if (auth.method === 'password') {
      verify(auth.username, auth.password).then(
        (ok) => (ok ? auth.accept() : auth.reject(AUTH_METHODS)),
        () => auth.reject(AUTH_METHODS),
      );
      return;
    }
    if (auth.method === 'keyboard-interactive') {
      auth.prompt([{ prompt: 'Gatehouse key (NAME.KEY): ', echo: false }], `Gatehouse: connection "${auth.username.slice(0, 64)}"`, 'Answer with your Gatehouse key.', (answers) => {
        verify(auth.username, answers[0] ?? '').then(
          (ok) => (ok ? auth.accept() : auth.reject(AUTH_METHODS)),
          () => auth.reject(AUTH_METHODS),
        );
      });
      return;
    }
    if (auth.method === 'publickey') {
      findBySshKey(ctx.store.db, auth.key.data).then(
        (found) => {
          if (!found || found.key.type !== auth.key.algo) return auth.reject(AUTH_METHODS);
          // Without a signature the client only asks whether this key would do (PK_OK).
          if (!auth.signature || !auth.blob) return auth.accept();
          if (found.key.verify(auth.blob, auth.signature, auth.hashAlgo) !== true) {
            failures++;
            return auth.reject(AUTH_METHODS);
          }
          identity = found.identity;
          connectionName = auth.username;
          auth.accept();
        },
        () => auth.reject(AUTH_METHODS),
      );
      return;
    }
    auth.reject(AUTH_METHODS);
  });

  conn.once('ready', () => {
    clearTimeout(authTimer);
    authenticated(peer);
    target = openTarget(ctx, identity!, connectionName, peer);
    target.then((t) => {
      if (!t.ok) return;
      ctx.registry.add(t.session);
      t.session.onKill = (reason) => {
        ctx.log('ssh session closed by the gateway', { session: t.session.id, reason });
        conn.end();
      };
      t.upstream.client.once('close', () => conn.end());
      if (closed) end('client disconnected');
    });
  });

  const end = (reason: string) => {
    void target?.then((t) => {
      if (!t.ok) return;
      ctx.registry.delete(t.session);
      t.upstream.client.end();
      void t.session.close(reason);
    });
  };
  conn.once('close', () => {
    clearTimeout(authTimer);
    closed = true;
    end('client disconnected');
  });

  conn.on('session', (accept) => {
    const ch = accept();
    let pty: ExecRequest['pty'] = null;
    const env: Record<string, string> = {};
    let busy = false;
    ch.on('pty', (acc, _rej, p) => {
      pty = { term: p.term, rows: p.rows, cols: p.cols, width: p.width, height: p.height, modes: p.modes as Record<string, number> };
      acc?.();
    });
    ch.on('env', (acc, rej, e) => {
      if (ENV_ALLOWED.test(e.key) && Object.keys(env).length < MAX_ENV && e.val.length <= ENV_VALUE_MAX) {
        env[e.key] = e.val;
        acc?.();
      } else rej?.();
    });
    let upChannel: ssh2.ClientChannel | null = null;
    // Window changes and signals follow to the target's channel (once the command runs).
    ch.on('window-change', (acc, _rej, w) => {
      acc?.();
      if (pty) Object.assign(pty, { rows: w.rows, cols: w.cols, width: w.width, height: w.height });
      upChannel?.setWindow(w.rows, w.cols, w.height, w.width);
    });
    ch.on('signal', (acc, _rej, sig) => {
      acc?.();
      if (/^[A-Z0-9]{1,16}$/.test(sig.name)) upChannel?.signal(sig.name);
    });
    ch.on('x11', (_acc, rej) => rej?.());
    ch.on('auth-agent', (_acc, rej) => rej?.());
    ch.on('subsystem', (acc, rej, info) => {
      if (busy || info.name !== 'sftp') return rej?.();
      busy = true;
      const stream = acc();
      void withTarget(stream, (t) => {
        const masker = ctx.maskers.get(t.session.connection);
        return runSftp({ session: t.session, upstream: t.upstream.client, masked: !!masker && !masker.isUnmasked(t.session.identity.groups), log: ctx.log }, stream);
      });
    });
    ch.on('shell', (acc) => {
      if (busy) return;
      busy = true;
      const stream = acc();
      void withTarget(stream, async (t) => {
        const masker = ctx.maskers.get(t.session.connection) ?? null;
        const unmasked = masker ? masker.isUnmasked(t.session.identity.groups) : false;
        const shellAllowed = ctx.connections.get(t.session.connection)?.shell !== false;
        const sc = { session: t.session, upstream: t.upstream.client, masker, unmasked, sampleChars: ctx.limits.maxValueBytes * 4, log: ctx.log, shellAllowed };
        await runShell(sc, stream, { pty, env, requests: ch, onUpstream: (up) => (upChannel = up) });
      });
    });
    ch.on('exec', (acc, _rej, info) => {
      if (busy) return;
      busy = true;
      const stream = acc();
      void withTarget(stream, async (t) => {
        const masker = ctx.maskers.get(t.session.connection) ?? null;
        await runExec(
          {
            session: t.session,
            upstream: t.upstream.client,
            masker,
            unmasked: masker ? masker.isUnmasked(t.session.identity.groups) : false,
            sampleChars: ctx.limits.maxValueBytes * 4,
            log: ctx.log,
          },
          stream,
          { command: info.command, pty, env, onUpstream: (up) => (upChannel = up) },
        );
      });
    });
  });

  /** Runs `fn` once the target is ready; otherwise tells the client why not. */
  const withTarget = async (stream: ssh2.ServerChannel, fn: (t: Target & { ok: true }) => Promise<void>) => {
    try {
      const t = await target!;
      if (!t.ok) {
        await refuse(stream, `gatehouse: ${t.message}`, GATEWAY_FAILURE_STATUS);
        // The client leaves once its channel closes. Disconnecting first would race the message:
        // OpenSSH exits on a disconnect without printing the stderr it has buffered.
        setTimeout(() => conn.end(), 5000).unref();
        return;
      }
      await fn(t);
    } catch (e) {
      ctx.log('ssh channel failed', { peer, error: (e as Error).message });
      try {
        await refuse(stream, 'gatehouse: internal gateway error; see the gateway log', GATEWAY_FAILURE_STATUS);
      } catch {
        stream.destroy();
      }
    }
  };

  // Local forwards (`ssh -L`) are decided and recorded one by one (forward.ts); remote forwards,
  // streamlocal, agent and X11 are refused: nothing passes that is not a recorded command.
  conn.on('tcpip', (accept, reject, info) => void forwardTcpip({ conn, target, log: ctx.log }, accept, reject, info));
  conn.on('openssh.streamlocal', (_acc, reject) => reject());
  conn.on('request', (_acc, reject) => reject?.());
}

async function openTarget(ctx: SshGatewayContext, identity: Identity, name: string, peer: string): Promise<Target> {
  const st = standing(identity);
  if (!st.ok) return { ok: false, message: `${st.message}; ask an operator for a new key` };
  const c = ctx.connections.get(name);
  if (!c) {
    const granted = [...ctx.connections.keys()].filter((n) => ctx.guard.authorizeConnection(identity, n) === null);
    return { ok: false, message: `unknown connection "${name.slice(0, 64)}": the SSH user name selects a Gatehouse SSH connection; yours: ${granted.join(', ') || 'none'}` };
  }
  const denial = ctx.guard.authorizeConnection(identity, c.name);
  if (denial) return { ok: false, message: `${denial.reason}; hint: ${denial.hint}` };
  let upstream: SshUpstream;
  try {
    upstream = await connectSshUpstream(c);
  } catch (e) {
    const message = e instanceof SshUpstreamError ? e.message : `connection "${c.name}": cannot reach the target`;
    ctx.log('ssh target refused', { connection: c.name, error: message });
    return { ok: false, message };
  }
  try {
    const masker = ctx.maskers.get(c.name);
    const session = await Session.open(ctx, {
      identity,
      connection: c.name,
      protocol: 'ssh',
      clientAddr: peer,
      meta: { targetHostKey: upstream.hostKey, masking: masker ? (masker.isUnmasked(identity.groups) ? 'off: unmasked group' : 'on') : undefined },
    });
    // Command lines are recorded masked too (a secret typed on the command line, a password in a URL).
    if (masker) session.redact = (text) => masker.maskText(text);
    return { ok: true, upstream, session };
  } catch (e) {
    upstream.client.end();
    ctx.log('ssh session not recorded; refused', { error: (e as Error).message });
    return { ok: false, message: 'session refused: the gateway could not record it; try again later' };
  }
}
