// Host-side git for tasks: clone a repository, commit the agent's patch, push the branch,
// merge it (plain git), show a diff. The host holds the credentials; the sandbox only ever
// sees a clone without them and hands back a patch, which is untrusted input here.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BerthError, conflict, invalid, notFound, unavailable } from '../shared/errors.ts';
import type { GitCredentials } from './index.ts';
import type { GitReach } from './access.ts';
import { GitFailed, lastLines, runGit, type GitSsh } from './git-run.ts';
import { gitRemote, parseRepoUrl } from './url.ts';

export interface GitIdentity {
  name: string;
  email: string;
}

/** Who merges on `berth task approve` when the caller does not say. */
const BERTH_IDENTITY: GitIdentity = { name: 'Berth', email: 'berth@localhost' };

/**
 * Clones `url` into `dir` (which must not exist or be empty) and checks out `branch`, or the
 * remote's default branch. The clone's origin is the URL as given, which never holds
 * credentials: they were only in git's environment for this one command.
 */
export async function cloneRepo(o: { url: string; dir: string; branch?: string | undefined; credentials?: GitCredentials | undefined; signal?: AbortSignal | undefined; reach: GitReach; /** Only the last N commits (reading files, not working on them). */ depth?: number | undefined }): Promise<{ baseSha: string; branch: string }> {
  const remote = gitRemote(parseRepoUrl(o.url));
  if (o.branch !== undefined) checkBranchName(o.branch, 'branch');
  const auth = authOf(o.credentials);
  try {
    await runGit({ args: ['clone', '--quiet', '--no-recurse-submodules', '--origin', 'origin', ...(o.branch !== undefined ? ['--branch', o.branch] : []), ...(o.depth ? ['--depth', String(o.depth)] : []), '--', remote, o.dir], signal: o.signal, ...reachFor(o), ssh: sshFor(o), ...auth });
  } catch (e) {
    throw gitError(e, `cloning ${remote}`, { branch: o.branch });
  }
  const run = (args: string[]) => runGit({ args, cwd: o.dir }).then((r) => r.stdout.trim());
  let baseSha: string;
  try {
    baseSha = await run(['rev-parse', '--verify', 'HEAD^{commit}']);
  } catch {
    throw invalid(`${remote} has no commits yet: push a first commit to its default branch, then try again`);
  }
  const branch = o.branch ?? (await run(['symbolic-ref', '--short', 'HEAD']));
  // Already the URL as given; set again so that the clone's config is known to hold nothing else.
  await run(['remote', 'set-url', 'origin', remote]);
  await assertNoCredentials(o.dir, o.credentials);
  return { baseSha, branch };
}

/**
 * Commits the agent's patch (from `git diff --cached --binary BASE` in the sandbox) on a new
 * `branch` at `baseSha`. The patch is untrusted: `git apply` refuses paths that leave the work
 * tree, that go into .git or through a symbolic link, and hooks are off for every command.
 */
export async function commitPatch(o: { dir: string; baseSha: string; branch: string; patch: Buffer; message: string; author: GitIdentity; committer?: GitIdentity | undefined }): Promise<{ sha: string; files: string[]; empty: boolean }> {
  checkBranchName(o.branch, 'branch');
  checkRevision(o.baseSha, 'baseSha');
  checkIdentity(o.author, 'author');
  if (o.message.trim() === '') throw invalid('the commit message is empty: give the task\'s commit a message');
  const run = (args: string[], extra: { input?: Buffer; env?: Record<string, string> } = {}) => runGit({ args, cwd: o.dir, ...extra }).then((r) => r.stdout);

  try {
    await run(['checkout', '--quiet', '--force', '-B', o.branch, o.baseSha]);
  } catch (e) {
    throw gitError(e, `creating branch ${o.branch} at ${o.baseSha}`, { branch: o.branch });
  }
  if (o.patch.toString('utf8').trim() === '') return { sha: o.baseSha, files: [], empty: true };
  try {
    await run(['apply', '--index', '--binary', '--whitespace=nowarn', '-'], { input: o.patch });
  } catch (e) {
    // Leave the work tree as it was before: a half-applied patch must not linger for the next try.
    await run(['reset', '--quiet', '--hard', o.baseSha]).catch(() => {});
    if (e instanceof GitFailed) throw invalid(`the agent's changes could not be applied, so nothing was committed: ${lastLines(e.stderr)}`);
    throw e;
  }
  const files = (await run(['diff', '--cached', '--name-only', '--no-renames', '-z', 'HEAD'])).split('\0').filter((f) => f !== '');
  if (files.length === 0) return { sha: o.baseSha, files: [], empty: true };
  const committer = o.committer ?? o.author;
  await run(['commit', '--quiet', '--no-verify', '--file', '-'], { input: Buffer.from(o.message, 'utf8'), env: identityEnv(o.author, committer) });
  const sha = (await run(['rev-parse', 'HEAD'])).trim();
  return { sha, files, empty: false };
}

/**
 * Pushes `branch` of the clone in `dir` to `url`, as the same branch name. Without `force` a
 * branch that moved on the remote is a conflict rather than overwritten.
 */
export async function pushBranch(o: { dir: string; url: string; branch: string; credentials?: GitCredentials | undefined; signal?: AbortSignal | undefined; force?: boolean | undefined; reach: GitReach }): Promise<void> {
  const remote = gitRemote(parseRepoUrl(o.url));
  checkBranchName(o.branch, 'branch');
  const refspec = `${o.force ? '+' : ''}refs/heads/${o.branch}:refs/heads/${o.branch}`;
  try {
    await runGit({ args: ['push', '--quiet', '--no-verify', '--', remote, refspec], cwd: o.dir, signal: o.signal, ...reachFor(o), ssh: sshFor(o), ...authOf(o.credentials) });
  } catch (e) {
    throw gitError(e, `pushing ${o.branch} to ${remote}`, { branch: o.branch, pushed: o.branch });
  }
}

/**
 * Merges `branch` into `base` on the remote (plain git's `berth task approve`): fetches both
 * into a fresh repository in `workdir`, merges with a merge commit and pushes `base`. A
 * conflict aborts before anything is pushed; so does `base` moving on the remote meanwhile.
 */
export async function mergeBranch(o: { url: string; base: string; branch: string; workdir: string; credentials?: GitCredentials | undefined; message: string; author?: GitIdentity | undefined; signal?: AbortSignal | undefined; reach: GitReach }): Promise<{ sha: string }> {
  const remote = gitRemote(parseRepoUrl(o.url));
  checkBranchName(o.base, 'base');
  checkBranchName(o.branch, 'branch');
  const author = o.author ?? BERTH_IDENTITY;
  checkIdentity(author, 'author');
  const auth = authOf(o.credentials);
  await mkdir(o.workdir, { recursive: true });
  const run = (args: string[], extra: { input?: Buffer; env?: Record<string, string> } = {}) => runGit({ args, cwd: o.workdir, signal: o.signal, ...extra }).then((r) => r.stdout);

  await run(['init', '--quiet']);
  try {
    await runGit({
      args: ['fetch', '--quiet', '--no-tags', '--', remote, `+refs/heads/${o.base}:refs/remotes/origin/${o.base}`, `+refs/heads/${o.branch}:refs/remotes/origin/${o.branch}`],
      cwd: o.workdir,
      signal: o.signal,
      ...reachFor(o),
      ssh: sshFor(o),
      ...auth,
    });
  } catch (e) {
    throw gitError(e, `fetching ${o.base} and ${o.branch} from ${remote}`, { branch: `${o.base} or ${o.branch}` });
  }
  await run(['checkout', '--quiet', '--force', '--detach', `refs/remotes/origin/${o.base}`]);
  try {
    await run(['merge', '--no-ff', '--no-edit', '-m', o.message, `refs/remotes/origin/${o.branch}`], { env: identityEnv(author, author) });
  } catch (e) {
    if (!(e instanceof GitFailed)) throw e;
    const conflicted = (await run(['diff', '--name-only', '--diff-filter=U', '-z']).catch(() => '')).split('\0').filter((f) => f !== '');
    await run(['merge', '--abort']).catch(() => {});
    if (conflicted.length > 0) {
      throw conflict(`${o.branch} conflicts with ${o.base} in ${conflicted.join(', ')}; nothing was pushed: update the branch from ${o.base} (or run the task again on the new ${o.base}) and approve again`);
    }
    throw new BerthError('internal', `merging ${o.branch} into ${o.base} failed, nothing was pushed: ${lastLines(e.stderr)}`);
  }
  try {
    await runGit({ args: ['push', '--quiet', '--no-verify', '--', remote, `HEAD:refs/heads/${o.base}`], cwd: o.workdir, signal: o.signal, ...reachFor(o), ssh: sshFor(o), ...auth });
  } catch (e) {
    throw gitError(e, `pushing ${o.base} to ${remote}`, { branch: o.base, pushed: o.base });
  }
  return { sha: (await run(['rev-parse', 'HEAD'])).trim() };
}

/**
 * The unified diff from `base` to `head` in the clone at `dir`, for people to read; with
 * `text`, binary files too, as text (for a scan of everything the change adds).
 */
export async function diffOf(o: { dir: string; base: string; head: string; text?: boolean | undefined }): Promise<string> {
  checkRevision(o.base, 'base');
  checkRevision(o.head, 'head');
  try {
    const { stdout } = await runGit({ args: ['diff', '--no-color', '--no-ext-diff', '--no-textconv', ...(o.text ? ['--text'] : []), o.base, o.head, '--'], cwd: o.dir });
    return stdout;
  } catch (e) {
    throw gitError(e, `diffing ${o.base}..${o.head}`, {});
  }
}

/** The commit `branch` was at on the remote when the clone at `dir` was made (a full clone fetches every branch), or null. */
export async function remoteBranchSha(o: { dir: string; branch: string }): Promise<string | null> {
  checkBranchName(o.branch, 'branch');
  const r = await runGit({ args: ['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${o.branch}^{commit}`], cwd: o.dir }).catch(() => null);
  return r?.stdout.trim() || null;
}

/** The files a commit range changes. */
export async function changedFiles(o: { dir: string; base: string; head: string }): Promise<string[]> {
  checkRevision(o.base, 'base');
  checkRevision(o.head, 'head');
  const { stdout } = await runGit({ args: ['-c', 'core.quotepath=off', 'diff', '--name-only', '-z', '--no-renames', o.base, o.head, '--'], cwd: o.dir });
  return stdout.split('\0').filter((f) => f !== '');
}

/** The -c settings and the upstream proxy of the reach made for this URL; a reach made for another repository is a bug. */
function reachFor(o: { url: string; reach: GitReach }): { config: readonly string[]; proxy: string | null | undefined } {
  if (o.reach.url !== o.url) throw new BerthError('internal', `git was handed leave to reach ${o.reach.url} for ${o.url}`);
  return { config: o.reach.config, proxy: o.reach.proxy };
}

/**
 * What ssh is given for an SSH remote: the pin and the instance's known hosts from the
 * reach, the deploy key and the project's known hosts from the credentials. Nothing for
 * other remotes.
 */
function sshFor(o: { url: string; reach: GitReach; credentials?: GitCredentials | undefined }): GitSsh | undefined {
  if (parseRepoUrl(o.url).kind !== 'ssh') return undefined;
  if (!o.reach.ssh) throw new BerthError('internal', `git was handed leave to reach ${o.url} without its SSH settings`);
  const knownHosts = [o.reach.ssh.knownHosts, o.credentials?.ssh?.knownHosts ?? ''].filter((t) => t.trim() !== '').join('\n');
  return { options: o.reach.ssh.options, privateKey: o.credentials?.ssh?.privateKey ?? null, knownHosts };
}

function authOf(credentials: GitCredentials | undefined): { env: Record<string, string>; secrets: readonly string[] } {
  return { env: credentials?.env ?? {}, secrets: credentials?.secrets ?? [] };
}

function identityEnv(author: GitIdentity, committer: GitIdentity): Record<string, string> {
  return {
    GIT_AUTHOR_NAME: author.name,
    GIT_AUTHOR_EMAIL: author.email,
    GIT_COMMITTER_NAME: committer.name,
    GIT_COMMITTER_EMAIL: committer.email,
  };
}

/**
 * The credentials went to git through its environment only; this checks that nothing (a
 * future git, a URL rewrite) wrote them into the clone's configuration after all.
 */
async function assertNoCredentials(dir: string, credentials: GitCredentials | undefined): Promise<void> {
  if (!credentials || credentials.secrets.length === 0) return;
  const config = await readFile(join(dir, '.git', 'config'), 'utf8');
  if (credentials.secrets.some((s) => s !== '' && config.includes(s))) {
    throw new BerthError('internal', `a credential ended up in ${join(dir, '.git', 'config')}; remove that clone: Berth will not use it`);
  }
}

/** Branch names as git allows them, and never an option (`--upload-pack=…`). */
function checkBranchName(name: string, field: string): void {
  // The rules of git check-ref-format, for one branch name.
  const bad =
    name === '' ||
    name.startsWith('-') ||
    name.startsWith('/') ||
    name.endsWith('/') ||
    name.endsWith('.') ||
    name.endsWith('.lock') ||
    name === '@' ||
    name.includes('..') ||
    name.includes('//') ||
    name.includes('@{') ||
    name.split('/').some((part) => part.startsWith('.')) ||
    /[\x00-\x20\x7f~^:?*[\\]/.test(name);
  if (bad) throw invalid(`"${name}" is not a valid git branch name: use letters, digits, "-", "_", "." and "/" (such as berth/fix-login)`, field);
}

/** A commit id or ref given to git as a revision; never an option. */
function checkRevision(rev: string, field: string): void {
  if (rev === '' || rev.startsWith('-') || /[\x00-\x20\x7f]/.test(rev)) throw invalid(`"${rev}" is not a git revision: give a commit id or a branch name`, field);
}

function checkIdentity(who: GitIdentity, field: string): void {
  // git refuses empty names; angle brackets and newlines would forge the commit header.
  if (who.name.trim() === '' || who.email.trim() === '' || /[<>\n]/.test(who.name + who.email)) {
    throw invalid(`the commit ${field} needs a name and an email without "<", ">" or line breaks`, field);
  }
}

/** What git's failure means for the user, as a typed error whose message says what to do. */
function gitError(e: unknown, doing: string, about: { branch?: string | undefined; pushed?: string }): unknown {
  if (!(e instanceof GitFailed)) return e;
  const detail = lastLines(e.stderr);
  if (e.timedOut) return unavailable(`${doing} ran out of time: check that the server is reachable and try again`);
  const s = e.stderr;
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No [A-Z0-9-]+ host key is known/i.test(s)) {
    return new BerthError(
      'forbidden',
      `${doing}: the server's SSH host key is not among the known hosts (or differs from the one there), so Berth did not connect: ` +
        "get the key with `ssh-keyscan -p PORT HOST`, check its fingerprint with the server's administrator, and add the line to the project " +
        '(`berth project update NAME --known-hosts FILE`), or ask an instance administrator to add it to BERTH_SSH_KNOWN_HOSTS',
    );
  }
  if (/Permission denied \(publickey/i.test(s)) {
    return invalid(
      `${doing}: the SSH server refused the deploy key (or there was none): store the private key as a secret (\`berth secret set NAME --from-file KEY\`), ` +
        `name it in the project (\`berth project update NAME --deploy-key-secret NAME\`), and give its public key ${about.pushed ? 'write' : 'read'} access to the repository. git said: ${detail}`,
    );
  }
  if (/Authentication failed|could not read (Username|Password)|terminal prompts disabled|returned error: 40[13]|HTTP 40[13]|Invalid username or password|Permission to .* denied|403 Forbidden/i.test(s)) {
    return invalid(`${doing}: the server refused the credentials (or asked for some and there were none): check the token secret in the project's forge settings and that it may ${about.pushed ? 'push to' : 'read'} this repository. git said: ${detail}`);
  }
  if (about.branch !== undefined && /Remote branch .* not found|couldn't find remote ref|invalid refspec/i.test(s)) {
    return notFound(`${doing}: the branch ${about.branch} does not exist there: check the branch name`);
  }
  if (/Repository not found|does not appear to be a git repository|returned error: 404|not found|does not exist/i.test(s)) {
    return notFound(`${doing}: there is no repository there, or the credentials cannot see it: check the URL and the token's access. git said: ${detail}`);
  }
  if (about.pushed !== undefined && /\[rejected\]|non-fast-forward|fetch first|failed to push|stale info/i.test(s)) {
    return conflict(`${doing}: ${about.pushed} on the server has commits this push does not have, so nothing was overwritten: run again from the current ${about.pushed}`);
  }
  if (/Could not resolve host|Could not resolve hostname|ssh: connect to host|Connection closed by|Connection refused|Connection timed out|Failed to connect|Operation timed out|SSL|TLS|returned error: 5\d\d|HTTP 5\d\d|unable to access/i.test(s)) {
    return unavailable(`${doing}: the server could not be reached: check the URL and the network, then try again. git said: ${detail}`);
  }
  return new BerthError('internal', `${doing} failed: ${detail}`);
}
