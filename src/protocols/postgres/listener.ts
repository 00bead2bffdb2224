import { startListener, type Listener } from '../listener.ts';
import { handleClient, type PgGatewayContext } from './client.ts';

export type { Listener };

/** Too many clients: refused before anything is read, like PostgreSQL's 53300. */
export function startPostgresListener(ctx: PgGatewayContext, host: string, port: number, maxConnections: number): Promise<Listener> {
  return startListener(host, port, maxConnections, (sock) => void handleClient(sock, ctx));
}
