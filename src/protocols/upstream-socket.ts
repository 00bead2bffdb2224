// Opening the socket to a target, shared by the protocol adapters: TCP with a timeout, and the
// client side of TLS with libpq-style modes. Errors come from the caller's factory so that each
// protocol reports them in its own type.
import net from 'node:net';
import tls from 'node:tls';

export type ErrorFactory = (message: string) => Error;

export function connectTcp(host: string, port: number, timeoutMs: number, fail: ErrorFactory): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(fail(`timed out connecting to ${host}:${port}`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.setNoDelay(true);
      s.setKeepAlive(true, 60_000);
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(fail(`cannot connect to ${host}:${port}: ${e.code ?? e.message}`));
    });
  });
}

export interface TlsTarget {
  host: string;
  port: number;
  /** require: encrypt without verifying; verify-full: chain (ca) and host name verified */
  tls: 'disable' | 'prefer' | 'require' | 'verify-full';
  ca?: string;
}

export function startClientTls(raw: net.Socket, t: TlsTarget, fail: ErrorFactory): Promise<tls.TLSSocket> {
  const verify = t.tls === 'verify-full';
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      socket: raw,
      servername: net.isIP(t.host) ? undefined : t.host,
      rejectUnauthorized: verify,
      ca: verify && t.ca ? t.ca : undefined,
      checkServerIdentity: verify ? tls.checkServerIdentity : () => undefined,
    });
    s.once('secureConnect', () => {
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (e) => {
      s.destroy();
      reject(fail(`TLS to ${t.host}:${t.port} failed: ${e.message}`));
    });
  });
}
