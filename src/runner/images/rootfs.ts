// Small operations on an unpacked tree that every image gets after its layers.
import { lstatSync } from 'node:fs';
import { chmod, lchown, lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT_OWNER } from './layers.ts';

/** The environment's working directory; environments mount their workspace here. */
export const WORKSPACE = 'workspace';

/**
 * Creates `relative` (and missing parents) inside `rootfs`, owned by container root, and
 * returns its path. Only for trees this store built itself: it follows what is there.
 */
export async function mkdirOwned(rootfs: string, relative: string): Promise<string> {
  let path = rootfs;
  for (const part of relative.split('/')) {
    path = join(path, part);
    const exists = await lstat(path).catch(() => undefined);
    if (exists) continue;
    await mkdir(path);
    await lchown(path, ROOT_OWNER, ROOT_OWNER);
    await chmod(path, 0o755);
  }
  return path;
}

/** Makes sure /workspace exists; an image that has something there already keeps it. */
export async function ensureWorkspace(rootfs: string): Promise<void> {
  await mkdirOwned(rootfs, WORKSPACE);
}

/** Bytes in regular files, each inode counted once (hard links). */
export async function treeSize(rootfs: string): Promise<number> {
  const seen = new Set<number>();
  let total = 0;
  // recursive readdir does not descend into symlinked directories.
  for (const entry of await readdir(rootfs, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    // Sync for the same reason as in layers.ts: tens of thousands of cheap calls.
    const stats = lstatSync(join(entry.parentPath, entry.name));
    if (seen.has(stats.ino)) continue;
    seen.add(stats.ino);
    total += stats.size;
  }
  return total;
}
