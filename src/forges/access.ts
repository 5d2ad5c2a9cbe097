// Which repositories the host may reach for a task or a project, in one place. Host-side
// git runs as the control plane's user: a path or file:// URL would read (and push into)
// whatever that user can, another org's repository included, and an http(s) URL on a
// loopback or private address would reach services only the host can. So:
//  - a repository on this host is named only by an instance administrator, and only under
//    the directories the instance allows (BERTH_LOCAL_REPOS);
//  - an http(s) or SSH repository (or forge API) must not resolve to a private, loopback,
//    link-local or this host's address, by the egress proxy's rules, unless the instance
//    allows that host (BERTH_ALLOWED_GIT_HOSTS);
//  - both are checked again whenever git is about to run, and git is pinned to the address
//    that passed.
import { readFileSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { BerthError, invalid, unavailable } from '../shared/errors.ts';
import { privateAllowanceOf, resolveDestination, type DestinationResolver, type PrivateAllowance } from '../runner/network/index.ts';
import { upstreamFor, type HostUpstream } from './upstream.ts';
import { knownHostsName, parseRepoUrl, type RepoLocation } from './url.ts';

/**
 * The instance's rules for host-side destinations people name: repositories, forge APIs and
 * model APIs. One object, from startBerth's options or the environment.
 */
export interface RepoAccessConfig {
  /** Directories under which instance administrators may name repositories on this host. Empty: none may be named. */
  localRepos: string[];
  /** Private hosts that http(s) repositories and forge APIs may be on: names, addresses or CIDRs. Empty: none. */
  allowedGitHosts: string[];
  /** The CA bundle https repositories are checked against: the host's store plus the company CAs (company-ca.ts); git's own default when unset. */
  caFile?: string | undefined;
  /**
   * Private hosts an org's or project's model settings may name as their base URL (the
   * instance's own model variables need no leave): names, addresses or CIDRs. Empty or unset: none.
   */
  allowedModelHosts?: string[] | undefined;
  /**
   * SSH host keys every project's SSH repositories are checked against (known_hosts lines,
   * from the file BERTH_SSH_KNOWN_HOSTS names), with the project's own (forge.knownHosts).
   */
  sshKnownHosts?: string | undefined;
}

/**
 * BERTH_LOCAL_REPOS=/srv/git,/home/git, BERTH_ALLOWED_GIT_HOSTS=gitlab.corp,10.1.0.0/16 and
 * BERTH_ALLOWED_MODEL_HOSTS=vllm.corp (comma-separated); BERTH_SSH_KNOWN_HOSTS=/etc/berth/known_hosts.
 */
export function repoAccessFromEnv(env: NodeJS.ProcessEnv): RepoAccessConfig {
  const list = (v: string | undefined) => (v ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  let sshKnownHosts: string | undefined;
  if (env.BERTH_SSH_KNOWN_HOSTS) {
    try {
      sshKnownHosts = readFileSync(env.BERTH_SSH_KNOWN_HOSTS, 'utf8');
    } catch (e) {
      throw invalid(`BERTH_SSH_KNOWN_HOSTS names ${env.BERTH_SSH_KNOWN_HOSTS}, which cannot be read (${(e as NodeJS.ErrnoException).code}): give a known_hosts file, such as one \`ssh-keyscan HOST\` wrote`);
    }
  }
  return { localRepos: list(env.BERTH_LOCAL_REPOS), allowedGitHosts: list(env.BERTH_ALLOWED_GIT_HOSTS), allowedModelHosts: list(env.BERTH_ALLOWED_MODEL_HOSTS), sshKnownHosts };
}

/** Who names a repository: only an instance administrator may name one on this host. */
export interface RepoNamer {
  instanceAdmin: boolean;
}

declare const vetted: unique symbol;
/**
 * Leave for host-side git to reach one repository, made only by RepoAccess.reach: the
 * functions in git.ts that talk to a remote take one, so none can skip the rules.
 */
export interface GitReach {
  /** The repository it was made for, as stored. */
  readonly url: string;
  /** `-c` settings that pin what was checked (the address, no redirects, no file:// hops). */
  readonly config: readonly string[];
  /**
   * For an SSH repository: ssh options that pin the address that was checked while host
   * keys are still looked up by the host's name, and the instance's known hosts.
   */
  readonly ssh?: { readonly options: readonly string[]; readonly knownHosts: string } | undefined;
  /**
   * The company's upstream proxy for an http(s) repository: its URL with credentials (git is
   * given it in its environment, never on a command line; not enumerable, so never logged),
   * null to go directly (NO_PROXY names the host), undefined when no upstream is configured.
   */
  readonly proxy?: string | null | undefined;
  readonly [vetted]: true;
}
const reachOf = (url: string, config: string[], ssh?: GitReach['ssh'], proxy?: string | null): GitReach => {
  const reach = { url, config, ...(ssh && { ssh }) };
  if (proxy !== undefined) Object.defineProperty(reach, 'proxy', { value: proxy, enumerable: false });
  return reach as unknown as GitReach;
};

const forbidden = (message: string, field?: string) => new BerthError('forbidden', message, field);

export class RepoAccess {
  readonly #roots: string[];
  readonly #allow: PrivateAllowance;
  readonly #resolver: DestinationResolver | undefined;
  readonly #caFile: string | undefined;
  readonly #knownHosts: string;
  readonly #upstream: HostUpstream | undefined;
  #realRoots: Promise<string[]> | undefined;

  /** `upstream`: the company's outbound proxy (BERTH_EGRESS_UPSTREAM_PROXY), which host-side git goes through too. */
  constructor(config: RepoAccessConfig, opts: { resolver?: DestinationResolver | undefined; upstream?: HostUpstream | undefined } = {}) {
    for (const dir of config.localRepos) {
      if (!isAbsolute(dir)) throw invalid(`BERTH_LOCAL_REPOS needs absolute directories, not ${JSON.stringify(dir)}`);
    }
    this.#roots = config.localRepos.map((d) => resolve(d));
    try {
      this.#allow = privateAllowanceOf(config.allowedGitHosts);
    } catch (e) {
      throw invalid(`BERTH_ALLOWED_GIT_HOSTS: ${(e as Error).message}`);
    }
    this.#resolver = opts.resolver;
    this.#caFile = config.caFile;
    this.#knownHosts = config.sshKnownHosts ?? '';
    this.#upstream = opts.upstream;
  }

  /**
   * A person names a repository (a one-off task, a project's repository). Returns it as it
   * is stored. A path is refused before anything on the host is looked at unless the
   * caller is an instance administrator and the path lies in an allowed directory, so the
   * answer tells nobody else what exists there.
   */
  async name(raw: string, who: RepoNamer, field = 'repo'): Promise<string> {
    const text = raw.trim();
    const location = this.#parse(text, field);
    if (location.kind === 'local') {
      if (!who.instanceAdmin) {
        throw forbidden('a repository on the Berth server (a path or file:// URL) can only be named by an instance administrator: give the repository\'s https URL, or ask an instance administrator to make a project for it', field);
      }
      await this.#checkLocal(location.path, field, true);
      return text;
    }
    if (location.kind === 'ssh') await this.#checkHost(location.host, field, false);
    else await this.#checkHttp(location.url, field, false);
    return text;
  }

  /** A forge API URL in a project's settings: the same address rules as its repository. */
  async nameApi(url: string, field = 'forge.apiUrl'): Promise<void> {
    await this.#checkHttp(url, field, false);
  }

  /**
   * Host-side git is about to reach `raw` (clone, push, merge), or the forge's API. The
   * rules again, for what is stored: a name may point elsewhere by now, and a row may
   * predate them. The address that passed is pinned for git, and redirects are not followed.
   */
  async reach(raw: string): Promise<GitReach> {
    const location = parseRepoUrl(raw);
    if (location.kind === 'local') {
      await this.#checkLocal(location.path, 'repo', false);
      return reachOf(raw, []);
    }
    if (location.kind === 'ssh') {
      const { address } = await this.#checkHost(location.host, 'repo', true);
      // Only ssh: no other transport (ext::, file://, http) may be reached from this remote.
      const config = ['protocol.allow=never', 'protocol.ssh.allow=always'];
      const options = ['-o', `HostKeyAlias=${knownHostsName(location)}`, ...(address ? ['-o', `HostName=${address}`] : [])];
      return reachOf(raw, config, { options, knownHosts: this.#knownHosts });
    }
    const { pin, name, address } = await this.#checkHttp(location.url, 'repo', true);
    const config = ['http.followRedirects=false', 'protocol.file.allow=never'];
    // Through the upstream proxy the proxy resolves the name (as the egress proxy asks it), so
    // there is no address to pin: the check above still refused what the rules refuse.
    const proxy = this.#upstream ? upstreamFor(this.#upstream, name, address ?? undefined) : undefined;
    if (proxy) config.push('http.proxyAuthMethod=basic');
    else if (pin) config.push(`http.curloptResolve=${pin}`);
    if (this.#caFile) config.push(`http.sslCAInfo=${this.#caFile}`);
    return reachOf(raw, config, undefined, proxy === undefined ? undefined : (proxy?.url ?? null));
  }

  /** The API URL is reached by fetch, which cannot be pinned: checked just before. */
  async reachApi(url: string): Promise<void> {
    await this.#checkHttp(url, 'forge.apiUrl', true);
  }

  #parse(text: string, field: string): RepoLocation {
    // An API caller's relative path would be relative to wherever the server happens to run.
    // A URL, an scp-like SSH remote (git@host:owner/repo.git), or an absolute path.
    if (!/^[a-z][a-z0-9+.-]*:/i.test(text) && !/^[^/:@]+@(?:\[[^\]]*\]|[^/:]+):/.test(text) && !isAbsolute(text)) {
      throw invalid(`'${text}' is neither a URL nor an absolute path: pass https://host/owner/repo.git, git@host:owner/repo.git or /path/to/repo`, field);
    }
    try {
      return parseRepoUrl(text);
    } catch (e) {
      if (e instanceof BerthError) throw new BerthError(e.kind, e.message, field);
      throw e;
    }
  }

  /** Under an allowed directory, both as written and with every symbolic link followed. */
  async #checkLocal(path: string, field: string, naming: boolean): Promise<void> {
    if (this.#roots.length === 0) {
      throw forbidden('repositories on the Berth server are not enabled: an instance administrator can allow directories with BERTH_LOCAL_REPOS=/srv/git (or give the repository\'s https URL)', field);
    }
    const outside = () => forbidden(`${path} is not under a directory allowed for repositories on this server (BERTH_LOCAL_REPOS: ${this.#roots.join(', ')})`, field);
    if (!this.#roots.some((root) => within(root, path))) throw outside();
    let real: string;
    try {
      real = await realpath(path);
      if (!(await stat(real)).isDirectory()) throw new Error('not a directory');
    } catch {
      const message = `no repository at ${path} on the Berth server`;
      throw naming ? invalid(message, field) : invalid(`${message}: it was moved or removed`, field);
    }
    const roots = await (this.#realRoots ??= Promise.all(this.#roots.map((r) => realpath(r).catch(() => r))));
    if (!roots.some((root) => within(root, real))) throw outside();
  }

  /**
   * The address rules for an http(s) URL. Naming: a name that does not resolve now is let
   * through (git will say so, and reach() checks again). Reaching: it is refused. Returns
   * git's `HOST:PORT:ADDRESS` pin when there is an address to pin.
   */
  async #checkHttp(raw: string, field: string, reaching: boolean): Promise<{ pin: string | null; name: string; address: string | null }> {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw invalid(`'${raw}' is not a valid URL`, field);
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const { address, name } = await this.#checkHost(host, field, reaching);
    if (address === null || address === host) return { pin: null, name, address };
    const port = url.port || (url.protocol === 'https:' ? '443' : '80');
    return { pin: `${name}:${port}:${address.includes(':') ? `[${address}]` : address}`, name, address };
  }

  /**
   * The address rules for a host (see #checkHttp for naming and reaching). Returns its
   * normalised name and the address that passed, or null when there is none to pin (an
   * allowed name, or naming a name that does not resolve now).
   */
  async #checkHost(host: string, field: string, reaching: boolean): Promise<{ name: string; address: string | null }> {
    const d = await resolveDestination(host, { resolver: this.#resolver, allow: this.#allow });
    if (d.ok) return { name: d.host, address: d.address };
    if (d.why === 'unresolved') {
      if (!reaching) return { name: d.host, address: null };
      throw unavailable(`${d.reason}: check the repository URL and the server's DNS, then try again`);
    }
    throw forbidden(`${d.reason}: give a public address, or ask an instance administrator to allow the host with BERTH_ALLOWED_GIT_HOSTS`, field);
  }
}

/** Whether `path` is `root` or below it, by path segments (`/srv/git2` is not under `/srv/git`). */
function within(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}
