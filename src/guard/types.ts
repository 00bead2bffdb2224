// The guard's vocabulary, shared by every protocol. Nothing here knows a wire format.
import type { Classification } from './classification.ts';
import type { ReviewTerms } from './policy.ts';

/** A protocol-neutral command: a SQL statement, a shell command, an HTTP request, a tool call. */
export interface Command {
  kind: 'sql' | 'shell' | 'exec' | 'http' | 'tool' | 'sftp' | 'tcpip';
  text: string;
  /** the classifier to use: a SQL dialect, or 'sh' for shell command lines (SSH exec) */
  dialect?: 'postgres' | 'mysql' | 'sh';
  /** bound parameters, already bounded and rendered for the record */
  params?: unknown[];
  meta?: Record<string, unknown>;
}

/** The one denial shape, mapped by each adapter onto its protocol's error. */
export interface Denial {
  code: string;
  rule: string;
  reason: string;
  hint: string;
  reviewId?: string;
  retryAfter?: number;
}

export type Verdict =
  | { action: 'allow'; rule: string; classification?: Classification; reviewId?: string }
  | { action: 'block'; rule: string; denial: Denial; classification?: Classification }
  | { action: 'review'; rule: string; denial: Denial; terms: ReviewTerms; classification?: Classification };
