// The gateway's own SSH connection to a target, with the credentials it holds. The target's host
// key must match the configured fingerprint, or nothing is sent (not even the credentials).
import ssh2 from 'ssh2';
import type { SshConnection } from '../../config/schema.ts';
import { fingerprintOf } from './host-key.ts';

/** A refusal meant for the user: the message says what is wrong and what to do. */
export class SshUpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SshUpstreamError';
  }
}

export interface SshUpstream {
  client: ssh2.Client;
  /** the target's host-key fingerprint (it matched the configured one) */
  hostKey: string;
}

export function connectSshUpstream(conn: SshConnection): Promise<SshUpstream> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let seen: string | null = null;
    let settled = false;
    const fail = (err: SshUpstreamError) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(err);
    };
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      client.removeAllListeners('error');
      // Errors after login end the client's session through the 'close' event.
      client.on('error', () => {});
      resolve({ client, hostKey: seen! });
    });
    client.on('error', (e: Error & { level?: string }) => {
      const where = `connection "${conn.name}" (${conn.host}:${conn.port})`;
      if (seen !== null && seen !== conn.hostKey) {
        return fail(new SshUpstreamError(`${where}: the target's host key does not match: expected ${conn.hostKey}, got ${seen}. If the target's key really changed, update hostKey in the gateway config`));
      }
      if (e.level === 'client-authentication') return fail(new SshUpstreamError(`${where}: the target refused the gateway's credentials for user "${conn.user}"; check the connection's privateKey/password`));
      if (e.level === 'client-timeout') return fail(new SshUpstreamError(`${where}: the target did not answer within ${conn.connectTimeoutSeconds} s`));
      const code = (e as NodeJS.ErrnoException).code;
      fail(new SshUpstreamError(`${where}: cannot reach the target${code ? ` (${code})` : ''}`));
    });
    try {
      client.connect({
        host: conn.host,
        port: conn.port,
        username: conn.user,
        privateKey: conn.privateKey,
        passphrase: conn.passphrase,
        password: conn.password,
        readyTimeout: conn.connectTimeoutSeconds * 1000,
        keepaliveInterval: 30_000,
        // Only the methods the gateway has credentials for; never the gateway user's agent.
        agent: undefined,
        tryKeyboard: false,
        hostVerifier: (key: Buffer) => {
          seen = fingerprintOf(key);
          return seen === conn.hostKey;
        },
      });
    } catch (e) {
      fail(new SshUpstreamError(`connection "${conn.name}": invalid client settings: ${(e as Error).message.split('\n')[0]}`));
    }
  });
}
