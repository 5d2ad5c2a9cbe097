// Many hosts on one machine: two control-plane replicas on one PostgreSQL and three runners,
// each in its own network namespace with its own data dir, joined over the network
// (test/cluster.ts). Tasks go in through both replicas and run once each across the runners;
// a runner killed with SIGKILL mid-task loses its environments until it is back, and its
// task starts over on another runner.
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCluster, type Cluster } from './cluster.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { waitFor } from './helpers.ts';
import { ON_POSTGRES } from './postgres.ts';

const ENDED = ['succeeded', 'failed', 'cancelled', 'timed_out'];

describe('a cluster: 2 replicas, 3 runners on other "hosts"', { skip: !ON_POSTGRES && 'replicas need PostgreSQL: runs in the PostgreSQL suite', timeout: 900_000 }, () => {
  let c: Cluster;
  let ids: string[];
  let repo: string;

  before(async () => {
    // Runner 2 is the only one in zone b.
    c = await startCluster({ replicas: 2, runners: 3, labels: (i) => `zone=${i === 2 ? 'b' : 'a'}`, start: { runnerOfflineAfterMs: 4_000, taskRetries: 2 } });
    ids = await c.connected();
    const root = await mkdtemp(join(tmpdir(), 'berth-cluster-repos-'));
    repo = (await createBareRepo({ root, name: 'service.git', files: { 'README.md': '# service\n' } })).path;
  });
  after(async () => {
    await c?.close();
  });

  const ended = (id: string, timeoutMs = 300_000) =>
    waitFor(`task ${id} to end`, async () => {
      const r = await c.replicas[1]!.api('GET', `/api/orgs/default/tasks/${id}`);
      return ENDED.includes(r.body.state) ? r.body : null;
    }, timeoutMs);

  test('tasks queued through both replicas each run once, spread over all three runners', async () => {
    const N = 18;
    const made: string[] = [];
    for (let i = 0; i < N; i++) {
      const r = await c.replicas[i % 2]!.api('POST', '/api/orgs/default/tasks', { repo, goal: `note ${i}`, agent: 'command', command: 'echo "$BERTH_GOAL" >> notes.txt' });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      made.push(r.body.id);
    }
    const done = [];
    for (const id of made) done.push(await ended(id));
    for (const t of done) assert.equal(t.state, 'succeeded', `${t.id}: ${t.stateReason}`);

    const db = c.replicas[0]!.berth.database.db;
    const rows = await db.selectFrom('tasks').select(['id', 'runner_id', 'lease', 'environment_id']).where('id', 'in', made).execute();
    const perRunner = new Map<string, number>();
    for (const row of rows) {
      // Claimed once: one lease, no start-over.
      assert.equal(row.lease, 1, `task ${row.id} was claimed ${row.lease} times`);
      perRunner.set(row.runner_id!, (perRunner.get(row.runner_id!) ?? 0) + 1);
      const env = await db.selectFrom('environments').select(['runner_id']).where('id', '=', row.environment_id!).executeTakeFirstOrThrow();
      assert.equal(env.runner_id, row.runner_id, 'the environment is on the runner that ran the task');
    }
    console.log(`# ${N} tasks over ${perRunner.size} runners: ${[...perRunner.values()].join(', ')}`);
    assert.deepEqual([...perRunner.keys()].sort(), [...ids].sort(), 'every runner ran some');
  });

  test('an environment asked for by label goes to the runner that carries it, and says which', async () => {
    const r = await c.replicas[0]!.api('POST', '/api/orgs/default/environments', { name: 'in-zone-b', runnerLabels: { zone: 'b' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.runnerId, ids[2]);
    const none = await c.replicas[0]!.api('POST', '/api/orgs/default/environments', { name: 'in-zone-c', runnerLabels: { zone: 'c' } });
    assert.equal(none.status, 503);
    assert.match(none.body.error.message, /zone=c/);
  });

  test('a runner killed mid-task: its task starts over on another runner, its environments are lost until it is back', async () => {
    const r = await c.replicas[1]!.api('POST', '/api/orgs/default/tasks', { repo, goal: 'slow', agent: 'command', command: 'sleep 8 && echo slow >> notes.txt' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const db = c.replicas[0]!.berth.database.db;
    const first = await waitFor('the task to run', async () => {
      const row = await db.selectFrom('tasks').select(['state', 'runner_id', 'environment_id']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
      return row.state === 'running' && row.environment_id ? row : undefined;
    }, 120_000);
    const victim = ids.indexOf(first.runner_id!);
    assert.ok(victim >= 0);
    c.runners[victim]!.child.kill('SIGKILL');
    await c.runners[victim]!.exited;

    const done = await ended(r.body.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    const row = await db.selectFrom('tasks').select(['runner_id', 'attempts']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
    assert.notEqual(row.runner_id, first.runner_id, 'it finished on another runner');
    const events = (await c.replicas[0]!.api('GET', `/api/orgs/default/tasks/${r.body.id}/events`)).body.items as { data: { type: string; message?: string; state?: string; reason?: string } }[];
    const story = events.filter((e) => e.data.type === 'log' || e.data.type === 'state').map((e) => e.data.message ?? `${e.data.state}${e.data.reason ? `: ${e.data.reason}` : ''}`);
    assert.equal(row.attempts, 1, `started over once, on another runner; the task said:\n${story.join('\n')}`);
    assert.equal(story.filter((line) => /went offline .* it starts over/.test(line)).length, 1, story.join('\n'));
    const lost = await c.replicas[0]!.api('GET', `/api/orgs/default/environments/${first.environment_id}`);
    assert.equal(lost.body.state, 'lost', JSON.stringify(lost.body));
    const exec = await c.replicas[0]!.api('POST', `/api/orgs/default/environments/${first.environment_id}/exec`, { cmd: ['true'] });
    assert.ok(exec.status >= 400, 'a lost environment runs nothing');

    // Back: it reconnects and its environments are found again (stopped: their processes died with nothing, or running).
    c.startRunner(victim);
    await c.connected();
    let seen: unknown;
    const back = await waitFor('the environment to be reconciled', async () => {
      const e = await c.replicas[0]!.api('GET', `/api/orgs/default/environments/${first.environment_id}`);
      seen = e;
      return e.status === 200 && e.body.state !== 'lost' ? e.body : undefined;
    }, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; last answer ${JSON.stringify(seen)}`);
    });
    assert.ok(['running', 'stopped', 'failed'].includes(back.state), JSON.stringify(back));
  });
});
