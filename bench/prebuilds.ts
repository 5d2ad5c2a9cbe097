// Prebuilds (src/server/prebuilds) on a real control plane and sandboxes: a task's time from
// `POST /tasks` to its agent's first command, on a repository whose setup generates
// BENCH_PREBUILD_MB (50) MiB in BENCH_PREBUILD_FILES (5,000) files, without a prebuild (the
// baseline: clone, fresh environment, copy in, setup) and from a prebuild (the same clone,
// an environment from its snapshot, a one-commit catch-up, no setup) and from a prebuild with
// the project's warm pool on (an environment already started from the snapshot is claimed;
// the pool is refilled between tasks, outside the timing), in the same run, BENCH_PREBUILD_RUNS
// (5) of each. The agent's command stamps the time it started.
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeSupport } from '../src/runner/store.ts';
import { createBareRepo, pushCommit, runGit } from '../test/fakes/git-server.ts';
import { startTestBerth, waitFor } from '../test/helpers.ts';
import { summary } from './stats.ts';

const RUNS = Number(process.env.BENCH_PREBUILD_RUNS ?? 5);
const MB = Number(process.env.BENCH_PREBUILD_MB ?? 50);
const FILES = Number(process.env.BENCH_PREBUILD_FILES ?? 5_000);

const support = storeSupport();
if (!support.available) {
  console.log(`skipped: ${support.reason}`);
  process.exit(0);
}
const perFile = Math.ceil((MB * 2 ** 20) / FILES);
// What an `npm ci` leaves, roughly: many files, tens of MiB, ignored by git.
// File by file, as an installer unpacks packages (one process per file: the CPU cost is real).
const SETUP = `mkdir -p node_modules && cd node_modules && i=0; while [ $i -lt ${FILES} ]; do head -c ${perFile} /dev/urandom > m$i; i=$((i+1)); done; ls | wc -l > ../.installed`;
const AGENT = 'date +%s%3N > started.txt; test -s .installed';

const root = await mkdtemp(join(tmpdir(), 'berth-bench-prebuilds-'));
const bare = (await createBareRepo({ root, name: 'app.git', files: { 'berth.yaml': `setup:\n  - ${JSON.stringify(SETUP)}\n`, '.gitignore': 'node_modules/\n.installed\n', 'README.md': 'app\n' } })).path;
const t = await startTestBerth();
try {
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await t.api(method, `/api/orgs/default${path}`, body);
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  await call('POST', '/projects', { name: 'fresh', repoUrl: bare });
  await call('POST', '/projects', { name: 'prebuilt', repoUrl: bare });

  const firstCommand = async (project: string): Promise<number> => {
    const start = Date.now();
    const task = await call('POST', '/tasks', { goal: 'stamp the first command', project, agent: 'command', command: AGENT });
    const done = await waitFor(`task ${task.id}`, async () => {
      const body = await call('GET', `/tasks/${task.id}`);
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
    }, 600_000);
    if (done.state !== 'succeeded') throw new Error(`task ${task.id} ${done.state}: ${done.stateReason}`);
    const startedAt = Number((await runGit(['show', `${done.branch}:started.txt`], { cwd: bare })).trim());
    if (process.env.BENCH_PREBUILD_TRACE) {
      // Where the time went: each event's offset from the POST.
      const { items } = await call('GET', `/tasks/${task.id}/events`);
      for (const e of items) console.log(`  ${project} +${String(new Date(e.at).getTime() - start).padStart(6)} ms  ${e.data.type} ${String(e.data.message ?? e.data.step ?? e.data.state ?? e.data.cmd ?? '').slice(0, 100)}`);
      console.log(`  ${project} +${String(startedAt - start).padStart(6)} ms  the agent's first command`);
    }
    return startedAt - start;
  };

  const builtAt = Date.now();
  const pb = await call('POST', '/projects/prebuilt/prebuilds');
  const ready = await waitFor('the prebuild', async () => {
    const p = await call('GET', `/prebuilds/${pb.id}`);
    return p.state === 'ready' || p.state === 'failed' ? p : null;
  }, 600_000);
  if (ready.state !== 'ready') throw new Error(`prebuild failed: ${ready.stateReason}`);
  const buildMs = Date.now() - builtAt;
  // The tasks are one commit ahead of the prebuild, as they are between two prebuilds.
  await pushCommit({ bare, branch: 'main', files: { 'README.md': 'app, changed\n' }, message: 'a change since the prebuild' });

  const fresh: number[] = [];
  const prebuilt: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    fresh.push(await firstCommand('fresh'));
    prebuilt.push(await firstCommand('prebuilt'));
  }
  // The pool refilled before each task, outside the timing: what is measured is what a task waits for.
  await call('PATCH', '/projects/prebuilt', { warm: 1 });
  const warm: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await t.berth.warmPools.refill();
    warm.push(await firstCommand('prebuilt'));
  }
  await call('PATCH', '/projects/prebuilt', { warm: 0 });
  await t.berth.warmPools.refill();
  console.log(`prebuilds: ${RUNS} tasks each, setup generates ${MB} MiB in ${FILES} files, ${availableParallelism()} CPUs, load ${loadavg()[0]!.toFixed(2)}`);
  console.log(`the prebuild itself (clone, environment, setup, snapshot): ${(buildMs / 1000).toFixed(1)} s, snapshot ${ready.snapshotBytes === null ? '?' : `${(ready.snapshotBytes / 2 ** 20).toFixed(0)} MiB`}`);
  const base = summary('task → first agent command, no prebuild (baseline)', fresh);
  const fast = summary('task → first agent command, from a prebuild', prebuilt);
  const warmed = summary('task → first agent command, from a prebuild, warm pool', warm);
  console.log(`from a prebuild the agent starts ${(base.p50 / fast.p50).toFixed(1)}× sooner at the median, ${(base.p50 / warmed.p50).toFixed(1)}× with a warm pool`);
} finally {
  await t.destroy();
  await rm(root, { recursive: true, force: true });
}
