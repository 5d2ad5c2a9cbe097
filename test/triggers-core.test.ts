// What every trigger shares: deliveries on record before they are acted on (a redelivery does
// nothing, one a crash interrupted is taken up again), one task per trigger key with its audit
// entry, the reply outbox (only the newest state told, a failed reply tried again), and the
// instance's integrations (secrets sealed, never shown, only for instance administrators).
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { TokenService } from '../src/server/auth.ts';
import { repoKey, type Replier, type TaskReplyView } from '../src/server/triggers/index.ts';
import { auditWords } from '../src/shared/audit-words.ts';
import { apiAs, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let memberToken: string;

before(async () => {
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  const m = await t.api('PUT', '/api/orgs/default/members/mia%40example.com', { role: 'admin' });
  assert.equal(m.status, 200, JSON.stringify(m.body));
  memberToken = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: m.body.userId, name: 'mia' })).token;
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'hooks', repoUrl: 'https://github.com/acme/widgets.git' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
});

after(async () => {
  await t?.destroy();
});

const project = async () => t.berth.database.db.selectFrom('projects').selectAll().where('name', '=', 'hooks').executeTakeFirstOrThrow();

describe('trigger plumbing', () => {
  test('repository URLs written any way name one repository', () => {
    const same = ['https://github.com/Acme/Widgets.git', 'https://github.com/acme/widgets/', 'git@github.com:acme/widgets.git', 'ssh://git@github.com/acme/widgets', 'https://x-access-token:abc@github.com:443/acme/widgets'];
    for (const url of same) assert.equal(repoKey(url), 'github.com/acme/widgets', url);
    assert.notEqual(repoKey('https://github.com/acme/widgets-two'), repoKey(same[0]!));
    assert.notEqual(repoKey('https://gitlab.com/acme/widgets'), repoKey(same[0]!));
  });

  test('projects are found by their repository, in whatever form the forge sends it', async () => {
    const found = await t.berth.triggers.deps.triggered.projectsFor(['git@github.com:ACME/widgets.git']);
    assert.deepEqual(found.map((p) => p.name), ['hooks']);
    assert.deepEqual(await t.berth.triggers.deps.triggered.projectsFor(['https://github.com/acme/other']), []);
  });

  test('a delivery is handled once: a redelivery of its id does nothing', async () => {
    const { queue, deliveries } = t.berth.triggers.deps;
    const handled: string[] = [];
    queue.handle('core-test', async (d) => (handled.push(d.deliveryId), { outcome: `seen ${(d.payload as { n: number }).n}` }));
    assert.equal(await queue.accept({ source: 'core-test', deliveryId: 'd-1', event: 'ping', payload: { n: 1 } }), true);
    assert.equal(await queue.accept({ source: 'core-test', deliveryId: 'd-1', event: 'ping', payload: { n: 2 } }), false);
    await queue.idle();
    assert.deepEqual(handled, ['d-1']);
    assert.deepEqual(await deliveries.get('core-test', 'd-1'), { outcome: 'seen 1', taskId: null, processed: true });
  });

  test('what jsonb cannot hold (NUL, an unpaired surrogate) is stored replaced, never a 500', async () => {
    const { queue, deliveries } = t.berth.triggers.deps;
    let seen: unknown;
    queue.handle('core-nul', async (d) => ((seen = d.payload), { outcome: 'seen' }));
    assert.equal(await queue.accept({ source: 'core-nul', deliveryId: 'd-nul', event: 'message', payload: { text: 'a\u0000b', ['k\u0000']: '\ud800x' } }), true);
    await queue.idle();
    assert.deepEqual(seen, { text: 'a\uFFFDb', 'k\uFFFD': '\uFFFDx' });
    assert.equal((await deliveries.get('core-nul', 'd-nul'))?.outcome, 'seen');
  });

  test('a delivery a crash left unhandled is taken up at the next start', async () => {
    const { db } = t.berth.database;
    // As a process killed after recording it would leave it: payload kept, no outcome.
    await db.insertInto('webhook_deliveries').values({ source: 'core-test', delivery_id: 'd-crashed', event: 'ping', payload: JSON.stringify({ n: 7 }), received_at: new Date(Date.now() - 5 * 60_000) }).execute();
    const handled: string[] = [];
    t.berth.triggers.deps.queue.handle('core-test', async (d) => (handled.push(d.deliveryId), { outcome: 'recovered' }));
    assert.equal(await t.berth.triggers.deps.queue.recover(), 1);
    await t.berth.triggers.deps.queue.idle();
    assert.deepEqual(handled, ['d-crashed']);
    const row = await db.selectFrom('webhook_deliveries').selectAll().where('delivery_id', '=', 'd-crashed').executeTakeFirstOrThrow();
    assert.equal(row.outcome, 'recovered');
    assert.equal(row.payload, null, 'the payload is dropped once handled');
  });

  test('one task per trigger key, audited with its source', async () => {
    const p = await project();
    const start = () =>
      t.berth.triggers.deps.triggered.start({
        project: p,
        goal: 'fix the flaky test',
        trigger: 'github',
        triggeredBy: 'github:octocat',
        key: 'github:delivery-42',
        actor: 'github:octocat',
        task: { agent: 'command', command: 'true' },
        source: { delivery: 'delivery-42', issue: 7 },
      });
    const first = await start();
    const again = await start();
    assert.equal(again.id, first.id);
    assert.equal(first.trigger, 'github');
    assert.equal(first.triggeredBy, 'github:octocat');
    const rows = await t.berth.database.db.selectFrom('tasks').select(['id', 'owner_id']).where('trigger_key', '=', 'github:delivery-42').execute();
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.owner_id, null, 'nobody in Berth asked: the org admins use it');
    const audit = await t.api('GET', '/api/orgs/default/audit?action=task.trigger');
    const entries = audit.body.items.filter((e: { target: string }) => e.target === first.id);
    assert.equal(entries.length, 1, JSON.stringify(audit.body));
    assert.equal(entries[0].actor, 'github:octocat');
    assert.equal(entries[0].details.delivery, 'delivery-42');
    assert.equal(auditWords(entries[0]), `task started by github (github:octocat): ${first.id} on hooks`);
    assert.equal(auditWords({ action: 'trigger.refused', target: null, details: { reason: 'octocat has no write access' } }), 'trigger refused: octocat has no write access');
    assert.equal(auditWords({ action: 'schedule.pause', target: 'sch_1', details: {} }), 'schedule paused: sch_1');
    const listed = await t.api('GET', '/api/orgs/default/tasks?trigger=github');
    assert.deepEqual(listed.body.items.map((i: { id: string }) => i.id), [first.id]);
  });

  test('replies tell the newest state, keep what the replier returns, and retry a failed one', async () => {
    const told: { state: string; target: unknown }[] = [];
    let attempts = 0;
    const replier: Replier = {
      kind: 'slack',
      async reply(view: TaskReplyView, target) {
        // The first attempt fails, as a reply to a service that is down would.
        if (++attempts === 1) throw new Error('Slack is down');
        told.push({ state: view.state, target });
        return { ...target, threadTs: '1700000000.000100' };
      },
    };
    const { replies, triggered } = t.berth.triggers.deps;
    replies.register(replier);
    const task = await triggered.start({ project: await project(), goal: 'say hello', trigger: 'slack', triggeredBy: 'slack:T1/U1', key: 'slack:E1', actor: 'slack:U1', replyTo: { kind: 'slack', team: 'T1', channel: 'C1' }, task: { agent: 'command', command: 'true' }, source: { team: 'T1', user: 'U1' } });
    // The outbox runs by itself (woken by the task's events); a pass here only hurries it.
    await waitFor('the queued state told', async () => (await replies.pass(), told.length === 1));
    assert.ok(attempts >= 2, 'the failed reply was tried again');
    assert.equal(await replies.settled(task.id), true);
    assert.deepEqual(told, [{ state: 'queued', target: { kind: 'slack', team: 'T1', channel: 'C1' } }]);
    // Two changes before the next pass (in one transaction: no pass sees the first alone):
    // only the last is told, to the target kept last time.
    const { db } = t.berth.database;
    await db.transaction().execute(async (tx) => {
      await tx.updateTable('tasks').set({ state: 'running' }).where('id', '=', task.id).execute();
      await tx.updateTable('tasks').set({ state: 'failed', state_reason: 'the check failed' }).where('id', '=', task.id).execute();
    });
    await waitFor('the failed state told', async () => (await replies.pass(), told.length === 2));
    assert.deepEqual(told.at(-1), { state: 'failed', target: { kind: 'slack', team: 'T1', channel: 'C1', threadTs: '1700000000.000100' } });
    await replies.pass();
    assert.equal(told.length, 2, 'nothing owed: nothing told again');
  });
});

describe('integrations', () => {
  before(() => {
    t.berth.triggers.deps.integrations.define({
      kind: 'gitlab',
      title: 'the test integration',
      settings: z.strictObject({ url: z.url() }),
      secrets: z.strictObject({ token: z.string().min(8), webhookToken: z.string().min(8) }),
    });
  });

  test('an instance administrator sets one up; secrets are sealed and never shown', async () => {
    const set = await t.api('PUT', '/api/integrations/gitlab', { settings: { url: 'https://gitlab.example.com' }, secrets: { token: 'glpat-secret-value-1', webhookToken: 'hook-secret-value-2' } });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.deepEqual(set.body.secretsSet, ['token', 'webhookToken']);
    assert.match(set.body.webhookUrl, /\/api\/webhooks\/gitlab$/);
    const listed = await t.api('GET', '/api/integrations');
    const text = JSON.stringify(listed.body);
    assert.ok(!text.includes('glpat-secret-value-1') && !text.includes('hook-secret-value-2'), text);
    const row = await t.berth.database.db.selectFrom('integrations').selectAll().where('kind', '=', 'gitlab').executeTakeFirstOrThrow();
    assert.ok(!row.secrets.includes('glpat-secret-value-1'), 'sealed at rest');
    assert.deepEqual((await t.berth.triggers.deps.integrations.get('gitlab'))?.secrets, { token: 'glpat-secret-value-1', webhookToken: 'hook-secret-value-2' });
    const audit = await t.api('GET', '/api/orgs/default/audit?action=integration.set');
    assert.ok(audit.body.items.length >= 1);
    assert.ok(!JSON.stringify(audit.body).includes('glpat-secret-value-1'));
  });

  test('a secret left out is kept; bad settings change nothing', async () => {
    const kept = await t.api('PUT', '/api/integrations/gitlab', { settings: { url: 'https://gitlab2.example.com' }, secrets: { token: 'glpat-rotated-value-3' } });
    assert.equal(kept.status, 200, JSON.stringify(kept.body));
    assert.deepEqual((await t.berth.triggers.deps.integrations.get('gitlab'))?.secrets, { token: 'glpat-rotated-value-3', webhookToken: 'hook-secret-value-2' });
    const bad = await t.api('PUT', '/api/integrations/gitlab', { settings: { url: 'not a url' }, secrets: {} });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'settings');
    assert.equal((await t.berth.triggers.deps.integrations.get('gitlab'))?.settings.url, 'https://gitlab2.example.com');
  });

  test('only instance administrators see or change them', async () => {
    const as = apiAs(t, memberToken);
    assert.equal((await as('GET', '/api/integrations')).status, 403);
    const put = await as('PUT', '/api/integrations/gitlab', { settings: { url: 'https://evil.example.com' }, secrets: {} });
    assert.equal(put.status, 403);
    assert.equal((await as('DELETE', '/api/integrations/gitlab')).status, 403);
    assert.equal((await t.api('GET', '/api/integrations')).body.items.find((i: { kind: string }) => i.kind === 'gitlab').settings.url, 'https://gitlab2.example.com');
  });

  test('removed, it is gone; removing again says it is not set up', async () => {
    assert.equal((await t.api('DELETE', '/api/integrations/gitlab')).status, 200);
    assert.equal(await t.berth.triggers.deps.integrations.get('gitlab'), null);
    const again = await t.api('DELETE', '/api/integrations/gitlab');
    assert.equal(again.status, 404);
    await waitFor('nothing cached', async () => (await t.berth.triggers.deps.integrations.get('gitlab')) === null);
  });
});
