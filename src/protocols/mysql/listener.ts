import { startListener, type Listener } from '../listener.ts';
import { handleClient, refuseTooMany, type MysqlGatewayContext } from './client.ts';

export function startMysqlListener(ctx: MysqlGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  return startListener(host, port, maxConnections, (sock) => void handleClient(sock, ctx), refuseTooMany);
}
