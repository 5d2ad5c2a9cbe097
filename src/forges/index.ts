// Forges: where a project's repository lives and how a finished task reaches it. GitHub and
// GitLab get a pull/merge request; a plain git server gets the branch, and the change request
// is kept in Berth. Credentials stay on the host and reach git only through its environment.
import { z } from 'zod';
import { invalid } from '../shared/errors.ts';
import type { ChangeRequest } from '../shared/tasks.ts';
import { githubForge } from './github.ts';
import { gitlabForge } from './gitlab.ts';
import { plainForge } from './plain.ts';
import { detectKind, parseRepoUrl, type RepoLocation } from './url.ts';

export type { ChangeRequest } from '../shared/tasks.ts';
export { changedFiles, cloneRepo, commitPatch, diffOf, mergeBranch, pushBranch, remoteBranchSha, type GitIdentity } from './git.ts';
export { parseRepoUrl, detectKind, knownHostsName, type RepoLocation } from './url.ts';
export { RepoAccess, repoAccessFromEnv, type GitReach, type RepoAccessConfig, type RepoNamer } from './access.ts';
export { hostFetch } from './upstream.ts';
export { githubMessage, githubApiUrl } from './github.ts';
export { reviewerFor, type ChangeRequestReviewer, type ChangeRequestStatus } from './review.ts';
export { searchGitHubRepositories } from './search.ts';

export type ForgeKind = 'github' | 'gitlab' | 'git';
export const FORGE_KINDS = ['github', 'gitlab', 'git'] as const satisfies readonly ForgeKind[];

/** One known_hosts line (or a blank or comment one): markers, host patterns, key type, base64 key, comment. */
const KNOWN_HOSTS_LINE = /^(?:|#.*|(?:@(?:cert-authority|revoked) )?[^\s#]\S* (?:ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,2}(?: [^\x00-\x1f]*)?)$/;

/** A project's forge settings, stored with the project as JSON. */
export const ForgeSettingsSchema = z
  .strictObject({
    /** Default: from the URL's host (github.com → github; gitlab.com or a host with "gitlab" → gitlab; else git). */
    kind: z.enum(FORGE_KINDS).optional(),
    /** GitHub Enterprise (`https://HOST/api/v3`), self-hosted GitLab (`https://HOST/api/v4`), tests. */
    apiUrl: z.url({ protocol: /^https?$/, error: 'apiUrl needs an http(s) URL such as https://github.example.com/api/v3' }).optional(),
    /** Name of the Berth secret holding a token (GitHub PAT, GitLab access token, git server token). */
    tokenSecret: z.string().min(1).optional(),
    /** A GitHub App installation instead of a token: every task gets a short-lived token for its repository. */
    app: z
      .strictObject({
        appId: z.string().min(1),
        installationId: z.number().int().positive(),
        /** Name of the Berth secret holding the App's private key (PEM). */
        privateKeySecret: z.string().min(1),
      })
      .optional(),
    /**
     * SSH repositories: name of the Berth secret holding the deploy key (an OpenSSH private
     * key without a passphrase), used by git on the runner, never inside environments.
     */
    deployKeySecret: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'a secret name: letters, digits and _').optional(),
    /**
     * SSH repositories: the server's host keys, as known_hosts lines (`ssh-keyscan -p PORT HOST`
     * writes them; check the fingerprints). With the instance's BERTH_SSH_KNOWN_HOSTS, the only keys accepted.
     */
    knownHosts: z
      .string()
      .max(64 * 1024)
      .refine((text) => text.split('\n').every((line) => KNOWN_HOSTS_LINE.test(line.trim())), {
        message: 'knownHosts takes known_hosts lines, HOSTS KEYTYPE BASE64-KEY, as `ssh-keyscan -p PORT HOST` prints them',
      })
      .optional(),
    /** Plain git servers only: how the token is sent. Default: Basic with the user name "git". */
    httpAuth: z.union([z.strictObject({ scheme: z.literal('basic'), username: z.string().min(1) }), z.strictObject({ scheme: z.literal('bearer') })]).optional(),
  })
  .refine((s) => !(s.tokenSecret && s.app), { message: 'give either tokenSecret or app, not both', path: ['app'] })
  .refine((s) => !s.app || (s.kind ?? 'github') === 'github', { message: 'a GitHub App works only with kind "github"', path: ['app'] });
export type ForgeSettings = z.infer<typeof ForgeSettingsSchema>;

/** The secrets' values, resolved by the caller from the names in ForgeSettings. */
export type ForgeAuth = { token: string } | { app: { appId: string; installationId: number; privateKey: string } } | null;

/** What git needs to fetch and push one repository, for a limited time. */
export interface GitCredentials {
  /** GIT_CONFIG_* variables that give git the Authorization header; add them to git's environment. */
  env: Record<string, string>;
  /** When the credentials stop working (a GitHub App token: one hour); null: until revoked. */
  expiresAt: Date | null;
  /** Values to redact from anything git or the forge printed. */
  secrets: string[];
  /** For an SSH repository: the deploy key (null: none) and the project's known hosts. */
  ssh?: { privateKey: string | null; knownHosts: string } | undefined;
}

export interface OpenChangeRequest {
  base: string;
  head: string;
  title: string;
  body: string;
  draft: boolean;
}

export interface Forge {
  readonly kind: ForgeKind;
  /**
   * Credentials for git fetch/push of this one repository, as short-lived as the forge allows
   * (GitHub App: an installation token limited to this repository with contents:write and
   * pull_requests:write). No auth: empty, for public repositories and local paths.
   */
  gitCredentials(): Promise<GitCredentials>;
  /** Opens the pull/merge request; plain git returns kind 'berth' and touches nothing remote. */
  openChangeRequest(o: OpenChangeRequest): Promise<ChangeRequest>;
  /** The open pull/merge request from `head` into `base`, if any (GitHub, GitLab): one a stopped attempt opened. */
  findChangeRequest?(o: { head: string; base: string }): Promise<ChangeRequest | null>;
}

/**
 * The forge for a repository URL, from the project's settings and the resolved secrets.
 * `deployKey` is the value of settings.deployKeySecret, for an SSH repository.
 */
export function forgeFor(repoUrl: string, settings: ForgeSettings, auth: ForgeAuth, deployKey: string | null = null): Forge {
  const parsed = parseRepoUrl(repoUrl);
  if (parsed.kind === 'ssh') {
    // git goes over SSH with the deploy key; the forge's API (a pull request) is still at https://HOST.
    const web: RepoLocation = { kind: 'http', url: `https://${parsed.host}/${parsed.path}`, origin: `https://${parsed.host}`, host: parsed.host, path: parsed.path };
    const forge = forgeAt(web, repoUrl, settings, auth, detectKind(parsed));
    const ssh = { privateKey: deployKey, knownHosts: settings.knownHosts ?? '' };
    return { kind: forge.kind, openChangeRequest: (cr) => forge.openChangeRequest(cr), ...(forge.findChangeRequest && { findChangeRequest: (o) => forge.findChangeRequest!(o) }), gitCredentials: async () => ({ env: {}, expiresAt: null, secrets: deployKey ? [deployKey] : [], ssh }) };
  }
  return forgeAt(parsed, repoUrl, settings, auth, detectKind(parsed));
}

function forgeAt(location: RepoLocation, repoUrl: string, settings: ForgeSettings, auth: ForgeAuth, detected: ForgeKind): Forge {
  // A GitHub App can only mean GitHub, whatever the host is called.
  const kind = settings.kind ?? (settings.app ? 'github' : detected);
  if (auth && 'app' in auth && kind !== 'github') throw invalid(`a GitHub App can only authenticate to GitHub, and ${repoUrl} is a ${kind} repository: store a token as a secret and name it in tokenSecret`);
  if (kind === 'git') return plainForge({ location, settings, auth });
  if (location.kind !== 'http') throw invalid(`a ${kind} repository needs its https URL, not a local path: give the URL, or set the forge kind to "git"`);
  if (kind === 'github') return githubForge({ location, settings, auth });
  return gitlabForge({ location, settings, auth });
}
