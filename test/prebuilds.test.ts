// Prebuilds (issue #16): a project's repository set up once and snapshotted; tasks start from
// it, catch up by the commits since, and rerun only the incremental steps whose paths changed.
// A failed prebuild never serves (the last good one does), a changed spec is not served, old
// ones expire, a builder killed mid-build leaves nothing half-made, a schedule fires once.
// sandbox: none (test/fakes/fake-runner.ts); test/prebuilds-sandbox.test.ts runs one for real.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { createBareRepo, pushCommit, runGit } from './fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';
import { ScheduledPrebuilds } from '../src/server/prebuilds/schedule.ts';
import { snapshotNameOf } from '../src/server/prebuilds/service.ts';
import { globMatch, planIncremental } from '../src/server/prebuilds/incremental.ts';

// The incremental step counts its runs in a file the repository ignores; so does the one-off step.
const BERTH_YAML = [
  'setup:',
  '  - run: echo ci >> .ci-runs && mkdir -p node_modules && cp package-lock.json node_modules/lock-seen',
  '    incremental: true',
  '    when: [package-lock.json]',
  '  - echo once >> .once-runs',
  '  - test ! -e FAIL',
  '',
].join('\n');
const FILES = {
  'berth.yaml': BERTH_YAML,
  '.gitignore': '.ci-runs\n.once-runs\nnode_modules/\n',
  'package-lock.json': '{ "v": 1 }\n',
  'README.md': 'one\n',
  'old.txt': 'deleted later\n',
};
// What the agent reports: how often each step ran in its environment, and what it sees.
const AGENT = 'cat .ci-runs > ci-runs.txt; cat .once-runs > once-runs.txt; cat node_modules/lock-seen > lock-seen.txt; git rev-parse HEAD > head.txt; if [ -e old.txt ]; then echo present; else echo gone; fi > old-state.txt';

let t: TestBerth;
let root: string;
let bare: string;

const api = async <T = any>(method: string, path: string, body?: unknown) => {
  const r = await t.api<T>(method, `/api/orgs/default${path}`, body);
  return r;
};

async function prebuild(project = 'shop') {
  const r = await api('POST', `/projects/${project}/prebuilds`);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return waitFor(`prebuild ${r.body.id}`, async () => {
    const p = (await api('GET', `/prebuilds/${r.body.id}`)).body;
    return p.state === 'ready' || p.state === 'failed' ? p : null;
  }, 120_000);
}

async function runTask(project = 'shop') {
  const r = await api('POST', '/tasks', { goal: 'report what the environment holds', project, agent: 'command', command: AGENT });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await waitFor(`task ${r.body.id}`, async () => {
    const body = (await api('GET', `/tasks/${r.body.id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  }, 120_000);
  assert.equal(done.state, 'succeeded', done.stateReason);
  const events = (await api('GET', `/tasks/${r.body.id}/events`)).body.items as { data: Record<string, any> }[];
  const logs = events.filter((e) => e.data.type === 'log').map((e) => String(e.data.message));
  const setups = events.filter((e) => e.data.type === 'command' && e.data.phase === 'setup').map((e) => String(e.data.cmd));
  const file = async (name: string) => runGit(['show', `${done.branch}:${name}`], { cwd: bare });
  return { task: done, logs, setups, file };
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-prebuilds-'));
  bare = (await createBareRepo({ root, name: 'shop.git', files: FILES })).path;
  t = await startTestBerth({ fake: true });
  const r = await api('POST', '/projects', { name: 'shop', repoUrl: bare });
  assert.equal(r.status, 201, JSON.stringify(r.body));
});
after(async () => {
  await t?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('incremental steps', () => {
  test('globs and decisions', () => {
    assert.ok(globMatch('package-lock.json', 'package-lock.json'));
    assert.ok(!globMatch('package-lock.json', 'web/package-lock.json'));
    assert.ok(globMatch('**/package-lock.json', 'web/package-lock.json'));
    assert.ok(globMatch('**/package-lock.json', 'package-lock.json'));
    assert.ok(globMatch('src/*.ts', 'src/a.ts') && !globMatch('src/*.ts', 'src/x/a.ts'));
    assert.ok(globMatch('requirements/', 'requirements/dev.txt'));
    const d = planIncremental([{ run: 'npm ci', when: ['package-lock.json'] }, { run: 'make gen', when: null }, { run: 'serve', when: null, always: true }], ['README.md']);
    assert.deepEqual(d.map((x) => x.rerun), [false, true, true]);
    assert.deepEqual(planIncremental([{ run: 'make gen', when: null }], []).map((x) => x.rerun), [false]);
  });
});

describe('prebuilds on the fake runner', () => {
  let first: any;

  test('berth prebuild builds one: the default branch head, set up, snapshotted, the build environment gone', async () => {
    const head = (await runGit(['rev-parse', 'refs/heads/main'], { cwd: bare })).trim();
    const r = await t.cli(['prebuild', 'shop', '--json']);
    assert.equal(r.code, 0, r.stderr);
    first = JSON.parse(r.stdout);
    assert.equal(first.state, 'ready', first.stateReason);
    assert.equal(first.commit, head);
    assert.equal(first.trigger, 'manual');
    assert.ok(first.snapshotId && first.specKey && first.runnerId);
    assert.ok(first.log.some((l: string) => l.includes('$ echo once >> .once-runs')), first.log.join('\n'));
    assert.equal(await t.fake!.hasSnapshot(first.snapshotId), true);
    // Removed once snapshotted (the runner frees its files in the background).
    await waitFor('the build environment to go', async () => {
      const envs = await t.berth.database.db.selectFrom('environments').select(['name', 'state']).where('name', 'like', 'prebuild-%').execute();
      return envs.length > 0 && envs.every((e) => e.state === 'deleted');
    });
    const list = await t.cli(['prebuild', 'list', 'shop']);
    assert.match(list.stdout, new RegExp(`${first.id}\\s+ready\\s+manual\\s+${head.slice(0, 12)}`));
    const show = await t.cli(['project', 'show', 'shop']);
    assert.match(show.stdout, new RegExp(`prebuild\\s+ready: ${first.id} at ${head.slice(0, 12)} \\(ready, \\d+s ago`));
  });

  test('a task starts from it: nothing reruns at the same commit', async () => {
    const { logs, setups, file } = await runTask();
    assert.ok(logs.some((l) => l.startsWith(`from prebuild ${first.id} at ${first.commit.slice(0, 12)}: 0 commit(s) ahead`) && l.includes('skips `echo ci')), logs.join('\n'));
    assert.deepEqual(setups, [], 'no setup step ran in the task');
    assert.equal(await file('ci-runs.txt'), 'ci\n');
    assert.equal(await file('once-runs.txt'), 'once\n');
  });

  test('commits since: fetched and checked out, deleted files gone, ignored files kept, the incremental step skipped', async () => {
    const sha = await pushCommit({ bare, branch: 'main', files: { 'README.md': 'two\n', 'old.txt': null }, message: 'docs' });
    const { logs, setups, file } = await runTask();
    assert.ok(logs.some((l) => l.startsWith(`from prebuild ${first.id} at ${first.commit.slice(0, 12)}: 1 commit(s) ahead, 2 file(s) changed; skips \`echo ci`) && l.includes('(none of package-lock.json changed)')), logs.join('\n'));
    assert.deepEqual(setups, []);
    assert.equal(await file('head.txt'), `${sha}\n`);
    assert.equal(await file('README.md'), 'two\n');
    assert.equal(await file('old-state.txt'), 'gone\n');
    assert.equal(await file('ci-runs.txt'), 'ci\n');
    assert.equal(await file('lock-seen.txt'), '{ "v": 1 }\n', 'node_modules from the prebuild is there');
  });

  test('the lockfile changed: the incremental step reruns, the others do not', async () => {
    await pushCommit({ bare, branch: 'main', files: { 'package-lock.json': '{ "v": 2 }\n' }, message: 'bump' });
    const { logs, setups, file } = await runTask();
    assert.ok(logs.some((l) => l.includes('2 commit(s) ahead') && l.includes('reruns `echo ci') && l.includes('(package-lock.json changed)')), logs.join('\n'));
    assert.equal(setups.length, 1);
    assert.match(setups[0]!, /^echo ci/);
    assert.equal(await file('ci-runs.txt'), 'ci\nci\n');
    assert.equal(await file('once-runs.txt'), 'once\n');
    assert.equal(await file('lock-seen.txt'), '{ "v": 2 }\n');
  });

  test('a failed prebuild never serves: the last good one does, and project show says both', async () => {
    await pushCommit({ bare, branch: 'main', files: { FAIL: 'x\n' }, message: 'breaks setup' });
    const failed = await prebuild();
    assert.equal(failed.state, 'failed');
    assert.match(failed.stateReason, /setup command `test ! -e FAIL` exited with 1/);
    assert.equal(failed.snapshotId, null);
    const show = (await api('GET', '/projects/shop')).body;
    assert.equal(show.prebuilds.current.id, first.id);
    assert.equal(show.prebuilds.latest.id, failed.id);
    const { logs } = await runTask();
    assert.ok(logs.some((l) => l.startsWith(`from prebuild ${first.id}`)), logs.join('\n'));
    // Fixed: the next one is ready and serves.
    await pushCommit({ bare, branch: 'main', files: { FAIL: null }, message: 'fix' });
    const again = await prebuild();
    assert.equal(again.state, 'ready', again.stateReason);
    const next = await runTask();
    assert.ok(next.logs.some((l) => l.startsWith(`from prebuild ${again.id} at ${again.commit.slice(0, 12)}: 0 commit(s) ahead`)), next.logs.join('\n'));
  });

  test('old prebuilds expire past keep; their snapshots go; the newest stays', async () => {
    // Read before keep is lowered: a builder pass (every few seconds) may expire them right after.
    const before = (await api('GET', '/projects/shop/prebuilds')).body.items.filter((p: any) => p.state === 'ready');
    assert.ok(before.length >= 2);
    assert.equal((await api('PATCH', '/projects/shop', { prebuild: { keep: 1 } })).status, 200);
    const newest = await prebuild();
    assert.equal(newest.state, 'ready');
    await t.berth.prebuildBuilder.idle();
    const items = (await api('GET', '/projects/shop/prebuilds')).body.items as any[];
    assert.deepEqual(items.filter((p) => p.state === 'ready').map((p) => p.id), [newest.id]);
    for (const old of before) {
      assert.equal(items.find((p) => p.id === old.id).state, 'expired');
      assert.equal(await t.fake!.hasSnapshot(old.snapshotId), false);
      const snap = await t.berth.database.db.selectFrom('snapshots').select('deleted_at').where('id', '=', old.snapshotId).executeTakeFirstOrThrow();
      assert.ok(snap.deleted_at);
    }
    // The current one cannot be removed by hand.
    const rm = await api('DELETE', `/snapshots/${newest.snapshotId}`);
    assert.equal(rm.status, 409);
    assert.match(rm.body.error.message, /current prebuild/);
  });

  test('a changed spec is not served', async () => {
    assert.equal((await api('PATCH', '/projects/shop', { work: { setup: ['echo other >> .once-runs'] } })).status, 200);
    const { logs, setups } = await runTask();
    assert.ok(logs.some((l) => /^not from a prebuild: prebuild pbd_\w+ was built for another spec/.test(l)), logs.join('\n'));
    assert.deepEqual(setups, ['echo other >> .once-runs']);
    assert.equal((await api('PATCH', '/projects/shop', { work: { setup: null } })).status, 200);
  });

  test('a builder killed mid-build leaves nothing half-made: its row fails, its environment and snapshot go', async () => {
    const db = t.berth.database.db;
    const project = await db.selectFrom('projects').select(['id', 'org_id']).where('name', '=', 'shop').executeTakeFirstOrThrow();
    const id = 'pbd_killedmidway1';
    // What a killed builder leaves: a building row it stopped heartbeating, its environment, a snapshot it just made.
    const env = (await api('POST', '/environments', { name: `prebuild-${id.slice(4)}`, project: 'shop' })).body;
    assert.ok(env.id, JSON.stringify(env));
    const snap = await api('POST', `/environments/${env.id}/snapshot`, { name: snapshotNameOf(id) });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    await db.insertInto('prebuilds').values({ id, org_id: project.org_id, project_id: project.id, state: 'building', trigger: 'manual', created_by: 'test', claimed_by: 'replica_dead', heartbeat_at: new Date(Date.now() - 10 * 60_000), log: '[]' }).execute();
    // The builder's own sweep may reach the row first (its heartbeat is long stale): either way
    // one recovery fails it and removes what it left.
    await t.berth.prebuildBuilder.recover();
    await t.berth.prebuildBuilder.idle();
    const row = await db.selectFrom('prebuilds').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(row.state, 'failed');
    assert.match(row.state_reason!, /interrupted/);
    assert.equal(row.snapshot_id, null);
    const gone = await api('GET', `/environments/${env.id}`);
    assert.ok(gone.status === 404 || gone.body.state === 'deleted', JSON.stringify(gone.body));
    assert.equal(await t.fake!.hasSnapshot(snap.body.id), false);
    // Nowhere is a ready prebuild without its snapshot.
    const orphans = await db.selectFrom('prebuilds as p').leftJoin('snapshots as s', 's.id', 'p.snapshot_id').select(['p.id']).where('p.state', '=', 'ready').where((eb) => eb.or([eb('s.id', 'is', null), eb('s.deleted_at', 'is not', null), eb('s.state', '!=', 'ready')])).execute();
    assert.deepEqual(orphans, []);
  });

  test('a schedule queues one prebuild per slot, once across two replicas, and none for slots before it was set', async () => {
    const r = await api('PATCH', '/projects/shop', { prebuild: { schedule: '0 3 * * *' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.prebuild.schedule, '0 3 * * *');
    assert.equal((await api('PATCH', '/projects/shop', { prebuild: { schedule: 'not cron' } })).status, 400);
    const db = t.berth.database.db;
    const count = async () => Number((await db.selectFrom('prebuilds').select((eb) => eb.fn.countAll<string>().as('n')).where('trigger', '=', 'schedule').executeTakeFirstOrThrow()).n);
    const at = (iso: string) => () => new Date(iso);
    const replica = (now: () => Date) => new ScheduledPrebuilds({ db, prebuilds: t.berth.prebuilds, logger: pino({ level: 'silent' }), now });
    // Today 03:00 is before the schedule was set (now): not made up.
    const today3 = new Date();
    today3.setUTCHours(3, 0, 0, 0);
    const beforeSet = today3 < new Date() ? today3 : new Date(today3.getTime() - 86_400_000);
    assert.deepEqual(await replica(at(new Date(beforeSet.getTime() + 60_000).toISOString())).fire(), []);
    const next = new Date(beforeSet.getTime() + 86_400_000 + 30_000).toISOString();
    const fired = await Promise.all([replica(at(next)).fire(), replica(at(next)).fire()]);
    assert.equal(fired.flat().length, 1, 'one replica fired it');
    assert.equal(await count(), 1);
    assert.deepEqual(await replica(at(next)).fire(), [], 'the same slot does not fire again');
    await waitFor('the scheduled prebuild', async () => ((await api('GET', '/projects/shop/prebuilds')).body.items[0].state === 'ready' ? true : null), 120_000);
    assert.equal((await api('PATCH', '/projects/shop', { prebuild: null })).status, 200);
  });
});
