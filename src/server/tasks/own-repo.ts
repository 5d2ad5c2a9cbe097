// A task works on, pushes to and merges into its own repository only: a project's task the
// project's repository, a one-off task one its creator may name today (a path on the host:
// only an instance administrator's). Asked before the pipeline clones and before approve
// merges, so a row written before these rules, or edited behind Berth's back, goes nowhere.
import { BerthError } from '../../shared/errors.ts';
import type { RepoAccess, RepoNamer } from '../../forges/index.ts';
import type { Db, ProjectRow, TaskRow } from '../db/index.ts';

export async function assertOwnRepository(db: Db, repos: RepoAccess, row: Pick<TaskRow, 'id' | 'org_id' | 'project_id' | 'repo_url' | 'created_by'>, project: ProjectRow | undefined): Promise<void> {
  if (row.project_id) {
    if (!project || project.org_id !== row.org_id || project.repo_url !== row.repo_url) {
      throw new BerthError('forbidden', `task ${row.id} is on ${row.repo_url}, which is not its project's repository${project ? ` (${project.repo_url ?? 'none'})` : ' (the project was deleted)'}: nothing was merged or pushed; run it again from the project`, 'repo');
    }
    return;
  }
  try {
    await repos.name(row.repo_url, await creatorOf(db, row.created_by));
  } catch (e) {
    if (!(e instanceof BerthError) || (e.kind !== 'forbidden' && e.kind !== 'invalid')) throw e;
    throw new BerthError('forbidden', `task ${row.id}'s repository is not one its creator (${row.created_by}) may name: nothing was merged or pushed (${e.message})`, 'repo');
  }
}

/** The creator as a repository namer: an instance administrator only when a user token of one (still enabled) made the task. */
async function creatorOf(db: Db, actor: string): Promise<RepoNamer> {
  const userId = actor.startsWith('user:') ? actor.slice('user:'.length) : null;
  if (!userId) return { instanceAdmin: false };
  const user = await db.selectFrom('users').select(['instance_admin', 'disabled_at']).where('id', '=', userId).executeTakeFirst();
  return { instanceAdmin: Boolean(user?.instance_admin) && !user?.disabled_at };
}
