// A project's registry logins (settings.registryLogins: registry → secret name), for the
// images its environments pull. Each secret goes only to the registry it is named for: a
// repository's berth.yaml may choose the image, never where a login is sent.
import { invalid } from '../../shared/errors.ts';
import type { RegistryCredential } from '../../runner/index.ts';
import type { Db } from '../db/index.ts';
import type { SecretService } from '../secrets/service.ts';

/** The login lookup images.resolve asks when it pulls: undefined for a registry the project names no login for. */
export function projectRegistryLogin(db: Db, secrets: SecretService, orgId: string, projectId: string) {
  return async (registry: string): Promise<RegistryCredential | undefined> => {
    const project = await db.selectFrom('projects').select('settings').where('org_id', '=', orgId).where('id', '=', projectId).executeTakeFirst();
    const name = project?.settings.registryLogins?.[registry];
    if (!name) return undefined;
    const value = await secrets.forgeSecret(orgId, projectId, name);
    if (value === null) throw invalid(`the project names secret '${name}' as the login for ${registry}, which does not exist: \`printf %s "$USER:$TOKEN" | berth secret set ${name}\``);
    return { value, from: `secret ${name}` };
  };
}
