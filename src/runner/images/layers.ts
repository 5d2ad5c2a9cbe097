// Stacks image layers into one root file system tree, as the environment will see it, with
// every owner shifted into the environment's id range (see ../idmap.ts). The tree is
// written once and shared read-only, so this is the only place image ownership is decided.
// File-system calls are synchronous on purpose: an image has tens of thousands of entries,
// and a thread-pool round trip for each of their half-dozen calls made unpacking several
// times slower. The event loop still turns between tar chunks.
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname, join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import type { ReadEntry } from 'tar';
import { invalid } from '../../shared/errors.ts';
import { ID_COUNT, toHostId } from '../idmap.ts';
import { tarEntries } from './tar-entries.ts';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
// Ids an environment does not map become 65534, the kernel's overflow id: the environment
// sees such files as owned by "nobody", which is how it would see an unmapped owner anyway.
// Refusing the image instead would turn away real images for a cosmetic detail.
const OVERFLOW_ID = 65_534;
const MAX_SYMLINK_HOPS = 40;
export const ROOT_OWNER = toHostId(0);

export interface UnpackStats {
  entries: number;
  /** Device nodes (crun provides /dev), FIFOs and other special files: not created. */
  skipped: number;
  /** Owner ids beyond the environment's range, written as nobody (65534) instead. */
  clampedIds: number;
}

/**
 * Writes layers, lowest first, into `root`. Never writes outside it: entry paths that climb
 * out are an invalid image, and symlinks met on the way to an entry are resolved as if
 * chrooted at `root` (how the environment resolves them), never against the host.
 */
export class RootfsWriter {
  readonly root: string;
  readonly stats: UnpackStats = { entries: 0, skipped: 0, clampedIds: 0 };
  // Archive directory path → the real directory it resolved to. Saves an lstat per path
  // component per entry; cleared whenever a directory or symlink is removed.
  #dirs = new Map<string, string>();
  // Set last, because adding entries to a directory changes its mtime.
  #dirTimes = new Map<string, Date>();

  private constructor(root: string) {
    this.root = root;
  }

  static create(root: string): RootfsWriter {
    mkdirSync(root, { recursive: true });
    lchownSync(root, ROOT_OWNER, ROOT_OWNER);
    chmodSync(root, 0o755);
    return new RootfsWriter(root);
  }

  /** Applies one uncompressed layer tar, with OCI whiteouts. */
  async applyLayer(tar: Readable): Promise<void> {
    // Paths this layer wrote: an opaque marker keeps these and drops what lower layers left.
    const written = new Set<string>();
    for await (const entry of tarEntries(tar)) {
      this.stats.entries++;
      await this.#apply(entry, written);
    }
  }

  /** Call once after the last layer. */
  finish(): UnpackStats {
    for (const [dir, time] of this.#dirTimes) {
      // lutimes: a later layer may have replaced the directory with a symlink.
      try {
        lutimesSync(dir, time, time);
      } catch (error) {
        ignoreMissing(error);
      }
    }
    return this.stats;
  }

  async #apply(entry: ReadEntry, written: Set<string>): Promise<void> {
    const parts = archivePath(entry.path);
    const name = parts.at(-1);
    if (name === undefined) {
      if (isDirectory(entry)) this.#directory(this.root, entry);
      return;
    }
    const parentParts = parts.slice(0, -1);
    if (name === OPAQUE) return this.#opaque(parentParts, written);
    if (name.startsWith(WHITEOUT)) return this.#whiteout(parentParts, name.slice(WHITEOUT.length), entry.path);

    const parent = this.#dir(parentParts, true);
    const target = join(parent!, name);
    written.add(target);
    if (isDirectory(entry)) {
      this.#directory(target, entry);
      this.#dirs.set(parts.join('/'), target);
      return;
    }
    switch (entry.type) {
      case 'File':
      case 'OldFile':
      case 'ContiguousFile':
        return this.#file(target, entry);
      case 'SymbolicLink':
        return this.#symlink(target, entry);
      case 'Link':
        return this.#hardlink(target, entry);
      default:
        // Device nodes: crun provides /dev. FIFOs have no use in a shared read-only tree.
        this.stats.skipped++;
    }
  }

  /**
   * The real directory that archive directory `parts` names. Symlinks on the way are
   * followed, but an absolute target restarts at the root and '..' stops at it. Missing
   * directories are created, owned by container root, when `create` (tar writers often
   * leave out parent entries); otherwise undefined is returned.
   */
  #dir(parts: readonly string[], create: boolean): string | undefined {
    const key = parts.join('/');
    const cached = this.#dirs.get(key);
    if (cached !== undefined) return cached;

    let resolved: string[] = [];
    const pending = [...parts];
    let hops = 0;
    while (pending.length > 0) {
      const part = pending.shift()!;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        resolved.pop();
        continue;
      }
      const path = join(this.root, ...resolved, part);
      const stats = lstatOrUndefined(path);
      if (stats?.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) throw invalid(`layer path '${key}' has too many levels of symbolic links`);
        const target = readlinkSync(path);
        if (target.startsWith('/')) resolved = [];
        pending.unshift(...target.split('/'));
        continue;
      }
      if (!stats) {
        if (!create) return undefined;
        mkdirSync(path);
        lchownSync(path, ROOT_OWNER, ROOT_OWNER);
        chmodSync(path, 0o755);
      } else if (!stats.isDirectory()) {
        throw invalid(`layer path '${key}' runs through '/${[...resolved, part].join('/')}', which is not a directory`);
      }
      resolved.push(part);
    }
    const dir = join(this.root, ...resolved);
    this.#dirs.set(key, dir);
    return dir;
  }

  #whiteout(parentParts: string[], hidden: string, entryPath: string): void {
    if (hidden === '' || hidden === '.' || hidden === '..') throw invalid(`layer has a malformed whiteout '${entryPath}'`);
    const parent = this.#dir(parentParts, false);
    if (parent !== undefined) this.#remove(join(parent, hidden));
  }

  #opaque(parentParts: string[], written: Set<string>): void {
    const dir = this.#dir(parentParts, true)!;
    const keep = new Set<string>();
    for (const path of written) {
      for (let p = path; p.startsWith(`${dir}/`); p = dirname(p)) keep.add(p);
    }
    this.#prune(dir, keep);
  }

  #prune(dir: string, keep: Set<string>): void {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (!keep.has(path)) this.#remove(path);
      else if (lstatSync(path).isDirectory()) this.#prune(path, keep);
    }
  }

  /** Removes whatever is at `path` without following it. */
  #remove(path: string): void {
    const stats = lstatOrUndefined(path);
    if (!stats) return;
    rmSync(path, { recursive: true, force: true });
    if (stats.isDirectory() || stats.isSymbolicLink()) this.#dirs.clear();
  }

  #directory(target: string, entry: ReadEntry): void {
    const existing = lstatOrUndefined(target);
    // A directory over a directory merges with it; over anything else it replaces it.
    if (!existing?.isDirectory()) {
      if (existing) this.#remove(target);
      mkdirSync(target);
    }
    const [uid, gid] = this.#owner(entry);
    lchownSync(target, uid, gid);
    chmodSync(target, modeOf(entry, 0o755));
    if (entry.mtime) this.#dirTimes.set(target, entry.mtime);
  }

  async #file(target: string, entry: ReadEntry): Promise<void> {
    this.#remove(target);
    // O_EXCL | O_NOFOLLOW: the path was just cleared, so anything there now is not ours to follow.
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    const fd = openSync(target, flags, 0o600);
    try {
      for await (const chunk of entry) writeAll(fd, chunk);
      const [uid, gid] = this.#owner(entry);
      fchownSync(fd, uid, gid);
      // After chown, which clears the setuid and setgid bits.
      fchmodSync(fd, modeOf(entry, 0o644));
      if (entry.mtime) futimesSync(fd, entry.mtime, entry.mtime);
    } finally {
      closeSync(fd);
    }
  }

  #symlink(target: string, entry: ReadEntry): void {
    this.#remove(target);
    // Kept verbatim: the link is resolved inside the environment, never by the host.
    symlinkSync(entry.linkpath!, target);
    const [uid, gid] = this.#owner(entry);
    lchownSync(target, uid, gid);
    if (entry.mtime) lutimesSync(target, entry.mtime, entry.mtime);
  }

  #hardlink(target: string, entry: ReadEntry): void {
    const parts = archivePath(entry.linkpath ?? '');
    const name = parts.at(-1);
    const dir = name === undefined ? undefined : this.#dir(parts.slice(0, -1), false);
    const source = dir === undefined ? undefined : join(dir, name!);
    const stats = source === undefined ? undefined : lstatOrUndefined(source);
    if (source === undefined || !stats || stats.isDirectory()) {
      throw invalid(`layer entry '${entry.path}' is a hard link to '${entry.linkpath}', which is not a file in the image`);
    }
    if (source === target) return;
    this.#remove(target);
    // link(2) does not follow a symlink source on Linux, so this stays inside the root too.
    linkSync(source, target);
  }

  #owner(entry: ReadEntry): [uid: number, gid: number] {
    return [this.#shift(entry.uid), this.#shift(entry.gid)];
  }

  #shift(id = 0): number {
    if (id < ID_COUNT) return toHostId(id);
    this.stats.clampedIds++;
    return toHostId(OVERFLOW_ID);
  }
}

/** An entry path as components below the root. Climbing out of the root makes the image invalid. */
function archivePath(raw: string): string[] {
  const normalized = posix.normalize(raw.replace(/^\/+/, ''));
  if (normalized === '..' || normalized.startsWith('../')) {
    throw invalid(`layer entry '${raw}' points outside the image root`);
  }
  return normalized.split('/').filter((part) => part !== '' && part !== '.');
}

const isDirectory = (entry: ReadEntry) => entry.type === 'Directory' || entry.type === 'GNUDumpDir';
const modeOf = (entry: ReadEntry, fallback: number) => (entry.mode ?? fallback) & 0o7777;

function writeAll(fd: number, chunk: Buffer): void {
  for (let offset = 0; offset < chunk.length; ) offset += writeSync(fd, chunk, offset);
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (error) {
    ignoreMissing(error);
    return undefined;
  }
}

function ignoreMissing(error: unknown): void {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== 'ENOENT' && code !== 'ENOTDIR') throw error;
}
