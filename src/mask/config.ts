// A connection's `mask:` section. Example:
//
//   mask:
//     onError: closed              # closed (default): a value the masker fails on is withheld
//     unmaskedGroups: [breakglass] # identities in these groups see unmasked results
//     detectors:                   # omitted → its default strategy; 'off' disables it
//       default: on                # or off (omitted detectors disabled), or a strategy for all
//       email: hash
//       card: { strategy: partial, keep: 4 }
//       ip: off
//     columns:                     # first match wins; column rules beat detectors
//       - { match: "public.customers.email", strategy: hash }   # schema.table.column glob
//       - { name: "*password*", strategy: null }                 # column-name glob
//       - { name: "tokens_used", strategy: scan }                # no rule: detectors scan it
//     defaultColumns: true         # also apply DEFAULT_COLUMN_RULES after `columns`
//     custom:
//       - { name: order_ref, pattern: "ORD-[0-9]{8}", strategy: partial }
//
// Strategies: redact → `[MASKED:<label>]`; partial → `****` + the last N characters (N = keep,
// default 4, never more than a third of the value); hash → `h:` + 16 hex digits of
// HMAC-SHA256(gateway secret, value); null → SQL NULL for a column rule (inside text: redact).
import { z } from 'zod';
import { DETECTOR_NAMES, type DetectorName } from './detectors.ts';

export const STRATEGIES = ['redact', 'partial', 'hash', 'null'] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** Default strategy of each built-in detector (all on). */
export const DEFAULT_DETECTOR_STRATEGY: Readonly<Record<DetectorName, Strategy>> = {
  pem: 'redact',
  gcp: 'redact',
  jwt: 'redact',
  aws: 'redact',
  github: 'redact',
  gitlab: 'redact',
  slack: 'redact',
  stripe: 'redact',
  url_password: 'redact',
  assignment: 'redact',
  email: 'redact',
  phone: 'partial',
  iban: 'partial',
  card: 'partial',
  ssn: 'redact',
  ip: 'hash',
};

export const DEFAULT_KEEP = 4;

// YAML `null` (unquoted) arrives as null: it means the null strategy
const strategy = z.union([z.enum(STRATEGIES), z.null().transform(() => 'null' as const)], {
  error: 'expected redact, partial, hash or null',
});
const keep = z.number().int().min(0).max(64);
const label = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected 1-64 letters, digits, "_", ".", ":" or "-"');

const detectorSetting = z.union(
  [
    z.literal('off'),
    z.literal(false).transform(() => 'off' as const),
    strategy,
    z.strictObject({ strategy, keep: keep.optional() }),
  ],
  { error: 'expected off, redact, partial, hash, null or { strategy, keep }' },
);

const detectorsShape: Record<string, z.ZodOptional<typeof detectorSetting>> = {};
for (const n of DETECTOR_NAMES) detectorsShape[n] = detectorSetting.optional();

const detectorsSchema = z.strictObject({
  /** what omitted detectors do: on (their default strategy), off, or one strategy for all */
  default: z
    .union([z.enum(['on', 'off']), z.boolean().transform((b) => (b ? 'on' : 'off')), strategy])
    .default('on'),
  ...(detectorsShape as { [K in DetectorName]: z.ZodOptional<typeof detectorSetting> }),
});

const columnRule = z
  .strictObject({
    /** `schema.table.column` glob (`*`, `?`); fewer parts are padded with `*.` on the left */
    match: z.string().min(1).optional(),
    /** column-name glob */
    name: z.string().min(1).optional(),
    /** `scan`: no rule for this column, the detectors scan its values */
    strategy: z.union([strategy, z.literal('scan')]).default('redact'),
    keep: keep.optional(),
    /** label of `[MASKED:<label>]`; the column's name when absent */
    label: label.optional(),
  })
  .refine((r) => (r.match === undefined) !== (r.name === undefined), 'set exactly one of match (schema.table.column glob) or name (column-name glob)');

const customDetectorSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, 'expected a lowercase name: letters, digits, "_" (max 32)'),
    /** JavaScript RegExp source, applied line by line */
    pattern: z.string().min(1).max(2000),
    flags: z.string().regex(/^[imsu]*$/, 'expected RegExp flags among i, m, s, u').default(''),
    strategy: strategy.default('redact'),
    keep: keep.optional(),
    /** the longest match; a stream holds back this much of a long line */
    maxLength: z.number().int().min(1).max(8192).default(256),
  })
  .superRefine((c, ctx) => {
    let re: RegExp;
    try {
      re = new RegExp(c.pattern, c.flags);
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: ['pattern'], message: `invalid RegExp: ${(e as Error).message}` });
      return;
    }
    if (re.test('')) ctx.addIssue({ code: 'custom', path: ['pattern'], message: 'the pattern matches the empty string' });
  });

export const maskConfigSchema = z
  .strictObject({
    onError: z.enum(['closed', 'open']).default('closed'),
    unmaskedGroups: z.array(z.string().min(1)).default([]),
    detectors: detectorsSchema.default({ default: 'on' }),
    columns: z.array(columnRule).default([]),
    defaultColumns: z.boolean().default(true),
    custom: z.array(customDetectorSchema).default([]),
  })
  .superRefine((c, ctx) => {
    const seen = new Set<string>(DETECTOR_NAMES);
    seen.add('error');
    c.custom.forEach((d, i) => {
      if (seen.has(d.name)) ctx.addIssue({ code: 'custom', path: ['custom', i, 'name'], message: `duplicate detector name "${d.name}"` });
      seen.add(d.name);
    });
  });

export type MaskConfigInput = z.input<typeof maskConfigSchema>;
export type MaskConfig = z.output<typeof maskConfigSchema>;
export type ColumnRule = MaskConfig['columns'][number];
export type CustomDetectorConfig = MaskConfig['custom'][number];

/** Column-name rules applied after a connection's own (unless `defaultColumns: false`). */
export const DEFAULT_COLUMN_RULES: readonly ColumnRule[] = ['*password*', '*passwd*', '*secret*', '*token*', '*api_key*'].map(
  (name) => ({ name, strategy: 'redact' as const }),
);

/** Parses a `mask:` section (throws zod's error). `parseMaskConfig({})` is the default: everything on. */
export function parseMaskConfig(raw: unknown): MaskConfig {
  return maskConfigSchema.parse(raw ?? {});
}

export interface DetectorSetting {
  strategy: Strategy;
  keep: number;
}

/** The effective setting of each built-in detector; absent = off. */
export function detectorSettings(cfg: MaskConfig): Partial<Record<DetectorName, DetectorSetting>> {
  const out: Partial<Record<DetectorName, DetectorSetting>> = {};
  const dflt = cfg.detectors.default;
  for (const n of DETECTOR_NAMES) {
    const s = cfg.detectors[n];
    if (s === undefined) {
      if (dflt === 'off') continue;
      out[n] = { strategy: dflt === 'on' ? DEFAULT_DETECTOR_STRATEGY[n] : dflt, keep: DEFAULT_KEEP };
    } else if (s === 'off') continue;
    else if (typeof s === 'string') out[n] = { strategy: s, keep: DEFAULT_KEEP };
    else out[n] = { strategy: s.strategy, keep: s.keep ?? DEFAULT_KEEP };
  }
  return out;
}

/** Whether any of an identity's groups sees this connection's results unmasked. */
export function isUnmaskedFor(cfg: Pick<MaskConfig, 'unmaskedGroups'>, groups: readonly string[]): boolean {
  if (cfg.unmaskedGroups.length === 0) return false;
  for (const g of groups) if (cfg.unmaskedGroups.includes(g)) return true;
  return false;
}
