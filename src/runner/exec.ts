import { readFile, rm } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ExecSpec, IsolationBackend } from './backends/backend.ts';
import { timerDelay } from '../shared/units.ts';
import type { Spawner } from './spawner/index.ts';

export interface ExitStatus {
  exitCode: number;
  timedOut: boolean;
  durationMs: number;
  /** The kernel's OOM killer ended the command (oom.ts); set by the runner where the host counts OOM kills. */
  oomKilled?: boolean;
  /** What Berth has to say of how it ended, such as "killed: out of memory (limit 256m)". */
  message?: string;
}

/** A command running inside an environment. */
export interface RunningCommand {
  stdin: Writable;
  stdout: Readable;
  /** Empty for a terminal session: a terminal has one output stream. */
  stderr: Readable;
  exited: Promise<ExitStatus>;
  resize(cols: number, rows: number): Promise<void>;
  signal(signal: NodeJS.Signals): Promise<void>;
}

export interface StartCommand {
  spawner: Spawner;
  backend: IsolationBackend;
  containerId: string;
  spec: ExecSpec;
  tty?: { cols: number; rows: number } | undefined;
  timeoutMs?: number | undefined;
}

/** Exit code reported when a command is killed for running past its timeout, as timeout(1) does. */
export const TIMEOUT_EXIT_CODE = 124;

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * Runs a command through the OCI runtime's exec, from the spawner. This is the path
 * for environments whose PID 1 is not the Berth agent (agent/client.ts is the usual
 * one): those started when the agent could not be built or was turned off, and those
 * started before it existed.
 */
export function startCommand({ spawner, backend, containerId, spec, tty, timeoutMs }: StartCommand): RunningCommand {
  const started = performance.now();
  const { file, args } = backend.execCommand(containerId, spec);
  // The runtime wants a terminal on its own stdin before it gives one to the command,
  // so a terminal session runs under script(1), which supplies it without native code.
  const child = tty
    ? spawner.spawn('script', ['-q', '-e', '-c', `stty rows ${tty.rows} cols ${tty.cols} && exec ${[file, ...args].map(quote).join(' ')}`, '/dev/null'], { stdin: true })
    : spawner.spawn(file, args, { stdin: true });

  let pid: number | undefined;
  const commandPid = async (): Promise<number | undefined> => {
    if (pid) return pid;
    try {
      pid = Number((await readFile(spec.pidFile, 'utf8')).trim()) || undefined;
    } catch {
      // Not written yet: the command has not started, or is already gone.
    }
    return pid;
  };

  let timedOut = false;
  // Once the command is gone its pid may belong to another process: never signal it then.
  let done = false;
  const timer =
    timeoutMs && timeoutMs > 0
      ? setTimeout(async () => {
          timedOut = true;
          const p = await commandPid();
          if (p) killTree(p);
          child.kill('SIGKILL');
        }, timerDelay(timeoutMs))
      : undefined;

  // Done when the command has exited and its output has been read to the end.
  const ended = (stream: Readable) => finished(stream).catch(() => {});
  const exited = Promise.all([child.exited, ended(child.stdout), ended(child.stderr)]).then(([{ code, signal }]) => {
    done = true;
    if (timer) clearTimeout(timer);
    void rm(spec.pidFile, { force: true });
    const exitCode = timedOut ? TIMEOUT_EXIT_CODE : (code ?? 128 + (signal ? signalNumber(signal) : 0));
    return { exitCode, timedOut, durationMs: performance.now() - started };
  });

  const command: RunningCommand = {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    exited,
    async resize(cols, rows) {
      const p = await commandPid();
      if (!tty || !p || done) return;
      // The runtime does not pass window changes on, so set the size on the terminal
      // the command holds; the kernel then sends it SIGWINCH.
      await spawner.run('stty', ['-F', `/proc/${p}/fd/0`, 'rows', String(rows), 'cols', String(cols)]);
    },
    async signal(signal) {
      const p = await commandPid();
      if (!p || done) return;
      if (signal === 'SIGKILL') return killTree(p);
      try {
        process.kill(p, signal);
      } catch {
        // already gone
      }
    },
  };
  if (tty) void applySizeOnceStarted(command, commandPid, () => done, tty);
  return command;
}

/**
 * crun exec does not always copy the size of script(1)'s terminal onto the one it makes
 * for the command before the command runs (seen as `stty size` printing "0 0" on a loaded
 * host): once the command's pid is known, set the size on its terminal as a resize would.
 */
async function applySizeOnceStarted(command: RunningCommand, pidOf: () => Promise<number | undefined>, isDone: () => boolean, tty: { cols: number; rows: number }): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!isDone() && performance.now() < deadline) {
    if (await pidOf()) {
      await command.resize(tty.cols, tty.rows).catch(() => {});
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
  return numbers[signal] ?? 0;
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    let children = '';
    try {
      children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const c of children.split(' ').filter(Boolean).map(Number)) out.push(c, ...descendants(c));
  }
  return out;
}

/** SIGKILLs a process and everything it started that is still its descendant. */
export function killTree(pid: number): void {
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
