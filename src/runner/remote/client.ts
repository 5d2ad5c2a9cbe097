// The control plane's side of a runner that joined over the network: the Runner port, with
// every call sent over the runner's connection and every answer checked, since a runner
// host may be compromised and must not be able to lie its way into the control plane.
import { Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { BerthError, unavailable } from '../../shared/errors.ts';
import type { ExitStatus, RunningCommand } from '../exec.ts';
import type { BuildResult } from '../images/build.ts';
import type { ImageRecord } from '../images/types.ts';
import type { ResolveOptions } from '../images/store.ts';
import { isRegistryReference } from '../images/names.ts';
import type { PolicySource } from '../network/types.ts';
import type { ResolvedUser } from '../users.ts';
import type { BuildImageRequest, CommandOptions, ContainerStatus, EnvironmentSpec, EnvironmentUsage, Runner, RunnerImages, SnapshotMade, SnapshotSupport } from '../port.ts';
import type { Peer } from './peer.ts';
import { CACHE_KINDS, type CacheKind } from '../../shared/caches.ts';
import { ExitWire, RUNNER_CHANNELS, STREAM } from './protocol.ts';

const str = (max: number) => z.string().max(max);
const ImageRecordWire = z.object({
  name: str(1024),
  org: str(64).optional(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  rootfs: str(4096),
  sizeBytes: z.number().min(0),
  createdAt: str(64),
  source: z.enum(['debian', 'oci-layout', 'docker-archive', 'registry']),
  config: z.object({
    env: z.array(str(32_768)).max(4096),
    workingDir: str(4096).optional(),
    user: str(256).optional(),
    entrypoint: z.array(str(4096)).max(256).optional(),
    cmd: z.array(str(4096)).max(256).optional(),
  }),
});
const BuildWire = z.object({ image: ImageRecordWire, reused: z.boolean() });
const Status = z.enum(['running', 'stopped', 'absent']);
const SnapshotSupportReply = z.union([z.object({ available: z.literal(true) }), z.object({ available: z.literal(false), reason: z.string().max(2048) })]);
const SnapshotMadeReply = z.object({ bytes: z.number().nonnegative().nullable(), copied: z.boolean(), pausedMs: z.number().nonnegative() });
const count = z.number().min(0).nullable();
const Usage = z.object({ memoryBytes: count, cpuSeconds: count, pids: count, oomKills: count, diskBytes: count });
const User = z.object({
  name: str(256),
  home: str(4096),
  uid: z.number().int().min(0).max(65_535),
  gid: z.number().int().min(0).max(65_535),
  groups: z.array(z.number().int().min(0).max(65_535)).max(64),
});
/** How long an image found on the runner is taken as still there. */
const IMAGE_CACHE_MS = 5_000;
const Listener = z.object({ listener: z.number().int().positive() });

/** What a runner's answer must look like; anything else is its fault, reported as such. */
function checked<T>(schema: z.ZodType<T>, what: string, runner: string) {
  return (value: unknown): T => {
    const r = schema.safeParse(value);
    if (!r.success) throw unavailable(`runner '${runner}' sent a malformed answer to ${what}: ${r.error.issues[0]?.message ?? 'invalid'}`);
    return r.data;
  };
}

export interface RemoteRunnerOptions {
  id: string;
  name: string;
  peer: Peer;
  /** Each environment's egress policy and mirrors, sent with its start so its proxy has them before the first request. */
  policies: PolicySource;
}

/**
 * A runner on another host, reached through the connection it opened. Lives as long as
 * that connection: when it drops the pool forgets it, and what was under way fails with
 * "the runner connection closed".
 */
export class RemoteRunner implements Runner {
  readonly id: string;
  readonly name: string;
  readonly images: RunnerImages;
  readonly #peer: Peer;
  readonly #policies: PolicySource;
  #nextChannel = 1;
  readonly #commands = new Map<number, { exit: (s: ExitStatus) => void }>();
  readonly #listeners = new Map<number, (connection: Duplex) => void>();
  readonly #progress = new Map<number, NonNullable<ResolveOptions['onProgress']>>();
  readonly #images = new Map<string, { at: number; record: ImageRecord }>();

  constructor(o: RemoteRunnerOptions) {
    this.id = o.id;
    this.name = o.name;
    this.#peer = o.peer;
    this.#policies = o.policies;
    this.images = {
      resolve: (ref, opts = {}) => this.#resolve(ref, opts),
      get: async (name, scope) => {
        // Every command looks its environment's image up: a round trip saved on each (a
        // re-pulled tag shows within seconds; the caller checks the digest it expects anyway).
        const key = `${scope?.org ?? ''}\0${name}`;
        const hit = this.#images.get(key);
        if (hit && performance.now() - hit.at < IMAGE_CACHE_MS) return hit.record;
        const r = await this.#call('images.get', { name, org: scope?.org });
        if (r === null) return undefined;
        const record = checked(ImageRecordWire, 'images.get', this.name)(r) as ImageRecord;
        this.#images.set(key, { at: performance.now(), record });
        return record;
      },
    };
  }

  async #resolve(ref: string, opts: ResolveOptions): Promise<ImageRecord> {
    // The login goes with the call only for a reference that may be pulled, and only the
    // one for its own registry (the callback cannot cross the wire).
    const stored = await this.images.get(ref, { org: opts.org });
    if (stored) return stored;
    const credential = isRegistryReference(ref) && opts.login ? await opts.login(ref.split('/')[0]!.toLowerCase()) : undefined;
    const { id, result } = this.#peer.call('images.resolve', { ref, org: opts.org, hostPaths: opts.hostPaths === true, credential });
    if (opts.onProgress) this.#progress.set(id, opts.onProgress);
    try {
      return checked(ImageRecordWire, 'images.resolve', this.name)(await result) as ImageRecord;
    } finally {
      this.#progress.delete(id);
    }
  }

  /**
   * Builds on the runner: the checkout goes as a tar on a channel (with credit, like exec's
   * stdin), the build log comes back as progress, and a cancel stops the build there.
   */
  async build(req: BuildImageRequest): Promise<BuildResult> {
    req.signal?.throwIfAborted();
    const channel = this.#channel();
    const upload = this.#peer.writable(channel, STREAM.stdin);
    const { context, onLog, signal, ...args } = req;
    const { id, result } = this.#peer.call('build', { ...args, channel });
    if (onLog) this.#progress.set(id, (e) => onLog(e.message));
    const cancel = () => void this.#call('build.cancel', { call: id }).catch(() => {});
    signal?.addEventListener('abort', cancel, { once: true });
    // A runner that fails early stops reading: the upload's error is the call's to report.
    pipeline(context, upload).catch(() => context.destroy());
    try {
      const r = checked(BuildWire, 'build', this.name)(await result);
      return { image: r.image as ImageRecord, reused: r.reused };
    } finally {
      signal?.removeEventListener('abort', cancel);
      this.#progress.delete(id);
      this.#peer.resetChannel(channel);
    }
  }

  #channel(): number {
    const channel = this.#nextChannel++;
    if (channel >= RUNNER_CHANNELS - 1) this.#nextChannel = 1;
    return channel;
  }

  #call(method: string, args: unknown): Promise<unknown> {
    return this.#peer.call(method, args).result;
  }

  async start(spec: EnvironmentSpec): Promise<void> {
    const policy = { policy: this.#policies.policyFor(spec.id), mirrors: this.#policies.mirrorsFor?.(spec.id) ?? [] };
    await this.#call('start', { spec, policy });
  }

  async stop(id: string): Promise<void> {
    await this.#call('stop', { id });
  }

  async remove(id: string): Promise<void> {
    await this.#call('remove', { id });
  }

  async pause(id: string): Promise<void> {
    await this.#call('pause', { id });
  }

  async resume(id: string): Promise<void> {
    await this.#call('resume', { id });
  }

  async status(id: string): Promise<ContainerStatus> {
    return checked(Status, 'status', this.name)(await this.#call('status', { id }));
  }

  async usage(id: string, running: boolean): Promise<EnvironmentUsage> {
    return checked(Usage, 'usage', this.name)(await this.#call('usage', { id, running }));
  }

  async cacheUsage(owner: string): Promise<Partial<Record<CacheKind, number>>> {
    return checked(z.partialRecord(z.enum(CACHE_KINDS), z.number().nonnegative()), 'cacheUsage', this.name)(await this.#call('cacheUsage', { owner }));
  }

  async removeVolumes(owner: string): Promise<void> {
    await this.#call('removeVolumes', { owner });
  }

  async snapshotSupport(): Promise<SnapshotSupport> {
    return checked(SnapshotSupportReply, 'snapshotSupport', this.name)(await this.#call('snapshotSupport', {}));
  }

  async snapshot(id: string, snapshotId: string): Promise<SnapshotMade> {
    return checked(SnapshotMadeReply, 'snapshot', this.name)(await this.#call('snapshot', { id, snapshotId }));
  }

  async createFromSnapshot(spec: EnvironmentSpec, snapshotId: string): Promise<void> {
    await this.#call('createFromSnapshot', { spec, snapshotId });
  }

  async removeSnapshot(snapshotId: string): Promise<void> {
    await this.#call('removeSnapshot', { snapshotId });
  }

  async hasSnapshot(snapshotId: string): Promise<boolean> {
    return checked(z.boolean(), 'hasSnapshot', this.name)(await this.#call('hasSnapshot', { snapshotId }));
  }

  async resolveUser(spec: EnvironmentSpec, user: string): Promise<ResolvedUser> {
    return checked(User, 'resolveUser', this.name)(await this.#call('resolveUser', { spec, user }));
  }

  exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand {
    const channel = this.#channel();
    const stdin = this.#peer.writable(channel, STREAM.stdin);
    const stdout = this.#peer.readable(channel, STREAM.stdout);
    const stderr = this.#peer.readable(channel, STREAM.stderr);
    const exited = new Promise<ExitStatus>((resolve, reject) => {
      this.#commands.set(channel, { exit: resolve });
      // The streams end with the connection's error when it drops; so does the command.
      stdout.once('error', reject);
      this.#call('exec', { channel, spec, opts }).catch((err: Error) => {
        this.#peer.resetChannel(channel, err);
        reject(err);
      });
    }).finally(() => this.#commands.delete(channel));
    exited.catch(() => {});
    return {
      stdin,
      stdout,
      stderr,
      exited,
      // With the connection gone the command is gone too: nothing is left to resize or signal,
      // and callers fire these and forget them (a kill on hang-up).
      resize: async (cols, rows) => void (await this.#call('resize', { channel, cols, rows }).catch(ifConnected)),
      signal: async (signal) => void (await this.#call('signal', { channel, signal }).catch(ifConnected)),
    };
  }

  /** The state comes on a channel of the call; the call's failure ends it with that error. */
  exportState(id: string): Readable {
    const channel = this.#channel();
    const state = this.#peer.readable(channel, STREAM.stdout);
    this.#call('exportState', { id, channel }).catch((err: Error) => this.#peer.resetChannel(channel, err));
    return state;
  }

  /** The state goes as a tar on a channel, with credit, like a build's checkout. */
  async importState(spec: EnvironmentSpec, state: Readable): Promise<void> {
    const channel = this.#channel();
    const upload = this.#peer.writable(channel, STREAM.stdin);
    const policy = { policy: this.#policies.policyFor(spec.id), mirrors: this.#policies.mirrorsFor?.(spec.id) ?? [] };
    const { result } = this.#peer.call('importState', { spec, policy, channel });
    // A runner that refuses early stops reading: the call's error is the one to report.
    pipeline(state, upload).catch(() => state.destroy());
    try {
      await result;
    } finally {
      this.#peer.resetChannel(channel);
    }
  }

  async serveSocket(environmentId: string, name: string, accept: (connection: Duplex) => void): Promise<() => Promise<void>> {
    const { listener } = checked(Listener, 'serveSocket', this.name)(await this.#call('serveSocket', { environmentId, name }));
    this.#listeners.set(listener, accept);
    return async () => {
      this.#listeners.delete(listener);
      await this.#call('unserveSocket', { listener }).catch(() => {});
    };
  }

  /** A command's end, as the runner reports it once its output is sent. */
  exit(channel: number, status: ExitStatus): void {
    const command = this.#commands.get(channel);
    if (!command) return;
    command.exit(checked(ExitWire, 'exec', this.name)(status) as ExitStatus);
    // Its output has ended before this (frames arrive in order); stdin, if still open, has nowhere to go.
    this.#peer.resetChannel(channel);
  }

  /** A connection to a socket this control plane asked the runner to serve. */
  open(channel: number, listener: number): void {
    const accept = this.#listeners.get(listener);
    if (!accept) {
      this.#peer.send({ t: 'reset', channel, message: 'not listening' });
      return;
    }
    const readable = this.#peer.readable(channel, STREAM.fromSocket);
    const writable = this.#peer.writable(channel, STREAM.toSocket);
    const connection = Duplex.from({ readable, writable });
    connection.once('close', () => this.#peer.resetChannel(channel));
    accept(connection);
  }

  progress(call: number, event: { phase: string; message: string; fraction?: number | undefined }): void {
    try {
      this.#progress.get(call)?.({ phase: event.phase as never, message: event.message, ...(event.fraction !== undefined && { fraction: event.fraction }) });
    } catch {
      // Progress must not throw (types.ts).
    }
  }
}

/** Rethrows what the runner answered; a connection that closed ends quietly. */
function ifConnected(err: unknown): void {
  if (err instanceof BerthError && err.kind === 'unavailable') return;
  throw err;
}
