import { writeFileSync } from 'node:fs';
import { exportSessionBundle } from '../journal/bundle.ts';
import { findSession, listSessions, sessionTimeline, type TimelineEvent } from '../journal/read.ts';
import { keyIdOf, loadPublicKey } from '../journal/signer.ts';
import { UsageError, type CliContext } from './main.ts';
import { withStore } from './store.ts';

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
      default:
        throw new UsageError(`unknown sessions subcommand "${sub ?? ''}"; use list, show or export`);
    }
  });
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
    case 'command': {
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
