// Warm pools (src/server/prebuilds/warm-pool.ts) on the fake runner, on both databases: a
// project's pool fills from its newest ready prebuild, a claim hands one to a task and the pool
// refills, a newer prebuild rolls the pool and a claim never returns one of the older, lowering
// N removes the extras, concurrent claims never share one, and another org never gets one.
// Prebuilds are rows here over snapshots made through the API, so the builder is not needed.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { auditWords } from '../src/shared/audit-words.ts';
import { newId } from '../src/shared/ids.ts';
import { taskScope } from '../src/server/tasks/sandbox.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { sh, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let orgId: string;
let ownerId: string;
const NOT_A_REPO = mkdtempSync(join(tmpdir(), 'berth-warm-repo-'));
let made = 0;

before(async () => {
  t = await startTestBerth({ fake: true });
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  ownerId = (await t.berth.database.db.selectFrom('users').select('id').executeTakeFirstOrThrow()).id;
});
after(async () => {
  await t?.destroy();
});

const db = () => t.berth.database.db;

/** A ready prebuild of the project whose files hold `/workspace/marker` = `marker`, newer than any before it. */
async function prebuild(org: string, orgName: string, projectId: string, marker: string): Promise<string> {
  const env = await t.api('POST', `/api/orgs/${orgName}/environments`, { name: `built-${++made}` });
  assert.equal(env.status, 201, JSON.stringify(env.body));
  assert.equal((await sh(t, env.body.id, `echo ${marker} > /workspace/marker`, {})).exitCode, 0);
  const snap = await t.api('POST', `/api/orgs/${orgName}/environments/${env.body.id}/snapshot`, {});
  assert.equal(snap.status, 201, JSON.stringify(snap.body));
  await db().updateTable('snapshots').set({ kind: 'prebuild', project_id: projectId }).where('id', '=', snap.body.id).execute();
  const id = newId('pbd');
  await db()
    .insertInto('prebuilds')
    .values({ id, org_id: org, project_id: projectId, state: 'ready', trigger: 'manual', snapshot_id: snap.body.id, runner_id: snap.body.runnerId, environment_id: env.body.id, created_by: 'system', created_at: new Date(Date.now() + made * 1000) })
    .execute();
  return id;
}

async function pool(projectId: string) {
  return db().selectFrom('environments').selectAll().where('pool_project_id', '=', projectId).where('state', '<>', 'deleted').orderBy('created_at').execute();
}

const claim = (projectId: string, prebuildId: string, name: string, org = orgId) => {
  const taskId = newId('task');
  return t.berth.warmPools.claim({ scope: taskScope(org, taskId, ownerId), projectId, prebuildId, name, taskId });
};

test('a pool fills to N from the newest prebuild; a claim hands one to the task and the pool refills', async () => {
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'web', repoUrl: NOT_A_REPO });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  const pb = await prebuild(orgId, 'default', p.body.id, 'one');
  const set = await t.cli(['project', 'update', 'web', '--warm', '2']);
  assert.equal(set.code, 0, set.stderr);
  assert.equal((await t.cli(['project', 'update', 'web', '--warm', '21'])).code === 0, false, '--warm is at most 20');
  await t.berth.warmPools.refill();

  const envs = await pool(p.body.id);
  assert.equal(envs.length, 2);
  for (const e of envs) {
    assert.equal(e.state, 'running');
    assert.equal(e.pool_prebuild_id, pb);
    assert.equal(e.owner_id, null, 'a pool environment is nobody’s until claimed');
    assert.match(e.name, /^warm-web-[0-9a-f]{6}$/);
    assert.equal(e.project_id, p.body.id, 'made with the project, so its secrets and policy are the project’s');
    assert.equal((await sh(t, e.id, 'cat /workspace/marker')).stdout, 'one\n', 'it has the prebuild’s files');
  }
  const show = await t.cli(['project', 'show', 'web']);
  assert.match(show.stdout, new RegExp(`warm pool +2 wanted: 2 ready, from prebuild ${pb}`));
  const list = await t.cli(['env', 'list', '--json']);
  const listed = JSON.parse(list.stdout).filter((e: { pool: unknown }) => e.pool);
  assert.deepEqual(listed.map((e: { pool: unknown }) => e.pool), [{ projectId: p.body.id, prebuildId: pb }, { projectId: p.body.id, prebuildId: pb }]);
  assert.match((await t.cli(['env', 'list'])).stdout, /warm-web-\S+ +running +warm pool/);

  const taskId = newId('task');
  const id = await t.berth.warmPools.claim({ scope: taskScope(orgId, taskId, ownerId), projectId: p.body.id, prebuildId: pb, name: 'task-web-1', taskId });
  assert.ok(id);
  assert.equal(id, envs[0]!.id, 'the oldest goes first');
  const claimed = await db().selectFrom('environments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  assert.deepEqual([claimed.name, claimed.task_id, claimed.owner_id, claimed.pool_project_id, claimed.pool_prebuild_id, claimed.state], ['task-web-1', taskId, ownerId, null, null, 'running']);
  const audit = await db().selectFrom('audit_entries').select(['actor', 'action', 'target', 'details']).where('target', '=', id).where('action', '=', 'environment.claim').executeTakeFirstOrThrow();
  assert.equal(audit.actor, `task:${taskId}`);
  assert.equal(auditWords(audit), `environment taken from a warm pool by task ${taskId}: ${id}`);
  assert.equal((await sh(t, id, 'cat /workspace/marker')).stdout, 'one\n');

  await t.berth.warmPools.refill();
  const refilled = await pool(p.body.id);
  assert.equal(refilled.length, 2, 'the pool is topped up again');
  assert.ok(!refilled.some((e) => e.id === id), 'the claimed one left the pool');
});

test('a newer prebuild rolls the pool: a claim never returns an environment of the older one', async () => {
  const projectId = (await db().selectFrom('projects').select('id').where('name', '=', 'web').executeTakeFirstOrThrow()).id;
  const old = (await pool(projectId))[0]!.pool_prebuild_id!;
  const before = await pool(projectId);
  const pb2 = await prebuild(orgId, 'default', projectId, 'two');
  // Before any refill: the old pool is still there, and still not served.
  assert.equal(await claim(projectId, old, 'task-stale'), undefined);
  assert.equal(await claim(projectId, pb2, 'task-none-yet'), undefined, 'nothing of the new prebuild is started yet');
  await t.berth.warmPools.refill();
  const rolled = await pool(projectId);
  assert.equal(rolled.length, 2);
  for (const e of rolled) {
    assert.equal(e.pool_prebuild_id, pb2);
    assert.equal((await sh(t, e.id, 'cat /workspace/marker')).stdout, 'two\n');
  }
  for (const e of before) assert.equal((await db().selectFrom('environments').select('state').where('id', '=', e.id).executeTakeFirstOrThrow()).state, 'deleted', 'the older prebuild’s are removed');
  assert.equal(await claim(projectId, old, 'task-stale-2'), undefined);
  const id = await claim(projectId, pb2, 'task-fresh');
  assert.ok(id);
  assert.equal((await sh(t, id, 'cat /workspace/marker')).stdout, 'two\n');
});

test('a broken pool environment is replaced; lowering N removes the extras; 0 empties it', async () => {
  const projectId = (await db().selectFrom('projects').select('id').where('name', '=', 'web').executeTakeFirstOrThrow()).id;
  await t.berth.warmPools.refill();
  const [first] = await pool(projectId);
  assert.equal((await t.api('POST', `/api/orgs/default/environments/${first!.id}/stop`)).status, 200);
  await t.berth.warmPools.refill();
  const now = await pool(projectId);
  assert.equal(now.length, 2);
  assert.ok(now.every((e) => e.state === 'running' && e.id !== first!.id), 'the stopped one was removed and replaced');

  assert.equal((await t.cli(['project', 'update', 'web', '--warm', '1'])).code, 0);
  await t.berth.warmPools.refill();
  assert.equal((await pool(projectId)).length, 1);
  assert.match((await t.cli(['project', 'show', 'web'])).stdout, /warm pool +1 wanted: 1 ready/);
  assert.equal((await t.cli(['project', 'update', 'web', '--warm', '0'])).code, 0);
  await t.berth.warmPools.refill();
  assert.equal((await pool(projectId)).length, 0);
  assert.match((await t.cli(['project', 'show', 'web'])).stdout, /warm pool +none/);
});

test('concurrent claims never get the same environment', async () => {
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'busy', repoUrl: NOT_A_REPO, warm: 3 });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  assert.equal(p.body.warm, 3);
  const pb = await prebuild(orgId, 'default', p.body.id, 'busy');
  await t.berth.warmPools.refill();
  const ready = (await pool(p.body.id)).map((e) => e.id);
  assert.equal(ready.length, 3);
  const got = await Promise.all(Array.from({ length: 6 }, (_, i) => claim(p.body.id, pb, `task-busy-${i}`)));
  const ids = got.filter((id): id is string => id !== undefined);
  assert.ok(ids.length >= 3, `every ready one is claimed once (${ids.length})`);
  assert.equal(new Set(ids).size, ids.length, 'no environment went to two claims');
  for (const [i, id] of got.entries()) {
    if (id === undefined) continue;
    assert.equal((await db().selectFrom('environments').select('name').where('id', '=', id).executeTakeFirstOrThrow()).name, `task-busy-${i}`);
  }
});

test("another org's project never gets one, and removing the project removes its pool", async () => {
  const busy = (await db().selectFrom('projects').select('id').where('name', '=', 'busy').executeTakeFirstOrThrow()).id;
  await t.berth.warmPools.refill();
  const pb = (await pool(busy))[0]!.pool_prebuild_id!;
  assert.equal((await t.api('POST', '/api/orgs', { name: 'other' })).status, 201);
  const other = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'other').id;
  const theirs = await t.api('POST', '/api/orgs/other/projects', { name: 'busy', repoUrl: NOT_A_REPO, warm: 2 });
  assert.equal(theirs.status, 201, JSON.stringify(theirs.body));
  assert.equal(await claim(busy, pb, 'task-other', other), undefined, "another org's task cannot take this org's");
  assert.equal(await claim(theirs.body.id, pb, 'task-other-2', other), undefined);
  await t.berth.warmPools.refill();
  assert.equal((await pool(theirs.body.id)).length, 0, 'no prebuild of its own: nothing is made from this org’s');
  assert.equal((await pool(busy)).length, 3, 'this org’s pool is untouched');

  // The claimed ones are tasks' now: they keep the project until removed.
  const claimed = await db().selectFrom('environments').select('id').where('project_id', '=', busy).where('pool_project_id', 'is', null).where('state', '<>', 'deleted').execute();
  for (const e of claimed) assert.equal((await t.api('DELETE', `/api/orgs/default/environments/${e.id}`)).status, 200);
  const rm = await t.api('DELETE', '/api/orgs/default/projects/busy');
  assert.equal(rm.status, 200, JSON.stringify(rm.body));
  assert.equal((await pool(busy)).length, 0, 'its pool went with it');
});

test('a task of a project with a warm pool starts in one of its environments, and says so', async () => {
  const bare = (await createBareRepo({ root: mkdtempSync(join(tmpdir(), 'berth-warm-task-')), name: 'shop.git', files: { 'berth.yaml': 'setup:\n  - echo once >> .once-runs\n', '.gitignore': '.once-runs\n', 'README.md': 'one\n' } })).path;
  assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: bare, warm: 1 })).status, 201);
  const built = await t.cli(['prebuild', 'shop', '--json']);
  assert.equal(built.code, 0, built.stderr);
  const pb = JSON.parse(built.stdout);
  assert.equal(pb.state, 'ready', pb.stateReason);
  await t.berth.warmPools.refill();
  const projectId = (await db().selectFrom('projects').select('id').where('name', '=', 'shop').where('org_id', '=', orgId).executeTakeFirstOrThrow()).id;
  const [warm] = await pool(projectId);
  assert.ok(warm, 'the pool holds one from the new prebuild');
  assert.equal(warm.pool_prebuild_id, pb.id);

  const r = await t.api('POST', '/api/orgs/default/tasks', { goal: 'count the setup runs', project: 'shop', agent: 'command', command: 'cat .once-runs > once-runs.txt' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await waitFor(`task ${r.body.id}`, async () => {
    const body = (await t.api('GET', `/api/orgs/default/tasks/${r.body.id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  }, 120_000);
  assert.equal(done.state, 'succeeded', done.stateReason);
  const events = (await t.api('GET', `/api/orgs/default/tasks/${r.body.id}/events`)).body.items as { data: Record<string, any> }[];
  const logs = events.filter((e) => e.data.type === 'log').map((e) => String(e.data.message));
  assert.ok(logs.some((l) => l.startsWith(`from prebuild ${pb.id}`) && l.includes('(a warm environment)')), logs.join('\n'));
  const env = await db().selectFrom('environments').selectAll().where('id', '=', warm.id).executeTakeFirstOrThrow();
  assert.equal(env.task_id, r.body.id, 'the task ran in the pool’s environment');
  assert.equal(env.pool_project_id, null);
  assert.match(env.name, /^task-/);
  await t.berth.warmPools.refill();
  assert.equal((await pool(projectId)).length, 1, 'and the pool was topped up again');
});

test('a pool environment that cannot be made is removed, the failure shown, and not retried every poll; a new prebuild starts afresh', async () => {
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'broken', repoUrl: NOT_A_REPO });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  const pb = await prebuild(orgId, 'default', p.body.id, 'gone');
  // Its files vanish from the runner while the database still says ready.
  const snap = (await db().selectFrom('prebuilds').select('snapshot_id').where('id', '=', pb).executeTakeFirstOrThrow()).snapshot_id!;
  await t.fake!.removeSnapshot(snap);
  assert.equal((await t.api('PATCH', '/api/orgs/default/projects/broken', { warm: 1 })).status, 200);
  // Made once, failed, removed by the next pass; not made again before its backoff ends.
  await t.berth.warmPools.refill();
  await t.berth.warmPools.refill();
  await t.berth.warmPools.refill();
  const tried = await db().selectFrom('environments').select(['state', 'state_reason', 'pool_project_id']).where('name', 'like', 'warm-broken-%').execute();
  assert.equal(tried.length, 1, JSON.stringify(tried));
  assert.equal(tried[0]!.state, 'deleted');
  assert.equal((await pool(p.body.id)).length, 0);
  assert.match((await t.cli(['project', 'show', 'broken'])).stdout, /warm pool +1 wanted: 0 ready, from prebuild \S+ \(last refill failed: /);

  const next = await prebuild(orgId, 'default', p.body.id, 'back');
  await t.berth.warmPools.refill();
  const [made] = await pool(p.body.id);
  assert.equal(made?.state, 'running');
  assert.equal(made.pool_prebuild_id, next);
  assert.equal((await t.api('GET', '/api/orgs/default/projects/broken')).body.pool.lastError, null);
});
