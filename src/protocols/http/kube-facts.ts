// What a Kubernetes API request does, derived from method, path and query exactly as the API
// server's own RequestInfoFactory (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) derives
// it, so a Gatehouse rule about "delete pods in prod" means what RBAC would mean by it. Pure: no
// I/O, never throws; anything that is not an API resource path is a non-resource request.
import type { Classification, CommandClass, KubernetesFacts } from '../../guard/classification.ts';

/**
 * Segments looked at. The API server reads at most prefix, group, version, special verb,
 * `namespaces`, namespace, resource, name, subresource; the rest (a proxy's sub-path, say) never
 * changes the facts, so splitting stops there and a hostile path costs nothing more.
 */
const MAX_SEGMENTS = 10;

/** `/api/{version}/{verb}/…`: proxy and watch as path prefixes (deprecated, still served). */
const SPECIAL_VERBS = new Set(['proxy', 'watch']);
/** The legacy proxy verb takes no subresource: everything after the name is the proxied path. */
const SPECIAL_VERBS_NO_SUBRESOURCES = new Set(['proxy']);
/** Subresources of a namespace itself: /api/v1/namespaces/{ns}/status is not a resource named "status". */
const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);

/** Pod subresources opened as streams, authorized as `create` whatever the method. */
const STREAM_SUBRESOURCES = new Set(['exec', 'attach', 'portforward']);
const METHOD_VERBS: Record<string, string> = { POST: 'create', GET: 'get', HEAD: 'get', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };

function nonResource(method: string): KubernetesFacts {
  return { verb: method.toLowerCase(), apiGroup: '', apiVersion: '', resource: '', subresource: '', namespace: '', name: '' };
}

/** strings.Trim(path, "/") then Split, bounded: empty middle segments stay, as in Go. */
function splitPath(path: string): string[] {
  let a = 0;
  let b = path.length;
  while (a < b && path.charCodeAt(a) === 47) a++;
  while (b > a && path.charCodeAt(b - 1) === 47) b--;
  if (a === b) return [];
  return path.slice(a, b).split('/', MAX_SEGMENTS);
}

/**
 * The facts of one request. `path` is the API path (percent-decoded, no dot segments), `query`
 * its parameters. Follows RequestInfoFactory, except that a path with an empty segment where a
 * group, version, namespace, resource, name or subresource belongs is a non-resource request
 * (the server serves nothing there). Two quirks worth knowing:
 * - a collection GET becomes `list`, or `watch` when `watch` is present and not "0"/"false";
 *   a `fieldSelector` requiring `metadata.name=X` then names X (kubectl get pod X -w does that);
 * - `/api/v1/namespaces/NS` has resource `namespaces`, name NS *and* namespace NS.
 * Where the server would refuse the path outright (`/api/v1/watch` with nothing after it),
 * the result is a non-resource request: the server answers it with an error either way.
 */
export function kubeFacts(method: string, path: string, query: URLSearchParams): KubernetesFacts {
  const m = typeof method === 'string' ? method : '';
  if (typeof path !== 'string') return nonResource(m);
  let parts = splitPath(path);
  if (parts.length < 3) return nonResource(m);
  const prefix = parts[0]!;
  if (prefix !== 'api' && prefix !== 'apis') return nonResource(m);
  parts = parts.slice(1);
  let apiGroup = '';
  if (prefix === 'apis') {
    if (parts.length < 3) return nonResource(m);
    apiGroup = parts[0]!;
    parts = parts.slice(1);
  }
  const apiVersion = parts[0]!;
  parts = parts.slice(1);

  let verb: string;
  if (SPECIAL_VERBS.has(parts[0]!)) {
    if (parts.length < 2) return nonResource(m);
    verb = parts[0]!;
    parts = parts.slice(1);
  } else {
    verb = METHOD_VERBS[m] ?? '';
  }

  let namespace = '';
  let namespaced = false;
  if (parts[0] === 'namespaces' && parts.length > 1) {
    namespace = parts[1]!;
    namespaced = true;
    if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2]!)) parts = parts.slice(2);
  }

  const resource = parts[0] ?? '';
  let name = parts.length >= 2 ? parts[1]! : '';
  const hasSub = parts.length >= 3 && !SPECIAL_VERBS_NO_SUBRESOURCES.has(verb);
  const subresource = hasSub ? parts[2]! : '';
  // An empty segment (`/api/v1/namespaces//pods`) names nothing the API server serves, yet its
  // facts would read as "all namespaces" or a collection: call it what it is, not a resource.
  if (!apiVersion || (prefix === 'apis' && !apiGroup) || (namespaced && !namespace) || !resource || (parts.length >= 2 && !name) || (hasSub && !subresource)) {
    return nonResource(m);
  }

  if (name === '' && verb === 'get') {
    verb = watchRequested(query) ? 'watch' : 'list';
    const selected = nameFromFieldSelector(query);
    if (selected !== null) name = selected;
  }
  if (name === '' && verb === 'delete') verb = 'deletecollection';
  // kubectl opens exec/attach/portforward as a WebSocket GET (1.30+) or a SPDY POST. The API
  // server authorizes both as `create` (AuthorizePodWebsocketUpgradeCreatePermission, on by
  // default since 1.31), and so does the gateway: a rule on `create` cannot be dodged by mode.
  if (verb === 'get' && resource === 'pods' && STREAM_SUBRESOURCES.has(subresource)) verb = 'create';

  return { verb, apiGroup, apiVersion, resource, subresource, namespace, name };
}

/** apimachinery's Convert_Slice_string_To_bool: present and not "0"/"false" (any case) is true, even empty. */
function watchRequested(query: URLSearchParams): boolean {
  const v = safeGet(query, 'watch');
  if (v === null) return false;
  return !(v === '0' || v.toLowerCase() === 'false');
}

function safeGet(query: URLSearchParams, key: string): string | null {
  try {
    return query instanceof URLSearchParams ? query.get(key) : null;
  } catch {
    return null;
  }
}

/**
 * The name a list or watch is narrowed to by `fieldSelector=metadata.name=X` (fields.ParseSelector
 * and RequiresExactMatch): terms split on unescaped commas and sorted; the first `metadata.name`
 * term with `=` or `==` wins. Invalid selectors name nothing (the server then rejects the request
 * anyway), and so do values that are not a valid path segment name.
 */
export function nameFromFieldSelector(query: URLSearchParams): string | null {
  const sel = safeGet(query, 'fieldSelector');
  if (!sel || sel.length > 8192) return null;
  const terms = splitTerms(sel).sort();
  let found: string | null = null;
  for (const term of terms) {
    if (term === '') continue;
    const t = splitTerm(term);
    if (!t) return null;
    const value = unescapeValue(t.rhs);
    if (value === null) return null;
    if (found === null && t.lhs === 'metadata.name' && t.op !== '!=') found = value;
  }
  if (found === null || found === '.' || found === '..' || found.includes('/') || found.includes('%')) return null;
  return found;
}

function splitTerms(s: string): string[] {
  const out: string[] = [];
  let start = 0;
  let inSlash = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inSlash) inSlash = false;
    else if (c === '\\') inSlash = true;
    else if (c === ',') {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

function splitTerm(term: string): { lhs: string; op: string; rhs: string } | null {
  for (let i = 0; i < term.length; i++) {
    for (const op of ['!=', '==', '=']) {
      if (term.startsWith(op, i)) return { lhs: term.slice(0, i), op, rhs: term.slice(i + op.length) };
    }
  }
  return null;
}

function unescapeValue(s: string): string | null {
  let out = '';
  let inSlash = false;
  for (const c of s) {
    if (inSlash) {
      if (c !== '\\' && c !== ',' && c !== '=') return null;
      out += c;
      inSlash = false;
    } else if (c === '\\') inSlash = true;
    else if (c === ',' || c === '=') return null;
    else out += c;
  }
  return inSlash ? null : out;
}

const READ_VERBS = new Set(['get', 'list', 'watch']);
const WRITE_VERBS = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);
const NON_RESOURCE_READS = new Set(['get', 'head', 'options']);
const NON_RESOURCE_WRITES = new Set(['post', 'put', 'patch', 'delete']);
/**
 * Subresources that run arbitrary things in the cluster whatever the verb: a shell in a
 * container, a stream to a port, HTTP to anything behind the API server.
 */
const ADMIN_SUBRESOURCES = new Set(['exec', 'attach', 'portforward', 'proxy']);

// The reference used in `reads`/`writes`: `<namespace>/<resource>[.<group>]/<name>[/<subresource>]`,
// with `*` for no namespace (cluster-scoped objects, all-namespace lists) and for no name
// (collections): "prod/pods/web-1", "prod/deployments.apps/api/scale", "*/secrets/*",
// "*/nodes/n1", "prod/pods/web-1/exec". Globs such as "prod/*" or "*/secrets/*" read naturally.
export function kubeRef(f: KubernetesFacts): string {
  const res = f.apiGroup ? `${f.resource}.${f.apiGroup}` : f.resource;
  return `${f.namespace || '*'}/${res}/${f.name || '*'}${f.subresource ? `/${f.subresource}` : ''}`;
}

/** "delete pods/web-1 in prod", "list secrets", "patch deployments.apps/api in prod", "get /version". */
export function kubeReason(f: KubernetesFacts, path?: string): string {
  if (!f.resource) return `${f.verb || 'request'} ${path ?? 'a non-resource URL'}`;
  const res = f.apiGroup ? `${f.resource}.${f.apiGroup}` : f.resource;
  const what = `${res}${f.name ? `/${f.name}` : ''}${f.subresource ? `/${f.subresource}` : ''}`;
  // A namespace object carries its own name as namespace; "namespaces/prod in prod" says nothing more.
  const where = f.namespace && !(f.resource === 'namespaces' && f.name === f.namespace) ? ` in ${f.namespace}` : '';
  return `${f.verb || 'unknown verb on'} ${what}${where}`;
}

/**
 * Writes that hand out power rather than change state: an ephemeral container runs code in a
 * pod (`kubectl debug`), a service-account token request mints a credential.
 */
function mintsOrRuns(f: KubernetesFacts): boolean {
  if (READ_VERBS.has(f.verb)) return false;
  return (f.resource === 'pods' && f.subresource === 'ephemeralcontainers') || (f.resource === 'serviceaccounts' && f.subresource === 'token');
}

/**
 * The guard's view of a Kubernetes request. Classes: `read` for get/list/watch, `write` for
 * create/update/patch/delete/deletecollection, `admin` for exec/attach/portforward/proxy (and the
 * legacy proxy verb; writes of pods/ephemeralcontainers and serviceaccounts/token) whatever the verb, `unknown` for a verb the API server does not know.
 * Non-resource URLs (`path` is then recorded) are reads for GET/HEAD/OPTIONS, writes otherwise.
 * Types: `k8s.<verb>`, then `k8s.<subresource>`. `reads` holds kubeRef() for read verbs, `writes`
 * for everything else, admin subresources included (a GET that opens a shell is not a read).
 */
export function classifyKube(f: KubernetesFacts, path?: string): Classification {
  let cls: CommandClass;
  if (!f.resource) {
    cls = NON_RESOURCE_READS.has(f.verb) ? 'read' : NON_RESOURCE_WRITES.has(f.verb) ? 'write' : 'unknown';
  } else if (ADMIN_SUBRESOURCES.has(f.subresource) || f.verb === 'proxy' || mintsOrRuns(f)) {
    cls = 'admin';
  } else if (READ_VERBS.has(f.verb)) {
    cls = 'read';
  } else if (WRITE_VERBS.has(f.verb)) {
    cls = 'write';
  } else {
    cls = 'unknown';
  }
  const types = [`k8s.${f.verb || 'unknown'}`];
  if (f.subresource && !types.includes(`k8s.${f.subresource}`)) types.push(`k8s.${f.subresource}`);
  const ref = f.resource ? kubeRef(f) : (path ?? '');
  const refs = ref ? [ref] : [];
  const isRead = cls === 'read';
  return {
    class: cls,
    classes: [cls],
    types,
    reads: isRead ? refs : [],
    writes: isRead ? [] : refs,
    flags: [],
    functions: [],
    reason: kubeReason(f, path),
    kubernetes: f,
  };
}
