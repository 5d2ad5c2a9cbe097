// Keeps two processes sharing a store (a runner, the CLI, parallel test files) from
// building the same image at the same time. It saves duplicate work only: correctness
// comes from building in a scratch directory and renaming it into place, so a lock lost
// to a race (two processes stealing the same stale lock) costs time, not data.
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const POLL_MS = 250;

/** Runs `fn` holding the lock file `path`; calls `onWait` once if another live process holds it. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>, onWait?: (holder: number) => void): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  // The lock is created by link(2) from a file that already holds our pid, so nobody ever
  // sees a lock file without its holder in it.
  const mine = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await writeFile(mine, String(process.pid));
  try {
    let waiting = false;
    for (;;) {
      try {
        await link(mine, path);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const holder = await readFile(path, 'utf8').then(Number, (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined; // just released: try again
        throw error;
      });
      if (holder === undefined) continue;
      if (!isAlive(holder)) {
        // Left behind by a process that died mid-build.
        await rm(path, { force: true });
        continue;
      }
      if (!waiting) onWait?.(holder);
      waiting = true;
      await sleep(POLL_MS);
    }
  } finally {
    await rm(mine, { force: true });
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

/** Whether a process with this pid exists (on this host: the store is a local directory). */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
