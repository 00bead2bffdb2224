// Process plumbing shared by the benches: running a tool and collecting its output, what they
// read from /proc (Linux: a process's CPU time and memory, the machine's load), and the summary
// of a CPU profile of the gateway.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  /** added to this process's environment */
  env?: Record<string, string>;
  cwd?: string;
  /** for large outputs that only need to be read by the tool, not kept */
  stdoutToNull?: boolean;
}

/** Runs a tool to its end; resolves with its exit code, output and wall time. */
export function run(bin: string, args: string[], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const devnull = opts.stdoutToNull ? fs.openSync('/dev/null', 'w') : null;
    const p = spawn(bin, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', devnull ?? 'pipe', 'pipe'] });
    if (devnull !== null) fs.closeSync(devnull);
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

/** User + system CPU seconds of a process so far. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
}

/** Machine-wide busy and total jiffies, to show how loaded the box was during a run. */
export function machineCpu(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
}

/** Resident set size of a process in kB (NaN when it is gone). */
export const vmRssKb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time per function of a .cpuprofile, as a share of the non-idle samples. */
export function summarizeProfile(file: string, top = 25): string {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: ProfileNode[] };
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const n of prof.nodes) {
    const hits = n.hitCount ?? 0;
    total += hits;
    const f = n.callFrame;
    if (f.functionName === '(idle)') {
      idle += hits;
      continue;
    }
    const where = f.url.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, '~/').replace(/^.*\/(src|bench|test)\//, '$1/');
    const k = `${f.functionName || '(anonymous)'}${where ? ` ${where}:${f.lineNumber + 1}` : ''}`;
    self.set(k, (self.get(k) ?? 0) + hits);
  }
  const busy = Math.max(1, total - idle);
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, top);
  return `samples ${total}, idle ${((100 * idle) / Math.max(1, total)).toFixed(1)}%; self time as % of busy samples:\n${rows.map(([k, h]) => `${((100 * h) / busy).toFixed(1).padStart(5)}%  ${k}`).join('\n')}`;
}
