/**
 * A stand-in Kubernetes API server for tests. No real kube-apiserver runs here, so this one
 * speaks the wire format that the real `kubectl` exercises: discovery, pods/secrets/configmaps/
 * namespaces in memory, server-side Table printing, watches, followed logs, and exec over
 * WebSocket (v5.channel.k8s.io) running the command as a real process, under a pseudo-terminal
 * (util-linux `script`) when a TTY is asked for, and attach to a container's long-running main
 * process, which outlives the clients that attach to it, and port-forward (SPDY/3.1, plain or
 * tunneled in WebSocket: kube-portforward.ts) to servers the test runs on loopback. HTTPS on a
 * loopback port with a self-signed certificate, bearer-token and optional client-certificate
 * auth, and every request recorded so a test can assert what arrived (e.g. the Impersonate-*
 * headers a gateway added).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { generate } from 'selfsigned';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import { PORTFORWARD_PROTOCOL, TUNNEL_SUBPROTOCOL, servePortForward, type PortForwardRecord, type PortForwardSession } from './kube-portforward.ts';
import { findBinary, registerEmergencyCleanup } from './postgres.ts';
import { unavailable } from './requirements.ts';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

export interface KubeApiServerOptions {
  /** bearer token every request must carry; without it no token is required */
  token?: string;
  /**
   * PEM CA for client certificates; with it every request must come over a TLS connection
   * whose client certificate this CA signed (in addition to the token, when one is set: this
   * server is stricter than a real one so a test proves both were presented)
   */
  clientCa?: string;
  /** namespaces that exist from the start; default ["default", "kube-system"] */
  namespaces?: string[];
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** every Impersonate-Group header value, in order (Node joins repeated headers into one) */
  impersonateGroups: string[];
  /** subject CN of the verified client certificate, null without one */
  clientCn: string | null;
  /** true for Upgrade requests (exec/attach) */
  upgrade: boolean;
  /** HTTP status sent; 101 for a completed WebSocket upgrade; 0 while still unanswered */
  status: number;
  at: number;
}

export interface ExecRecord {
  namespace: string;
  pod: string;
  container: string;
  command: string[];
  tty: boolean;
  stdin: boolean;
  /** the WebSocket subprotocol chosen */
  protocol: string;
  /** null while running (or when the process could not start) */
  exitCode: number | null;
  /** the process (and its process group), once started */
  pid: number | null;
}

export interface AttachRecord {
  namespace: string;
  pod: string;
  container: string;
  /** the container's TTY setting (as the kubelet does, not what the client asked for) */
  tty: boolean;
  stdin: boolean;
  protocol: string;
  /** the main process this attach was connected to (null until it has started) */
  pid: number | null;
}

/** A container's main process as `kubectl attach` reaches it. */
export interface MainProcessInfo {
  pid: number | null;
  command: string[];
  tty: boolean;
  /** clients attached right now */
  attached: number;
}

export interface ResizeRecord {
  namespace: string;
  pod: string;
  width: number;
  height: number;
}

export interface PodSpecInput {
  labels?: Record<string, string>;
  /** default "Running" */
  phase?: string;
  /** container names; default ["main"] */
  containers?: string[];
  image?: string;
  /**
   * the containers' main process (what `kubectl attach` reaches), started on the first attach
   * and restarted on the next attach after it exits (restartPolicy Always); default ["sh"]
   * when stdin is set. A container with neither cannot be attached to.
   */
  command?: string[];
  /** spec.containers[].stdin: the main process reads what attached clients type */
  stdin?: boolean;
  /** spec.containers[].tty: the main process runs on a pseudo-terminal */
  tty?: boolean;
  /**
   * the pod's TCP ports: pod port -> a loopback port where the test runs a server, which
   * `kubectl port-forward` reaches (e.g. { 80: echo.port })
   */
  ports?: Record<number, number>;
}

/** A Kubernetes object as stored and served (open-ended JSON). */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion: string;
  creationTimestamp: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  [field: string]: unknown;
}

export interface KubeApiServer {
  url: string;
  port: number;
  /** the server's self-signed certificate, which is also the CA to trust */
  caPem: string;
  certPem: string;
  requests: RecordedRequest[];
  resizes: ResizeRecord[];
  execs: ExecRecord[];
  attaches: AttachRecord[];
  /** one per `kubectl port-forward` session, updated while it runs */
  portForwards: PortForwardRecord[];
  /** the running main process of a pod's container (default its first), if any */
  mainProcess(namespace: string, pod: string, container?: string): MainProcessInfo | undefined;
  addPod(namespace: string, name: string, spec?: PodSpecInput): KubeObject;
  /** sets status.phase (e.g. "Succeeded") and tells watchers (MODIFIED) */
  setPodPhase(namespace: string, name: string, phase: string): KubeObject;
  deletePod(namespace: string, name: string): boolean;
  getPod(namespace: string, name: string): KubeObject | undefined;
  addSecret(namespace: string, name: string, data: Record<string, string>, type?: string): KubeObject;
  addConfigMap(namespace: string, name: string, data: Record<string, string>): KubeObject;
  addNamespace(name: string): KubeObject;
  /** appends a line to a pod's log; followers (`logs -f`) get it at once */
  appendLog(namespace: string, pod: string, line: string): void;
  /** open watch streams and log follows right now */
  activeStreams(): { watches: number; follows: number; execs: number };
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Limits: everything a client sends is bounded
// ---------------------------------------------------------------------------

const MAX_BODY = 1 << 20;
const MAX_RECORDED_REQUESTS = 10_000;
const MAX_HISTORY = 1000;
const MAX_LOG_LINES = 10_000;
const MAX_LOG_LINE = 64 * 1024;
const MAX_COMMAND_ARGS = 64;
const MAX_COMMAND_ARG = 8 * 1024;
const MAX_WS_MESSAGE = 1 << 20;
/** exec output queued on the WebSocket before the process is paused */
const MAX_WS_BUFFERED = 1 << 20;
/** how long a TTY exec waits for kubectl's first resize so the pty starts at the right size */
const FIRST_RESIZE_WAIT_MS = 300;
const MAX_WATCH_SECONDS = 1800;
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

// ---------------------------------------------------------------------------
// Resources: discovery entries and server-side Table columns
// ---------------------------------------------------------------------------

interface ColumnDefinition {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

interface ResourceDef {
  group: string;
  version: string;
  name: string;
  singularName: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
  shortNames?: string[];
  columns: ColumnDefinition[];
  cells(obj: KubeObject, now: number): unknown[];
}

const col = (name: string, type = 'string', priority = 0, format = ''): ColumnDefinition => ({
  name,
  type,
  format,
  description: name === 'Name' ? 'Name must be unique within a namespace.' : `${name} of the object.`,
  priority,
});

const READ_WRITE = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

const RESOURCES: ResourceDef[] = [
  {
    group: '',
    version: 'v1',
    name: 'pods',
    singularName: 'pod',
    kind: 'Pod',
    namespaced: true,
    verbs: READ_WRITE,
    shortNames: ['po'],
    columns: [col('Name', 'string', 0, 'name'), col('Ready'), col('Status'), col('Restarts'), col('Age'), col('IP', 'string', 1), col('Node', 'string', 1)],
    cells(pod, now) {
      const spec = (pod.spec ?? {}) as { containers?: unknown[]; nodeName?: string };
      const status = (pod.status ?? {}) as { phase?: string; reason?: string; podIP?: string; containerStatuses?: Array<{ ready?: boolean; restartCount?: number }> };
      const statuses = status.containerStatuses ?? [];
      const ready = statuses.filter((s) => s.ready).length;
      const restarts = statuses.reduce((n, s) => n + (s.restartCount ?? 0), 0);
      const phase = pod.metadata.deletionTimestamp ? 'Terminating' : (status.reason ?? status.phase ?? 'Unknown');
      return [pod.metadata.name, `${ready}/${spec.containers?.length ?? 0}`, phase, String(restarts), age(pod, now), status.podIP ?? '<none>', spec.nodeName ?? '<none>'];
    },
  },
  {
    group: '',
    version: 'v1',
    name: 'secrets',
    singularName: 'secret',
    kind: 'Secret',
    namespaced: true,
    verbs: READ_WRITE,
    columns: [col('Name', 'string', 0, 'name'), col('Type'), col('Data', 'integer'), col('Age')],
    cells: (s, now) => [s.metadata.name, String(s.type ?? 'Opaque'), Object.keys((s.data ?? {}) as object).length, age(s, now)],
  },
  {
    group: '',
    version: 'v1',
    name: 'configmaps',
    singularName: 'configmap',
    kind: 'ConfigMap',
    namespaced: true,
    verbs: READ_WRITE,
    shortNames: ['cm'],
    columns: [col('Name', 'string', 0, 'name'), col('Data', 'integer'), col('Age')],
    cells: (c, now) => [c.metadata.name, Object.keys((c.data ?? {}) as object).length, age(c, now)],
  },
  {
    group: '',
    version: 'v1',
    name: 'namespaces',
    singularName: 'namespace',
    kind: 'Namespace',
    namespaced: false,
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    shortNames: ['ns'],
    columns: [col('Name', 'string', 0, 'name'), col('Status'), col('Age')],
    cells: (n, now) => [n.metadata.name, String((n.status as { phase?: string } | undefined)?.phase ?? 'Active'), age(n, now)],
  },
  {
    group: 'apps',
    version: 'v1',
    name: 'deployments',
    singularName: 'deployment',
    kind: 'Deployment',
    namespaced: true,
    verbs: READ_WRITE,
    shortNames: ['deploy'],
    columns: [col('Name', 'string', 0, 'name'), col('Ready'), col('Up-to-date', 'integer'), col('Available', 'integer'), col('Age')],
    cells: (d, now) => [d.metadata.name, '0/0', 0, 0, age(d, now)],
  },
];

/** Subresources listed in discovery so kubectl's RBAC-style checks and completion see them. */
const POD_SUBRESOURCES = [
  { name: 'pods/log', kind: 'Pod', verbs: ['get'] },
  { name: 'pods/exec', kind: 'PodExecOptions', verbs: ['create', 'get'] },
  { name: 'pods/attach', kind: 'PodAttachOptions', verbs: ['create', 'get'] },
  { name: 'pods/portforward', kind: 'PodPortForwardOptions', verbs: ['create', 'get'] },
  { name: 'pods/status', kind: 'Pod', verbs: ['get', 'patch', 'update'] },
];

const resourceKey = (group: string, name: string) => `${group}/${name}`;
const RESOURCE_BY_KEY = new Map(RESOURCES.map((r) => [resourceKey(r.group, r.name), r]));
const gv = (r: { group: string; version: string }) => (r.group ? `${r.group}/${r.version}` : r.version);

function apiResourceList(group: string, version: string): unknown {
  const resources: unknown[] = [];
  for (const r of RESOURCES.filter((x) => x.group === group && x.version === version)) {
    resources.push({
      name: r.name,
      singularName: r.singularName,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: r.verbs,
      ...(r.shortNames ? { shortNames: r.shortNames } : {}),
      ...(r.name === 'pods' || r.name === 'deployments' ? { categories: ['all'] } : {}),
      storageVersionHash: r.kind.slice(0, 8),
    });
    if (r.name === 'pods') {
      for (const s of POD_SUBRESOURCES) resources.push({ name: s.name, singularName: '', namespaced: true, kind: s.kind, verbs: s.verbs });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}

/** kubectl's own "Age" rendering (k8s.io/apimachinery/pkg/util/duration.HumanDuration). */
export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 0) return '0s';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (h < 192) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (d < 730) return `${d}d`;
  const y = Math.floor(d / 365);
  if (y < 8) return d % 365 === 0 ? `${y}y` : `${y}y${d % 365}d`;
  return `${y}y`;
}

function age(obj: KubeObject, now: number): string {
  return humanDuration(now - Date.parse(obj.metadata.creationTimestamp));
}

const timestamp = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

// ---------------------------------------------------------------------------
// Status objects (what kubectl prints as "Error from server (Reason): message")
// ---------------------------------------------------------------------------

interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: Record<string, unknown>;
  code: number;
}

function failure(code: number, reason: string, message: string, details?: Record<string, unknown>): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

const notFound = (resource: string, name: string) => failure(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
const badRequest = (message: string) => failure(400, 'BadRequest', message);

class HttpError extends Error {
  constructor(readonly status: Status) {
    super(status.message);
  }
}

// ---------------------------------------------------------------------------
// Selectors (the subset kubectl uses: equality on names and labels)
// ---------------------------------------------------------------------------

type Predicate = (obj: KubeObject) => boolean;

function parseFieldSelector(sel: string | null): Predicate {
  if (!sel) return () => true;
  if (sel.length > 4096) throw new HttpError(badRequest('fieldSelector is too long'));
  const terms = sel.split(',').map((t) => {
    const m = /^([a-zA-Z.]+)\s*(==|=|!=)\s*(.*)$/.exec(t.trim());
    if (!m) throw new HttpError(badRequest(`invalid field selector: "${t}"`));
    const [, field, op, value] = m;
    if (field !== 'metadata.name' && field !== 'metadata.namespace') throw new HttpError(badRequest(`field label not supported: ${field}`));
    const get = (o: KubeObject) => (field === 'metadata.name' ? o.metadata.name : (o.metadata.namespace ?? ''));
    return op === '!=' ? (o: KubeObject) => get(o) !== value : (o: KubeObject) => get(o) === value;
  });
  return (o) => terms.every((t) => t(o));
}

function parseLabelSelector(sel: string | null): Predicate {
  if (!sel) return () => true;
  if (sel.length > 4096) throw new HttpError(badRequest('labelSelector is too long'));
  const terms = sel.split(',').map((t) => {
    const m = /^\s*(!?)([A-Za-z0-9._\/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?\s*$/.exec(t);
    if (!m) throw new HttpError(badRequest(`unable to parse requirement: "${t}" (this test server supports =, ==, != and existence only)`));
    const [, not, key, op, value] = m;
    const labels = (o: KubeObject) => o.metadata.labels ?? {};
    if (!op) return not ? (o: KubeObject) => !(key in labels(o)) : (o: KubeObject) => key in labels(o);
    if (not) throw new HttpError(badRequest(`invalid label selector: "${t}"`));
    return op === '!=' ? (o: KubeObject) => labels(o)[key] !== value : (o: KubeObject) => labels(o)[key] === value;
  });
  return (o) => terms.every((t) => t(o));
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

async function serverCertificate(): Promise<{ cert: string; key: string }> {
  const pems = await generate([{ name: 'commonName', value: 'kube-apiserver' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 7 * 86400e3),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
    ],
  } as any); // selfsigned's typings lack notAfterDate
  return { cert: pems.cert, key: pems.private };
}

export interface ClientCertificate {
  /** the CA that signed certPem: pass it as KubeApiServerOptions.clientCa */
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** A client certificate (CN = commonName) and the CA that signed it, for mTLS tests. */
export async function generateClientCertificate(commonName: string): Promise<ClientCertificate> {
  const ca = await generate([{ name: 'commonName', value: 'gatehouse-test-client-ca' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true },
    ],
  } as any);
  const client = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', clientAuth: true },
    ],
  } as any);
  return { caPem: ca.cert, certPem: client.cert, keyPem: client.private };
}

// ---------------------------------------------------------------------------
// kubectl plumbing
// ---------------------------------------------------------------------------

export interface KubeconfigInput {
  server: string;
  caPem: string;
  token?: string;
  clientCertPem?: string;
  clientKeyPem?: string;
  namespace?: string;
}

/** Writes a kubeconfig (JSON, which kubectl reads as YAML) to dir/kubeconfig; returns its path. */
export function writeKubeconfig(dir: string, input: KubeconfigInput): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const user: Record<string, string> = {};
  if (input.token) user.token = input.token;
  if (input.clientCertPem) user['client-certificate-data'] = b64(input.clientCertPem);
  if (input.clientKeyPem) user['client-key-data'] = b64(input.clientKeyPem);
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server: input.server, 'certificate-authority-data': b64(input.caPem) } }],
    users: [{ name: 'test', user }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'test', namespace: input.namespace ?? 'default' } }],
    'current-context': 'test',
    preferences: {},
  };
  const file = path.join(dir, 'kubeconfig');
  fs.writeFileSync(file, JSON.stringify(config, null, 2), { mode: 0o600 });
  return file;
}

export const KUBECTL = '/usr/bin/kubectl';

/**
 * Environment for kubectl: HOME in `home` (kubectl writes its discovery cache under
 * ~/.kube/cache), no proxy variables (they would route loopback requests elsewhere), and no
 * inherited KUBECONFIG.
 */
export function kubectlEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(https?_proxy|all_proxy|no_proxy|kubeconfig)$/i.test(k) || k === 'TMUX') continue;
    env[k] = v;
  }
  return { ...env, HOME: home, ...extra };
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs kubectl to completion (killed after timeoutMs) with an optional stdin. */
export function runKubectl(kubeconfig: string, home: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<KubectlResult> {
  return new Promise((resolve) => {
    const child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { env: kubectlEnv(home), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr: signal ? `${stderr}\n(killed by ${signal})` : stderr });
    });
    child.stdin.on('error', () => {}); // kubectl may exit before reading all of it
    child.stdin.end(opts.input ?? '');
  });
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  key: string;
  obj: KubeObject;
}

interface Watcher {
  key: string;
  namespace: string | null;
  matches: Predicate;
  table: boolean;
  includeObject: string;
  res: ServerResponse;
  timer: NodeJS.Timeout;
}

interface Follower {
  logKey: string;
  res: ServerResponse;
}

interface ExecSession {
  kill(): void;
}

interface Size {
  width: number;
  height: number;
}

interface PodProcess {
  child: ChildProcess;
  /** applies a terminal size (no-op without a tty) */
  resize(size: Size): void;
  /** forgets the process's files; call once it has exited or been killed */
  dispose(): void;
}

/** One client attached to a main process. */
interface AttachClient {
  record: AttachRecord;
  stdout: boolean;
  stderr: boolean;
  /** bytes sent and not yet written to the client's socket */
  queued: number;
  send(channel: number, data: Buffer): void;
  finish(status: Record<string, unknown>): void;
}

/** A container's main process: it outlives the clients attached to it. */
interface MainProcess {
  namespace: string;
  pod: string;
  container: string;
  command: string[];
  tty: boolean;
  stdin: boolean;
  proc: PodProcess | null;
  clients: Set<AttachClient>;
  /** input that arrived before the process started, bounded */
  pendingStdin: Buffer[];
  pendingStdinBytes: number;
  startTimer: NodeJS.Timeout | null;
  exited: boolean;
}

export async function startKubeApiServer(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
  const { cert, key } = await serverCertificate();
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-kube-'));
  const scriptBin = findBinary('script');

  const requests: RecordedRequest[] = [];
  const resizes: ResizeRecord[] = [];
  const execs: ExecRecord[] = [];
  const attaches: AttachRecord[] = [];
  const portForwards: PortForwardRecord[] = [];
  const forwardSessions = new Set<PortForwardSession>();
  /** pod key -> pod port -> loopback port (PodSpecInput.ports) */
  const podPorts = new Map<string, Map<number, number>>();
  const mainProcesses = new Map<string, MainProcess>();
  const store = new Map<string, Map<string, KubeObject>>(RESOURCES.map((r) => [resourceKey(r.group, r.name), new Map()]));
  const history: WatchEvent[] = [];
  const watchers = new Set<Watcher>();
  const followers = new Set<Follower>();
  const logs = new Map<string, string[]>();
  const sessions = new Set<ExecSession>();
  const sockets = new Set<Socket>();
  let rv = 1000;
  let closed = false;

  const objKey = (ns: string | undefined, name: string) => `${ns ?? ''}/${name}`;
  const logKey = (ns: string, pod: string) => `${ns}/${pod}`;
  const bucket = (k: string) => store.get(k)!;

  // --- mutations: every one bumps the resourceVersion and tells the watchers -------------

  function emit(type: WatchEvent['type'], k: string, obj: KubeObject): void {
    const ev: WatchEvent = { rv, type, key: k, obj };
    history.push(ev);
    if (history.length > MAX_HISTORY) history.shift();
    for (const w of watchers) if (w.key === k) sendEvent(w, ev.type, obj);
  }

  function put(r: ResourceDef, obj: KubeObject, type: 'ADDED' | 'MODIFIED'): KubeObject {
    obj.metadata.resourceVersion = String(++rv);
    bucket(resourceKey(r.group, r.name)).set(objKey(obj.metadata.namespace, obj.metadata.name), obj);
    emit(type, resourceKey(r.group, r.name), obj);
    return obj;
  }

  function remove(r: ResourceDef, ns: string | undefined, name: string): KubeObject | undefined {
    const k = resourceKey(r.group, r.name);
    const obj = bucket(k).get(objKey(ns, name));
    if (!obj) return undefined;
    bucket(k).delete(objKey(ns, name));
    const gone: KubeObject = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++rv), deletionTimestamp: timestamp() } };
    emit('DELETED', k, gone);
    if (r.name === 'pods' && ns) {
      // The container is gone: its log stream ends, and so does anything attached to it.
      const lk = logKey(ns, name);
      for (const f of followers) if (f.logKey === lk) endFollower(f);
      logs.delete(lk);
      for (const m of [...mainProcesses.values()]) if (m.namespace === ns && m.pod === name) killMain(m);
    }
    return gone;
  }

  const def = (group: string, name: string) => RESOURCE_BY_KEY.get(resourceKey(group, name))!;

  function meta(name: string, namespace: string | undefined, extra: Partial<ObjectMeta> = {}): ObjectMeta {
    if (!NAME_RE.test(name)) throw new Error(`invalid object name ${JSON.stringify(name)}: use lower-case letters, digits, "-" and "."`);
    return { name, ...(namespace ? { namespace } : {}), uid: randomUUID(), resourceVersion: '', creationTimestamp: timestamp(), ...extra };
  }

  function ensureNamespace(name: string): void {
    if (!bucket('/namespaces').has(objKey(undefined, name))) addNamespace(name);
  }

  function addNamespace(name: string): KubeObject {
    return put(def('', 'namespaces'), { apiVersion: 'v1', kind: 'Namespace', metadata: meta(name, undefined), spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } }, 'ADDED');
  }

  let podSeq = 0;
  function podObject(namespace: string, name: string, spec: PodSpecInput, metaExtra: Partial<ObjectMeta> = {}): KubeObject {
    const now = timestamp();
    const containers = spec.containers ?? ['main'];
    const image = spec.image ?? 'busybox:1.36';
    const phase = spec.phase ?? 'Running';
    const running = phase === 'Running';
    podSeq = (podSeq % 250) + 1;
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: meta(name, namespace, { ...(spec.labels ? { labels: spec.labels } : {}), ...metaExtra }),
      spec: {
        containers: containers.map((c) => ({
          name: c,
          image,
          ...(spec.command ? { command: [...spec.command] } : {}),
          ...(spec.stdin ? { stdin: true } : {}),
          ...(spec.tty ? { tty: true } : {}),
          ...(spec.ports ? { ports: Object.keys(spec.ports).map((p) => ({ containerPort: Number(p), protocol: 'TCP' })) } : {}),
        })),
        nodeName: 'node-1',
        restartPolicy: 'Always',
      },
      status: {
        phase,
        podIP: `10.244.0.${podSeq}`,
        hostIP: '10.0.0.1',
        startTime: now,
        // `kubectl run -it` waits for Ready=True before it attaches.
        conditions: podConditions(running, now),
        containerStatuses: containers.map((c) => ({
          name: c,
          image,
          imageID: '',
          ready: running,
          started: running,
          restartCount: 0,
          state: running ? { running: { startedAt: now } } : { terminated: { exitCode: 0, reason: 'Completed' } },
        })),
      },
    };
  }

  function addPod(namespace: string, name: string, spec: PodSpecInput = {}): KubeObject {
    if (spec.command) checkCommand(spec.command);
    ensureNamespace(namespace);
    const existing = bucket('/pods').get(objKey(namespace, name));
    if (existing) throw new Error(`pod ${namespace}/${name} already exists`);
    const ports = new Map(Object.entries(spec.ports ?? {}).map(([pod, local]) => [Number(pod), local]));
    for (const [pod, local] of ports) {
      if (!Number.isInteger(pod) || pod < 1 || pod > 65535 || !Number.isInteger(local) || local < 1 || local > 65535) throw new Error(`invalid port mapping ${pod} -> ${local}: use TCP port numbers`);
    }
    podPorts.set(objKey(namespace, name), ports);
    return put(def('', 'pods'), podObject(namespace, name, spec), 'ADDED');
  }

  function setPodPhase(namespace: string, name: string, phase: string): KubeObject {
    const pod = bucket('/pods').get(objKey(namespace, name));
    if (!pod) throw new Error(`no pod ${namespace}/${name}`);
    const updated = structuredClone(pod);
    const status = updated.status as { phase: string; conditions: unknown[]; containerStatuses: Array<{ ready: boolean }> };
    status.phase = phase;
    status.conditions = podConditions(phase === 'Running', timestamp());
    for (const c of status.containerStatuses) c.ready = phase === 'Running';
    return put(def('', 'pods'), updated, 'MODIFIED');
  }

  function addSecret(namespace: string, name: string, data: Record<string, string>, type = 'Opaque'): KubeObject {
    ensureNamespace(namespace);
    const b64 = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
    return put(def('', 'secrets'), { apiVersion: 'v1', kind: 'Secret', metadata: meta(name, namespace), type, data: b64 }, 'ADDED');
  }

  function addConfigMap(namespace: string, name: string, data: Record<string, string>): KubeObject {
    ensureNamespace(namespace);
    return put(def('', 'configmaps'), { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(name, namespace), data: { ...data } }, 'ADDED');
  }

  function appendLog(namespace: string, pod: string, line: string): void {
    const lk = logKey(namespace, pod);
    const text = line.slice(0, MAX_LOG_LINE);
    const lines = logs.get(lk) ?? [];
    lines.push(text);
    if (lines.length > MAX_LOG_LINES) lines.shift();
    logs.set(lk, lines);
    for (const f of followers) if (f.logKey === lk) f.res.write(`${text}\n`);
  }

  for (const ns of opts.namespaces ?? ['default', 'kube-system']) addNamespace(ns);

  // --- serialisation ------------------------------------------------------------------

  function rowObject(obj: KubeObject, includeObject: string): unknown {
    if (includeObject === 'None') return undefined;
    if (includeObject === 'Object') return obj;
    return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata };
  }

  function table(r: ResourceDef, objs: KubeObject[], includeObject: string, listRv?: string): unknown {
    const now = Date.now();
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: listRv ? { resourceVersion: listRv } : {},
      columnDefinitions: r.columns,
      rows: objs.map((o) => ({ cells: r.cells(o, now), object: rowObject(o, includeObject) })),
    };
  }

  function sendEvent(w: Watcher, type: string, obj: KubeObject): void {
    if (obj.metadata.namespace !== undefined && w.namespace !== null && obj.metadata.namespace !== w.namespace) return;
    if (!w.matches(obj)) return;
    const r = RESOURCE_BY_KEY.get(w.key)!;
    const payload = w.table ? table(r, [obj], w.includeObject) : obj;
    w.res.write(`${JSON.stringify({ type, object: payload })}\n`);
  }

  function endWatcher(w: Watcher): void {
    clearTimeout(w.timer);
    watchers.delete(w);
    if (!w.res.writableEnded) w.res.end();
  }

  function endFollower(f: Follower): void {
    followers.delete(f);
    if (!f.res.writableEnded) f.res.end();
  }

  // --- HTTP ---------------------------------------------------------------------------

  function record(req: IncomingMessage, upgrade: boolean): RecordedRequest {
    const groups: string[] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === 'impersonate-group') groups.push(req.rawHeaders[i + 1]);
    const entry: RecordedRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: { ...req.headers },
      impersonateGroups: groups,
      clientCn: verifiedClientCn(req),
      upgrade,
      status: 0,
      at: Date.now(),
    };
    requests.push(entry);
    if (requests.length > MAX_RECORDED_REQUESTS) requests.shift();
    return entry;
  }

  function verifiedClientCn(req: IncomingMessage): string | null {
    const sock = req.socket as TLSSocket;
    if (!opts.clientCa || !sock.authorized) return null;
    const cn = sock.getPeerCertificate()?.subject?.CN;
    return (Array.isArray(cn) ? cn[0] : cn) ?? null;
  }

  /** null when the request may proceed, else the 401 Status to send */
  function authenticate(req: IncomingMessage, entry: RecordedRequest): Status | null {
    if (opts.clientCa && entry.clientCn === null) {
      const why = (req.socket as TLSSocket).authorizationError;
      return failure(401, 'Unauthorized', `Unauthorized: a client certificate signed by the configured client CA is required${why ? ` (${String(why)})` : ''}`);
    }
    if (opts.token !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      const got = Buffer.from(m?.[1] ?? '');
      const want = Buffer.from(opts.token);
      if (got.length !== want.length || !timingSafeEqual(got, want)) return failure(401, 'Unauthorized', 'Unauthorized');
    }
    return null;
  }

  function sendJson(res: ServerResponse, entry: RecordedRequest, code: number, body: unknown): void {
    entry.status = code;
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
    res.end(text);
  }

  function readBody(req: IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > MAX_BODY) return reject(new HttpError(failure(413, 'RequestEntityTooLarge', `request body larger than ${MAX_BODY} bytes`)));
      const parts: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) {
          req.destroy();
          reject(new HttpError(failure(413, 'RequestEntityTooLarge', `request body larger than ${MAX_BODY} bytes`)));
          return;
        }
        parts.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(parts)));
      req.on('error', reject);
    });
  }

  async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const body = await readBody(req);
    if (body.length === 0) return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new HttpError(badRequest('the request body is not valid JSON (this test server accepts JSON only)'));
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(badRequest('the request body must be a JSON object'));
    return parsed as Record<string, unknown>;
  }

  interface Route {
    r: ResourceDef;
    namespace: string | null;
    name: string | null;
    sub: string | null;
  }

  /** Maps /api/v1/... and /apis/G/V/... to a resource; null when the path is not one. */
  function route(pathname: string): Route | null {
    let segs: string[];
    let group: string;
    if (pathname.startsWith('/api/v1/')) {
      group = '';
      segs = pathname.slice('/api/v1/'.length).split('/');
    } else if (pathname.startsWith('/apis/apps/v1/')) {
      group = 'apps';
      segs = pathname.slice('/apis/apps/v1/'.length).split('/');
    } else return null;
    if (segs.some((s) => s === '')) return null;
    let namespace: string | null = null;
    if (segs[0] === 'namespaces' && segs.length >= 3) {
      namespace = decodeSegment(segs[1]);
      segs = segs.slice(2);
    }
    if (segs.length > 3) return null;
    const r = RESOURCE_BY_KEY.get(resourceKey(group, segs[0]));
    if (!r) return null;
    if (namespace !== null && !r.namespaced) return null;
    return { r, namespace, name: segs[1] !== undefined ? decodeSegment(segs[1]) : null, sub: segs[2] ?? null };
  }

  const wantsTable = (accept: string | undefined) => /as=Table/.test(accept ?? '') && /g=meta\.k8s\.io/.test(accept ?? '');

  function listObjects(rt: Route, matches: Predicate): KubeObject[] {
    const all = [...bucket(resourceKey(rt.r.group, rt.r.name)).values()];
    return all
      .filter((o) => (rt.namespace === null || o.metadata.namespace === rt.namespace) && matches(o))
      .sort((a, b) => (a.metadata.namespace ?? '').localeCompare(b.metadata.namespace ?? '') || a.metadata.name.localeCompare(b.metadata.name));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const entry = record(req, false);
    const denied = authenticate(req, entry);
    if (denied) return sendJson(res, entry, 401, denied);
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const p = url.pathname;
    const method = req.method ?? 'GET';

    if (method === 'GET') {
      if (p === '/version') return sendJson(res, entry, 200, VERSION);
      if (p === '/healthz' || p === '/livez' || p === '/readyz') {
        entry.status = 200;
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        return void res.end('ok');
      }
      // Legacy discovery even when kubectl asks for the aggregated kind: a plain
      // application/json answer makes client-go fall back to per-group-version requests.
      if (p === '/api') return sendJson(res, entry, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${port}` }] });
      if (p === '/api/v1') return sendJson(res, entry, 200, apiResourceList('', 'v1'));
      if (p === '/apis') return sendJson(res, entry, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [APPS_GROUP] });
      if (p === '/apis/apps') return sendJson(res, entry, 200, { kind: 'APIGroup', apiVersion: 'v1', ...APPS_GROUP });
      if (p === '/apis/apps/v1') return sendJson(res, entry, 200, apiResourceList('apps', 'v1'));
    }

    const rt = route(p);
    if (!rt) return sendJson(res, entry, 404, failure(404, 'NotFound', 'the server could not find the requested resource'));
    if (rt.namespace !== null && !bucket('/namespaces').has(objKey(undefined, rt.namespace)) && !(method === 'GET' && rt.name === null)) {
      return sendJson(res, entry, 404, notFound('namespaces', rt.namespace));
    }
    const k = resourceKey(rt.r.group, rt.r.name);
    const q = url.searchParams;

    if (rt.sub !== null) {
      if (rt.r.name === 'pods' && rt.sub === 'log' && method === 'GET') return serveLog(rt, q, res, entry);
      if (rt.r.name === 'pods' && (rt.sub === 'exec' || rt.sub === 'attach' || rt.sub === 'portforward')) {
        return sendJson(res, entry, 400, badRequest('Upgrade request required'));
      }
      return sendJson(res, entry, 404, failure(404, 'NotFound', 'the server could not find the requested resource'));
    }

    if (method === 'GET' && rt.name === null) {
      const matches = ((f, l) => (o: KubeObject) => f(o) && l(o))(parseFieldSelector(q.get('fieldSelector')), parseLabelSelector(q.get('labelSelector')));
      if (q.get('watch') === 'true' || q.get('watch') === '1') return serveWatch(rt, q, matches, req, res, entry);
      const items = listObjects(rt, matches);
      const listRv = String(rv);
      if (wantsTable(req.headers.accept)) return sendJson(res, entry, 200, table(rt.r, items, q.get('includeObject') ?? 'Metadata', listRv));
      return sendJson(res, entry, 200, { kind: `${rt.r.kind}List`, apiVersion: gv(rt.r), metadata: { resourceVersion: listRv }, items });
    }

    if (method === 'GET' && rt.name !== null) {
      const obj = bucket(k).get(objKey(rt.namespace ?? undefined, rt.name));
      if (!obj) return sendJson(res, entry, 404, notFound(rt.r.name, rt.name));
      if (wantsTable(req.headers.accept)) return sendJson(res, entry, 200, table(rt.r, [obj], q.get('includeObject') ?? 'Metadata', obj.metadata.resourceVersion));
      return sendJson(res, entry, 200, obj);
    }

    if (method === 'POST' && rt.name === null) return sendJson(res, entry, 201, create(rt, await readJson(req), q.get('dryRun') === 'All'));

    if (method === 'DELETE' && rt.name !== null) {
      await readJson(req); // DeleteOptions: propagation and grace period do not matter here
      if (rt.r.name === 'namespaces') return sendJson(res, entry, 405, failure(405, 'MethodNotAllowed', 'this test server does not delete namespaces'));
      const gone = remove(rt.r, rt.namespace ?? undefined, rt.name);
      if (!gone) return sendJson(res, entry, 404, notFound(rt.r.name, rt.name));
      return sendJson(res, entry, 200, gone);
    }

    return sendJson(res, entry, 405, failure(405, 'MethodNotAllowed', `${method} is not supported on ${p} by this test server`));
  }

  function create(rt: Route, body: Record<string, unknown>, dryRun: boolean): KubeObject {
    if (rt.namespace === null && rt.r.namespaced) throw new HttpError(badRequest('a namespace is required to create this object'));
    if (body.kind !== undefined && body.kind !== rt.r.kind) throw new HttpError(badRequest(`the body is a ${String(body.kind)}, not a ${rt.r.kind}`));
    const m = (body.metadata ?? {}) as Record<string, unknown>;
    let name = typeof m.name === 'string' ? m.name : '';
    if (!name && typeof m.generateName === 'string') name = `${m.generateName}${randomUUID().slice(0, 5)}`;
    if (!NAME_RE.test(name)) throw new HttpError(failure(422, 'Invalid', `${rt.r.kind} "${name}" is invalid: metadata.name: Invalid value: must be a lowercase RFC 1123 subdomain`));
    const namespace = rt.r.namespaced ? (rt.namespace ?? undefined) : undefined;
    if (typeof m.namespace === 'string' && m.namespace !== (namespace ?? '')) throw new HttpError(badRequest('the namespace of the object does not match the namespace of the request'));
    if (bucket(resourceKey(rt.r.group, rt.r.name)).has(objKey(namespace, name))) {
      throw new HttpError(failure(409, 'AlreadyExists', `${rt.r.name} "${name}" already exists`, { name, kind: rt.r.name }));
    }
    const labels = isStringMap(m.labels) ? m.labels : undefined;
    const annotations = isStringMap(m.annotations) ? m.annotations : undefined;
    let obj: KubeObject;
    if (rt.r.name === 'pods') {
      const spec = (body.spec ?? {}) as { containers?: Array<{ name?: unknown; image?: unknown; command?: unknown; args?: unknown; stdin?: unknown; tty?: unknown }> };
      const containers = (Array.isArray(spec.containers) ? spec.containers : []).slice(0, 16);
      const names = containers.map((c) => (typeof c?.name === 'string' ? c.name : ''));
      if (names.length === 0 || names.some((n) => !NAME_RE.test(n))) throw new HttpError(failure(422, 'Invalid', `Pod "${name}" is invalid: spec.containers: Required value`));
      const first = containers[0];
      const image = typeof first?.image === 'string' ? first.image : undefined;
      // `kubectl run -it IMAGE -- CMD` sends the command as args (command only with --command).
      const strings = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : []);
      const argv = [...strings(first?.command), ...strings(first?.args)];
      if (argv.length > 0) checkCommand(argv);
      const io = { ...(argv.length > 0 ? { command: argv } : {}), stdin: first?.stdin === true, tty: first?.tty === true };
      obj = podObject(namespace!, name, { containers: names, image, labels, ...io }, annotations ? { annotations } : {});
    } else {
      const rest = Object.fromEntries(Object.entries(body).filter(([f]) => f !== 'metadata' && f !== 'status'));
      obj = { ...rest, apiVersion: gv(rt.r), kind: rt.r.kind, metadata: meta(name, namespace, { ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}) }) };
    }
    if (dryRun) return obj;
    return put(rt.r, obj, 'ADDED');
  }

  function serveWatch(rt: Route, q: URLSearchParams, matches: Predicate, req: IncomingMessage, res: ServerResponse, entry: RecordedRequest): void {
    const k = resourceKey(rt.r.group, rt.r.name);
    const from = q.get('resourceVersion') ?? '';
    const fromRv = /^\d+$/.test(from) ? Number(from) : 0;
    const oldest = history.length > 0 ? history[0].rv : rv + 1;
    entry.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    (res.socket as Socket | null)?.setNoDelay(true);
    const seconds = Math.min(Math.max(Number(q.get('timeoutSeconds')) || MAX_WATCH_SECONDS, 1), MAX_WATCH_SECONDS);
    const w: Watcher = {
      key: k,
      namespace: rt.namespace,
      matches,
      table: wantsTable(req.headers.accept),
      includeObject: q.get('includeObject') ?? 'Metadata',
      res,
      timer: setTimeout(() => endWatcher(w), seconds * 1000),
    };
    res.on('close', () => endWatcher(w));
    if (fromRv === 0 || q.get('sendInitialEvents') === 'true') {
      // "Any version" (or a watch-list): the current state first, as ADDED events.
      for (const o of listObjects(rt, matches)) sendEvent(w, 'ADDED', o);
      if (q.get('sendInitialEvents') === 'true') {
        const bookmark = { kind: rt.r.kind, apiVersion: gv(rt.r), metadata: { resourceVersion: String(rv), annotations: { 'k8s.io/initial-events-end': 'true' } } };
        res.write(`${JSON.stringify({ type: 'BOOKMARK', object: bookmark })}\n`);
      }
    } else if (fromRv < oldest - 1 && fromRv < rv) {
      const gone = failure(410, 'Expired', `too old resource version: ${fromRv} (${oldest - 1})`);
      res.end(`${JSON.stringify({ type: 'ERROR', object: gone })}\n`);
      clearTimeout(w.timer);
      return;
    } else {
      // Replay what happened since the list the client watched from, so nothing between the
      // list and this watch is lost.
      for (const ev of history) if (ev.key === k && ev.rv > fromRv) sendEvent(w, ev.type, ev.obj);
    }
    watchers.add(w);
  }

  function serveLog(rt: Route, q: URLSearchParams, res: ServerResponse, entry: RecordedRequest): void {
    const ns = rt.namespace ?? '';
    const pod = bucket('/pods').get(objKey(ns, rt.name!));
    if (!pod) return sendJson(res, entry, 404, notFound('pods', rt.name!));
    const containers = ((pod.spec as { containers: Array<{ name: string }> }).containers ?? []).map((c) => c.name);
    const container = q.get('container');
    if (container !== null && !containers.includes(container)) {
      return sendJson(res, entry, 400, badRequest(`container ${container} is not valid for pod ${rt.name}`));
    }
    if (container === null && containers.length > 1) {
      return sendJson(res, entry, 400, badRequest(`a container name must be specified for pod ${rt.name}, choose one of: [${containers.join(' ')}]`));
    }
    let lines = logs.get(logKey(ns, rt.name!)) ?? [];
    const tail = q.get('tailLines');
    if (tail !== null && /^\d+$/.test(tail)) lines = Number(tail) === 0 ? [] : lines.slice(-Number(tail));
    entry.status = 200;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-cache, private' });
    const text = lines.map((l) => `${l}\n`).join('');
    if (q.get('follow') !== 'true') return void res.end(text);
    res.flushHeaders();
    (res.socket as Socket | null)?.setNoDelay(true);
    if (text) res.write(text);
    const f: Follower = { logKey: logKey(ns, rt.name!), res };
    followers.add(f);
    res.on('close', () => followers.delete(f));
  }

  // --- exec over WebSocket ------------------------------------------------------------

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_WS_MESSAGE,
    perMessageDeflate: false,
    handleProtocols: (offered) => (offered.has('v5.channel.k8s.io') ? 'v5.channel.k8s.io' : offered.has('v4.channel.k8s.io') ? 'v4.channel.k8s.io' : false),
  });

  function rejectUpgrade(socket: Duplex, entry: RecordedRequest, status: Status): void {
    entry.status = status.code;
    const body = JSON.stringify(status);
    socket.end(
      `HTTP/1.1 ${status.code} ${STATUS_CODES[status.code] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {}); // a client that vanishes mid-handshake is not our failure
    const entry = record(req, true);
    try {
      upgrade(req, socket, head, entry);
    } catch (err) {
      rejectUpgrade(socket, entry, err instanceof HttpError ? err.status : failure(500, 'InternalError', `Internal error occurred: ${String(err)}`));
    }
  }

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, entry: RecordedRequest): void {
    const denied = authenticate(req, entry);
    if (denied) return rejectUpgrade(socket, entry, denied);
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const rt = route(url.pathname);
    if (rt?.r.name === 'pods' && rt.namespace !== null && rt.name !== null && rt.sub === 'portforward') return upgradePortForward(req, socket, head, entry, rt.namespace, rt.name);
    if (!rt || rt.r.name !== 'pods' || rt.namespace === null || rt.name === null || (rt.sub !== 'exec' && rt.sub !== 'attach')) {
      return rejectUpgrade(socket, entry, failure(404, 'NotFound', 'the server could not find the requested resource'));
    }
    const pod = bucket('/pods').get(objKey(rt.namespace, rt.name));
    if (!pod) return rejectUpgrade(socket, entry, notFound('pods', rt.name));
    const phase = (pod.status as { phase?: string }).phase;
    if (phase !== 'Running') {
      const what = rt.sub === 'attach' ? 'attach to' : 'exec into';
      return rejectUpgrade(socket, entry, badRequest(`cannot ${what} a container in a completed pod; current phase is ${phase}`));
    }
    const sub = rt.sub;
    const params = sub === 'attach' ? attachParams(url.searchParams, pod) : execParams(url.searchParams, pod);
    // Checked after the pod and parameters: kubectl retries a failed WebSocket upgrade over SPDY
    // and prints that answer, so both must carry the real reason.
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
      // SPDY and anything else: kubectl 1.32 must get here over WebSocket, and a test proves it.
      return rejectUpgrade(socket, entry, badRequest(`unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? '')}: this test server speaks WebSocket (v5.channel.k8s.io) only`));
    }
    const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
    if (!offered.includes('v5.channel.k8s.io') && !offered.includes('v4.channel.k8s.io')) {
      return rejectUpgrade(socket, entry, badRequest('offer v5.channel.k8s.io or v4.channel.k8s.io in Sec-WebSocket-Protocol'));
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      entry.status = 101;
      if (closed) return ws.terminate();
      if ('command' in params) runExec(ws, rt.namespace!, rt.name!, params);
      else runAttach(ws, rt.namespace!, rt.name!, params);
    });
  }

  // --- port-forward: SPDY/3.1, plain or tunneled in WebSocket (kube-portforward.ts) -------

  // ws refuses "SPDY/3.1+portforward.k8s.io" as a subprotocol ("/" is not a token character),
  // so the offer is checked here, hidden from ws, and the answer added to its 101.
  const forwardWss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE, perMessageDeflate: false });
  forwardWss.on('headers', (headers) => headers.push(`Sec-WebSocket-Protocol: ${TUNNEL_SUBPROTOCOL}`));

  function upgradePortForward(req: IncomingMessage, socket: Duplex, head: Buffer, entry: RecordedRequest, namespace: string, podName: string): void {
    const pod = bucket('/pods').get(objKey(namespace, podName));
    if (!pod) return rejectUpgrade(socket, entry, notFound('pods', podName));
    const phase = (pod.status as { phase?: string }).phase;
    if (phase !== 'Running') return rejectUpgrade(socket, entry, badRequest(`pod ${podName} is not running; current phase is ${phase}`));
    const ports = podPorts.get(objKey(namespace, podName)) ?? new Map<number, number>();
    const start = (conn: Duplex, transport: PortForwardRecord['transport']) => {
      const record: PortForwardRecord = { namespace, pod: podName, transport, ports: [], bytesIn: 0, bytesOut: 0, errors: [], closed: false };
      portForwards.push(record);
      if (portForwards.length > MAX_RECORDED_REQUESTS) portForwards.shift();
      const session = servePortForward(conn, { record, uid: pod.metadata.uid, target: (port) => ports.get(port) ?? null });
      forwardSessions.add(session);
      conn.on('close', () => forwardSessions.delete(session));
    };
    const upgradeTo = (req.headers.upgrade ?? '').toLowerCase();
    if (upgradeTo === 'websocket') {
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
      if (!offered.includes(TUNNEL_SUBPROTOCOL)) return rejectUpgrade(socket, entry, badRequest(`offer ${TUNNEL_SUBPROTOCOL} in Sec-WebSocket-Protocol`));
      delete req.headers['sec-websocket-protocol'];
      return void forwardWss.handleUpgrade(req, socket, head, (ws) => {
        entry.status = 101;
        if (closed) return ws.terminate();
        start(createWebSocketStream(ws), 'websocket');
      });
    }
    if (upgradeTo === 'spdy/3.1') {
      const versions = String(req.headers['x-stream-protocol-version'] ?? '').split(',').map((s) => s.trim());
      if (!versions.includes(PORTFORWARD_PROTOCOL)) return rejectUpgrade(socket, entry, badRequest(`offer ${PORTFORWARD_PROTOCOL} in X-Stream-Protocol-Version`));
      if (closed) return void socket.destroy();
      entry.status = 101;
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: ${PORTFORWARD_PROTOCOL}\r\n\r\n`);
      if (head.length > 0) socket.unshift(head);
      (socket as Socket).setNoDelay?.(true);
      return start(socket, 'spdy');
    }
    return rejectUpgrade(socket, entry, badRequest(`unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? '')}: port-forward speaks SPDY/3.1, plain or in WebSocket (${TUNNEL_SUBPROTOCOL})`));
  }

  interface AttachParams {
    container: string;
    stdin: boolean;
    stdout: boolean;
    stderr: boolean;
    /** the container's own setting: a running process cannot change whether it has a TTY */
    tty: boolean;
    mainCommand: string[];
    mainStdin: boolean;
  }

  function attachParams(q: URLSearchParams, pod: KubeObject): AttachParams {
    const specs = (pod.spec as { containers?: Array<{ name: string; command?: string[]; stdin?: boolean; tty?: boolean }> }).containers ?? [];
    const name = q.get('container') ?? specs[0]?.name;
    const c = specs.find((x) => x.name === name);
    if (!c) throw new HttpError(badRequest(`container ${name} is not valid for pod ${pod.metadata.name}`));
    const flag = (n: string) => q.get(n) === 'true' || q.get(n) === '1';
    const p = { container: c.name, stdin: flag('stdin'), stdout: flag('stdout'), stderr: flag('stderr'), tty: c.tty === true };
    if (!p.stdin && !p.stdout && !p.stderr) throw new HttpError(badRequest('you must specify at least 1 of stdin, stdout, stderr'));
    if (p.stdin && !c.stdin) throw new HttpError(badRequest(`container ${c.name} of pod ${pod.metadata.name} does not read stdin (spec.containers[].stdin is false): attach without -i`));
    const mainCommand = c.command ?? (c.stdin ? ['sh'] : []);
    if (mainCommand.length === 0) {
      throw new HttpError(badRequest(`container ${c.name} of pod ${pod.metadata.name} has no main process in this test server: add the pod with { command } or { stdin: true }`));
    }
    return { ...p, stderr: p.stderr && !p.tty, mainCommand, mainStdin: c.stdin === true };
  }

  const mainKey = (namespace: string, pod: string, container: string) => `${namespace}/${pod}/${container}`;

  function startMain(main: MainProcess, size: Size | null): void {
    if (main.proc || main.exited) return;
    if (main.startTimer) clearTimeout(main.startTimer);
    main.startTimer = null;
    const spawned = spawnInPod(main.pod, main.command, main.tty, main.stdin, size);
    if ('code' in spawned) return endMain(main, { ...spawned });
    main.proc = spawned;
    const c = spawned.child;
    for (const client of main.clients) client.record.pid = c.pid ?? null;
    c.stdin?.on('error', () => {}); // the process may exit without reading its input
    c.stdout!.on('data', (d: Buffer) => fanOut(main, 1, d));
    c.stderr!.on('data', (d: Buffer) => fanOut(main, main.tty ? 1 : 2, d));
    c.on('error', (err: NodeJS.ErrnoException) => {
      const msg = err.code === 'ENOENT' ? `exec: "${main.command[0]}": executable file not found in $PATH` : err.message;
      endMain(main, { metadata: {}, status: 'Failure', message: `OCI runtime create failed: ${msg}: unknown`, reason: 'InternalError', code: 500 });
    });
    c.on('close', (code, signal) => endMain(main, exitStatus(exitCodeOf(code, signal), main.command)));
    for (const b of main.pendingStdin) c.stdin?.write(b);
    main.pendingStdin = [];
    main.pendingStdinBytes = 0;
  }

  /** Output goes to every client attached now; with nobody attached it is not kept. */
  function fanOut(main: MainProcess, channel: 1 | 2, data: Buffer): void {
    for (const client of main.clients) if (channel === 1 ? client.stdout : client.stderr) client.send(channel, data);
    if ([...main.clients].some((cl) => cl.queued > MAX_WS_BUFFERED)) {
      // An attached client reads slower than the process writes: stop reading the process.
      main.proc?.child.stdout?.pause();
      main.proc?.child.stderr?.pause();
    }
  }

  function resumeIfDrained(main: MainProcess): void {
    if ([...main.clients].every((cl) => cl.queued < MAX_WS_BUFFERED / 2)) {
      main.proc?.child.stdout?.resume();
      main.proc?.child.stderr?.resume();
    }
  }

  /** The main process ended: its clients get the exit status, and the next attach restarts it. */
  function endMain(main: MainProcess, status: Record<string, unknown>): void {
    if (main.exited) return;
    main.exited = true;
    if (main.startTimer) clearTimeout(main.startTimer);
    const key = mainKey(main.namespace, main.pod, main.container);
    if (mainProcesses.get(key) === main) mainProcesses.delete(key);
    for (const client of [...main.clients]) client.finish(status);
    main.clients.clear();
    main.proc?.dispose();
    if (main.proc) countRestart(main);
  }

  /** restartPolicy Always: the container restarts, so its restart count goes up. */
  function countRestart(main: MainProcess): void {
    const pod = bucket('/pods').get(objKey(main.namespace, main.pod));
    if (!pod || closed) return;
    const updated = structuredClone(pod);
    const statuses = (updated.status as { containerStatuses?: Array<{ name: string; restartCount?: number }> }).containerStatuses ?? [];
    const cs = statuses.find((x) => x.name === main.container);
    if (!cs) return;
    cs.restartCount = (cs.restartCount ?? 0) + 1;
    put(def('', 'pods'), updated, 'MODIFIED');
  }

  function killMain(main: MainProcess): void {
    if (main.startTimer) clearTimeout(main.startTimer);
    main.startTimer = null;
    if (main.proc) killTree(main.proc.child);
    else endMain(main, { metadata: {}, status: 'Failure', message: 'the container was stopped', reason: 'InternalError', code: 500 });
  }

  function runAttach(ws: WebSocket, namespace: string, podName: string, p: AttachParams): void {
    const key = mainKey(namespace, podName, p.container);
    let main = mainProcesses.get(key);
    if (!main) {
      const m: MainProcess = {
        namespace,
        pod: podName,
        container: p.container,
        command: p.mainCommand,
        tty: p.tty,
        stdin: p.mainStdin,
        proc: null,
        clients: new Set(),
        pendingStdin: [],
        pendingStdinBytes: 0,
        startTimer: null,
        exited: false,
      };
      // Started by the first attach; with a TTY, at the size of the first resize when it
      // comes soon enough, so a shell does not start at 80x24.
      m.startTimer = setTimeout(() => startMain(m, null), p.tty ? FIRST_RESIZE_WAIT_MS : 0);
      mainProcesses.set(key, m);
      main = m;
    }
    const target = main;
    const record: AttachRecord = { namespace, pod: podName, container: p.container, tty: p.tty, stdin: p.stdin, protocol: ws.protocol, pid: target.proc?.child.pid ?? null };
    attaches.push(record);
    if (attaches.length > MAX_RECORDED_REQUESTS) attaches.shift();
    let done = false;
    const client: AttachClient = {
      stdout: p.stdout,
      stderr: p.stderr,
      queued: 0,
      record,
      send(channel, data) {
        if (ws.readyState !== ws.OPEN) return;
        const payload = Buffer.concat([Buffer.from([channel]), data]);
        client.queued += payload.length;
        ws.send(payload, { binary: true }, () => {
          client.queued -= payload.length;
          resumeIfDrained(target);
        });
      },
      finish(status) {
        if (done) return;
        done = true;
        client.send(3, Buffer.from(JSON.stringify(status)));
        if (ws.readyState === ws.OPEN) ws.close(1000);
        sessions.delete(session);
      },
    };
    const session: ExecSession = {
      kill() {
        sessions.delete(session);
        target.clients.delete(client);
        if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
      },
    };
    sessions.add(session);
    target.clients.add(client);

    ws.on('message', (raw, isBinary) => {
      const data = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw as ArrayBuffer);
      if (!isBinary || data.length === 0 || done) return;
      const channel = data[0];
      const body = data.subarray(1);
      if (channel === 0) {
        if (!p.stdin) return;
        const stdin = target.proc?.child.stdin;
        if (stdin) {
          if (!stdin.write(body)) {
            ws.pause();
            stdin.once('drain', () => ws.resume());
          }
        } else if (!target.proc && target.pendingStdinBytes + body.length <= MAX_WS_BUFFERED) {
          target.pendingStdin.push(Buffer.from(body));
          target.pendingStdinBytes += body.length;
        }
      } else if (channel === 4) {
        const size = parseResize(body);
        if (!size) return;
        resizes.push({ namespace, pod: podName, ...size });
        if (resizes.length > MAX_RECORDED_REQUESTS) resizes.shift();
        if (!target.proc) startMain(target, size);
        else target.proc.resize(size);
      }
      // Channel 255 (the client closed its stdin) is ignored: the main process keeps its input
      // for the next client, as the kubelet does for a container without stdinOnce.
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      // Detaching leaves the main process running.
      done = true;
      sessions.delete(session);
      target.clients.delete(client);
      resumeIfDrained(target);
    });
  }

  interface ExecParams {
    command: string[];
    container: string;
    stdin: boolean;
    stdout: boolean;
    stderr: boolean;
    tty: boolean;
  }

  function execParams(q: URLSearchParams, pod: KubeObject): ExecParams {
    const command = q.getAll('command');
    if (command.length === 0) throw new HttpError(badRequest('you must specify at least 1 command'));
    checkCommand(command);
    const containers = ((pod.spec as { containers: Array<{ name: string }> }).containers ?? []).map((c) => c.name);
    const container = q.get('container') ?? containers[0];
    if (!containers.includes(container)) throw new HttpError(badRequest(`container ${container} is not valid for pod ${pod.metadata.name}`));
    const flag = (n: string) => q.get(n) === 'true' || q.get(n) === '1';
    const p = { command, container, stdin: flag('stdin'), stdout: flag('stdout'), stderr: flag('stderr'), tty: flag('tty') };
    if (!p.stdin && !p.stdout && !p.stderr) throw new HttpError(badRequest('you must specify at least 1 of stdin, stdout, stderr'));
    if (p.tty && p.stderr) throw new HttpError(badRequest('stderr must be false when tty is true'));
    return p;
  }

  /**
   * Starts a command "in" a pod: a real process in its own process group (so stopping it stops
   * what it started), under a pseudo-terminal of util-linux `script` when tty is set. A Status
   * when it cannot start.
   */
  function spawnInPod(podName: string, command: string[], tty: boolean, stdin: boolean, size: Size | null): PodProcess | Status {
    const ttyFile = path.join(workDir, `tty-${randomUUID()}`);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: workDir,
      HOSTNAME: podName,
      LANG: 'C.UTF-8',
      SHELL: '/bin/sh',
    };
    let argv = command;
    if (tty) {
      if (!scriptBin) return failure(500, 'InternalError', 'a tty needs util-linux "script", which is not installed');
      env.TERM = 'xterm-256color';
      const quoted = command.map(shellQuote).join(' ');
      const sized = size ? `stty cols ${size.width} rows ${size.height} 2>/dev/null; ` : '';
      // script gives the command a real pseudo-terminal; the wrapper sizes it and notes its
      // name so later resizes can be applied, then becomes the command.
      const wrapper = `${sized}tty > ${shellQuote(ttyFile)} 2>/dev/null; exec ${quoted}`;
      argv = [scriptBin, '-qfec', wrapper, '/dev/null'];
    }
    const child = spawn(argv[0], argv.slice(1), { cwd: workDir, env, detached: true, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let disposed = false;
    let resizeBusy = false;
    let resizeNext: Size | null = null;
    const resize = (next: Size) => {
      // The pty is script's, not ours: set its size from outside with `stty -F` on the slave,
      // whose name the wrapper wrote down. The kernel then signals SIGWINCH to the shell.
      if (!tty || disposed) return;
      if (resizeBusy) return void (resizeNext = next);
      let ttyName = '';
      try {
        ttyName = fs.readFileSync(ttyFile, 'utf8').trim();
      } catch {
        return;
      }
      if (!/^\/dev\/pts\/\d+$/.test(ttyName)) return;
      resizeBusy = true;
      const s = spawn('stty', ['-F', ttyName, 'cols', String(next.width), 'rows', String(next.height)], { stdio: 'ignore' });
      const done = () => {
        resizeBusy = false;
        const queued = resizeNext;
        resizeNext = null;
        if (queued) resize(queued);
      };
      s.on('error', done);
      s.on('close', done);
    };
    return {
      child,
      resize,
      dispose() {
        disposed = true;
        fs.rmSync(ttyFile, { force: true });
      },
    };
  }

  function runExec(ws: WebSocket, namespace: string, podName: string, p: ExecParams): void {
    const rec: ExecRecord = { namespace, pod: podName, container: p.container, command: p.command, tty: p.tty, stdin: p.stdin, protocol: ws.protocol, exitCode: null, pid: null };
    execs.push(rec);
    if (execs.length > MAX_RECORDED_REQUESTS) execs.shift();
    const v5 = ws.protocol === 'v5.channel.k8s.io';
    let proc: PodProcess | null = null;
    let child: ChildProcess | null = null;
    let pendingStdin: Buffer[] = [];
    let pendingStdinBytes = 0;
    let stdinClosed = !p.stdin;
    let firstSize: { width: number; height: number } | null = null;
    let started = false;
    let finished = false;
    let queued = 0;

    const session: ExecSession = {
      kill() {
        sessions.delete(session);
        if (child) killTree(child);
        if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
      },
    };
    sessions.add(session);

    const send = (channel: number, data: Buffer | string) => {
      if (ws.readyState !== ws.OPEN) return;
      const payload = Buffer.concat([Buffer.from([channel]), typeof data === 'string' ? Buffer.from(data) : data]);
      queued += payload.length;
      ws.send(payload, { binary: true }, () => {
        queued -= payload.length;
        if (queued < MAX_WS_BUFFERED / 2) {
          child?.stdout?.resume();
          child?.stderr?.resume();
        }
      });
      if (queued > MAX_WS_BUFFERED) {
        // The client reads slower than the process writes: stop reading the process.
        child?.stdout?.pause();
        child?.stderr?.pause();
      }
    };

    const finish = (status: Record<string, unknown>) => {
      if (finished) return;
      finished = true;
      send(3, JSON.stringify(status));
      if (ws.readyState === ws.OPEN) ws.close(1000);
      sessions.delete(session);
      proc?.dispose();
    };

    const start = () => {
      if (started || finished) return;
      started = true;
      const spawned = spawnInPod(podName, p.command, p.tty, p.stdin, firstSize);
      if ('code' in spawned) return finish({ ...spawned });
      proc = spawned;
      const c = spawned.child;
      child = c;
      rec.pid = c.pid ?? null;
      c.stdin?.on('error', () => {}); // the process may exit without reading its input
      c.stdout!.on('data', (d: Buffer) => p.stdout && send(1, d));
      // With a TTY, script reports its own trouble on stderr; there is no stderr channel then.
      c.stderr!.on('data', (d: Buffer) => (p.tty ? p.stdout && send(1, d) : p.stderr && send(2, d)));
      c.on('error', (err: NodeJS.ErrnoException) => {
        const msg = err.code === 'ENOENT' ? `exec: "${p.command[0]}": executable file not found in $PATH` : err.message;
        finish({ metadata: {}, status: 'Failure', message: `OCI runtime exec failed: ${msg}: unknown`, reason: 'InternalError', code: 500 });
      });
      c.on('close', (code, signal) => {
        const exit = exitCodeOf(code, signal);
        rec.exitCode = exit;
        finish(exitStatus(exit, p.command));
      });
      for (const b of pendingStdin) c.stdin?.write(b);
      pendingStdin = [];
      if (stdinClosed) c.stdin?.end();
    };

    ws.on('message', (raw, isBinary) => {
      const data = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw as ArrayBuffer);
      if (!isBinary || data.length === 0) return;
      const channel = data[0];
      const body = data.subarray(1);
      if (channel === 0) {
        if (stdinClosed || !p.stdin) return;
        if (child?.stdin) {
          if (!child.stdin.write(body)) {
            ws.pause();
            child.stdin.once('drain', () => ws.resume());
          }
        } else if (pendingStdinBytes + body.length <= MAX_WS_BUFFERED) {
          pendingStdin.push(Buffer.from(body));
          pendingStdinBytes += body.length;
        }
      } else if (channel === 4) {
        const size = parseResize(body);
        if (!size) return;
        const { width, height } = size;
        resizes.push({ namespace, pod: podName, width, height });
        if (resizes.length > MAX_RECORDED_REQUESTS) resizes.shift();
        if (!started) {
          firstSize = { width, height };
          start();
        } else if (p.tty) proc?.resize({ width, height });
      } else if (channel === 255 && v5 && body[0] === 0) {
        stdinClosed = true;
        child?.stdin?.end();
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      // The client went away: nothing is left to read the process's output.
      sessions.delete(session);
      if (!finished && child) killTree(child);
      finished = true;
      proc?.dispose();
    });

    if (p.tty) setTimeout(start, FIRST_RESIZE_WAIT_MS);
    else start();
  }

  // --- lifecycle ----------------------------------------------------------------------

  const server = https.createServer({
    key,
    cert,
    ...(opts.clientCa ? { ca: opts.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      const status = err instanceof HttpError ? err.status : failure(500, 'InternalError', `Internal error occurred: ${String(err)}`);
      res.writeHead(status.code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(status));
    });
  });
  server.on('upgrade', onUpgrade);
  server.on('tlsClientError', () => {}); // handshake failures are the client's problem

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('the test kube-apiserver did not get a TCP port');
  const port = addr.port;

  const unregister = registerEmergencyCleanup(() => {
    for (const s of sessions) s.kill();
    for (const f of forwardSessions) f.kill();
    for (const m of mainProcesses.values()) if (m.proc) killTree(m.proc.child);
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const w of [...watchers]) endWatcher(w);
    for (const f of [...followers]) endFollower(f);
    for (const s of [...sessions]) s.kill();
    for (const f of [...forwardSessions]) f.kill();
    for (const c of forwardWss.clients) c.terminate();
    forwardWss.close();
    for (const m of [...mainProcesses.values()]) killMain(m);
    for (const c of wss.clients) c.terminate();
    wss.close();
    for (const s of sockets) s.destroy();
    await stopped;
    fs.rmSync(workDir, { recursive: true, force: true });
    unregister();
  }

  return {
    url: `https://127.0.0.1:${port}`,
    port,
    caPem: cert,
    certPem: cert,
    requests,
    resizes,
    execs,
    attaches,
    portForwards,
    mainProcess(ns, pod, container) {
      const spec = bucket('/pods').get(objKey(ns, pod))?.spec as { containers?: Array<{ name: string }> } | undefined;
      const m = mainProcesses.get(mainKey(ns, pod, container ?? spec?.containers?.[0]?.name ?? ''));
      if (!m) return undefined;
      return { pid: m.proc?.child.pid ?? null, command: [...m.command], tty: m.tty, attached: m.clients.size };
    },
    addPod,
    setPodPhase,
    deletePod: (ns, name) => remove(def('', 'pods'), ns, name) !== undefined,
    getPod: (ns, name) => bucket('/pods').get(objKey(ns, name)),
    addSecret,
    addConfigMap,
    addNamespace,
    appendLog,
    activeStreams: () => ({ watches: watchers.size, follows: followers.size, execs: sessions.size }),
    close,
  };
}

/** SIGKILL to the process group of an exec'd command (a pty's session gets SIGHUP from the kernel). */
function killTree(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

function checkCommand(command: string[]): void {
  if (command.length === 0 || command.length > MAX_COMMAND_ARGS || command.some((c) => c.length > MAX_COMMAND_ARG || c.includes('\0'))) {
    throw new HttpError(badRequest(`the command is too long (at most ${MAX_COMMAND_ARGS} arguments of ${MAX_COMMAND_ARG} bytes, no NUL)`));
  }
}

/** A channel-4 resize ({"Width":W,"Height":H}); null when malformed, which is ignored as the kubelet does. */
function parseResize(body: Buffer): Size | null {
  let size: { Width?: unknown; Height?: unknown };
  try {
    size = JSON.parse(body.toString('utf8')) as typeof size;
  } catch {
    return null;
  }
  const width = Number(size?.Width);
  const height = Number(size?.Height);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0 || width > 10_000 || height > 10_000) return null;
  return { width, height };
}

function podConditions(ready: boolean, at: string): Array<Record<string, string>> {
  const status = ready ? 'True' : 'False';
  return [
    { type: 'PodScheduled', status: 'True', lastTransitionTime: at },
    { type: 'Initialized', status: 'True', lastTransitionTime: at },
    { type: 'ContainersReady', status, lastTransitionTime: at },
    { type: 'Ready', status, lastTransitionTime: at },
  ];
}

function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  return code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1);
}

/** The Status the kubelet sends on channel 3 when a command ends. */
function exitStatus(exit: number, command: string[]): Record<string, unknown> {
  if (exit === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${exit}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exit) }] },
  };
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(badRequest(`malformed percent-encoding in the path segment ${JSON.stringify(s.slice(0, 100))}`));
  }
}

function isStringMap(v: unknown): v is Record<string, string> {
  return !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4',
  gitCommit: '59526cd4867447956156ae3a602fcbac10a2c335',
  gitTreeState: 'clean',
  buildDate: '2025-04-22T16:02:27Z',
  goVersion: 'go1.23.6',
  compiler: 'gc',
  platform: 'linux/amd64',
};

const APPS_GROUP = {
  name: 'apps',
  versions: [{ groupVersion: 'apps/v1', version: 'v1' }],
  preferredVersion: { groupVersion: 'apps/v1', version: 'v1' },
};

/**
 * Why the kubectl tests cannot run here (kubectl, script or tmux missing), or null. In CI a
 * missing binary is an error, not a reason to skip.
 */
export function kubeToolsMissing(): string | null {
  return unavailable([KUBECTL, 'script', 'tmux'].filter((b) => !findBinary(path.basename(b)) && !fs.existsSync(b)));
}

export interface PortForwardRun {
  child: ChildProcess;
  /** the local port kubectl listens on */
  local: number;
  stdout(): string;
  stderr(): string;
}

/**
 * `kubectl port-forward TARGET :REMOTE`, left running once it says where it listens (at most
 * 15 s). The caller kills `child`.
 */
export async function startPortForward(kubeconfig: string, home: string, target: string, remote: number, env: Record<string, string> = {}): Promise<PortForwardRun> {
  const child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, 'port-forward', target, `:${remote}`], { env: kubectlEnv(home, env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const listening = new RegExp(`^Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${remote}$`, 'm');
  for (let i = 0; i < 600 && !listening.test(stdout) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 25));
  const local = Number(listening.exec(stdout)?.[1]);
  if (!(local > 0)) {
    child.kill('SIGKILL');
    throw new Error(`kubectl port-forward ${target} :${remote} did not listen; stdout:\n${stdout}\nstderr:\n${stderr}`);
  }
  return { child, local, stdout: () => stdout, stderr: () => stderr };
}
