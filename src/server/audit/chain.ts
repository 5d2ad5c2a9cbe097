// The hash chain: what an entry's hash covers and how it is serialized, so the hash
// computed at append time is the one recomputed from what the database returns.
import { createHash } from 'node:crypto';
import { invalid } from '../../shared/errors.ts';
import type { AuditEntry, NewAuditEntry } from './types.ts';

/** prev_hash of every org's first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** Biggest details object, serialized: an entry records what happened, not the payload. */
const MAX_DETAILS_BYTES = 64 * 1024;
/** Deeper documents than this are refused; PostgreSQL's jsonb parser has a stack limit. */
const MAX_DETAILS_DEPTH = 32;

/**
 * JSON with object keys sorted (by UTF-16 code units, as Array.prototype.sort does), no
 * whitespace. jsonb keeps neither key order nor number spelling (1.0 comes back as 1), so
 * the hash covers this form, computed from the parsed value, never the stored text.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const fields = Object.keys(obj)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
  return `{${fields.join(',')}}`;
}

/** sha256 hex of prevHash + the canonical JSON of the entry's columns. */
export function computeHash(entry: Omit<AuditEntry, 'hash'>): string {
  const body = canonicalJson({
    org_id: entry.orgId,
    seq: entry.seq,
    at: entry.at,
    actor: entry.actor,
    action: entry.action,
    target: entry.target,
    environment_id: entry.environmentId,
    details: entry.details,
  });
  return createHash('sha256').update(entry.prevHash).update(body).digest('hex');
}

/** An entry checked and normalized, waiting for its place in the chain. */
export interface PreparedEntry {
  orgId: string;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  environmentId: string | null;
  details: Record<string, unknown>;
  /** canonicalJson(details): what goes into the jsonb column. */
  detailsJson: string;
}

/**
 * Checks an entry before it joins a batch: entries share one transaction, so one the
 * database would refuse (a NUL character, a lone surrogate) must be refused here, or it
 * would fail every entry batched with it.
 */
export function prepare(entry: NewAuditEntry, at: Date): PreparedEntry {
  for (const field of ['orgId', 'actor', 'action'] as const) {
    const v = entry[field];
    if (typeof v !== 'string' || v === '') throw invalid(`audit entry needs a non-empty ${field}`, field);
  }
  for (const field of ['orgId', 'actor', 'action', 'target', 'environmentId'] as const) {
    const v = entry[field];
    if (typeof v === 'string' && !storable(v)) throw invalid(`audit ${field} contains a NUL character or invalid UTF-16`, field);
  }
  if (Number.isNaN(at.getTime())) throw invalid('the audit clock returned an invalid date');

  let text: string | undefined;
  try {
    text = JSON.stringify(entry.details ?? {});
  } catch (err) {
    throw invalid(`audit details must be JSON-serializable: ${(err as Error).message}`, 'details');
  }
  // JSON round trip: drops undefined, applies toJSON (Dates become strings), NaN becomes null —
  // exactly what the database will hold.
  const details: unknown = text === undefined ? undefined : JSON.parse(text);
  if (typeof details !== 'object' || details === null || Array.isArray(details)) throw invalid('audit details must be a JSON object', 'details');
  checkValue(details, 0);
  const detailsJson = canonicalJson(details);
  if (Buffer.byteLength(detailsJson) > MAX_DETAILS_BYTES) throw invalid(`audit details are larger than ${MAX_DETAILS_BYTES} bytes`, 'details');

  return {
    orgId: entry.orgId,
    at: at.toISOString(),
    actor: entry.actor,
    action: entry.action,
    target: entry.target ?? null,
    environmentId: entry.environmentId ?? null,
    details: details as Record<string, unknown>,
    detailsJson,
  };
}

// PostgreSQL text and jsonb refuse NUL; a lone surrogate becomes U+FFFD on the way in,
// and the stored entry would no longer match its hash.
export const storable = (s: string) => s.isWellFormed() && !s.includes('\0');

function checkValue(value: unknown, depth: number): void {
  if (typeof value === 'string') {
    if (!storable(value)) throw invalid('audit details contain a NUL character or invalid UTF-16', 'details');
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (depth >= MAX_DETAILS_DEPTH) throw invalid(`audit details nest deeper than ${MAX_DETAILS_DEPTH} levels`, 'details');
  if (Array.isArray(value)) {
    for (const v of value) checkValue(v, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    checkValue(k, depth + 1);
    checkValue(v, depth + 1);
  }
}
