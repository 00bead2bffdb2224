import { writeFileSync } from 'node:fs';
import { exportSessionBundle } from '../journal/bundle.ts';
import { findSession, listSessions, sessionTimeline, type TimelineEvent } from '../journal/read.ts';
import { keyIdOf, loadPublicKey } from '../journal/signer.ts';
import { UsageError, type CliContext } from './main.ts';
import { withStore } from './store.ts';
import type { Store } from '../store/db.ts';
import { checkEvent, encodeCast, parseResize, replayDelays, type CastEvent, type CastHeader } from '../session/asciicast.ts';

export async function sessionsCommand(ctx: CliContext): Promise<number> {
  const [sub, id] = ctx.positionals;
  return withStore(ctx.config, async (store) => {
    switch (sub) {
      case 'list': {
        const limit = Number(ctx.values.limit ?? 50);
        if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive integer');
        const rows = await listSessions(store, limit);
        if (ctx.json) ctx.out(JSON.stringify(rows));
        else {
          ctx.out('ID                                    IDENTITY         CONNECTION       PROTOCOL  STARTED              STATE');
          for (const r of rows) ctx.out(`${r.id}  ${r.identity_name.padEnd(16)} ${r.connection.padEnd(16)} ${r.protocol.padEnd(9)} ${r.started_at.slice(0, 19)}  ${r.status}${r.close_reason ? ` (${r.close_reason})` : ''}`);
        }
        return 0;
      }
      case 'show': {
        if (!id) throw new UsageError('sessions show needs a session ID');
        const t = await sessionTimeline(store, id);
        if (!t) throw new Error(`no session "${id}"; see \`gatehouse sessions list\``);
        if (ctx.json) ctx.out(JSON.stringify(t));
        else {
          const s = t.session;
          ctx.out(`session ${s.id}`);
          ctx.out(`  identity ${s.identity_name} (${s.identity_kind})  connection ${s.connection}  protocol ${s.protocol}  client ${s.client_addr ?? '-'}`);
          ctx.out(`  ${s.started_at} → ${s.ended_at ?? 'open'}${s.close_reason ? `  (${s.close_reason})` : ''}`);
          for (const e of t.events) for (const line of renderEvent(e)) ctx.out(line);
        }
        return 0;
      }
      case 'export': {
        if (!id) throw new UsageError('sessions export needs a session ID');
        const format = ctx.values.format as string | undefined;
        if (format !== undefined && format !== 'asciicast' && format !== 'bundle') throw new UsageError(`unknown --format "${format}"; use asciicast (an SSH shell recording) or bundle`);
        if (format === 'asciicast') {
          const cast = await loadCast(store, id);
          const text = encodeCast(cast.header, cast.events);
          const file = ctx.values.out as string | undefined;
          if (!file) process.stdout.write(text);
          else {
            writeFileSync(file, text);
            if (ctx.json) ctx.out(JSON.stringify({ out: file, session: cast.session, events: cast.events.length }));
            else ctx.out(`wrote ${file}: asciicast v2, ${cast.header.width}x${cast.header.height}, ${cast.events.length} events of session ${cast.session}`);
          }
          return 0;
        }
        const outFile = ctx.values.out as string | undefined;
        if (!outFile) throw new UsageError('sessions export needs --out FILE');
        const s = await findSession(store, id);
        if (!s) throw new Error(`no session "${id}"; see \`gatehouse sessions list\``);
        const pub = loadPublicKey(ctx.config.dataDir);
        const bundle = await exportSessionBundle(store, s.id, pub, keyIdOf(pub));
        writeFileSync(outFile, JSON.stringify(bundle));
        const events = bundle.entries.filter((e) => !('stub' in e)).length;
        if (ctx.json) ctx.out(JSON.stringify({ out: outFile, session: s.id, events, complete: bundle.complete }));
        else ctx.out(`wrote ${outFile}: ${events} events of session ${s.id}${bundle.complete ? '' : ' (session still open: covered up to the latest checkpoint)'}`);
        return 0;
      }
      case 'replay': {
        if (!id) throw new UsageError('sessions replay needs a session ID');
        const speed = numberOption(ctx.values.speed, '--speed', 1);
        const maxWait = numberOption(ctx.values['max-wait'], '--max-wait', undefined);
        if (speed !== undefined && speed <= 0) throw new UsageError('--speed must be greater than 0');
        const cast = await loadCast(store, id);
        await play(cast.events, { speed, maxWait });
        return 0;
      }
      default:
        throw new UsageError(`unknown sessions subcommand "${sub ?? ''}"; use list, show, export or replay`);
    }
  });
}

function numberOption(v: unknown, name: string, dflt: number | undefined): number | undefined {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`${name} must be a number ≥ 0`);
  return n;
}

/**
 * The recording of a session's first terminal (an SSH shell, a Kubernetes exec/attach), rebuilt
 * from the journal alone: the header from the command event, the events from its `output`
 * events, in order. Resizes before any output (kubectl sends the size only once the stream is
 * open) give the header's size.
 */
async function loadCast(store: Store, id: string): Promise<{ session: string; header: CastHeader; events: CastEvent[] }> {
  const t = await sessionTimeline(store, id);
  if (!t) throw new Error(`no session "${id}"; see \`gatehouse sessions list\``);
  const shell = t.events.find((e) => e.type === 'command' && !e.data.detected && e.data.cast);
  if (!shell) throw new Error(`session ${t.session.id} has no recorded terminal (SSH shells and kubectl exec/attach are recorded as asciicast)`);
  const h = shell.data.cast as Partial<CastHeader>;
  const header: CastHeader = { version: 2, width: Number(h.width) || 80, height: Number(h.height) || 24, timestamp: h.timestamp, env: h.env };
  const events: CastEvent[] = [];
  for (const e of t.events) {
    if (e.type !== 'output' || e.data.command !== shell.seq || !Array.isArray(e.data.cast)) continue;
    for (const c of e.data.cast) events.push(checkEvent(c));
  }
  // Resizes before the first output set the size (kubectl attach sends size+1, then the size, to force a redraw).
  for (let i = 0; i < events.length && events[i]![1] !== 'o'; ) {
    const size = events[i]![1] === 'r' ? parseResize(events[i]![2]) : null;
    if (!size) {
      i++;
      continue;
    }
    header.width = size.cols;
    header.height = size.rows;
    events.splice(i, 1);
  }
  return { session: t.session.id, header, events };
}

/** Writes the output events to stdout with their recorded timing (resizes are not replayed). */
async function play(events: CastEvent[], opts: { speed?: number; maxWait?: number }): Promise<void> {
  const delays = replayDelays(events, opts);
  for (let i = 0; i < events.length; i++) {
    const wait = delays[i]!;
    if (wait > 0.001) await new Promise((r) => setTimeout(r, wait * 1000));
    const [, code, data] = events[i]!;
    if (code !== 'o') continue;
    if (!process.stdout.write(data)) await new Promise((r) => process.stdout.once('drain', r));
  }
}

function time(ts: string): string {
  return ts.slice(11, 23);
}

function renderEvent(e: TimelineEvent): string[] {
  const d = e.data as any;
  const at = `  #${String(e.seq).padEnd(7)} ${time(e.ts)}`;
  switch (e.type) {
    case 'session.open':
      return [`${at}  ● open${d.tls ? ' (tls)' : ''}${d.application ? ` application=${d.application}` : ''}`];
    case 'session.close':
      return [`${at}  ○ close: ${d.reason}`];
    case 'output': {
      const cast = Array.isArray(d.cast) ? (d.cast as CastEvent[]) : [];
      const chars = cast.reduce((n, c) => n + (typeof c[2] === 'string' ? c[2].length : 0), 0);
      return [`${at}  ▤ recording: ${cast.length} events, ${chars} chars  (for #${d.command})`];
    }
    case 'command': {
      if (d.detected) {
        const v = d.verdict?.action && d.verdict.action !== 'allow' ? `  [would ${d.verdict.action}: ${d.verdict.reason ?? d.verdict.rule}]` : '';
        return [`${at}    typed: ${oneLine(String(d.text ?? ''))}${v}  (detected, best effort${d.uncertain ? `; uncertain: ${(d.uncertainBecause ?? []).join(', ')}` : ''})`];
      }
      const verdict = d.verdict?.action && d.verdict.action !== 'allow' ? `  [${d.verdict.action}: ${d.verdict.reason ?? d.verdict.rule}]` : '';
      const params = Array.isArray(d.params) && d.params.length ? `\n${' '.repeat(24)}params: ${JSON.stringify(d.params)}` : '';
      return [`${at}  ▶ ${oneLine(String(d.text ?? ''))}${verdict}${params}`];
    }
    case 'result': {
      const dur = typeof d.durationMs === 'number' ? `${d.durationMs} ms` : '';
      const lines: string[] = [];
      if (d.status === 'error') lines.push(`${at}  ◀ error ${d.error?.code ?? ''}: ${d.error?.message ?? ''}  ${dur}`);
      else lines.push(`${at}  ◀ ${d.status}${d.tag ? ` ${d.tag}` : ''}${d.rows != null ? `  rows=${d.rows}` : ''}${d.bytesIn || d.bytesOut ? `  bytes in/out=${d.bytesIn ?? 0}/${d.bytesOut ?? 0}` : ''}  ${dur}  (for #${d.command})`);
      const pad = ' '.repeat(24);
      if (Array.isArray(d.columns) && Array.isArray(d.sample)) {
        lines.push(pad + d.columns.join(' | '));
        for (const row of d.sample) lines.push(pad + row.map((v: unknown) => (v === null ? 'NULL' : String(v))).join(' | '));
        if (d.truncated) lines.push(pad + '… (more rows not recorded)');
      }
      return lines;
    }
    default:
      return [`${at}  ${e.type} ${JSON.stringify(d)}`];
  }
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > 200 ? t.slice(0, 200) + '…' : t;
}
