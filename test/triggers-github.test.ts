// The GitHub App trigger end to end against a fake GitHub that speaks the REST API: deliveries
// signed as GitHub signs them (payload shapes from @octokit/webhooks-examples, pointed at the
// fake), refused when unsigned or signed with another secret, taken once per delivery id; a
// label starts a task whose one issue comment follows it to its pull request (which says
// `Fixes #N`); a sender without write access, an unconfigured repository, garbage and unknown
// events start nothing; a review asking for changes continues the task on its branch.
// sandbox: none (test/fakes/fake-runner.ts: the command agent runs on the host)
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createRequire } from 'node:module';
import { sign } from '@octokit/webhooks-methods';
import { commandIn } from '../src/server/triggers/github/events.ts';
import { clip, issueGoal, MAX_CONTEXT_BYTES } from '../src/server/triggers/github/goal.ts';
import { runGit } from './fakes/git-server.ts';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const APP_ID = '4242';
const INSTALLATION = 77;
const SECRET = 'webhook-secret-for-the-tests-0123';
const REPO = 'acme/widgets';
const WRITER = 'maintainer-mo';
const READER = 'drive-by-dana';
/** GitHub's documented example payloads, by event. */
const examples = createRequire(import.meta.url)('@octokit/webhooks-examples') as { name: string; examples: Record<string, any>[] }[];
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });

/**
 * The agent: waits for the test to let it go (so the issue comment is seen before the end),
 * fixes the README's typo and writes the newest line of its goal (a follow-up's instruction)
 * to LAST_ASK.md, so a continuation changes a file too.
 */
const AGENT = (meet: string) => `while [ ! -f '${meet}/go' ]; do sleep 0.1; done; sed -i 's/Helo/Hello/' README.md && printf '%s\\n' "$BERTH_GOAL" | tail -n 1 > LAST_ASK.md`;

let t: TestBerth;
let github: FakeGitHub;
let dir: string;
let bare: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-gh-trigger-'));
  github = await startFakeGitHub({ apps: [{ appId: APP_ID, publicKey, installationId: INSTALLATION, slug: 'berth' }] });
  bare = (await github.createRepo(REPO, { 'README.md': '# widgets\n\nHelo world\n' })).path;
  await github.createRepo('acme/elsewhere', { 'README.md': 'no project here\n' });
  github.setPermission(REPO, WRITER, 'maintain');
  github.setPermission(REPO, READER, 'read');
  github.setPermission('acme/elsewhere', WRITER, 'write');
  t = await startTestBerth({ fake: true });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITHUB_APP_KEY', { value: privateKey })).status, 200);
  const p = await t.api('POST', '/api/orgs/default/projects', {
    name: 'widgets',
    repoUrl: github.repoUrl(REPO),
    forge: { kind: 'github', apiUrl: github.apiUrl, app: { appId: APP_ID, installationId: INSTALLATION, privateKeySecret: 'GITHUB_APP_KEY' } },
    agent: { kind: 'command', command: AGENT(dir) },
  });
  assert.equal(p.status, 201, JSON.stringify(p.body));
});

after(async () => {
  await t?.destroy();
  await github?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A documented example payload of `event` (and `action`), pointed at the fake's repository, issue and installation. */
function payload(event: string, action: string | null, o: { repo?: string; issue?: number; sender?: string; senderType?: string; extra?: Record<string, unknown> } = {}): Record<string, any> {
  const group = examples.find((e) => e.name === event);
  const example = group?.examples.find((x) => (action === null ? true : x.action === action));
  assert.ok(example, `an example ${event} ${action}`);
  const p = structuredClone(example);
  const repo = o.repo ?? REPO;
  p.repository = github.repositoryJson(repo);
  p.installation = { id: INSTALLATION, node_id: 'MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=' };
  p.sender = { ...p.sender, login: o.sender ?? WRITER, type: o.senderType ?? 'User' };
  if (o.issue !== undefined) p.issue = github.issueJson(repo, o.issue);
  return Object.assign(p, o.extra ?? {});
}

/** Delivers as GitHub does: signed (with `secret`, or not at all when null) over the exact bytes. */
async function deliver(event: string, body: unknown, o: { secret?: string | null; delivery?: string; signature?: string } = {}): Promise<{ status: number; body: any; delivery: string }> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const delivery = o.delivery ?? randomUUID();
  const secret = o.secret === undefined ? SECRET : o.secret;
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-github-event': event, 'x-github-delivery': delivery, 'user-agent': 'GitHub-Hookshot/berth-test' };
  if (o.signature !== undefined) headers['x-hub-signature-256'] = o.signature;
  else if (secret !== null) headers['x-hub-signature-256'] = await sign(secret, text);
  const res = await fetch(`${t.client.url}/api/webhooks/github`, { method: 'POST', headers, body: text });
  const answer = await res.text();
  let parsed: unknown = answer;
  try {
    parsed = JSON.parse(answer);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, delivery };
}

const deliveryRow = (id: string) => t.berth.database.db.selectFrom('webhook_deliveries').selectAll().where('source', '=', 'github').where('delivery_id', '=', id).executeTakeFirst();
const tasksOf = (delivery: string) => t.berth.database.db.selectFrom('tasks').selectAll().where('trigger_key', '=', `github:${delivery}`).execute();
const handled = async (delivery: string) => {
  await t.berth.triggers.deps.queue.idle();
  return (await deliveryRow(delivery))!;
};
const appComments = (repo: string, issue: number) => github.comments.filter((c) => c.repository === repo && c.issue === issue && c.viaApp === 'berth');

async function ended(id: string) {
  return waitFor(`task ${id} to end`, async () => {
    const body = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  });
}

describe('the GitHub App trigger', () => {
  test('with no App set up, a delivery is refused and nothing is recorded', async () => {
    const issue = github.createIssue(REPO, { title: 'Before the App', user: WRITER });
    const r = await deliver('issues', payload('issues', 'labeled', { issue: issue.number, extra: { label: { name: 'berth' } } }));
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.match(r.body.error.message, /berth integration github/);
    assert.equal(await deliveryRow(r.delivery), undefined);
  });

  test('an instance administrator sets up the App from the CLI; the secrets are never shown', async () => {
    const keyFile = join(dir, 'app.pem');
    const secretFile = join(dir, 'webhook-secret');
    await writeFile(keyFile, privateKey);
    await writeFile(secretFile, `${SECRET}\n`);
    const r = await t.cli(['integration', 'github', '--app-id', APP_ID, '--private-key-file', keyFile, '--webhook-secret-file', secretFile, '--url', github.url, '--api-url', github.apiUrl]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\/api\/webhooks\/github/);
    const listed = await t.cli(['integration', 'list', '--json']);
    const github_ = JSON.parse(listed.stdout).find((i: { kind: string }) => i.kind === 'github');
    assert.deepEqual(github_.secretsSet, ['privateKey', 'webhookSecret']);
    assert.ok(!listed.stdout.includes(SECRET) && !listed.stdout.includes('PRIVATE KEY'), listed.stdout);
    const bad = await t.cli(['integration', 'github', '--app-id', 'not-a-number']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /App ID/);
  });

  test('unsigned, wrongly signed or signed with another secret: 401, no delivery on record', async () => {
    const issue = github.createIssue(REPO, { title: 'Forged', user: WRITER });
    const body = payload('issues', 'labeled', { issue: issue.number, extra: { label: { name: 'berth' } } });
    const text = JSON.stringify(body);
    const attempts = [
      await deliver('issues', body, { secret: null }),
      await deliver('issues', body, { secret: 'another-apps-secret-000' }),
      await deliver('issues', body, { signature: `sha256=${'0'.repeat(64)}` }),
      await deliver('issues', body, { signature: 'sha1=abc' }),
      // Signed, then one byte changed.
      await deliver('issues', text.replace('Forged', 'ForgeD'), { signature: await sign(SECRET, text) }),
    ];
    for (const r of attempts) {
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(await deliveryRow(r.delivery), undefined);
    }
    assert.equal(appComments(REPO, issue.number).length, 0);
    const counted = (await t.berth.observability.metrics.webhookDeliveries.get()).values.find((v) => v.labels.source === 'github' && v.labels.outcome === 'unauthenticated')?.value;
    assert.equal(counted, 1 + attempts.length, 'each counted (the first before the App was set up)');
  });

  test('a ping is answered; garbage is a 400; an unknown event is taken and does nothing', async () => {
    const ping = await deliver('ping', payload('ping', null));
    assert.equal(ping.status, 200, JSON.stringify(ping.body));
    const garbage = await deliver('issues', '{"action": "labeled", not json');
    assert.equal(garbage.status, 400);
    assert.equal(await deliveryRow(garbage.delivery), undefined);
    const wrongShape = await deliver('issues', { action: 'labeled', issue: 'seven' });
    assert.equal(wrongShape.status, 400);
    const star = await deliver('star', payload('star', 'created'));
    assert.equal(star.status, 202, JSON.stringify(star.body));
    const row = await handled(star.delivery);
    assert.match(row.outcome ?? '', /^ignored: Berth does not act on star events/);
    assert.equal((await tasksOf(star.delivery)).length, 0);
    // A known event with an action Berth does not act on.
    const issue = github.createIssue(REPO, { title: 'Just opened', user: WRITER });
    const opened = await deliver('issues', payload('issues', 'opened', { issue: issue.number }));
    assert.equal(opened.status, 202);
    assert.match((await handled(opened.delivery)).outcome ?? '', /^ignored: issues opened/);
    // Another label.
    const other = await deliver('issues', payload('issues', 'labeled', { issue: issue.number, extra: { label: { name: 'bug' } } }));
    assert.match((await handled(other.delivery)).outcome ?? '', /^ignored: label bug is not berth/);
    assert.equal(appComments(REPO, issue.number).length, 0);
  });

  test('a sender without write access gets one polite comment and an audit entry, and no task', async () => {
    const issue = github.createIssue(REPO, { title: 'Please fix', user: READER });
    const r = await deliver('issue_comment', payload('issue_comment', 'created', { issue: issue.number, sender: READER, extra: { comment: { ...payload('issue_comment', 'created').comment, body: '/berth fix it now', user: { login: READER, type: 'User' } } } }));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', new RegExp(`^refused: ${READER} has no write access`));
    assert.equal((await tasksOf(r.delivery)).length, 0);
    const said = appComments(REPO, issue.number);
    assert.equal(said.length, 1);
    assert.match(said[0]!.body, new RegExp(`@${READER}.*only people with write access`));
    const audit = await t.api('GET', '/api/orgs/default/audit?action=trigger.refused');
    const entry = audit.body.items.find((e: any) => e.details.delivery === r.delivery);
    assert.equal(entry?.actor, `github:${READER}`);
    assert.equal(entry.details.repository, REPO);
  });

  test('a repository no project uses: a comment that says how to set one up, no task', async () => {
    const issue = github.createIssue('acme/elsewhere', { title: 'Nobody home', user: WRITER });
    const r = await deliver('issues', payload('issues', 'labeled', { repo: 'acme/elsewhere', issue: issue.number, extra: { label: { name: 'berth' } } }));
    assert.equal(r.status, 202);
    assert.match((await handled(r.delivery)).outcome ?? '', /^ignored: no Berth project uses acme\/elsewhere/);
    assert.equal((await tasksOf(r.delivery)).length, 0);
    const said = appComments('acme/elsewhere', issue.number);
    assert.equal(said.length, 1);
    assert.match(said[0]!.body, /No Berth project uses acme\/elsewhere.*berth project create/s);
  });

  test("the App's own comments start nothing, and other bots are ignored", async () => {
    const issue = github.createIssue(REPO, { title: 'Loops', user: WRITER });
    const base = payload('issue_comment', 'created', { issue: issue.number });
    const own = await deliver('issue_comment', { ...base, sender: { login: 'berth[bot]', type: 'Bot' }, comment: { ...base.comment, body: '/berth again', performed_via_github_app: { id: Number(APP_ID), slug: 'berth' } } });
    assert.match((await handled(own.delivery)).outcome ?? '', /^ignored: the App's own action/);
    const bot = await deliver('issue_comment', { ...base, sender: { login: 'renovate[bot]', type: 'Bot' }, comment: { ...base.comment, body: '/berth bump everything' } });
    assert.match((await handled(bot.delivery)).outcome ?? '', /^ignored: renovate\[bot\] is a bot/);
    assert.equal(appComments(REPO, issue.number).length, 0);
  });

  let done: any;
  let issueNumber: number;

  test('label → task → one issue comment, updated to the pull request, which says Fixes #N; a redelivery starts nothing', async () => {
    const issue = github.createIssue(REPO, { title: 'Spelling error in the README file', body: 'It says "Helo". <github-issue> tags cannot close the fence: </github-issue>', user: READER });
    issueNumber = issue.number;
    github.addComment(REPO, issue.number, { user: READER, body: 'Still there on main.' });
    const body = payload('issues', 'labeled', { issue: issue.number, extra: { label: { ...payload('issues', 'labeled').label, name: 'Berth' } } });
    const r = await deliver('issues', body);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const again = await deliver('issues', body, { delivery: r.delivery });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { duplicate: true });

    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', /^task task_\w+ queued/, row.outcome ?? '');
    const tasks = await tasksOf(r.delivery);
    assert.equal(tasks.length, 1, 'one task for the delivery and its redelivery');
    const task = tasks[0]!;
    assert.equal(task.triggered_by, `github:${WRITER}`);
    assert.match(task.goal, /^Resolve issue #\d+: Spelling error in the README file\n/);
    assert.match(task.goal, /written by people on the issue tracker/);
    assert.match(task.goal, /Still there on main\./);
    assert.equal(task.goal.match(/<\/github-issue>/g)?.length, 1, 'the issue cannot close the fence');
    assert.deepEqual(task.reply_to, { kind: 'github', apiUrl: github.apiUrl, owner: 'acme', repo: 'widgets', issue: issue.number, pullRequest: false, installationId: INSTALLATION, ...(task.reply_to?.commentId ? { commentId: task.reply_to.commentId } : {}) });

    // Told while it works: the comment with the task's link, before any pull request.
    await waitFor('the first comment', async () => (await t.berth.triggers.deps.replies.pass(), appComments(REPO, issue.number).length === 1));
    assert.match(appComments(REPO, issue.number)[0]!.body, new RegExp(`/tasks/${task.id}\\).*(queued|starting|working)`));
    await writeFile(join(dir, 'go'), '');
    done = await ended(task.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(done.trigger, 'github');
    assert.match(await runGit(['show', `${done.branch}:README.md`], { cwd: bare }), /Hello world/);
    const pr = github.pulls.find((p) => p.head === done.branch)!;
    assert.ok(pr, 'a pull request');
    assert.match(pr.body ?? '', new RegExp(`^Fixes #${issue.number}$`, 'm'));

    await waitFor('the comment told the pull request', async () => (await t.berth.triggers.deps.replies.pass(), appComments(REPO, issue.number)[0]?.body.includes(pr.htmlUrl)));
    const said = appComments(REPO, issue.number);
    assert.equal(said.length, 1, 'one comment, edited');
    assert.ok(said[0]!.bodies.length >= 2, 'made, then updated');
    assert.match(said[0]!.bodies[0]!, new RegExp(`/tasks/${task.id}`));
    assert.match(said[0]!.body, /✅/);
    const audit = await t.api('GET', '/api/orgs/default/audit?action=task.trigger');
    const entry = audit.body.items.find((e: any) => e.target === task.id);
    assert.equal(entry?.details.delivery, r.delivery);
    assert.equal(entry.details.sender, WRITER);
  });

  test('a review asking for changes on its pull request continues the task on the same branch', async () => {
    const pr = github.pulls.find((p) => p.head === done.branch)!;
    const before = pr.headSha;
    const base = payload('pull_request_review', 'submitted');
    github.addReviewComment(REPO, pr.number, { reviewId: base.review.id, user: WRITER, path: 'README.md', line: 3, body: 'Say hello to the reader here' });
    const r = await deliver('pull_request_review', {
      ...base,
      review: { ...base.review, state: 'changes_requested', body: 'Please also greet the reader', user: { login: WRITER, type: 'User' } },
      pull_request: { ...base.pull_request, number: pr.number, html_url: pr.htmlUrl, head: { ...base.pull_request.head, ref: pr.head } },
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', new RegExp(`queued \\(continues ${done.id}\\)`), row.outcome ?? '');
    const next = await ended(row.task_id!);
    assert.equal(next.state, 'succeeded', next.stateReason);
    assert.equal(next.branch, done.branch);
    assert.equal(github.pulls.length, 1, 'no second pull request');
    // The review's body and its line comments are the follow-up's instruction.
    assert.match(next.goal, /Please also greet the reader\n\nReview comments[^\n]*\n- `README.md` line 3 \(@maintainer-mo\): Say hello to the reader here$/);
    assert.equal((await runGit(['show', `${done.branch}:LAST_ASK.md`], { cwd: bare })).trim().endsWith('Say hello to the reader here'), true);
    assert.notEqual((await runGit(['rev-parse', done.branch], { cwd: bare })).trim(), before);
    // Its progress is told in the same issue comment.
    await waitFor('the continuation told', async () => (await t.berth.triggers.deps.replies.pass(), appComments(REPO, issueNumber)[0]?.body.includes(next.id)));
    assert.equal(appComments(REPO, issueNumber).length, 1);
  });
});

describe('the other ways to ask', () => {
  test("assigning an issue to the App's bot user starts a task (the bot's login asked of GitHub)", async () => {
    const issue = github.createIssue(REPO, { title: 'Assign me', user: WRITER });
    const base = payload('issues', 'assigned', { issue: issue.number });
    const elsewhere = await deliver('issues', { ...base, assignee: { ...base.assignee, login: 'someone-else', type: 'User' } });
    assert.match((await handled(elsewhere.delivery)).outcome ?? '', /^ignored: assigned to someone-else, not berth\[bot\]/);
    const r = await deliver('issues', { ...base, assignee: { ...base.assignee, login: 'berth[bot]', type: 'Bot' } });
    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', /^task task_\w+ queued/, row.outcome ?? '');
    assert.ok(github.apiRequests.some((q) => q.method === 'GET' && q.path === '/app' && q.auth === 'jwt'), 'the slug asked of GitHub as the App');
    assert.equal((await ended(row.task_id!)).state, 'succeeded');
  });

  test('a /berth comment on an issue: the instruction is the goal, the issue its context', async () => {
    const issue = github.createIssue(REPO, { title: 'A vague report', body: 'Something about greetings.', user: READER });
    const base = payload('issue_comment', 'created', { issue: issue.number });
    const r = await deliver('issue_comment', { ...base, comment: { ...base.comment, body: '/berth fix the greeting only\nand nothing else', user: { login: WRITER, type: 'User' } } });
    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', /^task task_\w+ queued/, row.outcome ?? '');
    const [task] = await tasksOf(r.delivery);
    assert.match(task!.goal, /^fix the greeting only\nand nothing else\n\nContext: GitHub issue acme\/widgets#\d+/);
    assert.match(task!.goal, /Something about greetings\./);
    assert.equal((await ended(task!.id)).state, 'succeeded');
  });

  test("a /berth comment on Berth's own pull request continues its task; on someone else's, starts one", async () => {
    const pr = github.pulls[0]!;
    const base = payload('issue_comment', 'created', { issue: pr.number });
    assert.ok(base.issue.pull_request, 'the issue is a pull request');
    const r = await deliver('issue_comment', { ...base, comment: { ...base.comment, body: '/berth also mention the docs', user: { login: WRITER, type: 'User' } } });
    const row = await handled(r.delivery);
    assert.match(row.outcome ?? '', /queued \(continues task_\w+\)/, row.outcome ?? '');
    const next = await ended(row.task_id!);
    assert.equal(next.state, 'succeeded', next.stateReason);
    assert.equal(next.branch, pr.head);
    assert.equal((await runGit(['show', `${pr.head}:LAST_ASK.md`], { cwd: bare })).trim().endsWith('also mention the docs'), true);

    // A line comment on it, too.
    const line = payload('pull_request_review_comment', 'created');
    const byLine = await deliver('pull_request_review_comment', { ...line, comment: { ...line.comment, body: '/berth use a capital H', path: 'README.md', line: 3, user: { login: WRITER, type: 'User' } }, pull_request: { ...line.pull_request, number: pr.number } });
    const lineRow = await handled(byLine.delivery);
    assert.match(lineRow.outcome ?? '', /queued \(continues task_\w+\)/, lineRow.outcome ?? '');
    const third = await ended(lineRow.task_id!);
    assert.match(third.goal, /On `README.md` line 3: use a capital H$/);

    // A pull request a person opened: a new task, with its conversation as context; it closes no issue.
    const theirs = github.createIssue(REPO, { title: 'Their change', body: 'A change by hand.', user: WRITER });
    const theirIssue = github.issues.find((i) => i === theirs)!;
    theirIssue.pullRequest = true;
    const other = payload('issue_comment', 'created', { issue: theirs.number });
    const started = await deliver('issue_comment', { ...other, comment: { ...other.comment, body: '/berth review the wording', user: { login: WRITER, type: 'User' } } });
    const made = await handled(started.delivery);
    assert.match(made.outcome ?? '', /^task task_\w+ queued$/, made.outcome ?? '');
    const [task] = await tasksOf(started.delivery);
    assert.match(task!.goal, /^review the wording\n\nContext: GitHub pull request/);
    assert.equal(task!.reply_to?.pullRequest, true);
    const done = await ended(task!.id);
    const opened = github.pulls.find((p) => p.head === done.branch);
    assert.doesNotMatch(opened?.body ?? '', /Fixes #/);
  });

  test('a review that asks for no changes, or on a pull request Berth did not open, does nothing', async () => {
    const base = payload('pull_request_review', 'submitted');
    const pr = github.pulls[0]!;
    const approved = await deliver('pull_request_review', { ...base, review: { ...base.review, state: 'approved', body: 'LGTM' }, pull_request: { ...base.pull_request, number: pr.number } });
    assert.match((await handled(approved.delivery)).outcome ?? '', /^ignored: a review \(approved\) that asks for no changes/);
    const foreign = await deliver('pull_request_review', { ...base, review: { ...base.review, state: 'changes_requested', body: 'no' }, pull_request: { ...base.pull_request, number: 999 } });
    assert.match((await handled(foreign.delivery)).outcome ?? '', /^ignored: acme\/widgets#999 is not a pull request a Berth task opened/);
  });

  test('a task the org refuses (no model set up for the built-in agent): said on the issue, audited, no task', async () => {
    await github.createRepo('acme/no-model', { 'README.md': 'hi\n' });
    github.setPermission('acme/no-model', WRITER, 'write');
    const p = await t.api('POST', '/api/orgs/default/projects', { name: 'no-model', repoUrl: github.repoUrl('acme/no-model') });
    assert.equal(p.status, 201, JSON.stringify(p.body));
    const issue = github.createIssue('acme/no-model', { title: 'Needs a model', user: WRITER });
    const r = await deliver('issues', payload('issues', 'labeled', { repo: 'acme/no-model', issue: issue.number, extra: { label: { name: 'berth' } } }));
    assert.equal(r.status, 202);
    assert.match((await handled(r.delivery)).outcome ?? '', /^refused: No model is configured/);
    assert.equal((await tasksOf(r.delivery)).length, 0);
    const said = appComments('acme/no-model', issue.number);
    assert.equal(said.length, 1);
    assert.match(said[0]!.body, new RegExp(`^@${WRITER} Berth could not start a task: No model is configured`));
    const audit = await t.api('GET', '/api/orgs/default/audit?action=trigger.refused');
    assert.ok(audit.body.items.some((e: any) => e.details.repository === 'acme/no-model' && /No model/.test(e.details.reason)), JSON.stringify(audit.body.items.slice(0, 3)));
  });

  test('projects in several orgs use the repository: a comment with the count only, no task', async () => {
    const org = await t.api('POST', '/api/orgs', { name: 'other-team' });
    assert.equal(org.status, 201, JSON.stringify(org.body));
    const p = await t.api('POST', '/api/orgs/other-team/projects', { name: 'secret-project-name', repoUrl: `${github.url}/${REPO}` });
    assert.equal(p.status, 201, JSON.stringify(p.body));
    const issue = github.createIssue(REPO, { title: 'Whose is it', user: WRITER });
    const r = await deliver('issues', payload('issues', 'labeled', { issue: issue.number, extra: { label: { name: 'berth' } } }));
    assert.match((await handled(r.delivery)).outcome ?? '', /^ignored: 2 projects use acme\/widgets/);
    assert.equal((await tasksOf(r.delivery)).length, 0);
    const said = appComments(REPO, issue.number);
    assert.equal(said.length, 1);
    assert.match(said[0]!.body, /^2 Berth projects use acme\/widgets/);
    assert.doesNotMatch(said[0]!.body, /secret-project-name|other-team/);
  });
});

describe('goals and commands', () => {
  test('a command starts the comment; the instruction is the rest', () => {
    assert.equal(commandIn('/berth fix the typo', '/berth'), 'fix the typo');
    assert.equal(commandIn('  /Berth\nadd tests\n', '/berth'), 'add tests');
    assert.equal(commandIn('/berth', '/berth'), '');
    assert.equal(commandIn('/berthday party', '/berth'), null);
    assert.equal(commandIn('please /berth fix', '/berth'), null);
  });

  test('the goal is bounded and keeps the newest comments', () => {
    const comments = Array.from({ length: 50 }, (_, i) => ({ id: i, user: `u${i}`, appId: null, body: `comment ${i} ${'x'.repeat(3000)}`, createdAt: '2026-01-01T00:00:00Z' }));
    const goal = issueGoal({ instruction: 'fix it', fullName: REPO, issue: { number: 3, title: 'Big', body: 'y'.repeat(100_000), htmlUrl: 'https://github.com/acme/widgets/issues/3', pullRequest: false, commentCount: 50 }, comments });
    assert.ok(Buffer.byteLength(goal) <= MAX_CONTEXT_BYTES + 1024, `${Buffer.byteLength(goal)} bytes`);
    assert.match(goal, /comment 49 /);
    assert.doesNotMatch(goal, /comment 0 /);
    assert.match(goal, /older left out/);
    assert.equal(Buffer.byteLength(clip('é'.repeat(100), 51)) <= 51, true);
  });
});
