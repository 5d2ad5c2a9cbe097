// What a forge says of a pull/merge request once it is open, and the one change Berth makes to
// it afterwards: a campaign asks each open one's state (open, merged, closed), its checks and
// its reviews, and `campaign approve` marks a draft ready for review. GitHub: REST for the
// reading, GraphQL's markPullRequestReadyForReview for the draft (REST cannot change it).
// GitLab: REST v4; a draft is a title starting with "Draft:", so ready is the title without it.
import { createAppAuth } from '@octokit/auth-app';
import { Octokit } from '@octokit/core';
import { RequestError } from '@octokit/request-error';
import { BerthError, conflict, invalid, notFound, unavailable } from '../shared/errors.ts';
import { Redactor } from '../shared/redact.ts';
import type { ChangeRequest } from '../shared/tasks.ts';
import { githubApiUrl, githubMessage } from './github.ts';
import { gitlabProject } from './gitlab.ts';
import type { ForgeAuth, ForgeSettings } from './index.ts';
import { detectKind, parseRepoUrl, type RepoLocation } from './url.ts';
import { hostFetch } from './upstream.ts';

const API_TIMEOUT_MS = 30_000;
const SILENT = { debug() {}, info() {}, warn() {}, error() {} };

/** The permissions an App token for reading a pull request's state and marking it ready asks for. */
export const REVIEW_TOKEN_PERMISSIONS = { pull_requests: 'write', checks: 'read', statuses: 'read' } as const;

export type ChangeRequestState = 'open' | 'merged' | 'closed';
export type ChecksState = 'passing' | 'failing' | 'pending';
export type ReviewState = 'approved' | 'changes_requested' | 'none';

export interface ChangeRequestStatus {
  state: ChangeRequestState;
  /** null: the forge knows of no check (no status, check run or pipeline). */
  checks: ChecksState | null;
  review: ReviewState;
  draft: boolean;
}

export interface ChangeRequestReviewer {
  status(cr: ChangeRequest): Promise<ChangeRequestStatus>;
  /** Marks a draft ready for review; 'already' when it was not a draft. A closed one is refused (conflict). */
  markReady(cr: ChangeRequest): Promise<'ready' | 'already'>;
}

/** The reviewer of a GitHub or GitLab repository's change requests (plain git has none: null). */
export function reviewerFor(repoUrl: string, settings: ForgeSettings, auth: ForgeAuth): ChangeRequestReviewer | null {
  const parsed = parseRepoUrl(repoUrl);
  const kind = settings.kind ?? (settings.app ? 'github' : detectKind(parsed));
  if (kind === 'git' || parsed.kind === 'local') return null;
  const web: Extract<RepoLocation, { kind: 'http' }> = parsed.kind === 'ssh' ? { kind: 'http', url: `https://${parsed.host}/${parsed.path}`, origin: `https://${parsed.host}`, host: parsed.host, path: parsed.path } : parsed;
  return kind === 'github' ? githubReviewer(web, settings, auth) : gitlabReviewer(web, settings, auth);
}

/** Check runs that ended so: the change is not green. */
const FAILED_CONCLUSIONS = new Set(['failure', 'timed_out', 'cancelled', 'action_required', 'startup_failure']);

function githubReviewer(location: Extract<RepoLocation, { kind: 'http' }>, settings: ForgeSettings, auth: ForgeAuth): ChangeRequestReviewer {
  const parts = location.path.replace(/\.git$/, '').split('/');
  const [owner, repo] = parts;
  if (parts.length !== 2 || !owner || !repo) throw invalid(`${location.url} is not a GitHub repository URL: give https://HOST/OWNER/REPO`);
  const baseUrl = githubApiUrl(location, settings);
  const fullName = `${owner}/${repo}`;
  const hint = settings.app ? `check the GitHub App ${settings.app.appId}'s installation ${settings.app.installationId} and its permissions (pull requests: write, checks and statuses: read)` : `check the token in secret "${settings.tokenSecret ?? '(none set: name one in tokenSecret)'}"`;
  const appAuth =
    auth && 'app' in auth
      ? createAppAuth({ appId: auth.app.appId, privateKey: auth.app.privateKey, installationId: auth.app.installationId, request: new Octokit({ baseUrl, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } }).request })
      : null;
  let client: { octokit: Octokit; redactor: Redactor } | undefined;

  async function octokit(doing: string): Promise<{ octokit: Octokit; redactor: Redactor }> {
    if (client) return client;
    let token: string | null = auth && 'token' in auth ? auth.token : null;
    if (appAuth) {
      try {
        token = (await appAuth({ type: 'installation', repositoryNames: [repo!], permissions: { ...REVIEW_TOKEN_PERMISSIONS } })).token;
      } catch (e) {
        throw e instanceof RequestError ? fail(e, `${doing}: getting an installation token`, new Redactor([])) : e;
      }
    }
    if (!token) throw invalid(`${doing} needs credentials: name a token secret (tokenSecret) or a GitHub App (app) in the project's forge settings`);
    client = { octokit: new Octokit({ baseUrl, auth: token, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } }), redactor: new Redactor([{ name: 'token', value: token }]) };
    return client;
  }

  function fail(e: RequestError, doing: string, redactor: Redactor): BerthError {
    const said = redactor.redact(githubMessage(e));
    if (!e.response) return unavailable(`${doing}: GitHub could not be reached at ${baseUrl} (${said}): check apiUrl and the network, then try again`);
    if ((e.status === 403 || e.status === 429) && (e.response.headers['x-ratelimit-remaining'] === '0' || /rate limit/i.test(said))) return new BerthError('rate_limited', `${doing}: GitHub's rate limit is used up (${said}): try again later`);
    if (e.status === 401) return invalid(`${doing}: GitHub refused the credentials (${said}): ${hint}`);
    if (e.status === 403) return invalid(`${doing}: GitHub denied it (${said}): ${hint}`);
    if (e.status === 404) return notFound(`${doing}: GitHub has no such pull request on ${fullName} that these credentials can see (${said})`);
    if (e.status >= 500) return unavailable(`${doing}: GitHub answered ${e.status} (${said}): try again later`);
    return new BerthError('internal', `${doing}: GitHub answered ${e.status}: ${said}`);
  }

  async function call<T>(doing: string, fn: (o: Octokit) => Promise<T>): Promise<T> {
    const { octokit: o, redactor } = await octokit(doing);
    try {
      return await fn(o);
    } catch (e) {
      if (e instanceof RequestError) throw fail(e, doing, redactor);
      // @octokit/graphql's GraphqlResponseError: the request went through, the mutation was refused.
      if (e instanceof Error && e.name === 'GraphqlResponseError') {
        const errors = (e as Error & { errors?: { message?: string }[] }).errors;
        throw conflict(`${doing}: GitHub refused it (${redactor.redact(errors?.map((x) => x.message).join('; ') || e.message)})`);
      }
      throw e;
    }
  }

  const numberOf = (cr: ChangeRequest) => {
    if (cr.kind !== 'pull_request' || cr.number === null) throw invalid(`${cr.url ?? 'this change'} is not a GitHub pull request`);
    return cr.number;
  };
  const signal = () => AbortSignal.timeout(API_TIMEOUT_MS);

  return {
    async status(cr) {
      const number = numberOf(cr);
      const doing = `reading pull request #${number} of ${fullName}`;
      return call(doing, async (o) => {
        const pull = (await o.request('GET /repos/{owner}/{repo}/pulls/{pull_number}', { owner: owner!, repo: repo!, pull_number: number, request: { signal: signal() } })).data;
        const state: ChangeRequestState = pull.merged ? 'merged' : pull.state === 'closed' ? 'closed' : 'open';
        const sha = pull.head.sha;
        const [combined, runs, reviews] = await Promise.all([
          o.request('GET /repos/{owner}/{repo}/commits/{ref}/status', { owner: owner!, repo: repo!, ref: sha, request: { signal: signal() } }),
          o.request('GET /repos/{owner}/{repo}/commits/{ref}/check-runs', { owner: owner!, repo: repo!, ref: sha, per_page: 100, request: { signal: signal() } }),
          o.request('GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews', { owner: owner!, repo: repo!, pull_number: number, per_page: 100, request: { signal: signal() } }),
        ]);
        // Statuses and check runs together: any failed is failing, any unfinished pending.
        const outcomes: ChecksState[] = [];
        if (combined.data.total_count > 0) outcomes.push(combined.data.state === 'success' ? 'passing' : combined.data.state === 'pending' ? 'pending' : 'failing');
        for (const run of runs.data.check_runs) outcomes.push(run.status !== 'completed' ? 'pending' : FAILED_CONCLUSIONS.has(run.conclusion ?? '') ? 'failing' : 'passing');
        const checks = outcomes.includes('failing') ? 'failing' : outcomes.includes('pending') ? 'pending' : outcomes.length ? 'passing' : null;
        // Each reviewer's latest approval or request for changes counts (a dismissed one no longer does).
        const latest = new Map<string, string>();
        for (const r of reviews.data) if (r.user && ['APPROVED', 'CHANGES_REQUESTED', 'DISMISSED'].includes(r.state)) latest.set(r.user.login, r.state);
        const said = [...latest.values()];
        const review: ReviewState = said.includes('CHANGES_REQUESTED') ? 'changes_requested' : said.includes('APPROVED') ? 'approved' : 'none';
        return { state, checks, review, draft: pull.draft ?? false };
      });
    },

    async markReady(cr) {
      const number = numberOf(cr);
      const doing = `marking pull request #${number} of ${fullName} ready for review`;
      return call(doing, async (o) => {
        const pull = (await o.request('GET /repos/{owner}/{repo}/pulls/{pull_number}', { owner: owner!, repo: repo!, pull_number: number, request: { signal: signal() } })).data;
        if (pull.state !== 'open') throw conflict(`${doing}: it is ${pull.merged ? 'merged' : 'closed'}`);
        if (!pull.draft) return 'already';
        await o.graphql('mutation($id: ID!) { markPullRequestReadyForReview(input: { pullRequestId: $id }) { pullRequest { isDraft } } }', { id: pull.node_id, request: { signal: signal() } });
        return 'ready';
      });
    },
  };
}

const DRAFT_PREFIX = /^\s*(?:\[draft\]|\(draft\)|draft:|draft\s*-|\[wip\]|wip:)\s*/i;

function gitlabReviewer(location: Extract<RepoLocation, { kind: 'http' }>, settings: ForgeSettings, auth: ForgeAuth): ChangeRequestReviewer {
  const { apiUrl, projectPath } = gitlabProject({ ...location, path: location.path.replace(/\.git$/, '') }, settings);
  const token = auth && 'token' in auth ? auth.token : null;
  const hint = `check the token in secret "${settings.tokenSecret ?? '(none set: name one in tokenSecret)'}"`;
  const redactor = new Redactor(token ? [{ name: 'token', value: token }] : []);

  async function api(doing: string, method: string, path: string, body?: unknown, { optional = false } = {}): Promise<unknown> {
    if (!token) throw invalid(`${doing} needs a token: name a token secret (tokenSecret) in the project's forge settings`);
    let res: Response;
    try {
      res = await hostFetch(`${apiUrl}/projects/${encodeURIComponent(projectPath)}${path}`, {
        method,
        headers: { 'private-token': token, accept: 'application/json', 'user-agent': 'berth', ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(API_TIMEOUT_MS),
      });
    } catch (e) {
      throw unavailable(`${doing}: GitLab could not be reached at ${apiUrl} (${redactor.redact(e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e))}): check apiUrl and the network, then try again`);
    }
    const text = await res.text();
    let data: unknown = null;
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON
    }
    if (res.ok) return data;
    if (optional && res.status === 404) return null;
    const said = redactor.redact(typeof (data as { message?: unknown })?.message === 'string' ? (data as { message: string }).message : text.slice(0, 200));
    if (res.status === 401) throw invalid(`${doing}: GitLab refused the token (${said}): ${hint}; it needs the api scope`);
    if (res.status === 403) throw invalid(`${doing}: GitLab denied it (${said}): the token's user needs at least the Developer role on ${projectPath}; ${hint}`);
    if (res.status === 404) throw notFound(`${doing}: GitLab has no such merge request on ${projectPath} that this token can see (${said})`);
    if (res.status === 429) throw new BerthError('rate_limited', `${doing}: GitLab's rate limit is used up (${said}): try again later`);
    if (res.status >= 500) throw unavailable(`${doing}: GitLab answered ${res.status} (${said}): try again later`);
    throw new BerthError('internal', `${doing}: GitLab answered ${res.status}: ${said}`);
  }

  const iidOf = (cr: ChangeRequest) => {
    if (cr.kind !== 'merge_request' || cr.number === null) throw invalid(`${cr.url ?? 'this change'} is not a GitLab merge request`);
    return cr.number;
  };
  type Mr = { state?: string; draft?: boolean; work_in_progress?: boolean; title?: string; head_pipeline?: { status?: string } | null; pipeline?: { status?: string } | null };
  const isDraft = (mr: Mr) => (typeof mr.draft === 'boolean' ? mr.draft : typeof mr.work_in_progress === 'boolean' ? mr.work_in_progress : DRAFT_PREFIX.test(mr.title ?? ''));

  return {
    async status(cr) {
      const iid = iidOf(cr);
      const doing = `reading merge request !${iid} of ${projectPath}`;
      const mr = ((await api(doing, 'GET', `/merge_requests/${iid}`)) ?? {}) as Mr;
      const state: ChangeRequestState = mr.state === 'merged' ? 'merged' : mr.state === 'closed' ? 'closed' : 'open';
      const pipeline = (mr.head_pipeline ?? mr.pipeline)?.status;
      const checks: ChecksState | null = !pipeline ? null : pipeline === 'success' ? 'passing' : ['failed', 'canceled', 'canceling'].includes(pipeline) ? 'failing' : pipeline === 'skipped' || pipeline === 'manual' ? null : 'pending';
      // Reviewers who asked for changes (GitLab 17), then approvals.
      const reviewers = (await api(doing, 'GET', `/merge_requests/${iid}/reviewers`, undefined, { optional: true })) as { state?: string }[] | null;
      const approvals = (await api(doing, 'GET', `/merge_requests/${iid}/approvals`, undefined, { optional: true })) as { approved_by?: unknown[] } | null;
      const review: ReviewState = reviewers?.some((r) => r.state === 'requested_changes') ? 'changes_requested' : approvals?.approved_by?.length || reviewers?.some((r) => r.state === 'approved') ? 'approved' : 'none';
      return { state, checks, review, draft: isDraft(mr) };
    },

    async markReady(cr) {
      const iid = iidOf(cr);
      const doing = `marking merge request !${iid} of ${projectPath} ready`;
      const mr = ((await api(doing, 'GET', `/merge_requests/${iid}`)) ?? {}) as Mr;
      if (mr.state !== 'opened') throw conflict(`${doing}: it is ${mr.state ?? 'not open'}`);
      if (!isDraft(mr)) return 'already';
      let title = mr.title ?? '';
      while (DRAFT_PREFIX.test(title)) title = title.replace(DRAFT_PREFIX, '');
      const updated = ((await api(doing, 'PUT', `/merge_requests/${iid}`, { title })) ?? {}) as Mr;
      if (isDraft(updated)) throw new BerthError('internal', `${doing}: GitLab still says it is a draft after its title lost the Draft: prefix`);
      return 'ready';
    },
  };
}
