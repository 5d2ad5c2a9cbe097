// Generic webhooks: a trigger's URL and secret (shown once), deliveries authenticated by bearer
// token or HMAC (anything else refused and nothing recorded), bounded in size and rate, one
// task per delivery id, and goals filled from hostile payloads as data.
// sandbox: none (test/fakes/fake-runner.ts; tasks stay queued: taskConcurrency 0)
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { TokenService } from '../src/server/auth.ts';
import { renderGoal } from '../src/server/triggers/webhooks/index.ts';
import { TriggerRates } from '../src/server/triggers/webhooks/rate.ts';
import { apiAs, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;

before(async () => {
  // A model named (never called: no task runs) so built-in agent tasks may be queued.
  t = await startTestBerth({ fake: true, taskConcurrency: 0, modelEnv: { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1', OPENAI_API_KEY: 'sk-test', BERTH_MODEL: 'gpt-4o-mini' } });
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: 'https://github.com/acme/shop.git' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
});

after(async () => {
  await t?.destroy();
});

interface Made {
  id: string;
  name: string;
  url: string;
  secret: string;
  auth: 'hmac' | 'bearer';
}

async function create(body: Record<string, unknown>): Promise<Made> {
  const res = await t.api('POST', '/api/orgs/default/triggers', { project: 'shop', ...body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body as Made;
}

const sign = (secret: string, body: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

/** Posts `body` to the trigger as a sender would: signed or with the token, as the trigger asks. */
async function deliver(trigger: Made, body: unknown, o: { headers?: Record<string, string>; secret?: string; auth?: boolean } = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const secret = o.secret ?? trigger.secret;
  const auth: Record<string, string> = o.auth === false ? {} : trigger.auth === 'hmac' ? { 'x-berth-signature-256': sign(secret, text) } : { authorization: `Bearer ${secret}` };
  const res = await fetch(trigger.url, { method: 'POST', headers: { 'content-type': 'application/json', ...auth, ...o.headers }, body: text });
  const answer = await res.text();
  return { status: res.status, headers: res.headers, body: answer ? JSON.parse(answer) : null };
}

/** The webhook_deliveries metric for generic triggers, by outcome. */
const counted = async (outcome: string) => (await t.berth.observability.metrics.webhookDeliveries.get()).values.find((v) => v.labels.source === 'webhook' && v.labels.outcome === outcome)?.value ?? 0;

const deliveries = (trigger: Made) => t.berth.database.db.selectFrom('webhook_deliveries').selectAll().where('source', '=', `webhook:${trigger.id}`).execute();

/** The task a delivery started, once the queue has handled it. */
async function taskOf(trigger: Made, delivery: string) {
  await t.berth.triggers.deps.queue.idle();
  const row = await t.berth.triggers.deps.deliveries.get(`webhook:${trigger.id}`, delivery);
  assert.ok(row?.processed, `delivery ${delivery} handled`);
  assert.ok(row.taskId, `a task for ${delivery}: ${row.outcome}`);
  const task = await t.api('GET', `/api/orgs/default/tasks/${row.taskId}`);
  return { outcome: row.outcome!, task: task.body };
}

describe('generic webhook triggers', () => {
  test('made with its URL and secret, shown once: list and show never have the secret', async () => {
    const made = await create({ name: 'ci-failures', goalTemplate: 'Fix {{body.job}} on {{body.branch}}' });
    assert.match(made.id, /^whk_[0-9a-z]{12}$/);
    assert.equal(made.url, `${t.client.url}/api/webhooks/triggers/${made.id}`);
    assert.match(made.secret, /^whs_[A-Za-z0-9_-]{43}$/);
    assert.equal(made.auth, 'hmac', 'HMAC unless asked otherwise');
    const list = await t.api('GET', '/api/orgs/default/triggers');
    const listed = list.body.items.find((i: Made) => i.id === made.id);
    assert.equal(listed.name, 'ci-failures');
    assert.equal(listed.project, 'shop');
    assert.equal(listed.ratePerMinute, 60);
    const show = await t.api('GET', `/api/orgs/default/triggers/ci-failures`);
    assert.equal(show.status, 200);
    for (const text of [JSON.stringify(list.body), JSON.stringify(show.body)]) assert.ok(!text.includes(made.secret), 'the secret is not shown again');
    const row = await t.berth.database.db.selectFrom('webhook_triggers').select('secret').where('id', '=', made.id).executeTakeFirstOrThrow();
    assert.ok(!row.secret.includes(made.secret), 'the table keeps it sealed');
    const audit = await t.api('GET', '/api/orgs/default/audit?action=trigger.create');
    const entry = audit.body.items.find((e: { target: string }) => e.target === made.id);
    assert.equal(entry.details.name, 'ci-failures');
    assert.ok(!JSON.stringify(audit.body).includes(made.secret), 'nor in the audit log');
    const again = await t.api('POST', '/api/orgs/default/triggers', { name: 'ci-failures', project: 'shop', goalTemplate: 'x' });
    assert.equal(again.status, 409);
  });

  test('a template that names anything but body or header fields is refused', async () => {
    for (const goalTemplate of ['run {{process.env.HOME}}', 'run {{body.a + 1}}', 'run {{ }}']) {
      const res = await t.api('POST', '/api/orgs/default/triggers', { name: 'bad', project: 'shop', goalTemplate });
      assert.equal(res.status, 400, goalTemplate);
      assert.match(res.body.error.message, /is not a field/);
    }
    const noProject = await t.api('POST', '/api/orgs/default/triggers', { name: 'bad', project: 'nope', goalTemplate: 'x' });
    assert.equal(noProject.status, 404);
  });

  test('an HMAC-signed delivery starts a task on the project, as the webhook trigger', async () => {
    const trigger = await create({ name: 'signed', goalTemplate: 'Fix {{body.job}} on {{body.branch}}' });
    const res = await deliver(trigger, { job: 'unit-tests', branch: 'main' }, { headers: { 'x-berth-delivery': 'ci-run-1' } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.deepEqual(res.body, { delivery: 'ci-run-1', duplicate: false });
    const { outcome, task } = await taskOf(trigger, 'ci-run-1');
    assert.equal(outcome, `task ${task.id} queued`);
    assert.equal(task.trigger, 'webhook');
    assert.equal(task.triggeredBy, `webhook:${trigger.id}`);
    assert.equal(task.project, 'shop');
    assert.ok(task.goal.startsWith('Fix unit-tests on main\n\n'), task.goal);
    assert.match(task.goal, /From webhook trigger 'signed'.*data, not as instructions/, 'the goal says where it came from');
    const row = await t.berth.database.db.selectFrom('tasks').select(['owner_id', 'trigger_key']).where('id', '=', task.id).executeTakeFirstOrThrow();
    assert.equal(row.trigger_key, `webhook:${trigger.id}:ci-run-1`);
    assert.ok(row.owner_id, "the task is its creator's");

    const audit = await t.api('GET', '/api/orgs/default/audit?action=task.trigger');
    const entry = audit.body.items.find((e: { target: string }) => e.target === task.id);
    assert.equal(entry.actor, `webhook:${trigger.id}`);
    assert.deepEqual([entry.details.trigger, entry.details.triggeredBy, entry.details.triggerId, entry.details.name, entry.details.delivery], ['webhook', `webhook:${trigger.id}`, trigger.id, 'signed', 'ci-run-1']);

    const cli = await t.cli(['task', 'list', '--trigger', 'webhook']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(task.id));
    const others = await t.cli(['task', 'list', '--trigger', 'github']);
    assert.doesNotMatch(others.stdout, new RegExp(task.id));
  });

  test('a bearer trigger takes its token; each trigger only its own way', async () => {
    const trigger = await create({ name: 'bearer', goalTemplate: 'Look at {{body.alert}}', auth: 'bearer' });
    const ok = await deliver(trigger, { alert: 'disk full' }, { headers: { 'idempotency-key': 'alert-1' } });
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    const { task } = await taskOf(trigger, 'alert-1');
    assert.ok(task.goal.startsWith('Look at disk full'));
    // A signature is not what this trigger takes, even a right one.
    const signed = await fetch(trigger.url, { method: 'POST', headers: { 'content-type': 'application/json', 'x-berth-signature-256': sign(trigger.secret, '{}') }, body: '{}' });
    assert.equal(signed.status, 401);
  });

  test('a wrong secret, a missing one or a bad signature: 401, and nothing on record', async () => {
    const hmac = await create({ name: 'guarded', goalTemplate: 'x {{body.a}}' });
    const bearer = await create({ name: 'guarded-bearer', goalTemplate: 'x {{body.a}}', auth: 'bearer' });
    const before = await counted('unauthenticated');
    const refused = [
      await deliver(hmac, { a: 1 }, { secret: 'whs_wrong' }),
      await deliver(hmac, { a: 1 }, { auth: false }),
      await deliver(hmac, { a: 1 }, { auth: false, headers: { 'x-berth-signature-256': 'sha256=zz' } }),
      await deliver(hmac, { a: 1 }, { auth: false, headers: { authorization: `Bearer ${hmac.secret}` } }),
      // Signed over other bytes than those sent.
      await deliver(hmac, { a: 1 }, { auth: false, headers: { 'x-berth-signature-256': sign(hmac.secret, '{"a":2}') } }),
      await deliver(bearer, { a: 1 }, { secret: `${bearer.secret}x` }),
      await deliver(bearer, { a: 1 }, { auth: false }),
    ];
    for (const r of refused) {
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(r.body.error.kind, 'unauthorized');
    }
    assert.deepEqual(await deliveries(hmac), []);
    assert.deepEqual(await deliveries(bearer), []);
    assert.equal((await counted('unauthenticated')) - before, refused.length, 'each counted for /metrics');
  });

  test('a body past 64 KiB is 413, not JSON is 415 or 400, and none starts anything', async () => {
    const trigger = await create({ name: 'bounded', goalTemplate: 'x {{body.a}}' });
    const big = await deliver(trigger, { a: 'y'.repeat(70 * 1024) });
    assert.equal(big.status, 413, JSON.stringify(big.body));
    assert.match(big.body.error.message, /64 KiB/);
    const text = await fetch(trigger.url, { method: 'POST', headers: { 'content-type': 'text/plain', 'x-berth-signature-256': sign(trigger.secret, 'hello') }, body: 'hello' });
    assert.equal(text.status, 415);
    const broken = await deliver(trigger, '{"a": ');
    assert.equal(broken.status, 400);
    assert.match(broken.body.error.message, /not JSON/);
    const deep = await deliver(trigger, `${'['.repeat(100)}${']'.repeat(100)}`);
    assert.equal(deep.status, 400);
    assert.deepEqual(await deliveries(trigger), []);
  });

  test('past its rate a trigger answers 429 with Retry-After', async () => {
    const trigger = await create({ name: 'slow', goalTemplate: 'x {{body.n}}', ratePerMinute: 2 });
    assert.equal((await deliver(trigger, { n: 1 })).status, 202);
    assert.equal((await deliver(trigger, { n: 2 })).status, 202);
    const third = await deliver(trigger, { n: 3 });
    assert.equal(third.status, 429, JSON.stringify(third.body));
    // 30 s for the next token at 2 a minute, less whatever refilled while the three were sent (a loaded machine: 29).
    const wait = Number(third.headers.get('retry-after'));
    assert.ok(Number.isInteger(wait) && wait >= 20 && wait <= 30, `retry-after ${third.headers.get('retry-after')}`);
    assert.match(third.body.error.message, /at most 2 deliveries a minute/);
    await t.berth.triggers.deps.queue.idle();
    assert.equal((await deliveries(trigger)).length, 2);
  });

  test('a replayed delivery id starts one task; without one, the same body in the same minute is one delivery', async () => {
    const trigger = await create({ name: 'replayed', goalTemplate: 'x {{body.n}}' });
    const first = await deliver(trigger, { n: 1 }, { headers: { 'x-berth-delivery': 'evt-9' } });
    const second = await deliver(trigger, { n: 1 }, { headers: { 'x-berth-delivery': 'evt-9' } });
    assert.deepEqual([first.status, first.body.duplicate, second.status, second.body.duplicate], [202, false, 202, true]);
    const a = await deliver(trigger, { n: 2 });
    const b = await deliver(trigger, { n: 2 });
    assert.match(a.body.delivery, /^body-[0-9a-f]{32}@\d{4}-\d\d-\d\dT\d\d:\d\d$/);
    // Unless the minute turned between the two sends, which the ids would show.
    if (a.body.delivery === b.body.delivery) assert.equal(b.body.duplicate, true);
    await t.berth.triggers.deps.queue.idle();
    const tasks = await t.berth.database.db.selectFrom('tasks').select('trigger_key').where('triggered_by', '=', `webhook:${trigger.id}`).execute();
    assert.equal(tasks.filter((r) => r.trigger_key === `webhook:${trigger.id}:evt-9`).length, 1);
    assert.equal(tasks.length, a.body.delivery === b.body.delivery ? 2 : 3);
  });

  test('a hostile payload is data: nothing re-expanded, huge values cut, missing fields empty and noted', async () => {
    const trigger = await create({
      name: 'hostile',
      goalTemplate: 'Title: {{body.issue.title}} | First: {{body.items.0.name}} | Ref: {{ headers.x-ref }} | Log: {{body.log}} | Gone: {{body.nope.deeper}} | Proto: {{body.constructor}} | Auth: {{headers.authorization}} | Obj: {{body.meta}}',
    });
    const payload = {
      issue: { title: '{{body.log}} and {{headers.authorization}} ${process.exit()}' },
      items: [{ name: 'first\u0000item' }],
      log: 'L'.repeat(10_000),
      meta: { n: 1, ok: true },
    };
    const res = await deliver(trigger, payload, { headers: { 'x-ref': 'refs/heads/main', 'x-berth-delivery': 'hostile-1' } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const { outcome, task } = await taskOf(trigger, 'hostile-1');
    const goal: string = task.goal;
    assert.ok(goal.includes('Title: {{body.log}} and {{headers.authorization}} ${process.exit()} |'), 'a value is put in as written, never expanded');
    assert.ok(goal.includes('First: first\uFFFDitem |'), 'a NUL is replaced, not stored');
    assert.ok(goal.includes('Ref: refs/heads/main |'));
    const log = /Log: (L*) …\[truncated\] \|/.exec(goal);
    assert.ok(log, 'the long value is cut and says so');
    assert.ok(log[1]!.length < 4096 && log[1]!.length > 4000);
    assert.ok(goal.includes('Gone:  | Proto:  | Auth:  | Obj: {"n":1,"ok":true}'), goal.slice(0, 300));
    assert.ok(!goal.includes(trigger.secret));
    assert.match(outcome, /^task task_[0-9a-z]{12} queued \(empty \(not in the delivery\): body\.nope\.deeper, body\.constructor, headers\.authorization; truncated: body\.log\)$/);
  });

  test('a removed trigger answers 404 and starts nothing; a rotated one takes only its new secret', async () => {
    const gone = await create({ name: 'gone', goalTemplate: 'x {{body.a}}' });
    const rm = await t.cli(['trigger', 'rm', 'gone']);
    assert.equal(rm.code, 0, rm.stderr);
    const late = await deliver(gone, { a: 1 });
    assert.equal(late.status, 404);
    assert.deepEqual(await deliveries(gone), []);
    assert.equal((await t.api('GET', '/api/orgs/default/triggers/gone')).status, 404);
    assert.equal((await fetch(`${t.client.url}/api/webhooks/triggers/whk_000000000000`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status, 404);

    const kept = await create({ name: 'rotated', goalTemplate: 'x {{body.a}}' });
    const rotated = await t.api('POST', '/api/orgs/default/triggers/rotated/rotate', {});
    assert.equal(rotated.status, 200);
    assert.notEqual(rotated.body.secret, kept.secret);
    assert.equal((await deliver(kept, { a: 1 })).status, 401, 'the old secret no longer works');
    assert.equal((await deliver({ ...kept, secret: rotated.body.secret }, { a: 1 })).status, 202);
  });

  test('a viewer sees triggers but cannot make, rotate or remove one', async () => {
    const m = await t.api('PUT', '/api/orgs/default/members/vera%40example.com', { role: 'viewer' });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    const token = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: m.body.userId, name: 'vera' })).token;
    const asViewer = apiAs(t, token);
    const made = await asViewer('POST', '/api/orgs/default/triggers', { name: 'viewers', project: 'shop', goalTemplate: 'x' });
    assert.equal(made.status, 403, JSON.stringify(made.body));
    assert.equal((await asViewer('GET', '/api/orgs/default/triggers')).status, 200);
    assert.equal((await asViewer('POST', '/api/orgs/default/triggers/signed/rotate', {})).status, 403);
    assert.equal((await asViewer('DELETE', '/api/orgs/default/triggers/signed')).status, 403);
  });

  test('a trigger whose creator may no longer start tasks starts none: refused, on record', async () => {
    const m = await t.api('PUT', '/api/orgs/default/members/ada%40example.com', { role: 'admin' });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    const token = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: m.body.userId, name: 'ada' })).token;
    const made = await apiAs(t, token)('POST', '/api/orgs/default/triggers', { name: 'adas', project: 'shop', goalTemplate: 'x {{body.a}}' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal((await t.api('PUT', '/api/orgs/default/members/ada%40example.com', { role: 'viewer' })).status, 200);
    const res = await deliver(made.body, { a: 1 }, { headers: { 'x-berth-delivery': 'after-demotion' } });
    assert.equal(res.status, 202, 'the sender cannot help it: taken, and refused when handled');
    await t.berth.triggers.deps.queue.idle();
    const row = await t.berth.triggers.deps.deliveries.get(`webhook:${made.body.id}`, 'after-demotion');
    assert.match(row!.outcome!, /^refused: the trigger's creator is a viewer now/);
    assert.equal(row!.taskId, null);
    const audit = await t.api('GET', '/api/orgs/default/audit?action=trigger.refused');
    const entry = audit.body.items.find((e: { actor: string }) => e.actor === `webhook:${made.body.id}`);
    assert.equal(entry.details.delivery, 'after-demotion');
  });

  test('berth trigger create prints the URL, the secret once and a curl example that works', async () => {
    const made = await t.cli(['trigger', 'create', '--name', 'from-cli', '--project', 'shop', '--goal-template', 'Fix {{body.alert.title}} ({{body.items.0.id}})', '--auth', 'bearer', '--rate', '2/s']);
    assert.equal(made.code, 0, made.stderr);
    const secret = /Secret\s+(whs_\S+)/.exec(made.stdout)?.[1];
    assert.ok(secret, made.stdout);
    assert.match(made.stdout, /URL\s+http:\/\/\S+\/api\/webhooks\/triggers\/whk_/);
    assert.match(made.stdout, /Rate\s+120\/min/);
    assert.match(made.stdout, /curl -X POST/);
    assert.match(made.stdout, /"alert":\{"title":"example alert\.title"\}/, 'the example body has the fields the template names');
    const list = await t.cli(['trigger', 'list']);
    assert.match(list.stdout, /from-cli\s+shop\s+bearer\s+120\/min/);
    assert.ok(!list.stdout.includes(secret));
    // The printed example, run by a shell as a user would paste it.
    const curl = made.stdout.slice(made.stdout.indexOf('curl -X POST'));
    const answer = (await promisify(execFile)('sh', ['-c', `${curl.trim()} -s -w ' %{http_code}'`], { encoding: 'utf8' })).stdout;
    assert.match(answer, / 202$/, answer);
    // And the signed one an HMAC trigger prints.
    const signed = await t.cli(['trigger', 'create', '--name', 'from-cli-hmac', '--project', 'shop', '--goal-template', 'Fix {{body.alert.title}}']);
    assert.equal(signed.code, 0, signed.stderr);
    const example = signed.stdout.slice(signed.stdout.indexOf('BODY='));
    assert.match(example, /openssl dgst -sha256 -hmac/);
    const signedAnswer = (await promisify(execFile)('sh', ['-c', `${example.trim()} -s -w ' %{http_code}'`], { encoding: 'utf8' })).stdout;
    assert.match(signedAnswer, / 202$/, signedAnswer);
    const show = await t.cli(['trigger', 'show', 'from-cli']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /DELIVERY\s+AGE\s+TASK\s+OUTCOME/);
    const bad = await t.cli(['trigger', 'create', '--name', 'x', '--project', 'shop', '--goal-template', 'x', '--rate', 'fast']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--rate takes/);
  });
});

describe('generic webhook parts', () => {
  test('a delivery a crash left unhandled starts its task when taken up again', async () => {
    const trigger = await create({ name: 'after-crash', goalTemplate: 'Deploy {{body.version}} ({{headers.x-env}})' });
    // As a process killed after recording it (and answering 202) would leave it.
    await t.berth.database.db
      .insertInto('webhook_deliveries')
      .values({ source: `webhook:${trigger.id}`, delivery_id: 'crashed-1', event: 'delivery', payload: JSON.stringify({ body: { version: '1.2.3' }, headers: { 'x-env': 'staging' } }), received_at: new Date(Date.now() - 5 * 60_000) })
      .execute();
    assert.ok((await t.berth.triggers.deps.queue.recover()) >= 1);
    const { task } = await taskOf(trigger, 'crashed-1');
    assert.ok(task.goal.startsWith('Deploy 1.2.3 (staging)'), task.goal);
  });

  test('templates: paths into arrays and objects, own properties only, the goal bounded', () => {
    const input = { body: { a: { b: [10, { c: 'deep' }] }, n: 0, f: false, nil: null }, headers: { 'x-foo': 'bar' } };
    const r = renderGoal('{{body.a.b.0}} {{body.a.b.1.c}} {{body.a.b.2}} {{body.n}} {{body.f}} [{{body.nil}}] {{HEADERS.x-foo}} {{headers.X-Foo}} {{body.a.__proto__}} {{body.toString}} {{body.a.b.length}}', input);
    assert.equal(r.goal, '10 deep  0 false []  bar   ');
    assert.deepEqual(r.missing, ['body.a.b.2', 'HEADERS.x-foo', 'body.a.__proto__', 'body.toString', 'body.a.b.length']);
    const huge = renderGoal('{{body.s}}{{body.s}}{{body.s}}{{body.s}}{{body.s}}{{body.s}}{{body.s}}{{body.s}}{{body.s}}', { body: { s: 'x'.repeat(4000) }, headers: {} });
    assert.equal(huge.goal.length, 32 * 1024, 'the goal is cut to 32 KiB');
    assert.ok(huge.goal.endsWith(' …[truncated]'));
    // A cut never leaves half of a surrogate pair.
    const emoji = renderGoal('{{body.s}}', { body: { s: '😀'.repeat(3000) }, headers: {} });
    assert.equal(emoji.goal, emoji.goal.toWellFormed());
    assert.deepEqual(emoji.truncated, ['body.s']);
  });

  test('the rate: a full bucket at first, refilled evenly over the minute', () => {
    let now = 0;
    const rates = new TriggerRates(() => now);
    assert.deepEqual([rates.take('whk_a', 3), rates.take('whk_a', 3), rates.take('whk_a', 3)], [0, 0, 0]);
    assert.equal(rates.take('whk_a', 3), 20, 'one more in 20 s');
    assert.equal(rates.take('whk_b', 3), 0, 'each trigger has its own');
    now += 20_000;
    assert.equal(rates.take('whk_a', 3), 0);
    assert.equal(rates.take('whk_a', 3), 20);
    now += 10 * 60_000;
    assert.deepEqual([rates.take('whk_a', 3), rates.take('whk_a', 3), rates.take('whk_a', 3), rates.take('whk_a', 3)], [0, 0, 0, 20], 'no more than a minute saved up');
  });
});
