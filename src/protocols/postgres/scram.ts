/**
 * Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
 *
 * Clients authenticate to the gateway with SCRAM so that the gateway never has
 * to see (or store) their cleartext password: it keeps only the verifier, in
 * the exact format PostgreSQL keeps in pg_authid.rolpassword, so verifiers can
 * be moved between the two in either direction.
 *
 * Every input is attacker-controlled (it arrives before authentication), so
 * parsing is strict, bounded, and errors never reveal whether a user exists.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';

/** PostgreSQL's own defaults (SCRAM_DEFAULT_ITERATIONS / SCRAM_DEFAULT_SALT_LEN / SCRAM_RAW_NONCE_LEN). */
const DEFAULT_ITERATIONS = 4096;
const SALT_LEN = 16;
const RAW_NONCE_LEN = 18;
const KEY_LEN = 32;

/** Real SCRAM messages are ~100 bytes; anything near this is an attack or a bug. */
const MAX_MESSAGE_BYTES = 1024;

/** Caps the CPU a verifier from config can make us burn per cleartext login. */
const MAX_ITERATIONS = 10_000_000;

/**
 * Malformed or out-of-sequence SCRAM input. The message is safe to send to the
 * client: it describes only what the client itself sent, never server state.
 */
export class ScramError extends Error {
  /** PostgreSQL reports malformed SASL messages as protocol_violation. */
  readonly sqlState = '08P01';
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

// ---------------------------------------------------------------------------
// SASLprep
// ---------------------------------------------------------------------------

/**
 * Approximates PostgreSQL's pg_saslprep closely enough that a password
 * accepted by psql/libpq and by node-pg derives the same key here.
 *
 * PostgreSQL's rules that matter for interoperability:
 *  - pure ASCII is used verbatim (even control characters);
 *  - otherwise map (RFC 3454 C.1.2 -> space, B.1 -> nothing) and NFKC;
 *  - if the result holds prohibited characters, the RAW password is used
 *    instead of failing, so legacy passwords keep working.
 * Bidi and unassigned-code-point checks are omitted (as node-pg omits them);
 * they only affect exotic passwords.
 */
export function saslprep(password: string): string {
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  const mapped = password
    .replace(/[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g, ' ')
    .replace(/[\u00AD\u034F\u1806\u180B\u180C\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g, '')
    .normalize('NFKC');
  if (mapped.length === 0) return password;
  // C.2.1/C.2.2 controls, C.3 private use, C.4 non-characters, C.5 lone
  // surrogates (which also cannot round-trip through UTF-8), C.8 bidi controls.
  const prohibited =
    /[\x00-\x1f\x7f-\x9f\u06DD\u070F\u180E\u200E\u200F\u202A-\u202E\u2060-\u2063\u206A-\u206F\uFEFF\uFFF9-\uFFFC\uE000-\uF8FF\uFDD0-\uFDEF\uFFFE\uFFFF]|\p{Co}|\p{Cs}/u;
  if (prohibited.test(mapped)) return password;
  return mapped;
}

// ---------------------------------------------------------------------------
// Verifiers
// ---------------------------------------------------------------------------

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(Buffer.from(saslprep(password), 'utf8'), salt, iterations, KEY_LEN, 'sha256');
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Canonical base64 only: Buffer.from(x, 'base64') silently skips junk. */
function decodeBase64Strict(text: string): Buffer | null {
  if (!B64_RE.test(text)) return null;
  return Buffer.from(text, 'base64');
}

/**
 * Builds a verifier in PostgreSQL's storage format, so it can be pasted into
 * `ALTER ROLE ... PASSWORD '<verifier>'` or compared with pg_authid.
 */
export function createScramVerifier(password: string, iterations = DEFAULT_ITERATIONS): string {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(`SCRAM iterations must be an integer in 1..${MAX_ITERATIONS}`);
  }
  const salt = randomBytes(SALT_LEN);
  const salted = saltedPassword(password, salt, iterations);
  const storedKey = sha256(hmac(salted, 'Client Key'));
  const serverKey = hmac(salted, 'Server Key');
  return `${SCRAM_MECHANISM}$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Returns null (never throws) for anything that is not a well-formed SCRAM-SHA-256 verifier. */
export function parseScramVerifier(verifier: string): ScramVerifier | null {
  if (typeof verifier !== 'string' || verifier.length > 512) return null;
  const m = /^SCRAM-SHA-256\$([1-9][0-9]{0,9}):([^$:]+)\$([^$:]+):([^$:]+)$/.exec(verifier);
  if (!m) return null;
  const iterations = Number(m[1]);
  if (iterations > MAX_ITERATIONS) return null;
  const salt = decodeBase64Strict(m[2]);
  const storedKey = decodeBase64Strict(m[3]);
  const serverKey = decodeBase64Strict(m[4]);
  if (!salt || salt.length === 0 || !storedKey || !serverKey) return null;
  if (storedKey.length !== KEY_LEN || serverKey.length !== KEY_LEN) return null;
  return { iterations, salt, storedKey, serverKey };
}

/**
 * For clients that sent a cleartext password (only acceptable over TLS).
 * Both keys are checked, so a verifier whose halves were spliced from two
 * different passwords cannot be satisfied by either.
 */
export function verifyPasswordAgainstVerifier(verifier: string, password: string): boolean {
  const v = parseScramVerifier(verifier);
  if (!v || typeof password !== 'string') return false;
  const salted = saltedPassword(password, v.salt, v.iterations);
  const storedOk = timingSafeEqual(sha256(hmac(salted, 'Client Key')), v.storedKey);
  const serverOk = timingSafeEqual(hmac(salted, 'Server Key'), v.serverKey);
  return storedOk && serverOk;
}

// ---------------------------------------------------------------------------
// Exchange
// ---------------------------------------------------------------------------

/**
 * Unknown users must get a salt that is stable across attempts (a changing
 * salt would reveal that the user does not exist), yet unpredictable. A
 * per-process secret is the default; callers wanting stability across
 * restarts (as PostgreSQL's mock_auth_nonce gives) pass their own.
 */
const processMockSecret = randomBytes(32);

export interface ScramServerOptions {
  /** Distinguishes fake salts between unknown users; normally the user name. */
  mockSeed?: string;
  /** Secret for fake salts; defaults to a random per-process value. */
  mockSecret?: Uint8Array;
}

export type ScramFinalResult = { ok: true; serverFinal: string } | { ok: false };

type State = 'initial' | 'first-done' | 'finished';

/** printable = %x21-2B / %x2D-7E (RFC 5802: printable ASCII except ","). */
const NONCE_RE = /^[\x21-\x2b\x2d-\x7e]+$/;

function checkSize(message: unknown, what: string): string {
  if (typeof message !== 'string') throw new ScramError(`malformed SCRAM ${what}: not a string`);
  if (Buffer.byteLength(message, 'utf8') > MAX_MESSAGE_BYTES) {
    throw new ScramError(`malformed SCRAM ${what}: longer than ${MAX_MESSAGE_BYTES} bytes`);
  }
  // NULs and other controls never occur in a legitimate message; rejecting
  // them up front keeps them out of logs and error text.
  if (/[\x00-\x1f\x7f]/.test(message)) {
    throw new ScramError(`malformed SCRAM ${what}: contains control characters`);
  }
  return message;
}

/** Splits "a=1,b=2" into [name, value] pairs, requiring single-letter names. */
function attributes(text: string, what: string): Array<[string, string]> {
  return text.split(',').map((part) => {
    if (!/^[A-Za-z]=/.test(part)) throw new ScramError(`malformed SCRAM ${what}: expected attribute, got "${preview(part)}"`);
    return [part[0], part.slice(2)];
  });
}

/** Echoes at most a short prefix of hostile input back. */
function preview(text: string): string {
  return text.length > 16 ? `${text.slice(0, 16)}...` : text;
}

export class ScramServerSession {
  /**
   * Why this exchange can never succeed, for server-side logging only: the
   * client must not be able to tell these cases from a wrong password.
   */
  readonly doomedReason: 'unknown-user' | 'invalid-verifier' | null;

  private readonly v: ScramVerifier;
  private state: State = 'initial';
  private gs2Header = '';
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';

  constructor(verifier: string | null, options: ScramServerOptions = {}) {
    const parsed = verifier === null ? null : parseScramVerifier(verifier);
    this.doomedReason = verifier === null ? 'unknown-user' : parsed ? null : 'invalid-verifier';
    if (parsed) {
      this.v = parsed;
    } else {
      const secret = options.mockSecret ? Buffer.from(options.mockSecret) : processMockSecret;
      const salt = hmac(secret, `gatehouse-scram-mock\0${options.mockSeed ?? ''}`).subarray(0, SALT_LEN);
      // Random keys: the proof check runs the same code path and simply fails.
      this.v = { iterations: DEFAULT_ITERATIONS, salt, storedKey: randomBytes(KEY_LEN), serverKey: randomBytes(KEY_LEN) };
    }
  }

  /** Takes client-first-message, returns server-first-message. */
  clientFirst(message: string): string {
    if (this.state !== 'initial') throw new ScramError('unexpected SCRAM client-first-message');
    this.state = 'finished'; // any throw below leaves the session unusable
    const msg = checkSize(message, 'client-first-message');

    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    const c1 = msg.indexOf(',');
    const c2 = c1 < 0 ? -1 : msg.indexOf(',', c1 + 1);
    if (c1 < 0 || c2 < 0) throw new ScramError('malformed SCRAM client-first-message: missing GS2 header');
    const cbind = msg.slice(0, c1);
    const authzid = msg.slice(c1 + 1, c2);
    if (cbind.startsWith('p=')) {
      // We never advertise SCRAM-SHA-256-PLUS, so a client asking for
      // binding is confused or being downgraded/upgraded by a middlebox.
      throw new ScramError('SCRAM channel binding was requested but is not supported by this server');
    }
    if (cbind !== 'n' && cbind !== 'y') {
      throw new ScramError('malformed SCRAM client-first-message: invalid channel binding flag');
    }
    if (authzid !== '') {
      throw new ScramError('SCRAM authorization identity (a=) is not supported');
    }
    this.gs2Header = msg.slice(0, c2 + 1);

    const bare = msg.slice(c2 + 1);
    const attrs = attributes(bare, 'client-first-message');
    if (attrs[0][0] === 'm') throw new ScramError('SCRAM mandatory extensions (m=) are not supported');
    if (attrs.length < 2 || attrs[0][0] !== 'n' || attrs[1][0] !== 'r') {
      throw new ScramError('malformed SCRAM client-first-message: expected n= then r=');
    }
    // PostgreSQL takes the user from the startup packet and clients send an
    // empty (or "*") name here; we only check it is a valid saslname.
    if (/=(?!2C|3D)/.test(attrs[0][1])) {
      throw new ScramError('malformed SCRAM client-first-message: invalid user name encoding');
    }
    const clientNonce = attrs[1][1];
    if (!NONCE_RE.test(clientNonce)) {
      throw new ScramError('malformed SCRAM client-first-message: invalid nonce');
    }
    // Anything after r= is an optional extension, which RFC 5802 lets us ignore.

    this.clientFirstBare = bare;
    this.nonce = clientNonce + randomBytes(RAW_NONCE_LEN).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.v.salt.toString('base64')},i=${this.v.iterations}`;
    this.state = 'first-done';
    return this.serverFirst;
  }

  /** Takes client-final-message; on success returns server-final-message. */
  clientFinal(message: string): ScramFinalResult {
    if (this.state !== 'first-done') throw new ScramError('unexpected SCRAM client-final-message');
    this.state = 'finished';
    const msg = checkSize(message, 'client-final-message');

    const attrs = attributes(msg, 'client-final-message');
    if (attrs.length < 3 || attrs[0][0] !== 'c' || attrs[1][0] !== 'r' || attrs[attrs.length - 1][0] !== 'p') {
      throw new ScramError('malformed SCRAM client-final-message: expected c=, r=, ..., p=');
    }
    // Must echo the exact GS2 header from client-first, otherwise a MITM
    // could have rewritten the channel-binding flag.
    if (attrs[0][1] !== Buffer.from(this.gs2Header, 'utf8').toString('base64')) {
      throw new ScramError('SCRAM channel binding check failed');
    }
    if (attrs[1][1] !== this.nonce) {
      throw new ScramError('malformed SCRAM client-final-message: nonce does not match');
    }
    const proof = decodeBase64Strict(attrs[attrs.length - 1][1]);
    if (!proof || proof.length !== KEY_LEN) {
      throw new ScramError('malformed SCRAM client-final-message: invalid proof');
    }

    const withoutProof = msg.slice(0, msg.lastIndexOf(',p='));
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const clientSignature = hmac(this.v.storedKey, authMessage);
    const clientKey = Buffer.alloc(KEY_LEN);
    for (let i = 0; i < KEY_LEN; i++) clientKey[i] = proof[i] ^ clientSignature[i];
    const ok = timingSafeEqual(sha256(clientKey), this.v.storedKey);
    if (!ok || this.doomedReason !== null) return { ok: false };
    return { ok: true, serverFinal: `v=${hmac(this.v.serverKey, authMessage).toString('base64')}` };
  }
}
