// Gatehouse's answers to kubectl, as the metav1.Status objects the API server itself sends, so
// kubectl prints "Error from server (Forbidden): gatehouse: …" instead of a decoding error, and a
// program reads the rule and review id from `details.causes` without parsing the message.
import type { Denial } from '../../guard/types.ts';

/** metav1.StatusCause */
export type KubeStatusCause = { reason?: string; message?: string; field?: string };

/** metav1.StatusDetails */
export type KubeStatusDetails = {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: KubeStatusCause[];
  retryAfterSeconds?: number;
};

/** metav1.Status, failure form. A type alias (not an interface) so it is a plain JSON record. */
export type KubeStatus = {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: KubeStatusDetails;
  code: number;
};

/**
 * A failure Status. `reason` is a metav1.StatusReason (Forbidden, NotFound, BadRequest,
 * TooManyRequests, InternalError, …): kubectl shows it in parentheses and client libraries
 * branch on it (e.g. retry on TooManyRequests with details.retryAfterSeconds).
 */
export function kubeStatus(code: number, reason: string, message: string, details?: KubeStatusDetails): KubeStatus {
  const s: KubeStatus = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details !== undefined) {
    // Key order as the API server writes it: details before code.
    const { code: c, ...head } = s;
    return { ...head, details, code: c };
  }
  return s;
}

/** Cause reasons naming Gatehouse's own facts, so a machine can find them among the causes. */
export const CAUSE = { code: 'GatehouseError', rule: 'GatehouseRule', review: 'GatehouseReview' } as const;

/** The human message of a denial: `gatehouse: <reason> (rule: X; hint: Y; review: ID)`. */
export function denialMessage(d: Denial): string {
  const extras = [d.rule ? `rule: ${d.rule}` : '', d.hint ? `hint: ${d.hint}` : '', d.reviewId ? `review: ${d.reviewId}` : ''].filter(Boolean).join('; ');
  return `gatehouse: ${d.reason}${extras ? ` (${extras})` : ''}`;
}

/**
 * A guard denial as kubectl should see it: 403 Forbidden, the reason, rule, hint and review id in
 * the message, and the denial code, rule and review id as `details.causes` (plus
 * `retryAfterSeconds` when the denial says when to try again).
 */
export function denialStatus(d: Denial): KubeStatus {
  const causes: KubeStatusCause[] = [{ reason: CAUSE.code, message: d.code }];
  if (d.rule) causes.push({ reason: CAUSE.rule, message: d.rule });
  if (d.reviewId) causes.push({ reason: CAUSE.review, message: d.reviewId });
  const details: KubeStatusDetails = { causes };
  if (d.retryAfter !== undefined && Number.isFinite(d.retryAfter) && d.retryAfter > 0) details.retryAfterSeconds = Math.ceil(d.retryAfter);
  return kubeStatus(403, 'Forbidden', denialMessage(d), details);
}

/** The review id a Status carries in its causes, if any (what a script or test reads back). */
export function statusReviewId(s: { details?: { causes?: readonly KubeStatusCause[] } }): string | undefined {
  return s.details?.causes?.find((c) => c.reason === CAUSE.review)?.message;
}
