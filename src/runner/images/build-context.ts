// A build's context comes from a repository, which is hostile: it is copied into a private
// scratch directory before buildah sees it, and the copy is what gets built and hashed, so
// nothing can change between the check and the build. Paths must stay inside the checkout;
// a symlink that leads out of the context is refused; devices and sockets are refused; the
// whole copy is capped. `.git` is left out: it differs between two clones of one commit,
// and a Dockerfile has no business with it.
import { createHash } from 'node:crypto';
import { copyFile, lstat, mkdir, readdir, readFile, readlink, realpath, symlink } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { invalid } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';

/** The most bytes a build context may hold unless the runner says otherwise. */
export const DEFAULT_MAX_CONTEXT_BYTES = 512 * 2 ** 20;
const MAX_ENTRIES = 100_000;

/** `path` (relative to `base`, inside `root`) as an absolute path; `invalid` if it leaves `root`. */
export async function insideCheckout(root: string, base: string, path: string, what: string): Promise<string> {
  if (path.includes('\0')) throw invalid(`${what} '${path}' is not a valid path`);
  const wanted = resolve(root, base, path);
  const realRoot = await realpath(root);
  const real = await realpath(wanted).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') throw invalid(`${what} '${path}' does not exist in the repository (looked for ${relative(root, wanted) || '.'}): fix the path in devcontainer.json`);
    throw error;
  });
  if (!within(realRoot, real) || !within(resolve(root), wanted)) {
    throw invalid(`${what} '${path}' leads outside the repository: a build may only use files of the repository`);
  }
  return real;
}

const within = (root: string, path: string) => path === root || path.startsWith(root + sep);

/**
 * Copies the directory `from` into `to` (made here) and returns the sha256 of what was
 * copied: every path, type, executable bit, symlink target and file content, in order.
 */
export async function copyContext(from: string, to: string, maxBytes = DEFAULT_MAX_CONTEXT_BYTES): Promise<string> {
  const hash = createHash('sha256');
  let bytes = 0;
  let entries = 0;
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(from, rel))).sort();
    for (const name of names) {
      if (rel === '' && name === '.git') continue;
      const path = rel ? `${rel}/${name}` : name;
      const source = join(from, path);
      const target = join(to, path);
      const s = await lstat(source);
      if (++entries > MAX_ENTRIES) throw invalid(`the build context has more than ${MAX_ENTRIES} files: point build.context at a smaller folder`);
      if (s.isSymbolicLink()) {
        const link = await readlink(source);
        const lands = resolve(join(from, rel), link);
        if (isAbsolute(link) || !within(resolve(from), lands)) {
          throw invalid(`the build context's symlink '${path}' points outside the context (${link}): a build may only use files of the repository`);
        }
        await symlink(link, target);
        hash.update(`l ${path}\0${link}\0`);
      } else if (s.isDirectory()) {
        await mkdir(target, { mode: 0o755 });
        hash.update(`d ${path}\0`);
        await walk(path);
      } else if (s.isFile()) {
        bytes += s.size;
        if (bytes > maxBytes) throw invalid(`the build context is larger than ${formatSize(maxBytes)}: point build.context at a smaller folder`);
        await copyFile(source, target);
        const executable = (s.mode & 0o111) !== 0;
        hash.update(`f ${path}\0${executable ? 'x' : '-'}\0${s.size}\0`);
        hash.update(await readFile(target));
      } else {
        throw invalid(`the build context holds '${path}', which is not a file, folder or symlink: remove it from the repository`);
      }
    }
  };
  await mkdir(to, { recursive: true, mode: 0o755 });
  await walk('');
  return hash.digest('hex');
}
