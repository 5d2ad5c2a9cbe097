// Audit rows as the database holds them and as the API shows them.
import { invalid } from '../../shared/errors.ts';
import type { AuditEntryRow, Db } from '../db/index.ts';
import type { AuditEntry, AuditFilter } from './types.ts';

// seq is bigint: a string from pg, a number from PGlite.
export function toEntry(row: AuditEntryRow): AuditEntry {
  return {
    orgId: row.org_id,
    seq: Number(row.seq),
    at: new Date(row.at).toISOString(),
    actor: row.actor,
    action: row.action,
    target: row.target,
    environmentId: row.environment_id,
    details: row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** The org's entries matching the filter; callers add order, keyset and limit. */
export function selectEntries(db: Db, orgId: string, f: AuditFilter) {
  return db
    .selectFrom('audit_entries')
    .selectAll()
    .where('org_id', '=', orgId)
    .$if(f.since !== undefined, (q) => q.where('at', '>=', f.since!))
    .$if(f.until !== undefined, (q) => q.where('at', '<', f.until!))
    .$if(f.actor !== undefined, (q) => q.where('actor', '=', f.actor!))
    .$if(f.action !== undefined, (q) => q.where('action', '=', f.action!))
    .$if(f.environmentId !== undefined, (q) => q.where('environment_id', '=', f.environmentId!));
}

/** Opaque page cursor: the seq of the last entry of the previous page. */
export const encodeCursor = (seq: number): string => Buffer.from(`s${seq}`).toString('base64url');

export function decodeCursor(cursor: string): number {
  const m = /^s([1-9][0-9]{0,15})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw invalid('the cursor is not one this server gave out: pass nextCursor from the previous page', 'cursor');
  return Number(m[1]);
}
