// What an approval is bound to: one identity, one connection, one statement text, one set
// of parameters. A reviewer approves exactly what they saw; the same statement with another
// literal, parameter, target or author is a different statement and needs its own review.
import { createHash } from 'node:crypto';
import { canonical } from '../journal/canonical.ts';

export interface BindingInput {
  identityId: string;
  connection: string;
  text: string;
  params?: readonly unknown[] | null;
}

const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
const isIdentChar = (c: string | undefined) => c !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(c);

/**
 * Layout-insensitive form of a PostgreSQL statement: runs of whitespace become one space,
 * the ends are trimmed, one trailing semicolon goes. Case is kept (string literals and quoted
 * identifiers are case-sensitive; keeping all case is simpler to trust than telling keywords
 * from the rest).
 *
 * It must never make two different statements equal, so it errs towards changing nothing:
 * quoted text ('...', E'...', "...", `...`, $tag$...$tag$) and comments are copied verbatim; a
 * line comment keeps its line break (a space would pull the next line into the comment); and
 * from a plain '...' string that contains a backslash on, the rest is copied verbatim, because
 * where that string ends depends on standard_conforming_strings, which a session can turn off.
 */
export function normalizeStatement(text: string): string {
  const n = text.length;
  let out = '';
  let i = 0;
  /** false when the text ends inside a quote or comment, or the rest was copied as is */
  let clean = true;
  while (i < n) {
    const c = text[i]!;
    if (isSpace(c)) {
      let j = i;
      while (j < n && isSpace(text[j])) j++;
      out += ' ';
      i = j;
      continue;
    }
    // -- line comment: copied with the line break that ends it
    if (c === '-' && text[i + 1] === '-') {
      let j = i + 2;
      while (j < n && text[j] !== '\n' && text[j] !== '\r') j++;
      out += text.slice(i, j);
      if (j < n) {
        out += '\n';
        while (j < n && isSpace(text[j])) j++;
      } else clean = false; // the text ends in the comment, so a trailing ";" is comment text
      i = j;
      continue;
    }
    // /* block comment */, nested as PostgreSQL nests them
    if (c === '/' && text[i + 1] === '*') {
      let depth = 1;
      let j = i + 2;
      while (j < n && depth > 0) {
        if (text[j] === '/' && text[j + 1] === '*') (depth++, (j += 2));
        else if (text[j] === '*' && text[j + 1] === '/') (depth--, (j += 2));
        else j++;
      }
      if (depth > 0) clean = false;
      out += text.slice(i, j);
      i = j;
      continue;
    }
    // 'string', E'string' (backslash escapes), "identifier", `identifier`; doubled quote escapes
    if (c === "'" || c === '"' || c === '`') {
      const escapes = c === "'" && (text[i - 1] === 'E' || text[i - 1] === 'e') && !isIdentChar(text[i - 2]);
      let j = i + 1;
      let closed = false;
      let ambiguous = false;
      while (j < n) {
        const d = text[j]!;
        if (d === '\\') {
          if (escapes) {
            j += 2;
            continue;
          }
          if (c === "'") ambiguous = true;
        }
        if (d === c) {
          if (text[j + 1] === c) {
            j += 2;
            continue;
          }
          j++;
          closed = true;
          break;
        }
        j++;
      }
      if (ambiguous) {
        out += text.slice(i);
        clean = false;
        break;
      }
      if (!closed) clean = false;
      out += text.slice(i, Math.min(j, n));
      i = j;
      continue;
    }
    // $tag$ ... $tag$ (not a parameter like $1, nor the $ inside an identifier like a$b)
    if (c === '$' && !isIdentChar(text[i - 1])) {
      const m = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(text.slice(i, i + 130));
      if (m) {
        const end = text.indexOf(m[0], i + m[0].length);
        const j = end < 0 ? n : end + m[0].length;
        if (end < 0) clean = false;
        out += text.slice(i, j);
        i = j;
        continue;
      }
    }
    out += c;
    i++;
  }
  // Leading whitespace is never part of a token. Trailing whitespace, and a trailing
  // semicolon, are only dropped when the text does not end inside a quote or comment.
  if (out.startsWith(' ')) out = out.slice(1);
  if (clean) {
    out = out.replace(/[ \n]$/, '');
    if (out.endsWith(';')) out = out.slice(0, -1).replace(/[ \n]$/, '');
  }
  return out;
}

/** Hex SHA-256 over canonical JSON of who, where, what (normalized) and with which parameters. */
export function bindingHash(b: BindingInput): string {
  const body = canonical({
    identityId: b.identityId,
    connection: b.connection,
    text: normalizeStatement(b.text),
    params: b.params ? [...b.params] : [],
  });
  return createHash('sha256').update(body).digest('hex');
}
