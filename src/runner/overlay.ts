import { readFileSync } from 'node:fs';
import type { Command } from './backends/backend.ts';
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

// index=off and xino=off keep the upper dir portable: it stays valid if the image
// cache is moved or the lower dir is re-unpacked with the same content.
const options = (p: OverlayPaths) => `lowerdir=${p.lower},upperdir=${p.upper},workdir=${p.work},index=off,xino=off`;

/**
 * `command`, run once the overlay is mounted, in one process: on the path of every
 * create and start, a second spawn from the spawner costs more than the mount.
 */
export function afterMountingOverlay(p: OverlayPaths, command: Command): Command {
  const script = 'mount -t overlay overlay -o "$1" "$2" || exit; shift 2; exec "$@"';
  return { file: 'sh', args: ['-c', script, 'sh', options(p), p.merged, command.file, ...command.args] };
}

export async function unmountOverlay(spawner: Spawner, merged: string): Promise<void> {
  if (!isMounted(spawner, merged)) return;
  const { code } = await spawner.run('umount', [merged]);
  // A process that escaped the container's death (it should not) keeps it busy;
  // detach it so the environment can still be started or removed.
  if (code !== 0) await spawner.check('umount', ['--lazy', merged]);
}
