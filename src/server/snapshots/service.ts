// Snapshots: an environment's files frozen on its runner (runner/store.ts), and the
// environments made from one (`berth env create --from`, `berth env fork`). The row is
// written before the runner acts and settled after, so a control plane killed in between
// leaves a row `recover` finishes or clears; the runner's snapshot is whole or absent.
import type { Logger } from 'pino';
import type { Selectable } from 'kysely';
import type { z } from 'zod';
import { randomBytes } from 'node:crypto';
import type { Environment } from '../../shared/api.ts';
import type { CreateFromSnapshotBody, ForkEnvironmentBody, ForkResult, ListSnapshotsQuery, Snapshot } from '../../shared/api-snapshots.ts';
import { conflict, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { atLeast, forbidden, type Scope } from '../authz.ts';
import { isoOrNull as iso, isUniqueViolation, type Db } from '../db/index.ts';
import type { SnapshotKind, SnapshotTable } from '../db/schema.ts';
import type { EnvironmentService } from '../environments/service.ts';
import { limitsBody } from '../environments/limits.ts';
import { ownerIdOf, people } from '../ownership.ts';
import { projectIdOf } from '../projects.ts';
import type { RunnerPool } from '../runners/pool.ts';

export type SnapshotRow = Selectable<SnapshotTable>;

/** Environments a fork starts at once: starts are CPU-bound, and a runner has few cores. */
export const FORK_PARALLEL = 4;

export class SnapshotService {
  readonly #db: Db;
  readonly #runners: RunnerPool;
  readonly #environments: EnvironmentService;
  readonly #log: Logger;

  constructor(o: { db: Db; runners: RunnerPool; environments: EnvironmentService; logger: Logger }) {
    this.#db = o.db;
    this.#runners = o.runners;
    this.#environments = o.environments;
    this.#log = o.logger;
  }

  /**
   * Freezes environment `ref`'s files (its owner's or an admin's: they may hold secrets written
   * into them). A running one is paused for the moment of the freeze and goes on.
   */
  async create(scope: Scope, ref: string, o: { name?: string | undefined; kind?: SnapshotKind; projectId?: string | null; createdBy?: string } = {}): Promise<Snapshot> {
    const row = await this.#environments.holdFiles(scope, ref, 'snapshot', async (env, runner) => {
      const support = await runner.snapshotSupport();
      if (!support.available) throw conflict(`runner '${runner.name}' cannot snapshot: ${support.reason}`);
      const id = newId('snap');
      // A default name is the environment's and the second; two in one second get -2, -3 ….
      const base = o.name ?? `${env.name.slice(0, 40)}-${stamp()}`;
      let name = base;
      for (let n = 2; o.name === undefined && n < 10; n++) {
        const taken = await this.#db.selectFrom('snapshots').select('id').where('org_id', '=', scope.orgId).where('name', '=', name).where('deleted_at', 'is', null).executeTakeFirst();
        if (!taken) break;
        name = `${base}-${n}`;
      }
      try {
        await this.#db
          .insertInto('snapshots')
          .values({
            id,
            org_id: scope.orgId,
            name,
            kind: o.kind ?? 'manual',
            state: 'creating',
            environment_id: env.id,
            project_id: o.projectId !== undefined ? o.projectId : env.projectId,
            runner_id: runner.id,
            image: env.image,
            image_digest: env.imageDigest,
            created_by: o.createdBy ?? ownerIdOf(scope) ?? scope.actor,
          })
          .execute();
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`a snapshot named '${name}' exists: choose another with --name`);
        throw err;
      }
      try {
        const made = await runner.snapshot(env.id, id);
        return await this.#db
          .updateTable('snapshots')
          .set({ state: 'ready', bytes: made.bytes === null ? null : String(made.bytes), copied: made.copied, paused_ms: made.pausedMs })
          .where('id', '=', id)
          .returningAll()
          .executeTakeFirstOrThrow();
      } catch (err) {
        await this.#db.updateTable('snapshots').set({ state: 'failed', state_reason: err instanceof Error ? err.message.slice(0, 2000) : String(err) }).where('id', '=', id).execute();
        throw err;
      }
    });
    return (await this.#views([row]))[0]!;
  }

  async list(scope: Scope, q: z.infer<typeof ListSnapshotsQuery>): Promise<Snapshot[]> {
    let query = this.#db.selectFrom('snapshots').selectAll().where('org_id', '=', scope.orgId).where('deleted_at', 'is', null);
    if (q.kind) query = query.where('kind', '=', q.kind);
    if (q.project) query = query.where('project_id', '=', await projectIdOf(this.#db, scope.orgId, q.project));
    return this.#views(await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(1000).execute());
  }

  async show(scope: Scope, ref: string): Promise<Snapshot> {
    return (await this.#views([await this.#get(scope.orgId, ref)]))[0]!;
  }

  /**
   * Removes it from its runner. Environments made from it keep their files (each is its own
   * copy-on-write subvolume); what keeps it is a project's current prebuild or an environment
   * being made from it now. Its maker's or an admin's; a prebuild's, an admin's.
   */
  async remove(scope: Scope, ref: string): Promise<Snapshot> {
    const row = await this.#get(scope.orgId, ref);
    this.#mayManage(scope, row, 'remove');
    const users = await this.#inUse([row.id]);
    const using = users.get(row.id) ?? [];
    if (using.length) throw conflict(`snapshot '${row.name}' is in use (${using.join('; ')}): remove or replace what uses it first`);
    await this.#db.updateTable('snapshots').set({ state: 'deleting' }).where('id', '=', row.id).execute();
    await (await this.#runners.resolve(row.runner_id, 'the snapshot')).removeSnapshot(row.id);
    const gone = await this.#db.updateTable('snapshots').set({ deleted_at: new Date() }).where('id', '=', row.id).returningAll().executeTakeFirstOrThrow();
    return (await this.#views([gone]))[0]!;
  }

  /**
   * A new environment with the snapshot's files, on the snapshot's runner, with its image;
   * its limits, policy, project and secrets are its own body's, as any create's.
   */
  async createEnvironment(scope: Scope, ref: string, body: z.infer<typeof CreateFromSnapshotBody>, opts: { mayWiden?: boolean; role?: Scope['role']; pool?: { projectId: string; prebuildId: string } } = {}): Promise<Environment> {
    const snap = await this.#get(scope.orgId, ref);
    return this.#fromRow(scope, snap, body, opts);
  }

  /** A snapshot of environment `ref`, then `count` environments from it, made a few at a time. */
  async fork(scope: Scope, ref: string, body: z.output<typeof ForkEnvironmentBody>, opts: { mayWiden?: boolean; role?: Scope['role'] } = {}): Promise<ForkResult> {
    const source = await this.#environments.show(scope, ref);
    const tag = randomBytes(2).toString('hex');
    const base = body.name ?? `${source.name.slice(0, 40)}-fork-${tag}`;
    const names = body.count === 1 && body.name ? [body.name] : Array.from({ length: body.count }, (_, i) => `${base.slice(0, 58)}-${i + 1}`);
    // Names are checked before anything is frozen: a taken one would fail the fork half-way.
    const taken = await this.#db.selectFrom('environments').select('name').where('org_id', '=', scope.orgId).where('name', 'in', names).where('state', '!=', 'deleted').execute();
    if (taken.length) throw conflict(`the name '${taken[0]!.name}' is taken: choose another with --name`);
    const snapshot = await this.create(scope, source.id, { name: `${source.name.slice(0, 40)}-fork-${tag}-${stamp()}`.slice(0, 63), kind: 'fork' });
    const snap = await this.#get(scope.orgId, snapshot.id);
    const environments: Environment[] = new Array(names.length);
    let next = 0;
    const work = async () => {
      for (let i = next++; i < names.length; i = next++) {
        environments[i] = await this.#fromRow(scope, snap, {
          name: names[i],
          project: source.projectId ?? undefined,
          ...limitsBody(source.limits),
          ...(source.user !== null && { user: source.user }),
        }, opts);
      }
    };
    await Promise.all(Array.from({ length: Math.min(FORK_PARALLEL, names.length) }, work));
    return { snapshot: (await this.#views([snap]))[0]!, environments };
  }

  /**
   * Settles what a killed control plane left: a snapshot still `creating` is ready if its
   * runner has it whole, else failed; one `deleting` is removed again.
   */
  async recover(): Promise<void> {
    const rows = await this.#db.selectFrom('snapshots').selectAll().where('state', 'in', ['creating', 'deleting']).where('deleted_at', 'is', null).execute();
    for (const row of rows) {
      try {
        const runner = await this.#runners.resolve(row.runner_id, 'the snapshot');
        if (row.state === 'deleting') {
          await runner.removeSnapshot(row.id);
          await this.#db.updateTable('snapshots').set({ deleted_at: new Date() }).where('id', '=', row.id).execute();
        } else if (await runner.hasSnapshot(row.id)) {
          await this.#db.updateTable('snapshots').set({ state: 'ready' }).where('id', '=', row.id).execute();
        } else {
          await this.#db.updateTable('snapshots').set({ state: 'failed', state_reason: 'interrupted: the control plane stopped while it was made' }).where('id', '=', row.id).execute();
        }
      } catch (err) {
        // Its runner is not connected yet: the next start settles it.
        this.#log.warn({ err, snapshot: row.id }, 'cannot settle an interrupted snapshot yet');
      }
    }
  }

  async #fromRow(scope: Scope, snap: SnapshotRow, body: z.infer<typeof CreateFromSnapshotBody>, opts: { mayWiden?: boolean; role?: Scope['role']; pool?: { projectId: string; prebuildId: string } }): Promise<Environment> {
    if (snap.state !== 'ready') throw conflict(`snapshot '${snap.name}' is ${snap.state}: only a ready one makes environments`);
    this.#mayUse(scope, snap);
    // Its files are an upper layer over one image: the name must still be that image.
    const runner = await this.#runners.resolve(snap.runner_id, `snapshot '${snap.name}'`);
    const image = await runner.images.get(snap.image, { org: scope.orgId });
    if (!image || (snap.image_digest && image.digest !== snap.image_digest)) {
      throw conflict(`snapshot '${snap.name}' was taken on image '${snap.image}' at ${snap.image_digest?.slice(0, 19) ?? 'an unknown digest'}, which runner '${runner.name}' no longer has${image ? ` (the name is now ${image.digest.slice(0, 19)})` : ''}: its files belong on that image. Take a new snapshot (or prebuild) on the current one`);
    }
    return this.#environments.create(scope, { ...body, image: snap.image }, {
      ...opts,
      runnerId: snap.runner_id,
      snapshotId: snap.id,
      seed: { imageDigest: snap.image_digest ?? '', write: (runner, spec) => runner.createFromSnapshot(spec, snap.id) },
    });
  }

  /** Using a snapshot reads every file it froze: its maker's, an admin's; a prebuild's, any member's. */
  #mayUse(scope: Scope, row: SnapshotRow): void {
    if (row.kind === 'prebuild' ? atLeast(scope.role, 'member') : atLeast(scope.role, 'admin') || row.created_by === ownerIdOf(scope)) return;
    throw forbidden(`snapshot '${row.name}' is another member's: its files may hold what they wrote; ask them or an admin`);
  }

  #mayManage(scope: Scope, row: SnapshotRow, verb: string): void {
    if (atLeast(scope.role, 'admin') || (row.kind !== 'prebuild' && row.created_by === ownerIdOf(scope))) return;
    throw forbidden(`only ${row.kind === 'prebuild' ? 'an admin' : 'its maker or an admin'} may ${verb} snapshot '${row.name}'`);
  }

  async #get(orgId: string, ref: string): Promise<SnapshotRow> {
    const row = await this.#db
      .selectFrom('snapshots')
      .selectAll()
      .where('org_id', '=', orgId)
      .where('deleted_at', 'is', null)
      .where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)]))
      .executeTakeFirst();
    if (!row) throw notFound(`no snapshot '${ref}' in this org (berth snapshot list shows them)`);
    return row;
  }

  /** What keeps each snapshot: a project's current prebuild, environments being made from it. */
  async #inUse(ids: string[]): Promise<Map<string, string[]>> {
    const using = new Map<string, string[]>();
    if (!ids.length) return using;
    const add = (id: string, what: string) => using.set(id, [...(using.get(id) ?? []), what]);
    const creating = await this.#db.selectFrom('environments').select(['snapshot_id', 'name']).where('snapshot_id', 'in', ids).where('state', '=', 'creating').execute();
    for (const e of creating) add(e.snapshot_id!, `environment ${e.name} is being made from it`);
    const prebuilds = await this.#db
      .selectFrom('prebuilds as p')
      .innerJoin('projects as j', 'j.id', 'p.project_id')
      .select(['p.snapshot_id', 'p.project_id', 'p.created_at', 'j.name'])
      .where('p.snapshot_id', 'in', ids)
      .where('p.state', '=', 'ready')
      .execute();
    for (const p of prebuilds) {
      // Asked of the database: a timestamp read back into a JS Date loses its microseconds, and
      // on PostgreSQL a row then looks newer than itself.
      const newest = await this.#db.selectFrom('prebuilds').select('snapshot_id').where('project_id', '=', p.project_id).where('state', '=', 'ready').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst();
      if (newest?.snapshot_id === p.snapshot_id) add(p.snapshot_id!, `project ${p.name}'s current prebuild`);
    }
    return using;
  }

  async #views(rows: SnapshotRow[]): Promise<Snapshot[]> {
    if (!rows.length) return [];
    const ids = rows.map((r) => r.id);
    const [makers, users, counts, envs, runners] = await Promise.all([
      people(this.#db, rows.map((r) => (r.created_by === 'system' ? null : r.created_by))),
      this.#inUse(ids),
      this.#db.selectFrom('environments').select(['snapshot_id']).select((eb) => eb.fn.countAll<string>().as('n')).where('snapshot_id', 'in', ids).where('state', 'not in', ['deleted']).groupBy('snapshot_id').execute(),
      this.#db.selectFrom('environments').select(['id', 'name']).where('id', 'in', rows.map((r) => r.environment_id ?? '')).execute(),
      this.#db.selectFrom('runners').select(['id', 'name']).where('id', 'in', rows.map((r) => r.runner_id)).execute(),
    ]);
    const runnerName = new Map(runners.map((r) => [r.id, r.name]));
    const count = new Map(counts.map((c) => [c.snapshot_id, Number(c.n)]));
    const envName = new Map(envs.map((e) => [e.id, e.name]));
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      kind: r.kind,
      state: r.state,
      stateReason: r.state_reason,
      environmentId: r.environment_id,
      environmentName: r.environment_id ? (envName.get(r.environment_id) ?? null) : null,
      projectId: r.project_id,
      runnerId: r.runner_id,
      runnerName: runnerName.get(r.runner_id) ?? null,
      image: r.image,
      imageDigest: r.image_digest,
      bytes: r.bytes === null ? null : Number(r.bytes),
      copied: r.copied,
      pausedMs: r.paused_ms,
      createdBy: makers.get(r.created_by) ?? null,
      createdAt: iso(r.created_at)!,
      environments: count.get(r.id) ?? 0,
      inUseBy: users.get(r.id) ?? [],
    }));
  }
}

/** `20261204-231500`: a default name's time, as NAME_PATTERN allows. */
function stamp(d = new Date()): string {
  return d.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
}


