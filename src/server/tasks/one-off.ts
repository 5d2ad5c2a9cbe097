// A repository without a project gets a transient one: what a project's settings would give
// its tasks (the image, egress domains, the forge and its token), given with a one-off task or
// a campaign. Checked here for both, when each is made and again when a task is made from them.
import { invalid } from '../../shared/errors.ts';
import { atLeast, forbidden, type Scope } from '../authz.ts';
import type { OneOffSettings } from '../db/index.ts';
import { checkDomains } from '../policy/index.ts';
import type { SecretService } from '../secrets/service.ts';

type Given = { [K in keyof OneOffSettings]?: OneOffSettings[K] | undefined };

/**
 * The image is anyone's (the runner's image rules apply when the environment is made). The
 * domains widen the org's egress policy, and the forge's token is sent to a host the task
 * names: both an admin's, as a project's policy and forge settings are. Null when none is given.
 */
export async function checkOneOff(scope: Scope, secrets: SecretService, o: Given): Promise<OneOffSettings | null> {
  const out: OneOffSettings = {};
  if (o.image !== undefined) out.image = o.image;
  if (o.allowDomains !== undefined) {
    if (!atLeast(scope.role, 'admin')) throw forbidden("allowDomains widens the org's egress policy: only admins may give it (a member's tasks reach what the org's and their project's policies allow)");
    out.allowDomains = checkDomains(o.allowDomains, 'allowDomains');
  }
  if (o.forge !== undefined) {
    if (!atLeast(scope.role, 'admin')) throw forbidden("forge settings send an org secret to the repository's host and its API: only admins may give them (a project's tasks use its own)");
    const name = o.forge.tokenSecret;
    if (name !== undefined && (await secrets.forgeSecret(scope.orgId, null, name)) === null) throw invalid(`there is no org secret '${name}': set it first with \`berth secret set ${name}\``, 'forge.tokenSecret');
    out.forge = o.forge;
  }
  return Object.keys(out).length ? out : null;
}
