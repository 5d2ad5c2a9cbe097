// GitHub (and GitHub Enterprise Server) through Octokit: a token or a GitHub App installation.
// With an App every task gets its own installation token, limited to the task's repository and
// to what a task does (push commits, open a pull request), and expiring within the hour.
import { createAppAuth } from '@octokit/auth-app';
import { Octokit } from '@octokit/core';
import { RequestError } from '@octokit/request-error';
import { BerthError, conflict, invalid, notFound, unavailable } from '../shared/errors.ts';
import { Redactor } from '../shared/redact.ts';
import type { ChangeRequest } from '../shared/tasks.ts';
import { basicCredentials, noCredentials } from './credentials.ts';
import type { Forge, ForgeAuth, ForgeSettings, GitCredentials, OpenChangeRequest } from './index.ts';
import type { RepoLocation } from './url.ts';
import { hostFetch } from './upstream.ts';

/** The permissions a task's installation token asks for, and nothing more. */
export const APP_TOKEN_PERMISSIONS = { contents: 'write', pull_requests: 'write' } as const;

const API_TIMEOUT_MS = 30_000;
const SILENT = { debug() {}, info() {}, warn() {}, error() {} };

/** Where the API of a GitHub host is: api.github.com, or /api/v3 on an Enterprise Server. */
export function githubApiUrl(location: Extract<RepoLocation, { kind: 'http' }>, settings: ForgeSettings): string {
  if (settings.apiUrl) return settings.apiUrl.replace(/\/+$/, '');
  return location.host === 'github.com' || location.host === 'www.github.com' ? 'https://api.github.com' : `${location.origin}/api/v3`;
}

export function githubForge(o: { location: Extract<RepoLocation, { kind: 'http' }>; settings: ForgeSettings; auth: ForgeAuth }): Forge {
  const parts = o.location.path.split('/');
  const [owner, repo] = parts;
  if (parts.length !== 2 || !owner || !repo) throw invalid(`${o.location.url} is not a GitHub repository URL: give https://HOST/OWNER/REPO`);
  const baseUrl = githubApiUrl(o.location, o.settings);
  const { auth, settings } = o;
  const fullName = `${owner}/${repo}`;
  // Bound to the settings so messages can name the secret to check, never its value.
  const credentialHint = settings.app
    ? `check the GitHub App id ${settings.app.appId}, installation ${settings.app.installationId} and the private key in secret "${settings.app.privateKeySecret}"`
    : `check the token in secret "${settings.tokenSecret ?? '(none set: name one in tokenSecret)'}"`;

  const appAuth =
    auth && 'app' in auth
      ? createAppAuth({
          appId: auth.app.appId,
          privateKey: auth.app.privateKey,
          installationId: auth.app.installationId,
          request: new Octokit({ baseUrl, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } }).request,
        })
      : null;

  /** A token for this repository: the configured one, or a fresh (cached until near expiry) installation token. */
  async function token(): Promise<{ token: string; expiresAt: Date | null } | null> {
    if (!auth) return null;
    if ('token' in auth) return { token: auth.token, expiresAt: null };
    if (!appAuth) return null;
    try {
      const result = await appAuth({ type: 'installation', repositoryNames: [repo!], permissions: { ...APP_TOKEN_PERMISSIONS } });
      return { token: result.token, expiresAt: new Date(result.expiresAt) };
    } catch (e) {
      throw appError(e);
    }
  }

  function appError(e: unknown): unknown {
    const secrets = auth && 'app' in auth ? [auth.app.privateKey] : [];
    if (!(e instanceof RequestError)) {
      // Octokit's JWT signing throws plain errors for a key it cannot read.
      if (e instanceof Error && /key|pem|pkcs|asn1|decoder/i.test(e.message)) {
        return invalid(`the GitHub App's private key could not be used to sign (${new Redactor(secrets.map((value) => ({ name: 'private key', value }))).redact(e.message)}): ${credentialHint}; it must be the PEM file GitHub gave`);
      }
      return e;
    }
    const said = githubMessage(e);
    if (e.status === 401) return invalid(`GitHub refused the App's credentials (${said}): ${credentialHint}`);
    if (e.status === 404) return notFound(`GitHub has no installation ${settings.app?.installationId} of App ${settings.app?.appId} (${said}): ${credentialHint}`);
    if (e.status === 422 || e.status === 403) return invalid(`the GitHub App installation cannot get a token for ${fullName} with contents and pull request write access (${said}): add the repository to the installation and grant those permissions`);
    return httpError(e, 'creating an installation token', said);
  }

  function httpError(e: RequestError, doing: string, said: string): BerthError {
    if (!e.response) return unavailable(`${doing}: GitHub could not be reached at ${baseUrl} (${said}): check apiUrl and the network, then try again`);
    if (e.status === 403 || e.status === 429) {
      if (e.response.headers['x-ratelimit-remaining'] === '0' || /rate limit/i.test(said)) {
        return new BerthError('rate_limited', `${doing}: GitHub's rate limit is used up (${said}): try again later`);
      }
    }
    if (e.status >= 500) return unavailable(`${doing}: GitHub answered ${e.status} (${said}): try again later`);
    return new BerthError('internal', `${doing}: GitHub answered ${e.status}: ${said}`);
  }

  return {
    kind: 'github',

    async gitCredentials(): Promise<GitCredentials> {
      const t = await token();
      return t ? basicCredentials(o.location.origin, 'x-access-token', t.token, t.expiresAt) : noCredentials();
    },

    async openChangeRequest(pr: OpenChangeRequest): Promise<ChangeRequest> {
      const t = await token();
      if (!t) throw invalid(`opening a pull request on ${fullName} needs credentials: name a token secret (tokenSecret) or a GitHub App (app) in the project's forge settings`);
      const octokit = new Octokit({ baseUrl, auth: t.token, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } });
      const create = (draft: boolean) =>
        octokit.request('POST /repos/{owner}/{repo}/pulls', {
          owner: owner!,
          repo: repo!,
          title: pr.title,
          head: pr.head,
          base: pr.base,
          body: pr.body,
          draft,
          request: { signal: AbortSignal.timeout(API_TIMEOUT_MS) },
        });
      const redactor = new Redactor([{ name: 'token', value: t.token }]);
      try {
        let response;
        try {
          response = await create(pr.draft);
        } catch (e) {
          // Draft pull requests need a paid plan on private repositories: open a ready one instead.
          if (pr.draft && e instanceof RequestError && e.status === 422 && /draft pull requests are not supported/i.test(githubMessage(e))) response = await create(false);
          else throw e;
        }
        return { kind: 'pull_request', url: response.data.html_url, number: response.data.number, draft: response.data.draft ?? false };
      } catch (e) {
        if (!(e instanceof RequestError)) throw e;
        const said = redactor.redact(githubMessage(e));
        const doing = `opening a pull request from ${pr.head} into ${pr.base} on ${fullName}`;
        if (e.status === 401) throw invalid(`${doing}: GitHub refused the token (${said}): ${credentialHint}`);
        if (e.status === 404) throw notFound(`${doing}: GitHub has no repository ${fullName} that these credentials can see: check the URL and ${credentialHint.replace(/^check /, '')}`);
        if (e.status === 403 && e.response?.headers['x-ratelimit-remaining'] !== '0' && !/rate limit/i.test(said)) {
          throw invalid(`${doing}: GitHub denied it (${said}): the credentials need pull request write access to ${fullName}; ${credentialHint}`);
        }
        if (e.status === 422) {
          if (/already exists/i.test(said)) throw conflict(`a pull request from ${pr.head} into ${pr.base} already exists on ${fullName}: update that one, or push to a new branch`);
          if (/no commits between/i.test(said)) throw invalid(`${doing}: ${pr.head} has no commits that ${pr.base} lacks, so there is nothing to review`);
          throw invalid(`${doing}: GitHub refused it (${said}): check that both branches exist on ${fullName}`);
        }
        throw httpError(e, doing, said);
      }
    },

    async findChangeRequest(o: { head: string; base: string }): Promise<ChangeRequest | null> {
      const t = await token();
      if (!t) return null;
      const octokit = new Octokit({ baseUrl, auth: t.token, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } });
      try {
        const { data } = await octokit.request('GET /repos/{owner}/{repo}/pulls', { owner: owner!, repo: repo!, head: `${owner}:${o.head}`, base: o.base, state: 'open', request: { signal: AbortSignal.timeout(API_TIMEOUT_MS) } });
        const pr = data[0];
        return pr ? { kind: 'pull_request', url: pr.html_url, number: pr.number, draft: pr.draft ?? false } : null;
      } catch (e) {
        if (!(e instanceof RequestError)) throw e;
        throw httpError(e, `listing the pull requests from ${o.head} on ${fullName}`, new Redactor([{ name: 'token', value: t.token }]).redact(githubMessage(e)));
      }
    },
  };
}

/** GitHub's own words: the message, and each validation error's message or field. */
export function githubMessage(e: RequestError): string {
  const data = e.response?.data as { message?: unknown; errors?: unknown } | undefined;
  const parts: string[] = [];
  if (typeof data?.message === 'string') parts.push(data.message);
  if (Array.isArray(data?.errors)) {
    for (const item of data.errors as unknown[]) {
      if (typeof item === 'string') parts.push(item);
      else if (item && typeof item === 'object') {
        const { message, field, code } = item as { message?: unknown; field?: unknown; code?: unknown };
        if (typeof message === 'string') parts.push(message);
        else if (typeof field === 'string') parts.push(`${field} ${typeof code === 'string' ? code : 'invalid'}`);
      }
    }
  }
  return parts.length > 0 ? parts.join('; ') : e.message;
}
