// Best-effort command lines from what a user types into an interactive shell.
//
// The line editor runs on the target (readline, zle), so the gateway only sees keystrokes. This
// replays the common editing keys on a model of the line: printable text at the cursor,
// backspace, Ctrl-U/K/W/A/E/B/F, Ctrl-C (abandons the line), left/right/home/end/delete, and
// bracketed paste. What it cannot follow is reported as `uncertain` with reasons: history
// (up/down, Ctrl-R/P/N), Tab completion, other escape sequences. Lines typed into full-screen
// programs (alternate screen) or at prompts that do not echo are not commands; the shell adapter
// decides that from the output. The result is a record, never a guarantee.

export interface TypedLine {
  text: string;
  uncertain: boolean;
  /** why the text may differ from what ran */
  reasons: string[];
}

/** Longest line kept; the rest of a longer line is dropped and the line marked uncertain. */
const MAX_LINE = 64 * 1024;

export class LineTracker {
  private line: string[] = [];
  private cursor = 0;
  private reasons = new Set<string>();
  /** an escape sequence being read */
  private esc = '';
  private pasting = false;

  /** Feeds typed text; returns the lines completed by Enter (possibly none). */
  feed(input: string): TypedLine[] {
    const done: TypedLine[] = [];
    for (const ch of input) {
      if (this.esc) {
        this.esc += ch;
        if (this.escapeComplete()) {
          const s = this.esc;
          this.esc = '';
          this.escape(s);
        } else if (this.esc.length > 32) {
          this.reasons.add('escape sequence');
          this.esc = '';
        }
        continue;
      }
      const c = ch.codePointAt(0)!;
      if (ch === '\x1b') {
        this.esc = ch;
        continue;
      }
      if (this.pasting) {
        // Pasted text goes in literally, newlines included (bracketed paste: the shell waits for Enter).
        this.insert(ch === '\r' ? '\n' : ch);
        continue;
      }
      if (ch === '\r' || ch === '\n') {
        const l = this.take();
        if (l) done.push(l);
        continue;
      }
      switch (c) {
        case 0x7f:
        case 0x08: // backspace
          if (this.cursor > 0) this.line.splice(--this.cursor, 1);
          break;
        case 0x15: // Ctrl-U: kill to the start
          this.line.splice(0, this.cursor);
          this.cursor = 0;
          break;
        case 0x0b: // Ctrl-K: kill to the end
          this.line.length = this.cursor;
          break;
        case 0x17: // Ctrl-W: kill the word before the cursor
          this.killWord();
          break;
        case 0x01: // Ctrl-A
          this.cursor = 0;
          break;
        case 0x05: // Ctrl-E
          this.cursor = this.line.length;
          break;
        case 0x02: // Ctrl-B
          if (this.cursor > 0) this.cursor--;
          break;
        case 0x06: // Ctrl-F
          if (this.cursor < this.line.length) this.cursor++;
          break;
        case 0x04: // Ctrl-D: delete under the cursor (on an empty line the shell exits)
          if (this.cursor < this.line.length) this.line.splice(this.cursor, 1);
          break;
        case 0x03: // Ctrl-C: the line is abandoned
        case 0x07: // Ctrl-G
          this.reset();
          break;
        case 0x09:
          this.reasons.add('tab completion');
          break;
        case 0x10:
        case 0x0e:
        case 0x12:
        case 0x13:
          this.reasons.add('history');
          break;
        default:
          if (c >= 0x20) this.insert(ch);
          else if (c !== 0x0c) this.reasons.add('control key'); // Ctrl-L only redraws
      }
    }
    return done;
  }

  private insert(ch: string): void {
    if (this.line.length >= MAX_LINE) {
      this.reasons.add('line too long');
      return;
    }
    this.line.splice(this.cursor++, 0, ch);
  }

  private killWord(): void {
    let i = this.cursor;
    while (i > 0 && /\s/.test(this.line[i - 1]!)) i--;
    while (i > 0 && !/\s/.test(this.line[i - 1]!)) i--;
    this.line.splice(i, this.cursor - i);
    this.cursor = i;
  }

  private escapeComplete(): boolean {
    const s = this.esc;
    if (s.length < 2) return false;
    if (s[1] === '[') return s.length >= 3 && /[\x40-\x7e]/.test(s.at(-1)!) && !(s.length === 3 && s[2] === '[');
    if (s[1] === 'O') return s.length >= 3;
    return true; // ESC x: Alt/Meta + key
  }

  private escape(s: string): void {
    const final = s.at(-1)!;
    if (s === '\x1b[200~') return void (this.pasting = true);
    if (s === '\x1b[201~') return void (this.pasting = false);
    if (s[1] === '[' || s[1] === 'O') {
      const params = s.slice(2, -1);
      if (final === 'D' && params === '') return void (this.cursor > 0 && this.cursor--);
      if (final === 'C' && params === '') return void (this.cursor < this.line.length && this.cursor++);
      if (final === 'H' || (final === '~' && (params === '1' || params === '7'))) return void (this.cursor = 0);
      if (final === 'F' || (final === '~' && (params === '4' || params === '8'))) return void (this.cursor = this.line.length);
      if (final === '~' && params === '3') return void (this.cursor < this.line.length && this.line.splice(this.cursor, 1));
      if ((final === 'A' || final === 'B') && params === '') return void this.reasons.add('history');
    }
    this.reasons.add('escape sequence');
  }

  private take(): TypedLine | null {
    const text = this.line.join('').trim();
    const reasons = [...this.reasons];
    this.reset();
    if (!text && reasons.length === 0) return null;
    return { text, uncertain: reasons.length > 0, reasons };
  }

  private reset(): void {
    this.line = [];
    this.cursor = 0;
    this.reasons.clear();
  }

  /** Forgets the line being typed (e.g. a program read it, not the shell). */
  clear(): void {
    this.reset();
    this.esc = '';
    this.pasting = false;
  }
}
