import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { collectCapped } from '../../shared/output.ts';
import type { FromSpawner, SpawnRequest, ToSpawner } from './protocol.ts';

/** A command started by the spawner: the parts of ChildProcess the runner uses. */
export interface SpawnedProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves with the host pid once the command has started. */
  pid: Promise<number>;
  /** Resolves when the command has exited and its output has been delivered. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  stdin?: boolean;
  /**
   * stdout and stderr go to /dev/null. For an OCI runtime's `run --detach`: the container's
   * init inherits them and keeps them as long as it lives, and processes inside can write
   * to its descriptors (/proc/1/fd/1), so they must be neither a host file, which would
   * grow without limit outside the environment's disk quota, nor a pipe someone waits on.
   */
  discardOutput?: boolean;
  cwd?: string | undefined;
  /** The command's whole environment (default: the spawner's, which is the runner's at its start). */
  env?: Record<string, string> | undefined;
  /** Lowest CPU priority: for work done ahead, which must not slow what is waited on. */
  background?: boolean;
}

export type RunOptions = Omit<SpawnOptions, 'stdin'>;

/**
 * Starts commands from a small helper process instead of from this one (see child.ts
 * for why). Output comes back over the IPC channel with backpressure: a stream whose
 * reader falls behind pauses the command's output at the source.
 */
export class Spawner {
  readonly #child: ChildProcess;
  readonly #live = new Map<number, Live>();
  #next = 1;
  #closed = false;

  /**
   * @param opts.privateMounts start the spawner in a mount namespace of its own, so
   *   every mount it makes and every runtime it starts sees that namespace; `unmount`
   *   names mount points to remove from it first (see cgroups.ts for why).
   */
  constructor(opts: { privateMounts?: { unmount: string[] } } = {}) {
    const node = [process.execPath, '--disable-warning=ExperimentalWarning', '--max-old-space-size=64', new URL('./child.ts', import.meta.url).pathname];
    const [file, args] = opts.privateMounts
      ? ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', `${opts.privateMounts.unmount.map((m) => `umount ${m} && `).join('')}exec "$@"`, 'sh', ...node]]
      : [node[0]!, node.slice(1)];
    this.#child = spawn(file, args as string[], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', (m: FromSpawner) => this.#live.get(m.id)?.receive(m));
    this.#child.on('exit', () => {
      for (const live of this.#live.values()) live.receive({ t: 'error', id: 0, message: 'the spawner process exited' });
      this.#live.clear();
    });
    // Neither the channel nor the process may keep the runner alive on their own; the
    // channel holds the event loop only while a command is running.
    this.#child.unref();
    this.#channel()?.unref();
  }

  #channel(): { ref(): void; unref(): void } | undefined {
    return this.#child.channel as unknown as { ref(): void; unref(): void } | undefined;
  }

  spawn(file: string, args: string[], opts: SpawnOptions = {}): SpawnedProcess {
    if (this.#closed) throw new Error('the spawner is closed');
    const id = this.#next++;
    const live = new Live(id, (m) => this.#send(m), () => {
      this.#live.delete(id);
      if (this.#live.size === 0) this.#channel()?.unref();
    });
    if (this.#live.size === 0) this.#channel()?.ref();
    this.#live.set(id, live);
    const request: SpawnRequest = { t: 'spawn', id, file, args, stdin: opts.stdin ?? false };
    if (opts.discardOutput) request.discardOutput = true;
    if (opts.background) request.background = true;
    if (opts.cwd !== undefined) request.cwd = opts.cwd;
    if (opts.env !== undefined) request.env = opts.env;
    this.#send(request);
    return live.process;
  }

  /** Runs a command to the end, collecting its output (execFile for the spawner), at most 16 MiB a stream. */
  async run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const p = this.spawn(file, args, opts);
    const out = collectCapped(p.stdout);
    const err = collectCapped(p.stderr);
    const { code } = await p.exited;
    return { code, stdout: out.text(), stderr: err.text() };
  }

  /** Like run, but a non-zero exit is an error carrying stderr. */
  async check(file: string, args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.run(file, args, opts);
    if (r.code !== 0) throw new Error((r.stderr || r.stdout).trim() || `${file} exited ${r.code}`);
    return r.stdout;
  }

  /** False once the spawner process is gone (closed, or it died). */
  get alive(): boolean {
    return !this.#closed && this.#child.connected;
  }

  /** The spawner's pid: its /proc entry shows the mounts that commands see. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  close(): void {
    this.#closed = true;
    this.#child.kill();
  }

  #send(m: ToSpawner): void {
    if (this.#child.connected) this.#child.send(m);
  }
}

let host: Spawner | undefined;

/**
 * A spawner in the host's own mount namespace, made on first use, for the control
 * plane's commands (git for tasks): from a process the size of the control plane, each
 * fork blocks its event loop for tens of milliseconds, and every task and request
 * waits behind it.
 */
export function hostSpawner(): Spawner {
  if (!host?.alive) host = new Spawner();
  return host;
}

class Live {
  readonly process: SpawnedProcess;
  readonly #stdout: Readable;
  readonly #stderr: Readable;
  #resolvePid!: (pid: number) => void;
  #rejectPid!: (err: Error) => void;
  #resolveExit!: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
  #paused = false;
  readonly #events = new EventEmitter();

  constructor(id: number, send: (m: ToSpawner) => void, done: () => void) {
    const resume = () => {
      if (this.#paused) {
        this.#paused = false;
        send({ t: 'resume', id });
      }
    };
    this.#stdout = new Readable({ read: resume });
    this.#stderr = new Readable({ read: resume });
    const stdin = new Writable({
      write(chunk: Buffer, _enc, cb) {
        send({ t: 'stdin', id, data: chunk });
        cb();
      },
      final(cb) {
        send({ t: 'stdin-end', id });
        cb();
      },
    });
    const pid = new Promise<number>((resolve, reject) => {
      this.#resolvePid = resolve;
      this.#rejectPid = reject;
    });
    pid.catch(() => {});
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => (this.#resolveExit = resolve));
    void exited.then(done);
    this.#events.on('pause', () => {
      if (!this.#paused) {
        this.#paused = true;
        send({ t: 'pause', id });
      }
    });
    this.process = {
      stdin,
      stdout: this.#stdout,
      stderr: this.#stderr,
      pid,
      exited,
      kill: (signal = 'SIGTERM') => send({ t: 'kill', id, signal }),
    };
  }

  receive(m: FromSpawner): void {
    switch (m.t) {
      case 'started':
        this.#resolvePid(m.pid);
        break;
      case 'out': {
        const stream = m.fd === 1 ? this.#stdout : this.#stderr;
        if (!stream.push(m.data)) this.#events.emit('pause');
        break;
      }
      case 'exit':
        this.#stdout.push(null);
        this.#stderr.push(null);
        this.#resolveExit({ code: m.code, signal: m.signal });
        break;
      case 'error':
        this.#rejectPid(new Error(m.message));
        this.#stdout.push(null);
        this.#stderr.push(null);
        this.#stderr.emit('spawn-error', m.message);
        this.#resolveExit({ code: m.code === 'ENOENT' ? 127 : 126, signal: null });
        break;
    }
  }
}
