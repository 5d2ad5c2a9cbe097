// Keyset paging over (created_at desc, id desc), the order of the org lists (tasks,
// environments). The cursor carries the last row's created_at at the database's own
// precision (microseconds): a JavaScript Date keeps milliseconds only, and a cursor made
// from one skipped the rows created later in the same millisecond as the last one shown.
import { sql, type RawBuilder } from 'kysely';
import { invalid } from '../../shared/errors.ts';

/** Selects `<table>.created_at` as text with microseconds, as `page_key`, for `nextCursor`. */
export const pageKey = (table: 'tasks' | 'environments') =>
  sql<string>`to_char(${sql.ref(`${table}.created_at`)} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`.as('page_key');

/** The opaque cursor for the page after the row with this key and id. */
export const encodePageCursor = (key: string, id: string) => Buffer.from(JSON.stringify([key, id])).toString('base64url');

const KEY = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

/** The rows after the cursor's; a cursor this server did not give out is refused (400). */
export function afterPageCursor(table: 'tasks' | 'environments', cursor: string): RawBuilder<boolean> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    v = undefined;
  }
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string' || typeof v[1] !== 'string' || !KEY.test(v[0]) || Number.isNaN(Date.parse(v[0]))) {
    throw invalid('cursor is not one this server gave out: pass the nextCursor of the previous page', 'cursor');
  }
  return sql<boolean>`(${sql.ref(`${table}.created_at`)}, ${sql.ref(`${table}.id`)}) < (${v[0]}::timestamptz, ${v[1]})`;
}
