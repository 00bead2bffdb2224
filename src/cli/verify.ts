import { readFileSync } from 'node:fs';
import { verifyBundle } from '../journal/bundle.ts';
import { loadPublicKey } from '../journal/signer.ts';
import { verifyStore, type VerifyReport } from '../journal/verify.ts';
import type { CliContext } from './main.ts';
import { withStore } from './store.ts';

export async function verifyCommand(ctx: CliContext): Promise<number> {
  const pubFile = ctx.values.pubkey as string | undefined;
  let trusted: string | undefined;
  if (pubFile) trusted = readFileSync(pubFile, 'utf8');
  else {
    try {
      trusted = loadPublicKey(ctx.config.dataDir);
    } catch {
      trusted = undefined;
    }
  }
  let report: VerifyReport;
  let what: string;
  const bundleFile = ctx.values.bundle as string | undefined;
  if (bundleFile) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(bundleFile, 'utf8'));
    } catch (e) {
      parsed = null;
      ctx.err(`gatehouse: ${bundleFile} is not a readable JSON bundle: ${(e as Error).message}`);
      return 1;
    }
    if (!trusted && !ctx.json) ctx.err('warning: no trusted public key (--pubkey or the dataDir key); checking against the key inside the bundle');
    report = verifyBundle(parsed, trusted);
    what = `bundle ${bundleFile}`;
  } else {
    if (!trusted) {
      ctx.err(`gatehouse: no signing key in ${ctx.config.dataDir}; pass --pubkey FILE`);
      return 1;
    }
    report = await withStore(ctx.config, (store) => verifyStore(store, trusted!));
    what = 'journal';
  }
  if (ctx.json) ctx.out(JSON.stringify(report));
  else if (report.ok) ctx.out(`${what} intact: ${report.events} events, ${report.checkpoints} signed checkpoints`);
  else ctx.out(`${what} NOT intact: first bad event ${report.firstBad?.seq}: ${report.firstBad?.reason}`);
  return report.ok ? 0 : 1;
}
