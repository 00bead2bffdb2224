// Async, whole-frame reads from a socket for the short request/response exchanges of
// startup and authentication. After startup the socket is handed to the relay, which
// streams instead.
import type { Duplex } from 'node:stream';
import { FrameScanner, ProtocolError } from './codec.ts';

export interface Frame {
  type: number;
  frame: Buffer;
}

export class FrameQueue {
  private frames: Frame[] = [];
  private waiter: ((v: Frame | Error) => void) | null = null;
  private failure: Error | null = null;
  private detached = false;
  private readonly tail: Buffer[] = [];
  private readonly scanner: FrameScanner;

  private readonly onData = (chunk: Buffer) => {
    if (this.detached) return;
    try {
      this.scanner.push(chunk);
    } catch (e) {
      this.fail(e as Error);
    }
  };
  private readonly onClose = () => this.fail(this.closedError());

  constructor(
    private readonly socket: Duplex,
    maxLength: number,
    private readonly closedError: () => Error = () => new ProtocolError('connection closed during startup'),
  ) {
    this.scanner = new FrameScanner(
      {
        want: () => true,
        onFrame: (type, f) => this.deliver({ type, frame: Buffer.from(f) }),
        onBytes: () => {},
      },
      maxLength,
    );
    socket.on('data', this.onData);
    socket.on('error', this.onClose);
    socket.on('close', this.onClose);
    socket.resume();
  }

  next(timeoutMs: number, onTimeout: () => Error): Promise<Frame> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(onTimeout());
      }, timeoutMs);
      this.waiter = (v) => {
        clearTimeout(t);
        if (v instanceof Error) reject(v);
        else resolve(v);
      };
    });
  }

  /** Stops reading and returns whole frames that arrived but were not consumed. */
  detach(): Buffer[] {
    this.detached = true;
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onClose);
    this.socket.off('close', this.onClose);
    return [...this.frames.map((f) => f.frame), ...this.tail];
  }

  /** Whether a message is partially received (after detach, those bytes would be lost). */
  get pending(): boolean {
    return !this.scanner.idle;
  }

  private deliver(f: Frame): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w(f);
    } else this.frames.push(f);
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    const w = this.waiter;
    this.waiter = null;
    w?.(e);
  }
}
