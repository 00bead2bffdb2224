// The Kubernetes profile of the HTTP adapter: requests are judged by their Kubernetes facts
// (verb, group, resource, subresource, namespace, name; kube-facts.ts), refusals are `Status`
// objects (errors.ts), and with `impersonate: true` the caller's identity is passed on, so the
// cluster's own RBAC and audit log see who acted rather than the gateway's service account.
import type { OutgoingHttpHeaders } from 'node:http';
import type { HttpConnection } from '../../config/schema.ts';
import type { Identity } from '../../identity/keys.ts';
import { classifyKube, kubeFacts } from './kube-facts.ts';
import type { Described } from './proxy.ts';
import type { Route } from './request.ts';

export function describeKubeRequest(method: string, r: Route, http: Record<string, unknown>): Described {
  const facts = kubeFacts(method, r.path, new URLSearchParams(r.query));
  return { text: `${method} ${r.rest}`, classification: classifyKube(facts, r.path), meta: { http, kubernetes: facts } };
}

/** Impersonation headers for the caller (the client's own Impersonate-* were stripped earlier). */
export function kubeHeaders(c: HttpConnection, identity: Identity): OutgoingHttpHeaders {
  if (c.type !== 'kubernetes' || !c.impersonate) return {};
  // Key names cannot hold ':', so no caller can pass as `system:…`; groups that do are dropped
  // for the same reason (`system:masters` would be cluster-admin).
  const h: OutgoingHttpHeaders = { 'impersonate-user': identity.name };
  const groups = identity.groups.filter((g) => /^[A-Za-z0-9][A-Za-z0-9_.@-]*$/.test(g));
  if (groups.length > 0) h['impersonate-group'] = groups;
  return h;
}
