// Ed25519 checkpoint signing. The key lives next to the store so a fresh install signs
// from the first session on; the public half is written separately so auditors can be
// handed it (or verify offline) without touching the private key.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Checkpoint } from './types.ts';

export interface Signer {
  /** first 16 hex chars of sha256(SPKI DER): short enough to print, long enough not to collide */
  keyId: string;
  publicKeyPem: string;
  /** base64 Ed25519 signature over checkpointMessage(size, root) */
  sign(size: number, root: string): string;
}

const PRIVATE_FILE = 'signing-key.pem';
const PUBLIC_FILE = 'signing-key.pub.pem';

/** Versioned and newline-separated so a signature can never be replayed as another message. */
export function checkpointMessage(size: number, root: string): string {
  return `gatehouse-checkpoint/1\n${size}\n${root}`;
}

export function keyIdOf(publicKey: string | crypto.KeyObject): string {
  const key = typeof publicKey === 'string' ? publicKeyObject(publicKey) : publicKey;
  const der = key.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(der).digest('hex').slice(0, 16);
}

export function loadOrCreateSigner(dataDir: string): Signer {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const privPath = path.join(dataDir, PRIVATE_FILE);
  let privPem: string;
  try {
    privPem = fs.readFileSync(privPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    privPem = createKeyFile(privPath);
  }
  const privateKey = crypto.createPrivateKey(privPem);
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(`${privPath}: expected an Ed25519 key, found ${privateKey.asymmetricKeyType}`);
  }
  const publicKey = crypto.createPublicKey(privateKey);
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  // Always rewritten from the private key, so a stale or missing public file cannot make
  // offline verification disagree with what the gateway signs.
  const pubPath = path.join(dataDir, PUBLIC_FILE);
  if (readIfExists(pubPath) !== publicKeyPem) fs.writeFileSync(pubPath, publicKeyPem, { mode: 0o644 });
  return {
    keyId: keyIdOf(publicKey),
    publicKeyPem,
    sign: (size, root) => crypto.sign(null, Buffer.from(checkpointMessage(size, root)), privateKey).toString('base64'),
  };
}

function createKeyFile(privPath: string): string {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    // 'wx' so two processes starting together cannot overwrite each other's key.
    fs.writeFileSync(privPath, pem, { mode: 0o600, flag: 'wx' });
    return pem;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return fs.readFileSync(privPath, 'utf8');
    throw err;
  }
}

function readIfExists(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
}

/** The public key for offline verification: the .pub file, or derived from the private key. */
export function loadPublicKey(dataDir: string): string {
  const pub = readIfExists(path.join(dataDir, PUBLIC_FILE));
  if (pub !== undefined) return pub;
  const priv = readIfExists(path.join(dataDir, PRIVATE_FILE));
  if (priv === undefined) throw new Error(`no signing key in ${dataDir} (expected ${PUBLIC_FILE})`);
  return crypto.createPublicKey(crypto.createPrivateKey(priv)).export({ type: 'spki', format: 'pem' }).toString();
}

// Verifying a long journal checks thousands of checkpoints against one key; parsing the
// PEM each time would dominate.
const keyCache = new Map<string, crypto.KeyObject>();

export function publicKeyObject(pem: string): crypto.KeyObject {
  let key = keyCache.get(pem);
  if (!key) {
    key = crypto.createPublicKey(pem);
    if (keyCache.size > 16) keyCache.clear();
    keyCache.set(pem, key);
  }
  return key;
}

export function verifyCheckpointSignature(publicKeyPem: string, cp: Checkpoint): boolean {
  try {
    if (typeof cp.signature !== 'string' || typeof cp.root !== 'string' || !Number.isSafeInteger(cp.size)) return false;
    const key = publicKeyObject(publicKeyPem);
    return crypto.verify(null, Buffer.from(checkpointMessage(cp.size, cp.root)), key, Buffer.from(cp.signature, 'base64'));
  } catch {
    return false;
  }
}
