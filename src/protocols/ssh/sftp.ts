// The sftp subsystem: the client's channel is relayed to the target's own sftp subsystem, byte
// for byte and with backpressure, while the SFTP packets of both directions are parsed so that
// each operation is guarded and recorded.
//
// - Each operation that opens, changes or lists something (open, opendir, rename, remove, mkdir,
//   rmdir, setstat, symlink, hardlink, copy-data, unknown extensions) is a `command` event
//   (kind `sftp`), checked by the guard and written *before* the target sees it: the request,
//   and every packet after it, waits until Session.run resolves. Packet order is never changed.
// - A refused operation is answered by the gateway with SSH_FX_PERMISSION_DENIED and the
//   denial's reason; the target never sees it and the session goes on.
// - Reads and writes are not events: their bytes are counted per handle and recorded on the
//   open's result, at CLOSE. Lookups (stat, lstat, fstat, realpath, readlink, readdir, statvfs…)
//   are counted and recorded on the subsystem's own result, when the channel ends.
// - Memory is bounded: whole packets are reassembled (at most MAX_PACKET_LENGTH each), file
//   contents are never held beyond the packet in flight, and the tables of outstanding requests
//   and open handles are capped. A packet longer than the limit closes the channel.
import type ssh2 from 'ssh2';
import type { Writable } from 'node:stream';
import type { Classification, CommandClass } from '../../guard/classification.ts';
import type { Command } from '../../guard/types.ts';
import type { Execution, Session } from '../../session/session.ts';
import { GATEWAY_FAILURE_STATUS, refuse } from './exec.ts';
import {
  describeAttrs,
  describePflags,
  decodeRequest,
  decodeResponse,
  encodeStatus,
  FrameReader,
  FX,
  MAX_PATH_BYTES,
  opensForWrite,
  PFLAG,
  SftpCodecError,
  statusName,
  type Attrs,
  type Request,
  type Response,
} from './sftp-codec.ts';

export interface SftpContext {
  session: Session;
  upstream: ssh2.Client;
  /** the connection masks output for this identity: file contents cannot be masked, so sftp is refused */
  masked: boolean;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/** Requests awaiting the target's answer, and handles open at once, per channel. */
const MAX_PENDING = 16_384;
const MAX_HANDLES = 4_096;

interface Op {
  /** the record, when the request was one */
  exec?: Execution;
  kind: Request['type'] | 'extended';
  /** READ/WRITE: the handle's state and the bytes asked or sent */
  open?: OpenHandle;
  length?: number;
  /** OPEN/OPENDIR: what to remember once the handle comes back */
  opening?: { path: string; dir: boolean };
  /** CLOSE: the handle being closed */
  closing?: Buffer;
}

interface OpenHandle {
  exec: Execution | null;
  path: string;
  dir: boolean;
  bytesRead: number;
  bytesWritten: number;
  reads: number;
  writes: number;
  entries: number;
  errors: number;
}

/** A path for the record: quoted when it holds spaces, quotes or control characters; bounded. */
export function quotePath(p: string): string {
  const s = Buffer.byteLength(p) > MAX_PATH_BYTES ? p.slice(0, MAX_PATH_BYTES) + '…' : p;
  return /^[^\s"'\\\u0000-\u001f\u007f]+$/.test(s) ? s : JSON.stringify(s);
}

function classification(cls: CommandClass, type: string, reads: string[], writes: string[], flags: string[] = [], reason?: string): Classification {
  const c: Classification = { class: cls, classes: [cls], types: [type], reads, writes, flags, functions: [] };
  if (reason) c.reason = reason;
  return c;
}

function attrFlags(a: Attrs): string[] {
  const f: string[] = [];
  if (a.permissions !== undefined) f.push('chmod');
  if (a.uid !== undefined) f.push('chown');
  if (a.size !== undefined) f.push('truncate');
  if (a.atime !== undefined) f.push('times');
  return f;
}

/** What a request is, for the guard and the record; null for what is only counted or relayed. */
export function describeRequest(req: Request, handlePath: (h: Buffer) => string | undefined): { text: string; classification: Classification } | null {
  switch (req.type) {
    case 'open': {
      const words = describePflags(req.pflags);
      const write = opensForWrite(req.pflags);
      const types = write ? ['sftp.write'] : ['sftp.read'];
      if (write && req.pflags & PFLAG.READ) types.push('sftp.read');
      const flags = words.filter((w) => w !== 'read' && w !== 'write');
      const c = classification(write ? 'write' : 'read', types[0]!, req.pflags & PFLAG.READ ? [req.path] : [], write ? [req.path] : [], flags, write ? 'opens a file for writing' : undefined);
      c.types = types;
      const attrs = describeAttrs(req.attrs);
      return { text: `open ${quotePath(req.path)} (${words.join(',') || 'none'})${attrs ? ` ${attrs}` : ''}`, classification: c };
    }
    case 'opendir':
      return { text: `opendir ${quotePath(req.path)}`, classification: classification('read', 'sftp.list', [req.path], []) };
    case 'remove':
      return { text: `remove ${quotePath(req.path)}`, classification: classification('write', 'sftp.remove', [], [req.path], [], 'removes a file') };
    case 'rmdir':
      return { text: `rmdir ${quotePath(req.path)}`, classification: classification('write', 'sftp.rmdir', [], [req.path], [], 'removes a directory') };
    case 'mkdir': {
      const attrs = describeAttrs(req.attrs);
      return { text: `mkdir ${quotePath(req.path)}${attrs ? ` (${attrs})` : ''}`, classification: classification('write', 'sftp.mkdir', [], [req.path], [], 'creates a directory') };
    }
    case 'setstat':
      return { text: `setstat ${quotePath(req.path)} (${describeAttrs(req.attrs)})`, classification: classification('write', 'sftp.setstat', [], [req.path], attrFlags(req.attrs), 'changes file attributes') };
    case 'fsetstat': {
      const p = handlePath(req.handle) ?? '(unknown handle)';
      return { text: `setstat ${quotePath(p)} (${describeAttrs(req.attrs)})`, classification: classification('write', 'sftp.setstat', [], [p], attrFlags(req.attrs), 'changes file attributes') };
    }
    case 'rename':
      return { text: `rename ${quotePath(req.from)} ${quotePath(req.to)}`, classification: classification('write', 'sftp.rename', [], [req.from, req.to], [], 'renames a file') };
    case 'symlink':
      return { text: `symlink ${quotePath(req.link)} -> ${quotePath(req.target)}`, classification: classification('write', 'sftp.symlink', [], [req.link], [], 'creates a symbolic link') };
    case 'extended': {
      const e = req.ext;
      switch (e.kind) {
        case 'posix-rename':
          return { text: `rename ${quotePath(e.from)} ${quotePath(e.to)}`, classification: classification('write', 'sftp.rename', [], [e.from, e.to], [], 'renames a file') };
        case 'hardlink':
          return { text: `link ${quotePath(e.to)} -> ${quotePath(e.from)}`, classification: classification('write', 'sftp.link', [], [e.to], [], 'creates a hard link') };
        case 'lsetstat':
          return { text: `setstat ${quotePath(e.path)} (${describeAttrs(e.attrs)}) nofollow`, classification: classification('write', 'sftp.setstat', [], [e.path], attrFlags(e.attrs), 'changes file attributes') };
        case 'copy-data': {
          const from = handlePath(e.readHandle) ?? '(unknown handle)';
          const to = handlePath(e.writeHandle) ?? '(unknown handle)';
          return { text: `copy ${quotePath(from)} ${quotePath(to)} (${e.length === 0n ? 'to end' : `${e.length} bytes`})`, classification: classification('write', 'sftp.copy', [from], [to], [], 'copies file data on the target') };
        }
        case 'other':
          return {
            text: `extended ${quotePath(req.name)}`,
            classification: classification('unknown', `sftp.extended`, [], [], ['unknown_extension'], `unknown SFTP extension ${JSON.stringify(req.name.slice(0, 64))}`),
          };
        default:
          return null;
      }
    }
    default:
      return null;
  }
}

/** What is only counted: lookups and reads of metadata. */
function countedName(req: Request): string | null {
  switch (req.type) {
    case 'stat':
    case 'lstat':
    case 'fstat':
    case 'realpath':
    case 'readlink':
    case 'readdir':
      return req.type;
    case 'extended':
      return req.ext.kind === 'other' || req.ext.kind === 'posix-rename' || req.ext.kind === 'hardlink' || req.ext.kind === 'lsetstat' || req.ext.kind === 'copy-data' ? null : req.ext.kind;
    default:
      return null;
  }
}

function waitWritable(w: Writable): Promise<void> {
  if (w.destroyed || !w.writable) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.once('drain', done);
    w.once('close', done);
  });
}

const key = (h: Buffer) => h.toString('latin1');

export async function runSftp(ctx: SftpContext, ch: ssh2.ServerChannel): Promise<void> {
  const { session } = ctx;
  const command = (text: string, meta?: Record<string, unknown>): Command => ({ kind: 'sftp', text, meta });
  let channelExec: Execution;
  try {
    channelExec = await session.run(command('sftp', { channel: 'subsystem' }), classification('read', 'sftp', [], []));
  } catch (e) {
    ctx.log('sftp not recorded; refused', { session: session.id, error: (e as Error).message });
    return refuse(ch, 'gatehouse: sftp was refused because the gateway could not record it; try again later', GATEWAY_FAILURE_STATUS);
  }
  if (channelExec.verdict.action !== 'allow') {
    const d = channelExec.verdict.denial;
    channelExec.finish({ status: 'denied', error: { code: d.code, message: d.reason } });
    return refuse(ch, `gatehouse: ${d.reason}\n  rule: ${d.rule}\n  hint: ${d.hint}`, 1);
  }
  if (ctx.masked) {
    channelExec.finish({ status: 'denied', error: { code: 'masked_connection', message: 'file contents cannot be masked' } });
    return refuse(ch, 'gatehouse: sftp and scp are refused on this connection: it masks output, and file contents cannot be masked', 1);
  }

  let up: ssh2.ClientChannel;
  try {
    up = await new Promise<ssh2.ClientChannel>((resolve, reject) => ctx.upstream.subsys('sftp', (err, stream) => (err ? reject(err) : resolve(stream))));
  } catch (e) {
    channelExec.finish({ status: 'error', error: { message: `the target refused the sftp subsystem: ${(e as Error).message}` } });
    return refuse(ch, `gatehouse: the target refused the sftp subsystem (${(e as Error).message})`, GATEWAY_FAILURE_STATUS);
  }

  const pending = new Map<number, Op>();
  const handles = new Map<string, OpenHandle>();
  const counts: Record<string, number> = {};
  const totals = { opens: 0, denied: 0, bytesRead: 0, bytesWritten: 0, clientBytes: 0, targetBytes: 0 };
  let version: number | null = null;
  let extensions: string[] = [];
  let failure: string | null = null;
  let exitCode: number | null = null;
  up.on('exit', (code: number | null) => (exitCode = code));
  up.stderr.on('data', () => {});

  const fail = (why: string, side: 'client' | 'target') => {
    if (failure) return;
    failure = why;
    ctx.log('sftp channel closed: protocol error', { session: session.id, from: side, error: why });
    up.close();
    ch.close();
  };
  const handlePath = (h: Buffer) => handles.get(key(h))?.path;
  const reply = (id: number, code: number, message: string) => ch.write(encodeStatus(id, code, message));

  const finishOpen = (h: OpenHandle, status: 'ok' | 'error' | 'unknown', code?: number, message?: string) => {
    h.exec?.finish({
      status,
      bytesIn: h.bytesWritten,
      bytesOut: h.bytesRead,
      error: status === 'error' ? { code: statusName(code ?? FX.FAILURE), message } : undefined,
      meta: h.dir ? { entries: h.entries } : { bytesRead: h.bytesRead, bytesWritten: h.bytesWritten, reads: h.reads, writes: h.writes, failedIo: h.errors || undefined },
    });
  };

  /** Guards and records a request; returns whether it may go to the target. */
  const admit = async (req: Request & { id: number }, op: Op): Promise<boolean> => {
    const d = describeRequest(req, handlePath);
    if (!d) return true;
    let exec: Execution;
    try {
      exec = await session.run(command(d.text), d.classification);
    } catch (e) {
      ctx.log('sftp operation not recorded; refused', { session: session.id, error: (e as Error).message });
      reply(req.id, FX.FAILURE, 'gatehouse: refused because the gateway could not record it; try again later');
      return false;
    }
    if (exec.verdict.action !== 'allow') {
      let outcome;
      try {
        outcome = await session.hold(exec);
      } catch (e) {
        exec.finish({ status: 'not_run', error: { message: 'review failed' } });
        reply(req.id, FX.PERMISSION_DENIED, `gatehouse: held for review, but the review could not be created (${(e as Error).message})`);
        return false;
      }
      if (outcome.action === 'deny') {
        totals.denied++;
        exec.finish({ status: 'denied', error: { code: outcome.denial.code, message: outcome.denial.reason } });
        reply(req.id, FX.PERMISSION_DENIED, `gatehouse: ${outcome.denial.reason} (rule ${outcome.denial.rule}; ${outcome.denial.hint})`);
        return false;
      }
    }
    op.exec = exec;
    return true;
  };

  /** One client packet: returns whether to forward it. */
  const fromClient = async (packet: Buffer): Promise<boolean> => {
    let req: Request;
    try {
      req = decodeRequest(packet);
    } catch (e) {
      if (!(e instanceof SftpCodecError)) throw e;
      // Never forwarded: the target must not act on what the gateway could not read.
      ctx.log('sftp request refused: malformed', { session: session.id, error: e.message });
      if (e.id !== undefined) reply(e.id, e.message.startsWith('unknown SFTP request') ? FX.OP_UNSUPPORTED : FX.BAD_MESSAGE, `gatehouse: ${e.message}`);
      else fail(`malformed packet without a request id: ${e.message}`, 'client');
      return false;
    }
    if (req.type === 'init') {
      counts.init = (counts.init ?? 0) + 1;
      return true;
    }
    if (pending.size >= MAX_PENDING) {
      fail(`more than ${MAX_PENDING} requests outstanding`, 'client');
      return false;
    }
    const op: Op = { kind: req.type };
    const counted = countedName(req);
    if (counted) counts[counted] = (counts[counted] ?? 0) + 1;
    switch (req.type) {
      case 'read':
      case 'write': {
        const h = handles.get(key(req.handle));
        if (h) op.open = h;
        op.length = req.length;
        break;
      }
      case 'readdir': {
        const h = handles.get(key(req.handle));
        if (h) op.open = h;
        break;
      }
      case 'close':
        op.closing = req.handle;
        break;
      case 'open':
      case 'opendir':
        if (handles.size >= MAX_HANDLES) {
          reply(req.id, FX.FAILURE, `gatehouse: more than ${MAX_HANDLES} open handles`);
          return false;
        }
        op.opening = { path: req.path, dir: req.type === 'opendir' };
        if (req.type === 'open') totals.opens++;
        break;
    }
    if (!(await admit(req, op))) return false;
    pending.set(req.id, op);
    return true;
  };

  /** One target packet: updates the record; always forwarded. */
  const fromTarget = (packet: Buffer): void => {
    let res: Response;
    try {
      res = decodeResponse(packet);
    } catch (e) {
      if (!(e instanceof SftpCodecError)) throw e;
      fail(`malformed response from the target: ${e.message}`, 'target');
      return;
    }
    if (res.type === 'version') {
      version = res.version;
      extensions = res.extensions;
      return;
    }
    const op = pending.get(res.id);
    if (!op) return;
    pending.delete(res.id);
    const status = res.type === 'status' ? res : null;
    switch (op.kind) {
      case 'open':
      case 'opendir': {
        if (res.type === 'handle') {
          const h: OpenHandle = { exec: op.exec ?? null, path: op.opening!.path, dir: op.opening!.dir, bytesRead: 0, bytesWritten: 0, reads: 0, writes: 0, entries: 0, errors: 0 };
          const prev = handles.get(key(res.handle));
          if (prev) finishOpen(prev, 'unknown');
          handles.set(key(res.handle), h);
        } else op.exec?.finish({ status: 'error', error: { code: statusName(status?.code ?? FX.FAILURE), message: status?.message } });
        return;
      }
      case 'read':
        if (res.type === 'data' && op.open) {
          op.open.bytesRead += res.length;
          op.open.reads++;
          totals.bytesRead += res.length;
        } else if (status && status.code !== FX.EOF && op.open) op.open.errors++;
        return;
      case 'write':
        if (op.open) {
          if (status?.code === FX.OK) {
            op.open.bytesWritten += op.length ?? 0;
            op.open.writes++;
            totals.bytesWritten += op.length ?? 0;
          } else op.open.errors++;
        }
        return;
      case 'readdir':
        if (res.type === 'name' && op.open) op.open.entries += res.count;
        return;
      case 'close': {
        const k = key(op.closing!);
        const h = handles.get(k);
        if (!h) return;
        handles.delete(k);
        if (status?.code === FX.OK) finishOpen(h, 'ok');
        else finishOpen(h, 'error', status?.code, status?.message);
        return;
      }
      default:
        if (!op.exec) return;
        if (status?.code === FX.OK) op.exec.finish({ status: 'ok', meta: { status: 'SSH_FX_OK' } });
        else if (status) op.exec.finish({ status: 'error', error: { code: statusName(status.code), message: status.message } });
        else op.exec.finish({ status: 'ok', meta: { response: res.type } });
    }
  };

  // client → target: packets in order; a guarded one holds everything behind it.
  const clientSide = (async () => {
    const reader = new FrameReader();
    try {
      for await (const chunk of ch.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        if (failure) break;
        totals.clientBytes += chunk.length;
        let packets: Buffer[];
        try {
          packets = reader.push(chunk);
        } catch (e) {
          if (!(e instanceof SftpCodecError)) throw e;
          fail(e.message, 'client');
          break;
        }
        for (const p of packets) {
          if (failure) break;
          if (!(await fromClient(p))) continue;
          if (!up.write(p)) await waitWritable(up);
        }
      }
    } catch (e) {
      if (!failure && !ch.destroyed) ctx.log('sftp client side failed', { session: session.id, error: (e as Error).message });
    }
    if (!failure) up.end();
  })();

  // target → client
  const targetSide = (async () => {
    const reader = new FrameReader();
    try {
      for await (const chunk of up.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        if (failure) break;
        totals.targetBytes += chunk.length;
        let packets: Buffer[];
        try {
          packets = reader.push(chunk);
        } catch (e) {
          if (!(e instanceof SftpCodecError)) throw e;
          fail(e.message, 'target');
          break;
        }
        for (const p of packets) {
          fromTarget(p);
          if (failure) break;
          if (!ch.write(p)) await waitWritable(ch);
        }
      }
    } catch (e) {
      if (!failure) ctx.log('sftp target side failed', { session: session.id, error: (e as Error).message });
    }
  })();

  const clientClosed = new Promise<void>((r) => ch.once('close', () => r()));
  ch.once('close', () => up.close());
  await Promise.race([Promise.all([targetSide, new Promise<void>((r) => (up.destroyed ? r() : up.once('close', () => r())))]), clientClosed]);

  // What never got an answer.
  for (const op of pending.values()) op.exec?.finish({ status: 'unknown' });
  for (const h of handles.values()) finishOpen(h, 'unknown');
  channelExec.finish({
    status: failure ? 'error' : 'ok',
    error: failure ? { message: failure } : undefined,
    bytesIn: totals.clientBytes,
    bytesOut: totals.targetBytes,
    meta: {
      version,
      extensions: extensions.length ? extensions : undefined,
      opens: totals.opens,
      bytesRead: totals.bytesRead,
      bytesWritten: totals.bytesWritten,
      denied: totals.denied || undefined,
      lookups: counts,
      exitStatus: exitCode,
    },
  });
  void clientSide;
  if (ch.destroyed || failure) {
    ch.close();
    return;
  }
  // The client's channel: everything relayed, then the target's exit status, then close.
  await new Promise<void>((r) => (ch.writableLength === 0 ? r() : ch.write(Buffer.alloc(0), () => r())));
  ch.exit(exitCode ?? 0);
  ch.end();
}
