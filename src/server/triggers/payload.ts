// What a webhook sent, made storable. PostgreSQL's jsonb refuses NUL and unpaired surrogates,
// and a sender may put either in any string (a Slack message, an issue title): left as they
// are, the insert fails and the sender gets a 500. Every delivery is cleaned on its way to
// the database (deliveries.ts); sources that can say "this is not what the service sends"
// refuse such a payload earlier (holdsNul).

import { invalid } from '../../shared/errors.ts';

/** Deeper than any event a service sends: refused rather than walked. */
export const MAX_PAYLOAD_DEPTH = 64;

const text = (s: string) => s.toWellFormed().replaceAll('\u0000', '\uFFFD');

/** `v` with NUL and unpaired surrogates replaced by U+FFFD, keys too; past MAX_PAYLOAD_DEPTH, a 400 (`invalid`). */
export function storable(v: unknown, depth = 0): unknown {
  if (depth > MAX_PAYLOAD_DEPTH) throw invalid(`the payload is nested more than ${MAX_PAYLOAD_DEPTH} levels deep`);
  if (typeof v === 'string') return text(v);
  if (Array.isArray(v)) return v.map((x) => storable(x, depth + 1));
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [text(k), storable(x, depth + 1)]));
  return v;
}

/** Whether a string or key anywhere in `v` holds NUL, or `v` is deeper than MAX_PAYLOAD_DEPTH. */
export function holdsNul(v: unknown, depth = 0): boolean {
  if (typeof v === 'string') return v.includes('\u0000');
  if (v === null || typeof v !== 'object') return false;
  if (depth > MAX_PAYLOAD_DEPTH) return true;
  return Object.entries(v).some(([k, x]) => k.includes('\u0000') || holdsNul(x, depth + 1));
}
