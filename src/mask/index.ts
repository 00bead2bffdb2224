// Inline masking, wire-independent: the PostgreSQL, MySQL, SSH, HTTP and MCP adapters use this.
// See README.md in this directory.
export { maskConfigSchema, parseMaskConfig, detectorSettings, isUnmaskedFor, DEFAULT_COLUMN_RULES, DEFAULT_DETECTOR_STRATEGY, STRATEGIES } from './config.ts';
export type { MaskConfig, MaskConfigInput, ColumnRule, CustomDetectorConfig, Strategy } from './config.ts';
export { newCounts, addCount, mergeCounts, countsTotal, hasCounts } from './counts.ts';
export type { Counts } from './counts.ts';
export { DETECTOR_NAMES, PEM_CAP } from './detectors.ts';
export type { Detector, DetectorName } from './detectors.ts';
export { Masker, ERROR_TEXT, partial } from './masker.ts';
export type { ColumnPlan, ColumnPlanEntry, ColumnRef, MaskerOptions } from './masker.ts';
export { StreamMasker } from './stream.ts';
export { JsonStreamMasker, JSON_TOKEN_CAP, JSON_MAX_DEPTH, type JsonStreamOptions } from './json-stream.ts';
