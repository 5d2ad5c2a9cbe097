// Pausing a local environment while its state is copied (a backup, an export), so the copy is one moment of it:
// its processes frozen through their cgroup (as the runtime's `pause` does), then every file
// system synced. The ext4 file system on an environment's disk image is mounted in the
// runtime's mount namespace, out of this one's reach (so no fsfreeze); sync(2) reaches it
// anyway and puts its data and journal into the image file, which then copies as a clean
// crash: its next mount replays the journal. Environments keep running after `berth up`
// stops, hence the freeze.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Paused {
  /** Whether anything ran in it (its processes were frozen). */
  running: boolean;
  resume(): void;
}

/** Freezes environment `id` (its cgroup `/berth/ID`) when something runs in it, then syncs (unless `sync: false`: a btrfs snapshot flushes what it needs itself). */
export async function pauseEnvironment(id: string, opts: { sync?: boolean } = {}): Promise<Paused> {
  const cgroup = freezer(id);
  const running = cgroup !== undefined && readFileSync(cgroup.procs, 'utf8').trim() !== '';
  if (running) {
    try {
      await cgroup.freeze();
    } catch (err) {
      cgroup.thaw();
      throw err;
    }
  }
  if (opts.sync === false) return { running, resume: () => (running ? cgroup.thaw() : undefined) };
  const synced = spawnSync('sync');
  if (synced.status !== 0) {
    if (running) cgroup.thaw();
    throw new Error(`sync failed before copying environment ${id} (${synced.error?.message ?? `exit ${synced.status}`}): check the host's disks (dmesg) and back up again`);
  }
  return { running, resume: () => (running ? cgroup.thaw() : undefined) };
}

/** Whether processes of an environment `id` run on this host (restoring beside a still-running original). */
export function runsHere(id: string): boolean {
  const cgroup = freezer(id);
  return cgroup !== undefined && readFileSync(cgroup.procs, 'utf8').trim() !== '';
}

interface Freezer {
  procs: string;
  freeze(): Promise<void>;
  thaw(): void;
}

/** The environment's freezer: cgroup v2's cgroup.freeze, or v1's freezer controller (hybrid hosts). */
function freezer(id: string): Freezer | undefined {
  const v2 = `/sys/fs/cgroup/berth/${id}`;
  if (existsSync(`${v2}/cgroup.freeze`)) {
    return {
      procs: `${v2}/cgroup.procs`,
      async freeze() {
        writeFileSync(`${v2}/cgroup.freeze`, '1');
        await until(() => /^frozen 1$/m.test(readFileSync(`${v2}/cgroup.events`, 'utf8')), id);
      },
      thaw: () => writeFileSync(`${v2}/cgroup.freeze`, '0'),
    };
  }
  const v1 = `/sys/fs/cgroup/freezer/berth/${id}`;
  if (existsSync(`${v1}/freezer.state`)) {
    return {
      procs: `${v1}/cgroup.procs`,
      async freeze() {
        writeFileSync(`${v1}/freezer.state`, 'FROZEN');
        await until(() => readFileSync(`${v1}/freezer.state`, 'utf8').trim() === 'FROZEN', id);
      },
      thaw: () => writeFileSync(`${v1}/freezer.state`, 'THAWED'),
    };
  }
  return undefined;
}

/** Polls every 2 ms for the first 0.2 s (a freeze usually takes a few ms: it is on a snapshot's pause), then every 25 ms, for 5 s. */
async function until(done: () => boolean, id: string): Promise<void> {
  for (let waited = 0; waited < 5_000; ) {
    if (done()) return;
    const step = waited < 200 ? 2 : 25;
    await sleep(step);
    waited += step;
  }
  throw new Error(`environment ${id} did not pause within 5 s; stop it (\`berth env stop ${id}\`) and try again`);
}

/**
 * Thaws environment `id` if its cgroup is frozen: only a runner killed while it held it paused
 * (a snapshot, an export, a backup) leaves it so, since Berth never keeps an environment
 * paused. Returns whether it was frozen.
 */
export function thawLeftover(id: string): boolean {
  const v2 = `/sys/fs/cgroup/berth/${id}/cgroup.freeze`;
  const v1 = `/sys/fs/cgroup/freezer/berth/${id}/freezer.state`;
  try {
    if (existsSync(v2) && readFileSync(v2, 'utf8').trim() === '1') {
      writeFileSync(v2, '0');
      return true;
    }
    if (existsSync(v1) && readFileSync(v1, 'utf8').trim() !== 'THAWED') {
      writeFileSync(v1, 'THAWED');
      return true;
    }
  } catch {
    // Gone meanwhile: nothing to thaw.
  }
  return false;
}
