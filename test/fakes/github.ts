// A GitHub for tests: the REST endpoints Berth calls, with GitHub's request and response
// shapes and errors, and git's smart HTTP for the same repositories, on loopback. Layout as
// on GitHub Enterprise Server: the API under /api/v3, repositories at /OWNER/REPO.git.
//
// Credentials are checked as GitHub does: personal tokens (`Authorization: token X` or
// `Bearer X`) see every repository; a GitHub App signs a JWT (RS256) to get an installation
// token, which sees only the repositories and permissions it was issued for. git takes
// either as Basic `x-access-token:<token>`.
//
// Issues and pull requests share one numbering per repository, as on GitHub; an App's
// comments are written by its bot user (`SLUG[bot]`, type Bot). `repositoryJson` and
// `issueJson` are the shapes the REST API answers with and webhook payloads carry.
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeServer, createBareRepo, listen, readJson, refSha, runGit, sendJson, serveGit, type GitRequestRecord } from './git-server.ts';

export interface FakeGitHubApp {
  appId: string;
  /** The App's public key (PEM or KeyObject); JWTs must verify against it. */
  publicKey: string | KeyObject;
  installationId: number;
  /** `owner/repo` names the installation covers; all when omitted. */
  repositories?: string[];
  /** The App's slug (its bot user is `SLUG[bot]`); default `berth`. */
  slug?: string;
}

export interface IssueRecord {
  number: number;
  /** `owner/repo`. */
  repository: string;
  title: string;
  body: string | null;
  /** The login that opened it. */
  user: string;
  /** A pull request (GitHub's issues API lists those too). */
  pullRequest: boolean;
  htmlUrl: string;
}

export interface CommentRecord {
  id: number;
  /** `owner/repo`. */
  repository: string;
  /** The issue or pull request number. */
  issue: number;
  body: string;
  user: string;
  /** Every body it had, first to last (an edit adds one). */
  bodies: string[];
  /** The App that wrote it (its slug), or null for a person. */
  viaApp: string | null;
}

export type RepoPermission = 'admin' | 'maintain' | 'write' | 'triage' | 'read' | 'none';

export interface PullRecord {
  number: number;
  /** `owner/repo`. */
  repository: string;
  title: string;
  body: string | null;
  head: string;
  base: string;
  draft: boolean;
  headSha: string;
  baseSha: string;
  htmlUrl: string;
  /** The token that opened it. */
  token: string;
  /** open or closed (a merged one is closed and merged), as GET …/pulls/N says. */
  state: 'open' | 'closed';
  merged: boolean;
  /** Its GraphQL id (what markPullRequestReadyForReview takes). */
  nodeId: string;
}

/** A commit status (POST /repos/O/R/statuses/SHA on GitHub): what the combined status adds up. */
export interface StatusRecord {
  repository: string;
  sha: string;
  context: string;
  state: 'error' | 'failure' | 'pending' | 'success';
}

/** A check run (GitHub Actions and other Apps make them). */
export interface CheckRunRecord {
  repository: string;
  sha: string;
  name: string;
  status: 'queued' | 'in_progress' | 'completed';
  conclusion: 'success' | 'failure' | 'neutral' | 'cancelled' | 'skipped' | 'timed_out' | 'action_required' | null;
}

/** A pull request review, as GET …/pulls/N/reviews lists it. */
export interface ReviewRecord {
  id: number;
  repository: string;
  pull: number;
  user: string;
  state: 'APPROVED' | 'CHANGES_REQUESTED' | 'COMMENTED' | 'DISMISSED';
}

export interface IssuedToken {
  token: string;
  appId: string;
  installationId: number;
  /** `owner/repo` names, as requested. */
  repositories: string[];
  permissions: Record<string, string>;
  expiresAt: string;
}

export interface ApiRequestRecord {
  method: string;
  /** Under the API root: `/repos/o/r/pulls`. */
  path: string;
  /** How the request authenticated: 'token' (personal or installation), 'jwt' (an App), or not. */
  auth: 'token' | 'jwt' | 'none' | 'refused';
  /** When it arrived (Date.now()). */
  at: number;
}

export interface FakeGitHub {
  /** `http://127.0.0.1:PORT`: the web and git root. */
  url: string;
  /** `${url}/api/v3`: give it as the forge's apiUrl. */
  apiUrl: string;
  /** Where the bare repositories live (`ROOT/owner/repo.git`). */
  root: string;
  /** The clone URL of `owner/repo`. */
  repoUrl(fullName: string): string;
  createRepo(fullName: string, files: Record<string, string | Buffer>, defaultBranch?: string): Promise<{ path: string; sha: string }>;
  /** Accepts another personal token from now on. */
  addToken(token: string): void;
  /** Opens an issue (numbered with the pull requests). */
  createIssue(fullName: string, o: { title: string; body?: string | null; user?: string }): IssueRecord;
  /** A person's comment on an issue or pull request. */
  addComment(fullName: string, issue: number, o: { user: string; body: string }): CommentRecord;
  /** A line comment of a pull request review (what GET …/reviews/ID/comments lists). */
  addReviewComment(fullName: string, pull: number, o: { reviewId: number; user: string; path: string; line: number; body: string }): void;
  /** A collaborator's permission on a repository (everyone else has `none`). */
  setPermission(fullName: string, login: string, permission: RepoPermission): void;
  /** The repository as the REST API and webhook payloads show it. */
  repositoryJson(fullName: string): Record<string, unknown>;
  /** An issue (or a pull request seen as an issue) as the REST API and webhook payloads show it. */
  issueJson(fullName: string, issue: number): Record<string, unknown>;
  /** Merges a pull request as the web UI's button would (closed and merged; the base branch is left as it was). */
  mergePull(fullName: string, number: number): void;
  /** Closes a pull request without merging it. */
  closePull(fullName: string, number: number): void;
  /** The next pull request opened on `fullName` is made, but its answer is a 502 (lost on the way). */
  loseNextPullAnswer(fullName: string): void;
  /** A commit status on a commit (of a pull request's head, say). */
  setStatus(fullName: string, sha: string, o: { context: string; state: StatusRecord['state'] }): void;
  /** A check run on a commit; a later one of the same name replaces it. */
  setCheckRun(fullName: string, sha: string, o: { name: string; status: CheckRunRecord['status']; conclusion?: CheckRunRecord['conclusion'] }): void;
  /** A review of a pull request. */
  addReview(fullName: string, pull: number, o: { user: string; state: ReviewRecord['state'] }): ReviewRecord;
  /** The GraphQL mutations asked for (POST /api/graphql), in order: the operation's name and its variables. */
  graphqlRequests: { operation: string; variables: Record<string, unknown>; at: number }[];
  pulls: PullRecord[];
  issues: IssueRecord[];
  comments: CommentRecord[];
  issuedTokens: IssuedToken[];
  apiRequests: ApiRequestRecord[];
  gitRequests: GitRequestRecord[];
  /** Stops the server; removes `root` if the server made it. */
  close(): Promise<void>;
}

interface RepoInfo {
  id: number;
  owner: string;
  name: string;
  defaultBranch: string;
}

type Caller = { kind: 'pat'; token: string } | { kind: 'installation'; token: string; issued: IssuedToken } | null;

const notFoundBody = { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' };

export async function startFakeGitHub(o: { tokens?: string[]; apps?: FakeGitHubApp[]; root?: string } = {}): Promise<FakeGitHub> {
  const ownRoot = o.root === undefined;
  const root = o.root ?? (await mkdtemp(join(tmpdir(), 'berth-fake-github-')));
  const tokens = new Set(o.tokens ?? []);
  const apps = (o.apps ?? []).map((app) => ({ ...app, key: typeof app.publicKey === 'string' ? createPublicKey(app.publicKey) : app.publicKey }));
  const repos = new Map<string, RepoInfo>();
  const pulls: PullRecord[] = [];
  const issues: IssueRecord[] = [];
  const comments: CommentRecord[] = [];
  const permissions = new Map<string, RepoPermission>();
  const reviewComments: { repository: string; pull: number; reviewId: number; user: string; path: string; line: number; body: string }[] = [];
  const issuedTokens: IssuedToken[] = [];
  const apiRequests: ApiRequestRecord[] = [];
  const statuses: StatusRecord[] = [];
  const checkRuns: CheckRunRecord[] = [];
  const reviews: ReviewRecord[] = [];
  const graphqlRequests: { operation: string; variables: Record<string, unknown>; at: number }[] = [];
  const losePullAnswers = new Set<string>();
  const gitRequests: GitRequestRecord[] = [];
  let url = '';

  /** Who a token is, or null: a personal token, or an unexpired installation token. */
  function caller(token: string): Caller {
    if (tokens.has(token)) return { kind: 'pat', token };
    const issued = issuedTokens.find((t) => t.token === token);
    if (issued && Date.parse(issued.expiresAt) > Date.now()) return { kind: 'installation', token, issued };
    return null;
  }
  const canSee = (c: Caller, fullName: string) => c !== null && (c.kind === 'pat' || c.issued.repositories.includes(fullName));
  const canWrite = (c: Caller, permission: string) => c !== null && (c.kind === 'pat' || c.issued.permissions[permission] === 'write');
  const canRead = (c: Caller, permission: string) => c !== null && (c.kind === 'pat' || c.issued.permissions[permission] === 'read' || c.issued.permissions[permission] === 'write');
  const forbidden = { message: 'Resource not accessible by integration', documentation_url: 'https://docs.github.com/rest', status: '403' };
  /** Issues and pull requests take their numbers from one sequence per repository. */
  const nextNumber = (fullName: string) => issues.filter((i) => i.repository === fullName).length + 1;
  const userJson = (login: string) => ({ login, id: 5000 + [...login].reduce((n, ch) => n + ch.charCodeAt(0), 0), node_id: `U_${login}`, type: login.endsWith('[bot]') ? 'Bot' : 'User', site_admin: false, html_url: `${url}/${login}` });
  const appOf = (c: Caller) => (c?.kind === 'installation' ? apps.find((a) => a.appId === c.issued.appId) : undefined);
  const slugOf = (app: (typeof apps)[number]) => app.slug ?? 'berth';

  function repositoryJson(fullName: string): Record<string, unknown> {
    const repo = repos.get(fullName);
    if (!repo) throw new Error(`no repository ${fullName} on the fake GitHub`);
    const host = new URL(url).host;
    return {
      id: repo.id,
      node_id: `R_${repo.id}`,
      name: repo.name,
      full_name: fullName,
      private: true,
      owner: userJson(repo.owner),
      html_url: `${url}/${fullName}`,
      url: `${url}/api/v3/repos/${fullName}`,
      git_url: `git://${host}/${fullName}.git`,
      ssh_url: `git@${host}:${fullName}.git`,
      clone_url: `${url}/${fullName}.git`,
      default_branch: repo.defaultBranch,
      visibility: 'private',
    };
  }

  function issueJson(fullName: string, number: number): Record<string, unknown> {
    const issue = issues.find((i) => i.repository === fullName && i.number === number);
    if (!issue) throw new Error(`no issue ${fullName}#${number} on the fake GitHub`);
    const api = `${url}/api/v3/repos/${fullName}`;
    return {
      url: `${api}/issues/${number}`,
      repository_url: api,
      comments_url: `${api}/issues/${number}/comments`,
      html_url: issue.htmlUrl,
      id: 7000 + issues.indexOf(issue),
      node_id: `I_${issues.indexOf(issue)}`,
      number,
      title: issue.title,
      user: userJson(issue.user),
      labels: [],
      state: 'open',
      locked: false,
      assignee: null,
      assignees: [],
      comments: comments.filter((c) => c.repository === fullName && c.issue === number).length,
      created_at: '2026-01-01T00:00:00Z',
      updated_at: '2026-01-01T00:00:00Z',
      closed_at: null,
      author_association: 'OWNER',
      body: issue.body,
      ...(issue.pullRequest ? { pull_request: { url: `${api}/pulls/${number}`, html_url: issue.htmlUrl, diff_url: `${issue.htmlUrl}.diff`, patch_url: `${issue.htmlUrl}.patch`, merged_at: null } } : {}),
    };
  }

  function commentJson(c: CommentRecord): Record<string, unknown> {
    const app = c.viaApp ? apps.find((a) => slugOf(a) === c.viaApp) : undefined;
    return {
      id: c.id,
      node_id: `IC_${c.id}`,
      url: `${url}/api/v3/repos/${c.repository}/issues/comments/${c.id}`,
      html_url: `${issues.find((i) => i.repository === c.repository && i.number === c.issue)?.htmlUrl}#issuecomment-${c.id}`,
      issue_url: `${url}/api/v3/repos/${c.repository}/issues/${c.issue}`,
      body: c.body,
      user: userJson(c.user),
      created_at: '2026-01-01T00:00:00Z',
      updated_at: '2026-01-01T00:00:00Z',
      author_association: c.viaApp ? 'NONE' : 'OWNER',
      performed_via_github_app: app ? { id: Number(app.appId), slug: slugOf(app), name: slugOf(app) } : null,
    };
  }

  function addComment(fullName: string, issue: number, o: { user: string; body: string; viaApp?: string | null }): CommentRecord {
    const c: CommentRecord = { id: 900_000 + comments.length + 1, repository: fullName, issue, body: o.body, user: o.user, bodies: [o.body], viaApp: o.viaApp ?? null };
    comments.push(c);
    return c;
  }

  const git = {
    root,
    records: gitRequests,
    authorize: (header: string | undefined, repo: string) => {
      const basic = /^Basic (.+)$/i.exec(header ?? '')?.[1];
      if (!basic) return false;
      const decoded = Buffer.from(basic, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0 || decoded.slice(0, colon) !== 'x-access-token') return false;
      return canSee(caller(decoded.slice(colon + 1)), repo.replace(/\.git$/, ''));
    },
  };

  /** Verifies an App's JWT as GitHub does: RS256 by the App's key, iss the App, not expired, at most 10 minutes long. */
  function verifyJwt(jwt: string): (typeof apps)[number] | null {
    const [header, payload, signature] = jwt.split('.');
    if (!header || !payload || !signature) return null;
    let claims: { iss?: unknown; iat?: unknown; exp?: unknown };
    try {
      if (JSON.parse(Buffer.from(header, 'base64url').toString('utf8')).alg !== 'RS256') return null;
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    } catch {
      return null;
    }
    const app = apps.find((a) => a.appId === String(claims.iss));
    if (!app) return null;
    if (!verify('RSA-SHA256', Buffer.from(`${header}.${payload}`), app.key, Buffer.from(signature, 'base64url'))) return null;
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number') return null;
    if (claims.exp <= now || claims.iat > now + 60 || claims.exp - claims.iat > 660) return null;
    return app;
  }

  async function api(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const authorization = req.headers.authorization ?? '';
    const credential = /^(?:token|bearer) (.+)$/i.exec(authorization)?.[1];
    const record: ApiRequestRecord = { method, path, auth: credential === undefined ? 'none' : 'refused', at: Date.now() };
    apiRequests.push(record);

    const accessTokens = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path);
    if (accessTokens && method === 'POST') {
      const app = credential ? verifyJwt(credential) : null;
      if (!app) return sendJson(res, 401, { message: 'A JSON web token could not be decoded', documentation_url: 'https://docs.github.com/rest' });
      record.auth = 'jwt';
      if (Number(accessTokens[1]) !== app.installationId) return sendJson(res, 404, notFoundBody);
      const body = (await readJson(req)) as { repositories?: unknown; permissions?: unknown } | undefined;
      const names = Array.isArray(body?.repositories) ? body.repositories.filter((r): r is string => typeof r === 'string') : [];
      const permissions = body?.permissions && typeof body.permissions === 'object' ? (body.permissions as Record<string, string>) : null;
      // Berth must always narrow its tokens: a whole-installation token is refused here.
      if (names.length === 0 || !permissions || Object.keys(permissions).length === 0) {
        return sendJson(res, 422, { message: 'this fake GitHub requires repositories and permissions in every token request', documentation_url: 'https://docs.github.com/rest' });
      }
      if (Object.values(permissions).some((v) => v !== 'read' && v !== 'write')) return sendJson(res, 422, { message: 'Invalid permission value', documentation_url: 'https://docs.github.com/rest' });
      // GitHub takes repository names relative to the installation's account.
      const fullNames: string[] = [];
      for (const name of names) {
        const match = [...repos.values()].find((r) => r.name === name && (!app.repositories || app.repositories.includes(`${r.owner}/${r.name}`)));
        if (!match) return sendJson(res, 422, { message: 'There is at least one repository that does not exist or is not accessible to the parent installation.', documentation_url: 'https://docs.github.com/rest' });
        fullNames.push(`${match.owner}/${match.name}`);
      }
      const issued: IssuedToken = {
        token: `ghs_${randomBytes(18).toString('base64url')}`,
        appId: app.appId,
        installationId: app.installationId,
        repositories: fullNames,
        permissions,
        expiresAt: new Date(Math.floor(Date.now() / 1000) * 1000 + 3600_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      };
      issuedTokens.push(issued);
      return sendJson(res, 201, {
        token: issued.token,
        expires_at: issued.expiresAt,
        permissions,
        repository_selection: 'selected',
        repositories: fullNames.map((n) => {
          const r = repos.get(n)!;
          return { id: r.id, name: r.name, full_name: n, private: true };
        }),
      });
    }

    if (path === '/app' && method === 'GET') {
      const app = credential ? verifyJwt(credential) : null;
      if (!app) return sendJson(res, 401, { message: 'A JSON web token could not be decoded', documentation_url: 'https://docs.github.com/rest' });
      record.auth = 'jwt';
      return sendJson(res, 200, { id: Number(app.appId), slug: slugOf(app), node_id: `A_${app.appId}`, name: slugOf(app), owner: userJson('acme'), html_url: `${url}/apps/${slugOf(app)}` });
    }

    const who = credential ? caller(credential) : null;
    if (!who) {
      return sendJson(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' });
    }
    record.auth = 'token';

    // Repository search: `org:`/`user:` qualifiers and words of the name; what the token can see, by name.
    if (path === '/search/repositories' && method === 'GET') {
      const query = new URL(req.url ?? '/', 'http://x').searchParams;
      const q = query.get('q') ?? '';
      if (!q.trim()) return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'Search', field: 'q', code: 'missing' }], documentation_url: 'https://docs.github.com/rest' });
      const terms = q.trim().split(/\s+/);
      const owners = terms.filter((x) => /^(org|user):/i.test(x)).map((x) => x.slice(x.indexOf(':') + 1).toLowerCase());
      const words = terms.filter((x) => !x.includes(':')).map((x) => x.toLowerCase());
      const found = [...repos.values()]
        .filter((r) => canSee(who, `${r.owner}/${r.name}`) && (owners.length === 0 || owners.includes(r.owner.toLowerCase())) && words.every((w) => r.name.toLowerCase().includes(w)))
        .sort((a, b) => a.name.localeCompare(b.name));
      const perPage = Math.min(100, Math.max(1, Number(query.get('per_page') ?? 30) || 30));
      const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
      return sendJson(res, 200, { total_count: found.length, incomplete_results: false, items: found.slice((page - 1) * perPage, page * perPage).map((r) => ({ ...repositoryJson(`${r.owner}/${r.name}`), archived: false, score: 1 })) });
    }

    const repoRoute = /^\/repos\/([^/]+)\/([^/]+)(\/pulls)?$/.exec(path) ?? /^\/repos\/([^/]+)\/([^/]+)(\/.+)$/.exec(path);
    if (!repoRoute) return sendJson(res, 404, notFoundBody);
    const fullName = `${repoRoute[1]}/${repoRoute[2]}`;
    const repo = repos.get(fullName);
    if (!repo || !canSee(who, fullName)) return sendJson(res, 404, notFoundBody);
    if (repoRoute[3] && repoRoute[3] !== '/pulls') return repoApi(req, res, who, fullName, repoRoute[3]);

    if (!repoRoute[3] && method === 'GET') {
      return sendJson(res, 200, {
        id: repo.id,
        name: repo.name,
        full_name: fullName,
        owner: { login: repo.owner, type: 'User' },
        private: true,
        html_url: `${url}/${fullName}`,
        clone_url: `${url}/${fullName}.git`,
        default_branch: repo.defaultBranch,
      });
    }
    if (repoRoute[3] && method === 'GET') {
      const query = new URL(req.url ?? '/', 'http://x').searchParams;
      const head = query.get('head')?.replace(/^[^:]+:/, '');
      const base = query.get('base');
      const state = query.get('state') ?? 'open';
      const found = pulls.filter((p) => p.repository === fullName && (head === undefined || p.head === head) && (base === null || p.base === base) && (state === 'all' || p.state === state));
      return sendJson(res, 200, found.map((p) => ({ number: p.number, node_id: p.nodeId, state: p.state, title: p.title, draft: p.draft, html_url: p.htmlUrl, head: { ref: p.head, sha: p.headSha }, base: { ref: p.base, sha: p.baseSha } })));
    }
    if (repoRoute[3] && method === 'POST') {
      if (!canWrite(who, 'pull_requests')) return sendJson(res, 403, { message: 'Resource not accessible by integration', documentation_url: 'https://docs.github.com/rest', status: '403' });
      const body = (await readJson(req)) as { title?: unknown; head?: unknown; base?: unknown; body?: unknown; draft?: unknown } | undefined;
      const missing = (['title', 'head', 'base'] as const).filter((f) => typeof body?.[f] !== 'string' || body[f] === '');
      if (!body || missing.length > 0) {
        return sendJson(res, 422, { message: 'Validation Failed', errors: missing.map((field) => ({ resource: 'PullRequest', field, code: 'missing_field' })), documentation_url: 'https://docs.github.com/rest' });
      }
      const head = String(body.head).replace(/^[^:]+:/, '');
      const base = String(body.base);
      const bare = join(root, `${fullName}.git`);
      const [headSha, baseSha] = await Promise.all([refSha(bare, `refs/heads/${head}`), refSha(bare, `refs/heads/${base}`)]);
      const invalidFields = [...(headSha ? [] : ['head']), ...(baseSha ? [] : ['base'])];
      if (invalidFields.length > 0) {
        return sendJson(res, 422, { message: 'Validation Failed', errors: invalidFields.map((field) => ({ resource: 'PullRequest', field, code: 'invalid' })), documentation_url: 'https://docs.github.com/rest' });
      }
      if (pulls.some((p) => p.repository === fullName && p.head === head && p.base === base && p.state === 'open')) {
        return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'PullRequest', code: 'custom', message: `A pull request already exists for ${repo.owner}:${head}.` }], documentation_url: 'https://docs.github.com/rest' });
      }
      const ahead = Number((await runGit(['rev-list', '--count', `${baseSha}..${headSha}`], { cwd: bare })).trim());
      if (ahead === 0) {
        return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'PullRequest', code: 'custom', message: `No commits between ${base} and ${head}` }], documentation_url: 'https://docs.github.com/rest' });
      }
      const number = nextNumber(fullName);
      const pull: PullRecord = {
        number,
        repository: fullName,
        title: String(body.title),
        body: typeof body.body === 'string' ? body.body : null,
        head,
        base,
        draft: body.draft === true,
        headSha: headSha!,
        baseSha: baseSha!,
        htmlUrl: `${url}/${fullName}/pull/${number}`,
        token: who.token,
        state: 'open',
        merged: false,
        nodeId: `PR_${repo.id}_${number}`,
      };
      pulls.push(pull);
      issues.push({ number, repository: fullName, title: pull.title, body: pull.body, user: who.kind === 'pat' ? 'octocat' : `${slugOf(appOf(who)!)}[bot]`, pullRequest: true, htmlUrl: pull.htmlUrl });
      if (losePullAnswers.delete(fullName)) return sendJson(res, 502, { message: 'Server Error' });
      return sendJson(res, 201, {
        id: 1000 + pulls.length,
        node_id: pull.nodeId,
        number,
        state: 'open',
        title: pull.title,
        body: pull.body,
        draft: pull.draft,
        url: `${url}/api/v3/repos/${fullName}/pulls/${number}`,
        html_url: pull.htmlUrl,
        user: { login: who.kind === 'pat' ? 'octocat' : 'berth[bot]' },
        head: { label: `${repo.owner}:${head}`, ref: head, sha: pull.headSha },
        base: { label: `${repo.owner}:${base}`, ref: base, sha: pull.baseSha },
        merged: false,
        mergeable: null,
      });
    }
    return sendJson(res, 404, notFoundBody);
  }

  /** Issues, their comments, collaborators' permissions and a pull request, under /repos/OWNER/REPO. */
  async function repoApi(req: IncomingMessage, res: ServerResponse, who: Caller, fullName: string, sub: string): Promise<void> {
    const method = req.method ?? 'GET';
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    const issueOf = (n: string) => issues.find((i) => i.repository === fullName && i.number === Number(n));

    const permission = /^\/collaborators\/([^/]+)\/permission$/.exec(sub);
    if (permission && method === 'GET') {
      if (!canRead(who, 'metadata') && !canRead(who, 'issues')) return sendJson(res, 403, forbidden);
      const level = permissions.get(`${fullName}|${permission[1]!.toLowerCase()}`) ?? 'none';
      // GitHub's `permission` is the old four-level word; `role_name` the role itself.
      const legacy = level === 'maintain' ? 'write' : level === 'triage' ? 'read' : level;
      return sendJson(res, 200, { permission: legacy, role_name: level, user: { ...userJson(permission[1]!), permissions: { admin: level === 'admin', maintain: level === 'admin' || level === 'maintain', push: ['admin', 'maintain', 'write'].includes(level), triage: level !== 'read' && level !== 'none', pull: level !== 'none' } } });
    }

    const issueRoute = /^\/issues\/(\d+)$/.exec(sub);
    if (issueRoute && method === 'GET') {
      const issue = issueOf(issueRoute[1]!);
      if (!issue) return sendJson(res, 404, notFoundBody);
      if (!canRead(who, 'issues') && !(issue.pullRequest && canRead(who, 'pull_requests'))) return sendJson(res, 403, forbidden);
      return sendJson(res, 200, issueJson(fullName, issue.number));
    }

    const commentsRoute = /^\/issues\/(\d+)\/comments$/.exec(sub);
    if (commentsRoute) {
      const issue = issueOf(commentsRoute[1]!);
      if (!issue) return sendJson(res, 404, notFoundBody);
      if (method === 'GET') {
        if (!canRead(who, 'issues') && !(issue.pullRequest && canRead(who, 'pull_requests'))) return sendJson(res, 403, forbidden);
        const all = comments.filter((c) => c.repository === fullName && c.issue === issue.number);
        const perPage = Math.min(100, Math.max(1, Number(query.get('per_page') ?? 30) || 30));
        const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
        const last = Math.max(1, Math.ceil(all.length / perPage));
        const link = (p: number, rel: string) => `<${url}/api/v3/repos/${fullName}/issues/${issue.number}/comments?per_page=${perPage}&page=${p}>; rel="${rel}"`;
        const links = [...(page < last ? [link(page + 1, 'next'), link(last, 'last')] : []), ...(page > 1 ? [link(1, 'first'), link(page - 1, 'prev')] : [])];
        return sendJson(res, 200, all.slice((page - 1) * perPage, page * perPage).map(commentJson), links.length ? { link: links.join(', ') } : {});
      }
      if (method === 'POST') {
        // Either permission lets an App comment on a pull request; an issue needs issues.
        if (!canWrite(who, 'issues') && !(issue.pullRequest && canWrite(who, 'pull_requests'))) return sendJson(res, 403, forbidden);
        const body = (await readJson(req)) as { body?: unknown } | undefined;
        if (typeof body?.body !== 'string' || body.body === '') return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'IssueComment', field: 'body', code: 'missing_field' }], documentation_url: 'https://docs.github.com/rest' });
        if (body.body.length > 65536) return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'IssueComment', field: 'body', code: 'custom', message: 'body is too long (maximum is 65536 characters)' }], documentation_url: 'https://docs.github.com/rest' });
        const app = appOf(who);
        const made = addComment(fullName, issue.number, { user: app ? `${slugOf(app)}[bot]` : 'octocat', body: body.body, viaApp: app ? slugOf(app) : null });
        return sendJson(res, 201, commentJson(made));
      }
    }

    const editRoute = /^\/issues\/comments\/(\d+)$/.exec(sub);
    if (editRoute && method === 'PATCH') {
      const comment = comments.find((c) => c.repository === fullName && c.id === Number(editRoute[1]));
      if (!comment) return sendJson(res, 404, notFoundBody);
      const app = appOf(who);
      // An App edits only what it wrote.
      if (!canWrite(who, 'issues') && !canWrite(who, 'pull_requests')) return sendJson(res, 403, forbidden);
      if (app && comment.viaApp !== slugOf(app)) return sendJson(res, 403, forbidden);
      const body = (await readJson(req)) as { body?: unknown } | undefined;
      if (typeof body?.body !== 'string' || body.body === '') return sendJson(res, 422, { message: 'Validation Failed', errors: [{ resource: 'IssueComment', field: 'body', code: 'missing_field' }], documentation_url: 'https://docs.github.com/rest' });
      comment.body = body.body;
      comment.bodies.push(body.body);
      return sendJson(res, 200, commentJson(comment));
    }

    const reviewRoute = /^\/pulls\/(\d+)\/reviews\/(\d+)\/comments$/.exec(sub);
    if (reviewRoute && method === 'GET') {
      if (!pulls.some((p) => p.repository === fullName && p.number === Number(reviewRoute[1]))) return sendJson(res, 404, notFoundBody);
      if (!canRead(who, 'pull_requests')) return sendJson(res, 403, forbidden);
      const listed = reviewComments.filter((c) => c.repository === fullName && c.pull === Number(reviewRoute[1]) && c.reviewId === Number(reviewRoute[2]));
      return sendJson(res, 200, listed.map((c, i) => ({ id: 800_000 + i, pull_request_review_id: c.reviewId, path: c.path, line: c.line, original_line: c.line, side: 'RIGHT', body: c.body, user: userJson(c.user), html_url: `${url}/${fullName}/pull/${c.pull}#discussion_r${800_000 + i}` })));
    }

    const pullRoute = /^\/pulls\/(\d+)$/.exec(sub);
    if (pullRoute && method === 'GET') {
      const pull = pulls.find((p) => p.repository === fullName && p.number === Number(pullRoute[1]));
      if (!pull) return sendJson(res, 404, notFoundBody);
      if (!canRead(who, 'pull_requests')) return sendJson(res, 403, forbidden);
      const repo = repos.get(fullName)!;
      // The head as the branch is now: pushes to it after the pull request was opened move it.
      const headSha = pull.state === 'open' ? ((await refSha(join(root, `${fullName}.git`), `refs/heads/${pull.head}`)) ?? pull.headSha) : pull.headSha;
      pull.headSha = headSha;
      return sendJson(res, 200, {
        id: 1000 + pulls.indexOf(pull),
        node_id: pull.nodeId,
        number: pull.number,
        state: pull.state,
        title: pull.title,
        body: pull.body,
        draft: pull.draft,
        merged: pull.merged,
        merged_at: pull.merged ? '2026-01-02T00:00:00Z' : null,
        closed_at: pull.state === 'closed' ? '2026-01-02T00:00:00Z' : null,
        html_url: pull.htmlUrl,
        user: userJson(issueOf(String(pull.number))?.user ?? 'octocat'),
        head: { label: `${repo.owner}:${pull.head}`, ref: pull.head, sha: headSha, repo: repositoryJson(fullName) },
        base: { label: `${repo.owner}:${pull.base}`, ref: pull.base, sha: pull.baseSha, repo: repositoryJson(fullName) },
      });
    }

    const reviewsRoute = /^\/pulls\/(\d+)\/reviews$/.exec(sub);
    if (reviewsRoute && method === 'GET') {
      if (!pulls.some((p) => p.repository === fullName && p.number === Number(reviewsRoute[1]))) return sendJson(res, 404, notFoundBody);
      if (!canRead(who, 'pull_requests')) return sendJson(res, 403, forbidden);
      const listed = reviews.filter((r) => r.repository === fullName && r.pull === Number(reviewsRoute[1]));
      return sendJson(res, 200, listed.map((r) => ({ id: r.id, node_id: `PRR_${r.id}`, user: userJson(r.user), body: '', state: r.state, html_url: `${url}/${fullName}/pull/${r.pull}#pullrequestreview-${r.id}`, submitted_at: '2026-01-02T00:00:00Z', author_association: 'MEMBER' })));
    }

    // The combined status of a ref: failure when any is error or failure, pending when any is (or none exists), else success.
    const statusRoute = /^\/commits\/([^/]+)\/status$/.exec(sub);
    if (statusRoute && method === 'GET') {
      if (!canRead(who, 'statuses')) return sendJson(res, 403, forbidden);
      const sha = await resolveRef(fullName, statusRoute[1]!);
      if (!sha) return sendJson(res, 422, { message: `No commit found for SHA: ${statusRoute[1]}`, documentation_url: 'https://docs.github.com/rest' });
      const mine = statuses.filter((x) => x.repository === fullName && x.sha === sha);
      const state = mine.some((x) => x.state === 'error' || x.state === 'failure') ? 'failure' : mine.length === 0 || mine.some((x) => x.state === 'pending') ? 'pending' : 'success';
      return sendJson(res, 200, { state, sha, total_count: mine.length, statuses: mine.map((x, i) => ({ id: 600_000 + i, context: x.context, state: x.state, description: null, target_url: null })), repository: repositoryJson(fullName) });
    }

    const checkRunsRoute = /^\/commits\/([^/]+)\/check-runs$/.exec(sub);
    if (checkRunsRoute && method === 'GET') {
      if (!canRead(who, 'checks')) return sendJson(res, 403, forbidden);
      const sha = await resolveRef(fullName, checkRunsRoute[1]!);
      if (!sha) return sendJson(res, 422, { message: `No commit found for SHA: ${checkRunsRoute[1]}`, documentation_url: 'https://docs.github.com/rest' });
      const mine = checkRuns.filter((x) => x.repository === fullName && x.sha === sha);
      return sendJson(res, 200, { total_count: mine.length, check_runs: mine.map((x, i) => ({ id: 700_000 + i, name: x.name, head_sha: sha, status: x.status, conclusion: x.conclusion })) });
    }
    return sendJson(res, 404, notFoundBody);
  }

  /** A ref or commit of a repository, as the commit it names; null when there is none. */
  async function resolveRef(fullName: string, ref: string): Promise<string | null> {
    if (/^[0-9a-f]{40}$/.test(ref)) return ref;
    const bare = join(root, `${fullName}.git`);
    return (await refSha(bare, `refs/heads/${ref}`)) ?? (await refSha(bare, `refs/tags/${ref}`));
  }

  /**
   * GraphQL (POST /api/graphql on an Enterprise Server): markPullRequestReadyForReview only,
   * answered as GitHub does: 200 with `data`, or with `errors` (and data null) when refused.
   */
  async function graphql(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const credential = /^(?:token|bearer) (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const who = credential ? caller(credential) : null;
    apiRequests.push({ method: req.method ?? 'POST', path: '/graphql', auth: who ? 'token' : credential ? 'refused' : 'none', at: Date.now() });
    if (req.method !== 'POST') return sendJson(res, 404, notFoundBody);
    if (!who) return sendJson(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/graphql' });
    const body = (await readJson(req)) as { query?: unknown; variables?: unknown } | undefined;
    const query = typeof body?.query === 'string' ? body.query : '';
    const variables = body?.variables && typeof body.variables === 'object' ? (body.variables as Record<string, unknown>) : {};
    const operation = /\b(markPullRequestReadyForReview)\s*\(/.exec(query)?.[1];
    if (!operation) return sendJson(res, 200, { errors: [{ message: 'this fake GitHub answers only the markPullRequestReadyForReview mutation', locations: [{ line: 1, column: 1 }] }] });
    graphqlRequests.push({ operation, variables, at: Date.now() });
    // The id is passed as a variable ($id / $pullRequestId) or written into the query.
    const id = [variables.id, variables.pullRequestId, /pullRequestId:\s*"([^"]+)"/.exec(query)?.[1]].find((v): v is string => typeof v === 'string');
    const pull = pulls.find((p) => p.nodeId === id);
    if (!pull || !canSee(who, pull.repository)) return sendJson(res, 200, { data: { markPullRequestReadyForReview: null }, errors: [{ type: 'NOT_FOUND', path: ['markPullRequestReadyForReview'], message: `Could not resolve to a node with the global id of '${id}'` }] });
    if (!canWrite(who, 'pull_requests')) return sendJson(res, 200, { data: { markPullRequestReadyForReview: null }, errors: [{ type: 'FORBIDDEN', path: ['markPullRequestReadyForReview'], message: 'Resource not accessible by integration' }] });
    if (pull.state !== 'open') return sendJson(res, 200, { data: { markPullRequestReadyForReview: null }, errors: [{ type: 'UNPROCESSABLE', path: ['markPullRequestReadyForReview'], message: 'Pull request is closed' }] });
    pull.draft = false;
    return sendJson(res, 200, { data: { markPullRequestReadyForReview: { pullRequest: { id: pull.nodeId, number: pull.number, isDraft: false } } } });
  }

  const pullOf = (fullName: string, number: number) => {
    const pull = pulls.find((p) => p.repository === fullName && p.number === number);
    if (!pull) throw new Error(`no pull request ${fullName}#${number} on the fake GitHub`);
    return pull;
  };

  const server = createServer((req, res) => {
    const parsed = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(parsed.pathname);
    if (path === '/api/graphql') {
      graphql(req, res).catch((e: unknown) => sendJson(res, 500, { message: String(e) }));
      return;
    }
    if (path.startsWith('/api/v3/')) {
      api(req, res, path.slice('/api/v3'.length)).catch((e: unknown) => sendJson(res, 500, { message: String(e) }));
      return;
    }
    if (/^\/[^/]+\/[^/]+\.git\//.test(path)) return serveGit(git, req, res, path, parsed.search.replace(/^\?/, ''));
    sendJson(res, 404, notFoundBody);
  });
  const port = await listen(server);
  url = `http://127.0.0.1:${port}`;

  return {
    url,
    apiUrl: `${url}/api/v3`,
    root,
    repoUrl: (fullName) => `${url}/${fullName}.git`,
    async createRepo(fullName, files, defaultBranch = 'main') {
      const [owner, name] = fullName.split('/');
      if (!owner || !name) throw new Error(`createRepo wants owner/repo, not ${fullName}`);
      const created = await createBareRepo({ root, name: `${fullName}.git`, files, branch: defaultBranch });
      repos.set(fullName, { id: repos.size + 1, owner, name, defaultBranch });
      return created;
    },
    addToken: (token) => void tokens.add(token),
    createIssue(fullName, o) {
      if (!repos.has(fullName)) throw new Error(`no repository ${fullName} on the fake GitHub`);
      const number = nextNumber(fullName);
      const issue: IssueRecord = { number, repository: fullName, title: o.title, body: o.body ?? null, user: o.user ?? 'octocat', pullRequest: false, htmlUrl: `${url}/${fullName}/issues/${number}` };
      issues.push(issue);
      return issue;
    },
    addComment: (fullName, issue, o) => addComment(fullName, issue, o),
    addReviewComment: (fullName, pull, o) => void reviewComments.push({ repository: fullName, pull, ...o }),
    setPermission: (fullName, login, permission) => void permissions.set(`${fullName}|${login.toLowerCase()}`, permission),
    repositoryJson,
    issueJson,
    mergePull(fullName, number) {
      const pull = pullOf(fullName, number);
      pull.state = 'closed';
      pull.merged = true;
    },
    closePull(fullName, number) {
      pullOf(fullName, number).state = 'closed';
    },
    loseNextPullAnswer(fullName) {
      losePullAnswers.add(fullName);
    },
    setStatus(fullName, sha, so) {
      const at = statuses.findIndex((x) => x.repository === fullName && x.sha === sha && x.context === so.context);
      const record: StatusRecord = { repository: fullName, sha, ...so };
      if (at >= 0) statuses[at] = record;
      else statuses.push(record);
    },
    setCheckRun(fullName, sha, co) {
      const at = checkRuns.findIndex((x) => x.repository === fullName && x.sha === sha && x.name === co.name);
      const record: CheckRunRecord = { repository: fullName, sha, name: co.name, status: co.status, conclusion: co.conclusion ?? null };
      if (at >= 0) checkRuns[at] = record;
      else checkRuns.push(record);
    },
    addReview(fullName, pull, ro) {
      pullOf(fullName, pull);
      const review: ReviewRecord = { id: 400_000 + reviews.length + 1, repository: fullName, pull, ...ro };
      reviews.push(review);
      return review;
    },
    graphqlRequests,
    pulls,
    issues,
    comments,
    issuedTokens,
    apiRequests,
    gitRequests,
    async close() {
      await closeServer(server);
      if (ownRoot) await rm(root, { recursive: true, force: true });
    },
  };
}
