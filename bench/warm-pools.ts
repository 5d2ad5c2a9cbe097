// Warm pools (src/server/prebuilds/warm-pool.ts) on a real control plane and sandboxes: a task's
// environment taken from its project's warm pool (claim, then a first command) against one made
// from the same prebuild's snapshot then (create --from, started, then a first command), the
// baseline, measured in the same run. BENCH_WARM_RUNS (10) of each; the workspace is
// BENCH_WARM_MB (100) MiB in BENCH_WARM_FILES (2,000) files. The pool is refilled between
// claims, outside the timing: what is measured is what a task waits for.
import { availableParallelism, loadavg } from 'node:os';
import { newId } from '../src/shared/ids.ts';
import { taskScope } from '../src/server/tasks/sandbox.ts';
import { storeSupport } from '../src/runner/store.ts';
import { startTestBerth } from '../test/helpers.ts';
import { summary, time } from './stats.ts';

const RUNS = Number(process.env.BENCH_WARM_RUNS ?? 10);
const MB = Number(process.env.BENCH_WARM_MB ?? 100);
const FILES = Number(process.env.BENCH_WARM_FILES ?? 2_000);

const support = storeSupport();
if (!support.available) {
  console.log(`skipped: ${support.reason}`);
  process.exit(0);
}
const t = await startTestBerth();
try {
  const db = t.berth.database.db;
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await t.api(method, `/api/orgs/default${path}`, body);
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const first = async (env: string) => {
    const r = await call('POST', `/environments/${env}/exec`, { cmd: ['sh', '-c', 'test -s /workspace/marker'] });
    if (r.exitCode !== 0) throw new Error(`the first command in ${env} exited ${r.exitCode}: ${r.stderr}`);
  };
  const orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  const ownerId = (await db.selectFrom('users').select('id').executeTakeFirstOrThrow()).id;
  const project = await call('POST', '/projects', { name: 'bench', repoUrl: t.dataDir });

  // The prebuild: an environment with the workspace, snapshotted, recorded ready (as the builder would).
  const source = await call('POST', '/environments', { name: 'bench-prebuild', disk: '4g' });
  const dirs = Math.max(1, Math.round(FILES / 100));
  const perDir = Math.floor((MB * 2 ** 20) / dirs);
  const perFile = Math.ceil(perDir / Math.ceil(FILES / dirs));
  await call('POST', `/environments/${source.id}/exec`, { cmd: ['sh', '-c', `mkdir -p /workspace/data && cd /workspace/data && i=0; while [ $i -lt ${dirs} ]; do mkdir d$i && head -c ${perDir} /dev/urandom | split -b ${perFile} -a 3 - d$i/f; i=$((i+1)); done; echo ready > /workspace/marker`] });
  const snap = await call('POST', `/environments/${source.id}/snapshot`, {});
  await db.updateTable('snapshots').set({ kind: 'prebuild', project_id: project.id }).where('id', '=', snap.id).execute();
  const prebuildId = newId('pbd');
  await db.insertInto('prebuilds').values({ id: prebuildId, org_id: orgId, project_id: project.id, state: 'ready', trigger: 'manual', snapshot_id: snap.id, runner_id: snap.runnerId, environment_id: source.id, created_by: 'system' }).execute();

  const made: string[] = [];
  const fromSnapshot: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    fromSnapshot.push(
      await time(async () => {
        const env = await call('POST', `/snapshots/${snap.id}/environments`, { name: `cold-${i}`, project: project.id, disk: '4g', idleTimeout: 'off' });
        made.push(env.id);
        await first(env.id);
      }),
    );
  }

  await call('PATCH', '/projects/bench', { warm: 2 });
  await t.berth.warmPools.refill();
  const claimed: number[] = [];
  const claimOnly: number[] = [];
  const again: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const taskId = newId('task');
    let env: string | undefined;
    claimed.push(
      await time(async () => {
        claimOnly.push(await time(async () => (env = await t.berth.warmPools.claim({ scope: taskScope(orgId, taskId, ownerId), projectId: project.id, prebuildId, name: `warm-task-${i}`, taskId }))));
        if (!env) throw new Error('the warm pool was empty');
        made.push(env);
        await first(env);
      }),
    );
    // The floor: a command in an environment that already ran one.
    again.push(await time(() => first(env!)));
    await t.berth.warmPools.refill();
  }

  console.log(`warm pools: ${RUNS} runs each, workspace ${MB} MiB in ${FILES} files, ${availableParallelism()} CPUs, load ${loadavg()[0]!.toFixed(2)}`);
  const cold = summary('create from the prebuild snapshot → first command (baseline)', fromSnapshot);
  const warm = summary('claim from the warm pool → first command', claimed);
  summary('  of which the claim', claimOnly);
  summary('a second command in the same environment (the floor)', again);
  console.log(`a warm environment is ready ${(cold.p50 / warm.p50).toFixed(0)}× sooner at the median`);

  await call('PATCH', '/projects/bench', { warm: 0 });
  await t.berth.warmPools.refill();
  for (const id of made) await call('DELETE', `/environments/${id}`).catch(() => {});
} finally {
  await t.destroy();
}
