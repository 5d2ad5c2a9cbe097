// Projects' prebuild schedules (settings.prebuild.schedule, a cron rule): the latest slot at or
// before now queues one prebuild, once across replicas: the project's row is locked while the
// schedule's prebuilds since that slot are counted, and a row is written only when there is none.
// A slot before the schedule was set is not made up; after downtime the latest missed one fires once.
import type { Logger } from 'pino';
import { sql } from 'kysely';
import { newId } from '../../shared/ids.ts';
import type { Db } from '../db/index.ts';
import { ruleOf } from '../triggers/schedules/rule.ts';
import type { PrebuildService } from './service.ts';
import { prebuildSettingsOf } from './settings.ts';

interface Deps {
  db: Db;
  prebuilds: PrebuildService;
  logger: Logger;
  now: () => Date;
}

export class ScheduledPrebuilds {
  readonly #d: Deps;

  constructor(d: Deps) {
    this.#d = d;
  }

  /** Queues the due ones; returns the projects it queued for. */
  async fire(): Promise<string[]> {
    const { db, logger } = this.#d;
    const now = this.#d.now();
    const projects = await db.selectFrom('projects').select(['id', 'org_id', 'default_branch', 'settings']).where('archived_at', 'is', null).where(sql<boolean>`settings->'prebuild'->>'schedule' is not null`).execute();
    const fired: string[] = [];
    for (const p of projects) {
      const s = prebuildSettingsOf(p.settings);
      let slot: Date | null;
      try {
        slot = ruleOf(s.schedule!, s.timezone).latest(now);
      } catch (err) {
        logger.warn({ err, project: p.id }, 'prebuilds: a project schedule cannot be read');
        continue;
      }
      if (!slot || (s.since && slot < s.since)) continue;
      const queued = await db.transaction().execute(async (tx) => {
        await sql`select id from projects where id = ${p.id} for update`.execute(tx);
        const had = await tx.selectFrom('prebuilds').select('id').where('project_id', '=', p.id).where('trigger', '=', 'schedule').where('created_at', '>=', slot).executeTakeFirst();
        if (had) return false;
        // Stamped with the clock the slot was read by: the next look compares the two.
        await tx.insertInto('prebuilds').values({ id: newId('pbd'), org_id: p.org_id, project_id: p.id, state: 'queued', trigger: 'schedule', branch: p.default_branch, created_by: 'schedule', log: JSON.stringify([]), created_at: now }).execute();
        return true;
      });
      if (queued) fired.push(p.id);
    }
    return fired;
  }
}
