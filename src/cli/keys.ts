import { readFileSync } from 'node:fs';
import { createKey, listKeys, revokeKey, standing, type IdentityKind } from '../identity/keys.ts';
import { addSshKey } from '../identity/ssh-keys.ts';
import { parseDuration } from '../util/duration.ts';
import { UsageError, type CliContext } from './main.ts';
import { withStore } from './store.ts';

const list = (v: unknown) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : []);

export async function keysCommand(ctx: CliContext): Promise<number> {
  const [sub, arg] = ctx.positionals;
  const v = ctx.values;
  return withStore(ctx.config, async (store) => {
    switch (sub) {
      case 'create': {
        const name = v.name as string | undefined;
        if (!name) throw new UsageError('keys create needs --name NAME');
        const kind = (v.kind as string | undefined) ?? 'agent';
        if (kind !== 'agent' && kind !== 'human') throw new UsageError(`--kind must be "agent" or "human", not "${kind}"`);
        let expiresInMs: number | null = null;
        if (v.expires !== undefined) {
          expiresInMs = parseDuration(v.expires as string);
          if (!expiresInMs) throw new UsageError(`--expires: expected a duration like 30d, 12h or 15m, not "${v.expires}"`);
        }
        const { identity, key } = await createKey(store.db, { name, kind: kind as IdentityKind, groups: list(v.groups), connections: list(v.connections), expiresInMs });
        if (ctx.json) ctx.out(JSON.stringify({ ...publicView(identity), key }));
        else {
          ctx.out(`created key "${identity.name}" (${identity.kind}); connections: ${identity.connections.join(', ') || 'none'}${identity.expiresAt ? `; expires ${identity.expiresAt}` : ''}`);
          ctx.out(`key: ${key}`);
          ctx.out('this is the only time the key is shown; only its hash is stored.');
        }
        return 0;
      }
      case 'list': {
        const keys = await listKeys(store.db);
        if (ctx.json) ctx.out(JSON.stringify(keys.map(publicView)));
        else {
          ctx.out(pad(['NAME', 'KIND', 'STATE', 'GROUPS', 'CONNECTIONS', 'CREATED', 'EXPIRES']));
          for (const k of keys) {
            const s = standing(k);
            ctx.out(pad([k.name, k.kind, s.ok ? 'active' : s.reason, k.groups.join(',') || '-', k.connections.join(',') || '-', k.createdAt.slice(0, 19), k.expiresAt?.slice(0, 19) ?? '-']));
          }
        }
        return 0;
      }
      case 'revoke': {
        if (!arg) throw new UsageError('keys revoke needs a key NAME');
        const id = await revokeKey(store.db, arg);
        if (ctx.json) ctx.out(JSON.stringify(publicView(id)));
        else ctx.out(`revoked key "${id.name}"; its live sessions close within 5 s`);
        return 0;
      }
      case 'add-ssh': {
        if (!arg) throw new UsageError('keys add-ssh needs a key NAME: keys add-ssh NAME --pubkey FILE');
        const file = v.pubkey as string | undefined;
        if (!file) throw new UsageError('keys add-ssh needs --pubkey FILE (an SSH public key, e.g. ~/.ssh/id_ed25519.pub)');
        let text: string;
        try {
          text = readFileSync(file, 'utf8');
        } catch (e) {
          throw new UsageError(`--pubkey: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
        }
        const rec = await addSshKey(store.db, arg, text);
        if (ctx.json) ctx.out(JSON.stringify(rec));
        else ctx.out(`added SSH key ${rec.fingerprint} (${rec.algo}${rec.comment ? `, ${rec.comment}` : ''}) to "${rec.identityName}"; it logs in as this identity: ssh CONNECTION@gateway`);
        return 0;
      }
      default:
        throw new UsageError(`unknown keys subcommand "${sub ?? ''}"; use create, list, revoke or add-ssh`);
    }
  });
}

function publicView(k: { id: string; name: string; kind: string; groups: string[]; connections: string[]; createdAt: string; expiresAt: string | null; revokedAt: string | null }) {
  const { id, name, kind, groups, connections, createdAt, expiresAt, revokedAt } = k;
  return { id, name, kind, groups, connections, createdAt, expiresAt, revokedAt };
}

export function pad(cols: string[]): string {
  const widths = [16, 6, 8, 14, 18, 20, 20];
  return cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i] ?? 12))).join(' ');
}
