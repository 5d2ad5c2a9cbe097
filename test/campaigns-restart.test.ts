// sandbox: none
// kill -9 of the control plane in the middle of a campaign: started again on the same data
// dir (and database), it finishes the campaign with no second task for any target's attempt
// and no second campaign commit on any repository's branch. The control plane runs in a
// process of its own (test/fixtures/campaign-control-plane.ts, the fake runner in it).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from '../src/server/db/index.ts';
import { createBareRepo, createBareRepos, runGit, startGitServer } from './fakes/git-server.ts';
import { apiAs, REPO, seedEmbeddedDatabase, waitFor } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const REPOS = 14;
const root = await mkdtemp(join(tmpdir(), 'berth-campaigns-restart-'));
const dataDir = join(root, 'data');
const database = ON_POSTGRES ? await freshDatabase() : undefined;
let child: ChildProcess | undefined;

async function start(): Promise<{ api: ReturnType<typeof apiAs> }> {
  const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', join(REPO, 'test', 'fixtures', 'campaign-control-plane.ts')], {
    env: { ...process.env, CAMPAIGN_DATA_DIR: dataDir, ...(database ? { CAMPAIGN_DATABASE_URL: database.url } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = c;
  let out = '';
  let err = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (err += d));
  const line = await waitFor('the control plane to start', async () => {
    if (c.exitCode !== null) throw new Error(`the control plane exited (${c.exitCode}): ${err}`);
    return out.split('\n').find((l) => l.startsWith('{'));
  }, 120_000);
  const { url, token } = JSON.parse(line) as { url: string; token: string };
  return { api: apiAs({ client: { url } as never }, token) };
}

async function kill9(): Promise<void> {
  const c = child!;
  c.kill('SIGKILL');
  if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.on('close', r));
}

after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) await kill9();
  await database?.drop();
  await rm(root, { recursive: true, force: true });
});

test(`kill -9 in the middle of a campaign over ${REPOS} repositories: after a restart it finishes, no task or push twice`, async () => {
  const repos = await createBareRepos({ root, names: Array.from({ length: REPOS }, (_, i) => `r${i}.git`), files: { 'a.txt': 'a\n' } });
  if (!database) {
    await mkdir(dataDir, { recursive: true });
    await seedEmbeddedDatabase(dataDir);
  }

  let { api } = await start();
  const made = await api('POST', '/api/orgs/default/campaigns', { name: 'restart', goal: 'bump a.txt', repos, agent: 'command', command: 'sleep 3; echo bumped >> a.txt', concurrency: 4 });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const id = made.body.campaign.id as string;
  // In the middle: some finished, one at least with its agent at work, most not started.
  let interrupted = '';
  const before = await waitFor('the campaign to be in the middle', async () => {
    const c = (await api('GET', '/api/orgs/default/campaigns/restart')).body;
    if (c.counts.succeeded < 4) return null;
    for (const tg of (await api('GET', '/api/orgs/default/campaigns/restart/targets?state=running')).body.items as any[]) {
      const task = (await api('GET', `/api/orgs/default/tasks/${tg.taskId}`)).body;
      if (task.state === 'running' && task.step === 'agent') {
        interrupted = tg.repo;
        return c;
      }
    }
    return null;
  }, 150_000);
  await kill9();
  console.log(`killed with ${JSON.stringify(before.counts)}`);

  ({ api } = await start());
  const done = await waitFor('the campaign to finish after the restart', async () => {
    const c = (await api('GET', '/api/orgs/default/campaigns/restart')).body;
    return c.state === 'done' ? c : null;
  }, 170_000);
  const targets = (await api('GET', '/api/orgs/default/campaigns/restart/targets?limit=1000')).body.items as any[];
  console.log(`after the restart: ${JSON.stringify(done.counts)}; ${JSON.stringify(targets.filter((t) => t.state !== 'succeeded' || t.attempts > 1).map((t) => ({ repo: t.repo.split('/').pop(), state: t.state, attempts: t.attempts, reason: t.reason })))}`);
  child!.kill('SIGINT');
  await new Promise((r) => child!.on('close', r));

  const handle = await openDatabase({ dataDir, databaseUrl: database?.url });
  try {
    const keys = await handle.db.selectFrom('tasks').select(['trigger_key', sql<string>`count(*)`.as('n')]).where('triggered_by', '=', `campaign:${id}`).groupBy('trigger_key').execute();
    assert.deepEqual(keys.filter((k) => Number(k.n) > 1), [], 'one task per target and attempt');
    assert.ok(keys.length >= REPOS, `${keys.length} tasks`);
  } finally {
    await handle.close();
  }
  assert.equal(done.counts.succeeded + done.counts.failed, REPOS);
  for (const repo of repos) {
    const branch = (await runGit(['--git-dir', repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads'], { cwd: root })).trim().split('\n').sort();
    assert.deepEqual(branch, ['berth/campaign/restart', 'main'], repo);
    const commits = Number((await runGit(['--git-dir', repo, 'rev-list', '--count', 'main..berth/campaign/restart'], { cwd: root })).trim());
    assert.equal(commits, 1, `${repo}: one campaign commit`);
    assert.equal((await runGit(['--git-dir', repo, 'show', 'berth/campaign/restart:a.txt'], { cwd: root })).trim(), 'a\nbumped', repo);
  }
  assert.equal(done.counts.succeeded, REPOS, 'every repository done');
  // The task whose agent the kill stopped failed (the restart says why), and its repository was tried again.
  const again = targets.find((t) => t.repo === interrupted)!;
  assert.equal(again.attempts, 2, JSON.stringify(again));
});

test('kill -9 right after a task pushed its campaign commit: the retry adopts that push (one commit, one change request)', async () => {
  // Served over HTTP by git http-backend in this process, so the repository's own post-receive
  // hook runs (Berth turns hooks off for the git it runs itself): it kills the control plane
  // once the branch is updated and before the push's answer reaches it.
  const git = await startGitServer({ root: join(root, 'served') });
  try {
    const names = ['p0.git', 'p1.git', 'p2.git'];
    for (const name of names) await createBareRepo({ root: git.root, name, files: { 'a.txt': 'a\n' } });
    let { api } = await start();
    const marker = join(root, 'killed-at-push');
    const hook = join(git.root, 'p1.git', 'hooks', 'post-receive');
    await mkdir(join(git.root, 'p1.git', 'hooks'), { recursive: true });
    await writeFile(hook, `#!/bin/sh\ncat >/dev/null\n[ -e '${marker}' ] && exit 0\ntouch '${marker}'\nkill -9 ${child!.pid}\n`);
    await chmod(hook, 0o755);

    const made = await api('POST', '/api/orgs/default/campaigns', { name: 'adopt', goal: 'bump a.txt', repos: names.map((n) => `${git.url}/${n}`), agent: 'command', command: 'echo bumped >> a.txt', concurrency: 1 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await waitFor('the hook to kill the control plane', async () => child!.signalCode === 'SIGKILL' || null, 120_000);

    ({ api } = await start());
    const done = await waitFor('the campaign to finish after the restart', async () => {
      const c = (await api('GET', '/api/orgs/default/campaigns/adopt')).body;
      return c.state === 'done' ? c : null;
    }, 120_000);
    assert.equal(done.counts.succeeded, names.length, JSON.stringify(done.counts));
    const targets = (await api('GET', '/api/orgs/default/campaigns/adopt/targets')).body.items as any[];
    const p1 = targets.find((t) => t.repo.endsWith('/p1.git'));
    // Attempt 1 was stopped at its push; attempt 2 took that push as its own. Succeeded, so the note of attempt 1 is gone.
    assert.equal(p1.attempts, 2, JSON.stringify(p1));
    assert.equal(p1.reason, null, JSON.stringify(p1));
    assert.equal(p1.changeRequest?.kind, 'berth', JSON.stringify(p1));
    for (const name of names) {
      const bare = join(git.root, name);
      assert.equal(Number((await runGit(['--git-dir', bare, 'rev-list', '--count', 'main..berth/campaign/adopt'], { cwd: root })).trim()), 1, `${name}: one campaign commit`);
      assert.equal((await runGit(['--git-dir', bare, 'show', 'berth/campaign/adopt:a.txt'], { cwd: root })).trim(), 'a\nbumped', name);
    }
    const events = (await api('GET', `/api/orgs/default/tasks/${p1.taskId}/events`)).body;
    assert.match(JSON.stringify(events), /that push is adopted/);
    child!.kill('SIGINT');
    await new Promise((r) => child!.on('close', r));
    // Both attempts name the one commit on the branch: the first pushed it, the second took it.
    const head = (await runGit(['--git-dir', join(git.root, 'p1.git'), 'rev-parse', 'berth/campaign/adopt'], { cwd: root })).trim();
    const handle = await openDatabase({ dataDir, databaseUrl: database?.url });
    try {
      const tasks = await handle.db.selectFrom('tasks').select(['id', 'state', 'head_sha', 'retries_task_id']).where('triggered_by', '=', `campaign:${made.body.campaign.id}`).where('repo_url', '=', `${git.url}/p1.git`).orderBy('created_at').execute();
      assert.equal(tasks.length, 2, JSON.stringify(tasks));
      assert.deepEqual(tasks.map((t) => [t.state, t.head_sha]), [['failed', head], ['succeeded', head]]);
      assert.equal(tasks[1]!.retries_task_id, tasks[0]!.id);
    } finally {
      await handle.close();
    }
  } finally {
    await git.close();
  }
});
