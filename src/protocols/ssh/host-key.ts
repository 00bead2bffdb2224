// The gateway's own SSH host key: ed25519, generated once into dataDir (mode 0600) so clients
// see the same key across restarts and can pin it in known_hosts.
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';

export const HOST_KEY_FILE = 'ssh_host_ed25519_key';

export interface HostKey {
  privateKey: string;
  /** SHA256:… of the public key, as `ssh-keygen -lf` prints it */
  fingerprint: string;
}

export function loadOrCreateHostKey(dataDir: string): HostKey {
  const path = join(dataDir, HOST_KEY_FILE);
  if (!existsSync(path)) {
    mkdirSync(dataDir, { recursive: true });
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'gatehouse' });
    // wx: never overwrite a key another process created at the same moment.
    try {
      writeFileSync(path, pair.private, { mode: 0o600, flag: 'wx' });
      writeFileSync(`${path}.pub`, pair.public + '\n', { mode: 0o644 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  // A key readable by others is as good as published: tighten it rather than serve it.
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  const privateKey = readFileSync(path, 'utf8');
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new Error(`${path}: not a usable SSH private key (${parsed.message}); move it away and the gateway generates a new one`);
  const key = Array.isArray(parsed) ? parsed[0]! : parsed;
  return { privateKey, fingerprint: fingerprintOf(key.getPublicSSH()) };
}

/** OpenSSH's fingerprint of a public key blob (the wire encoding): SHA256 + unpadded base64. */
export function fingerprintOf(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}
