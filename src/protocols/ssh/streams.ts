// Channel plumbing shared by the SSH relays (exec, shell, forwards): the exit status must reach
// the client after every byte of output and before EOF/close, the race other proxies lose.
import type { Writable } from 'node:stream';
import type ssh2 from 'ssh2';

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

export type ExitInfo = { code: number } | { signal: string; dump: boolean; desc: string };

/** A channel to the target, as exec and shell drive it: its exit, its input, its end. */
export interface TargetChannel {
  /** the exit status or signal, once the target sent it */
  exit(): ExitInfo | null;
  /** the client closed its channel first */
  clientGone(): boolean;
  /** client bytes passed to the target */
  bytesIn(): number;
  /** resolves when the target's stdout and stderr ended and its channel closed */
  done: Promise<void>;
}

/**
 * Wires the client's channel to the target's: the client's input goes to the target with
 * backpressure (`onInput` sees each chunk), EOF and close follow, and the target's exit is kept.
 * Output is the caller's: exec and shell record and mask it differently.
 */
export function connectInput(ch: ssh2.ServerChannel, up: ssh2.ClientChannel, onInput?: (d: Buffer) => void): TargetChannel {
  let exitInfo: ExitInfo | null = null;
  let gone = false;
  let bytesIn = 0;
  up.on('exit', (code: number | null, signal?: string, dump?: boolean, desc?: string) => {
    exitInfo = code !== null && code !== undefined ? { code } : { signal: signal ?? 'SIGKILL', dump: !!dump, desc: desc ?? '' };
  });
  ch.on('data', (d: Buffer) => {
    bytesIn += d.length;
    if (!up.write(d)) {
      ch.pause();
      up.once('drain', () => ch.resume());
    }
    onInput?.(d);
  });
  ch.once('end', () => up.end());
  ch.once('close', () => {
    gone = true;
    up.close();
  });
  const closed = new Promise<void>((r) => (up.destroyed ? r() : up.once('close', () => r())));
  return {
    exit: () => exitInfo,
    clientGone: () => gone,
    bytesIn: () => bytesIn,
    done: Promise.all([ended(up), ended(up.stderr), closed]).then(() => undefined),
  };
}

/** The result status of a command that ran: ok on exit 0, unknown when the client left before any exit. */
export function exitResultStatus(t: TargetChannel): 'ok' | 'error' | 'unknown' {
  const e = t.exit();
  if (t.clientGone() && !e) return 'unknown';
  return e && 'code' in e && e.code === 0 ? 'ok' : 'error';
}

/** Sends the exit status (or signal) after all output, then EOF. */
export async function finishChannel(ch: ssh2.ServerChannel, exit: ExitInfo): Promise<void> {
  await drained(ch);
  await drained(ch.stderr);
  if ('code' in exit) ch.exit(exit.code);
  else ch.exit(exit.signal.replace(/^SIG/, ''), exit.dump, exit.desc);
  ch.end();
}
