// Schedules as the API sees them: made, listed, paused, resumed and removed within one org.
// Who may: a task schedule needs task.create and a live project; an environment schedule needs
// environment.write and the environment must be the caller's own (or the caller an admin),
// as for removing or sharing it (ownership.ts). A schedule acts as its creator, so only its
// creator or an admin may pause, resume or remove it.
import type { Selectable } from 'kysely';
import type { CreateScheduleBody, ListSchedulesQuery, Schedule, ScheduleDetail, ScheduleFiring } from '../../../shared/api-schedules.ts';
import { invalid, notFound } from '../../../shared/errors.ts';
import { isEnvironmentId, newId } from '../../../shared/ids.ts';
import { atLeast, forbidden, PERMISSIONS, type Scope } from '../../authz.ts';
import type { Db } from '../../db/index.ts';
import type { ScheduleTable } from '../../db/schema.ts';
import { assertEnvironmentAccess, ownerIdOf } from '../../ownership.ts';
import { liveProject } from '../../projects.ts';
import { ruleOf } from './rule.ts';

export type ScheduleRow = Selectable<ScheduleTable>;
type FiringRow = { slot: Date; fired_at: Date; outcome: string; task_id: string | null };

/** A firing this long after its slot is late (the control plane was down or busy). */
export const LATE_AFTER_MS = 60_000;
const SHOWN_FIRINGS = 10;

export class ScheduleService {
  readonly #db: Db;
  readonly #now: () => Date;

  constructor(o: { db: Db; now: () => Date }) {
    this.#db = o.db;
    this.#now = o.now;
  }

  async create(scope: Scope, body: CreateScheduleBody): Promise<Schedule> {
    const rule = ruleOf(body.cron, body.timezone);
    const common = {
      id: newId('sch'),
      org_id: scope.orgId,
      name: body.name ?? null,
      cron: rule.cron,
      timezone: rule.timezone,
      created_by: scope.actor,
      owner_id: ownerIdOf(scope),
      next_at: rule.next(this.#now()),
    };
    if (body.kind === 'task') {
      const project = await liveProject(this.#db, scope.orgId, body.project);
      if (!project.repo_url) throw invalid(`project '${project.name}' has no repository: give it one with \`berth project create ${project.name} --repo URL\``, 'body.project');
      const { kind: _kind, cron: _cron, timezone: _tz, name: _name, project: _project, ...task } = body;
      await this.#db.insertInto('schedules').values({ ...common, kind: 'task', project_id: project.id, task: JSON.stringify(task) }).execute();
    } else {
      const need = PERMISSIONS['environment.write'];
      if (!atLeast(scope.role, need)) throw forbidden(`your role in org '${scope.orgName}' is ${scope.role}; this needs ${need} or above (environment.write)`);
      const env = await this.#environment(scope.orgId, body.environment);
      // Stopping and starting it on a timetable is the owner's call, as removing it is.
      await assertEnvironmentAccess(this.#db, scope, env, 'owner');
      await this.#db.insertInto('schedules').values({ ...common, kind: 'environment', environment_id: env.id, action: body.action }).execute();
    }
    return this.show(scope, common.id);
  }

  async list(scope: Scope, query: ListSchedulesQuery): Promise<{ items: Schedule[] }> {
    let q = this.#db.selectFrom('schedules').selectAll().where('org_id', '=', scope.orgId).where('deleted_at', 'is', null);
    if (query.kind) q = q.where('kind', '=', query.kind);
    if (query.environment) q = q.where('environment_id', '=', (await this.#environment(scope.orgId, query.environment)).id);
    if (query.project) q = q.where('project_id', '=', (await liveProject(this.#db, scope.orgId, query.project)).id);
    const rows = await q.orderBy('created_at').orderBy('id').execute();
    return { items: await this.#views(rows) };
  }

  async show(scope: Scope, id: string): Promise<ScheduleDetail> {
    const row = await this.#get(scope.orgId, id);
    const [view] = await this.#views([row]);
    const firings = await this.#db
      .selectFrom('schedule_firings')
      .select(['slot', 'fired_at', 'outcome', 'task_id'])
      .where('schedule_id', '=', row.id)
      .orderBy('slot', 'desc')
      .limit(SHOWN_FIRINGS)
      .execute();
    const upcoming = ruleOf(row.cron, row.timezone).upcoming(3, this.#now());
    return { ...view!, upcoming: upcoming.map((d) => d.toISOString()), firings: firings.map(firingView) };
  }

  async pause(scope: Scope, id: string): Promise<ScheduleDetail> {
    const row = await this.#mine(scope, id);
    await this.#db.updateTable('schedules').set({ paused: true, next_at: null }).where('id', '=', row.id).execute();
    return this.show(scope, id);
  }

  /** Slots that passed while paused are not fired: it goes on from the next one. */
  async resume(scope: Scope, id: string): Promise<ScheduleDetail> {
    const row = await this.#mine(scope, id);
    if (row.paused) {
      const next = ruleOf(row.cron, row.timezone).next(this.#now());
      await this.#db.updateTable('schedules').set({ paused: false, next_at: next }).where('id', '=', row.id).where('paused', '=', true).execute();
    }
    return this.show(scope, id);
  }

  async remove(scope: Scope, id: string): Promise<void> {
    const row = await this.#mine(scope, id);
    await this.#db.updateTable('schedules').set({ deleted_at: this.#now(), next_at: null }).where('id', '=', row.id).execute();
  }

  async #get(orgId: string, id: string): Promise<ScheduleRow> {
    const row = await this.#db.selectFrom('schedules').selectAll().where('org_id', '=', orgId).where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst();
    if (!row) throw notFound(`no schedule '${id}': \`berth schedule list\` shows them`);
    return row;
  }

  /** The schedule, if the caller made it or is an admin: it acts as its creator. */
  async #mine(scope: Scope, id: string): Promise<ScheduleRow> {
    const row = await this.#get(scope.orgId, id);
    if (atLeast(scope.role, 'admin') || (row.owner_id !== null && row.owner_id === ownerIdOf(scope))) return row;
    throw forbidden(`schedule ${row.id} was made by ${row.created_by} and acts as them: only they or an admin may pause, resume or remove it`);
  }

  async #environment(orgId: string, ref: string) {
    const row = await this.#db
      .selectFrom('environments')
      .select(['id', 'name', 'owner_id', 'task_id'])
      .where('org_id', '=', orgId)
      .where('state', '<>', 'deleted')
      .where(isEnvironmentId(ref) ? 'id' : 'name', '=', ref)
      .executeTakeFirst();
    if (!row) throw notFound(`no environment '${ref}': \`berth env list\` shows the ones you have`);
    return row;
  }

  /** Rows as the API shows them, with names and each one's latest firing: three queries for a page. */
  async #views(rows: ScheduleRow[]): Promise<Schedule[]> {
    if (!rows.length) return [];
    const ids = rows.map((r) => r.id);
    const projectIds = rows.map((r) => r.project_id).filter((x): x is string => x !== null);
    const envIds = rows.map((r) => r.environment_id).filter((x): x is string => x !== null);
    const [projects, envs, lasts] = await Promise.all([
      projectIds.length ? this.#db.selectFrom('projects').select(['id', 'name']).where('id', 'in', projectIds).execute() : [],
      envIds.length ? this.#db.selectFrom('environments').select(['id', 'name']).where('id', 'in', envIds).execute() : [],
      this.#db
        .selectFrom('schedule_firings')
        .select(['schedule_id', 'slot', 'fired_at', 'outcome', 'task_id'])
        .distinctOn('schedule_id')
        .where('schedule_id', 'in', ids)
        .orderBy('schedule_id')
        .orderBy('slot', 'desc')
        .execute(),
    ]);
    const projectName = new Map(projects.map((p) => [p.id, p.name]));
    const envName = new Map(envs.map((e) => [e.id, e.name]));
    const last = new Map(lasts.map((f) => [f.schedule_id, f]));
    return rows.map((r) => {
      const task = r.task as (Record<string, unknown> & { goal?: string }) | null;
      const { goal, ...rest } = task ?? {};
      const f = last.get(r.id);
      return {
        id: r.id,
        name: r.name,
        kind: r.kind,
        cron: r.cron,
        timezone: r.timezone,
        paused: r.paused,
        project: r.project_id ? (projectName.get(r.project_id) ?? r.project_id) : null,
        goal: typeof goal === 'string' ? goal : null,
        task: task ? rest : null,
        environmentId: r.environment_id,
        environment: r.environment_id ? (envName.get(r.environment_id) ?? null) : null,
        action: r.action,
        createdBy: r.created_by,
        ownerId: r.owner_id,
        createdAt: new Date(r.created_at).toISOString(),
        nextAt: r.next_at ? new Date(r.next_at).toISOString() : null,
        lastFiring: f ? firingView(f) : null,
      };
    });
  }
}

function firingView(f: FiringRow): ScheduleFiring {
  const slot = new Date(f.slot);
  const firedAt = new Date(f.fired_at);
  return { slot: slot.toISOString(), firedAt: firedAt.toISOString(), outcome: f.outcome, taskId: f.task_id, late: firedAt.getTime() - slot.getTime() > LATE_AFTER_MS };
}
