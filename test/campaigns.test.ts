// sandbox: none
// Campaigns (issue #17): one change across many repositories, on the fake runner with local
// bare repositories made here. A command agent edits one file in each; the tests read the
// pushed branches with git, the tasks and targets from the database, and the API's answers.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { TokenService } from '../src/server/auth.ts';
import { createBareRepos, runGit } from './fakes/git-server.ts';
import { apiAs, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

/**
 * 200, the size of issue #17 (the file takes about two minutes on an idle 2-core machine, far
 * more when it is loaded); BERTH_CAMPAIGN_REPOS=40 for a quicker run. bench/campaigns runs 1,000.
 */
const MANY = Number(process.env.BERTH_CAMPAIGN_REPOS ?? 200);

let t: TestBerth;
let root: string;
const tokens: Record<string, string> = {};
const as = (who: string) => apiAs(t, tokens[who]!);
const db = () => t.berth.database.db;

/** `count` bare repositories named PREFIX-N.git, each with a.txt. */
function repos(prefix: string, count: number): Promise<string[]> {
  return createBareRepos({ root, names: Array.from({ length: count }, (_, i) => `${prefix}-${i}.git`), files: { 'a.txt': 'a\n' } });
}

async function create(body: Record<string, unknown>, who?: string) {
  const res = await (who ? as(who) : t.api)('POST', '/api/orgs/default/campaigns', { goal: 'bump a.txt', agent: 'command', command: 'echo bumped >> a.txt', ...body });
  return res;
}

async function show(name: string) {
  const res = await t.api('GET', `/api/orgs/default/campaigns/${name}`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

async function targets(name: string): Promise<any[]> {
  const res = await t.api('GET', `/api/orgs/default/campaigns/${name}/targets?limit=1000`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

async function finished(name: string, timeoutMs = 150_000) {
  return waitFor(`campaign ${name} to finish`, async () => {
    const c = await show(name);
    return c.state === 'done' ? c : null;
  }, timeoutMs);
}

/** Its tasks, as the database has them. */
async function tasksOf(id: string) {
  return db().selectFrom('tasks').select(['id', 'state', 'trigger', 'trigger_key', 'triggered_by', 'work_branch', 'continues_task_id', 'repo_url']).where('triggered_by', '=', `campaign:${id}`).execute();
}

/** No target has two tasks for one attempt of one run: every key once. */
async function assertNoDuplicates(id: string): Promise<void> {
  const dup = await db().selectFrom('tasks').select(['trigger_key', sql<string>`count(*)`.as('n')]).where('triggered_by', '=', `campaign:${id}`).groupBy('trigger_key').having(sql`count(*)`, '>', 1).execute();
  assert.deepEqual(dup, []);
}

async function git(repo: string, args: string[]): Promise<string> {
  return (await runGit(['--git-dir', repo, ...args], { cwd: root })).trim();
}

async function commitsOn(repo: string, branch: string): Promise<number> {
  return Number(await git(repo, ['rev-list', '--count', `main..${branch}`]));
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-campaigns-'));
  // Room for a campaign's concurrency of 8 at once: the campaign, not the runner, is the limit.
  t = await startTestBerth({ fake: true, taskConcurrency: 12 });
  const made = new TokenService(t.berth.database.db);
  for (const [name, role] of [['mia', 'member'], ['max', 'member'], ['vic', 'viewer']] as const) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
});

after(async () => {
  await t?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('campaigns', () => {
  test(`${MANY} repositories with a command agent: every branch pushed, never more than its concurrency at once, one task each`, async () => {
    const list = await repos('many', MANY);
    // Each pushed branch counts as an open change until approved: room for all of them.
    const made = await create({ name: 'many', repos: list, concurrency: 8, maxOpenPrs: MANY });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.deepEqual(made.body.invalid, []);
    assert.equal(made.body.campaign.total, MANY);
    assert.equal(made.body.campaign.branch, 'berth/campaign/many');
    const id = made.body.campaign.id as string;

    // The count of its tasks at work, sampled while it runs (the runner could take 12 at once).
    let peak = 0;
    let samples = 0;
    const c = await waitFor('campaign many to finish', async () => {
      const row = await db().selectFrom('tasks').select(sql<string>`count(*)`.as('n')).where('triggered_by', '=', `campaign:${id}`).where('state', 'in', ['queued', 'provisioning', 'running']).executeTakeFirstOrThrow();
      peak = Math.max(peak, Number(row.n));
      samples++;
      const s = await show('many');
      return s.state === 'done' ? s : null;
    }, Math.max(170_000, MANY * 6_000));
    console.log(`campaign many: ${MANY} repositories, peak ${peak} tasks at once (${samples} samples), the campaign's own peak ${c.peakRunning}`);
    assert.ok(peak <= 8, `at most 8 tasks at once, saw ${peak}`);
    assert.ok(peak >= 2, `several tasks at once, saw ${peak}`);
    assert.ok(c.peakRunning <= 8 && c.peakRunning >= peak, `peakRunning ${c.peakRunning}`);
    assert.deepEqual(c.counts, { pending: 0, starting: 0, running: 0, succeeded: MANY, failed: 0, cancelled: 0 });
    assert.deepEqual(c.failures, []);

    const tasks = await tasksOf(id);
    assert.equal(tasks.length, MANY, 'one task per repository');
    assert.equal(new Set(tasks.map((x) => x.repo_url)).size, MANY);
    assert.ok(tasks.every((x) => x.trigger === 'campaign' && x.state === 'succeeded' && x.work_branch === 'berth/campaign/many' && /^campaign:cmp_\w+:tgt_\w+:1:1$/.test(x.trigger_key!)));
    await assertNoDuplicates(id);

    for (const repo of list) {
      assert.equal(await git(repo, ['show', 'berth/campaign/many:a.txt']), 'a\nbumped', repo);
      assert.equal(await commitsOn(repo, 'berth/campaign/many'), 1, repo);
    }
  });

  test('a repository failing its check is reported failed (check), not retried, and grouped; a rerun adds a commit to each branch', async () => {
    const list = await repos('checked', 4);
    // The third one holds the file that makes the check fail.
    const work = await mkdtemp(join(tmpdir(), 'berth-campaigns-work-'));
    await runGit(['clone', '-q', list[2]!, work], { cwd: root });
    await runGit(['-c', 'user.name=t', '-c', 'user.email=t@example.com', '-C', work, 'commit', '-q', '--allow-empty', '-m', 'x'], { cwd: work });
    await import('node:fs/promises').then((fs) => fs.writeFile(join(work, 'broken'), 'yes\n'));
    await runGit(['-C', work, 'add', 'broken'], { cwd: work });
    await runGit(['-c', 'user.name=t', '-c', 'user.email=t@example.com', '-C', work, 'commit', '-q', '-m', 'broken'], { cwd: work });
    await runGit(['-C', work, 'push', '-q', 'origin', 'HEAD:main'], { cwd: work });
    await rm(work, { recursive: true, force: true });

    const made = await create({ name: 'checked', repos: list, check: 'test ! -f broken', concurrency: 4 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    const c = await finished('checked');
    assert.deepEqual(c.counts, { pending: 0, starting: 0, running: 0, succeeded: 3, failed: 1, cancelled: 0 });
    const broken = (await targets('checked')).find((x) => x.repo === list[2])!;
    assert.equal(broken.state, 'failed');
    assert.equal(broken.failure, 'check');
    assert.equal(broken.attempts, 1, 'a failed check is not tried again');
    assert.equal(c.failures.length, 1);
    assert.equal(c.failures[0].failure, 'check');
    assert.equal(c.failures[0].count, 1);
    assert.deepEqual(c.failures[0].repos, [list[2]]);
    assert.equal((await tasksOf(id)).length, 4);
    // Plain git has no forge to ask: a change's checks are Berth's own check, as `show` lists them.
    const checks = Object.fromEntries((c.changeRequests as any[]).map((x) => [x.repo, x.changeRequest.checks]));
    assert.deepEqual(checks, { [list[0]!]: 'passing', [list[1]!]: 'passing', [list[2]!]: 'failing', [list[3]!]: 'passing' });

    // The rerun: the same branch gets a second commit, no other branch is made.
    const first = new Map((await targets('checked')).map((x) => [x.repo, x.taskId]));
    const re = await t.api('POST', '/api/orgs/default/campaigns/checked/rerun', {});
    assert.equal(re.status, 200, JSON.stringify(re.body));
    assert.equal(re.body.run, 2);
    const again = await finished('checked');
    assert.equal(again.counts.succeeded, 3);
    assert.equal(again.counts.failed, 1);
    assert.equal(again.total, 4, 'no target added');
    const tasks = await tasksOf(id);
    assert.equal(tasks.length, 8, 'one task per repository per run');
    await assertNoDuplicates(id);
    for (const [i, repo] of list.entries()) {
      if (i === 2) continue;
      assert.equal(await git(repo, ['show', 'berth/campaign/checked:a.txt']), 'a\nbumped\nbumped', repo);
      assert.equal(await commitsOn(repo, 'berth/campaign/checked'), 2, repo);
      assert.deepEqual((await git(repo, ['for-each-ref', '--format=%(refname:short)', 'refs/heads'])).split('\n').sort(), ['berth/campaign/checked', 'main'], repo);
      // The second run's task continued the first's.
      const second = tasks.find((x) => x.repo_url === repo && x.trigger_key!.endsWith(':2:1'))!;
      assert.equal(second.continues_task_id, first.get(repo));
    }
    // The failing one pushed (a failed check's change is kept for people to read), on the campaign's branch only.
    assert.deepEqual((await git(list[2]!, ['for-each-ref', '--format=%(refname:short)', 'refs/heads'])).split('\n').sort(), ['berth/campaign/checked', 'main']);
    // A second campaign of the same name is refused.
    const taken = await create({ name: 'checked', repos: list });
    assert.equal(taken.status, 409);
  });

  test('pause starts nothing new (those under way finish); resume finishes it', async () => {
    const list = await repos('paused', 6);
    const made = await create({ name: 'paused', repos: list, concurrency: 2, command: 'sleep 1; echo bumped >> a.txt' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    await waitFor('a task under way', async () => (await tasksOf(id)).length > 0);
    const paused = await t.api('POST', '/api/orgs/default/campaigns/paused/pause', {});
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    assert.equal(paused.body.state, 'paused');
    // A pass under way when it was paused is over after this one.
    await t.berth.campaignScheduler.pass();
    const started = (await tasksOf(id)).length;
    assert.ok(started >= 1 && started <= 2, `${started} started`);
    const settled = await waitFor('the tasks under way to finish', async () => {
      await t.berth.campaignScheduler.pass();
      const c = await show('paused');
      return c.counts.starting + c.counts.running === 0 ? c : null;
    });
    assert.equal(settled.state, 'paused');
    assert.equal(settled.counts.succeeded, started, 'those under way finished');
    assert.equal(settled.counts.pending, 6 - started);
    await t.berth.campaignScheduler.pass();
    assert.equal((await tasksOf(id)).length, started, 'no task started while paused');
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/paused/pause', {})).status, 409, 'a paused one is not paused twice');

    const resumed = await t.api('POST', '/api/orgs/default/campaigns/paused/resume', {});
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    const c = await finished('paused');
    assert.equal(c.counts.succeeded, 6);
    assert.equal((await tasksOf(id)).length, 6);
    await assertNoDuplicates(id);
  });

  test('cancel: what has not started never will, the tasks under way are cancelled', async () => {
    const list = await repos('cancelled', 6);
    const made = await create({ name: 'cancelled', repos: list, concurrency: 2, command: 'sleep 300' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    await waitFor('two tasks running', async () => (await tasksOf(id)).filter((x) => x.state === 'running').length === 2);
    const res = await t.api('POST', '/api/orgs/default/campaigns/cancelled/cancel', {});
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.state, 'cancelled');
    assert.equal(res.body.counts.pending, 0);
    const c = await waitFor('every target cancelled', async () => {
      const s = await show('cancelled');
      return s.counts.cancelled === 6 ? s : null;
    });
    assert.equal(c.state, 'cancelled');
    const tasks = await tasksOf(id);
    assert.equal(tasks.length, 2, 'nothing started after the cancel');
    assert.ok(tasks.every((x) => x.state === 'cancelled'), JSON.stringify(tasks));
    for (const repo of list) assert.equal(await git(repo, ['for-each-ref', '--format=%(refname:short)', 'refs/heads']), 'main');
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/cancelled/cancel', {})).status, 409);
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/cancelled/retry-failed', {})).status, 409);
  });

  test("a campaign's task that ends wakes the scheduler: the next repository starts at once, not at its slow poll", async () => {
    const list = await repos('woken', 4);
    const made = await create({ name: 'woken', repos: list, concurrency: 1 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await finished('woken');
    const rows = await db()
      .selectFrom('campaign_targets')
      .innerJoin('tasks', 'tasks.id', 'campaign_targets.task_id')
      .select(['campaign_targets.started_at', 'tasks.finished_at as task_finished_at'])
      .where('campaign_targets.campaign_id', '=', made.body.campaign.id)
      .orderBy('campaign_targets.started_at')
      .execute();
    // The poll is every 5 s; told of each task's end, the scheduler starts the next within moments.
    const gaps = rows.slice(1).map((r, i) => r.started_at!.getTime() - rows[i]!.task_finished_at!.getTime());
    assert.ok(gaps.every((g) => g >= 0 && g < 2_500), `from one end to the next start: ${gaps.join(', ')} ms`);
  });

  test('a failure before the agent (the clone) is tried again up to maxRetries, then failed (infrastructure); retry-failed puts it back', async () => {
    const list = await repos('infra', 2);
    // A directory where a repository was: it can be named, but not cloned.
    const gone = join(root, 'infra-gone.git');
    await rename(list[1]!, gone);
    await mkdir(list[1]!);
    const made = await create({ name: 'infra', repos: list, maxRetries: 1, concurrency: 2 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    const c = await finished('infra');
    assert.deepEqual(c.counts, { pending: 0, starting: 0, running: 0, succeeded: 1, failed: 1, cancelled: 0 });
    const bad = (await targets('infra')).find((x) => x.repo === list[1])!;
    assert.equal(bad.failure, 'infrastructure', JSON.stringify(bad));
    assert.equal(bad.attempts, 2, `the first attempt and one retry: ${JSON.stringify(bad)}`);
    const keys = (await tasksOf(id)).filter((x) => x.repo_url === list[1]).map((x) => x.trigger_key!.split(':').slice(3).join(':')).sort();
    assert.deepEqual(keys, ['1:1', '1:2']);
    assert.equal(c.failures[0].failure, 'infrastructure');

    // The repository is back: retry-failed runs it again, and only it.
    await rm(list[1]!, { recursive: true });
    await rename(gone, list[1]!);
    const retried = await t.api('POST', '/api/orgs/default/campaigns/infra/retry-failed', {});
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body.state, 'running');
    assert.equal(retried.body.run, 2, 'a retry is a run of its own: its tasks are new ones, not the failed ones found again');
    const done = await finished('infra');
    assert.equal(done.counts.succeeded, 2, JSON.stringify(await targets('infra')));
    assert.equal((await tasksOf(id)).length, 4, 'the two failed attempts, the success, and the retried one');
    await assertNoDuplicates(id);
    assert.equal(await git(list[1]!, ['show', 'berth/campaign/infra:a.txt']), 'a\nbumped');
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/infra/retry-failed', {})).status, 409, 'nothing left to retry');
  });

  test('a 10,000-line list is taken with its bad lines reported by number; an all-bad list or a bad body makes nothing', async () => {
    const lines = Array.from({ length: 10_000 }, (_, i) => `https://127.0.0.1/o/r${i + 1}.git`);
    lines[4] = 'not a repository at all';
    lines[6] = 'https://127.0.0.1/o/r1/'; // the first line's repository, spelled otherwise
    lines[8] = 'https://127.0.0.1/o/r\u0001x.git';
    lines[10] = '# a comment';
    lines[11] = '';
    // One start an hour, one at a time, no retry: it is paused before a second could start.
    const made = await create({ name: 'big', repos: lines, concurrency: 1, forgeRate: '1/h', maxRetries: 0 });
    assert.equal(made.status, 201, JSON.stringify(made.body).slice(0, 500));
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/big/pause', {})).status, 200);
    assert.equal(made.body.campaign.total, 10_000 - 5);
    assert.deepEqual(made.body.invalid.map((x: any) => x.line), [5, 7, 9]);
    assert.match(made.body.invalid[0].reason, /not a repository URL/);
    assert.match(made.body.invalid[1].reason, /the same repository as line 1/);
    assert.match(made.body.invalid[2].reason, /control character/);
    assert.ok(!made.body.invalid[2].text.includes('\u0001'), 'the control character is shown escaped');
    const page = await t.api('GET', '/api/orgs/default/campaigns/big/targets?limit=2&after=9990');
    assert.equal(page.status, 200);
    assert.equal(page.body.items[0].repo, 'https://127.0.0.1/o/r9996.git');
    assert.ok((await tasksOf(made.body.campaign.id)).length <= 1, 'a start an hour');
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/big/cancel', {})).status, 200);

    const before = (await t.api('GET', '/api/orgs/default/campaigns')).body.items.length;
    const none = await create({ name: 'none', repos: ['garbage', 'ftp://127.0.0.1/x', '/etc/passwd\u0007'] });
    assert.equal(none.status, 409, JSON.stringify(none.body));
    assert.match(none.body.error?.message ?? JSON.stringify(none.body), /no repository of the list can be used: line 1/);
    const bad: [string, Record<string, unknown>][] = [
      ['no name', { name: undefined, repos: ['https://127.0.0.1/o/a.git'] }],
      ['a bad name', { name: 'Not A Name', repos: ['https://127.0.0.1/o/a.git'] }],
      ['no repositories', { name: 'bad1', repos: [] }],
      ['repos not a list', { name: 'bad2', repos: 'https://127.0.0.1/o/a.git' }],
      ['a command agent without a command', { name: 'bad3', repos: ['https://127.0.0.1/o/a.git'], command: undefined }],
      ['no concurrency', { name: 'bad4', repos: ['https://127.0.0.1/o/a.git'], concurrency: 0 }],
      ['a bad rate', { name: 'bad5', repos: ['https://127.0.0.1/o/a.git'], forgeRate: 'fast' }],
      ['a NUL character', { name: 'bad8', repos: ['https://127.0.0.1/o/a\u0000.git'] }],
      ['an unknown field', { name: 'bad6', repos: ['https://127.0.0.1/o/a.git'], colour: 'blue' }],
      ['too many lines', { name: 'bad7', repos: Array.from({ length: 11_001 }, (_, i) => `https://127.0.0.1/o/x${i}.git`) }],
    ];
    for (const [what, body] of bad) {
      const res = await create(body);
      assert.equal(res.status, 400, `${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns', '{"name": ')).status, 400, 'not JSON');
    assert.equal((await t.api('GET', '/api/orgs/default/campaigns')).body.items.length, before, 'nothing made');
  });

  test('roles: a member over projects\' repositories only, a viewer may not, only its maker or an admin steers it, another org sees none', async () => {
    const [own, other] = await repos('roles', 2);
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'roles', repoUrl: own })).status, 201);
    const mine = await create({ name: 'mias', repos: [own, other], command: 'sleep 2; echo bumped >> a.txt' }, 'mia');
    assert.equal(mine.status, 201, JSON.stringify(mine.body));
    assert.equal(mine.body.campaign.total, 1);
    assert.deepEqual(mine.body.invalid.map((x: any) => x.line), [2]);
    assert.match(mine.body.invalid[0].reason, /no project of this org uses this repository/);
    // Only the other repository: nothing left, nothing made.
    assert.equal((await create({ name: 'mias2', repos: [other] }, 'mia')).status, 409);

    const viewer = await create({ name: 'vics', repos: [own] }, 'vic');
    assert.equal(viewer.status, 403, JSON.stringify(viewer.body));
    assert.equal((await as('vic')('GET', '/api/orgs/default/campaigns/mias')).status, 200, 'a viewer may look');
    assert.equal((await as('vic')('POST', '/api/orgs/default/campaigns/mias/cancel', {})).status, 403);
    // Another member may not steer mia's campaign; mia may not steer the admin's.
    assert.equal((await as('max')('POST', '/api/orgs/default/campaigns/mias/cancel', {})).status, 403);
    assert.equal((await as('max')('POST', '/api/orgs/default/campaigns/mias/pause', {})).status, 403);
    assert.equal((await as('mia')('POST', '/api/orgs/default/campaigns/many/rerun', {})).status, 403);
    assert.equal((await as('mia')('POST', '/api/orgs/default/campaigns/checked/retry-failed', {})).status, 403);

    // Another org: none of this org's campaigns, by name or id.
    assert.equal((await t.api('POST', '/api/orgs', { name: 'second' })).status, 201);
    assert.equal((await t.api('GET', '/api/orgs/second/campaigns/mias')).status, 404);
    assert.equal((await t.api('GET', `/api/orgs/second/campaigns/${mine.body.campaign.id}`)).status, 404);
    assert.equal((await t.api('POST', `/api/orgs/second/campaigns/${mine.body.campaign.id}/cancel`, {})).status, 404);
    assert.deepEqual((await t.api('GET', '/api/orgs/second/campaigns')).body.items, []);

    // Its maker may; and its task ran as hers, over the project.
    const c = await finished('mias');
    assert.equal(c.counts.succeeded, 1);
    const task = await db().selectFrom('tasks').select(['created_by', 'project_id']).where('triggered_by', '=', `campaign:${mine.body.campaign.id}`).executeTakeFirstOrThrow();
    assert.equal(task.created_by, mine.body.campaign.createdBy);
    assert.notEqual(task.created_by, (await show('many')).createdBy);
    assert.ok(task.project_id);
    const rerun = await as('mia')('POST', '/api/orgs/default/campaigns/mias/rerun', {});
    assert.equal(rerun.status, 200, JSON.stringify(rerun.body));
    const cancelled = await as('mia')('POST', '/api/orgs/default/campaigns/mias/cancel', {});
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  });

  test('maxOpenPrs: no more pushed branches awaiting approval than it allows; the rest wait', async () => {
    const list = await repos('capped', 3);
    const made = await create({ name: 'capped', repos: list, concurrency: 3, maxOpenPrs: 2 });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    await waitFor('two pushed', async () => (await show('capped')).counts.succeeded === 2);
    await t.berth.campaignScheduler.pass();
    const c = await show('capped');
    assert.equal(c.state, 'running');
    assert.equal(c.counts.pending, 1, 'the third waits for an approval');
    assert.equal(c.changeRequests.length, 2);
    // And it says why, with what to do.
    assert.match(c.waitingFor ?? '', /2 pull requests or branches are open.*--max-open-prs 2.*berth campaign approve capped/);
    assert.equal((await tasksOf(id)).length, 2);
    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/capped/cancel', {})).status, 200);
  });

  test('the audit log has each campaign action and each task it started', async () => {
    const rows = await db().selectFrom('audit_entries').select(['action', 'actor', 'target', 'details']).where('action', 'like', 'campaign.%').execute();
    const actions = new Set(rows.map((r) => r.action));
    for (const a of ['campaign.create', 'campaign.pause', 'campaign.resume', 'campaign.cancel', 'campaign.rerun', 'campaign.retry-failed', 'campaign.done']) assert.ok(actions.has(a), `${a} in ${[...actions].join(', ')}`);
    const many = await show('many');
    const triggered = await db().selectFrom('audit_entries').select(['actor', 'target', 'details']).where('action', '=', 'task.trigger').where('actor', '=', `campaign:${many.id}`).execute();
    assert.equal(triggered.length, MANY);
    assert.ok(triggered.every((r) => (r.details as any).trigger === 'campaign' && (r.details as any).campaign === 'many'));
  });
});
