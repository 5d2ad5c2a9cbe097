// An environment's disk quota: a sparse file holding an ext4 file system of the limit's
// size, and a few of them made ahead at the default size, so a create takes one with a
// rename instead of waiting for mkfs.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { unavailable } from '../shared/errors.ts';
import type { Spawner } from './spawner/index.ts';

const DEFAULT_WARM = 2;

/**
 * A sparse file of `bytes` with an ext4 file system on it: what the environment writes
 * past its limit fails with ENOSPC inside, and the host gives it no more than the limit.
 * mkfs discards (punches) the file first, so it stays sparse and needs no inode-table
 * zeroing: about 50 ms for 10 GiB, whatever the size. `${image}.base` keeps the blocks
 * mkfs wrote, what diskUsage subtracts while the image is not mounted.
 */
export async function makeDisk(spawner: Spawner, image: string, bytes: number): Promise<void> {
  writeFileSync(image, '', { mode: 0o600 });
  await truncate(image, bytes);
  try {
    await spawner.check('mkfs.ext4', ['-q', '-F', '-m', '0', '-J', 'size=16', '-E', 'root_owner=0:0', image]);
  } catch (err) {
    rmSync(image, { force: true });
    throw unavailable(`cannot make the environment's disk (mkfs.ext4 from e2fsprogs is needed; BERTH_DISK_QUOTA=off runs without disk limits): ${err instanceof Error ? err.message : String(err)}`);
  }
  writeFileSync(`${image}.base`, String(statSync(image).blocks * 512));
}

/**
 * Formatted, never-mounted images of one size in `dir` (on the data dir's file system,
 * so taking one is a rename). One is ready once `<name>.img` exists: it is renamed into
 * place last, after its `.base`, so a runner killed mid-mkfs leaves only `.tmp` files,
 * which the next one removes. Ready images outlive the runner and serve the next one.
 */
export class DiskPool {
  readonly bytes: number;
  readonly #dir: string;
  readonly #spawner: Spawner;
  readonly #log: Logger;
  readonly #target: number;
  readonly #ready: string[] = [];
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
      else if (!(n.endsWith('.img.base') && existsSync(path.slice(0, -'.base'.length)))) rmSync(path, { force: true });
    }
  }

  /** Moves a ready image (and its .base) to `image`; false when none is ready. */
  take(image: string): boolean {
    for (let from = this.#ready.shift(); from; from = this.#ready.shift()) {
      try {
        renameSync(`${from}.base`, `${image}.base`);
        renameSync(from, image);
        return true;
      } catch (err) {
        rmSync(`${image}.base`, { force: true });
        this.#log.warn({ err }, 'a warm disk image went missing; trying the next');
      }
    }
    return false;
  }

  /**
   * Makes images up to the target in the background. The runner calls it once a start
   * is done, so mkfs does not compete with that start.
   */
  refill(): void {
    if (this.#filling || this.#closed) return;
    this.#filling = (async () => {
      while (this.#ready.length < this.#target && !this.#closed) {
        const name = join(this.#dir, randomBytes(8).toString('hex'));
        try {
          await makeDisk(this.#spawner, `${name}.tmp`, this.bytes);
          renameSync(`${name}.tmp.base`, `${name}.img.base`);
          renameSync(`${name}.tmp`, `${name}.img`);
          this.#ready.push(`${name}.img`);
        } catch (err) {
          for (const f of [`${name}.tmp`, `${name}.tmp.base`, `${name}.img.base`]) rmSync(f, { force: true });
          if (!this.#closed) this.#log.warn({ err }, 'cannot make a warm disk image; creates will make their own');
          return;
        }
      }
    })().finally(() => (this.#filling = undefined));
  }

  close(): void {
    this.#closed = true;
  }
}
