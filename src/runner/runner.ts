import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { rm, rmdir, stat } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_LIMITS, type EnvironmentLimits } from '../shared/environment.ts';
import { invalid, unavailable } from '../shared/errors.ts';
import { formatSize } from '../shared/units.ts';
import { buildAgent, buildMountExec } from './agent/build.ts';
import { openAgentSocket, startAgentCommand } from './agent/client.ts';
import { SOCKET_NAME } from './agent/protocol.ts';
import type { ContainerStatus, IsolationBackend } from './backends/backend.ts';
import { OciRuntime, type RuntimeName } from './backends/oci-runtime.ts';
import { ociConfig, WORKSPACE } from './bundle.ts';
import { pauseRefused, pauseSupport, type CheckpointSupport } from './checkpoint.ts';
import { cgroupLayout, cgroupUsage, HYBRID_UNIFIED_MOUNT, oomKillCount, type CgroupUsage } from './cgroups.ts';
import { DiskPool, makeDisk } from './disk.ts';
import { startCommand, type RunningCommand } from './exec.ts';
import { ID_BASE } from './idmap.ts';
import { watchOom } from './oom.ts';
import type { ImageRecord, ImageStore } from './images/index.ts';
import { CA_BUNDLE_PATH, NetworkManager, type RunnerNetworkOptions } from './network/index.ts';
import { distroOf, mirrorConfig, MIRRORS_DIR } from './mirrors.ts';
import { cacheEnvFor, cacheLayout } from './caches.ts';
import { CACHE_KINDS, type CacheKind } from '../shared/caches.ts';
import { isMounted, mountsThen, unmountOverlay } from './overlay.ts';
import { Spawner } from './spawner/index.ts';
import { resolveUser, type ResolvedUser } from './users.ts';
import { serveUnixSocket, SOCKET_NAME_PATTERN } from './unix-socket.ts';
import { VOLUME_NAME, type VolumeMount } from '../shared/env-spec.ts';
import type { BuildImageRequest, CommandOptions, EnvironmentSpec, EnvironmentUsage, Runner } from './port.ts';
import type { BuildResult, ImageBuilder } from './images/build.ts';
import { unpackCheckout } from './images/checkout-tar.ts';
import { mkdtemp } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { conflict, notFound } from '../shared/errors.ts';
import { collectCapped } from '../shared/output.ts';
import { ID_COUNT } from './idmap.ts';
import { checkStateFile, DEFAULT_STATE_ENTRIES, STATE_TAR_KEEP, STATE_TAR_UNPACK } from './state-tar.ts';
import { pauseEnvironment, thawLeftover } from './freeze.ts';
import { EXPORT_SNAPSHOT_PREFIX, STORED_MARKER, StateStore, storeSupport, type StoreSupport } from './store.ts';
import type { SnapshotMade } from './port.ts';

export type { CommandOptions, EnvironmentSpec };

export interface RunnerOptions {
  dataDir: string;
  /** Its id in the runners table (default `local:DATA_DIR`) and the name it is listed under (default `local`). */
  id?: string | undefined;
  name?: string | undefined;
  images: ImageStore;
  logger: Logger;
  runtime?: RuntimeName | undefined;
  /** A static init binary (catatonit) bind-mounted into every environment as PID 1 when the agent is not used. */
  initBinary?: string | undefined;
  /**
   * Run the Berth agent (agent/agent.c) as every environment's PID 1 and send commands
   * to it (default: yes; BERTH_AGENT=off in runner/config.ts). Without it, or when it cannot be
   * built, environments run catatonit and commands go through the runtime's exec.
   */
  agent?: boolean | undefined;
  /** The C compiler that builds the agent (default: cc). */
  compiler?: string | undefined;
  /** Give new environments a disk image of their limit's size (default: yes). */
  diskQuota?: boolean | undefined;
  /**
   * Where new environments keep their state: `btrfs`, the state store (store.ts: snapshots and
   * forks in milliseconds, a qgroup as the disk limit); `image`, an ext4 image each (or a plain
   * folder with diskQuota off), without snapshots; `auto` (the default), btrfs where the host has it.
   */
  stateStore?: 'auto' | 'btrfs' | 'image' | undefined;
  /**
   * Give environments a network: their own namespace whose only way out is this
   * runner's egress proxy, which applies `policies` and reports to `events`. Without
   * it, environments have an empty network namespace: no network at all.
   */
  network?: RunnerNetworkOptions | undefined;
  /** Builds devcontainer images into `images`; without it builds are refused. */
  builder?: ImageBuilder | undefined;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long a started environment's agent gets to open its socket. */
const AGENT_START_TIMEOUT_MS = 5_000;

/**
 * Runs environments on this host: each one an OCI bundle whose root file system is an
 * overlay of a shared, read-only image and the environment's own upper directory.
 * The upper directory is the environment's state; everything else can be rebuilt.
 */
export class LocalRunner implements Runner {
  readonly id: string;
  readonly name: string;
  readonly backend: IsolationBackend;
  readonly images: ImageStore;
  readonly #root: string;
  /** Named volumes: DATA_DIR/volumes/OWNER/NAME. */
  readonly #volumes: string;
  readonly #mounts: string;
  #initBinary: string | undefined;
  readonly #log: Logger;
  readonly #spawner: Spawner;
  readonly #useAgent: boolean;
  /** The agent binary for this runner's agent.c, or undefined when it cannot be built. */
  readonly #agent: Promise<string | undefined>;
  /** The start helper (mount-exec.c), or undefined when it cannot be built: starts then mount through sh. */
  readonly #mountExec: Promise<string | undefined>;
  readonly #closing = new AbortController();
  /** Whether new environments get a disk image of their limit's size (BERTH_DISK_QUOTA=off: no). */
  readonly #diskQuota: boolean;
  /** Formatted images of the default disk size, so a create renames one instead of running mkfs. */
  readonly #disks: DiskPool | undefined;
  /** The btrfs state store new environments and snapshots live in, where the host has one. */
  readonly #store: StateStore | undefined;
  readonly #storeSupport: StoreSupport;
  /** Namespaces, rules and proxies, when environments have a network. */
  readonly network: NetworkManager | undefined;
  readonly #policies: RunnerNetworkOptions['policies'] | undefined;
  /** Sockets served into environments (serveSocket), each with its stop: all stop with the runner. */
  readonly #served = new Set<() => Promise<void>>();
  /** Each environment's package-mirror variables as of its last start (kept on disk for a restarted runner). */
  readonly #mirrorEnv = new Map<string, string[]>();
  /** Each environment's package-cache variables as of its last start (kept on disk too). */
  readonly #cacheEnv = new Map<string, string[]>();
  readonly #builder: ImageBuilder | undefined;
  /** Where each build's checkout is unpacked, a private folder per build. */
  readonly #buildDir: string;

  /** Whether new environments get a disk image of their limit's size. */
  get diskQuota(): boolean {
    return this.#diskQuota;
  }

  constructor(opts: RunnerOptions) {
    this.id = opts.id ?? `local:${opts.dataDir}`;
    this.name = opts.name ?? 'local';
    this.images = opts.images;
    this.#log = opts.logger;
    this.#builder = opts.builder;
    this.#buildDir = join(opts.dataDir, 'builds');
    this.#root = join(opts.dataDir, 'environments');
    this.#volumes = join(opts.dataDir, 'volumes');
    // Root file systems are mounted under /run, not the data dir: crun reaches the mount
    // point as the environment's unprivileged root, which cannot pass through a private
    // data dir such as /root/.berth. /run is also cleared by a reboot, like the mounts.
    this.#mounts = join('/run/berth', createHash('sha256').update(resolve(opts.dataDir)).digest('hex').slice(0, 16));
    this.#initBinary = opts.initBinary;
    this.#diskQuota = opts.diskQuota ?? true;
    this.#spawner = new Spawner(cgroupLayout() === 'hybrid' ? { privateMounts: { unmount: [HYBRID_UNIFIED_MOUNT] } } : {});
    const wanted = opts.stateStore ?? 'auto';
    const support = storeSupport();
    if (wanted === 'btrfs' && !support.available) throw unavailable(`BERTH_STATE_STORE=btrfs, but ${support.reason}`);
    this.#storeSupport = wanted === 'image' ? { available: false, reason: 'snapshots need the btrfs state store, and this runner keeps environments on disk images (BERTH_STATE_STORE=image): start it with BERTH_STATE_STORE=btrfs' } : support;
    this.#store = wanted !== 'image' && support.available ? new StateStore({ dir: join(opts.dataDir, 'runtime'), spawner: this.#spawner, logger: this.#log }) : undefined;
    // Mounted ahead, off the first create's path; a failure is the first create's to report.
    this.#store?.ready().catch((err: unknown) => this.#log.warn({ err }, 'cannot open the btrfs state store; creates will try again'));
    this.#disks = this.#diskQuota && !this.#store
      ? new DiskPool({ dir: join(opts.dataDir, 'runtime', 'disks'), bytes: DEFAULT_LIMITS.diskBytes, spawner: this.#spawner, logger: this.#log })
      : undefined;
    this.#disks?.refill();
    this.#policies = opts.network?.policies;
    this.network = opts.network ? new NetworkManager({ ...opts.network, dataDir: opts.dataDir, spawner: this.#spawner, logger: this.#log }) : undefined;
    const runtime = findRuntime(opts.runtime);
    this.backend = new OciRuntime({ name: runtime, stateDir: join(opts.dataDir, 'runtime', 'state'), spawner: this.#spawner });
    // gVisor keeps the sandbox's unix sockets inside its own kernel, where the host
    // cannot connect to them: runsc environments keep catatonit and exec.
    this.#useAgent = (opts.agent ?? true) && runtime !== 'runsc';
    const build = { spawner: this.#spawner, cacheDir: join(opts.dataDir, 'runtime'), compiler: opts.compiler ?? 'cc', logger: this.#log, signal: this.#closing.signal };
    this.#agent = this.#useAgent ? buildAgent(build) : Promise.resolve(undefined);
    this.#mountExec = buildMountExec(build);
  }

  #paths(id: string) {
    const dir = join(this.#root, id);
    // Three layouts, told apart by what is in `dir`: `stored` (a marker file), the upper and
    // work dirs in the environment's subvolume of the state store; `disk.img`, on its own ext4
    // image, whose size is its disk limit; else straight in `dir` (BERTH_DISK_QUOTA=off, or
    // made before either). A new environment takes the store where there is one.
    const marker = join(dir, STORED_MARKER);
    const image = join(dir, 'disk.img');
    const stored = this.#store !== undefined && (existsSync(marker) || (!existsSync(image) && !existsSync(join(dir, 'upper'))));
    const quota = !stored && (existsSync(image) || (!existsSync(join(dir, 'upper')) && this.#diskQuota));
    const base = stored ? this.#store!.envDir(id) : quota ? join(dir, 'disk') : dir;
    return {
      dir,
      stored,
      marker,
      image: quota ? image : undefined,
      disk: join(dir, 'disk'),
      upper: join(base, 'upper'),
      work: join(base, 'work'),
      merged: join(this.#mounts, id),
      bundle: join(dir, 'bundle'),
      exec: join(dir, 'exec'),
      agent: join(dir, 'agent'),
      agentSocket: join(dir, 'agent', SOCKET_NAME),
      mirrors: join(dir, 'mirrors'),
      mirrorEnv: join(dir, 'mirrors.env.json'),
      caches: join(dir, 'caches'),
      cacheEnv: join(dir, 'caches.env.json'),
    };
  }

  containerId(id: string): string {
    return `berth-${id}`;
  }

  cgroupsPath(id: string): string {
    return `/berth/${id}`;
  }

  /** Mounts the overlay, writes the bundle and starts the environment's init. Idempotent. */
  async start(spec: EnvironmentSpec): Promise<void> {
    const p = this.#paths(spec.id);
    const cid = this.containerId(spec.id);
    const fresh = !this.exists(spec.id);
    if (!fresh) {
      const status = await this.status(spec.id);
      if (status === 'running') {
        // Still running after a runner restart: its network lives on; its proxy listens again.
        await this.network?.resume(spec.id);
        return;
      }
      // A container left from a crash (dead init) would block the new one. After a stop
      // there is none: no delete (two runtime calls, as it fails and checks again).
      if (status !== 'absent') await this.backend.delete(cid);
    }

    const agent = await this.#agent;
    if (p.stored) {
      await this.#store!.ready();
      if (fresh) {
        await this.#store!.createEnv(spec.id, this.#diskQuota ? spec.limits.diskBytes : undefined);
        mkdirSync(p.dir, { recursive: true, mode: 0o700 });
        writeFileSync(p.marker, '', { mode: 0o600 });
      }
    }
    // These few local file operations take microseconds each, less than a round trip
    // through libuv's thread pool; this is on the path of every create and start.
    // With a disk image, upper and work are made on it once it is mounted (mountsThen); in the store, by createEnv.
    for (const d of p.stored ? [p.bundle, p.exec] : p.image ? [p.disk, p.bundle, p.exec] : [p.upper, p.work, p.bundle, p.exec]) mkdirSync(d, { recursive: true, mode: 0o700 });
    mkdirSync(p.merged, { recursive: true, mode: 0o711 });
    // A pool image already mounted: its mount point, moved onto p.disk before the overlay.
    let moveFrom: string | undefined;
    if (fresh && p.image) {
      // At the default size, a formatted image from the pool: a rename instead of mkfs,
      // and, when the pool has mounted it, a mount --move instead of a loop mount.
      const taken = spec.limits.diskBytes === this.#disks?.bytes ? this.#disks.take(p.image) : false;
      if (typeof taken === 'string') moveFrom = taken;
      else if (!taken) await makeDisk(this.#spawner, p.image, spec.limits.diskBytes);
    } else if (fresh && !p.stored) {
      // The upper dir's root is the environment's "/": owned by root inside.
      chownSync(p.upper, ID_BASE, ID_BASE);
      chmodSync(p.upper, 0o755);
    }
    // A socket left by an earlier run would pass for a live agent.
    rmSync(p.agentSocket, { force: true });
    if (agent) {
      // The agent runs as the environment's root and makes its socket here.
      mkdirSync(p.agent, { recursive: true, mode: 0o700 });
      chownSync(p.agent, ID_BASE, ID_BASE);
    }
    // The namespace, veth pair and rules (kept from an earlier run, else fresh), and the
    // proxy listening, before init starts.
    const network = await this.network?.prepare(spec.id);
    const mirrors = network ? this.#writeMirrors(spec) : undefined;
    const caches = this.#prepareCaches(spec);
    // The project's own volumes after its caches: a volume it mounts at a cache's place wins.
    const volumes = [...caches.volumes, ...this.#prepareVolumes(spec)];
    const config = ociConfig({
      hostname: spec.hostname,
      rootfs: p.merged,
      initBinary: agent ?? this.#catatonit(),
      agentDir: agent ? p.agent : undefined,
      env: [...this.#baseEnv(spec.image), ...(network?.env ?? []), ...(mirrors?.env ?? []), ...caches.env],
      limits: spec.limits,
      cgroupsPath: this.cgroupsPath(spec.id),
      network: network && { netnsPath: network.netnsPath, caBundle: { source: network.caBundle, destination: CA_BUNDLE_PATH } },
      readOnly: [...(mirrors?.mounts ?? []), ...caches.files],
      volumes,
    });
    writeFileSync(join(p.bundle, 'config.json'), JSON.stringify(config));
    // With a network, the image lies under the layer that adds the runner's and the company's CAs to its trust store.
    const trust = network && (await this.network?.trustLayer(spec.image.rootfs));
    const overlay = { lower: trust ? `${trust}:${spec.image.rootfs}` : spec.image.rootfs, upper: p.upper, work: p.work, merged: p.merged };
    const image = p.image;
    const helper = await this.#mountExec;
    await this.backend.run(cid, p.bundle, {
      // Only when the overlay is not mounted yet is the disk's state asked (each asks reads mountinfo).
      wrap: isMounted(this.#spawner, p.merged)
        ? undefined
        : (runtime) => mountsThen(helper, { overlay, disk: image ? { image, dir: p.disk, mounted: moveFrom ?? isMounted(this.#spawner, p.disk) } : undefined }, runtime),
    });
    // The pool's mount point, empty once its mount has moved.
    if (moveFrom) {
      try {
        rmdirSync(moveFrom);
      } catch {
        // Left for the pool to clear on the next runner's start.
      }
    }
    if (agent && (await this.#waitForAgent(spec.id, p.agentSocket))) {
      // The socket is made: take the folder back, so nothing in the environment can
      // remove or replace the socket or keep files here, outside its own upper dir.
      // Its root may still connect: the socket is its own, and the folder searchable.
      chownSync(p.agent, 0, 0);
      chmodSync(p.agent, 0o711);
    }
    // Started: now make the next create's disk and network namespace ahead, off its path.
    this.#disks?.refill();
    this.network?.refill();
  }

  /**
   * The package mirrors' configuration as the policy names them now, written afresh into
   * the environment's folder and bound read-only: what the policy no longer names is gone
   * at the next start, and the image's own configuration shows again.
   */
  #writeMirrors(spec: EnvironmentSpec): { env: string[]; mounts: { source: string; destination: string }[] } {
    const p = this.#paths(spec.id);
    const list = this.#policies?.mirrorsFor?.(spec.id) ?? [];
    const config = list.length ? mirrorConfig(list, { distro: distroOf(readOsRelease(spec.image.rootfs)), caBundle: CA_BUNDLE_PATH }) : undefined;
    for (const why of config?.skipped ?? []) this.#log.warn({ environment: spec.id }, `package mirror not configured: ${why}`);
    const env = config?.env ?? [];
    const files = config?.files ?? {};
    const key = createHash('sha256').update(JSON.stringify(files)).digest('hex');
    // The same files as the last start (the usual case): nothing to write on the start's path.
    if (savedMirrors(p.mirrorEnv)?.key !== key || (Object.keys(files).length > 0 && !existsSync(p.mirrors))) {
      rmSync(p.mirrors, { recursive: true, force: true });
      if (Object.keys(files).length) {
        mkdirSync(p.mirrors, { mode: 0o755 });
        for (const [name, content] of Object.entries(files)) writeFileSync(join(p.mirrors, name), content, { mode: 0o644 });
        // apt's source parts point here: an empty folder, so the image's sources.list.d is not read.
        if (files['apt-sources.list']) mkdirSync(join(p.mirrors, 'apt-sources.list.d'), { mode: 0o755 });
      }
      writeFileSync(p.mirrorEnv, JSON.stringify({ key, env }), { mode: 0o600 });
    }
    this.#mirrorEnv.set(spec.id, env);
    if (!config || Object.keys(files).length === 0) return { env, mounts: [] };
    return { env, mounts: [{ source: p.mirrors, destination: MIRRORS_DIR }, ...config.mounts.map((m) => ({ source: join(p.mirrors, m.name), destination: m.destination }))] };
  }

  #mirrorEnvOf(id: string): string[] {
    let env = this.#mirrorEnv.get(id);
    if (!env) {
      env = savedMirrors(this.#paths(id).mirrorEnv)?.env ?? [];
      this.#mirrorEnv.set(id, env);
    }
    return env;
  }

  /**
   * The host directories of the environment's named volumes, made on first use: owned by the
   * environment's root, mode 1777 like /tmp, so whichever user its commands run as can write.
   */
  #prepareVolumes(spec: EnvironmentSpec): { source: string; destination: string }[] {
    if (!spec.volumes?.length) return [];
    return spec.volumes.map((v) => {
      if (!VOLUME_NAME.test(v.name)) throw new Error(`volume name '${v.name}' is not valid`);
      return { source: this.#volumeDir(spec.volumeOwner ?? spec.id, v.name), destination: v.target };
    });
  }

  /**
   * The project's package caches (caches.ts): a directory per kind beside its named volumes,
   * named with a leading dot no volume name can take, so a devcontainer's volume never is one.
   * Only the directory itself is bound, never a path inside it: what the environment puts
   * there (a symlink out, say) is never resolved on the host.
   */
  #prepareCaches(spec: EnvironmentSpec): { volumes: { source: string; destination: string }[]; files: { source: string; destination: string }[]; env: string[] } {
    const p = this.#paths(spec.id);
    const kinds = spec.caches ?? [];
    // A project's only: an environment of its own would keep them for itself alone.
    const layout = kinds.length && spec.volumeOwner?.startsWith('prj_')
      ? cacheLayout(kinds, { imageEnv: spec.image.config.env, dockerClean: Boolean(lstatSync(join(spec.image.rootfs, 'etc/apt/apt.conf.d/docker-clean'), { throwIfNoEntry: false })) })
      : { volumes: [], env: [], files: [] };
    const volumes = layout.volumes.map((v) => ({ source: this.#volumeDir(spec.volumeOwner!, v.dir), destination: v.target }));
    // The files are the runner's (constant text), rewritten at each start and bound read-only.
    if (layout.files.length || existsSync(p.caches)) rmSync(p.caches, { recursive: true, force: true });
    const files = layout.files.map((f, i) => {
      mkdirSync(p.caches, { recursive: true, mode: 0o755 });
      const source = join(p.caches, String(i));
      writeFileSync(source, f.content, { mode: 0o644 });
      return { source, destination: f.destination };
    });
    if (layout.env.length) writeFileSync(p.cacheEnv, JSON.stringify(layout.env), { mode: 0o600 });
    else rmSync(p.cacheEnv, { force: true });
    this.#cacheEnv.set(spec.id, layout.env);
    return { volumes, files, env: layout.env };
  }

  #cacheEnvOf(id: string): string[] {
    let env = this.#cacheEnv.get(id);
    if (!env) {
      try {
        const saved: unknown = JSON.parse(readFileSync(this.#paths(id).cacheEnv, 'utf8'));
        env = Array.isArray(saved) ? saved.map(String) : [];
      } catch {
        env = [];
      }
      this.#cacheEnv.set(id, env);
    }
    return env;
  }

  /** DATA_DIR/volumes/OWNER/NAME, made on first use: owned by the environment's root, mode 1777 like /tmp. */
  #volumeDir(owner: string, name: string): string {
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(owner)) throw new Error(`volume owner '${owner}' is not an id`);
    const dir = join(this.#volumes, owner);
    mkdirSync(dir, { recursive: true, mode: 0o711 });
    const source = join(dir, name);
    if (!existsSync(source)) {
      mkdirSync(source, { mode: 0o700 });
      chownSync(source, ID_BASE, ID_BASE);
      chmodSync(source, 0o1777);
    }
    return source;
  }

  /** Bytes on disk of each package cache kept for `owner`: du, which follows no symlink the environment left there, on one file system. */
  async cacheUsage(owner: string): Promise<Partial<Record<CacheKind, number>>> {
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(owner)) throw new Error(`volume owner '${owner}' is not an id`);
    const usage: Partial<Record<CacheKind, number>> = {};
    for (const kind of CACHE_KINDS) {
      const dir = join(this.#volumes, owner, `.cache-${kind}`);
      if (!existsSync(dir)) continue;
      const r = await this.#spawner.run('du', ['-s', '-x', '--block-size=1', '--', dir]);
      const bytes = Number(/^(\d+)\s/.exec(r.stdout)?.[1]);
      if (Number.isFinite(bytes)) usage[kind] = bytes;
    }
    return usage;
  }

  /** Deletes the named volumes kept for `owner` (a project's or an environment's id). */
  async removeVolumes(owner: string): Promise<void> {
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(owner)) throw new Error(`volume owner '${owner}' is not an id`);
    await rm(join(this.#volumes, owner), { recursive: true, force: true });
  }

  /** Who `user` (a name or uid) is in the running environment, from its own /etc/passwd and /etc/group. */
  async resolveUser(spec: EnvironmentSpec, user: string): Promise<ResolvedUser> {
    const read = async (path: string) => {
      const cmd = this.#exec(spec, { cmd: ['cat', '--', path], timeoutMs: 30_000 });
      cmd.stdin.end();
      const chunks: Buffer[] = [];
      let size = 0;
      cmd.stdout.on('data', (b: Buffer) => {
        // Hostile: at most 1 MiB is kept, the rest dropped.
        if (size < 1024 * 1024) chunks.push(b);
        size += b.length;
      });
      cmd.stderr.resume();
      const status = await cmd.exited;
      // No group file is no groups; no passwd file leaves names unknown.
      return status.exitCode === 0 ? Buffer.concat(chunks).subarray(0, 1024 * 1024).toString('utf8') : '';
    };
    const [passwd, group] = [await read('/etc/passwd'), await read('/etc/group')];
    return resolveUser(user, passwd, group);
  }

  /** Until the agent listens; if it never does, commands go through the runtime's exec. */
  async #waitForAgent(id: string, socket: string): Promise<boolean> {
    const deadline = performance.now() + AGENT_START_TIMEOUT_MS;
    while (!existsSync(socket)) {
      if (performance.now() > deadline) {
        this.#log.warn({ environment: id }, `the environment's agent did not open its socket; its commands go through ${this.backend.name} exec`);
        return false;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    return true;
  }

  /** The host path of the environment's agent socket (present while its agent runs). */
  agentSocket(id: string): string {
    return this.#paths(id).agentSocket;
  }

  /**
   * The host side of the environment's agent directory (AGENT_DIR inside), where
   * sockets the runner serves to the environment go (the LLM gateway's). Once the
   * agent has started it is the host root's, mode 0711: the environment can reach
   * what is there but not remove or replace it.
   */
  agentDir(id: string): string {
    return this.#paths(id).agent;
  }

  /**
   * Kills everything in the environment and unmounts its overlay; the upper dir stays.
   * What holds no process stays for the next start, which then costs no mount, mkfs or
   * ip: the disk image's mount (an idle file system) and the network namespace, veth
   * pair and rules (remove takes both).
   */
  async stop(id: string): Promise<void> {
    const cid = this.containerId(id);
    await this.backend.kill(cid);
    await this.backend.delete(cid);
    await unmountOverlay(this.#spawner, this.#paths(id).merged);
    rmSync(this.#paths(id).agentSocket, { force: true });
    await this.network?.release(id);
  }

  /** Stops the environment and frees its disk, its loop device and its network. */
  async remove(id: string): Promise<void> {
    await this.stop(id);
    const p = this.#paths(id);
    // The loop device goes with the mount: mount -o loop set it to autoclear.
    if (isMounted(this.#spawner, p.disk) && (await this.#spawner.run('umount', [p.disk])).code !== 0) await this.#spawner.check('umount', ['--lazy', p.disk]);
    // Its subvolume; blocks a snapshot or a fork still shares stay theirs.
    if (p.stored) await this.#store!.removeEnv(id);
    await this.network?.remove(id);
    this.#mirrorEnv.delete(id);
    this.#cacheEnv.delete(id);
    await rm(p.merged, { recursive: true, force: true });
    await rm(p.dir, { recursive: true, force: true });
    // Volumes of its own (not a project's) go with it.
    await rm(join(this.#volumes, id), { recursive: true, force: true });
    // The data dir's folder of mount points goes with its last environment.
    await rmdir(dirname(p.merged)).catch(() => {});
  }

  /** Whether this runner can pause environments, probed once (checkpoint.ts). */
  checkpointSupport(): Promise<CheckpointSupport> {
    this.#checkpoint ??= pauseSupport(this.backend.name);
    return this.#checkpoint;
  }
  #checkpoint: Promise<CheckpointSupport> | undefined;

  // No host Berth has run on can checkpoint yet, so both answer why (checkpoint.ts).
  async pause(_id: string): Promise<void> {
    const support = await this.checkpointSupport();
    throw pauseRefused(this.name, support.available ? 'not built' : support.reason);
  }

  async resume(id: string): Promise<void> {
    await this.pause(id);
  }

  status(id: string): Promise<ContainerStatus> {
    // Frozen by a runner killed mid-snapshot: its processes are fine, and go on.
    if (thawLeftover(id)) this.#log.warn({ environment: id }, 'the environment was left frozen (a runner stopped while it was paused for a snapshot or a copy); thawed');
    return this.backend.status(this.containerId(id));
  }

  exists(id: string): boolean {
    const p = this.#paths(id);
    return p.stored ? existsSync(p.marker) : p.image ? existsSync(p.image) : existsSync(p.upper);
  }

  /** Runs a command; its exit status says when the OOM killer ended it (oom.ts). */
  exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand {
    return watchOom(this.#exec(spec, opts), () => this.oomKills(spec.id), spec.limits.memoryBytes);
  }

  #exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand {
    const p = this.#paths(spec.id);
    const user = opts.user;
    let env = [...this.#baseEnv(spec.image), ...(this.network?.environment(spec.id) ?? []), ...this.#mirrorEnvOf(spec.id), ...cacheEnvFor(this.#cacheEnvOf(spec.id), user?.uid ?? 0)];
    if (user) {
      // The user's own home and name, not root's (the image's HOME is root's as a rule).
      env = env.filter((e) => !/^(HOME|USER|LOGNAME)=/.test(e));
      env.push(`HOME=${user.home}`, `USER=${user.name}`, `LOGNAME=${user.name}`);
    }
    if (opts.tty) env.push('TERM=xterm-256color');
    for (const [k, v] of Object.entries(opts.env ?? {})) env.push(`${k}=${v}`);
    const cwd = opts.cwd ?? spec.image.config.workingDir ?? WORKSPACE;
    // Environments whose PID 1 is the agent take commands on its socket. The others
    // (started without it, or before it existed) get them through the runtime's exec.
    const socketFd = this.#useAgent ? openAgentSocket(p.agentSocket) : undefined;
    if (socketFd !== undefined) {
      const start = { argv: opts.cmd, env, cwd, tty: opts.tty, user: user && { uid: user.uid, gid: user.gid, groups: user.groups } };
      return startAgentCommand({ socketFd, start, timeoutMs: opts.timeoutMs, stalled: () => this.#initStalled(spec.id) });
    }
    return startCommand({
      spawner: this.#spawner,
      backend: this.backend,
      containerId: this.containerId(spec.id),
      spec: {
        cmd: opts.cmd,
        cwd,
        env,
        tty: Boolean(opts.tty),
        pidFile: join(p.exec, `${randomBytes(8).toString('hex')}.pid`),
        user: user && { uid: user.uid, gid: user.gid, groups: user.groups },
      },
      tty: opts.tty,
      timeoutMs: opts.timeoutMs,
    });
  }

  /**
   * Why the environment's PID 1 cannot answer, if it is stopped or traced: nothing inside
   * can do that to it (agent.c, seccomp.ts), but the host can, or a kernel bug could.
   */
  async #initStalled(id: string): Promise<string | undefined> {
    const pid = await this.backend.pid(this.containerId(id));
    if (!pid) return undefined;
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      return undefined;
    }
    const state = /^State:\s+(\S)/m.exec(status)?.[1];
    const tracer = Number(/^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    if (state !== 'T' && state !== 't') return undefined;
    this.#log.warn({ environment: id, pid, tracer }, "the environment's init is stopped: its commands cannot run");
    return `the environment's init (PID 1) is not responding: it is ${tracer ? 'stopped by a tracer' : 'stopped'}. Restart the environment (berth env stop, then berth env start); its files are kept`;
  }

  cgroupUsage(id: string): CgroupUsage {
    return cgroupUsage(this.cgroupsPath(id));
  }

  async usage(id: string, running: boolean): Promise<EnvironmentUsage> {
    const cg = running ? { ...this.cgroupUsage(id), oomKills: this.oomKills(id) } : { memoryBytes: null, cpuSeconds: null, pids: null, oomKills: null };
    return { ...cg, diskBytes: await this.diskUsage(id) };
  }

  async build(req: BuildImageRequest): Promise<BuildResult> {
    if (!this.#builder) {
      req.context.destroy();
      throw invalid(`runner '${this.name}' does not build devcontainer images: name an image in devcontainer.json or the project settings`);
    }
    mkdirSync(this.#buildDir, { recursive: true, mode: 0o700 });
    const repoDir = await mkdtemp(join(this.#buildDir, 'checkout-'));
    try {
      await unpackCheckout(req.context, repoDir);
      req.signal?.throwIfAborted();
      const { context: _context, ...rest } = req;
      return await this.#builder.build({ ...rest, repoDir });
    } finally {
      await rm(repoDir, { recursive: true, force: true }).catch(() => {});
    }
  }

  /**
   * A unix socket in the environment's agent directory, mode 0666 so its processes, whatever
   * uid they map to, can connect: what is served must itself ask for a credential (the LLM
   * gateway's task token). The directory is the host root's: nothing inside can replace it.
   */
  async serveSocket(id: string, name: string, accept: (connection: Duplex) => void): Promise<() => Promise<void>> {
    if (!SOCKET_NAME_PATTERN.test(name)) throw new Error(`socket name '${name}' is not a plain file name`);
    const close = await serveUnixSocket(join(this.#paths(id).agent, name), accept);
    const stop = async () => {
      this.#served.delete(stop);
      await close();
    };
    this.#served.add(stop);
    return stop;
  }

  /** Processes the OOM killer has ended in the environment since it last started; null when not running or not counted. */
  oomKills(id: string): number | null {
    return oomKillCount(this.cgroupsPath(id));
  }

  /** Bytes the environment has written: the size of its upper directory. */
  async diskUsage(id: string): Promise<number | null> {
    const p = this.#paths(id);
    if (p.stored) return existsSync(p.marker) ? ((await this.#store!.usage(this.#store!.envDir(id)))?.referenced ?? null) : null;
    if (p.image) {
      if (!existsSync(p.image)) return null;
      // Mounted here (running or stopped): what its file system counts as used. Else (after
      // a reboot, or mounted by an earlier runner process): the image's allocated blocks
      // less those mkfs wrote.
      if (isMounted(this.#spawner, p.disk)) {
        const r = await this.#spawner.run('stat', ['-f', '-c', '%b %f %S', p.disk]);
        const [blocks, free, size] = r.stdout.trim().split(' ').map(Number);
        if (r.code === 0 && blocks !== undefined && free !== undefined && size !== undefined) return (blocks - free) * size;
      }
      const base = Number(readFileSync(`${p.image}.base`, 'utf8').trim()) || 0;
      return Math.max(0, statSync(p.image).blocks * 512 - base);
    }
    const upper = p.upper;
    if (!existsSync(upper)) return null;
    const r = await this.#spawner.run('du', ['-sxb', upper]);
    return r.code === 0 ? Number(r.stdout.split('\t')[0]) : (await stat(upper)).size;
  }

  /**
   * The environment's state (its upper dir) as a tar (state-tar.ts), read while its
   * processes are frozen through their cgroup and its file systems synced, or stopped.
   * Read in the spawner's mount namespace, where its disk image is mounted.
   */
  exportState(id: string): Readable {
    const out = new PassThrough();
    void (async () => {
      if (!this.exists(id)) throw notFound(`environment ${id} has no files on runner '${this.name}'`);
      const p = this.#paths(id);
      await this.#mountDisk(p);
      // In the store: paused only for a read-only snapshot (milliseconds), read from it while
      // the environment goes on. Elsewhere: paused, and synced, for the whole read.
      const frozen = p.stored ? `${EXPORT_SNAPSHOT_PREFIX}${randomBytes(6).toString('hex')}` : undefined;
      if (frozen) {
        const moment = await pauseEnvironment(id, { sync: false });
        try {
          await this.#store!.snapshotEnv(id, frozen);
        } finally {
          moment.resume();
        }
      }
      const paused = frozen ? { resume: () => void this.#store!.removeSnapshot(frozen).catch((err: unknown) => this.#log.warn({ err }, 'an export left its snapshot; the next runner start removes it')) } : await pauseEnvironment(id);
      try {
        const tar = this.#spawner.spawn('tar', ['--create', '--file=-', ...STATE_TAR_KEEP, '-C', frozen ? join(this.#store!.snapshotDir(frozen), 'upper') : p.upper, '.']);
        const stderr = collectCapped(tar.stderr);
        tar.stdout.pipe(out, { end: false });
        out.once('close', () => tar.kill('SIGKILL'));
        const [{ code }] = await Promise.all([tar.exited, finished(tar.stdout)]);
        if (code !== 0) throw new Error(`tar could not read environment ${id}'s files (exit ${code}): ${stderr.text().trim() || 'no message'}`);
        out.end();
      } finally {
        paused.resume();
      }
    })().catch((err: unknown) => out.destroy(err as Error));
    return out;
  }

  /**
   * Makes a new environment whose upper dir is `state` (a tar from exportState): kept in a
   * file, checked whole (state-tar.ts), then unpacked into the fresh environment, stopped.
   * Anything refused or failed leaves nothing behind.
   */
  async importState(spec: EnvironmentSpec, state: Readable): Promise<void> {
    if (this.exists(spec.id)) {
      state.destroy();
      throw conflict(`environment ${spec.id} already has files on runner '${this.name}'`);
    }
    const dir = join(dirname(this.#root), 'runtime', 'imports');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `${spec.id}.tar`);
    try {
      await pipeline(state, createWriteStream(file, { mode: 0o600 }));
      await checkStateFile(file, { maxEntries: DEFAULT_STATE_ENTRIES, owners: { base: ID_BASE, count: ID_COUNT } });
      // Started once and stopped: its disk made and mounted, its upper dir there, nothing running.
      await this.start(spec);
      await this.stop(spec.id);
      const p = this.#paths(spec.id);
      await this.#mountDisk(p);
      await this.#spawner.check('tar', ['--extract', `--file=${file}`, ...STATE_TAR_UNPACK, '-C', p.upper]);
    } catch (err) {
      await this.remove(spec.id).catch((e: unknown) => this.#log.warn({ err: e, environment: spec.id }, 'an import that failed left files behind'));
      throw err;
    } finally {
      await rm(file, { force: true });
    }
  }

  /** The environment's disk image (or the store) mounted in the spawner's namespace, if it has one (a stopped one's may not be, after a runner restart). */
  async #mountDisk(p: { stored: boolean; image: string | undefined; disk: string }): Promise<void> {
    if (p.stored) await this.#store!.ready();
    if (!p.image || isMounted(this.#spawner, p.disk)) return;
    mkdirSync(p.disk, { recursive: true, mode: 0o700 });
    await this.#spawner.check('mount', ['-o', 'loop,discard,nosuid,nodev', p.image, p.disk]);
  }

  // ---- snapshots (store.ts) ----

  async snapshotSupport(): Promise<StoreSupport> {
    return this.#storeSupport;
  }

  #requireStore(): StateStore {
    if (!this.#store) throw conflict(`runner '${this.name}' cannot keep snapshots: ${this.#storeSupport.available ? 'no state store' : this.#storeSupport.reason}`);
    return this.#store;
  }

  /**
   * Freezes the environment's files as snapshot `snapshotId`. A running one is paused (its
   * cgroup frozen) for the moment of the freeze, so the snapshot is one instant its processes
   * agree on. In the store nothing is copied; an environment kept elsewhere (an older one on
   * its own disk image) is copied into the store once.
   */
  async snapshot(id: string, snapshotId: string): Promise<SnapshotMade> {
    const store = this.#requireStore();
    if (!this.exists(id)) throw notFound(`environment ${id} has no files on runner '${this.name}'`);
    const p = this.#paths(id);
    await this.#mountDisk(p);
    const begun = performance.now();
    // In the store the snapshot ioctl itself flushes what the subvolume has not written yet: no sync.
    const paused = await pauseEnvironment(id, { sync: !p.stored });
    try {
      if (p.stored) await store.snapshotEnv(id, snapshotId);
      else await store.snapshotCopy(p.upper, snapshotId);
    } finally {
      paused.resume();
    }
    const pausedMs = paused.running ? performance.now() - begun : 0;
    const bytes = await store.snapshotBytes(snapshotId);
    return { bytes, copied: !p.stored, pausedMs: Math.round(pausedMs * 10) / 10 };
  }

  /** Makes environment `spec.id`'s files from snapshot `snapshotId` (copy-on-write); it is then started as any other. */
  async createFromSnapshot(spec: EnvironmentSpec, snapshotId: string): Promise<void> {
    const store = this.#requireStore();
    if (this.exists(spec.id)) throw conflict(`environment ${spec.id} already has files on runner '${this.name}'`);
    // Its disk limit counts the files it starts with: one below them could write nothing.
    const held = this.#diskQuota ? ((await store.snapshotBytes(snapshotId)) ?? undefined) : undefined;
    if (held !== undefined && held >= spec.limits.diskBytes) {
      throw invalid(`the snapshot holds ${formatSize(held)}, as much as the new environment's disk limit (${formatSize(spec.limits.diskBytes)}): give it more (--disk)`);
    }
    const p = this.#paths(spec.id);
    await store.createEnvFrom(spec.id, snapshotId, this.#diskQuota ? spec.limits.diskBytes : undefined);
    mkdirSync(p.dir, { recursive: true, mode: 0o700 });
    writeFileSync(p.marker, '', { mode: 0o600 });
  }

  async removeSnapshot(snapshotId: string): Promise<void> {
    await this.#requireStore().removeSnapshot(snapshotId);
  }

  /** Whether snapshot `snapshotId` is here, whole (a kill -9 mid-snapshot leaves it absent, never half). */
  async hasSnapshot(snapshotId: string): Promise<boolean> {
    return this.#store ? this.#store.hasSnapshot(snapshotId) : false;
  }

  /** Stops the helper process; environments keep running. */
  close(): void {
    this.#closing.abort();
    for (const stop of this.#served) void stop();
    this.#disks?.close();
    void this.network?.close();
    this.#spawner.close();
  }

  #catatonit(): string {
    this.#initBinary ??= findInit();
    return this.#initBinary;
  }

  #baseEnv(image: ImageRecord): string[] {
    const env = [...image.config.env];
    const has = (k: string) => env.some((e) => e.startsWith(`${k}=`));
    if (!has('PATH')) env.push(`PATH=${DEFAULT_PATH}`);
    if (!has('HOME')) env.push('HOME=/root');
    if (!has('LANG')) env.push('LANG=C.UTF-8');
    return env;
  }
}

/** What the last start wrote for the environment's mirrors: their variables, and a key of their files. */
function savedMirrors(path: string): { key: string; env: string[] } | undefined {
  try {
    const saved = JSON.parse(readFileSync(path, 'utf8')) as { key?: unknown; env?: unknown };
    return typeof saved.key === 'string' && Array.isArray(saved.env) ? { key: saved.key, env: saved.env.map(String) } : undefined;
  } catch {
    return undefined;
  }
}

/** The image's os-release (an image's file: a symlink is not followed out of it). */
function readOsRelease(rootfs: string): string {
  for (const rel of ['etc/os-release', 'usr/lib/os-release']) {
    const path = join(rootfs, rel);
    try {
      if (lstatSync(path).isFile()) return readFileSync(path, 'utf8').slice(0, 16_384);
    } catch {
      // Not there: the next place.
    }
  }
  return '';
}

function onPath(binary: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function findRuntime(wanted: RuntimeName | undefined): RuntimeName {
  if (wanted) {
    if (!onPath(wanted)) throw unavailable(`BERTH_RUNTIME=${wanted} but ${wanted} is not installed`);
    return wanted;
  }
  for (const name of ['crun', 'runc'] as const) if (onPath(name)) return name;
  throw unavailable('no OCI runtime found: install crun (apt-get install crun) or runc');
}

function findInit(): string {
  const candidates = ['/usr/bin/catatonit', '/usr/libexec/catatonit/catatonit'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw unavailable('no container init found: install catatonit (apt-get install catatonit)');
}
