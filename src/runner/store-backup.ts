// The state store of a stopped runner's data dir, opened for `berth backup` and `berth
// restore`. The runner's mount namespace went with `berth up`, so the store is mounted here
// in one of its own: mount -o loop finds the loop device still attached to store.img (its
// environments' overlays keep the file system alive while they run) and mounts that same
// file system, live, not a stale copy; else it mounts the image afresh. The namespace, and
// the mount with it, goes when close() ends its spawner.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import pino from 'pino';
import { pauseEnvironment } from './freeze.ts';
import { Spawner } from './spawner/index.ts';
import { StateStore, storeSupport } from './store.ts';

const ID = /^[a-z]+_[A-Za-z0-9]+$/;

/** The file in an environment's directory that says its state is in the store (runner.ts's #paths). */
export { STORED_MARKER } from './store.ts';

/** A read-only copy of an environment's state, made for one backup and dropped after it. */
export interface FrozenState {
  /** The copy's subvolume: `upper` in it is the environment's files. */
  dir: string;
  /** Whether anything ran in the environment (its processes were frozen for the snapshot). */
  running: boolean;
  pausedMs: number;
}

export class OfflineStore {
  readonly #spawner: Spawner;
  readonly #store: StateStore;
  /** Where a backup keeps its read-only copies of environments while it archives them. */
  readonly #copies: string;

  private constructor(dataDir: string) {
    this.#spawner = new Spawner({ privateMounts: { unmount: [] } });
    this.#store = new StateStore({ dir: join(dataDir, 'runtime'), spawner: this.#spawner, logger: pino({ level: 'silent' }) });
    this.#copies = join(this.#store.root, 'backup');
  }

  /** Whether data dir `dataDir` has a state store to back up. */
  static existsIn(dataDir: string): boolean {
    return existsSync(join(dataDir, 'runtime', 'store.img'));
  }

  /** The store of `dataDir`, mounted; made when there is none (a restore). */
  static async open(dataDir: string, purpose: string): Promise<OfflineStore> {
    const support = storeSupport();
    if (!support.available) throw new Error(`${purpose} needs btrfs: ${support.reason}`);
    // A restore's data dir has no runtime dir yet: the store makes its image there.
    mkdirSync(join(dataDir, 'runtime'), { recursive: true, mode: 0o700 });
    const store = new OfflineStore(dataDir);
    try {
      await store.#store.ready();
      // Copies a killed backup left behind hold blocks: gone before this one makes its own.
      await store.#sh('mkdir -p -m 700 "$1" && for d in "$1"/*; do [ -e "$d" ] || continue; btrfs -q subvolume delete "$d" || exit; done', store.#copies);
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  hasEnv(id: string): Promise<boolean> {
    return this.#test(join(this.#store.envDir(id), 'upper'));
  }

  /** The snapshots the store holds whole (a snapshot being made has a `.tmp` name). */
  async snapshots(): Promise<string[]> {
    const out = await this.#spawner.check('ls', ['-1', join(this.#store.root, 'snapshots')]);
    return out.split('\n').filter((id) => ID.test(id));
  }

  snapshotDir(id: string): string {
    return this.#store.snapshotDir(id);
  }

  /**
   * Environment `id`'s files as they are now, in a read-only snapshot: a running environment
   * is paused (its cgroup frozen) only for the snapshot's few milliseconds, not for the copy.
   */
  async freeze(id: string): Promise<FrozenState> {
    const dir = join(this.#copies, id);
    const begun = performance.now();
    // The snapshot ioctl flushes what the subvolume has not written yet: no sync.
    const paused = await pauseEnvironment(id, { sync: false });
    try {
      await this.#spawner.check('btrfs', ['-q', 'subvolume', 'snapshot', '-r', this.#store.envDir(id), dir]);
    } finally {
      paused.resume();
    }
    return { dir, running: paused.running, pausedMs: paused.running ? Math.round(performance.now() - begun) : 0 };
  }

  async drop(state: FrozenState): Promise<void> {
    await this.#spawner.check('btrfs', ['-q', 'subvolume', 'delete', state.dir]);
  }

  /** Environment `id`'s disk limit (its qgroup's limit on what it references), if it has one. */
  async limit(id: string): Promise<number | null> {
    const out = await this.#spawner.check('btrfs', ['qgroup', 'show', '-r', '--raw', '-f', this.#store.envDir(id)]);
    const row = out.split('\n').find((l) => /^0\/\d+\s/.test(l));
    const max = row?.trim().split(/\s+/)[3];
    return max && /^\d+$/.test(max) ? Number(max) : null;
  }

  /** Bytes a subvolume references (blocks it shares with others counted too). */
  async bytes(dir: string): Promise<number> {
    return (await this.#store.usage(dir))?.referenced ?? 0;
  }

  /**
   * Runs tar (GNU tar's own arguments) where the store is mounted: entered with nsenter,
   * so a whole environment's files come through one pipe, not chunk by chunk through the
   * spawner's message channel.
   */
  tar(args: string[]): { stdout: Readable; stderr: Readable; exited: Promise<{ code: number | null }> } {
    const child = spawn('nsenter', [`--mount=/proc/${this.#spawner.pid}/ns/mnt`, '--', 'tar', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null }>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code }));
    });
    return { stdout: child.stdout, stderr: child.stderr, exited };
  }

  /** Environment `id`'s state made again, empty, with its disk limit; fill its `upper` with tar(). */
  async createEnv(id: string, limitBytes: number | null): Promise<string> {
    await this.#store.createEnv(id, limitBytes ?? undefined);
    return this.#store.envDir(id);
  }

  /**
   * Snapshot `id` made again: `fill` writes its `upper` into a new subvolume, which is then
   * made read-only and given its name, so a restore killed meanwhile leaves no snapshot.
   */
  async createSnapshot(id: string, fill: (dir: string) => Promise<void>): Promise<void> {
    const to = this.#store.snapshotDir(id);
    const tmp = `${to}.tmp`;
    await this.#sh('[ -e "$1" ] && { btrfs -q subvolume delete "$1" || exit; }; btrfs -q subvolume create "$1" && mkdir -m 700 "$1/work"', tmp);
    await fill(tmp);
    await this.#sh('btrfs property set -ts "$1" ro true && mv "$1" "$2"', tmp, to);
  }

  /** Unmounts the store (its writes reach store.img) and ends the namespace. */
  async close(): Promise<void> {
    try {
      if (this.#spawner.alive) await this.#store.close();
    } finally {
      this.#spawner.close();
    }
  }

  async #sh(script: string, ...args: string[]): Promise<void> {
    await this.#spawner.check('sh', ['-c', script, 'sh', ...args]);
  }

  async #test(path: string): Promise<boolean> {
    return (await this.#spawner.run('test', ['-d', path])).code === 0;
  }
}
