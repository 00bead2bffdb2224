// Reads the untyped startup-phase packet (SSLRequest, CancelRequest, StartupMessage) with a
// hard size bound, before any typed message can be read.
import type { Duplex } from 'node:stream';
import { MAX_STARTUP_LENGTH, ProtocolError } from './codec.ts';

export interface StartupRead {
  packet: Buffer;
  /** bytes the client sent after the packet */
  rest: Buffer;
}

export function readStartupPacket(socket: Duplex, timeoutMs: number): Promise<StartupRead> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    let need = -1;
    const t = setTimeout(() => done(new ProtocolError('timed out waiting for the startup packet')), timeoutMs);
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (need < 0 && have >= 4) {
        const head = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        need = head.readInt32BE(0);
        if (need < 8 || need > MAX_STARTUP_LENGTH) return done(new ProtocolError(`invalid startup packet length ${need}`));
      }
      if (need > 0 && have >= need) {
        const all = Buffer.concat(parts);
        done(null, { packet: all.subarray(0, need), rest: all.subarray(need) });
      }
    };
    const onEnd = () => done(new ProtocolError('connection closed before the startup packet was complete'));
    function done(err: Error | null, v?: StartupRead) {
      clearTimeout(t);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve(v!);
    }
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onEnd);
    socket.resume();
  });
}
