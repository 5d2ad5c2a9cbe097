// The loop that fires due schedules. Every replica runs it; a slot is fired once because its
// `schedule_firings (schedule_id, slot)` row is written first, in the same transaction that
// moves the schedule's next slot on only if no one else has (the primary key and that check
// decide between replicas). Then it acts (a task, or an environment stopped or started) and
// writes what came of it on the firing. After downtime the latest missed slot fires once and
// says how many it stands for. The clock is passed in: tests move it across a DST change.
import type { Logger } from 'pino';
import { BerthError } from '../../../shared/errors.ts';
import type { AuditLog } from '../../audit/index.ts';
import { atLeast, type Scope } from '../../authz.ts';
import { isUniqueViolation, type Db, type Role } from '../../db/index.ts';
import type { EnvironmentService } from '../../environments/service.ts';
import type { TriggeredTasks } from '../tasks.ts';
import { dueSlot, ruleOf } from './rule.ts';
import { LATE_AFTER_MS, type ScheduleRow } from './service.ts';

/** How often due schedules are looked for; a slot fires within about this long of its time. */
const TICK_MS = 1000;
/** The outcome of a firing claimed but not yet acted on; one still so after this long is acted on again (acting twice is harmless). */
const PENDING = 'pending';
const PENDING_RETRY_MS = 60_000;
/** Schedules fired per look: more wait a second. */
const BATCH = 100;

class SlotTaken extends Error {}

interface Firing {
  row: ScheduleRow;
  slot: Date;
  /** Earlier slots this one stands for (missed while no control plane was running). */
  missed: number;
  late: boolean;
}

export class ScheduleFirer {
  readonly #db: Db;
  readonly #logger: Logger;
  readonly #audit: AuditLog;
  readonly #triggered: TriggeredTasks;
  readonly #environments: EnvironmentService;
  readonly #now: () => Date;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(o: { db: Db; logger: Logger; audit: AuditLog; triggered: TriggeredTasks; environments: EnvironmentService; now: () => Date }) {
    this.#db = o.db;
    this.#logger = o.logger;
    this.#audit = o.audit;
    this.#triggered = o.triggered;
    this.#environments = o.environments;
    this.#now = o.now;
  }

  start(): void {
    const loop = () => {
      if (this.#closed) return;
      void this.tick()
        .catch((err: unknown) => this.#logger.warn({ err }, 'schedules: looking for due schedules failed; trying again'))
        .finally(() => {
          if (!this.#closed) this.#timer = setTimeout(loop, TICK_MS).unref();
        });
    };
    loop();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#running?.catch(() => {});
  }

  /** Fires every schedule due by the clock, and acts again on firings left pending by a crash; one look at a time. */
  async tick(): Promise<void> {
    while (this.#running) await this.#running.catch(() => {});
    this.#running = this.#look();
    try {
      await this.#running;
    } finally {
      this.#running = undefined;
    }
  }

  async #look(): Promise<void> {
    const now = this.#now();
    const due = await this.#db
      .selectFrom('schedules')
      .selectAll()
      .where('deleted_at', 'is', null)
      .where('paused', '=', false)
      .where('next_at', '<=', now)
      .orderBy('next_at')
      .limit(BATCH)
      .execute();
    const claimed: Firing[] = [];
    for (const row of due) {
      const firing = await this.#claim(row, now).catch((err: unknown) => {
        this.#logger.warn({ err, schedule: row.id }, 'schedules: could not claim a due slot; trying again');
        return undefined;
      });
      if (firing) claimed.push(firing);
    }
    await Promise.all([...claimed, ...(await this.#stale(now))].map((f) => this.#act(f)));
  }

  /** Writes the firing and moves the schedule on, unless another replica got there first. */
  async #claim(row: ScheduleRow, now: Date): Promise<Firing | undefined> {
    const due = dueSlot(ruleOf(row.cron, row.timezone), new Date(row.next_at!), now);
    if (!due) return undefined;
    try {
      await this.#db.transaction().execute(async (tx) => {
        const inserted = await tx
          .insertInto('schedule_firings')
          .values({ schedule_id: row.id, slot: due.slot, fired_at: now, outcome: PENDING })
          .onConflict((oc) => oc.columns(['schedule_id', 'slot']).doNothing())
          .returning('slot')
          .executeTakeFirst();
        if (!inserted) throw new SlotTaken();
        const moved = await tx
          .updateTable('schedules')
          .set({ next_at: due.next, last_slot: due.slot })
          .where('id', '=', row.id)
          .where('next_at', '=', row.next_at)
          .where('paused', '=', false)
          .where('deleted_at', 'is', null)
          .executeTakeFirst();
        // Paused, removed, or moved on by another replica since it was read: not ours to fire.
        if (moved.numUpdatedRows !== 1n) throw new SlotTaken();
      });
    } catch (err) {
      if (err instanceof SlotTaken || isUniqueViolation(err)) return undefined;
      throw err;
    }
    return { row, slot: due.slot, missed: due.missed, late: due.missed > 0 || now.getTime() - due.slot.getTime() > LATE_AFTER_MS };
  }

  /** Firings claimed long ago and never acted on (a replica stopped in between). */
  async #stale(now: Date): Promise<Firing[]> {
    const rows = await this.#db
      .selectFrom('schedule_firings')
      .innerJoin('schedules', 'schedules.id', 'schedule_firings.schedule_id')
      .selectAll('schedules')
      .select(['schedule_firings.slot as firing_slot'])
      .where('schedule_firings.outcome', '=', PENDING)
      .where('schedule_firings.fired_at', '<', new Date(now.getTime() - PENDING_RETRY_MS))
      .where('schedules.deleted_at', 'is', null)
      .limit(BATCH)
      .execute();
    return rows.map(({ firing_slot, ...row }) => ({ row, slot: new Date(firing_slot), missed: 0, late: true }));
  }

  async #act(f: Firing): Promise<void> {
    const { row, slot } = f;
    const source = { schedule: row.id, slot: slot.toISOString(), late: f.late, ...(f.missed ? { missedSlots: f.missed } : {}) };
    let outcome: string;
    let taskId: string | null = null;
    try {
      const creator = await this.#creator(row);
      if (row.kind === 'task') {
        taskId = await this.#startTask(row, slot, creator, source);
        outcome = `task ${taskId} queued`;
      } else {
        outcome = await this.#environment(row, creator, source);
      }
      if (f.missed) outcome += ` (late: stands for ${f.missed} earlier slot${f.missed === 1 ? '' : 's'} missed while no control plane ran)`;
      else if (f.late) outcome += ' (late)';
    } catch (err) {
      const reason = err instanceof BerthError ? err.message : 'an internal error (see the server log)';
      if (!(err instanceof BerthError)) this.#logger.error({ err, schedule: row.id }, 'schedules: a firing failed');
      outcome = `failed: ${reason}`;
      await this.#triggered.refused(row.org_id, `schedule:${row.id}`, reason, source).catch((e: unknown) => this.#logger.error({ err: e }, 'schedules: could not record a failed firing in the audit log'));
    }
    await this.#db
      .updateTable('schedule_firings')
      .set({ outcome, task_id: taskId })
      .where('schedule_id', '=', row.id)
      .where('slot', '=', slot)
      .execute()
      .catch((err: unknown) => this.#logger.error({ err, schedule: row.id }, 'schedules: could not record what a firing did'));
  }

  async #startTask(row: ScheduleRow, slot: Date, creator: Creator, source: Record<string, unknown>): Promise<string> {
    const project = await this.#db.selectFrom('projects').selectAll().where('id', '=', row.project_id!).executeTakeFirst();
    if (!project || project.archived_at) throw new BerthError('conflict', `its project was removed: remove the schedule (\`berth schedule rm ${row.id}\`) or make a new one on a live project`);
    if (!atLeast(creator.role, 'member')) throw new BerthError('forbidden', `its creator ${row.created_by} is now a ${creator.role}, who may not start tasks`);
    const { goal, ...task } = (row.task ?? {}) as { goal: string } & Record<string, unknown>;
    const started = await this.#triggered.start({
      project,
      goal,
      trigger: 'schedule',
      triggeredBy: `schedule:${row.id}`,
      key: `schedule:${row.id}@${slot.toISOString()}`,
      actor: `schedule:${row.id}`,
      ownerId: row.owner_id,
      task,
      source,
    });
    return started.id;
  }

  async #environment(row: ScheduleRow, creator: Creator, source: Record<string, unknown>): Promise<string> {
    const org = await this.#db.selectFrom('orgs').select('name').where('id', '=', row.org_id).executeTakeFirstOrThrow();
    // The creator's rights as they are now: one who lost the environment (or the org) stops the schedule working.
    const scope: Scope = {
      orgId: row.org_id,
      orgName: org.name,
      role: creator.role,
      actor: `schedule:${row.id}`,
      caller: { tokenId: creator.userId ? `schedule:${row.id}` : row.owner_id!, kind: 'org', userId: creator.userId, orgId: row.org_id, role: creator.role, instanceAdmin: false },
    };
    const env =
      row.action === 'stop'
        ? await this.#environments.stop(scope, row.environment_id!, `stopped by schedule ${row.id}`)
        : await this.#environments.start(scope, row.environment_id!);
    await this.#audit.append({ orgId: row.org_id, actor: scope.actor, action: `environment.${row.action}`, target: env.id, environmentId: env.id, details: { trigger: 'schedule', ...source } });
    return `environment ${env.state === 'running' ? 'started' : env.state}`;
  }

  /** Whom the schedule acts as, and with which role now: its creator, a member of the org (or a token of it) still. */
  async #creator(row: ScheduleRow): Promise<Creator> {
    const gone = new BerthError('forbidden', `its creator ${row.created_by} is no longer in the org: an admin can remove it (\`berth schedule rm ${row.id}\`)`);
    if (!row.owner_id) throw gone;
    const member = await this.#db.selectFrom('memberships').select('role').where('org_id', '=', row.org_id).where('user_id', '=', row.owner_id).executeTakeFirst();
    if (member) return { userId: row.owner_id, role: member.role };
    const token = await this.#db.selectFrom('tokens').select(['role', 'org_id', 'revoked_at', 'expires_at']).where('id', '=', row.owner_id).executeTakeFirst();
    const live = token && token.org_id === row.org_id && token.role && !token.revoked_at && (!token.expires_at || new Date(token.expires_at) > this.#now());
    if (live) return { userId: null, role: token.role! };
    throw gone;
  }
}

interface Creator {
  userId: string | null;
  role: Role;
}
