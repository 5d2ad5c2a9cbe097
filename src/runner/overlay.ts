import { readFileSync } from 'node:fs';
import type { Spawner } from './spawner/index.ts';

/** The paths of one environment's overlay: the shared read-only image below, its own state above. */
export interface OverlayPaths {
  lower: string;
  upper: string;
  work: string;
  merged: string;
}

/** Whether `path` is a mount point in the mount namespace where the spawner runs commands. */
export function isMounted(spawner: Spawner, path: string): boolean {
  // mountinfo escapes spaces and the like as octal; our paths have none.
  return readFileSync(`/proc/${spawner.pid ?? 'self'}/mountinfo`, 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === path);
}

export async function mountOverlay(spawner: Spawner, p: OverlayPaths): Promise<void> {
  if (isMounted(spawner, p.merged)) return;
  // index=off and xino=off keep the upper dir portable: it stays valid if the image
  // cache is moved or the lower dir is re-unpacked with the same content.
  const options = `lowerdir=${p.lower},upperdir=${p.upper},workdir=${p.work},index=off,xino=off`;
  await spawner.check('mount', ['-t', 'overlay', 'overlay', '-o', options, p.merged]);
}

export async function unmountOverlay(spawner: Spawner, merged: string): Promise<void> {
  if (!isMounted(spawner, merged)) return;
  const { code } = await spawner.run('umount', [merged]);
  // A process that escaped the container's death (it should not) keeps it busy;
  // detach it so the environment can still be started or removed.
  if (code !== 0) await spawner.check('umount', ['--lazy', merged]);
}
