// The runner's side of the protocol's calls, over any Runner: `berth runner join` serves its
// LocalRunner with it, and a control-plane replica serves a runner it holds to another
// replica (server/runners/relay.ts). Everything the caller sends is checked here.
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { VERSION } from '../../shared/client-config.ts';
import { invalid } from '../../shared/errors.ts';
import type { RunningCommand } from '../exec.ts';
import type { BuildResult, BuildSpec } from '../images/build.ts';
import type { ImageRecord } from '../images/types.ts';
import type { EgressPolicy } from '../network/types.ts';
import type { CommandOptions, EnvironmentSpec, Runner } from '../port.ts';
import type { Peer } from './peer.ts';
import { RUNNER_CHANNELS, STREAM } from './protocol.ts';
import { CACHE_KINDS } from '../../shared/caches.ts';

export const EnvId = z.string().regex(/^env_[0-9a-z]{12}$/);
const SnapshotId = z.string().regex(/^snap_[0-9a-z]{12}$/);
const SpecWire = z.object({
  id: EnvId,
  hostname: z.string().max(253),
  image: z.object({ name: z.string(), org: z.string().optional(), digest: z.string() }).loose(),
  limits: z.object({ cpus: z.number(), memoryBytes: z.number(), diskBytes: z.number(), pidsLimit: z.number(), idleTimeoutMs: z.number().nullable(), maxLifetimeMs: z.number().nullable() }),
  volumes: z.array(z.object({ name: z.string(), target: z.string() })).optional(),
  volumeOwner: z.string().optional(),
  caches: z.array(z.enum(CACHE_KINDS)).max(CACHE_KINDS.length).optional(),
});
const BuildArgs = z.object({
  org: z.string().max(64),
  project: z.string().max(100),
  spec: z.object({ configDir: z.string().max(4096) }).loose(),
  policy: z.object({ allowDomains: z.array(z.string()), presets: z.array(z.string()) }).loose(),
});
const Channel = z.number().int().min(1).max(RUNNER_CHANNELS - 1);

export interface ServeHooks {
  /** Before an environment starts, with the call's `policy` (a joined runner keeps what the control plane pushed). */
  beforeStart?: (spec: EnvironmentSpec, args: Record<string, unknown>) => void;
  /** After an environment was removed. */
  afterRemove?: (id: string) => void;
}

export interface RunnerService {
  /** Answers one call of the peer on the other side. */
  call(peer: Peer, method: string, args: unknown, call: number): Promise<unknown>;
  /** Ends what is under way (the connection dropped: nobody is left to read it). */
  end(): void;
}

/** Serves `runner`'s calls for one connection at a time (its commands and listeners are this service's). */
export function serveRunner(runner: Runner, hooks: ServeHooks = {}): RunnerService {
  const commands = new Map<number, RunningCommand>();
  const listeners = new Map<number, () => Promise<void>>();
  let nextListener = 1;
  let nextChannel = RUNNER_CHANNELS;
  /** Builds under way, by the call that started them: a `build.cancel` aborts one. */
  const builds = new Map<number, AbortController>();

  // Every image an environment runs from is the runner's own, found by name and digest: a
  // spec names it, it does not hand the runner a path. Kept as last found (a digest's files
  // do not change), off each command's path.
  const found = new Map<string, { at: number; image: ImageRecord }>();
  const specOf = async (raw: unknown): Promise<EnvironmentSpec> => {
    const s = SpecWire.parse(raw);
    const key = `${s.image.org ?? ''}\0${s.image.name}\0${s.image.digest}`;
    const hit = found.get(key);
    if (hit && performance.now() - hit.at < 5_000) return { ...s, image: hit.image };
    const image = await runner.images.get(s.image.name, { org: s.image.org });
    if (!image || image.digest !== s.image.digest) throw invalid(`image '${s.image.name}' (${s.image.digest}) is not on runner '${runner.name}'`);
    if (found.size > 1000) found.clear();
    found.set(key, { at: performance.now(), image });
    return { ...s, image };
  };

  // Synchronous until the first await: its stdin stream exists before the frames that follow the call arrive.
  const exec = async (peer: Peer, a: Record<string, unknown>): Promise<null> => {
    const channel = Channel.parse(a.channel);
    const stdin = peer.readable(channel, STREAM.stdin);
    try {
      const spec = await specOf(a.spec);
      const cmd = runner.exec(spec, a.opts as CommandOptions);
      commands.set(channel, cmd);
      cmd.stdin.on('error', () => {});
      stdin.on('error', () => cmd.stdin.destroy());
      stdin.pipe(cmd.stdin);
      const outputs = Promise.all([
        pipeline(cmd.stdout, peer.writable(channel, STREAM.stdout)),
        pipeline(cmd.stderr, peer.writable(channel, STREAM.stderr)),
      ]);
      void Promise.all([cmd.exited, outputs]).then(
        ([status]) => peer.send({ t: 'exit', channel, status }),
        (err: Error) => peer.send({ t: 'reset', channel, message: err.message.slice(0, 1000) }),
      ).finally(() => {
        commands.delete(channel);
        peer.resetChannel(channel);
      });
      return null;
    } catch (err) {
      peer.resetChannel(channel);
      throw err;
    }
  };

  // Synchronous until the first await, like exec: the checkout's stream exists before its frames arrive.
  const build = async (peer: Peer, a: Record<string, unknown>, call: number): Promise<BuildResult> => {
    const channel = Channel.parse(a.channel);
    const context = peer.readable(channel, STREAM.stdin);
    const controller = new AbortController();
    builds.set(call, controller);
    try {
      const b = BuildArgs.parse(a);
      return await runner.build({
        org: b.org,
        project: b.project,
        spec: b.spec as BuildSpec,
        policy: b.policy as unknown as EgressPolicy,
        context,
        // Every line: the build log is the control plane's transcript (bounded per line).
        onLog: (line) => peer.send({ t: 'progress', call, phase: 'log', message: line.slice(0, 1000) }),
        signal: controller.signal,
      });
    } finally {
      builds.delete(call);
      peer.resetChannel(channel);
    }
  };

  // An environment's state, out as bytes on the call's channel (the call answers once all are sent) and in likewise.
  const exportState = async (peer: Peer, a: Record<string, unknown>): Promise<null> => {
    const channel = Channel.parse(a.channel);
    try {
      await pipeline(runner.exportState(EnvId.parse(a.id)), peer.writable(channel, STREAM.stdout));
      return null;
    } catch (err) {
      peer.resetChannel(channel);
      throw err;
    }
  };
  // Synchronous until the first await, like build: the state's stream exists before its frames arrive.
  const importState = async (peer: Peer, a: Record<string, unknown>): Promise<null> => {
    const channel = Channel.parse(a.channel);
    const state = peer.readable(channel, STREAM.stdin);
    try {
      const spec = await specOf(a.spec);
      hooks.beforeStart?.(spec, a);
      await runner.importState(spec, state);
      return null;
    } finally {
      peer.resetChannel(channel);
    }
  };

  const relay = (peer: Peer, listener: number, connection: Duplex) => {
    if (!peer.open) return connection.destroy();
    const channel = nextChannel++;
    if (nextChannel > 0xffff_ffff) nextChannel = RUNNER_CHANNELS;
    const fromControlPlane = peer.readable(channel, STREAM.toSocket);
    const toControlPlane = peer.writable(channel, STREAM.fromSocket);
    peer.send({ t: 'open', channel, listener });
    connection.on('error', () => {});
    void pipeline(connection, toControlPlane).catch(() => peer.send({ t: 'reset', channel, message: 'connection closed' }));
    void pipeline(fromControlPlane, connection).catch(() => connection.destroy());
  };

  return {
    async call(peer, method, args, call) {
      const a = (args ?? {}) as Record<string, unknown>;
      switch (method) {
        case 'images.get':
          return (await runner.images.get(z.string().parse(a.name), { org: z.string().optional().parse(a.org) })) ?? null;
        case 'images.resolve': {
          const ref = z.string().max(1024).parse(a.ref);
          const credential = z.object({ value: z.string(), from: z.string() }).optional().parse(a.credential);
          const registry = ref.split('/')[0]!.toLowerCase();
          let last = 0;
          return runner.images.resolve(ref, {
            // A few a second at most: the control plane shows a spinner, not every block.
            onProgress: (e) => {
              const now = Date.now();
              if (now - last < 200 && e.phase !== 'done') return;
              last = now;
              peer.send({ t: 'progress', call, phase: e.phase, message: e.message.slice(0, 1000), ...(e.fraction !== undefined && { fraction: Math.min(1, Math.max(0, e.fraction)) }) });
            },
            org: z.string().optional().parse(a.org),
            hostPaths: a.hostPaths === true,
            login: credential && (async (r: string) => (r === registry ? credential : undefined)),
          }) satisfies Promise<ImageRecord>;
        }
        case 'build':
          return build(peer, a, call);
        case 'build.cancel':
          builds.get(z.number().int().parse(a.call))?.abort(new Error('the build was cancelled'));
          return null;
        case 'start': {
          const spec = await specOf(a.spec);
          hooks.beforeStart?.(spec, a);
          await runner.start(spec);
          return null;
        }
        case 'stop':
          return runner.stop(EnvId.parse(a.id)).then(() => null);
        case 'pause':
          return runner.pause(EnvId.parse(a.id)).then(() => null);
        case 'resume':
          return runner.resume(EnvId.parse(a.id)).then(() => null);
        case 'remove': {
          const envId = EnvId.parse(a.id);
          await runner.remove(envId);
          hooks.afterRemove?.(envId);
          return null;
        }
        case 'status':
          return runner.status(EnvId.parse(a.id));
        case 'usage':
          return runner.usage(EnvId.parse(a.id), a.running === true);
        case 'cacheUsage':
          return runner.cacheUsage(z.string().regex(/^[a-z]+_[A-Za-z0-9]+$/).parse(a.owner));
        case 'removeVolumes':
          return runner.removeVolumes(z.string().regex(/^[a-z]+_[A-Za-z0-9]+$/).parse(a.owner)).then(() => null);
        case 'snapshotSupport':
          return runner.snapshotSupport();
        case 'snapshot':
          return runner.snapshot(EnvId.parse(a.id), SnapshotId.parse(a.snapshotId));
        case 'createFromSnapshot':
          return runner.createFromSnapshot(await specOf(a.spec), SnapshotId.parse(a.snapshotId)).then(() => null);
        case 'removeSnapshot':
          return runner.removeSnapshot(SnapshotId.parse(a.snapshotId)).then(() => null);
        case 'hasSnapshot':
          return runner.hasSnapshot(SnapshotId.parse(a.snapshotId));
        case 'resolveUser':
          return runner.resolveUser(await specOf(a.spec), z.string().max(256).parse(a.user));
        case 'exec':
          return exec(peer, a);
        case 'resize':
          await commands.get(Channel.parse(a.channel))?.resize(z.number().int().min(1).max(10_000).parse(a.cols), z.number().int().min(1).max(10_000).parse(a.rows));
          return null;
        case 'signal':
          await commands.get(Channel.parse(a.channel))?.signal(z.enum(['SIGINT', 'SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']).parse(a.signal));
          return null;
        case 'serveSocket': {
          const envId = EnvId.parse(a.environmentId);
          const listener = nextListener++;
          const stop = await runner.serveSocket(envId, z.string().parse(a.name), (connection) => relay(peer, listener, connection));
          listeners.set(listener, stop);
          return { listener };
        }
        case 'unserveSocket': {
          const listener = z.number().int().parse(a.listener);
          await listeners.get(listener)?.();
          listeners.delete(listener);
          return null;
        }
        case 'exportState':
          return exportState(peer, a);
        case 'importState':
          return importState(peer, a);
        default:
          throw invalid(`unknown call '${method}': this runner (Berth ${VERSION}) is older than the control plane`);
      }
    },
    end() {
      for (const controller of builds.values()) controller.abort(new Error('the control plane went away'));
      builds.clear();
      for (const cmd of commands.values()) void cmd.signal('SIGKILL').catch(() => {});
      commands.clear();
      for (const stop of listeners.values()) void stop().catch(() => {});
      listeners.clear();
    },
  };
}
