// Snapshots and forks in the runner's btrfs state store (src/runner/store.ts), on real sandboxes:
// a running environment with BENCH_SNAPSHOT_MB (1024) of random data in BENCH_SNAPSHOT_FILES
// (20,000) files is snapshotted BENCH_SNAPSHOT_RUNS (10) times, then forked that many times
// (made only; made and started; made, started and a first command run). The baseline, in the
// same run: a full copy of the same upper dir (cp -a --reflink=never, within the store, then
// the file system synced), which is what a snapshot or a fork costs without copy-on-write.
// A 10 MB workspace is snapshotted too: a snapshot's time does not grow with the workspace.
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { DEFAULT_IMAGE, ImageStore, LocalRunner } from '../src/runner/index.ts';
import type { EnvironmentSpec } from '../src/runner/port.ts';
import { Spawner } from '../src/runner/spawner/index.ts';
import { FORK_PARALLEL } from '../src/server/snapshots/service.ts';
import { StateStore, storeSupport } from '../src/runner/store.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { IMAGE_DIR } from '../test/helpers.ts';
import { percentile, time } from './stats.ts';

const MB = Number(process.env.BENCH_SNAPSHOT_MB ?? 1024);
const FILES = Number(process.env.BENCH_SNAPSHOT_FILES ?? 20_000);
const RUNS = Number(process.env.BENCH_SNAPSHOT_RUNS ?? 10);
const DIRS = Math.max(1, Math.round(FILES / 100));

const support = storeSupport();
if (!support.available) {
  console.log(`skipped: ${support.reason}`);
  process.exit(0);
}
const logger = pino({ level: 'silent' });
const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-snapshots-'));
const runner = new LocalRunner({ dataDir, images: new ImageStore({ dir: IMAGE_DIR, logger }), logger });
// The same store seen from here (a mount namespace of its own): for the copy baseline and its usage.
const spawner = new Spawner({ privateMounts: { unmount: [] } });
const store = new StateStore({ dir: join(dataDir, 'runtime'), spawner, logger });
const envs: string[] = [];
const snapshots: string[] = [];
const image = await runner.images.resolve(DEFAULT_IMAGE);
const spec = (id = newId('env')): EnvironmentSpec => ({ id, hostname: id.replace('_', '-'), image, limits: DEFAULT_LIMITS });
const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

async function sh(s: EnvironmentSpec, script: string): Promise<string> {
  const c = runner.exec(s, { cmd: ['sh', '-c', script] });
  let out = '';
  let err = '';
  c.stdout.on('data', (b: Buffer) => (out += b));
  c.stderr.on('data', (b: Buffer) => (err += b));
  c.stdin.end();
  const { exitCode } = await c.exited;
  if (exitCode !== 0) throw new Error(`${script}: exit ${exitCode}: ${err}`);
  return out;
}

async function started(s: EnvironmentSpec): Promise<EnvironmentSpec> {
  envs.push(s.id);
  await runner.start(s);
  return s;
}

/** `files` files of random data, `mb` MiB in all, 100 to a folder: written from one stream, split. */
const fill = (mb: number, files: number) => {
  const dirs = Math.max(1, Math.round(files / 100));
  const perDir = Math.floor((mb * 2 ** 20) / dirs);
  const perFile = Math.ceil(perDir / Math.ceil(files / dirs));
  return `mkdir -p /workspace/data && cd /workspace/data && i=0; while [ $i -lt ${dirs} ]; do mkdir d$i && head -c ${perDir} /dev/urandom | split -b ${perFile} -a 3 - d$i/f; i=$((i+1)); done; find . -type f | wc -l`;
};

/** Snapshot times (ms) of a running environment, `RUNS` of them, and the longest pause. */
async function snapshotTimes(s: EnvironmentSpec): Promise<{ ms: number[]; pausedMs: number[] }> {
  const ms: number[] = [];
  const pausedMs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const id = newId('snap');
    snapshots.push(id);
    let paused = 0;
    ms.push(await time(async () => (paused = (await runner.snapshot(s.id, id)).pausedMs)));
    pausedMs.push(paused);
  }
  return { ms, pausedMs };
}

const rows: [string, string, string][] = [];
const row = (what: string, samples: number[]) => rows.push([what, `${percentile(samples, 50).toFixed(1)} ms`, `${percentile(samples, 99).toFixed(1)} ms`]);

try {
  const small = await started(spec());
  await sh(small, fill(10, 200));
  const big = await started(spec());
  const writeMs = await time(async () => {
    const n = Number((await sh(big, fill(MB, FILES))).trim());
    if (n !== FILES) throw new Error(`the workspace holds ${n} files, not ${FILES}`);
  });
  // Quota groups count at a transaction's commit: used() syncs the file system first.
  await store.used();
  const usage = await runner.diskUsage(big.id);

  const smallSnaps = await snapshotTimes(small);
  const bigSnaps = await snapshotTimes(big);
  const snap = snapshots.at(-1)!;
  row(`snapshot, running, 10 MiB / 200 files`, smallSnaps.ms);
  row(`  of which paused`, smallSnaps.pausedMs);
  row(`snapshot, running, ${MB} MiB / ${FILES} files`, bigSnaps.ms);
  row(`  of which paused`, bigSnaps.pausedMs);

  const usedBefore = await store.used();
  const made: number[] = [];
  const madeTotal = await time(async () => {
    for (let i = 0; i < RUNS; i++) {
      const s = spec();
      envs.push(s.id);
      made.push(await time(() => runner.createFromSnapshot(s, snap)));
    }
  });
  const usedAfter = await store.used();
  row(`fork (createFromSnapshot)`, made);
  // As `berth env fork --count N` makes them: FORK_PARALLEL at a time (btrfs commits snapshots
  // made meanwhile together).
  const parallelTotal = await time(async () => {
    let next = 0;
    const work = async () => {
      for (let i = next++; i < RUNS; i = next++) {
        const s = spec();
        envs.push(s.id);
        await runner.createFromSnapshot(s, snap);
      }
    };
    await Promise.all(Array.from({ length: Math.min(FORK_PARALLEL, RUNS) }, work));
  });

  const running: number[] = [];
  const firstCommand: number[] = [];
  const runningTotal = await time(async () => {
    for (let i = 0; i < RUNS; i++) {
      const s = spec();
      envs.push(s.id);
      const begun = performance.now();
      await runner.createFromSnapshot(s, snap);
      await runner.start(s);
      running.push(performance.now() - begun);
      await sh(s, 'true');
      firstCommand.push(performance.now() - begun);
    }
  });
  row(`fork + start, to running`, running);
  row(`fork + start + first command (true) finished`, firstCommand);
  // The sandbox alone, for comparison: a fresh, empty environment to its first command.
  const fresh: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const begun = performance.now();
    const s = await started(spec());
    await sh(s, 'true');
    fresh.push(performance.now() - begun);
  }
  row(`(fresh empty environment + first command)`, fresh);

  // Baseline: the same upper dir copied, as a snapshot or a fork would without copy-on-write.
  const upper = join(store.envDir(big.id), 'upper');
  const copy = join(store.root, 'bench-copy');
  const copyMs = await time(() => spawner.check('sh', ['-c', 'cp -a --reflink=never "$1" "$2" && btrfs filesystem sync "$3"', 'sh', upper, copy, store.root]));
  await spawner.check('rm', ['-rf', copy]);

  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`Berth snapshots benchmark — ${runner.backend.name}, btrfs state store, ${availableParallelism()} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`workspace: ${MB} MiB of random data in ${FILES} files (${DIRS} folders), written inside in ${(writeMs / 1000).toFixed(1)} s; the environment references ${usage === null ? '?' : mib(usage)}`);
  console.log(`${'operation'.padEnd(w)}  ${'median'.padStart(10)}  ${'p99'.padStart(10)}   (n=${RUNS})`);
  for (const [what, p50, p99] of rows) console.log(`${what.padEnd(w)}  ${p50.padStart(10)}  ${p99.padStart(10)}`);
  console.log(`${RUNS} forks made one after another: ${(madeTotal / 1000).toFixed(2)} s in all; ${FORK_PARALLEL} at a time (as berth env fork --count ${RUNS}): ${(parallelTotal / 1000).toFixed(2)} s in all; made and started: ${(runningTotal / 1000).toFixed(2)} s in all`);
  console.log(`store used by ${RUNS} forks of ${MB} MiB: ${mib(usedAfter - usedBefore)} (before ${mib(usedBefore)}, after ${mib(usedAfter)})`);
  const snapP50 = percentile(bigSnaps.ms, 50);
  const forkP50 = percentile(made, 50);
  console.log(`baseline, full copy (cp -a --reflink=never of the upper dir, then sync): ${(copyMs / 1000).toFixed(2)} s`);
  console.log(`  copy / snapshot (median): ${(copyMs / snapP50).toFixed(0)}×;  copy / fork (median): ${(copyMs / forkP50).toFixed(0)}×;  ${RUNS} copies would be ~${((copyMs * RUNS) / 1000).toFixed(0)} s and ${mib(usage === null ? 0 : usage * RUNS)}`);
} finally {
  for (const id of envs) await runner.remove(id).catch(() => {});
  for (const id of snapshots) await runner.removeSnapshot(id).catch(() => {});
  runner.close();
  spawner.close();
  rmSync(dataDir, { recursive: true, force: true });
}
