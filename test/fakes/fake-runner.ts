// A Runner for tests that need the control plane but not a sandbox: the API, tenancy,
// policy storage, tasks' bookkeeping, placement. It keeps the port's contract (states,
// idempotent start, exec streams and exit status, timeouts, users, usage, sockets) with
// plain host parts, so those tests run without crun, overlays or cgroups.
//
// What it does NOT do: isolate anything. An environment is a directory (`ROOT/ID/root` is
// its "/"); a command is a child process of the test on the host, as the test's own user
// (whatever `user` says), with the host's network and the host's file system. Only two paths
// are the environment's: /workspace and /.berth/agent, bind-mounted from its directory in a
// mount namespace of the command's own (so a task's `/workspace/repo` works; the host gets
// two empty mount points). Everything else a command names is the host's (/tmp, /etc, /proc:
// a test that greps an environment's "/" for a leaked key would grep the host). No terminal
// (a tty is plain pipes), no limits (memory, pids, disk), no OOM kills, no egress proxy or
// firewall, no agent (so no gateway relay), no image rootfs, volumes only as symlinks under
// its directory. Tests about those belong on the real runner.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { CommandOptions, ContainerStatus, EnvironmentSpec, EnvironmentUsage, Runner, RunnerImages, RunningCommand, ResolvedUser } from '../../src/runner/index.ts';
import type { SnapshotMade, SnapshotSupport } from '../../src/runner/port.ts';
import { TIMEOUT_EXIT_CODE, type BuildImageRequest } from '../../src/runner/index.ts';
import { conflict, invalid, notFound } from '../../src/shared/errors.ts';
import type { CacheKind } from '../../src/shared/caches.ts';
import { killTree } from '../../src/runner/exec.ts';
import { Spawner } from '../../src/runner/spawner/index.ts';
import type { ImageRecord } from '../../src/runner/images/types.ts';
import { resolveUser } from '../../src/runner/users.ts';
import { treeSize } from '../../src/runner/images/rootfs.ts';
import { sha256 } from '../../src/runner/images/blobs.ts';
import { serveUnixSocket, SOCKET_NAME_PATTERN } from '../../src/runner/unix-socket.ts';
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { checkStateFile, DEFAULT_STATE_ENTRIES } from '../../src/runner/state-tar.ts';
import { pauseRefused } from '../../src/runner/checkpoint.ts';
import { sql } from 'kysely';
import type { Db } from '../../src/server/db/index.ts';
import type { RunnerReport } from '../../src/shared/api-runners.ts';

/** Where the real runner keeps agent sockets inside an environment (bundle.ts AGENT_DIR). */
const AGENT_DIR = '.berth/agent';
const WORKSPACE = '/workspace';

export interface FakeRunnerOptions {
  id?: string;
  name?: string;
  /** A real ImageStore (`new ImageStore({ dir: IMAGE_DIR })`), or a catalogue made by fakeImages(). */
  images: RunnerImages;
  /** Where environments' directories go; a fresh temp directory by default (removed by close()). */
  dir?: string;
}

/** What tests can ask of the fake. */
export interface FakeRunnerKnobs {
  /** The next start (or the next `n`) throws this error. */
  failNextStart(error?: Error, n?: number): void;
  /** Every start waits this long first (0: none). */
  startDelayMs: number;
  /** Calls per method of the port. */
  readonly calls: Record<'start' | 'stop' | 'remove' | 'status' | 'exec' | 'resolveUser' | 'usage' | 'removeVolumes' | 'serveSocket', number>;
}

interface FakeEnvironment {
  state: 'running' | 'stopped';
  /** Running commands, each with the promise of its process's exit. */
  commands: Map<RunningCommand, Promise<unknown>>;
}

export class FakeRunner implements Runner, FakeRunnerKnobs {
  readonly id: string;
  readonly name: string;
  readonly images: RunnerImages;
  /** What the heartbeat reports as the runner's backend. */
  readonly backend = { name: 'fake' };
  readonly dir: string;
  startDelayMs = 0;
  readonly calls = { start: 0, stop: 0, remove: 0, status: 0, exec: 0, resolveUser: 0, usage: 0, removeVolumes: 0, serveSocket: 0 };
  readonly #owned: boolean;
  readonly #environments = new Map<string, FakeEnvironment>();
  #failures: Error[] = [];
  readonly #spawner = new Spawner();

  constructor(opts: FakeRunnerOptions) {
    this.#owned = !opts.dir;
    this.dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'berth-fake-runner-'));
    mkdirSync(this.dir, { recursive: true });
    this.id = opts.id ?? `fake:${this.dir}`;
    this.name = opts.name ?? 'fake';
    this.images = opts.images;
  }

  failNextStart(error = new Error('fake runner: start failed (failNextStart)'), n = 1): void {
    for (let i = 0; i < n; i++) this.#failures.push(error);
  }

  /** The environment's "/" on the host. */
  rootOf(id: string): string {
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(id)) throw new Error(`environment id '${id}' is not an id`);
    return join(this.dir, 'environments', id, 'root');
  }

  /** An absolute path inside the environment, as a path on the host. */
  hostPath(id: string, path: string): string {
    return join(this.rootOf(id), normalize(`/${path}`));
  }

  async start(spec: EnvironmentSpec): Promise<void> {
    this.calls.start++;
    if (this.startDelayMs > 0) await new Promise((r) => setTimeout(r, this.startDelayMs));
    const failure = this.#failures.shift();
    if (failure) throw failure;
    const root = this.rootOf(spec.id);
    mkdirSync(join(root, WORKSPACE), { recursive: true });
    mkdirSync(join(root, 'tmp'), { recursive: true });
    mkdirSync(join(root, AGENT_DIR), { recursive: true });
    for (const v of spec.volumes ?? []) {
      const source = join(this.dir, 'volumes', spec.volumeOwner ?? spec.id, v.name);
      mkdirSync(source, { recursive: true });
      const target = this.hostPath(spec.id, v.target);
      if (existsSync(target)) continue;
      mkdirSync(dirname(target), { recursive: true });
      symlinkSync(source, target);
    }
    const env = this.#environments.get(spec.id);
    if (env) env.state = 'running';
    else this.#environments.set(spec.id, { state: 'running', commands: new Map() });
  }

  async stop(id: string): Promise<void> {
    this.calls.stop++;
    const env = this.#environments.get(id);
    if (!env) return;
    env.state = 'stopped';
    // Its processes are gone when it stops; their output may still be unread.
    await Promise.all([...env.commands].map(async ([c, gone]) => {
      await c.signal('SIGKILL');
      await gone;
    }));
  }

  // It keeps no processes to checkpoint, as most hosts cannot (checkpoint.ts).
  async pause(_id: string): Promise<void> {
    throw pauseRefused(this.name, 'the fake runner keeps no processes to checkpoint');
  }

  async resume(id: string): Promise<void> {
    await this.pause(id);
  }

  async remove(id: string): Promise<void> {
    this.calls.remove++;
    await this.stop(id);
    this.calls.stop--;
    this.#environments.delete(id);
    await rm(join(this.dir, 'environments', id), { recursive: true, force: true });
    await rm(join(this.dir, 'volumes', id), { recursive: true, force: true });
  }

  async status(id: string): Promise<ContainerStatus> {
    this.calls.status++;
    return this.#environments.get(id)?.state ?? 'absent';
  }

  exec(spec: EnvironmentSpec, opts: CommandOptions): RunningCommand {
    this.calls.exec++;
    const env = this.#environments.get(spec.id);
    if (env?.state !== 'running') return failedCommand(`environment ${spec.id} is not running`);
    const inside = normalize(`/${opts.cwd ?? spec.image.config.workingDir ?? WORKSPACE}`);
    mkdirSync(this.hostPath(spec.id, inside), { recursive: true });
    // Under the mounted paths the cwd is itself; elsewhere, its copy under the environment's directory.
    const cwd = mounted(inside) ? inside : this.hostPath(spec.id, inside);
    const home = this.hostPath(spec.id, opts.user?.home ?? '/root');
    const started = performance.now();
    ensureMountPoints();
    // unshare execs the command (no fork): the pid is the command's. Started from a small
    // helper process (the runner's Spawner), as forking this big one costs more than the command.
    const mountThenRun = 'ws=$1 agent=$2 cwd=$3; shift 3; mount --bind "$ws" /workspace && mount --bind "$agent" /.berth/agent && cd "$cwd" && exec "$@"';
    const child = this.#spawner.spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', mountThenRun, 'sh', this.hostPath(spec.id, WORKSPACE), this.hostPath(spec.id, `/${AGENT_DIR}`), cwd, ...opts.cmd], {
      stdin: true,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, ...(opts.tty ? { TERM: 'xterm-256color' } : {}), ...opts.env },
    });
    child.stdin.on('error', () => {}); // the command may exit without reading it
    let done = false;
    // What it started goes with it: SIGKILL reaches the whole tree, as an environment's exec does.
    const signal = async (sig: NodeJS.Signals) => {
      const pid = await child.pid.catch(() => undefined);
      if (!pid || done) return;
      if (sig === 'SIGKILL') return killTree(pid);
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    };
    let timedOut = false;
    const timer = opts.timeoutMs && opts.timeoutMs > 0 ? setTimeout(() => ((timedOut = true), void signal('SIGKILL')), opts.timeoutMs) : undefined;
    const ended = (stream: NodeJS.ReadableStream) => finished(stream).catch(() => {});
    const exited = Promise.all([child.exited, ended(child.stdout), ended(child.stderr)]).then(([{ code, signal: sig }]) => {
      done = true;
      if (timer) clearTimeout(timer);
      env.commands.delete(command);
      const exitCode = timedOut ? TIMEOUT_EXIT_CODE : (code ?? 128 + signalNumber(sig));
      return { exitCode, timedOut, durationMs: performance.now() - started };
    });
    const command: RunningCommand = { stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exited, async resize() {}, signal };
    env.commands.set(command, child.exited);
    return command;
  }

  /** From the environment's own /etc/passwd and /etc/group when it has them; root otherwise. */
  async resolveUser(spec: EnvironmentSpec, user: string): Promise<ResolvedUser> {
    this.calls.resolveUser++;
    const read = (path: string) => {
      try {
        return readFileSync(this.hostPath(spec.id, path), 'utf8').slice(0, 1024 * 1024);
      } catch {
        return '';
      }
    };
    const passwd = read('/etc/passwd') || 'root:x:0:0:root:/root:/bin/sh\n';
    return resolveUser(user, passwd, read('/etc/group'));
  }

  async usage(id: string, _running: boolean): Promise<EnvironmentUsage> {
    this.calls.usage++;
    const dir = join(this.dir, 'environments', id);
    const diskBytes = existsSync(dir) ? await treeSize(dir) : null;
    return { memoryBytes: null, cpuSeconds: null, pids: null, oomKills: null, diskBytes };
  }

  /** The fake mounts no caches: none exist. */
  async cacheUsage(_owner: string): Promise<Partial<Record<CacheKind, number>>> {
    return {};
  }

  async removeVolumes(owner: string): Promise<void> {
    this.calls.removeVolumes++;
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(owner)) throw new Error(`volume owner '${owner}' is not an id`);
    await rm(join(this.dir, 'volumes', owner), { recursive: true, force: true });
  }

  /** Its "/" as a tar (GNU tar, host owners), its agent folder left out; the fake has no processes to freeze. */
  exportState(id: string): Readable {
    const root = this.rootOf(id);
    if (!existsSync(root)) {
      const out = new PassThrough();
      out.destroy(invalid(`environment ${id} has no files on runner '${this.name}'`));
      return out;
    }
    const tar = spawn('tar', ['--create', '--file=-', '--numeric-owner', '--anchored', '--exclude=./.berth', '-C', root, '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const out = new PassThrough();
    tar.stdout.pipe(out, { end: false });
    tar.on('close', (code) => (code === 0 ? out.end() : out.destroy(new Error(`tar exited ${code}`))));
    return out;
  }

  /** Kept in a file, checked as the real runner checks it (state-tar.ts, owners aside: the fake maps none), then unpacked; stopped. */
  async importState(spec: EnvironmentSpec, state: Readable): Promise<void> {
    const root = this.rootOf(spec.id);
    if (existsSync(root)) throw invalid(`environment ${spec.id} already has files on runner '${this.name}'`);
    const file = join(this.dir, `import-${spec.id}.tar`);
    try {
      await pipeline(state, createWriteStream(file));
      await checkStateFile(file, { maxEntries: DEFAULT_STATE_ENTRIES });
      mkdirSync(root, { recursive: true });
      const r = spawnSync('tar', ['--extract', `--file=${file}`, '--same-owner', '--numeric-owner', '--same-permissions', '--no-overwrite-dir', '-C', root], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`tar could not unpack the state: ${r.stderr}`);
      this.#environments.set(spec.id, { state: 'stopped', commands: new Map() });
    } catch (err) {
      await rm(dirname(root), { recursive: true, force: true });
      throw err;
    } finally {
      await rm(file, { force: true });
    }
  }

  // Snapshots: a copy of its "/" (the real runner freezes a btrfs subvolume instead; store.ts).
  snapshotsAvailable = true;

  async snapshotSupport(): Promise<SnapshotSupport> {
    return this.snapshotsAvailable ? { available: true } : { available: false, reason: 'the fake runner was told it has no state store' };
  }

  #snapshotDir(id: string): string {
    if (!/^[a-z]+_[A-Za-z0-9]+$/.test(id)) throw new Error(`snapshot id '${id}' is not an id`);
    return join(this.dir, 'snapshots', id);
  }

  async snapshot(id: string, snapshotId: string): Promise<SnapshotMade> {
    if (!this.snapshotsAvailable) throw conflict(`runner '${this.name}' cannot keep snapshots: the fake runner was told it has no state store`);
    const root = this.rootOf(id);
    if (!existsSync(root)) throw notFound(`environment ${id} has no files on runner '${this.name}'`);
    const to = this.#snapshotDir(snapshotId);
    if (existsSync(to)) throw conflict(`snapshot ${snapshotId} already exists on this runner`);
    mkdirSync(dirname(to), { recursive: true });
    cpSync(root, `${to}.tmp`, { recursive: true, verbatimSymlinks: true, filter: (src) => !src.startsWith(join(root, AGENT_DIR)) });
    renameSync(`${to}.tmp`, to);
    return { bytes: await treeSize(to), copied: true, pausedMs: 0 };
  }

  async createFromSnapshot(spec: EnvironmentSpec, snapshotId: string): Promise<void> {
    const from = this.#snapshotDir(snapshotId);
    if (!existsSync(from)) throw notFound(`snapshot ${snapshotId} is not on this runner`);
    const root = this.rootOf(spec.id);
    if (existsSync(root)) throw conflict(`environment ${spec.id} already has files on runner '${this.name}'`);
    cpSync(from, root, { recursive: true, verbatimSymlinks: true });
    this.#environments.set(spec.id, { state: 'stopped', commands: new Map() });
  }

  async removeSnapshot(snapshotId: string): Promise<void> {
    await rm(this.#snapshotDir(snapshotId), { recursive: true, force: true });
  }

  async hasSnapshot(snapshotId: string): Promise<boolean> {
    return existsSync(this.#snapshotDir(snapshotId));
  }

  /** The fake builds nothing: a spec with a devcontainer build needs the real runner. */
  async build(req: BuildImageRequest): Promise<never> {
    req.context.destroy();
    throw invalid(`runner '${this.name}' (a fake) does not build devcontainer images`);
  }

  async serveSocket(environmentId: string, name: string, accept: (connection: Duplex) => void): Promise<() => Promise<void>> {
    this.calls.serveSocket++;
    if (!SOCKET_NAME_PATTERN.test(name)) throw new Error(`socket name '${name}' is not a plain file name`);
    const path = join(this.rootOf(environmentId), AGENT_DIR, name);
    mkdirSync(dirname(path), { recursive: true });
    return serveUnixSocket(path, accept);
  }

  /** Kills every command still running; removes the directory when the fake made it. */
  async close(): Promise<void> {
    for (const id of this.#environments.keys()) await this.stop(id);
    this.#spawner.close();
    if (this.#owned) rmSync(this.dir, { recursive: true, force: true });
  }
}

const mounted = (path: string) => path === WORKSPACE || path.startsWith(`${WORKSPACE}/`) || path === `/${AGENT_DIR}` || path.startsWith(`/${AGENT_DIR}/`);

/** The host's (empty) mount points for the environment's /workspace and /.berth/agent. */
function ensureMountPoints(): void {
  mkdirSync(WORKSPACE, { recursive: true });
  mkdirSync(`/${AGENT_DIR}`, { recursive: true });
}

/** A tiny in-memory catalogue: each name resolves to a record whose rootfs is an empty directory. */
export function fakeImages(names: string[] = ['default'], dir = mkdtempSync(join(tmpdir(), 'berth-fake-images-'))): RunnerImages & { records: Map<string, ImageRecord> } {
  const records = new Map<string, ImageRecord>();
  for (const name of names) {
    const rootfs = join(dir, name.replace(/[^A-Za-z0-9._-]/g, '_'));
    mkdirSync(rootfs, { recursive: true });
    records.set(name, { name, digest: sha256(`fake image ${name}`), rootfs, sizeBytes: 0, createdAt: new Date(0).toISOString(), source: 'debian', config: { env: [] } });
  }
  return {
    records,
    async resolve(ref) {
      const r = records.get(ref);
      if (!r) throw new Error(`fake images: no image named '${ref}'`);
      return r;
    },
    async get(name) {
      return records.get(name);
    },
  };
}

function failedCommand(message: string): RunningCommand {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end(`${message}\n`);
  const stdin = new PassThrough();
  stdin.resume();
  return { stdin, stdout, stderr, exited: Promise.resolve({ exitCode: 125, timedOut: false, durationMs: 0, message }), async resize() {}, async signal() {} };
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
  return signal ? (numbers[signal] ?? 0) : 0;
}

/**
 * The heartbeat of a fake runner that joined as a remote runner would: its row in `runners` with
 * a report of `memoryBytes`, `offline_at` cleared as RunnerRegistry.beat does. Called every
 * heartbeat period to keep it online; stopping the calls makes it go offline.
 */
export async function beatAsJoined(db: Db, r: FakeRunner, memoryBytes = 8 * 1024 ** 3): Promise<void> {
  const report: RunnerReport = {
    backend: 'fake',
    cgroups: 'v2',
    cpus: 4,
    memoryBytes,
    environments: { running: 0, total: 0 },
    tasks: { running: 0, concurrency: 2 },
    network: { egressProxy: false, nftables: false },
    diskQuota: false,
    dataDisk: { freeBytes: 100 * 1024 ** 3, totalBytes: 200 * 1024 ** 3 },
    problems: [],
    heartbeatMs: 300,
  };
  const row = { name: r.name, host: 'fake.test', version: 'test', report: JSON.stringify(report), started_at: new Date(), heartbeat_at: sql<Date>`now()`, stopped_at: null, offline_at: null };
  await db.insertInto('runners').values({ id: r.id, ...row }).onConflict((oc) => oc.column('id').doUpdateSet(row)).execute();
}
