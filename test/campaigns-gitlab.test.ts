// sandbox: none
// Campaigns on GitLab (issue #17) when a merge request's answer is lost: the fake GitLab (its
// REST API v4 and git over HTTP) makes the merge request and answers 502, and the retry finds
// that one through GET /projects/:id/merge_requests instead of opening a second. What
// findChangeRequest may take from that list is test/security/forge-adoption.test.ts.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startFakeGitLab, type FakeGitLab } from './fakes/gitlab.ts';
import { refSha, runGit } from './fakes/git-server.ts';
import { createBumpCampaign, forgeProjects, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const TOKEN = 'glpat-campaigns_fake_token_0123456789';
let t: TestBerth;
let gitlab: FakeGitLab;

/** Projects acme/PREFIX-N on the fake GitLab, each a Berth project of the same name with the fake as its forge. */
const forgeRepos = (prefix: string, count: number) => forgeProjects(t, gitlab, { kind: 'gitlab', tokenSecret: 'GITLAB_TOKEN', prefix, count });
const create = (body: Record<string, unknown>) => createBumpCampaign(t, body);

async function targets(name: string): Promise<any[]> {
  const res = await t.api('GET', `/api/orgs/default/campaigns/${name}/targets?limit=1000`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
}

async function finished(name: string) {
  return waitFor(`campaign ${name} to finish`, async () => {
    const res = await t.api('GET', `/api/orgs/default/campaigns/${name}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.state === 'done' ? res.body : null;
  }, 120_000);
}

const mergeRequestsOf = (repo: string) => gitlab.mergeRequests.filter((m) => m.project === `acme/${repo}`);

before(async () => {
  gitlab = await startFakeGitLab({ tokens: [TOKEN] });
  t = await startTestBerth({ fake: true, taskConcurrency: 4 });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITLAB_TOKEN', { value: TOKEN })).status, 200);
});

after(async () => {
  await t?.destroy();
  await gitlab?.close();
});

describe('a campaign over projects on GitLab', () => {
  test('a merge request made whose answer was lost: the retry adopts the pushed commit and finds that merge request (one commit, one merge request)', async () => {
    const repos = await forgeRepos('lost', 2);
    gitlab.loseNextMergeRequestAnswer('acme/lost-0');
    const c = await create({ name: 'lost', repos, concurrency: 2, forgeRate: '20/s' });
    const done = await finished('lost');
    assert.equal(done.counts.succeeded, 2, JSON.stringify(done));
    const made = mergeRequestsOf('lost-0');
    assert.equal(made.length, 1, `one merge request on acme/lost-0: ${JSON.stringify(made)}`);
    const mr = made[0]!;
    assert.deepEqual([mr.sourceBranch, mr.targetBranch, mr.state], [c.branch, 'main', 'opened']);
    const item = (await targets('lost')).find((x) => x.repo === repos[0])!;
    // Attempt 1 pushed, made the merge request and never heard so; attempt 2 took both as they were.
    assert.equal(item.attempts, 2, JSON.stringify(item));
    assert.equal(item.reason, null, 'succeeded: the note of the failed attempt is gone');
    assert.deepEqual([item.changeRequest.kind, item.changeRequest.number, item.changeRequest.url, item.changeRequest.draft], ['merge_request', mr.iid, mr.webUrl, false]);
    const row = await t.berth.database.db.selectFrom('campaign_targets').innerJoin('tasks', 'tasks.id', 'campaign_targets.task_id').select(['tasks.change_request', 'tasks.head_sha']).where('campaign_targets.campaign_id', '=', c.id).where('campaign_targets.repo', '=', repos[0]!).executeTakeFirstOrThrow();
    const recorded = typeof row.change_request === 'string' ? JSON.parse(row.change_request) : row.change_request;
    assert.deepEqual([recorded?.kind, recorded?.number], ['merge_request', mr.iid], 'the retry task records the same merge request');
    const bare = join(gitlab.root, 'acme/lost-0.git');
    assert.equal(Number((await runGit(['--git-dir', bare, 'rev-list', '--count', `main..${c.branch}`], { cwd: gitlab.root })).trim()), 1, 'one campaign commit');
    assert.equal(await refSha(bare, `refs/heads/${c.branch}`), row.head_sha, 'the commit the first attempt pushed');
    const asked = gitlab.apiRequests.filter((r) => r.path === 'projects/acme/lost-0/merge_requests');
    assert.equal(asked.filter((r) => r.method === 'POST').length, 2, 'asked twice: the second was told it exists');
    assert.equal(asked.filter((r) => r.method === 'GET').length, 1, 'and then looked it up');
    // The other project went as usual: one merge request, opened once, never looked up.
    assert.equal(mergeRequestsOf('lost-1').length, 1);
    assert.equal(gitlab.apiRequests.filter((r) => r.path === 'projects/acme/lost-1/merge_requests' && r.method === 'GET').length, 0);
  });
});
