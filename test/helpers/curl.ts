// curl as the HTTP tests run it: against the gateway's HTTPS listener, trusting its certificate.
import { spawn } from 'node:child_process';

export interface CurlRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `curl -sS --cacert caFile …args`; killed after timeoutMs. */
export function curl(caFile: string, args: string[], timeoutMs = 30_000): Promise<CurlRun> {
  return new Promise((resolve, reject) => {
    const p = spawn('curl', ['-sS', '--cacert', caFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}
