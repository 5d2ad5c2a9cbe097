// The runner port: everything the control plane asks of a runner, whether the runner is
// an object in its own process (LocalRunner, `berth up`), a host that joined over the
// network (the remote runner client), or a fake in tests. The control plane holds only
// this interface; nothing in src/server reaches past it into a runner's host.
import type { Duplex, Readable } from 'node:stream';
import type { ContainerStatus } from './backends/backend.ts';
import type { RunningCommand } from './exec.ts';
import type { ImageRecord } from './images/types.ts';
import type { ResolveOptions } from './images/store.ts';
import type { BuildResult, BuildSpec } from './images/build.ts';
import type { EgressPolicy } from './network/types.ts';
import type { ResolvedUser } from './users.ts';
import type { EnvironmentLimits } from '../shared/environment.ts';
import type { VolumeMount } from '../shared/env-spec.ts';
import type { CacheKind } from '../shared/caches.ts';

export type { ContainerStatus };

/** What the runner needs to know to run one environment. */
export interface EnvironmentSpec {
  id: string;
  hostname: string;
  image: ImageRecord;
  limits: EnvironmentLimits;
  /**
   * Named volumes, kept under the runner's data dir per `volumeOwner` (a project's id, so its
   * environments share them; else the environment's own id) and bind-mounted at each target.
   */
  volumes?: VolumeMount[] | undefined;
  volumeOwner?: string | undefined;
  /** Package caches of the project (`volumeOwner`), mounted at their tools' places (caches.ts). */
  caches?: CacheKind[] | undefined;
}

export interface CommandOptions {
  cmd: string[];
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  tty?: { cols: number; rows: number } | undefined;
  timeoutMs?: number | undefined;
  /** Who the command runs as (resolveUser); the environment's root when absent. */
  user?: ResolvedUser | undefined;
}

/** An environment's resources now; null where the host does not count it or it is not running. */
export interface EnvironmentUsage {
  memoryBytes: number | null;
  cpuSeconds: number | null;
  pids: number | null;
  /** Processes the OOM killer ended since it last started. */
  oomKills: number | null;
  /** Bytes the environment has written (its own layer). */
  diskBytes: number | null;
}

/** The images a runner can start environments from. */
export interface RunnerImages {
  /** A name, a registry reference (pulled) or, for instance administrators, a host path (imported). */
  resolve(ref: string, opts?: ResolveOptions): Promise<ImageRecord>;
  get(name: string, scope?: { org?: string | undefined }): Promise<ImageRecord | undefined>;
}

/** A devcontainer image to build on the runner, into its own store (images/build.ts). */
export interface BuildImageRequest {
  org: string;
  project: string;
  spec: BuildSpec;
  /** Where RUN steps may connect. */
  policy: EgressPolicy;
  /** The checkout (hostile), as a tar stream (images/checkout-tar.ts packCheckout). */
  context: Readable;
  onLog?: ((line: string) => void) | undefined;
  signal?: AbortSignal | undefined;
}

/** What a runner offers, as it registers: placement reads it. */
export interface RunnerCapacity {
  cores: number;
  memoryBytes: number;
  /** Free bytes on the disk of its data dir. */
  diskFreeBytes: number;
  /** The isolation tiers it can run: `crun`, `runsc` … */
  isolation: string[];
  labels: Record<string, string>;
}

/** What a snapshot took (Runner.snapshot). */
export interface SnapshotMade {
  /** Bytes it references (shared with its environment, so not what it adds to the disk); null where not counted. */
  bytes: number | null;
  /** Whether its files were copied (an environment kept outside the state store) rather than frozen in place. */
  copied: boolean;
  /** How long a running environment was paused for it; 0 when it was not running. */
  pausedMs: number;
}

/** Whether a runner keeps snapshots, and if not why. */
export type SnapshotSupport = { available: true } | { available: false; reason: string };

export interface Runner {
  /** As in the runners table: `local:DATA_DIR` for berth up's own, the registered id for one that joined. */
  readonly id: string;
  readonly name: string;
  readonly images: RunnerImages;

  /** Builds a devcontainer image on this runner: environments it runs start from it. */
  build(req: BuildImageRequest): Promise<BuildResult>;
  /** Makes (first time) or starts the environment; idempotent for one already running. */
  start(spec: EnvironmentSpec): Promise<void>;
  /** Kills its processes; its files stay. */
  stop(id: string): Promise<void>;
  /** Stops it and frees its files, disk and network. */
  remove(id: string): Promise<void>;
  /**
   * Checkpoints the environment's processes and memory (CRIU) and stops it; `resume` brings
   * them back. Refused (conflict) where the host cannot, saying why (checkpoint.ts).
   */
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  status(id: string): Promise<ContainerStatus>;
  /** Starts a command; its streams are live until `exited` settles. */
  exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand;
  /** Who `user` (a name or uid) is inside the running environment. */
  resolveUser(spec: EnvironmentSpec, user: string): Promise<ResolvedUser>;
  usage(id: string, running: boolean): Promise<EnvironmentUsage>;
  /** Deletes the named volumes kept for `owner` (a removed project's id). */
  removeVolumes(owner: string): Promise<void>;
  /** Bytes on disk of each package cache kept for `owner` (a project's id), of those that exist. */
  cacheUsage(owner: string): Promise<Partial<Record<CacheKind, number>>>;
  /**
   * The environment's state (its own layer) as a tar stream, consistent: read while it is
   * frozen, or stopped (state-tar.ts says what it holds).
   */
  exportState(id: string): Readable;
  /**
   * Makes environment `spec.id` (which must not exist here) with `state` (a tar from
   * exportState, hostile: checked entry by entry before any of it is written) as its
   * layer, and leaves it stopped. A refusal or a failure leaves nothing behind.
   */
  importState(spec: EnvironmentSpec, state: Readable): Promise<void>;
  /** Whether this runner keeps snapshots (its btrfs state store), and if not why. */
  snapshotSupport(): Promise<SnapshotSupport>;
  /**
   * Freezes the environment's files (running or stopped; a running one is paused for the
   * moment) as snapshot `snapshotId`, whole or not at all. Refused (conflict) without a store.
   */
  snapshot(id: string, snapshotId: string): Promise<SnapshotMade>;
  /** Makes environment `spec.id` (which must not exist here) with the files of snapshot `snapshotId`, stopped; start it as any other. */
  createFromSnapshot(spec: EnvironmentSpec, snapshotId: string): Promise<void>;
  /** Deletes the snapshot here (nothing when absent); environments made from it keep their files. */
  removeSnapshot(snapshotId: string): Promise<void>;
  /** Whether the snapshot is here, whole. */
  hasSnapshot(snapshotId: string): Promise<boolean>;
  /**
   * Serves a unix socket inside the environment's agent directory (`name` there) and hands
   * each connection to `accept`: how the LLM gateway reaches a sandbox that has no network.
   * Returns a function that stops listening and cuts the connections.
   */
  serveSocket(environmentId: string, name: string, accept: (connection: Duplex) => void): Promise<() => Promise<void>>;
}
