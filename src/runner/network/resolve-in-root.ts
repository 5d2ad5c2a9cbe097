// Paths inside an image's root file system as the environment would see them: its
// symbolic links followed inside it, never out to the host's files.
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { join, posix } from 'node:path';

/**
 * `path` inside the tree at `root`, every symbolic link on the way followed as the
 * environment would see it (absolute targets from `root`, never above it); undefined if
 * something on the way is missing or the links go round.
 */
export function resolveInRoot(root: string, path: string, hops = 0): string | undefined {
  const parts = posix.normalize(`/${path}`).split('/').filter(Boolean);
  let done = '';
  for (let i = 0; i < parts.length; i++) {
    const next = `${done}/${parts[i]}`;
    const st = lstatQuiet(join(root, next));
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (hops >= 16) return undefined;
      const target = readlinkSync(join(root, next));
      const rest = parts.slice(i + 1).join('/');
      return resolveInRoot(root, posix.normalize(`${target.startsWith('/') ? '' : `${done}/`}${target}/${rest}`), hops + 1);
    }
    done = next;
  }
  return done || '/';
}

export function lstatQuiet(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
