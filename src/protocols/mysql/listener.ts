import type net from 'node:net';
import { listen, type Listener } from '../postgres/listener.ts';
import { handleClient, refuseTooMany, type MysqlGatewayContext } from './client.ts';

export async function startMysqlListener(ctx: MysqlGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  const server = await listen(host, port);
  const sockets = new Set<net.Socket>();
  server.on('connection', (sock) => {
    if (sockets.size >= maxConnections) {
      refuseTooMany(sock);
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
