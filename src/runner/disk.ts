// An environment's disk quota: a sparse file holding an ext4 file system of the limit's
// size, and a few of them made ahead at the default size, so a create takes one with a
// rename instead of waiting for mkfs.
import { existsSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { unavailable } from '../shared/errors.ts';
import { ID_BASE } from './idmap.ts';
import { isMounted } from './overlay.ts';
import type { RunOptions, Spawner } from './spawner/index.ts';

const DEFAULT_WARM = 2;

/**
 * A sparse file of `bytes` with an ext4 file system on it: what the environment writes
 * past its limit fails with ENOSPC inside, and the host gives it no more than the limit.
 * mkfs discards (punches) the file first, so it stays sparse and needs no inode-table
 * zeroing: about 50 ms for 10 GiB, whatever the size. `${image}.base` keeps the blocks
 * mkfs wrote, what diskUsage subtracts while the image is not mounted.
 */
export async function makeDisk(spawner: Spawner, image: string, bytes: number, opts: RunOptions = {}): Promise<void> {
  writeFileSync(image, '', { mode: 0o600 });
  await truncate(image, bytes);
  try {
    await spawner.check('mkfs.ext4', ['-q', '-F', '-m', '0', '-J', 'size=16', '-E', 'root_owner=0:0', image], opts);
  } catch (err) {
    rmSync(image, { force: true });
    throw unavailable(`cannot make the environment's disk (mkfs.ext4 from e2fsprogs is needed; BERTH_DISK_QUOTA=off runs without disk limits): ${err instanceof Error ? err.message : String(err)}`);
  }
  writeFileSync(`${image}.base`, String(statSync(image).blocks * 512));
}

/**
 * Formatted images of one size in `dir` (on the data dir's file system, so taking one
 * is a rename), each loop-mounted ahead at `<name>.mnt` in the spawner's namespace so a
 * create moves the mount (mount --move) instead of attaching and mounting. One is ready once `<name>.img` exists: it is renamed into
 * place last, after its `.base`, so a runner killed mid-mkfs leaves only `.tmp` files,
 * which the next one removes. Ready images outlive the runner and serve the next one.
 */
export class DiskPool {
  readonly bytes: number;
  readonly #dir: string;
  readonly #spawner: Spawner;
  readonly #log: Logger;
  readonly #target: number;
  /** Images not mounted (yet): a take renames one, and the start mounts it. */
  readonly #ready: string[] = [];
  /** Images mounted at their mount point: a take renames one, and the start moves its mount. */
  readonly #mounted: string[] = [];
  #filling: Promise<void> | undefined;
  #closed = false;

  constructor(opts: { dir: string; bytes: number; spawner: Spawner; logger: Logger; warm?: number | undefined }) {
    this.bytes = opts.bytes;
    this.#dir = opts.dir;
    this.#spawner = opts.spawner;
    this.#log = opts.logger;
    this.#target = opts.warm ?? DEFAULT_WARM;
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    for (const n of readdirSync(this.#dir)) {
      const path = join(this.#dir, n);
      if (n.endsWith('.img') && existsSync(`${path}.base`)) this.#ready.push(path);
      else if (n.endsWith('.mnt')) {
        // A pool image's mount point: kept with its image; an empty leftover goes.
        if (!existsSync(`${path.slice(0, -'.mnt'.length)}.img`)) {
          try {
            rmdirSync(path);
          } catch {
            // Still mounted (outside a private namespace): left alone.
          }
        }
      } else if (!(n.endsWith('.img.base') && existsSync(path.slice(0, -'.base'.length)))) rmSync(path, { force: true });
    }
  }

  /**
   * Moves a ready image (and its .base) to `image`. Returns false when none is ready,
   * true for an unmounted one, and for one the pool has mounted (with its upper and
   * work dirs made) the mount point to `mount --move` onto the environment's disk dir.
   */
  take(image: string): string | boolean {
    for (let from = this.#mounted.shift() ?? this.#ready.shift(); from; from = this.#mounted.shift() ?? this.#ready.shift()) {
      const mounted = isMounted(this.#spawner, mountPoint(from));
      try {
        renameSync(`${from}.base`, `${image}.base`);
        renameSync(from, image);
        return mounted ? mountPoint(from) : true;
      } catch (err) {
        rmSync(`${image}.base`, { force: true });
        this.#log.warn({ err }, 'a warm disk image went missing; trying the next');
      }
    }
    return false;
  }

  /**
   * Loop-mounts a ready image at its mount point in the spawner's namespace, with the
   * upper and work dirs the runner expects, so a create spares the attach and mount.
   * A runner killed loses its namespace and these mounts (autoclear frees the loop
   * device); the next one finds the images unmounted and mounts them again here.
   */
  async #mount(image: string): Promise<void> {
    const mnt = mountPoint(image);
    if (isMounted(this.#spawner, mnt)) return;
    mkdirSync(mnt, { recursive: true, mode: 0o700 });
    const script = [
      'mount -o loop,discard,nosuid,nodev "$1" "$2" || exit',
      `{ [ -d "$2/upper" ] || { mkdir -m 755 "$2/upper" && chown ${ID_BASE}:${ID_BASE} "$2/upper"; }; } && { [ -d "$2/work" ] || mkdir -m 700 "$2/work"; } || { umount "$2"; exit 1; }`,
    ].join('\n');
    await this.#spawner.check('sh', ['-c', script, 'sh', image, mnt], { background: true });
  }

  /**
   * Makes images up to the target in the background, at the lowest CPU priority. The
   * runner calls it once a start is done, so mkfs does not compete with that start or
   * the environment's first commands.
   */
  refill(): void {
    if (this.#filling || this.#closed) return;
    this.#filling = (async () => {
      // Images left unmounted (made by an earlier runner, or its namespace died with it).
      for (let img = this.#ready.shift(); img && !this.#closed; img = this.#ready.shift()) {
        try {
          await this.#mount(img);
          this.#mounted.push(img);
        } catch (err) {
          this.#ready.push(img);
          if (!this.#closed) this.#log.warn({ err }, 'cannot mount a warm disk image; creates will mount it');
          return;
        }
      }
      while (this.#ready.length + this.#mounted.length < this.#target && !this.#closed) {
        const name = join(this.#dir, randomBytes(8).toString('hex'));
        try {
          await makeDisk(this.#spawner, `${name}.tmp`, this.bytes, { background: true });
          renameSync(`${name}.tmp.base`, `${name}.img.base`);
          renameSync(`${name}.tmp`, `${name}.img`);
        } catch (err) {
          for (const f of [`${name}.tmp`, `${name}.tmp.base`, `${name}.img.base`]) rmSync(f, { force: true });
          if (!this.#closed) this.#log.warn({ err }, 'cannot make a warm disk image; creates will make their own');
          return;
        }
        try {
          await this.#mount(`${name}.img`);
          this.#mounted.push(`${name}.img`);
        } catch (err) {
          this.#ready.push(`${name}.img`);
          if (!this.#closed) this.#log.warn({ err }, 'cannot mount a warm disk image; creates will mount it');
          return;
        }
      }
    })().finally(() => (this.#filling = undefined));
  }

  close(): void {
    this.#closed = true;
  }
}

/** Where the pool mounts `image` (`<name>.img`) ahead of a create. */
function mountPoint(image: string): string {
  return `${image.slice(0, -'.img'.length)}.mnt`;
}
