// Where a repository lives, read from the URL a user gave: a forge over http(s), or a path on
// this host. Credentials never travel in the URL: they come from secrets, through the environment.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invalid } from '../shared/errors.ts';

export type RepoLocation =
  /** `origin` is scheme, host and port (`https://github.com`); `path` has no leading slash and no `.git`. */
  | { kind: 'http'; url: string; origin: string; host: string; path: string }
  /** A repository on this host: a local path or a file:// URL, always absolute. */
  | { kind: 'local'; path: string };

/**
 * Reads a repository URL. Refuses what Berth cannot authenticate safely: URLs carrying
 * user:password (the message never repeats the URL, which would show the password) and SSH
 * remotes, whose keys would have to live on the host in a form git finds by itself.
 */
export function parseRepoUrl(raw: string): RepoLocation {
  const text = raw.trim();
  if (text === '') throw invalid('the repository URL is empty: give an https URL such as https://github.com/owner/repo');
  if (text.startsWith('-')) throw invalid('a repository URL cannot start with "-"');
  // scp-like `git@host:owner/repo.git`: a colon before the first slash, and not a Windows drive.
  if (/^[^/:]+@[^/:]+:/.test(text) || /^ssh:\/\//i.test(text) || /^git\+ssh:/i.test(text)) {
    throw invalid('SSH repository URLs are not supported: use the https URL of the repository and store a token as a secret named in the project\'s forge settings');
  }
  if (!/^[a-z][a-z0-9+.-]*:/i.test(text)) return { kind: 'local', path: resolve(text) };

  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid('the repository URL is not a valid URL: give an https URL such as https://github.com/owner/repo');
  }
  if (url.username !== '' || url.password !== '') {
    throw invalid('the repository URL carries credentials (user:password@): remove them from the URL and store the token as a Berth secret, named in the project\'s forge settings (tokenSecret)');
  }
  if (url.protocol === 'file:') return { kind: 'local', path: fileURLToPath(url) };
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalid(`repository URLs with ${url.protocol} are not supported: use https:// (or a local path)`);
  }
  if (url.search !== '' || url.hash !== '') throw invalid('the repository URL has a query or fragment: give the plain clone URL, such as https://github.com/owner/repo');
  const path = url.pathname.replace(/^\/+/, '').replace(/\/+$/, '').replace(/\.git$/, '');
  if (path === '') throw invalid('the repository URL has no path: give the URL of a repository, such as https://github.com/owner/repo');
  return { kind: 'http', url: url.href.replace(/\/+$/, ''), origin: url.origin, host: url.hostname.toLowerCase(), path };
}

/** The forge a host most likely runs, when the project's settings do not say. */
export function detectKind(location: RepoLocation): 'github' | 'gitlab' | 'git' {
  if (location.kind === 'local') return 'git';
  if (location.host === 'github.com' || location.host === 'www.github.com') return 'github';
  if (location.host === 'gitlab.com' || location.host.includes('gitlab')) return 'gitlab';
  return 'git';
}

/** What git is given as the remote: the URL (never with userinfo) or the absolute path. */
export function gitRemote(location: RepoLocation): string {
  return location.kind === 'http' ? location.url : location.path;
}
