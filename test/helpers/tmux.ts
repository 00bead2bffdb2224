/**
 * A terminal for interactive CLIs in tests: a detached tmux session on a private server socket
 * (`tmux -L <unique>`), so nothing touches the user's tmux. Keys go in with send-keys, the
 * screen comes back with capture-pane. kill() ends the private server and whatever runs in it.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { findBinary, registerEmergencyCleanup } from './postgres.ts';

export interface TmuxOptions {
  /**
   * environment of the program: the private tmux server is started with it, and a new pane
   * inherits the server's environment (not `-e`, which would show secrets such as MYSQL_PWD
   * on a command line)
   */
  env?: Record<string, string>;
  cwd?: string;
  width?: number;
  height?: number;
}

function tmuxBin(): string {
  const b = findBinary('tmux');
  if (!b) throw new Error('tmux not found');
  return b;
}

function exec(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(tmuxBin(), args, { env: env ?? process.env, timeout: 10_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

export class TmuxTerminal {
  private killed = false;
  /** the server's socket file, removed after kill-server (tmux leaves it behind) */
  private socketPath = '';
  private readonly unregister: () => void;

  private constructor(
    readonly socket: string,
    readonly target: string,
  ) {
    // If the test process dies, do not leave a tmux server (and the CLI in it) behind.
    this.unregister = registerEmergencyCleanup(() => {
      // Synchronous on purpose: emergency cleanup runs at exit and cannot wait.
      spawnSync(tmuxBin(), ['-L', this.socket, 'kill-server'], { stdio: 'ignore', timeout: 5000 });
      if (this.socketPath) fs.rmSync(this.socketPath, { force: true });
    });
  }

  /** Starts `argv` in a new detached session on a private tmux server. */
  static async start(argv: string[], opts: TmuxOptions = {}): Promise<TmuxTerminal> {
    const socket = `gatehouse-test-${process.pid}-${randomBytes(4).toString('hex')}`;
    const env = { ...process.env, ...opts.env, TERM: 'xterm-256color' } as NodeJS.ProcessEnv;
    delete env.TMUX; // never attach to, or nest inside, a tmux the tests run in
    const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    // remain-on-exit before the program starts: its last screen stays readable after it exits.
    const args = ['-L', socket, '-f', '/dev/null', 'start-server', ';', 'set-option', '-g', 'remain-on-exit', 'on', ';'];
    args.push('new-session', '-d', '-s', 'main', '-x', String(opts.width ?? 200), '-y', String(opts.height ?? 50));
    if (opts.cwd) args.push('-c', opts.cwd);
    args.push(quoted);
    const r = await exec(args, env);
    if (r.code !== 0) throw new Error(`tmux new-session failed (${r.code}): ${r.stderr}`);
    const term = new TmuxTerminal(socket, 'main');
    term.socketPath = (await exec(['-L', socket, 'display-message', '-p', '#{socket_path}'])).stdout.trim();
    return term;
  }

  /** Types text literally (no key names), without Enter. */
  async type(text: string): Promise<void> {
    // tmux reads an argument that ends in `;` as a command separator; `\;` is a literal one.
    const arg = text.endsWith(';') ? `${text.slice(0, -1)}\\;` : text;
    const r = await exec(['-L', this.socket, 'send-keys', '-t', this.target, '-l', arg]);
    if (r.code !== 0) throw new Error(`tmux send-keys failed: ${r.stderr}`);
  }

  /** Sends key names (Enter, Tab, C-c, …). */
  async keys(...keys: string[]): Promise<void> {
    const r = await exec(['-L', this.socket, 'send-keys', '-t', this.target, ...keys]);
    if (r.code !== 0) throw new Error(`tmux send-keys failed: ${r.stderr}`);
  }

  /** Types a line and presses Enter. */
  async line(text: string): Promise<void> {
    await this.type(text);
    await this.keys('Enter');
  }

  /** The pane's text, scrollback included, with wrapped lines joined. */
  async capture(): Promise<string> {
    const r = await exec(['-L', this.socket, 'capture-pane', '-p', '-J', '-S', '-100000', '-t', this.target]);
    if (r.code !== 0) throw new Error(`tmux capture-pane failed: ${r.stderr}`);
    return r.stdout;
  }

  /** True once the program in the pane has exited. */
  async exited(): Promise<boolean> {
    const r = await exec(['-L', this.socket, 'display-message', '-p', '-t', this.target, '#{pane_dead}']);
    return r.code !== 0 || r.stdout.trim() === '1';
  }

  /**
   * Polls the screen until `pred` holds for it (a RegExp, tested on the text after `from`
   * characters of the capture) and returns the capture; throws with the screen after timeoutMs.
   */
  async waitFor(pred: RegExp | ((screen: string) => boolean), timeoutMs = 15_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let screen = '';
    for (;;) {
      screen = await this.capture();
      const tail = screen.slice(from);
      if (typeof pred === 'function' ? pred(tail) : pred.test(tail)) return screen;
      if (Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${String(pred)}; screen:\n${screen.slice(-4000)}`);
  }

  async kill(): Promise<void> {
    if (this.killed) return;
    this.killed = true;
    await exec(['-L', this.socket, 'kill-server']);
    if (this.socketPath) fs.rmSync(this.socketPath, { force: true });
    this.unregister();
  }
}
