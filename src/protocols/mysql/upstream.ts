// The gateway's own login to a MySQL/MariaDB target with the held credentials: TCP, TLS as
// configured (SSLRequest, then TLS), HandshakeV10 → HandshakeResponse41 for the target's auth
// plugin, AuthSwitchRequest / AuthMoreData rounds, until OK. After that the relay owns the socket.
import { connectTcp, startClientTls as startClientTlsShared } from '../upstream-socket.ts';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { MysqlConnection } from '../../config/schema.ts';
import { encodePacket } from './codec.ts';
import {
  CACHING_SHA2_FAST_AUTH_SUCCESS,
  CACHING_SHA2_PASSWORD,
  CACHING_SHA2_PERFORM_FULL_AUTH,
  CLEAR_PASSWORD,
  NATIVE_PASSWORD,
  cleartextPasswordPayload,
  scrambleCachingSha2,
  scrambleNativePassword,
} from './auth.ts';
import {
  AUTH_SWITCH_HEADER,
  CLIENT_CONNECT_WITH_DB,
  CLIENT_DEPRECATE_EOF,
  CLIENT_LONG_PASSWORD,
  CLIENT_PLUGIN_AUTH,
  CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
  CLIENT_PROTOCOL_41,
  CLIENT_SECURE_CONNECTION,
  CLIENT_SSL,
  CLIENT_TRANSACTIONS,
  decodeAuthMoreData,
  decodeAuthSwitchRequest,
  decodeErr,
  decodeHandshakeV10,
  decodeOk,
  encodeHandshakeResponse41,
  encodeSslRequest,
  hasCap,
  isAuthMoreData,
  isErr,
  isOk,
  type HandshakeV10,
} from './packets.ts';
import { PacketReader } from './io.ts';

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface MysqlUpstream {
  socket: Duplex;
  handshake: HandshakeV10;
  /** capabilities in effect on the upstream connection */
  capabilities: number;
  /** status flags of the final OK */
  status: number;
  tls: boolean;
  /** bytes received after the OK (normally none) */
  leftover: Buffer[];
}

export interface UpstreamOptions {
  /** capabilities the client negotiated with the gateway that change the command phase's wire format or behaviour */
  passCapabilities: number;
  charset: number;
  timeoutMs?: number;
}

const CONNECT_TIMEOUT_MS = 10_000;
const MAX_AUTH_ROUNDS = 6;

const rawConnect = (host: string, port: number, timeoutMs: number) => connectTcp(host, port, timeoutMs, (m) => new UpstreamError(m));

const startClientTls = (raw: net.Socket, c: MysqlConnection) => startClientTlsShared(raw, c, (m) => new UpstreamError(m));

const timedOut = () => new UpstreamError('timed out waiting for the target during the handshake');

function targetErr(c: MysqlConnection, payload: Buffer): UpstreamError {
  const e = decodeErr(payload);
  if (e.code === 1045) {
    return new UpstreamError(`the target rejected the gateway's credentials for connection "${c.name}" (${e.code}: ${e.message}); ask an operator to check the connection's user and password`);
  }
  return new UpstreamError(`the target refused the connection (${e.code} ${e.sqlState}): ${e.message}`);
}

/** The plugin's first response to the scramble. */
function pluginResponse(plugin: string, password: string, scramble: Buffer, isTls: boolean, c: MysqlConnection): Buffer {
  if (plugin === NATIVE_PASSWORD) return scrambleNativePassword(password, scramble);
  if (plugin === CACHING_SHA2_PASSWORD) return scrambleCachingSha2(password, scramble);
  if (plugin === CLEAR_PASSWORD) {
    if (!isTls) throw new UpstreamError(`the target asks for mysql_clear_password, which the gateway sends only over TLS; set tls: require on connection "${c.name}"`);
    return cleartextPasswordPayload(password);
  }
  throw new UpstreamError(`the target uses the auth plugin "${plugin.slice(0, 64)}", which the gateway does not support; use mysql_native_password or caching_sha2_password for the gateway's user`);
}

export async function connectUpstream(c: MysqlConnection, opts: UpstreamOptions): Promise<MysqlUpstream> {
  const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const remaining = () => Math.max(1, deadline - Date.now());
  const raw = await rawConnect(c.host, c.port, timeoutMs);
  let sock: Duplex = raw;
  let reader = new PacketReader(raw, 1 << 20);
  try {
    let pkt = await reader.next(remaining(), timedOut);
    if (isErr(pkt.payload)) throw targetErr(c, pkt.payload);
    const hs = decodeHandshakeV10(pkt.payload);
    let seq = (pkt.seq + 1) & 0xff;
    const serverCaps = hs.capabilities >>> 0;
    if (!hasCap(serverCaps, CLIENT_PROTOCOL_41)) throw new UpstreamError('the target does not speak protocol 4.1');
    let isTls = false;
    const base = (CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_CONNECT_WITH_DB | CLIENT_TRANSACTIONS) >>> 0;
    let caps = (base | opts.passCapabilities) >>> 0;
    // Whatever the client relies on must be there: a mismatch would change the wire format under it.
    const missing = (opts.passCapabilities & ~serverCaps) >>> 0;
    if (hasCap(missing, CLIENT_DEPRECATE_EOF)) throw new UpstreamError('the target does not support CLIENT_DEPRECATE_EOF, which the client negotiated; connect with a client that does not ask for it');
    caps = (caps & (serverCaps | CLIENT_LONG_PASSWORD)) >>> 0;

    if (c.tls !== 'disable') {
      if (!hasCap(serverCaps, CLIENT_SSL)) {
        if (c.tls !== 'prefer') throw new UpstreamError(`target ${c.host}:${c.port} does not support TLS, but connection "${c.name}" requires it (tls: ${c.tls})`);
      } else {
        caps = (caps | CLIENT_SSL) >>> 0;
        if (!reader.empty) throw new UpstreamError('unexpected data from the target before TLS');
        reader.detach();
        raw.write(encodePacket(seq, encodeSslRequest(caps, opts.charset)));
        seq = (seq + 1) & 0xff;
        sock = await startClientTls(raw, c);
        isTls = true;
        reader = new PacketReader(sock, 1 << 20);
      }
    }

    const password = c.password ?? '';
    let plugin = hs.authPlugin || NATIVE_PASSWORD;
    let scramble = hs.scramble;
    // An unknown initial plugin: answer for native, and let the server switch us.
    if (![NATIVE_PASSWORD, CACHING_SHA2_PASSWORD, CLEAR_PASSWORD].includes(plugin)) plugin = NATIVE_PASSWORD;
    if (plugin === CLEAR_PASSWORD && !isTls) plugin = NATIVE_PASSWORD;
    const first = pluginResponse(plugin, password, scramble, isTls, c);
    sock.write(encodePacket(seq, encodeHandshakeResponse41({ capabilities: caps, charset: opts.charset, user: c.user, authResponse: first, database: c.database, authPlugin: plugin })));

    for (let round = 0; round < MAX_AUTH_ROUNDS; round++) {
      pkt = await reader.next(remaining(), timedOut);
      seq = (pkt.seq + 1) & 0xff;
      const p = pkt.payload;
      if (isOk(p)) {
        const ok = decodeOk(p, caps);
        const leftover = reader.detach();
        return { socket: sock, handshake: hs, capabilities: caps, status: ok.status, tls: isTls, leftover };
      }
      if (isErr(p)) throw targetErr(c, p);
      if (p.length > 0 && p[0] === AUTH_SWITCH_HEADER) {
        const sw = decodeAuthSwitchRequest(p);
        plugin = sw.plugin;
        if (plugin !== CLEAR_PASSWORD) scramble = sw.data;
        sock.write(encodePacket(seq, pluginResponse(plugin, password, scramble, isTls, c)));
        continue;
      }
      if (isAuthMoreData(p)) {
        const data = decodeAuthMoreData(p);
        if (plugin === CACHING_SHA2_PASSWORD && data.length === 1 && data[0] === CACHING_SHA2_FAST_AUTH_SUCCESS) continue; // OK follows
        if (plugin === CACHING_SHA2_PASSWORD && data.length === 1 && data[0] === CACHING_SHA2_PERFORM_FULL_AUTH) {
          if (!isTls) {
            throw new UpstreamError(`the target wants caching_sha2_password full authentication, which the gateway sends only over TLS; set tls: require on connection "${c.name}" (or log in once over TLS to fill the server's cache)`);
          }
          sock.write(encodePacket(seq, cleartextPasswordPayload(password)));
          continue;
        }
        throw new UpstreamError(`unexpected authentication data from the target (plugin ${plugin})`);
      }
      throw new UpstreamError('unexpected packet from the target during authentication');
    }
    throw new UpstreamError('authentication with the target did not finish');
  } catch (e) {
    sock.destroy();
    raw.destroy();
    if (e instanceof UpstreamError) throw e;
    throw new UpstreamError(`connection to target failed: ${(e as Error).message}`);
  }
}
