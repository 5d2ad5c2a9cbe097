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
      // v1's freezer misses a process forked while it freezes and then stays FREEZING: asked
      // again at every look, and now and then thawed and asked afresh, as runc does.
      async freeze() {
        const state = `${v1}/freezer.state`;
        let looks = 0;
        writeFileSync(state, 'FROZEN');
        await until(() => {
          if (readFileSync(state, 'utf8').trim() === 'FROZEN') return true;
          if (++looks % 50 === 0) writeFileSync(state, 'THAWED');
          writeFileSync(state, 'FROZEN');
          return false;
        }, id);
      },
      thaw: () => writeFileSync(`${v1}/freezer.state`, 'THAWED'),
    };
  }
  return undefined;
}

const FREEZE_TIMEOUT_MS = 30_000;

/**
 * Polls every 2 ms for the first 0.2 s (a freeze usually takes a few ms: it is on a snapshot's
 * pause), then every 25 ms, for up to 30 s of wall time: a process in the middle of heavy disk
 * writes stays FREEZING until its I/O lets it stop (a CI run under load took over 5 s).
 */
async function until(done: () => boolean, id: string): Promise<void> {
  const began = performance.now();
  for (;;) {
    if (done()) return;
    const waited = performance.now() - began;
    if (waited > FREEZE_TIMEOUT_MS) break;
    await sleep(waited < 200 ? 2 : 25);
  }
  throw new Error(`environment ${id} did not pause within ${FREEZE_TIMEOUT_MS / 1000} s; stop it (\`berth env stop ${id}\`) and try again`);
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
