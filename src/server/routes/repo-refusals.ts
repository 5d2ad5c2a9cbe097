// A repository someone may not name (another org's path on the host, a loopback address) is
// refused, and the attempt is on the org's audit record: a security team wants to see who
// tried to reach past their org, not only what succeeded.
import { BerthError } from '../../shared/errors.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';

const REPO_FIELDS = new Set(['repo', 'repoUrl', 'forge.apiUrl']);

/** Runs `work`; a refusal of its repository is recorded as `repository.refused` and rethrown. */
export async function recordingRepoRefusals<T>(audit: AuditLog, scope: Scope, attempted: string, repo: string | undefined, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof BerthError && err.kind === 'forbidden' && err.field !== undefined && REPO_FIELDS.has(err.field)) {
      await audit.append({ orgId: scope.orgId, actor: scope.actor, action: 'repository.refused', target: repo ?? null, details: { attempted, field: err.field, reason: err.message } });
    }
    throw err;
  }
}
