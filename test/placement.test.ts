// Placement and runner death (issue #14), in one process: berth up's own runner plus two
// fake runners (test/fakes/fake-runner.ts) in its pool, each with a runners row that says
// its labels and memory and a heartbeat the test keeps or stops.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createBareRepo } from './fakes/git-server.ts';
import { beatAsJoined, FakeRunner, fakeImages } from './fakes/fake-runner.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';
import { runnerMemoryFrom, runnerOfflineAfterFrom, taskRetriesFrom } from '../src/server/runners/index.ts';

const GB = 1024 ** 3;
const OFFLINE_AFTER_MS = 2_000;
let t: TestBerth;
let a: FakeRunner;
let c: FakeRunner;
const repos = mkdtempSync(join(tmpdir(), 'berth-placement-repos-'));
const beating = new Map<string, NodeJS.Timeout>();

/** The runner's heartbeat, as a joined runner writes it. */
const beat = (r: FakeRunner, memoryBytes: number) => beatAsJoined(t.berth.database.db, r, memoryBytes);

function keepBeating(r: FakeRunner, memoryBytes: number): void {
  beating.set(r.id, setInterval(() => void beat(r, memoryBytes).catch(() => {}), 300));
}

function stopBeating(r: FakeRunner): void {
  clearInterval(beating.get(r.id));
  beating.delete(r.id);
}

async function labels(id: string, l: Record<string, string>): Promise<void> {
  await t.berth.database.db.updateTable('runners').set({ labels: JSON.stringify(l) }).where('id', '=', id).execute();
}

const env = (name: string) => t.api('GET', `/api/orgs/default/environments/${name}`).then((r) => r.body);
const task = (id: string) => t.berth.database.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

before(async () => {
  t = await startTestBerth({ runnerHeartbeatMs: 300, runnerOfflineAfterMs: OFFLINE_AFTER_MS, taskRetries: 1 });
  const images = fakeImages(['default']);
  a = new FakeRunner({ id: 'fake-a', name: 'fake-a', images });
  c = new FakeRunner({ id: 'fake-c', name: 'fake-c', images });
  await beat(a, 8 * GB);
  await beat(c, 4 * GB);
  await labels(a.id, { pool: 'fake', zone: 'a' });
  await labels(c.id, { pool: 'fake', zone: 'c' });
  keepBeating(a, 8 * GB);
  keepBeating(c, 4 * GB);
  t.berth.runners.add(a);
  t.berth.runners.add(c);
});

after(async () => {
  for (const r of [a, c]) {
    stopBeating(r);
    t.berth.runners.delete(r.id);
  }
  await t.destroy();
  await a.close();
  await c.close();
  rmSync(repos, { recursive: true, force: true });
});

test('environments go to a runner carrying their labels with the memory free; a full runner is skipped; none that fits is a 503 that says what to do', async () => {
  const create = (name: string, memory: string, runnerLabels: Record<string, string>) => t.api('POST', '/api/orgs/default/environments', { name, memory, runnerLabels });
  // a has 8g, c 4g: the one with the most memory left.
  const big = await create('big', '6g', { pool: 'fake' });
  assert.equal(big.status, 201, JSON.stringify(big.body));
  assert.equal(big.body.runnerId, 'fake-a');
  assert.equal(big.body.runnerName, 'fake-a');
  // a has 2g left now, c 4g: a is skipped.
  const second = await create('second', '3g', { pool: 'fake' });
  assert.equal(second.status, 201, JSON.stringify(second.body));
  assert.equal(second.body.runnerId, 'fake-c');
  // Neither can take 3g more: never overcommitted.
  const full = await create('third', '3g', { pool: 'fake' });
  assert.equal(full.status, 503);
  assert.match(full.body.error.message, /no runner with the labels pool=fake has 3G of memory free \(the most free is 2G\): stop or remove environments/);
  // Exactly what a has left fits.
  const exact = await create('exact', '2g', { zone: 'a' });
  assert.equal(exact.status, 201, JSON.stringify(exact.body));
  assert.equal(exact.body.runnerId, 'fake-a');
  assert.equal((await t.api('DELETE', '/api/orgs/default/environments/exact')).status, 200);
  // Labels nobody carries.
  const nobody = await create('gpu', '1g', { gpu: 'true' });
  assert.equal(nobody.status, 503);
  assert.match(nobody.body.error.message, /no connected runner has the labels gpu=true/);
  // Without labels, berth up's own runner (the host's memory) is the one with the most left.
  assert.equal(await t.berth.database.db.selectFrom('environments').select('id').where('name', '=', 'third').executeTakeFirst(), undefined, 'a refused create writes nothing');

  const shown = await t.cli(['env', 'show', 'second']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /runner\s+fake-c \(fake-c\)/);
  const made = await t.cli(['env', 'create', '--name', 'by-cli', '--memory', '1g', '--runner-label', 'pool=fake', '--runner-label', 'zone=a']);
  assert.equal(made.code, 0, made.stderr);
  assert.equal((await env('by-cli')).runnerId, 'fake-a');
  assert.equal((await t.cli(['env', 'rm', 'by-cli'])).code, 0);
  const bad = await t.cli(['env', 'create', '--runner-label', 'nonsense']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--runner-label takes KEY=VALUE/);
});

test('a draining runner gets nothing new; drain and undrain are an instance administrator\'s, on record', async () => {
  const drained = await t.cli(['runner', 'drain', 'fake-c']);
  assert.equal(drained.code, 0, drained.stderr);
  const list = await t.cli(['runner', 'list']);
  assert.match(list.stdout, /fake-c .*draining/);
  assert.match(list.stdout, /pool=fake,zone=c/);
  const refused = await t.api('POST', '/api/orgs/default/environments', { name: 'on-c', memory: '64m', runnerLabels: { zone: 'c' } });
  assert.equal(refused.status, 503);
  assert.match(refused.body.error.message, /draining or offline: undrain one/);
  // What runs there is untouched.
  assert.equal((await env('second')).state, 'running');
  const audit = await t.berth.database.db.selectFrom('audit_entries').select(['action', 'target']).where('action', '=', 'runner.drain').execute();
  assert.deepEqual(audit.map((e) => e.target), ['fake-c']);
  assert.equal((await t.cli(['runner', 'undrain', 'fake-c'])).code, 0);
  const placed = await t.api('POST', '/api/orgs/default/environments', { name: 'small-c', memory: '64m', runnerLabels: { zone: 'c' } });
  assert.equal(placed.status, 201, JSON.stringify(placed.body));
  // Stopped before c goes away: found stopped when it returns.
  assert.equal((await t.api('POST', '/api/orgs/default/environments/small-c/stop')).status, 200);
  const unknown = await t.api('POST', '/api/runners/nope/drain');
  assert.equal(unknown.status, 404);
});

test('a task is claimed only by a runner carrying its labels with its memory free; otherwise it waits queued', async () => {
  const { path: repo } = await createBareRepo({ root: repos, name: 'labels.git', files: { 'README.md': 'hi\n' } });
  const gpu = await t.api('POST', '/api/orgs/default/tasks', { goal: 'needs a gpu', repo, agent: 'command', command: 'true', runnerLabels: { gpu: 'true' } });
  assert.equal(gpu.status, 201, JSON.stringify(gpu.body));
  assert.deepEqual(gpu.body.runnerLabels, { gpu: 'true' });
  // A project whose environments ask for more memory than any runner has.
  const project = await t.api('POST', '/api/orgs/default/projects', { name: 'huge', repoUrl: repo, work: { limits: { memory: '256g' } }, runnerLabels: { pool: 'fake' } });
  assert.equal(project.status, 201, JSON.stringify(project.body));
  assert.deepEqual(project.body.runnerLabels, { pool: 'fake' });
  const huge = await t.api('POST', '/api/orgs/default/tasks', { goal: 'needs 256g', project: 'huge', agent: 'command', command: 'true' });
  assert.equal(huge.status, 201, JSON.stringify(huge.body));
  assert.deepEqual(huge.body.runnerLabels, { pool: 'fake' });
  // The CLI sets and shows a project's labels (and clears them).
  const updated = await t.cli(['project', 'update', 'huge', '--runner-label', 'pool=fake', '--runner-label', 'zone=c']);
  assert.equal(updated.code, 0, updated.stderr);
  assert.match((await t.cli(['project', 'show', 'huge'])).stdout, /runners\s+with labels pool=fake,zone=c/);
  const run = await t.cli(['run', 'labelled from the CLI', '--project', 'huge', '--agent', 'command', '--command', 'true', '--runner-label', 'gpu=true', '--detach']);
  assert.equal(run.code, 0, run.stderr);
  const fromCli = await task(run.stdout.trim());
  assert.deepEqual(fromCli.runner_labels, { pool: 'fake', zone: 'c', gpu: 'true' });
  await new Promise((r) => setTimeout(r, 3_000));
  for (const id of [gpu.body.id, huge.body.id, fromCli.id]) {
    const row = await task(id);
    assert.equal(row.state, 'queued');
    assert.equal(row.runner_id, null);
    assert.equal((await t.api('POST', `/api/orgs/default/tasks/${id}/cancel`)).status, 200);
  }
});

test('a runner whose heartbeat stops: its environments are lost, its task starts over on another runner and finishes there; the old run writes nothing more', async () => {
  const { path: repo } = await createBareRepo({ root: repos, name: 'death.git', files: { 'README.md': 'hi\n' } });
  const local = t.berth.runner.id;
  // Only a may claim: berth up's own runner and c drain.
  for (const name of ['local', 'fake-c']) assert.equal((await t.api('POST', `/api/runners/${name}/drain`)).status, 200);
  // a takes the task and hangs making its environment (a host that stops answering).
  a.startDelayMs = 6_000;
  const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'write done.txt', repo, agent: 'command', command: 'echo done > done.txt' });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  const claimed = await waitFor('a claims the task', async () => ((await task(id)).runner_id === 'fake-a' ? task(id) : undefined), 30_000);
  assert.equal(claimed.lease, 1);
  const oldEnv = await waitFor('the task makes its environment on a', () => t.berth.database.db.selectFrom('environments').selectAll().where('task_id', '=', id).executeTakeFirst(), 30_000);
  assert.equal(oldEnv.runner_id, 'fake-a');

  stopBeating(a);
  const requeued = await waitFor('the task is queued again', async () => ((await task(id)).attempts === 1 ? task(id) : undefined), 15_000);
  assert.equal(requeued.runner_id, null);
  assert.equal(requeued.lease, 2);
  const lostEnv = await env('big');
  assert.equal(lostEnv.state, 'lost');
  assert.match(lostEnv.stateReason, /runner 'fake-a' went offline/);
  // Start and exec are refused with the reason, naming the runner.
  const exec = await t.api('POST', '/api/orgs/default/environments/big/exec', { cmd: ['true'] });
  assert.equal(exec.status, 503);
  assert.match(exec.body.error.message, /environment 'big': it is lost \(runner 'fake-a' went offline/);
  const start = await t.api('POST', '/api/orgs/default/environments/big/start');
  assert.equal(start.status, 503);
  assert.match(start.body.error.message, /runner 'fake-a'/);
  const listed = await t.cli(['env', 'list']);
  assert.match(listed.stdout, /big\s.*lost/);
  const runners = await t.cli(['runner', 'list']);
  assert.match(runners.stdout, /fake-a .*offline/);

  // berth up's own runner takes it and finishes it (a's run, still making its environment, is fenced off).
  assert.equal((await t.api('POST', '/api/runners/local/undrain')).status, 200);
  const done = await waitFor('the task finishes on the local runner', async () => {
    const row = await task(id);
    return ['succeeded', 'failed'].includes(row.state) ? row : undefined;
  }, 180_000);
  assert.equal(done.state, 'succeeded', done.state_reason ?? '');
  assert.equal(done.runner_id, local);
  assert.equal(done.lease, 3);
  assert.equal(done.attempts, 1);
  // a's start returns after the task moved on: its run's writes are refused (the lease is not its own).
  await waitFor("a's hung start returns", async () => (await a.status(oldEnv.id)) === 'running', 15_000);
  await new Promise((r) => setTimeout(r, 1_500));
  const after = await task(id);
  assert.equal(after.state, 'succeeded');
  assert.equal(after.lease, 3);
  assert.equal(after.runner_id, local);
  // The environment a made stays lost (its runner is away), not written running by the old run.
  assert.equal((await t.berth.database.db.selectFrom('environments').select('state').where('id', '=', oldEnv.id).executeTakeFirstOrThrow()).state, 'lost');
  const events = (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body.items as { data: { type: string; state?: string; message?: string } }[];
  assert.ok(events.some((e) => e.data.type === 'log' && /runner 'fake-a' went offline .*starts over from the start on another runner \(retry 1 of 1\)/.test(e.data.message ?? '')), JSON.stringify(events));
  const states = events.filter((e) => e.data.type === 'state').map((e) => e.data.state);
  assert.deepEqual(states.slice(-3), ['provisioning', 'running', 'succeeded']);
  assert.ok(!states.includes('failed'), `the old run wrote no end: ${states.join(' ')}`);
  const shownTask = await t.cli(['task', 'show', id]);
  assert.match(shownTask.stdout, /runner\s+local:\S+, started over 1 time\(s\) after a runner went offline/);
  a.startDelayMs = 0;
});

test('past the retry limit a task whose runner goes offline fails with the reason', async () => {
  const { path: repo } = await createBareRepo({ root: repos, name: 'limit.git', files: { 'README.md': 'hi\n' } });
  const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'already retried', repo, agent: 'command', command: 'true', runnerLabels: { gpu: 'true' } });
  const id = created.body.id as string;
  // As if c had claimed it after one start-over already (no runner carries gpu=true, so none claims it here).
  await t.berth.database.db.updateTable('tasks').set({ state: 'running', step: 'agent', runner_id: 'fake-c', lease: 4, attempts: 1 }).where('id', '=', id).execute();
  stopBeating(c);
  const failed = await waitFor('the task fails', async () => ((await task(id)).state === 'failed' ? task(id) : undefined), 15_000);
  assert.match(failed.state_reason ?? '', /runner 'fake-c' went offline .* while the task was at step 'agent', and it had been started over 1 time\(s\) already \(BERTH_TASK_RETRIES=1\): retry it with `berth task retry/);
  assert.equal(failed.lease, 5);
  assert.equal((await env('second')).state, 'lost');
  assert.equal((await env('small-c')).state, 'lost');
});

test('a runner that comes back: its lost environments are reconciled as found (running, stopped, gone)', async () => {
  // While c was away its copy of `second` went (a disk replaced, say).
  const second = await env('second');
  await c.remove(second.id);
  keepBeating(a, 8 * GB);
  keepBeating(c, 4 * GB);
  await waitFor('big is running again', async () => (await env('big')).state === 'running', 15_000);
  await waitFor('small-c is stopped again', async () => (await env('small-c')).state === 'stopped', 15_000);
  const gone = await waitFor('second failed', async () => ((await env('second')).state === 'failed' ? env('second') : undefined), 15_000);
  assert.match(gone.stateReason, /runner 'fake-c' came back without it/);
  // The runner list shows them online again.
  const list = await t.cli(['runner', 'list', '--json']);
  const items = JSON.parse(list.stdout) as { name: string; health: { status: string }; draining: boolean; labels: Record<string, string> }[];
  const fakeA = items.find((r) => r.name === 'fake-a')!;
  assert.notEqual(fakeA.health.status, 'offline');
  assert.deepEqual(fakeA.labels, { pool: 'fake', zone: 'a' });
  assert.equal(items.find((r) => r.name === 'fake-c')!.draining, true);
});

test('a lost environment whose runner is gone for good can be forgotten, and only a lost one', async () => {
  const made = await t.api('POST', '/api/orgs/default/environments', { name: 'to-forget', memory: '256m' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const refused = await t.cli(['env', 'rm', 'to-forget', '--forget']);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /is running, not lost: remove it without --forget/);
  // As the runner sweep leaves it when its runner stops beating (tested above), on a runner that
  // never comes back (its own runner's next heartbeat would reconcile it back to running).
  await t.berth.database.db.updateTable('environments').set({ state: 'lost', runner_id: 'rnr_gone0000000000000000' }).where('id', '=', made.body.id).execute();
  const forgotten = await t.cli(['env', 'rm', 'to-forget', '--forget', '--json']);
  assert.equal(forgotten.code, 0, forgotten.stderr);
  const body = JSON.parse(forgotten.stdout);
  assert.equal(body.state, 'deleted');
  assert.match(body.stateReason, /forgotten while runner rnr_gone0000000000000000 was away/);
  // Here its runner is in fact berth up's own: what the host's administrator would do by hand.
  await t.berth.runners.get(made.body.runnerId).remove(made.body.id);
});

test('the settings: BERTH_RUNNER_OFFLINE_AFTER, BERTH_TASK_RETRIES and BERTH_RUNNER_MEMORY, with clear refusals', () => {
  assert.equal(runnerOfflineAfterFrom(undefined), 15_000);
  assert.equal(runnerOfflineAfterFrom('1m'), 60_000);
  assert.throws(() => runnerOfflineAfterFrom('soon'), /BERTH_RUNNER_OFFLINE_AFTER must be a duration of at least 1s/);
  assert.equal(taskRetriesFrom(''), 2);
  assert.equal(taskRetriesFrom('0'), 0);
  assert.throws(() => taskRetriesFrom('-1'), /BERTH_TASK_RETRIES must be a whole number from 0 to 100/);
  assert.equal(runnerMemoryFrom(undefined), undefined);
  assert.equal(runnerMemoryFrom('64g'), 64 * GB);
  assert.throws(() => runnerMemoryFrom('lots'), /BERTH_RUNNER_MEMORY must be a size/);
});
