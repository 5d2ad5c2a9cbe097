import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { EnvironmentLimits } from '../shared/environment.ts';
import { unavailable } from '../shared/errors.ts';
import type { ContainerStatus, IsolationBackend } from './backends/backend.ts';
import { OciRuntime, type RuntimeName } from './backends/oci-runtime.ts';
import { ociConfig, WORKSPACE } from './bundle.ts';
import { cgroupLayout, cgroupUsage, HYBRID_UNIFIED_MOUNT, type CgroupUsage } from './cgroups.ts';
import { startCommand, type RunningCommand } from './exec.ts';
import { ID_BASE } from './idmap.ts';
import type { ImageRecord, ImageStore } from './images/index.ts';
import { mountOverlay, unmountOverlay } from './overlay.ts';
import { Spawner } from './spawner/index.ts';

/** What the runner needs to know to run one environment. */
export interface EnvironmentSpec {
  id: string;
  hostname: string;
  image: ImageRecord;
  limits: EnvironmentLimits;
}

export interface CommandOptions {
  cmd: string[];
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  tty?: { cols: number; rows: number } | undefined;
  timeoutMs?: number | undefined;
}

export interface RunnerOptions {
  dataDir: string;
  images: ImageStore;
  logger: Logger;
  runtime?: RuntimeName | undefined;
  /** A static init binary (catatonit) bind-mounted into every environment as PID 1. */
  initBinary?: string | undefined;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs environments on this host: each one an OCI bundle whose root file system is an
 * overlay of a shared, read-only image and the environment's own upper directory.
 * The upper directory is the environment's state; everything else can be rebuilt.
 */
export class LocalRunner {
  readonly backend: IsolationBackend;
  readonly images: ImageStore;
  readonly #root: string;
  readonly #mounts: string;
  readonly #initBinary: string;
  readonly #log: Logger;
  readonly #spawner: Spawner;

  constructor(opts: RunnerOptions) {
    this.images = opts.images;
    this.#log = opts.logger;
    this.#root = join(opts.dataDir, 'environments');
    // Root file systems are mounted under /run, not the data dir: crun reaches the mount
    // point as the environment's unprivileged root, which cannot pass through a private
    // data dir such as /root/.berth. /run is also cleared by a reboot, like the mounts.
    this.#mounts = join('/run/berth', createHash('sha256').update(resolve(opts.dataDir)).digest('hex').slice(0, 16));
    this.#initBinary = opts.initBinary ?? findInit();
    this.#spawner = new Spawner(cgroupLayout() === 'hybrid' ? { privateMounts: { unmount: [HYBRID_UNIFIED_MOUNT] } } : {});
    this.backend = new OciRuntime({ name: opts.runtime ?? findRuntime(), stateDir: join(opts.dataDir, 'runtime', 'state'), spawner: this.#spawner });
  }

  #paths(id: string) {
    const dir = join(this.#root, id);
    return {
      dir,
      upper: join(dir, 'upper'),
      work: join(dir, 'work'),
      merged: join(this.#mounts, id),
      bundle: join(dir, 'bundle'),
      exec: join(dir, 'exec'),
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
    const fresh = !existsSync(p.upper);
    if (!fresh) {
      if ((await this.backend.status(cid)) === 'running') return;
      // A container left from a crash (dead init) would block the new one.
      await this.backend.delete(cid);
    }

    await Promise.all([p.upper, p.work, p.bundle, p.exec].map((d) => mkdir(d, { recursive: true, mode: 0o700 })));
    await mkdir(p.merged, { recursive: true, mode: 0o711 });
    if (fresh) {
      // The upper dir's root is the environment's "/": owned by root inside.
      await chown(p.upper, ID_BASE, ID_BASE);
      await chmod(p.upper, 0o755);
    }
    await mountOverlay(this.#spawner, { lower: spec.image.rootfs, upper: p.upper, work: p.work, merged: p.merged });

    const config = ociConfig({
      hostname: spec.hostname,
      rootfs: p.merged,
      initBinary: this.#initBinary,
      env: this.#baseEnv(spec.image),
      limits: spec.limits,
      cgroupsPath: this.cgroupsPath(spec.id),
    });
    await writeFile(join(p.bundle, 'config.json'), JSON.stringify(config));
    await this.backend.run(cid, p.bundle);
  }

  /** Kills everything in the environment and unmounts its overlay; the upper dir stays. */
  async stop(id: string): Promise<void> {
    const cid = this.containerId(id);
    await this.backend.kill(cid);
    await this.backend.delete(cid);
    await unmountOverlay(this.#spawner, this.#paths(id).merged);
  }

  /** Stops the environment and frees its disk. */
  async remove(id: string): Promise<void> {
    await this.stop(id);
    const p = this.#paths(id);
    await rm(p.merged, { recursive: true, force: true });
    await rm(p.dir, { recursive: true, force: true });
  }

  status(id: string): Promise<ContainerStatus> {
    return this.backend.status(this.containerId(id));
  }

  exists(id: string): boolean {
    return existsSync(this.#paths(id).upper);
  }

  exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand {
    const p = this.#paths(spec.id);
    const env = this.#baseEnv(spec.image);
    if (opts.tty) env.push('TERM=xterm-256color');
    for (const [k, v] of Object.entries(opts.env ?? {})) env.push(`${k}=${v}`);
    return startCommand({
      spawner: this.#spawner,
      backend: this.backend,
      containerId: this.containerId(spec.id),
      spec: {
        cmd: opts.cmd,
        cwd: opts.cwd ?? spec.image.config.workingDir ?? WORKSPACE,
        env,
        tty: Boolean(opts.tty),
        pidFile: join(p.exec, `${randomBytes(8).toString('hex')}.pid`),
      },
      tty: opts.tty,
      timeoutMs: opts.timeoutMs,
    });
  }

  usage(id: string): CgroupUsage {
    return cgroupUsage(this.cgroupsPath(id));
  }

  /** Bytes the environment has written: the size of its upper directory. */
  async diskUsage(id: string): Promise<number | null> {
    const upper = this.#paths(id).upper;
    if (!existsSync(upper)) return null;
    const r = await this.#spawner.run('du', ['-sxb', upper]);
    return r.code === 0 ? Number(r.stdout.split('\t')[0]) : (await stat(upper)).size;
  }

  /** Stops the helper process; environments keep running. */
  close(): void {
    this.#spawner.close();
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

function onPath(binary: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function findRuntime(): RuntimeName {
  const wanted = process.env.BERTH_RUNTIME as RuntimeName | undefined;
  if (wanted) {
    if (!onPath(wanted)) throw unavailable(`BERTH_RUNTIME=${wanted} but ${wanted} is not installed`);
    return wanted;
  }
  for (const name of ['crun', 'runc'] as const) if (onPath(name)) return name;
  throw unavailable('no OCI runtime found: install crun (apt-get install crun) or runc');
}

function findInit(): string {
  const candidates = [process.env.BERTH_INIT, '/usr/bin/catatonit', '/usr/libexec/catatonit/catatonit'];
  for (const c of candidates) if (c && existsSync(c)) return c;
  throw unavailable('no container init found: install catatonit (apt-get install catatonit)');
}
