// A review on the agent's pull request continues its task: a new task on the same branch that
// pushes new commits to it (a fast-forward, or its change on top of what someone pushed
// meanwhile), opens no second pull request and keeps the first one's. And the pull request
// of a task started from an issue closes that issue (`Fixes #N`).
// sandbox: none (test/fakes/fake-runner.ts: the command agent runs on the host)
import assert from 'node:assert/strict';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ProjectRow } from '../src/server/db/index.ts';
import { issueReference } from '../src/server/tasks/change-text.ts';
import type { TriggerContinue } from '../src/server/triggers/tasks.ts';
import { pushCommit, refSha, runGit } from './fakes/git-server.ts';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startFakeGitLab } from './fakes/gitlab.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const FORGE_TOKEN = 'ghp_continueTokenNeverShown000000000';
const ISSUE = 7;

let t: TestBerth;
let github: FakeGitHub;
let bare: string;
/** Where the agent and the test meet: the agent waits here for the test to push (the runner is the host). */
let meet: string;
let project: ProjectRow;

/**
 * The agent: appends the last line of its goal (the newest instruction) to notes.txt. "change
 * nothing" changes nothing; "after a push" waits until the test has pushed to the branch.
 */
const AGENT = (dir: string) => `
last=$(printf '%s\\n' "$BERTH_GOAL" | tail -n 1)
case "$last" in *"change nothing"*) exit 0;; esac
case "$last" in *"after a push"*) touch '${dir}/waiting'; while [ ! -f '${dir}/pushed' ]; do sleep 0.1; done; rm -f '${dir}/pushed';; esac
printf '%s\\n' "$last" >> notes.txt
`;

before(async () => {
  meet = await mkdtemp(join(tmpdir(), 'berth-continue-'));
  github = await startFakeGitHub({ tokens: [FORGE_TOKEN] });
  bare = (await github.createRepo('acme/widgets', { 'README.md': '# widgets\n' })).path;
  t = await startTestBerth({ fake: true });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITHUB_TOKEN', { value: FORGE_TOKEN })).status, 200);
  const p = await t.api('POST', '/api/orgs/default/projects', {
    name: 'widgets',
    repoUrl: github.repoUrl('acme/widgets'),
    forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' },
    agent: { kind: 'command', command: AGENT(meet) },
  });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  project = await t.berth.database.db.selectFrom('projects').selectAll().where('name', '=', 'widgets').executeTakeFirstOrThrow();
});

after(async () => {
  await t?.destroy();
  await github?.close();
  await rm(meet, { recursive: true, force: true });
});

const triggered = () => t.berth.triggers.deps.triggered;

async function ended(id: string) {
  return waitFor(`task ${id} to end`, async () => {
    const body = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  });
}

async function logLines(id: string): Promise<string[]> {
  const { items } = (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body as { items: { data: { type: string; message?: string } }[] };
  return items.filter((e) => e.data.type === 'log').map((e) => e.data.message!);
}

const fileAt = (ref: string, path: string) => runGit(['show', `${ref}:${path}`], { cwd: bare });
const parentOf = async (sha: string) => (await runGit(['rev-parse', `${sha}^`], { cwd: bare })).trim();

/** A review on the pull request, as the GitHub source hands it over. */
const review = (previous: string, instruction: string, key: string): TriggerContinue => ({
  previous,
  instruction,
  trigger: 'github',
  triggeredBy: 'github:reviewer',
  key,
  actor: 'github:reviewer',
  source: { deliveryId: key, pullRequest: 1 },
});

describe('continuing a task from its pull request', () => {
  let first: any;

  test('a task started from an issue opens a pull request that says Fixes #N', async () => {
    const started = await triggered().start({
      project,
      goal: 'Start a notes file',
      trigger: 'github',
      triggeredBy: 'github:octocat',
      key: 'github:delivery-issue',
      actor: 'github:octocat',
      replyTo: { kind: 'github', issue: ISSUE, pullRequest: false },
      source: { deliveryId: 'delivery-issue', issue: ISSUE },
    });
    first = await ended(started.id);
    assert.equal(first.state, 'succeeded', first.stateReason);
    assert.equal(github.pulls.length, 1);
    const pr = github.pulls[0]!;
    assert.equal(pr.head, first.branch);
    assert.match(pr.body ?? '', new RegExp(`^Fixes #${ISSUE}$`, 'm'));
    assert.deepEqual(first.changeRequest, { kind: 'pull_request', url: pr.htmlUrl, number: pr.number, draft: false });
    assert.equal(await fileAt(first.branch, 'notes.txt'), 'Start a notes file\n');
  });

  test('the pull request is found by its number, and a review continues it on the same branch', async () => {
    const found = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    assert.equal(found?.id, first.id);
    assert.equal(await triggered().taskForChangeRequest([project.id], 1, 'merge_request'), null);
    assert.equal(await triggered().taskForChangeRequest([project.id], 2, 'pull_request'), null);
    assert.equal(await triggered().taskForChangeRequest([], 1, 'pull_request'), null);

    const started = await triggered().continueTask(review(first.id, 'Also say hello', 'github:delivery-review-1'));
    assert.equal(started.continues, first.id);
    assert.equal(started.trigger, 'github');
    assert.equal(started.triggeredBy, 'github:reviewer');
    assert.match(started.goal, /^Start a notes file\n\nFollow-up \(review on the pull request\): Also say hello$/);
    const second = await ended(started.id);
    assert.equal(second.state, 'succeeded', second.stateReason);

    // The same branch, one commit more, on top of the first task's; no second pull request.
    assert.equal(second.branch, first.branch);
    const head = await refSha(bare, `refs/heads/${first.branch}`);
    assert.notEqual(head, null);
    const firstHead = await refSha(bare, `refs/heads/${first.branch}~1`);
    assert.equal(await parentOf(head!), firstHead);
    assert.equal(github.pulls.length, 1, 'no second pull request');
    assert.equal(github.pulls[0]!.headSha, firstHead, 'the pull request was opened on the first commit');
    assert.equal(await fileAt(first.branch, 'notes.txt'), 'Start a notes file\nFollow-up (review on the pull request): Also say hello\n');
    assert.match(await runGit(['log', '-1', '--format=%s', head!], { cwd: bare }), /^Also say hello/);
    assert.deepEqual(second.changeRequest, first.changeRequest, 'task show points at the same pull request');
    assert.ok((await logLines(second.id)).some((l) => /updated the existing pull request #1/.test(l)));

    // The reply goes where the first one's did (the issue comment), and the audit says what was continued.
    const row = await t.berth.database.db.selectFrom('tasks').select('reply_to').where('id', '=', second.id).executeTakeFirstOrThrow();
    assert.deepEqual(row.reply_to, { kind: 'github', issue: ISSUE, pullRequest: false });
    const audit = (await t.api('GET', '/api/orgs/default/audit?action=task.trigger')).body.items.find((e: any) => e.target === second.id);
    assert.equal(audit?.details.continues, first.id);

    // The newest task of the chain is what a next review continues.
    assert.equal((await triggered().taskForChangeRequest([project.id], 1, 'pull_request'))?.id, second.id);
  });

  test('the same delivery twice is one task; a review that needs no change adds no commit', async () => {
    const newest = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    const started = await triggered().continueTask(review(newest!.id, 'change nothing, please', 'github:delivery-review-2'));
    // A redelivery of the same review: the task it made, even though that task is at work now.
    const again = await triggered().continueTask(review(newest!.id, 'change nothing, please', 'github:delivery-review-2'));
    assert.equal(again.id, started.id);
    const atWork = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    assert.equal(atWork?.id, started.id);
    const keyed = await t.berth.database.db.selectFrom('tasks').select('id').where('trigger_key', '=', 'github:delivery-review-2').execute();
    assert.deepEqual(keyed.map((r) => r.id), [started.id]);

    // Nothing to add: succeeded, no new commits, the branch as it was.
    const before = await refSha(bare, `refs/heads/${started.branch ?? newest!.branch}`);
    const done = await ended(started.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.match(done.stateReason, /no new commits/);
    assert.equal(await refSha(bare, `refs/heads/${done.branch}`), before);
    assert.deepEqual(done.changeRequest, first.changeRequest);
  });

  test('a retry of a continuation continues the same branch and pull request, and tells the same issue', async () => {
    const newest = (await triggered().taskForChangeRequest([project.id], 1, 'pull_request'))!;
    const retried = await t.api('POST', `/api/orgs/default/tasks/${newest.id}/retry`);
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    assert.equal(retried.body.continues, first.id);
    assert.equal(retried.body.trigger, 'github');
    assert.equal(retried.body.triggeredBy, 'github:reviewer');
    const row = await t.berth.database.db.selectFrom('tasks').select(['reply_to', 'trigger_key']).where('id', '=', retried.body.id).executeTakeFirstOrThrow();
    assert.deepEqual(row.reply_to, { kind: 'github', issue: ISSUE, pullRequest: false });
    assert.equal(row.trigger_key, null, 'the key stays the first task\'s');
    const done = await ended(retried.body.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(done.branch, first.branch);
    assert.deepEqual(done.changeRequest, first.changeRequest);
    assert.equal(github.pulls.length, 1, 'no second pull request');
  });

  test('a running task is refused, by the words a comment can carry', async () => {
    // Held at work until the test lets it go, to continue it meanwhile.
    const newest = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    const held = await triggered().continueTask(review(newest!.id, 'Wait for the ok after a push', 'github:delivery-review-held'));
    await waitFor('the agent to wait', async () => access(join(meet, 'waiting')).then(() => true, () => false));
    const running = (await t.api('GET', `/api/orgs/default/tasks/${held.id}`)).body;
    assert.equal(running.state, 'running');
    await assert.rejects(triggered().continueTask(review(held.id, 'And more', 'github:delivery-review-4')), (e: Error & { kind?: string }) => {
      assert.equal(e.kind, 'conflict');
      assert.equal(e.message, `Berth is still working on this (task ${held.id} is running): wait for it to finish, then ask again. Its progress: \`berth task logs ${held.id} -f\``);
      return true;
    });
    await rm(join(meet, 'waiting'));
    await writeFile(join(meet, 'pushed'), '');
    const done = await ended(held.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(await t.berth.database.db.selectFrom('tasks').select('id').where('trigger_key', '=', 'github:delivery-review-4').executeTakeFirst(), undefined);
  });

  test('someone pushed to the branch while the task ran: its change goes on top of theirs', async () => {
    const newest = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    const started = await triggered().continueTask(review(newest!.id, 'Note the docs after a push', 'github:delivery-review-5'));
    await waitFor('the agent to wait', async () => access(join(meet, 'waiting')).then(() => true, () => false));
    const theirs = await pushCommit({ bare, branch: first.branch, files: { 'docs.md': 'by a person\n' }, message: 'A person adds docs' });
    await rm(join(meet, 'waiting'));
    await writeFile(join(meet, 'pushed'), '');
    const done = await ended(started.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    const head = await refSha(bare, `refs/heads/${first.branch}`);
    assert.equal(await parentOf(head!), theirs, "on top of the person's commit, nothing of theirs overwritten");
    assert.equal(await fileAt(first.branch, 'docs.md'), 'by a person\n');
    assert.match(await fileAt(first.branch, 'notes.txt'), /Note the docs after a push\n$/);
    assert.ok((await logLines(done.id)).some((l) => /moved on the server while the task ran/.test(l)));
    assert.equal(github.pulls.length, 1);
  });

  test('a push that conflicts with the change: nothing is pushed, and the task says why', async () => {
    const newest = await triggered().taskForChangeRequest([project.id], 1, 'pull_request');
    const started = await triggered().continueTask(review(newest!.id, 'One more line after a push', 'github:delivery-review-6'));
    await waitFor('the agent to wait', async () => access(join(meet, 'waiting')).then(() => true, () => false));
    const theirs = await pushCommit({ bare, branch: first.branch, files: { 'notes.txt': 'rewritten by a person\n' }, message: 'A person rewrites the notes' });
    await rm(join(meet, 'waiting'));
    await writeFile(join(meet, 'pushed'), '');
    const done = await ended(started.id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /someone pushed to berth\/\S+ while the task ran, and this task's change does not apply on top of their commits: nothing was pushed/);
    assert.equal(await refSha(bare, `refs/heads/${first.branch}`), theirs);
    assert.deepEqual(done.changeRequest, first.changeRequest);
  });

  test('what cannot be continued is refused clearly', async () => {
    await assert.rejects(triggered().continueTask(review('task_nosuchtask000000', 'x', 'github:delivery-review-7')), /no task 'task_nosuchtask000000' to continue/);
    const none = await triggered().start({ project, goal: 'change nothing', trigger: 'github', triggeredBy: 'github:octocat', key: 'github:delivery-empty', actor: 'github:octocat', source: {} });
    const done = await ended(none.id);
    assert.equal(done.changeRequest, null);
    await assert.rejects(triggered().continueTask(review(none.id, 'x', 'github:delivery-review-8')), /left no pull request or branch to add commits to: start a new task instead/);
  });
});

test('a task started from a GitLab issue opens a merge request that says Closes #N', async () => {
  const gitlab = await startFakeGitLab({ tokens: [FORGE_TOKEN] });
  try {
    await gitlab.createRepo('acme/tools', { 'README.md': '# tools\n' });
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITLAB_TOKEN', { value: FORGE_TOKEN })).status, 200);
    const p = await t.api('POST', '/api/orgs/default/projects', { name: 'tools', repoUrl: gitlab.repoUrl('acme/tools'), forge: { kind: 'gitlab', apiUrl: gitlab.apiUrl, tokenSecret: 'GITLAB_TOKEN' }, agent: { kind: 'command', command: AGENT(meet) } });
    assert.equal(p.status, 201, JSON.stringify(p.body));
    const tools = await t.berth.database.db.selectFrom('projects').selectAll().where('name', '=', 'tools').executeTakeFirstOrThrow();
    const started = await triggered().start({ project: tools, goal: 'Start the tools notes', trigger: 'gitlab', triggeredBy: 'gitlab:ada', key: 'gitlab:event-1', actor: 'gitlab:ada', replyTo: { kind: 'gitlab', issueIid: 4 }, source: {} });
    const done = await ended(started.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(gitlab.mergeRequests.length, 1);
    assert.match(gitlab.mergeRequests[0]!.description ?? '', /^Closes #4$/m);
    assert.doesNotMatch(gitlab.mergeRequests[0]!.description ?? '', /Fixes #/);
  } finally {
    await gitlab.close();
  }
});

test('issue references: Fixes on GitHub issues, Closes on GitLab issues, nothing else', () => {
  assert.equal(issueReference({ kind: 'github', issue: 12, pullRequest: false }), 'Fixes #12');
  assert.equal(issueReference({ kind: 'github', issue: 12, pullRequest: true }), null, 'a pull request closes no issue');
  assert.equal(issueReference({ kind: 'github', issue: '12', pullRequest: false }), null);
  assert.equal(issueReference({ kind: 'gitlab', issueIid: 3 }), 'Closes #3');
  assert.equal(issueReference({ kind: 'gitlab', mergeRequestIid: 3 }), null);
  assert.equal(issueReference({ kind: 'slack', channel: 'C1', ts: '1.2' }), null);
  assert.equal(issueReference(null), null);
});
