// sandbox: none
// Campaigns on a forge (issue #17): the fake GitHub (its REST and GraphQL wire protocol, and
// git over HTTP) holds the repositories, each a Berth project whose forge is that GitHub. A
// command agent edits one file; the tests read the pull requests, the requests' times and
// the draft flags at the fake, and the campaign's own answers. Plus a plain-git approve over
// local bare repositories.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startFakeGitLab } from './fakes/gitlab.ts';
import { createBareRepo, createBareRepos, refSha, runGit } from './fakes/git-server.ts';
import { createBumpCampaign, forgeProjects, startReplicas, startTestBerth, waitFor, type TestBerth, type TestReplicas } from './helpers.ts';
import { ON_POSTGRES } from './postgres.ts';

const TOKEN = 'ghp_campaigns_fake_token_0123456789';
let t: TestBerth;
let github: FakeGitHub;
let root: string;
const db = () => t.berth.database.db;

/** Repositories acme/PREFIX-N on the fake GitHub, each a project of the same name with the fake as its forge. */
const forgeRepos = (prefix: string, count: number) => forgeProjects(t, github, { kind: 'github', tokenSecret: 'GITHUB_TOKEN', prefix, count });
const create = (body: Record<string, unknown>) => createBumpCampaign(t, body);

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

async function finished(name: string, onEach: () => void = () => {}) {
  return waitFor(`campaign ${name} to finish`, async () => {
    onEach();
    const c = await show(name);
    return c.state === 'done' ? c : null;
  }, 120_000);
}

async function approve(name: string, body: Record<string, unknown>) {
  const res = await t.api('POST', `/api/orgs/default/campaigns/${name}/approve`, body);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as { approved: { repo: string; how: string }[]; skipped: { repo: string; reason: string }[] };
}

const pullsOf = (prefix: string) => github.pulls.filter((p) => p.repository.startsWith(`acme/${prefix}-`));
const pullOf = (repo: string) => {
  const found = github.pulls.filter((p) => p.repository === `acme/${repo}`);
  assert.equal(found.length, 1, `one pull request on acme/${repo}`);
  return found[0]!;
};
const byRepo = <T extends { repo: string }>(items: T[], name: string): T | undefined => items.find((x) => x.repo === github.repoUrl(`acme/${name}`));

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-campaigns-github-'));
  github = await startFakeGitHub({ tokens: [TOKEN] });
  t = await startTestBerth({ fake: true, taskConcurrency: 8 });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITHUB_TOKEN', { value: TOKEN })).status, 200);
});

after(async () => {
  await t?.destroy();
  await github?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a campaign over repositories on GitHub', () => {
  test('--draft at a forge rate of 2/s: one draft pull request per repository, the tasks started no faster than the rate', async () => {
    const repos = await forgeRepos('paced', 4);
    const c = await create({ name: 'paced', repos, concurrency: 4, forgeRate: '2/s', draft: true });
    const done = await finished('paced');
    assert.equal(done.counts.succeeded, 4, JSON.stringify(done));

    const pulls = pullsOf('paced');
    assert.equal(pulls.length, 4);
    for (const p of pulls) {
      assert.equal(p.head, c.branch);
      assert.equal(p.base, 'main');
      assert.equal(p.draft, true, `${p.repository}: a draft, as the campaign asked, though its checks passed`);
      assert.equal(p.token, TOKEN);
    }
    const items = await targets('paced');
    assert.ok(items.every((x) => x.changeRequest?.kind === 'pull_request' && x.changeRequest.draft === true && x.changeRequest.url));

    // Berth's own record: each start at least half a second after the one before.
    const starts = (await db().selectFrom('campaign_targets').select('started_at').where('campaign_id', '=', c.id).orderBy('started_at').execute()).map((r) => r.started_at!.getTime());
    for (let i = 1; i < starts.length; i++) assert.ok(starts[i]! - starts[i - 1]! >= 499, `starts ${i - 1} and ${i} are ${starts[i]! - starts[i - 1]!} ms apart`);
    // The fake's: every repository was cloned from it. (When each clone comes is the start plus
    // a task's set-up, which varies by seconds on a loaded machine: the starts are what the rate paces.)
    const fetched = new Set(github.gitRequests.map((r) => /^\/acme\/(paced-\d)\.git\//.exec(r.path)?.[1]).filter(Boolean));
    assert.equal(fetched.size, 4);
  });

  test('a rerun puts new commits on the same branches: no second pull request', async () => {
    const before = new Map(pullsOf('paced').map((p) => [p.repository, p.number]));
    const heads = new Map<string, string | null>();
    for (const repo of before.keys()) heads.set(repo, await refSha(join(github.root, `${repo}.git`), 'refs/heads/berth/campaign/paced'));
    const res = await t.api('POST', '/api/orgs/default/campaigns/paced/rerun', {});
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const done = await finished('paced');
    assert.equal(done.counts.succeeded, 4, JSON.stringify(done));
    assert.equal(done.run, 2);
    const after = pullsOf('paced');
    assert.equal(after.length, 4, 'no pull request was opened a second time');
    for (const p of after) {
      assert.equal(p.number, before.get(p.repository));
      const now = await refSha(join(github.root, `${p.repository}.git`), 'refs/heads/berth/campaign/paced');
      assert.notEqual(now, heads.get(p.repository), `${p.repository}: the branch has the rerun's commit`);
      assert.equal(Number(await runGit(['rev-list', '--count', `${heads.get(p.repository)!}..${now!}`], { cwd: join(github.root, `${p.repository}.git`) })), 1);
    }
    // The pull requests were created by the first run only.
    assert.equal(github.apiRequests.filter((r) => r.method === 'POST' && /^\/repos\/acme\/paced-\d\/pulls$/.test(r.path)).length, 4);
  });

  test("the pull requests' state, checks and reviews are read back from GitHub; approve --only-green marks green drafts ready and skips the rest", async () => {
    const head = async (repo: string) => (await refSha(join(github.root, `acme/${repo}.git`), 'refs/heads/berth/campaign/paced'))!;
    // paced-0: a passing status, approved. paced-1: a failing check run. paced-2: changes asked, a check still running. paced-3: closed.
    github.setStatus('acme/paced-0', await head('paced-0'), { context: 'ci/build', state: 'success' });
    github.setCheckRun('acme/paced-0', await head('paced-0'), { name: 'lint', status: 'completed', conclusion: 'success' });
    github.addReview('acme/paced-0', pullOf('paced-0').number, { user: 'rev', state: 'APPROVED' });
    github.setStatus('acme/paced-1', await head('paced-1'), { context: 'ci/build', state: 'success' });
    github.setCheckRun('acme/paced-1', await head('paced-1'), { name: 'tests', status: 'completed', conclusion: 'failure' });
    github.setCheckRun('acme/paced-2', await head('paced-2'), { name: 'tests', status: 'in_progress' });
    github.addReview('acme/paced-2', pullOf('paced-2').number, { user: 'rev', state: 'APPROVED' });
    github.addReview('acme/paced-2', pullOf('paced-2').number, { user: 'other', state: 'CHANGES_REQUESTED' });
    github.closePull('acme/paced-3', pullOf('paced-3').number);

    // Looking at a campaign whose pull requests were read over a minute ago reads them again.
    const c = await show('paced');
    // Five minutes on: the pull requests, and the campaign's last reading, are stale.
    await db().updateTable('campaign_targets').set({ refreshed_at: new Date(Date.now() - 5 * 60_000) }).where('campaign_id', '=', c.id).execute();
    await db().updateTable('campaigns').set({ refreshed_at: new Date(Date.now() - 5 * 60_000) }).where('id', '=', c.id).execute();
    const seen = await waitFor('the pull requests read back', async () => {
      const s = await show('paced');
      const crs = Object.fromEntries(s.changeRequests.map((x: any) => [x.repo.replace(/^.*\/acme\/|\.git$/g, ''), x.changeRequest]));
      return crs['paced-3']?.state === 'closed' && crs['paced-2']?.review === 'changes_requested' ? crs : null;
    });
    assert.deepEqual(
      Object.fromEntries(Object.entries(seen).map(([k, v]: [string, any]) => [k, [v.state, v.checks, v.review, v.draft]])),
      {
        'paced-0': ['open', 'passing', 'approved', true],
        'paced-1': ['open', 'failing', 'none', true],
        'paced-2': ['open', 'pending', 'changes_requested', true],
        'paced-3': ['closed', null, 'none', true],
      },
    );
    const refreshed = await db().selectFrom('campaign_targets').select('refreshed_at').where('campaign_id', '=', c.id).execute();
    assert.ok(refreshed.every((r) => r.refreshed_at && Date.now() - r.refreshed_at.getTime() < 60_000));

    assert.equal((await t.api('POST', '/api/orgs/default/campaigns/paced/approve', { onlyGreen: 'yes' })).status, 400);
    const sentBefore = github.apiRequests.length;
    const r = await approve('paced', { onlyGreen: true });
    assert.deepEqual(r.approved.map((x) => x.how), ['ready_for_review', 'ready_for_review']);
    assert.ok(byRepo(r.approved, 'paced-0') && byRepo(r.approved, 'paced-2'), JSON.stringify(r));
    assert.match(byRepo(r.skipped, 'paced-1')!.reason, /not green: the forge's checks fail/);
    assert.match(byRepo(r.skipped, 'paced-3')!.reason, /closed/);
    assert.equal(pullOf('paced-0').draft, false);
    assert.equal(pullOf('paced-2').draft, false);
    assert.equal(pullOf('paced-1').draft, true, 'a change whose checks fail stays a draft');
    assert.equal(pullOf('paced-3').draft, true);
    assert.deepEqual(github.graphqlRequests.map((q) => q.operation), ['markPullRequestReadyForReview', 'markPullRequestReadyForReview']);
    assert.deepEqual(github.graphqlRequests.map((q) => q.variables.id).sort(), [pullOf('paced-0').nodeId, pullOf('paced-2').nodeId].sort());
    // At the campaign's forge rate (2/s), as its starts are: each marking begins by reading its pull request.
    const marked = github.apiRequests.slice(sentBefore).filter((q) => q.method === 'GET' && /^\/repos\/acme\/paced-\d\/pulls\/\d+$/.test(q.path)).map((q) => q.at);
    assert.equal(marked.length, 2);
    // (Berth starts them half a second apart; their arrival here varies by the requests' own latency
    // and, on a loaded machine, the event loop's: unpaced, they would come milliseconds apart.)
    assert.ok(marked[1]! - marked[0]! >= 350, `the two were marked ready ${marked[1]! - marked[0]!} ms apart`);

    // Again: nothing left to mark; the ready ones are said to be so.
    const again = await approve('paced', { onlyGreen: true });
    assert.deepEqual(again.approved, []);
    assert.match(byRepo(again.skipped, 'paced-0')!.reason, /already ready for review/);
    assert.equal(github.graphqlRequests.length, 2);

    // Without --only-green the failing one is marked ready too; each approval is on record.
    const all = await approve('paced', { onlyGreen: false });
    assert.deepEqual(all.approved.map((x) => x.repo), [github.repoUrl('acme/paced-1')]);
    assert.equal(pullOf('paced-1').draft, false);
    const audit = (await t.api('GET', '/api/orgs/default/audit?action=task.approve')).body.items.filter((e: any) => e.details.campaign === 'paced');
    assert.equal(audit.length, 3);
    assert.ok(audit.every((e: any) => e.details.how === 'ready_for_review'));
    assert.equal(audit.find((e: any) => e.details.repo === github.repoUrl('acme/paced-1')).details.overridden, "the forge's checks fail");
    // A refresh reads one pull request at a time, no faster than the campaign's forge rate (2/s).
    await t.berth.campaignForge.refresh(c.id);
    const from = github.apiRequests.length;
    assert.equal(await t.berth.campaignForge.refresh(c.id), 3, 'the three open ones are read (the closed one no more)');
    const reads = github.apiRequests.slice(from).filter((q) => q.method === 'GET' && /^\/repos\/acme\/paced-\d\/pulls\/\d+$/.test(q.path)).map((q) => q.at);
    assert.equal(reads.length, 3);
    // Berth asks half a second apart (a turn of the rate each); arrivals here vary by the requests' own latency.
    for (let i = 1; i < reads.length; i++) assert.ok(reads[i]! - reads[i - 1]! >= 350, `reads ${i - 1} and ${i} are ${reads[i]! - reads[i - 1]!} ms apart`);

    // The refused body (400) changed nothing; the three calls are on record.
    assert.equal((await t.api('GET', '/api/orgs/default/audit?action=campaign.approve')).body.items.length, 3);
  });

  test('a pull request made whose answer was lost: the retry adopts the pushed commit and finds that pull request (one commit, one pull request)', async () => {
    const repos = await forgeRepos('lost', 2);
    github.loseNextPullAnswer('acme/lost-0');
    const c = await create({ name: 'lost', repos, concurrency: 2, forgeRate: '20/s' });
    const done = await finished('lost');
    assert.equal(done.counts.succeeded, 2, JSON.stringify(done));
    const pull = pullOf('lost-0');
    const item = byRepo(await targets('lost'), 'lost-0')!;
    // Attempt 1 pushed, made the pull request and never heard so; attempt 2 took both as they were.
    assert.equal(item.attempts, 2, JSON.stringify(item));
    assert.equal(item.reason, null, 'succeeded: the note of the failed attempt is gone');
    assert.equal(item.changeRequest.number, pull.number);
    assert.equal(item.changeRequest.url, pull.htmlUrl);
    const bare = join(github.root, 'acme/lost-0.git');
    assert.equal(Number((await runGit(['--git-dir', bare, 'rev-list', '--count', `main..${c.branch}`], { cwd: github.root })).trim()), 1, 'one campaign commit');
    assert.equal(await refSha(bare, `refs/heads/${c.branch}`), pull.headSha, 'the commit the pull request was made with');
    assert.equal(github.apiRequests.filter((r) => r.method === 'POST' && r.path === '/repos/acme/lost-0/pulls').length, 2, 'asked twice: the second was told it exists');
  });

  test('never more open pull requests than maxOpenPrs: the rest wait, and go on once pull requests are merged or closed', async () => {
    const repos = await forgeRepos('capped', 4);
    const c = await create({ name: 'capped', repos, concurrency: 4, forgeRate: '20/s', maxOpenPrs: 2 });
    let peakOpen = 0;
    const sample = () => void (peakOpen = Math.max(peakOpen, pullsOf('capped').filter((p) => p.state === 'open').length));
    await waitFor('two pull requests', async () => {
      sample();
      const items = await targets('capped');
      return items.filter((x) => x.state === 'succeeded').length === 2 ? items : null;
    });
    // More passes of the scheduler start nothing more: two are open.
    for (let i = 0; i < 3; i++) await t.berth.campaignScheduler.pass();
    const waiting = await targets('capped');
    assert.deepEqual(waiting.map((x) => x.state).sort(), ['pending', 'pending', 'succeeded', 'succeeded']);
    assert.equal(pullsOf('capped').length, 2);

    // One merged and one closed on GitHub: the next read frees both places.
    const [first, second] = pullsOf('capped');
    github.mergePull(first!.repository, first!.number);
    github.closePull(second!.repository, second!.number);
    await t.berth.campaignForge.refresh(c.id);
    const done = await finished('capped', sample);
    assert.equal(done.counts.succeeded, 4, JSON.stringify(done));
    assert.equal(pullsOf('capped').length, 4);
    assert.ok(peakOpen <= 2, `at most 2 open at once, saw ${peakOpen}`);
    const states = (await targets('capped')).map((x) => x.changeRequest.state);
    assert.deepEqual(states.filter((s) => s !== 'open' && s !== null).sort(), ['closed', 'merged']);
  });
});

describe('a campaign from a GitHub search (--org-query)', () => {
  test("the repositories are what the org's GitHub finds; a search that finds none, or both ways at once, is refused", async () => {
    await forgeRepos('found', 3);
    const both = await t.api('POST', '/api/orgs/default/campaigns', { name: 'both', goal: 'g', agent: 'command', command: 'true', repos: ['/tmp/x.git'], orgQuery: 'org:acme' });
    assert.equal(both.status, 400);
    assert.match(JSON.stringify(both.body), /one way/);
    const none = await t.api('POST', '/api/orgs/default/campaigns', { name: 'none', goal: 'g', agent: 'command', command: 'true', orgQuery: 'org:nobody' });
    assert.equal(none.status, 409, JSON.stringify(none.body));
    assert.match(JSON.stringify(none.body), /found no repository/);
    assert.equal((await db().selectFrom('campaigns').select('id').where('name', 'in', ['both', 'none']).execute()).length, 0);

    const searches = () => github.apiRequests.filter((r) => r.path === '/search/repositories').length;
    const before = searches();
    const c = await create({ name: 'searched', orgQuery: 'org:acme found', concurrency: 1, forgeRate: '1/h' });
    assert.ok(searches() > before, 'the fake GitHub was asked');
    const items = await targets('searched');
    assert.deepEqual(items.map((x) => x.repo).sort(), [0, 1, 2].map((i) => github.repoUrl(`acme/found-${i}`)).sort());
    assert.ok(items.every((x) => x.project?.startsWith('found-')), 'each repository is its project');
    assert.equal((await t.api('POST', `/api/orgs/default/campaigns/${c.id}/cancel`, {})).status, 200);
    await waitFor('the searched campaign to settle', async () => (await targets('searched')).every((x) => ['cancelled', 'succeeded', 'failed'].includes(x.state)));
  });
});

describe('a campaign over repositories on GitLab', () => {
  test('--draft opens draft merge requests; their state, pipeline and approvals are read back; approve takes the Draft: prefix off the green ones', async () => {
    const gitlab = await startFakeGitLab({ tokens: [TOKEN] });
    try {
      assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITLAB_TOKEN', { value: TOKEN })).status, 200);
      const repos: string[] = [];
      for (const name of ['gl-0', 'gl-1', 'gl-2']) {
        await gitlab.createRepo(`acme/${name}`, { 'a.txt': 'a\n' });
        const made = await t.api('POST', '/api/orgs/default/projects', { name, repoUrl: gitlab.repoUrl(`acme/${name}`), forge: { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' } });
        assert.equal(made.status, 201, JSON.stringify(made.body));
        repos.push(gitlab.repoUrl(`acme/${name}`));
      }
      const c = await create({ name: 'gitlab', repos, concurrency: 3, forgeRate: '20/s', draft: true });
      await finished('gitlab');
      assert.equal(gitlab.mergeRequests.length, 3);
      assert.ok(gitlab.mergeRequests.every((m) => m.draft && /^Draft: /.test(m.title) && m.sourceBranch === c.branch), JSON.stringify(gitlab.mergeRequests));
      const mr = (name: string) => gitlab.mergeRequests.find((m) => m.project === `acme/${name}`)!;
      gitlab.updateMergeRequest('acme/gl-0', mr('gl-0').iid, { pipeline: 'success', approvedBy: ['root'] });
      gitlab.updateMergeRequest('acme/gl-1', mr('gl-1').iid, { pipeline: 'failed', reviewers: [{ username: 'root', state: 'requested_changes' }] });
      gitlab.updateMergeRequest('acme/gl-2', mr('gl-2').iid, { state: 'merged', pipeline: 'running' });

      assert.equal(await t.berth.campaignForge.refresh(c.id), 3);
      const crs = Object.fromEntries((await targets('gitlab')).map((x) => [x.repo.replace(/^.*\/acme\/|\.git$/g, ''), x.changeRequest]));
      assert.deepEqual(
        Object.fromEntries(Object.entries(crs).map(([k, v]: [string, any]) => [k, [v.kind, v.state, v.checks, v.review, v.draft]])),
        {
          'gl-0': ['merge_request', 'open', 'passing', 'approved', true],
          'gl-1': ['merge_request', 'open', 'failing', 'changes_requested', true],
          'gl-2': ['merge_request', 'merged', 'pending', 'none', true],
        },
      );

      const r = await approve('gitlab', { onlyGreen: true });
      assert.deepEqual(r.approved, [{ repo: repos[0], how: 'ready_for_review' }]);
      assert.deepEqual(r.skipped.map((x) => x.repo), [repos[1], repos[2]]);
      assert.match(r.skipped[0]!.reason, /not green: the forge's checks fail/);
      assert.match(r.skipped[1]!.reason, /already merged/);
      assert.equal(mr('gl-0').draft, false);
      assert.doesNotMatch(mr('gl-0').title, /draft/i);
      assert.equal(mr('gl-1').draft, true);
      assert.ok(gitlab.apiRequests.some((q) => q.method === 'PUT' && q.path === `projects/acme/gl-0/merge_requests/${mr('gl-0').iid}`));
    } finally {
      await gitlab.close();
    }
  });
});

describe('a campaign over plain git repositories', () => {
  test('approve merges each green branch into its base branch, and skips one no checks ran for', async () => {
    const repos = await createBareRepos({ root, names: ['plain-a.git', 'plain-b.git'], files: { 'a.txt': 'a\n' } });
    const c = await create({ name: 'plain', repos, concurrency: 2, forgeRate: '20/s' });
    await finished('plain');
    const unchecked = await create({ name: 'unchecked', repos: [(await createBareRepo({ root, name: 'plain-c.git', files: { 'a.txt': 'a\n' } })).path], check: undefined, forgeRate: '20/s' });
    await finished('unchecked');

    const r = await approve('plain', { onlyGreen: true });
    assert.deepEqual(r, { approved: repos.map((repo) => ({ repo, how: 'merged' })), skipped: [] });
    for (const repo of repos) {
      assert.equal(await runGit(['--git-dir', repo, 'show', 'main:a.txt'], { cwd: root }), 'a\nbumped\n');
      assert.match(await runGit(['--git-dir', repo, 'log', '-1', '--format=%s', 'main'], { cwd: root }), new RegExp(`^Merge ${c.branch}`));
    }
    const items = await targets('plain');
    assert.ok(items.every((x) => x.changeRequest.kind === 'berth' && x.changeRequest.state === 'merged'), JSON.stringify(items));
    // Merged ones no longer count as open; approving again merges nothing twice.
    const again = await approve('plain', { onlyGreen: true });
    assert.deepEqual(again.approved, []);
    assert.ok(again.skipped.every((s) => /already merged/.test(s.reason)), JSON.stringify(again));

    const skipped = await approve('unchecked', { onlyGreen: true });
    assert.deepEqual(skipped.approved, []);
    assert.match(skipped.skipped[0]!.reason, /not green: no checks ran for it/);
    const forced = await approve('unchecked', { onlyGreen: false });
    assert.deepEqual(forced.approved.map((x) => x.how), ['merged']);
    const audit = (await t.api('GET', '/api/orgs/default/audit?action=task.approve')).body.items.filter((e: any) => e.details.campaign === 'unchecked');
    assert.equal(audit.length, 1);
    assert.equal(audit[0].details.how, 'merged');
    assert.equal(audit[0].details.overridden, 'no checks ran for it (the campaign has no --check)');
  });
});

describe('two control planes on one PostgreSQL', { skip: ON_POSTGRES ? false : 'replicas need PostgreSQL: run with BERTH_TEST_DATABASE=postgres' }, () => {
  let replicas: TestReplicas | undefined;
  let a: TestBerth;
  let b: TestBerth;

  before(async () => {
    // Replicas share the secret key, as they must to read the secrets (the forge token) of one database.
    replicas = await startReplicas(2, { fake: true, taskConcurrency: 4 });
    [a, b] = replicas.replicas as [TestBerth, TestBerth];
  });

  after(async () => {
    await replicas?.close();
  });

  test("the pull requests' state is read once per period, whichever replicas ask", async () => {
    assert.equal((await a.api('PUT', '/api/orgs/default/secrets/GITHUB_TOKEN', { value: TOKEN })).status, 200);
    const repos: string[] = [];
    for (const name of ['twin-0', 'twin-1', 'twin-2']) {
      await github.createRepo(`acme/${name}`, { 'a.txt': 'a\n' });
      const made = await a.api('POST', '/api/orgs/default/projects', { name, repoUrl: github.repoUrl(`acme/${name}`), forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' } });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      repos.push(github.repoUrl(`acme/${name}`));
    }
    const made = await a.api('POST', '/api/orgs/default/campaigns', { name: 'twin', goal: 'bump a.txt', agent: 'command', command: 'echo bumped >> a.txt', check: 'true', repos, forgeRate: '20/s' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    await waitFor('the campaign to finish', async () => (await b.api('GET', `/api/orgs/default/campaigns/${id}`)).body.state === 'done' || null, 120_000);

    // Stale: read over a minute ago. Both replicas' minutely passes and a look at it on each.
    const db = a.berth.database.db;
    const stale = new Date(Date.now() - 5 * 60_000);
    await db.updateTable('campaign_targets').set({ refreshed_at: stale }).where('campaign_id', '=', id).execute();
    await db.updateTable('campaigns').set({ refreshed_at: stale }).where('id', '=', id).execute();
    const reads = () => github.apiRequests.filter((r) => r.method === 'GET' && /^\/repos\/acme\/twin-\d\/pulls\/\d+$/.test(r.path)).length;
    const before = reads();
    await Promise.all([a.berth.campaignForge.pass(), b.berth.campaignForge.pass(), a.api('GET', '/api/orgs/default/campaigns/twin'), b.api('GET', '/api/orgs/default/campaigns/twin')]);
    await waitFor('the reading to end', async () => (await db.selectFrom('campaign_targets').select('refreshed_at').where('campaign_id', '=', id).execute()).every((r) => r.refreshed_at! > stale) || null, 30_000);
    await Promise.all([a.berth.campaignForge.pass(), b.berth.campaignForge.pass()]);
    assert.equal(reads() - before, 3, 'each pull request read once');
  });
});
