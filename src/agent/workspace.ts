// The environment as the agent's tools see it: a root directory and a way to run
// commands there. The runner gives the agent one backed by a sandboxed environment;
// HostWorkspace runs on this machine, for unit tests and the bench.
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import type { CommandIntent } from '../shared/audit-words.ts';
import { timerDelay } from '../shared/units.ts';

export interface ExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  durationMs: number;
  /** What the environment says of how it ended, such as "killed: out of memory (limit 256m)". */
  message?: string | undefined;
}

export interface ExecOptions {
  stdin?: string | Buffer;
  /** Killed after this long, with exit code 124 and timedOut set, as timeout(1) does. */
  timeoutMs?: number;
  /** Relative to the workspace root; commands run in the root by default. */
  cwd?: string;
  env?: Record<string, string>;
  /** Kills the command when aborted (the task was cancelled); it then ends as if timed out. */
  signal?: AbortSignal;
  /**
   * What the command is for, when a tool runs a wrapper script: the audit log records the
   * intent (`file.written`, the path) rather than the script. A host workspace keeps no log.
   */
  intent?: CommandIntent;
}

export interface Workspace {
  /** Absolute path of the repository inside the environment; relative tool paths resolve against it. */
  readonly root: string;
  exec(cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
}

export const TIMEOUT_EXIT_CODE = 124;

/** How much of each output stream HostWorkspace keeps: the first and the last half of it. */
const KEEP_BYTES = 8 * 1024 * 1024;
/** After the command exits, how long its output pipes may stay open (held by something it left running). */
const DRAIN_MS = 500;

/**
 * Runs commands on this machine, in a directory. Commands get a small environment
 * (PATH, HOME, LANG and what the constructor adds), not this process's: the model
 * keys the agent holds are not theirs to read, as in a real environment.
 */
export class HostWorkspace implements Workspace {
  readonly root: string;
  readonly #env: Record<string, string>;

  constructor(root: string, opts: { env?: Record<string, string> } = {}) {
    this.root = resolve(root);
    const base: Record<string, string> = {};
    for (const name of ['PATH', 'HOME', 'LANG', 'TMPDIR']) {
      const value = process.env[name];
      if (value !== undefined) base[name] = value;
    }
    this.#env = { ...base, ...opts.env };
  }

  exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const started = performance.now();
    const [file, ...args] = cmd;
    if (file === undefined) return Promise.reject(new Error('exec: empty command'));
    return new Promise((done) => {
      // Its own process group, so a timeout kills what the command started too.
      const child = spawn(file, args, {
        cwd: resolve(this.root, opts.cwd ?? '.'),
        env: { ...this.#env, ...opts.env },
        detached: true,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const stdout = new BoundedBuffer(KEEP_BYTES);
      const stderr = new BoundedBuffer(KEEP_BYTES);
      child.stdout.on('data', (b: Buffer) => stdout.push(b));
      child.stderr.on('data', (b: Buffer) => stderr.push(b));
      // A command that exits without reading its input closes the pipe under us.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.stdin ?? '');

      let timedOut = false;
      const kill = () => {
        timedOut = true;
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      const timer = opts.timeoutMs && opts.timeoutMs > 0 ? setTimeout(kill, timerDelay(opts.timeoutMs)) : undefined;
      if (opts.signal?.aborted) kill();
      opts.signal?.addEventListener('abort', kill, { once: true });

      let finished = false;
      const finish = (exitCode: number) => {
        if (finished) return;
        finished = true;
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', kill);
        done({ exitCode: timedOut ? TIMEOUT_EXIT_CODE : exitCode, stdout: stdout.bytes(), stderr: stderr.bytes(), timedOut, durationMs: performance.now() - started });
      };
      child.on('error', (err) => {
        stderr.push(Buffer.from(`${err.message}\n`));
        finish(127);
      });
      child.on('close', (code, signal) => finish(code ?? 128 + signalNumber(signal)));
      child.on('exit', (code, signal) => {
        // Something the command started in the background may hold its output open:
        // take what arrived rather than wait for it.
        setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          finish(code ?? 128 + signalNumber(signal));
        }, DRAIN_MS).unref();
      });
    });
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return (signal && numbers[signal]) || 0;
}

/** Keeps the head and the tail of a stream, so a runaway command cannot fill memory. */
class BoundedBuffer {
  readonly #half: number;
  #head: Buffer[] = [];
  #headBytes = 0;
  #tail: Buffer[] = [];
  #tailBytes = 0;
  #dropped = 0;

  constructor(limit: number) {
    this.#half = Math.floor(limit / 2);
  }

  push(chunk: Buffer): void {
    if (this.#headBytes < this.#half) {
      const take = chunk.subarray(0, this.#half - this.#headBytes);
      this.#head.push(take);
      this.#headBytes += take.length;
      chunk = chunk.subarray(take.length);
      if (chunk.length === 0) return;
    }
    this.#tail.push(chunk);
    this.#tailBytes += chunk.length;
    while (this.#tailBytes > this.#half) {
      const first = this.#tail[0]!;
      const excess = this.#tailBytes - this.#half;
      if (first.length <= excess) {
        this.#tail.shift();
        this.#tailBytes -= first.length;
        this.#dropped += first.length;
      } else {
        this.#tail[0] = first.subarray(excess);
        this.#tailBytes -= excess;
        this.#dropped += excess;
      }
    }
  }

  bytes(): Buffer {
    const marker = this.#dropped ? [Buffer.from(`\n[... ${this.#dropped} bytes dropped by the workspace ...]\n`)] : [];
    return Buffer.concat([...this.#head, ...marker, ...this.#tail]);
  }
}
