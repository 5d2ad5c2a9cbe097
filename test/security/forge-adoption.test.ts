// sandbox: none
// A merge request someone else opened is never adopted as Berth's. A retry whose earlier
// attempt pushed asks the forge for the open change request from its branch; GitLab's list
// also holds forks' merge requests from a branch of the same name (newest first), so whoever
// forks the repository could have had theirs taken, reported and approved as the campaign's.
// The rule: only the project's own branch into the base. GitHub holds it by asking with
// head=OWNER:BRANCH (a fork's pull request has another owner); GitLab by checking each
// entry's source project and branches. Against the fake GitLab's REST API v4.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { forgeFor } from '../../src/forges/index.ts';
import { startFakeGitLab, type FakeGitLab } from '../fakes/gitlab.ts';

const TOKEN = 'glpat-adoption_fake_token_0123456789';
let gitlab: FakeGitLab;

before(async () => {
  gitlab = await startFakeGitLab({ tokens: [TOKEN] });
});

after(async () => {
  await gitlab?.close();
});

describe("the GitLab forge's findChangeRequest", () => {
  test('finds the open merge request from this project’s own branch: not a closed one, not a fork’s of the same branch name, not another target', async () => {
    await gitlab.createRepo('acme/find', { 'a.txt': 'a\n' });
    const branch = 'berth/campaign/find me'; // a slash and a space: both must reach GitLab encoded
    const forge = forgeFor(gitlab.repoUrl('acme/find'), { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' }, { token: TOKEN });
    assert.equal(await forge.findChangeRequest!({ head: branch, base: 'main' }), null, 'none yet');

    const own = gitlab.addMergeRequest('acme/find', { sourceBranch: branch, title: 'Draft: bump a.txt', author: gitlab.rootUser });
    // Newer ones come first in GitLab's list: each of these would be the answer if it were taken unchecked.
    const closed = gitlab.addMergeRequest('acme/find', { sourceBranch: branch, title: 'an older try', author: gitlab.rootUser });
    gitlab.updateMergeRequest('acme/find', closed.iid, { state: 'closed' });
    gitlab.addMergeRequest('acme/find', { sourceBranch: branch, title: "someone's fork", author: gitlab.rootUser, fromFork: true });
    gitlab.addMergeRequest('acme/find', { sourceBranch: branch, targetBranch: 'release', title: 'into another branch', author: gitlab.rootUser });

    assert.deepEqual(await forge.findChangeRequest!({ head: branch, base: 'main' }), { kind: 'merge_request', url: own.webUrl, number: own.iid, draft: true });
    assert.equal(await forge.findChangeRequest!({ head: 'berth/campaign/find', base: 'main' }), null, 'a branch whose name is a prefix is another branch');

    gitlab.updateMergeRequest('acme/find', own.iid, { state: 'merged' });
    assert.equal(await forge.findChangeRequest!({ head: branch, base: 'main' }), null, 'merged: no open one from this project is left');
  });

  test('a token GitLab refuses is a clear error that names the secret, never the token', async () => {
    const forge = forgeFor(gitlab.repoUrl('acme/find'), { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' }, { token: 'glpat-wrong_token_value' });
    await assert.rejects(forge.findChangeRequest!({ head: 'x', base: 'main' }), (e: Error) => {
      assert.match(e.message, /GitLab refused the token .*secret "GITLAB_TOKEN"/);
      assert.doesNotMatch(e.message, /glpat-wrong/);
      return true;
    });
  });
});
