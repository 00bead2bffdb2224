import net from 'node:net';

/**
 * Asks the kernel for an unused port. Inherently racy (someone may take it
 * before the caller binds), so servers started on it should retry on
 * "address in use"; the postgres and pgbouncer helpers do.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (!addr || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** True when something accepts TCP connections on host:port right now. */
export function isPortOpen(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const done = (open: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(open);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Polls until host:port accepts a TCP connection; rejects after timeoutMs. */
export async function waitForPort(port: number, timeoutMs = 10_000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await isPortOpen(port, host, Math.max(100, Math.min(1000, deadline - Date.now())))) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
