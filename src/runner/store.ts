// The runner's state store: one btrfs file system (a sparse image in the data dir, loop-
// mounted in the spawner's mount namespace) holding every environment's state as a
// subvolume (its overlay's upper and work dirs) and every snapshot as a read-only one.
// A snapshot and a fork are btrfs snapshots: copy-on-write, so they take milliseconds
// whatever the workspace holds, writes of one never show in another, and the blocks they
// share are freed when the last subvolume holding them goes. A disk limit is a qgroup
// limit on the environment's subvolume (what it references, shared blocks included).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { conflict, notFound, unavailable } from '../shared/errors.ts';
import { installed } from './health.ts';
import { ID_BASE } from './idmap.ts';
import { isMounted } from './overlay.ts';
import type { Spawner } from './spawner/index.ts';

export type StoreSupport = { available: true } | { available: false; reason: string };

/** The file in an environment's folder (DATA_DIR/environments/ID) that says its state is in the store. */
export const STORED_MARKER = 'stored';

/** A snapshot an export reads from (runner.ts exportState): removed after, and at the next open if a kill left it. */
export const EXPORT_SNAPSHOT_PREFIX = 'export_';

/** Ids of environments and snapshots: they become directory names. */
const ID = /^[a-z]+_[A-Za-z0-9]+$/;

/** Whether this host can keep a btrfs state store: the kernel's btrfs and btrfs-progs. */
export function storeSupport(): StoreSupport {
  const reasons: string[] = [];
  let kernel = false;
  try {
    kernel = /\bbtrfs\b/.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch {
    // No /proc: not Linux as Berth knows it.
  }
  if (!kernel) reasons.push("the kernel has no btrfs (modprobe btrfs, or a kernel built with it)");
  if (!installed('mkfs.btrfs') || !installed('btrfs')) reasons.push('btrfs-progs is not installed (apt-get install btrfs-progs)');
  return reasons.length ? { available: false, reason: `snapshots need the runner's btrfs state store: ${reasons.join('; ')}` } : { available: true };
}

export class StateStore {
  /** Where the file system is mounted (in the spawner's namespace). */
  readonly root: string;
  readonly #image: string;
  readonly #spawner: Spawner;
  readonly #log: Logger;
  #ready: Promise<void> | undefined;
  /** Snapshots are read-only: what one references never changes, so it is asked once. */
  readonly #snapshotBytes = new Map<string, number>();

  /** @param dir the runner's runtime dir: the image is `store.img` there, mounted at `store`. */
  constructor(opts: { dir: string; spawner: Spawner; logger: Logger }) {
    this.#image = join(opts.dir, 'store.img');
    this.root = join(opts.dir, 'store');
    this.#spawner = opts.spawner;
    this.#log = opts.logger;
  }

  /** The environment's subvolume: its overlay's `upper` and `work` are in it. */
  envDir(id: string): string {
    return join(this.root, 'envs', checked(id));
  }

  snapshotDir(id: string): string {
    return join(this.root, 'snapshots', checked(id));
  }

  /**
   * Makes the file system once (a sparse image as large as the data dir's disk: it takes
   * only what is written, and discard gives freed blocks back) and mounts it. Made under a
   * temporary name and renamed once whole, so a runner killed meanwhile leaves nothing
   * that passes for a store.
   */
  ready(): Promise<void> {
    this.#ready ??= this.#open().catch((err: unknown) => {
      this.#ready = undefined;
      throw err;
    });
    return this.#ready;
  }

  async #open(): Promise<void> {
    if (isMounted(this.#spawner, this.root)) return;
    if (!existsSync(this.#image)) {
      const tmp = `${this.#image}.tmp`;
      rmSync(tmp, { force: true });
      mkdirSync(dirname(this.#image), { recursive: true, mode: 0o700 });
      const fs = statfsSync(dirname(this.#image));
      writeFileSync(tmp, '', { mode: 0o600 });
      // At least 16 GiB so a small disk can still hold an environment's default limit; sparse.
      await this.#spawner.check('truncate', ['-s', String(Math.max(16 * 1024 ** 3, fs.blocks * fs.bsize)), tmp]);
      await this.#spawner.check('mkfs.btrfs', ['-q', '-f', '-L', 'berth-state', tmp]);
      renameSync(tmp, this.#image);
    }
    const script = [
      'img=$1 root=$2',
      'mkdir -p -m 700 "$root" || exit',
      'mount -o loop,discard=async,noatime,nosuid,nodev "$img" "$root" || exit',
      // Quotas are what disk limits are; enabling them again is a no-op.
      'btrfs quota enable "$root" || { umount "$root"; exit 1; }',
      'mkdir -p -m 700 "$root/envs" "$root/snapshots"',
      `for d in "$root"/snapshots/${EXPORT_SNAPSHOT_PREFIX}*; do [ -e "$d" ] && btrfs -q subvolume delete "$d"; done; exit 0`,
    ].join('\n');
    await this.#spawner.check('sh', ['-c', script, 'sh', this.#image, this.root]);
  }

  /** A new, empty state for environment `id`: its subvolume with upper (the environment's "/") and work. */
  async createEnv(id: string, limitBytes: number | undefined): Promise<void> {
    await this.ready();
    const dir = this.envDir(id);
    const script = [
      'dir=$1 limit=$2',
      // One left by a create that was killed is replaced: nothing used it.
      '[ -e "$dir" ] && { btrfs -q subvolume delete "$dir" || exit; }',
      'btrfs -q subvolume create "$dir" || exit',
      `mkdir -m 755 "$dir/upper" && chown ${ID_BASE}:${ID_BASE} "$dir/upper" && mkdir -m 700 "$dir/work" || exit`,
      '[ "$limit" = none ] || btrfs qgroup limit "$limit" "$dir"',
    ].join('\n');
    await this.#spawner.check('sh', ['-c', script, 'sh', dir, limitBytes ? String(limitBytes) : 'none']);
  }

  /**
   * Environment `id`'s state made from snapshot `snapshot`: a writable btrfs snapshot of it
   * (no copy), with an empty work dir of its own.
   */
  async createEnvFrom(id: string, snapshot: string, limitBytes: number | undefined): Promise<void> {
    await this.ready();
    const from = this.snapshotDir(snapshot);
    const dir = this.envDir(id);
    const script = [
      'from=$1 dir=$2 limit=$3',
      '[ -d "$from/upper" ] || { echo "no such snapshot on this runner" >&2; exit 3; }',
      '[ -e "$dir" ] && { btrfs -q subvolume delete "$dir" || exit; }',
      'btrfs -q subvolume snapshot "$from" "$dir" || exit',
      'rm -rf "$dir/work" && mkdir -m 700 "$dir/work" || exit',
      '[ "$limit" = none ] || btrfs qgroup limit "$limit" "$dir"',
    ].join('\n');
    const r = await this.#spawner.run('sh', ['-c', script, 'sh', from, dir, limitBytes ? String(limitBytes) : 'none']);
    if (r.code === 3) throw notFound(`snapshot ${snapshot} is not on this runner`);
    if (r.code !== 0) throw new Error(`cannot make environment ${id} from snapshot ${snapshot}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  /**
   * Freezes environment `id`'s state as snapshot `snapshot`: a read-only btrfs snapshot,
   * atomic (it exists whole or not at all). The caller pauses a running environment first
   * so the moment is one its processes agree on.
   */
  async snapshotEnv(id: string, snapshot: string): Promise<void> {
    await this.ready();
    const to = this.snapshotDir(snapshot);
    const r = await this.#spawner.run('sh', ['-c', '[ -e "$2" ] && exit 3; exec btrfs -q subvolume snapshot -r "$1" "$2"', 'sh', this.envDir(id), to]);
    if (r.code === 3) throw conflict(`snapshot ${snapshot} already exists on this runner`);
    if (r.code !== 0) throw new Error(`cannot snapshot environment ${id}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  /**
   * Snapshot `snapshot` made by copying `upper` (an environment kept outside the store: an
   * older one, on its own disk image): the one case that copies, every file once.
   */
  async snapshotCopy(upper: string, snapshot: string): Promise<void> {
    await this.ready();
    const to = this.snapshotDir(snapshot);
    const tmp = `${to}.tmp`;
    const script = [
      'upper=$1 to=$2 tmp=$3',
      '[ -e "$to" ] && exit 3',
      '[ -e "$tmp" ] && { btrfs -q subvolume delete "$tmp" || exit; }',
      'btrfs -q subvolume create "$tmp" || exit',
      // cp -a keeps owners, modes, times, xattrs (overlay's opaque marks) and whiteouts (0/0 devices).
      'cp -a --sparse=always "$upper" "$tmp/upper" && mkdir -m 700 "$tmp/work" || { btrfs -q subvolume delete "$tmp"; exit 1; }',
      // Committed before it is used: what it references is then counted (snapshotBytes asks once).
      'btrfs property set -ts "$tmp" ro true && mv "$tmp" "$to" && btrfs filesystem sync "$to"',
    ].join('\n');
    const r = await this.#spawner.run('sh', ['-c', script, 'sh', upper, to, tmp]);
    if (r.code === 3) throw conflict(`snapshot ${snapshot} already exists on this runner`);
    if (r.code !== 0) throw new Error(`cannot copy the environment's files into snapshot ${snapshot}: ${r.stderr.trim() || `exit ${r.code}`}`);
  }

  /** Deletes a subvolume if it is there; its blocks go once nothing else shares them. */
  async #delete(dir: string): Promise<void> {
    if (!isMounted(this.#spawner, this.root)) await this.ready();
    await this.#spawner.check('sh', ['-c', 'for d; do [ -e "$d" ] && { btrfs -q subvolume delete "$d" || exit; }; done; exit 0', 'sh', dir, `${dir}.tmp`]);
  }

  removeEnv(id: string): Promise<void> {
    return this.#delete(this.envDir(id));
  }

  removeSnapshot(id: string): Promise<void> {
    this.#snapshotBytes.delete(id);
    return this.#delete(this.snapshotDir(id));
  }

  /** Bytes snapshot `id` references (null if it is not here): each fork's disk limit is checked against it. */
  async snapshotBytes(id: string): Promise<number | null> {
    const known = this.#snapshotBytes.get(id);
    if (known !== undefined) return known;
    const bytes = (await this.usage(this.snapshotDir(id), { settled: true }))?.referenced ?? null;
    if (bytes !== null) this.#snapshotBytes.set(id, bytes);
    return bytes;
  }

  async hasSnapshot(id: string): Promise<boolean> {
    await this.ready();
    return (await this.#spawner.run('test', ['-d', join(this.snapshotDir(id), 'upper')])).code === 0;
  }

  /**
   * Bytes a subvolume references (every block it can read, shared or not) and holds alone
   * (what removing it would free), as btrfs's quota groups count them. They are brought up
   * to date at each transaction commit (every 30 s), so one is made first: a write or an rm
   * of the last seconds shows. It costs a few ms when little is waiting to be written (what
   * is, it writes out sooner than the next commit would). A snapshot's `referenced` is final
   * once it is made (read-only, and made by a commit of its own): `settled` skips the commit.
   */
  async usage(dir: string, o: { settled?: boolean } = {}): Promise<{ referenced: number; exclusive: number } | null> {
    await this.ready();
    if (!o.settled) await this.#spawner.run('btrfs', ['filesystem', 'sync', this.root]);
    const r = await this.#spawner.run('btrfs', ['qgroup', 'show', '--raw', '-f', dir]);
    if (r.code !== 0) return null;
    const row = r.stdout.split('\n').find((l) => /^0\/\d+\s/.test(l));
    const [, referenced, exclusive] = row?.trim().split(/\s+/) ?? [];
    return referenced && exclusive ? { referenced: Number(referenced), exclusive: Number(exclusive) } : null;
  }

  /** Data and metadata the file system holds now, for benchmarks and garbage-collection checks. */
  async used(): Promise<number> {
    await this.ready();
    await this.#spawner.check('btrfs', ['filesystem', 'sync', this.root]);
    const out = await this.#spawner.check('btrfs', ['filesystem', 'usage', '-b', this.root]);
    const used = /^\s*Used:\s+(\d+)/m.exec(out)?.[1];
    if (!used) throw unavailable(`cannot read the state store's usage: ${out.slice(0, 200)}`);
    return Number(used);
  }

  /** Unmounts it (the loop device goes with it): for tests and a runner's close. */
  async close(): Promise<void> {
    if (!isMounted(this.#spawner, this.root)) return;
    const r = await this.#spawner.run('umount', [this.root]);
    if (r.code !== 0) this.#log.warn({ stderr: r.stderr.trim() }, 'the state store is still in use; left mounted');
  }
}

function checked(id: string): string {
  if (!ID.test(id)) throw new Error(`'${id}' is not an id`);
  return id;
}
