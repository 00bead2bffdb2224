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
const out = path.join(root, 'node_modules', '.cache', 'gatehouse', 'main.mjs');

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
    if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= newest(src)) return out;
    const esbuild = await import('esbuild');
    fs.mkdirSync(path.dirname(out), { recursive: true });
    // Built beside and renamed into place: gateways started at once never load half a file.
    const tmp = `${out}.${process.pid}.tmp`;
    await esbuild.build({ entryPoints: [path.join(src, 'cli', 'main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile: tmp, logLevel: 'silent' });
    await esbuild.stop?.();
    fs.renameSync(tmp, out);
    return out;
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
