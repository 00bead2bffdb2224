import net from 'node:net';
import { handleClient, type PgGatewayContext } from './client.ts';

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

export async function startPostgresListener(ctx: PgGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  const server = await listen(host, port);
  const sockets = new Set<net.Socket>();
  server.on('connection', (sock) => {
    if (sockets.size >= maxConnections) {
      // Too many clients: refuse before reading anything, like PostgreSQL's 53300.
      sock.destroy();
      return;
    }
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    void handleClient(sock, ctx);
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
