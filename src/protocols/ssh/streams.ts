// Stream endings shared by the SSH channel relays (exec, shell): the exit status must reach the
// client after every byte of output and before EOF/close, the race other proxies lose.
import type { Writable } from 'node:stream';

export function ended(s: NodeJS.ReadableStream & { readableEnded?: boolean }): Promise<void> {
  if (s.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    s.once('end', resolve);
    s.once('close', resolve);
    s.once('error', resolve);
  });
}

/**
 * Resolves once `w` has handed everything to the transport (or cannot any more). Not 'drain':
 * that fires only after a write returned false, and a channel's buffer (up to its 2 MiB high-water
 * mark) can hold data without one. An empty write's callback runs after every earlier write's.
 */
export function drained(w: Writable): Promise<void> {
  if (w.writableLength === 0 || w.destroyed || !w.writable) return Promise.resolve();
  return new Promise((resolve) => {
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      w.off('close', done);
      resolve();
    };
    w.once('close', done);
    w.write(Buffer.alloc(0), done);
  });
}

/**
 * Resolves once everything written to `w` has gone out, also after end() (then `drained` would
 * not wait: an ended stream is no longer writable, yet its buffer may still hold data waiting
 * for the peer's window).
 */
export function flushed(w: Writable): Promise<void> {
  if (w.writableFinished || w.destroyed) return Promise.resolve();
  if (!w.writableEnded) return drained(w);
  return new Promise((resolve) => {
    w.once('finish', () => resolve());
    w.once('close', () => resolve());
  });
}
