// Watching kubectl exec/attach and port-forward over WebSocket: the Kubernetes channel
// subprotocols (k8s.io/apimachinery wsstream, kubelet remotecommand and portforward) read from the
// raw bytes after the HTTP upgrade, in both directions. An observer only reads: the caller relays
// the bytes it was given, unchanged, whatever the observer makes of them. It never throws; a
// framing error is reported once as an event and ends the observing (the relay goes on).
//
// Channel protocols: every message starts with its channel, one byte (binary variants) or one
// digit character followed by base64 (`base64.` variants, text frames).
//   exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize ({"Width":W,"Height":H}).
//     v4+: the error channel carries a metav1.Status; a non-zero exit is reason NonZeroExitCode
//     with a cause of reason ExitCode whose message is the code. Before v4 it carries plain text.
//     v5: a message [255, N] half-closes channel N.
//   port-forward: channels 2i (data) and 2i+1 (error) serve the i-th port; the server's first two
//     bytes on each of them are the port, little-endian.
import { isControl, OP, parseClose, WsProtocolError, WsStreamParser, type WsPiece } from './ws-codec.ts';

export type StreamSide = 'client' | 'server';

export type KubeStreamEvent =
  | { type: 'stdin' | 'stdout' | 'stderr'; data: Buffer }
  | { type: 'resize'; cols: number; rows: number }
  /** `code` null: the command failed without an exit code (container gone, …) or the protocol tells none */
  | { type: 'exit'; code: number | null; status?: string; message?: string }
  | { type: 'close-channel'; channel: number; from: StreamSide }
  | { type: 'closed'; from: StreamSide; code?: number; reason?: string }
  /** port-forward: the server named the port of a channel pair */
  | { type: 'port'; port: number; channel: number }
  /** port-forward: text on a port's error channel */
  | { type: 'port-error'; port: number | null; message: string }
  /** `fatal`: the framing broke and observing stopped; otherwise one message was malformed and skipped */
  | { type: 'error'; from: StreamSide; message: string; fatal: boolean };

interface ProtocolInfo {
  version: number;
  base64: boolean;
}

/** Exec/attach subprotocols understood, newest first (what a gateway may offer upstream). */
export const EXEC_SUBPROTOCOLS: readonly string[] = ['v5.channel.k8s.io', 'v4.channel.k8s.io', 'v4.base64.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io', 'channel.k8s.io', 'base64.channel.k8s.io'];
/** Port-forward subprotocols understood (SPDY tunnelled in WebSocket, `SPDY/3.1+portforward.k8s.io`, is not). */
export const PORT_FORWARD_SUBPROTOCOLS: readonly string[] = ['v4.channel.k8s.io', 'v4.base64.channel.k8s.io', 'portforward.k8s.io', 'channel.k8s.io', 'base64.channel.k8s.io'];

/** '' is what the kubelet assumes when no subprotocol was negotiated: the binary channel protocol, pre-v4. */
function protocolInfo(p: string): ProtocolInfo | null {
  const m = /^(?:v([2-5])\.)?(base64\.)?channel\.k8s\.io$/.exec(p);
  if (p === '' || p === 'portforward.k8s.io') return { version: 1, base64: false };
  if (!m) return null;
  const version = m[1] ? Number(m[1]) : 1;
  if (m[2] && version !== 1 && version !== 4) return null;
  return { version, base64: !!m[2] };
}

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const RESIZE = 4;
const CLOSE = 255;

/** A resize message is a tiny JSON object; anything longer is not one. */
const MAX_RESIZE = 1024;
/** The error channel's Status (or text): kept up to this much, the rest cut. */
const MAX_ERROR = 64 * 1024;
/** Exit and error messages reported: kept to a line-ish length. */
const MAX_MESSAGE = 4096;

/** Per side: the message being read. */
interface SideState {
  parser: WsStreamParser;
  /** a data message is open */
  inMessage: boolean;
  /** its channel; -1 until its first byte arrived */
  channel: number;
  /** base64 characters not yet forming a 4-character group */
  b64: string;
  /** the current message is being skipped (bad base64) */
  skip: boolean;
  /** base64 padding was seen: the message must end here */
  padded: boolean;
  closed: boolean;
  bytes: Map<number, number>;
}

/** Shared machinery: framing, channel bytes, base64, close, the stop on a framing error. */
abstract class ChannelObserver {
  protected readonly info: ProtocolInfo | null;
  protected stopped = false;
  private readonly sides: Record<StreamSide, SideState>;

  constructor(readonly protocol: string) {
    this.info = protocolInfo(protocol);
    const side = (requireMask: boolean): SideState => ({ parser: new WsStreamParser({ requireMask }), inMessage: false, channel: -1, b64: '', skip: false, padded: false, closed: false, bytes: new Map() });
    this.sides = { client: side(true), server: side(false) };
  }

  /** Observing ended (framing error, unknown subprotocol, or both sides closed). */
  get done(): boolean {
    return this.stopped || (this.sides.client.closed && this.sides.server.closed);
  }

  /** Payload bytes seen per channel (channel byte and port prefixes excluded), per side. */
  channelBytes(side: StreamSide): Map<number, number> {
    return new Map(this.sides[side].bytes);
  }

  /** Bytes the client sent after the upgrade (raw, as relayed). */
  fromClient(bytes: Buffer): KubeStreamEvent[] {
    return this.observe('client', bytes);
  }

  /** Bytes the server sent after the upgrade (raw, as relayed). */
  fromServer(bytes: Buffer): KubeStreamEvent[] {
    return this.observe('server', bytes);
  }

  /** The relay ended: whatever is pending (an error channel without a parsable Status) is reported. */
  end(): KubeStreamEvent[] {
    const out: KubeStreamEvent[] = [];
    if (!this.stopped) this.flush(out);
    this.stopped = true;
    return out;
  }

  private observe(from: StreamSide, bytes: Buffer): KubeStreamEvent[] {
    const out: KubeStreamEvent[] = [];
    if (this.stopped) return out;
    if (!this.info) {
      this.stopped = true;
      out.push({ type: 'error', from, message: `WebSocket subprotocol "${this.protocol.slice(0, 100)}" is not a Kubernetes channel protocol Gatehouse reads; the stream is relayed unobserved`, fatal: true });
      return out;
    }
    const s = this.sides[from];
    if (s.closed || !Buffer.isBuffer(bytes)) return out;
    let pieces: WsPiece[];
    try {
      pieces = s.parser.push(bytes);
    } catch (e) {
      this.stopped = true;
      this.flush(out);
      out.push({ type: 'error', from, message: e instanceof WsProtocolError ? e.message : `observer failed: ${String(e)}`, fatal: true });
      return out;
    }
    for (const p of pieces) {
      if (s.closed) break;
      if (isControl(p.opcode)) {
        if (p.opcode === OP.CLOSE) this.onClose(from, s, p.piece, out);
        continue;
      }
      this.onData(from, s, p, out);
    }
    return out;
  }

  private onClose(from: StreamSide, s: SideState, payload: Buffer, out: KubeStreamEvent[]): void {
    s.closed = true;
    let code: number | undefined;
    let reason = '';
    try {
      ({ code, reason } = parseClose(payload));
    } catch (e) {
      out.push({ type: 'error', from, message: (e as Error).message, fatal: false });
    }
    this.onClosed(from, out);
    const ev: KubeStreamEvent = { type: 'closed', from };
    if (code !== undefined) ev.code = code;
    if (reason) ev.reason = reason.slice(0, MAX_MESSAGE);
    out.push(ev);
  }

  private onData(from: StreamSide, s: SideState, p: WsPiece, out: KubeStreamEvent[]): void {
    if (p.first && p.opcode !== OP.CONTINUATION) {
      s.inMessage = true;
      s.channel = -1;
      s.b64 = '';
      s.skip = false;
      s.padded = false;
    }
    let data = p.piece;
    if (s.channel < 0 && data.length > 0) {
      const c = data[0]!;
      data = data.subarray(1);
      if (this.info!.base64) {
        // '0'..'9' only: a byte outside names no channel, and 255 ('0'+255) cannot be sent as text.
        s.channel = c >= 0x30 && c <= 0x39 ? c - 0x30 : CLOSE + 1;
      } else {
        s.channel = c;
      }
      this.begin(from, s.channel, out);
    }
    if (s.channel >= 0 && data.length > 0 && !s.skip) {
      const bytes = this.info!.base64 ? this.decode64(from, s, data, out) : data;
      if (bytes && bytes.length > 0) {
        s.bytes.set(s.channel, (s.bytes.get(s.channel) ?? 0) + bytes.length);
        this.onChannelData(from, s.channel, bytes, out);
      }
    }
    if (p.last && p.fin) {
      if (this.info!.base64 && s.b64 && !s.skip) out.push({ type: 'error', from, message: `base64 message on channel ${s.channel} ends inside a 4-character group`, fatal: false });
      // A message with no channel byte at all says nothing (the API server skips it too).
      if (s.channel >= 0) this.onMessageEnd(from, s.channel, out);
      s.inMessage = false;
      s.channel = -1;
      s.b64 = '';
      s.skip = false;
      s.padded = false;
    }
  }

  /** Base64 arrives in pieces cut anywhere: decode whole 4-character groups, keep the rest. */
  private decode64(from: StreamSide, s: SideState, data: Buffer, out: KubeStreamEvent[]): Buffer | null {
    const text = s.b64 + data.toString('latin1');
    const whole = text.length - (text.length % 4);
    const groups = text.slice(0, whole);
    s.b64 = text.slice(whole);
    // Padding only at the very end: the API server's decoder refuses it anywhere else.
    if (!/^[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(groups) || (s.padded && text.length > 0) || (groups.endsWith('=') && s.b64)) {
      s.skip = true;
      out.push({ type: 'error', from, message: `invalid base64 on channel ${s.channel}; message skipped`, fatal: false });
      return null;
    }
    if (groups.endsWith('=')) s.padded = true;
    return Buffer.from(groups, 'base64');
  }

  /** A message on `channel` starts (its channel byte was read). */
  protected begin(_from: StreamSide, _channel: number, _out: KubeStreamEvent[]): void {}
  protected abstract onChannelData(from: StreamSide, channel: number, data: Buffer, out: KubeStreamEvent[]): void;
  protected abstract onMessageEnd(from: StreamSide, channel: number, out: KubeStreamEvent[]): void;
  /** `from` sent a close frame. */
  protected onClosed(_from: StreamSide, _out: KubeStreamEvent[]): void {}
  /** Report what is pending; observing is about to stop. */
  protected flush(_out: KubeStreamEvent[]): void {}
}

/** Bounded accumulation of one small message. */
class Small {
  private parts: Buffer[] = [];
  held = 0;
  over = false;
  constructor(private readonly max: number) {}
  add(b: Buffer): void {
    const room = this.max - this.held;
    if (b.length > room) this.over = true;
    if (room <= 0) return;
    const take = b.length > room ? b.subarray(0, room) : b;
    this.parts.push(Buffer.from(take));
    this.held += take.length;
  }
  peek(): Buffer {
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts, this.held)];
    return this.parts[0] ?? Buffer.alloc(0);
  }
  take(): Buffer {
    const b = Buffer.concat(this.parts, this.held);
    this.parts = [];
    this.held = 0;
    this.over = false;
    return b;
  }
}

function clip(s: string): string {
  return s.length > MAX_MESSAGE ? s.slice(0, MAX_MESSAGE) + '…' : s;
}

/**
 * The exit a v4+ error channel's Status reports, as client-go reads it: Success is 0; Failure
 * with reason NonZeroExitCode takes the code (0..255) from the cause of reason ExitCode; any
 * other Failure has no code. null: not a Status.
 */
export function exitFromStatus(text: string): { code: number | null; status?: string; message?: string } | null {
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    return null;
  }
  if (!s || typeof s !== 'object' || Array.isArray(s)) return null;
  const st = s as { status?: unknown; reason?: unknown; message?: unknown; details?: { causes?: unknown } };
  const status = typeof st.status === 'string' ? st.status : undefined;
  const message = typeof st.message === 'string' ? clip(st.message) : undefined;
  if (status === 'Success') return { code: 0, status };
  let code: number | null = null;
  if (st.reason === 'NonZeroExitCode' && Array.isArray(st.details?.causes)) {
    for (const c of st.details.causes as unknown[]) {
      const cause = c as { reason?: unknown; message?: unknown } | null;
      if (cause && cause.reason === 'ExitCode' && typeof cause.message === 'string' && /^\d{1,3}$/.test(cause.message) && Number(cause.message) <= 255) {
        code = Number(cause.message);
        break;
      }
    }
  }
  const out: { code: number | null; status?: string; message?: string } = { code };
  if (status !== undefined) out.status = status;
  if (message !== undefined) out.message = message;
  return out;
}

/**
 * kubectl exec/attach over WebSocket: stdin (and resizes) from the client; stdout, stderr and
 * the exit from the server. Messages on channels a side does not write are ignored, as the API
 * server ignores them. Data events are pieces of messages as they arrive (never more than the
 * bytes just pushed); nothing but the small resize and error messages is held.
 */
export class KubeExecObserver extends ChannelObserver {
  private readonly resize = new Small(MAX_RESIZE);
  private readonly error = new Small(MAX_ERROR);
  private exited = false;
  private readonly closeSignal: boolean;

  constructor(protocol: string) {
    super(protocol);
    this.closeSignal = !!this.info && this.info.version >= 5 && !this.info.base64;
  }

  /** v5's close message is kept to see its length: [255, N] and nothing else. */
  private readonly closing = new Small(2);

  protected onChannelData(from: StreamSide, channel: number, data: Buffer, out: KubeStreamEvent[]): void {
    if (channel === CLOSE && this.closeSignal) return this.closing.add(data);
    if (from === 'client') {
      if (channel === STDIN) out.push({ type: 'stdin', data });
      else if (channel === RESIZE) this.resize.add(data);
    } else if (channel === STDOUT) out.push({ type: 'stdout', data });
    else if (channel === STDERR) out.push({ type: 'stderr', data });
    else if (channel === ERROR) this.error.add(data);
  }

  protected onMessageEnd(from: StreamSide, channel: number, out: KubeStreamEvent[]): void {
    if (channel === CLOSE && this.closeSignal) {
      const over = this.closing.over;
      const b = this.closing.take();
      if (b.length !== 1 || over) out.push({ type: 'error', from, message: 'v5 close message must name exactly one channel', fatal: false });
      else {
        out.push({ type: 'close-channel', channel: b[0]!, from });
        if (from === 'server' && b[0] === ERROR) this.flushError(out);
      }
      return;
    }
    if (from === 'client' && channel === RESIZE) {
      const over = this.resize.over;
      const text = this.resize.take().toString('utf8');
      const size = over ? null : parseResize(text);
      if (size) out.push({ type: 'resize', ...size });
      else out.push({ type: 'error', from, message: `resize message is not {"Width":…,"Height":…}: ${clip(JSON.stringify(text.slice(0, 100)))}`, fatal: false });
      return;
    }
    if (from === 'server' && channel === ERROR && !this.exited) {
      if (this.info!.version >= 4) {
        // A Status is one write, so one message; should it come in several, wait for it to parse.
        const exit = exitFromStatus(this.error.peek().toString('utf8'));
        if (exit) {
          this.error.take();
          this.exit(exit, out);
        }
      } else {
        this.flushError(out);
      }
    }
  }

  protected onClosed(from: StreamSide, out: KubeStreamEvent[]): void {
    if (from !== 'server') return;
    this.flushError(out);
    // Before v4 success is silence: the error channel stays empty and the server closes.
    if (!this.exited && this.info!.version < 4) this.exit({ code: 0 }, out);
  }

  protected flush(out: KubeStreamEvent[]): void {
    this.flushError(out);
  }

  private errorText(): string {
    return this.error.take().toString('utf8');
  }

  private flushError(out: KubeStreamEvent[]): void {
    if (this.exited || this.error.held === 0) return;
    const text = this.errorText();
    const parsed = this.info!.version >= 4 ? exitFromStatus(text) : null;
    if (parsed) return this.exit(parsed, out);
    // Pre-v4 text, or a v4 Status cut short: the message is what there is; the kubelet's text ends in "exit code N".
    const m = /exit code (\d{1,3})\s*$/.exec(text);
    const code = m && Number(m[1]) <= 255 ? Number(m[1]) : null;
    this.exit({ code, status: 'Failure', message: clip(text.trim()) }, out);
  }

  private exit(e: { code: number | null; status?: string; message?: string }, out: KubeStreamEvent[]): void {
    if (this.exited) return;
    this.exited = true;
    out.push({ type: 'exit', ...e });
  }

  /** The observed subprotocol's version (1 for channel.k8s.io and the pre-v4 names), or null if not understood. */
  get version(): number | null {
    return this.info?.version ?? null;
  }
}

/** {"Width":W,"Height":H} (remotecommand.TerminalSize), each 0..65535; null otherwise. */
export function parseResize(text: string): { cols: number; rows: number } | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object') return null;
  const { Width: w, Height: h } = v as { Width?: unknown; Height?: unknown };
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffff;
  return ok(w) && ok(h) ? { cols: w, rows: h } : null;
}

export interface PortStats {
  /** pair index in the request's `ports` list */
  index: number;
  /** null until known (from the request or the server's prefix) */
  port: number | null;
  /** bytes the client sent to the pod's port */
  sent: number;
  /** bytes the pod's port sent back */
  received: number;
  /** error messages on the pair's error channel */
  errors: number;
}

/** How many port pairs are tracked: more than any real port-forward, fewer than a hostile one could name. */
const MAX_PORTS = 64;

/**
 * kubectl port-forward over the WebSocket channel protocol: counts the bytes each way per port
 * and reports the server's port announcements and error-channel messages. `ports` are those of
 * the request (`?ports=8080,9090`), so channel pairs map to ports before the server speaks.
 */
export class KubePortForwardObserver extends ChannelObserver {
  private readonly pairs: PortStats[] = [];
  /** per server channel: prefix bytes still expected */
  private readonly prefix = new Map<number, Buffer>();
  private readonly errorText = new Map<number, Small>();

  constructor(protocol: string, ports: readonly number[] = []) {
    super(protocol);
    ports.slice(0, MAX_PORTS).forEach((p, i) => this.pairs.push({ index: i, port: Number.isInteger(p) && p > 0 && p < 65536 ? p : null, sent: 0, received: 0, errors: 0 }));
  }

  stats(): PortStats[] {
    return this.pairs.map((p) => ({ ...p }));
  }

  private pair(channel: number): PortStats | null {
    const index = channel >> 1;
    if (index >= MAX_PORTS) return null;
    while (this.pairs.length <= index) this.pairs.push({ index: this.pairs.length, port: null, sent: 0, received: 0, errors: 0 });
    return this.pairs[index]!;
  }

  protected onChannelData(from: StreamSide, channel: number, data: Buffer, out: KubeStreamEvent[]): void {
    const pair = this.pair(channel);
    if (!pair) return;
    const isData = (channel & 1) === 0;
    if (from === 'client') {
      // The server reads only data channels from the client.
      if (isData) pair.sent += data.length;
      return;
    }
    let rest = data;
    let pending = this.prefix.get(channel);
    if (pending === undefined || pending.length < 2) {
      const have = pending ?? Buffer.alloc(0);
      const take = Math.min(2 - have.length, rest.length);
      pending = Buffer.concat([have, rest.subarray(0, take)]);
      rest = rest.subarray(take);
      this.prefix.set(channel, pending);
      if (pending.length === 2) {
        const port = pending.readUInt16LE(0);
        if (pair.port === null) pair.port = port;
        else if (pair.port !== port) out.push({ type: 'error', from, message: `server announced port ${port} on channel ${channel}, the request asked for ${pair.port}`, fatal: false });
        if (isData) out.push({ type: 'port', port, channel });
      }
    }
    if (rest.length === 0) return;
    if (isData) pair.received += rest.length;
    else {
      let t = this.errorText.get(channel);
      if (!t) this.errorText.set(channel, (t = new Small(MAX_MESSAGE)));
      t.add(rest);
    }
  }

  protected onMessageEnd(_from: StreamSide, channel: number, out: KubeStreamEvent[]): void {
    this.flushPortError(channel, out);
  }

  protected flush(out: KubeStreamEvent[]): void {
    for (const ch of this.errorText.keys()) this.flushPortError(ch, out);
  }

  private flushPortError(channel: number, out: KubeStreamEvent[]): void {
    const t = this.errorText.get(channel);
    if (!t || t.held === 0) return;
    const pair = this.pair(channel);
    if (pair) pair.errors++;
    out.push({ type: 'port-error', port: pair?.port ?? null, message: clip(t.take().toString('utf8').trim()) });
  }
}

/**
 * The `ports` of a port-forward request (`?ports=8080,9090` or repeated `ports=`), as the API
 * server reads them; entries that are not ports 1..65535 are dropped.
 */
export function parsePortForwardQuery(query: URLSearchParams): number[] {
  const out: number[] = [];
  for (const v of query.getAll('ports')) {
    for (const s of v.split(',')) {
      const t = s.trim();
      if (/^\d{1,5}$/.test(t) && Number(t) >= 1 && Number(t) <= 65535) out.push(Number(t));
      if (out.length >= MAX_PORTS) return out;
    }
  }
  return out;
}

export interface ExecQuery {
  command: string[];
  container?: string;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

/** apimachinery's Convert_Slice_string_To_bool: absent is false; "0" and "false" (any case) are false; anything else, even empty, is true. */
function queryBool(query: URLSearchParams, key: string): boolean {
  const v = query.get(key);
  if (v === null) return false;
  return !(v === '0' || v.toLowerCase() === 'false');
}

/**
 * PodExecOptions / PodAttachOptions from the query, as the API server decodes them: `command`
 * repeated (one argv entry each, order kept), `container` the first value. The query's size is
 * bounded by the HTTP server's header limit, so the argv is kept whole: a guard must see all of it.
 */
export function parseExecQuery(query: URLSearchParams): ExecQuery {
  const out: ExecQuery = {
    command: query.getAll('command'),
    stdin: queryBool(query, 'stdin'),
    stdout: queryBool(query, 'stdout'),
    stderr: queryBool(query, 'stderr'),
    tty: queryBool(query, 'tty'),
  };
  const container = query.get('container');
  if (container !== null && container !== '') out.container = container;
  return out;
}
