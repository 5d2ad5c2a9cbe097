// The Slack trigger against a local Slack (test/fakes/slack.ts) that signs what it sends as
// Slack does and answers the Web API as Slack does: forged and replayed requests refused, the
// Events API's URL check, a slash command from the acknowledgement to the task's thread, a
// retried event starting one task, and people Berth does not know (or who may not start
// tasks) told how to get access, on record, with no task.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { SlackReplier } from '../src/server/triggers/slack/replier.ts';
import type { TaskReplyView } from '../src/server/triggers/index.ts';
import { createBareRepo, runGit } from './fakes/git-server.ts';
import { appMentionBody, slashCommandBody, startFakeSlack, urlVerificationBody, type FakeSlack } from './fakes/slack.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let slack: FakeSlack;
let root: string;
let commandsUrl: string;
let eventsUrl: string;
const users: Record<string, string> = {};
const CHANNEL = 'C0DEVCHAN1';

const FORM = 'application/x-www-form-urlencoded' as const;
const JSON_TYPE = 'application/json' as const;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-slack-'));
  slack = await startFakeSlack();
  t = await startTestBerth({ fake: true });
  for (const [name, role] of [['alice', 'member'], ['vic', 'viewer']] as const) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    users[name] = m.body.userId;
  }
  slack.users.set('U0ALICE', { id: 'U0ALICE', name: 'alice', email: 'Alice@Example.com' });
  slack.users.set('U0VIC', { id: 'U0VIC', name: 'vic', email: 'vic@example.com' });
  slack.users.set('U0MALLORY', { id: 'U0MALLORY', name: 'mallory', email: 'mallory@elsewhere.example' });
  slack.users.set('U0UNSURE', { id: 'U0UNSURE', name: 'unsure', email: 'alice@example.com', emailConfirmed: false });

  // Set up as an administrator would: secrets from files, the API at the local Slack.
  const signing = join(root, 'signing-secret');
  const token = join(root, 'bot-token');
  await writeFile(signing, `${slack.signingSecret}\n`);
  await writeFile(token, `${slack.botToken}\n`);
  const set = await t.cli(['integration', 'slack', '--signing-secret-file', signing, '--bot-token-file', token, '--api-url', slack.apiUrl]);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /secrets set: botToken, signingSecret/);
  commandsUrl = /Request URL: +(\S+\/commands)/.exec(set.stdout)?.[1] ?? '';
  eventsUrl = /Request URL: +(\S+\/events)/.exec(set.stdout)?.[1] ?? '';
  assert.equal(commandsUrl, `${t.client.url}/api/webhooks/slack/commands`, set.stdout);
  assert.equal(eventsUrl, `${t.client.url}/api/webhooks/slack/events`, set.stdout);
  const listed = await t.cli(['integration', 'list', '--json']);
  const status = JSON.parse(listed.stdout).find((i: { kind: string }) => i.kind === 'slack');
  assert.deepEqual(status.settings, { apiUrl: slack.apiUrl });
  assert.ok(!listed.stdout.includes(slack.botToken) && !listed.stdout.includes(slack.signingSecret), 'no secret is shown');
});

after(async () => {
  await t?.destroy();
  await slack?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

const db = () => t.berth.database.db;
const counted = async (outcome: string) => (await t.berth.observability.metrics.webhookDeliveries.get()).values.find((v) => v.labels.source === 'slack' && v.labels.outcome === outcome)?.value ?? 0;
const deliveries = async () => (await db().selectFrom('webhook_deliveries').select('delivery_id').where('source', '=', 'slack').execute()).length;
const slackTasks = async () => db().selectFrom('tasks').select(['id', 'owner_id', 'triggered_by', 'trigger_key', 'goal', 'project_id']).where('trigger', '=', 'slack').orderBy('created_at').execute();
const audit = async (action: string) => (await t.api('GET', `/api/orgs/default/audit?action=${action}`)).body.items as { actor: string; target: string | null; details: Record<string, unknown> }[];
/** The messages posted to `user` alone, newest last. */
const toldTo = (user: string) => slack.messages.filter((m) => m.visibleTo === user);

/** Waits for a delivery to be handled and returns what came of it. */
async function handled(deliveryId: string) {
  await t.berth.triggers.deps.queue.idle();
  const d = await t.berth.triggers.deps.deliveries.get('slack', deliveryId);
  assert.ok(d?.processed, `${deliveryId} handled`);
  return d;
}

async function waitForTask(id: string) {
  return waitFor(`task ${id} to end`, async () => {
    const r = await t.api('GET', `/api/orgs/default/tasks/${id}`);
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(r.body.state) ? r.body : null;
  }, 120_000);
}

describe('requests Slack did not sign', () => {
  test('a wrong signature, a stale or a future timestamp, or none at all: 401, counted, nothing recorded', async () => {
    const before = { deliveries: await deliveries(), unauthenticated: await counted('unauthenticated'), messages: slack.messages.length };
    const command = slashCommandBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'delete everything' });
    const mention = appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'delete everything' });
    const sixMinutes = 6 * 60_000;
    const tries = [
      { url: commandsUrl, body: command, contentType: FORM, signAs: 'not-the-signing-secret' },
      { url: eventsUrl, body: mention, contentType: JSON_TYPE, signAs: 'not-the-signing-secret' },
      { url: commandsUrl, body: command, contentType: FORM, at: new Date(Date.now() - sixMinutes) },
      { url: eventsUrl, body: mention, contentType: JSON_TYPE, at: new Date(Date.now() - sixMinutes) },
      { url: eventsUrl, body: mention, contentType: JSON_TYPE, at: new Date(Date.now() + sixMinutes) },
    ] as const;
    for (const { url, body, ...o } of tries) {
      const r = await slack.deliver(url, body, o);
      assert.equal(r.status, 401, `${url} ${JSON.stringify(o)}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /signing secret|five minutes/);
    }
    // Unsigned, and signed over a different body than the one sent.
    const unsigned = await fetch(eventsUrl, { method: 'POST', headers: { 'content-type': JSON_TYPE }, body: mention });
    assert.equal(unsigned.status, 401);
    const swapped = await fetch(commandsUrl, { method: 'POST', headers: { 'content-type': FORM, 'x-slack-request-timestamp': String(Math.floor(Date.now() / 1000)), 'x-slack-signature': 'v0=' + '0'.repeat(64) }, body: command });
    assert.equal(swapped.status, 401);

    assert.equal(await deliveries(), before.deliveries, 'no delivery on record');
    assert.equal(await counted('unauthenticated'), before.unauthenticated + tries.length + 2);
    assert.equal((await slackTasks()).length, 0);
    await t.berth.triggers.deps.queue.idle();
    assert.equal(slack.messages.length, before.messages, 'nothing said in Slack');
  });
});

describe('the Events API', () => {
  test("the URL check is answered with its challenge; other events and bots' mentions do nothing", async () => {
    const r = await slack.deliver(eventsUrl, urlVerificationBody('3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P'), { contentType: JSON_TYPE });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { challenge: '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P' });

    const before = await deliveries();
    const reaction = JSON.stringify({ ...JSON.parse(appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'x' })), event: { type: 'reaction_added', user: 'U0ALICE', reaction: 'thumbsup', item: { type: 'message', channel: CHANNEL, ts: '1700000000.000100' }, event_ts: '1700000001.000200' } });
    assert.equal((await slack.deliver(eventsUrl, reaction, { contentType: JSON_TYPE })).status, 200);
    const fromBot = JSON.parse(appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'loop forever' }));
    fromBot.event.bot_id = 'B0OTHERBOT';
    assert.equal((await slack.deliver(eventsUrl, JSON.stringify(fromBot), { contentType: JSON_TYPE })).status, 200);
    const broken = await slack.deliver(eventsUrl, '{"type":"event_callback"', { contentType: JSON_TYPE });
    assert.equal(broken.status, 400);
    assert.equal(await deliveries(), before, 'nothing on record');
  });
});

describe('a slash command', () => {
  test('is acknowledged at once, starts a task for the Berth user with the same email, and the thread follows it', async () => {
    // The only project of the org: a plain git repository, its agent a command that waits
    // for the test (so "started" is seen before the end) and then changes a file.
    const gate = join(root, 'gate');
    const bare = (await createBareRepo({ root, name: 'shop.git', files: { 'README.md': 'shop\n' } })).path;
    const command = `while [ ! -e ${gate} ]; do sleep 0.1; done; echo 'sold out' > STATUS.md`;
    const p = await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: bare, agent: { kind: 'command', command } });
    assert.equal(p.status, 201, JSON.stringify(p.body));

    const triggerId = '13345224609.738474920.8088930838d88f008e0';
    const ack = await slack.deliver(commandsUrl, slashCommandBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'write the stock status to STATUS.md', triggerId }), { contentType: FORM });
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    assert.equal(ack.body.response_type, 'ephemeral');
    assert.match(ack.body.text, /On it/);

    const d = await handled(`command:${triggerId}`);
    assert.match(d!.outcome!, /^task task_\w+ queued$/);
    const task = (await t.api('GET', `/api/orgs/default/tasks/${d!.taskId}`)).body;
    assert.equal(task.goal, 'write the stock status to STATUS.md');
    assert.equal(task.trigger, 'slack');
    assert.equal(task.triggeredBy, `slack:${slack.team}/U0ALICE`);
    const row = (await slackTasks()).find((r) => r.id === task.id)!;
    assert.equal(row.trigger_key, `slack:${triggerId}`);
    assert.equal(row.owner_id, users.alice);
    const entry = (await audit('task.trigger')).find((e) => e.target === task.id)!;
    assert.equal(entry.actor, `user:${users.alice}`);
    assert.deepEqual([entry.details.team, entry.details.user, entry.details.channel], [slack.team, 'U0ALICE', CHANNEL]);

    // The thread: a message in the channel, then "started" under it.
    const parent = await waitFor('the thread to start', async () => slack.messages.find((m) => m.channel === CHANNEL && !m.threadTs && !m.visibleTo && m.text.includes(task.id)), 30_000);
    assert.match(parent.text, /<@U0ALICE>/);
    await waitFor('the started reply', async () => slack.messages.some((m) => m.threadTs === parent.ts && /^Started/.test(m.text)), 60_000);
    await writeFile(gate, '');
    const ended = await waitForTask(task.id);
    assert.equal(ended.state, 'succeeded', JSON.stringify(ended));
    await waitFor('every reply sent', async () => (await t.berth.triggers.deps.replies.pass(), t.berth.triggers.deps.replies.settled(task.id)), 30_000);

    const thread = slack.messages.filter((m) => m.threadTs === parent.ts).map((m) => m.text);
    assert.equal(thread.length, 2, JSON.stringify(thread));
    assert.match(thread[0]!, new RegExp(`^Started <[^|]+/tasks/${task.id}\\|${task.id}>`));
    assert.match(thread[1]!, new RegExp(`^Done <[^|]+\\|${task.id}>`));
    assert.match(parent.text, /: done/, 'the first message shows the state it ended in');
    assert.ok(parent.edits.length >= 1, 'the first message was kept up to date');
    assert.ok(slack.calls.every((c) => c.error === null), JSON.stringify(slack.calls.filter((c) => c.error)));

    // The change is real: on the task's branch in the repository.
    assert.ok(ended.branch, JSON.stringify(ended));
    assert.equal(await runGit(['--git-dir', bare, 'show', `${ended.branch}:STATUS.md`]), 'sold out\n');
    assert.ok(existsSync(gate));
  });
});

describe('a slash command without a goal', () => {
  test('`/berth` alone or `/berth help`: the usage, at once, nothing recorded', async () => {
    const before = await deliveries();
    for (const text of ['', '  ', 'help']) {
      const r = await slack.deliver(commandsUrl, slashCommandBody(slack, { user: 'U0ALICE', channel: CHANNEL, text }), { contentType: FORM });
      assert.equal(r.status, 200);
      assert.equal(r.body.response_type, 'ephemeral');
      assert.match(r.body.text, /^Usage: `\/berth <goal> \[in <project>\]`/);
    }
    // Slack's certificate check of the command's URL, signed like the rest.
    const check = await slack.deliver(commandsUrl, new URLSearchParams({ ssl_check: '1', token: 'gIkuvaNzQIHg97ATvDxqgjtO' }).toString(), { contentType: FORM });
    assert.equal(check.status, 200);
    assert.equal(await deliveries(), before);
  });
});

describe('an @mention', () => {
  test('retried by Slack (same event_id) starts one task, in the named project, answered in its thread', async () => {
    const bare = (await createBareRepo({ root, name: 'docs.git', files: { 'README.md': 'docs\n' } })).path;
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'docs', repoUrl: bare, agent: { kind: 'command', command: 'echo fixed > TYPO.md' } })).status, 201);
    const eventId = 'Ev0MENTION01';
    const ts = '1733300000.000100';
    const body = appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'fix the typo &amp; the <https://example.com/x|link> in docs', eventId, ts });
    const first = await slack.deliver(eventsUrl, body, { contentType: JSON_TYPE });
    assert.equal(first.status, 200);
    // Slack retries when it did not hear back in time: the same event, with X-Slack-Retry-Num.
    for (const n of [1, 2]) assert.equal((await slack.deliver(eventsUrl, body, { contentType: JSON_TYPE, retryNum: n })).status, 200);
    const d = await handled(`event:${eventId}`);
    const tasks = (await slackTasks()).filter((r) => r.trigger_key === `slack:${eventId}`);
    assert.equal(tasks.length, 1, 'one task');
    assert.equal(d!.taskId, tasks[0]!.id);
    assert.equal(tasks[0]!.goal, 'fix the typo & the https://example.com/x', 'the bot mention and "in docs" out, Slack markup read');
    const project = await db().selectFrom('projects').select('id').where('name', '=', 'docs').executeTakeFirstOrThrow();
    assert.equal(tasks[0]!.project_id, project.id);

    const ended = await waitForTask(tasks[0]!.id);
    assert.equal(ended.state, 'succeeded', JSON.stringify(ended));
    await waitFor('every reply sent', async () => (await t.berth.triggers.deps.replies.pass(), t.berth.triggers.deps.replies.settled(ended.id)), 30_000);
    const thread = slack.messages.filter((m) => m.threadTs === ts);
    assert.ok(thread.length >= 2, JSON.stringify(thread));
    assert.match(thread[0]!.text, new RegExp(`^Task <[^|]+\\|${ended.id}> for <@U0ALICE> in \`docs\`: done`));
    assert.match(thread.at(-1)!.text, /^Done /);
  });

  test('with several projects and none named, the asker is told which there are', async () => {
    const before = (await slackTasks()).length;
    const eventId = 'Ev0NOPROJECT';
    await slack.deliver(eventsUrl, appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'make it faster', eventId }), { contentType: JSON_TYPE });
    const d = await handled(`event:${eventId}`);
    assert.match(d!.outcome!, /^ignored: default has 2 projects/);
    assert.match(toldTo('U0ALICE').at(-1)!.text, /say which, as in `\/berth <goal> in <project>`\. Projects: `docs`, `shop`/);
    assert.equal((await slackTasks()).length, before);
  });
});

describe('the thread', () => {
  test('a task that fails: the reason in its thread', async () => {
    const bare = (await createBareRepo({ root, name: 'broken.git', files: { 'README.md': 'broken\n' } })).path;
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'broken', repoUrl: bare, agent: { kind: 'command', command: 'echo "the build is broken" >&2; exit 3' } })).status, 201);
    const eventId = 'Ev0BROKEN001';
    const ts = '1733300100.000100';
    await slack.deliver(eventsUrl, appMentionBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'fix the build in broken', eventId, ts }), { contentType: JSON_TYPE });
    const d = await handled(`event:${eventId}`);
    const ended = await waitForTask(d!.taskId!);
    assert.equal(ended.state, 'failed', JSON.stringify(ended));
    await waitFor('every reply sent', async () => (await t.berth.triggers.deps.replies.pass(), t.berth.triggers.deps.replies.settled(ended.id)), 30_000);
    const last = slack.messages.filter((m) => m.threadTs === ts).at(-1)!;
    assert.match(last.text, new RegExp(`^Failed <[^|]+\\|${ended.id}>: `));
    assert.ok(ended.stateReason && last.text.includes(ended.stateReason.slice(0, 40).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')), `${last.text} tells ${ended.stateReason}`);
  });

  test('a pull request is linked once; a channel the app cannot write to is given up, not retried', async () => {
    const replier = new SlackReplier({ integrations: t.berth.triggers.deps.integrations, logger: pino({ level: 'silent' }) });
    const view = (o: Partial<TaskReplyView>): TaskReplyView => ({ id: 'task_slackpr0001', goal: 'add <b>bold</b> & more', state: 'queued', stateReason: null, url: 'http://berth.example/tasks/task_slackpr0001', project: 'shop', branch: null, changeRequest: null, summary: null, continues: null, ...o });
    let target = (await replier.reply(view({}), { kind: 'slack', team: slack.team, channel: CHANNEL, threadTs: null, user: 'U0ALICE' }))!;
    const parent = slack.messages.find((m) => m.ts === target.statusTs)!;
    assert.equal(parent.threadTs, null, 'a new message in the channel');
    assert.match(parent.text, /add &lt;b&gt;bold&lt;\/b&gt; &amp; more/, 'the goal shown as written, not as markup');
    target = (await replier.reply(view({ state: 'running' }), target))!;
    const pr = { kind: 'pull_request' as const, url: 'https://github.example/acme/shop/pull/7', number: 7, draft: false };
    target = (await replier.reply(view({ state: 'succeeded', changeRequest: pr, branch: 'berth/add-bold' }), target))!;
    target = (await replier.reply(view({ state: 'succeeded', changeRequest: pr, branch: 'berth/add-bold' }), target))!;
    const thread = slack.messages.filter((m) => m.threadTs === parent.ts).map((m) => m.text);
    assert.deepEqual(thread.map((x) => x.split(' ')[0]), ['Started', 'Opened', 'Done'], JSON.stringify(thread));
    assert.equal(thread[1], 'Opened a pull request: https://github.example/acme/shop/pull/7');
    assert.match(parent.text, /done: https:\/\/github\.example\/acme\/shop\/pull\/7/);

    slack.closedChannels.add('C0PRIVATE01');
    const calls = slack.calls.length;
    const lost = await replier.reply(view({ id: 'task_slacklost01' }), { kind: 'slack', team: slack.team, channel: 'C0PRIVATE01', threadTs: null, user: 'U0ALICE' });
    assert.equal(lost?.lost, 'not_in_channel');
    assert.equal(await replier.reply(view({ id: 'task_slacklost01', state: 'running' }), lost!), undefined);
    assert.equal(slack.calls.length, calls + 1, 'one try, then nothing');
  });
});

describe('people who may not start tasks', () => {
  test('someone Berth does not know, a viewer, an unconfirmed email: told how to get access, on record, no task', async () => {
    const before = (await slackTasks()).length;
    const cases = [
      { user: 'U0MALLORY', told: /No Berth user has your email mallory@elsewhere\.example\. Ask an admin of your Berth org to add you: `berth member add mallory@elsewhere\.example --role member`/, actor: `slack:${slack.team}/U0MALLORY` },
      { user: 'U0VIC', told: /vic@example\.com is only a viewer of the Berth org default.*`berth member add vic@example\.com --role member --org default`/, actor: `user:${users.vic}` },
      { user: 'U0UNSURE', told: /not confirmed/, actor: `slack:${slack.team}/U0UNSURE` },
    ];
    for (const [i, c] of cases.entries()) {
      const triggerId = `1334522460${i}.738474920.refused`;
      const ack = await slack.deliver(commandsUrl, slashCommandBody(slack, { user: c.user, channel: CHANNEL, text: 'deploy to production in shop', triggerId }), { contentType: FORM });
      assert.equal(ack.status, 200);
      const d = await handled(`command:${triggerId}`);
      assert.match(d!.outcome!, /^ignored: /);
      assert.equal(d!.taskId, null);
      const told = toldTo(c.user).at(-1);
      assert.ok(told, `${c.user} was told`);
      assert.match(told.text, c.told);
      assert.equal(told.channel, CHANNEL);
      const refusal = (await audit('trigger.refused')).find((e) => e.details.user === c.user);
      assert.ok(refusal, `${c.user}'s refusal on record`);
      assert.equal(refusal.actor, c.actor);
      assert.equal(refusal.details.team, slack.team);
    }
    assert.equal((await slackTasks()).length, before, 'no task');
  });

  test('with the org named (`berth integration slack --org`), the advice names it; secrets left out are kept', async () => {
    const set = await t.cli(['integration', 'slack', '--org', 'default', '--api-url', slack.apiUrl]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /tasks go to the org default/);
    const status = JSON.parse((await t.cli(['integration', 'list', '--json'])).stdout).find((i: { kind: string }) => i.kind === 'slack');
    assert.deepEqual(status.settings, { apiUrl: slack.apiUrl, org: 'default' });
    await waitFor('the new settings read', async () => (await t.berth.triggers.deps.integrations.get<{ org?: string }>('slack'))?.settings.org === 'default');
    const triggerId = '13345224688.738474920.withorg';
    await slack.deliver(commandsUrl, slashCommandBody(slack, { user: 'U0MALLORY', channel: CHANNEL, text: 'anything', triggerId }), { contentType: FORM });
    await handled(`command:${triggerId}`);
    assert.match(toldTo('U0MALLORY').at(-1)!.text, /Ask an admin of the Berth org default to add you: `berth member add mallory@elsewhere\.example --role member --org default`/);
  });

  test('without users:read.email the asker is told what the app lacks', async () => {
    slack.emailScope = false;
    try {
      const triggerId = '13345224699.738474920.noscope';
      await slack.deliver(commandsUrl, slashCommandBody(slack, { user: 'U0ALICE', channel: CHANNEL, text: 'anything', triggerId }), { contentType: FORM });
      await handled(`command:${triggerId}`);
      assert.match(toldTo('U0ALICE').at(-1)!.text, /no email address \(the Slack app needs the users:read\.email scope\)/);
    } finally {
      slack.emailScope = true;
    }
  });
});
