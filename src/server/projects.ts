import { conflict, invalid, notFound } from '../shared/errors.ts';
import type { Db, ProjectRow } from './db/index.ts';

/** The id of a live (not archived) project of the org, named by id or name; not found otherwise. */
export async function projectIdOf(db: Db, orgId: string, project: string): Promise<string> {
  return (await liveProject(db, orgId, project)).id;
}

/**
 * A live project of the org, named by id or name. An archived project is found by nobody
 * here: it takes no new tasks, environments, secrets or settings (its tasks still read it by id).
 */
export async function liveProject(db: Db, orgId: string, project: string): Promise<ProjectRow> {
  const row = await db
    .selectFrom('projects')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('archived_at', 'is', null)
    .where((eb) => eb.or([eb('id', '=', project), eb('name', '=', project)]))
    .executeTakeFirst();
  if (!row) throw notFound(`no project '${project}': \`berth project list\` shows them`);
  return row;
}

/** An archived project refuses new work on its tasks too (a retry, a follow-up), saying why. */
export function assertNotArchived(project: Pick<ProjectRow, 'name' | 'archived_at'> | undefined, what: string): void {
  if (project?.archived_at) throw conflict(`project '${project.name}' was removed (archived ${new Date(project.archived_at).toISOString().slice(0, 10)}): ${what} needs a live project; make one with \`berth project create\` and start a new task there`);
}

/**
 * RFC 7396 JSON merge patch: a null removes a key, an object merges into an object, anything
 * else (arrays too) replaces. The result is validated by the caller against the full schema.
 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const base: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete base[k];
    else if (v !== undefined) base[k] = mergePatch(base[k], v);
  }
  return base;
}

export type RemovedProject = { removed: 'deleted' | 'archived'; tasks: number };

/**
 * Removes a project. One with live environments is refused (they would lose their secrets
 * under them). One no task ever used is deleted; one with tasks is archived, so the tasks
 * keep their history and the project's name, and its secrets are deleted with it either way.
 */
export async function removeProject(db: Db, orgId: string, name: string): Promise<RemovedProject> {
  const row = await liveProject(db, orgId, name);
  // Its warm pool's environments are nobody's work: the caller removes them after (warm-pool.ts drain).
  const envs = await db.selectFrom('environments').select('name').where('project_id', '=', row.id).where('pool_project_id', 'is', null).where('state', '<>', 'deleted').orderBy('name').limit(6).execute();
  if (envs.length) {
    const names = envs.slice(0, 5).map((e) => e.name).join(', ') + (envs.length > 5 ? ', …' : '');
    throw conflict(`project '${row.name}' still has environments (${names}): remove them first with \`berth env rm NAME\` (\`berth env list\` shows them)`);
  }
  const count = async () => Number((await db.selectFrom('tasks').select((eb) => eb.fn.countAll<string>().as('n')).where('project_id', '=', row.id).executeTakeFirstOrThrow()).n);
  const archive = async (): Promise<RemovedProject> => {
    await db.transaction().execute(async (tx) => {
      await tx.deleteFrom('secrets').where('project_id', '=', row.id).execute();
      await tx.updateTable('projects').set({ archived_at: new Date() }).where('id', '=', row.id).execute();
    });
    return { removed: 'archived', tasks: await count() };
  };
  if ((await count()) > 0) return archive();
  try {
    await db.transaction().execute(async (tx) => {
      await tx.deleteFrom('secrets').where('project_id', '=', row.id).execute();
      await tx.updateTable('environments').set({ project_id: null }).where('project_id', '=', row.id).execute();
      await tx.deleteFrom('projects').where('id', '=', row.id).execute();
    });
    return { removed: 'deleted', tasks: 0 };
  } catch (err) {
    // A task made for it meanwhile (or a row that refers to it we do not know of): keep it, archived.
    if ((err as { code?: string } | null)?.code === '23503') return archive();
    throw err;
  }
}

/** A project name: what `berth project create NAME` takes. */
export const PROJECT_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Refuses a rename that collides, before the unique index would answer with a bare 500. */
export async function assertNameFree(db: Db, orgId: string, name: string, except?: string): Promise<void> {
  const other = await db.selectFrom('projects').select('id').where('org_id', '=', orgId).where('name', '=', name).where('archived_at', 'is', null).executeTakeFirst();
  if (other && other.id !== except) throw conflict(`a project named '${name}' exists`);
  if (!PROJECT_NAME.test(name)) throw invalid('a project name is lower-case letters, digits, . _ -', 'name');
}
