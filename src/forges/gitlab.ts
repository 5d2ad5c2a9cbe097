// GitLab (gitlab.com or self-hosted) through its REST API v4: a merge request per task. A
// draft is a title starting with "Draft: ", which is how GitLab marks one.
import { BerthError, conflict, invalid, notFound, unavailable } from '../shared/errors.ts';
import { Redactor } from '../shared/redact.ts';
import type { ChangeRequest } from '../shared/tasks.ts';
import { basicCredentials, noCredentials } from './credentials.ts';
import type { Forge, ForgeAuth, ForgeSettings, GitCredentials, OpenChangeRequest } from './index.ts';
import type { RepoLocation } from './url.ts';
import { hostFetch } from './upstream.ts';

const API_TIMEOUT_MS = 30_000;

/**
 * The API root and the project's path (`group/sub/project`). A GitLab served under a path
 * (`https://HOST/gitlab`, apiUrl `https://HOST/gitlab/api/v4`) has that path in front of
 * every repository URL; it is not part of the project's path.
 */
export function gitlabProject(location: Extract<RepoLocation, { kind: 'http' }>, settings: ForgeSettings): { apiUrl: string; projectPath: string } {
  const apiUrl = (settings.apiUrl ?? `${location.origin}/api/v4`).replace(/\/+$/, '');
  let projectPath = location.path;
  const api = new URL(apiUrl);
  const prefix = api.pathname.replace(/\/api\/v4$/, '').replace(/^\/+|\/+$/g, '');
  if (api.origin === location.origin && prefix !== '' && projectPath.startsWith(`${prefix}/`)) projectPath = projectPath.slice(prefix.length + 1);
  if (!projectPath.includes('/')) throw invalid(`${location.url} is not a GitLab project URL: give https://HOST/GROUP/PROJECT`);
  return { apiUrl, projectPath };
}

export function gitlabForge(o: { location: Extract<RepoLocation, { kind: 'http' }>; settings: ForgeSettings; auth: ForgeAuth }): Forge {
  const { apiUrl, projectPath } = gitlabProject(o.location, o.settings);
  const token = o.auth && 'token' in o.auth ? o.auth.token : null;
  const tokenHint = `check the token in secret "${o.settings.tokenSecret ?? '(none set: name one in tokenSecret)'}"`;

  return {
    kind: 'gitlab',

    async gitCredentials(): Promise<GitCredentials> {
      return token ? basicCredentials(o.location.origin, 'oauth2', token) : noCredentials();
    },

    async openChangeRequest(mr: OpenChangeRequest): Promise<ChangeRequest> {
      const doing = `opening a merge request from ${mr.head} into ${mr.base} on ${projectPath}`;
      if (!token) throw invalid(`${doing} needs a token: name a token secret (tokenSecret) in the project's forge settings`);
      const redactor = new Redactor([{ name: 'token', value: token }]);
      const title = mr.draft && !/^draft:/i.test(mr.title) ? `Draft: ${mr.title}` : mr.title;
      let response: Response;
      try {
        response = await hostFetch(`${apiUrl}/projects/${encodeURIComponent(projectPath)}/merge_requests`, {
          method: 'POST',
          headers: { 'private-token': token, 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'berth' },
          body: JSON.stringify({ source_branch: mr.head, target_branch: mr.base, title, description: mr.body }),
          signal: AbortSignal.timeout(API_TIMEOUT_MS),
        });
      } catch (e) {
        throw unavailable(`${doing}: GitLab could not be reached at ${apiUrl} (${redactor.redact(e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e))}): check apiUrl and the network, then try again`);
      }
      const text = await response.text();
      let data: unknown = null;
      try {
        data = JSON.parse(text);
      } catch {
        // not JSON: a proxy's error page, say
      }
      if (response.ok) {
        const created = data as { iid?: unknown; web_url?: unknown; draft?: unknown; work_in_progress?: unknown } | null;
        if (typeof created?.iid !== 'number') throw new BerthError('internal', `${doing}: GitLab answered ${response.status} without a merge request`);
        const draft = typeof created.draft === 'boolean' ? created.draft : typeof created.work_in_progress === 'boolean' ? created.work_in_progress : mr.draft;
        return { kind: 'merge_request', url: typeof created.web_url === 'string' ? created.web_url : null, number: created.iid, draft };
      }
      const said = redactor.redact(gitlabMessage(data) ?? `${text.slice(0, 200)}`);
      switch (response.status) {
        case 401:
          throw invalid(`${doing}: GitLab refused the token (${said}): ${tokenHint}; it needs the api scope`);
        case 403:
          throw invalid(`${doing}: GitLab denied it (${said}): the token's user needs at least the Developer role on ${projectPath}; ${tokenHint}`);
        case 404:
          throw notFound(`${doing}: GitLab has no project ${projectPath} that this token can see (${said}): check the URL and ${tokenHint.replace(/^check /, '')}`);
        case 409:
          throw conflict(`a merge request from ${mr.head} into ${mr.base} already exists on ${projectPath}: update that one, or push to a new branch`);
        case 429:
          throw new BerthError('rate_limited', `${doing}: GitLab's rate limit is used up (${said}): try again later`);
      }
      if (response.status === 400 || response.status === 422) {
        if (/already exists/i.test(said)) throw conflict(`a merge request from ${mr.head} into ${mr.base} already exists on ${projectPath}: update that one, or push to a new branch`);
        throw invalid(`${doing}: GitLab refused it (${said}): check that both branches exist on ${projectPath}`);
      }
      if (response.status >= 500) throw unavailable(`${doing}: GitLab answered ${response.status} (${said}): try again later`);
      throw new BerthError('internal', `${doing}: GitLab answered ${response.status}: ${said}`);
    },

    async findChangeRequest(o: { head: string; base: string }): Promise<ChangeRequest | null> {
      if (!token) return null;
      const doing = `listing the merge requests from ${o.head} into ${o.base} on ${projectPath}`;
      const redactor = new Redactor([{ name: 'token', value: token }]);
      // Only an open one is what a create's 409 meant; GitLab lists every state unless asked.
      const query = new URLSearchParams({ source_branch: o.head, target_branch: o.base, state: 'opened' });
      let response: Response;
      try {
        response = await hostFetch(`${apiUrl}/projects/${encodeURIComponent(projectPath)}/merge_requests?${query}`, { headers: { 'private-token': token, accept: 'application/json', 'user-agent': 'berth' }, signal: AbortSignal.timeout(API_TIMEOUT_MS) });
      } catch (e) {
        throw unavailable(`${doing}: GitLab could not be reached at ${apiUrl} (${redactor.redact(e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e))}): try again later`);
      }
      const text = await response.text();
      let data: unknown = null;
      try {
        data = JSON.parse(text);
      } catch {
        // not JSON: a proxy's error page, say
      }
      if (!response.ok) {
        const said = redactor.redact(gitlabMessage(data) ?? text.slice(0, 200));
        if (response.status === 401) throw invalid(`${doing}: GitLab refused the token (${said}): ${tokenHint}; it needs the api scope`);
        if (response.status === 404) throw notFound(`${doing}: GitLab has no project ${projectPath} that this token can see (${said}): check the URL and ${tokenHint.replace(/^check /, '')}`);
        throw unavailable(`${doing}: GitLab answered ${response.status} (${said}): try again later`);
      }
      if (!Array.isArray(data)) return null;
      type Listed = { iid?: unknown; web_url?: unknown; draft?: unknown; work_in_progress?: unknown; source_branch?: unknown; target_branch?: unknown; source_project_id?: unknown; target_project_id?: unknown } | null;
      // The project's list has merge requests from forks too: a fork's branch of the same name is
      // someone else's work. The branches are checked again for a GitLab that ignores the filters.
      const found = (data as Listed[]).find((m) => typeof m?.iid === 'number' && m.source_branch === o.head && m.target_branch === o.base && m.source_project_id === m.target_project_id);
      if (!found) return null;
      const draft = typeof found.draft === 'boolean' ? found.draft : found.work_in_progress === true;
      return { kind: 'merge_request', url: typeof found.web_url === 'string' ? found.web_url : null, number: found.iid as number, draft };
    },
  };
}

/** GitLab puts its reason in `message` (a string, a list, or field → list) or `error`. */
function gitlabMessage(data: unknown): string | null {
  if (!data || typeof data !== 'object') return null;
  const { message, error } = data as { message?: unknown; error?: unknown };
  const flat = (v: unknown): string[] =>
    typeof v === 'string' ? [v] : Array.isArray(v) ? v.flatMap(flat) : v && typeof v === 'object' ? Object.entries(v).flatMap(([k, x]) => flat(x).map((m) => `${k} ${m}`)) : [];
  const parts = [...flat(message), ...flat(error)];
  return parts.length > 0 ? parts.join('; ') : null;
}
