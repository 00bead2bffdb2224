// A TCP listener shared by the protocol adapters: accepts, caps concurrent clients, and
// closes every client socket on shutdown.
import net from 'node:net';

export interface Listener {
  port: number;
  close(): Promise<void>;
}

export function listen(host: string, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true });
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

export async function startListener(
  host: string,
  port: number,
  maxConnections: number,
  onConnection: (sock: net.Socket) => void,
  /** what a client over the cap gets before the socket is closed (a protocol error, or nothing) */
  onTooMany: (sock: net.Socket) => void = (sock) => sock.destroy(),
): Promise<Listener> {
  const server = await listen(host, port);
  const sockets = new Set<net.Socket>();
  server.on('connection', (sock) => {
    if (sockets.size >= maxConnections) {
      onTooMany(sock);
      return;
    }
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    onConnection(sock);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
