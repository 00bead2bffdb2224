// The YAML config, validated with zod. Every field a user can get wrong has a message
// that says what is expected.
import { z } from 'zod';
import type { Policy } from '../guard/policy-schema.ts';
import { maskConfigSchema } from '../mask/config.ts';

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected HOST:PORT, e.g. 127.0.0.1:15432');

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'expected 1-63 letters, digits, "_", "." or "-"');

export const postgresConnection = z.strictObject({
  name,
  type: z.literal('postgres'),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(5432),
  database: z.string().min(1),
  user: z.string().min(1),
  password: z.string().optional(),
  tls: z.enum(['disable', 'prefer', 'require', 'verify-full']).default('prefer'),
  /** PEM CA bundle (or file:/env: ref) for verify-full; the system store when absent */
  ca: z.string().optional(),
  /** what a reviewer sees of a held statement: nothing, its EXPLAIN plan, or also a rolled-back dry run */
  preview: z.enum(['none', 'explain', 'dryRun']).default('none'),
  /** masking of results, errors and notifications; absent: off (see docs/masking.md) */
  mask: maskConfigSchema.optional(),
});

export const mysqlConnection = z.strictObject({
  name,
  type: z.literal('mysql'),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(3306),
  database: z.string().min(1),
  user: z.string().min(1),
  password: z.string().optional(),
  tls: z.enum(['disable', 'prefer', 'require', 'verify-full']).default('prefer'),
  /** PEM CA bundle (or file:/env: ref) for verify-full; the system store when absent */
  ca: z.string().optional(),
  /** masking of results (not applied by the MySQL adapter yet) */
  mask: maskConfigSchema.optional(),
});

/** `SHA256:` + unpadded base64, as `ssh-keygen -lf` and the OpenSSH client print it */
const sshFingerprint = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'expected a SHA256 fingerprint as `ssh-keygen -lf KEY.pub` prints it, e.g. SHA256:uN8…');

export const sshConnection = z
  .strictObject({
    name,
    type: z.literal('ssh'),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string().min(1),
    /** OpenSSH or PEM private key (usually file:PATH); or password */
    privateKey: z.string().optional(),
    /** passphrase of an encrypted privateKey */
    passphrase: z.string().optional(),
    password: z.string().optional(),
    /** the target's host-key fingerprint; a different key refuses the session */
    hostKey: sshFingerprint,
    /** seconds to reach and log in to the target */
    connectTimeoutSeconds: z.number().min(1).max(300).default(15),
    /** masking of exec output to the client and in the journal (see docs/masking.md) */
    mask: maskConfigSchema.optional(),
    /** false: interactive shells are refused, only exec runs (e.g. for agents); see docs/ssh.md */
    shell: z.boolean().default(true),
  })
  .refine((c) => c.privateKey !== undefined || c.password !== undefined, { message: 'set privateKey or password: the gateway logs in to the target with them', path: ['privateKey'] });

/** How the gateway authenticates to an HTTP upstream; each value may be a file:/env: ref. */
const httpAuth = z.union([
  z.strictObject({ bearer: z.string().min(1) }),
  z.strictObject({ basic: z.strictObject({ user: z.string().min(1), password: z.string() }) }),
  z.strictObject({ header: z.strictObject({ name: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/, 'expected an HTTP header name'), value: z.string() }) }),
]);

/** What every HTTP-like connection has: the upstream, the injected credentials, TLS to it, masking. */
const httpCommon = {
  name,
  /** upstream base URL, e.g. https://api.internal:8443/v1 */
  url: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//.test(u), 'expected an http:// or https:// URL'),
  /** credentials injected into every request; the client's own are stripped */
  auth: httpAuth.optional(),
  /** PEM CA bundle (or file:/env: ref) the upstream's certificate is verified against */
  ca: z.string().optional(),
  /** a client certificate presented to the upstream (mTLS); PEM or file:/env: refs */
  clientCert: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
  /**
   * Host names (as the client sends them in Host / SNI, without port) that reach this connection
   * at the root path, besides /c/<name>/; e.g. billing.gatehouse.internal.
   */
  hosts: z.array(z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'expected a DNS host name')).optional(),
  /** masking of response bodies to the client and of the journal's samples (see docs/masking.md) */
  mask: maskConfigSchema.optional(),
};

export const httpConnection = z.strictObject({ ...httpCommon, type: z.literal('http') });

export const kubernetesConnection = z.strictObject({
  ...httpCommon,
  type: z.literal('kubernetes'),
  /** send Impersonate-User/-Group for the caller, so the cluster's RBAC and audit see who it is */
  impersonate: z.boolean().default(false),
});

export const llmConnection = z.strictObject({
  ...httpCommon,
  type: z.literal('llm'),
  /** model globs a request may name; omitted: any */
  models: z.array(z.string().min(1)).min(1).optional(),
  /** largest max_tokens a request may ask for; a request without one gets this as its limit */
  maxTokensPerRequest: z.number().int().min(1).optional(),
  /** tokens (prompt + completion, as the upstream reports them) per identity per UTC day */
  maxTokensPerDay: z.number().int().min(1).optional(),
  /** mask prompts with the connection's `mask` rules before they reach the model */
  maskPrompts: z.boolean().default(true),
  /** largest request body the gateway reads to inspect (prompts are checked whole) */
  maxRequestBytes: z.number().int().min(1024).max(64 << 20).default(4 << 20),
});

export const configSchema = z.strictObject({
  dataDir: z.string().default('.gatehouse'),
  store: z
    .string()
    .default('sqlite')
    .refine((s) => s === 'sqlite' || /^postgres(ql)?:\/\//.test(s), 'expected "sqlite" or a postgres:// URL'),
  listen: z
    .strictObject({
      api: hostPort.optional(),
      postgres: hostPort.optional(),
      mysql: hostPort.optional(),
      ssh: hostPort.optional(),
      http: hostPort.optional(),
    })
    .default({ api: '127.0.0.1:18080', postgres: '127.0.0.1:15432' }),
  tls: z
    .strictObject({
      cert: z.string().optional(),
      key: z.string().optional(),
      /** allow clients to connect without TLS (cleartext password auth is still refused) */
      allowPlaintext: z.boolean().default(false),
    })
    .default({ allowPlaintext: false }),
  postgres: z
    .strictObject({
      /** how clients prove their key: SCRAM (the key never crosses the wire) or cleartext over TLS */
      clientAuth: z.enum(['scram-sha-256', 'password']).default('scram-sha-256'),
    })
    .default({ clientAuth: 'scram-sha-256' }),
  journal: z
    .strictObject({
      fsync: z.boolean().default(false),
      checkpointEvery: z.number().int().min(1).default(1000),
      checkpointIntervalSeconds: z.number().min(0.1).default(10),
      /** first result rows kept in each result event */
      resultRows: z.number().int().min(0).max(1000).default(10),
      /** bytes of one recorded value (a parameter, a cell) before it is cut */
      maxValueBytes: z.number().int().min(16).max(1 << 20).default(1024),
    })
    .default({ fsync: false, checkpointEvery: 1000, checkpointIntervalSeconds: 10, resultRows: 10, maxValueBytes: 1024 }),
  limits: z
    .strictObject({
      maxClientConnections: z.number().int().min(1).default(1000),
      /** largest single protocol message a client may send */
      maxMessageBytes: z.number().int().min(1024).max(1 << 30).default(64 << 20),
      authTimeoutSeconds: z.number().min(1).default(15),
    })
    .default({ maxClientConnections: 1000, maxMessageBytes: 64 << 20, authTimeoutSeconds: 15 }),
  /** guard rules; validated by loadPolicy (guard/policy-schema.ts), which also reads includes */
  policy: z.unknown().optional(),
  /** key of the `hash` masking strategy (HMAC-SHA256); generated into dataDir when absent */
  maskSecret: z.string().min(1).optional(),
  /** base URL of the console/API, used in approval links */
  publicUrl: z.string().url().optional(),
  notify: z
    .strictObject({
      /** receives review.requested events, HMAC-SHA256 signed with `secret` */
      webhook: z.string().url(),
      secret: z.string().min(1),
    })
    .optional(),
  connections: z.array(z.discriminatedUnion('type', [postgresConnection, mysqlConnection, sshConnection, httpConnection, kubernetesConnection, llmConnection])).default([]),
});

export type RawConfig = z.input<typeof configSchema>;
export type Config = Omit<z.output<typeof configSchema>, 'policy'> & { configDir: string; policy: Policy };
export type PostgresConnection = z.output<typeof postgresConnection>;
export type MysqlConnection = z.output<typeof mysqlConnection>;
export type SshConnection = z.output<typeof sshConnection>;
/** Every connection served by the HTTP listener. */
export type HttpConnection = z.output<typeof httpConnection> | z.output<typeof kubernetesConnection> | z.output<typeof llmConnection>;
export type KubernetesConnection = z.output<typeof kubernetesConnection>;
export type LlmConnection = z.output<typeof llmConnection>;
export type Connection = PostgresConnection | MysqlConnection | SshConnection | HttpConnection;

/** Connections served by the HTTP listener: plain HTTP, Kubernetes and LLM endpoints. */
export function isHttpConnection(c: Connection): c is HttpConnection {
  return c.type === 'http' || c.type === 'kubernetes' || c.type === 'llm';
}
