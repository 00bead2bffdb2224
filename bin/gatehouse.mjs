#!/usr/bin/env node
// Runs the TypeScript sources with no build step for the user. They are bundled with esbuild
// (installed with tsx) into node_modules/.cache/gatehouse/, and rebuilt whenever a source file is
// newer than the bundle. Loading the bundle needs ~50 MB less memory than compiling on the fly
// through tsx's loader thread, and no esbuild process stays running next to the gateway.
// GATEHOUSE_NO_BUNDLE=1 (or a failed build) runs the sources through tsx instead.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const cache = path.join(root, 'node_modules', '.cache', 'gatehouse');

/** Newest modification time under dir (bounded: the source tree is small). */
function newest(dir) {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

async function bundle() {
  if (process.env.GATEHOUSE_NO_BUNDLE === '1') return null;
  try {
    // One directory per state of the sources: a gateway never loads chunks of two builds, and
    // gateways started at once never see a half-written one (built aside, renamed into place).
    const dir = path.join(cache, String(Math.floor(newest(src))));
    const entry = path.join(dir, 'main.mjs');
    if (fs.existsSync(entry)) return entry;
    const esbuild = await import('esbuild');
    const tmp = `${dir}.${process.pid}.tmp`;
    // Split at dynamic imports, so a listener's packages (ssh2, the SQL parsers, …) load only
    // when that listener is configured.
    await esbuild.build({
      entryPoints: { main: path.join(src, 'cli', 'main.ts') },
      bundle: true,
      splitting: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      outdir: tmp,
      outExtension: { '.js': '.mjs' },
      logLevel: 'silent',
    });
    await esbuild.stop?.();
    try {
      fs.renameSync(tmp, dir);
    } catch {
      fs.rmSync(tmp, { recursive: true, force: true }); // another process got there first
    }
    // Older builds go after a day: a gateway still running from one loads chunks lazily.
    for (const old of fs.readdirSync(cache)) {
      const p = path.join(cache, old);
      if (old !== path.basename(dir) && Date.now() - fs.statSync(p).mtimeMs > 86_400_000) fs.rmSync(p, { recursive: true, force: true });
    }
    return entry;
  } catch (e) {
    process.stderr.write(`gatehouse: could not bundle the sources (${e.message.split('\n')[0]}); running them through tsx\n`);
    return null;
  }
}

const bundled = await bundle();
let main;
if (bundled) ({ main } = await import(pathToFileURL(bundled).href));
else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/cli/main.ts'));
}
const code = await main(process.argv.slice(2));
if (typeof code === 'number') process.exitCode = code;
