// The gateway's TLS certificate: the configured one, or one generated once into dataDir so
// that `npm start` needs no setup.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';

export interface TlsMaterial {
  cert: string;
  key: string;
  context: tls.SecureContext;
  generated: boolean;
}

export async function loadTlsMaterial(dataDir: string, cert?: string, key?: string): Promise<TlsMaterial> {
  if (cert && key) return { cert, key, context: tls.createSecureContext({ cert, key }), generated: false };
  const dir = join(dataDir, 'tls');
  const certPath = join(dir, 'gateway.crt');
  const keyPath = join(dir, 'gateway.key');
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    mkdirSync(dir, { recursive: true });
    // Loaded only to make a certificate: its X.509 stack costs memory for the gateway's lifetime.
    const { generate } = await import('selfsigned');
    const pems = await generate([{ name: 'commonName', value: 'gatehouse' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notAfterDate: new Date(Date.now() + 825 * 86400e3),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }, { type: 7, ip: '::1' }] },
      ],
    } as any);
    writeFileSync(keyPath, pems.private, { mode: 0o600 });
    chmodSync(keyPath, 0o600);
    writeFileSync(certPath, pems.cert);
  }
  const c = readFileSync(certPath, 'utf8');
  const k = readFileSync(keyPath, 'utf8');
  return { cert: c, key: k, context: tls.createSecureContext({ cert: c, key: k }), generated: true };
}
