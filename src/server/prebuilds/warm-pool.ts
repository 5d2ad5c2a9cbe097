// Warm pools: per project, `warm: N` environments started from its newest ready prebuild and
// owned by nobody, so a task takes one (claim) instead of making one. A pool environment is an
// environments row with pool_project_id set; it is claimable only while its pool_prebuild_id
// is the project's newest ready prebuild and it runs. Refills run on one replica at a time, one
// create at a time, after tasks: never while its runner's task slots are all taken.
//
// Retiring one (stale, broken, one too many) first clears its pool_prebuild_id, in one UPDATE a
// claim's row lock excludes, so a claim and a removal never both get it; a control plane that
// dies before the runner removed it leaves a row the next pass finds and removes again.
import type { WarmPoolStatus } from '../../shared/prebuilds.ts';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';
import { isUniqueViolation, type Db, type EnvironmentRow } from '../db/index.ts';
import type { EnvironmentService } from '../environments/service.ts';
import { ownerIdOf } from '../ownership.ts';
import type { SnapshotService } from '../snapshots/service.ts';
import { RepeatingPass } from '../repeating-pass.ts';
import type { WarmPools } from './types.ts';

/** What `--warm` takes: a pool holds memory and disk for work that may never come. */
export const MAX_WARM = 20;

/** How often a pool is looked at without being woken (another replica's prebuild, a lost runner). */
const POLL_MS = 10_000;
/** After a failed create, the project's next one waits this long, doubling to the cap: a runner out of room is not asked every poll. */
const FIRST_BACKOFF_MS = 10_000;
const MAX_BACKOFF_MS = 5 * 60_000;
/** A claim's refill waits this long: the task it serves goes first. */
const REFILL_AFTER_CLAIM_MS = 5_000;

type PoolEnvironment = Pick<EnvironmentRow, 'id' | 'org_id' | 'name' | 'state' | 'pool_project_id' | 'pool_prebuild_id' | 'created_at'>;
interface ProjectRef {
  id: string;
  orgId: string;
  name: string;
  warm: number;
}
interface Prebuild {
  id: string;
  snapshotId: string;
  runnerId: string | null;
  environmentId: string | null;
}

/** States a pool environment is on its way to running in: counted, left alone. */
const ON_ITS_WAY = new Set(['creating', 'starting']);

/**
 * The named system actor pool environments are made and removed as: an admin of their org,
 * so nothing it makes belongs to a person, and the audit log says `system`.
 */
export function poolScope(orgId: string): Scope {
  return { orgId, orgName: orgId, role: 'admin', actor: 'system', caller: { tokenId: 'system', kind: 'org', userId: null, orgId, role: 'admin', instanceAdmin: false } };
}

export class WarmPoolService implements WarmPools {
  readonly #db: Db;
  readonly #environments: EnvironmentService;
  readonly #snapshots: SnapshotService;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #exclusive: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>;
  readonly #busy: (runnerId: string) => boolean;
  readonly #errors = new Map<string, string>();
  /** Per project: no create from this prebuild before `until` (its last one failed); a new prebuild starts afresh. */
  readonly #backoff = new Map<string, { prebuildId: string; until: number; ms: number }>();
  readonly #loop: RepeatingPass;

  /**
   * @param o.exclusive runs a job on one replica at a time (db/singleton.ts).
   * @param o.busy whether a runner's task slots are all taken now: no refill goes there then.
   */
  constructor(o: { db: Db; environments: EnvironmentService; snapshots: SnapshotService; audit: AuditLog; logger: Logger; exclusive?: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>; busy?: (runnerId: string) => boolean; pollMs?: number }) {
    this.#db = o.db;
    this.#environments = o.environments;
    this.#snapshots = o.snapshots;
    this.#audit = o.audit;
    this.#log = o.logger;
    this.#exclusive = o.exclusive ?? ((_name, fn) => fn());
    this.#busy = o.busy ?? (() => false);
    this.#loop = new RepeatingPass({ run: () => this.#exclusive('warm-pools', () => this.#refillAll()), intervalMs: o.pollMs ?? POLL_MS, onError: (err) => this.#log.error({ err }, 'warm pools: refill failed') });
  }

  start(): void {
    this.#loop.start();
  }

  /** Looks at every pool soon: a prebuild became ready, a setting changed, one was claimed. */
  wake(): void {
    this.#loop.wake();
  }

  /** One pass over every pool, after the pass under way (if any) ends; what tests await. */
  refill(): Promise<void> {
    return this.#loop.run();
  }

  close(): Promise<void> {
    return this.#loop.close();
  }

  /**
   * Takes one running environment of the project's pool made from `prebuildId`, if that is still
   * the project's newest ready prebuild, and makes it the task's (named `name`, its owner's).
   * One row, one UPDATE: two claims never get the same one (the row lock, SKIP LOCKED).
   */
  async claim(o: { scope: Scope; projectId: string; prebuildId: string; name: string; taskId: string }): Promise<string | undefined> {
    const { orgId } = o.scope;
    let row: { id: string } | undefined;
    try {
      row = await this.#db
        .updateTable('environments')
        // As environments.create sets them for the task's scope: the task's, its owner's.
        .set({ name: o.name, task_id: o.taskId, owner_id: ownerIdOf(o.scope), pool_project_id: null, pool_prebuild_id: null, updated_at: new Date() })
        .where('id', '=', (eb) =>
          eb
            .selectFrom('environments as e')
            .select('e.id')
            .where('e.org_id', '=', orgId)
            .where('e.pool_project_id', '=', o.projectId)
            .where('e.pool_prebuild_id', '=', o.prebuildId)
            .where('e.state', '=', 'running')
            // Never one of a prebuild a newer ready one replaced, whatever the caller thinks is newest.
            .where(({ not, exists, selectFrom }) =>
              not(
                exists(
                  selectFrom('prebuilds as newer')
                    .select('newer.id')
                    .where('newer.project_id', '=', o.projectId)
                    .where('newer.state', '=', 'ready')
                    .where('newer.created_at', '>', (q) => q.selectFrom('prebuilds as p').select('p.created_at').where('p.id', '=', o.prebuildId)),
                ),
              ),
            )
            .orderBy('e.created_at')
            .orderBy('e.id')
            .limit(1)
            .forUpdate()
            .skipLocked(),
        )
        // Checked again on the row the lock gave: a retirement may have cleared it meanwhile.
        .where('pool_prebuild_id', '=', o.prebuildId)
        .where('state', '=', 'running')
        .returning('id')
        .executeTakeFirst();
    } catch (err) {
      // The task's name is taken: the caller makes its own environment and meets the same conflict there.
      if (isUniqueViolation(err)) return undefined;
      throw err;
    }
    if (!row) return undefined;
    await this.#audit.append({ orgId, actor: o.scope.actor, action: 'environment.claim', target: row.id, environmentId: row.id, details: { name: o.name, taskId: o.taskId, projectId: o.projectId, prebuildId: o.prebuildId } });
    // One fewer in the pool: top it up once the task is under way. At once, the new environment's
    // start competed with the task's own catch-up for the cores (bench/prebuilds: slower under load).
    setTimeout(() => this.wake(), REFILL_AFTER_CLAIM_MS).unref();
    return row.id;
  }

  /** What the project's pool holds now. */
  async status(orgId: string, projectId: string): Promise<WarmPoolStatus> {
    const project = await this.#db.selectFrom('projects').select(['settings', 'archived_at']).where('org_id', '=', orgId).where('id', '=', projectId).executeTakeFirst();
    const wanted = project && !project.archived_at ? warmOf(project.settings) : 0;
    const prebuild = await this.#newestPrebuild(projectId);
    const envs = await this.#poolOf([projectId]);
    const current = envs.filter((e) => prebuild && e.pool_prebuild_id === prebuild.id);
    const ready = current.filter((e) => e.state === 'running').length;
    const starting = current.filter((e) => ON_ITS_WAY.has(e.state)).length;
    return { wanted, ready, starting, prebuildId: prebuild?.id ?? null, retiring: envs.length - ready - starting, lastError: this.#errors.get(projectId) ?? null };
  }

  /** Removes every environment of the project's pool now (the project is being removed). */
  async drain(projectId: string): Promise<void> {
    for (const env of await this.#poolOf([projectId])) await this.#retire(env, 'its project was removed');
  }

  async #refillAll(): Promise<void> {
    const projects = await this.#db
      .selectFrom('projects')
      .select(['id', 'org_id', 'name', 'settings'])
      .where('archived_at', 'is', null)
      .where(sql<boolean>`coalesce((settings->>'warm')::int, 0) > 0`)
      .execute();
    const wanted = new Map<string, ProjectRef>(projects.map((p) => [p.id, { id: p.id, orgId: p.org_id, name: p.name, warm: warmOf(p.settings) }]));
    // Pools of projects that want none now (set to 0, archived, deleted) are emptied too.
    const held = await this.#db.selectFrom('environments').select('pool_project_id').distinct().where('pool_project_id', 'is not', null).where('state', '<>', 'deleted').execute();
    const ids = new Set([...wanted.keys(), ...held.map((h) => h.pool_project_id!)]);
    for (const id of ids) {
      if (this.#loop.closed) return;
      try {
        await this.#refillProject(id, wanted.get(id));
      } catch (err) {
        this.#errors.set(id, err instanceof Error ? err.message : String(err));
        this.#log.warn({ err, project: id }, 'warm pool: could not refill');
      }
    }
  }

  async #refillProject(projectId: string, project: ProjectRef | undefined): Promise<void> {
    const want = project?.warm ?? 0;
    const prebuild = want > 0 ? await this.#newestPrebuild(projectId) : undefined;
    const envs = await this.#poolOf([projectId]);
    const keep: PoolEnvironment[] = [];
    for (const env of envs) {
      const current = prebuild !== undefined && env.pool_prebuild_id === prebuild.id;
      if (current && (env.state === 'running' || ON_ITS_WAY.has(env.state))) keep.push(env);
      else if (!current) await this.#retire(env, env.pool_prebuild_id ? 'a newer prebuild is ready' : 'retired');
      // Stopped or failed: no task can have it; a new one replaces it. A lost one is left to its
      // runner's return (its files are there): not counted, and one too many or stale then.
      else if (env.state === 'stopped' || env.state === 'failed') await this.#retire(env, `it is ${env.state}`);
    }
    // One too many (N lowered): the newest go first; one still on its way is left to finish.
    const extra = keep.filter((e) => e.state === 'running').reverse().slice(0, Math.max(0, keep.length - want));
    for (const env of extra) await this.#retire(env, `the pool keeps ${want}`);
    if (!project || !prebuild) {
      this.#errors.delete(projectId);
      return;
    }
    const backoff = this.#backoff.get(projectId);
    if (backoff?.prebuildId === prebuild.id && backoff.until > Date.now()) return;
    for (let have = keep.length - extra.length; have < want && !this.#loop.closed; have++) {
      // Tasks first: a runner with every task slot taken gets no pool environment now.
      if (prebuild.runnerId && this.#busy(prebuild.runnerId)) return;
      try {
        await this.#create(project, prebuild);
      } catch (err) {
        const ms = Math.min(MAX_BACKOFF_MS, backoff?.prebuildId === prebuild.id ? backoff.ms * 2 : FIRST_BACKOFF_MS);
        this.#backoff.set(projectId, { prebuildId: prebuild.id, until: Date.now() + ms, ms });
        throw err;
      }
    }
    this.#backoff.delete(projectId);
    this.#errors.delete(projectId);
  }

  /** One pool environment from the prebuild's snapshot, with the settings its prebuild was made with. */
  async #create(project: ProjectRef, prebuild: Prebuild): Promise<void> {
    const made = prebuild.environmentId ? await this.#db.selectFrom('environments').selectAll().where('id', '=', prebuild.environmentId).executeTakeFirst() : undefined;
    const name = `warm-${project.name.replace(/[^a-z0-9-]/g, '-').slice(0, 40)}-${randomBytes(3).toString('hex')}`;
    const env = await this.#snapshots.createEnvironment(
      poolScope(project.orgId),
      prebuild.snapshotId,
      {
        name,
        project: project.id,
        ...(made && { cpus: made.cpus, memory: Number(made.memory_bytes), disk: Number(made.disk_bytes), pids: made.pids_limit }),
        ...(made?.run_as && { user: made.run_as }),
        ...(made?.forward_ports.length && { forwardPorts: made.forward_ports }),
        ...(made?.volumes.length && { volumes: made.volumes }),
        // It waits for a task: idle is what it is for. A claimed one keeps none, as a task's.
        idleTimeout: 'off',
        maxLifetime: 'off',
      },
      { pool: { projectId: project.id, prebuildId: prebuild.id } },
    );
    await this.#audit.append({ orgId: project.orgId, actor: 'system', action: 'environment.create', target: env.id, environmentId: env.id, details: { name, pool: { projectId: project.id, prebuildId: prebuild.id }, snapshotId: prebuild.snapshotId } });
  }

  /** Takes it out of the pool (no claim can have it after this), then removes it. */
  async #retire(env: PoolEnvironment, why: string): Promise<void> {
    if (env.state !== 'running' && env.state !== 'stopped' && env.state !== 'failed') return;
    const taken = await this.#db
      .updateTable('environments')
      .set({ pool_prebuild_id: null })
      .where('id', '=', env.id)
      .where('pool_project_id', 'is not', null)
      .where('state', '<>', 'deleted')
      .returning('id')
      .executeTakeFirst();
    if (!taken) return;
    try {
      await this.#environments.remove(poolScope(env.org_id), env.id);
      await this.#audit.append({ orgId: env.org_id, actor: 'system', action: 'environment.delete', target: env.id, environmentId: env.id, details: { name: env.name, pool: { projectId: env.pool_project_id, prebuildId: env.pool_prebuild_id }, reason: why } });
    } catch (err) {
      // Its runner away: the row stays in the pool, unclaimable, and the next pass tries again.
      this.#log.warn({ err, environment: env.id }, 'warm pool: could not remove an environment');
    }
  }

  /** The project's newest ready prebuild whose snapshot is ready. */
  async #newestPrebuild(projectId: string): Promise<Prebuild | undefined> {
    const row = await this.#db
      .selectFrom('prebuilds as p')
      .innerJoin('snapshots as s', 's.id', 'p.snapshot_id')
      .select(['p.id', 'p.snapshot_id', 's.runner_id', 'p.environment_id', 's.state as snapshot_state', 's.deleted_at'])
      .where('p.project_id', '=', projectId)
      .where('p.state', '=', 'ready')
      .orderBy('p.created_at', 'desc')
      .orderBy('p.id', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!row || row.snapshot_state !== 'ready' || row.deleted_at) return undefined;
    return { id: row.id, snapshotId: row.snapshot_id!, runnerId: row.runner_id, environmentId: row.environment_id };
  }

  #poolOf(projectIds: string[]): Promise<PoolEnvironment[]> {
    return this.#db
      .selectFrom('environments')
      .select(['id', 'org_id', 'name', 'state', 'pool_project_id', 'pool_prebuild_id', 'created_at'])
      .where('pool_project_id', 'in', projectIds)
      .where('state', '<>', 'deleted')
      .orderBy('created_at')
      .orderBy('id')
      .execute();
  }
}

function warmOf(settings: { warm?: number } | null | undefined): number {
  const n = settings?.warm;
  return typeof n === 'number' && Number.isInteger(n) && n > 0 ? Math.min(n, MAX_WARM) : 0;
}
