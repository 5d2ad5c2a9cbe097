// Package caches: per-project directories the runner keeps outside any one environment and
// mounts into each environment of the project, so an install reuses what an earlier task of
// the same project downloaded. The kinds the API, the CLI and the runner agree on.

export const CACHE_KINDS = ['npm', 'pip', 'cargo', 'go', 'apt'] as const;
export type CacheKind = (typeof CACHE_KINDS)[number];

export const isCacheKind = (name: string): name is CacheKind => (CACHE_KINDS as readonly string[]).includes(name);
