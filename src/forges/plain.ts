// A plain git server (or a path on this host): Berth pushes the branch and keeps the change
// request itself; `berth task approve` merges it with mergeBranch.
import type { ChangeRequest } from '../shared/tasks.ts';
import { basicCredentials, bearerCredentials, noCredentials } from './credentials.ts';
import type { Forge, ForgeAuth, ForgeSettings, GitCredentials, OpenChangeRequest } from './index.ts';
import type { RepoLocation } from './url.ts';

/** The Basic user name when the settings name none; most servers look only at the token. */
export const DEFAULT_GIT_USERNAME = 'git';

export function plainForge(o: { location: RepoLocation; settings: ForgeSettings; auth: ForgeAuth }): Forge {
  const token = o.auth && 'token' in o.auth ? o.auth.token : null;
  return {
    kind: 'git',

    async gitCredentials(): Promise<GitCredentials> {
      // A local path needs no credentials, and git would not send a header there anyway.
      if (!token || o.location.kind !== 'http') return noCredentials();
      const scheme = o.settings.httpAuth ?? { scheme: 'basic', username: DEFAULT_GIT_USERNAME };
      return scheme.scheme === 'bearer' ? bearerCredentials(o.location.origin, token) : basicCredentials(o.location.origin, scheme.username, token);
    },

    async openChangeRequest(cr: OpenChangeRequest): Promise<ChangeRequest> {
      return { kind: 'berth', url: null, number: null, draft: cr.draft };
    },
  };
}
