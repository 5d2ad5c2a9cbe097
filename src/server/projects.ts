import { notFound } from '../shared/errors.ts';
import type { Db } from './db/index.ts';

/** The id of a project of the org, named by id or name; not found otherwise. */
export async function projectIdOf(db: Db, orgId: string, project: string): Promise<string> {
  const row = await db
    .selectFrom('projects')
    .select('id')
    .where('org_id', '=', orgId)
    .where((eb) => eb.or([eb('id', '=', project), eb('name', '=', project)]))
    .executeTakeFirst();
  if (!row) throw notFound(`no project '${project}': \`berth project list\` shows them`);
  return row.id;
}
