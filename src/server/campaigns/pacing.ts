// A campaign's forge rate, kept in the database: campaigns.next_start_at is when its next call
// to a forge may be made. Starts of tasks on hosted repositories, approvals and reads of change
// requests each take a turn there, on whichever replica they run, so that together they stay
// within the rate.
import { sql } from 'kysely';
import { parseRate } from '../../shared/api-campaigns.ts';
import type { CampaignRow, Db } from '../db/index.ts';

/** Milliseconds between two calls at the campaign's rate. */
export function forgeGap(c: Pick<CampaignRow, 'settings'>): number {
  return 1000 / (parseRate(c.settings.forgeRate) ?? 1);
}

/** Takes the campaign's next turn; resolves to how long to wait for it (0: now). */
export async function forgeTurn(db: Db, c: Pick<CampaignRow, 'id' | 'settings'>, now: Date): Promise<number> {
  const next = await take(db, c, now, false);
  return next ? Math.max(0, next.getTime() - forgeGap(c) - now.getTime()) : 0;
}

/** Takes the campaign's turn if it is due now: null when taken, else when it will be. */
export async function forgeTurnIfDue(db: Db, c: Pick<CampaignRow, 'id' | 'settings'>, now: Date): Promise<Date | null> {
  if (await take(db, c, now, true)) return null;
  const row = await db.selectFrom('campaigns').select('next_start_at').where('id', '=', c.id).executeTakeFirst();
  return row?.next_start_at ?? now;
}

async function take(db: Db, c: Pick<CampaignRow, 'id' | 'settings'>, now: Date, onlyIfDue: boolean): Promise<Date | null> {
  let q = db
    .updateTable('campaigns')
    .set({ next_start_at: sql<Date>`greatest(coalesce(next_start_at, ${now}::timestamptz), ${now}::timestamptz) + ${forgeGap(c)}::double precision * interval '1 millisecond'` })
    .where('id', '=', c.id);
  if (onlyIfDue) q = q.where((eb) => eb.or([eb('next_start_at', 'is', null), eb('next_start_at', '<=', now)]));
  const row = await q.returning('next_start_at').executeTakeFirst();
  return row?.next_start_at ?? null;
}
