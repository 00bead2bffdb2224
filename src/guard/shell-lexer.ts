// Reads a bash command line into what the guard needs: every simple command that may run
// (argv as static words where they are static), its redirections, and the structure around it
// (pipelines, lists, subshells, substitutions, function bodies, heredoc bodies). It is not a full
// parser: classify-shell.ts runs it only on input that mvdan/sh has accepted, and checks its
// statement boundaries against mvdan/sh's, so a misreading fails closed instead of passing.
//
// Bounds: nesting depth (MAX_DEPTH) and command count (MAX_COMMANDS); past them it throws
// ShellLexError, which the classifier turns into `unknown`.

export const MAX_DEPTH = 16;
const MAX_COMMANDS = 2000;

export class ShellLexError extends Error {}

export interface Word {
  /** the word's value after quote removal, or null when it depends on an expansion */
  value: string | null;
  /** unquoted glob characters (`*`, `?`, `[`) or brace expansion: it may become other words */
  pattern: boolean;
  raw: string;
}

export interface Redir {
  op: string;
  target: Word;
}

export interface SimpleCommand {
  assigns: string[];
  words: Word[];
  redirs: Redir[];
  /** reads its stdin from the previous stage of a pipeline */
  piped: boolean;
  /** stage index within its pipeline, 0 for the first */
  stage: number;
  /** depth of command substitution / nested shell strings */
  depth: number;
}

export interface LexResult {
  commands: SimpleCommand[];
  /** offsets (UTF-16) where top-level statements start */
  statementStarts: number[];
  flags: Set<string>;
}

const KEYWORDS_OPEN = new Set(['if', 'while', 'until', 'for', 'select', 'case']);
const KEYWORDS_CLOSE = new Set(['fi', 'done', 'esac']);
const KEYWORDS_SKIP = new Set(['then', 'elif', 'else', 'do', '!', 'time', 'coproc']);
const META = new Set([' ', '\t', '\n', '|', '&', ';', '<', '>', '(', ')']);
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function lexShell(src: string, depth = 0): LexResult {
  const lx = new Lexer(src, depth, { commands: [], statementStarts: [], flags: new Set() });
  lx.parseProgram();
  return lx.out;
}

class Lexer {
  pos = 0;
  private nesting = 0;
  private pendingHeredocs: { delim: string; strip: boolean; expand: boolean }[] = [];

  constructor(
    private readonly src: string,
    private readonly depth: number,
    readonly out: LexResult,
  ) {
    if (depth > MAX_DEPTH) throw new ShellLexError(`nested deeper than ${MAX_DEPTH} levels`);
  }

  // --- structure ------------------------------------------------------------------------------

  parseProgram(): void {
    this.parseList(null, true);
    if (this.pos < this.src.length) throw new ShellLexError(`unexpected "${this.src[this.pos]}" at ${this.pos}`);
  }

  /**
   * Statements until `end` (a closing character: ')' or '}') or EOF. At top level, records where
   * statements start (only outside compound commands, as mvdan/sh counts them).
   */
  private parseList(end: string | null, top = false): void {
    for (let guard = 0; ; guard++) {
      if (guard > MAX_COMMANDS * 4) throw new ShellLexError('too many commands');
      this.skipSeparators();
      if (this.pos >= this.src.length) return;
      const c = this.src[this.pos]!;
      if (end !== null && c === end) return;
      if (c === ')' && end !== ')') throw new ShellLexError(`unexpected ")" at ${this.pos}`);
      if (end === ';;' && this.atCaseEnd()) return;
      if (top && this.nesting === 0) this.out.statementStarts.push(this.pos);
      this.parseAndOr(end);
      // a statement ends at ';', '&', newline; '&' also counts as a separator at top level
      this.skipBlanks();
      if (this.src[this.pos] === '&' && this.src[this.pos + 1] !== '&') {
        this.out.flags.add('background');
        this.pos++;
      } else if (this.src[this.pos] === ';' && this.src[this.pos + 1] !== ';') {
        this.pos++;
      }
    }
  }

  private atCaseEnd(): boolean {
    return this.src.startsWith(';;', this.pos) || this.src.startsWith(';&', this.pos) || this.wordAhead() === 'esac';
  }

  private parseAndOr(end: string | null): void {
    for (;;) {
      this.parsePipeline(end);
      this.skipBlanks();
      if (this.src.startsWith('&&', this.pos) || this.src.startsWith('||', this.pos)) {
        this.out.flags.add('and_or');
        this.pos += 2;
        this.skipNewlines();
        continue;
      }
      return;
    }
  }

  private parsePipeline(end: string | null): void {
    let stage = 0;
    for (;;) {
      this.parseCommand(stage, end);
      this.skipBlanks();
      if (this.src[this.pos] === '|' && this.src[this.pos + 1] !== '|') {
        this.pos += this.src[this.pos + 1] === '&' ? 2 : 1;
        this.out.flags.add('pipeline');
        stage++;
        this.skipNewlines();
        continue;
      }
      return;
    }
  }

  private parseCommand(stage: number, end: string | null): void {
    this.skipBlanks();
    const s = this.src;
    const c = s[this.pos];
    if (c === undefined) return;
    if (c === '(') {
      if (s[this.pos + 1] === '(') {
        this.pos += 2;
        this.parseArith('))');
      } else {
        this.pos++;
        this.out.flags.add('subshell');
        this.parseList(')');
        this.expect(')');
      }
      this.parseTrailingRedirs(stage);
      return;
    }
    const w = this.wordAhead();
    if (w === '{') {
      this.pos++;
      this.parseList('}');
      this.expect('}');
      this.parseTrailingRedirs(stage);
      return;
    }
    if (w === '[[') {
      this.pos += 2;
      this.parseCondition();
      return;
    }
    if (w !== null && KEYWORDS_OPEN.has(w)) {
      this.pos += w.length;
      this.nesting++;
      if (w === 'for' || w === 'select') this.parseForHead();
      else if (w === 'case') this.parseCase();
      return;
    }
    if (w !== null && KEYWORDS_CLOSE.has(w)) {
      this.pos += w.length;
      this.nesting--;
      if (this.nesting < 0) throw new ShellLexError(`unexpected "${w}"`);
      this.parseTrailingRedirs(stage);
      return;
    }
    if (w !== null && KEYWORDS_SKIP.has(w)) {
      this.pos += w.length;
      this.parseCommand(stage, end);
      return;
    }
    if (w === 'function') {
      this.pos += w.length;
      this.skipBlanks();
      this.readWord();
      this.skipBlanks();
      if (s.startsWith('()', this.pos)) this.pos += 2;
      this.out.flags.add('function_definition');
      this.skipNewlines();
      this.parseCommand(stage, end);
      return;
    }
    this.parseSimple(stage);
  }

  private parseSimple(stage: number): void {
    const cmd: SimpleCommand = { assigns: [], words: [], redirs: [], piped: stage > 0, stage, depth: this.depth };
    const s = this.src;
    for (;;) {
      this.skipBlanks();
      const c = s[this.pos];
      if (c === undefined || c === '\n' || c === ';' || c === '|' || c === ')' || (c === '&' && s[this.pos + 1] !== '>')) break;
      if (this.tryRedir(cmd)) continue;
      if (c === '(' && cmd.words.length === 1 && cmd.assigns.length === 0) {
        // name () body: a function definition; the body is read as if it ran
        this.pos++;
        this.skipBlanks();
        this.expect(')');
        this.out.flags.add('function_definition');
        this.skipNewlines();
        this.parseCommand(stage, null);
        return;
      }
      if (c === '(' || ((c === '<' || c === '>') && s[this.pos + 1] !== '(')) throw new ShellLexError(`unexpected "${c}" at ${this.pos}`);
      if (cmd.words.length === 0 && c === '}' ) break;
      const start = this.pos;
      const word = this.readWord();
      if (cmd.words.length === 0 && /^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=/.test(word.raw)) {
        if (word.raw.endsWith('=') && s[this.pos] === '(') {
          this.pos++;
          this.readArrayBody();
        }
        cmd.assigns.push(word.raw);
        continue;
      }
      if (this.pos === start) throw new ShellLexError(`cannot read a word at ${this.pos}`);
      cmd.words.push(word);
    }
    if (cmd.words.length || cmd.assigns.length || cmd.redirs.length) this.push(cmd);
  }

  private push(cmd: SimpleCommand): void {
    if (this.out.commands.length >= MAX_COMMANDS) throw new ShellLexError(`more than ${MAX_COMMANDS} commands`);
    this.out.commands.push(cmd);
  }

  private parseTrailingRedirs(stage: number): void {
    const cmd: SimpleCommand = { assigns: [], words: [], redirs: [], piped: stage > 0, stage, depth: this.depth };
    for (;;) {
      this.skipBlanks();
      if (!this.tryRedir(cmd)) break;
    }
    if (cmd.redirs.length) this.push(cmd);
  }

  private tryRedir(cmd: SimpleCommand): boolean {
    const s = this.src;
    if ((s[this.pos] === '<' || s[this.pos] === '>') && s[this.pos + 1] === '(') return false; // <( … ): a word
    const m = /^(\d+|\{[A-Za-z_][A-Za-z0-9_]*\})?(&>>|&>|<<<|<<-|<<|>>|>\||<>|<&|>&|<|>)/.exec(s.slice(this.pos, this.pos + 40));
    if (!m) return false;
    // a digit run is a word unless the operator follows it at once
    this.pos += m[0].length;
    const op = m[2]!;
    this.skipBlanks();
    if (op === '<<' || op === '<<-') {
      const w = this.readWord();
      const quoted = /['"\\]/.test(w.raw);
      this.pendingHeredocs.push({ delim: w.value ?? w.raw.replace(/['"\\]/g, ''), strip: op === '<<-', expand: !quoted });
      cmd.redirs.push({ op, target: w });
      this.out.flags.add('heredoc');
      return true;
    }
    if ((s[this.pos] === '<' || s[this.pos] === '>') && s[this.pos + 1] === '(') {
      cmd.redirs.push({ op, target: this.readWord() });
      return true;
    }
    const target = this.readWord();
    if (target.raw === '') throw new ShellLexError(`redirection without a target at ${this.pos}`);
    cmd.redirs.push({ op, target });
    return true;
  }

  private parseForHead(): void {
    this.skipBlanks();
    if (this.src.startsWith('((', this.pos)) {
      this.pos += 2;
      this.parseArith('))');
      return;
    }
    this.readWord(); // the variable
    this.skipBlanks();
    if (this.wordAhead() === 'in') {
      this.pos += 2;
      for (;;) {
        this.skipBlanks();
        const c = this.src[this.pos];
        if (c === undefined || c === ';' || c === '\n') break;
        this.readWord();
      }
    }
  }

  private parseCase(): void {
    this.skipBlanks();
    this.readWord();
    this.skipNewlines();
    if (this.wordAhead() !== 'in') throw new ShellLexError('case without in');
    this.pos += 2;
    for (let guard = 0; guard < MAX_COMMANDS; guard++) {
      this.skipSeparators();
      if (this.wordAhead() === 'esac') return; // the closing keyword is consumed by parseCommand
      if (this.src[this.pos] === '(') this.pos++;
      for (;;) {
        this.skipBlanks();
        this.readWord();
        this.skipBlanks();
        if (this.src[this.pos] === '|') {
          this.pos++;
          continue;
        }
        break;
      }
      this.expect(')');
      this.parseList(';;');
      for (const t of [';;&', ';;', ';&']) {
        if (this.src.startsWith(t, this.pos)) {
          this.pos += t.length;
          break;
        }
      }
    }
    throw new ShellLexError('case too long');
  }

  /** `[[ … ]]`: only the words matter (they may hold substitutions). */
  private parseCondition(): void {
    for (let guard = 0; guard < 10_000; guard++) {
      this.skipBlanks();
      const s = this.src;
      if (this.pos >= s.length) throw new ShellLexError('unterminated [[');
      if (s.startsWith(']]', this.pos) && (META.has(s[this.pos + 2] ?? ' ') || this.pos + 2 === s.length)) {
        this.pos += 2;
        return;
      }
      const c = s[this.pos]!;
      if ('()|&<>!\n'.includes(c)) {
        this.pos++;
        continue;
      }
      const before = this.pos;
      this.readWord();
      if (this.pos === before) this.pos++;
    }
    throw new ShellLexError('condition too long');
  }

  /** Arithmetic up to `close`; substitutions inside it run. */
  private parseArith(close: string): void {
    let paren = 0;
    const s = this.src;
    while (this.pos < s.length) {
      if (paren === 0 && s.startsWith(close, this.pos)) {
        this.pos += close.length;
        return;
      }
      const c = s[this.pos]!;
      if (c === '(') paren++;
      else if (c === ')') paren--;
      if (c === '$' || c === '`' || c === '"' || c === "'" || c === '\\') {
        this.readWord(true);
        continue;
      }
      this.pos++;
    }
    throw new ShellLexError('unterminated arithmetic');
  }

  private readArrayBody(): void {
    for (let guard = 0; guard < 100_000; guard++) {
      this.skipSeparators();
      if (this.src[this.pos] === ')') {
        this.pos++;
        return;
      }
      if (this.pos >= this.src.length) throw new ShellLexError('unterminated array');
      const before = this.pos;
      this.readWord();
      if (this.pos === before) throw new ShellLexError('cannot read array element');
    }
  }

  // --- words ----------------------------------------------------------------------------------

  /**
   * One word, with quote removal. `inArith`: stop at one expansion or quoted part (used to read
   * substitutions inside arithmetic).
   */
  readWord(inArith = false): Word {
    const s = this.src;
    const start = this.pos;
    let value: string | null = '';
    let pattern = false;
    const dyn = () => (value = null);
    const lit = (t: string) => {
      if (value !== null) value += t;
    };
    let braceOpen = false;
    while (this.pos < s.length) {
      const c = s[this.pos]!;
      if (!inArith && META.has(c)) {
        if ((c === '<' || c === '>') && s[this.pos + 1] === '(') {
          this.pos += 2;
          this.out.flags.add('process_substitution');
          this.subList(')');
          dyn();
          continue;
        }
        break;
      }
      if (c === "'") {
        const e = s.indexOf("'", this.pos + 1);
        if (e < 0) throw new ShellLexError('unterminated quote');
        lit(s.slice(this.pos + 1, e));
        this.pos = e + 1;
      } else if (c === '"') {
        this.pos++;
        this.readDouble(lit, dyn);
      } else if (c === '\\') {
        if (s[this.pos + 1] === '\n') this.pos += 2;
        else {
          lit(s[this.pos + 1] ?? '');
          this.pos += 2;
        }
      } else if (c === '$') {
        if (s[this.pos + 1] === "'") {
          const r = decodeAnsiC(s, this.pos + 2);
          if (r.value === null) dyn();
          else lit(r.value);
          this.pos = r.end;
        } else if (s[this.pos + 1] === '"') {
          this.pos += 2;
          this.readDouble(lit, dyn);
        } else this.readExpansion(lit, dyn);
      } else if (c === '`') this.readExpansion(lit, dyn);
      else {
        if (c === '*' || c === '?' || c === '[') pattern = true;
        if (c === '{') braceOpen = true;
        if (braceOpen && (c === ',' || (c === '.' && s[this.pos + 1] === '.'))) pattern = true;
        if ((c === '?' || c === '*' || c === '+' || c === '@' || c === '!') && s[this.pos + 1] === '(') {
          // extglob: a pattern, read to its closing parenthesis
          pattern = true;
          const e = s.indexOf(')', this.pos);
          if (e < 0) throw new ShellLexError('unterminated pattern');
          lit(s.slice(this.pos, e + 1));
          this.pos = e + 1;
          continue;
        }
        lit(c);
        this.pos++;
      }
      if (inArith) break;
    }
    return { value, pattern, raw: s.slice(start, this.pos) };
  }

  private readDouble(lit: (t: string) => void, dyn: () => void): void {
    const s = this.src;
    while (this.pos < s.length) {
      const c = s[this.pos]!;
      if (c === '"') {
        this.pos++;
        return;
      }
      if (c === '\\') {
        const n = s[this.pos + 1];
        if (n === '$' || n === '`' || n === '"' || n === '\\') lit(n);
        else if (n !== '\n') lit('\\' + (n ?? ''));
        this.pos += 2;
      } else if (c === '$' || c === '`') this.readExpansion(lit, dyn);
      else {
        lit(c);
        this.pos++;
      }
    }
    throw new ShellLexError('unterminated double quote');
  }

  /** At '$' or '`' (outside single quotes): an expansion makes the word dynamic; a lone '$' is literal. */
  private readExpansion(lit: (t: string) => void, dyn: () => void): void {
    if (this.src[this.pos] === '`') {
      this.readBacktick();
      dyn();
    } else if (this.readDollar()) dyn();
    else {
      lit('$');
      this.pos++;
    }
  }

  /** At '$': reads an expansion and returns true, or returns false for a literal '$'. */
  private readDollar(): boolean {
    const s = this.src;
    const n = s[this.pos + 1];
    if (n === '(') {
      if (s[this.pos + 2] === '(') {
        this.pos += 3;
        this.parseArith('))');
        return true;
      }
      this.pos += 2;
      this.out.flags.add('command_substitution');
      this.subList(')');
      return true;
    }
    if (n === '[') {
      // old arithmetic $[ … ]
      this.pos += 2;
      this.parseArith(']');
      return true;
    }
    if (n === '{') {
      this.pos += 2;
      this.readBraceParam();
      return true;
    }
    if (n !== undefined && /[A-Za-z0-9_@*#?$!-]/.test(n)) {
      this.pos += 2;
      if (/[A-Za-z_]/.test(n)) while (this.pos < s.length && /[A-Za-z0-9_]/.test(s[this.pos]!)) this.pos++;
      return true;
    }
    return false;
  }

  private readBraceParam(): void {
    const s = this.src;
    while (this.pos < s.length) {
      const c = s[this.pos]!;
      if (c === '}') {
        this.pos++;
        return;
      }
      if (c === '$' || c === '`' || c === '"' || c === "'" || c === '\\') {
        this.readWord(true);
        continue;
      }
      this.pos++;
    }
    throw new ShellLexError('unterminated ${');
  }

  /** `( … )` of $( … ) or <( … ): a nested list in the same text. */
  private subList(close: ')'): void {
    const sub = new Lexer(this.src, this.depth + 1, this.out);
    sub.pos = this.pos;
    sub.parseList(close);
    sub.flushHeredocs();
    if (this.src[sub.pos] !== close) throw new ShellLexError('unterminated substitution');
    this.pos = sub.pos + 1;
  }

  /** `…` : its text, with \\ \` \$ unescaped, is a command line of its own. */
  private readBacktick(): void {
    const s = this.src;
    let inner = '';
    let i = this.pos + 1;
    for (; i < s.length; i++) {
      const c = s[i]!;
      if (c === '\\' && (s[i + 1] === '`' || s[i + 1] === '\\' || s[i + 1] === '$')) {
        inner += s[i + 1];
        i++;
      } else if (c === '`') break;
      else inner += c;
    }
    if (i >= s.length) throw new ShellLexError('unterminated backtick');
    this.pos = i + 1;
    this.out.flags.add('command_substitution');
    const sub = new Lexer(inner, this.depth + 1, { commands: this.out.commands, statementStarts: [], flags: this.out.flags });
    sub.parseProgram();
  }

  // --- blanks, separators, heredocs -------------------------------------------------------------

  private skipBlanks(): void {
    const s = this.src;
    for (;;) {
      const c = s[this.pos];
      if (c === ' ' || c === '\t') this.pos++;
      else if (c === '\\' && s[this.pos + 1] === '\n') this.pos += 2;
      else if (c === '#' && (this.pos === 0 || META.has(s[this.pos - 1]!))) {
        const e = s.indexOf('\n', this.pos);
        this.pos = e < 0 ? s.length : e;
      } else return;
    }
  }

  private skipNewlines(): void {
    for (;;) {
      this.skipBlanks();
      if (this.src[this.pos] === '\n') {
        this.pos++;
        this.flushHeredocs();
      } else return;
    }
  }

  private skipSeparators(): void {
    for (;;) {
      this.skipNewlines();
      const s = this.src;
      if (s[this.pos] === ';' && s[this.pos + 1] !== ';' && s[this.pos + 1] !== '&') this.pos++;
      else return;
    }
  }

  /** After a newline: the bodies of heredocs opened on the line just ended. */
  flushHeredocs(): void {
    const s = this.src;
    while (this.pendingHeredocs.length) {
      const h = this.pendingHeredocs.shift()!;
      let body = '';
      for (;;) {
        if (this.pos >= s.length) break;
        const e = s.indexOf('\n', this.pos);
        const line = s.slice(this.pos, e < 0 ? s.length : e);
        this.pos = e < 0 ? s.length : e + 1;
        if ((h.strip ? line.replace(/^\t+/, '') : line) === h.delim) break;
        body += line + '\n';
      }
      if (h.expand && /[$`]/.test(body)) {
        // An unquoted heredoc expands like a double-quoted string: its substitutions run.
        const sub = new Lexer(body + '"', this.depth, this.out);
        sub.readDouble(() => {}, () => {});
      }
    }
  }

  // --- small helpers ----------------------------------------------------------------------------

  /** The reserved word at pos, if the next token is a plain word made only of letters or [ { } ! */
  private wordAhead(): string | null {
    const m = /^(\[\[|[{}!]|[a-z]+)(?=$|[\s;&|()<>])/.exec(this.src.slice(this.pos, this.pos + 12));
    return m ? m[1]! : null;
  }

  private expect(c: string): void {
    this.skipBlanks();
    if (this.src[this.pos] !== c) throw new ShellLexError(`expected "${c}" at ${this.pos}`);
    this.pos++;
  }
}

/** $'…' from `from` (just after the quote): the decoded value (null if it has escapes we do not decode) and the end. */
function decodeAnsiC(s: string, from: number): { value: string | null; end: number } {
  let out: string | null = '';
  let i = from;
  const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', e: '\x1b', E: '\x1b', f: '\f', v: '\v', '\\': '\\', "'": "'", '"': '"', '?': '?' };
  for (; i < s.length; i++) {
    const c = s[i]!;
    if (c === "'") return { value: out, end: i + 1 };
    if (c !== '\\') {
      if (out !== null) out += c;
      continue;
    }
    const n = s[i + 1] ?? '';
    let m: RegExpExecArray | null;
    if (simple[n] !== undefined) {
      if (out !== null) out += simple[n];
      i++;
    } else if ((m = /^x([0-9a-fA-F]{1,2})/.exec(s.slice(i + 1, i + 4)))) {
      if (out !== null) out += String.fromCharCode(parseInt(m[1]!, 16));
      i += m[0].length;
    } else if ((m = /^[0-7]{1,3}/.exec(s.slice(i + 1, i + 4)))) {
      if (out !== null) out += String.fromCharCode(parseInt(m[0], 8) & 0xff);
      i += m[0].length;
    } else if ((m = /^(u[0-9a-fA-F]{1,4}|U[0-9a-fA-F]{1,8})/.exec(s.slice(i + 1, i + 10)))) {
      const cp = parseInt(m[0].slice(1), 16);
      if (out !== null) out = cp <= 0x10ffff ? out + String.fromCodePoint(cp) : null;
      i += m[0].length;
    } else {
      // \cX and anything unusual: do not guess
      out = null;
      i++;
    }
  }
  throw new ShellLexError("unterminated $'");
}
