// Schedules (issue #15): cron rules read in a timezone that start tasks or stop and start
// environments. The clock is injected (startTestBerth({ clock })) and moved by the test, so a
// daylight-saving change or hours of downtime pass in an instant; the firing loop runs as in
// production, and the test also asks it to look at once after each move (tick).
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TokenService } from '../src/server/auth.ts';
import type { ScheduleSource } from '../src/server/triggers/schedules/index.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { apiAs, runCli, startReplicas, startTestBerth, type TestBerth, type TestReplicas } from './helpers.ts';
import { ON_POSTGRES } from './postgres.ts';

let now = new Date('2026-03-27T12:00:00Z');
const clock = () => now;
// The tasks schedules start stay queued: that they start, and as what, is the point here.
const quiet = { fake: true, clock, taskConcurrency: 0 } as const;

let t: TestBerth;
let root: string;
let repo: string;
const tokens: Record<string, string> = {};

const as = (who: string) => apiAs(t, tokens[who]!);
const cli = (who: string, args: string[]) => runCli(args, { BERTH_URL: t.client.url, BERTH_TOKEN: tokens[who]!, BERTH_ORG: 'default', NO_COLOR: '1' });
const schedulesOf = (b: TestBerth) => b.berth.triggers.sources.find((s) => s.name === 'schedules') as ScheduleSource;

/** Moves the clock to `iso` and lets the control plane fire what is due. */
async function at(iso: string, b: TestBerth = t): Promise<void> {
  now = new Date(iso);
  await schedulesOf(b).tick();
}

async function firings(b: TestBerth, id: string) {
  return b.berth.database.db.selectFrom('schedule_firings').selectAll().where('schedule_id', '=', id).orderBy('slot').execute();
}

/** A task schedule as alice makes it: a command agent, so no model is needed. */
async function taskSchedule(who: string, body: Record<string, unknown>) {
  return as(who)('POST', '/api/orgs/default/schedules', { kind: 'task', project: 'nightly', goal: 'Tidy the changelog', agent: 'command', command: 'true', ...body });
}

/** Every schedule removed, so one test's rules do not fire when the next moves the clock. */
async function removeAll(): Promise<void> {
  await t.berth.database.db.updateTable('schedules').set({ deleted_at: now, next_at: null }).where('deleted_at', 'is', null).execute();
}

before(async () => {
  t = await startTestBerth(quiet);
  const made = new TokenService(t.berth.database.db);
  for (const [name, role] of [['alice', 'member'], ['bob', 'member'], ['carol', 'admin'], ['vic', 'viewer']] as const) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
  root = await mkdtemp(join(tmpdir(), 'berth-schedules-'));
  repo = (await createBareRepo({ root, name: 'nightly.git', files: { 'README.md': '# nightly\n' } })).path;
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'nightly', repoUrl: repo });
  assert.equal(p.status, 201, JSON.stringify(p.body));
});

after(async () => {
  await t?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('schedules', () => {
  test('a bad cron rule, timezone or project is refused with what to give instead', async () => {
    const cases: [Record<string, unknown>, number, RegExp, string?][] = [
      [{ cron: 'every night' }, 400, /five fields, minute hour day-of-month month day-of-week/, 'body.cron'],
      [{ cron: '0 0 3 * * *' }, 400, /requires exactly 5 parts/, 'body.cron'],
      [{ cron: '61 3 * * *' }, 400, /Invalid value for minute/, 'body.cron'],
      [{ cron: '0 3 30 2 *' }, 400, /never fires/, 'body.cron'],
      [{ cron: '0 3 * * *', timezone: 'Mars/Olympus_Mons' }, 400, /unknown timezone 'Mars\/Olympus_Mons': give an IANA zone such as Europe\/Berlin/, 'body.timezone'],
      [{ cron: '0 3 * * *', timezone: '+01:00' }, 400, /unknown timezone/, 'body.timezone'],
      [{ cron: '0 3 * * *', project: 'nope' }, 404, /no project 'nope'/],
    ];
    for (const [body, status, message, field] of cases) {
      const res = await taskSchedule('alice', body);
      assert.equal(res.status, status, `${JSON.stringify(body)} -> ${res.status} ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, message);
      if (field) assert.equal(res.body.error.field, field);
    }
    const viewer = await taskSchedule('vic', { cron: '0 3 * * *' });
    assert.equal(viewer.status, 403);
    assert.match(viewer.body.error.message, /needs member/);
    const bad = await cli('alice', ['schedule', 'create', '--cron', '0 3 * *', '--project', 'nightly', '--goal', 'x']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /cron rule '0 3 \* \*' is not valid .*such as '0 3 \* \* 1-5'/);
    assert.equal((await as('alice')('GET', '/api/orgs/default/schedules')).body.items.length, 0, 'nothing was made');
  });

  test('a 02:30 Europe/Berlin rule fires at 03:00 on the spring-forward day and once on the fall-back day', async () => {
    now = new Date('2026-03-27T12:00:00Z');
    const made = await cli('alice', ['schedule', 'create', '--cron', '30 2 * * *', '--timezone', 'Europe/Berlin', '--project', 'nightly', '--goal', 'Tidy the changelog', '--name', 'tidy', '--agent', 'command', '--command', 'true', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const id = JSON.parse(made.stdout).id as string;
    const shown = await as('alice')('GET', `/api/orgs/default/schedules/${id}`);
    // 02:30 CET, then 03:00 CEST (02:30 does not exist on 29 March), then 02:30 CEST.
    assert.deepEqual(shown.body.upcoming, ['2026-03-28T01:30:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z']);

    await at('2026-03-28T01:29:59Z');
    assert.equal((await firings(t, id)).length, 0, 'not before its slot');
    await at('2026-03-28T01:30:01Z');
    await at('2026-03-29T00:59:59Z');
    await at('2026-03-29T01:00:01Z');
    const spring = await firings(t, id);
    assert.deepEqual(spring.map((f) => f.slot.toISOString()), ['2026-03-28T01:30:00.000Z', '2026-03-29T01:00:00.000Z']);
    for (const f of spring) assert.match(f.outcome, /^task task_\w+ queued$/);
    const task = await as('alice')('GET', `/api/orgs/default/tasks/${spring[1]!.task_id}`);
    assert.equal(task.body.trigger, 'schedule');
    assert.equal(task.body.triggeredBy, `schedule:${id}`);
    assert.equal(task.body.goal, 'Tidy the changelog');
    assert.equal(task.body.agent, 'command');
    const audit = await t.berth.database.db.selectFrom('audit_entries').selectAll().where('action', '=', 'task.trigger').where('target', '=', spring[1]!.task_id).executeTakeFirstOrThrow();
    assert.equal(audit.actor, `schedule:${id}`);
    assert.equal((audit.details as { slot: string }).slot, '2026-03-29T01:00:00.000Z');

    const show = await cli('alice', ['schedule', 'show', id]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /next\s+Mon 2026-03-30 02:30 CEST/);
    assert.match(show.stdout, /Sun 2026-03-29 03:00 CEST\s+task task_\w+ queued/);
    assert.match(show.stdout, /Sat 2026-03-28 02:30 CET\s+task task_\w+ queued/);

    // Autumn: 02:30 happens twice on 25 October (CEST, then CET an hour later); the rule fires once.
    await cli('alice', ['schedule', 'pause', id]);
    now = new Date('2026-10-24T12:00:00Z');
    const resumed = await as('alice')('POST', `/api/orgs/default/schedules/${id}/resume`);
    assert.equal(resumed.body.nextAt, '2026-10-25T00:30:00.000Z');
    await at('2026-10-25T00:30:01Z');
    await at('2026-10-25T01:30:01Z');
    await at('2026-10-25T23:00:00Z');
    const autumn = (await firings(t, id)).slice(2);
    assert.deepEqual(autumn.map((f) => f.slot.toISOString()), ['2026-10-25T00:30:00.000Z']);
    assert.equal((await as('alice')('GET', `/api/orgs/default/schedules/${id}`)).body.nextAt, '2026-10-26T01:30:00.000Z', '02:30 CET the next day');
    await removeAll();
  });

  test('after downtime the missed slots fire once, late, and say how many it stands for; a claimed slot never acted on is taken up', async () => {
    now = new Date('2026-04-01T09:10:00Z');
    const made = await taskSchedule('alice', { cron: '0 * * * *' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.id as string;
    assert.equal(made.body.nextAt, '2026-04-01T10:00:00.000Z');
    // The control plane is down from 09:10 to 14:20: five slots (10:00 … 14:00) pass unfired.
    const down = t;
    await down.close();
    await down.fake?.close();
    now = new Date('2026-04-01T14:20:00Z');
    t = await startTestBerth({ ...quiet, dataDir: down.dataDir, database: down.database });
    await at('2026-04-01T14:20:01Z');
    const fired = await firings(t, id);
    assert.equal(fired.length, 1, 'one firing for five missed slots');
    assert.equal(fired[0]!.slot.toISOString(), '2026-04-01T14:00:00.000Z', 'the latest missed slot');
    assert.match(fired[0]!.outcome, /^task task_\w+ queued \(late: stands for 4 earlier slots missed while no control plane ran\)$/);
    const tasks = await t.berth.database.db.selectFrom('tasks').select('id').where('triggered_by', '=', `schedule:${id}`).execute();
    assert.equal(tasks.length, 1);
    const shown = (await as('alice')('GET', `/api/orgs/default/schedules/${id}`)).body;
    assert.equal(shown.firings[0].late, true);
    assert.equal(shown.nextAt, '2026-04-01T15:00:00.000Z');
    // On time again: not late.
    await at('2026-04-01T15:00:02Z');
    const next = (await as('alice')('GET', `/api/orgs/default/schedules/${id}`)).body;
    assert.equal(next.firings[0].late, false);
    assert.match(next.firings[0].outcome, /^task task_\w+ queued$/);

    // A replica claimed 16:00 and died before acting: a minute on, the firing is acted on (once).
    const db = t.berth.database.db;
    await db.insertInto('schedule_firings').values({ schedule_id: id, slot: '2026-04-01T16:00:00Z', fired_at: '2026-04-01T16:00:01Z', outcome: 'pending' }).execute();
    await db.updateTable('schedules').set({ next_at: '2026-04-01T17:00:00Z', last_slot: '2026-04-01T16:00:00Z' }).where('id', '=', id).execute();
    await at('2026-04-01T16:00:30Z');
    assert.equal((await firings(t, id)).at(-1)!.outcome, 'pending', 'not while its replica may still be acting');
    await at('2026-04-01T16:01:30Z');
    await at('2026-04-01T16:01:31Z');
    const taken = (await firings(t, id)).at(-1)!;
    assert.match(taken.outcome, /^task task_\w+ queued \(late\)$/);
    assert.equal((await db.selectFrom('tasks').select('id').where('trigger_key', '=', `schedule:${id}@2026-04-01T16:00:00.000Z`).execute()).length, 1);
    await removeAll();
  });

  test('paused it skips its slots; resumed it fires from the next; only its creator or an admin may', async () => {
    now = new Date('2026-05-04T08:00:00Z');
    const id = (await taskSchedule('alice', { cron: '*/15 * * * *' })).body.id as string;
    const bob = await as('bob')('POST', `/api/orgs/default/schedules/${id}/pause`);
    assert.equal(bob.status, 403);
    assert.match(bob.body.error.message, /only they or an admin may pause, resume or remove it/);
    const paused = await cli('alice', ['schedule', 'pause', id]);
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, new RegExp(`${id} paused`));
    assert.equal((await as('alice')('GET', `/api/orgs/default/schedules/${id}`)).body.nextAt, null);
    await at('2026-05-04T08:15:01Z');
    await at('2026-05-04T08:31:00Z');
    assert.equal((await firings(t, id)).length, 0, 'a paused schedule fires nothing');
    const resumed = await as('carol')('POST', `/api/orgs/default/schedules/${id}/resume`);
    assert.equal(resumed.status, 200, 'an admin may resume it');
    assert.equal(resumed.body.nextAt, '2026-05-04T08:45:00.000Z', 'slots passed while paused are skipped');
    await at('2026-05-04T08:45:01Z');
    assert.deepEqual((await firings(t, id)).map((f) => f.slot.toISOString()), ['2026-05-04T08:45:00.000Z']);

    const list = await cli('alice', ['schedule', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`${id}\\s+\\*/15 \\* \\* \\* \\*\\s+UTC\\s+task on nightly: Tidy the changelog\\s+Mon 2026-05-04 09:00 UTC\\s+task task_\\w+ queued`));
    const rm = await cli('alice', ['schedule', 'rm', id]);
    assert.equal(rm.code, 0, rm.stderr);
    await at('2026-05-04T09:00:01Z');
    assert.equal((await firings(t, id)).length, 1, 'a removed schedule fires no more');
    assert.equal((await as('alice')('GET', `/api/orgs/default/schedules/${id}`)).status, 404);
    const actions = await t.berth.database.db.selectFrom('audit_entries').select(['action', 'actor']).where('target', '=', id).orderBy('seq').execute();
    assert.deepEqual(actions.map((a) => a.action), ['schedule.create', 'schedule.pause', 'schedule.resume', 'schedule.delete']);
  });

  test('env schedule keeps office hours: stopped at 19:00 and started at 07:00 on weekdays, Berlin time', async () => {
    now = new Date('2026-06-01T12:00:00Z'); // a Monday
    const env = await as('alice')('POST', '/api/orgs/default/environments', { name: 'alice-env' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    const set = await cli('alice', ['env', 'schedule', 'alice-env', '--stop', '0 19 * * *', '--start', '0 7 * * 1-5', '--timezone', 'Europe/Berlin']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /stop\s+0 19 \* \* \*\s+Europe\/Berlin\s+Mon 2026-06-01 19:00 CEST/);
    assert.match(set.stdout, /start\s+0 7 \* \* 1-5\s+Europe\/Berlin\s+Tue 2026-06-02 07:00 CEST/);
    const state = async () => (await as('alice')('GET', `/api/orgs/default/environments/${env.body.id}`)).body.state as string;

    await at('2026-06-01T17:00:01Z');
    assert.equal(await state(), 'stopped');
    await at('2026-06-02T05:00:01Z');
    assert.equal(await state(), 'running');
    const { items } = (await as('alice')('GET', `/api/orgs/default/schedules?environment=alice-env`)).body;
    const stop = items.find((s: { action: string }) => s.action === 'stop');
    assert.match(stop.lastFiring.outcome, /^environment stopped$/);
    const audited = await t.berth.database.db.selectFrom('audit_entries').selectAll().where('actor', '=', `schedule:${stop.id}`).execute();
    assert.deepEqual(audited.map((a) => [a.action, a.target]), [['environment.stop', env.body.id]]);

    // A refused rule changes nothing, not even the other one given with it.
    const refused = await cli('alice', ['env', 'schedule', 'alice-env', '--stop', '0 20 * * *', '--start', '0 25 * * *']);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /Invalid value for hour/);
    assert.deepEqual((await as('alice')('GET', `/api/orgs/default/schedules?environment=alice-env`)).body.items.map((s: { cron: string }) => s.cron).sort(), ['0 19 * * *', '0 7 * * 1-5']);
    // Again for the stop rule replaces it; --clear removes both.
    const again = await cli('alice', ['env', 'schedule', 'alice-env', '--stop', '30 18 * * *', '--timezone', 'Europe/Berlin', '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout).map((s: { action: string; cron: string }) => `${s.action} ${s.cron}`).sort(), ['start 0 7 * * 1-5', 'stop 30 18 * * *']);
    const cleared = await cli('alice', ['env', 'schedule', 'alice-env', '--clear']);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.match(cleared.stdout, /2 schedules of alice-env removed/);
    assert.equal((await as('alice')('GET', `/api/orgs/default/schedules?environment=alice-env`)).body.items.length, 0);
  });

  test("a member cannot schedule another's environment; an admin can, and the schedule acts with its creator's rights", async () => {
    now = new Date('2026-06-03T12:00:00Z');
    const bob = await as('bob')('POST', '/api/orgs/default/schedules', { kind: 'environment', environment: 'alice-env', action: 'stop', cron: '0 19 * * *' });
    assert.equal(bob.status, 403, JSON.stringify(bob.body));
    assert.match(bob.body.error.message, /environment 'alice-env' belongs to alice@example\.com/);
    const viaCli = await cli('bob', ['env', 'schedule', 'alice-env', '--stop', '0 19 * * *']);
    assert.equal(viaCli.code, 4, viaCli.stderr);
    const vic = await as('vic')('POST', '/api/orgs/default/schedules', { kind: 'environment', environment: 'alice-env', action: 'stop', cron: '0 19 * * *' });
    assert.equal(vic.status, 403);
    assert.equal((await as('bob')('GET', '/api/orgs/default/schedules')).body.items.length, 0, 'nothing was made');

    const carol = await as('carol')('POST', '/api/orgs/default/schedules', { kind: 'environment', environment: 'alice-env', action: 'stop', cron: '0 19 * * *' });
    assert.equal(carol.status, 201, JSON.stringify(carol.body));
    // Carol is no longer an admin when it fires: it acts with her rights now, and refuses.
    assert.equal((await t.api('PUT', '/api/orgs/default/members/carol%40example.com', { role: 'member' })).status, 200);
    await at('2026-06-03T19:00:01Z');
    const [f] = await firings(t, carol.body.id);
    assert.match(f!.outcome, /^failed: environment 'alice-env' belongs to alice@example\.com/);
    const refused = await t.berth.database.db.selectFrom('audit_entries').selectAll().where('actor', '=', `schedule:${carol.body.id}`).executeTakeFirstOrThrow();
    assert.equal(refused.action, 'trigger.refused');
    await removeAll();
  });
});

describe('two control planes on one PostgreSQL', { skip: ON_POSTGRES ? false : 'replicas need PostgreSQL: run with BERTH_TEST_DATABASE=postgres' }, () => {
  let replicas: TestReplicas | undefined;
  let a: TestBerth;
  let b: TestBerth;

  before(async () => {
    replicas = await startReplicas(2, quiet);
    [a, b] = replicas.replicas as [TestBerth, TestBerth];
  });

  after(async () => {
    await replicas?.close();
  });

  test('each slot fires once, whichever replica gets there first', async () => {
    now = new Date('2026-07-01T00:00:30Z');
    const p = await a.api('POST', '/api/orgs/default/projects', { name: 'nightly', repoUrl: repo });
    assert.equal(p.status, 201, JSON.stringify(p.body));
    const made = await b.api('POST', '/api/orgs/default/schedules', { kind: 'task', project: 'nightly', goal: 'Every minute', agent: 'command', command: 'true', cron: '* * * * *' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.id as string;
    // And a stop rule for a stopped environment: every firing, on either replica, writes its own
    // audit entry, so acting twice on a slot would show (a task started twice is one task, by its key).
    const env = await a.api('POST', '/api/orgs/default/environments', { name: 'office' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    assert.equal((await a.api('POST', `/api/orgs/default/environments/${env.body.id}/stop`)).status, 200);
    const stop = await b.api('POST', '/api/orgs/default/schedules', { kind: 'environment', environment: 'office', action: 'stop', cron: '* * * * *' });
    assert.equal(stop.status, 201, JSON.stringify(stop.body));
    // Twenty slots, each looked at by both replicas at once (and by their own loops).
    for (let m = 1; m <= 20; m++) {
      now = new Date(Date.parse('2026-07-01T00:00:01Z') + m * 60_000);
      await Promise.all([schedulesOf(a).tick(), schedulesOf(b).tick(), schedulesOf(a).tick(), schedulesOf(b).tick()]);
    }
    const fired = await firings(a, id);
    assert.deepEqual(fired.map((f) => f.slot.toISOString()), Array.from({ length: 20 }, (_, i) => new Date(Date.parse('2026-07-01T00:01:00Z') + i * 60_000).toISOString()));
    for (const f of fired) assert.match(f.outcome, /^task task_\w+ queued$/);
    const tasks = await a.berth.database.db.selectFrom('tasks').select(['id', 'trigger_key']).where('triggered_by', '=', `schedule:${id}`).execute();
    assert.equal(tasks.length, 20, 'one task per slot');
    assert.equal(new Set(fired.map((f) => f.task_id)).size, 20);
    const stops = await firings(a, stop.body.id);
    assert.deepEqual(stops.map((f) => [f.slot.toISOString(), f.outcome]), fired.map((f) => [f.slot.toISOString(), 'environment stopped']));
    const audited = await a.berth.database.db.selectFrom('audit_entries').select('details').where('actor', '=', `schedule:${stop.body.id}`).execute();
    assert.deepEqual(audited.map((e) => (e.details as { slot: string }).slot).sort(), stops.map((f) => f.slot.toISOString()), 'one audit entry per slot');
  });
});
