// Where a repository lives, read from the URL a user gave: a forge over http(s) or SSH, or a
// path on this host. Credentials never travel in the URL: they come from secrets, through
// git's environment (a token) or a file only git's ssh reads (a deploy key).
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invalid } from '../shared/errors.ts';

export type RepoLocation =
  /** `origin` is scheme, host and port (`https://github.com`); `path` has no leading slash and no `.git`. */
  | { kind: 'http'; url: string; origin: string; host: string; path: string }
  /**
   * Over SSH: `git@host:owner/repo.git` or `ssh://git@host[:port]/owner/repo.git`. `url` is
   * what git is given, as written; `host` is lower-case, without brackets; `path` has no
   * leading slash and no `.git`.
   */
  | { kind: 'ssh'; url: string; user: string; host: string; port: number; path: string }
  /** A repository on this host: a local path or a file:// URL, always absolute. */
  | { kind: 'local'; path: string };

// What an SSH remote's parts may hold: nothing ssh or a shell would read as an option or a
// metacharacter (git's ssh command line passes through sh).
const SSH_USER = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;
const SSH_HOST = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])$/;
const SSH_PATH = /^[A-Za-z0-9._~/-]+$/;
const SSH_EXAMPLE = 'git@github.com:owner/repo.git or ssh://git@host:2222/owner/repo.git';

/**
 * Reads a repository URL. Refuses what Berth cannot authenticate safely: URLs carrying
 * user:password (the message never repeats the URL, which would show the password).
 */
export function parseRepoUrl(raw: string): RepoLocation {
  const text = raw.trim();
  if (text === '') throw invalid('the repository URL is empty: give an https URL such as https://github.com/owner/repo');
  if (text.startsWith('-')) throw invalid('a repository URL cannot start with "-"');
  // scp-like `git@host:owner/repo.git`: a user, then a colon before the first slash.
  const scp = /^([^/:@]+)@(\[[^\]]*\]|[^/:]+):(.*)$/.exec(text);
  if (scp) return sshLocation(text, scp[1]!, scp[2]!, 22, scp[3]!);
  if (/^(?:git\+ssh|ssh\+git):/i.test(text)) throw invalid(`write SSH repository URLs as ${SSH_EXAMPLE}`);
  if (/^ssh:\/\//i.test(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw invalid(`the repository URL is not a valid URL: write SSH repository URLs as ${SSH_EXAMPLE}`);
    }
    if (url.password !== '') throw invalid('the repository URL carries a password: remove it, and store the deploy key as a Berth secret named in the project\'s forge settings (deployKeySecret)');
    if (url.search !== '' || url.hash !== '') throw invalid(`the repository URL has a query or fragment: write SSH repository URLs as ${SSH_EXAMPLE}`);
    return sshLocation(text, decodeURIComponent(url.username), url.hostname, url.port === '' ? 22 : Number(url.port), url.pathname);
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

function sshLocation(text: string, user: string, rawHost: string, port: number, rawPath: string): RepoLocation {
  const host = rawHost.toLowerCase();
  if (user === '') throw invalid(`the SSH repository URL names no user: write it as ${SSH_EXAMPLE}`);
  if (!SSH_USER.test(user)) throw invalid(`'${user}' is not an SSH user name Berth accepts: use letters, digits, . _ - (most forges want "git")`);
  if (!SSH_HOST.test(host)) throw invalid(`'${rawHost}' is not a host name: write SSH repository URLs as ${SSH_EXAMPLE}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`the SSH port must be 1 to 65535: write SSH repository URLs as ${SSH_EXAMPLE}`);
  const path = rawPath.replace(/^\/+/, '').replace(/\/+$/, '').replace(/\.git$/, '');
  if (path === '') throw invalid(`the SSH repository URL has no path: write it as ${SSH_EXAMPLE}`);
  if (!SSH_PATH.test(rawPath) || path.startsWith('-') || path.split('/').includes('..')) {
    throw invalid(`the SSH repository path may hold letters, digits, . _ ~ - and /, without ".." or a leading "-": write it as ${SSH_EXAMPLE}`);
  }
  return { kind: 'ssh', url: text, user, host: host.replace(/^\[|\]$/g, ''), port, path };
}

/** The forge a host most likely runs, when the project's settings do not say. */
export function detectKind(location: RepoLocation): 'github' | 'gitlab' | 'git' {
  if (location.kind === 'local') return 'git';
  if (location.host === 'github.com' || location.host === 'www.github.com') return 'github';
  if (location.host === 'gitlab.com' || location.host.includes('gitlab')) return 'gitlab';
  return 'git';
}

/** What git is given as the remote: the URL (never with a password) or the absolute path. */
export function gitRemote(location: RepoLocation): string {
  return location.kind === 'local' ? location.path : location.url;
}

/**
 * How ssh's known_hosts names the host: `host`, or `[host]:port` off port 22, as
 * `ssh-keyscan -p PORT HOST` writes it. Given to ssh as HostKeyAlias, so the key is looked
 * up by name even though ssh connects to the address that was checked.
 */
export function knownHostsName(location: { host: string; port: number }): string {
  return location.port === 22 ? location.host : `[${location.host}]:${location.port}`;
}
