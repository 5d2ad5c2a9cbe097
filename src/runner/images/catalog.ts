// The store's files on disk, and the only module that knows their layout:
//
//   DIR/images/<hex>/rootfs/       an unpacked image, owners shifted; never changed once there
//   DIR/images/<hex>/image.json    its metadata (StoredImage)
//   DIR/refs/<url-encoded name>    one file per instance-level name, holding a digest
//   DIR/org-refs/<org>/<name>      one file per name an org gave (pulled), seen only in that org
//   DIR/sources/<hex of path>.json which image a tarball path held, by size and mtime
//   DIR/locks/<hex>.lock           held while building that image (lock.ts)
//   DIR/tmp/<pid>-<random>/        scratch: builds, extracted archives, files being replaced
//
// Every change is a rename of something complete, so a crash leaves only scratch
// directories, which the next store sweeps once their process is gone. One file per name
// (rather than one refs file) lets processes sharing the store name images without a lock.
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { hexOf, isDigest, sha256, type Digest } from './blobs.ts';
import { isAlive } from './lock.ts';
import type { ImageConfig, ImageSource } from './types.ts';

/**
 * Whose name a ref is: the instance's (admin imports and the built-in image; every org sees
 * them), or one org's (what its people pulled; only that org sees them). Keeping them apart
 * on disk is what stops one org from naming an image another org will run.
 */
export interface RefScope {
  org?: string | undefined;
}
export const INSTANCE: RefScope = {};

/** image.json: everything about an image but its names. */
export interface StoredImage {
  digest: Digest;
  source: ImageSource;
  sizeBytes: number;
  createdAt: string;
  config: ImageConfig;
}

const storedImageSchema = z.object({
  digest: z.string().refine(isDigest),
  source: z.enum(['debian', 'oci-layout', 'docker-archive', 'registry']),
  sizeBytes: z.number(),
  createdAt: z.string(),
  config: z.object({
    env: z.array(z.string()),
    workingDir: z.string().optional(),
    user: z.string().optional(),
    entrypoint: z.array(z.string()).optional(),
    cmd: z.array(z.string()).optional(),
  }),
});

/** What a tarball path held when last imported; trusted while its size, mtime and inode are unchanged. */
interface SourceMemo {
  path: string;
  size: number;
  mtimeMs: number;
  ino: number;
  digest: Digest;
  name: string;
}

export class Catalog {
  readonly dir: string;
  #swept = false;

  constructor(dir: string) {
    this.dir = dir;
  }

  imageDir = (digest: Digest) => join(this.dir, 'images', hexOf(digest));
  rootfs = (digest: Digest) => join(this.imageDir(digest), 'rootfs');
  lockPath = (digest: Digest) => join(this.dir, 'locks', `${hexOf(digest)}.lock`);

  async readImage(digest: Digest): Promise<StoredImage | undefined> {
    const text = await readFile(join(this.imageDir(digest), 'image.json'), 'utf8').catch(missingAs(undefined));
    return text === undefined ? undefined : (storedImageSchema.parse(JSON.parse(text)) as StoredImage);
  }

  async has(digest: Digest): Promise<boolean> {
    return (await stat(join(this.imageDir(digest), 'image.json')).catch(missingAs(undefined))) !== undefined;
  }

  async getRef(name: string, scope: RefScope = INSTANCE): Promise<Digest | undefined> {
    const text = await readFile(this.#refPath(name, scope), 'utf8').catch(missingAs(undefined));
    const digest = text?.trim();
    return digest !== undefined && isDigest(digest) ? digest : undefined;
  }

  async setRef(name: string, digest: Digest, scope: RefScope = INSTANCE): Promise<void> {
    await this.#writeAtomic(this.#refPath(name, scope), `${digest}\n`);
  }

  /** False when there was no such name. */
  async deleteRef(name: string, scope: RefScope = INSTANCE): Promise<boolean> {
    const existed = (await this.getRef(name, scope)) !== undefined;
    await rm(this.#refPath(name, scope), { force: true });
    // An org without names leaves no folder behind (a folder that is not empty stays).
    if (scope.org !== undefined) await rmdir(this.#refsDir(scope)).catch(() => {});
    return existed;
  }

  /** The names in one scope. */
  async refs(scope: RefScope = INSTANCE): Promise<Map<string, Digest>> {
    const refs = new Map<string, Digest>();
    for (const name of decoded(await readdir(this.#refsDir(scope)).catch(missingAs([] as string[])))) {
      const digest = await this.getRef(name, scope);
      if (digest) refs.set(name, digest);
    }
    return refs;
  }

  /** The orgs that have named images of their own. */
  async orgScopes(): Promise<string[]> {
    return decoded(await readdir(join(this.dir, 'org-refs')).catch(missingAs([] as string[])));
  }

  /** Whether any name, in any scope, still refers to `digest`. */
  async inUse(digest: Digest): Promise<boolean> {
    for (const scope of [INSTANCE, ...(await this.orgScopes()).map((org) => ({ org }))]) {
      if ([...(await this.refs(scope)).values()].includes(digest)) return true;
    }
    return false;
  }

  /** A fresh private scratch directory. */
  async scratch(): Promise<string> {
    const dir = await this.#tmpPath();
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Moves a finished scratch directory (with `rootfs/` in it) into place as `image`. */
  async commit(scratch: string, image: StoredImage): Promise<void> {
    await writeFile(join(scratch, 'image.json'), `${JSON.stringify(image, null, 2)}\n`);
    // Private while it was being built; environments' processes must be able to reach it now.
    await chmod(scratch, 0o755);
    await mkdir(join(this.dir, 'images'), { recursive: true });
    try {
      await rename(scratch, this.imageDir(image.digest));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
      // Another process committed the same content first: theirs is as good as ours.
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** Deletes an image's content; it leaves its address in one rename, so no half-deleted tree is ever visible. */
  async discard(digest: Digest): Promise<void> {
    const doomed = await this.#tmpPath();
    try {
      await rename(this.imageDir(digest), doomed);
    } catch (error) {
      return missingAs(undefined)(error);
    }
    await rm(doomed, { recursive: true, force: true });
  }

  async readSource(path: string, stats: Stats): Promise<SourceMemo | undefined> {
    const text = await readFile(this.#sourcePath(path), 'utf8').catch(missingAs(undefined));
    if (text === undefined) return undefined;
    const memo = JSON.parse(text) as SourceMemo;
    const same = memo.path === path && memo.size === stats.size && memo.mtimeMs === stats.mtimeMs && memo.ino === stats.ino;
    return same && isDigest(memo.digest) ? memo : undefined;
  }

  async writeSource(path: string, stats: Stats, digest: Digest, name: string): Promise<void> {
    const memo: SourceMemo = { path, size: stats.size, mtimeMs: stats.mtimeMs, ino: stats.ino, digest, name };
    await this.#writeAtomic(this.#sourcePath(path), JSON.stringify(memo));
  }

  #refsDir = (scope: RefScope) => (scope.org === undefined ? join(this.dir, 'refs') : join(this.dir, 'org-refs', encodeURIComponent(scope.org)));
  #refPath = (name: string, scope: RefScope) => join(this.#refsDir(scope), encodeURIComponent(name));
  #sourcePath = (path: string) => join(this.dir, 'sources', `${hexOf(sha256(path))}.json`);

  async #writeAtomic(path: string, content: string): Promise<void> {
    await mkdir(dirname(path), { recursive: true });
    const temp = await this.#tmpPath();
    try {
      await writeFile(temp, content);
      await rename(temp, path);
    } finally {
      await rm(temp, { force: true });
    }
  }

  /** A new name under tmp/ that carries our pid, so a later store can tell it is abandoned. */
  async #tmpPath(): Promise<string> {
    const tmp = join(this.dir, 'tmp');
    await mkdir(tmp, { recursive: true });
    if (!this.#swept) {
      this.#swept = true;
      await this.#sweep(tmp);
    }
    return join(tmp, `${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** Removes scratch directories whose process has died (a crash mid-build). */
  async #sweep(tmp: string): Promise<void> {
    for (const name of await readdir(tmp)) {
      const pid = Number(name.split('-')[0]);
      if (!isAlive(pid)) await rm(join(tmp, name), { recursive: true, force: true });
    }
  }
}

/** File names this store wrote (URL-encoded), decoded; anything else is skipped. */
function decoded(files: string[]): string[] {
  return files.flatMap((file) => {
    try {
      return [decodeURIComponent(file)];
    } catch {
      return [];
    }
  });
}

/** For `.catch`: turns "no such file" into `value` and rethrows anything else. */
function missingAs<T>(value: T): (error: unknown) => T {
  return (error) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return value;
    throw error;
  };
}
