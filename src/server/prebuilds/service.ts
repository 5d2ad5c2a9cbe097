// A project's prebuilds as rows: queued (written first, by `berth prebuild`, a schedule or a
// push), listed, shown with `berth project show`, and expired past the project's `keep` and
// `maxAge`. The building is builder.ts's; which prebuild a task starts from is for-task.ts's.
import type { Logger } from 'pino';
import type { Selectable } from 'kysely';
import { conflict, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { Scope } from '../authz.ts';
import { isoOrNull as iso, type Db, type ProjectRow } from '../db/index.ts';
import type { PrebuildTable, PrebuildTrigger } from '../db/schema.ts';
import { liveProject } from '../projects.ts';
import type { RunnerPool } from '../runners/pool.ts';
import { prebuildSettingsOf, type Prebuild } from './settings.ts';

export type PrebuildRow = Selectable<PrebuildTable>;

/** Who acts for Berth itself on prebuilds: an admin of the org, owning what it makes. */
export function systemScope(orgId: string): Scope {
  return { orgId, orgName: orgId, role: 'admin', actor: 'system', caller: { tokenId: 'system', kind: 'org', userId: null, orgId, role: 'admin', instanceAdmin: false } };
}

/** The snapshot a prebuild freezes into is named after it, so a killed build's is found again. */
export const snapshotNameOf = (prebuildId: string) => `prebuild-${prebuildId.replace(/^pbd_/, '')}`.slice(0, 63).toLowerCase();

export class PrebuildService {
  readonly #db: Db;
  readonly #runners: RunnerPool;
  readonly #log: Logger;
  /** Told when a prebuild is queued, so the builder starts it without waiting for its poll. */
  onQueued: () => void = () => {};

  constructor(o: { db: Db; runners: RunnerPool; logger: Logger }) {
    this.#db = o.db;
    this.#runners = o.runners;
    this.#log = o.logger;
  }

  /** `berth prebuild PROJECT`: a queued row, built by the next free builder. */
  async queue(scope: Scope, projectRef: string): Promise<Prebuild> {
    const project = await liveProject(this.#db, scope.orgId, projectRef);
    if (!project.repo_url) throw conflict(`project '${project.name}' has no repository to prebuild: \`berth project update ${project.name} --repo URL\``);
    const row = await this.queueFor(project, 'manual', scope.actor);
    return (await this.#views([row]))[0]!;
  }

  /** Queues one for a schedule or a push; one already queued for the project is reused (it will see the same head). */
  async queueFor(project: Pick<ProjectRow, 'id' | 'org_id' | 'default_branch'>, trigger: PrebuildTrigger, createdBy: string): Promise<PrebuildRow> {
    if (trigger !== 'manual') {
      const waiting = await this.#db.selectFrom('prebuilds').selectAll().where('project_id', '=', project.id).where('state', '=', 'queued').executeTakeFirst();
      if (waiting) return waiting;
    }
    const row = await this.#db
      .insertInto('prebuilds')
      .values({ id: newId('pbd'), org_id: project.org_id, project_id: project.id, state: 'queued', trigger, branch: project.default_branch, created_by: createdBy, log: JSON.stringify([]) })
      .returningAll()
      .executeTakeFirstOrThrow();
    this.onQueued();
    return row;
  }

  async list(scope: Scope, projectRef: string, limit = 50): Promise<Prebuild[]> {
    const project = await liveProject(this.#db, scope.orgId, projectRef);
    const rows = await this.#db.selectFrom('prebuilds').selectAll().where('project_id', '=', project.id).orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
    return this.#views(rows);
  }

  async show(scope: Scope, id: string): Promise<Prebuild> {
    const row = await this.#db.selectFrom('prebuilds').selectAll().where('org_id', '=', scope.orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`no prebuild '${id}' in this org (berth prebuild list PROJECT shows them)`);
    return (await this.#views([row]))[0]!;
  }

  /** For `berth project show`: the newest ready one, and the newest attempt when it is not that one. */
  async summary(projectId: string): Promise<{ current: Prebuild | null; latest: Prebuild | null }> {
    const [ready, latest] = await Promise.all([
      this.#db.selectFrom('prebuilds').selectAll().where('project_id', '=', projectId).where('state', '=', 'ready').orderBy('created_at', 'desc').limit(1).executeTakeFirst(),
      this.#db.selectFrom('prebuilds').selectAll().where('project_id', '=', projectId).orderBy('created_at', 'desc').limit(1).executeTakeFirst(),
    ]);
    const views = await this.#views([ready, latest].filter((r): r is PrebuildRow => Boolean(r)));
    const current = ready ? views[0]! : null;
    return { current, latest: latest && latest.id !== ready?.id ? views[views.length - 1]! : null };
  }

  /**
   * Past the project's `keep` newest ready prebuilds, or older than its `maxAge`, a prebuild is
   * expired (the row first, so no task picks it meanwhile) and its snapshot removed from its
   * runner. The newest ready one is never expired: it is what tasks start from.
   */
  async expire(projectId: string, now = new Date()): Promise<string[]> {
    const project = await this.#db.selectFrom('projects').select(['id', 'settings']).where('id', '=', projectId).executeTakeFirst();
    if (!project) return [];
    const { keep, maxAgeMs } = prebuildSettingsOf(project.settings);
    const ready = await this.#db.selectFrom('prebuilds').selectAll().where('project_id', '=', projectId).where('state', '=', 'ready').orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
    const old = ready.filter((r, i) => i > 0 && (i >= keep || (maxAgeMs !== null && now.getTime() - new Date(r.finished_at ?? r.created_at).getTime() > maxAgeMs)));
    const expired: string[] = [];
    for (const r of old) {
      const moved = await this.#db.updateTable('prebuilds').set({ state: 'expired', state_reason: `expired: past the project's keep (${keep})${maxAgeMs !== null ? ` or max age` : ''}` }).where('id', '=', r.id).where('state', '=', 'ready').executeTakeFirst();
      if (Number(moved.numUpdatedRows) === 0) continue;
      expired.push(r.id);
    }
    // Expired ones whose snapshot is still there (this pass's, or one an earlier pass could not remove).
    const left = await this.#db
      .selectFrom('prebuilds as p')
      .innerJoin('snapshots as s', 's.id', 'p.snapshot_id')
      .select(['s.id', 's.runner_id'])
      .where('p.project_id', '=', projectId)
      .where('p.state', '=', 'expired')
      .where('s.deleted_at', 'is', null)
      .execute();
    for (const s of left) await this.removeSnapshot(s.id, s.runner_id);
    return expired;
  }

  /**
   * Removes a prebuild's snapshot, bypassing the "current prebuild" rule that keeps people
   * from removing it: the row that made it current is already expired or failed. An
   * environment being made from it right now keeps it until the next pass.
   */
  async removeSnapshot(snapshotId: string, runnerId: string): Promise<void> {
    const making = await this.#db.selectFrom('environments').select('id').where('snapshot_id', '=', snapshotId).where('state', '=', 'creating').executeTakeFirst();
    if (making) return;
    try {
      await this.#db.updateTable('snapshots').set({ state: 'deleting' }).where('id', '=', snapshotId).execute();
      await (await this.#runners.resolve(runnerId, 'the snapshot')).removeSnapshot(snapshotId);
      await this.#db.updateTable('snapshots').set({ deleted_at: new Date() }).where('id', '=', snapshotId).execute();
    } catch (err) {
      // Its runner is away: the snapshot stays `deleting`, and SnapshotService.recover finishes it.
      this.#log.warn({ err, snapshot: snapshotId }, 'could not remove an expired prebuild snapshot yet');
    }
  }

  async #views(rows: PrebuildRow[]): Promise<Prebuild[]> {
    if (!rows.length) return [];
    const snapIds = rows.map((r) => r.snapshot_id).filter((s): s is string => s !== null);
    const [snaps, projects] = await Promise.all([
      snapIds.length ? this.#db.selectFrom('snapshots').select(['id', 'bytes', 'name']).where('id', 'in', snapIds).execute() : [],
      this.#db.selectFrom('projects').select(['id', 'name']).where('id', 'in', rows.map((r) => r.project_id)).execute(),
    ]);
    const bytes = new Map(snaps.map((s) => [s.id, s.bytes === null ? null : Number(s.bytes)]));
    const projectName = new Map(projects.map((p) => [p.id, p.name]));
    return rows.map((r) => ({
      id: r.id,
      project: projectName.get(r.project_id) ?? r.project_id,
      state: r.state,
      trigger: r.trigger,
      branch: r.branch,
      commit: r.commit_sha,
      specKey: r.spec_key,
      snapshotId: r.snapshot_id,
      snapshotBytes: r.snapshot_id ? (bytes.get(r.snapshot_id) ?? null) : null,
      runnerId: r.runner_id,
      stateReason: r.state_reason,
      log: r.log ?? [],
      createdBy: r.created_by,
      createdAt: iso(r.created_at)!,
      startedAt: iso(r.started_at),
      finishedAt: iso(r.finished_at),
    }));
  }
}
