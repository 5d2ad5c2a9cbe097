// A campaign's repository list: one repository per line, read the way a person writes one
// (comments, blank lines, the same repository twice in two spellings). What names no
// repository is reported with its line number and the reason; the rest are taken.
import type { InvalidLine } from '../../shared/api-campaigns.ts';
import { MAX_CAMPAIGN_REPOS } from '../../shared/api-campaigns.ts';
import { repoKey } from '../triggers/tasks.ts';

export interface ListedRepo {
  /** 1-based line of the list. */
  line: number;
  repo: string;
  key: string;
}

/** What may look like a repository: a URL git takes, `user@host:path`, or an absolute path. */
const REPO_FORM = /^(?:(?:https?|ssh|git|file):\/\/\S+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+|\/\S*)$/;

export function parseRepoList(lines: readonly string[]): { repos: ListedRepo[]; invalid: InvalidLine[] } {
  const repos: ListedRepo[] = [];
  const invalid: InvalidLine[] = [];
  const seen = new Map<string, number>();
  lines.forEach((raw, i) => {
    const line = i + 1;
    const text = raw.replace(/\s+#.*$/, '').trim();
    if (!text || text.startsWith('#')) return;
    const shown = text.slice(0, 200);
    if (text.length > 2048) return invalid.push({ line, text: shown, reason: 'longer than 2,048 characters' });
    // A control character in a URL is what a hostile list would use to split a git argument.
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(text)) return invalid.push({ line, text: JSON.stringify(shown), reason: 'holds a control character' });
    if (!REPO_FORM.test(text)) return invalid.push({ line, text: shown, reason: 'not a repository URL (https://…, ssh://…, git@host:path) or an absolute path' });
    const key = repoKey(text);
    const first = seen.get(key);
    if (first !== undefined) return invalid.push({ line, text: shown, reason: `the same repository as line ${first}` });
    if (repos.length >= MAX_CAMPAIGN_REPOS) return invalid.push({ line, text: shown, reason: `past the ${MAX_CAMPAIGN_REPOS.toLocaleString('en')} repositories a campaign may have` });
    seen.set(key, line);
    repos.push({ line, repo: text, key });
  });
  return { repos, invalid };
}
