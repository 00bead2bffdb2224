import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubernetesFacts } from '../../src/guard/classification.ts';
import { classifyKube, kubeReason, kubeFacts, kubeRef, nameFromFieldSelector } from '../../src/protocols/http/kube-facts.ts';
import { CAUSE, denialMessage, denialStatus, kubeStatus, statusReviewId } from '../../src/protocols/http/kube-status.ts';

/** method and URL as kubectl sends them; the query is parsed like the adapter does */
function facts(method: string, url: string): KubernetesFacts {
  const q = url.indexOf('?');
  return kubeFacts(method, q < 0 ? url : url.slice(0, q), new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
}

const F = (verb: string, resource: string, o: Partial<KubernetesFacts> = {}): KubernetesFacts => ({
  verb,
  apiGroup: '',
  apiVersion: 'v1',
  resource,
  subresource: '',
  namespace: '',
  name: '',
  ...o,
});

const NR = (verb: string): KubernetesFacts => ({ verb, apiGroup: '', apiVersion: '', resource: '', subresource: '', namespace: '', name: '' });

// Each row: what kubectl does, its request, and the RequestInfo the API server computes for it.
const TABLE: [string, string, string, KubernetesFacts][] = [
  ['get pods', 'GET', '/api/v1/namespaces/default/pods?limit=500', F('list', 'pods', { namespace: 'default' })],
  ['get pods -w', 'GET', '/api/v1/namespaces/default/pods?resourceVersion=123&watch=true', F('watch', 'pods', { namespace: 'default' })],
  ['watch=1', 'GET', '/api/v1/namespaces/default/pods?watch=1', F('watch', 'pods', { namespace: 'default' })],
  ['watch=false is a list', 'GET', '/api/v1/namespaces/default/pods?watch=false', F('list', 'pods', { namespace: 'default' })],
  ['watch=0 is a list', 'GET', '/api/v1/namespaces/default/pods?watch=0', F('list', 'pods', { namespace: 'default' })],
  ['watch=FALSE is a list', 'GET', '/api/v1/namespaces/default/pods?watch=FALSE', F('list', 'pods', { namespace: 'default' })],
  ['bare ?watch is a watch', 'GET', '/api/v1/namespaces/default/pods?watch', F('watch', 'pods', { namespace: 'default' })],
  ['get pod x -w (field selector names it)', 'GET', '/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1&watch=true', F('watch', 'pods', { namespace: 'default', name: 'web-1' })],
  ['legacy /watch/ prefix', 'GET', '/api/v1/watch/namespaces/default/pods', F('watch', 'pods', { namespace: 'default' })],
  ['legacy /watch/ prefix, named', 'GET', '/api/v1/watch/namespaces/default/pods/web-1', F('watch', 'pods', { namespace: 'default', name: 'web-1' })],
  ['get pod x -o yaml', 'GET', '/api/v1/namespaces/prod/pods/web-1', F('get', 'pods', { namespace: 'prod', name: 'web-1' })],
  ['HEAD is get', 'HEAD', '/api/v1/namespaces/prod/pods/web-1', F('get', 'pods', { namespace: 'prod', name: 'web-1' })],
  ['logs -f', 'GET', '/api/v1/namespaces/prod/pods/web-1/log?container=app&follow=true', F('get', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'log' })],
  ['delete pod', 'DELETE', '/api/v1/namespaces/prod/pods/web-1', F('delete', 'pods', { namespace: 'prod', name: 'web-1' })],
  ['delete pods --all', 'DELETE', '/api/v1/namespaces/prod/pods', F('deletecollection', 'pods', { namespace: 'prod' })],
  ['get secrets -A', 'GET', '/api/v1/secrets?limit=500', F('list', 'secrets')],
  ['apply (server-side) deployment', 'PATCH', '/apis/apps/v1/namespaces/prod/deployments/api?fieldManager=kubectl&fieldValidation=Strict&force=false', F('patch', 'deployments', { apiGroup: 'apps', namespace: 'prod', name: 'api' })],
  ['create deployment', 'POST', '/apis/apps/v1/namespaces/prod/deployments?fieldManager=kubectl-client-side-apply', F('create', 'deployments', { apiGroup: 'apps', namespace: 'prod' })],
  ['replace deployment', 'PUT', '/apis/apps/v1/namespaces/prod/deployments/api', F('update', 'deployments', { apiGroup: 'apps', namespace: 'prod', name: 'api' })],
  ['scale', 'PATCH', '/apis/apps/v1/namespaces/prod/deployments/api/scale', F('patch', 'deployments', { apiGroup: 'apps', namespace: 'prod', name: 'api', subresource: 'scale' })],
  ['status subresource', 'PUT', '/apis/apps/v1/namespaces/prod/deployments/api/status', F('update', 'deployments', { apiGroup: 'apps', namespace: 'prod', name: 'api', subresource: 'status' })],
  ['exec via WebSocket (GET), authorized as create', 'GET', '/api/v1/namespaces/prod/pods/web-1/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&tty=true', F('create', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'exec' })],
  ['exec via SPDY (POST)', 'POST', '/api/v1/namespaces/prod/pods/web-1/exec?command=id&stdout=true', F('create', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'exec' })],
  ['attach', 'GET', '/api/v1/namespaces/prod/pods/web-1/attach?stdin=true&stdout=true&tty=true', F('create', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'attach' })],
  ['port-forward', 'GET', '/api/v1/namespaces/prod/pods/web-1/portforward?ports=8080', F('create', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'portforward' })],
  ['eviction (drain)', 'POST', '/api/v1/namespaces/prod/pods/web-1/eviction', F('create', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'eviction' })],
  ['service proxy subresource', 'GET', '/api/v1/namespaces/prod/services/http:web:80/proxy/metrics/x', F('get', 'services', { namespace: 'prod', name: 'http:web:80', subresource: 'proxy' })],
  ['legacy proxy verb takes no subresource', 'GET', '/api/v1/proxy/namespaces/prod/pods/web-1/some/path', F('proxy', 'pods', { namespace: 'prod', name: 'web-1' })],
  ['get namespaces', 'GET', '/api/v1/namespaces', F('list', 'namespaces')],
  ['get namespace prod', 'GET', '/api/v1/namespaces/prod', F('get', 'namespaces', { namespace: 'prod', name: 'prod' })],
  ['delete namespace prod', 'DELETE', '/api/v1/namespaces/prod', F('delete', 'namespaces', { namespace: 'prod', name: 'prod' })],
  ['namespace finalize', 'PUT', '/api/v1/namespaces/prod/finalize', F('update', 'namespaces', { namespace: 'prod', name: 'prod', subresource: 'finalize' })],
  ['namespace status', 'GET', '/api/v1/namespaces/prod/status', F('get', 'namespaces', { namespace: 'prod', name: 'prod', subresource: 'status' })],
  ['cluster-scoped node', 'GET', '/api/v1/nodes/n1', F('get', 'nodes', { name: 'n1' })],
  ['nodes/proxy', 'GET', '/api/v1/nodes/n1/proxy/metrics', F('get', 'nodes', { name: 'n1', subresource: 'proxy' })],
  ['CRD instance', 'GET', '/apis/cert-manager.io/v1/namespaces/prod/certificates', F('list', 'certificates', { apiGroup: 'cert-manager.io', namespace: 'prod' })],
  ['trailing slash', 'GET', '/api/v1/namespaces/prod/pods/', F('list', 'pods', { namespace: 'prod' })],
  ['OPTIONS on a resource has no verb', 'OPTIONS', '/api/v1/namespaces/prod/pods', F('', 'pods', { namespace: 'prod' })],
  // discovery and other non-resource URLs
  ['version', 'GET', '/version?timeout=32s', NR('get')],
  ['discovery /api', 'GET', '/api', NR('get')],
  ['discovery /api/v1', 'GET', '/api/v1', NR('get')],
  ['discovery /apis', 'GET', '/apis', NR('get')],
  ['discovery /apis/apps', 'GET', '/apis/apps', NR('get')],
  ['discovery /apis/apps/v1', 'GET', '/apis/apps/v1', NR('get')],
  ['openapi', 'GET', '/openapi/v2', NR('get')],
  ['openapi v3', 'GET', '/openapi/v3/apis/apps/v1', NR('get')],
  ['healthz', 'GET', '/healthz', NR('get')],
  ['root', 'GET', '/', NR('get')],
  ['POST to a non-resource URL', 'POST', '/logs', NR('post')],
  // garbage
  ['unknown prefix', 'GET', '/foo/v1/pods', NR('get')],
  ['bare /api/v1/watch', 'GET', '/api/v1/watch', NR('get')],
  ['only slashes', 'DELETE', '////', NR('delete')],
  ['empty path', 'GET', '', NR('get')],
];

for (const [what, method, url, want] of TABLE) {
  test(`kubeFacts: ${what}: ${method} ${url}`, () => {
    assert.deepEqual(facts(method, url), want);
  });
}

test('kubeFacts: a hostile path costs a bounded split and never throws', () => {
  const long = '/api/v1/namespaces/prod/pods/web-1/proxy/' + 'a/'.repeat(500_000);
  assert.deepEqual(facts('GET', long), F('get', 'pods', { namespace: 'prod', name: 'web-1', subresource: 'proxy' }));
  assert.deepEqual(facts('GET', '/' + '/'.repeat(100_000)), NR('get'));
  // An empty segment where a fact belongs makes it no resource request (it would read as "all namespaces").
  assert.deepEqual(facts('GET', '/api/v1/namespaces//pods'), NR('get'));
  assert.deepEqual(facts('DELETE', '/api//v1/pods'), NR('delete'));
  assert.deepEqual(facts('GET', '/apis//v1/deployments'), NR('get'));
  assert.deepEqual(facts('DELETE', '/api/v1/namespaces/p/pods//exec'), NR('delete'));
  assert.deepEqual(facts('GET', '/api/v1/namespaces/p/pods/x//'), F('get', 'pods', { namespace: 'p', name: 'x' }), 'trailing slashes are trimmed first');
  // Segments past the subresource are never looked at, empty or not.
  assert.deepEqual(facts('GET', '/api/v1/namespaces/p/services/s/proxy//x'), F('get', 'services', { namespace: 'p', name: 's', subresource: 'proxy' }));
  // Wrong types from a careless caller are a non-resource request, not a crash.
  assert.deepEqual(kubeFacts('GET', undefined as unknown as string, new URLSearchParams()), NR('get'));
  assert.deepEqual(kubeFacts('GET', '/api/v1/pods', undefined as unknown as URLSearchParams), F('list', 'pods'));
});

test('kubeFacts: fieldSelector names a list or watch only for an exact, valid metadata.name', () => {
  const sel = (s: string) => nameFromFieldSelector(new URLSearchParams({ fieldSelector: s }));
  assert.equal(sel('metadata.name=web-1'), 'web-1');
  assert.equal(sel('metadata.name==web-1'), 'web-1');
  assert.equal(sel('metadata.name!=web-1'), null);
  assert.equal(sel('status.phase=Running,metadata.name=web-1'), 'web-1');
  assert.equal(sel('metadata.namespace=prod'), null);
  assert.equal(sel('metadata.name=a\\,b'), 'a,b', 'escaped comma');
  assert.equal(sel('metadata.name=a=b'), null, 'unescaped = is an invalid selector');
  assert.equal(sel('metadata.name=a\\x'), null, 'unknown escape');
  assert.equal(sel('metadata.name'), null, 'no operator');
  assert.equal(sel('metadata.name=..'), null, 'not a valid path segment name');
  assert.equal(sel('metadata.name=a%2Fb'), null);
  assert.equal(sel('metadata.name=b,metadata.name=a'), 'a', 'terms are sorted first, as the API server does');
  // Only collection GETs look at it: a named get or a delete keeps its own name and verb.
  assert.deepEqual(facts('DELETE', '/api/v1/namespaces/p/pods?fieldSelector=metadata.name%3Dx'), F('deletecollection', 'pods', { namespace: 'p' }));
  assert.deepEqual(facts('GET', '/api/v1/namespaces/p/pods?fieldSelector=metadata.name%3Dx'), F('list', 'pods', { namespace: 'p', name: 'x' }));
});

test('classifyKube: classes by verb; exec/attach/portforward/proxy are admin whatever the verb', () => {
  const cls = (method: string, url: string) => classifyKube(facts(method, url)).class;
  assert.equal(cls('GET', '/api/v1/namespaces/p/pods'), 'read');
  assert.equal(cls('GET', '/api/v1/namespaces/p/pods?watch=1'), 'read');
  assert.equal(cls('GET', '/api/v1/namespaces/p/pods/x/log'), 'read');
  for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) assert.equal(cls(m, '/api/v1/namespaces/p/pods/x'), 'write', m);
  assert.equal(cls('DELETE', '/api/v1/namespaces/p/pods'), 'write');
  for (const sub of ['exec', 'attach', 'portforward', 'proxy']) {
    assert.equal(cls('GET', `/api/v1/namespaces/p/pods/x/${sub}`), 'admin', `GET ${sub}`);
    assert.equal(cls('POST', `/api/v1/namespaces/p/pods/x/${sub}`), 'admin', `POST ${sub}`);
  }
  assert.equal(cls('GET', '/api/v1/proxy/namespaces/p/pods/x/'), 'admin');
  assert.equal(cls('OPTIONS', '/api/v1/namespaces/p/pods'), 'unknown');
  assert.equal(cls('GET', '/version'), 'read');
  assert.equal(cls('HEAD', '/healthz'), 'read');
  assert.equal(cls('POST', '/logs'), 'write');
  assert.equal(cls('PROPFIND', '/x'), 'unknown');
  assert.equal(cls('DELETE', '/api/v1/namespaces/p//pods/x'), 'write', 'garbage is a non-resource request, judged by its method');
});

test('classifyKube: types, reads/writes references, reason, facts', () => {
  const del = classifyKube(facts('DELETE', '/api/v1/namespaces/prod/pods/web-1'));
  assert.deepEqual(del.types, ['k8s.delete']);
  assert.deepEqual(del.reads, []);
  assert.deepEqual(del.writes, ['prod/pods/web-1']);
  assert.equal(del.reason, 'delete pods/web-1 in prod');
  assert.deepEqual(del.classes, ['write']);
  assert.equal(del.kubernetes?.name, 'web-1');

  const list = classifyKube(facts('GET', '/api/v1/secrets'));
  assert.deepEqual(list.reads, ['*/secrets/*']);
  assert.deepEqual(list.writes, []);
  assert.equal(list.reason, 'list secrets');

  const scale = classifyKube(facts('PATCH', '/apis/apps/v1/namespaces/prod/deployments/api/scale'));
  assert.deepEqual(scale.types, ['k8s.patch', 'k8s.scale']);
  assert.deepEqual(scale.writes, ['prod/deployments.apps/api/scale']);
  assert.equal(scale.reason, 'patch deployments.apps/api/scale in prod');

  const exec = classifyKube(facts('GET', '/api/v1/namespaces/prod/pods/web-1/exec?command=sh'));
  assert.deepEqual(exec.types, ['k8s.create', 'k8s.exec']);
  assert.deepEqual(exec.reads, [], 'a GET that opens a shell is not recorded as a read');
  assert.deepEqual(exec.writes, ['prod/pods/web-1/exec']);
  assert.equal(exec.reason, 'create pods/web-1/exec in prod');

  const ns = classifyKube(facts('DELETE', '/api/v1/namespaces/prod'));
  assert.equal(ns.reason, 'delete namespaces/prod');
  assert.deepEqual(ns.writes, ['prod/namespaces/prod']);
  assert.deepEqual(classifyKube(facts('GET', '/api/v1/nodes/n1')).reads, ['*/nodes/n1']);

  const version = classifyKube(facts('GET', '/version'), '/version');
  assert.deepEqual(version.types, ['k8s.get']);
  assert.deepEqual(version.reads, ['/version']);
  assert.equal(version.reason, 'get /version');
  assert.deepEqual(classifyKube(facts('GET', '/version')).reads, [], 'without the path there is nothing to name');

  assert.equal(kubeRef(F('watch', 'pods', { namespace: 'p', name: 'x' })), 'p/pods/x');
  assert.equal(kubeReason(F('', 'pods', { namespace: 'p' })), 'unknown verb on pods in p');
  assert.deepEqual(classifyKube(F('', 'pods')).types, ['k8s.unknown']);
});

test('kubeStatus: a failure Status kubectl decodes, details before code', () => {
  const s = kubeStatus(404, 'NotFound', 'pods "x" not found', { name: 'x', kind: 'pods' });
  assert.equal(JSON.stringify(s), '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \\"x\\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}');
  assert.equal(JSON.stringify(kubeStatus(500, 'InternalError', 'boom')), '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"boom","reason":"InternalError","code":500}');
});

test('denialStatus: 403 Forbidden, rule, hint and review id in the message and in causes', () => {
  const s = denialStatus({ code: 'review_required', rule: 'prod-deletes', reason: 'deletes in prod need a review', hint: 'wait for approval, then retry', reviewId: 'rv_123' });
  assert.equal(s.code, 403);
  assert.equal(s.reason, 'Forbidden');
  assert.equal(s.status, 'Failure');
  assert.equal(s.message, 'gatehouse: deletes in prod need a review (rule: prod-deletes; hint: wait for approval, then retry; review: rv_123)');
  assert.deepEqual(s.details?.causes, [
    { reason: CAUSE.code, message: 'review_required' },
    { reason: CAUSE.rule, message: 'prod-deletes' },
    { reason: CAUSE.review, message: 'rv_123' },
  ]);
  assert.equal(statusReviewId(JSON.parse(JSON.stringify(s))), 'rv_123');
  assert.equal(s.details?.retryAfterSeconds, undefined);

  const plain = denialStatus({ code: 'blocked', rule: 'no-exec', reason: 'exec is blocked', hint: '' });
  assert.equal(plain.message, 'gatehouse: exec is blocked (rule: no-exec)');
  assert.equal(statusReviewId(plain), undefined);
  assert.equal(denialMessage({ code: 'x', rule: '', reason: 'r', hint: '' }), 'gatehouse: r');
  assert.equal(denialStatus({ code: 'slow', rule: 'r', reason: 'wait', hint: '', retryAfter: 2.5 }).details?.retryAfterSeconds, 3);
});

test('writes that run code or mint credentials are admin: ephemeral containers (kubectl debug), service-account tokens', () => {
  const debug = classifyKube(kubeFacts('PATCH', '/api/v1/namespaces/prod/pods/web-1/ephemeralcontainers', new URLSearchParams()));
  assert.equal(debug.class, 'admin');
  const token = classifyKube(kubeFacts('POST', '/api/v1/namespaces/prod/serviceaccounts/builder/token', new URLSearchParams()));
  assert.equal(token.class, 'admin');
  // Reading them stays a read.
  assert.equal(classifyKube(kubeFacts('GET', '/api/v1/namespaces/prod/pods/web-1/ephemeralcontainers', new URLSearchParams())).class, 'read');
});
