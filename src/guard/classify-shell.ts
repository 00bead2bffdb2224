// Shell command lines (SSH exec) onto the guard's shared vocabulary.
//
// mvdan/sh (sh-syntax.ts) decides whether the line is valid bash and where its statements are;
// shell-lexer.ts reads every simple command that may run, including those inside pipelines,
// lists, subshells, $(…), backticks, process substitutions, function bodies and unquoted heredoc
// bodies; `bash -c '…'`, `sh -c`, `su -c`, `eval`, `watch`, `xargs` and `find -exec` are read
// recursively (bounded depth). Anything it cannot see through is `unknown`:
//   - a parse error, a line over 64 KiB, nesting past the bound, a disagreement between the two
//     readers about where statements are;
//   - a command name that comes from an expansion (`$cmd`, `$(echo rm)`, `{rm,-rf,/}`, `r?`).
//
// Vocabulary:
//   types    the program (basename, lower case: `rm`, `systemctl`), plus `program.subcommand` for
//            tools whose subcommand is what matters (`systemctl.restart`, `git.push`, `kubectl.delete`)
//   classes  read (inspects), write (changes files), admin (services, users, packages, processes,
//            privileges, devices), procedural (runs code the guard cannot see: interpreters,
//            scripts, unrecognised programs), unknown (see above)
//   writes   files written (redirect targets, rm/mv/cp/… operands), when static
//   reads    files read by `<`
//   flags    pipe_to_shell, recursive_delete, destructive, privilege, network, env_override,
//            redirect_write, nested_shell, eval, command_substitution, process_substitution,
//            pipeline, subshell, background, heredoc, function_definition, multiple_statements,
//            dynamic_command, parse_error
import { ClassificationAccumulator, unknownClassification, type Classification, type CommandClass } from './classification.ts';
import { ClassificationCache } from './classification-cache.ts';
import { lexShell, MAX_DEPTH, ShellLexError, type SimpleCommand, type Word } from './shell-lexer.ts';
import { parseShell } from './sh-syntax.ts';

const READ = new Set(
  `true false : test [ echo printf cat tac head tail less more grep egrep fgrep rg ag wc sort uniq cut tr column jq yq diff cmp comm ls dir vdir stat file du df free
uptime whoami id groups hostname uname date cal pwd printenv which type whereis ps top htop pgrep pidof lsof netstat ss journalctl dmesg last lastlog w who sleep basename
dirname realpath readlink md5sum sha1sum sha224sum sha256sum sha384sum sha512sum b2sum cksum sum base64 base32 xxd od hexdump strings nl fold fmt paste join seq yes expr
getent locale nproc lscpu lsblk lsusb lspci lsmod vmstat iostat mpstat arch tty history cd exit return export set unset read shift wait ulimit umask local declare typeset
readonly let break continue pushd popd dirs hash getopts times help logout jobs fg bg disown shopt env tree numfmt tput clear stty ping host dig nslookup zcat zgrep bzcat xzcat
tar.list look iconv awk.read`.split(/\s+/),
);
const WRITE = new Set('rm rmdir mv cp touch mkdir ln tee truncate install rsync shred unlink chmod chown chgrp patch unzip gunzip gzip bzip2 bunzip2 xz unxz zip tar mkfifo mknod split csplit'.split(' '));
const ADMIN = new Set(
  `sudo su doas runuser pkexec reboot shutdown halt poweroff init telinit kill killall pkill mount umount useradd usermod userdel groupadd groupdel groupmod passwd chpasswd
visudo iptables ip6tables nft ufw firewall-cmd modprobe insmod rmmod sysctl fdisk sfdisk parted mkswap swapon swapoff dd chroot nsenter unshare setenforce hostnamectl
timedatectl localectl loginctl service chattr setfacl apt apt-get aptitude dpkg yum dnf rpm apk zypper pacman snap flatpak pip pip3 npm gem cargo crontab at batch wall
systemctl docker podman kubectl helm ctr crictl launchctl`.split(/\s+/),
);
/** Interpreters: they run code the guard does not read (unless it is a shell's -c string). */
const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'ash', 'busybox', 'fish', 'csh', 'tcsh']);
const INTERPRETERS = new Set(['python', 'python2', 'python3', 'perl', 'ruby', 'node', 'nodejs', 'deno', 'bun', 'php', 'lua', 'luajit', 'tclsh', 'Rscript', 'osascript', 'pwsh', 'awk', 'gawk', 'mawk', 'nawk', 'source', '.', 'alias', 'trap', 'expect', 'gdb', 'make', 'vim', 'vi', 'nvim', 'emacs', 'ed', 'nano', 'less.exec']);
const NETWORK = new Set(['curl', 'wget', 'nc', 'ncat', 'netcat', 'socat', 'ssh', 'scp', 'sftp', 'rsync', 'ftp', 'telnet', 'ping', 'dig', 'host', 'nslookup', 'git.clone', 'git.fetch', 'git.pull', 'git.push']);
/** Tools whose subcommand is the interesting part; the subcommand decides read vs admin/write. */
const SUBCOMMAND_READS: Record<string, Set<string>> = {
  systemctl: new Set(['status', 'show', 'is-active', 'is-enabled', 'is-failed', 'list-units', 'list-unit-files', 'list-timers', 'list-sockets', 'cat', 'help', '--version']),
  service: new Set(['--status-all']),
  git: new Set(['status', 'log', 'diff', 'show', 'branch', 'remote', 'rev-parse', 'ls-files', 'blame', 'describe', 'tag', 'config', 'grep', 'shortlog', 'reflog', 'version', '--version']),
  docker: new Set(['ps', 'images', 'logs', 'inspect', 'version', 'info', 'stats', 'top', 'port', 'diff', 'history', 'search']),
  podman: new Set(['ps', 'images', 'logs', 'inspect', 'version', 'info', 'stats', 'top', 'port']),
  kubectl: new Set(['get', 'describe', 'logs', 'top', 'version', 'explain', 'api-resources', 'api-versions', 'cluster-info', 'config', 'auth']),
  helm: new Set(['list', 'ls', 'status', 'get', 'history', 'show', 'version', 'search', 'template']),
  apt: new Set(['list', 'show', 'search', 'policy', 'depends', 'rdepends']),
  'apt-get': new Set(['check', 'changelog']),
  dpkg: new Set(['-l', '-L', '-s', '--list', '--status', '-S', '--search']),
  rpm: new Set(['-q', '-qa', '-qi', '-ql', '-qf']),
  pip: new Set(['list', 'show', 'freeze', 'check', 'search', '--version']),
  pip3: new Set(['list', 'show', 'freeze', 'check', 'search', '--version']),
  npm: new Set(['ls', 'list', 'view', 'outdated', 'search', 'audit', '--version', 'config']),
  crontab: new Set(['-l']),
  ip: new Set(['a', 'addr', 'address', 'r', 'route', 'link', 'l', 'neigh', 'n', '-br', '-s', '-4', '-6', '-c', 'rule', 'netns', 'maddr']),
};
const SUBCOMMAND_TOOLS = new Set(Object.keys(SUBCOMMAND_READS));
/** Tools whose non-read subcommands only write (not admin). */
const SUBCOMMAND_WRITE = new Set(['git', 'npm']);
/** `ip … add|del|set|flush` changes the network; bare `ip addr` shows it. */
const IP_MUTATORS = new Set(['add', 'del', 'delete', 'set', 'flush', 'change', 'replace', 'append']);
/** Programs that run the rest of their arguments as a command; their options that take a value. */
const WRAPPERS: Record<string, { valued: Set<string>; skipFirst?: boolean }> = {
  sudo: { valued: new Set(['-u', '-g', '-C', '-D', '-h', '-p', '-r', '-t', '-U', '-T', '--user', '--group', '--chdir', '--prompt', '--host', '--role', '--type', '--other-user', '--close-from', '--command-timeout']) },
  doas: { valued: new Set(['-u', '-C']) },
  env: { valued: new Set(['-u', '-C', '-S', '--unset', '--chdir', '--split-string']) },
  nice: { valued: new Set(['-n', '--adjustment']) },
  nohup: { valued: new Set() },
  setsid: { valued: new Set() },
  time: { valued: new Set(['-f', '-o', '--format', '--output']) },
  command: { valued: new Set() },
  builtin: { valued: new Set() },
  exec: { valued: new Set(['-a']) },
  stdbuf: { valued: new Set(['-i', '-o', '-e']) },
  ionice: { valued: new Set(['-c', '-n', '-p', '-P', '-u', '--class', '--classdata']) },
  timeout: { valued: new Set(['-s', '-k', '--signal', '--kill-after']), skipFirst: true },
  chroot: { valued: new Set(['--userspec', '--groups']), skipFirst: true },
  flock: { valued: new Set(['-w', '-E', '--timeout', '--conflict-exit-code']), skipFirst: true },
  xargs: { valued: new Set(['-I', '-i', '-n', '-P', '-d', '-L', '-l', '-s', '-E', '-e', '-a', '--max-args', '--max-procs', '--delimiter', '--arg-file', '--replace', '--max-lines', '--eof']) },
  watch: { valued: new Set(['-n', '-d', '--interval', '--differences']) },
  runuser: { valued: new Set(['-u', '-g', '-G', '--user', '--group']) },
  unbuffer: { valued: new Set() },
  strace: { valued: new Set(['-e', '-o', '-p', '-s', '-u']) },
  ltrace: { valued: new Set(['-e', '-o', '-p', '-s', '-u']) },
  caffeinate: { valued: new Set() },
};
/** Variables that change what a command loads or runs. */
const DANGEROUS_ENV = /^(LD_[A-Z_]+|BASH_ENV|ENV|PATH|IFS|PS4|SHELLOPTS|BASHOPTS|PROMPT_COMMAND|GCONV_PATH|PYTHONPATH|PYTHONSTARTUP|PERL5LIB|PERL5OPT|NODE_OPTIONS|RUBYOPT|BASH_FUNC_[^=]*)(\[|\+?=)/;
const SYSTEM_PATHS = /^(\/+|\/+\*|~\/?|~\/\*|\$HOME\/?|\/+(bin|boot|dev|etc|home|lib|lib32|lib64|opt|proc|root|sbin|srv|sys|usr|var|boot)(\/+\*?)?|\/+usr\/+(bin|lib|local|sbin|share)\/*\*?|\.\/?\*?|\.\.\/?|\*)$/;
const BLOCK_DEVICE = /^\/dev\/(sd|hd|vd|xvd|nvme|mmcblk|md|dm-|mapper\/|disk\/|mem$|kmem$|port$)/;
const HARMLESS_TARGETS = new Set(['/dev/null', '/dev/stdout', '/dev/stderr', '/dev/tty', '-', '/dev/zero']);

const cache = new ClassificationCache();

/** Classifies a shell command line. Synchronous, cached by text, never throws (fails closed). */
export function classifyShell(text: string): Classification {
  const hit = cache.get(text);
  if (hit) return hit;
  const c = classifyUncached(text, 0);
  cache.set(text, c);
  return c;
}

function classifyUncached(text: string, depth: number): Classification {
  if (depth > MAX_DEPTH) return unknownClassification(`shell strings nested deeper than ${MAX_DEPTH} levels`, ['nested_shell']);
  const parsed = parseShell(text);
  if (!parsed.ok) return unknownClassification(`shell syntax error: ${parsed.error}`, ['parse_error']);
  let lexed;
  try {
    lexed = lexShell(text, depth);
  } catch (e) {
    return unknownClassification(e instanceof ShellLexError ? `cannot read the command line: ${e.message}` : 'cannot read the command line', ['parse_error']);
  }
  // Both readers must agree on the statements, or the lexer misread the line.
  const starts = lexed.statementStarts.map((o) => Buffer.byteLength(text.slice(0, o)));
  const theirs = parsed.statements.map((s) => s.start);
  if (starts.length !== theirs.length || starts.some((s, i) => s !== theirs[i])) {
    return unknownClassification('the command line could not be read unambiguously', ['parse_error']);
  }
  const acc = new ClassificationAccumulator();
  for (const f of lexed.flags) {
    if (f === 'and_or') continue;
    acc.flags.add(f);
  }
  if (parsed.statements.length > 1) acc.flags.add('multiple_statements');
  if (parsed.statements.length === 0) {
    acc.add('read', 'empty command line');
    acc.flags.add('empty');
  }
  for (const cmd of lexed.commands) classifyCommand(acc, cmd, depth);
  return acc.finish();
}

function classifyCommand(acc: ClassificationAccumulator, cmd: SimpleCommand, depth: number): void {
  for (const a of cmd.assigns) {
    if (DANGEROUS_ENV.test(a)) {
      acc.add('procedural', `sets ${a.split(/[+=[]/)[0]}, which changes what runs`);
      acc.flags.add('env_override');
    }
  }
  for (const r of cmd.redirs) redirect(acc, r.op, r.target);
  if (cmd.words.length === 0) {
    acc.add('read', 'assignment or redirection only');
    return;
  }
  runArgv(acc, cmd.words, cmd, depth);
}

function redirect(acc: ClassificationAccumulator, op: string, target: Word): void {
  if (op === '<<' || op === '<<-') return;
  const t = target.value;
  if (op === '<' || op === '<<<' || op === '<&') {
    if (op === '<' && t) acc.reads.add(t);
    return;
  }
  if ((op === '>&' || op === '<&') && t !== null && /^(\d+-?|-)$/.test(t)) return; // fd duplication
  if (t !== null && HARMLESS_TARGETS.has(t)) return;
  acc.flags.add('redirect_write');
  if (t === null) {
    acc.add('write', 'writes to a file whose name is computed');
    return;
  }
  acc.writes.add(t);
  if (BLOCK_DEVICE.test(t)) {
    acc.add('admin', `writes to device ${t}`);
    acc.flags.add('destructive');
  } else acc.add('write', `writes to ${t}`);
}

function base(name: string): string {
  const i = name.lastIndexOf('/');
  return i >= 0 ? name.slice(i + 1) : name;
}

/** Classifies argv (words[0] is the program). */
function runArgv(acc: ClassificationAccumulator, words: Word[], cmd: SimpleCommand, depth: number): void {
  const first = words[0]!;
  if (first.value === null || first.pattern || first.value === '') {
    acc.add('unknown', `the program name ${JSON.stringify(first.raw.slice(0, 80))} is computed when the line runs`);
    acc.flags.add('dynamic_command');
    return;
  }
  const prog = base(first.value);
  const args = words.slice(1);
  const vals = args.map((w) => w.value);
  acc.type(prog);

  // Wrappers: the command they run is what matters (sudo also escalates).
  const wrap = WRAPPERS[prog];
  if (wrap) {
    if (prog === 'sudo' || prog === 'doas' || prog === 'runuser') {
      acc.add('admin', `runs a command as another user (${prog})`);
      acc.flags.add('privilege');
    }
    if (prog === 'command' && (vals[0] === '-v' || vals[0] === '-V')) return acc.add('read', 'command -v');
    let i = 0;
    if (prog === 'env') while (i < args.length && args[i]!.value !== null && /^[A-Za-z_][A-Za-z0-9_]*=/.test(args[i]!.value!) && !args[i]!.value!.startsWith('-')) i++;
    for (; i < args.length; i++) {
      const v = args[i]!.value;
      if (v === null) break;
      if (v === '--') {
        i++;
        break;
      }
      if (!v.startsWith('-') || v === '-') break;
      if (prog === 'runuser' || prog === 'su') {
        if (v === '-c' || v === '--command') return nestedString(acc, args[i + 1], depth, prog);
      }
      if (prog === 'env' && (v === '-S' || v === '--split-string')) return nestedString(acc, args[i + 1], depth, prog);
      if (wrap.valued.has(v)) i++;
      if ((prog === 'sudo' && (v === '-i' || v === '-s' || v === '--login' || v === '--shell')) && i + 1 >= args.length) {
        return acc.add('admin', 'opens a root shell');
      }
    }
    if (prog === 'env') {
      for (let k = 0; k < i; k++) if (args[k]!.value && DANGEROUS_ENV.test(args[k]!.value!)) acc.flags.add('env_override');
      while (i < args.length && args[i]!.value !== null && /^[A-Za-z_][A-Za-z0-9_]*=/.test(args[i]!.value!)) {
        if (DANGEROUS_ENV.test(args[i]!.value!)) {
          acc.flags.add('env_override');
          acc.add('procedural', `sets ${args[i]!.value!.split('=')[0]}, which changes what runs`);
        }
        i++;
      }
    }
    if (wrap.skipFirst) i++;
    const rest = args.slice(i);
    if (rest.length === 0) {
      if (prog === 'xargs') return runArgv(acc, [{ value: 'echo', pattern: false, raw: 'echo' }], cmd, depth);
      return acc.add('read', `${prog} alone`);
    }
    if (prog === 'watch') {
      // watch joins its arguments and runs them with sh -c
      const joined = rest.every((w) => w.value !== null) ? rest.map((w) => w.value).join(' ') : null;
      return nestedString(acc, { value: joined, pattern: false, raw: '' }, depth, prog);
    }
    if (prog === 'xargs') acc.flags.add('pipeline_args');
    return runArgv(acc, rest, { ...cmd, piped: prog === 'xargs' ? false : cmd.piped }, depth);
  }

  if (prog === 'su') {
    acc.add('admin', 'switches user (su)');
    acc.flags.add('privilege');
    const ci = vals.findIndex((v) => v === '-c' || v === '--command');
    if (ci >= 0) return nestedString(acc, args[ci + 1], depth, prog);
    return;
  }

  if (SHELLS.has(prog)) return shell(acc, prog, args, cmd, depth);

  if (prog === 'eval') {
    acc.flags.add('eval');
    const joined = args.every((w) => w.value !== null) ? args.map((w) => w.value).join(' ') : null;
    return nestedString(acc, { value: joined, pattern: false, raw: '' }, depth, 'eval');
  }

  if (prog === 'find') {
    let reads = true;
    for (let i = 0; i < args.length; i++) {
      const v = vals[i];
      if (v === '-delete') {
        acc.add('write', 'find -delete removes files');
        reads = false;
      } else if (v === '-exec' || v === '-execdir' || v === '-ok' || v === '-okdir') {
        let j = i + 1;
        while (j < args.length && vals[j] !== ';' && vals[j] !== '+') j++;
        const inner = args.slice(i + 1, j);
        if (inner.length) runArgv(acc, inner, { ...cmd, piped: false }, depth);
        i = j;
        reads = false;
      } else if (v === '-fprint' || v === '-fprintf' || v === '-fls' || v === '-fprint0') {
        acc.add('write', `find ${v} writes a file`);
        if (vals[i + 1]) acc.writes.add(vals[i + 1]!);
      }
    }
    if (reads) acc.add('read', 'find');
    return;
  }

  if (INTERPRETERS.has(prog)) {
    acc.add('procedural', `runs ${prog}, whose code the guard does not read`);
    if (cmd.piped && !args.some((w) => w.value !== null && !w.value.startsWith('-'))) acc.flags.add('pipe_to_shell');
    return;
  }

  if (NETWORK.has(prog)) acc.flags.add('network');

  if (SUBCOMMAND_TOOLS.has(prog)) {
    const sub = vals.find((v) => v !== null && !(v.startsWith('-') && !SUBCOMMAND_READS[prog]!.has(v)));
    const subName = sub ?? '';
    if (sub && !sub.startsWith('-')) acc.type(`${prog}.${sub}`);
    if (NETWORK.has(`${prog}.${subName}`)) acc.flags.add('network');
    const reads = SUBCOMMAND_READS[prog]!;
    let isRead = sub === undefined ? prog !== 'crontab' && prog !== 'apt' && prog !== 'apt-get' : reads.has(subName);
    if (prog === 'ip' && vals.some((v) => v !== null && IP_MUTATORS.has(v))) isRead = false;
    if (prog === 'git' && subName === 'branch' && vals.some((v) => v === '-d' || v === '-D' || v === '-m' || v === '-M')) isRead = false;
    if (prog === 'git' && subName === 'config' && !vals.some((v) => v === '--get' || v === '-l' || v === '--list' || v === '--get-all')) isRead = false;
    if (isRead) return acc.add('read', `${prog} ${subName}`.trim());
    return acc.add(SUBCOMMAND_WRITE.has(prog) ? 'write' : 'admin', `${prog} ${subName}`.trim());
  }

  if (prog === 'rm' || prog === 'shred' || prog === 'unlink' || prog === 'rmdir') {
    const recursive = vals.some((v) => v !== null && (/^-[a-zA-Z]*[rR]/.test(v) || v === '--recursive'));
    const noPreserve = vals.includes('--no-preserve-root');
    if (recursive) acc.flags.add('recursive_delete');
    const targets = operands(args);
    for (const t of targets) if (t.value !== null) acc.writes.add(t.value);
    const system = targets.some((t) => t.value === null || expandBraces(t.value).some((v) => SYSTEM_PATHS.test(v) || BLOCK_DEVICE.test(v)));
    if (noPreserve || (recursive && system) || (prog === 'shred' && targets.some((t) => t.value !== null && BLOCK_DEVICE.test(t.value)))) {
      acc.flags.add('destructive');
      return acc.add('admin', `${prog} of a system path`);
    }
    return acc.add('write', `${prog} removes files`);
  }

  if (prog === 'dd') {
    const of = vals.find((v) => v !== null && v.startsWith('of='));
    if (of && BLOCK_DEVICE.test(of.slice(3))) acc.flags.add('destructive');
    if (of) acc.writes.add(of.slice(3));
    return acc.add('admin', 'dd writes raw data');
  }
  if (/^mkfs(\.|$)|^wipefs$|^blkdiscard$/.test(prog)) {
    acc.flags.add('destructive');
    return acc.add('admin', `${prog} formats a device`);
  }
  if ((prog === 'chmod' || prog === 'chown' || prog === 'chgrp') && vals.some((v) => v !== null && /^-[a-zA-Z]*R/.test(v))) {
    const ops = operands(args).slice(1);
    if (ops.some((t) => t.value === null || SYSTEM_PATHS.test(t.value))) {
      acc.flags.add('destructive');
      return acc.add('admin', `${prog} -R of a system path`);
    }
  }
  if (prog === 'sed' || prog === 'perl.inplace') {
    if (vals.some((v) => v !== null && (/^-[a-zA-Z]*i/.test(v) || v.startsWith('--in-place')))) return acc.add('write', 'sed -i edits files');
    return acc.add('read', 'sed');
  }
  if (prog === 'sort' && vals.some((v) => v === '-o' || (v !== null && v.startsWith('--output')))) return acc.add('write', 'sort -o writes a file');
  if (prog === 'curl' || prog === 'wget') {
    if (prog === 'curl' && vals.some((v) => v !== null && /^(-[a-zA-Z]*[oO]|--output|--remote-name)/.test(v))) return acc.add('write', 'curl saves a file');
    if (prog === 'wget' && !vals.some((v) => v !== null && (v === '-O-' || v === '-qO-' || /^-[a-zA-Z]*O$/.test(v) && false))) {
      if (!vals.some((v) => v === '-O' || v === '-O-' || v === '-qO-' || v === '--spider')) return acc.add('write', 'wget saves a file');
    }
    return acc.add('read', `${prog} fetches a URL`);
  }
  if (prog === 'tee') {
    for (const t of operands(args)) if (t.value !== null && !HARMLESS_TARGETS.has(t.value)) {
      acc.writes.add(t.value);
      acc.flags.add('redirect_write');
      if (BLOCK_DEVICE.test(t.value)) acc.flags.add('destructive');
    }
    return acc.add(operands(args).length ? 'write' : 'read', 'tee');
  }
  if (prog === 'kill' || prog === 'pkill' || prog === 'killall') {
    if (vals.some((v) => v === '-1' || v === '1')) acc.flags.add('destructive');
  }
  if (prog === 'ssh') return acc.add('procedural', 'runs commands on another host');

  if (READ.has(prog)) return acc.add('read', prog);
  if (WRITE.has(prog)) {
    for (const t of operands(args)) if (t.value !== null) acc.writes.add(t.value);
    return acc.add('write', `${prog} changes files`);
  }
  if (ADMIN.has(prog)) return acc.add('admin', prog);
  acc.add('procedural', `runs ${prog}, which the guard does not know`);
  if (cmd.piped && /^(\.\/)?[^/]*\.(sh|bash)$/.test(first.value)) acc.flags.add('pipe_to_shell');
}

/** Non-option arguments (after `--`, everything). */
function operands(args: Word[]): Word[] {
  const out: Word[] = [];
  let opts = true;
  for (const w of args) {
    if (opts && w.value === '--') {
      opts = false;
      continue;
    }
    if (opts && w.value !== null && w.value.startsWith('-') && w.value !== '-') continue;
    out.push(w);
  }
  return out;
}

/** sh/bash/…: with -c, the string is read recursively; otherwise it runs a script or stdin. */
function shell(acc: ClassificationAccumulator, prog: string, args: Word[], cmd: SimpleCommand, depth: number): void {
  let i = 0;
  let dashC = false;
  let stdin = false;
  for (; i < args.length; i++) {
    const v = args[i]!.value;
    if (v === null) break;
    if (v === '--' || v === '-') {
      if (v === '-') stdin = true;
      i++;
      break;
    }
    if (!v.startsWith('-') && !v.startsWith('+')) break;
    if (v === '-o' || v === '+o' || v === '-O' || v === '+O' || v === '--rcfile' || v === '--init-file') {
      i++;
      continue;
    }
    if (/^-[a-zA-Z]*c/.test(v)) dashC = true;
    if (/^-[a-zA-Z]*s/.test(v)) stdin = true;
  }
  if (dashC) {
    acc.flags.add('nested_shell');
    return nestedString(acc, args[i], depth, prog);
  }
  if (i >= args.length || stdin) {
    // No script: the shell runs what arrives on stdin.
    acc.add('procedural', `${prog} runs commands from its input`);
    if (cmd.piped) acc.flags.add('pipe_to_shell');
    return;
  }
  const script = args[i]!;
  if (script.value !== null && /^\/dev\/(fd\/|stdin)/.test(script.value)) acc.flags.add('pipe_to_shell');
  if (script.value === null && /^[<>]\(/.test(script.raw)) acc.flags.add('pipe_to_shell');
  acc.add('procedural', `${prog} runs a script the guard does not read`);
}

/** A string that is run as a command line (sh -c, su -c, eval, watch). */
function nestedString(acc: ClassificationAccumulator, w: Word | undefined, depth: number, via: string): void {
  if (!w) return acc.add('read', `${via} without a command`);
  if (w.value === null) {
    acc.add('unknown', `${via} runs a command line computed when it runs`);
    acc.flags.add('dynamic_command');
    if (/\$\(|`/.test(w.raw) && /\b(curl|wget|nc|fetch)\b/.test(w.raw)) acc.flags.add('pipe_to_shell');
    return;
  }
  const inner = classifyUncached(w.value, depth + 1);
  mergeInto(acc, inner);
}

function mergeInto(acc: ClassificationAccumulator, c: Classification): void {
  for (const k of c.classes) acc.add(k as CommandClass, c.class === k && c.reason ? c.reason : k);
  if (c.reason) acc.reasons.set(c.class, acc.reasons.get(c.class) ?? c.reason);
  for (const t of c.types) acc.type(t);
  for (const r of c.reads) acc.reads.add(r);
  for (const w of c.writes) acc.writes.add(w);
  for (const f of c.flags) acc.flags.add(f);
}

/** `a{b,c}d` → [abd, acd]; bounded; no braces → [s]. */
function expandBraces(s: string, budget = 64): string[] {
  const m = /\{([^{}]*)\}/.exec(s);
  if (!m || !(m[1]!.includes(',') || m[1]!.includes('..'))) return [s];
  const parts = m[1]!.includes(',') ? m[1]!.split(',') : [m[1]!];
  const out: string[] = [];
  for (const p of parts) {
    for (const x of expandBraces(s.slice(0, m.index) + p + s.slice(m.index + m[0].length), budget)) {
      if (out.length >= budget) return out;
      out.push(x);
    }
  }
  return out;
}
