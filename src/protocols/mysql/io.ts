// Packet-at-a-time reading for the connection phase (both towards clients and the upstream),
// where every step waits for one message. The command phase streams (relay.ts) instead.
import tls from 'node:tls';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { MAX_PACKET_PAYLOAD, ProtocolError } from './codec.ts';

export interface Packet {
  seq: number;
  payload: Buffer;
}

/**
 * Reads whole packets (each at most maxMessage bytes; the handshake never needs split packets)
 * and keeps unread bytes as they came, so that detach() can hand them on untouched: a client
 * starts its TLS handshake right after SSLRequest, often in the same segment.
 */
export class PacketReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.buf.length > this.maxMessage + 4 + 64 * 1024) this.failure ??= new ProtocolError('too much data during the handshake', 1153, '08S01');
    this.wake();
  };
  private readonly onClose = () => {
    this.failure ??= new ProtocolError('connection closed during the handshake', 2013, 'HY000');
    this.wake();
  };

  constructor(private readonly sock: Duplex, private readonly maxMessage: number) {
    sock.on('data', this.onData);
    sock.on('close', this.onClose);
    sock.on('end', this.onClose);
    sock.on('error', this.onClose);
    sock.resume();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** True when nothing unread is buffered. */
  get empty(): boolean {
    return this.buf.length === 0;
  }

  private take(): Packet | null {
    if (this.buf.length < 4) return null;
    const len = this.buf.readUIntLE(0, 3);
    if (len >= MAX_PACKET_PAYLOAD || len > this.maxMessage) throw new ProtocolError(`handshake packet of ${len} bytes exceeds the ${this.maxMessage}-byte limit`, 1153, '08S01');
    if (this.buf.length < 4 + len) return null;
    const p = { seq: this.buf[3]!, payload: Buffer.from(this.buf.subarray(4, 4 + len)) };
    this.buf = this.buf.subarray(4 + len);
    return p;
  }

  async next(timeoutMs: number, onTimeout: () => Error): Promise<Packet> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.take();
      if (p) return p;
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw onTimeout();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Stops reading; returns the bytes received but not consumed, for whoever reads next. */
  detach(): Buffer[] {
    this.sock.pause();
    this.sock.off('data', this.onData);
    this.sock.off('close', this.onClose);
    this.sock.off('end', this.onClose);
    this.sock.off('error', this.onClose);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest.length ? [rest] : [];
  }
}

/** Server side of a TLS upgrade after SSLRequest. */
export function startServerTls(raw: net.Socket, context: tls.SecureContext, timeoutMs: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = new tls.TLSSocket(raw, { isServer: true, secureContext: context });
    const t = setTimeout(() => {
      s.destroy();
      reject(new ProtocolError('TLS handshake timed out', 2013, '08S01'));
    }, timeoutMs);
    s.once('secure', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(new ProtocolError(`TLS handshake failed: ${e.message}`, 2026, 'HY000'));
    });
    s.on('error', () => {});
  });
}
