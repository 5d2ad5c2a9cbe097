// A campaign's repositories from a forge's search (`berth campaign create --org-query "org:acme
// topic:service"`): GitHub's repository search, every page up to what GitHub serves (1,000).
import { Octokit } from '@octokit/core';
import { RequestError } from '@octokit/request-error';
import { BerthError, invalid, unavailable } from '../shared/errors.ts';
import { Redactor } from '../shared/redact.ts';
import { githubMessage } from './github.ts';
import { hostFetch } from './upstream.ts';

const SILENT = { debug() {}, info() {}, warn() {}, error() {} };
/** GitHub's search serves the first 1,000 results of any query. */
export const MAX_SEARCH_RESULTS = 1000;

/** The clone URLs of the repositories a GitHub search query finds, best match first. */
export async function searchGitHubRepositories(o: { apiUrl: string; token: string; query: string; limit?: number }): Promise<{ urls: string[]; total: number; incomplete: boolean }> {
  const limit = Math.min(o.limit ?? MAX_SEARCH_RESULTS, MAX_SEARCH_RESULTS);
  const octokit = new Octokit({ baseUrl: o.apiUrl.replace(/\/+$/, ''), auth: o.token, log: SILENT, userAgent: 'berth', request: { fetch: hostFetch } });
  const redactor = new Redactor([{ name: 'token', value: o.token }]);
  const urls: string[] = [];
  let total = 0;
  let incomplete = false;
  try {
    for (let page = 1; urls.length < limit; page++) {
      const res = await octokit.request('GET /search/repositories', { q: o.query, per_page: 100, page, request: { signal: AbortSignal.timeout(30_000) } });
      total = res.data.total_count;
      incomplete ||= res.data.incomplete_results;
      for (const r of res.data.items) if (urls.length < limit && !r.archived) urls.push(r.clone_url);
      if (res.data.items.length < 100) break;
    }
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    const said = redactor.redact(githubMessage(e));
    const doing = `searching GitHub's repositories for "${o.query}"`;
    if (!e.response) throw unavailable(`${doing}: GitHub could not be reached at ${o.apiUrl} (${said}): check the forge's apiUrl and the network, then try again`);
    if (e.status === 422) throw invalid(`${doing}: GitHub refused the query (${said}): write it as on github.com/search, e.g. "org:acme topic:service"`);
    if ((e.status === 403 || e.status === 429) && (e.response.headers['x-ratelimit-remaining'] === '0' || /rate limit/i.test(said))) throw new BerthError('rate_limited', `${doing}: GitHub's search rate limit is used up (${said}): try again in a minute`);
    if (e.status === 401) throw invalid(`${doing}: GitHub refused the token (${said}): check the token of the project whose forge was used`);
    if (e.status >= 500) throw unavailable(`${doing}: GitHub answered ${e.status} (${said}): try again later`);
    throw new BerthError('internal', `${doing}: GitHub answered ${e.status}: ${said}`);
  }
  return { urls, total, incomplete };
}
