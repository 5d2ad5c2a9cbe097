// sandbox: none
// A runner lost right after its task pushed (issue #17): the task is requeued, claimed again on
// another runner, and that claim adopts its own earlier push instead of committing again and
// having its push refused. In one process: berth up on the fake runner, plus a second fake
// runner with a heartbeat the test keeps or stops (as test/placement.test.ts does).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createBareRepo, runGit, startGitServer, type GitServer } from './fakes/git-server.ts';
import { beatAsJoined, FakeRunner, fakeImages } from './fakes/fake-runner.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let doomed: FakeRunner;
let git: GitServer;
let beating: NodeJS.Timeout | undefined;
const root = await mkdtemp(join(tmpdir(), 'berth-campaigns-runner-death-'));

/** The runner's heartbeat, as a joined runner writes it. */
const beat = (r: FakeRunner) => beatAsJoined(t.berth.database.db, r);

before(async () => {
  t = await startTestBerth({ fake: true, runnerHeartbeatMs: 300, runnerOfflineAfterMs: 2_000, taskRetries: 1 });
  git = await startGitServer({ root: join(root, 'served') });
  doomed = new FakeRunner({ id: 'fake-doomed', name: 'fake-doomed', images: fakeImages(['default']) });
  await beat(doomed);
  beating = setInterval(() => void beat(doomed).catch(() => {}), 300);
  t.berth.runners.add(doomed);
});

after(async () => {
  clearInterval(beating);
  t.berth.runners.delete(doomed.id);
  await t.destroy();
  await doomed.close();
  await git.close();
  await rm(root, { recursive: true, force: true });
});

test('a runner lost right after its task pushed: the requeued task adopts its own push (one commit, one change request, succeeded)', async () => {
  const bare = join(git.root, 'r.git');
  await createBareRepo({ root: git.root, name: 'r.git', files: { 'a.txt': 'a\n' } });
  // The repository's own post-receive hook (served by git http-backend, so it runs) holds the
  // push's answer once the branch is updated, until the test has taken the runner away.
  const pushed = join(root, 'pushed');
  const release = join(root, 'release');
  await mkdir(join(bare, 'hooks'), { recursive: true });
  await writeFile(join(bare, 'hooks', 'post-receive'), `#!/bin/sh\ncat >/dev/null\n[ -e '${pushed}' ] && exit 0\ntouch '${pushed}'\nn=0\nwhile [ ! -e '${release}' ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\n`);
  await chmod(join(bare, 'hooks', 'post-receive'), 0o755);

  // Only the doomed runner may claim: berth up's own drains.
  assert.equal((await t.api('POST', '/api/runners/local/drain')).status, 200);
  const made = await t.api('POST', '/api/orgs/default/campaigns', { name: 'lost', goal: 'bump a.txt', repos: [`${git.url}/r.git`], agent: 'command', command: 'echo bumped >> a.txt', concurrency: 1 });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  await waitFor('the push to reach the hook', async () => existsSync(pushed), 120_000);
  const task = () => t.berth.database.db.selectFrom('tasks').selectAll().where('triggered_by', '=', `campaign:${made.body.campaign.id}`).executeTakeFirstOrThrow();
  const atPush = await task();
  assert.equal(atPush.runner_id, doomed.id);
  assert.equal(atPush.step, 'push');
  const pushedSha = (await runGit(['--git-dir', bare, 'rev-parse', 'berth/campaign/lost'], { cwd: root })).trim();
  assert.equal(atPush.head_sha, pushedSha);

  // The runner dies before the push's answer reaches it: its connection ends (its run stops and
  // writes nothing) and its heartbeat stops, so the sweep requeues the task.
  clearInterval(beating);
  t.berth.runners.delete(doomed.id);
  await writeFile(release, '');
  const requeued = await waitFor('the task is queued again', async () => ((await task()).attempts === 1 ? task() : undefined), 30_000);
  assert.equal(requeued.runner_id, null);

  assert.equal((await t.api('POST', '/api/runners/local/undrain')).status, 200);
  const done = await waitFor('the campaign to finish', async () => {
    const c = (await t.api('GET', '/api/orgs/default/campaigns/lost')).body;
    return c.state === 'done' ? c : null;
  }, 120_000);
  const row = await task();
  assert.equal(row.state, 'succeeded', row.state_reason ?? '');
  assert.equal(row.runner_id, t.fake!.id);
  assert.equal(row.attempts, 1);
  assert.equal(row.head_sha, pushedSha);
  assert.equal(row.change_request?.kind, 'berth', JSON.stringify(row.change_request));
  assert.equal(done.counts.succeeded, 1, JSON.stringify(done.counts));
  const targets = (await t.api('GET', '/api/orgs/default/campaigns/lost/targets')).body.items as any[];
  assert.equal(targets.length, 1);
  assert.equal(targets[0].state, 'succeeded', JSON.stringify(targets[0]));
  assert.equal(targets[0].attempts, 1, JSON.stringify(targets[0]));
  assert.equal(targets[0].changeRequest?.kind, 'berth', JSON.stringify(targets[0]));

  // One commit on the branch, the one pushed before the runner was lost, never pushed over.
  assert.equal((await runGit(['--git-dir', bare, 'rev-parse', 'berth/campaign/lost'], { cwd: root })).trim(), pushedSha);
  assert.equal(Number((await runGit(['--git-dir', bare, 'rev-list', '--count', 'main..berth/campaign/lost'], { cwd: root })).trim()), 1);
  assert.equal((await runGit(['--git-dir', bare, 'show', 'berth/campaign/lost:a.txt'], { cwd: root })).trim(), 'a\nbumped');
  const events = (await t.api('GET', `/api/orgs/default/tasks/${row.id}/events`)).body.items as { data: { type: string; message?: string } }[];
  assert.ok(events.some((e) => e.data.type === 'log' && /ends at \S+, the commit this task's earlier run pushed before it was stopped: that push is adopted/.test(e.data.message ?? '')), JSON.stringify(events));
  // The second claim made no environment: nothing ran again.
  const envs = await t.berth.database.db.selectFrom('environments').select('runner_id').where('task_id', '=', row.id).execute();
  assert.deepEqual(envs.map((e) => e.runner_id), [doomed.id]);
});
