// MySQL authentication math, both directions, no I/O.
//
// Server side (clients logging in to the gateway): the gateway stores, per key, only what the
// real server stores, never the password: SHA1(SHA1(pw)) for mysql_native_password and
// SHA256(SHA256(pw)) for caching_sha2_password's fast path. Neither lets an observer compute a
// login response on its own (that needs SHA1(pw) / SHA256(pw)); but, as with MySQL itself, the
// stored hash plus one sniffed exchange does, so the stored values are secrets and TLS matters.
//
// Client side (the gateway logging in to the upstream with held credentials): the scrambles a
// driver computes. caching_sha2_password full authentication is supported only over TLS (the
// cleartext password + NUL); the RSA-encrypted variant for plaintext connections is out of scope,
// so an upstream using caching_sha2_password without TLS works only while the server holds a
// fast-auth cache entry for the account (i.e. after one TLS or socket login since its restart).

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const NATIVE_PASSWORD = 'mysql_native_password';
export const CACHING_SHA2_PASSWORD = 'caching_sha2_password';
export const CLEAR_PASSWORD = 'mysql_clear_password';

export const SCRAMBLE_LENGTH = 20;

/** caching_sha2_password AuthMoreData status bytes (server → client), and the client's key request. */
export const CACHING_SHA2_REQUEST_PUBLIC_KEY = 0x02;
export const CACHING_SHA2_FAST_AUTH_SUCCESS = 0x03;
export const CACHING_SHA2_PERFORM_FULL_AUTH = 0x04;

type Secret = string | Buffer;

const bytes = (s: Secret): Buffer => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s);
const sha1 = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha1');
  for (const p of parts) h.update(p);
  return h.digest();
};
const sha256 = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/**
 * The 20-byte nonce. Servers send it NUL-terminated in AuthSwitchRequest (21 bytes), and some
 * code paths hand that through: accept both, refuse anything else (a short nonce would weaken the
 * proof silently).
 */
function nonce(scramble: Buffer): Buffer {
  if (scramble.length === SCRAMBLE_LENGTH + 1 && scramble[SCRAMBLE_LENGTH] === 0) return scramble.subarray(0, SCRAMBLE_LENGTH);
  if (scramble.length !== SCRAMBLE_LENGTH) throw new RangeError(`scramble must be ${SCRAMBLE_LENGTH} bytes, got ${scramble.length}`);
  return scramble;
}

/**
 * A fresh scramble the way MySQL makes one (generate_user_salt): 7-bit bytes with NUL and '$'
 * bumped, because clients read part of it as a C string and '$' is a separator in stored hashes.
 * ~137 bits of entropy.
 */
export function generateScramble(): Buffer {
  const b = randomBytes(SCRAMBLE_LENGTH);
  for (let i = 0; i < b.length; i++) {
    b[i] = b[i]! & 0x7f;
    if (b[i] === 0 || b[i] === 0x24) b[i] = b[i]! + 1;
  }
  return b;
}

// ---------- server side ----------

/** What to store for mysql_native_password: SHA1(SHA1(password)), 20 bytes. */
export function nativePasswordHash(password: Secret): Buffer {
  return sha1(sha1(bytes(password)));
}

/**
 * Checks a mysql_native_password response. The client sends SHA1(pw) XOR SHA1(scramble ||
 * SHA1(SHA1(pw))); XOR-ing with SHA1(scramble || stored) recovers the candidate SHA1(pw), whose
 * SHA1 must equal the stored hash. Fixed-size inputs and timingSafeEqual keep the comparison
 * constant-time. An empty response (empty password) never verifies: gateway keys are never empty.
 */
export function verifyNativePassword(scramble: Buffer, authResponse: Buffer, storedDoubleSha1: Buffer): boolean {
  const n = nonce(scramble);
  if (storedDoubleSha1.length !== 20) throw new RangeError('stored native password hash must be 20 bytes');
  if (authResponse.length !== 20) return false;
  const candidate = xor(authResponse, sha1(n, storedDoubleSha1));
  return timingSafeEqual(sha1(candidate), storedDoubleSha1);
}

/** What to store for caching_sha2_password's fast path: SHA256(SHA256(password)), 32 bytes. */
export function sha2FastHash(password: Secret): Buffer {
  return sha256(sha256(bytes(password)));
}

/**
 * Checks a caching_sha2_password fast-auth response. The client sends
 * XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || nonce)) (MySQL's generate_sha2_scramble: the
 * double hash comes first, then the nonce), so the same recover-and-rehash check applies.
 * The gateway always has the "cache entry", so on success it replies AuthMoreData(0x03) then OK.
 */
export function verifyCachingSha2Fast(scramble: Buffer, authResponse: Buffer, storedDoubleSha256: Buffer): boolean {
  const n = nonce(scramble);
  if (storedDoubleSha256.length !== 32) throw new RangeError('stored caching_sha2 hash must be 32 bytes');
  if (authResponse.length !== 32) return false;
  const candidate = xor(authResponse, sha256(storedDoubleSha256, n));
  return timingSafeEqual(sha256(candidate), storedDoubleSha256);
}

/**
 * The password carried by a cleartext auth packet (caching_sha2 full auth over TLS,
 * mysql_clear_password): the client appends a NUL, which is not part of the password.
 */
export function decodeCleartextPassword(payload: Buffer): Buffer {
  return payload.length > 0 && payload[payload.length - 1] === 0 ? payload.subarray(0, payload.length - 1) : payload;
}

/** Checks a cleartext password against the stored SHA256(SHA256(pw)) (full-auth fallback over TLS). */
export function verifyCleartextSha2(password: Buffer, storedDoubleSha256: Buffer): boolean {
  if (storedDoubleSha256.length !== 32) throw new RangeError('stored caching_sha2 hash must be 32 bytes');
  if (password.length === 0) return false;
  return timingSafeEqual(sha2FastHash(password), storedDoubleSha256);
}

// ---------- client side ----------

/** mysql_native_password response: SHA1(pw) XOR SHA1(scramble || SHA1(SHA1(pw))); empty for an empty password. */
export function scrambleNativePassword(password: Secret, scramble: Buffer): Buffer {
  const pw = bytes(password);
  if (pw.length === 0) return Buffer.alloc(0);
  const stage1 = sha1(pw);
  return xor(stage1, sha1(nonce(scramble), sha1(stage1)));
}

/** caching_sha2_password fast-auth response: XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || scramble)). */
export function scrambleCachingSha2(password: Secret, scramble: Buffer): Buffer {
  const pw = bytes(password);
  if (pw.length === 0) return Buffer.alloc(0);
  const stage1 = sha256(pw);
  return xor(stage1, sha256(sha256(stage1), nonce(scramble)));
}

/**
 * Full-auth / mysql_clear_password payload: the password and a NUL. Send it only over TLS; the
 * password must not contain NUL (the server would stop there).
 */
export function cleartextPasswordPayload(password: Secret): Buffer {
  const pw = bytes(password);
  if (pw.includes(0)) throw new RangeError('password contains a NUL byte');
  return Buffer.concat([pw, Buffer.from([0])]);
}
