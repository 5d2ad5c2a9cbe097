import { readFileSync } from 'node:fs';
import type { Command } from './backends/backend.ts';
import { ID_BASE } from './idmap.ts';
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

/** What a start mounts before the runtime runs, in the spawner's mount namespace. */
export interface StartMounts {
  overlay: OverlayPaths;
  /**
   * With a disk quota: the environment's ext4 image and where it goes (`disk`, holding
   * upper and work). `mounted`: true when already mounted there (kept across a stop), a
   * path when the disk pool mounted it there ahead (moved), false when it needs mounting.
   */
  disk?: { image: string; dir: string; mounted: boolean | string } | undefined;
}

/**
 * `runtime`, run once the start's mounts are made, with /dev/null as its stdin, stdout
 * and stderr (a container's init inherits them: see OciRuntime.run). On the path of every create and
 * start: with the start helper (mount-exec.c) that is one exec; without it, sh and
 * mount(8), and a loop mount (rare: an image the pool did not mount) always takes that
 * way, as mount(8) sets up the loop device.
 */
export function mountsThen(helper: string | undefined, m: StartMounts, runtime: Command): Command {
  const { overlay, disk } = m;
  if (helper && (!disk || disk.mounted !== false)) {
    const args = [
      ...(typeof disk?.mounted === 'string' ? ['--move', disk.mounted, disk.dir] : []),
      ...(disk ? ['--dirs', disk.dir, String(ID_BASE)] : []),
      ...['--overlay', options(overlay), overlay.merged, '--null-stdio', '--', runtime.file, ...runtime.args],
    ];
    return { file: helper, args };
  }
  // The runtime's stdio are /dev/null (see OciRuntime.run), the mounts' errors the caller's.
  const script = 'mount -t overlay overlay -o "$1" "$2" || exit; shift 2; exec "$@" </dev/null >/dev/null 2>&1';
  const then: Command = { file: 'sh', args: ['-c', script, 'sh', options(overlay), overlay.merged, runtime.file, ...runtime.args] };
  return disk ? diskThen(disk.image, disk.dir, disk.mounted, then) : then;
}

/**
 * `command`, run once the environment's disk image is mounted at `disk` (and its upper
 * and work dirs made there). mount -o loop reuses a loop device still attached to the
 * image (say, mounted by an earlier runner process's namespace): two loop devices on one
 * ext4 image would corrupt it. discard gives deleted files' space back to the host.
 */
function diskThen(image: string, disk: string, mounted: boolean | string, command: Command): Command {
  // `mounted` a path: the pool mounted the image there; move that mount onto `disk`.
  const script = [
    'img=$1 disk=$2 mounted=$3; shift 3',
    'case $mounted in 1) ;; 0) mount -o loop,discard,nosuid,nodev "$img" "$disk" || exit ;; *) mount --move "$mounted" "$disk" || exit ;; esac',
    `[ -d "$disk/upper" ] || { mkdir -m 755 "$disk/upper" && chown ${ID_BASE}:${ID_BASE} "$disk/upper"; } || exit`,
    '[ -d "$disk/work" ] || mkdir -m 700 "$disk/work" || exit',
    'exec "$@"',
  ].join('\n');
  return { file: 'sh', args: ['-c', script, 'sh', image, disk, typeof mounted === 'string' ? mounted : mounted ? '1' : '0', command.file, ...command.args] };
}

export async function unmountOverlay(spawner: Spawner, merged: string): Promise<void> {
  if (!isMounted(spawner, merged)) return;
  const { code } = await spawner.run('umount', [merged]);
  // A process that escaped the container's death (it should not) keeps it busy;
  // detach it so the environment can still be started or removed.
  if (code !== 0) await spawner.check('umount', ['--lazy', merged]);
}
