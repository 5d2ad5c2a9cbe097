// GitHub's REST API as the instance's GitHub App: who the App is (its bot user), and, as one
// installation on one repository, an issue and its comments, a collaborator's permission, a
// pull request, and the comment Berth keeps up to date. Each installation token is narrowed
// to that repository and to what the trigger does (issues: write; metadata and pull requests:
// read) and cached by auth-app until near its expiry.
import { createAppAuth } from '@octokit/auth-app';
import { Octokit } from '@octokit/core';
import { RequestError } from '@octokit/request-error';
import { githubMessage, hostFetch } from '../../../forges/index.ts';

/** What the trigger's installation tokens may do, and nothing more. */
export const TRIGGER_TOKEN_PERMISSIONS = { issues: 'write', metadata: 'read', pull_requests: 'read' } as const;

const API_TIMEOUT_MS = 15_000;
const SILENT = { debug() {}, info() {}, warn() {}, error() {} };
/** Comments read for a goal: the newest pages, at most this many. */
const COMMENT_PAGES = 3;
const PER_PAGE = 100;

export interface IssueText {
  number: number;
  title: string;
  body: string | null;
  htmlUrl: string;
  pullRequest: boolean;
  /** How many comments it has (the newest are read first). */
  commentCount: number;
}

export interface IssueComment {
  id: number;
  user: string;
  /** The App that wrote it, by id, when an App did. */
  appId: number | null;
  body: string;
  createdAt: string;
}

/** A failure talking to GitHub, in words that name what was being done and never a token. */
export class GitHubCallError extends Error {
  readonly status: number | null;
  constructor(doing: string, e: unknown) {
    const status = e instanceof RequestError ? e.status : null;
    const said = e instanceof RequestError ? githubMessage(e) : (e as Error).message;
    super(`${doing}: ${status ? `GitHub answered ${status} (${said})` : `GitHub could not be reached (${said})`}`);
    this.name = 'GitHubCallError';
    this.status = status;
  }
}

export class GitHubApp {
  readonly appId: string;
  readonly apiUrl: string;
  readonly #auth: ReturnType<typeof createAppAuth>;

  constructor(o: { appId: string; privateKey: string; apiUrl: string }) {
    this.appId = o.appId;
    this.apiUrl = o.apiUrl;
    this.#auth = createAppAuth({ appId: o.appId, privateKey: o.privateKey, request: this.#octokit().request });
  }

  #octokit(token?: string): Octokit {
    return new Octokit({ baseUrl: this.apiUrl, ...(token ? { auth: token } : {}), log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } });
  }

  /** The App's slug (its bot user is `SLUG[bot]`), asked of GitHub as the App itself. */
  async slug(): Promise<string> {
    try {
      const { token } = await this.#auth({ type: 'app' });
      const { data } = await this.#octokit(token).request('GET /app', { request: { signal: AbortSignal.timeout(API_TIMEOUT_MS) } });
      if (!data?.slug) throw new Error('GitHub did not say the App\'s slug');
      return data.slug;
    } catch (e) {
      throw new GitHubCallError(`asking GitHub who App ${this.appId} is`, e);
    }
  }

  /** The API as installation `installationId` on `owner/repo` alone. */
  repo(installationId: number, owner: string, repo: string): RepoApi {
    return new RepoApi(installationId, owner, repo, async () => {
      try {
        const { token } = await this.#auth({ type: 'installation', installationId, repositoryNames: [repo], permissions: { ...TRIGGER_TOKEN_PERMISSIONS } });
        return this.#octokit(token);
      } catch (e) {
        throw new GitHubCallError(`getting a token of installation ${installationId} of App ${this.appId} for ${owner}/${repo} (install the App on the repository with issues write access)`, e);
      }
    });
  }
}

export class RepoApi {
  readonly installationId: number;
  readonly owner: string;
  readonly repo: string;
  readonly #client: () => Promise<Octokit>;

  constructor(installationId: number, owner: string, repo: string, client: () => Promise<Octokit>) {
    this.installationId = installationId;
    this.owner = owner;
    this.repo = repo;
    this.#client = client;
  }

  get fullName(): string {
    return `${this.owner}/${this.repo}`;
  }

  async #call<T>(doing: string, run: (octokit: Octokit, request: { signal: AbortSignal }) => Promise<T>): Promise<T> {
    const octokit = await this.#client();
    try {
      return await run(octokit, { signal: AbortSignal.timeout(API_TIMEOUT_MS) });
    } catch (e) {
      throw new GitHubCallError(doing, e);
    }
  }

  /**
   * A user's role on the repository (`admin`, `maintain`, `write`, `triage`, `read` or `none`);
   * `none` for a login GitHub does not know.
   */
  async permission(login: string): Promise<string> {
    try {
      return await this.#call(`asking GitHub what ${login} may do on ${this.fullName}`, async (o, request) => {
        const { data } = await o.request('GET /repos/{owner}/{repo}/collaborators/{username}/permission', { owner: this.owner, repo: this.repo, username: login, request });
        // role_name says maintain and triage, which the older `permission` folds into write and read.
        return (data.role_name || data.permission || 'none').toLowerCase();
      });
    } catch (e) {
      if (e instanceof GitHubCallError && e.status === 404) return 'none';
      throw e;
    }
  }

  async issue(number: number): Promise<IssueText> {
    return this.#call(`reading ${this.fullName}#${number}`, async (o, request) => {
      const { data } = await o.request('GET /repos/{owner}/{repo}/issues/{issue_number}', { owner: this.owner, repo: this.repo, issue_number: number, request });
      return { number: data.number, title: data.title, body: data.body ?? null, htmlUrl: data.html_url, pullRequest: !!data.pull_request, commentCount: data.comments };
    });
  }

  /** The newest comments (up to a few hundred), oldest first. */
  async comments(number: number, total: number): Promise<IssueComment[]> {
    const last = Math.max(1, Math.ceil(total / PER_PAGE));
    const pages: IssueComment[][] = [];
    for (let page = last; page >= 1 && pages.length < COMMENT_PAGES; page--) {
      pages.unshift(
        await this.#call(`reading the comments on ${this.fullName}#${number}`, async (o, request) => {
          const { data } = await o.request('GET /repos/{owner}/{repo}/issues/{issue_number}/comments', { owner: this.owner, repo: this.repo, issue_number: number, per_page: PER_PAGE, page, request });
          return data.map((c) => ({ id: Number(c.id), user: c.user?.login ?? 'ghost', appId: c.performed_via_github_app?.id ?? null, body: c.body ?? '', createdAt: c.created_at }));
        }),
      );
    }
    return pages.flat();
  }

  /** The line comments of one review (the first hundred), oldest first. */
  async reviewComments(pull: number, reviewId: number): Promise<{ user: string; path: string; line: number | null; body: string }[]> {
    return this.#call(`reading review ${reviewId} on ${this.fullName}#${pull}`, async (o, request) => {
      const { data } = await o.request('GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments', { owner: this.owner, repo: this.repo, pull_number: pull, review_id: reviewId, per_page: PER_PAGE, request });
      return data.map((c) => ({ user: c.user?.login ?? 'ghost', path: c.path, line: c.line ?? c.original_line ?? null, body: c.body }));
    });
  }

  /** Comments on an issue or pull request; the comment's id. */
  async comment(number: number, body: string): Promise<number> {
    return this.#call(`commenting on ${this.fullName}#${number}`, async (o, request) => {
      const { data } = await o.request('POST /repos/{owner}/{repo}/issues/{issue_number}/comments', { owner: this.owner, repo: this.repo, issue_number: number, body, request });
      return Number(data.id);
    });
  }

  async editComment(id: number, body: string): Promise<void> {
    await this.#call(`updating comment ${id} on ${this.fullName}`, async (o, request) => {
      await o.request('PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}', { owner: this.owner, repo: this.repo, comment_id: id, body, request });
    });
  }
}
