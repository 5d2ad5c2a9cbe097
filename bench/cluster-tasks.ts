// Tasks over a cluster on this machine: 2 control-plane replicas on one PostgreSQL and 3
// runners, each in its own network namespace, joined over the network (test/cluster.ts).
// BENCH_TASKS command-agent tasks (default 120) go in through both replicas; printed: queued →
// claimed (p50/p99), tasks a minute, the spread over runners (max/min), and how many were
// claimed more than once (the goal is none). BERTH_TEST_POSTGRES names the server.
import { mkdtemp } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster } from '../test/cluster.ts';
import { createBareRepo } from '../test/fakes/git-server.ts';
import { summary } from './stats.ts';

const N = Number(process.env.BENCH_TASKS ?? 120);
const ENDED = ['succeeded', 'failed', 'cancelled', 'timed_out'];

console.log(`Berth cluster tasks — 2 replicas, 3 joined runners (network namespaces), PostgreSQL, ${N} command-agent tasks, ${availableParallelism()} cores\n`);
const cluster = await startCluster({ replicas: 2, runners: 3 });
try {
  const ids = await cluster.connected();
  const root = await mkdtemp(join(tmpdir(), 'berth-bench-cluster-repos-'));
  const repo = (await createBareRepo({ root, name: 'service.git', files: { 'README.md': '# service\n' } })).path;
  const started = performance.now();
  const made: string[] = [];
  for (let i = 0; i < N; i++) {
    const r = await cluster.replicas[i % 2]!.api('POST', '/api/orgs/default/tasks', { repo, goal: `note ${i}`, agent: 'command', command: 'echo "$BERTH_GOAL" >> notes.txt' });
    if (r.status !== 201) throw new Error(`task ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    made.push(r.body.id);
  }
  const db = cluster.replicas[0]!.berth.database.db;
  // From the queued event (written as the task is made) to the provisioning one (written by the
  // worker that claimed it): started_at is set again when the task starts running.
  const claimMs = async (id: string) => {
    const events = await db.selectFrom('task_events').select(['at', 'data']).where('task_id', '=', id).orderBy('seq').execute();
    const at = (state: string) => new Date(events.find((e) => (e.data as { type: string; state?: string }).type === 'state' && (e.data as { state?: string }).state === state)!.at).getTime();
    return at('provisioning') - at('queued');
  };
  for (;;) {
    const open = await db.selectFrom('tasks').select((eb) => eb.fn.countAll<string>().as('n')).where('id', 'in', made).where('state', 'not in', ENDED as never).executeTakeFirstOrThrow();
    if (Number(open.n) === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const wallMs = performance.now() - started;
  const rows = await db.selectFrom('tasks').select(['id', 'state', 'state_reason', 'runner_id', 'attempts']).where('id', 'in', made).execute();
  const claim = await Promise.all(made.map(claimMs));
  summary('queued → claimed, all queued at once', claim);
  const perRunner = new Map<string, number>(ids.map((id) => [id, 0]));
  for (const r of rows) perRunner.set(r.runner_id!, (perRunner.get(r.runner_id!) ?? 0) + 1);
  const counts = [...perRunner.values()];
  const states = new Map<string, number>();
  for (const r of rows) states.set(r.state, (states.get(r.state) ?? 0) + 1);
  console.log(`tasks a minute: ${((N / wallMs) * 60_000).toFixed(1)} (${N} in ${(wallMs / 1000).toFixed(1)} s)`);
  console.log(`spread over runners: ${counts.join(' / ')} (max/min ${(Math.max(...counts) / Math.max(1, Math.min(...counts))).toFixed(2)})`);
  console.log(`states: ${[...states].map(([s, n]) => `${s} ${n}`).join(', ')}`);
  console.log(`claimed more than once: ${rows.filter((r) => r.attempts > 0).length} (goal 0)`);
  // Read before the cluster is torn down: a failure with no reason printed cannot be explained later.
  const reasons = new Map<string, string[]>();
  for (const r of rows.filter((x) => x.state !== 'succeeded')) reasons.set(r.state_reason ?? '(no reason)', [...(reasons.get(r.state_reason ?? '(no reason)') ?? []), r.id]);
  for (const [reason, ids] of reasons) console.log(`not succeeded ×${ids.length}: ${reason} (${ids.slice(0, 3).join(', ')}${ids.length > 3 ? ', …' : ''})`);

  // With a runner free: one task at a time, so the claim is the time from its commit to a
  // worker on whichever replica holds a free runner taking it (no queueing behind others).
  const idle: number[] = [];
  for (let i = 0; i < 30; i++) {
    const r = await cluster.replicas[i % 2]!.api('POST', '/api/orgs/default/tasks', { repo, goal: `idle ${i}`, agent: 'command', command: 'true' });
    for (;;) {
      const row = await db.selectFrom('tasks').select(['state']).where('id', '=', r.body.id).executeTakeFirstOrThrow();
      if (ENDED.includes(row.state)) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    idle.push(await claimMs(r.body.id));
  }
  summary('queued → claimed, a runner free (goal p50 ≤ 20 ms)', idle);
} finally {
  await cluster.close();
}
