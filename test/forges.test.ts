// Forges and host-side git against servers that speak the real protocols: git's smart HTTP
// (git http-backend), GitHub's REST API with App JWTs, GitLab's API v4.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BerthError } from '../src/shared/errors.ts';
import { cloneRepo as gitClone, commitPatch, diffOf, forgeFor, ForgeSettingsSchema, mergeBranch as gitMerge, parseRepoUrl, pushBranch as gitPush, RepoAccess, type GitCredentials } from '../src/forges/index.ts';
import { GitFailed, runGit as berthGit } from '../src/forges/git-run.ts';
import { createBareRepo, pushCommit, refSha, runGit, startGitServer, type GitServer } from './fakes/git-server.ts';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startFakeGitLab, type FakeGitLab } from './fakes/gitlab.ts';
import { TEST_REPOS } from './helpers.ts';

// Host-side git reaches a remote only with leave from RepoAccess, as the task pipeline asks
// for it: the tests' repositories (temp directory, fake servers on 127.0.0.1) are allowed.
const access = new RepoAccess(TEST_REPOS);
type Unreached<F extends (o: any) => unknown> = Omit<Parameters<F>[0], 'reach'>;
const cloneRepo = async (o: Unreached<typeof gitClone>) => gitClone({ ...o, reach: await access.reach(o.url) });
const pushBranch = async (o: Unreached<typeof gitPush>) => gitPush({ ...o, reach: await access.reach(o.url) });
const mergeBranch = async (o: Unreached<typeof gitMerge>) => gitMerge({ ...o, reach: await access.reach(o.url) });

const AUTHOR = { name: 'Berth Agent', email: 'agent@berth.test' };
const PLAIN_TOKEN = 'plain-s3cret-token-1234567890';
const GITHUB_TOKEN = 'ghp_t0kenThatMustNeverShow0000000000';
const GITLAB_TOKEN = 'glpat-t0kenThatMustNeverShow00000';

let scratch: string;
/** A fresh directory under the test's scratch dir. */
let counter = 0;
const dir = (name: string) => join(scratch, `${name}-${++counter}`);

// Every git the code under test runs goes through this wrapper, which logs its argv: the
// tests prove that no credential was ever on a command line, where `ps` would show it.
let argvLog: string;

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'berth-forges-test-'));
  argvLog = join(scratch, 'argv.log');
  const realGit = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
  const bin = join(scratch, 'bin');
  await mkdir(bin);
  await writeFile(join(bin, 'git'), `#!/bin/sh\nprintf '%s\\n' "$*" >> '${argvLog}'\nexec '${realGit}' "$@"\n`);
  await chmod(join(bin, 'git'), 0o755);
  process.env.PATH = `${bin}:${process.env.PATH}`;
});

after(async () => {
  const argv = await readFile(argvLog, 'utf8').catch(() => '');
  await rm(scratch, { recursive: true, force: true });
  assert.ok(argv.includes('clone --quiet --no-recurse-submodules'), "the argv log saw Berth's clones");
  for (const secret of [PLAIN_TOKEN, GITHUB_TOKEN, GITLAB_TOKEN, 'ghs_', Buffer.from(`x-access-token:${GITHUB_TOKEN}`).toString('base64')]) {
    assert.ok(!argv.includes(secret), `no git command line carried ${secret.slice(0, 8)}…`);
  }
});

/** Asserts that `promise` rejects with a BerthError of `kind` whose message matches and holds no secret. */
async function rejectsWith(promise: Promise<unknown>, kind: string, message: RegExp, secrets: string[] = []): Promise<BerthError> {
  const error = await promise.then(
    () => assert.fail('expected an error'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof BerthError, `a BerthError, not ${String(error)}`);
  assert.equal(error.kind, kind, error.message);
  assert.match(error.message, message);
  for (const s of secrets) {
    assert.ok(!error.message.includes(s), `the message leaks a secret: ${error.message}`);
    assert.ok(!error.message.includes(Buffer.from(s).toString('base64').slice(0, 12)), `the message leaks an encoded secret: ${error.message}`);
  }
  return error;
}

async function gitConfigHasNo(clone: string, secrets: string[]): Promise<void> {
  const config = await readFile(join(clone, '.git', 'config'), 'utf8');
  for (const s of secrets) assert.ok(!config.includes(s), '.git/config holds a credential');
  assert.doesNotMatch(config, /extraHeader|Authorization|@127\.0\.0\.1/i);
}

/** What the sandbox hands back: its changes as `git diff --cached --binary BASE`. */
async function sandboxPatch(o: { bare: string; change: (work: string) => Promise<void> }): Promise<{ patch: Buffer; tree: string }> {
  const work = dir('sandbox');
  await runGit(['clone', '-q', o.bare, work]);
  const base = (await runGit(['rev-parse', 'HEAD'], { cwd: work })).trim();
  await o.change(work);
  await runGit(['add', '-A'], { cwd: work });
  const patch = Buffer.from(await runGit(['diff', '--cached', '--binary', base], { cwd: work }), 'utf8');
  return { patch, tree: (await runGit(['write-tree'], { cwd: work })).trim() };
}

describe('repository URLs and settings', () => {
  test('detects the forge from the host and reads the path', () => {
    assert.equal(forgeFor('https://github.com/o/r.git', {}, null).kind, 'github');
    assert.equal(forgeFor('https://gitlab.com/group/sub/proj', {}, null).kind, 'gitlab');
    assert.equal(forgeFor('https://gitlab.example.com/group/proj.git', {}, null).kind, 'gitlab');
    assert.equal(forgeFor('https://git.example.com/r.git', {}, null).kind, 'git');
    assert.equal(forgeFor('/srv/git/r.git', {}, null).kind, 'git');
    assert.equal(forgeFor('http://127.0.0.1:9/o/r.git', { kind: 'github' }, null).kind, 'github');
    assert.deepEqual(parseRepoUrl('https://github.com/o/r.git/'), { kind: 'http', url: 'https://github.com/o/r.git', origin: 'https://github.com', host: 'github.com', path: 'o/r' });
    assert.deepEqual(parseRepoUrl('file:///srv/git/r.git'), { kind: 'local', path: '/srv/git/r.git' });
  });

  test('refuses credentials in the URL without repeating them', () => {
    const error = (() => {
      try {
        parseRepoUrl('https://alice:hunter2-password@github.com/o/r.git');
      } catch (e) {
        return e;
      }
    })();
    assert.ok(error instanceof BerthError && error.kind === 'invalid');
    assert.match(error.message, /store the token as a Berth secret/);
    assert.ok(!error.message.includes('hunter2'));
    assert.throws(() => parseRepoUrl('https://x-access-token@github.com/o/r'), /carries credentials/);
    // SSH remotes are read (test/ssh-repos.test.ts), but never with a password.
    assert.throws(() => parseRepoUrl('ssh://git:hunter2@github.com/o/r.git'), (e: Error) => e instanceof BerthError && /carries a password/.test(e.message) && !e.message.includes('hunter2'));
    assert.throws(() => parseRepoUrl('--upload-pack=evil'), /cannot start with "-"/);
    assert.throws(() => forgeFor('https://github.com/only-owner', {}, null), /not a GitHub repository URL/);
    assert.throws(() => forgeFor('https://gitlab.com/o/r', {}, { app: { appId: '1', installationId: 2, privateKey: 'k' } }), /GitHub App can only authenticate to GitHub/);
  });

  test('validates forge settings with one schema', () => {
    assert.equal(ForgeSettingsSchema.safeParse({ kind: 'github', apiUrl: 'https://ghe.example.com/api/v3', tokenSecret: 'GH' }).success, true);
    assert.equal(ForgeSettingsSchema.safeParse({ app: { appId: '12', installationId: 34, privateKeySecret: 'KEY' } }).success, true);
    assert.equal(ForgeSettingsSchema.safeParse({ kind: 'svn' }).success, false);
    assert.equal(ForgeSettingsSchema.safeParse({ apiUrl: 'ftp://x' }).success, false);
    assert.equal(ForgeSettingsSchema.safeParse({ token: 'inline' }).success, false, 'unknown keys (a token inline) are refused');
    assert.equal(ForgeSettingsSchema.safeParse({ tokenSecret: 'A', app: { appId: '1', installationId: 2, privateKeySecret: 'K' } }).success, false);
    assert.equal(ForgeSettingsSchema.safeParse({ kind: 'gitlab', app: { appId: '1', installationId: 2, privateKeySecret: 'K' } }).success, false);
  });
});

describe('plain git over smart HTTP', () => {
  let server: GitServer;
  let bare: string;
  let url: string;
  const bearer = `Bearer ${PLAIN_TOKEN}`;
  let credentials: GitCredentials;

  before(async () => {
    server = await startGitServer({ authorize: bearer });
    ({ path: bare } = await createBareRepo({
      root: server.root,
      name: 'team/app.git',
      branch: 'trunk',
      files: { 'README.md': '# app\n', 'src/main.txt': 'one\ntwo\nthree\n', 'old.txt': 'to be deleted\n', 'logo.bin': Buffer.from([0, 1, 2, 3, 250, 251, 252]) },
    }));
    url = `${server.url}/team/app.git`;
    credentials = await forgeFor(url, { httpAuth: { scheme: 'bearer' }, tokenSecret: 'GIT_TOKEN' }, { token: PLAIN_TOKEN }).gitCredentials();
  });
  after(() => server.close());

  test('clone sends the credentials and keeps them out of .git/config; without them the server says 401', async () => {
    const clone = dir('clone');
    const { baseSha, branch } = await cloneRepo({ url, dir: clone, credentials });
    assert.equal(branch, 'trunk', 'the remote HEAD');
    assert.equal(baseSha, await refSha(bare, 'refs/heads/trunk'));
    assert.equal(await readFile(join(clone, 'src/main.txt'), 'utf8'), 'one\ntwo\nthree\n');
    assert.ok(server.requests.some((r) => r.authorization === 'accepted' && r.service === 'git-upload-pack'));
    await gitConfigHasNo(clone, credentials.secrets);
    assert.equal((await runGit(['remote', 'get-url', 'origin'], { cwd: clone })).trim(), url);

    const before = server.requests.length;
    await rejectsWith(cloneRepo({ url, dir: dir('anonymous') }), 'invalid', /refused the credentials.*check the token secret/s);
    assert.ok(server.requests.slice(before).some((r) => r.authorization === 'none'), 'the server saw a request without credentials');

    const wrong = await forgeFor(url, { httpAuth: { scheme: 'bearer' } }, { token: 'wrong-token-value-123' }).gitCredentials();
    await rejectsWith(cloneRepo({ url, dir: dir('wrong'), credentials: wrong }), 'invalid', /refused the credentials/, ['wrong-token-value-123']);
    assert.ok(server.requests.some((r) => r.authorization === 'refused'));
  });

  test('credentials are scoped to the repository host', async () => {
    assert.deepEqual(Object.keys(credentials.env).sort(), ['GIT_CONFIG_COUNT', 'GIT_CONFIG_KEY_0', 'GIT_CONFIG_VALUE_0']);
    assert.equal(credentials.env.GIT_CONFIG_KEY_0, `http.${server.url}/.extraHeader`);
    assert.equal(credentials.env.GIT_CONFIG_VALUE_0, `Authorization: ${bearer}`);
    const basic = await forgeFor(url, { httpAuth: { scheme: 'basic', username: 'bot' } }, { token: PLAIN_TOKEN }).gitCredentials();
    assert.equal(basic.env.GIT_CONFIG_VALUE_0, `Authorization: Basic ${Buffer.from(`bot:${PLAIN_TOKEN}`).toString('base64')}`);
    assert.ok(basic.secrets.includes(Buffer.from(`bot:${PLAIN_TOKEN}`).toString('base64')), 'the encoded header is redacted too');
    assert.deepEqual((await forgeFor(url, {}, null).gitCredentials()).env, {});
  });

  test('git stderr is redacted of credentials, in plain and encoded form', async () => {
    // A made-up secret that git is made to print (this one is on a command line on purpose).
    const secret = 'printed-s3cret-value-0987654321';
    const encoded = Buffer.from(`git:${secret}`).toString('base64');
    const error = await berthGit({ args: ['ls-remote', `${scratch}/no-repo/${secret}/${encoded}`], secrets: [secret, encoded] }).then(
      () => assert.fail('ls-remote should fail'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof GitFailed);
    assert.match(error.stderr, /\[secret:credential\]/);
    assert.ok(!error.message.includes(secret) && !error.stderr.includes(secret) && !error.stderr.includes(encoded), error.stderr);
  });

  test('commitPatch commits a sandbox patch with a new, a changed, a deleted and a binary file', async () => {
    const clone = dir('clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    const { patch, tree } = await sandboxPatch({
      bare,
      change: async (work) => {
        await writeFile(join(work, 'src/main.txt'), 'one\n2\nthree\nfour\n');
        await writeFile(join(work, 'src/new.txt'), 'brand new\n');
        await rm(join(work, 'old.txt'));
        await writeFile(join(work, 'logo.bin'), Buffer.from([9, 0, 8, 0, 255, 254, 0, 7]));
        await writeFile(join(work, 'image.png'), Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0]), Buffer.alloc(300, 7)]));
      },
    });
    assert.match(patch.toString(), /GIT binary patch/);
    const commit = await commitPatch({ dir: clone, baseSha, branch: 'berth/task-1', patch, message: 'Change things\n\nBy the agent.', author: AUTHOR });
    assert.equal(commit.empty, false);
    assert.deepEqual(commit.files.sort(), ['image.png', 'logo.bin', 'old.txt', 'src/main.txt', 'src/new.txt']);
    assert.equal((await runGit(['rev-parse', 'HEAD^{tree}'], { cwd: clone })).trim(), tree, 'the same tree as in the sandbox');
    assert.equal((await runGit(['rev-parse', 'HEAD^'], { cwd: clone })).trim(), baseSha);
    assert.equal((await runGit(['log', '-1', '--format=%an <%ae>|%B'], { cwd: clone })).trim(), 'Berth Agent <agent@berth.test>|Change things\n\nBy the agent.');
    assert.equal((await runGit(['symbolic-ref', '--short', 'HEAD'], { cwd: clone })).trim(), 'berth/task-1');

    const diff = await diffOf({ dir: clone, base: baseSha, head: commit.sha });
    assert.match(diff, /^\+four$/m);
    assert.match(diff, /deleted file mode/);
    assert.match(diff, /Binary files a\/logo.bin and b\/logo.bin differ/);

    await pushBranch({ dir: clone, url, branch: 'berth/task-1', credentials });
    assert.equal(await refSha(bare, 'refs/heads/berth/task-1'), commit.sha);
    assert.ok(server.requests.some((r) => r.service === 'git-receive-pack' && r.authorization === 'accepted'));
    await gitConfigHasNo(clone, credentials.secrets);
  });

  test('an empty patch commits nothing', async () => {
    const clone = dir('clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    assert.deepEqual(await commitPatch({ dir: clone, baseSha, branch: 'berth/empty', patch: Buffer.alloc(0), message: 'nothing', author: AUTHOR }), { sha: baseSha, files: [], empty: true });
    assert.equal((await runGit(['rev-parse', 'HEAD'], { cwd: clone })).trim(), baseSha);
  });

  test('a patch reaching outside the work tree or into .git is refused and leaves nothing behind', async () => {
    const clone = dir('clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    const configBefore = await readFile(join(clone, '.git', 'config'), 'utf8');
    // Each with the reason git gives: the path check, not some accident of the patch's format.
    const patches: Record<string, [string, RegExp]> = {
      parent: [['diff --git a/../outside b/../outside', 'new file mode 100644', '--- /dev/null', '+++ b/../outside', '@@ -0,0 +1 @@', '+pwned', ''].join('\n'), /invalid path '\.\.\/outside'/],
      newGitConfig: [['diff --git a/.git/config b/.git/config', 'new file mode 100644', '--- /dev/null', '+++ b/.git/config', '@@ -0,0 +1,2 @@', '+[core]', '+\thooksPath = /tmp/evil', ''].join('\n'), /\.git\/config: already exists|invalid path '\.git\/config'/],
      editGitConfig: [['diff --git a/.git/config b/.git/config', '--- a/.git/config', '+++ b/.git/config', '@@ -1 +1,2 @@', ' [core]', '+\thooksPath = /tmp/evil', ''].join('\n'), /\.git\/config/],
      gitHook: [['diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout', 'new file mode 100755', '--- /dev/null', '+++ b/.git/hooks/post-checkout', '@@ -0,0 +1,2 @@', '+#!/bin/sh', '+touch /tmp/pwned', ''].join('\n'), /invalid path '\.git\/hooks\/post-checkout'/],
      upperGit: [['diff --git a/.GIT/config b/.GIT/config', 'new file mode 100644', '--- /dev/null', '+++ b/.GIT/config', '@@ -0,0 +1 @@', '+[core]', ''].join('\n'), /invalid path '\.GIT\/config'/],
      // A symbolic link to the parent, then a file written through it.
      symlink: [
        [
          'diff --git a/link b/link',
          'new file mode 120000',
          '--- /dev/null',
          '+++ b/link',
          '@@ -0,0 +1 @@',
          '+..',
          '\\ No newline at end of file',
          'diff --git a/link/escaped b/link/escaped',
          'new file mode 100644',
          '--- /dev/null',
          '+++ b/link/escaped',
          '@@ -0,0 +1 @@',
          '+pwned',
          '',
        ].join('\n'),
        /beyond a symbolic link/,
      ],
    };
    for (const [name, [patch, reason]] of Object.entries(patches)) {
      const error = await rejectsWith(
        commitPatch({ dir: clone, baseSha, branch: `berth/evil-${name}`, patch: Buffer.from(patch), message: 'evil', author: AUTHOR }),
        'invalid',
        /could not be applied, so nothing was committed/,
      );
      assert.match(error.message, reason, `${name}: ${error.message}`);
      assert.equal((await runGit(['rev-parse', 'HEAD'], { cwd: clone })).trim(), baseSha, `${name}: no commit`);
      assert.equal((await runGit(['status', '--porcelain'], { cwd: clone })).trim(), '', `${name}: a clean work tree`);
    }
    await assert.rejects(stat(join(clone, '..', 'outside')), { code: 'ENOENT' });
    await assert.rejects(stat(join(clone, '..', 'escaped')), { code: 'ENOENT' });
    await assert.rejects(stat(join(clone, '.git', 'hooks', 'post-checkout')), { code: 'ENOENT' });
    assert.equal(await readFile(join(clone, '.git', 'config'), 'utf8'), configBefore);
  });

  test('bad branch names and an aborted signal are refused before git runs', async () => {
    await rejectsWith(cloneRepo({ url, dir: dir('x'), branch: '--upload-pack=touch /tmp/x', credentials }), 'invalid', /not a valid git branch name/);
    await rejectsWith(pushBranch({ dir: scratch, url, branch: 'a..b', credentials }), 'invalid', /not a valid git branch name/);
    await assert.rejects(cloneRepo({ url, dir: dir('aborted'), credentials, signal: AbortSignal.abort() }), { name: 'AbortError' });
    await rejectsWith(cloneRepo({ url, dir: dir('nobranch'), branch: 'no-such-branch', credentials }), 'not_found', /branch no-such-branch does not exist/);
  });

  test('mergeBranch merges with a merge commit and pushes the base', async () => {
    const clone = dir('clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    const { patch } = await sandboxPatch({ bare, change: (work) => writeFile(join(work, 'feature.txt'), 'feature\n') });
    const commit = await commitPatch({ dir: clone, baseSha, branch: 'berth/merge-me', patch, message: 'Add feature', author: AUTHOR });
    await pushBranch({ dir: clone, url, branch: 'berth/merge-me', credentials });
    // Someone else moves the base meanwhile, without conflict.
    const moved = await pushCommit({ bare, branch: 'trunk', files: { 'other.txt': 'other\n' }, message: 'Other work' });

    const { sha } = await mergeBranch({ url, base: 'trunk', branch: 'berth/merge-me', workdir: dir('merge'), credentials, message: 'Merge berth/merge-me' });
    assert.equal(await refSha(bare, 'refs/heads/trunk'), sha);
    const parents = (await runGit(['rev-list', '--parents', '-n', '1', sha], { cwd: bare })).trim().split(' ').slice(1);
    assert.deepEqual(parents, [moved, commit.sha], 'a merge commit of the base and the branch');
    assert.equal((await runGit(['log', '-1', '--format=%s|%an', sha], { cwd: bare })).trim(), 'Merge berth/merge-me|Berth');
    assert.equal((await runGit(['show', `${sha}:feature.txt`], { cwd: bare })), 'feature\n');
  });

  test('a conflicting merge is a conflict error and pushes nothing', async () => {
    const clone = dir('clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    const { patch } = await sandboxPatch({ bare, change: (work) => writeFile(join(work, 'README.md'), '# app, by the agent\n') });
    await commitPatch({ dir: clone, baseSha, branch: 'berth/conflicts', patch, message: 'Edit README', author: AUTHOR });
    await pushBranch({ dir: clone, url, branch: 'berth/conflicts', credentials });
    const moved = await pushCommit({ bare, branch: 'trunk', files: { 'README.md': '# app, by a human\n' }, message: 'Edit README too' });
    const pushesBefore = server.requests.filter((r) => r.service === 'git-receive-pack').length;

    await rejectsWith(mergeBranch({ url, base: 'trunk', branch: 'berth/conflicts', workdir: dir('merge'), credentials, message: 'Merge' }), 'conflict', /conflicts with trunk in README\.md; nothing was pushed/);
    assert.equal(await refSha(bare, 'refs/heads/trunk'), moved, 'the base did not move');
    assert.equal(server.requests.filter((r) => r.service === 'git-receive-pack').length, pushesBefore, 'no push was attempted');

    // Pushing the branch again over commits it lacks is a conflict too, not an overwrite.
    await pushCommit({ bare, branch: 'berth/conflicts', files: { 'x.txt': 'x\n' }, message: 'someone else' });
    await rejectsWith(pushBranch({ dir: clone, url, branch: 'berth/conflicts', credentials }), 'conflict', /has commits this push does not have/);
  });

  test('a local path works without credentials', async () => {
    const local = await createBareRepo({ root: scratch, name: `local-${++counter}.git`, files: { 'a.txt': 'a\n' } });
    const clone = dir('clone');
    const forge = forgeFor(local.path, {}, { token: PLAIN_TOKEN });
    assert.deepEqual((await forge.gitCredentials()).env, {});
    const { baseSha, branch } = await cloneRepo({ url: `file://${local.path}`, dir: clone });
    assert.equal(branch, 'main');
    assert.equal(baseSha, local.sha);
    assert.deepEqual(await forge.openChangeRequest({ base: 'main', head: 'x', title: 't', body: 'b', draft: true }), { kind: 'berth', url: null, number: null, draft: true });
  });
});

describe('GitHub', () => {
  let github: FakeGitHub;
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const other = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const appSettings = { appId: '4242', installationId: 77, privateKeySecret: 'GITHUB_APP_KEY' };

  before(async () => {
    github = await startFakeGitHub({ tokens: [GITHUB_TOKEN], apps: [{ appId: '4242', publicKey, installationId: 77, repositories: ['octo/app', 'octo/second'] }] });
    await github.createRepo('octo/app', { 'README.md': '# octo\n', 'lib.txt': 'a\nb\n' });
    await github.createRepo('octo/second', { 'README.md': '# second\n' });
    await github.createRepo('octo/private', { 'README.md': '# not for the app\n' });
  });
  after(() => github.close());

  /** Clones through the fake, commits a change and pushes `branch`; returns the commit. */
  async function pushChange(url: string, credentials: GitCredentials, branch: string, file: string): Promise<string> {
    const clone = dir('gh-clone');
    const { baseSha } = await cloneRepo({ url, dir: clone, credentials });
    await gitConfigHasNo(clone, credentials.secrets);
    await writeFile(join(clone, file), `${branch}\n`);
    await runGit(['add', file], { cwd: clone });
    const patch = Buffer.from(await runGit(['diff', '--cached', '--binary', baseSha], { cwd: clone }));
    await runGit(['reset', '-q', '--hard'], { cwd: clone });
    const { sha } = await commitPatch({ dir: clone, baseSha, branch, patch, message: `Add ${file}`, author: AUTHOR });
    await pushBranch({ dir: clone, url, branch, credentials });
    return sha;
  }

  test('with a token: git over Basic x-access-token, then a pull request', async () => {
    const url = github.repoUrl('octo/app');
    const forge = forgeFor(url, { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' }, { token: GITHUB_TOKEN });
    const credentials = await forge.gitCredentials();
    assert.equal(credentials.expiresAt, null);
    const sha = await pushChange(url, credentials, 'berth/pr-token', 'token.txt');
    assert.ok(github.gitRequests.every((r) => r.authorization === 'accepted'), 'git authenticated every request');

    const pr = await forge.openChangeRequest({ base: 'main', head: 'berth/pr-token', title: 'Add token.txt', body: 'Made by Berth.', draft: false });
    assert.deepEqual(pr, { kind: 'pull_request', url: `${github.url}/octo/app/pull/1`, number: 1, draft: false });
    assert.deepEqual(
      github.pulls.map(({ repository, title, body, head, base, draft, headSha, token }) => ({ repository, title, body, head, base, draft, headSha, token })),
      [{ repository: 'octo/app', title: 'Add token.txt', body: 'Made by Berth.', head: 'berth/pr-token', base: 'main', draft: false, headSha: sha, token: GITHUB_TOKEN }],
    );

    await rejectsWith(forge.openChangeRequest({ base: 'main', head: 'berth/pr-token', title: 'again', body: '', draft: false }), 'conflict', /already exists on octo\/app/);
    await rejectsWith(forge.openChangeRequest({ base: 'main', head: 'berth/no-such-branch', title: 't', body: '', draft: false }), 'invalid', /check that both branches exist/);
  });

  test('a refused token is a clear error that names the secret, never the token', async () => {
    const url = github.repoUrl('octo/app');
    const bad = 'ghp_revokedTokenValue000000000000';
    const forge = forgeFor(url, { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' }, { token: bad });
    await rejectsWith(forge.openChangeRequest({ base: 'main', head: 'x', title: 't', body: '', draft: false }), 'invalid', /GitHub refused the token \(Bad credentials\): check the token in secret "GITHUB_TOKEN"/, [bad]);
    await rejectsWith(cloneRepo({ url, dir: dir('gh-bad'), credentials: await forge.gitCredentials() }), 'invalid', /refused the credentials/, [bad]);
    const missing = forgeFor(github.repoUrl('octo/missing'), { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' }, { token: GITHUB_TOKEN });
    await rejectsWith(missing.openChangeRequest({ base: 'main', head: 'x', title: 't', body: '', draft: false }), 'not_found', /no repository octo\/missing/, [GITHUB_TOKEN]);
  });

  test('with a GitHub App: an installation token for this repository only, then a draft pull request', async () => {
    const url = github.repoUrl('octo/app');
    const forge = forgeFor(url, { apiUrl: github.apiUrl, app: appSettings }, { app: { appId: '4242', installationId: 77, privateKey } });
    assert.equal(forge.kind, 'github', 'an App means GitHub, whatever the host');
    const credentials = await forge.gitCredentials();
    assert.equal(github.issuedTokens.length, 1);
    const issued = github.issuedTokens[0]!;
    assert.deepEqual(issued.repositories, ['octo/app']);
    assert.deepEqual(issued.permissions, { contents: 'write', pull_requests: 'write' });
    assert.ok(credentials.secrets.includes(issued.token));
    assert.ok(credentials.expiresAt && Math.abs(credentials.expiresAt.getTime() - Date.parse(issued.expiresAt)) < 1000);
    assert.ok(credentials.expiresAt.getTime() - Date.now() > 50 * 60_000, 'about an hour to live');

    const sha = await pushChange(url, credentials, 'berth/pr-app', 'app.txt');
    const pr = await forge.openChangeRequest({ base: 'main', head: 'berth/pr-app', title: 'Add app.txt', body: 'Draft by Berth.', draft: true });
    assert.equal(pr.kind, 'pull_request');
    assert.equal(pr.draft, true);
    const recorded = github.pulls.find((p) => p.head === 'berth/pr-app');
    assert.ok(recorded);
    assert.equal(recorded.draft, true);
    assert.equal(recorded.headSha, sha);
    assert.ok(recorded.token.startsWith('ghs_'), 'opened with an installation token, not a personal one');

    // The token is this repository's alone: the App's other repository stays shut to it.
    const otherUrl = github.repoUrl('octo/second');
    await rejectsWith(cloneRepo({ url: otherUrl, dir: dir('gh-other'), credentials }), 'invalid', /refused the credentials/, [issued.token]);
    // A repository outside the installation gets no token at all.
    const outside = forgeFor(github.repoUrl('octo/private'), { apiUrl: github.apiUrl, app: appSettings }, { app: { appId: '4242', installationId: 77, privateKey } });
    await rejectsWith(outside.gitCredentials(), 'invalid', /cannot get a token for octo\/private.*add the repository to the installation/);
  });

  test('an App signing with the wrong key, or the wrong installation, gets a clear error', async () => {
    const url = github.repoUrl('octo/app');
    const wrongKey = forgeFor(url, { apiUrl: github.apiUrl, app: appSettings }, { app: { appId: '4242', installationId: 77, privateKey: other.privateKey } });
    await rejectsWith(wrongKey.gitCredentials(), 'invalid', /GitHub refused the App's credentials.*private key in secret "GITHUB_APP_KEY"/s, [other.privateKey.slice(40, 80)]);
    const wrongInstallation = forgeFor(url, { apiUrl: github.apiUrl, app: { ...appSettings, installationId: 78 } }, { app: { appId: '4242', installationId: 78, privateKey } });
    await rejectsWith(wrongInstallation.gitCredentials(), 'not_found', /no installation 78 of App 4242/);
    const garbage = forgeFor(url, { apiUrl: github.apiUrl, app: appSettings }, { app: { appId: '4242', installationId: 77, privateKey: 'not a key at all' } });
    await assert.rejects(garbage.gitCredentials(), (e: unknown) => e instanceof BerthError && e.kind === 'invalid' && !e.message.includes('not a key at all'));
  });
});

describe('GitLab', () => {
  let gitlab: FakeGitLab;
  before(async () => {
    gitlab = await startFakeGitLab({ tokens: [GITLAB_TOKEN] });
    await gitlab.createRepo('group/sub/project', { 'README.md': '# lab\n' }, 'develop');
  });
  after(() => gitlab.close());

  test('git over Basic oauth2, then a draft merge request', async () => {
    const url = gitlab.repoUrl('group/sub/project');
    const forge = forgeFor(url, { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' }, { token: GITLAB_TOKEN });
    assert.equal(forge.kind, 'gitlab');
    const credentials = await forge.gitCredentials();
    assert.equal(credentials.env.GIT_CONFIG_VALUE_0, `Authorization: Basic ${Buffer.from(`oauth2:${GITLAB_TOKEN}`).toString('base64')}`);

    const clone = dir('gl-clone');
    const { baseSha, branch } = await cloneRepo({ url, dir: clone, credentials });
    assert.equal(branch, 'develop');
    await gitConfigHasNo(clone, credentials.secrets);
    const { patch } = await sandboxPatch({ bare: join(gitlab.root, 'group/sub/project.git'), change: (work) => writeFile(join(work, 'lab.txt'), 'lab\n') });
    await commitPatch({ dir: clone, baseSha, branch: 'berth/mr', patch, message: 'Add lab.txt', author: AUTHOR });
    await pushBranch({ dir: clone, url, branch: 'berth/mr', credentials });
    assert.ok(gitlab.gitRequests.some((r) => r.service === 'git-receive-pack' && r.authorization === 'accepted'));

    const mr = await forge.openChangeRequest({ base: 'develop', head: 'berth/mr', title: 'Add lab.txt', body: 'By Berth.', draft: true });
    assert.deepEqual(mr, { kind: 'merge_request', url: `${gitlab.url}/group/sub/project/-/merge_requests/1`, number: 1, draft: true });
    assert.deepEqual(
      gitlab.mergeRequests.map(({ project, title, description, sourceBranch, targetBranch, draft, token }) => ({ project, title, description, sourceBranch, targetBranch, draft, token })),
      [{ project: 'group/sub/project', title: 'Draft: Add lab.txt', description: 'By Berth.', sourceBranch: 'berth/mr', targetBranch: 'develop', draft: true, token: GITLAB_TOKEN }],
    );
    assert.ok(gitlab.apiRequests.some((r) => r.path === 'projects/group/sub/project/merge_requests' && r.auth === 'accepted'), 'the project was addressed by its encoded path');

    await rejectsWith(forge.openChangeRequest({ base: 'develop', head: 'berth/mr', title: 'again', body: '', draft: false }), 'conflict', /already exists on group\/sub\/project/);
    await rejectsWith(forge.openChangeRequest({ base: 'develop', head: 'berth/none', title: 't', body: '', draft: false }), 'invalid', /Source branch "berth\/none" does not exist/);
  });

  test('a refused token names the secret, never the token', async () => {
    const bad = 'glpat-revokedTokenValue00000';
    const url = gitlab.repoUrl('group/sub/project');
    const forge = forgeFor(url, { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' }, { token: bad });
    await rejectsWith(forge.openChangeRequest({ base: 'develop', head: 'berth/mr', title: 't', body: '', draft: false }), 'invalid', /GitLab refused the token \(401 Unauthorized\): check the token in secret "GITLAB_TOKEN"/, [bad]);
    await rejectsWith(cloneRepo({ url, dir: dir('gl-bad'), credentials: await forge.gitCredentials() }), 'invalid', /refused the credentials/, [bad]);
    const unreachable = forgeFor('https://gitlab.example.com/g/p', { apiUrl: 'http://127.0.0.1:9/api/v4', tokenSecret: 'GITLAB_TOKEN' }, { token: GITLAB_TOKEN });
    await rejectsWith(unreachable.openChangeRequest({ base: 'a', head: 'b', title: 't', body: '', draft: false }), 'unavailable', /could not be reached/, [GITLAB_TOKEN]);
  });
});
