// SSH repositories against a real OpenSSH server on 127.0.0.1 serving a bare repository:
// URLs in both forms, the host rules, clone and push with a deploy key from a secret, host
// keys checked against known hosts only (an unknown one is refused, never trusted on first
// use), and a task that clones and pushes over SSH with the key never inside.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cloneRepo, commitPatch, forgeFor, mergeBranch, parseRepoUrl, pushBranch, RepoAccess } from '../src/forges/index.ts';
import { BerthError } from '../src/shared/errors.ts';
import { createBareRepo, refSha, runGit } from './fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';
import { makeKey, startSshServer, type SshKey, type SshServer } from './ssh-server.ts';

const scratch = await mkdtemp(join(tmpdir(), 'berth-ssh-'));
let server: SshServer;
let deployKey: SshKey;
let strangerKey: SshKey;
let bare: string;
let url: string;

async function refused(promise: Promise<unknown>, kind: string, message: RegExp): Promise<BerthError> {
  const error = await promise.then(() => assert.fail('expected an error'), (e: unknown) => e);
  assert.ok(error instanceof BerthError, `expected a BerthError, got ${String(error)}`);
  assert.equal(error.kind, kind, error.message);
  assert.match(error.message, message);
  return error;
}

before(async () => {
  deployKey = await makeKey(scratch, 'deploy');
  strangerKey = await makeKey(scratch, 'stranger');
  server = await startSshServer(await mkdtemp(join(scratch, 'sshd-')), [deployKey.publicKey]);
  bare = (await createBareRepo({ root: scratch, name: 'acme/app.git', files: { 'README.md': 'hello\n' } })).path;
  url = `ssh://root@127.0.0.1:${server.port}${bare}`;
});

after(async () => {
  await server?.stop();
  await rm(scratch, { recursive: true, force: true });
});

describe('SSH repository URLs', () => {
  test('both forms are read; what ssh or a shell would take as an option is refused', () => {
    assert.deepEqual(parseRepoUrl('git@github.com:acme/app.git'), { kind: 'ssh', url: 'git@github.com:acme/app.git', user: 'git', host: 'github.com', port: 22, path: 'acme/app' });
    assert.deepEqual(parseRepoUrl('ssh://git@Git.Corp:2222/team/app.git'), { kind: 'ssh', url: 'ssh://git@Git.Corp:2222/team/app.git', user: 'git', host: 'git.corp', port: 2222, path: 'team/app' });
    assert.equal(parseRepoUrl('ssh://git@[::1]:2222/a/b.git').kind, 'ssh');
    for (const [bad, message] of [
      ['ssh://git.corp/team/app.git', /names no user/],
      ['ssh://git:pw@git.corp/team/app.git', /carries a password/],
      ['git+ssh://git@git.corp/team/app.git', /write SSH repository URLs as/],
      ['git@-oProxyCommand=sh:a/b.git', /is not a host name/],
      ['git@host:-upload-pack=x', /leading "-"/],
      ['git@host:a/../../etc', /without "\.\."/],
      ["git@host:a/b';sh", /may hold letters, digits/],
      ['-x@host:a/b', /cannot start with "-"/],
    ] as const) {
      assert.throws(() => parseRepoUrl(bad), (e: Error) => e instanceof BerthError && e.kind === 'invalid' && message.test(e.message), bad);
    }
  });

  test('the host rules are those of https: loopback needs BERTH_ALLOWED_GIT_HOSTS', async () => {
    const closed = new RepoAccess({ localRepos: [], allowedGitHosts: [] });
    await refused(closed.name(url, { instanceAdmin: true }), 'forbidden', /BERTH_ALLOWED_GIT_HOSTS/);
    await refused(closed.name(`root@127.0.0.1:${bare}`, { instanceAdmin: true }), 'forbidden', /BERTH_ALLOWED_GIT_HOSTS/);
    await refused(closed.reach(url), 'forbidden', /BERTH_ALLOWED_GIT_HOSTS/);
    const open = new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'] });
    assert.equal(await open.name(url, { instanceAdmin: false }), url);
  });
});

describe('clone and push over SSH with a deploy key', () => {
  const access = new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'] });

  test('clone, commit and push a branch; the clone keeps no key', async () => {
    const dir = join(await mkdtemp(join(scratch, 'clone-')), 'repo');
    const credentials = await forgeFor(url, { knownHosts: server.knownHosts }, null, deployKey.privateKey).gitCredentials();
    assert.deepEqual(credentials.env, {}, 'nothing for the key in git\'s environment');
    const cloned = await cloneRepo({ url, dir, credentials, reach: await access.reach(url) });
    assert.equal(cloned.branch, 'main');
    assert.equal(await readFile(join(dir, 'README.md'), 'utf8'), 'hello\n');
    const config = await readFile(join(dir, '.git', 'config'), 'utf8');
    assert.ok(!config.includes('PRIVATE KEY') && !config.includes('deploy_key'), config);

    const patch = Buffer.from('diff --git a/NEW.md b/NEW.md\nnew file mode 100644\n--- /dev/null\n+++ b/NEW.md\n@@ -0,0 +1 @@\n+over ssh\n');
    const commit = await commitPatch({ dir, baseSha: cloned.baseSha, branch: 'berth/ssh-push', patch, message: 'Add NEW.md', author: { name: 'Berth', email: 'berth@localhost' } });
    await pushBranch({ dir, url, branch: 'berth/ssh-push', credentials, reach: await access.reach(url) });
    assert.equal(await refSha(bare, 'refs/heads/berth/ssh-push'), commit.sha);
    assert.match(server.output(), /Accepted publickey for root from 127\.0\.0\.1/);

    // berth task approve on a plain git server: fetch both, merge, push the base, all over SSH.
    const merged = await mergeBranch({ url, base: 'main', branch: 'berth/ssh-push', workdir: await mkdtemp(join(scratch, 'merge-')), credentials, message: 'Merge berth/ssh-push', reach: await access.reach(url) });
    assert.equal(await refSha(bare, 'refs/heads/main'), merged.sha);
    assert.equal(await runGit(['show', 'main:NEW.md'], { cwd: bare }), 'over ssh\n');
  });

  test('a host key not among the known hosts is refused, saying how to add it', async () => {
    const dir = join(await mkdtemp(join(scratch, 'clone-')), 'repo');
    const credentials = await forgeFor(url, {}, null, deployKey.privateKey).gitCredentials();
    const error = await refused(cloneRepo({ url, dir, credentials, reach: await access.reach(url) }), 'forbidden', /host key is not among the known hosts/);
    assert.match(error.message, /ssh-keyscan -p PORT HOST/);
    assert.match(error.message, /--known-hosts FILE/);
    // Another server's key under this name is no better.
    const other = (await makeKey(scratch, 'other-host')).publicKey.split(' ').slice(0, 2).join(' ');
    const wrong = await forgeFor(url, { knownHosts: `[127.0.0.1]:${server.port} ${other}\n` }, null, deployKey.privateKey).gitCredentials();
    await refused(cloneRepo({ url, dir: `${dir}-2`, credentials: wrong, reach: await access.reach(url) }), 'forbidden', /host key is not among the known hosts \(or differs/);
    // The instance's known hosts (BERTH_SSH_KNOWN_HOSTS) count as well as the project's.
    const instance = new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'], sshKnownHosts: server.knownHosts });
    await cloneRepo({ url, dir: `${dir}-3`, credentials, reach: await instance.reach(url) });
  });

  test('a key the server does not know, or none, is refused with what to do; the key never shows', async () => {
    const dir = join(await mkdtemp(join(scratch, 'clone-')), 'repo');
    const stranger = await forgeFor(url, { knownHosts: server.knownHosts }, null, strangerKey.privateKey).gitCredentials();
    const error = await refused(cloneRepo({ url, dir, credentials: stranger, reach: await access.reach(url) }), 'invalid', /refused the deploy key/);
    assert.match(error.message, /--deploy-key-secret/);
    assert.ok(!error.message.includes(strangerKey.privateKey.split('\n')[1]!));
    const none = await forgeFor(url, { knownHosts: server.knownHosts }, null, null).gitCredentials();
    await refused(cloneRepo({ url, dir: `${dir}-2`, credentials: none, reach: await access.reach(url) }), 'invalid', /refused the deploy key \(or there was none\)/);
  });
});

describe('a project on an SSH repository', () => {
  let t: TestBerth;
  before(async () => {
    t = await startTestBerth();
  });
  after(async () => {
    await t?.destroy();
  });

  test('project create with --deploy-key-secret and --known-hosts; a task clones and pushes over SSH, the key never inside', async () => {
    const keyFile = join(scratch, 'deploy');
    const knownHostsFile = join(scratch, 'known_hosts');
    await writeFile(knownHostsFile, server.knownHosts);
    assert.equal((await t.cli(['secret', 'set', 'DEPLOY_KEY', '--from-file', keyFile])).code, 0);
    const created = await t.cli(['project', 'create', 'over-ssh', '--repo', url, '--deploy-key-secret', 'DEPLOY_KEY', '--known-hosts', knownHostsFile, '--secret', 'DEPLOY_KEY']);
    assert.equal(created.code, 0, created.stderr);
    // show resolves the environment from a fresh clone of the default branch: over SSH, with the key.
    const shown = await t.cli(['project', 'show', 'over-ssh']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /deploy key in DEPLOY_KEY, 1 known host key\(s\)/);
    assert.match(shown.stdout, /Environment spec \(main at [0-9a-f]{12}/, shown.stdout);
    // Named with --secret too, it is still not given to environments: it is the runner's.
    assert.match(shown.stdout, /variables\s+none/);

    const badHosts = await t.api('PATCH', '/api/orgs/default/projects/over-ssh', { forge: { knownHosts: 'not a known hosts line' } });
    assert.equal(badHosts.status, 400);
    assert.match(badHosts.body.error.message, /known_hosts lines/);

    const res = await t.api('POST', '/api/orgs/default/tasks', {
      project: 'over-ssh',
      goal: 'Add a file over ssh',
      agent: 'command',
      // What the environment holds of the key: no variable, no file in ~/.ssh.
      command: 'echo "from the task" > TASK.md; echo "key variables: $(env | grep -c "OPENSSH PRIV")"; ls ~/.ssh 2>&1 || true',
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const done = await waitFor(`task ${res.body.id} to end`, async () => {
      const body = (await t.api('GET', `/api/orgs/default/tasks/${res.body.id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
    }, 300_000);
    const events = JSON.stringify((await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body);
    assert.equal(done.state, 'succeeded', `${done.stateReason}\n${events}`);
    assert.ok(done.branch);
    assert.equal(await runGit(['show', `${done.branch}:TASK.md`], { cwd: bare }), 'from the task\n');
    assert.match(events, /key variables: 0/);
    assert.match(events, /No such file or directory/);
    assert.ok(!events.includes(deployKey.privateKey.split('\n')[1]!), 'no key in the task events');
    assert.ok(!events.includes('PRIVATE KEY'), 'no key in the task events');
  });
});
